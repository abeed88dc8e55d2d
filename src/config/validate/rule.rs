//! Validation of `[[target.rule]]`: the rule keys shared by every source, probe and host rules, and the reachability of `min_samples`.

use super::*;

pub(super) fn rule(cx: &mut Cx, p: &str, raw: &RawRule) -> Option<RuleConfig> {
    let name = cx
        .required(p, "name", raw.name.as_deref())
        .and_then(|n| cx.non_empty(&join(p, "name"), n));
    let for_ = cx.duration(p, "for", raw.for_.as_deref(), DEFAULT_FOR, false);
    let shadow = cx.choice(
        p,
        "mode",
        raw.mode.as_deref(),
        &[("act", false), ("shadow", true)],
    );

    let source = match cx.required(p, "source", raw.source.as_deref())? {
        "probe" => Source::Probe,
        "host" => Source::Host,
        "prometheus" => {
            if !cx.has_prometheus {
                cx.err(
                    join(p, "source"),
                    "source \"prometheus\" needs a [prometheus] section with the server's url",
                );
                return None;
            }
            Source::Prometheus
        }
        "alertmanager" => Source::Alertmanager,
        other => {
            cx.err(
                join(p, "source"),
                format!("invalid source {other:?} (use \"prometheus\", \"probe\", \"host\" or \"alertmanager\")"),
            );
            return None;
        }
    };
    let (source_name, own_keys): (&str, &[&str]) = match source {
        Source::Probe => (
            "probe",
            &[
                "url",
                "timeout",
                "expect_status",
                "measure",
                "window",
                "min_samples",
            ],
        ),
        Source::Host => ("host", &["metric"]),
        Source::Alertmanager => ("alertmanager", &[]),
        Source::Prometheus => (
            "prometheus",
            &[
                "query",
                "above_baseline",
                "baseline_window",
                "baseline_query",
                "traffic_query",
                "min_traffic",
                "step",
                "prometheus",
            ],
        ),
    };
    if raw.match_.is_some() && !matches!(source, Source::Alertmanager) {
        cx.err(
            join(p, "match"),
            format!("key match does not apply to source {source_name:?}"),
        );
    }
    for key in raw.source_keys_set() {
        if !own_keys.contains(&key) {
            cx.err(
                join(p, key),
                format!("key {key} does not apply to source {source_name:?}"),
            );
        }
    }
    let no_data = match raw.no_data.as_deref() {
        None => Some(None),
        Some(word) => cx
            .choice(
                p,
                "no_data",
                Some(word),
                &[
                    ("hold", NoData::Hold),
                    ("ok", NoData::Ok),
                    ("breach", NoData::Breach),
                ],
            )
            .map(Some),
    };
    if matches!(source, Source::Alertmanager) {
        return alertmanager_rule(cx, p, raw, name, for_, no_data).and_then(|r| {
            Some(RuleConfig {
                shadow: shadow?,
                ..r
            })
        });
    }

    let above = match raw.above {
        // A baseline rule needs no absolute floor.
        None if matches!(source, Source::Prometheus) && raw.above_baseline.is_some() => {
            Some(f64::NEG_INFINITY)
        }
        None if matches!(source, Source::Prometheus) => {
            cx.err(
                join(p, "above"),
                "rule has no condition: set above, above_baseline or both",
            );
            None
        }
        None => {
            cx.err(join(p, "above"), "rule has no condition: set above");
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
    };
    let fraction = |cx: &mut Cx, v: f64| {
        if (0.0..1.0).contains(&v) {
            return true;
        }
        let hint = if v > 1.0 && v <= 100.0 {
            format!("; did you mean {}?", suggest_fraction(v))
        } else {
            String::new()
        };
        cx.err(
            join(p, "above"),
            format!("above = {v} is out of range for a fraction (0..1){hint}"),
        );
        false
    };

    let spec = match source {
        Source::Probe => {
            let url = cx
                .required(p, "url", raw.url.as_deref())
                .and_then(|u| cx.http_url(&join(p, "url"), u));
            let timeout = cx.duration(
                p,
                "timeout",
                raw.timeout.as_deref(),
                DEFAULT_PROBE_TIMEOUT,
                true,
            );
            let expect_status = cx.status(&join(p, "expect_status"), raw.expect_status);
            let measure = cx.choice(
                p,
                "measure",
                raw.measure.as_deref(),
                &[
                    ("failure_ratio", ProbeMeasure::FailureRatio),
                    ("latency", ProbeMeasure::Latency),
                ],
            );
            let window = cx.duration(
                p,
                "window",
                raw.window.as_deref(),
                DEFAULT_PROBE_WINDOW,
                true,
            );
            let in_range = match (measure, above) {
                (Some(ProbeMeasure::FailureRatio), Some(v)) => fraction(cx, v),
                (Some(ProbeMeasure::Latency), Some(v)) if v <= 0.0 => {
                    cx.err(
                        join(p, "above"),
                        format!("above = {v} must be greater than 0 (latency in seconds)"),
                    );
                    false
                }
                _ => true,
            };
            let min_samples = match raw.min_samples {
                None => Some(DEFAULT_MIN_SAMPLES),
                Some(n) => match usize::try_from(n) {
                    Ok(n) if n >= 1 => Some(n),
                    _ => {
                        cx.err(
                            join(p, "min_samples"),
                            format!("min_samples = {n} must be at least 1"),
                        );
                        None
                    }
                },
            };
            if let Some(u) = &url {
                let loopback = match u.host() {
                    Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                    Some(url::Host::Ipv4(a)) => a.is_loopback(),
                    Some(url::Host::Ipv6(a)) => a.is_loopback(),
                    None => false,
                };
                if !loopback && raw.timeout.is_none() {
                    cx.warn(
                        join(p, "url"),
                        format!(
                            "probe of {}, which is not on this host, has no timeout set (default {DEFAULT_PROBE_TIMEOUT}); set timeout to what a healthy answer over the network takes",
                            crate::util::redact_url(u)
                        ),
                    );
                }
            }
            let spec = ProbeSpec {
                url: url?,
                timeout: timeout?,
                expect_status: expect_status?,
                measure: measure?,
                window: window?,
                min_samples: min_samples?,
            };
            in_range.then_some(SourceSpec::Probe(spec))
        }
        Source::Host => {
            let metric = cx
                .required(p, "metric", raw.metric.as_deref())
                .and_then(|m| {
                    cx.choice(
                        p,
                        "metric",
                        Some(m),
                        &[("cpu", HostMetric::Cpu), ("memory", HostMetric::Memory)],
                    )
                });
            let in_range = above.is_none_or(|v| fraction(cx, v));
            in_range.then_some(SourceSpec::Host(metric?))
        }
        Source::Alertmanager => None,
        Source::Prometheus => prom_spec(cx, p, raw).map(SourceSpec::Prometheus),
    };
    if for_.is_some_and(|d| d.is_zero()) && matches!(source, Source::Probe | Source::Host) {
        cx.warn(
            join(p, "for"),
            format!(
                "for = \"0s\"{}: a single bad {} triggers a rollback; set for to e.g. \"30s\"",
                if raw.for_.is_none() {
                    " (the default)"
                } else {
                    ""
                },
                if matches!(source, Source::Probe) {
                    "probe"
                } else {
                    "host sample"
                }
            ),
        );
    }
    Some(RuleConfig {
        name: name?,
        source: spec?,
        above: above?,
        for_: for_?,
        no_data: no_data?,
        shadow: shadow?,
    })
}

/// A probe rule's window must be able to hold `min_samples` probes at the
/// daemon's poll interval (one probe per poll), also while the service
/// hangs and every probe uses its whole `timeout`, or the rule is Unknown
/// exactly when it matters ([`crate::config::probe_window`]).
pub(super) fn reachable_min_samples(
    cx: &mut Cx,
    p: &str,
    rule: &RuleConfig,
    poll_interval: Duration,
) {
    let SourceSpec::Probe(probe) = &rule.source else {
        return;
    };
    if let Some(why) = crate::config::probe_window::unreachable(
        probe.min_samples,
        probe.window,
        probe.timeout,
        poll_interval,
    ) {
        cx.err(join(p, "min_samples"), why);
    }
}

/// An Alertmanager rule: the value is the number of matching firing
/// alerts, breached when above 0; `above` does not apply.
pub(super) fn alertmanager_rule(
    cx: &mut Cx,
    p: &str,
    raw: &RawRule,
    name: Option<String>,
    for_: Option<Duration>,
    no_data: Option<Option<NoData>>,
) -> Option<RuleConfig> {
    if raw.above.is_some() {
        cx.err(
            join(p, "above"),
            "key above does not apply to source \"alertmanager\" (breached while a matching alert fires)",
        );
    }
    let m = alert_match(cx, p, raw);
    Some(RuleConfig {
        name: name?,
        source: SourceSpec::Alertmanager(m?),
        above: 0.0,
        for_: for_?,
        no_data: no_data?,
        shadow: false,
    })
}
