//! Enforcing the recording's retention policy: once at start, then every
//! interval, on every replica (runs are idempotent; two replicas racing
//! delete each session once). The deletion rules live in the store
//! (`store/retention.rs`); this records each run that removed something as
//! a `retention` audit event and logs it.

use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::{
    ControlPlane,
    api::rfc3339,
    store::{RetentionOutcome, RetentionPolicy, StoreError, StoredAuditEvent, now_ms},
};

/// Applies `policy` once at `now`; returns what went.
pub async fn run_once(
    cp: &ControlPlane,
    policy: &RetentionPolicy,
    now: i64,
) -> Result<RetentionOutcome, StoreError> {
    if policy.is_off() {
        return Ok(RetentionOutcome::default());
    }
    let out = cp.store.enforce_retention(policy, now).await?;
    if out.over_limit {
        tracing::warn!(
            remaining_bytes = out.remaining_bytes,
            max_bytes = policy.max_bytes,
            "recording still exceeds SLUICE_RETENTION_MAX_BYTES: what is left is live, active within the last hour, or has no session"
        );
    }
    if !out.removed_anything() {
        tracing::debug!(
            remaining_bytes = out.remaining_bytes,
            "retention: nothing to delete"
        );
        return Ok(out);
    }
    tracing::info!(
        sessions = out.sessions,
        events = out.events,
        bytes = out.bytes,
        blobs = out.blobs,
        remaining_bytes = out.remaining_bytes,
        cutoff = ?out.age_cutoff_ms.map(rfc3339),
        size_cutoff = ?out.size_cutoff_ms.map(rfc3339),
        "retention deleted recorded sessions"
    );
    let event = StoredAuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        time_ms: now,
        kind: "retention".into(),
        decision: "allow".into(),
        attributes_json: json!({
            "sessions": out.sessions,
            "events": out.events,
            "bytes": out.bytes,
            "blobs": out.blobs,
            "cutoff": out.age_cutoff_ms.map(rfc3339),
            "size_cutoff": out.size_cutoff_ms.map(rfc3339),
            "max_age_seconds": policy.max_age.map(|d| d.as_secs()),
            "max_bytes": policy.max_bytes,
            "remaining_bytes": out.remaining_bytes,
        })
        .to_string(),
        ..Default::default()
    };
    cp.store.insert_audit_events("", &[event]).await?;
    Ok(out)
}

/// Runs retention now and every `interval` until `stop` flips.
pub async fn run(
    cp: std::sync::Arc<ControlPlane>,
    policy: RetentionPolicy,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if policy.is_off() {
        tracing::info!("retention is off: recorded sessions are kept forever");
        return;
    }
    tracing::info!(
        max_age = ?policy.max_age.map(|d| humantime::format_duration(d).to_string()),
        max_bytes = ?policy.max_bytes,
        interval = %humantime::format_duration(interval),
        "retention enforced"
    );
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = run_once(&cp, &policy, now_ms()).await {
            tracing::error!(error = %e, "retention run failed; retrying at the next interval");
        }
    }
}
