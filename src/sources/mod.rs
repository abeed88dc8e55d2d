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
    /// The source answered something that is not a usable value.
    #[error("{what}: bad value: {detail}")]
    BadValue {
        /// The source.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
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
    ) -> Source {
        match spec {
            SourceSpec::Probe(p) => {
                Source::Probe(probe::ProbeSource::build(p.clone(), client.clone()))
            }
            SourceSpec::Host(m) => Source::Host(host::HostSource::build(*m)),
            SourceSpec::Alertmanager(m) => {
                Source::Alertmanager(alertmanager::AlertmanagerSource::build(
                    m.clone(),
                    alertmanager::AlertStore::global(),
                ))
            }
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

    /// The window a value is computed over, for explanations.
    pub fn window(&self) -> Option<Duration> {
        match self {
            Source::Probe(p) => Some(p.window()),
            Source::Host(_) | Source::Alertmanager(_) | Source::Prometheus(_) => None,
        }
    }
}
