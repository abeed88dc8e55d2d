//! The per-target worker: poll (version, rules) as a future of its own,
//! step the decision machine, journal, and hand actions to the effects
//! runner. Commands from the API are served first.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::effects::{Effects, Scene};
use super::seat::{ClusterView, Gate, Route, Seat, Seen};
use super::*;
use crate::config::{Config, TargetConfig};
use crate::decide::{self, DecideConfig, Event, Phase, TargetState, Time};
use crate::execute;
use crate::journal::Record;
use crate::rules::{RuleEval, RuleReport};
use crate::sources::Source;
use crate::version::VersionReader;

/// One rule with its source and evaluation state; `index` is its place in
/// the target's config order (reports are journaled in that order).
pub(super) struct RuleSlot {
    pub(super) index: usize,
    pub(super) source: Source,
    pub(super) eval: RuleEval,
    /// Carried over from before a reload (its history is still valid).
    pub(super) kept: bool,
}

/// A reload's new settings for one worker.
#[derive(Debug)]
pub(crate) struct Reconfig {
    pub(super) target: TargetConfig,
    pub(super) decide: DecideConfig,
}

/// Build the rule slots of `target`: polled rules and Alertmanager rules.
/// A slot in `old` whose rule config is unchanged is kept (its history is
/// valid); otherwise a fresh one continues from the last report of that
/// rule only when the rule is unchanged (a restart: `last` is journaled).
pub(super) fn rule_slots(
    target: &TargetConfig,
    last: &[RuleReport],
    mut old: Vec<RuleSlot>,
    shared: &Shared,
    live: &Live,
) -> (Vec<RuleSlot>, Vec<RuleSlot>) {
    let (mut polled, mut alerting) = (Vec::new(), Vec::new());
    let cx = sources_context(shared, live);
    for (index, r) in target.rules.iter().enumerate() {
        let slot = match old
            .iter()
            .position(|s| s.eval.rule() == r && s.source.keeps(&r.source, &cx))
        {
            Some(i) => {
                let mut s = old.swap_remove(i);
                s.index = index;
                s.kept = true;
                s
            }
            None => {
                let mut eval = RuleEval::build(r.clone(), target.no_data);
                // A running `for` of a poll-judged rule goes on across a
                // restart (the journal has its last report).
                if old.is_empty() {
                    if let Some(l) = last.iter().find(|x| x.rule == r.name) {
                        eval.resume(l);
                    }
                }
                RuleSlot {
                    index,
                    source: Source::of(&r.source, &cx),
                    eval,
                    kept: false,
                }
            }
        };
        if r.source.pushed() {
            alerting.push(slot);
        } else {
            polled.push(slot);
        }
    }
    (polled, alerting)
}

/// How long a poll of `target` may take before its worker counts as stuck:
/// twice the interval plus the longest a poll can last when every source
/// uses its whole timeout (the version is read first, then the rules
/// together; the verification gates run as an effect of their own).
pub(super) fn poll_budget(target: &TargetConfig, shared: &Shared, live: &Live) -> Duration {
    let cx = sources_context(shared, live);
    let rules = target
        .rules
        .iter()
        .map(|r| r.source.budget(&cx))
        .max()
        .unwrap_or_default();
    let version = match &target.version {
        None => Duration::ZERO,
        Some(_) => crate::version::VERSION_TIMEOUT,
    };
    live.poll_interval * 2 + version + rules
}

/// The shared things a rule's source is built from (its clients, the
/// alert store) and budgeted with.
fn sources_context<'a>(shared: &'a Shared, live: &'a Live) -> crate::sources::Context<'a> {
    crate::sources::Context {
        http: &shared.client,
        prometheus: crate::sources::prometheus::Clients::Named(&live.prometheus),
        prometheus_timeout: live.prometheus_timeout,
        poll_interval: live.poll_interval,
        alerts: &shared.alerts,
    }
}

/// The timeout of one verify URL check.
pub(super) fn verify_timeout(poll_interval: Duration) -> Duration {
    poll_interval.clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// When a worker polls: at a stable offset inside the interval (see
/// [`poll_offset`]) plus a little jitter, skipping slots a long poll missed.
#[derive(Debug)]
pub(super) struct Schedule {
    pub(super) interval: Duration,
    pub(super) offset: Duration,
    pub(super) base: tokio::time::Instant,
    pub(super) slot: u32,
    pub(super) seed: u64,
    pub(super) next: tokio::time::Instant,
}

impl Schedule {
    pub(super) fn new(name: &str, interval: Duration) -> Schedule {
        let offset = poll_offset(name, interval);
        let base = tokio::time::Instant::now();
        Schedule {
            interval,
            offset,
            base,
            slot: 0,
            seed: offset.as_nanos() as u64,
            next: base + offset,
        }
    }

    /// Move `next` to the first slot after now.
    pub(super) fn advance(&mut self) {
        let now = tokio::time::Instant::now();
        while self.next <= now {
            self.slot = self.slot.saturating_add(1);
            self.next = self.base + self.offset + self.interval * self.slot;
        }
        self.next += poll_jitter(&mut self.seed, self.interval);
    }
}

/// What one poll found, handed back to the worker when the poll task ends.
pub(super) struct PollDone {
    /// With `[cluster]`, on a node that does not own the target: who does,
    /// and the state it published.
    pub(super) cluster: Option<super::seat::ClusterView>,
    /// The polled rules, with their updated history.
    pub(super) slots: Vec<RuleSlot>,
    /// One report per polled rule: (config index, report).
    pub(super) reports: Vec<(usize, RuleReport)>,
    /// The version reader and what it read.
    pub(super) version: VersionReader,
    pub(super) read: Result<Option<String>, crate::version::VersionError>,
    /// How long the poll took.
    pub(super) took: Duration,
}

pub(super) type PollFuture = std::pin::Pin<Box<dyn std::future::Future<Output = PollDone> + Send>>;

/// One target's loop.
pub(super) struct Worker {
    pub(super) target: TargetConfig,
    pub(super) decide: DecideConfig,
    pub(super) state: TargetState,
    pub(super) recovered: bool,
    /// Rules polled by the poll task (moved into it while it runs).
    pub(super) polled: Vec<RuleSlot>,
    /// Alertmanager rules: evaluated at every poll and at once when a POST
    /// changes the alerts (they never wait behind a slow poll).
    pub(super) alerting: Vec<RuleSlot>,
    /// The latest report of every rule, in config order (live view).
    pub(super) latest: Vec<Option<RuleReport>>,
    pub(super) shared: Arc<Shared>,
    pub(super) events_rx: mpsc::Receiver<Event>,
    /// Effect results whose journal write failed: retried in order until
    /// journaled, so an outcome is never lost.
    pub(super) unjournaled: std::collections::VecDeque<(Event, Time)>,
    /// The version reader, `None` while a poll task holds it.
    pub(super) version: Option<VersionReader>,
    /// When the next poll starts.
    pub(super) schedule: Schedule,
    /// How long a poll may take before the watchdog calls this worker stuck.
    pub(super) budget: Duration,
    /// New settings from a reload.
    pub(super) control_rx: mpsc::Receiver<Reconfig>,
    /// A reload waiting for the poll in flight to hand the rules back.
    pub(super) pending: Option<Reconfig>,
    /// An extra poll when a Pending rule's `for` runs out before the next
    /// regular poll: detection is not delayed by the poll phase.
    pub(super) wake_at: Option<tokio::time::Instant>,
    pub(super) last_version_error: Option<String>,
    pub(super) commands_rx: mpsc::Receiver<Command>,
    pub(super) state_tx: watch::Sender<TargetState>,
    /// Carries out the actions of the steps this worker adopts.
    pub(super) effects: Effects,
    /// With `[cluster]`: this worker's ownership of the target.
    pub(super) seat: Option<Seat>,
    /// What its rollback acts on (one plan per service), and this worker's
    /// number in [`Shared::executors`].
    pub(super) identity: crate::execute::Identity,
    pub(super) worker_id: u64,
}

/// Numbers workers (their seats in [`Shared::executors`]).
static WORKERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Where inside `interval` a target polls: a stable offset derived from
/// its name (as Prometheus offsets scrapes by a hash of the target), so a
/// hundred targets spread over the interval instead of probing at once.
pub fn poll_offset(name: &str, interval: Duration) -> Duration {
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let nanos = interval.as_nanos().max(1) as u64;
    Duration::from_nanos(h % nanos)
}

/// A little jitter on top of the offset (up to 1% of the interval, at most
/// 50ms), different on every tick, so that targets with colliding offsets
/// do not stay in lockstep.
pub(super) fn poll_jitter(seed: &mut u64, interval: Duration) -> Duration {
    // splitmix64
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let max = (interval / 100).min(Duration::from_millis(50)).as_nanos() as u64;
    Duration::from_nanos(if max == 0 { 0 } else { z % max })
}

impl Worker {
    pub(super) fn build(
        config: &Config,
        target: &TargetConfig,
        recovered: Option<TargetState>,
        shared: Arc<Shared>,
        cluster: Option<crate::cluster::Cluster>,
    ) -> (Worker, TargetHandle, mpsc::Sender<Reconfig>) {
        let (events_tx, events_rx) = mpsc::channel(16);
        let (commands_tx, commands_rx) = mpsc::channel(16);
        let (seat, ownership) = match cluster {
            Some(c) => {
                let (seat, rx) =
                    Seat::new(c, &target.name, commands_tx.clone(), shared.tracker.clone());
                (Some(seat), rx)
            }
            None => (None, watch::channel(None).1),
        };
        let live = shared.live();
        let last = recovered
            .as_ref()
            .map(|s| s.rules.clone())
            .unwrap_or_default();
        let (polled, alerting) = rule_slots(target, &last, Vec::new(), &shared, &live);
        let (control_tx, control_rx) = mpsc::channel(4);
        let state = recovered
            .clone()
            .unwrap_or_else(|| TargetState::new(&target.name));
        let (state_tx, state_rx) = watch::channel(state.clone());
        let identity = execute::identity(&target.name, &target.rollback);
        let worker_id = WORKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shared.seat_executor(&target.name, worker_id, &identity, &state);
        let worker = Worker {
            identity,
            worker_id,
            target: target.clone(),
            decide: DecideConfig::from_config(config, target),
            recovered: recovered.is_some(),
            state,
            polled,
            alerting,
            latest: vec![None; target.rules.len()],
            version: Some(VersionReader::build(
                target.version.clone(),
                shared.verify_client.clone(),
                live.client(version_server(target)).cloned(),
            )),
            schedule: Schedule::new(&target.name, live.poll_interval),
            budget: poll_budget(target, &shared, &live),
            effects: Effects::new(&target.name, shared.clone(), events_tx),
            shared,
            events_rx,
            unjournaled: std::collections::VecDeque::new(),
            last_version_error: None,
            commands_rx,
            control_rx,
            pending: None,
            wake_at: None,
            state_tx,
            seat,
        };
        let handle = TargetHandle {
            name: target.name.clone(),
            commands: commands_tx,
            state: state_rx,
            cluster: ownership,
        };
        (worker, handle, control_tx)
    }

    /// The loop. A person's command, an effect's result and an alert are
    /// never queued behind a poll: the poll is a task of its own (`biased`
    /// select, commands first), and shutdown drops it.
    pub(super) async fn run(mut self, cancel: CancellationToken) {
        self.effects.stop = cancel.clone();
        if let Some(seat) = &mut self.seat {
            seat.stop = cancel.clone();
        }
        self.heartbeat();
        if self.recovered {
            tracing::info!(target = %self.target.name, phase = self.state.phase.name(), "state recovered from the journal");
            crate::metrics::global().phase(&self.target.name, &self.state.phase);
            self.apply(Event::Recovered).await;
            // The wait goes on, and so does the team's approval flow: its
            // command died with the previous process. (With `[cluster]`,
            // only on the node that owns the target: a standby's recovered
            // state is a mirror, and the owner runs the flow.)
            let owner = self
                .seat
                .as_ref()
                .is_none_or(|s| s.valid_owner(&self.target.name));
            if let (true, Phase::AwaitingConfirmation { incident, .. }) = (owner, &self.state.phase)
            {
                let incident = incident.clone();
                self.ask_confirm_command(&incident);
            }
        }
        let mut poll: Option<PollFuture> = None;
        let mut alerts = self.shared.alerts.subscribe();
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let has_alerting = !self.alerting.is_empty();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(command) = self.commands_rx.recv() => self.command(command).await,
                Some(event) = self.events_rx.recv() => self.effect_result(event).await,
                Some(reconfig) = self.control_rx.recv() => {
                    // A poll in flight holds the rules: apply when it ends.
                    self.pending = Some(reconfig);
                    if poll.is_none() {
                        self.reconfigure();
                    }
                }
                Ok(()) = alerts.changed(), if has_alerting => self.alerts_changed().await,
                done = async { poll.as_mut().expect("guarded").await }, if poll.is_some() => {
                    poll = None;
                    self.poll_done(done).await;
                    self.reconfigure();
                }
                _ = tokio::time::sleep_until(self.schedule.next), if poll.is_none() => {
                    self.schedule.advance();
                    self.wake_at = None;
                    poll = Some(self.start_poll());
                }
                _ = sleep_until_opt(self.wake_at), if poll.is_none() && self.wake_at.is_some() => {
                    self.wake_at = None;
                    poll = Some(self.start_poll());
                }
                _ = retry.tick(), if !self.unjournaled.is_empty() => self.retry_unjournaled().await,
            }
            self.effects.settle_confirm_command(&self.state);
            self.publish();
        }
        drop(poll);
        self.shared
            .unseat_executor(&self.target.name, self.worker_id);
        self.shared
            .heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.target.name);
        self.effects.settle_confirm_command(&self.state);
        // A running plan finishes within the grace, or is killed at its
        // end and reports itself interrupted (`hard_stop`): either way its
        // outcome arrives as an event and is journaled.
        let until = tokio::time::Instant::now() + SHUTDOWN_GRACE + SHUTDOWN_MARGIN;
        while matches!(self.state.phase, Phase::RollingBack { .. }) {
            tracing::warn!(target = %self.target.name, "waiting for the running rollback to finish before exiting");
            match tokio::time::timeout_at(until, self.events_rx.recv()).await {
                Ok(Some(event)) => {
                    self.effect_result(event).await;
                }
                _ => {
                    tracing::warn!(
                        target = %self.target.name,
                        "rollback still running at exit; the journal says RollingBack and the next start verifies instead of re-running it"
                    );
                    break;
                }
            }
        }
    }

    /// Tell the watchdog this worker is alive (a poll ended, or it started).
    pub(super) fn heartbeat(&self) {
        self.shared
            .heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                self.target.name.clone(),
                (std::time::Instant::now(), self.budget),
            );
    }

    /// Apply a reload's new settings (when no poll holds the rules). Rules
    /// whose config did not change keep their history (probe windows, the
    /// running `for`); changed or new rules start afresh. Incidents, guards,
    /// pause and rate history are in the state and are kept.
    pub(super) fn reconfigure(&mut self) {
        let Some(r) = self.pending.take() else {
            return;
        };
        let live = self.shared.live();
        let old: Vec<RuleSlot> = std::mem::take(&mut self.polled)
            .into_iter()
            .chain(std::mem::take(&mut self.alerting))
            .collect();
        let last: Vec<RuleReport> = self.latest.iter().flatten().cloned().collect();
        let (polled, alerting) = rule_slots(&r.target, &last, old, &self.shared, &live);
        self.latest = r
            .target
            .rules
            .iter()
            .map(|rc| last.iter().find(|x| x.rule == rc.name).cloned())
            .collect();
        // A rule that is new or changed has no report yet: the next poll
        // evaluates it before the target is stepped with a full set.
        for (i, rc) in r.target.rules.iter().enumerate() {
            let kept = polled
                .iter()
                .chain(alerting.iter())
                .any(|s| s.index == i && s.eval.rule() == rc && s.kept);
            if !kept {
                self.latest[i] = None;
            }
        }
        self.polled = polled;
        self.alerting = alerting;
        // A version_query's server may have a new client.
        let query = matches!(
            r.target.version,
            Some(crate::config::VersionSource::Query { .. })
        );
        if self.target.version != r.target.version || query {
            self.version = Some(VersionReader::build(
                r.target.version.clone(),
                self.shared.verify_client.clone(),
                live.client(version_server(&r.target)).cloned(),
            ));
        }
        if self.schedule.interval != live.poll_interval {
            self.schedule = Schedule::new(&r.target.name, live.poll_interval);
        }
        self.budget = poll_budget(&r.target, &self.shared, &live);
        self.decide = r.decide;
        self.target = r.target;
        self.identity = execute::identity(&self.target.name, &self.target.rollback);
        self.shared.seat_executor(
            &self.target.name,
            self.worker_id,
            &self.identity,
            &self.state,
        );
        self.heartbeat();
        tracing::info!(target = %self.target.name, rules = self.target.rules.len(), "configuration reloaded");
    }

    /// An effect's result (execution, after steps, confirm_command answer):
    /// it must reach the journal. Kept in order behind any result that is
    /// still waiting for a journal write.
    pub(super) async fn effect_result(&mut self, event: Event) {
        // Stepped at the time it arrived, however late it is journaled: a
        // rollback's duration is not stretched by a journal outage.
        self.unjournaled.push_back((event, self.shared.now()));
        self.retry_unjournaled().await;
    }

    /// Apply waiting effect results in order until one cannot be journaled.
    pub(super) async fn retry_unjournaled(&mut self) {
        while let Some((event, at)) = self.unjournaled.pop_front() {
            match self.apply_at(event.clone(), at).await {
                Applied::Yes | Applied::NotExpected => {}
                // With `[cluster]`: the node lost the target while the
                // effect ran; the owner's published state stands (a new
                // owner verifies a rollback it took over).
                Applied::Refused => {
                    tracing::warn!(target = %self.target.name, event = event.name(), "effect result not adopted: this node no longer owns the target");
                }
                Applied::NotJournaled => {
                    tracing::warn!(target = %self.target.name, waiting = self.unjournaled.len() + 1, "effect result not journaled yet; retrying every second");
                    self.unjournaled.push_front((event, at));
                    return;
                }
            }
        }
    }

    /// Start a poll in its own future: version, every polled rule. The
    /// worker keeps serving commands.
    pub(super) fn start_poll(&mut self) -> PollFuture {
        let mut slots = std::mem::take(&mut self.polled);
        let version = self
            .version
            .take()
            .expect("the version reader is back after every poll");
        let deployed_at = self.state.deployed_at;
        let clock = self.shared.clock.clone();
        let standby = self
            .seat
            .as_ref()
            .filter(|s| !s.valid_owner(&self.target.name))
            .map(|s| (s.cluster.clone(), self.target.name.clone()));
        // Test hook (debug builds only): this target's polls never end, as a
        // stuck worker's would; the watchdog test uses it.
        let stall = cfg!(debug_assertions)
            && std::env::var("ROLLBACKD_TEST_STALL_TARGET").is_ok_and(|t| t == self.target.name);
        Box::pin(async move {
            if stall {
                std::future::pending::<()>().await;
            }
            let started = std::time::Instant::now();
            let evaluate = async {
                let read = version.read().await;
                let now = clock.now();
                let reports = futures_util::future::join_all(slots.iter_mut().map(|s| async {
                    let report = crate::rules::baseline::evaluate(
                        &mut s.source,
                        &mut s.eval,
                        deployed_at,
                        now,
                    )
                    .await;
                    (s.index, report)
                }))
                .await;
                (read, reports)
            };
            // Beside the rules, never after them: a slow or silent etcd
            // must not stretch the poll (the probes would thin out and the
            // rules turn Unknown). Not asked while the session knows etcd
            // is unreachable.
            let view = async {
                match standby {
                    Some((c, name)) if *c.etcd_up().borrow() => {
                        super::seat::read_view(&c, &name).await
                    }
                    _ => None,
                }
            };
            let ((read, reports), cluster) = tokio::join!(evaluate, view);
            PollDone {
                cluster,
                slots,
                reports,
                version,
                read,
                took: started.elapsed(),
            }
        })
    }

    /// A poll ended: adopt the version, then step the evaluation.
    pub(super) async fn poll_done(&mut self, done: PollDone) {
        self.polled = done.slots;
        self.version = Some(done.version);
        self.heartbeat();
        crate::metrics::global().poll_duration(done.took);
        if let Some(view) = done.cluster {
            self.cluster_seen(view).await;
        }
        if let Some(version) = self.version_read(done.read) {
            if self.state.version.as_deref() != Some(version.as_str()) {
                self.apply(Event::VersionObserved { version }).await;
            }
        }
        for (index, report) in done.reports {
            self.latest[index] = Some(report);
        }
        self.evaluate_alerting().await;
        self.step_evaluated().await;
    }

    /// Evaluate the Alertmanager rules now (they read the local store).
    pub(super) async fn evaluate_alerting(&mut self) {
        let now = self.shared.now();
        let deployed_at = self.state.deployed_at;
        for s in &mut self.alerting {
            let report =
                crate::rules::baseline::evaluate(&mut s.source, &mut s.eval, deployed_at, now)
                    .await;
            self.latest[s.index] = Some(report);
        }
    }

    /// A POST changed the alerts: evaluate this target's alert rules now
    /// and step with them, without waiting for the next poll.
    pub(super) async fn alerts_changed(&mut self) {
        self.evaluate_alerting().await;
        self.step_evaluated().await;
    }

    /// Step an evaluation of every rule (once each rule has been evaluated).
    pub(super) async fn step_evaluated(&mut self) {
        let Some(rules) = self
            .latest
            .iter()
            .cloned()
            .collect::<Option<Vec<RuleReport>>>()
        else {
            return;
        };
        self.wake_at = due_before(&rules, self.shared.now(), self.schedule.next);
        let fleet = self.shared.fleet(&self.target.name, &rules);
        self.apply(Event::Evaluated { rules, fleet }).await;
        // A trigger held by `[daemon] settle` is looked at again when the
        // hold ends, not a whole poll later.
        if let Some(since) = self.state.settling {
            let end = since + chrono::TimeDelta::from_std(self.decide.settle).unwrap_or_default();
            let wait =
                (end - self.shared.now()).to_std().unwrap_or_default() + Duration::from_millis(20);
            let at = tokio::time::Instant::now() + wait;
            if at < self.schedule.next && self.wake_at.is_none_or(|w| at < w) {
                self.wake_at = Some(at);
            }
        }
    }

    pub(super) fn version_read(
        &mut self,
        read: Result<Option<String>, crate::version::VersionError>,
    ) -> Option<String> {
        match read {
            Ok(v) => {
                self.last_version_error = None;
                v
            }
            Err(e) => {
                // Outside the version charset: the live version is an
                // unknown version, shown escaped and never substituted.
                let unknown = e.unknown_version().map(str::to_string);
                let e = e.to_string();
                if self.last_version_error.as_ref() != Some(&e) {
                    match unknown {
                        Some(_) => {
                            tracing::warn!(target = %self.target.name, error = %e, "the live version is an unknown version")
                        }
                        None => {
                            tracing::warn!(target = %self.target.name, error = %e, "cannot read the live version")
                        }
                    }
                    self.last_version_error = Some(e);
                }
                unknown
            }
        }
    }

    /// Step the machine, journal if anything changed, then act. `false`
    /// when the step was not adopted (the event does not fit, or the
    /// journal could not be written).
    pub(super) async fn apply(&mut self, event: Event) -> bool {
        self.apply_at(event, self.shared.now()).await == Applied::Yes
    }

    /// [`Worker::apply`] at a given time, saying why a step was not adopted.
    pub(super) async fn apply_at(&mut self, event: Event, now: Time) -> Applied {
        let stepped = match self.step(&event, now) {
            Ok(r) => r,
            // State-lost mode refuses every step; said once at start.
            Err(e @ decide::StepError::StateLost { .. }) => {
                tracing::debug!(target = %self.target.name, error = %e, "event ignored");
                return Applied::NotExpected;
            }
            Err(e) => {
                tracing::warn!(target = %self.target.name, error = %e, "event ignored");
                return Applied::NotExpected;
            }
        };
        self.adopt(event, stepped, now).await
    }

    /// Step the machine from the current state, with the executor
    /// registry and the global cap as the guards' input. Nothing is
    /// adopted yet: the result is adopted ([`Worker::adopt`]) or dropped.
    pub(super) fn step(&self, event: &Event, now: Time) -> Result<Stepped, decide::StepError> {
        self.shared.step(
            &self.target.name,
            self.worker_id,
            &self.identity,
            now,
            |guards: &decide::Guards| {
                decide::step(&self.decide, guards, self.state.clone(), event.clone(), now)
            },
        )
    }

    /// Adopt a step: journal it when it changed something, then take the
    /// state and carry out its actions. A step that is not adopted is
    /// dropped (what it held for the global cap and the executor goes).
    pub(super) async fn adopt(&mut self, event: Event, stepped: Stepped, now: Time) -> Applied {
        let next = &stepped.next;
        let from = self.state.phase.name().to_string();
        let to = next.phase.name().to_string();
        if let Event::Evaluated { rules, .. } = &event {
            record_rule_metrics(&self.target.name, rules);
        }
        let changed = !stepped.actions.is_empty() || self.state.journal_worthy_change(next);
        if !changed {
            self.state = stepped.adopt().0;
            return Applied::Yes;
        }
        let gate = match self.seat.as_mut() {
            Some(seat) => seat.gate(&self.state, next, &stepped.actions).await,
            None => Gate::Act,
        };
        match gate {
            Gate::Act => {}
            Gate::Refuse(why) => {
                tracing::debug!(target = %self.target.name, %why, "step not adopted");
                return Applied::Refused;
            }
            Gate::Adopted(shared) => {
                // The step was computed from the state this node had; the
                // shared one replaces it.
                drop(stepped);
                self.adopt_shared(*shared);
                return Box::pin(self.took_over(now)).await;
            }
        }
        log_step(&self.target.name, &event, &from, &to, next);
        if next.waiting != self.state.waiting {
            match &next.waiting {
                Some(why) => tracing::info!(target = %self.target.name, %why, "waiting"),
                None => {
                    tracing::info!(target = %self.target.name, "no longer waiting for another target")
                }
            }
        }
        let record = Record::Step {
            target: self.target.name.clone(),
            event: event.clone(),
            from: from.clone(),
            to: to.clone(),
            actions: stepped.actions.clone(),
            state: next.clone().into(),
        };
        if let Err(e) = self.shared.journal(record).await {
            // Nothing happens that is not journaled: keep the old state, the
            // next poll tries again.
            crate::metrics::global().journal_error();
            tracing::error!(target = %self.target.name, error = %format!("{e:#}"), "journal write failed; not acting");
            return Applied::NotJournaled;
        }
        let (next, actions) = stepped.adopt();
        self.state = next;
        self.remember_incident();
        if from != to {
            crate::metrics::global().transition(&self.target.name, &self.state.phase);
        }
        self.shared.observe(Observation::Step {
            at: now,
            target: self.target.name.clone(),
            event,
            from,
            to,
            state: Box::new(self.state.clone()),
        });
        for action in actions {
            let scene = Scene {
                target: &self.target,
                state: &self.state,
                seat: self.seat.as_ref(),
            };
            self.effects.act(action, &scene).await;
        }
        Applied::Yes
    }
}

/// When the earliest Pending rule's `for` runs out, if that is before
/// `next` (the regular poll): a little after it, so that the data (or the
/// poll-judged `for`) shows the whole duration.
pub(super) fn due_before(
    rules: &[RuleReport],
    now: Time,
    next: tokio::time::Instant,
) -> Option<tokio::time::Instant> {
    let due = rules
        .iter()
        .filter_map(|r| match r.status {
            crate::rules::RuleStatus::Pending { since } => {
                Some(since + chrono::TimeDelta::from_std(r.for_).ok()?)
            }
            _ => None,
        })
        .min()?;
    let wait = (due - now).to_std().unwrap_or_default() + Duration::from_millis(20);
    let at = tokio::time::Instant::now() + wait;
    (at < next).then_some(at)
}

/// Sleep until `at` (forever when `None`; the select arm is guarded).
pub(super) async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether [`Worker::apply`] adopted a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Applied {
    /// Stepped, journaled (when it changed something) and carried out.
    Yes,
    /// The event does not fit the state (a stale answer): dropped.
    NotExpected,
    /// The journal could not be written: nothing was done.
    NotJournaled,
    /// With `[cluster]`: not this node's to act on (standby, etcd lost).
    Refused,
}

/// Publish each rule's value and status as gauges.
pub(super) fn record_rule_metrics(target: &str, rules: &[RuleReport]) {
    for r in rules {
        crate::metrics::global().rule(target, r);
    }
}

pub(super) fn log_step(target: &str, event: &Event, from: &str, to: &str, state: &TargetState) {
    match event {
        Event::VersionObserved { version } => {
            tracing::info!(%target, %version, previous = ?state.previous_version, "version observed")
        }
        Event::Evaluated { rules, .. } => {
            for r in rules {
                tracing::info!(%target, rule = %r.explain(), "rule status");
            }
        }
        _ => {}
    }
    if from != to {
        let why = state.last_note();
        tracing::info!(%target, %from, %to, %why, "transition");
    }
}

impl Worker {
    /// An event from the API: step it once and answer with the state
    /// after, or with why it was refused (nothing done).
    pub(super) async fn command(&mut self, cmd: Command) {
        let cmd = match self.seat.as_mut() {
            None => cmd,
            Some(seat) => match seat.route(cmd, &self.state).await {
                Route::Step(cmd) => cmd,
                Route::TakeOver(shared, cmd) => {
                    self.adopt_shared(*shared);
                    self.took_over(self.shared.now()).await;
                    cmd
                }
                Route::Answered => return,
            },
        };
        let Command { event, reply } = cmd;
        let now = self.shared.now();
        let refuse = |target: &str, reply: oneshot::Sender<_>, why: Refusal| {
            tracing::info!(%target, %why, "api event refused");
            let _ = reply.send(Err(why));
        };
        let stepped = match self.step(&event, now) {
            Ok(r) => r,
            Err(e) => return refuse(&self.target.name, reply, e.into()),
        };
        // A version a human named must exist before the step is adopted:
        // an unknown one is refused with nothing run.
        if let Event::ManualTrigger {
            to_version: Some(v),
            ..
        } = &event
        {
            if let Err(why) = execute::check_version(&self.target.rollback, v).await {
                // The step is dropped.
                return refuse(
                    &self.target.name,
                    reply,
                    Refusal::UnknownVersion(why.to_string()),
                );
            }
        }
        if self.adopt(event, stepped, now).await != Applied::Yes {
            return refuse(&self.target.name, reply, Refusal::NotJournaled);
        }
        self.publish();
        let _ = reply.send(Ok(self.state.clone()));
    }

    /// Share the latest state with the API, with the live evaluation of
    /// every rule (even when the journal refused the step that would have
    /// adopted it: `status` never shows a stale value as current).
    pub(super) fn publish(&self) {
        let mut live = self.state.clone();
        if let Some(rules) = self.latest.iter().cloned().collect::<Option<Vec<_>>>() {
            live.rules = rules;
        }
        let state = &live;
        self.state_tx.send_if_modified(|s| {
            if s != state {
                *s = state.clone();
                true
            } else {
                false
            }
        });
    }

    /// What a standby's poll read of the cluster: mirror the owner's
    /// state, or take the target over.
    pub(super) async fn cluster_seen(&mut self, view: ClusterView) {
        let Some(seat) = self.seat.as_mut() else {
            return;
        };
        match seat.seen(view, &self.state).await {
            Seen::Nothing => {}
            // Not journaled: the owner's journal and etcd hold it.
            Seen::Mirror(state) => self.adopt_shared(*state),
            Seen::TakeOver(shared) => {
                self.adopt_shared(*shared);
                self.took_over(self.shared.now()).await;
            }
        }
    }

    /// Take the state the owner published (mirrored by a standby, or
    /// adopted by a new owner) in place of this node's: it counts for the
    /// global cap and the executor from now on.
    pub(super) fn adopt_shared(&mut self, state: TargetState) {
        self.state = state;
        self.remember_incident();
        if let Some(limit) = &self.shared.live().global_limit {
            limit.count(&self.state);
        }
        self.shared.seat_executor(
            &self.target.name,
            self.worker_id,
            &self.identity,
            &self.state,
        );
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

    /// Run `confirm_command` for `incident` (see
    /// [`Effects::ask_confirm_command`]).
    pub(super) fn ask_confirm_command(&mut self, incident: &decide::Incident) {
        let scene = Scene {
            target: &self.target,
            state: &self.state,
            seat: self.seat.as_ref(),
        };
        self.effects.ask_confirm_command(incident, &scene);
    }

    pub(super) fn remember_incident(&self) {
        if let Some(i) = self.state.incident() {
            let mut all = self
                .shared
                .incidents
                .write()
                .unwrap_or_else(|p| p.into_inner());
            all.insert(i.id.clone(), i.clone());
        }
    }
}
