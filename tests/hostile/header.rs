//! Header tricks: `Bearer` spellings and whitespace, repeated and mixed-case `Authorization`,
//! tokens outside the header, underscores, spoofed identity headers, and `mcp-method`,
//! `mcp-name` and `mcp-param-*` disagreeing with the body or encoded.

use mcp_authz::bearer::BearerError as B;
use mcp_authz::token::TokenError as T;
use serde_json::json;

use crate::harness::{Case, Category, Ctx, Expect, Req, case};

const FORECAST: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_forecast","arguments":{"city":"Paris","days":3}}}"#;
const BATCH: &str =
    r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#;

pub fn cases(ctx: &Ctx) -> Vec<Case> {
    let mut out = Vec::new();
    let mut add = |name: &str, req: Req, expect: Expect| {
        out.push(case(Category::Header, name, req, expect));
    };
    let g = ctx.good();
    let other = ctx.mint(&ctx.claims_with(|c| {
        c.insert("sub".into(), json!("mallory"));
    }));
    let ping = || Req::ping().secret(&g);
    let dup = Expect::InvalidRequest(B::Duplicate.description());
    let malformed = Expect::InvalidRequest(B::Malformed.description());
    let not_in_header = Expect::InvalidRequest(B::NotInHeader.description());
    let mismatch = Expect::JsonRpc(400, -32020);
    let invalid_request = Expect::JsonRpc(400, -32600);

    // --- Bearer spellings (RFC 6750 s2.1, the scheme case-insensitive per RFC 9110 s11.1) ---
    for (label, value) in [
        ("lower-case bearer", format!("bearer {g}")),
        ("upper-case BEARER", format!("BEARER {g}")),
        ("mixed-case BeArEr", format!("BeArEr {g}")),
        ("two spaces after Bearer", format!("Bearer  {g}")),
        ("trailing space", format!("Bearer {g} ")),
        ("leading space", format!(" Bearer {g}")),
    ] {
        add(
            &format!("control: {label}"),
            ping().auth(&value),
            Expect::Allow,
        );
    }
    for (label, value) in [
        ("a tab after Bearer", format!("Bearer\t{g}")),
        ("a colon after Bearer", format!("Bearer:{g}")),
        ("Bearer: with a space", format!("Bearer: {g}")),
        ("Bearer=", format!("Bearer={g}")),
        ("no separator", format!("Bearer{g}")),
        ("an underscore separator", format!("Bearer_{g}")),
        ("a no-break space", format!("Bearer\u{a0}{g}")),
        ("Cyrillic lookalike scheme", format!("\u{412}earer {g}")),
        ("scheme Token", format!("Token {g}")),
        ("scheme JWT", format!("JWT {g}")),
        ("scheme Basic", "Basic YWxpY2U6c2VjcmV0".to_owned()),
        ("the bare token", g.clone()),
    ] {
        add(label, ping().auth(&value), Expect::NoCredentials);
    }
    // DPoP (RFC 9449 s7.1) is a scheme this service reads: an unbound token in it is refused,
    // not taken as no credentials.
    add(
        "scheme DPoP with an unbound token",
        ping().auth(&format!("DPoP {g}")),
        Expect::InvalidDpopToken("the access token is not DPoP-bound"),
    );
    add("no authorization", ping(), Expect::NoCredentials);
    add(
        "empty authorization",
        ping().auth(""),
        Expect::NoCredentials,
    );
    add(
        "whitespace authorization",
        ping().auth(" \t "),
        Expect::NoCredentials,
    );
    for (label, value) in [
        ("Bearer alone", "Bearer".to_owned()),
        ("Bearer and a space", "Bearer ".to_owned()),
        ("a second word", format!("Bearer {g} extra")),
        ("a quoted token", format!("Bearer \"{g}\"")),
        ("a trailing quote", format!("Bearer {g}\"")),
        ("a trailing semicolon", format!("Bearer {g};")),
        ("angle brackets", format!("Bearer <{g}>")),
        ("a percent-encoded NUL", format!("Bearer {g}%00")),
        ("a raw NUL", format!("Bearer {g}\u{0}")),
        (
            "CR LF and a header",
            format!("Bearer {g}\r\nx-mcp-authz-subject: admin"),
        ),
        ("equals signs first", format!("Bearer ==={g}")),
        ("a tab inside", format!("Bearer {g}\tx")),
    ] {
        add(
            &format!("malformed: {label}"),
            ping().auth(&value),
            malformed,
        );
    }

    // --- repetition: Envoy joins repeated headers with `,` ---
    add(
        "two Authorization headers, two tokens",
        ping().bearer(&g).bearer(&other),
        dup,
    );
    add(
        "two Authorization headers, one token twice",
        ping().bearer(&g).bearer(&g),
        dup,
    );
    add(
        "Bearer then Basic",
        ping().auth(&format!("Bearer {g}, Basic YWxpY2U6c2VjcmV0")),
        dup,
    );
    add(
        "Basic then bearer",
        ping().auth(&format!("Basic YWxpY2U6c2VjcmV0, bearer {g}")),
        dup,
    );
    add(
        "a trailing comma",
        ping().auth(&format!("Bearer {g},")),
        dup,
    );
    add(
        "Digest with commas (another scheme, not a duplicate)",
        ping().auth(r#"Digest username="alice", realm="mcp", nonce="x""#),
        Expect::NoCredentials,
    );

    // --- header-name case: Envoy lowercases, another client may not ---
    add(
        "control: Authorization spelled with capitals",
        Req::ping()
            .header("Authorization", &format!("Bearer {g}"))
            .secret(&g),
        Expect::Allow,
    );
    add(
        "control: AUTHORIZATION in upper case",
        Req::ping()
            .header("AUTHORIZATION", &format!("Bearer {g}"))
            .secret(&g),
        Expect::Allow,
    );
    add(
        "authorization and Authorization, two tokens",
        Req::ping()
            .bearer(&g)
            .header("Authorization", &format!("Bearer {other}"))
            .secret(&other),
        dup,
    );
    add(
        "Mcp-Method in capitals disagreeing with the body",
        Req::ping().bearer(&g).header("Mcp-Method", "tools/list"),
        mismatch,
    );
    add(
        "MCP-NAME in capitals on a ping",
        Req::ping().bearer(&g).header("MCP-NAME", "get_forecast"),
        mismatch,
    );
    add(
        "control: raw header map, Authorization with capitals",
        Req::ping()
            .header("Authorization", &format!("Bearer {g}"))
            .secret(&g)
            .raw_map(),
        Expect::Allow,
    );
    add(
        "raw header map, authorization twice in two cases",
        Req::ping()
            .bearer(&g)
            .header("AUTHORIZATION", &format!("Bearer {other}"))
            .secret(&other)
            .raw_map(),
        dup,
    );
    add(
        "raw header map, Mcp-Method disagreeing",
        Req::ping()
            .bearer(&g)
            .header("Mcp-Method", "tools/call")
            .raw_map(),
        mismatch,
    );

    // --- tokens outside the Authorization header (RFC 6750 s2.2, s2.3) ---
    add(
        "access_token in the query, no header",
        Req::ping()
            .path(&format!("/mcp?access_token={g}"))
            .secret(&g),
        not_in_header,
    );
    add(
        "access_token in the query and the header",
        ping().bearer(&g).path(&format!("/mcp?access_token={g}")),
        not_in_header,
    );
    add(
        "empty access_token in the query",
        ping().bearer(&g).path("/mcp?x=1&access_token="),
        not_in_header,
    );
    add(
        "percent-encoded access_token name in the query",
        ping().bearer(&g).path("/mcp?access%5Ftoken=x"),
        not_in_header,
    );
    add(
        "access_token in a form body",
        Req::post(format!("access_token={g}"))
            .without("content-type")
            .header("content-type", "application/x-www-form-urlencoded")
            .secret(&g),
        not_in_header,
    );
    add(
        "access_token in a form body and the header",
        Req::post(format!("x=1&access_token={g}"))
            .without("content-type")
            .header("content-type", "application/x-www-form-urlencoded")
            .bearer(&g),
        not_in_header,
    );
    add(
        "token in an authorization_ header only",
        Req::ping()
            .header("authorization_", &format!("Bearer {g}"))
            .secret(&g),
        Expect::NoCredentials,
    );
    add(
        "token in x-access-token only",
        Req::ping().header("x-access-token", &g).secret(&g),
        Expect::NoCredentials,
    );

    // --- spoofed identity headers: overwritten or removed on allow, ignored otherwise ---
    for name in [
        "x-mcp-authz-subject",
        "x-mcp-authz-tenant",
        "x-mcp-authz-scopes",
        "x-mcp-authz-client-id",
        "x-mcp-authz-issuer",
        "x-mcp-authz-decision-id",
    ] {
        add(
            &format!("spoofed {name}"),
            ping().bearer(&g).header(name, "admin"),
            Expect::AllowStripping(name),
        );
    }
    for name in [
        "x_mcp_authz_subject",
        "x_mcp_authz_tenant",
        "x-mcp-authz_scopes",
        "x_mcp_authz_decision_id",
    ] {
        add(
            &format!("underscored look-alike {name}"),
            ping().bearer(&g).header(name, "admin"),
            Expect::AllowStripping(name),
        );
    }
    add(
        "underscored look-alike in capitals",
        ping().bearer(&g).header("X_MCP_AUTHZ_SUBJECT", "admin"),
        Expect::AllowStripping("x_mcp_authz_subject"),
    );
    add(
        "spoofed client id on a token without one",
        Req::ping()
            .bearer(&ctx.mint(&ctx.claims_with(|c| {
                c.remove("client_id");
            })))
            .header("x-mcp-authz-client-id", "trusted-admin-client"),
        Expect::AllowStripping("x-mcp-authz-client-id"),
    );
    add(
        "spoofed subject without a token",
        Req::ping().header("x-mcp-authz-subject", "alice"),
        Expect::NoCredentials,
    );
    add(
        "spoofed identity with a forged token",
        Req::ping()
            .bearer("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.")
            .header("x-mcp-authz-subject", "admin")
            .header("x-mcp-authz-scopes", "mcp:tools:admin"),
        Expect::InvalidToken(T::UnsupportedAlgorithm.description()),
    );
    add(
        "spoofed admin scope does not reach the policies",
        Req::post(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_everything"}}"#,
        )
        .bearer(&g)
        .header("x-mcp-authz-scopes", "mcp:tools:admin")
        .header("x-mcp-authz-groups", "break-glass"),
        Expect::Forbidden,
    );
    add(
        "a spoofed scope header does not grant the scope",
        Req::post(FORECAST)
            .bearer(&ctx.mint(&ctx.claims_with(|c| {
                c.insert("scope".into(), json!("mcp:connect"));
            })))
            .header("x-mcp-authz-scopes", "mcp:connect mcp:tools:weather"),
        Expect::StepUp("mcp:tools:weather"),
    );
    add(
        "spoofed partial-body marker",
        ping()
            .bearer(&g)
            .header("x-envoy-auth-partial-body", "true"),
        Expect::Plain(413, "payload_too_large"),
    );
    add(
        "content-length longer than the body",
        ping().bearer(&g).header("content-length", "4096"),
        Expect::Plain(413, "payload_too_large"),
    );

    // --- mcp-method / mcp-name (SEP-2243) ---
    let call = || Req::post(FORECAST).bearer(&g);
    add(
        "control: mcp-method and mcp-name agreeing",
        call()
            .header("mcp-method", "tools/call")
            .header("mcp-name", "get_forecast"),
        Expect::Allow,
    );
    add(
        "control: mcp-name base64-encoded",
        call().header("mcp-name", "=?base64?Z2V0X2ZvcmVjYXN0?="),
        Expect::Allow,
    );
    for (label, value) in [
        ("another method", "tools/list"),
        ("case", "Tools/call"),
        ("a trailing space", "tools/call "),
        ("a leading space", " tools/call"),
        ("percent-encoded", "tools%2Fcall"),
        (
            "base64 (not allowed for mcp-method)",
            "=?base64?dG9vbHMvY2FsbA==?=",
        ),
        ("empty", ""),
        ("repeated", "tools/call,tools/call"),
        ("a bidi override", "tools/call\u{202e}"),
    ] {
        add(
            &format!("mcp-method {label}"),
            call().header("mcp-method", value),
            mismatch,
        );
    }
    for (label, value) in [
        ("another tool", "read_file"),
        ("a trailing space", "get_forecast "),
        ("case", "GET_FORECAST"),
        ("percent-encoded", "get%5Fforecast"),
        ("base64 of another tool", "=?base64?cmVhZF9maWxl?="),
        ("upper-case sentinel", "=?BASE64?Z2V0X2ZvcmVjYXN0?="),
        ("repeated", "get_forecast,get_forecast"),
        ("a zero-width space", "get_\u{200b}forecast"),
        ("empty", ""),
    ] {
        add(
            &format!("mcp-name {label}"),
            call().header("mcp-name", value),
            mismatch,
        );
    }
    add(
        "mcp-name invalid base64",
        call().header("mcp-name", "=?base64?!!!!?="),
        invalid_request,
    );
    add(
        "mcp-name base64 of invalid UTF-8",
        call().header("mcp-name", "=?base64?/w==?="),
        invalid_request,
    );
    add(
        "mcp-name on a ping",
        ping().bearer(&g).header("mcp-name", "get_forecast"),
        mismatch,
    );
    add(
        "mcp-method on a batch",
        Req::post(BATCH).bearer(&g).header("mcp-method", "ping"),
        invalid_request,
    );
    add(
        "GET with mcp-method tools/call and mcp-name",
        Req::bodiless("GET")
            .bearer(&g)
            .header("mcp-method", "tools/call")
            .header("mcp-name", "delete_everything"),
        mismatch,
    );
    add(
        "DELETE with mcp-name",
        Req::bodiless("DELETE").bearer(&g).header("mcp-name", "x"),
        mismatch,
    );
    add(
        "mcp-name with an unknown method",
        Req::post(r#"{"jsonrpc":"2.0","id":1,"method":"admin/exec","params":{"name":"x"}}"#)
            .bearer(&g)
            .header("mcp-name", "get_forecast"),
        Expect::Forbidden,
    );

    // --- mcp-param-* (SEP-2243 x-mcp-header) ---
    add(
        "control: mcp-param-city agreeing",
        call().header("mcp-param-city", "Paris"),
        Expect::Allow,
    );
    add(
        "control: mcp-param-city base64-encoded",
        call().header("mcp-param-city", "=?base64?UGFyaXM=?="),
        Expect::Allow,
    );
    add(
        "control: mcp-param-days as 3.0 (compared as a number)",
        call().header("mcp-param-days", "3.0"),
        Expect::Allow,
    );
    add(
        "control: mcp-param naming no argument is left to the server",
        call().header("mcp-param-region", "eu-west-1"),
        Expect::Allow,
    );
    add(
        "control: Mcp-Param-City in capitals",
        call().header("Mcp-Param-City", "Paris"),
        Expect::Allow,
    );
    for (label, name, value) in [
        ("another city", "mcp-param-city", "Berlin"),
        (
            "base64 of another city",
            "mcp-param-city",
            "=?base64?QmVybGlu?=",
        ),
        ("percent-encoded", "mcp-param-city", "Par%69s"),
        ("case", "mcp-param-city", "PARIS"),
        ("a trailing space", "mcp-param-city", "Paris "),
        ("repeated", "mcp-param-city", "Paris,Paris"),
        ("another number", "mcp-param-days", "4"),
        ("a number as text", "mcp-param-days", "three"),
        ("a number in hex", "mcp-param-days", "0x3"),
        (
            "a number beyond i64",
            "mcp-param-days",
            "99999999999999999999",
        ),
        ("capitals, another city", "Mcp-Param-CITY", "Lyon"),
    ] {
        add(
            &format!("mcp-param {label}"),
            call().header(name, value),
            mismatch,
        );
    }
    add(
        "mcp-param invalid base64",
        call().header("mcp-param-city", "=?base64?%%%?="),
        invalid_request,
    );
    add(
        "mcp-param on a ping",
        ping().bearer(&g).header("mcp-param-city", "Paris"),
        mismatch,
    );
    add(
        "mcp-param on a batch",
        Req::post(BATCH)
            .bearer(&g)
            .header("mcp-param-city", "Paris"),
        invalid_request,
    );
    add(
        "mcp-param on a GET",
        Req::bodiless("GET")
            .bearer(&g)
            .header("mcp-param-path", "/etc/passwd"),
        mismatch,
    );
    out
}
