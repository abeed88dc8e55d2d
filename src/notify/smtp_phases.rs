//! One SMTP conversation in which every phase honours `notify.email.timeout`:
//! connect, greeting, EHLO, STARTTLS (and its TLS handshake), AUTH, MAIL /
//! RCPT / DATA and QUIT.
//!
//! lettre's own transport bounds only the TCP connect: a server that
//! accepts and never greets held a mail until the sender's outer limit.
//! Here lettre speaks SMTP over a stream of ours ([`Timed`]) that fails any
//! read or write not done by the phase's deadline; a phase starts when the
//! client writes after it has read (a new command), so a server that
//! trickles its answer cannot stretch a phase either.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How to reach the server and what to say, built once at start.
#[derive(Clone)]
pub(crate) struct Settings {
    /// Host to connect to (and to name in EHLO errors).
    pub host: String,
    /// Port.
    pub port: u16,
    /// `Some` with `implicit`: TLS from the first byte; else STARTTLS.
    pub tls: Option<(TlsParameters, Implicit)>,
    /// AUTH, when a username is configured.
    pub credentials: Option<Credentials>,
    /// Each phase's limit.
    pub timeout: Duration,
}

/// Whether TLS starts with the connection (`smtps://`) or after STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Implicit {
    /// `smtps://`.
    Yes,
    /// `?tls=starttls`, required.
    No,
}

/// Why a conversation failed.
#[derive(Debug)]
pub(crate) enum Failed {
    /// A phase got no answer within the timeout.
    Timeout {
        /// `connect`, `greeting`, `EHLO`, ...
        phase: &'static str,
    },
    /// The TCP connection failed (refused, unreachable, no such host).
    Connect(std::io::Error),
    /// The server or lettre said no.
    Smtp(lettre::transport::smtp::Error),
}

/// Send one message: connect, greet, (TLS), EHLO, (AUTH), MAIL/RCPT/DATA,
/// QUIT, each phase within `s.timeout`.
pub(crate) async fn deliver(s: &Settings, envelope: &Envelope, eml: &[u8]) -> Result<(), Failed> {
    let t = s.timeout;
    let phase = Arc::new(Phase::default());
    let tcp = tokio::time::timeout(t, tokio::net::TcpStream::connect((s.host.as_str(), s.port)))
        .await
        .map_err(|_| Failed::Timeout { phase: "connect" })?
        .map_err(Failed::Connect)?;
    let timed = Timed::new(tcp, t, phase.clone());
    let hello = ClientId::default();
    // Each call below is also bounded from outside, by the number of
    // phases it holds: the stream's deadlines are the real limit.
    let outer = |phases: u32| t.saturating_mul(phases) + Duration::from_secs(1);
    let mut conn = match &s.tls {
        Some((params, Implicit::Yes)) => {
            #[allow(deprecated)]
            let mut stream =
                lettre::transport::smtp::client::AsyncNetworkStream::use_existing_tokio1(Box::new(
                    timed,
                ));
            phase.set("TLS handshake");
            guard(&phase, outer(4), stream.upgrade_tls(params.clone())).await?;
            let tls = TlsOver(tokio_util::compat::FuturesAsyncReadCompatExt::compat(
                stream,
            ));
            phase.set_greeting();
            guard(
                &phase,
                outer(2),
                AsyncSmtpConnection::connect_with_transport(Box::new(tls), &hello),
            )
            .await?
        }
        _ => {
            phase.set_greeting();
            guard(
                &phase,
                outer(2),
                AsyncSmtpConnection::connect_with_transport(Box::new(timed), &hello),
            )
            .await?
        }
    };
    if let Some((params, Implicit::No)) = &s.tls {
        phase.set("STARTTLS");
        guard(&phase, outer(6), conn.starttls(params.clone(), &hello)).await?;
    }
    if let Some(credentials) = &s.credentials {
        phase.set("AUTH");
        guard(
            &phase,
            outer(12),
            conn.auth(DEFAULT_MECHANISMS, credentials),
        )
        .await?;
    }
    phase.set("MAIL, RCPT or DATA");
    let rcpts = envelope.to().len() as u32;
    guard(&phase, outer(4 + rcpts), conn.send(envelope, eml)).await?;
    // The mail is accepted: a server that does not answer QUIT does not
    // make it undelivered.
    phase.set("QUIT");
    if guard(&phase, outer(1), conn.quit()).await.is_err() {
        conn.abort().await;
    }
    Ok(())
}

/// Run one lettre call; a timeout anywhere in it is the current phase's.
async fn guard<T>(
    phase: &Phase,
    outer: Duration,
    call: impl std::future::Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, Failed> {
    match tokio::time::timeout(outer, call).await {
        Err(_) => Err(Failed::Timeout {
            phase: phase.name(),
        }),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if phase.timed_out() => {
            tracing::debug!(error = %e, "SMTP phase timed out");
            Err(Failed::Timeout {
                phase: phase.name(),
            })
        }
        Ok(Err(e)) => Err(Failed::Smtp(e)),
    }
}

/// Which phase the conversation is in, and whether the stream timed out.
#[derive(Debug, Default)]
struct Phase {
    name: Mutex<&'static str>,
    /// Set while the conversation waits for the greeting: the first write
    /// (EHLO) moves it on.
    greeting: std::sync::atomic::AtomicBool,
    timeouts: AtomicU64,
    /// Bumped at every phase the caller starts: the stream restarts its
    /// deadline.
    generation: AtomicU64,
}

impl Phase {
    fn set(&self, name: &'static str) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.greeting.store(false, Ordering::Relaxed);
        *self.name.lock().unwrap_or_else(|e| e.into_inner()) = name;
    }

    fn set_greeting(&self) {
        self.set("greeting");
        self.greeting.store(true, Ordering::Relaxed);
    }

    /// A write during the greeting call is EHLO.
    fn wrote(&self) {
        if self.greeting.swap(false, Ordering::Relaxed) {
            *self.name.lock().unwrap_or_else(|e| e.into_inner()) = "EHLO";
        }
    }

    fn name(&self) -> &'static str {
        *self.name.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn timed_out(&self) -> bool {
        self.timeouts.load(Ordering::Relaxed) > 0
    }
}

/// A TCP stream whose reads and writes fail once the phase's deadline has
/// passed. A phase starts with the connection (the greeting) and again at
/// every write that follows a read.
#[derive(Debug)]
struct Timed {
    inner: tokio::net::TcpStream,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    /// The last operation was a read: the next write starts a phase.
    read_last: bool,
    phase: Arc<Phase>,
    /// The caller's phase this deadline belongs to.
    generation: u64,
}

impl Timed {
    fn new(inner: tokio::net::TcpStream, timeout: Duration, phase: Arc<Phase>) -> Timed {
        Timed {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            read_last: true,
            generation: phase.generation.load(Ordering::Relaxed),
            phase,
        }
    }

    /// A new phase, by the caller or by a write after a read: a new deadline.
    fn start_phase_if_new(&mut self, writing: bool) {
        let generation = self.phase.generation.load(Ordering::Relaxed);
        let command = writing && self.read_last;
        if command {
            self.phase.wrote();
        }
        if command || generation != self.generation {
            self.generation = generation;
            let at = Instant::now() + self.timeout;
            self.deadline.as_mut().reset(at);
        }
        self.read_last = !writing;
    }

    /// `Pending` from the inner stream: an error once the deadline passed.
    fn expired<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.phase.timeouts.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no answer within {}",
                        crate::util::fmt_duration(self.timeout)
                    ),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future;

impl AsyncRead for Timed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        this.start_phase_if_new(false);
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => this.expired(cx),
            ready => ready,
        }
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        this.start_phase_if_new(true);
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.expired(cx),
            ready => ready,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.expired(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.expired(cx),
            ready => ready,
        }
    }
}

impl AsyncTokioStream for Timed {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.peer_addr()
    }
}

/// lettre's TLS stream (over [`Timed`]) handed back to lettre as a plain
/// stream, for implicit TLS: the handshake happens before the greeting.
#[allow(deprecated)]
#[derive(Debug)]
struct TlsOver(tokio_util::compat::Compat<lettre::transport::smtp::client::AsyncNetworkStream>);

impl AsyncRead for TlsOver {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsOver {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsOver {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().peer_addr()
    }
}
