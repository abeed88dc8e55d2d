//! Issue 18, item 1: an absent series is evidence only where it was
//! expected, and a Prometheus that holds no data is blind, not evidence.
//!
//! - "Semantics": every rule kind (`above`, `above_baseline`,
//!   `traffic_query`/`min_traffic`, `no_data = hold | ok | breach`, `step`,
//!   `mode = "shadow"`) over hostile Prometheus timelines played by a
//!   scripted fake in simulated time — an empty answer, a gap, a restart
//!   without data, a Prometheus younger than `for` + lookback, NaN, stale
//!   series, late data. No rule may act unless the condition held for the
//!   whole `for` on real data; a real breach (and, under `breach`, a
//!   release whose series truly vanish) still acts after `for`.
//! - The issue's cases against a real Prometheus and the real daemon:
//!   `min(1 - up{job="app"})`, `for = "10s"`, `no_data = "breach"`, a daemon
//!   started before Prometheus's first scrape, and a Prometheus restarted
//!   without its TSDB, roll nothing back; a release whose series vanish on a
//!   Prometheus that has been scraping long enough is rolled back.

mod common;
#[path = "common/prometheus.rs"]
mod prom;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use prom::{Prometheus, ScriptedPrometheus, World};
use rollbackd::config::{
    BaselineSpec, NoData, PromSpec, PrometheusConfig, RuleConfig, SourceSpec, TrafficGuard,
};
use rollbackd::rules::{self, RuleEval, RuleReport, RuleStatus};
use rollbackd::sources::prometheus::Prometheus as Client;
use rollbackd::sources::Source;

// ---------------------------------------------------------------------
// Simulated time against a scripted Prometheus.

/// Simulated time 0: 2026-01-01T12:00:00Z. Worlds speak seconds from it.
const T0: f64 = 1_767_268_800.0;
const FOR: Duration = Duration::from_secs(10);
const HEALTHY: f64 = 0.1;
const BAD: f64 = 0.9;

fn at(s: f64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(((T0 + s) * 1000.0).round() as i64).unwrap()
}

fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0 - T0
}

/// Which query a world is asked: the rule's, its traffic guard's, or the
/// server's own `count(up)`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Q {
    App,
    Traffic,
    Up,
}

fn q(query: &str) -> Q {
    match query {
        "count(up)" => Q::Up,
        "traffic" => Q::Traffic,
        _ => Q::App,
    }
}

/// A world in seconds from [`T0`]: `(query, now, t) -> sample`.
fn world(f: impl Fn(Q, f64, f64) -> Option<f64> + Send + Sync + 'static) -> Arc<World> {
    Arc::new(move |query: &str, now: f64, t: f64| {
        let (now, t) = (now - T0, t - T0);
        // Nothing is known about the future.
        if t > now + 1e-3 {
            return None;
        }
        f(q(query), now, t)
    })
}

/// A Prometheus scraping since long ago: `up` everywhere, 10 req/s.
fn normal(which: Q, app: Option<f64>) -> Option<f64> {
    match which {
        Q::Up => Some(1.0),
        Q::Traffic => Some(10.0),
        Q::App => app,
    }
}

fn near(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-3
}

/// One rule kind of `src/config`, as a target would hold it.
struct Kind {
    name: &'static str,
    rule: RuleConfig,
    target_no_data: NoData,
}

fn prom_rule(name: &str, no_data: Option<NoData>) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        source: SourceSpec::Prometheus(PromSpec {
            query: "app".into(),
            baseline: None,
            traffic: None,
            step: None,
            server: None,
        }),
        above: 0.5,
        for_: FOR,
        no_data,
        shadow: false,
    }
}

fn spec(rule: &mut RuleConfig) -> &mut PromSpec {
    match &mut rule.source {
        SourceSpec::Prometheus(p) => p,
        _ => unreachable!(),
    }
}

fn kinds() -> Vec<Kind> {
    let kind = |name, rule, target_no_data| Kind {
        name,
        rule,
        target_no_data,
    };
    let mut out = vec![
        kind("above (hold)", prom_rule("above", None), NoData::Hold),
        kind(
            "no_data = ok",
            prom_rule("ok", Some(NoData::Ok)),
            NoData::Hold,
        ),
        kind(
            "no_data = breach",
            prom_rule("breach", Some(NoData::Breach)),
            NoData::Hold,
        ),
        kind(
            "no_data = breach from the target",
            prom_rule("target-breach", None),
            NoData::Breach,
        ),
    ];
    for no_data in [NoData::Hold, NoData::Breach] {
        let mut r = prom_rule("baseline", Some(no_data));
        r.above = f64::NEG_INFINITY;
        spec(&mut r).baseline = Some(BaselineSpec {
            factor: 3.0,
            window: Duration::from_secs(60),
            query: None,
        });
        out.push(kind(
            if no_data == NoData::Hold {
                "above_baseline (hold)"
            } else {
                "above_baseline (breach)"
            },
            r,
            NoData::Hold,
        ));
    }
    for no_data in [NoData::Hold, NoData::Breach] {
        let mut r = prom_rule("traffic", Some(no_data));
        spec(&mut r).traffic = Some(TrafficGuard {
            query: "traffic".into(),
            min: 1.0,
        });
        out.push(kind(
            if no_data == NoData::Hold {
                "traffic_query/min_traffic (hold)"
            } else {
                "traffic_query/min_traffic (breach)"
            },
            r,
            NoData::Hold,
        ));
    }
    let mut r = prom_rule("step", Some(NoData::Breach));
    spec(&mut r).step = Some(Duration::from_millis(500));
    out.push(kind("step = 500ms (breach)", r, NoData::Hold));
    let mut r = prom_rule("shadow", Some(NoData::Breach));
    r.shadow = true;
    out.push(kind("mode = shadow (breach)", r, NoData::Hold));
    out
}

/// What the decision machine acts on: a rule Breached that is not shadow.
fn acts(r: &RuleReport) -> bool {
    !r.shadow && matches!(r.status, RuleStatus::Breached { .. })
}

fn client(url: &str) -> Client {
    Client::build(&PrometheusConfig {
        url: url.parse().unwrap(),
        timeout: Duration::from_secs(5),
        auth: None,
        headers: vec![],
        blind_after: Duration::from_secs(300),
    })
    .unwrap()
}

/// Evaluate `kind` against `world` once a second from `from` to `to`
/// (simulated seconds), as a worker polling every second would.
fn play(
    rt: &tokio::runtime::Runtime,
    kind: &Kind,
    world: Arc<World>,
    from: i64,
    to: i64,
) -> Vec<(f64, RuleReport)> {
    let fake = ScriptedPrometheus::start(world);
    let c = client(&fake.url());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut source = Source::build(
        &kind.rule.source,
        &http,
        Some(&c),
        Duration::from_secs(1),
        &rollbackd::sources::alertmanager::AlertStore::global(),
    );
    let mut eval = RuleEval::build(kind.rule.clone(), kind.target_no_data);
    let mut out = Vec::new();
    for s in from..=to {
        let now = s as f64;
        fake.at(T0 + now);
        let r = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(20),
                rules::evaluate(&mut source, &mut eval, None, at(now)),
            )
            .await
            .expect("an evaluation hung")
        });
        out.push((now, r));
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn timeline(reports: &[(f64, RuleReport)]) -> String {
    reports
        .iter()
        .map(|(s, r)| format!("  {s:>5}: {}", r.explain()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `what` went wrong, then the [`timeline`] that shows it.
fn with_timeline(what: &str, reports: &[(f64, RuleReport)]) -> String {
    format!("{what}\n{}", timeline(reports))
}

/// A hostile timeline over a release that never breached for a whole `for`.
struct Hostile {
    name: &'static str,
    world: Arc<World>,
}

fn hostile() -> Vec<Hostile> {
    let h = |name, world| Hostile { name, world };
    vec![
        h(
            "one empty answer after healthy ones",
            world(|w, now, _| {
                if w == Q::App && near(now, 80.0) {
                    None
                } else {
                    normal(w, Some(HEALTHY))
                }
            }),
        ),
        h(
            "empty answers for less than for",
            world(|w, now, _| {
                if w == Q::App && (80.0..=88.0).contains(&now) {
                    None
                } else {
                    normal(w, Some(HEALTHY))
                }
            }),
        ),
        h(
            "bad for 8s, then one empty answer, then healthy",
            world(|w, now, t| {
                if w == Q::App && near(now, 79.0) {
                    None
                } else if (70.0..=78.0).contains(&t) {
                    normal(w, Some(BAD))
                } else {
                    normal(w, Some(HEALTHY))
                }
            }),
        ),
        h(
            "a gap of 8s in the data",
            world(|w, _, t| {
                if w == Q::App && (70.0..78.0).contains(&t) {
                    None
                } else {
                    normal(w, Some(HEALTHY))
                }
            }),
        ),
        h(
            "Prometheus restarted without its data at 80 (first scrape at 85)",
            world(|w, now, t| {
                if now >= 80.0 && t < 85.0 {
                    None
                } else {
                    normal(w, Some(HEALTHY))
                }
            }),
        ),
        h(
            "Prometheus started at 60, first scrape at 65 (the daemon polls from before)",
            world(|w, _, t| {
                if t < 65.0 {
                    None
                } else {
                    normal(w, Some(HEALTHY))
                }
            }),
        ),
        h(
            "NaN for longer than for",
            world(|w, _, t| {
                if (75.0..95.0).contains(&t) {
                    normal(w, Some(f64::NAN))
                } else {
                    normal(w, Some(HEALTHY))
                }
            }),
        ),
        h(
            "a series going stale again and again, each time for less than for",
            world(|w, _, t| {
                let stale = [(70.0, 76.0), (77.0, 83.0), (84.0, 90.0)]
                    .iter()
                    .any(|(a, b)| (*a..*b).contains(&t));
                if w == Q::App && stale {
                    None
                } else {
                    normal(w, Some(HEALTHY))
                }
            }),
        ),
        h(
            "late data: the latest 2s of every answer missing (ingestion lag)",
            world(|w, now, t| {
                if now >= 70.0 && t > now - 2.0 {
                    None
                } else {
                    normal(w, Some(HEALTHY))
                }
            }),
        ),
        h(
            "late data on the app's series only",
            world(|w, now, t| {
                if w == Q::App && now >= 70.0 && t > now - 2.0 {
                    None
                } else {
                    normal(w, Some(HEALTHY))
                }
            }),
        ),
        h(
            "bad for 9s with late data at its end",
            world(|w, now, t| {
                if w == Q::App && t > now - 2.0 && (75.0..80.0).contains(&now) {
                    None
                } else if (70.0..79.0).contains(&t) {
                    normal(w, Some(BAD))
                } else {
                    normal(w, Some(HEALTHY))
                }
            }),
        ),
        h(
            "no traffic series for longer than for",
            world(|w, _, t| {
                if w == Q::Traffic && (70.0..90.0).contains(&t) {
                    None
                } else {
                    normal(w, Some(HEALTHY))
                }
            }),
        ),
    ]
}

/// For every rule kind and every hostile timeline: no action.
#[test]
fn no_rule_kind_acts_on_a_hostile_timeline_without_a_whole_for_of_evidence() {
    let rt = runtime();
    let mut failures = Vec::new();
    for kind in kinds() {
        for h in hostile() {
            let reports = play(&rt, &kind, h.world.clone(), 58, 98);
            if reports.iter().any(|(_, r)| acts(r)) {
                let what = format!("{} / {}: acted", kind.name, h.name);
                failures.push(with_timeline(&what, &reports));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The controls: a real breach acts after `for`, not before, on every
/// kind (a shadow rule says so but does not act); under `breach`, a
/// release whose series vanish on a Prometheus that has been scraping for
/// long is rolled back too.
#[test]
fn every_rule_kind_still_acts_on_a_whole_for_of_evidence() {
    let rt = runtime();
    let bad = world(|w, _, t| normal(w, Some(if t >= 70.0 { BAD } else { HEALTHY })));
    let vanished = world(|w, _, t| normal(w, (t < 70.0).then_some(HEALTHY)));
    let mut failures = Vec::new();
    for kind in kinds() {
        let breach = kind.rule.no_data.unwrap_or(kind.target_no_data) == NoData::Breach;
        let mut worlds = vec![("bad from 70", bad.clone())];
        if breach {
            worlds.push(("series vanish at 70", vanished.clone()));
        }
        for (name, w) in worlds {
            let reports = play(&rt, &kind, w, 60, 85);
            let first = reports
                .iter()
                .find(|(_, r)| matches!(r.status, RuleStatus::Breached { .. }));
            let ok = match first {
                Some((s, r)) => {
                    (80.0..=81.0).contains(s)
                        && acts(r) != kind.rule.shadow
                        && matches!(r.status, RuleStatus::Breached { since }
                            if (69.0..=70.0).contains(&secs(since)))
                }
                None => false,
            };
            if !ok {
                let what = format!("{} / {name}: want Breached at 80-81 since ~70", kind.name);
                failures.push(with_timeline(&what, &reports));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The issue's case: 8 s of healthy answers, then one empty answer. The
/// empty answer is absent since the data the poll before saw, not since
/// the start of its range: Pending, not "breached since 20 s earlier".
#[test]
fn one_empty_answer_after_healthy_ones_is_pending_not_breached() {
    let rt = runtime();
    let kind = Kind {
        name: "down",
        rule: prom_rule("down", Some(NoData::Breach)),
        target_no_data: NoData::Hold,
    };
    // Healthy answers every 200 ms for 8 s, then one empty answer.
    let w = world(|w, now, _| {
        if w == Q::App && now >= 78.0 {
            None
        } else {
            normal(w, Some(HEALTHY))
        }
    });
    let fake = ScriptedPrometheus::start(w);
    let c = client(&fake.url());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut source = Source::build(
        &kind.rule.source,
        &http,
        Some(&c),
        Duration::from_millis(200),
        &rollbackd::sources::alertmanager::AlertStore::global(),
    );
    let mut eval = RuleEval::build(kind.rule.clone(), kind.target_no_data);
    let mut poll = |s: f64| {
        fake.at(T0 + s);
        rt.block_on(rules::evaluate(&mut source, &mut eval, None, at(s)))
    };
    for k in 0..40 {
        let r = poll(70.0 + k as f64 * 0.2);
        assert_eq!(r.status, RuleStatus::Ok, "{}", r.explain());
    }
    let r = poll(78.0);
    match r.status {
        RuleStatus::Pending { since } => {
            assert!(secs(since) > 77.8, "{}", r.explain())
        }
        _ => panic!("one empty answer must be pending: {}", r.explain()),
    }
    // Still absent: it breaches once absence has held for the whole `for`
    // since the last data, not before.
    let mut first = None;
    for k in 1..=60 {
        let s = 78.0 + k as f64 * 0.2;
        let r = poll(s);
        if matches!(r.status, RuleStatus::Breached { .. }) {
            first = Some(s);
            break;
        }
    }
    let first = first.expect("absence for the whole for breaches");
    assert!((87.8..=88.2).contains(&first), "breached at {first}");
}

/// A Prometheus younger than `for` + lookback, or restarted without its
/// data, is blind: the rule is Unknown with the reason, not Breached.
#[test]
fn a_prometheus_without_data_is_blind_with_the_reason() {
    let rt = runtime();
    let kind = Kind {
        name: "down",
        rule: prom_rule("down", Some(NoData::Breach)),
        target_no_data: NoData::Hold,
    };
    // Started at 60, first scrape at 65, the app's series from 66 on and
    // always 1 (down), so that only absence can make it hold early.
    let w = world(|w, _, t| match w {
        Q::Up if t >= 65.0 => Some(1.0),
        Q::App if t >= 66.0 => Some(BAD),
        Q::Traffic => Some(10.0),
        _ => None,
    });
    let reports = play(&rt, &kind, w, 60, 80);
    let (_, first) = &reports[0];
    match &first.status {
        RuleStatus::Unknown { why, .. } => assert!(
            why.contains("is blind: no count(up) in the last 30s")
                && why.contains("absence is not evidence"),
            "{why}"
        ),
        other => panic!("want unknown, got {other:?}: {}", first.explain()),
    }
    assert!(
        reports
            .iter()
            .any(|(_, r)| r.explain().contains("only since 12:01:05.000Z")),
        "{}",
        timeline(&reports)
    );
    // Its real data holds from 66: Breached at 76, on real data only.
    let first = reports
        .iter()
        .find(|(_, r)| matches!(r.status, RuleStatus::Breached { .. }))
        .map(|(s, r)| (*s, r.status.clone()));
    assert!(
        matches!(first, Some((76.0, RuleStatus::Breached { since })) if secs(since) == 66.0),
        "{first:?}\n{}",
        timeline(&reports)
    );
}

// ---------------------------------------------------------------------
// The issue's cases against a real Prometheus and the real daemon.

/// An exporter serving `app_errors_ratio 0.1` that can be taken down (it
/// then drops connections, the scrape fails and Prometheus marks the
/// series stale, as when a release crashes with its exporter).
struct Exporter {
    port: u16,
    down: Arc<AtomicBool>,
}

impl Exporter {
    fn start() -> Exporter {
        let down = Arc::new(AtomicBool::new(false));
        let d = down.clone();
        let port = serve_each(move |s| {
            if !d.load(Ordering::SeqCst) {
                answer_metrics(s, "# TYPE app_errors_ratio gauge\napp_errors_ratio 0.1\n");
            }
        });
        Exporter { port, down }
    }
}

/// `dir/releases/{v1,v2}`, `current -> v2`; one symlink target `web` with
/// one Prometheus rule under `no_data = "breach"`.
fn daemon_config(dir: &Path, prometheus_port: u16, query: &str, for_: &str) -> std::path::PathBuf {
    for r in ["v1", "v2"] {
        std::fs::create_dir_all(dir.join("releases").join(r)).unwrap();
    }
    std::os::unix::fs::symlink(dir.join("releases/v2"), dir.join("current")).unwrap();
    let rule = format!(
        r#"
  [[target.rule]]
  name = "down"
  source = "prometheus"
  query = '{query}'
  above = 0.5
  for = "{for_}"
  no_data = "breach"
"#
    );
    let text = [
        conf::daemon(dir, free_port(), "500ms", ""),
        format!("[prometheus]\nurl = \"http://127.0.0.1:{prometheus_port}\"\ntimeout = \"1s\"\n"),
        conf::email(&dir.join("state/outbox"), &["admin@example.com"]),
        conf::target("web", "10m", &rule),
        conf::symlink_rollback(dir, "10s", ""),
        conf::verify("15s", ""),
    ]
    .concat();
    conf::write(dir, &text)
}

/// Phases the target left Watching for, from the journal.
fn incidents(state: &Path) -> Vec<String> {
    journal(state)
        .into_iter()
        .filter(|e| e["type"] == "step" && e["to"] != "Watching")
        .map(|e| e["to"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The `down` rule's latest status in the journal.
fn down_status(state: &Path) -> Option<String> {
    journal(state).iter().rev().find_map(|e| {
        let r = e["state"]["rules"].as_array()?.first()?;
        Some(r["status"]["status"].as_str()?.to_string())
    })
}

/// Watch for `secs`: nothing may leave Watching, and `current` stays v2.
fn never_acts(dir: &Path, d: &mut Running, secs: u64, what: &str) {
    let state = dir.join("state");
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        let inc = incidents(&state);
        assert!(
            inc.is_empty(),
            "{what}: the daemon acted ({inc:?}); log:\n{}",
            d.log_text()
        );
        assert_eq!(live(dir), "v2", "{what}: rolled back");
        d.assert_alive();
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (a) The host reboots: the daemon polls before Prometheus is up and
/// before its first scrape. `min(1 - up{job="app"})` is absent until then:
/// blind, not a breach. Once the app is scraped, the rule is Ok.
#[test]
fn a_daemon_started_before_prometheuss_first_scrape_rolls_nothing_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = Exporter::start();
    let prom_port = free_port();
    let cfg = daemon_config(dir, prom_port, r#"min(1 - up{job="app"})"#, "10s");
    let mut d = Running::start(&cfg, &dir.join("rollbackd.log"));
    std::thread::sleep(Duration::from_secs(1));
    let prometheus = Prometheus::start_on(&dir.join("prom"), &[app.port], prom_port);
    // The first scrape lands ~5 s after the start; the rule stays blind
    // for `for` + lookback (30 s) of data unless the app's series is there.
    never_acts(dir, &mut d, 20, "before and after the first scrape");
    wait_for(Duration::from_secs(20), "the rule ok on real data", || {
        (down_status(&dir.join("state")).as_deref() == Some("ok")).then_some(())
    });
    never_acts(dir, &mut d, 2, "after");
    drop(prometheus);
}

/// (b) Prometheus restarted without its TSDB: its answers are empty for
/// everything, the past the daemon saw included. Blind, not a breach.
#[test]
fn a_prometheus_restarted_without_its_data_rolls_nothing_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = Exporter::start();
    let mut prometheus = Prometheus::start(&dir.join("prom"), &[app.port]);
    prometheus.wait_for_series(r#"up{job="app"}"#, Duration::from_secs(30));
    let cfg = daemon_config(dir, prometheus.port, r#"min(1 - up{job="app"})"#, "10s");
    let mut d = Running::start(&cfg, &dir.join("rollbackd.log"));
    wait_for(Duration::from_secs(20), "the rule ok", || {
        (down_status(&dir.join("state")).as_deref() == Some("ok")).then_some(())
    });
    prometheus.restart_without_data();
    never_acts(dir, &mut d, 20, "after the restart without data");
    wait_for(Duration::from_secs(20), "the rule ok again", || {
        (down_status(&dir.join("state")).as_deref() == Some("ok")).then_some(())
    });
}

/// (d) A crashed release must still be rolled back: its series vanish for
/// the whole `for` on a Prometheus that has been scraping for longer than
/// `for` + lookback.
#[test]
fn a_release_whose_series_vanish_on_a_seasoned_prometheus_is_rolled_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = Exporter::start();
    let prometheus = Prometheus::start(&dir.join("prom"), &[app.port]);
    prometheus.wait_for_series("app_errors_ratio", Duration::from_secs(30));
    // for = 3s: lookback 6s, so Prometheus must have scraped for 9s.
    std::thread::sleep(Duration::from_secs(10));
    let cfg = daemon_config(dir, prometheus.port, "app_errors_ratio", "3s");
    let state = dir.join("state");
    let d = Running::start(&cfg, &dir.join("rollbackd.log"));
    wait_for(Duration::from_secs(20), "the rule ok", || {
        (down_status(&state).as_deref() == Some("ok")).then_some(())
    });
    app.down.store(true, Ordering::SeqCst);
    let acted = wait_for(Duration::from_secs(30), "the rollback", || {
        incidents(&state).first().cloned()
    });
    assert_eq!(acted, "RollingBack", "log:\n{}", d.log_text());
    wait_for(Duration::from_secs(20), "current back on v1", || {
        (live(dir) == "v1").then_some(())
    });
}
