//! The decision engine: a request in domain terms goes in, a [`Decision`] comes out. No gRPC or
//! protobuf types here; `grpc.rs` adapts Envoy's messages to and from these.
//!
//! A check routes the request to a protected server (`resource`), reads the bearer credential
//! (`bearer`), resolves the caller (`caller`: token verification and the per-token principal,
//! cached), reads the MCP message (`mcp`), evaluates the policies (`policy`) and turns the
//! outcome into an answer (`respond`); `log` writes the decision line.

mod authorize;
mod caller;
mod decisions;
pub mod headers;
mod log;
mod reason;
mod respond;
mod sets;
mod shadow;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use prometheus::IntCounter;

use crate::bearer::{self, Credentials};
use crate::challenge::Scheme;
use crate::config::{Config, DecisionLog, IdentityHeaders, Limits, TokenBinding};
use crate::dpop::{Dpop, DpopSetupError, ProofInput};
use crate::identity::Identity;
use crate::keys::{IssuerKeys, KeySetupError};
use crate::lists::{ListCaller, ListError, ListFilter, ListKind, ListMark, ListVerdicts};
use crate::mcp::{self, HttpParts, McpRequest, Target};
use crate::metrics::Metrics;
use crate::policy::{PolicySets, PolicyStore, SetsError};
use crate::resource::{ProtectedServer, Route, ServerSetupError, Servers};
use crate::upstream_identity::{self, UpstreamIdentity};
use authorize::{Evaluation, Verdict};
pub use caller::{Caller, Callers, Credential, verify_jwt};
pub use decisions::Decisions;
use log::Facts;
pub use reason::Reason;
pub use sets::{
    ConfigStatus, IntoPolicySets, ServerPolicies, ServerPolicyStatus, ShadowCount, ShadowPolicies,
};
use shadow::{Shadow, ShadowJob};

/// The parts of an HTTP request a decision depends on, borrowed from the transport.
pub struct CheckInput<'a> {
    pub method: &'a str,
    /// Raw path with query, as Envoy sends it.
    pub path: &'a str,
    /// `:authority` / `Host`.
    pub host: &'a str,
    /// Lowercased names; repeated headers joined with `,` (Envoy's encoding).
    pub headers: &'a HashMap<String, String>,
    pub body: &'a [u8],
}

/// What to tell Envoy.
#[derive(Debug)]
pub enum Decision {
    /// Forward upstream with these header changes.
    Allow(Box<Allow>),
    /// Answer the client directly (a denial, an error, or a PRM document).
    Respond(Respond),
}

#[derive(Debug)]
pub struct Allow {
    /// Random id tying this decision to its log line; also sent upstream, and the `jti` of the
    /// signed upstream identity.
    pub decision_id: String,
    pub server_id: String,
    /// Who is calling (shared with the caller cache).
    pub caller: Arc<Caller>,
    /// The permits that allowed each message, in order, deduplicated.
    pub policies: Vec<String>,
    /// Set with overwrite semantics, so a client cannot pre-set them.
    pub set_headers: Vec<(String, String)>,
    /// `authorization` (no token passthrough) and identity headers that have no value.
    pub remove_headers: Vec<String>,
    /// For a list call (or a GET stream, which may replay one) on a server whose lists are
    /// filtered: what the list filter needs, carried through Envoy (see `lists`).
    pub list: Option<ListContext>,
}

/// What ext_authz hands the list filter, beside the caller's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListContext {
    pub mark: ListMark,
    pub server_tenant: String,
    pub protocol_version: String,
    pub session_id: String,
}

#[derive(Debug)]
pub struct Respond {
    /// Random id tying this decision to its log line; also sent to the client (denials only).
    pub decision_id: String,
    pub status: u16,
    /// Fixed names, except the configured decision-id header.
    pub headers: Vec<(Cow<'static, str>, String)>,
    pub body: String,
    pub reason: Reason,
    /// The forbids that denied (empty for a default deny or a non-policy answer).
    pub policies: Vec<String>,
}

/// Why the engine could not be built from a configuration that passed validation.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Server(#[from] ServerSetupError),
    #[error(transparent)]
    Keys(#[from] KeySetupError),
    #[error(transparent)]
    Dpop(#[from] DpopSetupError),
    #[error("upstream_identity.keys: {0}")]
    UpstreamIdentity(#[from] upstream_identity::KeyError),
    #[error(transparent)]
    Policies(#[from] SetsError),
    #[error("servers[{index}] (`{id}`): its policy set `{dir}` was not opened")]
    MissingPolicySet {
        index: usize,
        id: String,
        dir: String,
    },
}

/// What a configuration decides, swapped whole when the configuration file reloads: a check
/// loads it once and sees one configuration throughout.
pub struct Setup {
    servers: Servers,
    issuers: Vec<Arc<IssuerKeys>>,
    /// Each server's policy sets and decision caches, by [`ProtectedServer::index`].
    policies: Vec<ServerPolicies>,
    sets: PolicySets,
    header_names: IdentityHeaders,
    limits: Limits,
    decision_log: DecisionLog,
}

/// Everything a check needs: the swappable [`Setup`], and what outlives a configuration
/// reload (the DPoP replay cache and nonce secret, the upstream signing keys, metrics).
pub struct Engine {
    setup: ArcSwap<Setup>,
    callers: Callers,
    /// Listed items' verdicts (see `lists`).
    list_verdicts: ListVerdicts,
    /// Shadow evaluations in flight (see `engine/shadow.rs`).
    shadow: Arc<Shadow>,
    /// The configuration file's state, set by the reloader (`server::reload`).
    config_status: ArcSwap<ConfigStatus>,
    /// DPoP proof checks and their replay cache (RFC 9449).
    dpop: Dpop,
    metrics: Metrics,
    /// `mcp_authz_checks_total` by [`Reason`], resolved once so a check touches one atomic.
    /// INVARIANT: indexed by `Reason as usize`, built from `Reason::ALL` (declaration order).
    check_counters: Vec<IntCounter>,
    /// Signs identities for servers with `upstream_identity` (`None` without the section).
    upstream_identity: Option<Arc<UpstreamIdentity>>,
}

// === impl Allow ===

impl Allow {
    pub fn identity(&self) -> &Identity {
        self.caller.identity()
    }
}

// === impl Engine ===

impl Engine {
    /// `issuers` must hold one entry per configured issuer (see [`Engine::issuers_from_config`]);
    /// `policies` every set the configuration names ([`PolicySets::open`]), or one store that
    /// decides for every server.
    pub fn new(
        config: &Config,
        issuers: Vec<Arc<IssuerKeys>>,
        policies: impl IntoPolicySets,
        metrics: Metrics,
    ) -> Result<Self, EngineError> {
        let dpop = Dpop::new(&config.dpop, config.limits.max_token_bytes)?;
        let sets = policies.into_sets(config);
        let setup = Setup::new(config, issuers, sets, &dpop, &metrics)?;
        let check_counters = Reason::ALL
            .iter()
            .map(|r| metrics.check_counter(r.decision(), r.as_str()))
            .collect();
        let upstream_identity = config
            .upstream_identity
            .as_ref()
            .map(|u| UpstreamIdentity::new(u, metrics.clone()).map(Arc::new))
            .transpose()?;
        Ok(Self {
            setup: ArcSwap::from_pointee(setup),
            callers: Callers::new(config.cache.tokens, metrics.clone()),
            list_verdicts: ListVerdicts::new(config.cache.decisions),
            shadow: Arc::new(Shadow::new(metrics.clone())),
            config_status: ArcSwap::from_pointee(ConfigStatus::default()),
            dpop,
            metrics,
            check_counters,
            upstream_identity,
        })
    }

    /// Takes a new configuration's servers, issuers, policy sets and settings, all at once:
    /// checks that start after this see only the new ones. Everything is built before the
    /// swap, so an error leaves the running configuration untouched. The caches of callers and
    /// decisions start empty (a cached caller or decision may depend on what changed). What
    /// this does not change (listeners, DPoP, the upstream identity, cache sizes, overload)
    /// needs a restart; the caller names those (see `server::reload`).
    pub fn reconfigure(
        &self,
        config: &Config,
        issuers: Vec<Arc<IssuerKeys>>,
        sets: PolicySets,
    ) -> Result<(), EngineError> {
        let setup = Setup::new(config, issuers, sets, &self.dpop, &self.metrics)?;
        self.setup.store(Arc::new(setup));
        self.callers.clear();
        Ok(())
    }

    /// The configuration in use: servers, issuers, policy sets.
    pub fn setup(&self) -> Arc<Setup> {
        self.setup.load_full()
    }

    /// Builds the key holders for every configured issuer (none fetched yet).
    pub fn issuers_from_config(
        config: &Config,
        metrics: &Metrics,
    ) -> Result<Vec<Arc<IssuerKeys>>, EngineError> {
        config
            .issuers
            .iter()
            .map(|i| IssuerKeys::new(i.clone(), metrics.clone(), config.limits.max_jwks_bytes))
            .collect::<Result<_, _>>()
            .map_err(EngineError::from)
    }

    pub fn issuers(&self) -> Vec<Arc<IssuerKeys>> {
        self.setup.load().issuers.clone()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The live policy set of the first server (the only one, for tools and tests that build
    /// an engine around one store).
    pub fn policies(&self) -> Option<Arc<PolicyStore>> {
        self.setup.load().policies.first().map(|p| p.live.clone())
    }

    /// The verified-caller cache.
    pub fn callers(&self) -> &Callers {
        &self.callers
    }

    /// The first server's live decision cache (see [`Engine::policies`]; a configuration has
    /// at least one server).
    pub fn decisions(&self) -> Arc<Decisions> {
        self.setup.load().policies.first().map_or_else(
            || Arc::new(Decisions::new(0, self.metrics.clone())),
            |p| p.decisions.clone(),
        )
    }

    /// The upstream identity issuer, when configured.
    pub fn upstream_identity(&self) -> Option<&Arc<UpstreamIdentity>> {
        self.upstream_identity.as_ref()
    }

    /// Ready when every issuer can have its tokens checked (see [`IssuerKeys::is_ready`]).
    pub fn is_ready(&self) -> bool {
        self.setup.load().issuers.iter().all(|i| i.is_ready())
    }

    pub async fn check(&self, input: &CheckInput<'_>) -> Decision {
        let started = Instant::now();
        let setup = self.setup.load_full();
        let mut facts = Facts::default();
        let mut shadow = None;
        let mut decision = self.decide(&setup, input, &mut facts, &mut shadow).await;
        let elapsed = started.elapsed();
        // An allow has its id already: it may be in the upstream identity token (`jti`).
        let id = match &decision {
            Decision::Allow(a) => a.decision_id.clone(),
            Decision::Respond(_) => log::decision_id(),
        };
        let header = &setup.header_names.decision_id;
        let (reason, status, policies) = match &mut decision {
            Decision::Allow(a) => {
                a.set_headers.push((header.clone(), id.clone()));
                (Reason::Allowed, 200, &a.policies)
            }
            Decision::Respond(r) => {
                if r.reason != Reason::Metadata {
                    r.headers.push((Cow::Owned(header.clone()), id.clone()));
                }
                r.decision_id = id.clone();
                (r.reason, r.status, &r.policies)
            }
        };
        if let Some(counter) = self.check_counters.get(reason as usize) {
            counter.inc();
        }
        self.metrics.check_duration(elapsed);
        if let Some(job) = shadow {
            self.shadow.dispatch(job, &id);
        }
        log::decision(
            &setup.decision_log,
            &log::Line {
                id: &id,
                reason,
                status,
                policies,
                facts: &facts,
                elapsed,
            },
        );
        decision
    }

    async fn decide<'s>(
        &self,
        setup: &'s Setup,
        input: &CheckInput<'_>,
        facts: &mut Facts<'s>,
        shadow: &mut Option<ShadowJob>,
    ) -> Decision {
        if crate::resource::is_ambiguous_path(input.path) {
            return respond::ambiguous_path();
        }
        let server = match setup.servers.route(input.host, input.path) {
            Route::Metadata(server) => return respond::metadata(server, input.method),
            Route::Protected(server) => {
                facts.server = Some(&server.id);
                server
            }
            Route::Unmatched => return respond::no_matching_server(),
        };
        let form_body = input
            .headers
            .get("content-type")
            .is_some_and(|ct| {
                ct.trim_start()
                    .starts_with("application/x-www-form-urlencoded")
            })
            .then_some(input.body);
        let credentials = match bearer::extract(
            input.headers,
            input.path,
            form_body,
            setup.limits.max_token_bytes,
        ) {
            Ok(credentials) => credentials,
            Err(e) => {
                return respond::bearer_denial(server, e, self.challenge_scheme(server, None));
            }
        };
        let scheme = self.challenge_scheme(server, Some(credentials.scheme));
        let caller = match self.callers.resolve(credentials.token, server).await {
            Ok(caller) => caller,
            Err(e) => return respond::token_denial(server, e, scheme),
        };
        facts.caller = Some(caller.clone());
        if let Err(denial) = self.check_presentation(server, &credentials, &caller, input) {
            return denial;
        }
        // Only an authenticated caller gets to have its body read.
        let request = match mcp::parse(&HttpParts {
            method: input.method,
            headers: input.headers,
            body: input.body,
            max_body_bytes: setup.limits.max_body_bytes,
        }) {
            Ok(r) => r,
            Err(e) => return respond::mcp_denial(e),
        };
        let outcome = self.authorize(setup, server, &caller, &request, input, scheme, shadow);
        // What the log line says of the request; an allow is only logged when sampled, so an
        // unlogged allow does not pay for it.
        if outcome.is_err() || setup.decision_log.allow_sample_rate > 0.0 {
            match &request {
                McpRequest::Messages { messages, .. } => {
                    facts.actions = messages.iter().filter_map(|m| m.action).collect();
                    facts.target = messages
                        .first()
                        .and_then(|m| m.target.name())
                        .map(|n| n.chars().take(256).collect());
                }
                McpRequest::OpenStream => facts.actions = vec!["GET"],
                McpRequest::EndSession => facts.actions = vec!["DELETE"],
            }
        }
        match outcome.and_then(|policies| {
            self.allow(
                setup,
                server,
                caller,
                policies,
                list_context(server, &request, input),
                input.headers,
                &request,
            )
        }) {
            Ok(allow) => Decision::Allow(Box::new(allow)),
            Err(respond) => Decision::Respond(respond),
        }
    }

    /// Every message must be allowed. A deny that scopes can fix becomes a step-up 403 naming
    /// them (for a batch, what its denied messages need, together); any other deny is a plain
    /// 403 that clients do not retry. With a shadow set, `shadow` gets what evaluating it
    /// needs, to be run once the answer is out.
    #[expect(clippy::too_many_arguments)]
    fn authorize(
        &self,
        setup: &Setup,
        server: &ProtectedServer,
        caller: &Arc<Caller>,
        request: &McpRequest,
        input: &CheckInput<'_>,
        scheme: Scheme<'_>,
        shadow: &mut Option<ShadowJob>,
    ) -> Result<Vec<String>, Respond> {
        let identity = caller.identity();
        let Some(tenant) = server.tenant_for(input.path, input.headers) else {
            return Err(respond::forbidden(
                Reason::PolicyDeny,
                "the request does not name the server's tenant",
                vec![],
            ));
        };
        let Some(sets) = setup.policies.get(server.index()) else {
            // INVARIANT: `Setup::new` gives every server its sets.
            tracing::error!(server = %server.id, "no policy set for this server; denied");
            return Err(respond::forbidden(
                Reason::PolicyError,
                "the request could not be evaluated",
                vec![],
            ));
        };
        let (batch, messages) = authorize::messages(request);
        let header = |name: &str| input.headers.get(name).map_or("", String::as_str);
        let bundle = sets.live.load();
        bundle.prebuild(|| setup.static_tenants());
        let eval = Evaluation {
            server_id: &server.id,
            tenant,
            scopes_supported: &server.scopes_supported,
            step_up: server.step_up.scope,
            protocol_version: header("mcp-protocol-version"),
            session_id: header("mcp-session-id"),
        };
        let verdict = authorize::evaluate(
            &bundle,
            &sets.decisions,
            &eval,
            caller,
            batch,
            &messages,
            |action, target, decision| {
                self.metrics
                    .mcp_request(&server.id, Some(action), decision.allowed);
                if let Target::Tool { name, .. } = target {
                    bundle
                        .tool_counters
                        .load()
                        .count(&server.id, name, decision.allowed);
                }
            },
        );
        if let Some(set) = &sets.shadow {
            *shadow = self.shadow.job(
                set,
                setup,
                &eval,
                caller,
                (request, input.body.len()),
                &verdict,
                &bundle.hash,
            );
        }
        let policy_hash = &bundle.hash;
        match verdict {
            Verdict::Allowed { policies } => {
                tracing::debug!(server = %server.id, subject = %identity.subject, policies = ?policies, policy_hash = %policy_hash, "allowed by policy");
                Ok(policies)
            }
            Verdict::UnknownMethod => {
                self.metrics.mcp_request(&server.id, None, false);
                tracing::info!(server = %server.id, subject = %identity.subject, "denied: unknown MCP method");
                Err(respond::forbidden(
                    Reason::PolicyDeny,
                    "unknown MCP method",
                    vec![],
                ))
            }
            // The caller's arguments do not fit the tool's declared types: a bad request, not
            // a policy failure.
            Verdict::InvalidArguments { action, error } => {
                self.metrics.mcp_request(&server.id, Some(action), false);
                Err(respond::invalid_params(&error))
            }
            Verdict::CannotEvaluate { action, error } => {
                tracing::error!(server = %server.id, action, error = %error, policy_hash = %policy_hash, "cannot evaluate policies; denied");
                Err(respond::forbidden(
                    Reason::PolicyError,
                    "the request could not be evaluated",
                    vec![],
                ))
            }
            Verdict::Errored { action, errors } => {
                for e in &errors {
                    self.metrics
                        .policy_error(e.split_once(": ").map_or(e.as_str(), |(id, _)| id));
                }
                // An erroring policy may have been a forbid: deny, and say which one.
                tracing::error!(server = %server.id, action, errors = ?errors, policy_hash = %policy_hash, "policy evaluation error; denied");
                Err(respond::forbidden(
                    Reason::PolicyError,
                    "a policy failed to evaluate",
                    vec![],
                ))
            }
            Verdict::Denied { action, policies } => {
                tracing::info!(server = %server.id, action, subject = %identity.subject, policies = ?policies, policy_hash = %policy_hash, "denied by policy");
                Err(respond::forbidden(
                    Reason::PolicyDeny,
                    "the policies do not allow this request",
                    policies,
                ))
            }
            Verdict::StepUp { missing, needed } => {
                // Each message's challenge helps on its own; together they cover every denied
                // message (adding scopes never takes a permission away, see the README's
                // step-up section).
                let scopes = crate::policy::challenge_scopes(&server.scopes_supported, &needed);
                tracing::info!(server = %server.id, subject = %identity.subject, missing = ?missing, policy_hash = %policy_hash, "denied: insufficient scope");
                Err(respond::step_up(server, &scopes, scheme))
            }
        }
    }

    /// The scheme a challenge names: DPoP when the request used it or the server requires it
    /// (RFC 9449 s7.1), Bearer otherwise.
    fn challenge_scheme(
        &self,
        server: &ProtectedServer,
        presented: Option<bearer::Scheme>,
    ) -> Scheme<'_> {
        match (presented, server.token_binding) {
            (Some(bearer::Scheme::Dpop), _) | (_, TokenBinding::Dpop) => Scheme::Dpop {
                algs: self.dpop.algs(),
            },
            _ => Scheme::Bearer,
        }
    }

    /// RFC 9449 s7: a token is used the way it is bound. A DPoP-bound token (`cnf.jkt`) comes
    /// with `Authorization: DPoP` and a proof by its key, on every request; an unbound token
    /// comes as Bearer, where the server accepts Bearer.
    fn check_presentation(
        &self,
        server: &ProtectedServer,
        credentials: &Credentials<'_>,
        caller: &Caller,
        input: &CheckInput<'_>,
    ) -> Result<(), Decision> {
        let algs = self.dpop.algs();
        let jkt = match (credentials.scheme, caller.confirmation()) {
            (bearer::Scheme::Bearer, None) if server.token_binding == TokenBinding::Any => {
                return Ok(());
            }
            (bearer::Scheme::Bearer, None) => {
                return Err(respond::binding_denial(
                    server,
                    "this resource accepts only DPoP-bound access tokens",
                    algs,
                ));
            }
            // s7.2: "a DPoP-bound access token ... MUST NOT be accepted" as a bearer token.
            (bearer::Scheme::Bearer, Some(_)) => {
                return Err(respond::binding_denial(
                    server,
                    "a DPoP-bound access token must be presented with the DPoP scheme and a proof",
                    algs,
                ));
            }
            (bearer::Scheme::Dpop, None) => {
                return Err(respond::binding_denial(
                    server,
                    "the access token is not DPoP-bound",
                    algs,
                ));
            }
            (bearer::Scheme::Dpop, Some(jkt)) => jkt,
        };
        let uri = crate::dpop::request_uri(&server.origin, input.path);
        let checked = self.dpop.check(&ProofInput {
            proof: input.headers.get("dpop").map(String::as_str),
            method: input.method,
            uri: &uri,
            access_token: credentials.token,
            jkt,
            now: crate::token::unix_now(),
        });
        self.metrics
            .dpop_proof(checked.as_ref().err().map_or("valid", |e| e.label()));
        checked.map_err(|e| respond::dpop_denial(server, e, algs))
    }

    /// The header changes of an allow. `Err` only when the server's signed identity cannot be
    /// minted: the request is refused rather than forwarded without it.
    #[expect(clippy::too_many_arguments)]
    fn allow(
        &self,
        setup: &Setup,
        server: &ProtectedServer,
        caller: Arc<Caller>,
        policies: Vec<String>,
        list: Option<ListContext>,
        request_headers: &HashMap<String, String>,
        request: &McpRequest,
    ) -> Result<Allow, Respond> {
        let decision_id = log::decision_id();
        let identity = caller.identity();
        let names = &setup.header_names;
        let mut set_headers = Vec::with_capacity(5);
        // The token and its DPoP proof stay here: the upstream gets the identity, not the means
        // to act as the caller.
        let mut remove_headers = vec!["authorization".to_owned(), "dpop".to_owned()];
        set_headers.push((names.subject.clone(), identity.subject.clone()));
        set_headers.push((names.issuer.clone(), identity.issuer.clone()));
        let optional = [
            (&names.tenant, identity.tenant.clone()),
            (&names.client_id, identity.client_id.clone()),
            (
                &names.scopes,
                (!identity.scopes.is_empty()).then(|| identity.scopes.join(" ")),
            ),
        ];
        for (name, value) in optional {
            match value {
                Some(v) => set_headers.push((name.clone(), v)),
                // Absent facts are removed so a client-supplied copy cannot pass as ours.
                None => remove_headers.push(name.clone()),
            }
        }
        // The signed identity: set for a server that has it, and removed from every other
        // allow, so a client-supplied copy never reaches an upstream.
        let signed_header = self.upstream_identity.as_ref().map(|u| u.header());
        if let Some(issuer) = &self.upstream_identity {
            match &server.upstream_audience {
                Some(audience) => {
                    let token = mint_identity(issuer, audience, &decision_id, identity, request)
                        .map_err(|e| {
                            tracing::error!(server = %server.id, error = %e, "cannot mint the upstream identity; refused");
                            respond::identity_unavailable()
                        })?;
                    set_headers.push((issuer.header().to_owned(), token));
                }
                None => remove_headers.push(issuer.header().to_owned()),
            }
        }
        // `x_mcp_authz_subject` is a different header to Envoy but the same one to upstreams
        // that map headers CGI-style (`HTTP_X_MCP_AUTHZ_SUBJECT`): drop such look-alikes.
        for name in request_headers.keys().filter(|k| k.contains('_')) {
            let spoof = names
                .all()
                .iter()
                .copied()
                .chain(signed_header)
                .any(|ours| same_modulo_underscore(name, ours));
            if spoof {
                remove_headers.push(name.clone());
            }
        }
        if list.is_some() {
            // The list filter reads the body as sent: no compression (RFC 9110 s12.5.3; an
            // absent Accept-Encoding would allow any coding).
            set_headers.push(("accept-encoding".to_owned(), "identity".to_owned()));
        }
        Ok(Allow {
            decision_id,
            server_id: server.id.clone(),
            caller,
            policies,
            set_headers,
            remove_headers,
            list,
        })
    }

    /// The list filter for a marked response's caller, with the live policy set. Fails closed:
    /// a caller naming a server this instance does not protect gets no filter.
    pub fn list_filter(&self, caller: ListCaller) -> Result<ListFilter, ListError> {
        let setup = self.setup.load();
        let server = setup
            .servers
            .iter()
            .find(|s| s.id == caller.server_id)
            .ok_or(ListError::UnknownServer)?;
        let sets = setup
            .policies
            .get(server.index())
            .ok_or(ListError::UnknownServer)?;
        ListFilter::new(
            server,
            sets.live.load(),
            caller,
            self.metrics.clone(),
            self.list_verdicts.clone(),
        )
    }
}

/// The list mark for an allowed request: its list calls (one, or several in a batch), or
/// every kind for a GET stream, which may replay a list response on resumption (MCP Streamable
/// HTTP, "Resumability and Redelivery"). `None` when the server's lists are not filtered.
fn list_context(
    server: &ProtectedServer,
    request: &McpRequest,
    input: &CheckInput<'_>,
) -> Option<ListContext> {
    if server.list_filter == crate::config::ListFilterMode::Off {
        return None;
    }
    let mark = match request {
        McpRequest::Messages { batch, messages } => {
            let mut kinds: Vec<ListKind> = Vec::new();
            for kind in messages
                .iter()
                .filter_map(|m| m.action.and_then(ListKind::from_method))
            {
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
            if kinds.is_empty() {
                return None;
            }
            ListMark {
                exact: !batch && kinds.len() == 1,
                kinds,
            }
        }
        McpRequest::OpenStream => ListMark {
            kinds: ListKind::ALL.to_vec(),
            exact: false,
        },
        McpRequest::EndSession => return None,
    };
    let header = |name: &str| input.headers.get(name).cloned().unwrap_or_default();
    Some(ListContext {
        mark,
        server_tenant: server.tenant_for(input.path, input.headers)?.to_owned(),
        protocol_version: header("mcp-protocol-version"),
        session_id: header("mcp-session-id"),
    })
}

/// The signed identity of an allowed request: its messages' methods and targets, in order.
fn mint_identity(
    issuer: &UpstreamIdentity,
    audience: &str,
    decision_id: &str,
    identity: &crate::identity::Identity,
    request: &McpRequest,
) -> Result<String, upstream_identity::MintError> {
    let call = |method, target| upstream_identity::Call { method, target };
    let calls: Vec<_> = match request {
        McpRequest::Messages { messages, .. } => messages
            .iter()
            // Every message has a method here: an unknown one was denied.
            .map(|m| call(m.action.unwrap_or("other"), m.target.name()))
            .collect(),
        McpRequest::OpenStream => vec![call("GET", None)],
        McpRequest::EndSession => vec![call("DELETE", None)],
    };
    issuer.mint(&upstream_identity::Request {
        audience,
        decision_id,
        identity,
        calls: &calls,
    })
}

fn same_modulo_underscore(name: &str, ours: &str) -> bool {
    name.len() == ours.len()
        && name
            .bytes()
            .zip(ours.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

#[cfg(test)]
mod tests;
