//! DPoP at the resource server (RFC 9449): the proof a client sends with a DPoP-bound access
//! token, checked on every request. A proof differs on every request (its `jti`, `iat`, `htm`,
//! `htu`), so no cache can answer for it; the token behind it is still resolved through the
//! caller cache (see `engine::caller`).
//!
//! What is checked (RFC 9449 s4.3, s7.1), in order:
//! 1. exactly one `DPoP` header, a compact JWS no larger than the token limit;
//! 2. header: `typ` is `dpop+jwt`, `alg` is an asymmetric algorithm from `dpop.algorithms`,
//!    `jwk` is a public key (no private members), nothing else names a key;
//! 3. the signature verifies with that `jwk`;
//! 4. claims: `jti` (a non-empty string), `htm` equal to the request method, `htu` equal to the
//!    request's URI (see [`normalize_uri`]), `iat` within `[now - proof_lifetime, now +
//!    clock_skew]`, `ath` equal to the base64url SHA-256 of the access token;
//! 5. the key's RFC 7638 thumbprint equals the token's `cnf.jkt`;
//! 6. the server nonce, when `dpop.nonce` is set (s9);
//! 7. the `jti` has not been seen on this replica within the window (s11.1).
//!
//! Replay, per mode (docs/configuration.md says the same for users):
//! - without nonces, a replayed proof is refused by the replica that saw it first; another
//!   replica accepts it until its `iat` is older than `proof_lifetime`: the window in which a
//!   stolen proof can be replayed is `proof_lifetime`, and only for the method and URI it names,
//!   with the token it names;
//! - with nonces, a proof also carries a nonce that this service issued in the current or the
//!   previous slot, an HMAC over the slot number, so every replica sharing the secret checks it
//!   without shared state; a pre-computed proof (a client's clock set ahead, s11.2) is useless.

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use sha2::Digest as _;

use crate::config::DpopConfig;

/// Why a proof (or the presentation of a DPoP-bound token) is refused. Descriptions are fixed
/// strings: nothing from the request is echoed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DpopError {
    /// `Authorization: DPoP` without a `DPoP` header.
    Missing,
    /// More than one `DPoP` header (s4.3 item 1).
    Multiple,
    /// Not a compact JWS, not base64url JSON, a repeated member, or oversize.
    Malformed,
    /// `typ` is not `dpop+jwt`.
    WrongType,
    /// `alg` is not among `dpop.algorithms`.
    AlgorithmNotAllowed,
    /// No `jwk`, a `jwk` with private members, or another key reference (`kid`, `jku`, `x5c`...).
    BadKey,
    BadSignature,
    /// A required claim is missing or of the wrong type.
    MissingClaim,
    WrongMethod,
    WrongUri,
    /// `iat` older than the proof lifetime.
    Stale,
    /// `iat` in the future beyond the clock skew.
    IssuedInFuture,
    /// `ath` is not the hash of the access token presented.
    WrongTokenHash,
    /// The proof key is not the key the token is bound to (`cnf.jkt`).
    KeyMismatch,
    /// This proof's `jti` was seen within the window.
    Replayed,
    /// A server nonce is required and the proof has none, or a stale or foreign one. Carries
    /// a fresh nonce for the `DPoP-Nonce` header (s9).
    UseNonce(String),
}

impl DpopError {
    pub fn description(&self) -> &'static str {
        use DpopError::*;
        match self {
            Missing => "a DPoP proof is required with DPoP-bound access tokens",
            Multiple => "more than one DPoP proof",
            Malformed => "the DPoP proof is malformed",
            WrongType => "the DPoP proof must have typ dpop+jwt",
            AlgorithmNotAllowed => "the DPoP proof signature algorithm is not accepted",
            BadKey => "the DPoP proof must carry one public key in jwk and no other key reference",
            BadSignature => "the DPoP proof signature is invalid",
            MissingClaim => "the DPoP proof lacks jti, htm, htu, iat or ath, or one is malformed",
            WrongMethod => "the DPoP proof is for another HTTP method",
            WrongUri => "the DPoP proof is for another URI",
            Stale => "the DPoP proof is too old",
            IssuedInFuture => "the DPoP proof was issued in the future",
            WrongTokenHash => "the DPoP proof is for another access token",
            KeyMismatch => "the DPoP proof key is not the key the access token is bound to",
            Replayed => "the DPoP proof was already used",
            UseNonce(_) => "a DPoP nonce from this server is required",
        }
    }

    /// The `result` label of `mcp_authz_dpop_proofs_total`. Fixed set.
    pub fn label(&self) -> &'static str {
        use DpopError::*;
        match self {
            Missing => "missing",
            Multiple | Malformed | WrongType | AlgorithmNotAllowed | BadKey | MissingClaim => {
                "malformed"
            }
            BadSignature => "bad_signature",
            WrongMethod | WrongUri => "wrong_target",
            Stale | IssuedInFuture => "out_of_window",
            WrongTokenHash | KeyMismatch => "wrong_binding",
            Replayed => "replayed",
            UseNonce(_) => "nonce_required",
        }
    }
}

/// What a proof is checked against: the request and the token it came with.
pub struct ProofInput<'a> {
    /// The `DPoP` header as Envoy forwards it (repeated headers joined with `,`).
    pub proof: Option<&'a str>,
    pub method: &'a str,
    /// The URI the request was made to, without query or fragment (see [`request_uri`]).
    pub uri: &'a str,
    pub access_token: &'a str,
    /// The token's `cnf.jkt`.
    pub jkt: &'a str,
    pub now: i64,
}

/// The DPoP proof checker: the configuration, the replay cache and the nonce key.
pub struct Dpop {
    algorithms: Vec<Algorithm>,
    /// `"ES256 PS256 ..."`, for `WWW-Authenticate: DPoP algs` (s7.1).
    algs: String,
    lifetime: i64,
    skew: i64,
    max_bytes: usize,
    /// SHA-256 of `jkt "\0" jti` for every proof accepted within the window.
    seen: moka::sync::Cache<[u8; 32], ()>,
    nonces: Option<Nonces>,
}

/// Stateless nonces: `base64url(slot as 8 bytes, big-endian || HMAC-SHA256(key, slot)[..16])`.
struct Nonces {
    key: hmac::Key,
    slot: u64,
}

/// Why the DPoP checker could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DpopSetupError {
    #[error("dpop.nonce.secret: {0}")]
    Secret(#[from] crate::config::SecretError),
}

// === impl Dpop ===

impl Dpop {
    pub fn new(config: &DpopConfig, max_bytes: usize) -> Result<Self, DpopSetupError> {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let lifetime = secs(config.proof_lifetime);
        let skew = secs(config.clock_skew);
        let window = config
            .proof_lifetime
            .saturating_add(config.clock_skew.saturating_mul(2));
        let seen = moka::sync::Cache::builder()
            .max_capacity(config.replay_cache_entries)
            .time_to_live(window)
            // LRU, not TinyLFU: a new proof's jti is always remembered (TinyLFU may refuse to
            // admit a key seen once, which is every key here); when full, the oldest, nearest
            // to going stale, goes first.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        let nonces = match &config.nonce {
            None => None,
            Some(n) => {
                let secret = match &n.secret {
                    Some(s) => s.read()?,
                    None => {
                        tracing::warn!(
                            "dpop.nonce has no secret: nonces from this process are refused by any other replica"
                        );
                        rand::random::<[u8; 32]>().to_vec()
                    }
                };
                Some(Nonces {
                    key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
                    slot: n.slot.as_secs().max(1),
                })
            }
        };
        Ok(Self {
            algs: config
                .algorithms
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(" "),
            algorithms: config.algorithms.clone(),
            lifetime,
            skew,
            max_bytes,
            seen,
            nonces,
        })
    }

    /// `"ES256 PS256 ..."`: the algorithms accepted, space-separated.
    pub fn algs(&self) -> &str {
        &self.algs
    }

    /// The algorithm names, for the PRM document.
    pub fn algorithm_names(&self) -> Vec<String> {
        self.algorithms.iter().map(|a| format!("{a:?}")).collect()
    }

    /// A nonce for a `DPoP-Nonce` header, when nonces are on.
    pub fn fresh_nonce(&self, now: i64) -> Option<String> {
        self.nonces.as_ref().map(|n| n.issue(now))
    }

    /// Checks one proof (see the module docs for the order).
    pub fn check(&self, input: &ProofInput<'_>) -> Result<(), DpopError> {
        let proof = input.proof.ok_or(DpopError::Missing)?;
        if proof.contains(',') {
            return Err(DpopError::Multiple);
        }
        let proof = proof.trim_matches([' ', '\t']);
        if proof.is_empty() {
            return Err(DpopError::Missing);
        }
        if proof.len() > self.max_bytes {
            return Err(DpopError::Malformed);
        }
        let mut parts = proof.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(DpopError::Malformed);
        };
        let header = object(h)?;
        // s4.2: `typ` is exactly `dpop+jwt` (explicit typing, RFC 8725 s3.11). Media type
        // names are case-insensitive (RFC 7515 s4.1.9).
        match header.get("typ").and_then(Value::as_str) {
            Some(t) if t.eq_ignore_ascii_case("dpop+jwt") => {}
            _ => return Err(DpopError::WrongType),
        }
        let alg = match header.get("alg").and_then(Value::as_str) {
            Some(a) => a
                .parse::<Algorithm>()
                .map_err(|_| DpopError::AlgorithmNotAllowed)?,
            None => return Err(DpopError::Malformed),
        };
        if !self.algorithms.contains(&alg) {
            return Err(DpopError::AlgorithmNotAllowed);
        }
        // RFC 7515 s4.1.11: no extension is understood here.
        if header.contains_key("crit") {
            return Err(DpopError::Malformed);
        }
        let jwk = public_jwk(&header)?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| DpopError::BadKey)?;
        let signature_ok = jsonwebtoken::crypto::verify(
            s,
            proof
                .get(..h.len() + 1 + p.len())
                .unwrap_or_default()
                .as_bytes(),
            &key,
            alg,
        )
        .unwrap_or(false);
        if !signature_ok {
            return Err(DpopError::BadSignature);
        }
        let claims = object(p)?;
        let string = |name: &str| match claims.get(name) {
            Some(Value::String(v)) if !v.is_empty() => Ok(v.as_str()),
            _ => Err(DpopError::MissingClaim),
        };
        let jti = string("jti")?;
        // s4.3 item 8: the method, compared as sent (methods are case-sensitive, RFC 9110 s9.1).
        if string("htm")? != input.method {
            return Err(DpopError::WrongMethod);
        }
        let htu = string("htu")?;
        match (normalize_uri(htu), normalize_uri(input.uri)) {
            (Some(a), Some(b)) if a == b => {}
            _ => return Err(DpopError::WrongUri),
        }
        let iat = match claims.get("iat") {
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                .ok_or(DpopError::MissingClaim)?,
            _ => return Err(DpopError::MissingClaim),
        };
        if iat > input.now.saturating_add(self.skew) {
            return Err(DpopError::IssuedInFuture);
        }
        if iat < input.now.saturating_sub(self.lifetime) {
            return Err(DpopError::Stale);
        }
        // s7.1 / s4.3 item 11: at a resource server `ath` is required.
        let ath = string("ath")?;
        let expected = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(input.access_token.as_bytes()));
        if ath != expected {
            return Err(DpopError::WrongTokenHash);
        }
        // s6.1 / s7.1: the proof key is the key the token is bound to. RFC 7638 thumbprints
        // are canonical, so string equality is the comparison.
        let thumbprint = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| DpopError::BadKey)?;
        if thumbprint != input.jkt {
            return Err(DpopError::KeyMismatch);
        }
        if let Some(nonces) = &self.nonces {
            let ok = claims
                .get("nonce")
                .and_then(Value::as_str)
                .is_some_and(|n| nonces.accepts(n, input.now));
            if !ok {
                return Err(DpopError::UseNonce(nonces.issue(input.now)));
            }
        }
        // Last, so that only a proof that passed every other check takes a slot.
        let mut seen = sha2::Sha256::new();
        seen.update(input.jkt.as_bytes());
        seen.update([0]);
        seen.update(jti.as_bytes());
        let entry = self.seen.entry(seen.finalize().into()).or_insert(());
        if !entry.is_fresh() {
            return Err(DpopError::Replayed);
        }
        Ok(())
    }
}

// === impl Nonces ===

impl Nonces {
    fn slot_of(&self, now: i64) -> u64 {
        u64::try_from(now).unwrap_or(0) / self.slot
    }

    fn tag(&self, slot: u64) -> [u8; 16] {
        let mut out = [0u8; 16];
        let tag = hmac::sign(&self.key, &slot.to_be_bytes());
        for (o, t) in out.iter_mut().zip(tag.as_ref()) {
            *o = *t;
        }
        out
    }

    fn issue(&self, now: i64) -> String {
        let slot = self.slot_of(now);
        let mut raw = [0u8; 24];
        let (head, tail) = raw.split_at_mut(8);
        head.copy_from_slice(&slot.to_be_bytes());
        tail.copy_from_slice(&self.tag(slot));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// A nonce of the current slot or the one before it, made with this key.
    fn accepts(&self, nonce: &str, now: i64) -> bool {
        let mut raw = [0u8; 26];
        let Ok(24) = URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) else {
            return false;
        };
        let (head, rest) = raw.split_at(8);
        let Some(tag) = rest.get(..16) else {
            return false;
        };
        let mut slot = [0u8; 8];
        slot.copy_from_slice(head);
        let slot = u64::from_be_bytes(slot);
        let current = self.slot_of(now);
        if slot != current && slot.saturating_add(1) != current {
            return false;
        }
        // Constant-time comparison of the tag.
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.tag(slot), tag).is_ok()
    }
}

/// A base64url JSON object with no repeated member and shallow nesting.
fn object(part: &str) -> Result<Map<String, Value>, DpopError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| DpopError::Malformed)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| DpopError::Malformed)?;
    match crate::strict_json::parse(text, 8) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(DpopError::Malformed),
    }
}

/// The header's `jwk`: a public key only (s4.3 item 5: "does not contain a private key"), and
/// no other way of naming a key beside it.
fn public_jwk(header: &Map<String, Value>) -> Result<Jwk, DpopError> {
    const PRIVATE: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
    if ["jku", "x5u", "x5c", "kid"]
        .iter()
        .any(|k| header.contains_key(*k))
    {
        return Err(DpopError::BadKey);
    }
    let Some(Value::Object(jwk)) = header.get("jwk") else {
        return Err(DpopError::BadKey);
    };
    if PRIVATE.iter().any(|k| jwk.contains_key(*k)) {
        return Err(DpopError::BadKey);
    }
    serde_json::from_value(Value::Object(jwk.clone())).map_err(|_| DpopError::BadKey)
}

/// The URI a request was made to, for `htu`: the server's canonical origin (from its resource
/// URI; Envoy may have been reached over another scheme or name internally) and the request
/// path as Envoy normalized it, without the query (s4.3 item 9 ignores query and fragment).
pub fn request_uri(origin: &str, path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    format!("{origin}{path}")
}

/// Syntax-based normalization (RFC 3986 s6.2.2) and scheme-based normalization (s6.2.3), as
/// RFC 9449 s4.3 item 9 asks: lowercase scheme and host, no default port, dot segments removed
/// (all by `url`), percent-encoded unreserved characters decoded and other percent-encodings
/// uppercased; the query and fragment dropped. `None` for what is not an absolute http(s) URI.
pub fn normalize_uri(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    let mut out = url.origin().ascii_serialization();
    let path = url.path().as_bytes();
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        let hex = |j: usize| {
            path.get(j)
                .and_then(|c| (*c as char).to_digit(16))
                .and_then(|d| u8::try_from(d).ok())
        };
        if b == b'%'
            && let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2))
        {
            let c = hi * 16 + lo;
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(c));
            } else {
                out.push('%');
                out.push(char::from_digit(u32::from(hi), 16)?.to_ascii_uppercase());
                out.push(char::from_digit(u32::from(lo), 16)?.to_ascii_uppercase());
            }
            i += 3;
            continue;
        }
        out.push(char::from(b));
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
