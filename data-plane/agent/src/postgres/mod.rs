//! The PostgreSQL listener: the agent's front door for Postgres clients.
//!
//! Handles the start-up handshake: declines TLS/GSS encryption it cannot
//! offer yet, takes the resource from `database` and the client's token
//! from the cleartext password, verifies the token against the snapshot's
//! trusted issuers and checks that policy grants the subject the resource.
//! Every decision is written to the audit spool before the client hears
//! about it; if the spool refuses, so does the agent (fail closed).
//!
//! Proxying an authorised session to the target is the next step of the
//! data path and is not in this build: an authorised client is told so
//! with SQLSTATE 0A000.

mod wire;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sluice_proto as pb;
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpListener, TcpStream},
};

use crate::{Agent, metrics::OutcomeLabels};

/// Largest message accepted before authentication (a token fits easily).
const MAX_PRE_AUTH_MESSAGE: u32 = 64 * 1024;

pub async fn serve(agent: Arc<Agent>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            handle(agent, stream, peer).await;
        });
    }
}

/// How a connection attempt ended, for the audit trail and metrics.
struct Refusal {
    sqlstate: &'static str,
    message: String,
    hint: Option<&'static str>,
    outcome: &'static str,
}

impl Refusal {
    fn new(sqlstate: &'static str, outcome: &'static str, message: impl Into<String>) -> Self {
        Self {
            sqlstate,
            message: message.into(),
            hint: None,
            outcome,
        }
    }

    fn hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }
}

async fn handle(agent: Arc<Agent>, mut stream: TcpStream, peer: SocketAddr) {
    let timeout = agent.args.startup_timeout;
    let mut event = pb::AuditEvent {
        kind: "session.start".into(),
        session_id: uuid::Uuid::now_v7().to_string(),
        client_addr: peer.to_string(),
        attributes_json: r#"{"protocol":"postgres"}"#.into(),
        ..Default::default()
    };
    let outcome =
        match tokio::time::timeout(timeout, front_door(&agent, &mut stream, &mut event)).await {
            Ok(Ok(Some(refusal))) => Some(refusal),
            Ok(Ok(None)) => return, // cancel request, or a client that left before saying anything
            Ok(Err(e)) => Some(Refusal::new(
                "08P01",
                "protocol_error",
                format!("invalid start-up: {e}"),
            )),
            Err(_) => Some(Refusal::new(
                "08P01",
                "timeout",
                format!(
                    "start-up not completed within {}",
                    humantime::format_duration(timeout)
                ),
            )),
        };
    let Some(refusal) = outcome else { return };
    agent
        .metrics
        .client_connections
        .get_or_create(&OutcomeLabels {
            protocol: "postgres",
            outcome: refusal.outcome,
        })
        .inc();
    event.decision = if refusal.outcome == "granted" {
        "allow".into()
    } else {
        "deny".into()
    };
    event.error = refusal.message.clone();
    // Record first: if the decision cannot be audited, the client gets the
    // audit error instead (fail closed), never a silent success.
    let refusal = match agent.audit.record(event).await {
        Ok(_) => {
            agent.metrics.audit_events.inc();
            refusal
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot audit a connection; refusing it");
            Refusal::new(
                "57P03",
                "audit_unavailable",
                format!(
                    "sluice cannot record this session ({e}); connections are refused until it can"
                ),
            )
        }
    };
    let bytes = wire::error_response("FATAL", refusal.sqlstate, &refusal.message, refusal.hint);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Runs the start-up handshake. Returns the refusal to send, or `None` when
/// the connection should just be closed.
async fn front_door(
    agent: &Agent,
    stream: &mut TcpStream,
    event: &mut pb::AuditEvent,
) -> Result<Option<Refusal>, wire::WireError> {
    let params = loop {
        match wire::read_startup(stream).await {
            Err(wire::WireError::Closed) => return Ok(None),
            Err(e) => return Err(e),
            // Encryption is not offered by this build: answer 'N' and let
            // the client continue in plaintext (loopback only by default).
            Ok(wire::Startup::Ssl | wire::Startup::GssEnc) => stream.write_all(b"N").await?,
            Ok(wire::Startup::Cancel { .. }) => return Ok(None),
            Ok(wire::Startup::Params { version, params }) => {
                if version >> 16 != wire::PROTOCOL_3_0 >> 16 {
                    return Ok(Some(Refusal::new(
                        "0A000",
                        "protocol_error",
                        format!(
                            "unsupported frontend protocol {}.{}: sluice speaks 3.0",
                            version >> 16,
                            version & 0xffff
                        ),
                    )));
                }
                break params;
            }
        }
    };

    let mut database = None;
    let mut user = None;
    for (key, value) in &params {
        let slot = match key.as_str() {
            "database" => &mut database,
            "user" => &mut user,
            "replication" => {
                return Ok(Some(Refusal::new(
                    "28000",
                    "replication_refused",
                    "replication connections are not allowed through sluice",
                )));
            }
            _ => continue,
        };
        if slot.replace(value.clone()).is_some() {
            return Ok(Some(Refusal::new(
                "08P01",
                "protocol_error",
                format!("start-up parameter `{key}` given twice"),
            )));
        }
    }
    let Some(resource) = database.or_else(|| user.clone()) else {
        return Ok(Some(Refusal::new(
            "28000",
            "no_resource",
            "no database given: set the database name to the sluice resource you want",
        )));
    };
    event.resource.clone_from(&resource);

    let Some(active) = agent.snapshot_rx.borrow().clone() else {
        return Ok(Some(
            Refusal::new("57P03", "no_snapshot", "sluice agent has no valid policy snapshot; it refuses every connection until the control plane provides one")
                .hint("check `sluice agents` and the agent's /status endpoint"),
        ));
    };
    event.agent = agent.enrolled.identity.agent_name.clone();
    if !active
        .resources
        .get(&resource)
        .is_some_and(|r| r.kind == "postgres")
    {
        return Ok(Some(Refusal::new(
            "3D000",
            "unknown_resource",
            format!("resource \"{resource}\" is not a PostgreSQL resource served by this agent"),
        )));
    }

    stream.write_all(&wire::auth_cleartext()).await?;
    let (tag, body) = match wire::read_message(stream, MAX_PRE_AUTH_MESSAGE).await {
        Err(wire::WireError::Closed) => return Ok(None),
        other => other?,
    };
    if tag != b'p' {
        return Ok(Some(Refusal::new(
            "08P01",
            "protocol_error",
            "expected a password message",
        )));
    }
    let token = wire::password(&body)?;
    if token.is_empty() {
        return Ok(Some(
            Refusal::new(
                "28P01",
                "bad_token",
                "no token: use your OIDC access token as the password",
            )
            .hint("for example: PGPASSWORD=$(sluice token issue --subject you) psql ..."),
        ));
    }
    let identity = match active.verifier.verify_now(token) {
        Ok(id) => id,
        Err(e) => {
            return Ok(Some(Refusal::new(
                "28P01",
                "bad_token",
                format!("token rejected: {e}"),
            )));
        }
    };
    event.subject.clone_from(&identity.subject);
    event.groups.clone_from(&identity.groups);
    let subject = sluice_policy::Subject {
        id: identity.subject.clone(),
        groups: identity.groups.clone(),
        kind: match identity.kind {
            sluice_identity::SubjectKind::ServiceAccount => {
                sluice_policy::SubjectKind::ServiceAccount
            }
            _ => sluice_policy::SubjectKind::User,
        },
    };
    let Some(policy) = active.policy.connect(&subject, &resource) else {
        return Ok(Some(
            Refusal::new(
                "28000",
                "no_grant",
                format!(
                    "no policy grants \"{}\" access to resource \"{resource}\"",
                    identity.subject
                ),
            )
            .hint("ask an admin to add you to a policy (`sluice policy explain` shows why)"),
        ));
    };
    event.rule = policy.to_owned();
    Ok(Some(Refusal::new(
        "0A000",
        "granted",
        format!(
            "policy \"{policy}\" grants \"{}\" access to \"{resource}\", but this sluice build cannot proxy PostgreSQL sessions yet",
            identity.subject
        ),
    )))
}
