//! DPoP proof checks (RFC 9449). The input is either `raw:<proof>`, checked as it comes, or the
//! claims text of a proof that this target signs with a fixed P-256 key under a well-formed
//! `dpop+jwt` header, so the fuzzer reaches the claim checks past the signature. Invariants: no
//! panic; a proof is accepted only if its claims are a JSON object naming this request; an
//! accepted proof is refused when presented again (replay); within the time budget.
#![no_main]

#[path = "common/budget.rs"]
mod budget;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcp_authz::config::DpopConfig;
use mcp_authz::dpop::{Dpop, DpopError, ProofInput};
use mcp_authz::testutil::TestKey;

const URI: &str = "https://mcp.example.com/mcp";
const TOKEN: &str = "tok";
const NOW: i64 = 1_800_000_000;

struct Fixture {
    dpop: Dpop,
    key: TestKey,
    header: String,
    jkt: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = TestKey::ec("fuzz");
        let mut jwk = key.public_jwk();
        if let Some(o) = jwk.as_object_mut() {
            o.remove("kid");
        }
        Fixture {
            dpop: Dpop::new(&DpopConfig::default(), 8192).expect("default DPoP config"),
            header: serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}).to_string(),
            jkt: key.jkt(),
            key,
        }
    })
}

fuzz_target!(|data: &str| {
    let f = fixture();
    let (proof, claims) = match data.strip_prefix("raw:") {
        Some(raw) => (raw.to_owned(), None),
        None => (f.key.sign_raw(&f.header, data), Some(data)),
    };
    let input = ProofInput {
        proof: Some(&proof),
        method: "POST",
        uri: URI,
        access_token: TOKEN,
        jkt: &f.jkt,
        now: NOW,
    };
    let first = budget::within_budget("checking a proof", || f.dpop.check(&input));
    if first.is_ok() {
        let claims: serde_json::Value = claims
            .and_then(|c| serde_json::from_str(c).ok())
            .expect("only a proof with readable claims is accepted");
        assert_eq!(claims["htm"], "POST", "{data:?}");
        assert_eq!(
            f.dpop.check(&input),
            Err(DpopError::Replayed),
            "an accepted proof must not be accepted twice"
        );
    }
});
