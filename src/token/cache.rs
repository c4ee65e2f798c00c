//! The verified-token cache. A client reuses its access token for many requests; the first one
//! pays for the signature and the claim checks, the others for a hash lookup and the checks that
//! can change between requests.
//!
//! Safety rules (RFC 8725 s3 applies to the cached path as much as to the full one):
//! - The key is the whole token string and lookups compare it whole, so two tokens never share
//!   an entry (no truncated or non-cryptographic digest that could collide).
//! - An entry never outlives `exp` (plus the issuer's leeway): the cache expires it then, and
//!   every hit checks the time again anyway.
//! - Every hit checks that the key that verified the token is still published, by `kid`,
//!   algorithm and key fingerprint: a key that left the set (rotation, revocation) makes the
//!   entry stale, it is dropped, and the token goes through a full verification.
//! - What depends on the request is checked on every hit: the server must trust the issuer and
//!   be in the token's audience (a token for one server is not valid for another).
//! - Only tokens that passed every check are cached; failures are not, so a bad token costs a
//!   full verification every time and cannot evict good entries faster than distinct good
//!   tokens could.
//!
//! Memory: at most `cache.tokens` entries (TinyLFU admission, LRU eviction, moka); each entry
//! holds the token, its claims and the Cedar principal built from them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;

use super::{Identity, TokenError, audience_ok};
use crate::keys::Lookup;
use crate::policy::Principal;
use crate::resource::ProtectedServer;

/// A token that passed every check, with the per-token work done once.
pub struct Verified {
    pub identity: Identity,
    /// The Cedar principal for `identity`; `None` when it cannot be built (a check then fails
    /// closed in the policy layer, as it would have without the cache).
    pub principal: Option<Principal>,
    pub(super) kid: Option<String>,
    pub(super) alg: Algorithm,
    pub(super) key_fingerprint: [u8; 32],
    /// `exp` plus the issuer's leeway, in seconds since the epoch.
    pub(super) valid_until: i64,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("identity", &self.identity)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

/// What a cache hit is worth for this request.
#[derive(Debug, PartialEq, Eq)]
pub enum Revalidation {
    Valid,
    /// The signing key is no longer published: verify the token again from scratch.
    Stale,
    /// The token is refused for this request, exactly as a full verification would refuse it.
    Refused(TokenError),
}

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
        match keys.find(self.kid.as_deref(), self.alg) {
            Lookup::Found(key) if key.fingerprint == self.key_fingerprint => {}
            _ => return Revalidation::Stale,
        }
        if now > self.valid_until {
            return Revalidation::Refused(TokenError::Expired);
        }
        if !audience_ok(&self.identity.claims, server) {
            return Revalidation::Refused(TokenError::WrongAudience);
        }
        Revalidation::Valid
    }
}

/// Bounded map from token to [`Verified`]; lookups take no lock (moka's concurrent hash table).
pub struct TokenCache {
    /// `None` when turned off (`cache.tokens: 0`).
    inner: Option<moka::sync::Cache<Arc<str>, Arc<Verified>>>,
}

impl TokenCache {
    pub fn new(max_entries: u64) -> Self {
        let inner = (max_entries > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilExpiry)
                .build()
        });
        Self { inner }
    }

    pub fn get(&self, token: &str) -> Option<Arc<Verified>> {
        self.inner.as_ref()?.get(token)
    }

    pub fn insert(&self, token: &str, verified: Arc<Verified>) {
        if let Some(cache) = &self.inner {
            cache.insert(Arc::from(token), verified);
        }
    }

    pub fn invalidate(&self, token: &str) {
        if let Some(cache) = &self.inner {
            cache.invalidate(token);
        }
    }

    /// Approximate: moka applies inserts and evictions in batches.
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| c.entry_count())
    }

    /// Applies pending evictions now, so [`len`](Self::len) is exact (tests, reports).
    pub fn settle(&self) {
        if let Some(c) = &self.inner {
            c.run_pending_tasks();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Each entry lives until its token's `exp` (plus leeway), never longer.
struct UntilExpiry;

impl moka::Expiry<Arc<str>, Arc<Verified>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _token: &Arc<str>,
        verified: &Arc<Verified>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let left = verified.valid_until.saturating_sub(super::unix_now());
        Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
    }
}
