//! Policy layer tests: the shipped policies against their own case table, load errors with
//! positions, the vocabulary check, and hot reload (good edit, broken edit, half-written file,
//! Kubernetes-style symlink swap).

use std::path::{Path, PathBuf};

use super::cases;
use super::watch::Reload;
use super::*;
use crate::metrics::Metrics;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// A copy of the shipped policies in a temporary directory.
fn copy_shipped() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    crate::testutil::copy_shipped_policies(dir.path());
    dir
}

fn load_err(dir: &Path) -> String {
    match load_dir(dir) {
        Ok(_) => panic!("expected a load error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn shipped_policies_pass_their_own_cases() {
    let bundle = load_dir(&shipped()).unwrap();
    assert!(bundle.warnings.is_empty(), "{:?}", bundle.warnings);
    let file = cases::read_cases(&shipped().join(cases::CASES_FILE)).unwrap();
    assert!(file.cases.len() >= 25);
    let report = cases::run(&bundle, &file).unwrap();
    assert!(report.failed.is_empty(), "{:#?}", report.failed);
    assert_eq!(report.passed, file.cases.len());
}

#[test]
fn a_wrong_expectation_is_reported_not_passed() {
    let bundle = load_dir(&shipped()).unwrap();
    let file: cases::CaseFile = serde_yaml_ng::from_str(
        r#"
defaults: {server: {id: demo, tenant: acme, scopes_supported: [mcp:connect, mcp:tools:weather]},
           principal: {tenant: acme, scopes: [mcp:connect]}}
cases:
  - {name: wrong, method: tools/call, tool: get_forecast, arguments: {city: Paris}, expect: allow}
  - {name: wrong scope, method: tools/call, tool: get_forecast, arguments: {city: Paris}, expect: deny, challenge_scope: mcp:connect}
  - {name: "wrong scope, granted too", server: {step_up: {scope: granted_and_operation}},
     method: tools/call, tool: get_forecast, arguments: {city: Paris}, expect: deny, challenge_scope: mcp:connect}
"#,
    )
    .unwrap();
    let report = cases::run(&bundle, &file).unwrap();
    assert_eq!(report.passed, 0);
    assert_eq!(report.failed.len(), 3);
    // What the operation needs: the weather scope, not the unrelated mcp:connect.
    assert!(
        report.failed[1]
            .1
            .contains("challenge scope `mcp:tools:weather`,"),
        "{:?}",
        report.failed
    );
    assert!(
        report.failed[2].1.contains("mcp:connect mcp:tools:weather"),
        "{:?}",
        report.failed
    );
}

#[test]
fn parse_errors_name_file_line_and_column() {
    let dir = copy_shipped();
    std::fs::write(
        dir.path().join("broken.cedar"),
        "@id(\"x\")\npermit (principal, action, resource)\nwhen { context.scopes.contains( };\n",
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("broken.cedar:3:"), "{e}");
}

#[test]
fn missing_and_duplicate_ids_are_load_errors() {
    let dir = copy_shipped();
    std::fs::write(
        dir.path().join("noid.cedar"),
        "// a comment\npermit (principal, action == Mcp::Action::\"ping\", resource);\n",
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("noid.cedar:2:1") && e.contains("@id"), "{e}");

    let dir = copy_shipped();
    std::fs::write(
        dir.path().join("dup.cedar"),
        "@id(\"tenant-isolation\")\npermit (principal, action == Mcp::Action::\"ping\", resource);\n",
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("tenant-isolation") && e.contains("twice"), "{e}");
}

#[test]
fn schema_violations_fail_strict_validation() {
    let dir = copy_shipped();
    std::fs::write(
        dir.path().join("bad.cedar"),
        "@id(\"bad\")\npermit (principal, action == Mcp::Action::\"tools/call\", resource)\nwhen { resource.no_such_attribute == 1 };\n",
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("bad.cedar:3:") && e.contains("policy `bad`"),
        "{e}"
    );
}

#[test]
fn a_schema_without_the_vocabulary_is_refused() {
    let dir = copy_shipped();
    let schema = std::fs::read_to_string(dir.path().join("schema.cedarschema")).unwrap();
    std::fs::write(
        dir.path().join("schema.cedarschema"),
        schema.replace("    client_id: String,   // \"\" when absent\n", ""),
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("schema.cedarschema") && e.contains("vocabulary"),
        "{e}"
    );
}

#[test]
fn bad_entities_are_load_errors() {
    let dir = copy_shipped();
    std::fs::write(
        dir.path().join("entities.json"),
        r#"[{"uid": {"type": "Mcp::Tool", "id": "demo/x"}, "attrs": {"tenant": "evil"}, "parents": []}]"#,
    )
    .unwrap();
    assert!(load_err(dir.path()).contains("tenant"));
    std::fs::write(dir.path().join("entities.json"), "[{").unwrap();
    assert!(load_err(dir.path()).contains("entities.json:1:"));
    std::fs::write(
        dir.path().join("entities.json"),
        r#"[{"uid": {"type": "Mcp::Tool", "id": "demo/x"}, "attrs": {"read_only": "yes"}, "parents": []}]"#,
    )
    .unwrap();
    assert!(load_err(dir.path()).contains("demo/x"));
}

#[test]
fn entities_that_would_collide_or_be_overridden_are_refused() {
    let dir = copy_shipped();
    std::fs::write(
        dir.path().join("entities.json"),
        r#"[{"uid": {"type": "Mcp::User", "id": "alice"}, "attrs": {"tenant": "acme", "client_id": "", "issuer": ""}, "parents": []}]"#,
    )
    .unwrap();
    assert!(load_err(dir.path()).contains("built by mcp-authz"));
    std::fs::write(
        dir.path().join("entities.json"),
        r#"[{"uid": {"type": "Mcp::Tool", "id": "demo/x"}, "attrs": {}, "parents": [], "tags": {"classification": "secret"}}]"#,
    )
    .unwrap();
    assert!(load_err(dir.path()).contains("tags"));
    std::fs::write(dir.path().join("extra.cedar"), "  \n").unwrap();
    std::fs::write(dir.path().join("entities.json"), "[]").unwrap();
    assert!(load_err(dir.path()).contains("empty"));
}

#[test]
fn missing_id_is_located_in_order() {
    let dir = copy_shipped();
    std::fs::write(
        dir.path().join("two.cedar"),
        "@id(\"a\")\npermit (principal, action == Mcp::Action::\"ping\", resource);\n\npermit (principal, action == Mcp::Action::\"ping\", resource);\n",
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("two.cedar:4:1"), "{e}");
}

#[test]
fn step_up_tries_single_scopes_when_another_scope_would_forbid() {
    let dir = copy_shipped();
    std::fs::write(
        dir.path().join("readonly-scope.cedar"),
        "@id(\"readonly-scope\")\nforbid (principal, action in Mcp::Action::\"tools/call\", resource)\nwhen { context.scopes.contains(\"mcp:readonly\") };\n",
    )
    .unwrap();
    let bundle = load_dir(dir.path()).unwrap();
    let file: cases::CaseFile = serde_yaml_ng::from_str(
        r#"
defaults: {server: {id: demo, tenant: acme, scopes_supported: [mcp:connect, mcp:readonly, mcp:tools:weather]},
           principal: {tenant: acme, scopes: [mcp:connect]}}
cases:
  - {name: single scope found, method: tools/call, tool: get_forecast, arguments: {city: Paris}, expect: deny, challenge_scope: mcp:tools:weather}
  - {name: "single scope found, granted kept", server: {step_up: {scope: granted_and_operation}},
     method: tools/call, tool: get_forecast, arguments: {city: Paris}, expect: deny, challenge_scope: mcp:connect mcp:tools:weather}
"#,
    )
    .unwrap();
    let report = cases::run(&bundle, &file).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
}

#[test]
fn a_challenge_that_would_not_help_is_not_issued() {
    let dir = copy_shipped();
    // Needs a scope the server does not advertise: no challenge names it.
    std::fs::write(
        dir.path().join("legacy.cedar"),
        "@id(\"legacy\")\npermit (principal, action == Mcp::Action::\"tools/call\", resource == Mcp::Tool::\"demo/legacy\")\nwhen { context.scopes.contains(\"legacy:read\") && context.scopes.contains(\"mcp:tools:weather\") };\n",
    )
    .unwrap();
    let bundle = load_dir(dir.path()).unwrap();
    let file: cases::CaseFile = serde_yaml_ng::from_str(
        r#"
defaults: {server: {id: demo, tenant: acme, scopes_supported: [mcp:connect, mcp:tools:weather]},
           principal: {tenant: acme, scopes: [mcp:connect, legacy:read]}}
cases:
  # A client that replaces its scopes with the challenge's would drop legacy:read: a dead end.
  - {name: dead end avoided, server: {step_up: {scope: granted_and_operation}},
     method: tools/call, tool: legacy, expect: deny, challenge_scope: ""}
  # A client that adds the challenge's scopes to its own keeps legacy:read: the challenge helps.
  - {name: accumulating client keeps the unadvertised scope, method: tools/call, tool: legacy,
     expect: deny, challenge_scope: mcp:tools:weather}
"#,
    )
    .unwrap();
    let report = cases::run(&bundle, &file).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
}

/// A tool that needs two scopes, one of which the caller already has.
fn two_scope_tool() -> tempfile::TempDir {
    let dir = copy_shipped();
    std::fs::write(
        dir.path().join("reports.cedar"),
        "@id(\"reports\")\npermit (principal, action == Mcp::Action::\"tools/call\", resource == Mcp::Tool::\"demo/report\")\nwhen { context.scopes.contains(\"mcp:connect\") && context.scopes.contains(\"mcp:tools:reports\") };\n",
    )
    .unwrap();
    dir
}

#[test]
fn operation_challenges_name_granted_scopes_the_allow_depends_on_and_no_others() {
    let dir = two_scope_tool();
    let bundle = load_dir(dir.path()).unwrap();
    let file: cases::CaseFile = serde_yaml_ng::from_str(
        r#"
defaults: {server: {id: demo, tenant: acme,
                    scopes_supported: [mcp:connect, mcp:tools:weather, mcp:tools:reports]},
           principal: {tenant: acme, scopes: [openid, mcp:tools:weather, mcp:connect]}}
cases:
  # mcp:connect is granted but needed, so named (RFC 6750 s3.1); mcp:tools:weather is granted
  # and unrelated, openid is not the server's: neither is named.
  - {name: needed granted scope named, method: tools/call, tool: report, expect: deny,
     challenge_scope: mcp:connect mcp:tools:reports}
  - {name: every granted scope the server knows, server: {step_up: {scope: granted_and_operation}},
     method: tools/call, tool: report, expect: deny,
     challenge_scope: mcp:connect mcp:tools:weather mcp:tools:reports}
  # Without the granted dependency, both rules name it as missing.
  - {name: both missing, principal: {scopes: [mcp:tools:weather]}, method: tools/call,
     tool: report, expect: deny, challenge_scope: mcp:connect mcp:tools:reports}
  - {name: "both missing, granted too", principal: {scopes: [mcp:tools:weather]},
     server: {step_up: {scope: granted_and_operation}}, method: tools/call, tool: report,
     expect: deny, challenge_scope: mcp:connect mcp:tools:weather mcp:tools:reports}
"#,
    )
    .unwrap();
    let report = cases::run(&bundle, &file).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
}

#[test]
fn a_decision_carries_the_missing_scopes_and_the_challenge() {
    let dir = two_scope_tool();
    let bundle = load_dir(dir.path()).unwrap();
    let identity = crate::testutil::identity("s", "acme", &["mcp:connect", "mcp:tools:weather"]);
    let target = crate::mcp::Target::Tool {
        name: "report".into(),
        arguments: serde_json::Map::new(),
    };
    let supported: Vec<String> = ["mcp:tools:reports", "mcp:tools:weather", "mcp:connect"]
        .map(String::from)
        .to_vec();
    let decide = |rule: StepUpScope| {
        bundle
            .decide(&tool_call(&identity, &target), &supported, rule)
            .unwrap()
    };
    let words = |s: &[&str]| Some(s.iter().map(|w| w.to_string()).collect::<Vec<_>>());
    let d = decide(StepUpScope::Operation);
    assert!(!d.allowed);
    assert_eq!(d.missing_scopes, words(&["mcp:tools:reports"]));
    // In `scopes_supported` order, whatever the token's order.
    assert_eq!(
        d.challenge_scopes,
        words(&["mcp:tools:reports", "mcp:connect"])
    );
    let d = decide(StepUpScope::GrantedAndOperation);
    assert_eq!(d.missing_scopes, words(&["mcp:tools:reports"]));
    assert_eq!(
        d.challenge_scopes,
        words(&["mcp:tools:reports", "mcp:tools:weather", "mcp:connect"])
    );
}

#[test]
fn challenge_scopes_follow_scopes_supported_order() {
    let words = |s: &[&str]| s.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    assert_eq!(
        challenge_scopes(
            &words(&["a", "b", "c", "d"]),
            &words(&["d", "openid", "b", "d"])
        ),
        words(&["b", "d"])
    );
}

#[test]
fn a_directory_without_schema_or_policies_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_err(dir.path()).contains("schema.cedarschema"));
    std::fs::copy(
        shipped().join("schema.cedarschema"),
        dir.path().join("schema.cedarschema"),
    )
    .unwrap();
    assert!(load_err(dir.path()).contains("*.cedar"));
}

#[test]
fn tool_arguments_and_claims_are_tags() {
    let bundle = load_dir(&shipped()).unwrap();
    let identity = crate::testutil::identity("s", "acme", &["mcp:connect", "mcp:tools:files"]);
    let target = |path: serde_json::Value| crate::mcp::Target::Tool {
        name: "read_file".into(),
        arguments: serde_json::Map::from_iter([("path".to_owned(), path)]),
    };
    let decide = |t: &crate::mcp::Target| {
        bundle
            .decide(
                &EvalRequest {
                    identity: &identity,
                    server_id: "demo",
                    server_tenant: "acme",
                    action: "tools/call",
                    target: t,
                    protocol_version: "",
                    session_id: "",
                    batch: false,
                },
                &[],
                StepUpScope::default(),
            )
            .unwrap()
    };
    assert!(decide(&target(serde_json::json!("/srv/shared/x"))).allowed);
    let d = decide(&target(serde_json::json!("/etc/shadow")));
    assert!(!d.allowed);
    assert_eq!(d.determining, vec!["file-path-guard".to_string()]);
    assert!(d.errors.is_empty());
}

#[test]
fn reload_swaps_only_good_sets() {
    let dir = copy_shipped();
    let store = PolicyStore::open(dir.path(), Metrics::unregistered()).unwrap();
    let first = store.load().hash.clone();
    assert!(matches!(store.reload_if_changed(), Reload::Unchanged));

    // A good edit takes effect.
    std::fs::write(
        dir.path().join("extra.cedar"),
        "@id(\"ping-for-all\")\npermit (principal, action == Mcp::Action::\"ping\", resource);\n",
    )
    .unwrap();
    assert!(matches!(store.reload_if_changed(), Reload::Loaded { .. }));
    let second = store.load();
    assert_ne!(second.hash, first);
    assert!(second.policy_ids.contains(&"ping-for-all".to_string()));

    // A schema violation: the last good set stays.
    std::fs::write(
        dir.path().join("violation.cedar"),
        "@id(\"v\")\npermit (principal, action == Mcp::Action::\"tools/call\", resource)\nwhen { resource.owner == principal };\n",
    )
    .unwrap();
    assert!(matches!(
        store.reload_if_changed(),
        Reload::Failed(LoadError::At { .. })
    ));
    assert_eq!(store.load().hash, second.hash);
    std::fs::remove_file(dir.path().join("violation.cedar")).unwrap();

    // A half-written file: the last good set stays.
    std::fs::write(
        dir.path().join("extra.cedar"),
        "@id(\"ping-for-all\")\npermit (princ",
    )
    .unwrap();
    assert!(matches!(store.reload_if_changed(), Reload::Failed(_)));
    assert_eq!(store.load().hash, second.hash);

    // Completing the file is picked up.
    std::fs::write(
        dir.path().join("extra.cedar"),
        "@id(\"ping-for-all\")\npermit (principal, action == Mcp::Action::\"ping\", resource);\n// done\n",
    )
    .unwrap();
    assert!(matches!(store.reload_if_changed(), Reload::Loaded { .. }));
}

/// Kubernetes mounts a ConfigMap as `dir/<file> -> ..data/<file>`, `..data -> ..<timestamp>`,
/// and updates it by pointing `..data` at a new timestamped directory.
#[test]
fn a_configmap_symlink_swap_is_picked_up() {
    let root = tempfile::tempdir().unwrap();
    let v1 = root.path().join("..2026_11_23_v1");
    let v2 = root.path().join("..2026_11_23_v2");
    std::fs::create_dir(&v1).unwrap();
    for entry in std::fs::read_dir(shipped()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), v1.join(entry.file_name())).unwrap();
    }
    std::os::unix::fs::symlink("..2026_11_23_v1", root.path().join("..data")).unwrap();
    for name in [
        "schema.cedarschema",
        "session.cedar",
        "tools.cedar",
        "guards.cedar",
        "entities.json",
    ] {
        std::os::unix::fs::symlink(format!("..data/{name}"), root.path().join(name)).unwrap();
    }
    let store = PolicyStore::open(root.path(), Metrics::unregistered()).unwrap();
    let before = store.load().hash.clone();

    // New version: tools.cedar gains a policy. Swap ..data atomically (rename over).
    std::fs::create_dir(&v2).unwrap();
    for entry in std::fs::read_dir(&v1).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), v2.join(entry.file_name())).unwrap();
    }
    let mut tools = std::fs::read_to_string(v2.join("tools.cedar")).unwrap();
    tools.push_str(
        "\n@id(\"swapped-in\")\npermit (principal, action == Mcp::Action::\"ping\", resource);\n",
    );
    std::fs::write(v2.join("tools.cedar"), tools).unwrap();
    std::os::unix::fs::symlink("..2026_11_23_v2", root.path().join("..data_tmp")).unwrap();
    std::fs::rename(root.path().join("..data_tmp"), root.path().join("..data")).unwrap();

    assert!(matches!(store.reload_if_changed(), Reload::Loaded { .. }));
    let after = store.load();
    assert_ne!(after.hash, before);
    assert!(after.policy_ids.contains(&"swapped-in".to_string()));
}

#[test]
fn an_erroring_forbid_denies_instead_of_being_skipped() {
    let dir = copy_shipped();
    // Validates (the validator does not evaluate), errors at run time: integer overflow.
    std::fs::write(
        dir.path().join("overflow.cedar"),
        "@id(\"overflow\")\nforbid (principal, action == Mcp::Action::\"ping\", resource)\nwhen { 9223372036854775807 + 1 > 0 };\n",
    )
    .unwrap();
    let bundle = load_dir(dir.path()).unwrap();
    let identity = crate::testutil::identity("s", "acme", &["mcp:connect"]);
    let d = bundle
        .decide(
            &EvalRequest {
                identity: &identity,
                server_id: "demo",
                server_tenant: "acme",
                action: "ping",
                target: &crate::mcp::Target::Server,
                protocol_version: "",
                session_id: "",
                batch: false,
            },
            &["mcp:connect".to_string()],
            StepUpScope::default(),
        )
        .unwrap();
    // Cedar alone would allow (the erroring forbid is skipped); mcp-authz denies.
    assert!(!d.allowed);
    assert!(d.errors[0].starts_with("overflow: "), "{:?}", d.errors);
    assert_eq!(d.missing_scopes, None);
}

#[test]
fn each_action_is_evaluated_against_the_policies_its_scope_can_match() {
    let bundle = load_dir(&shipped()).unwrap();
    let ids = |action: &str| -> Vec<String> {
        let uid = EntityUid::from_type_name_and_id(
            EntityTypeName::from_str("Mcp::Action").unwrap(),
            EntityId::new(action),
        );
        let mut ids: Vec<String> = bundle.by_action[&uid]
            .policies()
            .map(|p| p.id().to_string())
            .collect();
        ids.sort();
        ids
    };
    // `ping` is in the `session` group: the group's permit and the unscoped forbid.
    assert_eq!(ids("ping"), ["session-baseline", "tenant-isolation"]);
    assert_eq!(
        ids("tools/call"),
        [
            "dangerous-needs-break-glass",
            "dangerous-tools",
            "file-path-guard",
            "file-tools",
            "read-only-group",
            "tenant-isolation",
            "weather-tools",
        ]
    );
    assert_eq!(
        ids("completion/complete"),
        ["prompts-and-resources", "tenant-isolation"]
    );
    // Every schema action has its subset.
    assert_eq!(bundle.by_action.len(), bundle.actions.len());
}

#[test]
fn action_equal_to_tools_call_is_a_warning_because_it_misses_declared_tools() {
    let dir = copy_shipped();
    std::fs::write(
        dir.path().join("old.cedar"),
        "@id(\"old-style\")\npermit (principal, action == Mcp::Action::\"tools/call\", resource);\n",
    )
    .unwrap();
    let bundle = load_dir(dir.path()).unwrap();
    let warning = bundle
        .warnings
        .iter()
        .find(|w| w.contains("old-style"))
        .unwrap_or_else(|| panic!("no warning: {:?}", bundle.warnings));
    assert!(warning.contains("old.cedar"), "{warning}");
    assert!(
        warning.contains("action in Mcp::Action::\"tools/call\""),
        "{warning}"
    );
    // And it is right: the old-style permit allows an undeclared tool, not a declared one.
    let identity = crate::testutil::identity("alice", "acme", &[]);
    let decide = |name: &str, arguments: serde_json::Value| {
        let target = crate::mcp::Target::Tool {
            name: name.into(),
            arguments: arguments.as_object().unwrap().clone(),
        };
        let req = tool_call(&identity, &target);
        bundle.decide(&req, &[], StepUpScope::Operation).unwrap()
    };
    let undeclared = decide("get_alerts", serde_json::json!({}));
    assert!(undeclared.allowed, "{undeclared:?}");
    assert_eq!(undeclared.determining, vec!["old-style".to_owned()]);
    let declared = decide("get_forecast", serde_json::json!({"city": "Paris"}));
    assert!(!declared.allowed, "{declared:?}");
}

#[test]
fn an_entity_that_exists_nowhere_is_a_warning() {
    let dir = copy_shipped();
    let tools = std::fs::read_to_string(dir.path().join("tools.cedar")).unwrap();
    std::fs::write(
        dir.path().join("tools.cedar"),
        tools.replace("Mcp::ToolSet::\"weather\")", "Mcp::ToolSet::\"weathr\")"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("extra.cedar"),
        "@id(\"in-list\")\nforbid (principal, action, resource)\nwhen { resource in [Mcp::ToolSet::\"dangerus\", Mcp::ToolSet::\"files\"] && principal in Mcp::Group::\"anyone\" };\n",
    )
    .unwrap();
    let bundle = load_dir(dir.path()).unwrap();
    let about = |needle: &str| {
        bundle
            .warnings
            .iter()
            .filter(|w| w.contains(needle))
            .count()
    };
    assert_eq!(about("\"weathr\""), 1, "{:?}", bundle.warnings);
    assert_eq!(about("\"dangerus\""), 1, "{:?}", bundle.warnings);
    // Known tool sets and per-request types (groups come from tokens) are not warned about.
    assert_eq!(about("\"files\""), 0, "{:?}", bundle.warnings);
    assert_eq!(about("Group"), 0, "{:?}", bundle.warnings);
    // The shipped set has none.
    assert!(load_dir(&shipped()).unwrap().warnings.is_empty());
}

/// A `tools/call` on server `demo` (tenant `acme`), no session headers, not batched.
fn tool_call<'a>(
    identity: &'a crate::identity::Identity,
    target: &'a crate::mcp::Target,
) -> EvalRequest<'a> {
    EvalRequest {
        identity,
        server_id: "demo",
        server_tenant: "acme",
        action: "tools/call",
        target,
        protocol_version: "",
        session_id: "",
        batch: false,
    }
}

#[test]
fn prepared_entities_match_fresh_ones() {
    // Two loads of the same files: one clones prebuilt entities, the other builds every one.
    let pre = load_dir(&shipped()).unwrap();
    let fresh = load_dir(&shipped()).unwrap();
    pre.prebuild(|| [("demo", "acme")]);
    let built = pre.prebuilt.get().unwrap();
    let tool = |name: &str| {
        EntityUid::from_type_name_and_id(
            pre.types.tool.clone(),
            EntityId::new(format!("demo/{name}")),
        )
    };
    // Every declared tool of the server is there, as `target_entity` builds it; only for the
    // tenant it was built with.
    for (server, name) in pre.declared_tools() {
        assert_eq!(server, "demo");
        let uid = tool(&name);
        let server_uid =
            EntityUid::from_type_name_and_id(pre.types.server.clone(), EntityId::new("demo"));
        let want = fresh
            .target_entity(
                &uid,
                ("demo", "acme"),
                ("name", &name),
                &server_uid,
                Vec::new(),
            )
            .unwrap();
        assert_eq!(built.target("demo", "acme", &uid), Some(&want), "{name}");
        assert!(built.target("demo", "other", &uid).is_none());
    }
    assert!(built.target("demo", "acme", &tool("undeclared")).is_none());
    assert!(built.server("demo", "acme").is_some());
    assert!(built.server("other", "acme").is_none());

    // The same decisions over declared, undeclared and argument-reading targets, both tenants.
    let supported: Vec<String> = ["mcp:connect", "mcp:tools:weather", "mcp:tools:files"]
        .map(String::from)
        .to_vec();
    let mut compared = 0;
    for tenant in ["acme", "other"] {
        for scopes in [
            &["mcp:connect"][..],
            &["mcp:connect", "mcp:tools:weather", "mcp:tools:files"],
        ] {
            let identity = crate::testutil::identity("s", tenant, scopes);
            for name in [
                "get_forecast",
                "read_file",
                "write_file",
                "delete_everything",
                "nope",
            ] {
                let arguments = match name {
                    "get_forecast" => serde_json::json!({"city": "Paris"}),
                    "write_file" => serde_json::json!({"path": "/etc/passwd", "content": ""}),
                    "delete_everything" => serde_json::json!({}),
                    _ => serde_json::json!({"path": "/etc/passwd"}),
                };
                let serde_json::Value::Object(arguments) = arguments else {
                    unreachable!()
                };
                let target = crate::mcp::Target::Tool {
                    name: name.into(),
                    arguments,
                };
                for server_tenant in ["acme", "other"] {
                    let req = EvalRequest {
                        server_tenant,
                        ..tool_call(&identity, &target)
                    };
                    let rule = StepUpScope::Operation;
                    let a = pre.decide(&req, &supported, rule).unwrap();
                    let b = fresh.decide(&req, &supported, rule).unwrap();
                    assert_eq!(a, b, "{tenant} {scopes:?} {name} {server_tenant}");
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 40);
}

#[test]
fn listing_answers_as_a_decision_would() {
    // With a forbid that more scopes trigger, so the single-scope search is exercised too.
    let dir = copy_shipped();
    std::fs::write(
        dir.path().join("readonly-scope.cedar"),
        "@id(\"readonly-scope\")\nforbid (principal, action in Mcp::Action::\"tools/call\", resource in Mcp::ToolSet::\"files\")\nwhen { context.scopes.contains(\"mcp:readonly\") };\n",
    )
    .unwrap();
    for path in [shipped(), dir.path().to_owned()] {
        let bundle = load_dir(&path).unwrap();
        let supported: Vec<String> = [
            "mcp:connect",
            "mcp:readonly",
            "mcp:tools:weather",
            "mcp:tools:files",
            "mcp:tools:admin",
        ]
        .map(String::from)
        .to_vec();
        let mut seen = [0usize; 3];
        for tenant in ["acme", "globex"] {
            for groups in [&[][..], &["break-glass"], &["read-only"]] {
                for scopes in [
                    &[][..],
                    &["mcp:connect"],
                    &["mcp:connect", "mcp:readonly"],
                    &["mcp:connect", "mcp:tools:weather", "mcp:tools:files"],
                ] {
                    let mut identity = crate::testutil::identity("s", tenant, scopes);
                    identity.groups = groups.iter().map(|g| g.to_string()).collect();
                    let principal = bundle.principal(&identity).unwrap();
                    let targets = [
                        (
                            "tools/call",
                            crate::mcp::Target::Tool {
                                name: "get_alerts".into(),
                                arguments: Default::default(),
                            },
                        ),
                        (
                            "tools/call",
                            crate::mcp::Target::Tool {
                                name: "write_file".into(),
                                arguments:
                                    serde_json::json!({"path": "/srv/shared/a", "content": ""})
                                        .as_object()
                                        .unwrap()
                                        .clone(),
                            },
                        ),
                        (
                            "tools/call",
                            crate::mcp::Target::Tool {
                                name: "delete_everything".into(),
                                arguments: Default::default(),
                            },
                        ),
                        (
                            "prompts/get",
                            crate::mcp::Target::Prompt { name: "p".into() },
                        ),
                        (
                            "resources/read",
                            crate::mcp::Target::Resource {
                                uri: "file:///a".into(),
                            },
                        ),
                    ];
                    for (action, target) in &targets {
                        let req = EvalRequest {
                            action,
                            ..tool_call(&identity, target)
                        };
                        let d = bundle
                            .decide(&req, &supported, StepUpScope::Operation)
                            .unwrap();
                        let l = bundle
                            .decide_listing(&req, &principal, &supported, false)
                            .unwrap();
                        let want = if d.allowed {
                            Listing::Allowed
                        } else if d.missing_scopes.is_some() {
                            Listing::StepUp
                        } else {
                            Listing::Denied
                        };
                        assert_eq!(
                            l, want,
                            "{tenant} {groups:?} {scopes:?} {action} {target:?}"
                        );
                        seen[match want {
                            Listing::Allowed => 0,
                            Listing::StepUp => 1,
                            _ => 2,
                        }] += 1;
                    }
                }
            }
        }
        // Every answer came up.
        assert!(seen.iter().all(|n| *n > 0), "{seen:?}");
    }
}
