//! The decision cache gives byte-for-byte the answers Cedar gives: one randomized stream of
//! requests (repeating callers, tools, arguments, sessions, tenants, batches, step-ups and
//! denials), decided by an engine with the cache and by one without, across policy reloads.

use std::collections::HashMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::config::Config;
use crate::engine::{CheckInput, Decision, Engine};
use crate::keys::{IssuerKeys, KeySet};
use crate::metrics::Metrics;
use crate::policy::PolicyStore;
use crate::testutil::{TestKey, claims};

const ISS: &str = "https://idp.test";
const DEMO: &str = "https://mcp.example.com/demo/mcp";
const TEAMS: &str = "https://mcp.example.com/teams/mcp";

/// Policies beyond the shipped ones that read what the shipped ones do not: the session id, a
/// tool's argument tags and the protocol version, so every part of the key is exercised; most
/// are scoped to some targets (a tool, a tool set, a server), so the key's per-target reads are
/// exercised as well (a tool those policies cannot apply to leaves those parts out of its key).
const EXTRA: &str = r#"
@id("blocked-session")
forbid (principal, action in Mcp::Action::"session", resource)
when { context.session_id == "s-blocked" };

@id("alerts-mode")
forbid (principal, action == Mcp::Action::"tools/call", resource == Mcp::Tool::"demo/get_alerts")
when { resource.hasTag("mode") && resource.getTag("mode") == "loud" };

@id("unknown-mode")
forbid (principal, action == Mcp::Action::"tools/call", resource == Mcp::Tool::"teams/unknown_tool")
when { resource.hasTag("mode") && resource.getTag("mode") == "quiet" };

@id("dangerous-session")
forbid (principal, action in Mcp::Action::"tools/call", resource in Mcp::ToolSet::"dangerous")
when { context.session_id == "s-other" };

@id("teams-old-protocol")
forbid (principal, action in Mcp::Action::"tools/call", resource in Mcp::Server::"teams")
when { context.protocol_version == "2024-11-05" };

@id("old-protocol-prompts")
forbid (principal, action == Mcp::Action::"prompts/get", resource)
when { context.protocol_version == "2024-11-05" };
"#;

/// What the reload in the middle of the stream changes them to.
const EXTRA_AFTER: &str = r#"
@id("blocked-session")
forbid (principal, action in Mcp::Action::"session", resource)
when { context.session_id == "s-other" };

@id("alerts-mode")
forbid (principal, action == Mcp::Action::"tools/call", resource == Mcp::Tool::"demo/get_alerts")
when { resource.hasTag("mode") && resource.getTag("mode") == "quiet" };

@id("unknown-mode")
forbid (principal, action == Mcp::Action::"tools/call", resource == Mcp::Tool::"teams/unknown_tool")
when { resource.hasTag("mode") && resource.getTag("mode") == "loud" };

@id("dangerous-session")
forbid (principal, action in Mcp::Action::"tools/call", resource in Mcp::ToolSet::"dangerous")
when { context.session_id == "s1" };

@id("teams-old-protocol")
forbid (principal, action in Mcp::Action::"tools/call", resource in Mcp::Server::"teams")
when { context.protocol_version == "2025-06-18" };
"#;

fn config(policies: &std::path::Path, decisions: u64) -> Config {
    Config::from_yaml(&format!(
        r#"
policies: {{dir: {policies}}}
issuers:
  - issuer: {ISS}
    jwks_uri: https://idp.test/jwks
    claims: {{tenant: tenant}}
servers:
  - id: demo
    tenant: acme
    resource: {DEMO}
    authorization_servers: [{ISS}]
    scopes_supported: [mcp:connect, mcp:tools:weather, mcp:tools:files, mcp:tools:admin]
  - id: teams
    tenant_from: {{header: x-tenant}}
    resource: {TEAMS}
    authorization_servers: [{ISS}]
    scopes_supported: [mcp:connect, mcp:tools:weather, mcp:tools:files]
    step_up: {{scope: granted_and_operation}}
cache: {{decisions: {decisions}}}
"#,
        policies = policies.display()
    ))
    .unwrap()
}

fn engine(key: &TestKey, store: &Arc<PolicyStore>, dir: &std::path::Path, n: u64) -> Engine {
    let config = config(dir, n);
    let metrics = Metrics::unregistered();
    let jwks = json!({"keys": [key.public_jwk()]}).to_string();
    let set = KeySet::from_jwks(jwks.as_bytes(), &config.issuers[0].algorithms)
        .unwrap()
        .0;
    let issuers = vec![IssuerKeys::with_static(
        config.issuers[0].clone(),
        set,
        metrics.clone(),
    )];
    Engine::new(&config, issuers, store.clone(), metrics).unwrap()
}

/// One caller: a token for both servers.
fn tokens(key: &TestKey, rng: &mut StdRng) -> Vec<String> {
    let scopes = [
        "mcp:connect",
        "mcp:tools:weather",
        "mcp:tools:files",
        "mcp:tools:admin",
    ];
    (0..24)
        .map(|i| {
            let mut c = claims(ISS, DEMO);
            c["aud"] = json!([DEMO, TEAMS]);
            c["sub"] = json!(format!("user-{i}"));
            let granted: Vec<&str> = scopes
                .iter()
                .copied()
                .filter(|_| rng.random_bool(0.6))
                .collect();
            c["scope"] = json!(granted.join(" "));
            match rng.random_range(0..4) {
                0 => c["tenant"] = json!("globex"),
                1 => {
                    c.as_object_mut().unwrap().remove("tenant");
                }
                _ => c["tenant"] = json!("acme"),
            }
            let groups: Vec<&str> = ["break-glass", "read-only"]
                .into_iter()
                .filter(|_| rng.random_bool(0.25))
                .collect();
            c["groups"] = json!(groups);
            key.token(&c)
        })
        .collect()
}

fn message(rng: &mut StdRng, id: u32) -> Value {
    let pick =
        |rng: &mut StdRng, items: &[&str]| items[rng.random_range(0..items.len())].to_owned();
    match rng.random_range(0..10) {
        0 => {
            json!({"jsonrpc": "2.0", "id": id, "method": pick(rng, &["initialize", "ping", "tools/list", "resources/list"])})
        }
        1 => {
            json!({"jsonrpc": "2.0", "id": id, "method": "prompts/get", "params": {"name": pick(rng, &["summary", "plan"])}})
        }
        2 => {
            json!({"jsonrpc": "2.0", "id": id, "method": "resources/read", "params": {"uri": pick(rng, &["file:///a", "file:///b"])}})
        }
        3 => {
            json!({"jsonrpc": "2.0", "id": id, "method": pick(rng, &["no/such/method", "tasks/get"]), "params": {"taskId": pick(rng, &["t1", "t2"])}})
        }
        _ => {
            let tool = pick(
                rng,
                &[
                    "get_forecast",
                    "get_alerts",
                    "read_file",
                    "write_file",
                    "delete_everything",
                    "unknown_tool",
                ],
            );
            let arguments = match tool.as_str() {
                "get_forecast" => {
                    let mut a = json!({"city": pick(rng, &["Oslo", "Lima"])});
                    if rng.random_bool(0.7) {
                        a["days"] = json!(rng.random_range(-2..20));
                    }
                    if rng.random_bool(0.1) {
                        a["days"] = json!("7");
                    }
                    a
                }
                "read_file" | "write_file" => {
                    let mut a = json!({"path": pick(rng, &["/srv/shared/a.txt", "/etc/passwd", "/srv/shared/b/c", "/srv/other"])});
                    if tool == "write_file" {
                        a["content"] = json!("x");
                    }
                    a
                }
                _ => json!({"mode": pick(rng, &["loud", "quiet", "normal"])}),
            };
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
        }
    }
}

/// A decision with its random decision id taken out: everything else must match exactly.
fn comparable(d: &Decision) -> String {
    match d {
        Decision::Allow(a) => {
            let headers: Vec<_> = a
                .set_headers
                .iter()
                .filter(|(_, v)| *v != a.decision_id)
                .collect();
            format!(
                "allow server={} policies={:?} set={headers:?} remove={:?} subject={}",
                a.server_id,
                a.policies,
                a.remove_headers,
                a.identity().subject
            )
        }
        Decision::Respond(r) => {
            let headers: Vec<_> = r
                .headers
                .iter()
                .filter(|(_, v)| *v != r.decision_id)
                .collect();
            format!(
                "respond {} reason={:?} policies={:?} headers={headers:?} body={}",
                r.status, r.reason, r.policies, r.body
            )
        }
    }
}

#[tokio::test]
async fn cached_decisions_are_the_decisions_cedar_gives() {
    let dir = tempfile::tempdir().unwrap();
    crate::testutil::copy_shipped_policies(dir.path());
    let extra = dir.path().join("extra.cedar");
    std::fs::write(&extra, EXTRA).unwrap();
    let store = PolicyStore::open(dir.path(), Metrics::unregistered()).unwrap();
    let key = TestKey::rsa("k1");
    let cached = engine(&key, &store, dir.path(), 10_000);
    let uncached = engine(&key, &store, dir.path(), 0);

    let mut rng = StdRng::seed_from_u64(0x6d63_702d_6175_7468);
    let tokens = tokens(&key, &mut rng);
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut compared = 0;
    for i in 0..3000u32 {
        if i == 1500 {
            std::fs::write(&extra, EXTRA_AFTER).unwrap();
            assert!(matches!(
                store.reload_if_changed(),
                crate::policy::Reload::Loaded { .. }
            ));
        }
        let token = &tokens[rng.random_range(0..tokens.len())];
        let mut headers = HashMap::from([
            ("authorization".to_owned(), format!("Bearer {token}")),
            ("content-type".to_owned(), "application/json".to_owned()),
            (
                "mcp-session-id".to_owned(),
                ["s1", "s2", "s-blocked", "s-other"][rng.random_range(0..4)].to_owned(),
            ),
            (
                "mcp-protocol-version".to_owned(),
                ["2025-06-18", "2024-11-05", "2025-11-25"][rng.random_range(0..3)].to_owned(),
            ),
        ]);
        let path = if rng.random_bool(0.5) {
            headers.insert(
                "x-tenant".to_owned(),
                ["acme", "globex"][rng.random_range(0..2)].to_owned(),
            );
            "/teams/mcp"
        } else {
            "/demo/mcp"
        };
        let (method, body) = match rng.random_range(0..20) {
            0 => ("GET", Vec::new()),
            1 => ("DELETE", Vec::new()),
            2 => (
                "POST",
                serde_json::to_vec(&json!([message(&mut rng, 1), message(&mut rng, 2)])).unwrap(),
            ),
            _ => ("POST", serde_json::to_vec(&message(&mut rng, 1)).unwrap()),
        };
        if method == "GET" {
            headers.insert("accept".to_owned(), "text/event-stream".to_owned());
        }
        let input = CheckInput {
            method,
            path,
            host: "mcp.example.com",
            headers: &headers,
            body: &body,
        };
        let with = comparable(&cached.check(&input).await);
        let without = comparable(&uncached.check(&input).await);
        assert_eq!(
            with,
            without,
            "request {i}: {method} {path} {headers:?} {}",
            String::from_utf8_lossy(&body)
        );
        *statuses
            .entry(
                with.split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(200),
            )
            .or_default() += 1;
        compared += 1;
    }
    assert_eq!(compared, 3000);
    // The stream must have exercised allows, step-ups and plain denials, and the cache must
    // have answered a good share of it (or the comparison proved little).
    for status in [200, 403] {
        assert!(
            statuses.get(&status).copied().unwrap_or(0) > 100,
            "{statuses:?}"
        );
    }
    assert!(uncached.decisions().is_empty());
    cached.decisions().settle();
    assert!(!cached.decisions().is_empty());
    assert!(
        cached.decisions().len() > 50,
        "{}",
        cached.decisions().len()
    );
    let (hits, misses) = cached.decisions().counts();
    assert!(hits > 400 && misses > 100, "hits {hits}, misses {misses}");
}

/// One entry per distinct request of a returning caller, counted exactly once settled.
#[tokio::test]
async fn a_returning_caller_leaves_one_entry_per_distinct_request() {
    let dir = tempfile::tempdir().unwrap();
    crate::testutil::copy_shipped_policies(dir.path());
    let store = PolicyStore::open(dir.path(), Metrics::unregistered()).unwrap();
    let key = TestKey::rsa("k1");
    let engine = engine(&key, &store, dir.path(), 100);
    let mut c = claims(ISS, DEMO);
    c["scope"] = json!("mcp:connect mcp:tools:weather");
    let headers = HashMap::from([
        (
            "authorization".to_owned(),
            format!("Bearer {}", key.token(&c)),
        ),
        ("content-type".to_owned(), "application/json".to_owned()),
    ]);
    let check = |name: &str| {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": name, "arguments": {}}})
        .to_string();
        let input_headers = headers.clone();
        let engine = &engine;
        async move {
            engine
                .check(&CheckInput {
                    method: "POST",
                    path: "/demo/mcp",
                    host: "mcp.example.com",
                    headers: &input_headers,
                    body: body.as_bytes(),
                })
                .await
        }
    };
    // The token's first use is not cached (a one-off token must leave nothing behind).
    assert!(matches!(check("get_alerts").await, Decision::Allow(_)));
    engine.decisions().settle();
    assert_eq!(engine.decisions().len(), 0);
    for name in [
        "get_alerts",
        "get_alerts",
        "delete_everything",
        "get_alerts",
    ] {
        check(name).await;
    }
    engine.decisions().settle();
    assert_eq!(engine.decisions().len(), 2);
    assert_eq!(engine.decisions().counts(), (2, 2));
}
