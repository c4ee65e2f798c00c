//! Table-driven policy tests (`mcp-authz policy test`) and one-off evaluations
//! (`mcp-authz policy explain`): a hypothetical caller, server and MCP message, evaluated with
//! exactly the code the service runs, including the step-up challenge scope.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{EvalRequest, PolicyBundle, PolicyDecision};
use crate::config::StepUpConfig;
use crate::identity::Identity;
use crate::mcp::Target;

/// The file kept beside the policies.
pub const CASES_FILE: &str = "tests.yaml";

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
            Ok(outcome) => mismatch(case, &outcome),
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
    let err = |message: String| CaseError::Case {
        case: case.name.clone(),
        message,
    };
    let p = merge_principal(&defaults.principal, &case.principal);
    let server_id = case
        .server
        .id
        .clone()
        .or_else(|| defaults.server.id.clone())
        .unwrap_or_else(|| "demo".into());
    let server_tenant = case
        .server
        .tenant
        .clone()
        .or_else(|| defaults.server.tenant.clone())
        .unwrap_or_default();
    let supported = case
        .server
        .scopes_supported
        .clone()
        .or_else(|| defaults.server.scopes_supported.clone())
        .unwrap_or_default();
    let step_up = case
        .server
        .step_up
        .or(defaults.server.step_up)
        .unwrap_or_default();
    let mut claims: Map<String, Value> = p.claims.clone().unwrap_or_default();
    let subject = p.sub.clone().unwrap_or_else(|| "alice".into());
    claims.insert("sub".into(), Value::from(subject.clone()));
    let identity = Identity {
        issuer: p
            .issuer
            .clone()
            .unwrap_or_else(|| "https://issuer.example".into()),
        subject,
        tenant: p.tenant.clone(),
        client_id: p.client_id.clone(),
        scopes: p.scopes.clone().unwrap_or_default(),
        groups: p.groups.clone().unwrap_or_default(),
        expires_at: 0,
        claims: claims.into(),
    };
    let target = target(case).map_err(|e| err(e.to_string()))?;
    let req = EvalRequest {
        identity: &identity,
        server_id: &server_id,
        server_tenant: &server_tenant,
        action: &case.method,
        target: &target,
        protocol_version: "2025-11-25",
        session_id: "",
        batch: false,
    };
    let decision = bundle
        .decide(&req, &supported, step_up.scope)
        .map_err(|e| match e {
            super::BuildError::Arguments(error) => CaseError::InvalidArguments {
                case: case.name.clone(),
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

fn target(case: &Case) -> Result<Target, TargetError> {
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
