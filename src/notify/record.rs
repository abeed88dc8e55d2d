//! The rollback record `state_dir/incidents/ID.md`: date, target, versions,
//! reason with rule values and thresholds, method, each phase's duration,
//! each step, the verification result, and a root-cause section to fill in.

use std::path::{Path, PathBuf};

use crate::decide::Incident;

/// Render the record as Markdown.
pub fn render(incident: &Incident) -> String {
    todo!("{incident:?}")
}

/// Write (atomically: temp file, fsync, rename) `dir/ID.md` and return its path.
pub fn write(dir: &Path, incident: &Incident) -> std::io::Result<PathBuf> {
    todo!("{dir:?} {incident:?}")
}
