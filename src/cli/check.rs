//! `mcp-authz check`: send one Envoy-shaped `CheckRequest` to a running server and print the
//! decision as Envoy would act on it.

use std::process::ExitCode;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;

use super::{CheckArgs, EXIT_DENIED, EXIT_ERROR, endpoint};
use crate::grpc::{ClientRequest, check_request, json_rpc_body};

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_ERROR)
}

pub(super) async fn check(a: CheckArgs) -> ExitCode {
    let body = match (&a.rpc, &a.body, &a.body_file) {
        (Some(method), _, _) => {
            match json_rpc_body(method, a.name.as_deref(), a.arguments.as_deref()) {
                Ok(b) => b,
                Err(e) => return fail(e),
            }
        }
        (None, Some(b), _) => b.clone().into_bytes(),
        (None, None, Some(p)) => match std::fs::read(p) {
            Ok(b) => b,
            Err(e) => return fail(format_args!("cannot read `{}`: {e}", p.display())),
        },
        (None, None, None) => Vec::new(),
    };
    let request = match check_request(ClientRequest {
        method: a.method,
        path: a.path,
        host: a.host,
        bearer: a.token,
        headers: a.headers,
        body,
    }) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut client = match AuthorizationClient::connect(endpoint(&a.addr)).await {
        Ok(c) => c,
        Err(e) => return fail(format_args!("cannot connect to `{}`: {e}", a.addr)),
    };
    let response = match client.check(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => return fail(format_args!("Check failed: {status}")),
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
            // Envoy's own default when a denial carries no status.
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
        ExitCode::from(EXIT_DENIED)
    }
}
