//! `source = "probe"`: one HTTP GET per poll; the value is the failure ratio
//! or the median latency of the probes within `window`.
//!
//! A probe that fails (refused, timed out, reset, DNS, TLS, not HTTP, wrong
//! status, body cut off) is data, not an error: it is what a health check
//! exists to count, and each one records why it failed ([`Failure`]). The
//! report's detail sums them up (`3 of 6 probes failed: 2 timed out after
//! 2s, 1 refused; last: refused`).
//!
//! Two things are not data about the service and never count:
//! - an **observer failure**: the probe failed for a reason local to
//!   rollbackd (out of file descriptors `EMFILE`/`ENFILE`, `ENOBUFS`,
//!   `ENOMEM`, no free local port, the local resolver failing, our own
//!   request cancelled). It is not recorded. The value is computed from
//!   the real probes still in the window; when fewer than `min_samples`
//!   are left, the poll is Unknown (`observer failure: too many open files
//!   (EMFILE)`).
//! - **too few probes**: until the window holds `min_samples` probes the
//!   value is Unknown (`too few probes: 2 in window 30s < min_samples 3`),
//!   so one failed probe never reads as 100%. After a restart the window
//!   is empty, so a probe rule is Unknown for its first `min_samples - 1`
//!   polls.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use super::{Context, Cx, Kind, Observe, RuleInput, SourceError};
use crate::config::cx::join;
use crate::util::fmt_duration;

/// Default `min_samples` of a probe rule.
pub const DEFAULT_MIN_SAMPLES: usize = 3;
/// Default probe `timeout`.
pub const DEFAULT_PROBE_TIMEOUT: &str = "2s";
/// Default probe `window`.
pub const DEFAULT_PROBE_WINDOW: &str = "30s";

/// `source = "probe"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    /// URL fetched with GET.
    pub url: url::Url,
    /// No answer in time = failed probe.
    pub timeout: Duration,
    /// Required status; `None` accepts any 2xx.
    pub expect_status: Option<u16>,
    /// Which value the rule compares.
    pub measure: ProbeMeasure,
    /// The probes the value is computed over.
    pub window: Duration,
    /// Fewer probes than this in the window: the value is Unknown (default 3).
    pub min_samples: usize,
}

/// `measure = failure_ratio | latency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMeasure {
    /// Failed probes / all probes in the window (0..1).
    FailureRatio,
    /// Median latency of the probes in the window, seconds.
    Latency,
}

/// The keys of a `source = "probe"` rule.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeKeys {
    /// URL fetched with GET.
    pub url: Option<String>,
    /// Duration string, no answer in time = failed probe.
    pub timeout: Option<String>,
    /// Required HTTP status.
    pub expect_status: Option<i64>,
    /// `failure_ratio` or `latency`.
    pub measure: Option<String>,
    /// Duration string, the probes the value is computed over.
    pub window: Option<String>,
    /// Fewer probes in the window than this is Unknown.
    pub min_samples: Option<i64>,
}

impl Kind for ProbeSpec {
    const NAME: &'static str = "probe";
    const PUSHED: bool = false;
    const RANGED: bool = false;
    type Keys = ProbeKeys;
    type Live = ProbeSource;

    fn usable(_: &mut Cx, _: &str) -> bool {
        true
    }

    fn validate(cx: &mut Cx, p: &str, rule: &RuleInput, keys: ProbeKeys) -> Option<(Self, f64)> {
        let above = super::above(cx, p, rule.above, "set above");
        let url = cx
            .required(p, "url", keys.url.as_deref())
            .and_then(|u| cx.http_url(&join(p, "url"), u));
        let timeout = cx.duration(
            p,
            "timeout",
            keys.timeout.as_deref(),
            DEFAULT_PROBE_TIMEOUT,
            true,
        );
        let expect_status = cx.status(&join(p, "expect_status"), keys.expect_status);
        let measure = cx.choice(
            p,
            "measure",
            keys.measure.as_deref(),
            &[
                ("failure_ratio", ProbeMeasure::FailureRatio),
                ("latency", ProbeMeasure::Latency),
            ],
        );
        let window = cx.duration(
            p,
            "window",
            keys.window.as_deref(),
            DEFAULT_PROBE_WINDOW,
            true,
        );
        let in_range = match (measure, above) {
            (Some(ProbeMeasure::FailureRatio), Some(v)) => super::fraction(cx, p, v),
            (Some(ProbeMeasure::Latency), Some(v)) if v <= 0.0 => {
                cx.err(
                    join(p, "above"),
                    format!("above = {v} must be greater than 0 (latency in seconds)"),
                );
                false
            }
            _ => true,
        };
        let min_samples = min_samples(cx, p, keys.min_samples);
        if let Some(u) = &url {
            remote_without_timeout(cx, p, u, keys.timeout.is_none());
        }
        super::warn_zero_for(cx, p, rule, "probe");
        let spec = ProbeSpec {
            url: url?,
            timeout: timeout?,
            expect_status: expect_status?,
            measure: measure?,
            window: window?,
            min_samples: min_samples?,
        };
        in_range.then_some((spec, above?))
    }

    /// The window must be able to hold `min_samples` probes at the
    /// daemon's poll interval (one probe per poll), also while the service
    /// hangs and every probe uses its whole `timeout`, or the rule is
    /// Unknown exactly when it matters ([`crate::config::probe_window`]).
    fn check_poll(&self, cx: &mut Cx, p: &str, poll_interval: Duration) {
        if let Some(why) = crate::config::probe_window::unreachable(
            self.min_samples,
            self.window,
            self.timeout,
            poll_interval,
        ) {
            cx.err(join(p, "min_samples"), why);
        }
    }

    fn describe(&self) -> String {
        let measure = match self.measure {
            ProbeMeasure::FailureRatio => "failure_ratio",
            ProbeMeasure::Latency => "latency",
        };
        format!("probe GET {} {measure}", self.url)
    }

    fn above_baseline(&self) -> Option<f64> {
        None
    }

    fn build(&self, cx: &Context) -> ProbeSource {
        ProbeSource::build(self.clone(), cx.http.clone())
    }

    fn keeps(&self, _: &ProbeSource, _: &Context) -> bool {
        true
    }

    fn budget(&self, _: &Context) -> Duration {
        self.timeout
    }
}

/// `min_samples`, at least 1 (default [`DEFAULT_MIN_SAMPLES`]).
fn min_samples(cx: &mut Cx, p: &str, n: Option<i64>) -> Option<usize> {
    let Some(n) = n else {
        return Some(DEFAULT_MIN_SAMPLES);
    };
    match usize::try_from(n) {
        Ok(n) if n >= 1 => Some(n),
        _ => {
            cx.err(
                join(p, "min_samples"),
                format!("min_samples = {n} must be at least 1"),
            );
            None
        }
    }
}

/// A probe of another host with the default timeout: warn that a healthy
/// answer over the network may take longer.
fn remote_without_timeout(cx: &mut Cx, p: &str, u: &url::Url, default_timeout: bool) {
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    if !loopback && default_timeout {
        cx.warn(
            join(p, "url"),
            format!(
                "probe of {}, which is not on this host, has no timeout set (default {DEFAULT_PROBE_TIMEOUT}); set timeout to what a healthy answer over the network takes",
                crate::util::redact_url(u)
            ),
        );
    }
}

impl Observe for ProbeSource {
    fn sample(
        &mut self,
        now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<f64, SourceError>> + Send {
        ProbeSource::sample(self, now)
    }

    fn detail(&self) -> Option<String> {
        ProbeSource::detail(self)
    }

    fn window(&self) -> Option<Duration> {
        Some(ProbeSource::window(self))
    }

    fn range(&mut self) -> Option<&mut super::prometheus::PromSource> {
        None
    }
}

/// Most probes kept, whatever the window: bounds memory when `window` is long
/// and the poll interval short.
pub const MAX_PROBES: usize = 10_000;

/// Most body bytes read per probe. The body is read (so a server that hangs
/// mid-body fails the probe) but discarded; a huge or endless body must not
/// cost memory or time.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why one probe failed: evidence about the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens: connection refused.
    Refused,
    /// No complete answer within the probe's timeout.
    TimedOut(Duration),
    /// The connection was reset or closed before an answer.
    Reset,
    /// The service's name does not resolve.
    Dns(String),
    /// The TLS handshake or certificate failed.
    Tls(String),
    /// An answer with a status that is not the expected one.
    Status {
        /// The status received.
        got: u16,
        /// `expect_status`; `None` is any 2xx.
        expect: Option<u16>,
    },
    /// The answer's body ended before its announced length.
    BodyCut,
    /// The answer is not HTTP.
    NotHttp(String),
    /// Anything else, with the error chain.
    Other(String),
}

impl Failure {
    /// The reason without details, for counting: `refused`, `timed out
    /// after 2s`, `status 503 (expected 2xx)`, `dns`.
    pub fn kind(&self) -> String {
        match self {
            Failure::Dns(_) => "dns".into(),
            Failure::Tls(_) => "tls".into(),
            Failure::NotHttp(_) => "not http".into(),
            Failure::Other(_) => "other".into(),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused => write!(f, "refused"),
            Failure::TimedOut(t) => write!(f, "timed out after {}", fmt_duration(*t)),
            Failure::Reset => write!(f, "reset"),
            Failure::Dns(e) => write!(f, "dns: {e}"),
            Failure::Tls(e) => write!(f, "tls: {e}"),
            Failure::Status { got, expect: None } => write!(f, "status {got} (expected 2xx)"),
            Failure::Status {
                got,
                expect: Some(want),
            } => write!(f, "status {got} (expected {want})"),
            Failure::BodyCut => write!(f, "body cut off"),
            Failure::NotHttp(e) => write!(f, "not http: {e}"),
            Failure::Other(e) => write!(f, "{e}"),
        }
    }
}

/// What one GET tells: the service answered well, failed, or we could not
/// observe it at all.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Expected status and a complete (or bounded) body.
    Ok,
    /// A failed probe, with why.
    Failed(Failure),
    /// A failure local to rollbackd; not a data point about the service.
    Observer(String),
}

/// The outcome of one GET.
#[derive(Debug, Clone, PartialEq)]
struct Probe {
    /// When the probe counts from: the poll's `now`, or for a probe that
    /// timed out its deadline (`now + timeout`).
    at: DateTime<Utc>,
    /// `None` for a good probe, else why it failed.
    failure: Option<Failure>,
    /// From sending the request to the end of the body or the failure; a
    /// timed-out probe counts about the timeout.
    elapsed: Duration,
}

/// A probe with its recent results.
#[derive(Debug)]
pub struct ProbeSource {
    spec: ProbeSpec,
    client: reqwest::Client,
    /// Oldest first; pruned to `window` at every sample, capped at [`MAX_PROBES`].
    probes: VecDeque<Probe>,
    /// The last failed probe, kept after it left the window.
    last_failure: Option<(DateTime<Utc>, Failure)>,
    /// The last observer failure (not counted as a probe).
    last_observer: Option<(DateTime<Utc>, String)>,
}

impl ProbeSource {
    /// Build from the rule's spec with a shared client.
    pub fn build(spec: ProbeSpec, client: reqwest::Client) -> ProbeSource {
        ProbeSource {
            spec,
            client,
            probes: VecDeque::new(),
            last_failure: None,
            last_observer: None,
        }
    }

    /// Probe once and return the value over the window. A failed probe is
    /// recorded as such and counts in the value; an observer failure or too
    /// few probes in the window is an error (the rule is Unknown).
    pub async fn sample(&mut self, now: DateTime<Utc>) -> Result<f64, SourceError> {
        let (verdict, elapsed) = self.probe_once().await;
        self.absorb(now, verdict, elapsed)
    }

    /// Record one probe's verdict taken at `now` and compute the value.
    fn absorb(
        &mut self,
        now: DateTime<Utc>,
        verdict: Verdict,
        elapsed: Duration,
    ) -> Result<f64, SourceError> {
        let url = crate::util::redact_url(&self.spec.url);
        // A probe that timed out is a failed sample from its deadline on:
        // that is when its answer was due, however long the rest of the
        // poll took and whichever polls it made the worker skip.
        let at = match &verdict {
            Verdict::Failed(Failure::TimedOut(limit)) => TimeDelta::from_std(*limit)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(now),
            _ => now,
        };
        let failure = match verdict {
            Verdict::Ok => {
                tracing::debug!(%url, ?elapsed, "probe ok");
                None
            }
            Verdict::Failed(f) => {
                tracing::debug!(%url, ?elapsed, reason = %f, "probe failed");
                self.last_failure = Some((at, f.clone()));
                Some(f)
            }
            Verdict::Observer(why) => {
                tracing::debug!(%url, ?elapsed, reason = %why, "probe not taken: observer failure");
                self.last_observer = Some((now, why.clone()));
                self.prune_before(now);
                // Nothing new about the service: the real probes still in
                // the window decide, if there are enough of them.
                if self.probes.len() >= self.spec.min_samples {
                    return Ok(self.value());
                }
                return Err(SourceError::Observer(why));
            }
        };
        self.record(Probe {
            at,
            failure,
            elapsed,
        });
        let n = self.probes.len();
        if n < self.spec.min_samples {
            return Err(SourceError::TooLittle(format!(
                "too few probes: {n} in window {} < min_samples {}",
                fmt_duration(self.spec.window),
                self.spec.min_samples
            )));
        }
        Ok(self.value())
    }

    /// The window the value is computed over.
    pub fn window(&self) -> Duration {
        self.spec.window
    }

    /// The failures in the window by reason, and the last one:
    /// `3 of 6 probes failed: 2 timed out after 2s, 1 refused; last: refused`.
    /// `None` while no probe ever failed and no observer failure is in the
    /// window.
    pub fn detail(&self) -> Option<String> {
        let total = self.probes.len();
        let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
        for f in self.probes.iter().filter_map(|p| p.failure.as_ref()) {
            *by_kind.entry(f.kind()).or_default() += 1;
        }
        let failed: usize = by_kind.values().sum();
        let cutoff = self.probes.front().map(|p| p.at);
        let observer = self
            .last_observer
            .as_ref()
            .filter(|(at, _)| cutoff.is_none_or(|c| *at >= c));
        if self.last_failure.is_none() && observer.is_none() {
            return None;
        }
        let mut counts: Vec<(String, usize)> = by_kind.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let plural = if total == 1 { "probe" } else { "probes" };
        let mut s = format!("{failed} of {total} {plural} failed");
        if !counts.is_empty() {
            let list: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
            s.push_str(&format!(": {}", list.join(", ")));
        }
        if let Some((at, f)) = &self.last_failure {
            s.push_str(&format!("; last: {f}"));
            if failed == 0 {
                s.push_str(&format!(" at {}", at.format("%H:%M:%S%.3fZ")));
            }
        }
        if let Some((at, why)) = observer {
            s.push_str(&format!(
                "; observer failure at {} not counted: {why}",
                at.format("%H:%M:%S%.3fZ")
            ));
        }
        Some(s)
    }

    /// One GET: its verdict and how long it took. Bounded by the timeout,
    /// body included.
    async fn probe_once(&self) -> (Verdict, Duration) {
        let start = Instant::now();
        let request = self
            .client
            .get(self.spec.url.clone())
            .timeout(self.spec.timeout);
        let expect = self.spec.expect_status;
        let timeout = self.spec.timeout;
        let fetch = async move {
            let mut response = request.send().await?;
            let status = response.status();
            let mut read = 0usize;
            while read < MAX_BODY_BYTES {
                match response.chunk().await? {
                    Some(chunk) => read += chunk.len(),
                    None => break,
                }
            }
            Ok::<_, reqwest::Error>(status.as_u16())
        };
        // reqwest's timeout already covers connect, headers and body; the
        // outer one makes the bound independent of that behaviour.
        let verdict = match tokio::time::timeout(timeout, fetch).await {
            Ok(Ok(status)) if status_ok(status, expect) => Verdict::Ok,
            Ok(Ok(got)) => Verdict::Failed(Failure::Status { got, expect }),
            Ok(Err(e)) if e.is_timeout() => Verdict::Failed(Failure::TimedOut(timeout)),
            Ok(Err(e)) => classify(&e, timeout),
            Err(_) => Verdict::Failed(Failure::TimedOut(timeout)),
        };
        (verdict, start.elapsed())
    }

    /// Drop every probe outside the window ending at `now`.
    fn prune_before(&mut self, now: DateTime<Utc>) {
        if let Some(cutoff) = window_start(now, self.spec.window) {
            self.probes.retain(|p| p.at > cutoff);
        }
    }

    /// Drop the probes outside the window ending at `now` (the newest
    /// always stays).
    fn prune(&mut self, now: DateTime<Utc>) {
        if let Some(cutoff) = window_start(now, self.spec.window) {
            let newest = self.probes.len().saturating_sub(1);
            let mut i = 0;
            self.probes.retain(|p| {
                let keep = i == newest || p.at > cutoff;
                i += 1;
                keep
            });
        }
    }

    /// Append a probe, drop those outside the window (the newest always
    /// stays) and enforce the cap.
    fn record(&mut self, probe: Probe) {
        let at = probe.at;
        self.probes.push_back(probe);
        self.prune(at);
        while self.probes.len() > MAX_PROBES {
            self.probes.pop_front();
        }
    }

    /// The measure over the probes kept. There is always at least one.
    fn value(&self) -> f64 {
        match self.spec.measure {
            ProbeMeasure::FailureRatio => {
                failure_ratio(self.probes.iter().map(|p| p.failure.is_none()))
            }
            ProbeMeasure::Latency => median_secs(self.probes.iter().map(|p| p.elapsed)),
        }
    }
}

/// Linux errno values that mean rollbackd itself is short of something.
const OBSERVER_ERRNOS: &[(i32, &str)] = &[
    (24, "too many open files (EMFILE)"),
    (23, "too many open files in the system (ENFILE)"),
    (105, "no buffer space available (ENOBUFS)"),
    (12, "out of memory (ENOMEM)"),
    (99, "no free local address or port (EADDRNOTAVAIL)"),
];

/// Why a request failed, from its error chain: the `std::io::Error` kinds
/// and errno values underneath (refused, reset, timed out; EMFILE and
/// friends are observer failures), else the hyper/rustls/resolver message.
pub fn classify(e: &(dyn std::error::Error + 'static), timeout: Duration) -> Verdict {
    use std::io::ErrorKind;
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = vec![e];
    let mut cur = e.source();
    while let Some(s) = cur {
        chain.push(s);
        cur = s.source();
    }
    // Local shortage first: it explains whatever else the chain says.
    for err in &chain {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(code) = io.raw_os_error() {
                if let Some((_, why)) = OBSERVER_ERRNOS.iter().find(|(c, _)| *c == code) {
                    return Verdict::Observer((*why).to_string());
                }
            }
        }
    }
    for err in &chain {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ErrorKind::ConnectionRefused => return Verdict::Failed(Failure::Refused),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
                    return Verdict::Failed(Failure::Reset)
                }
                ErrorKind::TimedOut => return Verdict::Failed(Failure::TimedOut(timeout)),
                ErrorKind::UnexpectedEof => return Verdict::Failed(Failure::BodyCut),
                _ => {}
            }
        }
    }
    let text = error_chain(&chain);
    let lower = text.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if has(&["operation was canceled", "operation was cancelled"]) {
        return Verdict::Observer(format!("probe cancelled: {text}"));
    }
    if has(&["dns error", "failed to lookup address", "name resolution"]) {
        // EAI_AGAIN / EAI_SYSTEM / EAI_MEMORY: our resolver did not answer;
        // a name that does not exist is the service's problem.
        if has(&[
            "temporary failure in name resolution",
            "system error",
            "memory allocation failure",
        ]) {
            return Verdict::Observer(format!("local resolver failed: {text}"));
        }
        return Verdict::Failed(Failure::Dns(text));
    }
    if has(&["certificate", "tls", "handshake", "rustls"]) {
        return Verdict::Failed(Failure::Tls(text));
    }
    if has(&[
        "end of file before message length",
        "incomplete message",
        "error decoding response body",
        "error reading a body",
    ]) {
        return Verdict::Failed(Failure::BodyCut);
    }
    if has(&["connection closed before message completed", "reset"]) {
        return Verdict::Failed(Failure::Reset);
    }
    if has(&[
        "invalid http",
        "invalid status",
        "invalid header",
        "http/0.9",
        "parse",
    ]) {
        return Verdict::Failed(Failure::NotHttp(text));
    }
    if has(&["timed out", "timeout"]) {
        return Verdict::Failed(Failure::TimedOut(timeout));
    }
    Verdict::Failed(Failure::Other(text))
}

/// `a: b: c`, each message once.
fn error_chain(chain: &[&(dyn std::error::Error + 'static)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in chain {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    crate::util::redact_urls(&parts.join(": "))
}

/// Whether `status` is acceptable: equal to `expect`, or any 2xx without one.
fn status_ok(status: u16, expect: Option<u16>) -> bool {
    match expect {
        Some(want) => status == want,
        None => (200..300).contains(&status),
    }
}

/// `now - window`, or `None` when that is before any representable time
/// (then nothing is old enough to drop).
fn window_start(now: DateTime<Utc>, window: Duration) -> Option<DateTime<Utc>> {
    let window = TimeDelta::from_std(window).ok()?;
    now.checked_sub_signed(window)
}

/// Failed / total; 0 for no probes.
fn failure_ratio(oks: impl Iterator<Item = bool>) -> f64 {
    let (mut failed, mut total) = (0usize, 0usize);
    for ok in oks {
        total += 1;
        if !ok {
            failed += 1;
        }
    }
    if total == 0 {
        0.0
    } else {
        failed as f64 / total as f64
    }
}

/// Median in seconds; the mean of the two middle values for an even count;
/// 0 for none.
fn median_secs(elapsed: impl Iterator<Item = Duration>) -> f64 {
    let mut secs: Vec<f64> = elapsed.map(|d| d.as_secs_f64()).collect();
    if secs.is_empty() {
        return 0.0;
    }
    secs.sort_by(f64::total_cmp);
    let mid = secs.len() / 2;
    if secs.len() % 2 == 1 {
        secs[mid]
    } else {
        (secs[mid - 1] + secs[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// What a test server does with each connection.
    #[derive(Clone, Copy)]
    enum Behavior {
        /// Answer with this status and a short body, after a delay.
        Status(u16, Duration),
        /// Accept and never answer.
        Hang,
        /// Write bytes that are not HTTP, then close.
        Garbage,
        /// Promise 1000 body bytes, send 10, then hang.
        HangMidBody,
        /// 200 with a chunked body that never ends.
        EndlessBody,
        /// Promise 1000 body bytes, send 10, then close.
        CutMidBody,
    }

    /// Start a server on 127.0.0.1:0 that handles every connection per `behavior`.
    async fn serve(behavior: Behavior) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(handle(stream, behavior));
            }
        });
        addr
    }

    async fn handle(mut stream: TcpStream, behavior: Behavior) {
        // Read the request head.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let forever = || tokio::time::sleep(Duration::from_secs(3600));
        match behavior {
            Behavior::Status(code, delay) => {
                tokio::time::sleep(delay).await;
                let head = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = stream.write_all(head.as_bytes()).await;
            }
            Behavior::Hang => forever().await,
            Behavior::Garbage => {
                let _ = stream
                    .write_all(b"\x00\x01garbage that is not http\r\n\r\n")
                    .await;
            }
            Behavior::HangMidBody => {
                let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789";
                let _ = stream.write_all(head.as_bytes()).await;
                forever().await;
            }
            Behavior::CutMidBody => {
                let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789";
                let _ = stream.write_all(head.as_bytes()).await;
            }
            Behavior::EndlessBody => {
                let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let piece = format!("1000\r\n{}\r\n", "x".repeat(0x1000));
                while stream.write_all(piece.as_bytes()).await.is_ok() {}
            }
        }
    }

    /// A port nothing listens on.
    async fn refused_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    fn client() -> reqwest::Client {
        // No proxy from the environment may sit between us and loopback.
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    fn spec(addr: SocketAddr, measure: ProbeMeasure) -> ProbeSpec {
        ProbeSpec {
            url: format!("http://{addr}/health").parse().unwrap(),
            timeout: Duration::from_millis(300),
            expect_status: None,
            measure,
            window: Duration::from_secs(3600),
            min_samples: 1,
        }
    }

    fn t0() -> DateTime<Utc> {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    fn secs(s: i64) -> TimeDelta {
        TimeDelta::seconds(s)
    }

    /// Fails the test with a message naming the likely hang instead of blocking.
    async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .unwrap_or_else(|_| panic!("{what}: a probe ignored its timeout"))
    }

    /// The failure ratio after one probe of `addr` with a fresh source,
    /// and the report's detail.
    async fn probe_one(addr: SocketAddr, expect_status: Option<u16>) -> (f64, Option<String>) {
        let mut s = spec(addr, ProbeMeasure::FailureRatio);
        s.expect_status = expect_status;
        let mut src = ProbeSource::build(s, client());
        let v = src.sample(t0()).await.unwrap();
        (v, src.detail())
    }

    #[tokio::test]
    async fn every_kind_of_server_failure_is_a_failed_probe() {
        within("server table", async {
            let ok = |code| Behavior::Status(code, Duration::ZERO);
            // (case, server, expect_status, ratio, the reason in the detail)
            let table = [
                ("200, any 2xx", serve(ok(200)).await, None, 0.0, None),
                ("204, any 2xx", serve(ok(204)).await, None, 0.0, None),
                (
                    "500, any 2xx",
                    serve(ok(500)).await,
                    None,
                    1.0,
                    Some("status 500 (expected 2xx)"),
                ),
                (
                    "302, any 2xx",
                    serve(ok(302)).await,
                    None,
                    1.0,
                    Some("status 302 (expected 2xx)"),
                ),
                (
                    "500, expect 500",
                    serve(ok(500)).await,
                    Some(500),
                    0.0,
                    None,
                ),
                (
                    "204, expect 200",
                    serve(ok(204)).await,
                    Some(200),
                    1.0,
                    Some("status 204 (expected 200)"),
                ),
                (
                    "hang",
                    serve(Behavior::Hang).await,
                    None,
                    1.0,
                    Some("timed out after 300ms"),
                ),
                (
                    "garbage",
                    serve(Behavior::Garbage).await,
                    None,
                    1.0,
                    Some("not http"),
                ),
                (
                    "hang mid-body",
                    serve(Behavior::HangMidBody).await,
                    None,
                    1.0,
                    Some("timed out after 300ms"),
                ),
                (
                    "cut mid-body",
                    serve(Behavior::CutMidBody).await,
                    None,
                    1.0,
                    Some("body cut off"),
                ),
                (
                    "endless body",
                    serve(Behavior::EndlessBody).await,
                    None,
                    0.0,
                    None,
                ),
                ("refused", refused_port().await, None, 1.0, Some("refused")),
            ];
            for (name, addr, expect, want, reason) in table {
                let (got, detail) = probe_one(addr, expect).await;
                assert_eq!(got, want, "{name}");
                match reason {
                    None => assert_eq!(detail, None, "{name}"),
                    Some(r) => {
                        let d = detail.unwrap_or_default();
                        assert!(
                            d.starts_with(&format!(
                                "1 of 1 probe failed: 1 {}",
                                r.split(':').next().unwrap()
                            )),
                            "{name}: {d}"
                        );
                        assert!(d.contains(&format!("; last: {r}")), "{name}: {d}");
                    }
                }
            }
        })
        .await;
    }

    #[tokio::test]
    async fn a_hanging_server_costs_no_more_than_the_timeout() {
        within("hanging server", async {
            for behavior in [Behavior::Hang, Behavior::HangMidBody] {
                let mut src = ProbeSource::build(
                    spec(serve(behavior).await, ProbeMeasure::Latency),
                    client(),
                );
                let start = Instant::now();
                let latency = src.sample(t0()).await.unwrap();
                let took = start.elapsed();
                assert!(took < Duration::from_millis(1300), "took {took:?}");
                // A timed-out probe counts about the timeout as its latency.
                assert!((0.29..1.3).contains(&latency), "latency {latency}");
            }
        })
        .await;
    }

    #[tokio::test]
    async fn failure_ratio_and_median_latency_over_the_window() {
        within("ratio and median", async {
            let fast = serve(Behavior::Status(200, Duration::ZERO)).await;
            let hang = serve(Behavior::Hang).await;
            let mut ratio = ProbeSource::build(spec(fast, ProbeMeasure::FailureRatio), client());
            let mut latency = ProbeSource::build(spec(fast, ProbeMeasure::Latency), client());

            // ok, failed (timeout), failed (timeout): 2/3 failed, median is a timeout.
            assert_eq!(ratio.sample(t0()).await.unwrap(), 0.0);
            let first = latency.sample(t0()).await.unwrap();
            assert!(first < 0.29, "a fast probe took {first}s");
            ratio.spec.url = spec(hang, ProbeMeasure::FailureRatio).url;
            latency.spec.url = ratio.spec.url.clone();
            assert_eq!(ratio.sample(t0() + secs(1)).await.unwrap(), 0.5);
            let r = ratio.sample(t0() + secs(2)).await.unwrap();
            assert!((r - 2.0 / 3.0).abs() < 1e-9, "ratio {r}");
            latency.sample(t0() + secs(1)).await.unwrap();
            let median = latency.sample(t0() + secs(2)).await.unwrap();
            assert!((0.29..1.3).contains(&median), "median {median}");
        })
        .await;
    }

    #[tokio::test]
    async fn probes_older_than_the_window_are_dropped() {
        within("window pruning", async {
            let refused = refused_port().await;
            let fast = serve(Behavior::Status(200, Duration::ZERO)).await;
            let mut s = spec(refused, ProbeMeasure::FailureRatio);
            s.window = Duration::from_secs(30);
            let mut src = ProbeSource::build(s, client());

            assert_eq!(src.sample(t0()).await.unwrap(), 1.0);
            src.spec.url = spec(fast, ProbeMeasure::FailureRatio).url;
            // t0 is 29s old: still in the window.
            assert_eq!(src.sample(t0() + secs(29)).await.unwrap(), 0.5);
            // t0 is exactly 30s old: out (kept are those with at > now - window).
            assert_eq!(src.sample(t0() + secs(30)).await.unwrap(), 0.0);
            assert_eq!(src.probes.len(), 2);
            // Long silence: only the current probe remains.
            assert_eq!(src.sample(t0() + secs(3600)).await.unwrap(), 0.0);
            assert_eq!(src.probes.len(), 1);
        })
        .await;
    }

    #[test]
    fn record_keeps_the_newest_and_caps_memory() {
        let mut s = spec("127.0.0.1:1".parse().unwrap(), ProbeMeasure::FailureRatio);
        s.window = Duration::ZERO;
        let mut src = ProbeSource::build(s, client());
        let probe = |at, ok: bool| Probe {
            at,
            failure: (!ok).then_some(Failure::Refused),
            elapsed: Duration::from_millis(5),
        };
        src.record(probe(t0(), false));
        src.record(probe(t0(), true));
        // A zero window keeps only the current probe, even at the same instant.
        assert_eq!(src.probes.len(), 1);
        assert_eq!(src.value(), 0.0);

        src.spec.window = Duration::from_secs(u64::MAX);
        for i in 0..(MAX_PROBES as i64 + 50) {
            src.record(probe(t0() + TimeDelta::milliseconds(i), i % 2 == 0));
        }
        assert_eq!(src.probes.len(), MAX_PROBES);
        assert_eq!(src.value(), 0.5);
    }

    #[test]
    fn too_few_probes_are_unknown_not_a_ratio() {
        let mut s = spec("127.0.0.1:1".parse().unwrap(), ProbeMeasure::FailureRatio);
        s.window = Duration::from_secs(30);
        s.min_samples = 3;
        let mut src = ProbeSource::build(s, client());
        let failed = || Verdict::Failed(Failure::Refused);
        let ms = Duration::from_millis(3);
        let e = src.absorb(t0(), failed(), ms).unwrap_err();
        assert_eq!(
            e.to_string(),
            "too few probes: 1 in window 30s < min_samples 3"
        );
        assert!(!e.is_absence());
        let e = src.absorb(t0() + secs(5), Verdict::Ok, ms).unwrap_err();
        assert!(e.to_string().starts_with("too few probes: 2"), "{e}");
        assert_eq!(src.absorb(t0() + secs(10), failed(), ms), Ok(2.0 / 3.0));
        // The window moves on: 2 of the 3 left it, too few again.
        let e = src.absorb(t0() + secs(40), Verdict::Ok, ms).unwrap_err();
        assert!(
            e.to_string().starts_with("too few probes: 1 in window 30s"),
            "{e}"
        );
    }

    #[test]
    fn a_probe_that_times_out_counts_from_its_deadline() {
        // Issue 18 item 7: the hung release. A 5 s timeout: the failure is
        // known at the deadline, and the window is reckoned from there.
        let mut s = spec("127.0.0.1:1".parse().unwrap(), ProbeMeasure::FailureRatio);
        s.window = Duration::from_secs(13);
        s.min_samples = 3;
        s.timeout = Duration::from_secs(5);
        let mut src = ProbeSource::build(s, client());
        let hung = || Verdict::Failed(Failure::TimedOut(Duration::from_secs(5)));
        let five = Duration::from_secs(5);
        assert!(src
            .absorb(t0(), Verdict::Ok, Duration::from_millis(3))
            .is_err());
        assert!(src.absorb(t0() + secs(1), hung(), five).is_err());
        assert_eq!(src.probes[1].at, t0() + secs(6), "counted at its deadline");
        // Probes 6 s apart (each takes the 5 s and waits for the next
        // 1 s slot): the third is in the window with the first two.
        assert_eq!(src.absorb(t0() + secs(7), hung(), five), Ok(2.0 / 3.0));
        assert_eq!(src.absorb(t0() + secs(13), hung(), five), Ok(1.0));
        assert_eq!(
            src.detail().as_deref(),
            Some("3 of 3 probes failed: 3 timed out after 5s; last: timed out after 5s")
        );
        // Once only good probes are left, the last failure is named at its deadline.
        let _ = src.absorb(t0() + secs(60), Verdict::Ok, Duration::from_millis(3));
        assert_eq!(
            src.detail().as_deref(),
            Some("0 of 1 probe failed; last: timed out after 5s at 12:00:18.000Z")
        );
    }

    #[test]
    fn observer_failures_are_not_probes() {
        let mut s = spec("127.0.0.1:1".parse().unwrap(), ProbeMeasure::FailureRatio);
        s.window = Duration::from_secs(30);
        s.min_samples = 2;
        let mut src = ProbeSource::build(s, client());
        let ms = Duration::from_millis(3);
        let emfile = || Verdict::Observer("too many open files (EMFILE)".into());
        // The only thing this poll, nothing real in the window: Unknown.
        let e = src.absorb(t0(), emfile(), ms).unwrap_err();
        assert_eq!(
            e.to_string(),
            "observer failure: too many open files (EMFILE)"
        );
        assert!(!e.is_absence());
        assert!(src.probes.is_empty(), "an observer failure is not recorded");
        assert!(src.absorb(t0() + secs(5), Verdict::Ok, ms).is_err());
        let failed = Verdict::Failed(Failure::Refused);
        assert_eq!(src.absorb(t0() + secs(10), failed, ms), Ok(0.5));
        // Enough real probes in the window: they decide, unchanged.
        assert_eq!(src.absorb(t0() + secs(15), emfile(), ms), Ok(0.5));
        assert_eq!(src.probes.len(), 2);
        let d = src.detail().unwrap();
        assert_eq!(
            d,
            "1 of 2 probes failed: 1 refused; last: refused; observer failure at 12:00:15.000Z not counted: too many open files (EMFILE)"
        );
        // The real probes age out of the window: Unknown again.
        let e = src.absorb(t0() + secs(36), emfile(), ms).unwrap_err();
        assert!(e.to_string().starts_with("observer failure:"), "{e}");
        assert_eq!(src.probes.len(), 1);
    }

    #[test]
    fn detail_counts_failures_by_reason_and_names_the_last() {
        let mut s = spec("127.0.0.1:1".parse().unwrap(), ProbeMeasure::FailureRatio);
        s.window = Duration::from_secs(30);
        let mut src = ProbeSource::build(s, client());
        let ms = Duration::from_millis(3);
        assert_eq!(src.detail(), None);
        let timeout = || Verdict::Failed(Failure::TimedOut(Duration::from_secs(2)));
        let steps = [
            Verdict::Ok,
            timeout(),
            Verdict::Ok,
            timeout(),
            Verdict::Ok,
            Verdict::Failed(Failure::Refused),
        ];
        for (i, v) in steps.into_iter().enumerate() {
            let _ = src.absorb(t0() + secs(5 * i as i64), v, ms);
        }
        assert_eq!(
            src.detail().as_deref(),
            Some("3 of 6 probes failed: 2 timed out after 2s, 1 refused; last: refused")
        );
        // Once the failures left the window, the last one is still named, with its time.
        let _ = src.absorb(t0() + secs(100), Verdict::Ok, ms);
        assert_eq!(
            src.detail().as_deref(),
            Some("0 of 1 probe failed; last: refused at 12:00:25.000Z")
        );
    }

    /// An error with a source, to build chains like reqwest's.
    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn std::error::Error + Send + Sync>);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(self.1.as_ref())
        }
    }

    #[test]
    fn classify_walks_the_error_chain() {
        use std::io::{Error, ErrorKind};
        let t = Duration::from_secs(2);
        let wrap = |e: Error| {
            Wrap(
                "error sending request",
                Box::new(Wrap("client error (Connect)", Box::new(e))),
            )
        };
        let msg = |m: &'static str| Wrap("error sending request", Box::new(Error::other(m)));
        let failed = Verdict::Failed;
        let table: Vec<(&str, Wrap, Verdict)> = vec![
            ("refused", wrap(Error::from(ErrorKind::ConnectionRefused)), failed(Failure::Refused)),
            ("reset", wrap(Error::from(ErrorKind::ConnectionReset)), failed(Failure::Reset)),
            ("io timeout", wrap(Error::from(ErrorKind::TimedOut)), failed(Failure::TimedOut(t))),
            ("eof", wrap(Error::from(ErrorKind::UnexpectedEof)), failed(Failure::BodyCut)),
            ("emfile", wrap(Error::from_raw_os_error(24)), Verdict::Observer("too many open files (EMFILE)".into())),
            ("enfile", wrap(Error::from_raw_os_error(23)), Verdict::Observer("too many open files in the system (ENFILE)".into())),
            ("enobufs", wrap(Error::from_raw_os_error(105)), Verdict::Observer("no buffer space available (ENOBUFS)".into())),
            ("enomem", wrap(Error::from_raw_os_error(12)), Verdict::Observer("out of memory (ENOMEM)".into())),
            ("refused errno", wrap(Error::from_raw_os_error(111)), failed(Failure::Refused)),
            (
                "local resolver down",
                msg("dns error: failed to lookup address information: Temporary failure in name resolution"),
                Verdict::Observer("local resolver failed: error sending request: dns error: failed to lookup address information: Temporary failure in name resolution".into()),
            ),
            (
                "no such name",
                msg("dns error: failed to lookup address information: Name or service not known"),
                failed(Failure::Dns("error sending request: dns error: failed to lookup address information: Name or service not known".into())),
            ),
            ("cancelled", msg("operation was canceled"), Verdict::Observer("probe cancelled: error sending request: operation was canceled".into())),
            ("tls", msg("invalid peer certificate: UnknownIssuer"), failed(Failure::Tls("error sending request: invalid peer certificate: UnknownIssuer".into()))),
            ("closed", msg("connection closed before message completed"), failed(Failure::Reset)),
            ("other", msg("something new"), failed(Failure::Other("error sending request: something new".into()))),
        ];
        for (name, err, want) in table {
            assert_eq!(classify(&err, t), want, "{name}");
        }
        assert_eq!(Failure::Dns("x".into()).kind(), "dns");
        assert_eq!(Failure::TimedOut(t).kind(), "timed out after 2s");
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_dns_or_a_local_resolver_failure() {
        within("dns", async {
            let mut s = spec("127.0.0.1:1".parse().unwrap(), ProbeMeasure::FailureRatio);
            s.url = "http://rollbackd-test.invalid/health".parse().unwrap();
            s.timeout = Duration::from_secs(5);
            let src = ProbeSource::build(s, client());
            let (verdict, _) = src.probe_once().await;
            // .invalid never resolves (RFC 6761): the service's name is
            // broken, unless this host has no working resolver at all.
            match verdict {
                Verdict::Failed(Failure::Dns(e)) => assert!(e.contains("dns"), "{e}"),
                Verdict::Observer(why) => {
                    assert!(why.starts_with("local resolver failed"), "{why}")
                }
                other => panic!("{other:?}"),
            }
        })
        .await;
    }

    #[test]
    fn status_and_math_tables() {
        for (status, expect, ok) in [
            (200, None, true),
            (299, None, true),
            (300, None, false),
            (199, None, false),
            (503, Some(503), true),
            (200, Some(204), false),
        ] {
            assert_eq!(status_ok(status, expect), ok, "{status} {expect:?}");
        }
        let ms = |v: &[u64]| median_secs(v.iter().map(|&m| Duration::from_millis(m)));
        for (elapsed, median) in [
            (&[][..], 0.0),
            (&[300][..], 0.3),
            (&[900, 100, 300][..], 0.3),
            (&[100, 400, 200, 2000][..], 0.3),
        ] {
            let got = ms(elapsed);
            assert!((got - median).abs() < 1e-9, "{elapsed:?}: {got}");
        }
        assert_eq!(failure_ratio([].into_iter()), 0.0);
        assert_eq!(failure_ratio([true, false, false, false].into_iter()), 0.75);
    }
}
