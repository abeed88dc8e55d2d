//! Pure validation from [`RawConfig`](super::raw::RawConfig) into [`Config`](super::Config):
//! every problem is collected with its key path before failing. No I/O.

use super::raw::RawConfig;
use super::Config;

/// One problem: `FILE: key.path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: String,
    /// Dotted key path such as `target[0].rule[1].for`; empty for file-level errors.
    pub path: String,
    /// What is wrong, naming the value.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// A single error.
    pub fn single(file: &str, path: &str, message: String) -> ConfigErrors {
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            path: path.to_string(),
            message,
        }])
    }
}

/// Validate the raw config; `file` names it in errors.
pub fn validate(file: &str, raw: RawConfig) -> Result<Config, ConfigErrors> {
    todo!("{file} {raw:?}")
}
