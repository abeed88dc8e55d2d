//! Test helpers for `[cluster]`: a real etcd (the Debian package's
//! `/usr/bin/etcd`) on free loopback ports, and a TCP forwarder that can
//! cut one node off (a partition) and let it through again. Included with
//! `#[path]` by the tests that need them.
#![allow(dead_code)]

#[path = "serving.rs"]
mod serving;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The etcd binary the tests run (Debian's `etcd-server`).
pub const ETCD: &str = "/usr/bin/etcd";

pub use serving::free_port;

/// A single-member etcd on loopback, killed on drop. Its data directory
/// survives [`Etcd::stop`] so that [`Etcd::start_again`] brings back the
/// same cluster (with its leases and keys).
pub struct Etcd {
    pub client_port: u16,
    peer_port: u16,
    /// Plain-HTTP `/health` (and `/metrics`), whatever the client URLs speak.
    metrics_port: u16,
    /// With TLS: the client URL is https:// and a client certificate
    /// signed by the test CA is required.
    tls: Option<TlsFiles>,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Etcd {
    /// Start etcd in `dir`; panics (never skips) when the binary is
    /// missing or the server does not come up.
    pub fn start(dir: &Path) -> Etcd {
        Etcd::start_with(dir, None)
    }

    /// Start etcd in `dir`, with `tls`: client URLs are https:// and
    /// every client must present a certificate signed by `tls.ca`
    /// (`--client-cert-auth`).
    pub fn start_with(dir: &Path, tls: Option<TlsFiles>) -> Etcd {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: install Debian's etcd-server (scripts/test.sh does)"
        );
        let mut e = Etcd {
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            tls,
            data_dir: dir.join("etcd-data"),
            log: dir.join("etcd.log"),
            child: None,
        };
        e.start_again();
        e
    }

    /// `http://127.0.0.1:PORT`, or `https://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Turn on authentication with a `root` user whose password is
    /// `password` (what `etcdctl user add root` and `etcdctl auth enable`
    /// do), through the etcd v3 API.
    pub fn enable_auth(&self, password: &str) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = self.url();
        let tls = self.tls.clone();
        rt.block_on(async move {
            let mut options = etcd_client::ConnectOptions::new();
            if let Some(t) = &tls {
                options = options.with_tls(t.client_tls(&t.client_cert, &t.client_key));
            }
            let mut c = etcd_client::Client::connect([url.as_str()], Some(options))
                .await
                .expect("connect to etcd to enable auth");
            c.user_add("root", password, None)
                .await
                .expect("user add root");
            c.user_grant_role("root", "root")
                .await
                .expect("user grant-role root root");
            c.auth_enable().await.expect("auth enable");
        });
    }

    /// Start the stopped server again on the same ports and data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let metrics = format!("http://127.0.0.1:{}", self.metrics_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log");
        let mut cmd = Command::new(ETCD);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-metrics-urls", &metrics])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {ETCD}: {e}"));
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let port = self.metrics_port;
        serving::wait_ready(
            self.child.as_mut().unwrap(),
            &self.log,
            ("etcd", "healthy"),
            Duration::from_secs(20),
            || {
                matches!(http_get(port, "/health"),
                    Ok((200, body)) if body.contains("\"health\":\"true\""))
            },
        );
    }

    /// Kill the server (SIGKILL) and wait for it: etcd is down.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One blocking HTTP GET on loopback: `(status, body)`.
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    serving::get(port, path, Duration::from_secs(2))
}

/// A TCP forwarder from a loopback port to `upstream`. While partitioned
/// it forwards nothing: open connections go silent (bytes are held, not
/// refused, as when a network drops packets) and new ones are accepted
/// and left unanswered; healing closes those and forwards again.
pub struct Proxy {
    pub port: u16,
    partitioned: Arc<AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
}

impl Proxy {
    /// Start on a free port; needs a tokio runtime.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let partitioned = Arc::new(AtomicBool::new(false));
        let stop = tokio_util::sync::CancellationToken::new();
        let (p, s) = (partitioned.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (p, s) = (p.clone(), s.clone());
                tokio::spawn(async move {
                    if p.load(Ordering::SeqCst) {
                        hold_until_healed(&p, &s).await;
                        return;
                    }
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let cut = async {
                        while !p.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut => hold_until_healed(&p, &s).await,
                        _ = s.cancelled() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            partitioned,
            stop,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cut the node behind this proxy off from etcd.
    pub fn partition(&self) {
        self.partitioned.store(true, Ordering::SeqCst);
    }

    /// Let it through again (connections held during the partition close).
    pub fn heal(&self) {
        self.partitioned.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Keep a connection's sockets open and silent until the partition heals.
async fn hold_until_healed(p: &AtomicBool, s: &tokio_util::sync::CancellationToken) {
    while p.load(Ordering::SeqCst) && !s.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A test CA, etcd's server certificate (for 127.0.0.1) and two client
/// certificates: one signed by the CA, one by another CA etcd does not
/// trust. Made with `openssl` in a directory of the test's.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Signed by a CA etcd does not know.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

impl TlsFiles {
    /// Generate everything under `dir/tls`; panics when openssl fails.
    pub fn generate(dir: &Path) -> TlsFiles {
        let d = dir.join("tls");
        std::fs::create_dir_all(&d).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&d)
                .output()
                .unwrap_or_else(|e| panic!("cannot run openssl (install it): {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ca = |name: &str| {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-subj",
                &format!("/CN={name}"),
            ]);
        };
        let signed = |name: &str, by: &str, ext: &str| {
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ]);
            std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
            openssl(&[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{by}.pem"),
                "-CAkey",
                &format!("{by}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ]);
        };
        ca("ca");
        ca("other-ca");
        signed(
            "server",
            "ca",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        signed("client", "ca", "extendedKeyUsage=clientAuth\n");
        signed("stranger", "other-ca", "extendedKeyUsage=clientAuth\n");
        let f = |n: &str| d.join(n);
        TlsFiles {
            ca: f("ca.pem"),
            server_cert: f("server.pem"),
            server_key: f("server.key"),
            client_cert: f("client.pem"),
            client_key: f("client.key"),
            stranger_cert: f("stranger.pem"),
            stranger_key: f("stranger.key"),
        }
    }

    /// The etcd client's TLS with this CA and a client certificate.
    pub fn client_tls(&self, cert: &Path, key: &Path) -> etcd_client::TlsOptions {
        let read = |p: &Path| std::fs::read(p).unwrap();
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca)))
            .identity(etcd_client::Identity::from_pem(read(cert), read(key)))
    }

    /// `[cluster]` keys for a node presenting `cert`/`key`.
    pub fn cluster_keys(&self, cert: &Path, key: &Path) -> String {
        format!(
            "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            self.ca.display(),
            cert.display(),
            key.display()
        )
    }
}
