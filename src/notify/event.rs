//! The versioned JSON event every machine outlet sends or maps
//! (`schema = "rollbackd.notification/v1"`, documented in
//! `docs/notifications.md`): made once per notification into
//! [`super::notice::Notice::event`].

use serde_json::{json, Value};

use crate::decide::{Incident, NotifyKind, Outcome};

use super::{record, text as email, ConfirmLinks};

/// The `schema` field of every JSON event; bumped only on incompatible changes.
pub const SCHEMA: &str = "rollbackd.notification/v1";

/// The state a notification kind reports (the incident's phase name).
pub fn state(kind: NotifyKind, incident: Option<&Incident>) -> &'static str {
    match kind {
        NotifyKind::WouldRollBack => "DryRun",
        NotifyKind::RollbackStarted | NotifyKind::Interrupted => "RollingBack",
        NotifyKind::RolledBack => "RolledBack",
        NotifyKind::RollbackFailed | NotifyKind::DidNotHelp => "Failed",
        NotifyKind::Escalated | NotifyKind::BlastRadius => "Escalated",
        NotifyKind::AwaitingConfirmation => "AwaitingConfirmation",
        NotifyKind::Resolved => "Resolved",
        NotifyKind::Rejected => "Suppressed",
        NotifyKind::Blind | NotifyKind::ServerUnreachable => "Blind",
        NotifyKind::ServerReachable => "Watching",
        NotifyKind::PauseEnded => "Watching",
        NotifyKind::StateLost => "StateLost",
        NotifyKind::Shadow => "Shadow",
        NotifyKind::Seeing => match incident.and_then(|i| i.outcome) {
            Some(Outcome::Failed) => "Failed",
            _ => "Watching",
        },
    }
}

/// The JSON event for an incident notification.
pub fn incident_event(
    kind: NotifyKind,
    incident: &Incident,
    public_url: Option<&url::Url>,
    links: Option<&ConfirmLinks>,
    at: chrono::DateTime<chrono::Utc>,
) -> Value {
    let values: Vec<Value> = match &incident.cause {
        crate::decide::Cause::Rules { breached, .. } => breached
            .iter()
            .map(|r| {
                json!({
                    "rule": r.rule,
                    "source": r.source,
                    "status": r.status.name(),
                    "value": r.value,
                    "threshold": r.threshold,
                    "for_seconds": r.for_.as_secs_f64(),
                    "window_seconds": r.window.map(|w| w.as_secs_f64()),
                    "explain": r.explain(),
                })
            })
            .collect(),
        crate::decide::Cause::Manual { .. } => Vec::new(),
    };
    let steps: Vec<Value> = incident
        .steps
        .iter()
        .map(|s| {
            json!({
                "argv": s.argv,
                "ok": s.ok,
                "exit_code": s.exit_code,
                "duration_seconds": s.duration.as_secs_f64(),
                "error": s.error,
            })
        })
        .collect();
    json!({
        "schema": SCHEMA,
        "id": format!("{}.{}", incident.id, email::kind_name(kind)),
        "kind": email::kind_name(kind),
        "at": record::rfc3339(at),
        "target": incident.target,
        "state": state(kind, Some(incident)),
        "subject": email::subject(kind, incident),
        "summary": email::summary(kind, incident),
        "reason": record::reason_lines(incident),
        "values": values,
        "versions": {
            "from": incident.from_version,
            "to": incident.to_version,
        },
        "incident": {
            "id": incident.id,
            "method": incident.method,
            "dry_run": incident.dry_run,
            "outcome": incident.outcome,
            "error": incident.error,
            "opened_at": record::rfc3339(incident.opened_at),
            "confirmed_by": incident.confirmed_by,
            "verification": incident.verification,
            "steps": steps,
        },
        "links": {
            "incident": email::incident_url(public_url, &incident.id),
            "approve": links.map(|l| l.approve.to_string()),
            "reject": links.map(|l| l.reject.to_string()),
            "approve_command": (kind == NotifyKind::AwaitingConfirmation)
                .then(|| format!("rollbackd approve {}", incident.id)),
            "reject_command": (kind == NotifyKind::AwaitingConfirmation)
                .then(|| format!("rollbackd reject {} --reason \"...\"", incident.id)),
            "report_command": format!("rollbackd report {}", incident.id),
        },
    })
}

/// The JSON event for a target notification (blind, seeing again).
pub fn target_event(
    kind: NotifyKind,
    target: &str,
    message: &str,
    id: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Value {
    json!({
        "schema": SCHEMA,
        "id": id,
        "kind": email::kind_name(kind),
        "at": record::rfc3339(at),
        "target": target,
        "state": state(kind, None),
        "subject": format!("[rollbackd] {target}: {}", email::label(kind)),
        "summary": message,
        "reason": [message],
        "values": [],
        "versions": Value::Null,
        "incident": Value::Null,
        "links": {
            "incident": Value::Null,
            "approve": Value::Null,
            "reject": Value::Null,
            "approve_command": Value::Null,
            "reject_command": Value::Null,
            "report_command": Value::Null,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::record::tests::incident;

    fn at() -> chrono::DateTime<chrono::Utc> {
        record::tests::t(60)
    }

    #[test]
    fn json_event_has_the_documented_fields() {
        let links = ConfirmLinks {
            approve: "https://ops.example.org/v1/confirm/a".parse().unwrap(),
            reject: "https://ops.example.org/v1/confirm/r".parse().unwrap(),
        };
        let url: url::Url = "https://ops.example.org/rb/".parse().unwrap();
        let e = incident_event(
            NotifyKind::AwaitingConfirmation,
            &incident(),
            Some(&url),
            Some(&links),
            at(),
        );
        assert_eq!(e["schema"], SCHEMA);
        assert_eq!(e["id"], "20250601-120000-frontend-1.awaiting_confirmation");
        assert_eq!(e["kind"], "awaiting_confirmation");
        assert_eq!(e["target"], "frontend");
        assert_eq!(e["state"], "AwaitingConfirmation");
        assert_eq!(e["versions"], json!({"from": "v2", "to": "v1"}));
        assert_eq!(e["values"][0]["rule"], "health");
        assert_eq!(e["values"][0]["value"], 0.83);
        assert_eq!(e["values"][0]["threshold"], 0.5);
        assert_eq!(e["values"][0]["status"], "breached");
        assert!(e["reason"][0]
            .as_str()
            .unwrap()
            .contains("health = 0.83 > 0.5"));
        assert_eq!(e["incident"]["id"], "20250601-120000-frontend-1");
        assert_eq!(e["incident"]["method"], "symlink");
        assert_eq!(e["incident"]["steps"][1]["argv"][0], "systemctl");
        assert_eq!(
            e["links"]["incident"],
            "https://ops.example.org/rb/v1/incidents/20250601-120000-frontend-1"
        );
        assert_eq!(
            e["links"]["approve"],
            "https://ops.example.org/v1/confirm/a"
        );
        assert_eq!(
            e["links"]["approve_command"],
            "rollbackd approve 20250601-120000-frontend-1"
        );
        let t = target_event(NotifyKind::Blind, "web", "no data", "web.blind.x", at());
        assert_eq!(t["state"], "Blind");
        assert_eq!(t["incident"], Value::Null);
        // Both shapes carry the same top-level keys.
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&e), keys(&t));
    }
}
