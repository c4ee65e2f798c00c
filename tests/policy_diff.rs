//! `mcp-authz policy diff` and the coverage report of `policy test`, through the binary as a
//! reviewer runs them. Fixtures are copies of the shipped `policies/` made at test time, with
//! one file edited, so they follow the shipped set as it changes.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed assumption should stop the test"
)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-authz");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of the shipped policies, then `edit` applied to it.
fn policies(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    mcp_authz::testutil::copy_shipped_policies(dir.path());
    edit(dir.path());
    dir
}

/// Replaces `from` (which must be there) with `to` in a file of a policy directory.
fn replace(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "`{from}` not in {file}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

fn diff(old: &Path, new: &Path) -> (i32, String, String) {
    run(&[
        "policy",
        "diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
    ])
}

/// The groups of the text output: each header with its change lines (the transition line and
/// the flags line joined by a tab).
fn groups(out: &str) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut lines = out.lines().peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() || line.starts_with("changed answers") {
            continue;
        }
        if line.starts_with("policy diff:") || line.starts_with("note:") {
            break;
        }
        if let Some(change) = line.strip_prefix("  ") {
            let flags = lines.next().unwrap().trim();
            let group = groups.last_mut().unwrap();
            group.1.push(format!("{change}\t{flags}"));
        } else {
            groups.push((line.to_owned(), Vec::new()));
        }
    }
    groups
}

/// Runs `policy diff OLD NEW`, which must report changes (exit status 1): its output and groups.
fn changed(old: &Path, new: &Path) -> (String, Vec<(String, Vec<String>)>) {
    let (code, out, err) = diff(old, new);
    assert_eq!(code, 1, "{out}{err}");
    let groups = groups(&out);
    (out, groups)
}

/// The change lines of the group `header`, which must be there.
fn group<'a>(groups: &'a [(String, Vec<String>)], header: &str, out: &str) -> &'a [String] {
    groups
        .iter()
        .find(|(h, _)| h == header)
        .map(|(_, changes)| changes.as_slice())
        .unwrap_or_else(|| panic!("no `{header}` group: {out}"))
}

/// The value of `--NAME` in a change's flags, unquoted (the first, if repeated).
fn flag<'a>(change: &'a str, name: &str) -> Option<&'a str> {
    let flags = change.split('\t').nth(1)?;
    flags.split(" --").find_map(|f| {
        f.trim_start_matches("--")
            .strip_prefix(name)?
            .strip_prefix(' ')
            .map(|v| v.trim_matches('\''))
    })
}

/// Runs `mcp-authz policy explain --policies DIR FLAGS` through a shell, as a reviewer pastes
/// the flags, and returns the decision line.
fn explain(dir: &Path, flags: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("\"$0\" policy explain --policies \"$1\" {flags}"))
        .arg(BIN)
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .find(|l| l.starts_with("decision: "))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "no decision: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

#[test]
fn identical_sets_change_nothing() {
    let old = policies(|_| {});
    let new = policies(|_| {});
    let (code, out, err) = diff(old.path(), new.path());
    assert_eq!(code, 0, "{out}{err}");
    let summary = out.lines().last().unwrap();
    assert!(summary.ends_with(", 0 changed"), "{out}");
    // Every shipped case, and a request space far larger than the cases.
    let evaluated: usize = summary
        .strip_prefix("policy diff: ")
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(evaluated > 1000, "{summary}");
    assert!(!out.contains('\u{2192}'), "{out}");
}

#[test]
fn removing_the_break_glass_forbid_allows_the_dangerous_tool() {
    let old = policies(|_| {});
    let new = policies(|d| {
        replace(
            d,
            "guards.cedar",
            "@id(\"dangerous-needs-break-glass\")\nforbid (principal, action in Mcp::Action::\"tools/call\", resource in Mcp::ToolSet::\"dangerous\")\nunless { principal in Mcp::Group::\"break-glass\" };",
            "",
        );
    });
    let (out, groups) = changed(old.path(), new.path());
    let changes = group(&groups, "dangerous-tools", &out);
    // The shipped case, reported by name, and requests of the space alike.
    assert!(
        changes
            .iter()
            .any(|c| c.contains("case `dangerous tool refused even with its scope`")),
        "{changes:#?}"
    );
    let space: Vec<&String> = changes
        .iter()
        .filter(|c| {
            c.starts_with("deny \u{2192} allow")
                && c.contains("--tool delete_everything")
                && flag(c, "scope").is_some_and(|s| s.split(' ').any(|s| s == "mcp:tools:admin"))
                && flag(c, "group").is_none()
                && !c.contains("case `")
        })
        .collect();
    assert!(!space.is_empty(), "{changes:#?}");
    // Every change in the group is a denied dangerous call that is now allowed, or challenged
    // for its scope.
    for c in changes {
        assert!(
            c.starts_with("deny \u{2192} allow")
                || c.starts_with("deny \u{2192} step-up [mcp:tools:admin]"),
            "{c}"
        );
        assert!(c.contains("--tool delete_everything"), "{c}");
    }
    // Only that: nothing else changed.
    assert_eq!(groups.len(), 1, "{out}");
    // The flags paste into `policy explain`: denied by the old set, allowed by the new one.
    let flags = space[0].split('\t').nth(1).unwrap();
    assert_eq!(explain(old.path(), flags), "decision: DENY", "{flags}");
    assert_eq!(explain(new.path(), flags), "decision: ALLOW", "{flags}");
    let summary = out.lines().last().unwrap();
    assert!(
        summary.ends_with(&format!(", {} changed", changes.len())),
        "{summary}"
    );
}

#[test]
fn a_permit_asking_another_scope_changes_the_step_up_challenge() {
    let old = policies(|_| {});
    let new = policies(|d| {
        replace(
            d,
            "tools.cedar",
            "when { context.scopes.contains(\"mcp:tools:admin\") };",
            "when { context.scopes.contains(\"mcp:tools:files\") };",
        );
    });
    let (out, groups) = changed(old.path(), new.path());
    let changes = group(&groups, "dangerous-tools", &out);
    // A break-glass caller with the baseline scope only: challenged for another scope.
    let moved = changes
        .iter()
        .find(|c| {
            c.starts_with("step-up [mcp:tools:admin] \u{2192} step-up [mcp:tools:files]")
                && flag(c, "group") == Some("break-glass")
        })
        .unwrap_or_else(|| panic!("{changes:#?}"));
    let flags = moved.split('\t').nth(1).unwrap();
    assert_eq!(explain(old.path(), flags), "decision: DENY");
    // With the admin scope and not the files one: allowed before, challenged now.
    assert!(
        changes.iter().any(
            |c| c.starts_with("allow \u{2192} step-up [mcp:tools:files]")
                && c.contains("--group break-glass")
        ),
        "{changes:#?}"
    );
}

#[test]
fn a_tool_added_to_a_tool_set_is_reported() {
    let old = policies(|_| {});
    let new = policies(|d| {
        replace(
            d,
            "entities.json",
            "  { \"uid\": { \"type\": \"Mcp::Tool\", \"id\": \"demo/get_alerts\" },",
            "  { \"uid\": { \"type\": \"Mcp::Tool\", \"id\": \"demo/get_radar\" }, \"attrs\": {},\n    \"parents\": [ { \"type\": \"Mcp::ToolSet\", \"id\": \"weather\" } ] },\n  { \"uid\": { \"type\": \"Mcp::Tool\", \"id\": \"demo/get_alerts\" },",
        );
    });
    let (out, groups) = changed(old.path(), new.path());
    let changes = group(&groups, "weather-tools", &out);
    // A tool in no set was callable by nobody; now the weather scope calls it, and a caller
    // without it is challenged for it.
    assert!(
        changes.iter().any(|c| c.starts_with("deny \u{2192} allow")),
        "{changes:#?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("deny \u{2192} step-up [mcp:tools:weather]")),
        "{changes:#?}"
    );
    for c in changes {
        assert!(c.contains("--tool get_radar"), "{c}");
    }
    assert_eq!(groups.len(), 1, "{out}");
}

#[test]
fn json_output_carries_both_answers() {
    let old = policies(|_| {});
    let new = policies(|d| {
        replace(
            d,
            "guards.cedar",
            "forbid (principal, action in Mcp::Action::\"tools/call\", resource in Mcp::ToolSet::\"dangerous\")",
            "forbid (principal, action in Mcp::Action::\"tools/call\", resource in Mcp::ToolSet::\"weather\")",
        );
    });
    let (code, out, err) = run(&[
        "policy",
        "diff",
        old.path().to_str().unwrap(),
        new.path().to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let changes = v["changes"].as_array().unwrap();
    assert!(!changes.is_empty());
    assert_eq!(v["truncated"], false);
    // A weather call allowed before is now denied by the moved forbid.
    let c = changes
        .iter()
        .find(|c| {
            c["old"]["decision"] == "allow"
                && c["new"]["decision"] == "deny"
                && c["request"]["tool"] == "get_forecast"
        })
        .unwrap();
    assert_eq!(c["new"]["determining"][0], "dangerous-needs-break-glass");
    assert_eq!(c["old"]["determining"][0], "weather-tools");
    assert_eq!(c["policies"][0], "dangerous-needs-break-glass");
    assert_eq!(c["request"]["method"], "tools/call");
}

#[test]
fn a_limit_truncates_the_request_space_and_says_so() {
    let old = policies(|_| {});
    let (code, out, err) = run(&[
        "policy",
        "diff",
        old.path().to_str().unwrap(),
        old.path().to_str().unwrap(),
        "--limit",
        "5",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("requests; only the first 5 were evaluated (--limit)"),
        "{out}"
    );
    assert!(
        out.contains(", 5 from the request space), 0 changed"),
        "{out}"
    );
}

#[test]
fn unloadable_directories_and_bad_cases_exit_2() {
    let good = policies(|_| {});
    let missing = good.path().join("missing");
    let (code, _, err) = diff(good.path(), &missing);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing"), "{err}");
    let broken = policies(|d| replace(d, "tools.cedar", "permit (", "permit ((("));
    let (code, _, err) = diff(broken.path(), good.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tools.cedar"), "{err}");
    let bad_cases =
        policies(|d| std::fs::write(d.join("tests.yaml"), "cases: [{name: x}]\n").unwrap());
    let (code, _, err) = diff(good.path(), bad_cases.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tests.yaml"), "{err}");
}

// === coverage in `policy test` ===

#[test]
fn shipped_policies_are_all_determining_in_some_case() {
    let dir = policies(|_| {});
    let (code, out, err) = run(&["policy", "test", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("\ncoverage: 10/10 policies determining in some case\n"),
        "{out}"
    );
    let (code, out, _) = run(&[
        "policy",
        "test",
        dir.path().to_str().unwrap(),
        "--min-coverage",
        "100",
    ]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_dead_policy_is_never_determining_and_fails_min_coverage() {
    let dir = policies(|d| {
        std::fs::write(
            d.join("dead.cedar"),
            "@id(\"dead-permit\")\npermit (principal, action in Mcp::Action::\"tools/call\", resource in Mcp::ToolSet::\"weather\")\nwhen { context.scopes.contains(\"mcp:tools:never\") };\n",
        )
        .unwrap();
    });
    let path = dir.path().to_str().unwrap();
    let (code, out, err) = run(&["policy", "test", path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
    assert!(
        out.contains(
            "\ncoverage: 10/11 policies determining in some case; never determining: dead-permit\n"
        ),
        "{out}"
    );
    let (code, out, _) = run(&["policy", "test", path, "--min-coverage", "100"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("coverage 90.9% is below --min-coverage 100"),
        "{out}"
    );
    let (code, out, _) = run(&["policy", "test", path, "--min-coverage", "90"]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = run(&["policy", "test", path, "--min-coverage", "101"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a percentage from 0 to 100"), "{err}");
}

#[test]
fn failing_cases_still_exit_1_with_coverage_reported() {
    let dir = policies(|d| {
        replace(
            d,
            "tests.yaml",
            "  - name: initialize with mcp:connect\n    method: initialize\n    expect: allow",
            "  - name: initialize with mcp:connect\n    method: initialize\n    expect: deny",
        );
    });
    let (code, out, _) = run(&["policy", "test", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL initialize with mcp:connect"), "{out}");
    assert!(out.contains("\ncoverage: "), "{out}");
}
