//! The agent's audit log: events go to the durable spool before anything
//! they describe is allowed to proceed, and are shipped to the control
//! plane from there.
//!
//! The spool lives on one dedicated thread. Appends that arrive while a
//! write is in flight are written together (group commit). In `always` sync
//! mode each group is fsynced before any caller hears back. In `batch` mode
//! (the default) a caller hears back once the kernel holds the bytes, which
//! survives the agent being killed, and the thread fsyncs every few
//! milliseconds; if a sync fails the log refuses every new event (and so
//! every statement) until a sync succeeds again.

use std::{
    path::Path,
    sync::mpsc as std_mpsc,
    thread,
    time::{Duration, Instant},
};

use prost::Message as _;
use sluice_proto as pb;
use sluice_spool::{Spool, SpoolConfig, SpoolError, SyncMode};
use tokio::sync::{oneshot, watch};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "audit spool is full ({limit} bytes); the control plane has not acknowledged events for a while"
    )]
    Full { limit: u64 },
    #[error("audit spool cannot be written: {0}")]
    Io(String),
    #[error("audit log is shut down")]
    Closed,
}

impl From<SpoolError> for AuditError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::Full { limit } => Self::Full { limit },
            other => Self::Io(other.to_string()),
        }
    }
}

/// Records read back from the spool, with their sequence numbers.
type Records = Vec<(u64, Vec<u8>)>;
type AppendReply = oneshot::Sender<Result<u64, AuditError>>;

enum Cmd {
    Append(Vec<u8>, AppendReply),
    Read {
        after: u64,
        max: usize,
        reply: oneshot::Sender<Result<Records, AuditError>>,
    },
    Ack(u64),
}

/// Spool counters, published after every change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStatus {
    pub last_seq: u64,
    pub acked_seq: u64,
    pub pending: u64,
    pub disk_bytes: u64,
}

/// How audit events reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditSync {
    /// fsync before a statement is forwarded (survives power loss; costs a
    /// disk flush per group of concurrent statements).
    Always,
    /// write before forwarding, fsync every `--audit-sync-interval`.
    Batch,
}

#[derive(Clone)]
pub struct AuditLog {
    tx: std_mpsc::Sender<Cmd>,
    status: watch::Receiver<SpoolStatus>,
    agent: String,
}

impl AuditLog {
    /// Opens the spool (recovering it after a crash) and starts its thread.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        sync: AuditSync,
        interval: Duration,
        agent: String,
    ) -> Result<Self, AuditError> {
        let mode = match sync {
            AuditSync::Always => SyncMode::Always,
            AuditSync::Batch => SyncMode::Deferred,
        };
        let spool = Spool::open(
            dir,
            SpoolConfig {
                max_bytes,
                sync: mode,
                ..SpoolConfig::default()
            },
        )?;
        let (tx, rx) = std_mpsc::channel();
        let (status_tx, status) = watch::channel(status_of(&spool));
        thread::Builder::new()
            .name("audit-spool".into())
            .spawn(move || run(spool, rx, status_tx, interval))
            .map_err(|e| AuditError::Io(e.to_string()))?;
        Ok(Self { tx, status, agent })
    }

    /// Durably records an event; returns its sequence number. Fills in the
    /// id, time and agent if unset.
    pub async fn record(&self, mut event: pb::AuditEvent) -> Result<u64, AuditError> {
        if event.id.is_empty() {
            event.id = uuid::Uuid::now_v7().to_string();
        }
        if event.time_unix_ms == 0 {
            event.time_unix_ms = i64::try_from(crate::snapshot::now_ms()).unwrap_or(i64::MAX);
        }
        if event.agent.is_empty() {
            event.agent.clone_from(&self.agent);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Append(event.encode_to_vec(), reply))
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Queues an event without waiting for it to be written (for events
    /// that describe work already done, e.g. a statement's result). Write
    /// failures are logged by the spool thread.
    pub fn record_detached(&self, mut event: pb::AuditEvent) {
        if event.id.is_empty() {
            event.id = uuid::Uuid::now_v7().to_string();
        }
        if event.time_unix_ms == 0 {
            event.time_unix_ms = i64::try_from(crate::snapshot::now_ms()).unwrap_or(i64::MAX);
        }
        if event.agent.is_empty() {
            event.agent.clone_from(&self.agent);
        }
        let (reply, _) = oneshot::channel();
        let _ = self.tx.send(Cmd::Append(event.encode_to_vec(), reply));
    }

    /// Unacknowledged events after `after`, with their sequence numbers set.
    pub async fn read_after(
        &self,
        after: u64,
        max: usize,
    ) -> Result<Vec<pb::AuditEvent>, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Read { after, max, reply })
            .map_err(|_| AuditError::Closed)?;
        let records = rx.await.map_err(|_| AuditError::Closed)??;
        let mut out = Vec::with_capacity(records.len());
        for (seq, bytes) in records {
            match pb::AuditEvent::decode(bytes.as_slice()) {
                Ok(mut e) => {
                    e.seq = seq;
                    out.push(e);
                }
                // Cannot happen unless the disk lies (the spool checks CRCs);
                // an undecodable record is shipped as a marker, not dropped.
                Err(err) => out.push(pb::AuditEvent {
                    seq,
                    id: format!("undecodable-{}-{seq}", self.agent),
                    kind: "audit.corrupt".into(),
                    agent: self.agent.clone(),
                    error: err.to_string(),
                    ..Default::default()
                }),
            }
        }
        Ok(out)
    }

    pub fn ack(&self, seq: u64) {
        let _ = self.tx.send(Cmd::Ack(seq));
    }

    pub fn status(&self) -> watch::Receiver<SpoolStatus> {
        self.status.clone()
    }
}

fn status_of(s: &Spool) -> SpoolStatus {
    SpoolStatus {
        last_seq: s.last_seq(),
        acked_seq: s.acked_seq(),
        pending: s.pending_records(),
        disk_bytes: s.disk_bytes(),
    }
}

/// Longest delay before an acknowledgement is written down.
const ACK_EVERY: Duration = Duration::from_millis(200);

/// Most appends committed under one fsync.
const MAX_GROUP: usize = 512;

fn run(
    mut spool: Spool,
    rx: std_mpsc::Receiver<Cmd>,
    status: watch::Sender<SpoolStatus>,
    interval: Duration,
) {
    // Set when a deferred sync failed: nothing new is accepted until a
    // later sync succeeds (what was written might not be on disk).
    let mut sync_failure: Option<String> = None;
    let mut last_sync = Instant::now();
    let mut pending_ack: Option<u64> = None;
    let mut last_ack = Instant::now();
    loop {
        let first = match rx.recv_timeout(interval) {
            Ok(cmd) => Some(cmd),
            Err(std_mpsc::RecvTimeoutError::Timeout) => None,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if spool.needs_sync() && (first.is_none() || last_sync.elapsed() >= interval)
            || sync_failure.is_some()
        {
            match spool.sync() {
                Ok(()) => {
                    if sync_failure.take().is_some() {
                        tracing::warn!("audit spool syncs again; accepting events");
                    }
                }
                Err(e) => {
                    if sync_failure.is_none() {
                        tracing::error!(error = %e, "audit spool cannot be flushed to disk; refusing new events");
                    }
                    sync_failure = Some(e.to_string());
                }
            }
            last_sync = Instant::now();
        }
        if pending_ack.is_some()
            && (first.is_none() || last_ack.elapsed() >= ACK_EVERY)
            && let Some(seq) = pending_ack.take()
        {
            if let Err(e) = spool.ack(seq) {
                tracing::error!(seq, error = %e, "cannot record audit acknowledgement");
            }
            last_ack = Instant::now();
            let _ = status.send(status_of(&spool));
        }
        let Some(first) = first else { continue };
        let mut pending = vec![first];
        while pending.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(cmd) => pending.push(cmd),
                Err(_) => break,
            }
        }
        let mut appends: Vec<(Vec<u8>, AppendReply)> = Vec::new();
        for cmd in pending {
            match cmd {
                Cmd::Append(bytes, reply) => appends.push((bytes, reply)),
                Cmd::Read { after, max, reply } => {
                    let _ = reply.send(
                        spool
                            .read_after(after, max, 4 * 1024 * 1024)
                            .map_err(AuditError::from),
                    );
                }
                // Recording an ack durably costs two fsyncs; losing one only
                // means redelivery (the control plane drops duplicates by
                // event id), so acks are applied at most every ACK_EVERY.
                Cmd::Ack(seq) => pending_ack = pending_ack.max(Some(seq)),
            }
        }
        if let (false, Some(why)) = (appends.is_empty(), &sync_failure) {
            for (_, reply) in appends.drain(..) {
                let _ = reply.send(Err(AuditError::Io(format!("cannot flush to disk: {why}"))));
            }
        }
        if !appends.is_empty() {
            let records: Vec<&[u8]> = appends.iter().map(|(b, _)| b.as_slice()).collect();
            match spool.append_batch(&records) {
                Ok(seqs) => {
                    for ((_, reply), seq) in appends.into_iter().zip(seqs) {
                        let _ = reply.send(Ok(seq));
                    }
                }
                Err(SpoolError::Full { .. }) if appends.len() > 1 => {
                    // All-or-nothing failed for the group: retry one by one
                    // so whatever still fits is kept.
                    for (bytes, reply) in appends {
                        let _ = reply.send(spool.append(&bytes).map_err(AuditError::from));
                    }
                }
                Err(e) => {
                    let e = AuditError::from(e);
                    tracing::error!(error = %e, "audit spool write failed; refusing the work it describes");
                    for (_, reply) in appends {
                        let _ = reply.send(Err(match &e {
                            AuditError::Full { limit } => AuditError::Full { limit: *limit },
                            other => AuditError::Io(other.to_string()),
                        }));
                    }
                }
            }
        }
        let _ = status.send(status_of(&spool));
    }
}
