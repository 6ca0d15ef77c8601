//! Bearer-token authentication for the API.

use axum::{extract::FromRequestParts, http::request::Parts};
use sluice_identity::Identity;

use super::{AppError, AppState};

/// Any caller with a valid token from a trusted issuer.
pub struct Caller(pub Identity);

/// A caller with the admin role.
pub struct Admin(pub Identity);

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, cp: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                AppError::Unauthorized(
                    "missing bearer token: send `Authorization: Bearer <token>`".into(),
                )
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AppError::Unauthorized(
                    "malformed Authorization header: expected `Bearer <token>`".into(),
                )
            })?;
        cp.identity
            .verify(token)
            .map(Caller)
            .map_err(|e| AppError::Unauthorized(format!("invalid token: {e}")))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, cp: &AppState) -> Result<Self, Self::Rejection> {
        let Caller(id) = Caller::from_request_parts(parts, cp).await?;
        if cp.identity.is_admin(&id) {
            Ok(Admin(id))
        } else {
            Err(AppError::Forbidden(format!(
                "`{}` is not an admin; ask an admin for a token with role `admin`, or for membership in one of the control plane's admin groups",
                id.subject
            )))
        }
    }
}
