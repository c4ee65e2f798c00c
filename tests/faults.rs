//! Injected faults against real servers on 127.0.0.1: an identity provider that misbehaves
//! (slow, erroring, rate limiting, malformed, huge, unusable keys, naming another issuer), a
//! flood of tokens with random `kid`s, and policy files rewritten under load. Every test is
//! bounded in time; latency and memory figures are printed (run with `--nocapture`), never
//! asserted.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should stop the test"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use jsonwebtoken::Header;
use mcp_authz::config::Config;
use mcp_authz::grpc::{ClientRequest, check_request};
use mcp_authz::server;
use mcp_authz::testutil::{FakeIdp, JwksFault, TestKey, claims, config_yaml, grpc_check_body};
use serde_json::{Value, json};
use tonic::transport::Channel;

const RESOURCE: &str = "https://mcp.example.com/mcp";
const HOST: &str = "mcp.example.com";
const JSON: &str = "content-type: application/json";

// === helpers ===

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of the sample `name{...}` whose label set contains every one of `labels`; 0 when
/// there is none.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// grpc.health.v1 status of the ext_authz service: 1 SERVING, 2 NOT_SERVING.
async fn health(addr: SocketAddr) -> i32 {
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

/// A `tools/call` body.
fn tool_call(name: &str, arguments: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": name, "arguments": arguments}})
    .to_string()
}

const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// Claims as [`claims`] with these scopes, tenant and a unique `jti` (so every token is a
/// verified-token cache miss and really goes through the key set).
fn claims_with(iss: &str, scope: &str, tenant: &str) -> Value {
    static JTI: AtomicUsize = AtomicUsize::new(0);
    let mut c = claims(iss, RESOURCE);
    c["scope"] = scope.into();
    c["tenant"] = tenant.into();
    c["jti"] = format!("jti-{}", JTI.fetch_add(1, Ordering::Relaxed)).into();
    c
}

/// A token signed by `key` but naming `kid` (unknown to the IdP).
fn token_with_kid(key: &TestKey, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(key.alg);
    h.typ = Some("at+jwt".into());
    h.kid = Some(kid.into());
    key.sign(&h, claims)
}

/// A `CheckRequest` as Envoy would send it, for clients that reuse one channel.
fn check_req(token: &str, body: &str) -> CheckRequest {
    check_request(ClientRequest {
        method: "POST".into(),
        path: "/mcp".into(),
        host: HOST.into(),
        bearer: Some(token.into()),
        headers: vec![JSON.into()],
        body: body.as_bytes().to_vec(),
    })
    .unwrap()
}

/// (allowed, HTTP status) of one check over `client`; a gRPC error is a test failure.
async fn decide(client: &mut AuthorizationClient<Channel>, req: CheckRequest) -> (bool, i32) {
    let r = client
        .check(req)
        .await
        .unwrap_or_else(|e| panic!("gRPC error instead of a decision: {e}"))
        .into_inner();
    let allowed = r.status.as_ref().map_or(0, |s| s.code) == 0;
    match r.http_response {
        Some(HttpResponse::OkResponse(_)) => (allowed, 200),
        Some(HttpResponse::DeniedResponse(d)) => (allowed, d.status.map_or(0, |s| s.code)),
        other => panic!("CheckResponse without a decision: {other:?}"),
    }
}

async fn client(addr: SocketAddr) -> AuthorizationClient<Channel> {
    AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

// === JWKS endpoint faults ===

/// Refresh settings for the JWKS fault tests: scheduled refreshes at most every 10 s (none
/// falls inside a 5 s window after startup, and the failure backoff can double 1, 2, 4 s
/// before reaching `min_interval`), unknown-`kid` refetches every 1 s, a 500 ms fetch timeout.
const FAULT_REFRESH: &str = "    key_refresh: {min_interval: 10s, default_interval: 10s, \
    unknown_kid_interval: 1s, unknown_kid_wait: 100ms, fetch_timeout: 500ms}";

/// How long the fault is observed.
const WINDOW: Duration = Duration::from_secs(5);

/// What one fault run measured.
#[derive(Debug)]
struct FaultRun {
    /// Failed fetch attempts during the window (`mcp_authz_jwks_refreshes_total{outcome="failure"}`).
    attempts: f64,
    /// Requests the IdP received during the window (discovery and JWKS).
    hits: usize,
    /// Rounds of probe checks made during the window, all with their pre-fault answers.
    rounds: usize,
    /// IdP requests seen shortly after the first failure and shortly before `Retry-After`
    /// ends: (at 0.4 s, at 2.5 s) after the fault started.
    early_hits: (usize, usize),
    /// Bytes of huge bodies the IdP produced, over the whole run.
    huge_bytes_sent: usize,
}

/// Starts an IdP and the server, records the answers of three probes (a token of the known
/// key allowed, one denied by policy, one with an unknown `kid`), turns on the fault, and for
/// [`WINDOW`] keeps checking with fresh tokens (cache misses), plus a fresh unknown `kid` each
/// round that would trigger a refetch every `unknown_kid_interval` if nothing held it back.
/// Every answer must equal its pre-fault answer. Then readiness and metrics must name
/// `kind`, and gRPC health must still be SERVING (the known keys still verify).
async fn jwks_fault(kind: &str, fault: impl FnOnce(&FakeIdp, &TestKey)) -> FaultRun {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let config = Config::from_yaml(&config_yaml(&idp.issuer, RESOURCE, FAULT_REFRESH)).unwrap();
    let running = server::start(&config, None).await.unwrap();
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    let mut c = client(running.grpc_addr).await;
    let iss = idp.issuer.clone();
    let probes = |round: usize| {
        let allow = key.token(&claims_with(&iss, "mcp:connect", "acme"));
        // The shipped guard: dangerous tools need the break-glass group.
        let deny = key.token(&claims_with(&iss, "mcp:connect mcp:tools:admin", "acme"));
        let unknown = token_with_kid(
            &key,
            &format!("unknown-{round}"),
            &claims_with(&iss, "mcp:connect", "acme"),
        );
        [
            check_req(&allow, TOOLS_LIST),
            check_req(&deny, &tool_call("delete_everything", json!({}))),
            check_req(&unknown, TOOLS_LIST),
        ]
    };
    let mut baseline = Vec::new();
    for req in probes(0) {
        baseline.push(decide(&mut c, req).await);
    }
    assert_eq!(
        baseline,
        [(true, 200), (false, 403), (false, 401)],
        "pre-fault answers"
    );
    let (_, m) = get(&format!("http://{}/metrics", running.admin_addr)).await;
    let failures_before = sample(&m, "mcp_authz_jwks_refreshes_total", &["failure"]);

    // The baseline's unknown `kid` started a refetch: let `unknown_kid_interval` pass, so the
    // first round's unknown `kid` meets the fault at once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hits_before = idp.hits();
    fault(&idp, &key);
    let started = Instant::now();
    let mut rounds = 0;
    let mut early_hits = (None, None);
    while started.elapsed() < WINDOW {
        rounds += 1;
        for (i, req) in probes(rounds).into_iter().enumerate() {
            let answer = decide(&mut c, req).await;
            assert_eq!(
                Some(&answer),
                baseline.get(i),
                "probe {i} changed its answer under fault `{kind}` (round {rounds})"
            );
        }
        let t = started.elapsed();
        if early_hits.0.is_none() && t >= Duration::from_millis(400) {
            early_hits.0 = Some(idp.hits() - hits_before);
        }
        if early_hits.1.is_none() && t >= Duration::from_millis(2500) {
            early_hits.1 = Some(idp.hits() - hits_before);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hits = idp.hits() - hits_before;

    let (_, m) = get(&format!("http://{}/metrics", running.admin_addr)).await;
    let attempts = sample(&m, "mcp_authz_jwks_refreshes_total", &["failure"]) - failures_before;
    let label = format!("error=\"{kind}\"");
    assert!(
        sample(&m, "mcp_authz_jwks_fetch_errors_total", &[&label]) >= 1.0,
        "no `{kind}` error counted:\n{m}"
    );
    assert!(
        sample(&m, "mcp_authz_jwks_consecutive_failures", &["issuer="]) >= 1.0,
        "{m}"
    );
    assert!(
        sample(
            &m,
            "mcp_authz_jwks_last_success_timestamp_seconds",
            &["issuer="]
        ) > 0.0,
        "{m}"
    );
    let (status, body) = get(&format!("http://{}/readyz", running.admin_addr)).await;
    assert_eq!(status, 200, "known keys still verify: ready ({body})");
    let readyz: Value = serde_json::from_str(&body).unwrap();
    let issuer = &readyz["issuers"][0];
    assert_eq!(issuer["last_error_kind"], kind, "{body}");
    assert!(
        issuer["consecutive_failures"].as_u64().unwrap() >= 1,
        "{body}"
    );
    assert!(issuer["last_success"].as_u64().is_some(), "{body}");
    assert!(issuer["keys"].as_u64().unwrap() >= 1, "{body}");
    // The admin gRPC API (`mcp-authz status`) tells the same.
    let mut admin = mcp_authz::admin::grpc::pb::admin_client::AdminClient::connect(format!(
        "http://{}",
        running.admin_grpc_addr
    ))
    .await
    .unwrap();
    let status = admin
        .status(mcp_authz::admin::grpc::pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let listed = &status.issuers[0];
    assert_eq!(listed.last_error_kind, kind, "{listed:?}");
    assert!(listed.consecutive_failures >= 1, "{listed:?}");
    assert!(listed.last_success_unix > 0, "{listed:?}");
    assert!(!listed.last_error.is_empty(), "{listed:?}");
    assert_eq!(health(running.grpc_addr).await, 1, "still SERVING");
    eprintln!(
        "fault {kind}: {attempts} failed attempts, {hits} IdP requests, {rounds} probe rounds in {WINDOW:?}; last_error: {}",
        issuer["last_error"]
    );
    running.stop().await;
    FaultRun {
        attempts,
        hits,
        rounds,
        early_hits: (early_hits.0.unwrap(), early_hits.1.unwrap()),
        huge_bytes_sent: idp.huge_bytes_sent(),
    }
}

/// Exponential backoff with equal jitter from 1 s: the attempts start at 0 and then at least
/// 0.5, 1.5 and 3.5 s later; the fifth could start at 7.5 s at the earliest. Without backoff
/// the unknown-`kid` probes alone would start one every second (5 or 6 in the window).
const MAX_ATTEMPTS: f64 = 4.0;

fn assert_backs_off(run: &FaultRun, requests_per_attempt: usize) {
    assert!(run.rounds >= 10, "only {} probe rounds", run.rounds);
    assert!(
        run.attempts >= 2.0,
        "kept retrying: {} attempts",
        run.attempts
    );
    assert!(
        run.attempts <= MAX_ATTEMPTS,
        "no backoff: {} failed attempts in {WINDOW:?}",
        run.attempts
    );
    let max_hits = MAX_ATTEMPTS as usize * requests_per_attempt;
    assert!(
        run.hits <= max_hits,
        "{} IdP requests in {WINDOW:?} (at most {max_hits})",
        run.hits
    );
}

#[tokio::test]
async fn jwks_slower_than_the_fetch_timeout() {
    let run = jwks_fault("timeout", |idp, _| {
        idp.set_jwks_fault(JwksFault::Delay(Duration::from_secs(10)))
    })
    .await;
    // Each attempt: discovery again (the JWKS failed, the IdP may have moved it), then JWKS.
    assert_backs_off(&run, 2);
}

#[tokio::test]
async fn jwks_body_dripping_slower_than_the_fetch_timeout() {
    let run = jwks_fault("timeout", |idp, _| {
        idp.set_jwks_fault(JwksFault::Drip(Duration::from_secs(10)))
    })
    .await;
    assert_backs_off(&run, 2);
}

#[tokio::test]
async fn jwks_answering_500() {
    let run = jwks_fault("server_error", |idp, _| {
        idp.set_jwks_fault(JwksFault::Status(500, None))
    })
    .await;
    assert_backs_off(&run, 2);
}

#[tokio::test]
async fn jwks_answering_429_with_retry_after() {
    let run = jwks_fault("rate_limited", |idp, _| {
        idp.set_jwks_fault(JwksFault::Status(429, Some("3".into())))
    })
    .await;
    // The first attempt is the only request until `Retry-After` (3 s) has passed, although
    // unknown `kid`s arrive every few milliseconds and `unknown_kid_interval` is 1 s.
    let (at_400ms, at_2500ms) = run.early_hits;
    assert!(at_400ms >= 1, "the fault was never fetched");
    assert_eq!(
        at_400ms, at_2500ms,
        "requests during Retry-After: {at_400ms} at 0.4 s, {at_2500ms} at 2.5 s"
    );
    // ...and then it tries again (3 s later) but not sooner than Retry-After again.
    assert_eq!(run.attempts as u64, 2, "{run:?}");
}

#[tokio::test]
async fn jwks_with_malformed_json() {
    let run = jwks_fault("malformed_jwks", |idp, _| {
        idp.set_jwks_fault(JwksFault::Body(r#"{"keys": [{"kty": "RSA", "#.into()))
    })
    .await;
    assert_backs_off(&run, 1);
}

#[tokio::test]
async fn jwks_of_50_megabytes() {
    const SIZE: usize = 50 << 20;
    let run = jwks_fault("too_large", |idp, _| {
        idp.set_jwks_fault(JwksFault::Huge(SIZE))
    })
    .await;
    assert_backs_off(&run, 2);
    // Streamed without `content-length`: each attempt must stop reading at the limit
    // (512 KiB) instead of taking all 50 MB. What the IdP managed to produce per attempt is
    // the limit plus what loopback socket buffers hold.
    let sent = run.huge_bytes_sent;
    let per_attempt = sent / (run.attempts as usize).max(1);
    eprintln!(
        "50 MB JWKS: {sent} bytes produced by the IdP in {} failed attempts ({per_attempt} per attempt)",
        run.attempts
    );
    assert!(
        per_attempt < 16 << 20,
        "{per_attempt} bytes produced per request: the body was not cut off at the limit"
    );
}

#[tokio::test]
async fn jwks_with_keys_of_the_wrong_use_or_algorithm() {
    let run = jwks_fault("no_usable_keys", |idp, key| {
        // The known key republished for encryption, a key for an algorithm outside the
        // issuer's allowlist, and a symmetric key: none may verify a token.
        let mut enc = key.public_jwk();
        enc["use"] = "enc".into();
        let mut rs512 = TestKey::rsa_with("k2", jsonwebtoken::Algorithm::RS512).public_jwk();
        rs512["use"] = "sig".into();
        let oct = json!({"kty": "oct", "kid": "k3", "k": "c2VjcmV0", "alg": "HS256"});
        idp.set_raw_keys(vec![enc, rs512, oct]);
    })
    .await;
    assert_backs_off(&run, 1);
}

#[tokio::test]
async fn discovery_naming_another_issuer_once_keys_are_known() {
    let run = jwks_fault("issuer_mismatch", |idp, _| {
        // The cached `jwks_uri` fails, so the next attempt rediscovers, and the document now
        // names someone else (RFC 8414 s3.3).
        idp.set_jwks_fault(JwksFault::Status(500, None));
        idp.set_advertised_issuer("https://impostor.example.com");
    })
    .await;
    assert_backs_off(&run, 1);
}

#[tokio::test]
async fn discovery_naming_another_issuer_at_startup_is_not_ready() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    idp.set_advertised_issuer("https://impostor.example.com");
    let config = Config::from_yaml(&config_yaml(&idp.issuer, RESOURCE, FAULT_REFRESH)).unwrap();
    let running = server::start(&config, None).await.unwrap();
    assert!(!running.wait_ready(Duration::from_secs(2)).await);
    let (status, body) = get(&format!("http://{}/readyz", running.admin_addr)).await;
    assert_eq!(status, 503, "{body}");
    let readyz: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        readyz["issuers"][0]["last_error_kind"], "issuer_mismatch",
        "{body}"
    );
    assert_eq!(health(running.grpc_addr).await, 2, "NOT_SERVING");
    let token = key.token(&claims(&idp.issuer, RESOURCE));
    let a = grpc_check_body(
        running.grpc_addr,
        "POST",
        HOST,
        "/mcp",
        Some(&token),
        &[JSON],
        TOOLS_LIST,
    )
    .await;
    assert_eq!((a.allowed, a.status), (false, 503), "fails closed");
    // Backing off: 1 s, then 2 s, ... (at most 3 attempts in the first 2 s, 1 request each).
    assert!(idp.discovery_hits() <= 3, "{}", idp.discovery_hits());
    running.stop().await;
}

// === a flood of random `kid`s ===

/// The real binary, so its memory can be read from `/proc` without the test's own.
struct Spawned {
    child: std::process::Child,
    grpc: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Spawned {
    async fn start(config_yaml: &str) -> Self {
        use mcp_authz::testutil::free_port;
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin_grpc = format!("127.0.0.1:{}", free_port());
        let yaml = config_yaml
            .replace(
                "admin_grpc: 127.0.0.1:0",
                &format!("admin_grpc: {admin_grpc}"),
            )
            .replace("admin: 127.0.0.1:0", &format!("admin: {admin}"))
            .replace("grpc: 127.0.0.1:0", &format!("grpc: {grpc}"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let this = Self {
            child,
            grpc,
            admin,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("http://{admin}/readyz")).await
                && r.status() == 200
            {
                break this;
            }
            assert!(Instant::now() < deadline, "the server never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident set size in KiB, from `/proc/<pid>/status`.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `tokens` (all must be allowed) with `workers` concurrent senders over `channels`
/// until all are sent or `stop` is set; returns each check's latency.
async fn valid_checks(
    channels: &[AuthorizationClient<Channel>],
    tokens: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
) -> Vec<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in channels {
        let (mut c, tokens, next, stop) = (c.clone(), tokens.clone(), next.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let Some(token) = tokens.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    break;
                };
                let started = Instant::now();
                let answer = decide(&mut c, check_req(token, TOOLS_LIST)).await;
                latencies.push(started.elapsed());
                assert_eq!(answer, (true, 200), "a valid token failed");
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    format!(
        "{} checks, p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    )
}

/// 10,000 tokens, each naming a random `kid`, sent as fast as 64 concurrent senders can (in
/// two halves of 5,000, to read memory between them). Meanwhile distinct valid tokens keep
/// being checked. The verified-token cache is off, so every valid check verifies a signature
/// against the key set under flood, and memory measures the flood alone. At most one JWKS
/// refetch per `unknown_kid_interval` (1 s here); every valid token allowed; memory does not
/// grow with the number of distinct `kid`s (nothing is kept per `kid`: a rejected token is not
/// cached, the refetch limiter holds one timestamp).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_kids() {
    const FLOOD: usize = 10_000;
    const VALID: usize = 1_000;
    let key = TestKey::ec("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let yaml = config_yaml(
        &idp.issuer,
        RESOURCE,
        "    key_refresh: {unknown_kid_interval: 1s}",
    ) + "cache: {tokens: 0}\n";
    let server = Spawned::start(&yaml).await;
    let iss = idp.issuer.clone();
    let valid = |n: usize| {
        Arc::new(
            (0..n)
                .map(|_| key.token(&claims_with(&iss, "mcp:connect", "acme")))
                .collect::<Vec<_>>(),
        )
    };
    let flood_tokens = |n: usize| {
        use rand::Rng as _;
        let mut rng = rand::rng();
        Arc::new(
            (0..n)
                .map(|_| {
                    let kid = format!("{:032x}", rng.random::<u128>());
                    token_with_kid(&key, &kid, &claims_with(&iss, "mcp:connect", "acme"))
                })
                .collect::<Vec<_>>(),
        )
    };
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(client(server.grpc).await);
    }
    let never = Arc::new(AtomicBool::new(false));
    // Warm up, then the baseline: valid checks alone.
    valid_checks(&channels, valid(200), never.clone()).await;
    let baseline = valid_checks(&channels, valid(VALID), never.clone()).await;

    let halves = [flood_tokens(FLOOD / 2), flood_tokens(FLOOD / 2)];
    let valid_tokens = valid(VALID * 10);
    let mut rss = vec![server.rss_kib()];
    let hits_before = idp.jwks_hits();
    let stop = Arc::new(AtomicBool::new(false));
    let during = {
        let (channels, stop) = (channels.clone(), stop.clone());
        tokio::spawn(async move { valid_checks(&channels, valid_tokens, stop).await })
    };
    let started = Instant::now();
    for tokens in halves {
        let next = Arc::new(AtomicUsize::new(0));
        let mut flooders = Vec::new();
        for i in 0..64 {
            let (tokens, next) = (tokens.clone(), next.clone());
            let mut c = channels.get(i % channels.len()).unwrap().clone();
            flooders.push(tokio::spawn(async move {
                while let Some(token) = tokens.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let answer = decide(&mut c, check_req(token, TOOLS_LIST)).await;
                    assert_eq!(answer, (false, 401), "a random kid was not refused");
                }
            }));
        }
        for f in flooders {
            f.await.unwrap();
        }
        rss.push(server.rss_kib());
    }
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let during = during.await.unwrap();
    let refetches = idp.jwks_hits() - hits_before;
    let (_, m) = get(&format!("http://{}/metrics", server.admin)).await;
    let outcome = |o: &str| {
        sample(
            &m,
            "mcp_authz_jwks_unknown_kid_refetches_total",
            &[&format!("outcome=\"{o}\"")],
        )
    };
    eprintln!(
        "kid flood ({} build, {} cores, load average {}): valid alone: {}; \
         flood: {FLOOD} random kids in {took:.2?} ({:.0}/s), {refetches} JWKS refetches \
         (unknown-kid outcomes: started {}, joined {}, rate_limited {}); \
         valid during the flood: {}; RSS KiB before / after 5,000 / after 10,000: {rss:?}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or_default(),
        summary(baseline),
        FLOOD as f64 / took.as_secs_f64(),
        outcome("started"),
        outcome("joined"),
        outcome("rate_limited"),
        summary(during.clone()),
    );
    let allowed = 1 + took.as_secs_f64().ceil() as usize;
    assert!(
        refetches <= allowed,
        "{refetches} JWKS fetches during a {took:?} flood (at most {allowed})"
    );
    assert!(!during.is_empty(), "no valid check ran during the flood");
    // Per-kid state of even 1 KiB would add 5 MB per half.
    let (first, second) = (rss[1].saturating_sub(rss[0]), rss[2].saturating_sub(rss[1]));
    assert!(
        second < 4 * 1024 && first < 8 * 1024,
        "RSS grew with distinct kids: {rss:?} KiB"
    );
}

// === policy files rewritten under load ===

/// What set B adds to the shipped set A: `ping` forbidden. Every other probe answers the same
/// under A and B.
const NO_PING: &str =
    "@id(\"no-ping\")\nforbid (principal, action == Mcp::Action::\"ping\", resource);\n";

/// The probes: (name, token index, body). Token 0 is tenant `acme` with every scope, token 1
/// tenant `globex`.
const PROBES: [(&str, usize, &str); 4] = [
    ("ping (A allows, B forbids)", 0, PING),
    (
        "weather tool (tools.cedar permits)",
        0,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris"}}}"#,
    ),
    (
        "dangerous tool (guards.cedar forbids without break-glass)",
        0,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_everything","arguments":{}}}"#,
    ),
    ("another tenant (guards.cedar forbids)", 1, PING),
];

/// One 100 ms tick of the policy writer.
#[derive(Clone, Copy)]
enum Tick {
    /// Switch to set B (`no-ping.cedar` written in two steps, 20 ms apart) or back to A.
    Switch { to_b: bool },
    /// Rewrite a complete file in place with its own content (for a moment it is empty).
    Rewrite(&'static str),
    /// Write a version that cannot load (again, if already there), to be undone later:
    /// 0 `guards.cedar` truncated mid-policy, 1 a syntax error in a new file, 2 a policy the
    /// schema refuses, 3 `entities.json` half written.
    Broken(usize),
    /// Undo [`Tick::Broken`].
    Repair(usize),
    /// A version that would load and decide differently, undone 30 ms later: 0 `guards.cedar`
    /// truncated between two policies (valid, without the break-glass guard), 1 `tools.cedar`
    /// deleted. A writer that left these in place for longer would really have changed the set.
    Glitch(usize),
}

fn churn_tick(dir: &std::path::Path, tick: Tick) {
    let shipped = mcp_authz::testutil::shipped_policies();
    let original = |name: &str| std::fs::read_to_string(shipped.join(name)).unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    let remove = |name: &str| std::fs::remove_file(dir.join(name)).unwrap();
    let guards = original("guards.cedar");
    let entities = original("entities.json");
    match tick {
        Tick::Switch { to_b: true } => {
            let half = NO_PING.len() / 2;
            write("no-ping.cedar", NO_PING.get(..half).unwrap());
            std::thread::sleep(Duration::from_millis(20));
            write("no-ping.cedar", NO_PING);
        }
        Tick::Switch { to_b: false } => remove("no-ping.cedar"),
        Tick::Rewrite(name) => write(name, &original(name)),
        Tick::Broken(0) => {
            let cut = guards.find("unless { principal in").unwrap();
            write("guards.cedar", guards.get(..cut).unwrap());
        }
        Tick::Broken(1) => write(
            "broken.cedar",
            "@id(\"broken\")\npermit (principal, action, resou",
        ),
        Tick::Broken(2) => write(
            "invalid.cedar",
            "@id(\"invalid\")\npermit (principal, action, resource) when { principal.no_such_attribute == 1 };\n",
        ),
        Tick::Broken(_) => write("entities.json", entities.get(..entities.len() / 2).unwrap()),
        Tick::Repair(0) => write("guards.cedar", &guards),
        Tick::Repair(1) => remove("broken.cedar"),
        Tick::Repair(2) => remove("invalid.cedar"),
        Tick::Repair(_) => write("entities.json", &entities),
        Tick::Glitch(0) => {
            let cut = guards.find("@id(\"dangerous-needs-break-glass\")").unwrap();
            write("guards.cedar", guards.get(..cut).unwrap());
            std::thread::sleep(Duration::from_millis(30));
            write("guards.cedar", &guards);
        }
        Tick::Glitch(_) => {
            let tools = original("tools.cedar");
            remove("tools.cedar");
            std::thread::sleep(Duration::from_millis(30));
            write("tools.cedar", &tools);
        }
    }
}

/// The writer's ticks for one cycle: switch, a few rewrites of complete files, a version that
/// cannot load kept (rewritten) for three ticks then repaired, and a 30 ms glitch.
fn churn_cycle(cycle: usize) -> Vec<Tick> {
    const COMPLETE: [&str; 4] = [
        "guards.cedar",
        "tools.cedar",
        "session.cedar",
        "entities.json",
    ];
    let mut ticks = vec![Tick::Switch {
        to_b: cycle.is_multiple_of(2),
    }];
    // A varying count, so the writer's cycle cannot phase-lock with the loader's.
    for i in 0..3 + cycle * 7 % 5 {
        ticks.push(Tick::Rewrite(COMPLETE.get(i % 4).copied().unwrap()));
    }
    let broken = cycle % 4;
    ticks.extend([Tick::Broken(broken); 3]);
    ticks.push(Tick::Repair(broken));
    ticks.push(Tick::Glitch(cycle % 2));
    ticks
}

/// The shipped policies rewritten every 100 ms for 30 s while 8 clients check four probes
/// without pause: every second or so the set switches between A (shipped) and B (shipped plus
/// a `forbid` on `ping`); complete files are rewritten in place (so a moment empty), and the
/// writer leaves broken and half-written versions ([`churn_cycle`]):
/// a file truncated to a valid prefix (without a guard), truncated mid-policy, a syntax
/// error, a policy the schema refuses, a deleted `tools.cedar`, a half-written
/// `entities.json`, and B's file written in two steps. Every check must be answered (no gRPC
/// error, no 5xx) with A's or B's answer, never another (a missing guard would allow the
/// dangerous tool, a missing `tools.cedar` would deny the weather tool), and both A's and
/// B's answers must be seen (the reloads did happen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_files_rewritten_under_load() {
    const CHURN: Duration = Duration::from_secs(30);
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let dir = tempfile::tempdir().unwrap();
    mcp_authz::testutil::copy_shipped_policies(dir.path());
    let config = Config::from_yaml(&mcp_authz::testutil::config_yaml_with_policies(
        &idp.issuer,
        RESOURCE,
        "",
        dir.path(),
    ))
    .unwrap();
    let running = server::start(&config, None).await.unwrap();
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    let every_scope = "mcp:connect mcp:tools:weather mcp:tools:files mcp:tools:admin";
    let tokens = Arc::new([
        key.token(&claims_with(&idp.issuer, every_scope, "acme")),
        key.token(&claims_with(&idp.issuer, every_scope, "globex")),
    ]);
    let c = client(running.grpc_addr).await;
    let answers = |c: AuthorizationClient<Channel>| {
        let tokens = tokens.clone();
        async move {
            let mut c = c;
            let mut out = Vec::new();
            for (_, token, body) in PROBES {
                out.push(decide(&mut c, check_req(tokens.get(token).unwrap(), body)).await);
            }
            out
        }
    };
    let a = answers(c.clone()).await;
    // B's answers, once B is in force.
    std::fs::write(dir.path().join("no-ping.cedar"), NO_PING).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let b = loop {
        let b = answers(c.clone()).await;
        if b != a {
            break b;
        }
        assert!(Instant::now() < deadline, "set B never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    std::fs::remove_file(dir.path().join("no-ping.cedar")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answers(c.clone()).await != a {
        assert!(Instant::now() < deadline, "set A never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("policy churn: answers under A {a:?}, under B {b:?}");
    assert_eq!(a.first(), Some(&(true, 200)));
    assert_eq!(b.first(), Some(&(false, 403)));
    assert_eq!(a.get(1..), b.get(1..), "A and B differ only on ping");
    assert_eq!(a.get(1), Some(&(true, 200)));
    assert!(a.get(2..).unwrap().iter().all(|&(allowed, _)| !allowed));

    let (_, m) = get(&format!("http://{}/metrics", running.admin_addr)).await;
    let reloads_before = (
        sample(&m, "mcp_authz_policy_reloads_total", &["\"success\""]),
        sample(&m, "mcp_authz_policy_reloads_total", &["\"failure\""]),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (dir, stop) = (dir.path().to_owned(), stop.clone());
        std::thread::spawn(move || {
            let mut b = false;
            let mut writes = 0usize;
            let started = Instant::now();
            let mut tick = Instant::now();
            let mut cycle = 0;
            while started.elapsed() < CHURN {
                for t in churn_cycle(cycle) {
                    if let Tick::Switch { to_b } = t {
                        b = to_b;
                    }
                    churn_tick(&dir, t);
                    writes += 1;
                    tick += Duration::from_millis(100);
                    std::thread::sleep(tick.saturating_duration_since(Instant::now()));
                }
                cycle += 1;
            }
            stop.store(true, Ordering::SeqCst);
            // Leave set A.
            if b {
                std::fs::remove_file(dir.join("no-ping.cedar")).unwrap();
            }
            writes
        })
    };
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, a, b) = (stop.clone(), a.clone(), b.clone());
        let c = c.clone();
        let tokens = tokens.clone();
        clients.push(tokio::spawn(async move {
            let mut c = c;
            let (mut checks, mut saw_a, mut saw_b) = (0usize, 0usize, 0usize);
            while !stop.load(Ordering::SeqCst) {
                for (i, (name, token, body)) in PROBES.into_iter().enumerate() {
                    let answer = decide(&mut c, check_req(tokens.get(token).unwrap(), body)).await;
                    checks += 1;
                    let (in_a, in_b) = (a.get(i) == Some(&answer), b.get(i) == Some(&answer));
                    assert!(
                        in_a || in_b,
                        "probe `{name}` answered {answer:?}: neither A's {:?} nor B's {:?}",
                        a.get(i),
                        b.get(i)
                    );
                    if i == 0 {
                        saw_a += usize::from(in_a);
                        saw_b += usize::from(in_b);
                    }
                }
            }
            (checks, saw_a, saw_b)
        }));
    }
    let (mut checks, mut saw_a, mut saw_b) = (0, 0, 0);
    for t in clients {
        let (n, x, y) = t.await.unwrap();
        checks += n;
        saw_a += x;
        saw_b += y;
    }
    let writes = writer.join().unwrap();
    let (_, m) = get(&format!("http://{}/metrics", running.admin_addr)).await;
    let reloads = (
        sample(&m, "mcp_authz_policy_reloads_total", &["\"success\""]) - reloads_before.0,
        sample(&m, "mcp_authz_policy_reloads_total", &["\"failure\""]) - reloads_before.1,
    );
    eprintln!(
        "policy churn: {writes} rewrites in {CHURN:?}; {checks} checks, all answered with A's or B's answer \
         (ping: {saw_a} as A, {saw_b} as B); reloads: {} loaded, {} refused",
        reloads.0, reloads.1
    );
    assert!(checks > 1000, "only {checks} checks");
    assert!(
        saw_a > 0 && saw_b > 0,
        "A {saw_a}, B {saw_b}: no reload seen"
    );
    assert!(reloads.0 >= 2.0, "{reloads:?}");
    running.stop().await;
}
