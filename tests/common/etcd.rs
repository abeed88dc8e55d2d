//! Test helpers for `[cluster]`: a real etcd (the Debian package's
//! `/usr/bin/etcd`) on free loopback ports, and a TCP forwarder that can
//! cut one node off (a partition) and let it through again. Included with
//! `#[path]` by the tests that need them.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The etcd binary the tests run (Debian's `etcd-server`).
pub const ETCD: &str = "/usr/bin/etcd";

/// A free loopback port (bound, read back, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// A single-member etcd on loopback, killed on drop. Its data directory
/// survives [`Etcd::stop`] so that [`Etcd::start_again`] brings back the
/// same cluster (with its leases and keys).
pub struct Etcd {
    pub client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Etcd {
    /// Start etcd in `dir`; panics (never skips) when the binary is
    /// missing or the server does not come up.
    pub fn start(dir: &Path) -> Etcd {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: install Debian's etcd-server (scripts/test.sh does)"
        );
        let mut e = Etcd {
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: dir.join("etcd-data"),
            log: dir.join("etcd.log"),
            child: None,
        };
        e.start_again();
        e
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Start the stopped server again on the same ports and data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log");
        let child = Command::new(ETCD)
            .arg("--data-dir")
            .arg(&self.data_dir)
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
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, body)) = http_get(self.client_port, "/health") {
                if body.contains("\"health\":\"true\"") {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "etcd exited with {status} before it was healthy; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy within 20s; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
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
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
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
