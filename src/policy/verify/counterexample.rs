//! A solver's counterexample (a request and an entity store) in mcp-authz terms: the caller,
//! the action, the target and the context, the `policy explain` flags that ask for the same
//! request, and what `policy explain` decides for them against the directory, which closes the
//! loop (a counterexample may rely on an entity hierarchy `entities.json` does not declare, or
//! on a field explain cannot set; both are said).

use serde_json::{Map, Value};

use crate::policy::PolicyBundle;
use crate::policy::cases::{self, Case, Defaults, Expect, PrincipalSpec, ServerSpec};

/// One entity of the counterexample.
#[derive(Debug, Clone)]
pub struct EntityView {
    /// `Type::"id"`.
    pub uid: String,
    pub attrs: Map<String, Value>,
    /// Its parents, `Type::"id"` each (groups of a user, the server and tool sets of a tool).
    pub parents: Vec<String>,
    pub tags: Map<String, Value>,
}

/// A request the policies allow and the property says they must not.
#[derive(Debug, Clone)]
pub struct Counterexample {
    pub principal: EntityView,
    /// `Mcp::Action::"..."`.
    pub action: String,
    pub resource: EntityView,
    pub context: Map<String, Value>,
    pub explain: ExplainRequest,
    /// Of the shape mcp-authz builds, with the tool sets of this directory's `entities.json`
    /// (explain can reproduce it). `false`: no such counterexample exists in this environment;
    /// this one needs an entity store or request fields mcp-authz does not produce today.
    pub realistic: bool,
    /// What `policy explain` with [`ExplainRequest::flags`] decides against the directory:
    /// `Ok(true)` reproduces the counterexample; `Ok(false)` means it relies on something the
    /// flags or `entities.json` do not give (see `explain.caveats`).
    pub explained: Result<bool, String>,
}

/// `mcp-authz policy explain` flags for a counterexample, and what they cannot carry.
#[derive(Debug, Clone, Default)]
pub struct ExplainRequest {
    /// (flag, value), in order, e.g. `("--method", "tools/call")`.
    pub flags: Vec<(String, String)>,
    /// Facts of the counterexample the flags cannot express (or express only as mcp-authz
    /// would build them).
    pub caveats: Vec<String>,
}

impl ExplainRequest {
    /// A ready-to-paste command line, values quoted for a POSIX shell.
    pub fn command_line(&self, policies: &std::path::Path) -> String {
        let mut out = format!(
            "mcp-authz policy explain --policies {}",
            shell_quote(&policies.display().to_string())
        );
        for (flag, value) in &self.flags {
            out.push(' ');
            out.push_str(flag);
            out.push(' ');
            out.push_str(&shell_quote(value));
        }
        out
    }
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@=+,".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

// === impl Counterexample ===

impl Counterexample {
    pub(super) fn new(
        bundle: &PolicyBundle,
        env: &cedar_policy_symcc::Env,
        realistic: bool,
    ) -> Self {
        let entity = |uid: Option<&cedar_policy::EntityUid>| -> EntityView {
            let Some(uid) = uid else {
                return EntityView {
                    uid: "(none)".into(),
                    attrs: Map::new(),
                    parents: Vec::new(),
                    tags: Map::new(),
                };
            };
            let json = env
                .entities
                .get(uid)
                .and_then(|e| e.to_json_value().ok())
                .unwrap_or(Value::Null);
            let object = |k: &str| {
                json.get(k)
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default()
            };
            let parents = json
                .get("parents")
                .and_then(Value::as_array)
                .map(|list| list.iter().filter_map(uid_text).collect())
                .unwrap_or_default();
            EntityView {
                uid: uid.to_string(),
                attrs: object("attrs"),
                parents,
                tags: object("tags"),
            }
        };
        let principal = entity(env.request.principal());
        let resource = entity(env.request.resource());
        let action_uid = env.request.action();
        let action = action_uid.map_or_else(|| "(none)".into(), ToString::to_string);
        let context = env
            .request
            .context()
            .and_then(|c| c.to_json_value().ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        let action_id = action_uid
            .map(|u| u.id().unescaped().to_owned())
            .unwrap_or_default();
        let resource_id = env
            .request
            .resource()
            .map(|u| u.id().unescaped().to_owned())
            .unwrap_or_default();
        let resource_type = env
            .request
            .resource()
            .map(|u| u.type_name().basename().to_owned())
            .unwrap_or_default();
        let principal_id = env
            .request
            .principal()
            .map(|u| u.id().unescaped().to_owned())
            .unwrap_or_default();
        let (explain, case) = explain_request(
            &principal_id,
            &principal,
            &action_id,
            Target {
                kind: &resource_type,
                id: &resource_id,
                entity: &resource,
            },
            &context,
            realistic,
        );
        let explained = match case {
            Ok(case) => cases::evaluate(bundle, &Defaults::default(), &case)
                .map(|o| o.decision.allowed)
                .map_err(|e| e.to_string()),
            Err(why) => Err(why),
        };
        Self {
            principal,
            action,
            resource,
            context,
            explain,
            realistic,
            explained,
        }
    }
}

fn uid_text(v: &Value) -> Option<String> {
    let v = v.get("__entity").unwrap_or(v);
    let ty = v.get("type")?.as_str()?;
    let id = v.get("id")?.as_str()?;
    Some(format!("{ty}::{}", Value::from(id)))
}

fn string_attr(view: &EntityView, key: &str) -> Option<String> {
    view.attrs
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The resource of a counterexample: its type's basename, its id, the entity.
struct Target<'a> {
    kind: &'a str,
    id: &'a str,
    entity: &'a EntityView,
}

/// The flags (and the [`Case`] they make) for a counterexample. The case is an error when the
/// request is not one `policy explain` can ask (an action outside the MCP vocabulary...).
fn explain_request(
    sub: &str,
    principal: &EntityView,
    action: &str,
    target: Target<'_>,
    context: &Map<String, Value>,
    realistic: bool,
) -> (ExplainRequest, Result<Case, String>) {
    let Target {
        kind: resource_type,
        id: resource_id,
        entity: resource,
    } = target;
    let mut flags: Vec<(String, String)> = Vec::new();
    let mut caveats = Vec::new();
    let mut flag = |f: &str, v: &str| flags.push((f.to_owned(), v.to_owned()));

    // The method, and the target from the resource's uid: `<server>/<name>` for tools, prompts
    // and resources (as mcp-authz names them), the server id for a server.
    let method = action
        .strip_prefix("tools/call/")
        .map_or(action, |_| "tools/call");
    flag("--method", method);
    let (server_id, target) = match resource_type {
        "Server" => (resource_id.to_owned(), None),
        _ => match resource_id.split_once('/') {
            Some((server, name)) => (server.to_owned(), Some(name.to_owned())),
            None => {
                // Not a uid mcp-authz builds: take the server and name from the attributes,
                // from which mcp-authz would build `<server>/<name>`.
                let key = if resource_type == "Resource" {
                    "uri"
                } else {
                    "name"
                };
                let server = string_attr(resource, "server").unwrap_or_default();
                let name = string_attr(resource, key).unwrap_or_default();
                caveats.push(format!(
                    "the resource id `{resource_id}` has no `<server>/` prefix; explain builds `{server}/{name}` from its attributes"
                ));
                (server, Some(name))
            }
        },
    };
    let mut tool = None;
    let mut prompt = None;
    let mut uri = None;
    match (resource_type, target) {
        ("Tool", Some(name)) => {
            flag("--tool", &name);
            if let Some(own) = action.strip_prefix("tools/call/")
                && own != resource_id
            {
                caveats.push(format!(
                    "the action is the tool `{own}`'s own, but the resource is `{resource_id}`: mcp-authz uses a tool's own action only for that tool"
                ));
            }
            tool = Some(name);
        }
        ("Prompt", Some(name)) => {
            flag("--prompt", &name);
            prompt = Some(name);
        }
        ("Resource", Some(name)) => {
            flag("--resource", &name);
            uri = Some(name);
        }
        _ => {}
    }
    for (key, what) in [("name", "Tool"), ("name", "Prompt"), ("uri", "Resource")] {
        if resource_type == what
            && let Some(v) = string_attr(resource, key)
            && Some(&v) != tool.as_ref().or(prompt.as_ref()).or(uri.as_ref())
        {
            caveats.push(format!(
                "resource.{key} is `{v}`, not the name in its id (mcp-authz sets it from the id)"
            ));
        }
    }
    if let Some(v) = string_attr(resource, "server")
        && v != server_id
    {
        caveats.push(format!(
            "resource.server is `{v}`, not the server in its id (mcp-authz sets it from the id)"
        ));
    }
    if resource_type == "Server"
        && let Some(v) = string_attr(resource, "id")
        && v != server_id
    {
        caveats.push(format!(
            "resource.id is `{v}`, not its uid's id (mcp-authz sets both)"
        ));
    }
    let server_tenant = string_attr(resource, "tenant").unwrap_or_default();
    flag("--server-id", &server_id);
    flag("--server-tenant", &server_tenant);

    // The caller.
    let tenant = string_attr(principal, "tenant").unwrap_or_default();
    flag("--sub", sub);
    flag("--tenant", &tenant);
    let mut groups = Vec::new();
    for parent in &principal.parents {
        match parent
            .strip_prefix("Mcp::Group::")
            .and_then(|q| serde_json::from_str::<String>(q).ok())
        {
            Some(g) => {
                flag("--group", &g);
                groups.push(g);
            }
            None => caveats.push(format!(
                "the principal is in `{parent}`, which is not a group"
            )),
        }
    }
    let scopes: Vec<String> = context
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for s in &scopes {
        flag("--scope", s);
    }
    let mut claims = Map::new();
    for (k, v) in &principal.tags {
        let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        if k == "sub" {
            if v != sub {
                caveats.push(format!(
                    "the `sub` tag is `{v}`, not the principal's id (mcp-authz sets both from the token)"
                ));
            }
            continue;
        }
        flag("--claim", &format!("{k}={v}"));
        claims.insert(k.clone(), Value::from(v));
    }

    // Arguments: typed ones from a declared tool's context, else the tool's tags.
    let mut arguments = Map::new();
    if let Some(Value::Object(args)) = context.get("arguments") {
        arguments = args.clone();
    } else if resource_type == "Tool" && !resource.tags.is_empty() {
        arguments = resource.tags.clone();
    }
    if !arguments.is_empty() {
        flag("--arguments", &Value::Object(arguments.clone()).to_string());
    }
    if resource_type == "Tool" && context.get("arguments").is_some() && !resource.tags.is_empty() {
        caveats.push(format!(
            "the tool's tags {} stand for its top-level arguments; mcp-authz derives them from --arguments",
            Value::Object(resource.tags.clone())
        ));
    }
    let task = context
        .get("task_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(t) = &task {
        flag("--task", t);
    }

    // What explain fixes: say where the counterexample differs.
    let fixed: [(&str, Option<&Value>, Value); 6] = [
        (
            "principal.client_id",
            principal.attrs.get("client_id"),
            Value::from(""),
        ),
        (
            "principal.issuer",
            principal.attrs.get("issuer"),
            Value::from("https://issuer.example"),
        ),
        (
            "context.client_id",
            context.get("client_id"),
            Value::from(""),
        ),
        (
            "context.protocol_version",
            context.get("protocol_version"),
            Value::from("2025-11-25"),
        ),
        (
            "context.session_id",
            context.get("session_id"),
            Value::from(""),
        ),
        ("context.batch", context.get("batch"), Value::from(false)),
    ];
    for (field, value, explain_uses) in fixed {
        if let Some(v) = value
            && *v != explain_uses
        {
            caveats.push(format!(
                "{field} is {v}; explain cannot set it (it uses {explain_uses})"
            ));
        }
    }
    let ancestors: Vec<&String> = resource
        .parents
        .iter()
        .filter(|p| !p.starts_with("Mcp::Server::"))
        .collect();
    // A realistic counterexample has the tool sets of entities.json already.
    if !ancestors.is_empty() && !realistic {
        caveats.push(format!(
            "the resource is in {}: entities.json must say so for explain to see it",
            ancestors
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    let known = crate::mcp::KNOWN_METHODS.contains(&method)
        || matches!(method, "response" | "GET" | "DELETE");
    let case = if known {
        Ok(Case {
            name: "counterexample".into(),
            server: ServerSpec {
                id: Some(server_id),
                tenant: Some(server_tenant),
                scopes_supported: None,
                step_up: None,
            },
            principal: PrincipalSpec {
                sub: Some(sub.to_owned()),
                tenant: Some(tenant),
                client_id: None,
                issuer: None,
                scopes: Some(scopes),
                groups: Some(groups),
                claims: Some(claims),
            },
            method: method.to_owned(),
            tool,
            prompt,
            resource: uri,
            task,
            arguments,
            expect: Expect::Allow,
            policies: None,
            challenge_scope: None,
        })
    } else {
        caveats.push(format!(
            "`{action}` is not an MCP method mcp-authz builds requests for; explain cannot ask it"
        ));
        Err(format!("`{action}` is not an MCP method"))
    };
    (ExplainRequest { flags, caveats }, case)
}
