//! What the load generator sends: signing keys, tokens (one repeated token and pools of distinct
//! ones, minted before any measurement), and Envoy-shaped `CheckRequest`s encoded once, so a
//! measured request costs the generator a copy, not a protobuf encode.

use std::sync::Arc;

use bytes::Bytes;
use mcp_authz::grpc::{ClientRequest, check_request};
use mcp_authz::testutil::{TestKey, claims, now};
use prost::Message;
use serde_json::{Value, json};

/// The protected MCP server, as configured for mcp-authz and Envoy's `jwt_authn`.
pub const RESOURCE: &str = "https://mcp.example.com/mcp";
pub const HOST: &str = "mcp.example.com";
pub const PATH: &str = "/mcp";
pub const SCOPE: &str = "mcp:connect mcp:tools:weather";
pub const TENANT: &str = "acme";
/// The `tools/list` of the list-filter contender: its response goes through ext_proc.
pub const LIST: &str = r#"{"jsonrpc":"2.0","id":6,"method":"tools/list"}"#;

/// A `tools/call` the shipped policies allow with `mcp:tools:weather`.
pub const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris","days":3}}}"#;
/// Calls every authorizing contender that reads the MCP body must deny (403) to the token of
/// the measured requests: a tool outside the weather set (its scope is missing), and
/// `get_forecast` past the 16 days its argument rule allows.
pub const OTHER_TOOL_CALL: &str = r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/shared/a.txt"}}}"#;
pub const LONG_FORECAST_CALL: &str = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris","days":30}}}"#;
/// The scope of a caller that may connect but call no tool set.
pub const NO_TOOL_SCOPE: &str = "mcp:connect";
pub const ACCEPT: &str = "application/json, text/event-stream";
/// Issuer name of the HMAC issuer of the memory phase (signing must be cheap there).
pub const HS_ISSUER: &str = "https://hs256.bench.invalid";
/// Tokens outlive the longest run: a full run takes minutes, `claims()` gives five.
const LIFETIME_SECS: i64 = 4 * 3600;

/// Valid claims for `iss`, distinct per `n` (`sub` and `jti`), for `tenant`.
pub fn bench_claims(iss: &str, n: usize, tenant: &str) -> Value {
    scoped_claims(iss, n, tenant, SCOPE)
}

/// [`bench_claims`] with another `scope`.
pub fn scoped_claims(iss: &str, n: usize, tenant: &str, scope: &str) -> Value {
    let mut c = claims(iss, RESOURCE);
    let now = now();
    c["sub"] = json!(format!("user-{n}"));
    c["jti"] = json!(format!("bench-{n}-{now}"));
    c["scope"] = json!(scope);
    c["tenant"] = json!(tenant);
    c["exp"] = json!(now + LIFETIME_SECS);
    c
}

/// `count` distinct tokens signed by `key`, minted on every available core (RS256 takes about
/// a millisecond each; this runs before the generator pins itself to one core).
pub fn mint_pool(key: &TestKey, iss: &str, count: usize) -> Vec<String> {
    mint_many(key, count, |n| bench_claims(iss, n, TENANT))
}

/// `count` tokens signed by `key` with the claims `claims(n)`, on every available core.
pub fn mint_many(
    key: &TestKey,
    count: usize,
    claims: impl Fn(usize) -> Value + Sync,
) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = count.div_ceil(threads).max(1);
    let claims = &claims;
    let mut out = Vec::with_capacity(count);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..count)
            .step_by(chunk)
            .map(|start| {
                let end = (start + chunk).min(count);
                s.spawn(move || {
                    (start..end)
                        .map(|n| key.token(&claims(n)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            // A minting thread cannot fail short of a panic in the signer; keep what we got.
            if let Ok(tokens) = h.join() {
                out.extend(tokens);
            }
        }
    });
    out
}

/// The `CheckRequest` Envoy's ext_authz filter sends for the `tools/call` POST, encoded and
/// framed for gRPC.
pub fn encoded_check(token: Option<&str>) -> Result<Bytes, String> {
    encoded("POST", CALL, token)
}

/// The `CheckRequest` Envoy sends for an MCP request to the protected server, encoded and
/// framed for gRPC: a POST of `body` (JSON-RPC), or a GET (the SSE stream; `body` unused).
pub fn encoded(method: &str, body: &str, token: Option<&str>) -> Result<Bytes, String> {
    let post = method == "POST";
    let headers = if post {
        vec![
            "content-type: application/json".into(),
            format!("accept: {ACCEPT}"),
        ]
    } else {
        vec!["accept: text/event-stream".into()]
    };
    let request = check_request(ClientRequest {
        method: method.into(),
        path: PATH.into(),
        host: HOST.into(),
        bearer: token.map(str::to_owned),
        headers,
        body: if post {
            body.as_bytes().to_vec()
        } else {
            vec![]
        },
    })
    .map_err(|e| e.to_string())?;
    Ok(crate::grpc::frame(&request.encode_to_vec()))
}

/// Encodes a pool of tokens as check requests.
pub fn encoded_pool(tokens: &[String]) -> Result<Arc<Vec<Bytes>>, String> {
    tokens
        .iter()
        .map(|t| encoded_check(Some(t)))
        .collect::<Result<Vec<_>, _>>()
        .map(Arc::new)
}

/// Everything a run signs with and sends, made once per run.
pub struct Material {
    pub rsa: TestKey,
    pub ec: TestKey,
    /// The one token of the "repeated token" and Envoy contenders (RS256, the IdP default).
    pub token: String,
    /// Same claims but tenant `globex`: policies (and the RBAC filter) must say 403.
    pub other_tenant: String,
    /// Same tenant, scope `mcp:connect` only: no tool may be called (403).
    pub no_tool_scope: String,
    pub repeated: Arc<Vec<Bytes>>,
    pub no_token: Bytes,
    pub other_tenant_check: Bytes,
    pub no_tool_scope_check: Bytes,
    /// [`OTHER_TOOL_CALL`] and [`LONG_FORECAST_CALL`] with the measured token.
    pub other_tool_check: Bytes,
    pub long_forecast_check: Bytes,
    pub rs256_pool: Arc<Vec<Bytes>>,
    pub es256_pool: Arc<Vec<Bytes>>,
    /// The secret of the memory phase's HS256 issuer.
    pub hmac_secret: String,
}

impl Material {
    /// Signing keys, made before the fake IdP that publishes them starts.
    pub fn keys() -> (TestKey, TestKey) {
        (TestKey::rsa("bench-rsa"), TestKey::ec("bench-ec"))
    }

    /// Mints everything for `iss`: `rs_pool` and `es_pool` distinct tokens (zero when the
    /// contenders that use them are not selected).
    pub fn mint(
        (rsa, ec): (TestKey, TestKey),
        iss: &str,
        rs_pool: usize,
        es_pool: usize,
    ) -> Result<Self, String> {
        let token = rsa.token(&bench_claims(iss, 0, TENANT));
        let other_tenant = rsa.token(&bench_claims(iss, 1, "globex"));
        let no_tool_scope = rsa.token(&scoped_claims(iss, 2, TENANT, NO_TOOL_SCOPE));
        let rs = mint_pool(&rsa, iss, rs_pool);
        let es = mint_pool(&ec, iss, es_pool);
        Ok(Self {
            repeated: Arc::new(vec![encoded_check(Some(&token))?]),
            no_token: encoded_check(None)?,
            other_tenant_check: encoded_check(Some(&other_tenant))?,
            no_tool_scope_check: encoded_check(Some(&no_tool_scope))?,
            other_tool_check: encoded("POST", OTHER_TOOL_CALL, Some(&token))?,
            long_forecast_check: encoded("POST", LONG_FORECAST_CALL, Some(&token))?,
            rs256_pool: encoded_pool(&rs)?,
            es256_pool: encoded_pool(&es)?,
            hmac_secret: format!("bench-hmac-secret-{:032x}", rand::random::<u128>()),
            rsa,
            ec,
            token,
            other_tenant,
            no_tool_scope,
        })
    }

    /// The JWKS mcp-authz fetches from the fake IdP, inline for Envoy's `jwt_authn`.
    pub fn jwks(&self) -> String {
        json!({"keys": [self.rsa.public_jwk(), self.ec.public_jwk()]}).to_string()
    }
}

/// Mints HS256 tokens on demand for the memory phase: a few microseconds each.
pub struct HmacMinter {
    key: TestKey,
}

impl HmacMinter {
    pub fn new(secret: &str) -> Self {
        Self {
            key: TestKey::hmac(
                "bench-hs",
                secret.as_bytes(),
                jsonwebtoken::Algorithm::HS256,
            ),
        }
    }

    pub fn check(&self, n: usize) -> Result<Bytes, String> {
        encoded_check(Some(&self.key.token(&bench_claims(HS_ISSUER, n, TENANT))))
    }
}
