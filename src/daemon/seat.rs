//! One worker's seat in `[cluster]`: its authority over the target, the
//! forwarder of commands queued in etcd, who holds the target (for
//! `status`), and what a standby's poll reads. The worker's behaviour with
//! it is in [`super::cluster`].

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Authority, Cluster, Owner, Ownership};
use crate::decide::{Phase, TargetState};

/// One worker's seat in the cluster.
pub(super) struct Seat {
    pub(super) cluster: Cluster,
    /// `Owner` while this node holds the target's lock (or `Alone`).
    pub(super) authority: Option<Authority>,
    /// Forwards commands queued in etcd to this worker while it owns the
    /// target; cancelled when it stops owning it.
    pub(super) forwarder: Option<CancellationToken>,
    /// Who holds the target, for `status`.
    pub(super) ownership: watch::Sender<Option<Ownership>>,
    /// The last reason this node did not act (logged once per reason).
    pub(super) refused: Option<String>,
}

impl Seat {
    pub(super) fn new(cluster: Cluster) -> (Seat, watch::Receiver<Option<Ownership>>) {
        let (ownership, rx) = watch::channel(None);
        let seat = Seat {
            cluster,
            authority: None,
            forwarder: None,
            ownership,
            refused: None,
        };
        (seat, rx)
    }

    pub(super) fn owner(&self) -> bool {
        matches!(self.authority, Some(Authority::Owner { .. }))
    }

    /// Owner, with the lease still held and the lock still ours.
    pub(super) fn valid_owner(&self, target: &str) -> bool {
        self.owner()
            && self
                .authority
                .as_ref()
                .is_some_and(|a| self.cluster.still_authorized(target, a))
    }
}

/// What the poll read of the target's cluster state (standby only).
#[derive(Debug)]
pub(super) struct ClusterView {
    pub(super) owner: Option<Owner>,
    pub(super) shared: Option<TargetState>,
}

/// Read who holds `target` and what its owner last published.
pub(super) async fn read_view(cluster: &Cluster, target: &str) -> Option<ClusterView> {
    let (ownership, shared) = tokio::join!(
        cluster.ownership(target),
        cluster.read_state::<TargetState>(target)
    );
    let ownership = ownership.ok()?;
    let shared = match shared {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%target, error = %e, "cannot read the shared state");
            None
        }
    };
    Some(ClusterView {
        owner: ownership.owner,
        shared,
    })
}

/// The answer of [`Worker::cluster_gate`].
pub(super) enum Gate {
    /// Go on: journal and act.
    Act,
    /// Not this node's to act on (standby, or etcd unreachable with
    /// `on_etcd_down = "hold"`), or the owner-checked write failed.
    Refuse(String),
    /// This node just took the target over: its state is now the shared
    /// one; the step is dropped and `Recovered` stepped instead.
    Adopted,
}

/// A phase in which an incident is under way and somebody must own it.
pub(super) fn open(phase: &Phase) -> bool {
    matches!(
        phase,
        Phase::AwaitingConfirmation { .. } | Phase::RollingBack { .. } | Phase::Verifying { .. }
    )
}

/// The answer of [`Worker::claim`].
pub(super) enum Claim {
    /// This node may act (owner, or alone while etcd is down).
    Owner,
    /// This node just became the owner and adopted the shared state.
    Adopted,
    /// Not this node's to act on.
    Refused(String),
}
