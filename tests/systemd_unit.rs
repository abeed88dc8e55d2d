//! `systemd/rollbackd.service` as systemd reads it: `systemd-analyze verify`
//! on a copy pointing at the built binary, and the hardening score of
//! `systemd-analyze security --offline=yes` at or below 4.0. Fails (never
//! skips) when systemd-analyze is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/rollbackd.service");
const SYSTEMD_ANALYZE: &str = "systemd-analyze";
const MAX_EXPOSURE: f64 = 4.0;

/// The unit with its `/usr/bin/rollbackd` replaced by the binary under test,
/// in a temp dir (the file keeps its name: systemd derives the unit name).
fn unit_copy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(UNIT).unwrap();
    assert!(
        text.contains("/usr/bin/rollbackd"),
        "the unit runs /usr/bin/rollbackd (the Debian package's path)"
    );
    let copy = dir.join("rollbackd.service");
    std::fs::write(
        &copy,
        text.replace("/usr/bin/rollbackd", env!("CARGO_BIN_EXE_rollbackd")),
    )
    .unwrap();
    copy
}

fn analyze(args: &[&str], unit: &Path) -> (bool, String, String) {
    let out = Command::new(SYSTEMD_ANALYZE)
        .args(args)
        .arg(unit)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {SYSTEMD_ANALYZE} ({e}): install the Debian package `systemd` (scripts/test.sh does)")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unit_verifies_against_the_built_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let unit = unit_copy(tmp.path());
    // --man=no: the man page of `Documentation=` is installed by the package.
    let (ok, stdout, stderr) = analyze(&["verify", "--man=no"], &unit);
    assert!(ok, "systemd-analyze verify failed:\n{stdout}\n{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("rollbackd.service"))
        .collect();
    assert!(warnings.is_empty(), "verify warns:\n{stderr}");
}

#[test]
fn unit_hardening_exposure_is_at_most_4() {
    let tmp = tempfile::tempdir().unwrap();
    let unit = unit_copy(tmp.path());
    let (_, stdout, stderr) = analyze(&["security", "--offline=yes", "--no-pager"], &unit);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}\n{stderr}"));
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{stdout}"
    );
}

#[test]
fn unit_reloads_with_sighup_and_runs_as_its_own_user() {
    let text = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "TimeoutStopSec=30s",
        "LimitNOFILE=65536",
        "User=rollbackd",
        "RestartPreventExitStatus=64",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=\n",
        "MemoryDenyWriteExecute=yes",
    ] {
        assert!(text.contains(line), "unit lacks {line:?}");
    }
}
