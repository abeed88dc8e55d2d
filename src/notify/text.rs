//! The words of a notification, the same on every outlet: the subject
//! (`[rollbackd] frontend: ROLLED BACK v2 -> v1`), the first sentence, the
//! plain-text body made from the record and its HTML alternative, the
//! Message-ID. [`super::compose`] puts them in the
//! [`Notice`](super::notice::Notice) every outlet builds its item from.

use std::fmt::Write as _;

use crate::decide::{Incident, NotifyKind};
use crate::util::display_argv;
use crate::util::fmt_duration;

use super::{record, ConfirmLinks};

/// Subject line for this event.
pub fn subject(kind: NotifyKind, incident: &Incident) -> String {
    format!(
        "[rollbackd] {}: {} {}",
        incident.target,
        label(kind),
        record::versions(incident, "?")
    )
}

/// `PUBLIC_URL/v1/incidents/ID`.
pub(crate) fn incident_url(public_url: Option<&url::Url>, id: &str) -> Option<String> {
    public_url.map(|u| format!("{}/v1/incidents/{id}", u.as_str().trim_end_matches('/')))
}

/// The HTML alternative: the summary in bold, the confirmation links as
/// links, and the plain body (escaped) as preformatted text, so both parts
/// always say the same.
pub(crate) fn html(
    plain: &str,
    links: Option<&ConfirmLinks>,
    incident_url: Option<&str>,
) -> String {
    let (summary, rest) = plain.split_once("\n\n").unwrap_or((plain, ""));
    let mut h = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body style=\"font-family: sans-serif\">\n",
    );
    let _ = writeln!(h, "<p><strong>{}</strong></p>", escape(summary));
    if let Some(l) = links {
        let _ = writeln!(
            h,
            "<p><a href=\"{}\">Approve the rollback</a> &middot; <a href=\"{}\">Reject it</a></p>",
            escape(l.approve.as_str()),
            escape(l.reject.as_str())
        );
    }
    if let Some(u) = incident_url {
        let _ = writeln!(h, "<p><a href=\"{0}\">{0}</a></p>", escape(u));
    }
    let _ = writeln!(
        h,
        "<pre style=\"font-family: monospace; white-space: pre-wrap\">{}</pre>",
        escape(rest.trim_end())
    );
    h.push_str("</body></html>\n");
    h
}

/// Minimal HTML escaping for text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The `LABEL` of the subject for each kind.
pub(crate) fn label(kind: NotifyKind) -> &'static str {
    match kind {
        NotifyKind::WouldRollBack => "WOULD ROLL BACK",
        NotifyKind::RollbackStarted => "ROLLING BACK",
        NotifyKind::RolledBack => "ROLLED BACK",
        NotifyKind::RollbackFailed => "ROLLBACK FAILED",
        NotifyKind::DidNotHelp => "ROLLBACK DID NOT HELP",
        NotifyKind::Escalated => "ESCALATED",
        NotifyKind::Interrupted => "ROLLBACK INTERRUPTED",
        NotifyKind::AwaitingConfirmation => "CONFIRM ROLLBACK",
        NotifyKind::Resolved => "RESOLVED, NO ACTION",
        NotifyKind::Rejected => "ROLLBACK REJECTED",
        NotifyKind::Blind => "MONITORING BLIND",
        NotifyKind::Seeing => "MONITORING RESTORED",
        NotifyKind::BlastRadius => "ESCALATED: MANY TARGETS AT ONCE",
        NotifyKind::PauseEnded => "PAUSE ENDED, WATCHING AGAIN",
        NotifyKind::Shadow => "SHADOW: WOULD ROLL BACK",
        NotifyKind::ServerUnreachable => "UNREACHABLE",
        NotifyKind::ServerReachable => "REACHABLE AGAIN",
        NotifyKind::StateLost => "STATE LOST, ACTING ON NOTHING",
    }
}

/// The kind as spelled in the journal (`rolled_back`, ...).
pub(crate) fn kind_name(kind: NotifyKind) -> &'static str {
    match kind {
        NotifyKind::WouldRollBack => "would_roll_back",
        NotifyKind::RollbackStarted => "rollback_started",
        NotifyKind::RolledBack => "rolled_back",
        NotifyKind::RollbackFailed => "rollback_failed",
        NotifyKind::DidNotHelp => "did_not_help",
        NotifyKind::Escalated => "escalated",
        NotifyKind::Interrupted => "interrupted",
        NotifyKind::AwaitingConfirmation => "awaiting_confirmation",
        NotifyKind::Resolved => "resolved",
        NotifyKind::Rejected => "rejected",
        NotifyKind::Blind => "blind",
        NotifyKind::Seeing => "seeing",
        NotifyKind::BlastRadius => "blast_radius",
        NotifyKind::PauseEnded => "pause_ended",
        NotifyKind::Shadow => "shadow",
        NotifyKind::ServerUnreachable => "server_unreachable",
        NotifyKind::ServerReachable => "server_reachable",
        NotifyKind::StateLost => "state_lost",
    }
}

/// `<ID.kind@rollbackd>`; characters not allowed in a Message-ID become `-`.
pub(crate) fn message_id(kind: NotifyKind, incident: &Incident) -> String {
    format!("<{}.{}@rollbackd>", id_atom(&incident.id), kind_name(kind))
}

/// `text` with the characters a Message-ID's local part may not hold
/// replaced by `-`.
pub(crate) fn id_atom(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The first sentence: what happened, for this kind.
pub(crate) fn summary(kind: NotifyKind, incident: &Incident) -> String {
    let target = &incident.target;
    let from = match &incident.from_version {
        Some(v) => format!("from {v}"),
        None => "from an unknown version".into(),
    };
    let to = match &incident.to_version {
        Some(v) => format!("to {v}"),
        None => "to the previous version".into(),
    };
    let error = |fallback: &str| {
        incident
            .error
            .clone()
            .unwrap_or_else(|| fallback.to_string())
    };
    match kind {
        NotifyKind::WouldRollBack => format!(
            "dry-run: rollbackd would have rolled {target} back {from} {to}; nothing was executed."
        ),
        NotifyKind::RollbackStarted => format!(
            "rollbackd is rolling {target} back {from} {to} (method {}).",
            incident.method
        ),
        NotifyKind::RolledBack => {
            format!("rollbackd rolled {target} back {from} {to} and verified that it recovered.")
        }
        NotifyKind::RollbackFailed => format!(
            "the rollback of {target} {from} {to} failed: {}",
            error("no error recorded")
        ),
        NotifyKind::DidNotHelp => format!(
            "rollbackd rolled {target} back {from} {to}, but it did not recover: \
             the problem is probably not the release and needs a human."
        ),
        NotifyKind::Escalated => format!(
            "rollbackd did not roll {target} back automatically and needs a human: {}",
            error("a safety guard stopped it")
        ),
        NotifyKind::Interrupted => format!(
            "rollbackd was stopped while rolling {target} back {from} {to} \
             (or, with [cluster], the node running the plan was lost and another node took over); \
             it did not run the plan again and is verifying the service instead."
        ),
        NotifyKind::AwaitingConfirmation => format!(
            "rollbackd wants to roll {target} back {from} {to} and waits for a human to approve or reject."
        ),
        NotifyKind::Resolved => format!(
            "the signals of {target} recovered before anything was done; no rollback was run."
        ),
        NotifyKind::Rejected => format!(
            "the rollback of {target} {from} {to} was rejected by a human; nothing was executed."
        ),
        NotifyKind::Blind => format!("monitoring of {target} is blind: its rules have no data."),
        NotifyKind::Seeing => format!("monitoring of {target} has data again."),
        NotifyKind::ServerUnreachable => format!("{target} is unreachable."),
        NotifyKind::ServerReachable => format!("{target} is reachable again."),
        NotifyKind::StateLost => {
            format!("{target} could not read its state and acts on no target.")
        }
        NotifyKind::BlastRadius => match &incident.blast_radius_after_acting {
            Some(why) => format!(
                "breaches began on many targets at once ({target} among them), but rollbackd had \
                 already rolled {target} back {from} {to} before the blast-radius guard could see \
                 them; a rollback cannot be undone and needs a human: {why}"
            ),
            None => format!(
                "breaches began on many targets at once ({target} among them); rollbackd rolled \
                 none back and needs a human: {}",
                error("blast-radius guard")
            ),
        },
        NotifyKind::PauseEnded => {
            format!("the pause of {target} ended; automatic rollback is armed again.")
        }
        NotifyKind::Shadow => {
            let rules = match &incident.cause {
                crate::decide::Cause::Rules { breached, .. } => breached
                    .iter()
                    .map(|r| r.rule.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                crate::decide::Cause::Manual { .. } => String::new(),
            };
            format!(
                "shadow: rollbackd would roll {target} back {from} {to} (shadow rule {rules});                  shadow rules never act, nothing was executed."
            )
        }
    }
}

/// The plain-text body: summary, reason, facts, steps, verification,
/// timeline and where to find the full record.
pub(crate) fn body(
    kind: NotifyKind,
    incident: &Incident,
    public_url: Option<&url::Url>,
    links: Option<&ConfirmLinks>,
) -> String {
    let mut b = String::new();
    // `write!` to a String cannot fail.
    let _ = writeln!(b, "{}\n", summary(kind, incident));
    if kind == NotifyKind::AwaitingConfirmation {
        let _ = writeln!(b, "To approve:  rollbackd approve {}", incident.id);
        let _ = writeln!(
            b,
            "To reject:   rollbackd reject {} --reason \"...\"",
            incident.id
        );
        if let Some(l) = links {
            let _ = writeln!(b, "Approve link: {}", l.approve);
            let _ = writeln!(b, "Reject link:  {}", l.reject);
        }
        b.push('\n');
    }
    if let Some(error) = &incident.error {
        if !matches!(kind, NotifyKind::RollbackFailed | NotifyKind::Escalated) {
            let _ = writeln!(b, "Error: {error}\n");
        }
    }

    b.push_str("Reason:\n");
    let reasons = record::reason_lines(incident);
    if reasons.is_empty() {
        b.push_str("  (no rule reports recorded)\n");
    }
    for line in reasons {
        let _ = writeln!(b, "  - {line}");
    }

    b.push('\n');
    for (key, value) in [
        ("Target", incident.target.clone()),
        ("Versions", record::versions(incident, "unknown")),
        ("Method", incident.method.clone()),
        ("Dry-run", record::yes_no(incident.dry_run).to_string()),
        (
            "Outcome",
            record::outcome_text(incident.outcome).to_string(),
        ),
        ("Opened", record::rfc3339(incident.opened_at)),
        ("Confirmed by", record::confirmed_by(incident)),
        ("RTO", record::rto_text(incident)),
    ] {
        let _ = writeln!(b, "{:<14}{value}", format!("{key}:"));
    }

    b.push_str("\nPhases:\n");
    for (name, d) in record::phases(incident) {
        let _ = writeln!(b, "  {name:<48}{}", record::duration_or_dash(d));
    }

    b.push_str("\nSteps:\n");
    if incident.steps.is_empty() {
        b.push_str("  (none ran)\n");
    }
    for (i, step) in incident.steps.iter().enumerate() {
        let _ = writeln!(
            b,
            "  {}. {}: {} (exit code {}, {})",
            i + 1,
            record::ok_failed(step.ok),
            display_argv(&step.argv),
            record::exit_code(step),
            fmt_duration(step.duration)
        );
        if let Some(error) = &step.error {
            let _ = writeln!(b, "     error: {error}");
        }
        if !step.ok {
            // A failed step's output is what the admin needs first.
            for (name, text) in [("stdout", &step.stdout), ("stderr", &step.stderr)] {
                if !text.trim().is_empty() {
                    let _ = writeln!(b, "     {name}:");
                    for l in text.trim_end().lines() {
                        let _ = writeln!(b, "       {l}");
                    }
                }
            }
        }
    }

    let _ = writeln!(b, "\nVerification: {}", record::verification_text(incident));

    b.push_str("\nTimeline (UTC):\n");
    for t in &incident.timeline {
        let _ = writeln!(
            b,
            "  {}  {:<12} {}",
            record::timestamp(t.at),
            t.phase,
            t.message
        );
    }

    let _ = writeln!(b, "\nIncident: {}", incident.id);
    let _ = writeln!(b, "Full record: `rollbackd report {}`", incident.id);
    if let Some(url) = incident_url(public_url, &incident.id) {
        let _ = writeln!(b, "             {url}");
    }
    b
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::EmailConfig;
    use crate::notify::compose::build;
    use crate::notify::record::tests::incident;
    use crate::notify::NotifyError;
    use lettre::message::header;

    /// The formatted message with quoted-printable soft line breaks and
    /// `=3D` undone (lettre picks quoted-printable for lines over 76 bytes).
    pub(crate) fn unwrapped(formatted: &[u8]) -> String {
        String::from_utf8(formatted.to_vec())
            .unwrap()
            .replace("=\r\n", "")
            .replace("=3D", "=")
    }

    fn cfg() -> EmailConfig {
        EmailConfig {
            from: "rollbackd <rollbackd@example.org>".into(),
            to: vec!["ops@example.org".into(), "Admin <admin@example.org>".into()],
            cc: Vec::new(),
            outbox_dir: "/nonexistent".into(),
            smtp: None,
        }
    }

    #[test]
    fn subject_per_kind() {
        let mut i = incident();
        for (kind, want) in [
            (
                NotifyKind::WouldRollBack,
                "[rollbackd] frontend: WOULD ROLL BACK v2 -> v1",
            ),
            (
                NotifyKind::RollbackStarted,
                "[rollbackd] frontend: ROLLING BACK v2 -> v1",
            ),
            (
                NotifyKind::RolledBack,
                "[rollbackd] frontend: ROLLED BACK v2 -> v1",
            ),
            (
                NotifyKind::RollbackFailed,
                "[rollbackd] frontend: ROLLBACK FAILED v2 -> v1",
            ),
            (
                NotifyKind::DidNotHelp,
                "[rollbackd] frontend: ROLLBACK DID NOT HELP v2 -> v1",
            ),
            (
                NotifyKind::Escalated,
                "[rollbackd] frontend: ESCALATED v2 -> v1",
            ),
            (
                NotifyKind::Interrupted,
                "[rollbackd] frontend: ROLLBACK INTERRUPTED v2 -> v1",
            ),
        ] {
            assert_eq!(subject(kind, &i), want);
        }
        i.to_version = None;
        assert_eq!(
            subject(NotifyKind::RolledBack, &i),
            "[rollbackd] frontend: ROLLED BACK v2 -> ?"
        );
    }

    #[test]
    fn kind_names_match_the_journal() {
        for kind in [
            NotifyKind::WouldRollBack,
            NotifyKind::RollbackStarted,
            NotifyKind::RolledBack,
            NotifyKind::RollbackFailed,
            NotifyKind::DidNotHelp,
            NotifyKind::Escalated,
            NotifyKind::Interrupted,
            NotifyKind::AwaitingConfirmation,
            NotifyKind::Resolved,
            NotifyKind::Rejected,
            NotifyKind::Blind,
            NotifyKind::Seeing,
        ] {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::from(kind_name(kind))
            );
        }
    }

    #[test]
    fn headers_are_set() {
        let m = build(&cfg(), NotifyKind::RolledBack, &incident(), None, None).unwrap();
        let h = m.headers();
        assert_eq!(h.get_raw("From"), Some("rollbackd <rollbackd@example.org>"));
        let to: header::To = h.get().unwrap();
        let to: Vec<String> = lettre::message::Mailboxes::from(to)
            .iter()
            .map(|m| m.email.to_string())
            .collect();
        assert_eq!(to, ["ops@example.org", "admin@example.org"]);
        assert_eq!(
            h.get_raw("Message-ID"),
            Some("<20250601-120000-frontend-1.rolled_back@rollbackd>")
        );
        assert_eq!(
            h.get_raw("Subject"),
            Some("[rollbackd] frontend: ROLLED BACK v2 -> v1")
        );
        assert!(h.get_raw("Date").is_some());
        let text = String::from_utf8(m.formatted()).unwrap();
        assert!(text.contains("MIME-Version: 1.0\r\n"), "{text}");
        assert!(
            text.contains("Content-Type: multipart/alternative;"),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: text/plain; charset=utf-8\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: text/html; charset=utf-8\r\n"),
            "{text}"
        );
        assert_eq!(h.get_raw("X-Rollbackd-Target"), Some("frontend"));
        assert_eq!(h.get_raw("X-Rollbackd-Kind"), Some("rolled_back"));
        assert_eq!(
            h.get_raw("X-Rollbackd-Incident"),
            Some("20250601-120000-frontend-1")
        );
        assert_eq!(
            m.envelope().to().len(),
            2,
            "both recipients are in the envelope"
        );
    }

    #[test]
    fn body_explains_the_decision() {
        let url = url::Url::parse("https://rollbackd.example.org/").unwrap();
        let m = build(
            &cfg(),
            NotifyKind::RolledBack,
            &incident(),
            Some(&url),
            None,
        )
        .unwrap();
        let text = unwrapped(&m.formatted());
        for want in [
            "rollbackd rolled frontend back from v2 to v1 and verified that it recovered.",
            "health = 0.83 > 0.5 (for 30s, window 1m)",
            "Versions:     v2 -> v1",
            "Method:       symlink",
            "1. ok: switch \"current -> releases/v1\" (exit code 0, 3ms)",
            "2. ok: systemctl restart frontend (exit code 0, 4.5s)",
            "Verification: GET http://127.0.0.1:8080/health answered 200",
            "2025-06-01T12:00:37.000Z  RolledBack   verify URL healthy",
            "Incident: 20250601-120000-frontend-1",
            "Full record: `rollbackd report 20250601-120000-frontend-1`",
            "https://rollbackd.example.org/v1/incidents/20250601-120000-frontend-1",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn summary_per_kind() {
        let mut i = incident();
        i.dry_run = true;
        let b = body(NotifyKind::WouldRollBack, &i, None, None);
        assert!(
            b.starts_with("dry-run: rollbackd would have rolled frontend back from v2 to v1"),
            "{b}"
        );
        i.error = Some("step 2 exited 1: unit frontend.service not found".into());
        i.steps[1].ok = false;
        i.steps[1].stderr = "Unit frontend.service not found.\n".into();
        let b = body(NotifyKind::RollbackFailed, &i, None, None);
        assert!(
            b.starts_with(
                "the rollback of frontend from v2 to v1 failed: \
                 step 2 exited 1: unit frontend.service not found"
            ),
            "{b}"
        );
        assert!(
            b.contains("stderr:\n       Unit frontend.service not found."),
            "{b}"
        );
        let b = body(NotifyKind::DidNotHelp, &i, None, None);
        assert!(b.contains("Error: step 2 exited 1"), "{b}");
        i.from_version = None;
        let b = body(NotifyKind::Interrupted, &i, None, None);
        assert!(
            b.starts_with(
                "rollbackd was stopped while rolling frontend back from an unknown version to v1"
            ),
            "{b}"
        );
    }

    #[test]
    fn a_bad_address_is_a_build_error_naming_it() {
        let mut c = cfg();
        c.to.push("not an address".into());
        let err = build(&c, NotifyKind::RolledBack, &incident(), None, None).unwrap_err();
        assert!(matches!(err, NotifyError::Build(_)), "{err:?}");
        assert!(err.to_string().contains("\"not an address\""), "{err}");

        let mut c = cfg();
        c.from = "rollbackd@".into();
        let err = build(&c, NotifyKind::RolledBack, &incident(), None, None).unwrap_err();
        assert!(err.to_string().contains("\"rollbackd@\""), "{err}");
    }

    #[test]
    fn html_alternative_escapes_and_links() {
        let links = crate::notify::ConfirmLinks {
            approve: "https://ops.example.org/v1/confirm/a?x=1&y=2"
                .parse()
                .unwrap(),
            reject: "https://ops.example.org/v1/confirm/r".parse().unwrap(),
        };
        let mut i = incident();
        i.error = Some("exit <1> & \"boom\"".into());
        let m = build(
            &cfg(),
            NotifyKind::AwaitingConfirmation,
            &i,
            None,
            Some(&links),
        )
        .unwrap();
        let text = unwrapped(&m.formatted());
        let html = &text[text.find("<!DOCTYPE html>").expect("html part")..];
        for want in [
            "<p><strong>rollbackd wants to roll frontend back from v2 to v1 and waits for a human to approve or reject.</strong></p>",
            "<a href=\"https://ops.example.org/v1/confirm/a?x=1&amp;y=2\">Approve the rollback</a>",
            "Error: exit &lt;1&gt; &amp; &quot;boom&quot;",
            "To approve:  rollbackd approve 20250601-120000-frontend-1",
            "health = 0.83 &gt; 0.5",
        ] {
            assert!(html.contains(want), "missing {want:?} in:\n{html}");
        }
        // The plain part has the commands and links as text.
        assert!(
            text.contains("Approve link: https://ops.example.org/v1/confirm/a?x=1&y=2"),
            "{text}"
        );
    }
}
