//! Agents and their one-time join tokens.

use std::time::Duration;

use axum::{Json, extract::State};
use base64::Engine as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, ApiJson, AppError, AppState, check_name, rfc3339};
use crate::{
    grpc::JOIN_TOKEN_PREFIX,
    keys::sha256_hex,
    store::{JoinTokenRow, now_ms},
};

pub async fn list(State(cp): State<AppState>, _: Admin) -> Result<Json<Value>, AppError> {
    let rows = cp.store.agents().await?;
    let agents: Vec<Value> = rows
        .iter()
        .map(|a| {
            let live = cp.registry.info(&a.name);
            json!({
                "name": a.name,
                "connected": live.is_some(),
                "agent_version": live.as_ref().map(|l| l.agent_version.clone()).unwrap_or_else(|| a.agent_version.clone()),
                "snapshot_version": live.as_ref().map(|l| l.snapshot_version).unwrap_or(u64::try_from(a.snapshot_version).unwrap_or(0)),
                "last_seen": (a.last_seen > 0).then(|| rfc3339(a.last_seen)),
                "enrolled_at": rfc3339(a.enrolled_at),
                "peer": live.map(|l| l.peer).unwrap_or_else(|| a.peer.clone()),
            })
        })
        .collect();
    Ok(Json(json!({ "agents": agents })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenBody {
    agent: String,
    ttl: Option<String>,
}

pub async fn create_join_token(
    State(cp): State<AppState>,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<JoinTokenBody>,
) -> Result<Json<Value>, AppError> {
    check_name("agent", &body.agent)?;
    let ttl = super::parse_ttl(
        "ttl",
        body.ttl.as_deref(),
        Duration::from_secs(3600),
        Duration::from_secs(7 * 24 * 3600),
    )?;
    let rng = SystemRandom::new();
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rng.fill(&mut id)
        .and_then(|()| rng.fill(&mut secret))
        .map_err(|_| anyhow::anyhow!("random number generator failed"))?;
    let id = hex::encode(id);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let now = now_ms();
    let expires_at = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
    cp.store
        .insert_join_token(&JoinTokenRow {
            id: id.clone(),
            secret_hash: sha256_hex(secret.as_bytes()),
            agent: body.agent.clone(),
            created_by: admin.subject.clone(),
            created_at: now,
            expires_at,
            used_at: None,
        })
        .await?;
    let fingerprint = cp.keys.ca.fingerprint();
    tracing::info!(by = %admin.subject, agent = %body.agent, token_id = %id, "join token created");
    Ok(Json(json!({
        "token": format!("{JOIN_TOKEN_PREFIX}.{id}.{secret}.{fingerprint}"),
        "agent": body.agent,
        "expires_at": rfc3339(expires_at),
        "ca_fingerprint": fingerprint,
    })))
}
