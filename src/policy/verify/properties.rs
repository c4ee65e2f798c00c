//! The properties file of `policy verify` (`properties.yaml` beside the policies): which
//! built-in properties run, the deny-lists, and assertions written as Cedar conditions.
//! Documented in docs/policy-verify.md.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file kept beside the policies, used when present.
pub const PROPERTIES_FILE: &str = "properties.yaml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Properties {
    /// No request is allowed whose principal's tenant differs from the resource's.
    #[serde(default = "yes")]
    pub tenant_isolation: bool,
    /// Tool sets whose tools only members of a group may call. Default: the shipped policies'
    /// ToolSet `dangerous` behind Group `break-glass`; `[]` checks none.
    #[serde(default = "default_deny_lists")]
    pub deny_lists: Vec<DenyList>,
    #[serde(default)]
    pub assertions: Vec<Assertion>,
}

/// No `tools/call` (nor a tool's own action) reaches a tool in `tool_set` unless the principal
/// is in `group`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyList {
    pub tool_set: String,
    pub group: String,
}

/// A Cedar condition the policies must never allow, for one action (and the actions in it) or
/// for every action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assertion {
    pub name: String,
    /// An action id (`tools/call`, `initialize`, `session`...); its member actions are included.
    /// Default: every action.
    pub action: Option<String>,
    /// A Cedar condition over `principal`, `action`, `resource`, `context`: no request for
    /// which it holds is allowed.
    pub never_allows_when: Option<String>,
    /// Every request of the action is denied.
    #[serde(default)]
    pub always_denies: bool,
}

impl Default for Properties {
    fn default() -> Self {
        Self {
            tenant_isolation: true,
            deny_lists: default_deny_lists(),
            assertions: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_deny_lists() -> Vec<DenyList> {
    vec![DenyList {
        tool_set: "dangerous".into(),
        group: "break-glass".into(),
    }]
}

#[derive(Debug, thiserror::Error)]
#[error("`{}`: {message}", path.display())]
pub struct PropertiesError {
    pub path: PathBuf,
    pub message: String,
}

/// Reads and checks a properties file.
pub fn read_properties(path: &Path) -> Result<Properties, PropertiesError> {
    let err = |message: String| PropertiesError {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let properties: Properties = serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))?;
    for a in &properties.assertions {
        match (&a.never_allows_when, a.always_denies) {
            (Some(_), false) | (None, true) => {}
            _ => {
                return Err(err(format!(
                    "assertion `{}`: give exactly one of `never_allows_when` and `always_denies: true`",
                    a.name
                )));
            }
        }
        if let Some(when) = &a.never_allows_when {
            let text = format!("permit (principal, action, resource) unless {{ {when} }};");
            text.parse::<cedar_policy::Policy>()
                .map_err(|e| err(format!("assertion `{}`: `{when}`: {e}", a.name)))?;
        }
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Properties, PropertiesError> {
        let dir = tempfile::tempdir().map_err(|e| PropertiesError {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        let path = dir.path().join(PROPERTIES_FILE);
        std::fs::write(&path, text).map_err(|e| PropertiesError {
            path: path.clone(),
            message: e.to_string(),
        })?;
        read_properties(&path)
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let p = parse("{}").unwrap();
        assert!(p.tenant_isolation);
        assert_eq!(p.deny_lists.len(), 1);
        let e = parse("deny_list: []").unwrap_err();
        assert!(e.message.contains("unknown field `deny_list`"), "{e}");
        let e = parse("assertions: [{name: a, action: x, never_allows_when: 'true', oops: 1}]")
            .unwrap_err();
        assert!(e.message.contains("unknown field `oops`"), "{e}");
    }

    #[test]
    fn assertions_are_checked() {
        let e = parse("assertions: [{name: a}]").unwrap_err();
        assert!(e.message.contains("exactly one"), "{e}");
        let e = parse("assertions: [{name: a, never_allows_when: 'principal.'}]").unwrap_err();
        assert!(e.message.contains("assertion `a`"), "{e}");
        let p = parse("assertions: [{name: a, action: ping, always_denies: true}]").unwrap();
        assert_eq!(p.assertions.len(), 1);
    }
}
