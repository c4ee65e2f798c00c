//! Command-line interface: the argument definitions and the dispatch to each subcommand's
//! file below `cli/`. `main.rs` only parses and calls [`run`].

mod check;
mod dev;
mod explain;
mod policy;
mod scaffold;
mod serve;
mod status;
mod verify;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, StepUpScope};

/// Exit code for configuration errors (EX_USAGE, as linkerd does).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code of `check` and `policy explain` when the answer is a deny, and of `status` when
/// the server is not ready.
pub const EXIT_DENIED: u8 = 1;
/// Exit code of the client subcommands (`check`, `status`, `policy explain`, `policy test`)
/// when they could not get an answer at all.
pub const EXIT_ERROR: u8 = 2;

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
    /// Print the `allowed_headers` block for Envoy's ext_authz filter: every request header a
    /// check under this configuration reads, so Envoy sends those and no others.
    EnvoyHeaders(ConfigArg),
    /// Run with an embedded development issuer and a sample resource. NOT FOR PRODUCTION.
    Dev(DevArgs),
    /// Mint an access token from the running dev issuer (reads its state file).
    Token(TokenArgs),
    /// Send one Envoy-shaped CheckRequest to a running server and print the decision.
    /// Exit 0 on allow, 1 on deny, 2 on error.
    Check(CheckArgs),
    /// Tools for policy authors: validate, test, diff, explain, scaffold, verify.
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
        /// Exit 1 when fewer than this share (0-100) of the policies are determining in some
        /// case (a permit that allowed something, a forbid that denied something).
        #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
        min_coverage: Option<f64>,
    },
    /// Evaluate two policy directories over the same requests (both sets' test cases and a
    /// request space built from their schemas, entities and cases) and print each request
    /// whose decision or step-up challenge changed, grouped by policy. Exit 0 when nothing
    /// changed, 1 when something did, 2 on an error.
    Diff {
        /// The policy directory before the change.
        old: PathBuf,
        /// The policy directory after the change.
        new: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
        format: DiffFormat,
        /// The most requests taken from the request space (test cases are always evaluated).
        #[arg(long, default_value_t = crate::policy::diff::DEFAULT_LIMIT)]
        limit: usize,
    },
    /// Evaluate one hypothetical request, offline against a policy directory or live through a
    /// running server (`--addr`): decision, determining policies, challenge.
    Explain(Box<ExplainArgs>),
    /// Print Cedar schema declarations for a server's tools, one typed action per tool, from a
    /// saved `tools/list` result. Exit 64 when the file or the server id is refused.
    Scaffold {
        /// A saved `tools/list` result: the JSON-RPC response, its `result`, or the tools array.
        #[arg(long, value_name = "FILE")]
        from_tools: PathBuf,
        /// The server id (`servers[].id`) the tools belong to.
        #[arg(long, value_name = "ID")]
        server: String,
        /// Write the declarations to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Prove properties for every possible request with Cedar's symbolic compiler and a cvc5
    /// solver: tenant isolation, the deny-lists, no dead policy, the properties file's
    /// assertions, and with --no-new-allows that nothing new is allowed. Exit 0 when all hold,
    /// 1 when one fails (with a counterexample), 2 when one cannot be decided or on error.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Policy directory.
    #[arg(default_value = "policies")]
    pub dir: PathBuf,
    /// Also prove that DIR allows nothing this older policy directory denied.
    #[arg(long, value_name = "OLD_DIR")]
    pub no_new_allows: Option<PathBuf>,
    /// Properties file; default `<dir>/properties.yaml` when it exists, else the built-ins.
    #[arg(long, value_name = "FILE")]
    pub properties: Option<PathBuf>,
    /// The cvc5 executable; default `$CVC5`, else `cvc5` on the PATH.
    #[arg(long, value_name = "PATH")]
    pub solver: Option<PathBuf>,
    /// Bound on each solver call (a property not decided in time is reported, not skipped).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// How `policy diff` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// Changes grouped by policy, each as `policy explain` flags, and a summary line.
    Text,
    /// One JSON object: the counts and every change with both answers.
    Json,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Policy directory (offline evaluation).
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// Evaluate against a running server's live policies and configuration instead, through
    /// its admin gRPC API (`listen.admin_grpc`); the server's tenant, scopes_supported and
    /// step_up apply.
    #[arg(long, conflicts_with = "policies")]
    pub addr: Option<String>,
    /// With `--addr`: evaluate with the server's shadow policy set instead of its live set.
    #[arg(long, requires = "addr")]
    pub shadow: bool,
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
    /// The token's client id (`context.client_id`, `principal.client_id`).
    #[arg(long)]
    pub client_id: Option<String>,
    /// The token's issuer (`principal.issuer`).
    #[arg(long)]
    pub issuer: Option<String>,
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
    /// The server's `step_up.scope`: what a step-up challenge names (`operation`: what the
    /// operation needs; `granted_and_operation`: the granted scopes too, for clients that
    /// replace their scopes).
    #[arg(
        long = "step-up-scope",
        default_value = "operation",
        conflicts_with = "addr"
    )]
    pub step_up_scope: StepUpScope,
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
    #[arg(long, default_value = crate::dev::DEV_RESOURCE)]
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
    /// Scopes (repeatable or space-separated); default `mcp:connect mcp:tools:weather`.
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
        Command::Serve(a) => serve::serve(&a.config).await,
        Command::Validate(a) => serve::validate(&a.config),
        Command::EnvoyHeaders(a) => serve::envoy_headers(&a.config),
        Command::Dev(a) => dev::dev(a).await,
        Command::Token(a) => dev::token(a),
        Command::Check(a) => check::check(a).await,
        Command::Policy(PolicyCommand::Explain(a)) if a.addr.is_some() => {
            policy::explain_remote(*a).await
        }
        Command::Policy(PolicyCommand::Verify(a)) => verify::verify(a).await,
        Command::Policy(p) => policy::policy_command(p),
        Command::Status { addr } => status::status(&addr).await,
    }
}

// === shared helpers ===

/// Loads a configuration file, printing why not. The one place the CLI reads the config
/// module's error types, so a change there is a change here only.
fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Validates a configuration built in code (`dev`), printing the offending key.
fn check_config(config: &Config) -> Result<(), ExitCode> {
    config.validate().map_err(|e| {
        eprintln!("error: key `{}`: {}", e.key, e.message);
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Repeatable flags that also take space-separated lists (`--scope "a b" --scope c`).
fn split_words(list: &[String]) -> Vec<String> {
    list.iter()
        .flat_map(|s| s.split_whitespace())
        .map(str::to_owned)
        .collect()
}

/// `--claim name=value` flags as pairs; the error names the malformed one.
fn parse_claims(claims: &[String]) -> Result<Vec<(String, String)>, String> {
    claims
        .iter()
        .map(|c| {
            c.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("--claim `{c}` is not name=value"))
        })
        .collect()
}

/// `--min-coverage`: a percentage from 0 to 100.
fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{s}` is not a percentage from 0 to 100")),
    }
}

/// A gRPC endpoint URI for `--addr`, which users give as `host:port`.
fn endpoint(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}
