//! JWT header and claims parsing, up to the signature check. Invariant: no panic, whatever the
//! three (or more) dot-separated parts hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|token: &str| {
    if let Ok(parsed) = mcp_authz::token::Parsed::parse(token) {
        let _ = parsed.kid();
        let _ = parsed.alg();
        let _ = parsed.issuer();
    }
});
