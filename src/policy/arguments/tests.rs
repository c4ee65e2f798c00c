//! Typed argument tests: reading declarations from a schema, converting values of every type,
//! and the tables of path and URL forms that must be refused or kept.

use std::str::FromStr;

use cedar_policy::EntityTypeName;
use serde_json::json;

use super::*;

fn action_type() -> EntityTypeName {
    EntityTypeName::from_str("Mcp::Action").unwrap()
}

const BASE: &str = "scopes: Set<String>, client_id: String, protocol_version: String, session_id: String, batch: Bool, task_id?: String";

fn schema(declarations: &str) -> String {
    format!(
        r#"namespace Mcp {{
  type Path = String; type Url = String; type Json = String;
  type Pair = {{ a: Long, b?: Bool }};
  entity User; entity Tool;
  type Context = {{ {BASE} }};
  action "tools/call" appliesTo {{ principal: User, resource: Tool, context: Context }};
  {declarations}
}}"#
    )
}

fn declared(args: &str) -> Record {
    let text = schema(&format!(
        r#"action "tools/call/s/t" in [Action::"tools/call"] appliesTo {{ principal: User, resource: Tool, context: {{ {BASE}, arguments: {{ {args} }} }} }};"#
    ));
    let tools = declared_tools(&text, &action_type()).unwrap();
    tools["s/t"].arguments.clone()
}

#[test]
fn declarations_are_read_with_their_types() {
    let r = declared(
        "n: Long, d?: decimal, b: Bool, s: String, p: Path, u: Url, j: Json, set: Set<Long>, nested: { x: String, y?: Long }, pair: Pair",
    );
    let ty = |name: &str| {
        r.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .unwrap()
    };
    assert_eq!(ty("n").ty, ArgType::Long);
    assert!(!ty("d").required);
    assert_eq!(ty("d").ty, ArgType::Decimal);
    assert_eq!(ty("p").ty, ArgType::Path);
    assert_eq!(ty("u").ty, ArgType::Url);
    assert_eq!(ty("j").ty, ArgType::Json);
    assert_eq!(ty("set").ty, ArgType::Set(Box::new(ArgType::Long)));
    let ArgType::Record(nested) = ty("nested").ty else {
        panic!("a record")
    };
    assert_eq!(nested.fields.len(), 2);
    // A common type is followed to its definition.
    let ArgType::Record(pair) = ty("pair").ty else {
        panic!("a record")
    };
    assert_eq!(pair.fields.len(), 2);
}

#[test]
fn bad_declarations_are_load_errors() {
    let action = |head: &str, context: &str| {
        schema(&format!(
            r#"action {head} appliesTo {{ principal: User, resource: Tool, context: {context} }};"#
        ))
    };
    let with_args = format!("{{ {BASE}, arguments: {{ a: Long }} }}");
    let cases = [
        (
            action(r#""tools/call/only-server""#, &with_args),
            "tools/call/<server id>/<tool name>",
        ),
        (
            action(r#""tools/call/s/t""#, &with_args),
            "must be declared `in [Action::\"tools/call\"]`",
        ),
        (
            action(r#""tools/call/s/t" in [Action::"tools/call"]"#, "Context"),
            "`arguments` record",
        ),
        (
            action(
                r#""tools/call/s/t" in [Action::"tools/call"]"#,
                &format!("{{ {BASE}, arguments: {{ who: User }} }}"),
            ),
            "argument `arguments.who`",
        ),
    ];
    for (text, want) in cases {
        let e = declared_tools(&text, &action_type())
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}\nwanted {want}");
    }
}

fn convert_json(record: &Record, value: serde_json::Value) -> Result<String, ArgumentError> {
    let map = value.as_object().unwrap().clone();
    convert(&map, record).map(|e| format!("{e:?}"))
}

#[test]
fn values_are_converted_or_refused_by_type() {
    let r = declared(
        "n: Long, d?: decimal, b?: Bool, s?: String, j?: Json, set?: Set<Long>, nested?: { x: String }",
    );
    assert!(convert_json(&r, json!({"n": 9})).is_ok());
    // Python writes integral floats as 9.0.
    assert!(convert_json(&r, json!({"n": 9.0})).is_ok());
    assert!(convert_json(&r, json!({"n": 9, "d": 12.5, "b": true, "s": "x", "j": {"any": [1]}, "set": [1, 2], "nested": {"x": "y"}})).is_ok());
    // Optional fields may be null (absent).
    assert!(convert_json(&r, json!({"n": 1, "s": null})).is_ok());

    let err = |v| convert_json(&r, v).unwrap_err();
    assert_eq!(
        err(json!({})),
        ArgumentError::Missing {
            path: "arguments.n".into()
        }
    );
    assert!(matches!(
        err(json!({"n": "9"})),
        ArgumentError::WrongType { .. }
    ));
    assert!(matches!(
        err(json!({"n": 9.5})),
        ArgumentError::WrongType { .. }
    ));
    assert!(matches!(
        err(json!({"n": u64::MAX})),
        ArgumentError::OutOfRange { .. }
    ));
    assert!(matches!(
        err(json!({"n": 1e300})),
        ArgumentError::OutOfRange { .. }
    ));
    assert!(matches!(
        err(json!({"n": 1, "d": 1.23456})),
        ArgumentError::WrongType { .. }
    ));
    assert!(matches!(
        err(json!({"n": 1, "d": "1.5"})),
        ArgumentError::WrongType { .. }
    ));
    assert!(
        matches!(err(json!({"n": 1, "set": [1, "2"]})), ArgumentError::WrongType { path, .. } if path == "arguments.set[]")
    );
    assert!(
        matches!(err(json!({"n": 1, "nested": {"x": 1}})), ArgumentError::WrongType { path, .. } if path == "arguments.nested.x")
    );
    // Undeclared fields, at the top and nested, never named in the message.
    let e = err(json!({"n": 1, "secret_name": 1}));
    assert_eq!(
        e,
        ArgumentError::Undeclared {
            within: "arguments".into()
        }
    );
    assert!(!e.to_string().contains("secret_name"));
    assert!(
        matches!(err(json!({"n": 1, "nested": {"x": "y", "path": "/etc"}})), ArgumentError::Undeclared { within } if within == "arguments.nested")
    );
}

#[test]
fn decimals_keep_four_places_and_their_range() {
    let d = |v: serde_json::Value| decimal(&v, "d");
    assert_eq!(d(json!(12)).unwrap(), "12.0");
    assert_eq!(d(json!(-12.5)).unwrap(), "-12.5");
    assert_eq!(d(json!(0.0001)).unwrap(), "0.0001");
    assert!(d(json!(0.00001)).is_err());
    assert!(d(json!(922337203685477.0)).is_ok());
    assert!(d(json!(1e20)).is_err());
}

#[test]
fn paths_with_traversal_forms_are_refused() {
    for ok in [
        "/srv/shared/a.txt",
        "/srv/shared/dir/",
        "relative/file",
        "/srv/shared/100%.txt",
        "/srv/shared/a..b",
        "/srv/shared/...",
    ] {
        assert!(is_safe_path(ok), "{ok} should be accepted");
    }
    for bad in [
        "",
        "..",
        "/srv/shared/../etc/passwd",
        "/srv/shared/..",
        "/srv/shared/./a",
        "./a",
        "/srv/shared/%2e%2e/etc",
        "/srv/shared/%2E%2E/etc",
        "/srv/shared/.%2e/etc",
        "/srv/shared/..%2fetc",
        "/srv/shared/%252e%252e/etc",
        "/srv/shared/..\\..\\etc",
        "//srv/shared/a",
        "/srv//shared/a",
        "/srv/shared/a\u{0}b",
        "/srv/shared/a\nb",
    ] {
        assert!(!is_safe_path(bad), "{bad:?} should be refused");
    }
}

#[test]
fn urls_must_be_canonical_without_user_info_or_dot_segments() {
    for ok in [
        "https://api.example.com/v1/items",
        "https://api.example.com/",
        "https://api.example.com:8443/a?q=1#f",
        "mailto:someone@example.com",
    ] {
        assert!(is_safe_url(ok), "{ok} should be accepted");
    }
    for bad in [
        "not a url",
        "/relative/path",
        "https://api.example.com/v1/../admin",
        "https://api.example.com/v1/%2e%2e/admin",
        "https://api.example.com/v1/..%2fadmin",
        "https://api.example.com/v1/%252e%252e/admin",
        "https://api.example.com\\v1",
        "https://API.example.com/",
        "https://api.example.com",
        "https://api.example.com@evil.example/",
        "https://user:pass@api.example.com/",
    ] {
        assert!(!is_safe_url(bad), "{bad:?} should be refused");
    }
}

#[test]
fn samples_fit_their_declaration() {
    let r = declared(
        "n: Long, d?: decimal, p: Path, u: Url, j: Json, set: Set<String>, nested: { x: Bool }",
    );
    assert!(convert(&sample(&r), &r).is_ok());
}
