//! One argv step with its own context, as a plan, a hook or a gate runs it:
//! plain values (argv template, cwd, env, timeout), no config type.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One argv step with its own context: written as a plain argv list, or as
/// a table `{ argv = [...], cwd = "...", env = {...}, timeout = "..." }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// argv template (program first).
    pub argv: Vec<String>,
    /// Working directory (`None`: the plan's `cwd`, else the daemon's).
    pub cwd: Option<PathBuf>,
    /// Added to the plan's `env` for this step.
    pub env: BTreeMap<String, String>,
    /// This step's own limit; the plan `timeout` still bounds it.
    pub timeout: Option<Duration>,
}

impl From<Vec<String>> for Step {
    fn from(argv: Vec<String>) -> Step {
        Step {
            argv,
            ..Step::default()
        }
    }
}
