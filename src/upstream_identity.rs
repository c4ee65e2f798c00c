//! The signed upstream identity: a short-lived JWT mcp-authz mints for the upstream of an
//! allowed request (who, for which tenant and client, with which scopes, for which MCP method
//! and target, under which decision id), so the upstream need not trust the network between it
//! and Envoy. Never the client's token, nor all of its claims.
//!
//! This module owns the signing keys (an immutable [`KeySet`] behind `ArcSwap`, generated and
//! rotated in memory or read from a directory every replica shares), minting, and the JWKS and
//! discovery documents the admin port serves. No transport types: the engine calls [`mint`]
//! on allow, `admin::http` serves the documents.
//!
//! [`mint`]: UpstreamIdentity::mint

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::config::{SigningAlgorithm, UpstreamIdentityConfig, UpstreamKeys};
use crate::identity::Identity;
use crate::metrics::Metrics;

/// The JOSE `typ` of every minted token (RFC 8725 s3.11, explicit typing; the media type
/// `application/mcp-authz-identity+jwt` with its `application/` prefix left out, RFC 7515
/// s4.1.9). A verifier that requires it cannot be handed an access token or an ID token signed
/// by the same keys in its place, nor this token where one of those is expected.
pub const TYP: &str = "mcp-authz-identity+jwt";

/// `Cache-Control: max-age` of the JWKS. Shorter than any overlap the keys have: a generated
/// key is published one `rotate_every` (at least 5 minutes) before it signs and after it stops.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(60);

/// A token longer than this is not sent: it would crowd Envoy's request header limit (60 KiB by
/// default). Only a large batch gets near it, through its list of methods and targets.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Key files in a directory: more than this is a mistake, not a rotation.
const MAX_KEY_FILES: usize = 16;
/// Largest key file read; a PEM private key is well under 1 KiB.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;
/// A key file with this suffix is published but does not sign yet (see [`KeySet::from_dir`]).
const NEXT_SUFFIX: &str = ".next.pem";
/// How often a key directory is read again (the content hash decides whether anything changed).
const DIR_POLL: Duration = Duration::from_secs(2);

/// The issuer of upstream identities: configuration, live keys, documents.
pub struct UpstreamIdentity {
    /// `iss` of every token, as configured (compared byte for byte by verifiers).
    issuer: String,
    lifetime: Duration,
    /// The request header the token travels in.
    header: String,
    source: Source,
    keys: ArcSwap<KeySet>,
    /// The discovery document, serialized once (it never changes).
    discovery: Arc<str>,
    metrics: Metrics,
}

/// Where keys come from, and what the background task does with them.
enum Source {
    Generate {
        rotate_every: Duration,
        algorithm: SigningAlgorithm,
    },
    Dir {
        path: PathBuf,
        /// Content hash of the last read, good or bad: a broken file is reported once per
        /// change, not at every poll. Only the background task takes this lock.
        last_read: Mutex<[u8; 32]>,
    },
}

/// One signing key and its published public half.
struct Key {
    /// The RFC 7638 thumbprint of the public key: the same in every replica that reads the same
    /// file, whatever the file is called.
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    /// The public key as published (`kid`, `use: sig`, `alg` set).
    jwk: Jwk,
}

/// The keys at one moment. Built and checked whole, then swapped in; a mint does one `load()`.
pub struct KeySet {
    /// INVARIANT: also in `published`.
    signing: Arc<Key>,
    /// Generated keys only: the key that signs after the next rotation (published already).
    next: Option<Arc<Key>>,
    /// Every key the JWKS lists: the signer, keys that will sign, keys whose tokens may live.
    published: Vec<Arc<Key>>,
    /// The JWKS, serialized once per key set.
    jwks: Arc<str>,
    /// The JOSE header of every token, built once per key set.
    header: Header,
}

/// What an identity token says, besides what mcp-authz adds (`iss`, `iat`, `exp`).
pub struct Request<'a> {
    /// `servers[].upstream_identity.audience`.
    pub audience: &'a str,
    /// `jti`: the decision id, also in `x-mcp-authz-decision-id` and the decision log.
    pub decision_id: &'a str,
    pub identity: &'a Identity,
    /// The request's MCP messages, in order (one, or several for a JSON-RPC batch).
    pub calls: &'a [Call<'a>],
}

/// One MCP message of the request: the `mcp` claim is a list of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Call<'a> {
    /// The JSON-RPC method (`tools/call`), or `GET` / `DELETE` for a stream opened or a session
    /// ended (no message): the action the policies were asked about.
    pub method: &'a str,
    /// The tool or prompt name, resource URI or task id; absent for session-level methods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'a str>,
}

/// The claims, in the order they are written.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: u64,
    exp: u64,
    jti: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    /// Space-delimited (RFC 8693 s4.2); absent when the caller has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// The issuer of the token the caller presented (`iss` is mcp-authz).
    token_iss: &'a str,
    mcp: &'a [Call<'a>],
}

/// Why keys cannot be made or read. At startup these stop the service (exit 64); later they
/// keep the last good key set, logged and counted.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate a signing key")]
    Generate,
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}`: {}", .0.path.display(), .0.reason)]
    Key(BadKey),
    #[error("`{dir}` holds no signing key (a `*.pem` file not named `*{NEXT_SUFFIX}`)")]
    NoSigningKey { dir: PathBuf },
    #[error("`{dir}` holds more than {MAX_KEY_FILES} key files")]
    TooManyKeys { dir: PathBuf },
}

/// A key file that is not a usable private key.
#[derive(Debug)]
pub struct BadKey {
    pub path: PathBuf,
    pub reason: String,
}

/// Why no token was minted. The request is then refused (503): a server that expects an
/// identity never gets a request without one.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("cannot sign the identity token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("the identity token would be {0} bytes, over {MAX_TOKEN_BYTES}")]
    TooLarge(usize),
}

// === impl UpstreamIdentity ===

impl UpstreamIdentity {
    /// Makes or reads the first keys: a directory without a usable signing key is a
    /// configuration error.
    pub fn new(config: &UpstreamIdentityConfig, metrics: Metrics) -> Result<Self, KeyError> {
        let (source, keys) = match &config.keys {
            UpstreamKeys::Generate(g) => {
                let current = Arc::new(Key::generate(g.algorithm)?);
                let next = Arc::new(Key::generate(g.algorithm)?);
                let source = Source::Generate {
                    rotate_every: g.rotate_every,
                    algorithm: g.algorithm,
                };
                (source, KeySet::generated(None, current, next)?)
            }
            UpstreamKeys::Dir(path) => {
                let files = read_dir(path)?;
                let keys = KeySet::from_dir(path, &files.keys)?;
                let source = Source::Dir {
                    path: path.clone(),
                    last_read: Mutex::new(files.hash),
                };
                (source, keys)
            }
        };
        metrics.upstream_keys(keys.published.len());
        let base = config.issuer.trim_end_matches('/');
        let discovery = serde_json::json!({
            "issuer": config.issuer,
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "mcp_authz_identity_typ": TYP,
            "mcp_authz_identity_header": config.header,
        })
        .to_string();
        Ok(Self {
            issuer: config.issuer.clone(),
            lifetime: config.lifetime,
            header: config.header.clone(),
            source,
            keys: ArcSwap::from_pointee(keys),
            discovery: discovery.into(),
            metrics,
        })
    }

    /// The request header the token travels in.
    pub fn header(&self) -> &str {
        &self.header
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Mints a token for `request`, counted. Lock-free: one load of the live key set.
    pub fn mint(&self, request: &Request<'_>) -> Result<String, MintError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let minted = self.mint_at(request, now);
        self.metrics.upstream_token(minted.is_ok());
        minted
    }

    /// Mints a token issued at `now` (Unix seconds), uncounted.
    pub fn mint_at(&self, request: &Request<'_>, now: u64) -> Result<String, MintError> {
        let keys = self.keys.load();
        let identity = request.identity;
        let claims = Claims {
            iss: &self.issuer,
            aud: request.audience,
            sub: &identity.subject,
            iat: now,
            exp: now.saturating_add(self.lifetime.as_secs()),
            jti: request.decision_id,
            tenant: identity.tenant.as_deref(),
            client_id: identity.client_id.as_deref(),
            scope: (!identity.scopes.is_empty()).then(|| identity.scopes.join(" ")),
            token_iss: &identity.issuer,
            mcp: request.calls,
        };
        let token = jsonwebtoken::encode(&keys.header, &claims, &keys.signing.encoding)?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(MintError::TooLarge(token.len()));
        }
        Ok(token)
    }

    /// The JWKS (`{"keys": [...]}`) of the live key set.
    pub fn jwks_json(&self) -> Arc<str> {
        self.keys.load().jwks.clone()
    }

    /// The discovery document (`issuer`, `jwks_uri`).
    pub fn discovery_json(&self) -> Arc<str> {
        self.discovery.clone()
    }

    /// Where the admin port serves the discovery document: the issuer's path, then
    /// `/.well-known/openid-configuration` (OpenID Connect Discovery s4).
    pub fn discovery_path(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer_path())
    }

    /// Where the admin port serves the JWKS (the discovery document's `jwks_uri`).
    pub fn jwks_path(&self) -> String {
        format!("{}/.well-known/jwks.json", self.issuer_path())
    }

    fn issuer_path(&self) -> String {
        url::Url::parse(&self.issuer)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default()
    }

    /// The `kid` that signs now.
    pub fn signing_kid(&self) -> String {
        self.keys.load().signing.kid.clone()
    }

    /// Every published `kid`.
    pub fn published_kids(&self) -> Vec<String> {
        self.keys
            .load()
            .published
            .iter()
            .map(|k| k.kid.clone())
            .collect()
    }

    /// Generated keys: the next key starts signing, the one that signed stays published until
    /// the following rotation (every token it signed has expired by then: `rotate_every`
    /// exceeds `lifetime`), and a new next key is published. Nothing for a key directory.
    pub fn rotate(&self) -> Result<(), KeyError> {
        let Source::Generate { algorithm, .. } = &self.source else {
            return Ok(());
        };
        let old = self.keys.load_full();
        let next = old.next.clone().unwrap_or_else(|| old.signing.clone());
        let keys = KeySet::generated(
            Some(old.signing.clone()),
            next,
            Arc::new(Key::generate(*algorithm)?),
        )?;
        tracing::info!(kid = %keys.signing.kid, retired = %old.signing.kid, "upstream identity key rotated");
        self.install(keys, "rotated");
        Ok(())
    }

    /// A key directory: reads it again; swaps in a new key set only when the content changed
    /// and every key in it is usable. `Ok(true)` when the keys changed. A failure keeps the last
    /// good set, and is logged and counted once per change of the content.
    pub fn reload_if_changed(&self) -> Result<bool, KeyError> {
        let Source::Dir { path, last_read } = &self.source else {
            return Ok(false);
        };
        let loaded = read_dir(path).and_then(|files| {
            let mut last = last_read.lock().unwrap_or_else(|e| e.into_inner());
            if *last == files.hash {
                return Ok(None);
            }
            *last = files.hash;
            KeySet::from_dir(path, &files.keys).map(Some)
        });
        match loaded {
            Ok(None) => Ok(false),
            Ok(Some(keys)) => {
                tracing::info!(dir = %path.display(), kid = %keys.signing.kid, keys = keys.published.len(), "upstream identity keys reloaded");
                self.install(keys, "reloaded");
                Ok(true)
            }
            Err(e) => {
                tracing::error!(error = %e, kid = %self.signing_kid(), "upstream identity keys changed but cannot be used; keeping the last good ones");
                self.metrics.upstream_key_change("failed");
                Err(e)
            }
        }
    }

    fn install(&self, keys: KeySet, outcome: &'static str) {
        self.metrics.upstream_keys(keys.published.len());
        self.metrics.upstream_key_change(outcome);
        self.keys.store(Arc::new(keys));
    }

    /// Rotates generated keys every `rotate_every`, or reads a key directory every few seconds,
    /// until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let every = match &self.source {
            Source::Generate { rotate_every, .. } => *rotate_every,
            Source::Dir { .. } => DIR_POLL,
        };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let this = self.clone();
            let done = tokio::task::spawn_blocking(move || match &this.source {
                Source::Generate { .. } => this.rotate().map(|()| true),
                Source::Dir { .. } => this.reload_if_changed(),
            })
            .await;
            if let Ok(Err(e)) = done
                && matches!(self.source, Source::Generate { .. })
            {
                // (A directory's failures were logged by `reload_if_changed`.)
                tracing::error!(error = %e, "cannot rotate the upstream identity key; the current one keeps signing");
                self.metrics.upstream_key_change("failed");
            }
        }
    }
}

// === impl KeySet ===

impl KeySet {
    /// Generated keys: `previous` (retired, its tokens may still live), `current` (signs),
    /// `next` (signs after the next rotation), all published.
    fn generated(
        previous: Option<Arc<Key>>,
        current: Arc<Key>,
        next: Arc<Key>,
    ) -> Result<Self, KeyError> {
        let published = previous
            .into_iter()
            .chain([current.clone(), next.clone()])
            .collect();
        Self::new(current, Some(next), published)
    }

    /// A key directory's keys: every one is published; the one whose file name sorts last
    /// among those not named `*.next.pem` signs. A `*.next.pem` key is published ahead of use:
    /// renaming it to `*.pem` later makes it sign under the same `kid`.
    fn from_dir(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<Self, KeyError> {
        let mut published: Vec<Arc<Key>> = Vec::with_capacity(files.len());
        let mut signing = None;
        // `files` is sorted by name: the last signing candidate wins.
        for (name, pem) in files {
            let key = Key::from_pem(pem).map_err(|reason| {
                KeyError::Key(BadKey {
                    path: dir.join(name),
                    reason,
                })
            })?;
            let key = match published.iter().find(|k| k.kid == key.kid) {
                Some(same) => same.clone(),
                None => {
                    let key = Arc::new(key);
                    published.push(key.clone());
                    key
                }
            };
            if !name.ends_with(NEXT_SUFFIX) {
                signing = Some(key);
            }
        }
        let signing = signing.ok_or_else(|| KeyError::NoSigningKey {
            dir: dir.to_owned(),
        })?;
        Self::new(signing, None, published)
    }

    fn new(
        signing: Arc<Key>,
        next: Option<Arc<Key>>,
        published: Vec<Arc<Key>>,
    ) -> Result<Self, KeyError> {
        let jwks = serde_json::json!({
            "keys": published.iter().map(|k| &k.jwk).collect::<Vec<_>>(),
        })
        .to_string();
        let mut header = Header::new(signing.algorithm);
        header.typ = Some(TYP.to_owned());
        header.kid = Some(signing.kid.clone());
        Ok(Self {
            signing,
            next,
            published,
            jwks: jwks.into(),
            header,
        })
    }
}

// === impl Key ===

impl Key {
    fn generate(algorithm: SigningAlgorithm) -> Result<Self, KeyError> {
        match algorithm {
            SigningAlgorithm::ES256 => {
                let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| KeyError::Generate)?;
                let der = pair.to_pkcs8v1().map_err(|_| KeyError::Generate)?;
                Self::new(EncodingKey::from_ec_der(der.as_ref()), Algorithm::ES256)
                    .map_err(|_| KeyError::Generate)
            }
            SigningAlgorithm::EdDSA => {
                let pair = Ed25519KeyPair::generate().map_err(|_| KeyError::Generate)?;
                let der = pair.to_pkcs8v1().map_err(|_| KeyError::Generate)?;
                Self::new(EncodingKey::from_ed_der(der.as_ref()), Algorithm::EdDSA)
                    .map_err(|_| KeyError::Generate)
            }
        }
    }

    /// A PKCS#8 PEM private key: P-256 (signs ES256) or Ed25519 (EdDSA). The reason it is not
    /// one, otherwise.
    fn from_pem(pem: &[u8]) -> Result<Self, String> {
        if let Ok(key) = EncodingKey::from_ec_pem(pem) {
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.as_bytes())
                .map_err(|e| format!("not a P-256 private key (ES256 needs P-256): {e}"))?;
            return Self::new(key, Algorithm::ES256);
        }
        if let Ok(key) = EncodingKey::from_ed_pem(pem) {
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.as_bytes())
                .map_err(|e| format!("not a usable Ed25519 private key: {e}"))?;
            return Self::new(key, Algorithm::EdDSA);
        }
        Err("not a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) P-256 or Ed25519 private key".into())
    }

    fn new(encoding: EncodingKey, algorithm: Algorithm) -> Result<Self, String> {
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).map_err(|e| e.to_string())?;
        let kid = thumbprint(&jwk)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(match algorithm {
            Algorithm::EdDSA => KeyAlgorithm::EdDSA,
            _ => KeyAlgorithm::ES256,
        });
        Ok(Self {
            kid,
            algorithm,
            encoding,
            jwk,
        })
    }
}

/// The RFC 7638 SHA-256 thumbprint of a public P-256 or Ed25519 key (RFC 8037 s2 for OKP),
/// base64url: the required members in lexicographic order, no whitespace.
fn thumbprint(jwk: &Jwk) -> Result<String, String> {
    let members = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => {
            format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                p.x, p.y
            )
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, p.x)
        }
        _ => return Err("not an EC or OKP key".into()),
    };
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(members.as_bytes())))
}

/// The key files of a directory, sorted by name, and a hash of names and contents.
struct DirFiles {
    keys: Vec<(String, Vec<u8>)>,
    hash: [u8; 32],
}

/// Reads every `*.pem` file of `dir` (following symlinks, as a mounted Kubernetes Secret has
/// them), skipping hidden entries (the Secret's `..data` and timestamped directories).
fn read_dir(dir: &Path) -> Result<DirFiles, KeyError> {
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Read { path, source }
    };
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
        let entry = entry.map_err(read_err(dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".pem") {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(read_err(&path))?;
        if !meta.is_file() {
            continue;
        }
        if meta.len() > MAX_KEY_FILE_BYTES {
            return Err(KeyError::Key(BadKey {
                path,
                reason: format!("larger than {MAX_KEY_FILE_BYTES} bytes"),
            }));
        }
        let pem = std::fs::read(&path).map_err(read_err(&path))?;
        keys.push((name, pem));
        if keys.len() > MAX_KEY_FILES {
            return Err(KeyError::TooManyKeys {
                dir: dir.to_owned(),
            });
        }
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hash = Sha256::new();
    for (name, pem) in &keys {
        hash.update((name.len() as u64).to_be_bytes());
        hash.update(name.as_bytes());
        hash.update((pem.len() as u64).to_be_bytes());
        hash.update(pem);
    }
    Ok(DirFiles {
        keys,
        hash: hash.finalize().into(),
    })
}

#[cfg(test)]
mod tests;
