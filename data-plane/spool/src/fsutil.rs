//! Small filesystem helpers whose point is durability of directory entries.

use std::fs;
use std::io;
use std::path::Path;

use crate::SpoolError;

/// Options for creating a file only its owner may read or write: the
/// spool holds audit records (statements and their parameter values).
pub(crate) fn private_file() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Makes creations, renames and removals inside `dir` durable.
///
/// `fdatasync` on a file does not persist the directory entry that names it:
/// without this, a freshly created segment or a renamed `acked` file could
/// vanish in a power cut even though its contents were synced.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    #[cfg(unix)]
    {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| SpoolError::io(format!("syncing directory {}", dir.display()), e))
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened for syncing on this platform; its
        // filesystems journal metadata on their own.
        let _ = dir;
        Ok(())
    }
}

/// Creates `dir` and any missing parents, and makes their entries durable,
/// so an acknowledged append can never disappear with its directory.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), SpoolError> {
    // Remember which ancestors are new: each one's parent needs a sync.
    let mut created = Vec::new();
    let mut cursor = Some(dir);
    while let Some(p) = cursor {
        if p.as_os_str().is_empty() || exists(p)? {
            break;
        }
        created.push(p);
        cursor = p.parent();
    }
    if created.is_empty() {
        return check_is_dir(dir);
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| SpoolError::io(format!("creating spool directory {}", dir.display()), e))?;
    for p in created {
        if let Some(parent) = p.parent().filter(|q| !q.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

fn exists(p: &Path) -> Result<bool, SpoolError> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SpoolError::io(format!("inspecting {}", p.display()), e)),
    }
}

fn check_is_dir(dir: &Path) -> Result<(), SpoolError> {
    let meta = fs::metadata(dir)
        .map_err(|e| SpoolError::io(format!("inspecting spool directory {}", dir.display()), e))?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(SpoolError::io(
            format!("opening spool directory {}", dir.display()),
            io::Error::new(
                io::ErrorKind::NotADirectory,
                "path exists and is not a directory",
            ),
        ))
    }
}
