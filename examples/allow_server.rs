//! The load benchmark's baseline: an Envoy ext_authz gRPC server that allows every check, on
//! the same tonic stack as mcp-authz (`server::grpc_server_builder()`, TCP nodelay, a
//! multi-threaded runtime), so the difference to mcp-authz is only what a check does.
//!
//! `cargo run --release --features test-util --example allow_server -- --listen 127.0.0.1:0`
//! prints the bound address on stdout, one line, then serves until killed.

use std::net::SocketAddr;
use std::process::ExitCode;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// Answers every check with an allow: status OK and an empty `OkHttpResponse`, the smallest
/// answer Envoy accepts as an allow.
struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status {
                code: 0,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            ..Default::default()
        }))
    }
}

fn parse_args() -> Result<SocketAddr, String> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or("`--listen` needs an address")?;
                listen = value
                    .parse()
                    .map_err(|e| format!("`--listen {value}`: {e}"))?;
            }
            other => return Err(format!("unknown argument `{other}` (usage: --listen ADDR)")),
        }
    }
    Ok(listen)
}

#[tokio::main]
async fn main() -> ExitCode {
    let listen = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(64);
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on `{listen}`: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        // The orchestrator reads this one line to learn the port.
        Ok(addr) => println!("{addr}"),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    });
    let served = mcp_authz::server::grpc_server_builder()
        .add_service(AuthorizationServer::new(AllowAll))
        .serve_with_incoming_shutdown(incoming, mcp_authz::server::shutdown_signal())
        .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: gRPC server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
