//! The decision engine: a request in domain terms goes in, a [`Decision`] comes out. No gRPC or
//! protobuf types here; `grpc.rs` adapts Envoy's messages to and from these.
//!
//! A check routes the request to a protected server (`resource`), reads the bearer credential
//! (`bearer`), resolves the caller (`caller`: token verification and the per-token principal,
//! cached), reads the MCP message (`mcp`), evaluates the policies (`policy`) and turns the
//! outcome into an answer (`respond`); `log` writes the decision line.

mod caller;
mod decisions;
pub mod headers;
mod log;
mod reason;
mod respond;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

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
use crate::policy::{self, EvalRequest, PolicyStore};
use crate::resource::{ProtectedServer, Route, ServerSetupError, Servers};
use crate::upstream_identity::{self, UpstreamIdentity};
pub use caller::{Caller, Callers, Credential, verify_jwt};
pub use decisions::Decisions;
use log::Facts;
pub use reason::Reason;

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
}

/// Everything a check needs, built once from configuration.
pub struct Engine {
    servers: Servers,
    issuers: Vec<Arc<IssuerKeys>>,
    policies: Arc<PolicyStore>,
    header_names: IdentityHeaders,
    limits: Limits,
    decision_log: DecisionLog,
    callers: Callers,
    decisions: Decisions,
    /// Listed items' verdicts (see `lists`).
    list_verdicts: ListVerdicts,
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
    /// `issuers` must hold one entry per configured issuer (see [`Engine::issuers_from_config`]).
    pub fn new(
        config: &Config,
        issuers: Vec<Arc<IssuerKeys>>,
        policies: Arc<PolicyStore>,
        metrics: Metrics,
    ) -> Result<Self, EngineError> {
        let find = |name: &str| issuers.iter().find(|i| i.config.issuer == name).cloned();
        let dpop = Dpop::new(&config.dpop, config.limits.max_token_bytes)?;
        let dpop_algorithms = dpop.algorithm_names();
        let servers = config
            .servers
            .iter()
            .map(|s| ProtectedServer::new(s, &dpop_algorithms, find))
            .collect::<Result<Vec<_>, _>>()?;
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
            servers: Servers::new(servers),
            issuers,
            callers: Callers::new(config.cache.tokens, metrics.clone()),
            decisions: Decisions::new(config.cache.decisions, metrics.clone()),
            list_verdicts: ListVerdicts::new(config.cache.decisions),
            dpop,
            policies,
            header_names: config.identity_headers.clone(),
            limits: config.limits.clone(),
            decision_log: config.decision_log.clone(),
            metrics,
            check_counters,
            upstream_identity,
        })
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

    pub fn issuers(&self) -> &[Arc<IssuerKeys>] {
        &self.issuers
    }

    pub fn servers(&self) -> &Servers {
        &self.servers
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn policies(&self) -> &Arc<PolicyStore> {
        &self.policies
    }

    /// The verified-caller cache.
    pub fn callers(&self) -> &Callers {
        &self.callers
    }

    /// The decision cache.
    pub fn decisions(&self) -> &Decisions {
        &self.decisions
    }

    /// The upstream identity issuer, when configured.
    pub fn upstream_identity(&self) -> Option<&Arc<UpstreamIdentity>> {
        self.upstream_identity.as_ref()
    }

    /// Ready when every issuer can have its tokens checked (see [`IssuerKeys::is_ready`]).
    pub fn is_ready(&self) -> bool {
        self.issuers.iter().all(|i| i.is_ready())
    }

    pub async fn check(&self, input: &CheckInput<'_>) -> Decision {
        let started = Instant::now();
        let mut facts = Facts::default();
        let mut decision = self.decide(input, &mut facts).await;
        let elapsed = started.elapsed();
        // An allow has its id already: it may be in the upstream identity token (`jti`).
        let id = match &decision {
            Decision::Allow(a) => a.decision_id.clone(),
            Decision::Respond(_) => log::decision_id(),
        };
        let header = &self.header_names.decision_id;
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
        log::decision(
            &self.decision_log,
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

    async fn decide<'s>(&'s self, input: &CheckInput<'_>, facts: &mut Facts<'s>) -> Decision {
        if crate::resource::is_ambiguous_path(input.path) {
            return respond::ambiguous_path();
        }
        let server = match self.servers.route(input.host, input.path) {
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
            self.limits.max_token_bytes,
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
            max_body_bytes: self.limits.max_body_bytes,
        }) {
            Ok(r) => r,
            Err(e) => return respond::mcp_denial(e),
        };
        let outcome = self.authorize(server, &caller, &request, input, scheme);
        // What the log line says of the request; an allow is only logged when sampled, so an
        // unlogged allow does not pay for it.
        if outcome.is_err() || self.decision_log.allow_sample_rate > 0.0 {
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
    /// 403 that clients do not retry.
    fn authorize(
        &self,
        server: &ProtectedServer,
        caller: &Caller,
        request: &McpRequest,
        input: &CheckInput<'_>,
        scheme: Scheme<'_>,
    ) -> Result<Vec<String>, Respond> {
        let identity = caller.identity();
        let Some(tenant) = server.tenant_for(input.path, input.headers) else {
            return Err(respond::forbidden(
                Reason::PolicyDeny,
                "the request does not name the server's tenant",
                vec![],
            ));
        };
        let server_target = Target::Server;
        let (batch, messages): (bool, Vec<(Option<&'static str>, &Target)>) = match request {
            McpRequest::Messages { batch, messages } => (
                *batch,
                messages.iter().map(|m| (m.action, &m.target)).collect(),
            ),
            McpRequest::OpenStream => (false, vec![(Some("GET"), &server_target)]),
            McpRequest::EndSession => (false, vec![(Some("DELETE"), &server_target)]),
        };
        let header = |name: &str| input.headers.get(name).map_or("", String::as_str);
        let bundle = self.policies.load();
        bundle.prebuild(|| {
            self.servers
                .iter()
                .filter_map(|s| Some((s.id.as_str(), s.static_tenant()?)))
        });
        let mut principal = None;
        let mut allowed_by = Vec::new();
        let mut missing: Vec<String> = Vec::new();
        // The scopes each denied message's challenge would name (by `servers[].step_up`).
        let mut needed: Vec<String> = Vec::new();
        for (action, target) in messages {
            let Some(action) = action else {
                self.metrics.mcp_request(&server.id, None, false);
                tracing::info!(server = %server.id, subject = %identity.subject, "denied: unknown MCP method");
                return Err(respond::forbidden(
                    Reason::PolicyDeny,
                    "unknown MCP method",
                    vec![],
                ));
            };
            let req = EvalRequest {
                identity,
                server_id: &server.id,
                server_tenant: tenant,
                action,
                target,
                protocol_version: header("mcp-protocol-version"),
                session_id: header("mcp-session-id"),
                batch,
            };
            let supported = &server.scopes_supported;
            let rule = server.step_up.scope;
            // The Cedar principal is built on the first miss of the request and reused by its
            // other messages (a batch); a decision cache hit needs none.
            let decided = self.decisions.get_or_decide(&bundle, &req, caller, || {
                let p = match principal.take() {
                    Some(p) => p,
                    None => bundle.principal(identity)?,
                };
                let decided = bundle.decide_as(&req, &p, supported, rule);
                principal = Some(p);
                decided
            });
            let decision = match decided {
                Ok(d) => d,
                // The caller's arguments do not fit the tool's declared types: a bad request,
                // not a policy failure.
                Err(policy::BuildError::Arguments(e)) => {
                    self.metrics.mcp_request(&server.id, Some(action), false);
                    return Err(respond::invalid_params(&e));
                }
                Err(e) => {
                    tracing::error!(server = %server.id, action, error = %e, policy_hash = %bundle.hash, "cannot evaluate policies; denied");
                    return Err(respond::forbidden(
                        Reason::PolicyError,
                        "the request could not be evaluated",
                        vec![],
                    ));
                }
            };
            self.metrics
                .mcp_request(&server.id, Some(action), decision.allowed);
            if let Target::Tool { name, .. } = target {
                bundle
                    .tool_counters
                    .count(&server.id, name, decision.allowed);
            }
            if !decision.errors.is_empty() {
                for e in &decision.errors {
                    self.metrics
                        .policy_error(e.split_once(": ").map_or(e.as_str(), |(id, _)| id));
                }
                // An erroring policy may have been a forbid: deny, and say which one.
                tracing::error!(server = %server.id, action, errors = ?decision.errors, policy_hash = %bundle.hash, "policy evaluation error; denied");
                return Err(respond::forbidden(
                    Reason::PolicyError,
                    "a policy failed to evaluate",
                    vec![],
                ));
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
                // Some message no scope can fix: the whole request is a plain 403.
                _ => {
                    tracing::info!(server = %server.id, action, subject = %identity.subject, policies = ?decision.determining, policy_hash = %bundle.hash, "denied by policy");
                    return Err(respond::forbidden(
                        Reason::PolicyDeny,
                        "the policies do not allow this request",
                        decision.determining.clone(),
                    ));
                }
            }
        }
        if missing.is_empty() {
            tracing::debug!(server = %server.id, subject = %identity.subject, policies = ?allowed_by, policy_hash = %bundle.hash, "allowed by policy");
            return Ok(allowed_by);
        }
        // Each message's challenge helps on its own; together they cover every denied message
        // (adding scopes never takes a permission away, see the README's step-up section).
        let scopes = policy::challenge_scopes(&server.scopes_supported, &needed);
        tracing::info!(server = %server.id, subject = %identity.subject, missing = ?missing, policy_hash = %bundle.hash, "denied: insufficient scope");
        Err(respond::step_up(server, &scopes, scheme))
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
    fn allow(
        &self,
        server: &ProtectedServer,
        caller: Arc<Caller>,
        policies: Vec<String>,
        list: Option<ListContext>,
        request_headers: &HashMap<String, String>,
        request: &McpRequest,
    ) -> Result<Allow, Respond> {
        let decision_id = log::decision_id();
        let identity = caller.identity();
        let names = &self.header_names;
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
        let server = self
            .servers
            .iter()
            .find(|s| s.id == caller.server_id)
            .ok_or(ListError::UnknownServer)?;
        ListFilter::new(
            server,
            self.policies.load(),
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
