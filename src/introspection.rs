//! Opaque access tokens, checked with the issuer's introspection endpoint (RFC 7662): one
//! [`Introspector`] per issuer with `introspection` configured, holding its endpoint (configured
//! or discovered), its client credentials, its answers cache and its bound on requests.
//!
//! Rules:
//! - Which issuer introspects a token is never guessed: the one introspecting issuer the
//!   matched server trusts (configuration allows no more), so one authorization server's
//!   tokens are never sent to another (see `engine::caller`).
//! - Answers are cached by the SHA-256 of the token, never by the token, which is never logged
//!   either (a digest prefix names it). An active answer is kept at most `cache_ttl` and never
//!   past the token's `exp` (plus leeway); an inactive or refused one `negative_cache_ttl`.
//!   Failures are not cached.
//! - One request per token at a time (single flight: concurrent checks with the same token wait
//!   for the one request); at most `max_concurrency` towards the issuer; each check waits at
//!   most `timeout` for a slot and the answer together.
//! - The endpoint down, slow, answering an error or something that is not an introspection
//!   response means the service cannot decide: 503, never an allow, and never a 401 that would
//!   make clients throw away good tokens.

mod client;
mod response;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{OnceCell, Semaphore, watch};
use url::Url;

use crate::config::{IntrospectionConfig, IssuerConfig};
use crate::identity::Identity;
use crate::keys::{Endpoint, Fetcher};
use crate::metrics::Metrics;
use crate::resource::ProtectedServer;
use crate::token::{Revalidation, TokenError, audience_ok, audiences, check_claims};
pub use client::{ClientSetupError, Failure, MAX_RESPONSE_BYTES};
pub use response::{Active, Answer, Malformed, TokenType};

/// A token's digest: the cache key.
type Digest = [u8; 32];

/// The answer for one token, shared by the checks that waited for the same request.
type Flight = Arc<OnceCell<Result<Answer, Arc<Failure>>>>;

/// What the introspector found for a token.
pub struct Looked {
    pub active: Arc<Active>,
    /// Answered from the cache (the token came back).
    pub cached: bool,
    /// When the cached answer ends, seconds since the epoch.
    pub cached_until: i64,
}

/// An issuer's introspection client, cache and limits.
pub struct Introspector {
    issuer: Arc<IssuerConfig>,
    settings: IntrospectionConfig,
    client: client::Client,
    /// Finds `introspection_endpoint` when none is configured.
    discovery: Option<Fetcher>,
    /// The endpoint, configured or once discovered.
    endpoint: ArcSwapOption<Url>,
    permits: Semaphore,
    /// `None` when both TTLs are zero.
    cache: Option<moka::sync::Cache<Digest, Cached>>,
    in_flight: Mutex<HashMap<Digest, Flight>>,
    health: ArcSwap<Health>,
    metrics: Metrics,
}

#[derive(Clone)]
struct Cached {
    answer: Answer,
    /// How long the entry lives (see [`Introspector::ttl`]).
    ttl: Duration,
    /// The same end, seconds since the epoch.
    until: i64,
}

/// How introspection towards this issuer is going, for `/readyz`.
#[derive(Debug, Clone, Default)]
struct Health {
    failures: u32,
    last_error: Option<String>,
    last_error_kind: Option<&'static str>,
}

/// The introspection part of an issuer's readiness.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IntrospectionStatus {
    /// The endpoint is known (configured, or discovered): opaque tokens can be checked.
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Failed introspection requests (or discoveries) since the last success.
    pub consecutive_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_kind: Option<&'static str>,
}

// === impl Introspector ===

impl Introspector {
    pub fn new(
        issuer: Arc<IssuerConfig>,
        settings: IntrospectionConfig,
        metrics: Metrics,
        max_metadata_bytes: usize,
    ) -> Result<Arc<Self>, ClientSetupError> {
        let client = client::Client::new(&issuer, &settings)?;
        let discovery = match &settings.endpoint {
            Some(_) => None,
            None => Some(Fetcher::new(issuer.clone(), max_metadata_bytes).map_err(
                |e| match e {
                    crate::keys::KeySetupError::HttpClient(e) => ClientSetupError::HttpClient(e),
                    crate::keys::KeySetupError::Secret(e) => ClientSetupError::Secret(e),
                    crate::keys::KeySetupError::Introspection(e) => e,
                },
            )?),
        };
        let cache =
            (!settings.cache_ttl.is_zero() || !settings.negative_cache_ttl.is_zero()).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(settings.cache_entries)
                    .expire_after(UntilTtl)
                    .build()
            });
        metrics.introspection_registered(&issuer.issuer);
        Ok(Arc::new(Self {
            endpoint: ArcSwapOption::new(settings.endpoint.clone().map(Arc::new)),
            permits: Semaphore::new(settings.max_concurrency),
            issuer,
            settings,
            client,
            discovery,
            cache,
            in_flight: Mutex::new(HashMap::new()),
            health: ArcSwap::default(),
            metrics,
        }))
    }

    /// Ready once the endpoint is known. Failing requests do not make it unready: answers in
    /// the cache still hold and JWTs are still verified, and turning every replica unready
    /// at once would make a degraded authorization server a full outage.
    pub fn is_ready(&self) -> bool {
        self.endpoint.load().is_some()
    }

    pub fn status(&self) -> IntrospectionStatus {
        let health = self.health.load();
        IntrospectionStatus {
            ready: self.is_ready(),
            endpoint: self.endpoint.load().as_ref().map(|u| u.to_string()),
            consecutive_failures: health.failures,
            last_error: health.last_error.clone(),
            last_error_kind: health.last_error_kind,
        }
    }

    /// Discovers the endpoint (when not configured) until found or `shutdown`, retrying with
    /// backoff from 1 s to 1 min.
    pub async fn run_discovery(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(fetcher) = &self.discovery else {
            return;
        };
        let mut delay = Duration::from_secs(1);
        loop {
            match fetcher.discover(Endpoint::Introspection).await {
                Ok(url) => {
                    tracing::info!(issuer = %self.issuer.issuer, endpoint = %url, "introspection endpoint discovered");
                    self.endpoint.store(Some(Arc::new(url)));
                    self.health.store(Arc::default());
                    return;
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.issuer.issuer, error = %e, retry_in_s = delay.as_secs(), "introspection endpoint discovery failed");
                    self.record_failure(e.kind(), e.to_string());
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    }

    /// What the authorization server says of `token` (whose SHA-256 is `digest`): from the
    /// cache, from a request another check already has in flight, or from a new request.
    pub async fn introspect(&self, token: &str, digest: &Digest) -> Result<Looked, TokenError> {
        let issuer = &self.issuer.issuer;
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(digest)) {
            self.metrics.introspection_cache(issuer, true);
            return looked(hit.answer, true, hit.until);
        }
        self.metrics.introspection_cache(issuer, false);
        let flight = {
            let mut flights = lock(&self.in_flight);
            flights.entry(*digest).or_default().clone()
        };
        // Removes the flight when this check is done or dropped (Envoy gave up), so the map
        // never holds more than the checks in progress.
        let _leave = Leave {
            flights: &self.in_flight,
            digest,
            flight: &flight,
        };
        let mut asked = false;
        let result = flight
            .get_or_init(|| {
                asked = true;
                self.ask(token, digest)
            })
            .await
            .clone();
        match result {
            Ok(answer) => {
                let until = crate::token::unix_now()
                    .saturating_add(i64::try_from(self.ttl(&answer).as_secs()).unwrap_or(0));
                looked(answer, !asked, until)
            }
            Err(_) => Err(TokenError::IntrospectionUnavailable),
        }
    }

    /// One request, its answer cached. Bounded by `timeout` from the wait for a slot on.
    async fn ask(&self, token: &str, digest: &Digest) -> Result<Answer, Arc<Failure>> {
        let issuer = &self.issuer.issuer;
        let started = Instant::now();
        let result = self.request(token).await;
        let label = match &result {
            Ok(Answer::Active(_)) => "active",
            Ok(Answer::Refused(TokenError::Inactive)) => "inactive",
            Ok(Answer::Refused(_)) => "refused",
            Err(f) => f.kind,
        };
        self.metrics
            .introspection_request(issuer, label, started.elapsed());
        // A digest prefix names the token in logs: enough to correlate, useless to replay.
        let token_digest = hex::encode(digest.get(..6).unwrap_or_default());
        match result {
            Ok(answer) => {
                self.health.store(Arc::default());
                tracing::debug!(issuer = %issuer, token_digest, result = label, "token introspected");
                if let Some(cache) = &self.cache {
                    let ttl = self.ttl(&answer);
                    if !ttl.is_zero() {
                        let until = crate::token::unix_now()
                            .saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(0));
                        cache.insert(
                            *digest,
                            Cached {
                                answer: answer.clone(),
                                ttl,
                                until,
                            },
                        );
                    }
                }
                Ok(answer)
            }
            Err(failure) => {
                tracing::warn!(issuer = %issuer, token_digest, kind = failure.kind, error = %failure.message, "introspection failed; answering 503");
                self.record_failure(failure.kind, failure.message.clone());
                Err(Arc::new(failure))
            }
        }
    }

    async fn request(&self, token: &str) -> Result<Answer, Failure> {
        let Some(endpoint) = self.endpoint.load_full() else {
            return Err(Failure::new(
                "no_endpoint",
                "the introspection endpoint has not been discovered yet",
            ));
        };
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let _permit = match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(Failure::new(
                    "overloaded",
                    format!(
                        "{} requests in flight; none finished within {:?}",
                        self.settings.max_concurrency, self.settings.timeout
                    ),
                ));
            }
        };
        let asked = self
            .client
            .introspect(&endpoint, token, crate::token::unix_now());
        let body = match tokio::time::timeout_at(deadline, asked).await {
            Ok(body) => body?,
            Err(_) => {
                return Err(Failure::new(
                    "timeout",
                    format!(
                        "POST `{endpoint}`: no answer within {:?}",
                        self.settings.timeout
                    ),
                ));
            }
        };
        response::parse(&body, &self.issuer.issuer).map_err(|Malformed(why)| {
            Failure::new(
                "malformed",
                format!("POST `{endpoint}`: not an introspection response: {why}"),
            )
        })
    }

    /// How long an answer is reused: an active one at most `cache_ttl` and never past `exp`
    /// plus the leeway (when the check would refuse it anyway); any other
    /// `negative_cache_ttl`.
    fn ttl(&self, answer: &Answer) -> Duration {
        match answer {
            Answer::Active(a) => {
                let leeway = i64::try_from(self.issuer.leeway.as_secs()).unwrap_or(0);
                let left = a
                    .exp
                    .saturating_add(leeway)
                    .saturating_sub(crate::token::unix_now());
                Duration::from_secs(u64::try_from(left).unwrap_or(0)).min(self.settings.cache_ttl)
            }
            Answer::Refused(_) => self.settings.negative_cache_ttl,
        }
    }

    fn record_failure(&self, kind: &'static str, message: String) {
        let last = self.health.load();
        self.health.store(Arc::new(Health {
            failures: last.failures.saturating_add(1),
            last_error: Some(message),
            last_error_kind: Some(kind),
        }));
    }

    /// Answers held now (tests).
    pub fn cached(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }
}

fn looked(answer: Answer, cached: bool, until: i64) -> Result<Looked, TokenError> {
    match answer {
        Answer::Active(active) => Ok(Looked {
            active,
            cached,
            cached_until: until,
        }),
        Answer::Refused(e) => Err(e),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

struct Leave<'a> {
    flights: &'a Mutex<HashMap<Digest, Flight>>,
    digest: &'a Digest,
    flight: &'a Flight,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut flights = lock(self.flights);
        if flights
            .get(self.digest)
            .is_some_and(|f| Arc::ptr_eq(f, self.flight))
        {
            flights.remove(self.digest);
        }
    }
}

/// Each entry lives its own TTL (see [`Introspector::ttl`]).
struct UntilTtl;

impl moka::Expiry<Digest, Cached> for UntilTtl {
    fn expire_after_create(&self, _: &Digest, entry: &Cached, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

// === Introspected ===

/// An opaque token the authorization server called active, checked for one request.
#[derive(Debug)]
pub struct Introspected {
    pub identity: Identity,
    /// `exp` plus the issuer's leeway, or the end of the cached answer if sooner: the first
    /// second this credential is no longer accepted without asking again.
    pub valid_until: i64,
    /// The response's `aud` values.
    pub audience: Box<[Box<str>]>,
    /// `cnf.jkt` (RFC 9449 s6.2): the DPoP key the token is bound to, if any.
    pub confirmation: Option<Box<str>>,
    pub token_type: TokenType,
}

impl Introspected {
    /// The claim checks and mapping of a JWT's claims (`token::check_claims`), on the answer.
    pub fn new(
        looked: &Looked,
        issuer: &IssuerConfig,
        server: &ProtectedServer,
        now: i64,
    ) -> Result<Self, TokenError> {
        let a = &looked.active;
        let identity = check_claims(&a.claims, issuer, server, now)?;
        let leeway = i64::try_from(issuer.leeway.as_secs()).unwrap_or(0);
        Ok(Self {
            valid_until: a.exp.saturating_add(leeway).min(looked.cached_until),
            identity,
            audience: audiences(&a.claims),
            confirmation: a.confirmation.clone(),
            token_type: a.token_type,
        })
    }

    /// The checks that can change between two requests: the server must still trust the
    /// issuer and be in the audience, and the time.
    pub fn revalidate(&self, server: &ProtectedServer, now: i64) -> Revalidation {
        let Some(issuer) = server
            .issuers
            .iter()
            .find(|i| i.config.issuer == self.identity.issuer)
        else {
            return Revalidation::Refused(TokenError::UntrustedIssuer);
        };
        if now >= self.valid_until {
            return Revalidation::Stale;
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

#[cfg(test)]
mod tests;
