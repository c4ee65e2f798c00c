//! Reading the MCP request (Streamable HTTP transport) out of what Envoy forwards: the HTTP
//! method, headers and body, classified into JSON-RPC messages and the targets policy decides on.
//!
//! The body is parsed once, into a `serde_json::Value`, by a strict reader that refuses
//! duplicate object keys at any depth: serde_json keeps the last of two equal keys while other
//! parsers keep the first, and authorizing one `params.name` while the server runs another is
//! exactly the confusion this service exists to prevent.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, PAD_INDIFFERENT};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

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

/// Why a request cannot be read. Every one is a denial with `status`; `message` is a fixed
/// description that never echoes request content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct McpError {
    /// The HTTP status to answer with: 400, 405, 413 or 415.
    pub status: u16,
    pub message: &'static str,
}

/// The message of every `mcp-method` / `mcp-name` disagreement, so callers and tests can tell
/// it apart from a malformed body.
pub const HEADER_MISMATCH: &str = "an mcp-method or mcp-name header disagrees with the body";

// === impl McpError ===

impl McpError {
    const fn bad_request(message: &'static str) -> Self {
        McpError {
            status: 400,
            message,
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
            return Err(McpError {
                status: 405,
                message: "the MCP endpoint accepts only POST, GET and DELETE",
            });
        }
    };
    // Envoy sets this when `with_request_body.allow_partial_message` cut the body short: a
    // prefix of a JSON document proves nothing about the whole, so it is refused unread.
    if req
        .headers
        .get("x-envoy-auth-partial-body")
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("true")))
    {
        return Err(McpError {
            status: 413,
            message: "the request body is larger than the authorization service inspects",
        });
    }
    if let Some(request) = bodiless {
        // MCP: GET and DELETE carry no body; one here is either a confused client or a message
        // smuggled past the POST checks.
        if !req.body.is_empty() {
            return Err(McpError::bad_request(
                "GET and DELETE requests must not have a body",
            ));
        }
        // Headers such as mcp-method mean nothing without a body to compare them with.
        return Ok(request);
    }

    check_content_encoding(req.headers)?;
    check_content_type(req.headers)?;
    if req.body.is_empty() {
        return Err(McpError::bad_request(
            "a POST must carry a JSON-RPC message",
        ));
    }
    // JSON text exchanged between systems MUST be UTF-8 (RFC 8259 s8.1). Checked here rather
    // than left to the JSON reader so the whole body is covered, not only string contents.
    // A byte order mark is refused too (by the JSON reader): RFC 8259 lets a parser ignore it,
    // and a parser that does not is one the server might be.
    let text = std::str::from_utf8(req.body)
        .map_err(|_| McpError::bad_request("the request body is not valid UTF-8"))?;

    let (batch, messages) = match parse_json(text)? {
        Value::Object(message) => (false, vec![read_message(message)?]),
        Value::Array(items) => (true, read_batch(items)?),
        _ => {
            return Err(McpError::bad_request(
                "the request body must be a JSON-RPC message or a batch array",
            ));
        }
    };
    check_routing_headers(req.headers, batch, &messages)?;
    Ok(McpRequest::Messages { batch, messages })
}

/// Envoy forwards the body as received: a compressed body is bytes this module cannot read,
/// and decompressing here would be a second copy and a second place to get it wrong.
fn check_content_encoding(headers: &HashMap<String, String>) -> Result<(), McpError> {
    let Some(value) = headers.get("content-encoding") else {
        return Ok(());
    };
    // Content-Encoding is a list (RFC 9110 s8.4); empty elements are legal (s5.6.1) and every
    // real one must be the no-op `identity`.
    let identity = value
        .split(',')
        .map(str::trim)
        .filter(|coding| !coding.is_empty())
        .all(|coding| coding.eq_ignore_ascii_case("identity"));
    if identity {
        Ok(())
    } else {
        Err(McpError {
            status: 415,
            message: "compressed request bodies are not accepted",
        })
    }
}

/// MCP: the client POSTs `application/json`. The media type is case-insensitive (RFC 9110
/// s8.3.1) and may carry parameters; a `charset` other than UTF-8 is refused, since the server
/// would decode the bytes differently from this module.
fn check_content_type(headers: &HashMap<String, String>) -> Result<(), McpError> {
    const UNSUPPORTED: McpError = McpError {
        status: 415,
        message: "the request body must be application/json",
    };
    let value = headers.get("content-type").ok_or(UNSUPPORTED)?;
    let mut parts = value.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    // Two Content-Type headers arrive joined with `,` and fail here: no single type is known.
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(UNSUPPORTED);
    }
    for parameter in parts.map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = parameter.split_once('=').ok_or(UNSUPPORTED)?;
        if name.trim().eq_ignore_ascii_case("charset") {
            let charset = value.trim().trim_matches('"');
            if !(charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")) {
                return Err(UNSUPPORTED);
            }
        }
    }
    Ok(())
}

fn read_batch(items: Vec<Value>) -> Result<Vec<Message>, McpError> {
    if items.is_empty() {
        // JSON-RPC 2.0 s6: an empty array is an invalid request.
        return Err(McpError::bad_request("a batch must not be empty"));
    }
    if items.len() > MAX_BATCH {
        return Err(McpError::bad_request("a batch has too many messages"));
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(message) => read_message(message),
            _ => Err(McpError::bad_request(
                "every batch element must be a JSON-RPC message object",
            )),
        })
        .collect()
}

/// How a known method must be sent and what it targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Request(TargetRule),
    Notification,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetRule {
    Server,
    Tool,
    Prompt,
    Resource,
    Completion,
    Task,
}

/// The rule for each entry of [`KNOWN_METHODS`] (a test keeps the two in step).
fn rule(method: &str) -> Option<Rule> {
    use TargetRule::*;
    Some(match method {
        "initialize"
        | "ping"
        | "logging/setLevel"
        | "prompts/list"
        | "resources/list"
        | "resources/templates/list"
        | "tools/list"
        | "tasks/list"
        | "server/discover"
        | "subscriptions/listen" => Rule::Request(Server),
        "tools/call" => Rule::Request(Tool),
        "prompts/get" => Rule::Request(Prompt),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            Rule::Request(Resource)
        }
        "completion/complete" => Rule::Request(Completion),
        "tasks/get" | "tasks/result" | "tasks/cancel" => Rule::Request(Task),
        "notifications/initialized"
        | "notifications/cancelled"
        | "notifications/progress"
        | "notifications/roots/list_changed"
        | "notifications/tasks/status" => Rule::Notification,
        _ => return None,
    })
}

/// Argument keys that differ only in case (`path` / `Path`, or `ſ`-style Unicode folds) are
/// one key to servers that bind arguments case-insensitively (Go's `encoding/json`, .NET web
/// defaults): a policy guarding `path` would see one value while the tool reads the other.
fn has_case_folded_duplicates(arguments: &Map<String, Value>) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(arguments.len());
    arguments
        .keys()
        .any(|k| !seen.insert(k.to_uppercase().to_lowercase()))
}

/// Classifies one JSON-RPC 2.0 message object. Takes it by value so `params.arguments` moves
/// into the target instead of being copied.
fn read_message(mut message: Map<String, Value>) -> Result<Message, McpError> {
    if !matches!(message.get("jsonrpc"), Some(Value::String(v)) if v == "2.0") {
        return Err(McpError::bad_request("`jsonrpc` must be \"2.0\""));
    }
    let has_id = match message.get("id") {
        None => false,
        Some(id) if is_valid_id(id) => true,
        Some(_) => {
            return Err(McpError::bad_request("`id` must be a string or an integer"));
        }
    };
    // MCP never uses by-position (array) params, so anything but an object is malformed.
    let params = match message.remove("params") {
        None => None,
        Some(Value::Object(params)) => Some(params),
        Some(_) => return Err(McpError::bad_request("`params` must be an object")),
    };
    let has_result = message.contains_key("result");
    let has_error = message.contains_key("error");

    let method = match message.remove("method") {
        Some(Value::String(method)) => method,
        Some(_) => return Err(McpError::bad_request("`method` must be a string")),
        None => {
            // JSON-RPC 2.0 s5: a response has an id and exactly one of result and error.
            if !has_id {
                return Err(McpError::bad_request(
                    "a message needs a `method` or, for a response, an `id`",
                ));
            }
            if has_result == has_error {
                return Err(McpError::bad_request(
                    "a response needs exactly one of `result` and `error`",
                ));
            }
            if has_error && !matches!(message.get("error"), Some(Value::Object(_))) {
                return Err(McpError::bad_request(
                    "a response `error` must be an object",
                ));
            }
            return Ok(Message {
                kind: MessageKind::Response,
                method: None,
                action: Some(RESPONSE_ACTION),
                target: Target::Server,
            });
        }
    };
    // A message that is both a call and an answer has no single meaning; which half a server
    // acts on is up to its parser, so it is refused rather than guessed.
    if has_result || has_error {
        return Err(McpError::bad_request(
            "a request or notification must not carry `result` or `error`",
        ));
    }
    let kind = if has_id {
        MessageKind::Request
    } else {
        MessageKind::Notification
    };
    // The action is the `&'static str` from the table, never a copy of the request's string.
    let action = KNOWN_METHODS.iter().copied().find(|known| *known == method);
    let target = match action.and_then(rule) {
        // Unknown methods are classified but not interpreted: the caller denies them.
        None => Target::Server,
        Some(Rule::Notification) if kind == MessageKind::Notification => Target::Server,
        Some(Rule::Request(target)) if kind == MessageKind::Request => read_target(target, params)?,
        // A known request sent without an id (or a notification with one) is outside MCP. A
        // server may still act on it, so the shapes must match for policy to mean anything.
        Some(Rule::Notification) => {
            return Err(McpError::bad_request(
                "a notification must not have an `id`",
            ));
        }
        Some(Rule::Request(_)) => {
            return Err(McpError::bad_request("a request must have an `id`"));
        }
    };
    Ok(Message {
        kind,
        method: Some(method),
        action,
        target,
    })
}

/// MCP: a request id is a string or an integer, and unlike base JSON-RPC never null.
fn is_valid_id(id: &Value) -> bool {
    match id {
        Value::String(_) => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

fn read_target(rule: TargetRule, params: Option<Map<String, Value>>) -> Result<Target, McpError> {
    if rule == TargetRule::Server {
        return Ok(Target::Server);
    }
    let Some(mut params) = params else {
        return Err(McpError::bad_request("this method requires `params`"));
    };
    match rule {
        TargetRule::Server => Ok(Target::Server),
        TargetRule::Tool => {
            let name = take_string(&mut params, "name")
                .filter(|name| is_valid_name(name, MAX_TOOL_NAME_CHARS))
                .ok_or(McpError::bad_request(
                    "tools/call needs `params.name`: a tool name of 1-128 printable characters",
                ))?;
            let arguments = match params.remove("arguments") {
                None => Map::new(),
                Some(Value::Object(arguments)) => arguments,
                Some(_) => {
                    return Err(McpError::bad_request(
                        "tools/call `params.arguments` must be an object",
                    ));
                }
            };
            if has_case_folded_duplicates(&arguments) {
                return Err(McpError::bad_request(
                    "tools/call `params.arguments` has keys that differ only in case",
                ));
            }
            Ok(Target::Tool { name, arguments })
        }
        TargetRule::Prompt => take_prompt_name(&mut params).map(|name| Target::Prompt { name }),
        TargetRule::Resource => take_uri(&mut params).map(|uri| Target::Resource { uri }),
        TargetRule::Completion => {
            let Some(Value::Object(mut reference)) = params.remove("ref") else {
                return Err(McpError::bad_request(
                    "completion/complete needs `params.ref` to be an object",
                ));
            };
            match reference.get("type").and_then(Value::as_str) {
                Some("ref/prompt") => {
                    take_prompt_name(&mut reference).map(|name| Target::Prompt { name })
                }
                Some("ref/resource") => {
                    take_uri(&mut reference).map(|uri| Target::Resource { uri })
                }
                _ => Err(McpError::bad_request(
                    "completion/complete `params.ref.type` must be ref/prompt or ref/resource",
                )),
            }
        }
        TargetRule::Task => {
            // No length bound: task ids are minted by the server, and a stateless server may
            // pack state into them. The body limit Envoy applies bounds them anyway.
            take_string(&mut params, "taskId")
                .filter(|id| !id.is_empty() && !id.chars().any(is_forbidden_char))
                .map(|id| Target::Task { id })
                .ok_or(McpError::bad_request(
                    "this method needs `params.taskId`: a non-empty string",
                ))
        }
    }
}

fn take_prompt_name(params: &mut Map<String, Value>) -> Result<String, McpError> {
    take_string(params, "name")
        .filter(|name| is_valid_name(name, MAX_PROMPT_NAME_CHARS))
        .ok_or(McpError::bad_request(
            "a prompt needs `name`: 1-256 printable characters",
        ))
}

fn take_uri(params: &mut Map<String, Value>) -> Result<String, McpError> {
    // URIs never contain whitespace (RFC 3986 s2); one that does is spelled differently by
    // whoever normalizes it next.
    take_string(params, "uri")
        .filter(|uri| is_valid_name(uri, MAX_URI_CHARS) && !uri.chars().any(char::is_whitespace))
        .ok_or(McpError::bad_request(
            "a resource needs `uri`: 1-2048 characters without whitespace",
        ))
}

/// Moves a string member out of `map`; `None` when absent or not a string.
fn take_string(map: &mut Map<String, Value>, key: &str) -> Option<String> {
    match map.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// Non-empty, at most `max_chars` characters, and nothing that prints as something else.
fn is_valid_name(name: &str, max_chars: usize) -> bool {
    !name.is_empty() && name.chars().count() <= max_chars && !name.chars().any(is_forbidden_char)
}

/// Control characters (a newline forges a log line), and the invisible and bidirectional
/// formatting characters that let one name render as another in logs and consoles.
fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}' // zero width space
            | '\u{200E}' | '\u{200F}' // left-to-right / right-to-left marks
            | '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{FEFF}' // zero width no-break space
        )
}

/// MCP 2026-07-28 (SEP-2243) mirrors the method and target name into `Mcp-Method` and
/// `Mcp-Name` so intermediaries can route without the body, and servers MUST reject requests
/// where headers and body disagree. Anything that routes or rate-limits on the header while
/// the server executes the body is a confused deputy unless the two are held equal here.
fn check_routing_headers(
    headers: &HashMap<String, String>,
    batch: bool,
    messages: &[Message],
) -> Result<(), McpError> {
    let method_header = headers.get("mcp-method");
    let name_header = headers.get("mcp-name");
    if method_header.is_none() && name_header.is_none() {
        return Ok(());
    }
    // The headers arrived in 2026-07-28 and batches left in 2025-06-18: no conforming client
    // sends both, and a header describing a whole batch could only be checked against every
    // element. The combination is refused outright rather than given a meaning.
    if batch {
        return Err(McpError::bad_request(
            "mcp-method and mcp-name headers are not allowed with a batch",
        ));
    }
    for message in messages {
        // Envoy joins a repeated header with `,`, which then matches no method: refused.
        if let Some(header) = method_header
            && message.method.as_deref() != Some(header.as_str())
        {
            return Err(McpError::bad_request(HEADER_MISMATCH));
        }
        // An unknown method's target is not interpreted, so there is nothing to compare the
        // name with; the caller denies the message regardless.
        if let (Some(header), Some(_)) = (name_header, message.action) {
            let name = decode_header_value(header)?;
            if message.target.name() != Some(name.as_ref()) {
                return Err(McpError::bad_request(HEADER_MISMATCH));
            }
        }
    }
    Ok(())
}

/// SEP-2243: a value that is not plain printable ASCII is sent as `=?base64?<base64 of the
/// UTF-8>?=`, and so is a plain value that happens to look like that sentinel. Other values
/// are compared as sent.
fn decode_header_value(value: &str) -> Result<Cow<'_, str>, McpError> {
    const INVALID: McpError =
        McpError::bad_request("an mcp-name header has invalid base64 encoding");
    let Some(encoded) = value
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    else {
        return Ok(Cow::Borrowed(value));
    };
    let engine = GeneralPurpose::new(&alphabet::STANDARD, PAD_INDIFFERENT);
    let bytes = engine.decode(encoded).map_err(|_| INVALID)?;
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| INVALID)
}

// === strict JSON ===

const INVALID_JSON: &str = "the request body is not valid JSON";
const DUPLICATE_KEY: &str = "the request body repeats a key in a JSON object";
const TOO_DEEP: &str = "the request body nests JSON too deeply";

/// Parses `text` as exactly one JSON value (whitespace around it allowed), refusing repeated
/// keys and nesting beyond [`MAX_DEPTH`].
fn parse_json(text: &str) -> Result<Value, McpError> {
    let reason = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = StrictValue {
        depth: 0,
        reason: &reason,
    };
    seed.deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|_| McpError::bad_request(reason.get().unwrap_or(INVALID_JSON)))
}

/// Builds a `serde_json::Value` like serde_json's own `Deserialize` impl, but errors on a
/// repeated object key and counts depth. `reason` records why it refused, since a
/// `serde_json::Error` made from a custom message can only be told apart by its text.
///
/// Keys are compared after unescaping, so `"a"` and `"\u0061"` are the same key, as they are
/// to every JSON parser.
#[derive(Clone, Copy)]
struct StrictValue<'r> {
    /// Containers enclosing the value being read.
    depth: usize,
    reason: &'r Cell<Option<&'static str>>,
}

impl StrictValue<'_> {
    fn refuse<E: de::Error>(self, reason: &'static str) -> E {
        self.reason.set(Some(reason));
        E::custom(reason)
    }

    /// The seed for the members of a container opened at this level.
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(self.refuse(TOO_DEEP));
        }
        Ok(StrictValue {
            depth: self.depth + 1,
            reason: self.reason,
        })
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json never produces a non-finite number; refusing one keeps this total.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| self.refuse(INVALID_JSON))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(self.refuse(DUPLICATE_KEY));
            }
            let value = map.next_value_seed(inner)?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(method: &str, pairs: &[(&str, &str)], body: &[u8]) -> Result<McpRequest, McpError> {
        let h = headers(pairs);
        parse(&HttpParts {
            method,
            headers: &h,
            body,
        })
    }

    /// A POST with `content-type: application/json` and the extra headers.
    fn post_with(extra: &[(&str, &str)], body: &str) -> Result<McpRequest, McpError> {
        let mut pairs = vec![("content-type", "application/json")];
        pairs.extend_from_slice(extra);
        run("POST", &pairs, body.as_bytes())
    }

    fn post(body: &str) -> Result<McpRequest, McpError> {
        post_with(&[], body)
    }

    /// The single (non-batch) message of a POST that must parse.
    fn one(body: &str) -> Message {
        match post(body) {
            Ok(McpRequest::Messages {
                batch: false,
                mut messages,
            }) if messages.len() == 1 => messages.remove(0),
            other => panic!("{body}: {other:?}"),
        }
    }

    fn request(method: &str, params: Value) -> String {
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
    }

    #[test]
    fn every_known_method_has_a_rule_and_vice_versa() {
        for method in KNOWN_METHODS {
            assert!(rule(method).is_some(), "{method}");
        }
        let notifications = KNOWN_METHODS
            .iter()
            .filter(|m| rule(m) == Some(Rule::Notification))
            .count();
        assert_eq!(notifications, 5);
        assert_eq!(KNOWN_METHODS.len(), 24);
        assert_eq!(rule("tools/cal"), None);
        assert_eq!(rule("Tools/call"), None);
    }

    #[test]
    fn server_level_requests() {
        let cases = [
            (
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "c", "version": "1"}}),
            ),
            ("ping", json!({})),
            ("logging/setLevel", json!({"level": "info"})),
            ("prompts/list", json!({"cursor": "abc"})),
            ("resources/list", json!({})),
            ("resources/templates/list", json!({})),
            ("tools/list", json!({})),
            ("tasks/list", json!({})),
        ];
        for (method, params) in cases {
            let m = one(&request(method, params));
            assert_eq!(m.kind, MessageKind::Request, "{method}");
            assert_eq!(m.method.as_deref(), Some(method));
            assert_eq!(m.action, Some(method));
            assert_eq!(m.target, Target::Server);
            assert_eq!(m.target.name(), None);
        }
        // params is optional for these.
        let m = one(r#"{"jsonrpc":"2.0","id":"x","method":"ping"}"#);
        assert_eq!(m.action, Some("ping"));
        assert_eq!(m.kind, MessageKind::Request);
    }

    #[test]
    fn tools_call() {
        let m = one(&request(
            "tools/call",
            json!({"name": "get_weather", "arguments": {"city": "Paris", "n": [1, {"x": null}]}}),
        ));
        assert_eq!(m.action, Some("tools/call"));
        let Target::Tool { name, arguments } = &m.target else {
            panic!("{m:?}");
        };
        assert_eq!(name, "get_weather");
        assert_eq!(
            Value::Object(arguments.clone()),
            json!({"city": "Paris", "n": [1, {"x": null}]})
        );
        assert_eq!(m.target.name(), Some("get_weather"));

        // arguments absent -> empty map; printable non-ASCII names tolerated.
        let m = one(&request("tools/call", json!({"name": "météo v2"})));
        assert_eq!(
            m.target,
            Target::Tool {
                name: "météo v2".into(),
                arguments: Map::new()
            }
        );
        // Exactly 128 characters (multi-byte) is allowed.
        let long = "é".repeat(128);
        assert_eq!(
            one(&request("tools/call", json!({"name": long})))
                .target
                .name(),
            Some(long.as_str())
        );
    }

    #[test]
    fn prompts_resources_tasks() {
        let m = one(&request(
            "prompts/get",
            json!({"name": "summarize", "arguments": {"a": "b"}}),
        ));
        assert_eq!(m.action, Some("prompts/get"));
        assert_eq!(
            m.target,
            Target::Prompt {
                name: "summarize".into()
            }
        );

        for method in [
            "resources/read",
            "resources/subscribe",
            "resources/unsubscribe",
        ] {
            let m = one(&request(method, json!({"uri": "file:///etc/motd"})));
            assert_eq!(m.action, Some(method));
            assert_eq!(
                m.target,
                Target::Resource {
                    uri: "file:///etc/motd".into()
                }
            );
            assert_eq!(m.target.name(), Some("file:///etc/motd"));
        }
        for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
            let m = one(&request(method, json!({"taskId": "786512e2-9e0d"})));
            assert_eq!(m.action, Some(method));
            assert_eq!(
                m.target,
                Target::Task {
                    id: "786512e2-9e0d".into()
                }
            );
            assert_eq!(m.target.name(), Some("786512e2-9e0d"));
        }
    }

    #[test]
    fn completion_targets() {
        let m = one(&request(
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "code_review"},
                   "argument": {"name": "language", "value": "py"}}),
        ));
        assert_eq!(m.action, Some("completion/complete"));
        assert_eq!(
            m.target,
            Target::Prompt {
                name: "code_review".into()
            }
        );

        let m = one(&request(
            "completion/complete",
            json!({"ref": {"type": "ref/resource", "uri": "file:///{path}"},
                   "argument": {"name": "path", "value": "/h"}}),
        ));
        assert_eq!(
            m.target,
            Target::Resource {
                uri: "file:///{path}".into()
            }
        );
    }

    #[test]
    fn notifications() {
        for (method, params) in [
            ("notifications/initialized", None),
            (
                "notifications/cancelled",
                Some(json!({"requestId": 3, "reason": "user"})),
            ),
            (
                "notifications/progress",
                Some(json!({"progressToken": "t", "progress": 5})),
            ),
            ("notifications/roots/list_changed", None),
            (
                "notifications/tasks/status",
                Some(json!({"taskId": "t1", "status": "working"})),
            ),
        ] {
            let mut body = json!({"jsonrpc": "2.0", "method": method});
            if let Some(params) = params {
                body["params"] = params;
            }
            let m = one(&body.to_string());
            assert_eq!(m.kind, MessageKind::Notification, "{method}");
            assert_eq!(m.action, Some(method));
            assert_eq!(m.target, Target::Server);
        }
    }

    #[test]
    fn client_responses() {
        for body in [
            r#"{"jsonrpc":"2.0","id":7,"result":{"roots":[]}}"#,
            r#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":8,"error":{"code":-32601,"message":"no"}}"#,
        ] {
            let m = one(body);
            assert_eq!(m.kind, MessageKind::Response, "{body}");
            assert_eq!(m.method, None);
            assert_eq!(m.action, Some(RESPONSE_ACTION));
            assert_eq!(m.target, Target::Server);
        }
    }

    #[test]
    fn unknown_methods_parse_without_an_action() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/delete","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/whatever"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage"}"#,
        ] {
            let m = one(body);
            assert_eq!(m.action, None, "{body}");
            assert_eq!(m.target, Target::Server);
        }
        let m = one(r#"{"jsonrpc":"2.0","method":"x/y"}"#);
        assert_eq!(m.kind, MessageKind::Notification);
        assert_eq!(m.method.as_deref(), Some("x/y"));
        // An unknown method's mcp-name is not compared: there is no interpreted target.
        let got = post_with(
            &[("mcp-method", "x/y"), ("mcp-name", "anything")],
            r#"{"jsonrpc":"2.0","id":1,"method":"x/y","params":{"name":"other"}}"#,
        );
        assert!(got.is_ok(), "{got:?}");
    }

    #[test]
    fn batches() {
        let body = r#"[
            {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
            {"jsonrpc":"2.0","method":"notifications/initialized"},
            {"jsonrpc":"2.0","id":9,"result":{}},
            {"jsonrpc":"2.0","id":2,"method":"mystery"}
        ]"#;
        let Ok(McpRequest::Messages { batch, messages }) = post(body) else {
            panic!("batch refused");
        };
        assert!(batch);
        let actions: Vec<_> = messages.iter().map(|m| m.action).collect();
        assert_eq!(
            actions,
            [
                Some("tools/call"),
                Some("notifications/initialized"),
                Some(RESPONSE_ACTION),
                None
            ]
        );
        // A batch of one is still a batch.
        let got = post(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
        assert!(
            matches!(got, Ok(McpRequest::Messages { batch: true, ref messages }) if messages.len() == 1)
        );
        // Exactly MAX_BATCH is allowed.
        let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let full = format!("[{}]", vec![ping; MAX_BATCH].join(","));
        assert!(post(&full).is_ok());
    }

    #[test]
    fn get_and_delete() {
        assert_eq!(run("GET", &[], b""), Ok(McpRequest::OpenStream));
        assert_eq!(run("DELETE", &[], b""), Ok(McpRequest::EndSession));
        // No content-type needed, and routing headers are ignored without a body.
        let noise = [
            ("mcp-method", "tools/call"),
            ("mcp-name", "x"),
            ("accept", "text/event-stream"),
            ("mcp-session-id", "abc"),
        ];
        assert_eq!(run("GET", &noise, b""), Ok(McpRequest::OpenStream));
        assert_eq!(run("DELETE", &noise, b""), Ok(McpRequest::EndSession));
    }

    #[test]
    fn accepted_envelopes() {
        let ping = r#"  {"jsonrpc":"2.0","id":1,"method":"ping"}
"#;
        for content_type in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/json ; charset=utf8;",
        ] {
            let got = run("POST", &[("content-type", content_type)], ping.as_bytes());
            assert!(got.is_ok(), "{content_type}: {got:?}");
        }
        for encoding in ["identity", "IDENTITY", "identity, identity", ""] {
            let got = post_with(&[("content-encoding", encoding)], ping);
            assert!(got.is_ok(), "{encoding}: {got:?}");
        }
        let got = post_with(&[("x-envoy-auth-partial-body", "false")], ping);
        assert!(got.is_ok());
    }

    #[test]
    fn routing_headers_that_agree() {
        let cases: &[(&[(&str, &str)], String)] = &[
            (
                &[("mcp-method", "tools/call"), ("mcp-name", "get_weather")],
                request("tools/call", json!({"name": "get_weather"})),
            ),
            (
                &[("mcp-method", "prompts/get"), ("mcp-name", "summarize")],
                request("prompts/get", json!({"name": "summarize"})),
            ),
            (
                &[
                    ("mcp-method", "resources/read"),
                    ("mcp-name", "file:///a.txt"),
                ],
                request("resources/read", json!({"uri": "file:///a.txt"})),
            ),
            (
                &[("mcp-method", "completion/complete"), ("mcp-name", "p")],
                request(
                    "completion/complete",
                    json!({"ref": {"type": "ref/prompt", "name": "p"}}),
                ),
            ),
            (
                &[("mcp-method", "tasks/get"), ("mcp-name", "t-1")],
                request("tasks/get", json!({"taskId": "t-1"})),
            ),
            // mcp-method alone, on a request and on a notification.
            (
                &[("mcp-method", "tools/list")],
                request("tools/list", json!({})),
            ),
            (
                &[("mcp-method", "notifications/initialized")],
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_string(),
            ),
            // mcp-name alone.
            (
                &[("mcp-name", "a")],
                request("tools/call", json!({"name": "a"})),
            ),
            // SEP-2243 base64 sentinel: "café" and a name that looks like the sentinel.
            (
                &[
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "=?base64?Y2Fmw6k=?="),
                ],
                request("tools/call", json!({"name": "café"})),
            ),
            (
                &[("mcp-name", "=?base64?Y2Fmw6k?=")],
                request("tools/call", json!({"name": "café"})),
            ),
            (
                &[("mcp-name", "=?base64?PT9iYXNlNjQ/eD89?=")],
                request("tools/call", json!({"name": "=?base64?x?="})),
            ),
        ];
        for (extra, body) in cases {
            let got = post_with(extra, body);
            assert!(got.is_ok(), "{extra:?} {body}: {got:?}");
        }
    }

    #[test]
    fn routing_header_disagreements() {
        let call = request("tools/call", json!({"name": "get_weather"}));
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("mcp-method", "tools/list")], &call),
            (&[("mcp-method", "Tools/Call")], &call),
            (&[("mcp-method", "tools/call,tools/call")], &call),
            (
                &[("mcp-method", "tools/call"), ("mcp-name", "delete_all")],
                &call,
            ),
            (&[("mcp-name", "get_weather,get_weather")], &call),
            (&[("mcp-name", "=?base64?ZGVsZXRl?=")], &call),
            // The body names nothing, the header names something.
            (
                &[("mcp-name", "x")],
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            ),
            // A response has no method to agree with.
            (
                &[("mcp-method", "ping")],
                r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            ),
        ];
        for (extra, body) in cases {
            assert_eq!(
                post_with(extra, body),
                Err(McpError::bad_request(HEADER_MISMATCH)),
                "{extra:?} {body}"
            );
        }
        // Undecodable sentinel: still a 400, with its own message.
        let got = post_with(&[("mcp-name", "=?base64?***?=")], &call);
        assert_eq!(got.map_err(|e| e.status), Err(400));
        let got = post_with(&[("mcp-name", "=?base64?/w==?=")], &call);
        assert_eq!(got.map_err(|e| e.status), Err(400));
    }

    #[test]
    fn batches_refuse_routing_headers() {
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
        for extra in [[("mcp-method", "ping")], [("mcp-name", "x")]] {
            assert_eq!(post_with(&extra, batch).map_err(|e| e.status), Err(400));
        }
    }

    #[test]
    fn duplicate_keys_are_found_after_unescaping() {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","n\u0061me":"b"}}"#;
        assert_eq!(post(body), Err(McpError::bad_request(DUPLICATE_KEY)));
    }

    #[test]
    fn nesting_is_bounded_without_overflowing_the_stack() {
        for body in [
            "[".repeat(10_000),
            "{\"a\":".repeat(10_000),
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        ] {
            assert_eq!(post(&body), Err(McpError::bad_request(TOO_DEEP)));
        }
        // Arguments nested right up to the limit are fine; one level more is not.
        let nested = |levels: usize| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{{"x":{}1{}}}}}}}"#,
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        // The message, params and arguments objects are three levels already.
        assert!(post(&nested(MAX_DEPTH - 3)).is_ok());
        assert_eq!(
            post(&nested(MAX_DEPTH - 2)),
            Err(McpError::bad_request(TOO_DEEP))
        );
    }

    #[test]
    fn numbers_stay_numbers() {
        // Guards against a feature such as serde_json's `arbitrary_precision` changing what
        // the visitor sees: an integer id must still read as an integer.
        assert!(post(r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#).is_ok());
        assert!(post(r#"{"jsonrpc":"2.0","id":-5,"method":"ping"}"#).is_ok());
        let m = one(&request(
            "tools/call",
            json!({"name": "t", "arguments": {"f": 1.5, "i": -2, "b": true, "s": "x", "z": null}}),
        ));
        let Target::Tool { arguments, .. } = m.target else {
            panic!("not a tool");
        };
        assert_eq!(arguments.get("f"), Some(&json!(1.5)));
        assert_eq!(arguments.get("i"), Some(&json!(-2)));
    }

    #[test]
    fn errors_display_their_fixed_message() {
        let err = post(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"evil\n<script>"}}"#,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.starts_with("tools/call needs"), "{err}");
        assert!(!err.contains("evil"));
        let boxed: Box<dyn std::error::Error> = Box::new(McpError::bad_request(INVALID_JSON));
        assert_eq!(boxed.to_string(), INVALID_JSON);
    }

    /// Malformed and hostile requests, each with the exact status it must get.
    #[test]
    fn refused_requests() {
        const JSON: &[(&str, &str)] = &[("content-type", "application/json")];
        let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let call = |params: &str| {
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{params}}}"#)
        };
        let too_long_name = call(&format!(r#"{{"name":"{}"}}"#, "a".repeat(129)));
        let too_long_prompt = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{{"name":"{}"}}}}"#,
            "p".repeat(257)
        );
        let too_long_uri = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"file:///{}"}}}}"#,
            "u".repeat(2048)
        );
        let big_batch = format!("[{}]", vec![ping; MAX_BATCH + 1].join(","));
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice(ping.as_bytes());
        let mut latin1 =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"caf"#.to_vec();
        latin1.extend_from_slice(b"\xE9\"}}");
        let deep = "[".repeat(10_000);

        /// (what, HTTP method, headers, body, expected status)
        type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16);
        let cases: Vec<Case<'_>> = vec![
            // HTTP envelope.
            ("PUT", "PUT", JSON.to_vec(), ping.into(), 405),
            ("PATCH", "PATCH", JSON.to_vec(), ping.into(), 405),
            ("OPTIONS", "OPTIONS", vec![], vec![], 405),
            ("HEAD", "HEAD", vec![], vec![], 405),
            ("lowercase post", "post", JSON.to_vec(), ping.into(), 405),
            ("body on GET", "GET", vec![], ping.into(), 400),
            ("body on DELETE", "DELETE", vec![], b"x".to_vec(), 400),
            (
                "partial body",
                "POST",
                vec![("content-type", "application/json"), ("x-envoy-auth-partial-body", "true")],
                ping.into(),
                413,
            ),
            (
                "partial body, truncated JSON",
                "POST",
                vec![("content-type", "application/json"), ("x-envoy-auth-partial-body", "TRUE")],
                br#"{"jsonrpc":"2.0","id":1,"meth"#.to_vec(),
                413,
            ),
            (
                "gzip",
                "POST",
                vec![("content-type", "application/json"), ("content-encoding", "gzip")],
                ping.into(),
                415,
            ),
            (
                "identity then br",
                "POST",
                vec![("content-type", "application/json"), ("content-encoding", "identity,br")],
                ping.into(),
                415,
            ),
            ("no content type", "POST", vec![], ping.into(), 415),
            ("text/plain", "POST", vec![("content-type", "text/plain")], ping.into(), 415),
            (
                "json-seq",
                "POST",
                vec![("content-type", "application/json-seq")],
                ping.into(),
                415,
            ),
            (
                "form",
                "POST",
                vec![("content-type", "application/x-www-form-urlencoded")],
                ping.into(),
                415,
            ),
            (
                "latin-1 charset",
                "POST",
                vec![("content-type", "application/json; charset=iso-8859-1")],
                ping.into(),
                415,
            ),
            (
                "two content types",
                "POST",
                vec![("content-type", "application/json,text/plain")],
                ping.into(),
                415,
            ),
            // Body encoding and JSON syntax.
            ("empty body", "POST", JSON.to_vec(), vec![], 400),
            ("whitespace body", "POST", JSON.to_vec(), b"  \n".to_vec(), 400),
            ("invalid UTF-8", "POST", JSON.to_vec(), latin1, 400),
            ("BOM", "POST", JSON.to_vec(), bom, 400),
            ("invalid JSON", "POST", JSON.to_vec(), b"{jsonrpc: 2.0}".to_vec(), 400),
            (
                "truncated JSON",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"pi"#.to_vec(),
                400,
            ),
            (
                "trailing garbage",
                "POST",
                JSON.to_vec(),
                format!("{ping}x").into(),
                400,
            ),
            ("two messages", "POST", JSON.to_vec(), format!("{ping}{ping}").into(), 400),
            (
                "trailing comma",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"ping",}"#.to_vec(),
                400,
            ),
            (
                "lone surrogate",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\ud800"}}"#.to_vec(),
                400,
            ),
            (
                "argument keys differing only in case",
                "POST",
                JSON.to_vec(),
                call(r#"{"name":"read_file","arguments":{"path":"/srv/shared/a","Path":"/etc/passwd"}}"#).into(),
                400,
            ),
            (
                "argument keys equal under Unicode case folding",
                "POST",
                JSON.to_vec(),
                call("{\"name\":\"t\",\"arguments\":{\"pas\":1,\"pa\u{17f}\":2}}").into(),
                400,
            ),
            (
                "duplicate key, top level",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#.to_vec(),
                400,
            ),
            (
                "duplicate key, nested",
                "POST",
                JSON.to_vec(),
                call(r#"{"name":"safe","name":"evil"}"#).into(),
                400,
            ),
            (
                "duplicate key, deep in arguments",
                "POST",
                JSON.to_vec(),
                call(r#"{"name":"t","arguments":{"a":[{"b":1,"b":2}]}}"#).into(),
                400,
            ),
            ("deeply nested arrays", "POST", JSON.to_vec(), deep.into(), 400),
            ("NaN", "POST", JSON.to_vec(), br#"{"jsonrpc":"2.0","id":NaN,"method":"ping"}"#.to_vec(), 400),
            (
                "huge number",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1e999,"method":"ping"}"#.to_vec(),
                400,
            ),
            // Top-level shape.
            ("top-level string", "POST", JSON.to_vec(), br#""ping""#.to_vec(), 400),
            ("top-level number", "POST", JSON.to_vec(), b"42".to_vec(), 400),
            ("top-level null", "POST", JSON.to_vec(), b"null".to_vec(), 400),
            ("top-level true", "POST", JSON.to_vec(), b"true".to_vec(), 400),
            ("empty batch", "POST", JSON.to_vec(), b"[]".to_vec(), 400),
            ("batch too big", "POST", JSON.to_vec(), big_batch.into(), 400),
            (
                "batch with a non-object",
                "POST",
                JSON.to_vec(),
                format!("[{ping},1]").into(),
                400,
            ),
            ("nested arrays", "POST", JSON.to_vec(), format!("[[{ping}]]").into(), 400),
            (
                "batch with a bad element",
                "POST",
                JSON.to_vec(),
                format!(r#"[{ping},{{"jsonrpc":"1.0","id":2,"method":"ping"}}]"#).into(),
                400,
            ),
            // JSON-RPC envelope.
            (
                "jsonrpc 1.0",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#.to_vec(),
                400,
            ),
            (
                "jsonrpc number",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#.to_vec(),
                400,
            ),
            ("missing jsonrpc", "POST", JSON.to_vec(), br#"{"id":1,"method":"ping"}"#.to_vec(), 400),
            ("empty object", "POST", JSON.to_vec(), b"{}".to_vec(), 400),
            (
                "id null",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#.to_vec(),
                400,
            ),
            (
                "id float",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#.to_vec(),
                400,
            ),
            (
                "id 1.0",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1.0,"method":"ping"}"#.to_vec(),
                400,
            ),
            (
                "id bool",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#.to_vec(),
                400,
            ),
            (
                "id object",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#.to_vec(),
                400,
            ),
            (
                "method not a string",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":7}"#.to_vec(),
                400,
            ),
            (
                "result and error together",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}"#.to_vec(),
                400,
            ),
            (
                "response without result or error",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1}"#.to_vec(),
                400,
            ),
            (
                "response without id",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","result":{}}"#.to_vec(),
                400,
            ),
            (
                "error not an object",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"error":"boom"}"#.to_vec(),
                400,
            ),
            (
                "request carrying a result",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#.to_vec(),
                400,
            ),
            (
                "params array",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["x"]}"#.to_vec(),
                400,
            ),
            (
                "params string on an unknown method",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"x","params":"s"}"#.to_vec(),
                400,
            ),
            (
                "known request without id",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"t"}}"#.to_vec(),
                400,
            ),
            (
                "notification with id",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"notifications/initialized"}"#.to_vec(),
                400,
            ),
            // Targets.
            (
                "tools/call without params",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#.to_vec(),
                400,
            ),
            ("tools/call without name", "POST", JSON.to_vec(), call(r#"{"arguments":{}}"#).into(), 400),
            ("tool name empty", "POST", JSON.to_vec(), call(r#"{"name":""}"#).into(), 400),
            ("tool name a number", "POST", JSON.to_vec(), call(r#"{"name":5}"#).into(), 400),
            ("tool name null", "POST", JSON.to_vec(), call(r#"{"name":null}"#).into(), 400),
            ("tool name too long", "POST", JSON.to_vec(), too_long_name.into(), 400),
            ("tool name with newline", "POST", JSON.to_vec(), call(r#"{"name":"a\nb"}"#).into(), 400),
            ("tool name with NUL", "POST", JSON.to_vec(), call(r#"{"name":"a\u0000"}"#).into(), 400),
            (
                "tool name with bidi override",
                "POST",
                JSON.to_vec(),
                call(r#"{"name":"a\u202Eb"}"#).into(),
                400,
            ),
            ("arguments array", "POST", JSON.to_vec(), call(r#"{"name":"t","arguments":[1]}"#).into(), 400),
            ("arguments null", "POST", JSON.to_vec(), call(r#"{"name":"t","arguments":null}"#).into(), 400),
            (
                "prompts/get without name",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{}}"#.to_vec(),
                400,
            ),
            ("prompt name too long", "POST", JSON.to_vec(), too_long_prompt.into(), 400),
            (
                "resources/read uri number",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":1}}"#.to_vec(),
                400,
            ),
            (
                "resources/subscribe uri with space",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"file:///a b"}}"#.to_vec(),
                400,
            ),
            (
                "resources/unsubscribe uri empty",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"resources/unsubscribe","params":{"uri":""}}"#.to_vec(),
                400,
            ),
            ("uri too long", "POST", JSON.to_vec(), too_long_uri.into(), 400),
            (
                "completion ref unknown type",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/tool","name":"t"}}}"#.to_vec(),
                400,
            ),
            (
                "completion ref missing",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{}}"#.to_vec(),
                400,
            ),
            (
                "completion ref/prompt without name",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","uri":"x"}}}"#.to_vec(),
                400,
            ),
            (
                "tasks/get without taskId",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{}}"#.to_vec(),
                400,
            ),
            (
                "tasks/cancel taskId empty",
                "POST",
                JSON.to_vec(),
                br#"{"jsonrpc":"2.0","id":1,"method":"tasks/cancel","params":{"taskId":""}}"#.to_vec(),
                400,
            ),
            // Routing headers.
            (
                "mcp-method mismatch",
                "POST",
                vec![("content-type", "application/json"), ("mcp-method", "tools/list")],
                call(r#"{"name":"t"}"#).into(),
                400,
            ),
            (
                "mcp-name mismatch",
                "POST",
                vec![("content-type", "application/json"), ("mcp-name", "other")],
                call(r#"{"name":"t"}"#).into(),
                400,
            ),
        ];
        assert!(cases.len() >= 30);
        for (what, method, pairs, body, status) in &cases {
            let got = run(method, pairs, body);
            assert_eq!(got.map_err(|e| e.status), Err(*status), "{what}");
        }
    }
}
