//! `shipper`: the leader side of replication — follower progress, replication lag and the
//! commit gate that decides when a write is acknowledged.
//!
//! This part of the crate is sans-IO (no sockets, no clocks, no runtime): callers feed it
//! positions and times and await its answers. The network senders (one task per follower,
//! streaming WAL from the LSN it asks for) will be added to this crate later and drive these
//! modules:
//!
//! * [`standbys`]: `[replication] mode` + PostgreSQL `synchronous_standby_names` syntax →
//!   [`StandbyPolicy`] ([`parse_standbys`], [`resolve_policy`]).
//! * [`gate`]: [`CommitGate`] / [`SharedGate`] — commit LSN per [`AckLevel`] and commit waiters.
//! * [`progress`]: [`Progress`] — per-follower LSNs, lag in bytes and time, [`FollowerState`].
//!
//! # Commit gate rules
//!
//! `local` is the leader's flush LSN (its write LSN when `wal.sync = never`). A standby's LSN
//! "at a level" is its write / flush / apply LSN, normalised so `write >= flush >= apply`.
//! Only *connected* standbys listed by the policy (`*` matches any) count; the caller marks a
//! follower connected when it is `streaming` (or `stopping`), as PostgreSQL does.
//!
//! | mode / policy | `local` | `remote_write`, `remote_flush`, `remote_apply` | when fewer than k standbys are connected |
//! |---|---|---|---|
//! | `async` (no policy) | local | local | never waits for standbys |
//! | `sync`: `FIRST k (a, b, …)` | local | `min(local, min of the level's LSN over the k connected standbys earliest in the list)` — these are `sync`, other listed ones `potential` | commit does not advance; writes wait (as PostgreSQL) |
//! | `quorum`: `ANY k (a, b, …)` | local | `min(local, k-th highest LSN at the level among connected listed standbys)` — all listed are `quorum` | commit does not advance; writes wait |
//!
//! * The published commit per level is the maximum of every value computed so far: it never
//!   goes backwards (a follower reconnecting with lower LSNs cannot move it back).
//! * The cluster's commit LSN — shown in /status, shipped to followers, the limit of what
//!   every node applies — is the `remote_flush` commit (`local` in async mode).
//! * A waiter for LSN `L` (the end of its record) at a level is released exactly once, when
//!   that level's commit reaches `L`, in LSN order; or with "outcome unknown" by `fail_all`
//!   (leader stepped down / fenced). A caller's timeout (`ack_timeout`) drops the wait: the
//!   outcome is unknown too — the write may still commit.
//!
//! # Use from async code
//!
//! ```
//! use shipper::{AckLevel, CommitGate, FollowerPosition, Progress, SharedGate, resolve_policy,
//!               ReplicationMode, FollowerState};
//! # let members = vec!["n1".to_string(), "n2".to_string(), "n3".to_string()];
//! let policy = resolve_policy(ReplicationMode::Quorum, None, "n1", &members).unwrap();
//! let gate = SharedGate::new(CommitGate::new(policy, false));
//! let mut progress = Progress::new();
//!
//! // Writer task: append, then wait (in real code: tokio::time::timeout(ack_timeout, wait)).
//! let end_lsn = 100;
//! progress.record_local_write(end_lsn, 1_000);
//! gate.update_leader(end_lsn, end_lsn); // after the group-commit flush
//! let mut wait = gate.register(end_lsn, AckLevel::RemoteFlush);
//! assert!(wait.try_result().is_none()); // no standby has it yet
//!
//! // Sender task of n2: a FollowerStatus arrived.
//! let f = progress.on_status("n2", 100, 100, 100, 1_500);
//! assert_eq!(f.flush_lag_us(), Some(500));
//! progress.set_state("n2", FollowerState::Streaming);
//! gate.update_follower("n2", progress.follower("n2").unwrap().gate_position());
//! assert_eq!(wait.try_result(), Some(Ok(100))); // `wait.await` in async code
//! assert_eq!(gate.commit_lsn(), 100);
//! ```

pub mod error;
pub mod gate;
pub mod progress;
pub mod sender;
pub mod standbys;

pub use error::{LsnDisplay, Result, ShipperError};
pub use gate::{
    AckLevel, CommitGate, Commits, FollowerPosition, Released, SharedGate, SyncState, WaitHandle,
    WaitResult,
};
pub use progress::{FollowerProgress, FollowerReport, FollowerState, LagTracker, Progress};
pub use standbys::{parse_standbys, resolve_policy, ReplicationMode, StandbyPolicy, SyncMethod};
