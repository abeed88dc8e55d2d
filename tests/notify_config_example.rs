//! The example config's commented-out notification keys are real: with
//! every one of them uncommented the example still validates, into the
//! values the comments promise.

use std::path::Path;
use std::time::Duration;

use rollbackd::config::{self, SmtpSecurity, WebhookFormat};

#[test]
fn the_commented_notification_keys_of_the_example_validate() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rollbackd.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut in_notify = false;
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            let t = line.trim_start();
            if t.starts_with('[') || t.starts_with("# [") {
                in_notify = t.trim_start_matches("# ").starts_with("[notify")
                    || t.trim_start_matches("# ").starts_with("[[notify");
            }
            let key_or_section = t
                .strip_prefix("# ")
                .is_some_and(|r| r.starts_with('[') || r.contains(" = "));
            if in_notify && key_or_section {
                t.trim_start_matches("# ").to_string()
            } else {
                line.to_string()
            }
        })
        .collect();
    let c = config::load_str("example", &edited.join("\n"))
        .unwrap_or_else(|e| panic!("uncommented notification keys rejected:\n{e}"));
    let n = &c.notify;
    assert_eq!(n.give_up_after, Duration::from_secs(24 * 3600));
    assert_eq!(n.max_per_target_per_hour.get(), 20);
    assert_eq!(n.max_per_hour.get(), 60);
    let smtp = n.email.as_ref().unwrap().smtp.as_ref().unwrap();
    assert_eq!((smtp.host.as_str(), smtp.port), ("127.0.0.1", 25));
    assert_eq!(smtp.security, SmtpSecurity::Plain);
    assert_eq!(smtp.username.as_deref(), Some("rollbackd"));
    assert_eq!(n.webhooks.len(), 2);
    assert_eq!(n.webhooks[0].format, WebhookFormat::Json);
    assert_eq!(n.webhooks[1].format, WebhookFormat::Dingtalk);
}
