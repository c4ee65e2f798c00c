//! The hostile-input suite (issue 11, section 2): more than 300 distinct hostile requests sent
//! through the real server's gRPC `Check` API, against a real identity provider (discovery and
//! JWKS over HTTP), the shipped policies and real signed tokens. Each case names its exact
//! answer (status, `WWW-Authenticate` challenge, JSON-RPC error code); every case is also
//! checked for what must never happen: an allow that is not a declared benign control, a hang,
//! a gRPC error, or the token (or its signature) anywhere in the answer.
//!
//! The tables live in `tests/hostile/`, one file per category; `harness.rs` holds the request
//! builder, the expectations and the runner. Run: `cargo test --test hostile`.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed assumption should stop the test"
)]

#[path = "hostile/body.rs"]
mod body;
#[path = "hostile/harness.rs"]
mod harness;
#[path = "hostile/header.rs"]
mod header;
#[path = "hostile/names.rs"]
mod names;
#[path = "hostile/routing.rs"]
mod routing;
#[path = "hostile/token.rs"]
mod token;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use harness::{Category, Ctx};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_their_exact_answers() {
    let ctx = Ctx::start().await;
    let mut cases = Vec::new();
    cases.extend(token::cases(&ctx));
    cases.extend(header::cases(&ctx));
    cases.extend(body::cases(&ctx));
    cases.extend(routing::cases(&ctx));
    cases.extend(names::cases(&ctx));

    let mut seen = HashSet::new();
    for case in &cases {
        assert!(
            seen.insert(case.name.clone()),
            "duplicate case name `{}`",
            case.name
        );
    }
    let mut per_category: BTreeMap<Category, usize> = BTreeMap::new();
    for case in &cases {
        *per_category.entry(case.category).or_default() += 1;
    }
    let total = cases.len();
    let controls = cases
        .iter()
        .filter(|c| {
            matches!(
                c.expect,
                harness::Expect::Allow | harness::Expect::AllowStripping(_)
            )
        })
        .count();

    let failures = harness::run_all(&ctx, cases, Duration::from_secs(20)).await;
    let summary = per_category
        .iter()
        .map(|(c, n)| format!("{} {n}", c.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    println!("hostile cases: {total} ({summary}); {controls} of them must be allowed");
    for c in Category::ALL {
        assert!(
            per_category.get(&c).copied().unwrap_or(0) >= 5,
            "category {} needs several cases",
            c.as_str()
        );
    }
    assert!(total >= 300, "only {total} hostile cases");
    assert!(
        failures.is_empty(),
        "{} of {total} hostile cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    ctx.stop().await;
}
