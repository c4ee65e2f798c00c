//! The HTTP/1.1 client of the Envoy contenders: one keep-alive connection per worker, the
//! benchmark's `tools/call` POST with or without a bearer token.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::HeaderValue;
use hyper_util::rt::TokioIo;

use crate::tokens::{ACCEPT, HOST, PATH};

pub type Conn = SendRequest<Full<Bytes>>;

/// A new keep-alive connection.
pub async fn connect(addr: SocketAddr) -> Result<Conn, String> {
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One `tools/call` POST of `body` on `sender`: (status, body).
pub async fn call(
    sender: &mut Conn,
    authorization: Option<&HeaderValue>,
    body: &'static str,
) -> Result<(u16, String), String> {
    let mut req = hyper::Request::post(PATH)
        .header("host", HOST)
        .header("content-type", "application/json")
        .header("accept", ACCEPT);
    if let Some(a) = authorization {
        req = req.header("authorization", a.clone());
    }
    let req = req
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .map_err(|e| e.to_string())?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One HTTP request on a fresh connection, bounded in time: (status, body).
pub async fn once(
    addr: SocketAddr,
    authorization: Option<&HeaderValue>,
    body: &'static str,
) -> Result<(u16, String), String> {
    let call = async {
        let mut sender = connect(addr).await?;
        call(&mut sender, authorization, body).await
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| format!("request to {addr} timed out"))?
}
