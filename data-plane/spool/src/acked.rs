//! The `acked` file: the highest sequence number the control plane has
//! confirmed.
//!
//! It is plain ASCII decimal so an operator can read it, and it is only ever
//! replaced by rename, so a crash leaves either the old or the new value,
//! never a mix. Segments are deleted only after the new value is durable.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::SpoolError;
use crate::fsutil::sync_dir;

pub(crate) const FILE_NAME: &str = "acked";
const ACKED_TMP: &str = "acked.tmp";
/// Longer than any valid content (20 digits and a newline, plus slack), so
/// a damaged file cannot make us read an arbitrary amount.
const MAX_ACKED_FILE_LEN: u64 = 64;

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Reads the acknowledged sequence; a spool that never acked anything has
/// no file and reads as 0.
pub(crate) fn read(dir: &Path) -> Result<u64, SpoolError> {
    let path = path(dir);
    let file = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(SpoolError::io(format!("opening {}", path.display()), e)),
    };
    let mut text = String::new();
    file.take(MAX_ACKED_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|e| SpoolError::io(format!("reading {}", path.display()), e))?;
    if text.len() as u64 > MAX_ACKED_FILE_LEN {
        return Err(SpoolError::corrupt(&path, 0, "acked file is too long"));
    }
    let digits = text.trim_end_matches('\n');
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpoolError::corrupt(
            &path,
            0,
            "acked file does not hold a decimal sequence number",
        ));
    }
    digits
        .parse::<u64>()
        .map_err(|_| SpoolError::corrupt(&path, 0, "acked sequence number is out of range"))
}

/// Atomically replaces the acknowledged sequence and makes it durable.
pub(crate) fn write(dir: &Path, seq: u64) -> Result<(), SpoolError> {
    let tmp = dir.join(ACKED_TMP);
    let dst = path(dir);
    let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
    let mut file = crate::fsutil::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| SpoolError::io(ctx("creating", &tmp), e))?;
    file.write_all(format!("{seq}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| SpoolError::io(ctx("writing", &tmp), e))?;
    drop(file);
    fs::rename(&tmp, &dst).map_err(|e| {
        SpoolError::io(
            format!("renaming {} to {}", tmp.display(), dst.display()),
            e,
        )
    })?;
    sync_dir(dir)
}

/// Removes a temp file left by a crash in the middle of [`write`]; the
/// previous `acked` file is still authoritative.
pub(crate) fn remove_stale_tmp(dir: &Path) -> Result<(), SpoolError> {
    let tmp = dir.join(ACKED_TMP);
    match fs::remove_file(&tmp) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SpoolError::io(format!("removing {}", tmp.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_reads_as_zero_and_writes_round_trip() -> Result<(), SpoolError> {
        let dir = tempfile::tempdir().map_err(|e| SpoolError::io("tempdir", e))?;
        assert_eq!(read(dir.path())?, 0);
        write(dir.path(), 12345)?;
        assert_eq!(read(dir.path())?, 12345);
        write(dir.path(), u64::MAX - 1)?;
        assert_eq!(read(dir.path())?, u64::MAX - 1);
        assert!(!dir.path().join(ACKED_TMP).exists());
        Ok(())
    }

    #[test]
    fn garbage_is_corrupt() -> Result<(), SpoolError> {
        let dir = tempfile::tempdir().map_err(|e| SpoolError::io("tempdir", e))?;
        for bad in [
            "",
            "12a\n",
            "-1\n",
            "99999999999999999999999\n",
            &"1".repeat(100),
        ] {
            fs::write(path(dir.path()), bad).map_err(|e| SpoolError::io("write", e))?;
            assert!(
                matches!(read(dir.path()), Err(SpoolError::Corrupt { .. })),
                "{bad:?} should be corrupt"
            );
        }
        Ok(())
    }
}
