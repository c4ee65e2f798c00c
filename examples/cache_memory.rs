//! Memory per cached caller, counted by the allocator: resolves N distinct HS256 tokens (the
//! claims of the load benchmark's memory phase) through the engine's verified-token cache and
//! divides the heap it keeps by N. Run with
//! `cargo run --release --features test-util --example cache_memory [N]` (a debug build counts
//! the same bytes, only slower). Prints the requested bytes and an estimate of the glibc malloc
//! chunks behind them (8 bytes of header, 16-byte granules, 32 at least), which is what RSS sees.
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a measurement tool: a failed assumption should stop it"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

use jsonwebtoken::Algorithm;
use mcp_authz::config::Config;
use mcp_authz::engine::Engine;
use mcp_authz::metrics::Metrics;
use mcp_authz::policy::PolicyStore;
use mcp_authz::resource::Route;
use mcp_authz::testutil::{TestKey, claims, now, shipped_policies};
use serde_json::json;

/// Live bytes as requested, and as glibc would hand them out.
static REQUESTED: AtomicI64 = AtomicI64::new(0);
static CHUNKS: AtomicI64 = AtomicI64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);

struct Counting;

fn chunk(size: usize) -> i64 {
    let with_header = (size + 8).div_ceil(16) * 16;
    with_header.max(32) as i64
}

// SAFETY: every call forwards to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        REQUESTED.fetch_add(layout.size() as i64, Ordering::Relaxed);
        CHUNKS.fetch_add(chunk(layout.size()), Ordering::Relaxed);
        LIVE.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        REQUESTED.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        CHUNKS.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        LIVE.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REQUESTED.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        CHUNKS.fetch_add(chunk(new_size) - chunk(layout.size()), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const ISS: &str = "https://hs256.bench.invalid";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const SECRET_ENV: &str = "MCP_AUTHZ_CACHE_MEMORY_SECRET";
const SECRET: &str = "a-secret-of-at-least-thirty-two-bytes-for-hs256";

fn snapshot() -> (i64, i64, i64) {
    (
        REQUESTED.load(Ordering::Relaxed),
        CHUNKS.load(Ordering::Relaxed),
        LIVE.load(Ordering::Relaxed),
    )
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().unwrap());
    // SAFETY: single-threaded here, before any runtime or thread starts.
    unsafe { std::env::set_var(SECRET_ENV, SECRET) };
    let mut config = Config::from_yaml(&format!(
        r#"
policies: {{dir: {}}}
issuers:
  - issuer: {ISS}
    algorithms: [HS256]
    hmac_secret: {{env: {SECRET_ENV}}}
    claims: {{tenant: tenant}}
servers:
  - id: demo
    tenant: acme
    resource: {RESOURCE}
    authorization_servers: [{ISS}]
    scopes_supported: [mcp:connect, mcp:tools:weather]
"#,
        shipped_policies().display()
    ))
    .unwrap();
    config.cache.tokens = n as u64 * 2;
    let metrics = Metrics::unregistered();
    let issuers = Engine::issuers_from_config(&config, &metrics).unwrap();
    let policies = PolicyStore::open(&config.policies.dir, metrics.clone()).unwrap();
    let engine = Engine::new(&config, issuers, policies, metrics).unwrap();
    let setup = engine.setup();
    let Route::Protected(server) = setup.servers().route("mcp.example.com", "/mcp") else {
        panic!("the server routes")
    };
    let key = TestKey::hmac("bench-hs", SECRET.as_bytes(), Algorithm::HS256);
    // The claims of the load benchmark's memory phase (examples/bench/tokens.rs `bench_claims`).
    let at = now();
    let tokens: Vec<String> = (0..n)
        .map(|i| {
            let mut c = claims(ISS, RESOURCE);
            c["sub"] = json!(format!("user-{i}"));
            c["jti"] = json!(format!("bench-{i}-{at}"));
            c["scope"] = json!("mcp:connect mcp:tools:weather");
            c["tenant"] = json!("acme");
            c["exp"] = json!(at + 4 * 3600);
            key.token(&c)
        })
        .collect();
    let token_len = tokens.iter().map(String::len).sum::<usize>() / n.max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // One token first, so lazily built state (the cache's own tables, the policy set) is not
    // charged to the entries.
    rt.block_on(engine.callers().resolve(&tokens[0], server))
        .unwrap();
    engine.callers().settle();
    let before = snapshot();
    for t in &tokens[1..] {
        rt.block_on(engine.callers().resolve(t, server)).unwrap();
    }
    engine.callers().settle();
    let after = snapshot();
    let entries = engine.callers().len() as i64 - 1;
    assert_eq!(entries as usize, n - 1, "every token is cached");
    let per = |a: i64, b: i64| (b - a) as f64 / entries as f64;
    println!(
        "{entries} cached callers, token {token_len} bytes: {:.0} bytes requested per entry, \
         {:.0} bytes in malloc chunks (estimate), {:.1} allocations",
        per(before.0, after.0),
        per(before.1, after.1),
        per(before.2, after.2),
    );
    // What an entry is made of: the same tokens verified and their principals built, each
    // kept apart from the cache.
    let now = mcp_authz::token::unix_now();
    let before = snapshot();
    let verified: Vec<_> = tokens[1..]
        .iter()
        .map(|t| {
            rt.block_on(mcp_authz::engine::verify_jwt(t, server, now))
                .unwrap()
        })
        .collect();
    let mid = snapshot();
    let bundle = engine.policies().unwrap().load();
    let principals: Vec<_> = verified
        .iter()
        .map(|v| bundle.principal(&v.identity).unwrap())
        .collect();
    let end = snapshot();
    println!(
        "of which: verified token (identity, claims, key binding) {:.0} bytes in {:.1} allocations, \
         Cedar principal {:.0} bytes in {:.1} allocations, token string {token_len} bytes",
        per(before.1, mid.1),
        per(before.2, mid.2),
        per(mid.1, end.1),
        per(mid.2, end.2),
    );
    drop((principals, verified, tokens));
}
