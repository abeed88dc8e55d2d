//! Secret files named by the config (API token, SMTP and Prometheus
//! passwords, webhook executor tokens) must be readable by the owner only.
//! Validation stays pure: [`secret_files`] lists them from the validated
//! config, and [`check_modes`] (which stats them) is called by `check` and
//! `run`, which print or log each [`SecretWarning`].

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Config, PrometheusAuth};

/// A secret file that group or others may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretWarning {
    /// Config key path naming the file (`daemon.api_token_file`).
    pub key: String,
    /// The file.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

impl fmt::Display for SecretWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match (self.mode & 0o040 != 0, self.mode & 0o004 != 0) {
            (true, true) => "its group and all users",
            (true, false) => "its group",
            _ => "all users",
        };
        write!(
            f,
            "{}: warning: secret file {} is readable by {who} (mode {:04o}); run chmod 600 {}",
            self.key,
            self.path.display(),
            self.mode & 0o7777,
            self.path.display()
        )
    }
}

/// Every secret file the config names, with its key path. Pure.
pub fn secret_files(config: &Config) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    if let Some(p) = &config.daemon.api_token_file {
        files.push(("daemon.api_token_file".to_string(), p.clone()));
    }
    files.extend(config.notify.secret_files());
    let servers = config
        .prometheus
        .iter()
        .map(|p| ("prometheus".to_string(), p))
        .chain(
            config
                .prometheus_servers
                .iter()
                .map(|(name, p)| (format!("prometheus.servers.{name}"), p)),
        );
    for (path, p) in servers {
        match &p.auth {
            Some(PrometheusAuth::Basic { password_file, .. }) => {
                files.push((format!("{path}.password_file"), password_file.clone()))
            }
            Some(PrometheusAuth::Bearer { token_file }) => {
                files.push((format!("{path}.bearer_token_file"), token_file.clone()))
            }
            None => {}
        }
    }
    if let Some(c) = &config.cluster {
        if let Some(a) = &c.auth {
            files.push(("cluster.password_file".to_string(), a.password_file.clone()));
        }
        if let Some(k) = &c.client_cert {
            files.push(("cluster.key_file".to_string(), k.key_file.clone()));
        }
    }
    for (i, t) in config.targets.iter().enumerate() {
        for (key, p) in t.rollback.kind.secret_files() {
            files.push((format!("target[{i}].rollback.{key}"), p));
        }
    }
    files
}

/// The secret files readable by group or others. A file that cannot be
/// stat'ed is not reported here: reading it fails later with its own error.
pub fn check_modes(config: &Config) -> Vec<SecretWarning> {
    secret_files(config)
        .into_iter()
        .filter_map(|(key, path)| {
            let mode = mode_of(&path)?;
            (mode & 0o044 != 0).then_some(SecretWarning { key, path, mode })
        })
        .collect()
}

fn mode_of(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|m| m.permissions().mode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_names_key_file_and_mode() {
        let w = SecretWarning {
            key: "daemon.api_token_file".into(),
            path: "/etc/rollbackd/api-token".into(),
            mode: 0o100644,
        };
        assert_eq!(
            w.to_string(),
            "daemon.api_token_file: warning: secret file /etc/rollbackd/api-token is readable by its group and all users (mode 0644); run chmod 600 /etc/rollbackd/api-token"
        );
    }

    #[test]
    fn modes_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t").unwrap();
        let text = format!(
            "[daemon]\nstate_dir = {:?}\napi_token_file = {:?}\n\n\
             [[target]]\nname = \"web\"\n\
             [[target.rule]]\nname = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\n\
             [target.rollback]\nkind = \"command\"\nsteps = [[\"true\"]]\n",
            dir.path().join("state"),
            token
        );
        let config = crate::config::load_str("c.toml", &text).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
        let w = check_modes(&config);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0]
            .to_string()
            .contains("readable by its group (mode 0640)"));
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_modes(&config).is_empty());
    }
}
