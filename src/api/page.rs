//! The small page behind an email link: GET shows what will happen with a
//! button and changes nothing; only the POST from that page acts.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;

use super::ApiState;
use crate::confirm::links::{LinkAction, LinkError};
use crate::decide::Event;

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">\
         <title>rollbackd: {t}</title></head>\n<body style=\"font-family: sans-serif; max-width: 40em; margin: 2em auto\">\n\
         <h1>{t}</h1>\n{body}\n</body></html>\n",
        t = escape(title)
    );
    (status, Html(html)).into_response()
}

fn refused(e: &LinkError) -> Response {
    let status = match e {
        LinkError::Invalid(_) => StatusCode::FORBIDDEN,
        LinkError::Expired(_) | LinkError::Used => StatusCode::GONE,
    };
    crate::metrics::global().confirm_link_refused();
    page(
        status,
        "Link not valid",
        &format!("<p>{}. Nothing was done.</p><p>Use <code>rollbackd approve</code> or <code>rollbackd reject</code> instead.</p>", escape(&e.to_string())),
    )
}

/// `GET /v1/confirm/{token}`: describe, offer a button, change nothing.
pub async fn show(State(api): State<Arc<ApiState>>, Path(token): Path<String>) -> Response {
    let claim = match api.links.check(&token, Utc::now()) {
        Ok(c) => c,
        Err(e) => return refused(&e),
    };
    let Ok(inc) = super::find_incident(&api, &claim.incident) else {
        return page(
            StatusCode::NOT_FOUND,
            "Unknown incident",
            &format!("<p>No incident {}.</p>", escape(&claim.incident)),
        );
    };
    let what = match claim.action {
        LinkAction::Approve => format!(
            "roll <b>{}</b> back from {} to {} with {}",
            escape(&inc.target),
            escape(inc.from_version.as_deref().unwrap_or("the live version")),
            escape(inc.to_version.as_deref().unwrap_or("the previous version")),
            escape(&inc.method)
        ),
        LinkAction::Reject => format!(
            "reject the rollback of <b>{}</b>: nothing is executed and breaches are suppressed until the cooldown ends",
            escape(&inc.target)
        ),
    };
    let reasons: String = crate::notify::record::reason_lines(&inc)
        .iter()
        .map(|r| format!("<li>{}</li>", escape(r)))
        .collect();
    let reason_field = match claim.action {
        LinkAction::Reject => {
            "<p><label>Reason: <input name=\"reason\" size=\"40\" maxlength=\"1000\"></label></p>"
        }
        LinkAction::Approve => "",
    };
    let button = match claim.action {
        LinkAction::Approve => "Approve rollback",
        LinkAction::Reject => "Reject rollback",
    };
    page(
        StatusCode::OK,
        &format!("Incident {}", inc.id),
        &format!(
            "<p>This will {what}.</p>\n<p>Why rollbackd asks:</p><ul>{reasons}</ul>\n\
             <p>The link is valid until {} and works once.</p>\n\
             <form method=\"post\">{reason_field}<button type=\"submit\">{button}</button></form>",
            claim.expires.format("%Y-%m-%d %H:%M:%SZ")
        ),
    )
}

/// `POST /v1/confirm/{token}`: act once.
pub async fn act(
    State(api): State<Arc<ApiState>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let claim = match api.links.check(&token, Utc::now()) {
        Ok(c) => c,
        Err(e) => return refused(&e),
    };
    let Ok(inc) = super::find_incident(&api, &claim.incident) else {
        return page(
            StatusCode::NOT_FOUND,
            "Unknown incident",
            &format!("<p>No incident {}.</p>", escape(&claim.incident)),
        );
    };
    let by = "email link".to_string();
    let event = match claim.action {
        LinkAction::Approve => Event::Approve {
            incident: inc.id.clone(),
            by,
        },
        LinkAction::Reject => {
            let given = url::form_urlencoded::parse(&body)
                .find(|(k, _)| k == "reason")
                .map(|(_, v)| v.into_owned());
            // Refused before the link is used: the human can shorten it.
            let reason = match super::free_text("reason", given.as_deref(), super::MAX_REASON_CHARS)
            {
                Ok(r) => r.unwrap_or("no reason given").to_string(),
                Err(e) => {
                    return page(
                        StatusCode::BAD_REQUEST,
                        "Not done",
                        &format!("<p>{}. Go back and shorten it.</p>", escape(&e)),
                    )
                }
            };
            Event::Reject {
                incident: inc.id.clone(),
                by,
                reason,
            }
        }
    };
    // Used as soon as it is presented with a valid signature: a second
    // POST (double click, replay) does nothing whatever the first did.
    if let Err(e) = api.links.mark_used(&claim) {
        tracing::error!(error = %format!("{e:#}"), "cannot record a used confirmation link");
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Not done",
            "<p>rollbackd could not record the link as used, so it did nothing. Use the CLI.</p>",
        );
    }
    match super::send(&api, &inc.target, event).await {
        Ok(r) => page(
            StatusCode::OK,
            "Done",
            &format!(
                "<p>Incident {}: {} by email link. {} is now <b>{}</b>.</p>",
                escape(&inc.id),
                match claim.action {
                    LinkAction::Approve => "approved",
                    LinkAction::Reject => "rejected",
                },
                escape(&r.target),
                escape(&r.phase)
            ),
        ),
        Err(e) => page(e.0, "Not done", &format!("<p>{}</p>", escape(&e.1))),
    }
}
