//! The smaller top-level sections of the configuration file: listeners, policies, identity
//! headers, limits, the decision log and the token cache, each with its defaults and checks.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::{Invalid, invalid};

/// The verified-caller cache (see `engine::caller`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Most verified tokens kept; 0 turns the cache off (every check verifies a signature).
    /// Each entry costs about 1.9 KiB (measured with ~400-byte tokens; see docs/benchmarks).
    #[serde(default = "CacheConfig::default_tokens")]
    pub tokens: u64,
    /// Most policy decisions kept for the active policy set; 0 turns the cache off (every
    /// check runs Cedar). See `engine::decisions`.
    #[serde(default = "CacheConfig::default_decisions")]
    pub decisions: u64,
}

impl CacheConfig {
    fn default_tokens() -> u64 {
        4096
    }

    fn default_decisions() -> u64 {
        65536
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.tokens > 10_000_000 {
            return Err(invalid(
                "cache.tokens",
                "must be at most 10000000 (0 turns the cache off)",
            ));
        }
        if self.decisions > 10_000_000 {
            return Err(invalid(
                "cache.decisions",
                "must be at most 10000000 (0 turns the cache off)",
            ));
        }
        Ok(())
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            tokens: Self::default_tokens(),
            decisions: Self::default_decisions(),
        }
    }
}

/// One JSON log line per decision (tracing target `mcp_authz::decision`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionLog {
    /// Log every denial (401, 403, 400, 413, 415, 404, 503).
    #[serde(default = "DecisionLog::default_denies")]
    pub denies: bool,
    /// Fraction of allows to log, 0.0 to 1.0.
    #[serde(default)]
    pub allow_sample_rate: f64,
    /// Add the token's full claims to each line. Off by default: claims may be personal data.
    #[serde(default)]
    pub include_claims: bool,
}

impl DecisionLog {
    fn default_denies() -> bool {
        true
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if !(0.0..=1.0).contains(&self.allow_sample_rate) {
            return Err(invalid(
                "decision_log.allow_sample_rate",
                "must be between 0.0 and 1.0",
            ));
        }
        Ok(())
    }
}

impl Default for DecisionLog {
    fn default() -> Self {
        Self {
            denies: true,
            allow_sample_rate: 0.0,
            include_claims: false,
        }
    }
}

/// Where mcp-authz listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// `envoy.service.auth.v3.Authorization` (gRPC, HTTP/2 cleartext).
    #[serde(default = "Listen::default_grpc")]
    pub grpc: SocketAddr,
    /// Plain HTTP: `/healthz`, `/readyz`, `/metrics`, PRM documents.
    #[serde(default = "Listen::default_admin")]
    pub admin: SocketAddr,
    /// The admin gRPC API (`mcp_authz.admin.v1.Admin`: Status, Explain). Unauthenticated, so
    /// loopback by default; expose it only on a trusted network.
    #[serde(default = "Listen::default_admin_grpc")]
    pub admin_grpc: SocketAddr,
    /// TLS (and optionally client-certificate verification) on both gRPC listeners; plaintext
    /// when absent. The files are re-read when they change.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// Certificate files for the gRPC listeners (PEM). Relative paths are relative to the
/// configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates a client certificate must chain to; when set, clients without a valid
    /// certificate are refused during the handshake (mutual TLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

impl Listen {
    fn default_grpc() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 9191))
    }
    fn default_admin() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 9090))
    }
    fn default_admin_grpc() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9192))
    }

    /// Two listeners on one port (the same address, or one of them on all addresses) cannot
    /// both bind: caught here rather than when `serve` starts.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        let all = [
            ("listen.grpc", self.grpc),
            ("listen.admin", self.admin),
            ("listen.admin_grpc", self.admin_grpc),
        ];
        for (i, (key, a)) in all.iter().enumerate() {
            for (other, b) in all.iter().skip(i + 1) {
                let overlap =
                    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
                if a.port() != 0 && a.port() == b.port() && overlap {
                    return Err(invalid(*other, format!("`{b}` is also `{key}` (`{a}`)")));
                }
            }
        }
        Ok(())
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            grpc: Self::default_grpc(),
            admin: Self::default_admin(),
            admin_grpc: Self::default_admin_grpc(),
            tls: None,
        }
    }
}

/// Where the Cedar policies live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// `schema.cedarschema`, `*.cedar`, optional `entities.json`. A relative path is taken
    /// from the configuration file's directory. Servers without `servers[].policies.dir` use it.
    pub dir: PathBuf,
    /// A candidate set evaluated beside `dir` on every check of the servers that use `dir`,
    /// never enforced: disagreements are counted and logged (see `crate::policy::shadow`).
    #[serde(default)]
    pub shadow_dir: Option<PathBuf>,
}

/// `servers[].policies`: a server's own policy set, loaded and reloaded on its own.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerPoliciesConfig {
    /// The server's live set; without it the server uses the top-level `policies.dir`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The server's shadow set. Without it, a server with its own `dir` has none, and a
    /// server on the top-level set uses `policies.shadow_dir`.
    #[serde(default)]
    pub shadow_dir: Option<PathBuf>,
}

/// Names of the headers set for the upstream on allow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityHeaders {
    #[serde(default = "IdentityHeaders::default_subject")]
    pub subject: String,
    #[serde(default = "IdentityHeaders::default_tenant")]
    pub tenant: String,
    #[serde(default = "IdentityHeaders::default_client_id")]
    pub client_id: String,
    #[serde(default = "IdentityHeaders::default_scopes")]
    pub scopes: String,
    #[serde(default = "IdentityHeaders::default_issuer")]
    pub issuer: String,
    /// Carries the decision id: to the upstream on allow, to the client on denial.
    #[serde(default = "IdentityHeaders::default_decision_id")]
    pub decision_id: String,
}

impl IdentityHeaders {
    fn default_subject() -> String {
        "x-mcp-authz-subject".into()
    }
    fn default_tenant() -> String {
        "x-mcp-authz-tenant".into()
    }
    fn default_client_id() -> String {
        "x-mcp-authz-client-id".into()
    }
    fn default_scopes() -> String {
        "x-mcp-authz-scopes".into()
    }
    fn default_issuer() -> String {
        "x-mcp-authz-issuer".into()
    }
    fn default_decision_id() -> String {
        "x-mcp-authz-decision-id".into()
    }

    pub fn all(&self) -> [&str; 6] {
        [
            &self.subject,
            &self.tenant,
            &self.client_id,
            &self.scopes,
            &self.issuer,
            &self.decision_id,
        ]
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        for name in self.all() {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return Err(invalid(
                    "identity_headers",
                    format!("`{name}` is not a lowercase header name"),
                ));
            }
            if name == "authorization" || name == "host" || name.starts_with(':') {
                return Err(invalid(
                    "identity_headers",
                    format!("`{name}` cannot be used"),
                ));
            }
        }
        Ok(())
    }
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            subject: Self::default_subject(),
            tenant: Self::default_tenant(),
            client_id: Self::default_client_id(),
            scopes: Self::default_scopes(),
            issuer: Self::default_issuer(),
            decision_id: Self::default_decision_id(),
        }
    }
}

/// Size bounds on untrusted input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Longest `Authorization` header accepted; longer ones are rejected before any parsing.
    #[serde(default = "Limits::default_max_token")]
    pub max_token_bytes: usize,
    /// Largest JWKS or discovery document read from an issuer.
    #[serde(default = "Limits::default_max_jwks")]
    pub max_jwks_bytes: usize,
    /// The proxy's body buffer limit (Envoy's `with_request_body.max_request_bytes`): a body this
    /// long, or shorter than its `content-length`, was cut short on the way and is answered 413.
    #[serde(default = "Limits::default_max_body")]
    pub max_body_bytes: usize,
    /// Largest list response (`tools/list`...) the list filter reads whole (`application/json`)
    /// or largest single SSE event it holds; a longer one becomes a JSON-RPC error, never an
    /// unfiltered list.
    #[serde(default = "Limits::default_max_list")]
    pub max_list_response_bytes: usize,
}

impl Limits {
    fn default_max_token() -> usize {
        8 * 1024
    }
    fn default_max_jwks() -> usize {
        512 * 1024
    }
    /// The shipped Envoy configuration's `max_request_bytes`.
    fn default_max_body() -> usize {
        1 << 20
    }
    fn default_max_list() -> usize {
        4 << 20
    }

    /// The largest gRPC message the check port decodes: four times the body limit, and at least
    /// 16 MiB (tonic's default is 4 MiB). A body over `max_body_bytes` still gets a decision
    /// (413) rather than a gRPC error unless the whole message is larger than this; only a
    /// client that bypasses the proxy can send one (gRPC then answers `OUT_OF_RANGE`).
    pub fn max_check_message_bytes(&self) -> usize {
        self.max_body_bytes.saturating_mul(4).max(16 << 20)
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if !(256..=65_536).contains(&self.max_token_bytes) {
            return Err(invalid(
                "limits.max_token_bytes",
                "must be between 256 and 65536",
            ));
        }
        if !(1024..=16 << 20).contains(&self.max_jwks_bytes) {
            return Err(invalid(
                "limits.max_jwks_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if !(1024..=64 << 20).contains(&self.max_body_bytes) {
            return Err(invalid(
                "limits.max_body_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        if !(1024..=64 << 20).contains(&self.max_list_response_bytes) {
            return Err(invalid(
                "limits.max_list_response_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_token_bytes: Self::default_max_token(),
            max_jwks_bytes: Self::default_max_jwks(),
            max_body_bytes: Self::default_max_body(),
            max_list_response_bytes: Self::default_max_list(),
        }
    }
}
