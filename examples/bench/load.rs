//! The load generator: workers on the generator's current-thread runtime sending pre-encoded
//! gRPC `CheckRequest`s (a few HTTP/2 connections) or HTTP/1.1 requests (one keep-alive
//! connection per worker), closed loop (saturation) or open loop at a constant rate with
//! latency taken from the intended send time, so a stalled server cannot hide its stall
//! (coordinated omission). Every response is judged: an allow is the only success.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{CheckResponse, HttpResponse};
use hdrhistogram::Histogram;
use hyper::header::HeaderValue;

use crate::grpc::GrpcConn;
use crate::http;
use crate::procs;

/// How long in-flight requests may take to finish after a phase ends.
const DRAIN: Duration = Duration::from_secs(10);

/// What a phase sends to.
#[derive(Clone)]
pub enum Target {
    /// ext_authz `Check` calls, cycling through `requests` (framed `CheckRequest`s; one
    /// entry: a repeated token). `expect` holds the HTTP status each request must get, by
    /// index (200: allowed; a 4xx: denied with it); without it every request must be allowed.
    Grpc {
        addr: SocketAddr,
        connections: usize,
        requests: Arc<Vec<Bytes>>,
        expect: Option<Arc<Vec<u16>>>,
        /// Shared by every phase sending to this target: each request takes the next index,
        /// so later phases go on where earlier ones stopped instead of repeating them (the
        /// mix's steady state, whose arguments must be new on every call). `None`: each phase
        /// starts at the first request.
        cursor: Option<Arc<AtomicU64>>,
    },
    /// A POST of `body` (the `tools/call`, or the `tools/list`) through Envoy, with this
    /// `authorization` header.
    Http {
        addr: SocketAddr,
        authorization: Option<HeaderValue>,
        body: &'static str,
    },
}

/// How one response was judged.
pub enum Outcome {
    Allowed,
    /// The denial that request was meant to get (the realistic mix): a right decision.
    Denied,
    /// A denial where an allow was expected.
    Wrong(String),
    /// No decision at all: transport failure, gRPC error status, HTTP 5xx.
    Error(String),
}

/// Counts and latencies of one phase.
pub struct Stats {
    /// Microseconds, 1 µs to 60 s, 3 significant digits.
    pub hist: Histogram<u64>,
    /// Allows whose latency was recorded (sent, or meant to be sent, inside the window).
    pub ok: u64,
    /// Right decisions (allows, and the expected denials of the mix) that completed inside
    /// the window: the achieved throughput.
    pub in_window: u64,
    /// Of `in_window`, the expected denials.
    pub denied: u64,
    pub wrong: u64,
    pub errors: u64,
    pub first_problem: Option<String>,
}

impl Stats {
    pub fn new() -> Result<Self, String> {
        Ok(Self {
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
            ok: 0,
            in_window: 0,
            denied: 0,
            wrong: 0,
            errors: 0,
            first_problem: None,
        })
    }

    /// Counts one response; `latency` when it belongs to the measurement, `in_window` when it
    /// completed inside the window.
    pub fn count(&mut self, outcome: Outcome, latency: Option<Duration>, in_window: bool) {
        let denied = matches!(outcome, Outcome::Denied);
        match outcome {
            Outcome::Allowed | Outcome::Denied => {
                self.in_window += u64::from(in_window);
                if in_window && denied {
                    self.denied += 1;
                }
                if let Some(l) = latency {
                    self.right(l);
                }
            }
            Outcome::Wrong(why) => {
                self.wrong += 1;
                self.first_problem
                    .get_or_insert(format!("wrong decision: {why}"));
            }
            Outcome::Error(why) => {
                self.errors += 1;
                self.first_problem.get_or_insert(format!("error: {why}"));
            }
        }
    }

    /// Counts one expected decision (an allow here; an allow or the expected denial in the
    /// soak) and its latency.
    pub fn right(&mut self, latency: Duration) {
        self.ok += 1;
        self.hist
            .saturating_record((latency.as_micros() as u64).max(1));
    }

    pub fn merge(&mut self, other: Stats) {
        let _ = self.hist.add(&other.hist);
        self.ok += other.ok;
        self.in_window += other.in_window;
        self.denied += other.denied;
        self.wrong += other.wrong;
        self.errors += other.errors;
        if self.first_problem.is_none() {
            self.first_problem = other.first_problem;
        }
    }

    /// Latency at `q` (0..1) in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// A finished phase: what was counted inside the measurement window and what the watched
/// processes spent meanwhile.
pub struct Phase {
    pub stats: Stats,
    pub window: Duration,
    /// CPU ticks of each watched pid over the window, in the order given.
    pub cpu_ticks: Vec<u64>,
    /// The generator's own CPU ticks over the window.
    pub generator_ticks: u64,
}

impl Phase {
    pub fn rps(&self) -> f64 {
        self.stats.in_window as f64 / self.window.as_secs_f64()
    }
}

/// The phase's shape: closed loop (`rate: None`) or a constant open-loop rate per second.
#[derive(Clone)]
pub struct Shape {
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub measure: Duration,
}

/// Runs one phase against `target`, reading the CPU time of `pids` at the window's edges.
pub async fn run(target: &Target, shape: &Shape, pids: &[u32]) -> Result<Phase, String> {
    let conns = connect(target, shape.concurrency).await?;
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now() + Duration::from_millis(20);
    let start = t0 + shape.warmup;
    let end = start + shape.measure;
    let interval = shape
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / r.max(1.0)));
    let mut workers = tokio::task::JoinSet::new();
    for conn in conns {
        let w = Worker {
            conn,
            target: target.clone(),
            next: next.clone(),
            t0,
            start,
            end,
            interval,
        };
        workers.spawn(w.run());
    }
    tokio::time::sleep_until(start.into()).await;
    let before = sample(pids)?;
    tokio::time::sleep_until(end.into()).await;
    let after = sample(pids)?;
    let mut stats = Stats::new()?;
    for s in join_all(workers, DRAIN, "phase").await? {
        stats.merge(s);
    }
    let cpu_ticks = before
        .1
        .iter()
        .zip(&after.1)
        .map(|(b, a)| a.saturating_sub(*b))
        .collect();
    Ok(Phase {
        stats,
        window: shape.measure,
        cpu_ticks,
        generator_ticks: after.0.saturating_sub(before.0),
    })
}

/// Waits for every worker; after `limit`, aborts those left and fails (a stalled server).
pub async fn join_all<T: 'static>(
    mut workers: tokio::task::JoinSet<Result<T, String>>,
    limit: Duration,
    what: &str,
) -> Result<Vec<T>, String> {
    let mut done = Vec::new();
    let drained = tokio::time::timeout(limit, async {
        while let Some(r) = workers.join_next().await {
            done.push(r.map_err(|e| format!("load worker failed: {e}"))??);
        }
        Ok::<_, String>(())
    })
    .await;
    match drained {
        Ok(r) => r.map(|()| done),
        Err(_) => {
            workers.abort_all();
            Err(format!(
                "requests still in flight {}s after the {what} ended",
                limit.as_secs()
            ))
        }
    }
}

fn sample(pids: &[u32]) -> Result<(u64, Vec<u64>), String> {
    let own = procs::cpu_ticks(0)?;
    let others = pids
        .iter()
        .map(|&p| procs::cpu_ticks(p))
        .collect::<Result<_, _>>()?;
    Ok((own, others))
}

/// One connection's worth of sending.
enum Conn {
    Grpc(GrpcConn),
    Http(http::Conn),
}

async fn connect(target: &Target, workers: usize) -> Result<Vec<Conn>, String> {
    let mut conns = Vec::with_capacity(workers);
    match target {
        Target::Grpc {
            addr, connections, ..
        } => {
            let mut shared = Vec::new();
            for _ in 0..(*connections).clamp(1, workers.max(1)) {
                shared.push(GrpcConn::connect(*addr).await?);
            }
            for i in 0..workers {
                conns.push(Conn::Grpc(shared[i % shared.len()].clone()));
            }
        }
        Target::Http { addr, .. } => {
            for _ in 0..workers {
                conns.push(Conn::Http(http::connect(*addr).await?));
            }
        }
    }
    Ok(conns)
}

struct Worker {
    conn: Conn,
    target: Target,
    next: Arc<AtomicU64>,
    t0: Instant,
    start: Instant,
    end: Instant,
    interval: Option<Duration>,
}

impl Worker {
    async fn run(mut self) -> Result<Stats, String> {
        let mut stats = Stats::new()?;
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let intended = match self.interval {
                Some(iv) => {
                    let t = self.t0 + iv.mul_f64(n as f64);
                    // A server slower than the offered rate falls ever further behind the
                    // schedule; stop at the window's end rather than send the backlog.
                    if t >= self.end || Instant::now() >= self.end {
                        break;
                    }
                    pace(t).await;
                    t
                }
                None => {
                    let t = Instant::now();
                    if t >= self.end {
                        break;
                    }
                    t
                }
            };
            let outcome = self.send(n).await;
            let done = Instant::now();
            let in_window = done >= self.start && done < self.end;
            let counted = match self.interval {
                // Open loop: every request scheduled inside the window, however late it got.
                Some(_) => intended >= self.start,
                None => in_window,
            };
            let failed = matches!(outcome, Outcome::Error(_));
            stats.count(outcome, counted.then(|| done - intended), in_window);
            if failed && let (Conn::Http(_), Target::Http { addr, .. }) = (&self.conn, &self.target)
            {
                // An HTTP/1.1 connection is unusable after a failed exchange: open another.
                match http::connect(*addr).await {
                    Ok(c) => self.conn = Conn::Http(c),
                    Err(_) => break,
                }
            }
        }
        Ok(stats)
    }

    async fn send(&mut self, n: u64) -> Outcome {
        match (&mut self.conn, &self.target) {
            (
                Conn::Grpc(client),
                Target::Grpc {
                    requests,
                    expect,
                    cursor,
                    ..
                },
            ) => {
                let n = cursor
                    .as_ref()
                    .map_or(n, |c| c.fetch_add(1, Ordering::Relaxed));
                let i = (n % requests.len() as u64) as usize;
                let want = expect
                    .as_ref()
                    .and_then(|e| e.get(i).copied())
                    .unwrap_or(200);
                match client.check(requests[i].clone()).await {
                    Ok(r) => judge_expecting(&r, want),
                    Err(e) => Outcome::Error(e),
                }
            }
            (
                Conn::Http(sender),
                Target::Http {
                    authorization,
                    body,
                    ..
                },
            ) => match http::call(sender, authorization.as_ref(), body).await {
                Ok((200, _)) => Outcome::Allowed,
                Ok((s @ (401 | 403), _)) => Outcome::Wrong(format!("HTTP {s}")),
                Ok((s, body)) => Outcome::Error(format!("HTTP {s}: {body}")),
                Err(e) => Outcome::Error(e),
            },
            _ => Outcome::Error("connection does not match the target".into()),
        }
    }
}

/// Waits until `t`: the timer for the coarse part (it has millisecond resolution), then
/// yielding to the runtime (which keeps polling sockets) for the last stretch.
pub async fn pace(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        if t - now > Duration::from_micros(1500) {
            tokio::time::sleep_until((t - Duration::from_millis(1)).into()).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// The decision `want` (200: an allow, judged by [`judge`]; otherwise a denial with that
/// HTTP status and a non-OK gRPC status, as mcp-authz denies).
pub fn judge_expecting(r: &CheckResponse, want: u16) -> Outcome {
    if want == 200 {
        return judge(r);
    }
    let code = r.status.as_ref().map_or(0, |s| s.code);
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d))
            if code != 0 && d.status.as_ref().map(|s| s.code) == Some(i32::from(want)) =>
        {
            Outcome::Denied
        }
        Some(HttpResponse::DeniedResponse(d)) => Outcome::Wrong(format!(
            "denied with HTTP {} (status code {code}), expected HTTP {want}",
            d.status.as_ref().map_or(0, |s| s.code)
        )),
        _ => Outcome::Wrong(format!(
            "status code {code} without a denial, expected HTTP {want}"
        )),
    }
}

/// An allow: gRPC status OK and an `ok_response`. Anything else is a decision we did not
/// expect (the baseline's allow also carries an `ok_response`).
pub fn judge(r: &CheckResponse) -> Outcome {
    let code = r.status.as_ref().map_or(0, |s| s.code);
    match &r.http_response {
        Some(HttpResponse::OkResponse(_)) if code == 0 => Outcome::Allowed,
        Some(HttpResponse::DeniedResponse(d)) => Outcome::Wrong(format!(
            "denied with HTTP {} (status code {code})",
            d.status.as_ref().map_or(0, |s| s.code)
        )),
        _ => Outcome::Wrong(format!("status code {code} without an ok_response")),
    }
}
