//! `kind = "symlink"`: re-point `current -> releases/X` atomically (new link,
//! then rename over the old one) to the previous release: `{to_version}` when
//! known and present, else the release directory that sorts just before the
//! live one (version-aware: `v10` sorts after `v9`). Then `restart`.

use std::path::Path;

use tokio::time::Instant;

use super::{ExecResult, Vars};

/// Name of the release directory `current` points to now.
pub fn live_release(current: &Path) -> std::io::Result<String> {
    todo!("{current:?}")
}

/// Run the symlink plan.
pub async fn run(
    current: &Path,
    releases: &Path,
    restart: Option<&[String]>,
    vars: &Vars,
    deadline: Instant,
) -> ExecResult {
    todo!("{current:?} {releases:?} {restart:?} {vars:?} {deadline:?}")
}
