//! A whole check through the gRPC adapter against the shipped policies, from an arbitrary
//! `CheckRequest` (protobuf bytes) or a structured one carrying real tokens minted for the run, so
//! the fuzzer reaches token verification, MCP parsing and the policies. Invariants: no panic; an
//! allow only ever follows a valid token in the `authorization` header; no answer carries a token;
//! the engine with the decision cache answers exactly as one without it (decision ids aside);
//! within the time budget.
#![no_main]

#[path = "common/budget.rs"]
mod budget;

use std::sync::{Arc, OnceLock};

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, HttpResponse};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use mcp_authz::config::Config;
use mcp_authz::engine::Engine;
use mcp_authz::grpc::{AuthzService, ClientRequest, check_request};
use mcp_authz::testutil::{TestKey, claims, shipped_policies};
use prost::Message;

const ISS: &str = "https://idp.fuzz";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-32b!";

struct World {
    rt: tokio::runtime::Runtime,
    service: AuthzService,
    /// The same engine with `cache.decisions: 0`: every message runs Cedar.
    uncached: AuthzService,
    /// Tokens that verify (with different scopes).
    valid: Vec<String>,
    /// Tokens that must not: expired, wrong audience, forged.
    invalid: Vec<String>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mcp-authz-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        let yaml = format!(
            r#"
policies: {{dir: {policies}}}
listen: {{grpc: "127.0.0.1:0", admin: "127.0.0.1:0", admin_grpc: "127.0.0.1:0"}}
issuers:
  - issuer: {ISS}
    algorithms: [HS256]
    hmac_secret: {{file: {secret}}}
    claims: {{tenant: tenant}}
servers:
  - id: demo
    tenant: acme
    resource: {RESOURCE}
    authorization_servers: [{ISS}]
    scopes_supported: [mcp:connect, mcp:tools:weather, mcp:tools:files, mcp:tools:admin]
    match: {{hosts: ["*"]}}
"#,
            policies = shipped_policies().display(),
            secret = secret.display(),
        );
        let config = Config::from_yaml(&yaml).unwrap();
        let metrics = mcp_authz::metrics::Metrics::unregistered();
        let issuers = Engine::issuers_from_config(&config, &metrics).unwrap();
        let policies =
            mcp_authz::policy::PolicyStore::open(&config.policies.dir, metrics.clone()).unwrap();
        let mut no_cache = config.clone();
        no_cache.cache.decisions = 0;
        let uncached = Arc::new(
            Engine::new(
                &no_cache,
                Engine::issuers_from_config(&no_cache, &metrics).unwrap(),
                policies.clone(),
                metrics.clone(),
            )
            .unwrap(),
        );
        let engine = Arc::new(Engine::new(&config, issuers, policies, metrics).unwrap());
        let key = TestKey::hmac("k", SECRET, jsonwebtoken::Algorithm::HS256);
        let with_scope = |scope: &str| {
            let mut c = claims(ISS, RESOURCE);
            c["scope"] = serde_json::json!(scope);
            key.token(&c)
        };
        let valid = vec![
            with_scope("mcp:connect mcp:tools:weather mcp:tools:files"),
            with_scope("mcp:connect"),
        ];
        let mut expired = claims(ISS, RESOURCE);
        expired["exp"] = serde_json::json!(1);
        let forged = TestKey::hmac(
            "k",
            b"another-secret-another-secret-32b!",
            jsonwebtoken::Algorithm::HS256,
        )
        .token(&claims(ISS, RESOURCE));
        let invalid = vec![
            key.token(&expired),
            key.token(&claims(ISS, "https://other/mcp")),
            forged,
        ];
        World {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            service: AuthzService::new(engine),
            uncached: AuthzService::new(uncached),
            valid,
            invalid,
        }
    })
}

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any protobuf bytes.
    Raw(Vec<u8>),
    /// A request shaped like Envoy's, with a chosen token.
    Shaped {
        method: u8,
        path: String,
        token: u8,
        scheme: String,
        headers: Vec<String>,
        tool: String,
        arguments: String,
        body: Option<Vec<u8>>,
    },
}

fuzz_target!(|input: Input| {
    let w = world();
    let all: Vec<&String> = w.valid.iter().chain(&w.invalid).collect();
    let request = match input {
        Input::Raw(bytes) => match CheckRequest::decode(bytes.as_slice()) {
            Ok(r) => r,
            Err(_) => return,
        },
        Input::Shaped {
            method,
            path,
            token,
            scheme,
            headers,
            tool,
            arguments,
            body,
        } => {
            let method = ["POST", "GET", "DELETE", "PUT"][usize::from(method % 4)];
            let path = if path.is_empty() {
                "/mcp".to_owned()
            } else {
                format!("/mcp{path}")
            };
            let mut headers: Vec<String> =
                headers.into_iter().filter(|h| h.contains(':')).collect();
            headers.push("content-type: application/json".into());
            if let Some(t) = all.get(usize::from(token) % (all.len() + 1)) {
                let scheme = if scheme.is_empty() {
                    "Bearer".to_owned()
                } else {
                    scheme
                };
                headers.push(format!("authorization: {scheme} {t}"));
            }
            let body = body.unwrap_or_else(|| {
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":{},"arguments":{}}}}}"#,
                    serde_json::Value::String(tool),
                    if arguments.starts_with('{') { arguments } else { "{}".into() }
                )
                .into_bytes()
            });
            match check_request(ClientRequest {
                method: method.into(),
                path,
                host: "mcp.example.com".into(),
                bearer: None,
                headers,
                body,
            }) {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    let authorization: Vec<String> = request
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .map(|h| {
            let mut v: Vec<String> = h
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.clone())
                .collect();
            if let Some(map) = &h.header_map {
                v.extend(
                    map.headers
                        .iter()
                        .filter(|e| e.key.eq_ignore_ascii_case("authorization"))
                        .map(|e| format!("{}{}", e.value, String::from_utf8_lossy(&e.raw_value))),
                );
            }
            v
        })
        .unwrap_or_default();
    let answer = budget::within_budget("checking", || {
        w.rt.block_on(w.service.check(tonic::Request::new(request.clone())))
    });
    let Ok(response) = answer else { return };
    let response = response.into_inner();
    // The same request again on both engines: the second time may come from the decision cache
    // (the first answer above filled it), and must equal what Cedar gives without one.
    let again = w.rt.block_on(w.service.check(tonic::Request::new(request.clone())));
    let fresh = w.rt.block_on(w.uncached.check(tonic::Request::new(request.clone())));
    match (again, fresh) {
        (Ok(a), Ok(f)) => assert_eq!(
            without_decision_id(&a.into_inner()),
            without_decision_id(&f.into_inner()),
            "the decision cache changed an answer"
        ),
        (a, f) => assert_eq!(a.is_ok(), f.is_ok(), "the decision cache changed an answer"),
    }
    let allowed = response.status.as_ref().is_some_and(|s| s.code == 0)
        && matches!(response.http_response, Some(HttpResponse::OkResponse(_)));
    if allowed {
        assert!(
            authorization
                .iter()
                .any(|a| w.valid.iter().any(|t| a.contains(t.as_str()))),
            "allowed without a valid token: {authorization:?}"
        );
    }
    let text = format!("{response:?}");
    for t in &all {
        // The signature part is what makes a token a credential.
        let signature = t.rsplit('.').next().unwrap_or(t);
        assert!(!text.contains(signature), "an answer carries a token");
    }
});

/// The answer's text with its random decision id replaced by a fixed word, in a fixed order.
fn without_decision_id(response: &envoy_types::ext_authz::v3::pb::CheckResponse) -> String {
    let headers = match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => &ok.headers,
        Some(HttpResponse::DeniedResponse(denied)) => &denied.headers,
        _ => return format!("{response:?}"),
    };
    let id = headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == "x-mcp-authz-decision-id")
        .map(|h| h.value.clone());
    // The dynamic metadata is a hash map: its members printed in a fixed order.
    let mut response = response.clone();
    let metadata: std::collections::BTreeMap<String, String> = response
        .dynamic_metadata
        .take()
        .map(|s| s.fields.into_iter().map(|(k, v)| (k, format!("{v:?}"))).collect())
        .unwrap_or_default();
    let text = format!("{response:?} {metadata:?}");
    match id {
        Some(id) if !id.is_empty() => text.replace(&id, "<decision id>"),
        _ => text,
    }
}
