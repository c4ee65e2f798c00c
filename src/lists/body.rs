//! A list response's body, chunk by chunk as Envoy streams it (ext_proc `STREAMED`): each chunk
//! is answered with the bytes that replace it.
//!
//! - `application/json`: the chunks are held (up to `limits.max_list_response_bytes`) and the
//!   filtered document is sent in place of the last one.
//! - `text/event-stream`: events are sent as soon as they are complete (a stream that stays
//!   open keeps flowing), each JSON-RPC message re-serialized after filtering; an incomplete
//!   event waits for the next chunk. WHATWG HTML s9.2.5 ("Parsing an event stream"): lines end
//!   with CRLF, LF or CR, an empty line ends an event, `data:` lines are joined with LF, one
//!   space after the colon is not part of the value, lines starting with `:` are comments.
//!
//! Whatever cannot be read (invalid or non-JSON-RPC data, repeated keys, too large) is replaced
//! by a JSON-RPC error, never passed: an unfiltered list must not reach the client. List
//! responses are always re-serialized, so the client reads exactly the document that was
//! filtered (no repeated keys read two ways; see `strict_json`).

use serde_json::Value;

use super::{ListError, error_message};

/// How deep a list response may nest (tool input schemas nest, but not this deep).
const MAX_DEPTH: usize = 128;

/// What a response's headers say about its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Not a success: passed as it is (a JSON-RPC error, a 404 for an ended session...).
    PassThrough,
    Json,
    Sse,
    /// A success the filter cannot read: replaced by an error.
    Refused(ListError),
}

impl Framing {
    /// From `:status`, `content-type` and `content-encoding`. Compressed bodies are refused:
    /// the check asks the upstream for `accept-encoding: identity` on marked requests.
    pub fn of(status: u16, content_type: Option<&str>, content_encoding: Option<&str>) -> Self {
        if !(200..300).contains(&status) || status == 204 {
            return Self::PassThrough;
        }
        if content_encoding.is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")) {
            return Self::Refused(ListError::Compressed);
        }
        let media = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase());
        match media.as_deref() {
            Some("application/json") => Self::Json,
            Some("text/event-stream") => Self::Sse,
            // 202 Accepted (notifications only) has no body to read.
            None if status == 202 => Self::PassThrough,
            _ => Self::Refused(ListError::ContentType),
        }
    }
}

/// The state of one response body.
pub struct BodyFilter {
    framing: Framing,
    max: usize,
    /// Held bytes: the whole JSON document so far, or the SSE bytes after the last complete
    /// event (line ends already normalized to LF, except a trailing CR kept raw).
    held: Vec<u8>,
    /// An SSE stream that could not be followed any more: the rest is dropped.
    lost: bool,
}

impl BodyFilter {
    pub fn new(framing: Framing, max: usize) -> Self {
        Self {
            framing,
            max,
            held: Vec::new(),
            lost: false,
        }
    }

    pub fn framing(&self) -> &Framing {
        &self.framing
    }

    /// Takes one chunk; returns what goes to the client in its place (possibly nothing yet).
    /// `apply` filters one parsed JSON-RPC message (or batch) in place.
    pub fn push(
        &mut self,
        chunk: &[u8],
        end: bool,
        apply: &mut dyn FnMut(&mut Value) -> Result<(), ListError>,
    ) -> Result<Vec<u8>, Vec<u8>> {
        match &self.framing {
            Framing::PassThrough => Ok(chunk.to_vec()),
            Framing::Refused(e) => {
                let e = e.clone();
                Err(if end {
                    error_message(&e).into_bytes()
                } else {
                    Vec::new()
                })
            }
            Framing::Json => self.json(chunk, end, apply),
            Framing::Sse => Ok(self.sse(chunk, end, apply)),
        }
    }

    /// `Err` carries the replacement body when the document could not be filtered.
    fn json(
        &mut self,
        chunk: &[u8],
        end: bool,
        apply: &mut dyn FnMut(&mut Value) -> Result<(), ListError>,
    ) -> Result<Vec<u8>, Vec<u8>> {
        if self.held.len() + chunk.len() > self.max {
            self.framing = Framing::Refused(ListError::TooLarge);
            self.held = Vec::new();
            return self.push(&[], end, apply);
        }
        self.held.extend_from_slice(chunk);
        if !end {
            return Ok(Vec::new());
        }
        let held = std::mem::take(&mut self.held);
        filter_document(&held, apply)
            .map(String::into_bytes)
            .map_err(|e| error_message(&e).into_bytes())
    }

    fn sse(
        &mut self,
        chunk: &[u8],
        end: bool,
        apply: &mut dyn FnMut(&mut Value) -> Result<(), ListError>,
    ) -> Vec<u8> {
        if self.lost {
            return Vec::new();
        }
        normalize_line_ends(&mut self.held, chunk, end);
        let mut out = Vec::new();
        let mut rest: &[u8] = &self.held;
        while let Some(at) = find(rest, b"\n\n") {
            let (event, after) = rest.split_at(at + 1);
            out.extend_from_slice(&filter_event(event, apply));
            rest = after.get(1..).unwrap_or_default();
        }
        let consumed = self.held.len() - rest.len();
        self.held.drain(..consumed);
        if end && !self.held.is_empty() {
            // The stream ended inside an event: an event is only dispatched at its empty line
            // (WHATWG s9.2.6), so clients drop it too.
            self.held.clear();
        }
        if self.held.len() > self.max {
            self.held = Vec::new();
            self.lost = true;
            out.extend_from_slice(&error_event(&ListError::TooLarge));
        }
        out
    }
}

/// Appends `chunk` to `held` with CRLF and CR turned into LF. A CR at the end of a chunk may be
/// half of a CRLF: it is kept raw until the next chunk (or the end) tells.
fn normalize_line_ends(held: &mut Vec<u8>, chunk: &[u8], end: bool) {
    let mut pending_cr = held.last() == Some(&b'\r');
    if pending_cr {
        held.pop();
    }
    for &b in chunk {
        if pending_cr {
            held.push(b'\n');
            pending_cr = false;
            if b == b'\n' {
                continue;
            }
        }
        if b == b'\r' {
            pending_cr = true;
        } else {
            held.push(b);
        }
    }
    if pending_cr {
        held.push(if end { b'\n' } else { b'\r' });
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses, filters and re-serializes one JSON document.
fn filter_document(
    bytes: &[u8],
    apply: &mut dyn FnMut(&mut Value) -> Result<(), ListError>,
) -> Result<String, ListError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ListError::NotJsonRpc)?;
    let mut value =
        crate::strict_json::parse(text, MAX_DEPTH).map_err(|_| ListError::NotJsonRpc)?;
    apply(&mut value)?;
    Ok(value.to_string())
}

/// One complete event (LF line ends, its terminating empty line excluded) in, its bytes out.
fn filter_event(
    event: &[u8],
    apply: &mut dyn FnMut(&mut Value) -> Result<(), ListError>,
) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(event) else {
        return error_event(&ListError::NotJsonRpc);
    };
    let mut data: Option<String> = None;
    let mut others = Vec::new();
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        } else {
            others.push(line);
        }
    }
    let mut out = String::new();
    for line in &others {
        out.push_str(line);
        out.push('\n');
    }
    match data {
        // No data (comments, `retry`, an `id` only): nothing listed.
        None => {}
        // The priming event of a resumable stream (MCP 2025-11-25): an id and empty data.
        Some(d) if d.is_empty() => out.push_str("data: \n"),
        Some(d) => match filter_document(d.as_bytes(), apply) {
            Ok(json) => {
                out.push_str("data: ");
                out.push_str(&json);
                out.push('\n');
            }
            Err(e) => {
                out.push_str("data: ");
                out.push_str(&error_message(&e));
                out.push('\n');
            }
        },
    }
    out.push('\n');
    out.into_bytes()
}

fn error_event(e: &ListError) -> Vec<u8> {
    format!("event: message\ndata: {}\n\n", error_message(e)).into_bytes()
}
