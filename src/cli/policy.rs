//! `mcp-authz policy ...`: tools for policy authors. `validate` and `test` work on a policy
//! directory; `explain` evaluates one hypothetical request, offline against a directory or
//! live through a running server's admin gRPC API.

use std::process::ExitCode;

use super::explain::{Explanation, Source};
use super::status::admin_client;
use super::{EXIT_ERROR, ExplainArgs, PolicyCommand, parse_claims, split_words};
use crate::admin::grpc::pb;
use crate::challenge::{Challenge, ErrorCode};
use crate::config::StepUpConfig;
use crate::policy::cases::{self, Case, Defaults, Expect, PrincipalSpec, ServerSpec};
use crate::policy::load_dir;

pub(super) fn policy_command(command: PolicyCommand) -> ExitCode {
    match command {
        PolicyCommand::Validate { dir, deny_warnings } => match load_dir(&dir) {
            Ok(bundle) => {
                for w in &bundle.warnings {
                    println!("warning: {w}");
                }
                println!(
                    "`{}`: {} policies valid against the schema (policy set {})",
                    dir.display(),
                    bundle.policy_ids.len(),
                    bundle.hash
                );
                if deny_warnings && !bundle.warnings.is_empty() {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        PolicyCommand::Test { dir, cases: file } => {
            let file = file.unwrap_or_else(|| dir.join(cases::CASES_FILE));
            let result = load_dir(&dir)
                .map_err(|e| e.to_string())
                .and_then(|bundle| {
                    let case_file = cases::read_cases(&file).map_err(|e| e.to_string())?;
                    cases::run(&bundle, &case_file).map_err(|e| e.to_string())
                });
            match result {
                Ok(report) => {
                    for (name, why) in &report.failed {
                        println!("FAIL {name}: {why}");
                    }
                    println!(
                        "policy tests: {} passed, {} failed",
                        report.passed,
                        report.failed.len()
                    );
                    if report.failed.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
        PolicyCommand::Explain(a) => explain(*a),
        PolicyCommand::Scaffold {
            from_tools,
            server,
            out,
        } => super::scaffold::scaffold(&from_tools, &server, out.as_deref()),
        // Async (the solver is driven through tokio): dispatched by `cli::run`.
        PolicyCommand::Verify(_) => fail("`policy verify` runs from `cli::run`"),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_ERROR)
}

/// `policy explain --policies DIR`: evaluates in this process, as `policy test` does.
fn explain(a: ExplainArgs) -> ExitCode {
    let bundle = match load_dir(&a.policies) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let arguments = match a.arguments.as_deref().map(serde_json::from_str) {
        None => serde_json::Map::new(),
        Some(Ok(serde_json::Value::Object(m))) => m,
        Some(_) => return fail("--arguments must be a JSON object"),
    };
    let claims = match parse_claims(&a.claims) {
        Ok(c) => c
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::from(v)))
            .collect(),
        Err(e) => return fail(e),
    };
    let case = Case {
        name: "explain".into(),
        server: ServerSpec {
            id: Some(a.server_id),
            tenant: Some(a.server_tenant),
            scopes_supported: Some(split_words(&a.scopes_supported)),
            step_up: Some(StepUpConfig {
                scope: a.step_up_scope,
            }),
        },
        principal: PrincipalSpec {
            sub: Some(a.sub),
            tenant: Some(a.tenant),
            client_id: None,
            issuer: None,
            scopes: Some(split_words(&a.scopes)),
            groups: Some(a.groups),
            claims: Some(claims),
        },
        method: a.method,
        tool: a.tool,
        prompt: a.prompt,
        resource: a.resource,
        task: a.task,
        arguments,
        expect: Expect::Allow,
        policies: None,
        challenge_scope: None,
    };
    let outcome = match cases::evaluate(&bundle, &Defaults::default(), &case) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    // Offline there is no server, so no metadata URL (`...`) and no `error_description`: the
    // header's shape, with the scopes the step-up would ask for.
    let scopes: Vec<String> = outcome
        .challenge_scope
        .iter()
        .flat_map(|s| s.split(' '))
        .map(str::to_owned)
        .collect();
    let challenge = outcome.challenge_scope.as_ref().map(|_| {
        Challenge {
            scheme: Default::default(),
            resource_metadata: Some("..."),
            scopes: &scopes,
            error: Some(ErrorCode::InsufficientScope),
            error_description: None,
        }
        .render()
    });
    let d = &outcome.decision;
    Explanation {
        allowed: d.allowed,
        determining: &d.determining,
        errors: &d.errors,
        challenge: challenge.as_deref(),
        policy_hash: &bundle.hash,
        source: Source::Dir(&a.policies),
    }
    .print()
}

/// `policy explain --addr ADDR`: the server evaluates against its live policies and
/// configuration (its tenant, scopes_supported and step_up apply), with the code a check runs.
pub(super) async fn explain_remote(a: ExplainArgs) -> ExitCode {
    let addr = a.addr.clone().unwrap_or_default();
    let mut client = match admin_client(&addr).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let claims = match parse_claims(&a.claims) {
        Ok(c) => c.into_iter().collect(),
        Err(e) => return fail(e),
    };
    let request = pb::ExplainRequest {
        server_id: a.server_id,
        method: a.method,
        tool: a.tool.unwrap_or_default(),
        prompt: a.prompt.unwrap_or_default(),
        resource: a.resource.unwrap_or_default(),
        task: a.task.unwrap_or_default(),
        arguments_json: a.arguments.unwrap_or_default(),
        principal: Some(pb::Principal {
            sub: a.sub,
            tenant: a.tenant,
            client_id: String::new(),
            issuer: String::new(),
            scopes: split_words(&a.scopes),
            groups: a.groups,
            claims,
        }),
        server_tenant: a.server_tenant,
    };
    let r = match client.explain(request).await {
        Ok(r) => r.into_inner(),
        Err(e) => return fail(format_args!("Explain failed: {}", e.message())),
    };
    Explanation {
        allowed: r.allowed,
        determining: &r.determining_policies,
        errors: &r.errors,
        challenge: (!r.www_authenticate.is_empty()).then_some(r.www_authenticate.as_str()),
        policy_hash: &r.policy_hash,
        source: Source::Live,
    }
    .print()
}
