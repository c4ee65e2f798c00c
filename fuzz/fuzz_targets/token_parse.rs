//! JWT header and claims parsing, up to the signature check. Invariant: no panic, whatever the
//! three (or more) dot-separated parts hold; within the time budget.
#![no_main]

#[path = "common/budget.rs"]
mod budget;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|token: &str| {
    budget::within_budget("parsing", || {
        if let Ok(parsed) = mcp_authz::token::Parsed::parse(token) {
            let _ = parsed.kid();
            let _ = parsed.alg();
            let _ = parsed.issuer();
        }
    });
});
