//! How problems are reported across sections: every error and warning with its key path, all of them at once, each once.

use super::*;

#[test]
fn warnings_name_the_key_and_do_not_fail() {
    let mail = "[notify.email]\nfrom = \"r@h\"\nto = [\"a@example.com\"]";
    let probe = |extra: &str| format!("name = \"p\"\nsource = \"probe\"\nabove = 0.5\n{extra}");
    let cases: Vec<(String, Vec<(&str, &str)>)> = vec![
        // Nobody would be told anything.
        (
            config(&[("rule", &probe("url = \"http://127.0.0.1/\"\nfor = \"30s\""))]),
            vec![("notify", "no notification channel configured")],
        ),
        // for = 0s on a probe and on a host rule (also by default).
        (
            config(&[("top", mail), ("rule", &probe("url = \"http://127.0.0.1/\""))]),
            vec![("target[0].rule[0].for", "for = \"0s\" (the default): a single bad probe")],
        ),
        (
            config(&[
                ("top", mail),
                ("rule", "name = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\nfor = \"0s\""),
            ]),
            vec![("target[0].rule[0].for", "a single bad host sample")],
        ),
        // A probe across the network without a timeout of its own.
        (
            config(&[("top", mail), ("rule", &probe("url = \"http://app.internal/\"\nfor = \"30s\""))]),
            vec![("target[0].rule[0].url", "not on this host, has no timeout set")],
        ),
        // Quiet: loopback probe, a timeout set, a for, a channel.
        (
            config(&[("top", mail), ("rule", &probe("url = \"http://app.internal/\"\ntimeout = \"1s\"\nfor = \"30s\""))]),
            vec![],
        ),
        (
            config(&[("top", "[[notify.webhook]]\nurl = \"https://chat/\""), ("rule", &probe("url = \"http://localhost:3000/\"\nfor = \"30s\""))]),
            vec![],
        ),
    ];
    for (text, want) in &cases {
        let c = load_str("rollbackd.toml", text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let got: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(got.len(), want.len(), "{got:#?}\nfor config:\n{text}");
        for (path, fragment) in want {
            assert!(
                c.warnings
                    .iter()
                    .any(|w| w.path == *path && w.message.contains(fragment)),
                "want {path}: warning: ...{fragment}...\ngot {got:#?}"
            );
        }
        assert!(got.iter().all(|w| w.contains(": warning: ")));
    }
}

#[test]
fn each_problem_has_its_path_and_message() {
    let host =
        |extra: &str| format!("name = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\n{extra}");
    let probe =
        |extra: &str| format!("name = \"p\"\nsource = \"probe\"\nurl = \"http://h/\"\n{extra}");
    let symlink = |extra: &str| {
        format!("kind = \"symlink\"\ncurrent = \"/srv/app/current\"\nreleases = \"/srv/app/releases\"\n{extra}")
    };
    let mail =
        |extra: &str| format!("[notify.email]\nfrom = \"r@h\"\nto = [\"a@example.com\"]\n{extra}");
    let window = |extra: &str| {
        format!(
            "[[window]]\nname = \"w\"\n{extra}",
            extra = [
                ("days", "days = [\"sat\"]"),
                ("start", "start = \"22:00\""),
                ("end", "end = \"02:00\""),
                ("timezone", "timezone = \"Asia/Shanghai\""),
            ]
            .iter()
            .map(|(k, default)| {
                extra
                    .lines()
                    .find(|l| l.starts_with(k))
                    .unwrap_or(default)
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
        )
    };
    const PROM: &str = "[prometheus]\nurl = \"http://127.0.0.1:9090\"";
    let cases: Vec<(String, &str, &str)> = vec![
        // [daemon]
        (config(&[("daemon", "poll_interval = \"5 minutes\"")]), "daemon.poll_interval", r#"invalid duration "5 minutes" (use e.g. "30s", "5m", "1h")"#),
        (config(&[("daemon", "poll_interval = \"0s\"")]), "daemon.poll_interval", "greater than zero"),
        (config(&[("daemon", "poll_interval = \"50ms\"")]), "daemon.poll_interval", r#"poll_interval = "50ms" is below the minimum of 100ms"#),
        (config(&[("daemon", "journal_max_size = \"1KiB\"")]), "daemon.journal_max_size", r#"journal_max_size = "1KiB" is below the minimum of 64KiB"#),
        (config(&[("daemon", "journal_max_size = \"64 megs\"")]), "daemon.journal_max_size", r#"invalid size "64 megs""#),
        (config(&[("daemon", "max_simultaneous_breaches = 1")]), "daemon.max_simultaneous_breaches", "must be a number of targets (2 or more)"),
        (config(&[("daemon", "max_simultaneous_breaches = \"3\"")]), "daemon.max_simultaneous_breaches", "must be a number of targets (2 or more)"),
        (config(&[("daemon", "max_simultaneous_breaches = { targets = 3, fraction = 2.0 }")]), "daemon.max_simultaneous_breaches.fraction", "fraction = 2.0 must be a number above 0 and at most 1"),
        (config(&[("daemon", "max_simultaneous_breaches = { targets = 3, within = \"soon\" }")]), "daemon.max_simultaneous_breaches.within", r#"invalid duration "soon""#),
        (config(&[("daemon", "max_simultaneous_breaches = { count = 3 }")]), "daemon.max_simultaneous_breaches.count", "unknown key \"count\""),
        (config(&[("daemon", "listen = \"0.0.0.0:9797\"")]), "daemon.listen", "set api_token_file"),
        (config(&[("daemon", "listen = \"localhost\"")]), "daemon.listen", r#"invalid listen address "localhost""#),
        (config(&[("daemon", "public_url = \"ftp://ops.example.com\"")]), "daemon.public_url", "http:// or https://"),
        (config(&[("daemon", "public_url = \"ops.example.com\"")]), "daemon.public_url", r#"invalid URL "ops.example.com""#),
        (config(&[("daemon", "state_dir = \"\"")]), "daemon.state_dir", "must not be empty"),
        // [notify]
        (config(&[("top", "[notify.email]\nfrom = \"not a mailbox\"\nto = [\"a@example.com\"]")]), "notify.email.from", r#"invalid mailbox "not a mailbox""#),
        (config(&[("top", "[notify.email]\nfrom = \"r@h\"\nto = [\"a@example.com\", \"bad\"]")]), "notify.email.to[1]", r#"invalid mailbox "bad""#),
        (config(&[("top", "[notify.email]\nfrom = \"r@h\"\nto = [\"a@example.com, b@example.com\"]")]), "notify.email.to[0]", "several mailboxes"),
        (config(&[("top", "[notify.email]\nfrom = \"r@h\"\nto = []")]), "notify.email.to", "no recipients"),
        (config(&[("top", "[notify.email]\nfrom = \"r@h\"")]), "notify.email.to", "required key is missing"),
        (config(&[("top", &mail("smtp_url = \"http://127.0.0.1\""))]), "notify.email.smtp_url", r#"has scheme "http"; it must be smtp:// or smtps://"#),
        (config(&[("top", &mail("smtp_url = \"smtp://u:secret@127.0.0.1\""))]), "notify.email.smtp_url", "credentials do not belong in smtp_url"),
        (config(&[("top", &mail("smtp_url = \"smtps://h?tls=starttls\""))]), "notify.email.smtp_url", "smtps:// is already TLS"),
        (config(&[("top", &mail("smtp_url = \"smtp://h?tls=yes\""))]), "notify.email.smtp_url", r#"unknown parameter tls="yes""#),
        (config(&[("top", &mail("smtp_url = \"smtp:///x\""))]), "notify.email.smtp_url", "has no host"),
        (config(&[("top", &mail("smtp_url = \"smtp://mail.example.com\"\nusername = \"u\"\npassword_file = \"/p\""))]), "notify.email.smtp_url", "password would cross the network unencrypted"),
        (config(&[("top", &mail("password_file = \"/p\""))]), "notify.email.password_file", "smtp_url is not"),
        (config(&[("top", &mail("smtp_url = \"smtp://127.0.0.1\"\npassword_file = \"/p\""))]), "notify.email.password_file", "username is not"),
        (config(&[("top", &mail("smtp_url = \"smtp://127.0.0.1\"\nusername = \"u\"\npassword_file = \"p\""))]), "notify.email.password_file", "absolute path"),
        (config(&[("top", &mail("smtp_url = \"smtp://127.0.0.1\"\npassword = \"hunter2\""))]), "notify.email.password", "never read from the config file"),
        (config(&[("top", &mail("smtp_url = \"smtp://127.0.0.1\"\ntimeout = \"0s\""))]), "notify.email.timeout", "greater than zero"),
        (config(&[("top", &mail("smtp_url = \"smtps://mail.example.com\"\nca_file = \"ca.pem\""))]), "notify.email.ca_file", "absolute path"),
        (config(&[("top", &mail("smtp_url = \"smtp://127.0.0.1\"\nca_file = \"/etc/ca.pem\""))]), "notify.email.ca_file", "plaintext"),
        (config(&[("top", &mail("ca_file = \"/etc/ca.pem\""))]), "notify.email.ca_file", "smtp_url is not"),
        (config(&[("top", "[[notify.webhook]]\nformat = \"json\"")]), "notify.webhook[0].url", "required key is missing"),
        (config(&[("top", "[[notify.webhook]]\nurl = \"ftp://chat/\"")]), "notify.webhook[0].url", "http:// or https://"),
        (config(&[("top", "[[notify.webhook]]\nurl = \"https://chat/\"\nformat = \"irc\"")]), "notify.webhook[0].format", r#"invalid format "irc" (use "json", "slack", "teams", "dingtalk" or "feishu")"#),
        (config(&[("top", "[[notify.webhook]]\nurl = \"https://chat/\"\nsecret = \"s\"")]), "notify.webhook[0].secret", "dingtalk"),
        (config(&[("top", "[[notify.webhook]]\nname = \"ops\"\nurl = \"https://a/\"\n[[notify.webhook]]\nname = \"ops\"\nurl = \"https://b/\"")]), "notify.webhook[1].name", r#"duplicate webhook name "ops""#),
        (config(&[("top", "[[notify.webhook]]\nname = \"ops\"\nurl = \"https://a/\""), ("after", "[target.notify]\nwebhooks = [\"dev\"]")]), "target[0].notify.webhooks[0]", r#"no [[notify.webhook]] named "dev" (named webhooks: ops)"#),
        (config(&[("after", "[target.notify]\nmin_severity = \"loud\"")]), "target[0].notify.min_severity", r#"invalid min_severity "loud" (use "info", "warning" or "critical")"#),
        (config(&[("top", &mail("")), ("after", "[target.notify]\nto = [\"not an address\"]")]), "target[0].notify.to[0]", "invalid mailbox"),
        (config(&[("after", "[target.notify]\ncc = [\"a@example.com\"]")]), "target[0].notify.cc", "[notify.email]"),
        (config(&[("after", "[target.notify]\nchannel = \"x\"")]), "target[0].notify.channel", "unknown key"),
        (config(&[("rule", &probe("above = 0.5\nmode = \"dry\""))]), "target[0].rule[0].mode", r#"invalid mode "dry" (use "act" or "shadow")"#),
        (config(&[("daemon", "max_pause = \"0s\"")]), "daemon.max_pause", "greater than zero"),
        (config(&[("top", "[notify]\ngive_up_after = \"0s\"")]), "notify.give_up_after", "greater than zero"),
        (config(&[("top", "[notify]\nmax_per_hour = 0")]), "notify.max_per_hour", "positive number"),
        (config(&[("top", "[notify]\nmax_per_target_per_hour = -1")]), "notify.max_per_target_per_hour", "positive number"),
        // [[window]]
        (config(&[("top", &window("timezone = \"Mars/Base\""))]), "window[0].timezone", r#"unknown timezone "Mars/Base""#),
        (config(&[("top", &window("days = [\"sat\", \"Sun\"]"))]), "window[0].days[1]", r#"invalid day "Sun""#),
        (config(&[("top", &window("days = [\"sat\", \"sat\"]"))]), "window[0].days[1]", r#"duplicate day "sat""#),
        (config(&[("top", &window("days = []"))]), "window[0].days", "no days"),
        (config(&[("top", &window("start = \"24:00\""))]), "window[0].start", r#"invalid time "24:00""#),
        (config(&[("top", &window("start = \"9:00\""))]), "window[0].start", r#"invalid time "9:00""#),
        (config(&[("top", &window("end = \"22:00\""))]), "window[0].end", "end equals start"),
        (config(&[("top", "[[window]]\ndays = [\"sat\"]\nstart = \"22:00\"\nend = \"02:00\"\ntimezone = \"UTC\"")]), "window[0].name", "required key is missing"),
        // [prometheus]
        (config(&[("top", "[prometheus]\ntimeout = \"3s\"")]), "prometheus.url", "required key is missing"),
        (config(&[("top", "[prometheus]\nurl = \"ftp://127.0.0.1:9090\"")]), "prometheus.url", "http:// or https://"),
        (config(&[("top", &format!("{PROM}\ntimeout = \"0s\""))]), "prometheus.timeout", "greater than zero"),
        (config(&[("top", &format!("{PROM}\nusername = \"u\""))]), "prometheus.password_file", "username needs password_file"),
        (config(&[("top", &format!("{PROM}\nusername = \"u\"\npassword_file = \"/p\"\nbearer_token_file = \"/t\""))]), "prometheus.bearer_token_file", "not both"),
        (config(&[("top", &format!("{PROM}\nbearer_token_file = \"t\""))]), "prometheus.bearer_token_file", "must be an absolute path"),
        (config(&[("top", &format!("{PROM}\nheaders = {{ \"bad header\" = \"x\" }}"))]), "prometheus.headers.bad header", "invalid HTTP header name"),
        // [[target]]
        (config(&[("after", "[[target]]\nname = \"web\"\n[[target.rule]]\nname = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\n[target.rollback]\nkind = \"command\"\nsteps = [[\"true\"]]")]), "target[1].name", r#"duplicate target name "web" (also used by target[0])"#),
        (config(&[("top", "[[target]]\nname = \"web app\"\n[[target.rule]]\nname = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\n[target.rollback]\nkind = \"command\"\nsteps = [[\"true\"]]")]), "target[0].name", r#"invalid target name "web app""#),
        (config(&[("target", "version_command = []")]), "target[0].version_command", "empty command"),
        (config(&[("target", "confirm = \"required\"\nconfirm_timeout = \"0s\"")]), "target[0].confirm_timeout", "must be greater than zero"),
        (config(&[("target", "confirm = \"required\"\non_confirm_timeout = \"later\"")]), "target[0].on_confirm_timeout", r#"invalid on_confirm_timeout "later""#),
        (config(&[("target", "confirm = \"required\"\nconfirm_command = [\"ask\", \"{nope}\"]")]), "target[0].confirm_command", "unknown template variable {nope}"),
        (config(&[("daemon", "max_rollbacks_per_hour = 0")]), "daemon.max_rollbacks_per_hour", "must be at least 1"),
        (config(&[("daemon", "log_format = \"syslog\"")]), "daemon.log_format", r#"invalid log_format "syslog""#),
        (config(&[("target", "version_url = \"h/version\"")]), "target[0].version_url", "invalid URL"),
        (config(&[("target", "version_url = \"http://h/v\"\nversion_command = [\"true\"]")]), "target[0].version_url", "set only one of version_command, version_url"),
        (config(&[("target", "version_query = \"app_build_info\"")]), "target[0].version_query", "needs a [prometheus] section"),
        (config(&[("top", PROM), ("target", "version_query = \" \"")]), "target[0].version_query", "must not be empty"),
        (config(&[("top", PROM), ("target", "version_query = \"app_build_info\"\nversion_label = \"1x\"")]), "target[0].version_label", "invalid label name \"1x\""),
        (config(&[("target", "version_json_pointer = \"/v\"")]), "target[0].version_json_pointer", "needs version_url"),
        (config(&[("target", "version_url = \"http://h/v\"\nversion_json_pointer = \"v\"")]), "target[0].version_json_pointer", "invalid JSON pointer \"v\""),
        (config(&[("target", "version_label = \"v\"")]), "target[0].version_label", "needs version_query"),
        (config(&[("target", "only_within = \"2 hours\"")]), "target[0].only_within", "invalid duration"),
        (config(&[("target", "only_within = \"0s\"")]), "target[0].only_within", "greater than zero"),
        (config(&[("target", "blind_after = \"0s\"")]), "target[0].blind_after", "greater than zero"),
        (config(&[("target", "confirm = \"maybe\"")]), "target[0].confirm", r#"invalid confirm "maybe""#),
        (config(&[("target", "confirm_timeout = \"5m\"")]), "target[0].confirm_timeout", "no effect without confirm = \"required\""),
        (config(&[("target", "on_confirm_timeout = \"rollback\"")]), "target[0].on_confirm_timeout", "no effect without confirm"),
        (config(&[("target", "cooldown = \"soon\"")]), "target[0].cooldown", r#"invalid duration "soon""#),
        (config(&[("target", "max_rollbacks_per_hour = 0")]), "target[0].max_rollbacks_per_hour", "must be at least 1"),
        (config(&[("target", "no_data = \"ignore\"")]), "target[0].no_data", r#"invalid no_data "ignore""#),
        // [[target.rule]]
        (config(&[("rule", "name = \"a\"\nsource = \"alertmanager\"")]), "target[0].rule[0].match", "alertmanager rule needs match"),
        (config(&[("rule", "name = \"a\"\nsource = \"alertmanager\"\nmatch = {}")]), "target[0].rule[0].match", "match is empty"),
        (config(&[("rule", "name = \"a\"\nsource = \"alertmanager\"\nmatch = { severity = 3 }")]), "target[0].rule[0].match.severity", "must be a string"),
        (config(&[("rule", "name = \"a\"\nsource = \"alertmanager\"\nabove = 1.0\nmatch = { a = \"b\" }")]), "target[0].rule[0].above", "does not apply to source \"alertmanager\""),
        (config(&[("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0")]), "target[0].rule[0].source", "needs a [prometheus] section"),
        (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nabove = 1.0")]), "target[0].rule[0].query", "required key is missing"),
        (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"")]), "target[0].rule[0].above", "set above, above_baseline or both"),
        (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove_baseline = 0.0")]), "target[0].rule[0].above_baseline", "greater than 0"),
        (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0\nbaseline_window = \"1h\"")]), "target[0].rule[0].baseline_window", "needs above_baseline"),
        (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove_baseline = 3.0\nbaseline_window = \"0s\"")]), "target[0].rule[0].baseline_window", "greater than zero"),
        (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0\nurl = \"http://h/\"")]), "target[0].rule[0].url", "key url does not apply to source \"prometheus\""),
        (config(&[("rule", &host("above = 0.5\nno_data = \"skip\""))]), "target[0].rule[0].no_data", r#"invalid no_data "skip""#),
        (config(&[("rule", &probe("above = 0.5\nmin_samples = 0"))]), "target[0].rule[0].min_samples", "min_samples = 0 must be at least 1"),
        (config(&[("rule", &probe("above = 0.5\nwindow = \"10s\""))]), "target[0].rule[0].min_samples", "min_samples = 3 can never be reached: window = \"10s\" holds at most 2 probes at daemon.poll_interval \"5s\"; lower min_samples to 2 or widen window to \"11s\""),
        // Issue 18 item 7: a 5 s timeout at a 1 s poll, window 10 s, min_samples 3: a hung release stays Unknown.
        (config(&[("daemon", "poll_interval = \"1s\""), ("rule", &probe("above = 0.5\ntimeout = \"5s\"\nwindow = \"10s\"\nmin_samples = 3"))]), "target[0].rule[0].min_samples", "min_samples = 3 can never be reached while the service hangs: a probe that times out takes timeout = \"5s\", so at daemon.poll_interval \"1s\" probes start 6s apart and window = \"10s\" holds at most 2 of them (the rule would stay Unknown); widen window to \"13s\", lower timeout to \"3900ms\", or lower min_samples to 2"),
        (config(&[("rule", &host("above = 0.5\nmin_samples = 2"))]), "target[0].rule[0].min_samples", "key min_samples does not apply to source \"host\""),
        (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0\ntraffic_query = \"sum(rate(x[1m]))\"")]), "target[0].rule[0].min_traffic", "traffic_query needs min_traffic"),
        (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0\nmin_traffic = 1.0")]), "target[0].rule[0].traffic_query", "min_traffic needs traffic_query"),
        (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0\ntraffic_query = \"x\"\nmin_traffic = -1.0")]), "target[0].rule[0].min_traffic", "min_traffic = -1 must be a finite number, 0 or more"),
        (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0\nstep = \"50ms\"")]), "target[0].rule[0].step", "step = \"50ms\" is below the smallest step of 100ms"),
        (config(&[("rule", &probe("above = 0.5\nstep = \"1s\""))]), "target[0].rule[0].step", "key step does not apply to source \"probe\""),
        (config(&[("rule", &probe("above = 0.5\ntraffic_query = \"x\""))]), "target[0].rule[0].traffic_query", "key traffic_query does not apply to source \"probe\""),
        (config(&[("rule", "name = \"a\"\nsource = \"nagios\"\nabove = 1.0")]), "target[0].rule[0].source", r#"invalid source "nagios" (use "prometheus", "probe", "host" or "alertmanager")"#),
        (config(&[("rule", "name = \"a\"\nabove = 1.0")]), "target[0].rule[0].source", "required key is missing"),
        (config(&[("rule", &probe(""))]), "target[0].rule[0].above", "rule has no condition: set above"),
        (config(&[("rule", &host(""))]), "target[0].rule[0].above", "rule has no condition: set above"),
        (config(&[("rule", &probe("above = nan"))]), "target[0].rule[0].above", "above = NaN is not a finite number"),
        (config(&[("rule", &probe("above = 70"))]), "target[0].rule[0].above", "above = 70 is out of range for a fraction (0..1); did you mean 0.7?"),
        (config(&[("rule", &probe("above = 1"))]), "target[0].rule[0].above", "above = 1 is out of range for a fraction (0..1)"),
        (config(&[("rule", &probe("above = -0.1"))]), "target[0].rule[0].above", "out of range for a fraction"),
        (config(&[("rule", &host("above = 70"))]), "target[0].rule[0].above", "did you mean 0.7?"),
        (config(&[("rule", &host("above = 85.5").replace("\"cpu\"\n", "\"memory\"\n"))]), "target[0].rule[0].above", "did you mean 0.855?"),
        (config(&[("rule", &probe("measure = \"latency\"\nabove = 0"))]), "target[0].rule[0].above", "must be greater than 0"),
        (config(&[("rule", &probe("above = 0.5\nfor = \"5 minutes\""))]), "target[0].rule[0].for", r#"invalid duration "5 minutes" (use e.g. "30s", "5m", "1h")"#),
        (config(&[("rule", &host("above = 0.5\nurl = \"http://h/\""))]), "target[0].rule[0].url", r#"key url does not apply to source "host""#),
        (config(&[("rule", &host("above = 0.5\nwindow = \"1m\""))]), "target[0].rule[0].window", r#"key window does not apply to source "host""#),
        (config(&[("rule", &probe("above = 0.5\nmetric = \"cpu\""))]), "target[0].rule[0].metric", r#"key metric does not apply to source "probe""#),
        (config(&[("rule", "name = \"p\"\nsource = \"probe\"\nabove = 0.5")]), "target[0].rule[0].url", "required key is missing"),
        (config(&[("rule", "name = \"p\"\nsource = \"probe\"\nurl = \"ftp://h/\"\nabove = 0.5")]), "target[0].rule[0].url", "http:// or https://"),
        (config(&[("rule", &probe("above = 0.5\ntimeout = \"0s\""))]), "target[0].rule[0].timeout", "greater than zero"),
        (config(&[("rule", &probe("above = 0.5\nwindow = \"0s\""))]), "target[0].rule[0].window", "greater than zero"),
        (config(&[("rule", &probe("above = 0.5\nexpect_status = 42"))]), "target[0].rule[0].expect_status", "expect_status = 42 is not an HTTP status code"),
        (config(&[("rule", &probe("above = 0.5\nmeasure = \"p99\""))]), "target[0].rule[0].measure", r#"invalid measure "p99""#),
        (config(&[("rule", &host("above = 0.5").replace("\"cpu\"\n", "\"disk\"\n"))]), "target[0].rule[0].metric", r#"invalid metric "disk""#),
        (config(&[("rule", "name = \"c\"\nsource = \"host\"\nabove = 0.5")]), "target[0].rule[0].metric", "required key is missing"),
        (config(&[("rule", &probe("above = 0.5\nquery = \"up\""))]), "target[0].rule[0].query", "key query does not apply to source \"probe\""),
        (config(&[("rule", &probe("above = 0.5\nmatch = { alertname = \"X\" }"))]), "target[0].rule[0].match", "does not apply to source \"probe\""),
        (config(&[("rule", &probe("above = 0.5\nabove_baseline = 3.0"))]), "target[0].rule[0].above_baseline", "does not apply to source \"probe\""),
        (config(&[("rule", &probe("above = 0.5\nbaseline_window = \"1h\""))]), "target[0].rule[0].baseline_window", "does not apply to source \"probe\""),
        (config(&[("rule", &probe("above = 0.5\nbaseline_query = \"up\""))]), "target[0].rule[0].baseline_query", "does not apply to source \"probe\""),
        (config(&[("rule", &format!("{RULE}\n[[target.rule]]\n{RULE}"))]), "target[0].rule[1].name", r#"duplicate rule name "health" (also used by target[0].rule[0])"#),
        (config(&[("rule", &probe("above = 0.5\nfooo = 1"))]), "target[0].rule[0].fooo", "unknown key"),
        ("[[target]]\nname = \"web\"\n[target.rollback]\nkind = \"command\"\nsteps = [[\"true\"]]\n".to_string(), "target[0].rule", "target has no rules"),
        ("[daemon]\n".to_string(), "target", "no targets"),
        // [target.rollback]
        ("[[target]]\nname = \"web\"\n[[target.rule]]\nname = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\n".to_string(), "target[0].rollback", "missing [target.rollback]"),
        (config(&[("rollback", "kind = \"docker\"\ncontainer = \"web\"")]), "target[0].rollback.image", "required key is missing"),
        (config(&[("rollback", "kind = \"docker\"\ncontainer = \"web\"\nimage = \"registry:5000/app:1.0\"")]), "target[0].rollback.image", "must not carry a tag"),
        (config(&[("rollback", "kind = \"docker\"\ncontainer = \"web\"\nimage = \"app\"\nrun_args = [\"-e\", \"V={version}\"]")]), "target[0].rollback.run_args", "unknown template variable {version}"),
        (config(&[("rollback", "kind = \"kubernetes\"\nnamespace = \"prod\"")]), "target[0].rollback.deployment", "required key is missing"),
        (config(&[("rollback", "kind = \"kubernetes\"\ndeployment = \"web\"")]), "target[0].rollback.namespace", "required key is missing"),
        (config(&[("rollback", "kind = \"kubernetes\"\ndeployment = \"web\"\nnamespace = \"prod\"\nto_revision = 0")]), "target[0].rollback.to_revision", "revisions start at 1"),
        (config(&[("rollback", "kind = \"kubernetes\"\ndeployment = \"web\"\nnamespace = \"prod\"\nkubectl = \"\"")]), "target[0].rollback.kubectl", "must not be empty"),
        (config(&[("rollback", "kind = \"blue_green\"\nservice = \"web\"\nnamespace = \"prod\"\ncolors = [\"blue\", \"blue\"]")]), "target[0].rollback.colors", "two different"),
        (config(&[("rollback", "kind = \"blue_green\"\nservice = \"web\"\nnamespace = \"prod\"\ndeployment = \"web\"")]), "target[0].rollback.deployment", r#"key deployment does not apply to rollback kind "blue_green""#),
        (config(&[("rollback", "kind = \"git\"\nrepo = \"srv/app\"")]), "target[0].rollback.repo", "must be an absolute path"),
        (config(&[("rollback", "kind = \"git\"\nrepo = \"/srv/app\"\nbuild = [[]]")]), "target[0].rollback.build[0]", "empty command"),
        (config(&[("rollback", "kind = \"webhook\"\nurl = \"ftp://ci/\"")]), "target[0].rollback.url", "must start with http"),
        (config(&[("rollback", "kind = \"webhook\"\nurl = \"https://ci/\"\nbody = '{\"v\": {to_version}}'")]), "target[0].rollback.body", "body is not valid JSON"),
        (config(&[("rollback", "kind = \"webhook\"\nurl = \"https://ci/\"\nbody = '{\"v\": \"{tag}\"}'")]), "target[0].rollback.body", "unknown template variable {tag}"),
        (config(&[("rollback", "kind = \"webhook\"\nurl = \"https://ci/\"\nbody = 3")]), "target[0].rollback.body", "must be a JSON string or a table"),
        (config(&[("rollback", &format!("{ROLLBACK}\nstep_timeout = \"0s\""))]), "target[0].rollback.step_timeout", "greater than zero"),
        (config(&[("rollback", &format!("{ROLLBACK}\npre = [[\"cp\", \"{{nope}}\"]]"))]), "target[0].rollback.pre[0]", "unknown template variable {nope}"),
        (config(&[("rollback", "kind = \"ftp\"")]), "target[0].rollback.kind", r#"invalid rollback kind "ftp" (use one of "command", "symlink", "kubernetes", "blue_green", "docker", "git", "webhook")"#),
        (config(&[("rollback", "steps = [[\"true\"]]")]), "target[0].rollback.kind", "required key is missing"),
        (config(&[("rollback", &symlink("steps = [[\"true\"]]"))]), "target[0].rollback.steps", r#"key steps does not apply to rollback kind "symlink""#),
        (config(&[("rollback", &format!("{ROLLBACK}\ndeployment = \"web\""))]), "target[0].rollback.deployment", r#"key deployment does not apply to rollback kind "command""#),
        (config(&[("rollback", &format!("{ROLLBACK}\ncurrent = \"/srv/current\""))]), "target[0].rollback.current", r#"key current does not apply to rollback kind "command""#),
        // Issue 18 item 3: never a value in a shell's script text, never the program.
        (config(&[("rollback", "kind = \"command\"\nsteps = [[\"sh\", \"-c\", \"echo rolled back from {from_version}\"]]")]), "target[0].rollback.steps[0]", "{from_version} is inside the script text of a sh step"),
        (config(&[("rollback", "kind = \"command\"\nsteps = [[\"/usr/bin/env\", \"bash\", \"-ec\", \"deploy {to_version}\"]]")]), "target[0].rollback.steps[0]", "pass it as an environment variable (\"$ROLLBACKD_TO_VERSION\")"),
        (config(&[("rollback", &format!("{ROLLBACK}\non_failure = [{{ argv = [\"python3\", \"-c\", \"print('{{incident}}')\"] }}]"))]), "target[0].rollback.on_failure[0].argv", "{incident} is inside the script text of a python3 step"),
        (config(&[("rollback", &symlink("restart = [\"{to_version}\"]"))]), "target[0].rollback.restart", "{to_version} starts the program of the step"),
        (config(&[("target", "confirm = \"required\"\nconfirm_command = [\"sh\", \"-c\", \"ask {target}\"]")]), "target[0].confirm_command", "{target} is inside the script text"),
        (config(&[("rollback", "kind = \"command\"")]), "target[0].rollback.steps", "required key is missing"),
        (config(&[("rollback", "kind = \"command\"\nsteps = []")]), "target[0].rollback.steps", "no steps"),
        (config(&[("rollback", "kind = \"command\"\nsteps = [[\"true\"], []]")]), "target[0].rollback.steps[1]", "empty command"),
        (config(&[("rollback", "kind = \"command\"\nsteps = [[\"true\"], [\"\", \"x\"]]")]), "target[0].rollback.steps[1]", "program name (first element) is empty"),
        (config(&[("rollback", "kind = \"command\"\nsteps = [[\"true\"], [\"git\", \"checkout\", \"{version}\"]]")]), "target[0].rollback.steps[1]", r#"unknown template variable {version} in argument "{version}"; allowed: {target}, {from_version}, {to_version}, {incident}, {lease}"#),
        (config(&[("rollback", &format!("{ROLLBACK}\nafter = [[\"curl\", \"-X\", \"PURGE\", \"https://cdn/{{path}}\"]]"))]), "target[0].rollback.after[0]", "unknown template variable {path}"),
        (config(&[("rollback", &format!("{ROLLBACK}\ntimeout = \"0s\""))]), "target[0].rollback.timeout", "greater than zero"),
        // Step context: plain argv and tables side by side.
        (config(&[("rollback", "kind = \"command\"\nsteps = [[\"true\"], { argv = [\"true\"], cwd = \"app\" }]")]), "target[0].rollback.steps[1].cwd", r#""app" must be an absolute path"#),
        (config(&[("rollback", "kind = \"command\"\nsteps = [{ cwd = \"/srv/app\" }]")]), "target[0].rollback.steps[0].argv", "required key is missing"),
        (config(&[("rollback", "kind = \"command\"\nsteps = [[\"true\"], { argv = [\"git\"], user = \"root\" }]")]), "target[0].rollback.steps", r#"step { argv = ["git"], user = "root" }: unknown field `user`, expected one of `argv`, `cwd`, `env`, `timeout`"#),
        (config(&[("rollback", "kind = \"command\"\nsteps = [[\"true\", 1]]")]), "target[0].rollback.steps", r#"step ["true", 1] is not a list of strings"#),
        (config(&[("rollback", "kind = \"command\"\nsteps = [\"pm2 restart\"]")]), "target[0].rollback.steps", r#"step "pm2 restart" must be an argv list"#),
        (config(&[("rollback", "kind = \"command\"\nsteps = [{ argv = [] }]")]), "target[0].rollback.steps[0].argv", "empty command"),
        (config(&[("rollback", "kind = \"command\"\nsteps = [{ argv = [\"true\"], timeout = \"0s\" }]")]), "target[0].rollback.steps[0].timeout", "greater than zero"),
        (config(&[("rollback", "kind = \"command\"\nsteps = [{ argv = [\"true\"], env = { \"A=B\" = \"1\" } }]")]), "target[0].rollback.steps[0].env.A=B", "invalid environment variable name"),
        (config(&[("rollback", &format!("{ROLLBACK}\ncwd = \"srv\""))]), "target[0].rollback.cwd", "must be an absolute path"),
        (config(&[("rollback", &format!("{ROLLBACK}\nenv = {{ \"\" = \"x\" }}"))]), "target[0].rollback.env.", "invalid environment variable name"),
        (config(&[("rollback", &format!("{ROLLBACK}\non_failure = [[\"journalctl\", \"{{since}}\"]]"))]), "target[0].rollback.on_failure[0]", "unknown template variable {since}"),
        (config(&[("rollback", &format!("{ROLLBACK}\non_failure = [{{ argv = [\"sh\", \"-c\", \"x\"], cwd = \"tmp\" }}]"))]), "target[0].rollback.on_failure[0].cwd", "must be an absolute path"),
        // Verification gates.
        (config(&[("verify", "checks = [{ url = \"ftp://x/\" }]")]), "target[0].verify.checks[0].url", "must start with http:// or https://"),
        (config(&[("verify", "checks = [{ expect_status = 200 }]")]), "target[0].verify.checks[0].url", "required key is missing"),
        (config(&[("verify", "checks = [{ url = \"http://127.0.0.1/\", expect_status = 99 }]")]), "target[0].verify.checks[0].expect_status", "not an HTTP status code"),
        (config(&[("verify", "checks = [{ url = \"http://127.0.0.1/\", max_latency = \"0s\" }]")]), "target[0].verify.checks[0].max_latency", "greater than zero"),
        (config(&[("verify", "checks = [{ url = \"http://127.0.0.1/\", body_contains = \"\" }]")]), "target[0].verify.checks[0].body_contains", "must not be empty"),
        (config(&[("verify", "commands = [[\"curl\", \"{url}\"]]")]), "target[0].verify.commands[0]", "unknown template variable {url}"),
        (config(&[("rollback", "kind = \"symlink\"\ncurrent = \"srv/current\"\nreleases = \"/srv/releases\"")]), "target[0].rollback.current", r#""srv/current" must be an absolute path"#),
        (config(&[("rollback", "kind = \"symlink\"\ncurrent = \"/srv/current\"")]), "target[0].rollback.releases", "required key is missing"),
        (config(&[("rollback", &symlink("restart = [\"systemctl\", \"restart\", \"{service}\"]"))]), "target[0].rollback.restart", "unknown template variable {service}"),
        // [target.verify]
        (config(&[("verify", "rules = false")]), "target[0].verify", "verify has nothing to check: set url, checks, commands or rules = true"),
        (config(&[("verify", "within = \"0s\"")]), "target[0].verify.within", "greater than zero"),
        (config(&[("verify", "url = \"localhost:3000\"")]), "target[0].verify.url", "http:// or https://"),
        (config(&[("verify", "url = \"http://h/\"\nexpect_status = 600")]), "target[0].verify.expect_status", "not an HTTP status code"),
        (config(&[("verify", "expect_status = 200")]), "target[0].verify.expect_status", "needs a url"),
    ];
    for (text, path, fragment) in &cases {
        let errs = errors(text);
        assert!(
            errs.iter()
                .any(|e| e.path == *path && e.message.contains(fragment)),
            "want {path}: ...{fragment}...\ngot {errs:#?}\nfor config:\n{text}"
        );
        // A single problem gives a single error, not a cascade.
        assert_eq!(errs.len(), 1, "{path}: {errs:#?}\nfor config:\n{text}");
    }
}

#[test]
fn valid_edge_cases_pass() {
    for text in [
        config(&[("daemon", "listen = \"0.0.0.0:9797\"\napi_token_file = \"/etc/rollbackd/token\"")]),
        config(&[("daemon", "listen = \"[::1]:9797\"")]),
        config(&[("target", "cooldown = \"0s\"")]),
        config(&[("rule", &format!("{RULE}\nfor = \"0s\""))]),
        config(&[("rule", &format!("{RULE}\nfor = \"1h30m\""))]),
        config(&[("verify", "rules = false\nurl = \"https://h/health\"")]),
        config(&[("rollback", "kind = \"command\"\nsteps = [[\"curl\", \"-d\", '{\"target\": \"{target}\", \"x\": 1}', \"{incident}-{from_version}..{to_version}\"]]")]),
        config(&[("top", "[notify.email]\nfrom = \"rollbackd <rollbackd@deploy-host>\"\nto = [\"admin@example.com\", \"Ops Team <ops@example.com>\"]")]),
    ] {
        let errs = errors(&text);
        assert!(errs.is_empty(), "{errs:#?}\nfor config:\n{text}");
    }
}

#[test]
fn error_display_is_file_path_message() {
    let text = config(&[(
        "rule",
        &format!("{RULE}\n[[target.rule]]\nname = \"b\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\nfor = \"5 minutes\""),
    )]);
    let e = load_str("rollbackd.toml", &text).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"rollbackd.toml: target[0].rule[1].for: invalid duration "5 minutes" (use e.g. "30s", "5m", "1h")"#
    );
}

#[test]
fn five_problems_in_different_places_are_all_reported() {
    let text = r#"
            [daemon]
            poll_interval = "5"

            [notify.email]
            from = "rollbackd <rollbackd@deploy-host>"
            to = ["admin@example.com", "not an address"]

            [[window]]
            name = "release"
            days = ["sat"]
            start = "22:00"
            end = "02:00"
            timezone = "Mars/Base"

            [[target]]
            name = "web"
              [[target.rule]]
              name = "health"
              source = "probe"
              url = "http://127.0.0.1:3000/health"
              above = 0.5
              [[target.rule]]
              name = "cpu"
              source = "host"
              metric = "cpu"
              above = 70
              fooo = true
              [target.rollback]
              kind = "ftp"
        "#;
    let errs = errors(text);
    let got: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    let mut want = vec![
        "daemon.poll_interval",
        "notify.email.to[1]",
        "window[0].timezone",
        "target[0].rule[1].above",
        "target[0].rule[1].fooo",
        "target[0].rollback.kind",
    ];
    let mut got_sorted = got.clone();
    got_sorted.sort();
    want.sort();
    assert_eq!(got_sorted, want, "{errs:#?}");
    assert!(errs.iter().all(|e| e.file == "rollbackd.toml"));
}

#[test]
fn a_mistyped_value_is_reported_once() {
    // The raw phase rejects `above`; validation must not add "rule has
    // no condition" for the same key.
    let errs = errors(&config(&[(
        "rule",
        "name = \"c\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = \"70%\"",
    )]));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, "target[0].rule[0].above");
    assert_eq!(errs[0].message, r#"expected a number, found string "70%""#);

    // A target that is not a table is one error, not one per missing key.
    let errs = errors(&format!("target = [5]\n{}", ""));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, "target[0]");
}
