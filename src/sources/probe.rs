//! `source = "probe"`: one HTTP GET per poll; the value is the failure ratio
//! or the median latency of the probes within `window`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::SourceError;
use crate::config::ProbeSpec;

/// A probe with its recent results.
#[derive(Debug)]
pub struct ProbeSource {
    spec: ProbeSpec,
    client: reqwest::Client,
}

impl ProbeSource {
    /// Build from the rule's spec with a shared client.
    pub fn build(spec: ProbeSpec, client: reqwest::Client) -> ProbeSource {
        ProbeSource { spec, client }
    }

    /// Probe once and return the value over the window.
    pub async fn sample(&mut self, now: DateTime<Utc>) -> Result<f64, SourceError> {
        todo!("{now} {:?}", self.client)
    }

    /// The window the value is computed over.
    pub fn window(&self) -> Duration {
        self.spec.window
    }
}
