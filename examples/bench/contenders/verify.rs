//! The decisions checked before a contender is measured: the measured requests allowed, and,
//! where there is authorization at all, no token denied with 401 and another tenant's token
//! denied with 403.

use std::net::SocketAddr;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::HttpResponse;
use hyper::header::HeaderValue;

use super::{Env, Kind, Started};
use crate::load::{self, Outcome, Target};
use crate::{grpc, http};

/// Checks the contender's decisions before it is measured. An error names the wrong one.
pub async fn verify(kind: Kind, started: &Started, env: &Env) -> Result<(), String> {
    let m = &env.material;
    match &started.target {
        Target::Grpc { addr, requests, .. } => {
            let mut samples = vec![requests[0].clone()];
            if requests.len() > 1 {
                samples.push(requests[requests.len() - 1].clone());
            }
            for body in samples {
                if let Outcome::Wrong(why) | Outcome::Error(why) =
                    load::judge(&grpc::check_once(*addr, body).await?)
                {
                    return Err(format!("a measured request was not allowed: {why}"));
                }
            }
            if kind.authorizes() {
                grpc_denied(*addr, m.no_token.clone(), 401, "no token").await?;
                grpc_denied(*addr, m.other_tenant_check.clone(), 403, "another tenant").await?;
            }
        }
        Target::Http {
            addr,
            authorization,
        } => {
            let (status, body) = http::once(*addr, authorization.as_ref()).await?;
            if status != 200 || !body.contains("upstream: sunny") {
                return Err(format!(
                    "the measured request got HTTP {status} `{body}`, not the upstream's 200"
                ));
            }
            if kind.authorizes() {
                let (status, _) = http::once(*addr, None).await?;
                if status != 401 {
                    return Err(format!("no token: HTTP {status}, expected 401"));
                }
                let other = HeaderValue::from_str(&format!("Bearer {}", m.other_tenant))
                    .map_err(|e| e.to_string())?;
                let (status, _) = http::once(*addr, Some(&other)).await?;
                if status != 403 {
                    return Err(format!(
                        "another tenant's token: HTTP {status}, expected 403"
                    ));
                }
            }
        }
    }
    Ok(())
}

async fn grpc_denied(addr: SocketAddr, body: Bytes, want: i32, what: &str) -> Result<(), String> {
    let r = grpc::check_once(addr, body).await?;
    let code = r.status.as_ref().map_or(0, |s| s.code);
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d))
            if code != 0 && d.status.as_ref().map(|s| s.code) == Some(want) =>
        {
            Ok(())
        }
        other => Err(format!(
            "{what}: expected a denial with HTTP {want}, got status code {code} and {other:?}"
        )),
    }
}
