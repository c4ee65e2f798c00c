//! The raw numbers of a run (what `results.json` holds) and the reductions the report makes of
//! them: medians over rounds, and ratios always taken between contenders of the same round.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::contenders::Kind;
use crate::load::Phase;
use crate::memory::MemoryResult;

#[derive(Serialize, Clone)]
pub struct RoleValue {
    pub role: &'static str,
    pub value: f64,
}

/// One measured phase, reduced.
#[derive(Serialize)]
pub struct PhaseResult {
    /// The open-loop rate asked for; `None` for the closed-loop saturation phase.
    pub offered_rps: Option<f64>,
    /// Allowed checks per second completed inside the measurement window.
    pub rps: f64,
    /// Open loop only: the contender achieved less than 90% of the offered rate, so its
    /// latency grew for as long as the phase lasted (and its percentiles say little).
    pub overloaded: bool,
    /// Right decisions completed inside the window (what CPU per check divides by): allows,
    /// and for the realistic mix the expected denials too.
    pub allowed: u64,
    /// Of `allowed`, the expected denials (the realistic mix; 0 elsewhere).
    pub denied: u64,
    /// Wrong decisions and errors over the whole phase, warm-up included.
    pub wrong: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// (percentile, milliseconds) from p50 to p99.99.
    pub percentiles_ms: Vec<(f64, f64)>,
    /// utime+stime of each server process over the window, per allowed check.
    pub cpu_us_per_check: Vec<RoleValue>,
    /// The generator's CPU use over the window: near 100% means it, not the server, limited.
    pub generator_cpu_pct: f64,
    #[serde(skip)]
    pub hist: Histogram<u64>,
}

impl PhaseResult {
    pub fn from_phase(
        p: Phase,
        offered: Option<f64>,
        roles: &[(&'static str, u32)],
        ticks_per_s: u64,
    ) -> Self {
        let tick_us = 1e6 / ticks_per_s as f64;
        let allowed = p.stats.in_window.max(1) as f64;
        let percentiles_ms = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99]
            .iter()
            .map(|&q| (q, p.stats.ms(q / 100.0)))
            .collect();
        let rps = p.rps();
        Self {
            offered_rps: offered,
            rps,
            overloaded: offered.is_some_and(|o| rps < 0.9 * o),
            allowed: p.stats.in_window,
            denied: p.stats.denied,
            wrong: p.stats.wrong,
            errors: p.stats.errors,
            p50_ms: p.stats.ms(0.50),
            p99_ms: p.stats.ms(0.99),
            p999_ms: p.stats.ms(0.999),
            percentiles_ms,
            cpu_us_per_check: roles
                .iter()
                .zip(&p.cpu_ticks)
                .map(|((role, _), &t)| RoleValue {
                    role,
                    value: t as f64 * tick_us / allowed,
                })
                .collect(),
            generator_cpu_pct: p.generator_ticks as f64 * tick_us / 1e6 / p.window.as_secs_f64()
                * 100.0,
            hist: p.stats.hist,
        }
    }
}

/// One contender in one round.
#[derive(Serialize)]
pub struct RoundResult {
    pub round: usize,
    pub contender: &'static str,
    pub label: &'static str,
    /// Every decision right, and transport errors at most 1% of requests.
    pub valid: bool,
    pub problem: Option<String>,
    /// The realistic mix's first pass (closed loop, every token and caller-tool pair new),
    /// before `saturation` measures its steady state.
    pub cold: Option<PhaseResult>,
    pub saturation: Option<PhaseResult>,
    pub half: Option<PhaseResult>,
    /// Open loop at the fixed rate (`--fixed-rate`), for the direct gRPC contenders of the
    /// latency target.
    pub fixed: Option<PhaseResult>,
    /// Where the half rate came from: the rate reference of this round, or (when that did not
    /// run) the contender's own saturation throughput.
    pub half_rate_basis: Option<String>,
    pub idle_rss_kib: Vec<RoleValue>,
    pub peak_rss_kib: Vec<RoleValue>,
    #[serde(skip)]
    pub kind: Kind,
}

impl RoundResult {
    pub fn new(round: usize, kind: Kind) -> Self {
        Self {
            round,
            contender: kind.name(),
            label: kind.label(),
            valid: true,
            problem: None,
            cold: None,
            saturation: None,
            half: None,
            fixed: None,
            half_rate_basis: None,
            idle_rss_kib: vec![],
            peak_rss_kib: vec![],
            kind,
        }
    }

    pub fn fail(&mut self, why: String) {
        self.valid = false;
        self.problem.get_or_insert(why);
    }

    /// Marks the round invalid on any wrong decision, on too many errors, or (the realistic
    /// mix) on a share of denials far from the tenth it is built with.
    pub fn judge(&mut self) {
        let phases = [
            ("first pass", &self.cold),
            ("saturation", &self.saturation),
            ("half rate", &self.half),
            ("fixed rate", &self.fixed),
        ];
        for (name, p) in phases {
            let Some(p) = p else { continue };
            let total = p.allowed + p.wrong + p.errors;
            if p.wrong > 0 {
                let why = format!("{name}: {} wrong decisions", p.wrong);
                self.valid = false;
                self.problem.get_or_insert(why);
            } else if p.errors * 100 > total {
                let why = format!("{name}: {} errors in {total} requests", p.errors);
                self.valid = false;
                self.problem.get_or_insert(why);
            }
        }
        if self.kind == Kind::Mix
            && let Some(p) = &self.saturation
            && p.allowed >= MIN_FOR_SHARE
            && !(0.05..=0.15).contains(&denied_share(p))
        {
            let why = format!(
                "saturation: {:.1}% of the decisions were denials, not about 10%",
                denied_share(p) * 100.0
            );
            self.valid = false;
            self.problem.get_or_insert(why);
        }
    }
}

/// Decisions below which a phase's share of denials says too little to be judged (a smoke run).
const MIN_FOR_SHARE: u64 = 500;

/// The share of a phase's right decisions that were (expected) denials.
pub fn denied_share(p: &PhaseResult) -> f64 {
    p.denied as f64 / p.allowed.max(1) as f64
}

#[derive(Serialize, Default)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub rustc: String,
    pub envoy: String,
    pub date: String,
    pub command: String,
    pub pinning: String,
}

#[derive(Serialize)]
pub struct Settings {
    pub smoke: bool,
    pub rounds: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub concurrency: usize,
    pub grpc_connections: usize,
    pub token_pool: usize,
    /// The realistic mix: callers (one token each), tools, distinct requests, and the share of
    /// them built to be denied.
    pub mix_callers: usize,
    pub mix_tools: usize,
    pub mix_requests: usize,
    /// Requests of the mix's steady state (callers and tools of the first pass, new arguments).
    pub mix_steady_requests: usize,
    pub mix_planned_denied_share: Option<f64>,
    /// The fixed open-loop rate of the latency target (checks/s).
    pub fixed_rate: f64,
    pub cache_tokens: Option<usize>,
    pub cache_note: Option<String>,
    pub memory_tokens: u64,
    pub contenders: Vec<&'static str>,
}

#[derive(Serialize)]
pub struct RunResults {
    pub machine: Machine,
    pub settings: Settings,
    pub rounds: Vec<RoundResult>,
    pub memory: Option<MemoryResult>,
    pub memory_problem: Option<String>,
}

// === reductions ===

/// The median; infinities (an overloaded phase's p99) count, NaN does not.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl RunResults {
    /// The valid results of `kind`, by round.
    pub fn of(&self, kind: Kind) -> HashMap<usize, &RoundResult> {
        self.rounds
            .iter()
            .filter(|r| r.kind == kind && r.valid)
            .map(|r| (r.round, r))
            .collect()
    }

    /// Median over rounds of `f` on `kind`'s valid results.
    pub fn median_of(&self, kind: Kind, f: impl Fn(&RoundResult) -> Option<f64>) -> Option<f64> {
        median(self.of(kind).values().filter_map(|r| f(r)).collect())
    }

    /// Median over rounds of `f(a) / f(b)`, both from the same round.
    pub fn median_ratio(
        &self,
        a: Kind,
        b: Kind,
        f: impl Fn(&RoundResult) -> Option<f64>,
    ) -> Option<f64> {
        let bs = self.of(b);
        let ratios = self
            .of(a)
            .iter()
            .filter_map(|(round, ra)| {
                let rb = bs.get(round)?;
                Some(f(ra)? / f(rb)?)
            })
            .collect();
        median(ratios)
    }

    /// Whether every contender in every round was valid, and the memory phase too.
    pub fn all_valid(&self) -> bool {
        self.rounds.iter().all(|r| r.valid)
            && self.memory_problem.is_none()
            && self
                .memory
                .as_ref()
                .is_none_or(|m| m.wrong == 0 && m.errors * 100 <= m.tokens_checked.max(1))
    }
}

pub fn sat_rps(r: &RoundResult) -> Option<f64> {
    r.saturation.as_ref().map(|p| p.rps)
}

/// p99 at half rate; unbounded (infinite) when the contender could not keep that rate.
pub fn half_p99(r: &RoundResult) -> Option<f64> {
    r.half.as_ref().map(bounded_p99)
}

/// p99 at the fixed rate; unbounded when the contender could not keep it.
pub fn fixed_p99(r: &RoundResult) -> Option<f64> {
    r.fixed.as_ref().map(bounded_p99)
}

fn bounded_p99(p: &PhaseResult) -> f64 {
    if p.overloaded {
        f64::INFINITY
    } else {
        p.p99_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(allowed: u64, denied: u64) -> PhaseResult {
        PhaseResult {
            offered_rps: None,
            rps: allowed as f64,
            overloaded: false,
            allowed,
            denied,
            wrong: 0,
            errors: 0,
            p50_ms: 1.0,
            p99_ms: 1.0,
            p999_ms: 1.0,
            percentiles_ms: vec![],
            cpu_us_per_check: vec![],
            generator_cpu_pct: 0.0,
            hist: Histogram::new(3).unwrap(),
        }
    }

    fn judged(kind: Kind, allowed: u64, denied: u64) -> RoundResult {
        let mut rr = RoundResult::new(1, kind);
        rr.saturation = Some(phase(allowed, denied));
        rr.judge();
        rr
    }

    #[test]
    fn a_mix_round_is_invalid_when_its_share_of_denials_is_far_from_a_tenth() {
        assert!(judged(Kind::Mix, 10_000, 1_000).valid);
        assert!(judged(Kind::Mix, 10_000, 600).valid);
        assert!(!judged(Kind::Mix, 10_000, 300).valid);
        assert!(!judged(Kind::Mix, 10_000, 3_000).valid);
        // Too few decisions (a smoke run) say nothing either way.
        assert!(judged(Kind::Mix, 100, 0).valid);
        // Only the mix is built with denials.
        assert!(judged(Kind::Repeated, 10_000, 0).valid);
    }
}
