//! Sources produce the value a rule compares, one sample per poll. They never
//! decide anything: a source that cannot produce a value returns a
//! [`SourceError`], which the rule layer turns into `Unknown`. A source
//! returns what it observed; the daemon records the metrics.
//!
//! # The seam: one file per kind
//!
//! Each kind of `[[target.rule]] source` lives in its own file,
//! `sources/KIND.rs`, and implements [`Kind`] on its spec (what a rule asks
//! for): its keys as serde reads them, their validation (with
//! [`Cx`], the same messages and key paths everywhere), building the live
//! source from the shared things the daemon passes in ([`Context`]), its
//! poll budget and its description. The live source implements
//! [`Observe`] (sample, detail, window). The one registration line per
//! kind is in `kinds!` below: it generates [`SourceSpec`] (held by the
//! config), [`Source`] (held by the daemon) and the only dispatch over
//! kinds. Kind files import no `config/mod.rs`: only the leaves
//! `config::{cx, error, duration, probe_window}`, `util` and this module.

pub mod alertmanager;
pub mod host;
pub mod probe;
pub mod prometheus;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use crate::config::cx::{join, Cx};

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

/// The registration of every source kind: `Variant(spec type),`, in the
/// order the "invalid source" message lists them. A new kind adds its
/// `pub mod` line above and one line here.
macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident($kind:ty),)*) => {
        /// The source of one rule's value: what `[[target.rule]]` asks for.
        #[derive(Debug, Clone, PartialEq)]
        pub enum SourceSpec {
            $($(#[$doc])* $variant($kind),)*
        }

        /// One rule's live source, with whatever history it needs between polls.
        #[derive(Debug)]
        pub enum Source {
            $($(#[$doc])* $variant(<$kind as Kind>::Live),)*
        }

        /// The words `source` may be, in the order "invalid source" lists them.
        pub const NAMES: &[&str] = &[$(<$kind as Kind>::NAME),*];

        impl SourceSpec {
            /// Validate a rule whose `source = word`: `None` when no kind
            /// has that name, else the spec and `above` (or `None` after
            /// reporting why not).
            pub fn validate(
                word: &str,
                cx: &mut Cx,
                p: &str,
                rule: &RuleInput,
                keys: &toml::Table,
            ) -> Option<Option<(SourceSpec, f64)>> {
                $(if word == <$kind as Kind>::NAME {
                    return Some(
                        validate::<$kind>(cx, p, rule, keys)
                            .map(|(spec, above)| (SourceSpec::$variant(spec), above)),
                    );
                })*
                None
            }

            /// Whether `key` is some kind's key (`None`: no kind's), and
            /// whether `value` has its type (`Err`: serde's message).
            pub fn check_key(key: &str, value: &toml::Value) -> Option<Result<(), String>> {
                $(match one_key::<<$kind as Kind>::Keys>(key, value) {
                    KeyCheck::Unknown => {}
                    KeyCheck::Ok => return Some(Ok(())),
                    KeyCheck::Bad(message) => return Some(Err(message)),
                })*
                None
            }

            /// The word of `source = "..."`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(SourceSpec::$variant(_) => <$kind as Kind>::NAME,)*
                }
            }

            /// Pushed (evaluated when what it reads changes) rather than polled.
            pub fn pushed(&self) -> bool {
                match self {
                    $(SourceSpec::$variant(_) => <$kind as Kind>::PUSHED,)*
                }
            }

            /// Judged on a range of the data rather than poll by poll.
            pub fn ranged(&self) -> bool {
                match self {
                    $(SourceSpec::$variant(_) => <$kind as Kind>::RANGED,)*
                }
            }

            /// The checks that need the daemon's `poll_interval`.
            pub fn check_poll(&self, cx: &mut Cx, p: &str, poll_interval: Duration) {
                match self {
                    $(SourceSpec::$variant(s) => s.check_poll(cx, p, poll_interval),)*
                }
            }

            /// A human description for reports, logs and email, e.g.
            /// `probe GET http://127.0.0.1:3000/health failure_ratio`.
            pub fn describe(&self) -> String {
                match self {
                    $(SourceSpec::$variant(s) => s.describe(),)*
                }
            }

            /// `above_baseline` K, when the rule has a baseline.
            pub fn above_baseline(&self) -> Option<f64> {
                match self {
                    $(SourceSpec::$variant(s) => s.above_baseline(),)*
                }
            }

            /// The longest one sample may take (the watchdog's poll budget).
            pub fn budget(&self, cx: &Context) -> Duration {
                match self {
                    $(SourceSpec::$variant(s) => s.budget(cx),)*
                }
            }
        }

        impl Source {
            /// Build the live source of `spec` from the shared things in `cx`.
            pub fn of(spec: &SourceSpec, cx: &Context) -> Source {
                match spec {
                    $(SourceSpec::$variant(s) => Source::$variant(s.build(cx)),)*
                }
            }

            /// Whether this source, built before a reload, may serve `spec`
            /// with the shared things in `cx` (a source of another kind never).
            pub fn keeps(&self, spec: &SourceSpec, cx: &Context) -> bool {
                #[allow(unreachable_patterns)]
                match (self, spec) {
                    $((Source::$variant(live), SourceSpec::$variant(s)) => s.keeps(live, cx),)*
                    _ => false,
                }
            }

            /// Take this poll's sample. `now` timestamps it.
            pub async fn sample(&mut self, now: DateTime<Utc>) -> Result<f64, SourceError> {
                match self {
                    $(Source::$variant(live) => Observe::sample(live, now).await,)*
                }
            }

            /// What the source saw besides the value, for the rule's report:
            /// for probes, the failures by reason (`3 of 6 probes failed: 2
            /// timed out after 2s, 1 refused; last: refused`).
            pub fn detail(&self) -> Option<String> {
                match self {
                    $(Source::$variant(live) => Observe::detail(live),)*
                }
            }

            /// The window a value is computed over, for explanations.
            pub fn window(&self) -> Option<Duration> {
                match self {
                    $(Source::$variant(live) => Observe::window(live),)*
                }
            }

            /// The Prometheus query behind a range-judged rule.
            pub fn range(&mut self) -> Option<&mut prometheus::PromSource> {
                match self {
                    $(Source::$variant(live) => Observe::range(live),)*
                }
            }
        }
    };
}

kinds! {
    /// A PromQL query, judged on a range of its data.
    Prometheus(prometheus::PromSpec),
    /// One HTTP GET per poll.
    Probe(probe::ProbeSpec),
    /// Host CPU or memory from /proc.
    Host(host::HostMetric),
    /// Alerts pushed by Alertmanager: breached while a matching alert fires.
    Alertmanager(alertmanager::AlertMatch),
}

/// One kind of source, implemented on its spec (what a rule asks for).
/// Every item is required: a new kind states its client, its budget and
/// how it is judged; nothing defaults.
pub trait Kind: Sized + Clone + PartialEq + std::fmt::Debug {
    /// The word of `source = "..."`.
    const NAME: &'static str;
    /// Pushed (read from a local store that wakes the target when it
    /// changes, and at every poll) rather than polled.
    const PUSHED: bool;
    /// Judged on a range of the data (its `for` read from the data's own
    /// timeline, `rules::timeline`), rather than poll by poll; a journaled
    /// `since` is then used only while the range reaches back to it.
    const RANGED: bool;
    /// The kind's own keys of `[[target.rule]]`, as serde reads them:
    /// `deny_unknown_fields`, every field an `Option` (the raw layer
    /// reports a key no kind has as unknown, and a key of another kind
    /// "does not apply").
    type Keys: DeserializeOwned + Default;
    /// The live source, with its history between polls.
    type Live: Observe;

    /// Whether the config can have this kind at all; reports why not.
    fn usable(cx: &mut Cx, p: &str) -> bool;
    /// Validate the kind's keys of the rule at `p`: the spec, and the
    /// threshold `above` the value is compared with.
    fn validate(cx: &mut Cx, p: &str, rule: &RuleInput, keys: Self::Keys) -> Option<(Self, f64)>;
    /// The checks that need the daemon's `poll_interval`.
    fn check_poll(&self, cx: &mut Cx, p: &str, poll_interval: Duration);
    /// A human description for reports, logs and email.
    fn describe(&self) -> String;
    /// `above_baseline` K, shown in reports.
    fn above_baseline(&self) -> Option<f64>;
    /// Build the live source from the shared things in `cx`.
    fn build(&self, cx: &Context) -> Self::Live;
    /// Whether `live`, built before a reload, may be kept with `cx` (it
    /// still asks the same shared client).
    fn keeps(&self, live: &Self::Live, cx: &Context) -> bool;
    /// The longest one sample may take when it uses its whole timeout.
    fn budget(&self, cx: &Context) -> Duration;
}

/// A live source: one sample per poll, and what it saw besides.
pub trait Observe: std::fmt::Debug + Send {
    /// Take this poll's sample. `now` timestamps it.
    fn sample(
        &mut self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<f64, SourceError>> + Send;
    /// What the source saw besides the value, for the rule's report.
    fn detail(&self) -> Option<String>;
    /// The window a value is computed over, for explanations.
    fn window(&self) -> Option<Duration>;
    /// The Prometheus query behind a range-judged rule ([`Kind::RANGED`]);
    /// the rule layer judges it on its timeline (traffic guard, baseline,
    /// absence), which sits above the sources.
    fn range(&mut self) -> Option<&mut prometheus::PromSource>;
}

/// What a kind's validation sees of its rule besides its own keys.
#[derive(Debug, Clone, Copy)]
pub struct RuleInput {
    /// `above`, as written.
    pub above: Option<f64>,
    /// `for`, validated (`None` when it is invalid).
    pub for_: Option<Duration>,
    /// Whether `for` was written (else it is the default).
    pub for_written: bool,
}

/// The shared things a live source may need, passed in by the daemon.
pub struct Context<'a> {
    /// The HTTP client every probe shares.
    pub http: &'a reqwest::Client,
    /// The clients of the Prometheus servers.
    pub prometheus: prometheus::Clients<'a>,
    /// The longest Prometheus `timeout`, for the poll budget.
    pub prometheus_timeout: Duration,
    /// The daemon's `poll_interval` (the smallest useful step of a range query).
    pub poll_interval: Duration,
    /// Where Alertmanager's posts land.
    pub alerts: &'a Arc<alertmanager::AlertStore>,
}

/// Is `key` a key of `T`, and of the right type?
enum KeyCheck {
    Unknown,
    Ok,
    Bad(String),
}

/// `key = value` read alone into `T`.
fn one_key<T: DeserializeOwned>(key: &str, value: &toml::Value) -> KeyCheck {
    let mut one = toml::Table::new();
    one.insert(key.to_string(), value.clone());
    match toml::Value::Table(one).try_into::<T>() {
        Ok(_) => KeyCheck::Ok,
        Err(e) if e.message().starts_with("unknown field") => KeyCheck::Unknown,
        Err(e) => KeyCheck::Bad(e.message().to_string()),
    }
}

/// A rule of kind `K`: usable at all, every key one of `K`'s (else it
/// "does not apply"), then `K`'s own validation.
fn validate<K: Kind>(
    cx: &mut Cx,
    p: &str,
    rule: &RuleInput,
    keys: &toml::Table,
) -> Option<(K, f64)> {
    if !K::usable(cx, p) {
        return None;
    }
    let mut own = toml::Table::new();
    for (key, value) in keys {
        if let KeyCheck::Unknown = one_key::<K::Keys>(key, value) {
            cx.err(
                join(p, key),
                format!("key {key} does not apply to source {:?}", K::NAME),
            );
        } else {
            own.insert(key.clone(), value.clone());
        }
    }
    match toml::Value::Table(own).try_into::<K::Keys>() {
        Ok(keys) => K::validate(cx, p, rule, keys),
        Err(e) => {
            cx.err(p, e.message());
            None
        }
    }
}

/// `above` of a rule whose value is a number: required (`missing` says
/// what to set) and finite.
pub fn above(cx: &mut Cx, p: &str, above: Option<f64>, missing: &str) -> Option<f64> {
    match above {
        None => {
            cx.err(
                join(p, "above"),
                format!("rule has no condition: {missing}"),
            );
            None
        }
        Some(v) if !v.is_finite() => {
            cx.err(
                join(p, "above"),
                format!("above = {v} is not a finite number"),
            );
            None
        }
        Some(v) => Some(v),
    }
}

/// `above` of a value that is a fraction (0..1): an error with a hint
/// when it looks like a percentage.
pub fn fraction(cx: &mut Cx, p: &str, v: f64) -> bool {
    if (0.0..1.0).contains(&v) {
        return true;
    }
    let hint = if v > 1.0 && v <= 100.0 {
        let s = format!("{:.4}", v / 100.0);
        // `0.7` rather than `0.7000000000000001`.
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("; did you mean {s}?")
    } else {
        String::new()
    };
    cx.err(
        join(p, "above"),
        format!("above = {v} is out of range for a fraction (0..1){hint}"),
    );
    false
}

/// The `for = "0s"` warning of a poll-judged kind whose single bad
/// sample (`one`, e.g. "probe") would trigger a rollback.
pub fn warn_zero_for(cx: &mut Cx, p: &str, rule: &RuleInput, one: &str) {
    if rule.for_.is_some_and(|d| d.is_zero()) {
        cx.warn(
            join(p, "for"),
            format!(
                "for = \"0s\"{}: a single bad {one} triggers a rollback; set for to e.g. \"30s\"",
                if rule.for_written {
                    ""
                } else {
                    " (the default)"
                },
            ),
        );
    }
}

impl Source {
    /// Build the source for a rule with one Prometheus client for every
    /// server (tests and benches; the daemon builds a [`Context`]).
    /// `client` is shared by all probes; `poll_interval` is the smallest
    /// useful step of a baseline's range query.
    pub fn build(
        spec: &SourceSpec,
        client: &reqwest::Client,
        prometheus: Option<&prometheus::Prometheus>,
        poll_interval: Duration,
        alerts: &Arc<alertmanager::AlertStore>,
    ) -> Source {
        Source::of(
            spec,
            &Context {
                http: client,
                prometheus: prometheus::Clients::One(prometheus),
                prometheus_timeout: Duration::ZERO,
                poll_interval,
                alerts,
            },
        )
    }
}
