//! Sources produce the value a rule compares, one sample per poll. They never
//! decide anything: a source that cannot produce a value returns a
//! [`SourceError`], which the rule layer turns into `Unknown`.

pub mod alertmanager;
pub mod host;
pub mod probe;
pub mod prometheus;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::SourceSpec;

/// Why a source has no value this poll.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// Not enough history yet (e.g. the first CPU reading has no delta).
    #[error("no data yet: {0}")]
    Warming(String),
    /// The source could not be read.
    #[error("{what}: {detail}")]
    Unavailable {
        /// The source, e.g. `/proc/stat`.
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// The server did not answer at all: connection refused or reset, or
    /// no answer within the timeout. Unlike `Unavailable` (an error answer,
    /// a proxy's 502), this says the server is down or cut off; Prometheus
    /// tracks it per server so that one notice covers every rule.
    #[error("{what}: {detail}")]
    Unreachable {
        /// The source, e.g. `prometheus eu http://10.0.0.9:9090/`.
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// The source answered something that is not a usable value.
    #[error("{what}: bad value: {detail}")]
    BadValue {
        /// The source.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The source answered and the series is absent (an empty result, a
    /// series that vanished). The only error `no_data = "breach"` turns
    /// into a breach: a crashed release's series vanish.
    #[error("{what}: {detail}")]
    Absent {
        /// The source.
        what: String,
        /// What is missing.
        detail: String,
    },
    /// Too little evidence to judge: too few probes in the window, too
    /// little traffic. The text says how little, e.g. `too few probes: 2
    /// in window 30s < min_samples 3`.
    #[error("{0}")]
    TooLittle(String),
    /// rollbackd itself could not observe (out of file descriptors or
    /// memory, its resolver down, its task cancelled): not a data point
    /// about the service.
    #[error("observer failure: {0}")]
    Observer(String),
}

impl SourceError {
    /// Whether the source answered that there is no data (as opposed to
    /// not answering, or too little evidence). Only absence may count as
    /// a breach, under `no_data = "breach"`.
    pub fn is_absence(&self) -> bool {
        matches!(self, SourceError::Absent { .. })
    }
}

/// One rule's source, with whatever history it needs between polls.
#[derive(Debug)]
pub enum Source {
    /// HTTP GET per poll, value over a window.
    Probe(probe::ProbeSource),
    /// /proc CPU or memory.
    Host(host::HostSource),
    /// Alerts pushed by Alertmanager.
    Alertmanager(alertmanager::AlertmanagerSource),
    /// A PromQL query (with its baseline cache).
    Prometheus(prometheus::PromSource),
}

impl Source {
    /// Build the source for a rule. `client` is shared by all probes,
    /// `prometheus` by all Prometheus rules; `poll_interval` is the smallest
    /// useful step of a baseline's range query.
    pub fn build(
        spec: &SourceSpec,
        client: &reqwest::Client,
        prometheus: Option<&prometheus::Prometheus>,
        poll_interval: Duration,
        alerts: &std::sync::Arc<alertmanager::AlertStore>,
    ) -> Source {
        match spec {
            SourceSpec::Probe(p) => {
                Source::Probe(probe::ProbeSource::build(p.clone(), client.clone()))
            }
            SourceSpec::Host(m) => Source::Host(host::HostSource::build(*m)),
            SourceSpec::Alertmanager(m) => Source::Alertmanager(
                alertmanager::AlertmanagerSource::build(m.clone(), alerts.clone()),
            ),
            SourceSpec::Prometheus(p) => Source::Prometheus(prometheus::PromSource::build(
                p.clone(),
                prometheus.cloned(),
                poll_interval,
            )),
        }
    }

    /// Take this poll's sample. `now` timestamps it.
    pub async fn sample(&mut self, now: DateTime<Utc>) -> Result<f64, SourceError> {
        match self {
            Source::Probe(p) => p.sample(now).await,
            Source::Host(h) => h.sample(now),
            Source::Alertmanager(a) => a.sample(now),
            Source::Prometheus(p) => p.sample().await,
        }
    }

    /// What the source saw besides the value, for the rule's report: for
    /// probes, the failures by reason (`3 of 6 probes failed: 2 timed out
    /// after 2s, 1 refused; last: refused`).
    pub fn detail(&self) -> Option<String> {
        match self {
            Source::Probe(p) => p.detail(),
            Source::Host(_) | Source::Alertmanager(_) | Source::Prometheus(_) => None,
        }
    }

    /// The window a value is computed over, for explanations.
    pub fn window(&self) -> Option<Duration> {
        match self {
            Source::Probe(p) => Some(p.window()),
            Source::Host(_) | Source::Alertmanager(_) | Source::Prometheus(_) => None,
        }
    }
}
