//! DPoP (RFC 9449) against a real OpenID provider nobody here wrote: node-oidc-provider issues
//! DPoP-bound access tokens (`cnf.jkt`) to a client-credentials request that carries a proof,
//! and the `mcp-authz` binary checks every presentation of them over Envoy's gRPC API: a valid
//! proof, a replayed one, none, one without `ath`, one for another URL or method, a stale one,
//! one by another key, the bound token sent as Bearer, and the nonce flow across two replicas
//! that share the nonce secret (a nonce one replica issued is accepted by the other). Then the
//! same token through the shipped Envoy configuration: the proof names the URL the client used,
//! Envoy forwards the `DPoP` header to the check, and neither header reaches the upstream.
//! Last, an opaque DPoP-bound token, whose binding arrives in the introspection answer.
//!
//! Needs `node` with `tests/e2e/oauth/node_modules` (`scripts/test` runs `npm ci`);
//! `MCP_AUTHZ_SKIP_ENVOY=1` skips outside CI.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should stop the test"
)]

use std::net::SocketAddr;
use std::path::Path;

use base64::Engine as _;
use mcp_authz::testutil::{
    CheckAnswer, TOOLS_LIST, TestKey, free_port, grpc_check_body, node, now, spawn, start_provider,
    start_shipped_envoy, wait_http,
};
use serde_json::{Value, json};
use tokio::process::Child;

/// One `mcp-authz` serving checks for `resource`, trusting `issuer`; `nonce_secret` turns the
/// server nonces on.
async fn start_mcp_authz(
    dir: &Path,
    name: &str,
    issuer: &str,
    resource: &str,
    nonce_secret: Option<&Path>,
    introspection: Option<&Path>,
) -> (Child, SocketAddr) {
    let (grpc, admin, admin_grpc) = (free_port(), free_port(), free_port());
    let nonce = nonce_secret.map_or(String::new(), |f| {
        format!(
            "dpop: {{nonce: {{secret: {{file: {}}}, slot: 60s}}}}",
            f.display()
        )
    });
    // Opaque tokens: introspected with the resource server's own credentials; a client
    // credentials token has no account, so its introspection answer names the client only.
    let introspection = introspection.map_or(String::new(), |secret| {
        format!(
            "introspection: {{client_id: rs-basic, client_secret: {{file: {}}}}}\n    claims: {{tenant: tenant, subject: client_id}}",
            secret.display()
        )
    });
    let claims = if introspection.is_empty() {
        "claims: {tenant: tenant}"
    } else {
        ""
    };
    let config = format!(
        r#"
policies: {{dir: {policies}}}
listen: {{grpc: "127.0.0.1:{grpc}", admin: "127.0.0.1:{admin}", admin_grpc: "127.0.0.1:{admin_grpc}"}}
issuers:
  - issuer: {issuer}
    algorithms: [RS256, ES256]
    {claims}
    {introspection}
servers:
  - id: demo
    tenant: acme
    resource: {resource}
    authorization_servers: [{issuer}]
    scopes_supported: [mcp:connect, mcp:tools:weather]
    match: {{hosts: ["*"]}}
{nonce}
{overload}
"#,
        overload = mcp_authz::testutil::TEST_OVERLOAD,
        policies = dir.join("policies").display(),
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).unwrap();
    let child = spawn(
        Path::new(env!("CARGO_BIN_EXE_mcp-authz")),
        &["serve", "--config", path.to_str().unwrap()],
        &dir.join(format!("{name}.log")),
        dir,
    );
    wait_http(&format!("http://127.0.0.1:{admin}/readyz"), name).await;
    (child, SocketAddr::from(([127, 0, 0, 1], grpc)))
}

/// A client-credentials token for `resource`, bound to `key` by a DPoP proof on the token
/// request (RFC 9449 s5).
async fn bound_token(issuer: &str, resource: &str, key: &TestKey) -> Value {
    bound_token_for(issuer, resource, key, ("py-client", "py-secret")).await
}

/// [`bound_token`] for another client (`opaque-client` gets opaque tokens).
async fn bound_token_for(
    issuer: &str,
    resource: &str,
    key: &TestKey,
    client: (&str, &str),
) -> Value {
    let endpoint = format!("{issuer}/token");
    // At the token endpoint there is no access token yet: no `ath`.
    let proof = key.dpop_proof("POST", &endpoint, "", now(), &json!({"ath": null}));
    let response = reqwest::Client::new()
        .post(&endpoint)
        .basic_auth(client.0, Some(client.1))
        .header("dpop", proof)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(token_request(resource))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// A client-credentials token request body for `resource` (RFC 8707).
fn token_request(resource: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("scope", "mcp:connect")
        .append_pair("resource", resource)
        .finish()
}

async fn check(addr: SocketAddr, authorization: &str, proof: Option<&str>) -> CheckAnswer {
    let auth = format!("authorization: {authorization}");
    let dpop = proof.map(|p| format!("dpop: {p}"));
    let mut headers = vec![auth.as_str(), "content-type: application/json"];
    if let Some(d) = &dpop {
        headers.push(d);
    }
    grpc_check_body(
        addr,
        "POST",
        "127.0.0.1",
        "/mcp",
        None,
        &headers,
        TOOLS_LIST,
    )
    .await
}

/// A `ping` the shipped policies allow with `mcp:connect` (not a list call, whose response the
/// list filter would read).
const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// An upstream that answers every request with the headers it received, as JSON.
async fn echo_upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        let map: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        axum::Json(json!({ "upstream": true, "headers": map }))
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn description(a: &CheckAnswer) -> String {
    let body: Value = serde_json::from_str(&a.body).unwrap_or_default();
    body["error_description"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn dpop_bound_tokens_from_a_real_provider() {
    let (Some(node), Some(envoy_bin)) = (node(), mcp_authz::testutil::envoy_binary()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    mcp_authz::testutil::copy_shipped_policies(&policies);
    let provider_port = free_port();
    let issuer = format!("http://127.0.0.1:{provider_port}");
    // The resource is served by Envoy's listener: the URL clients use, which `htu` names.
    let listener = free_port();
    let resource = format!("http://127.0.0.1:{listener}/mcp");
    let _provider = start_provider(&node, provider_port, &[], dir.path()).await;
    let (_plain, plain) =
        start_mcp_authz(dir.path(), "plain", &issuer, &resource, None, None).await;
    let upstream = echo_upstream().await;
    let envoy_admin = free_port();
    let _envoy = start_shipped_envoy(
        &envoy_bin,
        dir.path(),
        listener,
        &[plain.port()],
        upstream,
        envoy_admin,
    )
    .await;

    let key = TestKey::ec("client-proof-key");
    let response = bound_token(&issuer, &resource, &key).await;
    assert_eq!(response["token_type"], "DPoP", "{response}");
    let token = response["access_token"].as_str().unwrap().to_owned();
    // The provider bound it to the proof's key.
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["cnf"]["jkt"], key.jkt(), "{claims}");

    let dpop = format!("DPoP {token}");
    let proof = |extra: Value| key.dpop_proof("POST", &resource, &token, now(), &extra);

    // A valid proof: allowed, and neither the token nor the proof goes upstream.
    let p = proof(json!({}));
    let a = check(plain, &dpop, Some(&p)).await;
    assert!(a.allowed, "{a:?}");
    assert!(a.removed.contains(&"authorization".to_string()));
    assert!(a.removed.contains(&"dpop".to_string()));

    // The same proof again.
    let a = check(plain, &dpop, Some(&p)).await;
    assert_eq!(
        (a.status, a.error().as_deref()),
        (401, Some("invalid_dpop_proof"))
    );
    assert!(
        a.headers["www-authenticate"].starts_with("DPoP algs=\""),
        "{a:?}"
    );
    assert_eq!(description(&a), "the DPoP proof was already used");

    let stranger = TestKey::ec("stranger");
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        (
            "missing",
            None,
            "a DPoP proof is required with DPoP-bound access tokens",
        ),
        (
            "without ath",
            Some(proof(json!({"ath": null}))),
            "the DPoP proof lacks jti, htm, htu, iat or ath, or one is malformed",
        ),
        (
            "for another URL",
            Some(proof(json!({"htu": format!("{resource}/other")}))),
            "the DPoP proof is for another URI",
        ),
        (
            "for another method",
            Some(proof(json!({"htm": "GET"}))),
            "the DPoP proof is for another HTTP method",
        ),
        (
            "stale",
            Some(proof(json!({"iat": now() - 300}))),
            "the DPoP proof is too old",
        ),
        (
            "by another key",
            Some(stranger.dpop_proof("POST", &resource, &token, now(), &json!({}))),
            "the DPoP proof key is not the key the access token is bound to",
        ),
    ];
    for (what, p, words) in cases {
        let a = check(plain, &dpop, p.as_deref()).await;
        assert_eq!(
            (a.status, a.error().as_deref()),
            (401, Some("invalid_dpop_proof")),
            "{what}: {a:?}"
        );
        assert_eq!(description(&a), words, "{what}");
    }

    // RFC 9449 s7.2: the bound token as a Bearer token, with or without a proof beside it.
    for p in [None, Some(proof(json!({})))] {
        let a = check(plain, &format!("Bearer {token}"), p.as_deref()).await;
        assert_eq!(
            (a.status, a.error().as_deref()),
            (401, Some("invalid_token")),
            "{a:?}"
        );
        assert!(
            a.headers["www-authenticate"].starts_with("DPoP algs="),
            "{a:?}"
        );
    }

    // A Bearer token from the same provider (no proof on the token request) still works.
    let bearer: Value = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth("py-client", Some("py-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(token_request(&resource))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bearer["token_type"], "Bearer", "{bearer}");
    let a = check(
        plain,
        &format!("Bearer {}", bearer["access_token"].as_str().unwrap()),
        None,
    )
    .await;
    assert!(a.allowed, "{a:?}");

    // Through Envoy: a valid proof reaches the upstream, which sees neither the token nor the
    // proof; a proof for another path, or the token as Bearer, is answered 401 by Envoy with
    // the DPoP challenge.
    let through_envoy = |authorization: String, proof: Option<String>| {
        let resource = resource.clone();
        async move {
            let mut request = reqwest::Client::new()
                .post(&resource)
                .header("authorization", authorization)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(CALL);
            if let Some(p) = proof {
                request = request.header("dpop", p);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let www = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, www, response.text().await.unwrap())
        }
    };
    let (status, _, body) = through_envoy(dpop.clone(), Some(proof(json!({})))).await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["upstream"], true, "{body}");
    assert!(seen["headers"].get("authorization").is_none(), "{body}");
    assert!(seen["headers"].get("dpop").is_none(), "{body}");
    assert_eq!(
        seen["headers"]["x-mcp-authz-subject"], "py-client",
        "{body}"
    );
    let elsewhere = proof(json!({"htu": format!("http://127.0.0.1:{listener}/elsewhere")}));
    let (status, www, body) = through_envoy(dpop.clone(), Some(elsewhere)).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        www.as_deref().unwrap_or_default().starts_with("DPoP algs=")
            && body.contains("another URI"),
        "{www:?} {body}"
    );
    let (status, www, _) = through_envoy(format!("Bearer {token}"), Some(proof(json!({})))).await;
    assert_eq!(status, 401);
    assert!(www.unwrap().contains("error=\"invalid_token\""));

    // The nonce flow, across two replicas sharing the secret.
    let secret = dir.path().join("nonce-secret");
    std::fs::write(&secret, "a nonce secret shared by every replica, 32+ bytes").unwrap();
    let (_a, replica_a) = start_mcp_authz(
        dir.path(),
        "replica-a",
        &issuer,
        &resource,
        Some(&secret),
        None,
    )
    .await;
    let (_b, replica_b) = start_mcp_authz(
        dir.path(),
        "replica-b",
        &issuer,
        &resource,
        Some(&secret),
        None,
    )
    .await;
    let a = check(replica_a, &dpop, Some(&proof(json!({})))).await;
    assert_eq!(
        (a.status, a.error().as_deref()),
        (401, Some("use_dpop_nonce")),
        "{a:?}"
    );
    let nonce = a.headers["dpop-nonce"].clone();
    let a = check(replica_b, &dpop, Some(&proof(json!({"nonce": nonce})))).await;
    assert!(a.allowed, "the other replica accepts the nonce: {a:?}");
    let a = check(replica_a, &dpop, Some(&proof(json!({"nonce": "not-ours"})))).await;
    assert_eq!(a.error().as_deref(), Some("use_dpop_nonce"), "{a:?}");

    // An opaque DPoP-bound token: the introspection answer carries `cnf.jkt` (RFC 9449 s6.2)
    // and `token_type: DPoP` (RFC 7662 s2.2), and the same rules apply as to a JWT's `cnf`.
    let rs_secret = dir.path().join("rs-secret");
    std::fs::write(&rs_secret, "rs-basic-secret").unwrap();
    let (_opaque, opaque) = start_mcp_authz(
        dir.path(),
        "opaque",
        &issuer,
        &resource,
        None,
        Some(&rs_secret),
    )
    .await;
    let response =
        bound_token_for(&issuer, &resource, &key, ("opaque-client", "opaque-secret")).await;
    assert_eq!(response["token_type"], "DPoP", "{response}");
    let opaque_token = response["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        opaque_token.matches('.').count(),
        0,
        "an opaque token: {opaque_token}"
    );
    let opaque_dpop = format!("DPoP {opaque_token}");
    let opaque_proof = || key.dpop_proof("POST", &resource, &opaque_token, now(), &json!({}));
    let a = check(opaque, &opaque_dpop, Some(&opaque_proof())).await;
    assert!(a.allowed, "{a:?}");
    assert_eq!(a.headers["x-mcp-authz-subject"], "opaque-client");
    let a = check(opaque, &opaque_dpop, None).await;
    assert_eq!(
        (a.status, a.error().as_deref()),
        (401, Some("invalid_dpop_proof")),
        "{a:?}"
    );
    let a = check(
        opaque,
        &format!("Bearer {opaque_token}"),
        Some(&opaque_proof()),
    )
    .await;
    assert_eq!(
        (a.status, a.error().as_deref()),
        (401, Some("invalid_token")),
        "{a:?}"
    );
    let stranger_proof = stranger.dpop_proof("POST", &resource, &opaque_token, now(), &json!({}));
    let a = check(opaque, &opaque_dpop, Some(&stranger_proof)).await;
    assert_eq!(
        description(&a),
        "the DPoP proof key is not the key the access token is bound to"
    );
}
