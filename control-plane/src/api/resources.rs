//! Resources: the targets agents proxy to.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, ApiJson, AppError, AppState, ErrorDetail, check_name, rfc3339};
use crate::store::{ResourceRow, now_ms};

pub fn to_json(r: &ResourceRow) -> Value {
    json!({
        "name": r.name,
        "kind": r.kind,
        "agent": r.agent,
        "address": r.address,
        "database": r.database,
        "credential": r.credential,
        "labels": r.labels,
        "tls_mode": r.tls_mode,
        "tls_ca": r.tls_ca,
        "audit_mode": r.audit_mode,
        "max_connections": (r.max_connections > 0).then_some(r.max_connections),
        "max_connections_per_subject": (r.max_connections_per_subject > 0).then_some(r.max_connections_per_subject),
        "updated_at": rfc3339(r.updated_at),
    })
}

pub async fn list(State(cp): State<AppState>, _: Admin) -> Result<Json<Value>, AppError> {
    let rows = cp.store.resources().await?;
    Ok(Json(
        json!({ "resources": rows.iter().map(to_json).collect::<Vec<_>>() }),
    ))
}

pub async fn show(
    State(cp): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    let row = cp
        .store
        .resource(&name)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("resource `{name}` not found")))?;
    Ok(Json(to_json(&row)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceBody {
    name: Option<String>,
    kind: String,
    agent: String,
    address: String,
    #[serde(default)]
    database: String,
    #[serde(default)]
    credential: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    tls_mode: Option<String>,
    /// PEM of the target's CA, for `tls_mode: verify-full`.
    tls_ca: Option<String>,
    audit_mode: Option<String>,
    /// Most client sessions on the target at once (null: no limit of its own).
    max_connections: Option<u32>,
    /// The same, per subject.
    max_connections_per_subject: Option<u32>,
    /// Accepted (and ignored) so a GET response can be PUT back.
    #[serde(default)]
    #[allow(dead_code)]
    updated_at: Option<String>,
}

pub async fn put(
    State(cp): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ResourceBody>,
) -> Result<Json<Value>, AppError> {
    check_name("resource", &name)?;
    if body.name.as_deref().is_some_and(|n| n != name) {
        return Err(AppError::bad_request(format!(
            "body names `{}` but the URL names `{name}`",
            body.name.unwrap_or_default()
        )));
    }
    for (key, limit) in [
        ("max_connections", body.max_connections),
        (
            "max_connections_per_subject",
            body.max_connections_per_subject,
        ),
    ] {
        if limit == Some(0) {
            // Stored as "none"; refused here as the policy document's
            // `resources:` section refuses it.
            return Err(AppError::bad_request(format!(
                "`{key}` must be at least 1; omit it (or send null) for no limit of the resource's own"
            )));
        }
    }
    let row = ResourceRow {
        name: name.clone(),
        kind: body.kind,
        agent: body.agent,
        address: body.address,
        database: body.database,
        credential: body.credential,
        labels: body.labels,
        tls_mode: body.tls_mode.unwrap_or_else(|| "disable".into()),
        tls_ca: body.tls_ca.unwrap_or_default(),
        audit_mode: body.audit_mode.unwrap_or_else(|| "fail_closed".into()),
        max_connections: body.max_connections.unwrap_or_default(),
        max_connections_per_subject: body.max_connections_per_subject.unwrap_or_default(),
        updated_at: now_ms(),
    };
    validate(&row)?;
    let rev = cp.store.upsert_resource(&row).await?;
    cp.changed(rev);
    tracing::info!(by = %admin.subject, resource = %name, agent = %row.agent, "resource saved");
    Ok(Json(to_json(&row)))
}

/// Validates a resource with the same rules as a policy document's
/// `resources:` section, so both paths accept exactly the same things.
fn validate(row: &ResourceRow) -> Result<(), AppError> {
    let spec =
        crate::snapshot::row_to_spec(row).map_err(|e| AppError::bad_request(e.to_string()))?;
    let doc = json!({ "resources": [spec] }).to_string();
    sluice_policy::parse_document(&doc)
        .map(|_| ())
        .map_err(|errors| AppError::BadRequest {
            code: "invalid_resource",
            message: format!("resource `{}` is invalid", row.name),
            details: errors
                .errors()
                .iter()
                .map(|e| ErrorDetail {
                    path: e
                        .path
                        .trim_start_matches("resources[0]")
                        .trim_start_matches('.')
                        .to_owned(),
                    line: None,
                    message: e.message.clone(),
                })
                .collect(),
        })
}

pub async fn delete(
    State(cp): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    let rev = cp.store.delete_resource(&name).await?;
    cp.changed(rev);
    tracing::info!(by = %admin.subject, resource = %name, "resource deleted");
    Ok(StatusCode::NO_CONTENT)
}
