//! The chat formats of webhook notifications (`[[notify.webhook]] format`),
//! each made from the JSON event ([`super::event`]): the event itself
//! (`json`), Slack (`text` plus `blocks`), Microsoft Teams (a message with
//! an Adaptive Card attachment), DingTalk custom robots (`msgtype:
//! markdown`) and Feishu custom bots (an interactive card), and the request
//! signing DingTalk and Feishu document for robots with a signing secret.
//!
//! **Adding a format**: its body (and signer) here, and one entry in
//! `formats!`; validation, the webhook outlet and the outbox directory
//! name follow from the entry.
//!
//! Signatures carry a timestamp the receiver checks (DingTalk and Feishu
//! refuse one more than an hour off), so they are made when a request is
//! sent, not when the notification is written to the outbox.

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How one chat format builds (and signs) its requests.
#[derive(Debug)]
pub struct Format {
    /// The `format` word in the config.
    pub name: &'static str,
    /// The body to POST, made from the JSON event (at write time).
    pub body: fn(&Value) -> Value,
    /// Request signing with the webhook's `secret`, at send time: the URL
    /// and body to POST. `None`: the format does not sign (`secret` is
    /// refused for it).
    pub sign: Option<Signer>,
}

/// Signs a request: (url, body, secret, now) to the URL and body to POST.
pub type Signer = fn(&url::Url, &Value, &str, chrono::DateTime<chrono::Utc>) -> (url::Url, Value);

/// The registry of chat formats: one entry per format, `Variant => FORMAT`.
/// The variant's name is part of each webhook's outbox directory name
/// (`webhook::dir`), so it never changes once released.
macro_rules! formats {
    ($($(#[$doc:meta])* $variant:ident => $format:expr,)*) => {
        /// `format = json | slack | teams | dingtalk | feishu`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum WebhookFormat {
            $($(#[$doc])* $variant,)*
        }

        impl WebhookFormat {
            /// Every format, in the order messages list them (the first is the default).
            pub const ALL: &'static [WebhookFormat] = &[$(WebhookFormat::$variant,)*];

            /// How this format builds and signs its requests.
            pub fn format(self) -> &'static Format {
                match self {
                    $(WebhookFormat::$variant => &$format,)*
                }
            }
        }
    };
}

formats! {
    /// The versioned rollbackd event schema (docs/notifications.md).
    Json => JSON,
    /// Slack-compatible `text` plus `blocks`.
    Slack => SLACK,
    /// Microsoft Teams: a message with an Adaptive Card attachment (Teams
    /// workflows and Office 365 connector URLs accept it).
    Teams => TEAMS,
    /// DingTalk custom robot: `msgtype: markdown`, signed with `secret`.
    Dingtalk => DINGTALK,
    /// Feishu (Lark) custom bot: an interactive card, signed with `secret`.
    Feishu => FEISHU,
}

impl WebhookFormat {
    /// The body to POST for this format.
    pub fn body(self, event: &Value) -> Value {
        (self.format().body)(event)
    }

    /// The `format` words, for validation.
    pub fn choices() -> Vec<(&'static str, WebhookFormat)> {
        Self::ALL.iter().map(|f| (f.format().name, *f)).collect()
    }
}

const JSON: Format = Format {
    name: "json",
    body: Value::clone,
    sign: None,
};

const SLACK: Format = Format {
    name: "slack",
    body: slack,
    sign: None,
};

const TEAMS: Format = Format {
    name: "teams",
    body: teams,
    sign: None,
};

const DINGTALK: Format = Format {
    name: "dingtalk",
    body: dingtalk,
    sign: Some(|url, body, secret, now| (dingtalk_url(url, secret, now), body.clone())),
};

const FEISHU: Format = Format {
    name: "feishu",
    body: feishu,
    sign: Some(|url, body, secret, now| (url.clone(), feishu_signed(body, secret, now))),
};

/// A string field of the event, `""` when absent.
fn text(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// Target, state, versions and incident as (label, value) facts.
fn facts(event: &Value) -> Vec<(&'static str, String)> {
    let mut facts = vec![
        ("Target", text(&event["target"])),
        ("State", text(&event["state"])),
    ];
    if event["versions"].is_object() {
        let v = |k: &str| event["versions"][k].as_str().unwrap_or("?").to_string();
        facts.push(("Versions", format!("{} -> {}", v("from"), v("to"))));
    }
    if let Some(id) = event["incident"]["id"].as_str() {
        facts.push(("Incident", id.to_string()));
    }
    facts
}

/// The reason lines (rule values, guards).
fn reasons(event: &Value) -> Vec<String> {
    event["reason"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default()
}

/// Buttons for the links the event carries: approve, reject, incident.
fn buttons(event: &Value) -> Vec<(&'static str, String)> {
    [
        ("approve", "Approve"),
        ("reject", "Reject"),
        ("incident", "Open incident"),
    ]
    .into_iter()
    .filter_map(|(key, label)| {
        event["links"][key]
            .as_str()
            .map(|url| (label, url.to_string()))
    })
    .collect()
}

/// The commands the event suggests (approve, report), for chats without links.
fn commands(event: &Value) -> Vec<String> {
    ["approve_command", "reject_command", "report_command"]
        .into_iter()
        .filter_map(|k| event["links"][k].as_str().map(str::to_string))
        .collect()
}

/// Microsoft Teams: a `message` with one Adaptive Card attachment (title,
/// summary, reasons, a fact set, `Action.OpenUrl` buttons), the shape
/// Teams incoming webhooks and Workflows accept.
pub fn teams(event: &Value) -> Value {
    let mut body = vec![
        json!({"type": "TextBlock", "text": text(&event["subject"]), "weight": "Bolder",
               "size": "Medium", "wrap": true}),
        json!({"type": "TextBlock", "text": text(&event["summary"]), "wrap": true}),
    ];
    for r in reasons(event) {
        body.push(
            json!({"type": "TextBlock", "text": format!("- {r}"), "wrap": true,
                         "spacing": "None"}),
        );
    }
    let facts: Vec<Value> = facts(event)
        .into_iter()
        .map(|(title, value)| json!({"title": title, "value": value}))
        .collect();
    body.push(json!({"type": "FactSet", "facts": facts}));
    let commands = commands(event);
    if !commands.is_empty() {
        body.push(json!({"type": "TextBlock", "text": commands.join("  \n"),
                         "fontType": "Monospace", "wrap": true, "isSubtle": true}));
    }
    let actions: Vec<Value> = buttons(event)
        .into_iter()
        .map(|(title, url)| json!({"type": "Action.OpenUrl", "title": title, "url": url}))
        .collect();
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    if !actions.is_empty() {
        card["actions"] = Value::Array(actions);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// The Markdown text of a DingTalk message.
fn markdown(event: &Value) -> String {
    let mut md = format!(
        "#### {}\n\n{}\n\n",
        text(&event["subject"]),
        text(&event["summary"])
    );
    for r in reasons(event) {
        let _ = writeln!(md, "- {r}");
    }
    md.push('\n');
    for (label, value) in facts(event) {
        let _ = writeln!(md, "**{label}**: {value}  ");
    }
    for c in commands(event) {
        let _ = write!(md, "\n`{c}`  ");
    }
    let links: Vec<String> = buttons(event)
        .into_iter()
        .map(|(label, url)| format!("[{label}]({url})"))
        .collect();
    if !links.is_empty() {
        let _ = write!(md, "\n\n{}", links.join(" | "));
    }
    md
}

/// DingTalk custom robot: `{"msgtype": "markdown", "markdown": {"title",
/// "text"}}`. The title is what the chat list shows.
pub fn dingtalk(event: &Value) -> Value {
    json!({
        "msgtype": "markdown",
        "markdown": {
            "title": text(&event["subject"]),
            "text": markdown(event),
        },
        "at": {"isAtAll": false},
    })
}

/// The Feishu card header colour for a state.
fn feishu_colour(state: &str) -> &'static str {
    match state {
        "RolledBack" | "Watching" => "green",
        "Failed" => "red",
        "Escalated" | "AwaitingConfirmation" | "Blind" => "orange",
        "RollingBack" => "blue",
        _ => "grey",
    }
}

/// Feishu custom bot: `{"msg_type": "interactive", "card": {...}}` with a
/// coloured header, the summary and reasons in `lark_md`, short fields and
/// link buttons.
pub fn feishu(event: &Value) -> Value {
    let mut content = text(&event["summary"]);
    for r in reasons(event) {
        let _ = write!(content, "\n- {r}");
    }
    let fields: Vec<Value> = facts(event)
        .into_iter()
        .map(|(label, value)| {
            json!({"is_short": true, "text": {"tag": "lark_md",
                   "content": format!("**{label}**\n{value}")}})
        })
        .collect();
    let mut elements = vec![
        json!({"tag": "div", "text": {"tag": "lark_md", "content": content}}),
        json!({"tag": "div", "fields": fields}),
    ];
    let commands = commands(event);
    if !commands.is_empty() {
        elements.push(json!({"tag": "note", "elements": [
            {"tag": "plain_text", "content": commands.join("\n")}]}));
    }
    let actions: Vec<Value> = buttons(event)
        .into_iter()
        .map(|(label, url)| {
            let kind = match label {
                "Approve" => "primary",
                "Reject" => "danger",
                _ => "default",
            };
            json!({"tag": "button", "text": {"tag": "plain_text", "content": label},
                   "type": kind, "url": url})
        })
        .collect();
    if !actions.is_empty() {
        elements.push(json!({"tag": "action", "actions": actions}));
    }
    json!({
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": true},
            "header": {
                "template": feishu_colour(event["state"].as_str().unwrap_or("")),
                "title": {"tag": "plain_text", "content": text(&event["subject"])},
            },
            "elements": elements,
        },
    })
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// DingTalk's signature: base64(HMAC-SHA256(key = secret, message =
/// "timestamp\nsecret")), `timestamp` in milliseconds. It is sent as the
/// `timestamp` and `sign` query parameters (URL-encoded).
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    crate::util::base64(&hmac_sha256(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    ))
}

/// Feishu's signature: base64(HMAC-SHA256(key = "timestamp\nsecret",
/// message = empty)), `timestamp` in seconds. It is sent as `timestamp`
/// (a string) and `sign` in the JSON body.
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    crate::util::base64(&hmac_sha256(
        format!("{timestamp_s}\n{secret}").as_bytes(),
        b"",
    ))
}

/// The URL to POST a DingTalk message to: `url` with `timestamp` and `sign`.
pub fn dingtalk_url(url: &url::Url, secret: &str, now: chrono::DateTime<chrono::Utc>) -> url::Url {
    let ts = now.timestamp_millis();
    let mut signed = url.clone();
    signed
        .query_pairs_mut()
        .append_pair("timestamp", &ts.to_string())
        .append_pair("sign", &dingtalk_sign(secret, ts));
    signed
}

/// A Feishu body with `timestamp` and `sign` added.
pub fn feishu_signed(body: &Value, secret: &str, now: chrono::DateTime<chrono::Utc>) -> Value {
    let ts = now.timestamp();
    let mut signed = body.clone();
    if let Some(o) = signed.as_object_mut() {
        o.insert("timestamp".into(), Value::String(ts.to_string()));
        o.insert("sign".into(), Value::String(feishu_sign(secret, ts)));
    }
    signed
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::NotifyKind;
    use crate::notify::event::incident_event;
    use crate::notify::record::tests::{incident, t};
    use crate::notify::ConfirmLinks;

    fn at() -> chrono::DateTime<chrono::Utc> {
        t(60)
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(crate::util::base64(i.as_bytes()), o, "{i}");
        }
    }

    #[test]
    fn signatures_match_the_documented_algorithms() {
        // Independently computed with Python's hmac/hashlib/base64 as the
        // DingTalk and Feishu documents show.
        assert_eq!(
            dingtalk_sign("SECtest", 1_700_000_000_000),
            "aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g="
        );
        assert_eq!(
            feishu_sign("test", 1_599_360_473),
            "NVcdmaRhTlOqmXksontxmKEP4AYWAMD5VOczwSqarks="
        );
    }

    #[test]
    fn chat_shapes() {
        let event = json!({
            "subject": "[rollbackd] web: ROLLED BACK v2 -> v1",
            "summary": "rolled back",
            "reason": ["health = 0.9 > 0.5"],
            "target": "web",
            "state": "RolledBack",
            "versions": {"from": "v2", "to": "v1"},
            "incident": {"id": "i-1"},
            "links": {"incident": "https://ops/i-1", "report_command": "rollbackd report i-1"},
        });
        let t = teams(&event);
        assert_eq!(t["type"], "message");
        let card = &t["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert_eq!(card["content"]["actions"][0]["type"], "Action.OpenUrl");
        let d = dingtalk(&event);
        assert_eq!(d["msgtype"], "markdown");
        assert!(d["markdown"]["text"]
            .as_str()
            .unwrap()
            .contains("**Versions**: v2 -> v1"));
        let f = feishu(&event);
        assert_eq!(f["msg_type"], "interactive");
        assert_eq!(f["card"]["header"]["template"], "green");
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
