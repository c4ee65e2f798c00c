//! `mcp-authz policy ...`: tools for policy authors. `validate` and `test` work on a policy
//! directory; `diff` compares two; `explain` evaluates one hypothetical request, offline against
//! a directory or live through a running server's admin gRPC API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::explain::{Explanation, Source};
use super::status::admin_client;
use super::{
    DiffFormat, EXIT_DENIED, EXIT_ERROR, ExplainArgs, PolicyCommand, parse_claims, split_words,
};
use crate::admin::grpc::pb;
use crate::challenge::{Challenge, ErrorCode};
use crate::config::{StepUpConfig, StepUpScope};
use crate::policy::cases::{self, Case, Defaults, Expect, PrincipalSpec, ServerSpec};
use crate::policy::{diff, load_dir};

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
        PolicyCommand::Test {
            dir,
            cases: file,
            min_coverage,
        } => test(&dir, file, min_coverage),
        PolicyCommand::Diff {
            old,
            new,
            format,
            limit,
        } => diff(&old, &new, format, limit),
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

/// `policy test`: the cases' results, then the policies' coverage by them.
fn test(dir: &Path, file: Option<PathBuf>, min_coverage: Option<f64>) -> ExitCode {
    let file = file.unwrap_or_else(|| dir.join(cases::CASES_FILE));
    let result = load_dir(dir).map_err(|e| e.to_string()).and_then(|bundle| {
        let case_file = cases::read_cases(&file).map_err(|e| e.to_string())?;
        let report = cases::run(&bundle, &case_file).map_err(|e| e.to_string())?;
        Ok((report.coverage(&bundle.policy_ids), report))
    });
    let (coverage, report) = match result {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    for (name, why) in &report.failed {
        println!("FAIL {name}: {why}");
    }
    println!(
        "policy tests: {} passed, {} failed",
        report.passed,
        report.failed.len()
    );
    print!(
        "coverage: {}/{} policies determining in some case",
        coverage.determining, coverage.total
    );
    if coverage.never.is_empty() {
        println!();
    } else {
        println!("; never determining: {}", coverage.never.join(", "));
    }
    if !report.failed.is_empty() {
        return ExitCode::FAILURE;
    }
    match min_coverage {
        Some(min) if coverage.percent() < min => {
            println!(
                "coverage {:.1}% is below --min-coverage {min}",
                coverage.percent()
            );
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

/// `policy diff OLD NEW`: both sets over the same requests; exit 1 when an answer changed.
fn diff(old_dir: &Path, new_dir: &Path, format: DiffFormat, limit: usize) -> ExitCode {
    let load = |dir: &Path| -> Result<_, String> {
        let bundle = load_dir(dir).map_err(|e| e.to_string())?;
        let path = dir.join(cases::CASES_FILE);
        // A directory without cases still has a request space (from the built-in defaults).
        let file = if path.exists() {
            Some(cases::read_cases(&path).map_err(|e| e.to_string())?)
        } else {
            None
        };
        Ok((bundle, file))
    };
    let ((old, old_cases), (new, new_cases)) =
        match load(old_dir).and_then(|o| Ok((o, load(new_dir)?))) {
            Ok(loaded) => loaded,
            Err(e) => return fail(e),
        };
    // The new set's cases first: its defaults give the default server and caller.
    let files: Vec<&cases::CaseFile> = new_cases.iter().chain(old_cases.iter()).collect();
    let space = diff::request_space(&[&old, &new], &files, limit);
    let result = diff::diff(&old, &new, &space);
    let text = match format {
        DiffFormat::Json => match serde_json::to_string_pretty(&result) {
            Ok(json) => json + "\n",
            Err(e) => return fail(e),
        },
        DiffFormat::Text => render_diff(&result, old_dir, new_dir),
    };
    // The output is long and often piped into `head` or `less`: a closed pipe is not an error.
    if let Err(e) = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return fail(e);
    }
    if result.changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    }
}

/// The text report: changes grouped by policy, each as `policy explain` flags, then a summary.
fn render_diff(d: &diff::Diff, old_dir: &Path, new_dir: &Path) -> String {
    // Writing to a `String` cannot fail: the `fmt::Result`s below are always `Ok`.
    use std::fmt::Write as _;
    let mut out = String::new();
    if !d.changes.is_empty() {
        let _ = writeln!(
            out,
            "changed answers, `{}` -> `{}`, by policy; each request as `mcp-authz policy explain` \
             flags (add `--policies DIR`):",
            old_dir.display(),
            new_dir.display()
        );
    }
    for (policies, changes) in d.groups() {
        out.push('\n');
        if policies.is_empty() {
            let _ = writeln!(out, "(no determining policy)");
        } else {
            let _ = writeln!(out, "{}", policies.join(", "));
        }
        for c in changes {
            let mut notes = Vec::new();
            if let Some(case) = &c.probe.case {
                notes.push(format!("case `{case}`"));
            }
            // The policies of the side the group is not named after, when they differ.
            let other = if c.policies == c.new.determining {
                ("old", &c.old.determining)
            } else {
                ("new", &c.new.determining)
            };
            if !other.1.is_empty() && *other.1 != c.policies {
                notes.push(format!("{}: {}", other.0, other.1.join(", ")));
            }
            for e in c
                .old
                .errors
                .iter()
                .map(|e| ("old", e))
                .chain(c.new.errors.iter().map(|e| ("new", e)))
            {
                notes.push(format!("{}: {}", e.0, e.1));
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!("  ({})", notes.join("; "))
            };
            let _ = writeln!(out, "  {} \u{2192} {}{notes}", c.old.verdict, c.new.verdict);
            let _ = writeln!(out, "    {}", explain_flags(&c.probe.request));
        }
    }
    if d.truncated {
        out.push('\n');
        let _ = writeln!(
            out,
            "note: the request space has {} requests; only the first {} were evaluated (--limit)",
            d.space_total, d.limit
        );
    }
    let _ = writeln!(
        out,
        "policy diff: {} requests evaluated ({} test cases, {} from the request space), {} changed",
        d.evaluated,
        d.cases,
        d.evaluated - d.cases,
        d.changes.len()
    );
    out
}

/// A resolved request as `policy explain` flags, quoted for a POSIX shell.
fn explain_flags(r: &cases::Resolved) -> String {
    let mut f: Vec<String> = Vec::new();
    let mut flag = |name: &str, value: &str| {
        f.push(format!("--{name} {}", shell_quote(value)));
    };
    flag("method", &r.method);
    for (name, value) in [
        ("tool", &r.tool),
        ("prompt", &r.prompt),
        ("resource", &r.resource),
        ("task", &r.task),
    ] {
        if let Some(v) = value {
            flag(name, v);
        }
    }
    if !r.arguments.is_empty() {
        flag(
            "arguments",
            &serde_json::Value::Object(r.arguments.clone()).to_string(),
        );
    }
    let c = &r.caller;
    flag("sub", &c.sub);
    if let Some(t) = &c.tenant {
        flag("tenant", t);
    }
    if let Some(id) = &c.client_id {
        flag("client-id", id);
    }
    if c.issuer != cases::DEFAULT_ISSUER {
        flag("issuer", &c.issuer);
    }
    if !c.scopes.is_empty() {
        flag("scope", &c.scopes.join(" "));
    }
    for g in &c.groups {
        flag("group", g);
    }
    for (k, v) in &c.claims {
        // A claim reaches the policies as a tag: a string as it is, anything else as its JSON
        // text, which is what `--claim` gives.
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        flag("claim", &format!("{k}={text}"));
    }
    let s = &r.server;
    flag("server-id", &s.id);
    flag("server-tenant", &s.tenant);
    if !s.scopes_supported.is_empty() {
        flag("scope-supported", &s.scopes_supported.join(" "));
    }
    if s.step_up != StepUpScope::default() {
        flag("step-up-scope", s.step_up.as_str());
    }
    f.join(" ")
}

/// `s` as one POSIX shell word: as it is when that is safe, else single-quoted.
fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
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
            client_id: a.client_id,
            issuer: a.issuer,
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
            client_id: a.client_id.unwrap_or_default(),
            issuer: a.issuer.unwrap_or_default(),
            scopes: split_words(&a.scopes),
            groups: a.groups,
            claims,
        }),
        server_tenant: a.server_tenant,
        shadow: a.shadow,
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
