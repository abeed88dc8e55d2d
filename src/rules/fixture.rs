//! A builder of [`RuleReport`] values for tests (unit tests in the crate
//! and the integration tests in `tests/`): one place that names all the
//! report's fields, so a test says only what matters to it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{RuleReport, RuleStatus, Unreachable};

#[doc(hidden)]
impl RuleReport {
    /// Rule `rule` evaluated at `at`: Ok, no value, threshold 0.5, `for`
    /// 30s, no window, source `test`, nothing else set.
    pub fn ok(rule: &str, at: DateTime<Utc>) -> RuleReport {
        RuleReport {
            rule: rule.into(),
            source: "test".into(),
            status: RuleStatus::Ok,
            value: None,
            threshold: 0.5,
            for_: Duration::from_secs(30),
            window: None,
            at,
            no_data: None,
            baseline: None,
            above_baseline: None,
            labels: Default::default(),
            detail: None,
            shadow: false,
            unreachable: None,
        }
    }

    /// Named `rule` instead.
    pub fn rule(mut self, rule: &str) -> RuleReport {
        self.rule = rule.into();
        self
    }

    /// With the source described as `source`.
    pub fn source(mut self, source: &str) -> RuleReport {
        self.source = source.into();
        self
    }

    /// With `status`.
    pub fn status(mut self, status: RuleStatus) -> RuleReport {
        self.status = status;
        self
    }

    /// Pending since `since`.
    pub fn pending(self, since: DateTime<Utc>) -> RuleReport {
        self.status(RuleStatus::Pending { since })
    }

    /// Breached since `since`.
    pub fn breached(self, since: DateTime<Utc>) -> RuleReport {
        self.status(RuleStatus::Breached { since })
    }

    /// Unknown since `since` because of `why`.
    pub fn unknown(self, since: DateTime<Utc>, why: &str) -> RuleReport {
        self.status(RuleStatus::Unknown {
            since,
            why: why.into(),
        })
    }

    /// With the value compared (`0.8`, or `None`).
    pub fn value(mut self, value: impl Into<Option<f64>>) -> RuleReport {
        self.value = value.into();
        self
    }

    /// With the threshold `above`.
    pub fn threshold(mut self, threshold: f64) -> RuleReport {
        self.threshold = threshold;
        self
    }

    /// With the `for` duration.
    pub fn for_(mut self, for_: Duration) -> RuleReport {
        self.for_ = for_;
        self
    }

    /// With the window (a `Duration`, or `None`).
    pub fn window(mut self, window: impl Into<Option<Duration>>) -> RuleReport {
        self.window = window.into();
        self
    }

    /// With `no_data`: why there was no value, turned into this status.
    pub fn no_data(mut self, why: &str) -> RuleReport {
        self.no_data = Some(why.into());
        self
    }

    /// A baseline rule: `above_baseline = k` and the baseline it had.
    pub fn baseline(mut self, baseline: impl Into<Option<f64>>, k: f64) -> RuleReport {
        self.baseline = baseline.into();
        self.above_baseline = Some(k);
        self
    }

    /// A shadow rule.
    pub fn shadow(mut self) -> RuleReport {
        self.shadow = true;
        self
    }

    /// Its server `server` went unanswered at `at`.
    pub fn unreachable(mut self, server: &str, at: DateTime<Utc>) -> RuleReport {
        self.unreachable = Some(Unreachable {
            server: server.into(),
            at,
        });
        self
    }
}
