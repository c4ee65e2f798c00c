//! The soak's results (`results.json`), its verdict (flat memory and descriptors, no error, no
//! wrong decision, every policy rewrite loaded, the key rotation exercised) and `report.md`.

use std::fmt::Write;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::Stats;
use crate::results::Machine;
use crate::soak::drive::{KeyEvent, Rewrite, Tally};
use crate::soak::mix::{Kind, Schedule};
use crate::soak::observe::Reading;

#[derive(Serialize)]
pub struct Tolerances {
    /// RSS may grow by this share of its value at half time, over the second half...
    pub rss_pct: f64,
    /// ...plus this many MiB.
    pub rss_slack_mib: f64,
    /// Open descriptors may grow by this many over the second half.
    pub fds: u64,
}

#[derive(Serialize)]
pub struct Settings {
    pub binary: String,
    pub duration_s: f64,
    /// Checks per second offered (open loop).
    pub rate: f64,
    /// Measured closed-loop throughput, when the rate was not given.
    pub saturation_rps: Option<f64>,
    pub saturation_s: f64,
    pub concurrency: usize,
    pub connections: usize,
    pub sample_every_s: f64,
    pub reload_every_s: f64,
    pub schedule: Schedule,
    pub generations: usize,
    pub distinct_per_generation: usize,
    pub cache_tokens: usize,
    pub tolerances: Tolerances,
}

/// One reading and the requests sent (by intended time) in the window it closes.
#[derive(Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub wrong: u64,
    pub errors: u64,
    #[serde(flatten)]
    pub reading: Reading,
}

impl Sample {
    pub fn new(t_s: f64, stats: &Stats, window_s: f64, reading: Reading) -> Self {
        let requests = stats.ok + stats.wrong + stats.errors;
        Self {
            t_s,
            requests,
            rps: requests as f64 / window_s,
            p50_ms: stats.ms(0.50),
            p99_ms: stats.ms(0.99),
            max_ms: stats.hist.max() as f64 / 1000.0,
            wrong: stats.wrong,
            errors: stats.errors,
            reading,
        }
    }
}

#[derive(Serialize)]
pub struct KindRow {
    pub kind: Kind,
    pub label: &'static str,
    pub expect: u16,
    pub sent: u64,
    pub right: u64,
    pub wrong: u64,
    pub errors: u64,
}

#[derive(Serialize)]
pub struct Totals {
    pub requests: u64,
    pub right: u64,
    pub wrong: u64,
    pub errors: u64,
    pub allowed: u64,
    pub denied: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub first_problem: Option<String>,
}

/// A growth judged against its tolerance.
#[derive(Serialize)]
pub struct Flatness {
    /// The reading at half time (the first at or after it).
    pub reference: u64,
    /// The highest reading after it.
    pub max_after: u64,
    pub growth: i64,
    pub allowed: i64,
    pub flat: bool,
}

impl Flatness {
    fn judge(values: &[(f64, u64)], half_s: f64, allowed_of: impl Fn(u64) -> i64) -> Self {
        let idx = values
            .iter()
            .position(|(t, _)| *t >= half_s)
            .unwrap_or(values.len().saturating_sub(1));
        let reference = values.get(idx).map_or(0, |v| v.1);
        let max_after = values
            .iter()
            .skip(idx)
            .map(|v| v.1)
            .max()
            .unwrap_or(reference);
        let growth = max_after as i64 - reference as i64;
        let allowed = allowed_of(reference);
        Self {
            reference,
            max_after,
            growth,
            allowed,
            flat: growth <= allowed,
        }
    }
}

#[derive(Serialize)]
pub struct Verdict {
    pub passed: bool,
    /// RSS in KiB.
    pub rss: Flatness,
    pub fds: Flatness,
    pub rotations: usize,
    /// Tokens of withdrawn keys were sent (and must have got 401): the rotation was exercised
    /// through to the end, not only published.
    pub withdrawn_key_requests: u64,
    pub rewrites: usize,
    pub rewrites_loaded: usize,
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn summary(&self) -> String {
        if self.passed {
            format!(
                "soak PASSED: RSS {:+} KiB over the second half (allowed {}), fds {:+} \
                 (allowed {}), no error, no wrong decision",
                self.rss.growth, self.rss.allowed, self.fds.growth, self.fds.allowed
            )
        } else {
            format!("soak FAILED:\n  {}", self.problems.join("\n  "))
        }
    }
}

#[derive(Serialize)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    /// Before any load (after the readiness check and the check of every case).
    pub idle: Reading,
    pub peak_rss_kib: u64,
    pub totals: Totals,
    pub kinds: Vec<KindRow>,
    pub samples: Vec<Sample>,
    pub key_events: Vec<KeyEvent>,
    pub rewrites: Vec<Rewrite>,
    pub verdict: Verdict,
}

impl Results {
    #[expect(clippy::too_many_arguments, reason = "one call site, every part named")]
    pub fn new(
        settings: Settings,
        machine: Machine,
        idle: Reading,
        peak_rss_kib: u64,
        samples: Vec<Sample>,
        tally: &Tally,
        key_events: Vec<KeyEvent>,
        rewrites: Vec<Rewrite>,
    ) -> Self {
        let mut all: Option<Histogram<u64>> = None;
        let mut first_problem = None;
        for w in &tally.windows {
            match &mut all {
                Some(h) => {
                    let _ = h.add(&w.hist);
                }
                None => all = Some(w.hist.clone()),
            }
            if first_problem.is_none() {
                first_problem.clone_from(&w.first_problem);
            }
        }
        let q = |p: f64| {
            all.as_ref()
                .map_or(0.0, |h| h.value_at_quantile(p) as f64 / 1e3)
        };
        let kinds: Vec<KindRow> = tally
            .kinds
            .iter()
            .map(|((kind, expect), c)| KindRow {
                kind: *kind,
                label: kind.label(),
                expect: *expect,
                sent: c.sent,
                right: c.right,
                wrong: c.wrong,
                errors: c.errors,
            })
            .collect();
        let sum = |f: fn(&KindRow) -> u64| kinds.iter().map(f).sum::<u64>();
        let totals = Totals {
            requests: sum(|k| k.sent),
            right: sum(|k| k.right),
            wrong: sum(|k| k.wrong),
            errors: sum(|k| k.errors),
            allowed: kinds
                .iter()
                .filter(|k| k.expect == 200)
                .map(|k| k.right)
                .sum(),
            denied: kinds
                .iter()
                .filter(|k| k.expect != 200)
                .map(|k| k.right)
                .sum(),
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: all.as_ref().map_or(0.0, |h| h.max() as f64 / 1e3),
            first_problem,
        };
        let verdict = judge(&settings, &samples, &totals, &kinds, &key_events, &rewrites);
        Self {
            machine,
            settings,
            idle,
            peak_rss_kib,
            totals,
            kinds,
            samples,
            key_events,
            rewrites,
            verdict,
        }
    }
}

fn judge(
    s: &Settings,
    samples: &[Sample],
    totals: &Totals,
    kinds: &[KindRow],
    keys: &[KeyEvent],
    rewrites: &[Rewrite],
) -> Verdict {
    let half = s.duration_s / 2.0;
    let rss: Vec<(f64, u64)> = samples.iter().map(|x| (x.t_s, x.reading.rss_kib)).collect();
    let fds: Vec<(f64, u64)> = samples.iter().map(|x| (x.t_s, x.reading.fds)).collect();
    let t = &s.tolerances;
    let rss = Flatness::judge(&rss, half, |r| {
        (r as f64 * t.rss_pct / 100.0 + t.rss_slack_mib * 1024.0) as i64
    });
    let fds = Flatness::judge(&fds, half, |_| t.fds as i64);
    let withdrawn_key_requests = kinds
        .iter()
        .filter(|k| k.kind == Kind::WithdrawnKey)
        .map(|k| k.sent)
        .sum();
    // Rotations: publications of a new generation (the first event is the start).
    let rotations = keys.len().saturating_sub(1).div_ceil(2);
    let rewrites_loaded = rewrites
        .iter()
        .filter(|r| r.loaded_after_s.is_some())
        .count();
    let mut problems = Vec::new();
    if samples.len() < 2 {
        problems.push(format!(
            "only {} readings: too short to judge",
            samples.len()
        ));
    }
    if !rss.flat {
        problems.push(format!(
            "RSS grew by {} KiB over the second half (from {} KiB; allowed {} KiB)",
            rss.growth, rss.reference, rss.allowed
        ));
    }
    if !fds.flat {
        problems.push(format!(
            "open descriptors grew by {} over the second half (from {}; allowed {})",
            fds.growth, fds.reference, fds.allowed
        ));
    }
    if totals.errors > 0 || totals.wrong > 0 {
        problems.push(format!(
            "{} errors and {} wrong decisions in {} requests (first: {})",
            totals.errors,
            totals.wrong,
            totals.requests,
            totals.first_problem.as_deref().unwrap_or("?")
        ));
    }
    if rewrites_loaded < rewrites.len() {
        problems.push(format!(
            "{} of {} policy rewrites were not loaded within 10 s",
            rewrites.len() - rewrites_loaded,
            rewrites.len()
        ));
    }
    let sc = &s.schedule;
    // A run long enough to reach a rotation's withdrawn-key window must have sent there.
    if s.duration_s > sc.rotate_s * 1.5 + sc.margin_s + s.sample_every_s
        && withdrawn_key_requests == 0
    {
        problems.push("no token of a withdrawn key was sent: the rotation did not run".into());
    }
    Verdict {
        passed: problems.is_empty(),
        rss,
        fds,
        rotations,
        withdrawn_key_requests,
        rewrites: rewrites.len(),
        rewrites_loaded,
        problems,
    }
}

pub fn write(out: &Path, r: &Results) -> Result<(), String> {
    let json = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    let put = |name: &str, text: &str| {
        std::fs::write(out.join(name), text)
            .map_err(|e| format!("cannot write `{}`: {e}", out.join(name).display()))
    };
    put("results.json", &json)?;
    put("report.md", &render(r))?;
    crate::soak::plot::draw(r, &out.join("soak.svg"))
}

fn mb(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| v.to_string())
}

pub fn render(r: &Results) -> String {
    let s = &r.settings;
    let v = &r.verdict;
    let t = &r.totals;
    let mut out = String::new();
    let _ = writeln!(out, "# mcp-authz soak report\n");
    let _ = writeln!(
        out,
        "**{}**: {} checks in {:.0} s at {:.0} checks/s, {} allowed and {} denied as expected, \
         {} wrong decisions, {} errors. RSS {:+.1} MiB and open descriptors {:+} over the \
         second half (allowed {:.1} MiB and {}).\n",
        if v.passed { "PASSED" } else { "FAILED" },
        t.requests,
        s.duration_s,
        s.rate,
        t.allowed,
        t.denied,
        t.wrong,
        t.errors,
        v.rss.growth as f64 / 1024.0,
        v.fds.growth,
        v.rss.allowed as f64 / 1024.0,
        v.fds.allowed,
    );
    for p in &v.problems {
        let _ = writeln!(out, "- problem: {p}");
    }
    if !v.problems.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "![RSS, open descriptors and p99 over time](soak.svg)\n"
    );
    let _ = writeln!(
        out,
        "Command: `{}`, {}. Binary: `{}`.\n",
        r.machine.command, r.machine.date, s.binary
    );
    let _ = writeln!(
        out,
        "Machine: {} ({} CPUs, {:.1} GiB), {}, {}. {}.\n",
        r.machine.cpu_model,
        r.machine.cpus,
        r.machine.memory_gib,
        r.machine.kernel,
        r.machine.rustc,
        r.machine.pinning
    );
    let _ = writeln!(
        out,
        "The machine was shared: other builds (cargo, rustc) ran during the soak. That moves \
         the latency figures (and the saturation rate measured before the run), not memory or \
         descriptor flatness, nor the decisions.\n"
    );

    let _ = writeln!(out, "## Setup\n");
    let rate_basis = match s.saturation_rps {
        Some(sat) => format!(
            "half of the saturation rate, {sat:.0} checks/s, measured for {} s (closed loop, \
             the allowed requests of the first key generation) against a fresh instance",
            s.saturation_s
        ),
        None => "given with `--rate`".into(),
    };
    let sc = &s.schedule;
    let _ = writeln!(
        out,
        "- **Load**: {:.0} checks/s open loop ({rate_basis}), at most {} in flight over {} \
         HTTP/2 connections; latency counted from the intended send time.",
        s.rate, s.concurrency, s.connections
    );
    let _ = writeln!(
        out,
        "- **Mix** (per 100 requests): 70 with repeated tokens (3 per caller profile), 20 with \
         distinct tokens ({} per key generation, more than the cache holds), 5 with tokens of \
         the previous key while it is still published, 2 with tokens of a withdrawn key (401), \
         3 without a token (401). Eight caller profiles (tenants `acme` and `globex`; scopes \
         `mcp:connect`, `mcp:tools:weather`, `mcp:tools:files`, `mcp:tools:admin`, none; \
         groups `read-only`, `break-glass`) send `tools/call`, `tools/list`, `initialize`, \
         `resources/read` and GET, allowed or denied by the shipped policies; every request's \
         status is known by construction and compared.",
        s.distinct_per_generation
    );
    let _ = writeln!(
        out,
        "- **Key rotation** every {} s at a real JWKS/discovery server on 127.0.0.1 (`max-age` \
         {} s, `min_interval: 1s`): the new key (RS256 and ES256) is published, used for new \
         tokens {} s later, and the previous one withdrawn half-way through the rotation; its \
         tokens must get 401 from {} s after the withdrawal.",
        sc.rotate_s, sc.max_age_s, sc.margin_s, sc.margin_s
    );
    let _ = writeln!(
        out,
        "- **Policy reload** every {} s: `tools.cedar` rewritten in place (truncate and \
         write, as an editor saves), alternating a trailing comment so the decisions stay \
         the same; each rewrite must show in `mcp_authz_policy_reloads_total{{outcome=\"success\"}}`.",
        s.reload_every_s
    );
    let _ = writeln!(
        out,
        "- **mcp-authz**: `cache.tokens` {}; readings every {} s: RSS (`VmRSS`), open \
         descriptors (`/proc/PID/fd`), threads (`/proc/PID/status`), tokio tasks \
         (`mcp_authz_runtime_tasks`), cache entries.",
        s.cache_tokens, s.sample_every_s
    );
    let _ = writeln!(
        out,
        "- **Pass**: no error, no wrong decision, every rewrite loaded, tokens of a withdrawn \
         key sent (the rotation ran through); RSS over the second half at most {}% + {} MiB \
         above its value at half time, open descriptors at most {} above.\n",
        s.tolerances.rss_pct, s.tolerances.rss_slack_mib, s.tolerances.fds
    );

    let _ = writeln!(out, "## Results\n");
    let _ = writeln!(
        out,
        "| | |\n|---|---|\n| checks | {} ({} allowed, {} denied) |\n| wrong decisions | {} |\n\
         | errors | {} |\n| latency p50 / p99 / p99.9 / max | {:.2} / {:.2} / {:.2} / {:.1} ms |\n\
         | RSS idle / at half time / max after / peak | {} / {} / {} / {} MB |\n\
         | open descriptors idle / at half time / max after | {} / {} / {} |\n\
         | key rotations | {} ({} withdrawn-key requests answered 401) |\n\
         | policy rewrites loaded | {} of {} (median {:.2} s after the write) |\n",
        t.requests,
        t.allowed,
        t.denied,
        t.wrong,
        t.errors,
        t.p50_ms,
        t.p99_ms,
        t.p999_ms,
        t.max_ms,
        mb(r.idle.rss_kib),
        mb(v.rss.reference),
        mb(v.rss.max_after),
        mb(r.peak_rss_kib),
        r.idle.fds,
        v.fds.reference,
        v.fds.max_after,
        v.rotations,
        v.withdrawn_key_requests,
        v.rewrites_loaded,
        v.rewrites,
        median_reload(&r.rewrites),
    );
    if let Some(p) = &t.first_problem {
        let _ = writeln!(out, "First problem: {p}\n");
    }

    let _ = writeln!(out, "### Every {} s\n", s.sample_every_s);
    let _ = writeln!(
        out,
        "| t (s) | checks/s | p50 (ms) | p99 (ms) | max (ms) | wrong | errors | RSS (MB) | fds | threads | tokio tasks | cache entries | keys |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for x in &r.samples {
        let _ = writeln!(
            out,
            "| {:.0} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |",
            x.t_s,
            x.rps,
            x.p50_ms,
            x.p99_ms,
            x.max_ms,
            x.wrong,
            x.errors,
            mb(x.reading.rss_kib),
            x.reading.fds,
            x.reading.threads,
            opt(x.reading.tasks),
            opt(x.reading.cache_entries),
            opt(x.reading.jwks_keys),
        );
    }
    out.push('\n');

    let _ = writeln!(out, "### By kind of request\n");
    let _ = writeln!(
        out,
        "| request | expected | sent | right | wrong | errors |\n|---|---:|---:|---:|---:|---:|"
    );
    for k in &r.kinds {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            k.label,
            if k.expect == 200 {
                "allow".to_owned()
            } else {
                k.expect.to_string()
            },
            k.sent,
            k.right,
            k.wrong,
            k.errors
        );
    }
    out.push('\n');

    let _ = writeln!(out, "### Key set changes\n");
    let _ = writeln!(out, "| t (s) | generations published |\n|---:|---|");
    for e in &r.key_events {
        let gens: Vec<String> = e.generations.iter().map(|g| g.to_string()).collect();
        let _ = writeln!(out, "| {:.1} | {} |", e.t_s, gens.join(", "));
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "`results.json` holds every figure. Run it again with `scripts/soak` (10 minutes, \
         release build) or `scripts/soak --debug --seconds 30 --sample-every 3 ...` (the CI \
         version, see `scripts/test`)."
    );
    out
}

fn median_reload(rewrites: &[Rewrite]) -> f64 {
    let mut v: Vec<f64> = rewrites.iter().filter_map(|r| r.loaded_after_s).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
