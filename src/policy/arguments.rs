//! Typed tool arguments. A tool declared in the schema as an action of its own,
//! `action "tools/call/<server id>/<tool name>" in [Action::"tools/call"]`, has its call
//! arguments in `context.arguments`, converted to the Cedar types its context declares. Policies
//! can then compare numbers as numbers and guard nested fields.
//!
//! The rules, and why:
//! - A value that does not fit its declared type (wrong JSON type, a required field missing, a
//!   number out of range, more than four decimal places for `decimal`) is refused: the request
//!   is a 400 with a JSON-RPC invalid-params error. A silent fallback (a string, a default)
//!   would let a policy compare something other than what the tool receives.
//! - A field the declaration does not name is refused too (fail closed): a policy cannot guard
//!   what it cannot see, and a nested copy of a guarded field (`{"path": ok, "opts": {"path":
//!   bad}}`) would otherwise reach the tool unguarded. `null` for an optional field is absent.
//! - Three named string types carry a guarantee that plain strings cannot:
//!   - `Path` (a filesystem path): no `.` or `..` segment, no backslash, no repeated slash, no
//!     percent-encoded octet (`%2e`, `%2f`...), no control character. With those gone, a prefix
//!     test such as `context.arguments.path like "/srv/shared/*"` means what it says whatever
//!     the tool does with the path (it may join, decode or normalise it; none of those can climb
//!     out). A path that needs one of those forms is refused rather than rewritten, so the policy
//!     and the tool always see the same bytes.
//!   - `Url` (an absolute URL): it must already be in the WHATWG URL parser's canonical form
//!     (so no dot segments, plain or `%2e`-encoded, no backslashes, a lowercase host), carry no
//!     user info (`https://good.example@evil.example/` reads as one host and goes to another),
//!     and its percent-decoded path must have no dot segment either (a server that decodes
//!     `%2f` would otherwise see `..` where the parser saw none).
//!   - `Json`: any JSON value, as its JSON text: the way to declare a free-form field.
//! - Calls to tools that are not declared are evaluated as the action `tools/call`, with the
//!   top-level arguments as tags of the tool entity, as before.

use std::collections::HashMap;

use cedar_policy::{EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use serde_json::{Map, Value};

/// The prefix of a per-tool action id: `tools/call/<server id>/<tool name>`.
pub const TOOL_ACTION_PREFIX: &str = "tools/call/";

/// A declared argument type.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgType {
    String,
    Long,
    Bool,
    Decimal,
    Path,
    Url,
    Json,
    Set(Box<ArgType>),
    Record(Record),
}

/// A record type: its fields in declaration order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub fields: Vec<(String, Field)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub ty: ArgType,
    pub required: bool,
}

/// A tool declared as an action of its own.
#[derive(Debug, Clone)]
pub struct DeclaredTool {
    pub action: EntityUid,
    pub arguments: Record,
}

/// Why a schema's per-tool action cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeclarationError {
    #[error("cannot read the schema's declarations: {0}")]
    Schema(String),
    #[error("action `{action}`: its id must be `tools/call/<server id>/<tool name>`")]
    BadId { action: String },
    #[error("action `{action}` must be declared `in [Action::\"tools/call\"]`")]
    NotAToolCall { action: String },
    #[error("action `{action}`: its context must have an `arguments` record")]
    NoArguments { action: String },
    #[error("action `{action}`: argument `{path}` has a type tool arguments cannot have ({ty})")]
    Unsupported {
        action: String,
        path: String,
        ty: String,
    },
}

/// Why a call's arguments do not fit the tool's declaration. The messages name declared fields
/// only, never a value or a name the client chose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgumentError {
    #[error("argument `{path}` must be {expected}")]
    WrongType {
        path: String,
        expected: &'static str,
    },
    #[error("argument `{path}` is required")]
    Missing { path: String },
    #[error("an argument the tool does not declare was sent (in `{within}`)")]
    Undeclared { within: String },
    #[error("argument `{path}` is out of range for {expected}")]
    OutOfRange {
        path: String,
        expected: &'static str,
    },
    #[error(
        "argument `{path}` is not an acceptable path (dot segments, backslashes, repeated slashes, percent-encoded octets and control characters are refused)"
    )]
    UnsafePath { path: String },
    #[error(
        "argument `{path}` is not an acceptable URL (it must be absolute, canonical, without user info or dot segments)"
    )]
    UnsafeUrl { path: String },
}

// === impl DeclaredTool ===

/// The per-tool actions of a schema, by `<server id>/<tool name>`. `schema_text` is the schema
/// in Cedar's human-readable syntax (already known to parse).
pub fn declared_tools(
    schema_text: &str,
    action_type: &EntityTypeName,
) -> Result<HashMap<String, DeclaredTool>, DeclarationError> {
    let (fragment, _) = cedar_policy::SchemaFragment::from_cedarschema_str(schema_text)
        .map_err(|e| DeclarationError::Schema(e.to_string()))?;
    let json = fragment
        .to_json_value()
        .map_err(|e| DeclarationError::Schema(e.to_string()))?;
    let mut out = HashMap::new();
    let Some(namespaces) = json.as_object() else {
        return Ok(out);
    };
    for (namespace, body) in namespaces {
        let common = body.get("commonTypes").and_then(Value::as_object);
        let Some(actions) = body.get("actions").and_then(Value::as_object) else {
            continue;
        };
        for (id, action) in actions {
            let Some(tool) = id.strip_prefix(TOOL_ACTION_PREFIX) else {
                continue;
            };
            // Only the vocabulary's namespace: its actions are the ones requests name.
            if namespace != "Mcp" {
                continue;
            }
            if !tool
                .split_once('/')
                .is_some_and(|(s, t)| !s.is_empty() && !t.is_empty())
            {
                return Err(DeclarationError::BadId { action: id.clone() });
            }
            let member_of_tools_call = action
                .get("memberOf")
                .and_then(Value::as_array)
                .is_some_and(|list| {
                    list.iter().any(|m| {
                        m.get("id").and_then(Value::as_str) == Some("tools/call")
                            && m.get("type")
                                .and_then(Value::as_str)
                                .is_none_or(|t| t == "Action" || t == "Mcp::Action")
                    })
                });
            if !member_of_tools_call {
                return Err(DeclarationError::NotAToolCall { action: id.clone() });
            }
            let resolver = Resolver { common, action: id };
            let context = action
                .get("appliesTo")
                .and_then(|a| a.get("context"))
                .map(|c| resolver.resolve(c))
                .transpose()?;
            let arguments = context
                .as_ref()
                .and_then(|c| c.get("attributes"))
                .and_then(|a| a.get("arguments"))
                .ok_or_else(|| DeclarationError::NoArguments { action: id.clone() })?;
            let ArgType::Record(arguments) = resolver.arg_type(arguments, "arguments")? else {
                return Err(DeclarationError::NoArguments { action: id.clone() });
            };
            let uid =
                EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(id.as_str()));
            out.insert(
                tool.to_owned(),
                DeclaredTool {
                    action: uid,
                    arguments,
                },
            );
        }
    }
    Ok(out)
}

/// Resolves common-type references of one action's context (Cedar's JSON schema form).
struct Resolver<'a> {
    common: Option<&'a Map<String, Value>>,
    action: &'a str,
}

impl Resolver<'_> {
    /// Follows `{"type": "<common type>"}` references to their definition.
    fn resolve(&self, ty: &Value) -> Result<Value, DeclarationError> {
        let mut ty = ty.clone();
        // Common types may refer to each other; a schema that parsed has no cycles, and the
        // bound keeps a surprise from looping.
        for _ in 0..32 {
            let name = match ty.get("type").and_then(Value::as_str) {
                Some("EntityOrCommon") => ty.get("name").and_then(Value::as_str),
                Some(t) if !matches!(t, "Record" | "Set" | "Entity" | "Extension") => Some(t),
                _ => None,
            };
            let Some(found) = name.and_then(|n| self.common_type(n)) else {
                return Ok(ty);
            };
            let required = ty.get("required").cloned();
            ty = found.clone();
            if let (Some(r), Some(obj)) = (required, ty.as_object_mut()) {
                obj.insert("required".into(), r);
            }
        }
        Ok(ty)
    }

    fn common_type(&self, name: &str) -> Option<&Value> {
        // The named string types keep their names: they are what the conversion checks.
        let short = name.strip_prefix("Mcp::").unwrap_or(name);
        if matches!(short, "Path" | "Url" | "Json") {
            return None;
        }
        self.common?.get(short)
    }

    fn arg_type(&self, ty: &Value, path: &str) -> Result<ArgType, DeclarationError> {
        let ty = self.resolve(ty)?;
        let unsupported = |what: &str| DeclarationError::Unsupported {
            action: self.action.to_owned(),
            path: path.to_owned(),
            ty: what.to_owned(),
        };
        let kind = ty.get("type").and_then(Value::as_str).unwrap_or("");
        let name = match kind {
            "EntityOrCommon" | "Extension" => ty.get("name").and_then(Value::as_str).unwrap_or(""),
            other => other,
        };
        Ok(match name.strip_prefix("Mcp::").unwrap_or(name) {
            "String" => ArgType::String,
            "Long" => ArgType::Long,
            "Boolean" | "Bool" => ArgType::Bool,
            "decimal" => ArgType::Decimal,
            "Path" => ArgType::Path,
            "Url" => ArgType::Url,
            "Json" => ArgType::Json,
            "Set" => {
                let element = ty
                    .get("element")
                    .ok_or_else(|| unsupported("a set without an element type"))?;
                ArgType::Set(Box::new(self.arg_type(element, &format!("{path}[]"))?))
            }
            "Record" => {
                let mut record = Record::default();
                if let Some(attrs) = ty.get("attributes").and_then(Value::as_object) {
                    for (field, fty) in attrs {
                        let required = fty.get("required").and_then(Value::as_bool) != Some(false);
                        let ty = self.arg_type(fty, &format!("{path}.{field}"))?;
                        record.fields.push((field.clone(), Field { ty, required }));
                    }
                }
                ArgType::Record(record)
            }
            other => return Err(unsupported(other)),
        })
    }
}

// === conversion ===

/// `arguments` converted to the declared record type, as a Cedar record value.
pub fn convert(
    arguments: &Map<String, Value>,
    declared: &Record,
) -> Result<RestrictedExpression, ArgumentError> {
    record(arguments, declared, "arguments")
}

fn record(
    map: &Map<String, Value>,
    declared: &Record,
    path: &str,
) -> Result<RestrictedExpression, ArgumentError> {
    if map
        .keys()
        .any(|k| !declared.fields.iter().any(|(name, _)| name == k))
    {
        return Err(ArgumentError::Undeclared {
            within: path.to_owned(),
        });
    }
    let mut out = Vec::with_capacity(declared.fields.len());
    for (name, field) in &declared.fields {
        let here = format!("{path}.{name}");
        match map.get(name) {
            None | Some(Value::Null) if !field.required => {}
            None => return Err(ArgumentError::Missing { path: here }),
            Some(v) => out.push((name.clone(), value(v, &field.ty, &here)?)),
        }
    }
    // INVARIANT: the names come from the declaration's fields, which are distinct.
    RestrictedExpression::new_record(out).map_err(|_| ArgumentError::WrongType {
        path: path.to_owned(),
        expected: "an object",
    })
}

fn value(v: &Value, ty: &ArgType, path: &str) -> Result<RestrictedExpression, ArgumentError> {
    let wrong = |expected: &'static str| ArgumentError::WrongType {
        path: path.to_owned(),
        expected,
    };
    Ok(match ty {
        ArgType::String => {
            RestrictedExpression::new_string(v.as_str().ok_or(wrong("a string"))?.to_owned())
        }
        ArgType::Bool => RestrictedExpression::new_bool(v.as_bool().ok_or(wrong("a boolean"))?),
        ArgType::Long => RestrictedExpression::new_long(long(v, path)?),
        ArgType::Decimal => RestrictedExpression::new_decimal(decimal(v, path)?),
        ArgType::Path => {
            let s = v.as_str().ok_or(wrong("a string"))?;
            if !is_safe_path(s) {
                return Err(ArgumentError::UnsafePath {
                    path: path.to_owned(),
                });
            }
            RestrictedExpression::new_string(s.to_owned())
        }
        ArgType::Url => {
            let s = v.as_str().ok_or(wrong("a string"))?;
            if !is_safe_url(s) {
                return Err(ArgumentError::UnsafeUrl {
                    path: path.to_owned(),
                });
            }
            RestrictedExpression::new_string(s.to_owned())
        }
        ArgType::Json => RestrictedExpression::new_string(v.to_string()),
        ArgType::Set(element) => {
            let items = v.as_array().ok_or(wrong("an array"))?;
            let element_path = format!("{path}[]");
            let items = items
                .iter()
                .map(|i| value(i, element, &element_path))
                .collect::<Result<Vec<_>, _>>()?;
            RestrictedExpression::new_set(items)
        }
        ArgType::Record(declared) => {
            record(v.as_object().ok_or(wrong("an object"))?, declared, path)?
        }
    })
}

/// A JSON integer within Cedar's `Long` (i64). `9.0` is 9: some JSON writers (Python's) write
/// integral floats that way.
fn long(v: &Value, path: &str) -> Result<i64, ArgumentError> {
    let Value::Number(n) = v else {
        return Err(ArgumentError::WrongType {
            path: path.to_owned(),
            expected: "an integer",
        });
    };
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    let out_of_range = || ArgumentError::OutOfRange {
        path: path.to_owned(),
        expected: "a 64-bit integer",
    };
    if n.as_u64().is_some() {
        return Err(out_of_range());
    }
    match n.as_f64() {
        // 2^63 as f64 is exactly representable; anything at or beyond it does not fit.
        Some(f)
            if f.fract() == 0.0
                && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) =>
        {
            Ok(f as i64)
        }
        Some(f) if f.fract() == 0.0 => Err(out_of_range()),
        _ => Err(ArgumentError::WrongType {
            path: path.to_owned(),
            expected: "an integer",
        }),
    }
}

/// A JSON number as Cedar `decimal` text (`-12.5`, `3.0`): at most four decimal places and
/// within the range Cedar holds (an i64 of ten-thousandths). Exponents are refused rather than
/// expanded.
fn decimal(v: &Value, path: &str) -> Result<String, ArgumentError> {
    let wrong = || ArgumentError::WrongType {
        path: path.to_owned(),
        expected: "a number with at most four decimal places",
    };
    let Value::Number(n) = v else {
        return Err(wrong());
    };
    let text = n.to_string();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || !all_digits(frac) {
        return Err(wrong());
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 4 {
        return Err(wrong());
    }
    // Cedar's decimal is an i64 count of ten-thousandths.
    let scaled = format!("{int}{frac:0<4}");
    let fits = scaled.parse::<i128>().is_ok_and(|v| {
        let v = if sign == "-" { -v } else { v };
        i64::try_from(v).is_ok()
    });
    if !fits {
        return Err(ArgumentError::OutOfRange {
            path: path.to_owned(),
            expected: "decimal",
        });
    }
    let frac = if frac.is_empty() { "0" } else { frac };
    Ok(format!("{sign}{int}.{frac}"))
}

/// See the module docs: no dot segment, backslash, repeated slash, percent-encoded octet or
/// control character. Empty is refused too (it names nothing).
pub fn is_safe_path(s: &str) -> bool {
    if s.is_empty() || s.contains('\\') || s.contains("//") || s.chars().any(char::is_control) {
        return false;
    }
    if has_percent_octet(s) {
        return false;
    }
    !s.split('/').any(|seg| seg == "." || seg == "..")
}

/// See the module docs: absolute, canonical, no user info, no dot segment once decoded.
pub fn is_safe_url(s: &str) -> bool {
    let Ok(url) = url::Url::parse(s) else {
        return false;
    };
    if url.as_str() != s || !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    if url.cannot_be_a_base() {
        // `mailto:`, `data:`...: no path to climb; the canonical form is all there is.
        return true;
    }
    // Decoded once, as a server would: a second layer of encoding is refused outright.
    let decoded = percent_encoding::percent_decode_str(url.path()).decode_utf8_lossy();
    !decoded.contains('\\')
        && !has_percent_octet(&decoded)
        && !decoded.split('/').any(|seg| seg == "." || seg == "..")
}

/// A value of `record` with every field present: what the load-time vocabulary check builds a
/// request from, so a declaration Cedar would not accept fails the load, not a request.
pub fn sample(record: &Record) -> Map<String, Value> {
    fn one(ty: &ArgType) -> Value {
        match ty {
            ArgType::String => Value::from("s"),
            ArgType::Long => Value::from(1),
            ArgType::Bool => Value::from(true),
            ArgType::Decimal => Value::from(1.5),
            ArgType::Path => Value::from("/probe"),
            ArgType::Url => Value::from("https://probe.invalid/"),
            ArgType::Json => Value::Null,
            ArgType::Set(element) => Value::Array(vec![one(element)]),
            ArgType::Record(r) => Value::Object(sample(r)),
        }
    }
    record
        .fields
        .iter()
        .map(|(name, field)| (name.clone(), one(&field.ty)))
        .collect()
}

fn has_percent_octet(s: &str) -> bool {
    s.as_bytes()
        .windows(3)
        .any(|w| matches!(w, [b'%', a, b] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests;
