//! The agent-facing gRPC service: enrollment and the per-agent stream.
//!
//! Enrollment is the only call accepted without a client certificate; it
//! spends a one-time join token. `Attach` requires the enrolled certificate
//! (verified against our CA by TLS, then matched against the fingerprint
//! recorded at enrollment, so re-enrolling an agent retires its old
//! certificate).

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use sluice_proto::{
    self as pb, AgentMessage, ControlMessage, EnrollRequest, EnrollResponse, agent_message,
    agent_service_server::AgentService, control_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::{ControlPlane, keys::sha256_hex, registry::Attached, store::now_ms};

/// Prefix of join tokens; the version lets the format evolve.
pub const JOIN_TOKEN_PREFIX: &str = "sjt1";

/// A parsed join token: `sjt1.<id>.<secret>.<ca-sha256>`.
#[derive(Debug, PartialEq, Eq)]
pub struct JoinToken<'a> {
    pub id: &'a str,
    pub secret: &'a str,
    pub ca_fingerprint: &'a str,
}

impl<'a> JoinToken<'a> {
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.trim().split('.');
        let (prefix, id, secret, fp) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || prefix != JOIN_TOKEN_PREFIX
            || id.is_empty()
            || secret.is_empty()
        {
            return None;
        }
        if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Self {
            id,
            secret,
            ca_fingerprint: fp,
        })
    }
}

pub struct AgentGrpc {
    cp: Arc<ControlPlane>,
}

impl AgentGrpc {
    pub fn new(cp: Arc<ControlPlane>) -> Self {
        Self { cp }
    }

    async fn enroll_inner(&self, req: EnrollRequest) -> Result<EnrollResponse, Status> {
        let create_hint = "create a new one with `sluice join-token create --agent NAME`";
        let token = JoinToken::parse(&req.join_token).ok_or_else(|| {
            Status::invalid_argument(format!(
                "join token is malformed: copy it exactly as printed, or {create_hint}"
            ))
        })?;
        let not_recognised = || {
            Status::permission_denied(format!(
                "join token not recognised by this control plane: {create_hint}"
            ))
        };
        let row = self
            .cp
            .store
            .join_token(token.id)
            .await
            .map_err(internal)?
            .ok_or_else(not_recognised)?;
        let presented = sha256_hex(token.secret.as_bytes());
        if !constant_time_eq(presented.as_bytes(), row.secret_hash.as_bytes()) {
            return Err(not_recognised());
        }
        if row.used_at.is_some() {
            return Err(Status::permission_denied(format!(
                "join token was already used: {create_hint}"
            )));
        }
        let now = now_ms();
        if row.expires_at <= now {
            return Err(Status::permission_denied(format!(
                "join token expired at {}: {create_hint}",
                crate::api::rfc3339(row.expires_at)
            )));
        }
        if !token
            .ca_fingerprint
            .eq_ignore_ascii_case(self.cp.keys.ca.fingerprint())
        {
            // The agent checks this too (it pins our CA); a mismatch here
            // means the token came from another control plane's CA.
            return Err(not_recognised());
        }
        let server_names = valid_server_names(&req.server_names)?;
        if !self
            .cp
            .store
            .consume_join_token(token.id, now)
            .await
            .map_err(internal)?
        {
            return Err(Status::permission_denied(format!(
                "join token was already used: {create_hint}"
            )));
        }
        let certificate_pem = self
            .cp
            .keys
            .ca
            .sign_agent_csr(&req.csr_pem, &row.agent, &server_names)
            .map_err(|e| {
                Status::invalid_argument(format!("certificate signing request rejected: {e}"))
            })?;
        let fingerprint = crate::keys::cert_fingerprint_pem(&certificate_pem)
            .ok_or_else(|| Status::internal("issued certificate could not be read back"))?;
        self.cp
            .store
            .upsert_agent_enrollment(&row.agent, &fingerprint, &req.agent_version)
            .await
            .map_err(internal)?;
        tracing::info!(agent = %row.agent, "agent enrolled");
        Ok(EnrollResponse {
            agent_name: row.agent,
            certificate_pem,
            ca_certificate_pem: self.cp.keys.ca.cert_pem().to_owned(),
            snapshot_keys: vec![pb::SigningKey {
                key_id: self.cp.keys.snapshot.kid().to_owned(),
                algorithm: "ed25519".to_owned(),
                public_key: self.cp.keys.snapshot.public_key(),
            }],
        })
    }
}

/// Host names or IP addresses for the agent's certificate.
fn valid_server_names(names: &[String]) -> Result<Vec<String>, Status> {
    if names.len() > 32 {
        return Err(Status::invalid_argument(
            "at most 32 server names may be requested",
        ));
    }
    names
        .iter()
        .map(|n| {
            let n = n.trim().to_ascii_lowercase();
            let is_ip = n.parse::<std::net::IpAddr>().is_ok();
            let is_dns = !n.is_empty()
                && n.len() <= 253
                && n.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if is_ip || is_dns {
                Ok(n)
            } else {
                Err(Status::invalid_argument(format!(
                    "`{n}` is not a valid host name or IP address for the agent certificate"
                )))
            }
        })
        .collect()
}

/// Equality without an early exit, so timing says nothing about where two
/// hashes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "agent RPC failed");
    Status::internal("control plane error; see the control plane log")
}

type AttachStream = Pin<Box<dyn Stream<Item = Result<ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentGrpc {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let result = self.enroll_inner(request.into_inner()).await;
        match &result {
            Ok(_) => {
                self.cp.metrics.enrollments.inc();
            }
            Err(status) => {
                self.cp.metrics.enrollment_failures.inc();
                tracing::warn!(reason = %status.message(), "agent enrollment refused");
            }
        };
        result.map(Response::new)
    }

    type AttachStream = AttachStream;

    async fn attach(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<AttachStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let certs = request.peer_certs().ok_or_else(|| {
            Status::unauthenticated(
                "client certificate required: enroll this agent with a join token first",
            )
        })?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("client certificate required"))?;
        let name = agent_name_from_cert(leaf.as_ref())
            .ok_or_else(|| Status::unauthenticated("client certificate has no agent name"))?;
        let fingerprint = sha256_hex(leaf.as_ref());
        let enrolled = self.cp.store.agent(&name).await.map_err(internal)?;
        if enrolled.map(|a| a.cert_fingerprint) != Some(fingerprint) {
            return Err(Status::unauthenticated(format!(
                "certificate for agent `{name}` is no longer valid (the agent was re-enrolled or removed): enroll again"
            )));
        }

        let (tx, rx) = mpsc::channel::<ControlMessage>(256);
        let connection_id = self.cp.registry.next_connection_id();
        let inbound = request.into_inner();
        let cp = self.cp.clone();
        tokio::spawn(async move {
            let mut session = AgentSession {
                cp: cp.clone(),
                name: name.clone(),
                peer,
                connection_id,
                tx,
                sent_version: 0,
                attached_at: 0,
            };
            if let Err(e) = session.run(inbound).await {
                tracing::info!(agent = %name, reason = %e, "agent stream ended");
            }
            if session.attached_at > 0
                && let Err(e) = cp.store.agent_detached(&name, session.attached_at).await
            {
                tracing::warn!(agent = %name, error = %e, "could not record the agent's detach");
            }
            if cp.registry.detach(&name, connection_id) {
                cp.metrics
                    .agents_connected
                    .set(i64::try_from(cp.registry.count()).unwrap_or(0));
            }
        });
        let stream = tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The agent name is the certificate's common name (we issued it).
pub fn agent_name_from_cert(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

struct AgentSession {
    cp: Arc<ControlPlane>,
    name: String,
    peer: String,
    connection_id: u64,
    tx: mpsc::Sender<ControlMessage>,
    sent_version: u64,
    /// When this connection's Hello arrived (ms); 0 before.
    attached_at: i64,
}

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// An agent that sends nothing (not even a heartbeat) for this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl AgentSession {
    async fn run(&mut self, mut inbound: Streaming<AgentMessage>) -> anyhow::Result<()> {
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                msg: Some(agent_message::Msg::Hello(h)),
            }))) => h,
            Ok(Ok(_)) => anyhow::bail!("agent did not start with Hello"),
            Ok(Err(e)) => anyhow::bail!("stream error before Hello: {e}"),
            Err(_) => anyhow::bail!("no Hello within {HELLO_TIMEOUT:?}"),
        };
        if hello.agent_name != self.name {
            tracing::warn!(cert = %self.name, claimed = %hello.agent_name, "agent Hello names another agent; using the certificate's name");
        }
        tracing::info!(agent = %self.name, peer = %self.peer, version = %hello.agent_version, snapshot = hello.snapshot_version, "agent attached");
        self.attached_at = now_ms();
        self.cp.registry.attach(
            &self.name,
            Attached {
                connection_id: self.connection_id,
                peer: self.peer.clone(),
                agent_version: hello.agent_version.clone(),
                since_ms: self.attached_at,
                snapshot_version: hello.snapshot_version,
                sender: self.tx.clone(),
            },
        );
        self.cp
            .metrics
            .agents_connected
            .set(i64::try_from(self.cp.registry.count()).unwrap_or(0));
        self.sent_version = hello.snapshot_version;
        self.record_seen(&hello.agent_version, hello.snapshot_version)
            .await;
        // Sessions that started before this moment and never ended are
        // incomplete from now on (see store::sessions).
        self.cp
            .store
            .agent_attached(&self.name, self.attached_at)
            .await?;

        let mut changes = self.cp.changes.subscribe();
        let mut stopping = self.cp.stopping.subscribe();
        // Always (re)send on attach when the agent is behind.
        self.push_snapshot_if_behind().await?;
        // Decisions and kills written while it was away or attached elsewhere.
        if let Err(e) = crate::commands::deliver_pending(&self.cp, Some(&self.name)).await {
            tracing::warn!(agent = %self.name, error = %e, "cannot look for messages to the agent; the next pass sends them");
        }
        // Kills that may have been lost with the agent's last stream.
        if let Err(e) = crate::commands::resend_kills(&self.cp, &self.name).await {
            tracing::warn!(agent = %self.name, error = %e, "cannot look for kills to send again");
        }
        let mut agent_version = hello.agent_version;
        loop {
            tokio::select! {
                msg = tokio::time::timeout(IDLE_TIMEOUT, inbound.message()) => {
                    let msg = match msg {
                        Err(_) => anyhow::bail!("no message for {IDLE_TIMEOUT:?}"),
                        Ok(Err(e)) => anyhow::bail!("stream error: {e}"),
                        Ok(Ok(None)) => return Ok(()),
                        Ok(Ok(Some(m))) => m,
                    };
                    match msg.msg {
                        Some(agent_message::Msg::AuditBatch(batch)) => self.ingest(batch).await?,
                        Some(agent_message::Msg::Heartbeat(hb)) => {
                            self.cp.registry.update(&self.name, self.connection_id, |a| a.snapshot_version = hb.snapshot_version);
                            self.record_seen(&agent_version, hb.snapshot_version).await;
                            self.send(control_message::Msg::HeartbeatAck(pb::HeartbeatAck { sent_at_unix_ms: hb.sent_at_unix_ms })).await?;
                        }
                        Some(agent_message::Msg::Hello(h)) => {
                            agent_version = h.agent_version;
                            self.sent_version = h.snapshot_version;
                            self.push_snapshot_if_behind().await?;
                        }
                        Some(agent_message::Msg::ApprovalRequest(r)) => {
                            let request_id = r.request_id.clone();
                            let new = matches!(r.state.as_str(), "" | "pending");
                            match crate::approvals::on_agent_request(&self.cp, &self.name, r).await {
                                Ok(Some(decision)) => self.send(control_message::Msg::ApprovalDecision(decision)).await?,
                                Ok(None) if new => self.send(control_message::Msg::ApprovalFiled(pb::ApprovalFiled { request_id })).await?,
                                Ok(None) => {}
                                Err(e) => tracing::error!(agent = %self.name, error = %e, "cannot store an approval request"),
                            }
                        }
                        Some(agent_message::Msg::RecordingChunk(_)) | Some(agent_message::Msg::SessionClosed(_)) => {}
                        None => anyhow::bail!("empty message from agent"),
                    }
                }
                _ = stopping.changed() => {
                    return Ok(()); // replica shutting down: the agent reconnects elsewhere
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(()); // control plane shutting down
                    }
                    self.push_snapshot_if_behind().await?;
                }
            }
        }
    }

    async fn push_snapshot_if_behind(&mut self) -> anyhow::Result<()> {
        let current = self.cp.store.revision().await?;
        if current <= self.sent_version && self.sent_version != 0 {
            return Ok(());
        }
        let (version, signed) = crate::snapshot::build(&self.cp, &self.name).await?;
        self.send(control_message::Msg::Snapshot(signed)).await?;
        self.sent_version = version;
        self.cp.metrics.snapshots_pushed.inc();
        tracing::info!(agent = %self.name, version, "snapshot pushed");
        Ok(())
    }

    async fn ingest(&mut self, batch: pb::AuditBatch) -> anyhow::Result<()> {
        let Some(max_seq) = batch.events.iter().map(|e| e.seq).max() else {
            return Ok(());
        };
        let inserted = crate::recording::ingest(&self.cp, &self.name, batch.events).await?;
        self.cp.metrics.audit_events_ingested.inc_by(inserted);
        self.send(control_message::Msg::AuditAck(pb::AuditAck {
            acked_seq: max_seq,
        }))
        .await
    }

    async fn send(&self, msg: control_message::Msg) -> anyhow::Result<()> {
        self.tx
            .send(ControlMessage { msg: Some(msg) })
            .await
            .map_err(|_| anyhow::anyhow!("agent stream closed"))
    }

    async fn record_seen(&self, agent_version: &str, snapshot_version: u64) {
        if let Err(e) = self
            .cp
            .store
            .agent_seen(&self.name, agent_version, snapshot_version, &self.peer)
            .await
        {
            tracing::warn!(agent = %self.name, error = %e, "could not record agent heartbeat");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_token_parsing() {
        let fp = "a".repeat(64);
        let text = format!("sjt1.abc.s3cr3t.{fp}");
        assert_eq!(
            JoinToken::parse(&text),
            Some(JoinToken {
                id: "abc",
                secret: "s3cr3t",
                ca_fingerprint: &fp
            })
        );
        assert_eq!(JoinToken::parse("sjt1.abc.s3cr3t"), None);
        assert_eq!(JoinToken::parse(&format!("sjt2.abc.s.{fp}")), None);
        assert_eq!(
            JoinToken::parse(&format!("sjt1.abc.s.{}", "z".repeat(64))),
            None
        );
        assert_eq!(JoinToken::parse(&format!("sjt1..s.{fp}")), None);
        assert_eq!(JoinToken::parse(&format!("sjt1.a.s.{fp}.x")), None);
    }
}
