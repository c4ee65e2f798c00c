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
