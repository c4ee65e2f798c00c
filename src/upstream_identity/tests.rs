//! Minting, verification against the published JWKS, rotation, key directories.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::config::{GenerateKeys, UpstreamIdentityConfig};
use crate::testutil::{self, verify_upstream_identity};

const ISSUER: &str = "http://mcp-authz.mcp.svc:9090";
const AUDIENCE: &str = "http://weather.mcp.svc:8080";

fn config(keys: UpstreamKeys) -> UpstreamIdentityConfig {
    UpstreamIdentityConfig {
        issuer: ISSUER.into(),
        keys,
        lifetime: Duration::from_secs(60),
        header: "x-mcp-authz-identity".into(),
    }
}

fn generated(algorithm: SigningAlgorithm) -> UpstreamIdentity {
    UpstreamIdentity::new(
        &config(UpstreamKeys::Generate(GenerateKeys {
            rotate_every: Duration::from_secs(3600),
            algorithm,
        })),
        Metrics::unregistered(),
    )
    .unwrap()
}

fn identity() -> Identity {
    let mut i = testutil::identity("alice", "acme", &["mcp:connect", "mcp:tools:weather"]);
    i.client_id = Some("claude".into());
    i.claims =
        serde_json::Map::from_iter([("secret".to_owned(), json!("not for upstreams"))]).into();
    i
}

fn mint(issuer: &UpstreamIdentity, calls: &[Call<'_>]) -> String {
    let identity = identity();
    issuer
        .mint(&Request {
            audience: AUDIENCE,
            decision_id: "0123456789abcdef",
            identity: &identity,
            calls,
        })
        .unwrap()
}

const FORECAST: Call<'static> = Call {
    method: "tools/call",
    target: Some("get_forecast"),
};

#[test]
fn a_minted_token_verifies_against_the_published_jwks_and_says_who_and_what() {
    for algorithm in [SigningAlgorithm::ES256, SigningAlgorithm::EdDSA] {
        let issuer = generated(algorithm);
        let token = mint(&issuer, &[FORECAST]);
        let claims =
            verify_upstream_identity(&token, &issuer.jwks_json(), ISSUER, AUDIENCE).unwrap();
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["aud"], AUDIENCE);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["tenant"], "acme");
        assert_eq!(claims["client_id"], "claude");
        assert_eq!(claims["scope"], "mcp:connect mcp:tools:weather");
        assert_eq!(claims["jti"], "0123456789abcdef");
        assert_eq!(claims["token_iss"], "https://issuer.test");
        assert_eq!(
            claims["mcp"],
            json!([{"method": "tools/call", "target": "get_forecast"}])
        );
        let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert_eq!(lifetime, 60);
        // Nothing else of the caller's token.
        assert!(claims.get("secret").is_none(), "{claims}");
        assert_eq!(claims.as_object().unwrap().len(), 11, "{claims}");
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some(TYP));
        assert_eq!(header.kid.unwrap(), issuer.signing_kid());
        // Verified with the wrong audience or issuer, it fails.
        assert!(verify_upstream_identity(&token, &issuer.jwks_json(), ISSUER, "other").is_err());
        assert!(verify_upstream_identity(&token, &issuer.jwks_json(), "other", AUDIENCE).is_err());
    }
}

#[test]
fn batches_list_every_message_and_session_methods_have_no_target() {
    let issuer = generated(SigningAlgorithm::ES256);
    let calls = [
        FORECAST,
        Call {
            method: "resources/read",
            target: Some("file:///a.txt"),
        },
        Call {
            method: "ping",
            target: None,
        },
    ];
    let token = mint(&issuer, &calls);
    let claims = verify_upstream_identity(&token, &issuer.jwks_json(), ISSUER, AUDIENCE).unwrap();
    assert_eq!(
        claims["mcp"],
        json!([
            {"method": "tools/call", "target": "get_forecast"},
            {"method": "resources/read", "target": "file:///a.txt"},
            {"method": "ping"},
        ])
    );
}

#[test]
fn absent_facts_are_absent_claims() {
    let issuer = generated(SigningAlgorithm::ES256);
    let mut identity = testutil::identity("bob", "acme", &[]);
    identity.tenant = None;
    let token = issuer
        .mint(&Request {
            audience: AUDIENCE,
            decision_id: "1",
            identity: &identity,
            calls: &[],
        })
        .unwrap();
    let claims = verify_upstream_identity(&token, &issuer.jwks_json(), ISSUER, AUDIENCE).unwrap();
    for absent in ["tenant", "client_id", "scope"] {
        assert!(claims.get(absent).is_none(), "{absent}: {claims}");
    }
}

#[test]
fn an_oversized_token_is_refused_not_sent() {
    let issuer = generated(SigningAlgorithm::ES256);
    let long = "x".repeat(200);
    let calls: Vec<Call<'_>> = (0..100)
        .map(|_| Call {
            method: "tools/call",
            target: Some(&long),
        })
        .collect();
    let identity = identity();
    let e = issuer
        .mint(&Request {
            audience: AUDIENCE,
            decision_id: "1",
            identity: &identity,
            calls: &calls,
        })
        .unwrap_err();
    assert!(matches!(e, MintError::TooLarge(_)), "{e}");
}

#[test]
fn rotation_publishes_the_next_key_ahead_and_keeps_the_retired_one() {
    let issuer = generated(SigningAlgorithm::ES256);
    let first = issuer.signing_kid();
    let published = issuer.published_kids();
    assert_eq!(published.len(), 2, "the signer and the next key");
    let next = published.iter().find(|k| **k != first).unwrap().clone();
    let before = mint(&issuer, &[FORECAST]);

    issuer.rotate().unwrap();
    // The key published ahead signs now; the retired one is still published, so a token it
    // signed a moment ago still verifies against the JWKS a verifier fetches now.
    assert_eq!(issuer.signing_kid(), next);
    let published = issuer.published_kids();
    assert_eq!(published.len(), 3);
    assert!(published.contains(&first));
    verify_upstream_identity(&before, &issuer.jwks_json(), ISSUER, AUDIENCE).unwrap();
    let after = mint(&issuer, &[FORECAST]);
    verify_upstream_identity(&after, &issuer.jwks_json(), ISSUER, AUDIENCE).unwrap();

    // One interval later (longer than any token lives) the first key goes.
    issuer.rotate().unwrap();
    let published = issuer.published_kids();
    assert_eq!(published.len(), 3);
    assert!(!published.contains(&first));
    assert!(published.contains(&next));
    assert!(verify_upstream_identity(&before, &issuer.jwks_json(), ISSUER, AUDIENCE).is_err());
}

fn dir_issuer(dir: &Path) -> Result<UpstreamIdentity, KeyError> {
    UpstreamIdentity::new(
        &config(UpstreamKeys::Dir(dir.to_owned())),
        Metrics::unregistered(),
    )
}

#[test]
fn a_key_directory_publishes_every_key_and_the_last_name_signs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("2026-11.pem"), testutil::p256_pkcs8_pem()).unwrap();
    std::fs::write(
        dir.path().join("2026-12.pem"),
        testutil::ed25519_pkcs8_pem(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("2027-01.next.pem"),
        testutil::p256_pkcs8_pem(),
    )
    .unwrap();
    // Not keys: ignored.
    std::fs::write(dir.path().join("README"), "keys").unwrap();
    std::fs::create_dir(dir.path().join("..data")).unwrap();

    let a = dir_issuer(dir.path()).unwrap();
    assert_eq!(a.published_kids().len(), 3);
    let token = mint(&a, &[FORECAST]);
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA, "2026-12.pem signs");
    verify_upstream_identity(&token, &a.jwks_json(), ISSUER, AUDIENCE).unwrap();

    // Another replica reading the same files publishes the same keys under the same kids, so
    // either one's JWKS verifies the other's tokens.
    let b = dir_issuer(dir.path()).unwrap();
    assert_eq!(a.published_kids(), b.published_kids());
    assert_eq!(a.signing_kid(), b.signing_kid());
    verify_upstream_identity(&token, &b.jwks_json(), ISSUER, AUDIENCE).unwrap();
}

#[test]
fn a_key_directory_is_reloaded_when_it_changes_and_a_bad_change_keeps_the_last_good_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.pem"), testutil::p256_pkcs8_pem()).unwrap();
    let issuer = dir_issuer(dir.path()).unwrap();
    let first = issuer.signing_kid();
    assert!(!issuer.reload_if_changed().unwrap(), "nothing changed");

    // Published ahead: does not sign yet.
    std::fs::write(dir.path().join("b.next.pem"), testutil::p256_pkcs8_pem()).unwrap();
    assert!(issuer.reload_if_changed().unwrap());
    assert_eq!(issuer.signing_kid(), first);
    assert_eq!(issuer.published_kids().len(), 2);
    let next = issuer
        .published_kids()
        .into_iter()
        .find(|k| *k != first)
        .unwrap();

    // Renamed: signs, under the kid verifiers already have.
    std::fs::rename(dir.path().join("b.next.pem"), dir.path().join("b.pem")).unwrap();
    assert!(issuer.reload_if_changed().unwrap());
    assert_eq!(issuer.signing_kid(), next);
    let token = mint(&issuer, &[FORECAST]);

    // A broken file: an error naming it, the last good keys kept (and reported once).
    std::fs::write(
        dir.path().join("c.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n",
    )
    .unwrap();
    let e = issuer.reload_if_changed().unwrap_err().to_string();
    assert!(e.contains("c.pem"), "{e}");
    assert!(!issuer.reload_if_changed().unwrap());
    assert_eq!(issuer.signing_kid(), next);
    verify_upstream_identity(&token, &issuer.jwks_json(), ISSUER, AUDIENCE).unwrap();

    // Fixed: loaded.
    std::fs::remove_file(dir.path().join("c.pem")).unwrap();
    std::fs::remove_file(dir.path().join("a.pem")).unwrap();
    assert!(issuer.reload_if_changed().unwrap());
    assert_eq!(issuer.published_kids(), vec![next]);
}

#[test]
fn a_key_directory_without_a_usable_signing_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = dir_issuer(dir.path()).err().unwrap().to_string();
    assert!(e.contains("no signing key"), "{e}");
    std::fs::write(dir.path().join("a.next.pem"), testutil::p256_pkcs8_pem()).unwrap();
    let e = dir_issuer(dir.path()).err().unwrap().to_string();
    assert!(e.contains("no signing key"), "{e}");
    // An RSA key, and a P-384 one: not what ES256 / EdDSA sign with.
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der: aws_lc_rs::encoding::Pkcs8V1Der = aws_lc_rs::encoding::AsDer::as_der(&rsa).unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der.as_ref())
    );
    std::fs::write(dir.path().join("rsa.pem"), pem).unwrap();
    let e = dir_issuer(dir.path()).err().unwrap().to_string();
    assert!(e.contains("rsa.pem"), "{e}");
    let missing = dir.path().join("missing");
    let e = dir_issuer(&missing).err().unwrap().to_string();
    assert!(e.contains("missing"), "{e}");
}

#[test]
fn discovery_names_the_issuer_and_the_jwks_under_it() {
    let issuer = generated(SigningAlgorithm::ES256);
    let doc: serde_json::Value = serde_json::from_str(&issuer.discovery_json()).unwrap();
    assert_eq!(doc["issuer"], ISSUER);
    assert_eq!(doc["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
    assert_eq!(issuer.discovery_path(), "/.well-known/openid-configuration");
    assert_eq!(issuer.jwks_path(), "/.well-known/jwks.json");
    let jwks: serde_json::Value = serde_json::from_str(&issuer.jwks_json()).unwrap();
    for key in jwks["keys"].as_array().unwrap() {
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], "ES256");
        assert!(key.get("d").is_none(), "no private part: {key}");
    }

    let mut c = config(UpstreamKeys::Generate(GenerateKeys::default()));
    c.issuer = "https://authz.example.com/upstream/".into();
    let issuer = UpstreamIdentity::new(&c, Metrics::unregistered()).unwrap();
    assert_eq!(
        issuer.discovery_path(),
        "/upstream/.well-known/openid-configuration"
    );
    let doc: serde_json::Value = serde_json::from_str(&issuer.discovery_json()).unwrap();
    assert_eq!(
        doc["jwks_uri"],
        "https://authz.example.com/upstream/.well-known/jwks.json"
    );
}
