//! `mcp-authz status`, and the admin gRPC API client it shares with `policy explain --addr`.

use std::process::ExitCode;

use tonic::transport::Channel;

use super::{EXIT_DENIED, EXIT_ERROR, endpoint};
use crate::admin::grpc::pb::{self, admin_client::AdminClient};

/// Connects to the admin gRPC API (`listen.admin_grpc`) at `addr`.
pub(super) async fn admin_client(addr: &str) -> Result<AdminClient<Channel>, String> {
    AdminClient::connect(endpoint(addr))
        .await
        .map_err(|e| format!("cannot connect to `{addr}`: {e}"))
}

pub(super) async fn status(addr: &str) -> ExitCode {
    let mut client = match admin_client(addr).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let s = match client.status(pb::StatusRequest {}).await {
        Ok(r) => r.into_inner(),
        Err(e) => {
            eprintln!("error: Status failed: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    println!("ready: {} (version {})", s.ready, s.version);
    if let Some(c) = &s.config {
        println!(
            "config: `{}` {} (loaded at {})",
            c.path, c.hash, c.loaded_at_unix
        );
        if !c.error.is_empty() {
            println!(
                "  failing: {} (the configuration above stays in use)",
                c.error
            );
        }
        if !c.restart_required.is_empty() {
            println!(
                "  changed, waiting for a restart: {}",
                c.restart_required.join(", ")
            );
        }
    }
    for server in &s.servers {
        println!("server {}:", server.server_id);
        if let Some(live) = &server.live {
            println!("  live   {}", set_line(live));
        }
        if let Some(shadow) = &server.shadow {
            println!("  shadow {}", set_line(shadow));
            let total: u64 = server.shadow_decisions.iter().map(|c| c.count).sum();
            let disagree: u64 = server
                .shadow_decisions
                .iter()
                .filter(|c| c.live != c.shadow)
                .map(|c| c.count)
                .sum();
            println!("  shadow decisions: {total} evaluated, {disagree} disagreed");
            for c in server
                .shadow_decisions
                .iter()
                .filter(|c| c.live != c.shadow)
            {
                println!("    live {} / shadow {}: {}", c.live, c.shadow, c.count);
            }
        }
    }
    for i in &s.issuers {
        let error = if i.last_error.is_empty() {
            String::new()
        } else {
            format!(
                ", last error ({}, {} failed fetches in a row): {}",
                i.last_error_kind, i.consecutive_failures, i.last_error
            )
        };
        println!(
            "issuer {}: ready {}, {} keys{error}",
            i.issuer, i.ready, i.keys
        );
    }
    if s.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    }
}

/// One policy set: hash, state, size, directory.
fn set_line(s: &pb::PolicySetStatus) -> String {
    let mut line = match s.state.as_str() {
        "never_loaded" => format!("(never loaded) from `{}`", s.dir),
        _ => format!(
            "{} {} ({} policies from `{}`, loaded at {})",
            s.hash, s.state, s.policies, s.dir, s.loaded_at_unix
        ),
    };
    if !s.error.is_empty() {
        line.push_str(&format!("\n         error: {}", s.error));
    }
    line
}
