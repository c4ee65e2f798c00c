//! A lean gRPC client for `envoy.service.auth.v3.Authorization/Check`, straight on `h2`: the
//! request's HEADERS and its one DATA frame (with END_STREAM) are queued together and leave in
//! one write, as Envoy's own gRPC client sends them. (tonic's client flushed headers, message
//! and end of stream separately: three writes per check, which tripled the syscalls on both
//! sides and made the generator the bottleneck against the always-allow baseline.)

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::ext_authz::v3::pb::CheckResponse;
use h2::client::SendRequest;
use prost::Message;

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// An encoded message with gRPC's length prefix (uncompressed flag, big-endian length).
pub fn frame(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(message.len() + 5);
    b.put_u8(0);
    b.put_u32(message.len() as u32);
    b.put_slice(message);
    b.freeze()
}

/// One HTTP/2 connection; clones share it (each check is its own stream).
#[derive(Clone)]
pub struct GrpcConn {
    send: SendRequest<Bytes>,
    uri: http::Uri,
}

impl GrpcConn {
    /// Connects and completes the HTTP/2 handshake, within five seconds.
    pub async fn connect(addr: SocketAddr) -> Result<Self, String> {
        tokio::time::timeout(Duration::from_secs(5), Self::open(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
    }

    async fn open(addr: SocketAddr) -> Result<Self, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        // Large windows, like the server's: no flow-control stalls or WINDOW_UPDATE chatter.
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 24)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let uri = format!("http://{addr}{CHECK}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        Ok(Self { send, uri })
    }

    /// Sends one framed `CheckRequest` (see [`frame`]) and decodes the `CheckResponse`.
    /// gRPC errors (a non-zero `grpc-status`) and transport failures are errors.
    pub async fn check(&mut self, framed: Bytes) -> Result<CheckResponse, String> {
        std::future::poll_fn(|cx| self.send.poll_ready(cx))
            .await
            .map_err(|e| format!("HTTP/2 connection: {e}"))?;
        let request = http::Request::post(self.uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| e.to_string())?;
        let (response, mut stream) = self
            .send
            .send_request(request, false)
            .map_err(|e| format!("HTTP/2 request: {e}"))?;
        stream
            .send_data(framed, true)
            .map_err(|e| format!("HTTP/2 data: {e}"))?;
        let response = response
            .await
            .map_err(|e| format!("HTTP/2 response: {e}"))?;
        let (parts, mut body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(format!("HTTP/2 status {}", parts.status));
        }
        // A trailers-only response carries grpc-status in its headers.
        grpc_status(&parts.headers)?;
        // The response is one small DATA frame, almost always: keep it without copying.
        let mut data = Bytes::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| format!("HTTP/2 body: {e}"))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data = if data.is_empty() {
                chunk
            } else {
                let mut joined = BytesMut::from(&data[..]);
                joined.extend_from_slice(&chunk);
                joined.freeze()
            };
        }
        let trailers = body
            .trailers()
            .await
            .map_err(|e| format!("HTTP/2 trailers: {e}"))?;
        match trailers {
            Some(t) => grpc_status(&t)?,
            None if parts.headers.contains_key("grpc-status") => {}
            None => return Err("response without grpc-status".into()),
        }
        if data.len() < 5 {
            return Err("response without a message".into());
        }
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        let message = data.get(5..5 + len).ok_or("truncated gRPC message")?;
        CheckResponse::decode(message).map_err(|e| format!("CheckResponse: {e}"))
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Result<(), String> {
    match headers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap_or("?"))
    {
        None | Some("0") => Ok(()),
        Some(code) => Err(format!(
            "gRPC status {code}: {}",
            headers
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        )),
    }
}

/// One check on a fresh connection, bounded in time.
pub async fn check_once(addr: SocketAddr, framed: Bytes) -> Result<CheckResponse, String> {
    let call = async { GrpcConn::connect(addr).await?.check(framed).await };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| format!("check to {addr} timed out"))?
}
