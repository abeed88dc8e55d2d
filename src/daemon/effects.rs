//! The effects runner ([`Effects`]): carries out the machine's actions
//! (run the plan, the verification gates, the `after`/`on_failure` hooks,
//! notifications, records, `confirm_command`) once the worker has journaled
//! the step that asked for them; every result comes back to the worker as
//! an event.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::seat::Seat;
use super::*;
use crate::config::TargetConfig;
use crate::decide::{self, Action, Event, Incident, Phase, TargetState};
use crate::execute::{self, Vars};
use crate::journal::Record;
use crate::notify::record;

/// One target's effects: what carrying out its actions needs beyond the
/// action itself. [`Shared`] gives the executors' inputs (`state_dir`, the
/// verify client, the shutdown's hard stop), the notifier (in [`Live`]),
/// the tracker its tasks run on, the journal (notification results), the
/// signing keys of confirmation links and the observers.
pub(super) struct Effects {
    /// The target's name, in logs.
    name: String,
    shared: Arc<Shared>,
    /// Where results go back to the worker as events.
    events: mpsc::Sender<Event>,
    /// The daemon's shutdown token (set when the worker runs).
    pub(super) stop: CancellationToken,
    /// The running `confirm_command`: the incident it answers for and
    /// the token that stops it (killing its process group).
    confirm_running: Option<(String, CancellationToken)>,
}

/// What the worker holds when an action is carried out: its target's
/// config (the plan, the gates, the confirm command), its state after the
/// step, and its cluster seat (the lease and the fence of each step).
pub(super) struct Scene<'a> {
    pub(super) target: &'a TargetConfig,
    pub(super) state: &'a TargetState,
    pub(super) seat: Option<&'a Seat>,
}

impl Scene<'_> {
    /// This node's lease while it owns the target (`{lease}`).
    fn lease(&self) -> Option<String> {
        self.seat.and_then(Seat::lease)
    }

    /// With `[cluster]`: the fence a plan's steps check and the lease they
    /// get in `ROLLBACKD_LEASE`.
    fn fence_env(&self) -> (Option<crate::run::process::Fence>, Vec<(String, String)>) {
        match self.seat.and_then(Seat::fence) {
            Some((fence, lease)) => (Some(fence), vec![("ROLLBACKD_LEASE".to_string(), lease)]),
            None => (None, Vec::new()),
        }
    }
}

impl Effects {
    pub(super) fn new(name: &str, shared: Arc<Shared>, events: mpsc::Sender<Event>) -> Effects {
        Effects {
            name: name.to_string(),
            shared,
            events,
            stop: CancellationToken::new(),
            confirm_running: None,
        }
    }

    /// Carry out one action of a journaled step.
    pub(super) async fn act(&mut self, action: Action, at: &Scene<'_>) {
        match action {
            Action::Execute { incident } => {
                if let (Some(first), Some(started)) =
                    (incident.first_evidence, incident.rollback_started)
                {
                    let detection = (started - first).to_std().unwrap_or_default();
                    crate::metrics::global().detection(detection.as_secs_f64());
                }
                let plan = at.target.rollback.clone();
                let vars = vars_for(&incident, at.lease());
                let tx = self.events.clone();
                tracing::info!(target = %self.name, incident = %incident.id, method = %plan.kind.name(), "running rollback plan");
                let (fence, env) = at.fence_env();
                let context = crate::run::process::RunContext {
                    state_dir: self.shared.state_dir.clone(),
                    incident: incident.id.clone(),
                    fence: fence.clone(),
                    env,
                };
                let hard_stop = self.shared.hard_stop.clone();
                let requested = incident.requested_version.clone();
                self.shared.tracker.spawn(async move {
                    let run = async {
                        // Executors that start no process (symlink,
                        // webhook) are fenced here, before anything runs.
                        if let Some(Err(why)) = fence.as_ref().map(|f| (f.0)()) {
                            return refused_by_fence(&vars, &why.to_string());
                        }
                        match &requested {
                            Some(v) => execute::run_plan_to(&plan, &vars, v).await,
                            None => execute::run_plan(&plan, &vars).await,
                        }
                    };
                    let result = tokio::select! {
                        result = context.scope(run) => result,
                        // Dropping the plan kills the running step's group
                        // and what escaped it.
                        _ = hard_stop.cancelled() => interrupted_by_shutdown(&vars),
                    };
                    let _ = tx
                        .send(Event::ExecFinished {
                            incident: vars.incident.clone(),
                            result,
                        })
                        .await;
                });
            }
            Action::Verify { incident } => self.run_gates(&incident, at),
            Action::GlobalLimitRefused { incident, reason } => {
                crate::metrics::global().global_limit_refused(&self.name);
                tracing::warn!(target = %self.name, %incident, %reason, "rollback refused");
            }
            Action::RunAfter { incident } => self.run_hook(Hook::After, &incident, at),
            Action::RunOnFailure { incident } => self.run_hook(Hook::OnFailure, &incident, at),
            Action::Notify { kind, incident } => {
                let links = self.confirm_links(kind, &incident, at.state);
                if kind == decide::NotifyKind::AwaitingConfirmation {
                    self.ask_confirm_command(&incident, at);
                }
                let sent = self
                    .shared
                    .live()
                    .notifier
                    .notify(kind, &incident, links.as_ref())
                    .await;
                self.notified(kind, Some(incident.id.clone()), sent).await;
            }
            Action::NotifyTarget {
                kind,
                target,
                message,
            } => {
                let sent = self
                    .shared
                    .live()
                    .notifier
                    .notify_target(kind, &target, &message)
                    .await;
                self.notified(kind, None, sent).await;
            }
            Action::WriteRecord { incident } => {
                // A shadow incident never becomes the target's phase: list it here.
                if incident.outcome == Some(decide::Outcome::Shadow) {
                    crate::metrics::global().incident_closed(&self.name, "shadow");
                    let mut all = self
                        .shared
                        .incidents
                        .write()
                        .unwrap_or_else(|p| p.into_inner());
                    all.insert(incident.id.clone(), (*incident).clone());
                }
                let dir = self.shared.state_dir.join("incidents");
                let written =
                    tokio::task::spawn_blocking(move || record::write(&dir, &incident)).await;
                match written {
                    Ok(Ok(path)) => self.shared.observe(Observation::Record {
                        at: self.shared.now(),
                        target: self.name.clone(),
                        path,
                    }),
                    Ok(Err(e)) => {
                        tracing::error!(target = %self.name, error = %e, "cannot write the incident record")
                    }
                    Err(e) => tracing::error!(error = %e, "record task panicked"),
                }
            }
        }
    }

    /// Journal and log a notification's result.
    pub(super) async fn notified(
        &self,
        kind: decide::NotifyKind,
        incident: Option<String>,
        sent: Result<Option<PathBuf>, crate::notify::NotifyError>,
    ) {
        let target = self.name.clone();
        match sent {
            Ok(path) => {
                let record = Record::Notified {
                    target: target.clone(),
                    incident,
                    kind,
                    path: path.clone(),
                };
                if let Err(e) = self.shared.journal(record).await {
                    tracing::error!(error = %format!("{e:#}"), "journal write failed");
                }
                if let Some(path) = path {
                    tracing::info!(%target, ?kind, path = %path.display(), "notification written to the outbox");
                    self.shared.observe(Observation::Mail {
                        at: self.shared.now(),
                        target,
                        path,
                        kind,
                    });
                }
            }
            Err(e) => {
                tracing::error!(%target, ?incident, ?kind, error = %e, "notification failed")
            }
        }
    }
}

/// The outcome of a plan whose node lost its lease before it started.
fn refused_by_fence(vars: &Vars, why: &str) -> execute::ExecResult {
    tracing::warn!(incident = %vars.incident, %why, "rollback plan not started");
    execute::ExecResult {
        ok: false,
        steps: Vec::new(),
        from_version: vars.from_version.clone(),
        to_version: vars.to_version.clone(),
        error: Some(format!("not started: {why}")),
    }
}

/// The outcome of a plan killed at the end of the shutdown grace.
pub(super) fn interrupted_by_shutdown(vars: &Vars) -> execute::ExecResult {
    let error = format!(
        "interrupted by shutdown: the plan was still running at the end of the {} grace after SIGTERM; its running step was killed with its process group",
        crate::util::fmt_duration(SHUTDOWN_GRACE)
    );
    tracing::warn!(incident = %vars.incident, "{error}");
    execute::ExecResult {
        ok: false,
        steps: Vec::new(),
        from_version: vars.from_version.clone(),
        to_version: vars.to_version.clone(),
        error: Some(error),
    }
}

/// The template variables of `incident`'s steps; `lease` is this node's
/// fencing token while it owns the target (`{lease}`).
pub(super) fn vars_for(incident: &Incident, lease: Option<String>) -> Vars {
    Vars {
        target: incident.target.clone(),
        from_version: incident.from_version.clone(),
        to_version: incident.to_version.clone(),
        incident: incident.id.clone(),
        lease,
    }
}

impl Effects {
    /// Run the verification gates once in a tracked task (a slow gate never
    /// holds up the worker); the result comes back as `VerifyChecked`. The
    /// machine asks for one run at a time. Shutdown drops a run.
    fn run_gates(&self, id: &str, at: &Scene<'_>) {
        let Some(incident) = at.state.incident().filter(|i| i.id == id) else {
            return;
        };
        let config = at.target.verify.clone();
        let vars = vars_for(incident, at.lease());
        let client = self.shared.verify_client.clone();
        let tx = self.events.clone();
        let stop = self.stop.clone();
        tracing::info!(target = %self.name, incident = %id, "verifying recovery");
        self.shared.tracker.spawn(async move {
            let checks = tokio::select! {
                checks = execute::verify::run_gates(&client, &config, &vars) => checks,
                _ = stop.cancelled() => return,
            };
            let _ = tx
                .send(Event::VerifyChecked {
                    incident: vars.incident.clone(),
                    ok: checks.iter().all(|c| c.ok),
                    detail: execute::verify::summary(&checks),
                    checks,
                })
                .await;
        });
    }
}

/// The plan's hook steps: `after` (verification passed) or `on_failure`
/// (the plan or verification failed).
#[derive(Debug, Clone, Copy)]
pub(super) enum Hook {
    After,
    OnFailure,
}

impl Effects {
    /// Run a hook's steps in a tracked task; the result comes back as an
    /// event (`AfterFinished`, `OnFailureFinished`).
    fn run_hook(&self, hook: Hook, incident: &Incident, at: &Scene<'_>) {
        let (steps, name) = match hook {
            Hook::After => (&at.target.rollback.after, "after"),
            Hook::OnFailure => (&at.target.rollback.on_failure, "on_failure"),
        };
        if steps.is_empty() {
            return;
        }
        let plan = at.target.rollback.clone();
        let vars = vars_for(incident, at.lease());
        let target = self.name.clone();
        let tx = self.events.clone();
        let (fence, env) = at.fence_env();
        let context = crate::run::process::RunContext {
            state_dir: self.shared.state_dir.clone(),
            incident: incident.id.clone(),
            fence,
            env,
        };
        let fenced = context.fence.is_some();
        self.shared.tracker.spawn(async move {
            let run = async {
                match hook {
                    Hook::After => execute::run_after(&plan, &vars).await,
                    Hook::OnFailure => execute::run_on_failure(&plan, &vars).await,
                }
            };
            let result = if fenced { context.scope(run).await } else { run.await };
            if result.ok {
                tracing::info!(%target, incident = %vars.incident, steps = result.steps.len(), "{name} steps done");
            } else {
                tracing::error!(%target, incident = %vars.incident, error = %result.error.clone().unwrap_or_default(), "{name} steps failed");
            }
            let incident = vars.incident.clone();
            let event = match hook {
                Hook::After => Event::AfterFinished { incident, result },
                Hook::OnFailure => Event::OnFailureFinished { incident, result },
            };
            let _ = tx.send(event).await;
        });
    }
}

impl Effects {
    /// Approve and reject links for a confirmation email, when `public_url` is set.
    fn confirm_links(
        &self,
        kind: decide::NotifyKind,
        incident: &Incident,
        state: &TargetState,
    ) -> Option<crate::notify::ConfirmLinks> {
        if kind != decide::NotifyKind::AwaitingConfirmation {
            return None;
        }
        let live = self.shared.live();
        let url = live.public_url.as_ref()?;
        let Phase::AwaitingConfirmation { deadline, .. } = &state.phase else {
            return None;
        };
        Some(self.shared.links.links(url, &incident.id, *deadline))
    }

    /// Run `confirm_command` (if configured) in a tracked task: exit 0
    /// approves, 1 rejects, anything else (or the deadline) is no answer.
    /// It is stopped, its process group killed, when the incident stops
    /// waiting (answered, resolved, timed out) or the daemon shuts down
    /// (the worker takes no answer any more; the next start asks again).
    pub(super) fn ask_confirm_command(&mut self, incident: &Incident, at: &Scene<'_>) {
        let Some(argv) = at.target.confirm.command.clone() else {
            return;
        };
        let Phase::AwaitingConfirmation { deadline, .. } = &at.state.phase else {
            return;
        };
        let left = (*deadline - self.shared.now()).to_std().unwrap_or_default();
        if left.is_zero() {
            return;
        }
        if let Some((_, running)) = self.confirm_running.take() {
            running.cancel();
        }
        let stop = self.stop.child_token();
        self.confirm_running = Some((incident.id.clone(), stop.clone()));
        let vars = vars_for(incident, at.lease());
        let tx = self.events.clone();
        let target = self.name.clone();
        tracing::info!(%target, incident = %vars.incident, "confirm_command started");
        self.shared.tracker.spawn(async move {
            tokio::select! {
                answer = crate::confirm::ask(&argv, &vars, left) => {
                    if let Some(event) = answer {
                        tracing::info!(%target, incident = %vars.incident, ?event, "confirm_command answered");
                        let _ = tx.send(event).await;
                    }
                }
                // Dropping `ask` kills the command's process group.
                _ = stop.cancelled() => {
                    tracing::info!(%target, incident = %vars.incident, "confirm_command stopped: no answer is waited for any more");
                }
            }
        });
    }

    /// Stop a `confirm_command` whose incident no longer waits (or at
    /// shutdown); `state` is the worker's.
    pub(super) fn settle_confirm_command(&mut self, state: &TargetState) {
        let waiting = match (&self.confirm_running, &state.phase) {
            (None, _) => return,
            (Some((id, _)), Phase::AwaitingConfirmation { incident, .. }) => {
                incident.id == *id && !self.stop.is_cancelled()
            }
            _ => false,
        };
        if !waiting {
            if let Some((_, running)) = self.confirm_running.take() {
                running.cancel();
            }
        }
    }
}
