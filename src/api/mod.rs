//! The HTTP API (DESIGN.md section 5): status and incidents, confirmation,
//! manual trigger, pause and resume, the Alertmanager webhook, `/metrics`,
//! `/healthz` and the page behind an email link.
//!
//! Handlers never change a target's state themselves: they send an event to
//! the target's worker ([`crate::daemon::handle::TargetHandle`]) and answer with
//! what the state machine made of it, so the API goes through the same
//! journal, guards and notifications as everything else. Errors are JSON
//! `{"error": "..."}` with a status code that says who must act: 400 bad
//! request, 401 no or wrong token, 404 unknown target or incident, 409 the
//! event does not fit the target's state.

pub mod auth;
mod page;

use crate::confirm::links;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::config::Window;
use crate::daemon::handle::{Command, DaemonRequest, Refusal, TargetHandle};
use crate::decide::{Event, Incident, Pause, Phase, TargetState, Time};
use crate::sources::alertmanager::AlertStore;

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    /// Global dry-run.
    pub dry_run: bool,
    /// Set while the journal cannot be written: nothing that needs a
    /// journal entry is acted on until it can (the error, with the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_error: Option<String>,
    /// Set in state-lost mode: the state could not be read at start, so no
    /// target is acted on (why, and how an operator gets out of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_lost: Option<String>,
    /// Every target, in config order.
    pub targets: Vec<TargetStatus>,
}

/// One target in `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetStatus {
    /// Target name.
    pub name: String,
    /// State name (`Watching`, `AwaitingConfirmation`, ...).
    pub phase: String,
    /// The release window active now, if any (decisions are dry-run).
    pub window: Option<String>,
    /// Paused by whom, since when.
    pub paused: Option<Pause>,
    /// Confirmation, verification or cooldown deadline of the phase.
    pub until: Option<Time>,
    /// The full decision state: versions, rules with values, incident.
    pub state: TargetState,
    /// With `[cluster]`: which node acts on the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// With `[cluster]`: who holds a target's lock, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that owns the target and acts on it (`None`: no node yet).
    pub owner: Option<String>,
    /// Another node owns it: this node only watches.
    pub standby: bool,
}

/// Answer of the routes that send an event (approve, reject, trigger, pause, resume).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventResponse {
    /// Target name.
    pub target: String,
    /// State name after the event.
    pub phase: String,
    /// The incident the target holds after the event.
    pub incident: Option<Incident>,
    /// Paused by whom, since when.
    pub paused: Option<Pause>,
}

/// One incident in `GET /v1/incidents` and `GET /v1/incidents/{id}`: the
/// incident with its current phase and whether it is still open, so that
/// scripts need not read the last timeline entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentView {
    /// The incident (its `outcome` is set once it is done).
    #[serde(flatten)]
    pub incident: Incident,
    /// `AwaitingConfirmation`, `RollingBack`, `Verifying` while open; the
    /// outcome's state name (`RolledBack`, `Failed`, ...) once done.
    pub phase: String,
    /// Still under way: no outcome yet.
    pub open: bool,
}

impl From<Incident> for IncidentView {
    fn from(incident: Incident) -> IncidentView {
        IncidentView {
            phase: incident.phase_name().to_string(),
            open: incident.is_open(),
            incident,
        }
    }
}

/// Query of `GET /v1/incidents`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IncidentsQuery {
    /// `true`: only open incidents; `false`: only closed ones.
    #[serde(default)]
    pub open: Option<bool>,
}

/// Body of approve, reject, trigger, pause and resume (all optional but `reason` for trigger).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    /// Who acts (defaults to `api`).
    #[serde(default)]
    pub by: Option<String>,
    /// Why (required for a manual trigger).
    #[serde(default)]
    pub reason: Option<String>,
    /// Pause only: how long, a duration string (`"2h"`); absent is
    /// `[daemon] max_pause`, `"0"` is until resumed.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    /// Manual trigger only: the version to go back to (checked to exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
}

/// The targets and settings the API serves; a reload replaces it whole.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Target name -> its worker.
    pub targets: BTreeMap<String, TargetHandle>,
    /// Target names in config order.
    pub order: Vec<String>,
    /// Release windows, to show whether one is active.
    pub windows: Vec<Window>,
    /// Global dry-run.
    pub dry_run: bool,
}

/// Answer of `POST /v1/reload`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadResponse {
    /// What changed, e.g. `3 targets: 1 added, 0 removed, 2 updated`.
    pub reloaded: String,
}

/// Everything the handlers share.
pub struct ApiState {
    /// Targets, windows and dry-run as of the latest (re)load.
    pub view: Arc<RwLock<Arc<View>>>,
    /// Every incident seen (journal at start, then live).
    pub incidents: Arc<RwLock<BTreeMap<String, Incident>>>,
    /// Bearer token for mutating routes, when configured.
    pub token: Option<String>,
    /// Alerts fed by the webhook.
    pub alerts: Arc<AlertStore>,
    /// Email link signing.
    pub links: Arc<links::LinkKeys>,
    /// Set while the journal cannot be written (the error), for `status`.
    pub journal_error: Arc<RwLock<Option<String>>>,
    /// Where `POST /v1/reload` goes (`None`: reload not available).
    pub requests: Option<tokio::sync::mpsc::Sender<DaemonRequest>>,
    /// State-lost mode (why), for `status`.
    pub state_lost: Option<String>,
}

impl ApiState {
    /// The view as of now.
    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::metrics::global().api_error(self.0.as_str());
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The router with every route.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/incidents", get(incidents))
        .route("/v1/incidents/{id}", get(incident))
        .route("/v1/incidents/{id}/approve", post(approve))
        .route("/v1/incidents/{id}/reject", post(reject))
        .route("/v1/targets/{name}/rollback", post(trigger))
        .route("/v1/targets/{name}/pause", post(pause))
        .route("/v1/targets/{name}/resume", post(resume))
        .route("/v1/alertmanager", post(alertmanager))
        .route("/v1/reload", post(reload))
        .route("/v1/confirm/{token}", get(page::show).post(page::act))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such route (see docs/api.md)".into(),
            )
        })
        .with_state(state)
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::global().render(),
    )
}

fn until(phase: &Phase) -> Option<Time> {
    match phase {
        Phase::AwaitingConfirmation { deadline, .. } | Phase::Verifying { deadline, .. } => {
            Some(*deadline)
        }
        Phase::Done { until, .. } => Some(*until),
        Phase::Watching | Phase::RollingBack { .. } => None,
    }
}

async fn status(State(api): State<Arc<ApiState>>) -> Json<StatusResponse> {
    let now = Utc::now();
    let view = api.view();
    let window = view
        .windows
        .iter()
        .find(|w| w.contains(now))
        .map(|w| w.name.clone());
    let targets = view
        .order
        .iter()
        .filter_map(|n| view.targets.get(n))
        .map(|h| {
            let state = h.state.borrow().clone();
            TargetStatus {
                name: h.name.clone(),
                phase: state.phase.name().to_string(),
                window: window.clone(),
                paused: state.paused.clone(),
                until: until(&state.phase),
                state,
                cluster: h.cluster.borrow().as_ref().map(|o| ClusterStatus {
                    owner: o.owner.as_ref().map(|w| w.node.clone()),
                    standby: o.standby,
                }),
            }
        })
        .collect();
    let journal_error = api
        .journal_error
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(StatusResponse {
        dry_run: view.dry_run,
        journal_error,
        state_lost: api.state_lost.clone(),
        targets,
    })
}

async fn incidents(
    State(api): State<Arc<ApiState>>,
    query: Result<Query<IncidentsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<IncidentView>>> {
    let Query(q) = query.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid query: {} (use ?open=true or ?open=false)",
                e.body_text()
            ),
        )
    })?;
    let all = api.incidents.read().unwrap_or_else(|p| p.into_inner());
    Ok(Json(
        all.values()
            .rev()
            .filter(|i| q.open.is_none_or(|open| i.is_open() == open))
            .cloned()
            .map(IncidentView::from)
            .collect(),
    ))
}

fn find_incident(api: &ApiState, id: &str) -> ApiResult<Incident> {
    let all = api.incidents.read().unwrap_or_else(|p| p.into_inner());
    all.get(id)
        .cloned()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no incident {id:?}")))
}

async fn incident(
    State(api): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<IncidentView>> {
    find_incident(&api, &id).map(|i| Json(i.into()))
}

/// Parse an optional JSON body; empty means defaults.
fn body(bytes: &Bytes) -> ApiResult<EventRequest> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(EventRequest::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

fn who(req: &EventRequest) -> String {
    req.by
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(100).collect())
        .unwrap_or_else(|| "api".to_string())
}

/// Send an event to a target's worker and wait for what the machine made of it.
pub async fn send(api: &ApiState, target: &str, event: Event) -> ApiResult<EventResponse> {
    let view = api.view();
    let handle = view
        .targets
        .get(target)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no target {target:?}")))?;
    let (reply, answer) = oneshot::channel();
    let unavailable = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the worker of target {target:?} is not running (shutting down?)"),
        )
    };
    handle
        .commands
        .send(Command { event, reply })
        .await
        .map_err(|_| unavailable())?;
    let state = answer.await.map_err(|_| unavailable())?.map_err(refused)?;
    Ok(EventResponse {
        target: target.to_string(),
        phase: state.phase.name().to_string(),
        incident: state.incident().cloned(),
        paused: state.paused.clone(),
    })
}

/// A refused command as an answer: every refusal is a conflict with the
/// target's state (or with its journal), with the decision core's words;
/// a node that may not act for want of etcd answers 503.
fn refused(why: Refusal) -> ApiError {
    let status = match why {
        Refusal::Step(_) | Refusal::UnknownVersion(_) | Refusal::NotJournaled => {
            StatusCode::CONFLICT
        }
        // Coordination lost: try again later, or on another node.
        Refusal::Cluster(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError(status, why.to_string())
}

async fn approve(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<EventResponse>> {
    auth::require(&api, &headers)?;
    let req = body(&bytes)?;
    let inc = find_incident(&api, &id)?;
    let event = Event::Approve {
        incident: id,
        by: who(&req),
    };
    send(&api, &inc.target, event).await.map(Json)
}

async fn reject(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<EventResponse>> {
    auth::require(&api, &headers)?;
    let req = body(&bytes)?;
    let inc = find_incident(&api, &id)?;
    let event = Event::Reject {
        incident: id,
        by: who(&req),
        reason: req
            .reason
            .clone()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "no reason given".into()),
    };
    send(&api, &inc.target, event).await.map(Json)
}

async fn trigger(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<EventResponse>> {
    auth::require(&api, &headers)?;
    let req = body(&bytes)?;
    let Some(reason) = req.reason.clone().filter(|r| !r.trim().is_empty()) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a manual rollback needs a reason: {\"reason\": \"...\"}".into(),
        ));
    };
    let to_version = match req.to_version.as_deref().map(str::trim) {
        None => None,
        Some("") => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "to_version is empty: name the version to go back to, or leave it out".into(),
            ))
        }
        Some(v) => Some(v.to_string()),
    };
    let event = Event::ManualTrigger {
        by: who(&req),
        reason,
        to_version,
    };
    send(&api, &name, event).await.map(Json)
}

/// Longest `for` a pause may ask for; `"0"` is the way to say "until resumed".
const MAX_PAUSE_FOR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

async fn pause(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<EventResponse>> {
    auth::require(&api, &headers)?;
    let req = body(&bytes)?;
    let duration = match req.for_.as_deref().map(str::trim) {
        None => None,
        Some("0") => Some(Duration::ZERO),
        Some(text) => Some(crate::config::duration::parse(text).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("invalid \"for\": {e} (e.g. \"2h\", or \"0\" for until resumed)"),
            )
        })?),
    };
    if duration.is_some_and(|d| d > MAX_PAUSE_FOR) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "\"for\" = {:?} is longer than 10 years; use \"0\" to pause until resumed",
                req.for_.as_deref().unwrap_or_default()
            ),
        ));
    }
    let event = Event::Pause {
        by: who(&req),
        reason: req.reason.clone().filter(|r| !r.trim().is_empty()),
        duration,
    };
    send(&api, &name, event).await.map(Json)
}

async fn reload(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> ApiResult<Json<ReloadResponse>> {
    auth::require(&api, &headers)?;
    let Some(requests) = &api.requests else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload is not available in this process".into(),
        ));
    };
    let (reply, answer) = oneshot::channel();
    requests
        .send(DaemonRequest::Reload { reply })
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the daemon is stopping".into(),
            )
        })?;
    match answer.await {
        Ok(Ok(reloaded)) => Ok(Json(ReloadResponse { reloaded })),
        // The file is the operator's to fix: 422 with every problem.
        Ok(Err(problems)) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("config not reloaded, the running one is kept:\n{problems}"),
        )),
        Err(_) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon stopped during the reload".into(),
        )),
    }
}

async fn resume(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<EventResponse>> {
    auth::require(&api, &headers)?;
    let req = body(&bytes)?;
    send(&api, &name, Event::Resume { by: who(&req) })
        .await
        .map(Json)
}

async fn alertmanager(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Json<crate::sources::alertmanager::IngestReport>> {
    auth::require(&api, &headers)?;
    match api.alerts.ingest(&bytes, Utc::now()) {
        Ok(report) => {
            let m = crate::metrics::global();
            m.alerts_received("accepted", report.accepted);
            m.alerts_received("duplicate", report.duplicates);
            m.alerts_dropped(report.dropped);
            m.alerts_expired(report.expired);
            tracing::info!(
                accepted = report.accepted,
                duplicates = report.duplicates,
                dropped = report.dropped,
                firing = report.firing,
                "alertmanager webhook"
            );
            Ok(Json(report))
        }
        Err(e) => {
            tracing::warn!(error = %e, "alertmanager webhook refused");
            Err(ApiError(StatusCode::BAD_REQUEST, e.to_string()))
        }
    }
}

/// Bounds on the API's connections, so that a client (authenticated or
/// not: connections are accepted before auth) cannot hold the daemon's
/// file descriptors or tasks.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once. One more closes the oldest connection
    /// that has sent no request yet, or, when all are busy, is closed as
    /// soon as it is accepted (its descriptor is freed at once).
    pub max_connections: usize,
    /// A client must send its request head within this time of connecting.
    pub header_read: Duration,
    /// A connection is closed after this long, whatever it is doing (one
    /// request per connection: keep-alive is off).
    pub lifetime: Duration,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            max_connections: MAX_CONNECTIONS,
            header_read: HEADER_READ_TIMEOUT,
            lifetime: CONNECTION_LIFETIME,
        }
    }
}

/// Default [`ConnLimits::max_connections`].
pub const MAX_CONNECTIONS: usize = 256;
/// Default [`ConnLimits::header_read`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`ConnLimits::lifetime`]: longer than any handler waits for a
/// worker.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serve the API on `listener` until `cancel` fires, within the default
/// [`ConnLimits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    cancel: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    serve_router(listener, router(state), cancel, ConnLimits::default()).await;
    Ok(())
}

/// One served connection as the accept loop sees it: whether a request
/// head has arrived (then it is a real client and is never evicted), and
/// how to close it.
struct Slot {
    busy: Arc<std::sync::atomic::AtomicBool>,
    close: tokio_util::sync::CancellationToken,
}

/// Close the oldest connection that has not sent a request head yet, to
/// make room for a new one. `false` when every connection is busy with a
/// request.
fn evict_idle(slots: &std::sync::Mutex<std::collections::VecDeque<Slot>>) -> bool {
    use std::sync::atomic::Ordering;
    let mut slots = slots.lock().unwrap_or_else(|p| p.into_inner());
    // Ended connections cancel their own token: forget them.
    slots.retain(|s| !s.close.is_cancelled());
    let Some(i) = slots.iter().position(|s| !s.busy.load(Ordering::SeqCst)) else {
        return false;
    };
    if let Some(slot) = slots.remove(i) {
        slot.close.cancel();
    }
    true
}

/// The accept loop: at most `limits.max_connections` connections at once
/// (a semaphore), each served by hyper's HTTP/1 with a header-read
/// timeout, no keep-alive and a lifetime cap. When all slots are taken,
/// the oldest connection that has not sent a request head yet is closed to
/// make room (an idle flood cannot lock out `/healthz` or an operator);
/// when every slot serves a request, the new connection is closed at once.
/// Accept errors (EMFILE) are counted and retried after a pause, never
/// fatal. On `cancel`, connections in flight finish their request (5 s).
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    cancel: tokio_util::sync::CancellationToken,
    limits: ConnLimits,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use std::sync::atomic::{AtomicBool, Ordering};

    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let slots = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    let conns = tokio_util::task::TaskTracker::new();
    let m = crate::metrics::global();
    let mut saturated = false;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                m.api_accept_error();
                tracing::warn!(error = %e, "cannot accept an API connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                if !saturated {
                    saturated = true;
                    tracing::warn!(
                        max = limits.max_connections,
                        "API connection limit reached; closing idle connections to make room"
                    );
                }
                if evict_idle(&slots) {
                    m.api_connection_evicted();
                    // The evicted connection's task gives its permit back
                    // as soon as it runs.
                    tokio::time::timeout(
                        Duration::from_millis(200),
                        permits.clone().acquire_owned(),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok)
                } else {
                    None
                }
            }
        };
        let Some(permit) = permit else {
            m.api_connection_refused();
            drop(stream);
            continue;
        };
        if saturated && permits.available_permits() > limits.max_connections / 2 {
            saturated = false;
            tracing::info!("API connections below the limit again");
        }
        m.api_connections(limits.max_connections - permits.available_permits());
        let busy = Arc::new(AtomicBool::new(false));
        let close = tokio_util::sync::CancellationToken::new();
        {
            let mut slots = slots.lock().unwrap_or_else(|p| p.into_inner());
            // Ended connections mark themselves; the queue stays bounded.
            if slots.len() >= 2 * limits.max_connections {
                slots.retain(|s: &Slot| !s.close.is_cancelled());
            }
            slots.push_back(Slot {
                busy: busy.clone(),
                close: close.clone(),
            });
        }
        let inner = TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(move |req| {
            busy.store(true, Ordering::SeqCst);
            hyper::service::Service::call(&inner, req)
        });
        let cancel = cancel.clone();
        let all = permits.clone();
        conns.spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .keep_alive(false);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                biased;
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "API connection ended with an error");
                    }
                }
                _ = tokio::time::sleep(limits.lifetime) => {
                    tracing::debug!("API connection closed: lifetime cap reached");
                }
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
                // Evicted (never the case once a request head arrived).
                _ = close.cancelled() => {}
            }
            close.cancel();
            drop(permit);
            crate::metrics::global()
                .api_connections(limits.max_connections - all.available_permits());
        });
    }
    conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), conns.wait()).await;
}

#[cfg(test)]
mod conn_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(
        limits: ConnLimits,
    ) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    "slow\n"
                }),
            );
        let cancel = tokio_util::sync::CancellationToken::new();
        tokio::spawn(serve_router(listener, app, cancel.clone(), limits));
        (addr, cancel)
    }

    /// Whether the server closed the connection within `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(within, stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    async fn get_ok(addr: std::net::SocketAddr, path: &str) -> bool {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            return false;
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            return false;
        }
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200")
    }

    #[tokio::test]
    async fn idle_connections_time_out_and_are_evicted_for_new_ones() {
        let limits = ConnLimits {
            max_connections: 2,
            header_read: Duration::from_millis(500),
            lifetime: Duration::from_secs(10),
        };
        let (addr, cancel) = start(limits).await;
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
        let limits = ConnLimits {
            max_connections: 1,
            header_read: Duration::from_secs(5),
            lifetime: Duration::from_secs(10),
        };
        let (addr, cancel) = start(limits).await;
        let slow = tokio::spawn(get_ok(addr, "/slow"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut extra = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut extra, Duration::from_millis(800)).await);
        assert!(slow.await.unwrap(), "the busy connection is served");
        assert!(get_ok(addr, "/healthz").await, "free again");
        cancel.cancel();
    }
}
