//! Small filesystem helpers: atomic replacement and private files.

use std::{io::Write as _, path::Path};

use anyhow::Context as _;

/// Writes `data` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    write_with_mode(path, data, 0o644)
}

/// Like [`write_atomic`], readable by the owner only.
pub fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    write_with_mode(path, data, 0o600)
}

fn write_with_mode(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}
