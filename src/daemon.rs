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
use chrono::Utc;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, TargetConfig};
use crate::decide::{self, Action, DecideConfig, Event, Incident, Phase, TargetState, Time};
use crate::execute::{self, Vars};
use crate::journal::{Entry, Journal, Record};
use crate::notify::{record, Notifier};
use crate::rules::{RuleEval, RuleReport};
use crate::sources::prometheus::Prometheus;
use crate::sources::Source;
use crate::version::VersionReader;

pub use crate::handle::{Command, DaemonRequest, TargetHandle};

/// How long an in-flight rollback may run on after SIGTERM. At its end the
/// running step's process group is killed and the outcome journaled as
/// "interrupted by shutdown"; the daemon exits within
/// [`SHUTDOWN_GRACE`] + [`SHUTDOWN_MARGIN`], inside the unit's
/// `TimeoutStopSec=30s`.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// After the grace: time to kill the step, journal its outcome and stop.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

/// How often the daemon checks that its journal is still the file in
/// `state_dir` (besides before every append).
const JOURNAL_CHECK_INTERVAL: Duration = Duration::from_secs(5);

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

/// What a reload can change for every worker at once.
struct Live {
    poll_interval: Duration,
    notifier: Notifier,
    /// One client per Prometheus server (pool, auth, timeout, concurrency
    /// bound, reachability), shared by every rule that asks it: `default`
    /// is `[prometheus]`, the others `[prometheus.servers.NAME]`.
    prometheus: BTreeMap<String, Prometheus>,
    /// Each server as its "unreachable" notice names it.
    servers: Vec<decide::server_watch::Server>,
    /// `public_url`, base of the links in confirmation emails.
    public_url: Option<url::Url>,
    /// `[daemon] max_rollbacks_per_hour` across all targets.
    global_limit: Option<Arc<GlobalLimit>>,
    /// The longest Prometheus `timeout`, for the watchdog's poll budget.
    prometheus_timeout: Duration,
}

impl Live {
    /// The settings of `config`; `states` count toward the global cap.
    fn build<'a>(
        config: &Config,
        states: impl Iterator<Item = &'a TargetState>,
    ) -> anyhow::Result<Live> {
        let configs: Vec<(&str, &crate::config::PrometheusConfig)> = config
            .prometheus
            .iter()
            .map(|p| (crate::config::DEFAULT_PROMETHEUS, p))
            .chain(
                config
                    .prometheus_servers
                    .iter()
                    .map(|(n, p)| (n.as_str(), p)),
            )
            .collect();
        let mut prometheus = BTreeMap::new();
        for (name, p) in &configs {
            let client = Prometheus::build_named(name, p)
                .with_context(|| format!("failed to set up the client of Prometheus {name}"))?;
            prometheus.insert(name.to_string(), client);
        }
        let servers = configs
            .iter()
            .map(|(name, p)| decide::server_watch::Server {
                name: name.to_string(),
                url: p.url.to_string(),
                blind_after: p.blind_after,
                rules: server_users(config, name),
            })
            .collect();
        Ok(Live {
            poll_interval: config.daemon.poll_interval,
            notifier: Notifier::build(&config.notify, config.daemon.public_url.clone()),
            prometheus,
            servers,
            public_url: config.daemon.public_url.clone(),
            prometheus_timeout: configs
                .iter()
                .map(|(_, p)| p.timeout)
                .max()
                .unwrap_or_default(),
            global_limit: config
                .daemon
                .max_rollbacks_per_hour
                .map(|cap| Arc::new(GlobalLimit::build(cap, states, Utc::now()))),
        })
    }
}

impl Live {
    /// The client of server `name` (`None`: `[prometheus]`).
    fn client(&self, name: Option<&str>) -> Option<&Prometheus> {
        self.prometheus
            .get(name.unwrap_or(crate::config::DEFAULT_PROMETHEUS))
    }

    /// After a reload: keep the clients of servers whose config did not
    /// change (their pools, their reachability, and the history of the
    /// rules that ask them).
    fn keep_clients(&mut self, old: &Live, old_config: &Config, new_config: &Config) {
        for (name, client) in self.prometheus.iter_mut() {
            let same = old_config.prometheus_server(Some(name))
                == new_config.prometheus_server(Some(name));
            if let (true, Some(kept)) = (same, old.prometheus.get(name)) {
                *client = kept.clone();
            }
        }
    }
}

/// `target/rule` of every rule that asks Prometheus server `name`, and
/// `target (version_query)` for the version.
fn server_users(config: &Config, name: &str) -> Vec<String> {
    let asks = |server: &Option<String>| {
        server
            .as_deref()
            .unwrap_or(crate::config::DEFAULT_PROMETHEUS)
            == name
    };
    let mut users = Vec::new();
    for t in &config.targets {
        for r in &t.rules {
            if let crate::config::SourceSpec::Prometheus(p) = &r.source {
                if asks(&p.server) {
                    users.push(format!("{}/{}", t.name, r.name));
                }
            }
        }
        if let Some(crate::config::VersionSource::Query { server, .. }) = &t.version {
            if asks(server) {
                users.push(format!("{} (version_query)", t.name));
            }
        }
    }
    users
}

/// The server a target's `version_query` asks.
fn version_server(target: &TargetConfig) -> Option<&str> {
    match &target.version {
        Some(crate::config::VersionSource::Query { server, .. }) => server.as_deref(),
        _ => None,
    }
}

/// What every worker shares.
struct Shared {
    state_dir: PathBuf,
    journal: Mutex<Journal>,
    client: reqwest::Client,
    verify_client: reqwest::Client,
    /// Settings a reload replaces.
    live: RwLock<Arc<Live>>,
    observers: broadcast::Sender<Observation>,
    tracker: TaskTracker,
    /// Every incident seen, for the API (seeded from the journal).
    incidents: Arc<RwLock<BTreeMap<String, Incident>>>,
    /// Signs the approve/reject links of confirmation emails.
    links: Arc<crate::api::links::LinkKeys>,
    /// Each target's breach under way (its earliest Pending/Breached rule's
    /// start), shared so every step sees the others (blast-radius guard).
    fleet: Mutex<BTreeMap<String, Time>>,
    /// How many targets are watched.
    targets: std::sync::atomic::AtomicUsize,
    /// When each worker last finished a poll, and how long a poll may take
    /// before the worker counts as stuck (2 x interval + its longest source
    /// timeout): the systemd watchdog is fed only while all are fresh.
    heartbeats: Mutex<BTreeMap<String, (std::time::Instant, Duration)>>,
    /// The last journal write error while the journal is failing; shown by
    /// `status` as a banner, cleared by the next successful write.
    journal_error: Arc<RwLock<Option<String>>>,
    /// Cancelled when the shutdown grace is over: running plans are
    /// killed and journaled as interrupted.
    hard_stop: CancellationToken,
}

impl Shared {
    /// Workers that have not finished a poll within their budget.
    fn stuck_workers(&self) -> Vec<String> {
        let now = std::time::Instant::now();
        self.heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, (at, budget))| now.duration_since(*at) > *budget)
            .map(|(name, (at, _))| format!("{name} (last poll {:?} ago)", now.duration_since(*at)))
            .collect()
    }

    /// The settings in force now.
    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Append to the journal (fsync) off the async threads.
    async fn journal(self: &Arc<Self>, record: Record) -> anyhow::Result<()> {
        let shared = self.clone();
        let entry = Entry {
            at: Utc::now(),
            seq: 0,
            record,
        };
        let written = tokio::task::spawn_blocking(move || {
            let mut journal = shared.journal.lock().unwrap_or_else(|p| p.into_inner());
            journal
                .append(&entry)
                .with_context(|| format!("failed to append to {}", journal.path().display()))
        })
        .await
        .context("journal task panicked")
        .and_then(|r| r);
        let mut health = self
            .journal_error
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match &written {
            Ok(()) if health.is_some() => {
                tracing::info!("journal writable again");
                *health = None;
            }
            Ok(()) => {}
            Err(e) => *health = Some(format!("{e:#}")),
        }
        written
    }

    /// Record this target's breach start (or its end) and return what the
    /// other targets show, for the blast-radius guard.
    fn fleet(&self, target: &str, rules: &[RuleReport]) -> decide::Fleet {
        let mut all = self.fleet.lock().unwrap_or_else(|p| p.into_inner());
        match decide::breach_start(rules) {
            Some(since) => {
                all.insert(target.to_string(), since);
            }
            None => {
                all.remove(target);
            }
        }
        decide::Fleet {
            targets: self.targets.load(std::sync::atomic::Ordering::Relaxed),
            breaching: all
                .iter()
                .filter(|(t, _)| t.as_str() != target)
                .map(|(t, since)| decide::FleetBreach {
                    target: t.clone(),
                    since: *since,
                })
                .collect(),
        }
    }

    fn observe(&self, o: Observation) {
        // No receivers is fine.
        let _ = self.observers.send(o);
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
}

impl Daemon {
    /// Open the state directory and the journal (replaying it) and build the
    /// HTTP clients. Problems found in the journal are logged.
    pub fn build(config: Config) -> anyhow::Result<Daemon> {
        let state_dir = config.daemon.state_dir.clone();
        std::fs::create_dir_all(state_dir.join("incidents"))
            .with_context(|| format!("failed to create state directory {}", state_dir.display()))?;
        let lock = crate::lock::StateLock::acquire(&state_dir)?;
        let (mut journal, mut recovery) = Journal::open(&state_dir)
            .with_context(|| format!("failed to open the journal in {}", state_dir.display()))?;
        journal.set_max_bytes(config.daemon.journal_max_size);
        for p in &recovery.problems {
            tracing::warn!(problem = %p, "journal recovery");
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
        let live = Live::build(&config, recovery.states.values())?;
        let (observers, _) = broadcast::channel(1024);
        let incidents = std::mem::take(&mut recovery.incidents);
        load_alerts(&state_dir);
        let links = crate::api::links::LinkKeys::open(&state_dir)
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
        });
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
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        self.shared
            .journal(Record::Started {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .await?;
        // Steps a previous life left running (it died mid-rollback): killed
        // and logged at warn, each naming its incident.
        let orphans = execute::process::orphans_from_previous_run(&self.shared.state_dir).await;
        crate::metrics::global().orphaned_steps(orphans.len());
        self.shared
            .tracker
            .spawn(housekeeping(self.shared.clone(), cancel.clone()));
        self.shared
            .tracker
            .spawn(watch_servers(self.shared.clone(), cancel.clone()));
        let token = match &self.config.daemon.api_token_file {
            Some(path) => Some(crate::api::auth::read_token(path)?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(self.config.daemon.listen)
            .await
            .with_context(|| format!("failed to listen on {}", self.config.daemon.listen))?;
        let mut senders_cancel = cancel.child_token();
        if let Some(senders) = self.senders.take() {
            // Delivery runs beside the workers; it also sends what an
            // earlier run left in the outbox.
            senders.spawn(&self.shared.tracker, senders_cancel.clone());
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
            alerts: crate::sources::alertmanager::AlertStore::global(),
            links: self.shared.links.clone(),
            journal_error: self.shared.journal_error.clone(),
            requests: Some(reload_tx),
        };
        let addr = listener
            .local_addr()
            .context("failed to read the bound address")?;
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
                },
                _ = tick.tick() => {
                    // Targets removed by a reload while an incident was open
                    // stop once it has ended.
                    let before = retiring.len();
                    retiring.retain(|name| {
                        let open = workers.get(name).is_some_and(|w| {
                            !matches!(w.handle.state.borrow().phase, Phase::Watching | Phase::Done { .. })
                        });
                        if !open {
                            if let Some(w) = workers.remove(name) {
                                tracing::info!(target = %name, "removed target stopped: its incident has ended");
                                forget_metrics(name, &w.handle);
                                w.cancel.cancel();
                            }
                        }
                        open
                    });
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
        crate::sources::alertmanager::AlertStore::global().flush();
        self.shared.journal(Record::Stopped).await?;
        Ok(())
    }

    /// Start one target's worker under its own token (a reload may stop it).
    fn spawn_worker(
        &self,
        target: &TargetConfig,
        state: Option<TargetState>,
        cancel: &CancellationToken,
    ) -> WorkerSlot {
        let (worker, handle, control) =
            Worker::build(&self.config, target, state, self.shared.clone());
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
    ) -> Result<String, String> {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
        let outcome = self
            .reload_inner(cancel, workers, retiring, view, senders_cancel)
            .await;
        let m = crate::metrics::global();
        match &outcome {
            Ok(summary) => {
                m.config_loaded(true, Utc::now());
                tracing::info!(%summary, "configuration reloaded");
            }
            Err(e) => {
                m.config_loaded(false, Utc::now());
                m.config_reload_failed();
                for line in e.lines() {
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
    ) -> Result<String, String> {
        let Some(path) = self.config_path.clone() else {
            return Err(
                "this daemon was not started from a config file; nothing to re-read".into(),
            );
        };
        let new = tokio::task::spawn_blocking(move || crate::config::load(&path))
            .await
            .map_err(|e| format!("reload task failed: {e}"))?
            .map_err(|errors| errors.to_string())?;
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
        let mut live = Live::build(&new, states.iter()).map_err(|e| format!("{e:#}"))?;
        live.keep_clients(&self.shared.live(), &self.config, &new);
        let notify_changed = format!("{:?}", self.config.notify) != format!("{:?}", new.notify);
        if notify_changed {
            let senders = live
                .notifier
                .senders()
                .map_err(|e| format!("failed to set up notification delivery: {e}"))?;
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
                    let slot = self.spawn_worker(&target, None, cancel);
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
    pub async fn reload(&self) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(DaemonRequest::Reload { reply })
            .await
            .map_err(|_| "the daemon is not running".to_string())?;
        answer
            .await
            .map_err(|_| "the daemon stopped during the reload".to_string())?
    }

    /// Log every target's state.
    pub async fn dump_status(&self) {
        let _ = self.tx.send(DaemonRequest::DumpStatus).await;
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

/// One rule with its source and evaluation state; `index` is its place in
/// the target's config order (reports are journaled in that order).
struct RuleSlot {
    index: usize,
    source: Source,
    eval: RuleEval,
    /// Carried over from before a reload (its history is still valid).
    kept: bool,
}

/// A reload's new settings for one worker.
#[derive(Debug)]
pub(crate) struct Reconfig {
    target: TargetConfig,
    decide: DecideConfig,
}

/// Build the rule slots of `target`: polled rules and Alertmanager rules.
/// A slot in `old` whose rule config is unchanged is kept (its history is
/// valid); otherwise a fresh one continues from the last report of that
/// rule only when the rule is unchanged (a restart: `last` is journaled).
fn rule_slots(
    target: &TargetConfig,
    last: &[RuleReport],
    mut old: Vec<RuleSlot>,
    shared: &Shared,
    live: &Live,
) -> (Vec<RuleSlot>, Vec<RuleSlot>) {
    let (mut polled, mut alerting) = (Vec::new(), Vec::new());
    for (index, r) in target.rules.iter().enumerate() {
        let client = match &r.source {
            crate::config::SourceSpec::Prometheus(p) => live.client(p.server.as_deref()),
            _ => None,
        };
        // Kept only while it still asks the same client (a server whose
        // url or auth changed gets a new one).
        let same_client = |s: &RuleSlot| match (&s.source, client) {
            (Source::Prometheus(p), Some(c)) => p.prometheus().is_some_and(|o| o.same(c)),
            _ => true,
        };
        let slot = match old
            .iter()
            .position(|s| s.eval.rule() == r && same_client(s))
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
                    source: Source::build(&r.source, &shared.client, client, live.poll_interval),
                    eval,
                    kept: false,
                }
            }
        };
        if matches!(slot.source, Source::Alertmanager(_)) {
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
/// together, then the verify URL).
fn poll_budget(target: &TargetConfig, live: &Live) -> Duration {
    let rules = target
        .rules
        .iter()
        .map(|r| match &r.source {
            crate::config::SourceSpec::Probe(p) => p.timeout,
            crate::config::SourceSpec::Prometheus(_) => live.prometheus_timeout,
            _ => Duration::ZERO,
        })
        .max()
        .unwrap_or_default();
    let version = match &target.version {
        None => Duration::ZERO,
        Some(_) => crate::version::VERSION_TIMEOUT,
    };
    // The gates run one after the other: each HTTP one up to the client
    // timeout, each command up to its own timeout.
    let v = &target.verify;
    let http = u32::from(v.url.is_some()) + v.checks.len() as u32;
    let commands: Duration = v
        .commands
        .iter()
        .map(|c| c.timeout.unwrap_or(execute::verify::COMMAND_TIMEOUT))
        .sum();
    let verify = verify_timeout(live.poll_interval) * http + commands;
    live.poll_interval * 2 + version + rules + verify
}

/// The timeout of one verify URL check.
fn verify_timeout(poll_interval: Duration) -> Duration {
    poll_interval.clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// When a worker polls: at a stable offset inside the interval (see
/// [`poll_offset`]) plus a little jitter, skipping slots a long poll missed.
#[derive(Debug)]
struct Schedule {
    interval: Duration,
    offset: Duration,
    base: tokio::time::Instant,
    slot: u32,
    seed: u64,
    next: tokio::time::Instant,
}

impl Schedule {
    fn new(name: &str, interval: Duration) -> Schedule {
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
    fn advance(&mut self) {
        let now = tokio::time::Instant::now();
        while self.next <= now {
            self.slot = self.slot.saturating_add(1);
            self.next = self.base + self.offset + self.interval * self.slot;
        }
        self.next += poll_jitter(&mut self.seed, self.interval);
    }
}

/// What one poll found, handed back to the worker when the poll task ends.
struct PollDone {
    /// The polled rules, with their updated history.
    slots: Vec<RuleSlot>,
    /// One report per polled rule: (config index, report).
    reports: Vec<(usize, RuleReport)>,
    /// The version reader and what it read.
    version: VersionReader,
    read: Result<Option<String>, String>,
    /// The verification gates' results, when the target was verifying at
    /// poll start: incident, all passed, summary, each gate.
    verify: Option<(String, bool, String, Vec<execute::verify::CheckReport>)>,
    /// How long the poll took.
    took: Duration,
}

type PollFuture = std::pin::Pin<Box<dyn std::future::Future<Output = PollDone> + Send>>;

/// One target's loop.
struct Worker {
    target: TargetConfig,
    decide: DecideConfig,
    state: TargetState,
    recovered: bool,
    /// Rules polled by the poll task (moved into it while it runs).
    polled: Vec<RuleSlot>,
    /// Alertmanager rules: evaluated at every poll and at once when a POST
    /// changes the alerts (they never wait behind a slow poll).
    alerting: Vec<RuleSlot>,
    /// The latest report of every rule, in config order (live view).
    latest: Vec<Option<RuleReport>>,
    shared: Arc<Shared>,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    /// Effect results whose journal write failed: retried in order until
    /// journaled, so an outcome is never lost.
    unjournaled: std::collections::VecDeque<(Event, Time)>,
    /// The version reader, `None` while a poll task holds it.
    version: Option<VersionReader>,
    /// When the next poll starts.
    schedule: Schedule,
    /// How long a poll may take before the watchdog calls this worker stuck.
    budget: Duration,
    /// New settings from a reload.
    control_rx: mpsc::Receiver<Reconfig>,
    /// A reload waiting for the poll in flight to hand the rules back.
    pending: Option<Reconfig>,
    /// An extra poll when a Pending rule's `for` runs out before the next
    /// regular poll: detection is not delayed by the poll phase.
    wake_at: Option<tokio::time::Instant>,
    last_version_error: Option<String>,
    commands_rx: mpsc::Receiver<Command>,
    state_tx: watch::Sender<TargetState>,
    /// The daemon's shutdown token (set when the worker runs).
    stop: CancellationToken,
    /// The running `confirm_command`: the incident it answers for and
    /// the token that stops it (killing its process group).
    confirm_running: Option<(String, CancellationToken)>,
}

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
fn poll_jitter(seed: &mut u64, interval: Duration) -> Duration {
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
    fn build(
        config: &Config,
        target: &TargetConfig,
        recovered: Option<TargetState>,
        shared: Arc<Shared>,
    ) -> (Worker, TargetHandle, mpsc::Sender<Reconfig>) {
        let live = shared.live();
        let last = recovered
            .as_ref()
            .map(|s| s.rules.clone())
            .unwrap_or_default();
        let (polled, alerting) = rule_slots(target, &last, Vec::new(), &shared, &live);
        let (events_tx, events_rx) = mpsc::channel(16);
        let (commands_tx, commands_rx) = mpsc::channel(16);
        let (control_tx, control_rx) = mpsc::channel(4);
        let state = recovered
            .clone()
            .unwrap_or_else(|| TargetState::new(&target.name));
        let (state_tx, state_rx) = watch::channel(state.clone());
        let worker = Worker {
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
            budget: poll_budget(target, &live),
            shared,
            events_tx,
            events_rx,
            unjournaled: std::collections::VecDeque::new(),
            last_version_error: None,
            commands_rx,
            control_rx,
            pending: None,
            wake_at: None,
            state_tx,
            stop: CancellationToken::new(),
            confirm_running: None,
        };
        let handle = TargetHandle {
            name: target.name.clone(),
            commands: commands_tx,
            state: state_rx,
        };
        (worker, handle, control_tx)
    }

    /// The loop. A person's command, an effect's result and an alert are
    /// never queued behind a poll: the poll is a task of its own (`biased`
    /// select, commands first), and shutdown drops it.
    async fn run(mut self, cancel: CancellationToken) {
        self.stop = cancel.clone();
        self.heartbeat();
        if self.recovered {
            tracing::info!(target = %self.target.name, phase = self.state.phase.name(), "state recovered from the journal");
            crate::metrics::global().phase(&self.target.name, &self.state.phase);
            self.apply(Event::Recovered).await;
            // The wait goes on, and so does the team's approval flow: its
            // command died with the previous process.
            if let Phase::AwaitingConfirmation { incident, .. } = &self.state.phase {
                let incident = incident.clone();
                self.ask_confirm_command(&incident);
            }
        }
        let mut poll: Option<PollFuture> = None;
        let mut alerts = crate::sources::alertmanager::AlertStore::global().subscribe();
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
            self.settle_confirm_command();
            self.publish();
        }
        drop(poll);
        self.shared
            .heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.target.name);
        self.settle_confirm_command();
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
    fn heartbeat(&self) {
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
    fn reconfigure(&mut self) {
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
        self.budget = poll_budget(&r.target, &live);
        self.decide = r.decide;
        self.target = r.target;
        self.heartbeat();
        tracing::info!(target = %self.target.name, rules = self.target.rules.len(), "configuration reloaded");
    }

    /// An effect's result (execution, after steps, confirm_command answer):
    /// it must reach the journal. Kept in order behind any result that is
    /// still waiting for a journal write.
    async fn effect_result(&mut self, event: Event) {
        // Stepped at the time it arrived, however late it is journaled: a
        // rollback's duration is not stretched by a journal outage.
        self.unjournaled.push_back((event, Utc::now()));
        self.retry_unjournaled().await;
    }

    /// Apply waiting effect results in order until one cannot be journaled.
    async fn retry_unjournaled(&mut self) {
        while let Some((event, at)) = self.unjournaled.pop_front() {
            match self.apply_at(event.clone(), at).await {
                Applied::Yes | Applied::NotExpected => {}
                Applied::NotJournaled => {
                    tracing::warn!(target = %self.target.name, waiting = self.unjournaled.len() + 1, "effect result not journaled yet; retrying every second");
                    self.unjournaled.push_front((event, at));
                    return;
                }
            }
        }
    }

    /// Start a poll in its own future: version, every polled rule, the
    /// verify URL when verifying. The worker keeps serving commands.
    fn start_poll(&mut self) -> PollFuture {
        let mut slots = std::mem::take(&mut self.polled);
        let version = self
            .version
            .take()
            .expect("the version reader is back after every poll");
        let deployed_at = self.state.deployed_at;
        let v = &self.target.verify;
        let gated = v.url.is_some() || !v.checks.is_empty() || !v.commands.is_empty();
        let verify = match &self.state.phase {
            Phase::Verifying { incident, .. } if gated => {
                Some((incident.id.clone(), v.clone(), vars_for(incident)))
            }
            _ => None,
        };
        let client = self.shared.verify_client.clone();
        // Test hook (debug builds only): this target's polls never end, as a
        // stuck worker's would; the watchdog test uses it.
        let stall = cfg!(debug_assertions)
            && std::env::var("ROLLBACKD_TEST_STALL_TARGET").is_ok_and(|t| t == self.target.name);
        Box::pin(async move {
            if stall {
                std::future::pending::<()>().await;
            }
            let started = std::time::Instant::now();
            let read = version.read().await;
            let now = Utc::now();
            let reports = futures_util::future::join_all(slots.iter_mut().map(|s| async {
                let report =
                    crate::rules::baseline::evaluate(&mut s.source, &mut s.eval, deployed_at, now)
                        .await;
                (s.index, report)
            }))
            .await;
            let verify = match verify {
                Some((incident, config, vars)) => {
                    let checks = execute::verify::run_gates(&client, &config, &vars).await;
                    let ok = checks.iter().all(|c| c.ok);
                    let detail = gates_detail(&checks);
                    Some((incident, ok, detail, checks))
                }
                None => None,
            };
            PollDone {
                slots,
                reports,
                version,
                read,
                verify,
                took: started.elapsed(),
            }
        })
    }

    /// A poll ended: adopt the version, step the evaluation, then the
    /// verify check.
    async fn poll_done(&mut self, done: PollDone) {
        self.polled = done.slots;
        self.version = Some(done.version);
        self.heartbeat();
        crate::metrics::global().poll_duration(done.took);
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
        if let Some((incident, ok, detail, checks)) = done.verify {
            self.apply(Event::VerifyChecked {
                incident,
                ok,
                detail,
                checks,
            })
            .await;
        }
    }

    /// Evaluate the Alertmanager rules now (they read the local store).
    async fn evaluate_alerting(&mut self) {
        let now = Utc::now();
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
    async fn alerts_changed(&mut self) {
        self.evaluate_alerting().await;
        self.step_evaluated().await;
    }

    /// Step an evaluation of every rule (once each rule has been evaluated).
    async fn step_evaluated(&mut self) {
        let Some(rules) = self
            .latest
            .iter()
            .cloned()
            .collect::<Option<Vec<RuleReport>>>()
        else {
            return;
        };
        self.wake_at = due_before(&rules, self.schedule.next);
        let fleet = self.shared.fleet(&self.target.name, &rules);
        self.apply(Event::Evaluated { rules, fleet }).await;
    }

    fn version_read(&mut self, read: Result<Option<String>, String>) -> Option<String> {
        match read {
            Ok(v) => {
                self.last_version_error = None;
                v
            }
            Err(e) => {
                if self.last_version_error.as_ref() != Some(&e) {
                    tracing::warn!(target = %self.target.name, error = %e, "cannot read the live version");
                    self.last_version_error = Some(e);
                }
                None
            }
        }
    }

    /// Step the machine, journal if anything changed, then act. `false`
    /// when the step was not adopted (the event does not fit, or the
    /// journal could not be written).
    async fn apply(&mut self, event: Event) -> bool {
        self.apply_at(event, Utc::now()).await == Applied::Yes
    }

    /// [`Worker::apply`] at a given time, saying why a step was not adopted.
    async fn apply_at(&mut self, event: Event, now: Time) -> Applied {
        let (next, actions) =
            match decide::step(&self.decide, self.state.clone(), event.clone(), now) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(target = %self.target.name, error = %e, "event ignored");
                    return Applied::NotExpected;
                }
            };
        // The global cap is asked before anything is journaled, so the
        // journal never holds an execution that did not happen.
        let (event, next, actions) = self.global_limit(event, next, actions, now);
        let from = self.state.phase.name().to_string();
        let to = next.phase.name().to_string();
        if let Event::Evaluated { rules, .. } = &event {
            record_rule_metrics(&self.target.name, rules);
        }
        let changed = next.phase != self.state.phase
            || !actions.is_empty()
            || next.version != self.state.version
            || next.loop_guard != self.state.loop_guard
            || next.paused != self.state.paused
            || next.blind_notified != self.state.blind_notified
            || next.shadow_breached != self.state.shadow_breached
            || statuses(&next.rules) != statuses(&self.state.rules);
        if !changed {
            self.state = next;
            return Applied::Yes;
        }
        log_step(&self.target.name, &event, &from, &to, &next);
        let record = Record::Step {
            target: self.target.name.clone(),
            event: event.clone(),
            from: from.clone(),
            to: to.clone(),
            actions: actions.clone(),
            state: next.clone().into(),
        };
        if let Err(e) = self.shared.journal(record).await {
            // Nothing happens that is not journaled: keep the old state, the
            // next poll tries again.
            crate::metrics::global().journal_error();
            tracing::error!(target = %self.target.name, error = %format!("{e:#}"), "journal write failed; not acting");
            return Applied::NotJournaled;
        }
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
            self.act(action).await;
        }
        Applied::Yes
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Execute { incident } => {
                if let (Some(first), Some(started)) =
                    (incident.first_evidence, incident.rollback_started)
                {
                    let detection = (started - first).to_std().unwrap_or_default();
                    crate::metrics::global().detection(detection.as_secs_f64());
                }
                let plan = self.target.rollback.clone();
                let vars = vars_for(&incident);
                let tx = self.events_tx.clone();
                tracing::info!(target = %self.target.name, incident = %incident.id, method = %plan.kind.name(), "running rollback plan");
                let context = execute::process::RunContext {
                    state_dir: self.shared.state_dir.clone(),
                    incident: incident.id.clone(),
                };
                let hard_stop = self.shared.hard_stop.clone();
                let requested = incident.requested_version.clone();
                self.shared.tracker.spawn(async move {
                    let run = async {
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
            Action::Verify { incident } => {
                tracing::info!(target = %self.target.name, %incident, "verifying recovery");
            }
            Action::RunAfter { incident } => self.run_hook(Hook::After, &incident),
            Action::RunOnFailure { incident } => self.run_hook(Hook::OnFailure, &incident),
            Action::Notify { kind, incident } => {
                let links = self.confirm_links(kind, &incident);
                if kind == decide::NotifyKind::AwaitingConfirmation {
                    self.ask_confirm_command(&incident);
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
                    crate::metrics::global().incident_closed(&self.target.name, "shadow");
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
                        at: Utc::now(),
                        target: self.target.name.clone(),
                        path,
                    }),
                    Ok(Err(e)) => {
                        tracing::error!(target = %self.target.name, error = %e, "cannot write the incident record")
                    }
                    Err(e) => tracing::error!(error = %e, "record task panicked"),
                }
            }
        }
    }
}

impl Worker {
    /// Journal and log a notification's result.
    async fn notified(
        &self,
        kind: decide::NotifyKind,
        incident: Option<String>,
        sent: Result<Option<PathBuf>, crate::notify::NotifyError>,
    ) {
        let target = self.target.name.clone();
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
                        at: Utc::now(),
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

/// The outcome of a plan killed at the end of the shutdown grace.
fn interrupted_by_shutdown(vars: &Vars) -> execute::ExecResult {
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

/// Periodic checks beside the workers: the journal is still the file in
/// `state_dir` (logged, gauged and notified once when not: every step is
/// refused from then on), and zombies of processes reparented to the
/// daemon are reaped.
async fn housekeeping(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(JOURNAL_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut notified = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        execute::process::reap_adopted();
        let checked = {
            let mut journal = shared.journal.lock().unwrap_or_else(|p| p.into_inner());
            journal
                .check()
                .and_then(|()| journal.compact_if_due().map(|_| ()))
        };
        match checked {
            Ok(()) => notified = false,
            Err(e) => {
                if !notified {
                    tracing::error!(error = %e, "state directory lost: not acting on anything");
                    notified = true;
                    let message = format!(
                        "{e}. rollbackd is not acting on any target (every step would be lost at the next restart). \
                         Restore {} or restart rollbackd on a new state_dir.",
                        shared.state_dir.display()
                    );
                    if let Err(e) = shared
                        .live()
                        .notifier
                        .notify_target(decide::NotifyKind::Escalated, "rollbackd", &message)
                        .await
                    {
                        tracing::error!(error = %e, "cannot notify that the state directory is lost");
                    }
                }
            }
        }
    }
}

/// How often each Prometheus server's reachability is checked.
const SERVER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Tell the admin once when a Prometheus server has been unreachable for
/// its `blind_after`, and once when it answers again (the decision is
/// [`decide::server_watch::check`]'s; the facts are the clients'). What was
/// sent is kept across reloads by server name.
async fn watch_servers(shared: Arc<Shared>, cancel: CancellationToken) {
    use crate::sources::prometheus::Reachability;
    use decide::server_watch::{check, Seen, Watch};
    let mut tick = tokio::time::interval(SERVER_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watches: BTreeMap<String, Watch> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let live = shared.live();
        watches.retain(|name, _| {
            let kept = live.prometheus.contains_key(name);
            if !kept {
                crate::metrics::global().prometheus_reachable(name, None);
            }
            kept
        });
        for server in &live.servers {
            let Some(client) = live.prometheus.get(&server.name) else {
                continue;
            };
            let seen = match client.reachability() {
                Reachability::Unknown => Seen::NotYet,
                Reachability::Reachable => Seen::Answers,
                Reachability::Unreachable { since, error } => Seen::Silent { since, error },
            };
            crate::metrics::global().prometheus_reachable(
                &server.name,
                match &seen {
                    Seen::NotYet => None,
                    Seen::Answers => Some(true),
                    Seen::Silent { .. } => Some(false),
                },
            );
            let watch = watches.entry(server.name.clone()).or_default();
            let Some(Action::NotifyTarget {
                kind,
                target,
                message,
            }) = check(watch, server, &seen, Utc::now())
            else {
                continue;
            };
            if kind == decide::NotifyKind::ServerUnreachable {
                tracing::warn!(server = %server.name, "{message}");
            } else {
                tracing::info!(server = %server.name, "{message}");
            }
            match live.notifier.notify_target(kind, &target, &message).await {
                Ok(Some(path)) => shared.observe(Observation::Mail {
                    at: Utc::now(),
                    target,
                    path,
                    kind,
                }),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(server = %server.name, error = %e, "cannot notify about the Prometheus server")
                }
            }
        }
    }
}

fn vars_for(incident: &Incident) -> Vars {
    Vars {
        target: incident.target.clone(),
        from_version: incident.from_version.clone(),
        to_version: incident.to_version.clone(),
        incident: incident.id.clone(),
    }
}

/// One line for the verification gates: the verify URL's own detail when
/// it is the only gate, else how many pass and what fails.
fn gates_detail(checks: &[execute::verify::CheckReport]) -> String {
    if let [only] = checks {
        return only.detail.clone();
    }
    let failing: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.check, c.detail))
        .collect();
    let passed = checks.len() - failing.len();
    if failing.is_empty() {
        format!("all {} gates pass", checks.len())
    } else {
        format!(
            "{passed} of {} gates pass; failing: {}",
            checks.len(),
            failing.join("; ")
        )
    }
}

/// The plan's hook steps: `after` (verification passed) or `on_failure`
/// (the plan or verification failed).
#[derive(Debug, Clone, Copy)]
enum Hook {
    After,
    OnFailure,
}

impl Worker {
    /// Run a hook's steps in a tracked task; the result comes back as an
    /// event (`AfterFinished`, `OnFailureFinished`).
    fn run_hook(&self, hook: Hook, incident: &Incident) {
        let (steps, name) = match hook {
            Hook::After => (&self.target.rollback.after, "after"),
            Hook::OnFailure => (&self.target.rollback.on_failure, "on_failure"),
        };
        if steps.is_empty() {
            return;
        }
        let plan = self.target.rollback.clone();
        let vars = vars_for(incident);
        let target = self.target.name.clone();
        let tx = self.events_tx.clone();
        self.shared.tracker.spawn(async move {
            let result = match hook {
                Hook::After => execute::run_after(&plan, &vars).await,
                Hook::OnFailure => execute::run_on_failure(&plan, &vars).await,
            };
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

/// When the earliest Pending rule's `for` runs out, if that is before
/// `next` (the regular poll): a little after it, so that the data (or the
/// poll-judged `for`) shows the whole duration.
fn due_before(rules: &[RuleReport], next: tokio::time::Instant) -> Option<tokio::time::Instant> {
    let now = Utc::now();
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
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether [`Worker::apply`] adopted a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// Stepped, journaled (when it changed something) and carried out.
    Yes,
    /// The event does not fit the state (a stale answer): dropped.
    NotExpected,
    /// The journal could not be written: nothing was done.
    NotJournaled,
}

/// Publish each rule's value and status as gauges.
fn record_rule_metrics(target: &str, rules: &[RuleReport]) {
    for r in rules {
        crate::metrics::global().rule(target, r);
    }
}

fn statuses(rules: &[RuleReport]) -> Vec<&'static str> {
    rules.iter().map(|r| r.status.name()).collect()
}

fn log_step(target: &str, event: &Event, from: &str, to: &str, state: &TargetState) {
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

/// The global cap on executed rollbacks (`[daemon] max_rollbacks_per_hour`),
/// asked before an `Execute` is carried out. The state machine stays pure:
/// a refusal is fed back as [`Event::ExecRefused`] and escalates.
struct GlobalLimit {
    cap: std::num::NonZeroU32,
    limiter: governor::DefaultDirectRateLimiter,
}

impl GlobalLimit {
    /// A limiter with the rollbacks of the last hour (from the recovered
    /// states) already counted, so a restart does not reset the cap.
    fn build<'a>(
        cap: std::num::NonZeroU32,
        states: impl Iterator<Item = &'a TargetState>,
        now: Time,
    ) -> GlobalLimit {
        let limiter = governor::RateLimiter::direct(governor::Quota::per_hour(cap));
        let hour_ago = now - chrono::Duration::hours(1);
        let recent: usize = states
            .map(|s| s.rollbacks.iter().filter(|t| **t > hour_ago).count())
            .sum();
        for _ in 0..recent {
            let _ = limiter.check();
        }
        GlobalLimit { cap, limiter }
    }
}

/// Reload the alerts Alertmanager reported before a restart
/// (`state_dir/alerts.json`) and save every change there from now on.
fn load_alerts(state_dir: &Path) {
    let store = crate::sources::alertmanager::AlertStore::global();
    store.start_flusher();
    match store.persist_in(state_dir, Utc::now()) {
        Ok(0) => {}
        Ok(firing) => tracing::info!(firing, "alerts reloaded from the previous run"),
        Err(e) => tracing::warn!(error = %e, "alert store not reloaded"),
    }
}

/// Why an event from the API does not fit the target's state, in words.
fn refusal(target: &str, state: &TargetState, event: &Event) -> String {
    let phase = state.phase.name();
    match event {
        Event::Approve { incident, .. } | Event::Reject { incident, .. } => {
            match state.incident() {
                Some(open) if open.id == *incident => format!(
                    "incident {incident} is not awaiting confirmation: target {target} is {phase}"
                ),
                _ => format!(
                    "incident {incident} is not awaiting confirmation (target {target} is {phase})"
                ),
            }
        }
        Event::ManualTrigger { .. } => {
            format!("target {target} already has a rollback in flight ({phase}); nothing done")
        }
        _ => format!("event not accepted: target {target} is {phase}"),
    }
}

impl Worker {
    /// An event from the API: step it and answer with the state after.
    async fn command(&mut self, cmd: Command) {
        let now = Utc::now();
        if decide::step(&self.decide, self.state.clone(), cmd.event.clone(), now).is_err() {
            let why = refusal(&self.target.name, &self.state, &cmd.event);
            tracing::info!(target = %self.target.name, %why, "api event refused");
            let _ = cmd.reply.send(Err(why));
            return;
        }
        // A version a human named must exist before anything is decided:
        // an unknown one is refused with nothing run.
        if let Event::ManualTrigger {
            to_version: Some(v),
            ..
        } = &cmd.event
        {
            if let Err(why) = execute::check_version(&self.target.rollback, v).await {
                tracing::info!(target = %self.target.name, %why, "manual trigger refused");
                let _ = cmd.reply.send(Err(format!("{why}; nothing was run")));
                return;
            }
        }
        if !self.apply(cmd.event).await {
            let _ = cmd.reply.send(Err(
                "rollbackd could not journal the step, so nothing was done; see its log".into(),
            ));
            return;
        }
        self.publish();
        let _ = cmd.reply.send(Ok(self.state.clone()));
    }

    /// Share the latest state with the API, with the live evaluation of
    /// every rule (even when the journal refused the step that would have
    /// adopted it: `status` never shows a stale value as current).
    fn publish(&self) {
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

    fn remember_incident(&self) {
        if let Some(i) = self.state.incident() {
            let mut all = self
                .shared
                .incidents
                .write()
                .unwrap_or_else(|p| p.into_inner());
            all.insert(i.id.clone(), i.clone());
        }
    }

    /// A step that would execute while the global limiter refuses becomes
    /// the machine's answer to [`Event::ExecRefused`] (escalated, naming the
    /// guard): that refusal is what is journaled and carried out.
    fn global_limit(
        &self,
        event: Event,
        next: TargetState,
        actions: Vec<Action>,
        now: Time,
    ) -> (Event, TargetState, Vec<Action>) {
        let Some(refused) = self.global_limit_refuses(&actions) else {
            return (event, next, actions);
        };
        match decide::step(&self.decide, next.clone(), refused.clone(), now) {
            Ok((escalated, actions)) => (refused, escalated, actions),
            Err(e) => {
                // Cannot happen: the step just entered RollingBack.
                tracing::error!(target = %self.target.name, error = %e, "global limit refusal not accepted");
                (event, next, actions)
            }
        }
    }

    /// Ask the global limiter before an `Execute`; `Some(event)` when it refuses.
    fn global_limit_refuses(&self, actions: &[Action]) -> Option<Event> {
        let live = self.shared.live();
        let limit = live.global_limit.as_ref()?;
        let incident = actions.iter().find_map(|a| match a {
            Action::Execute { incident } => Some(incident.id.clone()),
            _ => None,
        })?;
        if limit.limiter.check().is_ok() {
            return None;
        }
        crate::metrics::global().global_limit_refused(&self.target.name);
        let reason = format!(
            "global rate limit: [daemon] max_rollbacks_per_hour = {} reached across all targets",
            limit.cap
        );
        tracing::warn!(target = %self.target.name, %incident, %reason, "rollback refused");
        Some(Event::ExecRefused { incident, reason })
    }

    /// Approve and reject links for a confirmation email, when `public_url` is set.
    fn confirm_links(
        &self,
        kind: decide::NotifyKind,
        incident: &Incident,
    ) -> Option<crate::notify::ConfirmLinks> {
        if kind != decide::NotifyKind::AwaitingConfirmation {
            return None;
        }
        let live = self.shared.live();
        let url = live.public_url.as_ref()?;
        let Phase::AwaitingConfirmation { deadline, .. } = &self.state.phase else {
            return None;
        };
        Some(self.shared.links.links(url, &incident.id, *deadline))
    }

    /// Run `confirm_command` (if configured) in a tracked task: exit 0
    /// approves, 1 rejects, anything else (or the deadline) is no answer.
    /// It is stopped, its process group killed, when the incident stops
    /// waiting (answered, resolved, timed out) or the daemon shuts down
    /// (the worker takes no answer any more; the next start asks again).
    fn ask_confirm_command(&mut self, incident: &Incident) {
        let Some(argv) = self.target.confirm.command.clone() else {
            return;
        };
        let Phase::AwaitingConfirmation { deadline, .. } = &self.state.phase else {
            return;
        };
        let left = (*deadline - Utc::now()).to_std().unwrap_or_default();
        if left.is_zero() {
            return;
        }
        if let Some((_, running)) = self.confirm_running.take() {
            running.cancel();
        }
        let stop = self.stop.child_token();
        self.confirm_running = Some((incident.id.clone(), stop.clone()));
        let vars = vars_for(incident);
        let tx = self.events_tx.clone();
        let target = self.target.name.clone();
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

    /// Stop a `confirm_command` whose incident no longer waits (or at shutdown).
    fn settle_confirm_command(&mut self) {
        let waiting = match (&self.confirm_running, &self.state.phase) {
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
