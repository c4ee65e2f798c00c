//! Loading a policy directory: `schema.cedarschema`, one or more `*.cedar` files and an optional
//! `entities.json`, validated strictly against the schema and against the mcp-authz vocabulary.
//! Every error names the file and, where Cedar says, the line and column.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use cedar_policy::{
    ActionConstraint, Effect, Entities, Entity, EntityUid, Policy, PolicyId, PolicySet,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Overlay, PolicyBundle, Reads, Types};

pub const SCHEMA_FILE: &str = "schema.cedarschema";
pub const ENTITIES_FILE: &str = "entities.json";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("`{}`: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{}:{line}:{column}: {message}", path.display())]
    At {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

pub(super) fn file_error(path: &Path, message: impl Into<String>) -> LoadError {
    LoadError::File {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The policy files as read from disk, and their content hash.
pub struct Files {
    pub dir: PathBuf,
    pub hash: String,
    schema: Source,
    policies: Vec<Source>,
    entities: Option<Source>,
}

struct Source {
    path: PathBuf,
    text: String,
}

/// Reads the files (following symlinks, as Kubernetes ConfigMaps need) and hashes them.
/// Dot-files and directories (`..data`) and unrelated files are ignored.
pub fn read_files(dir: &Path) -> Result<Files, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|e| file_error(dir, e.to_string()))?;
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| file_error(dir, e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if name == SCHEMA_FILE || name == ENTITIES_FILE || name.ends_with(".cedar") {
            names.push(name);
        }
    }
    names.sort();
    let mut texts = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let text = std::fs::read_to_string(&path).map_err(|e| file_error(&path, e.to_string()))?;
        texts.push((name, text));
    }
    Files::from_texts(dir, texts)
}

impl Files {
    /// The files of a policy directory given in memory as (file name, text), sorted by name, as
    /// [`read_files`] would have read them from `dir` (which only names them in messages).
    /// Names other than the schema, `entities.json` and `*.cedar` are ignored.
    pub fn from_texts(dir: &Path, texts: Vec<(String, String)>) -> Result<Files, LoadError> {
        let mut hasher = Sha256::new();
        let mut schema = None;
        let mut policies = Vec::new();
        let mut entities = None;
        for (name, text) in texts {
            let is_policy = name.ends_with(".cedar");
            if !is_policy && name != SCHEMA_FILE && name != ENTITIES_FILE {
                continue;
            }
            // Name and length prefix each file, so moving text between files changes the hash.
            hasher.update(name.as_bytes());
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
            let source = Source {
                path: dir.join(&name),
                text,
            };
            if is_policy {
                policies.push(source);
            } else if name == SCHEMA_FILE {
                schema = Some(source);
            } else {
                entities = Some(source);
            }
        }
        let schema = schema.ok_or_else(|| file_error(dir, format!("no `{SCHEMA_FILE}`")))?;
        if policies.is_empty() {
            return Err(file_error(dir, "no `*.cedar` policy files"));
        }
        let digest = hasher.finalize();
        Ok(Files {
            dir: dir.to_owned(),
            hash: hex::encode(digest.iter().take(8).copied().collect::<Vec<u8>>()),
            schema,
            policies,
            entities,
        })
    }
}

/// Reads and loads a directory.
pub fn load_dir(dir: &Path) -> Result<PolicyBundle, LoadError> {
    load_files(read_files(dir)?)
}

/// Parses and validates everything; nothing is returned unless all of it is good.
pub fn load_files(files: Files) -> Result<PolicyBundle, LoadError> {
    let types = Types::new().map_err(|e| file_error(&files.dir, e.to_string()))?;
    let (schema, schema_warnings) = Schema::from_cedarschema_str(&files.schema.text)
        .map_err(|e| located(&files.schema, &e, e.to_string()))?;
    let mut warnings: Vec<String> = schema_warnings
        .map(|w| format!("{}: {w}", files.schema.path.display()))
        .collect();

    // Each file is parsed on its own so errors point into the right file.
    let mut policies = PolicySet::new();
    let mut origin: HashMap<String, usize> = HashMap::new();
    let mut ids = Vec::new();
    for (index, source) in files.policies.iter().enumerate() {
        // An empty file is far more likely a write in progress or a botched copy than an
        // intent to drop policies (delete the file for that).
        if source.text.trim().is_empty() {
            return Err(file_error(&source.path, "the policy file is empty"));
        }
        let set =
            PolicySet::from_str(&source.text).map_err(|e| located(source, &e, e.to_string()))?;
        if set.templates().next().is_some() {
            return Err(file_error(
                &source.path,
                "policy templates are not supported",
            ));
        }
        // Cedar names parsed policies policy0..N in source order; authors name them with @id.
        let mut in_order: Vec<_> = set.policies().collect();
        in_order.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        let mut search_from = 0;
        for policy in in_order {
            let found = position_of(source, &policy.to_string(), search_from);
            if let Some((_, _, end)) = found {
                search_from = end;
            }
            let Some(id) = policy.annotation("id") else {
                return Err(found.map(|(l, c, _)| (l, c)).map_or_else(
                    || file_error(&source.path, "a policy has no @id(\"...\") annotation"),
                    |(line, column)| LoadError::At {
                        path: source.path.clone(),
                        line,
                        column,
                        message: "this policy has no @id(\"...\") annotation".into(),
                    },
                ));
            };
            if let Some(first) = origin.insert(id.to_owned(), index) {
                return Err(file_error(
                    &source.path,
                    format!(
                        "@id(\"{id}\") is used twice (also in `{}`)",
                        files
                            .policies
                            .get(first)
                            .map(|p| p.path.display().to_string())
                            .unwrap_or_default()
                    ),
                ));
            }
            ids.push(id.to_owned());
            policies
                .add(policy.new_id(PolicyId::new(id)))
                .map_err(|e| file_error(&source.path, e.to_string()))?;
        }
    }

    // Strict validation against the schema, at every load.
    let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
    // The file a policy came from; every policy here was read from one, the first file is only
    // a fallback that keeps this code free of indexing.
    let source_of = |id: &PolicyId| {
        origin
            .get(AsRef::<str>::as_ref(id))
            .and_then(|&i| files.policies.get(i))
            .or(files.policies.first())
    };
    if let Some(e) = result.validation_errors().next() {
        let message = format!("policy `{}`: {e}", e.policy_id());
        return Err(match source_of(e.policy_id()) {
            Some(source) => located(source, e, message),
            None => file_error(&files.dir, message),
        });
    }
    // `action == tools/call` does not match a tool declared as an action of its own (its action
    // is `tools/call/<server>/<tool>`, a member of `tools/call`): `in` matches both.
    let tools_call = EntityUid::from_type_name_and_id(
        types.action.clone(),
        cedar_policy::EntityId::new("tools/call"),
    );
    for p in policies.policies() {
        if p.action_constraint() == ActionConstraint::Eq(tools_call.clone()) {
            let path = source_of(p.id()).map_or(files.dir.display(), |s| s.path.display());
            warnings.push(format!(
                "{path}: policy `{}`: `action == Mcp::Action::\"tools/call\"` does not match tools declared as actions of their own; write `action in Mcp::Action::\"tools/call\"`",
                p.id()
            ));
        }
    }
    for w in result.validation_warnings() {
        let path = source_of(w.policy_id()).map_or(files.dir.display(), |s| s.path.display());
        warnings.push(format!("{path}: policy `{}`: {w}", w.policy_id()));
    }

    let (static_entities, overlays) = match &files.entities {
        Some(source) => load_entities(source, &schema, &types)?,
        None => (Vec::new(), HashMap::new()),
    };
    // With the schema given, Cedar adds the schema's action entities (and their groups) and
    // closes every entity's ancestors: kept in that form, requests need not redo it.
    let closed = Entities::from_entities(static_entities, Some(&schema)).map_err(|e| {
        file_error(
            &files.dir,
            format!("entities and schema actions do not combine: {e}"),
        )
    })?;
    let (actions, static_entities): (Vec<Entity>, Vec<Entity>) = closed
        .iter()
        .cloned()
        .partition(|e| *e.uid().type_name() == types.action);
    let actions = actions.into_iter().map(|e| (e.uid(), e)).collect();
    let by_action = policies_by_action(&policies, &closed)
        .map_err(|e| file_error(&files.dir, e.to_string()))?;
    let without_arguments = by_action
        .iter()
        .map(|(action, set)| {
            let (readers, others): (Vec<&Policy>, Vec<&Policy>) = set
                .policies()
                .partition(|p| Reads::of_policy(p).any_arguments());
            let permits = readers.iter().any(|p| p.effect() == Effect::Permit);
            let set = PolicySet::from_policies(others.into_iter().cloned())
                .map_err(|e| file_error(&files.dir, e.to_string()))?;
            Ok((action.clone(), (set, permits)))
        })
        .collect::<Result<HashMap<_, _>, LoadError>>()?;
    let request_statics = static_entities
        .iter()
        .filter(|e| {
            let json = e.to_json_value().unwrap_or_default();
            let non_empty = |k: &str| {
                json.get(k).is_some_and(|v| {
                    v.as_object().is_none_or(|m| !m.is_empty())
                        && v.as_array().is_none_or(|a| !a.is_empty())
                })
            };
            non_empty("attrs") || non_empty("tags") || non_empty("parents")
        })
        .cloned()
        .collect();

    // An entity a policy names that exists nowhere matches nothing: `resource in
    // Mcp::ToolSet::"weathr"` silently never holds. Entities of the types mcp-authz builds per
    // request (users, groups, servers, tools, prompts, resources, actions) can be named before
    // they exist; every other type comes only from entities.json.
    let known: HashSet<EntityUid> = static_entities.iter().map(Entity::uid).collect();
    let per_request = [
        &types.user,
        &types.group,
        &types.server,
        &types.tool,
        &types.prompt,
        &types.resource,
        &types.action,
    ];
    for p in policies.policies() {
        let mut refs = Vec::new();
        if let Ok(json) = p.to_json() {
            entity_refs(&json, &mut refs);
        }
        for (ty, id) in refs {
            let Ok(ty_name) = cedar_policy::EntityTypeName::from_str(&ty) else {
                continue;
            };
            if per_request.contains(&&ty_name) {
                continue;
            }
            let uid = EntityUid::from_type_name_and_id(ty_name, cedar_policy::EntityId::new(&id));
            if !known.contains(&uid) {
                let path = source_of(p.id()).map_or(files.dir.display(), |s| s.path.display());
                warnings.push(format!(
                    "{path}: policy `{}`: `{uid}` is not in entities.json, so it matches nothing (misspelled?)",
                    p.id()
                ));
            }
        }
    }

    let tools = super::arguments::declared_tools(&files.schema.text, &types.action)
        .map_err(|e| file_error(&files.schema.path, e.to_string()))?;
    // Every tool, prompt and resource with an identity of its own for the policies, with the
    // ancestors its per-request entity gets (its parents from entities.json, closed over the
    // static entities, and its server, which has none): the decision cache's reads per target.
    let mut targets: super::reads::Targets = overlays
        .iter()
        .map(|(uid, overlay)| {
            let mut ancestors = HashSet::new();
            for parent in &overlay.parents {
                ancestors.insert(parent.clone());
                ancestors.extend(closed.ancestors(parent).into_iter().flatten().cloned());
            }
            (uid.clone(), ancestors)
        })
        .collect();
    for p in policies.policies() {
        match p.resource_constraint() {
            cedar_policy::ResourceConstraint::Eq(uid)
            | cedar_policy::ResourceConstraint::In(uid)
            | cedar_policy::ResourceConstraint::IsIn(_, uid) => {
                targets.entry(uid).or_default();
            }
            cedar_policy::ResourceConstraint::Any | cedar_policy::ResourceConstraint::Is(_) => {}
        }
    }
    let reads =
        super::reads::ReadsByAction::new(&policies, by_action.iter(), &targets, &tools, &types);
    let forbids_mention_scopes = policies
        .policies()
        .any(|p| p.effect() == Effect::Forbid && p.to_string().contains("scopes"));
    let session_facts = policies.policies().fold((false, false), |(s, v), p| {
        let r = Reads::of_policy(p);
        (s || r.session_id, v || r.protocol_version)
    });
    let bundle = PolicyBundle {
        generation: next_generation(),
        hash: files.hash,
        loaded_at: SystemTime::now(),
        dir: files.dir,
        policy_ids: ids,
        warnings,
        schema,
        policies,
        static_entities,
        request_statics,
        actions,
        by_action,
        without_arguments,
        forbids_mention_scopes,
        session_facts,
        overlays,
        types,
        tools,
        reads,
        tool_counters: Default::default(),
        prebuilt: Default::default(),
    };
    super::vocabulary::check(&bundle, &files.schema.path)?;
    Ok(bundle)
}

/// A number no other bundle of this process has (see `PolicyBundle::generation`).
fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// For each action of the schema, the policies whose action scope can match it (see
/// `PolicyBundle::by_action`).
fn policies_by_action(
    policies: &PolicySet,
    closed: &Entities,
) -> Result<HashMap<EntityUid, PolicySet>, Box<cedar_policy::PolicySetError>> {
    let mut out = HashMap::new();
    for action in closed.iter().map(Entity::uid) {
        if action.type_name().basename() != "Action" {
            continue;
        }
        let groups: HashSet<&EntityUid> = closed.ancestors(&action).into_iter().flatten().collect();
        let matches = |uid: &EntityUid| *uid == action || groups.contains(uid);
        let subset = policies.policies().filter(|p| match p.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(uid) => matches(&uid),
            ActionConstraint::In(list) => list.iter().any(matches),
        });
        let set = PolicySet::from_policies(subset.cloned()).map_err(Box::new)?;
        out.insert(action, set);
    }
    Ok(out)
}

/// `entities.json`: Cedar's JSON entity format. Entries for `Mcp::Tool`, `Mcp::Prompt` and
/// `Mcp::Resource` are facts merged into the entity built per request (they need not repeat
/// `name`, `tenant`, `server`); everything else (tool sets, groups) is used as is.
fn load_entities(
    source: &Source,
    schema: &Schema,
    types: &Types,
) -> Result<(Vec<Entity>, HashMap<EntityUid, Overlay>), LoadError> {
    let err = |m: String| file_error(&source.path, m);
    let value: Value = serde_json::from_str(&source.text).map_err(|e| LoadError::At {
        path: source.path.clone(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let Value::Array(items) = value else {
        return Err(err("expected a JSON array of entities".into()));
    };
    let mut statics = Vec::new();
    let mut overlays = HashMap::new();
    for item in items {
        let entity = Entity::from_json_value(item.clone(), None).map_err(|e| err(e.to_string()))?;
        let uid = entity.uid();
        let ty = uid.type_name();
        // mcp-authz builds these per request; a second copy would collide with it.
        if *ty == types.user || *ty == types.server || ty.basename() == "Action" {
            return Err(err(format!(
                "`{uid}`: users, servers and actions are built by mcp-authz and cannot be listed here"
            )));
        }
        if *ty == types.tool || *ty == types.prompt || *ty == types.resource {
            let overlay = overlay(&item).map_err(|m| err(format!("`{uid}`: {m}")))?;
            if overlays.insert(uid.clone(), overlay).is_some() {
                return Err(err(format!("`{uid}` is listed twice")));
            }
        } else {
            statics.push(entity);
        }
    }
    // Conformance: the static entities as they are, each overlay as part of a sample entity.
    Entities::from_entities(statics.iter().cloned(), Some(schema))
        .map_err(|e| err(e.to_string()))?;
    for (uid, overlay) in &overlays {
        let ty = uid.type_name();
        let key = if *ty == types.resource { "uri" } else { "name" };
        let server = EntityUid::from_type_name_and_id(
            types.server.clone(),
            cedar_policy::EntityId::new("probe"),
        );
        let server_entity = Entity::new(
            server.clone(),
            HashMap::from([
                (
                    "id".to_owned(),
                    RestrictedExpression::new_string("probe".into()),
                ),
                (
                    "tenant".to_owned(),
                    RestrictedExpression::new_string(String::new()),
                ),
            ]),
            HashSet::new(),
        )
        .map_err(|e| err(e.to_string()))?;
        let sample = Entity::new(
            uid.clone(),
            overlay
                .attrs
                .iter()
                .cloned()
                .chain([
                    (
                        key.to_owned(),
                        RestrictedExpression::new_string(String::new()),
                    ),
                    (
                        "tenant".to_owned(),
                        RestrictedExpression::new_string(String::new()),
                    ),
                    (
                        "server".to_owned(),
                        RestrictedExpression::new_string(String::new()),
                    ),
                ])
                .collect(),
            overlay.parents.iter().cloned().chain([server]).collect(),
        )
        .map_err(|e| err(format!("`{uid}`: {e}")))?;
        Entities::from_entities(
            statics.iter().cloned().chain([sample, server_entity]),
            Some(schema),
        )
        .map_err(|e| err(format!("`{uid}`: {e}")))?;
    }
    Ok((statics, overlays))
}

/// Overlay attributes are plain values: strings, booleans, integers and sets of those.
/// Why an `entities.json` entry about a tool, prompt or resource is refused.
#[derive(Debug, thiserror::Error)]
enum OverlayError {
    #[error("`tags` cannot be set here (tool tags are the call arguments); use `attrs`")]
    Tags,
    #[error("`{0}` is set by mcp-authz and cannot be given here")]
    Reserved(String),
    #[error("attribute `{0}`: only strings, booleans, integers and arrays of those are supported")]
    UnsupportedValue(String),
    #[error(transparent)]
    Parent(Box<cedar_policy::entities_json_errors::JsonDeserializationError>),
}

fn overlay(item: &Value) -> Result<Overlay, OverlayError> {
    // A tool's tags are its call arguments, which the caller controls: a fact stored as a tag
    // would be silently replaced by whatever the client sends.
    if item
        .get("tags")
        .is_some_and(|t| t.as_object().is_none_or(|m| !m.is_empty()))
    {
        return Err(OverlayError::Tags);
    }
    let mut attrs = Vec::new();
    if let Some(map) = item.get("attrs").and_then(Value::as_object) {
        for (k, v) in map {
            if matches!(k.as_str(), "name" | "uri" | "tenant" | "server") {
                return Err(OverlayError::Reserved(k.clone()));
            }
            attrs.push((
                k.clone(),
                plain(v).ok_or_else(|| OverlayError::UnsupportedValue(k.clone()))?,
            ));
        }
    }
    let mut parents = Vec::new();
    if let Some(list) = item.get("parents").and_then(Value::as_array) {
        for p in list {
            let uid =
                EntityUid::from_json(p.clone()).map_err(|e| OverlayError::Parent(Box::new(e)))?;
            parents.push(uid);
        }
    }
    Ok(Overlay { attrs, parents })
}

fn plain(v: &Value) -> Option<RestrictedExpression> {
    match v {
        Value::String(s) => Some(RestrictedExpression::new_string(s.clone())),
        Value::Bool(b) => Some(RestrictedExpression::new_bool(*b)),
        Value::Number(n) => n.as_i64().map(RestrictedExpression::new_long),
        Value::Array(items) => items
            .iter()
            .map(plain)
            .collect::<Option<Vec<_>>>()
            .map(RestrictedExpression::new_set),
        _ => None,
    }
}

/// Line and column (1-based) of the first label of a Cedar diagnostic.
fn located(source: &Source, diag: &dyn miette::Diagnostic, message: String) -> LoadError {
    let offset = diag.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    match offset {
        Some(offset) if offset <= source.text.len() => {
            let (line, column) = line_column(&source.text, offset);
            LoadError::At {
                path: source.path.clone(),
                line,
                column,
                message,
            }
        }
        _ => file_error(&source.path, message),
    }
}

/// Where a policy's first line appears at or after `from`: line, column, and the offset just
/// past it (so the next policy is searched after this one).
fn position_of(source: &Source, snippet: &str, from: usize) -> Option<(usize, usize, usize)> {
    let first = snippet
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('@'))?
        .trim();
    let rest = source.text.get(from..)?;
    let offset = from + rest.find(first)?;
    let (line, column) = line_column(&source.text, offset);
    Some((line, column, offset + first.len()))
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    // Back off to a character boundary: Cedar offsets are bytes.
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Every `{"type": T, "id": I}` entity reference in a policy's JSON form (scope constraints,
/// `__entity` literals, `in [...]` lists), as (type, id).
pub(super) fn entity_refs(json: &Value, out: &mut Vec<(String, String)>) {
    match json {
        Value::Object(map) => {
            if let (Some(Value::String(ty)), Some(Value::String(id)), 2) =
                (map.get("type"), map.get("id"), map.len())
            {
                out.push((ty.clone(), id.clone()));
                return;
            }
            map.values().for_each(|v| entity_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| entity_refs(v, out)),
        _ => {}
    }
}
