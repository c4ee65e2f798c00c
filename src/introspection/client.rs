//! One introspection request (RFC 7662 s2.1): the form, this service's client authentication
//! (RFC 6749 s2.3.1, RFC 7523 s2.2), a bounded body, and what can go wrong on the way, as a
//! fixed set of kinds.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{EncodingKey, Header};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use url::Url;
use url::form_urlencoded;

use crate::config::{ClientAuthMethod, IntrospectionConfig, IssuerConfig, SecretError};
use crate::keys::{ReadError, http_client, read_limited};

/// An introspection answer is a small JSON object; this is far above any real one.
pub const MAX_RESPONSE_BYTES: usize = 64 << 10;

/// How long a `private_key_jwt` assertion is valid (RFC 7523 s3: "a limited time window").
const ASSERTION_LIFETIME: i64 = 60;

/// Why the introspector could not be built. Configuration validation reads the same secrets
/// and keys, so these mean a file or variable changed in between.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("introspection: {0}")]
    Secret(#[from] SecretError),
    #[error("introspection: {0}")]
    Key(String),
    #[error("introspection: cannot build HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// A request that produced no usable answer: the service cannot decide (503).
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Failure {
    /// From [`Failure::KINDS`]: a metric label and a readiness field.
    pub kind: &'static str,
    /// For the log: the endpoint and what happened, never the token.
    pub message: String,
}

impl Failure {
    /// Every failure kind; with `active`, `inactive` and `refused`, the `result` label of
    /// `mcp_authz_introspection_requests_total`.
    pub const KINDS: [&'static str; 8] = [
        "timeout",
        "network",
        "server_error",
        "status",
        "too_large",
        "malformed",
        "overloaded",
        "no_endpoint",
    ];

    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// How this service proves who it is to the introspection endpoint.
enum Auth {
    /// The whole `Authorization` header value, built once.
    Basic(HeaderValue),
    Post(String),
    Jwt {
        key: Box<EncodingKey>,
        header: Box<Header>,
        /// The assertion's `aud`: the issuer identifier, which RFC 7523bis recommends and
        /// authorization servers accept at every endpoint.
        audience: String,
    },
}

pub struct Client {
    http: reqwest::Client,
    client_id: String,
    auth: Auth,
}

impl Client {
    pub fn new(
        issuer: &IssuerConfig,
        settings: &IntrospectionConfig,
    ) -> Result<Self, ClientSetupError> {
        let secret = || -> Result<String, ClientSetupError> {
            let bytes = match &settings.client_secret {
                Some(s) => s.read()?,
                None => return Err(ClientSetupError::Key("`client_secret` is not set".into())),
            };
            String::from_utf8(bytes)
                .map_err(|_| ClientSetupError::Key("`client_secret` is not UTF-8".into()))
        };
        let auth = match settings.auth {
            ClientAuthMethod::ClientSecretBasic => {
                Auth::Basic(basic_authorization(&settings.client_id, &secret()?)?)
            }
            ClientAuthMethod::ClientSecretPost => Auth::Post(secret()?),
            ClientAuthMethod::PrivateKeyJwt => {
                let pem = match &settings.private_key {
                    Some(s) => s.read()?,
                    None => return Err(ClientSetupError::Key("`private_key` is not set".into())),
                };
                let key = crate::config::signing_key(settings.signing_alg, &pem)
                    .map_err(ClientSetupError::Key)?;
                let mut header = Header::new(settings.signing_alg);
                header.kid = settings.key_id.clone();
                Auth::Jwt {
                    key: Box::new(key),
                    header: Box::new(header),
                    audience: issuer.issuer.clone(),
                }
            }
        };
        Ok(Self {
            http: http_client(settings.timeout).map_err(ClientSetupError::HttpClient)?,
            client_id: settings.client_id.clone(),
            auth,
        })
    }

    /// The form body and `Authorization` header of a request for `token` at `now`.
    fn request(&self, token: &str, now: i64) -> Result<(String, Option<HeaderValue>), Failure> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("token", token);
        form.append_pair("token_type_hint", "access_token");
        let header = match &self.auth {
            Auth::Basic(value) => Some(value.clone()),
            Auth::Post(secret) => {
                form.append_pair("client_id", &self.client_id);
                form.append_pair("client_secret", secret);
                None
            }
            Auth::Jwt {
                key,
                header,
                audience,
            } => {
                let assertion = self.assertion(key, header, audience, now)?;
                form.append_pair(
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                );
                form.append_pair("client_assertion", &assertion);
                None
            }
        };
        Ok((form.finish(), header))
    }

    /// RFC 7523 s3: `iss` and `sub` are the client id, `aud` the authorization server, a fresh
    /// `jti` so the server can refuse replays, and a short `exp`.
    fn assertion(
        &self,
        key: &EncodingKey,
        header: &Header,
        audience: &str,
        now: i64,
    ) -> Result<String, Failure> {
        let jti: [u8; 16] = rand::random();
        let claims = serde_json::json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "jti": hex::encode(jti),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        jsonwebtoken::encode(header, &claims, key).map_err(|e| {
            Failure::new(
                "malformed",
                format!("cannot sign the client assertion: {e}"),
            )
        })
    }

    /// POSTs the request and returns the body of a 200 answer, at most [`MAX_RESPONSE_BYTES`].
    pub async fn introspect(
        &self,
        endpoint: &Url,
        token: &str,
        now: i64,
    ) -> Result<Vec<u8>, Failure> {
        let (body, authorization) = self.request(token, now)?;
        let http = |e: reqwest::Error| {
            let kind = if e.is_timeout() { "timeout" } else { "network" };
            Failure::new(kind, format!("POST `{endpoint}`: {e}"))
        };
        let mut request = self
            .http
            .post(endpoint.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(body);
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let mut response = request.send().await.map_err(http)?;
        let status = response.status();
        if !status.is_success() {
            let kind = if status.is_server_error() {
                "server_error"
            } else {
                "status"
            };
            return Err(Failure::new(
                kind,
                format!("POST `{endpoint}`: status {}", status.as_u16()),
            ));
        }
        read_limited(&mut response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => Failure::new(
                    "too_large",
                    format!("POST `{endpoint}`: response larger than {MAX_RESPONSE_BYTES} bytes"),
                ),
                ReadError::Http(e) => http(e),
            })
    }
}

/// RFC 6749 s2.3.1: the client id and secret are form-urlencoded (Appendix B) *before* they are
/// joined with `:` and base64-encoded, so a `:` or a non-ASCII character in either survives.
fn basic_authorization(id: &str, secret: &str) -> Result<HeaderValue, ClientSetupError> {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let credentials = format!("{}:{}", encode(id), encode(secret));
    let mut value = HeaderValue::try_from(format!("Basic {}", STANDARD.encode(credentials)))
        .map_err(|e| ClientSetupError::Key(e.to_string()))?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_urlencoded_before_base64() {
        let value = basic_authorization("rs:1 é", "p@ss:w rd+").unwrap();
        let encoded = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
        assert_eq!(decoded, "rs%3A1+%C3%A9:p%40ss%3Aw+rd%2B");
        assert!(value.is_sensitive());
    }
}
