//! Shadow policy sets: a candidate set evaluated on live traffic, never enforced. The live set
//! decides and answers first; the shadow evaluation runs afterwards on its own task, off the
//! answer's path, and sees exactly what the live set saw (the same caller, messages, tenant and
//! session facts; [`authorize::evaluate`], the same code). Every evaluation is counted by what
//! each set decided (`mcp_authz_shadow_decisions_total{server, live, shadow}`), and every
//! disagreement is logged once, under the `mcp_authz::shadow` target, with the decision id and
//! both sets' determining policies.
//!
//! A shadow set never affects an answer: one that has not loaded is skipped (and counted), its
//! errors are its own verdict, and evaluations beyond [`MAX_PENDING`] (or holding more than
//! [`MAX_PENDING_KIB`] of request bodies) are dropped (counted) rather than queued without
//! bound. What the answer's path does for a shadow set is taking a permit and copying the
//! request; the rest (the shadow set's first-use entity build included) runs in the job.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::authorize::{self, Evaluation, Verdict};
use super::sets::ShadowPolicies;
use super::{Caller, Decisions, Setup};
use crate::config::StepUpScope;
use crate::mcp::McpRequest;
use crate::metrics::Metrics;
use crate::policy::{PolicyBundle, ShadowSet};

/// Shadow evaluations that may be pending at once; more are skipped (`overloaded`).
pub(super) const MAX_PENDING: usize = 1024;

/// The request bodies pending shadow evaluations may hold, in KiB (64 MiB). Each job takes
/// its body's size, and at least `MAX_PENDING_KIB / MAX_PENDING` (so at most [`MAX_PENDING`]
/// small ones).
pub(super) const MAX_PENDING_KIB: usize = 64 * 1024;

/// The engine's side of shadow evaluation: the bound on pending work, and metrics.
pub(super) struct Shadow {
    /// In KiB of request body (see [`MAX_PENDING_KIB`]).
    permits: Arc<Semaphore>,
    metrics: Metrics,
}

/// The permits (KiB) a job with a body of `body_len` bytes takes.
fn weight(body_len: usize) -> u32 {
    let kib = body_len.div_ceil(1024).max(MAX_PENDING_KIB / MAX_PENDING);
    u32::try_from(kib.min(MAX_PENDING_KIB)).unwrap_or(u32::MAX)
}

/// One request's shadow evaluation: owns what it needs, so it can run after the answer.
pub(super) struct ShadowJob {
    set: Arc<ShadowSet>,
    bundle: Arc<PolicyBundle>,
    decisions: Arc<Decisions>,
    server_id: String,
    tenant: String,
    scopes_supported: Vec<String>,
    step_up: StepUpScope,
    protocol_version: String,
    session_id: String,
    caller: Arc<Caller>,
    request: McpRequest,
    live: &'static str,
    live_policies: Vec<String>,
    live_hash: String,
    /// The servers' static tenants, while the shadow bundle has not built its entities.
    prebuild: Option<Vec<(String, String)>>,
    /// Held until the job has run.
    _permit: OwnedSemaphorePermit,
}

impl Shadow {
    pub(super) fn new(metrics: Metrics) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(MAX_PENDING_KIB)),
            metrics,
        }
    }

    /// What evaluating `shadow` for this request will need, with its permit; `None` (counted)
    /// when the shadow set has never loaded or the bound is reached. `request` comes with its
    /// body's length in bytes.
    #[expect(clippy::too_many_arguments)]
    pub(super) fn job(
        &self,
        shadow: &ShadowPolicies,
        setup: &Setup,
        eval: &Evaluation<'_>,
        caller: &Arc<Caller>,
        (request, body_len): (&McpRequest, usize),
        live: &Verdict,
        live_hash: &str,
    ) -> Option<ShadowJob> {
        let Some(store) = shadow.set.store() else {
            self.metrics.shadow_skipped(eval.server_id, "not_loaded");
            return None;
        };
        // The permit first: an evaluation that will be dropped copies nothing.
        let Ok(permit) = self
            .permits
            .clone()
            .try_acquire_many_owned(weight(body_len))
        else {
            self.metrics.shadow_skipped(eval.server_id, "overloaded");
            return None;
        };
        let bundle = store.load();
        let prebuild = (!bundle.is_prebuilt()).then(|| {
            setup
                .static_tenants()
                .map(|(s, t)| (s.to_owned(), t.to_owned()))
                .collect()
        });
        Some(ShadowJob {
            set: shadow.set.clone(),
            bundle,
            decisions: shadow.decisions.clone(),
            server_id: eval.server_id.to_owned(),
            tenant: eval.tenant.to_owned(),
            scopes_supported: eval.scopes_supported.to_vec(),
            step_up: eval.step_up,
            protocol_version: eval.protocol_version.to_owned(),
            session_id: eval.session_id.to_owned(),
            caller: caller.clone(),
            request: request.clone(),
            live: live.label(),
            live_policies: live.determining(),
            live_hash: live_hash.to_owned(),
            prebuild,
            _permit: permit,
        })
    }

    /// Runs `job` on its own task (its permit is released when it has run).
    pub(super) fn dispatch(&self, job: ShadowJob, decision_id: &str) {
        let metrics = self.metrics.clone();
        let decision_id = decision_id.to_owned();
        tokio::spawn(async move {
            job.run(&metrics, &decision_id);
        });
    }
}

impl ShadowJob {
    fn run(self, metrics: &Metrics, decision_id: &str) {
        if let Some(tenants) = &self.prebuild {
            self.bundle
                .prebuild(|| tenants.iter().map(|(s, t)| (s.as_str(), t.as_str())));
        }
        let (batch, messages) = authorize::messages(&self.request);
        let eval = Evaluation {
            server_id: &self.server_id,
            tenant: &self.tenant,
            scopes_supported: &self.scopes_supported,
            step_up: self.step_up,
            protocol_version: &self.protocol_version,
            session_id: &self.session_id,
        };
        let verdict = authorize::evaluate(
            &self.bundle,
            &self.decisions,
            &eval,
            &self.caller,
            batch,
            &messages,
            |_, _, _| {},
        );
        let shadow = verdict.label();
        metrics
            .shadow_decision(&self.server_id, self.live, shadow)
            .inc();
        if shadow != self.live {
            let actions: Vec<&str> = messages.iter().filter_map(|(a, _)| *a).collect();
            let target = messages
                .first()
                .and_then(|(_, t)| t.name())
                .map(|n| n.chars().take(256).collect::<String>());
            tracing::warn!(
                target: "mcp_authz::shadow",
                decision_id,
                server = %self.server_id,
                subject = %self.caller.identity().subject,
                actions = ?actions,
                target = target.as_deref().unwrap_or(""),
                live = self.live,
                shadow,
                live_policies = ?self.live_policies,
                shadow_policies = ?verdict.determining(),
                live_policy_hash = %self.live_hash,
                shadow_policy_hash = %self.bundle.hash,
                shadow_set = %self.set.name(),
                "shadow policy set disagrees"
            );
        }
    }
}
