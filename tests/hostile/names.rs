//! MCP method names and tool, prompt, resource and task names with control characters, bidi
//! overrides, zero-width and other invisible characters, and homoglyphs.

use serde_json::json;

use crate::harness::{Case, Category, Ctx, Expect, Req, case};

fn message(method: &str, params: serde_json::Value) -> String {
    json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params}).to_string()
}

/// Characters a name must not carry: controls, bidi controls, invisible formatting.
const INVISIBLE: &[(&str, &str)] = &[
    ("NUL", "\u{0}"),
    ("LF", "\n"),
    ("CR", "\r"),
    ("TAB", "\t"),
    ("ESC (ANSI colour)", "\u{1b}[31m"),
    ("DEL", "\u{7f}"),
    ("NEL", "\u{85}"),
    ("RLO bidi override", "\u{202e}"),
    ("LRE bidi embedding", "\u{202a}"),
    ("RLI bidi isolate", "\u{2067}"),
    ("PDI", "\u{2069}"),
    ("RLM", "\u{200f}"),
    ("Arabic letter mark", "\u{61c}"),
    ("zero-width space", "\u{200b}"),
    ("zero-width non-joiner", "\u{200c}"),
    ("zero-width joiner", "\u{200d}"),
    ("word joiner", "\u{2060}"),
    ("invisible times", "\u{2062}"),
    ("soft hyphen", "\u{ad}"),
    ("BOM", "\u{feff}"),
    ("line separator", "\u{2028}"),
    ("Mongolian vowel separator", "\u{180e}"),
    ("Hangul filler", "\u{3164}"),
    ("tag letter", "\u{e0041}"),
];

pub fn cases(ctx: &Ctx) -> Vec<Case> {
    let mut out = Vec::new();
    let g = ctx.good();
    let mut add = |name: &str, body: String, expect: Expect| {
        out.push(case(
            Category::Names,
            name,
            Req::post(body).bearer(&g),
            expect,
        ));
    };
    let bad = Expect::JsonRpc(400, -32600);
    let tool = |name: &str| {
        message(
            "tools/call",
            json!({"name": name, "arguments": {"city": "Paris"}}),
        )
    };

    // --- method names: anything not exactly a known method is an unknown method (403) ---
    for (label, m) in [
        ("RLO after", "tools/call\u{202e}"),
        ("RLO before", "\u{202e}tools/call"),
        ("zero-width space inside", "tools\u{200b}/call"),
        ("Cyrillic o", "t\u{43e}\u{43e}ls/call"),
        ("Cyrillic a", "tools/c\u{430}ll"),
        ("fullwidth slash", "tools\u{ff0f}call"),
        ("upper case", "TOOLS/CALL"),
        ("trailing space", "tools/call "),
        ("double slash", "tools//call"),
        ("trailing newline", "tools/call\n"),
        ("variation selector", "ping\u{fe0f}"),
        ("BOM", "\u{feff}ping"),
        ("line separator", "initialize\u{2028}"),
        ("empty", ""),
        ("combining acute", "pi\u{301}ng"),
    ] {
        add(
            &format!("method with {label}"),
            message(m, json!({})),
            Expect::Forbidden,
        );
    }

    // --- tool names ---
    for (label, c) in INVISIBLE {
        add(
            &format!("tool name with {label}"),
            tool(&format!("get_forecast{c}")),
            bad,
        );
    }
    add("tool name of 129 characters", tool(&"a".repeat(129)), bad);
    add("empty tool name", tool(""), bad);
    for (label, n) in [
        ("Cyrillic o", "get_f\u{43e}recast"),
        ("fullwidth letters", "\u{ff47}\u{ff45}\u{ff54}_forecast"),
        ("combining acute", "get_forecast\u{301}"),
        ("variation selector", "get_forecast\u{fe0f}"),
        ("dotless i", "get_forecast_\u{131}"),
        ("capitals", "Get_Forecast"),
        ("a trailing space", "get_forecast "),
        ("a dangerous tool's homoglyph", "delete_everyth\u{456}ng"),
        ("a server prefix", "demo/get_forecast"),
        ("128 characters", &"a".repeat(128)),
    ] {
        add(
            &format!("unknown tool: {label}"),
            tool(n),
            Expect::Forbidden,
        );
    }

    // --- prompt names, resource URIs, completion references, task ids ---
    for (label, c) in INVISIBLE.iter().take(14) {
        add(
            &format!("prompt name with {label}"),
            message("prompts/get", json!({"name": format!("greeting{c}")})),
            bad,
        );
    }
    add(
        "prompt name of 257 characters",
        message("prompts/get", json!({"name": "p".repeat(257)})),
        bad,
    );
    for (label, uri) in [
        ("a space", "file:///srv/a b"),
        ("a leading space", " file:///srv/a"),
        ("a newline", "file:///srv/a\nb"),
        ("RLO", "file:///srv/\u{202e}txt.exe"),
        ("zero-width space", "file:///srv/\u{200b}a"),
        ("NUL", "file:///srv/a\u{0}"),
        ("no-break space", "file:///srv/a\u{a0}b"),
        ("ideographic space", "file:///srv/a\u{3000}b"),
        ("2,049 characters", &format!("file:///{}", "a".repeat(2041))),
        ("empty", ""),
    ] {
        add(
            &format!("resource URI with {label}"),
            message("resources/read", json!({"uri": uri})),
            bad,
        );
    }
    add(
        "completion prompt ref with RLO",
        message(
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "greet\u{202e}"}, "argument": {"name": "a", "value": "b"}}),
        ),
        bad,
    );
    add(
        "completion resource ref with a space",
        message(
            "completion/complete",
            json!({"ref": {"type": "ref/resource", "uri": "file:///a b"}, "argument": {"name": "a", "value": "b"}}),
        ),
        bad,
    );
    add(
        "completion ref of an unknown type",
        message(
            "completion/complete",
            json!({"ref": {"type": "ref/tool", "name": "get_forecast"}, "argument": {"name": "a", "value": "b"}}),
        ),
        bad,
    );
    for (label, id) in [
        ("RLO", json!("task\u{202e}")),
        ("LF", json!("task\n1")),
        ("empty", json!("")),
        ("a number", json!(1)),
    ] {
        add(
            &format!("task id with {label}"),
            message("tasks/get", json!({"taskId": id})),
            bad,
        );
    }
    add(
        "an argument key with RLO (undeclared)",
        message(
            "tools/call",
            json!({"name": "read_file", "arguments": {"path": "/srv/shared/a", "pa\u{202e}th": "/etc/passwd"}}),
        ),
        Expect::JsonRpc(400, -32602),
    );
    add(
        "a path argument with a NUL",
        message(
            "tools/call",
            json!({"name": "read_file", "arguments": {"path": "/srv/shared/a\u{0}/../../etc/passwd"}}),
        ),
        Expect::JsonRpc(400, -32602),
    );
    add(
        "a path argument climbing out",
        message(
            "tools/call",
            json!({"name": "read_file", "arguments": {"path": "/srv/shared/../../etc/passwd"}}),
        ),
        Expect::JsonRpc(400, -32602),
    );
    add(
        "control: a homoglyph prompt name is just another prompt (every prompt is readable)",
        message("prompts/get", json!({"name": "gr\u{435}eting"})),
        Expect::Allow,
    );
    out
}
