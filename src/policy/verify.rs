//! `mcp-authz policy verify`: properties of a policy directory proved for every possible request
//! with Cedar's symbolic compiler (`cedar-policy-symcc`) and a cvc5 solver, each one per request
//! environment of the schema (principal type, action, resource type), over every entity store
//! the schema allows (so whatever `entities.json` says). A property that fails comes with a
//! concrete counterexample; one the solver cannot decide is reported as undecided, never
//! skipped. The properties file lives in `verify/properties.rs`, the counterexample's translation
//! into a `policy explain` request in `verify/counterexample.rs`. Printing is the CLI's.

mod counterexample;
mod properties;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use cedar_policy::{Effect, Entities, EntityUid, Policy, PolicySet, RequestEnv};
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicy, CompiledPolicySet};

use super::PolicyBundle;
pub use counterexample::{Counterexample, EntityView, ExplainRequest};
pub use properties::{
    Assertion, DenyList, PROPERTIES_FILE, Properties, PropertiesError, read_properties,
};

/// Where the solver is and how long one question may take.
#[derive(Debug, Clone)]
pub struct SolverConfig {
    /// The cvc5 executable (or anything that speaks like it on stdin/stdout).
    pub path: PathBuf,
    /// A bound on each solver call; also passed to cvc5 as `--tlimit-per`.
    pub timeout: Duration,
}

/// Why verification could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot start the solver `{}`: {message} (install it with scripts/install-cvc5, or set CVC5 / --solver; docs/policy-verify.md)", path.display())]
    NoSolver { path: PathBuf, message: String },
    #[error("the schema's action entities: {0}")]
    Actions(String),
    #[error("property `{property}`: {message}")]
    Property { property: String, message: String },
}

/// The result of one property.
#[derive(Debug)]
pub struct PropertyResult {
    /// What was proved, in words (`tenant isolation`, `deny-list: ...`).
    pub property: String,
    /// The request environments the property was checked in.
    pub checked: usize,
    pub failures: Vec<Failure>,
    /// Environments the solver could not decide: the property is not proved.
    pub undecided: Vec<Undecided>,
}

impl PropertyResult {
    fn new(property: impl Into<String>) -> Self {
        Self {
            property: property.into(),
            checked: 0,
            failures: Vec::new(),
            undecided: Vec::new(),
        }
    }

    pub fn proved(&self) -> bool {
        self.failures.is_empty() && self.undecided.is_empty()
    }
}

/// One way a property fails.
#[derive(Debug)]
pub enum Failure {
    /// A request the property says must be denied, and the policies allow. The counterexample
    /// has the shape mcp-authz builds when one exists in that environment (see [`realism`]).
    Allowed {
        env: String,
        counterexample: Box<Counterexample>,
    },
    /// A policy that can never take effect, in any request environment it applies to.
    Dead {
        id: String,
        effect: Effect,
        /// The environments its scope can match (none: its action scope matches no action).
        envs: usize,
    },
}

/// A question the solver or the compiler could not answer.
#[derive(Debug)]
pub struct Undecided {
    pub env: String,
    pub reason: String,
}

/// Runs every property: the built-ins (tenant isolation, the deny-lists, no dead policy), the
/// properties file's assertions, and with `old` no new allows. Results in that order.
pub async fn verify(
    bundle: &PolicyBundle,
    properties: &Properties,
    old: Option<&PolicyBundle>,
    solver: &SolverConfig,
) -> Result<Vec<PropertyResult>, VerifyError> {
    let mut s = Session::start(solver).await?;
    let schema = &bundle.schema;
    let actions = schema
        .action_entities()
        .map_err(|e| VerifyError::Actions(e.to_string()))?;
    let mut envs: Vec<RequestEnv> = schema.request_envs().collect();
    // In a stable order, so the same directory prints the same report.
    envs.sort_by_key(env_name);
    let mut results = Vec::new();

    if properties.tenant_isolation {
        let property = "tenant isolation: principal.tenant != resource.tenant => deny";
        let guard = guard_policy(
            property,
            "permit (principal, action, resource) when { principal.tenant == resource.tenant };",
        )?;
        results.push(
            s.implies_guard(bundle, property, &envs, |_| true, &guard)
                .await,
        );
    }
    for list in &properties.deny_lists {
        let property = format!(
            "deny-list: tools/call of a tool in ToolSet `{}` => principal in Group `{}`",
            list.tool_set, list.group
        );
        let guard = guard_policy(
            &property,
            &format!(
                "permit (principal, action, resource) unless {{ resource in {}::ToolSet::{} && !(principal in {}::Group::{}) }};",
                NAMESPACE,
                quoted(&list.tool_set),
                NAMESPACE,
                quoted(&list.group)
            ),
        )?;
        let tools_call = action_uid("tools/call")?;
        let in_tools_call = |env: &RequestEnv| is_in(&actions, env.action(), &tools_call);
        results.push(
            s.implies_guard(bundle, &property, &envs, in_tools_call, &guard)
                .await,
        );
    }
    for a in &properties.assertions {
        let (property, condition) = match (&a.never_allows_when, a.always_denies) {
            (Some(when), false) => (
                format!("never allows `{}`: when {{ {when} }}", a.name),
                when.clone(),
            ),
            (None, true) => (format!("always denies `{}`", a.name), "true".to_owned()),
            _ => {
                return Err(VerifyError::Property {
                    property: a.name.clone(),
                    message: "give exactly one of `never_allows_when` and `always_denies: true`"
                        .into(),
                });
            }
        };
        let guard = guard_policy(
            &property,
            &format!("permit (principal, action, resource) unless {{ {condition} }};"),
        )?;
        let scope = match &a.action {
            Some(name) => Some(action_uid(name)?),
            None => None,
        };
        if let Some(uid) = &scope
            && !envs.iter().any(|e| e.action() == uid)
            && !actions.iter().any(|e| e.uid() == *uid)
        {
            return Err(VerifyError::Property {
                property,
                message: format!("action `{uid}` is not in the schema"),
            });
        }
        let applies = |env: &RequestEnv| {
            scope
                .as_ref()
                .is_none_or(|uid| env.action() == uid || is_in(&actions, env.action(), uid))
        };
        results.push(
            s.implies_guard(bundle, &property, &envs, applies, &guard)
                .await,
        );
    }
    results.push(s.dead_policies(bundle, &envs).await);
    if let Some(old) = old {
        results.push(s.no_new_allows(bundle, old, &envs).await);
    }
    Ok(results)
}

/// The namespace of the mcp-authz vocabulary.
const NAMESPACE: &str = "Mcp";

fn action_uid(name: &str) -> Result<EntityUid, VerifyError> {
    EntityUid::from_str(&format!("{NAMESPACE}::Action::{}", quoted(name))).map_err(|e| {
        VerifyError::Property {
            property: name.to_owned(),
            message: e.to_string(),
        }
    })
}

/// A Cedar string literal.
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn guard_policy(property: &str, text: &str) -> Result<PolicySet, VerifyError> {
    let err = |message: String| VerifyError::Property {
        property: property.to_owned(),
        message,
    };
    let policy = Policy::from_str(text).map_err(|e| err(format!("`{text}`: {e}")))?;
    PolicySet::from_policies([policy]).map_err(|e| err(e.to_string()))
}

/// `action` is `group` or a (transitive) member of it.
fn is_in(actions: &Entities, action: &EntityUid, group: &EntityUid) -> bool {
    action == group
        || actions
            .ancestors(action)
            .is_some_and(|mut a| a.any(|u| u == group))
}

fn env_name(env: &RequestEnv) -> String {
    format!("{}, {}, {}", env.principal(), env.action(), env.resource())
}

/// One solver process, restarted after a failure or a timeout (its state is unknown then).
struct Session {
    config: SolverConfig,
    compiler: Option<CedarSymCompiler<LocalSolver>>,
}

/// Runs one solver call with the session's timeout; on a failure the solver is discarded.
macro_rules! solve {
    ($s:ident, |$c:ident| $call:expr) => {{
        let timeout = $s.config.timeout;
        match $s.compiler() {
            Err(e) => Err(e),
            Ok($c) => match tokio::time::timeout(timeout, $call).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => {
                    $s.compiler = None;
                    Err(format!("solver: {e}"))
                }
                Err(_) => {
                    $s.compiler = None;
                    Err(format!(
                        "solver timed out after {}",
                        humantime::format_duration(timeout)
                    ))
                }
            },
        }
    }};
}

// === impl Session ===

impl Session {
    /// Starts the solver and asks it one trivial question, so a missing or broken solver is
    /// an error up front rather than an undecided property.
    async fn start(config: &SolverConfig) -> Result<Self, VerifyError> {
        use cedar_policy_symcc::solver::{Decision, Solver};
        let mut solver = spawn(config).map_err(|message| VerifyError::NoSolver {
            path: config.path.clone(),
            message,
        })?;
        // Starting may take longer than a question (the PyPI driver starts Python).
        let startup = config.timeout.max(Duration::from_secs(30));
        match tokio::time::timeout(startup, solver.check_sat()).await {
            Ok(Ok(Decision::Sat)) => {}
            Ok(Ok(d)) => {
                return Err(VerifyError::NoSolver {
                    path: config.path.clone(),
                    message: format!("an empty problem is not `sat` but {d:?}"),
                });
            }
            Ok(Err(e)) => {
                return Err(VerifyError::NoSolver {
                    path: config.path.clone(),
                    message: e.to_string(),
                });
            }
            Err(_) => {
                return Err(VerifyError::NoSolver {
                    path: config.path.clone(),
                    message: "no answer to an empty problem".into(),
                });
            }
        }
        let compiler = CedarSymCompiler::new(solver).map_err(|e| VerifyError::NoSolver {
            path: config.path.clone(),
            message: e.to_string(),
        })?;
        Ok(Self {
            config: config.clone(),
            compiler: Some(compiler),
        })
    }

    fn compiler(&mut self) -> Result<&mut CedarSymCompiler<LocalSolver>, String> {
        if self.compiler.is_none() {
            let solver = spawn(&self.config)?;
            self.compiler = Some(CedarSymCompiler::new(solver).map_err(|e| e.to_string())?);
        }
        self.compiler.as_mut().ok_or_else(|| "no solver".to_owned())
    }

    /// `bundle`'s policies allow nothing that `guard` does not, in each environment `applies`
    /// selects: a counterexample is a request they allow and the guard denies.
    async fn implies_guard(
        &mut self,
        bundle: &PolicyBundle,
        property: &str,
        envs: &[RequestEnv],
        applies: impl Fn(&RequestEnv) -> bool,
        guard: &PolicySet,
    ) -> PropertyResult {
        let mut result = PropertyResult::new(property);
        for env in envs.iter().filter(|e| applies(e)) {
            result.checked += 1;
            let name = env_name(env);
            let compiled = CompiledPolicySet::compile(&bundle.policies, env, &bundle.schema)
                .map_err(|e| format!("the policies: {e}"))
                .and_then(|p| {
                    CompiledPolicySet::compile(guard, env, &bundle.schema)
                        .map(|g| (p, g))
                        .map_err(|e| format!("the property: {}", cedar_error(&e)))
                });
            let answer = match compiled {
                Ok((p, g)) => {
                    solve!(self, |c| c.check_implies_with_counterexample_opt(&p, &g))
                }
                Err(e) => Err(e),
            };
            let answer = self.prefer_realistic(answer, bundle, env, guard).await;
            record(&mut result, bundle, name, answer);
        }
        result
    }

    /// A solver's answer with its counterexample, if any, replaced by one of the shape
    /// mcp-authz builds when one exists ([`Self::realistic`]); the flag says which it is.
    async fn prefer_realistic(
        &mut self,
        answer: Result<Option<cedar_policy_symcc::Env>, String>,
        bundle: &PolicyBundle,
        env: &RequestEnv,
        guard: &PolicySet,
    ) -> Result<Option<(cedar_policy_symcc::Env, bool)>, String> {
        let Some(raw) = answer? else {
            return Ok(None);
        };
        Ok(Some(
            match self.realistic(bundle, &bundle.policies, env, guard).await {
                Some(cex) => (cex, true),
                None => (raw, false),
            },
        ))
    }

    /// The property failed: look for a counterexample of the shape mcp-authz builds (see
    /// [`realism`]), which `policy explain` can reproduce. `None` when there is none (the
    /// solver's first one stands, with its notes) or the question cannot be put.
    async fn realistic(
        &mut self,
        bundle: &PolicyBundle,
        policies: &PolicySet,
        env: &RequestEnv,
        guard: &PolicySet,
    ) -> Option<cedar_policy_symcc::Env> {
        let text = realism(bundle, env)?;
        let forbid =
            Policy::parse(Some(cedar_policy::PolicyId::new("mcp-authz-realism")), text).ok()?;
        let mut constrained = policies.clone();
        constrained.add(forbid).ok()?;
        let p = CompiledPolicySet::compile(&constrained, env, &bundle.schema).ok()?;
        let g = CompiledPolicySet::compile(guard, env, &bundle.schema).ok()?;
        solve!(self, |c| c.check_implies_with_counterexample_opt(&p, &g))
            .ok()
            .flatten()
    }

    /// Every permit must allow some request and every forbid must match some request, in some
    /// environment its scope can match: otherwise it is dead (a contradiction, `when { false }`,
    /// a permit every allow of which a forbid overrides, a misspelled action group...).
    async fn dead_policies(
        &mut self,
        bundle: &PolicyBundle,
        envs: &[RequestEnv],
    ) -> PropertyResult {
        let mut result = PropertyResult::new("no dead policy");
        let forbids: Vec<Policy> = bundle
            .policies
            .policies()
            .filter(|p| p.effect() == Effect::Forbid)
            .cloned()
            .collect();
        for id in &bundle.policy_ids {
            let Some(policy) = bundle.policies.policy(&cedar_policy::PolicyId::new(id)) else {
                continue;
            };
            // Environments whose action the policy's scope can match (see `by_action`); in
            // the others it is not even evaluated.
            let scoped: Vec<&RequestEnv> = envs
                .iter()
                .filter(|e| {
                    bundle
                        .by_action
                        .get(e.action())
                        .is_some_and(|set| set.policy(policy.id()).is_some())
                })
                .collect();
            let mut alive = false;
            let mut undecided = Vec::new();
            for env in &scoped {
                result.checked += 1;
                let answer = match policy.effect() {
                    // Dead when the permit, with every forbid, denies everything.
                    Effect::Permit => {
                        match PolicySet::from_policies(
                            std::iter::once(policy.clone()).chain(forbids.iter().cloned()),
                        )
                        .map_err(|e| e.to_string())
                        .and_then(|set| {
                            CompiledPolicySet::compile(&set, env, &bundle.schema)
                                .map_err(|e| cedar_error(&e))
                        }) {
                            Ok(set) => solve!(self, |c| c.check_always_denies_opt(&set)),
                            Err(e) => Err(e),
                        }
                    }
                    Effect::Forbid => {
                        match CompiledPolicy::compile(policy, env, &bundle.schema)
                            .map_err(|e| cedar_error(&e))
                        {
                            Ok(p) => solve!(self, |c| c.check_never_matches_opt(&p)),
                            Err(e) => Err(e),
                        }
                    }
                };
                match answer {
                    Ok(true) => {}
                    Ok(false) => {
                        alive = true;
                        break;
                    }
                    Err(reason) => undecided.push(Undecided {
                        env: format!("policy `{id}` in {}", env_name(env)),
                        reason,
                    }),
                }
            }
            if alive {
                continue;
            }
            if undecided.is_empty() {
                result.failures.push(Failure::Dead {
                    id: id.clone(),
                    effect: policy.effect(),
                    envs: scoped.len(),
                });
            } else {
                result.undecided.extend(undecided);
            }
        }
        result
    }

    /// The new policies allow nothing the old ones deny (new => old), in each environment of
    /// the new schema, both compiled against it.
    async fn no_new_allows(
        &mut self,
        bundle: &PolicyBundle,
        old: &PolicyBundle,
        envs: &[RequestEnv],
    ) -> PropertyResult {
        let mut result =
            PropertyResult::new(format!("no new allows (against `{}`)", old.dir.display()));
        for env in envs {
            result.checked += 1;
            let name = env_name(env);
            let compiled = CompiledPolicySet::compile(&bundle.policies, env, &bundle.schema)
                .map_err(|e| format!("the new policies: {}", cedar_error(&e)))
                .and_then(|n| {
                    CompiledPolicySet::compile(&old.policies, env, &bundle.schema)
                        .map(|o| (n, o))
                        .map_err(|e| {
                            format!(
                                "the old policies against the new schema: {}",
                                cedar_error(&e)
                            )
                        })
                });
            let answer = match compiled {
                Ok((n, o)) => solve!(self, |c| c.check_implies_with_counterexample_opt(&n, &o)),
                Err(e) => Err(e),
            };
            let answer = self
                .prefer_realistic(answer, bundle, env, &old.policies)
                .await;
            record(&mut result, bundle, name, answer);
        }
        result
    }
}

/// A forbid that leaves only requests of the shape mcp-authz builds and `policy explain` can
/// ask: the context and caller facts explain fixes, a tool's own action only on that tool (with
/// its name and server), a tool in exactly the tool sets `entities.json` puts it in, and the
/// base `tools/call` only on tools without an action of their own. Proofs never use it: only the
/// search for a counterexample to show, after a property failed.
fn realism(bundle: &PolicyBundle, env: &RequestEnv) -> Option<String> {
    let t = &bundle.types;
    if env.principal() != &t.user {
        return None;
    }
    let mut facts = vec![
        "context.client_id == \"\"".to_owned(),
        "context.protocol_version == \"2025-11-25\"".to_owned(),
        "context.session_id == \"\"".to_owned(),
        "context.batch == false".to_owned(),
        "principal.client_id == \"\"".to_owned(),
        "principal.issuer == \"https://issuer.example\"".to_owned(),
    ];
    if env.resource() == &t.tool {
        let action: &str = env.action().id().unescaped();
        let declared: Vec<String> = bundle
            .tools
            .keys()
            .map(|k| format!("{}::Tool::{}", NAMESPACE, quoted(k)))
            .collect();
        match action.strip_prefix("tools/call/") {
            Some(own) => {
                let (server, name) = own.split_once('/')?;
                facts.push(format!(
                    "resource == {NAMESPACE}::Tool::{} && resource.name == {} && resource.server == {}",
                    quoted(own),
                    quoted(name),
                    quoted(server)
                ));
            }
            None if !declared.is_empty() => {
                facts.push(format!("!(resource in [{}])", declared.join(", ")));
            }
            None => {}
        }
        // Tool sets: membership exactly as entities.json says.
        let mut members: std::collections::BTreeMap<String, Vec<String>> = bundle
            .static_entities
            .iter()
            .map(cedar_policy::Entity::uid)
            .filter(|u| u.type_name().basename() == "ToolSet")
            .map(|u| (u.to_string(), Vec::new()))
            .collect();
        let closed: std::collections::HashMap<EntityUid, std::collections::HashSet<EntityUid>> =
            bundle
                .static_entities
                .iter()
                .cloned()
                .map(|e| {
                    let (uid, _, ancestors) = e.into_inner();
                    (uid, ancestors)
                })
                .collect();
        for (tool, overlay) in &bundle.overlays {
            if tool.type_name() != &t.tool {
                continue;
            }
            let mut ancestors: std::collections::HashSet<&EntityUid> =
                overlay.parents.iter().collect();
            for p in &overlay.parents {
                ancestors.extend(closed.get(p).into_iter().flatten());
            }
            for a in ancestors {
                if let Some(list) = members.get_mut(&a.to_string()) {
                    list.push(tool.to_string());
                }
            }
        }
        // Facts entities.json gives tools (`read_only`...): as it gives them, and absent on
        // the tools it does not name.
        let mut holders: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (tool, overlay) in &bundle.overlays {
            if tool.type_name() != &t.tool {
                continue;
            }
            let entity = cedar_policy::Entity::new(
                tool.clone(),
                overlay.attrs.iter().cloned().collect(),
                std::collections::HashSet::new(),
            )
            .ok()?;
            let json = entity.to_json_value().ok()?;
            for (k, v) in json.get("attrs").and_then(serde_json::Value::as_object)? {
                facts.push(format!(
                    "(!(resource == {tool}) || (resource has {k} && resource.{k} == {}))",
                    cedar_literal(v)?
                ));
                holders.entry(k.clone()).or_default().push(tool.to_string());
            }
        }
        for (k, tools) in holders {
            facts.push(format!(
                "(resource in [{}] || !(resource has {k}))",
                tools.join(", ")
            ));
        }
        for (set, tools) in members {
            facts.push(if tools.is_empty() {
                format!("!(resource in {set})")
            } else {
                format!(
                    "(resource in {set}) == (resource in [{}])",
                    tools.join(", ")
                )
            });
        }
    }
    Some(format!(
        "forbid (principal, action, resource) unless {{ {} }};",
        facts.join(" && ")
    ))
}

/// A plain JSON value (what entities.json may give a tool) as a Cedar literal.
fn cedar_literal(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::String(_) | Value::Bool(_) => Some(v.to_string()),
        Value::Number(n) => n.as_i64().map(|n| n.to_string()),
        Value::Array(items) => items
            .iter()
            .map(cedar_literal)
            .collect::<Option<Vec<_>>>()
            .map(|l| format!("[{}]", l.join(", "))),
        _ => None,
    }
}

fn record(
    result: &mut PropertyResult,
    bundle: &PolicyBundle,
    env: String,
    answer: Result<Option<(cedar_policy_symcc::Env, bool)>, String>,
) {
    match answer {
        Ok(None) => {}
        Ok(Some((cex, realistic))) => result.failures.push(Failure::Allowed {
            env,
            counterexample: Box::new(Counterexample::new(bundle, &cex, realistic)),
        }),
        Err(reason) => result.undecided.push(Undecided { env, reason }),
    }
}

/// A symcc error with the validator's messages it carries (a type error names the policy).
fn cedar_error(e: &cedar_policy_symcc::err::Error) -> String {
    use miette::Diagnostic;
    let mut out = e.to_string();
    if let Some(related) = e.related() {
        for r in related {
            out.push_str(&format!("; {r}"));
        }
    }
    out
}

fn spawn(config: &SolverConfig) -> Result<LocalSolver, String> {
    let ms = config.timeout.as_millis().max(1);
    LocalSolver::from_command(
        tokio::process::Command::new(&config.path)
            .args(["--lang", "smt"])
            .arg(format!("--tlimit-per={ms}"))
            .kill_on_drop(true),
    )
    .map_err(|e| match e {
        cedar_policy_symcc::solver::SolverError::Io(io) => io.to_string(),
        other => other.to_string(),
    })
}

/// The solver `policy verify` uses unless told: `CVC5`, else `cvc5` on the PATH (as symcc's own
/// `LocalSolver::cvc5` looks).
pub fn default_solver() -> PathBuf {
    std::env::var_os("CVC5")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cvc5"))
}

/// The properties file of a directory, when it has one.
pub fn properties_in(dir: &Path) -> Option<PathBuf> {
    let path = dir.join(PROPERTIES_FILE);
    path.is_file().then_some(path)
}
