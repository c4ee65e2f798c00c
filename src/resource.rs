//! Protected MCP servers: matching a request to one, and its OAuth Protected Resource Metadata
//! (RFC 9728), all derived from configuration at load time, never from the request.

use std::sync::Arc;

use serde::Serialize;
use url::Url;

use crate::config::{ServerConfig, StepUpConfig, TenantFrom, TokenBinding};
use crate::keys::IssuerKeys;

/// RFC 9728 s3: the well-known prefix; the resource's path is appended (s3.1).
pub const PRM_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// Could this request path map to another server or tenant once some hop normalises it? Dot
/// segments (`/a/mcp/../../b/mcp`), percent-encoded dots, slashes or backslashes (`%2e%2e`,
/// `..%2f`), raw backslashes and control characters all can: a proxy or mesh that does not
/// normalise paths would route such a request to `/b/mcp` after mcp-authz evaluated it as `/a`.
/// Routing never interprets them; the request is refused (400) instead (RFC 3986 s5.2.4 defines
/// dot-segment removal; s2.4 warns that decoding can change what a path means).
pub fn is_ambiguous_path(path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let encoded = |code: &[u8]| {
        path.as_bytes().windows(3).any(|w| {
            w.first() == Some(&b'%') && w.get(1..).is_some_and(|c| c.eq_ignore_ascii_case(code))
        })
    };
    // `%252e` is `%2e` to a server that decodes twice.
    let double_encoded = |code: &[u8]| {
        path.as_bytes().windows(5).any(|w| {
            w.get(..3) == Some(b"%25".as_slice())
                && w.get(3..).is_some_and(|c| c.eq_ignore_ascii_case(code))
        })
    };
    // A segment's `;parameters` (RFC 2396 s3.3) are dropped by servlet containers and others
    // before dot segments are resolved, so `..;x` climbs like `..`.
    path.split('/')
        .map(|seg| seg.split(';').next().unwrap_or(seg))
        .any(|seg| seg == "." || seg == "..")
        || path.contains('\\')
        || path.chars().any(char::is_control)
        || encoded(b"2e")
        || encoded(b"2f")
        || encoded(b"5c")
        || double_encoded(b"2e")
        || double_encoded(b"2f")
        || double_encoded(b"5c")
}

/// One protected MCP server, ready for the hot path.
pub struct ProtectedServer {
    pub id: String,
    /// As configured: the PRM `resource`, compared byte for byte first.
    pub resource: String,
    /// `resource` split for audience comparison; see [`ProtectedServer::is_audience`].
    audience: Audience,
    pub prm_path: String,
    /// Absolute URL of the PRM document, for `resource_metadata` in challenges.
    pub prm_url: String,
    /// The PRM document, serialized once.
    pub prm_json: Arc<str>,
    hosts: Option<Vec<HostPattern>>,
    path_prefix: String,
    /// Issuers whose tokens this server accepts, in `authorization_servers` order.
    pub issuers: Vec<Arc<IssuerKeys>>,
    pub challenge_scopes: Vec<String>,
    /// Candidates for step-up: a 403 names those among them that would allow the request.
    pub scopes_supported: Vec<String>,
    /// Which of them a step-up 403 names (`servers[].step_up`).
    pub step_up: StepUpConfig,
    /// The configured `tenant` (empty when none); used when `tenant_from` is `None`.
    tenant: String,
    /// Takes the tenant from the request instead; wins over `tenant` (validation refuses both).
    tenant_from: Option<TenantFrom>,
    /// `servers[].list_filter.mode`.
    pub list_filter: crate::config::ListFilterMode,
    /// `servers[].token_binding`.
    pub token_binding: TokenBinding,
    /// `scheme://host[:port]` of `resource`: where clients send requests, for DPoP's `htu`.
    pub origin: String,
    /// `servers[].audiences`: other names of this resource in `aud`, compared byte for byte.
    audiences: Vec<String>,
    /// `servers[].upstream_identity.audience`: when set, an allow carries a signed identity
    /// for this audience (see `crate::upstream_identity`).
    pub upstream_audience: Option<String>,
    /// Position in [`Servers`], set by [`Servers::new`]: indexes per-server state kept beside.
    index: usize,
}

/// Why a configured server cannot be set up. Configuration validation rules all of these out,
/// so they mean a configuration that skipped it.
#[derive(Debug, thiserror::Error)]
pub enum ServerSetupError {
    /// `resource` does not parse as a URL.
    #[error("{0}")]
    ResourceNotUrl(url::ParseError),
    /// `resource` parses, but not as an absolute `http(s)` URI audiences can be compared with.
    #[error("resource is not an absolute URI")]
    ResourceNotAbsolute,
    /// The PRM document could not be serialized.
    #[error("{0}")]
    Metadata(serde_json::Error),
    /// An `authorization_servers` entry names no configured issuer.
    #[error("unknown authorization server `{0}`")]
    UnknownAuthorizationServer(String),
}

struct HostPattern {
    host: String,
    port: Option<String>,
}

#[derive(Serialize)]
struct Prm<'a> {
    resource: &'a str,
    authorization_servers: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    scopes_supported: &'a [String],
    bearer_methods_supported: [&'static str; 1],
    /// RFC 9728 s2: the DPoP proof algorithms accepted.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    dpop_signing_alg_values_supported: &'a [String],
    /// RFC 9728 s2: only DPoP-bound tokens are accepted (`servers[].token_binding: dpop`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dpop_bound_access_tokens_required: bool,
}

/// Where a request goes.
pub enum Route<'a> {
    /// A request for a PRM document.
    Metadata(&'a ProtectedServer),
    /// A request to a protected server.
    Protected(&'a ProtectedServer),
    /// No configured server: denied.
    Unmatched,
}

// === impl ProtectedServer ===

impl ProtectedServer {
    /// `issuers` resolves an `authorization_servers` entry; configuration validation guarantees
    /// every entry resolves. `dpop_algorithms` are the DPoP proof algorithms accepted (`dpop`),
    /// advertised in the PRM document.
    pub fn new(
        config: &ServerConfig,
        dpop_algorithms: &[String],
        issuers: impl Fn(&str) -> Option<Arc<IssuerKeys>>,
    ) -> Result<Self, ServerSetupError> {
        let url = Url::parse(&config.resource).map_err(ServerSetupError::ResourceNotUrl)?;
        let resource_path = url.path().trim_end_matches('/');
        let prm_path = format!("{PRM_PREFIX}{resource_path}");
        let prm_url = format!("{}{prm_path}", url.origin().ascii_serialization());
        let prm_json = serde_json::to_string(&Prm {
            resource: &config.resource,
            authorization_servers: &config.authorization_servers,
            scopes_supported: &config.scopes_supported,
            bearer_methods_supported: ["header"],
            dpop_signing_alg_values_supported: dpop_algorithms,
            dpop_bound_access_tokens_required: config.token_binding == TokenBinding::Dpop,
        })
        .map_err(ServerSetupError::Metadata)?;
        let hosts = match &config.matching.hosts {
            Some(list) if list.iter().any(|h| h == "*") => None,
            Some(list) => Some(list.iter().map(|h| HostPattern::parse(h)).collect()),
            None => Some(vec![HostPattern {
                host: url.host_str().unwrap_or_default().to_ascii_lowercase(),
                port: None,
            }]),
        };
        let path_prefix = match &config.matching.path_prefix {
            Some(p) => p.trim_end_matches('/').to_owned(),
            None => resource_path.to_owned(),
        };
        let issuers = config
            .authorization_servers
            .iter()
            .map(|a| {
                issuers(a).ok_or_else(|| ServerSetupError::UnknownAuthorizationServer(a.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id: config.id.clone(),
            resource: config.resource.clone(),
            audience: Audience::parse(&config.resource)
                .ok_or(ServerSetupError::ResourceNotAbsolute)?,
            prm_path,
            prm_url,
            prm_json: prm_json.into(),
            hosts,
            path_prefix,
            issuers,
            challenge_scopes: config.challenge_scopes.clone(),
            scopes_supported: config.scopes_supported.clone(),
            step_up: config.step_up,
            tenant: config.tenant.clone().unwrap_or_default(),
            tenant_from: config.tenant_from.clone(),
            list_filter: config.list_filter.mode,
            token_binding: config.token_binding,
            origin: url.origin().ascii_serialization(),
            audiences: config.audiences.clone(),
            upstream_audience: config
                .upstream_identity
                .as_ref()
                .map(|u| u.audience.clone()),
            index: 0,
        })
    }

    /// Position in its [`Servers`].
    pub fn index(&self) -> usize {
        self.index
    }

    /// The configured tenant, when it does not come from the request.
    pub fn static_tenant(&self) -> Option<&str> {
        match &self.tenant_from {
            None => Some(&self.tenant),
            Some(_) => None,
        }
    }

    /// The server's tenant for this request; `None` when it should come from the request and
    /// the request does not carry it (the caller denies: fail closed).
    pub fn tenant_for<'a>(
        &'a self,
        path: &'a str,
        headers: &'a std::collections::HashMap<String, String>,
    ) -> Option<&'a str> {
        match &self.tenant_from {
            None => Some(&self.tenant),
            Some(TenantFrom::Header(h)) => headers
                .get(h)
                .map(String::as_str)
                .filter(|v| !v.is_empty() && !v.contains(',')),
            // Dot segments and percent-escapes would let the raw path name one tenant while
            // the router (after normalization) serves another: refused, not interpreted.
            // 1-based; 0 (refused by validation) reads the first segment too.
            Some(TenantFrom::PathSegment(n)) => path
                .split_once('?')
                .map_or(path, |(p, _)| p)
                .split('/')
                .filter(|s| !s.is_empty())
                .nth(n.saturating_sub(1))
                .filter(|s| *s != "." && *s != ".." && !s.contains('%')),
        }
    }

    /// Does one `aud` value name this server? Byte equality, or equality up to the case of
    /// scheme and host and an explicit default port (RFC 3986 s6.2.2.1, s6.2.3), which MCP
    /// clients may vary. The path is compared byte for byte: no dot-segment resolution, no
    /// percent-decoding, so `/a/../weather/mcp` never stands for `/weather/mcp`. Or one of
    /// `servers[].audiences`, byte for byte (they are names, not necessarily URIs).
    pub fn is_audience(&self, aud: &str) -> bool {
        aud == self.resource
            || self.audiences.iter().any(|a| a == aud)
            || Audience::parse(aud).is_some_and(|a| a == self.audience)
    }

    fn matches_host(&self, host: &str) -> bool {
        let Some(patterns) = &self.hosts else {
            return true;
        };
        let (name, port) = split_host(host);
        patterns.iter().any(|p| {
            p.host.eq_ignore_ascii_case(name) && p.port.as_deref().is_none_or(|pp| Some(pp) == port)
        })
    }

    /// Segment-boundary prefix match: `/mcp` matches `/mcp` and `/mcp/x`, not `/mcpx`.
    fn path_match_len(&self, path: &str) -> Option<usize> {
        let p = &self.path_prefix;
        if p.is_empty() {
            return Some(0);
        }
        let rest = path.strip_prefix(p.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(p.len())
    }
}

/// An absolute `http(s)` URI reduced to what audience comparison looks at.
#[derive(Debug, PartialEq, Eq)]
struct Audience {
    https: bool,
    host: String,
    port: Option<u16>,
    path: String,
}

impl Audience {
    fn parse(uri: &str) -> Option<Self> {
        // Anything a lenient parser would silently repair is refused instead.
        if uri.bytes().any(|b| {
            b.is_ascii_whitespace() || b.is_ascii_control() || matches!(b, b'\\' | b'#' | b'?')
        }) {
            return None;
        }
        let (scheme, rest) = uri.split_once("://")?;
        let https = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return None;
        };
        let (authority, path) = rest
            .find('/')
            .and_then(|i| rest.split_at_checked(i))
            .unwrap_or((rest, ""));
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        let (host, port) = split_host(authority);
        let port = match port {
            Some(p) => Some(p.parse::<u16>().ok()?),
            None => None,
        };
        let default = if https { 443 } else { 80 };
        Some(Self {
            https,
            host: host.to_ascii_lowercase(),
            port: port.filter(|p| *p != default),
            // An empty path and `/` are the same resource (RFC 3986 s6.2.3).
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
        })
    }
}

impl HostPattern {
    fn parse(s: &str) -> Self {
        let (host, port) = split_host(s);
        Self {
            host: host.to_ascii_lowercase(),
            port: port.map(str::to_owned),
        }
    }
}

/// Splits `host[:port]`, keeping IPv6 brackets.
fn split_host(host: &str) -> (&str, Option<&str>) {
    if let Some((name, after)) = host
        .rfind(']')
        .and_then(|end| host.split_at_checked(end + 1))
    {
        return match after.strip_prefix(':') {
            Some(port) => (name, Some(port)),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    }
}

// === Servers ===

pub struct Servers {
    list: Vec<ProtectedServer>,
}

impl Servers {
    pub fn new(mut list: Vec<ProtectedServer>) -> Self {
        for (i, server) in list.iter_mut().enumerate() {
            server.index = i;
        }
        Self { list }
    }

    pub fn iter(&self) -> impl Iterator<Item = &ProtectedServer> {
        self.list.iter()
    }

    /// Routes by host and path (query stripped). PRM documents are matched first, by exact
    /// path; the root form `/.well-known/oauth-protected-resource` only when exactly one
    /// server answers on this host (otherwise it would be ambiguous). Otherwise the longest
    /// matching path prefix wins.
    pub fn route(&self, host: &str, path: &str) -> Route<'_> {
        // RFC 3986 s3.2.3: a port is digits (and TCP's are at most 65535). `mcp.example.com:@evil.example` would match on
        // its name here while a URL parser downstream reads `evil.example` as the host.
        let valid_port = |port: &str| {
            port.is_empty()
                || (port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok())
        };
        if split_host(host).1.is_some_and(|port| !valid_port(port)) {
            return Route::Unmatched;
        }
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let on_host = || self.list.iter().filter(|s| s.matches_host(host));
        if path.starts_with(PRM_PREFIX) {
            if let Some(s) = on_host().find(|s| s.prm_path == path) {
                return Route::Metadata(s);
            }
            if path == PRM_PREFIX || path == "/.well-known/oauth-protected-resource/" {
                let mut it = on_host();
                if let (Some(only), None) = (it.next(), it.next()) {
                    return Route::Metadata(only);
                }
            }
        }
        on_host()
            .filter_map(|s| s.path_match_len(path).map(|n| (n, s)))
            .max_by_key(|(n, _)| *n)
            .map_or(Route::Unmatched, |(_, s)| Route::Protected(s))
    }

    /// The PRM document for an admin-port request path, host-independent.
    pub fn metadata_for_path(&self, path: &str) -> Option<&ProtectedServer> {
        if let Some(s) = self.list.iter().find(|s| s.prm_path == path) {
            return Some(s);
        }
        match (path == PRM_PREFIX, self.list.as_slice()) {
            (true, [only]) => Some(only),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::config::{MatchConfig, ServerConfig, TenantFrom};

    fn server(id: &str, resource: &str, matching: MatchConfig) -> ProtectedServer {
        let cfg = ServerConfig {
            id: id.into(),
            resource: resource.into(),
            authorization_servers: vec![],
            scopes_supported: vec!["mcp:connect".into()],
            challenge_scopes: vec![],
            step_up: Default::default(),
            matching,
            tenant: None,
            tenant_from: None,
            list_filter: Default::default(),
            token_binding: Default::default(),
            audiences: Vec::new(),
            upstream_identity: None,
            policies: Default::default(),
        };
        ProtectedServer::new(&cfg, &[], |_| None).unwrap()
    }

    fn tenant_server(tenant: Option<&str>, tenant_from: Option<TenantFrom>) -> ProtectedServer {
        let cfg = ServerConfig {
            id: "t".into(),
            resource: "https://mcp.example.com/mcp".into(),
            authorization_servers: vec![],
            scopes_supported: vec![],
            challenge_scopes: vec![],
            step_up: Default::default(),
            matching: MatchConfig::default(),
            tenant: tenant.map(str::to_owned),
            tenant_from,
            list_filter: Default::default(),
            token_binding: Default::default(),
            audiences: Vec::new(),
            upstream_identity: None,
            policies: Default::default(),
        };
        ProtectedServer::new(&cfg, &[], |_| None).unwrap()
    }

    fn route_id(servers: &Servers, host: &str, path: &str) -> String {
        match servers.route(host, path) {
            Route::Metadata(s) => format!("prm:{}", s.id),
            Route::Protected(s) => s.id.clone(),
            Route::Unmatched => "none".into(),
        }
    }

    #[test]
    fn paths_that_normalise_elsewhere_are_ambiguous() {
        for ok in [
            "/mcp",
            "/a/mcp",
            "/t/acme/mcp?x=../y",
            "/a/mcp/",
            "/.well-known/oauth-protected-resource/a/mcp",
            "/a/mcp/%20x",
            "/a/mcp;v=1",
            "/a/mcp/%25",
        ] {
            assert!(!is_ambiguous_path(ok), "{ok}");
        }
        for bad in [
            "/a/mcp/../../b/mcp",
            "/a/mcp/%2e%2e/%2e%2e/b/mcp",
            "/a/mcp/%2E%2E/b/mcp",
            "/a/mcp/..%2f..%2fb/mcp",
            "/a/mcp/..%2F..%2Fb/mcp",
            "/a/mcp/..%5cb",
            "/a/mcp/..\\b",
            "/t/acme/../globex/mcp",
            "/t/acme/./mcp",
            "/a/mcp\u{0}",
            "/a/mcp/..;/..;/b/mcp",
            "/a/mcp/..;x=1/b",
            "/a/mcp/.;/b",
            "/a/mcp/%252e%252e/b",
            "/a/mcp/..%252Fb",
            "/a/mcp/..%255cb",
        ] {
            assert!(is_ambiguous_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn prm_document_and_url() {
        let s = server(
            "w",
            "https://mcp.example.com/weather/mcp",
            MatchConfig::default(),
        );
        assert_eq!(
            s.prm_path,
            "/.well-known/oauth-protected-resource/weather/mcp"
        );
        assert_eq!(
            s.prm_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource/weather/mcp"
        );
        let doc: serde_json::Value = serde_json::from_str(&s.prm_json).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "resource": "https://mcp.example.com/weather/mcp",
                "authorization_servers": [],
                "scopes_supported": ["mcp:connect"],
                "bearer_methods_supported": ["header"],
            })
        );
    }

    #[test]
    fn audience_ignores_scheme_and_host_case_only() {
        let s = server(
            "w",
            "https://mcp.example.com/weather/mcp",
            MatchConfig::default(),
        );
        assert!(s.is_audience("https://mcp.example.com/weather/mcp"));
        assert!(s.is_audience("HTTPS://MCP.Example.COM/weather/mcp"));
        assert!(s.is_audience("https://mcp.example.com:443/weather/mcp"));
        assert!(!s.is_audience("https://mcp.example.com/Weather/mcp"));
        assert!(!s.is_audience("https://mcp.example.com/weather/mcp#x"));
        assert!(!s.is_audience("https://mcp.example.com/weather"));
        assert!(!s.is_audience("https://evil.example.com/weather/mcp"));
        assert!(!s.is_audience("weather"));
        // A lenient URL parser would resolve or repair all of these into the resource.
        for sneaky in [
            "https://mcp.example.com/evil/../weather/mcp",
            "https:\\\\mcp.example.com\\weather\\mcp",
            "https://mcp.example.com/weather/%2e/mcp",
            "https://mcp.example.com/weather/./mcp",
            " https://mcp.example.com/weather/mcp\n",
            "https://user@mcp.example.com/weather/mcp",
            "https://mcp.example.com/weather/mcp?x",
        ] {
            assert!(!s.is_audience(sneaky), "{sneaky}");
        }
        let root = server("r", "https://mcp.example.com", MatchConfig::default());
        assert!(root.is_audience("https://mcp.example.com/"));
        assert!(root.is_audience("https://MCP.example.com"));
    }

    #[test]
    fn routing_by_host_and_longest_prefix() {
        let servers = Servers::new(vec![
            server("a", "https://mcp.example.com/mcp", MatchConfig::default()),
            server("b", "https://mcp.example.com/mcp/b", MatchConfig::default()),
            server(
                "c",
                "https://other.example.com/",
                MatchConfig {
                    hosts: Some(vec!["other.example.com:8443".into()]),
                    path_prefix: None,
                },
            ),
        ]);
        assert_eq!(route_id(&servers, "mcp.example.com", "/mcp"), "a");
        assert_eq!(route_id(&servers, "MCP.example.com:443", "/mcp?x=1"), "a");
        assert_eq!(route_id(&servers, "mcp.example.com", "/mcp/b/x"), "b");
        assert_eq!(route_id(&servers, "mcp.example.com", "/mcpx"), "none");
        assert_eq!(route_id(&servers, "evil.example.com", "/mcp"), "none");
        // A port that is not digits: another parser would read another host.
        for host in [
            "mcp.example.com:@evil.example",
            "mcp.example.com:x",
            "mcp.example.com:44 3",
            "mcp.example.com:+443",
            "mcp.example.com:99999",
        ] {
            assert_eq!(route_id(&servers, host, "/mcp"), "none", "{host}");
        }
        assert_eq!(route_id(&servers, "mcp.example.com:", "/mcp"), "a");
        assert_eq!(
            route_id(&servers, "other.example.com:8443", "/anything"),
            "c"
        );
        assert_eq!(
            route_id(&servers, "other.example.com:80", "/anything"),
            "none"
        );
        assert_eq!(
            route_id(
                &servers,
                "mcp.example.com",
                "/.well-known/oauth-protected-resource/mcp/b"
            ),
            "prm:b"
        );
        // Two servers on this host: the root form is ambiguous.
        assert_eq!(
            route_id(
                &servers,
                "mcp.example.com",
                "/.well-known/oauth-protected-resource"
            ),
            "none"
        );
        assert_eq!(
            route_id(
                &servers,
                "other.example.com:8443",
                "/.well-known/oauth-protected-resource"
            ),
            "prm:c"
        );
    }

    #[test]
    fn tenant_is_fixed_or_taken_from_a_header_or_a_path_segment() {
        let none = HashMap::new();
        let fixed = tenant_server(Some("acme"), None);
        assert_eq!(fixed.static_tenant(), Some("acme"));
        assert_eq!(fixed.tenant_for("/mcp", &none), Some("acme"));
        let unset = tenant_server(None, None);
        assert_eq!(unset.static_tenant(), Some(""));
        assert_eq!(unset.tenant_for("/mcp", &none), Some(""));

        let header = tenant_server(None, Some(TenantFrom::Header("x-tenant".into())));
        let with = |v: &str| HashMap::from([("x-tenant".to_owned(), v.to_owned())]);
        assert_eq!(header.static_tenant(), None);
        assert_eq!(header.tenant_for("/mcp", &with("acme")), Some("acme"));
        assert_eq!(header.tenant_for("/mcp", &none), None);
        assert_eq!(header.tenant_for("/mcp", &with("")), None);
        assert_eq!(header.tenant_for("/mcp", &with("acme,evil")), None);

        let path = tenant_server(None, Some(TenantFrom::PathSegment(2)));
        assert_eq!(path.static_tenant(), None);
        assert_eq!(path.tenant_for("/t/acme/mcp", &none), Some("acme"));
        assert_eq!(path.tenant_for("//t//acme?x=/a/b", &none), Some("acme"));
        assert_eq!(path.tenant_for("/t?/acme", &none), None);
        assert_eq!(path.tenant_for("/t", &none), None);
        for sneaky in ["/t/../mcp", "/t/./mcp", "/t/ac%6De/mcp"] {
            assert_eq!(path.tenant_for(sneaky, &none), None, "{sneaky}");
        }

        // Refused by validation, but defined: the request wins over `tenant`, and segment 0
        // reads the first segment.
        let both = tenant_server(Some("fixed"), Some(TenantFrom::PathSegment(1)));
        assert_eq!(both.static_tenant(), None);
        assert_eq!(both.tenant_for("/acme/mcp", &none), Some("acme"));
        let zero = tenant_server(None, Some(TenantFrom::PathSegment(0)));
        assert_eq!(zero.tenant_for("/acme/mcp", &none), Some("acme"));
    }

    #[test]
    fn host_splitting_keeps_ipv6_brackets() {
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(
            split_host("example.com:8443"),
            ("example.com", Some("8443"))
        );
        assert_eq!(split_host("[::1]"), ("[::1]", None));
        assert_eq!(split_host("[::1]:8443"), ("[::1]", Some("8443")));
        assert_eq!(split_host("[::1]x"), ("[::1]x", None));
        assert_eq!(split_host(""), ("", None));
    }

    #[test]
    fn setup_errors_keep_their_messages() {
        let cfg = |resource: &str, authorization_servers: Vec<String>| ServerConfig {
            id: "e".into(),
            resource: resource.into(),
            authorization_servers,
            scopes_supported: vec![],
            challenge_scopes: vec![],
            step_up: Default::default(),
            matching: MatchConfig::default(),
            tenant: None,
            tenant_from: None,
            list_filter: Default::default(),
            token_binding: Default::default(),
            audiences: Vec::new(),
            upstream_identity: None,
            policies: Default::default(),
        };
        let err = |c: ServerConfig| match ProtectedServer::new(&c, &[], |_| None) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            err(cfg("/weather/mcp", vec![])),
            "relative URL without a base"
        );
        assert_eq!(
            err(cfg(
                "https://mcp.example.com/mcp",
                vec!["https://idp".into()]
            )),
            "unknown authorization server `https://idp`"
        );
        assert_eq!(
            err(cfg("https://mcp.example.com/a b", vec![])),
            "resource is not an absolute URI"
        );
    }

    #[test]
    fn on_a_one_server_host_only_the_root_prm_forms_are_its_metadata() {
        let servers = Servers::new(vec![
            server(
                "solo",
                "https://solo.example.com/mcp",
                MatchConfig::default(),
            ),
            server(
                "any",
                "https://any.example.com/mcp",
                MatchConfig {
                    hosts: Some(vec!["other.example.com".into(), "*".into()]),
                    path_prefix: Some("/any/".into()),
                },
            ),
        ]);
        // `"*"` among the hosts matches every host, so `solo.example.com` has two servers.
        assert_eq!(
            route_id(&servers, "anything.example.net:1", "/any/x"),
            "any"
        );
        assert_eq!(route_id(&servers, "solo.example.com", "/mcp"), "solo");
        assert_eq!(
            route_id(&servers, "solo.example.com", PRM_PREFIX),
            "none",
            "two servers answer on this host"
        );

        let solo = Servers::new(vec![server(
            "solo",
            "https://solo.example.com/mcp",
            MatchConfig::default(),
        )]);
        for root in [PRM_PREFIX, "/.well-known/oauth-protected-resource/"] {
            assert_eq!(
                route_id(&solo, "solo.example.com", root),
                "prm:solo",
                "{root}"
            );
        }
        // Any other PRM path names a resource that is not configured, even with one server.
        assert_eq!(
            route_id(
                &solo,
                "solo.example.com",
                "/.well-known/oauth-protected-resource/other"
            ),
            "none"
        );
    }

    #[test]
    fn the_admin_port_serves_each_prm_document_by_its_path_alone() {
        let servers = Servers::new(vec![
            server("a", "https://a.example.com/mcp", MatchConfig::default()),
            server("b", "https://b.example.com/b/mcp", MatchConfig::default()),
        ]);
        let id = |s: &Servers, path: &str| s.metadata_for_path(path).map(|s| s.id.clone());
        assert_eq!(
            id(&servers, "/.well-known/oauth-protected-resource/mcp").as_deref(),
            Some("a")
        );
        assert_eq!(
            id(&servers, "/.well-known/oauth-protected-resource/b/mcp").as_deref(),
            Some("b")
        );
        assert_eq!(id(&servers, PRM_PREFIX), None, "ambiguous with two servers");
        assert_eq!(
            id(&servers, "/.well-known/oauth-protected-resource/other"),
            None
        );

        let solo = Servers::new(vec![server(
            "solo",
            "https://solo.example.com/mcp",
            MatchConfig::default(),
        )]);
        assert_eq!(id(&solo, PRM_PREFIX).as_deref(), Some("solo"));
        assert_eq!(
            id(&solo, "/.well-known/oauth-protected-resource/mcp").as_deref(),
            Some("solo")
        );
        assert_eq!(
            id(&solo, "/.well-known/oauth-protected-resource/other"),
            None
        );
    }

    #[test]
    fn servers_are_listed_in_configuration_order() {
        let servers = Servers::new(vec![
            server("b", "https://mcp.example.com/b", MatchConfig::default()),
            server("a", "https://mcp.example.com/a", MatchConfig::default()),
        ]);
        let ids: Vec<&str> = servers.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
    }

    #[test]
    fn resources_a_lenient_parser_would_repair_are_refused_at_setup() {
        // `Url` accepts each of these (percent-encoding, reading `\` as `/`, keeping the query,
        // fragment or user); audiences are compared without such repairs, so the server is
        // refused rather than set up with a resource no `aud` could be compared with.
        for resource in [
            "https://mcp.example.com/m\u{1}cp",
            "https://mcp.example.com/m\u{7f}cp",
            "https://mcp.example.com/mcp?x=1",
            "https://mcp.example.com/mcp#x",
            "https://mcp.example.com\\mcp",
            "https://user@mcp.example.com/mcp",
        ] {
            assert!(Url::parse(resource).is_ok(), "{resource:?}");
            let cfg = ServerConfig {
                id: "e".into(),
                resource: resource.into(),
                authorization_servers: vec![],
                scopes_supported: vec![],
                challenge_scopes: vec![],
                step_up: Default::default(),
                matching: MatchConfig::default(),
                tenant: None,
                tenant_from: None,
                list_filter: Default::default(),
                token_binding: Default::default(),
                audiences: Vec::new(),
                upstream_identity: None,
                policies: Default::default(),
            };
            assert!(
                matches!(
                    ProtectedServer::new(&cfg, &[], |_| None),
                    Err(ServerSetupError::ResourceNotAbsolute)
                ),
                "{resource:?}"
            );
        }
    }
}
