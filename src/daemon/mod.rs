//! Wiring: one worker per target (read the version, poll sources, evaluate
//! rules, step the machine, journal, carry out actions), ticks, and
//! graceful shutdown.
//!
//! Every step that changes something is journaled (fsync'd) before its
//! actions are carried out; if the journal cannot be written the step is
//! not adopted and nothing is done. Executions run in tracked tasks and feed
//! their result back to their worker as an event, so a target never runs two
//! rollbacks at once. On shutdown a running rollback gets a grace period
//! ([`SHUTDOWN_GRACE`]) to finish; if it does not, its running step's
//! process group is killed and the plan is journaled as "interrupted by
//! shutdown". Only if even that cannot be journaled does the journal still
//! say RollingBack, and recovery verifies instead of running it again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, TargetConfig};
use crate::decide::{self, DecideConfig, Event, Phase, TargetState, Time};
use crate::journal::{Journal, Record};
use crate::sources::alertmanager::AlertStore;

mod background;
pub mod clock;
mod effects;
mod seat;
mod shared;
mod worker;

#[cfg(test)]
mod tests;

pub use crate::handle::{Command, DaemonRequest, Refusal, ReloadError, TargetHandle};
pub use clock::{Clock, SystemClock, TokioClock};
pub use worker::poll_offset;

#[allow(unused_imports)]
use {background::*, effects::*, seat::*, shared::*, worker::*};

/// How long an in-flight rollback may run on after SIGTERM. At its end the
/// running step's process group is killed and the outcome journaled as
/// "interrupted by shutdown"; the daemon exits within
/// [`SHUTDOWN_GRACE`] + [`SHUTDOWN_MARGIN`], inside the unit's
/// `TimeoutStopSec=30s`.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// After the grace: time to kill the step, journal its outcome and stop.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

/// Something a worker did, for observers (the demo's timeline, tests).
#[derive(Debug, Clone)]
pub enum Observation {
    /// A decision step changed something.
    Step {
        /// When.
        at: Time,
        /// Target name.
        target: String,
        /// The event.
        event: Event,
        /// Phase before.
        from: String,
        /// Phase after.
        to: String,
        /// The state after.
        state: Box<TargetState>,
    },
    /// A notification was written to the outbox.
    Mail {
        /// When.
        at: Time,
        /// Target name.
        target: String,
        /// The outbox file.
        path: PathBuf,
        /// The notification kind.
        kind: decide::NotifyKind,
    },
    /// An incident record was written.
    Record {
        /// When.
        at: Time,
        /// Target name.
        target: String,
        /// `incidents/ID.md`.
        path: PathBuf,
    },
}

/// What [`Daemon::build_with`] can replace.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where decisions get the time (default: the wall clock).
    pub clock: Arc<dyn Clock>,
    /// Where Alertmanager's posts land (default: the process's store).
    pub alerts: Arc<AlertStore>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            clock: Arc::new(SystemClock),
            alerts: AlertStore::global(),
        }
    }
}

/// The daemon: built from config, then [`Daemon::run`] until cancelled.
pub struct Daemon {
    config: Config,
    /// The file `config` came from: what a reload re-reads.
    config_path: Option<PathBuf>,
    shared: Arc<Shared>,
    recovered: std::collections::HashMap<String, TargetState>,
    senders: Option<crate::notify::Senders>,
    /// Requests from signals and the API (set when the daemon runs).
    requests: Option<mpsc::Sender<DaemonRequest>>,
    /// Held by [`Daemon::handle`] before `run` takes over.
    requests_rx: Option<mpsc::Receiver<DaemonRequest>>,
    /// One daemon per `state_dir`: held until the daemon is dropped.
    _lock: crate::lock::StateLock,
    /// With `[cluster]`: the etcd session (started when the daemon runs).
    cluster: Option<crate::cluster::Cluster>,
    /// Targets no longer in the config, with their last state and when
    /// they left: handed back if the name returns within
    /// `removed_target_memory`, then forgotten (journaled both ways).
    removed: BTreeMap<String, (TargetState, Time)>,
    /// Removed targets the journal does not know as removed yet (they left
    /// the config while the daemon was stopped): journaled at start.
    unmarked: Vec<String>,
    /// Removed targets that came back while the daemon was stopped:
    /// journaled as restored at start.
    returned: Vec<String>,
}

impl Daemon {
    /// Open the state directory and the journal (replaying it) and build the
    /// HTTP clients. Problems found in the journal are logged.
    pub fn build(config: Config) -> anyhow::Result<Daemon> {
        Daemon::build_with(config, Options::default())
    }

    /// [`Daemon::build`] with another clock or alert store (an in-process
    /// test under tokio's paused time passes a [`TokioClock`] and a store
    /// of its own).
    pub fn build_with(config: Config, options: Options) -> anyhow::Result<Daemon> {
        let Options { clock, alerts } = options;
        let state_dir = config.daemon.state_dir.clone();
        std::fs::create_dir_all(state_dir.join("incidents"))
            .with_context(|| format!("failed to create state directory {}", state_dir.display()))?;
        let lock = crate::lock::StateLock::acquire(&state_dir)?;
        let (mut journal, mut recovery) = Journal::open(&state_dir)
            .with_context(|| format!("failed to open the journal in {}", state_dir.display()))?;
        journal.set_max_bytes(config.daemon.journal_max_size);
        journal.record_metrics(crate::metrics::handle());
        for p in &recovery.problems {
            tracing::warn!(problem = %p, "journal recovery");
        }
        let state_lost = recovery
            .lost
            .as_deref()
            .map(|why| state_lost_message(&state_dir, why));
        crate::metrics::global().state_lost(state_lost.is_some());
        if let Some(message) = &state_lost {
            tracing::error!(%message, "state lost: acting on no target");
        }
        if recovery.entries > 0 {
            tracing::info!(
                entries = recovery.entries,
                targets = recovery.states.len(),
                "journal replayed"
            );
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("failed to build the HTTP client")?;
        let verify_timeout = verify_timeout(config.daemon.poll_interval);
        let verify_client = reqwest::Client::builder()
            .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(verify_timeout)
            .build()
            .context("failed to build the HTTP client")?;
        let live = Live::build(&config, recovery.states.values(), clock.now())?;
        let (observers, _) = broadcast::channel(1024);
        let incidents = std::mem::take(&mut recovery.incidents);
        load_alerts(&alerts, &state_dir, clock.now());
        let links = crate::confirm::links::LinkKeys::open(&state_dir)
            .context("failed to set up the confirmation link key")?;
        let senders = live
            .notifier
            .senders()
            .context("failed to set up notification delivery")?;
        let shared = Arc::new(Shared {
            state_dir,
            journal: Mutex::new(journal),
            client,
            verify_client,
            live: RwLock::new(Arc::new(live)),
            observers,
            tracker: TaskTracker::new(),
            incidents: Arc::new(RwLock::new(incidents)),
            links: Arc::new(links),
            fleet: Mutex::new(BTreeMap::new()),
            targets: config.targets.len().into(),
            heartbeats: Mutex::new(BTreeMap::new()),
            journal_error: Arc::new(RwLock::new(None)),
            hard_stop: CancellationToken::new(),
            clock: clock.clone(),
            alerts,
            executors: Mutex::new(BTreeMap::new()),
            state_lost,
        });
        // Targets the journal knows that the config no longer names: kept
        // for `removed_target_memory` from when they left.
        let now = clock.now();
        let mut removed = BTreeMap::new();
        let mut unmarked = Vec::new();
        let names: Vec<String> = recovery.states.keys().cloned().collect();
        let mut returned = Vec::new();
        for name in names {
            if config.targets.iter().any(|t| t.name == name) {
                // Back in the config while the daemon was stopped.
                if recovery.removed.contains_key(&name) {
                    returned.push(name);
                }
                continue;
            }
            let Some(state) = recovery.states.remove(&name) else {
                continue;
            };
            let at = match recovery.removed.get(&name) {
                Some(at) => *at,
                None => {
                    unmarked.push(name.clone());
                    now
                }
            };
            removed.insert(name, (state, at));
        }
        let (tx, rx) = mpsc::channel(4);
        Ok(Daemon {
            config,
            config_path: None,
            shared,
            recovered: recovery.states,
            senders: Some(senders),
            requests: Some(tx),
            requests_rx: Some(rx),
            _lock: lock,
            cluster: None,
            removed,
            unmarked,
            returned,
        })
    }

    /// Remember the file the config came from, so that a reload re-reads it.
    pub fn with_config_path(mut self, path: &Path) -> Daemon {
        self.config_path = Some(path.to_path_buf());
        self
    }

    /// A handle to send reload and status requests (signals use it).
    pub fn handle(&self) -> DaemonHandle {
        DaemonHandle {
            tx: self.requests.clone().expect("set at build"),
        }
    }

    /// Watch what the workers do.
    pub fn subscribe(&self) -> broadcast::Receiver<Observation> {
        self.shared.observers.subscribe()
    }

    /// The state directory (journal, outbox, incidents).
    pub fn state_dir(&self) -> &Path {
        &self.shared.state_dir
    }

    /// Run until `cancel` fires, then drain: in-flight rollbacks get
    /// [`SHUTDOWN_GRACE`] to finish.
    ///
    /// systemd is told READY=1 only once the journal is recovered (in
    /// [`Daemon::build`]) and the API listens; STATUS= carries a one-line
    /// summary; the watchdog is fed only while every worker has finished a
    /// poll within its budget, so a stuck worker gets the service restarted.
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        self.bind().await?.run(cancel).await
    }

    /// Read the API token and bind the API's socket (`[daemon] listen`;
    /// port 0 picks a free one, [`Bound::local_addr`] says which). Nothing
    /// runs until [`Bound::run`].
    pub async fn bind(self) -> anyhow::Result<Bound> {
        let token = match &self.config.daemon.api_token_file {
            Some(path) => Some(crate::api::auth::read_token(path)?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(self.config.daemon.listen)
            .await
            .with_context(|| format!("failed to listen on {}", self.config.daemon.listen))?;
        let addr = listener
            .local_addr()
            .context("failed to read the bound address")?;
        Ok(Bound {
            daemon: self,
            listener,
            token,
            addr,
        })
    }

    async fn serve(
        mut self,
        listener: tokio::net::TcpListener,
        token: Option<String>,
        addr: std::net::SocketAddr,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        // In state-lost mode nothing is written on top of what is left.
        if self.shared.state_lost.is_none() {
            self.shared
                .journal(Record::Started {
                    version: env!("CARGO_PKG_VERSION").to_string(),
                })
                .await?;
            for target in std::mem::take(&mut self.unmarked) {
                tracing::info!(%target, "target no longer in the config: its state is kept for removed_target_memory");
                self.shared.journal(Record::Removed { target }).await?;
            }
            for target in std::mem::take(&mut self.returned) {
                self.shared.journal(Record::Restored { target }).await?;
            }
            self.forget_removed().await;
        }
        // Steps a previous life left running (it died mid-rollback): killed
        // and logged at warn, each naming its incident.
        let orphans = crate::run::process::orphans_from_previous_run(&self.shared.state_dir).await;
        crate::metrics::global().orphaned_steps(orphans.len());
        self.shared
            .tracker
            .spawn(housekeeping(self.shared.clone(), cancel.clone()));
        self.shared
            .tracker
            .spawn(watch_servers(self.shared.clone(), cancel.clone()));
        if let Some(c) = &self.config.cluster {
            // The session outlives SIGTERM: a plan still running in the
            // shutdown grace keeps its lease (its next step is fenced by
            // it) until `shutdown()` revokes it at exit.
            let session = CancellationToken::new();
            let cluster = crate::cluster::Cluster::spawn(
                c,
                &TaskTracker::new(),
                session,
                crate::metrics::handle(),
            )
            .context("failed to set up the etcd client ([cluster])")?;
            tracing::info!(node = %cluster.node(), "cluster member: acting only on the targets this node owns");
            self.shared.tracker.spawn(watch_etcd(
                self.shared.clone(),
                cluster.clone(),
                cancel.clone(),
            ));
            self.cluster = Some(cluster);
        }
        let mut senders_cancel = cancel.child_token();
        if let Some(senders) = self.senders.take() {
            // Delivery runs beside the workers; it also sends what an
            // earlier run left in the outbox.
            senders.spawn(&self.shared.tracker, senders_cancel.clone());
        }
        if let Some(message) = self.shared.state_lost.clone() {
            // Once per start: the admin must decide (docs/systemd.md).
            let shared = self.shared.clone();
            self.shared.tracker.spawn(async move {
                notify_about(
                    &shared,
                    decide::NotifyKind::StateLost,
                    "rollbackd",
                    &message,
                )
                .await;
            });
        }
        let mut workers: BTreeMap<String, WorkerSlot> = BTreeMap::new();
        for target in self.config.targets.clone() {
            let state = self.recovered.remove(&target.name);
            let slot = self.spawn_worker(&target, state, &cancel);
            workers.insert(target.name.clone(), slot);
        }
        let view = Arc::new(RwLock::new(Arc::new(self.view(&workers, &[]))));
        let reload_tx = self.requests.clone().expect("set at build");
        let mut requests = self.requests_rx.take().expect("run once");
        let api = crate::api::ApiState {
            view: view.clone(),
            incidents: self.shared.incidents.clone(),
            token,
            alerts: self.shared.alerts.clone(),
            links: self.shared.links.clone(),
            journal_error: self.shared.journal_error.clone(),
            requests: Some(reload_tx),
            state_lost: self.shared.state_lost.clone(),
        };
        tracing::info!(%addr, "api listening");
        let server = tokio::spawn(crate::api::serve(listener, Arc::new(api), cancel.clone()));
        tracing::info!(
            targets = self.config.targets.len(),
            poll_interval = %crate::util::fmt_duration(self.config.daemon.poll_interval),
            dry_run = self.config.daemon.dry_run,
            "rollbackd watching"
        );
        let mut status_line = summary(&view);
        let _ = sd_notify::notify(
            false,
            &[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&status_line),
            ],
        );
        let mut watchdog_usec = 0;
        let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
        let period = if watchdog {
            Duration::from_micros(watchdog_usec / 2).max(Duration::from_millis(100))
        } else {
            Duration::from_secs(1)
        };
        let mut tick = tokio::time::interval(period.min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retiring: Vec<String> = Vec::new();
        let mut stuck_reported = false;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(request) = requests.recv() => match request {
                    DaemonRequest::Reload { reply } => {
                        let outcome = self
                            .reload(&cancel, &mut workers, &mut retiring, &view, &mut senders_cancel)
                            .await;
                        let _ = reply.send(outcome);
                    }
                    DaemonRequest::DumpStatus => dump_status(&view),
                    DaemonRequest::Targets { reply } => {
                        let _ = reply.send(workers.values().map(|w| w.handle.clone()).collect());
                    }
                },
                _ = tick.tick() => {
                    // Targets removed by a reload while an incident was open
                    // stop once it has ended.
                    let before = retiring.len();
                    let mut retired = Vec::new();
                    retiring.retain(|name| {
                        let open = workers.get(name).is_some_and(|w| {
                            !matches!(w.handle.state.borrow().phase, Phase::Watching | Phase::Done { .. })
                        });
                        if !open {
                            if let Some(w) = workers.remove(name) {
                                tracing::info!(target = %name, "removed target stopped: its incident has ended");
                                retired.push((name.clone(), w.handle.state.borrow().clone()));
                                forget_metrics(name, &w.handle);
                                w.cancel.cancel();
                            }
                        }
                        open
                    });
                    for (name, state) in retired.drain(..) {
                        self.remember_removed(name, state).await;
                    }
                    self.forget_removed().await;
                    if retiring.len() != before {
                        *view.write().unwrap_or_else(|p| p.into_inner()) =
                            Arc::new(self.view(&workers, &retiring));
                    }
                    let line = summary(&view);
                    if line != status_line {
                        status_line = line;
                        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&status_line)]);
                    }
                    if watchdog {
                        let stuck = self.shared.stuck_workers();
                        if stuck.is_empty() {
                            stuck_reported = false;
                            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                        } else if !stuck_reported {
                            stuck_reported = true;
                            tracing::error!(stuck = %stuck.join(", "), "workers have not finished a poll within their budget; not feeding the systemd watchdog");
                        }
                    }
                }
            }
        }
        tracing::info!(grace = %crate::util::fmt_duration(SHUTDOWN_GRACE), "shutting down");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let stop_at = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let hard_stop = self.shared.hard_stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(stop_at).await;
            hard_stop.cancel();
        });
        for (_, w) in workers {
            if let Err(e) = w.join.await {
                tracing::error!(error = %e, "worker ended abnormally");
            }
        }
        match server.await {
            Ok(Err(e)) => tracing::error!(error = %e, "api server failed"),
            Err(e) => tracing::error!(error = %e, "api server ended abnormally"),
            Ok(Ok(())) => {}
        }
        self.shared.tracker.close();
        if tokio::time::timeout_at(stop_at + SHUTDOWN_MARGIN, self.shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks still running after the grace period; exiting");
        }
        if let Some(cluster) = &self.cluster {
            // Hand the targets over at once instead of after lease_ttl.
            cluster.shutdown().await;
        }
        self.shared.alerts.flush();
        if self.shared.state_lost.is_none() {
            self.shared.journal(Record::Stopped).await?;
        }
        Ok(())
    }

    /// A target left the config (its incident, if any, has ended): keep
    /// its state for `removed_target_memory`, journaled so that a restart
    /// keeps it too.
    async fn remember_removed(&mut self, name: String, state: TargetState) {
        let at = self.shared.now();
        let record = Record::Removed {
            target: name.clone(),
        };
        if let Err(e) = self.shared.journal(record).await {
            tracing::warn!(target = %name, error = %format!("{e:#}"), "cannot journal the removal; its state is kept until the next restart");
        }
        self.removed.insert(name, (state, at));
    }

    /// Forget the removed targets kept longer than `removed_target_memory`.
    async fn forget_removed(&mut self) {
        let now = self.shared.now();
        let memory = chrono::Duration::from_std(self.config.daemon.removed_target_memory)
            .unwrap_or(chrono::Duration::MAX);
        let due: Vec<String> = self
            .removed
            .iter()
            .filter(|(_, (_, at))| now - *at >= memory)
            .map(|(n, _)| n.clone())
            .collect();
        for target in due {
            let record = Record::Forgotten {
                target: target.clone(),
            };
            // Kept (and tried again) until the journal says so.
            if self.shared.journal(record).await.is_ok() {
                tracing::info!(%target, memory = %crate::util::fmt_duration(self.config.daemon.removed_target_memory), "removed target forgotten");
                self.removed.remove(&target);
            }
        }
    }

    /// The kept state of `name`, if it left the config less than
    /// `removed_target_memory` ago (journaled as restored).
    async fn restore_removed(&mut self, name: &str) -> Option<TargetState> {
        self.forget_removed().await;
        let (state, at) = self.removed.remove(name)?;
        let record = Record::Restored {
            target: name.to_string(),
        };
        if let Err(e) = self.shared.journal(record).await {
            tracing::warn!(target = %name, error = %format!("{e:#}"), "cannot journal the restore");
        }
        tracing::info!(target = %name, removed_at = %at, phase = state.phase.name(), "target back in the config: its state is restored (pause, cooldown, loop guard, incident counter)");
        Some(state)
    }

    /// Start one target's worker under its own token (a reload may stop it).
    fn spawn_worker(
        &self,
        target: &TargetConfig,
        state: Option<TargetState>,
        cancel: &CancellationToken,
    ) -> WorkerSlot {
        let (worker, handle, control) = Worker::build(
            &self.config,
            target,
            state,
            self.shared.clone(),
            self.cluster.clone(),
        );
        let token = cancel.child_token();
        WorkerSlot {
            handle,
            control,
            cancel: token.clone(),
            join: tokio::spawn(worker.run(token)),
        }
    }

    /// What the API serves: targets in config order (then those kept until
    /// their incident ends), windows, dry-run.
    fn view(
        &self,
        workers: &BTreeMap<String, WorkerSlot>,
        retiring: &[String],
    ) -> crate::api::View {
        let order: Vec<String> = self
            .config
            .targets
            .iter()
            .map(|t| t.name.clone())
            .chain(retiring.iter().cloned())
            .collect();
        crate::api::View {
            targets: workers
                .iter()
                .map(|(n, w)| (n.clone(), w.handle.clone()))
                .collect(),
            order,
            windows: self.config.windows.clone(),
            dry_run: self.config.daemon.dry_run,
        }
    }

    /// Re-read the config file and apply it without a restart (SIGHUP,
    /// `rollbackd reload`, `POST /v1/reload`). An invalid file changes
    /// nothing: every problem is logged as `check` prints it.
    async fn reload(
        &mut self,
        cancel: &CancellationToken,
        workers: &mut BTreeMap<String, WorkerSlot>,
        retiring: &mut Vec<String>,
        view: &Arc<RwLock<Arc<crate::api::View>>>,
        senders_cancel: &mut CancellationToken,
    ) -> Result<String, ReloadError> {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
        let outcome = self
            .reload_inner(cancel, workers, retiring, view, senders_cancel)
            .await;
        let m = crate::metrics::global();
        match &outcome {
            Ok(summary) => {
                m.config_loaded(true, self.shared.now());
                tracing::info!(%summary, "configuration reloaded");
            }
            Err(e) => {
                m.config_loaded(false, self.shared.now());
                m.config_reload_failed();
                for line in e.to_string().lines() {
                    tracing::error!(problem = %line, "reload refused; the running configuration is kept");
                }
            }
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        outcome
    }

    async fn reload_inner(
        &mut self,
        cancel: &CancellationToken,
        workers: &mut BTreeMap<String, WorkerSlot>,
        retiring: &mut Vec<String>,
        view: &Arc<RwLock<Arc<crate::api::View>>>,
        senders_cancel: &mut CancellationToken,
    ) -> Result<String, ReloadError> {
        let Some(path) = self.config_path.clone() else {
            return Err(ReloadError::NoFile);
        };
        let new = tokio::task::spawn_blocking(move || crate::config::load(&path))
            .await
            .map_err(|e| ReloadError::Setup(format!("reload task failed: {e}")))??;
        let old = &self.config.daemon;
        for (key, changed) in [
            ("state_dir", old.state_dir != new.daemon.state_dir),
            ("listen", old.listen != new.daemon.listen),
            (
                "api_token_file",
                old.api_token_file != new.daemon.api_token_file,
            ),
        ] {
            if changed {
                tracing::warn!(
                    key,
                    "daemon.{key} changed: it takes effect at the next restart"
                );
            }
        }
        let states: Vec<TargetState> = workers
            .values()
            .map(|w| w.handle.state.borrow().clone())
            .collect();
        let mut live = Live::build(&new, states.iter(), self.shared.now())
            .map_err(|e| ReloadError::Setup(format!("{e:#}")))?;
        live.keep_clients(&self.shared.live(), &self.config, &new);
        let notify_changed = format!("{:?}", self.config.notify) != format!("{:?}", new.notify);
        if notify_changed {
            let senders = live.notifier.senders().map_err(|e| {
                ReloadError::Setup(format!("failed to set up notification delivery: {e}"))
            })?;
            senders_cancel.cancel();
            *senders_cancel = cancel.child_token();
            senders.spawn(&self.shared.tracker, senders_cancel.clone());
        }
        *self.shared.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
        self.config = new;
        let (mut added, mut changed) = (0, 0);
        for target in self.config.targets.clone() {
            retiring.retain(|n| n != &target.name);
            match workers.get(&target.name) {
                Some(w) => {
                    let reconfig = Reconfig {
                        decide: DecideConfig::from_config(&self.config, &target),
                        target: target.clone(),
                    };
                    if w.control.send(reconfig).await.is_ok() {
                        changed += 1;
                    }
                }
                None => {
                    let kept = self.restore_removed(&target.name).await;
                    let slot = self.spawn_worker(&target, kept, cancel);
                    workers.insert(target.name.clone(), slot);
                    added += 1;
                }
            }
        }
        let (mut removed, mut kept) = (0, Vec::new());
        let names: Vec<String> = workers.keys().cloned().collect();
        for name in names {
            if self.config.targets.iter().any(|t| t.name == name) || retiring.contains(&name) {
                continue;
            }
            let open = {
                let w = &workers[&name];
                let state = w.handle.state.borrow();
                (!matches!(state.phase, Phase::Watching | Phase::Done { .. }))
                    .then(|| state.phase.name().to_string())
            };
            match open {
                Some(phase) => {
                    tracing::warn!(target = %name, %phase, "target removed from the config but its incident is open: kept until the incident ends");
                    retiring.push(name.clone());
                    kept.push(name);
                }
                None => {
                    if let Some(w) = workers.remove(&name) {
                        forget_metrics(&name, &w.handle);
                        w.cancel.cancel();
                        let state = w.handle.state.borrow().clone();
                        self.remember_removed(name.clone(), state).await;
                    }
                    removed += 1;
                }
            }
        }
        self.shared.targets.store(
            self.config.targets.len(),
            std::sync::atomic::Ordering::Relaxed,
        );
        *view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(self.view(workers, retiring));
        let mut summary = format!(
            "{} targets: {added} added, {removed} removed, {changed} updated",
            self.config.targets.len()
        );
        if !kept.is_empty() {
            summary.push_str(&format!(
                ", kept until their incident ends: {}",
                kept.join(", ")
            ));
        }
        if notify_changed {
            summary.push_str("; notification settings changed");
        }
        Ok(summary)
    }
}

/// A target left the config: its series leave `/metrics`.
fn forget_metrics(name: &str, handle: &TargetHandle) {
    let rules: Vec<String> = handle
        .state
        .borrow()
        .rules
        .iter()
        .map(|r| r.rule.clone())
        .collect();
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    crate::metrics::global().target_removed(name, &rules);
}

/// A daemon whose API socket is bound: [`Bound::local_addr`] is known
/// before anything runs (tests bind `127.0.0.1:0`).
pub struct Bound {
    daemon: Daemon,
    listener: tokio::net::TcpListener,
    token: Option<String>,
    addr: std::net::SocketAddr,
}

impl Bound {
    /// The address the API listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// A handle to send reload, status and target requests.
    pub fn handle(&self) -> DaemonHandle {
        self.daemon.handle()
    }

    /// Watch what the workers do.
    pub fn subscribe(&self) -> broadcast::Receiver<Observation> {
        self.daemon.subscribe()
    }

    /// Run until `cancel` fires, then drain (see [`Daemon::run`]).
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let Bound {
            daemon,
            listener,
            token,
            addr,
        } = self;
        daemon.serve(listener, token, addr, cancel).await
    }
}

/// A running worker as the daemon holds it.
struct WorkerSlot {
    handle: TargetHandle,
    control: mpsc::Sender<Reconfig>,
    cancel: CancellationToken,
    join: tokio::task::JoinHandle<()>,
}

/// Sends [`DaemonRequest`]s to a running daemon.
#[derive(Debug, Clone)]
pub struct DaemonHandle {
    tx: mpsc::Sender<DaemonRequest>,
}

impl DaemonHandle {
    /// Reload the config; `Err` lists the problems (nothing changed).
    pub async fn reload(&self) -> Result<String, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(DaemonRequest::Reload { reply })
            .await
            .map_err(|_| ReloadError::NotRunning("the daemon is not running"))?;
        answer
            .await
            .map_err(|_| ReloadError::NotRunning("the daemon stopped during the reload"))?
    }

    /// Log every target's state.
    pub async fn dump_status(&self) {
        let _ = self.tx.send(DaemonRequest::DumpStatus).await;
    }

    /// The handles of every running worker (empty when the daemon is not
    /// running): what the API holds, for in-process tests and tools.
    pub async fn targets(&self) -> Vec<TargetHandle> {
        let (reply, answer) = oneshot::channel();
        if self
            .tx
            .send(DaemonRequest::Targets { reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// The handle of target `name`, once the daemon runs.
    pub async fn target(&self, name: &str) -> Option<TargetHandle> {
        self.targets().await.into_iter().find(|h| h.name == name)
    }
}

/// "watching 12 targets, 1 incident awaiting confirmation".
fn summary(view: &RwLock<Arc<crate::api::View>>) -> String {
    let view = view.read().unwrap_or_else(|p| p.into_inner()).clone();
    let mut phases: BTreeMap<&'static str, usize> = BTreeMap::new();
    for h in view.targets.values() {
        let name = match h.state.borrow().phase {
            Phase::AwaitingConfirmation { .. } => "awaiting confirmation",
            Phase::RollingBack { .. } => "rolling back",
            Phase::Verifying { .. } => "verifying",
            _ => continue,
        };
        *phases.entry(name).or_default() += 1;
    }
    let mut line = format!("watching {} targets", view.targets.len());
    for (phase, n) in phases {
        line.push_str(&format!(
            ", {n} incident{} {phase}",
            if n == 1 { "" } else { "s" }
        ));
    }
    line
}

/// SIGUSR1: every target's phase, version and rules, to the log.
fn dump_status(view: &RwLock<Arc<crate::api::View>>) {
    let view = view.read().unwrap_or_else(|p| p.into_inner()).clone();
    tracing::info!(summary = %summary_of(&view), "status (SIGUSR1)");
    for name in &view.order {
        let Some(h) = view.targets.get(name) else {
            continue;
        };
        let s = h.state.borrow().clone();
        let rules: Vec<String> = s.rules.iter().map(|r| r.explain()).collect();
        tracing::info!(
            target = %name,
            phase = s.phase.name(),
            version = s.version.as_deref().unwrap_or("unknown"),
            paused = s.paused.is_some(),
            note = s.last_note(),
            rules = %rules.join("; "),
            "status"
        );
    }
}

fn summary_of(view: &Arc<crate::api::View>) -> String {
    summary(&RwLock::new(view.clone()))
}

/// What status, the log and the notification say in state-lost mode: why,
/// and how an operator gets out of it (docs/systemd.md).
fn state_lost_message(state_dir: &Path, why: &str) -> String {
    let dir = state_dir.display();
    format!(
        "rollbackd could not read its state in {dir} and acts on no target (no rollback, no \
         incident, no pause is acted on) rather than act from an empty memory: {why}. To start \
         afresh, stop rollbackd, move the state files aside (mkdir {dir}/lost && mv \
         {dir}/snapshot*.json* {dir}/journal*.jsonl {dir}/lost/) and start it again; open \
         incidents are in {dir}/incidents/, and pauses must be set again"
    )
}

/// Reload the alerts Alertmanager reported before a restart
/// (`state_dir/alerts.json`) and save every change there from now on.
fn load_alerts(store: &Arc<AlertStore>, state_dir: &Path, now: Time) {
    store.start_flusher();
    match store.persist_in(state_dir, now) {
        Ok(0) => {}
        Ok(firing) => tracing::info!(firing, "alerts reloaded from the previous run"),
        Err(e) => tracing::warn!(error = %e, "alert store not reloaded"),
    }
}
