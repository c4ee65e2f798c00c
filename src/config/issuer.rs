//! One trusted issuer (`issuers[]`): where its keys come from, which algorithms and `typ` it
//! may use, which claims carry identity, how often its JWKS is refetched, and the checks on all
//! of that.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;
use url::Url;

use super::error::{Invalid, invalid};

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
    /// Opaque access tokens checked with this issuer's introspection endpoint (RFC 7662).
    #[serde(default)]
    pub introspection: Option<super::IntrospectionConfig>,
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

// === impl IssuerConfig ===

impl IssuerConfig {
    pub(super) fn validate(&self, key: &str) -> Result<(), Invalid> {
        if self.issuer.is_empty() {
            return Err(invalid(format!("{key}.issuer"), "must not be empty"));
        }
        let issuer_url = Url::parse(&self.issuer).ok();
        let opaque_only = self.introspection.as_ref().is_some_and(|i| i.opaque_only);
        if self.jwks_uri.is_none() && self.hmac_secret.is_none() && !opaque_only {
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
                    .map_err(|e| invalid(format!("{key}.hmac_secret"), e.to_string()))?;
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
        if let Some(introspection) = &self.introspection {
            introspection.validate(self, &format!("{key}.introspection"))?;
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

    /// Whether this issuer publishes no keys: its tokens are opaque and only introspected.
    pub fn is_opaque_only(&self) -> bool {
        self.introspection.as_ref().is_some_and(|i| i.opaque_only)
    }
}

/// `localhost` or a loopback address: where plain `http` cannot be intercepted off the host.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

// === impl SecretSource ===

/// Why an HMAC secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable `{0}` is not set")]
    EnvNotSet(String),
    #[error("cannot read `{}`: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("set exactly one of `env` and `file`")]
    NotOneSource,
}

impl SecretSource {
    /// Reads the secret. Trailing newlines of a file are dropped (editors add them).
    pub fn read(&self) -> Result<Vec<u8>, SecretError> {
        match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .map(String::into_bytes)
                .map_err(|_| SecretError::EnvNotSet(var.clone())),
            (None, Some(path)) => {
                let mut bytes = std::fs::read(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                Ok(bytes)
            }
            _ => Err(SecretError::NotOneSource),
        }
    }
}
