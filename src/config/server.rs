//! One protected MCP server (`servers[]`): its resource URI, authorization servers, scopes,
//! step-up challenges, request matching and tenant, and the checks on them.

use std::str::FromStr;

use serde::Deserialize;
use url::Url;

use super::error::{Invalid, invalid};

/// A protected MCP server (an OAuth protected resource, RFC 9728).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub id: String,
    /// Canonical URI: the audience tokens must carry and PRM `resource`, served byte for byte
    /// as written (clients compare it exactly).
    pub resource: String,
    pub authorization_servers: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Scopes advertised in the `scope` attribute of a 401 challenge (MCP 2025-11-25).
    #[serde(default)]
    pub challenge_scopes: Vec<String>,
    /// How a 403 `insufficient_scope` challenge picks its `scope`.
    #[serde(default)]
    pub step_up: StepUpConfig,
    #[serde(default, rename = "match")]
    pub matching: MatchConfig,
    /// The server's tenant, for tenant isolation in policies. Exclusive with `tenant_from`.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Takes the tenant from the request instead. Written as a one-key map, as documented:
    /// `{header: x-tenant-id}` or `{path_segment: 2}`.
    #[serde(default, with = "serde_yaml_ng::with::singleton_map")]
    pub tenant_from: Option<TenantFrom>,
    /// Which items `tools/list`, `prompts/list`, `resources/list` and
    /// `resources/templates/list` responses keep (through Envoy's ext_proc filter).
    #[serde(default)]
    pub list_filter: ListFilterConfig,
    /// Which presentations of an access token are accepted (RFC 9449).
    #[serde(default)]
    pub token_binding: TokenBinding,
    /// Other names of this resource accepted in `aud`, byte for byte, beside `resource`: for
    /// providers that cannot put the resource URI there (Entra v2 puts the API's client id,
    /// v1 its application ID URI; a Keycloak audience mapper a client id). Per server, not per
    /// issuer: a token for another server's application must stay out (RFC 8707 s2).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Sign an identity for this server's upstream (needs the top-level `upstream_identity`).
    #[serde(default)]
    pub upstream_identity: Option<super::ServerIdentityConfig>,
    /// This server's own policy set and shadow set (see [`super::ServerPoliciesConfig`]).
    #[serde(default)]
    pub policies: super::ServerPoliciesConfig,
}

/// `servers[].token_binding`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenBinding {
    /// Bearer tokens (RFC 6750) and DPoP-bound tokens with their proofs (RFC 9449). A token
    /// bound to a key (`cnf.jkt`) is accepted only with a proof by that key, never as Bearer
    /// (RFC 9449 s7.2).
    #[default]
    Any,
    /// DPoP-bound tokens with their proofs only; the PRM document says
    /// `dpop_bound_access_tokens_required: true` (RFC 9728 s2).
    Dpop,
}

/// `servers[].list_filter`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListFilterConfig {
    #[serde(default)]
    pub mode: ListFilterMode,
}

/// Which list items a caller sees.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ListFilterMode {
    /// Items the caller may use, and those a step-up would open (hiding them would make the
    /// step-up impossible to discover). Items whose decision depends on the call's arguments
    /// are kept: the call itself is still checked.
    #[default]
    StepUp,
    /// Only items the caller may use with the scopes it has (and argument-dependent ones).
    AllowedOnly,
    /// Lists pass unfiltered; ext_authz does not mark list calls for the processor.
    Off,
}

/// `servers[].step_up`: what a step-up 403 asks the client for.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StepUpConfig {
    /// Which scopes the challenge's `scope` attribute names.
    #[serde(default)]
    pub scope: StepUpScope,
}

/// Which scopes a 403 `insufficient_scope` challenge names. Either way they come from
/// `scopes_supported`, in its order, and following the challenge must allow the request (else
/// the answer is a plain 403).
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum StepUpScope {
    /// The scopes this operation needs: the missing ones plus the granted ones the allow depends
    /// on, never unrelated scopes the token also has (MCP 2026-07-28, SEP-2350, after RFC 6750
    /// s3.1). Clients add the challenged scopes to those they hold when they re-authorize.
    #[default]
    Operation,
    /// The token's scopes that the server knows plus the missing ones (MCP 2025-11-25,
    /// "recommended approach"), for clients that replace their scopes with the challenge's
    /// instead of adding to them (the TypeScript SDK 1.32 client does).
    GrantedAndOperation,
}

/// A step-up rule that is not one of the two (`policy explain --step-up-scope`).
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a step-up scope rule: use `operation` or `granted_and_operation`")]
pub struct UnknownStepUpScope(String);

/// Where a request carries the server's tenant.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TenantFrom {
    /// A request header (lowercase name), e.g. set by an upstream gateway.
    Header(String),
    /// The N-th path segment, 1-based: `/t/acme/mcp` with `2` gives `acme`.
    PathSegment(usize),
}

/// How a request is matched to a server. Defaults come from `resource`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Host names (with or without port) this server answers on; `*` matches any host.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Path prefix, matched on segment boundaries.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// The OIDC scope that asks the authorization server for a refresh token.
const OFFLINE_ACCESS: &str = "offline_access";

// === impl StepUpScope ===

impl StepUpScope {
    /// The name the configuration uses (what [`FromStr`] reads).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operation => "operation",
            Self::GrantedAndOperation => "granted_and_operation",
        }
    }
}

impl FromStr for StepUpScope {
    type Err = UnknownStepUpScope;

    /// The names the configuration uses.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "operation" => Ok(Self::Operation),
            "granted_and_operation" => Ok(Self::GrantedAndOperation),
            other => Err(UnknownStepUpScope(other.to_owned())),
        }
    }
}

// === impl ServerConfig ===

impl ServerConfig {
    pub(super) fn validate(&self, key: &str) -> Result<(), Invalid> {
        let id_ok = !self.id.is_empty()
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !id_ok {
            return Err(invalid(
                format!("{key}.id"),
                format!("`{}` must be non-empty [A-Za-z0-9._-]", self.id),
            ));
        }
        let r = Url::parse(&self.resource).map_err(|e| {
            invalid(
                format!("{key}.resource"),
                format!("`{}` is not a URL: {e}", self.resource),
            )
        })?;
        if !matches!(r.scheme(), "https" | "http") || r.host().is_none() {
            return Err(invalid(
                format!("{key}.resource"),
                format!("`{r}` must be an absolute http(s) URL"),
            ));
        }
        // RFC 8707 s2: the resource indicator must not include a fragment.
        if r.fragment().is_some() || r.query().is_some() || self.resource.contains('#') {
            return Err(invalid(
                format!("{key}.resource"),
                format!("`{r}` must have no query or fragment"),
            ));
        }
        if let Some(i) = self.audiences.iter().position(String::is_empty) {
            return Err(invalid(
                format!("{key}.audiences[{i}]"),
                "must not be empty",
            ));
        }
        if self.authorization_servers.is_empty() {
            return Err(invalid(
                format!("{key}.authorization_servers"),
                "at least one authorization server is required (RFC 9728 / MCP)",
            ));
        }
        for (field, list) in [
            ("scopes_supported", &self.scopes_supported),
            ("challenge_scopes", &self.challenge_scopes),
        ] {
            for (i, s) in list.iter().enumerate() {
                // RFC 6749 s3.3 scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
                if s.is_empty() || !s.bytes().all(crate::challenge::is_scope_char) {
                    return Err(invalid(
                        format!("{key}.{field}"),
                        format!("`{s}` is not a valid scope token"),
                    ));
                }
                // SEP-2207 (MCP 2026-07-28), "MCP Server (Resource Server) Requirements": a
                // resource server SHOULD NOT name `offline_access` in a challenge or in PRM
                // `scopes_supported`. Listed in `scopes_supported` it would reach PRM and step-up
                // challenges, in `challenge_scopes` every 401.
                if s == OFFLINE_ACCESS {
                    return Err(invalid(
                        format!("{key}.{field}[{i}]"),
                        "`offline_access` is a refresh-token scope for the authorization \
                         server, not a scope of this resource: it belongs in no challenge and no \
                         PRM document (MCP 2026-07-28, SEP-2207); clients add it themselves when \
                         the authorization server offers it",
                    ));
                }
            }
        }
        if let Some(prefix) = &self.matching.path_prefix
            && !prefix.starts_with('/')
        {
            return Err(invalid(
                format!("{key}.match.path_prefix"),
                format!("`{prefix}` must start with `/`"),
            ));
        }
        match (&self.tenant, &self.tenant_from) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    format!("{key}.tenant_from"),
                    "set either `tenant` or `tenant_from`, not both",
                ));
            }
            (_, Some(TenantFrom::Header(h)))
                if h.is_empty()
                    || !h
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                return Err(invalid(
                    format!("{key}.tenant_from.header"),
                    format!("`{h}` is not a lowercase header name"),
                ));
            }
            (_, Some(TenantFrom::PathSegment(0))) => {
                return Err(invalid(
                    format!("{key}.tenant_from.path_segment"),
                    "segments are counted from 1",
                ));
            }
            _ => {}
        }
        if let Some(hosts) = &self.matching.hosts
            && hosts.is_empty()
        {
            return Err(invalid(
                format!("{key}.match.hosts"),
                "must not be empty; omit it to use the host of `resource`",
            ));
        }
        if let Some(identity) = &self.upstream_identity {
            identity.validate(key)?;
        }
        Ok(())
    }
}
