//! The agent's link to the control plane: one mutually authenticated gRPC
//! stream, re-dialled with jittered exponential backoff whenever it drops.
//!
//! Down the stream come signed snapshots (verified, published, cached) and
//! audit acknowledgements; up go Hello, heartbeats and audit batches read
//! from the durable spool. Nothing here is on a client's hot path.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use rand::Rng as _;
use sluice_proto::{
    self as pb, AgentMessage, agent_message, agent_service_client::AgentServiceClient,
    control_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument as _;

use crate::{Agent, snapshot};

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Events sent but not yet acknowledged, at most.
const MAX_IN_FLIGHT: u64 = 50_000;
const BATCH: usize = 500;
/// Pause after a short audit batch.
const SHIP_LINGER: Duration = Duration::from_millis(50);

/// Runs forever, keeping the link up.
pub async fn run(agent: Arc<Agent>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match connect_once(&agent).await {
            Ok(()) => tracing::warn!("control plane closed the stream"),
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::warn!(error = %msg, retry_in = ?backoff, "control plane unreachable; enforcing the last snapshot");
                agent.status.set_error(msg);
            }
        }
        if agent.status.take_was_connected() {
            backoff = MIN_BACKOFF;
        }
        agent.status.set_connected(false);
        agent.metrics.connected.set(0);
        // Full jitter: spreads a fleet of agents reconnecting after a
        // control-plane restart.
        let wait = rand::rng().random_range(backoff / 2..=backoff);
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect_once(agent: &Arc<Agent>) -> anyhow::Result<()> {
    // Covers establishing the stream (TLS connect and `Attach`), not its
    // lifetime, so the span is exported as soon as the agent is attached.
    let span = tracing::info_span!(
        "control_plane.connect",
        control_plane = %agent.args.control_plane
    );
    let enrolled = &agent.enrolled;
    let (host, _) = agent.args.control_plane_host_port()?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&enrolled.ca_pem))
        .identity(tonic::transport::Identity::from_pem(
            &enrolled.cert_pem,
            &enrolled.key_pem,
        ))
        .domain_name(host);
    let channel = tonic::transport::Endpoint::from_shared(agent.args.control_plane.clone())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .instrument(span.clone())
        .await
        .context("cannot connect")?;

    let (out_tx, out_rx) = mpsc::channel::<AgentMessage>(64);
    let spool = *agent.audit.status().borrow();
    out_tx
        .send(msg(agent_message::Msg::Hello(pb::Hello {
            agent_name: enrolled.identity.agent_name.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            snapshot_version: agent.current_version(),
            spooled_seq: spool.last_seq,
        })))
        .await
        .ok();
    let mut inbound = AgentServiceClient::new(channel)
        .attach(ReceiverStream::new(out_rx))
        .instrument(span)
        .await
        .map_err(|s| anyhow::anyhow!("control plane refused the stream: {}", s.message()))?
        .into_inner();
    agent.status.set_connected(true);
    agent.metrics.connected.set(1);
    tracing::info!(control_plane = %agent.args.control_plane, "connected to the control plane");

    let shipper = tokio::spawn(ship_audit(agent.clone(), out_tx.clone()));
    let heartbeat_task = tokio::spawn(heartbeats(agent.clone(), out_tx.clone()));
    agent.approvals.resend_all();
    let approvals_task = tokio::spawn(ship_approvals(agent.clone(), out_tx.clone()));
    let result = async {
        while let Some(message) = inbound.message().await.context("stream error")? {
            match message.msg {
                Some(control_message::Msg::Snapshot(signed)) => {
                    agent.apply_snapshot(&signed);
                    // Report the new version at once rather than at the
                    // next heartbeat, so `sluice agents` is current.
                    let _ = out_tx.try_send(msg(agent_message::Msg::Heartbeat(heartbeat(agent))));
                }
                Some(control_message::Msg::AuditAck(ack)) => agent.audit.ack(ack.acked_seq),
                Some(control_message::Msg::HeartbeatAck(_)) => agent.confirm_snapshot(),
                Some(control_message::Msg::KillSession(k)) => {
                    let reason = if k.reason.is_empty() {
                        "ended by an administrator".to_owned()
                    } else {
                        format!("ended by an administrator: {}", k.reason)
                    };
                    let ended = if k.session_id.is_empty() {
                        agent.sessions.end_subject(&k.subject, &k.resource, &reason)
                    } else {
                        usize::from(agent.sessions.end(&k.session_id, &reason))
                    };
                    tracing::warn!(session = %k.session_id, subject = %k.subject, ended, "session kill requested");
                }
                Some(control_message::Msg::ApprovalDecision(d)) => agent.approvals.decided(d),
                Some(control_message::Msg::ApprovalFiled(f)) => agent.approvals.filed(&f.request_id),
                None => {}
            }
        }
        Ok(())
    }
    .await;
    shipper.abort();
    heartbeat_task.abort();
    approvals_task.abort();
    result
}

fn msg(m: agent_message::Msg) -> AgentMessage {
    AgentMessage { msg: Some(m) }
}

async fn heartbeats(agent: Arc<Agent>, out: mpsc::Sender<AgentMessage>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        let hb = pb::Heartbeat {
            sent_at_unix_ms: i64::try_from(snapshot::now_ms()).unwrap_or(0),
            snapshot_version: agent.current_version(),
            spool_pending: agent.audit.status().borrow().pending,
        };
        if out
            .send(msg(agent_message::Msg::Heartbeat(hb)))
            .await
            .is_err()
        {
            return;
        }
    }
}

fn heartbeat(agent: &Agent) -> pb::Heartbeat {
    pb::Heartbeat {
        sent_at_unix_ms: i64::try_from(snapshot::now_ms()).unwrap_or(0),
        snapshot_version: agent.current_version(),
        spool_pending: agent.audit.status().borrow().pending,
    }
}

/// Sends spooled events in order. Starts from the last acknowledged event
/// on every connection, so anything sent but not acknowledged before a
/// drop is sent again (the control plane drops duplicates by event id).
/// Sends approval requests and their updates as they are filed.
async fn ship_approvals(agent: Arc<Agent>, out: mpsc::Sender<AgentMessage>) {
    loop {
        for request in agent.approvals.drain() {
            if out
                .send(msg(agent_message::Msg::ApprovalRequest(request)))
                .await
                .is_err()
            {
                return;
            }
        }
        agent.approvals.notified().await;
    }
}

async fn ship_audit(agent: Arc<Agent>, out: mpsc::Sender<AgentMessage>) {
    let mut status = agent.audit.status();
    let mut sent = status.borrow().acked_seq;
    loop {
        let current = *status.borrow_and_update();
        let acked = current.acked_seq;
        sent = sent.max(acked);
        if current.last_seq > sent && sent - acked < MAX_IN_FLIGHT {
            match agent.audit.read_after(sent, BATCH).await {
                Ok((events, through)) if through > sent => {
                    // Short: fewer records than asked for (events alone
                    // would mislead, write-ahead records are read past).
                    let short = through - sent < BATCH as u64;
                    // Write-ahead records alone need no message: the
                    // acknowledgement of a later event covers them.
                    if !events.is_empty()
                        && out
                            .send(msg(agent_message::Msg::AuditBatch(pb::AuditBatch {
                                events,
                            })))
                            .await
                            .is_err()
                    {
                        return;
                    }
                    sent = through;
                    // A short batch: let more events gather before the next
                    // one, so a busy agent ships hundreds per message rather
                    // than one per statement (each costs the control plane a
                    // database transaction).
                    // (Whether the batch was short, not how much is
                    // unacknowledged: acknowledgements are recorded only
                    // every 200 ms, so that would stop the lingering under
                    // exactly the load it is for.)
                    if short {
                        tokio::time::sleep(SHIP_LINGER).await;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot read the audit spool"),
            }
        }
        // Wake on new events or acknowledgements; poll now and then anyway.
        let _ = tokio::time::timeout(Duration::from_secs(1), status.changed()).await;
    }
}
