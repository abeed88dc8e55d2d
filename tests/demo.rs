//! `rollbackd demo` run as a test, exactly as a user runs it.

mod common;

#[test]
fn demo_detects_rolls_back_verifies_and_mails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let started = std::time::Instant::now();
    let out = std::process::Command::new(common::bin())
        .args(["demo", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(90));
    for needle in [
        "version change seen: v1 -> v2",
        "Watching -> RollingBack",
        "RollingBack -> Verifying",
        "Verifying -> RolledBack",
        "result:   ROLLED BACK",
        "demo ok",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    assert_eq!(common::live(&dir), "v1");
    let mails = common::mails(&dir.join("state/outbox"));
    assert!(
        mails
            .iter()
            .any(|(_, m)| m.contains("ROLLED BACK v2 -> v1")),
        "{mails:?}"
    );
}
