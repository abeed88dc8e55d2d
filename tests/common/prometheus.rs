//! Test helpers for Prometheus rules: a real Prometheus (the Debian package's
//! `/usr/bin/prometheus`) on a free loopback port, a test exporter whose
//! metrics the test controls, and a fake "Prometheus" answering on purpose
//! badly. Included with `#[path]` by the tests that need them.
#![allow(dead_code)]

#[path = "serving.rs"]
mod serving;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Prometheus binary the tests run.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

pub use serving::free_port;

/// One blocking HTTP GET on loopback: `(status, body)`.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    serving::get(port, path, Duration::from_secs(5))
}

/// What the exporter reports; change it while the test runs.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Fraction of requests answered 5xx.
    pub error_ratio: f64,
    /// Requests per second the counters grow by.
    pub rps: f64,
    /// `app_latency_seconds`.
    pub latency: f64,
    /// `app_build_info{version=...}`, `/version` and `/version.json`.
    pub version: String,
}

struct ExporterState {
    knobs: Knobs,
    ok_total: f64,
    err_total: f64,
    last: Instant,
}

/// A test exporter: `/metrics` (http_requests_total by code, latency gauge,
/// build info), `/version` (plain text) and `/version.json`.
#[derive(Clone)]
pub struct Exporter {
    pub port: u16,
    state: Arc<Mutex<ExporterState>>,
}

impl Exporter {
    pub fn start(knobs: Knobs) -> Exporter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind exporter");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ExporterState {
            knobs,
            ok_total: 0.0,
            err_total: 0.0,
            last: Instant::now(),
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || serve_exporter(stream, &st));
            }
        });
        Exporter { port, state }
    }

    /// Change what is reported from now on (counters keep growing).
    pub fn set(&self, f: impl FnOnce(&mut Knobs)) {
        let mut s = self.state.lock().unwrap();
        advance(&mut s);
        f(&mut s.knobs);
    }
}

/// Grow the counters by the time passed at the current rate and ratio.
fn advance(s: &mut ExporterState) {
    let dt = s.last.elapsed().as_secs_f64();
    s.last = Instant::now();
    let n = s.knobs.rps * dt;
    s.err_total += n * s.knobs.error_ratio;
    s.ok_total += n * (1.0 - s.knobs.error_ratio);
}

fn read_request_path(stream: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
    }
    Some(path)
}

/// One write of the whole answer (several small writes meet Nagle and
/// delayed ACKs: tens of milliseconds per answer).
fn respond(mut stream: TcpStream, status: &str, content_type: &str, body: &str) {
    let text = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(text.as_bytes());
}

fn serve_exporter(stream: TcpStream, state: &Mutex<ExporterState>) {
    let Some(path) = read_request_path(&stream) else {
        return;
    };
    let (body, version) = {
        let mut s = state.lock().unwrap();
        advance(&mut s);
        let body = format!(
            "# TYPE http_requests_total counter\n\
             http_requests_total{{code=\"200\"}} {}\n\
             http_requests_total{{code=\"500\"}} {}\n\
             # TYPE app_latency_seconds gauge\n\
             app_latency_seconds {}\n\
             # TYPE app_build_info gauge\n\
             app_build_info{{version=\"{}\"}} 1\n",
            s.ok_total, s.err_total, s.knobs.latency, s.knobs.version
        );
        (body, s.knobs.version.clone())
    };
    match path.as_str() {
        "/metrics" => respond(stream, "200 OK", "text/plain; version=0.0.4", &body),
        "/version" => respond(stream, "200 OK", "text/plain", &format!("{version}\n")),
        "/version.json" => respond(
            stream,
            "200 OK",
            "application/json",
            &format!(r#"{{"build": {{"version": "{version}", "commit": "abc"}}}}"#),
        ),
        _ => respond(stream, "404 Not Found", "text/plain", "not found"),
    }
}

/// A real Prometheus scraping `targets` every second; killed on drop.
pub struct Prometheus {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
}

impl Prometheus {
    /// Start and wait until ready. Panics (never skips) when the binary is
    /// missing or does not come up.
    pub fn start(dir: &Path, scrape_ports: &[u16]) -> Prometheus {
        Prometheus::start_on(dir, scrape_ports, free_port())
    }

    /// [`Prometheus::start`] on a port chosen beforehand (e.g. one a daemon
    /// already polls).
    pub fn start_on(dir: &Path, scrape_ports: &[u16], port: u16) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install the Debian package `prometheus` (scripts/test.sh does)"
        );
        let targets: Vec<String> = scrape_ports
            .iter()
            .map(|p| format!("'127.0.0.1:{p}'"))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let mut p = Prometheus {
            port,
            child: None,
            dir: dir.to_path_buf(),
            log: dir.join("prometheus.log"),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PROMETHEUS}: {e}"));
        self.child = Some(child);
        let port = self.port;
        serving::wait_ready(
            self.child.as_mut().unwrap(),
            &self.log,
            ("prometheus", "ready"),
            Duration::from_secs(30),
            || matches!(http_get(port, "/-/ready"), Ok((200, _))),
        );
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGKILL, delete its TSDB, and start again on the same port: a
    /// Prometheus restarted without its data.
    pub fn restart_without_data(&mut self) {
        self.kill();
        std::fs::remove_dir_all(self.dir.join("data")).unwrap();
        self.spawn();
    }

    /// Instant query; the raw JSON answer.
    pub fn query(&self, q: &str) -> serde_json::Value {
        let path = format!("/api/v1/query?query={}", url_encode(q));
        let (_, body) = http_get(self.port, &path).unwrap_or((0, String::new()));
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// Wait until `q` returns at least one series.
    pub fn wait_for_series(&self, q: &str, timeout: Duration) {
        crate::common::wait_for(timeout, &format!("prometheus to have data for {q}"), || {
            let v = self.query(q);
            v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
                .then_some(())
        });
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How the fake Prometheus answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fake {
    /// A proper answer with one series of this value.
    Value(f64),
    /// 200 with bytes that are not JSON.
    Garbage,
    /// 500 with a plain-text body.
    ServerError,
    /// 400 with `"status":"error"`.
    StatusError,
    /// 200 `"status":"success"` with an empty vector.
    Empty,
    /// Answers after this long.
    Slow(Duration),
}

/// A fake Prometheus whose answer the test switches.
#[derive(Clone)]
pub struct FakePrometheus {
    pub port: u16,
    mode: Arc<Mutex<Fake>>,
}

impl FakePrometheus {
    pub fn start(mode: Fake) -> FakePrometheus {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake prometheus");
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(mode));
        let m = mode.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let m = m.clone();
                std::thread::spawn(move || {
                    let Some(path) = read_request_path(&stream) else {
                        return;
                    };
                    let mode = *m.lock().unwrap();
                    fake_answer(stream, mode, &path);
                });
            }
        });
        FakePrometheus { port, mode }
    }

    pub fn set(&self, mode: Fake) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The value of query parameter `name` in a request path.
fn param(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// Points `[t, "v"]` at every step of a range request (`start`, `end`,
/// `step` in seconds).
fn range_points(path: &str, v: f64) -> String {
    let num = |n| param(path, n).and_then(|x| x.parse::<f64>().ok());
    let (Some(start), Some(end), Some(step)) = (num("start"), num("end"), num("step")) else {
        return String::new();
    };
    let mut points = Vec::new();
    let mut k = 0u64;
    while start + k as f64 * step <= end + 1e-4 {
        points.push(format!(r#"[{:.3},"{v}"]"#, start + k as f64 * step));
        k += 1;
    }
    points.join(",")
}

fn fake_answer(stream: TcpStream, mode: Fake, path: &str) {
    let json = "application/json";
    let range = path.starts_with("/api/v1/query_range");
    match mode {
        Fake::Value(v) if range => respond(
            stream,
            "200 OK",
            json,
            &format!(
                r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{"job":"app"}},"values":[{}]}}]}}}}"#,
                range_points(path, v)
            ),
        ),
        Fake::Empty if range => respond(
            stream,
            "200 OK",
            json,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
        ),
        Fake::Value(v) => respond(
            stream,
            "200 OK",
            json,
            &format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"job":"app"}},"value":[1700000000.0,"{v}"]}}]}}}}"#
            ),
        ),
        Fake::Garbage => respond(stream, "200 OK", "text/html", "<html>proxy login</html>"),
        Fake::ServerError => respond(
            stream,
            "500 Internal Server Error",
            "text/plain",
            "upstream exploded",
        ),
        Fake::StatusError => respond(
            stream,
            "400 Bad Request",
            json,
            r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3: unexpected identifier"}"#,
        ),
        Fake::Empty => respond(
            stream,
            "200 OK",
            json,
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        ),
        Fake::Slow(d) => {
            std::thread::sleep(d);
            fake_answer(stream, Fake::Value(0.0), path);
        }
    }
}

/// What a scripted Prometheus answers: the value of `query`'s one series
/// at point time `t` (seconds), as seen by a server asked at `now` (a
/// range query's `end`, else the time set with [`ScriptedPrometheus::at`]).
/// `None`: no sample there. NaN is answered as `"NaN"`.
pub type World = dyn Fn(&str, f64, f64) -> Option<f64> + Send + Sync;

/// A fake Prometheus that answers range and instant queries from a
/// [`World`], so that a test can play any timeline (gaps, empty answers, a
/// restart without data, NaN, staleness, late data) at points of its own
/// choosing, in simulated time: the caller passes its own `now`.
#[derive(Clone)]
pub struct ScriptedPrometheus {
    pub port: u16,
    now: Arc<Mutex<f64>>,
    /// Every query asked, in order (`range QUERY` or `instant QUERY`).
    pub asked: Arc<Mutex<Vec<String>>>,
}

impl ScriptedPrometheus {
    pub fn start(world: Arc<World>) -> ScriptedPrometheus {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind scripted prometheus");
        let port = listener.local_addr().unwrap().port();
        let now = Arc::new(Mutex::new(0.0));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (n, a) = (now.clone(), asked.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (world, n, a) = (world.clone(), n.clone(), a.clone());
                std::thread::spawn(move || {
                    let Some(path) = read_request_path(&stream) else {
                        return;
                    };
                    let body = scripted_answer(&*world, *n.lock().unwrap(), &path, &a);
                    respond(stream, "200 OK", "application/json", &body);
                });
            }
        });
        ScriptedPrometheus { port, now, asked }
    }

    /// The server's clock for instant queries without `time`.
    pub fn at(&self, now: f64) {
        *self.now.lock().unwrap() = now;
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// `%XX` and `+` decoded.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn sample_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn scripted_answer(world: &World, clock: f64, path: &str, asked: &Mutex<Vec<String>>) -> String {
    let num = |n| param(path, n).and_then(|x| url_decode(&x).parse::<f64>().ok());
    let query = param(path, "query")
        .map(|q| url_decode(&q))
        .unwrap_or_default();
    let labels = if query.starts_with("count(") {
        "{}"
    } else {
        r#"{"job":"app"}"#
    };
    if path.starts_with("/api/v1/query_range") {
        asked.lock().unwrap().push(format!("range {query}"));
        let (Some(start), Some(end), Some(step)) = (num("start"), num("end"), num("step")) else {
            return r#"{"status":"error","errorType":"bad_data","error":"missing start, end or step"}"#.into();
        };
        let mut points = Vec::new();
        let mut k = 0u64;
        loop {
            let t = ((start + k as f64 * step) * 1000.0).round() / 1000.0;
            if t > end + 1e-4 {
                break;
            }
            if let Some(v) = world(&query, end, t) {
                points.push(format!(r#"[{t:.3},"{}"]"#, sample_text(v)));
            }
            k += 1;
        }
        let result = if points.is_empty() {
            String::new()
        } else {
            format!(r#"{{"metric":{labels},"values":[{}]}}"#, points.join(","))
        };
        format!(r#"{{"status":"success","data":{{"resultType":"matrix","result":[{result}]}}}}"#)
    } else {
        asked.lock().unwrap().push(format!("instant {query}"));
        let now = num("time").unwrap_or(clock);
        let result = match world(&query, now, now) {
            Some(v) => format!(
                r#"{{"metric":{labels},"value":[{now:.3},"{}"]}}"#,
                sample_text(v)
            ),
            None => String::new(),
        };
        format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{result}]}}}}"#)
    }
}
