//! Compiles the project's own gRPC APIs from `proto/`. There are none yet (the admin API comes
//! later); Envoy's protos come from the `envoy-types` crate and are not vendored here.

fn main() {
    println!("cargo:rerun-if-changed=proto");
}
