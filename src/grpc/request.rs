//! The client side of the protocol: the `CheckRequest` Envoy's ext_authz filter would send for
//! a given HTTP request, and the MCP JSON-RPC bodies to put in it. `mcp-authz check`, the test
//! helpers and the load benchmark build their requests here.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use serde_json::{Value, json};

/// An HTTP request as a client sends it through Envoy.
#[derive(Debug, Clone, Default)]
pub struct ClientRequest {
    pub method: String,
    /// Path with the query string, as Envoy's `:path`.
    pub path: String,
    /// Authority, as Envoy's `:authority`.
    pub host: String,
    /// Sent as `authorization: Bearer <token>`.
    pub bearer: Option<String>,
    /// Extra headers, each `name: value`. Names are lowercased and a repeated name is joined
    /// with `,`, as Envoy does.
    pub headers: Vec<String>,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("header `{0}` is not `name: value`")]
    Header(String),
    /// A method that acts on a named tool, prompt or resource was given no name. The message
    /// names the flags of `mcp-authz check`, the helper's user-facing caller.
    #[error("--rpc {0} needs --name")]
    RpcNeedsName(String),
    #[error("--arguments is not JSON: {0}")]
    ArgumentsNotJson(serde_json::Error),
}

/// Builds the `CheckRequest` Envoy would send for `request` (HTTP/1.1, body included, as with
/// `with_request_body` and `pack_as_bytes: true`).
pub fn check_request(request: ClientRequest) -> Result<CheckRequest, RequestError> {
    let ClientRequest {
        method,
        path,
        host,
        bearer,
        headers: lines,
        body,
    } = request;
    let mut headers: HashMap<String, String> = HashMap::new();
    let mut add = |name: String, value: String| {
        headers
            .entry(name)
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(RequestError::Header(line));
        };
        add(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    if let Some(t) = bearer {
        add("authorization".into(), format!("Bearer {t}"));
    }
    headers.insert(":authority".into(), host.clone());
    headers.insert(":method".into(), method.clone());
    headers.insert(":path".into(), path.clone());
    if !body.is_empty() {
        headers
            .entry("content-type".into())
            .or_insert_with(|| "application/json".into());
    }
    let query = path
        .split_once('?')
        .map(|(_, q)| q.to_owned())
        .unwrap_or_default();
    Ok(CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method,
                    path,
                    host,
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    size: i64::try_from(body.len()).unwrap_or(i64::MAX),
                    query,
                    headers,
                    raw_body: body,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    })
}

/// A JSON-RPC request for the MCP `method`, with `name` as the tool or prompt name or the
/// resource URI, and `arguments` (JSON) where the method takes them. `initialize` gets the
/// parameters a client sends.
pub fn json_rpc_body(
    method: &str,
    name: Option<&str>,
    arguments: Option<&str>,
) -> Result<Vec<u8>, RequestError> {
    let mut params = serde_json::Map::new();
    match (method, name) {
        ("tools/call" | "prompts/get", Some(n)) => {
            params.insert("name".into(), json!(n));
        }
        ("resources/read" | "resources/subscribe" | "resources/unsubscribe", Some(u)) => {
            params.insert("uri".into(), json!(u));
        }
        (
            "tools/call"
            | "prompts/get"
            | "resources/read"
            | "resources/subscribe"
            | "resources/unsubscribe",
            None,
        ) => return Err(RequestError::RpcNeedsName(method.to_owned())),
        _ => {}
    }
    if let Some(args) = arguments {
        let value: Value = serde_json::from_str(args).map_err(RequestError::ArgumentsNotJson)?;
        params.insert("arguments".into(), value);
    }
    if method == "initialize" {
        params.insert("protocolVersion".into(), json!("2025-11-25"));
        params.insert("capabilities".into(), json!({}));
        params.insert(
            "clientInfo".into(),
            json!({"name": "mcp-authz-check", "version": env!("CARGO_PKG_VERSION")}),
        );
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    Ok(body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_shaped_as_envoy_sends_them() {
        let request = check_request(ClientRequest {
            method: "POST".into(),
            path: "/mcp?x=1".into(),
            host: "mcp.example.com".into(),
            bearer: Some("t".into()),
            headers: vec!["X-Repeated: a".into(), "x-repeated:b ".into()],
            body: b"{}".to_vec(),
        })
        .unwrap();
        let http = request
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap();
        assert_eq!(http.query, "x=1");
        assert_eq!(http.size, 2);
        let h = |name: &str| http.headers.get(name).map(String::as_str);
        assert_eq!(h("x-repeated"), Some("a,b"));
        assert_eq!(h("authorization"), Some("Bearer t"));
        assert_eq!(h(":authority"), Some("mcp.example.com"));
        assert_eq!(h(":path"), Some("/mcp?x=1"));
        assert_eq!(h("content-type"), Some("application/json"));
    }

    #[test]
    fn malformed_input_is_named() {
        let bad = ClientRequest {
            headers: vec!["no colon".into()],
            ..Default::default()
        };
        assert_eq!(
            check_request(bad).unwrap_err().to_string(),
            "header `no colon` is not `name: value`"
        );
        assert_eq!(
            json_rpc_body("tools/call", None, None)
                .unwrap_err()
                .to_string(),
            "--rpc tools/call needs --name"
        );
        assert!(
            json_rpc_body("ping", None, Some("{"))
                .unwrap_err()
                .to_string()
                .starts_with("--arguments is not JSON: ")
        );
    }

    #[test]
    fn tool_call_body() {
        let body = json_rpc_body(
            "tools/call",
            Some("get_forecast"),
            Some(r#"{"city":"Paris"}"#),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["method"], "tools/call");
        assert_eq!(v["params"]["name"], "get_forecast");
        assert_eq!(v["params"]["arguments"]["city"], "Paris");
    }
}
