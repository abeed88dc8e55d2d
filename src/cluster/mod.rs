//! Several rollbackd nodes, one actor per target: ownership locks, shared
//! incident and guard state, and commands forwarded to the owner, all in
//! etcd (`[cluster]`, docs/cluster.md). Optional: without `[cluster]` the
//! daemon acts alone, as before. The etcd client ([`etcd`]) is built only
//! with the cargo feature `cluster` (it needs protoc); without it
//! [`Cluster`] is a type with no value ([`absent`]) and `[cluster]` is
//! refused with [`NOT_BUILT`].
//!
//! Every node evaluates every target; only the node holding a target's
//! lock acts on it. The lock is `PREFIX/targets/NAME/owner`, created in a
//! transaction on this node's lease ([`keys`] has the layout). The lease is
//! kept alive by one session task ([`session`]) while etcd answers; when
//! the node dies or is cut off, etcd deletes its owner keys after
//! `lease_ttl`, and another node may take over.
//!
//! # How the daemon's per-target worker uses it (`src/daemon/cluster.rs`)
//!
//! 1. At start, `run` builds one [`Cluster`] with [`Cluster::spawn`] and
//!    gives every worker a clone. It watches [`Cluster::etcd_up`] and sends
//!    "cluster coordination lost" once when it turns false, "restored"
//!    when it turns true again.
//! 2. **Before the first action of an incident** (the step that leaves
//!    `Watching`: notify, ask for confirmation, start the plan), the
//!    worker calls [`Cluster::authorize`]. [`Authority::Owner`]: go on.
//!    [`Authority::Standby`]: this node does not act; it keeps evaluating
//!    and shows the owner in `status`. [`Authority::Hold`]: etcd is
//!    unreachable and `on_etcd_down = "hold"`: do not act. `Alone`:
//!    unreachable and `act_alone`: act without a lock.
//! 3. **Before every step that changes the world** (each rollback step,
//!    `after` steps, a verification command) the worker checks
//!    [`Cluster::still_authorized`] (for an owner: [`Cluster::held`] and
//!    the target still ours) and refuses to start the step otherwise. The
//!    lease ID goes to the step as `{lease}` and `ROLLBACKD_LEASE`
//!    ([`LeaseId`] prints as etcd does, in hex) so that an external
//!    system can fence with it.
//! 4. **After every transition** the owner calls [`Cluster::publish`]
//!    with the target's new [`TargetState`]: the state (guard history:
//!    cooldown, loop guard, pause, rate history) and the incident are
//!    written in one transaction that first checks that the owner key is
//!    still ours, so a node that lost its lease cannot write. An
//!    [`ClusterError::NotOwner`] there means: stop acting, become standby.
//! 5. **Taking over**: when [`Cluster::authorize`] makes this node the
//!    owner, it returns the last published state of the target; the worker
//!    adopts it in place of its own (it has the cooldown, loop guard,
//!    pause and rate history the old owner had) and then feeds the same
//!    `Recovered` event as a restart does: an incident in `RollingBack` is
//!    not run again blindly (the old owner may have been half-way through
//!    the plan) but moves to `Verifying`; `Verifying` verifies again;
//!    `AwaitingConfirmation` waits on with its deadline.
//! 6. **Commands** (approve, reject, pause, resume, trigger) reaching a
//!    node that is not the owner are forwarded with
//!    [`Cluster::post_command`]. The owner's worker runs a
//!    [`CommandInbox`] (from [`Cluster::commands`]) in its `select!`
//!    beside its own command channel, and for each command calls
//!    [`Cluster::take_command`] before acting on it: the delete is
//!    owner-checked, and only the caller that deleted it acts, so a
//!    command acts once. Commands for a target nobody owns wait until a
//!    node becomes the owner.
//! 7. On SIGTERM, after the in-flight step is finished or journaled,
//!    [`Cluster::shutdown`] revokes the lease so the others take over at
//!    once instead of after `lease_ttl`.
//!
//! Clocks: ownership rests on etcd's server-side lease TTLs and this
//! node's monotonic clock, so clock skew between nodes does not matter
//! for it. Deadlines inside incidents (confirmation, verification,
//! cooldown) are wall-clock times in the shared state, so after a
//! takeover they are read with the new owner's clock.

#[cfg(not(feature = "cluster"))]
mod absent;
#[cfg(feature = "cluster")]
mod etcd;
pub mod keys;

use std::path::PathBuf;

#[cfg(not(feature = "cluster"))]
pub use absent::{Cluster, CommandInbox};
#[cfg(feature = "cluster")]
pub use etcd::{Cluster, CommandInbox};
pub use keys::{Keys, Owner, StoredCommand};

/// Why `[cluster]` cannot be used by a build without the `cluster` feature
/// (the default build, which needs no protoc): said by `check` and at start.
pub use crate::config::CLUSTER_NOT_BUILT as NOT_BUILT;

/// Commands waiting for one target's owner; beyond this `post_command`
/// refuses (nobody is taking them: the owner is down or there is none).
pub const MAX_PENDING_COMMANDS: usize = 64;

/// What went wrong talking to etcd or setting up the client.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file named by `[cluster]` could not be read.
    #[error("cluster.{key}: cannot read {}: {reason}", path.display())]
    File {
        /// The key naming it (`ca_file`, `cert_file`, ...).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// `node` was not set and the hostname could not be read.
    #[error("cluster.node: not set, and the hostname is unreadable: {0}")]
    Hostname(String),
    /// etcd did not answer, or answered with an error.
    #[error("etcd unavailable: {what}: {why}")]
    Unavailable {
        /// What was being done (`acquire web`, `publish web`, ...).
        what: String,
        /// The client's error or the timeout.
        why: String,
    },
    /// This node holds no lease that is valid now (etcd unreachable for a
    /// while, or the lease expired): it may not take or use a lock.
    #[error("this node holds no valid etcd lease (etcd unreachable or the lease expired)")]
    NoLease,
    /// An owner-checked write or delete found that the target is not ours.
    #[error("target {target:?} is not owned by this node (owner: {})", owner.as_ref().map_or("none".to_string(), |o| o.to_string()))]
    NotOwner {
        /// The target.
        target: String,
        /// Who owns it now, if anyone.
        owner: Option<Owner>,
    },
    /// Too many commands are waiting for the target's owner.
    #[error("{pending} commands already wait for the owner of {target:?}; not posting more")]
    TooManyCommands {
        /// The target.
        target: String,
        /// How many wait.
        pending: usize,
    },
    /// `[cluster]` in a build without the `cluster` feature.
    #[error("cluster: {NOT_BUILT}")]
    NotBuilt,
    /// A stored value is not the JSON expected, or a value does not
    /// serialize.
    #[error("{what}: {why}")]
    Json {
        /// Which key or value.
        what: String,
        /// serde's message.
        why: String,
    },
}

impl ClusterError {
    /// etcd could not be asked (as opposed to answering "not yours").
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClusterError::Unavailable { .. } | ClusterError::NoLease
        )
    }
}

/// An etcd lease ID; prints in hex, as `etcdctl lease list` does. This is
/// the fencing token handed to steps (`{lease}`, `ROLLBACKD_LEASE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// Whether this node may act on a target, from [`Cluster::authorize`].
#[derive(Debug, Clone, PartialEq)]
pub enum Authority {
    /// This node holds the target's lock under `lease`.
    Owner {
        /// The fencing token.
        lease: LeaseId,
        /// The state the previous owner published, to adopt when taking
        /// over (`None`: nothing was ever published for the target).
        shared_state: Option<serde_json::Value>,
    },
    /// Another node holds the lock: this node only watches.
    Standby {
        /// The holder.
        owner: Owner,
    },
    /// etcd is unreachable and `on_etcd_down = "act_alone"`: act without
    /// a lock.
    Alone,
    /// etcd is unreachable and `on_etcd_down = "hold"`: do not act.
    Hold {
        /// Why etcd could not be asked.
        why: String,
    },
}

impl Authority {
    /// Whether the worker may carry out actions.
    pub fn may_act(&self) -> bool {
        matches!(self, Authority::Owner { .. } | Authority::Alone)
    }

    /// The fencing token, for `{lease}` and `ROLLBACKD_LEASE`.
    pub fn lease(&self) -> Option<LeaseId> {
        match self {
            Authority::Owner { lease, .. } => Some(*lease),
            _ => None,
        }
    }
}

/// Who holds a target, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// The holder, `None` when no node holds the target.
    pub owner: Option<Owner>,
    /// Another node holds it: this node is standby for the target.
    pub standby: bool,
}

/// A command read from a target's queue, not yet taken.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCommand {
    /// The target.
    pub target: String,
    /// The stored command.
    pub stored: StoredCommand,
    /// Revision of its key: taking checks it is still this one.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    mod_revision: i64,
}
