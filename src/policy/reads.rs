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

use std::collections::HashMap;

use cedar_policy::PolicySet;
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
            match policy.to_json() {
                Ok(json) => reads.walk(&json),
                Err(_) => return Reads::ALL,
            }
        }
        reads
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
/// `PolicyBundle::by_action`), and for the whole set (an action the schema does not declare).
#[derive(Debug, Default)]
pub struct ReadsByAction {
    by_action: HashMap<String, Reads>,
    all: Reads,
}

impl ReadsByAction {
    pub fn new<'a>(
        all: &PolicySet,
        by_action: impl Iterator<Item = (&'a cedar_policy::EntityUid, &'a PolicySet)>,
    ) -> Self {
        Self {
            by_action: by_action
                .map(|(uid, set)| (uid.id().unescaped().to_owned(), Reads::of_set(set)))
                .collect(),
            all: Reads::of_set(all),
        }
    }

    /// What the policies evaluated for the action `id` read.
    pub fn get(&self, id: &str) -> Reads {
        self.by_action.get(id).copied().unwrap_or(self.all)
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
        let reads = match req.target {
            // A call to a declared tool is evaluated as the tool's own action.
            Target::Tool { name, .. } if req.action == "tools/call" => {
                let declared = format!("tools/call/{}/{name}", req.server_id);
                let id = declared.strip_prefix("tools/call/").unwrap_or_default();
                if self.tools.contains_key(id) {
                    self.reads.get(&declared)
                } else {
                    self.reads.get(req.action)
                }
            }
            _ => self.reads.get(req.action),
        };
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
}
