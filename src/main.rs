//! `mcp-authz`: parse arguments, start logging, hand over to the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use mcp_authz::cli::{Cli, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match cli.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // No `target` (module path) key: the decision log uses `target` for the MCP target.
        builder.json().flatten_event(true).with_target(false).init();
    } else {
        // Colour codes only on a terminal: redirected to a file they are noise.
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
    mcp_authz::cli::run(cli).await
}
