//! Putting a request's messages to one policy set: the live set (whose [`Verdict`] becomes the
//! answer) or a shadow set (whose verdict is only compared). The same code for both, so a
//! shadow set is evaluated exactly as it would decide once promoted.

use crate::config::StepUpScope;
use crate::mcp::{McpRequest, Target};
use crate::policy::{self, EvalRequest, PolicyBundle, PolicyDecision, arguments::ArgumentError};

use super::{Caller, Decisions};

/// What a server contributes to a decision, beside the caller and the messages.
pub(super) struct Evaluation<'a> {
    pub server_id: &'a str,
    pub tenant: &'a str,
    pub scopes_supported: &'a [String],
    pub step_up: StepUpScope,
    pub protocol_version: &'a str,
    pub session_id: &'a str,
}

/// What a policy set made of a whole request.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Every message allowed; the permits that did, in order, deduplicated.
    Allowed { policies: Vec<String> },
    /// A JSON-RPC method mcp-authz does not know.
    UnknownMethod,
    /// A declared tool's arguments do not fit its declaration (400).
    InvalidArguments {
        action: &'static str,
        error: ArgumentError,
    },
    /// The request cannot be expressed in the set's schema.
    CannotEvaluate { action: &'static str, error: String },
    /// A policy failed to evaluate (it may have been a forbid).
    Errored {
        action: &'static str,
        errors: Vec<String>,
    },
    /// A message no scope can fix; the forbids that denied it (empty: no permit applied).
    Denied {
        action: &'static str,
        policies: Vec<String>,
    },
    /// Every denied message can be fixed by scopes: those missing, and those the challenge
    /// would name (by `servers[].step_up`).
    StepUp {
        missing: Vec<String>,
        needed: Vec<String>,
    },
}

impl Verdict {
    /// The label of `mcp_authz_shadow_decisions_total`'s `live` and `shadow`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Allowed { .. } => "allow",
            Verdict::UnknownMethod | Verdict::Denied { .. } => "deny",
            Verdict::StepUp { .. } => "step_up",
            Verdict::CannotEvaluate { .. } | Verdict::Errored { .. } => "error",
            Verdict::InvalidArguments { .. } => "invalid",
        }
    }

    /// What determined it: the permits of an allow, the forbids of a deny, the missing scopes
    /// of a step-up, the failing policies of an error.
    pub fn determining(&self) -> Vec<String> {
        match self {
            Verdict::Allowed { policies } | Verdict::Denied { policies, .. } => policies.clone(),
            Verdict::StepUp { missing, .. } => {
                missing.iter().map(|s| format!("scope:{s}")).collect()
            }
            Verdict::Errored { errors, .. } => errors.clone(),
            Verdict::CannotEvaluate { error, .. } => vec![error.clone()],
            Verdict::InvalidArguments { error, .. } => vec![error.to_string()],
            Verdict::UnknownMethod => vec![],
        }
    }
}

/// A request's messages as the policies see them: (action, target) each, and whether they came
/// as a batch. An unknown method has no action.
pub(super) fn messages(request: &McpRequest) -> (bool, Vec<(Option<&'static str>, &Target)>) {
    static SERVER: Target = Target::Server;
    match request {
        McpRequest::Messages { batch, messages } => (
            *batch,
            messages.iter().map(|m| (m.action, &m.target)).collect(),
        ),
        McpRequest::OpenStream => (false, vec![(Some("GET"), &SERVER)]),
        McpRequest::EndSession => (false, vec![(Some("DELETE"), &SERVER)]),
    }
}

/// Every message must be allowed. A deny that scopes can fix is a step-up (for a batch, what
/// its denied messages need, together); any other deny, or an error, decides the whole request
/// at once. `observe` sees each message's decision as it is made.
pub(super) fn evaluate(
    bundle: &PolicyBundle,
    decisions: &Decisions,
    eval: &Evaluation<'_>,
    caller: &Caller,
    batch: bool,
    messages: &[(Option<&'static str>, &Target)],
    mut observe: impl FnMut(&'static str, &Target, &PolicyDecision),
) -> Verdict {
    let identity = caller.identity();
    let mut principal = None;
    let mut allowed_by: Vec<String> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    let mut needed: Vec<String> = Vec::new();
    for &(action, target) in messages {
        let Some(action) = action else {
            return Verdict::UnknownMethod;
        };
        let req = EvalRequest {
            identity,
            server_id: eval.server_id,
            server_tenant: eval.tenant,
            action,
            target,
            protocol_version: eval.protocol_version,
            session_id: eval.session_id,
            batch,
        };
        // The Cedar principal is built on the first miss of the request and reused by its
        // other messages (a batch); a decision cache hit needs none.
        let decided = decisions.get_or_decide(bundle, &req, caller, || {
            let p = match principal.take() {
                Some(p) => p,
                None => bundle.principal(identity)?,
            };
            let decided = bundle.decide_as(&req, &p, eval.scopes_supported, eval.step_up);
            principal = Some(p);
            decided
        });
        let decision = match decided {
            Ok(d) => d,
            Err(policy::BuildError::Arguments(error)) => {
                return Verdict::InvalidArguments { action, error };
            }
            Err(e) => {
                return Verdict::CannotEvaluate {
                    action,
                    error: e.to_string(),
                };
            }
        };
        observe(action, target, &decision);
        if !decision.errors.is_empty() {
            return Verdict::Errored {
                action,
                errors: decision.errors.clone(),
            };
        }
        if decision.allowed {
            for p in &decision.determining {
                if !allowed_by.contains(p) {
                    allowed_by.push(p.clone());
                }
            }
            continue;
        }
        match (&decision.missing_scopes, &decision.challenge_scopes) {
            (Some(scopes), Some(challenge)) => {
                for s in scopes {
                    if !missing.contains(s) {
                        missing.push(s.clone());
                    }
                }
                for s in challenge {
                    if !needed.contains(s) {
                        needed.push(s.clone());
                    }
                }
            }
            _ => {
                return Verdict::Denied {
                    action,
                    policies: decision.determining.clone(),
                };
            }
        }
    }
    if missing.is_empty() {
        Verdict::Allowed {
            policies: allowed_by,
        }
    } else {
        Verdict::StepUp { missing, needed }
    }
}
