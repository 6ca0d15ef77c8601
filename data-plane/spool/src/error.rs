//! The spool's error type.

use std::io;
use std::path::PathBuf;

/// Why a spool operation failed.
///
/// Every variant leaves the spool consistent: a failed append assigned no
/// sequence number and left nothing behind that a later read or restart
/// could serve, and a failed ack never loses the previous acknowledgement.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Appending would take the live segments past
    /// [`SpoolConfig::max_bytes`](crate::SpoolConfig::max_bytes). Nothing was
    /// written; space comes back once the control plane acknowledges records.
    #[error(
        "audit spool is full (limit {limit} bytes on disk); \
         space is freed as the control plane acknowledges events"
    )]
    Full {
        /// The configured on-disk limit in bytes.
        limit: u64,
    },

    /// A single record can never fit: it is larger than
    /// [`SpoolConfig::max_record_bytes`](crate::SpoolConfig::max_record_bytes)
    /// or, with its frame header, larger than the whole spool.
    #[error("audit record of {len} bytes exceeds the spool's per-record limit of {limit} bytes")]
    RecordTooLarge {
        /// Payload length of the rejected record.
        len: usize,
        /// Largest payload the spool accepts with its current configuration.
        limit: u64,
    },

    /// The operating system refused an operation. `context` names the
    /// operation and the path.
    #[error("audit spool I/O error while {context}")]
    Io {
        /// What the spool was doing, including the path involved.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The spool's files contain damage that is not a torn final write.
    /// The spool refuses to guess: serving past it could silently drop or
    /// duplicate audit events.
    #[error(
        "audit spool file {} is corrupt at byte {offset}: {reason}; refusing to continue \
         so no unacknowledged event is silently lost (inspect the file or move it aside)",
        path.display()
    )]
    Corrupt {
        /// The damaged file (or the spool directory, for spool-wide problems).
        path: PathBuf,
        /// Byte offset of the damage within `path` (0 when not applicable).
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// The caller acknowledged a sequence number the spool never handed out.
    /// This means the control plane and the agent disagree about the stream,
    /// so nothing is changed.
    #[error("cannot acknowledge sequence {seq}: the last sequence handed out is {last_seq}")]
    AckBeyondEnd {
        /// The sequence number the caller tried to acknowledge.
        seq: u64,
        /// The highest sequence number the spool has assigned.
        last_seq: u64,
    },
}

impl SpoolError {
    /// Wraps an I/O error with a description of the operation and path.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> SpoolError {
        SpoolError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> SpoolError {
        SpoolError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}
