//! Wiring: binds the listeners (so a bad address fails before anything serves), builds the
//! engine, starts the key refreshers, the gRPC server and the admin server; `shutdown` stops
//! them in order.

mod reload;
mod shutdown;

pub use reload::{ConfigReload, ConfigReloader, restart_only};
pub use shutdown::{shutdown_signal, shutdown_signals};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use futures_util::StreamExt;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;

use crate::admin::http::{self as admin_http, AdminState};
use crate::config::Config;
use crate::dev::DevIssuer;
use crate::engine::Engine;
use crate::grpc::{Admission, AuthzService, ListService};
use crate::metrics::Metrics;
use crate::policy::PolicySets;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on `{addr}` ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("policies: {0}")]
    Policy(#[from] crate::policy::SetsError),
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("admin server failed: {0}")]
    Admin(std::io::Error),
    #[error("listen.tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A started service.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub admin_grpc_addr: SocketAddr,
    pub engine: Arc<Engine>,
    metrics: Metrics,
    /// Key refreshers and policy watchers, kept in step with the configuration.
    background: Arc<Mutex<reload::Background>>,
    /// Set first on shutdown: health NOT_SERVING, `/readyz` 503, checks still answered.
    draining: watch::Sender<bool>,
    /// Set after the drain delay: the listeners stop accepting, in-flight requests finish.
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<Result<(), ServeError>>,
}

/// The check port's server: tonic behind the admission gate.
type GrpcRouter =
    tonic::transport::server::Router<tower_layer::Stack<Admission, tower_layer::Identity>>;

/// The tonic server settings for the ext_authz port, shared with the benchmark's always-allow
/// baseline (`examples/allow_server.rs`) so the two differ only in what a check does.
///
/// Envoy opens one HTTP/2 connection per worker thread to its ext_authz cluster and multiplexes
/// every check on it, so the settings are for few connections carrying many small streams:
/// - TCP_NODELAY (set on each accepted socket by the callers): a check is one small request and
///   one small response; Nagle would hold the response back waiting for an ACK.
/// - 1 MiB stream and connection windows: a `CheckRequest` carries the MCP body (up to Envoy's
///   `max_request_bytes`); with the 64 KiB HTTP/2 default, concurrent large bodies would stall
///   on WINDOW_UPDATE round trips. Small checks are unaffected.
/// - 1024 concurrent streams per connection: above Envoy's default pending-request limits, so
///   Envoy, not this server, decides how much to queue; still a bound on per-connection memory.
/// - Keepalive pings every 30 s (10 s timeout): a half-dead connection is noticed and Envoy
///   reconnects, rather than checks timing out on it.
/// - No per-connection concurrency limit: Envoy multiplexes everything on few connections, so a
///   per-connection bound says little. mcp-authz's own bound on pending checks and on how long
///   one may wait (`grpc::Admission`, the `overload` settings) is added by `start`.
pub fn grpc_server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .initial_connection_window_size(Some(1 << 20))
        .initial_stream_window_size(Some(1 << 20))
        .max_concurrent_streams(Some(1024))
}

/// Starts everything and returns once the listeners are bound. Keys load in the background;
/// `/readyz` says when they have.
pub async fn start(config: &Config, dev: Option<Arc<DevIssuer>>) -> Result<Running, ServeError> {
    let registry = Registry::new();
    let server_ids: Vec<&str> = config.servers.iter().map(|s| s.id.as_str()).collect();
    let metrics = Metrics::new(&registry, &server_ids)?;
    let issuers = Engine::issuers_from_config(config, &metrics)?;
    let policies = PolicySets::open(config, &metrics)?;
    let engine = Arc::new(Engine::new(config, issuers, policies, metrics.clone())?);

    let tls = config
        .listen
        .tls
        .clone()
        .map(crate::tls::Reloading::new)
        .transpose()?;
    let grpc_listener = bind(config.listen.grpc, "gRPC").await?;
    let admin_listener = bind(config.listen.admin, "admin").await?;
    let admin_grpc_listener = bind(config.listen.admin_grpc, "admin gRPC").await?;
    let grpc_addr = local_addr(&grpc_listener, config.listen.grpc, "gRPC")?;
    let admin_addr = local_addr(&admin_listener, config.listen.admin, "admin")?;
    let admin_grpc_addr = local_addr(&admin_grpc_listener, config.listen.admin_grpc, "admin gRPC")?;

    let (draining, _) = watch::channel(false);
    let (shutdown, _) = watch::channel(false);
    let mut tasks = JoinSet::new();

    let app = admin_http::router(AdminState {
        engine: engine.clone(),
        registry,
        dev,
        draining: draining.subscribe(),
    });
    let mut rx = shutdown.subscribe();
    tasks.spawn(async move {
        axum::serve(admin_listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
            .map_err(ServeError::Admin)
    });

    let background = Arc::new(Mutex::new(reload::Background::new(shutdown.subscribe())));
    if let Ok(mut b) = background.lock() {
        b.sync(&engine.setup(), &metrics);
    }
    if let Some(upstream) = engine.upstream_identity() {
        tokio::spawn(upstream.clone().run(shutdown.subscribe()));
    }

    let metrics_for_reload = metrics.clone();
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().run_reloader(metrics, shutdown.subscribe()));
    }
    // Bodies up to `limits.max_body_bytes` (and beyond, up to this) get a decision, not a
    // gRPC error.
    let service = AuthorizationServer::new(AuthzService::new(engine.clone()))
        .max_decoding_message_size(config.limits.max_check_message_bytes());
    // grpc.health.v1 on the same port, so Envoy can health-check the authz cluster: SERVING
    // only while every issuer has keys, NOT_SERVING again as soon as shutdown starts draining.
    let (health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(report_health(engine.clone(), health, draining.subscribe()));
    let admission = Admission::new(&config.overload, engine.metrics());
    // The list filter (Envoy ext_proc) on the same port: Envoy opens a stream only for the
    // responses ext_authz marked (list calls, GET streams).
    let lists = ExternalProcessorServer::new(ListService::new(
        engine.clone(),
        config.limits.max_list_response_bytes,
    ))
    .max_decoding_message_size(config.limits.max_check_message_bytes());
    let router = grpc_server_builder()
        .layer(admission)
        .add_service(health_service)
        .add_service(service)
        .add_service(lists);
    serve_grpc(&mut tasks, router, grpc_listener, tls.clone(), &shutdown);

    let admin_api = crate::admin::grpc::pb::admin_server::AdminServer::new(
        crate::admin::grpc::AdminService::new(engine.clone()),
    );
    let router = tonic::transport::Server::builder()
        .layer(Admission::unbounded())
        .add_service(admin_api);
    serve_grpc(&mut tasks, router, admin_grpc_listener, tls, &shutdown);

    Ok(Running {
        grpc_addr,
        admin_addr,
        admin_grpc_addr,
        engine,
        metrics: metrics_for_reload,
        background,
        draining,
        shutdown,
        tasks,
    })
}

/// Serves `router` on `listener` until shutdown: plaintext HTTP/2, or TLS when configured.
fn serve_grpc(
    tasks: &mut JoinSet<Result<(), ServeError>>,
    router: GrpcRouter,
    listener: TcpListener,
    tls: Option<Arc<crate::tls::Reloading>>,
    shutdown: &watch::Sender<bool>,
) {
    let mut rx = shutdown.subscribe();
    let stopped = async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    match tls {
        None => {
            let incoming = TcpListenerStream::new(listener).map(|conn| {
                conn.inspect(|stream| {
                    // Checks are small request/response pairs: Nagle only adds latency.
                    let _ = stream.set_nodelay(true);
                })
            });
            tasks.spawn(async move {
                router
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await
                    .map_err(ServeError::Grpc)
            });
        }
        Some(tls) => {
            let incoming = tls.incoming(listener, shutdown.subscribe());
            tasks.spawn(async move {
                router
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await
                    .map_err(ServeError::Grpc)
            });
        }
    }
}

/// The gRPC health service names: the whole server and the ext_authz service.
pub const HEALTH_SERVICES: [&str; 2] = ["", "envoy.service.auth.v3.Authorization"];

async fn report_health(
    engine: Arc<Engine>,
    health: tonic_health::server::HealthReporter,
    mut draining: watch::Receiver<bool>,
) {
    use tonic_health::ServingStatus;
    let set = |status: ServingStatus| {
        let health = health.clone();
        async move {
            for name in HEALTH_SERVICES {
                health.set_service_status(name, status).await;
            }
        }
    };
    let mut last = None;
    loop {
        let ready = engine.is_ready();
        if last != Some(ready) {
            set(if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            })
            .await;
            last = Some(ready);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            // (The guard `wait_for` returns is dropped at once: it is not `Send`.)
            _ = async { draining.wait_for(|d| *d).await.is_ok() } => {
                set(ServingStatus::NotServing).await;
                return;
            }
        }
    }
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, what, source })
}

fn local_addr(
    l: &TcpListener,
    addr: SocketAddr,
    what: &'static str,
) -> Result<SocketAddr, ServeError> {
    l.local_addr()
        .map_err(|source| ServeError::Bind { addr, what, source })
}

impl Running {
    /// Reloads `path` (the file `config` was loaded from) when it changes or on SIGHUP, until
    /// shutdown. SIGHUP no longer ends the process from here on.
    pub fn watch_config(&self, path: &Path, config: &Config) -> Arc<ConfigReloader> {
        let reloader = Arc::new(ConfigReloader::new(
            path,
            config,
            self.engine.clone(),
            self.metrics.clone(),
            self.background.clone(),
        ));
        // SIGHUP is handled from here on (registered now, not when the task first runs).
        let hangups = shutdown::reload_signals();
        tokio::spawn(reloader.clone().run(self.shutdown.subscribe(), hangups));
        reloader
    }

    /// Waits until every issuer has keys, or `timeout` passes. Returns readiness.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.engine.is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}
