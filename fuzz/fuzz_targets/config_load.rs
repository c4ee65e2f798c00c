//! The configuration loader on arbitrary YAML. Invariants: no panic; a configuration that loads
//! validates again; within the time budget.
#![no_main]

#[path = "common/budget.rs"]
mod budget;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let loaded = budget::within_budget("loading", || mcp_authz::config::Config::from_yaml(text));
    if let Ok(config) = loaded {
        assert!(config.validate().is_ok());
    }
});
