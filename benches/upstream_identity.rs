//! Criterion benchmark of what a signed upstream identity adds to an allow: one `mint` (claims
//! serialized, signed, base64url), ES256 and EdDSA, for a single `tools/call`. Run with
//! `cargo bench --features test-util --bench upstream_identity`. Servers without
//! `upstream_identity` pay nothing of this (one header name pushed to the removal list).
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed assumption should stop the test"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_authz::config::{GenerateKeys, SigningAlgorithm, UpstreamIdentityConfig, UpstreamKeys};
use mcp_authz::metrics::Metrics;
use mcp_authz::upstream_identity::{Call, Request, UpstreamIdentity};

fn mint(c: &mut Criterion) {
    let mut identity =
        mcp_authz::testutil::identity("alice", "acme", &["mcp:connect", "mcp:tools:weather"]);
    identity.client_id = Some("claude".into());
    let calls = [Call {
        method: "tools/call",
        target: Some("get_forecast"),
    }];
    let mut group = c.benchmark_group("upstream_identity_mint");
    group.measurement_time(Duration::from_secs(3));
    for (name, algorithm) in [
        ("es256", SigningAlgorithm::ES256),
        ("eddsa", SigningAlgorithm::EdDSA),
    ] {
        let issuer = UpstreamIdentity::new(
            &UpstreamIdentityConfig {
                issuer: "http://mcp-authz.bench:9090".into(),
                keys: UpstreamKeys::Generate(GenerateKeys {
                    rotate_every: Duration::from_secs(3600),
                    algorithm,
                }),
                lifetime: Duration::from_secs(60),
                header: "x-mcp-authz-identity".into(),
            },
            Metrics::unregistered(),
        )
        .unwrap();
        let request = Request {
            audience: "http://weather.mcp.svc:8080",
            decision_id: "0123456789abcdef",
            identity: &identity,
            calls: &calls,
        };
        group.bench_function(name, |b| {
            b.iter(|| black_box(issuer.mint(black_box(&request)).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, mint);
criterion_main!(benches);
