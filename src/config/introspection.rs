//! `issuers[].introspection`: how opaque (non-JWT) access tokens of one issuer are checked with
//! OAuth 2.0 Token Introspection (RFC 7662): where its endpoint is, how this service
//! authenticates to it, and how long answers are kept.

use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;
use url::Url;

use super::error::{Invalid, invalid};
use super::issuer::{IssuerConfig, SecretSource};

/// An issuer's introspection endpoint and this service's credentials as its client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// When absent, `introspection_endpoint` from the issuer's RFC 8414 or OpenID Connect
    /// metadata (found as `jwks_uri` is).
    #[serde(default)]
    pub endpoint: Option<Url>,
    /// This service's client id at the authorization server (RFC 7662 s2.1: the protected
    /// resource authenticates itself).
    pub client_id: String,
    /// For `client_secret_basic` and `client_secret_post`; never inline.
    #[serde(default)]
    pub client_secret: Option<SecretSource>,
    #[serde(default)]
    pub auth: ClientAuthMethod,
    /// For `private_key_jwt`: a PEM private key (PKCS#8, or PKCS#1 for RSA); never inline.
    #[serde(default)]
    pub private_key: Option<SecretSource>,
    /// For `private_key_jwt`: the assertion's signature algorithm.
    #[serde(default = "IntrospectionConfig::default_signing_alg")]
    pub signing_alg: Algorithm,
    /// For `private_key_jwt`: the assertion's `kid` header, when the authorization server
    /// holds several keys for this client.
    #[serde(default)]
    pub key_id: Option<String>,
    /// One introspection request, connecting included. A check waits at most this long, so
    /// keep it below Envoy's ext_authz timeout (0.5 s in deploy/envoy).
    #[serde(
        default = "IntrospectionConfig::default_timeout",
        with = "humantime_serde"
    )]
    pub timeout: Duration,
    /// Introspection requests in flight at once towards this issuer; a check that finds none
    /// free within `timeout` is answered 503.
    #[serde(default = "IntrospectionConfig::default_max_concurrency")]
    pub max_concurrency: usize,
    /// How long an active answer is reused; never past the token's `exp`.
    #[serde(
        default = "IntrospectionConfig::default_cache_ttl",
        with = "humantime_serde"
    )]
    pub cache_ttl: Duration,
    /// How long an inactive (or refused) answer is reused.
    #[serde(
        default = "IntrospectionConfig::default_negative_cache_ttl",
        with = "humantime_serde"
    )]
    pub negative_cache_ttl: Duration,
    /// Answers kept at most (active and inactive together).
    #[serde(default = "IntrospectionConfig::default_cache_entries")]
    pub cache_entries: u64,
    /// The issuer issues opaque tokens only and publishes no JWKS: no key set is fetched, a
    /// JWT naming it is refused, and readiness waits for the introspection endpoint alone.
    #[serde(default)]
    pub opaque_only: bool,
}

/// How this service authenticates to the introspection endpoint (RFC 6749 s2.3.1, RFC 7523
/// s2.2; the names are RFC 7591's `token_endpoint_auth_method` values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-urlencoded id and secret.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JWT assertion signed with `private_key`.
    PrivateKeyJwt,
}

impl IntrospectionConfig {
    fn default_signing_alg() -> Algorithm {
        Algorithm::RS256
    }
    fn default_timeout() -> Duration {
        Duration::from_millis(400)
    }
    fn default_max_concurrency() -> usize {
        32
    }
    fn default_cache_ttl() -> Duration {
        Duration::from_secs(30)
    }
    fn default_negative_cache_ttl() -> Duration {
        Duration::from_secs(5)
    }
    fn default_cache_entries() -> u64 {
        10_000
    }

    pub(super) fn validate(&self, issuer: &IssuerConfig, key: &str) -> Result<(), Invalid> {
        if self.client_id.is_empty() {
            return Err(invalid(format!("{key}.client_id"), "must not be empty"));
        }
        match &self.endpoint {
            Some(url) => issuer.check_transport(url, &format!("{key}.endpoint"))?,
            None => {
                if Url::parse(&issuer.issuer).is_err() {
                    return Err(invalid(
                        format!("{key}.endpoint"),
                        "is required when the issuer is not a URL (nothing to discover from)",
                    ));
                }
            }
        }
        let secret_methods = matches!(
            self.auth,
            ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost
        );
        match (secret_methods, &self.client_secret, &self.private_key) {
            (true, Some(secret), None) => {
                let bytes = secret
                    .read()
                    .map_err(|e| invalid(format!("{key}.client_secret"), e.to_string()))?;
                if bytes.is_empty() {
                    return Err(invalid(format!("{key}.client_secret"), "is empty"));
                }
            }
            (true, _, _) => {
                return Err(invalid(
                    format!("{key}.client_secret"),
                    "`client_secret_basic` and `client_secret_post` need `client_secret` (and no `private_key`)",
                ));
            }
            (false, None, Some(pem)) => {
                let bytes = pem
                    .read()
                    .map_err(|e| invalid(format!("{key}.private_key"), e.to_string()))?;
                signing_key(self.signing_alg, &bytes)
                    .map_err(|m| invalid(format!("{key}.private_key"), m))?;
            }
            (false, _, _) => {
                return Err(invalid(
                    format!("{key}.private_key"),
                    "`private_key_jwt` needs `private_key` (and no `client_secret`)",
                ));
            }
        }
        if issuer.hmac_secret.is_some() && self.opaque_only {
            return Err(invalid(
                format!("{key}.opaque_only"),
                "an issuer with `hmac_secret` signs JWTs; it cannot be `opaque_only`",
            ));
        }
        if issuer.jwks_uri.is_some() && self.opaque_only {
            return Err(invalid(
                format!("{key}.opaque_only"),
                "an `opaque_only` issuer has no `jwks_uri`",
            ));
        }
        let bounds = [
            (
                "timeout",
                self.timeout,
                Duration::from_millis(1),
                Duration::from_secs(60),
            ),
            (
                "cache_ttl",
                self.cache_ttl,
                Duration::ZERO,
                Duration::from_secs(3600),
            ),
            (
                "negative_cache_ttl",
                self.negative_cache_ttl,
                Duration::ZERO,
                Duration::from_secs(300),
            ),
        ];
        for (name, value, min, max) in bounds {
            if value < min || value > max {
                return Err(invalid(
                    format!("{key}.{name}"),
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                ));
            }
        }
        if !(1..=4096).contains(&self.max_concurrency) {
            return Err(invalid(
                format!("{key}.max_concurrency"),
                "must be between 1 and 4096",
            ));
        }
        Ok(())
    }
}

/// The `private_key_jwt` signing key from PEM text, for an asymmetric `alg`.
pub fn signing_key(alg: Algorithm, pem: &[u8]) -> Result<jsonwebtoken::EncodingKey, String> {
    use jsonwebtoken::EncodingKey;
    let parsed = match alg.family() {
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(pem),
        _ => {
            return Err(format!(
                "`signing_alg` {alg:?} is not an asymmetric algorithm"
            ));
        }
    };
    parsed.map_err(|e| format!("not a PEM private key for {alg:?}: {e}"))
}
