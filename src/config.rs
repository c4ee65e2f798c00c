//! The configuration file: one typed tree, unknown keys rejected, validated before anything
//! listens. Every key is documented in `docs/configuration.md`.
//!
//! This file holds the root and the whole-file checks (cross references between sections);
//! `issuer` and `server` hold the two lists, `settings` the smaller sections, `error` the one
//! error type.

mod availability;
mod dpop;
mod error;
mod introspection;
mod issuer;
mod preset;
mod server;
mod settings;
#[cfg(test)]
mod tests;
mod upstream_identity;

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

pub use availability::{Overload, Shutdown};
pub use dpop::{DpopConfig, NonceConfig};
pub use error::{ConfigError, Invalid};
pub use introspection::{ClientAuthMethod, IntrospectionConfig, signing_key};
pub use issuer::{
    AudienceRule, ClaimMapping, Discovery, IssuerConfig, KeyRefresh, Mapping, Names, SecretError,
    SecretSource, TypPolicy, is_loopback,
};
pub use preset::{Defaults, Preset};
pub use server::{
    ListFilterConfig, ListFilterMode, MatchConfig, ServerConfig, StepUpConfig, StepUpScope,
    TenantFrom, TokenBinding, UnknownStepUpScope,
};
pub use settings::{
    CacheConfig, DecisionLog, IdentityHeaders, Limits, Listen, PoliciesConfig,
    ServerPoliciesConfig, TlsConfig,
};
pub use upstream_identity::{
    GenerateKeys, ServerIdentityConfig, SigningAlgorithm, UpstreamIdentityConfig, UpstreamKeys,
};

use error::invalid;

/// Everything `serve` needs, as read from the YAML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    pub issuers: Vec<IssuerConfig>,
    pub servers: Vec<ServerConfig>,
    pub policies: PoliciesConfig,
    #[serde(default)]
    pub identity_headers: IdentityHeaders,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub decision_log: DecisionLog,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub shutdown: Shutdown,
    #[serde(default)]
    pub overload: Overload,
    /// How DPoP proofs are checked (RFC 9449), for servers that accept DPoP-bound tokens.
    #[serde(default)]
    pub dpop: DpopConfig,
    /// A signed identity for upstreams (`servers[].upstream_identity` turns it on per server).
    #[serde(default)]
    pub upstream_identity: Option<UpstreamIdentityConfig>,
}

// === impl Config ===

impl Config {
    /// The policy directories a server is decided by: its live set, and its shadow set if any
    /// (`servers[].policies`, else the top-level `policies`).
    pub fn policy_dirs<'a>(&'a self, server: &'a ServerConfig) -> (&'a Path, Option<&'a Path>) {
        match &server.policies.dir {
            Some(dir) => (dir, server.policies.shadow_dir.as_deref()),
            None => (
                &self.policies.dir,
                server
                    .policies
                    .shadow_dir
                    .as_deref()
                    .or(self.policies.shadow_dir.as_deref()),
            ),
        }
    }

    /// Reads, parses and validates a file. The error names the file and the key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_file_text(path, &text)
    }

    /// Parses and validates `text`, read from `path`: errors name the file, and relative paths
    /// in it are taken from the file's directory. (A reload parses exactly the bytes it hashed.)
    pub fn from_file_text(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut config = Self::from_yaml(text).map_err(|e| e.in_file(path))?;
        if let Some(base) = path.parent() {
            let dirs = std::iter::once(&mut config.policies.dir)
                .chain(config.policies.shadow_dir.as_mut())
                .chain(config.servers.iter_mut().flat_map(|s| {
                    s.policies
                        .dir
                        .as_mut()
                        .into_iter()
                        .chain(s.policies.shadow_dir.as_mut())
                }));
            for dir in dirs {
                if dir.is_relative() {
                    *dir = base.join(&*dir);
                }
            }
        }
        if let Some(UpstreamKeys::Dir(dir)) = config.upstream_identity.as_mut().map(|u| &mut u.keys)
            && dir.is_relative()
            && let Some(base) = path.parent()
        {
            *dir = base.join(&*dir);
        }
        if let (Some(tls), Some(base)) = (config.listen.tls.as_mut(), path.parent()) {
            for file in [
                Some(&mut tls.cert_file),
                Some(&mut tls.key_file),
                tls.client_ca_file.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
        Ok(config)
    }

    /// Parses and validates YAML text; errors name the key but no file.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        if flow_depth_exceeds(text, MAX_FLOW_DEPTH) {
            return Err(ConfigError::TooDeep {
                file: None,
                max: MAX_FLOW_DEPTH,
            });
        }
        let config: Config = serde_yaml_ng::from_str(text)
            .map_err(|error| ConfigError::Parse { file: None, error })?;
        // The same text as plain YAML, for the checks that are about how a value is written.
        if let Ok(raw) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
            padded_string("", &raw)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: cross references, URL shapes, secret sources, bounds.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.issuers.is_empty() {
            return Err(invalid("issuers", "at least one issuer is required"));
        }
        if self.servers.is_empty() {
            return Err(invalid("servers", "at least one server is required"));
        }
        let mut issuers = HashSet::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            issuer.validate(&format!("issuers[{i}]"))?;
            if !issuers.insert(issuer.issuer.as_str()) {
                return Err(invalid(
                    format!("issuers[{i}].issuer"),
                    format!("`{}` is listed twice", issuer.issuer),
                ));
            }
        }
        let mut ids = HashSet::new();
        for (i, server) in self.servers.iter().enumerate() {
            let key = format!("servers[{i}]");
            server.validate(&key)?;
            if !ids.insert(server.id.as_str()) {
                return Err(invalid(
                    format!("{key}.id"),
                    format!("`{}` is used twice", server.id),
                ));
            }
            for (j, auth) in server.authorization_servers.iter().enumerate() {
                if !issuers.contains(auth.as_str()) {
                    return Err(invalid(
                        format!("{key}.authorization_servers[{j}]"),
                        format!("`{auth}` is not one of the configured `issuers`"),
                    ));
                }
            }
            // An opaque token names no issuer: which one introspects it is never guessed, so
            // one authorization server's tokens are never sent to another.
            let introspecting: Vec<&str> = self
                .issuers
                .iter()
                .filter(|i| {
                    i.introspection.is_some() && server.authorization_servers.contains(&i.issuer)
                })
                .map(|i| i.issuer.as_str())
                .collect();
            if introspecting.len() > 1 {
                return Err(invalid(
                    format!("{key}.authorization_servers"),
                    format!(
                        "trusts more than one issuer with `introspection` ({}): an opaque token \
                         names no issuer, so only one may introspect for a server",
                        introspecting.join(", ")
                    ),
                ));
            }
        }
        self.listen.validate()?;
        self.identity_headers.validate()?;
        self.decision_log.validate()?;
        self.cache.validate()?;
        self.limits.validate()?;
        self.dpop.validate()?;
        self.shutdown.validate()?;
        self.overload.validate()?;
        if let Some(upstream) = &self.upstream_identity {
            upstream.validate(&self.identity_headers.all())?;
        }
        for (i, server) in self.servers.iter().enumerate() {
            if server.upstream_identity.is_some() && self.upstream_identity.is_none() {
                return Err(invalid(
                    format!("servers[{i}].upstream_identity"),
                    "needs the top-level `upstream_identity` section (issuer and keys)",
                ));
            }
        }
        Ok(())
    }
}

/// How deep `[` and `{` may nest in a configuration file. Real files use two or three levels.
const MAX_FLOW_DEPTH: usize = 64;

/// Whether `[`/`{` open more than `max` levels at some point, counting every bracket in the
/// text, inside quotes and comments too: only a file with dozens of unbalanced brackets in its
/// strings is measured wrong, and no configuration has those. The reason for the guard:
/// libyaml's scanner (behind serde_yaml_ng) revisits every pending simple key on each token
/// of a flow collection, so deep nesting costs time quadratic in the depth.
fn flow_depth_exceeds(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A string value with leading or trailing whitespace: an issuer `"https://idp "` parses and
/// validates as a URL, then matches no token's `iss` and the service never becomes ready.
/// Nothing in the configuration is meant to carry surrounding spaces, so they are refused with
/// the key that has them.
fn padded_string(key: &str, value: &serde_yaml_ng::Value) -> Result<(), Invalid> {
    use serde_yaml_ng::Value;
    match value {
        Value::String(s) if s.trim() != s => {
            Err(invalid(key, "has leading or trailing whitespace"))
        }
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| padded_string(&format!("{key}[{i}]"), v)),
        Value::Mapping(map) => map.iter().try_for_each(|(k, v)| {
            let name = k.as_str().map_or_else(|| format!("{k:?}"), str::to_owned);
            let key = if key.is_empty() {
                name
            } else {
                format!("{key}.{name}")
            };
            padded_string(&key, v)
        }),
        Value::Tagged(tagged) => padded_string(key, &tagged.value),
        _ => Ok(()),
    }
}
