//! The hostile suite's machinery: the running stack (a fake IdP and the real server), a builder
//! for Envoy-shaped requests that can say anything a hostile client or a misbehaving proxy
//! could, the expected answers, and the concurrent runner that checks every case.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use futures_util::StreamExt as _;
use mcp_authz::config::Config;
use mcp_authz::server::{self, Running};
use mcp_authz::testutil::{FakeIdp, TestKey, claims, shipped_policies};
use serde_json::{Value, json};

pub const HOST: &str = "mcp.example.com";
/// Server `demo` (tenant acme): the shipped policies' server.
pub const RESOURCE: &str = "https://mcp.example.com/mcp";
/// Server `other` (tenant globex).
pub const RESOURCE_B: &str = "https://mcp.example.com/b/mcp";
/// Server `tenants`: the tenant is the second path segment (`/t/acme/mcp`).
pub const RESOURCE_T: &str = "https://mcp.example.com/t";
pub const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
pub const PRM_BASE: &str = "https://mcp.example.com/.well-known/oauth-protected-resource";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    Token,
    Header,
    Body,
    Routing,
    Names,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Token,
        Category::Header,
        Category::Body,
        Category::Routing,
        Category::Names,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Token => "token",
            Category::Header => "header",
            Category::Body => "body",
            Category::Routing => "routing",
            Category::Names => "names",
        }
    }
}

// === Ctx ===

/// The stack every case runs against.
pub struct Ctx {
    /// RSA, RS256, kid `k1`: signs the valid tokens.
    pub key: TestKey,
    /// P-256, ES256, kid `e1`: published too, so a token without `kid` is ambiguous.
    pub ec: TestKey,
    pub idp: FakeIdp,
    pub running: Running,
}

impl Ctx {
    pub async fn start() -> Self {
        let key = TestKey::rsa("k1");
        let ec = TestKey::ec("e1");
        let idp = FakeIdp::start(&[&key, &ec]).await;
        let yaml = format!(
            r#"
policies:
  dir: {policies}
listen:
  grpc: 127.0.0.1:0
  admin: 127.0.0.1:0
  admin_grpc: 127.0.0.1:0
issuers:
  - issuer: {issuer}
    algorithms: [RS256, ES256]
    claims: {{tenant: tenant}}
servers:
  - id: demo
    tenant: acme
    resource: {RESOURCE}
    authorization_servers: [{issuer}]
    scopes_supported: [mcp:connect, mcp:tools:weather, mcp:tools:files, mcp:tools:admin]
    challenge_scopes: [mcp:connect]
  - id: other
    tenant: globex
    resource: {RESOURCE_B}
    authorization_servers: [{issuer}]
    scopes_supported: [mcp:connect]
    challenge_scopes: [mcp:connect]
  - id: tenants
    tenant_from: {{path_segment: 2}}
    resource: {RESOURCE_T}
    authorization_servers: [{issuer}]
    scopes_supported: [mcp:connect]
    challenge_scopes: [mcp:connect]
{overload}
"#,
            policies = shipped_policies().display(),
            issuer = idp.issuer,
            // A debug build on a machine shared with other builds: a shed check is not an answer.
            overload = mcp_authz::testutil::TEST_OVERLOAD,
        );
        let config = Config::from_yaml(&yaml).unwrap();
        let running = server::start(&config, None).await.unwrap();
        assert!(running.wait_ready(Duration::from_secs(10)).await);
        Self {
            key,
            ec,
            idp,
            running,
        }
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }

    /// Valid claims for server `demo`, with the weather and file tool scopes.
    pub fn claims(&self) -> Value {
        let mut c = claims(&self.idp.issuer, RESOURCE);
        c["scope"] = json!("mcp:connect mcp:tools:weather mcp:tools:files");
        c
    }

    /// `claims()` with `edit` applied.
    pub fn claims_with(&self, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut c = self.claims();
        if let Value::Object(map) = &mut c {
            edit(map);
        }
        c
    }

    /// A token signed by the published RSA key, `typ: at+jwt`, `kid: k1`.
    pub fn mint(&self, claims: &Value) -> String {
        self.key.token(claims)
    }

    /// The valid token for server `demo`.
    pub fn good(&self) -> String {
        self.mint(&self.claims())
    }

    /// A token from raw header and claims text, signed by the published RSA key.
    pub fn raw(&self, header: &str, claims: &str) -> String {
        self.key.sign_raw(header, claims)
    }

    /// The valid claims as JSON text, for raw edits.
    pub fn claims_text(&self) -> String {
        self.claims().to_string()
    }

    /// The valid claims as JSON text without the closing brace, to append members to.
    pub fn claims_open(&self) -> String {
        let text = self.claims_text();
        text.strip_suffix('}').unwrap().to_owned()
    }
}

// === Req ===

/// An HTTP request as Envoy's ext_authz filter describes it, or as a hostile gRPC client could.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub host: String,
    pub path: String,
    /// In order; repeated names are joined with `,` as Envoy does (names are sent as given).
    pub headers: Vec<(String, String)>,
    /// Send the headers as Envoy's `header_map` (`encode_raw_headers: true`), names as given.
    pub raw_map: bool,
    pub body: Vec<u8>,
    /// Strings that must appear nowhere in the answer: the tokens sent.
    pub secrets: Vec<String>,
}

impl Req {
    /// A POST of `body` as `application/json`.
    pub fn post(body: impl Into<Vec<u8>>) -> Self {
        Self {
            method: "POST".into(),
            host: HOST.into(),
            path: "/mcp".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            raw_map: false,
            body: body.into(),
            secrets: vec![],
        }
    }

    /// A ping POST.
    pub fn ping() -> Self {
        Self::post(PING)
    }

    /// A body-less request with `method` (GET, DELETE...).
    pub fn bodiless(method: &str) -> Self {
        Self {
            method: method.into(),
            headers: vec![],
            body: vec![],
            ..Self::ping()
        }
    }

    /// `authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.auth(&format!("Bearer {token}"))
    }

    /// `authorization: <value>`, each piece of which that could be a token kept secret.
    pub fn auth(self, value: &str) -> Self {
        let pieces: Vec<String> = value
            .split([' ', ',', '\t'])
            .filter(|p| p.len() >= 16)
            .map(str::to_owned)
            .collect();
        let mut r = self.header("authorization", value);
        r.secrets.extend(pieces);
        r
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Removes every header named `name` (exactly as spelled).
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| k != name);
        self
    }

    pub fn path(mut self, path: &str) -> Self {
        self.path = path.into();
        self
    }

    pub fn host(mut self, host: &str) -> Self {
        self.host = host.into();
        self
    }

    pub fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }

    pub fn raw_map(mut self) -> Self {
        self.raw_map = true;
        self
    }

    pub fn secret(mut self, s: &str) -> Self {
        self.secrets.push(s.into());
        self
    }

    fn check_request(&self) -> CheckRequest {
        let mut headers: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
            .collect();
        // Envoy forwards the client's content-length with the body it buffered.
        if !self.body.is_empty() && !self.headers.iter().any(|(k, _)| k == "content-length") {
            headers.push(("content-length".into(), self.body.len().to_string().into()));
        }
        headers.push((":authority".into(), self.host.clone().into_bytes()));
        headers.push((":method".into(), self.method.clone().into_bytes()));
        headers.push((":path".into(), self.path.clone().into_bytes()));
        let (joined, header_map) = if self.raw_map {
            let map = HeaderMap {
                headers: headers
                    .into_iter()
                    .map(|(key, raw_value)| HeaderValue {
                        key,
                        raw_value,
                        ..Default::default()
                    })
                    .collect(),
            };
            (HashMap::new(), Some(map))
        } else {
            let mut joined: HashMap<String, String> = HashMap::new();
            for (k, v) in headers {
                let v = String::from_utf8(v).unwrap();
                joined
                    .entry(k)
                    .and_modify(|x| {
                        x.push(',');
                        x.push_str(&v);
                    })
                    .or_insert(v);
            }
            (joined, None)
        };
        let query = self
            .path
            .split_once('?')
            .map(|(_, q)| q.to_owned())
            .unwrap_or_default();
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: self.method.clone(),
                        path: self.path.clone(),
                        host: self.host.clone(),
                        scheme: "http".into(),
                        protocol: "HTTP/1.1".into(),
                        size: i64::try_from(self.body.len()).unwrap(),
                        query,
                        headers: joined,
                        header_map,
                        raw_body: self.body.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }
}

// === Expect ===

/// The exact answer a case must get.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// A benign control: allowed, as `alice`, with the token removed.
    Allow,
    /// Allowed, and the client's copy of this header is removed or overwritten.
    AllowStripping(&'static str),
    /// 401 with the bare challenge (RFC 6750 s3.1: no error code without credentials).
    NoCredentials,
    /// 400 `invalid_request` with this description.
    InvalidRequest(&'static str),
    /// 401 `invalid_token` with this description.
    InvalidToken(&'static str),
    /// 401 `invalid_token` with this description, in the DPoP scheme (RFC 9449 s7.1).
    InvalidDpopToken(&'static str),
    /// 403 `insufficient_scope` naming this scope.
    StepUp(&'static str),
    /// A plain 403: no challenge, so clients do not retry.
    Forbidden,
    /// This status with a JSON-RPC error of this code, no challenge.
    JsonRpc(u16, i32),
    /// This status with an OAuth-style `error` of this name, no challenge.
    Plain(u16, &'static str),
}

pub struct Case {
    pub name: String,
    pub category: Category,
    pub req: Req,
    pub expect: Expect,
    /// The path of the resource whose PRM URL a challenge names.
    pub server_path: &'static str,
}

pub fn case(category: Category, name: impl Into<String>, req: Req, expect: Expect) -> Case {
    Case {
        name: name.into(),
        category,
        req,
        expect,
        server_path: "/mcp",
    }
}

impl Case {
    /// The challenge names this server's PRM (`/b/mcp`, `/t`).
    pub fn on(mut self, server_path: &'static str) -> Self {
        self.server_path = server_path;
        self
    }
}

/// What a `Check` answered.
struct Answer {
    allowed: bool,
    status: i32,
    headers: Vec<(String, String)>,
    removed: Vec<String>,
    body: String,
    /// Dynamic metadata, debug-printed (only searched for secrets).
    metadata: String,
}

impl Answer {
    fn from(response: CheckResponse) -> Result<Self, String> {
        let allowed = response.status.as_ref().map_or(-1, |s| s.code) == 0;
        let metadata = format!("{:?}", response.dynamic_metadata);
        let pairs = |h: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]| {
            h.iter()
                .filter_map(|o| o.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect::<Vec<_>>()
        };
        match response.http_response {
            Some(HttpResponse::OkResponse(ok)) => Ok(Self {
                allowed,
                status: 200,
                headers: pairs(&ok.headers),
                removed: ok.headers_to_remove,
                body: String::new(),
                metadata,
            }),
            Some(HttpResponse::DeniedResponse(d)) => Ok(Self {
                allowed,
                status: d.status.map_or(0, |s| s.code),
                headers: pairs(&d.headers),
                removed: vec![],
                body: d.body,
                metadata,
            }),
            _ => Err("a CheckResponse without an ok or denied response".into()),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn verify(case: &Case, answer: &Answer) -> Result<(), String> {
    // Never the token, whatever the outcome.
    for secret in &case.req.secrets {
        let mut needles = vec![secret.as_str()];
        if let Some(sig) = secret.rsplit('.').next().filter(|s| s.len() >= 16) {
            needles.push(sig);
        }
        for needle in needles {
            let echoed = answer.body.contains(needle)
                || answer.metadata.contains(needle)
                || answer
                    .headers
                    .iter()
                    .any(|(k, v)| k.contains(needle) || v.contains(needle));
            if echoed {
                return Err(format!("the answer echoes a token: {}", describe(answer)));
            }
        }
    }
    let prm = format!("{PRM_BASE}{}", case.server_path);
    let www = answer.header("www-authenticate");
    let body: Option<Value> = serde_json::from_str(&answer.body).ok();
    let body_error = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(Value::as_str);
    let expect_allowed = matches!(case.expect, Expect::Allow | Expect::AllowStripping(_));
    if answer.allowed != expect_allowed {
        return Err(format!(
            "expected {:?}, got allowed={}: {}",
            case.expect,
            answer.allowed,
            describe(answer)
        ));
    }
    if !expect_allowed && answer.header("x-mcp-authz-decision-id").is_none() {
        return Err(format!(
            "a denial without its decision id: {}",
            describe(answer)
        ));
    }
    let status = |want: u16| {
        if answer.status == i32::from(want) {
            Ok(())
        } else {
            Err(format!(
                "expected status {want} ({:?}), got {}",
                case.expect,
                describe(answer)
            ))
        }
    };
    let challenge = |want: Option<String>| {
        if www.map(str::to_owned) == want {
            Ok(())
        } else {
            Err(format!(
                "expected challenge {want:?}, got {}",
                describe(answer)
            ))
        }
    };
    let error = |want: &str| {
        if body_error == Some(want) {
            Ok(())
        } else {
            Err(format!(
                "expected body error `{want}`, got {}",
                describe(answer)
            ))
        }
    };
    match case.expect {
        Expect::Allow | Expect::AllowStripping(_) => {
            status(200)?;
            if answer.header("x-mcp-authz-subject") != Some("alice") {
                return Err(format!("allowed, but not as alice: {}", describe(answer)));
            }
            if !answer.removed.iter().any(|r| r == "authorization") {
                return Err(format!(
                    "the token is passed upstream: {}",
                    describe(answer)
                ));
            }
            if let Expect::AllowStripping(name) = case.expect {
                let removed = answer.removed.iter().any(|r| r == name);
                let overwritten = answer.headers.iter().any(|(k, _)| k == name);
                if !removed && !overwritten {
                    return Err(format!(
                        "`{name}` reaches the upstream: {}",
                        describe(answer)
                    ));
                }
            }
        }
        Expect::NoCredentials => {
            status(401)?;
            challenge(Some(format!(
                "Bearer scope=\"mcp:connect\", resource_metadata=\"{prm}\""
            )))?;
            error("unauthorized")?;
        }
        Expect::InvalidRequest(description) => {
            status(400)?;
            challenge(Some(format!(
                "Bearer error=\"invalid_request\", error_description=\"{description}\", resource_metadata=\"{prm}\""
            )))?;
            error("invalid_request")?;
        }
        Expect::InvalidToken(description) => {
            status(401)?;
            challenge(Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{description}\", scope=\"mcp:connect\", resource_metadata=\"{prm}\""
            )))?;
            error("invalid_token")?;
        }
        Expect::InvalidDpopToken(description) => {
            status(401)?;
            challenge(Some(format!(
                "DPoP algs=\"ES256 ES384 PS256 RS256 EdDSA\", error=\"invalid_token\", error_description=\"{description}\", scope=\"mcp:connect\", resource_metadata=\"{prm}\""
            )))?;
            error("invalid_token")?;
        }
        Expect::StepUp(scope) => {
            status(403)?;
            challenge(Some(format!(
                "Bearer error=\"insufficient_scope\", error_description=\"additional scopes are required\", scope=\"{scope}\", resource_metadata=\"{prm}\""
            )))?;
            error("insufficient_scope")?;
        }
        Expect::Forbidden => {
            status(403)?;
            challenge(None)?;
            error("forbidden")?;
        }
        Expect::JsonRpc(want, code) => {
            status(want)?;
            challenge(None)?;
            let got = body
                .as_ref()
                .and_then(|b| b.pointer("/error/code"))
                .and_then(Value::as_i64);
            if got != Some(i64::from(code)) {
                return Err(format!(
                    "expected JSON-RPC error {code}, got {}",
                    describe(answer)
                ));
            }
        }
        Expect::Plain(want, name) => {
            status(want)?;
            challenge(None)?;
            error(name)?;
        }
    }
    Ok(())
}

fn describe(a: &Answer) -> String {
    let mut body = a.body.clone();
    body.truncate(300);
    format!(
        "allowed={} status={} www={:?} body={body}",
        a.allowed,
        a.status,
        a.header("www-authenticate")
    )
}

/// Runs every case, 16 at a time, each bounded by `timeout`; returns one line per failure.
pub async fn run_all(ctx: &Ctx, cases: Vec<Case>, timeout: Duration) -> Vec<String> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", ctx.running.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    futures_util::stream::iter(cases)
        .map(|case| {
            let channel = channel.clone();
            async move {
                let mut client = AuthorizationClient::new(channel)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20);
                let label = format!("[{}] {}", case.category.as_str(), case.name);
                let request = case.req.check_request();
                match tokio::time::timeout(timeout, client.check(request)).await {
                    Err(_) => Some(format!("{label}: no answer within {timeout:?}")),
                    Ok(Err(status)) => Some(format!("{label}: gRPC error {status:?}")),
                    Ok(Ok(response)) => Answer::from(response.into_inner())
                        .and_then(|a| verify(&case, &a))
                        .err()
                        .map(|e| format!("{label}: {e}")),
                }
            }
        })
        .buffer_unordered(16)
        .filter_map(std::future::ready)
        .collect()
        .await
}
