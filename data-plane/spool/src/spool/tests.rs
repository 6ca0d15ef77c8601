use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Frame size for a payload of `len` bytes.
fn frame(len: u64) -> u64 {
    HEADER_LEN + len
}

/// Small limits so tests roll segments and hit `Full` quickly. A 34-byte
/// payload makes a 50-byte frame: two per segment.
fn small() -> SpoolConfig {
    SpoolConfig {
        max_bytes: 64 * 1024,
        segment_bytes: 100,
        max_record_bytes: 1024,
        sync: crate::SyncMode::Always,
        // Off, so reads exercise the segment files.
        tail_bytes: 0,
    }
}

fn rec(i: u64) -> Vec<u8> {
    format!("record-{i:027}").into_bytes() // 34 bytes
}

fn segment_names(dir: &Path) -> Result<Vec<String>, std::io::Error> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    Ok(names)
}

fn segment_paths(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    Ok(segment_names(dir)?
        .into_iter()
        .map(|n| dir.join(n))
        .collect())
}

fn on_disk_bytes(dir: &Path) -> Result<u64, std::io::Error> {
    let mut total = 0;
    for p in segment_paths(dir)? {
        total += fs::metadata(p)?.len();
    }
    Ok(total)
}

fn all(spool: &Spool) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
    spool.read_after(0, usize::MAX, usize::MAX)
}

fn seqs(records: &[(u64, Vec<u8>)]) -> Vec<u64> {
    records.iter().map(|(s, _)| *s).collect()
}

/// The default limits, syncing only when asked (`--audit-sync batch`).
fn deferred() -> SpoolConfig {
    SpoolConfig {
        sync: SyncMode::Deferred,
        ..SpoolConfig::default()
    }
}

fn append_n(spool: &mut Spool, from: u64, to: u64) -> Result<(), SpoolError> {
    for i in from..=to {
        assert_eq!(spool.append(&rec(i))?, i);
    }
    Ok(())
}

fn overwrite_at(path: &Path, offset: u64, bytes: &[u8]) -> TestResult {
    let mut data = fs::read(path)?;
    let start = usize::try_from(offset)?;
    data[start..start + bytes.len()].copy_from_slice(bytes);
    fs::write(path, data)?;
    Ok(())
}

#[test]
fn spool_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Spool>();
}

#[test]
fn append_read_ack_basics() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut spool = Spool::open(dir.path(), SpoolConfig::default())?;
    assert_eq!(
        (spool.last_seq(), spool.acked_seq(), spool.pending_records()),
        (0, 0, 0)
    );
    assert!(all(&spool)?.is_empty());

    assert_eq!(spool.append(b"a")?, 1);
    assert_eq!(spool.append(b"")?, 2, "empty records are allowed");
    assert_eq!(spool.append_batch(&[b"c", b"dd"])?, vec![3, 4]);
    assert_eq!(spool.append_batch(&[])?, Vec::<u64>::new());
    assert_eq!(spool.last_seq(), 4);
    assert_eq!(spool.pending_records(), 4);
    assert_eq!(
        all(&spool)?,
        vec![
            (1, b"a".to_vec()),
            (2, Vec::new()),
            (3, b"c".to_vec()),
            (4, b"dd".to_vec())
        ]
    );
    assert_eq!(spool.read_after(1, 1, usize::MAX)?, vec![(2, Vec::new())]);
    assert_eq!(spool.read_after(2, 10, 100)?.len(), 2);
    assert!(spool.read_after(4, 10, 100)?.is_empty());
    assert!(spool.read_after(u64::MAX, 10, 100)?.is_empty());
    assert!(spool.read_after(0, 0, 100)?.is_empty());

    spool.ack(2)?;
    assert_eq!((spool.acked_seq(), spool.pending_records()), (2, 2));
    assert_eq!(seqs(&all(&spool)?), vec![3, 4]);
    assert_eq!(spool.disk_bytes(), on_disk_bytes(dir.path())?);
    Ok(())
}

#[test]
fn read_respects_byte_budget_but_always_returns_one_record() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut spool = Spool::open(dir.path(), small())?;
    append_n(&mut spool, 1, 5)?;
    // Budget for two 34-byte payloads, spanning a segment boundary.
    assert_eq!(seqs(&spool.read_after(1, 10, 68)?), vec![2, 3]);
    assert_eq!(seqs(&spool.read_after(1, 10, 67)?), vec![2]);
    assert_eq!(seqs(&spool.read_after(1, 10, 0)?), vec![2]);
    assert_eq!(seqs(&spool.read_after(0, 3, usize::MAX)?), vec![1, 2, 3]);
    Ok(())
}

#[test]
fn reading_after_partial_ack_skips_acked_records() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut spool = Spool::open(dir.path(), small())?;
    append_n(&mut spool, 1, 7)?;
    spool.ack(3)?;
    // Asking from before the ack point never resurrects acked records.
    assert_eq!(
        seqs(&spool.read_after(0, 10, usize::MAX)?),
        vec![4, 5, 6, 7]
    );
    assert_eq!(seqs(&spool.read_after(1, 2, usize::MAX)?), vec![4, 5]);
    assert_eq!(seqs(&spool.read_after(5, 10, usize::MAX)?), vec![6, 7]);
    let got = spool.read_after(4, 1, usize::MAX)?;
    assert_eq!(got, vec![(5, rec(5))]);
    Ok(())
}

#[test]
fn read_after_uses_the_index_in_large_segments() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SpoolConfig {
        segment_bytes: 1 << 20,
        tail_bytes: 0,
        ..SpoolConfig::default()
    };
    let mut spool = Spool::open(dir.path(), config.clone())?;
    let payload = vec![7u8; 1000];
    let batch: Vec<&[u8]> = (0..500).map(|_| payload.as_slice()).collect();
    spool.append_batch(&batch)?;
    for after in [0, 1, 63, 64, 65, 250, 498, 499] {
        let got = spool.read_after(after, 2, usize::MAX)?;
        let want: Vec<u64> = (after + 1..=500).take(2).collect();
        assert_eq!(seqs(&got), want, "after {after}");
    }
    drop(spool);
    let spool = Spool::open(dir.path(), config)?;
    assert_eq!(seqs(&spool.read_after(321, 1, usize::MAX)?), vec![322]);
    Ok(())
}

#[test]
fn sequence_numbers_continue_across_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut spool = Spool::open(dir.path(), small())?;
        append_n(&mut spool, 1, 3)?;
    }
    let mut spool = Spool::open(dir.path(), small())?;
    assert_eq!(spool.last_seq(), 3);
    assert_eq!(spool.append(b"next")?, 4);
    assert_eq!(seqs(&all(&spool)?), vec![1, 2, 3, 4]);
    Ok(())
}

#[test]
fn ack_persists_across_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut spool = Spool::open(dir.path(), small())?;
        append_n(&mut spool, 1, 5)?;
        spool.ack(3)?;
    }
    let spool = Spool::open(dir.path(), small())?;
    assert_eq!(
        (spool.acked_seq(), spool.last_seq(), spool.pending_records()),
        (3, 5, 2)
    );
    assert_eq!(all(&spool)?, vec![(4, rec(4)), (5, rec(5))]);
    Ok(())
}

#[test]
fn segments_roll_and_acked_segments_are_deleted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut spool = Spool::open(dir.path(), small())?;
    append_n(&mut spool, 1, 6)?;
    assert_eq!(
        segment_names(dir.path())?,
        vec![
            "00000000000000000001.seg",
            "00000000000000000003.seg",
            "00000000000000000005.seg"
        ]
    );
    assert_eq!(spool.disk_bytes(), 6 * frame(34));
    assert_eq!(spool.disk_bytes(), on_disk_bytes(dir.path())?);

    // Segment 3 still holds unacked record 4.
    spool.ack(3)?;
    assert_eq!(
        segment_names(dir.path())?,
        vec!["00000000000000000003.seg", "00000000000000000005.seg"]
    );
    assert_eq!(spool.disk_bytes(), 4 * frame(34));
    spool.ack(2)?; // below the ack point: no-op
    assert_eq!(spool.acked_seq(), 3);

    spool.ack(4)?;
    assert_eq!(segment_names(dir.path())?, vec!["00000000000000000005.seg"]);
    spool.ack(6)?;
    assert!(segment_names(dir.path())?.is_empty());
    assert_eq!((spool.disk_bytes(), spool.pending_records()), (0, 0));
    assert!(all(&spool)?.is_empty());
    assert_eq!(spool.append(b"after")?, 7);
    assert_eq!(segment_names(dir.path())?, vec!["00000000000000000007.seg"]);
    Ok(())
}

#[test]
fn sequence_numbers_never_repeat_after_every_segment_is_deleted() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut spool = Spool::open(dir.path(), small())?;
        append_n(&mut spool, 1, 4)?;
        spool.ack(4)?;
        assert!(segment_names(dir.path())?.is_empty());
    }
    let mut spool = Spool::open(dir.path(), small())?;
    assert_eq!((spool.last_seq(), spool.acked_seq()), (4, 4));
    assert_eq!(spool.append(b"x")?, 5);
    Ok(())
}

#[test]
fn leftovers_of_a_crash_during_ack_are_removed_on_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut spool = Spool::open(dir.path(), small())?;
        append_n(&mut spool, 1, 6)?;
    }
    // The acked file was replaced but the process died before deleting.
    crate::acked::write(dir.path(), 4)?;
    fs::write(dir.path().join("acked.tmp"), b"999\n")?;
    let spool = Spool::open(dir.path(), small())?;
    assert_eq!(segment_names(dir.path())?, vec!["00000000000000000005.seg"]);
    assert!(!dir.path().join("acked.tmp").exists());
    assert_eq!((spool.acked_seq(), spool.last_seq()), (4, 6));
    assert_eq!(seqs(&all(&spool)?), vec![5, 6]);
    assert_eq!(spool.disk_bytes(), on_disk_bytes(dir.path())?);
    Ok(())
}

#[test]
fn torn_tail_is_truncated_and_sequence_continues() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut spool = Spool::open(dir.path(), small())?;
        append_n(&mut spool, 1, 5)?;
    }
    // Record 5 is alone in the last segment; tear it and add junk, as a
    // crash in the middle of a write could.
    let last = segment_paths(dir.path())?.pop().ok_or("no segment")?;
    let mut data = fs::read(&last)?;
    data.truncate(data.len() - 3);
    data.extend_from_slice(b"\xde\xad\xbe\xef garbage");
    fs::write(&last, &data)?;

    let mut spool = Spool::open(dir.path(), small())?;
    assert_eq!(spool.last_seq(), 4);
    assert_eq!(
        all(&spool)?,
        (1..=4).map(|i| (i, rec(i))).collect::<Vec<_>>()
    );
    assert_eq!(spool.disk_bytes(), on_disk_bytes(dir.path())?);
    assert_eq!(spool.append(&rec(5))?, 5);
    assert_eq!(spool.append(&rec(6))?, 6);
    drop(spool);
    let spool = Spool::open(dir.path(), small())?;
    assert_eq!(seqs(&all(&spool)?), vec![1, 2, 3, 4, 5, 6]);
    Ok(())
}

#[test]
fn torn_tail_after_valid_records_in_the_same_segment() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SpoolConfig::default();
    {
        let mut spool = Spool::open(dir.path(), config.clone())?;
        append_n(&mut spool, 1, 3)?;
    }
    let seg = segment_paths(dir.path())?.pop().ok_or("no segment")?;
    let valid_len = fs::metadata(&seg)?.len();
    for junk in [
        &b"x"[..],
        &[0u8; 15][..],
        &[0u8; 40][..],
        &[0xffu8; 100][..],
    ] {
        fs::OpenOptions::new()
            .append(true)
            .open(&seg)?
            .write_all(junk)?;
        let spool = Spool::open(dir.path(), config.clone())?;
        assert_eq!(spool.last_seq(), 3, "junk of {} bytes", junk.len());
        assert_eq!(fs::metadata(&seg)?.len(), valid_len);
    }
    Ok(())
}

#[test]
fn a_last_segment_holding_only_a_torn_record_is_removed() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut spool = Spool::open(dir.path(), small())?;
        append_n(&mut spool, 1, 3)?;
    }
    let last = segment_paths(dir.path())?.pop().ok_or("no segment")?;
    fs::write(&last, &fs::read(&last)?[..20])?;
    let mut spool = Spool::open(dir.path(), small())?;
    assert_eq!(spool.last_seq(), 2);
    assert_eq!(segment_names(dir.path())?, vec!["00000000000000000001.seg"]);
    assert_eq!(spool.append(&rec(3))?, 3);
    assert_eq!(
        segment_names(dir.path())?,
        vec!["00000000000000000001.seg", "00000000000000000003.seg"]
    );
    Ok(())
}

/// Flips a payload byte of record 2 of the five [`append_n`] wrote to a
/// fresh spool in `dir`: records 3..5 after it are intact, as a power loss
/// can leave unsynced pages written out of order. Returns the segment.
fn damage_the_second_of_five(
    dir: &Path,
    config: &SpoolConfig,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    {
        let mut spool = Spool::open(dir, config.clone())?;
        append_n(&mut spool, 1, 5)?;
    }
    let seg = segment_paths(dir)?.pop().ok_or("no segment")?;
    overwrite_at(&seg, frame(34) + HEADER_LEN + 3, b"X")?;
    Ok(seg)
}

#[test]
fn damage_with_intact_records_after_it_in_the_last_segment_is_cut_off_and_kept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SpoolConfig::default();
    let seg = damage_the_second_of_five(dir.path(), &config)?;
    let cut_off = fs::read(&seg)?[frame(34) as usize..].to_vec();

    let mut spool = Spool::open(dir.path(), config.clone())?;
    assert_eq!(
        spool.last_seq(),
        1,
        "the spool ends where the damage begins"
    );
    assert_eq!(all(&spool)?, vec![(1, rec(1))]);
    assert_eq!(fs::metadata(&seg)?.len(), frame(34));
    let [kept] = spool.set_aside() else {
        return Err(format!("{:?}", spool.set_aside()).into());
    };
    let kept = kept.clone();
    assert_eq!(kept.segment, seg);
    assert_eq!(kept.offset, frame(34));
    assert_eq!(kept.first_lost_seq, 2);
    assert!(kept.reason.contains("checksum"), "{}", kept.reason);
    assert_eq!(kept.bytes, 4 * frame(34));
    assert_eq!(
        kept.kept_at,
        dir.path().join(format!(
            "00000000000000000001.seg.{}.2.1.damaged",
            frame(34)
        ))
    );
    assert_eq!(
        fs::read(&kept.kept_at)?,
        cut_off,
        "every byte cut off is kept"
    );
    assert_eq!(
        spool.disk_bytes(),
        frame(34),
        "the kept file does not count against the spool"
    );

    // Not reported: a later start says so again (without the reason, which
    // only the start that cut it off read).
    assert_eq!(spool.append(&rec(2))?, 2);
    drop(spool);
    let mut spool = Spool::open(dir.path(), config.clone())?;
    assert_eq!(
        spool.set_aside(),
        [SetAside {
            reason: String::new(),
            ..kept.clone()
        }]
    );
    spool.reported(&kept)?;
    assert!(spool.set_aside().is_empty());
    drop(spool);
    let spool = Spool::open(dir.path(), config)?;
    assert!(spool.set_aside().is_empty(), "reported once");
    assert_eq!(seqs(&all(&spool)?), vec![1, 2]);
    assert_eq!(
        fs::read(dir.path().join(format!(
            "00000000000000000001.seg.{}.2.1.damaged.reported",
            frame(34)
        )))?,
        cut_off,
        "kept after it was reported"
    );
    Ok(())
}

#[test]
fn damage_cut_off_again_at_the_same_place_is_kept_beside_what_was_kept_before() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SpoolConfig::default();
    damage_the_second_of_five(dir.path(), &config)?;
    let mut spool = Spool::open(dir.path(), config.clone())?;
    let first = spool.set_aside()[0].clone();
    spool.reported(&first)?;
    // The same records again (numbered alike), damaged alike, differently.
    append_n(&mut spool, 2, 4)?;
    drop(spool);
    let seg = segment_paths(dir.path())?.pop().ok_or("no segment")?;
    overwrite_at(&seg, frame(34) + HEADER_LEN + 4, b"Y")?;
    let spool = Spool::open(dir.path(), config)?;
    let [second] = spool.set_aside() else {
        return Err(format!("{:?}", spool.set_aside()).into());
    };
    assert_ne!(second.kept_at, first.kept_at);
    assert!(second.kept_at.to_string_lossy().ends_with(".2.2.damaged"));
    assert_ne!(
        fs::read(first.reported_at())?,
        fs::read(&second.kept_at)?,
        "both kept"
    );
    Ok(())
}

#[test]
fn records_cut_off_that_were_acknowledged_are_not_counted_as_lost() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SpoolConfig::default();
    damage_the_second_of_five(dir.path(), &config)?;
    // The acknowledgement of 1..3 reached the disk; the records' pages
    // did not all.
    fs::write(dir.path().join("acked"), b"3\n")?;
    let spool = Spool::open(dir.path(), config)?;
    assert_eq!(spool.set_aside()[0].first_lost_seq, 4);
    assert_eq!(
        spool.last_seq(),
        3,
        "numbers acknowledged are never handed out again"
    );
    Ok(())
}

#[test]
fn a_corrupt_length_in_the_middle_is_cut_off_without_reading_what_it_claims() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SpoolConfig::default();
    {
        let mut spool = Spool::open(dir.path(), config.clone())?;
        append_n(&mut spool, 1, 5)?;
    }
    let seg = segment_paths(dir.path())?.pop().ok_or("no segment")?;
    // Record 2 claims ~4 GiB: must not allocate it, and 3..5 are kept.
    overwrite_at(&seg, frame(34), &u32::MAX.to_le_bytes())?;
    let spool = Spool::open(dir.path(), config)?;
    assert_eq!(spool.last_seq(), 1);
    let kept = spool
        .set_aside()
        .first()
        .ok_or("nothing reported set aside")?;
    assert_eq!(fs::metadata(&kept.kept_at)?.len(), 4 * frame(34));
    Ok(())
}

#[test]
fn any_damage_in_a_non_last_segment_is_corrupt() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut spool = Spool::open(dir.path(), small())?;
        append_n(&mut spool, 1, 5)?;
    }
    let first = segment_paths(dir.path())?.remove(0);
    // Damage the very end of the first segment: in a segment that was
    // followed by another, even that cannot be a torn write.
    let len = fs::metadata(&first)?.len();
    overwrite_at(&first, len - 1, b"!")?;
    let err = Spool::open(dir.path(), small()).err().ok_or("opened")?;
    assert!(
        matches!(err, SpoolError::Corrupt { ref path, .. } if *path == first),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_missing_segment_is_corrupt() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut spool = Spool::open(dir.path(), small())?;
        append_n(&mut spool, 1, 6)?;
        spool.ack(1)?;
    }
    fs::remove_file(dir.path().join("00000000000000000003.seg"))?;
    let err = Spool::open(dir.path(), small()).err().ok_or("opened")?;
    assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");

    // Unacked records before the first segment are missing too.
    fs::remove_file(dir.path().join("00000000000000000001.seg"))?;
    let err = Spool::open(dir.path(), small()).err().ok_or("opened")?;
    assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");
    Ok(())
}

#[test]
fn a_record_with_the_wrong_sequence_is_corrupt() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut spool = Spool::open(dir.path(), small())?;
        append_n(&mut spool, 1, 2)?;
    }
    // A well-formed frame numbered 7 where 2 belongs.
    let seg = segment_paths(dir.path())?.remove(0);
    let mut good = Vec::new();
    frame::encode(&mut good, 7, 34, &rec(7));
    overwrite_at(&seg, frame(34), &good)?;
    let err = Spool::open(dir.path(), small()).err().ok_or("opened")?;
    assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");
    Ok(())
}

#[test]
fn full_at_the_limit_then_space_returns_after_ack() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SpoolConfig {
        max_bytes: 4 * frame(34),
        ..small()
    };
    let mut spool = Spool::open(dir.path(), config)?;
    append_n(&mut spool, 1, 4)?;
    assert_eq!(spool.disk_bytes(), 200);
    let err = spool
        .append(&rec(5))
        .err()
        .ok_or("appended past the limit")?;
    assert!(matches!(err, SpoolError::Full { limit: 200 }), "{err}");
    assert_eq!((spool.last_seq(), spool.disk_bytes()), (4, 200));
    assert_eq!(on_disk_bytes(dir.path())?, 200);

    // Acking record 1 frees nothing: its segment still holds record 2.
    spool.ack(1)?;
    assert!(matches!(
        spool.append(&rec(5)),
        Err(SpoolError::Full { .. })
    ));
    spool.ack(2)?;
    assert_eq!(
        spool.append(&rec(5))?,
        5,
        "no sequence was consumed by Full"
    );
    assert_eq!(seqs(&all(&spool)?), vec![3, 4, 5]);
    Ok(())
}

#[test]
fn append_over_limit_writes_past_a_full_spool_and_survives_reopening() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SpoolConfig {
        max_bytes: 4 * frame(34),
        ..small()
    };
    let mut spool = Spool::open(dir.path(), config.clone())?;
    append_n(&mut spool, 1, 4)?;
    assert!(matches!(
        spool.append(&rec(5)),
        Err(SpoolError::Full { .. })
    ));
    assert_eq!(spool.append_over_limit(&rec(5))?, 5);
    assert_eq!(spool.disk_bytes(), 250);
    // Still full for ordinary appends until acknowledgements free space.
    assert!(matches!(
        spool.append(&rec(6)),
        Err(SpoolError::Full { .. })
    ));
    drop(spool);
    let mut spool = Spool::open(dir.path(), config)?;
    assert_eq!(seqs(&all(&spool)?), vec![1, 2, 3, 4, 5]);
    spool.ack(4)?;
    assert_eq!(spool.append(&rec(6))?, 6);
    Ok(())
}

#[test]
fn batch_is_all_or_nothing_when_full() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SpoolConfig {
        max_bytes: 4 * frame(34),
        segment_bytes: 1000,
        ..small()
    };
    let mut spool = Spool::open(dir.path(), config)?;
    append_n(&mut spool, 1, 3)?;
    let (a, b) = (rec(4), rec(5));
    let err = spool
        .append_batch(&[&a, &b])
        .err()
        .ok_or("batch should not fit")?;
    assert!(matches!(err, SpoolError::Full { .. }), "{err}");
    assert_eq!((spool.last_seq(), spool.disk_bytes()), (3, 3 * frame(34)));
    assert_eq!(on_disk_bytes(dir.path())?, 3 * frame(34));
    assert_eq!(spool.append_batch(&[&a])?, vec![4]);
    Ok(())
}

#[test]
fn record_too_large_is_rejected_without_side_effects() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SpoolConfig {
        max_bytes: 100,
        segment_bytes: 100,
        max_record_bytes: 50,
        sync: crate::SyncMode::Always,
        tail_bytes: 0,
    };
    let mut spool = Spool::open(dir.path(), config)?;
    assert_eq!(spool.append(&[1u8; 50])?, 1);
    let err = spool.append(&[1u8; 51]).err().ok_or("accepted")?;
    assert!(
        matches!(err, SpoolError::RecordTooLarge { len: 51, limit: 50 }),
        "{err}"
    );

    // One oversized record sinks the whole batch.
    let ok = [0u8; 1];
    let big = [0u8; 60];
    assert!(matches!(
        spool.append_batch(&[&ok, &big]),
        Err(SpoolError::RecordTooLarge { len: 60, .. })
    ));
    assert_eq!(spool.last_seq(), 1);

    // A record that could never fit in the spool at all is too large, not
    // Full: waiting for acks would not help.
    let dir2 = tempfile::tempdir()?;
    let tiny = SpoolConfig {
        max_bytes: 40,
        ..small()
    };
    let mut spool = Spool::open(dir2.path(), tiny)?;
    let err = spool.append(&[0u8; 30]).err().ok_or("accepted")?;
    assert!(
        matches!(err, SpoolError::RecordTooLarge { len: 30, limit: 24 }),
        "{err}"
    );
    Ok(())
}

#[test]
fn ack_beyond_end_is_an_error_and_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut spool = Spool::open(dir.path(), small())?;
    let err = spool.ack(1).err().ok_or("acked an empty spool")?;
    assert!(
        matches!(
            err,
            SpoolError::AckBeyondEnd {
                seq: 1,
                last_seq: 0
            }
        ),
        "{err}"
    );
    spool.ack(0)?;
    append_n(&mut spool, 1, 2)?;
    let err = spool.ack(3).err().ok_or("acked beyond end")?;
    assert!(
        matches!(
            err,
            SpoolError::AckBeyondEnd {
                seq: 3,
                last_seq: 2
            }
        ),
        "{err}"
    );
    assert_eq!(spool.acked_seq(), 0);
    spool.ack(1)?;
    spool.ack(0)?;
    assert_eq!(spool.acked_seq(), 1);
    assert_eq!(seqs(&all(&spool)?), vec![2]);
    Ok(())
}

/// True when this process can create files in a 0o500 directory (root).
fn permissions_are_bypassed(dir: &Path) -> Result<bool, std::io::Error> {
    let probe = dir.join("probe");
    match fs::write(&probe, b"") {
        Ok(()) => {
            fs::remove_file(probe)?;
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

#[cfg(unix)]
#[test]
fn open_fails_with_io_naming_the_path_when_the_directory_is_unwritable() -> TestResult {
    use std::os::unix::fs::PermissionsExt;

    let base = tempfile::tempdir()?;
    // Works for every user: nothing can be created under a regular file.
    let file = base.path().join("not-a-dir");
    fs::write(&file, b"")?;
    let under_file = file.join("spool");
    let err = Spool::open(&under_file, small())
        .err()
        .ok_or("opened under a file")?;
    match &err {
        SpoolError::Io { context, .. } => {
            assert!(
                context.contains(&*under_file.to_string_lossy()),
                "{context}"
            )
        }
        other => return Err(format!("expected Io, got {other:?}").into()),
    }
    let err = Spool::open(&file, small())
        .err()
        .ok_or("opened a file as dir")?;
    assert!(matches!(err, SpoolError::Io { .. }), "{err}");

    let ro = base.path().join("read-only");
    fs::create_dir(&ro)?;
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o500))?;
    if permissions_are_bypassed(&ro)? {
        eprintln!(
            "running as root: mode 0o500 does not stop writes, so the unwritable-directory \
             case is covered by the path-under-a-regular-file case above"
        );
    } else {
        let err = Spool::open(&ro, small())
            .err()
            .ok_or("opened read-only dir")?;
        match &err {
            SpoolError::Io { context, .. } => {
                assert!(context.contains(&*ro.to_string_lossy()), "{context}")
            }
            other => return Err(format!("expected Io, got {other:?}").into()),
        }
    }
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

#[test]
fn append_fails_with_io_naming_the_path_when_the_disk_refuses() -> TestResult {
    let base = tempfile::tempdir()?;
    let dir = base.path().join("spool");
    let mut spool = Spool::open(&dir, small())?;
    // Swap the directory for a regular file: creating the first segment
    // fails for every user, root included.
    fs::remove_dir_all(&dir)?;
    fs::write(&dir, b"")?;
    let err = spool.append(b"event").err().ok_or("appended")?;
    match &err {
        SpoolError::Io { context, .. } => {
            assert!(context.contains(&*dir.to_string_lossy()), "{context}")
        }
        other => return Err(format!("expected Io, got {other:?}").into()),
    }
    assert_eq!(spool.last_seq(), 0, "a failed append consumes no sequence");
    Ok(())
}

#[test]
fn a_failed_sync_rolls_the_batch_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SpoolConfig::default();
    let mut spool = Spool::open(dir.path(), config.clone())?;
    assert_eq!(spool.append(b"a")?, 1);
    spool.fail_next_sync = true;
    let err = spool.append_batch(&[b"b", b"c"]).err().ok_or("appended")?;
    assert!(matches!(err, SpoolError::Io { .. }), "{err}");
    assert_eq!((spool.last_seq(), spool.disk_bytes()), (1, frame(1)));
    assert_eq!(on_disk_bytes(dir.path())?, frame(1), "failed batch trimmed");
    assert_eq!(spool.append(b"d")?, 2);
    let want = vec![(1, b"a".to_vec()), (2, b"d".to_vec())];
    assert_eq!(all(&spool)?, want);
    drop(spool);
    let spool = Spool::open(dir.path(), config)?;
    assert_eq!(all(&spool)?, want);
    Ok(())
}

#[test]
fn a_failed_sync_into_a_new_segment_leaves_nothing_behind() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut spool = Spool::open(dir.path(), small())?;
        append_n(&mut spool, 1, 2)?;
        spool.fail_next_sync = true;
        assert!(spool.append(&rec(3)).is_err());
        assert_eq!(spool.disk_bytes(), on_disk_bytes(dir.path())?);
        assert_eq!(spool.last_seq(), 2);
    }
    let mut spool = Spool::open(dir.path(), small())?;
    assert_eq!(segment_names(dir.path())?, vec!["00000000000000000001.seg"]);
    append_n(&mut spool, 3, 4)?;
    // Without a restart, the retry goes into the (still empty) new segment.
    spool.fail_next_sync = true;
    assert!(spool.append(&rec(5)).is_err());
    assert_eq!(spool.append(&rec(5))?, 5);
    assert_eq!(
        segment_names(dir.path())?,
        vec![
            "00000000000000000001.seg",
            "00000000000000000003.seg",
            "00000000000000000005.seg"
        ]
    );
    assert_eq!(seqs(&all(&spool)?), vec![1, 2, 3, 4, 5]);
    assert_eq!(spool.disk_bytes(), on_disk_bytes(dir.path())?);
    Ok(())
}

#[test]
fn a_spool_cannot_be_opened_twice() -> TestResult {
    let dir = tempfile::tempdir()?;
    let spool = Spool::open(dir.path(), small())?;
    let err = Spool::open(dir.path(), small())
        .err()
        .ok_or("opened twice")?;
    assert!(matches!(err, SpoolError::Io { .. }), "{err}");
    drop(spool);
    Spool::open(dir.path(), small())?;
    Ok(())
}

/// Deterministic generator so failures reproduce (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// What a reader should see, computed from the model.
fn model_read(
    model: &VecDeque<(u64, Vec<u8>)>,
    after: u64,
    max_records: usize,
    max_bytes: usize,
) -> Vec<(u64, Vec<u8>)> {
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut budget = max_bytes;
    for (seq, payload) in model.iter().filter(|(s, _)| *s > after) {
        if out.len() >= max_records || (payload.len() > budget && !out.is_empty()) {
            break;
        }
        budget = budget.saturating_sub(payload.len());
        out.push((*seq, payload.clone()));
    }
    out
}

#[test]
fn random_operations_match_a_model() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SpoolConfig {
        max_bytes: 4096,
        segment_bytes: 300,
        max_record_bytes: 200,
        sync: crate::SyncMode::Always,
        // Small enough that reads start both inside and before the tail.
        tail_bytes: 600,
    };
    let mut rng = Rng(0x5eed_5eed);
    let mut spool = Spool::open(dir.path(), config.clone())?;
    let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    let (mut last, mut acked) = (0u64, 0u64);
    let mut saw_full = false;

    for step in 0..3000 {
        match rng.below(100) {
            0..=34 => {
                let r = rng.bytes(200);
                match spool.append(&r) {
                    Ok(seq) => {
                        last += 1;
                        assert_eq!(seq, last, "step {step}");
                        model.push_back((seq, r));
                    }
                    Err(SpoolError::Full { .. }) => {
                        saw_full = true;
                        assert!(spool.disk_bytes() + frame(r.len() as u64) > config.max_bytes);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            35..=49 => {
                let n = rng.below(5);
                let batch: Vec<Vec<u8>> = (0..n).map(|_| rng.bytes(120)).collect();
                let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                let need: u64 = batch.iter().map(|r| frame(r.len() as u64)).sum();
                match spool.append_batch(&refs) {
                    Ok(got) => {
                        let want: Vec<u64> = (last + 1..=last + n).collect();
                        assert_eq!(got, want, "step {step}");
                        last += n;
                        model.extend(got.into_iter().zip(batch));
                    }
                    Err(SpoolError::Full { .. }) => {
                        saw_full = true;
                        assert!(spool.disk_bytes() + need > config.max_bytes);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            50..=69 => {
                let target =
                    acked.saturating_sub(2) + rng.below(last + 5 - acked.saturating_sub(2));
                match spool.ack(target) {
                    Ok(()) => {
                        assert!(target <= last);
                        acked = acked.max(target);
                        while model.front().is_some_and(|(s, _)| *s <= acked) {
                            model.pop_front();
                        }
                    }
                    Err(SpoolError::AckBeyondEnd { seq, last_seq }) => {
                        assert_eq!((seq, last_seq), (target, last));
                        assert!(target > last);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            70..=91 => {
                let after = rng.below(last + 2);
                let max_records = rng.below(8) as usize;
                let max_bytes = rng.below(600) as usize;
                assert_eq!(
                    spool.read_after(after, max_records, max_bytes)?,
                    model_read(&model, after, max_records, max_bytes),
                    "step {step}: read_after({after}, {max_records}, {max_bytes})"
                );
            }
            92..=97 => {
                drop(spool);
                spool = Spool::open(dir.path(), config.clone())?;
            }
            _ => {
                // Simulate a crash mid-append: junk after the last record.
                drop(spool);
                if let Some(seg) = segment_paths(dir.path())?.pop() {
                    let junk = rng.bytes(40);
                    fs::OpenOptions::new()
                        .append(true)
                        .open(seg)?
                        .write_all(&junk)?;
                }
                spool = Spool::open(dir.path(), config.clone())?;
            }
        }
        assert_eq!(spool.last_seq(), last, "step {step}");
        assert_eq!(spool.acked_seq(), acked, "step {step}");
        assert_eq!(spool.pending_records(), model.len() as u64, "step {step}");
        assert_eq!(
            spool.disk_bytes(),
            on_disk_bytes(dir.path())?,
            "step {step}"
        );
        assert!(spool.disk_bytes() <= config.max_bytes);
    }
    assert_eq!(all(&spool)?, model.iter().cloned().collect::<Vec<_>>());
    assert!(saw_full, "the run should exercise Full");
    Ok(())
}

#[test]
fn sequence_exhaustion_fails_closed_instead_of_wrapping() -> TestResult {
    let dir = tempfile::tempdir()?;
    crate::acked::write(dir.path(), u64::MAX)?;
    let err = Spool::open(dir.path(), small()).err().ok_or("opened")?;
    assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");

    crate::acked::write(dir.path(), u64::MAX - 1)?;
    let mut spool = Spool::open(dir.path(), small())?;
    assert_eq!(spool.last_seq(), u64::MAX - 1);
    let err = spool.append(b"x").err().ok_or("appended")?;
    assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");
    assert_eq!(spool.last_seq(), u64::MAX - 1);
    Ok(())
}

#[test]
fn deferred_sync_keeps_records_across_reopen_and_syncs_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        sync: crate::SyncMode::Deferred,
        segment_bytes: 256,
        ..SpoolConfig::default()
    };
    let mut spool = Spool::open(dir.path(), config.clone()).unwrap();
    for i in 0..20u32 {
        spool.append(&i.to_be_bytes()).unwrap();
    }
    // Rolling to new segments synced the old ones; the active one may wait.
    spool.sync().unwrap();
    assert!(!spool.needs_sync());
    spool.append(b"last").unwrap();
    assert!(spool.needs_sync());
    // Without a sync the kernel still has the bytes: a reopen (as after the
    // process was killed) sees every record.
    drop(spool);
    let spool = Spool::open(dir.path(), config).unwrap();
    assert_eq!(spool.last_seq(), 21);
    let all = spool.read_after(0, 100, 1 << 20).unwrap();
    assert_eq!(all.len(), 21);
    assert_eq!(all[20].1, b"last");
}

#[test]
fn deferred_sync_after_everything_was_acked_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        sync: crate::SyncMode::Deferred,
        ..SpoolConfig::default()
    };
    let mut spool = Spool::open(dir.path(), config).unwrap();
    let seq = spool.append(b"x").unwrap();
    spool.ack(seq).unwrap();
    spool.sync().unwrap();
    assert!(!spool.needs_sync());
    let seq = spool.append(b"y").unwrap();
    spool.sync().unwrap();
    assert_eq!(spool.read_after(seq - 1, 10, 1 << 20).unwrap().len(), 1);
}

#[test]
fn external_sync_only_clears_the_writes_it_covered() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        sync: crate::SyncMode::Deferred,
        ..SpoolConfig::default()
    };
    let mut spool = Spool::open(dir.path(), config).unwrap();
    assert!(spool.sync_handle().unwrap().is_none());
    spool.append(b"a").unwrap();
    let (file, token) = spool.sync_handle().unwrap().expect("a write waits");
    spool.append(b"b").unwrap(); // written after the handle was taken
    file.sync_data().unwrap();
    assert!(spool.synced(token));
    assert!(spool.needs_sync(), "the later write is not covered");
    let (file, token) = spool.sync_handle().unwrap().unwrap();
    file.sync_data().unwrap();
    assert!(spool.synced(token));
    assert!(!spool.needs_sync());
}

#[test]
fn recent_records_are_served_from_memory_and_older_ones_from_disk() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SpoolConfig {
        tail_bytes: 3 * 34,
        ..small()
    };
    let mut spool = Spool::open(dir.path(), config.clone())?;
    append_n(&mut spool, 1, 5)?;
    // Records 3..=5 are cached; damage every payload byte on disk after the
    // fact: reads that start in the tail cannot notice, reads that start
    // before it must (the checksum catches it).
    for path in segment_paths(dir.path())? {
        let len = fs::metadata(&path)?.len();
        let frames = len / frame(34);
        for i in 0..frames {
            overwrite_at(&path, i * frame(34) + 16, &[b'X'; 34])?;
        }
    }
    let recent = spool.read_after(2, 100, usize::MAX)?;
    assert_eq!(recent, vec![(3, rec(3)), (4, rec(4)), (5, rec(5))]);
    assert_eq!(spool.read_after(4, 100, usize::MAX)?, vec![(5, rec(5))]);
    assert!(spool.read_after(5, 100, usize::MAX)?.is_empty());
    // Limits apply to cached reads too.
    assert_eq!(seqs(&spool.read_after(2, 2, usize::MAX)?), vec![3, 4]);
    assert_eq!(seqs(&spool.read_after(2, 100, 1)?), vec![3]);
    assert!(matches!(
        spool.read_after(0, 100, usize::MAX),
        Err(SpoolError::Corrupt { .. })
    ));
    // Acknowledged records leave the cache.
    spool.ack(4)?;
    assert_eq!(spool.read_after(0, 100, usize::MAX)?, vec![(5, rec(5))]);
    Ok(())
}

#[test]
fn cached_and_disk_reads_agree() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = SpoolConfig {
        tail_bytes: 1 << 20,
        ..small()
    };
    let mut spool = Spool::open(dir.path(), config.clone())?;
    append_n(&mut spool, 1, 9)?;
    spool.ack(2)?;
    let cached = all(&spool)?;
    drop(spool);
    let reopened = Spool::open(dir.path(), config)?;
    assert_eq!(all(&reopened)?, cached);
    assert_eq!(seqs(&cached), (3..=9).collect::<Vec<_>>());
    Ok(())
}

/// What a failed writeback can leave: the kernel dropped the pages (or
/// kept them, marked clean) and the disk holds what was there before.
/// Stood in for by writing zeros over the records behind the spool's back.
fn lose_pages(path: &Path, offset: u64, len: u64) -> TestResult {
    overwrite_at(path, offset, &vec![0u8; usize::try_from(len)?])
}

#[test]
fn writes_a_failed_sync_was_to_cover_are_written_again_before_a_sync_counts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = deferred();
    let mut spool = Spool::open(dir.path(), config.clone())?;
    append_n(&mut spool, 1, 3)?;
    spool.sync()?;
    append_n(&mut spool, 4, 6)?;
    let seg = segment_paths(dir.path())?.pop().ok_or("no segment")?;

    // Through a handle, as the agent syncs: it fails.
    let (_handle, _token) = spool.sync_handle()?.ok_or("nothing to sync")?;
    spool.sync_failed();
    lose_pages(&seg, 3 * frame(34), 3 * frame(34))?;
    append_n(&mut spool, 7, 7)?;
    // The next sync (through a handle here) writes 4..6 again first.
    let (handle, token) = spool.sync_handle()?.ok_or("nothing to sync")?;
    handle.sync_data()?;
    assert!(spool.synced(token));
    assert!(!spool.needs_sync());
    drop(spool);
    let spool = Spool::open(dir.path(), config.clone())?;
    assert_eq!(seqs(&all(&spool)?), (1..=7).collect::<Vec<_>>());
    assert!(spool.set_aside().is_empty());
    drop(spool);

    // The same through `sync`, which also fails once.
    let mut spool = Spool::open(dir.path(), config.clone())?;
    append_n(&mut spool, 8, 9)?;
    spool.fail_next_sync = true;
    assert!(spool.sync().is_err());
    assert!(spool.needs_sync());
    lose_pages(&seg, 7 * frame(34), 2 * frame(34))?;
    spool.sync()?;
    drop(spool);
    let spool = Spool::open(dir.path(), config)?;
    assert_eq!(seqs(&all(&spool)?), (1..=9).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn a_sync_that_succeeded_leaves_nothing_to_write_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = deferred();
    let mut spool = Spool::open(dir.path(), config)?;
    append_n(&mut spool, 1, 3)?;
    let (handle, token) = spool.sync_handle()?.ok_or("nothing to sync")?;
    // Written while the handle syncs: not covered by it.
    append_n(&mut spool, 4, 4)?;
    handle.sync_data()?;
    assert!(spool.synced(token));
    assert_eq!(spool.pending.from, 3 * frame(34));
    assert_eq!(
        spool.pending.frames.len() as u64,
        frame(34),
        "record 4 only"
    );
    assert!(spool.needs_sync());
    spool.sync()?;
    assert!(spool.pending.frames.is_empty());
    Ok(())
}

#[test]
fn a_handle_sync_does_not_count_when_another_sync_failed_meanwhile() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = deferred();
    let mut spool = Spool::open(dir.path(), config.clone())?;
    append_n(&mut spool, 1, 3)?;
    let seg = segment_paths(dir.path())?.pop().ok_or("no segment")?;
    let (handle, token) = spool.sync_handle()?.ok_or("nothing to sync")?;
    // While the handle syncs, a sync in the spool (at a segment's end, at
    // shutdown) is the one told of the failure; the handle's then succeeds.
    spool.fail_next_sync = true;
    assert!(spool.sync().is_err());
    lose_pages(&seg, 0, 3 * frame(34))?;
    handle.sync_data()?;
    assert!(!spool.synced(token), "another sync failed meanwhile");
    assert!(spool.needs_sync(), "the handle's sync does not count");
    spool.sync()?;
    assert!(!spool.needs_sync());
    drop(spool);
    let spool = Spool::open(dir.path(), config)?;
    assert_eq!(seqs(&all(&spool)?), vec![1, 2, 3]);
    Ok(())
}

/// A handle given out when nothing was waiting to be rewritten (a failed
/// sync after a good one) covers nothing written after it: its sync drops
/// no later write's copy (once, it worked out what it covered from where
/// the synced writes had begun, and subtracted past zero).
#[test]
fn a_handle_given_out_with_nothing_pending_covers_no_later_write() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = deferred();
    let mut spool = Spool::open(dir.path(), config)?;
    append_n(&mut spool, 1, 3)?;
    spool.sync()?;
    // A handle's sync failed meanwhile: nothing is left to write again,
    // but the next sync must not count as done before it has happened.
    spool.sync_failed();
    let (handle, token) = spool.sync_handle()?.ok_or("a sync is due")?;
    append_n(&mut spool, 4, 5)?;
    handle.sync_data()?;
    assert!(spool.synced(token));
    assert_eq!(
        spool.pending.frames.len() as u64,
        2 * frame(34),
        "the writes after the handle keep their copy"
    );
    assert!(spool.needs_sync());
    spool.sync()?;
    assert!(!spool.needs_sync());
    Ok(())
}

/// An append that failed, and whose trim failed too, leaves its frames in
/// the segment; a sync first trims them (retrying the trim), so they are
/// never made durable and read back as records after a restart.
#[test]
fn a_sync_trims_a_failed_append_before_it_syncs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = deferred();
    let mut spool = Spool::open(dir.path(), config.clone())?;
    append_n(&mut spool, 1, 3)?;
    let seg = segment_paths(dir.path())?.pop().ok_or("no segment")?;
    // What a failed append of record 4 left behind, whole, with its trim
    // failed.
    let mut failed = Vec::new();
    frame::encode(&mut failed, 4, u32::try_from(rec(4).len())?, &rec(4));
    append_to(&seg, &failed)?;
    spool.needs_repair = true;
    spool.sync()?;
    assert!(!spool.needs_repair);
    assert_eq!(fs::metadata(&seg)?.len(), 3 * frame(34));
    // The same through the sync thread's handle.
    append_to(&seg, &failed)?;
    spool.needs_repair = true;
    assert!(
        spool.sync_handle()?.is_none(),
        "nothing else waits for a sync"
    );
    assert_eq!(fs::metadata(&seg)?.len(), 3 * frame(34));
    drop(spool);
    let spool = Spool::open(dir.path(), config)?;
    assert_eq!(seqs(&all(&spool)?), vec![1, 2, 3]);
    Ok(())
}

fn append_to(path: &Path, bytes: &[u8]) -> TestResult {
    use std::io::Write as _;
    fs::OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(bytes)?;
    Ok(())
}
