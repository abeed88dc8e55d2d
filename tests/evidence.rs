//! The evidence model against real processes (issue #9): a crashed release
//! whose metrics vanish is rolled back, Prometheus being unreachable does
//! not veto a failing probe, zero traffic is not a breach, a restart in the
//! middle of `for` does not restart it, an Alertmanager POST acts at once,
//! and a hundred healthy targets on one small server are never rolled back.
//!
//! The service and exporter here follow `current -> releases/X`: release
//! `crash` takes both down (connections refused), `bad` answers 503, any
//! other release is healthy.

mod common;
#[path = "common/prometheus.rs"]
mod prom;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;
use prom::Prometheus;

/// What the live release does.
fn behaviour(dir: &Path) -> &'static str {
    match live(dir).as_str() {
        "crash" => "down",
        "bad" => "503",
        _ => "ok",
    }
}

/// A service on `port` that follows `dir/current`: `/api/health` answers 200
/// (or 503 for `bad`), `/metrics` counts 100 req/s with 1% errors (50% for
/// `bad`); under `crash` the port refuses connections. Runs until `stop`.
struct Service {
    port: u16,
    metrics_port: u16,
    stop: Arc<AtomicBool>,
}

impl Service {
    fn start(dir: &Path) -> Service {
        let port = free_port();
        let metrics_port = free_port();
        let stop = Arc::new(AtomicBool::new(false));
        for (p, metrics) in [(port, false), (metrics_port, true)] {
            let (dir, stop) = (dir.to_path_buf(), stop.clone());
            std::thread::spawn(move || follow(&dir, p, metrics, &stop));
        }
        let svc = Service {
            port,
            metrics_port,
            stop,
        };
        if behaviour(dir) != "down" {
            wait_for(Duration::from_secs(5), "test service up", || {
                TcpStream::connect(("127.0.0.1", port)).ok()
            });
        }
        svc
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn follow(dir: &Path, port: u16, metrics: bool, stop: &AtomicBool) {
    let started = Instant::now();
    let mut listener: Option<TcpListener> = None;
    while !stop.load(Ordering::SeqCst) {
        let mode = behaviour(dir);
        if mode == "down" {
            listener = None;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        if listener.is_none() {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => {
                    l.set_nonblocking(true).unwrap();
                    listener = Some(l);
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        match listener.as_ref().unwrap().accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false).ok();
                stream.set_read_timeout(Some(Duration::from_secs(1))).ok();
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf);
                let (status, body) = if metrics {
                    let t = started.elapsed().as_secs_f64();
                    let err = if mode == "503" { 0.5 } else { 0.01 };
                    (
                        "200 OK",
                        format!(
                            "# TYPE http_requests_total counter\n\
                             http_requests_total{{code=\"200\"}} {}\n\
                             http_requests_total{{code=\"500\"}} {}\n",
                            100.0 * t * (1.0 - err),
                            100.0 * t * err
                        ),
                    )
                } else if mode == "503" {
                    ("503 Service Unavailable", "bad release\n".to_string())
                } else {
                    ("200 OK", "ok\n".to_string())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// `dir/releases/{v1,crash,bad,v3}` and `current -> releases/<live>`.
fn releases(dir: &Path, live: &str) {
    for r in ["v1", "crash", "bad", "v3"] {
        std::fs::create_dir_all(dir.join("releases").join(r)).unwrap();
    }
    deploy(dir, live);
}

/// Re-point `current` atomically, as a deploy would.
fn deploy(dir: &Path, release: &str) {
    let tmp = dir.join("current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(dir.join("releases").join(release), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("current")).unwrap();
}

/// A daemon config with one symlink target `web` and the given rules.
fn config(dir: &Path, prometheus: Option<&str>, rules: &str, extra_daemon: &str) -> PathBuf {
    let prom = prometheus
        .map(|u| format!("[prometheus]\nurl = \"{u}\"\ntimeout = \"1s\"\n"))
        .unwrap_or_default();
    let text = [
        conf::daemon(dir, free_port(), "300ms", extra_daemon),
        prom,
        conf::email(&dir.join("state/outbox"), &["admin@example.com"]),
        conf::target("web", "10m", rules),
        conf::symlink_rollback(dir, "10s", ""),
        conf::verify("15s", ""),
    ]
    .concat();
    conf::write(dir, &text)
}

/// When the journal first shows `web` entering `phase`.
fn entered(state: &Path, phase: &str) -> Option<DateTime<Utc>> {
    journal(state)
        .into_iter()
        .find(|e| e["type"] == "step" && e["to"] == phase && e["from"] != phase)
        .and_then(|e| e["at"].as_str().and_then(|t| t.parse().ok()))
}

fn outcome(state: &Path) -> Option<String> {
    journal(state)
        .into_iter()
        .rev()
        .filter(|e| e["type"] == "step")
        .find_map(|e| {
            e["state"]["phase"]["incident"]["outcome"]
                .as_str()
                .map(String::from)
        })
}

fn record_text(state: &Path) -> String {
    std::fs::read_dir(state.join("incidents"))
        .ok()
        .and_then(|mut rd| rd.next())
        .and_then(|e| e.ok())
        .and_then(|e| std::fs::read_to_string(e.path()).ok())
        .unwrap_or_default()
}

/// The `health` rule on the service at `port`: more than half of 2 s of
/// probes failing for `for_` (a window that holds `min_samples` probes
/// even when each one times out).
fn health(port: u16, for_: &str) -> String {
    conf::health_rule(
        &format!("http://127.0.0.1:{port}/api/health"),
        "500ms",
        "2s",
        for_,
    )
}

const ERRORS: &str = r#"
  [[target.rule]]
  name = "errors"
  source = "prometheus"
  query = 'sum(rate(http_requests_total{job="app",code=~"5.."}[3s])) / sum(rate(http_requests_total{job="app"}[3s]))'
  above = 0.05
  for = "2s"
"#;

#[test]
fn a_crashed_release_whose_metrics_vanish_is_rolled_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    releases(dir, "v1");
    let svc = Service::start(dir);
    let prometheus = Prometheus::start(&dir.join("prom"), &[svc.metrics_port]);
    prometheus.wait_for_series("http_requests_total", Duration::from_secs(20));
    let rules = format!("{}{ERRORS}", health(svc.port, "2s"));
    let cfg = config(dir, Some(&prometheus.url()), &rules, "");
    let state = dir.join("state");
    let _d = Running::start(&cfg, &dir.join("rollbackd.log"));
    // Healthy first: both rules have data and are ok.
    wait_for(Duration::from_secs(20), "both rules ok on v1", || {
        let j = journal(&state);
        let last = j
            .iter()
            .rev()
            .find(|e| e["event"]["event"] == "evaluated")?;
        let rules = last["state"]["rules"].as_array()?;
        (rules.len() == 2 && rules.iter().all(|r| r["status"]["status"] == "ok")).then_some(())
    });

    // The release crashes: service and exporter gone together.
    let crashed = Utc::now();
    deploy(dir, "crash");
    let acted = wait_for(Duration::from_secs(20), "the rollback to start", || {
        entered(&state, "RollingBack")
    });
    let took = (acted - crashed).to_std().unwrap();
    assert!(
        took < Duration::from_secs(8),
        "acted {took:?} after the crash; `for` is 2s"
    );
    wait_for(Duration::from_secs(20), "the rollback verified", || {
        (outcome(&state).as_deref() == Some("rolled_back")).then_some(())
    });
    assert_eq!(live(dir), "v1");
    let record = record_text(&state);
    assert!(record.contains("health"), "{record}");
    // The vanished series made the Prometheus rule Unknown: it abstained,
    // and the record says so (unless Prometheus had not noticed yet).
    let incident = &journal(&state)
        .into_iter()
        .find(|e| e["to"] == "RollingBack")
        .unwrap()["state"]["phase"]["incident"];
    let abstained = incident["cause"]["abstained"].as_array().cloned();
    if let Some(a) = abstained {
        assert!(a.iter().any(|r| r["rule"] == "errors"), "{incident}");
        assert!(
            record.contains("abstained (no data, not counted): errors"),
            "{record}"
        );
    }
    println!(
        "crash to rollback start: {took:?}; abstained: {}",
        incident["cause"]["abstained"]
    );
}

#[test]
fn prometheus_unreachable_while_the_probe_fails_rolls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    releases(dir, "v1");
    let svc = Service::start(dir);
    // Nothing listens there: every query is refused.
    let prom_url = format!("http://127.0.0.1:{}", free_port());
    let rules = format!("{}{ERRORS}", health(svc.port, "2s"));
    let cfg = config(dir, Some(&prom_url), &rules, "");
    let state = dir.join("state");
    let _d = Running::start(&cfg, &dir.join("rollbackd.log"));
    wait_for(Duration::from_secs(20), "the health rule ok on v1", || {
        entered(&state, "Watching").or_else(|| {
            journal(&state)
                .iter()
                .any(|e| e["event"]["event"] == "evaluated")
                .then(Utc::now)
        })
    });
    std::thread::sleep(Duration::from_secs(1));
    deploy(dir, "bad");
    let bad = Utc::now();
    let acted = wait_for(Duration::from_secs(20), "the rollback to start", || {
        entered(&state, "RollingBack")
    });
    assert!((acted - bad).to_std().unwrap() < Duration::from_secs(8));
    wait_for(Duration::from_secs(25), "the rollback verified", || {
        (outcome(&state).as_deref() == Some("rolled_back")).then_some(())
    });
    assert_eq!(live(dir), "v1");
    // The record is rewritten after the outcome is journaled: wait for the
    // verified one.
    let record = wait_for(Duration::from_secs(10), "the verified record", || {
        let r = record_text(&state);
        (!r.contains("## Verification\n\npending")).then_some(r)
    });
    assert!(
        record.contains("abstained (no data, not counted): errors"),
        "the unreachable Prometheus rule is named as abstaining:\n{record}"
    );
    assert!(
        record.contains("had no data and abstained"),
        "verification says the rule without data abstained:\n{record}"
    );
}

#[test]
fn zero_traffic_is_unknown_not_a_breach() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    releases(dir, "v1");
    let svc = Service::start(dir);
    // An exporter with no traffic at all: the ratio is 0/0 = NaN.
    let exporter = prom::Exporter::start(prom::Knobs {
        error_ratio: 0.0,
        rps: 0.0,
        latency: 0.1,
        version: "v1".into(),
    });
    let prometheus = Prometheus::start(&dir.join("prom"), &[exporter.port]);
    prometheus.wait_for_series("http_requests_total", Duration::from_secs(20));
    let rules = format!("{}{ERRORS}", health(svc.port, "2s"));
    let cfg = config(dir, Some(&prometheus.url()), &rules, "");
    let state = dir.join("state");
    let _d = Running::start(&cfg, &dir.join("rollbackd.log"));
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(live(dir), "v1");
    assert!(entered(&state, "RollingBack").is_none(), "nothing happens");
    let out = run_rollbackd(&cfg, &["status"]);
    let status = String::from_utf8_lossy(&out.stdout);
    let errors = status
        .lines()
        .find(|l| l.contains("errors"))
        .unwrap_or_default()
        .to_string();
    assert!(
        errors.contains("unknown") && (errors.contains("NaN") || errors.contains("traffic")),
        "the ratio rule is shown Unknown with its reason:\n{status}"
    );
    let health = status
        .lines()
        .find(|l| l.contains("health"))
        .unwrap_or_default();
    assert!(health.contains("ok"), "{status}");
}

#[test]
fn sigkill_in_the_middle_of_for_acts_when_the_data_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    releases(dir, "v1");
    let svc = Service::start(dir);
    let rules = health(svc.port, "20s");
    let cfg = config(dir, None, &rules, "");
    let state = dir.join("state");
    let log = dir.join("rollbackd.log");
    let d = Running::start(&cfg, &log);
    wait_for(Duration::from_secs(10), "first evaluation", || {
        journal(&state)
            .iter()
            .any(|e| e["event"]["event"] == "evaluated")
            .then_some(())
    });
    deploy(dir, "bad");
    let since: DateTime<Utc> = wait_for(Duration::from_secs(10), "the rule pending", || {
        journal(&state).iter().rev().find_map(|e| {
            let r = e["state"]["rules"].as_array()?.first()?;
            (r["status"]["status"] == "pending")
                .then(|| r["status"]["since"].as_str()?.parse().ok())?
        })
    });
    // Ten seconds into the 20s `for`, the daemon dies.
    while Utc::now() < since + chrono::Duration::seconds(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    d.kill9();
    let _d = Running::start(&cfg, &dir.join("rollbackd2.log"));
    let acted = wait_for(
        Duration::from_secs(40),
        "the rollback after the restart",
        || entered(&state, "RollingBack"),
    );
    let after_since = (acted - since).to_std().unwrap();
    assert!(
        after_since >= Duration::from_secs(20) && after_since < Duration::from_secs(25),
        "acted {after_since:?} after the breach began; `for` is 20s and the restart must not restart it"
    );
}

/// An alert wakes its target at once instead of waiting for the next poll
/// (30 s here). The latency itself is a benchmark figure
/// (`benches/detection.py`), not a timed assertion: on a loaded 2-core
/// machine the median moved between 85 and 165 ms.
#[test]
fn an_alertmanager_post_acts_without_waiting_for_the_poll() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let api = free_port();
    let mut targets = String::new();
    for i in 0..10 {
        targets.push_str(&conf::target(&format!("t{i}"), "10m", ""));
        targets.push_str(&conf::paged_rule(&format!("Down{i}"), ""));
        targets.push_str(&conf::command_rollback("5s", r#"[["true", "{target}"]]"#));
        targets.push_str(&conf::verify("1s", ""));
    }
    let daemon = conf::daemon(dir, api, "30s", "max_simultaneous_breaches = 0");
    let cfg = conf::write(dir, &(daemon + &targets));
    let state = dir.join("state");
    let _d = Running::start(&cfg, &dir.join("rollbackd.log"));
    let hook = format!("http://127.0.0.1:{api}/v1/alertmanager");
    wait_for(Duration::from_secs(10), "the API", || {
        TcpStream::connect(("127.0.0.1", api)).ok()
    });
    // Let every target finish its first (slow-interval) poll.
    std::thread::sleep(Duration::from_secs(1));
    let mut latencies = Vec::new();
    for i in 0..10 {
        let starts = Utc::now().to_rfc3339();
        let payload = format!(
            r#"{{"version":"4","status":"firing","receiver":"r","groupKey":"g{i}","alerts":[{{"status":"firing","labels":{{"alertname":"Down{i}"}},"annotations":{{}},"startsAt":"{starts}","endsAt":"0001-01-01T00:00:00Z","fingerprint":"f{i}"}}]}}"#
        );
        let sent = Utc::now();
        let (code, body) = http("POST", &hook, None, Some(&payload));
        assert_eq!(code, 200, "{body}");
        let acted = wait_for(Duration::from_secs(10), "the rollback to start", || {
            journal(&state)
                .into_iter()
                .find(|e| e["target"] == format!("t{i}") && e["to"] == "RollingBack")
                .and_then(|e| e["at"].as_str()?.parse::<DateTime<Utc>>().ok())
        });
        latencies.push((acted - sent).to_std().unwrap_or_default());
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    println!("alertmanager POST to action start: median {median:?}, all {latencies:?}");
    assert!(
        latencies.iter().all(|l| *l < Duration::from_secs(5)),
        "median {median:?} (all {latencies:?}); an alert must not wait for the next poll (30s)"
    );
}

/// A small Python `ThreadingHTTPServer` (request queue 5, as Python's
/// default) that counts how many connections it serves at once.
struct SmallServer {
    child: std::process::Child,
    port: u16,
}

const SMALL_SERVER: &str = r#"
import http.server, sys, threading
lock = threading.Lock()
now = 0
peak = 0
served = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global now, peak, served
        with lock:
            now += 1
            peak = max(peak, now)
            served += 1
        try:
            if self.path == "/stats":
                body = ("%d %d\n" % (peak, served)).encode()
            else:
                body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with lock:
                now -= 1
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
s.serve_forever()
"#;

impl SmallServer {
    fn start(dir: &Path) -> SmallServer {
        let script = dir.join("small_server.py");
        std::fs::write(&script, SMALL_SERVER).unwrap();
        let port = free_port();
        assert!(
            Path::new("/usr/bin/python3").exists(),
            "/usr/bin/python3 is missing (Debian's python3)"
        );
        let child = std::process::Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(port.to_string())
            .spawn()
            .expect("start the python server");
        wait_for(Duration::from_secs(10), "the python server", || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        SmallServer { child, port }
    }

    /// (most connections served at once, requests served)
    fn stats(&self) -> (u64, u64) {
        let (_, body) = get(&format!("http://127.0.0.1:{}/stats", self.port));
        let mut it = body.split_whitespace().map(|x| x.parse().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    }
}

impl Drop for SmallServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The host rules are read on every poll (their cost is part of the test)
/// but cannot breach within the test (`for = "10m"`): the test machine's own CPU load is a
/// real breach, shared by every target, which the blast-radius guard turns
/// into one escalation; what is tested here is the probes' spread.
#[test]
fn a_hundred_healthy_targets_on_one_small_server_are_never_rolled_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = SmallServer::start(dir);
    let mut targets = String::new();
    for i in 0..100 {
        targets.push_str(&conf::target(&format!("svc-{i:03}"), "10m", ""));
        targets.push_str(&conf::health_rule(
            &format!("http://127.0.0.1:{}/health", server.port),
            "2s",
            "30s",
            "1m",
        ));
        targets.push_str(
            r#"
  [[target.rule]]
  name = "cpu"
  source = "host"
  metric = "cpu"
  above = 0.7
  for = "10m"
  [[target.rule]]
  name = "memory"
  source = "host"
  metric = "memory"
  above = 0.8
  for = "10m"
"#,
        );
        let steps = format!(r#"[["touch", "{}/rolled-back-{i}"]]"#, dir.display());
        targets.push_str(&conf::command_rollback("5s", &steps));
        targets.push_str(&conf::verify("10s", ""));
    }
    let daemon = conf::daemon(dir, free_port(), "5s", "");
    let cfg = conf::write(dir, &(daemon + &targets));
    let state = dir.join("state");
    let mut d = Running::start(&cfg, &dir.join("rollbackd.log"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_secs(5));
        d.assert_alive();
        let acted: Vec<String> = journal(&state)
            .into_iter()
            .filter(|e| e["type"] == "step" && e["from"] == "Watching" && e["to"] != "Watching")
            .map(|e| {
                format!(
                    "{} -> {}: {}",
                    e["target"], e["to"], e["state"]["phase"]["incident"]["timeline"]
                )
            })
            .collect();
        assert!(acted.is_empty(), "healthy targets left Watching: {acted:?}");
    }
    let (peak, served) = server.stats();
    println!("100 targets, 120s: {served} probes served, at most {peak} at once");
    // 100 probes per 5s spread over the interval: about 20/s, each a few ms.
    assert!(served >= 100 * 20, "probes were made: {served}");
    assert!(
        peak <= 10,
        "at most {peak} connections at once: polls must be spread over the interval"
    );
    for i in 0..100 {
        assert!(!dir.join(format!("rolled-back-{i}")).exists());
    }
}

#[test]
fn breaches_on_many_targets_at_once_escalate_all_and_mail_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    releases(dir, "v1");
    // Three targets behind one shared dependency, a fourth elsewhere.
    let shared = Service::start(dir);
    let other_dir = dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    releases(&other_dir, "v1");
    let other = Service::start(&other_dir);
    let mut targets = String::new();
    for (i, port) in [shared.port, shared.port, shared.port, other.port]
        .iter()
        .enumerate()
    {
        let steps = format!(r#"[["touch", "{}/ran-{i}"]]"#, dir.display());
        targets.push_str(&conf::target(&format!("svc-{i}"), "10m", ""));
        targets.push_str(&health(*port, "2s"));
        targets.push_str(&conf::command_rollback("5s", &steps));
    }
    let text = [
        conf::daemon(dir, free_port(), "300ms", ""),
        conf::email(&dir.join("state/outbox"), &["admin@example.com"]),
        targets,
    ]
    .concat();
    let cfg = conf::write(dir, &text);
    let state = dir.join("state");
    let _d = Running::start(&cfg, &dir.join("rollbackd.log"));
    wait_for(Duration::from_secs(10), "first evaluations", || {
        (journal(&state)
            .iter()
            .filter(|e| e["event"]["event"] == "evaluated")
            .count()
            >= 4)
            .then_some(())
    });
    // The shared dependency fails: three targets breach together.
    deploy(dir, "bad");
    let escalated = wait_for(Duration::from_secs(20), "three escalations", || {
        let j = journal(&state);
        let e: Vec<serde_json::Value> = j
            .into_iter()
            .filter(|e| e["to"] == "Escalated" && e["from"] != "Escalated")
            .collect();
        (e.len() == 3).then_some(e)
    });
    for e in &escalated {
        let error = e["state"]["phase"]["incident"]["error"]
            .as_str()
            .unwrap_or_default();
        assert!(
            error.starts_with("blast radius: breaches began on 3 of 4 targets within 1m"),
            "{error}"
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..4 {
        assert!(
            !dir.join(format!("ran-{i}")).exists(),
            "svc-{i} was rolled back"
        );
    }
    let blast: Vec<_> = mails(&state.join("outbox"))
        .into_iter()
        .filter(|(_, text)| text.contains("MANY TARGETS AT ONCE"))
        .collect();
    assert_eq!(blast.len(), 1, "one merged message: {blast:?}");
    assert!(blast[0].1.contains("blast radius"), "{}", blast[0].1);
}
