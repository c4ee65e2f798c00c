//! Entities that depend on the bundle and the configuration only, built once per bundle and
//! cloned into each request's store instead of rebuilt from their attributes: every server with
//! a configured tenant, and every tool, prompt and resource `entities.json` declares for it.
//!
//! A clone is the same value `prepare` would build (same uid, attributes, parents; no tags), so
//! decisions cannot differ; `prepared_entities_match_fresh_ones` in `policy/tests.rs` holds
//! that. Servers whose tenant comes from the request, undeclared targets, and tool entities
//! that need their argument tags are built per request as before.

use std::collections::HashMap;

use cedar_policy::{Entity, EntityUid};

use super::PolicyBundle;

/// What [`PolicyBundle::prebuild`] made; read with no lock (a `OnceLock` in the bundle).
#[derive(Default)]
pub struct Prebuilt {
    servers: HashMap<String, PrebuiltServer>,
}

struct PrebuiltServer {
    /// The tenant the entities were built with; a request naming another one builds its own.
    tenant: String,
    entity: Entity,
    targets: HashMap<EntityUid, Entity>,
}

impl Prebuilt {
    /// Builds the entities of `servers` (id, configured tenant) for `bundle`. A target that
    /// fails to build is left out (the request builds it, and reports the same error).
    pub(super) fn build<'a>(
        bundle: &PolicyBundle,
        servers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut out = HashMap::new();
        for (id, tenant) in servers {
            let Ok(entity) = bundle.server_entity(id, tenant) else {
                continue;
            };
            let server = entity.uid();
            let prefix = format!("{id}/");
            let targets = bundle
                .overlays
                .keys()
                .filter_map(|uid| {
                    let name = uid.id().unescaped().strip_prefix(&prefix)?;
                    let key = bundle.target_key(uid)?;
                    let e = bundle
                        .target_entity(uid, (id, tenant), (key, name), &server, Vec::new())
                        .ok()?;
                    Some((uid.clone(), e))
                })
                .collect();
            out.insert(
                id.to_owned(),
                PrebuiltServer {
                    tenant: tenant.to_owned(),
                    entity,
                    targets,
                },
            );
        }
        Self { servers: out }
    }

    /// The server's entity, when it was built with this tenant.
    pub(super) fn server(&self, id: &str, tenant: &str) -> Option<&Entity> {
        self.for_server(id, tenant).map(|s| &s.entity)
    }

    /// A declared target's entity (without tags), when its server was built with this tenant.
    pub(super) fn target(&self, id: &str, tenant: &str, uid: &EntityUid) -> Option<&Entity> {
        self.for_server(id, tenant)?.targets.get(uid)
    }

    fn for_server(&self, id: &str, tenant: &str) -> Option<&PrebuiltServer> {
        self.servers.get(id).filter(|s| s.tenant == tenant)
    }
}
