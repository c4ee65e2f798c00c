//! The MCP body and header parser. Input: a method byte, a byte of header flags, then the body
//! (so seeds are plain bodies with a two-byte prefix). Invariants: no panic; a body that parses
//! is strict JSON that re-serializes and re-parses to the same message; within the time budget.
#![no_main]

#[path = "common/budget.rs"]
mod budget;

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use mcp_authz::mcp::{HttpParts, McpRequest, parse};

fuzz_target!(|data: &[u8]| {
    let (Some(&m), Some(&flags)) = (data.first(), data.get(1)) else {
        return;
    };
    let body = data.get(2..).unwrap_or_default();
    let method = match m % 4 {
        0 | 1 => "POST",
        2 => "GET",
        _ => "DELETE",
    };
    let mut headers = HashMap::new();
    let mut set = |bit: u8, k: &str, v: &str| {
        if flags & (1 << bit) != 0 {
            headers.insert(k.to_owned(), v.to_owned());
        }
    };
    set(0, "content-type", "application/json");
    set(1, "content-encoding", "gzip");
    set(2, "mcp-method", "tools/call");
    set(3, "mcp-name", "get_forecast");
    set(4, "x-envoy-auth-partial-body", "true");
    set(5, "content-length", "999999");
    set(6, "content-type", "text/plain");
    let parts = HttpParts {
        method,
        headers: &headers,
        body,
        max_body_bytes: 1 << 20,
    };
    let Ok(request) = budget::within_budget("parsing", || parse(&parts)) else {
        return;
    };
    if let McpRequest::Messages { .. } = &request {
        let text = std::str::from_utf8(body).expect("a parsed body is UTF-8");
        let value = mcp_authz::strict_json::parse(text, 64).expect("a parsed body is strict JSON");
        let again = serde_json::to_string(&value).expect("serializes");
        let reparsed = parse(&HttpParts {
            body: again.as_bytes(),
            ..parts
        })
        .expect("the re-serialized body parses");
        assert_eq!(
            reparsed, request,
            "the re-serialized body reads differently"
        );
    }
});
