//! What `[prometheus]` and a `source = "prometheus"` rule say: the
//! servers' settings, the rule's spec and keys, their validation, and the
//! [`Kind`] that registers the source. The client and the live source are
//! in the parent file.

use std::path::PathBuf;
use std::time::Duration;

use super::{PromSource, Prometheus};
use crate::config::cx::{join, Cx};
use crate::sources::{Kind, RuleInput};

/// The name of the server `[prometheus]` defines, in messages and
/// `prometheus = "NAME"` (which may name it explicitly).
pub const DEFAULT_PROMETHEUS: &str = "default";

/// Default `rule.baseline_window`.
pub const DEFAULT_BASELINE_WINDOW: &str = "1h";

/// The smallest `step` of a Prometheus rule (and useful `poll_interval`).
pub const MIN_STEP: Duration = Duration::from_millis(100);

/// `[prometheus]`. Secrets are named by file and read when the daemon starts
/// (validation does no I/O).
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://127.0.0.1:9090`.
    pub url: url::Url,
    /// HTTP timeout of one query, connect to end of body.
    pub timeout: Duration,
    /// Basic auth or bearer token, if Prometheus sits behind a proxy that wants one.
    pub auth: Option<PrometheusAuth>,
    /// Extra request headers (e.g. `X-Scope-OrgID` for Mimir/Cortex).
    pub headers: Vec<(String, String)>,
    /// Unreachable (refused, timed out) this long: one notification for the
    /// server, instead of one "blind" notice per target.
    pub blind_after: Duration,
}

/// How rollbackd authenticates to Prometheus.
#[derive(Debug, Clone, PartialEq)]
pub enum PrometheusAuth {
    /// `username` + `password_file`.
    Basic {
        /// User name.
        username: String,
        /// File holding the password (trailing newline ignored).
        password_file: PathBuf,
    },
    /// `bearer_token_file`.
    Bearer {
        /// File holding the token (trailing newline ignored).
        token_file: PathBuf,
    },
}

/// `source = "prometheus"`.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSpec {
    /// PromQL; several result series breach when any does.
    pub query: String,
    /// `above_baseline`: the value must also exceed K x its baseline.
    pub baseline: Option<BaselineSpec>,
    /// `traffic_query` + `min_traffic`: below the minimum the rule is Unknown.
    pub traffic: Option<TrafficGuard>,
    /// `step`: the resolution of the range query `for` is judged on;
    /// `None` is the daemon's `poll_interval`.
    pub step: Option<Duration>,
    /// `prometheus = "NAME"`: the server asked; `None` is `[prometheus]`.
    pub server: Option<String>,
}

/// `traffic_query` + `min_traffic`: the rule's value means something only
/// while there is at least this much traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficGuard {
    /// PromQL giving the traffic (e.g. requests per second); the sum of its
    /// series is compared.
    pub query: String,
    /// Below this (or empty, or NaN) the rule is Unknown.
    pub min: f64,
}

/// `above_baseline = K`, `baseline_window`, `baseline_query`.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineSpec {
    /// K: breach when value > K x baseline.
    pub factor: f64,
    /// The median is taken over this window before the release (default 1h).
    pub window: Duration,
    /// Query the baseline is taken from; default the rule's own query.
    pub query: Option<String>,
}

/// The keys of a `source = "prometheus"` rule.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromKeys {
    /// PromQL query.
    pub query: Option<String>,
    /// Breach when the value is above K x its baseline.
    pub above_baseline: Option<f64>,
    /// Duration string, the baseline's window.
    pub baseline_window: Option<String>,
    /// The query the baseline is taken from.
    pub baseline_query: Option<String>,
    /// PromQL giving the traffic the rule's value needs.
    pub traffic_query: Option<String>,
    /// Below this traffic the rule is Unknown.
    pub min_traffic: Option<f64>,
    /// Duration string, the range query's step for `for`.
    pub step: Option<String>,
    /// The named server asked (`[prometheus.servers.NAME]`).
    pub prometheus: Option<String>,
}

/// The clients of the Prometheus servers, as the daemon holds them.
#[derive(Debug, Clone, Copy)]
pub enum Clients<'a> {
    /// One client for every server (tests and benches).
    One(Option<&'a Prometheus>),
    /// One client per server name ([`DEFAULT_PROMETHEUS`] is `[prometheus]`).
    Named(&'a std::collections::BTreeMap<String, Prometheus>),
}

impl<'a> Clients<'a> {
    /// The client of server `name` (`None`: `[prometheus]`).
    pub fn get(self, name: Option<&str>) -> Option<&'a Prometheus> {
        match self {
            Clients::One(p) => p,
            Clients::Named(m) => m.get(name.unwrap_or(DEFAULT_PROMETHEUS)),
        }
    }
}

impl Kind for PromSpec {
    const NAME: &'static str = "prometheus";
    const PUSHED: bool = false;
    const RANGED: bool = true;
    type Keys = PromKeys;
    type Live = PromSource;

    fn usable(cx: &mut Cx, p: &str) -> bool {
        if !cx.has_prometheus {
            cx.err(
                join(p, "source"),
                "source \"prometheus\" needs a [prometheus] section with the server's url",
            );
        }
        cx.has_prometheus
    }

    fn validate(cx: &mut Cx, p: &str, rule: &RuleInput, keys: PromKeys) -> Option<(Self, f64)> {
        let above = match rule.above {
            // A baseline rule needs no absolute floor.
            None if keys.above_baseline.is_some() => Some(f64::NEG_INFINITY),
            above => crate::sources::above(cx, p, above, "set above, above_baseline or both"),
        };
        Some((prom_spec(cx, p, &keys)?, above?))
    }

    fn check_poll(&self, _: &mut Cx, _: &str, _: Duration) {}

    fn describe(&self) -> String {
        match &self.baseline {
            None => format!("prometheus {}", self.query),
            Some(b) => format!(
                "prometheus {} (baseline: median over {}{})",
                self.query,
                crate::util::fmt_duration(b.window),
                b.query
                    .as_ref()
                    .map(|q| format!(" of {q}"))
                    .unwrap_or_default()
            ),
        }
    }

    fn above_baseline(&self) -> Option<f64> {
        self.baseline.as_ref().map(|b| b.factor)
    }

    fn build(&self, cx: &crate::sources::Context) -> PromSource {
        PromSource::build(
            self.clone(),
            cx.prometheus.get(self.server.as_deref()).cloned(),
            cx.poll_interval,
        )
    }

    /// Kept only while it still asks the same client (a server whose url
    /// or auth changed gets a new one).
    fn keeps(&self, live: &PromSource, cx: &crate::sources::Context) -> bool {
        match cx.prometheus.get(self.server.as_deref()) {
            Some(c) => live.prometheus().is_some_and(|o| o.same(c)),
            None => true,
        }
    }

    fn budget(&self, cx: &crate::sources::Context) -> Duration {
        cx.prometheus_timeout
    }
}

/// The keys of a `source = "prometheus"` rule.
fn prom_spec(cx: &mut Cx, p: &str, raw: &PromKeys) -> Option<PromSpec> {
    let query = cx
        .required(p, "query", raw.query.as_deref())
        .and_then(|q| promql(cx, &join(p, "query"), q));
    let baseline = match raw.above_baseline {
        None => {
            for (key, set) in [
                ("baseline_window", raw.baseline_window.is_some()),
                ("baseline_query", raw.baseline_query.is_some()),
            ] {
                if set {
                    cx.err(join(p, key), format!("{key} needs above_baseline"));
                }
            }
            (raw.baseline_window.is_none() && raw.baseline_query.is_none()).then_some(None)
        }
        Some(k) => {
            let factor = if k.is_finite() && k > 0.0 {
                Some(k)
            } else {
                cx.err(
                    join(p, "above_baseline"),
                    format!("above_baseline = {k} must be a number greater than 0 (e.g. 3.0 for 3 x baseline)"),
                );
                None
            };
            let window = cx.duration(
                p,
                "baseline_window",
                raw.baseline_window.as_deref(),
                DEFAULT_BASELINE_WINDOW,
                true,
            );
            let bq = match raw.baseline_query.as_deref() {
                None => Some(None),
                Some(q) => promql(cx, &join(p, "baseline_query"), q).map(Some),
            };
            Some(Some(BaselineSpec {
                factor: factor?,
                window: window?,
                query: bq?,
            }))
        }
    };
    let traffic = match (raw.traffic_query.as_deref(), raw.min_traffic) {
        (None, None) => Some(None),
        (Some(_), None) => {
            cx.err(
                join(p, "min_traffic"),
                "traffic_query needs min_traffic (the least traffic the rule's value means something at)",
            );
            None
        }
        (None, Some(_)) => {
            cx.err(
                join(p, "traffic_query"),
                "min_traffic needs traffic_query (PromQL giving the traffic, e.g. requests per second)",
            );
            None
        }
        (Some(q), Some(min)) => {
            let q = promql(cx, &join(p, "traffic_query"), q);
            let min = if min.is_finite() && min >= 0.0 {
                Some(min)
            } else {
                cx.err(
                    join(p, "min_traffic"),
                    format!("min_traffic = {min} must be a finite number, 0 or more"),
                );
                None
            };
            Some(Some(TrafficGuard {
                query: q?,
                min: min?,
            }))
        }
    };
    let step = match raw.step.as_deref() {
        None => Some(None),
        Some(text) => match cx.duration(p, "step", Some(text), "0s", true) {
            Some(d) if d < MIN_STEP => {
                cx.err(
                    join(p, "step"),
                    format!(
                        "step = {text:?} is below the smallest step of {}ms",
                        MIN_STEP.as_millis()
                    ),
                );
                None
            }
            d => d.map(Some),
        },
    };
    let server = server_ref(cx, p, "prometheus", raw.prometheus.as_deref());
    Some(PromSpec {
        query: query?,
        baseline: baseline?,
        traffic: traffic?,
        step: step?,
        server: server?,
    })
}

/// A non-empty PromQL string at `path`.
pub fn promql(cx: &mut Cx, path: &str, value: &str) -> Option<String> {
    cx.non_empty(path, value).map(|q| q.trim().to_string())
}

/// The servers a rule may name, for error messages: `"default", "eu"`.
pub fn known_servers(cx: &Cx) -> String {
    let mut names: Vec<String> = Vec::new();
    if cx.prom_default {
        names.push(format!("{DEFAULT_PROMETHEUS:?}"));
    }
    names.extend(cx.prom_servers.iter().map(|n| format!("{n:?}")));
    names.join(", ")
}

/// `key = "NAME"` at `p` (a rule's `prometheus`, a target's
/// `version_prometheus`): `Some(None)` for the default server (absent or
/// `"default"`), `Some(Some(name))` for a named one. An unknown name, or
/// no name while `[prometheus]` has no url, is an error listing the servers.
pub fn server_ref(cx: &mut Cx, p: &str, key: &str, name: Option<&str>) -> Option<Option<String>> {
    match name {
        None | Some(DEFAULT_PROMETHEUS) if cx.prom_default => Some(None),
        None | Some(DEFAULT_PROMETHEUS) => {
            let known = known_servers(cx);
            cx.err(
                join(p, key),
                format!("[prometheus] has no url (no default server), so name one: {key} = one of {known}"),
            );
            None
        }
        Some(n) if cx.prom_servers.iter().any(|s| s == n) => Some(Some(n.to_string())),
        Some(n) => {
            let known = known_servers(cx);
            cx.err(
                join(p, key),
                format!("unknown Prometheus server {n:?} (known: {known})"),
            );
            None
        }
    }
}
