//! HTTP side of key sets: authorization server metadata discovery (RFC 8414, then OpenID Connect
//! Discovery) and JWKS download, with timeouts, size limits and no redirects.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use reqwest::header::{CACHE_CONTROL, HeaderMap, RETRY_AFTER};
use url::Url;

use super::{KeySetError, KeySetupError};
use crate::config::{Discovery, IssuerConfig, Preset};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET `{url}`: {message}")]
    Http {
        url: String,
        message: String,
        /// `fetch_timeout` elapsed (connecting, waiting, or reading a slow body).
        timeout: bool,
    },
    #[error("GET `{url}`: status {status}")]
    Status {
        url: String,
        status: u16,
        /// The response's `Retry-After` (RFC 9110 s10.2.3), as a delay from now.
        retry_after: Option<Duration>,
    },
    #[error("GET `{url}`: response larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("`{url}`: {message}")]
    Metadata { url: String, message: String },
    #[error("`{url}`: {source}")]
    KeySet {
        url: String,
        #[source]
        source: KeySetError,
    },
    #[error("`{url}`: metadata names issuer `{found}`, expected `{expected}` (RFC 8414 s3.3)")]
    IssuerMismatch {
        url: String,
        found: String,
        expected: String,
    },
    #[error("no discovery document found for issuer `{issuer}` ({tried})")]
    NotDiscovered {
        issuer: String,
        tried: String,
        /// The longest `Retry-After` among the locations tried.
        retry_after: Option<Duration>,
    },
}

impl FetchError {
    /// Every value of [`Self::kind`]: the `error` label of `mcp_authz_jwks_fetch_errors_total`.
    pub const KINDS: [&'static str; 11] = [
        "timeout",
        "network",
        "rate_limited",
        "server_error",
        "status",
        "too_large",
        "malformed_jwks",
        "no_usable_keys",
        "discovery",
        "issuer_mismatch",
        "not_discovered",
    ];

    /// What went wrong, from a fixed set (a metric label and a readiness field): never the
    /// URL or the IdP's words.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Http { timeout: true, .. } => "timeout",
            FetchError::Http { .. } => "network",
            FetchError::Status { status: 429, .. } => "rate_limited",
            FetchError::Status { status, .. } if *status >= 500 => "server_error",
            FetchError::Status { .. } => "status",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::KeySet {
                source: KeySetError::Json(_),
                ..
            } => "malformed_jwks",
            FetchError::KeySet {
                source: KeySetError::Empty { .. },
                ..
            } => "no_usable_keys",
            FetchError::Metadata { .. } => "discovery",
            FetchError::IssuerMismatch { .. } => "issuer_mismatch",
            FetchError::NotDiscovered { .. } => "not_discovered",
        }
    }

    /// How long the IdP asked us to wait before the next request, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. }
            | FetchError::NotDiscovered { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The part of RFC 8414 / OIDC discovery metadata this service reads.
#[derive(serde::Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: Option<String>,
    introspection_endpoint: Option<String>,
}

/// An endpoint discovery looks for in the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `jwks_uri` (RFC 8414 s2).
    Jwks,
    /// `introspection_endpoint` (RFC 8414 s2, RFC 7662 s4).
    Introspection,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Jwks => "jwks_uri",
            Endpoint::Introspection => "introspection_endpoint",
        }
    }
}

/// The HTTP client every request to an authorization server uses: bounded in time, no
/// redirects (one could leave https or the IdP's host; the operator configures the URL).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mcp-authz/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A fetched JWKS.
pub struct Fetched {
    pub url: Url,
    pub body: Vec<u8>,
    /// From `Cache-Control: max-age`, unclamped.
    pub max_age: Option<Duration>,
}

pub struct Fetcher {
    config: Arc<IssuerConfig>,
    client: reqwest::Client,
    max_bytes: usize,
    /// The discovered `jwks_uri`, kept once found; forgotten when a JWKS fetch fails so the
    /// next attempt rediscovers (the IdP may have moved it).
    discovered: ArcSwapOption<Url>,
}

impl Fetcher {
    pub fn new(config: Arc<IssuerConfig>, max_bytes: usize) -> Result<Self, KeySetupError> {
        let client =
            http_client(config.key_refresh.fetch_timeout).map_err(KeySetupError::HttpClient)?;
        Ok(Self {
            config,
            client,
            max_bytes,
            discovered: ArcSwapOption::empty(),
        })
    }

    pub async fn fetch(&self) -> Result<Fetched, FetchError> {
        let url = match (&self.config.jwks_uri, self.discovered.load_full()) {
            (Some(url), _) => url.clone(),
            (None, Some(url)) => (*url).clone(),
            (None, None) => {
                let url = self.discover(Endpoint::Jwks).await?;
                self.discovered.store(Some(Arc::new(url.clone())));
                url
            }
        };
        let result = self.get(&url).await;
        if result.is_err() {
            self.discovered.store(None);
        }
        let (body, headers) = result?;
        Ok(Fetched {
            max_age: max_age(&headers),
            url,
            body,
        })
    }

    /// Tries each well-known location in turn. RFC 8414 s3.1 inserts the well-known segment between host and path; OpenID Connect
    /// Discovery s4 appends it. Either document must name this exact issuer (RFC 8414 s3.3).
    pub async fn discover(&self, endpoint: Endpoint) -> Result<Url, FetchError> {
        let issuer = &self.config.issuer;
        let candidates = discovery_urls_for(&self.config).map_err(|e| FetchError::Metadata {
            url: issuer.clone(),
            message: format!("issuer is not a URL: {e}"),
        })?;
        let mut tried = Vec::new();
        let mut retry_after = None;
        for url in candidates {
            match self.discover_at(&url, endpoint).await {
                Ok(jwks) => return Ok(jwks),
                // A document that names another issuer is a hard error (RFC 8414 s3.3):
                // trying elsewhere could not make it right.
                Err(e @ FetchError::IssuerMismatch { .. }) => return Err(e),
                // Anything else (404, a gateway's 403, HTML, no `jwks_uri`): try the next form.
                Err(e) => {
                    retry_after = retry_after.max(e.retry_after());
                    tried.push(e.to_string());
                }
            }
        }
        Err(FetchError::NotDiscovered {
            issuer: issuer.clone(),
            tried: tried.join("; "),
            retry_after,
        })
    }

    async fn discover_at(&self, url: &Url, endpoint: Endpoint) -> Result<Url, FetchError> {
        let issuer = &self.config.issuer;
        let metadata_error = |message: String| FetchError::Metadata {
            url: url.to_string(),
            message,
        };
        let (body, _) = self.get(url).await?;
        let meta: Metadata = serde_json::from_slice(&body)
            .map_err(|e| metadata_error(format!("invalid metadata document: {e}")))?;
        if &meta.issuer != issuer {
            return Err(FetchError::IssuerMismatch {
                url: url.to_string(),
                found: meta.issuer,
                expected: issuer.clone(),
            });
        }
        let name = endpoint.name();
        let found = match endpoint {
            Endpoint::Jwks => meta.jwks_uri,
            Endpoint::Introspection => meta.introspection_endpoint,
        }
        .ok_or_else(|| metadata_error(format!("metadata has no `{name}`")))?;
        let found = Url::parse(&found)
            .map_err(|e| metadata_error(format!("`{name}` is not a URL: {e}")))?;
        self.config
            .check_transport(&found, name)
            .map_err(|i| metadata_error(i.message))?;
        Ok(found)
    }

    async fn get(&self, url: &Url) -> Result<(Vec<u8>, HeaderMap), FetchError> {
        let http = |e: reqwest::Error| FetchError::Http {
            url: url.to_string(),
            timeout: e.is_timeout(),
            message: e.to_string(),
        };
        let mut response = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(http)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                retry_after: retry_after(response.headers(), SystemTime::now()),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
            limit: self.max_bytes,
        };
        let headers = response.headers().clone();
        let body = match read_limited(&mut response, self.max_bytes).await {
            Ok(body) => body,
            Err(ReadError::TooLarge) => return Err(too_large()),
            Err(ReadError::Http(e)) => return Err(http(e)),
        };
        Ok((body, headers))
    }
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    /// More than the limit.
    TooLarge,
    Http(reqwest::Error),
}

/// Reads a response body chunk by chunk and stops at `max_bytes`: a 50 MB (or endless) body
/// without a `content-length` costs at most `max_bytes` plus one chunk, and the connection is
/// dropped with the response.
pub async fn read_limited(
    response: &mut reqwest::Response,
    max_bytes: usize,
) -> Result<Vec<u8>, ReadError> {
    if response
        .content_length()
        .is_some_and(|n| n > max_bytes as u64)
    {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Where to look for `config`'s metadata, in order: every location for `discovery: auto`, the
/// OpenID Connect one only for `discovery: oidc`.
pub fn discovery_urls_for(config: &IssuerConfig) -> Result<Vec<Url>, url::ParseError> {
    match config.discovery() {
        Discovery::Auto => discovery_urls(&config.issuer),
        Discovery::Oidc => Ok(vec![oidc_url(&config.issuer, config.preset)?]),
    }
}

/// OpenID Connect Discovery 1.0 s4: `<issuer>/.well-known/openid-configuration`. Entra v1 is
/// the exception: its issuer `https://sts.windows.net/{tid}/` is not where it publishes
/// metadata; `https://login.microsoftonline.com/{tid}/.well-known/openid-configuration` is,
/// and that document names the `sts.windows.net` issuer (so the s4.3 issuer check holds).
fn oidc_url(issuer: &str, preset: Option<Preset>) -> Result<Url, url::ParseError> {
    let mut url = Url::parse(issuer)?;
    if preset == Some(Preset::Entra)
        && url.scheme() == "https"
        && url.host_str() == Some("sts.windows.net")
    {
        url.set_host(Some("login.microsoftonline.com"))?;
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{path}/.well-known/openid-configuration"));
    Ok(url)
}

pub fn discovery_urls(issuer: &str) -> Result<Vec<Url>, url::ParseError> {
    let base = Url::parse(issuer)?;
    let path = base.path().trim_end_matches('/');
    let mut rfc8414 = base.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut oidc = base.clone();
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    let mut urls = vec![rfc8414, oidc];
    if !path.is_empty() {
        // RFC 8414 s5 notes some servers publish OIDC metadata in the inserted form too.
        let mut inserted = base.clone();
        inserted.set_path(&format!("/.well-known/openid-configuration{path}"));
        urls.push(inserted);
    }
    Ok(urls)
}

/// `Cache-Control: max-age=N` (RFC 9111 s5.2.2.1); `no-store`/`no-cache` mean "as soon as the
/// lower bound allows".
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(CACHE_CONTROL)?.to_str().ok()?;
    let mut result = None;
    for directive in value.split(',') {
        let directive = directive.trim();
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache")
        {
            return Some(Duration::ZERO);
        }
        if let Some((name, v)) = directive.split_once('=')
            && name.trim().eq_ignore_ascii_case("max-age")
        {
            result = v
                .trim()
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    result
}

/// `Retry-After` (RFC 9110 s10.2.3): delay-seconds or an HTTP-date, as a delay from `now`. A
/// date in the past means "now".
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_or_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(RETRY_AFTER, later.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        h.insert(RETRY_AFTER, earlier.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, "-5".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn discovery_urls_follow_rfc8414_and_oidc() {
        let urls = discovery_urls("https://idp.example.com").unwrap();
        assert_eq!(
            urls[0].as_str(),
            "https://idp.example.com/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            urls[1].as_str(),
            "https://idp.example.com/.well-known/openid-configuration"
        );
        let urls = discovery_urls("https://idp.example.com/realms/acme/").unwrap();
        assert_eq!(
            urls[0].as_str(),
            "https://idp.example.com/.well-known/oauth-authorization-server/realms/acme"
        );
        assert_eq!(
            urls[1].as_str(),
            "https://idp.example.com/realms/acme/.well-known/openid-configuration"
        );
    }

    #[test]
    fn presets_go_straight_to_openid_discovery() {
        let config = |issuer: &str, preset: &str| {
            let yaml = format!(
                "policies: {{dir: .}}\nissuers:\n  - issuer: {issuer}\n    preset: {preset}\n    client_ids: [c]\nservers:\n  - id: s\n    resource: https://mcp.example.com/mcp\n    authorization_servers: [{issuer}]\n"
            );
            crate::config::Config::from_yaml(&yaml)
                .unwrap()
                .issuers
                .remove(0)
        };
        let urls = |issuer: &str, preset: &str| {
            discovery_urls_for(&config(issuer, preset))
                .unwrap()
                .iter()
                .map(Url::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            urls("https://login.microsoftonline.com/tid-1/v2.0", "entra"),
            ["https://login.microsoftonline.com/tid-1/v2.0/.well-known/openid-configuration"]
        );
        // Entra v1: the metadata of the `sts.windows.net` issuer lives on login.microsoftonline.com.
        assert_eq!(
            urls("https://sts.windows.net/tid-1/", "entra"),
            ["https://login.microsoftonline.com/tid-1/.well-known/openid-configuration"]
        );
        assert_eq!(
            urls("https://sts.windows.net/tid-1/", "okta"),
            ["https://sts.windows.net/tid-1/.well-known/openid-configuration"]
        );
        assert_eq!(
            urls("https://tenant.auth0.com/", "auth0"),
            ["https://tenant.auth0.com/.well-known/openid-configuration"]
        );
        assert_eq!(
            urls("https://kc.example.com/realms/acme", "keycloak"),
            ["https://kc.example.com/realms/acme/.well-known/openid-configuration"]
        );
        // Without a preset, RFC 8414 first.
        let mut generic = config("https://kc.example.com/realms/acme", "keycloak");
        generic.preset = None;
        generic.client_ids.clear();
        assert_eq!(discovery_urls_for(&generic).unwrap().len(), 3);
        // An explicit `discovery` wins over the preset's.
        let mut auto = config("https://kc.example.com/realms/acme", "keycloak");
        auto.discovery = Some(Discovery::Auto);
        assert_eq!(discovery_urls_for(&auto).unwrap().len(), 3);
    }

    #[test]
    fn cache_control_max_age() {
        let mut h = HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(CACHE_CONTROL, "public, max-age=600".parse().unwrap());
        assert_eq!(max_age(&h), Some(Duration::from_secs(600)));
        h.insert(CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(max_age(&h), Some(Duration::ZERO));
        h.insert(CACHE_CONTROL, "max-age=abc".parse().unwrap());
        assert_eq!(max_age(&h), None);
    }
}
