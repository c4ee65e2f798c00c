//! What the policies of a set can read of a request, found at load time from each policy's JSON
//! form (Cedar's EST). The decision cache keys on exactly this: a part of the request that no
//! policy evaluated for the action reads cannot change the decision, so it stays out of the key
//! (a session id would otherwise make every session miss), and a part that some policy reads is
//! always in it.
//!
//! The reading is conservative: anything the walk cannot attribute to a single named `context`
//! attribute (`context` used whole, a policy without a JSON form) counts as reading every part,
//! and tags read from anything other than `principal` count as reading the target's tags (the
//! tool's arguments).

use std::collections::{HashMap, HashSet};

use cedar_policy::{EntityUid, Policy, PolicySet, ResourceConstraint};
use serde_json::Value;

use super::EvalRequest;
use crate::mcp::Target;

/// The request parts outside the principal, action, resource and scopes that policies read.
/// The principal, the scopes, the server, the tenant, the action and the target's name are in
/// every cache key whatever the policies read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    pub protocol_version: bool,
    pub session_id: bool,
    pub task_id: bool,
    /// `context.arguments` (a declared tool's typed arguments).
    pub arguments: bool,
    /// `hasTag`/`getTag` on something other than `principal`: the tool entity's argument tags.
    pub target_tags: bool,
}

impl Reads {
    /// Reads everything: the answer when a policy cannot be analysed.
    pub const ALL: Reads = Reads {
        protocol_version: true,
        session_id: true,
        task_id: true,
        arguments: true,
        target_tags: true,
    };

    /// What the policies of `set` read together.
    pub fn of_set(set: &PolicySet) -> Reads {
        let mut reads = Reads::default();
        for policy in set.policies() {
            reads.add(Reads::of_policy(policy));
        }
        reads
    }

    /// What one policy reads (everything, when it has no JSON form to walk).
    pub fn of_policy(policy: &Policy) -> Reads {
        let mut reads = Reads::default();
        match policy.to_json() {
            Ok(json) => reads.walk(&json),
            Err(_) => return Reads::ALL,
        }
        reads
    }

    /// `other`'s reads added to these.
    fn add(&mut self, other: Reads) {
        self.protocol_version |= other.protocol_version;
        self.session_id |= other.session_id;
        self.task_id |= other.task_id;
        self.arguments |= other.arguments;
        self.target_tags |= other.target_tags;
    }

    /// Whether a tool's arguments can change a decision: read as typed `context.arguments` or
    /// as the tool entity's tags.
    pub fn any_arguments(&self) -> bool {
        self.arguments || self.target_tags
    }

    fn context_attr(&mut self, attr: &str) {
        match attr {
            "protocol_version" => self.protocol_version = true,
            "session_id" => self.session_id = true,
            "task_id" => self.task_id = true,
            "arguments" => self.arguments = true,
            // `client_id`, `batch` and `scopes` are always in the key; any other attribute
            // is not in the vocabulary (reading it errors, which is deterministic).
            _ => {}
        }
    }

    fn walk(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                // `context.attr`, `context has attr` (4.x: `attr` may be a path; its first
                // element is the context attribute).
                for op in [".", "has"] {
                    if let Some(Value::Object(inner)) = map.get(op)
                        && is_var(inner.get("left"), "context")
                    {
                        match inner.get("attr") {
                            Some(Value::String(a)) => self.context_attr(a),
                            Some(Value::Array(path)) => match path.first() {
                                Some(Value::String(a)) => self.context_attr(a),
                                _ => *self = Reads::ALL,
                            },
                            _ => *self = Reads::ALL,
                        }
                        return;
                    }
                }
                for op in ["getTag", "hasTag"] {
                    if let Some(Value::Object(inner)) = map.get(op)
                        && !is_var(inner.get("left"), "principal")
                    {
                        self.target_tags = true;
                    }
                }
                if map.len() == 1 && map.get("Var").and_then(Value::as_str) == Some("context") {
                    // `context` used whole (compared, passed to a function): all of it counts.
                    *self = Reads::ALL;
                    return;
                }
                map.values().for_each(|v| self.walk(v));
            }
            Value::Array(items) => items.iter().for_each(|v| self.walk(v)),
            _ => {}
        }
    }
}

fn is_var(value: Option<&Value>, name: &str) -> bool {
    value
        .and_then(Value::as_object)
        .is_some_and(|m| m.len() == 1 && m.get("Var").and_then(Value::as_str) == Some(name))
}

/// [`Reads`] per action id (the policies that can apply to each action, see
/// `PolicyBundle::by_action`), refined per target, and for the whole set (an action the schema
/// does not declare).
#[derive(Debug, Default)]
pub struct ReadsByAction {
    by_action: HashMap<String, ActionReads>,
    all: ActionReads,
}

/// What the policies of one action read, per target. Cedar checks a policy's resource scope
/// before its conditions, so a policy whose scope cannot match a target (`resource in
/// Mcp::ToolSet::"files"` for a weather tool) reads nothing of a request for it: a path guard
/// on the file tools leaves the weather tools' arguments out of their keys.
#[derive(Debug, Default, Clone)]
pub struct ActionReads {
    /// For every target not in `named`: the policies whose resource scope is unconstrained
    /// (or a type test), plus those scoped to a server (conservatively, to any server).
    default: Reads,
    /// Targets some policy's resource scope can single out, by server id, then kind (tool,
    /// prompt, resource), then name or URI; only where they read more than `default`.
    named: HashMap<String, [HashMap<String, Reads>; 3]>,
}

/// The targets with an identity of their own for the policies: the tools, prompts and
/// resources of `entities.json` (with their ancestors) and any a policy's scope names.
pub type Targets = HashMap<EntityUid, HashSet<EntityUid>>;

impl ActionReads {
    fn new(set: &PolicySet, targets: &Targets, types: &super::Types) -> Self {
        let mut default = Reads::default();
        // (scope entity, `==` rather than `in`, what the policy reads)
        let mut scoped: Vec<(EntityUid, bool, Reads)> = Vec::new();
        for policy in set.policies() {
            let reads = Reads::of_policy(policy);
            match policy.resource_constraint() {
                ResourceConstraint::Any | ResourceConstraint::Is(_) => default.add(reads),
                ResourceConstraint::Eq(uid) if *uid.type_name() == types.server => {
                    default.add(reads)
                }
                ResourceConstraint::In(uid) | ResourceConstraint::IsIn(_, uid)
                    if *uid.type_name() == types.server =>
                {
                    default.add(reads)
                }
                ResourceConstraint::Eq(uid) => scoped.push((uid, true, reads)),
                ResourceConstraint::In(uid) | ResourceConstraint::IsIn(_, uid) => {
                    scoped.push((uid, false, reads))
                }
            }
        }
        let mut named: HashMap<String, [HashMap<String, Reads>; 3]> = HashMap::new();
        for (target, ancestors) in targets {
            let mut reads = default;
            for (uid, eq, r) in &scoped {
                if uid == target || (!eq && ancestors.contains(uid)) {
                    reads.add(*r);
                }
            }
            if reads == default {
                continue;
            }
            let ty = target.type_name();
            let kind = if *ty == types.tool {
                0
            } else if *ty == types.prompt {
                1
            } else if *ty == types.resource {
                2
            } else {
                continue;
            };
            // Request targets are `<server id>/<name>`, and server ids have no `/`; an id
            // without one can never be a request's target.
            let Some((server, name)) = target.id().unescaped().split_once('/') else {
                continue;
            };
            if let Some(by_kind) = named.entry(server.to_owned()).or_default().get_mut(kind) {
                by_kind.insert(name.to_owned(), reads);
            }
        }
        Self { default, named }
    }

    /// What the policies read of a request for `target` on server `server_id`.
    pub fn target(&self, server_id: &str, target: &Target) -> Reads {
        let (kind, name) = match target {
            Target::Tool { name, .. } => (0, name.as_str()),
            Target::Prompt { name } => (1, name.as_str()),
            Target::Resource { uri } => (2, uri.as_str()),
            Target::Server | Target::Task { .. } => return self.default,
        };
        if self.named.is_empty() {
            return self.default;
        }
        if server_id.contains('/') {
            // Not a configurable server id (see above): the split could not be trusted.
            return Reads::ALL;
        }
        self.named
            .get(server_id)
            .and_then(|kinds| kinds.get(kind))
            .and_then(|names| names.get(name))
            .copied()
            .unwrap_or(self.default)
    }
}

impl ReadsByAction {
    /// `tools` are the tools declared as actions of their own, by `<server>/<tool>`: a
    /// `tools/call` to one is evaluated as that action, so its reads are that action's.
    pub fn new<'a>(
        all: &PolicySet,
        by_action: impl Iterator<Item = (&'a EntityUid, &'a PolicySet)>,
        targets: &Targets,
        tools: &HashMap<String, super::arguments::DeclaredTool>,
        types: &super::Types,
    ) -> Self {
        let mut by_action: HashMap<String, ActionReads> = by_action
            .map(|(uid, set)| {
                (
                    uid.id().unescaped().to_owned(),
                    ActionReads::new(set, targets, types),
                )
            })
            .collect();
        let all = ActionReads::new(all, targets, types);
        let mut typed = Vec::new();
        for (id, declared) in tools {
            let Some((server, tool)) = id.split_once('/') else {
                continue;
            };
            let action = declared.action.id().unescaped().to_owned();
            let target = Target::Tool {
                name: tool.to_owned(),
                arguments: serde_json::Map::new(),
            };
            let reads = by_action
                .get(&action)
                .map_or(Reads::ALL, |a| a.target(server, &target));
            typed.push((server.to_owned(), tool.to_owned(), reads));
        }
        if !typed.is_empty() {
            let call = by_action
                .entry("tools/call".to_owned())
                .or_insert_with(|| all.clone());
            for (server, tool, reads) in typed {
                if let Some(tools) = call.named.entry(server).or_default().get_mut(0) {
                    tools.insert(tool, reads);
                }
            }
        }
        Self { by_action, all }
    }

    /// What the policies evaluated for the action `id` read, per target.
    pub fn get(&self, id: &str) -> &ActionReads {
        self.by_action.get(id).unwrap_or(&self.all)
    }
}

impl super::PolicyBundle {
    /// The decision cache's key for `req` by the caller whose token hashes to `caller`: every
    /// input of [`decide_as`](super::PolicyBundle::decide_as) that a policy of this set
    /// evaluated for the request's action can read (see [`Reads`]), and nothing else. Each
    /// field is length-prefixed (or of fixed size), so two different requests never encode
    /// alike. `scopes_supported` and the step-up rule are the server's configuration, fixed for
    /// the process and named by the server id.
    pub fn decision_key(&self, req: &EvalRequest<'_>, caller: &[u8; 32], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(caller);
        field(out, req.server_id);
        field(out, req.server_tenant);
        field(out, req.action);
        out.push(u8::from(req.batch));
        let (kind, name) = match req.target {
            Target::Server => (0, ""),
            Target::Tool { name, .. } => (1, name.as_str()),
            Target::Prompt { name } => (2, name.as_str()),
            Target::Resource { uri } => (3, uri.as_str()),
            Target::Task { .. } => (4, ""),
        };
        out.push(kind);
        field(out, name);
        // A call to a declared tool is evaluated as the tool's own action; its reads are folded
        // into `tools/call`'s for that tool.
        let reads = self.reads.get(req.action).target(req.server_id, req.target);
        if reads.protocol_version {
            field(out, req.protocol_version);
        }
        if reads.session_id {
            field(out, req.session_id);
        }
        if let Target::Task { id } = req.target
            && reads.task_id
        {
            field(out, id);
        }
        // Last, so it needs no length: the arguments' JSON text. Different arguments never
        // encode alike; the same members in another order do not either (the map keeps the
        // request's order), which costs a miss, never a wrong hit.
        if let Target::Tool { arguments, .. } = req.target
            && reads.any_arguments()
        {
            out.push(1);
            // Writing into a `Vec` cannot fail; a failure would only make the key shorter and
            // the entry unshared, never a wrong hit, because of the marker byte and the fixed
            // layout before it.
            let _ = serde_json::to_writer(&mut *out, arguments);
        }
    }
}

fn field(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(src: &str) -> Reads {
        Reads::of_set(&src.parse::<PolicySet>().unwrap())
    }

    #[test]
    fn named_context_attributes_are_found() {
        let r = reads(
            r#"permit(principal, action, resource) when { context.session_id == "x" };
               permit(principal, action, resource) when { context has arguments && context.arguments.a == 1 };"#,
        );
        assert_eq!(
            r,
            Reads {
                session_id: true,
                arguments: true,
                ..Reads::default()
            }
        );
        assert!(r.any_arguments());
    }

    #[test]
    fn a_has_test_on_an_attribute_path_reads_its_first_context_attribute() {
        // Cedar 4 writes `context has a.b` as one `has` over the path `["a", "b"]`.
        let r = reads(
            r#"permit(principal, action, resource) when { context has arguments.path };
               permit(principal, action, resource) when { context has session_id.x.y };"#,
        );
        assert_eq!(
            r,
            Reads {
                arguments: true,
                session_id: true,
                ..Reads::default()
            }
        );
    }

    #[test]
    fn scopes_client_id_and_principal_tags_read_nothing_extra() {
        let r = reads(
            r#"permit(principal, action, resource) when {
                 context.scopes.contains("a") && context.client_id == "c" && context.batch == false &&
                 principal.hasTag("x") && principal.getTag("x") == "y" && resource.tenant == "t" };"#,
        );
        assert_eq!(r, Reads::default());
        assert!(!r.any_arguments());
    }

    #[test]
    fn tags_of_anything_but_the_principal_are_the_target_tags() {
        for cond in [
            r#"resource.hasTag("path")"#,
            r#"resource.getTag("path") == "/x""#,
            r#"(if context.batch then principal else resource).hasTag("p")"#,
        ] {
            let r = reads(&format!(
                "permit(principal, action, resource) when {{ {cond} }};"
            ));
            assert!(r.target_tags, "{cond}");
            assert!(r.any_arguments(), "{cond}");
        }
    }

    #[test]
    fn context_used_whole_reads_everything() {
        for cond in [
            r#"context == {"a": 1}"#,
            r#"[context].contains(context)"#,
            r#"(if true then context else context).session_id == "s""#,
        ] {
            let r = reads(&format!(
                "permit(principal, action, resource) when {{ {cond} }};"
            ));
            assert_eq!(r, Reads::ALL, "{cond}");
        }
    }

    #[test]
    fn protocol_version_and_task_id_in_unless_clauses_and_forbids() {
        let r = reads(
            r#"forbid(principal, action, resource) unless { context.protocol_version like "2025-*" };
               forbid(principal, action, resource) when { context has task_id };"#,
        );
        assert!(r.protocol_version && r.task_id);
        assert!(!r.session_id && !r.arguments && !r.target_tags);
    }

    /// The shipped policies plus `extra.cedar`, loaded.
    fn bundle(extra: &str) -> crate::policy::PolicyBundle {
        let dir = tempfile::tempdir().unwrap();
        crate::testutil::copy_shipped_policies(dir.path());
        std::fs::write(dir.path().join("extra.cedar"), extra).unwrap();
        crate::policy::load_dir(dir.path()).unwrap()
    }

    fn tool(name: &str) -> Target {
        Target::Tool {
            name: name.to_owned(),
            arguments: serde_json::Map::new(),
        }
    }

    #[test]
    fn a_policy_scoped_to_other_targets_reads_nothing_of_this_one() {
        let b = bundle(
            r#"@id("dangerous-session")
               forbid (principal, action in Mcp::Action::"tools/call", resource in Mcp::ToolSet::"dangerous")
               when { context.session_id == "s" };
               @id("one-prompt")
               forbid (principal, action == Mcp::Action::"prompts/get", resource == Mcp::Prompt::"teams/plan")
               when { context.protocol_version == "v" };
               @id("one-server")
               forbid (principal, action == Mcp::Action::"resources/read", resource in Mcp::Server::"teams")
               when { context.session_id == "s" };"#,
        );
        let call = b.reads.get("tools/call");
        // The shipped `file-path-guard` reads the arguments of the file tools only.
        let file = call.target("demo", &tool("read_file"));
        assert!(file.arguments && !file.session_id);
        let weather = call.target("demo", &tool("get_alerts"));
        assert_eq!(weather, Reads::default());
        // A tool nobody declared: only the unscoped policies.
        assert_eq!(call.target("demo", &tool("nope")), Reads::default());
        // The same name on another server is another target.
        assert_eq!(call.target("teams", &tool("read_file")), Reads::default());
        // `delete_everything` is in the `dangerous` tool set: the session id counts for it.
        let dangerous = call.target("demo", &tool("delete_everything"));
        assert!(dangerous.session_id && !dangerous.arguments);
        // `get_forecast` is an action of its own: its policy reads the typed arguments.
        assert!(call.target("demo", &tool("get_forecast")).arguments);
        // `==` on a target nobody declared in entities.json.
        let prompts = b.reads.get("prompts/get");
        let plan = |server: &str, name: &str| {
            prompts.target(
                server,
                &Target::Prompt {
                    name: name.to_owned(),
                },
            )
        };
        assert!(plan("teams", "plan").protocol_version);
        assert!(!plan("demo", "plan").protocol_version);
        assert!(!plan("teams", "summary").protocol_version);
        // Scoped to a server: conservatively, read for every target of the action.
        let read = b.reads.get("resources/read");
        let uri = Target::Resource {
            uri: "file:///a".to_owned(),
        };
        assert!(read.target("demo", &uri).session_id);
        assert!(read.target("teams", &Target::Server).session_id);
    }

    #[test]
    fn the_key_leaves_out_what_no_policy_for_the_target_reads() {
        let b = bundle("@id(\"noop\") permit (principal, action, resource) when { false };");
        let key = |server: &str, name: &str, args: serde_json::Value| {
            let identity = crate::testutil::identity("alice", "acme", &["mcp:connect"]);
            let target = Target::Tool {
                name: name.to_owned(),
                arguments: args.as_object().unwrap().clone(),
            };
            let mut out = Vec::new();
            b.decision_key(
                &EvalRequest {
                    identity: &identity,
                    server_id: server,
                    server_tenant: "acme",
                    action: "tools/call",
                    target: &target,
                    protocol_version: "p",
                    session_id: "s",
                    batch: false,
                },
                &[7; 32],
                &mut out,
            );
            out
        };
        let a = serde_json::json!({"path": "/srv/shared/a"});
        let c = serde_json::json!({"path": "/etc/passwd"});
        assert_ne!(
            key("demo", "read_file", a.clone()),
            key("demo", "read_file", c.clone())
        );
        assert_eq!(
            key("demo", "get_alerts", a.clone()),
            key("demo", "get_alerts", c.clone())
        );
        assert_ne!(
            key("demo", "get_alerts", a.clone()),
            key("teams", "get_alerts", a.clone())
        );
        // A server id that cannot be configured reads everything rather than risk a split.
        assert_ne!(key("de/mo", "x", a), key("de/mo", "x", c));
    }
}
