//! The Debian package: `scripts/package.sh` builds it with cargo-deb, and
//! its contents, extracted with `dpkg-deb -x` into a temporary root, are
//! complete: the binary runs `check` on the packaged config, the unit points
//! at the packaged binary, the config is a conffile, the man page and
//! completions are there. Fails (never skips) when cargo-deb or dpkg-deb is
//! missing: scripts/test.sh installs cargo-deb.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Build the package (one release build; cargo-deb does not build again).
fn build_deb() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_cargo_deb = Command::new(&cargo)
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_cargo_deb,
        "cargo-deb is missing: `cargo install cargo-deb --locked` (scripts/test.sh installs it)"
    );
    let stdout = run(Command::new(Path::new(ROOT).join("scripts/package.sh")).current_dir(ROOT));
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        deb.is_file() && deb.extension().is_some_and(|e| e == "deb"),
        "scripts/package.sh did not print a .deb path:\n{stdout}"
    );
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("rollbackd_{}-", env!("CARGO_PKG_VERSION"))),
        "{name}"
    );
    deb
}

#[test]
fn deb_installs_binary_unit_conffile_man_page_and_completions() {
    let deb = build_deb();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let control = tmp.path().join("DEBIAN");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));

    for path in [
        "usr/bin/rollbackd",
        "etc/rollbackd/rollbackd.toml",
        "usr/lib/systemd/system/rollbackd.service",
        "usr/share/man/man1/rollbackd.1.gz",
        "usr/share/bash-completion/completions/rollbackd",
        "usr/share/zsh/vendor-completions/_rollbackd",
        "usr/share/doc/rollbackd/README.md",
        "usr/share/doc/rollbackd/docs/systemd.md",
        "usr/share/doc/rollbackd/contrib/rollbackd-alerts.yml",
        "usr/share/doc/rollbackd/contrib/rollbackd-dashboard.json",
    ] {
        assert!(
            root.join(path).is_file(),
            "{path} missing from {}",
            deb.display()
        );
    }

    // The packaged binary validates the packaged config.
    let bin = root.join("usr/bin/rollbackd");
    let config = root.join("etc/rollbackd/rollbackd.toml");
    let out = run(Command::new(&bin).arg("check").arg("--config").arg(&config));
    assert!(out.contains(": ok ("), "{out}");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        std::fs::read_to_string(Path::new(ROOT).join("config/rollbackd.example.toml")).unwrap()
    );

    // The config is a conffile: an upgrade keeps the operator's edits.
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/rollbackd/rollbackd.toml"),
        "{conffiles}"
    );
    // The unit runs the packaged binary as the user postinst creates.
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/rollbackd.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/rollbackd run --config /etc/rollbackd/rollbackd.toml"),
        "{unit}"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains("useradd --system") && postinst.contains("rollbackd.service"),
        "{postinst}"
    );
    let fields = run(Command::new("dpkg-deb").arg("-f").arg(&deb));
    for field in [
        "Package: rollbackd",
        &format!("Version: {}-", env!("CARGO_PKG_VERSION")),
        "Section: admin",
        "Depends: ",
    ] {
        assert!(fields.contains(field), "{fields}");
    }

    // The man page and completions are the binary's own.
    let man = run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {}",
        root.join("usr/share/man/man1/rollbackd.1.gz").display()
    )));
    assert!(man.contains(".TH rollbackd 1"), "{man}");
    assert!(man.contains("completions"), "the verbs are listed: {man}");
    let bash =
        std::fs::read_to_string(root.join("usr/share/bash-completion/completions/rollbackd"))
            .unwrap();
    assert_eq!(bash, run(Command::new(&bin).args(["completions", "bash"])));
    assert!(
        bash.contains("approve") && bash.contains("--config"),
        "{bash}"
    );
    let zsh =
        std::fs::read_to_string(root.join("usr/share/zsh/vendor-completions/_rollbackd")).unwrap();
    assert!(zsh.starts_with("#compdef rollbackd"), "{zsh}");
}
