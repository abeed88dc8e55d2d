//! The API's listener: how many connections it serves, how long a client
//! may take to send its request (head *and* body), and the room it keeps
//! for operators, so that no client without a token can take the human
//! path (approve, reject, trigger, pause, resume, status) away.
//!
//! Every connection is accepted before its request says who it is, so the
//! listener sorts connections by what it knows:
//! - before the request head arrives, a connection is *idle* and counts
//!   against its peer address's share ([`ConnLimits::per_peer`]);
//! - once the head arrives, [`Standing`] says whether the request is an
//!   operator's (a valid token), a local operator's (no token configured,
//!   loopback) or a guest's (everything else);
//! - guests share all but [`ConnLimits::reserved`] slots; the reserve is
//!   for operators;
//! - when a slot is needed, the listener closes, oldest first, a
//!   connection that has been idle for [`IDLE_GRACE`] (a slow head), then a
//!   guest still sending its body, then a local operator still sending its
//!   body, then a connection that has only just connected (a real client
//!   sends its head at once: it gets that long before anything but
//!   another young connection can push it out); a request being handled
//!   and an authenticated one are never closed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use axum::http::request::Parts;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;

use super::ApiError;

/// Bounds on the API's connections, so that a client (authenticated or
/// not: connections are accepted before auth) cannot hold the daemon's
/// file descriptors, tasks or the operators' way in.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once. One more closes a connection that can
    /// wait (see the module docs), or, when none can, is closed as soon as
    /// it is accepted (its descriptor is freed at once).
    pub max_connections: usize,
    /// Slots that only operators' requests may use: a guest's request
    /// that arrives while guests hold `max_connections - reserved` slots
    /// is answered 503 at once, without reading its body.
    pub reserved: usize,
    /// Connections one peer address may hold before its request says it
    /// is an operator's. One more closes that address's oldest connection
    /// that can wait, so a flood from one address churns its own
    /// connections, not other clients'.
    pub per_peer: usize,
    /// A client must send its request head within this time of connecting.
    pub header_read: Duration,
    /// A client must send its whole request body within this time of its
    /// head (answer: 408).
    pub body_read: Duration,
    /// A connection is closed after this long, whatever it is doing (one
    /// request per connection: keep-alive is off).
    pub lifetime: Duration,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            max_connections: MAX_CONNECTIONS,
            reserved: RESERVED_FOR_OPERATORS,
            per_peer: MAX_CONNECTIONS_PER_PEER,
            header_read: HEADER_READ_TIMEOUT,
            body_read: BODY_READ_TIMEOUT,
            lifetime: CONNECTION_LIFETIME,
        }
    }
}

/// Default [`ConnLimits::max_connections`].
pub const MAX_CONNECTIONS: usize = 256;
/// Default [`ConnLimits::reserved`].
pub const RESERVED_FOR_OPERATORS: usize = 64;
/// Default [`ConnLimits::per_peer`].
pub const MAX_CONNECTIONS_PER_PEER: usize = 32;
/// Default [`ConnLimits::header_read`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`ConnLimits::body_read`]: the largest body the API takes (2 MB)
/// at 200 kB/s; a real request body arrives with its head.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ConnLimits::lifetime`]: longer than any handler waits for a
/// worker.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// How long a new connection is given to send its head before it is
/// closed ahead of slow guest bodies to make room.
pub const IDLE_GRACE: Duration = Duration::from_millis(500);

/// Who sent a request, as far as its head tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Anyone: no token, or a route that is not an operator's.
    Guest,
    /// No token is configured and the request comes from loopback to an
    /// operator route: an operator, as far as anyone can tell.
    Local,
    /// The request presents the API token.
    Operator,
}

/// Sorts a request by its head and its peer address.
pub type Classify = Arc<dyn Fn(&Parts, IpAddr) -> Standing + Send + Sync>;

const IDLE: u8 = 0;
const GUEST: u8 = 1;
const LOCAL: u8 = 2;
const OPERATOR: u8 = 3;

/// One served connection as the accept loop sees it.
struct Conn {
    peer: IpAddr,
    /// When it was accepted.
    since: std::time::Instant,
    /// [`IDLE`] until the head arrives, then the request's standing.
    standing: AtomicU8,
    /// The whole body has been read (or there is none): the request is
    /// being handled and is never closed to make room.
    body_done: AtomicBool,
    /// The body did not arrive within [`ConnLimits::body_read`].
    body_late: AtomicBool,
    close: CancellationToken,
}

impl Conn {
    /// Which connections make room first (lower first); `None`: never.
    fn eviction_rank(&self) -> Option<u8> {
        let reading = !self.body_done.load(Ordering::SeqCst);
        match self.standing.load(Ordering::SeqCst) {
            IDLE if self.since.elapsed() >= IDLE_GRACE => Some(0),
            GUEST if reading => Some(1),
            LOCAL if reading => Some(2),
            IDLE => Some(3),
            _ => None,
        }
    }

    /// Counts against its peer's share: it has not shown it is an operator.
    fn unproven(&self) -> bool {
        matches!(self.standing.load(Ordering::SeqCst), IDLE | GUEST)
    }
}

/// The connections served now, in accept order.
#[derive(Default)]
struct Table {
    conns: VecDeque<Arc<Conn>>,
}

impl Table {
    /// Forget connections that ended (they cancel their own token).
    fn prune(&mut self) {
        self.conns.retain(|c| !c.close.is_cancelled());
    }

    /// Close the connection that can best wait among those `eligible`:
    /// lowest [`Conn::eviction_rank`], oldest first. `false` when none can.
    fn evict(&mut self, eligible: impl Fn(&Conn) -> bool) -> bool {
        let best = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| eligible(c))
            .filter_map(|(i, c)| c.eviction_rank().map(|r| (r, i)))
            .min();
        let Some((_, i)) = best else {
            return false;
        };
        if let Some(c) = self.conns.remove(i) {
            c.close.cancel();
        }
        true
    }

    fn unproven_from(&self, peer: IpAddr) -> usize {
        self.conns
            .iter()
            .filter(|c| c.peer == peer && c.unproven())
            .count()
    }

    fn guests(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| c.standing.load(Ordering::SeqCst) == GUEST)
            .count()
    }
}

fn lock(table: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a new connection was not admitted.
enum Refused {
    /// Every slot serves a request that may not be closed.
    Full,
    /// Its address holds its share, all of them busy with requests.
    PeerFull,
}

/// Make room for a connection from `peer` and register it, or say why not;
/// with it, how many connections were closed to make room.
fn admit(
    table: &Mutex<Table>,
    peer: IpAddr,
    limits: &ConnLimits,
) -> Result<(Arc<Conn>, usize), Refused> {
    let mut t = lock(table);
    t.prune();
    let mut evicted = 0;
    if t.unproven_from(peer) >= limits.per_peer {
        // Its own oldest idle connection or slow guest body makes room.
        if !t.evict(|c| c.peer == peer && c.unproven()) {
            return Err(Refused::PeerFull);
        }
        evicted += 1;
    }
    if t.conns.len() >= limits.max_connections {
        if !t.evict(|_| true) {
            return Err(Refused::Full);
        }
        evicted += 1;
    }
    let conn = Arc::new(Conn {
        peer,
        since: std::time::Instant::now(),
        standing: AtomicU8::new(IDLE),
        body_done: AtomicBool::new(false),
        body_late: AtomicBool::new(false),
        close: CancellationToken::new(),
    });
    t.conns.push_back(conn.clone());
    Ok((conn, evicted))
}

/// A request body that must arrive within a deadline; marks its
/// connection when it is complete (then it is never evicted) or late.
struct Bounded<B> {
    inner: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    conn: Arc<Conn>,
    limit: Duration,
}

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
struct BodyTooSlow(Duration);

impl<B> HttpBody for Bounded<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.conn.body_done.store(true, Ordering::SeqCst);
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                if this.inner.is_end_stream() {
                    this.conn.body_done.store(true, Ordering::SeqCst);
                }
                Poll::Ready(Some(frame.map_err(Into::into)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.conn.body_late.store(true, Ordering::SeqCst);
                    Poll::Ready(Some(Err(BodyTooSlow(this.limit).into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Everyone is a guest: for routers without a token (tests).
pub fn everyone_a_guest() -> Classify {
    Arc::new(|_, _| Standing::Guest)
}

/// The accept loop: at most `limits.max_connections` connections at once,
/// each served by hyper's HTTP/1 with a header-read timeout, a body-read
/// deadline, no keep-alive and a lifetime cap; per-address shares and the
/// operators' reserve as the module docs say. Accept errors (EMFILE) are
/// counted and retried after a pause, never fatal. On `cancel`,
/// connections in flight finish their request (5 s).
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    cancel: CancellationToken,
    limits: ConnLimits,
    classify: Classify,
) {
    let table = Arc::new(Mutex::new(Table::default()));
    let open = Arc::new(AtomicUsize::new(0));
    let conns = tokio_util::task::TaskTracker::new();
    let m = crate::metrics::global();
    let mut warned = Warned::default();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                m.api_accept_error();
                tracing::warn!(error = %e, "cannot accept an API connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = peer.ip();
        let Some(conn) = warned.admit(&table, peer, &limits) else {
            drop(stream);
            continue;
        };
        open.fetch_add(1, Ordering::SeqCst);
        m.api_connections(open.load(Ordering::SeqCst));

        let inner = TowerToHyperService::new(app.clone());
        let head_conn = conn.clone();
        let head_table = table.clone();
        let classify = classify.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let (parts, body) = req.into_parts();
            let standing = classify(&parts, peer);
            let req = Request::from_parts(parts, body);
            let (conn, table) = (head_conn.clone(), head_table.clone());
            handle(req, standing, conn, table, limits, inner.clone())
        });
        let cancel = cancel.clone();
        let open = open.clone();
        conns.spawn(async move {
            serve_conn(stream, service, limits, cancel, &conn).await;
            let now = open.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
            crate::metrics::global().api_connections(now);
        });
        // Let the new connection read its head before the next accept: in a
        // flood, accept() is always ready, and a client that sent its head
        // at once must be told apart from an idle one before more
        // connections from its address push it out.
        tokio::task::yield_now().await;
    }
    conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), conns.wait()).await;
}

/// The accept loop's warnings, each said once (a minute, for addresses
/// over their share) rather than for every connection.
#[derive(Default)]
struct Warned {
    /// Every slot is held: warned once, until the load halves.
    saturated: bool,
    /// When an address over its share was last warned about.
    peer: Option<std::time::Instant>,
}

impl Warned {
    fn peer_due(&self) -> bool {
        self.peer
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
    }

    /// [`admit`] a connection from `peer`, counting what it closed or
    /// refused and warning when the listener or an address is full;
    /// `None`: refused.
    fn admit(
        &mut self,
        table: &Mutex<Table>,
        peer: IpAddr,
        limits: &ConnLimits,
    ) -> Option<Arc<Conn>> {
        let m = crate::metrics::global();
        let conn = match admit(table, peer, limits) {
            Ok((conn, evicted)) => {
                for _ in 0..evicted {
                    m.api_connection_evicted();
                }
                conn
            }
            Err(why) => {
                m.api_connection_refused();
                match why {
                    Refused::Full if !self.saturated => {
                        self.saturated = true;
                        tracing::warn!(
                            max = limits.max_connections,
                            "API connection limit reached and every connection is serving a request; refusing new ones"
                        );
                    }
                    Refused::PeerFull if self.peer_due() => {
                        self.peer = Some(std::time::Instant::now());
                        tracing::warn!(%peer, per_peer = limits.per_peer, "API connection limit reached for one address, every one of its connections serving a request; refusing its new ones");
                    }
                    _ => {}
                }
                return None;
            }
        };
        let (held, from_peer) = {
            let t = lock(table);
            (t.conns.len(), t.unproven_from(peer))
        };
        if held >= limits.max_connections && !self.saturated {
            self.saturated = true;
            tracing::warn!(
                max = limits.max_connections,
                "API connection limit reached; closing idle connections and slow guest bodies to make room"
            );
        } else if self.saturated && held <= limits.max_connections / 2 {
            self.saturated = false;
            tracing::info!("API connections below the limit again");
        }
        if from_peer >= limits.per_peer && self.peer_due() {
            self.peer = Some(std::time::Instant::now());
            tracing::warn!(%peer, per_peer = limits.per_peer, "API connection limit reached for one address; closing its oldest idle connections and slow bodies to make room");
        }
        Some(conn)
    }
}

/// One request, once its head has said who sent it: a guest beyond its
/// share gets 503 without its body being read; otherwise the body is
/// bounded by [`ConnLimits::body_read`] and the router answers (408 when
/// the body came too late).
async fn handle(
    req: Request<hyper::body::Incoming>,
    standing: Standing,
    conn: Arc<Conn>,
    table: Arc<Mutex<Table>>,
    limits: ConnLimits,
    inner: TowerToHyperService<Router>,
) -> Result<Response, Infallible> {
    if req.body().is_end_stream() {
        conn.body_done.store(true, Ordering::SeqCst);
    }
    conn.standing.store(
        match standing {
            Standing::Guest => GUEST,
            Standing::Local => LOCAL,
            Standing::Operator => OPERATOR,
        },
        Ordering::SeqCst,
    );
    if standing == Standing::Guest {
        let guests = lock(&table).guests();
        if guests > limits.max_connections.saturating_sub(limits.reserved) {
            return Ok(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the API is serving as many requests without a token as it takes; \
                 the rest is kept for operators (try again, or send the API token)"
                    .into(),
            )
            .into_response());
        }
    }
    let req = req.map(|body| Bounded {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(limits.body_read)),
        conn: conn.clone(),
        limit: limits.body_read,
    });
    let response: Response = match hyper::service::Service::call(&inner, req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if conn.body_late.load(Ordering::SeqCst) {
        return Ok(ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {}s of the request head",
                limits.body_read.as_secs_f64()
            ),
        )
        .into_response());
    }
    Ok(response)
}

/// Serve one connection with hyper's HTTP/1: a header-read timeout, no
/// keep-alive, a lifetime cap; on `cancel` its request finishes (5 s); it
/// ends at once when closed to make room.
async fn serve_conn<S>(
    stream: tokio::net::TcpStream,
    service: S,
    limits: ConnLimits,
    cancel: CancellationToken,
    conn: &Conn,
) where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = axum::body::Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = stream.set_nodelay(true);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .keep_alive(false);
    let served = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    tokio::select! {
        biased;
        done = served.as_mut() => {
            if let Err(e) = done {
                tracing::debug!(error = %e, "API connection ended with an error");
            }
        }
        _ = tokio::time::sleep(limits.lifetime) => {
            tracing::debug!("API connection closed: lifetime cap reached");
        }
        _ = cancel.cancelled() => {
            served.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), served).await;
        }
        // Evicted to make room (never once its request is handled).
        _ = conn.close.cancelled() => {}
    }
    conn.close.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn limits(max: usize) -> ConnLimits {
        ConnLimits {
            max_connections: max,
            reserved: 0,
            per_peer: max,
            header_read: Duration::from_secs(5),
            body_read: Duration::from_secs(5),
            lifetime: Duration::from_secs(10),
        }
    }

    async fn start(
        limits: ConnLimits,
        classify: Classify,
    ) -> (std::net::SocketAddr, CancellationToken) {
        use axum::routing::{get, post};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/echo", post(|b: Bytes| async move { b }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    "slow\n"
                }),
            );
        let cancel = CancellationToken::new();
        tokio::spawn(serve_router(
            listener,
            app,
            cancel.clone(),
            limits,
            classify,
        ));
        (addr, cancel)
    }

    /// Whether the server closed the connection within `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(within, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    async fn answer(addr: std::net::SocketAddr, request: &str) -> String {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            return String::new();
        };
        if s.write_all(request.as_bytes()).await.is_err() {
            return String::new();
        }
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get_ok(addr: std::net::SocketAddr, path: &str) -> bool {
        answer(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
            .await
            .starts_with("HTTP/1.1 200")
    }

    #[tokio::test]
    async fn idle_connections_time_out_and_are_evicted_for_new_ones() {
        let limits = ConnLimits {
            header_read: Duration::from_millis(500),
            ..limits(2)
        };
        let (addr, cancel) = start(limits, everyone_a_guest()).await;
        // Silent: closed after the header-read timeout.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
        // Two idle connections fill the slots; a real request evicts the
        // oldest and is served.
        let mut a = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(get_ok(addr, "/healthz").await);
        assert!(
            closed_within(&mut a, Duration::from_millis(300)).await,
            "oldest idle evicted"
        );
        cancel.cancel();
    }

    #[tokio::test]
    async fn when_every_slot_serves_a_request_new_connections_are_closed_at_once() {
        let (addr, cancel) = start(limits(1), everyone_a_guest()).await;
        let slow = tokio::spawn(get_ok(addr, "/slow"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut extra = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut extra, Duration::from_millis(800)).await);
        assert!(slow.await.unwrap(), "the busy connection is served");
        assert!(get_ok(addr, "/healthz").await, "free again");
        cancel.cancel();
    }

    /// A head, then a body that never comes: 408 after `body_read`.
    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
        let limits = ConnLimits {
            body_read: Duration::from_millis(400),
            ..limits(4)
        };
        let (addr, cancel) = start(limits, everyone_a_guest()).await;
        let got = answer(
            addr,
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\"",
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(
            got.contains("request body not received within 0.4s"),
            "{got}"
        );
        // A whole body is served as before.
        let got = answer(
            addr,
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.1 200") && got.ends_with("hi"),
            "{got}"
        );
        cancel.cancel();
    }

    /// Guests sending their bodies slowly hold every slot; an operator's
    /// request evicts the oldest of them and is served; a guest beyond the
    /// guests' share is answered 503 without its body being read.
    #[tokio::test]
    async fn slow_guest_bodies_make_room_for_operators() {
        let limits = ConnLimits {
            reserved: 1,
            ..limits(3)
        };
        let classify: Classify = Arc::new(|parts: &Parts, _| {
            if parts.headers.contains_key("x-operator") {
                Standing::Operator
            } else {
                Standing::Guest
            }
        });
        let (addr, cancel) = start(limits, classify).await;
        let slow_head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx";
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(slow_head.as_bytes()).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        second.write_all(slow_head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Two guests hold the guests' share: a third is refused at once.
        let third = answer(addr, slow_head).await;
        assert!(third.starts_with("HTTP/1.1 503"), "{third}");
        assert!(third.contains("kept for operators"), "{third}");
        // Fill the last slot with a connection idle for longer than
        // IDLE_GRACE (a slow head): an operator's request evicts it first.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(IDLE_GRACE + Duration::from_millis(100)).await;
        let op = answer(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nx-operator: 1\r\n\r\n",
        )
        .await;
        assert!(op.starts_with("HTTP/1.1 200"), "{op}");
        assert!(closed_within(&mut idle, Duration::from_millis(500)).await);
        // Now only slow guests: the next operator evicts the oldest one.
        let mut filler = TcpStream::connect(addr).await.unwrap();
        filler
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nx-operator: 1\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let op = answer(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nx-operator: 1\r\n\r\n",
        )
        .await;
        assert!(op.starts_with("HTTP/1.1 200"), "{op}");
        assert!(closed_within(&mut first, Duration::from_millis(500)).await);
        assert!(!closed_within(&mut second, Duration::from_millis(100)).await);
        cancel.cancel();
    }

    /// A connection that has only just connected is not pushed out while
    /// slow guest bodies could make room instead.
    #[tokio::test]
    async fn a_new_connection_outranks_slow_guest_bodies() {
        let limits = ConnLimits {
            per_peer: 2,
            ..limits(10)
        };
        let (addr, cancel) = start(limits, everyone_a_guest()).await;
        let slow_head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx";
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(slow_head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut young = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The third from this address: the slow body goes, the young stays.
        let _third = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut slow, Duration::from_millis(500)).await);
        young
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), young.read_to_end(&mut out)).await;
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
        cancel.cancel();
    }

    /// One address over its share closes its own oldest idle connection,
    /// not another address's.
    #[tokio::test]
    async fn one_address_over_its_share_churns_its_own_connections() {
        let limits = ConnLimits {
            per_peer: 2,
            ..limits(10)
        };
        let (addr, cancel) = start(limits, everyone_a_guest()).await;
        let from = |ip: [u8; 4]| async move {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind((ip, 0).into()).unwrap();
            s.connect(addr).await.unwrap()
        };
        let mut other = from([127, 0, 0, 3]).await;
        let mut a = from([127, 0, 0, 2]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _b = from([127, 0, 0, 2]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _c = from([127, 0, 0, 2]).await;
        assert!(closed_within(&mut a, Duration::from_millis(500)).await);
        assert!(!closed_within(&mut other, Duration::from_millis(200)).await);
        cancel.cancel();
    }
}
