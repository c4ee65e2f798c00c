//! The real server on 127.0.0.1:0, over real gRPC and HTTP, against a real in-process identity
//! provider serving discovery and JWKS: discovery, rotation, outage, `kid` floods, readiness.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed assumption should stop the test"
)]

use std::time::Duration;

use mcp_authz::config::Config;
use mcp_authz::server::{self, Running};
use mcp_authz::testutil::{FakeIdp, TestKey, claims, config_yaml, grpc_check};
use serde_json::Value;

const RESOURCE: &str = "https://mcp.example.com/mcp";
const HOST: &str = "mcp.example.com";

async fn start(idp: &FakeIdp, extra: &str) -> Running {
    let config = Config::from_yaml(&config_yaml(&idp.issuer, RESOURCE, extra)).unwrap();
    server::start(&config, None).await.unwrap()
}

/// grpc.health.v1 status of the ext_authz service: 1 SERVING, 2 NOT_SERVING.
async fn health(addr: std::net::SocketAddr) -> i32 {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

/// The value of the first sample of `name` whose labels contain `label`.
fn counter(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` with {label} in:\n{metrics}"))
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn discovers_keys_and_allows_a_valid_token() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let running = start(&idp, "").await;
    assert!(running.wait_ready(Duration::from_secs(10)).await);

    let token = key.token(&claims(&idp.issuer, RESOURCE));
    let a = grpc_check(running.grpc_addr, "POST", HOST, "/mcp", Some(&token)).await;
    assert!(a.allowed, "{a:?}");
    assert_eq!(a.headers["x-mcp-authz-subject"], "alice");
    assert_eq!(a.headers["x-mcp-authz-tenant"], "acme");
    assert!(a.removed.contains(&"authorization".to_string()));

    let a = grpc_check(running.grpc_addr, "POST", HOST, "/mcp", None).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.error(), None);
    assert_eq!(
        a.headers["www-authenticate"],
        "Bearer scope=\"mcp:connect\", resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
    );

    // The admin port: health, readiness, PRM, metrics.
    let admin = format!("http://{}", running.admin_addr);
    assert_eq!(get(&format!("{admin}/healthz")).await.0, 200);
    let (status, body) = get(&format!("{admin}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&format!("{admin}/.well-known/oauth-protected-resource/mcp")).await;
    assert_eq!(status, 200);
    let prm: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(prm["resource"], RESOURCE);
    assert_eq!(prm["authorization_servers"][0], idp.issuer.as_str());
    // One server: the root form is unambiguous.
    assert_eq!(
        get(&format!("{admin}/.well-known/oauth-protected-resource"))
            .await
            .0,
        200
    );
    assert_eq!(
        get(&format!(
            "{admin}/.well-known/oauth-protected-resource/nope"
        ))
        .await
        .0,
        404
    );
    let (_, metrics) = get(&format!("{admin}/metrics")).await;
    assert!(
        metrics.contains("mcp_authz_checks_total{decision=\"allow\",reason=\"allowed\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("mcp_authz_checks_total{decision=\"deny\",reason=\"no_token\"} 1"));
    assert!(metrics.contains(&format!(
        "mcp_authz_jwks_keys{{issuer=\"{}\"}} 1",
        idp.issuer
    )));
    running.stop().await;
}

#[tokio::test]
async fn falls_back_to_openid_connect_discovery() {
    let key = TestKey::ec("e1");
    let idp = FakeIdp::start(&[&key]).await;
    idp.set_oidc_only(true);
    let running = start(&idp, "").await;
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    let token = key.token(&claims(&idp.issuer, RESOURCE));
    assert!(
        grpc_check(running.grpc_addr, "POST", HOST, "/mcp", Some(&token))
            .await
            .allowed
    );
    running.stop().await;
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_one_refetch() {
    let old = TestKey::rsa("old");
    let new = TestKey::ec("new");
    let idp = FakeIdp::start(&[&old]).await;
    let running = start(&idp, "    key_refresh: {unknown_kid_interval: 1s}").await;
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    let hits = idp.jwks_hits();

    idp.set_keys(&[&old, &new]);
    let token = new.token(&claims(&idp.issuer, RESOURCE));
    let a = grpc_check(running.grpc_addr, "POST", HOST, "/mcp", Some(&token)).await;
    assert!(a.allowed, "{a:?}");
    assert_eq!(
        idp.jwks_hits(),
        hits + 1,
        "exactly one refetch for the new kid"
    );

    // Later tokens with the new kid need no further fetch.
    let a = grpc_check(running.grpc_addr, "POST", HOST, "/mcp", Some(&token)).await;
    assert!(a.allowed);
    assert_eq!(idp.jwks_hits(), hits + 1);

    // The old key leaves the set at the next fetch; its tokens stop working.
    idp.set_keys(&[&new]);
    let unknown = TestKey::rsa("unknown").token(&claims(&idp.issuer, RESOURCE));
    tokio::time::sleep(Duration::from_millis(1100)).await; // past unknown_kid_interval
    let a = grpc_check(running.grpc_addr, "POST", HOST, "/mcp", Some(&unknown)).await;
    assert_eq!(
        (a.status, a.error().as_deref()),
        (401, Some("invalid_token"))
    );
    let old_token = old.token(&claims(&idp.issuer, RESOURCE));
    let a = grpc_check(running.grpc_addr, "POST", HOST, "/mcp", Some(&old_token)).await;
    assert_eq!(
        a.status, 401,
        "a key removed from the JWKS must stop verifying"
    );
    running.stop().await;
}

const FAST_REFRESH: &str =
    "    key_refresh: {min_interval: 1s, default_interval: 1s, unknown_kid_interval: 1s}";

#[tokio::test]
async fn an_outage_keeps_the_last_good_key_set() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let running = start(&idp, FAST_REFRESH).await;
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    let token = key.token(&claims(&idp.issuer, RESOURCE));

    idp.set_failing(true);
    let attempts = || idp.jwks_hits() + idp.discovery_hits();
    let before = attempts();
    // Wait for at least two failed background refreshes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while attempts() < before + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "refresher stopped trying"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = grpc_check(running.grpc_addr, "POST", HOST, "/mcp", Some(&token)).await;
    assert!(
        a.allowed,
        "last good keys must keep working during an outage: {a:?}"
    );
    let (status, body) = get(&format!("http://{}/readyz", running.admin_addr)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("status 500"),
        "the failure is visible: {body}"
    );
    let (_, metrics) = get(&format!("http://{}/metrics", running.admin_addr)).await;
    assert!(
        counter(
            &metrics,
            "mcp_authz_jwks_refreshes_total",
            "outcome=\"failure\""
        ) >= 2.0,
        "{metrics}"
    );

    idp.set_failing(false);
    running.stop().await;
}

#[tokio::test]
async fn a_kid_flood_causes_at_most_one_refetch_per_interval() {
    let key = TestKey::ec("k1");
    let idp = FakeIdp::start(&[&key]).await;
    // Default interval (10 s): the whole flood lands inside one window.
    let running = start(&idp, "").await;
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    let before = idp.jwks_hits();

    let mut tasks = Vec::new();
    for i in 0..60 {
        let token = TestKey::ec(&format!("random-{i}")).token(&claims(&idp.issuer, RESOURCE));
        let addr = running.grpc_addr;
        tasks.push(tokio::spawn(async move {
            grpc_check(addr, "POST", HOST, "/mcp", Some(&token)).await
        }));
    }
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(
            (a.status, a.error().as_deref()),
            (401, Some("invalid_token"))
        );
    }
    let refetches = idp.jwks_hits() - before;
    assert!(
        refetches <= 1,
        "{refetches} JWKS fetches for a flood of 60 unknown kids"
    );
    // Once that fetch is done, more unknown kids inside the interval are rate-limited.
    let after_flood = idp.jwks_hits();
    for i in 0..10 {
        let token = TestKey::ec(&format!("later-{i}")).token(&claims(&idp.issuer, RESOURCE));
        let a = grpc_check(running.grpc_addr, "POST", HOST, "/mcp", Some(&token)).await;
        assert_eq!(a.status, 401);
    }
    assert_eq!(idp.jwks_hits(), after_flood);
    let (_, metrics) = get(&format!("http://{}/metrics", running.admin_addr)).await;
    assert!(
        metrics.contains("outcome=\"rate_limited\"} 10"),
        "{metrics}"
    );
    // Garbage (unknown alg, no signature) never reaches the IdP at all.
    let hits = idp.jwks_hits();
    let a = grpc_check(
        running.grpc_addr,
        "POST",
        HOST,
        "/mcp",
        Some("eyJhbGciOiJub25lIn0.e30."),
    )
    .await;
    assert_eq!(a.status, 401);
    assert_eq!(idp.jwks_hits(), hits);
    running.stop().await;
}

#[tokio::test]
async fn without_keys_the_service_is_not_ready_and_fails_closed() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    idp.set_failing(true);
    let running = start(&idp, FAST_REFRESH).await;
    assert!(!running.wait_ready(Duration::from_millis(1500)).await);
    let (status, body) = get(&format!("http://{}/readyz", running.admin_addr)).await;
    assert_eq!(status, 503);
    let readyz: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readyz["ready"], false);
    assert_eq!(readyz["issuers"][0]["issuer"], idp.issuer.as_str());
    assert_eq!(readyz["issuers"][0]["ready"], false);
    assert_eq!(
        health(running.grpc_addr).await,
        2,
        "NOT_SERVING before keys load"
    );

    let token = key.token(&claims(&idp.issuer, RESOURCE));
    let a = grpc_check(running.grpc_addr, "POST", HOST, "/mcp", Some(&token)).await;
    assert!(!a.allowed);
    assert_eq!(
        a.status, 503,
        "cannot decide: fail closed, distinct from a denial"
    );
    assert!(a.body.contains("temporarily_unavailable"));

    // Recovery: the refresher keeps trying and the service becomes ready.
    idp.set_failing(false);
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    assert!(
        grpc_check(running.grpc_addr, "POST", HOST, "/mcp", Some(&token))
            .await
            .allowed
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while health(running.grpc_addr).await != 1 {
        assert!(tokio::time::Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    idp.set_advertised_issuer("https://impostor.example.com");
    let running = start(&idp, FAST_REFRESH).await;
    assert!(!running.wait_ready(Duration::from_millis(1500)).await);
    let (status, body) = get(&format!("http://{}/readyz", running.admin_addr)).await;
    assert_eq!(status, 503);
    assert!(body.contains("RFC 8414"), "{body}");
    running.stop().await;
}

#[tokio::test]
async fn prm_is_answered_through_the_check() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let running = start(&idp, "").await;
    let a = grpc_check(
        running.grpc_addr,
        "GET",
        HOST,
        "/.well-known/oauth-protected-resource/mcp",
        None,
    )
    .await;
    assert!(!a.allowed, "served by Envoy as a local reply");
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/json");
    let prm: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(prm["resource"], RESOURCE);
    running.stop().await;
}

fn copy_policies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    mcp_authz::testutil::copy_shipped_policies(dir.path());
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_edits_reload_while_serving_and_broken_ones_do_not() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let policies = copy_policies();
    let config = Config::from_yaml(&mcp_authz::testutil::config_yaml_with_policies(
        &idp.issuer,
        RESOURCE,
        "",
        policies.path(),
    ))
    .unwrap();
    let running = server::start(&config, None).await.unwrap();
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    let token = key.token(&claims(&idp.issuer, RESOURCE));
    const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let addr = running.grpc_addr;
    let check = move |token: String| async move {
        mcp_authz::testutil::grpc_check_body(
            addr,
            "POST",
            HOST,
            "/mcp",
            Some(&token),
            &["content-type: application/json"],
            PING,
        )
        .await
    };
    assert!(check(token.clone()).await.allowed);

    // Checks keep running while a broken file appears: every one is still answered by the
    // last good set (allowed), none fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let stop = stop.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let a = check(token.clone()).await;
                assert!(a.allowed, "a check failed during a broken reload: {a:?}");
                n += 1;
            }
            n
        })
    };
    std::fs::write(
        policies.path().join("broken.cedar"),
        "@id(\"x\")\npermit (princ",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let n = hammer.await.unwrap();
    assert!(n > 10, "only {n} checks ran");
    let (_, metrics) = get(&format!("http://{}/metrics", running.admin_addr)).await;
    assert!(
        counter(
            &metrics,
            "mcp_authz_policy_reloads_total",
            "outcome=\"failure\""
        ) >= 1.0,
        "{metrics}"
    );

    // A good edit (forbid ping) is in force within 2 s.
    std::fs::remove_file(policies.path().join("broken.cedar")).unwrap();
    std::fs::write(
        policies.path().join("no-ping.cedar"),
        "@id(\"no-ping\")\nforbid (principal, action == Mcp::Action::\"ping\", resource);\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    loop {
        let a = check(token.clone()).await;
        if !a.allowed {
            assert_eq!(a.status, 403);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "edit never took effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, body) = get(&format!("http://{}/readyz", running.admin_addr)).await;
    let readyz: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readyz["policies"]["policies"], 11, "{body}"); // 10 shipped + no-ping
    running.stop().await;
}

#[tokio::test]
async fn bad_mcp_bodies_get_precise_statuses() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let running = start(&idp, "").await;
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    let token = key.token(&claims(&idp.issuer, RESOURCE));
    let json = "content-type: application/json";
    let cases: &[(&[&str], &str, i32)] = &[
        (&[json], "{not json", 400),
        (
            &[json],
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"ping"}"#,
            400,
        ),
        (&[json], r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, 400),
        (
            &[json, "x-envoy-auth-partial-body: true"],
            r#"{"jsonrpc":"2.0","id":1,"meth"#,
            413,
        ),
        (&[json, "content-encoding: gzip"], "\u{1f}\u{8b}", 415),
        (
            &["content-type: text/plain"],
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            415,
        ),
        (
            &[json, "mcp-method: tools/list"],
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            400,
        ),
        (
            &[json],
            r#"{"jsonrpc":"2.0","id":1,"method":"no/such/method"}"#,
            403,
        ),
        (
            &[json],
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/shared/a"}}}]"#,
            403,
        ),
    ];
    for (headers, body, status) in cases {
        let a = mcp_authz::testutil::grpc_check_body(
            running.grpc_addr,
            "POST",
            HOST,
            "/mcp",
            Some(&token),
            headers,
            body,
        )
        .await;
        assert_eq!(a.status, *status, "{body}: {a:?}");
        assert!(!a.allowed);
    }
    // The mismatch carries MCP's JSON-RPC error code.
    let a = mcp_authz::testutil::grpc_check_body(
        running.grpc_addr,
        "POST",
        HOST,
        "/mcp",
        Some(&token),
        &[json, "mcp-method: tools/list"],
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    )
    .await;
    assert!(a.body.contains("-32020"), "{}", a.body);
    // A body beyond gRPC's default 4 MiB message size, sent without a proxy, still gets a
    // decision: 413 (it is over limits.max_body_bytes), not a gRPC error.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(5 << 20)
    );
    let a = mcp_authz::testutil::grpc_check_body(
        running.grpc_addr,
        "POST",
        HOST,
        "/mcp",
        Some(&token),
        &[json],
        &big,
    )
    .await;
    assert_eq!(a.status, 413, "{}", a.body);
    // A batch where every element is allowed is allowed.
    let a = mcp_authz::testutil::grpc_check_body(
        running.grpc_addr, "POST", HOST, "/mcp", Some(&token),
        &[json], r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#,
    )
    .await;
    assert!(a.allowed, "{a:?}");
    // Without a token, the body is never read: 401, not 400.
    let a = mcp_authz::testutil::grpc_check_body(
        running.grpc_addr,
        "POST",
        HOST,
        "/mcp",
        None,
        &[json],
        "{not json",
    )
    .await;
    assert_eq!(a.status, 401);
    // Tool calls are counted by tool only for tools entities.json declares; any other name
    // is `other`, so random tool names cannot create series.
    let a = mcp_authz::testutil::grpc_check_body(
        running.grpc_addr,
        "POST",
        HOST,
        "/mcp",
        Some(&token),
        &[json],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"random_tool_x1"}}"#,
    )
    .await;
    assert_eq!(a.status, 403);
    let (_, metrics) = get(&format!("http://{}/metrics", running.admin_addr)).await;
    assert_eq!(
        counter(
            &metrics,
            "mcp_authz_tool_calls_total",
            "tool=\"read_file\"} "
        ),
        0.0,
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "mcp_authz_tool_calls_total{decision=\"deny\",server=\"demo\",tool=\"read_file\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "mcp_authz_tool_calls_total{decision=\"deny\",server=\"demo\",tool=\"other\"} 1"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("random_tool_x1"));
    running.stop().await;
}

/// `upstream_identity`: an allow carries a token the published JWKS verifies, found through
/// the discovery document on the admin port (under the issuer's path), with a JWKS cache
/// lifetime shorter than the key overlap; counted in the metrics.
#[tokio::test]
async fn the_upstream_identity_verifies_against_the_admin_ports_jwks() {
    const ISSUER: &str = "http://mcp-authz.test:9090/identity";
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let yaml = config_yaml(&idp.issuer, RESOURCE, "").replace(
        "    match: {hosts: [\"*\"]}\n",
        "    match: {hosts: [\"*\"]}\n    upstream_identity: {audience: http://upstream.test}\n",
    ) + &format!("upstream_identity:\n  issuer: {ISSUER}\n  keys: {{generate: {{}}}}\n");
    let config = Config::from_yaml(&yaml).unwrap();
    let running = server::start(&config, None).await.unwrap();
    assert!(running.wait_ready(Duration::from_secs(10)).await);

    let token = key.token(&claims(&idp.issuer, RESOURCE));
    let a = grpc_check(running.grpc_addr, "POST", HOST, "/mcp", Some(&token)).await;
    assert!(a.allowed, "{a:?}");
    let signed = &a.headers["x-mcp-authz-identity"];
    assert_ne!(signed, &token, "never the client's token");

    let admin = format!("http://{}", running.admin_addr);
    let (status, body) = get(&format!(
        "{admin}/identity/.well-known/openid-configuration"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let discovery: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(discovery["issuer"], ISSUER);
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap();
    assert_eq!(jwks_uri, format!("{ISSUER}/.well-known/jwks.json"));
    let r = reqwest::get(format!("{admin}/identity/.well-known/jwks.json"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "max-age=60");
    let jwks = r.text().await.unwrap();
    let verified = mcp_authz::testutil::verify_upstream_identity(
        signed,
        &jwks,
        ISSUER,
        "http://upstream.test",
    )
    .unwrap();
    assert_eq!(verified["sub"], "alice");
    assert_eq!(verified["tenant"], "acme");
    assert_eq!(
        verified["jti"],
        a.headers["x-mcp-authz-decision-id"].as_str()
    );
    assert_eq!(verified["mcp"][0]["method"], "tools/list");
    // Not at the root: the issuer has a path.
    assert_eq!(get(&format!("{admin}/.well-known/jwks.json")).await.0, 404);

    let (_, metrics) = get(&format!("{admin}/metrics")).await;
    assert!(
        metrics.contains("mcp_authz_upstream_identity_tokens_total{outcome=\"minted\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcp_authz_upstream_identity_keys 2"),
        "{metrics}"
    );
    running.stop().await;
}
