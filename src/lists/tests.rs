//! List filtering against the shipped policies, and the body framing (JSON, SSE split anywhere,
//! limits, unreadable input).

use std::sync::Arc;

use serde_json::{Value, json};

use super::body::{BodyFilter, Framing};
use super::*;
use crate::config::ServerConfig;
use crate::resource::ProtectedServer;

fn server(mode: ListFilterMode) -> ProtectedServer {
    let cfg = ServerConfig {
        id: "demo".into(),
        resource: "https://mcp.example.com/mcp".into(),
        authorization_servers: vec![],
        scopes_supported: crate::dev::DEV_SCOPES_SUPPORTED.map(String::from).to_vec(),
        challenge_scopes: vec![],
        step_up: Default::default(),
        matching: Default::default(),
        tenant: Some("acme".into()),
        tenant_from: None,
        list_filter: crate::config::ListFilterConfig { mode },
        token_binding: Default::default(),
        audiences: Vec::new(),
        upstream_identity: None,
        policies: Default::default(),
    };
    ProtectedServer::new(&cfg, &[], |_| None).unwrap()
}

fn filter_for(
    mode: ListFilterMode,
    tenant: &str,
    scopes: &[&str],
    groups: &[&str],
    mark: ListMark,
) -> ListFilter {
    let bundle = Arc::new(crate::policy::load_dir(&crate::testutil::shipped_policies()).unwrap());
    let mut identity = crate::testutil::identity("alice", tenant, scopes);
    identity.groups = groups.iter().map(|g| g.to_string()).collect();
    let caller = ListCaller {
        identity,
        server_id: "demo".into(),
        server_tenant: "acme".into(),
        protocol_version: "2025-11-25".into(),
        session_id: String::new(),
        mark,
    };
    ListFilter::new(
        &server(mode),
        bundle,
        caller,
        Metrics::unregistered(),
        ListVerdicts::new(1000),
    )
    .unwrap()
}

fn tools_mark() -> ListMark {
    ListMark {
        kinds: vec![ListKind::Tools],
        exact: true,
    }
}

const TOOLS: [&str; 5] = [
    "get_forecast",
    "read_file",
    "write_file",
    "delete_everything",
    "undeclared",
];

fn tools_response() -> Value {
    let mut tools: Vec<Value> = TOOLS
        .iter()
        .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
        .collect();
    tools.push(json!({"description": "no name"}));
    json!({"jsonrpc": "2.0", "id": 7, "result": {"tools": tools, "nextCursor": "c2"}})
}

fn names(v: &Value) -> Vec<&str> {
    v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

fn kept(mode: ListFilterMode, tenant: &str, scopes: &[&str], groups: &[&str]) -> Vec<String> {
    let f = filter_for(mode, tenant, scopes, groups, tools_mark());
    let mut v = tools_response();
    let done = f.apply(&mut v).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].1.kept + done[0].1.removed, TOOLS.len() + 1);
    // Pagination and everything else of the result pass; the list is the caller's own.
    assert_eq!(v["result"]["nextCursor"], "c2");
    assert_eq!(v["result"]["cacheScope"], "private");
    assert_eq!(v["id"], 7);
    names(&v).into_iter().map(str::to_owned).collect()
}

#[test]
fn step_up_mode_keeps_what_a_scope_would_open_and_nothing_else() {
    let connect = ["mcp:connect"];
    // Weather and file tools need a scope the server offers: listed, so the step-up can be
    // found. delete_everything needs the break-glass group, which no scope gives; the
    // undeclared tool has no permit at all; the nameless item is not a tool.
    assert_eq!(
        kept(ListFilterMode::StepUp, "acme", &connect, &[]),
        ["get_forecast", "read_file", "write_file"]
    );
    assert_eq!(
        kept(ListFilterMode::StepUp, "acme", &connect, &["break-glass"]),
        [
            "get_forecast",
            "read_file",
            "write_file",
            "delete_everything"
        ]
    );
    // Another tenant: tenant isolation forbids every call, whatever the scopes or arguments.
    let all = crate::dev::DEV_SCOPES_SUPPORTED;
    assert!(kept(ListFilterMode::StepUp, "globex", &all, &["break-glass"]).is_empty());
}

#[test]
fn allowed_only_mode_keeps_what_the_token_can_call_now() {
    assert!(kept(ListFilterMode::AllowedOnly, "acme", &["mcp:connect"], &[]).is_empty());
    // The forecast's day limit and the file path guard read the arguments: they cannot hide
    // the tool (some arguments pass), only the call can be refused.
    assert_eq!(
        kept(
            ListFilterMode::AllowedOnly,
            "acme",
            &["mcp:connect", "mcp:tools:weather", "mcp:tools:files"],
            &[]
        ),
        ["get_forecast", "read_file", "write_file"]
    );
    // A read-only group member: the write tool is forbidden by a rule that reads no argument.
    assert_eq!(
        kept(
            ListFilterMode::AllowedOnly,
            "acme",
            &["mcp:connect", "mcp:tools:files"],
            &["read-only"]
        ),
        ["read_file"]
    );
}

#[test]
fn an_exact_list_response_must_hold_its_list() {
    let f = filter_for(
        ListFilterMode::StepUp,
        "acme",
        &["mcp:connect"],
        &[],
        tools_mark(),
    );
    let mut v = json!({"jsonrpc": "2.0", "id": 1, "result": {"prompts": []}});
    assert_eq!(f.apply(&mut v), Err(ListError::Malformed("tools")));
    let mut v = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": {"a": 1}}});
    assert_eq!(f.apply(&mut v), Err(ListError::Malformed("tools")));
    let mut v = json!({"jsonrpc": "2.0", "id": 1, "result": 3});
    assert_eq!(f.apply(&mut v), Err(ListError::Malformed("tools")));
    assert_eq!(f.apply(&mut json!("text")), Err(ListError::NotJsonRpc));
    // An error response, and a server's request or notification on the stream, pass as sent.
    for m in [
        json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "no"}}),
        json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}),
        json!({"jsonrpc": "2.0", "id": 9, "method": "sampling/createMessage", "params": {"tools": [1]}}),
    ] {
        let mut v = m.clone();
        assert_eq!(f.apply(&mut v), Ok(vec![]));
        assert_eq!(v, m);
    }
}

#[test]
fn batches_and_replays_are_filtered_by_shape() {
    let mark = ListMark {
        kinds: ListKind::ALL.to_vec(),
        exact: false,
    };
    let f = filter_for(ListFilterMode::StepUp, "acme", &["mcp:connect"], &[], mark);
    let mut v = json!([
        tools_response(),
        {"jsonrpc": "2.0", "id": 8, "result": {"content": []}},
        {"jsonrpc": "2.0", "id": 9, "result": {
            "prompts": [{"name": "summarize"}],
            "resources": [{"uri": "file:///etc/passwd", "name": "x"}],
        }},
    ]);
    let done = f.apply(&mut v).unwrap();
    assert_eq!(done.len(), 3);
    assert_eq!(names(&v[0]), ["get_forecast", "read_file", "write_file"]);
    // A tools/call result in the same batch has no list: untouched.
    assert_eq!(
        v[1],
        json!({"jsonrpc": "2.0", "id": 8, "result": {"content": []}})
    );
    // The shipped session baseline permits prompts/get and resources/read with mcp:connect.
    assert_eq!(v[2]["result"]["prompts"][0]["name"], "summarize");
    assert_eq!(v[2]["result"]["resources"].as_array().unwrap().len(), 1);
    assert_eq!(v[2]["result"]["cacheScope"], "private");
    // Without mcp:connect, neither: both went through the policies.
    let f = filter_for(
        ListFilterMode::StepUp,
        "acme",
        &[],
        &[],
        ListMark {
            kinds: ListKind::ALL.to_vec(),
            exact: false,
        },
    );
    let mut v = json!({"jsonrpc": "2.0", "id": 9, "result": {
        "prompts": [{"name": "summarize"}],
        "resourceTemplates": [{"uriTemplate": "file:///{path}", "name": "x"}],
    }});
    f.apply(&mut v).unwrap();
    // mcp:connect is offered, so a step-up would open them: kept in step_up mode.
    assert_eq!(v["result"]["prompts"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["result"]["resourceTemplates"].as_array().unwrap().len(),
        1
    );
}

#[test]
fn marks_round_trip_and_garbage_is_refused() {
    for mark in [
        tools_mark(),
        ListMark {
            kinds: ListKind::ALL.to_vec(),
            exact: false,
        },
    ] {
        assert_eq!(ListMark::decode(&mark.encode()), Some(mark));
    }
    for bad in [
        "",
        "exact",
        "tools",
        "tools prompts exact",
        "tool exact",
        "tools  shape",
    ] {
        assert_eq!(ListMark::decode(bad), None, "{bad:?}");
    }
}

#[test]
fn framing_follows_status_type_and_encoding() {
    let f = Framing::of;
    assert_eq!(f(200, Some("application/json"), None), Framing::Json);
    assert_eq!(
        f(
            200,
            Some("Application/JSON; charset=utf-8"),
            Some("identity")
        ),
        Framing::Json
    );
    assert_eq!(f(200, Some("text/event-stream"), None), Framing::Sse);
    assert_eq!(f(404, Some("application/json"), None), Framing::PassThrough);
    assert_eq!(f(202, None, None), Framing::PassThrough);
    assert_eq!(
        f(200, Some("application/json"), Some("gzip")),
        Framing::Refused(ListError::Compressed)
    );
    assert_eq!(
        f(200, Some("text/html"), None),
        Framing::Refused(ListError::ContentType)
    );
    assert_eq!(f(200, None, None), Framing::Refused(ListError::ContentType));
}

/// Runs chunks through a body filter that drops every tool named `hidden` (and counts calls).
fn run(framing: Framing, max: usize, chunks: &[&[u8]]) -> (Vec<u8>, usize) {
    let mut body = BodyFilter::new(framing, max);
    let mut calls = 0;
    let mut apply = |v: &mut Value| {
        calls += 1;
        if let Some(tools) = v
            .get_mut("result")
            .and_then(|r| r.get_mut("tools"))
            .and_then(Value::as_array_mut)
        {
            tools.retain(|t| t["name"] != "hidden");
        }
        Ok(())
    };
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let end = i + 1 == chunks.len();
        match body.push(c, end, &mut apply) {
            Ok(b) | Err(b) => out.extend(b),
        }
    }
    (out, calls)
}

const LIST: &str =
    r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"shown"},{"name":"hidden"}]}}"#;
const FILTERED: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"shown"}]}}"#;

#[test]
fn a_json_body_is_held_and_sent_filtered_at_its_end() {
    let (a, b) = LIST.as_bytes().split_at(20);
    let (out, calls) = run(Framing::Json, 1 << 20, &[a, b, b""]);
    assert_eq!(calls, 1);
    assert_eq!(
        serde_json::from_slice::<Value>(&out).unwrap(),
        serde_json::from_str::<Value>(FILTERED).unwrap()
    );
    // Too large, invalid, or with a repeated key: an error, never the list.
    for (body, max) in [
        (LIST.to_owned(), 40),
        (format!("{LIST}x"), 1 << 20),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"tools":[{"name":"hidden"}]}}"#
                .to_owned(),
            1 << 20,
        ),
    ] {
        let (out, _) = run(Framing::Json, max, &[body.as_bytes(), b""]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["code"], -32603, "{body}");
        assert!(!String::from_utf8_lossy(&out).contains("hidden"));
    }
}

#[test]
fn sse_events_are_filtered_wherever_the_chunks_split_them() {
    let stream = format!(
        ": comment\r\nevent: message\r\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\r\n\r\nid: 42\r\ndata: {LIST}\r\n\r\nid: 43\r\ndata:\r\n\r\n"
    );
    let bytes = stream.as_bytes();
    // Every split point, including inside a CRLF.
    for at in 0..bytes.len() {
        let (a, b) = bytes.split_at(at);
        let (out, calls) = run(Framing::Sse, 1 << 20, &[a, b, b""]);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(calls, 2, "split at {at}");
        assert!(!text.contains("hidden"), "split at {at}: {text}");
        assert!(text.contains("\"shown\""));
        assert!(text.contains("id: 42\ndata: {"), "{text}");
        // The priming event (id, empty data) stays.
        assert!(text.ends_with("id: 43\ndata: \n\n"), "{text}");
        assert!(text.starts_with(": comment\nevent: message\n"), "{text}");
    }
}

#[test]
fn an_sse_event_that_cannot_be_read_becomes_an_error_event() {
    let (out, _) = run(
        Framing::Sse,
        1 << 20,
        &[b"data: {\"tools\": [\n", b"data: not json\n\n"],
    );
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("-32603"), "{text}");
    // An event longer than the limit: an error, and the rest of the stream is dropped.
    let long = format!("data: {LIST}");
    let (out, _) = run(
        Framing::Sse,
        40,
        &[long.as_bytes(), b"\n\ndata: {LIST}\n\n"],
    );
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("larger than"), "{text}");
    assert!(!text.contains("hidden"), "{text}");
    // An event cut off by the end of the stream is not dispatched (WHATWG s9.2.6).
    let (out, calls) = run(
        Framing::Sse,
        1 << 20,
        &[format!("data: {LIST}\n").as_bytes()],
    );
    assert!(out.is_empty());
    assert_eq!(calls, 0);
}

#[test]
fn a_refused_body_is_replaced_at_its_end() {
    let (out, calls) = run(
        Framing::Refused(ListError::Compressed),
        1 << 20,
        &[b"\x1f\x8b...", b""],
    );
    assert_eq!(calls, 0);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("compressed")
    );
}

#[test]
fn cached_verdicts_are_per_caller_and_the_same_as_decided() {
    let bundle = Arc::new(crate::policy::load_dir(&crate::testutil::shipped_policies()).unwrap());
    let shared = ListVerdicts::new(1000);
    let make = |scopes: &[&str], groups: &[&str], verdicts: ListVerdicts| {
        let mut identity = crate::testutil::identity("alice", "acme", scopes);
        identity.groups = groups.iter().map(|g| g.to_string()).collect();
        let caller = ListCaller {
            identity,
            server_id: "demo".into(),
            server_tenant: "acme".into(),
            protocol_version: String::new(),
            session_id: String::new(),
            mark: tools_mark(),
        };
        ListFilter::new(
            &server(ListFilterMode::AllowedOnly),
            bundle.clone(),
            caller,
            Metrics::unregistered(),
            verdicts,
        )
        .unwrap()
    };
    let files = ["mcp:connect", "mcp:tools:files"];
    let cases: [(&[&str], &[&str]); 4] = [
        (&files, &[]),
        (&files, &["read-only"]),
        (&["mcp:connect", "mcp:tools:weather"], &[]),
        (&files, &[]),
    ];
    for (scopes, groups) in cases {
        let run = |verdicts: ListVerdicts| {
            let mut v = tools_response();
            make(scopes, groups, verdicts).apply(&mut v).unwrap();
            names(&v).into_iter().map(str::to_owned).collect::<Vec<_>>()
        };
        // Twice through the shared cache (the second from it), once without any cache.
        let first = run(shared.clone());
        assert_eq!(run(shared.clone()), first, "{scopes:?} {groups:?}");
        assert_eq!(run(ListVerdicts::new(0)), first, "{scopes:?} {groups:?}");
    }
    // The callers differ, so their lists differ even through one cache.
    let lists: Vec<Vec<String>> = cases
        .iter()
        .map(|(s, g)| {
            let mut v = tools_response();
            make(s, g, shared.clone()).apply(&mut v).unwrap();
            names(&v).into_iter().map(str::to_owned).collect()
        })
        .collect();
    assert_eq!(lists[0], ["read_file", "write_file"]);
    assert_eq!(lists[1], ["read_file"]);
    assert_eq!(lists[2], ["get_forecast"]);
}
