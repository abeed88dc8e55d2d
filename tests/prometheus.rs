//! Prometheus rules against a real Prometheus (`/usr/bin/prometheus`, 1 s
//! scrape interval) scraping a test exporter the test controls, with the
//! real daemon binary and a `command` rollback that writes a marker file;
//! and against a fake Prometheus that answers badly on purpose.

mod common;
#[path = "common/prometheus.rs"]
mod prom;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use prom::{Exporter, Fake, FakePrometheus, Knobs, Prometheus};

const RATIO: &str = r#"sum by (job) (rate(http_requests_total{job="app",code=~"5.."}[4s])) / sum by (job) (rate(http_requests_total{job="app"}[4s]))"#;

fn knobs() -> Knobs {
    Knobs {
        error_ratio: 0.01,
        rps: 100.0,
        latency: 0.1,
        version: "v1".into(),
    }
}

/// A daemon config: `[prometheus]` at `prom_url`, one target with `target`
/// (keys and rules) and a command rollback that writes `dir/marker`, with
/// the versions it was given when `with_versions` (the executor refuses
/// template variables it has no value for).
fn config(dir: &Path, prom_url: &str, target: &str, with_versions: bool) -> PathBuf {
    let args = if with_versions {
        r#", "{from_version}", "{to_version}""#
    } else {
        r#", "?", "?""#
    };
    let text = head(
        dir,
        common::free_port(),
        &format!("url = \"{prom_url}\"\ntimeout = \"1s\"\nblind_after = \"2s\""),
    ) + &format!(
        r#"
[[target]]
name = "app"
cooldown = "10m"
{target}

  [target.rollback]
  kind = "command"
  timeout = "10s"
  steps = [["sh", "-c", "echo \"$0 -> $1\" > {dir}/marker"{args}]]

  [target.verify]
  within = "2s"
"#,
        dir = dir.display()
    );
    let path = dir.join("rollbackd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `[daemon]` on `api_port` polling every 300 ms, `[prometheus]` with
/// the `prometheus` keys, `[notify.email]` to admin@example.com.
fn head(dir: &Path, api_port: u16, prometheus: &str) -> String {
    conf::daemon(dir, api_port, "300ms", "")
        + &format!("\n[prometheus]\n{prometheus}\n")
        + &conf::email(&dir.join("state/outbox"), &["admin@example.com"])
}

/// The test exporter and a Prometheus scraping it in `dir/prom`, once
/// `query` has a series (within `secs` seconds).
fn scraped(dir: &Path, query: &str, secs: u64) -> (Exporter, Prometheus) {
    let exporter = Exporter::start(knobs());
    let prometheus = Prometheus::start(&dir.join("prom"), &[exporter.port]);
    prometheus.wait_for_series(query, Duration::from_secs(secs));
    (exporter, prometheus)
}

/// The `http-5xx-rate` rule: the 5xx ratio above 5% for `for_` (on a
/// line of its own, after the target keys).
fn ratio_rule(for_: &str) -> String {
    format!(
        r#"
  [[target.rule]]
  name = "http-5xx-rate"
  source = "prometheus"
  query = '{RATIO}'
  above = 0.05
  for = "{for_}""#
    )
}

/// Wait up to 20 s until `http-5xx-rate` has been Ok.
fn wait_ratio_ok(state: &Path, what: &str) {
    wait_for(Duration::from_secs(20), what, || {
        statuses(state, "http-5xx-rate")
            .contains(&"ok".to_string())
            .then_some(())
    });
}

/// The rule reports of the last journaled evaluation of `rule`, newest last.
fn rule_reports(state: &Path, rule: &str) -> Vec<serde_json::Value> {
    journal(state)
        .into_iter()
        .filter(|e| e["event"]["event"] == "evaluated")
        .filter_map(|e| {
            e["event"]["rules"]
                .as_array()?
                .iter()
                .find(|r| r["rule"] == rule)
                .cloned()
        })
        .collect()
}

fn statuses(state: &Path, rule: &str) -> Vec<String> {
    rule_reports(state, rule)
        .iter()
        .map(|r| r["status"]["status"].as_str().unwrap_or("").to_string())
        .collect()
}

fn status_cli(config: &Path) -> String {
    let out = run_rollbackd(config, &["status"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn error_ratio_at_1_percent_is_quiet_and_at_20_percent_rolls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (exporter, prometheus) = scraped(dir, RATIO, 30);
    let cfg = config(
        dir,
        &prometheus.url(),
        &format!(
            "version_query = 'app_build_info{{job=\"app\"}}'{}",
            ratio_rule("2s")
        ),
        false,
    );
    let mut daemon = Running::start(&cfg, &dir.join("daemon.log"));
    let state = dir.join("state");

    // 1% for a while: the rule is evaluated, Ok, and nothing happens.
    wait_ratio_ok(&state, "the 5xx rule to be ok");
    std::thread::sleep(Duration::from_secs(4));
    daemon.assert_alive();
    assert!(!dir.join("marker").exists(), "no rollback at 1%");
    assert_eq!(
        statuses(&state, "http-5xx-rate"),
        vec!["ok"],
        "1% never goes pending"
    );

    // 20%: Pending, then Breached after `for`, and the rollback runs.
    exporter.set(|k| k.error_ratio = 0.20);
    let marker = wait_for(Duration::from_secs(30), "the rollback marker", || {
        std::fs::read_to_string(dir.join("marker")).ok()
    });
    assert_eq!(marker.trim(), "? -> ?");
    let seen = statuses(&state, "http-5xx-rate");
    let pending = seen.iter().position(|s| s == "pending");
    let breached = seen.iter().position(|s| s == "breached");
    assert!(
        matches!((pending, breached), (Some(p), Some(b)) if p < b),
        "pending before breached: {seen:?}"
    );
    // The incident names the breaching series and the values.
    let incident = journal(&state)
        .into_iter()
        .find_map(|e| {
            let inc = &e["state"]["phase"]["incident"];
            (!inc.is_null()).then(|| inc.clone())
        })
        .expect("an incident in the journal");
    let breach = &incident["cause"]["breached"][0];
    assert_eq!(breach["labels"]["job"], "app", "{breach}");
    let v = breach["value"].as_f64().unwrap();
    assert!(v > 0.05 && v < 0.3, "value {v}");
    let why = incident["timeline"][0]["message"].as_str().unwrap();
    assert!(why.contains(r#"http-5xx-rate{job="app"} = "#), "{why}");
    exporter.set(|k| k.error_ratio = 0.01);
    daemon.assert_alive();
}

#[test]
fn latency_5x_its_baseline_breaches_and_2x_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Enough steady history for a baseline.
    let (exporter, prometheus) = scraped(dir, "count_over_time(app_latency_seconds[1m]) >= 6", 40);
    let cfg = config(
        dir,
        &prometheus.url(),
        r#"version_query = 'app_build_info{job="app"}'
  [[target.rule]]
  name = "latency"
  source = "prometheus"
  query = 'app_latency_seconds{job="app"}'
  above_baseline = 3.0
  baseline_window = "30s"
  for = "2s""#,
        true,
    );
    let daemon = Running::start(&cfg, &dir.join("daemon.log"));
    let state = dir.join("state");
    wait_for(Duration::from_secs(20), "v1 observed", || {
        journal(&state)
            .iter()
            .any(|e| e["event"]["version"] == "v1")
            .then_some(())
    });
    wait_for(Duration::from_secs(20), "a baseline of 0.1", || {
        rule_reports(&state, "latency")
            .iter()
            .any(|r| r["baseline"].as_f64() == Some(0.1))
            .then_some(())
    });

    // Deploy v2 at 2x: the baseline stays the one before the deploy.
    exporter.set(|k| {
        k.version = "v2".into();
        k.latency = 0.2;
    });
    wait_for(Duration::from_secs(20), "v2 observed", || {
        journal(&state)
            .iter()
            .any(|e| e["event"]["version"] == "v2")
            .then_some(())
    });
    wait_for(Duration::from_secs(20), "the 2x value evaluated", || {
        let status = status_cli(&cfg);
        status.contains("value 0.2").then_some(status)
    });
    std::thread::sleep(Duration::from_secs(3));
    let status = status_cli(&cfg);
    assert!(
        status.contains("latency") && status.contains(" ok ") && status.contains("baseline 0.1"),
        "2x stays ok, against the pre-deploy baseline:\n{status}"
    );
    assert!(
        status.contains("threshold 0.3 (3 x baseline 0.1)"),
        "{status}"
    );
    assert!(!dir.join("marker").exists(), "no rollback at 2x");

    // 5x: breach after `for`, rollback v2 -> v1.
    exporter.set(|k| k.latency = 0.5);
    let marker = wait_for(Duration::from_secs(30), "the rollback marker", || {
        std::fs::read_to_string(dir.join("marker")).ok()
    });
    assert_eq!(marker.trim(), "v2 -> v1");
    let breach = journal(&state)
        .into_iter()
        .find_map(|e| {
            let b = &e["state"]["phase"]["incident"]["cause"]["breached"][0];
            (!b.is_null()).then(|| b.clone())
        })
        .unwrap();
    assert_eq!(breach["baseline"].as_f64(), Some(0.1), "{breach}");
    assert_eq!(breach["value"].as_f64(), Some(0.5), "{breach}");
    drop(daemon);
}

#[test]
fn prometheus_killed_mid_run_is_blind_not_a_rollback_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (exporter, mut prometheus) = scraped(dir, RATIO, 30);
    let cfg = config(
        dir,
        &prometheus.url(),
        &format!("blind_after = \"2s\"{}", ratio_rule("1s")),
        false,
    );
    let mut daemon = Running::start(&cfg, &dir.join("daemon.log"));
    let state = dir.join("state");
    let outbox = state.join("outbox");
    wait_ratio_ok(&state, "the rule to be ok");

    prometheus.kill();
    // Errors rise while nobody can see them: still no rollback. The server
    // being down is told once, by the server's notice (the target's own
    // blind notice leaves it out).
    exporter.set(|k| k.error_ratio = 0.5);
    let (_, mail) = wait_for(Duration::from_secs(20), "the unreachable mail", || {
        mails(&outbox)
            .into_iter()
            .find(|(_, m)| m.contains("prometheus default: UNREACHABLE"))
    });
    assert!(mail.contains("1 rule(s) have no data"), "{mail}");
    assert!(mail.contains("app/http-5xx-rate"), "{mail}");
    assert!(mail.contains("cannot connect"), "names the reason: {mail}");
    let unknown = rule_reports(&state, "http-5xx-rate")
        .into_iter()
        .rfind(|r| r["status"]["status"] == "unknown")
        .expect("unknown in the journal");
    assert!(
        unknown["status"]["why"]
            .as_str()
            .unwrap()
            .starts_with(&format!("prometheus {}/", prometheus.url())),
        "{unknown}"
    );
    std::thread::sleep(Duration::from_secs(2));
    daemon.assert_alive();
    assert!(
        !dir.join("marker").exists(),
        "a blind daemon never rolls back"
    );
    assert_eq!(
        mails(&outbox)
            .iter()
            .filter(|(_, m)| m.contains("UNREACHABLE"))
            .count(),
        1,
        "unreachable is told once"
    );
    assert!(
        !mails(&outbox)
            .iter()
            .any(|(_, m)| m.contains("MONITORING BLIND")),
        "not again per target"
    );

    exporter.set(|k| k.error_ratio = 0.01);
    prometheus.restart();
    wait_for(Duration::from_secs(30), "the reachable-again mail", || {
        mails(&outbox)
            .into_iter()
            .find(|(_, m)| m.contains("prometheus default: REACHABLE AGAIN"))
    });
    wait_for(Duration::from_secs(20), "the rule ok again", || {
        (statuses(&state, "http-5xx-rate").last().map(String::as_str) == Some("ok")).then_some(())
    });
    daemon.assert_alive();
    assert!(!dir.join("marker").exists());
}

/// The config of [`two_servers_one_stopped_is_one_notice_for_that_server`]:
/// `[prometheus]` and `[prometheus.servers.eu]`, target `web` with a rule on
/// each, target `api` with two rules on eu. The rules ask a gauge, so a
/// restarted Prometheus has data again within a scrape or two (shorter
/// than the targets' `blind_after`).
fn two_server_config(dir: &Path, default_url: &str, eu_url: &str) -> (PathBuf, u16) {
    let api_port = common::free_port();
    let rule = |name: &str, server: &str| {
        format!(
            "  [[target.rule]]\n  name = \"{name}\"\n  source = \"prometheus\"\n  \
             query = 'max by (job) (app_latency_seconds{{job=\"app\"}})'\n  \
             above = 1.0\n  for = \"1s\"\n{server}\n"
        )
    };
    let target = |name: &str, rules: &str| {
        format!(
            "[[target]]\nname = \"{name}\"\ncooldown = \"10m\"\nblind_after = \"5s\"\n{rules}\n  \
             [target.rollback]\n  kind = \"command\"\n  timeout = \"10s\"\n  \
             steps = [[\"touch\", \"{dir}/marker-{name}\"]]\n",
            dir = dir.display()
        )
    };
    let text = head(
        dir,
        api_port,
        &format!("url = \"{default_url}\"\ntimeout = \"1s\"\nblind_after = \"10m\""),
    ) + &format!(
        r#"

[prometheus.servers.eu]
url = "{eu_url}"
timeout = "1s"
blind_after = "2s"

{web}
{api}
"#,
        web = target(
            "web",
            &format!(
                "{}{}",
                rule("errors", ""),
                rule("errors-eu", "  prometheus = \"eu\"")
            )
        ),
        api = target(
            "api",
            &format!(
                "{}{}",
                rule("errors-eu", "  prometheus = \"eu\""),
                rule("ratio-eu", "  prometheus = \"eu\"")
            )
        ),
    );
    let path = dir.join("rollbackd.toml");
    std::fs::write(&path, text).unwrap();
    (path, api_port)
}

/// The `rollbackd_prometheus_reachable` line of `server` on `/metrics`.
fn reachable_metric(api_port: u16, server: &str) -> Option<String> {
    let (_, text) = get(&format!("http://127.0.0.1:{api_port}/metrics"));
    let prefix = format!("rollbackd_prometheus_reachable{{server=\"{server}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

/// The latest journaled report of `target`'s `rule`.
fn latest_report(state: &Path, target: &str, rule: &str) -> Option<serde_json::Value> {
    journal(state)
        .into_iter()
        .filter(|e| e["event"]["event"] == "evaluated" && e["target"] == target)
        .filter_map(|e| {
            e["event"]["rules"]
                .as_array()?
                .iter()
                .find(|r| r["rule"] == rule)
                .cloned()
        })
        .next_back()
}

fn latest_status(state: &Path, target: &str, rule: &str) -> String {
    latest_report(state, target, rule)
        .and_then(|r| r["status"]["status"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Issue #12: two real Prometheus servers, rules on both, one stopped:
/// only the rules of the stopped one are Unknown (marked with the server),
/// there is exactly one notice for that server (none per target or rule),
/// and one "reachable again" once it is back.
#[test]
fn two_servers_one_stopped_is_one_notice_for_that_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let exporter = Exporter::start(knobs());
    let default = Prometheus::start(&dir.join("prom-default"), &[exporter.port]);
    let mut eu = Prometheus::start(&dir.join("prom-eu"), &[exporter.port]);
    default.wait_for_series("app_latency_seconds", Duration::from_secs(30));
    eu.wait_for_series("app_latency_seconds", Duration::from_secs(30));
    let (cfg, api_port) = two_server_config(dir, &default.url(), &eu.url());
    let check = run_rollbackd(&cfg, &["check"]);
    assert!(check.status.success(), "{check:?}");
    let mut daemon = Running::start(&cfg, &dir.join("daemon.log"));
    let state = dir.join("state");
    let outbox = state.join("outbox");
    let all = [
        ("web", "errors"),
        ("web", "errors-eu"),
        ("api", "errors-eu"),
        ("api", "ratio-eu"),
    ];
    wait_for(
        Duration::from_secs(20),
        "every rule ok on both servers",
        || {
            all.iter()
                .all(|(t, r)| latest_status(&state, t, r) == "ok")
                .then_some(())
        },
    );

    eu.kill();
    let (_, mail) = wait_for(Duration::from_secs(20), "the eu unreachable mail", || {
        mails(&outbox)
            .into_iter()
            .find(|(_, m)| m.contains("prometheus eu: UNREACHABLE"))
    });
    assert!(
        mail.contains(&format!("Prometheus eu ({}/)", eu.url())),
        "{mail}"
    );
    assert!(mail.contains("cannot connect"), "names the reason: {mail}");
    assert!(
        mail.contains("3 rule(s) have no data")
            && mail.contains("web/errors-eu, api/errors-eu, api/ratio-eu"),
        "names the rules that abstain: {mail}"
    );
    // Only the rules of the stopped server are Unknown, each marked with it.
    for (t, r) in &all[1..] {
        let report = latest_report(&state, t, r).unwrap();
        assert_eq!(report["status"]["status"], "unknown", "{t}/{r}: {report}");
        assert_eq!(report["unreachable"]["server"], "eu", "{t}/{r}: {report}");
        assert!(
            report["status"]["why"]
                .as_str()
                .unwrap()
                .starts_with(&format!("prometheus eu {}/", eu.url())),
            "{report}"
        );
    }
    assert_eq!(reachable_metric(api_port, "eu").as_deref(), Some("0"));
    assert_eq!(reachable_metric(api_port, "default").as_deref(), Some("1"));
    // A reload keeps what was told about each server: no second notice,
    // and "reachable again" still comes.
    let reload = run_rollbackd(&cfg, &["reload"]);
    assert!(reload.status.success(), "{reload:?}");
    // Down past the targets' blind_after (5s): still one notice, none per
    // target.
    std::thread::sleep(Duration::from_secs(6));
    daemon.assert_alive();
    let web = latest_report(&state, "web", "errors").unwrap();
    assert_eq!(web["status"]["status"], "ok", "{web}");
    assert!(web.get("unreachable").is_none(), "{web}");
    let texts: Vec<String> = mails(&outbox).into_iter().map(|(_, m)| m).collect();
    assert_eq!(
        texts.iter().filter(|m| m.contains("UNREACHABLE")).count(),
        1,
        "one notice for the server: {texts:#?}"
    );
    assert!(
        !texts.iter().any(|m| m.contains("MONITORING BLIND")),
        "no blind notice per target: {texts:#?}"
    );
    assert!(!texts.iter().any(|m| m.contains("prometheus default")));

    eu.restart();
    wait_for(
        Duration::from_secs(30),
        "the eu reachable-again mail",
        || {
            mails(&outbox)
                .into_iter()
                .find(|(_, m)| m.contains("prometheus eu: REACHABLE AGAIN"))
        },
    );
    wait_for(Duration::from_secs(30), "every rule ok again", || {
        all.iter()
            .all(|(t, r)| latest_status(&state, t, r) == "ok")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let texts: Vec<String> = mails(&outbox).into_iter().map(|(_, m)| m).collect();
    assert_eq!(
        texts
            .iter()
            .filter(|m| m.contains("REACHABLE AGAIN"))
            .count(),
        1,
        "{texts:#?}"
    );
    assert_eq!(texts.len(), 2, "nothing else was told: {texts:#?}");
    assert_eq!(reachable_metric(api_port, "eu").as_deref(), Some("1"));
    daemon.assert_alive();
    assert!(!dir.join("marker-web").exists() && !dir.join("marker-api").exists());
}

/// The reason for no data, from the library client, for each bad answer.
#[test]
fn bad_answers_are_unknown_with_a_clear_reason() {
    use rollbackd::config::PrometheusConfig;
    use rollbackd::sources::prometheus::Prometheus as Client;

    let fake = FakePrometheus::start(Fake::Value(0.5));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            let client = Client::build(&PrometheusConfig {
                url: fake.url().parse().unwrap(),
                timeout: Duration::from_millis(500),
                auth: None,
                headers: vec![],
                blind_after: Duration::from_secs(300),
            })
            .unwrap();
            use rollbackd::sources::prometheus::Reachability;
            assert_eq!(client.reachability(), Reachability::Unknown);
            let series = client.instant("up").await.unwrap();
            assert_eq!(client.reachability(), Reachability::Reachable);
            assert_eq!(series[0].value, 0.5);
            assert_eq!(series[0].labels["job"], "app");
            for (mode, want) in [
                (Fake::Garbage, "bad value: not a Prometheus query answer"),
                (Fake::Garbage, "proxy login"),
                (
                    Fake::ServerError,
                    "HTTP 500 Internal Server Error: \"upstream exploded\"",
                ),
                (
                    Fake::StatusError,
                    "query failed (HTTP 400): bad_data: parse error at char 3",
                ),
                (Fake::Empty, "empty result: no series matched the query"),
                (
                    Fake::Slow(Duration::from_secs(3)),
                    "no answer within the timeout of 500ms",
                ),
            ] {
                fake.set(mode);
                let start = std::time::Instant::now();
                let err = client.instant("up").await.unwrap_err().to_string();
                assert!(
                    err.starts_with(&format!("prometheus {}/", fake.url())),
                    "{mode:?}: {err}"
                );
                assert!(err.contains(want), "{mode:?}: want {want:?} in {err:?}");
                assert!(start.elapsed() < Duration::from_secs(2), "{mode:?} bounded");
                // An error answer is an answer; only silence is unreachable.
                match (mode, client.reachability()) {
                    (Fake::Slow(_), Reachability::Unreachable { error, .. }) => {
                        assert!(error.contains("no answer within"), "{error}")
                    }
                    (Fake::Slow(_), r) => panic!("slow: {r:?}"),
                    (_, r) => assert_eq!(r, Reachability::Reachable, "{mode:?}"),
                }
            }
            // Refused: unreachable, since the first refusal.
            let closed = Client::build_named(
                "eu",
                &PrometheusConfig {
                    url: format!("http://127.0.0.1:{}", prom::free_port())
                        .parse()
                        .unwrap(),
                    timeout: Duration::from_millis(500),
                    auth: None,
                    headers: vec![],
                    blind_after: Duration::from_secs(300),
                },
            )
            .unwrap();
            let err = closed.instant("up").await.unwrap_err();
            assert!(
                matches!(err, rollbackd::sources::SourceError::Unreachable { .. }),
                "{err:?}"
            );
            assert!(err.to_string().starts_with("prometheus eu http://127.0.0.1:"), "{err}");
            let Reachability::Unreachable { since, .. } = closed.reachability() else {
                panic!("{:?}", closed.reachability())
            };
            let _ = closed.instant("up").await;
            assert!(
                matches!(closed.reachability(), Reachability::Unreachable { since: s, .. } if s == since),
                "the run keeps its start"
            );
        })
        .await
        .expect("a query ignored its timeout (fake server hang?)")
    });
}

/// The daemon keeps running through every kind of bad answer, its rule is
/// Unknown with the reason, and it never rolls back.
#[test]
fn the_daemon_survives_a_badly_answering_prometheus() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fake = FakePrometheus::start(Fake::Garbage);
    let cfg = config(
        dir,
        &fake.url(),
        r#"  [[target.rule]]
  name = "errors"
  source = "prometheus"
  query = 'up'
  above = 0.1"#,
        false,
    );
    let mut daemon = Running::start(&cfg, &dir.join("daemon.log"));
    let state = dir.join("state");
    let why = wait_for(Duration::from_secs(20), "unknown with a reason", || {
        rule_reports(&state, "errors")
            .into_iter()
            .find(|r| r["status"]["status"] == "unknown")
            .map(|r| r["status"]["why"].as_str().unwrap_or("").to_string())
    });
    assert!(why.contains("not a Prometheus query answer"), "{why}");
    for mode in [
        Fake::ServerError,
        Fake::StatusError,
        Fake::Empty,
        Fake::Slow(Duration::from_secs(3)),
        Fake::Value(f64::NAN),
    ] {
        fake.set(mode);
        std::thread::sleep(Duration::from_millis(1500));
        daemon.assert_alive();
        let status = status_cli(&cfg);
        assert!(status.contains("unknown"), "{mode:?}:\n{status}");
    }
    assert!(!dir.join("marker").exists(), "no data is not a breach");
    // Data again (above the threshold, for = 0): this one is real.
    fake.set(Fake::Value(0.9));
    let marker = dir.join("marker");
    let mut waited = 0;
    while !marker.exists() && waited < 200 {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    assert!(
        marker.exists(),
        "the rollback on real data; log:\n{}\nstatus:\n{}",
        daemon.log_text(),
        status_cli(&cfg)
    );
    daemon.assert_alive();
    let log = daemon.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn version_changes_are_seen_through_command_url_and_query() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (exporter, prometheus) = scraped(dir, "app_build_info", 30);
    std::fs::write(dir.join("version"), "v1\n").unwrap();
    let rule = r#"
  [[target.rule]]
  name = "never"
  source = "prometheus"
  query = 'vector(0)'
  above = 1.0
  [target.rollback]
  kind = "command"
  steps = [["true"]]
"#;
    let text = conf::daemon(dir, common::free_port(), "300ms", "")
        + &format!(
            r#"
[prometheus]
url = "{url}"

[[target]]
name = "by-command"
version_command = ["cat", "{dir}/version"]
{rule}
[[target]]
name = "by-url"
version_url = "http://127.0.0.1:{port}/version.json"
version_json_pointer = "/build/version"
{rule}
[[target]]
name = "by-url-text"
version_url = "http://127.0.0.1:{port}/version"
{rule}
[[target]]
name = "by-query"
version_query = 'app_build_info{{job="app"}}'
version_label = "version"
{rule}
"#,
            dir = dir.display(),
            url = prometheus.url(),
            port = exporter.port
        );
    let cfg = dir.join("rollbackd.toml");
    std::fs::write(&cfg, text).unwrap();
    let daemon = Running::start(&cfg, &dir.join("daemon.log"));
    let state = dir.join("state");
    let targets = ["by-command", "by-url", "by-url-text", "by-query"];
    let seen = |target: &str, version: &str| {
        journal(&state).into_iter().find(|e| {
            e["target"] == target
                && e["event"]["event"] == "version_observed"
                && e["event"]["version"] == version
        })
    };
    for t in targets {
        wait_for(Duration::from_secs(20), &format!("{t} at v1"), || {
            seen(t, "v1")
        });
    }
    std::fs::write(dir.join("version"), "v2\n").unwrap();
    exporter.set(|k| k.version = "v2".into());
    for t in targets {
        let e = wait_for(Duration::from_secs(20), &format!("{t} at v2"), || {
            seen(t, "v2")
        });
        // The deploy event: both versions and the time, in the journal.
        assert_eq!(e["state"]["version"], "v2", "{t}: {e}");
        assert_eq!(e["state"]["previous_version"], "v1", "{t}: {e}");
        assert!(e["state"]["deployed_at"].is_string(), "{t}: {e}");
    }
    drop(daemon);
}

mod machine {
    //! The blind notification and the `only_within` guard, through the pure
    //! state machine.
    use std::time::Duration;

    use chrono::{DateTime, TimeDelta, Utc};
    use rollbackd::decide::{step, Action, DecideConfig, Event, Guards, NotifyKind, TargetState};
    use rollbackd::rules::{RuleReport, RuleStatus};

    fn t(s: i64) -> DateTime<Utc> {
        "2026-01-01T12:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::seconds(s)
    }

    /// [`step`] with no guards at `t(secs)`.
    fn step_at(
        c: &DecideConfig,
        s: TargetState,
        event: Event,
        secs: i64,
    ) -> (TargetState, Vec<Action>) {
        step(c, &Guards::default(), s, event, t(secs)).unwrap()
    }

    fn cfg(only_within: Option<Duration>) -> DecideConfig {
        DecideConfig {
            dry_run: false,
            windows: vec![],
            cooldown: Duration::from_secs(600),
            verify_within: Duration::from_secs(60),
            verify_rules: true,
            verify_url: false,
            verify_gates: 0,
            has_on_failure: false,
            needs_vars: vec![],
            version_source: true,
            method: "command".into(),
            max_rollbacks_per_hour: 5,
            blind_after: Duration::from_secs(300),
            only_within,
            confirm: false,
            confirm_timeout: Duration::from_secs(300),
            on_confirm_timeout: rollbackd::config::OnConfirmTimeout::Escalate,
            has_after: false,
            blast_radius: None,
            rto: Duration::from_secs(300),
            max_pause: Duration::from_secs(24 * 3600),
            settle: Duration::ZERO,
        }
    }

    fn report(status: RuleStatus, at: DateTime<Utc>) -> Event {
        Event::Evaluated {
            fleet: Default::default(),
            rules: vec![RuleReport::ok("errors", at)
                .source("prometheus up")
                .status(status)
                .value(1.0)
                .for_(Duration::ZERO)],
        }
    }

    fn unknown(since: i64, at: i64) -> Event {
        report(
            RuleStatus::Unknown {
                since: t(since),
                why: "prometheus http://p/: cannot connect".into(),
            },
            t(at),
        )
    }

    fn notify_kinds(actions: &[Action]) -> Vec<NotifyKind> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::NotifyTarget { kind, .. } | Action::Notify { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn blind_is_told_once_and_seeing_once() {
        let c = cfg(None);
        let mut s = TargetState::new("app");
        let mut told = Vec::new();
        for (since, at) in [(0, 0), (0, 299), (0, 300), (0, 400), (0, 1000)] {
            let (next, actions) =
                step(&c, &Guards::default(), s, unknown(since, at), t(at)).unwrap();
            s = next;
            told.push(notify_kinds(&actions));
            if at == 300 {
                let Action::NotifyTarget { message, .. } = &actions[0] else {
                    panic!("{actions:?}")
                };
                assert!(
                    message.contains("errors has had no data since"),
                    "{message}"
                );
                assert!(message.contains("cannot connect"), "{message}");
            }
        }
        assert_eq!(
            told,
            vec![vec![], vec![], vec![NotifyKind::Blind], vec![], vec![]]
        );
        let (s, actions) = step_at(&c, s, report(RuleStatus::Ok, t(1001)), 1001);
        assert_eq!(notify_kinds(&actions), vec![NotifyKind::Seeing]);
        assert_eq!(s.blind_notified, None);
        let (_, actions) = step_at(&c, s, report(RuleStatus::Ok, t(1002)), 1002);
        assert!(actions.is_empty());
    }

    #[test]
    fn only_within_escalates_an_old_or_undated_release() {
        let breach = |at| report(RuleStatus::Breached { since: t(0) }, t(at));
        let deployed = |at: Option<i64>| {
            let mut s = TargetState::new("app");
            s.version = Some("v2".into());
            s.previous_version = Some("v1".into());
            s.deployed_at = at.map(t);
            s
        };
        let c = cfg(Some(Duration::from_secs(7200)));
        for (name, state, at, want_phase) in [
            ("deployed 1h ago", deployed(Some(0)), 3600, "RollingBack"),
            ("deployed 3h ago", deployed(Some(0)), 3 * 3600, "Escalated"),
            ("deploy time unknown", deployed(None), 60, "Escalated"),
        ] {
            let (s, actions) = step(&c, &Guards::default(), state, breach(at), t(at)).unwrap();
            assert_eq!(s.phase.name(), want_phase, "{name}");
            if want_phase == "Escalated" {
                let inc = s.incident().unwrap();
                let err = inc.error.as_deref().unwrap();
                assert!(err.starts_with("only_within = 2h"), "{name}: {err}");
                assert!(!actions.iter().any(|a| matches!(a, Action::Execute { .. })));
            }
        }
        // Without only_within, the undated release is rolled back.
        let (s, _) = step_at(&cfg(None), deployed(None), breach(60), 60);
        assert_eq!(s.phase.name(), "RollingBack");
    }
}
