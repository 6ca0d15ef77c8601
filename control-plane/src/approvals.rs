//! Just-in-time approvals on the control plane.
//!
//! Agents file requests for statements that an approve rule covers (and
//! resend undecided ones whenever they reconnect). Approvers decide through
//! the API; a request is approved once `min` distinct approvers from the
//! rule's groups approved it, and denied by the first denial. The
//! requester never counts as an approver, and group membership is taken
//! from the approver's token at decision time. The final decision goes to
//! the agent that filed the request through the outbox every replica
//! delivers from (`crate::commands`), and in reply whenever the agent
//! resends the request. Every request and vote is audited; live
//! changes go to `/api/v1/approvals/events` subscribers of every replica
//! (the others hear of them through `crate::fanout`) and, for new
//! requests, to the configured webhook (once, from the replica the agent
//! filed it with).

use std::sync::OnceLock;

use serde_json::{Value, json};
use sluice_identity::Identity;
use sluice_proto::{self as pb, control_message};
use tokio::sync::broadcast;

use crate::{
    ControlPlane,
    store::{ApprovalRow, StoreError, StoredAuditEvent, VoteRow, now_ms},
};

/// Message format of the approval webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WebhookFormat {
    /// The request as a JSON object (`{"type": "approval.request", ...}`).
    Json,
    /// A Slack-compatible message (`{"text": ..., "blocks": [...]}`).
    Slack,
}

pub struct Webhook {
    pub url: String,
    pub format: WebhookFormat,
}

pub struct Approvals {
    /// Live changes, as the API shows them.
    pub events: broadcast::Sender<Value>,
    webhook: OnceLock<(Webhook, reqwest::Client)>,
}

impl Default for Approvals {
    fn default() -> Self {
        Self {
            events: broadcast::channel(256).0,
            webhook: OnceLock::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("approval request `{0}` not found")]
    NotFound(String),
    #[error("approval request `{id}` is {status}; only pending requests can be decided")]
    NotPending { id: String, status: String },
    #[error("you requested this statement; someone else must approve it")]
    SelfApproval,
    #[error("only members of {0} may decide this request")]
    NotAnApprover(String),
    #[error("you already decided this request")]
    AlreadyVoted,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Approvals {
    /// Posts new requests to `webhook` from now on (needs the process's
    /// TLS crypto provider installed).
    pub fn set_webhook(&self, webhook: Webhook) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        let _ = self.webhook.set((webhook, client));
        Ok(())
    }
}

/// A request or update from an agent.
pub async fn on_agent_request(
    cp: &ControlPlane,
    agent: &str,
    r: pb::ApprovalRequest,
) -> Result<Option<pb::ApprovalDecision>, StoreError> {
    let now = now_ms();
    match r.state.as_str() {
        "" | "pending" => {
            let row = ApprovalRow {
                id: r.request_id.clone(),
                agent: agent.to_owned(),
                session_id: r.session_id,
                statement_id: r.statement_id,
                subject: r.subject,
                groups: r.groups,
                resource: r.resource,
                statement: r.statement,
                fingerprint: r.fingerprint,
                parameters: r.parameters,
                rule: r.rule,
                reason: r.reason,
                mode: r.mode,
                approvers: r.approvers,
                min_approvals: i64::from(r.min_approvals.max(1)),
                ttl_ms: r.ttl_ms,
                created_ms: now,
                expires_ms: r.expires_at_unix_ms,
                status: "pending".into(),
                decided_ms: None,
                valid_until_ms: None,
            };
            if cp.store.insert_approval(&row).await? {
                tracing::info!(request = %row.id, subject = %row.subject, resource = %row.resource, "approval requested");
                announce(cp, REQUEST, &row, &[], now);
                notify_webhook(cp, &row);
                return Ok(None);
            }
            // Known already: if it was decided, the agent missed the decision.
            let Some(stored) = cp.store.approval(&r.request_id).await? else {
                return Ok(None);
            };
            if stored.agent != agent {
                tracing::warn!(request = %r.request_id, agent, "an agent resent another agent's approval request; ignored");
                return Ok(None);
            }
            let votes = cp.store.votes(&stored.id).await?;
            Ok(decision_for(&stored, &votes))
        }
        state @ ("withdrawn" | "expired") => {
            if owned_by(cp, &r.request_id, agent).await?
                && cp
                    .store
                    .set_approval_status(&r.request_id, &["pending"], state, Some(now), None)
                    .await?
            {
                publish(cp, &r.request_id, now).await;
            }
            Ok(None)
        }
        "used" => {
            if owned_by(cp, &r.request_id, agent).await?
                && cp
                    .store
                    .set_approval_status(&r.request_id, &["approved"], "used", None, None)
                    .await?
            {
                publish(cp, &r.request_id, now).await;
            }
            Ok(None)
        }
        other => {
            tracing::warn!(request = %r.request_id, state = other, "unknown approval state from an agent; ignored");
            Ok(None)
        }
    }
}

async fn owned_by(cp: &ControlPlane, id: &str, agent: &str) -> Result<bool, StoreError> {
    Ok(cp
        .store
        .approval(id)
        .await?
        .is_some_and(|a| a.agent == agent))
}

/// Live-stream event types.
const REQUEST: &str = "approval.request";
const UPDATE: &str = "approval.update";

async fn publish(cp: &ControlPlane, id: &str, now: i64) {
    if let Ok(Some(row)) = cp.store.approval(id).await {
        let votes = cp.store.votes(id).await.unwrap_or_default();
        announce(cp, UPDATE, &row, &votes, now);
    }
}

/// Streams a change to this replica's subscribers and tells the other
/// replicas, which stream it to theirs ([`relay`]).
fn announce(
    cp: &ControlPlane,
    event: &'static str,
    row: &ApprovalRow,
    votes: &[VoteRow],
    now: i64,
) {
    let _ = cp
        .approvals
        .events
        .send(json!({"type": event, "approval": to_json(row, votes, now)}));
    cp.fanout.emit(crate::fanout::Change::Approval {
        id: row.id.clone(),
        event: event.to_owned(),
    });
}

/// Streams to this replica's subscribers a change another replica
/// announced, as the database now has it.
pub async fn relay(cp: &ControlPlane, id: &str, event: &str) {
    let event = if event == REQUEST { REQUEST } else { UPDATE };
    let row = match cp.store.approval(id).await {
        Ok(Some(row)) => row,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(request = id, error = %e, "cannot read an approval request another replica changed");
            return;
        }
    };
    let votes = cp.store.votes(id).await.unwrap_or_default();
    let _ = cp
        .approvals
        .events
        .send(json!({"type": event, "approval": to_json(&row, &votes, now_ms())}));
}

/// The decision the agent must hear, once a request is decided.
fn decision_for(row: &ApprovalRow, votes: &[VoteRow]) -> Option<pb::ApprovalDecision> {
    let outcome = match row.status.as_str() {
        "approved" | "used" => "approved",
        "denied" => "denied",
        "expired" => "expired",
        _ => return None,
    };
    let relevant = |v: &&VoteRow| {
        if outcome == "approved" {
            v.decision == "approve"
        } else {
            v.decision == "deny"
        }
    };
    Some(pb::ApprovalDecision {
        request_id: row.id.clone(),
        outcome: outcome.into(),
        approvers: votes
            .iter()
            .filter(relevant)
            .map(|v| v.approver.clone())
            .collect(),
        reason: votes
            .iter()
            .filter(relevant)
            .map(|v| v.reason.as_str())
            .filter(|r| !r.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        valid_until_unix_ms: row.valid_until_ms.unwrap_or(0),
    })
}

/// An approver's decision. Returns the request as it now stands.
pub async fn decide(
    cp: &ControlPlane,
    id: &str,
    who: &Identity,
    approve: bool,
    reason: &str,
) -> Result<ApprovalRow, DecideError> {
    let now = now_ms();
    let row = cp
        .store
        .approval(id)
        .await?
        .ok_or_else(|| DecideError::NotFound(id.to_owned()))?;
    let status = row.effective_status(now).to_owned();
    if status != "pending" {
        if status == "expired" && row.status == "pending" {
            cp.store
                .set_approval_status(id, &["pending"], "expired", Some(now), None)
                .await?;
        }
        return Err(DecideError::NotPending {
            id: id.to_owned(),
            status,
        });
    }
    if who.subject == row.subject {
        return Err(DecideError::SelfApproval);
    }
    if !who.groups.iter().any(|g| row.approvers.contains(g)) {
        return Err(DecideError::NotAnApprover(row.approvers.join(", ")));
    }
    let vote = VoteRow {
        approval_id: id.to_owned(),
        approver: who.subject.clone(),
        groups: who.groups.clone(),
        decision: if approve { "approve" } else { "deny" }.into(),
        reason: reason.to_owned(),
        time_ms: now,
    };
    if !cp.store.insert_vote(&vote).await? {
        return Err(DecideError::AlreadyVoted);
    }
    let votes = cp.store.votes(id).await?;
    let approvals = votes.iter().filter(|v| v.decision == "approve").count();
    let final_status = if !approve {
        Some("denied")
    } else if i64::try_from(approvals).unwrap_or(i64::MAX) >= row.min_approvals {
        Some("approved")
    } else {
        None
    };
    let valid_until = (final_status == Some("approved") && row.mode == "retry")
        .then(|| now.saturating_add(row.ttl_ms));
    let decided = match final_status {
        Some(s) => {
            cp.store
                .set_approval_status(id, &["pending"], s, Some(now), valid_until)
                .await?
        }
        None => false,
    };
    let event = StoredAuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        time_ms: now,
        kind: "approval.vote".into(),
        session_id: String::new(),
        subject: who.subject.clone(),
        groups: who.groups.clone(),
        resource: row.resource.clone(),
        decision: vote.decision.clone(),
        rule: row.rule.clone(),
        statement: row.statement.clone(),
        parameters: row.parameters.clone(),
        error: reason.to_owned(),
        attributes_json: json!({
            "request_id": id, "requester": row.subject, "session_id": row.session_id,
            "statement_id": row.statement_id, "final": final_status,
        })
        .to_string(),
        ..Default::default()
    };
    cp.store.insert_audit_events("", &[event]).await?;
    let row = cp.store.approval(id).await?.unwrap_or(row);
    tracing::info!(request = %id, by = %who.subject, decision = %vote.decision, status = %row.status, "approval vote");
    if decided && let Some(decision) = decision_for(&row, &votes) {
        deliver(cp, &row.agent, decision).await;
    }
    announce(cp, UPDATE, &row, &votes, now);
    Ok(row)
}

/// Marks lapsed requests `expired` (undecided past their deadline, or a
/// retry approval not used within its TTL), records an `approval.expired`
/// audit event for each, and tells the agent. Returns how many lapsed.
pub async fn sweep(cp: &ControlPlane, now: i64) -> Result<usize, StoreError> {
    let mut n = 0;
    for row in cp.store.lapsed_approvals(now).await? {
        let from = row.status.clone();
        if !cp
            .store
            .set_approval_status(&row.id, &[from.as_str()], "expired", Some(now), None)
            .await?
        {
            continue; // decided or used meanwhile
        }
        n += 1;
        let event = StoredAuditEvent {
            id: uuid::Uuid::now_v7().to_string(),
            time_ms: now,
            kind: "approval.expired".into(),
            subject: row.subject.clone(),
            groups: row.groups.clone(),
            resource: row.resource.clone(),
            decision: "deny".into(),
            rule: row.rule.clone(),
            statement: row.statement.clone(),
            parameters: row.parameters.clone(),
            error: if from == "approved" {
                "the approval was not used within its TTL".into()
            } else {
                "no decision before the deadline".into()
            },
            attributes_json: json!({
                "request_id": row.id, "session_id": row.session_id,
                "statement_id": row.statement_id, "was": from,
            })
            .to_string(),
            ..Default::default()
        };
        cp.store.insert_audit_events("", &[event]).await?;
        deliver(
            cp,
            &row.agent,
            pb::ApprovalDecision {
                request_id: row.id.clone(),
                outcome: "expired".into(),
                ..Default::default()
            },
        )
        .await;
        publish(cp, &row.id, now).await;
    }
    Ok(n)
}

/// Sweeps lapsed approvals every `every` until `stop`.
pub async fn run_sweeper(
    cp: std::sync::Arc<ControlPlane>,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = sweep(&cp, now_ms()).await {
            tracing::warn!(error = %e, "cannot expire lapsed approval requests");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Sends a decision to the agent that filed the request, through whichever
/// replica it is attached to (see `crate::commands`).
async fn deliver(cp: &ControlPlane, agent: &str, decision: pb::ApprovalDecision) {
    let request = decision.request_id.clone();
    match crate::commands::send(cp, agent, control_message::Msg::ApprovalDecision(decision)).await {
        Ok(delivery) => {
            tracing::info!(agent, %request, delivery = delivery.as_str(), "approval decision sent to the agent");
        }
        // The agent still hears it when it resends the request.
        Err(e) => {
            tracing::warn!(agent, %request, error = %e, "cannot store a decision for the agent; it gets it when it resends the request");
        }
    }
}

fn rfc3339(ms: i64) -> String {
    crate::api::rfc3339(ms)
}

/// The API's view of a request.
pub fn to_json(row: &ApprovalRow, votes: &[VoteRow], now: i64) -> Value {
    json!({
        "id": row.id,
        "status": row.effective_status(now),
        "mode": row.mode,
        "subject": row.subject,
        "groups": row.groups,
        "resource": row.resource,
        "agent": row.agent,
        "session_id": row.session_id,
        "statement": row.statement,
        "fingerprint": row.fingerprint,
        "parameters": row.parameters,
        "rule": row.rule,
        "reason": row.reason,
        "approvers": row.approvers,
        "min_approvals": row.min_approvals,
        "created_at": rfc3339(row.created_ms),
        "expires_at": rfc3339(row.expires_ms),
        "decided_at": row.decided_ms.map(rfc3339),
        "valid_until": row.valid_until_ms.map(rfc3339),
        "votes": votes.iter().map(|v| json!({
            "approver": v.approver, "decision": v.decision, "reason": v.reason,
            "time": rfc3339(v.time_ms),
        })).collect::<Vec<_>>(),
    })
}

/// Posts a new request to the webhook, in the background.
fn notify_webhook(cp: &ControlPlane, row: &ApprovalRow) {
    let Some((hook, http)) = cp.approvals.webhook.get() else {
        return;
    };
    let params = if row.parameters.is_empty() {
        String::new()
    } else {
        format!(" with parameters [{}]", row.parameters.join(", "))
    };
    let approve = format!("sluice approvals approve {}", row.id);
    let body = match hook.format {
        WebhookFormat::Json => json!({
            "type": "approval.request",
            "id": row.id,
            "subject": row.subject,
            "groups": row.groups,
            "resource": row.resource,
            "agent": row.agent,
            "session_id": row.session_id,
            "statement": row.statement,
            "parameters": row.parameters,
            "rule": row.rule,
            "reason": row.reason,
            "mode": row.mode,
            "approvers": row.approvers,
            "min_approvals": row.min_approvals,
            "expires_at": rfc3339(row.expires_ms),
            "approve_with": approve,
        }),
        WebhookFormat::Slack => {
            let text = format!(
                "*{}* asks to run on *{}*{params}:\n```{}```\nRule `{}`: {}\nApprovers: {} (min {}). Approve with `{approve}` (request {}).",
                row.subject,
                row.resource,
                row.statement,
                row.rule,
                row.reason,
                row.approvers.join(", "),
                row.min_approvals,
                row.id
            );
            json!({
                "text": format!("Approval needed: {} on {}", row.subject, row.resource),
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
            })
        }
    };
    let http = http.clone();
    let url = hook.url.clone();
    let id = row.id.clone();
    tokio::spawn(async move {
        match http.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(request = %id, "approval webhook delivered")
            }
            Ok(r) => {
                tracing::warn!(request = %id, status = %r.status(), "approval webhook refused the message")
            }
            Err(e) => tracing::warn!(request = %id, error = %e, "approval webhook unreachable"),
        }
    });
}
