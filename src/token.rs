//! JWT access token verification (RFC 9068, RFC 8725): parse once, pick the issuer the server
//! trusts, verify the signature with a key bound to its algorithm, then check the claims.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Map, Value};

mod verified;

use crate::config::{IssuerConfig, TypPolicy};
use crate::identity::{Claims, Identity};
use crate::keys::{IssuerKeys, KeySet, Lookup};
use crate::resource::ProtectedServer;
pub use verified::{KeyBinding, Revalidation, Verified};

/// Why a token was refused. Every variant but `KeysUnavailable` is a 401 `invalid_token`;
/// descriptions are fixed strings so nothing from the token is ever echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    NotAJwt,
    Encrypted,
    BadHeader,
    UnsupportedAlgorithm,
    CriticalHeader,
    WrongType,
    BadPayload,
    UntrustedIssuer,
    AlgorithmNotAllowed,
    UnknownKey,
    AmbiguousKey,
    KeyAlgorithmMismatch,
    BadSignature,
    MissingExpiry,
    Expired,
    NotYetValid,
    IssuedInFuture,
    WrongAudience,
    MissingSubject,
    BadClaim,
    /// The header or the claims repeat a member name (see `strict_json`).
    DuplicateMember,
    /// The header names a key by URL or embeds one (`jku`, `x5u`, `x5c`, `jwk`).
    KeyReference,
    /// `cty: JWT`: the payload claims to be another token (RFC 7519 s5.2).
    NestedToken,
    /// The issuer's keys are not loaded yet: the service cannot decide (503), which is not the
    /// caller's fault.
    KeysUnavailable,
}

impl TokenError {
    pub fn description(self) -> &'static str {
        use TokenError::*;
        match self {
            NotAJwt => "the access token is not a JWT",
            Encrypted => "encrypted (JWE) access tokens are not supported",
            BadHeader => "the token header is malformed",
            UnsupportedAlgorithm => "the token uses an unsupported signature algorithm",
            CriticalHeader => "the token has critical header parameters that are not understood",
            WrongType => "the token is not an access token (typ must be at+jwt)",
            BadPayload => "the token payload is malformed",
            UntrustedIssuer => "the token issuer is not trusted for this resource",
            AlgorithmNotAllowed => "the token signature algorithm is not allowed for this issuer",
            UnknownKey => "the token is signed with an unknown key",
            AmbiguousKey => "the token has no kid and the issuer publishes several keys",
            KeyAlgorithmMismatch => "the signing key may not be used with the token algorithm",
            BadSignature => "the token signature is invalid",
            MissingExpiry => "the token has no expiry",
            Expired => "the token has expired",
            NotYetValid => "the token is not valid yet",
            IssuedInFuture => "the token was issued in the future",
            WrongAudience => "the token audience does not include this resource",
            MissingSubject => "the token has no subject",
            BadClaim => "the token has a malformed claim",
            DuplicateMember => "the token repeats a member in its header or claims",
            KeyReference => "the token header references or embeds a key (jku, x5u, x5c, jwk)",
            NestedToken => "nested tokens (cty JWT) are not accepted",
            KeysUnavailable => "the issuer signing keys are not available yet",
        }
    }
}

/// An RSA signature is as long as the modulus, at most 8,192 bits (aws-lc's limit); ECDSA and
/// EdDSA signatures and HMAC tags are shorter.
const MAX_SIGNATURE_BYTES: usize = 1024;

/// A token split and decoded, not yet trusted.
pub struct Parsed<'a> {
    header: Header,
    claims: Map<String, Value>,
    /// `base64url(header) "." base64url(payload)`: what the signature covers.
    message: &'a str,
    signature: &'a str,
}

impl<'a> Parsed<'a> {
    pub fn parse(token: &'a str) -> Result<Self, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::NotAJwt);
        };
        match parts.count() {
            0 => {}
            // RFC 7516 compact JWE has five parts.
            2 => return Err(TokenError::Encrypted),
            _ => return Err(TokenError::NotAJwt),
        }
        let header = decode_header(h)?;
        if header.crit.is_some() {
            // RFC 7515 s4.1.11: a recipient that does not understand a listed extension
            // must reject the JWS. This service understands none.
            return Err(TokenError::CriticalHeader);
        }
        // RFC 7519 s5.2: `cty: JWT` says the payload is itself a JWT. An access token is never
        // nested (RFC 9068), and a reader that honours `cty` would take its claims from the
        // inner token while this one reads the outer: one token, two readings.
        if header
            .cty
            .as_deref()
            .is_some_and(|cty| cty.eq_ignore_ascii_case("jwt"))
        {
            return Err(TokenError::NestedToken);
        }
        if header.enc.is_some() || header.zip.is_some() {
            return Err(TokenError::Encrypted);
        }
        // RFC 8725 s3.10: keys come only from the configured issuer, never from a URL or a key
        // the token itself carries. A token that offers one is refused rather than having the
        // offer ignored, so nobody downstream can be tempted to follow it.
        if header.jku.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
            || header.jwk.is_some()
        {
            return Err(TokenError::KeyReference);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| TokenError::BadPayload)?;
        let claims = match strict(&payload, TokenError::BadPayload)? {
            Value::Object(claims) => claims,
            _ => return Err(TokenError::BadPayload),
        };
        Ok(Self {
            header,
            claims,
            message: &token[..h.len() + 1 + p.len()],
            signature: s,
        })
    }

    pub fn kid(&self) -> Option<&str> {
        self.header.kid.as_deref()
    }

    pub fn alg(&self) -> Algorithm {
        self.header.alg
    }

    /// Would this token pass the header checks that come before the key lookup? Only then is
    /// an unknown `kid` worth a refetch.
    pub fn refetch_worthwhile(&self, config: &IssuerConfig) -> bool {
        config.algorithms.contains(&self.header.alg)
            && check_typ(config.typ, self.header.typ.as_deref()).is_ok()
    }

    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// The issuer this server trusts for this token, matched on the exact `iss` string.
    pub fn trusted_issuer<'s>(
        &self,
        server: &'s ProtectedServer,
    ) -> Result<&'s std::sync::Arc<IssuerKeys>, TokenError> {
        let iss = self.issuer().ok_or(TokenError::UntrustedIssuer)?;
        server
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or(TokenError::UntrustedIssuer)
    }

    /// Verifies the signature with `keys` and checks the claims for `server` at `now`.
    /// `UnknownKey` means a refetch of the key set may help.
    pub fn verify(
        self,
        config: &IssuerConfig,
        keys: &KeySet,
        server: &ProtectedServer,
        now: i64,
    ) -> Result<Verified, TokenError> {
        let alg = self.header.alg;
        if !config.algorithms.contains(&alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        check_typ(config.typ, self.header.typ.as_deref())?;
        let key = match keys.find(self.kid(), alg) {
            Lookup::Found(key) => key,
            Lookup::UnknownKid => return Err(TokenError::UnknownKey),
            Lookup::Ambiguous => return Err(TokenError::AmbiguousKey),
            Lookup::WrongAlgorithm => return Err(TokenError::KeyAlgorithmMismatch),
        };
        // The largest signature accepted is an RSA-8192 one (1,024 bytes); a longer one is bad
        // before any crypto runs. Decoded on the stack: no allocation per token.
        // `decode_slice` asks for room for its estimate, up to 2 bytes over the exact length.
        let mut raw = [0u8; MAX_SIGNATURE_BYTES + 2];
        let len = URL_SAFE_NO_PAD
            .decode_slice(self.signature, &mut raw)
            .map_err(|_| TokenError::BadSignature)?;
        let signature = raw.get(..len).ok_or(TokenError::BadSignature)?;
        if !key.verify(alg, self.message.as_bytes(), signature) {
            return Err(TokenError::BadSignature);
        }
        let leeway = i64::try_from(config.leeway.as_secs()).unwrap_or(0);
        let kid = self.header.kid.clone();
        let fingerprint = key.fingerprint;
        let audience = audiences(&self.claims);
        let identity = check_claims(&self.claims, config, server, now)?;
        let confirmation = confirmation(&self.claims)?;
        Ok(Verified {
            valid_until: identity.expires_at.saturating_add(leeway),
            identity,
            audience,
            confirmation,
            binding: KeyBinding {
                kid,
                alg,
                fingerprint,
            },
        })
    }
}

/// The claim checks and the claim mapping, shared by every kind of access token whose claims
/// are known (a verified JWT's, an introspection response's, RFC 7662 s2.2): time, audience,
/// `jti`'s type, then the issuer's claim mapping.
pub fn check_claims(
    c: &Map<String, Value>,
    config: &IssuerConfig,
    server: &ProtectedServer,
    now: i64,
) -> Result<Identity, TokenError> {
    let leeway = i64::try_from(config.leeway.as_secs()).unwrap_or(0);
    // RFC 9068 s2.2: exp is required. RFC 7519 s4.1.4: the token is valid only *before*
    // `exp` (plus the leeway): at `exp + leeway` it has expired.
    let exp = numeric_date(c, "exp")?.ok_or(TokenError::MissingExpiry)?;
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = numeric_date(c, "nbf")?
        && nbf > now.saturating_add(leeway)
    {
        return Err(TokenError::NotYetValid);
    }
    if let Some(iat) = numeric_date(c, "iat")?
        && iat > now.saturating_add(leeway)
    {
        return Err(TokenError::IssuedInFuture);
    }
    if !audience_ok(&audiences(c), server) {
        return Err(TokenError::WrongAudience);
    }
    // RFC 7519 s4.1.7: `jti` is a string. It may be absent (not every issuer sets it), but
    // a token that has one of another type is not the token its issuer meant to write.
    if c.get("jti").is_some_and(|jti| !jti.is_string()) {
        return Err(TokenError::BadClaim);
    }
    let map = &config.claims;
    let subject = match c.get(&map.subject) {
        Some(Value::String(s)) if !s.is_empty() => header_safe(s)?.to_owned(),
        None => return Err(TokenError::MissingSubject),
        _ => return Err(TokenError::BadClaim),
    };
    let tenant = match &map.tenant {
        Some(name) => optional_string(c, name)?,
        None => None,
    };
    let mut client_id = None;
    for name in &map.client_id {
        if let Some(v) = optional_string(c, name)? {
            client_id = Some(v);
            break;
        }
    }
    let scopes = match map.scopes.iter().find_map(|n| c.get(n)) {
        Some(v) => string_list(v)?,
        None => Vec::new(),
    };
    let groups = match map.groups.as_ref().and_then(|n| c.get(n)) {
        Some(v) => string_list(v)?,
        None => Vec::new(),
    };
    Ok(Identity {
        issuer: config.issuer.clone(),
        subject,
        tenant,
        client_id,
        scopes,
        groups,
        expires_at: exp,
        claims: Claims::from(c),
    })
}

/// RFC 9449 s6 / RFC 7800 s3.1: the `cnf` claim's `jkt`, the SHA-256 JWK thumbprint (RFC 7638)
/// of the key a DPoP-bound token is bound to. A `cnf` of another shape, or a `jkt` that is not
/// a base64url SHA-256 digest, makes the token malformed rather than silently unbound.
pub fn confirmation(c: &Map<String, Value>) -> Result<Option<Box<str>>, TokenError> {
    let Some(cnf) = c.get("cnf") else {
        return Ok(None);
    };
    let Value::Object(cnf) = cnf else {
        return Err(TokenError::BadClaim);
    };
    match cnf.get("jkt") {
        None => Ok(None),
        Some(Value::String(jkt)) if jkt.len() == 43 && URL_SAFE_NO_PAD.decode(jkt).is_ok() => {
            Ok(Some(jkt.as_str().into()))
        }
        Some(_) => Err(TokenError::BadClaim),
    }
}

/// Seconds since the epoch (JWT NumericDate, RFC 7519 s2).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// RFC 9068 s4: `aud` must contain this resource (RFC 8707 resource indicator).
fn audience_ok(audience: &[Box<str>], server: &ProtectedServer) -> bool {
    audience.iter().any(|a| server.is_audience(a))
}

/// The token's audiences: `aud` as one string or the strings of an array (RFC 7519 s4.1.3);
/// none for any other shape, which no server then accepts.
fn audiences(claims: &Map<String, Value>) -> Box<[Box<str>]> {
    match claims.get("aud") {
        Some(Value::String(a)) => Box::new([a.as_str().into()]),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(Into::into)
            .collect(),
        _ => Box::default(),
    }
}

fn decode_header(h: &str) -> Result<Header, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| TokenError::BadHeader)?;
    let value = strict(&bytes, TokenError::BadHeader)?;
    // `alg` is checked apart from the rest of the header so that `none` and unknown
    // algorithms get their own answer (RFC 8725 s3.1).
    match value.get("alg").and_then(Value::as_str) {
        Some(a) if a.parse::<Algorithm>().is_ok() => {}
        Some(_) => return Err(TokenError::UnsupportedAlgorithm),
        None => return Err(TokenError::BadHeader),
    }
    serde_json::from_value(value).map_err(|_| TokenError::BadHeader)
}

/// A JWT header or claims set: UTF-8 JSON with no repeated member (RFC 7515 s5.2 would let the
/// last one win; one token must not read two ways) and shallow nesting (real claims are flat).
fn strict(bytes: &[u8], malformed: TokenError) -> Result<Value, TokenError> {
    const MAX_DEPTH: usize = 16;
    let text = std::str::from_utf8(bytes).map_err(|_| malformed)?;
    crate::strict_json::parse(text, MAX_DEPTH).map_err(|e| match e {
        crate::strict_json::StrictJsonError::DuplicateKey => TokenError::DuplicateMember,
        _ => malformed,
    })
}

/// RFC 9068 s2.1 / s4: `at+jwt`, with or without the `application/` prefix, case-insensitive.
fn check_typ(policy: TypPolicy, typ: Option<&str>) -> Result<(), TokenError> {
    // Media types are case-insensitive (RFC 7515 s4.1.9), the `application/` prefix included.
    let typ = typ.map(|t| match t.get(..12) {
        Some(p) if p.eq_ignore_ascii_case("application/") => &t[12..],
        _ => t,
    });
    let ok = match (policy, typ) {
        (_, Some(t)) if t.eq_ignore_ascii_case("at+jwt") => true,
        (TypPolicy::Relaxed, None) => true,
        (TypPolicy::Relaxed, Some(t)) => t.eq_ignore_ascii_case("jwt"),
        (TypPolicy::Strict, _) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(TokenError::WrongType)
    }
}

/// RFC 7519 s2 NumericDate: seconds, possibly fractional.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(TokenError::BadClaim),
        Some(_) => Err(TokenError::BadClaim),
    }
}

fn optional_string(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(header_safe(s)?.to_owned())),
        Some(_) => Err(TokenError::BadClaim),
    }
}

/// A space-delimited string (RFC 9068 `scope`) or an array of strings (`scp`, groups).
fn string_list(v: &Value) -> Result<Vec<String>, TokenError> {
    match v {
        Value::String(s) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(|s| header_safe(s).map(str::to_owned))
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) if !s.contains(' ') => header_safe(s).map(str::to_owned),
                _ => Err(TokenError::BadClaim),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(TokenError::BadClaim),
    }
}

/// Identity values become upstream headers and log fields: control characters could split or
/// smuggle them, and surrounding whitespace or invisible and bidi-override characters could make
/// one identity look like another once trimmed or displayed.
fn header_safe(s: &str) -> Result<&str, TokenError> {
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
    };
    if s.trim() != s || s.chars().any(invisible) {
        Err(TokenError::BadClaim)
    } else {
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_policy() {
        use TypPolicy::*;
        assert!(check_typ(Strict, Some("at+jwt")).is_ok());
        assert!(check_typ(Strict, Some("application/AT+JWT")).is_ok());
        assert!(check_typ(Strict, Some("Application/at+jwt")).is_ok());
        assert!(check_typ(Strict, Some("JWT")).is_err());
        assert!(check_typ(Strict, None).is_err());
        assert!(check_typ(Relaxed, Some("JWT")).is_ok());
        assert!(check_typ(Relaxed, None).is_ok());
        assert!(check_typ(Relaxed, Some("id+jwt")).is_err());
        // Only `application/` itself may be left off: any other 12-byte prefix stays.
        assert!(check_typ(Strict, Some("vnd.example/at+jwt")).is_err());
        assert!(check_typ(Strict, Some("applicationXat+jwt")).is_err());
        assert!(check_typ(Relaxed, Some("text/plainXXjwt")).is_err());
    }

    #[test]
    fn scope_shapes() {
        assert_eq!(
            string_list(&serde_json::json!("a  b")).unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!(
            string_list(&serde_json::json!(["a", "b"])).unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );
        assert!(string_list(&serde_json::json!([1])).is_err());
        assert!(string_list(&serde_json::json!({"a": 1})).is_err());
        assert!(string_list(&serde_json::json!("a\nb")).is_err());
        assert!(header_safe(" alice").is_err());
        assert!(header_safe("ali\u{202E}ce").is_err());
        assert!(header_safe("alice@example.com").is_ok());
        assert!(header_safe("J\u{00F6}rg").is_ok());
    }

    #[test]
    fn repeated_members_and_key_references_are_refused() {
        let token = |header: &str, claims: &str| {
            format!(
                "{}.{}.c2ln",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims)
            )
        };
        let ok = r#"{"alg":"RS256","typ":"at+jwt","kid":"k"}"#;
        assert!(Parsed::parse(&token(ok, r#"{"sub":"alice"}"#)).is_ok());
        for (header, claims, want) in [
            (
                ok,
                r#"{"sub":"dev-user","sub":"admin"}"#,
                TokenError::DuplicateMember,
            ),
            (
                ok,
                r#"{"sub":"alice","sub":"admin"}"#,
                TokenError::DuplicateMember,
            ),
            (
                ok,
                r#"{"sub":"alice","x":{"a":1,"a":2}}"#,
                TokenError::DuplicateMember,
            ),
            (
                r#"{"alg":"RS256","kid":"a","kid":"b"}"#,
                "{}",
                TokenError::DuplicateMember,
            ),
            (
                r#"{"alg":"HS256","alg":"RS256"}"#,
                "{}",
                TokenError::DuplicateMember,
            ),
            (
                r#"{"alg":"RS256","jku":"https://evil.example/jwks"}"#,
                "{}",
                TokenError::KeyReference,
            ),
            (
                r#"{"alg":"RS256","x5u":"https://evil.example/cert"}"#,
                "{}",
                TokenError::KeyReference,
            ),
            (
                r#"{"alg":"RS256","x5c":["MIIB"]}"#,
                "{}",
                TokenError::KeyReference,
            ),
            (
                r#"{"alg":"RS256","jwk":{"kty":"oct","k":"c2VjcmV0"}}"#,
                "{}",
                TokenError::KeyReference,
            ),
            (ok, "[1]", TokenError::BadPayload),
            (
                r#"{"alg":"RS256","kid":"k","zip":"DEF"}"#,
                r#"{"sub":"alice"}"#,
                TokenError::Encrypted,
            ),
            (
                r#"{"alg":"RS256","kid":"k","enc":"A256GCM"}"#,
                r#"{"sub":"alice"}"#,
                TokenError::Encrypted,
            ),
            (
                r#"{"alg":"RS256","kid":"k","cty":"JWT"}"#,
                r#"{"sub":"alice"}"#,
                TokenError::NestedToken,
            ),
            (
                r#"{"alg":"RS256","kid":"k","cty":"jwt"}"#,
                r#""eyJ.eyJ.sig""#,
                TokenError::NestedToken,
            ),
        ] {
            assert_eq!(
                Parsed::parse(&token(header, claims)).err(),
                Some(want),
                "{header} {claims}"
            );
        }
    }

    /// A token whose signature is never checked: `check_claims` runs on the parsed claims.
    fn unsigned(claims: &Value) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"at+jwt","kid":"k"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    const ISS: &str = "https://idp.test";
    const RESOURCE: &str = "https://mcp.example.com/mcp";

    /// The test configuration's issuer, with `keys` as its key set, and its one server.
    fn setup(
        keys: &[&crate::testutil::TestKey],
    ) -> (
        IssuerConfig,
        KeySet,
        ProtectedServer,
        std::sync::Arc<IssuerKeys>,
    ) {
        let config =
            crate::config::Config::from_yaml(&crate::testutil::config_yaml(ISS, RESOURCE, ""))
                .unwrap();
        let issuer = config.issuers[0].clone();
        let jwks = serde_json::json!({
            "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>()
        })
        .to_string();
        let set = || {
            KeySet::from_jwks(jwks.as_bytes(), &issuer.algorithms)
                .unwrap()
                .0
        };
        let published = crate::keys::IssuerKeys::with_static(
            issuer.clone(),
            set(),
            crate::metrics::Metrics::unregistered(),
        );
        let server = ProtectedServer::new(&config.servers[0], |_| Some(published.clone())).unwrap();
        let set = set();
        (issuer, set, server, published)
    }

    fn check(claims: &Value, now: i64) -> Result<Identity, TokenError> {
        let (issuer, _, server, _) = setup(&[&crate::testutil::TestKey::rsa("k")]);
        check_claims(
            &Parsed::parse(&unsigned(claims)).unwrap().claims,
            &issuer,
            &server,
            now,
        )
    }

    #[test]
    fn a_token_is_verified_with_the_key_its_kid_names() {
        use crate::testutil::TestKey;
        let (k1, k2) = (TestKey::rsa("k1"), TestKey::rsa("k2"));
        let (issuer, set, server, _) = setup(&[&k1, &k2]);
        let claims = crate::testutil::claims(ISS, RESOURCE);
        let now = claims["iat"].as_i64().unwrap();
        let token = k2.token(&claims);
        let parsed = Parsed::parse(&token).unwrap();
        assert_eq!(parsed.kid(), Some("k2"));
        assert_eq!(parsed.alg(), Algorithm::RS256);
        let verified = parsed.verify(&issuer, &set, &server, now).unwrap();
        assert_eq!(verified.binding.kid.as_deref(), Some("k2"));
        assert_eq!(verified.identity.subject, "alice");
        // Signed by neither published key under k1's name: a bad signature, not a pass.
        let forged = TestKey::rsa("k1").token(&claims);
        assert_eq!(
            Parsed::parse(&forged)
                .unwrap()
                .verify(&issuer, &set, &server, now)
                .err(),
            Some(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_cached_verification_holds_while_its_key_is_published_and_before_expiry() {
        use crate::testutil::TestKey;
        let k1 = TestKey::rsa("k1");
        let (issuer, set, server, published) = setup(&[&k1]);
        let claims = crate::testutil::claims(ISS, RESOURCE);
        let now = claims["iat"].as_i64().unwrap();
        let token = k1.token(&claims);
        let verified = Parsed::parse(&token)
            .unwrap()
            .verify(&issuer, &set, &server, now)
            .unwrap();
        assert_eq!(verified.revalidate(&server, now), Revalidation::Valid);
        // RFC 7519 s4.1.4, as at verification: expired at exp + leeway.
        let end = verified.valid_until;
        assert_eq!(verified.revalidate(&server, end - 1), Revalidation::Valid);
        assert_eq!(
            verified.revalidate(&server, end),
            Revalidation::Refused(TokenError::Expired)
        );
        // The same kid now names other key material: the binding no longer holds.
        let jwks = serde_json::json!({"keys": [TestKey::rsa("k1").public_jwk()]}).to_string();
        published.replace_keys(
            KeySet::from_jwks(jwks.as_bytes(), &issuer.algorithms)
                .unwrap()
                .0,
        );
        assert_eq!(verified.revalidate(&server, now), Revalidation::Stale);
    }

    #[test]
    fn the_largest_rsa_keys_verify() {
        // RSA-8192 signatures are 1,024 bytes, the most `verify` decodes.
        let big = crate::testutil::TestKey::rsa_sized("big", aws_lc_rs::rsa::KeySize::Rsa8192);
        let (issuer, set, server, _) = setup(&[&big]);
        let claims = crate::testutil::claims(ISS, RESOURCE);
        let now = claims["iat"].as_i64().unwrap();
        let token = big.token(&claims);
        assert_eq!(token.rsplit('.').next().unwrap().len(), 1366);
        assert!(
            Parsed::parse(&token)
                .unwrap()
                .verify(&issuer, &set, &server, now)
                .is_ok()
        );
    }

    #[test]
    fn a_refetch_is_worthwhile_only_for_tokens_the_header_checks_would_pass() {
        let (issuer, _, _, _) = setup(&[&crate::testutil::TestKey::rsa("k")]);
        let claims = crate::testutil::claims(ISS, RESOURCE);
        let token = |header: &str| {
            format!(
                "{}.{}.c2ln",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            )
        };
        let worthwhile = |header: &str| {
            Parsed::parse(&token(header))
                .unwrap()
                .refetch_worthwhile(&issuer)
        };
        assert!(worthwhile(r#"{"alg":"RS256","typ":"at+jwt","kid":"new"}"#));
        // An algorithm the issuer does not allow, or a `typ` its policy refuses.
        assert!(!worthwhile(r#"{"alg":"RS512","typ":"at+jwt","kid":"new"}"#));
        assert!(!worthwhile(r#"{"alg":"RS256","typ":"id+jwt","kid":"new"}"#));
    }

    #[test]
    fn optional_claims_and_lists_take_their_documented_shapes() {
        let mut c = crate::testutil::claims(ISS, RESOURCE);
        let now = c["iat"].as_i64().unwrap();
        // An empty tenant is no tenant (never an empty header value).
        c["tenant"] = serde_json::json!("");
        assert_eq!(check(&c, now).unwrap().tenant, None);
        c["tenant"] = serde_json::json!(null);
        assert_eq!(check(&c, now).unwrap().tenant, None);
        assert_eq!(string_list(&Value::Null).unwrap(), Vec::<String>::new());
        // Array members are single values: one with a space would read as two scopes later.
        assert_eq!(
            string_list(&serde_json::json!(["a b"])).err(),
            Some(TokenError::BadClaim)
        );
        assert_eq!(
            string_list(&serde_json::json!(["a", "b"])).unwrap(),
            vec!["a".to_owned(), "b".to_owned()]
        );
    }

    #[test]
    fn a_token_is_valid_before_exp_plus_leeway_and_not_at_it() {
        // RFC 7519 s4.1.4: the current time MUST be before `exp` (plus the leeway it allows).
        let mut c = crate::testutil::claims(ISS, RESOURCE);
        let exp = c["exp"].as_i64().unwrap();
        let config =
            crate::config::Config::from_yaml(&crate::testutil::config_yaml(ISS, RESOURCE, ""))
                .unwrap();
        let leeway = config.issuers[0].leeway.as_secs() as i64;
        assert!(leeway > 0);
        c["iat"] = serde_json::json!(exp - 600);
        assert!(check(&c, exp + leeway - 1).is_ok());
        assert_eq!(check(&c, exp + leeway).err(), Some(TokenError::Expired));
        // RFC 7519 s4.1.5: valid from `nbf` on (with the same leeway).
        c["nbf"] = serde_json::json!(exp - 100);
        assert!(check(&c, exp - 100 - leeway).is_ok());
        assert_eq!(
            check(&c, exp - 101 - leeway).err(),
            Some(TokenError::NotYetValid)
        );
        // An `iat` up to the leeway ahead of the clock is skew, beyond it a token from the future.
        c.as_object_mut().unwrap().remove("nbf");
        let now = exp - 200;
        c["iat"] = serde_json::json!(now + leeway);
        assert!(check(&c, now).is_ok());
        c["iat"] = serde_json::json!(now + leeway + 1);
        assert_eq!(check(&c, now).err(), Some(TokenError::IssuedInFuture));
    }

    #[test]
    fn the_subject_must_be_a_non_empty_string() {
        let mut c = crate::testutil::claims(ISS, RESOURCE);
        let now = c["iat"].as_i64().unwrap();
        assert_eq!(check(&c, now).unwrap().subject, "alice");
        c["sub"] = serde_json::json!("");
        assert_eq!(check(&c, now).err(), Some(TokenError::BadClaim));
        c["sub"] = serde_json::json!(7);
        assert_eq!(check(&c, now).err(), Some(TokenError::BadClaim));
        c.as_object_mut().unwrap().remove("sub");
        assert_eq!(check(&c, now).err(), Some(TokenError::MissingSubject));
    }

    #[test]
    fn unknown_and_none_algorithms_get_their_own_answer() {
        // RFC 8725 s3.1: `none` and algorithms nobody implements are refused as such.
        for alg in ["none", "HS1024", "rs256"] {
            let header = format!(r#"{{"alg":"{alg}","kid":"k"}}"#);
            let token = format!(
                "{}.{}.c2ln",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(r#"{"sub":"alice"}"#)
            );
            assert_eq!(
                Parsed::parse(&token).err(),
                Some(TokenError::UnsupportedAlgorithm),
                "{alg}"
            );
        }
        let token = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"kid":"k"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"alice"}"#)
        );
        assert_eq!(Parsed::parse(&token).err(), Some(TokenError::BadHeader));
    }

    #[test]
    fn parse_shapes() {
        assert_eq!(Parsed::parse("abc").err(), Some(TokenError::NotAJwt));
        assert_eq!(
            Parsed::parse("a.b.c.d.e").err(),
            Some(TokenError::Encrypted)
        );
        assert_eq!(Parsed::parse("a.b.c.d").err(), Some(TokenError::NotAJwt));
        assert_eq!(Parsed::parse("!!.b.c").err(), Some(TokenError::BadHeader));
    }
}
