//! The configuration loader on arbitrary YAML. Invariants: no panic; a configuration that loads
//! validates again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(config) = mcp_authz::config::Config::from_yaml(text) {
        assert!(config.validate().is_ok());
    }
});
