//! Stable numeric codes carried on the wire: [`ErrorCode`] and [`AckLevel`].
//!
//! Invariant: a code, once assigned, never changes meaning. New codes get new
//! numbers; a peer that does not know a number keeps it as
//! [`ErrorCode::Unknown`] instead of failing.

use std::fmt;
use std::str::FromStr;

/// Why something failed: carried in `Error` frames and client error results as a
/// `u16`. [`ErrorCode::as_str`] gives the JSON `code` string of the HTTP API
/// (docs/INTERFACE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1 — this node is not the leader (the response may carry a leader hint).
    NotLeader,
    /// 2 — the write was appended but not acknowledged at its level in time.
    AckTimeout,
    /// 3 — a read's `min_lsn` was not applied within its wait.
    WaitTimeout,
    /// 4 — the key does not exist (for APIs that report absence as an error).
    NotFound,
    /// 5 — the requested WAL position is no longer (or not yet) retained: rebuild.
    WalNotAvailable,
    /// 6 — the follower's log diverged from the leader's and cannot be fixed by truncation.
    Diverged,
    /// 7 — the request or frame was malformed or out of place.
    BadRequest,
    /// 8 — missing or wrong token.
    Unauthorized,
    /// 9 — the peer belongs to another cluster.
    WrongCluster,
    /// 10 — the peer's node id is not a configured member.
    UnknownMember,
    /// 11 — the peer speaks another protocol version.
    VersionMismatch,
    /// 12 — a frame exceeded the receiver's limit.
    FrameTooLarge,
    /// 13 — the leader fenced itself (cannot hear a majority): no writes.
    Fenced,
    /// 14 — the node is shutting down.
    ShuttingDown,
    /// 15 — an internal error on the node (details in its log).
    Internal,
    /// 16 — the node is being rebuilt from the leader's checkpoint: it serves no reads.
    Rebuilding,
    /// 17 — the node has no connection slot left for this peer (`limits.max_connections`).
    TooManyConnections,
    /// 18 — a key, value or request body exceeds the node's limit (`limits.max_key_bytes`, ...).
    TooLarge,
    /// 19 — the node's WAL failed (an fsync/fdatasync error): it acknowledges no write
    /// until it is restarted on a healthy disk. A write refused with it was not
    /// written; a write that was waiting when the WAL failed gets `AckTimeout`
    /// (outcome unknown) instead.
    WalFailed,
    /// 20 — the disk is full: the WAL could not allocate its next segment. The write
    /// was not written; retry once space is freed (no restart needed).
    NoSpace,
    /// Any other number: sent by a newer peer. Kept so it can be logged and relayed.
    Unknown(u16),
}

impl ErrorCode {
    /// Every known code, in numeric order (for tests and documentation).
    pub const KNOWN: [ErrorCode; 20] = [
        ErrorCode::NotLeader,
        ErrorCode::AckTimeout,
        ErrorCode::WaitTimeout,
        ErrorCode::NotFound,
        ErrorCode::WalNotAvailable,
        ErrorCode::Diverged,
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::WrongCluster,
        ErrorCode::UnknownMember,
        ErrorCode::VersionMismatch,
        ErrorCode::FrameTooLarge,
        ErrorCode::Fenced,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::Rebuilding,
        ErrorCode::TooManyConnections,
        ErrorCode::TooLarge,
        ErrorCode::WalFailed,
        ErrorCode::NoSpace,
    ];

    /// The wire number. `from_u16(c.to_u16()) == c` for every code produced by `from_u16`.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::NotLeader => 1,
            ErrorCode::AckTimeout => 2,
            ErrorCode::WaitTimeout => 3,
            ErrorCode::NotFound => 4,
            ErrorCode::WalNotAvailable => 5,
            ErrorCode::Diverged => 6,
            ErrorCode::BadRequest => 7,
            ErrorCode::Unauthorized => 8,
            ErrorCode::WrongCluster => 9,
            ErrorCode::UnknownMember => 10,
            ErrorCode::VersionMismatch => 11,
            ErrorCode::FrameTooLarge => 12,
            ErrorCode::Fenced => 13,
            ErrorCode::ShuttingDown => 14,
            ErrorCode::Internal => 15,
            ErrorCode::Rebuilding => 16,
            ErrorCode::TooManyConnections => 17,
            ErrorCode::TooLarge => 18,
            ErrorCode::WalFailed => 19,
            ErrorCode::NoSpace => 20,
            ErrorCode::Unknown(n) => n,
        }
    }

    /// Maps a wire number to a code; numbers this build does not know become
    /// [`ErrorCode::Unknown`] (never an error: forward compatibility).
    pub fn from_u16(n: u16) -> ErrorCode {
        match n {
            1..=20 => ErrorCode::KNOWN[usize::from(n - 1)],
            other => ErrorCode::Unknown(other),
        }
    }

    /// The stable snake_case string used as `code` in HTTP JSON errors and logs.
    /// [`ErrorCode::Unknown`] gives `"unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::AckTimeout => "ack_timeout",
            ErrorCode::WaitTimeout => "wait_timeout",
            ErrorCode::NotFound => "not_found",
            ErrorCode::WalNotAvailable => "wal_not_available",
            ErrorCode::Diverged => "diverged",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::WrongCluster => "wrong_cluster",
            ErrorCode::UnknownMember => "unknown_member",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::Fenced => "fenced",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::Rebuilding => "rebuilding",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::WalFailed => "wal_failed",
            ErrorCode::NoSpace => "no_space",
            ErrorCode::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Unknown(n) => write!(f, "unknown({n})"),
            known => f.write_str(known.as_str()),
        }
    }
}

/// Error of [`FromStr`] for [`ErrorCode`] and [`AckLevel`]: the string that was not recognised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} (expected one of: {expected})")]
pub struct ParseCodeError {
    /// What was being parsed (`"error code"` or `"ack level"`).
    pub what: &'static str,
    /// The rejected input.
    pub value: String,
    /// The accepted spellings, comma-separated.
    pub expected: &'static str,
}

impl FromStr for ErrorCode {
    type Err = ParseCodeError;

    /// Parses the strings of [`ErrorCode::as_str`] (known codes only).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::KNOWN
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseCodeError {
                what: "error code",
                value: s.to_string(),
                expected: "not_leader, ack_timeout, wait_timeout, not_found, wal_not_available, \
                           diverged, bad_request, unauthorized, wrong_cluster, unknown_member, \
                           version_mismatch, frame_too_large, fenced, shutting_down, internal, \
                           rebuilding, too_many_connections, too_large",
            })
    }
}

/// How far a write must get before it is acknowledged, as PostgreSQL's
/// `synchronous_commit`. Wire: one `u8` ([`AckLevel::to_u8`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AckLevel {
    /// 0 — whatever the node's configured default level (`replication.ack`) is.
    Default,
    /// 1 — on the leader (flushed, unless `wal.sync = never`).
    Local,
    /// 2 — written (not necessarily flushed) by the standbys the policy requires.
    RemoteWrite,
    /// 3 — flushed to stable storage by the standbys the policy requires.
    RemoteFlush,
    /// 4 — applied (visible to reads) by the standbys the policy requires.
    RemoteApply,
}

impl AckLevel {
    /// Every level, in wire-code order.
    pub const ALL: [AckLevel; 5] = [
        AckLevel::Default,
        AckLevel::Local,
        AckLevel::RemoteWrite,
        AckLevel::RemoteFlush,
        AckLevel::RemoteApply,
    ];

    /// The stable wire code.
    pub fn to_u8(self) -> u8 {
        match self {
            AckLevel::Default => 0,
            AckLevel::Local => 1,
            AckLevel::RemoteWrite => 2,
            AckLevel::RemoteFlush => 3,
            AckLevel::RemoteApply => 4,
        }
    }

    /// Maps a wire code back; `None` for codes this build does not know (the
    /// decoder reports those as malformed: a write must not silently get a
    /// weaker guarantee than asked).
    pub fn from_u8(n: u8) -> Option<AckLevel> {
        AckLevel::ALL.get(usize::from(n)).copied()
    }

    /// The config/query-string spelling: `local`, `remote_write`, `remote_flush`,
    /// `remote_apply`, or `default`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckLevel::Default => "default",
            AckLevel::Local => "local",
            AckLevel::RemoteWrite => "remote_write",
            AckLevel::RemoteFlush => "remote_flush",
            AckLevel::RemoteApply => "remote_apply",
        }
    }
}

impl fmt::Display for AckLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AckLevel {
    type Err = ParseCodeError;

    /// Parses the spellings of [`AckLevel::as_str`] (exact, lower case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AckLevel::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| ParseCodeError {
                what: "ack level",
                value: s.to_string(),
                expected: "local, remote_write, remote_flush, remote_apply, default",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_and_strings() {
        for (i, c) in ErrorCode::KNOWN.into_iter().enumerate() {
            assert_eq!(c.to_u16() as usize, i + 1);
            assert_eq!(ErrorCode::from_u16(c.to_u16()), c);
            assert_eq!(c.as_str().parse::<ErrorCode>(), Ok(c));
        }
        assert_eq!(ErrorCode::from_u16(0), ErrorCode::Unknown(0));
        assert_eq!(ErrorCode::from_u16(999), ErrorCode::Unknown(999));
        assert_eq!(ErrorCode::Unknown(999).to_u16(), 999);
        assert_eq!(ErrorCode::Unknown(999).to_string(), "unknown(999)");
        assert_eq!(ErrorCode::NotLeader.to_string(), "not_leader");
        assert!("nope".parse::<ErrorCode>().is_err());
    }

    #[test]
    fn ack_levels_round_trip_and_strings() {
        for l in AckLevel::ALL {
            assert_eq!(AckLevel::from_u8(l.to_u8()), Some(l));
            assert_eq!(l.as_str().parse::<AckLevel>(), Ok(l));
        }
        assert_eq!(AckLevel::from_u8(5), None);
        assert_eq!(
            "remote_flush".parse::<AckLevel>(),
            Ok(AckLevel::RemoteFlush)
        );
        let err = "Remote_Flush".parse::<AckLevel>().unwrap_err();
        assert!(err.to_string().contains("remote_apply"), "{err}");
    }
}
