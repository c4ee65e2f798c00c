//! The request headers a check reads: what Envoy must send (ext_authz `allowed_headers`) and
//! nothing more. Sending every header costs Envoy and the check a copy of each; sending too few
//! would break a check (a dropped `authorization` is a 401, a dropped `mcp-method` would hide a
//! routing header, a dropped tenant header a 403). `mcp-authz envoy-headers` prints the list
//! for a configuration; the shipped `deploy/envoy/envoy.yaml` carries it for the shipped one.

use crate::config::{Config, TenantFrom};

/// Header names starting with this are read too: `Mcp-Param-<name>` headers, checked against
/// the body's arguments (MCP Streamable HTTP).
pub const PARAM_PREFIX: &str = "mcp-param-";

/// Read for every check, whatever the configuration (with [`PARAM_PREFIX`]).
pub const ALWAYS: [&str; 10] = [
    // The bearer token (RFC 6750 s2.1); repeats arrive joined and are refused as ambiguous.
    "authorization",
    // The DPoP proof sent with a DPoP-bound token (RFC 9449 s4.1).
    "dpop",
    // How the body is read: JSON-RPC, form-encoded token (RFC 6750 s2.2), compression (415),
    // truncation by the proxy (413).
    "content-type",
    "content-length",
    "content-encoding",
    "x-envoy-auth-partial-body",
    // MCP Streamable HTTP routing headers, checked against the body.
    "mcp-method",
    "mcp-name",
    // Cedar context (`context.session_id`, `context.protocol_version`).
    "mcp-session-id",
    "mcp-protocol-version",
];

/// Every header a check under `config` reads, lowercase, without repeats: [`ALWAYS`], each
/// server's `tenant_from` header, and the identity headers mcp-authz sets or removes (so a
/// client's copy is seen and replaced).
pub fn read_by_checks(config: &Config) -> Vec<String> {
    let mut out: Vec<String> = ALWAYS.iter().map(|h| (*h).to_owned()).collect();
    let tenant_headers = config.servers.iter().filter_map(|s| match &s.tenant_from {
        Some(TenantFrom::Header(h)) => Some(h.to_ascii_lowercase()),
        _ => None,
    });
    let identity = config
        .identity_headers
        .all()
        .into_iter()
        .map(str::to_ascii_lowercase);
    for h in tenant_headers.chain(identity) {
        if !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

/// The ext_authz filter's `allowed_headers` block for `headers` (and [`PARAM_PREFIX`]), as
/// YAML at the filter's indentation (`indent` spaces).
pub fn envoy_allowed_headers(headers: &[String], indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = format!("{pad}allowed_headers:\n{pad}  patterns:\n");
    for h in headers {
        out.push_str(&format!("{pad}    - exact: {h}\n"));
    }
    out.push_str(&format!("{pad}    - prefix: {PARAM_PREFIX}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped file's `allowed_headers` block, as `envoy_allowed_headers` would print it.
    fn shipped_envoy_allowed_headers() -> String {
        let yaml = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/envoy/envoy.yaml"),
        )
        .unwrap();
        let start = yaml
            .find("allowed_headers:")
            .expect("the shipped file lists them");
        let block = &yaml[start..];
        let lines: Vec<&str> = block
            .lines()
            .take_while(|l| {
                let t = l.trim();
                t.starts_with("allowed_headers:") || t == "patterns:" || t.starts_with("- ")
            })
            .map(str::trim)
            .collect();
        lines.join("\n")
    }

    #[test]
    fn the_shipped_envoy_config_sends_exactly_what_a_check_reads() {
        // The shipped Envoy file goes with the configuration `mcp-authz dev` and the Kubernetes
        // files use: fixed tenants, default identity header names.
        let config = Config::from_yaml(&crate::testutil::config_yaml(
            "https://idp.test",
            "https://mcp.example.com/mcp",
            "",
        ))
        .unwrap();
        let generated = envoy_allowed_headers(&read_by_checks(&config), 0);
        let generated: Vec<&str> = generated.lines().map(str::trim).collect();
        assert_eq!(shipped_envoy_allowed_headers(), generated.join("\n"));
    }

    #[test]
    fn tenant_headers_and_renamed_identity_headers_are_added_once() {
        let mut config = Config::from_yaml(&crate::testutil::config_yaml(
            "https://idp.test",
            "https://mcp.example.com/mcp",
            "",
        ))
        .unwrap();
        config.servers[0].tenant = None;
        config.servers[0].tenant_from = Some(TenantFrom::Header("X-Tenant-Id".into()));
        config.identity_headers.subject = "x-user".into();
        let headers = read_by_checks(&config);
        assert!(headers.contains(&"x-tenant-id".to_owned()));
        assert!(headers.contains(&"x-user".to_owned()));
        assert!(!headers.contains(&"x-mcp-authz-subject".to_owned()));
        let mut unique = headers.clone();
        unique.dedup();
        assert_eq!(unique.len(), headers.len());
        let yaml = envoy_allowed_headers(&headers, 2);
        assert!(
            yaml.starts_with("  allowed_headers:\n    patterns:\n      - exact: authorization\n")
        );
    }
}
