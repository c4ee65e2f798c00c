//! Key set tests: JWK selection per algorithm, lookups by `kid`, and refresh scheduling.

use super::*;
use crate::testutil::TestKey;

#[test]
fn jwks_keys_bound_to_their_algorithm() {
    let rsa = TestKey::rsa("r1");
    let ec = TestKey::ec("e1");
    let jwks = serde_json::json!({"keys": [rsa.public_jwk(), ec.public_jwk(),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "h1"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "weird", "kid": "w"}]});
    let allowed = [Algorithm::RS256, Algorithm::ES256, Algorithm::HS256];
    let (set, skipped) = KeySet::from_jwks(jwks.to_string().as_bytes(), &allowed).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(skipped, 3);
    assert!(matches!(
        set.find(Some("r1"), Algorithm::RS256),
        Lookup::Found(_)
    ));
    // The RSA key declared RS256: never HS256 (the classic confusion attack) or PS256.
    assert!(matches!(
        set.find(Some("r1"), Algorithm::HS256),
        Lookup::WrongAlgorithm
    ));
    assert!(matches!(
        set.find(Some("r1"), Algorithm::PS256),
        Lookup::WrongAlgorithm
    ));
    assert!(matches!(
        set.find(Some("e1"), Algorithm::ES384),
        Lookup::WrongAlgorithm
    ));
    assert!(matches!(
        set.find(Some("h1"), Algorithm::HS256),
        Lookup::UnknownKid
    ));
    assert!(matches!(
        set.find(Some("zzz"), Algorithm::RS256),
        Lookup::UnknownKid
    ));
    // No kid: exactly one candidate for the algorithm is required.
    assert!(matches!(set.find(None, Algorithm::ES256), Lookup::Found(_)));
}

#[test]
fn shared_kid_is_resolved_by_algorithm() {
    let rsa = TestKey::rsa("same");
    let ec = TestKey::ec("same");
    let jwks = serde_json::json!({"keys": [rsa.public_jwk(), ec.public_jwk()]});
    let (set, _) = KeySet::from_jwks(
        jwks.to_string().as_bytes(),
        &[Algorithm::RS256, Algorithm::ES256],
    )
    .unwrap();
    assert_eq!(set.len(), 2);
    assert!(
        matches!(set.find(Some("same"), Algorithm::RS256), Lookup::Found(k) if k.algorithms == [Algorithm::RS256])
    );
    assert!(
        matches!(set.find(Some("same"), Algorithm::ES256), Lookup::Found(k) if k.algorithms == [Algorithm::ES256])
    );
}

#[test]
fn rsa_key_without_alg_serves_one_algorithm() {
    let rsa = TestKey::rsa("r");
    let mut jwk = rsa.public_jwk();
    jwk.as_object_mut().unwrap().remove("alg");
    let jwks = serde_json::json!({"keys": [jwk]}).to_string();
    let (set, _) =
        KeySet::from_jwks(jwks.as_bytes(), &[Algorithm::PS256, Algorithm::RS256]).unwrap();
    assert!(matches!(
        set.find(Some("r"), Algorithm::PS256),
        Lookup::Found(_)
    ));
    assert!(matches!(
        set.find(Some("r"), Algorithm::RS256),
        Lookup::WrongAlgorithm
    ));
}

#[test]
fn kidless_jwks_key_does_not_swallow_new_kids() {
    let rsa = TestKey::rsa("r");
    let mut jwk = rsa.public_jwk();
    jwk.as_object_mut().unwrap().remove("kid");
    let jwks = serde_json::json!({"keys": [jwk]}).to_string();
    let (set, _) = KeySet::from_jwks(jwks.as_bytes(), &[Algorithm::RS256]).unwrap();
    assert!(matches!(
        set.find(Some("new"), Algorithm::RS256),
        Lookup::UnknownKid
    ));
    assert!(matches!(set.find(None, Algorithm::RS256), Lookup::Found(_)));
}

#[test]
fn empty_or_garbage_jwks_is_an_error() {
    assert!(KeySet::from_jwks(b"{\"keys\": []}", &[Algorithm::RS256]).is_err());
    assert!(KeySet::from_jwks(b"not json", &[Algorithm::RS256]).is_err());
    let rsa = TestKey::rsa("r1");
    let jwks = serde_json::json!({"keys": [rsa.public_jwk()]}).to_string();
    // Keys outside the allowlist are skipped; none left is an error.
    assert!(KeySet::from_jwks(jwks.as_bytes(), &[Algorithm::ES256]).is_err());
}

#[test]
fn jitter_stays_within_ten_percent() {
    for _ in 0..100 {
        let d = jitter(Duration::from_secs(100));
        assert!(d >= Duration::from_secs(90) && d <= Duration::from_secs(110));
    }
}

#[test]
fn retry_delay_doubles_with_jitter_up_to_min_interval_and_honours_retry_after() {
    let bounds = KeyRefresh {
        min_interval: Duration::from_secs(8),
        max_interval: Duration::from_secs(60),
        ..KeyRefresh::default()
    };
    let secs = |n: f64| Duration::from_secs_f64(n);
    for _ in 0..100 {
        // 1 s, 2 s, 4 s, then capped at 8 s; each drawn from its upper half.
        for (failures, full) in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (30, 8.0)] {
            let d = retry_delay(failures, None, &bounds);
            assert!(
                d >= secs(full / 2.0) && d <= secs(full),
                "{failures}: {d:?}"
            );
        }
        // Retry-After lengthens the wait, never shortens it, and is capped at max_interval.
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(30)), &bounds),
            secs(30.0)
        );
        assert!(retry_delay(4, Some(Duration::ZERO), &bounds) >= secs(4.0));
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(86_400)), &bounds),
            secs(60.0)
        );
    }
}

/// Splits a compact JWS into the signed message and the raw signature.
fn message_and_signature(token: &str) -> (String, Vec<u8>) {
    let (message, signature) = token.rsplit_once('.').unwrap();
    (
        message.to_owned(),
        URL_SAFE_NO_PAD.decode(signature).unwrap(),
    )
}

#[test]
fn parsed_keys_verify_every_accepted_algorithm_and_only_theirs() {
    let keys = [
        TestKey::rsa_with("rs256", Algorithm::RS256),
        TestKey::rsa_with("rs384", Algorithm::RS384),
        TestKey::rsa_with("rs512", Algorithm::RS512),
        TestKey::rsa_with("ps256", Algorithm::PS256),
        TestKey::rsa_with("ps384", Algorithm::PS384),
        TestKey::rsa_with("ps512", Algorithm::PS512),
        TestKey::ec("es256"),
        TestKey::ec384("es384"),
        TestKey::ed("eddsa"),
    ];
    let allowed: Vec<Algorithm> = keys.iter().map(|k| k.alg).collect();
    let jwks =
        serde_json::json!({"keys": keys.iter().map(TestKey::public_jwk).collect::<Vec<_>>()});
    let (set, skipped) = KeySet::from_jwks(jwks.to_string().as_bytes(), &allowed).unwrap();
    assert_eq!((set.len(), skipped), (keys.len(), 0));
    for key in &keys {
        let (message, signature) = message_and_signature(&key.token(&serde_json::json!({})));
        let Lookup::Found(found) = set.find(Some(&key.kid), key.alg) else {
            panic!("{} is in the set", key.kid)
        };
        assert!(
            found.verify(key.alg, message.as_bytes(), &signature),
            "{}",
            key.kid
        );
        let mut tampered = message.clone().into_bytes();
        tampered[0] ^= 1;
        assert!(!found.verify(key.alg, &tampered, &signature), "{}", key.kid);
        let mut forged = signature.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert!(
            !found.verify(key.alg, message.as_bytes(), &forged),
            "{}",
            key.kid
        );
        assert!(
            !found.verify(key.alg, message.as_bytes(), &[]),
            "{}",
            key.kid
        );
        // The key serves its one algorithm only, even when asked directly (RFC 8725 s3.1).
        for other in allowed
            .iter()
            .chain(&[Algorithm::HS256])
            .filter(|a| **a != key.alg)
        {
            assert!(
                !found.verify(*other, message.as_bytes(), &signature),
                "{} under {other:?}",
                key.kid
            );
        }
    }
    // Another key of the same type does not verify it.
    let (message, signature) =
        message_and_signature(&TestKey::rsa("x").token(&serde_json::json!({})));
    let Lookup::Found(rs256) = set.find(Some("rs256"), Algorithm::RS256) else {
        panic!("rs256 is in the set")
    };
    assert!(!rs256.verify(Algorithm::RS256, message.as_bytes(), &signature));
}

#[test]
fn hmac_secret_verifies_each_configured_algorithm() {
    let secret = [7u8; 64];
    let algorithms = [Algorithm::HS256, Algorithm::HS512];
    let key = VerifyKey::secret(&secret, &algorithms);
    assert_eq!(key.algorithms, algorithms);
    for alg in algorithms {
        let (message, signature) =
            message_and_signature(&TestKey::hmac("h", &secret, alg).token(&serde_json::json!({})));
        assert!(key.verify(alg, message.as_bytes(), &signature));
        let other = if alg == Algorithm::HS256 {
            Algorithm::HS512
        } else {
            Algorithm::HS256
        };
        assert!(!key.verify(other, message.as_bytes(), &signature));
        assert!(!key.verify(Algorithm::HS384, message.as_bytes(), &signature));
    }
    let (message, signature) = message_and_signature(
        &TestKey::hmac("h", &[8u8; 64], Algorithm::HS256).token(&serde_json::json!({})),
    );
    assert!(!key.verify(Algorithm::HS256, message.as_bytes(), &signature));
}

#[test]
fn jwks_keys_that_do_not_parse_are_skipped() {
    let rsa = TestKey::rsa("rsa").public_jwk();
    let ec = TestKey::ec("ec").public_jwk();
    let ed = TestKey::ed("ed").public_jwk();
    let with = |jwk: &serde_json::Value, kid: &str, field: &str, value: String| {
        let mut jwk = jwk.clone();
        jwk["kid"] = serde_json::json!(kid);
        jwk[field] = serde_json::json!(value);
        jwk
    };
    let field = |jwk: &serde_json::Value, name: &str| {
        URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap()
    };
    // An EC point moved off the curve: y + 1.
    let mut y = field(&ec, "y");
    *y.last_mut().unwrap() ^= 1;
    // RSA components must have no leading zero byte (aws-lc rejects the encoding).
    let mut n = vec![0u8];
    n.extend(field(&rsa, "n"));
    let bad = [
        with(&ec, "off-curve", "y", URL_SAFE_NO_PAD.encode(&y)),
        with(&ec, "short-x", "x", URL_SAFE_NO_PAD.encode([1u8; 31])),
        with(&rsa, "leading-zero", "n", URL_SAFE_NO_PAD.encode(&n)),
        with(&rsa, "not-base64", "n", "!!!".into()),
        with(&ed, "short-ed", "x", URL_SAFE_NO_PAD.encode([1u8; 31])),
    ];
    let mut keys = bad.to_vec();
    keys.push(rsa.clone());
    let jwks = serde_json::json!({ "keys": keys });
    let allowed = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
    let (set, skipped) = KeySet::from_jwks(jwks.to_string().as_bytes(), &allowed).unwrap();
    assert_eq!((set.len(), skipped), (1, bad.len()));
    for kid in [
        "off-curve",
        "short-x",
        "leading-zero",
        "not-base64",
        "short-ed",
    ] {
        assert!(!set.has_kid(kid), "{kid}");
    }
    // Only unparsable keys: the set is refused and the last good one stays in use.
    let jwks = serde_json::json!({ "keys": bad });
    assert!(matches!(
        KeySet::from_jwks(jwks.to_string().as_bytes(), &allowed),
        Err(KeySetError::Empty { skipped: 5 })
    ));
}
