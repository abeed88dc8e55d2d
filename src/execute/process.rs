//! Running one argv step: no shell, its own process group, stdout/stderr
//! captured with only a bounded tail kept, killed with its whole process
//! group (SIGTERM, then SIGKILL after a grace period) at the deadline.

use tokio::time::Instant;

use super::{StepReport, Vars};

/// Substitute `{target}`, `{from_version}`, `{to_version}`, `{incident}` in
/// each argument. An unknown `{name}` is left as is; a known variable without
/// a value is an error naming it.
pub fn substitute(argv: &[String], vars: &Vars) -> Result<Vec<String>, super::ExecError> {
    todo!("{argv:?} {vars:?}")
}

/// Run one already-substituted argv until it exits or `deadline` passes.
pub async fn run_step(argv: &[String], deadline: Instant) -> StepReport {
    todo!("{argv:?} {deadline:?}")
}
