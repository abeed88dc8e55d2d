//! `kind = "command"`: ordered argv steps; the first failure stops the plan.

use tokio::time::Instant;

use super::{ExecResult, Vars};

/// Run the steps in order under one deadline.
pub async fn run(steps: &[Vec<String>], vars: &Vars, deadline: Instant) -> ExecResult {
    todo!("{steps:?} {vars:?} {deadline:?}")
}
