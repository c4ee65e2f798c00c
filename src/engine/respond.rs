//! The one place that turns how a check ended into what the client is told: statuses,
//! RFC 6750 / RFC 9728 `WWW-Authenticate` challenges, and small JSON bodies. Descriptions are
//! fixed strings; nothing from the token or the request is echoed.

use std::borrow::Cow;

use serde_json::json;

use super::{Decision, Reason, Respond};
use crate::bearer::BearerError;
use crate::challenge::{self, Challenge, ErrorCode, Scheme};
use crate::dpop::DpopError;
use crate::mcp::McpError;
use crate::policy::arguments::ArgumentError;
use crate::resource::ProtectedServer;
use crate::token::TokenError;

pub(super) fn metadata(server: &ProtectedServer, method: &str) -> Decision {
    if !matches!(method, "GET" | "HEAD") {
        return Decision::Respond(Respond {
            decision_id: String::new(),
            status: 405,
            headers: vec![(Cow::Borrowed("allow"), "GET, HEAD".into())],
            body: String::new(),
            reason: Reason::Metadata,
            policies: vec![],
        });
    }
    Decision::Respond(Respond {
        decision_id: String::new(),
        status: 200,
        headers: vec![
            (Cow::Borrowed("content-type"), "application/json".into()),
            (Cow::Borrowed("cache-control"), "max-age=300".into()),
            // Public metadata: browser-based MCP clients fetch it cross-origin.
            (Cow::Borrowed("access-control-allow-origin"), "*".into()),
        ],
        body: server.prm_json.to_string(),
        reason: Reason::Metadata,
        policies: vec![],
    })
}

pub(super) fn bearer_denial(
    server: &ProtectedServer,
    e: BearerError,
    scheme: Scheme<'_>,
) -> Decision {
    match e {
        // RFC 6750 s3.1: with no credentials, the challenge carries no error code.
        BearerError::Missing | BearerError::OtherScheme => {
            challenge(server, None, e.description(), Reason::NoToken, scheme)
        }
        BearerError::Duplicate | BearerError::NotInHeader | BearerError::Malformed => challenge(
            server,
            Some(ErrorCode::InvalidRequest),
            e.description(),
            Reason::InvalidRequest,
            scheme,
        ),
        BearerError::TooLarge => challenge(
            server,
            Some(ErrorCode::InvalidToken),
            e.description(),
            Reason::InvalidToken,
            scheme,
        ),
    }
}

/// A DPoP proof refused (RFC 9449 s7.1): 401 `invalid_dpop_proof`, or `use_dpop_nonce` with a
/// fresh nonce in `DPoP-Nonce` (s9), always in the DPoP scheme.
pub(super) fn dpop_denial(server: &ProtectedServer, e: DpopError, algs: &str) -> Decision {
    let (code, reason) = match e {
        DpopError::UseNonce(_) => (ErrorCode::UseDpopNonce, Reason::UseDpopNonce),
        _ => (ErrorCode::InvalidDpopProof, Reason::InvalidDpopProof),
    };
    let mut decision = challenge(
        server,
        Some(code),
        e.description(),
        reason,
        Scheme::Dpop { algs },
    );
    if let (DpopError::UseNonce(nonce), Decision::Respond(r)) = (e, &mut decision) {
        r.headers.push((Cow::Borrowed("dpop-nonce"), nonce));
        // Browser clients read it across origins, as they read the challenge.
        if let Some((_, expose)) = r
            .headers
            .iter_mut()
            .find(|(name, _)| name == "access-control-expose-headers")
        {
            expose.push_str(", DPoP-Nonce");
        }
    }
    decision
}

/// A token presented in a way its binding does not allow (RFC 9449 s7.1, s7.2): 401
/// `invalid_token` in the DPoP scheme, which tells the client how to present it.
pub(super) fn binding_denial(server: &ProtectedServer, description: &str, algs: &str) -> Decision {
    challenge(
        server,
        Some(ErrorCode::InvalidToken),
        description,
        Reason::InvalidToken,
        Scheme::Dpop { algs },
    )
}

/// The one place that tells a denial from "cannot decide". A bad token is the caller's
/// problem: 401 `invalid_token` with a challenge, so MCP clients re-authenticate. Missing
/// keys are ours: the service cannot tell good tokens from bad, so it fails closed with 503
/// (distinct from any policy answer, and retryable) rather than blaming the caller.
pub(super) fn token_denial(
    server: &ProtectedServer,
    e: TokenError,
    scheme: Scheme<'_>,
) -> Decision {
    match e {
        TokenError::KeysUnavailable | TokenError::IntrospectionUnavailable => {
            let mut r = respond_raw(
                503,
                Reason::Unavailable,
                json!({"error": "temporarily_unavailable", "error_description": e.description()}),
            );
            r.headers.push((Cow::Borrowed("retry-after"), "5".into()));
            Decision::Respond(r)
        }
        _ => challenge(
            server,
            Some(ErrorCode::InvalidToken),
            e.description(),
            Reason::InvalidToken,
            scheme,
        ),
    }
}

fn challenge(
    server: &ProtectedServer,
    error: Option<ErrorCode>,
    description: &str,
    reason: Reason,
    scheme: Scheme<'_>,
) -> Decision {
    // MCP 2025-11-25: a 401 SHOULD name the scopes needed to start (`scope`).
    let status = error.map_or(401, ErrorCode::status);
    let scopes: &[String] = if status == 401 {
        &server.challenge_scopes
    } else {
        &[]
    };
    let header = Challenge {
        scheme,
        resource_metadata: Some(&server.prm_url),
        scopes,
        error,
        error_description: error.map(|_| description),
    }
    .render();
    let body = match error {
        Some(code) => json!({"error": code.as_str(), "error_description": description}),
        None => json!({"error": "unauthorized", "error_description": description}),
    };
    respond(status, reason, Some(header), body)
}

/// 400: a path with dot segments or encoded slashes, which another hop could map to a server or
/// tenant other than the one it would be evaluated as (see `resource::is_ambiguous_path`).
pub(super) fn ambiguous_path() -> Decision {
    respond(
        400,
        Reason::InvalidRequest,
        None,
        json!({"error": "invalid_request", "error_description": "the request path has dot segments or encoded slashes"}),
    )
}

/// 404: the request is for no server this service protects.
pub(super) fn no_matching_server() -> Decision {
    respond(
        404,
        Reason::NoMatchingServer,
        None,
        json!({"error": "not_found", "error_description": "no protected MCP server matches this request"}),
    )
}

fn respond(
    status: u16,
    reason: Reason,
    www_authenticate: Option<String>,
    body: serde_json::Value,
) -> Decision {
    let mut r = respond_raw(status, reason, body);
    if let Some(h) = www_authenticate {
        r.headers.push((Cow::Borrowed("www-authenticate"), h));
    }
    Decision::Respond(r)
}

fn respond_raw(status: u16, reason: Reason, body: serde_json::Value) -> Respond {
    Respond {
        decision_id: String::new(),
        status,
        headers: vec![
            (Cow::Borrowed("content-type"), "application/json".into()),
            (Cow::Borrowed("cache-control"), "no-store".into()),
            // Browser-based MCP clients need to read the challenge across origins.
            (
                Cow::Borrowed("access-control-expose-headers"),
                "WWW-Authenticate".into(),
            ),
        ],
        body: body.to_string(),
        reason,
        policies: vec![],
    }
}

/// 403 with `insufficient_scope`: clients request a token with `scope` and retry once.
pub(super) fn step_up(server: &ProtectedServer, scopes: &[String], scheme: Scheme<'_>) -> Respond {
    let description = challenge::INSUFFICIENT_SCOPE_DESCRIPTION;
    let header = challenge::insufficient_scope(&server.prm_url, scopes, scheme);
    let mut r = respond_raw(
        403,
        Reason::InsufficientScope,
        json!({"error": "insufficient_scope", "error_description": description, "scope": scopes.join(" ")}),
    );
    r.headers.push((Cow::Borrowed("www-authenticate"), header));
    r
}

/// A plain 403: no challenge, so MCP clients treat it as final (no scope would help).
pub(super) fn forbidden(reason: Reason, description: &str, policies: Vec<String>) -> Respond {
    let mut r = respond_raw(
        403,
        reason,
        json!({"error": "forbidden", "error_description": description}),
    );
    r.policies = policies;
    r
}

/// A body that is not an acceptable MCP message. 400s carry a JSON-RPC error object, which is
/// what MCP clients parse; -32600 is "Invalid Request" (JSON-RPC 2.0 s5.1).
/// A call whose arguments do not fit the tool's declared types: 400 with JSON-RPC -32602
/// "Invalid params" (JSON-RPC 2.0 s5.1). The message names declared fields only.
pub(super) fn invalid_params(e: &ArgumentError) -> Respond {
    let body =
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32602, "message": e.to_string()}});
    respond_raw(400, Reason::BadMcpRequest, body)
}

pub(super) fn mcp_denial(e: McpError) -> Decision {
    let status = e.status();
    let reason = match status {
        413 => Reason::PayloadTooLarge,
        415 => Reason::UnsupportedMediaType,
        _ => Reason::BadMcpRequest,
    };
    let message = e.to_string();
    // A code for every 400 (-32020 for a routing header that disagrees with the body).
    let body = match e.jsonrpc_code() {
        Some(code) => {
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}})
        }
        None => json!({"error": e.error_name(), "error_description": message}),
    };
    Decision::Respond(respond_raw(status, reason, body))
}

/// 503: the allowed request's signed upstream identity could not be minted. Fails closed: the
/// upstream expects one, so the request is not forwarded without it.
pub(super) fn identity_unavailable() -> Respond {
    let mut r = respond_raw(
        503,
        Reason::Unavailable,
        json!({"error": "temporarily_unavailable", "error_description": "the upstream identity could not be issued"}),
    );
    r.headers.push((Cow::Borrowed("retry-after"), "5".into()));
    r
}
