//! Which release a symlinked deployment runs now: the name of the
//! directory `current` points to. Read by the version reader (a target's
//! `version_command`-less symlink source) and by the symlink executor, so
//! it sits below both.

use std::io;
use std::path::Path;

/// Name of the release directory `current` points to now.
pub fn live_release(current: &Path) -> std::io::Result<String> {
    let target = std::fs::read_link(current).map_err(|e| {
        if e.kind() == io::ErrorKind::InvalidInput {
            io::Error::new(e.kind(), format!("{} is not a symlink", current.display()))
        } else {
            io::Error::new(
                e.kind(),
                format!("cannot read symlink {}: {e}", current.display()),
            )
        }
    })?;
    let name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "symlink {} points to {}, which names no release",
                current.display(),
                target.display()
            ),
        )
    })?;
    name.to_str().map(str::to_string).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "symlink {} points to {}, whose name is not UTF-8",
                current.display(),
                target.display()
            ),
        )
    })
}
