//! Opaque access tokens checked by introspection (RFC 7662) against a real OpenID provider
//! nobody here wrote: node-oidc-provider (tests/e2e/oauth/provider.mjs) issues opaque tokens to
//! `opaque-client`, serves `/token/introspection` and `/token/revocation`, and knows the
//! resource server's own credentials in all three client authentication methods. mcp-authz runs
//! in process and is asked over real gRPC.
//!
//! Needs `node` with `tests/e2e/oauth/node_modules`; `MCP_AUTHZ_SKIP_ENVOY=1` skips outside CI.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should stop the test"
)]

use std::time::Duration;

use mcp_authz::config::Config;
use mcp_authz::server::{self, Running};
use mcp_authz::testutil::{TestKey, free_port, grpc_check, node, shipped_policies, start_provider};
use serde_json::Value;

const RESOURCE: &str = "https://mcp.example.com/mcp";
const OTHER_RESOURCE: &str = "https://other.example.com/mcp";
const HOST: &str = "mcp.example.com";

/// mcp-authz trusting the provider, introspecting with `introspection` (YAML flow mapping
/// members), answers cached `cache_ttl`.
async fn start_authz(issuer: &str, introspection: &str) -> Running {
    let config = format!(
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
    # A client_credentials token has no account, so its introspection answer has no `sub`.
    claims: {{tenant: tenant, subject: client_id}}
    introspection: {{{introspection}}}
servers:
  - id: demo
    tenant: acme
    resource: {RESOURCE}
    authorization_servers: [{issuer}]
    scopes_supported: [mcp:connect, mcp:tools:weather, mcp:tools:files]
    challenge_scopes: [mcp:connect]
    match: {{hosts: ["*"]}}
overload: {{max_queue_wait: 10s}}
"#,
        policies = shipped_policies().display(),
    );
    let config = Config::from_yaml(&config).unwrap();
    let running = server::start(&config, None).await.unwrap();
    assert!(
        running.wait_ready(Duration::from_secs(30)).await,
        "mcp-authz never ready (introspection endpoint discovery and keys)"
    );
    running
}

/// A client_credentials token from the provider for `resource`.
async fn token(issuer: &str, client: (&str, &str), resource: &str) -> String {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("resource", resource)
        .append_pair("scope", "mcp:connect")
        .finish();
    let response = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth(client.0, Some(client.1))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let json: Value = response.json().await.unwrap();
    json["access_token"].as_str().unwrap().to_owned()
}

/// RFC 7009 revocation, by the client the token was issued to.
async fn revoke(issuer: &str, token: &str) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token)
        .finish();
    let response = reqwest::Client::new()
        .post(format!("{issuer}/token/revocation"))
        .basic_auth("opaque-client", Some("opaque-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// `mcp_authz_introspection_requests_total{result=...}` from the admin port.
async fn introspections(running: &Running, result: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", running.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| {
            l.starts_with("mcp_authz_introspection_requests_total{")
                && l.contains(&format!("result=\"{result}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |n| n.parse().unwrap())
}

async fn check(running: &Running, token: &str) -> mcp_authz::testutil::CheckAnswer {
    grpc_check(running.grpc_addr, "POST", HOST, "/mcp", Some(token)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_of_opaque_tokens_from_a_real_provider() {
    let Some(node) = node() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (client_key, client_pem) = TestKey::rsa_with_pem("rs-jwt-1");
    let jwks = serde_json::json!({"keys": [client_key.public_jwk()]}).to_string();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let mut provider = start_provider(&node, port, &[("RS_JWT_JWKS", &jwks)], dir.path()).await;
    let secret = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, value).unwrap();
        path
    };
    let basic = secret("rs-basic", "rs-basic-secret\n");
    let authz = start_authz(
        &issuer,
        &format!(
            "client_id: rs-basic, client_secret: {{file: {}}}, cache_ttl: 2s, negative_cache_ttl: 1s, timeout: 2s",
            basic.display()
        ),
    )
    .await;
    let opaque = ("opaque-client", "opaque-secret");

    // Allowed, with the identity the answer maps to; the second use is answered from the cache.
    let t = token(&issuer, opaque, RESOURCE).await;
    assert!(!t.contains('.'), "not an opaque token: {t}");
    let answer = check(&authz, &t).await;
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(answer.headers["x-mcp-authz-subject"], "opaque-client");
    assert_eq!(answer.headers["x-mcp-authz-issuer"], issuer);
    assert_eq!(answer.headers["x-mcp-authz-tenant"], "acme");
    assert_eq!(answer.headers["x-mcp-authz-client-id"], "opaque-client");
    assert_eq!(answer.headers["x-mcp-authz-scopes"], "mcp:connect");
    assert!(check(&authz, &t).await.allowed);
    assert_eq!(introspections(&authz, "active").await, 1);

    // Unknown: inactive, 401 invalid_token.
    let answer = check(&authz, "Zm9yZ2VkLW9wYXF1ZS10b2tlbi1ub2JvZHktaXNzdWVk").await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.error().as_deref(), Some("invalid_token"));
    assert_eq!(introspections(&authz, "inactive").await, 1);

    // For another resource: active, but this server is not in its audience.
    let other = token(&issuer, opaque, OTHER_RESOURCE).await;
    let answer = check(&authz, &other).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.error().as_deref(), Some("invalid_token"));
    assert!(answer.body.contains("audience"), "{}", answer.body);

    // Revoked before its first use: 401 at once.
    let revoked = token(&issuer, opaque, RESOURCE).await;
    revoke(&issuer, &revoked).await;
    assert_eq!(check(&authz, &revoked).await.status, 401);

    // Revoked after use: still allowed while the active answer is cached (cache_ttl 2 s), then
    // refused.
    let used = token(&issuer, opaque, RESOURCE).await;
    assert!(check(&authz, &used).await.allowed);
    revoke(&issuer, &used).await;
    assert!(check(&authz, &used).await.allowed);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let answer = check(&authz, &used).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.error().as_deref(), Some("invalid_token"));

    // A JWT from the same provider is still verified locally: no introspection request.
    let before = introspections(&authz, "active").await + introspections(&authz, "inactive").await;
    let jwt = token(&issuer, ("ts-client", "ts-secret"), RESOURCE).await;
    assert_eq!(jwt.split('.').count(), 3);
    let answer = check(&authz, &jwt).await;
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(answer.headers["x-mcp-authz-subject"], "ts-client");
    let after = introspections(&authz, "active").await + introspections(&authz, "inactive").await;
    assert_eq!(before, after);

    // The other two client authentication methods, against the same provider.
    let post = secret("rs-post", "rs-post-secret");
    let pem = secret("rs-jwt.pem", &client_pem);
    for introspection in [
        format!(
            "client_id: rs-post, auth: client_secret_post, client_secret: {{file: {}}}, timeout: 2s",
            post.display()
        ),
        format!(
            "client_id: rs-jwt, auth: private_key_jwt, private_key: {{file: {}}}, key_id: rs-jwt-1, timeout: 2s",
            pem.display()
        ),
    ] {
        let other_authz = start_authz(&issuer, &introspection).await;
        let t = token(&issuer, opaque, RESOURCE).await;
        let answer = check(&other_authz, &t).await;
        assert!(answer.allowed, "{introspection}: {answer:?}");
        assert_eq!(introspections(&other_authz, "active").await, 1);
        other_authz.stop().await;
    }

    // The provider down: a token not in the cache cannot be decided, 503, never an allow or a
    // 401.
    let fresh = token(&issuer, opaque, RESOURCE).await;
    provider.kill().await.unwrap();
    let answer = check(&authz, &fresh).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(!answer.allowed);
    assert!(answer.headers.contains_key("retry-after"), "{answer:?}");
    assert!(
        answer.body.contains("temporarily_unavailable"),
        "{}",
        answer.body
    );
    assert_eq!(introspections(&authz, "network").await, 1);
    authz.stop().await;
}
