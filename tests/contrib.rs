//! `contrib/`: the Prometheus alerting rules pass `promtool check rules` and
//! their unit tests (`promtool test rules`), and the rules and the Grafana
//! dashboard only name metrics the daemon exports. Fails (never skips) when
//! promtool is missing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use chrono::Utc;
use rollbackd::metrics::Metrics;
use rollbackd::rules::RuleReport;

const PROMTOOL: &str = "/usr/bin/promtool";
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/prometheus/rollbackd-alerts.yml"
);
const RULE_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/prometheus/rollbackd-alerts.test.yml"
);
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/grafana/rollbackd-dashboard.json"
);

fn promtool(args: &[&str]) -> String {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: install the Debian package `prometheus` (scripts/test.sh does)"
    );
    let out = Command::new(PROMTOOL).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alerting_rules_pass_promtool_check_and_their_unit_tests() {
    let text = promtool(&["check", "rules", RULES]);
    assert!(text.contains("SUCCESS"), "{text}");
    let text = promtool(&["test", "rules", RULE_TESTS]);
    assert!(text.contains("SUCCESS"), "{text}");
    let rules = std::fs::read_to_string(RULES).unwrap();
    for alert in [
        "RollbackdDown",
        "RollbackdTargetBlind",
        "RollbackdOutboxBacklog",
        "RollbackdConfigReloadFailed",
        "RollbackdRollbackFailed",
        "RollbackdJournalErrors",
    ] {
        assert!(rules.contains(&format!("alert: {alert}\n")), "no {alert}");
    }
}

/// `rollbackd_...` names in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("rollbackd_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        // Not a metric: the alert names' prefix in prose, file names.
        if !name.ends_with('_') && name != "rollbackd_alerts" {
            out.insert(name.to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// Every sample name the daemon exports, with every family populated.
fn exported() -> BTreeSet<String> {
    let m = Metrics::new();
    let report = RuleReport::ok("health", Utc::now())
        .source("probe")
        .value(0.1)
        .for_(std::time::Duration::from_secs(60))
        .baseline(0.1, 3.0);
    m.rule("web", &report);
    m.rollback_finished("web", "failed");
    m.incident_closed("web", "failed");
    m.incident_phase("web", "verifying");
    m.detection(30.0);
    m.poll_duration(std::time::Duration::from_millis(5));
    m.journal_error();
    m.journal_bytes(100);
    m.global_limit_refused("web");
    m.notifications_pending("email", 1);
    m.notification_sent("email");
    m.notification_send_error("email");
    m.notification_failed("email");
    m.notification_rate_limited("email", "web");
    m.notification_merged("web", "rolled_back");
    m.config_loaded(true, Utc::now());
    m.confirm_link_refused();
    m.api_error("404");
    m.alerts_received("accepted", 1);
    m.render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(String::from)
        .collect()
}

#[test]
fn rules_and_dashboard_name_only_exported_metrics() {
    let exported = exported();
    let rules = std::fs::read_to_string(RULES).unwrap();
    let dashboard = std::fs::read_to_string(DASHBOARD).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    assert!(
        parsed["panels"].as_array().is_some_and(|p| p.len() >= 10),
        "dashboard panels"
    );
    for (file, text) in [(RULES, &rules), (DASHBOARD, &dashboard)] {
        let used = names(text);
        assert!(used.len() > 5, "{file}: {used:?}");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics rollbackd does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
}
