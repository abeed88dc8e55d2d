//! One worker's seat in `[cluster]` (docs/cluster.md): its authority over
//! the target, the forwarder of commands queued in etcd, who holds the
//! target (for `status`), what a standby's poll reads, and the gate every
//! changed step passes. Every node evaluates every target; only the node
//! holding the target's etcd lock acts on it.
//!
//! - A step that acts (any action, or a phase change) first claims the
//!   target ([`Cluster::authorize`]); the owner publishes the new state in
//!   the owner-checked transaction before journaling and acting, so a node
//!   that lost its lease can neither write nor act ([`Seat::gate`]).
//! - A node that newly becomes the owner adopts the state the previous
//!   owner published and steps `Recovered`, as after a crash: a rollback
//!   that was running is verified, not run again. The seat hands that
//!   state back ([`Claim::Adopted`]); the worker adopts it.
//! - A standby mirrors the owner's published state at every poll (so
//!   `status` agrees everywhere) and takes over as soon as an open
//!   incident has no owner (the owner's lease expired).
//! - A command reaching a standby is forwarded through etcd; the owner
//!   takes each one (an owner-checked delete) before acting, so it acts
//!   once.
//! - Steps are fenced: a plan's next step does not start once the lease
//!   is lost ([`Fence`]), and each step gets the lease in
//!   `ROLLBACKD_LEASE` and `{lease}`.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Authority, Cluster, ClusterError, Owner, Ownership};
use crate::decide::{Action, Event, Phase, TargetState};
use crate::handle::{Command, Refusal};
use crate::run::process::{Fence, FenceClosed};

/// One worker's seat in the cluster.
pub(super) struct Seat {
    pub(super) cluster: Cluster,
    /// The target this seat is for.
    target: String,
    /// `Owner` while this node holds the target's lock (or `Alone`).
    pub(super) authority: Option<Authority>,
    /// Forwards commands queued in etcd to this worker while it owns the
    /// target; cancelled when it stops owning it.
    pub(super) forwarder: Option<CancellationToken>,
    /// Who holds the target, for `status`.
    pub(super) ownership: watch::Sender<Option<Ownership>>,
    /// The last reason this node did not act (logged once per reason).
    pub(super) refused: Option<String>,
    /// The worker's command channel (forwarded commands enter here).
    commands: mpsc::Sender<Command>,
    /// Where the forwarder runs.
    tracker: TaskTracker,
    /// The daemon's shutdown token (set when the worker runs): the
    /// forwarder stops with it.
    pub(super) stop: CancellationToken,
}

impl Seat {
    /// The seat of `target`, whose worker takes commands on `commands`.
    pub(super) fn new(
        cluster: Cluster,
        target: &str,
        commands: mpsc::Sender<Command>,
        tracker: TaskTracker,
    ) -> (Seat, watch::Receiver<Option<Ownership>>) {
        let (ownership, rx) = watch::channel(None);
        let seat = Seat {
            cluster,
            target: target.to_string(),
            authority: None,
            forwarder: None,
            ownership,
            refused: None,
            commands,
            tracker,
            stop: CancellationToken::new(),
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

    /// Whether this node's authority over the target still holds.
    fn authorized(&self) -> bool {
        self.authority
            .as_ref()
            .is_some_and(|a| self.cluster.still_authorized(&self.target, a))
    }

    /// Before a changed step is journaled: may this node act on it? The
    /// owner publishes `next` here (owner-checked). `state` is the
    /// worker's state before the step.
    pub(super) async fn gate(
        &mut self,
        state: &TargetState,
        next: &TargetState,
        actions: &[Action],
    ) -> Gate {
        let acts = !actions.is_empty() || next.phase != state.phase;
        let authorized = self.authorized();
        if !acts && !self.owner() {
            // Rule and version bookkeeping: local only.
            return Gate::Act;
        }
        if acts && !authorized {
            match self.claim(state).await {
                Claim::Owner => {}
                Claim::Adopted(shared) => return Gate::Adopted(shared),
                Claim::Refused(why) => return Gate::Refuse(why),
            }
        }
        if !self.owner() {
            // `Alone` (etcd down, act_alone): nothing to publish to.
            return Gate::Act;
        }
        match self.cluster.publish(next).await {
            Ok(()) => Gate::Act,
            Err(e) => {
                let why = format!("the owner-checked write to etcd failed: {e}");
                if matches!(e, ClusterError::NotOwner { .. }) || !self.cluster.held() {
                    self.lose_ownership(&why);
                }
                Gate::Refuse(why)
            }
        }
    }

    /// Take (or keep) the target's lock. A node that newly becomes the
    /// owner adopts the state the previous owner published: it comes back
    /// in [`Claim::Adopted`] (with the rule reports of `state`, the
    /// worker's own, when it has none).
    pub(super) async fn claim(&mut self, state: &TargetState) -> Claim {
        let name = self.target.clone();
        let was_owner = self.owner();
        let authority = self.cluster.authorize(&name).await;
        match authority {
            Authority::Owner {
                lease,
                shared_state,
            } => {
                let node = self.cluster.node().to_string();
                self.authority = Some(Authority::Owner {
                    lease,
                    shared_state: None,
                });
                self.refused = None;
                self.ownership.send_replace(Some(Ownership {
                    owner: Some(Owner {
                        node: node.clone(),
                        lease: lease.0,
                    }),
                    standby: false,
                }));
                crate::metrics::global().cluster_owner(&name, true);
                self.start_forwarder();
                if was_owner {
                    return Claim::Owner;
                }
                tracing::info!(target = %name, %node, lease = %lease, "this node now owns the target");
                let shared = shared_state.and_then(|v| match serde_json::from_value::<TargetState>(v) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::error!(target = %name, error = %e, "the shared state in etcd is unreadable; keeping this node's own");
                        None
                    }
                });
                match shared {
                    // An open incident is taken over even when this node
                    // already mirrored exactly that state: its run died
                    // with the old owner and `Recovered` must follow.
                    Some(mut s) if s != *state || open(&s.phase) => {
                        tracing::warn!(target = %name, phase = s.phase.name(), "taking over: adopting the state the previous owner published");
                        if s.rules.is_empty() {
                            s.rules = state.rules.clone();
                        }
                        Claim::Adopted(Box::new(s))
                    }
                    _ => Claim::Owner,
                }
            }
            Authority::Alone => {
                self.authority = Some(Authority::Alone);
                if self.refused.is_some() {
                    tracing::warn!(target = %name, "etcd unreachable and on_etcd_down = \"act_alone\": acting without a lock");
                }
                self.refused = None;
                Claim::Owner
            }
            Authority::Standby { owner } => {
                let why = format!(
                    "standby: node {} owns target {name} and acts on it",
                    owner.node
                );
                self.ownership.send_replace(Some(Ownership {
                    owner: Some(owner),
                    standby: true,
                }));
                self.not_acting(was_owner, &why);
                Claim::Refused(why)
            }
            Authority::Hold { why } => {
                let why = format!(
                    "not acting: cluster coordination lost ({why}); on_etcd_down = \"hold\""
                );
                self.not_acting(was_owner, &why);
                Claim::Refused(why)
            }
        }
    }

    /// This node does not act: it lost the target, or it never had it.
    fn not_acting(&mut self, was_owner: bool, why: &str) {
        if was_owner {
            self.lose_ownership(why);
        } else {
            self.refused(why);
        }
    }

    /// Log once per reason that this node does not act.
    fn refused(&mut self, why: &str) {
        if self.refused.as_deref() != Some(why) {
            tracing::info!(target = %self.target, %why, "not acting on this target");
            self.refused = Some(why.to_string());
        }
    }

    /// This node no longer owns the target.
    fn lose_ownership(&mut self, why: &str) {
        if self.authority.take().is_some() {
            tracing::warn!(target = %self.target, %why, "this node lost the target's lock: standby from now on");
        }
        if let Some(f) = self.forwarder.take() {
            f.cancel();
        }
        self.refused = Some(why.to_string());
        crate::metrics::global().cluster_owner(&self.target, false);
    }

    /// While owner: feed the commands other nodes queued for this target
    /// into its worker, each taken (owner-checked delete) first so that
    /// it acts once.
    fn start_forwarder(&mut self) {
        if self.forwarder.is_some() {
            return;
        }
        let name = self.target.clone();
        let commands = self.commands.clone();
        let stop = self.stop.child_token();
        self.forwarder = Some(stop.clone());
        let cluster = self.cluster.clone();
        let mut inbox = cluster.commands(&name);
        self.tracker.spawn(async move {
            loop {
                let pending = tokio::select! {
                    _ = stop.cancelled() => return,
                    p = inbox.recv() => p,
                };
                match cluster.take_command(&pending).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(target = %name, error = %e, "cannot take a forwarded command; it waits for the owner");
                        continue;
                    }
                }
                let stored = &pending.stored;
                let event: Event = match serde_json::from_value(stored.command.clone()) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(target = %name, id = %stored.id, from = %stored.from, error = %e, "forwarded command unreadable; dropped");
                        continue;
                    }
                };
                tracing::info!(target = %name, id = %stored.id, from = %stored.from, "command forwarded from another node");
                let (reply, answer) = oneshot::channel();
                if commands.send(Command { event, reply }).await.is_err() {
                    return;
                }
                match answer.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::info!(target = %name, id = %stored.id, error = %e, "forwarded command refused"),
                    Err(_) => {}
                }
            }
        });
    }

    /// A command from this node's API, with the worker's `state`: step it
    /// here, step it after taking the target over, or it was answered
    /// (forwarded to the owner, or refused).
    pub(super) async fn route(&mut self, cmd: Command, state: &TargetState) -> Route {
        if self.authorized() {
            return Route::Step(cmd);
        }
        match self.claim(state).await {
            Claim::Owner => Route::Step(cmd),
            Claim::Adopted(shared) => Route::TakeOver(shared, cmd),
            Claim::Refused(why) => {
                self.forward(cmd, state, why).await;
                Route::Answered
            }
        }
    }

    /// Forward a command to the owner (a standby), or refuse it.
    async fn forward(&self, cmd: Command, state: &TargetState, why: String) {
        let standby = self.ownership.borrow().as_ref().is_some_and(|o| o.standby);
        if !standby {
            let _ = cmd.reply.send(Err(Refusal::Cluster(why)));
            return;
        }
        let json = match serde_json::to_value(&cmd.event) {
            Ok(v) => v,
            Err(e) => {
                let _ = cmd.reply.send(Err(Refusal::Cluster(format!(
                    "cannot forward the command: {e}"
                ))));
                return;
            }
        };
        match self.cluster.post_command(&self.target, &json).await {
            Ok(id) => {
                tracing::info!(target = %self.target, %id, "command forwarded to the owner");
                let _ = cmd.reply.send(Ok(state.clone()));
            }
            Err(e) => {
                let _ = cmd.reply.send(Err(Refusal::Cluster(format!(
                    "{why}; forwarding to the owner failed: {e}"
                ))));
            }
        }
    }

    /// What a standby's poll read, with the worker's `state`: mirror the
    /// owner's state, or take the target over when its incident has no
    /// owner any more.
    pub(super) async fn seen(&mut self, view: ClusterView, state: &TargetState) -> Seen {
        if self.valid_owner(&self.target) {
            return Seen::Nothing;
        }
        if self.owner() {
            self.lose_ownership("the etcd lease or the target's lock was lost");
        }
        let me = self.cluster.node().to_string();
        match &view.owner {
            Some(owner) if owner.node != me => {
                self.ownership.send_replace(Some(Ownership {
                    owner: Some(owner.clone()),
                    standby: true,
                }));
                crate::metrics::global().cluster_owner(&self.target, false);
                match view.shared.and_then(|shared| mirror(state, shared)) {
                    Some(next) => Seen::Mirror(Box::new(next)),
                    None => Seen::Nothing,
                }
            }
            _ => {
                self.ownership.send_replace(Some(Ownership {
                    owner: view.owner.clone(),
                    standby: false,
                }));
                let orphaned = view.shared.as_ref().is_some_and(|s| open(&s.phase));
                if orphaned {
                    tracing::warn!(target = %self.target, "the target's incident has no owner (its node died or was cut off): taking over");
                    if let Claim::Adopted(shared) = self.claim(state).await {
                        return Seen::TakeOver(shared);
                    }
                }
                Seen::Nothing
            }
        }
    }

    /// The lease under which this node owns the target (hex), for
    /// `{lease}`: `None` when not the owner.
    pub(super) fn lease(&self) -> Option<String> {
        self.authority.as_ref()?.lease().map(|l| l.to_string())
    }

    /// The fence a plan's steps check, and the lease they are given.
    pub(super) fn fence(&self) -> Option<(Fence, String)> {
        let authority = self.authority.clone()?;
        let lease = authority.lease()?;
        let cluster = self.cluster.clone();
        let target = self.target.clone();
        let fence = Fence(Arc::new(move || {
            if cluster.still_authorized(&target, &authority) {
                Ok(())
            } else {
                Err(FenceClosed(format!(
                    "this node lost its etcd lease {lease} (or the lock of target {target}): another node may act on it now"
                )))
            }
        }));
        Some((fence, lease.to_string()))
    }
}

/// The owner's state shown as this node's (not journaled: the owner's
/// journal and etcd hold it), or `None` when it is `state` already. What
/// the owner decides (phase and incident, pause, guards) is taken; what
/// this node observes itself (live rule reports, the version and when it
/// was deployed) is kept: the owner's copy of those is as old as its last
/// transition, and taking it would make this node observe its own version
/// again at every poll (a journal write each time).
fn mirror(state: &TargetState, shared: TargetState) -> Option<TargetState> {
    let mut next = shared;
    next.rules = state.rules.clone();
    if state.version.is_some() {
        next.version = state.version.clone();
        next.previous_version = state.previous_version.clone();
        next.deployed_at = state.deployed_at;
    }
    (next != *state).then_some(next)
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

/// The answer of [`Seat::gate`].
pub(super) enum Gate {
    /// Go on: journal and act.
    Act,
    /// Not this node's to act on (standby, or etcd unreachable with
    /// `on_etcd_down = "hold"`), or the owner-checked write failed.
    Refuse(String),
    /// This node just took the target over: the shared state replaces the
    /// worker's; the step is dropped and `Recovered` stepped instead.
    Adopted(Box<TargetState>),
}

/// A phase in which an incident is under way and somebody must own it.
pub(super) fn open(phase: &Phase) -> bool {
    matches!(
        phase,
        Phase::AwaitingConfirmation { .. } | Phase::RollingBack { .. } | Phase::Verifying { .. }
    )
}

/// The answer of [`Seat::claim`].
pub(super) enum Claim {
    /// This node may act (owner, or alone while etcd is down).
    Owner,
    /// This node just became the owner: the state the previous owner
    /// published, for the worker to adopt.
    Adopted(Box<TargetState>),
    /// Not this node's to act on.
    Refused(String),
}

/// Where [`Seat::route`] sends a command.
pub(super) enum Route {
    /// Step it here.
    Step(Command),
    /// Adopt the shared state, step `Recovered`, then step the command.
    TakeOver(Box<TargetState>, Command),
    /// Forwarded to the owner or refused: answered already.
    Answered,
}

/// What [`Seat::seen`] makes of a standby's poll.
pub(super) enum Seen {
    Nothing,
    /// Show the owner's state as this node's.
    Mirror(Box<TargetState>),
    /// Adopt the shared state and step `Recovered`.
    TakeOver(Box<TargetState>),
}
