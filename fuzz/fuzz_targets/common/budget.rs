//! The time budget every target holds each input to: "no target takes more than 10 ms on any
//! input up to the size limits". Time is the calling thread's CPU time (every target runs its
//! work on the fuzzing thread, `whole_check` on a current-thread runtime), so a busy machine
//! does not make findings; a slow first run is still retried twice and only the fastest of
//! the three counts. `FUZZ_BUDGET_MS` overrides the default budget (e.g. on a slower machine).

use std::sync::OnceLock;
use std::time::Duration;

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

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
/// three runs takes more CPU than the budget.
pub fn within_budget<R>(what: &str, f: impl FnMut() -> R) -> R {
    within(what, budget(), f)
}

/// [`within_budget`] with an explicit budget, for work that is not per request.
pub fn within<R>(what: &str, budget: Duration, mut f: impl FnMut() -> R) -> R {
    let started = thread_cpu();
    let result = f();
    let mut fastest = thread_cpu().saturating_sub(started);
    for _ in 0..2 {
        if fastest <= budget {
            return result;
        }
        let again = thread_cpu();
        f();
        fastest = fastest.min(thread_cpu().saturating_sub(again));
    }
    if fastest > budget {
        panic!("{what} took {fastest:?} of CPU on this input, over the {budget:?} budget");
    }
    result
}
