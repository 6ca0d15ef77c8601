//! Messages for one agent that a replica may have to send without the agent
//! being attached to it: approval decisions and session kills.
//!
//! An approver's vote or an administrator's kill lands on whichever replica
//! the load balancer picked, and the agent's stream may be held by another.
//! So each message is first written to the shared database (the
//! `agent_commands` outbox), then sent at once if the agent is attached
//! here; otherwise the other replicas are told (`crate::fanout`), and the
//! one the agent is attached to sends it. Every replica also looks for
//! unsent messages to its own agents every poll interval (in case a
//! notice was lost) and when an agent attaches, so a message reaches the
//! agent wherever it is attached, or when it next attaches. A replica
//! claims a message in the database before sending it, so it is sent once;
//! if the agent's stream does not take it, the claim is given back.
//!
//! Sent means handed to the agent's stream: a connection that dies just
//! then loses it. Agents resend undecided approval requests when they
//! reconnect and get the decision in reply; kills whose session has not
//! ended are sent again whenever the agent attaches ([`resend_kills`]).

use std::time::Duration;

use prost::Message as _;
use sluice_proto::{ControlMessage, control_message};
use tokio::sync::watch;

use crate::{
    ControlPlane,
    fanout::Change,
    store::{AgentCommand, SessionStatus, StoreError, now_ms},
};

/// Messages older than this are dropped, sent or not: by then an approval
/// request has long expired, and an agent away that long has restarted.
const KEEP: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a send waits for room in the agent's stream.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages sent per agent and pass (the rest go on the next pass).
const PAGE: i64 = 500;

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the agent's stream on this replica.
    Sent,
    /// Stored; the replica the agent is (or next gets) attached to sends it.
    Queued,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Sent => "sent",
            Delivery::Queued => "queued",
        }
    }
}

/// Stores `msg` for `agent` and sends it if the agent is attached here.
/// Once this returns, the message reaches the agent even if this replica
/// stops (unless it was sent, and the agent's connection then failed).
pub async fn send(
    cp: &ControlPlane,
    agent: &str,
    msg: control_message::Msg,
) -> Result<Delivery, StoreError> {
    let message = ControlMessage { msg: Some(msg) };
    let command = AgentCommand {
        id: uuid::Uuid::now_v7().to_string(),
        agent: agent.to_owned(),
        message: message.encode_to_vec(),
        created_ms: now_ms(),
    };
    let Some(sender) = cp.registry.sender(agent) else {
        cp.store.insert_agent_command(&command, None).await?;
        cp.fanout.emit(Change::Commands {
            agent: agent.to_owned(),
        });
        return Ok(Delivery::Queued);
    };
    // Attached here: stored as claimed, so no replica's poller sends it
    // too (and none sends it later than this replica would).
    cp.store
        .insert_agent_command(&command, Some(command.created_ms))
        .await?;
    if sender.send_timeout(message, SEND_TIMEOUT).await.is_err() {
        tracing::warn!(agent, id = %command.id, "the agent's stream did not take a message; it is sent when the agent attaches again");
        cp.store.unclaim_agent_command(&command.id).await?;
        return Ok(Delivery::Queued);
    }
    Ok(Delivery::Sent)
}

/// Sends the unsent messages for agents attached here (only `agent`'s,
/// if given). Returns how many were sent.
pub async fn deliver_pending(cp: &ControlPlane, agent: Option<&str>) -> Result<usize, StoreError> {
    if cp.registry.count() == 0 {
        return Ok(0);
    }
    let since = now_ms().saturating_sub(keep_ms());
    // Agent by agent, only those attached here: messages waiting for an
    // agent that is away must not crowd out those for one that is here.
    let agents = match agent {
        Some(a) => vec![a.to_owned()],
        None => cp.store.agents_with_unsent_commands(since).await?,
    };
    let mut sent = 0;
    for agent in agents {
        if cp.registry.sender(&agent).is_none() {
            continue;
        }
        for command in cp
            .store
            .unsent_agent_commands(Some(&agent), since, PAGE)
            .await?
        {
            if try_send(cp, &command).await? {
                sent += 1;
            }
        }
    }
    Ok(sent)
}

/// Sends `agent` again the kills it was sent whose session has not ended
/// (as far as the trail shows): a kill handed to a stream that then failed
/// was lost with it, and the agent's sessions outlive its control-plane
/// link. Called when the agent attaches, after its old stream is gone. An
/// agent ignores a kill for a session it does not run. Returns how many.
pub async fn resend_kills(cp: &ControlPlane, agent: &str) -> Result<usize, StoreError> {
    let Some(sender) = cp.registry.sender(agent) else {
        return Ok(0);
    };
    let now = now_ms();
    let sent = cp
        .store
        .sent_agent_commands(agent, now.saturating_sub(keep_ms()), PAGE)
        .await?;
    // One kill per session is enough: the latest (its reason is the one
    // the administrator gave last). Listed newest first.
    let mut kills: Vec<ControlMessage> = Vec::new();
    for command in sent {
        let Ok(message) = ControlMessage::decode(command.message.as_slice()) else {
            continue;
        };
        let Some(control_message::Msg::KillSession(k)) = &message.msg else {
            continue;
        };
        let seen = kills.iter().any(|m| matches!(&m.msg, Some(control_message::Msg::KillSession(o)) if o.session_id == k.session_id));
        if !seen && !k.session_id.is_empty() {
            kills.push(message);
        }
    }
    let mut resent = 0;
    for message in kills {
        let Some(control_message::Msg::KillSession(k)) = &message.msg else {
            continue;
        };
        let live = cp
            .store
            .session(&k.session_id, now)
            .await?
            .is_some_and(|s| matches!(s.status, SessionStatus::Live | SessionStatus::Incomplete));
        if !live {
            continue;
        }
        let session = k.session_id.clone();
        if sender.send_timeout(message, SEND_TIMEOUT).await.is_err() {
            break; // this stream failed too; the next attach tries again
        }
        tracing::info!(agent, session, "kill sent again: its session has not ended");
        resent += 1;
    }
    Ok(resent)
}

/// Sends `command` if its agent is attached here and no one else has.
async fn try_send(cp: &ControlPlane, command: &AgentCommand) -> Result<bool, StoreError> {
    let Some(sender) = cp.registry.sender(&command.agent) else {
        return Ok(false);
    };
    let message = match ControlMessage::decode(command.message.as_slice()) {
        Ok(m) => m,
        Err(e) => {
            // Written by this code, so only a damaged row gets here; it
            // stays unsent and ages out.
            tracing::error!(id = %command.id, agent = %command.agent, error = %e, "cannot decode a stored message for an agent; skipped");
            return Ok(false);
        }
    };
    if !cp.store.claim_agent_command(&command.id, now_ms()).await? {
        return Ok(false);
    }
    if sender.send_timeout(message, SEND_TIMEOUT).await.is_err() {
        tracing::warn!(agent = %command.agent, id = %command.id, "the agent's stream did not take a message; it is sent when the agent attaches again");
        cp.store.unclaim_agent_command(&command.id).await?;
        return Ok(false);
    }
    tracing::debug!(agent = %command.agent, id = %command.id, "message sent to agent");
    Ok(true)
}

fn keep_ms() -> i64 {
    i64::try_from(KEEP.as_millis()).unwrap_or(i64::MAX)
}

/// Delivers messages written through other replicas every `every` (those
/// whose notice was lost), and drops old ones, until `stop` flips.
pub async fn run_poller(
    cp: std::sync::Arc<ControlPlane>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = None::<tokio::time::Instant>;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = deliver_pending(&cp, None).await {
            tracing::warn!(error = %e, "cannot look for messages to agents");
        }
        if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last_prune = Some(tokio::time::Instant::now());
            match cp
                .store
                .prune_agent_commands(now_ms().saturating_sub(keep_ms()))
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "old messages to agents removed"),
                Err(e) => tracing::warn!(error = %e, "cannot remove old messages to agents"),
            }
        }
    }
}
