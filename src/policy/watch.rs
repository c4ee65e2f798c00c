//! Hot reload: the live [`PolicyBundle`] behind `ArcSwap`, replaced only by a bundle that loaded
//! and validated completely. The directory is watched (not the files: Kubernetes swaps
//! ConfigMaps through a `..data` symlink), changes settle briefly, and a periodic content-hash
//! check catches anything the watcher misses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::PolicyBundle;
use super::load::{self, LoadError};
use crate::metrics::Metrics;

/// How long file events must be quiet before a reload, so an editor's write-rename-chmod
/// sequence or a ConfigMap swap is read once, whole.
const SETTLE: Duration = Duration::from_millis(200);
/// The fallback content check.
const POLL: Duration = Duration::from_secs(1);
/// Upper bound on one settle wait.
const MAX_SETTLE: Duration = Duration::from_secs(1);

pub struct PolicyStore {
    dir: PathBuf,
    /// The directory as the metrics and logs name it (`set` label).
    name: String,
    current: ArcSwap<PolicyBundle>,
    /// Set while the files on disk fail to load (the last good bundle still decides); cleared
    /// by a successful load, or when the files are back to the live content.
    failure: ArcSwapOption<LoadFailure>,
    metrics: Metrics,
}

/// Why the files on disk are not the live set.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub error: String,
    pub since: std::time::SystemTime,
}

/// A store's state, for `/readyz`, `status` and the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SetStatus {
    pub dir: String,
    pub hash: String,
    pub policies: usize,
    /// Unix seconds.
    pub loaded_at: u64,
    /// `loaded` (the files on disk are the live set) or `failing` (they fail to load; the
    /// last good set, `hash`, still decides).
    pub state: &'static str,
    /// Why the files on disk fail to load, while `failing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a reload attempt did.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Loaded { hash: String },
    Failed(LoadError),
}

impl PolicyStore {
    /// Loads the directory; the service does not start on a bad policy set.
    pub fn open(dir: &Path, metrics: Metrics) -> Result<Arc<Self>, LoadError> {
        let bundle = load::load_dir(dir)?;
        let name = dir.display().to_string();
        bundle
            .tool_counters
            .store(Arc::new(metrics.tool_counters(&bundle.declared_tools())));
        metrics.policy_loaded(
            &name,
            None,
            &bundle.hash,
            bundle.loaded_at,
            &bundle.policy_ids,
        );
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            name,
            current: ArcSwap::from_pointee(bundle),
            failure: ArcSwapOption::empty(),
            metrics,
        }))
    }

    /// The live set's hash and the state of the files on disk.
    pub fn status(&self) -> SetStatus {
        let bundle = self.current.load();
        let failure = self.failure.load_full();
        SetStatus {
            dir: self.name.clone(),
            hash: bundle.hash.clone(),
            policies: bundle.policy_ids.len(),
            loaded_at: unix_seconds(bundle.loaded_at),
            state: if failure.is_some() {
                "failing"
            } else {
                "loaded"
            },
            error: failure.map(|f| f.error.clone()),
        }
    }

    /// Why the files on disk do not load, while they do not.
    pub fn failure(&self) -> Option<Arc<LoadFailure>> {
        self.failure.load_full()
    }

    fn set_failing(&self, failing: Option<&LoadError>) {
        match failing {
            Some(e) => self.failure.store(Some(Arc::new(LoadFailure {
                error: e.to_string(),
                since: self
                    .failure
                    .load()
                    .as_ref()
                    .map_or_else(std::time::SystemTime::now, |f| f.since),
            }))),
            None => self.failure.store(None),
        }
        self.metrics
            .policy_set_failing(&self.name, failing.is_some());
    }

    /// The live bundle: one atomic load, no lock.
    pub fn load(&self) -> Arc<PolicyBundle> {
        self.current.load_full()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory as logs and metrics name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Rebuilds the live set's `tools/call` counters for the servers the metrics now know
    /// (a configuration reload added some).
    pub fn recount(&self) {
        let bundle = self.current.load();
        bundle.tool_counters.store(Arc::new(
            self.metrics.tool_counters(&bundle.declared_tools()),
        ));
    }

    /// Re-reads the directory; swaps in a new bundle only if the content changed and all of it
    /// is valid. A failure keeps the last good bundle, logs why (file, line, column) and counts.
    pub fn reload_if_changed(&self) -> Reload {
        self.reload_stable(Duration::ZERO)
    }

    /// Like [`Self::reload_if_changed`], but a change must read the same twice, `settle`
    /// apart, before it is loaded: a file caught mid-write (or a directory caught mid-checkout)
    /// is never loaded, it is read again at the next poll.
    fn reload_stable(&self, settle: Duration) -> Reload {
        let first = match load::read_files(&self.dir) {
            Ok(files) if files.hash == self.current.load().hash => {
                // Back to the live content (a broken edit reverted): nothing is failing.
                if self.failure.load().is_some() {
                    self.set_failing(None);
                }
                return Reload::Unchanged;
            }
            Ok(files) => Ok(files),
            Err(e) => Err(e),
        };
        let outcome = match first {
            Ok(files) if !settle.is_zero() => {
                std::thread::sleep(settle);
                match load::read_files(&self.dir) {
                    Ok(again) if again.hash == files.hash => load::load_files(again),
                    // Still changing: the next poll or event looks again.
                    Ok(_) => return Reload::Unchanged,
                    Err(e) => Err(e),
                }
            }
            Ok(files) => load::load_files(files),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(bundle) => {
                bundle.tool_counters.store(Arc::new(
                    self.metrics.tool_counters(&bundle.declared_tools()),
                ));
                let hash = bundle.hash.clone();
                for w in &bundle.warnings {
                    tracing::warn!(warning = %w, "policy lint warning");
                }
                let previous = self.current.load().hash.clone();
                tracing::info!(
                    policy_set = %self.name,
                    policy_hash = %hash,
                    policies = bundle.policy_ids.len(),
                    previous = %previous,
                    "policy set reloaded"
                );
                self.metrics.policy_reload(&self.name, "success");
                self.metrics.policy_loaded(
                    &self.name,
                    Some(&previous),
                    &hash,
                    bundle.loaded_at,
                    &bundle.policy_ids,
                );
                self.current.store(Arc::new(bundle));
                self.set_failing(None);
                Reload::Loaded { hash }
            }
            Err(e) => {
                // Broken content is reported at each look (events, then once per poll): what
                // an operator watching the logs during an edit wants to see.
                tracing::error!(
                    policy_set = %self.name,
                    error = %e,
                    active_policy_hash = %self.current.load().hash,
                    "policy reload failed; keeping the last good policy set"
                );
                self.metrics.policy_reload(&self.name, "failure");
                self.set_failing(Some(&e));
                Reload::Failed(e)
            }
        }
    }

    /// Watches the directory until `shutdown`, reloading on settled changes and every `POLL`.
    pub async fn run_watcher(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // Without a watcher the periodic check still reloads, only less promptly.
        let (_watcher, mut rx) = dir_events(&self.dir, "policy directory");
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(()) = rx.recv() => {
                    // Settle: wait until events stop for SETTLE (at most MAX_SETTLE in all, so
                    // a directory that never stops changing is still looked at).
                    let deadline = tokio::time::Instant::now() + MAX_SETTLE;
                    while tokio::time::Instant::now() < deadline {
                        tokio::select! {
                            r = tokio::time::timeout(SETTLE, rx.recv()) => match r {
                                Ok(Some(())) => continue,
                                _ => break,
                            },
                            _ = shutdown.changed() => return,
                        }
                    }
                }
                _ = poll.tick() => {}
                _ = shutdown.changed() => return,
            }
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.reload_stable(SETTLE)).await;
        }
    }
}

/// Change events in `dir` (opens and reads are not changes), and the watcher to keep alive
/// while they are wanted. A directory, not its files: Kubernetes swaps ConfigMaps through a
/// `..data` symlink, editors replace files by rename. Without a watcher (logged, naming `what`)
/// no event comes and the caller's periodic check does the work.
pub(crate) fn dir_events(
    dir: &Path,
    what: &str,
) -> (
    Option<notify::RecommendedWatcher>,
    mpsc::UnboundedReceiver<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && !matches!(e.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w));
    match watcher {
        Ok(w) => (Some(w), rx),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the {what}; polling only");
            (None, rx)
        }
    }
}

fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
