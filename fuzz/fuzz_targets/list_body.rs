//! The list filter's body framing (`lists::body`): JSON held whole, SSE event by event, split
//! into chunks anywhere. Input: a framing byte, two split points, then the body. Invariants: no
//! panic; within the time budget; and never an unfiltered list: every JSON value the client
//! receives went through the filter (here: drop the tools named `hidden`), so no `result.tools`
//! in the output names `hidden`.
#![no_main]

#[path = "common/budget.rs"]
mod budget;

use libfuzzer_sys::fuzz_target;
use mcp_authz::lists::body::{BodyFilter, Framing};
use serde_json::Value;

fn drop_hidden(v: &mut Value) -> Result<(), mcp_authz::lists::ListError> {
    let messages: Vec<&mut Value> = match v {
        Value::Array(items) => items.iter_mut().collect(),
        other => vec![other],
    };
    for m in messages {
        if let Some(tools) = m
            .get_mut("result")
            .and_then(|r| r.get_mut("tools"))
            .and_then(Value::as_array_mut)
        {
            tools.retain(|t| t.get("name").and_then(Value::as_str) != Some("hidden"));
        }
    }
    Ok(())
}

fn leaks(v: &Value) -> bool {
    let one = |m: &Value| {
        m.get("result")
            .and_then(|r| r.get("tools"))
            .and_then(Value::as_array)
            .is_some_and(|t| {
                t.iter()
                    .any(|t| t.get("name").and_then(Value::as_str) == Some("hidden"))
            })
    };
    match v {
        Value::Array(items) => items.iter().any(one),
        other => one(other),
    }
}

fuzz_target!(|data: &[u8]| {
    let (Some(&f), Some(&a), Some(&b)) = (data.first(), data.get(1), data.get(2)) else {
        return;
    };
    let body = data.get(3..).unwrap_or_default();
    let framing = if f % 2 == 0 { Framing::Json } else { Framing::Sse };
    let sse = framing == Framing::Sse;
    let (x, y) = {
        let (x, y) = (usize::from(a), usize::from(b));
        let n = body.len();
        let (x, y) = (x.min(n), y.min(n));
        (x.min(y), x.max(y))
    };
    let part = |r: std::ops::Range<usize>| body.get(r).unwrap_or_default();
    let chunks = [part(0..x), part(x..y), part(y..body.len()), &[][..]];
    let out = budget::within_budget("filtering", || {
        let mut filter = BodyFilter::new(framing.clone(), 4096);
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            match filter.push(c, i + 1 == chunks.len(), &mut drop_hidden) {
                Ok(b) | Err(b) => out.extend(b),
            }
        }
        out
    });
    if sse {
        let text = String::from_utf8_lossy(&out);
        for line in text.split('\n') {
            if let Some(data) = line.strip_prefix("data:")
                && let Ok(v) = serde_json::from_str::<Value>(data.trim_start())
            {
                assert!(!leaks(&v), "an unfiltered list went out: {line}");
            }
        }
    } else if !out.is_empty() {
        let v: Value = serde_json::from_slice(&out).expect("the JSON body out is JSON");
        assert!(!leaks(&v), "an unfiltered list went out");
    }
});
