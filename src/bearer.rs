//! Finding the access token in a request: `Authorization: Bearer` (RFC 6750 s2.1) or
//! `Authorization: DPoP` (RFC 9449 s7.1), and refusing every other place a client might put one.

use std::collections::HashMap;

/// Why no usable token was found. Each maps to one RFC 6750 answer in the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// No credentials at all: 401 without an `error` attribute (RFC 6750 s3.1).
    Missing,
    /// `Authorization` uses another scheme: treated as no bearer credentials (401, no error).
    OtherScheme,
    /// 400 `invalid_request`: two `Authorization` headers (Envoy joins them with `,`).
    Duplicate,
    /// 400 `invalid_request`: `access_token` in the query string or a form body (RFC 6750 s2.2,
    /// s2.3 are methods this resource server does not support; MCP forbids the query form).
    NotInHeader,
    /// 400 `invalid_request`: `Bearer` with an empty or non-b64token value.
    Malformed,
    /// 401 `invalid_token`: longer than the configured limit, rejected before parsing.
    TooLarge,
}

impl BearerError {
    pub fn description(self) -> &'static str {
        match self {
            BearerError::Missing => "a bearer token is required",
            BearerError::OtherScheme => {
                "only the Bearer and DPoP authorization schemes are accepted"
            }
            BearerError::Duplicate => "more than one Authorization header",
            BearerError::NotInHeader => {
                "access tokens are accepted only in the Authorization header"
            }
            BearerError::Malformed => "malformed Bearer or DPoP credentials",
            BearerError::TooLarge => "the access token is too large",
        }
    }
}

/// How the access token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RFC 6750: whoever holds the token may use it.
    Bearer,
    /// RFC 9449: the token comes with a proof of the key it is bound to (the `DPoP` header).
    Dpop,
}

/// The access token and how it was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub scheme: Scheme,
    pub token: &'a str,
}

/// Returns the token from `Authorization: Bearer <token>` or `Authorization: DPoP <token>`.
///
/// `headers` are Envoy's lowercased header map, `path` is the raw path with its query, and
/// `form_body` is the body when the request declares `application/x-www-form-urlencoded`.
pub fn extract<'a>(
    headers: &'a HashMap<String, String>,
    path: &str,
    form_body: Option<&[u8]>,
    max_len: usize,
) -> Result<Credentials<'a>, BearerError> {
    let in_query = path
        .split_once('?')
        .is_some_and(|(_, q)| has_access_token(q.as_bytes()));
    let in_form = form_body.is_some_and(has_access_token);
    // A token in the query or a form body is refused whether or not a header is also present:
    // RFC 6750 s3.1 calls "more than one method" an invalid_request.
    if in_query || in_form {
        return Err(BearerError::NotInHeader);
    }
    let Some(value) = headers.get("authorization") else {
        return Err(BearerError::Missing);
    };
    // Checked before anything else looks at the value, so a huge header costs nothing.
    if value.len() > max_len.saturating_add("Bearer ".len()) {
        return Err(BearerError::TooLarge);
    }
    // Envoy joins repeated headers with ','; b64token (RFC 6750 s2.1) never contains one. A
    // comma inside another scheme's credentials (`Digest a="1", b="2"`) is not a duplicate.
    if value.contains(',') {
        return Err(if value.split(',').any(is_bearer_credential) {
            BearerError::Duplicate
        } else {
            BearerError::OtherScheme
        });
    }
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    if value.is_empty() {
        return Err(BearerError::Missing);
    }
    let (scheme, rest) = match value.split_once(' ') {
        Some((s, r)) => (s, r),
        None => (value, ""),
    };
    // The auth-scheme is case-insensitive (RFC 9110 s11.1).
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return Err(BearerError::OtherScheme);
    };
    // credentials = "Bearer" 1*SP b64token (RFC 6750 s2.1); "DPoP" 1*SP token68 (RFC 9449
    // s7.1), the same characters.
    let token = rest.trim_start_matches(' ');
    if token.is_empty() || !is_b64token(token) {
        return Err(BearerError::Malformed);
    }
    Ok(Credentials { scheme, token })
}

/// Whether one of several comma-joined `Authorization` values is a Bearer or DPoP credential.
fn is_bearer_credential(part: &str) -> bool {
    let part = part.trim_start_matches([' ', '\t']);
    ["bearer", "dpop"]
        .iter()
        .any(|name| match part.get(..name.len()) {
            Some(scheme) if scheme.eq_ignore_ascii_case(name) => {
                let rest = &part[name.len()..];
                rest.is_empty() || rest.starts_with(' ')
            }
            _ => false,
        })
}

/// RFC 6750 s2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

fn has_access_token(form: &[u8]) -> bool {
    url::form_urlencoded::parse(form).any(|(k, _)| k == "access_token")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(auth: Option<&str>, path: &str) -> Result<String, BearerError> {
        let h = match auth {
            Some(v) => headers(&[("authorization", v)]),
            None => headers(&[]),
        };
        extract(&h, path, None, 100).map(|c| {
            let scheme = match c.scheme {
                Scheme::Bearer => "",
                Scheme::Dpop => "dpop:",
            };
            format!("{scheme}{}", c.token)
        })
    }

    #[test]
    fn table() {
        use BearerError::*;
        let cases: &[(Option<&str>, &str, Result<&str, BearerError>)] = &[
            (Some("Bearer abc.def.ghi"), "/mcp", Ok("abc.def.ghi")),
            (Some("bearer abc"), "/mcp", Ok("abc")),
            (Some("BEARER abc=="), "/mcp", Ok("abc==")),
            (Some("Bearer   abc"), "/mcp", Ok("abc")),
            (None, "/mcp", Err(Missing)),
            (Some(""), "/mcp", Err(Missing)),
            (Some("   "), "/mcp", Err(Missing)),
            (Some("Basic dXNlcjpwYXNz"), "/mcp", Err(OtherScheme)),
            (Some("Bearerabc"), "/mcp", Err(OtherScheme)),
            (Some("Bearer"), "/mcp", Err(Malformed)),
            (Some("Bearer "), "/mcp", Err(Malformed)),
            (Some("Bearer a b"), "/mcp", Err(Malformed)),
            (Some("Bearer a\"b"), "/mcp", Err(Malformed)),
            (Some("Bearer ==="), "/mcp", Err(Malformed)),
            (Some("Bearer a=b"), "/mcp", Err(Malformed)),
            (Some("Bearer a,Bearer b"), "/mcp", Err(Duplicate)),
            (Some("Bearer a, Basic b"), "/mcp", Err(Duplicate)),
            (Some("DPoP abc.def.ghi"), "/mcp", Ok("dpop:abc.def.ghi")),
            (Some("dpop abc"), "/mcp", Ok("dpop:abc")),
            (Some("DPoP"), "/mcp", Err(Malformed)),
            (Some("DPoPabc"), "/mcp", Err(OtherScheme)),
            (Some("DPoP a, Bearer a"), "/mcp", Err(Duplicate)),
            (Some("Basic a, DPoP b"), "/mcp", Err(Duplicate)),
            (Some("Basic a, bearer b"), "/mcp", Err(Duplicate)),
            (
                Some("Digest username=\"a\", realm=\"b\""),
                "/mcp",
                Err(OtherScheme),
            ),
            (None, "/mcp?access_token=abc", Err(NotInHeader)),
            (
                Some("Bearer abc"),
                "/mcp?x=1&access_token=abc",
                Err(NotInHeader),
            ),
            (Some("Bearer abc"), "/mcp?access_tokenx=1", Ok("abc")),
            (
                Some(&format!("Bearer {}", "a".repeat(101))),
                "/mcp",
                Err(TooLarge),
            ),
            (
                Some(&format!("Bearer {}", "a".repeat(100))),
                "/mcp",
                Ok(&"a".repeat(100)),
            ),
        ];
        for (auth, path, want) in cases {
            let got = run(*auth, path);
            let want = want.map(str::to_owned);
            assert_eq!(got, want, "auth={auth:?} path={path}");
        }
    }

    #[test]
    fn form_body_token_is_refused() {
        let h = headers(&[("authorization", "Bearer abc")]);
        assert_eq!(
            extract(&h, "/mcp", Some(b"a=1&access_token=x"), 100),
            Err(BearerError::NotInHeader)
        );
        assert_eq!(
            extract(&h, "/mcp", Some(b"a=1"), 100).map(|c| c.token),
            Ok("abc")
        );
    }

    #[test]
    fn every_refusal_says_what_is_wrong_in_words_a_challenge_can_carry() {
        use BearerError::*;
        let all = [
            Missing,
            OtherScheme,
            Duplicate,
            NotInHeader,
            Malformed,
            TooLarge,
        ];
        let descriptions: std::collections::HashSet<_> =
            all.iter().map(|e| e.description()).collect();
        // One distinct explanation per refusal, so a client can tell them apart.
        assert_eq!(descriptions.len(), all.len());
        for d in descriptions {
            assert!(!d.is_empty());
            // RFC 6750 s3: `error_description` characters; nothing is lost when it is rendered.
            assert!(d.bytes().all(crate::challenge::is_error_char), "{d}");
        }
        assert_eq!(
            NotInHeader.description(),
            "access tokens are accepted only in the Authorization header"
        );
    }
}
