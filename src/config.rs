//! The configuration file: one typed tree, unknown keys rejected, validated before anything
//! listens. Every key is documented in `docs/configuration.md`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;
use url::Url;

/// Everything `serve` needs, as read from the YAML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    pub issuers: Vec<IssuerConfig>,
    pub servers: Vec<ServerConfig>,
    pub policies: PoliciesConfig,
    #[serde(default)]
    pub identity_headers: IdentityHeaders,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub decision_log: DecisionLog,
    #[serde(default)]
    pub cache: CacheConfig,
}

/// The verified-caller cache (see `engine::caller`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Most verified tokens kept; 0 turns the cache off (every check verifies a signature).
    /// Each entry costs about 8.5 KiB (measured with ~400-byte tokens; see docs/benchmarks).
    #[serde(default = "CacheConfig::default_tokens")]
    pub tokens: u64,
}

impl CacheConfig {
    fn default_tokens() -> u64 {
        4096
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            tokens: Self::default_tokens(),
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
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            grpc: Self::default_grpc(),
            admin: Self::default_admin(),
            admin_grpc: Self::default_admin_grpc(),
        }
    }
}

/// Where the Cedar policies live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// `schema.cedarschema`, `*.cedar`, optional `entities.json`. A relative path is taken
    /// from the configuration file's directory.
    pub dir: PathBuf,
}

/// A trusted authorization server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Compared byte for byte with the token's `iss` (RFC 9068 s4, RFC 8414 s3.3).
    pub issuer: String,
    /// When absent, discovered from RFC 8414 metadata, then OpenID Connect discovery.
    #[serde(default)]
    pub jwks_uri: Option<Url>,
    /// Signature algorithms this issuer may use. Anything else, `none` included, is rejected.
    #[serde(default = "IssuerConfig::default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Shared secret for HS256/384/512 issuers; never inline, always an env var or a file.
    #[serde(default)]
    pub hmac_secret: Option<SecretSource>,
    /// How the JWT `typ` header is checked.
    #[serde(default)]
    pub typ: TypPolicy,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    #[serde(default = "IssuerConfig::default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    #[serde(default)]
    pub claims: ClaimMapping,
    #[serde(default)]
    pub key_refresh: KeyRefresh,
    /// Permit `http://` discovery and JWKS URLs on hosts other than loopback.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl IssuerConfig {
    fn default_algorithms() -> Vec<Algorithm> {
        vec![Algorithm::RS256]
    }
    fn default_leeway() -> Duration {
        Duration::from_secs(30)
    }
}

/// Where a secret comes from. Exactly one of the two.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// RFC 9068 s2.1 says access tokens carry `typ: at+jwt`; many IdPs send `JWT` or nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypPolicy {
    /// `at+jwt` or `application/at+jwt` (case-insensitive) is required.
    #[default]
    Strict,
    /// Also accepts `JWT`, `application/jwt` or no `typ`. Other values are still rejected,
    /// so an ID token marked `typ: id+jwt`-style cannot be replayed as an access token.
    Relaxed,
}

/// Which claims carry identity facts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMapping {
    #[serde(default = "ClaimMapping::default_subject")]
    pub subject: String,
    /// Claims searched in order; the first present wins. Strings are space-delimited
    /// (RFC 9068 `scope`), arrays are taken element by element (`scp`).
    #[serde(default = "ClaimMapping::default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default = "ClaimMapping::default_groups")]
    pub groups: Option<String>,
    /// Claims searched in order for the OAuth client id.
    #[serde(default = "ClaimMapping::default_client_id")]
    pub client_id: Vec<String>,
}

impl ClaimMapping {
    fn default_subject() -> String {
        "sub".into()
    }
    fn default_scopes() -> Vec<String> {
        vec!["scope".into(), "scp".into()]
    }
    fn default_groups() -> Option<String> {
        Some("groups".into())
    }
    fn default_client_id() -> Vec<String> {
        vec!["client_id".into(), "azp".into()]
    }
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            subject: Self::default_subject(),
            scopes: Self::default_scopes(),
            tenant: None,
            groups: Self::default_groups(),
            client_id: Self::default_client_id(),
        }
    }
}

/// Bounds on how often the JWKS is fetched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRefresh {
    /// Used when the JWKS response has no `Cache-Control: max-age`.
    #[serde(default = "KeyRefresh::default_interval", with = "humantime_serde")]
    pub default_interval: Duration,
    /// `max-age` is clamped to `[min_interval, max_interval]`.
    #[serde(default = "KeyRefresh::default_min", with = "humantime_serde")]
    pub min_interval: Duration,
    #[serde(default = "KeyRefresh::default_max", with = "humantime_serde")]
    pub max_interval: Duration,
    /// At most one refetch per this interval for tokens with an unknown `kid`.
    #[serde(default = "KeyRefresh::default_unknown_kid", with = "humantime_serde")]
    pub unknown_kid_interval: Duration,
    /// How long a check waits for an unknown-`kid` refetch before giving up.
    #[serde(default = "KeyRefresh::default_wait", with = "humantime_serde")]
    pub unknown_kid_wait: Duration,
    /// Timeout for one discovery or JWKS request.
    #[serde(default = "KeyRefresh::default_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

impl KeyRefresh {
    fn default_interval() -> Duration {
        Duration::from_secs(300)
    }
    fn default_min() -> Duration {
        Duration::from_secs(60)
    }
    fn default_max() -> Duration {
        Duration::from_secs(86_400)
    }
    fn default_unknown_kid() -> Duration {
        Duration::from_secs(10)
    }
    fn default_wait() -> Duration {
        // Below Envoy's ext_authz timeout (0.5 s in deploy/envoy), so a check that waits for
        // a rotation refetch still answers before Envoy gives up on it.
        Duration::from_millis(300)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(5)
    }
}

impl Default for KeyRefresh {
    fn default() -> Self {
        Self {
            default_interval: Self::default_interval(),
            min_interval: Self::default_min(),
            max_interval: Self::default_max(),
            unknown_kid_interval: Self::default_unknown_kid(),
            unknown_kid_wait: Self::default_wait(),
            fetch_timeout: Self::default_timeout(),
        }
    }
}

/// A protected MCP server (an OAuth protected resource, RFC 9728).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub id: String,
    /// Canonical URI: the audience tokens must carry and PRM `resource`, served byte for byte
    /// as written (clients compare it exactly).
    pub resource: String,
    pub authorization_servers: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Scopes advertised in the `scope` attribute of a 401 challenge (MCP 2025-11-25).
    #[serde(default)]
    pub challenge_scopes: Vec<String>,
    #[serde(default, rename = "match")]
    pub matching: MatchConfig,
    /// The server's tenant, for tenant isolation in policies. Exclusive with `tenant_from`.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Takes the tenant from the request instead.
    #[serde(default)]
    pub tenant_from: Option<TenantFrom>,
}

/// Where a request carries the server's tenant.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TenantFrom {
    /// A request header (lowercase name), e.g. set by an upstream gateway.
    Header(String),
    /// The N-th path segment, 1-based: `/t/acme/mcp` with `2` gives `acme`.
    PathSegment(usize),
}

/// How a request is matched to a server. Defaults come from `resource`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Host names (with or without port) this server answers on; `*` matches any host.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Path prefix, matched on segment boundaries.
    #[serde(default)]
    pub path_prefix: Option<String>,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Longest `Authorization` header accepted; longer ones are rejected before any parsing.
    #[serde(default = "Limits::default_max_token")]
    pub max_token_bytes: usize,
    /// Largest JWKS or discovery document read from an issuer.
    #[serde(default = "Limits::default_max_jwks")]
    pub max_jwks_bytes: usize,
}

impl Limits {
    fn default_max_token() -> usize {
        8 * 1024
    }
    fn default_max_jwks() -> usize {
        512 * 1024
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_token_bytes: Self::default_max_token(),
            max_jwks_bytes: Self::default_max_jwks(),
        }
    }
}

// === errors ===

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}`: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("`{path}`: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// A validation failure before the file name is known.
#[derive(Debug)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        message: message.into(),
    }
}

// === impl Config ===

impl Config {
    /// Reads, parses and validates a file. The error names the file and the key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::from_yaml(&text).map_err(|e| e.at(path))?;
        if config.policies.dir.is_relative()
            && let Some(base) = path.parent()
        {
            config.policies.dir = base.join(&config.policies.dir);
        }
        Ok(config)
    }

    pub fn from_yaml(text: &str) -> Result<Self, LoadError> {
        let config: Config = serde_yaml_ng::from_str(text).map_err(LoadError::Parse)?;
        config.validate().map_err(LoadError::Invalid)?;
        Ok(config)
    }

    /// Checks what serde cannot: cross references, URL shapes, secret sources, bounds.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.issuers.is_empty() {
            return Err(invalid("issuers", "at least one issuer is required"));
        }
        if self.servers.is_empty() {
            return Err(invalid("servers", "at least one server is required"));
        }
        let mut issuers = HashSet::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            issuer.validate(&format!("issuers[{i}]"))?;
            if !issuers.insert(issuer.issuer.as_str()) {
                return Err(invalid(
                    format!("issuers[{i}].issuer"),
                    format!("`{}` is listed twice", issuer.issuer),
                ));
            }
        }
        let mut ids = HashSet::new();
        for (i, server) in self.servers.iter().enumerate() {
            let key = format!("servers[{i}]");
            server.validate(&key)?;
            if !ids.insert(server.id.as_str()) {
                return Err(invalid(
                    format!("{key}.id"),
                    format!("`{}` is used twice", server.id),
                ));
            }
            for (j, auth) in server.authorization_servers.iter().enumerate() {
                if !issuers.contains(auth.as_str()) {
                    return Err(invalid(
                        format!("{key}.authorization_servers[{j}]"),
                        format!("`{auth}` is not one of the configured `issuers`"),
                    ));
                }
            }
        }
        for name in self.identity_headers.all() {
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
        if !(0.0..=1.0).contains(&self.decision_log.allow_sample_rate) {
            return Err(invalid(
                "decision_log.allow_sample_rate",
                "must be between 0.0 and 1.0",
            ));
        }
        if self.cache.tokens > 10_000_000 {
            return Err(invalid(
                "cache.tokens",
                "must be at most 10000000 (0 turns the cache off)",
            ));
        }
        if !(256..=65_536).contains(&self.limits.max_token_bytes) {
            return Err(invalid(
                "limits.max_token_bytes",
                "must be between 256 and 65536",
            ));
        }
        if !(1024..=16 << 20).contains(&self.limits.max_jwks_bytes) {
            return Err(invalid(
                "limits.max_jwks_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        Ok(())
    }
}

#[derive(Debug)]
pub enum LoadError {
    Parse(serde_yaml_ng::Error),
    Invalid(Invalid),
}

impl LoadError {
    fn at(self, path: &Path) -> ConfigError {
        match self {
            LoadError::Parse(e) => ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            },
            LoadError::Invalid(Invalid { key, message }) => ConfigError::Invalid {
                path: path.to_owned(),
                key,
                message,
            },
        }
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Parse(e) => write!(f, "{e}"),
            LoadError::Invalid(Invalid { key, message }) => write!(f, "key `{key}`: {message}"),
        }
    }
}

impl std::error::Error for LoadError {}

// === impl IssuerConfig ===

impl IssuerConfig {
    fn validate(&self, key: &str) -> Result<(), Invalid> {
        if self.issuer.is_empty() {
            return Err(invalid(format!("{key}.issuer"), "must not be empty"));
        }
        let issuer_url = Url::parse(&self.issuer).ok();
        if self.jwks_uri.is_none() && self.hmac_secret.is_none() {
            // Discovery needs a URL to start from (RFC 8414 s3).
            let Some(url) = &issuer_url else {
                return Err(invalid(
                    format!("{key}.issuer"),
                    format!(
                        "`{}` is not a URL; set `jwks_uri` or use an URL so keys can be discovered",
                        self.issuer
                    ),
                ));
            };
            self.check_transport(url, &format!("{key}.issuer"))?;
        }
        if let Some(url) = &self.jwks_uri {
            self.check_transport(url, &format!("{key}.jwks_uri"))?;
        }
        if self.algorithms.is_empty() {
            return Err(invalid(format!("{key}.algorithms"), "must not be empty"));
        }
        let hmac = self
            .algorithms
            .iter()
            .filter(|a| a.family() == AlgorithmFamily::Hmac)
            .count();
        match (&self.hmac_secret, hmac) {
            (None, n) if n > 0 => {
                return Err(invalid(
                    format!("{key}.algorithms"),
                    "HS256/HS384/HS512 need `hmac_secret` (and only then are allowed)",
                ));
            }
            (Some(_), n) if n != self.algorithms.len() => {
                return Err(invalid(
                    format!("{key}.algorithms"),
                    "an issuer with `hmac_secret` may list only HS256/HS384/HS512",
                ));
            }
            (Some(_), _) if self.jwks_uri.is_some() => {
                return Err(invalid(
                    format!("{key}.jwks_uri"),
                    "an issuer uses either `hmac_secret` or a JWKS, not both",
                ));
            }
            (Some(secret), _) => {
                let bytes = secret
                    .read()
                    .map_err(|m| invalid(format!("{key}.hmac_secret"), m))?;
                // RFC 7518 s3.2: the key must be at least as long as the hash output.
                let needed = self
                    .algorithms
                    .iter()
                    .map(|a| match a {
                        Algorithm::HS384 => 48,
                        Algorithm::HS512 => 64,
                        _ => 32,
                    })
                    .max()
                    .unwrap_or(32);
                if bytes.len() < needed {
                    return Err(invalid(
                        format!("{key}.hmac_secret"),
                        format!(
                            "the secret must be at least {needed} bytes for {:?} (RFC 7518 s3.2)",
                            self.algorithms
                        ),
                    ));
                }
            }
            _ => {}
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(invalid(format!("{key}.leeway"), "must be at most 5m"));
        }
        if self.claims.subject.is_empty() {
            return Err(invalid(
                format!("{key}.claims.subject"),
                "must not be empty",
            ));
        }
        let r = &self.key_refresh;
        if r.min_interval > r.max_interval {
            return Err(invalid(
                format!("{key}.key_refresh.min_interval"),
                "must not exceed `max_interval`",
            ));
        }
        if r.min_interval < Duration::from_secs(1) {
            return Err(invalid(
                format!("{key}.key_refresh.min_interval"),
                "must be at least 1s",
            ));
        }
        // Upper bounds keep timer arithmetic far from overflow and catch unit mistakes.
        let bounds = [
            (
                "fetch_timeout",
                r.fetch_timeout,
                Duration::from_millis(1),
                Duration::from_secs(60),
            ),
            (
                "unknown_kid_wait",
                r.unknown_kid_wait,
                Duration::from_millis(1),
                Duration::from_secs(10),
            ),
            // Zero would let random `kid`s drive back-to-back fetches against the IdP.
            (
                "unknown_kid_interval",
                r.unknown_kid_interval,
                Duration::from_secs(1),
                Duration::from_secs(3600),
            ),
            (
                "default_interval",
                r.default_interval,
                Duration::from_secs(1),
                Duration::from_secs(7 * 86_400),
            ),
            (
                "max_interval",
                r.max_interval,
                Duration::from_secs(1),
                Duration::from_secs(7 * 86_400),
            ),
        ];
        for (name, value, min, max) in bounds {
            if value < min || value > max {
                return Err(invalid(
                    format!("{key}.key_refresh.{name}"),
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Keys fetched over plain HTTP can be swapped by anyone on the path, so `http` is allowed
    /// only on loopback unless the operator opts in.
    pub fn check_transport(&self, url: &Url, key: &str) -> Result<(), Invalid> {
        match url.scheme() {
            "https" => Ok(()),
            "http" if self.allow_insecure_http || is_loopback(url) => Ok(()),
            "http" => Err(invalid(
                key,
                format!("`{url}` uses http; use https or set `allow_insecure_http: true`"),
            )),
            other => Err(invalid(key, format!("unsupported URL scheme `{other}`"))),
        }
    }

    pub fn is_hmac(&self) -> bool {
        self.hmac_secret.is_some()
    }
}

pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

// === impl SecretSource ===

impl SecretSource {
    /// Reads the secret. Trailing newlines of a file are dropped (editors add them).
    pub fn read(&self) -> Result<Vec<u8>, String> {
        match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .map(String::into_bytes)
                .map_err(|_| format!("environment variable `{var}` is not set")),
            (None, Some(path)) => {
                let mut bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                Ok(bytes)
            }
            _ => Err("set exactly one of `env` and `file`".into()),
        }
    }
}

// === impl ServerConfig ===

impl ServerConfig {
    fn validate(&self, key: &str) -> Result<(), Invalid> {
        let id_ok = !self.id.is_empty()
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !id_ok {
            return Err(invalid(
                format!("{key}.id"),
                format!("`{}` must be non-empty [A-Za-z0-9._-]", self.id),
            ));
        }
        let r = Url::parse(&self.resource).map_err(|e| {
            invalid(
                format!("{key}.resource"),
                format!("`{}` is not a URL: {e}", self.resource),
            )
        })?;
        if !matches!(r.scheme(), "https" | "http") || r.host().is_none() {
            return Err(invalid(
                format!("{key}.resource"),
                format!("`{r}` must be an absolute http(s) URL"),
            ));
        }
        // RFC 8707 s2: the resource indicator must not include a fragment.
        if r.fragment().is_some() || r.query().is_some() || self.resource.contains('#') {
            return Err(invalid(
                format!("{key}.resource"),
                format!("`{r}` must have no query or fragment"),
            ));
        }
        if self.authorization_servers.is_empty() {
            return Err(invalid(
                format!("{key}.authorization_servers"),
                "at least one authorization server is required (RFC 9728 / MCP)",
            ));
        }
        for (field, list) in [
            ("scopes_supported", &self.scopes_supported),
            ("challenge_scopes", &self.challenge_scopes),
        ] {
            for s in list {
                // RFC 6749 s3.3 scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
                if s.is_empty() || !s.bytes().all(crate::challenge::is_scope_char) {
                    return Err(invalid(
                        format!("{key}.{field}"),
                        format!("`{s}` is not a valid scope token"),
                    ));
                }
            }
        }
        if let Some(prefix) = &self.matching.path_prefix
            && !prefix.starts_with('/')
        {
            return Err(invalid(
                format!("{key}.match.path_prefix"),
                format!("`{prefix}` must start with `/`"),
            ));
        }
        match (&self.tenant, &self.tenant_from) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    format!("{key}.tenant_from"),
                    "set either `tenant` or `tenant_from`, not both",
                ));
            }
            (_, Some(TenantFrom::Header(h)))
                if h.is_empty()
                    || !h
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                return Err(invalid(
                    format!("{key}.tenant_from.header"),
                    format!("`{h}` is not a lowercase header name"),
                ));
            }
            (_, Some(TenantFrom::PathSegment(0))) => {
                return Err(invalid(
                    format!("{key}.tenant_from.path_segment"),
                    "segments are counted from 1",
                ));
            }
            _ => {}
        }
        if let Some(hosts) = &self.matching.hosts
            && hosts.is_empty()
        {
            return Err(invalid(
                format!("{key}.match.hosts"),
                "must not be empty; omit it to use the host of `resource`",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
policies: {dir: ./policies}
issuers:
  - issuer: https://idp.example.com
servers:
  - id: weather
    resource: https://mcp.example.com/weather/mcp
    authorization_servers: [https://idp.example.com]
"#;

    fn err(yaml: &str) -> String {
        match Config::from_yaml(yaml) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.listen.grpc.port(), 9191);
        assert_eq!(c.issuers[0].algorithms, vec![Algorithm::RS256]);
        assert_eq!(c.issuers[0].typ, TypPolicy::Strict);
        assert_eq!(c.identity_headers.subject, "x-mcp-authz-subject");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = err(&format!("{MINIMAL}\nbogus: 1\n"));
        assert!(e.contains("bogus"), "{e}");
        let e = err(&MINIMAL.replace("issuer: https", "isuer: https"));
        assert!(e.contains("isuer"), "{e}");
    }

    #[test]
    fn authorization_server_must_be_configured() {
        let e = err(&MINIMAL.replace("[https://idp.example.com]", "[https://other]"));
        assert!(e.contains("servers[0].authorization_servers[0]"), "{e}");
    }

    #[test]
    fn hmac_needs_a_secret_and_secret_needs_hmac() {
        let e = err(&MINIMAL.replace(
            "issuer: https://idp.example.com\n",
            "issuer: https://idp.example.com\n    algorithms: [HS256]\n",
        ));
        assert!(e.contains("hmac_secret"), "{e}");
        let e = err(&MINIMAL.replace(
            "issuer: https://idp.example.com\n",
            "issuer: https://idp.example.com\n    algorithms: [HS256]\n    hmac_secret: {env: MCP_AUTHZ_TEST_UNSET_VAR}\n",
        ));
        assert!(e.contains("MCP_AUTHZ_TEST_UNSET_VAR"), "{e}");
    }

    #[test]
    fn alg_none_is_not_an_algorithm() {
        let e = err(&MINIMAL.replace(
            "issuer: https://idp.example.com\n",
            "issuer: https://idp.example.com\n    algorithms: [none]\n",
        ));
        assert!(e.contains("none"), "{e}");
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let e = err(&MINIMAL.replace(
            "issuer: https://idp.example.com\n",
            "issuer: https://idp.example.com\n    jwks_uri: http://idp.example.com/jwks\n",
        ));
        assert!(
            e.contains("jwks_uri") && e.contains("allow_insecure_http"),
            "{e}"
        );
        Config::from_yaml(&MINIMAL.replace(
            "issuer: https://idp.example.com\n",
            "issuer: https://idp.example.com\n    jwks_uri: http://127.0.0.1:1/jwks\n",
        ))
        .unwrap();
    }

    #[test]
    fn resource_with_fragment_is_rejected() {
        let e = err(&MINIMAL.replace("weather/mcp", "weather/mcp#x"));
        assert!(e.contains("servers[0].resource"), "{e}");
    }

    #[test]
    fn refresh_bounds_are_checked() {
        let e = err(&MINIMAL.replace(
            "issuer: https://idp.example.com\n",
            "issuer: https://idp.example.com\n    key_refresh: {unknown_kid_interval: 0s}\n",
        ));
        assert!(
            e.contains("issuers[0].key_refresh.unknown_kid_interval"),
            "{e}"
        );
        let e = err(&MINIMAL.replace(
            "issuer: https://idp.example.com\n",
            "issuer: https://idp.example.com\n    key_refresh: {fetch_timeout: 100years}\n",
        ));
        assert!(e.contains("fetch_timeout"), "{e}");
    }

    #[test]
    fn hmac_secret_length_follows_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, [b'x'; 40]).unwrap();
        let yaml = |alg: &str| {
            MINIMAL.replace(
                "issuer: https://idp.example.com\n",
                &format!(
                    "issuer: https://idp.example.com\n    algorithms: [{alg}]\n    hmac_secret: {{file: {}}}\n",
                    path.display()
                ),
            )
        };
        Config::from_yaml(&yaml("HS256")).unwrap();
        let e = err(&yaml("HS384"));
        assert!(e.contains("48 bytes"), "{e}");
    }

    #[test]
    fn durations_are_humane() {
        let c = Config::from_yaml(&MINIMAL.replace(
            "issuer: https://idp.example.com\n",
            "issuer: https://idp.example.com\n    leeway: 10s\n    key_refresh: {min_interval: 2m}\n",
        ))
        .unwrap();
        assert_eq!(c.issuers[0].leeway, Duration::from_secs(10));
        assert_eq!(
            c.issuers[0].key_refresh.min_interval,
            Duration::from_secs(120)
        );
    }
}
