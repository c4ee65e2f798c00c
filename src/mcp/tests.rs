//! MCP parsing tests: every known method and its target, batches, envelopes and routing
//! headers that must pass, and the table of malformed and hostile requests with their statuses.

use serde_json::json;

use super::message::{Rule, rule};
use super::*;

fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(method: &str, pairs: &[(&str, &str)], body: &[u8]) -> Result<McpRequest, McpError> {
    let h = headers(pairs);
    parse(&HttpParts {
        method,
        headers: &h,
        body,
        max_body_bytes: 1 << 20,
    })
}

/// A POST with `content-type: application/json` and the extra headers.
fn post_with(extra: &[(&str, &str)], body: &str) -> Result<McpRequest, McpError> {
    let mut pairs = vec![("content-type", "application/json")];
    pairs.extend_from_slice(extra);
    run("POST", &pairs, body.as_bytes())
}

fn post(body: &str) -> Result<McpRequest, McpError> {
    post_with(&[], body)
}

/// The single (non-batch) message of a POST that must parse.
fn one(body: &str) -> Message {
    match post(body) {
        Ok(McpRequest::Messages {
            batch: false,
            mut messages,
        }) if messages.len() == 1 => messages.remove(0),
        other => panic!("{body}: {other:?}"),
    }
}

fn request(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
}

#[test]
fn every_known_method_has_a_rule_and_vice_versa() {
    for method in KNOWN_METHODS {
        assert!(rule(method).is_some(), "{method}");
    }
    let notifications = KNOWN_METHODS
        .iter()
        .filter(|m| rule(m) == Some(Rule::Notification))
        .count();
    assert_eq!(notifications, 5);
    assert_eq!(KNOWN_METHODS.len(), 24);
    assert_eq!(rule("tools/cal"), None);
    assert_eq!(rule("Tools/call"), None);
}

#[test]
fn server_level_requests() {
    let cases = [
        (
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "c", "version": "1"}}),
        ),
        ("ping", json!({})),
        ("logging/setLevel", json!({"level": "info"})),
        ("prompts/list", json!({"cursor": "abc"})),
        ("resources/list", json!({})),
        ("resources/templates/list", json!({})),
        ("tools/list", json!({})),
        ("tasks/list", json!({})),
    ];
    for (method, params) in cases {
        let m = one(&request(method, params));
        assert_eq!(m.kind, MessageKind::Request, "{method}");
        assert_eq!(m.method.as_deref(), Some(method));
        assert_eq!(m.action, Some(method));
        assert_eq!(m.target, Target::Server);
        assert_eq!(m.target.name(), None);
    }
    // params is optional for these.
    let m = one(r#"{"jsonrpc":"2.0","id":"x","method":"ping"}"#);
    assert_eq!(m.action, Some("ping"));
    assert_eq!(m.kind, MessageKind::Request);
}

#[test]
fn tools_call() {
    let m = one(&request(
        "tools/call",
        json!({"name": "get_weather", "arguments": {"city": "Paris", "n": [1, {"x": null}]}}),
    ));
    assert_eq!(m.action, Some("tools/call"));
    let Target::Tool { name, arguments } = &m.target else {
        panic!("{m:?}");
    };
    assert_eq!(name, "get_weather");
    assert_eq!(
        Value::Object(arguments.clone()),
        json!({"city": "Paris", "n": [1, {"x": null}]})
    );
    assert_eq!(m.target.name(), Some("get_weather"));

    // arguments absent -> empty map; printable non-ASCII names tolerated.
    let m = one(&request("tools/call", json!({"name": "météo v2"})));
    assert_eq!(
        m.target,
        Target::Tool {
            name: "météo v2".into(),
            arguments: Map::new()
        }
    );
    // Exactly 128 characters (multi-byte) is allowed.
    let long = "é".repeat(128);
    assert_eq!(
        one(&request("tools/call", json!({"name": long})))
            .target
            .name(),
        Some(long.as_str())
    );
}

#[test]
fn prompts_resources_tasks() {
    let m = one(&request(
        "prompts/get",
        json!({"name": "summarize", "arguments": {"a": "b"}}),
    ));
    assert_eq!(m.action, Some("prompts/get"));
    assert_eq!(
        m.target,
        Target::Prompt {
            name: "summarize".into()
        }
    );

    for method in [
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
    ] {
        let m = one(&request(method, json!({"uri": "file:///etc/motd"})));
        assert_eq!(m.action, Some(method));
        assert_eq!(
            m.target,
            Target::Resource {
                uri: "file:///etc/motd".into()
            }
        );
        assert_eq!(m.target.name(), Some("file:///etc/motd"));
    }
    for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
        let m = one(&request(method, json!({"taskId": "786512e2-9e0d"})));
        assert_eq!(m.action, Some(method));
        assert_eq!(
            m.target,
            Target::Task {
                id: "786512e2-9e0d".into()
            }
        );
        assert_eq!(m.target.name(), Some("786512e2-9e0d"));
    }
}

#[test]
fn completion_targets() {
    let m = one(&request(
        "completion/complete",
        json!({"ref": {"type": "ref/prompt", "name": "code_review"},
               "argument": {"name": "language", "value": "py"}}),
    ));
    assert_eq!(m.action, Some("completion/complete"));
    assert_eq!(
        m.target,
        Target::Prompt {
            name: "code_review".into()
        }
    );

    let m = one(&request(
        "completion/complete",
        json!({"ref": {"type": "ref/resource", "uri": "file:///{path}"},
               "argument": {"name": "path", "value": "/h"}}),
    ));
    assert_eq!(
        m.target,
        Target::Resource {
            uri: "file:///{path}".into()
        }
    );
}

#[test]
fn notifications() {
    for (method, params) in [
        ("notifications/initialized", None),
        (
            "notifications/cancelled",
            Some(json!({"requestId": 3, "reason": "user"})),
        ),
        (
            "notifications/progress",
            Some(json!({"progressToken": "t", "progress": 5})),
        ),
        ("notifications/roots/list_changed", None),
        (
            "notifications/tasks/status",
            Some(json!({"taskId": "t1", "status": "working"})),
        ),
    ] {
        let mut body = json!({"jsonrpc": "2.0", "method": method});
        if let Some(params) = params {
            body["params"] = params;
        }
        let m = one(&body.to_string());
        assert_eq!(m.kind, MessageKind::Notification, "{method}");
        assert_eq!(m.action, Some(method));
        assert_eq!(m.target, Target::Server);
    }
}

#[test]
fn client_responses() {
    for body in [
        r#"{"jsonrpc":"2.0","id":7,"result":{"roots":[]}}"#,
        r#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#,
        r#"{"jsonrpc":"2.0","id":8,"error":{"code":-32601,"message":"no"}}"#,
    ] {
        let m = one(body);
        assert_eq!(m.kind, MessageKind::Response, "{body}");
        assert_eq!(m.method, None);
        assert_eq!(m.action, Some(RESPONSE_ACTION));
        assert_eq!(m.target, Target::Server);
    }
}

#[test]
fn unknown_methods_parse_without_an_action() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/delete","params":{"name":"x"}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/whatever"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage"}"#,
    ] {
        let m = one(body);
        assert_eq!(m.action, None, "{body}");
        assert_eq!(m.target, Target::Server);
    }
    let m = one(r#"{"jsonrpc":"2.0","method":"x/y"}"#);
    assert_eq!(m.kind, MessageKind::Notification);
    assert_eq!(m.method.as_deref(), Some("x/y"));
    // An unknown method's mcp-name is not compared: there is no interpreted target.
    let got = post_with(
        &[("mcp-method", "x/y"), ("mcp-name", "anything")],
        r#"{"jsonrpc":"2.0","id":1,"method":"x/y","params":{"name":"other"}}"#,
    );
    assert!(got.is_ok(), "{got:?}");
}

#[test]
fn batches() {
    let body = r#"[
        {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
        {"jsonrpc":"2.0","method":"notifications/initialized"},
        {"jsonrpc":"2.0","id":9,"result":{}},
        {"jsonrpc":"2.0","id":2,"method":"mystery"}
    ]"#;
    let Ok(McpRequest::Messages { batch, messages }) = post(body) else {
        panic!("batch refused");
    };
    assert!(batch);
    let actions: Vec<_> = messages.iter().map(|m| m.action).collect();
    assert_eq!(
        actions,
        [
            Some("tools/call"),
            Some("notifications/initialized"),
            Some(RESPONSE_ACTION),
            None
        ]
    );
    // A batch of one is still a batch.
    let got = post(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
    assert!(
        matches!(got, Ok(McpRequest::Messages { batch: true, ref messages }) if messages.len() == 1)
    );
    // Exactly MAX_BATCH is allowed.
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let full = format!("[{}]", vec![ping; MAX_BATCH].join(","));
    assert!(post(&full).is_ok());
}

#[test]
fn get_and_delete() {
    assert_eq!(run("GET", &[], b""), Ok(McpRequest::OpenStream));
    assert_eq!(run("DELETE", &[], b""), Ok(McpRequest::EndSession));
    // No content-type needed.
    let noise = [("accept", "text/event-stream"), ("mcp-session-id", "abc")];
    assert_eq!(run("GET", &noise, b""), Ok(McpRequest::OpenStream));
    assert_eq!(run("DELETE", &noise, b""), Ok(McpRequest::EndSession));
    // Routing headers name a POST's message: on a GET or DELETE they route a request that was
    // never evaluated as that method, so they are refused.
    for routing in [
        vec![("mcp-method", "tools/call"), ("mcp-name", "x")],
        vec![("mcp-method", "tools/call")],
        vec![("mcp-name", "x")],
    ] {
        for method in ["GET", "DELETE"] {
            assert_eq!(
                run(method, &routing, b""),
                Err(McpError::HeaderMismatch),
                "{method} {routing:?}"
            );
        }
    }
}

#[test]
fn accepted_envelopes() {
    let ping = r#"  {"jsonrpc":"2.0","id":1,"method":"ping"}
"#;
    for content_type in [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=\"UTF-8\"",
        "application/json ; charset=utf8;",
    ] {
        let got = run("POST", &[("content-type", content_type)], ping.as_bytes());
        assert!(got.is_ok(), "{content_type}: {got:?}");
    }
    for encoding in ["identity", "IDENTITY", "identity, identity", ""] {
        let got = post_with(&[("content-encoding", encoding)], ping);
        assert!(got.is_ok(), "{encoding}: {got:?}");
    }
    let got = post_with(&[("x-envoy-auth-partial-body", "false")], ping);
    assert!(got.is_ok());
}

#[test]
fn routing_headers_that_agree() {
    let cases: &[(&[(&str, &str)], String)] = &[
        (
            &[("mcp-method", "tools/call"), ("mcp-name", "get_weather")],
            request("tools/call", json!({"name": "get_weather"})),
        ),
        (
            &[("mcp-method", "prompts/get"), ("mcp-name", "summarize")],
            request("prompts/get", json!({"name": "summarize"})),
        ),
        (
            &[
                ("mcp-method", "resources/read"),
                ("mcp-name", "file:///a.txt"),
            ],
            request("resources/read", json!({"uri": "file:///a.txt"})),
        ),
        (
            &[("mcp-method", "completion/complete"), ("mcp-name", "p")],
            request(
                "completion/complete",
                json!({"ref": {"type": "ref/prompt", "name": "p"}}),
            ),
        ),
        (
            &[("mcp-method", "tasks/get"), ("mcp-name", "t-1")],
            request("tasks/get", json!({"taskId": "t-1"})),
        ),
        // mcp-method alone, on a request and on a notification.
        (
            &[("mcp-method", "tools/list")],
            request("tools/list", json!({})),
        ),
        (
            &[("mcp-method", "notifications/initialized")],
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_string(),
        ),
        // mcp-name alone.
        (
            &[("mcp-name", "a")],
            request("tools/call", json!({"name": "a"})),
        ),
        // SEP-2243 base64 sentinel: "café" and a name that looks like the sentinel.
        (
            &[
                ("mcp-method", "tools/call"),
                ("mcp-name", "=?base64?Y2Fmw6k=?="),
            ],
            request("tools/call", json!({"name": "café"})),
        ),
        (
            &[("mcp-name", "=?base64?Y2Fmw6k?=")],
            request("tools/call", json!({"name": "café"})),
        ),
        (
            &[("mcp-name", "=?base64?PT9iYXNlNjQ/eD89?=")],
            request("tools/call", json!({"name": "=?base64?x?="})),
        ),
    ];
    for (extra, body) in cases {
        let got = post_with(extra, body);
        assert!(got.is_ok(), "{extra:?} {body}: {got:?}");
    }
}

#[test]
fn routing_header_disagreements() {
    let call = request("tools/call", json!({"name": "get_weather"}));
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("mcp-method", "tools/list")], &call),
        (&[("mcp-method", "Tools/Call")], &call),
        (&[("mcp-method", "tools/call,tools/call")], &call),
        (
            &[("mcp-method", "tools/call"), ("mcp-name", "delete_all")],
            &call,
        ),
        (&[("mcp-name", "get_weather,get_weather")], &call),
        (&[("mcp-name", "=?base64?ZGVsZXRl?=")], &call),
        // The body names nothing, the header names something.
        (
            &[("mcp-name", "x")],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        ),
        // A response has no method to agree with.
        (
            &[("mcp-method", "ping")],
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        ),
    ];
    for (extra, body) in cases {
        assert_eq!(
            post_with(extra, body),
            Err(McpError::HeaderMismatch),
            "{extra:?} {body}"
        );
    }
    // Undecodable sentinel: still a 400, with its own message.
    let got = post_with(&[("mcp-name", "=?base64?***?=")], &call);
    assert_eq!(got.map_err(|e| e.status()), Err(400));
    let got = post_with(&[("mcp-name", "=?base64?/w==?=")], &call);
    assert_eq!(got.map_err(|e| e.status()), Err(400));
}

#[test]
fn param_headers_carry_the_arguments_they_name() {
    let call = request(
        "tools/call",
        json!({"name": "query", "arguments": {"region": "eu", "limit": 42, "dry": true, "opts": {"a": 1}, "none": null}}),
    );
    // Agreeing (names are case-insensitive, integers compared as numbers, base64 decoded), or
    // naming no top-level argument: the server, which knows the schema, checks those.
    for extra in [
        [("mcp-param-region", "eu")],
        [("mcp-param-region", "=?base64?ZXU=?=")],
        [("mcp-param-limit", "42.0")],
        [("mcp-param-dry", "true")],
        [("mcp-param-tenant", "anything")],
    ] {
        assert!(post_with(&extra, &call).is_ok(), "{extra:?}");
    }
    for extra in [
        [("mcp-param-region", "us")],
        [("mcp-param-region", "EU")],
        [("mcp-param-region", "eu,eu")],
        [("mcp-param-limit", "43")],
        [("mcp-param-limit", "0x2a")],
        [("mcp-param-dry", "1")],
        [("mcp-param-opts", "{\"a\":1}")],
        [("mcp-param-none", "")],
    ] {
        assert_eq!(
            post_with(&extra, &call),
            Err(McpError::HeaderMismatch),
            "{extra:?}"
        );
    }
    // Only a tools/call has arguments to mirror.
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    assert_eq!(
        post_with(&[("mcp-param-region", "eu")], ping),
        Err(McpError::HeaderMismatch)
    );
    assert_eq!(
        run("GET", &[("mcp-param-region", "eu")], b""),
        Err(McpError::HeaderMismatch)
    );
}

/// Numbers past 2^53 are compared as integers, not as the doubles they round to, and a
/// fractional number only matches its own value (mutation testing found both unchecked).
#[test]
fn param_headers_compare_large_integers_exactly_and_fractions_by_value() {
    let call = request(
        "tools/call",
        json!({"name": "query", "arguments": {"id": 9_007_199_254_740_993_i64, "ratio": 1.5}}),
    );
    assert!(post_with(&[("mcp-param-id", "9007199254740993")], &call).is_ok());
    assert!(post_with(&[("mcp-param-ratio", "1.5")], &call).is_ok());
    assert!(post_with(&[("mcp-param-ratio", "1.50")], &call).is_ok());
    for extra in [
        // The same double as the argument, a different integer.
        [("mcp-param-id", "9007199254740992")],
        [("mcp-param-ratio", "2.5")],
        [("mcp-param-ratio", "NaN")],
    ] {
        assert_eq!(
            post_with(&extra, &call),
            Err(McpError::HeaderMismatch),
            "{extra:?}"
        );
    }
}

#[test]
fn invisible_characters_are_refused_in_names() {
    for c in [
        '\u{200C}',
        '\u{200D}',
        '\u{2060}',
        '\u{2062}',
        '\u{00AD}',
        '\u{061C}',
        '\u{180E}',
        '\u{3164}',
        '\u{E0041}',
    ] {
        let body = request("tools/call", json!({"name": format!("get{c}_weather")}));
        assert_eq!(post(&body).map_err(|e| e.status()), Err(400), "{c:?}");
    }
    // Variation selectors and combining marks are part of legitimate text: not refused here
    // (an unknown name is denied by policy anyway).
    let body = request("tools/call", json!({"name": "caf\u{65}\u{301}"}));
    assert!(post(&body).is_ok());
}

#[test]
fn batches_refuse_routing_headers() {
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
    for extra in [
        [("mcp-method", "ping")],
        [("mcp-name", "x")],
        [("mcp-param-x", "1")],
    ] {
        assert_eq!(post_with(&extra, batch).map_err(|e| e.status()), Err(400));
    }
}

#[test]
fn duplicate_keys_are_found_after_unescaping() {
    let body =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","n\u0061me":"b"}}"#;
    assert_eq!(post(body), Err(McpError::DuplicateKey));
}

#[test]
fn nesting_is_bounded_without_overflowing_the_stack() {
    for body in [
        "[".repeat(10_000),
        "{\"a\":".repeat(10_000),
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
    ] {
        assert_eq!(post(&body), Err(McpError::TooDeep));
    }
    // Arguments nested right up to the limit are fine; one level more is not.
    let nested = |levels: usize| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{{"x":{}1{}}}}}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        )
    };
    // The message, params and arguments objects are three levels already.
    assert!(post(&nested(MAX_DEPTH - 3)).is_ok());
    assert_eq!(post(&nested(MAX_DEPTH - 2)), Err(McpError::TooDeep));
}

#[test]
fn numbers_stay_numbers() {
    // Guards against a feature such as serde_json's `arbitrary_precision` changing what
    // the visitor sees: an integer id must still read as an integer.
    assert!(post(r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#).is_ok());
    assert!(post(r#"{"jsonrpc":"2.0","id":-5,"method":"ping"}"#).is_ok());
    let m = one(&request(
        "tools/call",
        json!({"name": "t", "arguments": {"f": 1.5, "i": -2, "b": true, "s": "x", "z": null}}),
    ));
    let Target::Tool { arguments, .. } = m.target else {
        panic!("not a tool");
    };
    assert_eq!(arguments.get("f"), Some(&json!(1.5)));
    assert_eq!(arguments.get("i"), Some(&json!(-2)));
}

#[test]
fn errors_display_their_fixed_message() {
    let err = post(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"evil\n<script>"}}"#,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.starts_with("tools/call needs"), "{err}");
    assert!(!err.contains("evil"));
    let boxed: Box<dyn std::error::Error> = Box::new(McpError::InvalidJson);
    assert_eq!(boxed.to_string(), "the request body is not valid JSON");
}

/// Malformed and hostile requests, each with the exact status it must get.
#[test]
fn refused_requests() {
    const JSON: &[(&str, &str)] = &[("content-type", "application/json")];
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let call = |params: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{params}}}"#)
    };
    let too_long_name = call(&format!(r#"{{"name":"{}"}}"#, "a".repeat(129)));
    let too_long_prompt = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{{"name":"{}"}}}}"#,
        "p".repeat(257)
    );
    let too_long_uri = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"file:///{}"}}}}"#,
        "u".repeat(2048)
    );
    let big_batch = format!("[{}]", vec![ping; MAX_BATCH + 1].join(","));
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend_from_slice(ping.as_bytes());
    let mut latin1 =
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"caf"#.to_vec();
    latin1.extend_from_slice(b"\xE9\"}}");
    let deep = "[".repeat(10_000);

    /// (what, HTTP method, headers, body, expected status)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16);
    let cases: Vec<Case<'_>> = vec![
        // HTTP envelope.
        ("PUT", "PUT", JSON.to_vec(), ping.into(), 405),
        ("PATCH", "PATCH", JSON.to_vec(), ping.into(), 405),
        ("OPTIONS", "OPTIONS", vec![], vec![], 405),
        ("HEAD", "HEAD", vec![], vec![], 405),
        ("lowercase post", "post", JSON.to_vec(), ping.into(), 405),
        ("body on GET", "GET", vec![], ping.into(), 400),
        ("body on DELETE", "DELETE", vec![], b"x".to_vec(), 400),
        (
            "partial body",
            "POST",
            vec![("content-type", "application/json"), ("x-envoy-auth-partial-body", "true")],
            ping.into(),
            413,
        ),
        (
            "partial body, truncated JSON",
            "POST",
            vec![("content-type", "application/json"), ("x-envoy-auth-partial-body", "TRUE")],
            br#"{"jsonrpc":"2.0","id":1,"meth"#.to_vec(),
            413,
        ),
        (
            "gzip",
            "POST",
            vec![("content-type", "application/json"), ("content-encoding", "gzip")],
            ping.into(),
            415,
        ),
        (
            "identity then br",
            "POST",
            vec![("content-type", "application/json"), ("content-encoding", "identity,br")],
            ping.into(),
            415,
        ),
        ("no content type", "POST", vec![], ping.into(), 415),
        ("text/plain", "POST", vec![("content-type", "text/plain")], ping.into(), 415),
        (
            "json-seq",
            "POST",
            vec![("content-type", "application/json-seq")],
            ping.into(),
            415,
        ),
        (
            "form",
            "POST",
            vec![("content-type", "application/x-www-form-urlencoded")],
            ping.into(),
            415,
        ),
        (
            "latin-1 charset",
            "POST",
            vec![("content-type", "application/json; charset=iso-8859-1")],
            ping.into(),
            415,
        ),
        (
            "two content types",
            "POST",
            vec![("content-type", "application/json,text/plain")],
            ping.into(),
            415,
        ),
        // Body encoding and JSON syntax.
        ("empty body", "POST", JSON.to_vec(), vec![], 400),
        ("whitespace body", "POST", JSON.to_vec(), b"  \n".to_vec(), 400),
        ("invalid UTF-8", "POST", JSON.to_vec(), latin1, 400),
        ("BOM", "POST", JSON.to_vec(), bom, 400),
        ("invalid JSON", "POST", JSON.to_vec(), b"{jsonrpc: 2.0}".to_vec(), 400),
        (
            "truncated JSON",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"pi"#.to_vec(),
            400,
        ),
        (
            "trailing garbage",
            "POST",
            JSON.to_vec(),
            format!("{ping}x").into(),
            400,
        ),
        ("two messages", "POST", JSON.to_vec(), format!("{ping}{ping}").into(), 400),
        (
            "trailing comma",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"ping",}"#.to_vec(),
            400,
        ),
        (
            "lone surrogate",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\ud800"}}"#.to_vec(),
            400,
        ),
        (
            "argument keys differing only in case",
            "POST",
            JSON.to_vec(),
            call(r#"{"name":"read_file","arguments":{"path":"/srv/shared/a","Path":"/etc/passwd"}}"#).into(),
            400,
        ),
        (
            "argument keys equal under Unicode case folding",
            "POST",
            JSON.to_vec(),
            call("{\"name\":\"t\",\"arguments\":{\"pas\":1,\"pa\u{17f}\":2}}").into(),
            400,
        ),
        (
            "duplicate key, top level",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#.to_vec(),
            400,
        ),
        (
            "duplicate key, nested",
            "POST",
            JSON.to_vec(),
            call(r#"{"name":"safe","name":"evil"}"#).into(),
            400,
        ),
        (
            "duplicate key, deep in arguments",
            "POST",
            JSON.to_vec(),
            call(r#"{"name":"t","arguments":{"a":[{"b":1,"b":2}]}}"#).into(),
            400,
        ),
        ("deeply nested arrays", "POST", JSON.to_vec(), deep.into(), 400),
        ("NaN", "POST", JSON.to_vec(), br#"{"jsonrpc":"2.0","id":NaN,"method":"ping"}"#.to_vec(), 400),
        (
            "huge number",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1e999,"method":"ping"}"#.to_vec(),
            400,
        ),
        // Top-level shape.
        ("top-level string", "POST", JSON.to_vec(), br#""ping""#.to_vec(), 400),
        ("top-level number", "POST", JSON.to_vec(), b"42".to_vec(), 400),
        ("top-level null", "POST", JSON.to_vec(), b"null".to_vec(), 400),
        ("top-level true", "POST", JSON.to_vec(), b"true".to_vec(), 400),
        ("empty batch", "POST", JSON.to_vec(), b"[]".to_vec(), 400),
        ("batch too big", "POST", JSON.to_vec(), big_batch.into(), 400),
        (
            "batch with a non-object",
            "POST",
            JSON.to_vec(),
            format!("[{ping},1]").into(),
            400,
        ),
        ("nested arrays", "POST", JSON.to_vec(), format!("[[{ping}]]").into(), 400),
        (
            "batch with a bad element",
            "POST",
            JSON.to_vec(),
            format!(r#"[{ping},{{"jsonrpc":"1.0","id":2,"method":"ping"}}]"#).into(),
            400,
        ),
        // JSON-RPC envelope.
        (
            "jsonrpc 1.0",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#.to_vec(),
            400,
        ),
        (
            "jsonrpc number",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#.to_vec(),
            400,
        ),
        ("missing jsonrpc", "POST", JSON.to_vec(), br#"{"id":1,"method":"ping"}"#.to_vec(), 400),
        ("empty object", "POST", JSON.to_vec(), b"{}".to_vec(), 400),
        (
            "id null",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#.to_vec(),
            400,
        ),
        (
            "id float",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#.to_vec(),
            400,
        ),
        (
            "id 1.0",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1.0,"method":"ping"}"#.to_vec(),
            400,
        ),
        (
            "id bool",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#.to_vec(),
            400,
        ),
        (
            "id object",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#.to_vec(),
            400,
        ),
        (
            "method not a string",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":7}"#.to_vec(),
            400,
        ),
        (
            "result and error together",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}"#.to_vec(),
            400,
        ),
        (
            "response without result or error",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1}"#.to_vec(),
            400,
        ),
        (
            "response without id",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","result":{}}"#.to_vec(),
            400,
        ),
        (
            "error not an object",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"error":"boom"}"#.to_vec(),
            400,
        ),
        (
            "request carrying a result",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#.to_vec(),
            400,
        ),
        (
            "params array",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["x"]}"#.to_vec(),
            400,
        ),
        (
            "params string on an unknown method",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"x","params":"s"}"#.to_vec(),
            400,
        ),
        (
            "known request without id",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"t"}}"#.to_vec(),
            400,
        ),
        (
            "notification with id",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"notifications/initialized"}"#.to_vec(),
            400,
        ),
        // Targets.
        (
            "tools/call without params",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#.to_vec(),
            400,
        ),
        ("tools/call without name", "POST", JSON.to_vec(), call(r#"{"arguments":{}}"#).into(), 400),
        ("tool name empty", "POST", JSON.to_vec(), call(r#"{"name":""}"#).into(), 400),
        ("tool name a number", "POST", JSON.to_vec(), call(r#"{"name":5}"#).into(), 400),
        ("tool name null", "POST", JSON.to_vec(), call(r#"{"name":null}"#).into(), 400),
        ("tool name too long", "POST", JSON.to_vec(), too_long_name.into(), 400),
        ("tool name with newline", "POST", JSON.to_vec(), call(r#"{"name":"a\nb"}"#).into(), 400),
        ("tool name with NUL", "POST", JSON.to_vec(), call(r#"{"name":"a\u0000"}"#).into(), 400),
        (
            "tool name with bidi override",
            "POST",
            JSON.to_vec(),
            call(r#"{"name":"a\u202Eb"}"#).into(),
            400,
        ),
        ("arguments array", "POST", JSON.to_vec(), call(r#"{"name":"t","arguments":[1]}"#).into(), 400),
        ("arguments null", "POST", JSON.to_vec(), call(r#"{"name":"t","arguments":null}"#).into(), 400),
        (
            "prompts/get without name",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{}}"#.to_vec(),
            400,
        ),
        ("prompt name too long", "POST", JSON.to_vec(), too_long_prompt.into(), 400),
        (
            "resources/read uri number",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":1}}"#.to_vec(),
            400,
        ),
        (
            "resources/subscribe uri with space",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"file:///a b"}}"#.to_vec(),
            400,
        ),
        (
            "resources/unsubscribe uri empty",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/unsubscribe","params":{"uri":""}}"#.to_vec(),
            400,
        ),
        ("uri too long", "POST", JSON.to_vec(), too_long_uri.into(), 400),
        (
            "completion ref unknown type",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/tool","name":"t"}}}"#.to_vec(),
            400,
        ),
        (
            "completion ref missing",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{}}"#.to_vec(),
            400,
        ),
        (
            "completion ref/prompt without name",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","uri":"x"}}}"#.to_vec(),
            400,
        ),
        (
            "tasks/get without taskId",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{}}"#.to_vec(),
            400,
        ),
        (
            "tasks/cancel taskId empty",
            "POST",
            JSON.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"tasks/cancel","params":{"taskId":""}}"#.to_vec(),
            400,
        ),
        // Routing headers.
        (
            "mcp-method mismatch",
            "POST",
            vec![("content-type", "application/json"), ("mcp-method", "tools/list")],
            call(r#"{"name":"t"}"#).into(),
            400,
        ),
        (
            "mcp-name mismatch",
            "POST",
            vec![("content-type", "application/json"), ("mcp-name", "other")],
            call(r#"{"name":"t"}"#).into(),
            400,
        ),
    ];
    assert!(cases.len() >= 30);
    for (what, method, pairs, body, status) in &cases {
        let got = run(method, pairs, body);
        assert_eq!(got.map_err(|e| e.status()), Err(*status), "{what}");
    }
}

/// Every variant's message (the text clients and logs have always seen), HTTP status, JSON-RPC
/// code and error name, so the mapping in `impl McpError` cannot drift unnoticed.
#[test]
fn errors_map_to_status_code_and_name() {
    use McpError::*;
    let invalid = Some(-32600);
    let cases = [
        (
            MethodNotAllowed,
            "the MCP endpoint accepts only POST, GET and DELETE",
            405,
            None,
            "method_not_allowed",
        ),
        (
            Truncated,
            "the request body is larger than the authorization service inspects",
            413,
            None,
            "payload_too_large",
        ),
        (
            UnsupportedEncoding,
            "compressed request bodies are not accepted",
            415,
            None,
            "unsupported_media_type",
        ),
        (
            UnsupportedMediaType,
            "the request body must be application/json",
            415,
            None,
            "unsupported_media_type",
        ),
        (
            UnexpectedBody,
            "GET and DELETE requests must not have a body",
            400,
            invalid,
            "invalid_request",
        ),
        (
            EmptyBody,
            "a POST must carry a JSON-RPC message",
            400,
            invalid,
            "invalid_request",
        ),
        (
            InvalidUtf8,
            "the request body is not valid UTF-8",
            400,
            invalid,
            "invalid_request",
        ),
        (
            InvalidJson,
            "the request body is not valid JSON",
            400,
            invalid,
            "invalid_request",
        ),
        (
            DuplicateKey,
            "the request body repeats a key in a JSON object",
            400,
            invalid,
            "invalid_request",
        ),
        (
            TooDeep,
            "the request body nests JSON too deeply",
            400,
            invalid,
            "invalid_request",
        ),
        (
            EmptyBatch,
            "a batch must not be empty",
            400,
            invalid,
            "invalid_request",
        ),
        (
            BatchTooLarge,
            "a batch has too many messages",
            400,
            invalid,
            "invalid_request",
        ),
        (
            NotJsonRpc("`jsonrpc` must be \"2.0\""),
            "`jsonrpc` must be \"2.0\"",
            400,
            invalid,
            "invalid_request",
        ),
        (
            InvalidParams("this method requires `params`"),
            "this method requires `params`",
            400,
            invalid,
            "invalid_request",
        ),
        (
            CaseFoldedArguments,
            "tools/call `params.arguments` has keys that differ only in case",
            400,
            invalid,
            "invalid_request",
        ),
        (
            RoutingHeadersOnBatch,
            "mcp-method, mcp-name and mcp-param headers are not allowed with a batch",
            400,
            invalid,
            "invalid_request",
        ),
        (
            InvalidHeaderEncoding,
            "an mcp-name header has invalid base64 encoding",
            400,
            invalid,
            "invalid_request",
        ),
        (
            HeaderMismatch,
            "an mcp-method or mcp-name header disagrees with the body",
            400,
            Some(-32020),
            "invalid_request",
        ),
    ];
    for (error, message, status, code, name) in cases {
        assert_eq!(error.to_string(), message, "{error:?}");
        assert_eq!(error.status(), status, "{error:?}");
        assert_eq!(error.jsonrpc_code(), code, "{error:?}");
        assert_eq!(error.error_name(), name, "{error:?}");
    }
}

/// Envoy 1.40 with `Expect: 100-continue` forwards the first `max_request_bytes` bytes with
/// `x-envoy-auth-partial-body: false`: a body as long as the buffer, or shorter than its
/// `content-length`, is truncated (413), not malformed JSON (400).
#[test]
fn bodies_cut_at_the_buffer_limit_are_truncated() {
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let h = headers(&[
        ("content-type", "application/json"),
        ("x-envoy-auth-partial-body", "false"),
    ]);
    let parse_with = |body: &[u8], limit: usize, headers: &HashMap<String, String>| {
        parse(&HttpParts {
            method: "POST",
            headers,
            body,
            max_body_bytes: limit,
        })
    };
    // Under the limit: read as usual.
    assert!(parse_with(ping.as_bytes(), ping.len() + 1, &h).is_ok());
    // Exactly at the limit (chunked and HTTP/2 bodies have no content-length to tell).
    assert_eq!(
        parse_with(ping.as_bytes(), ping.len(), &h),
        Err(McpError::Truncated)
    );
    let mut cut = ping.as_bytes().to_vec();
    cut.resize(1 << 20, b' ');
    assert_eq!(parse_with(&cut, 1 << 20, &h), Err(McpError::Truncated));
    // Shorter than the declared content-length.
    let mut declared = h.clone();
    declared.insert("content-length".into(), "1153434".into());
    assert_eq!(
        parse_with(ping.as_bytes(), 1 << 20, &declared),
        Err(McpError::Truncated)
    );
    assert_eq!(McpError::Truncated.status(), 413);
    // A content-length that matches is fine.
    declared.insert("content-length".into(), ping.len().to_string());
    assert!(parse_with(ping.as_bytes(), 1 << 20, &declared).is_ok());
}
