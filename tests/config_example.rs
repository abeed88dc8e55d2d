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
    assert!(matches!(t.rollback.kind, ExecutorKind::Symlink { .. }));
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
}

/// A commented-out `key = value` line, uncommented.
fn commented_key(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("# ")?;
    let (key, _) = rest.split_once('=')?;
    let key = key.trim();
    let is_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    is_key.then_some(rest)
}

/// Every "(not supported yet)" line or section of the example, uncommented,
/// must be rejected as not supported yet rather than silently accepted or
/// reported as an unknown key.
#[test]
fn commented_out_features_are_really_not_supported_yet() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rollbackd.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut checked = 0;
    for (i, line) in lines.iter().enumerate() {
        if !line.trim_start().starts_with("# ") || !line.contains("(not supported yet)") {
            continue;
        }
        let mut edited: Vec<&str> = lines.clone();
        let uncommented = line.trim_start().trim_start_matches("# ");
        edited[i] = uncommented;
        if uncommented.starts_with('[') {
            // A section: uncomment its keys too.
            for (j, next) in lines.iter().enumerate().skip(i + 1) {
                match commented_key(next) {
                    Some(key_line) => edited[j] = key_line,
                    None => break,
                }
            }
        } else {
            // An alternative to a key set above: drop the live one.
            let key = uncommented.split('=').next().unwrap().trim();
            if let Some(j) = (0..i).rev().find(|&j| {
                let l = lines[j].trim_start();
                l.starts_with(key) && l[key.len()..].trim_start().starts_with('=')
            }) {
                edited[j] = "";
            }
        }
        let edited = edited.join("\n");
        let errors = config::load_str("example", &edited)
            .err()
            .unwrap_or_else(|| panic!("line {}: {uncommented:?} was accepted", i + 1));
        assert!(
            errors
                .0
                .iter()
                .all(|e| e.message.starts_with("not supported yet")),
            "line {}: {uncommented:?}:\n{errors}",
            i + 1
        );
        checked += 1;
    }
    assert!(checked >= 1, "no not-supported lines found");
}
