//! The soak (`scripts/soak`, `bench soak`): one mcp-authz at half its saturation rate for
//! minutes with a realistic mix (repeated and distinct tokens of several principals, tenants
//! and scopes; allowed and denied MCP requests under the shipped policies), the IdP rotating
//! its keys every minute and a policy file rewritten every 30 s. Every 10 s it records RSS,
//! open descriptors, threads, tokio tasks and p99; every answer is compared with the status
//! expected by construction. Writes `report.md`, `results.json` and `soak.svg`; fails when
//! memory or descriptors grow, or on any error or wrong decision.

mod drive;
mod mix;
mod observe;
mod plot;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_authz::testutil::{FakeIdp, config_yaml_with_policies, copy_shipped_policies};

use crate::contenders::launch_mcp_authz;
use crate::grpc::check_once;
use crate::load::{self, Shape, Target};
use crate::procs::Pinning;
use drive::Load;
use mix::{Mix, Schedule};
use observe::Metrics;
use report::{Results, Sample, Settings, Tolerances};

/// `bench soak`: the long run. Defaults are the committed report's.
#[derive(clap::Args)]
pub struct Args {
    /// Minutes of load (fractional allowed).
    #[arg(long, conflicts_with = "seconds")]
    minutes: Option<f64>,
    /// Seconds of load, instead of `--minutes` [600].
    #[arg(long)]
    seconds: Option<f64>,
    /// Checks per second to offer; by default half the saturation rate, measured first.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of the closed-loop saturation measurement (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    saturation_seconds: f64,
    /// Seconds between readings (RSS, descriptors, threads, tasks, p99 of the window).
    #[arg(long, default_value_t = 10.0)]
    sample_every: f64,
    /// Seconds between key rotations of the IdP.
    #[arg(long, default_value_t = 60.0)]
    rotate_every: f64,
    /// Seconds between rewrites of a policy file.
    #[arg(long, default_value_t = 30.0)]
    reload_every: f64,
    /// Distinct tokens minted per key generation (each used about once per rotation).
    #[arg(long, default_value_t = 6000)]
    distinct: usize,
    /// mcp-authz's `cache.tokens` [4096, or less when the run is too short to fill it in its
    /// first quarter: a cache still filling would read as growth].
    #[arg(long)]
    cache: Option<usize>,
    /// Requests in flight at most (open-loop workers).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the checks are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// RSS may grow by this share of its mid-run value over the second half...
    #[arg(long, default_value_t = 10.0)]
    rss_tolerance_pct: f64,
    /// ...plus this many MiB (allocator slack).
    #[arg(long, default_value_t = 4.0)]
    rss_slack_mib: f64,
    /// Open descriptors may grow by this many over the second half.
    #[arg(long, default_value_t = 4)]
    fd_tolerance: u64,
    /// Output directory [docs/reliability/soak].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The mcp-authz binary [target/<profile>/mcp-authz beside this example].
    #[arg(long)]
    mcp_authz: Option<PathBuf>,
}

/// Runs the soak; `Ok(false)` when it ran but did not pass.
pub async fn run(args: Args) -> Result<bool, String> {
    let duration_s = match (args.seconds, args.minutes) {
        (Some(s), _) => s,
        (None, Some(m)) => m * 60.0,
        (None, None) => 600.0,
    };
    if !(duration_s.is_finite() && duration_s >= 2.0 * args.sample_every && args.sample_every > 0.0)
    {
        return Err(format!(
            "the run ({duration_s}s) must last at least two sampling periods ({}s each)",
            args.sample_every
        ));
    }
    let schedule = Schedule::new(args.rotate_every)?;
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| manifest.join("docs/reliability/soak"));
    std::fs::create_dir_all(&out).map_err(|e| format!("`{}`: {e}", out.display()))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mcp_authz = args
        .mcp_authz
        .clone()
        .unwrap_or_else(|| crate::beside(&exe, 1, "mcp-authz"));
    crate::must_exist(
        &mcp_authz,
        "mcp-authz",
        "build it with `cargo build --features test-util --bin mcp-authz --example bench` \
         (scripts/soak does)",
    )?;

    // Keys and tokens for every rotation, minted on all cores before anything is measured.
    let generations = (duration_s / schedule.rotate_s).floor() as usize + 1;
    let lifetime_s = duration_s as i64 + 3600;
    let idp = FakeIdp::start(&[]).await;
    eprintln!(
        "minting {generations} key generations ({} distinct tokens each)...",
        args.distinct
    );
    let gens = (0..generations)
        .map(|g| mix::generation(g, &idp.issuer, args.distinct.max(1), lifetime_s))
        .collect::<Result<Vec<_>, _>>()?;
    let mix = Mix::new(schedule, gens)?;
    idp.set_keys(&mix.jwks_of(&schedule.published(0.0)));
    idp.set_cache_control(Some(&format!("max-age={}", schedule.max_age_s)));
    let pin = Pinning::apply();
    eprintln!("{}", pin.describe());

    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let policies = work.path().join("policies");
    std::fs::create_dir_all(&policies).map_err(|e| e.to_string())?;
    copy_shipped_policies(&policies);
    // The rate decides the cache size, and the cache is configured at startup: a measurement
    // run first when the rate is not given.
    let saturation_rps = match args.rate {
        Some(_) => None,
        None => Some(measure_saturation(&args, &mcp_authz, &pin, &work, &idp, &mix).await?),
    };
    let rate = args
        .rate
        .or(saturation_rps.map(|s| s / 2.0))
        .unwrap_or(1.0)
        .max(1.0);
    let cache = args.cache.unwrap_or_else(|| {
        let distinct_in_first_quarter = rate * Mix::distinct_share() * duration_s / 4.0;
        (distinct_in_first_quarter as usize).clamp(64, 4096)
    });
    let issuer = idp.issuer.clone();
    let yaml = |ports: [u16; 3]| config(&issuer, &policies, ports, Some(cache));
    let launched = launch_mcp_authz(
        &mcp_authz,
        &pin,
        &work.path().join("soak-mcp-authz"),
        &yaml,
        &[],
    )
    .await?;
    let mut proc = launched.proc;
    let pid = proc.pid;
    let metrics = Metrics::new(launched.admin)?;
    precheck(launched.grpc, &mix).await?;

    let sample_every = Duration::from_secs_f64(args.sample_every);
    let duration = Duration::from_secs_f64(duration_s);
    eprintln!(
        "soak: {duration_s}s at {rate:.0} checks/s{}, cache {cache} tokens, keys rotated every \
         {}s, a policy file rewritten every {}s",
        saturation_rps.map_or(String::new(), |s| format!(" (saturation {s:.0}/s)")),
        args.rotate_every,
        args.reload_every
    );
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + duration;
    let idle = metrics.read(pid).await?;
    let load = Load {
        addr: launched.grpc,
        connections: args.connections,
        concurrency: args.concurrency,
        rate,
        duration,
        sample_every,
    };
    let sampler = async {
        let mut readings = Vec::new();
        let mut w = 1u32;
        loop {
            let at = start + sample_every * w;
            if at > end + Duration::from_millis(1) {
                break;
            }
            // The last reading just before the end: at the end the generator closes its
            // connections, which is no change of mcp-authz's own.
            let at = at.min(end - Duration::from_millis(100));
            tokio::time::sleep_until(at.into()).await;
            proc.check_alive()?;
            let r = metrics.read(pid).await?;
            eprintln!(
                "  t={:>5.0}s  RSS {:>6.1} MB  fds {:>3}  threads {:>3}{}",
                (at - start).as_secs_f64(),
                r.rss_kib as f64 / 1024.0,
                r.fds,
                r.threads,
                r.tasks.map_or(String::new(), |t| format!("  tasks {t}"))
            );
            readings.push(((at - start).as_secs_f64(), r));
            w += 1;
        }
        Ok::<_, String>(readings)
    };
    let rewritten = drive::policy_file(&policies);
    let (tally, readings, keys, rewrites) = tokio::join!(
        drive::run(&load, mix.clone(), start),
        sampler,
        drive::rotate_keys(&idp, &mix, start, end),
        drive::rewrite_policies(
            &rewritten,
            Duration::from_secs_f64(args.reload_every),
            &metrics,
            start,
            end
        ),
    );
    let alive = proc.check_alive();
    let peak_rss_kib = crate::procs::vm_kib(pid, "VmHWM").unwrap_or(0);
    proc.stop().await;
    alive?;
    let (tally, readings, rewrites) = (tally?, readings?, rewrites?);

    let samples: Vec<Sample> = readings
        .into_iter()
        .zip(tally.windows.iter())
        .map(|((t_s, reading), stats)| Sample::new(t_s, stats, args.sample_every, reading))
        .collect();
    let results = Results::new(
        Settings {
            binary: mcp_authz.display().to_string(),
            duration_s,
            rate,
            saturation_rps,
            saturation_s: args.saturation_seconds,
            concurrency: args.concurrency,
            connections: args.connections,
            sample_every_s: args.sample_every,
            reload_every_s: args.reload_every,
            schedule,
            generations,
            distinct_per_generation: args.distinct,
            cache_tokens: cache,
            tolerances: Tolerances {
                rss_pct: args.rss_tolerance_pct,
                rss_slack_mib: args.rss_slack_mib,
                fds: args.fd_tolerance,
            },
        },
        crate::machine::describe(None, &pin),
        idle,
        peak_rss_kib,
        samples,
        &tally,
        keys,
        rewrites,
    );
    report::write(&out, &results)?;
    eprintln!("{}", results.verdict.summary());
    eprintln!("report: {}", out.join("report.md").display());
    Ok(results.verdict.passed)
}

/// The configuration: the fake IdP (refreshed at its `max-age`, at least every second), the
/// run's copy of the shipped policies, server `demo` of tenant `acme`.
fn config(
    issuer: &str,
    policies: &std::path::Path,
    ports: [u16; 3],
    cache: Option<usize>,
) -> String {
    let [grpc, admin, admin_grpc] = ports;
    let mut yaml = config_yaml_with_policies(
        issuer,
        RESOURCE_URL,
        "    key_refresh: {min_interval: 1s}",
        policies,
    )
    // `admin_grpc` first: its line also ends in `grpc: 127.0.0.1:0`.
    .replace(
        "admin_grpc: 127.0.0.1:0",
        &format!("admin_grpc: 127.0.0.1:{admin_grpc}"),
    )
    .replace("admin: 127.0.0.1:0", &format!("admin: 127.0.0.1:{admin}"))
    .replace("grpc: 127.0.0.1:0", &format!("grpc: 127.0.0.1:{grpc}"));
    if let Some(n) = cache {
        yaml.push_str(&format!("cache: {{tokens: {n}}}\n"));
    }
    yaml
}

const RESOURCE_URL: &str = crate::tokens::RESOURCE;

/// Sends every (profile, case) once, and a request without a token: the expected statuses
/// must hold before any load (a wrong table would otherwise show as a wall of wrong decisions).
async fn precheck(addr: std::net::SocketAddr, mix: &Arc<Mix>) -> Result<(), String> {
    let mut wrong = Vec::new();
    let first = &mix.generations[0];
    for r in first.each_case().into_iter().chain([mix.no_token()]) {
        let answer = check_once(addr, r.framed.clone()).await;
        if let load::Outcome::Wrong(why) | load::Outcome::Error(why) =
            drive::judge(answer, r.expect, r.what)
        {
            wrong.push(why);
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "before the soak, these requests did not get their expected status:\n  {}",
            wrong.join("\n  ")
        ))
    }
}

/// A closed-loop run of the allowed requests of the first key generation against a fresh
/// mcp-authz (default cache): the checks per second it completes.
async fn measure_saturation(
    args: &Args,
    program: &std::path::Path,
    pin: &Pinning,
    work: &tempfile::TempDir,
    idp: &FakeIdp,
    mix: &Arc<Mix>,
) -> Result<f64, String> {
    let policies = work.path().join("policies");
    let yaml = |ports: [u16; 3]| config(&idp.issuer, &policies, ports, None);
    let launched = launch_mcp_authz(
        program,
        pin,
        &work.path().join("saturation-mcp-authz"),
        &yaml,
        &[],
    )
    .await?;
    let target = Target::Grpc {
        addr: launched.grpc,
        connections: args.connections,
        requests: Arc::new(mix.generations[0].allowed()),
        expect: None,
        cursor: None,
    };
    let shape = Shape {
        concurrency: args.concurrency,
        rate: None,
        warmup: Duration::from_secs(1),
        measure: Duration::from_secs_f64(args.saturation_seconds.max(0.5)),
    };
    eprintln!(
        "measuring saturation ({}s, closed loop, {} in flight)...",
        shape.measure.as_secs_f64(),
        shape.concurrency
    );
    let phase = load::run(&target, &shape, &[launched.proc.pid]).await;
    launched.proc.stop().await;
    let phase = phase?;
    if phase.stats.wrong + phase.stats.errors > 0 {
        return Err(format!(
            "saturation run: {} wrong decisions, {} errors ({})",
            phase.stats.wrong,
            phase.stats.errors,
            phase.stats.first_problem.unwrap_or_default()
        ));
    }
    Ok(phase.rps())
}
