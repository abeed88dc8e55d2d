//! The outbox: every mail is written to `outbox_dir` (lettre's file
//! transport, one `.eml` per message) before anything else happens to it.

use std::path::{Path, PathBuf};

use super::NotifyError;

/// Write the message to the outbox and return its path.
pub async fn write(dir: &Path, message: &lettre::Message) -> Result<PathBuf, NotifyError> {
    todo!("{dir:?} {message:?}")
}
