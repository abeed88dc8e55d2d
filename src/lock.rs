//! The exclusive lock on a state directory (`state_dir/lock`): one daemon
//! per journal. Two daemons on one `state_dir` would both execute the same
//! incident, so the second one refuses to start and names the first one's
//! pid. Client commands never take it.
//!
//! The lock is a `flock(2)` on the file, held as long as the daemon runs and
//! released by the kernel when the process dies (even by SIGKILL), so a
//! stale file never blocks a restart. The file holds the holder's pid, for
//! the message and for people.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Name of the lock file inside `state_dir`.
pub const LOCK_FILE: &str = "lock";

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (a rollbackd) holds the lock.
    #[error(
        "state directory {dir} is in use by another rollbackd (pid {pid}, lock file {path}); \
         stop it first, or give this one its own state_dir",
        dir = .path.parent().unwrap_or(Path::new("")).display(),
        path = .path.display(),
        pid = .pid.map_or_else(|| "unknown".to_string(), |p| p.to_string())
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid as written in the file, when readable.
        pid: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    #[error("cannot lock {path}: {source}", path = .path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StateLock {
    path: PathBuf,
    _file: Flock<File>,
}

impl StateLock {
    /// Take the exclusive lock on `state_dir/lock` without waiting, and write
    /// our pid into it. The directory must exist.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Not truncated on open: the holder's pid must stay readable for
        // the message of a second daemon.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Err(LockError::Held {
                    pid: read_pid(&mut file),
                    path,
                })
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
        };
        let pid = std::process::id();
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(format!("{pid}\n").as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(StateLock { path, _file: file })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid written in a lock file, if it holds one.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open
        // in the same process conflicts just like another process.
        let err = StateLock::acquire(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("in use by another rollbackd"), "{msg}");
        drop(first);
        let again = StateLock::acquire(dir.path()).unwrap();
        assert_eq!(again.path(), dir.path().join("lock"));
    }
}
