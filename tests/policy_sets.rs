//! Many teams on one instance, through the real server (gRPC checks, the admin HTTP and gRPC
//! APIs, the `status` CLI) with policy directories and configuration files edited on disk while
//! it runs: per-server policy sets that reload and fail on their own, shadow sets that are
//! counted and never enforced, and the configuration file's own reload.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed assumption should stop the test"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_authz::config::Config;
use mcp_authz::server::{self, Running};
use mcp_authz::testutil::{
    FakeIdp, TestKey, claims, copy_shipped_policies, grpc_check, grpc_check_body,
};
use serde_json::Value;

const HOST: &str = "mcp.example.com";

/// `session.cedar` whose baseline needs a scope no test token has: session methods are denied.
const SESSION_DENIED: &str = r#"
@id("session-baseline")
permit (principal, action in Mcp::Action::"session", resource)
when { context.scopes.contains("mcp:never") };
"#;

fn resource(team: &str) -> String {
    format!("https://{HOST}/{team}/mcp")
}

fn policy_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    copy_shipped_policies(&dir);
    dir
}

/// One server block: `team` under `/team/`, with extra YAML lines (its `policies`, say).
fn server(issuer: &str, team: &str, extra: &str) -> String {
    format!(
        r#"  - id: {team}
    tenant: acme
    resource: {resource}
    authorization_servers: [{issuer}]
    scopes_supported: [mcp:connect, mcp:tools:weather]
    match: {{hosts: ["*"], path_prefix: /{team}/}}
{extra}
"#,
        resource = resource(team)
    )
}

fn config(issuer: &str, policies: &str, servers: &str, grpc: &str) -> String {
    format!(
        r#"
policies:
{policies}
listen:
  grpc: {grpc}
  admin: 127.0.0.1:0
  admin_grpc: 127.0.0.1:0
issuers:
  - issuer: {issuer}
    algorithms: [RS256]
    claims: {{tenant: tenant}}
servers:
{servers}
overload: {{max_queue_wait: 10s}}
"#
    )
}

async fn start(yaml: &str) -> Running {
    let config = Config::from_yaml(yaml).unwrap();
    let running = server::start(&config, None).await.unwrap();
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    running
}

async fn list_tools(running: &Running, key: &TestKey, idp: &FakeIdp, team: &str) -> (bool, i32) {
    let token = key.token(&claims(&idp.issuer, &resource(team)));
    let a = grpc_check(
        running.grpc_addr,
        "POST",
        HOST,
        &format!("/{team}/mcp"),
        Some(&token),
    )
    .await;
    (a.allowed, a.status)
}

async fn readyz(running: &Running) -> Value {
    let url = format!("http://{}/readyz", running.admin_addr);
    serde_json::from_str(&reqwest::get(url).await.unwrap().text().await.unwrap()).unwrap()
}

async fn metrics(running: &Running) -> String {
    let url = format!("http://{}/metrics", running.admin_addr);
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The `/readyz` entry of server `id`.
fn server_status<'a>(ready: &'a Value, id: &str) -> &'a Value {
    ready["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server"] == id)
        .unwrap_or_else(|| panic!("no server `{id}` in {ready}"))
}

/// Polls `/readyz` until `until` holds (10 s at most).
async fn wait_for(running: &Running, what: &str, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = readyz(running).await;
        if until(&ready) {
            return ready;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}: {ready:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-authz")
}

#[tokio::test]
async fn each_server_reloads_and_fails_on_its_own_policy_set() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let root = tempfile::tempdir().unwrap();
    let a = policy_dir(root.path(), "team-a");
    let b = policy_dir(root.path(), "team-b");
    let global = policy_dir(root.path(), "global");
    let servers = server(
        &idp.issuer,
        "a",
        &format!("    policies: {{dir: {}}}", a.display()),
    ) + &server(
        &idp.issuer,
        "b",
        &format!("    policies: {{dir: {}}}", b.display()),
    ) + &server(&idp.issuer, "c", "");
    let yaml = config(
        &idp.issuer,
        &format!("  dir: {}", global.display()),
        &servers,
        "127.0.0.1:0",
    );
    let running = start(&yaml).await;
    for team in ["a", "b", "c"] {
        assert_eq!(
            list_tools(&running, &key, &idp, team).await,
            (true, 200),
            "{team}"
        );
    }
    let ready = readyz(&running).await;
    assert_eq!(
        server_status(&ready, "a")["live"]["dir"],
        a.display().to_string()
    );
    assert_eq!(
        server_status(&ready, "c")["live"]["dir"],
        global.display().to_string()
    );
    let hash_a = server_status(&ready, "a")["live"]["hash"].clone();
    let hash_b = server_status(&ready, "b")["live"]["hash"].clone();

    // Team A breaks a file: A keeps its last good set and says why; B and C are untouched.
    std::fs::write(
        a.join("broken.cedar"),
        "permit (principal, action, resource) when {",
    )
    .unwrap();
    let ready = wait_for(&running, "team A failing", |r| {
        server_status(r, "a")["live"]["state"] == "failing"
    })
    .await;
    let a_status = server_status(&ready, "a");
    assert_eq!(
        a_status["live"]["hash"], hash_a,
        "the last good set still decides"
    );
    assert!(
        a_status["live"]["error"]
            .as_str()
            .unwrap()
            .contains("broken.cedar"),
        "{a_status}"
    );
    assert_eq!(server_status(&ready, "b")["live"]["state"], "loaded");
    assert_eq!(list_tools(&running, &key, &idp, "a").await, (true, 200));

    // Team B ships a change while A is broken: B's takes effect, A's decisions do not change.
    std::fs::write(b.join("session.cedar"), SESSION_DENIED).unwrap();
    let ready = wait_for(&running, "team B reloaded", |r| {
        server_status(r, "b")["live"]["hash"] != hash_b
    })
    .await;
    assert_eq!(server_status(&ready, "b")["live"]["state"], "loaded");
    assert_eq!(list_tools(&running, &key, &idp, "b").await, (false, 403));
    assert_eq!(list_tools(&running, &key, &idp, "a").await, (true, 200));
    assert_eq!(list_tools(&running, &key, &idp, "c").await, (true, 200));

    let m = metrics(&running).await;
    let set = |dir: &Path| format!("set=\"{}\"", dir.display());
    assert_eq!(
        sample(&m, "mcp_authz_policy_set_failing", &[&set(&a)]),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "mcp_authz_policy_set_failing", &[&set(&b)]),
        Some(0.0)
    );
    assert!(
        sample(
            &m,
            "mcp_authz_policy_reloads_total",
            &[&set(&a), "outcome=\"failure\""]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        sample(
            &m,
            "mcp_authz_policy_reloads_total",
            &[&set(&b), "outcome=\"success\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "mcp_authz_policy_info", &[&set(&global)]),
        Some(1.0),
        "every set has its info series"
    );

    // A reverts the broken file: back to loaded, same content, nothing failing.
    std::fs::remove_file(a.join("broken.cedar")).unwrap();
    let ready = wait_for(&running, "team A fixed", |r| {
        server_status(r, "a")["live"]["state"] == "loaded"
    })
    .await;
    assert_eq!(server_status(&ready, "a")["live"]["hash"], hash_a);
    let m = metrics(&running).await;
    assert_eq!(
        sample(&m, "mcp_authz_policy_set_failing", &[&set(&a)]),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_shadow_set_is_counted_and_logged_never_enforced() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let root = tempfile::tempdir().unwrap();
    let live = policy_dir(root.path(), "live");
    let shadow = policy_dir(root.path(), "shadow");
    std::fs::write(shadow.join("session.cedar"), SESSION_DENIED).unwrap();
    let own = policy_dir(root.path(), "own");
    let servers = server(&idp.issuer, "a", "")
        + &server(
            &idp.issuer,
            "b",
            &format!("    policies: {{dir: {}}}", own.display()),
        );
    let yaml = config(
        &idp.issuer,
        &format!(
            "  dir: {}\n  shadow_dir: {}",
            live.display(),
            shadow.display()
        ),
        &servers,
        "127.0.0.1:0",
    );
    let running = start(&yaml).await;

    // The shadow set would deny tools/list; the live set allows it, and decides.
    for _ in 0..3 {
        assert_eq!(list_tools(&running, &key, &idp, "a").await, (true, 200));
    }
    // A server with its own set has no shadow (the top-level shadow is a candidate for the
    // top-level set).
    assert_eq!(list_tools(&running, &key, &idp, "b").await, (true, 200));
    let ready = wait_for(&running, "three shadow decisions", |r| {
        server_status(r, "a")["shadow_decisions"]
            .as_array()
            .is_some_and(|c| c.iter().map(|c| c["count"].as_u64().unwrap()).sum::<u64>() == 3)
    })
    .await;
    let a = server_status(&ready, "a");
    assert_eq!(a["shadow"]["state"], "loaded");
    assert_ne!(a["shadow"]["hash"], a["live"]["hash"]);
    assert_eq!(a["shadow_decisions"][0]["live"], "allow");
    assert_eq!(a["shadow_decisions"][0]["shadow"], "deny");
    assert!(server_status(&ready, "b").get("shadow").is_none());
    let m = metrics(&running).await;
    assert_eq!(
        sample(
            &m,
            "mcp_authz_shadow_decisions_total",
            &["server=\"a\"", "live=\"allow\"", "shadow=\"deny\""]
        ),
        Some(3.0),
        "{m}"
    );

    // The operator's view: `status` and `policy explain --shadow` through the admin gRPC API.
    let admin = running.admin_grpc_addr.to_string();
    // (tokio's Command: the server answering it runs on this test's runtime.)
    let out = tokio::process::Command::new(bin())
        .args(["status", "--addr", &admin])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("server a:"), "{text}");
    assert!(
        text.contains("shadow decisions: 3 evaluated, 3 disagreed"),
        "{text}"
    );
    assert!(text.contains("live allow / shadow deny: 3"), "{text}");
    let explain = async |shadow: bool| {
        let mut args = vec![
            "policy",
            "explain",
            "--addr",
            &admin,
            "--server-id",
            "a",
            "--method",
            "tools/list",
            "--sub",
            "alice",
            "--tenant",
            "acme",
            "--scope",
            "mcp:connect",
        ];
        if shadow {
            args.push("--shadow");
        }
        tokio::process::Command::new(bin())
            .args(args)
            .output()
            .await
            .unwrap()
    };
    let live = explain(false).await;
    assert!(
        live.status.success(),
        "{}{}",
        String::from_utf8_lossy(&live.stdout),
        String::from_utf8_lossy(&live.stderr)
    );
    let shadowed = explain(true).await;
    assert!(!shadowed.status.success(), "the shadow set denies");
    assert!(
        String::from_utf8_lossy(&shadowed.stdout).contains("decision: DENY"),
        "{}",
        String::from_utf8_lossy(&shadowed.stdout)
    );
}

#[tokio::test]
async fn a_shadow_set_that_does_not_load_changes_nothing_until_it_does() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let root = tempfile::tempdir().unwrap();
    let live = policy_dir(root.path(), "live");
    let shadow = policy_dir(root.path(), "shadow");
    std::fs::write(shadow.join("broken.cedar"), "forbid (").unwrap();
    let yaml = config(
        &idp.issuer,
        &format!(
            "  dir: {}\n  shadow_dir: {}",
            live.display(),
            shadow.display()
        ),
        &server(&idp.issuer, "a", ""),
        "127.0.0.1:0",
    );
    let running = start(&yaml).await;
    assert_eq!(list_tools(&running, &key, &idp, "a").await, (true, 200));
    let ready = readyz(&running).await;
    let a = server_status(&ready, "a");
    assert_eq!(a["shadow"]["state"], "never_loaded", "{a}");
    assert!(
        a["shadow"]["error"]
            .as_str()
            .unwrap()
            .contains("broken.cedar")
    );
    let m = metrics(&running).await;
    assert_eq!(
        sample(
            &m,
            "mcp_authz_shadow_skipped_total",
            &["server=\"a\"", "reason=\"not_loaded\""]
        ),
        Some(1.0),
        "{m}"
    );
    let shadow_set = format!("set=\"{}\"", shadow.display());
    assert_eq!(
        sample(&m, "mcp_authz_policy_set_failing", &[&shadow_set]),
        Some(1.0)
    );

    // Fixed, and denying tools/list: it loads on its own and is evaluated from then on.
    std::fs::remove_file(shadow.join("broken.cedar")).unwrap();
    std::fs::write(shadow.join("session.cedar"), SESSION_DENIED).unwrap();
    wait_for(&running, "the shadow set loaded", |r| {
        server_status(r, "a")["shadow"]["state"] == "loaded"
    })
    .await;
    let m = metrics(&running).await;
    assert_eq!(
        sample(&m, "mcp_authz_policy_set_failing", &[&shadow_set]),
        Some(0.0),
        "{m}"
    );
    assert_eq!(list_tools(&running, &key, &idp, "a").await, (true, 200));
    wait_for(&running, "one shadow decision", |r| {
        server_status(r, "a")["shadow_decisions"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    })
    .await;
}

#[tokio::test]
async fn the_configuration_file_reloads_whole_or_not_at_all() {
    let key = TestKey::rsa("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let root = tempfile::tempdir().unwrap();
    let global = policy_dir(root.path(), "global");
    let team = policy_dir(root.path(), "team-b");
    std::fs::write(team.join("session.cedar"), SESSION_DENIED).unwrap();
    let policies = format!("  dir: {}", global.display());
    let path = root.path().join("mcp-authz.yaml");
    let write = |servers: &str, grpc: &str| {
        // Written beside and renamed, as editors and ConfigMaps do: read whole or not at all.
        let tmp = root.path().join(".mcp-authz.yaml.tmp");
        std::fs::write(&tmp, config(&idp.issuer, &policies, servers, grpc)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    write(&server(&idp.issuer, "a", ""), "127.0.0.1:0");
    let config = Config::load(&path).unwrap();
    let running = server::start(&config, None).await.unwrap();
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    running.watch_config(&path, &config);
    assert_eq!(list_tools(&running, &key, &idp, "a").await, (true, 200));
    assert!(
        !list_tools(&running, &key, &idp, "b").await.0,
        "no server b yet"
    );

    // A server with its own policy set is added.
    let with_b = server(&idp.issuer, "a", "")
        + &server(
            &idp.issuer,
            "b",
            &format!("    policies: {{dir: {}}}", team.display()),
        );
    write(&with_b, "127.0.0.1:0");
    let ready = wait_for(&running, "server b", |r| {
        r["servers"].as_array().unwrap().len() == 2
    })
    .await;
    assert_eq!(ready["config"]["path"], path.display().to_string());
    assert!(ready["config"].get("error").is_none());
    assert_eq!(
        list_tools(&running, &key, &idp, "b").await,
        (false, 403),
        "b's own set denies"
    );
    assert_eq!(list_tools(&running, &key, &idp, "a").await, (true, 200));

    // An invalid file (an unknown key) is refused whole: the last good one stays, and says why.
    write(&(with_b.clone() + "    bogus: 1\n"), "127.0.0.1:0");
    let ready = wait_for(&running, "the reload failure", |r| {
        r["config"].get("error").is_some()
    })
    .await;
    assert!(
        ready["config"]["error"].as_str().unwrap().contains("bogus"),
        "{ready}"
    );
    assert_eq!(ready["servers"].as_array().unwrap().len(), 2);
    assert_eq!(list_tools(&running, &key, &idp, "b").await, (false, 403));
    // Content that failed is not tried (nor logged, nor counted) again at every poll.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        sample(
            &metrics(&running).await,
            "mcp_authz_config_reloads_total",
            &["outcome=\"failure\""]
        ),
        Some(1.0)
    );

    // A server added by a reload has its per-tool series (`other`: it declares no tools).
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"anything"}}"#;
    let token = key.token(&claims(&idp.issuer, &resource("b")));
    let answer = grpc_check_body(
        running.grpc_addr,
        "POST",
        HOST,
        "/b/mcp",
        Some(&token),
        &[],
        call,
    )
    .await;
    assert!(!answer.allowed);
    assert_eq!(
        sample(
            &metrics(&running).await,
            "mcp_authz_tool_calls_total",
            &["server=\"b\"", "tool=\"other\"", "decision=\"deny\""]
        ),
        Some(1.0)
    );

    // A new issuer whose keys cannot be fetched: refused after the wait (swapping it in would
    // deny its tokens and take readiness away); the service stays ready on the last good file.
    let unreachable = "http://127.0.0.1:1";
    let text = self::config(&idp.issuer, &policies, &with_b, "127.0.0.1:0").replace(
        "servers:\n",
        &format!("  - issuer: {unreachable}\n    algorithms: [RS256]\nservers:\n"),
    );
    let tmp = root.path().join(".mcp-authz.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let ready = readyz(&running).await;
        if ready["config"]["error"]
            .as_str()
            .is_some_and(|e| e.contains(unreachable))
        {
            break ready;
        }
        assert!(ready["ready"] != false, "lost readiness: {ready:#}");
        assert!(tokio::time::Instant::now() < deadline, "{ready:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        ready["config"]["error"]
            .as_str()
            .unwrap()
            .contains("no signing keys within 10 s"),
        "{ready}"
    );
    assert!(running.engine.is_ready());
    assert_eq!(list_tools(&running, &key, &idp, "a").await, (true, 200));

    // A new server whose policy directory does not load: refused whole too (server a stays).
    let missing = root.path().join("missing");
    let with_c = server(&idp.issuer, "a", "")
        + &server(
            &idp.issuer,
            "c",
            &format!("    policies: {{dir: {}}}", missing.display()),
        );
    write(&with_c, "127.0.0.1:0");
    let ready = wait_for(&running, "the second failure", |r| {
        r["config"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("missing"))
    })
    .await;
    assert_eq!(
        ready["servers"].as_array().unwrap().len(),
        2,
        "still a and b"
    );
    assert_eq!(list_tools(&running, &key, &idp, "b").await, (false, 403));

    // Server b removed and the gRPC address changed: b is gone, the address waits for a
    // restart (named), and checks still arrive on the running listener.
    write(&server(&idp.issuer, "a", ""), "127.0.0.1:1");
    let ready = wait_for(&running, "server b removed", |r| {
        r["servers"].as_array().unwrap().len() == 1 && r["config"].get("error").is_none()
    })
    .await;
    assert_eq!(
        ready["config"]["restart_required"][0], "listen.grpc",
        "{ready}"
    );
    assert!(!list_tools(&running, &key, &idp, "b").await.0);
    assert_eq!(list_tools(&running, &key, &idp, "a").await, (true, 200));

    let m = metrics(&running).await;
    assert_eq!(
        sample(
            &m,
            "mcp_authz_mcp_requests_total",
            &["server=\"b\"", "method=\"tools/list\"", "decision=\"deny\""]
        ),
        Some(3.0),
        "the added server's requests are counted: {m}"
    );
    assert!(
        sample(
            &m,
            "mcp_authz_config_reloads_total",
            &["outcome=\"failure\""]
        )
        .unwrap()
            >= 2.0
    );
    assert_eq!(
        sample(
            &m,
            "mcp_authz_config_reloads_total",
            &["outcome=\"success\""]
        ),
        Some(2.0),
        "{m}"
    );
    // The removed server's own set is gone from the metrics.
    assert_eq!(
        sample(
            &m,
            "mcp_authz_policy_info",
            &[&format!("set=\"{}\"", team.display())]
        ),
        None,
        "{m}"
    );
}
