//! Criterion benchmarks of JWT signature verification, for RS256 (2048-bit) and ES256: aws-lc-rs
//! verifying alone with a key parsed beforehand (the floor), mcp-authz's own verification with
//! the key its key set stores (what `token::Parsed::verify` calls), and a whole token
//! verification (parse, key lookup, signature, claims). Run with
//! `cargo bench --features test-util --bench signature`. Numbers go in docs/benchmarks/.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should stop the test"
)]

use std::hint::black_box;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;
use mcp_authz::config::Config;
use mcp_authz::engine::Engine;
use mcp_authz::keys::{IssuerKeys, KeySet, Lookup};
use mcp_authz::metrics::Metrics;
use mcp_authz::policy::PolicyStore;
use mcp_authz::resource::Route;
use mcp_authz::testutil::{TestKey, claims, shipped_policies};
use mcp_authz::token::{Parsed, unix_now};
use serde_json::Value;

const ISS: &str = "https://idp.bench";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

/// The aws-lc-rs key parsed straight from the JWK components, outside mcp-authz.
fn floor_key(key: &TestKey) -> ParsedPublicKey {
    let jwk = key.public_jwk();
    let part = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    match key.alg {
        Algorithm::RS256 => RsaPublicKeyComponents {
            n: part("n"),
            e: part("e"),
        }
        .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
        .unwrap(),
        Algorithm::ES256 => {
            let mut point = vec![0x04];
            point.extend(part("x"));
            point.extend(part("y"));
            ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).unwrap()
        }
        other => panic!("no floor for {other:?}"),
    }
}

/// An engine whose one issuer holds `keys`, as `benches/check.rs` builds it.
fn engine(keys: &[&TestKey]) -> Engine {
    let config = Config::from_yaml(&format!(
        r#"
policies: {{dir: {}}}
issuers:
  - issuer: {ISS}
    jwks_uri: https://idp.bench/jwks
    algorithms: [RS256, ES256]
    claims: {{tenant: tenant}}
servers:
  - id: demo
    tenant: acme
    resource: {RESOURCE}
    authorization_servers: [{ISS}]
"#,
        shipped_policies().display()
    ))
    .unwrap();
    let metrics = Metrics::unregistered();
    let jwks = serde_json::json!({"keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>()});
    let set = KeySet::from_jwks(jwks.to_string().as_bytes(), &ALGORITHMS)
        .unwrap()
        .0;
    let issuers = vec![IssuerKeys::with_static(
        config.issuers[0].clone(),
        set,
        metrics.clone(),
    )];
    let policies = PolicyStore::open(&config.policies.dir, metrics.clone()).unwrap();
    Engine::new(&config, issuers, policies, metrics).unwrap()
}

fn benches(c: &mut Criterion) {
    let rsa = TestKey::rsa("rsa");
    let ec = TestKey::ec("ec");
    let engine = engine(&[&rsa, &ec]);
    let setup = engine.setup();
    let Route::Protected(server) = setup.servers().route("mcp.example.com", "/mcp") else {
        panic!("the bench server routes")
    };
    let issuer = engine.issuers()[0].clone();
    let set = issuer.load().unwrap();
    for (name, key) in [("rs256", &rsa), ("es256", &ec)] {
        let mut c0 = claims(ISS, RESOURCE);
        c0["scope"] = Value::from("mcp:connect");
        let token = key.token(&c0);
        let (message, signature) = token.rsplit_once('.').unwrap();
        let raw = URL_SAFE_NO_PAD.decode(signature).unwrap();

        let floor = floor_key(key);
        floor.verify_sig(message.as_bytes(), &raw).unwrap();
        c.bench_function(&format!("signature_{name}_aws_lc_parsed_key"), |b| {
            b.iter(|| {
                floor
                    .verify_sig(black_box(message.as_bytes()), black_box(&raw))
                    .unwrap()
            })
        });

        let Lookup::Found(stored) = set.find(Some(&key.kid), key.alg) else {
            panic!("the key set holds the key")
        };
        let ours =
            || assert!(stored.verify(key.alg, black_box(message.as_bytes()), black_box(&raw)));
        ours();
        c.bench_function(&format!("signature_{name}_mcp_authz_stored_key"), |b| {
            b.iter(ours)
        });

        // What mcp-authz did before keys were parsed once (and what `jsonwebtoken::decode`
        // does): `jsonwebtoken::crypto::verify` with a `DecodingKey` holding the JWK components,
        // which rebuilds the aws-lc key on every call.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let per_call = || {
            assert!(
                jsonwebtoken::crypto::verify(
                    black_box(signature),
                    black_box(message.as_bytes()),
                    &decoding,
                    key.alg
                )
                .unwrap()
            )
        };
        per_call();
        c.bench_function(
            &format!("signature_{name}_jsonwebtoken_per_call_key"),
            |b| b.iter(per_call),
        );

        let whole = || {
            Parsed::parse(black_box(&token))
                .unwrap()
                .verify(&issuer.config, &set, server, unix_now())
                .unwrap()
        };
        whole();
        c.bench_function(&format!("signature_{name}_whole_token"), |b| b.iter(whole));
    }
}

criterion_group!(signature, benches);
criterion_main!(signature);
