//! Segment files: naming, the in-memory index, and the recovery scan.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::SpoolError;
use crate::frame::{FrameCrc, HEADER_LEN, Header};

const SUFFIX: &str = ".seg";
const NAME_DIGITS: usize = 20;

/// One index entry per this many bytes of segment. Reads seek to the
/// nearest entry and scan forward, so memory stays at a few thousand entries
/// for a full spool while a read skips at most this much data.
const INDEX_STRIDE: u64 = 64 * 1024;

/// Chunk size for streaming payloads through the checksum during recovery,
/// so a length field is never used to size an allocation.
const SCAN_CHUNK: usize = 64 * 1024;

pub(crate) fn file_name(first_seq: u64) -> String {
    format!("{first_seq:0width$}{SUFFIX}", width = NAME_DIGITS)
}

/// Parses `NNNNNNNNNNNNNNNNNNNN.seg`; anything else is not a segment.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IndexEntry {
    seq: u64,
    offset: u64,
}

/// What the spool knows about one segment file. `size` counts only bytes
/// that were synced as whole records; anything past it is never read.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) first_seq: u64,
    pub(crate) records: u64,
    pub(crate) size: u64,
    pub(crate) path: PathBuf,
    index: Vec<IndexEntry>,
}

impl Segment {
    pub(crate) fn new(dir: &Path, first_seq: u64) -> Segment {
        Segment {
            first_seq,
            records: 0,
            size: 0,
            path: dir.join(file_name(first_seq)),
            index: Vec::new(),
        }
    }

    /// Sequence number of the last record, or `None` for an empty segment.
    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.records.checked_sub(1).map(|n| self.first_seq + n)
    }

    /// Records a frame that is now durable at the end of the segment.
    pub(crate) fn push(&mut self, frame_len: u64) {
        let sparse_enough = self
            .index
            .last()
            .is_none_or(|e| self.size >= e.offset + INDEX_STRIDE);
        if sparse_enough {
            self.index.push(IndexEntry {
                seq: self.first_seq + self.records,
                offset: self.size,
            });
        }
        self.records += 1;
        self.size += frame_len;
    }

    /// The indexed position `(seq, offset)` closest before `seq`.
    pub(crate) fn locate(&self, seq: u64) -> (u64, u64) {
        let after = self.index.partition_point(|e| e.seq <= seq);
        match after.checked_sub(1).and_then(|i| self.index.get(i)) {
            Some(e) => (e.seq, e.offset),
            None => (self.first_seq, 0),
        }
    }
}

/// How a recovery scan of one segment ended.
#[derive(Debug)]
pub(crate) enum ScanEnd {
    /// Every byte belongs to a valid record.
    Clean,
    /// The bytes from `offset` on do not form a valid record. Whether that
    /// is a torn final write or corruption is for the caller to decide.
    Damaged { offset: u64, reason: String },
}

/// Reads a segment from the start, verifying every frame, and rebuilds its
/// index. A frame whose checksum is valid but whose sequence number is not
/// the next one is corruption outright: a torn write cannot produce it.
pub(crate) fn scan(file: &File, seg: &mut Segment) -> Result<ScanEnd, SpoolError> {
    let path = seg.path.clone();
    let io_err = |e| SpoolError::io(format!("reading segment {}", path.display()), e);
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut reader = BufReader::with_capacity(SCAN_CHUNK, file);
    reader.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let mut chunk = vec![0u8; SCAN_CHUNK];
    loop {
        let offset = seg.size;
        let remaining = file_len - offset;
        if remaining == 0 {
            return Ok(ScanEnd::Clean);
        }
        if remaining < HEADER_LEN {
            return Ok(damaged(offset, "incomplete frame header"));
        }
        let mut head = [0u8; 16];
        reader.read_exact(&mut head).map_err(io_err)?;
        let h = Header::parse(&head);
        if h.frame_len() > remaining {
            return Ok(damaged(
                offset,
                format!("record length {} runs past the end of the file", h.len),
            ));
        }
        if !payload_matches(&mut reader, &h, &mut chunk).map_err(io_err)? {
            return Ok(damaged(offset, "checksum mismatch"));
        }
        let Some(expected) = seg.first_seq.checked_add(seg.records) else {
            return Err(SpoolError::corrupt(
                &path,
                offset,
                "record follows sequence u64::MAX",
            ));
        };
        if h.seq != expected {
            return Err(SpoolError::corrupt(
                &path,
                offset,
                format!("found sequence {} where {expected} was expected", h.seq),
            ));
        }
        seg.push(h.frame_len());
    }
}

fn damaged(offset: u64, reason: impl Into<String>) -> ScanEnd {
    ScanEnd::Damaged {
        offset,
        reason: reason.into(),
    }
}

/// Streams `h.len` payload bytes from `reader` through the checksum.
fn payload_matches(reader: &mut impl Read, h: &Header, chunk: &mut [u8]) -> io::Result<bool> {
    let mut crc = FrameCrc::new(h.len, h.seq);
    let mut left = u64::from(h.len);
    while left > 0 {
        let n = usize::try_from(left).map_or(chunk.len(), |l| l.min(chunk.len()));
        let buf = &mut chunk[..n];
        reader.read_exact(buf)?;
        crc.update(buf);
        left -= n as u64;
    }
    Ok(crc.finish() == h.crc)
}

/// Looks for any intact frame with a sequence number in `seqs` starting at
/// or after `start`, and returns its sequence number and offset.
///
/// A process crash tears only the end of the last segment, so nothing
/// valid follows the tear. If an intact, plausibly numbered record does
/// follow the damage, truncating would lose records that were written, so
/// the caller keeps what it cuts off.
pub(crate) fn find_intact_frame(
    file: &File,
    start: u64,
    seqs: std::ops::RangeInclusive<u64>,
) -> io::Result<Option<(u64, u64)>> {
    let file_len = file.metadata()?.len();
    let header = HEADER_LEN as usize;
    let mut window = vec![0u8; SCAN_CHUNK + header - 1];
    let mut chunk = vec![0u8; SCAN_CHUNK];
    let mut base = start;
    while file_len.saturating_sub(base) >= HEADER_LEN {
        let want = usize::try_from(file_len - base).map_or(window.len(), |l| l.min(window.len()));
        let mut f = file;
        f.seek(SeekFrom::Start(base))?;
        f.read_exact(&mut window[..want])?;
        for (i, w) in window[..want].windows(header).enumerate() {
            let mut head = [0u8; 16];
            head.copy_from_slice(w);
            let h = Header::parse(&head);
            let at = base + i as u64;
            if !seqs.contains(&h.seq) || h.frame_len() > file_len - at {
                continue;
            }
            f.seek(SeekFrom::Start(at + HEADER_LEN))?;
            if payload_matches(&mut f, &h, &mut chunk)? {
                return Ok(Some((h.seq, at)));
            }
        }
        // Windows overlap by HEADER_LEN - 1 bytes so no position is missed.
        base += (want - header + 1) as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_strangers() {
        assert_eq!(file_name(1), "00000000000000000001.seg");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "1.seg",
            "0000000000000000000a.seg",
            "00000000000000000001.seg.tmp",
            "00000000000000000001",
            "99999999999999999999.seg",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn index_is_sparse_and_locates_the_nearest_entry() {
        let mut seg = Segment::new(Path::new("/x"), 10);
        for _ in 0..100 {
            seg.push(10 * 1024);
        }
        assert_eq!(seg.last_seq(), Some(109));
        assert!(
            seg.index.len() < 20,
            "index has {} entries",
            seg.index.len()
        );
        assert_eq!(seg.locate(10), (10, 0));
        let (s, off) = seg.locate(55);
        assert!(s <= 55 && 55 - s < 8);
        assert_eq!(off, (s - 10) * 10 * 1024);
        assert_eq!(Segment::new(Path::new("/x"), 5).last_seq(), None);
    }
}
