//! `dpop`: how DPoP proofs (RFC 9449) are checked, for every server that accepts them.

use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;

use super::error::{Invalid, invalid};
use super::issuer::SecretSource;

/// `dpop`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopConfig {
    /// Proof signature algorithms accepted; asymmetric only (RFC 9449 s4.2: `alg` "MUST NOT be
    /// `none` or an identifier for a symmetric algorithm"). Advertised in `WWW-Authenticate:
    /// DPoP algs` and in the PRM document's `dpop_signing_alg_values_supported`.
    #[serde(default = "DpopConfig::default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// How old a proof's `iat` may be (RFC 9449 s4.3 item 11, s11.1).
    #[serde(default = "DpopConfig::default_lifetime", with = "humantime_serde")]
    pub proof_lifetime: Duration,
    /// How far in the future a proof's `iat` may be (client clocks run ahead).
    #[serde(default = "DpopConfig::default_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Proof `jti`s remembered to refuse replays (RFC 9449 s11.1), per replica. Each entry
    /// lives `proof_lifetime + 2 × clock_skew`, after which its proof is stale anyway.
    #[serde(default = "DpopConfig::default_replay_entries")]
    pub replay_cache_entries: u64,
    /// Server-provided nonces (RFC 9449 s9): when set, every proof must carry a `nonce` this
    /// service issued in the current or the previous slot.
    #[serde(default)]
    pub nonce: Option<NonceConfig>,
}

/// `dpop.nonce`: stateless nonces, an HMAC over a time slot, so every replica that shares the
/// secret accepts every other replica's nonce.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceConfig {
    /// The HMAC key, shared by all replicas (at least 32 bytes). Without it each process makes
    /// its own at start, which suits a single replica only.
    #[serde(default)]
    pub secret: Option<SecretSource>,
    /// How long one nonce is issued; it is accepted for this long again after its slot ends.
    #[serde(default = "NonceConfig::default_slot", with = "humantime_serde")]
    pub slot: Duration,
}

impl DpopConfig {
    fn default_algorithms() -> Vec<Algorithm> {
        vec![
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::PS256,
            Algorithm::RS256,
            Algorithm::EdDSA,
        ]
    }
    fn default_lifetime() -> Duration {
        Duration::from_secs(60)
    }
    fn default_skew() -> Duration {
        Duration::from_secs(5)
    }
    fn default_replay_entries() -> u64 {
        1_000_000
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if self.algorithms.is_empty() {
            return Err(invalid(
                "dpop.algorithms",
                "must name at least one algorithm",
            ));
        }
        for alg in &self.algorithms {
            if alg.family() == AlgorithmFamily::Hmac {
                return Err(invalid(
                    "dpop.algorithms",
                    format!(
                        "{alg:?} is symmetric; DPoP proofs are signed with a public key (RFC 9449 s4.2)"
                    ),
                ));
            }
        }
        if self.proof_lifetime < Duration::from_secs(1)
            || self.proof_lifetime > Duration::from_secs(3600)
        {
            return Err(invalid("dpop.proof_lifetime", "must be between 1s and 1h"));
        }
        if self.clock_skew > Duration::from_secs(300) {
            return Err(invalid("dpop.clock_skew", "must be at most 5m"));
        }
        if self.replay_cache_entries == 0 {
            return Err(invalid(
                "dpop.replay_cache_entries",
                "must be at least 1: replayed proofs are refused by remembering their jti",
            ));
        }
        if let Some(nonce) = &self.nonce {
            if nonce.slot < Duration::from_secs(1) || nonce.slot > Duration::from_secs(3600) {
                return Err(invalid("dpop.nonce.slot", "must be between 1s and 1h"));
            }
            if let Some(secret) = &nonce.secret {
                match secret.read() {
                    Ok(bytes) if bytes.len() >= 32 => {}
                    Ok(_) => {
                        return Err(invalid("dpop.nonce.secret", "must be at least 32 bytes"));
                    }
                    Err(e) => return Err(invalid("dpop.nonce.secret", e.to_string())),
                }
            }
        }
        Ok(())
    }
}

impl Default for DpopConfig {
    fn default() -> Self {
        Self {
            algorithms: Self::default_algorithms(),
            proof_lifetime: Self::default_lifetime(),
            clock_skew: Self::default_skew(),
            replay_cache_entries: Self::default_replay_entries(),
            nonce: None,
        }
    }
}

impl NonceConfig {
    fn default_slot() -> Duration {
        Duration::from_secs(60)
    }
}
