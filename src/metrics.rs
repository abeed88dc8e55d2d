//! The daemon's own metrics: typed `prometheus-client` families with HELP
//! text, rendered in the OpenMetrics text format for `GET /metrics`.
//!
//! One process-wide instance: the daemon and the API record through
//! [`global`]; what the daemon builds below itself (the journal, the
//! cluster session) gets the same instance as a [`handle`] and calls no
//! global. Each method names
//! what happened (`rollback_finished`, `poll_duration`, ...); the label
//! sets are structs, so a family can never be written with the wrong
//! labels. docs/metrics.md lists every family.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::decide::{Outcome, Phase};
use crate::rules::RuleReport;

/// Content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `{target}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// Target name.
    pub target: String,
}

/// `{target,result}` of `rollbackd_rto_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RtoLabels {
    /// Target name.
    pub target: String,
    /// `met` or `missed`.
    pub result: String,
}

/// `{target,outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Target name.
    pub target: String,
    /// `rolled_back`, `failed`, `dry_run`, `escalated`, `resolved`, `suppressed`, `shadow`.
    pub outcome: String,
}

/// `{target,phase}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Target name.
    pub target: String,
    /// Phase name in snake case, e.g. `awaiting_confirmation`.
    pub phase: String,
}

/// `{target,to}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// Target name.
    pub target: String,
    /// Phase entered, as `Phase::name` prints it.
    pub to: String,
}

/// `{target,rule}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// Target name.
    pub target: String,
    /// Rule name.
    pub rule: String,
}

/// `{target,rule,status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleStatusLabels {
    /// Target name.
    pub target: String,
    /// Rule name.
    pub rule: String,
    /// `ok`, `pending`, `breached` or `unknown`.
    pub status: String,
}

/// `{channel}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    /// `email` or the webhook's name.
    pub channel: String,
}

/// `{channel,target}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelTargetLabels {
    /// `email` or the webhook's name.
    pub channel: String,
    /// Target name.
    pub target: String,
}

/// `{target,kind}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Target name.
    pub target: String,
    /// Notification kind.
    pub kind: String,
}

/// `{status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// HTTP status code.
    pub status: String,
}

/// `{server}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    /// `default` for `[prometheus]`, else its `[prometheus.servers.NAME]`.
    pub server: String,
}

/// `{node}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// `cluster.node` of this daemon.
    pub node: String,
}

/// `{result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `accepted` or `duplicate`.
    pub result: String,
}

/// `{version}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Phases an open incident can be in, as `incidents_open` labels them.
const OPEN_PHASES: [&str; 3] = ["awaiting_confirmation", "rolling_back", "verifying"];

/// Incident outcomes, as `outcome` labels them ([`outcome_label`]).
const OUTCOMES: [&str; 7] = [
    "rolled_back",
    "failed",
    "dry_run",
    "escalated",
    "resolved",
    "suppressed",
    "shadow",
];

/// Every `Phase::name`, as `transitions` labels them.
const PHASE_NAMES: [&str; 11] = [
    "Watching",
    "AwaitingConfirmation",
    "RollingBack",
    "Verifying",
    "RolledBack",
    "Failed",
    "DryRun",
    "Escalated",
    "Resolved",
    "Suppressed",
    "Done",
];

/// Rule statuses, as `rule_status` labels them.
const RULE_STATUSES: [&str; 4] = ["ok", "pending", "breached", "unknown"];

/// Every family the daemon exports, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    rollbacks: Family<OutcomeLabels, Counter>,
    incidents: Family<OutcomeLabels, Counter>,
    incidents_open: Family<PhaseLabels, Gauge>,
    transitions: Family<TransitionLabels, Counter>,
    rule_value: Family<RuleLabels, FloatGauge>,
    rule_threshold: Family<RuleLabels, FloatGauge>,
    rule_baseline: Family<RuleLabels, FloatGauge>,
    rule_status: Family<RuleStatusLabels, Gauge>,
    poll_duration: Histogram,
    detection: Histogram,
    journal_errors: Counter,
    journal_bytes: Gauge,
    global_limit_refusals: Family<TargetLabels, Counter>,
    notifications_pending: Family<ChannelLabels, Gauge>,
    notifications_sent: Family<ChannelLabels, Counter>,
    notification_send_errors: Family<ChannelLabels, Counter>,
    notifications_failed: Family<ChannelLabels, Counter>,
    notifications_rate_limited: Family<ChannelTargetLabels, Counter>,
    notifications_merged: Family<KindLabels, Counter>,
    config_last_reload_success: Gauge,
    config_last_reload_timestamp: FloatGauge,
    confirm_links_refused: Counter,
    api_errors: Family<StatusLabels, Counter>,
    alerts_received: Family<ResultLabels, Counter>,
    api_connections: Gauge,
    api_accept_errors: Counter,
    api_connections_evicted: Counter,
    api_connections_refused: Counter,
    alerts_stored: Gauge,
    alerts_dropped: Counter,
    alerts_expired: Counter,
    orphaned_steps: Gauge,
    prometheus_reachable: Family<ServerLabels, Gauge>,
    journal_replaced: Gauge,
    state_lost: Gauge,
    journal_compactions: Counter,
    config_reload_failures: Counter,
    rto: Family<RtoLabels, Counter>,
    cluster_owner: Family<TargetLabels, Gauge>,
    cluster_etcd_up: Family<NodeLabels, Gauge>,
    cluster_lease_renew: Histogram,
}

/// The process-wide instance.
pub fn global() -> &'static Metrics {
    shared_global()
}

/// The process-wide instance as a handle, for what is built below the
/// daemon (the journal, the cluster session): the daemon gives it to them,
/// they call no global.
pub fn handle() -> Arc<Metrics> {
    shared_global().clone()
}

fn shared_global() -> &'static Arc<Metrics> {
    static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();
    GLOBAL.get_or_init(|| Arc::new(Metrics::new()))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every family registered with its HELP text, `rollbackd_build_info`
    /// set to this build's version.
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics::families();
        // Counters are registered without `_total` and HELP without its
        // final period: the encoder adds both. A family shows once it has
        // a series.
        register_decisions(&mut r, &m);
        register_notifications(&mut r, &m);
        register_api_and_alerts(&mut r, &m);
        register_state_and_cluster(&mut r, &m);
        Metrics { registry: r, ..m }
    }

    /// Every family, empty, with an empty registry ([`Metrics::new`]
    /// registers them).
    fn families() -> Metrics {
        Metrics {
            rollbacks: Family::default(),
            incidents: Family::default(),
            incidents_open: Family::default(),
            transitions: Family::default(),
            rule_value: Family::default(),
            rule_threshold: Family::default(),
            rule_baseline: Family::default(),
            rule_status: Family::default(),
            // 1 ms .. ~65 s: a poll is bounded by the sources' timeouts.
            poll_duration: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17),
            ),
            // Seconds from the first bad evaluation to the plan's start:
            // the `for` duration plus confirmation, so 5 s .. ~1.4 h.
            detection: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                5.0, 2.0, 11,
            )),
            journal_errors: Counter::default(),
            journal_bytes: Gauge::default(),
            global_limit_refusals: Family::default(),
            notifications_pending: Family::default(),
            notifications_sent: Family::default(),
            notification_send_errors: Family::default(),
            notifications_failed: Family::default(),
            notifications_rate_limited: Family::default(),
            notifications_merged: Family::default(),
            config_last_reload_success: Gauge::default(),
            config_last_reload_timestamp: FloatGauge::default(),
            confirm_links_refused: Counter::default(),
            api_errors: Family::default(),
            alerts_received: Family::default(),
            api_connections: Gauge::default(),
            api_accept_errors: Counter::default(),
            api_connections_evicted: Counter::default(),
            api_connections_refused: Counter::default(),
            alerts_stored: Gauge::default(),
            alerts_dropped: Counter::default(),
            alerts_expired: Counter::default(),
            orphaned_steps: Gauge::default(),
            prometheus_reachable: Family::default(),
            journal_replaced: Gauge::default(),
            state_lost: Gauge::default(),
            journal_compactions: Counter::default(),
            config_reload_failures: Counter::default(),
            rto: Family::default(),
            cluster_owner: Family::default(),
            cluster_etcd_up: Family::default(),
            // 1 ms .. ~4 s: a renewal slower than a third of lease_ttl
            // (2s at least) has timed out.
            cluster_lease_renew: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 13),
            ),

            registry: Registry::default(),
        }
    }

    /// Everything in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// A rollback plan ended: `outcome` is `rolled_back` or `failed`.
    pub fn rollback_finished(&self, target: &str, outcome: &str) {
        self.rollbacks
            .get_or_create(&OutcomeLabels {
                target: target.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// An incident closed with `outcome`.
    pub fn incident_closed(&self, target: &str, outcome: &str) {
        self.incidents
            .get_or_create(&OutcomeLabels {
                target: target.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The target's incident is now in `phase` (an [`OPEN_PHASES`] name);
    /// any other phase (watching, done) means no open incident.
    pub fn incident_phase(&self, target: &str, phase: &str) {
        for p in OPEN_PHASES {
            self.incidents_open
                .get_or_create(&PhaseLabels {
                    target: target.into(),
                    phase: p.into(),
                })
                .set(i64::from(p == phase));
        }
    }

    /// `target` is in `phase` (e.g. recovered from the journal): sets
    /// `incidents_open` without counting a transition.
    pub fn phase(&self, target: &str, phase: &Phase) {
        self.incident_phase(target, phase_label(phase));
    }

    /// First bad evidence to the start of the rollback plan.
    pub fn detection(&self, seconds: f64) {
        self.detection.observe(seconds.max(0.0));
    }

    /// One target poll took this long.
    pub fn poll_duration(&self, took: Duration) {
        self.poll_duration.observe(took.as_secs_f64());
    }

    /// Publish one rule's latest evaluation: value, threshold, baseline and
    /// status. A value or baseline that is absent removes its series
    /// (absence of data is not zero).
    pub fn rule(&self, target: &str, r: &RuleReport) {
        self.target_seen(target);
        let labels = RuleLabels {
            target: target.into(),
            rule: r.rule.clone(),
        };
        match r.value {
            Some(v) => {
                self.rule_value.get_or_create(&labels).set(v);
            }
            None => {
                self.rule_value.remove(&labels);
            }
        }
        self.rule_threshold.get_or_create(&labels).set(r.threshold);
        match r.baseline {
            Some(b) => {
                self.rule_baseline.get_or_create(&labels).set(b);
            }
            None => {
                self.rule_baseline.remove(&labels);
            }
        }
        for status in RULE_STATUSES {
            self.rule_status
                .get_or_create(&RuleStatusLabels {
                    target: target.into(),
                    rule: r.rule.clone(),
                    status: status.into(),
                })
                .set(i64::from(r.status.name() == status));
        }
    }

    /// Create `target`'s rollback counters at 0, so that `increase()` sees
    /// the first rollback (a series that starts at 1 has no increase).
    fn target_seen(&self, target: &str) {
        for outcome in ["rolled_back", "failed"] {
            let labels = OutcomeLabels {
                target: target.into(),
                outcome: outcome.into(),
            };
            let _ = self.rollbacks.get_or_create(&labels);
        }
    }

    /// `target` is no longer watched (a reload removed it): drop its series
    /// so that dashboards and alerts do not show a stale state. `rules` are
    /// its rule names.
    pub fn target_removed(&self, target: &str, rules: &[&str]) {
        let t = || target.to_string();
        self.cluster_owner.remove(&TargetLabels { target: t() });
        for outcome in OUTCOMES {
            let labels = OutcomeLabels {
                target: t(),
                outcome: outcome.into(),
            };
            self.rollbacks.remove(&labels);
            self.incidents.remove(&labels);
        }
        for phase in OPEN_PHASES {
            self.incidents_open.remove(&PhaseLabels {
                target: t(),
                phase: phase.into(),
            });
        }
        for to in PHASE_NAMES {
            self.transitions.remove(&TransitionLabels {
                target: t(),
                to: to.into(),
            });
        }
        for rule in rules {
            let labels = RuleLabels {
                target: t(),
                rule: rule.to_string(),
            };
            self.rule_value.remove(&labels);
            self.rule_threshold.remove(&labels);
            self.rule_baseline.remove(&labels);
            for status in RULE_STATUSES {
                self.rule_status.remove(&RuleStatusLabels {
                    target: t(),
                    rule: rule.to_string(),
                    status: status.into(),
                });
            }
        }
        self.global_limit_refusals
            .remove(&TargetLabels { target: t() });
    }

    /// A transition of `target`'s state machine into `phase` (journaled):
    /// counts it, updates `incidents_open`, and when an incident closed,
    /// counts it and, if its plan ran, the rollback.
    pub fn transition(&self, target: &str, phase: &Phase) {
        self.transitions
            .get_or_create(&TransitionLabels {
                target: target.into(),
                to: phase.name().into(),
            })
            .inc();
        self.incident_phase(target, phase_label(phase));
        if let Phase::Done { incident, .. } = phase {
            if let Some(met) = incident.rto_met() {
                self.rto
                    .get_or_create(&RtoLabels {
                        target: target.into(),
                        result: if met { "met" } else { "missed" }.into(),
                    })
                    .inc();
            }
            if let Some(outcome) = incident.outcome {
                let outcome = outcome_label(outcome);
                self.incident_closed(target, outcome);
                if incident.rollback_started.is_some()
                    && matches!(outcome, "rolled_back" | "failed")
                {
                    self.rollback_finished(target, outcome);
                }
            }
        }
    }

    /// A journal append failed.
    pub fn journal_error(&self) {
        self.journal_errors.inc();
    }

    /// The journal file is now `bytes` long.
    pub fn journal_bytes(&self, bytes: u64) {
        self.journal_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The global rollback limit refused `target`'s rollback.
    pub fn global_limit_refused(&self, target: &str) {
        self.global_limit_refusals
            .get_or_create(&TargetLabels {
                target: target.into(),
            })
            .inc();
    }

    /// `n` notifications wait in `channel`'s outbox.
    pub fn notifications_pending(&self, channel: &str, n: usize) {
        // The failure counter starts at 0 (see `target_seen`).
        let _ = self
            .notifications_failed
            .get_or_create(&channel_labels(channel));
        self.notifications_pending
            .get_or_create(&channel_labels(channel))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A notification was delivered on `channel`.
    pub fn notification_sent(&self, channel: &str) {
        self.notifications_sent
            .get_or_create(&channel_labels(channel))
            .inc();
    }

    /// A delivery attempt on `channel` failed.
    pub fn notification_send_error(&self, channel: &str) {
        self.notification_send_errors
            .get_or_create(&channel_labels(channel))
            .inc();
    }

    /// A notification on `channel` was given up and moved to `failed/`.
    pub fn notification_failed(&self, channel: &str) {
        self.notifications_failed
            .get_or_create(&channel_labels(channel))
            .inc();
    }

    /// Notifications given up on `channel` so far.
    pub fn notifications_failed_count(&self, channel: &str) -> u64 {
        self.notifications_failed
            .get(&channel_labels(channel))
            .map_or(0, |c| c.get())
    }

    /// A notification for `target` on `channel` waits for its rate limit.
    pub fn notification_rate_limited(&self, channel: &str, target: &str) {
        self.notifications_rate_limited
            .get_or_create(&ChannelTargetLabels {
                channel: channel.into(),
                target: target.into(),
            })
            .inc();
    }

    /// A notification of `kind` for `target` was merged into an earlier one.
    pub fn notification_merged(&self, target: &str, kind: &str) {
        self.notifications_merged
            .get_or_create(&KindLabels {
                target: target.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// The config file was loaded (at start or on reload), or found invalid
    /// (the old config stays).
    pub fn config_loaded(&self, ok: bool, now: DateTime<Utc>) {
        self.config_last_reload_success.set(i64::from(ok));
        if ok {
            self.config_last_reload_timestamp
                .set(now.timestamp_millis() as f64 / 1000.0);
        }
    }

    /// A confirmation link was refused.
    pub fn confirm_link_refused(&self) {
        self.confirm_links_refused.inc();
    }

    /// The API answered with an error `status`.
    pub fn api_error(&self, status: &str) {
        self.api_errors
            .get_or_create(&StatusLabels {
                status: status.into(),
            })
            .inc();
    }

    /// API connections open now.
    pub fn api_connections(&self, n: usize) {
        self.api_connections
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// An accept on the API socket failed.
    pub fn api_accept_error(&self) {
        self.api_accept_errors.inc();
    }

    /// An idle API connection was closed to make room.
    pub fn api_connection_evicted(&self) {
        self.api_connections_evicted.inc();
    }

    /// A new API connection was closed at once (every slot busy).
    pub fn api_connection_refused(&self) {
        self.api_connections_refused.inc();
    }

    /// Alerts kept in the store now.
    pub fn alerts_stored(&self, n: usize) {
        self.alerts_stored.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// `n` alerts were not kept (caps).
    pub fn alerts_dropped(&self, n: usize) {
        self.alerts_dropped.inc_by(n as u64);
    }

    /// `n` alerts expired.
    pub fn alerts_expired(&self, n: usize) {
        self.alerts_expired.inc_by(n as u64);
    }

    /// Steps of a previous run found still running at start.
    pub fn orphaned_steps(&self, n: usize) {
        self.orphaned_steps
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Whether Prometheus server `server` answered its latest query
    /// (`None`: not asked yet, no series).
    pub fn prometheus_reachable(&self, server: &str, up: Option<bool>) {
        let labels = ServerLabels {
            server: server.to_string(),
        };
        match up {
            Some(up) => {
                self.prometheus_reachable
                    .get_or_create(&labels)
                    .set(i64::from(up));
            }
            None => {
                self.prometheus_reachable.remove(&labels);
            }
        }
    }

    /// Whether the journal file was deleted or replaced under the daemon.
    pub fn journal_replaced(&self, gone: bool) {
        self.journal_replaced.set(i64::from(gone));
    }

    /// Whether the daemon runs in state-lost mode (acts on no target).
    pub fn state_lost(&self, lost: bool) {
        self.state_lost.set(i64::from(lost));
    }

    /// The journal was compacted into a snapshot.
    pub fn journal_compacted(&self) {
        self.journal_compactions.inc();
    }

    /// A reload was refused (invalid config).
    pub fn config_reload_failed(&self) {
        self.config_reload_failures.inc();
    }

    /// Whether this node holds `target`'s cluster lock.
    pub fn cluster_owner(&self, target: &str, owner: bool) {
        self.cluster_owner
            .get_or_create(&TargetLabels {
                target: target.into(),
            })
            .set(i64::from(owner));
    }

    /// Whether etcd is reachable from node `node` (its lease renews).
    pub fn cluster_etcd_up(&self, node: &str, up: bool) {
        self.cluster_etcd_up
            .get_or_create(&NodeLabels { node: node.into() })
            .set(i64::from(up));
    }

    /// One etcd lease keepalive took `took`.
    pub fn cluster_lease_renewed(&self, took: Duration) {
        self.cluster_lease_renew.observe(took.as_secs_f64());
    }

    /// `n` alerts were received on the Alertmanager webhook with `result`.
    pub fn alerts_received(&self, result: &str, n: usize) {
        self.alerts_received
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc_by(n as u64);
    }
}

fn channel_labels(channel: &str) -> ChannelLabels {
    ChannelLabels {
        channel: channel.into(),
    }
}

/// Register the decisions and rules: rollbacks, incidents, transitions, rule values, polls, the journal's errors and size, the global cap, with their HELP text (in the order they render).
fn register_decisions(r: &mut Registry, m: &Metrics) {
    r.register(
        "rollbackd_rollbacks",
        "Rollback plans that ran to an end, by outcome (rolled_back: verified; failed: the plan failed or did not heal the service)",
        m.rollbacks.clone(),
    );
    r.register(
        "rollbackd_incidents",
        "Incidents closed, by outcome (rolled_back, failed, dry_run, escalated, resolved, suppressed, shadow)",
        m.incidents.clone(),
    );
    r.register(
        "rollbackd_incidents_open",
        "1 while the target has an incident in this phase (awaiting_confirmation, rolling_back, verifying)",
        m.incidents_open.clone(),
    );
    r.register(
        "rollbackd_transitions",
        "Phase transitions of the per-target state machine, by phase entered",
        m.transitions.clone(),
    );
    r.register(
        "rollbackd_rule_value",
        "Latest value of each rule (absent while the rule has no data)",
        m.rule_value.clone(),
    );
    r.register(
        "rollbackd_rule_threshold",
        "Threshold each rule's value is compared with (above, or K x baseline)",
        m.rule_threshold.clone(),
    );
    r.register(
        "rollbackd_rule_baseline",
        "Baseline of each baseline rule (absent until known)",
        m.rule_baseline.clone(),
    );
    r.register(
        "rollbackd_rule_status",
        "1 for the rule's current status (ok, pending, breached, unknown), 0 for the others",
        m.rule_status.clone(),
    );
    r.register(
        "rollbackd_poll_duration_seconds",
        "Duration of one target poll: its version and every rule's source, read concurrently",
        m.poll_duration.clone(),
    );
    r.register(
        "rollbackd_detection_seconds",
        "Time from the first bad evaluation of the rules that opened an incident to the start of its rollback plan",
        m.detection.clone(),
    );
    r.register(
        "rollbackd_journal_errors",
        "Failed journal appends (the transition was not taken)",
        m.journal_errors.clone(),
    );
    r.register(
        "rollbackd_journal_bytes",
        "Size of state_dir/journal.jsonl after the last append",
        m.journal_bytes.clone(),
    );
    r.register(
        "rollbackd_global_limit_refusals",
        "Rollbacks refused by the global [daemon] max_rollbacks_per_hour",
        m.global_limit_refusals.clone(),
    );
}

/// Register notifications, config loads and confirmation links, with their HELP text (in the order they render).
fn register_notifications(r: &mut Registry, m: &Metrics) {
    r.register(
        "rollbackd_notifications_pending",
        "Notifications waiting in the outbox at the last scan",
        m.notifications_pending.clone(),
    );
    r.register(
        "rollbackd_notifications_sent",
        "Notifications accepted by their server",
        m.notifications_sent.clone(),
    );
    r.register(
        "rollbackd_notification_send_errors",
        "Failed delivery attempts",
        m.notification_send_errors.clone(),
    );
    r.register(
        "rollbackd_notifications_failed",
        "Notifications given up after give_up_after and moved to failed/",
        m.notifications_failed.clone(),
    );
    r.register(
        "rollbackd_notifications_rate_limited",
        "Notifications held back by a rate limit",
        m.notifications_rate_limited.clone(),
    );
    r.register(
        "rollbackd_notifications_merged",
        "Notifications merged into one already written",
        m.notifications_merged.clone(),
    );
    r.register(
        "rollbackd_config_last_reload_success",
        "1 when the last load of the config file (start or reload) succeeded, 0 when it was invalid and the old config was kept",
        m.config_last_reload_success.clone(),
    );
    r.register(
        "rollbackd_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful load of the config file",
        m.config_last_reload_timestamp.clone(),
    );
    r.register(
        "rollbackd_confirm_links_refused",
        "Approve/reject links refused (invalid, expired or used)",
        m.confirm_links_refused.clone(),
    );
}

/// Register the API, Alertmanager's alerts and orphaned steps, with their HELP text (in the order they render).
fn register_api_and_alerts(r: &mut Registry, m: &Metrics) {
    r.register(
        "rollbackd_api_errors",
        "API error answers, by HTTP status",
        m.api_errors.clone(),
    );
    r.register(
        "rollbackd_alerts_received",
        "Alerts received on the Alertmanager webhook (accepted or duplicate)",
        m.alerts_received.clone(),
    );
    r.register(
        "rollbackd_api_connections",
        "API connections open now (capped; idle ones and slow guest bodies make room)",
        m.api_connections.clone(),
    );
    r.register(
        "rollbackd_api_accept_errors",
        "Failed accepts on the API socket (EMFILE and the like; never fatal)",
        m.api_accept_errors.clone(),
    );
    r.register(
        "rollbackd_api_connections_evicted",
        "API connections closed to make room for a new one (idle, then slow guest bodies)",
        m.api_connections_evicted.clone(),
    );
    r.register(
        "rollbackd_api_connections_refused",
        "API connections closed at once because nothing could make room",
        m.api_connections_refused.clone(),
    );
    r.register(
        "rollbackd_alerts_stored",
        "Alerts kept from Alertmanager (firing, or resolved and remembered)",
        m.alerts_stored.clone(),
    );
    r.register(
        "rollbackd_alerts_dropped",
        "Alerts not kept because a per-rule or total cap was reached",
        m.alerts_dropped.clone(),
    );
    r.register(
        "rollbackd_alerts_expired",
        "Alerts forgotten at endsAt or after resolve_timeout without a resend",
        m.alerts_expired.clone(),
    );
    r.register(
        "rollbackd_orphaned_steps_found",
        "Steps of a previous run found still running at start (killed and reported)",
        m.orphaned_steps.clone(),
    );
}

/// Register Prometheus reachability, the journal's health, reloads, rto, `[cluster]` and the build, with their HELP text (in the order they render).
fn register_state_and_cluster(r: &mut Registry, m: &Metrics) {
    r.register(
        "rollbackd_prometheus_reachable",
        "1 while the Prometheus server answers (an error answer too), 0 while it does not (refused, timed out)",
        m.prometheus_reachable.clone(),
    );
    r.register(
        "rollbackd_journal_replaced",
        "1 while the journal file is no longer the one in state_dir (deleted or replaced): nothing is acted on",
        m.journal_replaced.clone(),
    );
    r.register(
        "rollbackd_state_lost",
        "1 while rollbackd runs in state-lost mode: its snapshot and journal could not be read consistently at start, so it acts on no target (docs/systemd.md)",
        m.state_lost.clone(),
    );
    r.register(
        "rollbackd_journal_compactions",
        "Journal compactions into snapshot.json",
        m.journal_compactions.clone(),
    );
    r.register(
        "rollbackd_config_reload_failures",
        "Reloads refused because the config file was invalid (the running config is kept)",
        m.config_reload_failures.clone(),
    );
    r.register(
        "rollbackd_rto",
        "Incidents with a rollback measured against the target's rto (first bad evidence to verified recovery), by result (met, missed)",
        m.rto.clone(),
    );
    r.register(
        "rollbackd_cluster_owner",
        "1 while this node holds the target's etcd lock and may act on it, 0 while another node or none does ([cluster] only)",
        m.cluster_owner.clone(),
    );
    r.register(
        "rollbackd_cluster_etcd_up",
        "1 while this node's etcd lease is being renewed, 0 while etcd is unreachable; labelled with this node's name, absent without [cluster]",
        m.cluster_etcd_up.clone(),
    );
    r.register(
        "rollbackd_cluster_lease_renew_seconds",
        "Round trip of one etcd lease keepalive ([cluster] only)",
        m.cluster_lease_renew.clone(),
    );
    r.register(
        "rollbackd_build",
        "The running build",
        Info::new(VersionLabels {
            version: env!("CARGO_PKG_VERSION").to_string(),
        }),
    );
}

/// The `incidents_open` phase of a state; `watching` or `done` when no
/// incident is open.
fn phase_label(phase: &Phase) -> &'static str {
    match phase {
        Phase::Watching => "watching",
        Phase::AwaitingConfirmation { .. } => "awaiting_confirmation",
        Phase::RollingBack { .. } => "rolling_back",
        Phase::Verifying { .. } => "verifying",
        Phase::Done { .. } => "done",
    }
}

/// The `outcome` label of an incident's outcome.
pub fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::RolledBack => "rolled_back",
        Outcome::Failed => "failed",
        Outcome::DryRun => "dry_run",
        Outcome::Escalated => "escalated",
        Outcome::Resolved => "resolved",
        Outcome::Suppressed => "suppressed",
        Outcome::Shadow => "shadow",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleStatus;

    fn report(rule: &str, value: Option<f64>, status: RuleStatus) -> RuleReport {
        RuleReport::ok(rule, Utc::now())
            .status(status)
            .value(value)
            .for_(Duration::from_secs(60))
    }

    #[test]
    fn every_family_has_help_and_build_info_is_set() {
        let m = Metrics::new();
        m.rollback_finished("web", "rolled_back");
        m.incident_phase("web", "watching");
        m.rule("web", &report("r", Some(1.0), RuleStatus::Ok));
        m.notifications_pending("email", 0);
        m.notification_failed("email");
        let text = m.render();
        assert!(!text.contains(".."), "{text}");
        for family in [
            "rollbackd_rollbacks",
            "rollbackd_incidents_open",
            "rollbackd_rule_value",
            "rollbackd_rule_status",
            "rollbackd_poll_duration_seconds",
            "rollbackd_detection_seconds",
            "rollbackd_notifications_pending",
            "rollbackd_notifications_failed",
            "rollbackd_config_last_reload_success",
            "rollbackd_journal_bytes",
            "rollbackd_build",
        ] {
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "no HELP for {family}:\n{text}"
            );
        }
        assert!(
            text.contains(&format!(
                "rollbackd_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn rule_series_follow_the_report_and_escape_labels() {
        let m = Metrics::new();
        let since = Utc::now();
        m.rule(
            "web",
            &report("a\"b", Some(0.75), RuleStatus::Breached { since }),
        );
        let text = m.render();
        assert!(
            text.contains("rollbackd_rule_value{target=\"web\",rule=\"a\\\"b\"} 0.75\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "rollbackd_rule_status{target=\"web\",rule=\"a\\\"b\",status=\"breached\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "rollbackd_rule_status{target=\"web\",rule=\"a\\\"b\",status=\"ok\"} 0\n"
            ),
            "{text}"
        );
        // No data: the value series goes away, it does not become 0.
        m.rule(
            "web",
            &report(
                "a\"b",
                None,
                RuleStatus::Unknown {
                    since,
                    why: "timeout".into(),
                },
            ),
        );
        let text = m.render();
        assert!(!text.contains("rollbackd_rule_value{"), "{text}");
        assert!(
            text.contains(
                "rollbackd_rule_status{target=\"web\",rule=\"a\\\"b\",status=\"unknown\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn counters_histograms_and_open_incidents() {
        let m = Metrics::new();
        m.rollback_finished("web", "rolled_back");
        m.detection(42.0);
        m.poll_duration(Duration::from_millis(30));
        m.incident_phase("web", "rolling_back");
        m.notification_failed("email");
        m.config_loaded(true, Utc::now());
        m.cluster_owner("web", true);
        m.cluster_etcd_up("deploy-1", true);
        m.cluster_lease_renewed(Duration::from_millis(3));
        let text = m.render();
        for line in [
            "rollbackd_cluster_owner{target=\"web\"} 1\n",
            "rollbackd_cluster_etcd_up{node=\"deploy-1\"} 1\n",
            "rollbackd_cluster_lease_renew_seconds_bucket{le=\"0.004\"} 1\n",
            "# TYPE rollbackd_rollbacks counter\n",
            "rollbackd_rollbacks_total{target=\"web\",outcome=\"rolled_back\"} 1\n",
            "rollbackd_detection_seconds_count 1\n",
            "rollbackd_detection_seconds_bucket{le=\"80.0\"} 1\n",
            "rollbackd_poll_duration_seconds_count 1\n",
            "rollbackd_incidents_open{target=\"web\",phase=\"rolling_back\"} 1\n",
            "rollbackd_incidents_open{target=\"web\",phase=\"verifying\"} 0\n",
            "rollbackd_notifications_failed_total{channel=\"email\"} 1\n",
            "rollbackd_config_last_reload_success 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert_eq!(m.notifications_failed_count("email"), 1);
        // A target removed by a reload leaves no series behind.
        m.rule("web", &report("r", Some(1.0), RuleStatus::Ok));
        m.transition("web", &Phase::Watching);
        m.target_removed("web", &["r"]);
        let text = m.render();
        assert!(!text.contains("target=\"web\""), "{text}");
        m.incident_phase("web", "watching");
        assert!(m
            .render()
            .contains("rollbackd_incidents_open{target=\"web\",phase=\"rolling_back\"} 0\n"));
    }
}
