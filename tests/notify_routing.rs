//! Per-target notification routing (`[target.notify]`: `to`, `cc`,
//! `webhooks` by name, `min_severity`) through the outbox, and the chat
//! webhook formats (Teams, DingTalk, Feishu) against a local HTTP server,
//! their JSON shapes and request signatures checked as the vendors
//! document them.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use rollbackd::decide::{Incident, NotifyKind};
use rollbackd::notify::Notifier;
use rollbackd::util::base64;
use serde_json::Value;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// (endpoint, query string, body)
type Log = Arc<Mutex<Vec<(String, String, Value)>>>;

async fn hook(
    State(log): State<Log>,
    UrlPath(endpoint): UrlPath<String>,
    RawQuery(query): RawQuery,
    body: axum::Json<Value>,
) -> StatusCode {
    log.lock()
        .unwrap()
        .push((endpoint, query.unwrap_or_default(), body.0));
    StatusCode::OK
}

async fn serve() -> (u16, Log) {
    let log: Log = Arc::default();
    let app = axum::Router::new().route("/hooks/{endpoint}", axum::routing::post(hook));
    (common::serve_axum(app.with_state(log.clone())).await, log)
}

fn incident(target: &str) -> Incident {
    let mut i = common::rolled_back_incident();
    i.id = i.id.replace("frontend", target);
    i.target = target.to_string();
    i
}

fn hmac(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    base64(&mac.finalize().into_bytes())
}

/// A target `name` (`extra` lines after its name, e.g. `[target.notify]`)
/// with a rule and a plan that these tests never run.
fn idle_target(name: &str, extra: &str) -> String {
    [
        common::conf::target(name, "", extra),
        common::conf::health_rule("http://127.0.0.1:1/health", "", "", "10s"),
        common::conf::command_rollback("", r#"[["true"]]"#),
    ]
    .concat()
}

/// The config: two targets with their own recipients, one routed to a
/// named webhook and only for critical notifications.
fn config(dir: &Path, port: u16) -> rollbackd::config::Config {
    let head = format!(
        r#"
[daemon]
state_dir = "{dir}/state"
{email}
[[notify.webhook]]
name = "team-a"
url = "http://127.0.0.1:{port}/hooks/team-a"

[[notify.webhook]]
name = "ops"
url = "http://127.0.0.1:{port}/hooks/ops"
"#,
        dir = dir.display(),
        email = common::conf::email(&dir.join("outbox"), &["everyone@example.com"]),
    );
    let text = [
        head,
        idle_target(
            "alpha",
            r#"  [target.notify]
  to = ["alpha-dev@example.com"]
  cc = ["alpha-lead@example.com"]
  webhooks = ["team-a"]
  min_severity = "critical""#,
        ),
        idle_target(
            "beta",
            r#"  [target.notify]
  to = ["beta-dev@example.com"]"#,
        ),
        idle_target("gamma", ""),
    ]
    .concat();
    rollbackd::config::load_str("routing.toml", &text).unwrap_or_else(|e| panic!("{e}"))
}

/// The To and Cc header lines of a mail.
fn header(mail: &str, name: &str) -> String {
    mail.lines()
        .find(|l| l.starts_with(&format!("{name}: ")))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_target_mails_its_own_list_and_its_own_webhooks() {
    let (port, log) = serve().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path(), port);
    let notifier = Notifier::build(&config.notify, None);
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    notifier.senders().unwrap().spawn(&tracker, cancel.clone());

    for target in ["alpha", "beta", "gamma"] {
        let written = notifier
            .notify(NotifyKind::RolledBack, &incident(target), None)
            .await
            .unwrap();
        assert!(
            written.is_some(),
            "{target}: a critical notification is written"
        );
    }
    // Below alpha's min_severity: nothing at all for alpha; beta gets it.
    for target in ["alpha", "beta"] {
        notifier
            .notify_target(NotifyKind::PauseEnded, target, "the pause ended")
            .await
            .unwrap();
    }

    let mails = common::mails(&tmp.path().join("outbox"));
    let to_of = |target: &str| -> Vec<(String, String)> {
        mails
            .iter()
            .filter(|(_, m)| m.contains(&format!("X-Rollbackd-Target: {target}")))
            .map(|(_, m)| (header(m, "To"), header(m, "Cc")))
            .collect()
    };
    assert_eq!(
        to_of("alpha"),
        [(
            "To: alpha-dev@example.com".to_string(),
            "Cc: alpha-lead@example.com".to_string()
        )],
        "alpha: its own list only, its cc, and no PAUSE ENDED (info < critical)"
    );
    let beta = to_of("beta");
    assert_eq!(beta.len(), 2, "beta: rolled back and pause ended");
    assert!(beta
        .iter()
        .all(|(to, cc)| to == "To: beta-dev@example.com" && cc.is_empty()));
    assert_eq!(
        to_of("gamma"),
        [("To: everyone@example.com".to_string(), String::new())],
        "gamma has no [target.notify]: the global list"
    );
    for (_, m) in &mails {
        assert!(
            !(m.contains("X-Rollbackd-Target: alpha") && m.contains("everyone@")),
            "alpha's mail never goes to the global list"
        );
    }

    // Webhooks: alpha to team-a only; beta and gamma to both.
    tokio::time::timeout(Duration::from_secs(20), async {
        while log.lock().unwrap().len() < 6 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("webhook calls not delivered");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = log.lock().unwrap().clone();
    let calls = |endpoint: &str| -> Vec<String> {
        let mut t: Vec<String> = log
            .iter()
            .filter(|(e, ..)| e == endpoint)
            .map(|(.., b)| {
                format!(
                    "{}:{}",
                    b["target"].as_str().unwrap(),
                    b["kind"].as_str().unwrap()
                )
            })
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        calls("team-a"),
        [
            "alpha:rolled_back",
            "beta:pause_ended",
            "beta:rolled_back",
            "gamma:rolled_back"
        ]
    );
    assert_eq!(
        calls("ops"),
        ["beta:pause_ended", "beta:rolled_back", "gamma:rolled_back"]
    );

    cancel.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .expect("senders did not stop on cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_dingtalk_and_feishu_payloads_and_signatures() {
    let (port, log) = serve().await;
    let tmp = tempfile::tempdir().unwrap();
    let hook = |path: &str| format!("http://127.0.0.1:{port}/hooks/{path}");
    let text = [
        format!(
            "\n[daemon]\nstate_dir = \"{}/state\"\n",
            tmp.path().display()
        ),
        common::conf::webhook(&hook("teams"), "teams", ""),
        common::conf::webhook(
            &hook("dingtalk?access_token=abc"),
            "dingtalk",
            "secret = \"SECdingtalk\"\n",
        ),
        common::conf::webhook(&hook("dingtalk-unsigned?access_token=abc"), "dingtalk", ""),
        common::conf::webhook(&hook("feishu"), "feishu", "secret = \"feishu-secret\"\n"),
        common::conf::webhook(&hook("feishu-unsigned"), "feishu", ""),
        idle_target("frontend", ""),
    ]
    .concat();
    let config = rollbackd::config::load_str("chat.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let notifier = Notifier::build(
        &config.notify,
        Some("https://ops.example.com/rollbackd".parse().unwrap()),
    );
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    notifier.senders().unwrap().spawn(&tracker, cancel.clone());
    let before = chrono::Utc::now();
    notifier
        .notify(NotifyKind::RolledBack, &incident("frontend"), None)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while log.lock().unwrap().len() < 5 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("chat webhooks not delivered");
    let after = chrono::Utc::now();
    let log = log.lock().unwrap().clone();
    let call = |endpoint: &str| {
        log.iter()
            .find(|(e, ..)| e == endpoint)
            .cloned()
            .unwrap_or_else(|| panic!("no call to {endpoint}"))
    };

    // Teams: a message with one Adaptive Card attachment.
    let (_, _, teams) = call("teams");
    assert_eq!(teams["type"], "message");
    let attachment = &teams["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert!(card["version"].as_str().unwrap().starts_with("1."));
    assert_eq!(card["body"][0]["type"], "TextBlock");
    assert_eq!(
        card["body"][0]["text"],
        "[rollbackd] frontend: ROLLED BACK v2 -> v1"
    );
    assert!(card["body"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["type"] == "FactSet"
            && b["facts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["title"] == "Versions" && f["value"] == "v2 -> v1")));
    assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
    assert!(card["actions"][0]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://ops.example.com/rollbackd/v1/incidents/"));

    // DingTalk: markdown; signed in the query (timestamp in ms, sign =
    // base64(HMAC-SHA256(secret, "timestamp\nsecret"))), token kept.
    let (_, query, ding) = call("dingtalk");
    assert_eq!(ding["msgtype"], "markdown");
    assert_eq!(
        ding["markdown"]["title"],
        "[rollbackd] frontend: ROLLED BACK v2 -> v1"
    );
    let md = ding["markdown"]["text"].as_str().unwrap();
    assert!(md.contains("errors = 0.75 > 0.2"), "{md}");
    assert!(md.contains("**Versions**: v2 -> v1"), "{md}");
    let params: std::collections::BTreeMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(params["access_token"], "abc");
    let ts: i64 = params["timestamp"].parse().unwrap();
    assert!(
        ts >= before.timestamp_millis() && ts <= after.timestamp_millis(),
        "timestamp in milliseconds at send time"
    );
    assert_eq!(
        params["sign"],
        hmac(b"SECdingtalk", format!("{ts}\nSECdingtalk").as_bytes())
    );
    let (_, query, _) = call("dingtalk-unsigned");
    assert_eq!(query, "access_token=abc", "no secret, no signature");

    // Feishu: an interactive card; signed in the body (timestamp in
    // seconds as a string, sign = base64(HMAC-SHA256("timestamp\nsecret", "")).
    let (_, _, feishu) = call("feishu");
    assert_eq!(feishu["msg_type"], "interactive");
    assert_eq!(
        feishu["card"]["header"]["title"]["content"],
        "[rollbackd] frontend: ROLLED BACK v2 -> v1"
    );
    assert_eq!(feishu["card"]["header"]["title"]["tag"], "plain_text");
    assert_eq!(feishu["card"]["elements"][0]["tag"], "div");
    assert_eq!(feishu["card"]["elements"][0]["text"]["tag"], "lark_md");
    let ts = feishu["timestamp"].as_str().expect("timestamp is a string");
    let secs: i64 = ts.parse().unwrap();
    assert!(secs >= before.timestamp() && secs <= after.timestamp());
    assert_eq!(
        feishu["sign"],
        hmac(format!("{ts}\nfeishu-secret").as_bytes(), b"")
    );
    let (_, _, unsigned) = call("feishu-unsigned");
    assert!(unsigned.get("sign").is_none() && unsigned.get("timestamp").is_none());
    assert_eq!(unsigned["card"], feishu["card"]);

    cancel.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .expect("senders did not stop on cancel");
}
