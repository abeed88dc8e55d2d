//! The `[cluster]` section.

use super::*;

#[test]
fn cluster_section_is_checked() {
    let cluster = |body: &str| config(&[("top", &format!("[cluster]\n{body}"))]);
    const ETCD: &str = "etcd = [\"http://10.0.0.5:2379\"]";
    const TLS: &str = "etcd = [\"https://etcd-1.internal:2379\", \"https://etcd-2.internal:2379\"]";
    let cases: Vec<(String, &str, &str)> = vec![
        (cluster(""), "cluster.etcd", "required key is missing"),
        (cluster("etcd = []"), "cluster.etcd", "names no endpoint"),
        (
            cluster("etcd = [\"10.0.0.5:2379\"]"),
            "cluster.etcd[0]",
            "invalid URL \"10.0.0.5:2379\"",
        ),
        (
            cluster("etcd = [\"grpc://10.0.0.5:2379\"]"),
            "cluster.etcd[0]",
            "must start with http:// or https://",
        ),
        (
            cluster("etcd = [\"http://10.0.0.5\"]"),
            "cluster.etcd[0]",
            "has no port",
        ),
        (
            cluster("etcd = [\"http://10.0.0.5:2379/v3\"]"),
            "cluster.etcd[0]",
            "must not have a path",
        ),
        (
            cluster("etcd = [\"http://root:pw@10.0.0.5:2379\"]"),
            "cluster.etcd[0]",
            "credentials do not belong",
        ),
        (
            cluster("etcd = [\"http://10.0.0.5:2379\", \"http://10.0.0.5:2379\"]"),
            "cluster.etcd[1]",
            "listed twice",
        ),
        (
            cluster("etcd = [\"http://10.0.0.5:2379\", \"https://10.0.0.6:2379\"]"),
            "cluster.etcd",
            "mixes http:// and https://",
        ),
        (
            cluster(&format!("{ETCD}\nprefix = \"rollbackd\"")),
            "cluster.prefix",
            "prefix = \"rollbackd\" must start with \"/\"",
        ),
        (
            cluster(&format!("{ETCD}\nprefix = \"/roll backd/\"")),
            "cluster.prefix",
            "must not contain spaces",
        ),
        (
            cluster(&format!("{ETCD}\nnode = \"\"")),
            "cluster.node",
            "must be 1 to 128 characters",
        ),
        (
            cluster(&format!("{ETCD}\nnode = \"a/b\"")),
            "cluster.node",
            "node = \"a/b\" must not contain \"/\"",
        ),
        (
            cluster(&format!("{ETCD}\nlease_ttl = \"1s\"")),
            "cluster.lease_ttl",
            "lease_ttl = \"1s\" is below the minimum of 2s",
        ),
        (
            cluster(&format!("{ETCD}\nlease_ttl = \"2500ms\"")),
            "cluster.lease_ttl",
            "must be whole seconds",
        ),
        (
            cluster(&format!("{ETCD}\nlease_ttl = \"2h\"")),
            "cluster.lease_ttl",
            "above the maximum of 1h",
        ),
        (
            cluster(&format!("{ETCD}\nlease_ttl = \"ten\"")),
            "cluster.lease_ttl",
            "invalid duration \"ten\"",
        ),
        (
            cluster(&format!("{ETCD}\non_etcd_down = \"panic\"")),
            "cluster.on_etcd_down",
            "invalid on_etcd_down \"panic\" (use \"hold\" or \"act_alone\")",
        ),
        (
            cluster(&format!("{TLS}\nca_file = \"ca.pem\"")),
            "cluster.ca_file",
            "\"ca.pem\" must be an absolute path",
        ),
        (
            cluster(&format!("{TLS}\ncert_file = \"/etc/rollbackd/etcd.pem\"")),
            "cluster.cert_file",
            "cert_file is set but key_file is not",
        ),
        (
            cluster(&format!("{TLS}\nkey_file = \"/etc/rollbackd/etcd.key\"")),
            "cluster.key_file",
            "key_file is set but cert_file is not",
        ),
        (
            cluster(&format!("{ETCD}\nca_file = \"/etc/rollbackd/ca.pem\"")),
            "cluster.ca_file",
            "TLS keys only matter with https://",
        ),
        (
            cluster(&format!("{TLS}\nusername = \"rollbackd\"")),
            "cluster.username",
            "username is set but password_file is not",
        ),
        (
            cluster(&format!(
                "{TLS}\npassword_file = \"/etc/rollbackd/etcd-password\""
            )),
            "cluster.password_file",
            "password_file is set but username is not",
        ),
        (
            cluster(&format!(
                "{TLS}\nusername = \"\"\npassword_file = \"/etc/rollbackd/etcd-password\""
            )),
            "cluster.username",
            "must not be empty",
        ),
        (
            cluster(&format!("{TLS}\npassword = \"hunter2\"")),
            "cluster.password",
            "never read from the config file",
        ),
        (
            cluster(&format!(
                "{ETCD}\nusername = \"rb\"\npassword_file = \"/etc/rollbackd/etcd-password\""
            )),
            "cluster.etcd",
            "\"http://10.0.0.5:2379/\" is plaintext to a remote host and username is set",
        ),
        (
            cluster(&format!("{ETCD}\nleader = true")),
            "cluster.leader",
            "unknown key",
        ),
        (
            config(&[("top", "cluster = 1")]),
            "cluster",
            "expected a table [cluster]",
        ),
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

    // `{lease}` (the fencing token) needs [cluster]; with it, it is valid.
    let fenced = "kind = \"command\"\nsteps = [[\"deploy\", \"--fence={lease}\"]]";
    let errs = errors(&config(&[("rollback", fenced)]));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, "target[0].rollback.steps[0]");
    assert!(
        errs[0].message.contains("needs a [cluster] section"),
        "{errs:#?}"
    );
    let body = "kind = \"webhook\"\nurl = \"https://ci/\"\nbody = '{\"fence\": \"{lease}\"}'";
    let errs = errors(&config(&[("rollback", body)]));
    assert!(
        errs.len() == 1 && errs[0].message.contains("needs a [cluster] section"),
        "{errs:#?}"
    );
    let with_cluster = config(&[("top", &format!("[cluster]\n{ETCD}")), ("rollback", fenced)]);
    assert!(load_str("t", &with_cluster).is_ok());

    // No section: no cluster. Defaults, and a full TLS + auth section.
    assert!(load_str("t", &config(&[])).unwrap().cluster.is_none());
    let c = load_str("t", &cluster(ETCD)).unwrap().cluster.unwrap();
    assert_eq!(c.prefix, "/rollbackd/");
    assert_eq!(c.node, None);
    assert_eq!(c.lease_ttl, Duration::from_secs(10));
    assert_eq!(c.on_etcd_down, crate::config::OnEtcdDown::Hold);
    assert!(c.client_cert.is_none() && c.auth.is_none() && c.ca_file.is_none());
    let c = load_str(
        "t",
        &cluster(&format!(
            "{TLS}\nprefix = \"/ops/rollbackd\"\nnode = \"deploy-1\"\nlease_ttl = \"5s\"\n\
                 ca_file = \"/etc/rollbackd/etcd-ca.pem\"\ncert_file = \"/etc/rollbackd/etcd.pem\"\n\
                 key_file = \"/etc/rollbackd/etcd.key\"\nusername = \"rollbackd\"\n\
                 password_file = \"/etc/rollbackd/etcd-password\"\non_etcd_down = \"act_alone\""
        )),
    )
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(c.etcd.len(), 2);
    assert_eq!(c.prefix, "/ops/rollbackd/");
    assert_eq!(c.node.as_deref(), Some("deploy-1"));
    assert_eq!(c.lease_ttl, Duration::from_secs(5));
    assert_eq!(c.on_etcd_down, crate::config::OnEtcdDown::ActAlone);
    assert_eq!(
        c.client_cert.unwrap().key_file,
        PathBuf::from("/etc/rollbackd/etcd.key")
    );
    assert_eq!(c.auth.unwrap().username, "rollbackd");
    // Auth over plaintext to this machine's own etcd is fine.
    assert!(load_str(
        "t",
        &cluster(
            "etcd = [\"http://127.0.0.1:2379\"]\nusername = \"rb\"\npassword_file = \"/etc/rb/pw\""
        )
    )
    .is_ok());
}
