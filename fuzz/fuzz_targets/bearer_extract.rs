//! Bearer token extraction from headers, the query and form bodies. Invariants: no panic; a
//! token found is within the size limit and is exactly what follows `Bearer ` in the one
//! `authorization` header; within the time budget.
#![no_main]

#[path = "common/budget.rs"]
mod budget;

use std::collections::HashMap;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    authorization: Option<String>,
    path: String,
    form: Option<Vec<u8>>,
    others: Vec<(String, String)>,
}

fuzz_target!(|input: Input| {
    let mut headers: HashMap<String, String> = input.others.into_iter().collect();
    headers.remove("authorization");
    if let Some(a) = &input.authorization {
        headers.insert("authorization".into(), a.clone());
    }
    let max = 4096;
    let found = budget::within_budget("extracting", || {
        mcp_authz::bearer::extract(&headers, &input.path, input.form.as_deref(), max)
    });
    if let Ok(credentials) = found {
        let token = credentials.token;
        assert!(token.len() <= max);
        let header = input.authorization.expect("a token comes from the header");
        assert!(
            header.trim_end().ends_with(token),
            "{header:?} -> {token:?}"
        );
        assert!(!token.is_empty());
    }
});
