//! Criterion micro-benchmarks of the parts of a check: MCP body parsing, token verification,
//! Cedar evaluation, and a whole check in process (the engine, no gRPC). Run with
//! `cargo bench --bench check`. Numbers go in docs/benchmarks/, never into test assertions.
//!
//! A counting global allocator also reports what one whole check allocates (count and bytes),
//! printed before the timings: `allocations per check: ...`.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should stop the test"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;
use mcp_authz::config::Config;
use mcp_authz::engine::{CheckInput, Decision, Engine};
use mcp_authz::keys::{IssuerKeys, KeySet};
use mcp_authz::mcp::{HttpParts, McpRequest, Target, parse};
use mcp_authz::metrics::Metrics;
use mcp_authz::policy::{EvalRequest, PolicyStore, StepUpScope, load_dir};
use mcp_authz::resource::Route;
use mcp_authz::testutil::{TestKey, claims, now, shipped_policies};
use mcp_authz::token::{Parsed, unix_now};

const ISS: &str = "https://idp.bench";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris","days":3}}}"#;

/// The system allocator, counting allocations (reallocations count as one each).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not yet freed.
static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s contract.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes per call of `f`, over `n` calls.
fn allocations_per_call(n: u64, mut f: impl FnMut()) -> (f64, f64) {
    let (count, bytes) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        ALLOCATED_BYTES.load(Ordering::Relaxed),
    );
    for _ in 0..n {
        f();
    }
    let count = ALLOCATIONS.load(Ordering::Relaxed) - count;
    let bytes = ALLOCATED_BYTES.load(Ordering::Relaxed) - bytes;
    (count as f64 / n as f64, bytes as f64 / n as f64)
}

fn engine(keys: &[&TestKey], cache_tokens: u64) -> Engine {
    engine_with(keys, cache_tokens, 16_384)
}

fn engine_with(keys: &[&TestKey], cache_tokens: u64, cache_decisions: u64) -> Engine {
    let mut config = Config::from_yaml(&format!(
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
    scopes_supported: [mcp:connect, mcp:tools:weather, mcp:tools:files]
"#,
        shipped_policies().display()
    ))
    .unwrap();
    config.cache.tokens = cache_tokens;
    config.cache.decisions = cache_decisions;
    let metrics = Metrics::unregistered();
    let jwks = serde_json::json!({"keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>()});
    let set = KeySet::from_jwks(
        jwks.to_string().as_bytes(),
        &[Algorithm::RS256, Algorithm::ES256],
    )
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

fn token(key: &TestKey) -> String {
    let mut c = claims(ISS, RESOURCE);
    c["scope"] = serde_json::json!("mcp:connect mcp:tools:weather");
    key.token(&c)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let rsa = TestKey::rsa("rsa");
    let ec = TestKey::ec("ec");
    let cached = engine(&[&rsa, &ec], 10_000);
    let uncached = engine(&[&rsa, &ec], 0);
    // The token cache on, the decision cache off: every check runs Cedar (the path before the
    // decision cache, and a decision cache miss).
    let no_decisions = engine_with(&[&rsa, &ec], 10_000, 0);
    let json_headers: HashMap<String, String> =
        HashMap::from([("content-type".into(), "application/json".into())]);

    let parse_call = || {
        black_box(
            parse(&HttpParts {
                method: "POST",
                headers: &json_headers,
                body: CALL.as_bytes(),
                max_body_bytes: 1 << 20,
            })
            .unwrap(),
        );
    };
    let (count, bytes) = allocations_per_call(1000, parse_call);
    println!(
        "allocations per check: mcp_parse_tools_call: {count:.1} allocations, {bytes:.0} bytes"
    );
    c.bench_function("mcp_parse_tools_call", |b| {
        b.iter(|| {
            parse(&HttpParts {
                method: "POST",
                headers: &json_headers,
                body: black_box(CALL.as_bytes()),
                max_body_bytes: 1 << 20,
            })
            .unwrap()
        })
    });

    let bundle = load_dir(&shipped_policies()).unwrap();
    let identity =
        mcp_authz::testutil::identity("alice", "acme", &["mcp:connect", "mcp:tools:weather"]);
    let McpRequest::Messages { messages, .. } = parse(&HttpParts {
        method: "POST",
        headers: &json_headers,
        body: CALL.as_bytes(),
        max_body_bytes: 1 << 20,
    })
    .unwrap() else {
        panic!("a message")
    };
    let target: &Target = &messages[0].target;
    c.bench_function("cedar_decide_tools_call_allow", |b| {
        b.iter(|| {
            bundle
                .decide(
                    &EvalRequest {
                        identity: &identity,
                        server_id: "demo",
                        server_tenant: "acme",
                        action: "tools/call",
                        target,
                        protocol_version: "2025-11-25",
                        session_id: "",
                        batch: false,
                    },
                    &[],
                    StepUpScope::default(),
                )
                .unwrap()
        })
    });

    // The per-token Cedar principal (tags: the claims of a typical token), built from the
    // identity and cloned as a check does with the cached one.
    let mut with_claims = identity.clone();
    let mut bench_claims = claims(ISS, RESOURCE);
    bench_claims["scope"] = serde_json::json!("mcp:connect mcp:tools:weather");
    with_claims.claims = bench_claims.as_object().unwrap().into();
    c.bench_function("cedar_principal_build", |b| {
        b.iter(|| bundle.principal(black_box(&with_claims)).unwrap())
    });
    let principal = bundle.principal(&with_claims).unwrap();
    c.bench_function("cedar_principal_clone", |b| {
        b.iter(|| black_box(&principal).clone())
    });

    let setup = cached.setup();
    let Route::Protected(server) = setup.servers().route("mcp.example.com", "/mcp") else {
        panic!("the bench server routes")
    };
    let issuer = cached.issuers()[0].clone();
    for (name, key) in [("rs256", &rsa), ("es256", &ec)] {
        let token = token(key);
        let keys = issuer.load().unwrap();
        let verify = || {
            Parsed::parse(black_box(&token))
                .unwrap()
                .verify(&issuer.config, &keys, server, unix_now())
                .unwrap()
        };
        c.bench_function(&format!("token_verify_{name}_uncached"), |b| b.iter(verify));
        // The cached path as a check takes it: lookup plus the per-request revalidation.
        rt.block_on(cached.callers().resolve(&token, server))
            .unwrap();
        let (count, bytes) = allocations_per_call(1000, || {
            black_box(
                rt.block_on(cached.callers().resolve(&token, server))
                    .unwrap(),
            );
        });
        println!(
            "allocations per check: token_verify_{name}_cached: {count:.1} allocations, {bytes:.0} bytes"
        );
        c.bench_function(&format!("token_verify_{name}_cached"), |b| {
            b.iter(|| {
                rt.block_on(cached.callers().resolve(black_box(&token), server))
                    .unwrap()
            })
        });
    }

    for (name, key, engine, cache) in [
        ("rs256", &rsa, &uncached, "uncached"),
        ("es256", &ec, &uncached, "uncached"),
        (
            "rs256",
            &rsa,
            &no_decisions,
            "cached_token_no_decision_cache",
        ),
        ("rs256", &rsa, &cached, "cached"),
    ] {
        let token = token(key);
        let auth = format!("Bearer {token}");
        let headers: HashMap<String, String> = HashMap::from([
            ("authorization".into(), auth),
            ("content-type".into(), "application/json".into()),
        ]);
        // A sanity check outside the timed loop: the benchmark measures allows.
        let input = CheckInput {
            method: "POST",
            path: "/mcp",
            host: "mcp.example.com",
            headers: &headers,
            body: CALL.as_bytes(),
        };
        assert!(matches!(
            rt.block_on(engine.check(&input)),
            Decision::Allow(_)
        ));
        let (count, bytes) = allocations_per_call(1000, || {
            black_box(rt.block_on(engine.check(&input)));
        });
        println!(
            "allocations per check: whole_check_tools_call_{name}_{cache}: {count:.1} allocations, {bytes:.0} bytes"
        );
        c.bench_function(&format!("whole_check_tools_call_{name}_{cache}"), |b| {
            b.iter(|| {
                let input = CheckInput {
                    method: "POST",
                    path: "/mcp",
                    host: "mcp.example.com",
                    headers: &headers,
                    body: black_box(CALL.as_bytes()),
                };
                rt.block_on(engine.check(&input))
            })
        });
    }
}

/// The DPoP phase (RFC 9449): the same `tools/call` with a DPoP-bound token and a fresh proof on
/// every request, tokens and decisions cached. Proofs are made outside the timed part
/// (`iter_batched`): what is measured is the check's own cost, to compare with
/// `whole_check_tools_call_rs256_cached` (the same check with a Bearer token).
fn dpop(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let rsa = TestKey::rsa("k1");
    let engine = engine(&[&rsa], 4096);
    for proof_key in [TestKey::ec("proof"), TestKey::ed("proof")] {
        let mut claims = claims(ISS, RESOURCE);
        claims["scope"] = serde_json::json!("mcp:connect mcp:tools:weather");
        claims["cnf"] = serde_json::json!({"jkt": proof_key.jkt()});
        let token = rsa.token(&claims);
        let auth = format!("DPoP {token}");
        let headers = |proof: String| -> HashMap<String, String> {
            HashMap::from([
                ("authorization".into(), auth.clone()),
                ("content-type".into(), "application/json".into()),
                ("dpop".into(), proof),
            ])
        };
        let proof =
            || proof_key.dpop_proof("POST", RESOURCE, &token, now(), &serde_json::json!({}));
        let check = |headers: &HashMap<String, String>| {
            let input = CheckInput {
                method: "POST",
                path: "/mcp",
                host: "mcp.example.com",
                headers,
                body: black_box(CALL.as_bytes()),
            };
            rt.block_on(engine.check(&input))
        };
        // A sanity check outside the timed loop: the benchmark measures allows.
        assert!(matches!(check(&headers(proof())), Decision::Allow(_)));
        let name = format!("{:?}", proof_key.alg).to_lowercase();
        c.bench_function(&format!("whole_check_tools_call_dpop_{name}_cached"), |b| {
            b.iter_batched(
                || headers(proof()),
                |h| check(&h),
                criterion::BatchSize::SmallInput,
            )
        });
    }
}

/// Live heap per decision cache entry: distinct `tools/call` requests (one tool name each, all
/// denied by default, so Cedar runs and each leaves one entry) from one cached token.
fn decision_cache_memory(rt: &tokio::runtime::Runtime, key: &TestKey) {
    const ENTRIES: u64 = 20_000;
    let engine = engine_with(&[key], 10_000, 2 * ENTRIES);
    let headers: HashMap<String, String> = HashMap::from([
        ("authorization".into(), format!("Bearer {}", token(key))),
        ("content-type".into(), "application/json".into()),
    ]);
    let bodies: Vec<String> = (0..ENTRIES)
        .map(|i| format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"tool_{i:05}","arguments":{{}}}}}}"#))
        .collect();
    let check = |body: &String| {
        rt.block_on(engine.check(&CheckInput {
            method: "POST",
            path: "/mcp",
            host: "mcp.example.com",
            headers: &headers,
            body: body.as_bytes(),
        }))
    };
    // The token, the first entry and the cache's fixed structures are in place before counting.
    black_box(check(&bodies[0]));
    engine.decisions().settle();
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let entries_before = engine.decisions().len();
    for body in &bodies[1..] {
        black_box(check(body));
    }
    engine.decisions().settle();
    let grown = LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(before);
    let entries = engine.decisions().len() - entries_before;
    println!(
        "decision cache memory: {entries} entries, {:.0} bytes per entry",
        grown as f64 / entries as f64
    );
}

fn memory(_: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    decision_cache_memory(&rt, &TestKey::rsa("rsa"));
}

criterion_group!(check, benches, dpop, memory);
criterion_main!(check);
