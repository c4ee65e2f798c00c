//! The metrics as Prometheus sees them: `promtool check metrics` on the real `/metrics` output,
//! and a real Prometheus (Debian's package, installed by `scripts/test`) scraping the service
//! and answering a query for the check counter these requests caused.
//!
//! A missing `promtool`/`prometheus` fails the test; set `MCP_AUTHZ_SKIP_PROMETHEUS=1` to skip
//! deliberately outside CI.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed assumption should stop the test"
)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use mcp_authz::config::Config;
use mcp_authz::server::{self, Running};
use mcp_authz::testutil::{
    FakeIdp, TestKey, claims, config_yaml, external_program, free_port, grpc_check, on_path,
};
use serde_json::Value;

const RESOURCE: &str = "https://mcp.example.com/mcp";
const HOST: &str = "mcp.example.com";

fn tool(name: &str) -> Option<PathBuf> {
    external_program(
        &format!("`{name}`"),
        on_path(name),
        |_| true,
        "MCP_AUTHZ_SKIP_PROMETHEUS",
        "run scripts/test (installs Debian's prometheus package)",
    )
}

/// A running service with some allowed and denied checks behind it.
async fn service_with_traffic(idp: &FakeIdp, key: &TestKey) -> Running {
    let config = Config::from_yaml(&config_yaml(&idp.issuer, RESOURCE, "")).unwrap();
    let running = server::start(&config, None).await.unwrap();
    assert!(running.wait_ready(Duration::from_secs(10)).await);
    let token = key.token(&claims(&idp.issuer, RESOURCE));
    for _ in 0..3 {
        assert!(
            grpc_check(running.grpc_addr, "POST", HOST, "/mcp", Some(&token))
                .await
                .allowed
        );
    }
    assert_eq!(
        grpc_check(running.grpc_addr, "POST", HOST, "/mcp", None)
            .await
            .status,
        401
    );
    running
}

#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let key = TestKey::ec("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let running = service_with_traffic(&idp, &key).await;
    let text = reqwest::get(format!("http://{}/metrics", running.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("mcp_authz_checks_total"));
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    running.stop().await;
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_check_counter() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let key = TestKey::ec("k1");
    let idp = FakeIdp::start(&[&key]).await;
    let running = service_with_traffic(&idp, &key).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: mcp-authz\n    static_configs:\n      - targets: ['{}']\n",
            running.admin_addr
        ),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = Kill(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=mcp_authz_checks_total%7Breason%3D%22allowed%22%7D"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        if let Ok(r) = reqwest::get(&query).await
            && let Ok(body) = r.json::<Value>().await
            && let Some(value) = body["data"]["result"][0]["value"][1].as_str()
        {
            assert_eq!(value, "3", "three allowed checks were made: {body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never returned the scraped counter"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Every query of the shipped Grafana dashboard is valid PromQL to this Prometheus.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy/grafana/mcp-authz-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let client = reqwest::Client::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m");
            let url = url::Url::parse_with_params(
                &format!("http://127.0.0.1:{port}/api/v1/query"),
                &[("query", expr.as_str())],
            )
            .unwrap();
            let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            assert_eq!(body["status"], "success", "`{expr}`: {body}");
        }
    }
    running.stop().await;
}
