//! `source = "host"`: CPU busy fraction from /proc/stat (delta between polls)
//! and memory in use from /proc/meminfo (1 - MemAvailable / MemTotal).

use chrono::{DateTime, Utc};

use super::SourceError;
use crate::config::HostMetric;

/// A host metric with the previous CPU counters.
#[derive(Debug)]
pub struct HostSource {
    metric: HostMetric,
}

impl HostSource {
    /// Build for one metric.
    pub fn build(metric: HostMetric) -> HostSource {
        HostSource { metric }
    }

    /// Read the metric now.
    pub fn sample(&mut self, now: DateTime<Utc>) -> Result<f64, SourceError> {
        todo!("{now} {:?}", self.metric)
    }
}
