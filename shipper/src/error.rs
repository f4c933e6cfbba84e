//! The crate's one error type.

use std::fmt;

use crate::gate::AckLevel;

/// Formats a `u64` LSN as PostgreSQL does: `X/X`, high and low 32 bits in hex.
///
/// (The `wal` crate's `Lsn` has the same `Display`; this crate keeps plain `u64`s.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LsnDisplay(pub u64);

impl fmt::Display for LsnDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Everything that can go wrong in `shipper`.
///
/// Every message names the offending input (config value, LSN, ack level) so an operator can
/// act on it without reading the code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShipperError {
    /// `replication.standbys` is not valid `synchronous_standby_names` syntax.
    #[error("replication.standbys {input:?}: {problem} (at character {pos})")]
    StandbysSyntax {
        /// The value as configured.
        input: String,
        /// 1-based character position of the problem.
        pos: usize,
        /// What is wrong, in words.
        problem: String,
    },
    /// `replication.standbys` parses but cannot work with this cluster (count, unknown member).
    #[error("replication.standbys {input:?}: {problem}")]
    StandbysInvalid {
        /// The value as configured (or the default that was derived).
        input: String,
        /// What is wrong, in words.
        problem: String,
    },
    /// `replication.mode` is not one of the known modes.
    #[error("unknown replication mode {0:?} (expected async, sync or quorum)")]
    UnknownMode(String),
    /// An ack level string is not one of the known levels.
    #[error(
        "unknown ack level {0:?} (expected local, remote_write, remote_flush or remote_apply)"
    )]
    UnknownAckLevel(String),
    /// A follower state string is not one of the known states.
    #[error("unknown follower state {0:?} (expected starting, catchup, streaming, disconnected, needs_rebuild, rebuilding or stopping)")]
    UnknownFollowerState(String),
    /// A commit waiter was released without its write being acknowledged: the leader stepped
    /// down or fenced itself, or the gate was dropped. The write may or may not be committed;
    /// the client must treat it as "outcome unknown" (and may retry idempotently or read back).
    #[error("write ending at LSN {} (ack {level}): outcome unknown, {reason}; the write may still be committed", LsnDisplay(*.lsn))]
    OutcomeUnknown {
        /// The LSN the waiter was waiting for.
        lsn: u64,
        /// The ack level it was waiting for.
        level: AckLevel,
        /// Why it was released.
        reason: String,
    },
}

/// `Result` with [`ShipperError`].
pub type Result<T> = std::result::Result<T, ShipperError>;
