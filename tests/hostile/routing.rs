//! Routing tricks: dot segments plain and encoded, escaped slashes and backslashes, `;`
//! parameters, double encoding, double slashes, case, and hosts with odd case, ports, trailing
//! dots and userinfo; tokens carried to another server or tenant.

use mcp_authz::token::TokenError as T;
use serde_json::json;

use crate::harness::{Case, Category, Ctx, Expect, RESOURCE_B, RESOURCE_T, Req, case};

pub fn cases(ctx: &Ctx) -> Vec<Case> {
    let mut out = Vec::new();
    let g = ctx.good();
    let aud = |aud: &str, tenant: &str| {
        ctx.mint(&ctx.claims_with(|c| {
            c.insert("aud".into(), json!(aud));
            c.insert("tenant".into(), json!(tenant));
        }))
    };
    let tb_globex = aud(RESOURCE_B, "globex");
    let tb_acme = aud(RESOURCE_B, "acme");
    let tt = aud(RESOURCE_T, "acme");
    let mut add = |c: Case| out.push(c);
    let r = |name: &str, req: Req, expect: Expect| case(Category::Routing, name, req, expect);
    let ambiguous = Expect::Plain(400, "invalid_request");
    let not_found = Expect::Plain(404, "not_found");
    let at = |path: &str| Req::ping().bearer(&g).path(path);

    // --- dot segments and escapes: refused before routing (400) ---
    for path in [
        "/mcp/../mcp",
        "/x/../mcp",
        "/mcp/../b/mcp",
        "/b/mcp/../../mcp",
        "/mcp/./",
        "/./mcp",
        "/mcp/.",
        "/mcp/..",
        "/mcp/%2e%2e/b/mcp",
        "/mcp/%2E%2E/b/mcp",
        "/mcp/%2e./b/mcp",
        "/mcp/.%2E/b/mcp",
        "/mcp/..%2fb%2fmcp",
        "/mcp%2fb",
        "/mcp%2F..%2Fb%2Fmcp",
        "/mcp/..%5cb",
        "/mcp%5C..%5Cb",
        "/mcp\\..\\b\\mcp",
        "/mcp/..;/b/mcp",
        "/mcp/..;x=1/b/mcp",
        "/mcp/.;/x",
        "/mcp/%252e%252e/b/mcp",
        "/mcp/..%252fb",
        "/mcp/..%255cb",
        "/mcp//../b/mcp",
        "/mcp\t",
        "/mcp\r\nx-mcp-authz-subject: admin",
        "/mcp/\u{0}",
        "/mcp/\u{7f}",
        "/.well-known/oauth-protected-resource/../mcp",
        "/.well-known/oauth-protected-resource/%2e%2e/mcp",
        "/t/acme/../globex/mcp",
        "/t/acme/%2e%2e/globex/mcp",
        "/t/%2e%2e/globex/mcp",
        "/t/acme/..;/globex/mcp",
    ] {
        add(r(&format!("path {path:?}"), at(path), ambiguous));
    }
    add(r(
        "dot segments without a token",
        Req::ping().path("/mcp/../b/mcp"),
        ambiguous,
    ));
    add(r(
        "dot segments with a query",
        at("/mcp/../b/mcp?x=1"),
        ambiguous,
    ));

    // --- paths that match no server (404) ---
    for path in [
        "//mcp",
        "//b/mcp",
        "/b//mcp",
        "/MCP",
        "/Mcp",
        "/B/mcp",
        "/mcpx",
        "/mcp;x=1",
        "/mcp%20",
        "/mcp ",
        "/mcp#x",
        "/mcp%00",
        "http://mcp.example.com/mcp",
        "*",
        "",
        "mcp",
        "/",
        "/.well-known/oauth-protected-resource/mcp/",
    ] {
        add(r(&format!("unmatched path {path:?}"), at(path), not_found));
    }
    add(r(
        "control: a query that looks like traversal",
        at("/mcp?next=../../b/mcp"),
        Expect::Allow,
    ));
    add(r(
        "control: a trailing double slash stays on the server",
        at("/mcp//"),
        Expect::Allow,
    ));

    // --- hosts ---
    for host in [
        "MCP.EXAMPLE.COM",
        "mcp.example.com:443",
        "Mcp.Example.Com:8443",
        "mcp.example.com:",
    ] {
        add(r(
            &format!("control: host {host:?}"),
            Req::ping().bearer(&g).host(host),
            Expect::Allow,
        ));
    }
    for host in [
        "mcp.example.com.",
        "mcp.example.com.:443",
        "mcp.example.com:@evil.example",
        "mcp.example.com:evil",
        "mcp.example.com:+443",
        "mcp.example.com:99999",
        "mcp.example.com:443:443",
        "mcp.example.com@evil.example",
        "evil.example#mcp.example.com",
        "mcp.example.com.evil.example",
        "evil.example",
        "mcp.example.com ",
        " mcp.example.com",
        "mcp.example.com\u{0}",
        "mcp.\u{435}xample.com",
        "mcp.exampIe.com",
        "[::1]",
        "127.0.0.1",
        "localhost",
        "",
    ] {
        add(r(
            &format!("host {host:?}"),
            Req::ping().bearer(&g).host(host),
            not_found,
        ));
    }
    add(r(
        "unmatched host without a token",
        Req::ping().host("evil.example"),
        not_found,
    ));

    // --- tokens carried to another server or tenant ---
    add(r(
        "a token for /mcp used on /b/mcp",
        at("/b/mcp"),
        Expect::InvalidToken(T::WrongAudience.description()),
    )
    .on("/b/mcp"));
    add(r(
        "a token for /b/mcp used on /mcp",
        Req::ping().bearer(&tb_globex),
        Expect::InvalidToken(T::WrongAudience.description()),
    ));
    add(r(
        "control: a globex token for /b/mcp",
        Req::ping().bearer(&tb_globex).path("/b/mcp"),
        Expect::Allow,
    ));
    add(r(
        "an acme token for the globex server",
        Req::ping().bearer(&tb_acme).path("/b/mcp"),
        Expect::Forbidden,
    ));
    add(r(
        "control: tenant from the path, own tenant",
        Req::ping().bearer(&tt).path("/t/acme/mcp"),
        Expect::Allow,
    ));
    for path in [
        "/t/globex/mcp",
        "/t/ACME/mcp",
        "/t/%61cme/mcp",
        "/t/acme%20/mcp",
        "/t/acme;x=1/mcp",
        "/t/ac\u{441}me/mcp",
        "/t",
        "/t/",
    ] {
        add(r(
            &format!("tenant from the path {path:?}"),
            Req::ping().bearer(&tt).path(path),
            Expect::Forbidden,
        ));
    }
    add(r(
        "control: tenant from the path with a doubled slash reads the same tenant",
        Req::ping().bearer(&tt).path("/t//acme/mcp"),
        Expect::Allow,
    ));
    out
}
