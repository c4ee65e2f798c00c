//! The decision engine: a request in domain terms goes in, a [`Decision`] comes out. No gRPC or
//! protobuf types here; `grpc.rs` adapts Envoy's messages to and from these.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::bearer::{self, BearerError};
use crate::challenge::{Challenge, ErrorCode};
use crate::config::{Config, IdentityHeaders, Limits};
use crate::keys::{IssuerKeys, Lookup};
use crate::metrics::{Metrics, Reason};
use crate::resource::{ProtectedServer, Route, Servers};
use crate::token::{Identity, Parsed, TokenError};

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
    Allow(Allow),
    /// Answer the client directly (a denial, an error, or a PRM document).
    Respond(Respond),
}

#[derive(Debug)]
pub struct Allow {
    pub server_id: String,
    pub identity: Identity,
    /// Set with overwrite semantics, so a client cannot pre-set them.
    pub set_headers: Vec<(String, String)>,
    /// `authorization` (no token passthrough) and identity headers that have no value.
    pub remove_headers: Vec<String>,
}

#[derive(Debug)]
pub struct Respond {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub reason: Reason,
}

/// Everything a check needs, built once from configuration.
pub struct Engine {
    servers: Servers,
    issuers: Vec<Arc<IssuerKeys>>,
    header_names: IdentityHeaders,
    limits: Limits,
    metrics: Metrics,
}

impl Engine {
    /// `issuers` must hold one entry per configured issuer (see [`Engine::issuers_from_config`]).
    pub fn new(
        config: &Config,
        issuers: Vec<Arc<IssuerKeys>>,
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
            header_names: config.identity_headers.clone(),
            limits: config.limits.clone(),
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

    /// Ready when every issuer has a key set.
    pub fn is_ready(&self) -> bool {
        self.issuers.iter().all(|i| i.load().is_some())
    }

    pub async fn check(&self, input: &CheckInput<'_>) -> Decision {
        let started = Instant::now();
        let decision = self.decide(input).await;
        let reason = match &decision {
            Decision::Allow(_) => Reason::Allowed,
            Decision::Respond(r) => r.reason,
        };
        self.metrics.check(reason, started.elapsed());
        decision
    }

    async fn decide(&self, input: &CheckInput<'_>) -> Decision {
        let server = match self.servers.route(input.host, input.path) {
            Route::Metadata(server) => return metadata(server, input.method),
            Route::Protected(server) => server,
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
        match self.verify(token, server).await {
            Ok(identity) => Decision::Allow(self.allow(server, identity, input.headers)),
            Err(e) => token_denial(server, e),
        }
    }

    async fn verify(&self, token: &str, server: &ProtectedServer) -> Result<Identity, TokenError> {
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
        parsed.verify(&issuer.config, &keys, server, unix_now())
    }

    fn allow(
        &self,
        server: &ProtectedServer,
        identity: Identity,
        request_headers: &HashMap<String, String>,
    ) -> Allow {
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
            server_id: server.id.clone(),
            identity,
            set_headers,
            remove_headers,
        }
    }
}

fn same_modulo_underscore(name: &str, ours: &str) -> bool {
    name.len() == ours.len()
        && name
            .bytes()
            .zip(ours.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn metadata(server: &ProtectedServer, method: &str) -> Decision {
    if !matches!(method, "GET" | "HEAD") {
        return Decision::Respond(Respond {
            status: 405,
            headers: vec![("allow", "GET, HEAD".into())],
            body: String::new(),
            reason: Reason::Metadata,
        });
    }
    Decision::Respond(Respond {
        status: 200,
        headers: vec![
            ("content-type", "application/json".into()),
            ("cache-control", "max-age=300".into()),
            // Public metadata: browser-based MCP clients fetch it cross-origin.
            ("access-control-allow-origin", "*".into()),
        ],
        body: server.prm_json.to_string(),
        reason: Reason::Metadata,
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
        status,
        headers: vec![
            ("content-type", "application/json".into()),
            ("cache-control", "no-store".into()),
            // Browser-based MCP clients need to read the challenge across origins.
            ("access-control-expose-headers", "WWW-Authenticate".into()),
        ],
        body: body.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests;
