//! Fake `kubectl` and `docker` programs for executor tests: small
//! /usr/bin/python3 scripts written into a temp dir, keeping their state in
//! a JSON file and appending every argv to a log.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One installed fake program.
pub struct Fake {
    /// Directory holding the program (put it first on PATH, or use `program`).
    pub dir: PathBuf,
    /// The program's path.
    pub program: PathBuf,
    state: PathBuf,
    log: PathBuf,
}

impl Fake {
    /// Install `name` (`kubectl` or `docker`) in `dir` with this state.
    pub fn install(dir: &Path, name: &str, state: serde_json::Value) -> Fake {
        assert!(
            Path::new("/usr/bin/python3").exists(),
            "/usr/bin/python3 is needed for the fake {name}"
        );
        let source = match name {
            "kubectl" => include_str!("kubectl.py"),
            "docker" => include_str!("docker.py"),
            other => panic!("no fake for {other}"),
        };
        std::fs::create_dir_all(dir).unwrap();
        let program = dir.join(name);
        let state_path = dir.join(format!("{name}-state.json"));
        let log = dir.join(format!("{name}-argv.log"));
        let script = source
            .replace("@STATE@", state_path.to_str().unwrap())
            .replace("@LOG@", log.to_str().unwrap());
        std::fs::write(&program, script).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(&state_path, state.to_string()).unwrap();
        std::fs::write(&log, "").unwrap();
        Fake {
            dir: dir.to_path_buf(),
            program,
            state: state_path,
            log,
        }
    }

    /// The program path as a config value.
    pub fn path(&self) -> String {
        self.program.display().to_string()
    }

    /// Every argv it was called with, in order (without the program).
    pub fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Its state now.
    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&self.state).unwrap()).unwrap()
    }

    /// Replace its state.
    pub fn set_state(&self, state: serde_json::Value) {
        std::fs::write(&self.state, state.to_string()).unwrap();
    }
}

/// `["a", "b"]` as owned strings.
pub fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}
