//! Identity-provider presets through the whole check: for Okta, Entra ID (v1 and v2), Auth0
//! (both token profiles), Cognito and Keycloak, a token shaped like the provider's published
//! example (header and claims; only times, the issuer's audience setting and our key differ),
//! signed by a key the engine fetched from a real HTTP JWKS, must be allowed with the identity
//! headers the preset maps; the provider's ID token, a wrong audience and the token-kind
//! markers' absence must be refused with 401 `invalid_token`.
#![cfg(feature = "test-util")]
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should stop the test"
)]

use std::collections::HashMap;
use std::sync::Arc;

use mcp_authz::config::Config;
use mcp_authz::engine::{CheckInput, Decision, Engine};
use mcp_authz::keys::IssuerKeys;
use mcp_authz::metrics::Metrics;
use mcp_authz::testutil::{FakeIdp, TOOLS_LIST, TestKey, now};
use serde_json::{Value, json};

const RESOURCE: &str = "https://mcp.example.com/mcp";

const OKTA: &str = "https://dev-133337.okta.com/oauth2/default";
const ENTRA_TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const ENTRA_V2: &str =
    "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0";
const ENTRA_V1: &str = "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/";
/// The API's application (client) id: what v2 tokens carry in `aud`.
const ENTRA_API: &str = "6e74172b-be56-4843-9ff4-e66a39bb12e3";
const AUTH0: &str = "https://my-domain.auth0.com/";
const COGNITO: &str = "https://cognito-idp.us-west-2.amazonaws.com/us-west-2_example";
const KEYCLOAK: &str = "https://keycloak.example.com/realms/demo";

/// One provider: its issuer, the key its JWKS serves, and the issuer entry's extra lines.
struct Provider {
    issuer: &'static str,
    key: TestKey,
    idp: FakeIdp,
}

struct Setup {
    engine: Arc<Engine>,
    providers: HashMap<&'static str, Provider>,
    _dir: tempfile::TempDir,
}

/// A policy set that permits everything: these tests are about who the caller is, which the
/// identity headers show, not about what the shipped policies grant.
fn permit_all_policies(dir: &std::path::Path) {
    let shipped = mcp_authz::testutil::shipped_policies();
    for file in ["schema.cedarschema", "entities.json"] {
        std::fs::copy(shipped.join(file), dir.join(file)).unwrap();
    }
    std::fs::write(
        dir.join("all.cedar"),
        "@id(\"permit-all\")\npermit (principal, action, resource);\n",
    )
    .unwrap();
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    permit_all_policies(dir.path());
    let mut providers = HashMap::new();
    for (name, issuer, kid) in [
        ("okta", OKTA, "okta-kid-1"),
        ("entra_v2", ENTRA_V2, "i6lGk3FZzxRcUb2C3nEQ7syHJlY"),
        ("entra_v1", ENTRA_V1, "i6lGk3FZzxRcUb2C3nEQ7syHJlY"),
        ("auth0", AUTH0, "auth0-kid-1"),
        ("cognito", COGNITO, "1234example="),
        ("keycloak", KEYCLOAK, "kc-kid-1"),
    ] {
        let key = TestKey::rsa(kid);
        let idp = FakeIdp::start(&[&key]).await;
        providers.insert(name, Provider { issuer, key, idp });
    }
    let jwks = |name: &str| format!("http://{}/jwks", providers[name].idp.addr);
    let yaml = format!(
        r#"
policies: {{dir: {policies}}}
issuers:
  - issuer: {OKTA}
    preset: okta
    jwks_uri: {okta}
  - issuer: {ENTRA_V2}
    preset: entra
    jwks_uri: {entra_v2}
  - issuer: {ENTRA_V1}
    preset: entra
    jwks_uri: {entra_v1}
  - issuer: {AUTH0}
    preset: auth0
    jwks_uri: {auth0}
    claims: {{tenant: "https://example.com/tenant"}}
  - issuer: {COGNITO}
    preset: cognito
    jwks_uri: {cognito}
    client_ids: [1example23456789]
  - issuer: {KEYCLOAK}
    preset: keycloak
    jwks_uri: {keycloak}
servers:
  - id: demo
    resource: {RESOURCE}
    audiences: [{ENTRA_API}, "api://{ENTRA_API}", mcp-weather]
    authorization_servers: [{OKTA}, {ENTRA_V2}, {ENTRA_V1}, {AUTH0}, {COGNITO}, {KEYCLOAK}]
    match: {{hosts: ["*"]}}
"#,
        policies = dir.path().display(),
        okta = jwks("okta"),
        entra_v2 = jwks("entra_v2"),
        entra_v1 = jwks("entra_v1"),
        auth0 = jwks("auth0"),
        cognito = jwks("cognito"),
        keycloak = jwks("keycloak"),
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let metrics = Metrics::unregistered();
    let mut issuers = Vec::new();
    for issuer in &config.issuers {
        let keys = IssuerKeys::new(issuer.clone(), metrics.clone(), 1 << 20).unwrap();
        keys.refresh().await;
        assert!(keys.load().is_some(), "{}: keys not fetched", issuer.issuer);
        issuers.push(keys);
    }
    let policies =
        mcp_authz::policy::PolicyStore::open(&config.policies.dir, metrics.clone()).unwrap();
    let engine = Arc::new(Engine::new(&config, issuers, policies, metrics).unwrap());
    Setup {
        engine,
        providers,
        _dir: dir,
    }
}

/// What the check answered: the identity headers of an allow, or a denial's status and
/// `error`.
#[derive(Debug)]
enum Answer {
    Allowed(HashMap<String, String>),
    Denied(u16, Option<String>),
}

impl Setup {
    fn sign(&self, provider: &str, header: &Value, claims: &Value) -> String {
        let key = &self.providers[provider].key;
        assert_eq!(
            claims["iss"].as_str(),
            Some(self.providers[provider].issuer),
            "{provider}"
        );
        key.sign_raw(&header.to_string(), &claims.to_string())
    }

    async fn check(&self, token: &str) -> Answer {
        let headers: HashMap<String, String> = [
            ("authorization".to_owned(), format!("Bearer {token}")),
            ("content-type".to_owned(), "application/json".to_owned()),
        ]
        .into();
        let input = CheckInput {
            method: "POST",
            path: "/mcp",
            host: "mcp.example.com",
            headers: &headers,
            body: TOOLS_LIST.as_bytes(),
        };
        match self.engine.check(&input).await {
            Decision::Allow(a) => Answer::Allowed(a.set_headers.into_iter().collect()),
            Decision::Respond(r) => {
                let error = r
                    .headers
                    .iter()
                    .find(|(k, _)| k == "www-authenticate")
                    .and_then(|(_, v)| v.split("error=\"").nth(1))
                    .and_then(|s| s.split('"').next())
                    .map(str::to_owned);
                Answer::Denied(r.status, error)
            }
        }
    }

    /// Allowed, with these identity headers (`None`: the header is absent).
    async fn assert_allowed(&self, token: &str, want: &[(&str, Option<&str>)]) {
        match self.check(token).await {
            Answer::Allowed(headers) => {
                for (name, value) in want {
                    assert_eq!(
                        headers.get(*name).map(String::as_str),
                        *value,
                        "{name} in {headers:?}"
                    );
                }
            }
            other => panic!("expected an allow, got {other:?}"),
        }
    }

    async fn assert_invalid(&self, token: &str, why: &str) {
        match self.check(token).await {
            Answer::Denied(401, Some(e)) if e == "invalid_token" => {}
            other => panic!("{why}: expected 401 invalid_token, got {other:?}"),
        }
    }
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

const SUBJECT: &str = "x-mcp-authz-subject";
const TENANT: &str = "x-mcp-authz-tenant";
const CLIENT: &str = "x-mcp-authz-client-id";
const SCOPES: &str = "x-mcp-authz-scopes";

// === Okta ===

/// Okta custom authorization server access token: no `typ` header, `ver: 1`, `cid`, `uid`,
/// `scp` an array. The shape of the access token example in
/// <https://developer.okta.com/docs/api/openapi/okta-oauth/guides/overview/> ("Access token"
/// and "ID token" payloads), with the authorization server's audience set to the resource URI.
#[tokio::test]
async fn preset_okta_access_token_is_allowed_and_its_id_token_refused() {
    let s = setup().await;
    let t = now();
    let header = json!({"kid": "okta-kid-1", "alg": "RS256"});
    let access = json!({
        "ver": 1,
        "jti": "AT.0mP4JKAZX1iACIT4vbEDF7LpvDVjxypPMf0D7uX39RE",
        "iss": OKTA,
        "aud": RESOURCE,
        "iat": t,
        "exp": t + 3600,
        "cid": "0oabskvc6442nkvQO0h7",
        "uid": "00ub0oNGTSWTBKOLGLNR",
        "scp": ["openid", "mcp:connect"],
        "auth_time": t - 10,
        "sub": "john.doe@example.com"
    });
    s.assert_allowed(
        &s.sign("okta", &header, &access),
        &[
            (SUBJECT, Some("john.doe@example.com")),
            (CLIENT, Some("0oabskvc6442nkvQO0h7")),
            (SCOPES, Some("openid mcp:connect")),
            (TENANT, None),
        ],
    )
    .await;
    let id_token = json!({
        "sub": "00ub0oNGTSWTBKOLGLNR",
        "name": "John Doe",
        "email": "john.doe@example.com",
        "ver": 1,
        "iss": OKTA,
        "aud": "0oabskvc6442nkvQO0h7",
        "iat": t,
        "exp": t + 3600,
        "jti": "ID.4eAWJOCMB3SX8XewDfVR",
        "amr": ["pwd"],
        "idp": "00ub0oNGTSWTBKOLGLNR",
        "nonce": "n-0S6_WzA2Mj",
        "preferred_username": "john.doe@example.com",
        "auth_time": t - 10,
        "at_hash": "preview_at_hash"
    });
    s.assert_invalid(&s.sign("okta", &header, &id_token), "okta ID token")
        .await;
    // Even with the resource in `aud`, a token without `cid` is not an Okta access token.
    s.assert_invalid(
        &s.sign("okta", &header, &with(id_token, "aud", json!(RESOURCE))),
        "okta ID token naming the resource",
    )
    .await;
    // The org authorization server's (or another custom server's) audience.
    s.assert_invalid(
        &s.sign(
            "okta",
            &header,
            &with(access.clone(), "aud", json!("api://default")),
        ),
        "okta token for another audience",
    )
    .await;
    // A `typ` an ID token profile would use is still refused under the relaxed policy.
    s.assert_invalid(
        &s.sign(
            "okta",
            &json!({"kid": "okta-kid-1", "alg": "RS256", "typ": "id+jwt"}),
            &access,
        ),
        "okta typ id+jwt",
    )
    .await;
}

// === Entra ID ===

/// Entra ID v2 access token, as the v2 example of
/// <https://learn.microsoft.com/en-us/entra/identity-platform/access-tokens> (header `typ: JWT`
/// with `x5t` and `kid`; `aud` the API's client id; `azp`, `oid`, `scp`, `tid`, `ver: 2.0`).
#[tokio::test]
async fn preset_entra_v2_and_v1_access_tokens_are_allowed_and_id_tokens_refused() {
    let s = setup().await;
    let t = now();
    let header = json!({
        "typ": "JWT",
        "alg": "RS256",
        "x5t": "i6lGk3FZzxRcUb2C3nEQ7syHJlY",
        "kid": "i6lGk3FZzxRcUb2C3nEQ7syHJlY"
    });
    let v2 = json!({
        "aud": ENTRA_API,
        "iss": ENTRA_V2,
        "iat": t,
        "nbf": t,
        "exp": t + 3900,
        "aio": "AXQAi/8IAAAAtAaZLo3ChMif6KOnttRB7eBq4/DccQzjcJGxPYy/C3jDaNGxXd6wNIIVGRghNRnwJ1lOcAnNZcjvkoyrFxCttv33140RioOFJ4bCCGVuoCag1uOTT22222gHwLPYQ/uf79QX+0KIijdrmp69RctzmQ==",
        "azp": "2d4d11a2-f814-46a7-890a-274a72a7309e",
        "azpacr": "0",
        "name": "Abe Lincoln",
        "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474",
        "preferred_username": "abeli@microsoft.com",
        "rh": "I",
        "scp": "access_as_user Weather.Read",
        "sub": "HKZpfaHyWadeOouYlitjrI-KffTm222X5rrV3xDqfKQ",
        "tid": ENTRA_TID,
        "uti": "fqiBqXLPj0eQa82S-IYFAA",
        "ver": "2.0"
    });
    s.assert_allowed(
        &s.sign("entra_v2", &header, &v2),
        &[
            // `oid`: the user across applications; `sub` is pairwise per application.
            (SUBJECT, Some("690222be-ff1a-4d56-abd1-7e4f7d38e474")),
            (TENANT, Some(ENTRA_TID)),
            (CLIENT, Some("2d4d11a2-f814-46a7-890a-274a72a7309e")),
            (SCOPES, Some("access_as_user Weather.Read")),
        ],
    )
    .await;
    // An app-only (client credentials) token: application permissions in `roles`, no `scp`.
    let app_only = json!({
        "aud": ENTRA_API,
        "iss": ENTRA_V2,
        "iat": t,
        "nbf": t,
        "exp": t + 3900,
        "aio": "E2ZgYJjv9/X2xXdfqW7zOwOYgrqIAA==",
        "azp": "2d4d11a2-f814-46a7-890a-274a72a7309e",
        "azpacr": "1",
        "idtyp": "app",
        "oid": "b4f7e4c0-6f9e-4b7e-9b6a-0e0c9a1d2f3e",
        "rh": "0.AAAA",
        "roles": ["Weather.Read.All"],
        "sub": "b4f7e4c0-6f9e-4b7e-9b6a-0e0c9a1d2f3e",
        "tid": ENTRA_TID,
        "uti": "kxqDkUBbdEeo2hD-_xQAAA",
        "ver": "2.0"
    });
    s.assert_allowed(
        &s.sign("entra_v2", &header, &app_only),
        &[
            (SUBJECT, Some("b4f7e4c0-6f9e-4b7e-9b6a-0e0c9a1d2f3e")),
            (SCOPES, Some("Weather.Read.All")),
        ],
    )
    .await;
    // A v1 token of the same API (`accessTokenAcceptedVersion` 1): the `sts.windows.net`
    // issuer, `appid` instead of `azp`, the application ID URI in `aud`.
    let v1 = json!({
        "aud": format!("api://{ENTRA_API}"),
        "iss": ENTRA_V1,
        "iat": t,
        "nbf": t,
        "exp": t + 3900,
        "acr": "1",
        "aio": "AVQAq/8TAAAA",
        "amr": ["pwd"],
        "appid": "2d4d11a2-f814-46a7-890a-274a72a7309e",
        "appidacr": "0",
        "family_name": "Lincoln",
        "given_name": "Abe",
        "ipaddr": "192.0.2.1",
        "name": "Abe Lincoln",
        "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474",
        "rh": "I",
        "scp": "user_impersonation",
        "sub": "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA",
        "tid": ENTRA_TID,
        "unique_name": "abeli@microsoft.com",
        "upn": "abeli@microsoft.com",
        "uti": "fqiBqXLPj0eQa82S-IYFAA",
        "ver": "1.0"
    });
    s.assert_allowed(
        &s.sign("entra_v1", &header, &v1),
        &[
            (SUBJECT, Some("690222be-ff1a-4d56-abd1-7e4f7d38e474")),
            (TENANT, Some(ENTRA_TID)),
            (CLIENT, Some("2d4d11a2-f814-46a7-890a-274a72a7309e")),
            (SCOPES, Some("user_impersonation")),
        ],
    )
    .await;
    // The ID token of an app that is both client and API (the case where its `aud` is the
    // API's id): ID tokens carry neither `azp` nor `appid`
    // (https://learn.microsoft.com/en-us/entra/identity-platform/id-token-claims-reference).
    let id_token = json!({
        "aud": ENTRA_API,
        "iss": ENTRA_V2,
        "iat": t,
        "nbf": t,
        "exp": t + 3600,
        "aio": "Df2UVXL1ix!lMCWMSOJBcFatzcGfvFGhjKv8q5g0x732dR5MB5BisvGQO7YWByjd8iQDLq!eGbIDakyp5mnOrcdqHeYSnltepQmRp6AIZ8jY",
        "name": "Abe Lincoln",
        "nonce": "123523",
        "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474",
        "preferred_username": "abeli@microsoft.com",
        "rh": "I",
        "sub": "HKZpfaHyWadeOouYlitjrI-KffTm222X5rrV3xDqfKQ",
        "tid": ENTRA_TID,
        "uti": "lxBoGaPO80-kcBJYnHcVAA",
        "ver": "2.0"
    });
    s.assert_invalid(&s.sign("entra_v2", &header, &id_token), "entra v2 ID token")
        .await;
    s.assert_invalid(
        &s.sign(
            "entra_v1",
            &header,
            &with(
                with(without(v1.clone(), "appid"), "ver", json!("1.0")),
                "aud",
                json!(format!("api://{ENTRA_API}")),
            ),
        ),
        "entra v1 token without appid",
    )
    .await;
    // A token for Microsoft Graph (another resource) from the same tenant.
    s.assert_invalid(
        &s.sign(
            "entra_v2",
            &header,
            &with(v2, "aud", json!("00000003-0000-0000-c000-000000000000")),
        ),
        "entra token for graph",
    )
    .await;
}

// === Auth0 ===

/// Auth0 access tokens, both profiles of
/// <https://auth0.com/docs/secure/tokens/access-tokens/access-token-profiles>: the Auth0
/// profile (`typ: JWT`, `azp`) and the RFC 9068 profile (`typ: at+jwt`, `client_id`, `jti`),
/// with RBAC `permissions` and a namespaced custom claim mapped as the tenant.
#[tokio::test]
async fn preset_auth0_both_profiles_are_allowed_and_its_id_token_refused() {
    let s = setup().await;
    let t = now();
    let auth0_profile = json!({
        "iss": AUTH0,
        "sub": "auth0|123456",
        "aud": [RESOURCE, "https://my-domain.auth0.com/userinfo"],
        "azp": "my_client_id",
        "exp": t + 86400,
        "iat": t,
        "scope": "openid profile read:patients read:admin",
        "permissions": ["read:patients", "read:admin"],
        "https://example.com/tenant": "acme"
    });
    s.assert_allowed(
        &s.sign(
            "auth0",
            &json!({"alg": "RS256", "typ": "JWT", "kid": "auth0-kid-1"}),
            &auth0_profile,
        ),
        &[
            (SUBJECT, Some("auth0|123456")),
            (TENANT, Some("acme")),
            (CLIENT, Some("my_client_id")),
            (SCOPES, Some("openid profile read:patients read:admin")),
        ],
    )
    .await;
    let rfc9068 = json!({
        "iss": AUTH0,
        "sub": "auth0|123456",
        "aud": [RESOURCE, "https://my-domain.auth0.com/userinfo"],
        "client_id": "my_client_id",
        "exp": t + 86400,
        "iat": t,
        "jti": "73WakrfVbNJBaAmhQtEeDv",
        "scope": "openid profile read:patients read:admin",
        "https://example.com/tenant": "acme"
    });
    let at_jwt = json!({"alg": "RS256", "typ": "at+jwt", "kid": "auth0-kid-1"});
    s.assert_allowed(
        &s.sign("auth0", &at_jwt, &rfc9068),
        &[
            (SUBJECT, Some("auth0|123456")),
            (CLIENT, Some("my_client_id")),
        ],
    )
    .await;
    // The ID token: `aud` is the client id; no `azp`, no `client_id`, no `scope`.
    let id_token = json!({
        "iss": AUTH0,
        "sub": "auth0|123456",
        "aud": "my_client_id",
        "exp": t + 36000,
        "iat": t,
        "nonce": "crypto-value",
        "sid": "V1StGXR8_Z5jdHi6B-myT",
        "name": "Jane Doe",
        "nickname": "jane",
        "email": "jane@example.com",
        "email_verified": true
    });
    let jwt = json!({"alg": "RS256", "typ": "JWT", "kid": "auth0-kid-1"});
    s.assert_invalid(&s.sign("auth0", &jwt, &id_token), "auth0 ID token")
        .await;
    s.assert_invalid(
        &s.sign("auth0", &jwt, &with(id_token, "aud", json!(RESOURCE))),
        "auth0 ID token naming the resource",
    )
    .await;
    // An access token for another API of the tenant.
    s.assert_invalid(
        &s.sign(
            "auth0",
            &at_jwt,
            &with(rfc9068, "aud", json!("https://example.com/health-api")),
        ),
        "auth0 token for another API",
    )
    .await;
}

// === Cognito ===

/// Cognito user pool access token, as the sample of
/// <https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-access-token.html>:
/// header with `kid` and `alg` only, no `aud`, `token_use: access`, `client_id`,
/// `cognito:groups`.
#[tokio::test]
async fn preset_cognito_access_token_is_allowed_by_client_and_id_tokens_refused() {
    let s = setup().await;
    let t = now();
    let header = json!({"kid": "1234example=", "alg": "RS256"});
    let access = json!({
        "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "device_key": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "cognito:groups": ["admin"],
        "iss": COGNITO,
        "version": 2,
        "client_id": "1example23456789",
        "origin_jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "event_id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "token_use": "access",
        "scope": "phone openid profile resourceserver.1/appclient2 email",
        "auth_time": t - 10,
        "exp": t + 3600,
        "iat": t,
        "jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "username": "my-test-user"
    });
    s.assert_allowed(
        &s.sign("cognito", &header, &access),
        &[
            (SUBJECT, Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")),
            (CLIENT, Some("1example23456789")),
            (
                SCOPES,
                Some("phone openid profile resourceserver.1/appclient2 email"),
            ),
        ],
    )
    .await;
    // The ID token of the same sign-in: `aud` is the app client, `token_use: id`.
    let id_token = json!({
        "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "cognito:groups": ["admin"],
        "email_verified": true,
        "iss": COGNITO,
        "cognito:username": "my-test-user",
        "origin_jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "aud": "1example23456789",
        "event_id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "token_use": "id",
        "auth_time": t - 10,
        "exp": t + 3600,
        "iat": t,
        "jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "email": "my-test-user@example.com"
    });
    s.assert_invalid(&s.sign("cognito", &header, &id_token), "cognito ID token")
        .await;
    // Without `aud` and with the client listed, but no `token_use`.
    s.assert_invalid(
        &s.sign("cognito", &header, &without(access.clone(), "token_use")),
        "cognito token without token_use",
    )
    .await;
    // Another app client of the pool.
    s.assert_invalid(
        &s.sign(
            "cognito",
            &header,
            &with(access.clone(), "client_id", json!("9otherclient0000")),
        ),
        "cognito token of another app client",
    )
    .await;
    // An `aud` that is there must still name the resource: the rule only covers a missing one.
    s.assert_invalid(
        &s.sign(
            "cognito",
            &header,
            &with(
                access.clone(),
                "aud",
                json!("https://other.example.com/mcp"),
            ),
        ),
        "cognito token with a wrong aud",
    )
    .await;
    s.assert_invalid(
        &s.sign("cognito", &header, &with(access, "aud", json!([]))),
        "cognito token with an empty aud",
    )
    .await;
}

// === Keycloak ===

/// Keycloak access token (header `typ: JWT`; claims `typ: Bearer`, `azp`, `realm_access.roles`,
/// `resource_access`, `scope`), with an audience mapper adding the MCP server's client
/// (`mcp-weather`) to `aud`, as <https://www.keycloak.org/docs/latest/server_admin/#_audience>
/// describes.
#[tokio::test]
async fn preset_keycloak_access_token_is_allowed_and_its_id_token_refused() {
    let s = setup().await;
    let t = now();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "kc-kid-1"});
    let access = json!({
        "exp": t + 300,
        "iat": t,
        "auth_time": t - 10,
        "jti": "onrtac:5d2b5c6e-3f5a-4a8e-9d3b-2f8f1c1e7a10",
        "iss": KEYCLOAK,
        "aud": ["mcp-weather", "account"],
        "sub": "f0a7c3e2-1b2d-4e5f-8a9b-0c1d2e3f4a5b",
        "typ": "Bearer",
        "azp": "demo-app",
        "sid": "0b1f2e3d-4c5b-6a79-8877-665544332211",
        "acr": "1",
        "allowed-origins": ["http://localhost:5173"],
        "realm_access": {"roles": ["default-roles-demo", "offline_access", "uma_authorization"]},
        "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
        "scope": "openid profile email",
        "email_verified": true,
        "name": "Alice Liddell",
        "preferred_username": "alice",
        "given_name": "Alice",
        "family_name": "Liddell",
        "email": "alice@example.com"
    });
    s.assert_allowed(
        &s.sign("keycloak", &header, &access),
        &[
            (SUBJECT, Some("f0a7c3e2-1b2d-4e5f-8a9b-0c1d2e3f4a5b")),
            (CLIENT, Some("demo-app")),
            (SCOPES, Some("openid profile email")),
        ],
    )
    .await;
    // The ID token: `typ: ID`, `aud` the client. Refused whatever its `aud`.
    let id_token = with(
        with(access.clone(), "typ", json!("ID")),
        "aud",
        json!("demo-app"),
    );
    s.assert_invalid(&s.sign("keycloak", &header, &id_token), "keycloak ID token")
        .await;
    s.assert_invalid(
        &s.sign(
            "keycloak",
            &header,
            &with(id_token, "aud", json!("mcp-weather")),
        ),
        "keycloak ID token naming the resource",
    )
    .await;
    // Keycloak's default audience (`account`) without the mapper: not for this resource.
    s.assert_invalid(
        &s.sign("keycloak", &header, &with(access, "aud", json!("account"))),
        "keycloak token without the audience mapper",
    )
    .await;
}

// === discovery ===

/// A preset goes straight to OpenID Connect discovery: against a provider that serves only
/// that document (as Entra does), one request finds the JWKS, where the generic order asks the
/// RFC 8414 location first.
#[tokio::test]
async fn preset_discovery_asks_only_the_openid_location() {
    let key = TestKey::rsa("k");
    for (preset, requests) in [("    preset: entra\n", 1), ("", 2)] {
        let idp = FakeIdp::start(&[&key]).await;
        idp.set_oidc_only(true);
        let yaml = mcp_authz::testutil::config_yaml(&idp.issuer, RESOURCE, preset);
        let config = Config::from_yaml(&yaml).unwrap();
        let keys =
            IssuerKeys::new(config.issuers[0].clone(), Metrics::unregistered(), 1 << 20).unwrap();
        keys.refresh().await;
        assert!(keys.load().is_some(), "{preset:?}");
        assert_eq!(idp.discovery_hits(), requests, "{preset:?}");
    }
}
