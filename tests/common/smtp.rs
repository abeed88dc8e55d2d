//! A real SMTP server for tests: Debian's aiosmtpd run by `/usr/bin/python3`
//! with a small handler that writes every accepted message to a directory
//! as JSON (envelope, authenticated user, whether the session was TLS,
//! content). Options: AUTH with a user and password (allowed over plain
//! loopback unless TLS is on), reject every message with a 5xx, accept
//! slowly, or speak TLS (implicit or required STARTTLS) with a certificate
//! from [`TestCert`].

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Python that has aiosmtpd (the `python3` on PATH may not).
pub const PYTHON: &str = "/usr/bin/python3";

const SCRIPT: &str = r#"
import argparse, asyncio, json, os, ssl, sys, threading, time, uuid
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--dir", required=True)
p.add_argument("--auth", default="")
p.add_argument("--reject", action="store_true")
p.add_argument("--delay", type=float, default=0.0)
p.add_argument("--tls", choices=["implicit", "starttls"])
p.add_argument("--cert")
p.add_argument("--key")
a = p.parse_args()

class Handler:
    async def handle_DATA(self, server, session, envelope):
        if a.delay:
            await asyncio.sleep(a.delay)
        if a.reject:
            with open(os.path.join(a.dir, "rejections"), "a") as f:
                f.write("x\n")
            return "554 5.7.1 rejected by the test server"
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth_user": login,
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "content": envelope.original_content.decode("utf-8", "replace"),
        }
        name = "%d-%s.json" % (time.time_ns(), uuid.uuid4().hex)
        tmp = os.path.join(a.dir, "." + name)
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(a.dir, name))
        return "250 OK"

def authenticator(server, session, envelope, mechanism, auth_data):
    user, _, pw = a.auth.partition(":")
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == user.encode() and auth_data.password == pw.encode()
    if not ok:
        with open(os.path.join(a.dir, "auth_failures"), "a") as f:
            f.write("x\n")
    return AuthResult(success=ok, handled=False, auth_data=auth_data)

kw = {}
if a.auth:
    # With STARTTLS aiosmtpd itself refuses AUTH before the upgrade; with
    # implicit TLS it does not know the socket is TLS, so do not ask it to.
    kw = dict(authenticator=authenticator, auth_required=True, auth_require_tls=a.tls == "starttls")
if a.tls:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
    if a.tls == "implicit":
        kw["ssl_context"] = ctx
    else:
        kw.update(tls_context=ctx, require_starttls=True)
c = Controller(Handler(), hostname="127.0.0.1", port=a.port, **kw)
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
"#;

/// How the server behaves.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// `user:password` required (AUTH PLAIN/LOGIN over plain loopback).
    pub auth: Option<String>,
    /// Answer every DATA with 554.
    pub reject: bool,
    /// Seconds to wait before answering DATA.
    pub delay: Option<f64>,
    /// Speak TLS with this certificate.
    pub tls: Option<(TlsMode, TestCert)>,
}

/// How the server offers TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (`smtps://`).
    Implicit,
    /// STARTTLS, required before MAIL and AUTH (`smtp://...?tls=starttls`).
    StartTls,
}

/// A server certificate for `localhost` and `127.0.0.1` signed by a
/// private test CA, made by `/usr/bin/openssl`: `ca` is what a client
/// trusts (`ca_file`), `cert` and `key` are what the server presents.
#[derive(Debug, Clone)]
pub struct TestCert {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj SUBJECT
/// -keyout KEY -out CERT EXTRA...`: a new key and its certificate.
fn openssl_req(subject: &str, key: &Path, cert: &Path, extra: &[&str]) {
    let out = Command::new("/usr/bin/openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", subject])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .args(extra)
        .output()
        .expect("run /usr/bin/openssl to make the test certificates");
    assert!(
        out.status.success(),
        "openssl req for {subject} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCert {
    /// Generate `dir/NAME-ca.pem` (a CA) and `dir/NAME.pem`, `dir/NAME.key`
    /// (the server's certificate, signed by it). Panics when openssl fails.
    pub fn generate(dir: &Path, name: &str) -> TestCert {
        let p = |suffix: &str| dir.join(format!("{name}{suffix}"));
        let (ca, ca_key, cert, key) = (p("-ca.pem"), p("-ca.key"), p(".pem"), p(".key"));
        openssl_req(&format!("/CN=rollbackd test CA {name}"), &ca_key, &ca, &[]);
        // rustls refuses a CA certificate as the server's own (and a
        // self-signed leaf is no private CA): sign a leaf with the CA.
        let (ca_arg, ca_key_arg) = (ca.to_str().unwrap(), ca_key.to_str().unwrap());
        openssl_req(
            "/CN=localhost",
            &key,
            &cert,
            &[
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "extendedKeyUsage=serverAuth",
                "-CA",
                ca_arg,
                "-CAkey",
                ca_key_arg,
            ],
        );
        TestCert { ca, cert, key }
    }
}

/// One accepted message.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub auth_user: Option<String>,
    /// Whether the session that delivered it was TLS.
    #[serde(default)]
    pub tls: bool,
    pub content: String,
}

impl Received {
    /// A header's value (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.content.split("\r\n\r\n").next().unwrap_or("");
        let mut out: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = out.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if out.is_some() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    out = Some(v.trim().to_string());
                }
            }
        }
        out
    }

    /// The content with quoted-printable undone, for searching the body.
    pub fn text(&self) -> String {
        super::decode_quoted_printable(&self.content)
    }
}

/// A running aiosmtpd, killed on drop.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

pub use super::free_port;

impl SmtpServer {
    /// Start on a free port; messages go to `dir/received`.
    pub fn start(dir: &Path, behaviour: Behaviour) -> SmtpServer {
        SmtpServer::start_on(free_port(), dir, behaviour)
    }

    /// Start on `port`. Panics (never skips) when aiosmtpd is missing.
    pub fn start_on(port: u16, dir: &Path, behaviour: Behaviour) -> SmtpServer {
        let script = dir.join("smtpd.py");
        std::fs::write(&script, SCRIPT).expect("write smtpd.py");
        let received = dir.join("received");
        std::fs::create_dir_all(&received).unwrap();
        let mut cmd = Command::new(PYTHON);
        cmd.arg(&script)
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(&received);
        if let Some(auth) = &behaviour.auth {
            cmd.arg("--auth").arg(auth);
        }
        if behaviour.reject {
            cmd.arg("--reject");
        }
        if let Some(d) = behaviour.delay {
            cmd.arg("--delay").arg(d.to_string());
        }
        if let Some((mode, cert)) = &behaviour.tls {
            let mode = match mode {
                TlsMode::Implicit => "implicit",
                TlsMode::StartTls => "starttls",
            };
            cmd.args(["--tls", mode])
                .arg("--cert")
                .arg(&cert.cert)
                .arg("--key")
                .arg(&cert.key);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {PYTHON} for the SMTP test server (install python3-aiosmtpd): {e}")
            });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.trim() == "ready" => {}
            other => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("wait");
                panic!(
                    "aiosmtpd did not start on 127.0.0.1:{port} ({other:?}); is python3-aiosmtpd installed for {PYTHON}? stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        SmtpServer {
            child,
            port,
            dir: received,
        }
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// How many AUTH attempts were refused.
    pub fn auth_failures(&self) -> usize {
        std::fs::read_to_string(self.dir.join("auth_failures"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// How many messages were refused with 554 (`reject`).
    pub fn rejections(&self) -> usize {
        std::fs::read_to_string(self.dir.join("rejections"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// Every message accepted so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        received_in(&self.dir)
    }
}

/// Messages a server wrote to `dir` (also after it stopped).
pub fn received_in(dir: &Path) -> Vec<Received> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "json")
                        && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).expect("received json"))
        .collect()
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
