//! The evidence model of the rules layer (issue #9) against real processes:
//! a real Prometheus (`/usr/bin/prometheus`, 1 s scrapes) scraping exporters
//! the test controls, and local HTTP servers for probes. Each test drives
//! the library the way the daemon's worker does: `Source::build`,
//! `RuleEval::build`, `rules::evaluate` once per poll.
//!
//! - a series that vanishes is Unknown under `hold`, Breached under
//!   `no_data = "breach"`;
//! - `for` is judged on the data's timeline: a rule whose data has been bad
//!   for longer than `for` is Breached on its very first evaluation (a
//!   daemon restarted mid-breach), with `since` in the past;
//! - the traffic guard makes a NaN ratio on zero traffic Unknown, with why;
//! - a failed probe records why: refused, timed out.

mod common;
#[path = "common/prometheus.rs"]
mod prom;

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::{answer_metrics, hung_server, serve_each, wait_for};
use prom::{Exporter, Knobs, Prometheus};
use rollbackd::config::{
    NoData, ProbeMeasure, ProbeSpec, PromSpec, PrometheusConfig, RuleConfig, SourceSpec,
    TrafficGuard,
};
use rollbackd::rules::{self, RuleEval, RuleReport, RuleStatus};
use rollbackd::sources::prometheus::Prometheus as Client;
use rollbackd::sources::Source;

/// A one-gauge exporter (`app_errors_ratio`) that can be taken down: then
/// it drops every connection, the scrape fails and Prometheus marks the
/// series stale, as when the release crashed with its exporter.
struct Gauge {
    port: u16,
    down: Arc<AtomicBool>,
}

impl Gauge {
    fn start(value: f64) -> Gauge {
        let down = Arc::new(AtomicBool::new(false));
        let d = down.clone();
        let body = format!("# TYPE app_errors_ratio gauge\napp_errors_ratio {value}\n");
        // Taken down: a connection is closed without an answer.
        let port = serve_each(move |s| {
            if !d.load(Ordering::SeqCst) {
                answer_metrics(s, &body);
            }
        });
        Gauge { port, down }
    }

    fn take_down(&self) {
        self.down.store(true, Ordering::SeqCst);
    }
}

fn client(prometheus: &Prometheus) -> Client {
    Client::build(&PrometheusConfig {
        url: prometheus.url().parse().unwrap(),
        timeout: Duration::from_secs(2),
        auth: None,
        headers: vec![],
        blind_after: Duration::from_secs(300),
    })
    .unwrap()
}

fn prom_rule(name: &str, query: &str, above: f64, for_: Duration) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        source: SourceSpec::Prometheus(PromSpec {
            query: query.into(),
            baseline: None,
            traffic: None,
            step: Some(Duration::from_secs(1)),
            server: None,
        }),
        above,
        for_,
        no_data: None,
        shadow: false,
    }
}

/// A rule with its source and evaluation state, as a worker holds it.
struct Watched {
    source: Source,
    eval: RuleEval,
}

impl Watched {
    fn build(rule: RuleConfig, target_no_data: NoData, prometheus: Option<&Client>) -> Watched {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        Watched {
            source: Source::build(
                &rule.source,
                &http,
                prometheus,
                Duration::from_secs(1),
                &rollbackd::sources::alertmanager::AlertStore::global(),
            ),
            eval: RuleEval::build(rule, target_no_data),
        }
    }

    fn poll(&mut self, rt: &tokio::runtime::Runtime) -> RuleReport {
        let now = Utc::now();
        rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(20),
                rules::evaluate(&mut self.source, &mut self.eval, None, now),
            )
            .await
            .expect("an evaluation ignored its timeouts")
        })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Prometheus has no series for `q` now (instant query).
fn series_gone(prometheus: &Prometheus, q: &str) -> bool {
    let v = prometheus.query(q);
    v["status"] == "success" && v["data"]["result"].as_array().is_some_and(|r| r.is_empty())
}

fn since(status: &RuleStatus) -> Option<DateTime<Utc>> {
    match status {
        RuleStatus::Pending { since } | RuleStatus::Breached { since } => Some(*since),
        _ => None,
    }
}

fn start_prometheus(dir: &Path, ports: &[u16]) -> Prometheus {
    Prometheus::start(&dir.join("prom"), ports)
}

#[test]
fn a_vanished_series_is_unknown_under_hold_and_breached_under_breach() {
    let tmp = tempfile::tempdir().unwrap();
    let gauge = Gauge::start(0.9);
    let prometheus = start_prometheus(tmp.path(), &[gauge.port]);
    prometheus.wait_for_series("app_errors_ratio", Duration::from_secs(30));
    let rt = runtime();
    let c = client(&prometheus);
    let q = "app_errors_ratio";
    let for_ = Duration::from_secs(2);
    let mut hold = Watched::build(prom_rule("errors", q, 0.5, for_), NoData::Hold, Some(&c));
    let mut breach_rule = prom_rule("errors-or-gone", q, 0.5, for_);
    breach_rule.no_data = Some(NoData::Breach);
    // The rule's own no_data overrides the target's hold.
    let mut breach = Watched::build(breach_rule, NoData::Hold, Some(&c));

    // Data first: both see the breach on the data. Absence counts only on
    // a Prometheus that has been scraping for `for` + lookback (2s + 4s
    // here); younger, it is blind (issue 18).
    std::thread::sleep(Duration::from_secs(6));
    let r = hold.poll(&rt);
    assert!(
        matches!(r.status, RuleStatus::Breached { .. }),
        "{}",
        r.explain()
    );

    gauge.take_down();
    wait_for(Duration::from_secs(20), "the series to go stale", || {
        series_gone(&prometheus, q).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));

    let r = hold.poll(&rt);
    match &r.status {
        RuleStatus::Unknown { why, .. } => {
            assert!(why.starts_with("no data at the latest point"), "{why}")
        }
        other => panic!(
            "a vanished series under hold must be unknown, got {other:?}: {}",
            r.explain()
        ),
    }
    let r = breach.poll(&rt);
    assert!(
        matches!(r.status, RuleStatus::Breached { .. }),
        "a vanished series under no_data = breach must breach: {}",
        r.explain()
    );
    // Staying gone: still Unknown under hold, never a breach.
    std::thread::sleep(Duration::from_secs(2));
    let r = hold.poll(&rt);
    assert_eq!(r.status.name(), "unknown", "{}", r.explain());
}

#[test]
fn for_on_the_data_timeline_breaches_on_the_first_evaluation_after_a_start() {
    let tmp = tempfile::tempdir().unwrap();
    let gauge = Gauge::start(0.9);
    let prometheus = start_prometheus(tmp.path(), &[gauge.port]);
    prometheus.wait_for_series("app_errors_ratio", Duration::from_secs(30));
    // The data has been bad for a while before "rollbackd starts".
    std::thread::sleep(Duration::from_secs(6));
    let rt = runtime();
    let c = client(&prometheus);
    let q = "app_errors_ratio";

    // A fresh evaluation state, as after a restart: the data already held
    // for longer than `for`, so the very first evaluation is Breached, and
    // its since is in the past (at least `for` ago).
    let mut restarted = Watched::build(
        prom_rule("errors", q, 0.5, Duration::from_secs(3)),
        NoData::Hold,
        Some(&c),
    );
    let start = Utc::now();
    let r = restarted.poll(&rt);
    assert!(
        matches!(r.status, RuleStatus::Breached { .. }),
        "{}",
        r.explain()
    );
    let first_since = since(&r.status).unwrap();
    assert!(
        first_since <= start - TimeDelta::seconds(3),
        "since {first_since} not >= for in the past: {}",
        r.explain()
    );
    assert_eq!(r.value, Some(0.9));
    let detail = r.detail.clone().unwrap_or_default();
    assert!(
        detail.starts_with("judged on 7 points over the last 6s (step 1s)"),
        "{detail}"
    );

    // `for` longer than the data: pending, since when the data began (not
    // when the evaluation began).
    let mut long = Watched::build(
        prom_rule("errors", q, 0.5, Duration::from_secs(3600)),
        NoData::Hold,
        Some(&c),
    );
    let r = long.poll(&rt);
    let s = match r.status {
        RuleStatus::Pending { since } => since,
        other => panic!("want pending, got {other:?}"),
    };
    assert!(s <= start - TimeDelta::seconds(5), "since {s}");

    // The condition does not hold: ok.
    let mut fine = Watched::build(
        prom_rule("errors", q, 0.95, Duration::from_secs(3)),
        NoData::Hold,
        Some(&c),
    );
    assert_eq!(fine.poll(&rt).status, RuleStatus::Ok);

    // Polls go on: the run keeps its since (the range moved on, the run
    // did not restart).
    std::thread::sleep(Duration::from_secs(1));
    let r2 = restarted.poll(&rt);
    assert!(
        matches!(r2.status, RuleStatus::Breached { .. }),
        "{}",
        r2.explain()
    );
    assert_eq!(since(&r2.status), Some(first_since), "{}", r2.explain());
}

#[test]
fn zero_traffic_makes_a_nan_ratio_unknown_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(Knobs {
        error_ratio: 0.5,
        rps: 0.0,
        latency: 0.1,
        version: "v1".into(),
    });
    let prometheus = start_prometheus(tmp.path(), &[exporter.port]);
    let ratio =
        r#"sum(rate(http_requests_total{code="500"}[3s])) / sum(rate(http_requests_total[3s]))"#;
    let traffic = "sum(rate(http_requests_total[3s]))";
    prometheus.wait_for_series(ratio, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let rt = runtime();
    let c = client(&prometheus);

    let mut guarded_rule = prom_rule("5xx", ratio, 0.05, Duration::ZERO);
    if let SourceSpec::Prometheus(p) = &mut guarded_rule.source {
        p.traffic = Some(TrafficGuard {
            query: traffic.into(),
            min: 1.0,
        });
    }
    // Even under breach: too little traffic is not evidence.
    guarded_rule.no_data = Some(NoData::Breach);
    let mut guarded = Watched::build(guarded_rule, NoData::Hold, Some(&c));
    let r = guarded.poll(&rt);
    match &r.status {
        RuleStatus::Unknown { why, .. } => assert_eq!(
            why,
            &format!("low traffic: 0 req/s < 1 (traffic_query {traffic})"),
            "{}",
            r.explain()
        ),
        other => panic!(
            "zero traffic must be unknown, got {other:?}: {}",
            r.explain()
        ),
    }
    assert!(
        r.explain().contains("low traffic: 0 req/s < 1"),
        "{}",
        r.explain()
    );

    // Without a guard, the NaN ratio itself is no value, and never a breach,
    // not even under no_data = "breach".
    let mut bare_rule = prom_rule("5xx", ratio, 0.05, Duration::ZERO);
    bare_rule.no_data = Some(NoData::Breach);
    let mut bare = Watched::build(bare_rule, NoData::Hold, Some(&c));
    let r = bare.poll(&rt);
    match &r.status {
        RuleStatus::Unknown { why, .. } => assert_eq!(why, "value is NaN", "{}", r.explain()),
        other => panic!(
            "a NaN ratio must be unknown, got {other:?}: {}",
            r.explain()
        ),
    }

    // Traffic back: the guard lets the ratio through and it breaches.
    exporter.set(|k| k.rps = 50.0);
    let r = wait_for(
        Duration::from_secs(20),
        "the guarded rule to see traffic",
        || {
            std::thread::sleep(Duration::from_millis(500));
            let r = guarded.poll(&rt);
            matches!(r.status, RuleStatus::Breached { .. }).then_some(r)
        },
    );
    let detail = r.detail.unwrap_or_default();
    assert!(detail.contains("req/s >= 1"), "{detail}");
}

fn probe_rule(url: String, timeout: Duration) -> RuleConfig {
    RuleConfig {
        name: "health".into(),
        source: SourceSpec::Probe(ProbeSpec {
            url: url.parse().unwrap(),
            timeout,
            expect_status: None,
            measure: ProbeMeasure::FailureRatio,
            window: Duration::from_secs(30),
            min_samples: 3,
        }),
        above: 0.5,
        for_: Duration::ZERO,
        no_data: None,
        shadow: false,
    }
}

#[test]
fn failed_probes_record_why_refused_and_timed_out() {
    let rt = runtime();
    // A closed port: refused.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut refused = Watched::build(
        probe_rule(
            format!("http://127.0.0.1:{closed}/health"),
            Duration::from_secs(1),
        ),
        NoData::Hold,
        None,
    );
    // Too few probes first: unknown, not 100%.
    for n in 1..=2 {
        let r = refused.poll(&rt);
        match &r.status {
            RuleStatus::Unknown { why, .. } => assert_eq!(
                why,
                &format!("too few probes: {n} in window 30s < min_samples 3")
            ),
            other => panic!("probe {n}: want unknown, got {other:?}"),
        }
    }
    let r = refused.poll(&rt);
    assert!(
        matches!(r.status, RuleStatus::Breached { .. }),
        "{}",
        r.explain()
    );
    assert_eq!(r.value, Some(1.0));
    assert_eq!(
        r.detail.as_deref(),
        Some("3 of 3 probes failed: 3 refused; last: refused")
    );
    assert!(
        r.explain()
            .contains("[3 of 3 probes failed: 3 refused; last: refused]"),
        "{}",
        r.explain()
    );

    // A server that accepts and never answers: timed out after the timeout.
    let port = hung_server();
    let mut hanging = Watched::build(
        probe_rule(
            format!("http://127.0.0.1:{port}/health"),
            Duration::from_millis(300),
        ),
        NoData::Hold,
        None,
    );
    let started = std::time::Instant::now();
    for _ in 0..3 {
        hanging.poll(&rt);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let r = hanging.poll(&rt);
    assert_eq!(
        r.detail.as_deref(),
        Some("4 of 4 probes failed: 4 timed out after 300ms; last: timed out after 300ms")
    );
    // The report (journal, status, incident record) carries it as JSON too.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["detail"],
        "4 of 4 probes failed: 4 timed out after 300ms; last: timed out after 300ms"
    );
}

/// The daemon end to end: a probe against a closed port; `rollbackd
/// status` shows why the probes failed, and the journal's rule report
/// carries it.
#[test]
fn status_shows_why_probes_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let text = [
        common::conf::daemon(dir, common::free_port(), "200ms", ""),
        common::conf::target("web", "", ""),
        common::conf::health_rule(
            &format!("http://127.0.0.1:{closed}/health"),
            "500ms",
            "2s",
            "1h",
        ),
        common::conf::command_rollback("", r#"[["true"]]"#),
    ]
    .concat();
    let cfg = common::conf::write(dir, &text);
    let mut daemon = common::Running::start(&cfg, &dir.join("rollbackd.log"));
    let status = wait_for(
        Duration::from_secs(20),
        "status to show the probe failures",
        || {
            let out = std::process::Command::new(common::bin())
                .args(["status", "--config"])
                .arg(&cfg)
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = text.lines().find(|l| l.contains("health"))?.to_string();
            (line.contains("pending") && line.contains("probes failed")).then_some(text)
        },
    );
    daemon.assert_alive();
    let line = status
        .lines()
        .find(|l| l.contains("health"))
        .unwrap_or_default();
    assert!(line.contains("refused; last: refused]"), "{status}");
    assert!(line.contains("pending"), "{status}");
}

/// rollbackd could not ask: Prometheus unreachable is Unknown with the
/// reason, even under `no_data = "breach"` (it says nothing about the
/// release), and the traffic guard's query failing is Unknown too.
#[test]
fn prometheus_unreachable_is_unknown_even_under_breach() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = Client::build(&PrometheusConfig {
        url: format!("http://127.0.0.1:{closed}").parse().unwrap(),
        timeout: Duration::from_millis(500),
        auth: None,
        headers: vec![],
        blind_after: Duration::from_secs(300),
    })
    .unwrap();
    let rt = runtime();
    let mut rule = prom_rule("up", "up", 0.5, Duration::ZERO);
    rule.no_data = Some(NoData::Breach);
    let mut w = Watched::build(rule.clone(), NoData::Hold, Some(&c));
    let r = w.poll(&rt);
    match &r.status {
        RuleStatus::Unknown { why, .. } => assert!(why.contains("cannot connect"), "{why}"),
        other => panic!("want unknown, got {other:?}"),
    }
    if let SourceSpec::Prometheus(p) = &mut rule.source {
        p.traffic = Some(TrafficGuard {
            query: "sum(rate(x[1m]))".into(),
            min: 1.0,
        });
    }
    let mut w = Watched::build(rule, NoData::Hold, Some(&c));
    let r = w.poll(&rt);
    match &r.status {
        RuleStatus::Unknown { why, .. } => {
            assert!(
                why.starts_with("traffic_query: prometheus http://127.0.0.1:"),
                "{why}"
            );
            assert!(why.contains("cannot connect"), "{why}");
        }
        other => panic!("want unknown, got {other:?}"),
    }
}

/// Sub-second steps reach Prometheus as they are (the range query takes
/// milliseconds), so `poll_interval`/`step` down to 100 ms work.
#[test]
fn a_sub_second_step_judges_for_on_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let gauge = Gauge::start(0.9);
    let prometheus = start_prometheus(tmp.path(), &[gauge.port]);
    prometheus.wait_for_series("app_errors_ratio", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let rt = runtime();
    let c = client(&prometheus);
    let mut rule = prom_rule("errors", "app_errors_ratio", 0.5, Duration::from_secs(1));
    if let SourceSpec::Prometheus(p) = &mut rule.source {
        p.step = Some(Duration::from_millis(100));
    }
    let mut w = Watched::build(rule, NoData::Hold, Some(&c));
    let start = Utc::now();
    let r = w.poll(&rt);
    assert!(
        matches!(r.status, RuleStatus::Breached { .. }),
        "{}",
        r.explain()
    );
    assert!(
        since(&r.status).unwrap() <= start - TimeDelta::seconds(1),
        "{}",
        r.explain()
    );
    assert_eq!(
        r.detail.as_deref(),
        Some("judged on 21 points over the last 2s (step 100ms)")
    );
}
