//! Why a configuration cannot be used: the one error type for reading, parsing and validating
//! it, with messages that name the file (when there is one) and the key.

use std::path::{Path, PathBuf};

/// A configuration that cannot be used. `serve` and `validate` exit with code 64 on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing, unreadable or not UTF-8.
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not YAML, or YAML that does not fit the schema: a syntax error, an unknown or missing
    /// key, a value of the wrong type. The parser's message names the key and gives the line
    /// and column, so it is shown as is (and so not also returned as the error's `source`).
    #[error("{}{error}", file_prefix(.file.as_deref()))]
    Parse {
        /// `None` when parsing text that did not come from a file.
        file: Option<PathBuf>,
        error: serde_yaml_ng::Error,
    },
    /// Flow collections (`[`, `{`) nested deeper than any configuration needs: refused before
    /// parsing, because the YAML scanner's time grows with the square of the nesting depth
    /// (5,000 levels took seconds; found by fuzzing).
    #[error("{}flow collections (`[`, `{{`) are nested more than {max} levels deep", file_prefix(.file.as_deref()))]
    TooDeep { file: Option<PathBuf>, max: usize },
    /// A value that parses but cannot be used: a bad URL, a missing cross reference, a bound
    /// exceeded.
    #[error("{}{invalid}", file_prefix(.file.as_deref()))]
    Invalid {
        /// `None` when validating text or a value that did not come from a file.
        file: Option<PathBuf>,
        invalid: Invalid,
    },
}

/// A value that fails validation, before the file name is known.
#[derive(Debug, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct Invalid {
    /// Where the value sits in the file, e.g. `issuers[0].key_refresh.min_interval`.
    pub key: String,
    pub message: String,
}

pub(super) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The `` `file`: `` prefix of a message, empty without a file.
fn file_prefix(file: Option<&Path>) -> String {
    file.map(|f| format!("`{}`: ", f.display()))
        .unwrap_or_default()
}

// === impl ConfigError ===

impl ConfigError {
    /// Names the file a parse or validation error was found in.
    pub(super) fn in_file(self, path: &Path) -> Self {
        match self {
            Self::Parse { error, .. } => Self::Parse {
                file: Some(path.to_owned()),
                error,
            },
            Self::Invalid { invalid, .. } => Self::Invalid {
                file: Some(path.to_owned()),
                invalid,
            },
            Self::TooDeep { max, .. } => Self::TooDeep {
                file: Some(path.to_owned()),
                max,
            },
            read @ Self::Read { .. } => read,
        }
    }
}

impl From<Invalid> for ConfigError {
    fn from(invalid: Invalid) -> Self {
        Self::Invalid {
            file: None,
            invalid,
        }
    }
}
