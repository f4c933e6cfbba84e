//! The crate's single error type.

use std::path::PathBuf;

use crate::Lsn;

/// Every error the WAL reports. Variants are stable so callers can match on them.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An operating-system I/O call failed on `path`. Nothing is poisoned by this
    /// variant alone; see [`WalError::Poisoned`] for failed `fdatasync`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// File or directory the failing call was made on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Retained WAL is damaged: a record that fails its checks where the log must be
    /// valid. `offset` is the byte offset inside `file`.
    #[error("WAL corruption in {} at byte offset {offset}: {reason}", file.display())]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage inside `file`.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The file system ran out of space (or quota) while the WAL prepared a file: a
    /// new segment (`fallocate`) or the term history. Nothing of the log was written
    /// or changed; the operation can be retried and succeeds once space is freed.
    #[error("no space left on device to prepare WAL file {}", path.display())]
    NoSpace {
        /// The segment that could not be allocated.
        path: PathBuf,
    },
    /// An earlier `fdatasync` failed. The kernel may have dropped the dirty pages, so
    /// nothing written since the last successful flush can be trusted: every later
    /// append and flush fails. Restart the process to recover from what is durable.
    #[error("WAL is poisoned by an earlier failed fdatasync ({cause}); restart to recover from durable state")]
    Poisoned {
        /// The error of the failed fdatasync.
        cause: String,
    },
    /// The requested LSN lies below the oldest retained record.
    #[error("LSN {requested} is no longer retained (oldest retained LSN is {first})")]
    NotRetained {
        /// What was asked for.
        requested: Lsn,
        /// The oldest retained LSN at the time of the call.
        first: Lsn,
    },
    /// A caller passed something the WAL cannot accept (the message says what).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WalError::Io {
            path: path.into(),
            source,
        }
    }
}
