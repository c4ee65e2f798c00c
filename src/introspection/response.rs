//! Reading an introspection response (RFC 7662 s2.2): what holds for the token whatever server
//! it is presented to. The rest (time, audience, claim mapping) is `token::check_claims`, run for
//! each request as for a JWT's claims.

use serde_json::{Map, Value};

use crate::token::{TokenError, confirmation, numeric_date};

/// What the authorization server said about a token.
#[derive(Debug, Clone)]
pub enum Answer {
    Active(std::sync::Arc<Active>),
    /// `active: false`, or an active answer this service refuses whatever the server: an `iss`
    /// naming another issuer, a `token_type` that is not an access token's, a malformed `cnf`.
    Refused(TokenError),
}

/// An active token's facts.
#[derive(Debug)]
pub struct Active {
    /// The response's members but `active`: what the claim checks and the mapping read.
    pub claims: Map<String, Value>,
    /// `exp`, seconds since the epoch.
    pub exp: i64,
    /// `cnf.jkt`: the DPoP key the token is bound to (RFC 9449 s6.2).
    pub confirmation: Option<Box<str>>,
    pub token_type: TokenType,
}

/// How the token is presented (RFC 7662 s2.2 `token_type`, RFC 6749 s7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// `Bearer`, or no `token_type`.
    Bearer,
    /// `DPoP` (RFC 9449 s6.2): bound to the key in `cnf.jkt`.
    DPoP,
}

/// The body is not an introspection response: the service cannot tell (503), which is never
/// the caller's fault.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Reads a 200 answer from `issuer`'s endpoint.
pub fn parse(body: &[u8], issuer: &str) -> Result<Answer, Malformed> {
    const MAX_DEPTH: usize = 16;
    let text = std::str::from_utf8(body).map_err(|_| Malformed("not UTF-8"))?;
    // As for a JWT's claims: one answer must not read two ways (see `strict_json`).
    let mut claims = match crate::strict_json::parse(text, MAX_DEPTH) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(Malformed("not a JSON object")),
        Err(_) => return Err(Malformed("not JSON, or a member repeated")),
    };
    // RFC 7662 s2.2: `active` is REQUIRED, a boolean.
    match claims.remove("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Ok(Answer::Refused(TokenError::Inactive)),
        _ => return Err(Malformed("`active` is missing or not a boolean")),
    }
    Ok(active(claims, issuer).map_or_else(Answer::Refused, |a| Answer::Active(a.into())))
}

fn active(claims: Map<String, Value>, issuer: &str) -> Result<Active, TokenError> {
    // RFC 7662 s2.2 `iss`, compared as a JWT's (RFC 9068 s4): when present, exactly ours.
    match claims.get("iss") {
        None => {}
        Some(Value::String(iss)) if iss == issuer => {}
        Some(Value::String(_)) => return Err(TokenError::UntrustedIssuer),
        Some(_) => return Err(TokenError::BadClaim),
    }
    let token_type = match claims.get("token_type") {
        None => TokenType::Bearer,
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => TokenType::Bearer,
        Some(Value::String(t)) if t.eq_ignore_ascii_case("dpop") => TokenType::DPoP,
        // `refresh_token` and the like: not something to call a resource with.
        Some(Value::String(_)) => return Err(TokenError::WrongType),
        Some(_) => return Err(TokenError::BadClaim),
    };
    let confirmation = confirmation(&claims)?;
    if token_type == TokenType::DPoP && confirmation.is_none() {
        // A DPoP token whose key we do not know cannot have its proofs checked.
        return Err(TokenError::BadClaim);
    }
    let exp = numeric_date(&claims, "exp")?.ok_or(TokenError::MissingExpiry)?;
    Ok(Active {
        claims,
        exp,
        confirmation,
        token_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://as.example.com";
    const JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

    fn refused(body: &str) -> TokenError {
        match parse(body.as_bytes(), ISS) {
            Ok(Answer::Refused(e)) => e,
            other => panic!("{body}: {other:?}"),
        }
    }

    fn active(body: &str) -> std::sync::Arc<Active> {
        match parse(body.as_bytes(), ISS) {
            Ok(Answer::Active(a)) => a,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn introspect_active_false_is_an_inactive_token() {
        assert_eq!(refused(r#"{"active":false}"#), TokenError::Inactive);
        // Whatever else an inactive answer says.
        assert_eq!(
            refused(r#"{"active":false,"iss":"https://other","exp":"x"}"#),
            TokenError::Inactive
        );
    }

    #[test]
    fn introspect_an_answer_without_active_is_malformed() {
        for body in [
            "{}",
            r#"{"active":"true"}"#,
            r#"{"active":1}"#,
            r#"{"active":true,"active":false}"#,
            "[true]",
            "<html>",
            "",
        ] {
            assert!(parse(body.as_bytes(), ISS).is_err(), "{body}");
        }
        assert!(parse(b"{\"active\":\xff}", ISS).is_err());
    }

    #[test]
    fn introspect_iss_must_be_the_issuer_when_present() {
        let a = active(r#"{"active":true,"exp":2000000000,"sub":"alice"}"#);
        assert_eq!(a.exp, 2_000_000_000);
        assert!(!a.claims.contains_key("active"));
        active(r#"{"active":true,"exp":2000000000,"iss":"https://as.example.com"}"#);
        for iss in [
            r#""https://as.example.com/""#,
            r#""https://AS.example.com""#,
        ] {
            assert_eq!(
                refused(&format!(
                    r#"{{"active":true,"exp":2000000000,"iss":{iss}}}"#
                )),
                TokenError::UntrustedIssuer
            );
        }
        assert_eq!(
            refused(r#"{"active":true,"exp":2000000000,"iss":7}"#),
            TokenError::BadClaim
        );
    }

    #[test]
    fn introspect_exp_is_required_and_numeric() {
        assert_eq!(refused(r#"{"active":true}"#), TokenError::MissingExpiry);
        assert_eq!(
            refused(r#"{"active":true,"exp":"2000000000"}"#),
            TokenError::BadClaim
        );
    }

    #[test]
    fn introspect_token_type_and_cnf() {
        let a = active(r#"{"active":true,"exp":2000000000,"token_type":"bearer"}"#);
        assert_eq!(a.token_type, TokenType::Bearer);
        assert_eq!(a.confirmation, None);
        let a = active(&format!(
            r#"{{"active":true,"exp":2000000000,"token_type":"DPoP","cnf":{{"jkt":"{JKT}"}}}}"#
        ));
        assert_eq!(a.token_type, TokenType::DPoP);
        assert_eq!(a.confirmation.as_deref(), Some(JKT));
        // Bound without saying DPoP: still bound (the DPoP rules apply by `cnf.jkt`).
        let a = active(&format!(
            r#"{{"active":true,"exp":2000000000,"cnf":{{"jkt":"{JKT}"}}}}"#
        ));
        assert_eq!(a.confirmation.as_deref(), Some(JKT));
        assert_eq!(
            refused(r#"{"active":true,"exp":2000000000,"token_type":"DPoP"}"#),
            TokenError::BadClaim
        );
        assert_eq!(
            refused(r#"{"active":true,"exp":2000000000,"token_type":"DPoP","cnf":{}}"#),
            TokenError::BadClaim
        );
        assert_eq!(
            refused(r#"{"active":true,"exp":2000000000,"cnf":{"jkt":"short"}}"#),
            TokenError::BadClaim
        );
        assert_eq!(
            refused(r#"{"active":true,"exp":2000000000,"cnf":"x"}"#),
            TokenError::BadClaim
        );
        assert_eq!(
            refused(r#"{"active":true,"exp":2000000000,"token_type":"refresh_token"}"#),
            TokenError::WrongType
        );
        assert_eq!(
            refused(r#"{"active":true,"exp":2000000000,"token_type":1}"#),
            TokenError::BadClaim
        );
    }
}
