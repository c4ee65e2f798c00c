//! The HTTP envelope of a POST: content encoding and media type, checked before the body is
//! read, and the `mcp-method` / `mcp-name` routing headers, held equal to the parsed body.

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, PAD_INDIFFERENT};

use super::{McpError, Message, Target};

/// Envoy forwards the body as received: a compressed body is bytes this module cannot read,
/// and decompressing here would be a second copy and a second place to get it wrong.
pub(super) fn check_content_encoding(headers: &HashMap<String, String>) -> Result<(), McpError> {
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
        Err(McpError::UnsupportedEncoding)
    }
}

/// MCP: the client POSTs `application/json`. The media type is case-insensitive (RFC 9110
/// s8.3.1) and may carry parameters; a `charset` other than UTF-8 is refused, since the server
/// would decode the bytes differently from this module.
pub(super) fn check_content_type(headers: &HashMap<String, String>) -> Result<(), McpError> {
    let value = headers
        .get("content-type")
        .ok_or(McpError::UnsupportedMediaType)?;
    let mut parts = value.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    // Two Content-Type headers arrive joined with `,` and fail here: no single type is known.
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(McpError::UnsupportedMediaType);
    }
    for parameter in parts.map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = parameter
            .split_once('=')
            .ok_or(McpError::UnsupportedMediaType)?;
        if name.trim().eq_ignore_ascii_case("charset") {
            let charset = value.trim().trim_matches('"');
            if !(charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")) {
                return Err(McpError::UnsupportedMediaType);
            }
        }
    }
    Ok(())
}

/// MCP 2026-07-28 (SEP-2243) mirrors the method and target name into `Mcp-Method` and
/// `Mcp-Name` so intermediaries can route without the body, and servers MUST reject requests
/// where headers and body disagree. Anything that routes or rate-limits on the header while
/// the server executes the body is a confused deputy unless the two are held equal here.
pub(super) fn check_routing_headers(
    headers: &HashMap<String, String>,
    batch: bool,
    messages: &[Message],
) -> Result<(), McpError> {
    let method_header = headers.get("mcp-method");
    let name_header = headers.get("mcp-name");
    let mut params = param_headers(headers).peekable();
    if method_header.is_none() && name_header.is_none() && params.peek().is_none() {
        return Ok(());
    }
    // The headers arrived in 2026-07-28 and batches left in 2025-06-18: no conforming client
    // sends both, and a header describing a whole batch could only be checked against every
    // element. The combination is refused outright rather than given a meaning.
    if batch {
        return Err(McpError::RoutingHeadersOnBatch);
    }
    for message in messages {
        // Envoy joins a repeated header with `,`, which then matches no method: refused.
        if let Some(header) = method_header
            && message.method.as_deref() != Some(header.as_str())
        {
            return Err(McpError::HeaderMismatch);
        }
        // An unknown method's target is not interpreted, so there is nothing to compare the
        // name with; the caller denies the message regardless.
        if let (Some(header), Some(_)) = (name_header, message.action) {
            let name = decode_header_value(header)?;
            if message.target.name() != Some(name.as_ref()) {
                return Err(McpError::HeaderMismatch);
            }
        }
    }
    if params.peek().is_none() {
        return Ok(());
    }
    // `Mcp-Param-{Name}` mirrors a `tools/call` argument: on anything else it describes
    // nothing in the body, and a proxy routing on it would act on a value never evaluated.
    let Some(Message {
        target: Target::Tool { arguments, .. },
        ..
    }) = messages.first()
    else {
        return Err(McpError::HeaderMismatch);
    };
    for (name, value) in params {
        // Which argument a header mirrors is declared by the tool's `inputSchema`
        // (`x-mcp-header`), which this service does not see. A header named like a top-level
        // argument (header names are case-insensitive; argument keys differing only in case
        // are refused already) must carry its value; any other is forwarded unexamined, as
        // SEP-2243 asks of intermediaries, for the server to check.
        let Some(argument) = arguments
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
        else {
            continue;
        };
        let value = decode_header_value(value)?;
        if !mirrors(argument, &value) {
            return Err(McpError::HeaderMismatch);
        }
    }
    Ok(())
}

/// The `Mcp-Param-*` headers: the name after the prefix (lowercase, as Envoy sends names) and
/// the value.
fn param_headers(headers: &HashMap<String, String>) -> impl Iterator<Item = (&str, &str)> {
    headers
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("mcp-param-").map(|name| (name, v.as_str())))
}

/// Does a (decoded) `Mcp-Param-*` value carry `argument`? SEP-2243 value encoding: strings as
/// they are, integers in decimal (compared as numbers, so `42.0` is `42`), booleans as
/// `true`/`false`. Objects, arrays and `null` are never mirrored, so no header matches them.
fn mirrors(argument: &serde_json::Value, header: &str) -> bool {
    use serde_json::Value;
    match argument {
        Value::String(s) => s == header,
        Value::Bool(b) => header == if *b { "true" } else { "false" },
        Value::Number(n) => match (n.as_i64(), header.parse::<i64>()) {
            (Some(a), Ok(h)) => a == h,
            _ => n
                .as_f64()
                .zip(header.parse::<f64>().ok())
                .is_some_and(|(a, h)| a.is_finite() && a == h),
        },
        Value::Null | Value::Array(_) | Value::Object(_) => false,
    }
}

/// SEP-2243: a value that is not plain printable ASCII is sent as `=?base64?<base64 of the
/// UTF-8>?=`, and so is a plain value that happens to look like that sentinel. Other values
/// are compared as sent.
fn decode_header_value(value: &str) -> Result<Cow<'_, str>, McpError> {
    let Some(encoded) = value
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    else {
        return Ok(Cow::Borrowed(value));
    };
    let engine = GeneralPurpose::new(&alphabet::STANDARD, PAD_INDIFFERENT);
    let bytes = engine
        .decode(encoded)
        .map_err(|_| McpError::InvalidHeaderEncoding)?;
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| McpError::InvalidHeaderEncoding)
}
