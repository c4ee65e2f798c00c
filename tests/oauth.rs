//! Real clients doing their own OAuth, end to end: a real OpenID provider nobody here wrote
//! (node-oidc-provider: client credentials, resource indicators, JWT access tokens), the
//! `mcp-authz` binary, the official Python MCP SDK server behind the shipped Envoy
//! configuration, and the official TypeScript and Python SDK clients with their own
//! client-credentials support. Each client gets 401, reads the PRM document from
//! `resource_metadata`, discovers the authorization server, obtains a token for the resource,
//! retries, lists the tools (filtered), calls an allowed tool, calls one needing more scope and
//! gets the 403 step-up challenge. What each SDK does then is asserted as it is: see
//! `tests/e2e/oauth/README.md` for the per-SDK findings.
//!
//! Needs `node` with `tests/e2e/oauth/node_modules` (`scripts/test` runs `npm ci`), Envoy and
//! the venv Python with the MCP SDK; `MCP_AUTHZ_SKIP_ENVOY=1` skips outside CI.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should stop the test"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_authz::testutil::{
    envoy_binary, free_port, node, oauth_dir, python_with_mcp, spawn, start_provider,
    start_shipped_envoy, wait_for_port, wait_http,
};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

struct Ports {
    provider: u16,
    listener: u16,
    envoy_admin: u16,
    grpc: u16,
    admin: u16,
    admin_grpc: u16,
    upstream: u16,
}

impl Ports {
    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.provider)
    }
    fn resource(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.listener)
    }
}

/// Beside the shipped policies: `internal_debug` is tenant `globex`'s tool. The callers here are
/// in `acme`, so no scope opens it for them: it is not in their lists, and a call is a plain 403.
const TENANT_TOOL: &str = r#"
@id("internal-debug-globex-only")
forbid (principal, action in Mcp::Action::"tools/call", resource == Mcp::Tool::"demo/internal_debug")
unless { principal.tenant == "globex" };

@id("internal-debug")
permit (principal, action in Mcp::Action::"tools/call", resource == Mcp::Tool::"demo/internal_debug")
when { context.scopes.contains("mcp:connect") };
"#;

/// The `mcp-authz` binary trusting the provider for the resource behind Envoy.
async fn start_mcp_authz(p: &Ports, dir: &Path, step_up: &str) -> Child {
    let config = format!(
        r#"
policies:
  dir: {policies}
listen:
  grpc: 127.0.0.1:{grpc}
  admin: 127.0.0.1:{admin}
  admin_grpc: 127.0.0.1:{admin_grpc}
issuers:
  - issuer: {issuer}
    algorithms: [RS256, ES256]
    claims: {{tenant: tenant}}
servers:
  - id: demo
    tenant: acme
    resource: {resource}
    authorization_servers: [{issuer}]
    scopes_supported: [mcp:connect, mcp:tools:weather, mcp:tools:files, mcp:tools:admin]
    challenge_scopes: [mcp:connect]
    step_up: {{scope: {step_up}}}
    match: {{hosts: ["*"]}}
decision_log: {{allow_sample_rate: 1.0}}
"#,
        policies = dir.join("policies").display(),
        grpc = p.grpc,
        admin = p.admin,
        admin_grpc = p.admin_grpc,
        issuer = p.issuer(),
        resource = p.resource(),
    );
    let path = dir.join(format!("mcp-authz-{step_up}.yaml"));
    std::fs::write(&path, config).unwrap();
    let child = spawn(
        Path::new(env!("CARGO_BIN_EXE_mcp-authz")),
        &[
            "serve",
            "--log-format",
            "json",
            "--config",
            path.to_str().unwrap(),
        ],
        &dir.join(format!("mcp-authz-{step_up}.log")),
        dir,
    );
    wait_http(&format!("http://127.0.0.1:{}/readyz", p.admin), "mcp-authz").await;
    child
}

/// Runs one client script; its JSON report.
async fn client(program: &Path, script: &str, p: &Ports, id: &str, secret: &str) -> Value {
    let out = Command::new(program)
        .arg(oauth_dir().join(script))
        .args([&p.resource(), id, secret, "mcp:connect mcp:tools:weather"])
        .env("OAUTH_ISSUER", p.issuer())
        .current_dir(oauth_dir())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{script}: {e}: {stdout}"))
}

/// What both SDKs do up to the step-up: 401 with the challenge, PRM through Envoy, the
/// authorization server's metadata, a token for this resource, the retry, the filtered list,
/// the allowed call, and the 403 naming the missing scope.
fn assert_discovery_and_first_token(report: &Value, p: &Ports, sdk: &str) {
    let exchanges = report["exchanges"].as_array().unwrap();
    let first = &exchanges[0];
    assert_eq!(first["status"], 401, "{sdk}: {report}");
    let prm = format!(
        "http://127.0.0.1:{}/.well-known/oauth-protected-resource/mcp",
        p.listener
    );
    assert_eq!(
        first["www_authenticate"],
        format!("Bearer scope=\"mcp:connect\", resource_metadata=\"{prm}\""),
        "{sdk}"
    );
    let got = |url: &str| {
        exchanges
            .iter()
            .any(|e| e["method"] == "GET" && e["url"] == url && e["status"] == 200)
    };
    assert!(got(&prm), "{sdk}: the PRM document was not read: {report}");
    let as_metadata = format!("{}/.well-known/oauth-authorization-server", p.issuer());
    assert!(
        got(&as_metadata),
        "{sdk}: the authorization server was not discovered: {report}"
    );
    let tokens = report["token_requests"].as_array().unwrap();
    assert!(!tokens.is_empty(), "{sdk}: {report}");
    for t in tokens {
        // RFC 8707: every token is asked for this resource, so its `aud` names it.
        assert_eq!(t["resource"], p.resource(), "{sdk}: {t}");
        assert_eq!(t["grant_type"], "client_credentials", "{sdk}");
        assert_eq!(t["status"], 200, "{sdk}: {t}");
    }
    // Filtered by the list filter: not delete_everything (break-glass group only) nor
    // internal_debug (another tenant's tool: see `TENANT_TOOL`).
    assert_eq!(
        report["tools"],
        json!(["get_alerts", "get_forecast", "read_file", "write_file"]),
        "{sdk}: {report}"
    );
    assert_eq!(
        report["forecast"]["text"],
        json!(["sunny in Paris"]),
        "{sdk}: {report}"
    );
    let step_up = exchanges
        .iter()
        .find(|e| e["status"] == 403)
        .unwrap_or_else(|| panic!("{sdk}: no 403 for read_file: {report}"));
    assert!(
        step_up["www_authenticate"]
            .as_str()
            .unwrap()
            .starts_with("Bearer error=\"insufficient_scope\""),
        "{sdk}: {step_up}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_run_their_own_oauth_through_envoy() {
    let (Some(node), Some(envoy_bin), Some(python)) = (node(), envoy_binary(), python_with_mcp())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    mcp_authz::testutil::copy_shipped_policies(&policies);
    std::fs::write(policies.join("tenant-tool.cedar"), TENANT_TOOL).unwrap();
    let p = Ports {
        provider: free_port(),
        listener: free_port(),
        envoy_admin: free_port(),
        grpc: free_port(),
        admin: free_port(),
        admin_grpc: free_port(),
        upstream: free_port(),
    };
    let _provider = start_provider(&node, p.provider, &[], dir.path()).await;
    let _server = spawn(
        &python,
        &[
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/e2e/mcp_server.py")
                .to_str()
                .unwrap(),
            &p.upstream.to_string(),
        ],
        &dir.path().join("mcp_server.log"),
        dir.path(),
    );
    let _envoy = start_shipped_envoy(
        &envoy_bin,
        dir.path(),
        p.listener,
        &[p.grpc],
        p.upstream,
        p.envoy_admin,
    )
    .await;
    wait_for_port(p.upstream, "MCP server", Duration::from_secs(30)).await;

    // The Python SDK adds the challenged scopes to those it holds (SEP-2350): the default
    // `step_up.scope: operation` is what it needs.
    {
        let _authz = start_mcp_authz(&p, dir.path(), "operation").await;
        let report = client(&python, "py_client.py", &p, "py-client", "py-secret").await;
        assert_discovery_and_first_token(&report, &p, "python");
        // It started from the 401's challenge (mcp:connect), stepped up twice, and every call
        // succeeded: three tokens, each asked with what it held plus what was challenged.
        assert_eq!(
            report["read_file"]["text"],
            json!(["contents of /srv/shared/a.txt"]),
            "{report}"
        );
        let scopes: Vec<&str> = report["token_requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["scope"].as_str().unwrap())
            .collect();
        assert_eq!(
            scopes,
            [
                "mcp:connect",
                "mcp:connect mcp:tools:weather",
                "mcp:connect mcp:tools:weather mcp:tools:files"
            ],
            "{report}"
        );
        assert_eq!(report["tools_after"], report["tools"], "{report}");
        assert_eq!(report["errors"], json!([]), "{report}");
    }

    // The TypeScript SDK 1.32.2 with client credentials does everything up to the 403, then
    // asks for a token with the scope it was configured with again, not the challenged one
    // (`fetchToken` takes `clientMetadata.scope`), and gives up: its step-up works only in the
    // authorization-code flow. The server setting a replacing client needs,
    // `granted_and_operation`, cannot help here; asserted so that an SDK that fixes this
    // fails the test and the README's finding gets updated.
    {
        let _authz = start_mcp_authz(&p, dir.path(), "granted_and_operation").await;
        let report = client(&node, "ts_client.mjs", &p, "ts-client", "ts-secret").await;
        assert_discovery_and_first_token(&report, &p, "typescript");
        assert_eq!(report["read_file"]["code"], 403, "{report}");
        let tokens = report["token_requests"].as_array().unwrap();
        assert!(tokens.len() >= 2, "{report}");
        assert!(
            tokens
                .iter()
                .all(|t| t["scope"] == "mcp:connect mcp:tools:weather"),
            "{report}"
        );
        // The challenge named what a replacing client must hold (granted + missing).
        let challenge = report["exchanges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["status"] == 403)
            .unwrap();
        assert!(
            challenge["www_authenticate"]
                .as_str()
                .unwrap()
                .contains("scope=\"mcp:connect mcp:tools:weather mcp:tools:files\""),
            "{challenge}"
        );
        // Its token still works for what it had.
        assert_eq!(
            report["forecast_after"]["text"],
            json!(["sunny in Paris"]),
            "{report}"
        );
    }
}
