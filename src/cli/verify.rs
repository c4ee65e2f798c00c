//! `mcp-authz policy verify`: loads the directories and the properties file, runs the proofs
//! (`policy/verify.rs`) and prints each property as PROVED, FAILED with a counterexample, or
//! UNDECIDED with the reason.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use serde_json::{Map, Value};

use super::{EXIT_DENIED, EXIT_ERROR, VerifyArgs};
use crate::policy::load_dir;
use crate::policy::verify::{
    self, Counterexample, EntityView, Failure, Properties, PropertyResult, SolverConfig,
};

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_ERROR)
}

pub(super) async fn verify(a: VerifyArgs) -> ExitCode {
    let bundle = match load_dir(&a.dir) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let old = match a.no_new_allows.as_deref().map(load_dir).transpose() {
        Ok(o) => o,
        Err(e) => return fail(format_args!("--no-new-allows: {e}")),
    };
    let file = a
        .properties
        .clone()
        .or_else(|| verify::properties_in(&a.dir));
    let properties = match &file {
        Some(path) => match verify::read_properties(path) {
            Ok(p) => p,
            Err(e) => return fail(e),
        },
        None => Properties::default(),
    };
    let solver = SolverConfig {
        path: a.solver.clone().unwrap_or_else(verify::default_solver),
        timeout: a.timeout,
    };
    match &file {
        Some(path) => println!("properties: {}", path.display()),
        None => println!("properties: built-in (no {})", verify::PROPERTIES_FILE),
    }
    let results = match verify::verify(&bundle, &properties, old.as_ref(), &solver).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut failed = 0;
    let mut undecided = 0;
    for r in &results {
        print!("{}", render(r, &a.dir));
        if !r.failures.is_empty() {
            failed += 1;
        } else if !r.undecided.is_empty() {
            undecided += 1;
        }
    }
    println!(
        "policy verify: {} proved, {failed} failed, {undecided} undecided (policy set {})",
        results.iter().filter(|r| r.proved()).count(),
        bundle.hash
    );
    if failed > 0 {
        ExitCode::from(EXIT_DENIED)
    } else if undecided > 0 {
        ExitCode::from(EXIT_ERROR)
    } else {
        ExitCode::SUCCESS
    }
}

/// One property: its verdict line, then each failure and undecided environment.
fn render(r: &PropertyResult, dir: &Path) -> String {
    let mut out = String::new();
    let verdict = if !r.failures.is_empty() {
        "FAILED"
    } else if !r.undecided.is_empty() {
        "UNDECIDED"
    } else {
        "PROVED"
    };
    let _ = writeln!(
        out,
        "{verdict}: {} ({} request environments)",
        r.property, r.checked
    );
    // One counterexample in full (one of the shape mcp-authz builds, when there is one); the
    // other environments it fails in, by name.
    let show = r
        .failures
        .iter()
        .position(
            |f| matches!(f, Failure::Allowed { counterexample, .. } if counterexample.realistic),
        )
        .or_else(|| {
            r.failures
                .iter()
                .position(|f| matches!(f, Failure::Allowed { .. }))
        });
    for (i, f) in r.failures.iter().enumerate() {
        match f {
            Failure::Dead { id, effect, envs } => {
                let what = match effect {
                    cedar_policy::Effect::Permit => "never allows anything",
                    cedar_policy::Effect::Forbid => "never matches anything",
                };
                let _ = writeln!(
                    out,
                    "  dead policy `{id}` ({effect}): {what} (in the {envs} request environments its scope can match)"
                );
            }
            Failure::Allowed {
                env,
                counterexample,
            } if Some(i) == show => {
                let _ = writeln!(out, "  counterexample in ({env}):");
                out.push_str(&counterexample_text(counterexample, dir));
            }
            Failure::Allowed { env, .. } => {
                let _ = writeln!(out, "  also fails in ({env})");
            }
        }
    }
    for u in &r.undecided {
        let _ = writeln!(
            out,
            "  UNSUPPORTED: {} for ({}): {}",
            r.property, u.env, u.reason
        );
    }
    out
}

fn counterexample_text(c: &Counterexample, dir: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "    principal: {}", entity(&c.principal));
    let _ = writeln!(out, "    action:    {}", c.action);
    let _ = writeln!(out, "    resource:  {}", entity(&c.resource));
    let _ = writeln!(out, "    context:   {}", Value::Object(c.context.clone()));
    let _ = writeln!(out, "    explain:   {}", c.explain.command_line(dir));
    if !c.realistic {
        let _ = writeln!(
            out,
            "      note: no counterexample of the shape mcp-authz builds (with this entities.json) exists here; this one needs entities or request fields mcp-authz does not produce today"
        );
    }
    for caveat in &c.explain.caveats {
        let _ = writeln!(out, "      note: {caveat}");
    }
    let _ = match &c.explained {
        Ok(true) => writeln!(out, "      explain decides ALLOW: reproduced"),
        Ok(false) => writeln!(
            out,
            "      explain decides DENY with this directory's entities.json: the counterexample relies on what the notes say"
        ),
        Err(e) => writeln!(out, "      explain cannot ask this request: {e}"),
    };
    out
}

/// An entity of a counterexample on one line: its uid, attributes, parents and tags.
fn entity(e: &EntityView) -> String {
    format!(
        "{}{}{}{}",
        e.uid,
        attrs(&e.attrs),
        parents(&e.parents),
        tags(&e.tags)
    )
}

fn attrs(m: &Map<String, Value>) -> String {
    if m.is_empty() {
        return String::new();
    }
    let list: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(" {{{}}}", list.join(", "))
}

fn parents(p: &[String]) -> String {
    if p.is_empty() {
        String::new()
    } else {
        format!(" in [{}]", p.join(", "))
    }
}

fn tags(m: &Map<String, Value>) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(" tags {}", Value::Object(m.clone()))
    }
}
