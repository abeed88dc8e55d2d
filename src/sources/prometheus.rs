//! `source = "prometheus"`: PromQL instant queries through
//! `prometheus-http-query`, the range query a rule's `for` is judged on
//! (see [`crate::rules::timeline`]), the one a baseline needs, and the
//! traffic guard's instant query.
//!
//! One [`Prometheus`] client is built per server (`[prometheus]` and each
//! `[prometheus.servers.NAME]`) and shared by every rule that asks it: one
//! keep-alive connection pool, its own auth, a real HTTP timeout (the
//! crate's own `timeout` is only Prometheus's evaluation timeout) and a
//! semaphore that bounds how many queries are in flight at once, so a
//! thousand targets polling together do not open a thousand connections.
//! The client also records whether its server answers at all
//! ([`Prometheus::reachability`]): any answer, an error answer included,
//! counts as reachable; refused, reset and timed-out requests do not
//! ([`SourceError::Unreachable`]). The daemon reads that to tell the admin
//! once per server, not once per rule.
//!
//! Everything that is not a usable answer — refused, timed out, an HTTP
//! error, a body that is not the Prometheus API, `"status":"error"` — is a
//! [`SourceError`] naming the server and what went wrong; the rule layer
//! turns it into `Unknown`. An empty result is [`SourceError::Absent`]: the
//! server answered that the series is not there, which `no_data = "breach"`
//! may count as a breach where the series was expected (see
//! [`crate::rules::absence`], which asks [`PromSource::scraping`]). Range queries take millisecond timestamps and
//! steps, so sub-second poll intervals work.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use prometheus_http_query::response::{Data, PromqlResult};
use tokio::sync::Semaphore;

use super::{Observe, SourceError};
pub use config::*;

pub mod config;

/// Queries in flight at once across all targets.
pub const MAX_CONCURRENT_QUERIES: usize = 32;

/// Largest response body read. A rule query answers a handful of series; a
/// baseline a few hundred points each. More is a query mistake, not data.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The query that tells whether a Prometheus was scraping at a time: it has
/// an `up` sample for every target it scrapes (0 when the scrape failed),
/// so `count(up)` has a value wherever the server was collecting data, and
/// none before its first scrape or in a past it no longer holds.
pub const SCRAPING_QUERY: &str = "count(up)";

/// The label set of one series (sorted, so it prints the same every time).
pub type Labels = BTreeMap<String, String>;

/// One series of an instant query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its labels (`__name__` included when Prometheus returns it).
    pub labels: Labels,
    /// Its value; may be NaN or infinite (the rule layer says so).
    pub value: f64,
}

/// One series of a range query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// Its labels.
    pub labels: Labels,
    /// Its points `(timestamp, value)`, oldest first. Steps where the
    /// series had no value are missing.
    pub points: Vec<(DateTime<Utc>, f64)>,
}

impl RangeSeries {
    /// The values, oldest first.
    pub fn values(&self) -> Vec<f64> {
        self.points.iter().map(|(_, v)| *v).collect()
    }
}

/// A Prometheus sample timestamp (float seconds) as a time, to the millisecond.
fn sample_time(ts: f64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis((ts * 1000.0).round() as i64).unwrap_or_default()
}

/// Seconds with millisecond precision, as the HTTP API takes them.
fn api_time(t: DateTime<Utc>) -> String {
    format!("{:.3}", t.timestamp_millis() as f64 / 1000.0)
}

/// Whether a server answers, as its client saw it: a fact for the daemon
/// (which tells the admin once per server, see
/// [`crate::decide::server_watch`]), not a decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Reachability {
    /// No query has finished yet.
    Unknown,
    /// The last query that finished got an answer (an error answer too).
    Reachable,
    /// Every query that finished since `since` failed to reach the server.
    Unreachable {
        /// The first failure of this run.
        since: DateTime<Utc>,
        /// The latest failure, e.g. `cannot connect: ... Connection refused`.
        error: String,
    },
}

/// A shared Prometheus client: cheap to clone.
#[derive(Clone)]
pub struct Prometheus {
    inner: Arc<Inner>,
}

struct Inner {
    /// `default` for `[prometheus]`, else the `[prometheus.servers.NAME]` name.
    name: String,
    /// The base URL, for messages.
    url: String,
    /// Whether the server answered the latest query.
    health: Mutex<Reachability>,
    client: prometheus_http_query::Client,
    /// `{url}/api/v1/query_range`, sent directly (the crate takes whole
    /// seconds only).
    range_url: String,
    /// For error messages: `prometheus http://127.0.0.1:9090/`.
    what: String,
    timeout: Duration,
    permits: Semaphore,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("what", &self.inner.what)
            .finish()
    }
}

impl Prometheus {
    /// Build from `[prometheus]`, reading the password or token file now.
    pub fn build(cfg: &PrometheusConfig) -> anyhow::Result<Prometheus> {
        Prometheus::build_with(cfg, MAX_CONCURRENT_QUERIES)
    }

    /// Build the client of `[prometheus.servers.NAME]` (`default`: `[prometheus]`).
    pub fn build_named(name: &str, cfg: &PrometheusConfig) -> anyhow::Result<Prometheus> {
        Prometheus::build_as(name, cfg, MAX_CONCURRENT_QUERIES)
    }

    /// Build with a given bound on queries in flight.
    pub fn build_with(cfg: &PrometheusConfig, concurrency: usize) -> anyhow::Result<Prometheus> {
        Prometheus::build_as(DEFAULT_PROMETHEUS, cfg, concurrency)
    }

    /// The server's name (`default` for `[prometheus]`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The server's URL as configured.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// `prometheus URL` (`prometheus NAME URL` for a named server), as
    /// error messages name it.
    pub fn describe(&self) -> &str {
        &self.inner.what
    }

    /// Whether the server answered the latest query that finished.
    pub fn reachability(&self) -> Reachability {
        self.inner
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether both are the same client (one pool, one health record).
    pub fn same(&self, other: &Prometheus) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Record how a query ended: an answer of any kind, or no answer.
    fn saw<T>(&self, result: &Result<T, SourceError>) {
        let mut health = self.inner.health.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Err(SourceError::Unreachable { detail, .. }) => {
                let since = match &*health {
                    Reachability::Unreachable { since, .. } => *since,
                    _ => Utc::now(),
                };
                *health = Reachability::Unreachable {
                    since,
                    error: detail.clone(),
                };
            }
            _ => *health = Reachability::Reachable,
        }
    }

    fn build_as(
        name: &str,
        cfg: &PrometheusConfig,
        concurrency: usize,
    ) -> anyhow::Result<Prometheus> {
        use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
        let mut headers = HeaderMap::new();
        let secret = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .with_context(|| format!("failed to read {}", path.display()))
        };
        match &cfg.auth {
            None => {}
            Some(PrometheusAuth::Basic {
                username,
                password_file,
            }) => {
                let password = secret(password_file)?;
                let value = format!(
                    "Basic {}",
                    crate::util::base64(format!("{username}:{password}").as_bytes())
                );
                let mut value = HeaderValue::from_str(&value).with_context(|| {
                    format!(
                        "prometheus.username or {}: not usable in an HTTP header",
                        password_file.display()
                    )
                })?;
                value.set_sensitive(true);
                headers.insert(AUTHORIZATION, value);
            }
            Some(PrometheusAuth::Bearer { token_file }) => {
                let token = secret(token_file)?;
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).with_context(|| {
                        format!(
                            "{}: token not usable in an HTTP header",
                            token_file.display()
                        )
                    })?;
                value.set_sensitive(true);
                headers.insert(AUTHORIZATION, value);
            }
        }
        for (name, value) in &cfg.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("invalid header name {name:?}"))?;
            let value = HeaderValue::from_str(value)
                .with_context(|| format!("invalid value for header {name}"))?;
            headers.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .pool_max_idle_per_host(concurrency)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60))
            .default_headers(headers)
            .build()
            .context("failed to build the Prometheus HTTP client")?;
        let client =
            prometheus_http_query::Client::from(http, cfg.url.as_str()).with_context(|| {
                format!(
                    "invalid Prometheus url {}",
                    crate::util::redact_url(&cfg.url)
                )
            })?;
        Ok(Prometheus {
            inner: Arc::new(Inner {
                range_url: format!(
                    "{}/api/v1/query_range",
                    cfg.url.as_str().trim_end_matches('/')
                ),
                client,
                name: name.to_string(),
                url: cfg.url.to_string(),
                health: Mutex::new(Reachability::Unknown),
                what: if name == DEFAULT_PROMETHEUS {
                    format!("prometheus {}", crate::util::redact_url(&cfg.url))
                } else {
                    format!("prometheus {name} {}", crate::util::redact_url(&cfg.url))
                },
                timeout: cfg.timeout,
                permits: Semaphore::new(concurrency.max(1)),
            }),
        })
    }

    /// Evaluate `query` now (Prometheus's clock). A scalar result is one
    /// series without labels.
    pub async fn instant(&self, query: &str) -> Result<Vec<Series>, SourceError> {
        let request = self.inner.client.query(query);
        let send = async { request.get_raw().await.map_err(|e| self.send_error(e)) };
        let data = self.run(send).await?;
        match data {
            Data::Vector(v) => Ok(v
                .into_iter()
                .map(|iv| {
                    let (labels, sample) = iv.into_inner();
                    Series {
                        labels: labels.into_iter().collect(),
                        value: sample.value(),
                    }
                })
                .collect()),
            Data::Scalar(s) => Ok(vec![Series {
                labels: Labels::new(),
                value: s.value(),
            }]),
            Data::Matrix(_) => Err(self.bad(
                "the query returns a range vector; a rule needs an instant vector or a scalar \
                 (e.g. wrap it in rate() or avg_over_time())",
            )),
        }
    }

    /// Evaluate `query` from `start` to `end` every `step`, to the
    /// millisecond.
    pub async fn range(
        &self,
        query: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        step: Duration,
    ) -> Result<Vec<RangeSeries>, SourceError> {
        let step_secs = (step.as_millis().max(1) as f64) / 1000.0;
        let request = self
            .inner
            .client
            .inner()
            .get(&self.inner.range_url)
            .query(&[
                ("query", query.to_string()),
                ("start", api_time(start)),
                ("end", api_time(end)),
                ("step", format!("{step_secs}")),
            ]);
        let send = async { request.send().await.map_err(|e| self.reqwest_error(&e)) };
        let data = self.run(send).await?;
        match data {
            Data::Matrix(m) => Ok(m
                .into_iter()
                .map(|rv| {
                    let (labels, samples) = rv.into_inner();
                    RangeSeries {
                        labels: labels.into_iter().collect(),
                        points: samples
                            .iter()
                            .map(|s| (sample_time(s.timestamp()), s.value()))
                            .collect(),
                    }
                })
                .collect()),
            Data::Scalar(s) => Ok(vec![RangeSeries {
                labels: Labels::new(),
                points: vec![(sample_time(s.timestamp()), s.value())],
            }]),
            Data::Vector(_) => Err(self.bad("a range query answered an instant vector")),
        }
    }

    fn bad(&self, detail: impl Into<String>) -> SourceError {
        SourceError::BadValue {
            what: self.inner.what.clone(),
            detail: detail.into(),
        }
    }

    fn unavailable(&self, detail: impl Into<String>) -> SourceError {
        SourceError::Unavailable {
            what: self.inner.what.clone(),
            detail: detail.into(),
        }
    }

    /// No answer at all (refused, reset, timed out).
    fn unreachable(&self, detail: impl Into<String>) -> SourceError {
        SourceError::Unreachable {
            what: self.inner.what.clone(),
            detail: detail.into(),
        }
    }

    /// Send a request (bounded by the semaphore and the timeout), read the
    /// body (bounded) and turn it into the result data or a clear error.
    async fn run<F>(&self, send: F) -> Result<Data, SourceError>
    where
        F: std::future::Future<Output = Result<reqwest::Response, SourceError>>,
    {
        let result = self.run_inner(send).await;
        self.saw(&result);
        result
    }

    async fn run_inner<F>(&self, send: F) -> Result<Data, SourceError>
    where
        F: std::future::Future<Output = Result<reqwest::Response, SourceError>>,
    {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| self.unavailable("client closed"))?;
        let timeout = self.inner.timeout;
        let fetch = async {
            let response = send.await?;
            let status = response.status();
            let body = read_bounded(response)
                .await
                .map_err(|e| self.read_error(e))?;
            Ok::<_, SourceError>((status, body))
        };
        // reqwest's timeout covers the request; this one makes the bound
        // independent of it (a body trickling in byte by byte).
        let (status, body) = match tokio::time::timeout(timeout, fetch).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(self.unreachable(format!(
                    "no answer within the timeout of {}",
                    crate::util::fmt_duration(timeout)
                )))
            }
        };
        self.parse(status, &body)
    }

    fn send_error(&self, e: prometheus_http_query::Error) -> SourceError {
        use std::error::Error as _;
        match e.source().and_then(|s| s.downcast_ref::<reqwest::Error>()) {
            Some(r) => self.reqwest_error(r),
            // Not a transport error (e.g. the request could not be built):
            // says nothing about the server.
            None => self.unavailable(e.to_string()),
        }
    }

    fn reqwest_error(&self, r: &reqwest::Error) -> SourceError {
        if r.is_timeout() {
            self.unreachable(format!(
                "no answer within the timeout of {}",
                crate::util::fmt_duration(self.inner.timeout)
            ))
        } else if r.is_connect() {
            self.unreachable(format!(
                "cannot connect: {}",
                without_url(&crate::util::error_chain(r))
            ))
        } else {
            self.unreachable(without_url(&crate::util::error_chain(r)))
        }
    }

    fn read_error(&self, e: ReadError) -> SourceError {
        match e {
            ReadError::TooLarge => self.bad(format!(
                "response body larger than {} MiB",
                MAX_BODY_BYTES / 1024 / 1024
            )),
            ReadError::Http(r) if r.is_timeout() => self.unreachable(format!(
                "no answer within the timeout of {}",
                crate::util::fmt_duration(self.inner.timeout)
            )),
            ReadError::Http(r) => self.unreachable(format!(
                "reading the answer failed: {}",
                crate::util::error_chain(&r)
            )),
        }
    }

    /// Status and body into the result, or the reason there is none.
    fn parse(&self, status: reqwest::StatusCode, body: &[u8]) -> Result<Data, SourceError> {
        // Prometheus answers errors (400, 422, 503) with an error envelope;
        // prefer its message over the bare status.
        let envelope = serde_json::from_slice::<Envelope>(body);
        match envelope {
            Ok(Envelope {
                status: s,
                error_type,
                error,
                ..
            }) if s == "error" => {
                let kind = error_type.unwrap_or_else(|| "error".into());
                let msg = error.unwrap_or_default();
                Err(self.bad(format!(
                    "query failed (HTTP {}): {kind}: {msg}",
                    status.as_u16()
                )))
            }
            _ if !status.is_success() => {
                Err(self.unavailable(format!("HTTP {}: {}", status, excerpt(body))))
            }
            Ok(Envelope {
                status: s,
                data: Some(result),
                ..
            }) if s == "success" => {
                let (data, _) = result.into_inner();
                if data.is_empty() {
                    Err(SourceError::Absent {
                        what: self.inner.what.clone(),
                        detail: "empty result: no series matched the query".into(),
                    })
                } else {
                    Ok(data)
                }
            }
            Ok(Envelope { status: s, .. }) => Err(self.bad(format!(
                "not a Prometheus query answer: status {s:?} without data: {}",
                excerpt(body)
            ))),
            Err(e) => Err(self.bad(format!(
                "not a Prometheus query answer ({e}): {}",
                excerpt(body)
            ))),
        }
    }
}

/// The Prometheus API envelope.
#[derive(serde::Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<PromqlResult>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first 120 characters of a body, printable, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "empty body".into();
    }
    let mut out: String = text
        .chars()
        .take(120)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > 120 {
        out.push_str("...");
    }
    format!("{out:?}")
}

/// reqwest's `error sending request for url (http://...?query=...)`
/// without the URL: the message already names the server, and the query
/// string is noise in a rule's reason and in the server's notice.
fn without_url(text: &str) -> String {
    match text.split_once(" for url (") {
        Some((head, rest)) => match rest.split_once(')') {
            Some((_, tail)) => format!("{head}{tail}"),
            None => text.to_string(),
        },
        None => text.to_string(),
    }
}

/// `{a="1", b="2"}`, or `{}` for no labels.
pub fn fmt_labels(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// The baseline cached for one window end.
#[derive(Debug, Clone)]
struct CachedBaseline {
    end: DateTime<Utc>,
    series: Vec<RangeSeries>,
}

/// One Prometheus rule's source: the query, and its baseline cache.
#[derive(Debug)]
pub struct PromSource {
    prometheus: Option<Prometheus>,
    spec: PromSpec,
    /// Smallest range-query step (the poll interval): finer points than
    /// polls add nothing to a median.
    min_step: Duration,
    baseline: Option<CachedBaseline>,
    /// Range queries sent, for tests and the bench.
    baseline_fetches: u64,
    /// A query of this evaluation could not reach the server (see
    /// [`PromSource::unreachable_run`]).
    unreachable: AtomicBool,
    /// The latest evaluation of the current Unknown run at which the
    /// server went unanswered.
    unreachable_at: Option<DateTime<Utc>>,
}

impl PromSource {
    /// Build for a rule. `prometheus` is `None` only when the config has no
    /// `[prometheus]` (validation prevents that); every sample is then an error.
    pub fn build(spec: PromSpec, prometheus: Option<Prometheus>, min_step: Duration) -> PromSource {
        PromSource {
            prometheus,
            spec,
            min_step,
            baseline: None,
            baseline_fetches: 0,
            unreachable: AtomicBool::new(false),
            unreachable_at: None,
        }
    }

    /// The client this rule asks (`None` without `[prometheus]`).
    pub fn prometheus(&self) -> Option<&Prometheus> {
        self.prometheus.as_ref()
    }

    /// After an evaluation at `now` (`unknown`: the rule had no data): the
    /// server's name and the latest evaluation of this Unknown run at
    /// which it went unanswered (refused, timed out) — `now` while it
    /// still does. The rule's report carries it, so that its target's
    /// "blind" notice leaves the rule to the server's own notice, and
    /// counts a blind period anew once the server answers. Cleared when
    /// the rule has data.
    pub fn unreachable_run(
        &mut self,
        unknown: bool,
        now: DateTime<Utc>,
    ) -> Option<(String, DateTime<Utc>)> {
        let down = self.unreachable.swap(false, Ordering::Relaxed);
        if !unknown {
            self.unreachable_at = None;
            return None;
        }
        if down {
            self.unreachable_at = Some(now);
        }
        let name = self.prometheus.as_ref()?.name().to_string();
        self.unreachable_at.map(|at| (name, at))
    }

    /// Note a query's outcome for [`PromSource::unreachable_run`].
    fn seen<T>(&self, result: Result<T, SourceError>) -> Result<T, SourceError> {
        if let Err(SourceError::Unreachable { .. }) = &result {
            self.unreachable.store(true, Ordering::Relaxed);
        }
        result
    }

    /// The rule's spec.
    pub fn spec(&self) -> &PromSpec {
        &self.spec
    }

    fn client(&self) -> Result<&Prometheus, SourceError> {
        self.prometheus
            .as_ref()
            .ok_or_else(|| SourceError::Unavailable {
                what: "prometheus".into(),
                detail: "no [prometheus] section configured".into(),
            })
    }

    /// Every series of the rule's query now.
    pub async fn query(&self) -> Result<Vec<Series>, SourceError> {
        self.seen(self.client()?.instant(&self.spec.query).await)
    }

    /// The step the rule's `for` (of `for_`) is judged at: `step`, or by
    /// default a fortieth of `for` (at least 100 ms), at most the poll
    /// interval. A fine step places the start of a breach within
    /// `for / 40` of the scrape that showed it, so the daemon (which wakes
    /// exactly when `since + for` is reached) acts no later than a
    /// Prometheus alerting rule evaluated on its own interval; 80 points a
    /// query whatever `for` is.
    pub fn step(&self, for_: Duration) -> Duration {
        self.spec
            .step
            .unwrap_or_else(|| {
                (for_ / 40)
                    .max(Duration::from_millis(100))
                    .min(self.min_step)
            })
            .max(Duration::from_millis(1))
    }

    /// The rule's query from `start` to `end` every `step`. An empty result
    /// is no series, not an error: the caller judges absence.
    pub async fn query_range(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        step: Duration,
    ) -> Result<Vec<RangeSeries>, SourceError> {
        match self.seen(
            self.client()?
                .range(&self.spec.query, start, end, step)
                .await,
        ) {
            Err(SourceError::Absent { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// Whether the server was scraping anything from `start` to `end`:
    /// the points of [`SCRAPING_QUERY`] at `step`, oldest first, empty
    /// when it has none (a Prometheus that has just started, or restarted
    /// without its data, before its first scrape). See
    /// [`crate::rules::absence`].
    pub async fn scraping(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        step: Duration,
    ) -> Result<Vec<DateTime<Utc>>, SourceError> {
        match self.seen(self.client()?.range(SCRAPING_QUERY, start, end, step).await) {
            Ok(series) => Ok(series
                .into_iter()
                .flat_map(|s| s.points.into_iter().map(|(t, _)| t))
                .collect()),
            Err(SourceError::Absent { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The traffic guard's value now: the sum of `traffic_query`'s series
    /// (NaN when any is NaN). `Ok(None)` when the rule has no guard; an
    /// empty result is [`SourceError::Absent`].
    pub async fn traffic(&self) -> Result<Option<f64>, SourceError> {
        let Some(guard) = &self.spec.traffic else {
            return Ok(None);
        };
        let series = self.seen(self.client()?.instant(&guard.query).await)?;
        Ok(Some(series.iter().map(|s| s.value).sum()))
    }

    /// The largest finite value of the query now (for callers that want one
    /// number; rules use [`PromSource::query`] to name the series).
    pub async fn sample(&mut self) -> Result<f64, SourceError> {
        let series = self.query().await?;
        Ok(series
            .iter()
            .map(|s| s.value)
            .filter(|v| v.is_finite())
            .max_by(f64::total_cmp)
            .unwrap_or(f64::NAN))
    }

    /// The range-query step for a baseline window: window / 60, at least
    /// the poll interval and 1 s.
    pub fn step_for(&self, window: Duration) -> Duration {
        (window / 60).max(self.min_step).max(Duration::from_secs(1))
    }

    /// The baseline series over the window ending at `end`: one range query
    /// per distinct `end`, then served from the cache. A failed query is not
    /// cached (the next poll tries again); an empty answer is.
    pub async fn baseline(&mut self, end: DateTime<Utc>) -> Result<Vec<RangeSeries>, SourceError> {
        let Some(spec) = self.spec.baseline.clone() else {
            return Ok(Vec::new());
        };
        if let Some(c) = &self.baseline {
            if c.end == end {
                return Ok(c.series.clone());
            }
        }
        let window = chrono::TimeDelta::from_std(spec.window).unwrap_or(chrono::TimeDelta::MAX);
        let start = end
            .checked_sub_signed(window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let query = spec.query.as_deref().unwrap_or(&self.spec.query);
        let step = self.step_for(spec.window);
        self.baseline_fetches += 1;
        let series = match self.seen(self.client()?.range(query, start, end, step).await) {
            Ok(s) => s,
            // An empty window is an answer: there is no baseline there.
            Err(SourceError::Absent { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        self.baseline = Some(CachedBaseline {
            end,
            series: series.clone(),
        });
        Ok(series)
    }

    /// How many baseline range queries were sent.
    pub fn baseline_fetches(&self) -> u64 {
        self.baseline_fetches
    }
}

impl Observe for PromSource {
    fn sample(
        &mut self,
        _now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<f64, SourceError>> + Send {
        PromSource::sample(self)
    }

    fn detail(&self) -> Option<String> {
        None
    }

    fn window(&self) -> Option<Duration> {
        None
    }

    fn range(&mut self) -> Option<&mut PromSource> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("user:p@ss", "dXNlcjpwQHNz"),
        ] {
            assert_eq!(crate::util::base64(i.as_bytes()), o, "{i}");
        }
    }

    #[test]
    fn range_times_keep_milliseconds() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        for (at, text) in [
            ("2026-01-01T12:00:00Z", "1767268800.000"),
            ("2026-01-01T12:00:00.1Z", "1767268800.100"),
            ("2026-01-01T12:00:00.123456Z", "1767268800.123"),
            ("1969-12-31T23:59:59.5Z", "-0.500"),
        ] {
            assert_eq!(api_time(t(at)), text, "{at}");
        }
        assert_eq!(sample_time(1767268800.1), t("2026-01-01T12:00:00.1Z"));
        assert_eq!(sample_time(1767268800.0), t("2026-01-01T12:00:00Z"));
    }

    #[test]
    fn reqwest_errors_lose_the_url() {
        assert_eq!(
            without_url(
                "error sending request for url (http://127.0.0.1:1/api/v1/query?query=up%28%29): \
                 client error (Connect): tcp connect error: Connection refused (os error 111)"
            ),
            "error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
        assert_eq!(without_url("connection reset"), "connection reset");
    }

    #[test]
    fn labels_and_excerpts_print_plainly() {
        let mut l = Labels::new();
        l.insert("code".into(), "500".into());
        l.insert("job".into(), "app".into());
        assert_eq!(fmt_labels(&l), r#"{code="500", job="app"}"#);
        assert_eq!(fmt_labels(&Labels::new()), "{}");
        assert_eq!(excerpt(b""), "empty body");
        assert_eq!(excerpt(b"oops\n"), "\"oops\"");
        assert!(excerpt(&[b'x'; 500]).ends_with("...\""));
    }
}
