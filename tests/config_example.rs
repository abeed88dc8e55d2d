//! The shipped example config must stay valid and mean what its comments say.

use std::path::Path;
use std::time::Duration;

use rollbackd::config::{self, ExecutorKind, HostMetric, NoData, ProbeMeasure, SourceSpec};

#[test]
fn example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rollbackd.example.toml");
    let config = config::load(&path).unwrap_or_else(|e| panic!("example config invalid:\n{e}"));

    assert_eq!(config.daemon.poll_interval, Duration::from_secs(5));
    assert!(config.daemon.listen.ip().is_loopback());
    let email = config.notify.email.as_ref().expect("email configured");
    assert_eq!(email.to.len(), 1);

    assert_eq!(config.windows.len(), 1);
    assert_eq!(config.windows[0].timezone, chrono_tz::Asia::Shanghai);

    assert_eq!(config.targets.len(), 1);
    let t = &config.targets[0];
    assert_eq!(t.no_data, NoData::Hold);
    assert!(matches!(t.rollback.kind, ExecutorKind::Symlink(_)));
    assert_eq!(
        t.version,
        Some(config::VersionSource::Symlink(
            "/srv/frontend/current".into()
        ))
    );
    let sources: Vec<_> = t
        .rules
        .iter()
        .map(|r| (r.name.as_str(), &r.source))
        .collect();
    assert!(
        matches!(sources[0], ("health", SourceSpec::Probe(p)) if p.measure == ProbeMeasure::FailureRatio)
    );
    assert!(
        matches!(sources[1], ("latency", SourceSpec::Probe(p)) if p.measure == ProbeMeasure::Latency)
    );
    assert_eq!(sources[2], ("cpu", &SourceSpec::Host(HostMetric::Cpu)));
    assert_eq!(t.rules[2].above, 0.70);
    assert_eq!(
        sources[3],
        ("memory", &SourceSpec::Host(HostMetric::Memory))
    );
    assert_eq!(t.rules[3].above, 0.80);
    assert!(t.verify.url.is_some() && t.verify.rules);
    // Verification gates, on_failure and step context (issue #12).
    assert_eq!(t.verify.checks.len(), 2);
    assert_eq!(
        t.verify.checks[1].max_latency,
        Some(Duration::from_millis(500))
    );
    assert_eq!(t.verify.commands[0].timeout, Some(Duration::from_secs(10)));
    assert_eq!(t.rollback.on_failure[0].argv[0], "sh");
    assert_eq!(t.rollback.cwd.as_deref(), Some(Path::new("/srv/frontend")));
    assert_eq!(
        t.rollback.env.get("NODE_ENV").map(String::as_str),
        Some("production")
    );

    // The evidence keys (issue #9).
    let rule = |name: &str| t.rules.iter().find(|r| r.name == name).unwrap();
    let SourceSpec::Probe(health) = &rule("health").source else {
        panic!("health is a probe")
    };
    assert_eq!(health.min_samples, 3);
    let SourceSpec::Prometheus(ratio) = &rule("http-5xx-rate").source else {
        panic!("http-5xx-rate is a prometheus rule")
    };
    assert_eq!(ratio.step, Some(Duration::from_secs(5)));
    assert_eq!(ratio.traffic.as_ref().map(|g| g.min), Some(1.0));
    assert_eq!(rule("http-5xx-rate").no_data, None);
    assert_eq!(rule("down").no_data, Some(NoData::Breach));

    // Issue #12: a shadow rule, per-target routing, max_pause, no warnings.
    assert!(rule("p99-latency").shadow);
    assert!(!rule("health").shadow);
    assert_eq!(t.notify.min_severity, config::Severity::Info);
    assert_eq!(t.notify.cc.len(), 1);
    assert_eq!(t.notify.to, None);
    assert_eq!(config.daemon.max_pause, Duration::from_secs(24 * 3600));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

/// The commented-out `[cluster]` section is valid once uncommented.
#[test]
fn example_cluster_section_is_valid_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rollbackd.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut inside = false;
    let uncommented: Vec<String> = text
        .lines()
        .map(|line| {
            if line == "# [cluster]" {
                inside = true;
            } else if !line.starts_with("# ") {
                inside = false;
            }
            match line.strip_prefix("# ") {
                Some(rest) if inside => rest.to_string(),
                _ => line.to_string(),
            }
        })
        .collect();
    let config = config::load_str("example", &uncommented.join("\n"))
        .unwrap_or_else(|e| panic!("uncommented [cluster] invalid:\n{e}"));
    let c = config.cluster.expect("the [cluster] section");
    assert_eq!(c.etcd.len(), 3);
    assert_eq!(c.lease_ttl, Duration::from_secs(10));
    assert_eq!(c.on_etcd_down, config::OnEtcdDown::Hold);
    assert!(c.auth.is_some() && c.client_cert.is_some() && c.ca_file.is_some());
}
