//! Verification keys per issuer: an immutable [`KeySet`] snapshot behind `ArcSwap`, refreshed in
//! the background and, for tokens signed with an unknown `kid`, refetched on demand with a single
//! flight and a rate limit.

mod fetch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use rand::Rng;
use tokio::sync::watch;

use crate::config::{IssuerConfig, KeyRefresh};
use crate::introspection::Introspector;
use crate::metrics::Metrics;
pub use fetch::{Endpoint, FetchError, Fetcher, ReadError, http_client, read_limited};

/// Why an issuer's key holder could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KeySetupError {
    #[error(transparent)]
    Secret(#[from] crate::config::SecretError),
    #[error("cannot build HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error(transparent)]
    Introspection(#[from] crate::introspection::ClientSetupError),
}

/// One verification key and the algorithms it may be used with.
pub struct VerifyKey {
    pub kid: Option<String>,
    /// INVARIANT: non-empty, within the issuer's allowlist, and within the key's own type
    /// (a JWK `alg`, an EC curve), so an RSA key is never used as an HMAC secret and a P-256
    /// key never verifies ES384 (RFC 8725 s3.1). JWKS keys get exactly one algorithm.
    pub algorithms: Vec<Algorithm>,
    /// The key ready to verify, one per entry of `algorithms` and in the same order: parsed
    /// once when the key set loads, never again per token.
    verifiers: Vec<Verifier>,
    /// SHA-256 over the key material and its algorithms: what a cached verification remembers,
    /// so the cache can tell whether the key that signed a token is still published (a key
    /// replaced under the same `kid` has another fingerprint).
    pub fingerprint: [u8; 32],
}

/// An issuer's keys at one point in time. Never mutated after construction.
pub struct KeySet {
    /// Several keys may share a `kid` (an IdP publishing RSA and EC keys under one name); the
    /// token's `alg` picks among them.
    by_kid: HashMap<String, Vec<Arc<VerifyKey>>>,
    anonymous: Vec<Arc<VerifyKey>>,
    /// An HMAC issuer's single secret: it verifies tokens whatever `kid` they name. A JWKS never
    /// gets this fallback, so a token with a new `kid` always triggers a refetch.
    secret: bool,
    pub fetched_at: SystemTime,
}

/// The outcome of looking up the key for a token.
pub enum Lookup<'a> {
    Found(&'a VerifyKey),
    /// The token names a `kid` this set does not have: a refetch may find it.
    UnknownKid,
    /// The token names no `kid` and the set has zero or several candidate keys.
    Ambiguous,
    /// A key was found but may not be used with the token's `alg`.
    WrongAlgorithm,
}

#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("JWKS is not valid JSON: {0}")]
    Json(String),
    #[error("JWKS has no usable keys ({skipped} skipped)")]
    Empty { skipped: usize },
}

// === impl KeySet ===

impl KeySet {
    pub fn new(keys: Vec<VerifyKey>) -> Self {
        let mut by_kid: HashMap<String, Vec<Arc<VerifyKey>>> = HashMap::new();
        let mut anonymous = Vec::new();
        for key in keys {
            let key = Arc::new(key);
            match &key.kid {
                Some(kid) => by_kid.entry(kid.clone()).or_default().push(key),
                None => anonymous.push(key),
            }
        }
        Self {
            by_kid,
            anonymous,
            secret: false,
            fetched_at: SystemTime::now(),
        }
    }

    /// The key set of an HMAC issuer: one shared secret.
    pub fn secret(key: VerifyKey) -> Self {
        Self {
            secret: true,
            ..Self::new(vec![key])
        }
    }

    /// Parses a JWKS (RFC 7517 s5). Keys that cannot be used for verification with the
    /// allowed algorithms are skipped, not fatal: IdPs publish encryption keys and new key
    /// types alongside signing keys. Symmetric (`oct`) keys are never taken from a JWKS.
    pub fn from_jwks(json: &[u8], allowed: &[Algorithm]) -> Result<(Self, usize), KeySetError> {
        #[derive(serde::Deserialize)]
        struct Raw {
            keys: Vec<serde_json::Value>,
        }
        let raw: Raw =
            serde_json::from_slice(json).map_err(|e| KeySetError::Json(e.to_string()))?;
        let mut keys = Vec::new();
        let mut skipped = 0;
        for value in raw.keys {
            match serde_json::from_value::<Jwk>(value)
                .ok()
                .and_then(|jwk| verify_key(&jwk, allowed))
            {
                Some(key) => keys.push(key),
                None => skipped += 1,
            }
        }
        if keys.is_empty() {
            return Err(KeySetError::Empty { skipped });
        }
        Ok((Self::new(keys), skipped))
    }

    pub fn len(&self) -> usize {
        self.by_kid.values().map(Vec::len).sum::<usize>() + self.anonymous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        let usable = |k: &&Arc<VerifyKey>| k.algorithms.contains(&alg);
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                Some(keys) => keys
                    .iter()
                    .find(usable)
                    .map_or(Lookup::WrongAlgorithm, |k| Lookup::Found(k)),
                None if self.secret => self
                    .anonymous
                    .iter()
                    .find(usable)
                    .map_or(Lookup::WrongAlgorithm, |k| Lookup::Found(k)),
                None => Lookup::UnknownKid,
            },
            None => {
                let mut candidates = self
                    .by_kid
                    .values()
                    .flatten()
                    .chain(self.anonymous.iter())
                    .filter(usable);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Lookup::Found(only),
                    _ => Lookup::Ambiguous,
                }
            }
        }
    }
}

/// Turns a JWK into a verification key bound to the algorithms it may serve.
fn verify_key(jwk: &Jwk, allowed: &[Algorithm]) -> Option<VerifyKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let own: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms().to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        _ => return None,
    };
    let declared = match &jwk.common.key_algorithm {
        Some(a) => Some(a.to_string().parse::<Algorithm>().ok()?),
        None => None,
    };
    // RFC 8725 s3.1: one key, one algorithm. A JWK's `alg` decides; without one, the key
    // serves the first algorithm of its type in the issuer's allowlist.
    let algorithm = match declared {
        Some(d) => own
            .contains(&d)
            .then_some(d)
            .filter(|d| allowed.contains(d)),
        None => allowed.iter().copied().find(|a| own.contains(a)),
    }?;
    let algorithms = vec![algorithm];
    // A key that does not parse (bad base64, an RSA modulus with a leading zero byte, an EC
    // point off its curve) is skipped like an unusable one: no signature could ever verify
    // with it, and the set must not answer "found" for a key that cannot verify.
    let verifiers = vec![Verifier::public(&jwk.algorithm, algorithm)?];
    let material = serde_json::to_vec(&jwk.algorithm).ok()?;
    Some(VerifyKey {
        kid: jwk.common.key_id.clone(),
        fingerprint: fingerprint(&material, &algorithms),
        algorithms,
        verifiers,
    })
}

// === impl VerifyKey ===

impl VerifyKey {
    /// The key of an HMAC issuer: its shared secret, once per configured algorithm.
    pub fn secret(secret: &[u8], algorithms: &[Algorithm]) -> Self {
        let verifiers = algorithms
            .iter()
            .filter_map(|&a| {
                let h = match a {
                    Algorithm::HS256 => hmac::HMAC_SHA256,
                    Algorithm::HS384 => hmac::HMAC_SHA384,
                    Algorithm::HS512 => hmac::HMAC_SHA512,
                    _ => return None,
                };
                Some((a, Verifier::Hmac(Box::new(hmac::Key::new(h, secret)))))
            })
            .collect::<Vec<_>>();
        // Config validation admits only HS* with a secret; anything else is dropped here
        // rather than kept without a verifier.
        let (algorithms, verifiers): (Vec<Algorithm>, Vec<Verifier>) =
            verifiers.into_iter().unzip();
        Self {
            kid: None,
            fingerprint: fingerprint(secret, &algorithms),
            algorithms,
            verifiers,
        }
    }

    /// Does `signature` (raw bytes, base64url already decoded) sign `message` under `alg`?
    /// `false` as well when this key does not serve `alg`.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        let Some(verifier) = self
            .algorithms
            .iter()
            .zip(&self.verifiers)
            .find_map(|(a, v)| (*a == alg).then_some(v))
        else {
            return false;
        };
        match verifier {
            Verifier::Public(key) => key.verify_sig(message, signature).is_ok(),
            // Constant-time comparison of the recomputed tag (RFC 7518 s3.2).
            Verifier::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
        }
    }
}

/// A key parsed for one algorithm.
enum Verifier {
    /// aws-lc's parsed public key: its algorithm (padding, digest, curve, RSA key size range
    /// 2048-8192 bits, checked on each verification) is fixed at parse time.
    Public(ParsedPublicKey),
    /// Boxed: aws-lc's HMAC key holds its precomputed contexts inline (several hundred bytes).
    Hmac(Box<hmac::Key>),
}

impl Verifier {
    /// Parses a JWK's public key for `alg`, the algorithm already bound to it (RFC 8725 s3.1).
    /// `None` when the material does not form a key of that type.
    fn public(params: &AlgorithmParameters, alg: Algorithm) -> Option<Self> {
        let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).ok();
        let key = match (params, alg) {
            (AlgorithmParameters::RSA(p), _) => {
                let rsa: &'static sig::RsaParameters = match alg {
                    Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                    Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
                    _ => return None,
                };
                RsaPublicKeyComponents {
                    n: decode(&p.n)?,
                    e: decode(&p.e)?,
                }
                .to_parsed_public_key(rsa)
                .ok()?
            }
            (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256 | Algorithm::ES384) => {
                let ec: &'static sig::EcdsaVerificationAlgorithm = match (&p.curve, alg) {
                    (EllipticCurve::P256, Algorithm::ES256) => &sig::ECDSA_P256_SHA256_FIXED,
                    (EllipticCurve::P384, Algorithm::ES384) => &sig::ECDSA_P384_SHA384_FIXED,
                    _ => return None,
                };
                // SEC 1 uncompressed point: 0x04 || x || y; aws-lc checks it is on the curve.
                let mut point = vec![0x04];
                point.extend(decode(&p.x)?);
                point.extend(decode(&p.y)?);
                ParsedPublicKey::new(ec, point).ok()?
            }
            (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA)
                if p.curve == EllipticCurve::Ed25519 =>
            {
                ParsedPublicKey::new(&sig::ED25519, decode(&p.x)?).ok()?
            }
            _ => return None,
        };
        Some(Self::Public(key))
    }
}

// === IssuerKeys ===

/// The live keys of one issuer, and the machinery that keeps them fresh.
pub struct IssuerKeys {
    pub config: Arc<IssuerConfig>,
    /// `None` until the first successful fetch; a failed fetch never clears it.
    current: ArcSwapOption<KeySet>,
    /// `None` for an HMAC issuer, whose single key never changes.
    fetcher: Option<Fetcher>,
    coordinator: Mutex<Coordinator>,
    /// Bumped after every fetch attempt; waiters watch it.
    generation: watch::Sender<u64>,
    in_flight: AtomicBool,
    last_outcome: ArcSwap<Outcome>,
    metrics: Metrics,
    /// Checks this issuer's opaque tokens (`introspection`), when configured.
    introspector: Option<Arc<Introspector>>,
}

struct Coordinator {
    /// When the last unknown-`kid` refetch started. Scheduled refreshes do not count: a
    /// rotation right after one must still be picked up.
    last_kid_refetch: Option<Instant>,
    /// After a failure: no unknown-`kid` refetch before this (the backoff, or the IdP's
    /// `Retry-After`), so tokens with random `kid`s cannot hammer an IdP that is already
    /// failing or has asked us to wait.
    retry_at: Option<Instant>,
}

/// What the last fetch attempt produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub ok: bool,
    pub error: Option<String>,
    /// [`FetchError::kind`] of the failure.
    pub error_kind: Option<&'static str>,
    pub max_age: Option<Duration>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// After a failure: how long to wait before the next attempt.
    pub retry_in: Option<Duration>,
    pub last_success: Option<SystemTime>,
}

/// Readiness of one issuer, for `/readyz`. An issuer is ready once it has keys and stays ready
/// while later fetches fail: the keys it holds still verify, and turning every replica
/// unready at once during an IdP outage would make a degraded IdP a full outage. The other
/// fields say what is wrong.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssuerStatus {
    pub issuer: String,
    pub ready: bool,
    pub keys: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// [`FetchError::kind`] of the last failure, while failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_kind: Option<&'static str>,
    /// Failed fetches since the last success.
    pub consecutive_failures: u32,
    /// Unix time of the last successful fetch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<u64>,
    /// For an issuer with `introspection`: its endpoint and how requests to it go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection: Option<crate::introspection::IntrospectionStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The background schedule: always fetches (unless one is running).
    Schedule,
    /// A token with an unknown `kid`: rate-limited.
    UnknownKid,
}

/// See [`VerifyKey::fingerprint`].
fn fingerprint(material: &[u8], algorithms: &[Algorithm]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(material);
    for a in algorithms {
        h.update(format!("|{a:?}").as_bytes());
    }
    h.finalize().into()
}

impl IssuerKeys {
    /// Builds the key holder. An HMAC issuer is ready at once; others wait for a fetch.
    pub fn new(
        config: IssuerConfig,
        metrics: Metrics,
        max_bytes: usize,
    ) -> Result<Arc<Self>, KeySetupError> {
        let config = Arc::new(config);
        let (current, fetcher) = match &config.hmac_secret {
            Some(secret) => {
                let bytes = secret.read()?;
                let key = VerifyKey::secret(&bytes, &config.algorithms);
                (Some(Arc::new(KeySet::secret(key))), None)
            }
            // Publishes no keys: nothing to fetch, and JWTs naming it are refused.
            None if config.is_opaque_only() => (None, None),
            None => (None, Some(Fetcher::new(config.clone(), max_bytes)?)),
        };
        let introspector = match &config.introspection {
            Some(settings) => Some(Introspector::new(
                config.clone(),
                settings.clone(),
                metrics.clone(),
                max_bytes,
            )?),
            None => None,
        };
        let this = Self::build(config, current, fetcher, metrics, introspector);
        if let Some(set) = this.current.load_full() {
            this.metrics.keys_loaded(&this.config.issuer, set.len());
        }
        Ok(this)
    }

    /// Builds a holder around a fixed key set (tests, benchmarks).
    pub fn with_static(config: IssuerConfig, set: KeySet, metrics: Metrics) -> Arc<Self> {
        Self::build(Arc::new(config), Some(Arc::new(set)), None, metrics, None)
    }

    /// Replaces the key set as a fetch would (tests of rotation and of the token cache).
    #[cfg(any(test, feature = "test-util"))]
    pub fn replace_keys(&self, set: KeySet) {
        self.current.store(Some(Arc::new(set)));
    }

    fn build(
        config: Arc<IssuerConfig>,
        current: Option<Arc<KeySet>>,
        fetcher: Option<Fetcher>,
        metrics: Metrics,
        introspector: Option<Arc<Introspector>>,
    ) -> Arc<Self> {
        metrics.issuer_registered(&config.issuer);
        Arc::new(Self {
            config,
            current: ArcSwapOption::new(current),
            fetcher,
            coordinator: Mutex::new(Coordinator {
                last_kid_refetch: None,
                retry_at: None,
            }),
            generation: watch::channel(0).0,
            in_flight: AtomicBool::new(false),
            last_outcome: ArcSwap::default(),
            metrics,
            introspector,
        })
    }

    /// The current snapshot: one atomic load, no lock. The hot path.
    pub fn load(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// The introspection client of an issuer with `introspection`.
    pub fn introspector(&self) -> Option<&Arc<Introspector>> {
        self.introspector.as_ref()
    }

    /// Whether checks can be decided for this issuer's tokens: it has keys (unless it publishes
    /// none, `opaque_only`) and, when it introspects, knows its introspection endpoint.
    pub fn is_ready(&self) -> bool {
        (self.config.is_opaque_only() || self.current.load().is_some())
            && self.introspector.as_ref().is_none_or(|i| i.is_ready())
    }

    pub fn status(&self) -> IssuerStatus {
        let set = self.current.load();
        let outcome = self.last_outcome.load();
        IssuerStatus {
            issuer: self.config.issuer.clone(),
            ready: self.is_ready(),
            keys: set.as_ref().map_or(0, |s| s.len()),
            last_error: if outcome.ok {
                None
            } else {
                outcome.error.clone()
            },
            last_error_kind: if outcome.ok { None } else { outcome.error_kind },
            consecutive_failures: outcome.failures,
            last_success: outcome
                .last_success
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            introspection: self.introspector.as_ref().map(|i| i.status()),
        }
    }

    /// Called when a token names a `kid` the current set lacks. Starts a refetch unless one is
    /// running or one started less than `unknown_kid_interval` ago, then waits at most
    /// `unknown_kid_wait` for the running fetch. Returns the newest snapshot either way.
    pub async fn refetch_for_unknown_kid(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        if self.fetcher.is_none() {
            return self.load();
        }
        let mut rx = self.generation.subscribe();
        match self.start(Trigger::UnknownKid) {
            Start::RateLimited => {
                self.metrics
                    .unknown_kid_refetch(&self.config.issuer, "rate_limited");
                return self.load();
            }
            Start::BackingOff => {
                self.metrics
                    .unknown_kid_refetch(&self.config.issuer, "backoff");
                return self.load();
            }
            Start::Joined => self
                .metrics
                .unknown_kid_refetch(&self.config.issuer, "joined"),
            Start::Started => self
                .metrics
                .unknown_kid_refetch(&self.config.issuer, "started"),
        }
        let wait = self.config.key_refresh.unknown_kid_wait;
        let _ = tokio::time::timeout(wait, rx.changed()).await;
        self.load()
    }

    /// Fetches now (joining a running fetch) and returns the outcome. Used by the background
    /// loop and at startup.
    pub async fn refresh(self: &Arc<Self>) -> Outcome {
        let mut rx = self.generation.subscribe();
        self.start(Trigger::Schedule);
        // The fetch bounds itself (at most three requests with timeouts); this is a backstop.
        let backstop = self
            .config
            .key_refresh
            .fetch_timeout
            .saturating_mul(4)
            .saturating_add(Duration::from_secs(1));
        let _ = tokio::time::timeout(backstop, rx.changed()).await;
        (**self.last_outcome.load()).clone()
    }

    /// This mutex guards only short decisions, never an await: it is taken on the cold paths
    /// (scheduled refresh, unknown kid, the end of a fetch), never by a check that finds its key.
    fn lock_coordinator(&self) -> std::sync::MutexGuard<'_, Coordinator> {
        match self.coordinator.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn start(self: &Arc<Self>, trigger: Trigger) -> Start {
        let mut coord = self.lock_coordinator();
        if self.in_flight.load(Ordering::Acquire) {
            return Start::Joined;
        }
        if trigger == Trigger::UnknownKid {
            if coord.retry_at.is_some_and(|t| Instant::now() < t) {
                return Start::BackingOff;
            }
            if coord
                .last_kid_refetch
                .is_some_and(|t| t.elapsed() < self.config.key_refresh.unknown_kid_interval)
            {
                return Start::RateLimited;
            }
            coord.last_kid_refetch = Some(Instant::now());
        }
        self.in_flight.store(true, Ordering::Release);
        let this = self.clone();
        tokio::spawn(async move {
            // Cleared even if the fetch panics or the runtime drops the task, so later
            // refreshes never wait on a fetch that no longer exists.
            let _done = FetchDone(&this);
            this.fetch_and_swap().await;
        });
        Start::Started
    }

    async fn fetch_and_swap(&self) {
        let Some(fetcher) = &self.fetcher else { return };
        let issuer = &self.config.issuer;
        let result = fetcher.fetch().await.and_then(|fetched| {
            KeySet::from_jwks(&fetched.body, &self.config.algorithms)
                .map(|(set, skipped)| (set, skipped, fetched.max_age))
                .map_err(|source| FetchError::KeySet {
                    url: fetched.url.to_string(),
                    source,
                })
        });
        let last = self.last_outcome.load_full();
        match result {
            Ok((set, skipped, max_age)) => {
                let previous = self.current.load();
                let changed = previous.as_ref().is_none_or(|p| !same_kids(p, &set));
                if changed {
                    tracing::info!(issuer = %issuer, keys = set.len(), skipped, "key set loaded");
                } else {
                    tracing::debug!(issuer = %issuer, keys = set.len(), "key set refreshed");
                }
                self.metrics.keys_loaded(issuer, set.len());
                self.metrics.key_refresh(issuer, "success");
                self.metrics.key_fetch_failures(issuer, 0);
                self.current.store(Some(Arc::new(set)));
                self.lock_coordinator().retry_at = None;
                self.last_outcome.store(Arc::new(Outcome {
                    ok: true,
                    max_age,
                    last_success: Some(SystemTime::now()),
                    ..Outcome::default()
                }));
            }
            Err(e) => {
                // Keep the last good set: an IdP outage must not lock every user out.
                let kept = self.current.load().as_ref().map_or(0, |s| s.len());
                let failures = last.failures.saturating_add(1);
                let delay = retry_delay(failures, e.retry_after(), &self.config.key_refresh);
                tracing::warn!(
                    issuer = %issuer,
                    error = %e,
                    kind = e.kind(),
                    kept_keys = kept,
                    failures,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "key set refresh failed"
                );
                self.metrics.key_refresh(issuer, "failure");
                self.metrics.key_fetch_error(issuer, e.kind());
                self.metrics.key_fetch_failures(issuer, failures);
                self.lock_coordinator().retry_at = Instant::now().checked_add(delay);
                self.last_outcome.store(Arc::new(Outcome {
                    ok: false,
                    error: Some(e.to_string()),
                    error_kind: Some(e.kind()),
                    max_age: None,
                    failures,
                    retry_in: Some(delay),
                    last_success: last.last_success,
                }));
            }
        }
    }

    /// Runs the background refresh until `shutdown` fires: on success after the response's
    /// `max-age` clamped to the configured bounds, with +-10% jitter so replicas spread out;
    /// on failure after [`retry_delay`].
    pub async fn run_refresher(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if let Some(introspector) = &self.introspector {
            tokio::spawn(introspector.clone().run_discovery(shutdown.clone()));
        }
        if self.fetcher.is_none() {
            return;
        }
        let bounds = self.config.key_refresh.clone();
        loop {
            let outcome = self.refresh().await;
            let delay = if outcome.ok {
                let base = outcome
                    .max_age
                    .unwrap_or(bounds.default_interval)
                    .clamp(bounds.min_interval, bounds.max_interval);
                jitter(base)
            } else {
                // `None` only if the backstop in `refresh` gave up on a fetch that never
                // reported: wait as after a first failure.
                outcome
                    .retry_in
                    .unwrap_or_else(|| retry_delay(1, None, &bounds))
            };
            let mut until = tokio::time::Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = shutdown.changed() => return,
                }
                // An unknown-`kid` refetch may have failed meanwhile and pushed the retry
                // time further (its backoff, or a `Retry-After`): that holds for this loop too.
                match self.lock_coordinator().retry_at {
                    Some(at) if at > Instant::now() => until = at.into(),
                    _ => break,
                }
            }
        }
    }
}

struct FetchDone<'a>(&'a IssuerKeys);

impl Drop for FetchDone<'_> {
    fn drop(&mut self) {
        self.0.in_flight.store(false, Ordering::Release);
        self.0.generation.send_modify(|g| *g += 1);
    }
}

enum Start {
    Started,
    Joined,
    RateLimited,
    /// The last fetch failed and its backoff (or `Retry-After`) has not passed.
    BackingOff,
}

fn same_kids(a: &KeySet, b: &KeySet) -> bool {
    // Counts per kid included: a second key under a known kid is a change.
    a.len() == b.len()
        && a.by_kid
            .iter()
            .all(|(k, v)| b.by_kid.get(k).is_some_and(|w| w.len() == v.len()))
}

/// The first retry after a failure; each further failure doubles it, up to `min_interval`.
const RETRY_INITIAL: Duration = Duration::from_secs(1);

/// The wait after `failures` consecutive failed fetches (1 = the first): exponential from
/// [`RETRY_INITIAL`], capped at `min_interval`, with "equal jitter" (uniform in the upper
/// half) so replicas that failed together do not retry together. Never shorter than the IdP's
/// `Retry-After` (RFC 9110 s10.2.3; RFC 6585 s4 for 429), which is itself capped at
/// `max_interval`: an IdP cannot switch refreshing off.
fn retry_delay(failures: u32, retry_after: Option<Duration>, bounds: &KeyRefresh) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    let exponential = RETRY_INITIAL
        .saturating_mul(1 << doublings)
        .min(bounds.min_interval);
    let jittered = exponential.mul_f64(rand::rng().random_range(0.5..=1.0));
    jittered.max(retry_after.unwrap_or_default().min(bounds.max_interval))
}

fn jitter(base: Duration) -> Duration {
    let factor = rand::rng().random_range(0.9..1.1);
    base.mul_f64(factor)
}

#[cfg(test)]
mod tests;
