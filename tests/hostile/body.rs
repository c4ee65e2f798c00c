//! Body tricks: deep nesting, huge batches, keys repeated through escapes or case folding,
//! lone surrogates, NUL and invalid UTF-8, numbers beyond i64 and f64, a byte order mark,
//! charsets, compression, shapes that are not JSON-RPC as MCP sends it, and HTTP methods.

use crate::harness::{Case, Category, Ctx, Expect, PING, Req, case};

fn call(name: &str, arguments: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{name}","arguments":{arguments}}}}}"#
    )
}

pub fn cases(ctx: &Ctx) -> Vec<Case> {
    let mut out = Vec::new();
    let g = ctx.good();
    let mut add = |name: &str, req: Req, expect: Expect| {
        out.push(case(Category::Body, name, req.bearer(&g), expect));
    };
    let bad = Expect::JsonRpc(400, -32600);
    let bad_params = Expect::JsonRpc(400, -32602);
    let media = Expect::Plain(415, "unsupported_media_type");
    let too_large = Expect::Plain(413, "payload_too_large");
    let method = Expect::Plain(405, "method_not_allowed");
    let nested = |open: &str, close: &str, n: usize| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"a":{}1{}}}}}"#,
            open.repeat(n),
            close.repeat(n)
        )
    };

    // --- nesting (mcp::MAX_DEPTH = 64) ---
    add(
        "control: ping params nested 50 deep",
        Req::post(nested("[", "]", 50)),
        Expect::Allow,
    );
    add(
        "arrays nested 100 deep",
        Req::post(nested("[", "]", 100)),
        bad,
    );
    add(
        "arrays nested 10,000 deep",
        Req::post(nested("[", "]", 10_000)),
        bad,
    );
    add(
        "objects nested 1,000 deep",
        Req::post(nested(r#"{"a":"#, "}", 1_000)),
        bad,
    );
    add(
        "200,000 unclosed brackets",
        Req::post("[".repeat(200_000)),
        bad,
    );
    add(
        "tool arguments nested 100 deep",
        Req::post(call(
            "get_forecast",
            &format!(
                r#"{{"city":{}"Paris"{}}}"#,
                "[".repeat(100),
                "]".repeat(100)
            ),
        )),
        bad,
    );

    // --- batches (mcp::MAX_BATCH = 64) ---
    let batch = |n: usize| format!("[{}]", vec![PING; n].join(","));
    add(
        "control: a batch of 64 pings",
        Req::post(batch(64)),
        Expect::Allow,
    );
    add("a batch of 65 pings", Req::post(batch(65)), bad);
    add("a batch of 10,000 pings", Req::post(batch(10_000)), bad);
    add("an empty batch", Req::post("[]"), bad);
    add(
        "a batch inside a batch",
        Req::post(format!("[{}]", batch(2))),
        bad,
    );
    add("a batch of numbers", Req::post("[1,2,3]"), bad);
    add(
        "a batch with a null",
        Req::post(format!("[{PING},null]")),
        bad,
    );
    add(
        "a batch hiding a dangerous call among pings",
        Req::post(format!(
            "[{},{}]",
            vec![PING; 40].join(","),
            call("delete_everything", "{}")
        )),
        Expect::Forbidden,
    );
    add(
        "a batch hiding a path outside /srv/shared",
        Req::post(format!(
            "[{PING},{}]",
            call("read_file", r#"{"path":"/etc/passwd"}"#)
        )),
        Expect::Forbidden,
    );
    add(
        "a batch with a repeated key in one element",
        Req::post(format!(
            r#"[{PING},{{"jsonrpc":"2.0","id":2,"method":"ping","method":"tools/list"}}]"#
        )),
        bad,
    );

    // --- repeated keys, through escapes and case ---
    for (label, body) in [
        (
            "method twice",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#.to_owned(),
        ),
        (
            "method twice through \\u006d",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","\u006dethod":"tools/call"}"#.to_owned(),
        ),
        (
            "method twice, all escaped",
            r#"{"jsonrpc":"2.0","id":1,"\u006d\u0065\u0074\u0068\u006f\u0064":"tools/call","method":"ping"}"#.to_owned(),
        ),
        (
            "params twice through \\u0070",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris"}},"\u0070arams":{"name":"delete_everything"}}"#.to_owned(),
        ),
        (
            "id twice",
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#.to_owned(),
        ),
        (
            "jsonrpc twice",
            r#"{"jsonrpc":"1.0","jsonrpc":"2.0","id":1,"method":"ping"}"#.to_owned(),
        ),
        (
            "params.name twice through \\u0061",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_forecast","n\u0061me":"delete_everything","arguments":{"city":"Paris"}}}"#.to_owned(),
        ),
        (
            "arguments.path twice through \\u0070",
            call("read_file", r#"{"path":"/srv/shared/a","\u0070ath":"/etc/passwd"}"#),
        ),
        (
            "a nested argument key twice",
            call(
                "write_file",
                r#"{"path":"/srv/shared/a","content":"x","options":{"mode":"a","mode":"w"}}"#,
            ),
        ),
    ] {
        add(&format!("repeated key: {label}"), Req::post(body), bad);
    }
    for (label, arguments) in [
        (
            "path and Path",
            r#"{"path":"/srv/shared/a","Path":"/etc/passwd"}"#,
        ),
        (
            "path and PATH",
            r#"{"path":"/srv/shared/a","PATH":"/etc/passwd"}"#,
        ),
        (
            "patsh and pat\u{17f}h (long s)",
            r#"{"path":"/srv/shared/a","patsh":"y","pat\u017fh":"x"}"#,
        ),
        (
            "city and dotless-i c\u{131}ty",
            r#"{"city":"Paris","c\u0131ty":"Berlin"}"#,
        ),
    ] {
        let tool = if arguments.contains("city") {
            "get_forecast"
        } else {
            "read_file"
        };
        add(
            &format!("case-folded argument keys: {label}"),
            Req::post(call(tool, arguments)),
            bad,
        );
    }

    // --- surrogates, NUL, bytes that are not UTF-8 ---
    for (label, body) in [
        (
            "a lone high surrogate in method",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping\ud800"}"#,
        ),
        (
            "a lone low surrogate in method",
            r#"{"jsonrpc":"2.0","id":1,"method":"\udc00ping"}"#,
        ),
        (
            "a reversed surrogate pair",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":"\ude00\ud83d"}}"#,
        ),
        (
            "a lone surrogate in a tool name",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_forecast\ud800"}}"#,
        ),
        (
            "a lone surrogate in a key",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"\ud800":1}}"#,
        ),
    ] {
        add(label, Req::post(body), bad);
    }
    for (label, body) in [
        ("a raw NUL after the message", [PING.as_bytes(), b"\0"].concat()),
        ("a raw NUL inside a string", br#"{"jsonrpc":"2.0","id":1,"method":"pi\0ng"}"#.to_vec()),
        ("a raw newline inside a string", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"pi\nng\"}".to_vec()),
        ("an invalid UTF-8 byte", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"a\":\"\xff\"}}".to_vec()),
        ("an overlong UTF-8 slash", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools\xc0\xafcall\"}".to_vec()),
        ("a CESU-8 surrogate", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"a\":\"\xed\xa0\x80\"}}".to_vec()),
        ("UTF-16LE with its BOM", {
            let mut v = vec![0xFF, 0xFE];
            v.extend(PING.encode_utf16().flat_map(u16::to_le_bytes));
            v
        }),
        ("a UTF-8 byte order mark", [b"\xef\xbb\xbf".as_slice(), PING.as_bytes()].concat()),
    ] {
        add(label, Req::post(body), bad);
    }
    add(
        "an escaped NUL in a tool name",
        Req::post(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_forecast\u0000"}}"#,
        ),
        bad,
    );
    add(
        "an escaped NUL in method",
        Req::post(r#"{"jsonrpc":"2.0","id":1,"method":"ping\u0000"}"#),
        Expect::Forbidden,
    );

    // --- numbers ---
    for (label, id) in [
        ("beyond f64", "1e400"),
        ("beyond u64", "99999999999999999999"),
        ("below i64", "-9223372036854775809"),
        ("fractional", "1.5"),
        ("an exponent", "1e2"),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("hex", "0x10"),
        ("a leading zero", "01"),
        ("null", "null"),
        ("an object", "{}"),
        ("a boolean", "true"),
    ] {
        add(
            &format!("id {label}"),
            Req::post(format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#)),
            bad,
        );
    }
    add(
        "control: id u64::MAX",
        Req::post(r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#),
        Expect::Allow,
    );
    add(
        "days beyond f64",
        Req::post(call("get_forecast", r#"{"city":"Paris","days":1e400}"#)),
        bad,
    );
    for (label, days) in [
        ("beyond i64", "9223372036854775808"),
        ("1e308", "1e308"),
        ("fractional", "3.5"),
        ("as text", "\"3\""),
    ] {
        add(
            &format!("days {label}"),
            Req::post(call(
                "get_forecast",
                &format!(r#"{{"city":"Paris","days":{days}}}"#),
            )),
            bad_params,
        );
    }
    add(
        "days i64::MIN",
        Req::post(call(
            "get_forecast",
            r#"{"city":"Paris","days":-9223372036854775808}"#,
        )),
        Expect::Forbidden,
    );

    // --- media types and charsets (RFC 8259 s8.1: UTF-8 only) ---
    let typed = |ct: &str| {
        Req::ping()
            .without("content-type")
            .header("content-type", ct)
    };
    for ct in [
        "application/json; charset=utf-16",
        "application/json; charset=iso-8859-1",
        "application/json; charset=utf-7",
        "application/json;charset=utf-8;charset=utf-16",
        "application/json; charset",
        "text/json",
        "text/plain",
        "application/json-seq",
        "application/jsonx",
        "application/json, text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
    ] {
        add(&format!("content-type {ct:?}"), typed(ct), media);
    }
    add(
        "no content-type",
        Req::ping().without("content-type"),
        media,
    );
    add(
        "two content-type headers",
        Req::ping().header("content-type", "application/json"),
        media,
    );
    for ct in ["APPLICATION/JSON", "application/json; charset=\"UTF-8\""] {
        add(
            &format!("control: content-type {ct:?}"),
            typed(ct),
            Expect::Allow,
        );
    }

    // --- compression ---
    for ce in [
        "gzip",
        "x-gzip",
        "br",
        "deflate",
        "compress",
        "zstd",
        "GZIP",
        "identity, gzip",
        "gzip, identity",
    ] {
        add(
            &format!("content-encoding {ce}"),
            Req::ping().header("content-encoding", ce),
            media,
        );
    }
    add(
        "a real gzip body",
        Req::post(vec![
            0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x03, 0x00,
        ])
        .header("content-encoding", "gzip"),
        media,
    );
    add(
        "control: content-encoding identity",
        Req::ping().header("content-encoding", "identity"),
        Expect::Allow,
    );

    // --- shapes ---
    for (label, body) in [
        ("null", "null"),
        ("a number", "1"),
        ("a string", "\"ping\""),
        ("true", "true"),
        ("an empty object", "{}"),
        ("two objects", "{}{}"),
        ("trailing garbage", &format!("{PING} x") as &str),
        (
            "a trailing comma",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping",}"#,
        ),
        (
            "a comment",
            "// hi\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
        ),
        ("single quotes", "{'jsonrpc':'2.0','id':1,'method':'ping'}"),
        ("whitespace only", "   \n\t "),
        (
            "jsonrpc with a space",
            r#"{"jsonrpc":"2.0 ","id":1,"method":"ping"}"#,
        ),
        (
            "jsonrpc a number",
            r#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#,
        ),
        ("jsonrpc 1.0", r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
        ("no jsonrpc", r#"{"id":1,"method":"ping"}"#),
        ("method a number", r#"{"jsonrpc":"2.0","id":1,"method":1}"#),
        ("method null", r#"{"jsonrpc":"2.0","id":1,"method":null}"#),
        (
            "params an array",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[]}"#,
        ),
        (
            "params a string",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#,
        ),
        (
            "params null",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":null}"#,
        ),
        (
            "a request with a result",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#,
        ),
        (
            "a response without an id",
            r#"{"jsonrpc":"2.0","result":{}}"#,
        ),
        (
            "a response with result and error",
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"x"}}"#,
        ),
        (
            "a response error not an object",
            r#"{"jsonrpc":"2.0","id":1,"error":"x"}"#,
        ),
        (
            "a notification with an id",
            r#"{"jsonrpc":"2.0","id":1,"method":"notifications/initialized"}"#,
        ),
        (
            "a tools/call without an id",
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris"}}}"#,
        ),
        (
            "a tools/call without params",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
        ),
        (
            "a tool name that is a number",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":1}}"#,
        ),
        ("arguments an array", &call("get_forecast", r#"["Paris"]"#)),
        (
            "arguments a string",
            &call("get_forecast", r#""city=Paris""#),
        ),
    ] {
        add(&format!("shape: {label}"), Req::post(body), bad);
    }
    add("an empty POST body", Req::post(""), bad);
    add(
        "control: a client response to a server request",
        Req::post(r#"{"jsonrpc":"2.0","id":5,"result":{}}"#),
        Expect::Allow,
    );
    add("a GET with a body", Req::post(PING).method("GET"), bad);
    add(
        "a DELETE with a body",
        Req::post(PING).method("DELETE"),
        bad,
    );

    // --- HTTP methods (RFC 9110 s9.1: case-sensitive) ---
    for m in [
        "PUT", "PATCH", "post", "Post", "HEAD", "OPTIONS", "CONNECT", "TRACE", "", "POST ",
    ] {
        add(&format!("method {m:?}"), Req::ping().method(m), method);
    }

    // --- sizes (limits.max_body_bytes = 1 MiB, Envoy's buffer) ---
    let padded = |n: usize| {
        let head = r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":""#;
        let tail = r#""}}"#;
        format!("{head}{}{tail}", "x".repeat(n - head.len() - tail.len()))
    };
    add(
        "exactly 1 MiB (the buffer was full)",
        Req::post(padded(1 << 20)),
        too_large,
    );
    add(
        "5 MiB (over gRPC's default limit)",
        Req::post(padded(5 << 20)),
        too_large,
    );
    add(
        "control: 1 MiB less one byte",
        Req::post(padded((1 << 20) - 1)),
        Expect::Allow,
    );
    out
}
