//! Audit events, filtered and paged by ingestion cursor; the JSON-lines
//! export for SIEMs; the public key that session seals are checked with.

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, AppError, AppState, Caller, parse_time, rfc3339};
use crate::store::{AuditFilter, StoredAuditEvent};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    subject: Option<String>,
    resource: Option<String>,
    outcome: Option<String>,
    kind: Option<String>,
    session: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after: Option<i64>,
    limit: Option<i64>,
}

pub fn to_json(e: &StoredAuditEvent) -> Value {
    json!({
        "cursor": e.cursor,
        "id": e.id,
        "agent": e.agent,
        "seq": e.seq,
        "time": rfc3339(e.time_ms),
        "kind": e.kind,
        "session_id": e.session_id,
        "subject": e.subject,
        "groups": e.groups,
        "resource": e.resource,
        "decision": e.decision,
        "rule": e.rule,
        "statement": e.statement,
        "parameters": e.parameters,
        "duration_us": e.duration_us,
        "rows": e.rows,
        "error": e.error,
        "client_addr": e.client_addr,
        "attributes": e.attributes(),
        "attributes_unavailable": e.attributes_unavailable,
        "session_seq": e.session_seq,
        "prev_hash": e.prev_hash.as_deref().map(hex::encode),
        "hash": e.hash.as_deref().map(hex::encode),
    })
}

pub async fn list(
    State(cp): State<AppState>,
    _: Admin,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, AppError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::bad_request("`limit` must be between 1 and 1000"));
    }
    let filter = AuditFilter {
        subject: q.subject,
        resource: q.resource,
        outcome: q.outcome,
        kind: q.kind,
        session_id: q.session,
        since_ms: q
            .since
            .as_deref()
            .map(|s| parse_time("since", s))
            .transpose()?,
        until_ms: q
            .until
            .as_deref()
            .map(|s| parse_time("until", s))
            .transpose()?,
        after: q.after,
        limit,
    };
    let events = cp.store.audit_events(&filter).await?;
    let cursor = events.last().map(|e| e.cursor).or(q.after).unwrap_or(0);
    Ok(Json(
        json!({ "events": events.iter().map(to_json).collect::<Vec<_>>(), "cursor": cursor }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    since: Option<String>,
    until: Option<String>,
    after: Option<i64>,
    limit: Option<u64>,
}

/// Events per database round trip while exporting.
const EXPORT_PAGE: i64 = 1000;

/// Every event after `after` (and within `since`/`until`), oldest first,
/// one JSON document per line, streamed page by page. A database failure
/// midway aborts the body, so a consumer sees a truncated transfer rather
/// than a clean end; each line carries its `cursor` to resume from.
pub async fn export(
    State(cp): State<AppState>,
    _: Admin,
    Query(q): Query<ExportQuery>,
) -> Result<Response, AppError> {
    let since_ms = q
        .since
        .as_deref()
        .map(|s| parse_time("since", s))
        .transpose()?;
    let until_ms = q
        .until
        .as_deref()
        .map(|s| parse_time("until", s))
        .transpose()?;
    if q.limit == Some(0) {
        return Err(AppError::bad_request("`limit` must be at least 1"));
    }
    struct Cursor {
        after: i64,
        left: u64,
        done: bool,
    }
    let start = Cursor {
        after: q.after.unwrap_or(0),
        left: q.limit.unwrap_or(u64::MAX),
        done: false,
    };
    let stream = futures::stream::unfold(start, move |mut at| {
        let cp = cp.clone();
        async move {
            if at.done || at.left == 0 {
                return None;
            }
            let page = i64::try_from(at.left).unwrap_or(i64::MAX).min(EXPORT_PAGE);
            let filter = AuditFilter {
                since_ms,
                until_ms,
                after: Some(at.after),
                limit: page,
                ..Default::default()
            };
            match cp.store.audit_events(&filter).await {
                Ok(events) if events.is_empty() => None,
                Ok(events) => {
                    let mut out = Vec::with_capacity(events.len() * 256);
                    for e in &events {
                        // Serializing a Value to a Vec cannot fail.
                        let _ = serde_json::to_writer(&mut out, &to_json(e));
                        out.push(b'\n');
                    }
                    at.done = i64::try_from(events.len()).unwrap_or(0) < page;
                    at.left = at.left.saturating_sub(events.len() as u64);
                    at.after = events.last().map_or(at.after, |e| e.cursor);
                    Some((Ok::<_, std::io::Error>(Bytes::from(out)), at))
                }
                Err(e) => {
                    tracing::error!(error = %e, after = at.after, "audit export failed midway");
                    at.done = true;
                    Some((Err(std::io::Error::other("audit export failed")), at))
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The public key that session seals are signed with, for checking them
/// offline.
pub async fn seal_key(State(cp): State<AppState>, _: Caller) -> Json<Value> {
    let public = cp.keys.seal.public_key();
    Json(json!({
        "key_id": cp.keys.seal.kid(),
        "algorithm": sluice_audit_chain::SEAL_ALGORITHM,
        "public_key": base64::engine::general_purpose::STANDARD.encode(&public),
        "public_key_hex": hex::encode(&public),
        "message": "\"sluice-audit-seal-v1\\n\" || u32be(len(session_id)) || session_id || u64be(event_count) || u32be(len(head_hash)) || head_hash",
    }))
}
