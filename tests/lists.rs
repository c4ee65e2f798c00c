//! The list filter over real gRPC, as Envoy drives it: a real check of a list call produces the
//! dynamic metadata, which the ext_proc stream then receives with the response (the contract
//! between the two halves, without Envoy: `tests/envoy.rs` runs the same through Envoy).
//! Fail closed: no caller, a compressed or unreadable body, never an unfiltered list.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should stop the test"
)]

use std::collections::HashMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse, body_mutation,
    processing_request, processing_response,
};
use envoy_types::pb::google::protobuf::Struct;
use mcp_authz::config::Config;
use mcp_authz::server::{self, Running};
use mcp_authz::testutil::{FakeIdp, TestKey, claims, config_yaml};
use serde_json::{Value, json};

const RESOURCE: &str = "https://mcp.example.com/mcp";

struct Setup {
    _idp: FakeIdp,
    key: TestKey,
    issuer: String,
    authz: Running,
}

async fn setup() -> Setup {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let config = Config::from_yaml(&config_yaml(&idp.issuer, RESOURCE, "")).unwrap();
    let authz = server::start(&config, None).await.unwrap();
    assert!(authz.wait_ready(std::time::Duration::from_secs(10)).await);
    Setup {
        issuer: idp.issuer.clone(),
        _idp: idp,
        key,
        authz,
    }
}

impl Setup {
    fn token(&self, scope: &str) -> String {
        let mut c = claims(&self.issuer, RESOURCE);
        c["scope"] = json!(scope);
        self.key.token(&c)
    }

    /// A real check of a POST; returns (allowed, headers set, dynamic metadata).
    async fn check(&self, token: &str, body: &str) -> (bool, HashMap<String, String>, Struct) {
        self.check_request("POST", token, &[], body).await
    }

    async fn check_request(
        &self,
        method: &str,
        token: &str,
        headers: &[&str],
        body: &str,
    ) -> (bool, HashMap<String, String>, Struct) {
        let request = mcp_authz::grpc::check_request(mcp_authz::grpc::ClientRequest {
            method: method.into(),
            path: "/mcp".into(),
            host: "mcp.example.com".into(),
            bearer: Some(token.to_owned()),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            body: body.as_bytes().to_vec(),
        })
        .unwrap();
        let mut client = AuthorizationClient::connect(format!("http://{}", self.authz.grpc_addr))
            .await
            .unwrap();
        let r = client.check(request).await.unwrap().into_inner();
        let allowed = r.status.as_ref().map_or(0, |s| s.code) == 0;
        let headers = match r.http_response {
            Some(
                envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse::OkResponse(
                    ok,
                ),
            ) => ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            _ => HashMap::new(),
        };
        (allowed, headers, r.dynamic_metadata.unwrap_or_default())
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    HeaderMap {
        headers: pairs
            .iter()
            .map(|(k, v)| HeaderValue {
                key: (*k).into(),
                raw_value: v.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect(),
    }
}

fn with_metadata(fields: Option<&Struct>) -> Option<Metadata> {
    fields.map(|f| Metadata {
        filter_metadata: HashMap::from([("envoy.filters.http.ext_authz".to_owned(), f.clone())]),
        ..Default::default()
    })
}

/// Plays one response through an ext_proc stream as Envoy does; returns every answer.
async fn process(
    addr: SocketAddr,
    metadata: Option<&Struct>,
    response_headers: &[(&str, &str)],
    chunks: &[&str],
) -> Vec<ProcessingResponse> {
    let mut messages = vec![ProcessingRequest {
        metadata_context: with_metadata(metadata),
        request: Some(processing_request::Request::ResponseHeaders(HttpHeaders {
            headers: Some(headers(response_headers)),
            // No chunks: a response without a body.
            end_of_stream: chunks.is_empty(),
            ..Default::default()
        })),
        ..Default::default()
    }];
    for (i, c) in chunks.iter().enumerate() {
        messages.push(ProcessingRequest {
            metadata_context: with_metadata(metadata),
            request: Some(processing_request::Request::ResponseBody(HttpBody {
                body: c.as_bytes().to_vec(),
                end_of_stream: i + 1 == chunks.len(),
                ..Default::default()
            })),
            ..Default::default()
        });
    }
    let mut client = ExternalProcessorClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let expected = messages.len();
    let mut answers = client
        .process(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(a) = answers.message().await.unwrap() {
        let immediate = matches!(
            a.response,
            Some(processing_response::Response::ImmediateResponse(_))
        );
        out.push(a);
        if immediate || out.len() == expected {
            break;
        }
    }
    out
}

/// The bytes sent in place of the body chunks (a cleared chunk adds nothing).
fn body_of(answers: &[ProcessingResponse]) -> String {
    let mut body = String::new();
    for a in answers {
        if let Some(processing_response::Response::ResponseBody(b)) = &a.response
            && let Some(m) = b
                .response
                .as_ref()
                .and_then(|r| r.body_mutation.as_ref())
                .and_then(|m| m.mutation.as_ref())
            && let body_mutation::Mutation::Body(bytes) = m
        {
            body.push_str(std::str::from_utf8(bytes).unwrap());
        }
    }
    body
}

fn immediate(answers: &[ProcessingResponse]) -> Option<(u32, Value)> {
    answers.iter().find_map(|a| match &a.response {
        Some(processing_response::Response::ImmediateResponse(i)) => Some((
            i.status.as_ref().map_or(0, |s| s.code as u32),
            serde_json::from_slice(&i.body).unwrap(),
        )),
        _ => None,
    })
}

const SIX_TOOLS: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_forecast"},{"name":"get_alerts"},{"name":"read_file"},{"name":"write_file"},{"name":"delete_everything"},{"name":"internal_debug"}],"nextCursor":"p2"}}"#;

#[tokio::test]
async fn a_checked_list_call_carries_its_caller_to_the_filter() {
    let s = setup().await;
    let token = s.token("mcp:connect mcp:tools:weather");
    let (allowed, set, metadata) = s
        .check(&token, r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .await;
    assert!(allowed);
    // The upstream is asked for an uncompressed body; the caller is in the metadata.
    assert_eq!(
        set.get("accept-encoding").map(String::as_str),
        Some("identity")
    );
    assert!(metadata.fields.contains_key("mcp_list"));
    assert!(!format!("{metadata:?}").contains(&token));

    let (first, second) = SIX_TOOLS.split_at(50);
    let answers = process(
        s.authz.grpc_addr,
        Some(&metadata),
        &[
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", "300"),
        ],
        &[first, second],
    )
    .await;
    assert_eq!(answers.len(), 3);
    let filtered: Value = serde_json::from_str(&body_of(&answers)).unwrap();
    let names: Vec<&str> = filtered["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["get_forecast", "get_alerts", "read_file", "write_file"]
    );
    assert_eq!(filtered["result"]["nextCursor"], "p2");
    assert_eq!(filtered["result"]["cacheScope"], "private");

    // A tools/call is not marked: Envoy opens no stream for it.
    let (allowed, set, metadata) = s
        .check(
            &token,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris"}}}"#,
        )
        .await;
    assert!(allowed);
    assert!(!metadata.fields.contains_key("mcp_list"));
    assert!(!set.contains_key("accept-encoding"));
}

#[tokio::test]
async fn no_caller_or_an_unreadable_body_is_an_error_never_the_list() {
    let s = setup().await;
    let token = s.token("mcp:connect mcp:tools:weather");
    let (_, _, metadata) = s
        .check(&token, r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .await;
    let json = [(":status", "200"), ("content-type", "application/json")];

    // No metadata (a configuration that lost the mark's namespace), or a caller without
    // its subject: 502 with a JSON-RPC error.
    let mut forged = metadata.clone();
    forged.fields.remove("subject");
    for m in [None, Some(&forged)] {
        let answers = process(s.authz.grpc_addr, m, &json, &[SIX_TOOLS]).await;
        let (status, body) = immediate(&answers).unwrap();
        assert_eq!(status, 502);
        assert_eq!(body["error"]["code"], -32603, "{body}");
    }
    // A compressed body: refused at the headers.
    let answers = process(
        s.authz.grpc_addr,
        Some(&metadata),
        &[
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        &["\u{1f}garbage"],
    )
    .await;
    assert_eq!(immediate(&answers).unwrap().0, 502);
    // A success announcing JSON without any body: no list to vouch for.
    let answers = process(s.authz.grpc_addr, Some(&metadata), &json, &[]).await;
    assert_eq!(immediate(&answers).unwrap().0, 502);
    // Not JSON: the body is replaced by an error.
    let answers = process(
        s.authz.grpc_addr,
        Some(&metadata),
        &json,
        &["<html>", "</html>"],
    )
    .await;
    let body: Value = serde_json::from_str(&body_of(&answers)).unwrap();
    assert_eq!(body["error"]["code"], -32603);
    // An upstream error passes as it is (no list in it).
    let answers = process(
        s.authz.grpc_addr,
        Some(&metadata),
        &[(":status", "400"), ("content-type", "application/json")],
        &[r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"no session"}}"#],
    )
    .await;
    assert!(immediate(&answers).is_none());
    assert_eq!(body_of(&answers), "");

    // An SSE stream: the notification passes, the list is filtered, event by event.
    let answers = process(
        s.authz.grpc_addr,
        Some(&metadata),
        &[(":status", "200"), ("content-type", "text/event-stream")],
        &[
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n",
            &format!("event: message\ndata: {SIX_TOOLS}\n\n"),
        ],
    )
    .await;
    let text = body_of(&answers);
    assert!(text.contains("notifications/progress"), "{text}");
    assert!(text.contains("get_alerts"), "{text}");
    assert!(!text.contains("delete_everything"), "{text}");
    assert!(!text.contains("internal_debug"), "{text}");
}

#[tokio::test]
async fn a_resumed_get_stream_cannot_replay_an_unfiltered_list() {
    let s = setup().await;
    let token = s.token("mcp:connect mcp:tools:weather");
    // The GET stream (here resumed with Last-Event-ID) is marked too: a server replays the
    // events of an earlier stream on it, a list response among them (MCP Streamable HTTP,
    // "Resumability and Redelivery").
    let (allowed, set, metadata) = s
        .check_request(
            "GET",
            &token,
            &[
                "accept: text/event-stream",
                "last-event-id: 41",
                "mcp-session-id: s1",
            ],
            "",
        )
        .await;
    assert!(allowed);
    assert_eq!(
        set.get("accept-encoding").map(String::as_str),
        Some("identity")
    );
    assert!(metadata.fields.contains_key("mcp_list"));
    let answers = process(
        s.authz.grpc_addr,
        Some(&metadata),
        &[(":status", "200"), ("content-type", "text/event-stream")],
        &[
            "id: 41\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n",
            &format!("id: 42\ndata: {SIX_TOOLS}\n\n"),
            // A replayed batch of responses, recognised by shape.
            &format!("id: 43\ndata: [{SIX_TOOLS}]\n\n"),
        ],
    )
    .await;
    let text = body_of(&answers);
    assert!(text.contains("list_changed"), "{text}");
    assert_eq!(text.matches("get_alerts").count(), 2, "{text}");
    assert!(!text.contains("delete_everything"), "{text}");
    assert!(!text.contains("internal_debug"), "{text}");
    assert!(
        text.contains("id: 42\n") && text.contains("id: 43\n"),
        "{text}"
    );
}
