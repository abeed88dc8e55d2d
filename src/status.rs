//! What the client commands `status`, `incidents` and `report` print, read
//! from the state directory (journal and records). Read-only: safe to run
//! beside a live daemon.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::decide::{Incident, Phase};
use crate::journal::{self, Record};
use crate::util::fmt_value;

/// Directory under the state dir holding each target's latest rule values
/// (`TARGET.json`), rewritten by the daemon every poll.
pub const RULES_DIR: &str = "rules";

/// The latest rule reports the daemon wrote for `target`, when newer than
/// what the journal holds.
fn latest_rules(
    state_dir: &Path,
    target: &str,
    journaled: &[crate::rules::RuleReport],
) -> Option<Vec<crate::rules::RuleReport>> {
    let path = state_dir.join(RULES_DIR).join(format!("{target}.json"));
    let text = std::fs::read(path).ok()?;
    let rules: Vec<crate::rules::RuleReport> = serde_json::from_slice(&text).ok()?;
    let newest = |r: &[crate::rules::RuleReport]| r.iter().map(|x| x.at).max();
    (newest(&rules) >= newest(journaled)).then_some(rules)
}

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
                _ => String::new(),
            }
        )?;
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
        let rules = latest_rules(state_dir, &name, &s.rules).unwrap_or(s.rules);
        for r in &rules {
            writeln!(out, "  {}", rule_line(r))?;
        }
    }
    Ok(out)
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
    line
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
    let mut out = String::new();
    if incidents.is_empty() {
        writeln!(out, "no incidents")?;
    }
    for inc in incidents.values().rev() {
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
