//! The thin gRPC adapter: Envoy's `CheckRequest` in, engine [`Decision`] out as a
//! `CheckResponse`. All protobuf conversions live here, and in `request` the client side:
//! building the `CheckRequest` Envoy would send.

mod admission;
pub mod ext_proc;
mod request;

pub use admission::{Admission, Admitted, Shed};
pub use ext_proc::ListService;
pub use request::{ClientRequest, RequestError, check_request, json_rpc_body};

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use crate::engine::{Allow, CheckInput, Decision, Engine, Respond};

/// `envoy.service.auth.v3.Authorization` backed by an [`Engine`].
#[derive(Clone)]
pub struct AuthzService {
    engine: Arc<Engine>,
}

impl AuthzService {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let request = request.into_inner();
        let Some(http) = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
        else {
            // Not an HTTP check: nothing to decide on. Envoy's error path (status_on_error,
            // never failure_mode_allow in our deploy files) applies.
            return Err(Status::invalid_argument(
                "CheckRequest has no HTTP request attributes",
            ));
        };
        // `raw_body` when Envoy packs bytes (`pack_as_bytes: true`), else the UTF-8 `body`.
        let body = if http.raw_body.is_empty() {
            http.body.as_bytes()
        } else {
            &http.raw_body
        };
        // With `encode_raw_headers: true` Envoy fills `header_map` instead of `headers`.
        // Envoy's `headers` names are lowercase; a client that is not Envoy may send others,
        // which the engine (looking names up in lowercase) would not see: `Mcp-Method` would
        // go unchecked and a second `Authorization` unnoticed. Such maps are lowercased and
        // joined like `header_map`.
        let raw_headers;
        let headers = match &http.header_map {
            Some(map) if http.headers.is_empty() => {
                raw_headers = join_raw_headers(map);
                &raw_headers
            }
            _ if http
                .headers
                .keys()
                .any(|k| k.bytes().any(|b| b.is_ascii_uppercase())) =>
            {
                raw_headers = lowercase_headers(&http.headers);
                &raw_headers
            }
            _ => &http.headers,
        };
        let input = CheckInput {
            method: &http.method,
            path: &http.path,
            host: &http.host,
            headers,
            body,
        };
        let decision = self.engine.check(&input).await;
        Ok(Response::new(to_check_response(decision)))
    }
}

/// Lowercases names and joins repeated headers with `,`, the shape of `headers`, so that two
/// `Authorization` headers are still seen as two.
fn join_raw_headers(
    map: &envoy_types::pb::envoy::config::core::v3::HeaderMap,
) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::with_capacity(map.headers.len());
    for h in &map.headers {
        let value = if h.raw_value.is_empty() {
            h.value.clone()
        } else {
            String::from_utf8_lossy(&h.raw_value).into_owned()
        };
        out.entry(h.key.to_ascii_lowercase())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

/// `headers` with lowercased names, values of names that differ only in case joined with `,`
/// (in name order, so the result does not depend on the map's iteration order).
fn lowercase_headers(headers: &HashMap<String, String>) -> HashMap<String, String> {
    let mut names: Vec<&String> = headers.keys().collect();
    names.sort();
    let mut out: HashMap<String, String> = HashMap::with_capacity(headers.len());
    for name in names {
        let Some(value) = headers.get(name) else {
            continue;
        };
        out.entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push(',');
                v.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    out
}

pub fn to_check_response(decision: Decision) -> CheckResponse {
    match decision {
        Decision::Allow(allow) => allowed(*allow),
        Decision::Respond(respond) => denied(respond),
    }
}

fn allowed(allow: Allow) -> CheckResponse {
    let headers = allow
        .set_headers
        .into_iter()
        .map(|(key, value)| header(key, value, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .collect();
    let id = allow.caller.identity();
    let mut fields = HashMap::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            fields.insert(k.to_owned(), string_value(v));
        }
    };
    put("server", Some(&allow.server_id));
    put("subject", Some(&id.subject));
    put("issuer", Some(&id.issuer));
    put("tenant", id.tenant.as_deref());
    put("client_id", id.client_id.as_deref());
    fields.insert("scopes".to_owned(), string_value(&id.scopes.join(" ")));
    // What the list filter (ext_proc, `grpc/ext_proc.rs`) reads back: only for marked
    // requests, so other checks do not pay for it. Dynamic metadata is internal to Envoy and
    // per request: a client cannot set it.
    if let Some(list) = &allow.list {
        fields.insert("mcp_list".to_owned(), string_value(&list.mark.encode()));
        fields.insert(
            "server_tenant".to_owned(),
            string_value(&list.server_tenant),
        );
        fields.insert(
            "protocol_version".to_owned(),
            string_value(&list.protocol_version),
        );
        fields.insert("session_id".to_owned(), string_value(&list.session_id));
        fields.insert("claims".to_owned(), string_value(id.claims.as_json()));
        let groups = id.groups.iter().map(|g| string_value(g)).collect();
        fields.insert(
            "groups".to_owned(),
            Value {
                kind: Some(Kind::ListValue(ListValue { values: groups })),
            },
        );
    }
    CheckResponse {
        status: Some(rpc::Status {
            code: tonic::Code::Ok as i32,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove: allow.remove_headers,
            ..Default::default()
        })),
        // Lands under `envoy.filters.http.ext_authz` for access logs and later filters.
        dynamic_metadata: Some(Struct { fields }),
    }
}

fn denied(respond: Respond) -> CheckResponse {
    let code = match respond.status {
        401 => tonic::Code::Unauthenticated,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::PermissionDenied,
    };
    let headers = respond
        .headers
        .into_iter()
        .map(|(k, v)| {
            header(
                k.into_owned(),
                v,
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            )
        })
        .collect();
    CheckResponse {
        status: Some(rpc::Status {
            code: code as i32,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            // Always explicit: without it Envoy answers 403 to everything.
            status: Some(HttpStatus {
                code: i32::from(respond.status),
            }),
            headers,
            body: respond.body,
        })),
        dynamic_metadata: None,
    }
}

fn header(key: String, value: String, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key,
            value,
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderMap;

    #[test]
    fn raw_header_map_is_joined_like_headers() {
        let map = HeaderMap {
            headers: vec![
                HeaderValue {
                    key: "Authorization".into(),
                    raw_value: b"Bearer a".to_vec(),
                    ..Default::default()
                },
                HeaderValue {
                    key: "authorization".into(),
                    value: "Bearer b".into(),
                    ..Default::default()
                },
                HeaderValue {
                    key: "host".into(),
                    raw_value: b"x".to_vec(),
                    ..Default::default()
                },
            ],
        };
        let joined = join_raw_headers(&map);
        assert_eq!(joined["authorization"], "Bearer a,Bearer b");
        assert_eq!(joined["host"], "x");
    }

    #[test]
    fn header_names_in_any_case_are_lowercased_and_joined() {
        let headers: HashMap<String, String> = [
            ("Authorization", "Bearer b"),
            ("authorization", "Bearer a"),
            ("Mcp-Method", "tools/list"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let lowered = lowercase_headers(&headers);
        assert_eq!(lowered["authorization"], "Bearer b,Bearer a");
        assert_eq!(lowered["mcp-method"], "tools/list");
        assert_eq!(lowered.len(), 2);
    }
}
