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
//!
//! A statement is one event, written when its outcome is known. What must
//! be on record before it is forwarded (who ran what, under which rule) is
//! spooled first as a write-ahead record ([`SessionTrail::intend`]): never
//! shipped, superseded by the statement's event, which reuses its id. A
//! write-ahead record whose statement never finished (the agent died, or
//! its session gave up on it) becomes the statement's event with its
//! outcome unknown, so nothing forwarded goes unrecorded.
//!
//! While a statement runs, the spool must keep its record. An
//! acknowledgement past a record in the segment being written is recorded
//! only up to just before it (the control plane's acknowledgement still
//! counts as delivery for shipping, and after a crash the events from there
//! on are delivered again, which the control plane drops by id). Once that
//! segment is full, the next acknowledgement copies the record forward,
//! so the old segment can go. A record is thus copied at most once per
//! segment (at most 8 MiB of events), however many acknowledgements pass
//! it: statements stalled behind a lock cost no disk writes per
//! acknowledgement.
//!
//! An event holds at most [`STATEMENT_BYTES`] of statement text and
//! parameters (and up to 19 bytes more per parameter, see [`clip`]) and
//! [`ERROR_BYTES`] of error: longer ones are clipped, so every event fits
//! a spool record (65,535 parameters at most) with room for what its
//! statement's outcome adds. Without that, a statement whose write-ahead
//! record only just fits would run and its event never be written.

use std::{
    collections::HashMap,
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
    #[error(
        "audit spool is nearly full ({limit} bytes): its last eighth is kept for sessions, and refused connections are not recorded until it drains"
    )]
    Crowded { limit: u64 },
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

/// How much of the spool an append may use.
#[derive(Clone, Copy)]
enum Room {
    /// Up to its limit.
    Limit,
    /// Past it: for records that stand for or close what is already
    /// spooled, few by construction.
    OverLimit,
    /// Up to its last eighth, kept for sessions.
    Headroom,
}

/// Kind of a write-ahead record in the spool (see the module docs).
pub const INTENT_KIND: &str = "statement.intent";

/// An encoded `AuditEvent` read for its kind alone (field 4); the other
/// fields are skipped, not decoded.
#[derive(Clone, PartialEq, prost::Message)]
struct EventKind {
    #[prost(string, tag = "4")]
    kind: String,
}

/// Most bytes of statement text and parameters together an event holds.
pub const STATEMENT_BYTES: usize = 1024 * 1024;

/// Most bytes of error text an event holds.
pub const ERROR_BYTES: usize = 64 * 1024;

/// Clips `event`'s statement text and parameters to [`STATEMENT_BYTES`]
/// together, and its error to [`ERROR_BYTES`]. The text keeps at least
/// half the room; the parameters share the rest, the short ones whole.
/// Each clipped value ends with how long it was and the SHA-256 of all of
/// it, so the trail still tells which value ran; a parameter whose share
/// is too small for that reads `[clipped by sluice]` (19 bytes, which may
/// be more than its share: thousands of long parameters together pass
/// the limit by up to that much each).
pub fn clip(event: &mut pb::AuditEvent) {
    let params: usize = event.parameters.iter().map(String::len).sum();
    if event.statement.len() + params > STATEMENT_BYTES {
        let text_room = STATEMENT_BYTES
            .saturating_sub(params)
            .max(STATEMENT_BYTES / 2);
        clip_value(&mut event.statement, text_room);
        let room = STATEMENT_BYTES.saturating_sub(event.statement.len());
        let lens: Vec<usize> = event.parameters.iter().map(String::len).collect();
        let each = fair_share(&lens, room);
        for p in &mut event.parameters {
            clip_value(p, each);
        }
    }
    clip_value(&mut event.error, ERROR_BYTES);
}

/// The largest length that values of `lens` clipped to it fit `room`
/// together: short values stay whole, the long ones share what is left.
fn fair_share(lens: &[usize], room: usize) -> usize {
    let mut sorted = lens.to_vec();
    sorted.sort_unstable();
    let mut left = room;
    for (i, len) in sorted.iter().enumerate() {
        let rest = sorted.len() - i;
        if len.saturating_mul(rest) > left {
            return left / rest;
        }
        left -= len;
    }
    usize::MAX
}

/// Clips `value` to at most `room` bytes (on a character boundary), ending
/// it with its length and digest; leaves it alone if it fits.
fn clip_value(value: &mut String, room: usize) {
    if value.len() <= room {
        return;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
    let note = format!(
        "... [clipped by sluice for the audit trail: {} bytes in all, SHA-256 {}]",
        value.len(),
        hex::encode(digest.as_ref())
    );
    if note.len() > room {
        // No room left (parameters after long ones): marked, not emptied.
        "[clipped by sluice]".clone_into(value);
        return;
    }
    value.truncate(value.floor_char_boundary(room - note.len()));
    value.push_str(&note);
}

/// Error text of a statement event made from a write-ahead record.
pub const UNKNOWN_OUTCOME: &str = "this statement's outcome was not recorded (the agent stopped, or could not write it); it may or may not have run";

struct Shared {
    spool: Spool,
    /// Set when a deferred sync failed: nothing new is accepted until a
    /// later sync succeeds (what was written might not be on disk).
    sync_failure: Option<String>,
    pending_ack: Option<u64>,
    /// The highest acknowledgement applied: what the control plane has,
    /// though the spool may record less (see the module docs).
    delivered: u64,
    /// Write-ahead records of statements still running, by key.
    intents: HashMap<u64, Intent>,
    /// Write-ahead records superseded by an event not yet on stable
    /// storage, as (record's sequence number, event's): the recorded
    /// acknowledgement stays below each record until its event is durable,
    /// or a power loss meanwhile would leave the statement in no record.
    settling: Vec<(u64, u64)>,
    next_intent: u64,
    /// Where the spool's counters are published (the shipper waits on them).
    status_tx: watch::Sender<SpoolStatus>,
    /// The spool's limit, in bytes.
    max_bytes: u64,
}

/// A write-ahead record in the spool.
struct Intent {
    /// Where it is now (it moves when copied forward).
    seq: u64,
    bytes: Vec<u8>,
    /// Its session gave up on the statement: to be shipped as the
    /// statement's event, outcome unknown.
    abandoned: bool,
    /// A copy carried forward but not yet synced: synced, not copied
    /// again, at the next attempt (see [`Shared::carry_intents`]).
    copy: Option<u64>,
    /// `seq` is a copy carried forward.
    carried: bool,
}

/// A statement's write-ahead record, until its event supersedes it
/// ([`SessionTrail::finish`]). Dropped unfinished, the record becomes the
/// statement's event with its outcome unknown.
pub struct IntentToken {
    /// `None` once superseded.
    shared: Option<Arc<Mutex<Shared>>>,
    key: u64,
    /// `--audit-sync always`: settling waits for an fsync, so it runs off
    /// the runtime's worker, as appends do ([`AuditLog::on_disk`]).
    sync_always: bool,
}

impl Drop for IntentToken {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let key = self.key;
        let settle = move || {
            let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(intent) = shared.intents.get_mut(&key) {
                intent.abandoned = true;
                shared.settle_abandoned();
                shared.publish();
            }
        };
        if self.sync_always {
            crate::off_worker(settle);
        } else {
            settle();
        }
    }
}

impl Shared {
    /// Applies the control plane's latest acknowledgement to the spool,
    /// then publishes the counters.
    fn apply_acks(&mut self) {
        self.settle_abandoned();
        if let Some(seq) = self.pending_ack.take() {
            self.delivered = self.delivered.max(seq);
            // Running statements' write-ahead records must outlive it, and
            // so must those whose events are not on disk yet.
            let upto = self.carry_intents(seq).min(self.settled_bound());
            if upto < seq {
                self.pending_ack = Some(seq); // the rest, later
            }
            if let Err(e) = self.spool.ack(upto) {
                tracing::error!(seq = upto, error = %e, "cannot record audit acknowledgement; retrying");
                // Dropped, it would never come again (the control plane has
                // everything), and a full spool would stay full.
                if !matches!(e, SpoolError::AckBeyondEnd { .. }) {
                    self.pending_ack = self.pending_ack.max(Some(seq));
                }
            }
        }
        // Also after settling abandoned records with no ack pending.
        self.publish();
    }

    /// How far an acknowledgement may be recorded for the write-ahead
    /// records superseded since the last sync (see [`Shared::settling`]).
    fn settled_bound(&mut self) -> u64 {
        let durable = self.spool.durable_seq();
        self.settling.retain(|&(_, event)| event > durable);
        self.settling
            .iter()
            .map(|&(record, _)| record - 1)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Notes that the write-ahead record at `record` was superseded by the
    /// event at `event`.
    fn superseded(&mut self, record: u64, event: u64) {
        if event > self.spool.durable_seq() {
            self.settling.push((record, event));
        }
    }

    /// Publishes the spool's counters if they changed.
    fn publish(&self) {
        let status = status_of(&self.spool, self.delivered);
        self.status_tx.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }

    /// Spools the abandoned write-ahead records as statement events (see
    /// [`orphan_event`]); one that cannot be written yet stays, and is
    /// tried again.
    fn settle_abandoned(&mut self) {
        let keys: Vec<u64> = self
            .intents
            .iter()
            .filter(|(_, i)| i.abandoned)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some(intent) = self.intents.get(&key) else {
                continue;
            };
            // Over the limit if need be: it stands for a record already
            // counted (see `carry_intents`).
            let record = intent.seq;
            let written = match orphan_event(&intent.bytes) {
                Some(bytes) => self.spool.append_over_limit(&bytes).map(Some),
                None => Ok(None),
            };
            match written {
                Ok(event) => {
                    self.intents.remove(&key);
                    if let Some(event) = event {
                        self.superseded(record, event);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot record a statement without outcome; retrying");
                }
            }
        }
    }

    /// Makes acknowledging `seq` safe for the write-ahead records at or
    /// below it: those in the segment being written hold the
    /// acknowledgement back to just before them; those in older segments
    /// are copied to the end of the spool, durably, together in one
    /// segment. Copies already carried are carried again only once a whole
    /// segment follows theirs, while the spool is at most half full:
    /// copies that fill a segment by themselves (statements running with
    /// more than a segment of records) would otherwise be copied again at
    /// every acknowledgement. Returns how far
    /// the acknowledgement may go: below the first record held back, or
    /// that could not be copied or flushed (the disk is failing).
    fn carry_intents(&mut self, seq: u64) -> u64 {
        let mut bound = seq;
        let active = self.spool.active_segment_start();
        // Past half full the active segment may never roll (appends are
        // refused first), so copies are carried again as soon as they are
        // out of it.
        let previous = if self.spool.disk_bytes() > self.max_bytes / 2 {
            active
        } else {
            self.spool.previous_segment_start()
        };
        // Where each copy went; a record counts as moved only once its copy
        // is on disk. After a failed flush it stays where it was, and its
        // copy (which the spool writes again) is flushed next time, not
        // made again.
        let mut moved: Vec<(u64, u64)> = Vec::new();
        let mut to_copy: Vec<u64> = Vec::new();
        for (key, intent) in &self.intents {
            if intent.seq > seq {
                continue;
            }
            let held_from = if intent.carried { previous } else { active };
            if intent.seq >= held_from {
                bound = bound.min(intent.seq - 1);
                continue;
            }
            if let Some(copy) = intent.copy {
                // Copied at an earlier attempt whose sync failed: the
                // spool writes it again before its next sync counts.
                moved.push((*key, copy));
                continue;
            }
            to_copy.push(*key);
        }
        if !to_copy.is_empty() {
            let records: Vec<&[u8]> = to_copy
                .iter()
                .filter_map(|key| self.intents.get(key).map(|i| i.bytes.as_slice()))
                .collect();
            // Over the limit if need be: a full spool frees space only once
            // this acknowledgement goes through, and the copies are few
            // (one per statement running, however often syncs fail).
            match self.spool.append_batch_over_limit(&records) {
                Ok(copies) => {
                    for (key, new) in to_copy.into_iter().zip(copies) {
                        if let Some(intent) = self.intents.get_mut(&key) {
                            intent.copy = Some(new);
                            moved.push((key, new));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot carry running statements' audit records forward; holding back the acknowledgement");
                    for key in to_copy {
                        if let Some(intent) = self.intents.get(&key) {
                            bound = bound.min(intent.seq - 1);
                        }
                    }
                }
            }
        }
        if moved.is_empty() {
            return bound;
        }
        if let Err(e) = self.spool.sync() {
            tracing::warn!(error = %e, "cannot flush carried audit records; holding back the acknowledgement");
            for (key, _) in moved {
                if let Some(intent) = self.intents.get(&key) {
                    bound = bound.min(intent.seq - 1);
                }
            }
            return bound;
        }
        for (key, new) in moved {
            if let Some(intent) = self.intents.get_mut(&key) {
                intent.seq = new;
                intent.copy = None;
                intent.carried = true;
            }
        }
        bound
    }
}

/// The statement event standing in for a write-ahead record whose
/// statement never finished: same id, outcome unknown. `None` if the
/// record does not decode (the spool checked its CRC, so it cannot happen
/// unless the disk lies; the record is then left unshipped).
fn orphan_event(intent: &[u8]) -> Option<Vec<u8>> {
    let mut event = pb::AuditEvent::decode(intent).ok()?;
    event.kind = "statement".into();
    event.error = UNKNOWN_OUTCOME.into();
    let mut attrs: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&event.attributes_json).unwrap_or_default();
    attrs.insert("outcome".into(), "unknown".into());
    event.attributes_json = serde_json::Value::Object(attrs).to_string();
    Some(event.encode_to_vec())
}

/// Takes the result rows out of a statement's event that a full spool
/// takes only over its limit (see [`SessionTrail::finish`]).
fn without_result(event: &mut pb::AuditEvent) {
    let mut attrs: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&event.attributes_json).unwrap_or_default();
    if attrs.remove("result").is_some() {
        attrs.insert(
            "result_unrecorded".into(),
            "the audit spool was full: the statement's outcome is recorded, its rows are not"
                .into(),
        );
    }
    event.attributes_json = serde_json::Value::Object(attrs).to_string();
}

/// The event that tells the trail the spool cut damaged records off at
/// start (see [`sluice_spool::SetAside`]).
fn damage_event(kept: &sluice_spool::SetAside) -> pb::AuditEvent {
    let why = if kept.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", kept.reason)
    };
    pb::AuditEvent {
        kind: DAMAGE_KIND.into(),
        error: format!(
            "the audit spool was damaged inside its last segment{why}, with intact records after the \
             damage (a power loss before they were synced, or a failing disk); it was cut off there, so \
             events from spool sequence {} on may be missing from the trail (those delivered before are \
             not); the {} bytes cut off are kept on the agent at {}",
            kept.first_lost_seq,
            kept.bytes,
            kept.reported_at().display()
        ),
        attributes_json: serde_json::json!({
            "segment": kept.segment.display().to_string(),
            "offset": kept.offset,
            "first_lost_seq": kept.first_lost_seq,
            "bytes": kept.bytes,
            "kept_at": kept.reported_at().display().to_string(),
        })
        .to_string(),
        ..Default::default()
    }
}

/// Kind of the event [`damage_event`] makes.
pub const DAMAGE_KIND: &str = "audit.damaged";

/// Write-ahead records among the unacknowledged ones that no statement
/// event supersedes: their statements were forwarded by an agent that
/// stopped before their outcome. Returns them (sequence number and bytes),
/// one per id.
fn find_orphans(spool: &Spool) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
    let mut open: HashMap<String, (u64, Vec<u8>)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut after = spool.acked_seq();
    loop {
        let records = spool.read_after(after, 1024, 8 * 1024 * 1024)?;
        let Some(&(last, _)) = records.last() else {
            break;
        };
        for (seq, bytes) in records {
            let Ok(event) = pb::AuditEvent::decode(bytes.as_slice()) else {
                continue;
            };
            if event.kind == INTENT_KIND {
                if let std::collections::hash_map::Entry::Vacant(slot) = open.entry(event.id) {
                    order.push(slot.key().clone());
                    slot.insert((seq, bytes));
                }
            } else if event.kind == "statement" {
                open.remove(&event.id);
            }
        }
        after = last;
    }
    Ok(order
        .into_iter()
        .filter_map(|id| open.remove(&id))
        .collect())
}

#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Mutex<Shared>>,
    status: watch::Receiver<SpoolStatus>,
    agent: String,
    /// `--audit-sync always`: appends wait for an fsync.
    sync_always: bool,
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
        let defaults = SpoolConfig::default();
        let spool = Spool::open(
            dir,
            SpoolConfig {
                max_bytes,
                // Space comes back a segment at a time: with at least eight,
                // a full spool frees most of itself as soon as acknowledgements
                // resume, even while running statements hold one or two (see
                // `Shared::carry_intents`).
                segment_bytes: (max_bytes / 8).clamp(4096, defaults.segment_bytes),
                sync: mode,
                ..defaults
            },
        )?;
        let set_aside = spool.set_aside().to_vec();
        let orphans = find_orphans(&spool)?;
        if !orphans.is_empty() {
            tracing::warn!(
                statements = orphans.len(),
                "the agent stopped while statements were running; recording them with their outcome unknown"
            );
        }
        let next_intent = orphans.len() as u64;
        // Abandoned: recorded as statements below, or once there is room.
        let intents = (0..)
            .zip(orphans)
            .map(|(key, (seq, bytes))| {
                let abandoned = true;
                (
                    key,
                    Intent {
                        seq,
                        bytes,
                        abandoned,
                        copy: None,
                        carried: false,
                    },
                )
            })
            .collect();
        let (status_tx, status) = watch::channel(status_of(&spool, 0));
        let mut shared = Shared {
            spool,
            sync_failure: None,
            pending_ack: None,
            settling: Vec::new(),
            delivered: 0,
            intents,
            next_intent,
            status_tx,
            max_bytes,
        };
        shared.settle_abandoned();
        shared.publish();
        let log = Self {
            shared: Arc::new(Mutex::new(shared)),
            status,
            agent,
            sync_always: mode == SyncMode::Always,
        };
        for kept in set_aside {
            // Once per damage, so into a full spool as well: the trail must
            // say that it may have lost records. Until the report is
            // durable, the spool reports the damage again at the next start.
            let mut event = damage_event(&kept);
            log.fill_in(&mut event);
            log.append_as(&event, None, Room::OverLimit)?;
            log.lock().spool.reported(&kept)?;
        }
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

    fn fill_in(&self, event: &mut pb::AuditEvent) {
        clip(event);
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
        self.append_resolving(event, None)
    }

    /// Appends `event`; with `intent`, the write-ahead record it supersedes
    /// is settled in the same critical section.
    fn append_resolving(
        &self,
        event: &pb::AuditEvent,
        intent: Option<u64>,
    ) -> Result<u64, AuditError> {
        self.append_as(event, intent, Room::Limit)
    }

    /// [`Self::append_resolving`], into as much of the spool as `room` says.
    fn append_as(
        &self,
        event: &pb::AuditEvent,
        intent: Option<u64>,
        room: Room,
    ) -> Result<u64, AuditError> {
        let bytes = event.encode_to_vec();
        self.on_disk(|| self.append_encoded(&bytes, intent, room))
    }

    /// Runs `append`, which with `--audit-sync always` waits for an fsync
    /// (and for the lock while another append waits for one), off the
    /// runtime's worker ([`crate::off_worker`]). In batch mode the fsync
    /// runs on the sync thread and an append only copies into the page
    /// cache, so it runs here.
    fn on_disk<T>(&self, append: impl FnOnce() -> T) -> T {
        if self.sync_always {
            crate::off_worker(append)
        } else {
            append()
        }
    }

    fn append_encoded(
        &self,
        bytes: &[u8],
        intent: Option<u64>,
        room: Room,
    ) -> Result<u64, AuditError> {
        let mut shared = self.lock();
        if let Some(why) = &shared.sync_failure {
            return Err(AuditError::Io(format!("cannot flush to disk: {why}")));
        }
        let seq = match room {
            Room::Limit => shared.spool.append(bytes)?,
            Room::OverLimit => shared.spool.append_over_limit(bytes)?,
            Room::Headroom => {
                let kept = shared.max_bytes / 8;
                let used = shared.spool.disk_bytes().saturating_add(bytes.len() as u64);
                if used > shared.max_bytes.saturating_sub(kept) {
                    return Err(AuditError::Crowded {
                        limit: shared.max_bytes,
                    });
                }
                shared.spool.append(bytes)?
            }
        };
        if let Some(record) = intent.and_then(|key| shared.intents.remove(&key)) {
            shared.superseded(record.seq, seq);
        }
        shared.publish();
        Ok(seq)
    }

    /// Spools `events` (statements about to be forwarded) as write-ahead
    /// records, all or none; fills in their ids, times and agent, which the
    /// statements' events keep.
    fn intend(&self, events: &mut [pb::AuditEvent]) -> Result<Vec<IntentToken>, AuditError> {
        let records: Vec<Vec<u8>> = events
            .iter_mut()
            .map(|event| {
                self.fill_in(event);
                let kind = std::mem::replace(&mut event.kind, INTENT_KIND.into());
                let bytes = event.encode_to_vec();
                event.kind = kind;
                bytes
            })
            .collect();
        self.on_disk(|| self.intend_encoded(records))
    }

    fn intend_encoded(&self, records: Vec<Vec<u8>>) -> Result<Vec<IntentToken>, AuditError> {
        let mut shared = self.lock();
        if let Some(why) = &shared.sync_failure {
            return Err(AuditError::Io(format!("cannot flush to disk: {why}")));
        }
        let seqs = match records.as_slice() {
            [one] => vec![shared.spool.append(one)?],
            many => {
                let slices: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
                shared.spool.append_batch(&slices)?
            }
        };
        let tokens = seqs
            .into_iter()
            .zip(records)
            .map(|(seq, bytes)| {
                let key = shared.next_intent;
                shared.next_intent += 1;
                shared.intents.insert(
                    key,
                    Intent {
                        seq,
                        bytes,
                        abandoned: false,
                        copy: None,
                        carried: false,
                    },
                );
                IntentToken {
                    shared: Some(Arc::clone(&self.shared)),
                    key,
                    sync_always: self.sync_always,
                }
            })
            .collect();
        shared.publish();
        Ok(tokens)
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

    /// Unacknowledged events after `after`, with their sequence numbers
    /// set, and the last sequence number read: write-ahead records are
    /// read past, not returned (see the module docs).
    pub async fn read_after(
        &self,
        after: u64,
        max: usize,
    ) -> Result<(Vec<pb::AuditEvent>, u64), AuditError> {
        let records = self.lock().spool.read_after(after, max, 4 * 1024 * 1024)?;
        let through = records.last().map_or(after, |(seq, _)| *seq);
        let mut out = Vec::with_capacity(records.len());
        for (seq, bytes) in records {
            // Half the records are write-ahead records: tell them by their
            // kind alone rather than decoding every field of each.
            if EventKind::decode(bytes.as_slice()).is_ok_and(|e| e.kind == INTENT_KIND) {
                continue;
            }
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
        Ok((out, through))
    }

    /// The control plane stored every event up to `seq`.
    pub fn ack(&self, seq: u64) {
        let mut shared = self.lock();
        shared.pending_ack = shared.pending_ack.max(Some(seq));
    }

    /// Puts everything spooled so far on stable storage and applies the
    /// latest acknowledgement now, not at the next turn of the sync thread
    /// (at shutdown, after the last session ended).
    pub fn flush(&self) -> Result<(), AuditError> {
        let mut shared = self.lock();
        shared.spool.sync()?;
        shared.apply_acks();
        Ok(())
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
                        // Not if a sync in the spool failed meanwhile.
                        Ok(()) if shared.spool.synced(token) => {
                            if shared.sync_failure.take().is_some() {
                                tracing::warn!("audit spool syncs again; accepting events");
                            }
                        }
                        Ok(()) => {}
                        Err(e) => {
                            if shared.sync_failure.is_none() {
                                tracing::error!(error = %e, "audit spool cannot be flushed to disk; refusing new events");
                            }
                            // What this sync was to cover is written again
                            // before the next one counts.
                            shared.spool.sync_failed();
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
                self.lock().apply_acks();
                last_ack = Instant::now();
            }
            if Arc::strong_count(&self.shared) == 1 {
                return; // every AuditLog handle is gone
            }
        }
    }
}

fn status_of(s: &Spool, delivered: u64) -> SpoolStatus {
    let acked_seq = s.acked_seq().max(delivered);
    SpoolStatus {
        last_seq: s.last_seq(),
        acked_seq,
        pending: s.last_seq().saturating_sub(acked_seq),
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

    /// Records the event that closes what the trail holds (a session's
    /// end, an approval the session withdrew as it ended), even into a
    /// full spool: there is at most one per session, and without it the
    /// session would never be sealed. Only past the limit when the trail
    /// holds something to close: a session let in unrecorded (audit mode
    /// `best_effort`) with the spool full would otherwise add one record
    /// over it per connection, without bound. A failure is logged.
    pub fn record_closing(&mut self, mut event: pb::AuditEvent) {
        self.log.fill_in(&mut event);
        self.chain.link(&mut event);
        let room = if self.chain.is_empty() {
            Room::Limit
        } else {
            Room::OverLimit
        };
        match self.log.append_as(&event, None, room) {
            Ok(_) => self.chain.commit(&event),
            Err(e) => tracing::error!(error = %e, kind = %event.kind, "cannot audit an event"),
        }
    }

    /// Records a connection refused before any session began, leaving the
    /// spool's last eighth to sessions: clients that never log in cannot
    /// fill it and so stop everyone's statements (fail-closed once full).
    /// [`AuditError::Crowded`] when it would reach into that eighth.
    pub fn record_refusal(&mut self, mut event: pb::AuditEvent) -> Result<u64, AuditError> {
        self.log.fill_in(&mut event);
        self.chain.link(&mut event);
        let seq = self.log.append_as(&event, None, Room::Headroom)?;
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

    /// Spools the write-ahead records of statements about to be forwarded
    /// (not links of the chain, never shipped as such), all or none; each
    /// event gets its id and time, for [`SessionTrail::finish`] to record
    /// the statement under once its outcome is known.
    pub fn intend(
        &mut self,
        events: &mut [pb::AuditEvent],
    ) -> Result<Vec<IntentToken>, AuditError> {
        self.log.intend(events)
    }

    /// Records a statement's event as the session's next link, superseding
    /// its write-ahead record. If it cannot be written, the write-ahead
    /// record stands in for it (outcome unknown) and the failure is logged.
    ///
    /// Into a full spool, the event goes past the limit without its result
    /// rows (`attributes.result_unrecorded` says so): its stand-in would go
    /// past the limit anyway, and would lose the outcome, which the agent
    /// knows. Without the rows it is about the size of that stand-in.
    pub fn finish(&mut self, mut event: pb::AuditEvent, mut intent: Option<IntentToken>) {
        self.log.fill_in(&mut event);
        self.chain.link(&mut event);
        let key = intent.as_ref().map(|t| t.key);
        let mut written = self.log.append_resolving(&event, key);
        if let (Err(AuditError::Full { .. }), Some(_)) = (&written, key) {
            without_result(&mut event);
            self.chain.link(&mut event);
            written = self.log.append_as(&event, key, Room::OverLimit);
        }
        match written {
            Ok(_) => {
                self.chain.commit(&event);
                if let Some(t) = &mut intent {
                    t.shared = None; // superseded
                }
            }
            // Dropped unresolved below: recorded with its outcome unknown.
            Err(e) => tracing::error!(error = %e, kind = %event.kind, "cannot audit an event"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> AuditLog {
        open_sized(dir, 1 << 30)
    }

    fn open_sized(dir: &Path, max_bytes: u64) -> AuditLog {
        AuditLog::open(
            dir,
            max_bytes,
            AuditSync::Batch,
            Duration::from_millis(5),
            "edge".into(),
        )
        .unwrap()
    }

    /// A log in batch mode whose sync thread never turns: the test applies
    /// acknowledgements (`apply_acks`) and syncs (`flush`) itself.
    fn open_driven(dir: &Path) -> AuditLog {
        AuditLog::open(
            dir,
            1 << 30,
            AuditSync::Batch,
            Duration::from_secs(3600),
            "edge".into(),
        )
        .unwrap()
    }

    /// Opens the log in `dir` once the dropped log before it has let go
    /// of the spool (its sync thread notices within a turn).
    fn open_once_released(dir: &Path) -> AuditLog {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match AuditLog::open(
                dir,
                1 << 30,
                AuditSync::Batch,
                Duration::from_millis(5),
                "edge".into(),
            ) {
                Ok(log) => return log,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{e}");
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn statement(text: &str) -> pb::AuditEvent {
        pb::AuditEvent {
            kind: "statement".into(),
            session_id: "s1".into(),
            decision: "allow".into(),
            statement: text.into(),
            attributes_json: r#"{"statement_id":"q"}"#.into(),
            ..Default::default()
        }
    }

    fn read_all(log: &AuditLog) -> (Vec<pb::AuditEvent>, u64) {
        block_on(log.read_after(0, 1000)).unwrap()
    }

    /// Runs a future that never waits (the log's reads are synchronous).
    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn statements_too_long_for_a_record_are_clipped_and_still_recorded_with_their_outcome() {
        // Without clipping, this write-ahead record fits the spool's 4 MiB
        // records and the finished event (its outcome added) does not: the
        // statement would run and only its outcome-unknown stand-in, itself
        // too long, would be left.
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let mut trail = SessionTrail::new(log.clone());
        let big = "é".repeat(2 * 1024 * 1024 - 100);
        let mut event = statement("INSERT INTO notes VALUES ($1, $2)");
        event.parameters = vec![big.clone(), "7".into()];
        let mut events = [event];
        let mut tokens = trail.intend(&mut events).unwrap();
        let [mut event] = events;
        event.rows = 1;
        event.error = "e".repeat(100_000);
        trail.finish(event, tokens.pop());
        let (shipped, _) = read_all(&log);
        assert_eq!(shipped.len(), 1);
        let got = &shipped[0];
        assert_eq!((got.kind.as_str(), got.rows), ("statement", 1));
        assert_eq!(got.statement, "INSERT INTO notes VALUES ($1, $2)");
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, big.as_bytes()));
        let note = format!(
            "... [clipped by sluice for the audit trail: {} bytes in all, SHA-256 {digest}]",
            big.len()
        );
        assert!(
            got.parameters[0].ends_with(&note),
            "{}",
            &got.parameters[0][got.parameters[0].len() - 200..]
        );
        assert!(big.starts_with(got.parameters[0].strip_suffix(&note).unwrap()));
        assert_eq!(got.parameters[1], "7");
        let held = got.statement.len() + got.parameters.iter().map(String::len).sum::<usize>();
        assert!(held <= STATEMENT_BYTES, "{held}");
        assert!(got.error.len() <= ERROR_BYTES && got.error.starts_with("eee"));
        assert!(got.error.contains("100000 bytes in all"));
    }

    #[test]
    fn records_the_spool_cut_off_at_start_are_reported_in_the_trail_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
            for text in ["SELECT 1", "SELECT 2", "SELECT 3"] {
                spool.append(&statement(text).encode_to_vec()).unwrap();
            }
        }
        // Damage the second record's payload, as a power loss can leave
        // pages written out of order: the third is intact after it.
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        let second = bytes.windows(8).position(|w| w == b"SELECT 2").unwrap();
        bytes[second] = b'X';
        std::fs::write(&segment, &bytes).unwrap();

        let log = open(dir.path());
        let (shipped, _) = read_all(&log);
        let kinds: Vec<_> = shipped.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["statement", DAMAGE_KIND],
            "the first kept, then the report"
        );
        let report = &shipped[1];
        assert!(
            report
                .error
                .contains("events from spool sequence 2 on may be missing"),
            "{}",
            report.error
        );
        let attributes: serde_json::Value = serde_json::from_str(&report.attributes_json).unwrap();
        assert_eq!(attributes["first_lost_seq"], 2);
        let kept_at = attributes["kept_at"].as_str().unwrap();
        assert!(
            std::fs::read(kept_at)
                .unwrap()
                .windows(8)
                .any(|w| w == b"SELECT 3")
        );
        assert!(!report.id.is_empty() && report.agent == "edge");
        drop(log);
        let log = open_once_released(dir.path());
        assert_eq!(
            read_all(&log).0.len(),
            2,
            "reported by the start that cut it off only"
        );
    }

    #[test]
    fn refusals_leave_the_spool_s_last_eighth_to_sessions_and_ends_go_into_a_full_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_sized(dir.path(), 64 * 1024);
        let refusal = |i: usize| pb::AuditEvent {
            kind: "session.start".into(),
            session_id: format!("r{i}"),
            decision: "deny".into(),
            error: "x".repeat(1000),
            ..Default::default()
        };
        let mut refused = 0;
        loop {
            match SessionTrail::new(log.clone()).record_refusal(refusal(refused)) {
                Ok(_) => refused += 1,
                Err(AuditError::Crowded { limit: 65536 }) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(refused < 100, "refusals stop short of the limit");
        }
        let used = log.status.borrow().disk_bytes;
        assert!(used <= 64 * 1024 * 7 / 8, "{used}");
        // Sessions still have the last eighth.
        let mut trail = SessionTrail::new(log.clone());
        let mut statements = 0;
        loop {
            match trail.record(statement("select 1")) {
                Ok(_) => statements += 1,
                Err(AuditError::Full { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(statements >= 20, "{statements}");
        // A full spool still takes the session's end, chained.
        trail.record_closing(pb::AuditEvent {
            kind: "session.end".into(),
            session_id: "s1".into(),
            ..Default::default()
        });
        assert_eq!(trail.len(), statements + 1);
        let (shipped, _) = read_all(&log);
        assert_eq!(
            shipped.len(),
            refused + usize::try_from(statements).unwrap() + 1
        );
        assert_eq!(shipped.last().unwrap().kind, "session.end");
        // A session let in with nothing recorded (audit mode best_effort)
        // does not get past the limit at its end: one record over it per
        // connection would have no bound.
        let last = log.status.borrow().last_seq;
        let mut unrecorded = SessionTrail::new(log.clone());
        unrecorded.record_closing(pb::AuditEvent {
            kind: "session.end".into(),
            session_id: "s2".into(),
            ..Default::default()
        });
        assert!(unrecorded.is_empty());
        assert_eq!(log.status.borrow().last_seq, last);
    }

    /// A write-ahead record stays under the recorded acknowledgement until
    /// the event that supersedes it is on disk: recorded past it before, a
    /// power loss would take the event and leave the record acknowledged,
    /// so the statement would be in no record at all.
    #[test]
    fn an_acknowledgement_is_not_recorded_past_a_statement_whose_event_is_not_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_driven(dir.path());
        let mut trail = SessionTrail::new(log.clone());
        let mut finished = [statement("select 1")];
        let mut token = trail.intend(&mut finished).unwrap();
        let mut abandoned = [statement("select pg_sleep(60)")];
        let given_up = trail.intend(&mut abandoned).unwrap();
        trail.record_detached(statement("select 3"));
        log.flush().unwrap();
        assert_eq!(log.lock().spool.durable_seq(), 3);
        // Both records are superseded by events in the page cache only.
        let [event] = finished;
        trail.finish(event, token.pop());
        drop(given_up);
        assert_eq!(log.lock().spool.last_seq(), 5);
        log.ack(3);
        log.lock().apply_acks();
        assert_eq!(log.lock().spool.acked_seq(), 0);
        // Once they are on disk, it is.
        log.flush().unwrap();
        assert_eq!(log.lock().spool.acked_seq(), 3);
        assert!(log.lock().settling.is_empty());
    }

    /// An acknowledgement the spool could not record is tried again, not
    /// dropped: the control plane does not send it again, and a full spool
    /// would stay full until a restart.
    #[test]
    fn an_acknowledgement_that_cannot_be_written_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_driven(dir.path());
        log.record_detached(statement("select 1"));
        log.record_detached(statement("select 2"));
        log.flush().unwrap();
        // Where the spool writes its acknowledgement, a directory: the
        // write fails as a full or failing disk would make it.
        let blocker = dir.path().join("acked.tmp");
        std::fs::create_dir(&blocker).unwrap();
        log.ack(2);
        log.lock().apply_acks();
        assert_eq!(log.lock().spool.acked_seq(), 0);
        std::fs::remove_dir(&blocker).unwrap();
        log.lock().apply_acks();
        assert_eq!(log.lock().spool.acked_seq(), 2);
    }

    #[test]
    fn long_parameters_share_the_room_and_short_ones_stay_whole() {
        let mut event = statement("SELECT $1, $2, $3, $4");
        let long = "a".repeat(STATEMENT_BYTES);
        event.parameters = vec![long.clone(), "b".into(), long.clone(), "c".repeat(1000)];
        clip(&mut event);
        let room = STATEMENT_BYTES - event.statement.len();
        let each = (room - 1 - 1000) / 2;
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, long.as_bytes()));
        for p in [&event.parameters[0], &event.parameters[2]] {
            assert_eq!(p.len(), each);
            assert!(p.starts_with("aaa") && p.ends_with(&format!(" SHA-256 {digest}]")));
        }
        assert_eq!(event.parameters[1], "b");
        assert_eq!(event.parameters[3], "c".repeat(1000));
        // So many long ones that each share is too small to say more.
        let mut event = statement("SELECT");
        event.parameters = vec!["d".repeat(100); 2 * STATEMENT_BYTES / 100];
        clip(&mut event);
        assert!(event.parameters.iter().all(|p| p == "[clipped by sluice]"));
        // What fits is left alone.
        let mut event = statement("SELECT $1");
        event.parameters = vec!["a".repeat(STATEMENT_BYTES - 9)];
        let before = event.clone();
        clip(&mut event);
        assert_eq!(event, before);
    }

    #[test]
    fn a_finished_statement_ships_one_event_under_its_write_ahead_id() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let mut trail = SessionTrail::new(log.clone());
        let mut events = [statement("select 1")];
        let mut tokens = trail.intend(&mut events).unwrap();
        let [mut event] = events;
        // Running: the write-ahead record is read past, not shipped.
        assert_eq!(read_all(&log), (Vec::new(), 1));
        event.rows = 3;
        trail.finish(event.clone(), tokens.pop());
        let (shipped, through) = read_all(&log);
        assert_eq!(through, 2);
        assert_eq!(shipped.len(), 1, "{shipped:?}");
        assert_eq!(shipped[0].id, event.id);
        assert_eq!(
            (shipped[0].kind.as_str(), shipped[0].rows),
            ("statement", 3)
        );
        assert_eq!(shipped[0].session_seq, 0);
        assert!(
            !shipped[0].hash.is_empty(),
            "the event is a link of the chain"
        );
        assert!(log.lock().intents.is_empty());
    }

    #[test]
    fn a_statement_its_session_gave_up_on_is_recorded_with_its_outcome_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let mut trail = SessionTrail::new(log.clone());
        let mut events = [statement("select pg_sleep(60)")];
        let tokens = trail.intend(&mut events).unwrap();
        drop(tokens);
        // Published, so the shipper wakes for it.
        assert_eq!(log.status().borrow().last_seq, 2);
        let (shipped, _) = read_all(&log);
        assert_eq!(shipped.len(), 1, "{shipped:?}");
        assert_eq!(shipped[0].id, events[0].id);
        assert_eq!(shipped[0].kind, "statement");
        assert_eq!(shipped[0].statement, "select pg_sleep(60)");
        assert_eq!(shipped[0].error, UNKNOWN_OUTCOME);
        let attrs: serde_json::Value = serde_json::from_str(&shipped[0].attributes_json).unwrap();
        assert_eq!(
            attrs,
            serde_json::json!({"statement_id": "q", "outcome": "unknown"})
        );
    }

    /// A 64 KiB log (segments of 8 KiB) with `text` running, its
    /// write-ahead record in the oldest segment, then filled with events
    /// (the filler returned) until the spool refuses one as full.
    fn filled_while_running(
        dir: &Path,
        text: &str,
    ) -> (
        AuditLog,
        SessionTrail,
        pb::AuditEvent,
        Option<IntentToken>,
        pb::AuditEvent,
    ) {
        let log = open_sized(dir, 64 * 1024);
        let mut trail = SessionTrail::new(log.clone());
        let mut events = [statement(text)];
        let mut tokens = trail.intend(&mut events).unwrap();
        let filler = statement(&"x".repeat(500));
        let full = loop {
            if let Err(e) = trail.record(filler.clone()) {
                break e;
            }
        };
        assert!(matches!(full, AuditError::Full { .. }), "{full}");
        let [event] = events;
        (log, trail, event, tokens.pop(), filler)
    }

    #[test]
    fn a_spool_filled_while_a_statement_runs_frees_itself_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut trail, event, token, filler) =
            filled_while_running(dir.path(), "select pg_sleep(3600)");
        // Everything after the running statement's record acknowledged.
        let last = log.status().borrow().last_seq;
        log.ack(last);
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.status().borrow().acked_seq < last {
            assert!(
                Instant::now() < deadline,
                "the acknowledgement is stuck at {} of {last}: the running statement's record could not be carried",
                log.status().borrow().acked_seq
            );
            thread::sleep(Duration::from_millis(10));
        }
        // Room again, and the statement still finishes as itself.
        trail.record(filler).unwrap();
        trail.finish(event.clone(), token);
        let (shipped, _) = block_on(log.read_after(last, 1000)).unwrap();
        let mine: Vec<_> = shipped.iter().filter(|e| e.id == event.id).collect();
        assert_eq!(mine.len(), 1, "{shipped:?}");
        assert!(mine[0].error.is_empty(), "{:?}", mine[0]);
    }

    #[test]
    fn a_statement_that_finishes_into_a_full_spool_keeps_its_outcome_not_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut trail, mut event, token, _) =
            filled_while_running(dir.path(), "select * from orders");
        let before = log.status().borrow().last_seq;

        event.rows = 2;
        // Rows larger than a filler: they cannot fit in what the last
        // refused filler left.
        event.attributes_json = format!(
            r#"{{"statement_id":"q","result":{{"sets":[{{"rows":[["{}"],["2"]]}}]}}}}"#,
            "r".repeat(1000)
        );
        trail.finish(event.clone(), token);
        let (shipped, _) = block_on(log.read_after(before, 1000)).unwrap();
        assert_eq!(shipped.len(), 1, "{shipped:?}");
        let got = &shipped[0];
        assert_eq!((got.id.as_str(), got.rows), (event.id.as_str(), 2));
        assert!(got.error.is_empty(), "not outcome-unknown: {}", got.error);
        let attributes: serde_json::Value = serde_json::from_str(&got.attributes_json).unwrap();
        assert_eq!(attributes["statement_id"], "q");
        assert!(attributes.get("result").is_none(), "{attributes}");
        assert!(
            attributes["result_unrecorded"]
                .as_str()
                .unwrap()
                .contains("spool was full")
        );
        assert_eq!(
            got.hash,
            sluice_audit_chain::event_hash(got).to_vec(),
            "the event is linked as it was written"
        );
        assert_eq!(got.session_seq + 1, trail.len(), "the trail's last link");
        assert!(
            log.lock().intents.is_empty(),
            "superseded, no stand-in left"
        );
    }

    /// Waits until the maintenance thread has applied acknowledgements
    /// through `seq` (as delivery: the spool may record less).
    fn wait_delivered(log: &AuditLog, seq: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.status().borrow().acked_seq < seq {
            assert!(
                Instant::now() < deadline,
                "the acknowledgement was not applied"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Where the running statement's record is, how far the spool has
    /// recorded acknowledgements, and its last sequence number.
    fn positions(log: &AuditLog) -> (u64, u64, u64) {
        let shared = log.lock();
        let intent = shared.intents.values().next().unwrap().seq;
        (intent, shared.spool.acked_seq(), shared.spool.last_seq())
    }

    #[test]
    fn a_running_statement_is_copied_forward_once_its_segment_is_full_not_per_acknowledgement() {
        let dir = tempfile::tempdir().unwrap();
        // 64 KiB: segments of 8 KiB.
        let log = open_sized(dir.path(), 64 * 1024);
        let mut trail = SessionTrail::new(log.clone());
        let mut events = [statement("select pg_sleep(60)")];
        let mut tokens = trail.intend(&mut events).unwrap();
        for (n, seq) in [("select 2", 2), ("select 3", 3)] {
            trail.record_detached(statement(n));
            log.ack(seq);
            wait_delivered(&log, seq);
            assert_eq!(
                positions(&log),
                (1, 0, seq),
                "in the segment being written: not copied, and the spool records the acknowledgement only up to before it"
            );
        }
        let (shipped, _) = block_on(log.read_after(3, 1000)).unwrap();
        assert!(shipped.is_empty(), "delivered events are not shipped again");
        // Once its segment is full, the next acknowledgement copies it.
        let filler = statement(&"x".repeat(500));
        while log.lock().spool.active_segment_start() == 1 {
            trail.record(filler.clone()).unwrap();
        }
        let last = log.status().borrow().last_seq;
        log.ack(last);
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.lock().spool.acked_seq() < last {
            assert!(Instant::now() < deadline, "the record was not carried");
            thread::sleep(Duration::from_millis(10));
        }
        let (intent, _, now_last) = positions(&log);
        assert_eq!((intent, now_last), (last + 1, last + 1), "copied once");
        let [event] = events;
        trail.finish(event.clone(), tokens.pop());
        let (shipped, _) = block_on(log.read_after(last, 1000)).unwrap();
        assert_eq!(shipped.len(), 1);
        assert_eq!(
            (shipped[0].id.as_str(), shipped[0].error.as_str()),
            (event.id.as_str(), "")
        );
    }

    #[test]
    fn a_running_statement_is_copied_forward_once_however_often_the_flush_fails() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_sized(dir.path(), 64 * 1024);
        let mut trail = SessionTrail::new(log.clone());
        let mut events = [statement("select pg_sleep(60)")];
        let _running = trail.intend(&mut events).unwrap();
        let filler = statement(&"x".repeat(500));
        while log.lock().spool.active_segment_start() == 1 {
            trail.record(filler.clone()).unwrap();
        }
        let last = log.status().borrow().last_seq;
        // Held, so the sync thread waits: this test drives the carrying.
        let mut shared = log.lock();
        for attempt in 1..=3 {
            shared.spool.fail_next_sync();
            assert_eq!(
                shared.carry_intents(last),
                0,
                "held back before the record while its copy is not on disk"
            );
            assert_eq!(
                shared.spool.last_seq(),
                last + 1,
                "copied once, not at each attempt ({attempt})"
            );
        }
        assert_eq!(shared.carry_intents(last), last);
        assert_eq!(shared.intents.values().next().unwrap().seq, last + 1);
        assert_eq!(shared.spool.last_seq(), last + 1);
    }

    /// A 64 KiB spool (segments of 8 KiB) and a session with three
    /// statements of 3 KiB running.
    fn three_large_running(dir: &Path) -> (AuditLog, SessionTrail, Vec<IntentToken>) {
        let log = open_sized(dir, 64 * 1024);
        let mut trail = SessionTrail::new(log.clone());
        let mut events: Vec<_> = (0..3)
            .map(|n| statement(&format!("select pg_sleep(60) -- {n} {}", "x".repeat(3000))))
            .collect();
        let running = trail.intend(&mut events).unwrap();
        (log, trail, running)
    }

    #[test]
    fn running_statements_larger_than_a_segment_are_copied_together_and_not_at_each_acknowledgement()
     {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut trail, _running) = three_large_running(dir.path());
        let filler = statement(&"x".repeat(500));
        while log.lock().spool.active_segment_start() == 1 {
            trail.record(filler.clone()).unwrap();
        }
        let last = log.status().borrow().last_seq;
        // Held, so the sync thread waits: this test drives the carrying.
        let mut shared = log.lock();
        assert_eq!(shared.carry_intents(last), last);
        assert_eq!(shared.spool.last_seq(), last + 3, "each copied once");
        let in_active = |shared: &Shared| {
            let active = shared.spool.active_segment_start();
            shared.intents.values().all(|i| i.seq >= active)
        };
        assert!(
            in_active(&shared),
            "the copies share the segment being written"
        );
        drop(shared);
        trail.record(filler.clone()).unwrap();
        let mut shared = log.lock();
        let now = shared.spool.last_seq();
        assert_eq!(
            shared.carry_intents(now),
            last,
            "held back before the copies, which are in the segment being written"
        );
        assert_eq!(shared.spool.last_seq(), now, "not copied again");
        drop(shared);
        // Once a whole segment of other records follows the copies' own,
        // they are carried again: once, together.
        let next = log.lock().spool.active_segment_start();
        while log.lock().spool.active_segment_start() == next {
            trail.record(filler.clone()).unwrap();
        }
        let mut shared = log.lock();
        let now = shared.spool.last_seq();
        assert_eq!(shared.carry_intents(now), now);
        assert_eq!(shared.spool.last_seq(), now + 3, "each copied once more");
        assert!(in_active(&shared));
    }

    #[test]
    fn past_half_full_copies_are_carried_again_once_out_of_the_active_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut trail, _running) = three_large_running(dir.path());
        let filler = statement(&"x".repeat(500));
        while log.lock().spool.disk_bytes() < 24 * 1024 {
            trail.record(filler.clone()).unwrap();
        }
        let last = log.status().borrow().last_seq;
        let mut shared = log.lock();
        assert_eq!(shared.carry_intents(last), last);
        assert!(shared.spool.disk_bytes() > 32 * 1024, "past half full");
        drop(shared);
        trail.record(filler.clone()).unwrap();
        let mut shared = log.lock();
        let now = shared.spool.last_seq();
        assert!(shared.intents.values().all(|i| i.carried
            && i.seq >= shared.spool.previous_segment_start()
            && i.seq < shared.spool.active_segment_start()));
        assert_eq!(shared.carry_intents(now), now);
        assert_eq!(shared.spool.last_seq(), now + 3, "copied again at once");
    }

    #[test]
    fn a_statement_running_when_the_agent_dies_is_recovered_though_later_events_were_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let log = open(dir.path());
            let mut trail = SessionTrail::new(log.clone());
            let mut events = [statement("select pg_sleep(60)")];
            let tokens = trail.intend(&mut events).unwrap();
            trail.record_detached(statement("select 2"));
            log.ack(2);
            wait_delivered(&log, 2);
            // Killed: the session never finishes its statement, nor gives
            // it up.
            for mut t in tokens {
                drop(t.shared.take());
            }
            let [event] = events;
            event.id
        };
        let log = open_once_released(dir.path());
        let (shipped, _) = read_all(&log);
        let got: Vec<(&str, &str)> = shipped
            .iter()
            .map(|e| (e.statement.as_str(), e.error.as_str()))
            .collect();
        // The delivered event again (the control plane drops it by id), and
        // the running statement with its outcome unknown.
        assert_eq!(
            got,
            [("select 2", ""), ("select pg_sleep(60)", UNKNOWN_OUTCOME)]
        );
        assert_eq!(shipped[1].id, id);
    }

    #[test]
    fn write_ahead_records_left_by_a_dead_agent_become_statements_once() {
        let dir = tempfile::tempdir().unwrap();
        let encode = |id: &str, kind: &str| {
            pb::AuditEvent {
                id: id.into(),
                kind: kind.into(),
                ..statement("select 1")
            }
            .encode_to_vec()
        };
        {
            // What an agent killed mid-statement leaves: two statements
            // forwarded, one finished.
            let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
            spool.append(&encode("a", INTENT_KIND)).unwrap();
            spool.append(&encode("b", INTENT_KIND)).unwrap();
            spool.append(&encode("a", "statement")).unwrap();
        }
        let log = open(dir.path());
        let (shipped, through) = read_all(&log);
        let got: Vec<(&str, &str)> = shipped
            .iter()
            .map(|e| (e.id.as_str(), e.error.as_str()))
            .collect();
        assert_eq!(got, [("a", ""), ("b", UNKNOWN_OUTCOME)]);
        assert_eq!(through, 4);
        // Dies again before anything is acknowledged: nothing new.
        drop(log);
        let log = open_once_released(dir.path());
        assert_eq!(read_all(&log).0.len(), 2);
        assert_eq!(log.status().borrow().last_seq, 4);
    }
}
