//! `source = "probe"`: one HTTP GET per poll; the value is the failure ratio
//! or the median latency of the probes within `window`.
//!
//! A probe that fails (refused, timed out, not HTTP, wrong status, body cut
//! off) is data, not an error: it is what a health check exists to count. So
//! [`ProbeSource::sample`] always has a value.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use super::SourceError;
use crate::config::{ProbeMeasure, ProbeSpec};

/// Most probes kept, whatever the window: bounds memory when `window` is long
/// and the poll interval short.
pub const MAX_PROBES: usize = 10_000;

/// Most body bytes read per probe. The body is read (so a server that hangs
/// mid-body fails the probe) but discarded; a huge or endless body must not
/// cost memory or time.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The outcome of one GET.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Probe {
    /// When the probe was taken (the poll's `now`).
    at: DateTime<Utc>,
    /// Expected status and a complete (or bounded) body.
    ok: bool,
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
}

impl ProbeSource {
    /// Build from the rule's spec with a shared client.
    pub fn build(spec: ProbeSpec, client: reqwest::Client) -> ProbeSource {
        ProbeSource {
            spec,
            client,
            probes: VecDeque::new(),
        }
    }

    /// Probe once and return the value over the window. Never fails: a failed
    /// probe is recorded as such and counts in the value.
    pub async fn sample(&mut self, now: DateTime<Utc>) -> Result<f64, SourceError> {
        let (ok, elapsed) = self.probe_once().await;
        tracing::debug!(url = %self.spec.url, ok, ?elapsed, "probe");
        self.record(Probe {
            at: now,
            ok,
            elapsed,
        });
        Ok(self.value())
    }

    /// The window the value is computed over.
    pub fn window(&self) -> Duration {
        self.spec.window
    }

    /// One GET: `(ok, elapsed)`. Bounded by the timeout, body included.
    async fn probe_once(&self) -> (bool, Duration) {
        let start = Instant::now();
        let request = self
            .client
            .get(self.spec.url.clone())
            .timeout(self.spec.timeout);
        let expect = self.spec.expect_status;
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
            Ok::<_, reqwest::Error>(status_ok(status.as_u16(), expect))
        };
        // reqwest's timeout already covers connect, headers and body; the
        // outer one makes the bound independent of that behaviour.
        let ok = match tokio::time::timeout(self.spec.timeout, fetch).await {
            Ok(Ok(ok)) => ok,
            Ok(Err(e)) => {
                tracing::debug!(url = %self.spec.url, error = %e, "probe failed");
                false
            }
            Err(_) => {
                tracing::debug!(url = %self.spec.url, timeout = ?self.spec.timeout, "probe timed out");
                false
            }
        };
        (ok, start.elapsed())
    }

    /// Append a probe, drop those outside the window (the newest always
    /// stays) and enforce the cap.
    fn record(&mut self, probe: Probe) {
        self.probes.push_back(probe);
        if let Some(cutoff) = window_start(probe.at, self.spec.window) {
            let newest = self.probes.len() - 1;
            let mut i = 0;
            self.probes.retain(|p| {
                let keep = i == newest || p.at > cutoff;
                i += 1;
                keep
            });
        }
        while self.probes.len() > MAX_PROBES {
            self.probes.pop_front();
        }
    }

    /// The measure over the probes kept. There is always at least one.
    fn value(&self) -> f64 {
        match self.spec.measure {
            ProbeMeasure::FailureRatio => failure_ratio(self.probes.iter().map(|p| p.ok)),
            ProbeMeasure::Latency => median_secs(self.probes.iter().map(|p| p.elapsed)),
        }
    }
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

    /// The failure ratio after one probe of `addr` with a fresh source.
    async fn probe_one(addr: SocketAddr, expect_status: Option<u16>) -> f64 {
        let mut s = spec(addr, ProbeMeasure::FailureRatio);
        s.expect_status = expect_status;
        let mut src = ProbeSource::build(s, client());
        src.sample(t0()).await.unwrap()
    }

    #[tokio::test]
    async fn every_kind_of_server_failure_is_a_failed_probe() {
        within("server table", async {
            let ok = |code| Behavior::Status(code, Duration::ZERO);
            let table = [
                ("200, any 2xx", serve(ok(200)).await, None, 0.0),
                ("204, any 2xx", serve(ok(204)).await, None, 0.0),
                ("500, any 2xx", serve(ok(500)).await, None, 1.0),
                ("302, any 2xx", serve(ok(302)).await, None, 1.0),
                ("500, expect 500", serve(ok(500)).await, Some(500), 0.0),
                ("204, expect 200", serve(ok(204)).await, Some(200), 1.0),
                ("hang", serve(Behavior::Hang).await, None, 1.0),
                ("garbage", serve(Behavior::Garbage).await, None, 1.0),
                (
                    "hang mid-body",
                    serve(Behavior::HangMidBody).await,
                    None,
                    1.0,
                ),
                (
                    "endless body",
                    serve(Behavior::EndlessBody).await,
                    None,
                    0.0,
                ),
                ("refused", refused_port().await, None, 1.0),
            ];
            for (name, addr, expect, want) in table {
                assert_eq!(probe_one(addr, expect).await, want, "{name}");
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
        let probe = |at, ok| Probe {
            at,
            ok,
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
