//! DPoP through whole checks (RFC 9449 s7): how a bound token must be presented, what each
//! refusal answers (status, scheme, error, `DPoP-Nonce`), step-up in the DPoP scheme, servers
//! that require DPoP, and the PRM document's DPoP members.

use super::*;
use crate::testutil::TOOLS_LIST;

const FORECAST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris"}}}"#;

/// The test configuration, with a second server (`strict`, `token_binding: dpop`) and, when
/// `nonce` holds, server nonces.
fn dpop_engine(nonce: bool) -> Engine {
    engine_with(|c| {
        let mut strict = c.servers[0].clone();
        strict.id = "strict".into();
        strict.resource = "https://mcp.example.com/strict/mcp".into();
        strict.token_binding = crate::config::TokenBinding::Dpop;
        c.servers.push(strict);
        if nonce {
            c.dpop.nonce = Some(crate::config::NonceConfig {
                secret: None,
                slot: std::time::Duration::from_secs(60),
            });
        }
    })
}

/// A token bound to `proof_key` (`cnf.jkt`), for `resource`, signed by the issuer.
fn bound_token(proof_key: &TestKey, resource: &str, scope: &str) -> String {
    let c = with(
        claims(ISS, resource),
        "cnf",
        json!({"jkt": proof_key.jkt()}),
    );
    keys().rsa.token(&with(c, "scope", json!(scope)))
}

async fn call(engine: &Engine, path: &str, auth: &str, proof: Option<&str>, body: &str) -> Answer {
    let mut headers = vec![
        ("authorization", auth),
        ("content-type", "application/json"),
    ];
    if let Some(p) = proof {
        headers.push(("dpop", p));
    }
    run_on(engine, "POST", path, &headers, body.as_bytes()).await
}

/// A DPoP request for `token` with a fresh proof by `key` naming `resource`.
async fn with_proof(
    engine: &Engine,
    path: &str,
    resource: &str,
    key: &TestKey,
    token: &str,
    body: &str,
) -> Answer {
    let p = key.dpop_proof("POST", resource, token, now(), &json!({}));
    call(engine, path, &format!("DPoP {token}"), Some(&p), body).await
}

fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_bound_token_with_its_proof_is_allowed_and_every_other_presentation_refused() {
    let engine = dpop_engine(false);
    let key = TestKey::ec("proof");
    let token = bound_token(&key, RESOURCE, "mcp:connect");
    let proof = |extra: Value| key.dpop_proof("POST", RESOURCE, &token, now(), &extra);
    let dpop = format!("DPoP {token}");

    let p = proof(json!({}));
    let a = call(&engine, "/weather/mcp", &dpop, Some(&p), TOOLS_LIST).await;
    let allow = a.allow.expect("a bound token with its proof is allowed");
    // Neither the token nor its proof reaches the upstream.
    assert!(allow.remove_headers.contains(&"authorization".to_string()));
    assert!(allow.remove_headers.contains(&"dpop".to_string()));

    // The same proof again: a replay.
    let a = call(&engine, "/weather/mcp", &dpop, Some(&p), TOOLS_LIST).await;
    assert_eq!(
        (a.status, a.error.as_deref()),
        (401, Some("invalid_dpop_proof"))
    );
    let www = a.www_authenticate.unwrap();
    assert!(
        www.starts_with(
            "DPoP algs=\"ES256 ES384 PS256 RS256 EdDSA\", error=\"invalid_dpop_proof\""
        ),
        "{www}"
    );
    assert!(www.contains("resource_metadata=\""), "{www}");
    assert!(a.body.contains("already used"), "{}", a.body);

    // Each refusal, and what it answers.
    let stranger = TestKey::ec("stranger");
    let other_key_proof = stranger.dpop_proof("POST", RESOURCE, &token, now(), &json!({}));
    let cases: Vec<(&str, Option<String>, &str, &str)> = vec![
        (
            "no proof",
            None,
            "invalid_dpop_proof",
            "DPoP proof is required",
        ),
        (
            "no ath",
            Some(proof(json!({"ath": null}))),
            "invalid_dpop_proof",
            "lacks",
        ),
        (
            "another URL",
            Some(proof(json!({"htu": "https://mcp.example.com/strict/mcp"}))),
            "invalid_dpop_proof",
            "another URI",
        ),
        (
            "another method",
            Some(proof(json!({"htm": "GET"}))),
            "invalid_dpop_proof",
            "another HTTP method",
        ),
        (
            "stale",
            Some(proof(json!({"iat": now() - 3600}))),
            "invalid_dpop_proof",
            "too old",
        ),
        (
            "another key",
            Some(other_key_proof),
            "invalid_dpop_proof",
            "not the key",
        ),
    ];
    for (what, p, error, words) in cases {
        let a = call(&engine, "/weather/mcp", &dpop, p.as_deref(), TOOLS_LIST).await;
        assert_eq!((a.status, a.error.as_deref()), (401, Some(error)), "{what}");
        assert!(a.body.contains(words), "{what}: {}", a.body);
    }

    // RFC 9449 s7.2: the bound token as Bearer is refused, even with a valid proof beside it.
    let p = proof(json!({}));
    let a = call(
        &engine,
        "/weather/mcp",
        &format!("Bearer {token}"),
        Some(&p),
        TOOLS_LIST,
    )
    .await;
    assert_eq!((a.status, a.error.as_deref()), (401, Some("invalid_token")));
    assert!(a.www_authenticate.unwrap().starts_with("DPoP algs="));

    // An unbound token in the DPoP scheme is refused: there is no key to check a proof against.
    let plain = keys().rsa.token(&good());
    let p = key.dpop_proof("POST", RESOURCE, &plain, now(), &json!({}));
    let a = call(
        &engine,
        "/weather/mcp",
        &format!("DPoP {plain}"),
        Some(&p),
        TOOLS_LIST,
    )
    .await;
    assert_eq!((a.status, a.error.as_deref()), (401, Some("invalid_token")));
    assert!(a.body.contains("not DPoP-bound"), "{}", a.body);

    // A bad token in the DPoP scheme is answered in the DPoP scheme.
    let a = call(
        &engine,
        "/weather/mcp",
        "DPoP abc.def.ghi",
        None,
        TOOLS_LIST,
    )
    .await;
    assert_eq!((a.status, a.error.as_deref()), (401, Some("invalid_token")));
    assert!(a.www_authenticate.unwrap().starts_with("DPoP algs="));
}

#[tokio::test]
async fn step_up_for_a_dpop_request_is_a_dpop_challenge() {
    let engine = dpop_engine(false);
    let key = TestKey::ec("proof");
    let token = bound_token(&key, RESOURCE, "mcp:connect");
    let a = with_proof(&engine, "/weather/mcp", RESOURCE, &key, &token, FORECAST).await;
    assert_eq!(
        (a.status, a.error.as_deref()),
        (403, Some("insufficient_scope"))
    );
    let www = a.www_authenticate.unwrap();
    assert!(www.starts_with("DPoP algs="), "{www}");
    assert!(www.contains("scope=\"mcp:tools:weather\""), "{www}");
    // With the scope, the same call passes.
    let token = bound_token(&key, RESOURCE, "mcp:connect mcp:tools:weather");
    let a = with_proof(&engine, "/weather/mcp", RESOURCE, &key, &token, FORECAST).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn a_server_that_requires_dpop_refuses_bearer_and_says_so() {
    let engine = dpop_engine(false);
    const STRICT: &str = "https://mcp.example.com/strict/mcp";
    // No credentials: the challenge is DPoP's, with the algorithms.
    let a = run_on(&engine, "POST", "/strict/mcp", &[], b"{}").await;
    assert_eq!((a.status, a.error), (401, None));
    let www = a.www_authenticate.unwrap();
    assert!(
        www.starts_with(
            "DPoP algs=\"ES256 ES384 PS256 RS256 EdDSA\", scope=\"mcp:connect\", resource_metadata="
        ),
        "{www}"
    );
    // An unbound Bearer token, valid for this server: refused.
    let plain = keys().rsa.token(&claims(ISS, STRICT));
    let a = call(
        &engine,
        "/strict/mcp",
        &format!("Bearer {plain}"),
        None,
        TOOLS_LIST,
    )
    .await;
    assert_eq!((a.status, a.error.as_deref()), (401, Some("invalid_token")));
    assert!(a.body.contains("only DPoP-bound"), "{}", a.body);
    // A bound token with its proof: allowed.
    let key = TestKey::ed("proof");
    let token = bound_token(&key, STRICT, "mcp:connect");
    let a = with_proof(&engine, "/strict/mcp", STRICT, &key, &token, TOOLS_LIST).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // The other server still takes Bearer tokens, and its 401 stays a Bearer challenge.
    let a = with_token_on(&engine, &keys().rsa.token(&good())).await;
    assert_eq!(a.status, 200);
    let a = run_on(&engine, "POST", "/weather/mcp", &[], b"{}").await;
    assert!(a.www_authenticate.unwrap().starts_with("Bearer "));
}

async fn with_token_on(engine: &Engine, token: &str) -> Answer {
    call(
        engine,
        "/weather/mcp",
        &format!("Bearer {token}"),
        None,
        TOOLS_LIST,
    )
    .await
}

#[tokio::test]
async fn the_nonce_flow_gives_a_nonce_then_accepts_proofs_that_carry_it() {
    let engine = dpop_engine(true);
    let key = TestKey::ec("proof");
    let token = bound_token(&key, RESOURCE, "mcp:connect");
    let dpop = format!("DPoP {token}");
    let p = key.dpop_proof("POST", RESOURCE, &token, now(), &json!({}));
    let a = call(&engine, "/weather/mcp", &dpop, Some(&p), TOOLS_LIST).await;
    assert_eq!(
        (a.status, a.error.as_deref()),
        (401, Some("use_dpop_nonce"))
    );
    assert!(
        a.www_authenticate
            .as_deref()
            .unwrap()
            .starts_with("DPoP algs=")
    );
    let nonce = header(&a, "dpop-nonce")
        .expect("a DPoP-Nonce header")
        .to_owned();
    assert!(
        header(&a, "access-control-expose-headers")
            .unwrap()
            .contains("DPoP-Nonce")
    );
    let p = key.dpop_proof("POST", RESOURCE, &token, now(), &json!({"nonce": nonce}));
    let a = call(&engine, "/weather/mcp", &dpop, Some(&p), TOOLS_LIST).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // A nonce this server never issued is answered with a fresh one, not accepted.
    let p = key.dpop_proof("POST", RESOURCE, &token, now(), &json!({"nonce": "forged"}));
    let a = call(&engine, "/weather/mcp", &dpop, Some(&p), TOOLS_LIST).await;
    assert_eq!(a.error.as_deref(), Some("use_dpop_nonce"));
}

#[tokio::test]
async fn the_prm_document_advertises_dpop() {
    let engine = dpop_engine(false);
    for (path, required) in [
        ("/.well-known/oauth-protected-resource/weather/mcp", false),
        ("/.well-known/oauth-protected-resource/strict/mcp", true),
    ] {
        let a = run_on(&engine, "GET", path, &[], b"").await;
        let prm: Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(
            prm["dpop_signing_alg_values_supported"],
            json!(["ES256", "ES384", "PS256", "RS256", "EdDSA"]),
            "{path}"
        );
        assert_eq!(
            prm.get("dpop_bound_access_tokens_required").is_some(),
            required,
            "{path}"
        );
        if required {
            assert_eq!(prm["dpop_bound_access_tokens_required"], true);
        }
    }
}
