//! The targets: each measured value against its goal, met or missed and by how much
//! (no judgement in a smoke run).

use std::fmt::Write;

use super::rate;
use crate::contenders::Kind;
use crate::results::{RunResults, fixed_p99, sat_rps};

/// One target: `measured` against `threshold`, higher (`at_least`) or lower is better.
struct Goal {
    what: &'static str,
    measured: Option<f64>,
    threshold: f64,
    at_least: bool,
    unit: &'static str,
}

const FIXED_REPEATED: &str =
    "at {rate} checks/s: mcp-authz, repeated token, p99 vs baseline p99 at the same rate";
const FIXED_MIX: &str =
    "at {rate} checks/s: mcp-authz, realistic mix, p99 vs baseline p99 at the same rate";

/// Memory per cached token: RSS growth from idle to the first checkpoint at or past twice the
/// cache size (the cache is full there), over the cache's entries. It counts everything a
/// cached token brings with it (the entry, the allocator's share, any per-caller state).
pub fn per_token_kib(m: &crate::memory::MemoryResult) -> Option<f64> {
    let cache = m.cache_tokens.filter(|&c| c > 0)? as u64;
    let idle = m.checkpoints.first()?;
    let full = m.checkpoints.iter().find(|c| c.tokens >= 2 * cache)?;
    Some((full.rss_kib as f64 - idle.rss_kib as f64) / cache as f64)
}

/// The Targets table, then notes on references the generator may have limited.
pub fn render(out: &mut String, r: &RunResults) {
    let mut goals = vec![
        Goal {
            what: "mcp-authz, repeated token: throughput vs baseline",
            measured: r.median_ratio(Kind::Repeated, Kind::Baseline, sat_rps),
            threshold: 0.60,
            at_least: true,
            unit: "×",
        },
        Goal {
            what: "mcp-authz, realistic mix (steady state): throughput vs baseline",
            measured: r.median_ratio(Kind::Mix, Kind::Baseline, sat_rps),
            threshold: 0.45,
            at_least: true,
            unit: "×",
        },
        Goal {
            what: "mcp-authz, distinct RS256: throughput vs baseline",
            measured: r.median_ratio(Kind::Rs256, Kind::Baseline, sat_rps),
            threshold: 0.25,
            at_least: true,
            unit: "×",
        },
        Goal {
            what: FIXED_REPEATED,
            measured: r.median_ratio(Kind::Repeated, Kind::Baseline, fixed_p99),
            threshold: 1.25,
            at_least: false,
            unit: "×",
        },
        Goal {
            what: FIXED_MIX,
            measured: r.median_ratio(Kind::Mix, Kind::Baseline, fixed_p99),
            threshold: 1.25,
            at_least: false,
            unit: "×",
        },
        Goal {
            what: "Envoy + mcp-authz: throughput vs Envoy + jwt_authn (JWT cache) + MCP filter + rbac",
            measured: r.median_ratio(Kind::EnvoyMcpAuthz, Kind::EnvoyMcp, sat_rps),
            threshold: 0.8,
            at_least: true,
            unit: "×",
        },
        Goal {
            what: "mcp-authz memory per cached token (memory phase)",
            measured: r.memory.as_ref().and_then(per_token_kib),
            threshold: 2.0,
            at_least: false,
            unit: " KiB",
        },
    ];
    let idle = r
        .rounds
        .iter()
        .flat_map(|x| x.idle_rss_kib.iter())
        .filter(|v| v.role == "mcp-authz")
        .map(|v| v.value / 1024.0)
        .fold(None, |acc: Option<f64>, v| {
            Some(acc.map_or(v, |a| a.max(v)))
        });
    goals.push(Goal {
        what: "mcp-authz idle RSS (largest over all starts)",
        measured: idle,
        threshold: 30.0,
        at_least: false,
        unit: " MB",
    });
    let fixed_rate = rate(r.settings.fixed_rate);
    let _ = writeln!(
        out,
        "## Targets\n\n| target | goal | measured | verdict |\n|---|---|---|---|"
    );
    for g in goals {
        let goal = format!(
            "{} {}{}",
            if g.at_least { "≥" } else { "≤" },
            g.threshold,
            g.unit
        );
        let (measured, verdict) = match g.measured {
            None => (
                "–".into(),
                "not measured (contender missing or invalid)".into(),
            ),
            Some(v) if v.is_infinite() => (
                "unbounded".into(),
                if r.settings.smoke {
                    "no judgement (smoke run)".into()
                } else {
                    "**missed**: it could not sustain the half rate at all".into()
                },
            ),
            Some(v) => {
                let met = if g.at_least {
                    v >= g.threshold
                } else {
                    v <= g.threshold
                };
                let by = (v - g.threshold).abs();
                let pct = by / g.threshold * 100.0;
                let verdict = if r.settings.smoke {
                    "no judgement (smoke run)".into()
                } else if met {
                    format!("**met**, by {by:.2}{} ({pct:.0}%)", g.unit)
                } else {
                    format!("**missed**, by {by:.2}{} ({pct:.0}%)", g.unit)
                };
                (format!("{v:.2}{}", g.unit), verdict)
            }
        };
        let what = g.what.replace("{rate}", &fixed_rate);
        let _ = writeln!(out, "| {what} | {goal} | {measured} | {verdict} |");
    }
    let mem = match (&r.memory, &r.memory_problem) {
        (Some(m), _) => {
            let last = m.checkpoints.last().map_or(0, |c| c.rss_kib);
            let measured = format!(
                "{:.1} MB after {} tokens; {:+.1} MB since {} tokens",
                last as f64 / 1024.0,
                rate(m.tokens_checked as f64),
                m.growth_kib as f64 / 1024.0,
                rate(m.growth_from_tokens as f64)
            );
            let verdict = if r.settings.smoke {
                "no judgement (smoke run)".into()
            } else if !m.complete {
                "not measured: the phase hit its time limit".into()
            } else if m.bounded {
                "**met**".into()
            } else {
                "**missed**".into()
            };
            (measured, verdict)
        }
        (None, Some(p)) => ("–".into(), format!("failed: {p}")),
        (None, None) => ("–".into(), "not run".into()),
    };
    let _ = writeln!(
        out,
        "| mcp-authz RSS after {} distinct tokens | bounded (growth ≤ 10% + 4 MB once the cache is full) | {} | {} |\n",
        rate(r.settings.memory_tokens as f64),
        mem.0,
        mem.1
    );
    if let Some(v) = r.median_ratio(Kind::EnvoyMcpAuthz, Kind::EnvoyJwt, sat_rps) {
        let _ = writeln!(
            out,
            "For reference (no goal): Envoy + mcp-authz vs plain Envoy + jwt_authn + rbac (no MCP \
             parsing): {v:.2}×.\n"
        );
    }
    if let Some(v) = r.median_ratio(Kind::EnvoyMcpAuthzList, Kind::EnvoyMcpAuthz, sat_rps) {
        let _ = writeln!(
            out,
            "List calls (no goal): Envoy + mcp-authz sending `tools/list` of 20 tools through the \
             list filter (ext_proc, 16 removed) vs the same stack sending `tools/call`: {v:.2}× \
             the throughput; their CPU per request is in the table above.\n"
        );
    }
    let envoy_cpu = |x: &crate::results::RoundResult| {
        x.saturation.as_ref().and_then(|p| {
            p.cpu_us_per_check
                .iter()
                .find(|v| v.role == "envoy")
                .map(|v| v.value)
        })
    };
    let mcp = r.of(Kind::EnvoyMcp);
    let diffs: Vec<f64> = r
        .of(Kind::EnvoyJwt)
        .iter()
        .filter_map(|(round, jwt)| Some(envoy_cpu(mcp.get(round)?)? - envoy_cpu(jwt)?))
        .collect();
    if let Some(d) = crate::results::median(diffs) {
        let _ = writeln!(
            out,
            "The MCP filter's own cost at saturation: Envoy CPU per request with it minus without \
             it (jwt_authn + rbac both), median over rounds: {d:+.1} µs.\n"
        );
    }
    for reference in [Kind::Baseline, Kind::Envoy] {
        let generator = r.median_of(reference, |x| {
            x.saturation.as_ref().map(|p| p.generator_cpu_pct)
        });
        if let Some(g) = generator.filter(|g| *g >= 85.0) {
            let _ = writeln!(
                out,
                "Note: at saturation the load generator was busy {g:.0}% of the time against \
                 `{}`: that reference may have been limited by the generator, not by itself, so \
                 throughput ratios to it are upper bounds.\n",
                reference.label()
            );
        }
    }
}
