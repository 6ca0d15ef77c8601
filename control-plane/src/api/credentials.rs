//! Credentials: write-only. A secret can be set and rotated, never read.

use axum::{
    Json,
    extract::{Path, State},
};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::{Admin, ApiJson, AppError, AppState, check_name, rfc3339};
use crate::store::CredentialRow;

/// Largest secret accepted (a PEM private key fits comfortably).
const MAX_SECRET: usize = 64 * 1024;

fn meta(r: &CredentialRow) -> Value {
    json!({
        "name": r.name,
        "username": r.username,
        "version": r.version,
        "created_at": rfc3339(r.created_at),
        "updated_at": rfc3339(r.updated_at),
    })
}

/// A secret from a request body; never printed, wiped when dropped.
pub struct SecretText(Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(Zeroizing::new(s)))
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

impl SecretText {
    fn checked(&self) -> Result<&[u8], AppError> {
        let s = self.0.as_bytes();
        if s.is_empty() {
            return Err(AppError::bad_request("`secret` must not be empty"));
        }
        if s.len() > MAX_SECRET {
            return Err(AppError::bad_request("`secret` is larger than 64 KiB"));
        }
        Ok(s)
    }
}

pub async fn list(State(cp): State<AppState>, _: Admin) -> Result<Json<Value>, AppError> {
    let rows = cp.store.credentials().await?;
    Ok(Json(
        json!({ "credentials": rows.iter().map(meta).collect::<Vec<_>>() }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBody {
    username: String,
    secret: SecretText,
}

pub async fn set(
    State(cp): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<SetBody>,
) -> Result<Json<Value>, AppError> {
    check_name("credential", &name)?;
    if body.username.trim().is_empty() {
        return Err(AppError::bad_request("`username` must not be empty"));
    }
    let sealed = cp
        .vault
        .seal(&format!("credential:{name}"), body.secret.checked()?)
        .map_err(anyhow::Error::from)?;
    let (row, rev) = cp
        .store
        .set_credential(&name, &body.username, &sealed)
        .await?;
    cp.changed(rev);
    tracing::info!(by = %admin.subject, credential = %name, version = row.version, "credential set");
    Ok(Json(meta(&row)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    secret: SecretText,
    username: Option<String>,
}

pub async fn rotate(
    State(cp): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<RotateBody>,
) -> Result<Json<Value>, AppError> {
    if body
        .username
        .as_deref()
        .is_some_and(|u| u.trim().is_empty())
    {
        return Err(AppError::bad_request("`username` must not be empty"));
    }
    if cp.store.credential(&name).await?.is_none() {
        return Err(AppError::NotFound(format!(
            "credential `{name}` not found: create it first with `sluice credentials set {name}`"
        )));
    }
    let sealed = cp
        .vault
        .seal(&format!("credential:{name}"), body.secret.checked()?)
        .map_err(anyhow::Error::from)?;
    let (row, rev) = cp
        .store
        .rotate_credential(&name, body.username.as_deref(), &sealed)
        .await?;
    cp.changed(rev);
    tracing::info!(by = %admin.subject, credential = %name, version = row.version, "credential rotated");
    Ok(Json(meta(&row)))
}
