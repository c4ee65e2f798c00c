//! `WWW-Authenticate: Bearer ...` and `WWW-Authenticate: DPoP ...` challenges (RFC 6750 s3,
//! RFC 9449 s7.1, RFC 9728 s5.1) and the OAuth error codes a denial carries.

use std::fmt::Write;

/// RFC 6750 s3.1 error codes, each with its fixed HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: the request is malformed (two credentials, a token in the query string...).
    InvalidRequest,
    /// 401: the token is expired, malformed, revoked or not for this resource.
    InvalidToken,
    /// 403: the token lacks a scope this request needs; clients may step up.
    InsufficientScope,
    /// 401: the DPoP proof is missing, malformed or does not match (RFC 9449 s7.1).
    InvalidDpopProof,
    /// 401: the DPoP proof must carry a nonce from this server, given in `DPoP-Nonce`
    /// (RFC 9449 s9).
    UseDpopNonce,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            ErrorCode::UseDpopNonce => "use_dpop_nonce",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::InvalidToken | ErrorCode::InvalidDpopProof | ErrorCode::UseDpopNonce => 401,
            ErrorCode::InsufficientScope => 403,
        }
    }
}

/// Which authentication scheme a challenge is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scheme<'a> {
    /// RFC 6750 s3.
    #[default]
    Bearer,
    /// RFC 9449 s7.1, with `algs`: the proof algorithms accepted, space-separated.
    Dpop { algs: &'a str },
}

/// One challenge. Each attribute appears at most once (RFC 6750 s3).
#[derive(Debug, Clone, Default)]
pub struct Challenge<'a> {
    pub scheme: Scheme<'a>,
    pub resource_metadata: Option<&'a str>,
    pub scopes: &'a [String],
    pub error: Option<ErrorCode>,
    pub error_description: Option<&'a str>,
}

impl Challenge<'_> {
    /// Renders the header value. Interpolated text is filtered to the characters RFC 6750 s3
    /// allows, so nothing a caller controls can break out of the quoted strings.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(160);
        let mut sep = " ";
        match self.scheme {
            Scheme::Bearer => out.push_str("Bearer"),
            Scheme::Dpop { algs } => {
                out.push_str("DPoP");
                // RFC 9449 s7.1: `algs` is a space-delimited list of JWS `alg` values.
                let algs = algs
                    .split(' ')
                    .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric()));
                let mut first = true;
                for a in algs {
                    out.push_str(if first { " algs=\"" } else { " " });
                    out.push_str(a);
                    first = false;
                }
                if !first {
                    out.push('"');
                    sep = ", ";
                }
            }
        }
        if let Some(code) = self.error {
            let _ = write!(out, "{sep}error=\"{}\"", code.as_str());
            sep = ", ";
        }
        if let Some(desc) = self.error_description {
            out.push_str(sep);
            out.push_str("error_description=\"");
            out.extend(
                desc.chars()
                    .filter(|c| c.is_ascii() && is_error_char(*c as u8)),
            );
            out.push('"');
            sep = ", ";
        }
        let mut scopes = self
            .scopes
            .iter()
            .filter(|s| !s.is_empty() && s.bytes().all(is_scope_char))
            .peekable();
        if scopes.peek().is_some() {
            out.push_str(sep);
            out.push_str("scope=\"");
            for (i, s) in scopes.enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(s);
            }
            out.push('"');
            sep = ", ";
        }
        if let Some(url) = self.resource_metadata {
            out.push_str(sep);
            out.push_str("resource_metadata=\"");
            out.extend(
                url.chars()
                    .filter(|c| c.is_ascii() && is_error_char(*c as u8)),
            );
            out.push('"');
        }
        out
    }
}

/// The step-up challenge: 403 `insufficient_scope` naming the scopes to request (RFC 6750 s3.1,
/// MCP 2025-11-25 scope challenge handling).
pub fn insufficient_scope(
    resource_metadata: &str,
    scopes: &[String],
    scheme: Scheme<'_>,
) -> String {
    Challenge {
        scheme,
        resource_metadata: Some(resource_metadata),
        scopes,
        error: Some(ErrorCode::InsufficientScope),
        error_description: Some(INSUFFICIENT_SCOPE_DESCRIPTION),
    }
    .render()
}

pub const INSUFFICIENT_SCOPE_DESCRIPTION: &str = "additional scopes are required";

/// RFC 6750 s3: `error` and `error_description` use %x20-21 / %x23-5B / %x5D-7E.
pub fn is_error_char(b: u8) -> bool {
    matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)
}

/// RFC 6749 s3.3 / RFC 6750 s3: scope tokens use %x21 / %x23-5B / %x5D-7E.
pub fn is_scope_char(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_challenge_has_no_error() {
        let c = Challenge {
            resource_metadata: Some(
                "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
            ),
            ..Default::default()
        };
        assert_eq!(
            c.render(),
            "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
        );
    }

    #[test]
    fn all_attributes_once_each() {
        let scopes = vec!["mcp:connect".to_string(), "mcp:tools".to_string()];
        let c = Challenge {
            scheme: Scheme::Bearer,
            resource_metadata: Some("https://r/.well-known/oauth-protected-resource"),
            scopes: &scopes,
            error: Some(ErrorCode::InsufficientScope),
            error_description: Some("needs more"),
        };
        let v = c.render();
        assert_eq!(
            v,
            "Bearer error=\"insufficient_scope\", error_description=\"needs more\", scope=\"mcp:connect mcp:tools\", resource_metadata=\"https://r/.well-known/oauth-protected-resource\""
        );
    }

    #[test]
    fn quotes_backslashes_and_control_chars_are_dropped() {
        let scopes = vec!["ok".to_string(), "bad\"scope".to_string(), "".to_string()];
        let c = Challenge {
            scheme: Scheme::Bearer,
            resource_metadata: None,
            scopes: &scopes,
            error: Some(ErrorCode::InvalidToken),
            error_description: Some("a\"b\\c\r\nd\u{e9}"),
        };
        assert_eq!(
            c.render(),
            "Bearer error=\"invalid_token\", error_description=\"abcd\", scope=\"ok\""
        );
    }

    #[test]
    fn statuses_follow_rfc6750_and_rfc9449() {
        assert_eq!(ErrorCode::InvalidRequest.status(), 400);
        assert_eq!(ErrorCode::InvalidToken.status(), 401);
        assert_eq!(ErrorCode::InsufficientScope.status(), 403);
        assert_eq!(ErrorCode::InvalidDpopProof.status(), 401);
        assert_eq!(ErrorCode::UseDpopNonce.status(), 401);
    }

    /// RFC 9449 s7.1: `DPoP algs="ES256 PS256"`, then the same attributes as Bearer.
    #[test]
    fn dpop_challenges_name_the_algorithms_first() {
        let c = Challenge {
            scheme: Scheme::Dpop {
                algs: "ES256 PS256 bad\"alg",
            },
            resource_metadata: Some("https://r/.well-known/oauth-protected-resource"),
            error: Some(ErrorCode::InvalidDpopProof),
            error_description: Some("the DPoP proof is too old"),
            ..Default::default()
        };
        assert_eq!(
            c.render(),
            "DPoP algs=\"ES256 PS256\", error=\"invalid_dpop_proof\", error_description=\"the DPoP proof is too old\", resource_metadata=\"https://r/.well-known/oauth-protected-resource\""
        );
        let bare = Challenge {
            scheme: Scheme::Dpop { algs: "ES256" },
            ..Default::default()
        };
        assert_eq!(bare.render(), "DPoP algs=\"ES256\"");
    }

    #[test]
    fn the_step_up_challenge_names_the_scopes_and_where_the_metadata_is() {
        let scopes = vec!["mcp:tools".to_string(), "files:write".to_string()];
        assert_eq!(
            insufficient_scope(
                "https://r/.well-known/oauth-protected-resource/mcp",
                &scopes,
                Scheme::Bearer,
            ),
            "Bearer error=\"insufficient_scope\", error_description=\"additional scopes are required\", scope=\"mcp:tools files:write\", resource_metadata=\"https://r/.well-known/oauth-protected-resource/mcp\""
        );
    }

    #[test]
    fn resource_metadata_cannot_break_out_of_its_quotes() {
        // Built from configuration, but filtered like everything else interpolated.
        let c = Challenge {
            resource_metadata: Some("https://r/\"x\\y\r\nz\u{e9}"),
            ..Default::default()
        };
        assert_eq!(c.render(), "Bearer resource_metadata=\"https://r/xyz\"");
    }
}
