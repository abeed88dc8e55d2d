//! The decision engine: a pure state machine per target.
//!
//! [`step`] takes the target's [`TargetState`], one [`Event`] and the time,
//! and returns the next state plus the [`Action`]s the runner must carry out.
//! It does no I/O and never reads the clock, so table tests drive it without
//! sleeping. The incident model ([`Incident`]) travels inside the state and
//! is what the journal, the record and the email are made from.

mod blast;
mod human;
mod incident;
mod machine;
pub mod peers;
mod recovery;
pub mod server_watch;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use incident::DecideConfig;
pub use machine::{step, StepError};
pub use peers::{open_incident, BusyPeer};

mod shadow;

use crate::report::{CheckReport, StepReport};
use crate::rules::RuleReport;

/// Wall-clock time as used everywhere in decisions.
pub type Time = DateTime<Utc>;

/// Everything the decision engine remembers about one target. This is what
/// the journal snapshots and recovery restores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    /// Target name.
    pub target: String,
    /// Where the target is in the incident lifecycle.
    pub phase: Phase,
    /// The live version as last observed.
    pub version: Option<String>,
    /// The version that was live before `version` (the rollback goal).
    pub previous_version: Option<String>,
    /// When `version` was first seen live.
    pub deployed_at: Option<Time>,
    /// Latest rule evaluations, for explanations and verification.
    pub rules: Vec<RuleReport>,
    /// Start times of executed rollbacks (rate limit history).
    pub rollbacks: Vec<Time>,
    /// After rolling back to this version, a breach on it escalates instead
    /// of rolling back again; a deploy of another version clears it.
    pub loop_guard: Option<String>,
    /// The incident whose `after` steps are running: the rollback is not
    /// over until they end, so nothing else may start meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_running: Option<String>,
    /// Sequence for incident IDs.
    pub incident_seq: u64,
    /// When the "monitoring is blind" notification went out; cleared (with
    /// a "seeing again" notification) once every rule has data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blind_notified: Option<Time>,
    /// Automatic action is held (maintenance): a breach escalates instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Pause>,
    /// Shadow rules whose current breach episode was already recorded as
    /// "would roll back": one record and notification per episode, the
    /// episode ends when the rule is Ok again.
    /// (A journal delta writes a field that went away as `null`.)
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub shadow_breached: Vec<String>,
    /// `[daemon] settle`: a rule breached for its `for` at this time and
    /// the trigger is held until it has breached `settle` longer, so that
    /// the blast-radius guard sees the peers that begin to breach
    /// meanwhile. (Absent in older journals: no hold under way.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settling: Option<Time>,
    /// Another target with the same executor has an open incident: this
    /// one opens none while it lasts (why, naming it; see [`peers`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// When the latest such wait ended: a breach that began before it was
    /// the other target's to handle, and is not acted on again here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_until: Option<Time>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `null` (a journal delta's "this field went away") as an empty list.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// Who paused a target, when, why and until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    /// The user or token holder that asked.
    pub by: String,
    /// When.
    pub at: Time,
    /// Why, in their words (shown in `status` and the escalation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The pause ends by itself then; `None`: until resumed (`--for 0`,
    /// asked for explicitly). A forgotten pause must not disable
    /// protection for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Time>,
}

impl TargetState {
    /// A fresh target that is being watched.
    pub fn new(target: &str) -> TargetState {
        TargetState {
            target: target.to_string(),
            phase: Phase::Watching,
            version: None,
            previous_version: None,
            deployed_at: None,
            rules: Vec::new(),
            rollbacks: Vec::new(),
            loop_guard: None,
            after_running: None,
            incident_seq: 0,
            paused: None,
            blind_notified: None,
            shadow_breached: Vec::new(),
            settling: None,
            waiting: None,
            waited_until: None,
        }
    }

    /// Whether `next` differs from this state in anything the journal must
    /// keep, so that recovery restores it: every field counts except the
    /// rules' live values (a rule's name and status count; its value,
    /// sample time and details change every poll and are not worth a line).
    /// Every field is named here: a new one does not compile until it is
    /// decided.
    pub fn journal_worthy_change(&self, next: &TargetState) -> bool {
        let TargetState {
            target,
            phase,
            version,
            previous_version,
            deployed_at,
            rules,
            rollbacks,
            loop_guard,
            after_running,
            incident_seq,
            blind_notified,
            paused,
            shadow_breached,
            settling,
            waiting,
            waited_until,
        } = self;
        let statuses = |rules: &[RuleReport]| -> Vec<(String, &'static str)> {
            rules
                .iter()
                .map(|r| (r.rule.clone(), r.status.name()))
                .collect()
        };
        *target != next.target
            || *phase != next.phase
            || *version != next.version
            || *previous_version != next.previous_version
            || *deployed_at != next.deployed_at
            || statuses(rules) != statuses(&next.rules)
            || *rollbacks != next.rollbacks
            || *loop_guard != next.loop_guard
            || *after_running != next.after_running
            || *incident_seq != next.incident_seq
            || *blind_notified != next.blind_notified
            || *paused != next.paused
            || *shadow_breached != next.shadow_breached
            || *settling != next.settling
            || *waiting != next.waiting
            || *waited_until != next.waited_until
    }

    /// Why the target is where it is: the incident's latest timeline
    /// message (empty when no incident is open).
    pub fn last_note(&self) -> &str {
        self.incident()
            .and_then(|i| i.timeline.last())
            .map(|t| t.message.as_str())
            .unwrap_or_default()
    }

    /// The open or most recent incident, if the phase carries one.
    pub fn incident(&self) -> Option<&Incident> {
        match &self.phase {
            Phase::Watching => None,
            Phase::RollingBack { incident }
            | Phase::AwaitingConfirmation { incident, .. }
            | Phase::Verifying { incident, .. }
            | Phase::Done { incident, .. } => Some(incident),
        }
    }
}

/// The lifecycle of one target (docs/architecture.md, "The phases of a target"). `Triggered` is not a
/// resting phase: a trigger moves on in the same step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// No open incident; rules are watched.
    Watching,
    /// A human (or `confirm_command`) must approve or reject by `deadline`.
    AwaitingConfirmation {
        /// The open incident.
        incident: Box<Incident>,
        /// `on_confirm_timeout` applies from then on.
        deadline: Time,
    },
    /// The rollback plan is running.
    RollingBack {
        /// The open incident.
        incident: Box<Incident>,
    },
    /// The plan succeeded; waiting for the service to be healthy.
    Verifying {
        /// The open incident.
        incident: Box<Incident>,
        /// Healthy by then, or the rollback failed.
        deadline: Time,
        /// Whether every verification gate (verify URL, checks, commands)
        /// passed in the latest round; `None` before the first. (The name
        /// is kept from when the URL was the only gate: journals have it.)
        url_ok: Option<bool>,
        /// A run of the gates ([`Action::Verify`]) is under way: its
        /// [`Event::VerifyChecked`] comes back before another starts, so a
        /// slow gate never piles up runs. (Absent in older journals: none.)
        #[serde(default, skip_serializing_if = "is_false")]
        gates_running: bool,
    },
    /// An incident ended (rolled back, failed, dry-run); breaches are not
    /// acted on until `until` (cooldown).
    Done {
        /// The closed incident.
        incident: Box<Incident>,
        /// End of the cooldown.
        until: Time,
    },
}

impl Phase {
    /// The state name shown to users (`Watching`, `RollingBack`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Watching => "Watching",
            Phase::AwaitingConfirmation { .. } => "AwaitingConfirmation",
            Phase::RollingBack { .. } => "RollingBack",
            Phase::Verifying { .. } => "Verifying",
            Phase::Done { incident, .. } => incident.outcome.map_or("Done", Outcome::phase_name),
        }
    }
}

/// How an incident ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The plan ran and verification passed.
    RolledBack,
    /// The plan failed, timed out, or did not heal the service.
    Failed,
    /// Dry-run: recorded and notified as "would roll back", nothing executed.
    DryRun,
    /// A guard stopped the action; a human was told.
    Escalated,
    /// The signals recovered while waiting for confirmation; nothing done.
    Resolved,
    /// A human rejected the rollback (`reject`): breaches are suppressed
    /// until the cooldown ends (the phase `Suppressed` of docs/architecture.md; older
    /// journals spell it `rejected`).
    #[serde(alias = "rejected")]
    Suppressed,
    /// A shadow rule (`mode = "shadow"`) would have triggered: recorded and
    /// notified, never acted on. Not a phase of the target.
    Shadow,
}

impl Outcome {
    /// The state name of a target whose incident ended this way
    /// (`RolledBack`, `Failed`, `Suppressed`, ...).
    pub fn phase_name(self) -> &'static str {
        match self {
            Outcome::RolledBack => "RolledBack",
            Outcome::Failed => "Failed",
            Outcome::DryRun => "DryRun",
            Outcome::Escalated => "Escalated",
            Outcome::Resolved => "Resolved",
            Outcome::Suppressed => "Suppressed",
            Outcome::Shadow => "Shadow",
        }
    }

    /// Upper-case label for subjects: `ROLLED BACK`, `FAILED`, ...
    pub fn label(self) -> &'static str {
        match self {
            Outcome::RolledBack => "ROLLED BACK",
            Outcome::Failed => "FAILED",
            Outcome::DryRun => "WOULD ROLL BACK",
            Outcome::Escalated => "ESCALATED",
            Outcome::Resolved => "RESOLVED",
            Outcome::Suppressed => "SUPPRESSED",
            Outcome::Shadow => "WOULD ROLL BACK (SHADOW)",
        }
    }
}

/// What opened an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// Rules breached for their `for` duration.
    Rules {
        /// The breached rules with values, thresholds and windows.
        breached: Vec<RuleReport>,
        /// Rules that had no usable data when the target triggered: they
        /// abstained (counted neither for nor against), with why.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        abstained: Vec<RuleReport>,
    },
    /// A human asked for the rollback (`rollbackd trigger`, the API).
    Manual {
        /// Who asked.
        by: String,
        /// Why, in their words.
        reason: String,
    },
}

/// One line of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// When it happened.
    pub at: Time,
    /// The phase entered (or the phase it happened in).
    pub phase: String,
    /// What happened and why, with values.
    pub message: String,
}

/// An incident: from the trigger to the end of verification. It is the
/// single source of the journal entry, the record and the email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `YYYYMMDD-HHMMSS-target-N`, unique and sortable.
    pub id: String,
    /// Target name.
    pub target: String,
    /// What opened it.
    pub cause: Cause,
    /// Live version when it opened.
    pub from_version: Option<String>,
    /// Version the plan goes back to (filled in by the executor if it finds it).
    pub to_version: Option<String>,
    /// Executor kind, e.g. `symlink`.
    pub method: String,
    /// Nothing is executed (global dry-run).
    pub dry_run: bool,
    /// When the trigger held.
    pub opened_at: Time,
    /// When the plan started.
    pub rollback_started: Option<Time>,
    /// When the plan ended.
    pub rollback_finished: Option<Time>,
    /// When verification ended (either way).
    pub verify_finished: Option<Time>,
    /// The plan's steps with exit status, duration and output tail.
    pub steps: Vec<StepReport>,
    /// Verification result in words.
    pub verification: Option<String>,
    /// How it ended; `None` while open.
    pub outcome: Option<Outcome>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Every transition with its explanation.
    pub timeline: Vec<TimelineEntry>,
    /// The plan's `after` steps (run once verification passed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_steps: Vec<StepReport>,
    /// The latest result of each verification gate (URL, checks,
    /// commands) with its measured latency.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_checks: Vec<CheckReport>,
    /// The plan's `on_failure` steps (run when the plan or its
    /// verification failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure_steps: Vec<StepReport>,
    /// The version a human named (`trigger --to-version`): the executor goes
    /// to exactly this one, after checking that it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_version: Option<String>,
    /// Who approved the rollback (`None`: no confirmation was required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_by: Option<String>,
    /// The first bad evidence: when the earliest breached rule's current run
    /// began (its first Pending). Detection time counts from here, not from
    /// the trigger. `None` for manual triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_evidence: Option<Time>,
    /// The target's recovery-time objective (`rto`): first bad evidence to
    /// verified recovery; the record says whether it was met.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::util::serde_duration_opt"
    )]
    pub rto: Option<Duration>,
    /// The blast-radius guard tripped for a group that includes this
    /// incident's breach only after its rollback had started (its peers
    /// began to breach later, or before it could see them): why, and that
    /// it cannot be undone. The incident was escalated once with it.
    /// (Absent in older journals: never.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blast_radius_after_acting: Option<String>,
}

impl Incident {
    /// One sentence of what happened, for logs and subjects.
    pub fn summary(&self) -> String {
        let versions = format!(
            "{} -> {}",
            self.from_version.as_deref().unwrap_or("?"),
            self.to_version.as_deref().unwrap_or("?")
        );
        match self.outcome {
            Some(o) => format!("{}: {} {}", self.target, o.label(), versions),
            None => format!("{}: OPEN {}", self.target, versions),
        }
    }

    /// Whether the incident is still under way (no outcome yet).
    pub fn is_open(&self) -> bool {
        self.outcome.is_none()
    }

    /// The phase the incident is in, read from the incident itself: its
    /// outcome's name once done, else how far the rollback got
    /// (`AwaitingConfirmation`, `RollingBack`, `Verifying`).
    pub fn phase_name(&self) -> &'static str {
        match self.outcome {
            Some(o) => o.phase_name(),
            None if self.rollback_finished.is_some() => "Verifying",
            None if self.rollback_started.is_some() => "RollingBack",
            None => "AwaitingConfirmation",
        }
    }

    /// When the incident's clock starts: the first bad evidence, or the
    /// trigger when there was none (manual).
    pub fn started(&self) -> Time {
        self.first_evidence
            .map_or(self.opened_at, |f| f.min(self.opened_at))
    }

    /// First bad evidence to verified recovery, once verification passed.
    pub fn time_to_recovery(&self) -> Option<Duration> {
        match self.outcome {
            Some(Outcome::RolledBack) => Self::span(Some(self.started()), self.verify_finished),
            _ => None,
        }
    }

    /// Whether the recovery-time objective was met: `Some(true)` rolled back
    /// within `rto`, `Some(false)` rolled back late or not recovered by the
    /// incident's end, `None` while open, without an `rto`, or when nothing
    /// was to be recovered (dry-run, resolved, suppressed, escalated).
    pub fn rto_met(&self) -> Option<bool> {
        let rto = self.rto?;
        match self.outcome? {
            Outcome::RolledBack => self.time_to_recovery().map(|t| t <= rto),
            Outcome::Failed => Some(false),
            _ => None,
        }
    }

    /// Duration between two optional instants.
    pub fn span(from: Option<Time>, to: Option<Time>) -> Option<Duration> {
        match (from, to) {
            (Some(a), Some(b)) => (b - a).to_std().ok(),
            _ => None,
        }
    }
}

/// Something that happened to a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// All rules of the target were evaluated.
    Evaluated {
        /// One report per rule, in config order.
        rules: Vec<RuleReport>,
        /// What the other targets' rules show at the same time (input to
        /// the blast-radius guard).
        #[serde(default, skip_serializing_if = "Fleet::is_quiet")]
        fleet: Fleet,
    },
    /// The live version was read.
    VersionObserved {
        /// The version string.
        version: String,
    },
    /// The rollback plan ended.
    ExecFinished {
        /// The incident it ran for.
        incident: String,
        /// Step reports and result.
        result: crate::report::ExecResult,
    },
    /// The verification gates (verify URL, checks, commands) were run.
    VerifyChecked {
        /// The incident being verified.
        incident: String,
        /// Whether every gate passed.
        ok: bool,
        /// Status or error, for the record.
        detail: String,
        /// Each gate's result with its latency (empty: only the URL, as
        /// journaled by older versions).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        checks: Vec<CheckReport>,
    },
    /// The plan's `on_failure` steps ended.
    OnFailureFinished {
        /// The incident they ran for.
        incident: String,
        /// Step reports and result.
        result: crate::report::ExecResult,
    },
    /// The plan's `after` steps ended (after a verified rollback).
    AfterFinished {
        /// The incident they ran for.
        incident: String,
        /// Step reports and result.
        result: crate::report::ExecResult,
    },
    /// The daemon restarted and recovered this state from the journal.
    Recovered,
    /// A human (or `confirm_command`) approved the incident's rollback.
    Approve {
        /// The incident awaiting confirmation.
        incident: String,
        /// Who approved.
        by: String,
    },
    /// A human (or `confirm_command`) rejected the incident's rollback.
    Reject {
        /// The incident awaiting confirmation.
        incident: String,
        /// Who rejected.
        by: String,
        /// Why, in their words.
        reason: String,
    },
    /// A human asked for a rollback now (confirmation is skipped).
    ManualTrigger {
        /// Who asked.
        by: String,
        /// Why, in their words.
        reason: String,
        /// The version to go back to (`trigger --to-version`), already
        /// checked to exist by the runner; `None`: the previous one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_version: Option<String>,
    },
    /// Hold automatic action on the target.
    Pause {
        /// Who asked.
        by: String,
        /// Why, in their words.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// How long: `None` is `[daemon] max_pause`, zero is "until
        /// resumed" (asked for explicitly).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::util::serde_duration_opt"
        )]
        duration: Option<Duration>,
    },
    /// Release a pause.
    Resume {
        /// Who asked.
        by: String,
    },
    /// Journaled by versions before the global cap became an input of
    /// [`step`] (see [`Guards`]): the runner refused an `Execute`. Kept so
    /// that their journals still read; never produced now, and [`step`]
    /// refuses it as unexpected.
    ExecRefused {
        /// The incident whose rollback was refused.
        incident: String,
        /// The guard that refused, with its numbers.
        reason: String,
    },
}

impl Event {
    /// The event's name as the journal spells it (`approve`, `exec_finished`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Evaluated { .. } => "evaluated",
            Event::VersionObserved { .. } => "version_observed",
            Event::ExecFinished { .. } => "exec_finished",
            Event::VerifyChecked { .. } => "verify_checked",
            Event::AfterFinished { .. } => "after_finished",
            Event::OnFailureFinished { .. } => "on_failure_finished",
            Event::Recovered => "recovered",
            Event::Approve { .. } => "approve",
            Event::Reject { .. } => "reject",
            Event::ManualTrigger { .. } => "manual_trigger",
            Event::Pause { .. } => "pause",
            Event::Resume { .. } => "resume",
            Event::ExecRefused { .. } => "exec_refused",
        }
    }
}

/// What the rest of the daemon shows one target's step at that moment:
/// the inputs of guards that span targets. The runner gathers them before
/// stepping; [`step`] decides with them (the blast-radius guard's input,
/// [`Fleet`], travels in [`Event::Evaluated`] because it explains the
/// evaluation in the journal).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Guards {
    /// `[daemon] max_rollbacks_per_hour` with the rollbacks it counts;
    /// `None`: no global cap.
    pub global: Option<GlobalCap>,
    /// Other targets with this target's executor identity that have an
    /// open incident: this one waits for them ([`peers`]).
    pub busy_executor: Vec<BusyPeer>,
    /// The daemon could not read its state at start (why): no step is
    /// taken on any target ([`peers`]).
    pub state_lost: Option<String>,
}

/// The global cap on executed rollbacks across all targets.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalCap {
    /// `[daemon] max_rollbacks_per_hour`.
    pub max_per_hour: u32,
    /// When the rollbacks of every target (this one included) started;
    /// those of the last hour count.
    pub started: Vec<Time>,
}

/// The other targets as one target's step sees them: how many are watched
/// and when their recent breaches began (a rule Pending or Breached), the
/// breach under way or one that has since ended, e.g. because the target
/// rolled back: the blast-radius guard counts breach starts, not open
/// breaches. The runner gathers it; [`step`] decides with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    /// Targets watched by this daemon, this one included.
    pub targets: usize,
    /// Other targets whose breach began recently (under way or not), with
    /// its start; a target may appear once per start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breaching: Vec<FleetBreach>,
}

impl Fleet {
    /// No other target breaching: nothing worth journaling.
    pub fn is_quiet(&self) -> bool {
        self.breaching.is_empty()
    }
}

/// One other target's recent breach start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetBreach {
    /// Target name.
    pub target: String,
    /// When its earliest Pending or Breached rule's run began.
    pub since: Time,
}

/// When a target's breach began: the earliest `since` of its Pending or
/// Breached rules, `None` when no rule is.
pub fn breach_start(rules: &[RuleReport]) -> Option<Time> {
    rules
        .iter()
        .filter(|r| !r.shadow)
        .filter_map(|r| match r.status {
            crate::rules::RuleStatus::Pending { since }
            | crate::rules::RuleStatus::Breached { since } => Some(since),
            _ => None,
        })
        .min()
}

/// Which notification to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    /// Dry-run: a rollback would have run.
    WouldRollBack,
    /// The plan started.
    RollbackStarted,
    /// The plan ran and verification passed.
    RolledBack,
    /// The plan failed or timed out.
    RollbackFailed,
    /// The plan ran but the service did not recover.
    DidNotHelp,
    /// A guard stopped an automatic rollback.
    Escalated,
    /// The daemon died while the plan was running; verifying instead.
    Interrupted,
    /// A human must approve or reject the rollback.
    AwaitingConfirmation,
    /// The signals recovered before anything was done; no action taken.
    Resolved,
    /// A human rejected the rollback (the incident is `Suppressed`; the
    /// notification is named for what the human did).
    Rejected,
    /// Rules of the target have had no data for `blind_after` (no incident).
    Blind,
    /// The target's rules have data again after a blind episode (no incident).
    Seeing,
    /// Breaches began on many targets at once: escalated, none rolled back.
    /// One notification for the whole group (the notifier merges the rest).
    BlastRadius,
    /// A pause ended by itself (its `--for` ran out; no incident).
    PauseEnded,
    /// A shadow rule would have rolled back; nothing was executed.
    Shadow,
    /// A Prometheus server has not answered for its `blind_after`: one
    /// notification for the server, naming the rules that abstain.
    ServerUnreachable,
    /// That server answers again.
    ServerReachable,
    /// The daemon could not read its state (snapshot and journal) at
    /// start and acts on no target until an operator resolves it (sent
    /// once per start; no incident).
    StateLost,
}

impl NotifyKind {
    /// The severity of this kind of notification (`[target.notify]
    /// min_severity` drops the ones below it).
    pub fn severity(self) -> crate::config::Severity {
        use crate::config::Severity;
        match self {
            NotifyKind::Blind
            | NotifyKind::Seeing
            | NotifyKind::ServerUnreachable
            | NotifyKind::ServerReachable
            | NotifyKind::PauseEnded
            | NotifyKind::Shadow
            | NotifyKind::Resolved => Severity::Info,
            NotifyKind::WouldRollBack
            | NotifyKind::Escalated
            | NotifyKind::BlastRadius
            | NotifyKind::AwaitingConfirmation
            | NotifyKind::Rejected => Severity::Warning,
            NotifyKind::RollbackStarted
            | NotifyKind::RolledBack
            | NotifyKind::RollbackFailed
            | NotifyKind::DidNotHelp
            | NotifyKind::Interrupted
            | NotifyKind::StateLost => Severity::Critical,
        }
    }
}

/// Something the runner must do. Actions are data; [`step`] never performs them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Run the target's rollback plan for this incident.
    Execute {
        /// The incident (ID, versions for template variables).
        incident: Box<Incident>,
    },
    /// Run the verification gates (URL, checks, commands) once and report
    /// back with [`Event::VerifyChecked`]. Asked on entering `Verifying`
    /// and at each evaluation while verifying when no run is under way.
    Verify {
        /// The incident being verified.
        incident: String,
    },
    /// Run the plan's `after` steps (verification passed).
    RunAfter {
        /// The incident.
        incident: Box<Incident>,
    },
    /// Run the plan's `on_failure` steps (the plan failed, or verification
    /// failed: "rollback did not help").
    RunOnFailure {
        /// The incident.
        incident: Box<Incident>,
    },
    /// Send a notification about the incident.
    Notify {
        /// Which one.
        kind: NotifyKind,
        /// Snapshot of the incident.
        incident: Box<Incident>,
    },
    /// Send a notification about the target that is not about an incident
    /// (monitoring blind, seeing again).
    NotifyTarget {
        /// Which one.
        kind: NotifyKind,
        /// Target name.
        target: String,
        /// What happened, with the rules and reasons.
        message: String,
    },
    /// The global cap (`[daemon] max_rollbacks_per_hour`) stopped this
    /// incident's rollback before it started; the incident escalates in
    /// the same step. The runner logs and counts it.
    GlobalLimitRefused {
        /// The incident.
        incident: String,
        /// The guard with its numbers.
        reason: String,
    },
    /// Write (or rewrite) `incidents/ID.md`.
    WriteRecord {
        /// Snapshot of the incident.
        incident: Box<Incident>,
    },
}

#[cfg(test)]
mod tests;
