//! The agent's own HTTP endpoint: status, health, readiness and metrics.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use crate::{Agent, snapshot};

/// Connection state shown on /status.
#[derive(Default)]
pub struct LinkStatus {
    connected: AtomicBool,
    was_connected: AtomicBool,
    last_error: Mutex<String>,
}

impl LinkStatus {
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::SeqCst);
        if up {
            self.was_connected.store(true, Ordering::SeqCst);
            self.set_error(String::new());
        }
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// True once after a connection succeeded (resets the backoff).
    pub fn take_was_connected(&self) -> bool {
        self.was_connected.swap(false, Ordering::SeqCst)
    }

    pub fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(agent)
}

async fn status(State(agent): State<Arc<Agent>>) -> Json<serde_json::Value> {
    let state = agent.snapshot_state();
    let (state_name, version, reason) = match &state {
        snapshot::State::Valid(v) => ("valid", *v, String::new()),
        snapshot::State::Stale(v) => (
            "stale",
            *v,
            "no contact with the control plane for longer than the allowed staleness".into(),
        ),
        snapshot::State::None(why) => ("none", 0, why.clone()),
    };
    let spool = *agent.audit.status().borrow();
    let active = agent.snapshot_rx.borrow().clone();
    Json(json!({
        "agent": agent.enrolled.identity.agent_name,
        "version": env!("CARGO_PKG_VERSION"),
        "control_plane": {
            "url": agent.args.control_plane,
            "connected": agent.status.connected(),
            "last_error": agent.status.last_error(),
        },
        "snapshot": {
            "state": state_name,
            "version": version,
            "reason": reason,
            "issued_at_ms": active.as_ref().map(|a| a.issued_at_ms),
            "confirmed_at_ms": agent.confirmed_at_ms(),
            "resources": active.as_ref().map(|a| { let mut r: Vec<_> = a.resources.keys().cloned().collect(); r.sort(); r }).unwrap_or_default(),
        },
        "audit_spool": {
            "last_seq": spool.last_seq,
            "acked_seq": spool.acked_seq,
            "pending": spool.pending,
            "disk_bytes": spool.disk_bytes,
            "sync": match agent.args.audit_sync {
                crate::audit::AuditSync::Always => "always",
                crate::audit::AuditSync::Batch => "batch",
            },
        },
        "listeners": { "postgres": agent.args.postgres_addr.to_string() },
        "sessions": { "live": agent.sessions.len(), "draining": agent.sessions.is_draining() },
        "ddl_notices": agent.pg_ddl_watches.status(),
    }))
}

async fn readyz(State(agent): State<Arc<Agent>>) -> Response {
    if agent.sessions.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down, new connections are refused\n",
        )
            .into_response();
    }
    match agent.snapshot_state() {
        snapshot::State::Valid(_) => (StatusCode::OK, "ready\n").into_response(),
        other => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: no valid policy snapshot ({other:?})\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(agent): State<Arc<Agent>>) -> Response {
    let spool = *agent.audit.status().borrow();
    agent
        .metrics
        .spool_pending
        .set(i64::try_from(spool.pending).unwrap_or(i64::MAX));
    (
        [(header::CONTENT_TYPE, sluice_telemetry::METRICS_CONTENT_TYPE)],
        sluice_telemetry::render_metrics(&agent.metrics.registry),
    )
        .into_response()
}
