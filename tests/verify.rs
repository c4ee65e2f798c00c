//! `mcp-authz policy verify` as a user runs it, with a real cvc5 (scripts/install-cvc5): the
//! shipped policies prove every property; each fixture under `tests/fixtures/verify/` breaks
//! one and must fail with that property named and a counterexample that shows the break; and
//! one counterexample's `policy explain` line, pasted into a shell, is allowed.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed assumption should stop the test"
)]

use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-authz");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    root()
        .join("tests/fixtures/verify")
        .join(name)
        .display()
        .to_string()
}

fn shipped() -> String {
    root().join("policies").display().to_string()
}

/// The solver as scripts/test installs it (`CVC5`, else `.venv/bin/cvc5`). Missing is a
/// failure, never a pass.
fn solver() -> String {
    let path = std::env::var_os("CVC5")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/cvc5"));
    assert!(
        path.is_file(),
        "no cvc5 solver at `{}`: run scripts/install-cvc5 (scripts/test does) or set CVC5",
        path.display()
    );
    path.display().to_string()
}

fn verify(args: &[&str]) -> (i32, String, String) {
    let solver = solver();
    let out = Command::new(BIN)
        .args(["policy", "verify"])
        .args(args)
        .args(["--solver", &solver])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lines of the first counterexample printed under the property line starting `header`.
fn counterexample<'a>(out: &'a str, header: &str) -> Vec<&'a str> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with(header));
    assert!(lines.next().is_some(), "no `{header}` in:\n{out}");
    lines
        .skip_while(|l| !l.starts_with("  counterexample"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect()
}

fn field<'a>(lines: &[&'a str], name: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix(name))
        .unwrap()
        .trim()
}

/// The value of `"key":"value"` / `key="value"` in a printed entity.
fn quoted_after(text: &str, key: &str) -> String {
    let rest = text.split(key).nth(1).unwrap();
    let rest = rest.trim_start_matches(['=', ':', '"']);
    rest.split('"').next().unwrap().to_owned()
}

#[test]
fn the_shipped_policies_prove_every_property() {
    let (code, out, err) = verify(&[&shipped()]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    for property in [
        "PROVED: tenant isolation",
        "PROVED: deny-list: tools/call of a tool in ToolSet `dangerous` => principal in Group `break-glass`",
        "PROVED: no dead policy",
        // policies/properties.yaml, read by default.
        "PROVED: never allows `a caller without a tenant gets nothing`",
        "PROVED: never allows `session methods need mcp:connect`",
        "PROVED: never allows `a tool call needs a tool scope`",
        "PROVED: never allows `a forecast is for 1 to 16 days`",
    ] {
        assert!(out.contains(property), "no `{property}` in:\n{out}");
    }
    assert!(out.contains("7 proved, 0 failed, 0 undecided"), "{out}");
}

#[test]
fn a_permit_without_the_tenant_guard_leaks_across_tenants() {
    let dir = fixture("tenant-leak");
    let (code, out, err) = verify(&[&dir]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("FAILED: tenant isolation"), "{out}");
    // The other properties still hold: the failure is attributed to the one broken.
    assert!(out.contains("PROVED: deny-list"), "{out}");
    assert!(out.contains("PROVED: no dead policy"), "{out}");
    let cex = counterexample(&out, "FAILED: tenant isolation");
    let principal_tenant = quoted_after(field(&cex, "principal:"), "tenant");
    let resource_tenant = quoted_after(field(&cex, "resource:"), "tenant");
    assert_ne!(principal_tenant, resource_tenant, "{out}");

    // Closing the loop: the printed explain command, pasted into a shell, is allowed.
    let explain = field(&cex, "explain:");
    assert!(
        explain.starts_with("mcp-authz policy explain --policies "),
        "{explain}"
    );
    assert!(
        explain.contains(&format!("--tenant {principal_tenant}"))
            || explain.contains(&format!("--tenant '{principal_tenant}'")),
        "{explain}"
    );
    let line = explain.replacen("mcp-authz", BIN, 1);
    let run = Command::new("sh").args(["-c", &line]).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{line}\n{stdout}");
    assert!(stdout.starts_with("decision: ALLOW"), "{stdout}");
    assert!(out.contains("explain decides ALLOW: reproduced"), "{out}");
}

#[test]
fn a_dangerous_tool_without_break_glass_breaks_the_deny_list() {
    let (code, out, err) = verify(&[&fixture("dangerous-open")]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let header = "FAILED: deny-list: tools/call of a tool in ToolSet `dangerous`";
    assert!(out.contains(header), "{out}");
    assert!(out.contains("PROVED: tenant isolation"), "{out}");
    let cex = counterexample(&out, header);
    let resource = field(&cex, "resource:");
    assert!(resource.contains("Mcp::ToolSet::\"dangerous\""), "{out}");
    let principal = field(&cex, "principal:");
    assert!(!principal.contains("break-glass"), "{out}");
    assert!(field(&cex, "action:").contains("tools/call"), "{out}");
    // The permit that allows it needs the admin scope.
    assert!(field(&cex, "context:").contains("mcp:tools:admin"), "{out}");
}

#[test]
fn dead_policies_are_named() {
    let (code, out, err) = verify(&[&fixture("dead")]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("FAILED: no dead policy"), "{out}");
    assert!(
        out.contains("dead policy `contradiction` (permit): never allows anything"),
        "{out}"
    );
    assert!(
        out.contains("dead policy `matches-nothing` (forbid): never matches anything"),
        "{out}"
    );
    // Only those two: every shipped policy is alive.
    assert_eq!(out.matches("  dead policy").count(), 2, "{out}");
    assert!(out.contains("PROVED: tenant isolation"), "{out}");
}

#[test]
fn a_new_set_that_allows_more_fails_no_new_allows() {
    let (code, out, err) = verify(&[&fixture("new-allows"), "--no-new-allows", &shipped()]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let header = "FAILED: no new allows";
    assert!(out.contains(header), "{out}");
    let cex = counterexample(&out, header);
    assert!(field(&cex, "action:").contains("prompts/get"), "{out}");
    // Allowed only because of the new permit: the old one needs mcp:connect.
    assert!(!field(&cex, "context:").contains("mcp:connect"), "{out}");

    // The shipped set against itself adds nothing.
    let (code, out, err) = verify(&[&shipped(), "--no-new-allows", &shipped()]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("PROVED: no new allows"), "{out}");
}

#[test]
fn properties_file_assertions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("properties.yaml");
    std::fs::write(
        &file,
        r#"
deny_lists: []
assertions:
  - name: tools need a tool scope
    action: tools/call
    never_allows_when: '!context.scopes.contains("mcp:tools:weather") && !context.scopes.contains("mcp:tools:files") && !context.scopes.contains("mcp:tools:admin")'
  - name: tenantless callers get nothing
    never_allows_when: 'principal.tenant == ""'
  - name: pings need mcp:connect
    action: ping
    never_allows_when: '!context.scopes.contains("mcp:connect")'
  - name: nobody may ping
    action: ping
    always_denies: true
"#,
    )
    .unwrap();
    let (code, out, err) = verify(&[&shipped(), "--properties", file.to_str().unwrap()]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("PROVED: never allows `tools need a tool scope`"),
        "{out}"
    );
    assert!(
        out.contains("PROVED: never allows `tenantless callers get nothing`"),
        "{out}"
    );
    assert!(
        out.contains("PROVED: never allows `pings need mcp:connect`"),
        "{out}"
    );
    assert!(
        out.contains("FAILED: always denies `nobody may ping`"),
        "{out}"
    );
    assert!(
        !out.contains("deny-list"),
        "deny_lists: [] checks none:\n{out}"
    );
    let cex = counterexample(&out, "FAILED: always denies `nobody may ping`");
    assert!(field(&cex, "explain:").contains("--method ping"), "{out}");

    // An action the schema does not have is an error, not a vacuous proof.
    std::fs::write(
        &file,
        "assertions: [{name: typo, action: tools/cal, always_denies: true}]\n",
    )
    .unwrap();
    let (code, _, err) = verify(&[&shipped(), "--properties", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`Mcp::Action::\"tools/cal\"` is not in the schema"),
        "{err}"
    );

    // Unknown keys are refused (exit 2), naming the key.
    std::fs::write(&file, "deny_list: []\n").unwrap();
    let (code, _, err) = verify(&[&shipped(), "--properties", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown field `deny_list`"), "{err}");
}

#[test]
fn no_solver_is_an_error() {
    let out = Command::new(BIN)
        .args([
            "policy",
            "verify",
            &shipped(),
            "--solver",
            "/nonexistent/cvc5",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot start the solver `/nonexistent/cvc5`"),
        "{err}"
    );
}

#[test]
fn a_question_not_answered_in_time_is_undecided_not_skipped() {
    // A solver that answers the start-up probe (an empty problem) and then never again.
    let dir = tempfile::tempdir().unwrap();
    let solver = dir.path().join("silent-cvc5");
    std::fs::write(
        &solver,
        "#!/bin/sh\nread line\n[ \"$line\" = \"(check-sat)\" ] && echo sat\nexec sleep 600\n",
    )
    .unwrap();
    let chmod = Command::new("chmod")
        .arg("+x")
        .arg(&solver)
        .status()
        .unwrap();
    assert!(chmod.success());
    let properties = dir.path().join("properties.yaml");
    std::fs::write(&properties, "deny_lists: []\n").unwrap();
    let out = Command::new(BIN)
        .args(["policy", "verify", &shipped(), "--timeout", "100ms"])
        .arg("--properties")
        .arg(&properties)
        .arg("--solver")
        .arg(&solver)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("UNDECIDED: tenant isolation"), "{stdout}");
    assert!(
        stdout.contains("UNSUPPORTED: tenant isolation: principal.tenant != resource.tenant => deny for (Mcp::User, Mcp::Action::\"DELETE\", Mcp::Server): solver timed out after 100ms"),
        "{stdout}"
    );
    assert!(!stdout.contains("PROVED"), "{stdout}");
}
