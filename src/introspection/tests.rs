//! The introspector against a real local HTTP server playing an authorization server: caching,
//! single flight, bounds, failures, client authentication and discovery.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::*;

const RESOURCE: &str = "https://mcp.example.com/mcp";

/// What the endpoint answers.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
}

#[derive(Default)]
struct As {
    issuer: Mutex<String>,
    reply: Mutex<Option<Reply>>,
    hits: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Each request's `Authorization` header and form body.
    seen: Mutex<Vec<(Option<String>, String)>>,
}

struct Server {
    issuer: String,
    state: Arc<As>,
    _task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Self {
        let state = Arc::new(As::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        *state.issuer.lock().unwrap() = issuer.clone();
        let app = Router::new()
            .route("/.well-known/oauth-authorization-server", get(metadata))
            .route("/introspect", post(introspect))
            .with_state(state.clone());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            issuer,
            state,
            _task: task,
        }
    }

    fn reply(&self, status: u16, body: Value, delay: Duration) {
        self.reply_raw(status, &body.to_string(), delay);
    }

    fn reply_raw(&self, status: u16, body: &str, delay: Duration) {
        *self.state.reply.lock().unwrap() = Some(Reply {
            status,
            body: body.into(),
            delay,
        });
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<(Option<String>, String)> {
        self.state.seen.lock().unwrap().clone()
    }
}

async fn metadata(State(state): State<Arc<As>>) -> Response {
    let issuer = state.issuer.lock().unwrap().clone();
    axum::Json(json!({"issuer": issuer, "introspection_endpoint": format!("{issuer}/introspect")}))
        .into_response()
}

async fn introspect(State(state): State<Arc<As>>, headers: HeaderMap, body: String) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let authorization = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    state.seen.lock().unwrap().push((authorization, body));
    let reply = state.reply.lock().unwrap().clone().unwrap();
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(reply.delay).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    (
        StatusCode::from_u16(reply.status).unwrap(),
        [("content-type", "application/json")],
        reply.body,
    )
        .into_response()
}

fn active(issuer: &str, exp: i64) -> Value {
    json!({"active": true, "iss": issuer, "sub": "alice", "aud": RESOURCE, "scope": "mcp:connect",
           "client_id": "app", "exp": exp, "tenant": "acme", "token_type": "Bearer"})
}

struct Setup {
    introspector: Arc<Introspector>,
    issuer: IssuerConfig,
    server: ProtectedServer,
    _dir: tempfile::TempDir,
}

/// An issuer at `server` introspecting with `settings` (YAML flow members; `client_id` and a
/// `client_secret` file are added unless `settings` names its own).
async fn setup(server: &Server, settings: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let auth = if settings.contains("client_id") {
        String::new()
    } else {
        format!(
            "client_id: rs, client_secret: {{file: {}}}, ",
            secret.display()
        )
    };
    let extra = format!("    introspection: {{{auth}{settings}}}");
    let config = crate::config::Config::from_yaml(&crate::testutil::config_yaml(
        &server.issuer,
        RESOURCE,
        &extra,
    ))
    .unwrap();
    let issuer = config.issuers[0].clone();
    let metrics = Metrics::unregistered();
    let keys = crate::keys::IssuerKeys::new(issuer.clone(), metrics.clone(), 1 << 20).unwrap();
    let introspector = keys.introspector().unwrap().clone();
    let protected = ProtectedServer::new(&config.servers[0], &[], |_| Some(keys.clone())).unwrap();
    let (_tx, rx) = watch::channel(false);
    // Discovery, when no endpoint is configured.
    let task = tokio::spawn(introspector.clone().run_discovery(rx));
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(introspector.is_ready());
    Setup {
        introspector,
        issuer,
        server: protected,
        _dir: dir,
    }
}

fn digest(token: &str) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

async fn ask(s: &Setup, token: &str) -> Result<Looked, TokenError> {
    s.introspector.introspect(token, &digest(token)).await
}

#[tokio::test]
async fn introspect_active_answers_are_cached_and_mapped_like_jwt_claims() {
    let as_ = Server::start().await;
    let s = setup(&as_, "cache_ttl: 60s").await;
    assert_eq!(
        s.introspector.status().endpoint,
        Some(format!("{}/introspect", as_.issuer))
    );
    let now = crate::token::unix_now();
    as_.reply(200, active(&as_.issuer, now + 600), Duration::ZERO);
    let first = ask(&s, "opaque-1").await.unwrap();
    assert!(!first.cached);
    let second = ask(&s, "opaque-1").await.unwrap();
    assert!(second.cached);
    assert_eq!(as_.hits(), 1);
    let credential = Introspected::new(&second, &s.issuer, &s.server, now).unwrap();
    assert_eq!(credential.identity.subject, "alice");
    assert_eq!(credential.identity.tenant.as_deref(), Some("acme"));
    assert_eq!(credential.identity.scopes, ["mcp:connect"]);
    assert_eq!(credential.identity.client_id.as_deref(), Some("app"));
    // Never valid past the cached answer, which itself ends well before `exp`.
    assert!(
        credential.valid_until <= now + 61,
        "{}",
        credential.valid_until
    );
    assert_eq!(credential.revalidate(&s.server, now), Revalidation::Valid);
    assert_eq!(
        credential.revalidate(&s.server, credential.valid_until),
        Revalidation::Stale
    );
    // The token is in no log or key: the cache is keyed by its digest.
    assert_eq!(s.introspector.cached(), 1);
}

#[tokio::test]
async fn introspect_claims_are_checked_per_request() {
    let as_ = Server::start().await;
    let s = setup(&as_, "").await;
    let now = crate::token::unix_now();
    let mut other = active(&as_.issuer, now + 600);
    other["aud"] = json!(["https://other.example.com/mcp"]);
    as_.reply(200, other, Duration::ZERO);
    let looked = ask(&s, "for-another").await.unwrap();
    assert_eq!(
        Introspected::new(&looked, &s.issuer, &s.server, now).err(),
        Some(TokenError::WrongAudience)
    );
    let mut both = active(&as_.issuer, now + 600);
    both["aud"] = json!(["https://other.example.com/mcp", RESOURCE]);
    as_.reply(200, both, Duration::ZERO);
    let looked = ask(&s, "for-both").await.unwrap();
    assert!(Introspected::new(&looked, &s.issuer, &s.server, now).is_ok());
    let mut no_sub = active(&as_.issuer, now + 600);
    no_sub.as_object_mut().unwrap().remove("sub");
    as_.reply(200, no_sub, Duration::ZERO);
    let looked = ask(&s, "no-sub").await.unwrap();
    assert_eq!(
        Introspected::new(&looked, &s.issuer, &s.server, now).err(),
        Some(TokenError::MissingSubject)
    );
    // Past `exp` (and the leeway): refused, and not cached at all.
    as_.reply(200, active(&as_.issuer, now - 3600), Duration::ZERO);
    let looked = ask(&s, "expired").await.unwrap();
    assert_eq!(
        Introspected::new(&looked, &s.issuer, &s.server, now).err(),
        Some(TokenError::Expired)
    );
    let hits = as_.hits();
    let _ = ask(&s, "expired").await;
    assert_eq!(as_.hits(), hits + 1);
}

#[tokio::test]
async fn introspect_inactive_answers_are_cached_briefly() {
    let as_ = Server::start().await;
    let s = setup(&as_, "negative_cache_ttl: 1s").await;
    as_.reply(200, json!({"active": false}), Duration::ZERO);
    assert_eq!(ask(&s, "gone").await.err(), Some(TokenError::Inactive));
    assert_eq!(ask(&s, "gone").await.err(), Some(TokenError::Inactive));
    assert_eq!(as_.hits(), 1);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(ask(&s, "gone").await.err(), Some(TokenError::Inactive));
    assert_eq!(as_.hits(), 2);
    // Another issuer's token: refused and cached as such.
    let now = crate::token::unix_now();
    as_.reply(200, active("https://elsewhere", now + 600), Duration::ZERO);
    assert_eq!(
        ask(&s, "foreign").await.err(),
        Some(TokenError::UntrustedIssuer)
    );
}

#[tokio::test]
async fn introspect_failures_are_503_and_never_cached() {
    let as_ = Server::start().await;
    let s = setup(&as_, "timeout: 300ms").await;
    let now = crate::token::unix_now();
    let huge = format!(
        r#"{{"active":true,"exp":{},"sub":"alice","aud":"{RESOURCE}","pad":"{}"}}"#,
        now + 600,
        "x".repeat(MAX_RESPONSE_BYTES)
    );
    for (status, body, delay) in [
        (500, "{}".to_owned(), Duration::ZERO),
        (
            401,
            r#"{"error":"invalid_client"}"#.to_owned(),
            Duration::ZERO,
        ),
        (200, "<html>".to_owned(), Duration::ZERO),
        (200, r#"{"active":"yes"}"#.to_owned(), Duration::ZERO),
        (200, huge, Duration::ZERO),
        (
            200,
            r#"{"active":false}"#.to_owned(),
            Duration::from_secs(2),
        ),
    ] {
        as_.reply_raw(status, &body, delay);
        let hits = as_.hits();
        for _ in 0..2 {
            assert_eq!(
                ask(&s, "t").await.err(),
                Some(TokenError::IntrospectionUnavailable),
                "{status} {}",
                body.chars().take(40).collect::<String>()
            );
        }
        assert_eq!(as_.hits(), hits + 2, "{status}: a failure was cached");
    }
    let status = s.introspector.status();
    assert!(status.ready);
    assert_eq!(status.last_error_kind, Some("timeout"));
    assert!(status.consecutive_failures >= 12);
}

#[tokio::test]
async fn introspect_single_flight_and_bounded_concurrency() {
    let as_ = Server::start().await;
    let s = Arc::new(setup(&as_, "max_concurrency: 1, timeout: 1s").await);
    let now = crate::token::unix_now();
    as_.reply(
        200,
        active(&as_.issuer, now + 600),
        Duration::from_millis(300),
    );
    // Ten checks with one token: one request.
    let checks: Vec<_> = (0..10)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { ask(&s, "same").await.map(|l| l.cached) })
        })
        .collect();
    let mut fresh = 0;
    for c in checks {
        if !c.await.unwrap().unwrap() {
            fresh += 1;
        }
    }
    assert_eq!(as_.hits(), 1);
    assert_eq!(fresh, 1);
    // Four tokens at once, one slot: one request at a time, all within the bound.
    as_.reply(
        200,
        active(&as_.issuer, now + 600),
        Duration::from_millis(100),
    );
    let (a, b, c, d) = tokio::join!(ask(&s, "1"), ask(&s, "2"), ask(&s, "3"), ask(&s, "4"));
    assert!(a.is_ok() && b.is_ok() && c.is_ok() && d.is_ok());
    assert_eq!(as_.state.max_in_flight.load(Ordering::SeqCst), 1);
    // Answers slower than the bound: the second token waits for the slot past it.
    as_.reply(
        200,
        active(&as_.issuer, now + 600),
        Duration::from_millis(1_500),
    );
    let (a, b) = tokio::join!(ask(&s, "5"), ask(&s, "6"));
    assert_eq!(a.err(), Some(TokenError::IntrospectionUnavailable));
    assert_eq!(b.err(), Some(TokenError::IntrospectionUnavailable));
}

#[tokio::test]
async fn introspect_client_authentication_methods() {
    use base64::Engine as _;
    let as_ = Server::start().await;
    let now = crate::token::unix_now();
    as_.reply(200, active(&as_.issuer, now + 600), Duration::ZERO);

    // client_secret_basic: form-urlencoded before base64 (RFC 6749 s2.3.1).
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "p@ss:word").unwrap();
    let s = setup(
        &as_,
        &format!(
            "client_id: 'rs:1', client_secret: {{file: {}}}",
            secret.display()
        ),
    )
    .await;
    ask(&s, "tok+en/=").await.unwrap();
    let (authorization, body) = as_.seen().pop().unwrap();
    let b64 = authorization.unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.strip_prefix("Basic ").unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), "rs%3A1:p%40ss%3Aword");
    assert_eq!(body, "token=tok%2Ben%2F%3D&token_type_hint=access_token");

    // client_secret_post.
    let s = setup(
        &as_,
        &format!(
            "client_id: rs, auth: client_secret_post, client_secret: {{file: {}}}",
            secret.display()
        ),
    )
    .await;
    ask(&s, "t2").await.unwrap();
    let (authorization, body) = as_.seen().pop().unwrap();
    assert_eq!(authorization, None);
    assert_eq!(
        body,
        "token=t2&token_type_hint=access_token&client_id=rs&client_secret=p%40ss%3Aword"
    );

    // private_key_jwt: an assertion the client's public key verifies (RFC 7523 s3).
    let (key, pem) = crate::testutil::TestKey::rsa_with_pem("k1");
    let pem_file = dir.path().join("key.pem");
    std::fs::write(&pem_file, pem).unwrap();
    let s = setup(
        &as_,
        &format!(
            "client_id: rs, auth: private_key_jwt, private_key: {{file: {}}}, key_id: k1",
            pem_file.display()
        ),
    )
    .await;
    ask(&s, "t3").await.unwrap();
    let (authorization, body) = as_.seen().pop().unwrap();
    assert_eq!(authorization, None);
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[&as_.issuer]);
    validation.set_issuer(&["rs"]);
    let claims = jsonwebtoken::decode::<Value>(
        &form["client_assertion"],
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(claims.header.kid.as_deref(), Some("k1"));
    assert_eq!(claims.claims["sub"], "rs");
    assert!(claims.claims["jti"].as_str().unwrap().len() >= 32);
    assert!(claims.claims["exp"].as_i64().unwrap() <= now + 120);
}

#[test]
fn introspect_config_is_validated() {
    let yaml = |issuers: &str, servers_auth: &str| {
        format!(
            r#"
policies: {{dir: /nonexistent}}
issuers:
{issuers}
servers:
  - id: demo
    resource: https://mcp.example.com/mcp
    authorization_servers: [{servers_auth}]
"#
        )
    };
    let err = |issuers: &str, auth: &str| {
        crate::config::Config::from_yaml(&yaml(issuers, auth))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, "x").unwrap();
    let s = secret.display();
    let two = format!(
        "  - issuer: https://a.example\n    introspection: {{client_id: rs, client_secret: {{file: {s}}}}}\n  - issuer: https://b.example\n    introspection: {{client_id: rs, client_secret: {{file: {s}}}}}"
    );
    let e = err(&two, "https://a.example, https://b.example");
    assert!(
        e.contains("more than one issuer with `introspection`"),
        "{e}"
    );
    let e = err(
        "  - issuer: https://a.example\n    introspection: {client_id: rs, client_secret: 's3cret'}",
        "https://a.example",
    );
    assert!(!e.is_empty(), "an inline secret was accepted");
    let e = err(
        "  - issuer: https://a.example\n    introspection: {client_id: rs}",
        "https://a.example",
    );
    assert!(e.contains("introspection.client_secret"), "{e}");
    let e = err(
        &format!(
            "  - issuer: https://a.example\n    introspection: {{client_id: rs, auth: private_key_jwt, private_key: {{file: {s}}}}}"
        ),
        "https://a.example",
    );
    assert!(e.contains("introspection.private_key"), "{e}");
    let e = err(
        &format!(
            "  - issuer: https://a.example\n    introspection: {{client_id: rs, client_secret: {{file: {s}}}, endpoint: 'http://as.example/introspect'}}"
        ),
        "https://a.example",
    );
    assert!(e.contains("introspection.endpoint"), "{e}");
    let e = err(
        &format!(
            "  - issuer: https://a.example\n    jwks_uri: https://a.example/jwks\n    introspection: {{client_id: rs, client_secret: {{file: {s}}}, opaque_only: true}}"
        ),
        "https://a.example",
    );
    assert!(e.contains("opaque_only"), "{e}");
    // An opaque-only issuer that is not a URL but names its endpoint: fine.
    let ok = format!(
        "  - issuer: a-name\n    introspection: {{client_id: rs, client_secret: {{file: {s}}}, opaque_only: true, endpoint: 'https://as.example/introspect'}}"
    );
    assert_eq!(err(&ok, "a-name"), "");
}

#[tokio::test]
async fn introspect_an_opaque_only_issuer_is_ready_without_keys() {
    let as_ = Server::start().await;
    let s = setup(&as_, "opaque_only: true").await;
    let keys = &s.server.issuers[0];
    assert!(keys.load().is_none());
    assert!(keys.is_ready());
    let status = keys.status();
    assert!(status.ready);
    assert!(status.introspection.unwrap().ready);
    // It publishes no keys: a JWT naming it cannot be verified.
    let now = crate::token::unix_now();
    let mut claims = crate::testutil::claims(&as_.issuer, RESOURCE);
    claims["exp"] = json!(now + 600);
    let jwt = crate::testutil::TestKey::rsa("k").token(&claims);
    assert_eq!(
        crate::engine::verify_jwt(&jwt, &s.server, now).await.err(),
        Some(TokenError::UnknownKey)
    );
    // Its opaque tokens are introspected.
    as_.reply(200, active(&as_.issuer, now + 600), Duration::ZERO);
    assert!(ask(&s, "opaque").await.is_ok());
}
