//! `mcp-authz serve` and `mcp-authz validate`: load a configuration, then run the service
//! until a shutdown signal, or build everything it would run and stop there. Also
//! `mcp-authz envoy-headers`, which prints what the proxy must send for that configuration.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::{EXIT_CONFIG, load};
use crate::config::Config;
use crate::dev::DevIssuer;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::policy::PolicySets;
use crate::server;

pub(super) async fn serve(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    run_service(&config, None, Some(path)).await
}

pub(super) fn envoy_headers(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let headers = crate::engine::headers::read_by_checks(&config);
    print!(
        "# ext_authz filter (envoy.extensions.filters.http.ext_authz.v3.ExtAuthz), for {}\n{}",
        path.display(),
        crate::engine::headers::envoy_allowed_headers(&headers, 0)
    );
    ExitCode::SUCCESS
}

pub(super) fn validate(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Everything `serve` builds before listening, minus the network.
    let metrics = Metrics::unregistered();
    let policies = match PolicySets::open(&config, &metrics) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: policies: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // A shadow set that does not load does not stop `serve`, but `validate` says so.
    let mut shadow_failed = false;
    for set in policies.shadows() {
        let status = set.status();
        if let Some(e) = &status.error {
            eprintln!(
                "warning: shadow policy set `{}` does not load: {e}",
                status.dir
            );
            shadow_failed = true;
        }
    }
    let sets: Vec<String> = policies
        .live()
        .map(|s| format!("{} from `{}`", s.load().hash, s.dir().display()))
        .collect();
    let built = Engine::issuers_from_config(&config, &metrics)
        .and_then(|issuers| Engine::new(&config, issuers, policies, metrics));
    if let Err(e) = built {
        eprintln!("error: `{}`: {e}", path.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Some(tls) = &config.listen.tls
        && let Err(e) = crate::tls::Reloading::new(tls.clone())
    {
        eprintln!("error: `{}`: key `listen.tls`: {e}", path.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    // What `serve` would fail on next: a listen address it cannot bind (in use, not local).
    let listen = &config.listen;
    for (key, addr) in [
        ("listen.grpc", listen.grpc),
        ("listen.admin", listen.admin),
        ("listen.admin_grpc", listen.admin_grpc),
    ] {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            eprintln!(
                "error: `{}`: key `{key}`: cannot listen on `{addr}`: {e}",
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    println!(
        "`{}` is valid: {} issuer(s), {} server(s), policy set(s) {}",
        path.display(),
        config.issuers.len(),
        config.servers.len(),
        sets.join(", ")
    );
    if shadow_failed {
        return ExitCode::from(EXIT_CONFIG);
    }
    ExitCode::SUCCESS
}

/// Starts every listener and serves until SIGTERM/SIGINT. `dev` is the embedded development
/// issuer whose discovery and JWKS the admin port then serves.
/// With `path`, the configuration file is watched and reloaded.
pub(super) async fn run_service(
    config: &Config,
    dev: Option<Arc<DevIssuer>>,
    path: Option<&Path>,
) -> ExitCode {
    let running = match server::start(config, dev).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(path) = path {
        running.watch_config(path, config);
    }
    tracing::info!(
        grpc = %running.grpc_addr,
        admin = %running.admin_addr,
        admin_grpc = %running.admin_grpc_addr,
        policy_hash = %first_hash(&running.engine),
        policy_sets = ?set_hashes(&running.engine),
        issuers = config.issuers.len(),
        servers = config.servers.len(),
        version = env!("CARGO_PKG_VERSION"),
        "mcp-authz started"
    );
    let engine = running.engine.clone();
    match running
        .run_until(server::shutdown_signals(), &config.shutdown)
        .await
    {
        Ok(()) => {
            tracing::info!(policy_hash = %first_hash(&engine), policy_sets = ?set_hashes(&engine), "mcp-authz stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "mcp-authz failed");
            ExitCode::FAILURE
        }
    }
}

/// The first server's live set hash (the only set in most deployments).
fn first_hash(engine: &Engine) -> String {
    engine
        .policies()
        .map(|p| p.load().hash.clone())
        .unwrap_or_default()
}

/// `server=hash` for every server's live set.
fn set_hashes(engine: &Engine) -> Vec<String> {
    engine
        .policy_status()
        .iter()
        .map(|s| format!("{}={}", s.server, s.live.hash))
        .collect()
}
