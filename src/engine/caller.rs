//! Who is calling: the bearer credential of a request resolved to a [`Caller`], through a cache
//! of callers already established. A client reuses its access token for many requests; the
//! first one pays for the signature and the claim checks, the others for a hash lookup and the
//! checks that can change between requests.
//!
//! Cache rules (RFC 8725 s3 applies to the cached path as much as to the full one):
//! - The key is the whole token string and lookups compare it whole, so two tokens never share
//!   an entry (no truncated or non-cryptographic digest that could collide).
//! - An entry never outlives its credential (a JWT's `exp` plus the issuer's leeway): the cache
//!   expires it then, and every hit checks the time again anyway.
//! - Every hit makes the credential's per-request checks ([`Caller::revalidate`]): for a JWT,
//!   the key that verified it must still be published (by `kid`, algorithm and fingerprint; a
//!   key that left the set makes the entry stale, it is dropped and the token verified again
//!   from scratch), and the server must trust the issuer and be in the token's audience.
//! - Only tokens that passed every check are cached; failures are not, so a bad token costs a
//!   full verification every time and cannot evict good entries faster than distinct good
//!   tokens could.
//!
//! Opaque (non-JWT) tokens never enter this cache: the one introspecting issuer the server
//! trusts checks them, and its own cache is keyed by the token's digest (see `introspection`).
//!
//! Memory: at most `cache.tokens` entries (TinyLFU admission, LRU eviction, moka); each entry
//! holds the token, its mapped identity with the claims as one JSON text, and its audiences,
//! about 1.9 KB with a typical token (docs/benchmarks/README.md). The Cedar principal is not
//! kept: it would more than double that (a Cedar entity's attribute and tag maps cost about
//! 4 KB), and a check needs it only when the decision cache misses (`engine::decisions`), where
//! it is built for that check (about 9 µs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sha2::Digest as _;
use std::time::{Duration, Instant};

use crate::identity::Identity;
use crate::introspection::Introspected;
use crate::keys::Lookup;
use crate::metrics::{CacheLookup, Metrics};
use crate::resource::ProtectedServer;
use crate::token::{Parsed, Revalidation, TokenError, Verified, unix_now};

/// An established caller: the credential it presented, verified, and what the policy layer
/// built from it once.
pub struct Caller {
    credential: Credential,
    /// SHA-256 of the token: names the caller in the decision cache's keys (a digest, so that
    /// cache holds no token; collision-resistant, so two tokens never share decisions). The
    /// token cache itself still compares whole tokens (see the module docs).
    digest: [u8; 32],
    /// Set when the token cache answers for this caller: the token came back. Only such
    /// callers' decisions are worth caching (see `engine::decisions`).
    returning: AtomicBool,
}

/// How the caller proved who it is. Each kind says how long it stays valid and what must be
/// checked again on every request that presents it.
#[derive(Debug)]
pub enum Credential {
    /// A JWT access token verified locally against the issuer's published keys (RFC 9068).
    Jwt(Verified),
    /// An opaque token its issuer's introspection endpoint called active (RFC 7662).
    Introspected(Introspected),
}

// === impl Caller ===

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl Caller {
    pub fn identity(&self) -> &Identity {
        match &self.credential {
            Credential::Jwt(v) => &v.identity,
            Credential::Introspected(i) => &i.identity,
        }
    }

    /// The DPoP key thumbprint (RFC 7638) the credential is bound to (`cnf.jkt`, RFC 9449
    /// s6), if it is bound: then every request must carry a proof signed by that key.
    pub fn confirmation(&self) -> Option<&str> {
        match &self.credential {
            Credential::Jwt(v) => v.confirmation.as_deref(),
            Credential::Introspected(i) => i.confirmation.as_deref(),
        }
    }

    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// Whether this caller's token has been presented before (answered by the token cache).
    pub fn is_returning(&self) -> bool {
        self.returning.load(Ordering::Relaxed)
    }

    /// SHA-256 of the token this caller presented.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Seconds since the epoch after which the credential is no longer accepted.
    fn valid_until(&self) -> i64 {
        match &self.credential {
            Credential::Jwt(v) => v.valid_until,
            Credential::Introspected(i) => i.valid_until,
        }
    }

    /// The checks that every request presenting this credential makes, cached or not. A
    /// sender-constrained credential (a `cnf` key for DPoP, RFC 9449, or a certificate
    /// thumbprint, RFC 8705) belongs here too: its proof differs on every request, so it can
    /// never be answered from the cache.
    pub fn revalidate(&self, server: &ProtectedServer, now: i64) -> Revalidation {
        match &self.credential {
            Credential::Jwt(v) => v.revalidate(server, now),
            Credential::Introspected(i) => i.revalidate(server, now),
        }
    }
}

/// Resolves bearer tokens to callers; lookups take no lock (moka's concurrent hash table).
pub struct Callers {
    /// `None` when turned off (`cache.tokens: 0`).
    cache: Option<moka::sync::Cache<Arc<str>, Arc<Caller>>>,
    /// Bumped by [`Callers::clear`]: a caller verified under the configuration before a clear
    /// must not be cached after it.
    generation: AtomicU64,
    metrics: Metrics,
}

// === impl Callers ===

impl Callers {
    /// Forgets every cached caller (a new configuration may verify tokens differently).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }

    pub fn new(max_entries: u64, metrics: Metrics) -> Self {
        let cache = (max_entries > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilExpiry)
                .build()
        });
        Self {
            cache,
            generation: AtomicU64::new(0),
            metrics,
        }
    }

    /// The caller behind `token` for a request to `server`. A token seen before is checked
    /// against the cache's rules (see the module docs); any other is verified in full and, once
    /// it passes, cached.
    pub async fn resolve(
        &self,
        token: &str,
        server: &ProtectedServer,
    ) -> Result<Arc<Caller>, TokenError> {
        let now = unix_now();
        if !jwt_shaped(token) {
            return introspect(token, server, now).await;
        }
        let lookup = match self.get(token) {
            Some(hit) => match hit.revalidate(server, now) {
                Revalidation::Valid => {
                    self.metrics.token_cache(CacheLookup::Hit);
                    hit.returning.store(true, Ordering::Relaxed);
                    return Ok(hit);
                }
                Revalidation::Refused(e) => {
                    if e == TokenError::Expired {
                        self.invalidate(token);
                    }
                    self.metrics.token_cache(CacheLookup::Hit);
                    return Err(e);
                }
                Revalidation::Stale => {
                    self.invalidate(token);
                    CacheLookup::Stale
                }
            },
            None => CacheLookup::Miss,
        };
        self.metrics.token_cache(lookup);
        let generation = self.generation.load(Ordering::SeqCst);
        let verified = verify_jwt(token, server, now).await?;
        let caller = Arc::new(Caller {
            credential: Credential::Jwt(verified),
            digest: sha2::Sha256::digest(token.as_bytes()).into(),
            returning: AtomicBool::new(false),
        });
        if let Some(cache) = &self.cache {
            cache.insert(Arc::from(token), caller.clone());
            // A clear since the verification began (a configuration reload while keys were
            // fetched): this caller was verified under the old one. Checked after the insert,
            // so a clear racing with it removes the entry either way.
            if self.generation.load(Ordering::SeqCst) != generation {
                cache.invalidate(token);
            }
            self.metrics.token_cache_entries(cache.entry_count());
        }
        Ok(caller)
    }

    fn get(&self, token: &str) -> Option<Arc<Caller>> {
        self.cache.as_ref()?.get(token)
    }

    fn invalidate(&self, token: &str) {
        if let Some(cache) = &self.cache {
            cache.invalidate(token);
        }
    }

    /// Cached callers; approximate, moka applies inserts and evictions in batches.
    pub fn len(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.entry_count())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies pending evictions now, so [`len`](Self::len) is exact (tests, reports).
    pub fn settle(&self) {
        if let Some(c) = &self.cache {
            c.run_pending_tasks();
        }
    }
}

/// Whether `token` has the parts of a JWS (three) or a JWE (five): the shapes `Parsed::parse`
/// reads as a JWT. Anything else is an opaque token.
fn jwt_shaped(token: &str) -> bool {
    matches!(token.bytes().filter(|b| *b == b'.').count(), 2 | 4)
}

/// An opaque token, checked by the one issuer the server trusts that introspects (configuration
/// allows no more: an opaque token names no issuer, and guessing would send one authorization
/// server's tokens to another). A server with none refuses it as before: not a JWT.
async fn introspect(
    token: &str,
    server: &ProtectedServer,
    now: i64,
) -> Result<Arc<Caller>, TokenError> {
    let Some((issuer, introspector)) = server
        .issuers
        .iter()
        .find_map(|i| Some((i, i.introspector()?)))
    else {
        return Err(TokenError::NotAJwt);
    };
    let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    let looked = introspector.introspect(token, &digest).await?;
    let credential = Introspected::new(&looked, &issuer.config, server, now)?;
    Ok(Arc::new(Caller {
        credential: Credential::Introspected(credential),
        digest,
        returning: AtomicBool::new(looked.cached),
    }))
}

/// Full verification of a JWT access token for `server` at `now`.
pub async fn verify_jwt(
    token: &str,
    server: &ProtectedServer,
    now: i64,
) -> Result<Verified, TokenError> {
    let parsed = Parsed::parse(token)?;
    let issuer = parsed.trusted_issuer(server)?;
    if issuer.config.is_opaque_only() {
        // It publishes no keys: no JWT of its can be verified.
        return Err(TokenError::UnknownKey);
    }
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
    parsed.verify(&issuer.config, &keys, server, now)
}

/// Each entry lives until its credential expires, never longer.
struct UntilExpiry;

impl moka::Expiry<Arc<str>, Arc<Caller>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _token: &Arc<str>,
        caller: &Arc<Caller>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let left = caller.valid_until().saturating_sub(unix_now());
        Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
    }
}
