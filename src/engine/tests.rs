//! Engine tests against in-memory key sets: every token and credential rule, and the table of
//! bad inputs, each asserting the HTTP status and the RFC 6750 error code.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};

use super::*;
use crate::config::Config;
use crate::keys::{IssuerKeys, KeySet};
use crate::testutil::{TestKey, b64, claims, now};

const RESOURCE: &str = "https://mcp.example.com/weather/mcp";
const ISS: &str = "https://idp.test";
const RELAXED: &str = "https://relaxed.test";
const HMAC: &str = "https://hmac.test";
const UNTRUSTED: &str = "https://other.test";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hmac";

struct Keys {
    rsa: TestKey,
    rsa_other: TestKey,
    ec: TestKey,
    ed: TestKey,
    rsa_relaxed: TestKey,
    hmac: TestKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: TestKey::rsa("rsa-1"),
        // Same kid as `rsa`, different key: a forged signature.
        rsa_other: TestKey::rsa("rsa-1"),
        ec: TestKey::ec("ec-1"),
        ed: TestKey::ed("ed-1"),
        rsa_relaxed: TestKey::rsa("rel-1"),
        hmac: TestKey::hmac("h", SECRET, Algorithm::HS256),
    })
}

fn config(secret_file: &std::path::Path) -> Config {
    Config::from_yaml(&format!(
        r#"
policies: {{dir: {policies}}}
issuers:
  - issuer: {ISS}
    jwks_uri: https://idp.test/jwks
    algorithms: [RS256, ES256, EdDSA]
    claims: {{tenant: tenant}}
  - issuer: {RELAXED}
    jwks_uri: https://relaxed.test/jwks
    typ: relaxed
    claims: {{tenant: tenant}}
  - issuer: {HMAC}
    algorithms: [HS256]
    hmac_secret: {{file: {}}}
    claims: {{tenant: tenant}}
  - issuer: {UNTRUSTED}
    jwks_uri: https://other.test/jwks
servers:
  - id: demo
    tenant: acme
    resource: {RESOURCE}
    authorization_servers: [{ISS}, {RELAXED}, {HMAC}]
    scopes_supported: [mcp:connect, mcp:tools:weather, mcp:tools:files]
    challenge_scopes: [mcp:connect]
"#,
        secret_file.display(),
        policies = crate::testutil::shipped_policies().display(),
    ))
    .unwrap()
}

fn engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let secret = dir.path().join("secret");
            std::fs::write(&secret, SECRET).unwrap();
            let config = config(&secret);
            let k = keys();
            let metrics = crate::metrics::Metrics::unregistered();
            let set = |keys: &[&TestKey], allowed: &[Algorithm]| {
                let jwks = json!({"keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>()});
                KeySet::from_jwks(jwks.to_string().as_bytes(), allowed)
                    .unwrap()
                    .0
            };
            let issuers = vec![
                IssuerKeys::with_static(
                    config.issuers[0].clone(),
                    set(&[&k.rsa, &k.ec, &k.ed], &config.issuers[0].algorithms),
                    metrics.clone(),
                ),
                IssuerKeys::with_static(
                    config.issuers[1].clone(),
                    set(&[&k.rsa_relaxed], &config.issuers[1].algorithms),
                    metrics.clone(),
                ),
                IssuerKeys::new(config.issuers[2].clone(), metrics.clone(), 1 << 20).unwrap(),
                IssuerKeys::with_static(
                    config.issuers[3].clone(),
                    set(&[&k.rsa_other], &config.issuers[3].algorithms),
                    metrics.clone(),
                ),
            ];
            let policies =
                crate::policy::PolicyStore::open(&config.policies.dir, metrics.clone()).unwrap();
            Arc::new(Engine::new(&config, issuers, policies, metrics).unwrap())
        })
        .clone()
}

/// What a check answered, reduced to the parts the rules are about.
#[derive(Debug)]
struct Answer {
    status: u16,
    error: Option<String>,
    www_authenticate: Option<String>,
    body: String,
    allow: Option<Allow>,
    /// A denial's headers (none for an allow).
    headers: Vec<(String, String)>,
}

async fn run(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    run_on(&engine(), method, path, headers, body).await
}

/// A check on `engine`, reduced to an [`Answer`].
async fn run_on(
    engine: &Engine,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let input = CheckInput {
        method,
        path,
        host: "mcp.example.com",
        headers: &headers,
        body,
    };
    match engine.check(&input).await {
        Decision::Allow(a) => Answer {
            status: 200,
            error: None,
            www_authenticate: None,
            body: String::new(),
            allow: Some(*a),
            headers: vec![],
        },
        Decision::Respond(r) => {
            let www = r
                .headers
                .iter()
                .find(|(k, _)| *k == "www-authenticate")
                .map(|(_, v)| v.clone());
            let error = www.as_deref().and_then(|w| {
                w.split("error=\"")
                    .nth(1)
                    .map(|s| s.split('"').next().unwrap().to_owned())
            });
            Answer {
                status: r.status,
                error,
                www_authenticate: www,
                body: r.body,
                allow: None,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.into_owned(), v))
                    .collect(),
            }
        }
    }
}

async fn with_auth(auth: &str) -> Answer {
    run(
        "POST",
        "/weather/mcp",
        &[
            ("authorization", auth),
            ("content-type", "application/json"),
        ],
        crate::testutil::TOOLS_LIST.as_bytes(),
    )
    .await
}

async fn with_token(token: &str) -> Answer {
    with_auth(&format!("Bearer {token}")).await
}

fn good() -> Value {
    claims(ISS, RESOURCE)
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn without(mut c: Value, key: &str) -> Value {
    c.as_object_mut().unwrap().remove(key);
    c
}

fn header(alg: Algorithm, kid: &str, typ: Option<&str>) -> Header {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    h.typ = typ.map(str::to_owned);
    h
}

/// A token with a hand-written header and payload and a junk signature.
fn raw(header: &Value, payload: &Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    )
}

#[tokio::test]
async fn valid_tokens_of_every_algorithm_are_allowed() {
    let k = keys();
    for token in [
        k.rsa.token(&good()),
        k.ec.token(&good()),
        k.ed.token(&good()),
        k.hmac.token(&claims(HMAC, RESOURCE)),
        k.rsa_relaxed.sign(
            &header(Algorithm::RS256, "rel-1", Some("JWT")),
            &claims(RELAXED, RESOURCE),
        ),
        k.rsa_relaxed.sign(
            &header(Algorithm::RS256, "rel-1", None),
            &claims(RELAXED, RESOURCE),
        ),
    ] {
        let a = with_token(&token).await;
        assert_eq!(a.status, 200, "{a:?}");
    }
}

#[tokio::test]
async fn allow_sets_identity_headers_and_strips_the_token() {
    let k = keys();
    let c = with(good(), "scope", json!("mcp:connect mcp:tools"));
    let a = with_token(&k.rsa.token(&c)).await;
    let allow = a.allow.expect("allowed");
    let set: HashMap<_, _> = allow.set_headers.into_iter().collect();
    assert_eq!(set["x-mcp-authz-subject"], "alice");
    assert_eq!(set["x-mcp-authz-tenant"], "acme");
    assert_eq!(set["x-mcp-authz-client-id"], "client-1");
    assert_eq!(set["x-mcp-authz-scopes"], "mcp:connect mcp:tools");
    assert_eq!(set["x-mcp-authz-issuer"], ISS);
    assert_eq!(allow.remove_headers, vec!["authorization", "dpop"]);

    // Underscore look-alikes of identity headers are removed too.
    let auth = format!("Bearer {}", k.rsa.token(&good()));
    let a = run(
        "POST",
        "/weather/mcp",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("x_mcp_authz_tenant", "victim"),
            ("x_other", "kept"),
        ],
        crate::testutil::TOOLS_LIST.as_bytes(),
    )
    .await;
    let removed = a.allow.expect("allowed").remove_headers;
    assert!(
        removed.contains(&"x_mcp_authz_tenant".to_string()),
        "{removed:?}"
    );
    assert!(!removed.contains(&"x_other".to_string()));

    // Facts the token lacks are removed, so a client's copy cannot stand in for them.
    let c = without(good(), "client_id");
    let a = with_token(&k.rsa.token(&c)).await;
    let allow = a.allow.expect("allowed");
    assert!(
        allow
            .remove_headers
            .contains(&"x-mcp-authz-client-id".to_string())
    );
}

#[tokio::test]
async fn scopes_from_scp_arrays_and_audience_case() {
    let k = keys();
    let c = with(without(good(), "scope"), "scp", json!(["mcp:connect", "b"]));
    let c = with(
        c,
        "aud",
        json!(["https://other", "HTTPS://MCP.EXAMPLE.COM/weather/mcp"]),
    );
    let allow = with_token(&k.ec.token(&c)).await.allow.expect("allowed");
    assert_eq!(allow.identity().scopes, vec!["mcp:connect", "b"]);
    assert_eq!(allow.identity().tenant.as_deref(), Some("acme"));
}

#[tokio::test]
async fn challenges_carry_resource_metadata_and_scope() {
    let a = run("POST", "/weather/mcp", &[], b"{}").await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.www_authenticate.as_deref(),
        Some(
            "Bearer scope=\"mcp:connect\", resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/weather/mcp\""
        )
    );
    let a = with_token("abc.def.ghi").await;
    let www = a.www_authenticate.unwrap();
    assert!(
        www.starts_with("Bearer error=\"invalid_token\", error_description=\""),
        "{www}"
    );
    assert!(www.contains("resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/weather/mcp\""));
    let body: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(body["error"], "invalid_token");
    // 400 carries no `scope`: only a 401 advertises what to ask for.
    let a = with_auth("Bearer a, Bearer b").await;
    assert!(!a.www_authenticate.unwrap().contains("scope="));
}

#[tokio::test]
async fn prm_is_served_from_configuration_not_the_host_header() {
    let headers: HashMap<String, String> = HashMap::new();
    let input = CheckInput {
        method: "GET",
        path: "/.well-known/oauth-protected-resource/weather/mcp",
        host: "mcp.example.com",
        headers: &headers,
        body: b"",
    };
    let Decision::Respond(r) = engine().check(&input).await else {
        panic!("expected a direct response");
    };
    assert_eq!(r.status, 200);
    let doc: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(doc["resource"], RESOURCE);
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    assert_eq!(doc["authorization_servers"], json!([ISS, RELAXED, HMAC]));
    // Another Host: no server there, so no document and no redirection of clients.
    let input = CheckInput {
        host: "evil.example.com",
        ..input
    };
    let Decision::Respond(r) = engine().check(&input).await else {
        panic!("expected a direct response");
    };
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn bad_inputs_table() {
    let k = keys();
    let n = now();
    let big = format!("Bearer {}", "a".repeat(9000));
    let rsa_pub_pem_as_secret = TestKey::hmac(
        "rsa-1",
        k.rsa.public_jwk().to_string().as_bytes(),
        Algorithm::HS256,
    );
    let mut tampered = k.rsa.token(&good());
    {
        let parts: Vec<&str> = tampered.split('.').collect();
        let evil = b64(with(good(), "sub", json!("root")).to_string().as_bytes());
        tampered = format!("{}.{evil}.{}", parts[0], parts[2]);
    }
    let mut crit = header(Algorithm::RS256, "rsa-1", Some("at+jwt"));
    crit.crit = Some(vec!["exp".into()]);
    let mut jku = header(Algorithm::RS256, "attacker", Some("at+jwt"));
    jku.jku = Some("http://127.0.0.1:1/jwks".into());
    let attacker = TestKey::rsa("attacker");

    type Case = (&'static str, String, u16, Option<&'static str>);
    let t = |name: &'static str, token: String| -> Case {
        (name, format!("Bearer {token}"), 401, Some("invalid_token"))
    };
    let cases: Vec<Case> = vec![
        ("empty header", String::new(), 401, None),
        ("whitespace header", "   ".into(), 401, None),
        ("basic scheme", "Basic dXNlcjpwYXNz".into(), 401, None),
        ("digest scheme", "Digest username=x".into(), 401, None),
        ("scheme only", "Bearer".into(), 400, Some("invalid_request")),
        (
            "scheme and spaces",
            "Bearer    ".into(),
            400,
            Some("invalid_request"),
        ),
        (
            "two headers",
            format!("Bearer {}, Bearer x", k.rsa.token(&good())),
            400,
            Some("invalid_request"),
        ),
        (
            "quote in token",
            "Bearer ab\"c".into(),
            400,
            Some("invalid_request"),
        ),
        (
            "space in token",
            "Bearer a b".into(),
            400,
            Some("invalid_request"),
        ),
        ("oversized", big, 401, Some("invalid_token")),
        t("garbage", "abc".into()),
        t("two parts", "abc.def".into()),
        t("jwe five parts", "a.b.c.d.e".into()),
        t("header not base64", "a.e30.sig".into()),
        (
            "header with bad characters",
            "Bearer !!!.e30.sig".into(),
            400,
            Some("invalid_request"),
        ),
        t("header not json", format!("{}.e30.sig", b64(b"nope"))),
        t(
            "payload not json",
            format!(
                "{}.{}.sig",
                b64(br#"{"alg":"RS256","typ":"at+jwt","kid":"rsa-1"}"#),
                b64(b"nope")
            ),
        ),
        t(
            "alg none",
            raw(&json!({"alg": "none", "typ": "at+jwt"}), &good(), ""),
        ),
        t(
            "alg None",
            raw(&json!({"alg": "None", "typ": "at+jwt"}), &good(), ""),
        ),
        t(
            "alg missing",
            raw(&json!({"typ": "at+jwt", "kid": "rsa-1"}), &good(), "x"),
        ),
        t(
            "hs256 with rsa key as secret",
            rsa_pub_pem_as_secret.token(&good()),
        ),
        t(
            "hs256 on hmac issuer with wrong secret",
            rsa_pub_pem_as_secret.token(&claims(HMAC, RESOURCE)),
        ),
        t("unknown kid", TestKey::ec("nope").token(&good())),
        t("forged signature same kid", k.rsa_other.token(&good())),
        t("tampered payload", tampered),
        t(
            "junk signature",
            raw(
                &json!({"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1"}),
                &good(),
                "AAAA",
            ),
        ),
        t("expired", k.rsa.token(&with(good(), "exp", json!(n - 120)))),
        t(
            "exp as string",
            k.rsa.token(&with(good(), "exp", json!("soon"))),
        ),
        t("missing exp", k.rsa.token(&without(good(), "exp"))),
        t(
            "not yet valid",
            k.rsa.token(&with(good(), "nbf", json!(n + 600))),
        ),
        t(
            "issued in future",
            k.rsa.token(&with(good(), "iat", json!(n + 600))),
        ),
        t(
            "wrong iss",
            k.rsa
                .token(&with(good(), "iss", json!("https://evil.test"))),
        ),
        t("missing iss", k.rsa.token(&without(good(), "iss"))),
        t(
            "issuer not trusted for this server",
            k.rsa_other.token(&claims(UNTRUSTED, RESOURCE)),
        ),
        t(
            "wrong aud",
            k.rsa.token(&with(
                good(),
                "aud",
                json!("https://mcp.example.com/other/mcp"),
            )),
        ),
        t(
            "aud with fragment",
            k.rsa
                .token(&with(good(), "aud", json!(format!("{RESOURCE}#x")))),
        ),
        t(
            "aud array without resource",
            k.rsa.token(&with(good(), "aud", json!(["a", "b"]))),
        ),
        t("missing aud", k.rsa.token(&without(good(), "aud"))),
        t(
            "typ JWT on strict issuer",
            k.rsa
                .sign(&header(Algorithm::RS256, "rsa-1", Some("JWT")), &good()),
        ),
        t(
            "typ missing on strict issuer",
            k.rsa
                .sign(&header(Algorithm::RS256, "rsa-1", None), &good()),
        ),
        t(
            "typ id+jwt on relaxed issuer",
            k.rsa_relaxed.sign(
                &header(Algorithm::RS256, "rel-1", Some("id+jwt")),
                &claims(RELAXED, RESOURCE),
            ),
        ),
        t(
            "alg outside allowlist",
            TestKey::rsa_with("rsa-1", Algorithm::RS384).token(&good()),
        ),
        t(
            "ps256 with rs256-only key",
            raw(
                &json!({"alg": "PS256", "typ": "at+jwt", "kid": "rsa-1"}),
                &good(),
                "AAAA",
            ),
        ),
        t(
            "es256 key as es384",
            raw(
                &json!({"alg": "ES384", "typ": "at+jwt", "kid": "ec-1"}),
                &good(),
                "AAAA",
            ),
        ),
        t("critical header", k.rsa.sign(&crit, &good())),
        t("jku is never followed", attacker.sign(&jku, &good())),
        t("missing sub", k.rsa.token(&without(good(), "sub"))),
        t(
            "sub not a string",
            k.rsa.token(&with(good(), "sub", json!(42))),
        ),
        t(
            "sub with newline",
            k.rsa
                .token(&with(good(), "sub", json!("alice\r\nx-admin: 1"))),
        ),
        t(
            "scope not a string",
            k.rsa.token(&with(good(), "scope", json!({"a": 1}))),
        ),
    ];
    assert!(cases.len() >= 30);
    for (name, auth, status, error) in cases {
        let a = with_auth(&auth).await;
        assert_eq!(a.status, status, "{name}: {a:?}");
        assert_eq!(a.error.as_deref(), error, "{name}: {a:?}");
        let www = a.www_authenticate.unwrap_or_default();
        assert!(www.contains("resource_metadata="), "{name}: {www}");
        // Never echo the credential back.
        if let Some(token) = auth.strip_prefix("Bearer ").filter(|t| t.len() > 8) {
            assert!(
                !www.contains(token) && !a.body.contains(token),
                "{name} echoed the token"
            );
        }
    }
}

#[tokio::test]
async fn tokens_outside_the_header_are_invalid_requests() {
    let token = keys().rsa.token(&good());
    let a = run(
        "GET",
        &format!("/weather/mcp?access_token={token}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (a.status, a.error.as_deref()),
        (400, Some("invalid_request"))
    );
    let auth = format!("Bearer {token}");
    let a = run(
        "POST",
        &format!("/weather/mcp?access_token={token}"),
        &[("authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(
        (a.status, a.error.as_deref()),
        (400, Some("invalid_request"))
    );
    let form = format!("access_token={token}");
    let a = run(
        "POST",
        "/weather/mcp",
        &[("content-type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .await;
    assert_eq!(
        (a.status, a.error.as_deref()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn unmatched_requests_are_denied() {
    let token = keys().rsa.token(&good());
    let auth = format!("Bearer {token}");
    let a = run("POST", "/elsewhere", &[("authorization", &auth)], b"").await;
    assert_eq!(a.status, 404);
    assert!(a.allow.is_none());
}

/// The verified-token cache, through whole checks on an engine of its own (its key set is
/// replaced mid-test): hits skip verification but never the rules that can change.
mod token_cache {
    use super::*;
    use crate::metrics::Metrics;
    use prometheus::Registry;

    struct Fixture {
        engine: Engine,
        issuer: Arc<IssuerKeys>,
        registry: Registry,
    }

    fn jwks(keys: &[&TestKey]) -> KeySet {
        let jwks = json!({"keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>()});
        KeySet::from_jwks(
            jwks.to_string().as_bytes(),
            &[Algorithm::RS256, Algorithm::ES256],
        )
        .unwrap()
        .0
    }

    fn fixture(cache_tokens: u64, keys: &[&TestKey]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        let mut config = config(&secret);
        config.cache.tokens = cache_tokens;
        config.issuers[0].leeway = std::time::Duration::ZERO;
        config.servers.push(
            crate::config::Config::from_yaml(&format!(
                r#"
policies: {{dir: /x}}
issuers: [{{issuer: {ISS}, jwks_uri: "https://idp.test/jwks"}}]
servers:
  - id: other
    tenant: acme
    resource: https://mcp.example.com/other/mcp
    authorization_servers: [{ISS}]
"#
            ))
            .unwrap()
            .servers
            .remove(0),
        );
        let registry = Registry::new();
        let metrics = Metrics::new(&registry, &["demo", "other"]).unwrap();
        let issuer =
            IssuerKeys::with_static(config.issuers[0].clone(), jwks(keys), metrics.clone());
        let issuers = vec![
            issuer.clone(),
            IssuerKeys::with_static(config.issuers[1].clone(), jwks(keys), metrics.clone()),
            IssuerKeys::new(config.issuers[2].clone(), metrics.clone(), 1 << 20).unwrap(),
            IssuerKeys::with_static(config.issuers[3].clone(), jwks(keys), metrics.clone()),
        ];
        let policies =
            crate::policy::PolicyStore::open(&config.policies.dir, metrics.clone()).unwrap();
        let engine = Engine::new(&config, issuers, policies, metrics).unwrap();
        Fixture {
            engine,
            issuer,
            registry,
        }
    }

    impl Fixture {
        async fn check(&self, path: &str, token: &str) -> (u16, Option<String>) {
            let headers: HashMap<String, String> = HashMap::from([
                ("authorization".to_owned(), format!("Bearer {token}")),
                ("content-type".to_owned(), "application/json".to_owned()),
            ]);
            let input = CheckInput {
                method: "POST",
                path,
                host: "mcp.example.com",
                headers: &headers,
                body: crate::testutil::TOOLS_LIST.as_bytes(),
            };
            match self.engine.check(&input).await {
                Decision::Allow(_) => (200, None),
                Decision::Respond(r) => {
                    let www = r
                        .headers
                        .iter()
                        .find(|(k, _)| *k == "www-authenticate")
                        .map(|(_, v)| v.clone());
                    (r.status, www)
                }
            }
        }

        fn lookups(&self, result: &str) -> u64 {
            self.registry
                .gather()
                .iter()
                .find(|f| f.name() == "mcp_authz_token_cache_lookups_total")
                .and_then(|f| {
                    f.get_metric()
                        .iter()
                        .find(|m| m.get_label().iter().any(|l| l.value() == result))
                        .map(|m| m.get_counter().value() as u64)
                })
                .unwrap_or(0)
        }
    }

    #[tokio::test]
    async fn a_reused_token_is_verified_once() {
        let k = keys();
        let f = fixture(100, &[&k.rsa, &k.ec]);
        let token = k.rsa.token(&good());
        for _ in 0..5 {
            assert_eq!(f.check("/weather/mcp", &token).await.0, 200);
        }
        assert_eq!((f.lookups("miss"), f.lookups("hit")), (1, 4));
        f.engine.callers.settle();
        assert_eq!(f.engine.callers.len(), 1);
    }

    #[tokio::test]
    async fn a_cached_caller_keeps_its_digest_claims_and_audience() {
        use sha2::Digest as _;
        let k = keys();
        let f = fixture(100, &[&k.rsa]);
        let mut claims = good();
        claims["aud"] = serde_json::json!(["https://elsewhere.example", RESOURCE]);
        claims["nested"] = serde_json::json!({"a": [1, 2.5, null], "b": "x"});
        let token = k.rsa.token(&claims);
        let setup = f.engine.setup();
        let Route::Protected(server) = setup.servers().route("mcp.example.com", "/weather/mcp")
        else {
            panic!("routes")
        };
        let first = f.engine.callers.resolve(&token, server).await.unwrap();
        let again = f.engine.callers.resolve(&token, server).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the second resolve is a hit");
        let want: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        assert_eq!(first.digest(), &want);
        // The one form of the claims reads back as the token carried them.
        assert_eq!(Value::Object(first.identity().claims.to_map()), claims,);
        let crate::engine::Credential::Jwt(v) = first.credential() else {
            panic!("a JWT caller");
        };
        assert_eq!(
            &*v.audience,
            &["https://elsewhere.example".into(), RESOURCE.into()]
        );
    }

    #[tokio::test]
    async fn a_token_that_differs_in_one_character_is_not_a_hit() {
        let k = keys();
        let f = fixture(100, &[&k.rsa]);
        let token = k.rsa.token(&good());
        assert_eq!(f.check("/weather/mcp", &token).await.0, 200);
        // Same header and claims, one signature character changed: a different string, so a
        // miss and a full verification, which fails.
        let mut forged = token.clone().into_bytes();
        let i = forged.len() - 10;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        let (status, www) = f.check("/weather/mcp", &forged).await;
        assert_eq!(status, 401);
        assert!(www.unwrap().contains("invalid_token"));
        assert_eq!((f.lookups("miss"), f.lookups("hit")), (2, 0));
    }

    #[tokio::test]
    async fn a_cached_token_is_refused_once_its_key_leaves_the_set() {
        let k = keys();
        let f = fixture(100, &[&k.rsa, &k.ec]);
        let token = k.rsa.token(&good());
        assert_eq!(f.check("/weather/mcp", &token).await.0, 200);
        // Rotation: the RSA key is withdrawn.
        f.issuer.replace_keys(jwks(&[&k.ec]));
        let (status, www) = f.check("/weather/mcp", &token).await;
        assert_eq!(
            status, 401,
            "a withdrawn key must not keep verifying from the cache"
        );
        assert!(www.unwrap().contains("invalid_token"));
        assert_eq!(f.lookups("stale"), 1);
        // A different key under the same kid (a replaced key) is not the one that verified.
        f.issuer.replace_keys(jwks(&[&k.rsa_other, &k.ec]));
        assert_eq!(f.check("/weather/mcp", &token).await.0, 401);
        // The original key back: verified again from scratch, and cached again.
        f.issuer.replace_keys(jwks(&[&k.rsa, &k.ec]));
        assert_eq!(f.check("/weather/mcp", &token).await.0, 200);
        assert_eq!(f.check("/weather/mcp", &token).await.0, 200);
        assert_eq!(f.lookups("hit"), 1);
    }

    #[tokio::test]
    async fn a_cached_token_is_checked_against_each_server_and_expiry() {
        let k = keys();
        let f = fixture(100, &[&k.rsa]);
        let token = k.rsa.token(&good());
        assert_eq!(f.check("/weather/mcp", &token).await.0, 200);
        // Cached for the weather server; the other server is not in its audience.
        let (status, www) = f.check("/other/mcp", &token).await;
        assert_eq!(status, 401);
        assert!(www.unwrap().contains("invalid_token"));
        // A token that expires in one second (no leeway configured) stops working from the
        // cache as it would without it.
        let short = k.rsa.token(&with(good(), "exp", json!(now() + 1)));
        assert_eq!(f.check("/weather/mcp", &short).await.0, 200);
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let (status, www) = f.check("/weather/mcp", &short).await;
        assert_eq!(status, 401);
        assert!(www.unwrap().contains("expired"));
    }

    #[tokio::test]
    async fn the_cache_is_bounded_and_can_be_turned_off() {
        let k = keys();
        let f = fixture(50, &[&k.ec]);
        for i in 0..400 {
            let token = k.ec.token(&with(good(), "jti", json!(format!("t-{i}"))));
            assert_eq!(f.check("/weather/mcp", &token).await.0, 200);
        }
        f.engine.callers.settle();
        let held = f.engine.callers.len();
        assert!(held <= 50, "{held} entries held with a bound of 50");

        let off = fixture(0, &[&k.ec]);
        let token = k.ec.token(&good());
        for _ in 0..3 {
            assert_eq!(off.check("/weather/mcp", &token).await.0, 200);
        }
        assert_eq!((off.lookups("miss"), off.lookups("hit")), (3, 0));
    }
}

#[tokio::test]
async fn the_decision_id_header_is_the_configured_one_on_allows_and_denials() {
    let engine = engine_with(|c| c.identity_headers.decision_id = "x-trace-decision".into());
    let check = |auth: Option<String>| {
        let mut headers =
            HashMap::from([("content-type".to_owned(), "application/json".to_owned())]);
        if let Some(auth) = auth {
            headers.insert("authorization".to_owned(), auth);
        }
        headers
    };

    let denied = check(None);
    let input = CheckInput {
        method: "POST",
        path: "/weather/mcp",
        host: "mcp.example.com",
        headers: &denied,
        body: crate::testutil::TOOLS_LIST.as_bytes(),
    };
    let Decision::Respond(r) = engine.check(&input).await else {
        panic!("no token must be denied")
    };
    assert_eq!(r.status, 401);
    let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(decision_header(&names), Some("x-trace-decision"));
    assert!(
        r.headers
            .contains(&("x-trace-decision".into(), r.decision_id.clone()))
    );

    let allowed = check(Some(format!("Bearer {}", keys().rsa.token(&good()))));
    let input = CheckInput {
        headers: &allowed,
        ..input
    };
    let Decision::Allow(a) = engine.check(&input).await else {
        panic!("a good token must be allowed")
    };
    let names: Vec<&str> = a.set_headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(decision_header(&names), Some("x-trace-decision"));
    assert!(
        a.set_headers
            .contains(&("x-trace-decision".into(), a.decision_id.clone()))
    );
}

/// An engine of its own over the test configuration after `edit`, every issuer serving the
/// `rsa` key (no HMAC secret needed).
fn engine_with(edit: impl FnOnce(&mut Config)) -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let mut config = config(&secret);
    edit(&mut config);
    let metrics = crate::metrics::Metrics::unregistered();
    let jwks = json!({"keys": [keys().rsa.public_jwk()]}).to_string();
    let issuers = config
        .issuers
        .iter()
        .map(|i| {
            let set = KeySet::from_jwks(jwks.as_bytes(), &[Algorithm::RS256]).unwrap();
            IssuerKeys::with_static(i.clone(), set.0, metrics.clone())
        })
        .collect();
    let policies = crate::policy::PolicyStore::open(&config.policies.dir, metrics.clone()).unwrap();
    Engine::new(&config, issuers, policies, metrics).unwrap()
}

/// The one header whose name mentions the decision (none or several is a failure).
fn decision_header<'a>(names: &[&'a str]) -> Option<&'a str> {
    let mut named = names.iter().filter(|k| k.contains("decision"));
    let first = named.next().copied();
    assert!(
        named.next().is_none(),
        "several decision headers: {names:?}"
    );
    first
}

/// Typed arguments through a whole check: a traversal form or a value of the wrong type is a
/// 400 with JSON-RPC -32602 (no challenge: no scope would help), a good call is allowed.
#[tokio::test]
async fn arguments_that_do_not_fit_the_declared_tool_are_invalid_params() {
    let token = keys().rsa.token(&with(
        good(),
        "scope",
        json!("mcp:connect mcp:tools:files mcp:tools:weather"),
    ));
    let auth = format!("Bearer {token}");
    let call = |name: &str, arguments: Value| {
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": name, "arguments": arguments}})
        .to_string()
    };
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    for (body, status, code) in [
        (
            call("read_file", json!({"path": "/srv/shared/a.txt"})),
            200,
            None,
        ),
        (
            call(
                "read_file",
                json!({"path": "/srv/shared/%2e%2e/%2e%2e/etc/passwd"}),
            ),
            400,
            Some(-32602),
        ),
        (
            call(
                "read_file",
                json!({"path": "/srv/shared/a", "opts": {"path": "/etc/passwd"}}),
            ),
            400,
            Some(-32602),
        ),
        (
            call("get_forecast", json!({"city": "Paris", "days": 9})),
            200,
            None,
        ),
        (
            call("get_forecast", json!({"city": "Paris", "days": "9"})),
            400,
            Some(-32602),
        ),
        (
            call("get_forecast", json!({"city": "Paris", "days": 100})),
            403,
            None,
        ),
    ] {
        let a = run("POST", "/weather/mcp", &headers, body.as_bytes()).await;
        assert_eq!(a.status, status, "{body}: {a:?}");
        assert!(a.www_authenticate.is_none(), "{body}: {a:?}");
        if let Some(code) = code {
            let v: Value = serde_json::from_str(&a.body).unwrap();
            assert_eq!(v["error"]["code"], code, "{}", a.body);
            assert_eq!(v["jsonrpc"], "2.0");
            assert!(
                !a.body.contains("etc/passwd"),
                "the value is echoed: {}",
                a.body
            );
        }
    }
}

/// Step-up challenges through whole checks, under each `servers[].step_up.scope` rule.
mod step_up {
    use super::*;
    use crate::config::StepUpScope;

    fn engine(rule: StepUpScope) -> Engine {
        engine_with(|c| c.servers[0].step_up.scope = rule)
    }

    /// The status and `WWW-Authenticate` of a POST of `body` with a token holding `scope`.
    async fn check(engine: &Engine, scope: &str, body: &str) -> (u16, Option<String>) {
        let token = keys().rsa.token(&with(good(), "scope", json!(scope)));
        let headers = HashMap::from([
            ("authorization".to_owned(), format!("Bearer {token}")),
            ("content-type".to_owned(), "application/json".to_owned()),
        ]);
        let input = CheckInput {
            method: "POST",
            path: "/weather/mcp",
            host: "mcp.example.com",
            headers: &headers,
            body: body.as_bytes(),
        };
        match engine.check(&input).await {
            Decision::Allow(_) => (200, None),
            Decision::Respond(r) => {
                let www = r
                    .headers
                    .iter()
                    .find(|(k, _)| *k == "www-authenticate")
                    .map(|(_, v)| v.clone());
                (r.status, www)
            }
        }
    }

    fn step_up(scope: &str) -> Option<String> {
        Some(format!(
            "Bearer error=\"insufficient_scope\", error_description=\"additional scopes are required\", scope=\"{scope}\", resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/weather/mcp\""
        ))
    }

    const FORECAST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris"}}}"#;
    /// A 2025-03-26 batch: a session method the token allows and two tools it does not.
    const BATCH: &str = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},
        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/shared/a"}}},
        {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris"}}}]"#;

    #[tokio::test]
    async fn operation_names_what_the_operation_needs() {
        let e = engine(StepUpScope::Operation);
        // mcp:tools:files is granted, supported and unrelated; `openid` is not the server's.
        let (status, www) = check(&e, "mcp:connect mcp:tools:files openid", FORECAST).await;
        assert_eq!(status, 403);
        assert_eq!(www, step_up("mcp:tools:weather"));
        // What the client holds after following it is allowed.
        let held = "mcp:connect mcp:tools:files openid mcp:tools:weather";
        assert_eq!(check(&e, held, FORECAST).await.0, 200);
    }

    #[tokio::test]
    async fn granted_and_operation_keeps_the_granted_scopes_the_server_knows() {
        let e = engine(StepUpScope::GrantedAndOperation);
        let (status, www) = check(&e, "mcp:connect mcp:tools:files openid", FORECAST).await;
        assert_eq!(status, 403);
        assert_eq!(
            www,
            step_up("mcp:connect mcp:tools:weather mcp:tools:files")
        );
        // A client that replaces its scopes with the challenge's is allowed.
        let replaced = "mcp:connect mcp:tools:weather mcp:tools:files";
        assert_eq!(check(&e, replaced, FORECAST).await.0, 200);
    }

    #[tokio::test]
    async fn a_batch_names_what_its_denied_messages_need_together() {
        let e = engine(StepUpScope::Operation);
        let (status, www) = check(&e, "mcp:connect", BATCH).await;
        assert_eq!(status, 403);
        assert_eq!(www, step_up("mcp:tools:weather mcp:tools:files"));
        let held = "mcp:connect mcp:tools:weather mcp:tools:files";
        assert_eq!(check(&e, held, BATCH).await.0, 200);

        let e = engine(StepUpScope::GrantedAndOperation);
        let (status, www) = check(&e, "mcp:connect", BATCH).await;
        assert_eq!(status, 403);
        assert_eq!(
            www,
            step_up("mcp:connect mcp:tools:weather mcp:tools:files")
        );
    }

    #[tokio::test]
    async fn a_batch_with_a_message_no_scope_helps_is_a_plain_403_under_either_rule() {
        let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris"}}},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"unknown_tool"}}]"#;
        for rule in [StepUpScope::Operation, StepUpScope::GrantedAndOperation] {
            let (status, www) = check(&engine(rule), "mcp:connect", body).await;
            assert_eq!((status, www), (403, None), "{rule:?}");
        }
    }
}

/// A path another hop would normalise to a different server or tenant is refused before
/// routing, whatever the token (issue 11: `/a/mcp/../../b/mcp` was evaluated as server `a`).
#[tokio::test]
async fn paths_with_dot_segments_or_encoded_slashes_are_refused() {
    let token = keys().rsa.token(&good());
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let body = crate::testutil::TOOLS_LIST.as_bytes();
    assert_eq!(
        run("POST", "/weather/mcp", &headers, body).await.status,
        200
    );
    for path in [
        "/weather/mcp/../../other/mcp",
        "/weather/mcp/%2e%2e/%2e%2e/other/mcp",
        "/weather/mcp/..%2f..%2fother/mcp",
        "/weather/mcp/./",
    ] {
        let a = run("POST", path, &headers, body).await;
        assert_eq!(a.status, 400, "{path}: {a:?}");
        assert!(a.allow.is_none());
        assert!(a.body.contains("dot segments"), "{}", a.body);
    }
    // The tenant taken from a path segment cannot be steered by one either.
    let engine = engine_with(|c| {
        c.servers[0].tenant = None;
        c.servers[0].tenant_from = Some(crate::config::TenantFrom::PathSegment(1));
        c.servers[0].matching.path_prefix = Some("/".into());
    });
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (path, status) in [("/acme/mcp", 200), ("/acme/../globex/mcp", 400)] {
        let input = CheckInput {
            method: "POST",
            path,
            host: "mcp.example.com",
            headers: &headers,
            body,
        };
        let got = match engine.check(&input).await {
            Decision::Allow(_) => 200,
            Decision::Respond(r) => r.status,
        };
        assert_eq!(got, status, "{path}");
    }
}

/// A server with `upstream_identity` gets a signed identity (for its audience, `jti` = the
/// decision id, the request's method and target); every allow removes a client's copy of the
/// header (and its underscore look-alike) wherever the server has none.
#[tokio::test]
async fn upstream_identity_is_signed_for_its_servers_and_a_client_copy_never_passes() {
    use crate::config::{GenerateKeys, ServerIdentityConfig, UpstreamIdentityConfig, UpstreamKeys};
    const ISSUER: &str = "http://mcp-authz.test:9090";
    let section = UpstreamIdentityConfig {
        issuer: ISSUER.into(),
        keys: UpstreamKeys::Generate(GenerateKeys::default()),
        lifetime: std::time::Duration::from_secs(60),
        header: "x-mcp-authz-identity".into(),
    };
    let check = |engine: Engine| async move {
        let headers = HashMap::from([
            ("content-type".to_owned(), "application/json".to_owned()),
            (
                "authorization".to_owned(),
                format!("Bearer {}", keys().rsa.token(&good())),
            ),
            ("x-mcp-authz-identity".to_owned(), "forged".to_owned()),
            ("x_mcp_authz_identity".to_owned(), "forged".to_owned()),
        ]);
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"summary"}}"#;
        let input = CheckInput {
            method: "POST",
            path: "/weather/mcp",
            host: "mcp.example.com",
            headers: &headers,
            body: body.as_bytes(),
        };
        let Decision::Allow(a) = engine.check(&input).await else {
            panic!("a good token must be allowed")
        };
        (engine, a)
    };

    let with = section.clone();
    let engine = engine_with(move |c| {
        c.upstream_identity = Some(with);
        c.servers[0].upstream_identity = Some(ServerIdentityConfig {
            audience: "http://weather.test".into(),
        });
    });
    let (engine, a) = check(engine).await;
    let signed: Vec<_> = a
        .set_headers
        .iter()
        .filter(|(k, _)| k == "x-mcp-authz-identity")
        .collect();
    assert_eq!(signed.len(), 1, "{:?}", a.set_headers);
    let issuer = engine.upstream_identity().unwrap();
    let claims = crate::testutil::verify_upstream_identity(
        &signed[0].1,
        &issuer.jwks_json(),
        ISSUER,
        "http://weather.test",
    )
    .unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["jti"], a.decision_id.as_str());
    assert_eq!(
        claims["mcp"],
        json!([{"method": "prompts/get", "target": "summary"}])
    );
    assert!(
        a.remove_headers
            .contains(&"x_mcp_authz_identity".to_owned())
    );
    assert!(
        !a.remove_headers
            .contains(&"x-mcp-authz-identity".to_owned()),
        "set (overwriting), not removed"
    );

    // The section without this server in it: the header is removed, nothing minted.
    let engine = engine_with(move |c| c.upstream_identity = Some(section));
    let (_, a) = check(engine).await;
    assert!(
        a.set_headers
            .iter()
            .all(|(k, _)| k != "x-mcp-authz-identity")
    );
    for name in ["x-mcp-authz-identity", "x_mcp_authz_identity"] {
        assert!(a.remove_headers.contains(&name.to_owned()), "{name}");
    }
}

mod dpop;
