//! Audit events, filtered and paged by ingestion cursor.

use axum::{
    Json,
    extract::{Query, State},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, AppError, AppState, parse_time, rfc3339};
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
        "attributes": e.attributes,
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
