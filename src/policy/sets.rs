//! The policy sets a configuration names: the top-level `policies.dir`, each server's own
//! `servers[].policies.dir`, and the shadow sets beside them. One [`PolicyStore`] per distinct
//! directory, so a directory several servers share is loaded once; each is validated, reloaded
//! and kept-last-good on its own, so one team's broken file never holds back another team's
//! change or changes another server's decisions.
//!
//! A live set must load for the service to start (or for a new configuration to be taken): a
//! server is never without policies. A shadow set only ever observes, so one that does not load
//! is reported and retried, and its servers are decided exactly as without it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use super::load::LoadError;
use super::watch::{PolicyStore, SetStatus};
use crate::config::Config;
use crate::metrics::Metrics;

/// How often a shadow set that has never loaded is tried again.
const SHADOW_RETRY: Duration = Duration::from_secs(1);

/// Every policy set of one configuration, by directory.
#[derive(Clone, Default)]
pub struct PolicySets {
    live: HashMap<PathBuf, Arc<PolicyStore>>,
    shadows: HashMap<PathBuf, Arc<ShadowSet>>,
}

/// A candidate set: evaluated beside a live set, never enforced.
pub struct ShadowSet {
    dir: PathBuf,
    name: String,
    store: ArcSwapOption<PolicyStore>,
    /// Why the set has never loaded (while `store` is empty).
    error: ArcSwapOption<String>,
    metrics: Metrics,
}

/// A live set that does not load: the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("policy set `{}` (servers: {servers}): {source}", dir.display())]
pub struct SetsError {
    pub dir: PathBuf,
    pub servers: String,
    #[source]
    pub source: LoadError,
}

/// One server's sets.
#[derive(Clone)]
pub struct ServerSets {
    pub live: Arc<PolicyStore>,
    pub shadow: Option<Arc<ShadowSet>>,
}

// === impl PolicySets ===

impl PolicySets {
    /// Loads every set `config` names. Live sets must load; shadow sets that do not are
    /// reported and retried by [`ShadowSet::run`].
    pub fn open(config: &Config, metrics: &Metrics) -> Result<Self, SetsError> {
        Self::reopen(config, None, metrics)
    }

    /// Like [`Self::open`], reusing `previous`'s sets for the directories it already has
    /// (their live content, watchers and failure state carry over).
    pub fn reopen(
        config: &Config,
        previous: Option<&PolicySets>,
        metrics: &Metrics,
    ) -> Result<Self, SetsError> {
        let mut sets = Self::default();
        for server in &config.servers {
            let (dir, shadow) = config.policy_dirs(server);
            if !sets.live.contains_key(dir) {
                let store = match previous.and_then(|p| p.live.get(dir)) {
                    Some(store) => store.clone(),
                    None => match PolicyStore::open(dir, metrics.clone()) {
                        Ok(store) => store,
                        Err(source) => {
                            sets.discard_new(previous.unwrap_or(&Self::default()), metrics);
                            return Err(SetsError {
                                dir: dir.to_owned(),
                                servers: servers_using(config, dir),
                                source,
                            });
                        }
                    },
                };
                sets.live.insert(dir.to_owned(), store);
            }
            if let Some(shadow) = shadow
                && !sets.shadows.contains_key(shadow)
            {
                let set = match previous.and_then(|p| p.shadows.get(shadow)) {
                    Some(set) => set.clone(),
                    None => Arc::new(ShadowSet::open(shadow, metrics.clone())),
                };
                sets.shadows.insert(shadow.to_owned(), set);
            }
        }
        Ok(sets)
    }

    /// Removes the metric series of the sets opened for this value and not in `previous`
    /// (a reload that failed after opening them), unless `previous` has a set of that name.
    pub fn discard_new(&self, previous: &PolicySets, metrics: &Metrics) {
        let named = |name: &str| {
            previous.live().any(|s| s.name() == name)
                || previous.shadows().any(|s| s.name() == name)
        };
        for store in self.live() {
            if !previous.live().any(|p| Arc::ptr_eq(p, store)) && !named(store.name()) {
                metrics.policy_set_removed(store.name(), &store.load().hash);
            }
        }
        for set in self.shadows() {
            if !previous.shadows().any(|p| Arc::ptr_eq(p, set)) && !named(set.name()) {
                let hash = set
                    .store()
                    .map(|s| s.load().hash.clone())
                    .unwrap_or_default();
                metrics.policy_set_removed(set.name(), &hash);
            }
        }
    }

    /// One store as the only set: for tests and tools that build an engine around a store they
    /// opened (every server is decided by it, none has a shadow).
    pub fn single(store: Arc<PolicyStore>, config: &Config) -> Self {
        let mut live = HashMap::new();
        for server in &config.servers {
            live.insert(config.policy_dirs(server).0.to_owned(), store.clone());
        }
        live.insert(store.dir().to_owned(), store);
        Self {
            live,
            shadows: HashMap::new(),
        }
    }

    /// The sets of `server` (a server of the configuration these sets were opened for).
    pub fn for_server(
        &self,
        config: &Config,
        server: &crate::config::ServerConfig,
    ) -> Option<ServerSets> {
        let (dir, shadow) = config.policy_dirs(server);
        Some(ServerSets {
            live: self.live.get(dir)?.clone(),
            shadow: shadow.and_then(|s| self.shadows.get(s)).cloned(),
        })
    }

    /// The live stores, each once.
    pub fn live(&self) -> impl Iterator<Item = &Arc<PolicyStore>> {
        self.live.values().filter(|s| {
            // `single` maps several directories to one store: yield it under its own.
            self.live
                .get(s.dir())
                .is_some_and(|own| Arc::ptr_eq(own, s))
        })
    }

    /// The shadow sets.
    pub fn shadows(&self) -> impl Iterator<Item = &Arc<ShadowSet>> {
        self.shadows.values()
    }

    /// Whether `previous` had this live store (by directory and identity).
    pub fn has_live(&self, store: &Arc<PolicyStore>) -> bool {
        self.live.values().any(|s| Arc::ptr_eq(s, store))
    }

    /// Whether this shadow set is one of these sets.
    pub fn has_shadow(&self, set: &Arc<ShadowSet>) -> bool {
        self.shadows.values().any(|s| Arc::ptr_eq(s, set))
    }
}

fn servers_using(config: &Config, dir: &Path) -> String {
    let ids: Vec<&str> = config
        .servers
        .iter()
        .filter(|s| config.policy_dirs(s).0 == dir)
        .map(|s| s.id.as_str())
        .collect();
    ids.join(", ")
}

// === impl ShadowSet ===

impl ShadowSet {
    /// Tries to load the set; one that does not load is reported, and [`Self::run`] tries again.
    pub fn open(dir: &Path, metrics: Metrics) -> Self {
        let name = dir.display().to_string();
        let set = Self {
            dir: dir.to_owned(),
            name,
            store: ArcSwapOption::empty(),
            error: ArcSwapOption::empty(),
            metrics,
        };
        set.try_load();
        set
    }

    fn try_load(&self) -> bool {
        match PolicyStore::open(&self.dir, self.metrics.clone()) {
            Ok(store) => {
                tracing::info!(policy_set = %self.name, policy_hash = %store.load().hash, "shadow policy set loaded");
                self.store.store(Some(store));
                self.error.store(None);
                self.metrics.policy_set_failing(&self.name, false);
                true
            }
            Err(e) => {
                if self.error.load().is_none() {
                    tracing::error!(policy_set = %self.name, error = %e, "shadow policy set does not load; its servers are decided by their live sets alone");
                }
                self.metrics.policy_set_failing(&self.name, true);
                self.error.store(Some(Arc::new(e.to_string())));
                false
            }
        }
    }

    /// The loaded store, `None` while the set has never loaded.
    pub fn store(&self) -> Option<Arc<PolicyStore>> {
        self.store.load_full()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The set's state: its store's, or `never_loaded` with the error.
    pub fn status(&self) -> SetStatus {
        match self.store.load_full() {
            Some(store) => store.status(),
            None => SetStatus {
                dir: self.name.clone(),
                hash: String::new(),
                policies: 0,
                loaded_at: 0,
                state: "never_loaded",
                error: self.error.load_full().map(|e| e.as_str().to_owned()),
            },
        }
    }

    /// Until `shutdown`: tries to load a set that has not loaded, then watches it.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Some(store) = self.store.load_full() {
                store.run_watcher(shutdown).await;
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(SHADOW_RETRY) => {}
                _ = shutdown.changed() => return,
            }
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.try_load()).await;
        }
    }
}
