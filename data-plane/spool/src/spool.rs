//! The spool itself: appends, reads, acknowledgements and crash recovery.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::frame::{self, HEADER_LEN, Header};
use crate::fsutil::{create_dir_durable, private_file, sync_dir};
use crate::segment::{self, ScanEnd, Segment};
use crate::{SpoolError, acked};

const LOCK_FILE: &str = "spool.lock";

/// Largest encoding buffer kept between appends.
const SCRATCH_KEEP: usize = 256 * 1024;

/// Limits of one spool. All sizes are in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Total size of live segment files. Appends that would exceed it fail
    /// with [`SpoolError::Full`] instead of filling the agent's disk.
    pub max_bytes: u64,
    /// Size at which a new segment is started. Disk space is reclaimed a
    /// whole segment at a time, so smaller segments free space sooner.
    /// A batch is never split across segments, so a segment can exceed this
    /// by up to one batch.
    pub segment_bytes: u64,
    /// Largest payload accepted by [`Spool::append`].
    pub max_record_bytes: u32,
    /// When appends reach stable storage.
    pub sync: SyncMode,
    /// Most recent records kept in memory as well (oldest dropped first),
    /// so delivering what was just appended does not read it back from
    /// disk. 0 turns the cache off.
    pub tail_bytes: usize,
}

/// When an append is flushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `fdatasync` before `append` returns: survives power loss.
    #[default]
    Always,
    /// `append` returns once the kernel has the bytes (survives the process
    /// being killed, not the machine losing power); the caller must call
    /// [`Spool::sync`] periodically.
    Deferred,
}

impl Default for SpoolConfig {
    fn default() -> SpoolConfig {
        SpoolConfig {
            max_bytes: 256 * 1024 * 1024,
            segment_bytes: 8 * 1024 * 1024,
            max_record_bytes: 4 * 1024 * 1024,
            sync: SyncMode::Always,
            tail_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Damage [`Spool::open`] found inside the last segment, with intact
/// records after it, and cut off: the spool ends where the damage begins,
/// and the bytes from there on are kept in a file of their own.
///
/// A power loss while deferred appends ([`SyncMode::Deferred`]) or a batch
/// were not yet synced can leave this behind: the kernel writes pages back
/// in any order, so a later page may reach the disk while an earlier one
/// does not. So can a disk that damages data. Which it was cannot be told
/// from the bytes, so the spool does not guess: it starts (so a power loss
/// does not keep the agent down until someone repairs it), loses nothing it
/// could still read (the file is kept), and says so through this until the
/// caller has recorded it ([`Spool::reported`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The segment the bytes were cut from.
    pub segment: PathBuf,
    /// Where in it the damage began.
    pub offset: u64,
    /// The first record cut off that was not acknowledged: records from
    /// here on may be missing from what was delivered. The spool hands out
    /// these numbers again.
    pub first_lost_seq: u64,
    /// The file holding the bytes cut off (from `offset` to the segment's
    /// old end), next to the segments.
    pub kept_at: PathBuf,
    pub bytes: u64,
    /// Why the record at `offset` could not be read; empty when an earlier
    /// start cut it off and stopped before it was reported.
    pub reason: String,
}

impl SetAside {
    /// Where the file is kept once [`Spool::reported`]: where a report
    /// should say it is.
    pub fn reported_at(&self) -> PathBuf {
        let mut path = self.kept_at.clone().into_os_string();
        path.push(REPORTED_SUFFIX);
        PathBuf::from(path)
    }

    /// Reads what a kept file's name says: `<segment>.<offset>.<first lost
    /// sequence>.<n>.damaged`.
    fn from_name(dir: &Path, name: &str) -> Option<SetAside> {
        let stem = name.strip_suffix(SET_ASIDE_SUFFIX)?;
        let mut parts = stem.rsplitn(4, '.');
        let _n: u32 = parts.next()?.parse().ok()?;
        let first_lost_seq = parts.next()?.parse().ok()?;
        let offset = parts.next()?.parse().ok()?;
        let segment = parts.next()?;
        segment::parse_file_name(segment)?;
        let kept_at = dir.join(name);
        Some(SetAside {
            segment: dir.join(segment),
            offset,
            first_lost_seq,
            bytes: fs::metadata(&kept_at).map_or(0, |m| m.len()),
            kept_at,
            reason: String::new(),
        })
    }
}

/// Deferred writes to the active segment since its last successful sync,
/// kept so that they can be written again after a sync fails: the kernel
/// may have dropped the pages a failed writeback held (and marked them
/// clean), so a later sync could succeed without them ever reaching the
/// disk.
#[derive(Debug, Default)]
struct Pending {
    /// Where in the active segment `frames` begin.
    from: u64,
    /// The frames written there since, in order.
    frames: Vec<u8>,
    /// A sync failed: `frames` must be written again before a sync counts.
    rewrite: bool,
    /// Token, end offset and last sequence number of the handle last given
    /// out for syncing.
    handed: Option<(u64, u64, u64)>,
}

impl Pending {
    fn clear(&mut self) {
        self.frames.clear();
        self.rewrite = false;
        self.handed = None;
    }
}

/// Name suffix of the files [`SetAside`] keeps, and what is added to it
/// once reported.
const SET_ASIDE_SUFFIX: &str = ".damaged";
const REPORTED_SUFFIX: &str = ".reported";

/// A durable FIFO of audit records, acknowledged by sequence number.
///
/// Sequence numbers start at 1 and increase by one per record, with no gaps
/// and no reuse across restarts (except the numbers of records lost to
/// damage, see [`SetAside`]). Records `acked_seq() + 1 ..= last_seq()`
/// are exactly the ones still pending delivery.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    config: SpoolConfig,
    /// Live segments, oldest first. Only the last one is ever written.
    segments: VecDeque<Segment>,
    /// Write handle for the last segment, opened lazily.
    active: Option<File>,
    next_seq: u64,
    acked: u64,
    disk_bytes: u64,
    /// A write or sync failed, so the active segment may hold bytes past its
    /// committed size. They are cut off before anything else is appended, so
    /// a later record never lands behind garbage.
    needs_repair: bool,
    /// Held for the spool's lifetime; the OS releases the lock on close.
    _lock: File,
    #[cfg(any(test, feature = "test-hooks"))]
    fail_next_sync: bool,
    /// Bytes written to the active segment but not yet synced (deferred mode).
    unsynced: bool,
    /// Records up to here are on stable storage (see [`Spool::durable_seq`]).
    synced_through: u64,
    /// Counts deferred writes, so a sync done outside the spool (see
    /// [`Spool::sync_handle`]) only clears what it covered.
    write_gen: u64,
    /// Copies of deferred writes not yet known to be durable.
    pending: Pending,
    /// The latest unacknowledged records, consecutive by sequence number
    /// (see [`SpoolConfig::tail_bytes`]); reads that start inside it are
    /// served from memory.
    tail: VecDeque<(u64, Vec<u8>)>,
    tail_size: usize,
    /// Reused for encoding each append's frames (one allocation less per
    /// append on the statement path).
    scratch: Vec<u8>,
    /// What recovery cut off and the caller has not reported yet (see
    /// [`SetAside`]).
    set_aside: Vec<SetAside>,
}

impl Spool {
    /// Opens the spool in `dir`, creating the directory if needed, and
    /// recovers its state.
    ///
    /// A torn write at the end of the last segment (a crash mid-append) is
    /// truncated away with a warning: that record's append never returned
    /// (or, in [`SyncMode::Deferred`], it was not yet synced). Damage in the
    /// last segment with intact records after it is cut off and kept in a
    /// file of its own ([`Spool::set_aside`], until [`Spool::reported`]). Damage in any other segment
    /// (each was synced before the next was begun, so no crash explains
    /// it), or a gap in the sequence, is [`SpoolError::Corrupt`].
    pub fn open(dir: &Path, config: SpoolConfig) -> Result<Spool, SpoolError> {
        create_dir_durable(dir)?;
        let lock = lock_dir(dir)?;
        acked::remove_stale_tmp(dir)?;
        let acked = acked::read(dir)?;
        if acked == u64::MAX {
            return Err(SpoolError::corrupt(
                acked::path(dir),
                0,
                "sequence numbers are exhausted (u64::MAX acknowledged)",
            ));
        }
        let names = list_segments(dir)?;
        let recovered = recover_segments(dir, names, acked)?;
        let set_aside = unreported(dir, recovered.set_aside)?;

        let max_seen = recovered.max_seen.max(acked);
        let next_seq = max_seen.checked_add(1).ok_or_else(|| {
            SpoolError::corrupt(dir, 0, "sequence numbers are exhausted (u64::MAX reached)")
        })?;
        let disk_bytes = recovered.segments.iter().map(|s| s.size).sum();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            config,
            segments: recovered.segments,
            active: recovered.active,
            next_seq,
            acked,
            disk_bytes,
            needs_repair: false,
            _lock: lock,
            #[cfg(any(test, feature = "test-hooks"))]
            fail_next_sync: false,
            unsynced: false,
            synced_through: max_seen,
            write_gen: 0,
            pending: Pending::default(),
            tail: VecDeque::new(),
            tail_size: 0,
            scratch: Vec::new(),
            set_aside,
        };
        // A crash during ack() can leave acknowledged segments behind.
        spool.drop_acked_segments()?;
        tracing::debug!(
            dir = %dir.display(),
            acked = spool.acked,
            last_seq = spool.last_seq(),
            segments = spool.segments.len(),
            disk_bytes = spool.disk_bytes,
            "audit spool opened"
        );
        Ok(spool)
    }

    /// What recovery cut off and kept aside, now or at an earlier start,
    /// and [`Spool::reported`] has not been called for.
    pub fn set_aside(&self) -> &[SetAside] {
        &self.set_aside
    }

    /// Records that `kept` has been reported, once what the caller appended
    /// to report it is durable (this syncs the spool first): it is no
    /// longer returned by [`Spool::set_aside`], at this start or a later
    /// one. Its file stays, renamed with `.reported` added.
    pub fn reported(&mut self, kept: &SetAside) -> Result<(), SpoolError> {
        self.sync()?;
        fs::rename(&kept.kept_at, kept.reported_at())
            .map_err(|e| SpoolError::io(format!("renaming {}", kept.kept_at.display()), e))?;
        sync_dir(&self.dir)?;
        self.set_aside.retain(|k| k.kept_at != kept.kept_at);
        Ok(())
    }

    /// Appends one record and returns its sequence number once the record
    /// is on stable storage.
    pub fn append(&mut self, record: &[u8]) -> Result<u64, SpoolError> {
        self.append_records(&[record], true).map(|seqs| seqs.start)
    }

    /// Appends one record even if the spool is full: for a record that
    /// replaces one about to be acknowledged (a copy carried forward), so
    /// that acknowledging cannot wait on space only the acknowledgement
    /// frees. Callers bound how much they append this way; `max_bytes` is
    /// exceeded by at most that.
    pub fn append_over_limit(&mut self, record: &[u8]) -> Result<u64, SpoolError> {
        self.append_records(&[record], false).map(|seqs| seqs.start)
    }

    /// [`append_over_limit`](Self::append_over_limit) for several records,
    /// all or nothing like [`append_batch`](Self::append_batch), and in one
    /// segment, however large they are together.
    pub fn append_batch_over_limit(&mut self, records: &[&[u8]]) -> Result<Vec<u64>, SpoolError> {
        self.append_records(records, false).map(Iterator::collect)
    }

    /// Appends several records with a single `fdatasync` (group commit) and
    /// returns their sequence numbers in order.
    ///
    /// All or nothing: if any record is too large, the batch does not fit
    /// in the space left, or the write fails, no record is kept and no
    /// sequence number is consumed. A batch larger than `max_bytes` can never
    /// succeed, so callers should bound their batches.
    pub fn append_batch(&mut self, records: &[&[u8]]) -> Result<Vec<u64>, SpoolError> {
        self.append_records(records, true).map(Iterator::collect)
    }

    /// Returns up to `max_records` pending records with a sequence number
    /// greater than `after_seq`, in order, whose payloads total at most
    /// `max_bytes`.
    ///
    /// The first record is returned even if it alone exceeds `max_bytes`,
    /// so one large record cannot stall delivery forever. Records at or below
    /// [`acked_seq`](Self::acked_seq) are never returned.
    pub fn read_after(
        &self,
        after_seq: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let mut out = Vec::new();
        let Some(mut want) = after_seq.max(self.acked).checked_add(1) else {
            return Ok(out);
        };
        if let Some(&(front, _)) = self.tail.front()
            && want >= front
        {
            self.read_tail(want - front, max_records, max_bytes, &mut out);
            return Ok(out);
        }
        let first_seg = self
            .segments
            .partition_point(|s| s.first_seq <= want)
            .saturating_sub(1);
        let mut budget = max_bytes;
        for seg in self.segments.iter().skip(first_seg) {
            if out.len() >= max_records {
                break;
            }
            let Some(last) = seg.last_seq().filter(|&l| l >= want) else {
                continue;
            };
            let full = self.read_segment(seg, want, last, max_records, &mut budget, &mut out)?;
            if full {
                break;
            }
            want = last + 1;
        }
        Ok(out)
    }

    /// Records that every sequence number up to and including `seq` has
    /// been delivered, durably, and deletes segments that hold nothing newer.
    ///
    /// Acknowledging at or below the current [`acked_seq`](Self::acked_seq)
    /// changes nothing (redelivery after a reconnect is normal).
    /// Acknowledging beyond [`last_seq`](Self::last_seq) is
    /// [`SpoolError::AckBeyondEnd`]. If removing a segment fails after the
    /// acknowledgement was recorded, the error is returned, `acked_seq()`
    /// already reflects the ack, and the next `ack` retries the removal.
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        let last_seq = self.last_seq();
        if seq > last_seq {
            return Err(SpoolError::AckBeyondEnd { seq, last_seq });
        }
        if seq > self.acked {
            // Durable before any segment goes, so a crash in between leaves
            // only already-acknowledged data behind, which open() removes.
            acked::write(&self.dir, seq)?;
            self.acked = seq;
            while let Some((_, r)) = self.tail.pop_front_if(|(s, _)| *s <= seq) {
                self.tail_size -= r.len();
            }
        }
        self.drop_acked_segments()
    }

    /// The highest sequence number handed out so far (0 if none ever was).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The highest acknowledged sequence number (0 if none).
    pub fn acked_seq(&self) -> u64 {
        self.acked
    }

    /// The first sequence number of the segment appends go to: records
    /// from here on are in the one segment that is never removed.
    pub fn active_segment_start(&self) -> u64 {
        self.segments.back().map_or(self.next_seq, |s| s.first_seq)
    }

    /// The first sequence number of the segment before the active one (the
    /// active one's if there is none).
    pub fn previous_segment_start(&self) -> u64 {
        self.segments
            .iter()
            .rev()
            .nth(1)
            .map_or_else(|| self.active_segment_start(), |s| s.first_seq)
    }

    /// Number of records appended but not yet acknowledged.
    pub fn pending_records(&self) -> u64 {
        self.last_seq() - self.acked
    }

    /// Bytes of live segment files on disk; this is what `max_bytes` limits.
    /// A segment is freed only once all its records are acknowledged.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Validates and writes a batch; see [`append_batch`](Self::append_batch).
    fn append_records(
        &mut self,
        records: &[&[u8]],
        within_limit: bool,
    ) -> Result<Range<u64>, SpoolError> {
        let mut total: u64 = 0;
        for record in records {
            let len = self.check_record_size(record)?;
            total = total.saturating_add(HEADER_LEN + u64::from(len));
        }
        // Checked above, so every length fits.
        let len_of = |record: &[u8]| u32::try_from(record.len()).unwrap_or(u32::MAX);
        if records.is_empty() {
            return Ok(self.next_seq..self.next_seq);
        }
        if within_limit && total > self.config.max_bytes.saturating_sub(self.disk_bytes) {
            return Err(SpoolError::Full {
                limit: self.config.max_bytes,
            });
        }
        let first = self.next_seq;
        let end = first
            .checked_add(records.len() as u64)
            .ok_or_else(|| SpoolError::corrupt(&self.dir, 0, "sequence numbers are exhausted"))?;
        // `total` is at most max_bytes, but that is a u64 from config.
        let capacity = usize::try_from(total).map_err(|_| SpoolError::Full {
            limit: self.config.max_bytes,
        })?;

        if self.needs_repair {
            self.repair()?;
        }
        let roll = self
            .segments
            .back()
            .is_none_or(|s| s.size > 0 && s.size.saturating_add(total) > self.config.segment_bytes);
        if roll {
            self.start_segment(first)?;
        }

        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.reserve(capacity);
        for (seq, record) in (first..end).zip(records) {
            frame::encode(&mut buf, seq, len_of(record), record);
        }
        let Some(offset) = self.segments.back().map(|s| s.size) else {
            return Err(missing_active_segment(&self.dir));
        };
        let written = self.write_and_sync(&buf, offset);
        // Keep the buffer for the next append, unless a huge batch grew it.
        if buf.capacity() <= SCRATCH_KEEP {
            self.scratch = buf;
        }
        if let Err(e) = written {
            let path = self
                .segments
                .back()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            self.needs_repair = true;
            if let Err(repair_err) = self.repair() {
                tracing::warn!(
                    error = %repair_err,
                    "could not trim a failed append; will retry before the next append"
                );
            }
            return Err(SpoolError::io(
                format!("appending to segment {}", path.display()),
                e,
            ));
        }

        let seg = self
            .segments
            .back_mut()
            .ok_or_else(|| missing_active_segment(&self.dir))?;
        for record in records {
            seg.push(HEADER_LEN + u64::from(len_of(record)));
        }
        self.disk_bytes += total;
        self.next_seq = end;
        self.remember(first, records);
        Ok(first..end)
    }

    /// Returns the payload length as `u32` if a record of this size could
    /// ever be stored.
    fn check_record_size(&self, record: &[u8]) -> Result<u32, SpoolError> {
        let limit = u64::from(self.config.max_record_bytes)
            .min(self.config.max_bytes.saturating_sub(HEADER_LEN));
        match u32::try_from(record.len()) {
            Ok(len) if u64::from(len) <= limit => Ok(len),
            _ => Err(SpoolError::RecordTooLarge {
                len: record.len(),
                limit,
            }),
        }
    }

    /// Flushes appends made in [`SyncMode::Deferred`] to stable storage.
    /// On failure the spool must be considered unable to record (the
    /// caller refuses work until a later `sync` succeeds).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        // A failed append whose trim failed too: made durable, its records
        // would be read back after a restart, though refused.
        if self.needs_repair {
            self.repair()?;
        }
        if !self.needs_sync() {
            return Ok(());
        }
        if self.segments.is_empty() {
            // Everything written was acknowledged and deleted meanwhile.
            self.unsynced = false;
            self.pending.clear();
            return Ok(());
        }
        let path = self
            .segments
            .back()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        let synced = self
            .rewrite_pending()
            .and_then(|()| self.injected_sync_failure())
            .and_then(|()| self.active_file()?.sync_data());
        if let Err(e) = synced {
            self.pending.rewrite = true;
            self.pending.handed = None;
            return Err(SpoolError::io(
                format!("syncing segment {}", path.display()),
                e,
            ));
        }
        self.unsynced = false;
        self.pending.clear();
        self.synced_through = self.last_seq();
        Ok(())
    }

    /// The highest sequence number known to be on stable storage, with
    /// every one before it: in [`SyncMode::Deferred`], what the last
    /// successful sync covered.
    pub fn durable_seq(&self) -> u64 {
        if self.needs_sync() {
            self.synced_through
        } else {
            self.last_seq()
        }
    }

    /// Records that a sync through [`Spool::sync_handle`] failed: what it
    /// was to cover is written again before the next sync (see
    /// [`Pending`]), and only a sync after that counts.
    pub fn sync_failed(&mut self) {
        self.pending.rewrite = true;
        self.pending.handed = None;
    }

    /// Makes the next sync fail, as a failing disk would (for tests, also
    /// of callers: feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn fail_next_sync(&mut self) {
        self.fail_next_sync = true;
    }

    #[cfg_attr(
        not(any(test, feature = "test-hooks")),
        expect(clippy::unused_self, clippy::unnecessary_wraps)
    )]
    fn injected_sync_failure(&mut self) -> io::Result<()> {
        #[cfg(any(test, feature = "test-hooks"))]
        if std::mem::take(&mut self.fail_next_sync) {
            return Err(io::Error::other("injected fdatasync failure"));
        }
        Ok(())
    }

    /// Writes the pending frames again, after a failed sync.
    fn rewrite_pending(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        if !self.pending.rewrite {
            return Ok(());
        }
        if !self.pending.frames.is_empty() {
            let from = self.pending.from;
            let frames = std::mem::take(&mut self.pending.frames);
            let written = self
                .active_file()
                .and_then(|f| f.write_all_at(&frames, from));
            self.pending.frames = frames;
            written?;
        }
        self.pending.rewrite = false;
        Ok(())
    }

    /// A handle of the active segment and a token, for syncing without
    /// holding the spool (appends continue meanwhile). After a failed sync
    /// it first writes again what that sync was to cover. Pass the
    /// token to [`Spool::synced`] once `sync_data` on the handle succeeded.
    /// `None` when nothing waits for a sync.
    pub fn sync_handle(&mut self) -> Result<Option<(File, u64)>, SpoolError> {
        // As in `sync`; tried again at each turn of the caller's sync loop.
        if self.needs_repair {
            self.repair()?;
        }
        if !self.needs_sync() {
            return Ok(None);
        }
        if self.segments.is_empty() {
            self.unsynced = false;
            self.pending.clear();
            return Ok(None);
        }
        let path = self
            .segments
            .back()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        self.rewrite_pending()
            .map_err(|e| SpoolError::io(format!("rewriting segment {}", path.display()), e))?;
        // An open file description of its own, not a duplicate: Linux
        // reports a writeback error once per description, so a sync here
        // and one in `sync` (at a segment's end) each see it.
        let handle = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| SpoolError::io(format!("opening segment {}", path.display()), e))?;
        // Everything written to the segment so far (the pending frames end
        // there): what a sync of this handle covers.
        let end = self.segments.back().map_or(0, |s| s.size);
        self.pending.handed = Some((self.write_gen, end, self.last_seq()));
        Ok(Some((handle, self.write_gen)))
    }

    /// Records that a sync through [`Spool::sync_handle`] completed: the
    /// writes up to `token` are durable.
    /// Returns whether it counted: not if another sync failed meanwhile
    /// (that one's writes are written again first).
    pub fn synced(&mut self, token: u64) -> bool {
        // A failure clears `handed` and asks for a rewrite first.
        let Some((handed, end, through)) = self.pending.handed.filter(|(h, _, _)| *h == token)
        else {
            return false;
        };
        self.pending.handed = None;
        // Frames written after the handle begin at or past `end`.
        if end > self.pending.from {
            let done = usize::try_from(end - self.pending.from).unwrap_or(usize::MAX);
            self.pending
                .frames
                .drain(..done.min(self.pending.frames.len()));
            self.pending.from = end;
        }
        if self.write_gen == handed {
            self.unsynced = false;
        }
        self.synced_through = self.synced_through.max(through);
        true
    }

    /// Whether deferred appends are waiting for [`Spool::sync`].
    pub fn needs_sync(&self) -> bool {
        self.unsynced || self.pending.rewrite
    }

    /// Keeps copies of just-appended records in the tail cache, dropping
    /// the oldest beyond its budget.
    fn remember(&mut self, first: u64, records: &[&[u8]]) {
        let budget = self.config.tail_bytes;
        for (seq, record) in (first..).zip(records) {
            if record.len() > budget {
                // Never cached: keep the tail consecutive by emptying it.
                self.tail.clear();
                self.tail_size = 0;
                continue;
            }
            while self.tail_size + record.len() > budget {
                let Some((_, r)) = self.tail.pop_front() else {
                    break;
                };
                self.tail_size -= r.len();
            }
            self.tail.push_back((seq, record.to_vec()));
            self.tail_size += record.len();
        }
    }

    /// Copies records from the tail cache, starting at index `skip`, within
    /// the same limits as [`Spool::read_after`].
    fn read_tail(
        &self,
        skip: u64,
        max_records: usize,
        max_bytes: usize,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) {
        let Some(rest) = usize::try_from(skip)
            .ok()
            .filter(|&s| s < self.tail.len())
            .map(|s| self.tail.range(s..))
        else {
            return;
        };
        let mut budget = max_bytes;
        for (seq, record) in rest {
            if out.len() >= max_records || (record.len() > budget && !out.is_empty()) {
                break;
            }
            budget = budget.saturating_sub(record.len());
            out.push((*seq, record.clone()));
        }
    }

    fn write_and_sync(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        let file = self.active_file()?;
        // One positioned write (no seek): the file offset is never used.
        file.write_all_at(buf, offset)?;
        if self.config.sync == SyncMode::Deferred {
            if self.pending.frames.is_empty() {
                self.pending.from = offset;
            }
            debug_assert_eq!(self.pending.from + self.pending.frames.len() as u64, offset);
            self.pending.frames.extend_from_slice(buf);
            self.unsynced = true;
            self.write_gen += 1;
            return Ok(());
        }
        self.injected_sync_failure()?;
        // Re-borrow: the injected-failure check above needs `self`.
        self.active_file()?.sync_data()
    }

    fn active_file(&mut self) -> io::Result<&mut File> {
        match self.active {
            Some(ref mut f) => Ok(f),
            None => {
                let path = match self.segments.back() {
                    Some(s) => &s.path,
                    None => return Err(io::Error::other("no active segment")),
                };
                let f = OpenOptions::new().read(true).write(true).open(path)?;
                Ok(self.active.insert(f))
            }
        }
    }

    /// Cuts the active segment back to its last committed size after a
    /// failed append, so the failed batch cannot resurface after a restart
    /// (where it would be delivered although its append reported an error).
    fn repair(&mut self) -> Result<(), SpoolError> {
        let Some((path, size)) = self.segments.back().map(|s| (s.path.clone(), s.size)) else {
            self.needs_repair = false;
            return Ok(());
        };
        let trimmed = self.active_file().and_then(|f| {
            f.set_len(size)?;
            f.sync_all()
        });
        if trimmed.is_err() {
            // This sync may have been the one told of lost writeback.
            self.pending.rewrite = true;
            self.pending.handed = None;
        }
        trimmed.map_err(|e| {
            SpoolError::io(
                format!("trimming a failed append from segment {}", path.display()),
                e,
            )
        })?;
        self.needs_repair = false;
        Ok(())
    }

    /// Creates the segment whose first record will be `first_seq` and makes
    /// its directory entry durable before anything is written to it.
    fn start_segment(&mut self, first_seq: u64) -> Result<(), SpoolError> {
        // Deferred appends to the segment being closed must be durable
        // before we stop tracking it.
        self.sync()?;
        debug_assert!(self.pending.frames.is_empty() && !self.pending.rewrite);
        self.pending.clear();
        let seg = Segment::new(&self.dir, first_seq);
        // Truncating is safe: a segment named `first_seq` could only hold
        // records numbered `first_seq` or later, and none has been committed.
        let file = private_file()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&seg.path)
            .map_err(|e| SpoolError::io(format!("creating segment {}", seg.path.display()), e))?;
        if let Err(e) = sync_dir(&self.dir) {
            drop(file);
            // Best effort: an empty segment left behind is removed on open.
            let _ = fs::remove_file(&seg.path);
            return Err(e);
        }
        self.active = Some(file);
        self.segments.push_back(seg);
        Ok(())
    }

    /// Deletes segments whose records are all acknowledged, oldest first.
    fn drop_acked_segments(&mut self) -> Result<(), SpoolError> {
        while let Some(seg) = self.segments.front() {
            // An empty segment is never "fully acknowledged": it is the
            // active one, kept for the next append.
            let fully_acked = seg.last_seq().is_some_and(|l| l <= self.acked);
            if !fully_acked {
                break;
            }
            if self.segments.len() == 1 {
                self.active = None;
                self.needs_repair = false;
                self.pending.clear();
            }
            match fs::remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(SpoolError::io(
                        format!("removing acknowledged segment {}", seg.path.display()),
                        e,
                    ));
                }
            }
            self.disk_bytes -= seg.size;
            self.segments.pop_front();
        }
        Ok(())
    }

    /// Reads records `want..=last` of `seg` into `out` until a limit is hit.
    /// Returns true when a limit stopped the read.
    fn read_segment(
        &self,
        seg: &Segment,
        want: u64,
        last: u64,
        max_records: usize,
        budget: &mut usize,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<bool, SpoolError> {
        let path = &seg.path;
        let io_err = |e| SpoolError::io(format!("reading segment {}", path.display()), e);
        let file = File::open(path).map_err(io_err)?;
        let mut reader = BufReader::new(file);
        let (mut seq, mut offset) = seg.locate(want);
        reader.seek(SeekFrom::Start(offset)).map_err(io_err)?;
        while seq <= last {
            let mut head = [0u8; 16];
            reader.read_exact(&mut head).map_err(io_err)?;
            let h = Header::parse(&head);
            // The committed size was validated at open or written by us, so
            // a length past it means the file changed under us: never trust
            // it to size an allocation.
            let room = seg.size.saturating_sub(offset + HEADER_LEN);
            if h.seq != seq || u64::from(h.len) > room {
                return Err(SpoolError::corrupt(
                    path,
                    offset,
                    format!("frame header does not match the index (expected sequence {seq})"),
                ));
            }
            if seq < want {
                reader.seek_relative(i64::from(h.len)).map_err(io_err)?;
            } else {
                let len = usize::try_from(h.len).unwrap_or(usize::MAX);
                if out.len() >= max_records || (len > *budget && !out.is_empty()) {
                    return Ok(true);
                }
                let mut payload = vec![0u8; len];
                reader.read_exact(&mut payload).map_err(io_err)?;
                let mut crc = frame::FrameCrc::new(h.len, h.seq);
                crc.update(&payload);
                if crc.finish() != h.crc {
                    return Err(SpoolError::corrupt(
                        path,
                        offset,
                        "checksum mismatch in a committed record",
                    ));
                }
                *budget = budget.saturating_sub(len);
                out.push((seq, payload));
            }
            offset += h.frame_len();
            seq += 1;
        }
        Ok(out.len() >= max_records)
    }
}

fn missing_active_segment(dir: &Path) -> SpoolError {
    SpoolError::io(
        format!("appending to spool {}", dir.display()),
        io::Error::other("no active segment after starting one"),
    )
}

/// Takes an exclusive lock so a second agent (or a stuck old one) cannot
/// interleave appends and reuse sequence numbers.
fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let file = private_file()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| SpoolError::io(format!("creating lock file {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(SpoolError::io(
            format!(
                "locking {}: the spool is already open in another process or handle",
                path.display()
            ),
            io::Error::from(io::ErrorKind::WouldBlock),
        )),
        Err(fs::TryLockError::Error(e)) => {
            Err(SpoolError::io(format!("locking {}", path.display()), e))
        }
    }
}

/// Segment files in `dir`, sorted by first sequence number.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let io_err = |e| SpoolError::io(format!("listing spool directory {}", dir.display()), e);
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name();
        let Some(first_seq) = name.to_str().and_then(segment::parse_file_name) else {
            let known = [OsStr::new(LOCK_FILE), OsStr::new(acked::FILE_NAME)];
            if name.to_str().is_some_and(|n| {
                n.ends_with(SET_ASIDE_SUFFIX)
                    || n.strip_suffix(REPORTED_SUFFIX)
                        .is_some_and(|n| n.ends_with(SET_ASIDE_SUFFIX))
            }) {
                tracing::warn!(
                    file = %entry.path().display(),
                    "the audit spool directory keeps damaged records an earlier start cut off; \
                     inspect them, then remove the file"
                );
            } else if !known.contains(&name.as_os_str()) {
                tracing::warn!(
                    file = %entry.path().display(),
                    "ignoring a file in the audit spool directory that the spool did not create"
                );
            }
            continue;
        };
        if first_seq == 0 {
            // Sequence numbers start at 1; no writer creates this name.
            return Err(SpoolError::corrupt(
                entry.path(),
                0,
                "segment is named for sequence 0",
            ));
        }
        found.push((first_seq, entry.path()));
    }
    found.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(found)
}

struct Recovered {
    segments: VecDeque<Segment>,
    active: Option<File>,
    /// Highest sequence number found in any record.
    max_seen: u64,
    set_aside: Option<SetAside>,
}

/// Validates the segments on disk and rebuilds their in-memory state.
fn recover_segments(
    dir: &Path,
    names: Vec<(u64, PathBuf)>,
    acked: u64,
) -> Result<Recovered, SpoolError> {
    let mut live = Vec::new();
    let mut names = names.into_iter().peekable();
    while let Some((first_seq, path)) = names.next() {
        // The next segment's name bounds this one's records without reading
        // it: left over from a crash during ack(), so remove it.
        let fully_acked = names
            .peek()
            .is_some_and(|(next, _)| next.saturating_sub(1) <= acked);
        if fully_acked {
            remove_segment_file(&path)?;
        } else {
            live.push((first_seq, path));
        }
    }

    let mut segments = VecDeque::new();
    let mut active = None;
    let mut max_seen = 0;
    let mut set_aside = None;
    let count = live.len();
    for (i, (first_seq, path)) in live.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let expected_first = match segments.back().and_then(Segment::last_seq) {
            Some(prev_last) => prev_last.saturating_add(1),
            None => acked + 1,
        };
        let gap = match segments.back() {
            Some(_) => first_seq != expected_first,
            None => first_seq > expected_first,
        };
        if gap {
            return Err(SpoolError::corrupt(
                &path,
                0,
                format!(
                    "segment starts at sequence {first_seq} but the previous record kept is {}; \
                     records are missing",
                    expected_first - 1
                ),
            ));
        }
        let mut seg = Segment::new(dir, first_seq);
        seg.path = path;
        let file = OpenOptions::new()
            .read(true)
            .write(is_last)
            .open(&seg.path)
            .map_err(|e| SpoolError::io(format!("opening segment {}", seg.path.display()), e))?;
        if let ScanEnd::Damaged { offset, reason } = segment::scan(&file, &mut seg)? {
            if !is_last {
                return Err(SpoolError::corrupt(&seg.path, offset, reason));
            }
            set_aside = trim_torn_tail(dir, &file, &seg, offset, reason, acked)?;
        }
        if let Some(last) = seg.last_seq() {
            max_seen = last;
        } else if !is_last {
            return Err(SpoolError::corrupt(
                &seg.path,
                0,
                "empty segment before the last one",
            ));
        }
        if is_last {
            if seg.records == 0 {
                // Created just before a crash; holds nothing.
                remove_segment_file(&seg.path)?;
                continue;
            }
            active = Some(file);
        }
        segments.push_back(seg);
    }
    Ok(Recovered {
        segments,
        active,
        max_seen,
        set_aside,
    })
}

/// Truncates a torn final write. If intact records follow the damage, the
/// bytes cut off are first kept in a file of their own ([`SetAside`]).
fn trim_torn_tail(
    dir: &Path,
    file: &File,
    seg: &Segment,
    offset: u64,
    reason: String,
    acked: u64,
) -> Result<Option<SetAside>, SpoolError> {
    let io_err = |e| SpoolError::io(format!("recovering segment {}", seg.path.display()), e);
    let file_len = file.metadata().map_err(io_err)?.len();
    let next = seg.first_seq.saturating_add(seg.records);
    // Any frame after the damage would be numbered from `next` up to one per
    // header's worth of remaining bytes.
    let seqs = next..=next.saturating_add((file_len - offset) / HEADER_LEN + 1);
    let set_aside = match segment::find_intact_frame(file, offset + 1, seqs).map_err(io_err)? {
        None => {
            tracing::warn!(
                segment = %seg.path.display(),
                offset,
                dropped_bytes = file_len - offset,
                reason,
                "truncating a torn write at the end of the audit spool (an append interrupted \
                 by a crash or a power loss before it was synced)"
            );
            None
        }
        Some((seq, at)) => {
            // Acknowledged records were delivered, cut off or not.
            let first_lost_seq = next.max(acked.saturating_add(1));
            let kept_at = keep_aside(dir, file, seg, offset, file_len, first_lost_seq)?;
            let kept = SetAside {
                segment: seg.path.clone(),
                offset,
                first_lost_seq,
                bytes: file_len - offset,
                kept_at,
                reason,
            };
            tracing::error!(
                segment = %kept.segment.display(),
                offset,
                reason = %kept.reason,
                intact_record = seq,
                intact_at = at,
                kept_at = %kept.kept_at.display(),
                bytes = kept.bytes,
                "the audit spool is damaged inside its last segment, with intact records after \
                 the damage (a power loss before they were synced, or a failing disk); the spool \
                 now ends where the damage begins, records from sequence {first_lost_seq} on may \
                 be missing from the trail, and the bytes cut off are kept for inspection"
            );
            Some(kept)
        }
    };
    file.set_len(offset)
        .and_then(|()| file.sync_all())
        .map_err(io_err)?;
    Ok(set_aside)
}

/// Copies `file[offset..len]` to a file of its own next to the segments,
/// durably, and returns its path. Run again after a crash, it finds the
/// file it wrote then; it never replaces a file kept earlier.
fn keep_aside(
    dir: &Path,
    file: &File,
    seg: &Segment,
    offset: u64,
    len: u64,
    first_lost_seq: u64,
) -> Result<PathBuf, SpoolError> {
    let io_err = |path: &Path, e| {
        SpoolError::io(format!("keeping damaged records in {}", path.display()), e)
    };
    let mut cut = Vec::new();
    let mut from = file;
    from.seek(SeekFrom::Start(offset))
        .and_then(|_| from.take(len - offset).read_to_end(&mut cut))
        .map_err(|e| io_err(&seg.path, e))?;
    let name = seg
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 1u32.. {
        let path = dir.join(format!(
            "{name}.{offset}.{first_lost_seq}.{n}{SET_ASIDE_SUFFIX}"
        ));
        let mut reported = path.clone().into_os_string();
        reported.push(REPORTED_SUFFIX);
        if Path::new(&reported).exists() {
            continue;
        }
        match fs::read(&path) {
            Ok(earlier) if earlier == cut => return Ok(path),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, e)),
        }
        let mut to = private_file()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        io::Write::write_all(&mut to, &cut)
            .and_then(|()| to.sync_all())
            .map_err(|e| io_err(&path, e))?;
        sync_dir(dir)?;
        return Ok(path);
    }
    Err(SpoolError::corrupt(
        dir,
        offset,
        "every name for keeping damaged records is taken",
    ))
}

/// Files recovery kept aside, now (`fresh`, with its reason) or at an
/// earlier start, that were not reported yet.
fn unreported(dir: &Path, fresh: Option<SetAside>) -> Result<Vec<SetAside>, SpoolError> {
    let io_err = |e| SpoolError::io(format!("listing spool directory {}", dir.display()), e);
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let Some(mut kept) = entry
            .file_name()
            .to_str()
            .and_then(|n| SetAside::from_name(dir, n))
        else {
            continue;
        };
        if let Some(f) = fresh.as_ref().filter(|f| f.kept_at == kept.kept_at) {
            kept.reason.clone_from(&f.reason);
        }
        found.push(kept);
    }
    found.sort_by(|a, b| a.kept_at.cmp(&b.kept_at));
    Ok(found)
}

fn remove_segment_file(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SpoolError::io(
            format!("removing acknowledged segment {}", path.display()),
            e,
        )),
    }
}

#[cfg(test)]
mod tests;
