//! Cedar policies: the loaded snapshot ([`PolicyBundle`]: schema, policies, entity facts), the
//! evaluation of one MCP message against it, and step-up scopes derived from the policies
//! themselves. Loading lives in `policy/load.rs`, hot reload in `policy/watch.rs`, and the
//! table-driven policy tests in `policy/cases.rs`, the proofs of `policy verify` in
//! `policy/verify.rs`.

pub mod arguments;
pub mod cases;
pub mod diff;
mod load;
mod prebuilt;
mod reads;
mod sets;
pub mod verify;
mod vocabulary;
mod watch;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::SystemTime;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression, Schema,
};
use serde_json::{Map, Value};

pub use crate::config::StepUpScope;
use crate::identity::Identity;
use crate::mcp::Target;
pub use load::{Files, LoadError, load_dir, load_files};
pub use reads::Reads;
pub use sets::{PolicySets, ServerSets, SetsError, ShadowSet};
pub(crate) use watch::dir_events;
pub use watch::{LoadFailure, PolicyStore, Reload, SetStatus};

/// A validated policy set with everything evaluation needs. Immutable; swapped whole.
pub struct PolicyBundle {
    /// Unique to this load in this process (a reload of the same files gets a new one): the
    /// decision cache keys on it, so no decision outlives the set that made it.
    pub generation: u64,
    /// SHA-256 over the policy files (names and contents), shortened: identifies the set in
    /// logs and `/readyz`.
    pub hash: String,
    pub loaded_at: SystemTime,
    pub dir: PathBuf,
    pub policy_ids: Vec<String>,
    /// Validator lint warnings (confusable identifiers, impossible policies...).
    pub warnings: Vec<String>,
    schema: Schema,
    policies: PolicySet,
    /// The policies whose action scope can match each action (`action`, `action == A`, or
    /// `action in [...]` naming A or one of its groups), split at load. Cedar evaluates a
    /// policy's scope before its conditions, so a policy left out could neither be satisfied
    /// nor error for that action: evaluating the subset gives the same decision, reasons and
    /// errors as the whole set, for less work.
    by_action: HashMap<EntityUid, PolicySet>,
    /// For listing (see [`PolicyBundle::decide_listing`]): each action's policies that read
    /// nothing of the call's arguments, and whether a permit among the others does.
    without_arguments: HashMap<EntityUid, (PolicySet, bool)>,
    /// Whether some policy reads `context.session_id`, `context.protocol_version`.
    session_facts: (bool, bool),
    /// Some forbid's text mentions `scopes`: more scopes could deny (see `decide_listing`).
    forbids_mention_scopes: bool,
    /// Entities from `entities.json` that stand alone (tool sets, groups...), conformance-checked
    /// and with their ancestors closed transitively at load.
    static_entities: Vec<Entity>,
    /// The static entities a request's store needs: those with attributes, tags or ancestors.
    /// A bare entity (a tool set with no facts) behaves in every Cedar expression exactly like
    /// an absent one (`in` sees no ancestors, `has` is false, attribute access is an error
    /// either way), and the parents that name it are uids, not entities; leaving it out keeps
    /// the per-request store, and its transitive-closure pass, small.
    request_statics: Vec<Entity>,
    /// The schema's action entities, ancestors closed at load, by uid: a request's store gets
    /// its own action only (see `prepare`).
    actions: HashMap<EntityUid, Entity>,
    /// Facts from `entities.json` about tools, prompts and resources, merged into the entity
    /// built for each request (which also gets `name`, `tenant`, `server` and its server).
    overlays: HashMap<EntityUid, Overlay>,
    types: Types,
    /// Tools declared as actions of their own (`tools/call/<server>/<tool>`), by
    /// `<server>/<tool>`: their calls are evaluated with that action and typed
    /// `context.arguments` (see `policy/arguments.rs`).
    tools: HashMap<String, arguments::DeclaredTool>,
    /// What the policies that can apply to each action read of a request (see
    /// `policy/reads.rs`): the decision cache's key, and whether a tool entity needs its
    /// argument tags.
    reads: reads::ReadsByAction,
    /// `tools/call` counters for the tools `entities.json` declares, by server then tool; the
    /// only tool names that become metric labels (see [`crate::metrics::ToolCounters`]).
    /// Replaced when a configuration reload adds servers ([`PolicyStore::recount`]).
    pub tool_counters: arc_swap::ArcSwap<crate::metrics::ToolCounters>,
    /// Server and declared-target entities built once (see `policy/prebuilt.rs`); empty until
    /// the engine's first check of this bundle calls [`PolicyBundle::prebuild`].
    prebuilt: OnceLock<prebuilt::Prebuilt>,
}

#[derive(Clone, Default)]
struct Overlay {
    attrs: Vec<(String, RestrictedExpression)>,
    parents: Vec<EntityUid>,
}

struct Types {
    user: EntityTypeName,
    group: EntityTypeName,
    server: EntityTypeName,
    tool: EntityTypeName,
    prompt: EntityTypeName,
    resource: EntityTypeName,
    action: EntityTypeName,
}

impl Types {
    fn new() -> Result<Self, Box<cedar_policy::ParseErrors>> {
        let t = |s: &str| EntityTypeName::from_str(s).map_err(Box::new);
        Ok(Self {
            user: t("Mcp::User")?,
            group: t("Mcp::Group")?,
            server: t("Mcp::Server")?,
            tool: t("Mcp::Tool")?,
            prompt: t("Mcp::Prompt")?,
            resource: t("Mcp::Resource")?,
            action: t("Mcp::Action")?,
        })
    }
}

/// One MCP message to authorize, in domain terms.
pub struct EvalRequest<'a> {
    pub identity: &'a Identity,
    pub server_id: &'a str,
    pub server_tenant: &'a str,
    /// The Cedar action id (the JSON-RPC method, `response`, `GET`, `DELETE`).
    pub action: &'a str,
    pub target: &'a Target,
    pub protocol_version: &'a str,
    pub session_id: &'a str,
    pub batch: bool,
}

/// What a listed item's call would get (see [`PolicyBundle::decide_listing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Allowed,
    /// Denied now; allowed with more of the server's scopes.
    StepUp,
    Denied,
    /// Depends on the call's arguments.
    Unknown,
}

/// The answer for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    pub allowed: bool,
    /// Satisfied permits on allow, satisfied forbids on deny; empty on a default deny.
    pub determining: Vec<String>,
    /// `policy id: message` for each policy that failed to evaluate. Any makes a deny.
    pub errors: Vec<String>,
    /// On a deny that more scopes would turn into an allow: the smallest set of scopes from
    /// `scopes_supported` that does (found by re-evaluating, never from a hand-kept map).
    pub missing_scopes: Option<Vec<String>>,
    /// The `scope` of this message's step-up challenge, by the server's [`StepUpScope`], in
    /// `scopes_supported` order; `Some` exactly when `missing_scopes` is.
    pub challenge_scopes: Option<Vec<String>>,
}

/// Why a message could not be put to the policies.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The request could not be expressed in the schema (for instance a claim shape the schema
    /// does not accept): the service cannot decide, and the caller denies.
    #[error("cannot build the policy request: {0}")]
    Request(String),
    /// A declared tool's arguments do not fit its declaration: the caller's error (400).
    #[error(transparent)]
    Arguments(#[from] arguments::ArgumentError),
}

impl PolicyBundle {
    /// The tools `entities.json` declares, as (server id, tool name), sorted.
    pub fn declared_tools(&self) -> Vec<(String, String)> {
        let mut tools: Vec<(String, String)> = self
            .overlays
            .keys()
            .filter(|uid| *uid.type_name() == self.types.tool)
            .filter_map(|uid| {
                let id: &str = uid.id().unescaped();
                id.split_once('/')
                    .map(|(server, tool)| (server.to_owned(), tool.to_owned()))
            })
            .collect();
        tools.sort();
        tools
    }

    /// Builds, once per bundle, the entities of these servers (id, configured tenant) and of
    /// the targets `entities.json` declares for them, so requests clone them instead of
    /// building them; later calls are one atomic load. Decisions are the same either way.
    pub fn prebuild<'a, I>(&self, servers: impl FnOnce() -> I)
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        self.prebuilt
            .get_or_init(|| prebuilt::Prebuilt::build(self, servers()));
    }

    /// Whether [`Self::prebuild`] has run.
    pub fn is_prebuilt(&self) -> bool {
        self.prebuilt.get().is_some()
    }

    /// Whether some policy reads `context.session_id`, and `context.protocol_version`.
    pub fn reads_session_facts(&self) -> (bool, bool) {
        self.session_facts
    }

    /// Decides a listed item's call (a tool, prompt or resource in a list response): allowed
    /// now, after a step-up to scopes from `supported`, or not at all. With
    /// `ignore_arguments` (a tool, whose arguments are unknown when it is listed), the answer
    /// is an upper bound: the policies that read the arguments are left out, so a forbid that
    /// reads them cannot deny, and [`Listing::Unknown`] when a permit reads them (then only
    /// the call can tell).
    ///
    /// Cheaper than [`decide`](Self::decide): a step-up is found by evaluating once with every
    /// supported scope, not by searching the smallest set and the challenge; only when some
    /// forbid mentions scopes (one could deny with more of them) are single scopes tried too.
    pub fn decide_listing(
        &self,
        req: &EvalRequest<'_>,
        principal: &Principal,
        supported: &[String],
        ignore_arguments: bool,
    ) -> Result<Listing, BuildError> {
        let prepared = self.prepare(req, principal, Conformance::AtLoad, ignore_arguments)?;
        if prepared.permits_read_arguments {
            return Ok(Listing::Unknown);
        }
        let granted = &req.identity.scopes;
        let decision = prepared.evaluate(granted.iter())?;
        if decision.allowed {
            return Ok(Listing::Allowed);
        }
        if !decision.errors.is_empty() {
            return Ok(Listing::Denied);
        }
        let candidates: Vec<&String> = supported.iter().filter(|s| !granted.contains(s)).collect();
        if candidates.is_empty() {
            return Ok(Listing::Denied);
        }
        let allows = |extra: &[&String]| -> Result<bool, BuildError> {
            let d = prepared.evaluate(granted.iter().chain(extra.iter().copied()))?;
            Ok(d.allowed)
        };
        if allows(&candidates)? {
            return Ok(Listing::StepUp);
        }
        if self.forbids_mention_scopes && candidates.len() > 1 {
            for c in &candidates {
                if allows(&[*c])? {
                    return Ok(Listing::StepUp);
                }
            }
        }
        Ok(Listing::Denied)
    }

    /// Decides one message. `scopes_supported` are the candidates for step-up, and `step_up`
    /// says which scopes a challenge names; only a deny pays for trying them.
    pub fn decide(
        &self,
        req: &EvalRequest<'_>,
        scopes_supported: &[String],
        step_up: StepUpScope,
    ) -> Result<PolicyDecision, BuildError> {
        let principal = self.principal(req.identity)?;
        self.decide_as(req, &principal, scopes_supported, step_up)
    }

    /// [`decide`](Self::decide) with the principal built beforehand (once per check, see
    /// `engine::authorize`).
    pub fn decide_as(
        &self,
        req: &EvalRequest<'_>,
        principal: &Principal,
        scopes_supported: &[String],
        step_up: StepUpScope,
    ) -> Result<PolicyDecision, BuildError> {
        self.decide_checked(
            req,
            principal,
            scopes_supported,
            step_up,
            Conformance::AtLoad,
        )
    }

    /// Decides with every entity and the request checked against the schema, as at load time.
    pub(crate) fn decide_strict(
        &self,
        req: &EvalRequest<'_>,
    ) -> Result<PolicyDecision, BuildError> {
        let principal = self.principal(req.identity)?;
        // No step-up candidates, so the rule is never used.
        let rule = StepUpScope::default();
        self.decide_checked(req, &principal, &[], rule, Conformance::Strict)
    }

    fn decide_checked(
        &self,
        req: &EvalRequest<'_>,
        principal: &Principal,
        scopes_supported: &[String],
        step_up: StepUpScope,
        conformance: Conformance,
    ) -> Result<PolicyDecision, BuildError> {
        let prepared = self.prepare(req, principal, conformance, false)?;
        self.finish(req, &prepared, scopes_supported, step_up)
    }

    /// Evaluates a prepared request, and on a deny tries the step-up scopes.
    fn finish(
        &self,
        req: &EvalRequest<'_>,
        prepared: &Prepared<'_>,
        scopes_supported: &[String],
        step_up: StepUpScope,
    ) -> Result<PolicyDecision, BuildError> {
        let granted = &req.identity.scopes;
        let mut decision = prepared.evaluate(granted.iter())?;
        if !decision.allowed
            && decision.errors.is_empty()
            && let Some(s) = prepared.step_up(granted, scopes_supported, step_up)?
        {
            decision.missing_scopes = Some(s.missing);
            decision.challenge_scopes = Some(s.challenge);
        }
        Ok(decision)
    }

    /// The Cedar principal for a verified identity: a `Mcp::User` with the token's claims as
    /// tags and its groups as parents. Depends only on the identity (the entity type names are
    /// fixed by the vocabulary), so a check builds it once for all its messages, and only when
    /// the decision cache misses (see `engine::caller` for why it is not cached per token).
    pub fn principal(&self, id: &Identity) -> Result<Principal, BuildError> {
        let t = &self.types;
        let uid = EntityUid::from_type_name_and_id(t.user.clone(), EntityId::new(&id.subject));
        let entity = Entity::new_with_tags(
            uid.clone(),
            [
                (
                    "tenant".to_owned(),
                    string(id.tenant.as_deref().unwrap_or("")),
                ),
                (
                    "client_id".to_owned(),
                    string(id.client_id.as_deref().unwrap_or("")),
                ),
                ("issuer".to_owned(), string(&id.issuer)),
            ],
            id.groups
                .iter()
                .map(|g| EntityUid::from_type_name_and_id(t.group.clone(), EntityId::new(g))),
            tags(&id.claims.to_map()),
        )
        .map_err(|e| BuildError::Request(e.to_string()))?;
        Ok(Principal { uid, entity })
    }

    /// Builds the request's entities and context. `ignore_arguments` (listing): no typed
    /// arguments, no argument tags, and only the policies that read neither.
    fn prepare(
        &self,
        req: &EvalRequest<'_>,
        principal: &Principal,
        conformance: Conformance,
        ignore_arguments: bool,
    ) -> Result<Prepared<'_>, BuildError> {
        let t = &self.types;
        let uid = |ty: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
        };
        let id = req.identity;
        let server = uid(&t.server, req.server_id);
        let mut action = uid(&t.action, req.action);
        // A call to a declared tool is its own action, with typed arguments in the context.
        let mut typed_arguments = None;

        // Clones of what `prebuild` made where it applies (not under `Strict`, which checks
        // the building itself); the same entities, built here, otherwise.
        let prebuilt = match conformance {
            Conformance::AtLoad => self.prebuilt.get(),
            Conformance::Strict => None,
        };
        let site = (req.server_id, req.server_tenant);
        let server_entity = match prebuilt.and_then(|p| p.server(site.0, site.1)) {
            Some(e) => e.clone(),
            None => self.server_entity(site.0, site.1)?,
        };
        let target = |r: &EntityUid, attr: (&str, &str), tags: Vec<_>| match prebuilt
            .filter(|_| tags.is_empty())
            .and_then(|p| p.target(site.0, site.1, r))
        {
            Some(e) => Ok(e.clone()),
            None => self.target_entity(r, site, attr, &server, tags),
        };

        let (resource, target_entity) = match req.target {
            Target::Server => (server.clone(), None),
            Target::Tool { name, arguments } => {
                let id = format!("{}/{name}", req.server_id);
                if req.action == "tools/call"
                    && let Some(declared) = self.tools.get(&id)
                {
                    action = declared.action.clone();
                    if !ignore_arguments {
                        typed_arguments = Some(arguments::convert(arguments, &declared.arguments)?);
                    }
                }
                let r = uid(&t.tool, &id);
                // Tags are only observable through `hasTag`/`getTag`: when no policy for the
                // action reads a non-principal's tags, the entity goes without them.
                let arg_tags = if !ignore_arguments
                    && self
                        .reads
                        .get(req.action)
                        .target(req.server_id, req.target)
                        .target_tags
                {
                    tags(arguments)
                } else {
                    Vec::new()
                };
                let e = target(&r, ("name", name), arg_tags)?;
                (r, Some(e))
            }
            Target::Prompt { name } => {
                let r = uid(&t.prompt, &format!("{}/{name}", req.server_id));
                let e = target(&r, ("name", name), Vec::new())?;
                (r, Some(e))
            }
            Target::Resource { uri } => {
                let r = uid(&t.resource, &format!("{}/{uri}", req.server_id));
                let e = target(&r, ("uri", uri), Vec::new())?;
                (r, Some(e))
            }
            Target::Task { .. } => (server.clone(), None),
        };

        // INVARIANT: every entity a request names is in the store and complete, so no policy
        // can error on a missing entity or attribute and be skipped (see the Cedar reference:
        // an erroring forbid is skipped). The store holds the principal, the server, the target,
        // every static entity, and the request's action with its ancestors already closed;
        // other actions are left out (policies name them only in `action in [...]` scopes,
        // which test the request's action). Conformance to the schema is checked at load,
        // where `check_vocabulary` builds every request shape strictly (with the schema's full
        // action set): the shapes are fixed by this function (strings, a boolean, string tags,
        // groups as parents) and the overlay values were checked when `entities.json` loaded,
        // so a per-request check could only repeat it.
        let entities = match conformance {
            Conformance::Strict => Entities::from_entities(
                [principal.entity.clone(), server_entity]
                    .into_iter()
                    .chain(target_entity)
                    .chain(self.static_entities.iter().cloned()),
                Some(&self.schema),
            ),
            Conformance::AtLoad => Entities::from_entities(
                [principal.entity.clone(), server_entity]
                    .into_iter()
                    .chain(target_entity)
                    .chain(self.actions.get(&action).cloned())
                    .chain(self.request_statics.iter().cloned()),
                None,
            ),
        }
        .map_err(|e| BuildError::Request(e.to_string()))?;
        let schema = (conformance == Conformance::Strict).then_some(&self.schema);

        let mut context = vec![
            (
                "client_id".to_owned(),
                string(id.client_id.as_deref().unwrap_or("")),
            ),
            ("protocol_version".to_owned(), string(req.protocol_version)),
            ("session_id".to_owned(), string(req.session_id)),
            (
                "batch".to_owned(),
                RestrictedExpression::new_bool(req.batch),
            ),
        ];
        if let Target::Task { id } = req.target {
            context.push(("task_id".to_owned(), string(id)));
        }
        if let Some(arguments) = typed_arguments {
            context.push(("arguments".to_owned(), arguments));
        }
        let (policies, permits_read_arguments) = if ignore_arguments {
            match self.without_arguments.get(&action) {
                Some((set, permits)) => (set, *permits),
                // An action outside the schema: no policy subset is known to be safe to drop.
                None => (&self.policies, true),
            }
        } else {
            (self.by_action.get(&action).unwrap_or(&self.policies), false)
        };
        Ok(Prepared {
            principal: principal.uid.clone(),
            action,
            schema,
            resource,
            entities,
            context,
            policies,
            permits_read_arguments,
        })
    }

    fn server_entity(&self, id: &str, tenant: &str) -> Result<Entity, BuildError> {
        Entity::new(
            EntityUid::from_type_name_and_id(self.types.server.clone(), EntityId::new(id)),
            HashMap::from([
                ("id".to_owned(), string(id)),
                ("tenant".to_owned(), string(tenant)),
            ]),
            HashSet::new(),
        )
        .map_err(|e| BuildError::Request(e.to_string()))
    }

    /// The attribute a target entity of this type names itself by.
    fn target_key(&self, uid: &EntityUid) -> Option<&'static str> {
        let t = uid.type_name();
        if *t == self.types.tool || *t == self.types.prompt {
            Some("name")
        } else if *t == self.types.resource {
            Some("uri")
        } else {
            None
        }
    }

    fn target_entity(
        &self,
        uid: &EntityUid,
        (server_id, tenant): (&str, &str),
        (key, value): (&str, &str),
        server: &EntityUid,
        tags: Vec<(String, RestrictedExpression)>,
    ) -> Result<Entity, BuildError> {
        let overlay = self.overlays.get(uid).cloned().unwrap_or_default();
        // The built-in facts come last: entities.json cannot override name, tenant or server.
        let attrs: HashMap<String, RestrictedExpression> = overlay
            .attrs
            .into_iter()
            .chain([
                (key.to_owned(), string(value)),
                ("tenant".to_owned(), string(tenant)),
                ("server".to_owned(), string(server_id)),
            ])
            .collect();
        Entity::new_with_tags(
            uid.clone(),
            attrs,
            overlay.parents.into_iter().chain([server.clone()]),
            tags,
        )
        .map_err(|e| BuildError::Request(e.to_string()))
    }
}

/// The Cedar principal of one token (see [`PolicyBundle::principal`]).
#[derive(Clone)]
pub struct Principal {
    uid: EntityUid,
    entity: Entity,
}

/// How much of a request is checked against the schema while it is built.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Conformance {
    /// Everything, every time: load-time checks of the vocabulary.
    Strict,
    /// The shapes were proven at load (see `prepare`); per-request work skips the re-check.
    AtLoad,
}

/// A request with its entities built once; evaluated with different scope sets for step-up.
struct Prepared<'s> {
    principal: EntityUid,
    schema: Option<&'s Schema>,
    action: EntityUid,
    resource: EntityUid,
    entities: Entities,
    context: Vec<(String, RestrictedExpression)>,
    /// The policies that can apply (see `PolicyBundle::by_action`).
    policies: &'s PolicySet,
    /// Listing only: a permit among the policies left out reads the arguments.
    permits_read_arguments: bool,
}

impl Prepared<'_> {
    fn evaluate<'s>(
        &self,
        scopes: impl Iterator<Item = &'s String>,
    ) -> Result<PolicyDecision, BuildError> {
        let scopes = RestrictedExpression::new_set(scopes.map(|s| string(s)));
        let context = Context::from_pairs(
            self.context
                .iter()
                .cloned()
                .chain([("scopes".to_owned(), scopes)]),
        )
        .map_err(|e| BuildError::Request(e.to_string()))?;
        let request = Request::new(
            self.principal.clone(),
            self.action.clone(),
            self.resource.clone(),
            context,
            self.schema,
        )
        .map_err(|e| BuildError::Request(e.to_string()))?;
        let response = Authorizer::new().is_authorized(&request, self.policies, &self.entities);
        let diagnostics = response.diagnostics();
        // `<policy id>: <message>`, so logs and metrics can name the policy.
        let mut errors: Vec<String> = diagnostics
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(p) => {
                    format!("{}: {e}", p.policy_id())
                }
            })
            .collect();
        // Cedar reports both as sets: sorted, the same request always gives the same answer
        // (the decision cache and the logs depend on it).
        errors.sort_unstable();
        let mut determining: Vec<String> = diagnostics.reason().map(|id| id.to_string()).collect();
        determining.sort_unstable();
        Ok(PolicyDecision {
            // Any evaluation error is a deny: the erroring policy may have been a forbid.
            allowed: response.decision() == Decision::Allow && errors.is_empty(),
            determining,
            errors,
            missing_scopes: None,
            challenge_scopes: None,
        })
    }

    /// The smallest set of extra scopes (from `supported`) that turns this deny into an allow,
    /// and the challenge naming them by `rule`; `None` when no scope can help (a forbid, another
    /// tenant, a tool nobody may call) or when following the challenge would not: a client acts
    /// on the exact challenge, so it must always work.
    fn step_up(
        &self,
        granted: &[String],
        supported: &[String],
        rule: StepUpScope,
    ) -> Result<Option<StepUp>, BuildError> {
        let candidates: Vec<&String> = supported.iter().filter(|s| !granted.contains(s)).collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        let allows_with = |scopes: &mut dyn Iterator<Item = &String>| -> Result<bool, BuildError> {
            Ok(self.evaluate(scopes)?.allowed)
        };
        let allows = |extra: &[&String]| -> Result<bool, BuildError> {
            allows_with(&mut granted.iter().chain(extra.iter().copied()))
        };
        // One missing scope is the common case, and trying them one by one also works when
        // another scope's presence would trigger a forbid.
        let mut missing = None;
        for c in &candidates {
            if allows(&[*c])? {
                missing = Some(vec![*c]);
                break;
            }
        }
        if missing.is_none() && allows(&candidates)? {
            // Drop every candidate the allow does not depend on, one at a time.
            let mut needed = candidates.clone();
            let mut i = 0;
            while i < needed.len() {
                let mut without = needed.clone();
                without.remove(i);
                if allows(&without)? {
                    needed = without;
                } else {
                    i += 1;
                }
            }
            missing = Some(needed);
        }
        let Some(missing) = missing else {
            return Ok(None);
        };
        let missing: Vec<String> = missing.into_iter().cloned().collect();
        let challenge = match rule {
            StepUpScope::Operation => self.operation_scopes(granted, supported, &missing)?,
            StepUpScope::GrantedAndOperation => {
                let named: Vec<String> = granted.iter().chain(&missing).cloned().collect();
                challenge_scopes(supported, &named)
            }
        };
        // What the client holds once it has followed the challenge must be allowed. (With
        // `operation` that is `granted` plus `missing`, the set `missing` was found with.)
        let holds_after: Vec<&String> = match rule {
            // SEP-2350: it re-authorizes for what it held plus what was challenged, so the
            // scopes a challenge leaves out (unrelated, or outside `scopes_supported`) stay.
            StepUpScope::Operation => granted
                .iter()
                .chain(challenge.iter().filter(|s| !granted.contains(s)))
                .collect(),
            // MCP 2025-11-25 clients may replace their scopes with the challenge's.
            StepUpScope::GrantedAndOperation => challenge.iter().collect(),
        };
        if allows_with(&mut holds_after.into_iter())? {
            Ok(Some(StepUp { missing, challenge }))
        } else {
            // A replacing client would lose a granted scope the policies need that is not in
            // `scopes_supported`: a plain 403 is more honest than a dead-end step-up.
            Ok(None)
        }
    }

    /// The scopes this operation needs (MCP 2026-07-28, SEP-2350; RFC 6750 s3.1): the missing
    /// ones plus the granted ones the allow depends on, found by dropping granted scopes one at a
    /// time while the request stays allowed. Granted scopes outside `supported` are never named,
    /// but stay in every evaluated set, as they stay in the client's token.
    fn operation_scopes(
        &self,
        granted: &[String],
        supported: &[String],
        missing: &[String],
    ) -> Result<Vec<String>, BuildError> {
        let unnamed: Vec<&String> = granted.iter().filter(|s| !supported.contains(s)).collect();
        let mut named: Vec<&String> = supported
            .iter()
            .filter(|s| granted.contains(s) || missing.contains(s))
            .collect();
        for scope in supported.iter().filter(|s| granted.contains(s)) {
            let without: Vec<&String> = named.iter().copied().filter(|s| *s != scope).collect();
            let scopes = unnamed.iter().chain(&without).copied();
            if self.evaluate(scopes)?.allowed {
                named = without;
            }
        }
        Ok(named.into_iter().cloned().collect())
    }
}

/// What a step-up challenge asks for (see [`Prepared::step_up`]).
struct StepUp {
    /// The scopes the token lacks: [`PolicyDecision::missing_scopes`], for logs and explain.
    missing: Vec<String>,
    /// The challenge's `scope` by the server's rule: what the client is told to ask for.
    challenge: Vec<String>,
}

/// The scopes of `supported` that `named` lists, in `scopes_supported` order whatever the order
/// of `named`: the `scope` of a step-up challenge, for one message or for a batch (the union of
/// its messages', gathered message by message).
pub fn challenge_scopes(supported: &[String], named: &[String]) -> Vec<String> {
    supported
        .iter()
        .filter(|s| named.contains(s))
        .cloned()
        .collect()
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

/// JSON object members as Cedar tags: strings as they are, anything else as its JSON text, so a
/// policy can always `hasTag`/`getTag` without a type error.
fn tags(map: &Map<String, Value>) -> Vec<(String, RestrictedExpression)> {
    map.iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), RestrictedExpression::new_string(text))
        })
        .collect()
}

#[cfg(test)]
mod tests;
