//! The soak's moving parts: open-loop workers sending the mix at a constant rate (latency from
//! the intended send time, so a stall cannot hide), every answer compared with the status
//! expected by construction and counted per sampling window; the IdP's key rotation; and the
//! policy rewrites.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::{CheckResponse, HttpResponse};
use mcp_authz::testutil::FakeIdp;
use serde::Serialize;

use crate::grpc::GrpcConn;
use crate::load::{Outcome, Stats, join_all, pace};
use crate::soak::mix::{Kind, Mix};
use crate::soak::observe::Metrics;

/// How long in-flight requests may take to finish after the run ends.
const DRAIN: Duration = Duration::from_secs(10);
/// How long a policy rewrite may take to be loaded (mcp-authz settles changes for 200 ms and
/// polls every second).
const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

/// The status of a decision: 200 for an allow, the denial's HTTP status otherwise.
fn status_of(r: &CheckResponse) -> Result<u16, String> {
    let code = r.status.as_ref().map_or(0, |s| s.code);
    match &r.http_response {
        Some(HttpResponse::OkResponse(_)) if code == 0 => Ok(200),
        Some(HttpResponse::DeniedResponse(d)) => Ok(d.status.as_ref().map_or(0, |s| s.code) as u16),
        _ => Err(format!("status code {code} without an http_response")),
    }
}

/// Compares an answer with the expected status. A 5xx is no decision at all: an error.
pub fn judge(answer: Result<CheckResponse, String>, expect: u16, what: &str) -> Outcome {
    match answer.and_then(|r| status_of(&r)) {
        Ok(s) if s == expect => Outcome::Allowed,
        Ok(s) if s >= 500 => Outcome::Error(format!("{what}: HTTP {s}")),
        Ok(s) => Outcome::Wrong(format!("{what}: HTTP {s}, expected {expect}")),
        Err(e) => Outcome::Error(format!("{what}: {e}")),
    }
}

/// Counts per request kind and expected status.
#[derive(Default, Clone, Serialize)]
pub struct KindCount {
    pub sent: u64,
    pub right: u64,
    pub wrong: u64,
    pub errors: u64,
}

/// What the workers record, per window of `sample_every`.
pub struct Tally {
    pub windows: Vec<Stats>,
    pub kinds: BTreeMap<(Kind, u16), KindCount>,
}

pub struct Load {
    pub addr: SocketAddr,
    pub connections: usize,
    pub concurrency: usize,
    pub rate: f64,
    pub duration: Duration,
    pub sample_every: Duration,
}

/// Sends the mix from `start` for `load.duration`; returns the tally once every request has
/// been answered.
pub async fn run(load: &Load, mix: Arc<Mix>, start: Instant) -> Result<Tally, String> {
    let windows = (load.duration.as_secs_f64() / load.sample_every.as_secs_f64()).ceil() as usize;
    let tally = Arc::new(Mutex::new(Tally {
        windows: (0..windows.max(1))
            .map(|_| Stats::new())
            .collect::<Result<_, _>>()?,
        kinds: BTreeMap::new(),
    }));
    let mut conns = Vec::new();
    for _ in 0..load.connections.max(1) {
        conns.push(GrpcConn::connect(load.addr).await?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_secs_f64(1.0 / load.rate.max(1.0));
    let end = start + load.duration;
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..load.concurrency.max(1) {
        let w = Worker {
            conn: conns[i % conns.len()].clone(),
            mix: mix.clone(),
            next: next.clone(),
            tally: tally.clone(),
            start,
            end,
            interval,
            window: load.sample_every,
        };
        workers.spawn(w.run());
    }
    // The workers stop at the end; in-flight requests get `DRAIN` more.
    join_all(workers, load.duration + DRAIN, "soak").await?;
    let tally = Arc::try_unwrap(tally)
        .map_err(|_| "a worker outlived the run".to_owned())?
        .into_inner()
        .map_err(|_| "a worker panicked while counting".to_owned())?;
    Ok(tally)
}

struct Worker {
    conn: GrpcConn,
    mix: Arc<Mix>,
    next: Arc<AtomicU64>,
    tally: Arc<Mutex<Tally>>,
    start: Instant,
    end: Instant,
    interval: Duration,
    window: Duration,
}

impl Worker {
    async fn run(mut self) -> Result<(), String> {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let intended = self.start + self.interval.mul_f64(n as f64);
            // A server slower than the rate falls ever further behind: stop at the end rather
            // than send the backlog (the late requests already carry their delay).
            if intended >= self.end || Instant::now() >= self.end {
                break;
            }
            pace(intended).await;
            // The key schedule is judged at the actual send time: a late request must not
            // use a key that has been withdrawn meanwhile.
            let t = (Instant::now() - self.start).as_secs_f64();
            let (kind, request) = self.mix.pick(n, t);
            let answer = self.conn.check(request.framed).await;
            let latency = intended.elapsed();
            let outcome = judge(answer, request.expect, request.what);
            let w = ((intended - self.start).as_secs_f64() / self.window.as_secs_f64()) as usize;
            let mut tally = self
                .tally
                .lock()
                .map_err(|_| "a worker panicked while counting".to_owned())?;
            let count = tally.kinds.entry((kind, request.expect)).or_default();
            count.sent += 1;
            match &outcome {
                Outcome::Allowed | Outcome::Denied => count.right += 1,
                Outcome::Wrong(_) => count.wrong += 1,
                Outcome::Error(_) => count.errors += 1,
            }
            let last = tally.windows.len() - 1;
            let stats = &mut tally.windows[w.min(last)];
            match outcome {
                Outcome::Allowed | Outcome::Denied => stats.right(latency),
                other => stats.count(other, None, false),
            }
        }
        Ok(())
    }
}

// === key rotation ===

/// A change of the IdP's published keys.
#[derive(Serialize, Clone)]
pub struct KeyEvent {
    pub t_s: f64,
    /// The key generations published from then on.
    pub generations: Vec<usize>,
}

/// Publishes the schedule's keys until `end`, returning what was published when.
pub async fn rotate_keys(idp: &FakeIdp, mix: &Mix, start: Instant, end: Instant) -> Vec<KeyEvent> {
    let mut events = Vec::new();
    let mut published = Vec::new();
    while Instant::now() < end {
        let t = (Instant::now() - start).as_secs_f64();
        let now = mix.schedule.published(t);
        if now != published {
            idp.set_keys(&mix.jwks_of(&now));
            events.push(KeyEvent {
                t_s: t,
                generations: now.clone(),
            });
            published = now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    events
}

// === policy reloads ===

/// One rewrite of a policy file and whether mcp-authz loaded it.
#[derive(Serialize, Clone)]
pub struct Rewrite {
    pub t_s: f64,
    /// Seconds until `mcp_authz_policy_reloads_total{outcome="success"}` went up; `None`
    /// when it did not within the deadline.
    pub loaded_after_s: Option<f64>,
    /// Failed reloads counted meanwhile (a half-written file seen by the watcher).
    pub failures: u64,
}

/// Rewrites `file` in place every `every` until `end` (alternating a trailing comment, so the
/// policies mean the same and every expected decision stays exact) and waits for each to be
/// loaded.
pub async fn rewrite_policies(
    file: &Path,
    every: Duration,
    metrics: &Metrics,
    start: Instant,
    end: Instant,
) -> Result<Vec<Rewrite>, String> {
    let original =
        std::fs::read_to_string(file).map_err(|e| format!("`{}`: {e}", file.display()))?;
    let mut rewrites = Vec::new();
    let mut n = 0u64;
    loop {
        let at = start + every.mul_f64((n + 1) as f64);
        if at + RELOAD_DEADLINE >= end {
            return Ok(rewrites);
        }
        tokio::time::sleep_until(at.into()).await;
        n += 1;
        let before = metrics.policy_reloads().await?;
        let text = if n % 2 == 1 {
            format!("{original}\n// soak rewrite {n}\n")
        } else {
            original.clone()
        };
        write_in_place(file, &text)?;
        let written = Instant::now();
        let mut loaded_after_s = None;
        let mut after = before;
        while written.elapsed() < RELOAD_DEADLINE {
            tokio::time::sleep(Duration::from_millis(100)).await;
            after = metrics.policy_reloads().await?;
            if after.0 > before.0 {
                loaded_after_s = Some(written.elapsed().as_secs_f64());
                break;
            }
        }
        rewrites.push(Rewrite {
            t_s: (written - start).as_secs_f64(),
            loaded_after_s,
            failures: after.1.saturating_sub(before.1),
        });
    }
}

/// Truncates and writes, as an editor saving in place does (not an atomic rename): the
/// watcher may see the file empty or half-written, and must not load that.
fn write_in_place(file: &Path, text: &str) -> Result<(), String> {
    std::fs::write(file, text).map_err(|e| format!("cannot rewrite `{}`: {e}", file.display()))
}

/// The policy file the soak rewrites, in the run's copy of the shipped policies.
pub fn policy_file(dir: &Path) -> PathBuf {
    dir.join("tools.cedar")
}
