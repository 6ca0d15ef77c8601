//! `whoami` and token issuance by the built-in issuer.

use std::time::Duration;

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_identity::SubjectKind;

use super::{Admin, ApiJson, AppError, AppState, Caller, rfc3339};
use crate::identity::TokenRequest;

pub async fn whoami(Caller(id): Caller) -> Json<Value> {
    Json(json!({
        "subject": id.subject,
        "issuer": id.issuer,
        "groups": id.groups,
        "roles": id.roles,
        "kind": match id.kind { SubjectKind::ServiceAccount => "service_account", _ => "user" },
        "expires_at": rfc3339(i64::try_from(id.expires_at).unwrap_or(0) * 1000),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    subject: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    ttl: Option<String>,
    #[serde(default)]
    service_account: bool,
}

/// Longest lifetime of a token minted through the API.
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

pub async fn issue(
    State(cp): State<AppState>,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<IssueBody>,
) -> Result<Json<Value>, AppError> {
    let subject = body.subject.trim();
    if subject.is_empty() || subject.len() > 256 {
        return Err(AppError::bad_request("`subject` must be 1-256 characters"));
    }
    if body
        .groups
        .iter()
        .chain(&body.roles)
        .any(|g| g.trim().is_empty())
    {
        return Err(AppError::bad_request(
            "`groups` and `roles` entries must not be empty",
        ));
    }
    let ttl = super::parse_ttl(
        "ttl",
        body.ttl.as_deref(),
        Duration::from_secs(3600),
        MAX_TTL,
    )?;
    let (token, exp) = cp.identity.issue(&TokenRequest {
        subject: subject.to_owned(),
        groups: body.groups,
        roles: body.roles.clone(),
        ttl,
        service_account: body.service_account,
    })?;
    tracing::info!(by = %admin.subject, subject, roles = ?body.roles, ttl = %humantime::format_duration(ttl), "token issued");
    Ok(Json(json!({
        "token": token,
        "subject": subject,
        "expires_at": rfc3339(i64::try_from(exp).unwrap_or(0) * 1000),
    })))
}
