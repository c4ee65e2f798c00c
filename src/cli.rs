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
    /// Tools for policy authors: validate, test, explain.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Ask a running server (admin gRPC API) for readiness, the policy set and key sets.
    Status {
        /// Address of the admin gRPC API (`listen.admin_grpc`).
        #[arg(long, default_value = "127.0.0.1:9192")]
        addr: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse and strictly validate a policy directory against its schema and the mcp-authz
    /// vocabulary; print lint warnings. Exit 0 when valid (warnings allowed unless
    /// --deny-warnings), 1 otherwise.
    Validate {
        /// Policy directory.
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// Treat lint warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Run the table-driven cases kept beside the policies (`tests.yaml`). Exit 0 when all pass.
    Test {
        /// Policy directory.
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// Case file; default `<dir>/tests.yaml`.
        #[arg(long)]
        cases: Option<PathBuf>,
    },
    /// Evaluate one hypothetical request offline: decision, determining policies, challenge.
    Explain(Box<ExplainArgs>),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Policy directory (offline evaluation).
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// Evaluate against a running server's live policies and configuration instead, through
    /// its admin gRPC API (`listen.admin_grpc`); the server's tenant and scopes_supported apply.
    #[arg(long, conflicts_with = "policies")]
    pub addr: Option<String>,
    /// MCP method (`tools/call`, `initialize`, ...), or `GET`, `DELETE`, `response`.
    #[arg(long)]
    pub method: String,
    /// Tool name (tools/call).
    #[arg(long)]
    pub tool: Option<String>,
    /// Prompt name (prompts/get, completion/complete).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Resource URI (resources/*, completion/complete).
    #[arg(long)]
    pub resource: Option<String>,
    /// Task id (tasks/get, tasks/result, tasks/cancel).
    #[arg(long)]
    pub task: Option<String>,
    /// Tool arguments as a JSON object.
    #[arg(long)]
    pub arguments: Option<String>,
    /// Caller subject.
    #[arg(long, default_value = "alice")]
    pub sub: String,
    /// Caller tenant.
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Granted scopes (repeatable or space-separated).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Groups (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Extra claim `name=value` (repeatable), reachable as principal tags.
    #[arg(long = "claim")]
    pub claims: Vec<String>,
    /// Server id.
    #[arg(long, default_value = "demo")]
    pub server_id: String,
    /// Server tenant.
    #[arg(long, default_value = "")]
    pub server_tenant: String,
    /// The server's scopes_supported (repeatable or space-separated): step-up candidates.
    #[arg(long = "scope-supported")]
    pub scopes_supported: Vec<String>,
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
    /// Admin gRPC API listen address (Status, Explain).
    #[arg(long, default_value = "127.0.0.1:9192")]
    pub admin_grpc: SocketAddr,
    /// Canonical URI of the sample protected MCP resource.
    #[arg(long, default_value = dev::DEV_RESOURCE)]
    pub resource: String,
    /// Where to write the dev issuer state that `mcp-authz token` reads.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Policy directory; default `./policies` when it exists (edits hot-reload), else the
    /// shipped policies, copied next to the state file.
    #[arg(long)]
    pub policies: Option<PathBuf>,
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
    /// Build a JSON-RPC request body for this MCP method (e.g. `tools/call`, `initialize`).
    #[arg(long, conflicts_with_all = ["body", "body_file"])]
    pub rpc: Option<String>,
    /// With --rpc: the tool or prompt name, or the resource URI.
    #[arg(long, requires = "rpc")]
    pub name: Option<String>,
    /// With --rpc tools/call: the arguments, a JSON object.
    #[arg(long, requires = "rpc")]
    pub arguments: Option<String>,
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
        Command::Policy(PolicyCommand::Explain(a)) if a.addr.is_some() => explain_remote(*a).await,
        Command::Policy(p) => policy_command(p),
        Command::Status { addr } => status(&addr).await,
    }
}

async fn admin_client(
    addr: &str,
) -> Result<crate::admin_api::pb::admin_client::AdminClient<tonic::transport::Channel>, String> {
    let endpoint = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    crate::admin_api::pb::admin_client::AdminClient::connect(endpoint)
        .await
        .map_err(|e| format!("cannot connect to `{addr}`: {e}"))
}

async fn status(addr: &str) -> ExitCode {
    let mut client = match admin_client(addr).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match client.status(crate::admin_api::pb::StatusRequest {}).await {
        Ok(r) => {
            let s = r.into_inner();
            println!("ready: {} (version {})", s.ready, s.version);
            if let Some(p) = &s.policies {
                println!(
                    "policy set: {} ({} policies from `{}`, loaded at {})",
                    p.hash, p.policies, p.dir, p.loaded_at_unix
                );
            }
            for i in &s.issuers {
                let error = if i.last_error.is_empty() {
                    String::new()
                } else {
                    format!(", last error: {}", i.last_error)
                };
                println!(
                    "issuer {}: ready {}, {} keys{error}",
                    i.issuer, i.ready, i.keys
                );
            }
            if s.ready {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: Status failed: {e}");
            ExitCode::from(2)
        }
    }
}

async fn explain_remote(a: ExplainArgs) -> ExitCode {
    use crate::admin_api::pb;
    let addr = a.addr.clone().unwrap_or_default();
    let mut client = match admin_client(&addr).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut claims = std::collections::HashMap::new();
    for c in &a.claims {
        let Some((k, v)) = c.split_once('=') else {
            eprintln!("error: --claim `{c}` is not name=value");
            return ExitCode::from(2);
        };
        claims.insert(k.to_owned(), v.to_owned());
    }
    let request = pb::ExplainRequest {
        server_id: a.server_id,
        method: a.method,
        tool: a.tool.unwrap_or_default(),
        prompt: a.prompt.unwrap_or_default(),
        resource: a.resource.unwrap_or_default(),
        task: a.task.unwrap_or_default(),
        arguments_json: a.arguments.unwrap_or_default(),
        principal: Some(pb::Principal {
            sub: a.sub,
            tenant: a.tenant,
            client_id: String::new(),
            issuer: String::new(),
            scopes: split_words(&a.scopes),
            groups: a.groups,
            claims,
        }),
        server_tenant: a.server_tenant,
    };
    match client.explain(request).await {
        Ok(r) => {
            let r = r.into_inner();
            println!("decision: {}", if r.allowed { "ALLOW" } else { "DENY" });
            println!("determining policies: {:?}", r.determining_policies);
            for e in &r.errors {
                println!("policy error: {e}");
            }
            match (r.allowed, r.www_authenticate.is_empty()) {
                (true, _) => println!("challenge: none (allowed)"),
                (false, false) => {
                    println!("challenge: 403 WWW-Authenticate: {}", r.www_authenticate)
                }
                (false, true) => {
                    println!("challenge: none (a plain 403; no scope would allow this)")
                }
            }
            println!("policy set: {} (live)", r.policy_hash);
            if r.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: Explain failed: {}", e.message());
            ExitCode::from(2)
        }
    }
}

fn policy_command(command: PolicyCommand) -> ExitCode {
    use crate::policy::{cases, load_dir};
    match command {
        PolicyCommand::Validate { dir, deny_warnings } => match load_dir(&dir) {
            Ok(bundle) => {
                for w in &bundle.warnings {
                    println!("warning: {w}");
                }
                println!(
                    "`{}`: {} policies valid against the schema (policy set {})",
                    dir.display(),
                    bundle.policy_ids.len(),
                    bundle.hash
                );
                if deny_warnings && !bundle.warnings.is_empty() {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        PolicyCommand::Test { dir, cases: file } => {
            let file = file.unwrap_or_else(|| dir.join(cases::CASES_FILE));
            let result = load_dir(&dir)
                .map_err(|e| e.to_string())
                .and_then(|bundle| {
                    let case_file = cases::read_cases(&file).map_err(|e| e.to_string())?;
                    cases::run(&bundle, &case_file).map_err(|e| e.to_string())
                });
            match result {
                Ok(report) => {
                    for (name, why) in &report.failed {
                        println!("FAIL {name}: {why}");
                    }
                    println!(
                        "policy tests: {} passed, {} failed",
                        report.passed,
                        report.failed.len()
                    );
                    if report.failed.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        PolicyCommand::Explain(a) => explain(*a),
    }
}

fn split_words(list: &[String]) -> Vec<String> {
    list.iter()
        .flat_map(|s| s.split_whitespace())
        .map(str::to_owned)
        .collect()
}

fn explain(a: ExplainArgs) -> ExitCode {
    use crate::policy::cases::{self, Case, Defaults, Expect, PrincipalSpec, ServerSpec};
    let fail = |m: String| {
        eprintln!("error: {m}");
        ExitCode::from(2)
    };
    let bundle = match crate::policy::load_dir(&a.policies) {
        Ok(b) => b,
        Err(e) => return fail(e.to_string()),
    };
    let arguments = match a.arguments.as_deref().map(serde_json::from_str) {
        None => serde_json::Map::new(),
        Some(Ok(serde_json::Value::Object(m))) => m,
        Some(_) => return fail("--arguments must be a JSON object".into()),
    };
    let mut claims = serde_json::Map::new();
    for c in &a.claims {
        let Some((k, v)) = c.split_once('=') else {
            return fail(format!("--claim `{c}` is not name=value"));
        };
        claims.insert(k.to_owned(), serde_json::Value::from(v));
    }
    let case = Case {
        name: "explain".into(),
        server: ServerSpec {
            id: Some(a.server_id),
            tenant: Some(a.server_tenant),
            scopes_supported: Some(split_words(&a.scopes_supported)),
        },
        principal: PrincipalSpec {
            sub: Some(a.sub),
            tenant: Some(a.tenant),
            client_id: None,
            issuer: None,
            scopes: Some(split_words(&a.scopes)),
            groups: Some(a.groups),
            claims: Some(claims),
        },
        method: a.method,
        tool: a.tool,
        prompt: a.prompt,
        resource: a.resource,
        task: a.task,
        arguments,
        expect: Expect::Allow,
        policies: None,
        challenge_scope: None,
    };
    match cases::evaluate(&bundle, &Defaults::default(), &case) {
        Ok(outcome) => {
            let d = &outcome.decision;
            println!("decision: {}", if d.allowed { "ALLOW" } else { "DENY" });
            println!("determining policies: {:?}", d.determining);
            for e in &d.errors {
                println!("policy error: {e}");
            }
            match (&outcome.challenge_scope, d.allowed) {
                (_, true) => println!("challenge: none (allowed)"),
                (Some(scope), false) => println!(
                    "challenge: 403 WWW-Authenticate: Bearer error=\"insufficient_scope\", scope=\"{scope}\", resource_metadata=\"...\""
                ),
                (None, false) => {
                    println!("challenge: none (a plain 403; no scope would allow this)")
                }
            }
            println!("policy set: {} ({})", bundle.hash, a.policies.display());
            if d.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(e.to_string()),
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
    let policies = match crate::policy::PolicyStore::open(&config.policies.dir, metrics.clone()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: policies: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let hash = policies.load().hash.clone();
    let built = crate::engine::Engine::issuers_from_config(&config, &metrics)
        .and_then(|issuers| crate::engine::Engine::new(&config, issuers, policies, metrics));
    if let Err(e) = built {
        eprintln!("error: `{}`: {e}", path.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    println!(
        "`{}` is valid: {} issuer(s), {} server(s), policy set {hash} from `{}`",
        path.display(),
        config.issuers.len(),
        config.servers.len(),
        config.policies.dir.display()
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
        admin_grpc = %running.admin_grpc_addr,
        policy_hash = %running.engine.policies().load().hash,
        issuers = config.issuers.len(),
        servers = config.servers.len(),
        version = env!("CARGO_PKG_VERSION"),
        "mcp-authz started"
    );
    let engine = running.engine.clone();
    match running
        .run_until(server::shutdown_signal(), Duration::from_secs(10))
        .await
    {
        Ok(()) => {
            tracing::info!(policy_hash = %engine.policies().load().hash, "mcp-authz stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "mcp-authz failed");
            ExitCode::FAILURE
        }
    }
}

async fn run_dev(a: DevArgs) -> ExitCode {
    let state = a.state.unwrap_or_else(dev::default_state_path);
    let policies = match a.policies {
        Some(dir) => dir,
        None => match dev::dev_policies(state.parent().unwrap_or(std::path::Path::new("."))) {
            Ok(dir) => dir,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let config = dev::dev_config(a.grpc, a.admin, a.admin_grpc, &a.resource, &policies);
    if let Err(e) = config.validate() {
        eprintln!("error: key `{}`: {}", e.key, e.message);
        return ExitCode::from(EXIT_CONFIG);
    }
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
         admin gRPC       {admin_grpc}  (mcp-authz status --addr {admin_grpc})\n\
         dev issuer       {iss}  (discovery + JWKS on the admin port)\n\
         protected MCP    {res}\n\
         PRM document     http://{admin}/.well-known/oauth-protected-resource{path}\n\
         policies         {policies}  (edit them: they reload)\n\
         issuer state     {state}\n\n\
         A token (sub=dev-user, tenant=acme, scope=\"mcp:connect mcp:tools:weather\", 1h):\n\n{token}\n\n\
         Try it from another terminal:\n\
         \x20 export TOKEN=$({exe} token{state_arg})\n\
         \x20 {exe} check --token \"$TOKEN\" --rpc tools/call --name get_forecast   # ALLOW\n\
         \x20 {exe} check --token \"$TOKEN\" --rpc tools/call --name read_file \\\n\
         \x20     --arguments '{{\"path\":\"/srv/shared/a\"}}'   # 403 insufficient_scope: step up\n\
         \x20 {exe} check --rpc initialize                 # 401 + WWW-Authenticate challenge\n\
         \x20 {exe} token{state_arg} --tenant globex       # another tenant: a plain 403\n\
         Through Envoy: see deploy/envoy/README.md\n",
        grpc = a.grpc,
        admin = a.admin,
        admin_grpc = a.admin_grpc,
        iss = issuer.issuer,
        res = a.resource,
        path = url::Url::parse(&a.resource)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default(),
        state = state.display(),
        policies = policies.display(),
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

/// A JSON-RPC request for `method`, with the name/URI and arguments where the method takes them.
fn rpc_body(method: &str, name: Option<&str>, arguments: Option<&str>) -> Result<Vec<u8>, String> {
    use serde_json::{Value, json};
    let mut params = serde_json::Map::new();
    match (method, name) {
        ("tools/call" | "prompts/get", Some(n)) => {
            params.insert("name".into(), json!(n));
        }
        ("resources/read" | "resources/subscribe" | "resources/unsubscribe", Some(u)) => {
            params.insert("uri".into(), json!(u));
        }
        (
            "tools/call"
            | "prompts/get"
            | "resources/read"
            | "resources/subscribe"
            | "resources/unsubscribe",
            None,
        ) => return Err(format!("--rpc {method} needs --name")),
        _ => {}
    }
    if let Some(args) = arguments {
        let value: Value =
            serde_json::from_str(args).map_err(|e| format!("--arguments is not JSON: {e}"))?;
        params.insert("arguments".into(), value);
    }
    if method == "initialize" {
        params.insert("protocolVersion".into(), json!("2025-11-25"));
        params.insert("capabilities".into(), json!({}));
        params.insert(
            "clientInfo".into(),
            json!({"name": "mcp-authz-check", "version": env!("CARGO_PKG_VERSION")}),
        );
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    Ok(body.to_string().into_bytes())
}

async fn check(a: CheckArgs) -> ExitCode {
    let body = match (&a.rpc, &a.body, &a.body_file) {
        (Some(method), _, _) => match rpc_body(method, a.name.as_deref(), a.arguments.as_deref()) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        (None, Some(b), _) => b.clone().into_bytes(),
        (None, None, Some(p)) => match std::fs::read(p) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read `{}`: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        (None, None, None) => Vec::new(),
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
