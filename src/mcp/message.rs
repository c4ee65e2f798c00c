//! Classifying JSON-RPC messages: a batch or a single message object becomes [`Message`]s with
//! their kind, policy action and target, and every shape MCP does not send is refused.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::{
    KNOWN_METHODS, MAX_BATCH, MAX_PROMPT_NAME_CHARS, MAX_TOOL_NAME_CHARS, MAX_URI_CHARS, McpError,
    Message, MessageKind, RESPONSE_ACTION, Target,
};

pub(super) fn read_batch(items: Vec<Value>) -> Result<Vec<Message>, McpError> {
    if items.is_empty() {
        // JSON-RPC 2.0 s6: an empty array is an invalid request.
        return Err(McpError::EmptyBatch);
    }
    if items.len() > MAX_BATCH {
        return Err(McpError::BatchTooLarge);
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(message) => read_message(message),
            _ => Err(McpError::NotJsonRpc(
                "every batch element must be a JSON-RPC message object",
            )),
        })
        .collect()
}

/// How a known method must be sent and what it targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    Request(TargetRule),
    Notification,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TargetRule {
    Server,
    Tool,
    Prompt,
    Resource,
    Completion,
    Task,
}

/// The rule for each entry of [`KNOWN_METHODS`] (a test keeps the two in step).
pub(super) fn rule(method: &str) -> Option<Rule> {
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
    let mut seen = HashSet::with_capacity(arguments.len());
    arguments
        .keys()
        .any(|k| !seen.insert(k.to_uppercase().to_lowercase()))
}

/// Classifies one JSON-RPC 2.0 message object. Takes it by value so `params.arguments` moves
/// into the target instead of being copied.
pub(super) fn read_message(mut message: Map<String, Value>) -> Result<Message, McpError> {
    if !matches!(message.get("jsonrpc"), Some(Value::String(v)) if v == "2.0") {
        return Err(McpError::NotJsonRpc("`jsonrpc` must be \"2.0\""));
    }
    let has_id = match message.get("id") {
        None => false,
        Some(id) if is_valid_id(id) => true,
        Some(_) => {
            return Err(McpError::NotJsonRpc("`id` must be a string or an integer"));
        }
    };
    // MCP never uses by-position (array) params, so anything but an object is malformed.
    let params = match message.remove("params") {
        None => None,
        Some(Value::Object(params)) => Some(params),
        Some(_) => return Err(McpError::NotJsonRpc("`params` must be an object")),
    };
    let has_result = message.contains_key("result");
    let has_error = message.contains_key("error");

    let method = match message.remove("method") {
        Some(Value::String(method)) => method,
        Some(_) => return Err(McpError::NotJsonRpc("`method` must be a string")),
        None => {
            // JSON-RPC 2.0 s5: a response has an id and exactly one of result and error.
            if !has_id {
                return Err(McpError::NotJsonRpc(
                    "a message needs a `method` or, for a response, an `id`",
                ));
            }
            if has_result == has_error {
                return Err(McpError::NotJsonRpc(
                    "a response needs exactly one of `result` and `error`",
                ));
            }
            if has_error && !matches!(message.get("error"), Some(Value::Object(_))) {
                return Err(McpError::NotJsonRpc("a response `error` must be an object"));
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
        return Err(McpError::NotJsonRpc(
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
            return Err(McpError::NotJsonRpc("a notification must not have an `id`"));
        }
        Some(Rule::Request(_)) => {
            return Err(McpError::NotJsonRpc("a request must have an `id`"));
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
        return Err(McpError::InvalidParams("this method requires `params`"));
    };
    match rule {
        TargetRule::Server => Ok(Target::Server),
        TargetRule::Tool => {
            let name = take_string(&mut params, "name")
                .filter(|name| is_valid_name(name, MAX_TOOL_NAME_CHARS))
                .ok_or(McpError::InvalidParams(
                    "tools/call needs `params.name`: a tool name of 1-128 printable characters",
                ))?;
            let arguments = match params.remove("arguments") {
                None => Map::new(),
                Some(Value::Object(arguments)) => arguments,
                Some(_) => {
                    return Err(McpError::InvalidParams(
                        "tools/call `params.arguments` must be an object",
                    ));
                }
            };
            if has_case_folded_duplicates(&arguments) {
                return Err(McpError::CaseFoldedArguments);
            }
            Ok(Target::Tool { name, arguments })
        }
        TargetRule::Prompt => take_prompt_name(&mut params).map(|name| Target::Prompt { name }),
        TargetRule::Resource => take_uri(&mut params).map(|uri| Target::Resource { uri }),
        TargetRule::Completion => {
            let Some(Value::Object(mut reference)) = params.remove("ref") else {
                return Err(McpError::InvalidParams(
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
                _ => Err(McpError::InvalidParams(
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
                .ok_or(McpError::InvalidParams(
                    "this method needs `params.taskId`: a non-empty string",
                ))
        }
    }
}

fn take_prompt_name(params: &mut Map<String, Value>) -> Result<String, McpError> {
    take_string(params, "name")
        .filter(|name| is_valid_name(name, MAX_PROMPT_NAME_CHARS))
        .ok_or(McpError::InvalidParams(
            "a prompt needs `name`: 1-256 printable characters",
        ))
}

fn take_uri(params: &mut Map<String, Value>) -> Result<String, McpError> {
    // URIs never contain whitespace (RFC 3986 s2); one that does is spelled differently by
    // whoever normalizes it next.
    take_string(params, "uri")
        .filter(|uri| is_valid_name(uri, MAX_URI_CHARS) && !uri.chars().any(char::is_whitespace))
        .ok_or(McpError::InvalidParams(
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
/// formatting characters that let one name render as another in logs and consoles: the bidi
/// controls (including the Arabic letter mark), zero-width characters and joiners, the word
/// joiner and invisible operators, the soft hyphen, fillers and tag characters (Unicode's
/// default-ignorable code points that are not variation selectors or combining marks).
fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}' // soft hyphen
            | '\u{034F}' // combining grapheme joiner
            | '\u{061C}' // Arabic letter mark (a bidi control)
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
            | '\u{17B4}' | '\u{17B5}' // Khmer inherent vowels
            | '\u{180E}' // Mongolian vowel separator
            | '\u{200B}'..='\u{200F}' // zero width space, (non-)joiner, LTR / RTL marks
            | '\u{2028}'..='\u{202E}' // line and paragraph separators, bidi embeddings and overrides
            | '\u{2060}'..='\u{206F}' // word joiner, invisible operators, bidi isolates
            | '\u{FEFF}' // zero width no-break space
            | '\u{E0000}'..='\u{E007F}' // tag characters
        )
}
