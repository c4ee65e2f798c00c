//! What the soak reads about mcp-authz while it runs: RSS, open descriptors and threads from
//! /proc, and from its `/metrics` the tokio task count (when the binary exports it), the
//! token cache size, key set and policy reload counters.

use std::time::Duration;

use serde::Serialize;

use crate::procs::{open_fds, status_value, vm_kib};

/// mcp-authz's Prometheus endpoint.
pub struct Metrics {
    url: String,
    client: reqwest::Client,
}

/// A reading of the process at one instant.
#[derive(Serialize, Clone, Default)]
pub struct Reading {
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
    /// `mcp_authz_runtime_tasks`: tokio tasks alive; `None` when the binary has no such metric.
    pub tasks: Option<u64>,
    pub cache_entries: Option<u64>,
    pub jwks_keys: Option<u64>,
    pub jwks_refreshes: Option<u64>,
}

impl Metrics {
    pub fn new(admin_port: u16) -> Result<Self, String> {
        Ok(Self {
            url: format!("http://127.0.0.1:{admin_port}/metrics"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| e.to_string())?,
        })
    }

    pub async fn text(&self) -> Result<String, String> {
        let r = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("`{}`: {e}", self.url))?;
        r.text().await.map_err(|e| format!("`{}`: {e}", self.url))
    }

    /// (successful, failed) policy reloads so far.
    pub async fn policy_reloads(&self) -> Result<(u64, u64), String> {
        let text = self.text().await?;
        Ok((
            sum(
                &text,
                "mcp_authz_policy_reloads_total",
                &["outcome=\"success\""],
            )
            .unwrap_or(0),
            sum(
                &text,
                "mcp_authz_policy_reloads_total",
                &["outcome=\"failure\""],
            )
            .unwrap_or(0),
        ))
    }

    /// Reads /proc and the metrics of `pid`.
    pub async fn read(&self, pid: u32) -> Result<Reading, String> {
        let text = self.text().await?;
        Ok(Reading {
            rss_kib: vm_kib(pid, "VmRSS")?,
            fds: open_fds(pid)?,
            threads: status_value(pid, "Threads")?,
            tasks: sum(&text, "mcp_authz_runtime_tasks", &[]),
            cache_entries: sum(&text, "mcp_authz_token_cache_entries", &[]),
            jwks_keys: sum(&text, "mcp_authz_jwks_keys", &[]),
            jwks_refreshes: sum(
                &text,
                "mcp_authz_jwks_refreshes_total",
                &["outcome=\"success\""],
            ),
        })
    }
}

/// The sum of the samples of `name` whose labels contain every one of `labels`; `None` when
/// there is none.
fn sum(text: &str, name: &str, labels: &[&str]) -> Option<u64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labelset, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        if labels.iter().all(|l| labelset.contains(l))
            && let Ok(v) = value.trim().parse::<f64>()
        {
            *found.get_or_insert(0) += v as u64;
        }
    }
    found
}
