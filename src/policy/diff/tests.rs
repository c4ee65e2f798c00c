//! The request space of `policy diff` on the shipped policies: what it is made of, its size,
//! its bound, and a tool only one set declares.

use std::collections::HashSet;
use std::path::PathBuf;

use super::*;
use crate::policy::load_dir;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn shipped_cases() -> CaseFile {
    cases::read_cases(&shipped().join(cases::CASES_FILE)).unwrap()
}

fn space_of(p: &Probe) -> bool {
    p.case.is_none()
}

#[test]
fn the_shipped_space_is_the_product_of_its_parts() {
    let b = load_dir(&shipped()).unwrap();
    let f = shipped_cases();
    // The same file twice (as when both sets keep the same tests.yaml): each case once.
    let space = request_space(&[&b, &b], &[&f, &f], DEFAULT_LIMIT);
    assert_eq!(space.cases, f.cases.len());
    assert!(
        space
            .probes
            .iter()
            .take(space.cases)
            .all(|p| p.case.is_some())
    );
    assert!(space.probes.iter().skip(space.cases).all(space_of));
    assert!(space.space_total <= DEFAULT_LIMIT);

    // Its factors, read back from the requests.
    let probes: Vec<&Resolved> = space
        .probes
        .iter()
        .filter(|p| space_of(p))
        .map(|p| &p.request)
        .collect();
    let mut shapes = HashSet::new();
    let mut callers = Vec::new();
    let mut scope_sets = Vec::new();
    for r in &probes {
        shapes.insert(format!(
            "{:?}",
            (
                &r.server,
                &r.method,
                &r.tool,
                &r.prompt,
                &r.resource,
                &r.task,
                &r.arguments
            )
        ));
        push_unique(
            &mut callers,
            Caller {
                scopes: Vec::new(),
                ..r.caller.clone()
            },
        );
        push_unique(&mut scope_sets, r.caller.scopes.clone());
    }
    // Test cases equal to a request of the space are evaluated once, as cases.
    let duplicates = space.space_total - probes.len();
    assert!(duplicates <= space.cases, "{duplicates}");
    assert_eq!(
        space.space_total,
        shapes.len() * callers.len() * scope_sets.len()
    );

    // Servers: the defaults' (demo, acme) and the cases' (other, globex).
    let sites: HashSet<(&str, &str)> = probes
        .iter()
        .map(|r| (r.server.id.as_str(), r.server.tenant.as_str()))
        .collect();
    assert_eq!(
        sites,
        HashSet::from([("demo", "acme"), ("other", "globex")])
    );
    // Session methods against both servers, with every method the schema applies to a server.
    for server in ["demo", "other"] {
        for method in [
            "initialize",
            "tools/list",
            "GET",
            "DELETE",
            "response",
            "ping",
        ] {
            assert!(
                probes
                    .iter()
                    .any(|r| r.server.id == server && r.method == method && r.tool.is_none()),
                "{server} {method}"
            );
        }
    }
    assert!(
        probes
            .iter()
            .any(|r| r.method == "tasks/get" && r.task.as_deref() == Some("task-1"))
    );
    // Every tool of entities.json on its server, and the cases' tools on theirs.
    for (server, tool) in b.declared_tools() {
        assert!(
            probes.iter().any(|r| r.method == "tools/call"
                && r.server.id == server
                && r.tool.as_deref() == Some(&tool)),
            "{server}/{tool}"
        );
    }
    assert!(
        probes
            .iter()
            .any(|r| r.server.id == "other" && r.tool.as_deref() == Some("get_forecast"))
    );
    assert!(
        probes
            .iter()
            .any(|r| r.tool.as_deref() == Some("unknown_tool"))
    );
    // A declared tool: its declaration's sample (every field) and the cases' arguments.
    let forecast: Vec<&Map<String, Value>> = probes
        .iter()
        .filter(|r| r.server.id == "demo" && r.tool.as_deref() == Some("get_forecast"))
        .map(|r| &r.arguments)
        .collect();
    let args = |v: Value| v.as_object().cloned().unwrap();
    assert!(forecast.contains(&&args(serde_json::json!({"city": "s", "days": 1}))));
    assert!(forecast.contains(&&args(serde_json::json!({"city": "Paris", "days": 100}))));
    // Not `{}`: the declaration requires `city`.
    assert!(!forecast.contains(&&Map::new()));
    // Prompts and resources of the cases, with every method that applies to them.
    for (method, prompt, resource) in [
        ("prompts/get", Some("summarize"), None),
        ("completion/complete", Some("summarize"), None),
        (
            "completion/complete",
            None,
            Some("file:///srv/shared/a.txt"),
        ),
        (
            "resources/subscribe",
            None,
            Some("file:///srv/shared/a.txt"),
        ),
    ] {
        assert!(
            probes.iter().any(|r| r.method == method
                && r.prompt.as_deref() == prompt
                && r.resource.as_deref() == resource),
            "{method}"
        );
    }
    // Callers: the cases' (another tenant, none) and one per group the policies name.
    let in_group = |g: &str| {
        callers
            .iter()
            .any(|c| c.groups == [g] && c.tenant.as_deref() == Some("acme"))
    };
    assert!(in_group("break-glass") && in_group("read-only"));
    assert!(
        callers
            .iter()
            .any(|c| c.tenant.as_deref() == Some("globex"))
    );
    assert!(callers.iter().any(|c| c.tenant.as_deref() == Some("")));
    // Scope sets: none, each single scope (openid comes from a case), a case's, all supported.
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    for want in [
        set(&[]),
        set(&["mcp:connect"]),
        set(&["mcp:tools:admin"]),
        set(&["openid"]),
        set(&["mcp:connect", "mcp:tools:files", "openid"]),
        set(&[
            "mcp:connect",
            "mcp:tools:admin",
            "mcp:tools:files",
            "mcp:tools:weather",
        ]),
    ] {
        assert!(scope_sets.contains(&want), "{want:?}");
    }
    // Not every subset of the five scopes (32), only those.
    assert!(scope_sets.len() < 16, "{scope_sets:?}");

    // Every request can be put to the policies.
    for p in &space.probes {
        let a = answer(&b, p);
        assert_ne!(a.verdict, Verdict::Error, "{p:?}: {:?}", a.errors);
    }
}

#[test]
fn the_limit_bounds_the_space_and_is_reported() {
    let b = load_dir(&shipped()).unwrap();
    let f = shipped_cases();
    let full = request_space(&[&b], &[&f], DEFAULT_LIMIT);
    let space = request_space(&[&b], &[&f], 7);
    assert_eq!(space.space_total, full.space_total);
    assert_eq!(space.cases, full.cases);
    let taken = space.probes.iter().filter(|p| space_of(p)).count();
    assert!(taken <= 7 && taken > 0, "{taken}");
    let d = diff(&b, &b, &space);
    assert!(d.truncated);
    assert_eq!(d.evaluated, space.probes.len());
    assert!(d.changes.is_empty());
    assert!(!diff(&b, &b, &full).truncated);
    // No limit at all: the cases alone.
    let none = request_space(&[&b], &[&f], 0);
    assert_eq!(none.probes.len(), none.cases);
}

#[test]
fn a_tool_only_the_new_set_declares_is_evaluated_by_both() {
    let old = load_dir(&shipped()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    crate::testutil::copy_shipped_policies(dir.path());
    let entities = dir.path().join("entities.json");
    let text = std::fs::read_to_string(&entities).unwrap().replacen(
        "[",
        "[\n  { \"uid\": { \"type\": \"Mcp::Tool\", \"id\": \"demo/get_radar\" }, \"attrs\": {}, \"parents\": [ { \"type\": \"Mcp::ToolSet\", \"id\": \"weather\" } ] },",
        1,
    );
    std::fs::write(&entities, text).unwrap();
    let new = load_dir(dir.path()).unwrap();
    let f = shipped_cases();
    let space = request_space(&[&old, &new], &[&f], DEFAULT_LIMIT);
    let old_space = request_space(&[&old], &[&f], DEFAULT_LIMIT);
    assert!(space.space_total > old_space.space_total);
    let d = diff(&old, &new, &space);
    assert!(!d.changes.is_empty());
    for c in &d.changes {
        assert_eq!(c.probe.request.tool.as_deref(), Some("get_radar"), "{c:?}");
        assert_eq!(c.policies, ["weather-tools"]);
    }
    let caller_with = |c: &Change, s: &str| c.probe.request.caller.scopes.iter().any(|x| x == s);
    assert!(d.changes.iter().any(|c| c.new.verdict == Verdict::Allow
        && c.old.verdict == Verdict::Deny
        && caller_with(c, "mcp:tools:weather")));
    assert!(d.changes.iter().any(|c| c.old.verdict == Verdict::Deny
        && c.new.verdict
            == Verdict::StepUp {
                challenge: vec!["mcp:tools:weather".into()]
            }));
}
