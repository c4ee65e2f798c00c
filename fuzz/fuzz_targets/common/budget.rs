//! The time budget every target holds each input to: the issue's "no target takes more than
//! 10 ms on any input up to the size limits". A slow first run is retried twice and only the
//! fastest of the three counts, so a descheduled thread on a busy machine is not a finding;
//! an input that is slow every time is. `FUZZ_BUDGET_MS` overrides the budget (e.g. under a
//! sanitizer or on a slower machine).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn budget() -> Duration {
    static BUDGET: OnceLock<Duration> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let ms = std::env::var("FUZZ_BUDGET_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        Duration::from_millis(ms)
    })
}

/// Runs `f` and panics (a libFuzzer finding, with the input saved) when even the fastest of
/// three runs takes longer than the budget.
pub fn within_budget<R>(what: &str, mut f: impl FnMut() -> R) -> R {
    let started = Instant::now();
    let result = f();
    let mut fastest = started.elapsed();
    for _ in 0..2 {
        if fastest <= budget() {
            return result;
        }
        let again = Instant::now();
        f();
        fastest = fastest.min(again.elapsed());
    }
    if fastest > budget() {
        panic!(
            "{what} took {fastest:?} on this input, over the {:?} budget",
            budget()
        );
    }
    result
}
