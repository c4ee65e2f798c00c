//! A [`Setup`] from a configuration: the protected servers, each with its live policy set, its
//! shadow set if any, and a decision cache per set. A decision cache keys on its set's
//! generation and starts over when that changes, so each set has its own: servers on
//! different sets never evict each other's decisions.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Decisions, EngineError, Setup};
use crate::config::Config;
use crate::dpop::Dpop;
use crate::keys::IssuerKeys;
use crate::metrics::Metrics;
use crate::policy::{PolicySets, PolicyStore, SetStatus, ShadowSet};
use crate::resource::{ProtectedServer, Servers};

/// A server's policy sets, with their decision caches.
#[derive(Clone)]
pub struct ServerPolicies {
    pub live: Arc<PolicyStore>,
    pub decisions: Arc<Decisions>,
    pub shadow: Option<ShadowPolicies>,
}

/// A server's shadow set and its own decision cache.
#[derive(Clone)]
pub struct ShadowPolicies {
    pub set: Arc<ShadowSet>,
    pub decisions: Arc<Decisions>,
}

/// What [`super::Engine::new`] takes as policies: every set of the configuration, or one store
/// for every server.
pub trait IntoPolicySets {
    fn into_sets(self, config: &Config) -> PolicySets;
}

impl IntoPolicySets for PolicySets {
    fn into_sets(self, _: &Config) -> PolicySets {
        self
    }
}

impl IntoPolicySets for Arc<PolicyStore> {
    fn into_sets(self, config: &Config) -> PolicySets {
        PolicySets::single(self, config)
    }
}

impl Setup {
    pub(super) fn new(
        config: &Config,
        issuers: Vec<Arc<IssuerKeys>>,
        sets: PolicySets,
        dpop: &Dpop,
        metrics: &Metrics,
    ) -> Result<Self, EngineError> {
        let find = |name: &str| issuers.iter().find(|i| i.config.issuer == name).cloned();
        let dpop_algorithms = dpop.algorithm_names();
        let servers = config
            .servers
            .iter()
            .map(|s| ProtectedServer::new(s, &dpop_algorithms, find))
            .collect::<Result<Vec<_>, _>>()?;
        let mut live_caches: HashMap<PathBuf, Arc<Decisions>> = HashMap::new();
        let mut shadow_caches: HashMap<PathBuf, Arc<Decisions>> = HashMap::new();
        let capacity = config.cache.decisions;
        let mut policies = Vec::with_capacity(config.servers.len());
        for (index, server) in config.servers.iter().enumerate() {
            let Some(found) = sets.for_server(config, server) else {
                return Err(EngineError::MissingPolicySet {
                    index,
                    id: server.id.clone(),
                    dir: config.policy_dirs(server).0.display().to_string(),
                });
            };
            let decisions = live_caches
                .entry(found.live.dir().to_owned())
                .or_insert_with(|| Arc::new(Decisions::new(capacity, metrics.clone())))
                .clone();
            if found.shadow.is_some() {
                metrics.shadow_series(&server.id);
            }
            let shadow = found.shadow.map(|set| {
                // Its lookups are not the decision cache's metrics (one per checked message).
                let decisions = shadow_caches
                    .entry(PathBuf::from(set.name()))
                    .or_insert_with(|| Arc::new(Decisions::new(capacity, Metrics::unregistered())))
                    .clone();
                ShadowPolicies { set, decisions }
            });
            policies.push(ServerPolicies {
                live: found.live,
                decisions,
                shadow,
            });
        }
        Ok(Self {
            servers: Servers::new(servers),
            issuers,
            policies,
            sets,
            header_names: config.identity_headers.clone(),
            limits: config.limits.clone(),
            decision_log: config.decision_log.clone(),
        })
    }

    pub fn servers(&self) -> &Servers {
        &self.servers
    }

    pub fn issuers(&self) -> &[Arc<IssuerKeys>] {
        &self.issuers
    }

    /// Every policy set of this configuration.
    pub fn sets(&self) -> &PolicySets {
        &self.sets
    }

    /// A server's sets, by [`ProtectedServer::index`].
    pub fn policies_of(&self, server: &ProtectedServer) -> Option<&ServerPolicies> {
        self.policies.get(server.index())
    }

    /// The servers whose tenant is configured, for policy sets to build their entities once.
    pub(super) fn static_tenants(&self) -> impl Iterator<Item = (&str, &str)> {
        self.servers
            .iter()
            .filter_map(|s| Some((s.id.as_str(), s.static_tenant()?)))
    }
}

/// One server's policy sets, for `/readyz`, `status` and the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerPolicyStatus {
    pub server: String,
    pub live: SetStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<SetStatus>,
    /// What the live and shadow sets decided, since start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadow_decisions: Vec<ShadowCount>,
}

/// One series of `mcp_authz_shadow_decisions_total`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShadowCount {
    pub live: String,
    pub shadow: String,
    pub count: u64,
}

/// The configuration file in use, and what became of the last change to it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConfigStatus {
    pub path: String,
    pub hash: String,
    pub loaded_at: u64,
    /// Why the file on disk is not in use, while it fails to load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Settings changed on disk that take effect only after a restart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart_required: Vec<String>,
}

impl super::Engine {
    /// Every server's sets: hashes, load state, shadow agreement.
    pub fn policy_status(&self) -> Vec<ServerPolicyStatus> {
        let setup = self.setup.load();
        setup
            .servers
            .iter()
            .filter_map(|server| {
                let p = setup.policies_of(server)?;
                Some(ServerPolicyStatus {
                    server: server.id.clone(),
                    live: p.live.status(),
                    shadow: p.shadow.as_ref().map(|s| s.set.status()),
                    shadow_decisions: match p.shadow {
                        Some(_) => self
                            .metrics
                            .shadow_counts(&server.id)
                            .into_iter()
                            .map(|(live, shadow, count)| ShadowCount {
                                live,
                                shadow,
                                count,
                            })
                            .collect(),
                        None => Vec::new(),
                    },
                })
            })
            .collect()
    }

    /// The configuration file's state (empty until [`Self::set_config_status`]).
    pub fn config_status(&self) -> Arc<ConfigStatus> {
        self.config_status.load_full()
    }

    pub fn set_config_status(&self, status: ConfigStatus) {
        self.config_status.store(Arc::new(status));
    }
}
