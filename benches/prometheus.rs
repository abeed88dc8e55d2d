//! Bench: N targets x 4 Prometheus rules evaluated per poll cycle against a
//! local stub Prometheus (N = 10, 100, 1000), the way the daemon does it:
//! one shared client (keep-alive pool, concurrency bound), every target's
//! rules evaluated concurrently, one of the four rules a baseline rule
//! (its range query cached after the first cycle).
//!
//! Prints per-cycle latency and this process's memory (VmRSS / VmHWM from
//! /proc/self/status). The stub runs in a child process (this binary
//! re-executed), so the memory is rollbackd's side only.
//!
//! Run: `cargo bench --bench prometheus`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rollbackd::config::{BaselineSpec, NoData, PromSpec, PrometheusConfig, RuleConfig, SourceSpec};
use rollbackd::rules::baseline::evaluate;
use rollbackd::rules::RuleEval;
use rollbackd::sources::prometheus::Prometheus;
use rollbackd::sources::Source;

const STUB_ENV: &str = "ROLLBACKD_BENCH_STUB";
const CYCLES: usize = 5;

fn main() {
    if std::env::var_os(STUB_ENV).is_some() {
        return stub();
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it, as a quick smoke test (10 targets only).
    let full = std::env::args().any(|a| a == "--bench");
    let exe = std::env::current_exe().expect("current exe");
    let child = Command::new(exe)
        .env(STUB_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the stub Prometheus");
    // Killed on every exit, a failed assertion included (an orphaned stub
    // would hold the runner's output pipe open).
    struct Stub(std::process::Child);
    impl Drop for Stub {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Stub(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("stub port");
    let port: u16 = line.trim().parse().expect("stub printed its port");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("stub Prometheus on 127.0.0.1:{port}; {CYCLES} cycles per size");
    println!(
        "{:>8} {:>7} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "targets", "rules", "first (ms)", "median (ms)", "max (ms)", "RSS MiB", "peak MiB"
    );
    let sizes: &[usize] = if full { &[10, 100, 1000] } else { &[10] };
    for &n in sizes {
        rt.block_on(run(port, n));
    }
    drop(child);
}

fn rules(i: usize) -> Vec<RuleConfig> {
    let prom = |q: String, baseline: Option<BaselineSpec>| {
        SourceSpec::Prometheus(PromSpec {
            query: q,
            baseline,
            traffic: None,
            step: None,
            server: None,
        })
    };
    vec![
        RuleConfig {
            name: "5xx".into(),
            source: prom(format!("ratio{{target=\"t{i}\"}}"), None),
            above: 0.05,
            for_: Duration::from_secs(60),
            no_data: None,
            shadow: false,
        },
        RuleConfig {
            name: "p99".into(),
            source: prom(
                format!("latency{{target=\"t{i}\"}}"),
                Some(BaselineSpec {
                    factor: 3.0,
                    window: Duration::from_secs(3600),
                    query: None,
                }),
            ),
            above: f64::NEG_INFINITY,
            for_: Duration::from_secs(60),
            no_data: None,
            shadow: false,
        },
        RuleConfig {
            name: "saturation".into(),
            source: prom(format!("saturation{{target=\"t{i}\"}}"), None),
            above: 0.9,
            for_: Duration::from_secs(60),
            no_data: None,
            shadow: false,
        },
        RuleConfig {
            name: "up".into(),
            source: prom(format!("down{{target=\"t{i}\"}}"), None),
            above: 0.5,
            for_: Duration::ZERO,
            no_data: None,
            shadow: false,
        },
    ]
}

async fn run(port: u16, n: usize) {
    let prometheus = Prometheus::build(&PrometheusConfig {
        url: format!("http://127.0.0.1:{port}").parse().unwrap(),
        timeout: Duration::from_secs(5),
        auth: None,
        headers: vec![],
        blind_after: Duration::from_secs(300),
    })
    .unwrap();
    let client = reqwest::Client::new();
    let mut targets: Vec<Vec<(Source, RuleEval)>> = (0..n)
        .map(|i| {
            rules(i)
                .into_iter()
                .map(|r| {
                    (
                        Source::build(
                            &r.source,
                            &client,
                            Some(&prometheus),
                            Duration::from_secs(5),
                            &rollbackd::sources::alertmanager::AlertStore::global(),
                        ),
                        RuleEval::build(r, NoData::Hold),
                    )
                })
                .collect()
        })
        .collect();
    let deployed_at = Some(chrono::Utc::now() - chrono::TimeDelta::minutes(10));
    let mut times = Vec::new();
    let mut unknown = 0;
    for _ in 0..CYCLES {
        let now = chrono::Utc::now();
        let start = Instant::now();
        let reports = futures_util::future::join_all(targets.iter_mut().map(|rules| {
            futures_util::future::join_all(
                rules
                    .iter_mut()
                    .map(|(s, e)| evaluate(s, e, deployed_at, now)),
            )
        }))
        .await;
        times.push(start.elapsed());
        unknown = reports
            .iter()
            .flatten()
            .filter(|r| r.status.name() == "unknown")
            .count();
    }
    assert_eq!(unknown, 0, "every rule must have data from the stub");
    // The baseline's range query went out once per rule, not once per poll.
    let fetches: u64 = targets
        .iter()
        .flatten()
        .filter_map(|(s, _)| match s {
            Source::Prometheus(p) => Some(p.baseline_fetches()),
            _ => None,
        })
        .sum();
    assert_eq!(
        fetches, n as u64,
        "one baseline range query per baseline rule"
    );
    let first = times[0];
    let mut sorted = times.clone();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (rss, hwm) = memory();
    println!(
        "{:>8} {:>7} {:>12.1} {:>12.1} {:>12.1} {:>10.1} {:>10.1}",
        n,
        n * 4,
        ms(first),
        ms(sorted[sorted.len() / 2]),
        ms(*sorted.last().unwrap()),
        rss,
        hwm
    );
}

/// (VmRSS, VmHWM) in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The stub: answers every instant query with one series and every range
/// query with a point at every step from `start` to `end` (a rule's `for`
/// range, a baseline's window), like a small Prometheus would.
fn stub() {
    use axum::extract::RawQuery;
    use axum::routing::get;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        let instant = |RawQuery(q): RawQuery| async move {
            let q = q.unwrap_or_default();
            let v = if q.contains("down") { "0" } else { "0.02" };
            (
                [("content-type", "application/json")],
                format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"job":"app","instance":"10.0.0.1:8080"}},"value":[1700000000.123,"{v}"]}}]}}}}"#
                ),
            )
        };
        let range = |RawQuery(q): RawQuery| async move {
            let q = q.unwrap_or_default();
            let num = |name: &str| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let (start, end, step) = (num("start"), num("end"), num("step").max(0.001));
            let down = q.contains("down");
            let points: Vec<String> = (0..)
                .map(|i| (i, start + i as f64 * step))
                .take_while(|(_, t)| *t <= end + 1e-4)
                .take(11_000)
                .map(|(i, t)| {
                    let v = if down { "0".to_string() } else { format!("0.0{}", 1 + i % 5) };
                    format!(r#"[{t:.3},"{v}"]"#)
                })
                .collect();
            (
                [("content-type", "application/json")],
                format!(
                    r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{"job":"app","instance":"10.0.0.1:8080"}},"values":[{}]}}]}}}}"#,
                    points.join(",")
                ),
            )
        };
        let app = axum::Router::new()
            .route("/api/v1/query", get(instant))
            .route("/api/v1/query_range", get(range));
        axum::serve(listener, app).await.unwrap();
    });
}
