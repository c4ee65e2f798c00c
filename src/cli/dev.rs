//! `mcp-authz dev` (the service with an embedded development issuer and a sample resource,
//! NOT FOR PRODUCTION) and `mcp-authz token` (mint from that issuer's state file).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::serve::run_service;
use super::{DevArgs, TokenArgs, check_config, split_words};
use crate::dev::{self, DevIssuer, Mint};

pub(super) async fn dev(a: DevArgs) -> ExitCode {
    let state = a.state.unwrap_or_else(dev::default_state_path);
    let policies = match a.policies {
        Some(dir) => dir,
        None => match dev::dev_policies(state.parent().unwrap_or(Path::new("."))) {
            Ok(dir) => dir,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let config = dev::dev_config(a.grpc, a.admin, a.admin_grpc, &a.resource, &policies);
    if let Err(code) = check_config(&config) {
        return code;
    }
    // INVARIANT: `dev_config` makes exactly one issuer (and `check_config` requires one).
    let Some(iss) = config.issuers.first().map(|i| i.issuer.clone()) else {
        eprintln!("error: the dev configuration has no issuer");
        return ExitCode::FAILURE;
    };
    let issuer = match DevIssuer::generate(iss, a.resource.clone()) {
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
    // The banner's examples name the binary as the user ran it, or `cargo run --` from a build
    // directory, where the path is long and changes.
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
    run_service(&config, Some(Arc::new(issuer)), None).await
}

pub(super) fn token(a: TokenArgs) -> ExitCode {
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
    // No --scope keeps the dev default set rather than minting a token without scopes.
    if !a.scopes.is_empty() {
        mint.scopes = split_words(&a.scopes);
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
