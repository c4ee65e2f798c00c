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
