//! What the client commands `status`, `incidents` and `report` print. The
//! client feeds these from the API's JSON ([`render_targets`],
//! [`render_incident_list`]); [`render_status`] and [`render_incidents`]
//! read the state directory instead (journal and records), read-only, safe
//! beside a live daemon.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::decide::{Incident, Phase};
use crate::journal::{self, Record};
use crate::util::fmt_value;

fn entries(state_dir: &Path) -> anyhow::Result<Vec<journal::Entry>> {
    let path = state_dir.join("journal.jsonl");
    let (entries, problems) =
        journal::read_all(&path).with_context(|| format!("failed to read {}", path.display()))?;
    for p in problems {
        tracing::warn!(problem = %p, "journal");
    }
    Ok(entries)
}

/// One block per target: state, version, each rule's value and threshold.
pub fn render_status(state_dir: &Path) -> anyhow::Result<String> {
    let states = journal::last_states(&entries(state_dir)?);
    let mut out = String::new();
    if states.is_empty() {
        writeln!(
            out,
            "no targets in the journal yet ({})",
            state_dir.display()
        )?;
    }
    let sorted: BTreeMap<_, _> = states.into_iter().collect();
    for (name, s) in sorted {
        render_target(&mut out, &name, &s)?;
    }
    Ok(out)
}

/// The `status` table from `GET /v1/status`.
pub fn render_targets(status: &crate::api::StatusResponse) -> anyhow::Result<String> {
    let mut out = String::new();
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
                "  paused by {} at {}: breaches escalate instead of rolling back",
                p.by,
                p.at.format("%Y-%m-%d %H:%M:%SZ")
            )?;
        }
        if let Some(g) = &s.loop_guard {
            writeln!(
                out,
                "  loop guard: will not roll back again while {g} is live"
            )?;
        }
        for r in &s.rules {
            writeln!(
                out,
                "  {:<20} {:<9} value {:<10} threshold {}",
                r.rule,
                r.status.name(),
                r.value.map(fmt_value).unwrap_or_else(|| "-".into()),
                fmt_value(r.threshold)
            )?;
        }
    }
    Ok(())
}

/// Every incident in the journal, newest first, with its timeline.
pub fn render_incidents(state_dir: &Path) -> anyhow::Result<String> {
    let mut incidents: BTreeMap<String, Incident> = BTreeMap::new();
    for e in entries(state_dir)? {
        if let Record::Step { state, .. } = e.record {
            if let Some(i) = state.incident() {
                incidents.insert(i.id.clone(), i.clone());
            }
        }
    }
    let list: Vec<Incident> = incidents.into_values().rev().collect();
    render_incident_list(&list)
}

/// Incidents (newest first, as given) with their timelines.
pub fn render_incident_list(incidents: &[Incident]) -> anyhow::Result<String> {
    let mut out = String::new();
    if incidents.is_empty() {
        writeln!(out, "no incidents")?;
    }
    for inc in incidents {
        writeln!(
            out,
            "{}  {}  {}",
            inc.id,
            inc.outcome.map(|o| o.label()).unwrap_or("OPEN"),
            inc.summary()
        )?;
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

/// Path of an incident's record; refuses IDs that are not plain names.
pub fn record_path(incidents_dir: &Path, id: &str) -> anyhow::Result<PathBuf> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        anyhow::bail!("invalid incident ID {id:?}");
    }
    Ok(incidents_dir.join(format!("{id}.md")))
}
