//! `[[prometheus]]` servers and the rules and version sources that query them.

use super::*;

#[test]
fn prometheus_rules_and_version_sources_are_typed() {
    let text = config(&[
        (
            "top",
            "[prometheus]\nurl = \"http://127.0.0.1:9090\"\nusername = \"u\"\npassword_file = \"/etc/p\"\nheaders = { X-Scope-OrgID = \"t1\" }",
        ),
        (
            "target",
            "version_query = \"app_build_info\"\nonly_within = \"2h\"",
        ),
        (
            "rule",
            "name = \"p99\"\nsource = \"prometheus\"\nquery = \"q\"\nabove_baseline = 3.0\nbaseline_query = \"bq\"\nfor = \"1m\"",
        ),
    ]);
    let c = load_str("p.toml", &text).unwrap();
    let p = c.prometheus.unwrap();
    assert_eq!(p.timeout, Duration::from_secs(3));
    assert_eq!(
        p.auth,
        Some(PrometheusAuth::Basic {
            username: "u".into(),
            password_file: "/etc/p".into()
        })
    );
    assert_eq!(p.headers, vec![("X-Scope-OrgID".into(), "t1".into())]);
    let t = &c.targets[0];
    assert_eq!(
        t.version,
        Some(VersionSource::Query {
            query: "app_build_info".into(),
            label: "version".into(),
            server: None,
        })
    );
    assert_eq!(t.only_within, Some(Duration::from_secs(7200)));
    assert_eq!(t.blind_after, Duration::from_secs(300));
    let r = &t.rules[0];
    assert_eq!(r.above, f64::NEG_INFINITY);
    assert_eq!(
        r.source,
        SourceSpec::Prometheus(PromSpec {
            query: "q".into(),
            baseline: Some(BaselineSpec {
                factor: 3.0,
                window: Duration::from_secs(3600),
                query: Some("bq".into()),
            }),
            traffic: None,
            step: None,
            server: None,
        })
    );
    assert_eq!(r.no_data, None);

    // The evidence keys of issue #9: per-rule no_data, traffic guard, step.
    let text = config(&[
        ("top", "[prometheus]\nurl = \"http://127.0.0.1:9090\""),
        (
            "rule",
            "name = \"up\"\nsource = \"prometheus\"\nquery = \"q\"\nabove = 0.05\nno_data = \"breach\"\ntraffic_query = \" sum(rate(t[1m])) \"\nmin_traffic = 1.5\nstep = \"250ms\"",
        ),
    ]);
    let c = load_str("p.toml", &text).unwrap();
    let r = &c.targets[0].rules[0];
    assert_eq!(r.no_data, Some(NoData::Breach));
    let SourceSpec::Prometheus(p) = &r.source else {
        panic!("{r:?}")
    };
    assert_eq!(
        p.traffic,
        Some(TrafficGuard {
            query: "sum(rate(t[1m]))".into(),
            min: 1.5
        })
    );
    assert_eq!(p.step, Some(Duration::from_millis(250)));
    let text = config(&[(
        "rule",
        "name = \"p\"\nsource = \"probe\"\nurl = \"http://h/\"\nabove = 0.5\nmin_samples = 5\nno_data = \"ok\"",
    )]);
    let r = &load_str("p.toml", &text).unwrap().targets[0].rules[0];
    assert_eq!(r.no_data, Some(NoData::Ok));
    let SourceSpec::Probe(p) = &r.source else {
        panic!("{r:?}")
    };
    assert_eq!(p.min_samples, 5);

    let text = config(&[(
        "target",
        "version_url = \"http://h/v\"\nversion_json_pointer = \"/build/v\"",
    )]);
    let c = load_str("u.toml", &text).unwrap();
    assert_eq!(
        c.targets[0].version,
        Some(VersionSource::Url {
            url: "http://h/v".parse().unwrap(),
            json_pointer: Some("/build/v".into())
        })
    );
}

#[test]
fn several_prometheus_servers() {
    // Named servers beside the default; each with its own keys.
    let top = "[prometheus]\nurl = \"http://127.0.0.1:9090\"\n\
                   [prometheus.servers.eu]\nurl = \"http://10.0.0.9:9090\"\ntimeout = \"5s\"\n\
                   bearer_token_file = \"/etc/rollbackd/eu-token\"\nblind_after = \"2m\"\n\
                   headers = { X-Scope-OrgID = \"eu\" }\n\
                   [prometheus.servers.us-east]\nurl = \"http://10.1.0.9:9090\"\n";
    let rule = |server: &str| {
        format!("name = \"errors\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0\n{server}")
    };
    let text = config(&[
        ("top", top),
        ("rule", &rule("prometheus = \"eu\"")),
        (
            "target",
            "version_query = \"build_info\"\nversion_prometheus = \"us-east\"",
        ),
    ]);
    let c = load_str("p.toml", &text).unwrap();
    assert_eq!(
        c.prometheus.as_ref().unwrap().blind_after,
        Duration::from_secs(300)
    );
    let eu = &c.prometheus_servers["eu"];
    assert_eq!(eu.url.as_str(), "http://10.0.0.9:9090/");
    assert_eq!(eu.timeout, Duration::from_secs(5));
    assert_eq!(eu.blind_after, Duration::from_secs(120));
    assert_eq!(
        eu.auth,
        Some(PrometheusAuth::Bearer {
            token_file: "/etc/rollbackd/eu-token".into()
        })
    );
    assert_eq!(eu.headers, vec![("X-Scope-OrgID".into(), "eu".into())]);
    assert_eq!(
        c.prometheus_servers["us-east"].timeout,
        Duration::from_secs(3)
    );
    assert_eq!(c.prometheus_server(Some("eu")), Some(eu));
    assert_eq!(c.prometheus_server(Some("default")), c.prometheus.as_ref());
    let SourceSpec::Prometheus(p) = &c.targets[0].rules[0].source else {
        panic!()
    };
    assert_eq!(p.server.as_deref(), Some("eu"));
    let Some(VersionSource::Query { server, .. }) = &c.targets[0].version else {
        panic!()
    };
    assert_eq!(server.as_deref(), Some("us-east"));
    assert_eq!(
        crate::config::secrets::secret_files(&c),
        vec![(
            "prometheus.servers.eu.bearer_token_file".to_string(),
            PathBuf::from("/etc/rollbackd/eu-token")
        )]
    );
    // `prometheus = "default"` is [prometheus] itself.
    let c = load_str(
        "p.toml",
        &config(&[("top", top), ("rule", &rule("prometheus = \"default\""))]),
    )
    .unwrap();
    let SourceSpec::Prometheus(p) = &c.targets[0].rules[0].source else {
        panic!()
    };
    assert_eq!(p.server, None);
    // No default server: fine while every rule names one.
    let no_default = "[prometheus.servers.eu]\nurl = \"http://10.0.0.9:9090\"\n";
    let c = load_str(
        "p.toml",
        &config(&[("top", no_default), ("rule", &rule("prometheus = \"eu\""))]),
    )
    .unwrap();
    assert!(c.prometheus.is_none());
    // Today's files are unchanged: one [prometheus], no servers.
    let c = load_str(
        "p.toml",
        &config(&[
            ("top", "[prometheus]\nurl = \"http://127.0.0.1:9090\""),
            ("rule", &rule("")),
        ]),
    )
    .unwrap();
    assert!(c.prometheus_servers.is_empty());

    let cases: Vec<(String, &str, &str)> = vec![
        (config(&[("top", top), ("rule", &rule("prometheus = \"us\""))]), "target[0].rule[0].prometheus", r#"unknown Prometheus server "us" (known: "default", "eu", "us-east")"#),
        (config(&[("top", no_default), ("rule", &rule(""))]), "target[0].rule[0].prometheus", r#"[prometheus] has no url (no default server), so name one: prometheus = one of "eu""#),
        (config(&[("top", no_default), ("rule", &rule("prometheus = \"default\""))]), "target[0].rule[0].prometheus", "no default server"),
        (config(&[("top", no_default), ("target", "version_query = \"build_info\"")]), "target[0].version_prometheus", r#"so name one: version_prometheus = one of "eu""#),
        (config(&[("top", top), ("target", "version_query = \"b\"\nversion_prometheus = \"asia\"")]), "target[0].version_prometheus", r#"unknown Prometheus server "asia""#),
        (config(&[("top", top), ("target", "version_prometheus = \"eu\"")]), "target[0].version_prometheus", "version_prometheus needs version_query"),
        (config(&[("top", top), ("rule", "name = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\nprometheus = \"eu\"")]), "target[0].rule[0].prometheus", r#"key prometheus does not apply to source "host""#),
        (config(&[("top", &format!("[prometheus]\ntimeout = \"5s\"\n{no_default}")), ("rule", &rule("prometheus = \"eu\""))]), "prometheus.timeout", "timeout applies to the default server, which has no url"),
        (config(&[("top", "[prometheus.servers.eu]\ntimeout = \"5s\"")]), "prometheus.servers.eu.url", "required key is missing"),
        (config(&[("top", &format!("{no_default}blind_after = \"0s\""))]), "prometheus.servers.eu.blind_after", "greater than zero"),
        (config(&[("top", &format!("{no_default}username = \"u\""))]), "prometheus.servers.eu.password_file", "username needs password_file"),
        (config(&[("top", &format!("{no_default}bearer_token_file = \"t\""))]), "prometheus.servers.eu.bearer_token_file", "must be an absolute path"),
        (config(&[("top", &format!("{no_default}urll = \"x\""))]), "prometheus.servers.eu.urll", "unknown key"),
        (config(&[("top", &format!("{no_default}[prometheus.servers.eu.servers.x]\nurl = \"http://h/\""))]), "prometheus.servers.eu.servers", "unknown key"),
        (config(&[("top", "[prometheus]\nurl = \"http://h/\"\n[prometheus.servers.default]\nurl = \"http://h2/\"")]), "prometheus.servers.default", "means [prometheus] itself"),
        (config(&[("top", "[prometheus]\nurl = \"http://h/\"\n[prometheus.servers.\"e u\"]\nurl = \"http://h2/\"")]), "prometheus.servers.e u", "invalid server name \"e u\""),
        (config(&[("top", "[prometheus]\nurl = \"http://h/\"\nservers = 3")]), "prometheus.servers", "expected a table [prometheus.servers]"),
        (config(&[("top", "[prometheus]\nurl = \"http://h/\"\nservers = { eu = 3 }")]), "prometheus.servers.eu", "expected a table"),
    ];
    for (text, path, fragment) in &cases {
        let errs = errors(text);
        assert!(
            errs.iter()
                .any(|e| e.path == *path && e.message.contains(fragment)),
            "want {path}: ...{fragment}...\ngot {errs:#?}\nfor config:\n{text}"
        );
        assert_eq!(errs.len(), 1, "{path}: {errs:#?}\nfor config:\n{text}");
    }
}
