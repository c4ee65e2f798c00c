//! One trusted issuer (`issuers[]`): where its keys come from, which algorithms and `typ` it
//! may use, which claims carry identity, how an access token is told from other tokens, how often
//! its JWKS is refetched, and the checks on all of that. A `preset` (see `preset`) fills what the
//! entry leaves unset; the resolved values are read through the methods of `IssuerConfig`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;
use url::Url;

use super::error::{Invalid, invalid};
use super::preset::{Defaults, GENERIC, Preset};

/// A trusted authorization server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Compared byte for byte with the token's `iss` (RFC 9068 s4, RFC 8414 s3.3).
    pub issuer: String,
    /// When absent, discovered (see `discovery`).
    #[serde(default)]
    pub jwks_uri: Option<Url>,
    /// Signature algorithms this issuer may use. Anything else, `none` included, is rejected.
    #[serde(default = "IssuerConfig::default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Shared secret for HS256/384/512 issuers; never inline, always an env var or a file.
    #[serde(default)]
    pub hmac_secret: Option<SecretSource>,
    /// How the JWT `typ` header is checked; unset: the preset's, else `strict`. Read through
    /// [`IssuerConfig::typ_policy`].
    #[serde(default)]
    pub typ: Option<TypPolicy>,
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
    /// The identity provider whose defaults fill what this entry leaves unset.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// OAuth clients whose tokens are accepted; empty: any client. When set, a token must name
    /// its client (per `claims.client_id`) and it must be one of these.
    #[serde(default)]
    pub client_ids: Vec<String>,
    /// Claims (names or JSON Pointers) a token must carry with exactly this string value:
    /// what tells this issuer's access tokens from its ID tokens (Keycloak `typ: Bearer`,
    /// Cognito `token_use: access`). Added to the preset's; a claim named in both takes this
    /// value.
    #[serde(default)]
    pub required_claims: BTreeMap<String, String>,
    /// A token must name its client (per `claims.client_id`); unset: the preset's, else no.
    #[serde(default)]
    pub require_client_id: Option<bool>,
    /// How `aud` is checked; unset: the preset's, else `resource`.
    #[serde(default)]
    pub audience_rule: Option<AudienceRule>,
    /// Where keys are discovered when `jwks_uri` is unset; unset: the preset's, else `auto`.
    #[serde(default)]
    pub discovery: Option<Discovery>,
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

/// How a token's `aud` is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudienceRule {
    /// RFC 9068 s4 / RFC 8707: `aud` must name the server's `resource` (or one of its
    /// `audiences`).
    Resource,
    /// For providers whose access tokens carry no `aud` at all (Cognito): a token without
    /// `aud` is accepted when its client is one of `client_ids` (required with this rule). A
    /// token that has an `aud` is checked as with `resource`: this rule never accepts a wrong
    /// audience, only a missing one.
    ClientId,
}

/// Where the issuer's metadata is looked for when `jwks_uri` is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// RFC 8414 (`<origin>/.well-known/oauth-authorization-server<path>`), then OpenID Connect
    /// Discovery.
    Auto,
    /// OpenID Connect Discovery only (`<issuer>/.well-known/openid-configuration`): for
    /// providers that serve no RFC 8414 document in the RFC 8414 s3.1 location.
    Oidc,
}

/// Which claims carry identity facts. Unset fields take the preset's value, else the RFC 9068
/// names; read them through [`IssuerConfig::claim_mapping`]. A name starting with `/` is a JSON
/// Pointer (RFC 6901: `/realm_access/roles`), any other a top-level claim name, dots and
/// colons included (Auth0's `https://example.com/roles`, Cognito's `cognito:groups`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMapping {
    #[serde(default)]
    pub subject: Option<String>,
    /// Claims searched in order; the first present wins. Strings are space-delimited
    /// (RFC 9068 `scope`), arrays are taken element by element (`scp`).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// `Some(None)`: written as `null`, so no tenant even if the preset maps one.
    #[serde(default, deserialize_with = "explicit")]
    pub tenant: Option<Option<String>>,
    /// `Some(None)`: written as `null`, so no groups even if the preset maps them.
    #[serde(default, deserialize_with = "explicit")]
    pub groups: Option<Option<String>>,
    /// Claims searched in order for the OAuth client id.
    #[serde(default)]
    pub client_id: Option<Vec<String>>,
}

/// A value that was written, `null` included (`Some(None)`); a missing key stays `None` through
/// `#[serde(default)]`.
fn explicit<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The claim mapping in effect: what `issuers[].claims` sets, else the preset's, else the
/// RFC 9068 names. Borrowed, so reading it per token allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct Mapping<'a> {
    pub subject: &'a str,
    pub scopes: Names<'a>,
    pub tenant: Option<&'a str>,
    pub groups: Option<&'a str>,
    pub client_id: Names<'a>,
}

/// A list of claim names, configured or a preset's.
#[derive(Debug, Clone, Copy)]
pub enum Names<'a> {
    Configured(&'a [String]),
    Preset(&'static [&'static str]),
}

impl<'a> Names<'a> {
    pub fn iter(self) -> impl Iterator<Item = &'a str> {
        let (configured, preset) = match self {
            Names::Configured(c) => (c, &[][..]),
            Names::Preset(p) => (&[][..], p),
        };
        configured
            .iter()
            .map(String::as_str)
            .chain(preset.iter().copied())
    }

    pub fn is_empty(self) -> bool {
        self.iter().next().is_none()
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
        self.validate_claims(key)?;
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

    /// The preset's defaults, or the RFC 9068 ones.
    pub fn defaults(&self) -> &'static Defaults {
        self.preset.map_or(&GENERIC, Preset::defaults)
    }

    pub fn typ_policy(&self) -> TypPolicy {
        self.typ.unwrap_or(self.defaults().typ)
    }

    pub fn claim_mapping(&self) -> Mapping<'_> {
        let d = self.defaults();
        let c = &self.claims;
        Mapping {
            subject: c.subject.as_deref().unwrap_or(d.subject),
            scopes: c
                .scopes
                .as_deref()
                .map_or(Names::Preset(d.scopes), Names::Configured),
            tenant: c.tenant.as_ref().map_or(d.tenant, Option::as_deref),
            groups: c.groups.as_ref().map_or(d.groups, Option::as_deref),
            client_id: c
                .client_id
                .as_deref()
                .map_or(Names::Preset(d.client_id), Names::Configured),
        }
    }

    /// The preset's required claims not renamed here, then this entry's.
    pub fn required_claims(&self) -> impl Iterator<Item = (&str, &str)> {
        self.defaults()
            .required_claims
            .iter()
            .filter(|(name, _)| !self.required_claims.contains_key(*name))
            .map(|(n, v)| (*n, *v))
            .chain(
                self.required_claims
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str())),
            )
    }

    pub fn requires_client_id(&self) -> bool {
        self.require_client_id
            .unwrap_or(self.defaults().require_client_id)
    }

    pub fn audience_rule(&self) -> AudienceRule {
        self.audience_rule.unwrap_or(self.defaults().audience_rule)
    }

    pub fn discovery(&self) -> Discovery {
        self.discovery.unwrap_or(self.defaults().discovery)
    }

    /// The claim-mapping and token-kind checks of `validate`.
    fn validate_claims(&self, key: &str) -> Result<(), Invalid> {
        let map = self.claim_mapping();
        if map.subject.is_empty() {
            return Err(invalid(
                format!("{key}.claims.subject"),
                "must not be empty",
            ));
        }
        let mut paths: Vec<(String, &str)> = vec![(format!("{key}.claims.subject"), map.subject)];
        for (i, n) in map.scopes.iter().enumerate() {
            paths.push((format!("{key}.claims.scopes[{i}]"), n));
        }
        for (i, n) in map.client_id.iter().enumerate() {
            paths.push((format!("{key}.claims.client_id[{i}]"), n));
        }
        if let Some(n) = map.tenant {
            paths.push((format!("{key}.claims.tenant"), n));
        }
        if let Some(n) = map.groups {
            paths.push((format!("{key}.claims.groups"), n));
        }
        for name in self.required_claims.keys() {
            paths.push((format!("{key}.required_claims.{name}"), name));
        }
        for (k, path) in paths {
            check_claim_path(path).map_err(|m| invalid(k, m))?;
        }
        let needs_client = self.requires_client_id()
            || !self.client_ids.is_empty()
            || self.audience_rule() == AudienceRule::ClientId;
        if needs_client && map.client_id.is_empty() {
            return Err(invalid(
                format!("{key}.claims.client_id"),
                "must name at least one claim when tokens must name their client",
            ));
        }
        if let Some(i) = self.client_ids.iter().position(String::is_empty) {
            return Err(invalid(
                format!("{key}.client_ids[{i}]"),
                "must not be empty",
            ));
        }
        if self.audience_rule() == AudienceRule::ClientId && self.client_ids.is_empty() {
            return Err(invalid(
                format!("{key}.client_ids"),
                "must list the accepted app clients: with `audience_rule: client_id` (the \
                 `cognito` preset) tokens carry no `aud`, and the client is what binds them \
                 to this deployment",
            ));
        }
        Ok(())
    }
}

/// A claim name, or a JSON Pointer (RFC 6901 s3: `~` only as `~0` or `~1`).
fn check_claim_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(pointer) = path.strip_prefix('/') {
        let mut chars = pointer.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!(
                    "`{path}` is not a JSON Pointer: `~` must be followed by `0` or `1` (RFC 6901 s3)"
                ));
            }
        }
    }
    Ok(())
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
