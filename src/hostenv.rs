//! Process-wide setup the daemon does once at start, before it opens
//! sockets or runs steps: raise the soft file-descriptor limit to the hard
//! one, and become a child subreaper so that a rollback step's escaped
//! grandchildren (`setsid cmd &`) are reparented to the daemon, where
//! [`crate::run::escaped`] finds and kills them, instead of to init.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The soft and hard `RLIMIT_NOFILE` after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now (the hard limit, unless raising failed).
    pub now: u64,
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit. The default soft
/// limit of 1024 is what a connection flood exhausts first; every probe
/// then fails with EMFILE. Errors name the limits.
pub fn raise_nofile_limit() -> Result<FdLimit, nix::Error> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(FdLimit {
        before: soft,
        now: soft.max(hard),
    })
}

/// Make this process a child subreaper (`PR_SET_CHILD_SUBREAPER`): orphaned
/// descendants are reparented to it, not to init, so they stay findable
/// by their parent pid.
pub fn become_subreaper() -> Result<(), nix::Error> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Both of the above, each failure logged as a warning (the daemon runs on
/// without them, with the weaker guarantee said in the log).
pub fn setup() {
    match raise_nofile_limit() {
        Ok(l) if l.before != l.now => {
            tracing::info!(
                from = l.before,
                to = l.now,
                "raised the open-file limit (RLIMIT_NOFILE)"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit (RLIMIT_NOFILE)"),
    }
    if let Err(e) = become_subreaper() {
        tracing::warn!(
            error = %e,
            "cannot become a child subreaper; processes escaping a rollback step may go unnoticed"
        );
    }
}
