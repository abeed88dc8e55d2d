//! What every worker shares: the settings a reload replaces ([`Live`]),
//! the journal, the HTTP clients, the fleet map and heartbeats ([`Shared`]),
//! and the global rollback cap's limiter.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::config::{Config, TargetConfig};
use crate::decide::{self, Action, Incident, TargetState, Time};
use crate::journal::{Entry, Journal, Record};
use crate::notify::Notifier;
use crate::rules::RuleReport;
use crate::sources::prometheus::Prometheus;

/// What a reload can change for every worker at once.
pub(super) struct Live {
    pub(super) poll_interval: Duration,
    pub(super) notifier: Notifier,
    /// One client per Prometheus server (pool, auth, timeout, concurrency
    /// bound, reachability), shared by every rule that asks it: `default`
    /// is `[prometheus]`, the others `[prometheus.servers.NAME]`.
    pub(super) prometheus: BTreeMap<String, Prometheus>,
    /// Each server as its "unreachable" notice names it.
    pub(super) servers: Vec<decide::server_watch::Server>,
    /// `public_url`, base of the links in confirmation emails.
    pub(super) public_url: Option<url::Url>,
    /// `[daemon] max_rollbacks_per_hour` across all targets.
    pub(super) global_limit: Option<Arc<GlobalLimit>>,
    /// The longest Prometheus `timeout`, for the watchdog's poll budget.
    pub(super) prometheus_timeout: Duration,
    /// How long a breach start that has ended is kept for the
    /// blast-radius guard ([`fleet_memory`]).
    pub(super) fleet_memory: Duration,
}

impl Live {
    /// The settings of `config`; `states` count toward the global cap.
    pub(super) fn build<'a>(
        config: &Config,
        states: impl Iterator<Item = &'a TargetState>,
        now: Time,
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
                url: crate::util::redact_url(&p.url),
                blind_after: p.blind_after,
                rules: server_users(config, name),
            })
            .collect();
        Ok(Live {
            poll_interval: config.daemon.poll_interval,
            notifier: Notifier::build(&config.notify, config.daemon.public_url.clone())
                .with_metrics(crate::metrics::global()),
            prometheus,
            servers,
            public_url: config.daemon.public_url.clone(),
            fleet_memory: fleet_memory(config),
            prometheus_timeout: configs
                .iter()
                .map(|(_, p)| p.timeout)
                .max()
                .unwrap_or_default(),
            global_limit: config
                .daemon
                .max_rollbacks_per_hour
                .map(|cap| Arc::new(GlobalLimit::build(cap, states, now))),
        })
    }
}

impl Live {
    /// The client of server `name` (`None`: `[prometheus]`).
    pub(super) fn client(&self, name: Option<&str>) -> Option<&Prometheus> {
        self.prometheus
            .get(name.unwrap_or(crate::config::DEFAULT_PROMETHEUS))
    }

    /// After a reload: keep the clients of servers whose config did not
    /// change (their pools, their reachability, and the history of the
    /// rules that ask them).
    pub(super) fn keep_clients(&mut self, old: &Live, old_config: &Config, new_config: &Config) {
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
pub(super) fn server_users(config: &Config, name: &str) -> Vec<String> {
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
pub(super) fn version_server(target: &TargetConfig) -> Option<&str> {
    match &target.version {
        Some(crate::config::VersionSource::Query { server, .. }) => server.as_deref(),
        _ => None,
    }
}

/// What every worker shares.
pub(super) struct Shared {
    pub(super) state_dir: PathBuf,
    pub(super) journal: Mutex<Journal>,
    pub(super) client: reqwest::Client,
    pub(super) verify_client: reqwest::Client,
    /// Settings a reload replaces.
    pub(super) live: RwLock<Arc<Live>>,
    pub(super) observers: broadcast::Sender<Observation>,
    pub(super) tracker: TaskTracker,
    /// Every incident seen, for the API (seeded from the journal).
    pub(super) incidents: Arc<RwLock<BTreeMap<String, Incident>>>,
    /// Signs the approve/reject links of confirmation emails.
    pub(super) links: Arc<crate::confirm::links::LinkKeys>,
    /// Each target's recent breach starts (its earliest Pending/Breached
    /// rule's start), kept after the breach ends ([`fleet_memory`]):
    /// shared so every step sees the others (blast-radius guard), which
    /// counts a peer that already acted as well as one still breaching.
    pub(super) fleet: Mutex<BTreeMap<String, FleetStarts>>,
    /// How many targets are watched.
    pub(super) targets: std::sync::atomic::AtomicUsize,
    /// When each worker last finished a poll, and how long a poll may take
    /// before the worker counts as stuck (2 x interval + its longest source
    /// timeout): the systemd watchdog is fed only while all are fresh.
    pub(super) heartbeats: Mutex<BTreeMap<String, (std::time::Instant, Duration)>>,
    /// The last journal write error while the journal is failing; shown by
    /// `status` as a banner, cleared by the next successful write.
    pub(super) journal_error: Arc<RwLock<Option<String>>>,
    /// Cancelled when the shutdown grace is over: running plans are
    /// killed and journaled as interrupted.
    pub(super) hard_stop: CancellationToken,
    /// Where every step, deadline and journal entry gets the time.
    pub(super) clock: Arc<dyn Clock>,
    /// What Alertmanager posted (`POST /v1/alertmanager`), read by the
    /// alertmanager rules.
    pub(super) alerts: Arc<crate::sources::alertmanager::AlertStore>,
    /// Each worker's executor identity and open incident: a target whose
    /// executor is another's with an open incident waits for it (one plan
    /// per service; [`decide::Guards::busy_executor`]).
    pub(super) executors: Mutex<BTreeMap<String, ExecutorSeat>>,
    /// Set when the state could not be read at start (why, and how to get
    /// out): state-lost mode, no target is acted on.
    pub(super) state_lost: Option<String>,
}

/// One worker's entry in [`Shared::executors`].
#[derive(Debug, Clone)]
pub(super) struct ExecutorSeat {
    /// Which worker wrote it (a worker that ends removes only its own).
    pub(super) worker: u64,
    pub(super) identity: crate::execute::Identity,
    /// Its open incident ([`decide::open_incident`]) in the state its
    /// worker adopted.
    pub(super) open: Option<String>,
    /// The open incident of a step computed but not adopted yet
    /// ([`Stepped`]): it counts from the step on, so that two targets of
    /// one executor never both open an incident.
    pub(super) held: Option<Option<String>>,
}

impl ExecutorSeat {
    /// The incident that holds the executor now: the held step's, else
    /// the adopted state's.
    fn open_now(&self) -> Option<&String> {
        match &self.held {
            Some(held) => held.as_ref(),
            None => self.open.as_ref(),
        }
    }
}

impl Shared {
    /// The other targets with `identity` that have an open incident, as
    /// the machine's guard input (under the registry's lock: `seats`).
    pub(super) fn busy_peers(
        seats: &BTreeMap<String, ExecutorSeat>,
        target: &str,
        identity: &crate::execute::Identity,
    ) -> Vec<decide::BusyPeer> {
        seats
            .iter()
            .filter(|(name, s)| name.as_str() != target && s.identity.key == identity.key)
            .filter_map(|(name, s)| {
                Some(decide::BusyPeer {
                    target: name.clone(),
                    incident: s.open_now()?.clone(),
                    executor: s.identity.shown.clone(),
                })
            })
            .collect()
    }

    /// Put `target`'s seat in the registry (its open incident as in `state`).
    pub(super) fn seat_executor(
        &self,
        target: &str,
        worker: u64,
        identity: &crate::execute::Identity,
        state: &TargetState,
    ) {
        self.executors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                target.to_string(),
                ExecutorSeat {
                    worker,
                    identity: identity.clone(),
                    open: decide::open_incident(state).map(str::to_string),
                    held: None,
                },
            );
    }

    /// A worker ended: its seat goes (unless a newer worker took the name).
    pub(super) fn unseat_executor(&self, target: &str, worker: u64) {
        let mut seats = self.executors.lock().unwrap_or_else(|p| p.into_inner());
        if seats.get(target).is_some_and(|s| s.worker == worker) {
            seats.remove(target);
        }
    }

    /// Now, by the daemon's clock.
    pub(super) fn now(&self) -> Time {
        self.clock.now()
    }

    /// Workers that have not finished a poll within their budget.
    pub(super) fn stuck_workers(&self) -> Vec<String> {
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
    pub(super) fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Append to the journal (fsync) off the async threads.
    pub(super) async fn journal(self: &Arc<Self>, record: Record) -> anyhow::Result<()> {
        let shared = self.clone();
        let entry = Entry {
            at: self.now(),
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

    /// Record this target's breach start, if a breach is under way, and
    /// return the recent breach starts of the other targets, for the
    /// blast-radius guard (which decides which of them count). A start is
    /// kept for [`fleet_memory`] after it began, whether or not the breach
    /// has ended since (a target that rolled back recovers; its breach
    /// still began then).
    pub(super) fn fleet(&self, target: &str, rules: &[RuleReport]) -> decide::Fleet {
        let now = self.now();
        let memory = self.live().fleet_memory;
        let forget = now - chrono::Duration::from_std(memory).unwrap_or_default();
        let mut all = self.fleet.lock().unwrap_or_else(|p| p.into_inner());
        let current = decide::breach_start(rules);
        let entry = all.entry(target.to_string()).or_default();
        entry.open = current;
        if let Some(since) = current {
            if !entry.starts.contains(&since) {
                entry.starts.push(since);
                entry.starts.sort_unstable();
            }
        }
        all.retain(|_, e| {
            // The breach under way is kept however old it is.
            let open = e.open;
            e.starts.retain(|s| *s >= forget || Some(*s) == open);
            let excess = e.starts.len().saturating_sub(FLEET_STARTS);
            e.starts.drain(..excess);
            !e.starts.is_empty()
        });
        decide::Fleet {
            targets: self.targets.load(std::sync::atomic::Ordering::Relaxed),
            breaching: all
                .iter()
                .filter(|(t, _)| t.as_str() != target)
                .flat_map(|(t, e)| {
                    e.starts.iter().map(move |since| decide::FleetBreach {
                        target: t.clone(),
                        since: *since,
                    })
                })
                .collect(),
        }
    }

    pub(super) fn observe(&self, o: Observation) {
        // No receivers is fine.
        let _ = self.observers.send(o);
    }
}

/// How long a target's breach start is remembered for the blast-radius
/// guard after it began (a breach still under way is kept as long as it
/// lasts): as long as a peer's start can matter to a decision, i.e. the
/// guard's `within` plus the longest `for`, `settle` and two polls (a
/// target acts at the latest that long after a peer's start that counts),
/// at most an hour; nothing with the guard off. The starts travel in each
/// journaled evaluation, so they are kept no longer than needed.
pub(super) fn fleet_memory(config: &Config) -> Duration {
    let Some(b) = config.daemon.max_simultaneous_breaches else {
        return Duration::ZERO;
    };
    let longest_for = config
        .targets
        .iter()
        .flat_map(|t| t.rules.iter())
        .filter(|r| !r.shadow)
        .map(|r| r.for_)
        .max()
        .unwrap_or_default();
    (b.within + longest_for + config.daemon.settle + config.daemon.poll_interval * 2)
        .min(Duration::from_secs(3600))
}

/// At most this many recent breach starts are kept per target (a flapping
/// rule starts again and again; the guard counts targets, not starts).
const FLEET_STARTS: usize = 4;

/// One target's recent breach starts, oldest first, and the one under way.
#[derive(Debug, Default)]
pub(super) struct FleetStarts {
    starts: Vec<Time>,
    open: Option<Time>,
}

/// The global cap on executed rollbacks (`[daemon] max_rollbacks_per_hour`):
/// the start of every target's rollbacks of the last hour. It is an input
/// of each step ([`decide::Guards`]); the machine decides with it and
/// escalates naming it.
pub(super) struct GlobalLimit {
    pub(super) cap: std::num::NonZeroU32,
    counts: Mutex<Counts>,
}

/// Each target's rollback starts: as in the state its worker adopted, and
/// as in a step computed but not adopted yet.
#[derive(Default)]
struct Counts {
    adopted: BTreeMap<String, Vec<Time>>,
    /// A step's rollbacks count from the step on (before it is journaled,
    /// so two targets never both take the last one) until it is adopted
    /// ([`GlobalLimit::adopt`]) or dropped ([`GlobalLimit::release`]).
    held: BTreeMap<String, Vec<Time>>,
}

impl GlobalLimit {
    /// A cap with the rollbacks of the last hour (from the recovered
    /// states) already counted, so a restart or a reload does not reset it.
    pub(super) fn build<'a>(
        cap: std::num::NonZeroU32,
        states: impl Iterator<Item = &'a TargetState>,
        now: Time,
    ) -> GlobalLimit {
        let limit = GlobalLimit {
            cap,
            counts: Mutex::new(Counts::default()),
        };
        for s in states {
            limit.count(s);
        }
        limit.prune(now);
        limit
    }

    /// Step `target` with the cap as an input: `step` sees the rollbacks of
    /// every target (a step held by another target included), and the
    /// rollbacks of the state it returns are held for `target` until the
    /// step is adopted or dropped. Other targets wait for the (pure, quick)
    /// step.
    pub(super) fn step<E>(
        &self,
        target: &str,
        now: Time,
        base: &decide::Guards,
        step: impl FnOnce(&decide::Guards) -> Result<(TargetState, Vec<decide::Action>), E>,
    ) -> Result<(TargetState, Vec<decide::Action>), E> {
        self.prune(now);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let started = counts
            .adopted
            .iter()
            .filter(|(t, _)| !counts.held.contains_key(*t))
            .chain(counts.held.iter())
            .flat_map(|(_, times)| times.iter().copied())
            .collect();
        let guards = decide::Guards {
            global: Some(decide::GlobalCap {
                max_per_hour: self.cap.get(),
                started,
            }),
            ..base.clone()
        };
        let stepped = step(&guards);
        if let Ok((next, _)) = &stepped {
            counts
                .held
                .insert(target.to_string(), next.rollbacks.clone());
        }
        stepped
    }

    /// `target` adopted a step: its rollbacks are `rollbacks` from now on.
    pub(super) fn adopt(&self, target: &str, rollbacks: &[Time]) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.held.remove(target);
        counts
            .adopted
            .insert(target.to_string(), rollbacks.to_vec());
    }

    /// `target`'s step was dropped: its adopted rollbacks count as before.
    pub(super) fn release(&self, target: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.held.remove(target);
    }

    /// The target's rollbacks are those of `state` (recovered, or a state
    /// the previous owner published that this node adopted).
    pub(super) fn count(&self, state: &TargetState) {
        self.adopt(&state.target, &state.rollbacks);
    }

    /// Forget rollbacks older than an hour (the machine counts only those
    /// of the last hour): the map stays small.
    fn prune(&self, now: Time) {
        let hour_ago = now - chrono::Duration::hours(1);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let Counts { adopted, held } = &mut *counts;
        for times in adopted.values_mut().chain(held.values_mut()) {
            times.retain(|t| *t > hour_ago);
        }
    }
}

/// A step computed from a worker's state but not adopted yet. What it
/// counts (the rollbacks it starts against the global cap, the incident
/// it opens on the executor) is held for its target from the step on, so
/// that no other target steps as if it were not there. Adopting it
/// ([`Stepped::adopt`], after the journal write) makes that its target's
/// count; dropping it lets the hold go and the adopted count stands.
/// Nothing is undone either way.
pub(super) struct Stepped {
    pub(super) next: TargetState,
    pub(super) actions: Vec<Action>,
    hold: Hold,
}

/// What a [`Stepped`] holds in the shared registries.
struct Hold {
    shared: Arc<Shared>,
    target: String,
    worker: u64,
    identity: crate::execute::Identity,
    /// Set once adopted: the drop then lets nothing go.
    adopted: bool,
}

impl Shared {
    /// Step `target` (worker `worker`, acting on `identity`) with the
    /// executor registry and the global cap as the guards' input: `step`
    /// gets them under the registry's lock, so that two targets of one
    /// executor never both open an incident. Nothing is adopted yet.
    pub(super) fn step<E>(
        self: &Arc<Self>,
        target: &str,
        worker: u64,
        identity: &crate::execute::Identity,
        now: Time,
        step: impl FnOnce(&decide::Guards) -> Result<(TargetState, Vec<Action>), E>,
    ) -> Result<Stepped, E> {
        let mut seats = self.executors.lock().unwrap_or_else(|p| p.into_inner());
        let base = decide::Guards {
            busy_executor: Shared::busy_peers(&seats, target, identity),
            state_lost: self.state_lost.clone(),
            global: None,
        };
        let (next, actions) = match &self.live().global_limit {
            Some(limit) => limit.step(target, now, &base, step)?,
            None => step(&base)?,
        };
        let open = decide::open_incident(&next).map(str::to_string);
        seats
            .entry(target.to_string())
            .or_insert_with(|| ExecutorSeat {
                worker,
                identity: identity.clone(),
                open: None,
                held: None,
            })
            .held = Some(open);
        let hold = Hold {
            shared: self.clone(),
            target: target.to_string(),
            worker,
            identity: identity.clone(),
            adopted: false,
        };
        Ok(Stepped {
            next,
            actions,
            hold,
        })
    }
}

impl Stepped {
    /// The step is adopted (journaled, or it changed nothing worth a
    /// journal line): what it holds is its target's count from now on.
    /// Returns the new state and the actions to carry out.
    pub(super) fn adopt(self) -> (TargetState, Vec<Action>) {
        let Stepped {
            next,
            actions,
            mut hold,
        } = self;
        if let Some(limit) = &hold.shared.live().global_limit {
            limit.adopt(&hold.target, &next.rollbacks);
        }
        hold.shared
            .seat_executor(&hold.target, hold.worker, &hold.identity, &next);
        hold.adopted = true;
        (next, actions)
    }
}

impl Drop for Hold {
    /// Not adopted: the hold goes, the target's adopted count stands.
    fn drop(&mut self) {
        if self.adopted {
            return;
        }
        if let Some(limit) = &self.shared.live().global_limit {
            limit.release(&self.target);
        }
        let mut seats = self
            .shared
            .executors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(seat) = seats.get_mut(&self.target) {
            seat.held = None;
        }
    }
}
