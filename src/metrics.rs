//! Prometheus metrics. The registry is passed in; label values come from small fixed sets, and
//! the per-check counters are resolved once at startup so a check touches only atomics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// What a verified-token cache lookup found. Fixed set: it is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLookup {
    /// A usable entry: no signature verification.
    Hit,
    /// No entry: full verification.
    Miss,
    /// An entry whose signing key left the key set: dropped, full verification.
    Stale,
}

impl CacheLookup {
    const ALL: [CacheLookup; 3] = [CacheLookup::Hit, CacheLookup::Miss, CacheLookup::Stale];

    fn as_str(self) -> &'static str {
        match self {
            CacheLookup::Hit => "hit",
            CacheLookup::Miss => "miss",
            CacheLookup::Stale => "stale",
        }
    }
}

/// `mcp_authz_tool_calls_total` counters: server id -> tool name -> [allow, deny]. Built when a
/// policy set loads, from the tools its `entities.json` declares, so an attacker calling random
/// tool names cannot create series (they count as `other`).
#[derive(Default)]
pub struct ToolCounters {
    by_server: HashMap<String, HashMap<String, [IntCounter; 2]>>,
}

impl ToolCounters {
    /// One `tools/call`; lock-free.
    pub fn count(&self, server: &str, tool: &str, allowed: bool) {
        let Some(tools) = self.by_server.get(server) else {
            return;
        };
        if let Some([allow, deny]) = tools.get(tool).or_else(|| tools.get(OTHER_TOOL)) {
            if allowed { allow.inc() } else { deny.inc() }
        }
    }
}

const OTHER_TOOL: &str = "other";

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

/// Server id -> (method, allowed) -> counter.
type McpRequestCounters = HashMap<String, HashMap<(&'static str, bool), IntCounter>>;

struct Inner {
    /// `mcp_authz_checks_total`; the engine resolves its children once (see [`Metrics::check_counter`]).
    checks: IntCounterVec,
    check_duration: Histogram,
    key_refreshes: IntCounterVec,
    keys: IntGaugeVec,
    key_last_success: GaugeVec,
    key_fetch_errors: IntCounterVec,
    key_fetch_failures: IntGaugeVec,
    unknown_kid: IntCounterVec,
    policy_reloads: IntCounterVec,
    tls_reloads: IntCounterVec,
    policy_errors: IntCounterVec,
    tool_calls: IntCounterVec,
    /// `mcp_authz_mcp_requests_total`, resolved per (server, method, decision) at startup.
    /// Replaced (with the added servers' counters) when a configuration reload adds servers.
    mcp_requests: arc_swap::ArcSwap<McpRequestCounters>,
    mcp_requests_vec: IntCounterVec,
    policy_last_load: GaugeVec,
    policy_info: IntGaugeVec,
    /// `mcp_authz_policy_set_failing{set}`.
    policy_set_failing: IntGaugeVec,
    /// `mcp_authz_shadow_decisions_total{server, live, shadow}`.
    shadow_decisions: IntCounterVec,
    /// `mcp_authz_shadow_skipped_total{server}`.
    shadow_skipped: IntCounterVec,
    /// `mcp_authz_config_reloads_total{outcome}`.
    config_reloads: IntCounterVec,
    config_last_reload: Gauge,
    /// Indexed by `CacheLookup as usize`.
    token_cache_lookups: Vec<IntCounter>,
    token_cache_entries: IntGauge,
    /// `mcp_authz_decision_cache_lookups_total`: [hit, miss].
    decision_cache_lookups: [IntCounter; 2],
    decision_cache_entries: IntGauge,
    build_info: Gauge,
    /// `mcp_authz_checks_shed_total`, by why (see `grpc::admission`).
    checks_shed: IntCounterVec,
    checks_pending: IntGauge,
    draining: IntGauge,
    /// `mcp_authz_list_items_removed_total{server, kind}`.
    list_items_removed: IntCounterVec,
    /// `mcp_authz_list_responses_total{server, result}`.
    list_responses: IntCounterVec,
    /// `mcp_authz_dpop_proofs_total{result}`, resolved once per result.
    dpop_proofs: Vec<(&'static str, IntCounter)>,
    /// `mcp_authz_introspection_requests_total{issuer, result}`.
    introspection_requests: IntCounterVec,
    /// `mcp_authz_introspection_duration_seconds{issuer}`.
    introspection_duration: HistogramVec,
    /// `mcp_authz_introspection_cache_lookups_total{issuer, result}`.
    introspection_cache: IntCounterVec,
    /// `mcp_authz_upstream_identity_tokens_total{outcome}`: [minted, failed].
    upstream_tokens: [IntCounter; 2],
    /// `mcp_authz_upstream_identity_keys`: signing keys published in the JWKS.
    upstream_keys: IntGauge,
    /// `mcp_authz_upstream_identity_key_changes_total{outcome}`.
    upstream_key_changes: IntCounterVec,
}

/// The `result` values of `mcp_authz_dpop_proofs_total` (see `dpop::DpopError::label`).
pub const DPOP_RESULTS: [&str; 9] = [
    "valid",
    "missing",
    "malformed",
    "bad_signature",
    "wrong_target",
    "out_of_window",
    "wrong_binding",
    "replayed",
    "nonce_required",
];

impl Metrics {
    /// `servers` are the configured server ids: the only values of the `server` label.
    pub fn new(registry: &Registry, servers: &[&str]) -> Result<Self, prometheus::Error> {
        let checks = IntCounterVec::new(
            Opts::new(
                "mcp_authz_checks_total",
                "Authorization checks by decision and reason.",
            ),
            &["decision", "reason"],
        )?;
        // 10 us .. ~1.3 s: resolves cached-token checks and slow key fetches alike.
        let check_duration = Histogram::with_opts(
            HistogramOpts::new(
                "mcp_authz_check_duration_seconds",
                "Time to decide one check, from request to response.",
            )
            .buckets(prometheus::exponential_buckets(1e-5, 2.0, 18)?),
        )?;
        let key_refreshes = IntCounterVec::new(
            Opts::new(
                "mcp_authz_jwks_refreshes_total",
                "JWKS fetch attempts by issuer and outcome.",
            ),
            &["issuer", "outcome"],
        )?;
        let keys = IntGaugeVec::new(
            Opts::new("mcp_authz_jwks_keys", "Verification keys held per issuer."),
            &["issuer"],
        )?;
        let key_last_success = GaugeVec::new(
            Opts::new(
                "mcp_authz_jwks_last_success_timestamp_seconds",
                "Unix time of the last successful JWKS fetch per issuer.",
            ),
            &["issuer"],
        )?;
        let key_fetch_errors = IntCounterVec::new(
            Opts::new(
                "mcp_authz_jwks_fetch_errors_total",
                "Failed JWKS fetches by issuer and kind of error (timeout, network, rate_limited, server_error, status, too_large, malformed_jwks, no_usable_keys, discovery, issuer_mismatch, not_discovered).",
            ),
            &["issuer", "error"],
        )?;
        let key_fetch_failures = IntGaugeVec::new(
            Opts::new(
                "mcp_authz_jwks_consecutive_failures",
                "Failed JWKS fetches since the last success, per issuer (0 when healthy).",
            ),
            &["issuer"],
        )?;
        let unknown_kid = IntCounterVec::new(
            Opts::new(
                "mcp_authz_jwks_unknown_kid_refetches_total",
                "Tokens with an unknown kid, by what happened: started a refetch, joined one, rate_limited, or backoff (the last fetch failed and its retry delay has not passed).",
            ),
            &["issuer", "outcome"],
        )?;
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "mcp_authz_policy_reloads_total",
                "Policy reloads after a change on disk, by policy set (its directory) and outcome (success, failure).",
            ),
            &["set", "outcome"],
        )?;
        let policy_last_load = GaugeVec::new(
            Opts::new(
                "mcp_authz_policy_last_load_timestamp_seconds",
                "Unix time each policy set's live content was loaded.",
            ),
            &["set"],
        )?;
        let policy_info = IntGaugeVec::new(
            Opts::new(
                "mcp_authz_policy_info",
                "Each policy set's live content, by directory and content hash; always 1.",
            ),
            &["set", "hash"],
        )?;
        let policy_set_failing = IntGaugeVec::new(
            Opts::new(
                "mcp_authz_policy_set_failing",
                "1 while a policy set's files fail to load (its last good content still decides), else 0.",
            ),
            &["set"],
        )?;
        let shadow_decisions = IntCounterVec::new(
            Opts::new(
                "mcp_authz_shadow_decisions_total",
                "Requests evaluated by both a server's live and shadow policy sets, by what each decided (allow, deny, step_up, error, invalid); live != shadow is a disagreement.",
            ),
            &["server", "live", "shadow"],
        )?;
        let shadow_skipped = IntCounterVec::new(
            Opts::new(
                "mcp_authz_shadow_skipped_total",
                "Requests a shadow policy set did not evaluate, by server and why (overloaded: too many shadow evaluations pending; not_loaded: the shadow set has never loaded).",
            ),
            &["server", "reason"],
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "mcp_authz_config_reloads_total",
                "Configuration file reloads after a change on disk, by outcome (success, failure: the last good configuration stays).",
            ),
            &["outcome"],
        )?;
        let config_last_reload = Gauge::with_opts(Opts::new(
            "mcp_authz_config_last_reload_timestamp_seconds",
            "Unix time the configuration in use was loaded (at start or by a reload).",
        ))?;
        let policy_errors = IntCounterVec::new(
            Opts::new(
                "mcp_authz_policy_evaluation_errors_total",
                "Policies that failed to evaluate (the request was denied), by policy id.",
            ),
            &["policy"],
        )?;
        let tls_reloads = IntCounterVec::new(
            Opts::new(
                "mcp_authz_tls_reloads_total",
                "TLS certificate reloads after the files changed, by outcome (success, failure: the previous certificate stays in use).",
            ),
            &["outcome"],
        )?;
        for outcome in ["success", "failure"] {
            tls_reloads.with_label_values(&[outcome]);
            config_reloads.with_label_values(&[outcome]);
        }
        config_last_reload.set(unix_now());
        let tool_calls = IntCounterVec::new(
            Opts::new(
                "mcp_authz_tool_calls_total",
                "tools/call messages by server, tool (those declared in entities.json, else `other`) and decision.",
            ),
            &["server", "tool", "decision"],
        )?;
        let mcp_requests_vec = IntCounterVec::new(
            Opts::new(
                "mcp_authz_mcp_requests_total",
                "Authenticated MCP messages by server, method (known methods, else `other`) and decision.",
            ),
            &["server", "method", "decision"],
        )?;
        let mut mcp_requests = McpRequestCounters::new();
        for server in servers {
            mcp_requests.insert(
                server.to_string(),
                server_mcp_counters(&mcp_requests_vec, server),
            );
        }
        let token_cache_vec = IntCounterVec::new(
            Opts::new(
                "mcp_authz_token_cache_lookups_total",
                "Verified-token cache lookups by result: hit, miss, stale (signing key gone).",
            ),
            &["result"],
        )?;
        let token_cache_lookups = CacheLookup::ALL
            .iter()
            .map(|r| token_cache_vec.with_label_values(&[r.as_str()]))
            .collect();
        let token_cache_entries = IntGauge::with_opts(Opts::new(
            "mcp_authz_token_cache_entries",
            "Verified tokens held in the cache (approximate; at most cache.tokens).",
        ))?;
        let decision_cache_vec = IntCounterVec::new(
            Opts::new(
                "mcp_authz_decision_cache_lookups_total",
                "Decision cache lookups by result: hit (answered without Cedar), miss.",
            ),
            &["result"],
        )?;
        let decision_cache_lookups = [
            decision_cache_vec.with_label_values(&["hit"]),
            decision_cache_vec.with_label_values(&["miss"]),
        ];
        let decision_cache_entries = IntGauge::with_opts(Opts::new(
            "mcp_authz_decision_cache_entries",
            "Decisions held in the cache for the active policy set (approximate; at most cache.decisions).",
        ))?;
        let build_info = Gauge::with_opts(
            Opts::new("mcp_authz_build_info", "Build information; always 1.")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build_info.set(1.0);
        let checks_shed = IntCounterVec::new(
            Opts::new(
                "mcp_authz_checks_shed_total",
                "Checks refused undecided (gRPC UNAVAILABLE) because too many were pending or one had waited too long to start, by reason.",
            ),
            &["reason"],
        )?;
        for reason in crate::grpc::Shed::ALL {
            checks_shed.with_label_values(&[reason.as_str()]);
        }
        let checks_pending = IntGauge::with_opts(Opts::new(
            "mcp_authz_checks_pending",
            "Checks received and not yet answered.",
        ))?;
        let draining = IntGauge::with_opts(Opts::new(
            "mcp_authz_draining",
            "1 while shutting down: NOT_SERVING, still answering checks until the drain delay ends.",
        ))?;
        let list_items_removed = IntCounterVec::new(
            Opts::new(
                "mcp_authz_list_items_removed_total",
                "Items removed from tools/list, prompts/list, resources/list and resources/templates/list responses, by server and kind (tools, prompts, resources, resource_templates).",
            ),
            &["server", "kind"],
        )?;
        let list_responses = IntCounterVec::new(
            Opts::new(
                "mcp_authz_list_responses_total",
                "List responses the list filter (ext_proc) handled, by server and result: filtered, error (replaced by a JSON-RPC error: unreadable, too large, compressed, or no caller from ext_authz), passed (not a success, passed as is).",
            ),
            &["server", "result"],
        )?;
        for server in servers {
            for kind in crate::lists::ListKind::ALL {
                list_items_removed.with_label_values(&[server, kind.as_str()]);
            }
            for result in ["filtered", "error", "passed"] {
                list_responses.with_label_values(&[server, result]);
            }
        }
        let dpop_vec = IntCounterVec::new(
            Opts::new(
                "mcp_authz_dpop_proofs_total",
                "DPoP proofs checked (RFC 9449), by result: valid, missing, malformed, bad_signature, wrong_target (htm or htu), out_of_window (iat), wrong_binding (ath or the key is not the token's cnf.jkt), replayed (jti seen), nonce_required (use_dpop_nonce).",
            ),
            &["result"],
        )?;
        let dpop_proofs = DPOP_RESULTS
            .iter()
            .map(|r| (*r, dpop_vec.with_label_values(&[r])))
            .collect();
        registry.register(Box::new(dpop_vec))?;
        let introspection_requests = IntCounterVec::new(
            Opts::new(
                "mcp_authz_introspection_requests_total",
                "Token introspection requests (RFC 7662) by issuer and result: active, inactive, refused (active, but for another issuer, not an access token, or a malformed cnf), or why there was no answer (timeout, network, server_error, status, too_large, malformed, overloaded, no_endpoint; the check was answered 503).",
            ),
            &["issuer", "result"],
        )?;
        // 1 ms .. ~4 s.
        let introspection_duration = HistogramVec::new(
            HistogramOpts::new(
                "mcp_authz_introspection_duration_seconds",
                "Time one introspection request took, by issuer (waiting for a free slot included).",
            )
            .buckets(prometheus::exponential_buckets(1e-3, 2.0, 13)?),
            &["issuer"],
        )?;
        let introspection_cache = IntCounterVec::new(
            Opts::new(
                "mcp_authz_introspection_cache_lookups_total",
                "Introspection cache lookups by issuer and result: hit (answered without a request, active or not), miss.",
            ),
            &["issuer", "result"],
        )?;
        registry.register(Box::new(introspection_requests.clone()))?;
        registry.register(Box::new(introspection_duration.clone()))?;
        registry.register(Box::new(introspection_cache.clone()))?;
        let upstream_tokens_vec = IntCounterVec::new(
            Opts::new(
                "mcp_authz_upstream_identity_tokens_total",
                "Signed upstream identities by outcome (minted, failed: the request was answered 503).",
            ),
            &["outcome"],
        )?;
        let upstream_tokens = [
            upstream_tokens_vec.with_label_values(&["minted"]),
            upstream_tokens_vec.with_label_values(&["failed"]),
        ];
        let upstream_keys = IntGauge::new(
            "mcp_authz_upstream_identity_keys",
            "Upstream identity signing keys published in the JWKS.",
        )?;
        let upstream_key_changes = IntCounterVec::new(
            Opts::new(
                "mcp_authz_upstream_identity_key_changes_total",
                "Upstream identity key set changes by outcome (rotated, reloaded, failed).",
            ),
            &["outcome"],
        )?;
        for outcome in ["rotated", "reloaded", "failed"] {
            upstream_key_changes.with_label_values(&[outcome]);
        }
        registry.register(Box::new(upstream_tokens_vec))?;
        registry.register(Box::new(upstream_keys.clone()))?;
        registry.register(Box::new(upstream_key_changes.clone()))?;
        registry.register(Box::new(list_items_removed.clone()))?;
        registry.register(Box::new(list_responses.clone()))?;
        registry.register(Box::new(checks_shed.clone()))?;
        registry.register(Box::new(checks_pending.clone()))?;
        registry.register(Box::new(draining.clone()))?;
        registry.register(Box::new(checks.clone()))?;
        registry.register(Box::new(check_duration.clone()))?;
        registry.register(Box::new(key_refreshes.clone()))?;
        registry.register(Box::new(keys.clone()))?;
        registry.register(Box::new(key_last_success.clone()))?;
        registry.register(Box::new(key_fetch_errors.clone()))?;
        registry.register(Box::new(key_fetch_failures.clone()))?;
        registry.register(Box::new(unknown_kid.clone()))?;
        registry.register(Box::new(policy_reloads.clone()))?;
        registry.register(Box::new(tls_reloads.clone()))?;
        registry.register(Box::new(policy_errors.clone()))?;
        registry.register(Box::new(tool_calls.clone()))?;
        registry.register(Box::new(mcp_requests_vec.clone()))?;
        registry.register(Box::new(token_cache_vec))?;
        registry.register(Box::new(token_cache_entries.clone()))?;
        registry.register(Box::new(decision_cache_vec))?;
        registry.register(Box::new(decision_cache_entries.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        registry.register(Box::new(policy_last_load.clone()))?;
        registry.register(Box::new(policy_info.clone()))?;
        registry.register(Box::new(policy_set_failing.clone()))?;
        registry.register(Box::new(shadow_decisions.clone()))?;
        registry.register(Box::new(shadow_skipped.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(config_last_reload.clone()))?;
        registry.register(Box::new(build_info.clone()))?;
        registry.register(Box::new(RuntimeTasks::new()?))?;
        Ok(Self {
            inner: Arc::new(Inner {
                checks,
                check_duration,
                key_refreshes,
                keys,
                key_last_success,
                key_fetch_errors,
                key_fetch_failures,
                unknown_kid,
                policy_reloads,
                tls_reloads,
                policy_errors,
                tool_calls,
                mcp_requests: arc_swap::ArcSwap::from_pointee(mcp_requests),
                mcp_requests_vec,
                policy_last_load,
                policy_info,
                policy_set_failing,
                shadow_decisions,
                shadow_skipped,
                config_reloads,
                config_last_reload,
                token_cache_lookups,
                token_cache_entries,
                decision_cache_lookups,
                decision_cache_entries,
                build_info,
                checks_shed,
                checks_pending,
                draining,
                list_items_removed,
                list_responses,
                dpop_proofs,
                introspection_requests,
                introspection_duration,
                introspection_cache,
                upstream_tokens,
                upstream_keys,
                upstream_key_changes,
            }),
        })
    }

    /// Metrics that go nowhere, for tests and tools.
    pub fn unregistered() -> Self {
        // INVARIANT: a fresh registry has no name collisions.
        match Self::new(&Registry::new(), &[]) {
            Ok(m) => m,
            Err(e) => unreachable!("metrics on an empty registry: {e}"),
        }
    }

    /// The `mcp_authz_checks_total` child for one (decision, reason) pair. Resolved once at
    /// startup by the engine, which owns the set of reasons, so a check touches only an atomic.
    pub fn check_counter(&self, decision: &str, reason: &str) -> IntCounter {
        self.inner.checks.with_label_values(&[decision, reason])
    }

    /// The time one check took.
    pub fn check_duration(&self, elapsed: Duration) {
        self.inner.check_duration.observe(elapsed.as_secs_f64());
    }

    pub fn token_cache(&self, lookup: CacheLookup) {
        // INVARIANT: `token_cache_lookups` is built from `CacheLookup::ALL`, in declaration order.
        if let Some(c) = self.inner.token_cache_lookups.get(lookup as usize) {
            c.inc();
        }
    }

    pub fn token_cache_entries(&self, n: u64) {
        self.inner
            .token_cache_entries
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A decision cache lookup: [`CacheLookup::Hit`] or [`CacheLookup::Miss`] (a decision cache
    /// has no stale entries: a new policy set starts a new cache).
    pub fn decision_cache(&self, lookup: CacheLookup) {
        let [hit, miss] = &self.inner.decision_cache_lookups;
        match lookup {
            CacheLookup::Hit => hit.inc(),
            CacheLookup::Miss | CacheLookup::Stale => miss.inc(),
        }
    }

    /// `mcp_authz_decision_cache_lookups_total` so far: (hit, miss).
    pub fn decision_cache_counts(&self) -> (u64, u64) {
        let [hit, miss] = &self.inner.decision_cache_lookups;
        (hit.get(), miss.get())
    }

    pub fn decision_cache_entries(&self, n: u64) {
        self.inner
            .decision_cache_entries
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Creates an issuer's series at zero, so alerts on them work before anything happens.
    pub fn issuer_registered(&self, issuer: &str) {
        for outcome in ["success", "failure"] {
            self.inner
                .key_refreshes
                .with_label_values(&[issuer, outcome]);
        }
        for outcome in ["started", "joined", "rate_limited", "backoff"] {
            self.inner.unknown_kid.with_label_values(&[issuer, outcome]);
        }
        for kind in crate::keys::FetchError::KINDS {
            self.inner
                .key_fetch_errors
                .with_label_values(&[issuer, kind]);
        }
        self.inner.key_fetch_failures.with_label_values(&[issuer]);
    }

    /// One failed fetch; `kind` is one of [`crate::keys::FetchError::KINDS`].
    pub fn key_fetch_error(&self, issuer: &str, kind: &'static str) {
        self.inner
            .key_fetch_errors
            .with_label_values(&[issuer, kind])
            .inc();
    }

    /// Failed fetches since the last success.
    pub fn key_fetch_failures(&self, issuer: &str, n: u32) {
        self.inner
            .key_fetch_failures
            .with_label_values(&[issuer])
            .set(i64::from(n));
    }

    pub fn key_refresh(&self, issuer: &str, outcome: &str) {
        self.inner
            .key_refreshes
            .with_label_values(&[issuer, outcome])
            .inc();
        if outcome == "success" {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.inner
                .key_last_success
                .with_label_values(&[issuer])
                .set(now);
        }
    }

    pub fn keys_loaded(&self, issuer: &str, n: usize) {
        self.inner
            .keys
            .with_label_values(&[issuer])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Creates an introspecting issuer's series at zero.
    pub fn introspection_registered(&self, issuer: &str) {
        for result in ["active", "inactive", "refused"]
            .into_iter()
            .chain(crate::introspection::Failure::KINDS)
        {
            self.inner
                .introspection_requests
                .with_label_values(&[issuer, result]);
        }
        for result in ["hit", "miss"] {
            self.inner
                .introspection_cache
                .with_label_values(&[issuer, result]);
        }
        self.inner
            .introspection_duration
            .with_label_values(&[issuer]);
    }

    /// One introspection request and what came of it.
    pub fn introspection_request(&self, issuer: &str, result: &str, elapsed: Duration) {
        self.inner
            .introspection_requests
            .with_label_values(&[issuer, result])
            .inc();
        self.inner
            .introspection_duration
            .with_label_values(&[issuer])
            .observe(elapsed.as_secs_f64());
    }

    pub fn introspection_cache(&self, issuer: &str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.inner
            .introspection_cache
            .with_label_values(&[issuer, result])
            .inc();
    }

    pub fn unknown_kid_refetch(&self, issuer: &str, outcome: &str) {
        self.inner
            .unknown_kid
            .with_label_values(&[issuer, outcome])
            .inc();
    }

    /// One authenticated MCP message and whether it was allowed. Lock-free: the counters were
    /// resolved at startup; unknown methods count as `other`, unknown servers not at all.
    /// Items a list filter removed. `server` must be a configured id (unknown ones are not
    /// counted, so they cannot create series).
    pub fn list_items_removed(&self, server: &str, kind: crate::lists::ListKind, n: usize) {
        if n > 0 && self.is_server(server) {
            self.inner
                .list_items_removed
                .with_label_values(&[server, kind.as_str()])
                .inc_by(n as u64);
        }
    }

    /// One list response handled: `filtered`, `error` or `passed`. Unknown servers count as
    /// `unknown` (the caller came without one: fail-closed answers are still counted).
    /// One DPoP proof checked; `result` is one of [`DPOP_RESULTS`].
    pub fn dpop_proof(&self, result: &'static str) {
        if let Some((_, c)) = self.inner.dpop_proofs.iter().find(|(r, _)| *r == result) {
            c.inc();
        }
    }

    pub fn list_response(&self, server: &str, result: &'static str) {
        let server = if self.is_server(server) {
            server
        } else {
            "unknown"
        };
        self.inner
            .list_responses
            .with_label_values(&[server, result])
            .inc();
    }

    /// One upstream identity minted (`true`) or not (`false`: the request was refused).
    pub fn upstream_token(&self, minted: bool) {
        let [ok, failed] = &self.inner.upstream_tokens;
        if minted { ok.inc() } else { failed.inc() }
    }

    /// How many upstream identity keys the JWKS publishes.
    pub fn upstream_keys(&self, n: usize) {
        self.inner
            .upstream_keys
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A change of the upstream identity key set: `rotated`, `reloaded` or `failed`.
    pub fn upstream_key_change(&self, outcome: &'static str) {
        self.inner
            .upstream_key_changes
            .with_label_values(&[outcome])
            .inc();
    }

    pub fn mcp_request(&self, server: &str, action: Option<&'static str>, allowed: bool) {
        let method = action.unwrap_or("other");
        if let Some(c) = self
            .inner
            .mcp_requests
            .load()
            .get(server)
            .and_then(|m| m.get(&(method, allowed)))
        {
            c.inc();
        }
    }

    /// Whether `server` is a configured id (at startup or by a reload): the only values of the
    /// `server` label. Lock-free.
    fn is_server(&self, server: &str) -> bool {
        self.inner.mcp_requests.load().contains_key(server)
    }

    /// Makes `servers` (a configuration's ids, as a reload may add) values of the `server`
    /// label (of `mcp_authz_mcp_requests_total` at once; of the per-tool and list series as
    /// their sets are counted again). Ids never configured stay out. Whether any was added.
    pub fn register_servers<'a>(&self, servers: impl IntoIterator<Item = &'a str>) -> bool {
        let current = self.inner.mcp_requests.load();
        let added: Vec<&str> = servers
            .into_iter()
            .filter(|s| !current.contains_key(*s))
            .collect();
        if added.is_empty() {
            return false;
        }
        let mut next = (**current).clone();
        for server in added {
            next.insert(
                server.to_owned(),
                server_mcp_counters(&self.inner.mcp_requests_vec, server),
            );
        }
        self.inner.mcp_requests.store(Arc::new(next));
        true
    }

    /// Resolves the tool counters for a policy set: each declared tool of a configured server,
    /// plus `other` for each configured server.
    pub fn tool_counters(&self, declared: &[(String, String)]) -> ToolCounters {
        let pair = |server: &str, tool: &str| {
            [
                self.inner
                    .tool_calls
                    .with_label_values(&[server, tool, "allow"]),
                self.inner
                    .tool_calls
                    .with_label_values(&[server, tool, "deny"]),
            ]
        };
        let mut by_server: HashMap<String, HashMap<String, [IntCounter; 2]>> = HashMap::new();
        for server in self.inner.mcp_requests.load().keys() {
            by_server
                .entry(server.clone())
                .or_default()
                .insert(OTHER_TOOL.to_owned(), pair(server, OTHER_TOOL));
        }
        for (server, tool) in declared {
            if let Some(tools) = by_server.get_mut(server) {
                tools.insert(tool.clone(), pair(server, tool));
            }
        }
        ToolCounters { by_server }
    }

    pub fn policy_error(&self, policy: &str) {
        self.inner.policy_errors.with_label_values(&[policy]).inc();
    }

    /// A TLS reload after the certificate files changed: `success` or `failure`.
    pub fn tls_reload(&self, outcome: &str) {
        self.inner.tls_reloads.with_label_values(&[outcome]).inc();
    }

    /// A policy set's reload after a change on disk: `success` or `failure`.
    pub fn policy_reload(&self, set: &str, outcome: &str) {
        self.inner
            .policy_reloads
            .with_label_values(&[set, outcome])
            .inc();
    }

    /// Records a policy set's live content: its hash (the set's only series of the info metric,
    /// replacing `previous`), its load time, its reload counters and failing flag at zero, and
    /// a zero error series per policy id so dashboards and alerts see every policy.
    pub fn policy_loaded(
        &self,
        set: &str,
        previous: Option<&str>,
        hash: &str,
        at: SystemTime,
        policy_ids: &[String],
    ) {
        for id in policy_ids {
            self.inner.policy_errors.with_label_values(&[id.as_str()]);
        }
        if let Some(previous) = previous
            && previous != hash
        {
            let _ = self.inner.policy_info.remove_label_values(&[set, previous]);
        }
        self.inner
            .policy_info
            .with_label_values(&[set, hash])
            .set(1);
        for outcome in ["success", "failure"] {
            self.inner.policy_reloads.with_label_values(&[set, outcome]);
        }
        self.inner.policy_set_failing.with_label_values(&[set]);
        let t = at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.inner.policy_last_load.with_label_values(&[set]).set(t);
    }

    /// `mcp_authz_policy_set_failing{set}`.
    pub fn policy_set_failing(&self, set: &str, failing: bool) {
        self.inner
            .policy_set_failing
            .with_label_values(&[set])
            .set(i64::from(failing));
    }

    /// A policy set no longer used by the configuration: its series go.
    pub fn policy_set_removed(&self, set: &str, hash: &str) {
        let inner = &self.inner;
        let _ = inner.policy_info.remove_label_values(&[set, hash]);
        let _ = inner.policy_last_load.remove_label_values(&[set]);
        let _ = inner.policy_set_failing.remove_label_values(&[set]);
        for outcome in ["success", "failure"] {
            let _ = inner.policy_reloads.remove_label_values(&[set, outcome]);
        }
    }

    /// The `mcp_authz_shadow_decisions_total` child for one (server, live, shadow) triple.
    pub fn shadow_decision(&self, server: &str, live: &str, shadow: &str) -> IntCounter {
        self.inner
            .shadow_decisions
            .with_label_values(&[server, live, shadow])
    }

    /// `mcp_authz_shadow_decisions_total` for one server so far: (live, shadow, count).
    pub fn shadow_counts(&self, server: &str) -> Vec<(String, String, u64)> {
        use prometheus::core::Collector;
        let mut out = Vec::new();
        for family in self.inner.shadow_decisions.collect() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default()
                };
                if label("server") == server {
                    // Counter values are whole numbers held as f64.
                    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let count = m.get_counter().value() as u64;
                    out.push((label("live"), label("shadow"), count));
                }
            }
        }
        out.sort();
        out
    }

    /// Creates a shadowed server's skip series at zero, so alerts on them work at once.
    pub fn shadow_series(&self, server: &str) {
        for reason in ["not_loaded", "overloaded"] {
            self.inner
                .shadow_skipped
                .with_label_values(&[server, reason]);
        }
    }

    /// A request a server's shadow set did not evaluate: `overloaded` or `not_loaded`.
    pub fn shadow_skipped(&self, server: &str, reason: &str) {
        self.inner
            .shadow_skipped
            .with_label_values(&[server, reason])
            .inc();
    }

    /// A configuration reload: `success` (also sets the load time) or `failure`.
    pub fn config_reload(&self, outcome: &str) {
        self.inner
            .config_reloads
            .with_label_values(&[outcome])
            .inc();
        if outcome == "success" {
            self.inner.config_last_reload.set(unix_now());
        }
    }

    /// The `mcp_authz_checks_shed_total` child for one reason, resolved once by the admission
    /// gate so shedding touches only an atomic.
    pub fn checks_shed(&self, reason: crate::grpc::Shed) -> IntCounter {
        self.inner.checks_shed.with_label_values(&[reason.as_str()])
    }

    /// `mcp_authz_checks_pending`.
    pub fn checks_pending(&self) -> IntGauge {
        self.inner.checks_pending.clone()
    }

    /// `mcp_authz_draining`.
    pub fn set_draining(&self, draining: bool) {
        self.inner.draining.set(i64::from(draining));
    }

    pub fn build_info(&self) -> f64 {
        self.inner.build_info.get()
    }
}

/// `mcp_authz_runtime_tasks`: the tokio tasks alive, read when `/metrics` is scraped from the
/// runtime serving it (the server's one runtime). A task leaked per connection, refresh or
/// reload shows here long before it shows in memory (the soak watches it).
struct RuntimeTasks {
    gauge: IntGauge,
}

impl RuntimeTasks {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            gauge: IntGauge::with_opts(Opts::new(
                "mcp_authz_runtime_tasks",
                "Tokio tasks alive in the server's runtime, read at scrape time.",
            ))?,
        })
    }
}

impl prometheus::core::Collector for RuntimeTasks {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        // Outside a runtime (a tool gathering offline) the last value stays: 0.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let alive = handle.metrics().num_alive_tasks();
            self.gauge.set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
        self.gauge.collect()
    }
}

/// One server's `mcp_authz_mcp_requests_total` children, by (method, allowed).
fn server_mcp_counters(
    vec: &IntCounterVec,
    server: &str,
) -> HashMap<(&'static str, bool), IntCounter> {
    let mut per_server = HashMap::new();
    for method in crate::mcp::KNOWN_METHODS
        .iter()
        .copied()
        .chain(["response", "GET", "DELETE", "other"])
    {
        for allowed in [true, false] {
            let decision = if allowed { "allow" } else { "deny" };
            per_server.insert(
                (method, allowed),
                vec.with_label_values(&[server, method, decision]),
            );
        }
    }
    per_server
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    fn text_of(registry: &Registry) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn runtime_tasks_count_the_tasks_alive_at_scrape_time() {
        let registry = Registry::new();
        let _m = Metrics::new(&registry, &["demo"]).unwrap();
        let tasks: Vec<_> = (0..3)
            .map(|_| tokio::spawn(std::future::pending::<()>()))
            .collect();
        assert!(text_of(&registry).contains("mcp_authz_runtime_tasks 3\n"));
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        assert!(text_of(&registry).contains("mcp_authz_runtime_tasks 0\n"));
    }

    #[test]
    fn counters_land_under_their_labels() {
        let registry = Registry::new();
        let m = Metrics::new(&registry, &["demo"]).unwrap();
        m.mcp_request("demo", Some("tools/call"), true);
        m.mcp_request("demo", None, false);
        m.mcp_request("not-configured", Some("ping"), true);
        m.check_counter("deny", "invalid_token").inc();
        m.check_duration(Duration::from_micros(50));
        m.check_counter("allow", "allowed").inc();
        m.check_duration(Duration::from_micros(20));
        m.key_refresh("https://idp", "failure");
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("mcp_authz_checks_total{decision=\"deny\",reason=\"invalid_token\"} 1")
        );
        assert!(text.contains("mcp_authz_checks_total{decision=\"allow\",reason=\"allowed\"} 1"));
        assert!(text.contains("mcp_authz_check_duration_seconds_count 2"));
        assert!(text.contains(
            "mcp_authz_jwks_refreshes_total{issuer=\"https://idp\",outcome=\"failure\"} 1"
        ));
        assert!(text.contains(
            "mcp_authz_mcp_requests_total{decision=\"allow\",method=\"tools/call\",server=\"demo\"} 1"
        ));
        assert!(text.contains(
            "mcp_authz_mcp_requests_total{decision=\"deny\",method=\"other\",server=\"demo\"} 1"
        ));
        assert!(!text.contains("not-configured"));
        assert_eq!(m.build_info(), 1.0);
    }
}
