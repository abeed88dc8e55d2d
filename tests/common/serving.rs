//! What the server helpers (`prometheus.rs`, `etcd.rs`) share: one
//! blocking HTTP GET on loopback over a bare TCP stream (they poll without
//! a runtime) and the wait for a started server to be ready. Included with
//! `#[path]` by them.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// A free loopback port (bound, read back, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `ready` every 100 ms until it holds. Panics, with the server's
/// log at `log`, when `child` exits first or `within` passes; `what`
/// names the server and `state` what it waits for (`ready`, `healthy`).
pub fn wait_ready(
    child: &mut Child,
    log: &Path,
    (what, state): (&str, &str),
    within: Duration,
    mut ready: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{what} exited with {status} before it was {state}; log:\n{}",
                log_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} not {state} within {within:?}; log:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET path` on `127.0.0.1:port`, reading at most `read_timeout` between
/// bytes: `(status, body)`.
pub fn get(port: u16, path: &str, read_timeout: Duration) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(read_timeout))?;
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
