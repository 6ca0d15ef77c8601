//! The PostgreSQL listener: the agent's front door for Postgres clients.
//!
//! Start-up: declines TLS/GSS encryption it does not offer yet (plaintext
//! is for loopback), refuses replication, takes the resource from
//! `database` and the client's token from the cleartext password, verifies
//! the token against the snapshot's trusted issuers and checks that policy
//! grants the subject the resource. Then it logs in to the target with the
//! vault credential ([`upstream`]) and relays the session, judging every
//! statement ([`session`]). Every decision is written to the audit spool
//! before the client hears about it; if the spool refuses, so does the
//! agent (fail closed).

mod cancel;
mod capture;
mod catalog;
mod ddl_watch;
mod io;
mod judge;
mod mask;
mod names;
mod routines;
mod session;
mod upstream;

use std::{net::SocketAddr, sync::Arc, time::Duration};

pub use cancel::CancelRegistry;
pub use catalog::{Catalog, CatalogCache};
pub use ddl_watch::DdlWatches;
pub use routines::Routines;
pub use session::SHUTTING_DOWN;

/// The TLS acceptor for client connections: the configured certificate
/// files, or else the certificate issued at enrollment (chained to the
/// control plane's CA, so `sslmode=verify-full` works with that CA).
pub fn tls_acceptor(
    args: &crate::config::AgentArgs,
    enrolled: &crate::enroll::Enrolled,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context as _;
    let (chain_pem, key_pem) = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => (
            std::fs::read_to_string(c)
                .with_context(|| format!("SLUICE_AGENT_TLS_CERT: cannot read {}", c.display()))?,
            std::fs::read_to_string(k)
                .with_context(|| format!("SLUICE_AGENT_TLS_KEY: cannot read {}", k.display()))?,
        ),
        _ => (
            format!("{}{}", enrolled.cert_pem, enrolled.ca_pem),
            enrolled.key_pem.clone(),
        ),
    };
    let chain = rustls_pemfile::certs(&mut chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("TLS certificate chain is not valid PEM")?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .context("TLS key is not valid PEM")?
        .context("no private key in the TLS key file")?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("TLS certificate and key do not match")?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}
use sluice_pgwire::{FrameReader, messages, startup as wire};
use sluice_proto as pb;
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpListener, TcpStream},
};
use tracing::Instrument as _;

use crate::{Agent, audit::SessionTrail, metrics::OutcomeLabels};

/// Largest message accepted before authentication (a token fits easily).
const MAX_PRE_AUTH_MESSAGE: u32 = 64 * 1024;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(agent: Arc<Agent>, listener: TcpListener) {
    let limit = Arc::new(tokio::sync::Semaphore::new(agent.args.max_connections));
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
        let permit = limit.clone().try_acquire_owned();
        let starting = agent.claim_startup_slot(peer.ip());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match (permit, starting) {
                (Ok(_permit), Some(starting)) => handle(agent, stream, peer, starting).await,
                (Err(_), _) => refuse_busy(agent, stream).await,
                (_, None) => refuse_starting(agent, stream, peer).await,
            }
        });
    }
}

async fn refuse_busy(agent: Arc<Agent>, mut stream: TcpStream) {
    agent
        .metrics
        .client_connections
        .get_or_create(&OutcomeLabels {
            protocol: "postgres",
            outcome: "too_many_connections",
        })
        .inc();
    let msg = messages::Notice::fatal(
        "53300",
        format!(
            "sluice agent is at its limit of {} connections; try again later",
            agent.args.max_connections
        ),
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        stream.write_all(&msg.to_error().raw),
    )
    .await;
}

/// Refuses a connection from a client network (an IPv4 address, an IPv6
/// /64) that already has `--max-startups-per-address` connections in their
/// start-up handshake.
async fn refuse_starting(agent: Arc<Agent>, mut stream: TcpStream, peer: SocketAddr) {
    agent
        .metrics
        .client_connections
        .get_or_create(&OutcomeLabels {
            protocol: "postgres",
            outcome: "too_many_startups",
        })
        .inc();
    tracing::debug!(client = %peer, "too many connections from one address in start-up");
    let msg = messages::Notice::fatal(
        "53300",
        format!(
            "{} connections from {} are already logging in to this sluice agent (its limit); try again once they have",
            agent.args.max_startups_per_address,
            crate::describe_client_network(peer.ip())
        ),
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        stream.write_all(&msg.to_error().raw),
    )
    .await;
}

/// Why a connection was not (or no longer) served.
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

/// A client that passed the front door.
struct Granted {
    resource: pb::Resource,
    credential: pb::Credential,
    subject: sluice_policy::Subject,
    params: Vec<(String, String)>,
    /// When the client's token stops being valid (Unix seconds).
    token_valid_until: u64,
}

enum FrontDoor {
    Refused(Refusal),
    Granted(Box<Granted>),
    /// Cancel request or a client that left; nothing to answer.
    Done,
}

async fn handle(agent: Arc<Agent>, tcp: TcpStream, peer: SocketAddr, starting: crate::StartupSlot) {
    let span = tracing::info_span!("postgres.connection", client = %peer);
    async move {
        let timeout = agent.args.startup_timeout;
        let mut event = pb::AuditEvent {
            kind: "session.start".into(),
            session_id: uuid::Uuid::now_v7().to_string(),
            client_addr: peer.to_string(),
            agent: agent.enrolled.identity.agent_name.clone(),
            attributes_json: r#"{"protocol":"postgres"}"#.into(),
            ..Default::default()
        };
        let mut stream = io::Stream::Plain(tcp);
        let door = match tokio::time::timeout(timeout, negotiate_then_front_door(&agent, &mut stream, peer, &mut event)).await {
            Ok(Ok(door)) => door,
            Ok(Err(e)) => FrontDoor::Refused(Refusal::new("08P01", "protocol_error", format!("invalid start-up: {e}"))),
            Err(_) => FrontDoor::Refused(Refusal::new(
                "08P01",
                "timeout",
                format!("start-up not completed within {}", humantime::format_duration(timeout)),
            )),
        };
        // Logged in, refused or gone: no longer in the handshake.
        drop(starting);
        let granted = match door {
            FrontDoor::Done => return,
            FrontDoor::Refused(refusal) => return refuse(&agent, stream, event, refusal).await,
            FrontDoor::Granted(g) => g,
        };
        if agent.sessions.is_draining() {
            // Accepted just before the listener closed: not worth a session
            // on the target that would end at once.
            let r = Refusal::new("57P03", "shutting_down", SHUTTING_DOWN.to_owned());
            return refuse(&agent, stream, event, r).await;
        }
        let subject_slot = match agent.claim_subject_slot(&granted.subject.id) {
            Some(slot) => slot,
            None => {
                let r = Refusal::new("53300", "too_many_connections", format!(
                    "\"{}\" already has the maximum of {} connections through this agent",
                    granted.subject.id, agent.args.max_connections_per_subject
                ));
                return refuse(&agent, stream, event, r).await;
            }
        };
        // Held for the whole session: it stands for its upstream connection.
        let _resource_slot = match agent.claim_resource_slot(&granted.resource, &granted.subject.id) {
            Ok(slot) => slot,
            Err(full) => {
                let why = match full {
                    crate::ResourceFull::All(n) => format!(
                        "\"{}\" already has its maximum of {n} sessions through this agent (the resource's max_connections); try again when one ends",
                        granted.resource.name
                    ),
                    crate::ResourceFull::Subject(n) => format!(
                        "\"{}\" already has the maximum of {n} sessions on \"{}\" (the resource's max_connections_per_subject); close one first",
                        granted.subject.id, granted.resource.name
                    ),
                };
                return refuse(&agent, stream, event, Refusal::new("53300", "too_many_connections", why)).await;
            }
        };
        let upstream = match upstream::connect(&granted.resource, &granted.credential, &granted.params, UPSTREAM_TIMEOUT, agent.args.max_message_bytes).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(resource = %granted.resource.name, error = %e, "cannot open the upstream session");
                return refuse(&agent, stream, event, Refusal::new("08006", "upstream_failed", format!("sluice could not open a session on \"{}\": {e}", granted.resource.name))).await;
            }
        };
        agent.pg_ddl_watches.ensure(&agent, &granted.resource, &granted.credential);
        let mut masker = match session_masker(&agent, &granted).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(resource = %granted.resource.name, error = %e, "cannot prepare masking; refusing the session");
                return refuse(&agent, stream, event, Refusal::new("58000", "masking_unavailable", format!("sluice cannot apply this session's mask rules on \"{}\": {e}", granted.resource.name))).await;
            }
        };
        let routines = match agent.pg_routines.get(&granted.resource, &granted.credential, UPSTREAM_TIMEOUT, agent.args.max_message_bytes).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(resource = %granted.resource.name, error = %e, "cannot read the target's functions; refusing the session");
                return refuse(&agent, stream, event, Refusal::new("58000", "catalog_unavailable", format!("sluice cannot read the functions defined in \"{}\", which it needs to judge statements: {e}", granted.resource.name))).await;
            }
        };
        if let Some(masker) = &mut masker {
            masker.set_routines(routines.value.clone());
        }
        event.decision = "allow".into();
        // Registered before the start is recorded, so a kill or revocation
        // that follows the start event always finds the session.
        let registration = agent.sessions.register(
            &event.session_id,
            granted.subject.clone(),
            &granted.resource.name,
            masker.as_ref().map(|m| m.specs().to_vec()).unwrap_or_default(),
        );
        // The grant and mask rules above are from the snapshot of the login;
        // one applied since may have changed them.
        let current = agent.snapshot_rx.borrow().clone();
        if let Some(why) = agent.sessions.recheck(&event.session_id, current.as_deref()) {
            let code = if matches!(why, crate::sessions::Outdated::MasksChanged { .. }) { "08004" } else { "28000" };
            return refuse(&agent, stream, event, Refusal::new(code, "policy_changed", format!("{why}"))).await;
        }
        let mut trail = SessionTrail::new(agent.audit.clone());
        if let Err(e) = trail.record(event.clone())
            && granted.resource.audit_mode != "best_effort"
        {
            tracing::error!(error = %e, "cannot audit a session start; refusing it");
            let r = Refusal::new("57P03", "audit_unavailable", format!("sluice cannot record this session ({e}); connections are refused until it can"));
            return refuse_unrecorded(&agent, stream, r).await;
        }
        agent.metrics.audit_events.inc();
        agent.metrics.client_connections.get_or_create(&OutcomeLabels { protocol: "postgres", outcome: "granted" }).inc();

        // The client gets the target's parameters but our own cancel key.
        let Some((pid, key, cancels)) = agent.pg_cancel.register(&granted.resource, upstream.backend_pid, upstream.backend_key) else {
            let why = "sluice cannot issue this session a cancel key: the system's random source failed; connect again, and if this persists, check the agent host's random source (getrandom)".to_owned();
            tracing::error!("{why}; refusing the session");
            refuse_unrecorded(&agent, stream, Refusal::new("58000", "cancel_key_unavailable", why.clone())).await;
            trail.record_closing(session_end(event, std::time::Instant::now(), &session::Totals::default(), why));
            return;
        };
        let mut hello = bytes::BytesMut::new();
        hello.extend_from_slice(&messages::auth_ok().raw);
        for (k, v) in &upstream.parameters {
            hello.extend_from_slice(&messages::parameter_status(k, v).raw);
        }
        hello.extend_from_slice(&messages::backend_key_data(pid, key).raw);
        hello.extend_from_slice(&messages::ready_for_query(upstream.tx_status).raw);
        let started = std::time::Instant::now();
        if let Err(e) = stream.write_all(&hello).await {
            agent.pg_cancel.unregister(pid, key);
            let why = format!("the client left before its session began: {e}");
            trail.record_closing(session_end(event, started, &session::Totals::default(), why));
            return;
        }
        let ctx = session::Context {
            agent: agent.clone(),
            session_id: event.session_id.clone(),
            subject: granted.subject.clone(),
            resource: granted.resource.name.clone(),
            client_addr: peer.to_string(),
            credential: granted.credential.clone(),
            idle_timeout: agent.args.idle_timeout,
            token_valid_until: granted.token_valid_until,
            audit_best_effort: granted.resource.audit_mode == "best_effort",
            trail,
            ended: registration.ended.clone(),
            draining: registration.draining.clone(),
            cancels,
            masker,
            routines,
            target: granted.resource.clone(),
            receiving: subject_slot.receive_charge(),
            receiving_results: subject_slot.receive_charge(),
            batching: subject_slot.receive_charge(),
            prepared: subject_slot.prepared(),
        };
        let client_reader = FrameReader::new(agent.args.max_message_bytes);
        let (totals, error, mut trail) = session::run(ctx, stream, client_reader, upstream).await;
        agent.pg_cancel.unregister(pid, key);
        let why = error.map(|e| e.to_string()).unwrap_or_default();
        trail.record_closing(session_end(event, started, &totals, why));
        // Deregistered once its end is recorded: a draining agent waits for
        // the registry to empty before it flushes the spool.
        drop(registration);
    }
    .instrument(span)
    .await
}

/// The session's masker, when mask rules apply to its subject and
/// resource: with the target's catalog when rules mask by column or strict
/// table, and a hash key of the resource's own.
async fn session_masker(
    agent: &Agent,
    granted: &Granted,
) -> Result<Option<mask::Masker>, upstream::UpstreamError> {
    let Some(active) = agent.snapshot_rx.borrow().clone() else {
        return Ok(None);
    };
    let specs: Vec<sluice_policy::MaskSpec> = active
        .policy
        .masks_for(&granted.subject, &granted.resource.name)
        .into_iter()
        .cloned()
        .collect();
    if specs.is_empty() {
        return Ok(None);
    }
    let catalog = if mask::Masker::needs_catalog(&specs) {
        Some(
            agent
                .pg_catalogs
                .get(
                    &granted.resource,
                    &granted.credential,
                    UPSTREAM_TIMEOUT,
                    agent.args.max_message_bytes,
                )
                .await?
                .value,
        )
    } else {
        None
    };
    // The resource's key from the control plane (equal on every agent that
    // serves it); a snapshot without one gets a key of this process.
    let key = if granted.resource.mask_key.is_empty() {
        agent.local_mask_key.clone()
    } else {
        granted.resource.mask_key.clone()
    };
    Ok(Some(mask::Masker::new(specs, key, catalog)))
}

/// Masking throughput on one core: rewrites synthetic 5-column DataRows
/// (two columns masked by origin, detectors over the rest) for `duration`;
/// returns (DataRow bytes processed, seconds). For `make bench`.
pub fn masking_throughput(rows: usize, duration: Duration) -> (u64, f64) {
    use sluice_policy::{ColumnPattern, Detector, MaskSpec, MaskStrategy};
    const TABLE: u32 = 16_384;
    let catalog = catalog::test_catalog(
        &[
            (TABLE, 1, "public", "mask_bench", "id", false),
            (TABLE, 2, "public", "mask_bench", "name", false),
            (TABLE, 3, "public", "mask_bench", "email", false),
            (TABLE, 4, "public", "mask_bench", "note", false),
            (TABLE, 5, "public", "mask_bench", "amount", false),
        ],
        &[],
    );
    let spec = MaskSpec {
        policy: "bench".into(),
        rule: "pii".into(),
        columns: vec![
            ColumnPattern::parse("public.mask_bench.name"),
            ColumnPattern::parse("public.mask_bench.email"),
        ],
        detectors: vec![Detector::Email, Detector::CreditCard, Detector::Ssn],
        strategy: MaskStrategy::Redact,
        strict_tables: Vec::new(),
        strict_allow: Vec::new(),
    };
    let masker = mask::Masker::new(vec![spec], b"bench-key".to_vec(), Some(Arc::new(catalog)));
    let mut description = bytes::BytesMut::new();
    description.extend_from_slice(&5i16.to_be_bytes());
    for (i, (name, ty)) in [
        ("id", 23u32),
        ("name", 25),
        ("email", 25),
        ("note", 25),
        ("amount", 1700),
    ]
    .iter()
    .enumerate()
    {
        description.extend_from_slice(name.as_bytes());
        description.extend_from_slice(&[0]);
        description.extend_from_slice(&TABLE.to_be_bytes());
        description.extend_from_slice(&i16::try_from(i + 1).unwrap_or(0).to_be_bytes());
        description.extend_from_slice(&ty.to_be_bytes());
        description.extend_from_slice(&(-1i16).to_be_bytes());
        description.extend_from_slice(&(-1i32).to_be_bytes());
        description.extend_from_slice(&0i16.to_be_bytes());
    }
    let plan = masker.plan(&description, None);
    let data: Vec<Vec<u8>> = (0..rows)
        .map(|i| {
            let values = [
                i.to_string(),
                format!("Customer Number {i}"),
                format!("customer{i}@example.com"),
                format!("order {i} shipped to the north warehouse, priority normal"),
                format!("{}.{:02}", i * 7, i % 100),
            ];
            let mut row = Vec::new();
            row.extend_from_slice(&5i16.to_be_bytes());
            for v in values {
                row.extend_from_slice(&i32::try_from(v.len()).unwrap_or(0).to_be_bytes());
                row.extend_from_slice(v.as_bytes());
            }
            row
        })
        .collect();
    let started = std::time::Instant::now();
    let mut bytes = 0u64;
    while started.elapsed() < duration {
        for row in &data {
            let out = masker.rewrite_row(Some(&plan), &[], row);
            std::hint::black_box(&out);
            bytes += row.len() as u64;
        }
    }
    (bytes, started.elapsed().as_secs_f64())
}

/// The `session.end` event of the session `start` began: its totals, and
/// why it ended (empty when the client closed it).
fn session_end(
    start: pb::AuditEvent,
    started: std::time::Instant,
    totals: &session::Totals,
    error: String,
) -> pb::AuditEvent {
    pb::AuditEvent {
        kind: "session.end".into(),
        session_id: start.session_id,
        subject: start.subject,
        groups: start.groups,
        resource: start.resource,
        agent: start.agent,
        client_addr: start.client_addr,
        duration_us: i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX),
        rows: i64::try_from(totals.rows).unwrap_or(i64::MAX),
        error,
        attributes_json: serde_json::json!({"protocol": "postgres", "statements": totals.statements, "denied": totals.denied}).to_string(),
        ..Default::default()
    }
}

/// Cuts `value` to at most `max` bytes (on a character boundary), marking
/// that it was cut.
fn clip_to(value: &mut String, max: usize) {
    if value.len() > max {
        value.truncate(value.floor_char_boundary(max));
        value.push_str("...");
    }
}

/// Records a refusal, then tells the client.
async fn refuse(agent: &Agent, stream: io::Stream, mut event: pb::AuditEvent, refusal: Refusal) {
    agent
        .metrics
        .client_connections
        .get_or_create(&OutcomeLabels {
            protocol: "postgres",
            outcome: refusal.outcome,
        })
        .inc();
    event.decision = "deny".into();
    event.error = refusal.message.clone();
    // What the client chose (a database name, and messages quoting it)
    // is recorded in part: each refusal costs the spool little.
    clip_to(&mut event.resource, 256);
    clip_to(&mut event.error, 1024);
    // Record first: if the decision cannot be audited, the client gets the
    // audit error instead (fail closed), never a silent success. A refused
    // connection is a one-event session: its denied start is chained, and
    // the control plane seals it as ended.
    let mut trail = SessionTrail::new(agent.audit.clone());
    let refusal = match trail.record_refusal(event) {
        Ok(_) => {
            agent.metrics.audit_events.inc();
            refusal
        }
        Err(e @ crate::audit::AuditError::Crowded { .. }) => {
            // Refused all the same; the spool's last eighth stays for
            // sessions, whose statements stop once it is full.
            agent.metrics.refusals_unrecorded.inc();
            tracing::warn!(error = %e, refusal = %refusal.message, "connection refused and not recorded");
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
    refuse_unrecorded(agent, stream, refusal).await;
}

async fn refuse_unrecorded(_agent: &Agent, mut stream: io::Stream, refusal: Refusal) {
    let mut notice = messages::Notice::fatal(refusal.sqlstate, refusal.message.clone());
    if let Some(h) = refusal.hint {
        notice = notice.hint(h);
    }
    let bytes = notice.to_error().raw;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Start-up parameters that would let a client change the upstream
/// session's identity or security if passed through.
fn is_dangerous_param(key: &str) -> bool {
    matches!(
        key,
        "options" | "replication" | "role" | "session_authorization"
    ) || key.starts_with('_')
}

/// Answers encryption requests (TLS when the agent has a certificate; GSS
/// is declined), then runs the front door on the resulting stream.
async fn negotiate_then_front_door(
    agent: &Agent,
    stream: &mut io::Stream,
    peer: SocketAddr,
    event: &mut pb::AuditEvent,
) -> Result<FrontDoor, wire::WireError> {
    let startup = loop {
        let request = match wire::read_startup(stream).await {
            Err(wire::WireError::Closed) => return Ok(FrontDoor::Done),
            other => other?,
        };
        match request {
            wire::Startup::Ssl => {
                let (io::Stream::Plain(_), Some(acceptor)) = (&*stream, agent.pg_tls.as_ref())
                else {
                    // No certificate, or TLS inside TLS: decline.
                    stream.write_all(b"N").await?;
                    continue;
                };
                let acceptor = acceptor.clone();
                stream.write_all(b"S").await?;
                let io::Stream::Plain(tcp) = std::mem::replace(stream, io::Stream::Closed) else {
                    continue;
                };
                let tls = acceptor.accept(tcp).await.map_err(|e| {
                    wire::WireError::Io(std::io::Error::other(format!("TLS handshake failed: {e}")))
                })?;
                *stream = io::Stream::ServerTls(Box::new(tls));
            }
            wire::Startup::GssEnc => stream.write_all(b"N").await?,
            other => break other,
        }
    };
    let plaintext = matches!(stream, io::Stream::Plain(_));
    if plaintext
        && !peer.ip().is_loopback()
        && !agent.args.allow_plaintext
        && !matches!(startup, wire::Startup::Cancel { .. })
    {
        return Ok(FrontDoor::Refused(
            Refusal::new(
                "28000",
                "tls_required",
                format!("TLS is required for connections from {}: your token would cross the network in clear", peer.ip()),
            )
            .hint("connect with sslmode=require (or verify-full with the control plane's CA)"),
        ));
    }
    front_door(agent, stream, startup, event).await
}

/// Whether an encoding name is UTF8 as PostgreSQL reads one: letters and
/// digits only, case-insensitive (`clean_encoding_name` in encnames.c), so
/// `utf-8`, `UTF_8` and asyncpg's quoted `'utf-8'` all are.
fn names_utf8(name: &str) -> bool {
    let cleaned: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    matches!(cleaned.as_str(), "utf8" | "unicode")
}

/// Runs the start-up handshake up to the policy decision.
async fn front_door(
    agent: &Agent,
    stream: &mut io::Stream,
    startup: wire::Startup,
    event: &mut pb::AuditEvent,
) -> Result<FrontDoor, wire::WireError> {
    let params = match startup {
        wire::Startup::Ssl | wire::Startup::GssEnc => {
            return Err(wire::WireError::Malformed("encryption request"));
        }
        wire::Startup::Cancel { pid, key } => {
            agent.pg_cancel.cancel(pid, key).await;
            return Ok(FrontDoor::Done);
        }
        wire::Startup::Params { version, params } => {
            if version >> 16 != wire::PROTOCOL_3_0 >> 16 {
                return Ok(FrontDoor::Refused(Refusal::new(
                    "0A000",
                    "protocol_error",
                    format!(
                        "unsupported frontend protocol {}.{}: sluice speaks 3.0",
                        version >> 16,
                        version & 0xffff
                    ),
                )));
            }
            // A newer 3.x minor version or protocol options (`_pq_.*`): tell
            // the client what we speak, as PostgreSQL does, and go on in 3.0.
            let options: Vec<&str> = params
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| k.starts_with("_pq_."))
                .collect();
            if version & 0xffff != 0 || !options.is_empty() {
                stream
                    .write_all(&messages::negotiate_protocol_version(0, &options).raw)
                    .await?;
            }
            params
        }
    };

    let mut database = None;
    let mut user = None;
    let mut seen = std::collections::HashSet::new();
    for (key, value) in &params {
        if !seen.insert(key.as_str()) {
            return Ok(FrontDoor::Refused(Refusal::new(
                "08P01",
                "protocol_error",
                format!("start-up parameter `{key}` given twice"),
            )));
        }
        match key.as_str() {
            "database" => database = Some(value.clone()),
            "user" => user = Some(value.clone()),
            "client_encoding" if !names_utf8(value) => {
                return Ok(FrontDoor::Refused(Refusal::new(
                    "22023",
                    "bad_encoding",
                    format!(
                        "client_encoding \"{value}\" is not supported through sluice: use UTF8"
                    ),
                )));
            }
            "replication" => {
                return Ok(FrontDoor::Refused(Refusal::new(
                    "28000",
                    "replication_refused",
                    "replication connections are not allowed through sluice",
                )));
            }
            k if is_dangerous_param(k) => {
                tracing::warn!(
                    parameter = k,
                    "dropping a start-up parameter that could change the upstream session's security"
                );
            }
            _ => {}
        }
    }
    let Some(resource) = database.or_else(|| user.clone()) else {
        return Ok(FrontDoor::Refused(Refusal::new(
            "28000",
            "no_resource",
            "no database given: set the database name to the sluice resource you want",
        )));
    };
    event.resource.clone_from(&resource);

    let Some(active) = agent.snapshot_rx.borrow().clone() else {
        return Ok(FrontDoor::Refused(
            Refusal::new("57P03", "no_snapshot", "sluice agent has no valid policy snapshot; it refuses every connection until the control plane provides one")
                .hint("check `sluice agents` and the agent's /status endpoint"),
        ));
    };
    let Some(target) = active
        .resources
        .get(&resource)
        .filter(|r| r.kind == "postgres")
        .cloned()
    else {
        return Ok(FrontDoor::Refused(Refusal::new(
            "3D000",
            "unknown_resource",
            format!("resource \"{resource}\" is not a PostgreSQL resource served by this agent"),
        )));
    };

    stream.write_all(&messages::auth_cleartext().raw).await?;
    let (tag, body) = match wire::read_message(stream, MAX_PRE_AUTH_MESSAGE).await {
        Err(wire::WireError::Closed) => return Ok(FrontDoor::Done),
        other => other?,
    };
    if tag != b'p' {
        return Ok(FrontDoor::Refused(Refusal::new(
            "08P01",
            "protocol_error",
            "expected a password message",
        )));
    }
    let token = messages::parse_password(&body)
        .map_err(|_| wire::WireError::Malformed("password message"))?;
    if token.is_empty() {
        return Ok(FrontDoor::Refused(
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
            return Ok(FrontDoor::Refused(Refusal::new(
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
        return Ok(FrontDoor::Refused(
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
    let Some(credential) = active.credentials.get(&target.credential).cloned() else {
        return Ok(FrontDoor::Refused(Refusal::new(
            "28000",
            "no_credential",
            format!(
                "resource \"{resource}\" has no usable credential on this agent; ask an admin to set one"
            ),
        )));
    };
    let params: Vec<(String, String)> = params
        .into_iter()
        .filter(|(k, _)| !is_dangerous_param(k) && k != "user" && k != "database")
        .collect();
    // Only SET statements are judged here: no name in them is the catalog's.
    let mut judge = judge::Judge::new(subject.clone(), resource.clone(), Arc::default());
    for (key, value) in params
        .iter()
        .filter(|(k, _)| upstream::JUDGED_PARAMS.contains(&k.as_str()))
    {
        let set = format!("SET {key} = '{}'", value.replace('\'', "''"));
        let verdict = judge.sql(Some(&active), &set);
        if !verdict.allowed {
            let who = if verdict.rule.is_empty() {
                "sluice policy".to_owned()
            } else {
                format!("sluice policy rule \"{}\"", verdict.rule)
            };
            return Ok(FrontDoor::Refused(
                Refusal::new(
                    "42501",
                    "parameter_denied",
                    format!(
                        "start-up parameter `{key}` amounts to `SET {key}`, which {who} does not allow: {}",
                        verdict.reason
                    ),
                )
                .hint("connect without it (or ask for a rule that allows `set`)"),
            ));
        }
    }
    Ok(FrontDoor::Granted(Box::new(Granted {
        resource: target,
        credential,
        subject,
        params,
        token_valid_until: identity.valid_until,
    })))
}

/// Protocol messages built by hand for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use bytes::BufMut as _;

    /// A DataRow body; `None` is SQL NULL.
    pub fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = bytes::BytesMut::new();
        b.put_i16(i16::try_from(values.len()).unwrap_or(i16::MAX));
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        b.to_vec()
    }
}
