//! The signed upstream identity (`upstream_identity` at the top, `servers[].upstream_identity`
//! per server): who issues it, where its signing keys come from, how long a token lives, which
//! header carries it. See `crate::upstream_identity` and docs/configuration.md.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::error::{Invalid, invalid};

/// `upstream_identity`: the issuer mcp-authz acts as when it signs an identity for an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamIdentityConfig {
    /// The `iss` of every minted token, and the base of the discovery document and JWKS on the
    /// admin port (`<issuer>/.well-known/openid-configuration`, `<issuer>/.well-known/jwks.json`).
    /// Required: only the operator knows the URL upstreams reach the admin port at.
    pub issuer: String,
    /// Where the signing keys come from.
    #[serde(with = "serde_yaml_ng::with::singleton_map")]
    pub keys: UpstreamKeys,
    /// `exp - iat` of a minted token: long enough for the request to reach the upstream, short
    /// enough that a captured one is useless soon after.
    #[serde(
        default = "UpstreamIdentityConfig::default_lifetime",
        with = "humantime_serde"
    )]
    pub lifetime: Duration,
    /// The request header the token travels in (set with overwrite semantics).
    #[serde(default = "UpstreamIdentityConfig::default_header")]
    pub header: String,
}

/// `upstream_identity.keys`: one of the two, written as a one-key map.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum UpstreamKeys {
    /// `{generate: {rotate_every: 1h, algorithm: ES256}}`: keys made in memory and rotated. One
    /// replica only: another replica would publish other keys.
    Generate(GenerateKeys),
    /// `{dir: /etc/mcp-authz/identity-keys}`: PEM (PKCS#8) private keys shared by every replica,
    /// e.g. a Kubernetes Secret, re-read when they change. A relative path is taken from the
    /// configuration file's directory.
    Dir(PathBuf),
}

/// `upstream_identity.keys.generate`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GenerateKeys {
    /// How long a key signs. The next key is published one interval before it signs, and a
    /// retired key stays published one interval after, so it must exceed `lifetime`.
    #[serde(
        default = "GenerateKeys::default_rotate_every",
        with = "humantime_serde"
    )]
    pub rotate_every: Duration,
    #[serde(default)]
    pub algorithm: SigningAlgorithm,
}

/// The algorithms a generated key can use (a key file's type decides for itself).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// ECDSA P-256 with SHA-256: what every JOSE library verifies.
    #[default]
    ES256,
    /// Ed25519.
    EdDSA,
}

/// `servers[].upstream_identity`: this server's requests carry a signed identity.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerIdentityConfig {
    /// The `aud` of the tokens minted for this server: what the upstream checks it is.
    pub audience: String,
}

/// Bounds on `lifetime`: at least the time a request takes to reach the upstream, at most what
/// still deserves the name short-lived.
const MIN_LIFETIME: Duration = Duration::from_secs(5);
const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// The shortest rotation: a verifier caching the JWKS (`Cache-Control: max-age`, see
/// `crate::upstream_identity::jwks_max_age`) must see the next key before it signs.
const MIN_ROTATE_EVERY: Duration = Duration::from_secs(300);

// === impl UpstreamIdentityConfig ===

impl UpstreamIdentityConfig {
    fn default_lifetime() -> Duration {
        Duration::from_secs(60)
    }

    fn default_header() -> String {
        "x-mcp-authz-identity".into()
    }

    /// `taken` are the other headers mcp-authz sets (`identity_headers`).
    pub(super) fn validate(&self, taken: &[&str]) -> Result<(), Invalid> {
        let url = Url::parse(&self.issuer).map_err(|e| {
            invalid(
                "upstream_identity.issuer",
                format!("`{}` is not a URL: {e}", self.issuer),
            )
        })?;
        if !matches!(url.scheme(), "https" | "http")
            || url.host().is_none()
            || url.query().is_some()
            || self.issuer.contains('#')
        {
            return Err(invalid(
                "upstream_identity.issuer",
                format!(
                    "`{}` must be an absolute http(s) URL without query or fragment",
                    self.issuer
                ),
            ));
        }
        if !(MIN_LIFETIME..=MAX_LIFETIME).contains(&self.lifetime) {
            return Err(invalid(
                "upstream_identity.lifetime",
                "must be between 5s and 1h",
            ));
        }
        let h = &self.header;
        let valid = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(invalid(
                "upstream_identity.header",
                format!("`{h}` is not a lowercase header name"),
            ));
        }
        if h == "authorization" || h == "host" || taken.contains(&h.as_str()) {
            return Err(invalid(
                "upstream_identity.header",
                format!("`{h}` cannot be used (reserved, or one of `identity_headers`)"),
            ));
        }
        match &self.keys {
            UpstreamKeys::Generate(g) => {
                if g.rotate_every < MIN_ROTATE_EVERY {
                    return Err(invalid(
                        "upstream_identity.keys.generate.rotate_every",
                        "must be at least 5m",
                    ));
                }
                if g.rotate_every <= self.lifetime {
                    return Err(invalid(
                        "upstream_identity.keys.generate.rotate_every",
                        "must be longer than `upstream_identity.lifetime`: a retired key stays \
                         published one interval, and every token it signed must expire first",
                    ));
                }
            }
            UpstreamKeys::Dir(d) if d.as_os_str().is_empty() => {
                return Err(invalid("upstream_identity.keys.dir", "must not be empty"));
            }
            UpstreamKeys::Dir(_) => {}
        }
        Ok(())
    }
}

// === impl GenerateKeys ===

impl GenerateKeys {
    fn default_rotate_every() -> Duration {
        Duration::from_secs(3600)
    }
}

impl Default for GenerateKeys {
    fn default() -> Self {
        Self {
            rotate_every: Self::default_rotate_every(),
            algorithm: SigningAlgorithm::default(),
        }
    }
}

// === impl ServerIdentityConfig ===

impl ServerIdentityConfig {
    pub(super) fn validate(&self, key: &str) -> Result<(), Invalid> {
        if self.audience.is_empty() || self.audience.trim() != self.audience {
            return Err(invalid(
                format!("{key}.upstream_identity.audience"),
                "must be a non-empty string",
            ));
        }
        Ok(())
    }
}
