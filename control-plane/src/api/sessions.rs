//! Recorded sessions: listing, transcript, verification, and ending a
//! live one.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_proto::{KillSession, control_message};

use super::{Admin, AppError, AppState, optional_reason, parse_time, rfc3339};
use crate::{
    recording,
    store::{
        MAX_SESSION_EVENTS, SessionFilter, SessionRow, SessionStatus, StoredAuditEvent, now_ms,
    },
};

/// Longest accepted session id (agents use UUIDs).
const MAX_ID_LEN: usize = 128;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    subject: Option<String>,
    resource: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after: Option<i64>,
    limit: Option<i64>,
}

fn summary_json(s: &SessionRow) -> Value {
    json!({
        "id": s.session_id,
        "status": s.status.as_str(),
        "subject": s.subject,
        "groups": s.groups,
        "resource": s.resource,
        "agent": s.agent,
        "client_addr": s.client_addr,
        "started_at": rfc3339(s.started_ms),
        "ended_at": s.ended_ms.map(rfc3339),
        "last_event_at": rfc3339(s.last_ms),
        "events": s.events,
        "statements": s.statements,
        "denied": s.denied,
        "errors": s.errors,
        "rows": s.rows,
        "sealed": s.sealed,
        "cursor": s.cursor,
    })
}

fn check_id(id: &str) -> Result<(), AppError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(AppError::bad_request(format!(
            "invalid session id: use the `id` shown by `sluice sessions list` (at most {MAX_ID_LEN} characters)"
        )));
    }
    Ok(())
}

fn unknown(id: &str) -> AppError {
    AppError::NotFound(format!(
        "no session `{id}` is recorded: see `sluice sessions list`"
    ))
}

pub async fn list(
    State(cp): State<AppState>,
    _: Admin,
    Query(q): Query<SessionQuery>,
) -> Result<Json<Value>, AppError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::bad_request("`limit` must be between 1 and 1000"));
    }
    let status = q
        .outcome
        .as_deref()
        .map(|o| {
            SessionStatus::parse(o).ok_or_else(|| {
                AppError::bad_request(format!(
                    "`outcome` must be one of live, ended, incomplete, denied (got `{o}`)"
                ))
            })
        })
        .transpose()?;
    let filter = SessionFilter {
        session_id: None,
        subject: q.subject,
        resource: q.resource,
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
        status,
        after: q.after,
        limit,
    };
    let sessions = cp.store.sessions(&filter, now_ms()).await?;
    let cursor = sessions.last().map(|s| s.cursor).or(q.after).unwrap_or(0);
    Ok(Json(json!({
        "sessions": sessions.iter().map(summary_json).collect::<Vec<_>>(),
        "cursor": cursor,
    })))
}

fn entry_json(e: &recording::TranscriptEntry) -> Value {
    json!({
        "position": e.position,
        "time": rfc3339(e.time_ms),
        "kind": e.kind,
        "statement": e.statement,
        "parameters": e.parameters,
        "decision": e.decision,
        "rule": e.rule,
        "reason": e.reason,
        "outcome": e.outcome,
        "duration_us": e.duration_us,
        "rows": e.rows,
        "error": e.error,
        "statement_id": e.statement_id,
        "result": e.result,
        "result_unavailable": e.result_unavailable,
    })
}

pub async fn show(
    State(cp): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    check_id(&id)?;
    let summary = cp
        .store
        .session(&id, now_ms())
        .await?
        .ok_or_else(|| unknown(&id))?;
    let events = cp.store.session_events(&id, MAX_SESSION_EVENTS).await?;
    let end = events.iter().rev().find(|e| e.kind == "session.end");
    let start = events.iter().find(|e| e.kind == "session.start");
    let mut body = summary_json(&summary);
    body["start_error"] = json!(start.map(|e| e.error.clone()).unwrap_or_default());
    body["end_error"] = json!(end.map(|e| e.error.clone()).unwrap_or_default());
    body["duration_us"] = json!(end.map(|e| e.duration_us));
    body["transcript"] = json!(
        recording::transcript(&events)
            .iter()
            .map(entry_json)
            .collect::<Vec<_>>()
    );
    Ok(Json(body))
}

pub async fn verify(
    State(cp): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    check_id(&id)?;
    let (report, seal) = recording::verify(&cp, &id)
        .await?
        .ok_or_else(|| unknown(&id))?;
    let problems: Vec<Value> = report
        .problems
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).unwrap_or_else(|_| json!({}));
            v["message"] = json!(p.describe());
            v
        })
        .collect();
    Ok(Json(json!({
        "session_id": report.session_id,
        "ok": report.ok(),
        "status": report.status,
        "summary": report.summary(),
        "events": report.events,
        "sealed_events": report.sealed_events,
        "problems": problems,
        "seal": seal.map(|s| json!({
            "key_id": s.key_id,
            "event_count": s.event_count,
            "head_hash": hex::encode(&s.head_hash),
            "signature": hex::encode(&s.signature),
            "sealed_at": rfc3339(s.sealed_at_ms),
        })),
    })))
}

/// Asks the agent that runs a session to end it. The agent closes the
/// client's connection and records the session's end; this answers as
/// soon as the request is stored (202): `delivery` says whether it went to
/// the agent from this replica (`sent`) or waits for the replica the agent
/// is attached to, or will attach to (`queued`).
pub async fn kill(
    State(cp): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), AppError> {
    check_id(&id)?;
    let reason = optional_reason(&body)?
        .unwrap_or_else(|| format!("ended by administrator {}", admin.subject));
    let session = cp
        .store
        .session(&id, now_ms())
        .await?
        .ok_or_else(|| unknown(&id))?;
    match session.status {
        SessionStatus::Ended | SessionStatus::Denied => {
            return Err(AppError::Conflict(format!(
                "session `{id}` has already ended ({})",
                session.status.as_str()
            )));
        }
        SessionStatus::Live | SessionStatus::Incomplete => {}
    }
    // The agent that runs it: the one that delivered its start.
    let events = cp.store.session_events(&id, 1).await?;
    let agent = events
        .iter()
        .find(|e| e.kind == "session.start")
        .map_or_else(|| session.agent.clone(), |e| e.agent.clone());
    // Audited before it is sent: an unrecorded kill must not happen.
    let event = StoredAuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        time_ms: now_ms(),
        kind: "session.kill".into(),
        subject: admin.subject.clone(),
        groups: admin.groups.clone(),
        resource: session.resource.clone(),
        decision: "allow".into(),
        attributes_json: json!({"target_session": id, "agent": agent, "reason": reason})
            .to_string(),
        ..Default::default()
    };
    cp.store.insert_audit_events("", &[event]).await?;
    // Sent by whichever replica the agent is attached to, or when it next
    // attaches (its sessions outlive a lost control-plane link).
    let delivery = crate::commands::send(
        &cp,
        &agent,
        control_message::Msg::KillSession(KillSession {
            session_id: id.clone(),
            subject: String::new(),
            resource: String::new(),
            reason: reason.clone(),
        }),
    )
    .await?;
    tracing::info!(by = %admin.subject, session = %id, agent = %agent, delivery = delivery.as_str(), "session kill requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "session_id": id,
            "agent": agent,
            "status": "kill_requested",
            "delivery": delivery.as_str(),
            "reason": reason,
        })),
    ))
}
