use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;
use serde_json::{Value, json};

use super::*;
use crate::config::{DpopConfig, NonceConfig, SecretSource};
use crate::testutil::TestKey;

const URI: &str = "https://mcp.example.com/weather/mcp";
const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln";
const NOW: i64 = 1_800_000_000;

fn checker() -> Dpop {
    Dpop::new(&DpopConfig::default(), 8192).unwrap()
}

fn with_nonces(secret: &str) -> Dpop {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let config = DpopConfig {
        nonce: Some(NonceConfig {
            secret: Some(SecretSource {
                env: None,
                file: Some(file),
            }),
            slot: Duration::from_secs(60),
        }),
        ..DpopConfig::default()
    };
    Dpop::new(&config, 8192).unwrap()
}

fn input<'a>(proof: &'a str, jkt: &'a str) -> ProofInput<'a> {
    ProofInput {
        proof: Some(proof),
        method: "POST",
        uri: URI,
        access_token: TOKEN,
        jkt,
        now: NOW,
    }
}

fn proof(key: &TestKey, extra: Value) -> String {
    key.dpop_proof("POST", URI, TOKEN, NOW, &extra)
}

#[test]
fn a_valid_proof_passes_once_and_its_replay_is_refused() {
    let d = checker();
    for key in [
        TestKey::ec("k"),
        TestKey::rsa_with("k", jsonwebtoken::Algorithm::PS256),
        TestKey::ed("k"),
    ] {
        let jkt = key.jkt();
        let p = proof(&key, json!({}));
        assert_eq!(d.check(&input(&p, &jkt)), Ok(()), "{:?}", key.alg);
        assert_eq!(
            d.check(&input(&p, &jkt)),
            Err(DpopError::Replayed),
            "{:?}",
            key.alg
        );
    }
}

#[test]
fn every_claim_is_checked() {
    let d = checker();
    let key = TestKey::ec("k");
    let jkt = key.jkt();
    let cases = [
        (json!({"htm": "GET"}), DpopError::WrongMethod),
        (json!({"htm": "post"}), DpopError::WrongMethod),
        (
            json!({"htu": "https://mcp.example.com/other/mcp"}),
            DpopError::WrongUri,
        ),
        (
            json!({"htu": "https://evil.example.com/weather/mcp"}),
            DpopError::WrongUri,
        ),
        (
            json!({"htu": "http://mcp.example.com/weather/mcp"}),
            DpopError::WrongUri,
        ),
        (json!({"htu": "/weather/mcp"}), DpopError::WrongUri),
        (json!({"iat": NOW - 61}), DpopError::Stale),
        (json!({"iat": NOW + 6}), DpopError::IssuedInFuture),
        (json!({"iat": "now"}), DpopError::MissingClaim),
        (json!({"ath": null}), DpopError::MissingClaim),
        (
            json!({"ath": URL_SAFE_NO_PAD.encode([0u8; 32])}),
            DpopError::WrongTokenHash,
        ),
        (json!({"jti": null}), DpopError::MissingClaim),
        (json!({"jti": ""}), DpopError::MissingClaim),
        (json!({"jti": 7}), DpopError::MissingClaim),
        (json!({"htm": null}), DpopError::MissingClaim),
        (json!({"htu": null}), DpopError::MissingClaim),
        (json!({"iat": null}), DpopError::MissingClaim),
    ];
    for (extra, want) in cases {
        let p = proof(&key, extra.clone());
        assert_eq!(d.check(&input(&p, &jkt)), Err(want), "{extra}");
    }
    // The window's edges: `proof_lifetime` old and `clock_skew` ahead are still accepted.
    for iat in [NOW - 60, NOW + 5] {
        let p = proof(&key, json!({"iat": iat}));
        assert_eq!(d.check(&input(&p, &jkt)), Ok(()), "iat {iat}");
    }
}

#[test]
fn htu_is_compared_after_normalization_and_without_query_or_fragment() {
    let d = checker();
    let key = TestKey::ec("k");
    let jkt = key.jkt();
    for htu in [
        "https://MCP.Example.COM/weather/mcp",
        "HTTPS://mcp.example.com:443/weather/mcp",
        "https://mcp.example.com/weather/mcp?x=1",
        "https://mcp.example.com/weather/mcp#frag",
        "https://mcp.example.com/%77eather/mcp",
        "https://mcp.example.com/weather/./mcp",
    ] {
        let p = proof(&key, json!({"htu": htu}));
        assert_eq!(d.check(&input(&p, &jkt)), Ok(()), "{htu}");
    }
    assert_eq!(
        normalize_uri("https://a.example/x%2fy%7e").as_deref(),
        Some("https://a.example/x%2Fy~")
    );
    assert_eq!(normalize_uri("mailto:a@b"), None);
    assert_eq!(normalize_uri("not a uri"), None);
    assert_eq!(
        request_uri("https://mcp.example.com", "/weather/mcp?session=1"),
        URI
    );
}

#[test]
fn the_proof_key_must_be_the_key_the_token_is_bound_to() {
    let d = checker();
    let key = TestKey::ec("k");
    let other = TestKey::ec("other");
    let p = proof(&key, json!({}));
    assert_eq!(
        d.check(&input(&p, &other.jkt())),
        Err(DpopError::KeyMismatch)
    );
}

#[test]
fn the_header_must_be_a_dpop_proof_with_one_public_key() {
    let d = checker();
    let key = TestKey::ec("k");
    let jkt = key.jkt();
    let claims = json!({"jti": "j1", "htm": "POST", "htu": URI, "iat": NOW,
        "ath": URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest(TOKEN))});
    let jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(
            &jsonwebtoken::EncodingKey::from_secret(b"x"),
            jsonwebtoken::Algorithm::HS256,
        )
        .unwrap(),
    )
    .unwrap();
    let public = key.public_jwk();
    let raw = |header: Value| key.sign_raw(&header.to_string(), &claims.to_string());
    let cases = [
        (
            json!({"alg": "ES256", "typ": "JWT", "jwk": public}),
            DpopError::WrongType,
        ),
        (json!({"alg": "ES256", "jwk": public}), DpopError::WrongType),
        (
            json!({"alg": "ES256", "typ": "dpop+jwt"}),
            DpopError::BadKey,
        ),
        (
            json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": public, "kid": "k"}),
            DpopError::BadKey,
        ),
        (
            json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": public, "jku": "https://x"}),
            DpopError::BadKey,
        ),
        (
            json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": jwk}),
            DpopError::BadKey,
        ),
        (
            json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": public, "crit": ["x"]}),
            DpopError::Malformed,
        ),
        (
            json!({"alg": "HS256", "typ": "dpop+jwt", "jwk": public}),
            DpopError::AlgorithmNotAllowed,
        ),
        (
            json!({"alg": "none", "typ": "dpop+jwt", "jwk": public}),
            DpopError::AlgorithmNotAllowed,
        ),
        (
            json!({"typ": "dpop+jwt", "jwk": public}),
            DpopError::Malformed,
        ),
    ];
    for (header, want) in cases {
        assert_eq!(
            d.check(&input(&raw(header.clone()), &jkt)),
            Err(want),
            "{header}"
        );
    }
    // A private key in `jwk` is refused (RFC 9449 s4.3 item 5), even with a valid signature.
    let mut private = public.clone();
    private["d"] = json!("AAAA");
    let p = raw(json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": private}));
    assert_eq!(d.check(&input(&p, &jkt)), Err(DpopError::BadKey));
    // Repeated members are refused, not resolved.
    let p = key.sign_raw(
        &format!(r#"{{"alg":"ES256","typ":"dpop+jwt","typ":"dpop+jwt","jwk":{public}}}"#),
        &claims.to_string(),
    );
    assert_eq!(d.check(&input(&p, &jkt)), Err(DpopError::Malformed));
    // The right shape passes.
    let p = raw(json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": public}));
    assert_eq!(d.check(&input(&p, &jkt)), Ok(()));
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let d = checker();
    let key = TestKey::ec("k");
    let thief = TestKey::ec("thief");
    // The thief signs but claims the victim's public key.
    let mut h = Header::new(jsonwebtoken::Algorithm::ES256);
    h.typ = Some("dpop+jwt".into());
    h.jwk = Some(serde_json::from_value(key.public_jwk()).unwrap());
    let claims = json!({"jti": "j", "htm": "POST", "htu": URI, "iat": NOW,
        "ath": URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest(TOKEN))});
    let p = thief.sign(&h, &claims);
    assert_eq!(
        d.check(&input(&p, &key.jkt())),
        Err(DpopError::BadSignature)
    );
}

#[test]
fn framing_is_checked_first() {
    let d = checker();
    let key = TestKey::ec("k");
    let jkt = key.jkt();
    let p = proof(&key, json!({}));
    let two = format!("{p},{p}");
    let cases: [(Option<&str>, DpopError); 6] = [
        (None, DpopError::Missing),
        (Some(""), DpopError::Missing),
        (Some(&two), DpopError::Multiple),
        (Some("a.b"), DpopError::Malformed),
        (Some("a.b.c.d"), DpopError::Malformed),
        (Some("!!.!!.!!"), DpopError::Malformed),
    ];
    for (proof, want) in cases {
        let i = ProofInput {
            proof,
            ..input("", &jkt)
        };
        assert_eq!(d.check(&i), Err(want), "{proof:?}");
    }
    let small = Dpop::new(&DpopConfig::default(), 100).unwrap();
    assert_eq!(small.check(&input(&p, &jkt)), Err(DpopError::Malformed));
}

#[test]
fn server_nonces_are_required_stateless_and_expire_after_two_slots() {
    let d = with_nonces("a shared secret of at least thirty-two bytes");
    let replica = with_nonces("a shared secret of at least thirty-two bytes");
    let stranger = with_nonces("another secret, also at least thirty-two bytes!!");
    let key = TestKey::ec("k");
    let jkt = key.jkt();
    // No nonce: refused with a fresh one to use.
    let p = proof(&key, json!({}));
    let Err(DpopError::UseNonce(nonce)) = d.check(&input(&p, &jkt)) else {
        panic!("a nonce is required");
    };
    // The nonce works on every replica sharing the secret, within its slot and the next.
    for (checker, at) in [(&d, NOW), (&replica, NOW + 60)] {
        let p = key.dpop_proof("POST", URI, TOKEN, at, &json!({"nonce": nonce}));
        let i = ProofInput {
            now: at,
            ..input(&p, &jkt)
        };
        assert_eq!(checker.check(&i), Ok(()));
    }
    // Two slots later it is stale; another secret never made it.
    let later = NOW + 120;
    let p = key.dpop_proof("POST", URI, TOKEN, later, &json!({"nonce": nonce}));
    let i = ProofInput {
        now: later,
        ..input(&p, &jkt)
    };
    assert!(matches!(d.check(&i), Err(DpopError::UseNonce(_))));
    let p = proof(&key, json!({"nonce": nonce}));
    assert!(matches!(
        stranger.check(&input(&p, &jkt)),
        Err(DpopError::UseNonce(_))
    ));
    // A forged nonce (right slot, wrong tag) is refused.
    let mut raw = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
    if let Some(last) = raw.last_mut() {
        *last ^= 1;
    }
    let p = proof(&key, json!({"nonce": URL_SAFE_NO_PAD.encode(raw)}));
    assert!(matches!(
        d.check(&input(&p, &jkt)),
        Err(DpopError::UseNonce(_))
    ));
    assert_eq!(d.fresh_nonce(NOW).as_deref(), Some(nonce.as_str()));
    assert_eq!(checker().fresh_nonce(NOW), None);
}

#[test]
fn symmetric_algorithms_and_short_secrets_are_configuration_errors() {
    let config = DpopConfig {
        algorithms: vec![jsonwebtoken::Algorithm::HS256],
        ..DpopConfig::default()
    };
    assert!(config.validate().is_err());
}

#[test]
fn every_refusal_says_what_is_wrong_in_words_a_challenge_can_carry() {
    use DpopError::*;
    let all = [
        Missing,
        Multiple,
        Malformed,
        WrongType,
        AlgorithmNotAllowed,
        BadKey,
        BadSignature,
        MissingClaim,
        WrongMethod,
        WrongUri,
        Stale,
        IssuedInFuture,
        WrongTokenHash,
        KeyMismatch,
        Replayed,
        UseNonce(String::new()),
    ];
    let descriptions: std::collections::HashSet<_> = all.iter().map(|e| e.description()).collect();
    assert_eq!(descriptions.len(), all.len());
    for d in descriptions {
        assert!(d.bytes().all(crate::challenge::is_error_char), "{d}");
    }
    for e in &all {
        assert!(crate::metrics::DPOP_RESULTS.contains(&e.label()), "{e:?}");
    }
}
