//! The REST API (`/api/v1`), OIDC discovery, health, metrics and the
//! console's static page.
//!
//! Every handler returns [`AppError`] on failure, which renders one JSON
//! error shape and never leaks internals: unexpected errors are logged with
//! an id and the client gets only the id.

mod agents;
mod approvals;
mod audit;
mod auth;
mod credentials;
mod policies;
mod resources;
mod sessions;
mod tokens;

use std::{
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    extract::{FromRequest, MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;
use tracing::Instrument as _;

pub use auth::{Admin, Caller};

use crate::ControlPlane;

pub type AppState = Arc<ControlPlane>;

const OPENAPI: &str = include_str!("openapi.json");
const CONSOLE: &str = include_str!("../../../web-ui/index.html");
/// Largest request body accepted (policy documents are the biggest).
const MAX_BODY: usize = 1024 * 1024;

pub fn router(cp: AppState) -> Router {
    let api = Router::new()
        .route("/whoami", get(tokens::whoami))
        .route("/tokens", post(tokens::issue))
        .route("/resources", get(resources::list))
        .route(
            "/resources/{name}",
            get(resources::show)
                .put(resources::put)
                .delete(resources::delete),
        )
        .route("/credentials", get(credentials::list))
        .route("/credentials/{name}", axum::routing::put(credentials::set))
        .route("/credentials/{name}/rotate", post(credentials::rotate))
        .route("/policies", get(policies::list).post(policies::apply))
        .route("/policies/diff", get(policies::diff))
        .route("/policies/explain", post(policies::explain))
        .route("/policies/{version}", get(policies::show))
        .route("/agents", get(agents::list))
        .route("/join-tokens", post(agents::create_join_token))
        .route("/audit", get(audit::list))
        .route("/audit/export", get(audit::export))
        .route("/audit/seal-key", get(audit::seal_key))
        .route("/sessions", get(sessions::list))
        .route("/sessions/{id}", get(sessions::show))
        .route("/sessions/{id}/verify", get(sessions::verify))
        .route("/sessions/{id}/kill", post(sessions::kill))
        .route("/approvals", get(approvals::list))
        .route("/approvals/events", get(approvals::events))
        .route("/approvals/{id}", get(approvals::show))
        .route("/approvals/{id}/approve", post(approvals::approve))
        .route("/approvals/{id}/deny", post(approvals::deny))
        .route("/openapi.json", get(openapi));

    Router::new()
        .nest("/api/v1", api)
        .route("/", get(console))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(cp.clone(), track))
        .with_state(cp)
}

/// Counts requests by route template and status (never by raw path, which
/// would let clients blow up label cardinality).
async fn track(State(cp): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!("http.request", http.method = %method, http.route = %route);
    let response = next.run(req).instrument(span).await;
    cp.metrics
        .http_requests
        .get_or_create(&crate::metrics::HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn console() -> Html<&'static str> {
    Html(CONSOLE)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(cp): State<AppState>) -> Response {
    match cp.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

async fn metrics(State(cp): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, sluice_telemetry::METRICS_CONTENT_TYPE)],
        sluice_telemetry::render_metrics(&cp.metrics.registry),
    )
        .into_response()
}

async fn discovery(State(cp): State<AppState>) -> Json<serde_json::Value> {
    let issuer = cp.identity.issuer_url();
    Json(serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "subject_types_supported": ["public"],
        "response_types_supported": ["token"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "jti", "groups", "roles", "sluice_kind"],
    }))
}

async fn jwks(State(cp): State<AppState>) -> Json<serde_json::Value> {
    Json(cp.identity.jwks())
}

async fn not_found() -> AppError {
    AppError::NotFound("no such endpoint: see /api/v1/openapi.json".into())
}

/// One validation problem, located in the request.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        details: Vec<ErrorDetail>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            code: "bad_request",
            message: message.into(),
            details: Vec::new(),
        }
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            crate::store::StoreError::Conflict(msg) => Self::Conflict(msg),
            other => Self::Internal(other.into()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message, details) = match self {
            Self::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m, Vec::new()),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m, Vec::new()),
            Self::BadRequest {
                code,
                message,
                details,
            } => (StatusCode::BAD_REQUEST, code, message, details),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m, Vec::new()),
            Self::Conflict(m) => (StatusCode::CONFLICT, "conflict", m, Vec::new()),
            Self::PayloadTooLarge(m) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                m,
                Vec::new(),
            ),
            Self::Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                m,
                Vec::new(),
            ),
            Self::Internal(e) => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                tracing::error!(error_id = %id, error = format!("{e:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("internal error (id {id}); the control plane log has the details"),
                    Vec::new(),
                )
            }
        };
        let mut body = serde_json::json!({"error": {"code": code, "message": message}});
        if !details.is_empty() {
            body["error"]["details"] = serde_json::to_value(details).unwrap_or_default();
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"sluice\""),
            );
        }
        response
    }
}

/// `Json` whose rejections use the API's error shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(body_rejection(
                rejection.status(),
                "invalid JSON body",
                rejection.body_text(),
            )),
        }
    }
}

/// A UTF-8 text body (policy documents) whose rejections use the API's
/// error shape.
pub struct ApiText(pub String);

impl<S> FromRequest<S> for ApiText
where
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        String::from_request(req, state)
            .await
            .map(Self)
            .map_err(|rejection| {
                body_rejection(
                    rejection.status(),
                    "invalid request body",
                    rejection.body_text(),
                )
            })
    }
}

/// Maps a body extractor's rejection: an oversized body keeps its 413 (it
/// is not malformed, just too big), anything else is a 400.
fn body_rejection(status: StatusCode, what: &str, detail: String) -> AppError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge(format!(
            "the request body is larger than the {} MiB limit",
            MAX_BODY / (1024 * 1024)
        ))
    } else {
        AppError::bad_request(format!("{what}: {detail}"))
    }
}

/// Unix milliseconds as an RFC 3339 UTC timestamp.
/// Longest accepted `reason` (kills, approval votes).
const MAX_REASON_LEN: usize = 500;

/// The optional body `{"reason": "..."}` of kills and approval votes: the
/// trimmed reason, `None` when absent or blank; one line of at most
/// [`MAX_REASON_LEN`] characters.
pub(crate) fn optional_reason(body: &[u8]) -> Result<Option<String>, AppError> {
    #[derive(Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ReasonBody {
        reason: Option<String>,
    }
    let body: ReasonBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReasonBody::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| AppError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let reason = body
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason
        .as_deref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_LEN || r.chars().any(char::is_control))
    {
        return Err(AppError::bad_request(format!(
            "`reason` must be one line of at most {MAX_REASON_LEN} characters"
        )));
    }
    Ok(reason)
}

pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an RFC 3339 timestamp (or Unix milliseconds) to Unix milliseconds.
pub fn parse_time(name: &str, text: &str) -> Result<i64, AppError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(text).map_err(|_| {
        AppError::bad_request(format!(
            "`{name}` must be an RFC 3339 time like 2026-01-31T12:00:00Z"
        ))
    })?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0))
}

/// Parses a humantime duration such as `15m` for field `name`.
pub fn parse_ttl(
    name: &str,
    text: Option<&str>,
    default: Duration,
    max: Duration,
) -> Result<Duration, AppError> {
    let Some(text) = text else { return Ok(default) };
    let d = humantime::parse_duration(text).map_err(|_| {
        AppError::bad_request(format!("`{name}` must be a duration like 90s, 15m or 1h"))
    })?;
    if d.is_zero() || d > max {
        return Err(AppError::bad_request(format!(
            "`{name}` must be between 1s and {}",
            humantime::format_duration(max)
        )));
    }
    Ok(d)
}

/// Names of resources, credentials and agents share the policy crate's rule.
pub fn check_name(kind: &str, name: &str) -> Result<(), AppError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
        });
    if ok {
        Ok(())
    } else {
        Err(AppError::bad_request(format!(
            "invalid {kind} name `{name}`: use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests;
