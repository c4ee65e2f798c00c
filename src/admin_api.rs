//! The admin gRPC API (`proto/mcp_authz/admin/v1/admin.proto`): `Status` reports readiness, the
//! active policy set and the key sets; `Explain` evaluates a hypothetical request against the
//! live policies and configuration, with exactly the code a check runs.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::policy::cases::{self, Case, Defaults, Expect, PrincipalSpec, ServerSpec};

#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
pub mod pb {
    tonic::include_proto!("mcp_authz.admin.v1");
}

use pb::admin_server::Admin;

pub struct AdminService {
    engine: Arc<Engine>,
}

impl AdminService {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let issuers: Vec<pb::IssuerStatus> = self
            .engine
            .issuers()
            .iter()
            .map(|i| {
                let s = i.status();
                pb::IssuerStatus {
                    issuer: s.issuer,
                    ready: s.ready,
                    keys: u32::try_from(s.keys).unwrap_or(u32::MAX),
                    last_error: s.last_error.unwrap_or_default(),
                }
            })
            .collect();
        let bundle = self.engine.policies().load();
        Ok(Response::new(pb::StatusResponse {
            ready: issuers.iter().all(|i| i.ready),
            version: env!("CARGO_PKG_VERSION").into(),
            policies: Some(pb::PolicySet {
                hash: bundle.hash.clone(),
                loaded_at_unix: bundle
                    .loaded_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                policies: u32::try_from(bundle.policy_ids.len()).unwrap_or(u32::MAX),
                dir: bundle.dir.display().to_string(),
            }),
            issuers,
        }))
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let r = request.into_inner();
        let server = self
            .engine
            .servers()
            .iter()
            .find(|s| s.id == r.server_id)
            .ok_or_else(|| Status::not_found(format!("no server `{}`", r.server_id)))?;
        let tenant = non_empty(&r.server_tenant)
            .or_else(|| server.static_tenant().map(str::to_owned))
            .ok_or_else(|| {
                Status::invalid_argument(
                    "this server takes its tenant from the request: set server_tenant",
                )
            })?;
        let arguments = match r.arguments_json.as_str() {
            "" => serde_json::Map::new(),
            json => match serde_json::from_str(json) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => {
                    return Err(Status::invalid_argument(
                        "arguments_json must be a JSON object",
                    ));
                }
            },
        };
        let p = r.principal.unwrap_or_default();
        let case = Case {
            name: "explain".into(),
            server: ServerSpec {
                id: Some(server.id.clone()),
                tenant: Some(tenant),
                scopes_supported: Some(server.scopes_supported.clone()),
            },
            principal: PrincipalSpec {
                sub: non_empty(&p.sub),
                tenant: Some(p.tenant),
                client_id: non_empty(&p.client_id),
                issuer: non_empty(&p.issuer),
                scopes: Some(p.scopes),
                groups: Some(p.groups),
                claims: Some(
                    p.claims
                        .into_iter()
                        .map(|(k, v)| (k, serde_json::Value::String(v)))
                        .collect(),
                ),
            },
            method: r.method,
            tool: non_empty(&r.tool),
            prompt: non_empty(&r.prompt),
            resource: non_empty(&r.resource),
            task: non_empty(&r.task),
            arguments,
            expect: Expect::Allow,
            policies: None,
            challenge_scope: None,
        };
        let bundle = self.engine.policies().load();
        let outcome = cases::evaluate(&bundle, &Defaults::default(), &case)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let d = outcome.decision;
        let www_authenticate = match (&d.missing_scopes, &outcome.challenge_scope) {
            (Some(_), Some(scope)) => {
                let scopes: Vec<String> = scope.split(' ').map(str::to_owned).collect();
                crate::challenge::insufficient_scope(&server.prm_url, &scopes)
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ExplainResponse {
            allowed: d.allowed,
            determining_policies: d.determining,
            errors: d.errors,
            http_status: if d.allowed { 200 } else { 403 },
            www_authenticate,
            policy_hash: bundle.hash.clone(),
        }))
    }
}
