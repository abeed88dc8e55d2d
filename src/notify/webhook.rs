//! Webhook notifications: the versioned JSON event (`format = "json"`, the
//! schema documented in `docs/notifications.md`), a Slack-compatible
//! message (`format = "slack"`: `text` plus `blocks`), the chat formats of
//! [`super::chat`] (`teams`, `dingtalk`, `feishu`), and the HTTP channel
//! that POSTs them from the outbox (signing DingTalk and Feishu requests).
//!
//! An outbox item is a small JSON envelope (`{"target", "id", "body"}`); the
//! channel POSTs `body` with an `Idempotency-Key` header carrying `id`, the
//! same stable key as the mail's Message-ID, so a receiver can drop a
//! duplicate sent after a crash between "accepted" and "removed".

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{WebhookConfig, WebhookFormat};
use crate::decide::{Incident, NotifyKind, Outcome};

use super::{email, record, ConfirmLinks, NotifyError, SendError};

/// The `schema` field of every JSON event; bumped only on incompatible changes.
pub const SCHEMA: &str = "rollbackd.notification/v1";

/// What is stored in the outbox for one webhook call.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Item {
    /// Target the notification is about (rate limit key).
    pub target: String,
    /// Stable key (`ID.kind`), sent as `Idempotency-Key`.
    pub id: String,
    /// The request body.
    pub body: Value,
}

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

/// A Slack message made from a JSON event: `text` (the fallback shown in
/// notifications) and `blocks` (header, summary, reason, facts, actions).
pub fn slack(event: &Value) -> Value {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let subject = s(&event["subject"]);
    let summary = s(&event["summary"]);
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&subject, 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&summary, 3000)}}),
    ];
    let reasons: Vec<String> = event["reason"]
        .as_array()
        .map(|a| a.iter().map(|r| format!("• {}", s(r))).collect())
        .unwrap_or_default();
    if !reasons.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": truncate(&format!("*Reason*\n{}", reasons.join("\n")), 3000)}}));
    }
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Target*\n{}", s(&event["target"]))}),
        json!({"type": "mrkdwn", "text": format!("*State*\n{}", s(&event["state"]))}),
    ];
    if event["versions"].is_object() {
        let v = |k: &str| event["versions"][k].as_str().unwrap_or("?").to_string();
        fields.push(
            json!({"type": "mrkdwn", "text": format!("*Versions*\n{} -> {}", v("from"), v("to"))}),
        );
    }
    if let Some(id) = event["incident"]["id"].as_str() {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Incident*\n{id}")}));
    }
    blocks.push(json!({"type": "section", "fields": fields}));
    let mut context = String::new();
    for key in ["approve_command", "report_command"] {
        if let Some(c) = event["links"][key].as_str() {
            let _ = write!(context, "`{c}`  ");
        }
    }
    if !context.is_empty() {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context.trim_end()}]}));
    }
    let mut buttons = Vec::new();
    for (key, label, style) in [
        ("approve", "Approve", Some("primary")),
        ("reject", "Reject", Some("danger")),
        ("incident", "Open incident", None),
    ] {
        if let Some(url) = event["links"][key].as_str() {
            let mut b = json!({"type": "button", "text": {"type": "plain_text", "text": label}, "url": url});
            if let Some(style) = style {
                b["style"] = json!(style);
            }
            buttons.push(b);
        }
    }
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
    json!({
        "text": format!("{subject}\n{summary}"),
        "blocks": blocks,
    })
}

/// At most `max` characters, with an ellipsis when cut (Slack's block limits).
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The body to POST for this webhook's format.
pub fn body(format: WebhookFormat, event: Value) -> Value {
    match format {
        WebhookFormat::Json => event,
        WebhookFormat::Slack => slack(&event),
        WebhookFormat::Teams => super::chat::teams(&event),
        WebhookFormat::Dingtalk => super::chat::dingtalk(&event),
        WebhookFormat::Feishu => super::chat::feishu(&event),
    }
}

/// POSTs outbox items to one webhook URL.
#[derive(Debug, Clone)]
pub struct WebhookChannel {
    url: url::Url,
    client: reqwest::Client,
    format: WebhookFormat,
    /// DingTalk / Feishu signing secret: signed at send time.
    secret: Option<String>,
}

impl WebhookChannel {
    /// Build the HTTP client for this webhook.
    pub fn build(cfg: &WebhookConfig) -> Result<WebhookChannel, NotifyError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| {
                NotifyError::Setup(format!(
                    "webhook {}: {}",
                    crate::util::redact_url(&cfg.url),
                    crate::util::error_chain(&e)
                ))
            })?;
        Ok(WebhookChannel {
            url: cfg.url.clone(),
            client,
            format: cfg.format,
            secret: cfg.secret.clone(),
        })
    }

    /// POST the item; Ok only for a 2xx answer.
    pub async fn send(&self, item: &Item) -> Result<(), SendError> {
        let now = chrono::Utc::now();
        let (url, body) = match (self.format, &self.secret) {
            (WebhookFormat::Dingtalk, Some(secret)) => (
                super::chat::dingtalk_url(&self.url, secret, now),
                item.body.clone(),
            ),
            (WebhookFormat::Feishu, Some(secret)) => (
                self.url.clone(),
                super::chat::feishu_signed(&item.body, secret, now),
            ),
            _ => (self.url.clone(), item.body.clone()),
        };
        let response = self
            .client
            .post(url)
            .header("Idempotency-Key", &item.id)
            .json(&body)
            .send()
            .await
            .map_err(|detail| SendError::Post {
                url: self.url.clone(),
                detail,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(SendError::Status {
            url: self.url.clone(),
            status,
            body: text.trim().chars().take(200).collect(),
        })
    }
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

    #[test]
    fn slack_message_has_text_and_blocks() {
        let links = ConfirmLinks {
            approve: "https://ops.example.org/v1/confirm/a".parse().unwrap(),
            reject: "https://ops.example.org/v1/confirm/r".parse().unwrap(),
        };
        let e = incident_event(
            NotifyKind::AwaitingConfirmation,
            &incident(),
            None,
            Some(&links),
            at(),
        );
        let s = slack(&e);
        assert!(s["text"]
            .as_str()
            .unwrap()
            .starts_with("[rollbackd] frontend: CONFIRM ROLLBACK v2 -> v1\n"));
        let blocks = s["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        let all = s.to_string();
        assert!(all.contains("*Versions*\\nv2 -> v1"), "{all}");
        assert!(all.contains("health = 0.83 > 0.5"), "{all}");
        assert!(all.contains("\"style\":\"danger\""), "{all}");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
