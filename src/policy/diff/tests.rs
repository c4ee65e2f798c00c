//! The request space of `policy diff`: what it is made of, its size and its bound.

use std::path::PathBuf;

use super::*;
use crate::policy::load_dir;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn shipped_cases() -> CaseFile {
    cases::read_cases(&shipped().join(cases::CASES_FILE)).unwrap()
}

#[test]
fn placeholder() {
    let b = load_dir(&shipped()).unwrap();
    let f = shipped_cases();
    let space = request_space(&[&b, &b], &[&f, &f], DEFAULT_LIMIT);
    eprintln!(
        "cases {} total {} probes {}",
        space.cases,
        space.space_total,
        space.probes.len()
    );
}
