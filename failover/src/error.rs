//! The one error enum of the `failover` crate.

use std::path::PathBuf;

/// Everything that can go wrong in `failover`: a malformed message, a bad
/// configuration, or the vote store on disk (I/O error vs. a corrupt/torn file).
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// A failover message could not be decoded; `offset` is the byte where decoding stopped.
    #[error("malformed failover message at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset in the input where the problem was found.
        offset: usize,
        /// What was wrong (truncated field, unknown tag, bad flag, ...).
        reason: &'static str,
    },
    /// The configuration breaks a rule (named in `reason`); the node must not start.
    #[error("invalid failover config: {reason}")]
    InvalidConfig {
        /// Which rule the configuration breaks, with the offending value.
        reason: String,
    },
    /// An I/O call on the vote store failed (`op` names the call).
    #[error("vote store {path}: {op} failed: {source}")]
    Io {
        /// File or directory the call was made on.
        path: PathBuf,
        /// The failed operation (open, write, fsync, rename, ...).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The vote store file exists but is damaged (torn write, bad CRC, bad magic):
    /// the node refuses to start rather than forget a vote it may have sent.
    #[error("vote store {path} is corrupt: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
}
