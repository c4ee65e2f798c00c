//! Protected MCP servers: matching a request to one, and its OAuth Protected Resource Metadata
//! (RFC 9728), all derived from configuration at load time, never from the request.

use std::sync::Arc;

use serde::Serialize;
use url::Url;

use crate::config::ServerConfig;
use crate::keys::IssuerKeys;

/// RFC 9728 s3: the well-known prefix; the resource's path is appended (s3.1).
pub const PRM_PREFIX: &str = "/.well-known/oauth-protected-resource";

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
    tenant: TenantFrom,
}

/// Where the server's tenant comes from.
enum TenantFrom {
    Static(String),
    Header(String),
    /// 0-based index among non-empty path segments.
    PathSegment(usize),
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
    /// every entry resolves.
    pub fn new(
        config: &ServerConfig,
        issuers: impl Fn(&str) -> Option<Arc<IssuerKeys>>,
    ) -> Result<Self, String> {
        let url = Url::parse(&config.resource).map_err(|e| e.to_string())?;
        let resource_path = url.path().trim_end_matches('/');
        let prm_path = format!("{PRM_PREFIX}{resource_path}");
        let prm_url = format!("{}{prm_path}", url.origin().ascii_serialization());
        let prm_json = serde_json::to_string(&Prm {
            resource: &config.resource,
            authorization_servers: &config.authorization_servers,
            scopes_supported: &config.scopes_supported,
            bearer_methods_supported: ["header"],
        })
        .map_err(|e| e.to_string())?;
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
            .map(|a| issuers(a).ok_or_else(|| format!("unknown authorization server `{a}`")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id: config.id.clone(),
            resource: config.resource.clone(),
            audience: Audience::parse(&config.resource).ok_or("resource is not an absolute URI")?,
            prm_path,
            prm_url,
            prm_json: prm_json.into(),
            hosts,
            path_prefix,
            issuers,
            challenge_scopes: config.challenge_scopes.clone(),
            scopes_supported: config.scopes_supported.clone(),
            tenant: match (&config.tenant, &config.tenant_from) {
                (_, Some(crate::config::TenantFrom::Header(h))) => TenantFrom::Header(h.clone()),
                (_, Some(crate::config::TenantFrom::PathSegment(n))) => {
                    TenantFrom::PathSegment(n.saturating_sub(1))
                }
                (Some(t), None) => TenantFrom::Static(t.clone()),
                (None, None) => TenantFrom::Static(String::new()),
            },
        })
    }

    /// The configured tenant, when it does not come from the request.
    pub fn static_tenant(&self) -> Option<&str> {
        match &self.tenant {
            TenantFrom::Static(t) => Some(t),
            _ => None,
        }
    }

    /// The server's tenant for this request; `None` when it should come from the request and
    /// the request does not carry it (the caller denies: fail closed).
    pub fn tenant_for<'a>(
        &'a self,
        path: &'a str,
        headers: &'a std::collections::HashMap<String, String>,
    ) -> Option<&'a str> {
        match &self.tenant {
            TenantFrom::Static(t) => Some(t),
            TenantFrom::Header(h) => headers
                .get(h)
                .map(String::as_str)
                .filter(|v| !v.is_empty() && !v.contains(',')),
            // Dot segments and percent-escapes would let the raw path name one tenant while
            // the router (after normalization) serves another: refused, not interpreted.
            TenantFrom::PathSegment(i) => path
                .split_once('?')
                .map_or(path, |(p, _)| p)
                .split('/')
                .filter(|s| !s.is_empty())
                .nth(*i)
                .filter(|s| *s != "." && *s != ".." && !s.contains('%')),
        }
    }

    /// Does one `aud` value name this server? Byte equality, or equality up to the case of
    /// scheme and host and an explicit default port (RFC 3986 s6.2.2.1, s6.2.3), which MCP
    /// clients may vary. The path is compared byte for byte: no dot-segment resolution, no
    /// percent-decoding, so `/a/../weather/mcp` never stands for `/weather/mcp`.
    pub fn is_audience(&self, aud: &str) -> bool {
        aud == self.resource || Audience::parse(aud).is_some_and(|a| a == self.audience)
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
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
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
    if let Some(end) = host.rfind(']') {
        return match host[end + 1..].strip_prefix(':') {
            Some(port) => (&host[..=end], Some(port)),
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
    pub fn new(list: Vec<ProtectedServer>) -> Self {
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
    use crate::config::{MatchConfig, ServerConfig};

    fn server(id: &str, resource: &str, matching: MatchConfig) -> ProtectedServer {
        let cfg = ServerConfig {
            id: id.into(),
            resource: resource.into(),
            authorization_servers: vec![],
            scopes_supported: vec!["mcp:connect".into()],
            challenge_scopes: vec![],
            matching,
            tenant: None,
            tenant_from: None,
        };
        ProtectedServer::new(&cfg, |_| None).unwrap()
    }

    fn route_id(servers: &Servers, host: &str, path: &str) -> String {
        match servers.route(host, path) {
            Route::Metadata(s) => format!("prm:{}", s.id),
            Route::Protected(s) => s.id.clone(),
            Route::Unmatched => "none".into(),
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
}
