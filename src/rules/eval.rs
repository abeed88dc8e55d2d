//! Evaluation of one rule over time: threshold, `for` duration, no-data policy.

use chrono::{DateTime, Utc};

use super::RuleReport;
use crate::config::{NoData, RuleConfig};
use crate::sources::SourceError;

/// The evaluation state of one rule between polls.
#[derive(Debug, Clone)]
pub struct RuleEval {
    rule: RuleConfig,
    no_data: NoData,
}

impl RuleEval {
    /// Build for a rule under the target's no-data policy.
    pub fn build(rule: RuleConfig, no_data: NoData) -> RuleEval {
        RuleEval { rule, no_data }
    }

    /// Feed this poll's sample (or the source error) and return the report.
    /// `window` is the source's window, for the explanation.
    pub fn observe(
        &mut self,
        sample: Result<f64, SourceError>,
        window: Option<std::time::Duration>,
        now: DateTime<Utc>,
    ) -> RuleReport {
        todo!(
            "{sample:?} {window:?} {now} {:?} {:?}",
            self.rule,
            self.no_data
        )
    }
}
