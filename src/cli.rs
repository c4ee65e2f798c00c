//! Command-line interface: argument definitions and the subcommands' bodies. `main.rs` only
//! parses and dispatches.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

use crate::config::Config;
use crate::dev::{self, DevIssuer, Mint};
use crate::server;

/// Exit code for configuration errors (EX_USAGE, as linkerd does).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "mcp-authz",
    version,
    about = "Envoy external authorization (ext_authz) for MCP servers: OAuth 2.1 bearer tokens \
             validated against rotating JWKS, answered with RFC 6750 / RFC 9728 challenges."
)]
pub struct Cli {
    /// Log format: `json` (one object per line), `text`, or `auto` (json unless stderr is a
    /// terminal). Filter with RUST_LOG (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto, env = "MCP_AUTHZ_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve ext_authz (gRPC) and the admin HTTP server from a configuration file.
    Serve(ConfigArg),
    /// Load and check a configuration as `serve` would, without serving. Exit 0 when valid.
    Validate(ConfigArg),
    /// Run with an embedded development issuer and a sample resource. NOT FOR PRODUCTION.
    Dev(DevArgs),
    /// Mint an access token from the running dev issuer (reads its state file).
    Token(TokenArgs),
    /// Send one Envoy-shaped CheckRequest to a running server and print the decision.
    /// Exit 0 on allow, 1 on deny, 2 on error.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file (YAML).
    #[arg(long, short, env = "MCP_AUTHZ_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// gRPC (ext_authz) listen address.
    #[arg(long, default_value = "127.0.0.1:9191")]
    pub grpc: SocketAddr,
    /// Admin HTTP listen address; also serves the dev issuer's discovery and JWKS.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin: SocketAddr,
    /// Canonical URI of the sample protected MCP resource.
    #[arg(long, default_value = dev::DEV_RESOURCE)]
    pub resource: String,
    /// Where to write the dev issuer state that `mcp-authz token` reads.
    #[arg(long)]
    pub state: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Dev issuer state file written by `mcp-authz dev`.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// `sub` claim.
    #[arg(long, default_value = "dev-user")]
    pub sub: String,
    /// Scopes (repeatable or space-separated); default `mcp:connect mcp:tools`.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// `tenant` claim; pass an empty string for none.
    #[arg(long, default_value = "acme")]
    pub tenant: String,
    /// `aud` claim; defaults to the dev resource.
    #[arg(long)]
    pub audience: Option<String>,
    /// `client_id` claim.
    #[arg(long, default_value = "mcp-authz-dev-client")]
    pub client_id: String,
    /// `groups` claim (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Lifetime, e.g. `1h`, `90s`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub lifetime: Duration,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Address of the ext_authz gRPC server.
    #[arg(long, default_value = "127.0.0.1:9191")]
    pub addr: String,
    /// HTTP method of the simulated request.
    #[arg(long, short = 'X', default_value = "POST")]
    pub method: String,
    /// Path (with query) of the simulated request.
    #[arg(long, default_value = "/mcp")]
    pub path: String,
    /// Host (authority) of the simulated request.
    #[arg(long, default_value = "127.0.0.1:10000")]
    pub host: String,
    /// Bearer token; sent as `authorization: Bearer <token>`.
    #[arg(long)]
    pub token: Option<String>,
    /// Extra header `name: value` (repeatable). Names are lowercased, as Envoy sends them;
    /// a repeated name is joined with `,`, as Envoy does.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the request body from a file.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
}

// === dispatch ===

pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(a) => serve(&a.config).await,
        Command::Validate(a) => validate(&a.config),
        Command::Dev(a) => run_dev(a).await,
        Command::Token(a) => token(a),
        Command::Check(a) => check(a).await,
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn validate(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Everything `serve` builds before listening, minus the network.
    let metrics = crate::metrics::Metrics::unregistered();
    let built = crate::engine::Engine::issuers_from_config(&config, &metrics)
        .and_then(|issuers| crate::engine::Engine::new(&config, issuers, metrics));
    if let Err(e) = built {
        eprintln!("error: `{}`: {e}", path.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    println!(
        "`{}` is valid: {} issuer(s), {} server(s)",
        path.display(),
        config.issuers.len(),
        config.servers.len()
    );
    ExitCode::SUCCESS
}

async fn serve(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    run_service(&config, None).await
}

async fn run_service(config: &Config, dev: Option<Arc<DevIssuer>>) -> ExitCode {
    let running = match server::start(config, dev).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing::info!(
        grpc = %running.grpc_addr,
        admin = %running.admin_addr,
        issuers = config.issuers.len(),
        servers = config.servers.len(),
        version = env!("CARGO_PKG_VERSION"),
        "mcp-authz started"
    );
    match running
        .run_until(server::shutdown_signal(), Duration::from_secs(10))
        .await
    {
        Ok(()) => {
            tracing::info!("mcp-authz stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "mcp-authz failed");
            ExitCode::FAILURE
        }
    }
}

async fn run_dev(a: DevArgs) -> ExitCode {
    let config = dev::dev_config(a.grpc, a.admin, &a.resource);
    if let Err(e) = config.validate() {
        eprintln!("error: key `{}`: {}", e.key, e.message);
        return ExitCode::from(EXIT_CONFIG);
    }
    let state = a.state.unwrap_or_else(dev::default_state_path);
    let issuer = match DevIssuer::generate(config.issuers[0].issuer.clone(), a.resource.clone()) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let minted = issuer
        .save(&state)
        .and_then(|()| issuer.mint(&Mint::default()));
    let token = match minted {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let exe = std::env::args()
        .next()
        .filter(|p| !p.contains("target/"))
        .unwrap_or_else(|| "cargo run --".into());
    eprintln!(
        "\n*** mcp-authz dev: DEVELOPMENT MODE, NOT FOR PRODUCTION ***\n\
         ext_authz gRPC   {grpc}\n\
         admin HTTP       http://{admin}  (/healthz /readyz /metrics)\n\
         dev issuer       {iss}  (discovery + JWKS on the admin port)\n\
         protected MCP    {res}\n\
         PRM document     http://{admin}/.well-known/oauth-protected-resource{path}\n\
         issuer state     {state}\n\n\
         A token (sub=dev-user, tenant=acme, scope=\"mcp:connect mcp:tools\", 1h):\n\n{token}\n\n\
         Try it from another terminal:\n\
         \x20 export TOKEN=$({exe} token{state_arg})\n\
         \x20 {exe} check --token \"$TOKEN\"              # ALLOW, with identity headers\n\
         \x20 {exe} check                                # 401 + WWW-Authenticate challenge\n\
         \x20 {exe} check --token not.a.jwt              # 401 invalid_token\n\
         \x20 {exe} token{state_arg} --sub bob --scope mcp:connect   # another token\n\
         Through Envoy: see deploy/envoy/README.md\n",
        grpc = a.grpc,
        admin = a.admin,
        iss = issuer.issuer,
        res = a.resource,
        path = url::Url::parse(&a.resource)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default(),
        state = state.display(),
        state_arg = if state == dev::default_state_path() {
            String::new()
        } else {
            format!(" --state {}", state.display())
        },
    );
    println!("{token}");
    run_service(&config, Some(Arc::new(issuer))).await
}

fn token(a: TokenArgs) -> ExitCode {
    let state = a.state.unwrap_or_else(dev::default_state_path);
    let issuer = match DevIssuer::load(&state) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut mint = Mint {
        subject: a.sub,
        tenant: (!a.tenant.is_empty()).then_some(a.tenant),
        client_id: a.client_id,
        groups: a.groups,
        audience: a.audience,
        lifetime: a.lifetime,
        ..Mint::default()
    };
    if !a.scopes.is_empty() {
        mint.scopes = a
            .scopes
            .iter()
            .flat_map(|s| s.split_whitespace())
            .map(str::to_owned)
            .collect();
    }
    match issuer.mint(&mint) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the CheckRequest Envoy would send for this request.
pub fn check_request(a: &CheckArgs, body: Vec<u8>) -> Result<CheckRequest, String> {
    let mut headers: HashMap<String, String> = HashMap::new();
    let mut add = |name: String, value: String| {
        headers
            .entry(name)
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    };
    for h in &a.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header `{h}` is not `name: value`"))?;
        add(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    if let Some(t) = &a.token {
        add("authorization".into(), format!("Bearer {t}"));
    }
    headers.insert(":authority".into(), a.host.clone());
    headers.insert(":method".into(), a.method.clone());
    headers.insert(":path".into(), a.path.clone());
    if !body.is_empty() {
        headers
            .entry("content-type".into())
            .or_insert_with(|| "application/json".into());
    }
    let query = a
        .path
        .split_once('?')
        .map(|(_, q)| q.to_owned())
        .unwrap_or_default();
    Ok(CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: a.method.clone(),
                    path: a.path.clone(),
                    host: a.host.clone(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    size: i64::try_from(body.len()).unwrap_or(i64::MAX),
                    query,
                    headers,
                    raw_body: body,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    })
}

async fn check(a: CheckArgs) -> ExitCode {
    let body = match (&a.body, &a.body_file) {
        (Some(b), _) => b.clone().into_bytes(),
        (None, Some(p)) => match std::fs::read(p) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read `{}`: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        (None, None) => Vec::new(),
    };
    let request = match check_request(&a, body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let endpoint = if a.addr.contains("://") {
        a.addr.clone()
    } else {
        format!("http://{}", a.addr)
    };
    let mut client = match AuthorizationClient::connect(endpoint).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot connect to `{}`: {e}", a.addr);
            return ExitCode::from(2);
        }
    };
    let response = match client.check(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            eprintln!("error: Check failed: {status}");
            return ExitCode::from(2);
        }
    };
    let code = response.status.as_ref().map_or(0, |s| s.code);
    let allowed = code == 0;
    println!(
        "decision: {} (grpc status {})",
        if allowed { "ALLOW" } else { "DENY" },
        tonic::Code::from(code).description()
    );
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            for h in ok.headers.iter().filter_map(|h| h.header.as_ref()) {
                println!("upstream header: {}: {}", h.key, h.value);
            }
            for h in &ok.headers_to_remove {
                println!("upstream header removed: {h}");
            }
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            println!(
                "http status: {}",
                denied.status.as_ref().map_or(403, |s| s.code)
            );
            for h in denied.headers.iter().filter_map(|h| h.header.as_ref()) {
                println!("{}: {}", h.key, h.value);
            }
            if !denied.body.is_empty() {
                println!("\n{}", denied.body);
            }
        }
        _ => {}
    }
    if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
