//! `mcp-authz policy scaffold`: Cedar schema declarations, one typed action per tool, from a
//! saved `tools/list` result. [`generate`] is a pure function of the parsed file, so the tests
//! drive it without files; [`scaffold`] is the command around it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Map, Value};

use super::EXIT_CONFIG;

/// The vocabulary's base context (`type Context` in policies/schema.cedarschema), field by
/// field: Cedar cannot extend a record type, and mcp-authz requires a tool's context to be
/// exactly these fields plus `arguments`. A unit test keeps this in step with the schema.
const BASE_CONTEXT: &[&str] = &[
    "scopes: Set<String>",
    "client_id: String",
    "protocol_version: String",
    "session_id: String",
    "batch: Bool",
    "task_id?: String",
];

/// Identifiers Cedar reserves; attributes with these names must be written quoted.
const RESERVED: &[&str] = &[
    "true", "false", "if", "then", "else", "in", "is", "has", "like", "__cedar",
];

/// JSON Schema `format`s that name an absolute URL.
const URL_FORMATS: &[&str] = &["uri", "url", "iri"];

/// Last words of a string property's name that make it a filesystem path (a guess, marked
/// `check:` in the output). Whole words, so `profile` or `xpath` are not paths.
const PATH_WORDS: &[&str] = &[
    "path",
    "filepath",
    "dirpath",
    "pathname",
    "file",
    "dir",
    "workdir",
    "directory",
    "folder",
];

/// The same for an array's items, whose property is usually named in the plural.
const PATHS_WORDS: &[&str] = &[
    "paths",
    "filepaths",
    "files",
    "dirs",
    "directories",
    "folders",
];

/// Descriptions longer than this are cut in the comment above a tool's action.
const DESCRIPTION_CHARS: usize = 100;

/// Why no declarations could be generated. The command exits with code 64 on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is not JSON: {source}")]
    NotJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}`: {error}")]
    Invalid { path: PathBuf, error: Invalid },
    /// `--server` refused, before the file is read.
    #[error(transparent)]
    Server(Invalid),
}

/// What is wrong with the server id or with a parsed `tools/list` result.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the server id is empty")]
    EmptyServer,
    #[error("server id `{0}` contains `/`; tool actions are `tools/call/<server id>/<tool>`")]
    SlashInServer(String),
    #[error("a JSON-RPC error response, not a tools/list result")]
    RpcError,
    #[error(
        "not a tools/list result: expected a JSON-RPC response with `result.tools`, \
         an object with `tools`, or an array of tools"
    )]
    NotToolsList,
    #[error("tool {index} (counting from 0) is not an object")]
    ToolNotObject { index: usize },
    #[error("tool {index} (counting from 0) has no `name`")]
    NoName { index: usize },
    #[error("tool `{0}` is listed twice")]
    Duplicate(String),
    #[error("tool `{0}` has no `inputSchema` object")]
    NoInputSchema(String),
    #[error("tool `{tool}`: `{at}` {problem}")]
    Malformed {
        tool: String,
        /// Where in the tool, e.g. `inputSchema.properties.filters.required`.
        at: String,
        problem: &'static str,
    },
}

// === the command ===

/// `policy scaffold --from-tools FILE --server ID [--out FILE]`.
pub(super) fn scaffold(from_tools: &Path, server: &str, out: Option<&Path>) -> ExitCode {
    match read_and_generate(from_tools, server).and_then(|text| match out {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(path) => std::fs::write(path, &text).map_err(|source| ScaffoldError::Write {
            path: path.to_owned(),
            source,
        }),
    }) {
        Ok(()) => {
            if let Some(path) = out {
                println!("wrote `{}`", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn read_and_generate(path: &Path, server: &str) -> Result<String, ScaffoldError> {
    check_server(server).map_err(ScaffoldError::Server)?;
    let text = std::fs::read_to_string(path).map_err(|source| ScaffoldError::Read {
        path: path.to_owned(),
        source,
    })?;
    let doc: Value = serde_json::from_str(&text).map_err(|source| ScaffoldError::NotJson {
        path: path.to_owned(),
        source,
    })?;
    generate(&doc, server, &path.display().to_string()).map_err(|error| ScaffoldError::Invalid {
        path: path.to_owned(),
        error,
    })
}

// === the generator ===

/// The Cedar declarations for every tool of `doc` (a `tools/list` response, its result, or
/// the tools array), for server `server`; `source` names the file in the header comment.
/// Tools come in file order and arguments in `properties` order (serde_json keeps it, with
/// its `preserve_order` feature), so the same file always gives the same text.
pub fn generate(doc: &Value, server: &str, source: &str) -> Result<String, Invalid> {
    check_server(server)?;
    let (tools, paged) = tools_of(doc)?;
    let mut out = header(source, server, tools.len(), paged);
    let mut seen = std::collections::HashSet::new();
    for (index, tool) in tools.iter().enumerate() {
        let tool = tool.as_object().ok_or(Invalid::ToolNotObject { index })?;
        let name = match tool.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n,
            _ => return Err(Invalid::NoName { index }),
        };
        if !seen.insert(name) {
            return Err(Invalid::Duplicate(name.clone()));
        }
        let schema = match tool.get("inputSchema") {
            Some(Value::Object(s)) => s,
            _ => return Err(Invalid::NoInputSchema(name.clone())),
        };
        let arguments = record(schema, "inputSchema").map_err(|m| Invalid::Malformed {
            tool: name.clone(),
            at: m.at,
            problem: m.problem,
        })?;
        out.push('\n');
        action(&mut out, server, name, tool.get("description"), &arguments);
    }
    Ok(out)
}

/// A server id that can sit in `tools/call/<server id>/<tool>` without making it ambiguous.
fn check_server(server: &str) -> Result<(), Invalid> {
    if server.is_empty() {
        Err(Invalid::EmptyServer)
    } else if server.contains('/') {
        Err(Invalid::SlashInServer(server.to_owned()))
    } else {
        Ok(())
    }
}

/// The tools array, and whether the result says more pages follow (`nextCursor`).
fn tools_of(doc: &Value) -> Result<(&[Value], bool), Invalid> {
    let result = match doc {
        Value::Array(tools) => return Ok((tools.as_slice(), false)),
        Value::Object(o) if o.contains_key("error") && !o.contains_key("result") => {
            return Err(Invalid::RpcError);
        }
        Value::Object(o) => o.get("result").unwrap_or(doc),
        _ => return Err(Invalid::NotToolsList),
    };
    match result.get("tools") {
        Some(Value::Array(tools)) => Ok((
            tools.as_slice(),
            result.get("nextCursor").is_some_and(|c| !c.is_null()),
        )),
        _ => Err(Invalid::NotToolsList),
    }
}

fn header(source: &str, server: &str, count: usize, paged: bool) -> String {
    let mut h = format!(
        "  // Generated by `mcp-authz policy scaffold` from `{}`,\n\
         \x20 // server `{}`, {count} tool{}. Goes inside `namespace Mcp {{ ... }}` in the policy\n\
         \x20 // directory's schema.cedarschema.\n",
        comment_text(source),
        comment_text(server),
        if count == 1 { "" } else { "s" },
    );
    if paged {
        h.push_str(
            "  // The file is one page of tools (it has a `nextCursor`): tools on other pages are\n\
             \x20 // not declared.\n",
        );
    }
    h.push_str(
        "  // Each tool is an action of its own, a member of Action::\"tools/call\", whose\n\
         \x20 // context.arguments declares every argument the tool takes: a call with an\n\
         \x20 // argument not declared here is refused (400). Match tool calls in policies with\n\
         \x20 // `action in Mcp::Action::\"tools/call\"`: `==` does not match a tool declared here.\n\
         \x20 // Path: a filesystem path (mcp-authz refuses dot segments, backslashes, repeated\n\
         \x20 // slashes and percent-encoding in it); Url: an absolute URL (the same);\n\
         \x20 // Json: any JSON value, seen by policies as its JSON text.\n\
         \x20 // `check:` marks a guess to review.\n",
    );
    h
}

fn action(
    out: &mut String,
    server: &str,
    tool: &str,
    description: Option<&Value>,
    arguments: &[Attr],
) {
    if let Some(line) = description
        .and_then(Value::as_str)
        .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()))
    {
        let mut line = comment_text(line);
        if let Some((cut, _)) = line.char_indices().nth(DESCRIPTION_CHARS) {
            line.truncate(cut);
            line.push_str("...");
        }
        let _ = writeln!(out, "  // {line}");
    }
    let _ = writeln!(
        out,
        "  action {} in [Action::\"tools/call\"]",
        quoted(&format!("tools/call/{server}/{tool}"))
    );
    out.push_str(
        "    appliesTo {\n      principal: User,\n      resource: Tool,\n      context: {\n",
    );
    for field in BASE_CONTEXT {
        let _ = writeln!(out, "        {field},");
    }
    out.push_str("        arguments: ");
    render_record(out, arguments, 8);
    out.push(',');
    if arguments.is_empty() {
        out.push_str(" // no arguments: a call with any is refused");
    }
    out.push_str("\n      },\n    };\n");
}

// === JSON Schema to Cedar types ===

/// A Cedar type, as the scaffold writes it.
#[derive(Debug, PartialEq)]
enum CedarType {
    /// `String`, `Long`, `Bool`, `decimal`, `Path`, `Url`, `Json`.
    Named(&'static str),
    Set(Box<CedarType>),
    Record(Vec<Attr>),
}

/// One attribute of a record.
#[derive(Debug, PartialEq)]
struct Attr {
    name: String,
    required: bool,
    ty: CedarType,
    /// Written as a trailing comment: why this type, or what Cedar makes of the value.
    note: Option<String>,
}

/// A JSON Schema that cannot be read, and where it sits.
struct Malformed {
    at: String,
    problem: &'static str,
}

/// The record for an object schema with `properties` (missing: none) and `required`.
fn record(schema: &Map<String, Value>, at: &str) -> Result<Vec<Attr>, Malformed> {
    let properties = match schema.get("properties") {
        None => return Ok(Vec::new()),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err(Malformed {
                at: format!("{at}.properties"),
                problem: "is not an object",
            });
        }
    };
    let required: Vec<&str> = match schema.get("required") {
        None => Vec::new(),
        Some(Value::Array(names)) => names
            .iter()
            .map(Value::as_str)
            .collect::<Option<_>>()
            .ok_or_else(|| Malformed {
                at: format!("{at}.required"),
                problem: "is not an array of names",
            })?,
        Some(_) => {
            return Err(Malformed {
                at: format!("{at}.required"),
                problem: "is not an array of names",
            });
        }
    };
    properties
        .iter()
        .map(|(name, schema)| {
            let (ty, note) = property(name, schema, false, &format!("{at}.properties.{name}"))?;
            Ok(Attr {
                name: name.clone(),
                required: required.contains(&name.as_str()),
                ty,
                note,
            })
        })
        .collect()
}

/// The Cedar type of one property (or, with `item`, of an array's items), with its note.
fn property(
    name: &str,
    schema: &Value,
    item: bool,
    at: &str,
) -> Result<(CedarType, Option<String>), Malformed> {
    let json = |why: &str| Ok((CedarType::Named("Json"), Some(format!("Json: {why}"))));
    let Some(schema) = schema.as_object() else {
        return json("no schema");
    };
    let ty = schema.get("type");
    let stringly = match ty {
        None => true,
        Some(t) => t.as_str() == Some("string"),
    };
    if let Some(Value::Array(values)) = schema.get("enum")
        && stringly
        && values.iter().all(Value::is_string)
    {
        let listed: Vec<String> = values.iter().map(Value::to_string).collect();
        return Ok((
            CedarType::Named("String"),
            Some(format!("one of {}", listed.join(", "))),
        ));
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if schema.contains_key(combinator) {
            return json(combinator);
        }
    }
    let t = match ty {
        None => return json("no type"),
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return json("several types"),
    };
    Ok(match t {
        "string" => {
            if let Some(format) = schema
                .get("format")
                .and_then(Value::as_str)
                .filter(|f| URL_FORMATS.contains(f))
            {
                (
                    CedarType::Named("Url"),
                    Some(format!("check: Url from format \"{format}\"")),
                )
            } else if looks_like_path(name, item) {
                (
                    CedarType::Named("Path"),
                    Some("check: Path guessed from the name".to_owned()),
                )
            } else {
                (CedarType::Named("String"), None)
            }
        }
        "integer" => (
            CedarType::Named("Long"),
            Some("Long: a 64-bit signed integer".to_owned()),
        ),
        "number" => (
            CedarType::Named("decimal"),
            Some("decimal: at most 4 decimal places".to_owned()),
        ),
        "boolean" => (CedarType::Named("Bool"), None),
        "array" => match schema.get("items") {
            Some(items @ Value::Object(_)) => {
                let (ty, note) = property(name, items, true, &format!("{at}.items"))?;
                (CedarType::Set(Box::new(ty)), note)
            }
            _ => return json("array without an `items` schema"),
        },
        "object" => match schema.get("properties") {
            Some(Value::Object(p)) if !p.is_empty() => {
                (CedarType::Record(record(schema, at)?), None)
            }
            _ => return json("object without properties"),
        },
        other => return json(&format!("type \"{}\"", comment_text(other))),
    })
}

/// Whether a string property is a filesystem path, judged by the last word of its name
/// (split at `_`, `-`, `.` and camelCase humps): `path`, `file_path`, `outputDir`, ...
fn looks_like_path(name: &str, item: bool) -> bool {
    let mut start = 0;
    let mut previous: Option<char> = None;
    for (i, c) in name.char_indices() {
        if matches!(c, '_' | '-' | '.' | ' ') {
            start = i + c.len_utf8();
        } else if c.is_uppercase()
            && previous.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit())
        {
            start = i;
        }
        previous = Some(c);
    }
    let last = name.get(start..).unwrap_or(name).to_lowercase();
    PATH_WORDS.contains(&last.as_str()) || (item && PATHS_WORDS.contains(&last.as_str()))
}

// === rendering ===

/// `{ ... }` with one attribute a line at `indent + 2`, the closing brace at `indent`.
fn render_record(out: &mut String, attrs: &[Attr], indent: usize) {
    if attrs.is_empty() {
        out.push_str("{}");
        return;
    }
    out.push_str("{\n");
    for a in attrs {
        let _ = write!(
            out,
            "{:w$}{}{}: ",
            "",
            attr_name(&a.name),
            if a.required { "" } else { "?" },
            w = indent + 2
        );
        render_type(out, &a.ty, indent + 2);
        out.push(',');
        if let Some(note) = &a.note {
            let _ = write!(out, " // {}", comment_text(note));
        }
        out.push('\n');
    }
    let _ = write!(out, "{:indent$}}}", "");
}

fn render_type(out: &mut String, ty: &CedarType, indent: usize) {
    match ty {
        CedarType::Named(n) => out.push_str(n),
        CedarType::Set(item) => {
            out.push_str("Set<");
            render_type(out, item, indent);
            out.push('>');
        }
        CedarType::Record(attrs) => render_record(out, attrs, indent),
    }
}

/// An attribute name as is when it is a Cedar identifier, else quoted.
fn attr_name(name: &str) -> String {
    let mut chars = name.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED.contains(&name);
    if identifier {
        name.to_owned()
    } else {
        quoted(name)
    }
}

/// A Cedar string literal. Control characters are escaped too: Cedar reads a bare carriage
/// return in a literal as an error, and a newline would make the output hard to read.
fn quoted(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{{{:x}}}", u32::from(c));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Text that stays inside one `//` comment: a line break would end it.
fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
