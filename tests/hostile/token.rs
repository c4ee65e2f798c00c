//! Token forms: `alg: none`, HMAC keyed with the RSA public key, unknown and path-like `kid`s,
//! key references (`jku`, `x5u`, `x5c`, `jwk`) and `crit`, huge tokens, wrong JSON types for
//! every registered claim, `iss` and `aud` variants, nested JWTs, JWE, repeated members.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use mcp_authz::bearer::BearerError as B;
use mcp_authz::testutil::{TestKey, b64, now};
use mcp_authz::token::TokenError as T;
use serde_json::{Value, json};

use crate::harness::{Case, Category, Ctx, Expect, RESOURCE, Req, case};

fn invalid(e: T) -> Expect {
    Expect::InvalidToken(e.description())
}

pub fn cases(ctx: &Ctx) -> Vec<Case> {
    let mut out = Vec::new();
    let mut add = |name: &str, token: String, expect: Expect| {
        out.push(case(
            Category::Token,
            name,
            Req::ping().bearer(&token).secret(&token),
            expect,
        ));
    };
    let claims = ctx.claims_text();
    let header = |alg: &str| format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"k1"}}"#);
    let good = ctx.good();
    let sig = good.rsplit('.').next().unwrap().to_owned();
    let unsigned = |h: &str, c: &str| format!("{}.{}", b64(h.as_bytes()), b64(c.as_bytes()));

    // --- controls: the harness sees an allow when there is one ---
    add("control: a valid RS256 token", good.clone(), Expect::Allow);
    add(
        "control: a valid ES256 token (second published key)",
        ctx.ec.token(&ctx.claims()),
        Expect::Allow,
    );
    add(
        "control: no kid, one published key for RS256",
        ctx.raw(r#"{"alg":"RS256","typ":"at+jwt"}"#, &claims),
        Expect::Allow,
    );

    // --- alg none and friends (RFC 8725 s3.1) ---
    for alg in [
        "none", "None", "NONE", "nOnE", "", "RS256 ", "rs256", "HS1", "RSA-OAEP",
    ] {
        add(
            &format!("alg `{alg}` without a signature"),
            format!("{}.", unsigned(&header(alg), &claims)),
            invalid(T::UnsupportedAlgorithm),
        );
    }
    add(
        "alg none with the real signature kept",
        format!("{}.{sig}", unsigned(&header("none"), &claims)),
        invalid(T::UnsupportedAlgorithm),
    );
    add(
        "alg none, no typ, no kid",
        format!("{}.", unsigned(r#"{"alg":"none"}"#, &claims)),
        invalid(T::UnsupportedAlgorithm),
    );
    for (label, h) in [
        ("alg null", r#"{"alg":null,"typ":"at+jwt","kid":"k1"}"#),
        ("alg missing", r#"{"typ":"at+jwt","kid":"k1"}"#),
        (
            "alg an array",
            r#"{"alg":["RS256"],"typ":"at+jwt","kid":"k1"}"#,
        ),
        ("alg a number", r#"{"alg":256,"typ":"at+jwt","kid":"k1"}"#),
        ("header an array", r#"[{"alg":"RS256"}]"#),
        ("header a string", r#""RS256""#),
        ("kid a number", r#"{"alg":"RS256","typ":"at+jwt","kid":1}"#),
        ("typ an object", r#"{"alg":"RS256","typ":{},"kid":"k1"}"#),
    ] {
        add(label, ctx.raw(h, &claims), invalid(T::BadHeader));
    }

    // --- HMAC keyed with the RSA public key (algorithm confusion) ---
    let jwk = ctx.key.public_jwk();
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
    let pkcs1 = der_seq(&[der_int(&n), der_int(&e)].concat());
    let spki = der_seq(
        &[
            der_seq(
                &[
                    vec![
                        0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01,
                    ],
                    vec![0x05, 0x00],
                ]
                .concat(),
            ),
            der(0x03, &[vec![0x00], pkcs1.clone()].concat()),
        ]
        .concat(),
    );
    let spki_pem = pem("PUBLIC KEY", &spki);
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("SPKI PEM", spki_pem.clone().into_bytes()),
        (
            "SPKI PEM without the final newline",
            spki_pem.trim_end().as_bytes().to_vec(),
        ),
        ("PKCS#1 PEM", pem("RSA PUBLIC KEY", &pkcs1).into_bytes()),
        ("SPKI DER", spki.clone()),
        ("PKCS#1 DER", pkcs1.clone()),
        ("JWK JSON", jwk.to_string().into_bytes()),
        ("modulus bytes", n.clone()),
    ];
    for (label, secret) in &secrets {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let hmac = TestKey::hmac("k1", secret, alg);
            add(
                &format!("{alg:?} keyed with the RSA public key ({label})"),
                hmac.sign_raw(&header(&format!("{alg:?}")), &claims),
                invalid(T::AlgorithmNotAllowed),
            );
        }
    }

    // --- keys: unknown, path-like and injected kids ---
    for kid in [
        "k2",
        "K1",
        "k1 ",
        " k1",
        "",
        "../../../../etc/passwd",
        "..\\..\\..\\keys\\k1",
        "/dev/null",
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data",
        "%2e%2e%2fk1",
        "k1/../k1",
        "k1\u{0}",
        "k1\n",
        "' OR '1'='1",
        "${jndi:ldap://evil.example/a}",
        "k1\u{202e}",
        "\u{43a}1",
    ] {
        let h = json!({"alg": "RS256", "typ": "at+jwt", "kid": kid}).to_string();
        add(
            &format!("kid {kid:?}"),
            ctx.raw(&h, &claims),
            invalid(T::UnknownKey),
        );
    }
    add(
        "kid of 5,000 characters",
        ctx.raw(
            &json!({"alg": "RS256", "typ": "at+jwt", "kid": "k".repeat(5000)}).to_string(),
            &claims,
        ),
        invalid(T::UnknownKey),
    );
    add(
        "signed by an unpublished key with kid k1",
        TestKey::rsa("k1").token(&ctx.claims()),
        invalid(T::BadSignature),
    );
    add(
        "ES256 with the RSA key's kid",
        TestKey::ec("k1").token(&ctx.claims()),
        invalid(T::KeyAlgorithmMismatch),
    );
    add(
        "RS256 with the EC key's kid",
        TestKey::rsa("e1").token(&ctx.claims()),
        invalid(T::KeyAlgorithmMismatch),
    );
    add(
        "RS512 (not allowed for the issuer)",
        TestKey::rsa_with("k1", Algorithm::RS512).token(&ctx.claims()),
        invalid(T::AlgorithmNotAllowed),
    );
    add(
        "PS256 (not allowed for the issuer)",
        TestKey::rsa_with("k1", Algorithm::PS256).token(&ctx.claims()),
        invalid(T::AlgorithmNotAllowed),
    );
    add(
        "EdDSA (not allowed for the issuer)",
        TestKey::ed("k1").token(&ctx.claims()),
        invalid(T::AlgorithmNotAllowed),
    );
    add(
        "no kid, ES256 signed by an unpublished key",
        TestKey::ec("x").sign_raw(r#"{"alg":"ES256","typ":"at+jwt"}"#, &claims),
        invalid(T::BadSignature),
    );

    // --- key references and critical headers (RFC 8725 s3.10, RFC 7515 s4.1.11) ---
    for (label, extra) in [
        ("jku", r#""jku":"https://evil.example/jwks.json""#),
        (
            "jku pointing at the real IdP",
            r#""jku":"http://127.0.0.1/jwks""#,
        ),
        ("x5u", r#""x5u":"https://evil.example/cert.pem""#),
        (
            "x5c",
            r#""x5c":["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]"#,
        ),
        ("x5c empty", r#""x5c":[]"#),
        ("jwk", r#""jwk":{"kty":"oct","k":"c2VjcmV0"}"#),
    ] {
        let h = format!(r#"{{"alg":"RS256","typ":"at+jwt","kid":"k1",{extra}}}"#);
        add(
            &format!("header with {label}"),
            ctx.raw(&h, &claims),
            invalid(T::KeyReference),
        );
    }
    for (label, extra) in [
        ("crit b64", r#""crit":["b64"],"b64":false"#),
        ("crit exp", r#""crit":["exp"],"exp":1"#),
        ("crit empty", r#""crit":[]"#),
    ] {
        let h = format!(r#"{{"alg":"RS256","typ":"at+jwt","kid":"k1",{extra}}}"#);
        add(
            &format!("header with {label}"),
            ctx.raw(&h, &claims),
            invalid(T::CriticalHeader),
        );
    }
    add(
        "crit a string",
        ctx.raw(
            r#"{"alg":"RS256","typ":"at+jwt","kid":"k1","crit":"b64"}"#,
            &claims,
        ),
        invalid(T::BadHeader),
    );

    // --- typ (RFC 9068 s2.1) ---
    for typ in [
        "JWT",
        "jwt",
        "id+jwt",
        "at+jwt ",
        "at+JWT; charset=x",
        "application/jwt",
    ] {
        let h = json!({"alg": "RS256", "typ": typ, "kid": "k1"}).to_string();
        add(
            &format!("typ {typ:?}"),
            ctx.raw(&h, &claims),
            invalid(T::WrongType),
        );
    }
    add(
        "typ missing",
        ctx.raw(r#"{"alg":"RS256","kid":"k1"}"#, &claims),
        invalid(T::WrongType),
    );

    // --- huge tokens ---
    let pad = |n: usize| {
        ctx.mint(&ctx.claims_with(|c| {
            c.insert("pad".into(), json!("x".repeat(n)));
        }))
    };
    add(
        "a valid token just under the 8 KiB limit",
        pad(5500),
        Expect::Allow,
    );
    add(
        "a valid token over the 8 KiB limit",
        pad(7000),
        Expect::InvalidToken(B::TooLarge.description()),
    );
    add(
        "a 1 MiB token",
        pad(800_000),
        Expect::InvalidToken(B::TooLarge.description()),
    );
    add(
        "a 1 MiB run of a single character",
        "a".repeat(1 << 20),
        Expect::InvalidToken(B::TooLarge.description()),
    );

    // --- wrong JSON types for every registered claim ---
    let wrong = |name: &str, value: Value| {
        ctx.mint(&ctx.claims_with(|c| {
            c.insert(name.into(), value);
        }))
    };
    for (label, v) in [
        ("number", json!(1)),
        ("array", json!([ctx.idp.issuer])),
        ("object", json!({"iss": ctx.idp.issuer})),
        ("null", Value::Null),
        ("bool", json!(true)),
    ] {
        add(
            &format!("iss as {label}"),
            wrong("iss", v),
            invalid(T::UntrustedIssuer),
        );
    }
    for (label, v, e) in [
        ("number", json!(42), T::BadClaim),
        ("array", json!(["alice"]), T::BadClaim),
        ("object", json!({"id": "alice"}), T::BadClaim),
        ("null", Value::Null, T::BadClaim),
        ("bool", json!(true), T::BadClaim),
        ("empty string", json!(""), T::BadClaim),
    ] {
        add(&format!("sub as {label}"), wrong("sub", v), invalid(e));
    }
    for (label, v) in [
        ("number", json!(1)),
        ("object", json!({"aud": RESOURCE})),
        ("null", Value::Null),
        ("bool", json!(true)),
        ("array of numbers", json!([1, 2])),
        ("empty array", json!([])),
        ("nested array", json!([[RESOURCE]])),
    ] {
        add(
            &format!("aud as {label}"),
            wrong("aud", v),
            invalid(T::WrongAudience),
        );
    }
    for claim in ["exp", "nbf", "iat"] {
        for (label, v) in [
            ("string", json!((now() + 300).to_string())),
            ("array", json!([now() + 300])),
            ("object", json!({"t": now()})),
            ("bool", json!(true)),
        ] {
            add(
                &format!("{claim} as {label}"),
                wrong(claim, v),
                invalid(T::BadClaim),
            );
        }
    }
    add("exp null", wrong("exp", Value::Null), invalid(T::BadClaim));
    add("exp negative", wrong("exp", json!(-1)), invalid(T::Expired));
    add("exp zero", wrong("exp", json!(0)), invalid(T::Expired));
    add(
        "exp i64::MIN",
        wrong("exp", json!(i64::MIN)),
        invalid(T::Expired),
    );
    add(
        "exp missing",
        ctx.mint(&ctx.claims_with(|c| {
            c.remove("exp");
        })),
        invalid(T::MissingExpiry),
    );
    add(
        "nbf in an hour",
        wrong("nbf", json!(now() + 3600)),
        invalid(T::NotYetValid),
    );
    add(
        "iat in an hour",
        wrong("iat", json!(now() + 3600)),
        invalid(T::IssuedInFuture),
    );
    add(
        "nbf u64::MAX",
        wrong("nbf", json!(u64::MAX)),
        invalid(T::NotYetValid),
    );
    add(
        "nbf 1e300",
        wrong("nbf", json!(1e300)),
        invalid(T::NotYetValid),
    );
    for (label, v) in [
        ("number", json!(12345)),
        ("array", json!(["a"])),
        ("object", json!({"a": 1})),
        ("bool", json!(false)),
    ] {
        add(
            &format!("jti as {label}"),
            wrong("jti", v),
            invalid(T::BadClaim),
        );
    }
    for (label, v) in [
        ("number", json!(1)),
        ("object", json!({"mcp:connect": true})),
        ("bool", json!(true)),
        ("array with a number", json!(["mcp:connect", 1])),
        (
            "array with a space inside an entry",
            json!(["mcp:connect mcp:tools:files"]),
        ),
        (
            "string with a newline",
            json!("mcp:connect\nmcp:tools:files"),
        ),
    ] {
        add(
            &format!("scope as {label}"),
            wrong("scope", v),
            invalid(T::BadClaim),
        );
    }
    for (label, v) in [
        ("number", json!(7)),
        ("array", json!(["client-1"])),
        ("object", json!({})),
        ("bool", json!(true)),
        (
            "string with CR LF",
            json!("client\r\nx-mcp-authz-subject: admin"),
        ),
    ] {
        add(
            &format!("client_id as {label}"),
            wrong("client_id", v),
            invalid(T::BadClaim),
        );
    }
    for (label, v) in [
        ("number", json!(1)),
        ("array", json!(["acme"])),
        ("bidi override", json!("ac\u{202e}me")),
    ] {
        add(
            &format!("tenant as {label}"),
            wrong("tenant", v),
            invalid(T::BadClaim),
        );
    }
    for (label, v) in [
        (
            "CR LF injection",
            json!("alice\r\nx-mcp-authz-subject: admin"),
        ),
        ("bidi override", json!("alice\u{202e}nimda")),
        ("zero-width space", json!("ali\u{200b}ce")),
        ("leading space", json!(" alice")),
        ("NUL", json!("alice\u{0}")),
    ] {
        add(
            &format!("sub with {label}"),
            wrong("sub", v),
            invalid(T::BadClaim),
        );
    }
    add(
        "no tenant claim: tenant isolation forbids",
        ctx.mint(&ctx.claims_with(|c| {
            c.remove("tenant");
        })),
        Expect::Forbidden,
    );
    add(
        "another tenant's token",
        wrong("tenant", json!("globex")),
        Expect::Forbidden,
    );

    // --- iss variants: matched on the exact string ---
    let iss = ctx.idp.issuer.clone();
    for (label, v) in [
        ("with a trailing slash", format!("{iss}/")),
        ("upper-case scheme", iss.replacen("http", "HTTP", 1)),
        ("with a leading space", format!(" {iss}")),
        ("with a trailing space", format!("{iss} ")),
        ("with a trailing newline", format!("{iss}\n")),
        ("with a path", format!("{iss}/tenant")),
        ("with a query", format!("{iss}?x=1")),
        ("https instead of http", iss.replacen("http", "https", 1)),
        (
            "localhost for 127.0.0.1",
            iss.replacen("127.0.0.1", "localhost", 1),
        ),
        ("with userinfo", iss.replacen("http://", "http://evil@", 1)),
        ("with a NUL", format!("{iss}\u{0}")),
        ("another issuer", "https://evil.example".into()),
        ("empty", String::new()),
    ] {
        add(
            &format!("iss {label}"),
            wrong("iss", json!(v)),
            invalid(T::UntrustedIssuer),
        );
    }
    add(
        "iss missing",
        ctx.mint(&ctx.claims_with(|c| {
            c.remove("iss");
        })),
        invalid(T::UntrustedIssuer),
    );

    // --- aud variants (RFC 8707, RFC 3986 s6.2.2-6.2.3) ---
    for (label, v) in [
        (
            "with a trailing slash",
            json!("https://mcp.example.com/mcp/"),
        ),
        ("upper-case path", json!("https://mcp.example.com/MCP")),
        ("http scheme", json!("http://mcp.example.com/mcp")),
        ("another port", json!("https://mcp.example.com:8443/mcp")),
        (
            "with a dot segment",
            json!("https://mcp.example.com/x/../mcp"),
        ),
        (
            "percent-encoded path",
            json!("https://mcp.example.com/%6dcp"),
        ),
        ("with a fragment", json!("https://mcp.example.com/mcp#x")),
        ("with a query", json!("https://mcp.example.com/mcp?x=1")),
        ("with userinfo", json!("https://evil@mcp.example.com/mcp")),
        (
            "suffix host",
            json!("https://mcp.example.com.evil.example/mcp"),
        ),
        ("trailing dot host", json!("https://mcp.example.com./mcp")),
        (
            "with surrounding space",
            json!(" https://mcp.example.com/mcp"),
        ),
        ("origin only", json!("https://mcp.example.com")),
        (
            "another server of this service",
            json!("https://mcp.example.com/b/mcp"),
        ),
        ("empty string", json!("")),
        (
            "array of other audiences",
            json!(["https://a.example", "https://b.example"]),
        ),
    ] {
        add(
            &format!("aud {label}"),
            wrong("aud", v),
            invalid(T::WrongAudience),
        );
    }
    add(
        "aud missing",
        ctx.mint(&ctx.claims_with(|c| {
            c.remove("aud");
        })),
        invalid(T::WrongAudience),
    );
    add(
        "control: aud with upper-case host and explicit :443",
        wrong("aud", json!("HTTPS://MCP.EXAMPLE.COM:443/mcp")),
        Expect::Allow,
    );
    add(
        "control: aud array naming this resource among others",
        wrong("aud", json!(["https://a.example", RESOURCE])),
        Expect::Allow,
    );

    // --- nested JWTs (RFC 7519 s5.2 cty) and JWE (RFC 7516) ---
    add(
        "nested: alg none around a valid token",
        format!(
            "{}.{}.",
            b64(br#"{"alg":"none","cty":"JWT"}"#),
            b64(good.as_bytes())
        ),
        invalid(T::UnsupportedAlgorithm),
    );
    add(
        "nested: an unpublished key around a valid token",
        TestKey::rsa("k9").sign_raw(
            r#"{"alg":"RS256","typ":"at+jwt","kid":"k9","cty":"JWT"}"#,
            &json!(good).to_string(),
        ),
        invalid(T::NestedToken),
    );
    add(
        "nested: the real key around a JWT string payload",
        ctx.key.sign_raw(
            r#"{"alg":"RS256","typ":"at+jwt","kid":"k1","cty":"JWT"}"#,
            &json!(good).to_string(),
        ),
        invalid(T::NestedToken),
    );
    add(
        "nested: the real key, cty JWT, raw JWT payload",
        {
            let message = format!(
                "{}.{}",
                b64(br#"{"alg":"RS256","typ":"at+jwt","kid":"k1","cty":"JWT"}"#),
                b64(good.as_bytes())
            );
            let s = ctx.key.sign_raw(r#"{"alg":"RS256"}"#, "{}");
            // Only the shape matters here: the payload is not JSON.
            format!("{message}.{}", s.rsplit('.').next().unwrap())
        },
        invalid(T::NestedToken),
    );
    add(
        "nested: cty JWT over JSON claims, signed by the real key",
        ctx.raw(
            r#"{"alg":"RS256","typ":"at+jwt","kid":"k1","cty":"JWT"}"#,
            &claims,
        ),
        invalid(T::NestedToken),
    );
    add(
        "JWE compact (five parts)",
        format!(
            "{}.{}.{}.{}.{}",
            b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM","kid":"k1"}"#),
            b64(b"key"),
            b64(b"iv"),
            b64(b"ciphertext"),
            b64(b"tag")
        ),
        invalid(T::Encrypted),
    );
    add(
        "JWE with dir (empty key part)",
        format!(
            "{}..{}.{}.{}",
            b64(br#"{"alg":"dir","enc":"A128GCM"}"#),
            b64(b"iv"),
            b64(b"ciphertext"),
            b64(b"tag")
        ),
        invalid(T::Encrypted),
    );
    add(
        "three parts with enc in the header",
        ctx.raw(
            r#"{"alg":"RS256","typ":"at+jwt","kid":"k1","enc":"A256GCM"}"#,
            &claims,
        ),
        invalid(T::Encrypted),
    );
    add(
        "three parts with zip in the header",
        ctx.raw(
            r#"{"alg":"RS256","typ":"at+jwt","kid":"k1","zip":"DEF"}"#,
            &claims,
        ),
        invalid(T::Encrypted),
    );

    // --- shapes ---
    for (label, token) in [
        ("one part", "eyJhbGciOiJSUzI1NiJ9".to_owned()),
        (
            "two parts",
            format!(
                "{}.{}",
                b64(header("RS256").as_bytes()),
                b64(claims.as_bytes())
            ),
        ),
        ("four parts", format!("{good}.x")),
        ("six parts", format!("{good}.x.y.z")),
    ] {
        add(label, token, invalid(T::NotAJwt));
    }
    add(
        "only dots (three empty parts)",
        "..".to_owned(),
        invalid(T::BadHeader),
    );
    let parts: Vec<&str> = good.split('.').collect();
    add(
        "empty signature",
        format!("{}.{}.", parts[0], parts[1]),
        invalid(T::BadSignature),
    );
    add(
        "truncated signature",
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            &parts[2][..parts[2].len() - 4]
        ),
        invalid(T::BadSignature),
    );
    add(
        "signature of another token",
        {
            let other = ctx.mint(&ctx.claims_with(|c| {
                c.insert("sub".into(), json!("admin"));
            }));
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                other.rsplit('.').next().unwrap()
            )
        },
        invalid(T::BadSignature),
    );
    add(
        "claims swapped under a valid signature",
        format!(
            "{}.{}.{}",
            parts[0],
            b64(ctx
                .claims_with(|c| {
                    c.insert("sub".into(), json!("admin"));
                })
                .to_string()
                .as_bytes()),
            parts[2]
        ),
        invalid(T::BadSignature),
    );
    add(
        "padded base64 header",
        format!("{}==.{}.{}", parts[0], parts[1], parts[2]),
        // `=` only ends a b64token (RFC 6750 s2.1): refused before any JWT parsing.
        Expect::InvalidRequest(B::Malformed.description()),
    );
    add(
        "standard-alphabet base64 header",
        format!(
            "{}.{}.{}",
            STANDARD.encode(br#"{"alg":"RS256","typ":"at+jwt","kid":"k1","x":"??>"}"#),
            parts[1],
            parts[2]
        ),
        invalid(T::BadHeader),
    );
    add(
        "standard-alphabet base64 header with padding",
        format!(
            "{}.{}.{}",
            STANDARD.encode(br#"{"alg":"RS256","typ":"at+jwt","kid":"k1","x":"??>>"}"#),
            parts[1],
            parts[2]
        ),
        Expect::InvalidRequest(B::Malformed.description()),
    );
    add(
        "header not UTF-8",
        format!(
            "{}.{}.{}",
            b64(b"{\"alg\":\"RS256\",\"x\":\"\xff\"}"),
            parts[1],
            parts[2]
        ),
        invalid(T::BadHeader),
    );
    add(
        "header with a byte order mark",
        ctx.raw(&format!("\u{feff}{}", header("RS256")), &claims),
        invalid(T::BadHeader),
    );
    add(
        "header nested 20 deep",
        ctx.raw(
            &format!(
                r#"{{"alg":"RS256","typ":"at+jwt","kid":"k1","x":{}1{}}}"#,
                "[".repeat(20),
                "]".repeat(20)
            ),
            &claims,
        ),
        invalid(T::BadHeader),
    );
    add(
        "claims an array",
        ctx.raw(&header("RS256"), &format!("[{claims}]")),
        invalid(T::BadPayload),
    );
    add(
        "claims nested 20 deep",
        ctx.raw(
            &header("RS256"),
            &format!(
                r#"{},"x":{}1{}}}"#,
                ctx.claims_open(),
                "[".repeat(20),
                "]".repeat(20)
            ),
        ),
        invalid(T::BadPayload),
    );
    add(
        "claims with a lone surrogate",
        ctx.raw(
            &header("RS256"),
            &format!(r#"{},"x":"\ud800"}}"#, ctx.claims_open()),
        ),
        invalid(T::BadPayload),
    );
    add(
        "claims with trailing data",
        ctx.raw(&header("RS256"), &format!("{claims}{{}}")),
        invalid(T::BadPayload),
    );
    add(
        "claims number beyond f64",
        ctx.raw(
            &header("RS256"),
            &format!(r#"{},"x":1e400}}"#, ctx.claims_open()),
        ),
        invalid(T::BadPayload),
    );

    // --- repeated members (RFC 7515 s5.2 lets the last win; refused here) ---
    for (label, h) in [
        (
            "alg",
            r#"{"alg":"HS256","alg":"RS256","typ":"at+jwt","kid":"k1"}"#,
        ),
        (
            "kid",
            r#"{"alg":"RS256","typ":"at+jwt","kid":"zz","kid":"k1"}"#,
        ),
        (
            "typ",
            r#"{"alg":"RS256","typ":"JWT","typ":"at+jwt","kid":"k1"}"#,
        ),
        (
            "kid through an escape",
            r#"{"alg":"RS256","typ":"at+jwt","kid":"zz","\u006bid":"k1"}"#,
        ),
    ] {
        add(
            &format!("header repeats {label}"),
            ctx.raw(h, &claims),
            invalid(T::DuplicateMember),
        );
    }
    for (label, extra) in [
        ("sub", r#""sub":"admin""#),
        ("sub through an escape", r#""\u0073ub":"admin""#),
        ("aud", r#""aud":"https://evil.example""#),
        ("tenant", r#""tenant":"globex""#),
        ("scope", r#""scope":"mcp:tools:admin""#),
        ("exp", r#""exp":9999999999"#),
        (
            "iss through escapes",
            r#""\u0069\u0073\u0073":"https://evil.example""#,
        ),
    ] {
        add(
            &format!("claims repeat {label}"),
            ctx.raw(
                &header("RS256"),
                &format!("{},{extra}}}", ctx.claims_open()),
            ),
            invalid(T::DuplicateMember),
        );
    }
    add(
        "claims repeat a member inside an object",
        ctx.raw(
            &header("RS256"),
            &format!(r#"{},"x":{{"a":1,"a":2}}}}"#, ctx.claims_open()),
        ),
        invalid(T::DuplicateMember),
    );

    // --- time ---
    add(
        "expired an hour ago",
        wrong("exp", json!(now() - 3600)),
        invalid(T::Expired),
    );
    add(
        "control: exp as a fractional NumericDate",
        wrong("exp", json!(now() as f64 + 300.5)),
        Expect::Allow,
    );
    out
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

fn der_seq(content: &[u8]) -> Vec<u8> {
    der(0x30, content)
}

/// A DER INTEGER from unsigned big-endian bytes.
fn der_int(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if v.first().is_some_and(|b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    der(0x02, &v)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
