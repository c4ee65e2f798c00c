//! Available while failing closed, without a proxy: shutdown drains (NOT_SERVING first, checks
//! still answered, then in-flight checks finished, none dropped, also under load and for the
//! real binary on SIGTERM), and overload sheds checks with gRPC `UNAVAILABLE` and a metric
//! instead of letting every one wait. The rolling restart through a real Envoy is in
//! tests/envoy.rs.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed assumption should stop the test"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use mcp_authz::config::{Config, Shutdown};
use mcp_authz::grpc::{ClientRequest, check_request};
use mcp_authz::server::{self, Running};
use mcp_authz::testutil::{
    FakeIdp, TEST_OVERLOAD, TOOLS_LIST, TestKey, claims, config_yaml, free_port,
};
use tonic::transport::Channel;

const RESOURCE: &str = "https://mcp.example.com/mcp";

fn request(token: &str) -> CheckRequest {
    check_request(ClientRequest {
        method: "POST".into(),
        path: "/mcp".into(),
        host: "mcp.example.com".into(),
        bearer: Some(token.into()),
        headers: vec![],
        body: TOOLS_LIST.as_bytes().to_vec(),
    })
    .unwrap()
}

/// A new HTTP/2 connection to the check port.
async fn connect(addr: SocketAddr) -> AuthorizationClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    AuthorizationClient::new(channel)
}

/// What one check came back with: an allow, a denial (its HTTP status), or a gRPC error.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Allowed,
    Denied(i32),
    Error(tonic::Code, String),
}

async fn check(client: &mut AuthorizationClient<Channel>, token: &str) -> Outcome {
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    match client.check(request(token)).await {
        Ok(r) => match r.into_inner().http_response {
            Some(HttpResponse::OkResponse(_)) => Outcome::Allowed,
            Some(HttpResponse::DeniedResponse(d)) => {
                Outcome::Denied(d.status.map_or(0, |s| s.code))
            }
            _ => Outcome::Error(tonic::Code::Internal, "no ok or denied response".into()),
        },
        Err(status) => Outcome::Error(status.code(), status.message().to_owned()),
    }
}

async fn health(addr: SocketAddr) -> i32 {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l.as_bytes().get(series.len()) == Some(&b' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{series}` in:\n{metrics}"))
}

async fn metrics(admin: SocketAddr) -> String {
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A server on the test configuration, with `overload` replaced when one is given.
async fn start(idp: &FakeIdp, overload: Option<&str>) -> Running {
    let mut yaml = config_yaml(&idp.issuer, RESOURCE, "");
    if let Some(overload) = overload {
        yaml = yaml.replace(TEST_OVERLOAD, overload);
    }
    let config = Config::from_yaml(&yaml).unwrap();
    let running = server::start(&config, None).await.unwrap();
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    running
}

/// The first signal: health NOT_SERVING and `/readyz` 503 at once, while checks, on existing
/// and on new connections, are still answered; the second signal stops without waiting out the
/// drain delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_is_not_serving_but_still_answering() {
    let key = TestKey::ec("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let running = start(&idp, None).await;
    let token = key.token(&claims(&idp.issuer, RESOURCE));
    let (grpc, admin) = (running.grpc_addr, running.admin_addr);
    let mut before = connect(grpc).await;
    assert_eq!(check(&mut before, &token).await, Outcome::Allowed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health(grpc).await != 1 {
        assert!(tokio::time::Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A drain delay far longer than this test: only the second signal can end it.
    let (signal, stopped) = running.shut_down_with(Shutdown {
        drain_delay: Duration::from_secs(600),
        grace: Duration::from_secs(5),
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health(grpc).await != 2 {
        assert!(tokio::time::Instant::now() < deadline, "never NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["draining"], true, "{body}");
    assert_eq!(sample(&metrics(admin).await, "mcp_authz_draining"), 1.0);
    // Still answering: on the connection from before, and on a new one.
    assert_eq!(check(&mut before, &token).await, Outcome::Allowed);
    let mut after = connect(grpc).await;
    assert_eq!(check(&mut after, &token).await, Outcome::Allowed);
    let other = key.token(&serde_json::json!({"iss": idp.issuer, "sub": "x"}));
    assert!(
        matches!(check(&mut after, &other).await, Outcome::Denied(401)),
        "and still failing closed"
    );

    signal.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), stopped)
        .await
        .expect("the second signal did not stop the service")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(grpc).await.is_err(),
        "the check port still accepts after stopping"
    );
}

/// More checks than `overload.max_pending_checks` at once: the excess is shed with
/// `UNAVAILABLE` and counted, every check comes back (none hangs), nothing is allowed that
/// should not be, and the gate is empty again afterwards although the connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_bounds_is_shed_with_unavailable_and_counted() {
    let key = TestKey::ec("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let running = start(
        &idp,
        Some("overload: {max_pending_checks: 8, max_queue_wait: 60s}"),
    )
    .await;
    let token = key.token(&claims(&idp.issuer, RESOURCE));
    let bad = format!("{token}x");
    // One HTTP/2 connection: the server accepts the burst's streams together.
    let client = connect(running.grpc_addr).await;
    let burst = 400;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..burst {
        let mut client = client.clone();
        let token = if i % 4 == 0 {
            bad.clone()
        } else {
            token.clone()
        };
        tasks.spawn(async move { (i % 4 == 0, check(&mut client, &token).await) });
    }
    let (mut allowed, mut denied, mut shed) = (0, 0, 0);
    let all = async {
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                (false, Outcome::Allowed) => allowed += 1,
                (true, Outcome::Denied(401)) => denied += 1,
                (_, Outcome::Error(tonic::Code::Unavailable, m)) => {
                    assert!(m.starts_with("overloaded"), "{m}");
                    shed += 1;
                }
                (bad, other) => panic!("unexpected answer (bad token: {bad}): {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("a check hung");
    eprintln!("burst of {burst}: {allowed} allowed, {denied} denied, {shed} shed");
    assert_eq!(allowed + denied + shed, burst);
    assert!(shed > 0, "nothing was shed with max_pending_checks: 8");
    assert!(allowed + denied > 0, "nothing was decided");
    let m = metrics(running.admin_addr).await;
    assert_eq!(
        sample(&m, r#"mcp_authz_checks_shed_total{reason="pending_limit"}"#),
        f64::from(shed)
    );
    assert_eq!(
        sample(&m, r#"mcp_authz_checks_shed_total{reason="queue_wait"}"#),
        0.0
    );
    // Shed checks are not decisions.
    assert_eq!(
        sample(
            &m,
            r#"mcp_authz_checks_total{decision="allow",reason="allowed"}"#
        ),
        f64::from(allowed)
    );
    // Nothing pending any more, with the connection still open; the next check is decided.
    assert_eq!(sample(&m, "mcp_authz_checks_pending"), 0.0);
    let mut client = client;
    assert_eq!(check(&mut client, &token).await, Outcome::Allowed);
    assert_eq!(check(&mut client, &bad).await, Outcome::Denied(401));
    running.stop().await;
}

/// The queue wait is counted from each request's arrival, not from when its connection opened:
/// checks on a connection that sat idle for longer than `max_queue_wait` are decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_not_a_queue() {
    let key = TestKey::ec("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let running = start(&idp, Some("overload: {max_queue_wait: 1s}")).await;
    let token = key.token(&claims(&idp.issuer, RESOURCE));
    let mut client = connect(running.grpc_addr).await;
    assert_eq!(check(&mut client, &token).await, Outcome::Allowed);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for _ in 0..3 {
        assert_eq!(check(&mut client, &token).await, Outcome::Allowed);
    }
    let m = metrics(running.admin_addr).await;
    assert_eq!(
        sample(&m, r#"mcp_authz_checks_shed_total{reason="queue_wait"}"#),
        0.0
    );
    running.stop().await;
}

/// The real binary under load gets SIGTERM with no drain delay, so its listeners close while
/// checks are in flight: every check started before the signal is answered with its decision
/// (none dropped, none a transport error), and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_check_in_flight() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let dir = tempfile::tempdir().unwrap();
    let (grpc, admin) = (free_port(), free_port());
    let config = config_yaml(&idp.issuer, RESOURCE, "")
        .replace("  grpc: 127.0.0.1:0", &format!("  grpc: 127.0.0.1:{grpc}"))
        .replace(
            "  admin: 127.0.0.1:0",
            &format!("  admin: 127.0.0.1:{admin}"),
        )
        + "shutdown: {drain_delay: 0s, grace: 20s}\n";
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(dir.path().join("config.yaml"))
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !reqwest::get(&ready)
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grpc: SocketAddr = format!("127.0.0.1:{grpc}").parse().unwrap();

    // Distinct tokens (each a signature check) and a few denials, on 8 connections with 8
    // checks in flight on each.
    let tokens: Arc<Vec<(String, Outcome)>> = Arc::new(
        (0..64)
            .map(|i| {
                let mut c = claims(&idp.issuer, RESOURCE);
                c["sub"] = serde_json::json!(format!("user-{i}"));
                if i % 8 == 0 {
                    c["aud"] = serde_json::json!("https://elsewhere.example.com/mcp");
                    (key.token(&c), Outcome::Denied(401))
                } else {
                    (key.token(&c), Outcome::Allowed)
                }
            })
            .collect(),
    );
    let signalled = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut loopers = tokio::task::JoinSet::new();
    for c in 0..8 {
        let client = connect(grpc).await;
        for j in 0..8 {
            let (mut client, tokens) = (client.clone(), tokens.clone());
            let (signalled, done) = (signalled.clone(), done.clone());
            loopers.spawn(async move {
                // (started before the signal, answered before it, right answer, outcome).
                let mut seen = Vec::new();
                let mut i = c * 8 + j;
                loop {
                    let before = !signalled.load(Ordering::SeqCst);
                    let (token, expected) = &tokens[i % tokens.len()];
                    let outcome = check(&mut client, token).await;
                    let stop = matches!(outcome, Outcome::Error(..));
                    let answered_before = !signalled.load(Ordering::SeqCst);
                    seen.push((before, answered_before, outcome == *expected, outcome));
                    done.fetch_add(1, Ordering::SeqCst);
                    if stop || seen.len() > 100_000 {
                        return seen;
                    }
                    i += 1;
                }
            });
        }
    }
    // Load first, then the signal.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < 2000 {
        assert!(tokio::time::Instant::now() < deadline, "no load");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signalled.store(true, Ordering::SeqCst);
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("did not exit after SIGTERM")
        .unwrap();
    let mut results = Vec::new();
    let all = async {
        while let Some(r) = loopers.join_next().await {
            results.extend(r.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("a check hung after the server exited");

    let before: Vec<_> = results.iter().filter(|(b, ..)| *b).collect();
    let wrong: Vec<_> = before.iter().filter(|(_, _, ok, _)| !ok).collect();
    let in_flight = before
        .iter()
        .filter(|(_, answered_before, ..)| !answered_before)
        .count();
    let later = results.iter().filter(|(b, ..)| !b).count();
    eprintln!(
        "{} checks started before SIGTERM ({in_flight} of them in flight at the signal), {} \
         wrong or unanswered; {later} started after it",
        before.len(),
        wrong.len(),
    );
    assert!(
        wrong.is_empty(),
        "checks started before SIGTERM without their decision: {wrong:?}"
    );
    // The loopers always have a check outstanding: some were in flight at the signal.
    assert!(in_flight > 0, "no check was in flight at the signal");
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(log.contains("no longer accepting"), "{log}");
    assert!(log.contains("mcp-authz stopped"), "{log}");
}

/// The real signals: the first SIGTERM starts a long drain (still serving), a second one stops
/// the process at once, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_stops_at_once() {
    let key = TestKey::ec("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let dir = tempfile::tempdir().unwrap();
    let (grpc, admin) = (free_port(), free_port());
    let config = config_yaml(&idp.issuer, RESOURCE, "")
        .replace("  grpc: 127.0.0.1:0", &format!("  grpc: 127.0.0.1:{grpc}"))
        .replace(
            "  admin: 127.0.0.1:0",
            &format!("  admin: 127.0.0.1:{admin}"),
        )
        + "shutdown: {drain_delay: 4m, grace: 10s}\n";
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let log = dir.path().join("log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
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
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().unwrap().to_string();
    let sigterm = || {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    sigterm();
    // Draining: not ready, still deciding.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while reqwest::get(&ready).await.unwrap().status() != 503 {
        assert!(tokio::time::Instant::now() < deadline, "never draining");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = connect(format!("127.0.0.1:{grpc}").parse().unwrap()).await;
    let token = key.token(&claims(&idp.issuer, RESOURCE));
    assert_eq!(check(&mut client, &token).await, Outcome::Allowed);
    assert!(child.try_wait().unwrap().is_none());
    sigterm();
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the second SIGTERM did not stop it")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("second signal"), "{logs}");
}
