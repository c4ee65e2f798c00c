//! A token that passed every check, bound to the key that verified it, and the checks that must
//! be made again each time the same token is presented (see `engine::caller` for the cache).
//!
//! RFC 8725 s3 applies to a reused verification as much as to a fresh one:
//! - the key that verified the token must still be published, by `kid`, algorithm and key
//!   fingerprint: a key that left the set (rotation, revocation) makes the verification stale;
//! - the time is checked again: never past `exp` plus the issuer's leeway;
//! - what depends on the request is checked again: the server must trust the issuer and be in
//!   the token's audience (a token for one server is not valid for another).

use jsonwebtoken::Algorithm;

use super::{TokenError, audience_ok};
use crate::identity::Identity;
use crate::keys::Lookup;
use crate::resource::ProtectedServer;

/// A verified JWT access token.
#[derive(Debug)]
pub struct Verified {
    pub identity: Identity,
    /// The key that verified the signature.
    pub binding: KeyBinding,
    /// `exp` plus the issuer's leeway, in seconds since the epoch: the first second at which
    /// the token is no longer valid.
    pub valid_until: i64,
    /// The token's `aud` values, checked again for every server the token is presented to.
    pub audience: Box<[Box<str>]>,
    /// `cnf.jkt`: the DPoP key this token is bound to (RFC 9449 s6.1), if any.
    pub confirmation: Option<Box<str>>,
}

/// Which published key verified a token: enough to tell, later, whether that exact key is still
/// in the issuer's set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBinding {
    pub kid: Option<String>,
    pub alg: Algorithm,
    /// SHA-256 of the key material and its allowed algorithms (see `keys`).
    pub fingerprint: [u8; 32],
}

/// What an earlier verification is worth for this request.
#[derive(Debug, PartialEq, Eq)]
pub enum Revalidation {
    Valid,
    /// The signing key is no longer published: verify the token again from scratch.
    Stale,
    /// The token is refused for this request, exactly as a full verification would refuse it.
    Refused(TokenError),
}

// === impl Verified ===

impl Verified {
    /// The checks that can change between two uses of the same token: the server (issuer trust,
    /// audience), the key set, and the time. In the order a full verification makes them.
    pub fn revalidate(&self, server: &ProtectedServer, now: i64) -> Revalidation {
        let Some(issuer) = server
            .issuers
            .iter()
            .find(|i| i.config.issuer == self.identity.issuer)
        else {
            return Revalidation::Refused(TokenError::UntrustedIssuer);
        };
        let Some(keys) = issuer.load() else {
            return Revalidation::Refused(TokenError::KeysUnavailable);
        };
        let b = &self.binding;
        match keys.find(b.kid.as_deref(), b.alg) {
            Lookup::Found(key) if key.fingerprint == b.fingerprint => {}
            _ => return Revalidation::Stale,
        }
        // As at verification (RFC 7519 s4.1.4): expired at `exp + leeway`, not after it.
        if now >= self.valid_until {
            return Revalidation::Refused(TokenError::Expired);
        }
        if !audience_ok(
            &self.audience,
            self.identity.client_id.as_deref(),
            &issuer.config,
            server,
        ) {
            return Revalidation::Refused(TokenError::WrongAudience);
        }
        Revalidation::Valid
    }
}
