//! The one printer of `policy explain`, for the offline evaluation and the live one through the
//! admin gRPC API alike, so both read the same.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use super::EXIT_DENIED;

/// What an explanation says, whichever evaluated it.
pub(super) struct Explanation<'a> {
    pub allowed: bool,
    /// Satisfied permits on an allow, satisfied forbids on a deny.
    pub determining: &'a [String],
    /// `policy id: message` for each policy that failed to evaluate.
    pub errors: &'a [String],
    /// The `WWW-Authenticate` value of a step-up 403; `None` for a plain 403. Not shown on an
    /// allow.
    pub challenge: Option<&'a str>,
    pub policy_hash: &'a str,
    pub source: Source<'a>,
}

/// Where the evaluated policies came from.
pub(super) enum Source<'a> {
    /// A policy directory, evaluated in this process.
    Dir(&'a Path),
    /// A running server's active policy set.
    Live,
}

// === impl Explanation ===

impl Explanation<'_> {
    /// Prints the explanation; exit 0 on an allow, 1 on a deny.
    pub(super) fn print(&self) -> ExitCode {
        print!("{self}");
        if self.allowed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_DENIED)
        }
    }
}

impl fmt::Display for Explanation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let decision = if self.allowed { "ALLOW" } else { "DENY" };
        writeln!(f, "decision: {decision}")?;
        writeln!(f, "determining policies: {:?}", self.determining)?;
        for e in self.errors {
            writeln!(f, "policy error: {e}")?;
        }
        match (self.allowed, self.challenge) {
            (true, _) => writeln!(f, "challenge: none (allowed)")?,
            (false, Some(header)) => writeln!(f, "challenge: 403 WWW-Authenticate: {header}")?,
            (false, None) => writeln!(
                f,
                "challenge: none (a plain 403; no scope would allow this)"
            )?,
        }
        match self.source {
            Source::Dir(dir) => writeln!(f, "policy set: {} ({})", self.policy_hash, dir.display()),
            Source::Live => writeln!(f, "policy set: {} (live)", self.policy_hash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_up_from_a_directory() {
        let determining = Vec::new();
        let e = Explanation {
            allowed: false,
            determining: &determining,
            errors: &["p1: boom".to_owned()],
            challenge: Some("Bearer error=\"insufficient_scope\", scope=\"a b\""),
            policy_hash: "0123456789abcdef",
            source: Source::Dir(Path::new("policies")),
        };
        assert_eq!(
            e.to_string(),
            "decision: DENY\n\
             determining policies: []\n\
             policy error: p1: boom\n\
             challenge: 403 WWW-Authenticate: Bearer error=\"insufficient_scope\", scope=\"a b\"\n\
             policy set: 0123456789abcdef (policies)\n"
        );
    }

    #[test]
    fn allow_and_plain_deny_from_the_live_set() {
        let determining = ["weather-tools".to_owned(), "session".to_owned()];
        let mut e = Explanation {
            allowed: true,
            determining: &determining,
            errors: &[],
            // Ignored on an allow.
            challenge: Some("Bearer"),
            policy_hash: "h",
            source: Source::Live,
        };
        assert_eq!(
            e.to_string(),
            "decision: ALLOW\n\
             determining policies: [\"weather-tools\", \"session\"]\n\
             challenge: none (allowed)\n\
             policy set: h (live)\n"
        );
        e.allowed = false;
        e.challenge = None;
        assert!(
            e.to_string()
                .contains("\nchallenge: none (a plain 403; no scope would allow this)\n")
        );
    }
}
