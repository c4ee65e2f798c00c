//! One contender in one round: start its processes, check its decisions, measure saturation,
//! then latency at half the group's rate reference's saturation and (direct gRPC contenders of
//! the latency target) at the fixed rate, read peak memory, stop everything.

use std::collections::HashMap;
use std::time::Duration;

use crate::contenders::{self, Env, Kind, Started};
use crate::load::{self, Shape};
use crate::procs::vm_kib;
use crate::results::{PhaseResult, RoleValue, RoundResult};

pub struct Opts {
    pub concurrency: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Clock ticks per second of /proc times.
    pub ticks: u64,
    /// The fixed open-loop rate (`--fixed-rate`, 1,000 checks/s), 0 for none.
    pub fixed_rate: f64,
}

/// Runs `kind` once. `refs` holds this round's saturation throughput of the rate references
/// measured so far.
pub async fn run(
    kind: Kind,
    round: usize,
    seq: usize,
    env: &Env,
    opts: &Opts,
    refs: &HashMap<Kind, f64>,
) -> RoundResult {
    let mut rr = RoundResult::new(round, kind);
    let mut started = match contenders::start(kind, env, seq).await {
        Ok(s) => s,
        Err(e) => {
            rr.fail(format!("did not start: {e}"));
            return rr;
        }
    };
    if let Err(e) = measure(kind, &mut started, env, opts, refs, &mut rr).await {
        rr.fail(e);
    }
    started.stop().await;
    rr.judge();
    rr
}

async fn measure(
    kind: Kind,
    started: &mut Started,
    env: &Env,
    opts: &Opts,
    refs: &HashMap<Kind, f64>,
    rr: &mut RoundResult,
) -> Result<(), String> {
    contenders::verify(kind, started, env)
        .await
        .map_err(|e| format!("wrong decision before load: {e}"))?;
    rr.idle_rss_kib = started
        .idle_rss_kib
        .iter()
        .map(|&(role, kib)| RoleValue {
            role,
            value: kib as f64,
        })
        .collect();
    let pids: Vec<u32> = started.watched.iter().map(|w| w.1).collect();
    let closed = Shape {
        concurrency: opts.concurrency,
        rate: None,
        warmup: opts.warmup,
        measure: opts.measure,
    };
    if let Some(cold) = &started.cold {
        // The mix's first pass, before the steady state it leaves behind is measured.
        let phase = load::run(cold, &closed, &pids).await?;
        started.check_alive()?;
        rr.cold = Some(PhaseResult::from_phase(
            phase,
            None,
            &started.watched,
            opts.ticks,
        ));
    }
    let sat = load::run(&started.target, &closed, &pids).await?;
    started.check_alive()?;
    let sat = PhaseResult::from_phase(sat, None, &started.watched, opts.ticks);
    let own = sat.rps;
    rr.saturation = Some(sat);

    let reference = kind.rate_reference();
    let (basis_rps, basis) = match refs.get(&reference) {
        Some(&r) if kind != reference => {
            (r, format!("{} saturation, same round", reference.name()))
        }
        _ if kind == reference => (own, "own saturation".to_owned()),
        _ => (
            own,
            format!("own saturation ({} did not run validly)", reference.name()),
        ),
    };
    let rate = (basis_rps / 2.0).max(10.0);
    rr.half_rate_basis = Some(basis);
    let open = Shape {
        rate: Some(rate),
        ..closed.clone()
    };
    let half = load::run(&started.target, &open, &pids).await?;
    started.check_alive()?;
    rr.half = Some(PhaseResult::from_phase(
        half,
        Some(rate),
        &started.watched,
        opts.ticks,
    ));
    if kind.runs_fixed_rate() && opts.fixed_rate > 0.0 {
        let fixed = Shape {
            rate: Some(opts.fixed_rate),
            ..closed
        };
        let phase = load::run(&started.target, &fixed, &pids).await?;
        started.check_alive()?;
        rr.fixed = Some(PhaseResult::from_phase(
            phase,
            Some(opts.fixed_rate),
            &started.watched,
            opts.ticks,
        ));
    }
    rr.peak_rss_kib = started
        .watched
        .iter()
        .map(|&(role, pid)| {
            vm_kib(pid, "VmHWM").map(|kib| RoleValue {
                role,
                value: kib as f64,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(())
}

/// One progress line for the terminal.
pub fn progress(rr: &RoundResult) -> String {
    let mut line = format!("round {} · {}: ", rr.round, rr.label);
    if let Some(p) = &rr.saturation {
        let cpu: Vec<String> = p
            .cpu_us_per_check
            .iter()
            .map(|v| format!("{} {:.0} µs", v.role, v.value))
            .collect();
        line.push_str(&format!(
            "{:.0} checks/s, p99 {:.2} ms, CPU/check {} (generator {:.0}%)",
            p.rps,
            p.p99_ms,
            cpu.join(" + "),
            p.generator_cpu_pct
        ));
    }
    for (name, phase) in [("half", &rr.half), ("fixed", &rr.fixed)] {
        let Some(p) = phase else { continue };
        line.push_str(&format!("; {name}"));
        let offered = p.offered_rps.unwrap_or(0.0);
        if p.overloaded {
            line.push_str(&format!(
                "; at {offered:.0}/s OVERLOADED (achieved {:.0}/s)",
                p.rps
            ));
        } else {
            line.push_str(&format!(
                "; at {offered:.0}/s p50 {:.3} ms p99 {:.3} ms",
                p.p50_ms, p.p99_ms
            ));
        }
    }
    if let Some(p) = rr.saturation.as_ref().filter(|p| p.denied > 0) {
        line.push_str(&format!(
            "; {:.1}% denied",
            p.denied as f64 * 100.0 / p.allowed.max(1) as f64
        ));
    }
    if !rr.valid {
        line.push_str(&format!(
            "  INVALID: {}",
            rr.problem.as_deref().unwrap_or("?")
        ));
    }
    line
}
