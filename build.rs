//! Compiles the project's own gRPC API (`proto/`, the admin API) with a pure-Rust protobuf
//! compiler, so building needs no `protoc`. Envoy's protos come from the `envoy-types` crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/mcp_authz/admin/v1/admin.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
