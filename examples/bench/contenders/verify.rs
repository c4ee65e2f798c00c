//! The decisions checked before a contender is measured: the measured requests allowed, and,
//! where there is authorization at all, no token denied with 401, and another tenant's token
//! and a token without the tool scope denied with 403; where the contender reads the MCP body,
//! another tool (403) too, and for mcp-authz a forecast past its argument limit (403). A rule
//! that allowed everything would fail here, before any figure is taken.

use std::net::SocketAddr;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::HttpResponse;
use hyper::header::HeaderValue;

use super::{Env, Kind, Started};
use crate::load::{self, Outcome, Target};
use crate::tokens::{CALL, LONG_FORECAST_CALL, OTHER_TOOL_CALL};
use crate::{grpc, http};

/// Checks the contender's decisions before it is measured. An error names the wrong one.
pub async fn verify(kind: Kind, started: &Started, env: &Env) -> Result<(), String> {
    let m = &env.material;
    match &started.target {
        Target::Grpc {
            addr,
            requests,
            expect,
            ..
        } => {
            // The first measured requests (for the mix, until both an allow and a denial were
            // seen, within 64) and the last one must get their decisions.
            let (mut allowed, mut denied) = (false, expect.is_none());
            let last = requests.len() - 1;
            let mut i = 0;
            loop {
                let want = expect
                    .as_ref()
                    .and_then(|e| e.get(i).copied())
                    .unwrap_or(200);
                let answer = grpc::check_once(*addr, requests[i].clone()).await?;
                match load::judge_expecting(&answer, want) {
                    Outcome::Wrong(why) | Outcome::Error(why) => {
                        return Err(format!("measured request {i}: {why}"));
                    }
                    Outcome::Allowed => allowed = true,
                    Outcome::Denied => denied = true,
                }
                i = match i {
                    _ if i == last => break,
                    _ if (allowed && denied) || i >= 63 => last,
                    _ => i + 1,
                };
            }
            if !allowed || !denied {
                return Err(
                    "the measured requests did not include both an allow and a denial".into(),
                );
            }
            if kind.authorizes() {
                grpc_denied(*addr, m.no_token.clone(), 401, "no token").await?;
                grpc_denied(*addr, m.other_tenant_check.clone(), 403, "another tenant").await?;
                let no_scope = m.no_tool_scope_check.clone();
                grpc_denied(*addr, no_scope, 403, "no tool scope").await?;
                grpc_denied(*addr, m.other_tool_check.clone(), 403, "another tool").await?;
                let long = m.long_forecast_check.clone();
                grpc_denied(*addr, long, 403, "a 30-day forecast").await?;
            }
        }
        Target::Http {
            addr,
            authorization,
            body: sent,
        } => {
            let (status, body) = http::once(*addr, authorization.as_ref(), sent).await?;
            if kind == Kind::EnvoyMcpAuthzList {
                // The upstream lists twenty tools; the token sees four (see `upstream`).
                let v: serde_json::Value = serde_json::from_str(&body)
                    .map_err(|e| format!("the list response is not JSON ({e}): `{body}`"))?;
                let n = v["result"]["tools"].as_array().map_or(0, Vec::len);
                if status != 200 || n != 4 || body.contains("delete_everything") {
                    return Err(format!(
                        "the list came back with HTTP {status} and {n} tools, not the 4 the token may see: `{body}`"
                    ));
                }
            } else if status != 200 || !body.contains("upstream: sunny") {
                return Err(format!(
                    "the measured request got HTTP {status} `{body}`, not the upstream's 200"
                ));
            }
            if kind.authorizes() {
                let bearer = |t: &str| {
                    HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| e.to_string())
                };
                let mut denials = vec![
                    (None, CALL, 401, "no token"),
                    (
                        Some(bearer(&m.other_tenant)?),
                        CALL,
                        403,
                        "another tenant's token",
                    ),
                    (
                        Some(bearer(&m.no_tool_scope)?),
                        CALL,
                        403,
                        "a token without the tool scope",
                    ),
                ];
                if kind.reads_body() {
                    denials.push((authorization.clone(), OTHER_TOOL_CALL, 403, "another tool"));
                }
                if kind == Kind::EnvoyMcpAuthz {
                    let long = (
                        authorization.clone(),
                        LONG_FORECAST_CALL,
                        403,
                        "a 30-day forecast",
                    );
                    denials.push(long);
                }
                for (auth, body, want, what) in denials {
                    let (status, _) = http::once(*addr, auth.as_ref(), body).await?;
                    if status != want {
                        return Err(format!("{what}: HTTP {status}, expected {want}"));
                    }
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
