//! The decision cache: the same caller asking the same thing of the same policy set gets the
//! answer Cedar gave the first time, without running Cedar again.
//!
//! Rules:
//! - The key ([`PolicyBundle::decision_key`]) holds every input a policy of the active set can
//!   read for the request: the set's generation, the caller's token digest, the server, tenant,
//!   action and target, and the context parts and arguments the action's policies read (found
//!   at load, `policy/reads.rs`). Keys are compared whole, never by hash alone.
//! - Only complete decisions are cached (an allow, a deny, a step-up, or a deny for a policy
//!   error, each exactly as evaluated); a request Cedar could not be given (arguments that do
//!   not fit a declared tool) is worked out every time.
//! - A policy or entities reload starts an empty cache; keys also carry the set's generation,
//!   so a check racing with a reload can never read the other set's decisions.
//! - Only returning callers (a token the token cache answered for) use it: a token seen once,
//!   such as each of a flood of distinct tokens, would only fill it with entries never asked
//!   for again and pay for the key and the insert. With `cache.tokens: 0` it is never used.
//! - Bounded by `cache.decisions` entries (moka: TinyLFU admission, LRU eviction); lookups take
//!   no lock.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Caller;
use crate::metrics::{CacheLookup, Metrics};
use crate::policy::{BuildError, EvalRequest, PolicyBundle, PolicyDecision};

type Map = moka::sync::Cache<Box<[u8]>, Arc<PolicyDecision>>;

/// Decisions of the active policy set (see the module docs).
pub struct Decisions {
    /// `None` when turned off (`cache.decisions: 0`).
    current: Option<ArcSwap<Generation>>,
    capacity: u64,
    metrics: Metrics,
}

/// The entries of one policy set.
struct Generation {
    generation: u64,
    map: Map,
}

impl Decisions {
    pub fn new(capacity: u64, metrics: Metrics) -> Self {
        Self {
            current: (capacity > 0).then(|| {
                ArcSwap::from_pointee(Generation {
                    generation: 0,
                    map: Map::new(0),
                })
            }),
            capacity,
            metrics,
        }
    }

    /// The decision for `req` by `caller`: from the cache, or from `decide` (then cached).
    pub fn get_or_decide(
        &self,
        bundle: &PolicyBundle,
        req: &EvalRequest<'_>,
        caller: &Caller,
        decide: impl FnOnce() -> Result<PolicyDecision, BuildError>,
    ) -> Result<Arc<PolicyDecision>, BuildError> {
        let Some(current) = self.current.as_ref().filter(|_| caller.is_returning()) else {
            return decide().map(Arc::new);
        };
        let mut generation = current.load_full();
        if generation.generation != bundle.generation {
            // The first check on a new policy set: the old set's entries go with their map.
            let fresh = Arc::new(Generation {
                generation: bundle.generation,
                map: Map::new(self.capacity),
            });
            let previous = current.compare_and_swap(&generation, fresh.clone());
            generation = if Arc::ptr_eq(&previous, &generation) {
                fresh
            } else {
                // Another check swapped first; use whatever is there now. A map of another
                // generation is harmless: its keys carry their generation.
                current.load_full()
            };
            self.metrics.decision_cache_entries(0);
        }
        let mut key = Vec::with_capacity(128);
        bundle.decision_key(req, caller.digest(), &mut key);
        if let Some(hit) = generation.map.get(key.as_slice()) {
            self.metrics.decision_cache(CacheLookup::Hit);
            return Ok(hit);
        }
        self.metrics.decision_cache(CacheLookup::Miss);
        let decision = Arc::new(decide()?);
        generation
            .map
            .insert(key.into_boxed_slice(), decision.clone());
        self.metrics
            .decision_cache_entries(generation.map.entry_count());
        Ok(decision)
    }

    /// Cached decisions; approximate, moka applies inserts and evictions in batches.
    pub fn len(&self) -> u64 {
        self.current
            .as_ref()
            .map_or(0, |c| c.load().map.entry_count())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies pending inserts and evictions now, so [`len`](Self::len) is exact (tests, reports).
    pub fn settle(&self) {
        if let Some(c) = &self.current {
            c.load().map.run_pending_tasks();
        }
    }

    /// Lookups so far: (hits, misses), as counted in the metrics.
    pub fn counts(&self) -> (u64, u64) {
        self.metrics.decision_cache_counts()
    }
}

#[cfg(test)]
mod tests;
