//! Approval requests: listing, deciding, and a live stream of changes.

use std::convert::Infallible;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    response::sse::{Event, KeepAlive, Sse},
};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use sluice_identity::Identity;

use super::{AppError, AppState, Caller, optional_reason};
use crate::{
    approvals::{self, DecideError},
    store::now_ms,
};

const STATUSES: [&str; 6] = [
    "pending",
    "approved",
    "denied",
    "withdrawn",
    "expired",
    "used",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
}

/// Whether `who` may see a request by `subject` for `approvers`: its
/// requester, members of its approver groups, and admins. A request holds
/// the statement's text and parameter values, which can be personal data.
fn may_see(cp: &AppState, who: &Identity, subject: &str, approvers: &[String]) -> bool {
    who.subject == subject
        || who.groups.iter().any(|g| approvers.contains(g))
        || cp.identity.is_admin(who)
}

/// [`may_see`] for a request as the API shows it.
fn may_see_json(cp: &AppState, who: &Identity, approval: &Value) -> bool {
    let approvers: Vec<String> = approval["approvers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(str::to_owned))
        .collect();
    approval["subject"]
        .as_str()
        .is_some_and(|subject| may_see(cp, who, subject, &approvers))
}

/// Requests, newest first, that the caller may see (see [`may_see`]):
/// approvers need to see what they are asked to decide.
pub async fn list(
    State(cp): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, AppError> {
    if let Some(s) = &q.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(AppError::bad_request(format!(
            "unknown status `{s}`: use one of {}",
            STATUSES.join(", ")
        )));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let now = now_ms();
    // Expiry is computed at read time, so filter on the effective status.
    let stored = match q.status.as_deref() {
        Some("expired") => None,
        Some(s) => Some(s),
        None => None,
    };
    // Rows the caller may not see (or that expired since they were
    // stored) are skipped, so read page after page until `limit` are
    // found, looking at no more than `MAX_SCANNED` rows in all.
    const PAGE: i64 = 500;
    const MAX_SCANNED: usize = 50_000;
    let mut out = Vec::new();
    let mut before: Option<(i64, String)> = None;
    let mut scanned = 0;
    while out.len() < limit_len(limit) && scanned < MAX_SCANNED {
        let key = before.as_ref().map(|(c, id)| (*c, id.as_str()));
        let rows = cp.store.approvals(stored, key, PAGE).await?;
        scanned += rows.len();
        let last_page = rows.len() < limit_len(PAGE);
        for row in &rows {
            if out.len() == limit_len(limit) {
                break;
            }
            if q.status
                .as_deref()
                .is_some_and(|s| row.effective_status(now) != s)
                || !may_see(&cp, &who, &row.subject, &row.approvers)
            {
                continue;
            }
            let votes = cp.store.votes(&row.id).await?;
            out.push(approvals::to_json(row, &votes, now));
        }
        match rows.last() {
            Some(row) if !last_page => before = Some((row.created_ms, row.id.clone())),
            _ => break,
        }
    }
    Ok(Json(json!({ "approvals": out })))
}

/// A clamped list limit as a length.
fn limit_len(limit: i64) -> usize {
    usize::try_from(limit).unwrap_or(0)
}

pub async fn show(
    State(cp): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let row = cp
        .store
        .approval(&id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("approval request `{id}` not found")))?;
    if !may_see(&cp, &who, &row.subject, &row.approvers) {
        return Err(AppError::Forbidden(format!(
            "`{}` may not see approval request `{id}`: only its requester, members of its approver groups and admins may",
            who.subject
        )));
    }
    let votes = cp.store.votes(&id).await?;
    Ok(Json(approvals::to_json(&row, &votes, now_ms())))
}

pub async fn approve(
    State(cp): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    decide(&cp, &who, &id, true, &body).await
}

pub async fn deny(
    State(cp): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    decide(&cp, &who, &id, false, &body).await
}

async fn decide(
    cp: &AppState,
    who: &sluice_identity::Identity,
    id: &str,
    approve: bool,
    body: &[u8],
) -> Result<Json<Value>, AppError> {
    let reason = optional_reason(body)?.unwrap_or_default();
    let row = approvals::decide(cp, id, who, approve, &reason)
        .await
        .map_err(|e| match e {
            DecideError::NotFound(_) => AppError::NotFound(e.to_string()),
            DecideError::NotPending { .. } | DecideError::AlreadyVoted => {
                AppError::Conflict(e.to_string())
            }
            DecideError::SelfApproval | DecideError::NotAnApprover(_) => {
                AppError::Forbidden(e.to_string())
            }
            DecideError::Store(e) => AppError::Internal(e.into()),
        })?;
    let votes = cp.store.votes(id).await?;
    Ok(Json(approvals::to_json(&row, &votes, now_ms())))
}

/// Server-sent events: `approval.request` for new requests and
/// `approval.update` for every change, each with the request as `/approvals/{id}` shows it;
/// only requests the caller may see (see [`may_see`]).
pub async fn events(
    State(cp): State<AppState>,
    Caller(who): Caller,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut rx = cp.approvals.events.subscribe();
    let stream = async_stream(move |tx| async move {
        loop {
            match rx.recv().await {
                Ok(v) if !may_see_json(&cp, &who, &v["approval"]) => {}
                Ok(v) => {
                    let kind = v["type"].as_str().unwrap_or("approval.update").to_owned();
                    let event = Event::default().event(kind).data(v["approval"].to_string());
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let event = Event::default()
                        .event("lagged")
                        .data(json!({"missed": n}).to_string());
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A stream fed by a task (no extra dependency for `async-stream`).
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
