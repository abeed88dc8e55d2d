//! Webhook notifications against a local HTTP server that answers 500 to
//! the first request of each endpoint: both formats are retried from the
//! outbox until accepted, each delivered once with its Idempotency-Key.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use rollbackd::config::{NotifyConfig, WebhookConfig, WebhookFormat};
use rollbackd::decide::{Incident, NotifyKind};
use rollbackd::notify::Notifier;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// (endpoint, status answered, Idempotency-Key, body)
type Log = Arc<Mutex<Vec<(String, u16, String, Value)>>>;

async fn hook(
    State(log): State<Log>,
    UrlPath(endpoint): UrlPath<String>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> StatusCode {
    let mut log = log.lock().unwrap();
    let seen = log.iter().filter(|(e, ..)| *e == endpoint).count();
    let status = if seen == 0 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    log.push((endpoint, status.as_u16(), key, body.0));
    status
}

async fn serve() -> (u16, Log) {
    let log: Log = Arc::default();
    let app = axum::Router::new().route("/hooks/{endpoint}", axum::routing::post(hook));
    (common::serve_axum(app.with_state(log.clone())).await, log)
}

fn incident() -> Incident {
    common::rolled_back_incident()
}

fn json_items(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir()
            && p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("webhook-")
        {
            n += std::fs::read_dir(&p)
                .unwrap()
                .flatten()
                .filter(|f| f.path().extension().is_some_and(|x| x == "json"))
                .count();
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_formats_are_delivered_after_a_500_and_retried() {
    let (port, log) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let hook = |endpoint: &str, format| WebhookConfig {
        url: format!("http://127.0.0.1:{port}/hooks/{endpoint}")
            .parse()
            .unwrap(),
        format,
        timeout: Duration::from_secs(5),
        name: None,
        secret: None,
    };
    let notifier = Notifier::build(
        &NotifyConfig {
            webhooks: vec![
                hook("json", WebhookFormat::Json),
                hook("slack", WebhookFormat::Slack),
            ],
            outbox_dir: outbox.clone(),
            ..NotifyConfig::default()
        },
        Some("https://ops.example.com/rollbackd".parse().unwrap()),
    );
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    notifier.senders().unwrap().spawn(&tracker, cancel.clone());
    let written = notifier
        .notify(NotifyKind::RolledBack, &incident(), None)
        .await
        .unwrap();
    assert!(written.is_some(), "webhook items are written without email");
    assert_eq!(json_items(&outbox), 2);

    let accepted = |endpoint: &str| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|(e, s, ..)| e == endpoint && *s == 200)
            .count()
    };
    tokio::time::timeout(Duration::from_secs(20), async {
        while accepted("json") < 1 || accepted("slack") < 1 || json_items(&outbox) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("webhook items not retried after the 500 (sender not retrying or not woken)");

    let log = log.lock().unwrap().clone();
    for endpoint in ["json", "slack"] {
        let calls: Vec<_> = log.iter().filter(|(e, ..)| e == endpoint).collect();
        assert_eq!(
            calls.iter().map(|(_, s, ..)| *s).collect::<Vec<_>>(),
            vec![500, 200],
            "{endpoint}: one 500, one retry accepted, nothing after"
        );
        assert!(calls
            .iter()
            .all(|(_, _, key, _)| key == "20250601-120000-frontend-1.rolled_back"));
        assert_eq!(calls[0].3, calls[1].3, "the retry sends the same body");
    }
    let json = &log.iter().find(|(e, ..)| e == "json").unwrap().3;
    assert_eq!(json["schema"], "rollbackd.notification/v1");
    assert_eq!(json["kind"], "rolled_back");
    assert_eq!(json["target"], "frontend");
    assert_eq!(json["state"], "RolledBack");
    assert_eq!(json["incident"]["id"], "20250601-120000-frontend-1");
    assert_eq!(json["versions"]["from"], "v2");
    assert_eq!(json["versions"]["to"], "v1");
    assert_eq!(json["values"][0]["value"], 0.75);
    assert_eq!(json["values"][0]["threshold"], 0.2);
    assert!(json["reason"][0]
        .as_str()
        .unwrap()
        .contains("errors = 0.75 > 0.2"));
    assert_eq!(
        json["links"]["incident"],
        "https://ops.example.com/rollbackd/v1/incidents/20250601-120000-frontend-1"
    );
    let slack = &log.iter().find(|(e, ..)| e == "slack").unwrap().3;
    assert!(slack["text"]
        .as_str()
        .unwrap()
        .starts_with("[rollbackd] frontend: ROLLED BACK v2 -> v1"));
    let blocks = slack["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert!(slack.to_string().contains("Open incident"));

    cancel.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .expect("senders did not stop on cancel");
}
