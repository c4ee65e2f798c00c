//! The side-by-side load benchmark (`scripts/bench`): an always-allow gRPC baseline, mcp-authz
//! with a repeated token, with a realistic mix (many callers, 20 tools, a tenth denied) and with
//! distinct RS256 and ES256 tokens, and four Envoy setups (no authorization, jwt_authn + rbac,
//! jwt_authn + the MCP filter + rbac, ext_authz to mcp-authz), measured in alternating rounds,
//! with latency at half of mcp-authz's saturation and at a fixed 1,000 checks/s, then
//! mcp-authz's memory under a million distinct tokens. Writes `report.md`,
//! `results.json` and `latency.svg`. Exits 0 only when every decision was right.
//! `bench soak` is the long run at half saturation (`scripts/soak`, the `soak` module).

#![expect(
    clippy::indexing_slicing,
    reason = "benchmark harness: an out-of-range index is a harness bug that should stop the run"
)]

mod contenders;
mod grpc;
mod http;
mod load;
mod machine;
mod memory;
mod mix;
mod plot;
mod procs;
mod report;
mod results;
mod round;
mod soak;
mod tokens;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mcp_authz::testutil::FakeIdp;

use contenders::{Env, Kind};
use procs::Pinning;
use results::{RunResults, Settings};
use tokens::Material;

/// The load benchmark. Every setting has a full-run default and a smoke default.
#[derive(Parser)]
#[command(about = "Side-by-side load benchmark of mcp-authz, an always-allow baseline and Envoy")]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Rounds; each starts every contender afresh, alternating them [3; smoke 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds measured per phase, after the warm-up [5; smoke 0.5].
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up seconds before each measured phase [1; smoke 0.2].
    #[arg(long)]
    warmup: Option<f64>,
    /// Requests in flight (gRPC) or HTTP/1.1 connections (Envoy).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the gRPC requests are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Distinct tokens per pool (RS256, ES256), minted before measuring [50000; smoke 200].
    #[arg(long)]
    pool: Option<usize>,
    /// Callers of the realistic mix, one RS256 token each [1000; smoke 40].
    #[arg(long)]
    mix_callers: Option<usize>,
    /// Distinct requests of the realistic mix's first pass, sent in a cycle [20000; smoke 500].
    #[arg(long)]
    mix_requests: Option<usize>,
    /// Requests of the mix's steady state: the first pass's callers and tools with new
    /// arguments, each sent once while they last (then cycling) [150000; smoke 2000].
    #[arg(long)]
    mix_steady_requests: Option<usize>,
    /// The fixed open-loop rate of the latency phase, checks/s (0: none) [1000; smoke 50].
    #[arg(long)]
    fixed_rate: Option<f64>,
    /// mcp-authz's verified-token cache size (`cache: {tokens: N}`) [10000; smoke 50].
    #[arg(long)]
    cache: Option<usize>,
    /// Distinct tokens of the memory phase [1000000; smoke 2000].
    #[arg(long)]
    memory_tokens: Option<u64>,
    /// Tiny run that checks every contender starts and decides right; no speed judgement.
    #[arg(long)]
    smoke: bool,
    /// Output directory [docs/benchmarks; smoke: a new temporary directory].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The mcp-authz binary [target/<profile>/mcp-authz beside this example].
    #[arg(long)]
    mcp_authz: Option<PathBuf>,
    /// The always-allow baseline [the allow_server example beside this one].
    #[arg(long)]
    allow_server: Option<PathBuf>,
    /// The Envoy binary [.venv/bin/envoy, installed by scripts/install-envoy].
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Run only these (comma-separated): repeated, baseline, mix, rs256, es256, envoy,
    /// envoy-jwt, envoy-mcp, envoy-mcp-authz, memory.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Internal: serve as the HTTP upstream behind Envoy.
    #[arg(long, hide = true)]
    upstream: bool,
    /// Internal: the upstream's listen address.
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[derive(clap::Subcommand)]
enum Command {
    /// mcp-authz at half its saturation rate for minutes, with key rotation and policy
    /// reloads: memory, descriptors and decisions must hold (scripts/soak).
    Soak(soak::Args),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.upstream {
        return match upstream::serve(args.listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Dropping `run` on a signal drops every child process handle, which kills the children.
    let outcome = rt.block_on(async {
        tokio::select! {
            r = async {
                match args.command {
                    Some(Command::Soak(soak)) => soak::run(soak).await,
                    None => run(args).await,
                }
            } => r,
            _ = mcp_authz::server::shutdown_signal() => Err("interrupted".to_owned()),
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "FAILED: a wrong decision, a contender that did not run, or a soak that did \
                 not hold (see the report)"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn selection(only: &[String]) -> Result<(Vec<Kind>, bool), String> {
    if only.is_empty() {
        return Ok((Kind::ALL.to_vec(), true));
    }
    let mut kinds = Vec::new();
    let mut memory = false;
    for name in only {
        match (name.as_str(), Kind::from_name(name)) {
            ("memory", _) => memory = true,
            (_, Some(k)) => kinds.push(k),
            _ => return Err(format!("`--only {name}`: no such contender")),
        }
    }
    // Keep the run order whatever the order given.
    let kinds = Kind::ALL
        .into_iter()
        .filter(|k| kinds.contains(k))
        .collect();
    Ok((kinds, memory))
}

/// A binary beside this example's own (`target/<profile>/examples/bench`).
fn beside(exe: &Path, up: usize, name: &str) -> PathBuf {
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for _ in 0..up {
        dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    dir.join(name)
}

fn must_exist(path: &Path, what: &str, hint: &str) -> Result<(), String> {
    if path.is_file() {
        Ok(())
    } else {
        Err(format!("{what} `{}` not found: {hint}", path.display()))
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let smoke = args.smoke;
    let pick =
        |v: Option<f64>, full: f64, small: f64| v.unwrap_or(if smoke { small } else { full });
    let rounds = args.rounds.unwrap_or(if smoke { 1 } else { 3 }).max(1);
    let measure = pick(args.duration, 5.0, 0.5);
    let warmup = pick(args.warmup, 1.0, 0.2);
    let pool = args.pool.unwrap_or(if smoke { 200 } else { 50_000 }).max(1);
    let cache = args.cache.unwrap_or(if smoke { 50 } else { 10_000 });
    let memory_tokens = args
        .memory_tokens
        .unwrap_or(if smoke { 2_000 } else { 1_000_000 });
    let mix_callers = args
        .mix_callers
        .unwrap_or(if smoke { 40 } else { 1_000 })
        .max(1);
    let mix_requests = args
        .mix_requests
        .unwrap_or(if smoke { 500 } else { 20_000 })
        .max(1);
    let mix_steady_requests = args
        .mix_steady_requests
        .unwrap_or(if smoke { 2_000 } else { 150_000 })
        .max(1);
    let fixed_rate = pick(args.fixed_rate, 1_000.0, 50.0).max(0.0);
    let (kinds, run_memory) = selection(&args.only)?;
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = match (&args.out, smoke) {
        (Some(o), _) => o.clone(),
        (None, false) => manifest.join("docs/benchmarks"),
        (None, true) => {
            std::env::temp_dir().join(format!("mcp-authz-bench-smoke-{}", std::process::id()))
        }
    };
    std::fs::create_dir_all(&out).map_err(|e| format!("`{}`: {e}", out.display()))?;

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let build = "build it with `cargo build --release --features test-util --bin mcp-authz \
                 --example allow_server --example bench` (scripts/bench does)";
    let mcp_authz = args
        .mcp_authz
        .clone()
        .unwrap_or_else(|| beside(&exe, 1, "mcp-authz"));
    let allow_server = args
        .allow_server
        .clone()
        .unwrap_or_else(|| beside(&exe, 0, "allow_server"));
    let envoy = args
        .envoy
        .clone()
        .unwrap_or_else(|| manifest.join(".venv/bin/envoy"));
    let uses_envoy = kinds.iter().any(|k| k.is_envoy());
    let needs_mcp_authz = kinds
        .iter()
        .any(|k| k.authorizes() && !matches!(k, Kind::EnvoyJwt | Kind::EnvoyMcp))
        || run_memory;
    if needs_mcp_authz {
        must_exist(&mcp_authz, "mcp-authz", build)?;
    }
    if kinds.contains(&Kind::Baseline) {
        must_exist(&allow_server, "allow_server", build)?;
    }
    if uses_envoy {
        must_exist(
            &envoy,
            "Envoy",
            "run scripts/install-envoy, or pass --envoy",
        )?;
    }

    // Keys, the IdP that publishes them, and every token, minted on all cores before the
    // generator pins itself to one.
    let keys = Material::keys();
    let idp = FakeIdp::start(&[&keys.0, &keys.1]).await;
    let rs = if kinds.contains(&Kind::Rs256) {
        pool
    } else {
        0
    };
    let es = if kinds.contains(&Kind::Es256) {
        pool
    } else {
        0
    };
    eprintln!("minting {rs} RS256 and {es} ES256 tokens...");
    let material = Material::mint(keys, &idp.issuer, rs, es)?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mix = if kinds.contains(&Kind::Mix) {
        eprintln!(
            "minting {mix_callers} callers and encoding {mix_requests} + {mix_steady_requests} mix requests..."
        );
        let m = mix::build(
            &material.rsa,
            &idp.issuer,
            work.path(),
            mix_callers,
            mix_requests,
            mix_steady_requests,
        )?;
        eprintln!(
            "mix: {} callers, {} tools, {:.1}% of the requests built to be denied",
            m.callers,
            m.tools,
            m.planned_denied_share * 100.0
        );
        Some(m)
    } else {
        None
    };
    let pin = Pinning::apply();
    eprintln!("{}", pin.describe());

    // `--cache 0` runs mcp-authz with the cache off (`cache: {tokens: 0}`).
    let (cache_tokens, cache_note) = (Some(cache), None);
    let env = Env {
        mcp_authz,
        allow_server,
        envoy: envoy.clone(),
        bench_exe: exe,
        pin: pin.clone(),
        dir: work.path().to_path_buf(),
        issuer: idp.issuer.clone(),
        material,
        cache_tokens,
        grpc_connections: args.connections.max(1),
        mix,
    };
    let opts = round::Opts {
        concurrency: args.concurrency.max(1),
        warmup: Duration::from_secs_f64(warmup.max(0.0)),
        measure: Duration::from_secs_f64(measure.max(0.05)),
        ticks: procs::clock_ticks(),
        fixed_rate,
    };

    let mut results = RunResults {
        machine: machine::describe(uses_envoy.then_some(envoy.as_path()), &pin),
        settings: Settings {
            smoke,
            rounds,
            duration_s: measure,
            warmup_s: warmup,
            concurrency: opts.concurrency,
            grpc_connections: env.grpc_connections,
            token_pool: pool,
            mix_callers,
            mix_tools: env.mix.as_ref().map_or(0, |m| m.tools),
            mix_requests,
            mix_steady_requests,
            mix_planned_denied_share: env.mix.as_ref().map(|m| m.planned_denied_share),
            fixed_rate,
            cache_tokens,
            cache_note,
            memory_tokens,
            contenders: kinds.iter().map(|k| k.name()).collect(),
        },
        rounds: vec![],
        memory: None,
        memory_problem: None,
    };
    let mut seq = 0;
    for round in 1..=rounds {
        let mut refs = HashMap::new();
        for &kind in &kinds {
            seq += 1;
            let rr = round::run(kind, round, seq, &env, &opts, &refs).await;
            eprintln!("{}", round::progress(&rr));
            if kind == kind.rate_reference()
                && rr.valid
                && let Some(p) = &rr.saturation
            {
                refs.insert(kind, p.rps);
            }
            results.rounds.push(rr);
        }
    }
    if run_memory {
        eprintln!("memory phase: {memory_tokens} distinct HS256 tokens...");
        let limit = Duration::from_secs(if smoke { 120 } else { 1800 });
        match memory::run(&env, memory_tokens, opts.concurrency, limit).await {
            Ok(m) => {
                eprintln!(
                    "memory phase: RSS {} MB at the end, bounded: {}",
                    m.checkpoints.last().map_or(0, |c| c.rss_kib) / 1024,
                    m.bounded
                );
                results.memory = Some(m);
            }
            Err(e) => {
                eprintln!("memory phase failed: {e}");
                results.memory_problem = Some(e);
            }
        }
    }
    drop(idp);

    write(&out, &results)?;
    eprintln!("report: {}", out.join("report.md").display());
    Ok(results.all_valid())
}

fn write(out: &Path, results: &RunResults) -> Result<(), String> {
    let json = serde_json::to_string_pretty(results).map_err(|e| e.to_string())?;
    let put = |name: &str, text: &str| {
        std::fs::write(out.join(name), text)
            .map_err(|e| format!("cannot write `{}`: {e}", out.join(name).display()))
    };
    put("results.json", &json)?;
    put("report.md", &report::render(results))?;
    plot::draw(results, &out.join("latency.svg"))
}
