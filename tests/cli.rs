//! The `mcp-authz` binary as a user runs it: `validate` on good and broken files, `serve`
//! refusing a bad config before listening, `policy scaffold` on a saved `tools/list`, and the
//! README's first-run flow: `dev`, `token`, `check`.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed assumption should stop the test"
)]

use std::io::{BufRead, BufReader};

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mcp_authz::testutil::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-authz");

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_accepts_a_good_file() {
    let (code, out, err) = run(&[
        "validate",
        "--config",
        fixture("valid.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is valid"), "{out}");
}

#[test]
fn validate_names_file_key_and_problem() {
    let cases = [
        ("unknown_key.yaml", "refresh"),
        ("malformed.yaml", "malformed.yaml"),
        ("not_yaml.yaml", "not_yaml.yaml"),
        (
            "unknown_authorization_server.yaml",
            "servers[0].authorization_servers[0]",
        ),
        ("hmac_without_secret.yaml", "issuers[0].algorithms"),
        ("plain_http_jwks.yaml", "issuers[0].jwks_uri"),
        ("does_not_exist.yaml", "cannot read"),
    ];
    for (file, needle) in cases {
        let path = fixture(file);
        let (code, _, err) = run(&["validate", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 64, "{file}: {err}");
        assert!(
            err.contains(file),
            "{file}: message must name the file: {err}"
        );
        assert!(
            err.contains(needle),
            "{file}: expected `{needle}` in: {err}"
        );
    }
}

#[test]
fn serve_refuses_a_bad_config_before_listening() {
    let (code, _, err) = run(&[
        "serve",
        "--config",
        fixture("unknown_key.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 64, "{err}");
    // The environment variable works too.
    let out = Command::new(BIN)
        .arg("serve")
        .env("MCP_AUTHZ_CONFIG", fixture("malformed.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn policy_tools_work_on_the_shipped_policies() {
    let policies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dir = policies.to_str().unwrap();
    let (code, out, err) = run(&["policy", "validate", dir, "--deny-warnings"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&["policy", "test", dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
    let step_up = |rule: &str| {
        run(&[
            "policy",
            "explain",
            "--policies",
            dir,
            "--method",
            "tools/call",
            "--tool",
            "get_forecast",
            "--arguments",
            r#"{"city":"Paris"}"#,
            "--tenant",
            "acme",
            "--server-tenant",
            "acme",
            "--scope",
            "mcp:connect",
            "--scope-supported",
            "mcp:connect mcp:tools:weather",
            "--step-up-scope",
            rule,
        ])
    };
    // By default the challenge names what the operation needs (MCP 2026-07-28).
    let (code, out, _) = step_up("operation");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("decision: DENY"), "{out}");
    assert!(out.contains("scope=\"mcp:tools:weather\""), "{out}");
    let (code, out, _) = step_up("granted_and_operation");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("scope=\"mcp:connect mcp:tools:weather\""),
        "{out}"
    );
    let (code, _, err) = step_up("replace");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`replace` is not a step-up scope rule"),
        "{err}"
    );
    let (code, out, _) = run(&[
        "policy",
        "explain",
        "--policies",
        dir,
        "--method",
        "tools/call",
        "--tool",
        "get_forecast",
        "--arguments",
        r#"{"city":"Paris"}"#,
        "--tenant",
        "globex",
        "--server-tenant",
        "acme",
        "--scope",
        "mcp:connect mcp:tools:weather",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("tenant-isolation") && out.contains("plain 403"),
        "{out}"
    );
}

#[test]
fn policy_validate_reports_positions() {
    let dir = tempfile::tempdir().unwrap();
    mcp_authz::testutil::copy_shipped_policies(dir.path());
    std::fs::write(dir.path().join("typo.cedar"), "@id(\"t\")\npermit (principal, action, resource)\nwhen { context.scope.contains(\"x\") };\n").unwrap();
    let (code, _, err) = run(&["policy", "validate", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("typo.cedar:3:"), "{err}");
}

/// What `policy scaffold` prints for tests/fixtures/tools_list.json (run from the crate root).
const SCAFFOLD_EXPECTED: &str = r#"  // Generated by `mcp-authz policy scaffold` from `tests/fixtures/tools_list.json`,
  // server `fs`, 3 tools. Goes inside `namespace Mcp { ... }` in the policy
  // directory's schema.cedarschema.
  // Each tool is an action of its own, a member of Action::"tools/call", whose
  // context.arguments declares every argument the tool takes: a call with an
  // argument not declared here is refused (400). Match tool calls in policies with
  // `action in Mcp::Action::"tools/call"`: `==` does not match a tool declared here.
  // Path: a filesystem path (mcp-authz refuses dot segments, backslashes, repeated
  // slashes and percent-encoding in it); Url: an absolute URL (the same);
  // Json: any JSON value, seen by policies as its JSON text.
  // `check:` marks a guess to review.

  // Read the contents of a file under the shared directory.
  action "tools/call/fs/read_file" in [Action::"tools/call"]
    appliesTo {
      principal: User,
      resource: Tool,
      context: {
        scopes: Set<String>,
        client_id: String,
        protocol_version: String,
        session_id: String,
        batch: Bool,
        task_id?: String,
        arguments: {
          path: Path, // check: Path guessed from the name
          max_bytes?: Long, // Long: a 64-bit signed integer
        },
      },
    };

  // Get the weather forecast for a city.
  action "tools/call/fs/get_forecast" in [Action::"tools/call"]
    appliesTo {
      principal: User,
      resource: Tool,
      context: {
        scopes: Set<String>,
        client_id: String,
        protocol_version: String,
        session_id: String,
        batch: Bool,
        task_id?: String,
        arguments: {
          city: String,
          days?: Long, // Long: a 64-bit signed integer
          units: String, // one of "metric", "imperial"
        },
      },
    };

  // Search documents by text, with free-form filters and tags.
  action "tools/call/fs/search" in [Action::"tools/call"]
    appliesTo {
      principal: User,
      resource: Tool,
      context: {
        scopes: Set<String>,
        client_id: String,
        protocol_version: String,
        session_id: String,
        batch: Bool,
        task_id?: String,
        arguments: {
          query: String,
          filters: Json, // Json: object without properties
          tags: Set<String>,
        },
      },
    };
"#;

/// Runs the binary from the crate root, so relative fixture paths appear as given.
fn run_in_crate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn policy_scaffold_declares_each_tool_as_a_typed_action() {
    let args = [
        "policy",
        "scaffold",
        "--from-tools",
        "tests/fixtures/tools_list.json",
        "--server",
        "fs",
    ];
    let (code, out, err) = run_in_crate(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, SCAFFOLD_EXPECTED);

    // Valid Cedar: the shipped vocabulary with the declarations inside its namespace (and
    // the common types the typed-arguments vocabulary declares, if it does not yet).
    let shipped =
        std::fs::read_to_string(mcp_authz::testutil::shipped_policies().join("schema.cedarschema"))
            .unwrap();
    let close = shipped.rfind('}').unwrap();
    let (head, tail) = shipped.split_at(close);
    let types = if shipped.contains("type Path") {
        ""
    } else {
        "  type Path = String;\n  type Url = String;\n  type Json = String;\n"
    };
    let schema = format!("{head}{types}{out}{tail}");
    if let Err(e) = cedar_policy::Schema::from_cedarschema_str(&schema) {
        panic!("{e:?}\n{schema}");
    }

    // --out writes the same text.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tools.cedarschema");
    let mut with_out = args.to_vec();
    with_out.extend(["--out", file.to_str().unwrap()]);
    let (code, out, err) = run_in_crate(&with_out);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote"), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), SCAFFOLD_EXPECTED);
}

#[test]
fn policy_scaffold_refuses_bad_input_with_64() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let fixture = "tests/fixtures/tools_list.json".to_owned();
    let cases = [
        (
            dir.path().join("missing.json").to_str().unwrap().to_owned(),
            "demo",
            "cannot read",
        ),
        (write("broken.json", "{\"tools\": ["), "demo", "is not JSON"),
        (
            write("other.json", "{\"jsonrpc\": \"2.0\", \"id\": 1}"),
            "demo",
            "not a tools/list result",
        ),
        (
            write("noname.json", r#"[{"inputSchema": {}}]"#),
            "demo",
            "tool 0 (counting from 0) has no `name`",
        ),
        (fixture.clone(), "a/b", "server id `a/b` contains `/`"),
        (fixture, "", "the server id is empty"),
    ];
    for (file, server, needle) in cases {
        let (code, out, err) = run_in_crate(&[
            "policy",
            "scaffold",
            "--from-tools",
            &file,
            "--server",
            server,
        ]);
        assert_eq!(code, 64, "{file} {server}: {out}{err}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
    }
}

/// SIGHUP: the configuration file is read, the process goes on. SIGTERM: stop accepting,
/// finish, exit 0, with one log line at start and one at stop.
#[test]
fn serve_reloads_on_sighup_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let policies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    std::fs::write(
        &config,
        format!(
            // Port 0: the log line says where it listens; no port another test could take.
            "listen: {{grpc: 127.0.0.1:0, admin: 127.0.0.1:0, admin_grpc: 127.0.0.1:0}}\n\
             policies: {{dir: {}}}\n\
             issuers:\n  - issuer: http://127.0.0.1:1\n\
             servers:\n  - id: demo\n    resource: https://mcp.example.com/mcp\n    authorization_servers: [http://127.0.0.1:1]\n",
            policies.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("mcp-authz started")
    {
        if let Some(exit) = child.try_wait().unwrap() {
            panic!(
                "exited ({exit}) before starting: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        assert!(
            Instant::now() < deadline,
            "never started: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGHUP's default action ends a process: here it asks for a reload. A changed file (a
    // second server) is applied and logged; the process keeps serving.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "  - id: second\n    resource: https://mcp.example.com/second/mcp\n    authorization_servers: [http://127.0.0.1:1]\n    match: {path_prefix: /second/}\n",
    );
    std::fs::write(&config, text).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("SIGHUP: reading the configuration file")
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "SIGHUP ended the process"
        );
        assert!(Instant::now() < deadline, "SIGHUP not seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("configuration reloaded")
    {
        assert!(child.try_wait().unwrap().is_none(), "exited after SIGHUP");
        assert!(Instant::now() < deadline, "never reloaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.try_wait().unwrap().is_none(), "exited after SIGHUP");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0));
    let logs = std::fs::read_to_string(&log).unwrap();
    let line = |msg: &str| -> serde_json::Value {
        serde_json::from_str(logs.lines().find(|l| l.contains(msg)).unwrap()).unwrap()
    };
    let started = line("mcp-authz started");
    assert!(started["grpc"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(started["policy_hash"].as_str().unwrap().len(), 16);
    assert_eq!(
        line("mcp-authz stopped")["policy_hash"],
        started["policy_hash"]
    );
}

#[test]
fn help_describes_every_subcommand() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for sub in [
        "serve",
        "validate",
        "envoy-headers",
        "dev",
        "token",
        "check",
    ] {
        assert!(out.contains(sub), "{out}");
    }
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dev_token_and_check_work_together() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("issuer.json");
    let grpc = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let admin_grpc = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args([
            "dev",
            "--grpc",
            &grpc,
            "--admin",
            &admin,
            "--admin-grpc",
            &admin_grpc,
            "--state",
        ])
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(child);
    let mut token = String::new();
    BufReader::new(stdout).read_line(&mut token).unwrap();
    let token = token.trim().to_owned();
    let banner = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        token.split('.').count(),
        3,
        "dev prints a JWT on stdout: {token}\n{banner}"
    );
    assert!(banner.contains("NOT FOR PRODUCTION"), "{banner}");

    // Ready once the service has fetched its own dev issuer's keys over HTTP.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = Command::new("curl")
            .args(["-sf", &format!("http://{admin}/readyz")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dev server never became ready: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (code, out, err) = run(&[
        "check",
        "--addr",
        &grpc,
        "--token",
        &token,
        "--rpc",
        "tools/call",
        "--name",
        "get_forecast",
        "--arguments",
        r#"{"city":"Paris"}"#,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("decision: ALLOW"), "{out}");
    assert!(out.contains("x-mcp-authz-subject: dev-user"), "{out}");
    assert!(
        out.contains("upstream header removed: authorization"),
        "{out}"
    );

    let (code, out, _) = run(&["check", "--addr", &grpc, "--rpc", "initialize"]);
    assert_eq!(code, 1);
    assert!(out.contains("http status: 401"), "{out}");

    // The dev token lacks mcp:tools:files: a step-up 403 naming it (and only it: the token's
    // other scopes are not what this operation needs).
    let (code, out, _) = run(&[
        "check",
        "--addr",
        &grpc,
        "--token",
        &token,
        "--rpc",
        "tools/call",
        "--name",
        "read_file",
        "--arguments",
        r#"{"path":"/srv/shared/a"}"#,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("http status: 403"), "{out}");
    assert!(
        out.contains("error=\"insufficient_scope\", error_description=\"additional scopes are required\", scope=\"mcp:tools:files\""),
        "{out}"
    );
    assert!(out.contains("www-authenticate: Bearer"), "{out}");

    let (code, bob, err) = run(&[
        "token",
        "--state",
        state.to_str().unwrap(),
        "--sub",
        "bob",
        "--scope",
        "mcp:connect",
        "--lifetime",
        "5m",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(&[
        "check",
        "--addr",
        &grpc,
        "--token",
        bob.trim(),
        "--rpc",
        "ping",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("x-mcp-authz-subject: bob"), "{out}");
    assert!(out.contains("x-mcp-authz-scopes: mcp:connect"), "{out}");

    // Decision log: one JSON line per decision, found by the id the check returned, and
    // never the token.
    let decision_id = |out: &str| {
        out.lines()
            .find_map(|l| {
                l.split_once("x-mcp-authz-decision-id: ")
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no decision id in: {out}"))
    };
    let (_, allowed_out, _) = run(&[
        "check",
        "--addr",
        &grpc,
        "--token",
        &token,
        "--rpc",
        "tools/call",
        "--name",
        "get_forecast",
        "--arguments",
        r#"{"city":"Paris"}"#,
    ]);
    let (_, step_up_out, _) = run(&[
        "check",
        "--addr",
        &grpc,
        "--token",
        &token,
        "--rpc",
        "tools/call",
        "--name",
        "read_file",
        "--arguments",
        r#"{"path":"/srv/shared/a"}"#,
    ]);
    std::thread::sleep(Duration::from_millis(200));
    let logs = std::fs::read_to_string(&log).unwrap();
    // (The banner above the logs prints the dev token on purpose; the log lines must not.)
    assert!(
        logs.lines()
            .filter(|l| l.starts_with('{'))
            .all(|l| !l.contains(&token)),
        "the token leaked into the logs"
    );
    let line = |id: &str| -> serde_json::Value {
        let line = logs
            .lines()
            .find(|l| l.contains(id) && l.contains("\"decision\""))
            .unwrap_or_else(|| panic!("no log line for decision {id}: {logs}"));
        serde_json::from_str(line).unwrap()
    };
    let allowed = line(&decision_id(&allowed_out));
    assert_eq!(allowed["decision"], "allow");
    assert_eq!(allowed["method"], "tools/call");
    assert_eq!(allowed["target"], "get_forecast");
    assert_eq!(allowed["subject"], "dev-user");
    assert_eq!(allowed["tenant"], "acme");
    assert_eq!(allowed["server"], "demo");
    assert_eq!(allowed["policies"], "weather-tools");
    assert!(allowed["latency_us"].as_u64().is_some());
    let denied = line(&decision_id(&step_up_out));
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["status"], 403);
    assert_eq!(denied["reason"], "insufficient_scope");
    assert_eq!(denied["target"], "read_file");

    // The admin gRPC API: status and explain against the live policies.
    let (code, out, err) = run(&["status", "--addr", &admin_grpc]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ready: true") && out.contains("server demo:") && out.contains("  live   "),
        "{out}"
    );
    let (code, out, err) = run(&[
        "policy",
        "explain",
        "--addr",
        &admin_grpc,
        "--method",
        "tools/call",
        "--tool",
        "read_file",
        "--arguments",
        r#"{"path":"/srv/shared/a"}"#,
        "--tenant",
        "acme",
        "--scope",
        "mcp:connect",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("error=\"insufficient_scope\"") && out.contains("scope=\"mcp:tools:files\""),
        "{out}"
    );
    assert!(out.contains("(live)"), "{out}");

    // A token for another audience is refused.
    let (_, other, _) = run(&[
        "token",
        "--state",
        state.to_str().unwrap(),
        "--audience",
        "https://elsewhere.example.com/mcp",
    ]);
    let (code, out, _) = run(&[
        "check",
        "--addr",
        &grpc,
        "--token",
        other.trim(),
        "--rpc",
        "ping",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("invalid_token"), "{out}");
    assert!(out.contains("audience"), "{out}");
}

/// The help text states the dev token's real default scopes.
#[test]
fn token_help_states_the_default_scopes() {
    let (code, out, _) = run(&["token", "--help"]);
    assert_eq!(code, 0);
    let default = mcp_authz::dev::DEV_SCOPES.join(" ");
    assert!(out.contains(&default), "`{default}` not in: {out}");
    let (_, out, _) = run(&["policy", "explain", "--help"]);
    assert!(out.contains("--addr"), "{out}");
    assert!(!out.contains("request offline:"), "{out}");
}

/// `validate` catches what `serve` would fail on: a listen address already in use.
#[test]
fn validate_refuses_a_listen_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture("valid.yaml"))
        .unwrap()
        .replace("  grpc: 127.0.0.1:0", &format!("  grpc: {addr}"))
        .replace(
            "../../../policies",
            &mcp_authz::testutil::shipped_policies()
                .display()
                .to_string(),
        );
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = run(&["validate", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("listen.grpc") && err.contains(&addr.to_string()),
        "{err}"
    );
    drop(taken);
    let (code, out, err) = run(&["validate", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// `envoy-headers` prints a YAML block Envoy accepts as `allowed_headers`, with the headers a
/// check reads for that file; a tenant header configured there is in it.
#[test]
fn envoy_headers_prints_the_allowed_headers_of_a_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let policies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    let text = std::fs::read_to_string(fixture("valid.yaml"))
        .unwrap()
        .replace("../../../policies", policies.to_str().unwrap())
        .replace(
            "    resource: https://mcp.example.com/weather/mcp\n",
            "    resource: https://mcp.example.com/weather/mcp\n    tenant_from: {header: x-tenant-id}\n",
        );
    assert!(text.contains("tenant_from"));
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &text).unwrap();
    let (code, out, err) = run(&["envoy-headers", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&out).unwrap();
    let patterns = yaml["allowed_headers"]["patterns"].as_sequence().unwrap();
    let names: Vec<&str> = patterns
        .iter()
        .filter_map(|p| p["exact"].as_str())
        .collect();
    assert!(
        patterns
            .iter()
            .any(|p| p["prefix"].as_str() == Some("mcp-param-")),
        "{out}"
    );
    for needed in [
        "authorization",
        "content-type",
        "mcp-method",
        "mcp-session-id",
    ] {
        assert!(names.contains(&needed), "{names:?}");
    }
    assert!(names.contains(&"x-tenant-id"), "{names:?}");
    let (code, _, err) = run(&["envoy-headers", "--config", "/nonexistent.yaml"]);
    assert_eq!(code, 64, "{err}");
}
