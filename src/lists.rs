//! Filtered lists: `tools/list`, `prompts/list`, `resources/list` and
//! `resources/templates/list` responses keep only the items the caller may use, decided by the
//! same policies as the calls themselves. No gRPC types here: `grpc/ext_proc.rs` adapts Envoy's
//! external processing stream to [`ListFilter`] and [`body::BodyFilter`].
//!
//! How a response gets here (see `deploy/envoy/envoy.yaml`): the check of an allowed list call
//! (or of a GET stream, which may replay one) puts a [`ListMark`] and the caller into ext_authz's
//! dynamic metadata; Envoy runs the ext_proc filter only for marked requests and forwards that
//! metadata with every response message. The caller is read back from it ([`ListCaller`]), never
//! from memory shared with the check: the two calls may reach different replicas. A marked
//! response without a readable caller is answered with an error, never passed.
//!
//! Which items stay (`servers[].list_filter.mode`): an item stays when its call (`tools/call`,
//! `prompts/get`, `resources/read`) would be allowed, or, in `step_up` mode, would be allowed
//! after a step-up (hiding those would make the step-up impossible to discover). A tool's
//! arguments are unknown when it is listed: it is decided by the policies that do not read
//! them (a forbid on certain paths cannot hide the tool; `PolicyBundle::decide_listing`), and
//! kept whenever a permit reads them. The call itself is still checked. Anything else (other
//! tenant, a forbid, no permit) goes.

pub mod body;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::ListFilterMode;
use crate::identity::Identity;
use crate::mcp::Target;
use crate::metrics::Metrics;
use crate::policy::{EvalRequest, Listing, PolicyBundle, Principal};
use crate::resource::ProtectedServer;

/// The four list methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

/// Which list responses a marked request's response may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListMark {
    /// The list methods the request called (every kind for a GET stream).
    pub kinds: Vec<ListKind>,
    /// One list call, not batched: its response must be that list (a success without it is
    /// malformed). Otherwise (batches, GET streams) responses are recognised by their shape.
    pub exact: bool,
}

/// The caller of a marked request as the check saw it, carried through Envoy.
#[derive(Debug, Clone, PartialEq)]
pub struct ListCaller {
    pub identity: Identity,
    pub server_id: String,
    pub server_tenant: String,
    pub protocol_version: String,
    pub session_id: String,
    pub mark: ListMark,
}

/// Why a list response cannot be filtered; each becomes a JSON-RPC error in its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("the list filter received no caller from the authorization check")]
    NoCaller,
    #[error("the list filter's server is not configured")]
    UnknownServer,
    #[error("the caller cannot be expressed to the policies")]
    Principal,
    #[error("the list response is not JSON-RPC")]
    NotJsonRpc,
    /// No list where one was due (`""`: no body at all).
    #[error("the list response has no `{0}` array")]
    Malformed(&'static str),
    #[error("the list response is larger than limits.max_list_response_bytes")]
    TooLarge,
    #[error("the list response has a content type the list filter cannot read")]
    ContentType,
    #[error("the list response is compressed")]
    Compressed,
}

/// What listed items' calls got, by caller and item, for the live policy generation: a client
/// lists at every session start and after every `list_changed`, and the same caller asking
/// about the same item under the same policies gets the same answer. Bounded (moka: TinyLFU
/// admission, LRU eviction; `cache.decisions` entries); the generation is in the key, so an
/// entry never outlives its policy set's answers. A verdict is a boolean: about 100 bytes an
/// entry with the key.
#[derive(Clone)]
pub struct ListVerdicts {
    map: Option<moka::sync::Cache<Box<[u8]>, bool>>,
}

impl ListVerdicts {
    /// `capacity` 0 turns the cache off.
    pub fn new(capacity: u64) -> Self {
        Self {
            map: (capacity > 0).then(|| moka::sync::Cache::new(capacity)),
        }
    }
}

/// Filters list results for one caller: built once per response stream.
pub struct ListFilter {
    bundle: Arc<PolicyBundle>,
    verdicts: ListVerdicts,
    /// The policy generation and everything of the caller a listed item's decision can
    /// depend on, hashed: the prefix of every verdict key.
    fingerprint: [u8; 40],
    principal: Principal,
    caller: ListCaller,
    mode: ListFilterMode,
    scopes_supported: Vec<String>,
    metrics: Metrics,
}

/// What one list result kept and removed (for the log line).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Filtered {
    pub kept: usize,
    pub removed: usize,
}

// === impl ListKind ===

impl ListKind {
    pub const ALL: [ListKind; 4] = [
        ListKind::Tools,
        ListKind::Prompts,
        ListKind::Resources,
        ListKind::ResourceTemplates,
    ];

    /// The kind a JSON-RPC method lists.
    pub fn from_method(method: &str) -> Option<Self> {
        match method {
            "tools/list" => Some(Self::Tools),
            "prompts/list" => Some(Self::Prompts),
            "resources/list" => Some(Self::Resources),
            "resources/templates/list" => Some(Self::ResourceTemplates),
            _ => None,
        }
    }

    /// The metric label and the mark's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::ResourceTemplates => "resource_templates",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == word)
    }

    /// The result member holding the items (MCP schema: `ListToolsResult.tools`...).
    pub fn field(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::ResourceTemplates => "resourceTemplates",
        }
    }

    /// The call an item stands for: its action and target. `None` for an item without its
    /// name (or URI), which is removed.
    fn call(self, item: &Value) -> Option<(&'static str, Target)> {
        let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
        match self {
            Self::Tools => Some((
                "tools/call",
                Target::Tool {
                    name: text("name")?,
                    arguments: Map::new(),
                },
            )),
            Self::Prompts => Some((
                "prompts/get",
                Target::Prompt {
                    name: text("name")?,
                },
            )),
            Self::Resources => Some(("resources/read", Target::Resource { uri: text("uri")? })),
            // A template is read through the URIs it expands to, which the policies cannot see
            // here: it is decided as a read of the template text itself (documented in
            // docs/policies.md), and each read is still checked.
            Self::ResourceTemplates => Some((
                "resources/read",
                Target::Resource {
                    uri: text("uriTemplate")?,
                },
            )),
        }
    }
}

// === impl ListMark ===

impl ListMark {
    /// The metadata form: the kinds' words, space-separated, then `exact` or `shape`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for k in &self.kinds {
            out.push_str(k.as_str());
            out.push(' ');
        }
        out.push_str(if self.exact { "exact" } else { "shape" });
        out
    }

    /// Reads [`encode`](Self::encode)'s form; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let mut words: Vec<&str> = text.split(' ').collect();
        let exact = match words.pop()? {
            "exact" => true,
            "shape" => false,
            _ => return None,
        };
        let kinds = words
            .into_iter()
            .map(ListKind::parse)
            .collect::<Option<Vec<_>>>()?;
        (!kinds.is_empty() && (!exact || kinds.len() == 1)).then_some(Self { kinds, exact })
    }
}

// === impl ListFilter ===

impl ListFilter {
    /// The filter for one caller on one server, with the live policy set.
    pub fn new(
        server: &ProtectedServer,
        bundle: Arc<PolicyBundle>,
        caller: ListCaller,
        metrics: Metrics,
        verdicts: ListVerdicts,
    ) -> Result<Self, ListError> {
        let principal = bundle
            .principal(&caller.identity)
            .map_err(|_| ListError::Principal)?;
        let fingerprint = fingerprint(&bundle, server, &caller);
        Ok(Self {
            bundle,
            verdicts,
            fingerprint,
            principal,
            mode: server.list_filter,
            scopes_supported: server.scopes_supported.clone(),
            caller,
            metrics,
        })
    }

    pub fn caller(&self) -> &ListCaller {
        &self.caller
    }

    /// Filters a JSON-RPC message or batch in place: every list result among its responses
    /// keeps only the caller's items and is marked `cacheScope: private` (SEP-2549: a
    /// per-caller list must not be cached as shared). Requests and notifications pass.
    pub fn apply(&self, message: &mut Value) -> Result<Vec<(ListKind, Filtered)>, ListError> {
        let mut done = Vec::new();
        match message {
            Value::Array(items) => {
                for m in items {
                    self.apply_one(m, false, &mut done)?;
                }
            }
            Value::Object(_) => self.apply_one(message, self.caller.mark.exact, &mut done)?,
            _ => return Err(ListError::NotJsonRpc),
        }
        Ok(done)
    }

    fn apply_one(
        &self,
        message: &mut Value,
        exact: bool,
        done: &mut Vec<(ListKind, Filtered)>,
    ) -> Result<(), ListError> {
        let Value::Object(m) = message else {
            return Err(ListError::NotJsonRpc);
        };
        if m.contains_key("method") {
            // A request or notification from the server: no list result.
            return Ok(());
        }
        let first = self.caller.mark.kinds.first().copied();
        let is_error = m.contains_key("error");
        let result = match m.get_mut("result") {
            Some(Value::Object(r)) => r,
            // An error response: nothing listed.
            None if is_error => return Ok(()),
            _ if exact => return Err(ListError::Malformed(first.map_or("", ListKind::field))),
            _ => return Ok(()),
        };
        let mut found = false;
        for &kind in &self.caller.mark.kinds {
            let items = match result.get_mut(kind.field()) {
                None => continue,
                Some(Value::Array(items)) => items,
                Some(_) => return Err(ListError::Malformed(kind.field())),
            };
            found = true;
            let before = items.len();
            items.retain(|item| self.keeps(kind, item));
            let filtered = Filtered {
                kept: items.len(),
                removed: before - items.len(),
            };
            self.metrics
                .list_items_removed(&self.caller.server_id, kind, filtered.removed);
            done.push((kind, filtered));
        }
        if found {
            result.insert("cacheScope".to_owned(), Value::from("private"));
        } else if exact {
            return Err(ListError::Malformed(first.map_or("", ListKind::field)));
        }
        Ok(())
    }

    /// Does the caller see this item? From the verdict cache, or decided (then cached).
    fn keeps(&self, kind: ListKind, item: &Value) -> bool {
        let Some((action, target)) = kind.call(item) else {
            return false;
        };
        let Some(map) = &self.verdicts.map else {
            return self.decide(kind, action, &target);
        };
        let name = target.name().unwrap_or_default();
        let mut key = Vec::with_capacity(self.fingerprint.len() + 1 + name.len());
        key.extend_from_slice(&self.fingerprint);
        key.push(kind as u8);
        key.extend_from_slice(name.as_bytes());
        let key = key.into_boxed_slice();
        if let Some(keep) = map.get(&key) {
            return keep;
        }
        let keep = self.decide(kind, action, &target);
        map.insert(key, keep);
        keep
    }

    fn decide(&self, kind: ListKind, action: &'static str, target: &Target) -> bool {
        let c = &self.caller;
        let req = EvalRequest {
            identity: &c.identity,
            server_id: &c.server_id,
            server_tenant: &c.server_tenant,
            action,
            target,
            protocol_version: &c.protocol_version,
            session_id: &c.session_id,
            batch: false,
        };
        let supported = match self.mode {
            ListFilterMode::StepUp => self.scopes_supported.as_slice(),
            ListFilterMode::AllowedOnly | ListFilterMode::Off => &[][..],
        };
        let ignore_arguments = kind == ListKind::Tools;
        match self
            .bundle
            .decide_listing(&req, &self.principal, supported, ignore_arguments)
        {
            Ok(Listing::Allowed | Listing::StepUp | Listing::Unknown) => true,
            Ok(Listing::Denied) | Err(_) => false,
        }
    }
}

/// The policy generation, then SHA-256 over what a listed item's decision can depend on
/// besides the item: the server, its tenant and list mode, and the whole caller (claims
/// included: policies can read them as tags). The session id and protocol version only when
/// some policy reads them, so a client's new session does not start cold.
fn fingerprint(bundle: &PolicyBundle, server: &ProtectedServer, caller: &ListCaller) -> [u8; 40] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    let id = &caller.identity;
    field(caller.server_id.as_bytes());
    field(caller.server_tenant.as_bytes());
    field(&[server.list_filter as u8]);
    field(id.issuer.as_bytes());
    field(id.subject.as_bytes());
    field(id.tenant.as_deref().unwrap_or("\u{0}").as_bytes());
    field(id.client_id.as_deref().unwrap_or("\u{0}").as_bytes());
    for scope in &id.scopes {
        field(scope.as_bytes());
    }
    field(b"groups");
    for group in &id.groups {
        field(group.as_bytes());
    }
    field(id.claims.as_json().as_bytes());
    let (session, version) = bundle.reads_session_facts();
    field(if session {
        caller.session_id.as_bytes()
    } else {
        b""
    });
    field(if version {
        caller.protocol_version.as_bytes()
    } else {
        b""
    });
    let mut out = [0u8; 40];
    let (generation, digest) = out.split_at_mut(8);
    generation.copy_from_slice(&bundle.generation.to_le_bytes());
    digest.copy_from_slice(&h.finalize());
    out
}

/// The JSON-RPC error that replaces a list the filter cannot vouch for (JSON-RPC 2.0 s5.1:
/// -32603 internal error; the id is unknown, so null).
pub fn error_message(e: &ListError) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": -32603, "message": format!("mcp-authz: {e}")},
    })
    .to_string()
}

#[cfg(test)]
mod tests;
