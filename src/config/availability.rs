//! Staying available while failing closed: how shutdown drains (`shutdown`) and how many checks
//! may wait before new ones are shed (`overload`). The timing chain these keys are part of is
//! documented in docs/reliability/README.md ("Availability").

use std::time::Duration;

use serde::Deserialize;

use super::error::{Invalid, invalid};

/// What happens on SIGTERM or SIGINT: NOT_SERVING first, answers for `drain_delay`, then the
/// listeners close and in-flight checks get `grace` to finish. A second signal stops at once.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    /// How long checks are still accepted and answered after health turned NOT_SERVING: long
    /// enough for every proxy to notice and stop sending (the shipped Envoy health check needs
    /// `interval` 2 s × `unhealthy_threshold` 2 = 4 s), and for Kubernetes to take the pod out
    /// of its endpoints.
    #[serde(default = "Shutdown::default_drain_delay", with = "humantime_serde")]
    pub drain_delay: Duration,
    /// After the listeners close, how long in-flight checks get to finish before the process
    /// exits anyway.
    #[serde(default = "Shutdown::default_grace", with = "humantime_serde")]
    pub grace: Duration,
}

impl Shutdown {
    fn default_drain_delay() -> Duration {
        Duration::from_secs(6)
    }
    fn default_grace() -> Duration {
        Duration::from_secs(10)
    }

    /// No drain delay: the listeners close at once (tests, `Running::stop`).
    pub fn immediate(grace: Duration) -> Self {
        Self {
            drain_delay: Duration::ZERO,
            grace,
        }
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        // Kubernetes' terminationGracePeriodSeconds must cover both; minutes of either is a
        // typo (`6m` for `6s`) that would hold every rolling update up.
        if self.drain_delay > Duration::from_secs(300) {
            return Err(invalid("shutdown.drain_delay", "must be at most 5m"));
        }
        if self.grace > Duration::from_secs(300) {
            return Err(invalid("shutdown.grace", "must be at most 5m"));
        }
        Ok(())
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            drain_delay: Self::default_drain_delay(),
            grace: Self::default_grace(),
        }
    }
}

/// Bounds on checks waiting to be decided. Beyond them a check is shed with gRPC `UNAVAILABLE`
/// (Envoy retries it on another instance, or answers 503) instead of joining a queue whose
/// answers would all come after the proxy's timeout.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Overload {
    /// Checks received and not yet answered, at most; one more is shed at once.
    #[serde(default = "Overload::default_max_pending")]
    pub max_pending_checks: usize,
    /// A check that waited longer than this between arriving and being started is shed: with
    /// Envoy's 0.5 s timeout and up to `unknown_kid_wait` (300 ms) for a key refetch, an answer
    /// started later than this would arrive too late to be used.
    #[serde(default = "Overload::default_max_queue_wait", with = "humantime_serde")]
    pub max_queue_wait: Duration,
}

impl Overload {
    fn default_max_pending() -> usize {
        1024
    }
    fn default_max_queue_wait() -> Duration {
        Duration::from_millis(100)
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if !(1..=1_000_000).contains(&self.max_pending_checks) {
            return Err(invalid(
                "overload.max_pending_checks",
                "must be between 1 and 1000000",
            ));
        }
        if self.max_queue_wait.is_zero() || self.max_queue_wait > Duration::from_secs(60) {
            return Err(invalid(
                "overload.max_queue_wait",
                "must be more than 0 and at most 60s",
            ));
        }
        Ok(())
    }
}

impl Default for Overload {
    fn default() -> Self {
        Self {
            max_pending_checks: Self::default_max_pending(),
            max_queue_wait: Self::default_max_queue_wait(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const MINIMAL: &str = r#"
policies: {dir: ./policies}
issuers:
  - issuer: https://idp.example.com
servers:
  - id: weather
    resource: https://mcp.example.com/weather/mcp
    authorization_servers: [https://idp.example.com]
"#;

    #[test]
    fn defaults_outlast_the_shipped_envoy_health_check() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.shutdown, Shutdown::default());
        assert_eq!(c.overload, Overload::default());
        // deploy/envoy/envoy.yaml: interval 2s × unhealthy_threshold 2 (tests/deploy.rs reads
        // the file itself).
        assert!(c.shutdown.drain_delay > Duration::from_secs(4));
        // Envoy's ext_authz timeout (0.5 s) minus unknown_kid_wait's default (300 ms).
        assert!(c.overload.max_queue_wait < Duration::from_millis(200));
    }

    #[test]
    fn keys_parse_and_unknown_ones_are_refused() {
        let c = Config::from_yaml(&format!(
            "{MINIMAL}shutdown: {{drain_delay: 0s, grace: 2s}}\n\
             overload: {{max_pending_checks: 8, max_queue_wait: 50ms}}\n"
        ))
        .unwrap();
        assert_eq!(c.shutdown, Shutdown::immediate(Duration::from_secs(2)));
        assert_eq!(c.overload.max_pending_checks, 8);
        assert_eq!(c.overload.max_queue_wait, Duration::from_millis(50));
        for (extra, needle) in [
            ("shutdown: {drain: 5s}\n", "drain"),
            ("overload: {max_in_flight: 5}\n", "max_in_flight"),
            (
                "shutdown: {drain_delay: 10m}\n",
                "key `shutdown.drain_delay`",
            ),
            ("shutdown: {grace: 1h}\n", "key `shutdown.grace`"),
            (
                "overload: {max_pending_checks: 0}\n",
                "key `overload.max_pending_checks`",
            ),
            (
                "overload: {max_queue_wait: 0s}\n",
                "key `overload.max_queue_wait`",
            ),
            ("shutdown: {drain_delay: soon}\n", "drain_delay"),
        ] {
            let e = Config::from_yaml(&format!("{MINIMAL}{extra}"))
                .err()
                .unwrap_or_else(|| panic!("accepted: {extra}"))
                .to_string();
            assert!(e.contains(needle), "{extra}: {e}");
        }
    }
}
