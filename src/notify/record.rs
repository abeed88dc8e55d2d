//! The rollback record `state_dir/incidents/ID.md`: date, target, versions,
//! reason with rule values and thresholds, method, each phase's duration,
//! each step, the verification result, and a root-cause section to fill in.
//!
//! The small helpers here (versions, outcome, phases, steps) are shared with
//! the email so both say the same thing the same way.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::SecondsFormat;

use crate::decide::{Cause, Incident, Outcome, Time};
use crate::execute::StepReport;
use crate::util::display_argv;
use crate::util::fmt_duration;

/// Who confirmed the rollback, in words. An incident that waited for
/// confirmation (its timeline entered AwaitingConfirmation) without an
/// approver is still waiting, or was never answered: it was not
/// "not required".
pub(crate) fn confirmed_by(incident: &Incident) -> String {
    if let Some(who) = &incident.confirmed_by {
        return who.clone();
    }
    let asked = incident
        .timeline
        .iter()
        .any(|e| e.phase == "AwaitingConfirmation");
    match (asked, incident.outcome, incident.rollback_started) {
        (false, _, _) => "not required (automatic)".to_string(),
        (true, None, None) => "pending: awaiting approval".to_string(),
        (true, _, Some(_)) => "nobody: confirm_timeout passed without an answer".to_string(),
        (true, Some(_), None) => "nobody (not answered)".to_string(),
    }
}

/// Each step with exit status, duration, error and output tails.
fn render_steps(md: &mut String, steps: &[StepReport]) {
    for (i, step) in steps.iter().enumerate() {
        let _ = writeln!(
            md,
            "{}. {} **{}**",
            i + 1,
            code_span(&display_argv(&step.argv)),
            ok_failed(step.ok)
        );
        let _ = writeln!(md, "   - exit code: {}", exit_code(step));
        let _ = writeln!(md, "   - duration: {}", fmt_duration(step.duration));
        if let Some(error) = &step.error {
            let _ = writeln!(md, "   - error: {}", one_line(error));
        }
        for p in &step.leftovers {
            let _ = writeln!(md, "   - left behind by the step: {}", one_line(p));
        }
        for (name, text) in [("stdout", &step.stdout), ("stderr", &step.stderr)] {
            if !text.trim().is_empty() {
                let fence = fence_for(text);
                let _ = writeln!(md, "   - {name}:\n");
                let _ = writeln!(md, "     {fence}");
                for l in text.trim_end().lines() {
                    let _ = writeln!(md, "     {l}");
                }
                let _ = writeln!(md, "     {fence}");
            }
        }
    }
}

/// The latest result of each verification gate: what, pass or fail, the
/// measured latency, the detail and a command's output.
fn render_checks(md: &mut String, checks: &[crate::execute::verify::CheckReport]) {
    if checks.is_empty() {
        return;
    }
    md.push_str("\n| Gate | Result | Latency | Detail |\n|---|---|---|---|\n");
    for c in checks {
        let latency = c.latency.map_or_else(
            || "-".to_string(),
            |l| fmt_duration(Duration::from_millis(l.as_millis() as u64)),
        );
        let _ = writeln!(
            md,
            "| {} | {} | {latency} | {} |",
            cell(&c.check),
            ok_failed(c.ok),
            cell(&c.detail)
        );
    }
    for c in checks.iter().filter(|c| !c.output.trim().is_empty()) {
        let fence = fence_for(&c.output);
        let _ = writeln!(md, "\nOutput of {}:\n\n{fence}", code_span(&c.check));
        for l in c.output.trim_end().lines() {
            let _ = writeln!(md, "{l}");
        }
        let _ = writeln!(md, "{fence}");
    }
}

/// Placeholder in the sections a human fills in.
const TO_FILL: &str = "_to be filled in_";

/// Render the record as Markdown.
pub fn render(incident: &Incident) -> String {
    let mut md = String::new();
    // `write!` to a String cannot fail.
    let _ = writeln!(md, "# Rollback record: {}\n", incident.id);
    if let Some(error) = &incident.error {
        let _ = writeln!(md, "> **Error:** {}\n", one_line(error));
    }

    md.push_str("| | |\n|---|---|\n");
    for (key, value) in [
        ("Date", rfc3339(incident.opened_at)),
        ("Target", incident.target.clone()),
        ("Version", versions(incident, "unknown")),
        ("Outcome", outcome_text(incident.outcome).to_string()),
        ("Method", incident.method.clone()),
        ("Dry-run", yes_no(incident.dry_run).to_string()),
        ("Confirmed by", confirmed_by(incident)),
        ("RTO", rto_text(incident)),
        ("Incident", incident.id.clone()),
    ] {
        let _ = writeln!(md, "| {key} | {} |", cell(&value));
    }

    md.push_str("\n## Reason\n\n");
    let reasons = reason_lines(incident);
    if reasons.is_empty() {
        md.push_str("_no rule reports recorded_\n");
    }
    for line in reasons {
        let _ = writeln!(md, "- {}", one_line(&line));
    }

    md.push_str("\n## Phases\n\n| Phase | Duration |\n|---|---|\n");
    for (name, d) in phases(incident) {
        let _ = writeln!(md, "| {name} | {} |", duration_or_dash(d));
    }

    md.push_str("\n## Steps\n\n");
    if incident.steps.is_empty() {
        let none = if incident.dry_run {
            "_none: dry-run, nothing was executed_"
        } else {
            "_none ran_"
        };
        let _ = writeln!(md, "{none}");
    }
    render_steps(&mut md, &incident.steps);

    md.push_str("\n## Verification\n\n");
    let _ = writeln!(md, "{}", verification_text(incident));
    render_checks(&mut md, &incident.verify_checks);

    if !incident.after_steps.is_empty() {
        md.push_str("\n## After steps\n\n");
        render_steps(&mut md, &incident.after_steps);
    }

    if !incident.on_failure_steps.is_empty() {
        md.push_str("\n## on_failure steps\n\n");
        render_steps(&mut md, &incident.on_failure_steps);
    }

    md.push_str("\n## Timeline\n\n");
    if incident.timeline.is_empty() {
        md.push_str("_empty_\n");
    } else {
        md.push_str("| Time (UTC) | Phase | Message |\n|---|---|---|\n");
        for t in &incident.timeline {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                timestamp(t.at),
                cell(&t.phase),
                cell(&t.message)
            );
        }
    }

    md.push_str("\n## Root cause\n");
    for heading in ["Cause", "Impact", "Fix", "Follow-ups"] {
        let _ = writeln!(md, "\n### {heading}\n\n{TO_FILL}");
    }
    md
}

/// `dir/ID.md`; refuses IDs that are not plain names (letters, digits,
/// `.`, `_`, `-`, not starting with `.`), so an ID can never leave `dir`.
pub fn path(dir: &Path, id: &str) -> std::io::Result<PathBuf> {
    let plain = !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !plain {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("incident id {id:?} cannot be used as a file name"),
        ));
    }
    Ok(dir.join(format!("{id}.md")))
}

/// Write (atomically: temp file, fsync, rename) `dir/ID.md` and return its path.
pub fn write(dir: &Path, incident: &Incident) -> std::io::Result<PathBuf> {
    let path = path(dir, &incident.id)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| crate::journal::with_path(e, &format!("cannot create {}", dir.display())))?;
    let tmp = path.with_extension("md.tmp");
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(render(incident).as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(crate::journal::with_path(
            e,
            &format!("cannot write {}", tmp.display()),
        ));
    }
    std::fs::rename(&tmp, &path).map_err(|e| {
        crate::journal::with_path(
            e,
            &format!("cannot rename {} to {}", tmp.display(), path.display()),
        )
    })?;
    crate::journal::sync_dir(dir)?;
    Ok(path)
}

/// `v2 -> v1`, with `unknown` standing in for a version not known.
pub(crate) fn versions(incident: &Incident, unknown: &str) -> String {
    format!(
        "{} -> {}",
        incident.from_version.as_deref().unwrap_or(unknown),
        incident.to_version.as_deref().unwrap_or(unknown)
    )
}

/// The outcome in words; `open` while the incident is.
pub(crate) fn outcome_text(outcome: Option<Outcome>) -> &'static str {
    match outcome {
        None => "open",
        Some(Outcome::RolledBack) => "rolled back",
        Some(Outcome::Failed) => "failed",
        Some(Outcome::DryRun) => "dry-run (would roll back)",
        Some(Outcome::Escalated) => "escalated",
        Some(Outcome::Resolved) => "resolved (signals recovered, no action)",
        Some(Outcome::Suppressed) => "rejected (no action)",
        Some(Outcome::Shadow) => "shadow: would roll back (shadow rule), nothing executed",
    }
}

/// One explanation per breached rule: value vs threshold, `for`, window.
pub(crate) fn reason_lines(incident: &Incident) -> Vec<String> {
    match &incident.cause {
        Cause::Rules {
            breached,
            abstained,
        } => breached
            .iter()
            .map(|r| r.explain())
            .chain(
                abstained
                    .iter()
                    .map(|r| format!("abstained (no data, not counted): {}", r.explain())),
            )
            .collect(),
        Cause::Manual { by, reason } => vec![format!("manual trigger by {by}: {reason}")],
    }
}

/// Each phase's duration; `None` when the phase did not start or end.
/// The clock starts at the first bad evidence (the breached rule's first
/// Pending), not at the trigger, so detection time is part of the record.
pub(crate) fn phases(incident: &Incident) -> [(&'static str, Option<Duration>); 5] {
    // Only a closed incident has a total. Dry-run and escalation end
    // without running anything: they ended with their last timeline entry.
    let end = incident.outcome.and_then(|_| {
        incident
            .verify_finished
            .or(incident.rollback_finished)
            .or_else(|| incident.timeline.last().map(|t| t.at))
    });
    let start = incident.started();
    [
        (
            "Time to detect (first bad evidence -> trigger)",
            incident
                .first_evidence
                .and(Incident::span(Some(start), Some(incident.opened_at))),
        ),
        (
            "Time to start (trigger -> rollback start)",
            Incident::span(Some(incident.opened_at), incident.rollback_started),
        ),
        (
            "Rollback",
            Incident::span(incident.rollback_started, incident.rollback_finished),
        ),
        (
            "Verification",
            Incident::span(incident.rollback_finished, incident.verify_finished),
        ),
        ("Total (time to recovery)", Incident::span(Some(start), end)),
    ]
}

/// `5m: met (recovered in 1m12s)`, `5m: missed (...)`, or `-`.
pub(crate) fn rto_text(incident: &Incident) -> String {
    let Some(rto) = incident.rto else {
        return "-".into();
    };
    let rto_s = crate::util::fmt_duration(rto);
    let ttr = incident
        .time_to_recovery()
        .map(|d| format!(" (recovered in {})", crate::util::fmt_duration(d)))
        .unwrap_or_default();
    match incident.rto_met() {
        Some(true) => format!("{rto_s}: met{ttr}"),
        Some(false) if ttr.is_empty() => format!("{rto_s}: missed (not recovered)"),
        Some(false) => format!("{rto_s}: missed{ttr}"),
        None if incident.outcome.is_none() => format!("{rto_s}: open"),
        None => format!("{rto_s}: not applicable (nothing was rolled back)"),
    }
}

/// The verification result, or why there is none.
pub(crate) fn verification_text(incident: &Incident) -> String {
    match &incident.verification {
        Some(v) => v.clone(),
        None if incident.dry_run => "not run (dry-run)".into(),
        None if incident.outcome.is_none() => "pending".into(),
        None => "not run".into(),
    }
}

/// `0`, or why there is no exit code.
pub(crate) fn exit_code(step: &StepReport) -> String {
    match step.exit_code {
        Some(c) => c.to_string(),
        None if step.ok => "none (built-in step, no process)".into(),
        None => "none (killed, timed out or not started)".into(),
    }
}

/// `ok` or `failed`.
pub(crate) fn ok_failed(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "failed"
    }
}

/// `yes` or `no`.
pub(crate) fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A formatted duration, or `-` when unknown.
pub(crate) fn duration_or_dash(d: Option<Duration>) -> String {
    d.map(fmt_duration).unwrap_or_else(|| "-".into())
}

/// UTC RFC 3339 to the second: `2025-06-01T12:00:03Z`.
pub(crate) fn rfc3339(t: Time) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// UTC RFC 3339 to the millisecond, for timelines.
pub(crate) fn timestamp(t: Time) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Collapse a multi-line message onto one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    one_line(s).replace('|', "\\|")
}

/// Inline code that survives backticks inside `s`.
fn code_span(s: &str) -> String {
    let ticks = "`".repeat(longest_backtick_run(s) + 1);
    if s.starts_with('`') || s.ends_with('`') {
        format!("{ticks} {s} {ticks}")
    } else {
        format!("{ticks}{s}{ticks}")
    }
}

/// A code fence longer than any backtick run inside `s`.
fn fence_for(s: &str) -> String {
    "`".repeat((longest_backtick_run(s) + 1).max(3))
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decide::TimelineEntry;
    use crate::rules::RuleReport;
    use chrono::TimeZone;

    /// 2025-06-01 12:00:00 UTC plus `secs`.
    pub(crate) fn t(secs: i64) -> Time {
        chrono::Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
            + chrono::Duration::seconds(secs)
    }

    /// A finished, successful rollback of `frontend` from v2 to v1.
    pub(crate) fn incident() -> Incident {
        Incident {
            id: "20250601-120000-frontend-1".into(),
            target: "frontend".into(),
            cause: Cause::Rules {
                abstained: vec![],
                breached: vec![RuleReport::ok("health", t(0))
                    .source("probe GET http://127.0.0.1:8080/health failure_ratio")
                    .breached(t(-30))
                    .value(0.83)
                    .window(Duration::from_secs(60))],
            },
            from_version: Some("v2".into()),
            to_version: Some("v1".into()),
            method: "symlink".into(),
            dry_run: false,
            opened_at: t(0),
            rollback_started: Some(t(2)),
            rollback_finished: Some(t(7)),
            verify_finished: Some(t(37)),
            steps: vec![
                StepReport {
                    argv: vec!["switch".into(), "current -> releases/v1".into()],
                    exit_code: Some(0),
                    ok: true,
                    duration: Duration::from_millis(3),
                    stdout: String::new(),
                    stderr: String::new(),
                    error: None,
                    leftovers: Vec::new(),
                },
                StepReport {
                    argv: vec!["systemctl".into(), "restart".into(), "frontend".into()],
                    exit_code: Some(0),
                    ok: true,
                    duration: Duration::from_millis(4500),
                    stdout: "restarted\n".into(),
                    stderr: String::new(),
                    error: None,
                    leftovers: Vec::new(),
                },
            ],
            verification: Some("GET http://127.0.0.1:8080/health answered 200".into()),
            first_evidence: Some(t(-30)),
            rto: Some(Duration::from_secs(300)),
            blast_radius_after_acting: None,
            outcome: Some(Outcome::RolledBack),
            error: None,
            timeline: vec![
                TimelineEntry {
                    at: t(0),
                    phase: "Triggered".into(),
                    message: "health: 0.83 > 0.5 for 30s".into(),
                },
                TimelineEntry {
                    at: t(2),
                    phase: "RollingBack".into(),
                    message: "running symlink plan".into(),
                },
                TimelineEntry {
                    at: t(37),
                    phase: "RolledBack".into(),
                    message: "verify URL healthy".into(),
                },
            ],
            after_steps: Vec::new(),
            verify_checks: Vec::new(),
            on_failure_steps: Vec::new(),
            requested_version: None,
            confirmed_by: None,
        }
    }

    #[test]
    fn confirmed_by_while_awaiting_is_pending() {
        let mut inc = incident();
        inc.outcome = None;
        inc.rollback_started = None;
        inc.timeline.push(TimelineEntry {
            at: t(1),
            phase: "AwaitingConfirmation".into(),
            message: "confirm = required".into(),
        });
        assert_eq!(confirmed_by(&inc), "pending: awaiting approval");
        inc.confirmed_by = Some("alice".into());
        assert_eq!(confirmed_by(&inc), "alice");
    }

    #[test]
    fn record_has_every_field() {
        let md = render(&incident());
        for want in [
            "# Rollback record: 20250601-120000-frontend-1",
            "| Date | 2025-06-01T12:00:00Z |",
            "| Target | frontend |",
            "| Version | v2 -> v1 |",
            "| Outcome | rolled back |",
            "| Method | symlink |",
            "| Dry-run | no |",
            "| Confirmed by | not required (automatic) |",
            "## Reason",
            "health = 0.83 > 0.5 (for 30s, window 1m): breached since 11:59:30.000Z",
            "## Phases",
            "| Time to detect (first bad evidence -> trigger) | 30s |",
            "| Time to start (trigger -> rollback start) | 2s |",
            "| Rollback | 5s |",
            "| Verification | 30s |",
            "| Total (time to recovery) | 1m7s |",
            "| RTO | 5m: met (recovered in 1m7s) |",
            "## Steps",
            "1. `switch \"current -> releases/v1\"` **ok**",
            "2. `systemctl restart frontend` **ok**",
            "   - exit code: 0",
            "   - duration: 4.5s",
            "     ```\n     restarted\n     ```",
            "## Verification\n\nGET http://127.0.0.1:8080/health answered 200",
            "## Timeline",
            "| 2025-06-01T12:00:37.000Z | RolledBack | verify URL healthy |",
            "## Root cause",
            "### Cause\n\n_to be filled in_",
            "### Impact",
            "### Fix",
            "### Follow-ups",
        ] {
            assert!(md.contains(want), "missing {want:?} in:\n{md}");
        }
        // Empty output is not shown, and no error banner without an error.
        assert!(!md.contains("stderr:"), "{md}");
        assert!(!md.contains("**Error:**"), "{md}");
    }

    #[test]
    fn open_failed_and_unknown_versions_are_spelled_out() {
        let mut i = incident();
        i.from_version = None;
        i.to_version = None;
        i.outcome = None;
        i.verify_finished = None;
        i.verification = None;
        i.error = Some("step 2 `systemctl` exited 1: unit\nnot found".into());
        i.steps[1].ok = false;
        i.steps[1].exit_code = None;
        i.steps[1].stderr = "Failed to restart | frontend.service\n".into();
        i.steps[1].error = Some("timed out after 30s".into());
        let md = render(&i);
        for want in [
            "> **Error:** step 2 `systemctl` exited 1: unit not found",
            "| Version | unknown -> unknown |",
            "| Outcome | open |",
            "| Verification | - |",
            "| Total (time to recovery) | - |",
            "| RTO | 5m: open |",
            "**failed**",
            "   - exit code: none (killed, timed out or not started)",
            "   - error: timed out after 30s",
            "   - stderr:",
            "Failed to restart | frontend.service",
            "## Verification\n\npending",
        ] {
            assert!(md.contains(want), "missing {want:?} in:\n{md}");
        }
    }

    #[test]
    fn write_replaces_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let incidents = dir.path().join("incidents");
        let mut i = incident();
        i.outcome = None;
        let path = write(&incidents, &i).unwrap();
        assert_eq!(path, incidents.join("20250601-120000-frontend-1.md"));
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("| Outcome | open |"));

        i.outcome = Some(Outcome::RolledBack);
        assert_eq!(write(&incidents, &i).unwrap(), path);
        let md = std::fs::read_to_string(&path).unwrap();
        assert!(md.contains("| Outcome | rolled back |"), "{md}");
        let names: Vec<_> = std::fs::read_dir(&incidents)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["20250601-120000-frontend-1.md"],
            "no temp file left"
        );
    }

    #[test]
    fn an_id_that_is_not_a_file_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut i = incident();
        i.id = "../escape".into();
        let err = write(dir.path(), &i).unwrap_err();
        assert!(err.to_string().contains("../escape"), "{err}");
    }

    #[test]
    fn backticks_do_not_break_markdown() {
        assert_eq!(code_span("a`b"), "``a`b``");
        assert_eq!(fence_for("x ```` y"), "`````");
        assert_eq!(fence_for("plain"), "```");
    }
}
