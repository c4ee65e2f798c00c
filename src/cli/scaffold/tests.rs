//! Scaffold tests: the JSON Schema to Cedar mapping for every type, quoting, the input shapes,
//! refusals, and that the output parses against the shipped schema.

use cedar_policy::{PolicySet, Schema, ValidationMode, Validator};
use serde_json::json;

use super::*;

const SHIPPED_SCHEMA: &str = include_str!("../../../policies/schema.cedarschema");

/// The declarations of one tool `t` with this inputSchema, arguments record only.
fn arguments(input_schema: Value) -> String {
    let text = generate(
        &json!([{ "name": "t", "inputSchema": input_schema }]),
        "fs",
        "f",
    )
    .unwrap();
    let start = text.find("        arguments: ").unwrap();
    let end = text.rfind("\n      },\n    };").unwrap();
    text[start..end].to_owned()
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required })
}

/// The shipped schema with `generated` inside its namespace, and the common types the
/// typed-arguments vocabulary declares when the shipped schema does not yet.
fn with_shipped(generated: &str) -> Schema {
    let close = SHIPPED_SCHEMA.rfind('}').unwrap();
    let mut types = String::new();
    if !SHIPPED_SCHEMA.contains("type Path") {
        types.push_str("  type Path = String;\n  type Url = String;\n  type Json = String;\n");
    }
    let text = format!(
        "{}{types}{generated}{}",
        &SHIPPED_SCHEMA[..close],
        &SHIPPED_SCHEMA[close..]
    );
    match Schema::from_cedarschema_str(&text) {
        Ok((schema, _)) => schema,
        Err(e) => panic!("{e:?}\n{text}"),
    }
}

#[test]
fn every_type() {
    let schema = object(
        json!({
            "s": { "type": "string" },
            "n": { "type": "integer" },
            "x": { "type": "number" },
            "b": { "type": "boolean" },
            "home": { "type": "string", "format": "uri" },
            "site": { "type": "string", "format": "iri" },
            "id": { "type": "string", "format": "uuid" },
            "tags": { "type": "array", "items": { "type": "string" } },
            "counts": { "type": "array", "items": { "type": "integer" } },
            "any": { "type": "array" },
            "free": { "type": "object" },
            "either": { "anyOf": [{ "type": "string" }, { "type": "null" }] },
            "one": { "oneOf": [{ "type": "string" }] },
            "all": { "allOf": [{ "$ref": "#/$defs/x" }] },
            "listed": { "type": ["string", "null"] },
            "untyped": { "description": "anything" },
            "nothing": { "type": "null" },
            "yes": true,
        }),
        &[],
    );
    assert_eq!(
        arguments(schema.clone()),
        "        arguments: {\n\
         \x20         s?: String,\n\
         \x20         n?: Long, // Long: a 64-bit signed integer\n\
         \x20         x?: decimal, // decimal: at most 4 decimal places\n\
         \x20         b?: Bool,\n\
         \x20         home?: Url, // check: Url from format \"uri\"\n\
         \x20         site?: Url, // check: Url from format \"iri\"\n\
         \x20         id?: String,\n\
         \x20         tags?: Set<String>,\n\
         \x20         counts?: Set<Long>, // Long: a 64-bit signed integer\n\
         \x20         any?: Json, // Json: array without an `items` schema\n\
         \x20         free?: Json, // Json: object without properties\n\
         \x20         either?: Json, // Json: anyOf\n\
         \x20         one?: Json, // Json: oneOf\n\
         \x20         all?: Json, // Json: allOf\n\
         \x20         listed?: Json, // Json: several types\n\
         \x20         untyped?: Json, // Json: no type\n\
         \x20         nothing?: Json, // Json: type \"null\"\n\
         \x20         yes?: Json, // Json: no schema\n\
         \x20       },"
    );
    with_shipped(&generate(&json!([{ "name": "t", "inputSchema": schema }]), "fs", "f").unwrap());
}

#[test]
fn paths_are_guessed_by_the_last_word_of_the_name() {
    for name in [
        "path",
        "file_path",
        "filePath",
        "outputFile",
        "target-dir",
        "directory",
        "workdir",
        "source.folder",
        "PATH",
    ] {
        let text = arguments(object(json!({ name: { "type": "string" } }), &[name]));
        assert!(
            text.contains(": Path, // check: Path guessed from the name"),
            "{name}: {text}"
        );
    }
    for name in [
        "profile",
        "xpath",
        "pathology",
        "filename",
        "dirty",
        "URLPath2x",
    ] {
        let text = arguments(object(json!({ name: { "type": "string" } }), &[name]));
        assert!(text.contains(": String,"), "{name}: {text}");
    }
    // Plurals for the items of arrays, and a URL format wins over the name.
    let text = arguments(object(
        json!({
            "paths": { "type": "array", "items": { "type": "string" } },
            "files": { "type": "string" },
            "path": { "type": "array", "items": { "type": "string" } },
            "file_url": { "type": "string", "format": "uri" },
        }),
        &[],
    ));
    assert!(text.contains("paths?: Set<Path>, // check: Path"), "{text}");
    assert!(text.contains("files?: String,"), "{text}");
    assert!(text.contains("path?: Set<Path>, // check: Path"), "{text}");
    assert!(text.contains("file_url?: Url, // check: Url"), "{text}");
}

#[test]
fn required_nesting_and_sets_of_records() {
    let schema = object(
        json!({
            "query": { "type": "string" },
            "options": {
                "type": "object",
                "properties": {
                    "limit": { "type": "integer" },
                    "sort": {
                        "type": "object",
                        "properties": { "by": { "type": "string" } },
                        "required": ["by"],
                    },
                },
                "required": ["sort"],
            },
            "edits": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": { "old": { "type": "string" }, "new": { "type": "string" } },
                    "required": ["old", "new"],
                },
            },
        }),
        &["query", "options", "not_a_property"],
    );
    assert_eq!(
        arguments(schema.clone()),
        "        arguments: {\n\
         \x20         query: String,\n\
         \x20         options: {\n\
         \x20           limit?: Long, // Long: a 64-bit signed integer\n\
         \x20           sort: {\n\
         \x20             by: String,\n\
         \x20           },\n\
         \x20         },\n\
         \x20         edits?: Set<{\n\
         \x20           old: String,\n\
         \x20           new: String,\n\
         \x20         }>,\n\
         \x20       },"
    );
    with_shipped(&generate(&json!([{ "name": "t", "inputSchema": schema }]), "fs", "f").unwrap());
}

#[test]
fn string_enums_list_their_values() {
    let text = arguments(object(
        json!({
            "units": { "type": "string", "enum": ["metric", "imperial"] },
            "mode": { "enum": ["a\"b", "c"] },
            "level": { "type": "integer", "enum": [1, 2] },
            "mixed": { "enum": ["a", 1] },
        }),
        &["units"],
    ));
    assert!(
        text.contains("units: String, // one of \"metric\", \"imperial\"\n"),
        "{text}"
    );
    assert!(
        text.contains("mode?: String, // one of \"a\\\"b\", \"c\"\n"),
        "{text}"
    );
    assert!(text.contains("level?: Long, // Long:"), "{text}");
    assert!(text.contains("mixed?: Json, // Json: no type"), "{text}");
}

#[test]
fn names_that_are_not_identifiers_are_quoted() {
    let schema = object(
        json!({
            "my-field": { "type": "string" },
            "in": { "type": "string" },
            "like": { "type": "boolean" },
            "__cedar": { "type": "string" },
            "1st": { "type": "string" },
            "é": { "type": "string" },
            "a\"b\\c\nd": { "type": "string" },
            "": { "type": "string" },
            "type": { "type": "string" },
            "_ok9": { "type": "string" },
        }),
        &["my-field"],
    );
    assert_eq!(
        arguments(schema.clone()),
        "        arguments: {\n\
         \x20         \"my-field\": String,\n\
         \x20         \"in\"?: String,\n\
         \x20         \"like\"?: Bool,\n\
         \x20         \"__cedar\"?: String,\n\
         \x20         \"1st\"?: String,\n\
         \x20         \"é\"?: String,\n\
         \x20         \"a\\\"b\\\\c\\u{a}d\"?: String,\n\
         \x20         \"\"?: String,\n\
         \x20         type?: String,\n\
         \x20         _ok9?: String,\n\
         \x20       },"
    );
    with_shipped(&generate(&json!([{ "name": "t", "inputSchema": schema }]), "fs", "f").unwrap());
}

#[test]
fn tool_names_are_escaped_in_the_action_id() {
    let doc = json!([
        { "name": "say \"hi\"\\now", "description": "Line one.\nLine two.", "inputSchema": { "type": "object" } },
        { "name": "a/b.c", "inputSchema": { "type": "object", "properties": {} } },
    ]);
    let text = generate(&doc, "fs", "f").unwrap();
    assert!(
        text.contains(
            "  // Line one.\n  action \"tools/call/fs/say \\\"hi\\\"\\\\now\" in [Action::\"tools/call\"]\n"
        ),
        "{text}"
    );
    assert!(text.contains("action \"tools/call/fs/a/b.c\" in"), "{text}");
    assert!(
        text.contains("        arguments: {}, // no arguments: a call with any is refused\n"),
        "{text}"
    );
    let schema = with_shipped(&text);
    let ids: Vec<String> = schema
        .actions()
        .map(|a| a.id().unescaped().to_owned())
        .collect();
    assert!(
        ids.contains(&"tools/call/fs/say \"hi\"\\now".to_owned()),
        "{ids:?}"
    );
}

#[test]
fn long_descriptions_are_cut_and_kept_on_one_line() {
    let long = format!("  \n{}\r tail\nsecond", "x".repeat(150));
    let text = generate(
        &json!([{ "name": "t", "description": long, "inputSchema": {} }]),
        "fs",
        "dir/\nfile",
    )
    .unwrap();
    assert!(
        text.contains(&format!("\n  // {}...\n  action", "x".repeat(100))),
        "{text}"
    );
    assert!(
        text.starts_with("  // Generated by `mcp-authz policy scaffold` from `dir/ file`,\n"),
        "{text}"
    );
    with_shipped(&text);
}

#[test]
fn the_three_input_shapes_give_the_same_declarations() {
    let tools = json!([{ "name": "t", "inputSchema": { "type": "object" } }]);
    let bare = generate(&tools, "fs", "f").unwrap();
    let result = generate(&json!({ "tools": tools }), "fs", "f").unwrap();
    let response = generate(
        &json!({ "jsonrpc": "2.0", "id": 1, "result": { "tools": tools } }),
        "fs",
        "f",
    )
    .unwrap();
    assert_eq!(bare, result);
    assert_eq!(bare, response);
    assert!(
        bare.contains("// server `fs`, 1 tool. Goes inside"),
        "{bare}"
    );
    assert!(!bare.contains("nextCursor"));
    let paged = generate(
        &json!({ "result": { "tools": tools, "nextCursor": "2" } }),
        "fs",
        "f",
    )
    .unwrap();
    assert!(
        paged.contains("one page of tools (it has a `nextCursor`)"),
        "{paged}"
    );
}

#[test]
fn refusals() {
    let ok = json!([{ "name": "t", "inputSchema": {} }]);
    let cases = [
        (ok.clone(), "", Invalid::EmptyServer),
        (ok.clone(), "a/b", Invalid::SlashInServer("a/b".into())),
        (
            json!({ "jsonrpc": "2.0", "id": 1, "error": { "code": -32601, "message": "no" } }),
            "fs",
            Invalid::RpcError,
        ),
        (json!({ "result": {} }), "fs", Invalid::NotToolsList),
        (json!({ "tools": {} }), "fs", Invalid::NotToolsList),
        (json!("tools"), "fs", Invalid::NotToolsList),
        (json!([1]), "fs", Invalid::ToolNotObject { index: 0 }),
        (
            json!([{ "name": "t", "inputSchema": {} }, { "inputSchema": {} }]),
            "fs",
            Invalid::NoName { index: 1 },
        ),
        (
            json!([{ "name": "", "inputSchema": {} }]),
            "fs",
            Invalid::NoName { index: 0 },
        ),
        (
            json!([{ "name": 7, "inputSchema": {} }]),
            "fs",
            Invalid::NoName { index: 0 },
        ),
        (
            json!([{ "name": "t", "inputSchema": {} }, { "name": "t", "inputSchema": {} }]),
            "fs",
            Invalid::Duplicate("t".into()),
        ),
        (
            json!([{ "name": "t" }]),
            "fs",
            Invalid::NoInputSchema("t".into()),
        ),
        (
            json!([{ "name": "t", "inputSchema": "object" }]),
            "fs",
            Invalid::NoInputSchema("t".into()),
        ),
        (
            json!([{ "name": "t", "inputSchema": { "properties": [] } }]),
            "fs",
            Invalid::Malformed {
                tool: "t".into(),
                at: "inputSchema.properties".into(),
                problem: "is not an object",
            },
        ),
        (
            json!([{ "name": "t", "inputSchema": { "properties": {}, "required": "a" } }]),
            "fs",
            Invalid::Malformed {
                tool: "t".into(),
                at: "inputSchema.required".into(),
                problem: "is not an array of names",
            },
        ),
        (
            json!([{ "name": "t", "inputSchema": { "properties": { "o": { "type": "array", "items": {
                "type": "object", "properties": { "a": {} }, "required": [1] } } } } }]),
            "fs",
            Invalid::Malformed {
                tool: "t".into(),
                at: "inputSchema.properties.o.items.required".into(),
                problem: "is not an array of names",
            },
        ),
    ];
    for (doc, server, expected) in cases {
        assert_eq!(generate(&doc, server, "f").unwrap_err(), expected, "{doc}");
    }
    assert_eq!(
        Invalid::NoName { index: 1 }.to_string(),
        "tool 1 (counting from 0) has no `name`"
    );
}

/// The generated context is the vocabulary's `type Context`, field for field.
#[test]
fn base_context_matches_the_vocabulary() {
    let start = SHIPPED_SCHEMA.find("type Context = {").unwrap();
    let body = &SHIPPED_SCHEMA[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
    let fields: Vec<String> = body
        .lines()
        .map(|l| l.split("//").next().unwrap().trim().trim_end_matches(','))
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(fields, BASE_CONTEXT);
}

/// Policies can use the typed arguments, and `action in Action::"tools/call"` covers the
/// declared tools.
#[test]
fn policies_validate_against_the_generated_actions() {
    let doc = json!({ "tools": [
        { "name": "read_file", "inputSchema": { "type": "object", "properties": {
            "path": { "type": "string" }, "max_bytes": { "type": "integer" },
            "ratio": { "type": "number" } }, "required": ["path"] } },
    ] });
    let schema = with_shipped(&generate(&doc, "fs", "f").unwrap());
    let policies: PolicySet = r#"
        permit (principal, action == Mcp::Action::"tools/call/fs/read_file", resource)
        when {
          context.arguments.path like "/srv/shared/*" &&
          (if context.arguments has max_bytes then context.arguments.max_bytes <= 1048576
           else true) &&
          (if context.arguments has ratio then context.arguments.ratio.lessThan(decimal("0.5"))
           else true)
        };
        forbid (principal, action in Mcp::Action::"tools/call", resource)
        unless { principal.tenant == resource.tenant };
    "#
    .parse()
    .unwrap();
    let result = Validator::new(schema).validate(&policies, ValidationMode::Strict);
    assert!(result.validation_passed(), "{result:?}");
}
