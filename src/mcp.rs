//! Reading the MCP request (Streamable HTTP transport) out of what Envoy forwards: the HTTP
//! method, headers and body, classified into JSON-RPC messages and the targets policy decides on.
//!
//! The body is parsed once, into a `serde_json::Value`, by a strict reader that refuses
//! duplicate object keys at any depth: serde_json keeps the last of two equal keys while other
//! parsers keep the first, and authorizing one `params.name` while the server runs another is
//! exactly the confusion this service exists to prevent.
//!
//! [`parse`] runs the checks in order: the envelope (`envelope`: method, encoding, media type),
//! the strict JSON reader (`json`), message classification (`message`), and last the routing
//! headers, which need the parsed body.

mod envelope;
mod message;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use serde_json::{Map, Value};

use self::envelope::{check_content_encoding, check_content_type, check_routing_headers};
use self::message::{read_batch, read_message};

/// Every client-to-server method and notification this module understands (MCP Streamable
/// HTTP, protocol versions 2025-03-26 through 2026-07-28). For these, a message's action is the
/// method name itself.
pub const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "logging/setLevel",
    "completion/complete",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "tools/list",
    "tools/call",
    "tasks/get",
    "tasks/result",
    "tasks/cancel",
    "tasks/list",
    // 2026-07-28 (stateless): capability discovery and the subscription stream, as sent by the
    // official SDKs (Python `mcp` 2.x); session-level like initialize.
    "server/discover",
    "subscriptions/listen",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "notifications/tasks/status",
];

/// The action of a JSON-RPC response the client posts (answering a server-initiated request).
pub const RESPONSE_ACTION: &str = "response";
/// The action of [`McpRequest::OpenStream`].
pub const OPEN_STREAM_ACTION: &str = "GET";
/// The action of [`McpRequest::EndSession`].
pub const END_SESSION_ACTION: &str = "DELETE";

/// Most messages in one batch array. Batches exist only for 2025-03-26 clients, which send a
/// handful at a time; each element is authorized separately, so the bound caps that work.
pub const MAX_BATCH: usize = 64;
/// Deepest nesting of arrays and objects in a body. Enforced by this module, not left to
/// serde_json's own limit (128, and gone if any crate in the build enables `unbounded_depth`),
/// so a body of `[[[[...` is always a 400 and never a stack overflow.
pub const MAX_DEPTH: usize = 64;
/// MCP: tool names SHOULD be 1-128 characters (of `[A-Za-z0-9_.-]`; other printable characters
/// are tolerated, since servers in the wild use them).
pub const MAX_TOOL_NAME_CHARS: usize = 128;
pub const MAX_PROMPT_NAME_CHARS: usize = 256;
pub const MAX_URI_CHARS: usize = 2048;

/// What Envoy forwards about the HTTP request, borrowed from the `CheckRequest`.
#[derive(Debug, Clone, Copy)]
pub struct HttpParts<'a> {
    /// As sent: HTTP methods are case-sensitive (RFC 9110 s9.1), so `post` is not `POST`.
    pub method: &'a str,
    /// Envoy's header map: names lowercased, repeated headers joined with `,`.
    pub headers: &'a HashMap<String, String>,
    pub body: &'a [u8],
    /// The proxy's body buffer limit (`limits.max_body_bytes`): a body this long may have been
    /// cut there.
    pub max_body_bytes: usize,
}

/// One HTTP request to the MCP endpoint, as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpRequest {
    /// POST carrying one JSON-RPC message (`batch == false`) or a batch array (`batch == true`,
    /// 2025-03-26 clients); every element must be authorized.
    Messages { batch: bool, messages: Vec<Message> },
    /// GET: opens the server-to-client SSE stream. Action [`OPEN_STREAM_ACTION`].
    OpenStream,
    /// DELETE: ends the session. Action [`END_SESSION_ACTION`].
    EndSession,
}

/// One JSON-RPC message posted by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: MessageKind,
    /// The JSON-RPC method as sent (`None` for responses).
    pub method: Option<String>,
    /// The policy action id: the method name for known methods (see [`KNOWN_METHODS`]),
    /// [`RESPONSE_ACTION`] for a JSON-RPC response posted by the client, `None` for an unknown
    /// method (the caller denies it).
    pub action: Option<&'static str>,
    pub target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// `method` and `id`: the server answers it.
    Request,
    /// `method` without `id`.
    Notification,
    /// `id` and `result` or `error`: the client answering a server-initiated request.
    Response,
}

/// What a message acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Session-level methods act on the server itself.
    Server,
    /// tools/call: `params.name` and `params.arguments` (absent -> empty map).
    Tool {
        name: String,
        arguments: Map<String, Value>,
    },
    /// prompts/get (`params.name`), and completion/complete with
    /// `params.ref {type:"ref/prompt", name}`.
    Prompt { name: String },
    /// resources/read|subscribe|unsubscribe (`params.uri`), and completion/complete with
    /// `params.ref {type:"ref/resource", uri}`.
    Resource { uri: String },
    /// tasks/get|result|cancel (`params.taskId`).
    Task { id: String },
}

/// Why a request cannot be read. Every one is a denial: [`McpError::status`] is its HTTP
/// status, and the message (`Display`) is fixed text that never echoes request content, which
/// the `&'static str` descriptions guarantee.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpError {
    /// The HTTP method is not one MCP's Streamable HTTP transport uses.
    #[error("the MCP endpoint accepts only POST, GET and DELETE")]
    MethodNotAllowed,
    /// Envoy forwarded only a prefix of the body.
    #[error("the request body is larger than the authorization service inspects")]
    Truncated,
    /// A `content-encoding` other than `identity`.
    #[error("compressed request bodies are not accepted")]
    UnsupportedEncoding,
    /// A `content-type` other than `application/json` in UTF-8.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// A GET or DELETE with a body.
    #[error("GET and DELETE requests must not have a body")]
    UnexpectedBody,
    /// A POST without a body.
    #[error("a POST must carry a JSON-RPC message")]
    EmptyBody,
    #[error("the request body is not valid UTF-8")]
    InvalidUtf8,
    #[error("the request body is not valid JSON")]
    InvalidJson,
    /// An object, at any depth, names one key twice.
    #[error("the request body repeats a key in a JSON object")]
    DuplicateKey,
    /// Arrays and objects nest deeper than [`MAX_DEPTH`].
    #[error("the request body nests JSON too deeply")]
    TooDeep,
    #[error("a batch must not be empty")]
    EmptyBatch,
    /// More than [`MAX_BATCH`] messages.
    #[error("a batch has too many messages")]
    BatchTooLarge,
    /// The body, a batch element or a message is not a JSON-RPC 2.0 message as MCP sends it:
    /// the description says which part.
    #[error("{0}")]
    NotJsonRpc(&'static str),
    /// A known method's `params` do not name a valid target: the description says which.
    #[error("{0}")]
    InvalidParams(&'static str),
    /// `tools/call` arguments whose keys are equal ignoring case.
    #[error("tools/call `params.arguments` has keys that differ only in case")]
    CaseFoldedArguments,
    /// `mcp-method`, `mcp-name` or `mcp-param-*` on a batch.
    #[error("mcp-method, mcp-name and mcp-param headers are not allowed with a batch")]
    RoutingHeadersOnBatch,
    /// An `mcp-name` in the `=?base64?...?=` form that does not decode to UTF-8.
    #[error("an mcp-name header has invalid base64 encoding")]
    InvalidHeaderEncoding,
    /// `mcp-method` or `mcp-name` names something other than the body does.
    #[error("an mcp-method or mcp-name header disagrees with the body")]
    HeaderMismatch,
}

// === impl McpError ===

impl From<crate::strict_json::StrictJsonError> for McpError {
    fn from(e: crate::strict_json::StrictJsonError) -> Self {
        use crate::strict_json::StrictJsonError as E;
        match e {
            E::Invalid => McpError::InvalidJson,
            E::DuplicateKey => McpError::DuplicateKey,
            E::TooDeep => McpError::TooDeep,
        }
    }
}

impl McpError {
    /// The HTTP status to answer with: 400, 405, 413 or 415.
    pub fn status(&self) -> u16 {
        match self {
            McpError::MethodNotAllowed => 405,
            McpError::Truncated => 413,
            McpError::UnsupportedEncoding | McpError::UnsupportedMediaType => 415,
            McpError::UnexpectedBody
            | McpError::EmptyBody
            | McpError::InvalidUtf8
            | McpError::InvalidJson
            | McpError::DuplicateKey
            | McpError::TooDeep
            | McpError::EmptyBatch
            | McpError::BatchTooLarge
            | McpError::NotJsonRpc(_)
            | McpError::InvalidParams(_)
            | McpError::CaseFoldedArguments
            | McpError::RoutingHeadersOnBatch
            | McpError::InvalidHeaderEncoding
            | McpError::HeaderMismatch => 400,
        }
    }

    /// The JSON-RPC error code a 400 answers with, since MCP clients parse a JSON-RPC error
    /// object; `None` for the other statuses, which answer with an OAuth-style error body.
    pub fn jsonrpc_code(&self) -> Option<i32> {
        match self {
            // MCP 2026-07-28 (SEP-2243): a routing header that disagrees with the body.
            McpError::HeaderMismatch => Some(-32020),
            // "Invalid Request" (JSON-RPC 2.0 s5.1).
            _ if self.status() == 400 => Some(-32600),
            _ => None,
        }
    }

    /// The `error` of the OAuth-style body that statuses other than 400 answer with. It names
    /// the status, so it is read from [`McpError::status`] rather than kept in step with it.
    pub fn error_name(&self) -> &'static str {
        match self.status() {
            405 => "method_not_allowed",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            _ => "invalid_request",
        }
    }
}

// === impl Target ===

impl Target {
    /// The tool or prompt name, resource URI or task id; `None` for [`Target::Server`].
    pub fn name(&self) -> Option<&str> {
        match self {
            Target::Server => None,
            Target::Tool { name, .. } | Target::Prompt { name } => Some(name),
            Target::Resource { uri } => Some(uri),
            Target::Task { id } => Some(id),
        }
    }
}

/// Reads the MCP request in `req`.
///
/// Checks run cheapest first, and everything about the envelope (method, truncation, encoding,
/// media type) before the body is parsed, so a request refused on its headers costs no parsing.
pub fn parse(req: &HttpParts<'_>) -> Result<McpRequest, McpError> {
    let bodiless = match req.method {
        "POST" => None,
        "GET" => Some(McpRequest::OpenStream),
        "DELETE" => Some(McpRequest::EndSession),
        _ => {
            return Err(McpError::MethodNotAllowed);
        }
    };
    // Envoy sets this when `with_request_body.allow_partial_message` cut the body short: a
    // prefix of a JSON document proves nothing about the whole, so it is refused unread.
    if req
        .headers
        .get("x-envoy-auth-partial-body")
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("true")))
    {
        return Err(McpError::Truncated);
    }
    // Envoy 1.40 does not always say so: with `Expect: 100-continue` it forwards the first
    // `max_request_bytes` bytes with `x-envoy-auth-partial-body: false`. A body exactly as long
    // as the buffer, or shorter than the `content-length` the client sent, is one that was cut.
    // (Chunked and HTTP/2 bodies carry no `content-length`; the length test covers them.)
    let declared = req
        .headers
        .get("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let received = u64::try_from(req.body.len()).unwrap_or(u64::MAX);
    if req.body.len() >= req.max_body_bytes || declared.is_some_and(|d| d > received) {
        return Err(McpError::Truncated);
    }
    if let Some(request) = bodiless {
        // MCP: GET and DELETE carry no body; one here is either a confused client or a message
        // smuggled past the POST checks.
        if !req.body.is_empty() {
            return Err(McpError::UnexpectedBody);
        }
        // The routing headers name the message of a POST (MCP 2026-07-28); on a GET or DELETE
        // there is none, so a proxy routing on them would route a request mcp-authz never
        // evaluated as that method (a "tools/call" GET allowed as a plain stream open).
        if req
            .headers
            .keys()
            .any(|k| k == "mcp-method" || k == "mcp-name" || k.starts_with("mcp-param-"))
        {
            return Err(McpError::HeaderMismatch);
        }
        return Ok(request);
    }

    check_content_encoding(req.headers)?;
    check_content_type(req.headers)?;
    if req.body.is_empty() {
        return Err(McpError::EmptyBody);
    }
    // JSON text exchanged between systems MUST be UTF-8 (RFC 8259 s8.1). Checked here rather
    // than left to the JSON reader so the whole body is covered, not only string contents.
    // A byte order mark is refused too (by the JSON reader): RFC 8259 lets a parser ignore it,
    // and a parser that does not is one the server might be.
    let text = std::str::from_utf8(req.body).map_err(|_| McpError::InvalidUtf8)?;

    let (batch, messages) =
        match crate::strict_json::parse(text, MAX_DEPTH).map_err(McpError::from)? {
            Value::Object(message) => (false, vec![read_message(message)?]),
            Value::Array(items) => (true, read_batch(items)?),
            _ => {
                return Err(McpError::NotJsonRpc(
                    "the request body must be a JSON-RPC message or a batch array",
                ));
            }
        };
    check_routing_headers(req.headers, batch, &messages)?;
    Ok(McpRequest::Messages { batch, messages })
}
