//! What an operator's tooling reads from the running daemon: `/metrics`
//! after a real rollback, scraped by the real Prometheus, and the log in
//! each `[daemon] log_format`: text on a file and on a terminal (colour,
//! NO_COLOR), JSON, and journald (against a journal socket of our own in a
//! private mount namespace, and without one).

mod common;
#[path = "common/prometheus.rs"]
mod prom;

use std::time::Duration;

use common::*;

/// The API port `symlink_config` chose.
fn api_port(config: &str) -> u16 {
    let at = config.find("listen = \"127.0.0.1:").expect("listen key") + 20;
    config[at..]
        .split('"')
        .next()
        .unwrap()
        .parse()
        .expect("listen port")
}

/// A symlink target on the demo service with `daemon_extra` added to `[daemon]`.
fn setup(daemon_extra: &str) -> (tempfile::TempDir, std::path::PathBuf, u16) {
    let (tmp, dir, port, _) = demo_releases();
    let config = symlink_config(&dir, port, "").replacen(
        "poll_interval = \"200ms\"",
        &format!("poll_interval = \"200ms\"\n{daemon_extra}"),
        1,
    );
    let api = api_port(&config);
    std::fs::write(dir.join("rollbackd.toml"), config).unwrap();
    (tmp, dir, api)
}

fn metrics(api: u16) -> String {
    let (code, body) = prom::http_get(api, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    body
}

#[test]
fn a_rollback_is_counted_in_metrics_that_prometheus_scrapes_and_json_logs_carry_fields() {
    let (_tmp, dir, api) = setup("log_format = \"json\"");
    let daemon = Running::start(&dir.join("rollbackd.toml"), &dir.join("daemon.log"));
    let prometheus = prom::Prometheus::start(&dir.join("prometheus"), &[api]);
    wait_version_seen(&dir.join("state"), "v1");
    // The counters exist at 0 from the first evaluation on, so that
    // `increase()` in an alert sees the first rollback.
    let before = wait_for(Duration::from_secs(10), "the first evaluation", || {
        Some(metrics(api)).filter(|m| m.contains("rollbackd_rule_status{"))
    });
    assert!(
        before.contains(&format!(
            "rollbackd_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{before}"
    );
    assert!(
        before.contains("rollbackd_config_last_reload_success 1"),
        "{before}"
    );
    for line in [
        "rollbackd_rollbacks_total{target=\"web\",outcome=\"rolled_back\"} 0\n",
        "rollbackd_rollbacks_total{target=\"web\",outcome=\"failed\"} 0\n",
    ] {
        assert!(before.contains(line), "missing {line:?} in:\n{before}");
    }

    rollbackd::demo::switch_release(&dir, "v2").unwrap();
    wait_for(Duration::from_secs(40), "the ROLLED BACK mail", || {
        mails(&dir.join("state/outbox"))
            .into_iter()
            .find(|(_, m)| m.contains("ROLLED BACK"))
    });
    let text = metrics(api);
    for line in [
        "rollbackd_rollbacks_total{target=\"web\",outcome=\"rolled_back\"} 1\n",
        "rollbackd_incidents_total{target=\"web\",outcome=\"rolled_back\"} 1\n",
        "rollbackd_detection_seconds_count 1\n",
        "rollbackd_incidents_open{target=\"web\",phase=\"verifying\"} 0\n",
        "rollbackd_rule_status{target=\"web\",rule=\"health\",status=\"ok\"} 1\n",
        "# TYPE rollbackd_poll_duration_seconds histogram\n",
        "# HELP rollbackd_rollbacks ",
    ] {
        assert!(text.contains(line), "missing {line:?} in /metrics:\n{text}");
    }
    assert!(
        !text.contains("rollbackd_poll_duration_seconds_count 0\n"),
        "polls are timed: {text}"
    );
    assert!(
        text.contains("rollbackd_journal_bytes ") && !text.contains("rollbackd_journal_bytes 0\n"),
        "{text}"
    );

    // The real Prometheus scraped it without errors and has the sample.
    let up = "rollbackd_rollbacks_total{outcome=\"rolled_back\",target=\"web\"} == 1";
    prometheus.wait_for_series(up, Duration::from_secs(20));
    assert_eq!(
        prometheus.query("up")["data"]["result"][0]["value"][1],
        "1",
        "up"
    );
    let (_, targets) = prom::http_get(prometheus.port, "/api/v1/targets").unwrap();
    let targets: serde_json::Value = serde_json::from_str(&targets).unwrap();
    let active = &targets["data"]["activeTargets"];
    assert_eq!(active.as_array().map(Vec::len), Some(1), "{targets}");
    assert_eq!(active[0]["health"], "up", "{targets}");
    assert_eq!(active[0]["lastError"], "", "scrape error: {targets}");

    // JSON logs: one object per line, the target name as a field.
    let log = daemon.log_text();
    assert!(!log.contains('\x1b'), "ANSI escape in the log:\n{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}"))
        })
        .collect();
    assert!(lines.len() > 5, "{log}");
    assert!(
        lines.iter().all(|l| l["level"].is_string()
            && l["target"].is_string()
            && l["fields"]["message"].is_string()),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["target"] == "web"
            && l["fields"]["message"] == "running rollback plan"
            && l["fields"]["incident"].is_string()),
        "{log}"
    );
    assert_eq!(daemon.stop(), Some(0));
}

/// Run the daemon until its first poll, stderr to a file; its log.
fn short_run(daemon_extra: &str) -> String {
    let (_tmp, dir, api) = setup(daemon_extra);
    let log = dir.join("daemon.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(dir.join("rollbackd.toml"))
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut running = Running {
        child,
        log: log.clone(),
    };
    wait_for(Duration::from_secs(15), "the API", || {
        prom::http_get(api, "/healthz")
            .ok()
            .filter(|(c, _)| *c == 200)
    });
    wait_version_seen(&dir.join("state"), "v1");
    running.assert_alive();
    assert_eq!(running.stop(), Some(0));
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn text_logs_to_a_file_have_no_colour() {
    let log = short_run("");
    assert!(log.contains("INFO"), "{log}");
    assert!(log.contains("target=web"), "{log}");
    assert!(!log.contains('\x1b'), "ANSI escape in the log:\n{log}");
}

/// `rollbackd run` for two seconds on a terminal (a pty from `script`),
/// with or without NO_COLOR; what the terminal showed.
fn on_a_terminal(no_color: bool) -> String {
    let (_tmp, dir, _api) = setup("log_format = \"text\"");
    let command = format!(
        "timeout -s TERM 2 {} run --config {}",
        bin(),
        dir.join("rollbackd.toml").display()
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qfec", &command, "/dev/null"])
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NO_COLOR");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd.output().expect("run script (util-linux) for a pty");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let coloured = on_a_terminal(false);
    assert!(coloured.contains("INFO"), "{coloured}");
    assert!(
        coloured.contains('\x1b'),
        "a terminal gets colour: {coloured}"
    );
    let plain = on_a_terminal(true);
    assert!(plain.contains("INFO"), "{plain}");
    assert!(!plain.contains('\x1b'), "NO_COLOR set: {plain}");
}

/// Run `script` (sh) in a private mount namespace whose /run is an empty
/// tmpfs: no journal socket unless the script makes one (needs root, as CI
/// has).
fn in_private_run(script: &str) {
    let script = format!("set -e\nmount -t tmpfs tmpfs /run\n{script}");
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare (util-linux)");
    assert!(
        out.status.success(),
        "cannot run the daemon in a private mount namespace (this test needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn under_a_journal_stream_without_a_journal_socket_logs_fall_back_to_text() {
    let (_tmp, dir, _api) = setup("");
    let log = dir.join("daemon.log");
    // As systemd does: JOURNAL_STREAM names stderr's device and inode, so
    // the default format is journald; the socket is missing.
    in_private_run(&format!(
        r#": > {log}
export JOURNAL_STREAM="$(stat -c %d:%i {log})"
RUST_LOG=info timeout -s TERM 2 {bin} run --config {config} 2>>{log} || true
"#,
        log = log.display(),
        bin = bin(),
        config = dir.join("rollbackd.toml").display(),
    ));
    let log = std::fs::read_to_string(&log).unwrap();
    let first = log.lines().next().unwrap_or_default();
    assert!(
        first.contains("WARN") && first.contains("cannot reach the journal socket"),
        "journald was the default under JOURNAL_STREAM and fell back, saying so first:\n{log}"
    );
    assert!(log.contains("INFO") && !log.contains('\x1b'), "{log}");
}

/// Reads datagrams on the journal socket path given as argv[1] and appends
/// each, prefixed with its length (u32 LE), to argv[2].
const JOURNAL_RECEIVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
out = open(sys.argv[2], "ab")
while True:
    d = s.recv(1 << 20)
    if d:
        out.write(len(d).to_bytes(4, "little") + d)
        out.flush()
"#;

/// The journal's native protocol: `KEY=value\n`, or `KEY\n` + u64 LE
/// length + bytes + `\n` for values with newlines.
fn journal_fields(mut d: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    while !d.is_empty() {
        let nl = d.iter().position(|&b| b == b'\n').unwrap_or(d.len());
        let line = &d[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            d = &d[(nl + 1).min(d.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &d[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            fields.push((key, String::from_utf8_lossy(&rest[8..8 + len]).into_owned()));
            d = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    fields
}

/// `log_format = "journald"` against a journal socket of our own: the
/// daemon runs in a private mount namespace whose /run is a tmpfs holding a
/// receiver at /run/systemd/journal/socket (needs root, as CI has).
#[test]
fn journald_entries_carry_priority_and_target_fields() {
    let (_tmp, dir, _api) = setup("log_format = \"journald\"");
    let received = dir.join("journal.bin");
    in_private_run(&format!(
        r#"mkdir -p /run/systemd/journal
python3 -c '{JOURNAL_RECEIVER}' /run/systemd/journal/socket {received} &
for i in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
RUST_LOG=info timeout -s TERM 3 {bin} run --config {config} 2>{stderr} || true
sleep 0.3
kill $!
"#,
        received = received.display(),
        bin = bin(),
        config = dir.join("rollbackd.toml").display(),
        stderr = dir.join("stderr.log").display(),
    ));
    let stderr = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    assert!(
        !stderr.contains("cannot reach the journal socket"),
        "fell back to text: {stderr}"
    );
    let bytes = std::fs::read(&received).expect("nothing reached the journal socket");
    let mut entries = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        entries.push(journal_fields(&rest[4..4 + len]));
        rest = &rest[4 + len..];
    }
    let field = |e: &Vec<(String, String)>, k: &str| -> Vec<String> {
        e.iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert!(entries.len() > 3, "{entries:?}");
    // Every entry: a message, the priority of its level, our identifier.
    for e in &entries {
        assert_eq!(field(e, "SYSLOG_IDENTIFIER"), ["rollbackd"], "{e:?}");
        assert!(!field(e, "MESSAGE").is_empty(), "{e:?}");
        let priority = field(e, "PRIORITY");
        assert!(
            priority == ["3"] || priority == ["4"] || priority == ["5"],
            "RUST_LOG=info: error 3, warn 4, info 5: {e:?}"
        );
    }
    // The target's name is a TARGET= field (journalctl TARGET=web).
    let version_seen = entries
        .iter()
        .find(|e| {
            field(e, "TARGET").contains(&"web".to_string())
                && field(e, "MESSAGE").iter().any(|m| m.contains("version"))
        })
        .unwrap_or_else(|| panic!("no entry with TARGET=web about the version: {entries:?}"));
    assert_eq!(field(version_seen, "PRIORITY"), ["5"], "info is notice");
    assert!(
        entries.iter().any(
            |e| field(e, "TARGET").contains(&"web".to_string()) && !field(e, "RULE").is_empty()
        ),
        "RULE= field: {entries:?}"
    );
    assert!(!stderr.contains('\x1b'), "{stderr}");
}
