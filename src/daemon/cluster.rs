//! The worker's side of `[cluster]` (docs/cluster.md): every node
//! evaluates every target, only the node holding the target's etcd lock
//! acts on it.
//!
//! - A step that acts (any action, or a phase change) first claims the
//!   target ([`Cluster::authorize`]); the owner publishes the new state in
//!   the owner-checked transaction before journaling and acting, so a node
//!   that lost its lease can neither write nor act.
//! - A node that newly becomes the owner adopts the state the previous
//!   owner published and steps `Recovered`, as after a crash: a rollback
//!   that was running is verified, not run again.
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

use tokio::sync::oneshot;

use crate::cluster::{Authority, ClusterError, Owner, Ownership};
use crate::decide::{Action, Event, Phase, TargetState, Time};
use crate::run::process::{Fence, FenceClosed};

use super::seat::{open, Claim, ClusterView, Gate};
use super::worker::{Applied, Worker};
use crate::handle::{Command, Refusal};

impl Worker {
    /// Before a changed step is journaled: may this node act on it? The
    /// owner publishes `next` here (owner-checked).
    pub(super) async fn cluster_gate(&mut self, next: &TargetState, actions: &[Action]) -> Gate {
        let Some(seat) = self.seat.as_ref() else {
            return Gate::Act;
        };
        let acts = !actions.is_empty() || next.phase != self.state.phase;
        let authorized = seat
            .authority
            .as_ref()
            .is_some_and(|a| seat.cluster.still_authorized(&self.target.name, a));
        if !acts && !seat.owner() {
            // Rule and version bookkeeping: local only.
            return Gate::Act;
        }
        if acts && !authorized {
            match self.claim().await {
                Claim::Owner => {}
                Claim::Adopted => return Gate::Adopted,
                Claim::Refused(why) => return Gate::Refuse(why),
            }
        }
        let seat = self.seat.as_mut().expect("checked");
        if !seat.owner() {
            // `Alone` (etcd down, act_alone): nothing to publish to.
            return Gate::Act;
        }
        match seat.cluster.publish(next).await {
            Ok(()) => Gate::Act,
            Err(e) => {
                let why = format!("the owner-checked write to etcd failed: {e}");
                if matches!(e, ClusterError::NotOwner { .. }) || !seat.cluster.held() {
                    self.lose_ownership(&why);
                }
                Gate::Refuse(why)
            }
        }
    }

    /// Take (or keep) the target's lock. A node that newly becomes the
    /// owner adopts the state the previous owner published.
    pub(super) async fn claim(&mut self) -> Claim {
        let name = self.target.name.clone();
        let Some(seat) = self.seat.as_mut() else {
            return Claim::Owner;
        };
        let was_owner = seat.owner();
        let authority = seat.cluster.authorize(&name).await;
        match authority {
            Authority::Owner {
                lease,
                shared_state,
            } => {
                let node = seat.cluster.node().to_string();
                seat.authority = Some(Authority::Owner {
                    lease,
                    shared_state: None,
                });
                seat.refused = None;
                seat.ownership.send_replace(Some(Ownership {
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
                    Some(s) if s != self.state || open(&s.phase) => {
                        tracing::warn!(target = %name, phase = s.phase.name(), "taking over: adopting the state the previous owner published");
                        let rules = std::mem::take(&mut self.state.rules);
                        self.state = s;
                        if self.state.rules.is_empty() {
                            self.state.rules = rules;
                        }
                        self.remember_incident();
                        Claim::Adopted
                    }
                    _ => Claim::Owner,
                }
            }
            Authority::Alone => {
                seat.authority = Some(Authority::Alone);
                if seat.refused.is_some() {
                    tracing::warn!(target = %name, "etcd unreachable and on_etcd_down = \"act_alone\": acting without a lock");
                }
                seat.refused = None;
                Claim::Owner
            }
            Authority::Standby { owner } => {
                let why = format!(
                    "standby: node {} owns target {name} and acts on it",
                    owner.node
                );
                seat.ownership.send_replace(Some(Ownership {
                    owner: Some(owner),
                    standby: true,
                }));
                if was_owner {
                    self.lose_ownership(&why);
                } else {
                    self.refused(&why);
                }
                Claim::Refused(why)
            }
            Authority::Hold { why } => {
                let why = format!(
                    "not acting: cluster coordination lost ({why}); on_etcd_down = \"hold\""
                );
                if was_owner {
                    self.lose_ownership(&why);
                } else {
                    self.refused(&why);
                }
                Claim::Refused(why)
            }
        }
    }

    /// This node just adopted the state the previous owner published:
    /// step `Recovered` as after a restart (a rollback that was running is
    /// verified, not run again), and ask the team's `confirm_command` again
    /// for an incident that waits for approval (it ran on the old owner).
    pub(super) async fn took_over(&mut self, now: Time) -> Applied {
        let applied = self.apply_at(Event::Recovered, now).await;
        if let Phase::AwaitingConfirmation { incident, .. } = &self.state.phase {
            let incident = incident.clone();
            self.ask_confirm_command(&incident);
        }
        applied
    }

    /// Log once per reason that this node does not act.
    fn refused(&mut self, why: &str) {
        let Some(seat) = self.seat.as_mut() else {
            return;
        };
        if seat.refused.as_deref() != Some(why) {
            tracing::info!(target = %self.target.name, %why, "not acting on this target");
            seat.refused = Some(why.to_string());
        }
    }

    /// This node no longer owns the target.
    fn lose_ownership(&mut self, why: &str) {
        let name = self.target.name.clone();
        let Some(seat) = self.seat.as_mut() else {
            return;
        };
        if seat.authority.take().is_some() {
            tracing::warn!(target = %name, %why, "this node lost the target's lock: standby from now on");
        }
        if let Some(f) = seat.forwarder.take() {
            f.cancel();
        }
        seat.refused = Some(why.to_string());
        crate::metrics::global().cluster_owner(&name, false);
    }

    /// While owner: feed the commands other nodes queued for this target
    /// into this worker, each taken (owner-checked delete) first so that
    /// it acts once.
    fn start_forwarder(&mut self) {
        let name = self.target.name.clone();
        let commands = self.commands_tx.clone();
        let Some(seat) = self.seat.as_mut() else {
            return;
        };
        if seat.forwarder.is_some() {
            return;
        }
        let stop = self.stop.child_token();
        seat.forwarder = Some(stop.clone());
        let cluster = seat.cluster.clone();
        let mut inbox = cluster.commands(&name);
        self.shared.tracker.spawn(async move {
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

    /// A command from this node's API: `None` when it was forwarded to the
    /// owner (and answered), else the command to step here.
    pub(super) async fn cluster_command(&mut self, cmd: Command) -> Option<Command> {
        let Some(seat) = self.seat.as_ref() else {
            return Some(cmd);
        };
        if seat
            .authority
            .as_ref()
            .is_some_and(|a| seat.cluster.still_authorized(&self.target.name, a))
        {
            return Some(cmd);
        }
        match self.claim().await {
            Claim::Owner => Some(cmd),
            Claim::Adopted => {
                self.took_over(self.shared.now()).await;
                Some(cmd)
            }
            Claim::Refused(why) => {
                let seat = self.seat.as_ref().expect("checked");
                let standby = seat.ownership.borrow().as_ref().is_some_and(|o| o.standby);
                if !standby {
                    let _ = cmd.reply.send(Err(Refusal::Cluster(why)));
                    return None;
                }
                let json = match serde_json::to_value(&cmd.event) {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = cmd.reply.send(Err(Refusal::Cluster(format!(
                            "cannot forward the command: {e}"
                        ))));
                        return None;
                    }
                };
                match seat.cluster.post_command(&self.target.name, &json).await {
                    Ok(id) => {
                        tracing::info!(target = %self.target.name, %id, "command forwarded to the owner");
                        let _ = cmd.reply.send(Ok(self.state.clone()));
                    }
                    Err(e) => {
                        let _ = cmd.reply.send(Err(Refusal::Cluster(format!(
                            "{why}; forwarding to the owner failed: {e}"
                        ))));
                    }
                }
                None
            }
        }
    }

    /// What a standby's poll read: mirror the owner's state, or take the
    /// target over when its incident has no owner any more.
    pub(super) async fn cluster_seen(&mut self, view: ClusterView) {
        let Some(seat) = self.seat.as_ref() else {
            return;
        };
        if seat.valid_owner(&self.target.name) {
            return;
        }
        if seat.owner() {
            self.lose_ownership("the etcd lease or the target's lock was lost");
        }
        let Some(seat) = self.seat.as_ref() else {
            return;
        };
        let me = seat.cluster.node().to_string();
        match &view.owner {
            Some(owner) if owner.node != me => {
                seat.ownership.send_replace(Some(Ownership {
                    owner: Some(owner.clone()),
                    standby: true,
                }));
                crate::metrics::global().cluster_owner(&self.target.name, false);
                if let Some(shared) = view.shared {
                    self.mirror(shared);
                }
            }
            _ => {
                seat.ownership.send_replace(Some(Ownership {
                    owner: view.owner.clone(),
                    standby: false,
                }));
                let orphaned = view.shared.as_ref().is_some_and(|s| open(&s.phase));
                if orphaned {
                    tracing::warn!(target = %self.target.name, "the target's incident has no owner (its node died or was cut off): taking over");
                    if let Claim::Adopted = self.claim().await {
                        self.took_over(self.shared.now()).await;
                    }
                }
            }
        }
    }

    /// Show the owner's state as this node's (not journaled: the owner's
    /// journal and etcd hold it). What the owner decides (phase and
    /// incident, pause, guards) is taken; what this node observes itself
    /// (live rule reports, the version and when it was deployed) is kept:
    /// the owner's copy of those is as old as its last transition, and
    /// taking it would make this node observe its own version again at
    /// every poll (a journal write each time).
    fn mirror(&mut self, shared: TargetState) {
        let mut next = shared;
        next.rules = self.state.rules.clone();
        if self.state.version.is_some() {
            next.version = self.state.version.clone();
            next.previous_version = self.state.previous_version.clone();
            next.deployed_at = self.state.deployed_at;
        }
        if next == self.state {
            return;
        }
        self.state = next;
        self.remember_incident();
    }

    /// The lease under which this node owns the target (hex), for
    /// `{lease}`: `None` without `[cluster]` or when not the owner.
    pub(super) fn lease(&self) -> Option<String> {
        let seat = self.seat.as_ref()?;
        seat.authority.as_ref()?.lease().map(|l| l.to_string())
    }

    /// The fence a plan's steps check, and the lease they are given.
    pub(super) fn fence(&self) -> Option<(Fence, String)> {
        let seat = self.seat.as_ref()?;
        let authority = seat.authority.clone()?;
        let lease = authority.lease()?;
        let cluster = seat.cluster.clone();
        let target = self.target.name.clone();
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
