//! The MCP server behind Envoy: answers every request with 200 and a small JSON-RPC result.
//! It runs as its own process (the bench binary started again with `--upstream`), pinned to
//! the server core like Envoy, so it neither competes with the generator nor hides in it.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// What the upstream says to a `tools/call`; the generator only looks at the status.
pub const RESULT: &str =
    r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"upstream: sunny"}]}}"#;

/// Serves on `listen` until killed; prints the bound address as one line on stdout.
pub fn serve(listen: SocketAddr) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("upstream: cannot listen on `{listen}`: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("{addr}");
        loop {
            let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<Incoming>| async move {
                    // Read the whole request so the connection stays usable.
                    let _ = req.into_body().collect().await;
                    let response = hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(RESULT.as_bytes())));
                    Ok::<_, Infallible>(response.unwrap_or_default())
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
