//! The configuration file reloads like the policies do: a change is read whole, validated whole
//! (YAML, keys, cross references, every policy set it names, every issuer it adds), and only
//! then swapped in, atomically ([`Engine::reconfigure`]); a file that fails keeps the last good
//! configuration, and is logged and counted (`mcp_authz_config_reloads_total`).
//!
//! What a reload changes: servers, issuers, policy directories, identity headers, limits
//! (except the two that size the gRPC server), the decision log and the decision cache's size.
//! What it cannot change without a restart, the listeners above all, keeps its running value,
//! and the log says which setting waits for a restart ([`restart_only`]).
//!
//! Also here: the background tasks of one configuration (issuer key refreshers, policy set
//! watchers) and their retirement when a reload drops what they serve.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch};

use crate::config::Config;
use crate::engine::{ConfigStatus, Engine, Setup};
use crate::keys::IssuerKeys;
use crate::metrics::Metrics;
use crate::policy::PolicySets;

/// The fallback content check (events are the prompt path).
const POLL: Duration = Duration::from_secs(1);
/// Events must be quiet this long before the file is read.
const SETTLE: Duration = Duration::from_millis(200);
/// How long a reload that adds (or changes) issuers waits for their keys. One that has none by
/// then fails the reload: swapping it in would deny its tokens and take readiness away from
/// every replica that reads the same file.
const NEW_ISSUER_WAIT: Duration = Duration::from_secs(10);
/// Content that failed is tried again this often (an issuer that was down may be up), and at
/// once on a change or SIGHUP.
const RETRY_FAILED: Duration = Duration::from_secs(30);
/// Events that never stop (a directory rewritten more often than [`SETTLE`]) are read anyway
/// after this long.
const MAX_SETTLE: Duration = Duration::from_secs(2);

/// Stops one background task when dropped (or at the service's shutdown).
struct Lease(#[expect(dead_code, reason = "held for its drop")] oneshot::Sender<()>);

/// A stop signal for a task: fires at `parent`'s shutdown or when the [`Lease`] is dropped.
fn leased(parent: &watch::Receiver<bool>) -> (Lease, watch::Receiver<bool>) {
    let (retire, retired) = oneshot::channel::<()>();
    let (tx, rx) = watch::channel(false);
    let mut parent = parent.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = parent.wait_for(|s| *s) => {}
            _ = retired => {}
        }
        let _ = tx.send(true);
    });
    (Lease(retire), rx)
}

/// The background tasks serving one configuration's issuers and policy sets, by identity: a
/// reload that keeps an issuer or a set keeps its task.
pub(super) struct Background {
    shutdown: watch::Receiver<bool>,
    tasks: HashMap<usize, Lease>,
    /// The sets the tasks serve, so a dropped set's metric series can go too.
    sets: HashMap<usize, Served>,
}

/// A policy set a task serves.
enum Served {
    Live(Arc<crate::policy::PolicyStore>),
    Shadow(Arc<crate::policy::ShadowSet>),
}

impl Served {
    fn name(&self) -> &str {
        match self {
            Served::Live(s) => s.name(),
            Served::Shadow(s) => s.name(),
        }
    }

    /// The hash of the content it publishes now (empty for a shadow set never loaded).
    fn hash(&self) -> String {
        match self {
            Served::Live(s) => s.load().hash.clone(),
            Served::Shadow(s) => s.status().hash,
        }
    }
}

impl Background {
    pub(super) fn new(shutdown: watch::Receiver<bool>) -> Self {
        Self {
            shutdown,
            tasks: HashMap::new(),
            sets: HashMap::new(),
        }
    }

    /// Starts the tasks `setup` needs that are not running; stops those it no longer needs.
    pub(super) fn sync(&mut self, setup: &Setup, metrics: &Metrics) {
        let mut wanted: HashMap<usize, ()> = HashMap::new();
        for issuer in setup.issuers() {
            let id = Arc::as_ptr(issuer) as usize;
            wanted.insert(id, ());
            if !self.tasks.contains_key(&id) {
                let (lease, rx) = leased(&self.shutdown);
                tokio::spawn(issuer.clone().run_refresher(rx));
                self.tasks.insert(id, lease);
            }
        }
        for store in setup.sets().live() {
            let id = Arc::as_ptr(store) as usize;
            wanted.insert(id, ());
            if !self.tasks.contains_key(&id) {
                let (lease, rx) = leased(&self.shutdown);
                tokio::spawn(store.clone().run_watcher(rx));
                self.tasks.insert(id, lease);
                self.sets.insert(id, Served::Live(store.clone()));
            }
        }
        for set in setup.sets().shadows() {
            let id = Arc::as_ptr(set) as usize;
            wanted.insert(id, ());
            if !self.tasks.contains_key(&id) {
                let (lease, rx) = leased(&self.shutdown);
                tokio::spawn(set.clone().run(rx));
                self.tasks.insert(id, lease);
                self.sets.insert(id, Served::Shadow(set.clone()));
            }
        }
        self.tasks.retain(|id, _| wanted.contains_key(id));
        let removed: Vec<usize> = self
            .sets
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .copied()
            .collect();
        for id in removed {
            if let Some(gone) = self.sets.remove(&id) {
                // A directory still served in another role keeps its series.
                if !self.sets.values().any(|s| s.name() == gone.name()) {
                    metrics.policy_set_removed(gone.name(), &gone.hash());
                }
            }
        }
    }
}

/// Watches one configuration file and applies its changes to the engine.
pub struct ConfigReloader {
    path: PathBuf,
    engine: Arc<Engine>,
    metrics: Metrics,
    background: Arc<Mutex<Background>>,
    /// The configuration as on disk when last applied, and its content hash.
    current: Mutex<(Config, String)>,
    /// The hash of content that failed, and when it was last tried.
    failed: Mutex<Option<(String, tokio::time::Instant)>>,
}

/// What one look at the file did.
#[derive(Debug)]
pub enum ConfigReload {
    Unchanged,
    Applied {
        hash: String,
        /// Settings that changed but wait for a restart.
        restart_required: Vec<String>,
    },
    Failed(String),
}

impl ConfigReloader {
    pub(super) fn new(
        path: &Path,
        config: &Config,
        engine: Arc<Engine>,
        metrics: Metrics,
        background: Arc<Mutex<Background>>,
    ) -> Self {
        // The file as it is now, unless it is no longer what `config` was loaded from (edited
        // during startup): then no hash, and the first look applies it.
        let hash = std::fs::read(path)
            .ok()
            .filter(|b| {
                std::str::from_utf8(b)
                    .ok()
                    .and_then(|t| Config::from_file_text(path, t).ok())
                    .is_some_and(|c| format!("{c:?}") == format!("{config:?}"))
            })
            .map(|b| content_hash(&b))
            .unwrap_or_default();
        engine.set_config_status(ConfigStatus {
            path: path.display().to_string(),
            hash: hash.clone(),
            loaded_at: unix_now(),
            error: None,
            restart_required: Vec::new(),
        });
        Self {
            path: path.to_owned(),
            engine,
            metrics,
            background,
            current: Mutex::new((config.clone(), hash)),
            failed: Mutex::new(None),
        }
    }

    /// Reads the file; applies it if it changed and all of it is valid. Content that already
    /// failed is tried again only every [`RETRY_FAILED`], or with `retry_failed` (SIGHUP).
    pub async fn reload_if_changed(&self, retry_failed: bool) -> ConfigReload {
        let read = std::fs::read(&self.path);
        // An unreadable file is tried again like failed content (not logged every second).
        let hash = match &read {
            Ok(bytes) => content_hash(bytes),
            Err(e) => format!("unreadable: {e}"),
        };
        if !retry_failed
            && let Ok(failed) = self.failed.lock()
            && failed
                .as_ref()
                .is_some_and(|(h, at)| *h == hash && at.elapsed() < RETRY_FAILED)
        {
            return ConfigReload::Unchanged;
        }
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                return self.failed(format!("`{}`: {e}", self.path.display()), Some(&hash));
            }
        };
        let (old, old_hash) = match self.current.lock() {
            Ok(c) => (c.0.clone(), c.1.clone()),
            Err(_) => return ConfigReload::Unchanged,
        };
        if hash == old_hash {
            if self.engine.config_status().error.is_some() {
                // Back to the content in use (a broken edit reverted).
                self.status(&hash, None, Vec::new());
                if let Ok(mut failed) = self.failed.lock() {
                    *failed = None;
                }
            }
            return ConfigReload::Unchanged;
        }
        let fail = |error: String| self.failed(error, Some(&hash));
        // Exactly the bytes hashed: a file replaced between two reads is never applied under
        // the other content's hash.
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return fail(format!("`{}` is not UTF-8", self.path.display()));
        };
        let new = match Config::from_file_text(&self.path, text) {
            Ok(c) => c,
            Err(e) => return fail(e.to_string()),
        };
        let (effective, restart_required) = restart_only(&old, new);
        // What runs must be valid as a whole: a setting put back to its running value may not
        // fit what else changed (a server's upstream audience without the signer it needs).
        if let Err(e) = effective.validate() {
            return fail(if restart_required.is_empty() {
                e.to_string()
            } else {
                format!(
                    "{e} (with {} kept at the running value until a restart)",
                    restart_required.join(", ")
                )
            });
        }
        // Keys of unchanged issuers carry over (and their caches, refreshers and readiness).
        let previous = self.engine.setup();
        let mut issuers = Vec::with_capacity(effective.issuers.len());
        for config in &effective.issuers {
            let same = previous.issuers().iter().find(|i| {
                format!("{:?}", i.config) == format!("{config:?}")
                    && old.limits.max_jwks_bytes == effective.limits.max_jwks_bytes
            });
            match same {
                Some(keys) => issuers.push(keys.clone()),
                None => match IssuerKeys::new(
                    config.clone(),
                    self.metrics.clone(),
                    effective.limits.max_jwks_bytes,
                ) {
                    Ok(keys) => issuers.push(keys),
                    Err(e) => {
                        return fail(format!("issuer `{}`: {e}", config.issuer));
                    }
                },
            }
        }
        let sets = {
            let metrics = self.metrics.clone();
            let config = effective.clone();
            let previous = previous.clone();
            match tokio::task::spawn_blocking(move || {
                PolicySets::reopen(&config, Some(previous.sets()), &metrics)
            })
            .await
            {
                Ok(Ok(sets)) => sets,
                Ok(Err(e)) => return fail(e.to_string()),
                Err(e) => return fail(format!("policy sets: {e}")),
            }
        };
        // From here a failure also forgets the sets this attempt opened (their series).
        let fail = |error: String| {
            sets.discard_new(previous.sets(), &self.metrics);
            fail(error)
        };
        // New issuers fetch their keys before the swap: one without keys in time fails the
        // reload (retried), rather than denying its tokens and making the service unready.
        let new_issuers: Vec<Arc<IssuerKeys>> = issuers
            .iter()
            .filter(|i| !previous.issuers().iter().any(|p| Arc::ptr_eq(p, i)))
            .cloned()
            .collect();
        let mut leases = Vec::new();
        if !new_issuers.is_empty() {
            let shutdown = match self.background.lock() {
                Ok(b) => b.shutdown.clone(),
                Err(_) => return fail("the background tasks' lock is poisoned".to_owned()),
            };
            for issuer in &new_issuers {
                let (lease, rx) = leased(&shutdown);
                tokio::spawn(issuer.clone().run_refresher(rx));
                leases.push((Arc::as_ptr(issuer) as usize, lease));
            }
            let deadline = tokio::time::Instant::now() + NEW_ISSUER_WAIT;
            while !new_issuers.iter().all(|i| i.is_ready())
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Some(late) = new_issuers.iter().find(|i| !i.is_ready()) {
                // Dropping the leases stops their refreshers.
                let status = late.status();
                return fail(format!(
                    "issuer `{}`: no signing keys within {} s{}",
                    status.issuer,
                    NEW_ISSUER_WAIT.as_secs(),
                    status
                        .last_error
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ));
            }
        }
        let added_servers = self
            .metrics
            .register_servers(effective.servers.iter().map(|s| s.id.as_str()));
        if let Err(e) = self.engine.reconfigure(&effective, issuers, sets.clone()) {
            return fail(e.to_string());
        }
        if added_servers {
            // Per-tool series for the servers added (sets count the servers known when they
            // loaded, and a new server's own set loaded before it was registered).
            for store in sets.live() {
                store.recount();
            }
        }
        if let Ok(mut failed) = self.failed.lock() {
            *failed = None;
        }
        let setup = self.engine.setup();
        if let Ok(mut background) = self.background.lock() {
            for (id, lease) in leases {
                background.tasks.insert(id, lease);
            }
            background.sync(&setup, &self.metrics);
        }
        if let Ok(mut current) = self.current.lock() {
            *current = (effective.clone(), hash.clone());
        }
        tracing::info!(
            config = %self.path.display(),
            config_hash = %hash,
            previous = %old_hash,
            servers = effective.servers.len(),
            issuers = effective.issuers.len(),
            policy_sets = setup.sets().live().count(),
            shadow_sets = setup.sets().shadows().count(),
            "configuration reloaded"
        );
        for key in &restart_required {
            tracing::warn!(config = %self.path.display(), setting = %key, "this setting changed but takes effect only after a restart; the running value stays");
        }
        self.metrics.config_reload("success");
        self.status(&hash, None, restart_required.clone());
        ConfigReload::Applied {
            hash,
            restart_required,
        }
    }

    /// Keeps the last good configuration; `content` (the failed file's hash) is tried again
    /// after [`RETRY_FAILED`].
    fn failed(&self, error: String, content: Option<&str>) -> ConfigReload {
        if let (Some(content), Ok(mut failed)) = (content, self.failed.lock()) {
            *failed = Some((content.to_owned(), tokio::time::Instant::now()));
        }
        let hash = self.current.lock().map(|c| c.1.clone()).unwrap_or_default();
        tracing::error!(config = %self.path.display(), error = %error, config_hash = %hash, "configuration reload failed; keeping the last good configuration");
        self.metrics.config_reload("failure");
        let restart = self.engine.config_status().restart_required.clone();
        self.status(&hash, Some(error.clone()), restart);
        ConfigReload::Failed(error)
    }

    fn status(&self, hash: &str, error: Option<String>, restart_required: Vec<String>) {
        let previous = self.engine.config_status();
        let loaded_at = if previous.hash == hash {
            previous.loaded_at
        } else {
            unix_now()
        };
        self.engine.set_config_status(ConfigStatus {
            path: self.path.display().to_string(),
            hash: hash.to_owned(),
            loaded_at,
            error,
            restart_required,
        });
    }

    /// Watches the file's directory (editors and ConfigMaps replace files rather than write
    /// them) until `shutdown`, reloading on settled changes, every [`POLL`] and on each of
    /// `hangups` (SIGHUP).
    pub async fn run(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
        mut hangups: impl futures_util::Stream<Item = ()> + Unpin,
    ) {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_owned);
        let (_watcher, mut rx) = crate::policy::dir_events(&dir, "configuration directory");
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retry_failed = tokio::select! {
                Some(()) = rx.recv() => {
                    // Settle: read once the writes stop (or after MAX_SETTLE).
                    let until = tokio::time::Instant::now() + MAX_SETTLE;
                    while tokio::time::Instant::now() < until
                        && let Ok(Some(())) = tokio::time::timeout(SETTLE, rx.recv()).await
                    {}
                    false
                }
                _ = poll.tick() => false,
                Some(()) = hangups.next() => {
                    tracing::info!(path = %self.path.display(), "SIGHUP: reading the configuration file");
                    true
                }
                _ = shutdown.changed() => return,
            };
            self.reload_if_changed(retry_failed).await;
        }
    }
}

/// The new configuration with every setting a reload cannot change put back to its running
/// value, and the names of those that differed.
pub fn restart_only(old: &Config, mut new: Config) -> (Config, Vec<String>) {
    let mut changed = Vec::new();
    let mut keep = |name: &str, differs: bool| {
        if differs {
            changed.push(name.to_owned());
        }
    };
    let dbg = |v: &dyn std::fmt::Debug| format!("{v:?}");
    keep("listen.grpc", old.listen.grpc != new.listen.grpc);
    keep("listen.admin", old.listen.admin != new.listen.admin);
    keep(
        "listen.admin_grpc",
        old.listen.admin_grpc != new.listen.admin_grpc,
    );
    keep("listen.tls", dbg(&old.listen.tls) != dbg(&new.listen.tls));
    keep("shutdown", dbg(&old.shutdown) != dbg(&new.shutdown));
    keep("overload", dbg(&old.overload) != dbg(&new.overload));
    keep("dpop", dbg(&old.dpop) != dbg(&new.dpop));
    keep(
        "upstream_identity",
        dbg(&old.upstream_identity) != dbg(&new.upstream_identity),
    );
    keep("cache.tokens", old.cache.tokens != new.cache.tokens);
    // These two size the gRPC server's message limit and the list filter, set at start.
    keep(
        "limits.max_body_bytes",
        old.limits.max_body_bytes != new.limits.max_body_bytes,
    );
    keep(
        "limits.max_list_response_bytes",
        old.limits.max_list_response_bytes != new.limits.max_list_response_bytes,
    );
    new.listen = old.listen.clone();
    new.shutdown = old.shutdown.clone();
    new.overload = old.overload.clone();
    new.dpop = old.dpop.clone();
    new.upstream_identity = old.upstream_identity.clone();
    new.cache.tokens = old.cache.tokens;
    new.limits.max_body_bytes = old.limits.max_body_bytes;
    new.limits.max_list_response_bytes = old.limits.max_list_response_bytes;
    (new, changed)
}

fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    hex::encode(digest).chars().take(16).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let yaml =
            crate::testutil::config_yaml("https://idp.example", "https://mcp.example/mcp", "");
        Config::from_yaml(&format!("{yaml}{extra}")).unwrap()
    }

    #[test]
    fn restart_only_settings_keep_their_running_value_and_are_named() {
        let old = config("");
        let new = config(
            "dpop: {algorithms: [ES256]}\ncache: {tokens: 7, decisions: 9}\nlimits: {max_body_bytes: 2048, max_token_bytes: 5000}\n",
        );
        let (effective, changed) = restart_only(&old, new);
        assert_eq!(changed, ["dpop", "cache.tokens", "limits.max_body_bytes"]);
        assert_eq!(effective.cache.tokens, old.cache.tokens);
        assert_eq!(effective.limits.max_body_bytes, old.limits.max_body_bytes);
        assert_eq!(format!("{:?}", effective.dpop), format!("{:?}", old.dpop));
        // What a reload does change is taken.
        assert_eq!(effective.cache.decisions, 9);
        assert_eq!(effective.limits.max_token_bytes, 5000);
    }

    #[test]
    fn an_unchanged_file_names_nothing() {
        let (_, changed) = restart_only(&config(""), config(""));
        assert!(changed.is_empty(), "{changed:?}");
    }
}
