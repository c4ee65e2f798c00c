//! The decision engine: a request in domain terms goes in, a [`Decision`] comes out. No gRPC or
//! protobuf types here; `grpc.rs` adapts Envoy's messages to and from these.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::bearer::{self, BearerError};
use crate::challenge::{Challenge, ErrorCode};
use crate::config::{Config, DecisionLog, IdentityHeaders, Limits};
use crate::keys::{IssuerKeys, Lookup};
use crate::mcp::{self, HttpParts, McpError, McpRequest, Target};
use crate::metrics::{CacheLookup, Metrics, Reason};
use crate::policy::{self, EvalRequest, PolicyStore};
use crate::resource::{ProtectedServer, Route, Servers};
use crate::token::cache::{Revalidation, TokenCache, Verified};
use crate::token::{Identity, Parsed, TokenError, unix_now};

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
    /// Random id tying this decision to its log line; also sent upstream.
    pub decision_id: String,
    pub server_id: String,
    /// The verified token (shared with the token cache).
    pub token: Arc<Verified>,
    /// The permits that allowed each message, in order, deduplicated.
    pub policies: Vec<String>,
    /// Set with overwrite semantics, so a client cannot pre-set them.
    pub set_headers: Vec<(String, String)>,
    /// `authorization` (no token passthrough) and identity headers that have no value.
    pub remove_headers: Vec<String>,
}

#[derive(Debug)]
pub struct Respond {
    /// Random id tying this decision to its log line; also sent to the client (denials only).
    pub decision_id: String,
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub reason: Reason,
    /// The forbids that denied (empty for a default deny or a non-policy answer).
    pub policies: Vec<String>,
}

/// Everything a check needs, built once from configuration.
pub struct Engine {
    servers: Servers,
    issuers: Vec<Arc<IssuerKeys>>,
    policies: Arc<PolicyStore>,
    header_names: IdentityHeaders,
    limits: Limits,
    decision_log: DecisionLog,
    tokens: TokenCache,
    metrics: Metrics,
}

impl Allow {
    pub fn identity(&self) -> &Identity {
        &self.token.identity
    }
}

/// What the decision log line says about a check, gathered as the check goes.
#[derive(Default)]
struct Facts<'a> {
    server: Option<&'a str>,
    token: Option<Arc<Verified>>,
    /// The actions of the message(s), e.g. `tools/call`.
    actions: Vec<&'static str>,
    /// The first message's target (tool or prompt name, resource URI), never its arguments.
    target: Option<String>,
}

impl Engine {
    /// `issuers` must hold one entry per configured issuer (see [`Engine::issuers_from_config`]).
    pub fn new(
        config: &Config,
        issuers: Vec<Arc<IssuerKeys>>,
        policies: Arc<PolicyStore>,
        metrics: Metrics,
    ) -> Result<Self, String> {
        let find = |name: &str| issuers.iter().find(|i| i.config.issuer == name).cloned();
        let servers = config
            .servers
            .iter()
            .map(|s| ProtectedServer::new(s, find))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            servers: Servers::new(servers),
            issuers,
            policies,
            header_names: config.identity_headers.clone(),
            limits: config.limits.clone(),
            decision_log: config.decision_log.clone(),
            tokens: TokenCache::new(config.cache.tokens),
            metrics,
        })
    }

    /// Builds the key holders for every configured issuer (none fetched yet).
    pub fn issuers_from_config(
        config: &Config,
        metrics: &Metrics,
    ) -> Result<Vec<Arc<IssuerKeys>>, String> {
        config
            .issuers
            .iter()
            .map(|i| IssuerKeys::new(i.clone(), metrics.clone(), config.limits.max_jwks_bytes))
            .collect()
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

    /// Ready when every issuer has a key set.
    pub fn is_ready(&self) -> bool {
        self.issuers.iter().all(|i| i.load().is_some())
    }

    pub async fn check(&self, input: &CheckInput<'_>) -> Decision {
        let started = Instant::now();
        let mut facts = Facts::default();
        let mut decision = self.decide(input, &mut facts).await;
        let elapsed = started.elapsed();
        let id = decision_id();
        let (reason, status, policies) = match &mut decision {
            Decision::Allow(a) => {
                a.set_headers
                    .push((self.header_names.decision_id.clone(), id.clone()));
                a.decision_id = id.clone();
                (Reason::Allowed, 200, &a.policies)
            }
            Decision::Respond(r) => {
                if r.reason != Reason::Metadata {
                    r.headers.push(("x-mcp-authz-decision-id", id.clone()));
                }
                r.decision_id = id.clone();
                (r.reason, r.status, &r.policies)
            }
        };
        self.metrics.check(reason, elapsed);
        let log = match reason {
            Reason::Metadata => false,
            Reason::Allowed => {
                let rate = self.decision_log.allow_sample_rate;
                rate >= 1.0 || (rate > 0.0 && rand::random::<f64>() < rate)
            }
            _ => self.decision_log.denies,
        };
        if log {
            let identity = facts.token.as_ref().map(|t| &t.identity);
            let field = |f: fn(&Identity) -> Option<&str>| identity.and_then(f).unwrap_or("");
            // One line per decision. Never the token; claims only when the operator opts in.
            tracing::info!(
                target: "mcp_authz::decision",
                decision_id = %id,
                decision = if reason == Reason::Allowed { "allow" } else { "deny" },
                status,
                reason = reason.as_str(),
                server = facts.server.unwrap_or(""),
                method = %facts.actions.join(","),
                target = facts.target.as_deref().unwrap_or(""),
                subject = field(|i| Some(&i.subject)),
                tenant = field(|i| i.tenant.as_deref()),
                client_id = field(|i| i.client_id.as_deref()),
                policies = %policies.join(","),
                latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                claims = identity.filter(|_| self.decision_log.include_claims).map(|i| serde_json::to_string(&i.claims).unwrap_or_default()).unwrap_or_default(),
                "decision"
            );
        }
        decision
    }

    async fn decide<'s>(&'s self, input: &CheckInput<'_>, facts: &mut Facts<'s>) -> Decision {
        let server = match self.servers.route(input.host, input.path) {
            Route::Metadata(server) => return metadata(server, input.method),
            Route::Protected(server) => {
                facts.server = Some(&server.id);
                server
            }
            Route::Unmatched => {
                return respond(
                    404,
                    Reason::NoMatchingServer,
                    None,
                    json!({"error": "not_found", "error_description": "no protected MCP server matches this request"}),
                );
            }
        };
        let form_body = input
            .headers
            .get("content-type")
            .is_some_and(|ct| {
                ct.trim_start()
                    .starts_with("application/x-www-form-urlencoded")
            })
            .then_some(input.body);
        let token = match bearer::extract(
            input.headers,
            input.path,
            form_body,
            self.limits.max_token_bytes,
        ) {
            Ok(token) => token,
            Err(e) => return bearer_denial(server, e),
        };
        let verified = match self.verify(token, server).await {
            Ok(verified) => verified,
            Err(e) => return token_denial(server, e),
        };
        facts.token = Some(verified.clone());
        // Only an authenticated caller gets to have its body read.
        let request = match mcp::parse(&HttpParts {
            method: input.method,
            headers: input.headers,
            body: input.body,
        }) {
            Ok(r) => r,
            Err(e) => return mcp_denial(e),
        };
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
        match self.authorize(server, &verified, &request, input) {
            Ok(policies) => Decision::Allow(Box::new(self.allow(
                server,
                verified,
                policies,
                input.headers,
            ))),
            Err(respond) => Decision::Respond(respond),
        }
    }

    /// Every message must be allowed. A deny that scopes can fix becomes a step-up 403 naming
    /// them; any other deny is a plain 403 that clients do not retry.
    fn authorize(
        &self,
        server: &ProtectedServer,
        verified: &Verified,
        request: &McpRequest,
        input: &CheckInput<'_>,
    ) -> Result<Vec<String>, Respond> {
        let identity = &verified.identity;
        let Some(tenant) = server.tenant_for(input.path, input.headers) else {
            return Err(forbidden(
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
        let mut allowed_by = Vec::new();
        let mut missing: Vec<String> = Vec::new();
        for (action, target) in messages {
            let Some(action) = action else {
                self.metrics.mcp_request(&server.id, None, false);
                tracing::info!(server = %server.id, subject = %identity.subject, "denied: unknown MCP method");
                return Err(forbidden(Reason::PolicyDeny, "unknown MCP method", vec![]));
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
            let decided = match &verified.principal {
                Some(principal) => bundle.decide_as(&req, principal, &server.scopes_supported),
                None => bundle.decide(&req, &server.scopes_supported),
            };
            let decision = match decided {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(server = %server.id, action, error = %e, policy_hash = %bundle.hash, "cannot evaluate policies; denied");
                    return Err(forbidden(
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
                return Err(forbidden(
                    Reason::PolicyError,
                    "a policy failed to evaluate",
                    vec![],
                ));
            }
            if decision.allowed {
                for p in decision.determining {
                    if !allowed_by.contains(&p) {
                        allowed_by.push(p);
                    }
                }
                continue;
            }
            match decision.missing_scopes {
                Some(scopes) => {
                    for s in scopes {
                        if !missing.contains(&s) {
                            missing.push(s);
                        }
                    }
                }
                // Some message no scope can fix: the whole request is a plain 403.
                None => {
                    tracing::info!(server = %server.id, action, subject = %identity.subject, policies = ?decision.determining, policy_hash = %bundle.hash, "denied by policy");
                    return Err(forbidden(
                        Reason::PolicyDeny,
                        "the policies do not allow this request",
                        decision.determining,
                    ));
                }
            }
        }
        if missing.is_empty() {
            tracing::debug!(server = %server.id, subject = %identity.subject, policies = ?allowed_by, policy_hash = %bundle.hash, "allowed by policy");
            return Ok(allowed_by);
        }
        let scopes = policy::challenge_scopes(&identity.scopes, &server.scopes_supported, &missing);
        tracing::info!(server = %server.id, subject = %identity.subject, missing = ?missing, policy_hash = %bundle.hash, "denied: insufficient scope");
        Err(step_up(server, &scopes))
    }

    /// A token seen before is checked against the cache's rules (see `token::cache`); any
    /// other goes through [`Self::verify_fully`] and, once it passes, into the cache.
    async fn verify(
        &self,
        token: &str,
        server: &ProtectedServer,
    ) -> Result<Arc<Verified>, TokenError> {
        let now = unix_now();
        let lookup = match self.tokens.get(token) {
            Some(hit) => match hit.revalidate(server, now) {
                Revalidation::Valid => {
                    self.metrics.token_cache(CacheLookup::Hit);
                    return Ok(hit);
                }
                Revalidation::Refused(e) => {
                    if e == TokenError::Expired {
                        self.tokens.invalidate(token);
                    }
                    self.metrics.token_cache(CacheLookup::Hit);
                    return Err(e);
                }
                Revalidation::Stale => {
                    self.tokens.invalidate(token);
                    CacheLookup::Stale
                }
            },
            None => CacheLookup::Miss,
        };
        self.metrics.token_cache(lookup);
        let mut verified = self.verify_fully(token, server, now).await?;
        // Built once per token; a failure leaves `None` and the policy layer fails closed.
        verified.principal = self.policies.load().principal(&verified.identity).ok();
        let verified = Arc::new(verified);
        self.tokens.insert(token, verified.clone());
        self.metrics.token_cache_entries(self.tokens.len());
        Ok(verified)
    }

    async fn verify_fully(
        &self,
        token: &str,
        server: &ProtectedServer,
        now: i64,
    ) -> Result<Verified, TokenError> {
        let parsed = Parsed::parse(token)?;
        let issuer = parsed.trusted_issuer(server)?;
        let mut keys = issuer.load().ok_or(TokenError::KeysUnavailable)?;
        // A `kid` we have not seen may be a rotation the IdP published after our last fetch.
        // Refetch (single flight, rate-limited) only for a token that could otherwise pass the
        // cheap header checks, so garbage cannot make us call the IdP.
        if let Some(kid) = parsed.kid()
            && parsed.refetch_worthwhile(&issuer.config)
            && matches!(keys.find(Some(kid), parsed.alg()), Lookup::UnknownKid)
            && let Some(fresh) = issuer.refetch_for_unknown_kid().await
        {
            keys = fresh;
        }
        parsed.verify(&issuer.config, &keys, server, now)
    }

    fn allow(
        &self,
        server: &ProtectedServer,
        token: Arc<Verified>,
        policies: Vec<String>,
        request_headers: &HashMap<String, String>,
    ) -> Allow {
        let identity = &token.identity;
        let names = &self.header_names;
        let mut set_headers = Vec::with_capacity(5);
        let mut remove_headers = vec!["authorization".to_owned()];
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
        // `x_mcp_authz_subject` is a different header to Envoy but the same one to upstreams
        // that map headers CGI-style (`HTTP_X_MCP_AUTHZ_SUBJECT`): drop such look-alikes.
        for name in request_headers.keys().filter(|k| k.contains('_')) {
            let spoof = names
                .all()
                .iter()
                .any(|ours| same_modulo_underscore(name, ours));
            if spoof {
                remove_headers.push(name.clone());
            }
        }
        Allow {
            decision_id: String::new(),
            server_id: server.id.clone(),
            token,
            policies,
            set_headers,
            remove_headers,
        }
    }
}

/// 16 hex digits from the thread-local CSPRNG: unique enough to find one line in a day's logs.
fn decision_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn same_modulo_underscore(name: &str, ours: &str) -> bool {
    name.len() == ours.len()
        && name
            .bytes()
            .zip(ours.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

fn metadata(server: &ProtectedServer, method: &str) -> Decision {
    if !matches!(method, "GET" | "HEAD") {
        return Decision::Respond(Respond {
            decision_id: String::new(),
            status: 405,
            headers: vec![("allow", "GET, HEAD".into())],
            body: String::new(),
            reason: Reason::Metadata,
            policies: vec![],
        });
    }
    Decision::Respond(Respond {
        decision_id: String::new(),
        status: 200,
        headers: vec![
            ("content-type", "application/json".into()),
            ("cache-control", "max-age=300".into()),
            // Public metadata: browser-based MCP clients fetch it cross-origin.
            ("access-control-allow-origin", "*".into()),
        ],
        body: server.prm_json.to_string(),
        reason: Reason::Metadata,
        policies: vec![],
    })
}

fn bearer_denial(server: &ProtectedServer, e: BearerError) -> Decision {
    match e {
        // RFC 6750 s3.1: with no credentials, the challenge carries no error code.
        BearerError::Missing | BearerError::OtherScheme => {
            challenge(server, None, e.description(), Reason::NoToken)
        }
        BearerError::Duplicate | BearerError::NotInHeader | BearerError::Malformed => challenge(
            server,
            Some(ErrorCode::InvalidRequest),
            e.description(),
            Reason::InvalidRequest,
        ),
        BearerError::TooLarge => challenge(
            server,
            Some(ErrorCode::InvalidToken),
            e.description(),
            Reason::InvalidToken,
        ),
    }
}

/// The one place that tells a denial from "cannot decide". A bad token is the caller's
/// problem: 401 `invalid_token` with a challenge, so MCP clients re-authenticate. Missing
/// keys are ours: the service cannot tell good tokens from bad, so it fails closed with 503
/// (distinct from any policy answer, and retryable) rather than blaming the caller.
fn token_denial(server: &ProtectedServer, e: TokenError) -> Decision {
    match e {
        TokenError::KeysUnavailable => {
            let mut r = respond_raw(
                503,
                Reason::Unavailable,
                json!({"error": "temporarily_unavailable", "error_description": e.description()}),
            );
            r.headers.push(("retry-after", "5".into()));
            Decision::Respond(r)
        }
        _ => challenge(
            server,
            Some(ErrorCode::InvalidToken),
            e.description(),
            Reason::InvalidToken,
        ),
    }
}

fn challenge(
    server: &ProtectedServer,
    error: Option<ErrorCode>,
    description: &str,
    reason: Reason,
) -> Decision {
    // MCP 2025-11-25: a 401 SHOULD name the scopes needed to start (`scope`).
    let status = error.map_or(401, ErrorCode::status);
    let scopes: &[String] = if status == 401 {
        &server.challenge_scopes
    } else {
        &[]
    };
    let header = Challenge {
        resource_metadata: Some(&server.prm_url),
        scopes,
        error,
        error_description: error.map(|_| description),
    }
    .render();
    let body = match error {
        Some(code) => json!({"error": code.as_str(), "error_description": description}),
        None => json!({"error": "unauthorized", "error_description": description}),
    };
    respond(status, reason, Some(header), body)
}

fn respond(
    status: u16,
    reason: Reason,
    www_authenticate: Option<String>,
    body: serde_json::Value,
) -> Decision {
    let mut r = respond_raw(status, reason, body);
    if let Some(h) = www_authenticate {
        r.headers.push(("www-authenticate", h));
    }
    Decision::Respond(r)
}

fn respond_raw(status: u16, reason: Reason, body: serde_json::Value) -> Respond {
    Respond {
        decision_id: String::new(),
        status,
        headers: vec![
            ("content-type", "application/json".into()),
            ("cache-control", "no-store".into()),
            // Browser-based MCP clients need to read the challenge across origins.
            ("access-control-expose-headers", "WWW-Authenticate".into()),
        ],
        body: body.to_string(),
        reason,
        policies: vec![],
    }
}

/// 403 with `insufficient_scope`: clients request a token with `scope` and retry once.
fn step_up(server: &ProtectedServer, scopes: &[String]) -> Respond {
    let description = crate::challenge::INSUFFICIENT_SCOPE_DESCRIPTION;
    let header = crate::challenge::insufficient_scope(&server.prm_url, scopes);
    let mut r = respond_raw(
        403,
        Reason::InsufficientScope,
        json!({"error": "insufficient_scope", "error_description": description, "scope": scopes.join(" ")}),
    );
    r.headers.push(("www-authenticate", header));
    r
}

/// A plain 403: no challenge, so MCP clients treat it as final (no scope would help).
fn forbidden(reason: Reason, description: &str, policies: Vec<String>) -> Respond {
    let mut r = respond_raw(
        403,
        reason,
        json!({"error": "forbidden", "error_description": description}),
    );
    r.policies = policies;
    r
}

/// A body that is not an acceptable MCP message. 400s carry a JSON-RPC error object, which is
/// what MCP clients parse; -32600 is "Invalid Request" (JSON-RPC 2.0 s5.1).
fn mcp_denial(e: McpError) -> Decision {
    let status = e.status();
    let reason = match status {
        413 => Reason::PayloadTooLarge,
        415 => Reason::UnsupportedMediaType,
        _ => Reason::BadMcpRequest,
    };
    let message = e.to_string();
    // A code for every 400 (-32020 for a routing header that disagrees with the body).
    let body = match e.jsonrpc_code() {
        Some(code) => {
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}})
        }
        None => json!({"error": e.error_name(), "error_description": message}),
    };
    Decision::Respond(respond_raw(status, reason, body))
}

#[cfg(test)]
mod tests;
