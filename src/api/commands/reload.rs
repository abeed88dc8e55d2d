//! `rollbackd reload`, `POST /v1/reload`: re-read and apply the daemon's
//! config (as SIGHUP does), through a [`DaemonRequest`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::MethodRouter;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{event_body, on, ApiCommand, ClientArgs, ClientError, Invoke, Method, Request};
use crate::api::{auth, ApiError, ApiResult, ApiState};
use crate::handle::DaemonRequest;

/// Re-read and apply the config (same as SIGHUP); an invalid file keeps the old one.
#[derive(clap::Args, Debug)]
pub struct Reload {
    #[command(flatten)]
    pub(super) client: ClientArgs,
}

/// Answer of `POST /v1/reload`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadResponse {
    /// What changed, e.g. `3 targets: 1 added, 0 removed, 2 updated`.
    pub reloaded: String,
}

impl ApiCommand for Reload {
    const ROUTE: &'static str = "/v1/reload";
    const METHOD: Method = Method::Post;
    const MUTATES: bool = true;
    fn handler() -> MethodRouter<Arc<ApiState>> {
        on::<Self, _, _>(reload)
    }
}

impl Invoke for Reload {
    fn request(&self) -> Request {
        Request::to::<Self>(&[]).with_body(event_body(None))
    }

    fn print(&self, v: Value) -> anyhow::Result<String> {
        Ok(format!(
            "reloaded: {}\n",
            v["reloaded"].as_str().unwrap_or_default()
        ))
    }

    /// 422: the file the daemon re-read is invalid.
    fn refused(&self, status: u16, message: String) -> ClientError {
        match status {
            422 => ClientError::ConfigRejected(message),
            _ => ClientError::Api { status, message },
        }
    }

    fn invalid_config_note(&self) -> Option<&'static str> {
        Some("not reloaded: the file is invalid, so the daemon was not asked and keeps its running config")
    }
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
