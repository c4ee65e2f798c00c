//! `mcp-authz policy diff`: two policy sets evaluated over the same requests, and the requests
//! whose answer changed. Data only; the CLI prints it.
//!
//! The requests are the test cases of both sets, then a request space built from both sets'
//! schemas, entities and cases (see [`request_space`]). Every request is evaluated with
//! [`cases::evaluate_resolved`], the code behind `policy test` and `policy explain`, so an
//! answer is what a check would give, step-up challenge included.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use super::PolicyBundle;
use super::arguments::{TOOL_ACTION_PREFIX, sample};
use super::cases::{self, Caller, CaseError, CaseFile, PrincipalSpec, Resolved, ServerSpec, Site};

/// The most requests taken from the request space unless told otherwise (`--limit`). The
/// shipped set's space has under 5,000; the bound keeps a set with many tools, callers or
/// scopes from running for minutes.
pub const DEFAULT_LIMIT: usize = 100_000;

/// The task id of `tasks/get`, `tasks/result` and `tasks/cancel` when no test case names one.
const TASK_ID: &str = "task-1";

/// One request both sets answer.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// The test case it is; `None` for a request of the request space.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    pub request: Resolved,
}

/// The requests to evaluate: the test cases first, then the request space.
#[derive(Debug)]
pub struct RequestSpace {
    pub probes: Vec<Probe>,
    /// How many of `probes` are test cases (they come first).
    pub cases: usize,
    /// The size of the request space before `limit` (test cases not counted).
    pub space_total: usize,
    /// The most requests taken from the request space.
    pub limit: usize,
}

/// What a set answers to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Verdict {
    Allow,
    /// A plain 403: no scope of `scopes_supported` would allow it.
    Deny,
    /// A 403 with an `insufficient_scope` challenge naming these scopes.
    StepUp {
        challenge: Vec<String>,
    },
    /// The tool's arguments do not fit its declaration (a 400 before any policy runs).
    Invalid,
    /// The request could not be put to the policies (the service would fail closed).
    Error,
}

/// A verdict with the policies behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Satisfied permits of an allow, satisfied forbids of a deny; for a step-up, the permits
    /// that allow once the challenge is followed; empty on a plain default deny.
    pub determining: Vec<String>,
    /// Policy evaluation errors, or why the request is invalid or could not be decided.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A request whose verdict differs between the sets.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    #[serde(flatten)]
    pub probe: Probe,
    pub old: Answer,
    pub new: Answer,
    /// The policies the change is reported under: the new set's determining policies when it
    /// has any (a new allow or a new forbid), else the old set's (the permit that no longer
    /// allows, the forbid that no longer denies); empty when neither has any.
    pub policies: Vec<String>,
}

/// The result of a diff.
#[derive(Debug, Serialize)]
pub struct Diff {
    /// Requests evaluated by both sets: `cases` plus those of the request space.
    pub evaluated: usize,
    pub cases: usize,
    pub space_total: usize,
    pub limit: usize,
    /// The request space was larger than `limit`; only its first `limit` requests were taken.
    pub truncated: bool,
    pub changes: Vec<Change>,
}

// === request space ===

/// Which entity a method acts on, as `policy test` builds it (see `cases::target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Server,
    Task,
    Tool,
    Prompt,
    Resource,
}

impl Kind {
    /// The targets of a method; the schema then says which of them it applies to.
    fn of_method(method: &str) -> &'static [Kind] {
        match method {
            "tools/call" => &[Kind::Tool],
            "prompts/get" => &[Kind::Prompt],
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => &[Kind::Resource],
            "completion/complete" => &[Kind::Prompt, Kind::Resource],
            "tasks/get" | "tasks/result" | "tasks/cancel" => &[Kind::Task],
            _ => &[Kind::Server],
        }
    }

    /// The entity type of the request's resource.
    fn type_name(self, t: &super::Types) -> &cedar_policy::EntityTypeName {
        match self {
            Kind::Server | Kind::Task => &t.server,
            Kind::Tool => &t.tool,
            Kind::Prompt => &t.prompt,
            Kind::Resource => &t.resource,
        }
    }
}

/// What a server has that requests can name, gathered from both sets and the cases.
#[derive(Default)]
struct Targets {
    /// Tool name -> the argument objects to call it with.
    tools: BTreeMap<String, Vec<Map<String, Value>>>,
    prompts: BTreeSet<String>,
    resources: BTreeSet<String>,
}

/// The targets of a server nothing names.
const EMPTY: &Targets = &Targets {
    tools: BTreeMap::new(),
    prompts: BTreeSet::new(),
    resources: BTreeSet::new(),
};

/// A request of the space without its caller and scopes.
struct Shape<'a> {
    site: &'a Site,
    method: &'a str,
    tool: Option<&'a str>,
    prompt: Option<&'a str>,
    resource: Option<&'a str>,
    task: Option<&'a str>,
    arguments: Option<&'a Map<String, Value>>,
}

/// Builds the requests a diff evaluates. `bundles` are both sets and `files` their case files
/// (the new set's first: its defaults give the default server and caller).
///
/// First every test case of `files`, with its file's defaults, once per distinct name and
/// content. Then the request space, the product of:
/// - servers: each distinct (id, tenant) of the cases, with the `scopes_supported` and step-up
///   rule of its first case (the defaults' server first); a server id that only the entities
///   or the schema name gets the default server's tenant and scopes;
/// - per server, each method the schemas declare with `appliesTo` (per-tool actions are reached
///   through `tools/call`) against each target it applies to: the server itself for session
///   methods; every tool of that server in `entities.json` (`Mcp::Tool`), the schemas' per-tool
///   actions and the cases, called with each declaration's sample arguments (all fields set),
///   with `{}` when no set declares the tool, and with each case's arguments for it; every
///   prompt and resource of `entities.json` and the cases; the cases' task ids (else `task-1`);
/// - callers: each distinct caller of the cases (sub, tenant, client id, issuer, groups,
///   claims), the defaults' caller, and the defaults' caller as a member of each group that
///   `entities.json` lists or a policy names;
/// - scope sets: none, each single scope (of any `scopes_supported` or case), each case's
///   scopes, and each server's whole `scopes_supported`. Not every subset.
///
/// A request equal to a test case is not evaluated twice; of the others, only the first `limit`
/// are taken.
pub fn request_space(bundles: &[&PolicyBundle], files: &[&CaseFile], limit: usize) -> RequestSpace {
    // Test cases, deduplicated by name and content.
    let mut probes = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut resolved: Vec<Resolved> = Vec::new();
    for file in files {
        for case in &file.cases {
            let r = cases::resolve(&file.defaults, case);
            if seen.insert(format!("{:?}", (Some(&case.name), &r))) {
                probes.push(Probe {
                    case: Some(case.name.clone()),
                    request: r.clone(),
                });
            }
            resolved.push(r);
        }
    }
    let cases = probes.len();

    let mut sites = sites(files, &resolved);
    let (targets, tasks) = targets(bundles, &resolved);
    // A server that only the entities or the schema name: the default server's facts.
    if let Some(default) = sites.first().cloned() {
        for id in targets.keys() {
            if !sites.iter().any(|s| s.id == *id) {
                sites.push(Site {
                    id: id.clone(),
                    ..default.clone()
                });
            }
        }
    }

    let methods = methods(bundles);
    let callers = callers(bundles, files, &resolved);
    let scope_sets = scope_sets(&sites, &resolved);
    let shapes = shapes(&sites, &methods, &targets, &tasks);

    // The product of the shapes with the callers and the scope sets.
    let space_total = shapes
        .len()
        .saturating_mul(callers.len())
        .saturating_mul(scope_sets.len());
    let mut taken = 0usize;
    'space: for shape in &shapes {
        for caller in &callers {
            for scopes in &scope_sets {
                if taken >= limit {
                    break 'space;
                }
                let request = Resolved {
                    server: shape.site.clone(),
                    caller: Caller {
                        scopes: scopes.clone(),
                        ..caller.clone()
                    },
                    method: shape.method.to_owned(),
                    tool: shape.tool.map(str::to_owned),
                    prompt: shape.prompt.map(str::to_owned),
                    resource: shape.resource.map(str::to_owned),
                    task: shape.task.map(str::to_owned),
                    arguments: shape.arguments.cloned().unwrap_or_default(),
                };
                let is_case = probes
                    .iter()
                    .take(cases)
                    .any(|p: &Probe| p.request == request);
                if !is_case {
                    taken += 1;
                    probes.push(Probe {
                        case: None,
                        request,
                    });
                }
            }
        }
    }
    RequestSpace {
        probes,
        cases,
        space_total,
        limit,
    }
}

/// The servers: the defaults' first, then each case's (id, tenant), with the facts of the first
/// that names it.
fn sites(files: &[&CaseFile], resolved: &[Resolved]) -> Vec<Site> {
    let mut sites: Vec<Site> = Vec::new();
    let add_site = |site: Site, sites: &mut Vec<Site>| {
        if !sites
            .iter()
            .any(|s| s.id == site.id && s.tenant == site.tenant)
        {
            sites.push(site);
        }
    };
    for file in files {
        add_site(
            cases::resolve_site(&file.defaults.server, &ServerSpec::default()),
            &mut sites,
        );
    }
    if sites.is_empty() {
        add_site(
            cases::resolve_site(&ServerSpec::default(), &ServerSpec::default()),
            &mut sites,
        );
    }
    for r in resolved {
        add_site(r.server.clone(), &mut sites);
    }
    sites
}

/// What each server id has that requests can name, and the task ids.
fn targets(
    bundles: &[&PolicyBundle],
    resolved: &[Resolved],
) -> (BTreeMap<String, Targets>, BTreeSet<String>) {
    let mut targets: BTreeMap<String, Targets> = BTreeMap::new();
    let mut declared: HashSet<(String, String)> = HashSet::new();
    for b in bundles {
        let t = &b.types;
        for uid in b.overlays.keys() {
            let id: &str = uid.id().unescaped();
            let Some((server, name)) = id.split_once('/') else {
                continue;
            };
            let entry = targets.entry(server.to_owned()).or_default();
            let ty = uid.type_name();
            if *ty == t.tool {
                entry.tools.entry(name.to_owned()).or_default();
            } else if *ty == t.prompt {
                entry.prompts.insert(name.to_owned());
            } else if *ty == t.resource {
                entry.resources.insert(name.to_owned());
            }
        }
        for (key, tool) in &b.tools {
            let Some((server, name)) = key.split_once('/') else {
                continue;
            };
            declared.insert((server.to_owned(), name.to_owned()));
            let variants = targets
                .entry(server.to_owned())
                .or_default()
                .tools
                .entry(name.to_owned())
                .or_default();
            push_unique(variants, sample(&tool.arguments));
        }
    }
    let mut tasks: BTreeSet<String> = BTreeSet::new();
    for r in resolved {
        let entry = targets.entry(r.server.id.clone()).or_default();
        if let Some(tool) = &r.tool {
            entry.tools.entry(tool.clone()).or_default();
        }
        if let Some(prompt) = &r.prompt {
            entry.prompts.insert(prompt.clone());
        }
        if let Some(resource) = &r.resource {
            entry.resources.insert(resource.clone());
        }
        if let Some(task) = &r.task {
            tasks.insert(task.clone());
        }
    }
    if tasks.is_empty() {
        tasks.insert(TASK_ID.to_owned());
    }
    for (server, entry) in &mut targets {
        for (name, variants) in &mut entry.tools {
            if !declared.contains(&(server.clone(), name.clone())) {
                push_unique(variants, Map::new());
            }
        }
    }
    for r in resolved {
        if let (Some(tool), "tools/call") = (&r.tool, r.method.as_str())
            && let Some(variants) = targets
                .get_mut(&r.server.id)
                .and_then(|t| t.tools.get_mut(tool))
        {
            push_unique(variants, r.arguments.clone());
        }
    }
    (targets, tasks)
}

/// The methods the schemas declare, with the targets each applies to in some schema.
fn methods(bundles: &[&PolicyBundle]) -> BTreeMap<String, BTreeSet<Kind>> {
    let mut methods: BTreeMap<String, BTreeSet<Kind>> = BTreeMap::new();
    for b in bundles {
        for action in b.schema.actions() {
            let id: &str = action.id().unescaped();
            if id.starts_with(TOOL_ACTION_PREFIX) || !authorizable(id) {
                continue;
            }
            let Some(types) = b.schema.resources_for_action(action) else {
                continue;
            };
            let types: Vec<&cedar_policy::EntityTypeName> = types.collect();
            for kind in Kind::of_method(id) {
                if types.contains(&kind.type_name(&b.types)) {
                    methods.entry(id.to_owned()).or_default().insert(*kind);
                }
            }
        }
    }
    methods
}

/// The callers, scopes apart: the defaults', the cases', and the defaults' in each group.
fn callers(bundles: &[&PolicyBundle], files: &[&CaseFile], resolved: &[Resolved]) -> Vec<Caller> {
    let mut callers: Vec<Caller> = Vec::new();
    let no_scopes = |mut c: Caller| {
        c.scopes.clear();
        c
    };
    for file in files {
        push_unique(
            &mut callers,
            no_scopes(cases::resolve_caller(
                &file.defaults.principal,
                &PrincipalSpec::default(),
            )),
        );
    }
    if callers.is_empty() {
        callers.push(no_scopes(cases::resolve_caller(
            &PrincipalSpec::default(),
            &PrincipalSpec::default(),
        )));
    }
    for r in resolved {
        push_unique(&mut callers, no_scopes(r.caller.clone()));
    }
    if let Some(base) = callers.first().cloned() {
        for group in groups(bundles) {
            push_unique(
                &mut callers,
                Caller {
                    groups: vec![group],
                    ..base.clone()
                },
            );
        }
    }
    callers
}

/// The scope sets, each sorted: none, each single scope, each case's, each server's whole
/// `scopes_supported`.
fn scope_sets(sites: &[Site], resolved: &[Resolved]) -> Vec<Vec<String>> {
    let mut singles: BTreeSet<&String> = BTreeSet::new();
    for s in sites {
        singles.extend(&s.scopes_supported);
    }
    for r in resolved {
        singles.extend(&r.caller.scopes);
    }
    let mut scope_sets: Vec<Vec<String>> = vec![Vec::new()];
    for s in singles {
        push_unique(&mut scope_sets, vec![s.clone()]);
    }
    let sorted = |v: &[String]| {
        let set: BTreeSet<&String> = v.iter().collect();
        set.into_iter().cloned().collect::<Vec<String>>()
    };
    for r in resolved {
        push_unique(&mut scope_sets, sorted(&r.caller.scopes));
    }
    for s in sites {
        push_unique(&mut scope_sets, sorted(&s.scopes_supported));
    }
    scope_sets
}

/// Every (server, method, target, arguments) of the space.
fn shapes<'a>(
    sites: &'a [Site],
    methods: &'a BTreeMap<String, BTreeSet<Kind>>,
    targets: &'a BTreeMap<String, Targets>,
    tasks: &'a BTreeSet<String>,
) -> Vec<Shape<'a>> {
    let mut shapes: Vec<Shape<'_>> = Vec::new();
    for site in sites {
        let t = targets.get(&site.id).unwrap_or(EMPTY);
        for (method, kinds) in methods {
            let blank = Shape {
                site,
                method,
                tool: None,
                prompt: None,
                resource: None,
                task: None,
                arguments: None,
            };
            for kind in kinds {
                match kind {
                    Kind::Server => shapes.push(Shape { ..blank }),
                    Kind::Task => shapes.extend(tasks.iter().map(|id| Shape {
                        task: Some(id),
                        ..blank
                    })),
                    Kind::Tool => {
                        for (name, variants) in &t.tools {
                            shapes.extend(variants.iter().map(|a| Shape {
                                tool: Some(name),
                                arguments: Some(a),
                                ..blank
                            }));
                        }
                    }
                    Kind::Prompt => shapes.extend(t.prompts.iter().map(|p| Shape {
                        prompt: Some(p),
                        ..blank
                    })),
                    Kind::Resource => shapes.extend(t.resources.iter().map(|u| Shape {
                        resource: Some(u),
                        ..blank
                    })),
                }
            }
        }
    }
    shapes
}

/// The methods `policy test` can put to the policies (see `cases::target`).
fn authorizable(method: &str) -> bool {
    crate::mcp::KNOWN_METHODS.contains(&method) || matches!(method, "response" | "GET" | "DELETE")
}

/// The groups `entities.json` lists or a policy names, in both sets, sorted.
fn groups(bundles: &[&PolicyBundle]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for b in bundles {
        let group = b.types.group.to_string();
        for e in &b.static_entities {
            let uid = e.uid();
            if *uid.type_name() == b.types.group {
                out.insert(uid.id().unescaped().to_owned());
            }
        }
        for p in b.policies.policies() {
            let mut refs = Vec::new();
            if let Ok(json) = p.to_json() {
                super::load::entity_refs(&json, &mut refs);
            }
            out.extend(
                refs.into_iter()
                    .filter(|(ty, _)| *ty == group)
                    .map(|(_, id)| id),
            );
        }
    }
    out
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

// === evaluation ===

/// Evaluates every request with both sets and keeps those whose verdict differs.
pub fn diff(old: &PolicyBundle, new: &PolicyBundle, space: &RequestSpace) -> Diff {
    let mut changes = Vec::new();
    for probe in &space.probes {
        let old_answer = answer(old, probe);
        let new_answer = answer(new, probe);
        if old_answer.verdict != new_answer.verdict {
            let policies = if new_answer.determining.is_empty() {
                old_answer.determining.clone()
            } else {
                new_answer.determining.clone()
            };
            changes.push(Change {
                probe: probe.clone(),
                old: old_answer,
                new: new_answer,
                policies,
            });
        }
    }
    Diff {
        evaluated: space.probes.len(),
        cases: space.cases,
        space_total: space.space_total,
        limit: space.limit,
        truncated: space.space_total > space.limit,
        changes,
    }
}

/// What one set answers to one request, by the evaluation `policy test` runs.
pub fn answer(bundle: &PolicyBundle, probe: &Probe) -> Answer {
    let name = probe.case.as_deref().unwrap_or("request space");
    match cases::evaluate_resolved(bundle, &probe.request, name) {
        Ok(outcome) => {
            let d = outcome.decision;
            let (verdict, determining) = match (d.allowed, d.challenge_scopes) {
                (true, _) => (Verdict::Allow, d.determining),
                (false, Some(challenge)) => {
                    let after = after_step_up(bundle, probe, name, &challenge);
                    (Verdict::StepUp { challenge }, after)
                }
                (false, None) => (Verdict::Deny, d.determining),
            };
            Answer {
                verdict,
                determining,
                errors: d.errors,
            }
        }
        Err(CaseError::InvalidArguments { error, .. }) => Answer {
            verdict: Verdict::Invalid,
            determining: Vec::new(),
            errors: vec![error.to_string()],
        },
        Err(e) => Answer {
            verdict: Verdict::Error,
            determining: Vec::new(),
            errors: vec![e.to_string()],
        },
    }
}

/// The permits that allow a request once its step-up challenge is followed (the granted scopes
/// plus the challenged ones): what a step-up answer is reported under, as a default deny has
/// no determining policy of its own.
fn after_step_up(
    bundle: &PolicyBundle,
    probe: &Probe,
    name: &str,
    challenge: &[String],
) -> Vec<String> {
    let mut request = probe.request.clone();
    for s in challenge {
        push_unique(&mut request.caller.scopes, s.clone());
    }
    match cases::evaluate_resolved(bundle, &request, name) {
        Ok(o) if o.decision.allowed => o.decision.determining,
        _ => Vec::new(),
    }
}

// === impl Diff ===

impl Diff {
    /// The changes by the policies they are reported under (see [`Change::policies`]), in
    /// the order of those ids; within a group, in evaluation order.
    pub fn groups(&self) -> BTreeMap<&[String], Vec<&Change>> {
        let mut out: BTreeMap<&[String], Vec<&Change>> = BTreeMap::new();
        for c in &self.changes {
            out.entry(c.policies.as_slice()).or_default().push(c);
        }
        out
    }
}

// === impl Verdict ===

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Allow => f.write_str("allow"),
            Verdict::Deny => f.write_str("deny"),
            Verdict::StepUp { challenge } => write!(f, "step-up [{}]", challenge.join(" ")),
            Verdict::Invalid => f.write_str("invalid"),
            Verdict::Error => f.write_str("error"),
        }
    }
}

#[cfg(test)]
mod tests;
