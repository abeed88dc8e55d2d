//! What the client commands `status` and `incidents` print, from
//! the API's JSON ([`render_targets`], [`render_incident_list`]).

use std::fmt::Write;

use crate::decide::{Incident, Phase};
use crate::util::fmt_value;

/// The `status` table from `GET /v1/status`.
pub fn render_targets(status: &crate::api::StatusResponse) -> anyhow::Result<String> {
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

/// Incidents (newest first, as given) with their timelines.
pub fn render_incident_list(incidents: &[Incident]) -> anyhow::Result<String> {
    let mut out = String::new();
    if incidents.is_empty() {
        writeln!(out, "no incidents")?;
    }
    for inc in incidents {
        let state = match inc.outcome {
            Some(o) => o.label().to_string(),
            None => format!("OPEN ({})", inc.phase_name()),
        };
        writeln!(out, "{}  {}  {}", inc.id, state, inc.summary())?;
        for t in &inc.timeline {
            writeln!(
                out,
                "  {}  {:<12} {}",
                t.at.format("%Y-%m-%d %H:%M:%S%.3fZ"),
                t.phase,
                t.message
            )?;
        }
    }
    Ok(out)
}
