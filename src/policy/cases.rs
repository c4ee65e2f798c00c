//! Table-driven policy tests (`mcp-authz policy test`, with the policies' coverage) and one-off
//! evaluations (`mcp-authz policy explain`, and each request of `mcp-authz policy diff`): a
//! hypothetical caller, server and MCP message, evaluated with exactly the code the service
//! runs, including the step-up challenge scope.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{EvalRequest, PolicyBundle, PolicyDecision};
use crate::config::{StepUpConfig, StepUpScope};
use crate::identity::Identity;
use crate::mcp::Target;

/// The file kept beside the policies.
pub const CASES_FILE: &str = "tests.yaml";

/// The caller's issuer when a case names none.
pub const DEFAULT_ISSUER: &str = "https://issuer.example";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    #[serde(default)]
    pub defaults: Defaults,
    pub cases: Vec<Case>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub server: ServerSpec,
    #[serde(default)]
    pub principal: PrincipalSpec,
}

/// The protected server a case runs against.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    pub id: Option<String>,
    pub tenant: Option<String>,
    pub scopes_supported: Option<Vec<String>>,
    /// As `servers[].step_up` (default: challenges name what the operation needs).
    pub step_up: Option<StepUpConfig>,
}

/// The caller, as the token's mapped claims.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSpec {
    pub sub: Option<String>,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub issuer: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    /// Extra claims, reachable as `principal.getTag(...)`.
    pub claims: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub server: ServerSpec,
    #[serde(default)]
    pub principal: PrincipalSpec,
    /// A JSON-RPC method, `response`, `GET` or `DELETE`.
    pub method: String,
    pub tool: Option<String>,
    pub prompt: Option<String>,
    pub resource: Option<String>,
    pub task: Option<String>,
    #[serde(default)]
    pub arguments: Map<String, Value>,
    pub expect: Expect,
    /// The exact set of determining policy ids, when given.
    pub policies: Option<Vec<String>>,
    /// The `scope` of the 403 challenge, when given; `""` asserts a plain 403 (no step-up).
    pub challenge_scope: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Allow,
    Deny,
    /// The call is refused before any policy runs: its arguments do not fit the tool's declared
    /// types (a 400 with a JSON-RPC invalid-params error in a real check).
    Invalid,
}

/// The evaluation of one case.
#[derive(Debug)]
pub struct Outcome {
    pub decision: PolicyDecision,
    /// The `scope` attribute a 403 would carry (`None`: a plain 403, or an allow).
    pub challenge_scope: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("`{}`: {message}", path.display())]
    File {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("case `{case}`: {message}")]
    Case { case: String, message: String },
    /// The case's arguments do not fit the tool's declaration (what `expect: invalid` asserts).
    #[error("case `{case}`: {error}")]
    InvalidArguments {
        case: String,
        error: crate::policy::arguments::ArgumentError,
    },
}

/// Results of a case file.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    /// Case name and what differed.
    pub failed: Vec<(String, String)>,
    /// Every policy that was determining in some evaluated case, passed or failed: a satisfied
    /// permit of an allow, a satisfied forbid of a deny (see [`Report::coverage`]).
    pub determining: BTreeSet<String>,
}

/// Which policies the cases exercise: a policy that is determining in no case is a permit
/// that allowed nothing or a forbid that denied nothing, so no case would notice its removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// How many of the set's policies were determining in some case.
    pub determining: usize,
    pub total: usize,
    /// The ids of the others, in the set's order.
    pub never: Vec<String>,
}

// === impl Report ===

impl Report {
    /// The coverage of a policy set (its ids, as [`PolicyBundle::policy_ids`]) by these results.
    pub fn coverage(&self, policy_ids: &[String]) -> Coverage {
        let never: Vec<String> = policy_ids
            .iter()
            .filter(|id| !self.determining.contains(*id))
            .cloned()
            .collect();
        Coverage {
            determining: policy_ids.len() - never.len(),
            total: policy_ids.len(),
            never,
        }
    }
}

// === impl Coverage ===

impl Coverage {
    /// The share of policies determining in some case, in percent (100 for an empty set).
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            // Policy counts are far below 2^52: the conversion is exact.
            self.determining as f64 * 100.0 / self.total as f64
        }
    }
}

pub fn read_cases(path: &Path) -> Result<CaseFile, CaseError> {
    let err = |message: String| CaseError::File {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))
}

/// Runs every case; a case that cannot be evaluated is an error, a wrong answer a failure.
pub fn run(bundle: &PolicyBundle, file: &CaseFile) -> Result<Report, CaseError> {
    let mut report = Report::default();
    for case in &file.cases {
        let verdict = match evaluate(bundle, &file.defaults, case) {
            Ok(outcome) => {
                report
                    .determining
                    .extend(outcome.decision.determining.iter().cloned());
                mismatch(case, &outcome)
            }
            Err(CaseError::InvalidArguments { error, .. }) => (case.expect != Expect::Invalid)
                .then(|| format!("expected {:?}, got Invalid ({error})", case.expect)),
            Err(e) => return Err(e),
        };
        match verdict {
            None => report.passed += 1,
            Some(why) => report.failed.push((case.name.clone(), why)),
        }
    }
    Ok(report)
}

fn mismatch(case: &Case, outcome: &Outcome) -> Option<String> {
    let d = &outcome.decision;
    let got = if d.allowed {
        Expect::Allow
    } else {
        Expect::Deny
    };
    let mut problems = Vec::new();
    if got != case.expect {
        problems.push(format!("expected {:?}, got {got:?}", case.expect));
    }
    if let Some(want) = &case.policies {
        let mut want = want.clone();
        want.sort();
        let mut have = d.determining.clone();
        have.sort();
        if want != have {
            problems.push(format!("determining policies {have:?}, expected {want:?}"));
        }
    }
    if let Some(want) = &case.challenge_scope {
        let have = outcome.challenge_scope.clone().unwrap_or_default();
        if *want != have {
            problems.push(format!("challenge scope `{have}`, expected `{want}`"));
        }
    }
    if !d.errors.is_empty() {
        problems.push(format!("policy errors: {}", d.errors.join("; ")));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Evaluates one case exactly as a check would.
pub fn evaluate(
    bundle: &PolicyBundle,
    defaults: &Defaults,
    case: &Case,
) -> Result<Outcome, CaseError> {
    evaluate_resolved(bundle, &resolve(defaults, case), &case.name)
}

/// A case with its defaults applied: every fact of the request concrete, so it can be compared
/// with another (`policy diff` deduplicates on it) and printed as `policy explain` flags.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolved {
    pub server: Site,
    pub caller: Caller,
    /// A JSON-RPC method, `response`, `GET` or `DELETE`.
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub arguments: Map<String, Value>,
}

/// The protected server of a resolved case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Site {
    pub id: String,
    pub tenant: String,
    pub scopes_supported: Vec<String>,
    pub step_up: StepUpScope,
}

/// The caller of a resolved case (the token's mapped claims).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Caller {
    pub sub: String,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub issuer: String,
    pub scopes: Vec<String>,
    pub groups: Vec<String>,
    /// Extra claims (`sub` is set from [`Caller::sub`]).
    pub claims: Map<String, Value>,
}

/// The server of a case: the case's spec over the defaults' over the built-in defaults.
pub fn resolve_site(defaults: &ServerSpec, over: &ServerSpec) -> Site {
    Site {
        id: over
            .id
            .clone()
            .or_else(|| defaults.id.clone())
            .unwrap_or_else(|| "demo".into()),
        tenant: over
            .tenant
            .clone()
            .or_else(|| defaults.tenant.clone())
            .unwrap_or_default(),
        scopes_supported: over
            .scopes_supported
            .clone()
            .or_else(|| defaults.scopes_supported.clone())
            .unwrap_or_default(),
        step_up: over.step_up.or(defaults.step_up).unwrap_or_default().scope,
    }
}

/// The caller of a case: the case's principal over the defaults' over the built-in defaults.
pub fn resolve_caller(defaults: &PrincipalSpec, over: &PrincipalSpec) -> Caller {
    let p = merge_principal(defaults, over);
    Caller {
        sub: p.sub.unwrap_or_else(|| "alice".into()),
        tenant: p.tenant,
        client_id: p.client_id,
        issuer: p.issuer.unwrap_or_else(|| DEFAULT_ISSUER.into()),
        scopes: p.scopes.unwrap_or_default(),
        groups: p.groups.unwrap_or_default(),
        claims: p.claims.unwrap_or_default(),
    }
}

/// A case with its defaults applied.
pub fn resolve(defaults: &Defaults, case: &Case) -> Resolved {
    Resolved {
        server: resolve_site(&defaults.server, &case.server),
        caller: resolve_caller(&defaults.principal, &case.principal),
        method: case.method.clone(),
        tool: case.tool.clone(),
        prompt: case.prompt.clone(),
        resource: case.resource.clone(),
        task: case.task.clone(),
        arguments: case.arguments.clone(),
    }
}

/// Evaluates a resolved request exactly as a check would; `name` names it in errors. The one
/// evaluation behind `policy test`, `policy explain` and `policy diff`.
pub fn evaluate_resolved(
    bundle: &PolicyBundle,
    r: &Resolved,
    name: &str,
) -> Result<Outcome, CaseError> {
    let err = |message: String| CaseError::Case {
        case: name.to_owned(),
        message,
    };
    let c = &r.caller;
    let mut claims = c.claims.clone();
    claims.insert("sub".into(), Value::from(c.sub.clone()));
    let identity = Identity {
        issuer: c.issuer.clone(),
        subject: c.sub.clone(),
        tenant: c.tenant.clone(),
        client_id: c.client_id.clone(),
        scopes: c.scopes.clone(),
        groups: c.groups.clone(),
        expires_at: 0,
        claims: claims.into(),
    };
    let target = target(r).map_err(|e| err(e.to_string()))?;
    let req = EvalRequest {
        identity: &identity,
        server_id: &r.server.id,
        server_tenant: &r.server.tenant,
        action: &r.method,
        target: &target,
        protocol_version: "2025-11-25",
        session_id: "",
        batch: false,
    };
    let decision = bundle
        .decide(&req, &r.server.scopes_supported, r.server.step_up)
        .map_err(|e| match e {
            super::BuildError::Arguments(error) => CaseError::InvalidArguments {
                case: name.to_owned(),
                error,
            },
            other => err(other.to_string()),
        })?;
    let challenge_scope = decision.challenge_scopes.as_ref().map(|s| s.join(" "));
    Ok(Outcome {
        decision,
        challenge_scope,
    })
}

fn merge_principal(base: &PrincipalSpec, over: &PrincipalSpec) -> PrincipalSpec {
    PrincipalSpec {
        sub: over.sub.clone().or_else(|| base.sub.clone()),
        tenant: over.tenant.clone().or_else(|| base.tenant.clone()),
        client_id: over.client_id.clone().or_else(|| base.client_id.clone()),
        issuer: over.issuer.clone().or_else(|| base.issuer.clone()),
        scopes: over.scopes.clone().or_else(|| base.scopes.clone()),
        groups: over.groups.clone().or_else(|| base.groups.clone()),
        claims: over.claims.clone().or_else(|| base.claims.clone()),
    }
}

/// The target a method acts on, from the case's `tool`/`prompt`/`resource`/`task`.
/// Why a case's method and target do not make a request.
#[derive(Debug, thiserror::Error)]
enum TargetError {
    #[error("method `{method}` needs `{field}`")]
    Missing { method: String, field: &'static str },
    #[error("completion/complete needs exactly one of `prompt`, `resource`")]
    CompletionRef,
    #[error("`{0}` is not a method mcp-authz authorizes")]
    UnknownMethod(String),
}

fn target(case: &Resolved) -> Result<Target, TargetError> {
    let need = |v: &Option<String>, field: &'static str| {
        v.clone().ok_or_else(|| TargetError::Missing {
            method: case.method.clone(),
            field,
        })
    };
    Ok(match case.method.as_str() {
        "tools/call" => Target::Tool {
            name: need(&case.tool, "tool")?,
            arguments: case.arguments.clone(),
        },
        "prompts/get" => Target::Prompt {
            name: need(&case.prompt, "prompt")?,
        },
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Target::Resource {
            uri: need(&case.resource, "resource")?,
        },
        "completion/complete" => match (&case.prompt, &case.resource) {
            (Some(name), None) => Target::Prompt { name: name.clone() },
            (None, Some(uri)) => Target::Resource { uri: uri.clone() },
            _ => {
                return Err(TargetError::CompletionRef);
            }
        },
        "tasks/get" | "tasks/result" | "tasks/cancel" => Target::Task {
            id: need(&case.task, "task")?,
        },
        m if crate::mcp::KNOWN_METHODS.contains(&m)
            || matches!(m, "response" | "GET" | "DELETE") =>
        {
            Target::Server
        }
        m => return Err(TargetError::UnknownMethod(m.to_owned())),
    })
}
