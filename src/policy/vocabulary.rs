//! The load-time proof that the schema accepts every request mcp-authz builds: each method of
//! the vocabulary, and each tool declared as an action of its own with arguments of its declared
//! shape, is built strictly (checked against the schema) once, so no request can fail on a shape
//! at check time (see `PolicyBundle::prepare`).

use std::path::Path;

use serde_json::Value;

use super::PolicyBundle;
use super::load::{LoadError, file_error};

/// The schema may grow, but it must still accept every request mcp-authz builds: checked by
/// building one for each action and target kind.
pub(super) fn check(bundle: &PolicyBundle, schema: &Path) -> Result<(), LoadError> {
    use crate::mcp::Target;
    let identity = crate::identity::Identity {
        issuer: "https://issuer.invalid".into(),
        subject: "probe".into(),
        tenant: Some("t".into()),
        client_id: Some("c".into()),
        scopes: vec!["s".into()],
        groups: vec!["g".into()],
        expires_at: 0,
        claims: serde_json::Map::from_iter([("k".to_owned(), Value::from("v"))]).into(),
    };
    let tool = Target::Tool {
        name: "t".into(),
        arguments: serde_json::Map::from_iter([("a".to_owned(), Value::from(1))]),
    };
    let prompt = Target::Prompt { name: "p".into() };
    let resource = Target::Resource {
        uri: "file:///r".into(),
    };
    let task = Target::Task { id: "task".into() };
    let mut probes: Vec<(&str, &Target)> = crate::mcp::KNOWN_METHODS
        .iter()
        .map(|m| {
            let target = match *m {
                "tools/call" => &tool,
                "prompts/get" | "completion/complete" => &prompt,
                "resources/read" | "resources/subscribe" | "resources/unsubscribe" => &resource,
                "tasks/get" | "tasks/result" | "tasks/cancel" => &task,
                _ => &Target::Server,
            };
            (*m, target)
        })
        .collect();
    probes.extend([
        ("completion/complete", &resource),
        ("response", &Target::Server),
        ("GET", &Target::Server),
        ("DELETE", &Target::Server),
    ]);
    for (action, target) in probes {
        let req = super::EvalRequest {
            identity: &identity,
            server_id: "probe",
            server_tenant: "t",
            action,
            target,
            protocol_version: "2025-11-25",
            session_id: "s",
            batch: false,
        };
        bundle.decide_strict(&req).map_err(|e| {
            file_error(
                schema,
                format!("the schema does not accept the mcp-authz vocabulary for `{action}`: {e}"),
            )
        })?;
    }
    // Every declared tool, with arguments of its declared shape: the schema must accept the
    // context mcp-authz builds for it (the base fields plus `arguments`).
    let declared: Vec<(String, Target)> = bundle
        .tools
        .iter()
        .filter_map(|(id, tool)| {
            let (server, name) = id.split_once('/')?;
            Some((
                server.to_owned(),
                Target::Tool {
                    name: name.to_owned(),
                    arguments: super::arguments::sample(&tool.arguments),
                },
            ))
        })
        .collect();
    for (server, target) in &declared {
        let req = super::EvalRequest {
            identity: &identity,
            server_id: server,
            server_tenant: "t",
            action: "tools/call",
            target,
            protocol_version: "2025-11-25",
            session_id: "s",
            batch: false,
        };
        bundle.decide_strict(&req).map_err(|e| {
            let name = target.name().unwrap_or_default();
            file_error(
                schema,
                format!("the schema's declaration of tool `{server}/{name}` does not fit the request mcp-authz builds for it: {e}"),
            )
        })?;
    }
    Ok(())
}
