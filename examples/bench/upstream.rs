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

/// What the upstream says to a `tools/list`: the shipped policies' five declared tools and
/// fifteen more no policy permits, with input schemas of a realistic size. The benchmark's
/// token may call the weather tools and step up to the file tools: the list filter keeps
/// four and removes sixteen (`delete_everything` and the fifteen).
pub fn tools_list() -> String {
    let schema = |props: &[&str]| {
        let props: Vec<String> = props
            .iter()
            .map(|p| format!(r#""{p}":{{"type":"string","description":"The {p} to use."}}"#))
            .collect();
        format!(
            r#"{{"type":"object","properties":{{{}}},"required":[]}}"#,
            props.join(",")
        )
    };
    let mut tools = Vec::new();
    for (name, props) in [
        ("get_forecast", &["city", "days"][..]),
        ("get_alerts", &["region"][..]),
        ("read_file", &["path"][..]),
        ("write_file", &["path", "content"][..]),
        ("delete_everything", &[][..]),
    ] {
        tools.push(format!(
            r#"{{"name":"{name}","description":"The {name} tool.","inputSchema":{}}}"#,
            schema(props)
        ));
    }
    for i in 0..15 {
        tools.push(format!(
            r#"{{"name":"extra_tool_{i}","description":"Extra tool {i}.","inputSchema":{}}}"#,
            schema(&["query", "limit"])
        ));
    }
    format!(
        r#"{{"jsonrpc":"2.0","id":6,"result":{{"tools":[{}]}}}}"#,
        tools.join(",")
    )
}

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
        let list = Bytes::from(tools_list());
        loop {
            let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let list = list.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let list = list.clone();
                    async move {
                        // Read the whole request so the connection stays usable.
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let answer = if body.windows(10).any(|w| w == b"tools/list") {
                            list
                        } else {
                            Bytes::from_static(RESULT.as_bytes())
                        };
                        let response = hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(answer));
                        Ok::<_, Infallible>(response.unwrap_or_default())
                    }
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
