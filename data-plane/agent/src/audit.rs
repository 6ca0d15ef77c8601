//! The agent's audit log: events go to the durable spool before anything
//! they describe is allowed to proceed, and are shipped to the control
//! plane from there.
//!
//! Appends happen on the caller's task under a short lock: the write is a
//! page-cache copy, so a statement does not wait for another thread. In
//! `batch` sync mode (the default) a background thread fsyncs every few
//! milliseconds through a duplicated file handle, outside the lock, so
//! appends never queue behind a disk flush; if a sync fails, the log refuses
//! every new event (and so every statement) until a sync succeeds again.
//! In `always` mode every append is fsynced before the caller hears back.
//! Acknowledgements from the control plane are recorded at most every
//! 200 ms: losing one only causes a redelivery, which the control plane
//! drops by event id.

use std::{
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use prost::Message as _;
use sluice_proto as pb;
use sluice_spool::{Spool, SpoolConfig, SpoolError, SyncMode};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "audit spool is full ({limit} bytes); the control plane has not acknowledged events for a while"
    )]
    Full { limit: u64 },
    #[error("audit spool cannot be written: {0}")]
    Io(String),
}

impl From<SpoolError> for AuditError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::Full { limit } => Self::Full { limit },
            other => Self::Io(other.to_string()),
        }
    }
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
    /// disk flush on every statement's path).
    Always,
    /// write before forwarding, fsync every `--audit-sync-interval`.
    Batch,
}

struct Shared {
    spool: Spool,
    /// Set when a deferred sync failed: nothing new is accepted until a
    /// later sync succeeds (what was written might not be on disk).
    sync_failure: Option<String>,
    pending_ack: Option<u64>,
}

#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Mutex<Shared>>,
    status_tx: Arc<watch::Sender<SpoolStatus>>,
    status: watch::Receiver<SpoolStatus>,
    agent: String,
}

/// Longest delay before an acknowledgement is written down.
const ACK_EVERY: Duration = Duration::from_millis(200);

impl AuditLog {
    /// Opens the spool (recovering it after a crash) and starts the thread
    /// that syncs it and records acknowledgements.
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
        let (status_tx, status) = watch::channel(status_of(&spool));
        let log = Self {
            shared: Arc::new(Mutex::new(Shared {
                spool,
                sync_failure: None,
                pending_ack: None,
            })),
            status_tx: Arc::new(status_tx),
            status,
            agent,
        };
        let background = log.clone();
        thread::Builder::new()
            .name("audit-sync".into())
            .spawn(move || background.maintain(interval))
            .map_err(|e| AuditError::Io(e.to_string()))?;
        Ok(log)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, shared: &Shared) {
        let status = status_of(&shared.spool);
        self.status_tx.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }

    fn fill_in(&self, event: &mut pb::AuditEvent) {
        if event.id.is_empty() {
            event.id = uuid::Uuid::now_v7().to_string();
        }
        if event.time_unix_ms == 0 {
            event.time_unix_ms = i64::try_from(crate::snapshot::now_ms()).unwrap_or(i64::MAX);
        }
        if event.agent.is_empty() {
            event.agent.clone_from(&self.agent);
        }
    }

    fn append(&self, event: &mut pb::AuditEvent) -> Result<u64, AuditError> {
        self.fill_in(event);
        self.append_filled(event)
    }

    fn append_filled(&self, event: &pb::AuditEvent) -> Result<u64, AuditError> {
        let bytes = event.encode_to_vec();
        let mut shared = self.lock();
        if let Some(why) = &shared.sync_failure {
            return Err(AuditError::Io(format!("cannot flush to disk: {why}")));
        }
        let seq = shared.spool.append(&bytes)?;
        self.publish(&shared);
        Ok(seq)
    }

    /// Durably records an event (see the module docs for what "durably"
    /// means in each sync mode); returns its sequence number. Fills in the
    /// id, time and agent if unset.
    pub async fn record(&self, mut event: pb::AuditEvent) -> Result<u64, AuditError> {
        self.append(&mut event)
    }

    /// Records an event that describes work already done (e.g. a
    /// statement's result); a failure is logged, not returned.
    pub fn record_detached(&self, mut event: pb::AuditEvent) {
        if let Err(e) = self.append(&mut event) {
            tracing::error!(error = %e, kind = %event.kind, "cannot audit an event");
        }
    }

    /// Unacknowledged events after `after`, with their sequence numbers set.
    pub async fn read_after(
        &self,
        after: u64,
        max: usize,
    ) -> Result<Vec<pb::AuditEvent>, AuditError> {
        let records = self.lock().spool.read_after(after, max, 4 * 1024 * 1024)?;
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

    /// The control plane stored every event up to `seq`.
    pub fn ack(&self, seq: u64) {
        let mut shared = self.lock();
        shared.pending_ack = shared.pending_ack.max(Some(seq));
    }

    pub fn status(&self) -> watch::Receiver<SpoolStatus> {
        self.status.clone()
    }

    /// Background work: periodic fsync (outside the lock) and acks.
    fn maintain(self, interval: Duration) {
        let mut last_ack = Instant::now();
        loop {
            thread::sleep(interval);
            // Sync through a duplicated handle so appends continue meanwhile.
            let handle = self.lock().spool.sync_handle();
            match handle {
                Ok(Some((file, token))) => {
                    let result = file.sync_data();
                    let mut shared = self.lock();
                    match result {
                        Ok(()) => {
                            shared.spool.synced(token);
                            if shared.sync_failure.take().is_some() {
                                tracing::warn!("audit spool syncs again; accepting events");
                            }
                        }
                        Err(e) => {
                            if shared.sync_failure.is_none() {
                                tracing::error!(error = %e, "audit spool cannot be flushed to disk; refusing new events");
                            }
                            shared.sync_failure = Some(e.to_string());
                        }
                    }
                }
                Ok(None) => {
                    let mut shared = self.lock();
                    if shared.sync_failure.take().is_some() {
                        tracing::warn!("audit spool syncs again; accepting events");
                    }
                }
                Err(e) => self.lock().sync_failure = Some(e.to_string()),
            }
            if last_ack.elapsed() >= ACK_EVERY {
                let mut shared = self.lock();
                if let Some(seq) = shared.pending_ack.take() {
                    if let Err(e) = shared.spool.ack(seq) {
                        tracing::error!(seq, error = %e, "cannot record audit acknowledgement");
                    }
                    self.publish(&shared);
                }
                last_ack = Instant::now();
            }
            if Arc::strong_count(&self.shared) == 1 {
                return; // every AuditLog handle is gone
            }
        }
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

/// The audit trail of one session: its events are linked into a hash
/// chain (see `sluice_audit_chain`) in the order they are spooled, so the
/// control plane can prove none was altered, removed or reordered. Owned
/// by the session's task.
pub struct SessionTrail {
    log: AuditLog,
    chain: sluice_audit_chain::Chain,
}

impl SessionTrail {
    pub fn new(log: AuditLog) -> Self {
        Self {
            log,
            chain: sluice_audit_chain::Chain::new(),
        }
    }

    /// Spools `event` as the session's next link; on failure the chain does
    /// not move, so a lost event leaves no gap.
    pub fn record(&mut self, mut event: pb::AuditEvent) -> Result<u64, AuditError> {
        self.log.fill_in(&mut event);
        self.chain.link(&mut event);
        let seq = self.log.append_filled(&event)?;
        self.chain.commit(&event);
        Ok(seq)
    }

    /// Records an event about work already done; a failure is logged.
    pub fn record_detached(&mut self, event: pb::AuditEvent) {
        let kind = event.kind.clone();
        if let Err(e) = self.record(event) {
            tracing::error!(error = %e, kind = %kind, "cannot audit an event");
        }
    }

    /// Events recorded so far.
    pub fn len(&self) -> u64 {
        self.chain.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }
}
