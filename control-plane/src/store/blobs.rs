//! Content-addressed blobs: large recorded payloads (an event's attributes
//! once they exceed the inline threshold) kept outside the database.
//!
//! [`BlobStore`] is the interface; [`FsBlobStore`] keeps blobs as files on
//! the local filesystem (the default), and an object store can implement
//! the same three calls later. A blob's address is the SHA-256 of its
//! content, so storing the same bytes twice is one blob, and a reader can
//! tell a corrupt blob from a good one without trusting the backend: the
//! store checks every blob it reads against its address
//! ([`super::Store`]'s reading side), so implementations need not.

use std::{
    fmt,
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use futures::future::BoxFuture;

/// Largest blob a reader accepts; anything larger is treated as corrupt
/// rather than read into memory (recorded results are capped far below).
pub const MAX_BLOB_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob storage I/O error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("blob {0} is larger than {MAX_BLOB_BYTES} bytes")]
    TooLarge(BlobId),
    #[error("blob storage task failed: {0}")]
    Task(String),
}

/// A blob's content address: the lowercase hex SHA-256 of its bytes.
/// Parsed strictly (64 hex digits), since it comes back from the database
/// and becomes a file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(String);

impl BlobId {
    /// The address of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            data,
        )))
    }

    /// Accepts exactly 64 lowercase hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", self.0)
    }
}

/// Where blobs live. Implementations store bytes under the address the
/// caller computed ([`BlobId::of`]); they do not check content.
pub trait BlobStore: fmt::Debug + Send + Sync {
    /// Stores `data` under `id` durably before returning. Storing a blob
    /// that is already present is not an error.
    fn put<'a>(&'a self, id: &'a BlobId, data: &'a [u8]) -> BoxFuture<'a, Result<(), BlobError>>;

    /// The blob's bytes, or `None` if there is no such blob.
    fn get<'a>(&'a self, id: &'a BlobId) -> BoxFuture<'a, Result<Option<Vec<u8>>, BlobError>>;

    /// Deletes the blob; deleting an absent blob is not an error.
    fn delete<'a>(&'a self, id: &'a BlobId) -> BoxFuture<'a, Result<(), BlobError>>;
}

/// Blobs as files: `<root>/ab/cdef…` for address `abcdef…` (the first two
/// hex digits fan the files out over 256 directories). Each file is
/// written to a temporary name, fsynced, renamed into place and its
/// directory fsynced, so a crash leaves either the whole blob or none
/// (possibly a stray `.tmp-*` file, which is never read).
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: Arc<PathBuf>,
}

impl FsBlobStore {
    /// Blobs under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: Arc::new(root.into()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `id`.
    pub fn path_of(&self, id: &BlobId) -> PathBuf {
        let (dir, rest) = id.as_str().split_at(2);
        self.root.join(dir).join(rest)
    }
}

fn io_error(path: &Path, source: std::io::Error) -> BlobError {
    BlobError::Io {
        path: path.display().to_string(),
        source,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlobError::Task(e.to_string()))?
}

fn read_file(path: &Path, id: &BlobId) -> Result<Option<Vec<u8>>, BlobError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    };
    let len = file.metadata().map_err(|e| io_error(path, e))?.len();
    if len > MAX_BLOB_BYTES {
        return Err(BlobError::TooLarge(id.clone()));
    }
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_BLOB_BYTES + 1),
        &mut data,
    )
    .map_err(|e| io_error(path, e))?;
    if data.len() as u64 > MAX_BLOB_BYTES {
        return Err(BlobError::TooLarge(id.clone()));
    }
    Ok(Some(data))
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), BlobError> {
    let dir = path
        .parent()
        .ok_or_else(|| io_error(path, std::io::Error::other("blob path has no directory")))?;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| io_error(dir, e))?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        // Blobs are audit records and recordings: the owner's only.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(path, e));
    }
    // The rename is durable once the directory entry is.
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))?;
    Ok(())
}

impl BlobStore for FsBlobStore {
    fn put<'a>(&'a self, id: &'a BlobId, data: &'a [u8]) -> BoxFuture<'a, Result<(), BlobError>> {
        let path = self.path_of(id);
        let id = id.clone();
        let data = data.to_vec();
        Box::pin(blocking(move || {
            // Redelivered events store the same blob again: keep an intact
            // copy, replace a damaged one.
            if let Ok(Some(existing)) = read_file(&path, &id)
                && existing == data
            {
                return Ok(());
            }
            write_file(&path, &data)
        }))
    }

    fn get<'a>(&'a self, id: &'a BlobId) -> BoxFuture<'a, Result<Option<Vec<u8>>, BlobError>> {
        let path = self.path_of(id);
        let id = id.clone();
        Box::pin(blocking(move || read_file(&path, &id)))
    }

    fn delete<'a>(&'a self, id: &'a BlobId) -> BoxFuture<'a, Result<(), BlobError>> {
        let path = self.path_of(id);
        Box::pin(blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&path, e)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strict_hex_sha256() {
        let id = BlobId::of(b"abc");
        assert_eq!(
            id.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(BlobId::parse(id.as_str()), Some(id.clone()));
        for bad in [
            "",
            "../../etc/passwd",
            &id.as_str().to_uppercase(),
            &id.as_str()[1..],
            &format!("{}0", id.as_str()),
            &format!("{}/", &id.as_str()[..63]),
        ] {
            assert_eq!(BlobId::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn files_round_trip_and_are_laid_out_by_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = FsBlobStore::new(dir.path().join("blobs"));
        let data = b"{\"result\": 1}".to_vec();
        let id = BlobId::of(&data);
        assert_eq!(blobs.get(&id).await.expect("get"), None);
        blobs.put(&id, &data).await.expect("put");
        blobs.put(&id, &data).await.expect("put again");
        let path = dir
            .path()
            .join("blobs")
            .join(&id.as_str()[..2])
            .join(&id.as_str()[2..]);
        assert_eq!(blobs.path_of(&id), path);
        assert_eq!(std::fs::read(&path).expect("file"), data);
        assert_eq!(blobs.get(&id).await.expect("get"), Some(data.clone()));
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");

        // A damaged copy is replaced when the blob is stored again.
        std::fs::write(&path, b"garbage").expect("damage");
        blobs.put(&id, &data).await.expect("put");
        assert_eq!(blobs.get(&id).await.expect("get"), Some(data));

        blobs.delete(&id).await.expect("delete");
        blobs.delete(&id).await.expect("delete again");
        assert_eq!(blobs.get(&id).await.expect("get"), None);
    }
}
