//! One blocking HTTP GET on loopback over a bare TCP stream, for the
//! server helpers (`prometheus.rs`, `etcd.rs`) that poll a server without
//! a runtime. Included with `#[path]` by them.

use std::io::{Read, Write};
use std::time::Duration;

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
