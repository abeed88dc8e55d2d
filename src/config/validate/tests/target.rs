//! A target and its defaults: version source, windows, template placeholders.

use super::*;

#[test]
fn minimal_config_gets_the_defaults() {
    let c = load_str("min.toml", &config(&[])).unwrap();
    let d = &c.daemon;
    assert_eq!(d.state_dir, PathBuf::from("/var/lib/rollbackd"));
    assert_eq!(d.listen, "127.0.0.1:9797".parse().unwrap());
    assert_eq!(d.poll_interval, Duration::from_secs(5));
    assert!(!d.dry_run);
    assert_eq!(d.api_token_file, None);
    assert_eq!(d.public_url, None);
    assert!(c.notify.email.is_none());
    assert!(c.windows.is_empty());

    let t = &c.targets[0];
    assert_eq!(t.name, "web");
    assert_eq!(t.version, None);
    assert_eq!(t.cooldown, Duration::from_secs(30 * 60));
    assert_eq!(t.max_rollbacks_per_hour.get(), 1);
    assert_eq!(t.no_data, NoData::Hold);
    assert_eq!(
        t.rules,
        vec![RuleConfig {
            name: "health".into(),
            source: SourceSpec::Probe(ProbeSpec {
                url: "http://127.0.0.1:3000/health".parse().unwrap(),
                timeout: Duration::from_secs(2),
                expect_status: None,
                measure: ProbeMeasure::FailureRatio,
                window: Duration::from_secs(30),
                min_samples: 3,
            }),
            above: 0.5,
            for_: Duration::ZERO,
            no_data: None,
            shadow: false,
        }]
    );
    assert_eq!(
        t.rollback,
        RollbackPlan {
            kind: ExecutorKind::Command(crate::execute::command::Config {
                steps: vec![vec!["systemctl".into(), "restart".into(), "web".into()].into()]
            }),
            timeout: Duration::from_secs(300),
            after: vec![],
            pre: vec![],
            step_timeout: None,
            on_failure: vec![],
            cwd: None,
            env: Default::default(),
        }
    );
    assert_eq!(
        t.verify,
        VerifyConfig {
            within: Duration::from_secs(300),
            url: None,
            expect_status: None,
            rules: true,
            checks: vec![],
            commands: vec![],
        }
    );

    // The outbox defaults to state_dir/outbox.
    let c = load_str(
        "min.toml",
        &config(&[
            (
                "top",
                "[notify.email]\nfrom = \"r@h\"\nto = [\"a@example.com\"]",
            ),
            ("daemon", "state_dir = \"/tmp/rb\""),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.notify.email.unwrap().outbox_dir,
        PathBuf::from("/tmp/rb/outbox")
    );
}

#[test]
fn version_source() {
    let symlink =
        "kind = \"symlink\"\ncurrent = \"/srv/app/current\"\nreleases = \"/srv/app/releases\"";
    let c = load_str("t", &config(&[("rollback", symlink)])).unwrap();
    assert_eq!(
        c.targets[0].version,
        Some(VersionSource::Symlink("/srv/app/current".into()))
    );
    let c = load_str(
        "t",
        &config(&[
            ("rollback", symlink),
            (
                "target",
                "version_command = [\"cat\", \"/srv/app/VERSION\"]",
            ),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.targets[0].version,
        Some(VersionSource::Command(vec![
            "cat".into(),
            "/srv/app/VERSION".into()
        ]))
    );
}

#[test]
fn window_values() {
    let c = load_str(
        "t",
        &config(&[(
            "top",
            "[[window]]\nname = \"w\"\ndays = [\"fri\", \"sat\"]\nstart = \"22:00\"\nend = \"02:30\"\ntimezone = \"Asia/Shanghai\"",
        )]),
    )
    .unwrap();
    let w = &c.windows[0];
    assert_eq!(w.days, vec![chrono::Weekday::Fri, chrono::Weekday::Sat]);
    assert_eq!(w.start, chrono::NaiveTime::from_hms_opt(22, 0, 0).unwrap());
    assert_eq!(w.end, chrono::NaiveTime::from_hms_opt(2, 30, 0).unwrap());
    assert_eq!(w.timezone, chrono_tz::Asia::Shanghai);
}

#[test]
fn template_placeholders() {
    assert_eq!(template_names("{to_version}"), vec!["to_version"]);
    assert_eq!(
        template_names("a{target}-{incident}b"),
        vec!["target", "incident"]
    );
    assert_eq!(template_names(r#"{"a": 1}"#), Vec::<&str>::new());
    assert_eq!(template_names("{"), Vec::<&str>::new());
    assert_eq!(template_names("{{x}}"), vec!["x"]);
    assert_eq!(template_names("${HOME}"), vec!["HOME"]);
}
