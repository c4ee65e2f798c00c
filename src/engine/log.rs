//! The decision log: one line per check under the `mcp_authz::decision` target, tied to the
//! answer by a random decision id. Never the token; claims only when the operator opts in.

use std::sync::Arc;
use std::time::Duration;

use super::{Caller, Reason};
use crate::config::DecisionLog;
use crate::identity::Identity;

/// What the decision log line says about a check, gathered as the check goes.
#[derive(Default)]
pub(super) struct Facts<'a> {
    pub server: Option<&'a str>,
    pub caller: Option<Arc<Caller>>,
    /// The actions of the message(s), e.g. `tools/call`.
    pub actions: Vec<&'static str>,
    /// The first message's target (tool or prompt name, resource URI), never its arguments.
    pub target: Option<String>,
}

/// How a check ended, for its line.
pub(super) struct Line<'a> {
    pub id: &'a str,
    pub reason: Reason,
    pub status: u16,
    /// Determining policies.
    pub policies: &'a [String],
    pub facts: &'a Facts<'a>,
    pub elapsed: Duration,
}

/// 16 hex digits from the thread-local CSPRNG: unique enough to find one line in a day's logs.
pub(super) fn decision_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Writes the line if the configuration asks for this kind of decision: every denial (unless
/// turned off), a sample of allows, never PRM metadata answers.
pub(super) fn decision(config: &DecisionLog, line: &Line<'_>) {
    let log = match line.reason {
        Reason::Metadata => false,
        Reason::Allowed => {
            let rate = config.allow_sample_rate;
            rate >= 1.0 || (rate > 0.0 && rand::random::<f64>() < rate)
        }
        _ => config.denies,
    };
    if !log {
        return;
    }
    let facts = line.facts;
    let identity = facts.caller.as_deref().map(Caller::identity);
    let field = |f: fn(&Identity) -> Option<&str>| identity.and_then(f).unwrap_or("");
    tracing::info!(
        target: "mcp_authz::decision",
        decision_id = %line.id,
        decision = if line.reason == Reason::Allowed { "allow" } else { "deny" },
        status = line.status,
        reason = line.reason.as_str(),
        server = facts.server.unwrap_or(""),
        method = %facts.actions.join(","),
        target = facts.target.as_deref().unwrap_or(""),
        subject = field(|i| Some(&i.subject)),
        tenant = field(|i| i.tenant.as_deref()),
        client_id = field(|i| i.client_id.as_deref()),
        // How the token was bound: `dpop` (RFC 9449, `cnf.jkt`), `bearer`, or "" (no token).
        binding = match facts.caller.as_deref().map(Caller::confirmation) {
            Some(Some(_)) => "dpop",
            Some(None) => "bearer",
            None => "",
        },
        policies = %line.policies.join(","),
        latency_us = u64::try_from(line.elapsed.as_micros()).unwrap_or(u64::MAX),
        claims = identity.filter(|_| config.include_claims).map(|i| i.claims.as_json()).unwrap_or_default(),
        "decision"
    );
}
