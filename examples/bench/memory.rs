//! The memory phase: one mcp-authz fed N distinct tokens (a million in a full run), its RSS
//! read at checkpoints, to show memory stays bounded by the configured cache size however
//! many tokens pass. Tokens come from an HS256 issuer and are minted as they are sent: HMAC
//! signing costs microseconds, where a million RS256 signatures would take a quarter hour.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::contenders::{CustomConfig, Env, start_mcp_authz};
use crate::grpc::{GrpcConn, check_once};
use crate::load::{self, Outcome, Stats};
use crate::procs::vm_kib;
use crate::tokens::{HS_ISSUER, HmacMinter, RESOURCE, encoded_check};

const SECRET_ENV: &str = "MCP_AUTHZ_BENCH_HMAC_SECRET";
/// Fractions of N at which RSS is read (plus 0, before any token).
const CHECKPOINTS: [f64; 5] = [0.1, 0.25, 0.5, 0.75, 1.0];

#[derive(Serialize)]
pub struct Checkpoint {
    pub tokens: u64,
    pub rss_kib: u64,
}

#[derive(Serialize)]
pub struct MemoryResult {
    pub tokens_planned: u64,
    pub tokens_checked: u64,
    pub allowed: u64,
    pub wrong: u64,
    pub errors: u64,
    pub first_problem: Option<String>,
    pub cache_tokens: Option<usize>,
    pub checkpoints: Vec<Checkpoint>,
    pub peak_rss_kib: u64,
    pub elapsed_s: f64,
    /// False when the time limit stopped the phase early.
    pub complete: bool,
    /// RSS at the last checkpoint against the first checkpoint past the point where the cache
    /// is full (twice its size), plus 10% and 4 MiB of allocator slack.
    pub bounded: bool,
    pub growth_kib: i64,
    pub growth_from_tokens: u64,
}

fn config(ports: [u16; 3], cache: Option<usize>) -> String {
    let policies = mcp_authz::testutil::shipped_policies();
    let mut yaml = format!(
        r#"
policies: {{dir: {policies}}}
listen: {{grpc: "127.0.0.1:{}", admin: "127.0.0.1:{}", admin_grpc: "127.0.0.1:{}"}}
issuers:
  - issuer: {HS_ISSUER}
    algorithms: [HS256]
    hmac_secret: {{env: {SECRET_ENV}}}
    claims: {{tenant: tenant}}
servers:
  - id: demo
    tenant: acme
    resource: {RESOURCE}
    authorization_servers: [{HS_ISSUER}]
    scopes_supported: [mcp:connect, mcp:tools:weather]
    challenge_scopes: [mcp:connect]
    match: {{hosts: ["*"]}}
"#,
        ports[0],
        ports[1],
        ports[2],
        policies = policies.display()
    );
    if let Some(n) = cache {
        yaml.push_str(&format!("cache: {{tokens: {n}}}\n"));
    }
    // This phase measures memory, not overload: 64 checks in flight on a debug build (the smoke
    // run) wait longer than the default `overload.max_queue_wait`, and a shed check would count
    // as an error. The load phases use the same lenient setting (`testutil::config_yaml`).
    yaml.push_str(mcp_authz::testutil::TEST_OVERLOAD);
    yaml.push('\n');
    yaml
}

pub async fn run(
    env: &Env,
    tokens: u64,
    concurrency: usize,
    limit: Duration,
) -> Result<MemoryResult, String> {
    let secret = env.material.hmac_secret.clone();
    let cache = env.cache_tokens;
    let make = move |ports: [u16; 3]| config(ports, cache);
    let envs = [(SECRET_ENV, secret.as_str())];
    let (mut proc, addr) = start_mcp_authz(
        env,
        9000,
        Some(CustomConfig {
            yaml: &make,
            envs: &envs,
        }),
    )
    .await?;
    let minter = Arc::new(HmacMinter::new(&secret));
    // The same decisions as every contender: the minted token allowed, none denied.
    if let Outcome::Wrong(why) | Outcome::Error(why) =
        load::judge(&check_once(addr, minter.check(u64::MAX as usize)?).await?)
    {
        return Err(format!(
            "memory phase: an HS256 token was not allowed: {why}"
        ));
    }
    let denied = check_once(addr, encoded_check(None)?).await?;
    if matches!(load::judge(&denied), Outcome::Allowed) {
        return Err("memory phase: a request without a token was allowed".into());
    }

    let mut checkpoints = vec![Checkpoint {
        tokens: 0,
        rss_kib: vm_kib(proc.pid, "VmRSS")?,
    }];
    let marks: Vec<u64> = CHECKPOINTS
        .iter()
        .map(|f| ((tokens as f64) * f).round() as u64)
        .filter(|&m| m > 0)
        .collect();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    let mut conns = Vec::new();
    for _ in 0..env.grpc_connections.max(1) {
        conns.push(GrpcConn::connect(addr).await?);
    }
    for i in 0..concurrency.max(1) {
        workers.spawn(worker(
            conns[i % conns.len()].clone(),
            minter.clone(),
            next.clone(),
            done.clone(),
            tokens,
        ));
    }
    let deadline = started + limit;
    let mut pending = marks.into_iter().peekable();
    let mut complete = true;
    let mut stats = Stats::new()?;
    let mut finished = false;
    while !finished {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            r = workers.join_next() => match r {
                None => finished = true,
                Some(Ok(Ok(s))) => stats.merge(s),
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(format!("memory phase worker failed: {e}")),
            }
        }
        let now_done = done.load(Ordering::Relaxed);
        while let Some(&mark) = pending.peek() {
            if now_done < mark {
                break;
            }
            checkpoints.push(Checkpoint {
                tokens: now_done,
                rss_kib: vm_kib(proc.pid, "VmRSS")?,
            });
            pending.next();
        }
        if Instant::now() >= deadline {
            complete = false;
            workers.abort_all();
            break;
        }
        proc.check_alive()?;
    }
    let checked = done.load(Ordering::Relaxed);
    if checkpoints.last().is_some_and(|c| c.tokens < checked) {
        checkpoints.push(Checkpoint {
            tokens: checked,
            rss_kib: vm_kib(proc.pid, "VmRSS")?,
        });
    }
    let peak = vm_kib(proc.pid, "VmHWM")?;
    proc.stop().await;
    let (bounded, growth_kib, from) = judge_bounded(&checkpoints, cache);
    Ok(MemoryResult {
        tokens_planned: tokens,
        tokens_checked: checked,
        allowed: stats.ok,
        wrong: stats.wrong,
        errors: stats.errors,
        first_problem: stats.first_problem,
        cache_tokens: cache,
        checkpoints,
        peak_rss_kib: peak,
        elapsed_s: started.elapsed().as_secs_f64(),
        complete,
        bounded,
        growth_kib,
        growth_from_tokens: from,
    })
}

/// Compares the last checkpoint with the first one at or past twice the cache size (or the
/// first after zero without a cache): (bounded, growth in KiB, the reference's token count).
fn judge_bounded(cps: &[Checkpoint], cache: Option<usize>) -> (bool, i64, u64) {
    let full_at = cache.map_or(1, |c| 2 * c as u64);
    let Some(last) = cps.last() else {
        return (false, 0, 0);
    };
    let reference = cps
        .iter()
        .find(|c| c.tokens >= full_at && c.tokens > 0)
        .unwrap_or(last);
    let growth = last.rss_kib as i64 - reference.rss_kib as i64;
    let allowed = (reference.rss_kib as f64 * 0.10) as i64 + 4096;
    (growth <= allowed, growth, reference.tokens)
}

async fn worker(
    mut client: GrpcConn,
    minter: Arc<HmacMinter>,
    next: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    tokens: u64,
) -> Result<Stats, String> {
    let mut stats = Stats::new()?;
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= tokens {
            break;
        }
        let body = minter.check(n as usize)?;
        let sent = Instant::now();
        let outcome = match client.check(body).await {
            Ok(r) => load::judge(&r),
            Err(e) => Outcome::Error(e),
        };
        stats.count(outcome, Some(sent.elapsed()), true);
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(stats)
}
