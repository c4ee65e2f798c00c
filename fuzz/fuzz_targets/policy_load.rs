//! Policy-directory loading (schema, `entities.json`, policy files) on arbitrary text. Input:
//! files separated by a line `%%`: the schema, then `entities.json`, then policy files (seeds
//! are the shipped directory in that form, so the fuzzer mutates real policies). Invariants:
//! no panic; deciding within the time budget (loading within a looser one); loading is deterministic (the same files give the same
//! hash, policy ids and declared tools); a set that loads answers a request without panicking.
#![no_main]

#[path = "common/budget.rs"]
mod budget;

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mcp_authz::mcp::Target;
use mcp_authz::policy::{EvalRequest, Files, load_files};

const LOAD_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

fn files(text: &str) -> Option<Files> {
    let mut parts = text.split("\n%%\n");
    let mut texts = vec![
        ("schema.cedarschema".to_owned(), parts.next()?.to_owned()),
        ("entities.json".to_owned(), parts.next()?.to_owned()),
    ];
    for (i, p) in parts.enumerate() {
        texts.push((format!("p{i:02}.cedar"), p.to_owned()));
    }
    texts.sort();
    Files::from_texts(Path::new("/fuzz/policies"), texts).ok()
}

fuzz_target!(|text: &str| {
    let Some(first) = files(text) else { return };
    let hash = first.hash.clone();
    // Loading runs at startup and on reload, not per request: its budget only catches
    // super-linear blowups (the shipped set takes a few ms in a release build, about 0.2 s
    // under the address sanitizer).
    let loaded = budget::within("loading", LOAD_BUDGET, || {
        files(text).and_then(|f| load_files(f).ok())
    });
    let Some(bundle) = loaded else { return };
    assert_eq!(bundle.hash, hash);
    let again = load_files(files(text).expect("the same files split the same way"))
        .expect("a set that loaded once loads again");
    assert_eq!(again.hash, hash);
    assert_eq!(again.policy_ids, bundle.policy_ids);
    assert_eq!(again.declared_tools(), bundle.declared_tools());

    // Every declared tool, called by a caller with every scope: an answer (or a typed error),
    // never a panic, within the budget.
    let identity = mcp_authz::testutil::identity(
        "fuzz-user",
        "acme",
        &["mcp:connect", "mcp:tools:weather", "mcp:tools:files"],
    );
    for (server, tool) in bundle.declared_tools() {
        let target = Target::Tool {
            name: tool,
            arguments: serde_json::Map::new(),
        };
        let request = EvalRequest {
            identity: &identity,
            server_id: &server,
            server_tenant: "acme",
            action: "tools/call",
            target: &target,
            protocol_version: "2025-11-25",
            session_id: "",
            batch: false,
        };
        let supported = ["mcp:connect".to_owned(), "mcp:tools:admin".to_owned()];
        let _ = budget::within_budget("deciding", || {
            bundle.decide(&request, &supported, Default::default())
        });
    }
});
