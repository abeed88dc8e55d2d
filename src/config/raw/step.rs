//! The raw pieces a plug-in kind's own keys are written with, in a leaf
//! below [`raw`](super) so that a kind's file (`execute/KIND.rs`) and the
//! validation context can name them without reaching the walker, which
//! names every kind: a step (`[..]` or `{ argv = [..], .. }`) and key
//! paths (`parent.key`, defined in `config/error.rs`).

use std::collections::BTreeMap;

pub use crate::config::error::join;

/// One step: a plain argv list, or a table with its own context.
#[derive(Debug, Clone)]
pub enum RawStep {
    /// `["systemctl", "restart", "app"]`.
    Argv(Vec<String>),
    /// `{ argv = [...], cwd = "...", env = {...}, timeout = "..." }`.
    Table(RawStepTable),
}

impl<'de> serde::Deserialize<'de> for RawStep {
    /// Either form, with a message that says which forms exist and what was
    /// wrong with this one (serde's untagged enums only say "did not
    /// match").
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawStep, D::Error> {
        use serde::de::Error;
        let value = toml::Value::deserialize(d)?;
        match &value {
            toml::Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<String>>>()
                .map(RawStep::Argv)
                .ok_or_else(|| {
                    D::Error::custom(format!(
                        "step {value} is not a list of strings (argv, program first)"
                    ))
                }),
            toml::Value::Table(_) => value
                .clone()
                .try_into::<RawStepTable>()
                .map(RawStep::Table)
                .map_err(|e| D::Error::custom(format!("step {value}: {}", e.message()))),
            other => Err(D::Error::custom(format!(
                "step {other} must be an argv list [\"prog\", \"arg\"] or a table \
                 {{ argv = [...], cwd = \"...\", env = {{...}}, timeout = \"...\" }}"
            ))),
        }
    }
}

/// A step written as a table.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStepTable {
    /// argv template.
    pub argv: Option<Vec<String>>,
    /// Working directory (absolute).
    pub cwd: Option<String>,
    /// Environment added for this step.
    pub env: Option<BTreeMap<String, String>>,
    /// Duration string bounding this step.
    pub timeout: Option<String>,
}
