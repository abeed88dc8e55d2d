//! `rollbackd status`, `GET /v1/status`: every target, its state, the
//! release window and the latest rule values; the answer's types and the
//! table the client prints.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::MethodRouter;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{answer, on, ApiCommand, ClientArgs, Invoke, Method, Request};
use crate::api::ApiState;
use crate::decide::{Pause, Phase, TargetState, Time};
use crate::util::fmt_value;

/// Targets, their state, release window and the latest rule values.
#[derive(clap::Args, Debug)]
pub struct Status {
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

impl ApiCommand for Status {
    const ROUTE: &'static str = "/v1/status";
    const METHOD: Method = Method::Get;
    const MUTATES: bool = false;
    fn handler() -> MethodRouter<Arc<ApiState>> {
        on::<Self, _, _>(status)
    }
}

impl Invoke for Status {
    fn request(&self) -> Request {
        Request::to::<Self>(&[])
    }

    fn print(&self, v: Value) -> anyhow::Result<String> {
        render_targets(&answer(v)?)
    }
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    /// Global dry-run.
    pub dry_run: bool,
    /// Set while the journal cannot be written: nothing that needs a
    /// journal entry is acted on until it can (the error, with the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_error: Option<String>,
    /// Set in state-lost mode: the state could not be read at start, so no
    /// target is acted on (why, and how an operator gets out of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_lost: Option<String>,
    /// Every target, in config order.
    pub targets: Vec<TargetStatus>,
}

/// One target in `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetStatus {
    /// Target name.
    pub name: String,
    /// State name (`Watching`, `AwaitingConfirmation`, ...).
    pub phase: String,
    /// The release window active now, if any (decisions are dry-run).
    pub window: Option<String>,
    /// Paused by whom, since when.
    pub paused: Option<Pause>,
    /// Confirmation, verification or cooldown deadline of the phase.
    pub until: Option<Time>,
    /// The full decision state: versions, rules with values, incident.
    pub state: TargetState,
    /// With `[cluster]`: which node acts on the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// With `[cluster]`: who holds a target's lock, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that owns the target and acts on it (`None`: no node yet).
    pub owner: Option<String>,
    /// Another node owns it: this node only watches.
    pub standby: bool,
}

async fn status(State(api): State<Arc<ApiState>>) -> Json<StatusResponse> {
    let now = Utc::now();
    let view = api.view();
    let window = view
        .windows
        .iter()
        .find(|w| w.contains(now))
        .map(|w| w.name.clone());
    let targets = view
        .order
        .iter()
        .filter_map(|n| view.targets.get(n))
        .map(|h| {
            let state = h.state.borrow().clone();
            TargetStatus {
                name: h.name.clone(),
                phase: state.phase.name().to_string(),
                window: window.clone(),
                paused: state.paused.clone(),
                until: until(&state.phase),
                state,
                cluster: h.cluster.borrow().as_ref().map(|o| ClusterStatus {
                    owner: o.owner.as_ref().map(|w| w.node.clone()),
                    standby: o.standby,
                }),
            }
        })
        .collect();
    let journal_error = api
        .journal_error
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(StatusResponse {
        dry_run: view.dry_run,
        journal_error,
        state_lost: api.state_lost.clone(),
        targets,
    })
}

fn until(phase: &Phase) -> Option<Time> {
    match phase {
        Phase::AwaitingConfirmation { deadline, .. } | Phase::Verifying { deadline, .. } => {
            Some(*deadline)
        }
        Phase::Done { until, .. } => Some(*until),
        Phase::Watching | Phase::RollingBack { .. } => None,
    }
}

/// The `status` table from `GET /v1/status`.
pub fn render_targets(status: &StatusResponse) -> anyhow::Result<String> {
    let mut out = String::new();
    if let Some(why) = &status.state_lost {
        writeln!(out, "STATE LOST: {why}")?;
    }
    if let Some(e) = &status.journal_error {
        writeln!(
            out,
            "JOURNAL FAILING: {e}\n  rollbackd acts on nothing that it cannot journal; results \
             are retried every second. Rule values below are live."
        )?;
    }
    if status.dry_run {
        writeln!(out, "dry-run: nothing is executed (daemon.dry_run = true)")?;
    }
    if let Some(w) = status.targets.first().and_then(|t| t.window.as_ref()) {
        writeln!(out, "release window {w:?} is active: decisions are dry-run")?;
    }
    if status.targets.is_empty() {
        writeln!(out, "no targets")?;
    }
    for t in &status.targets {
        render_target(&mut out, &t.name, &t.state)?;
        if let Some(c) = &t.cluster {
            let line = match (&c.owner, c.standby) {
                (Some(owner), true) => {
                    format!("  standby: node {owner} owns this target and acts on it")
                }
                (Some(owner), false) => format!("  owner: this node ({owner}) acts on this target"),
                (None, _) => {
                    "  owner: none yet (the first node that must act takes it)".to_string()
                }
            };
            writeln!(out, "{line}")?;
        }
    }
    Ok(out)
}

/// One target's block: state, version, guards, each rule's value.
fn render_target(
    out: &mut String,
    name: &str,
    s: &crate::decide::TargetState,
) -> anyhow::Result<()> {
    {
        writeln!(
            out,
            "{name}: {}  version {}{}",
            s.phase.name(),
            s.version.as_deref().unwrap_or("unknown"),
            match &s.phase {
                Phase::Done { until, .. } =>
                    format!("  (cooldown until {})", until.format("%Y-%m-%d %H:%M:%SZ")),
                Phase::Verifying { deadline, .. } =>
                    format!("  (verify deadline {})", deadline.format("%H:%M:%SZ")),
                Phase::AwaitingConfirmation { incident, deadline } => format!(
                    "  (incident {} waits for approval until {})",
                    incident.id,
                    deadline.format("%Y-%m-%d %H:%M:%SZ")
                ),
                _ => String::new(),
            }
        )?;
        if let Some(p) = &s.paused {
            writeln!(
                out,
                "  paused by {} at {}{} {}: breaches escalate instead of rolling back",
                p.by,
                p.at.format("%Y-%m-%d %H:%M:%SZ"),
                p.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                match p.until {
                    Some(u) => format!("until {}", u.format("%Y-%m-%d %H:%M:%SZ")),
                    None => "until resumed".to_string(),
                }
            )?;
        }
        if let Some(w) = &s.waiting {
            writeln!(out, "  {w}")?;
        }
        if let Some(g) = &s.loop_guard {
            writeln!(
                out,
                "  loop guard: will not roll back again while {g} is live"
            )?;
        }
        if let Some(at) = s.blind_notified {
            writeln!(
                out,
                "  monitoring blind since {} (admin notified)",
                at.format("%Y-%m-%d %H:%M:%SZ")
            )?;
        }
        if !s.shadow_breached.is_empty() {
            writeln!(
                out,
                "  shadow: would roll back on {} (recorded; shadow rules never act)",
                s.shadow_breached.join(", ")
            )?;
        }
        for r in &s.rules {
            writeln!(out, "  {}", rule_line(r))?;
        }
    }
    Ok(())
}

/// One rule: name, status, value (with the series' labels), baseline,
/// threshold, and why there is no value when there is none.
fn rule_line(r: &crate::rules::RuleReport) -> String {
    let mut line = format!(
        "{:<20} {:<9} value {:<10}",
        r.rule,
        r.status.name(),
        r.value.map(fmt_value).unwrap_or_else(|| "-".into()),
    );
    if r.shadow {
        line.insert_str(0, "(shadow) ");
    }
    if r.above_baseline.is_some() {
        line.push_str(&format!(
            " baseline {:<10}",
            r.baseline.map(fmt_value).unwrap_or_else(|| "-".into())
        ));
    }
    line.push_str(&format!(" threshold {}", r.threshold_text()));
    if !r.labels.is_empty() {
        line.push_str(&format!(
            "  series {}",
            crate::sources::prometheus::fmt_labels(&r.labels)
        ));
    }
    if let crate::rules::RuleStatus::Unknown { why, .. } = &r.status {
        line.push_str(&format!("  ({why})"));
    }
    // What the source saw: probe failures by reason, the range judged.
    if let Some(detail) = &r.detail {
        line.push_str(&format!("  [{detail}]"));
    }
    line
}
