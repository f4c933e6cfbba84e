//! `failover`: terms, votes, elections, fencing and switchover as a sans-IO state
//! machine (Raft's election rules over a PostgreSQL-style log).
//!
//! # Shape
//!
//! [`Node`] is a pure state machine: the driver passes the time (`now_ms`) and an
//! [`Event`] to [`Node::step`] and executes the returned [`Action`]s **in order**.
//! No I/O, no clock, no threads; randomness comes from [`Config::seed`]. The tokio
//! driver in `bin/` owns sockets, the [`VoteStore`] and the timer:
//!
//! ```text
//! loop {
//!     wait for: a failover message | an admin command | a log/flush/standby change
//!           | the clock reaching node.next_deadline_ms()
//!     for action in node.step(now_ms, event) {
//!         PersistState(s)   => vote_store.save(&s)?   // fsync BEFORE the next action
//!         Send{to, msg}     => queue msg.encode() to `to` (proto::Failover frame)
//!         BecomeLeader      => write TERM_START, start shippers, accept writes
//!         BecomeFollower    => stop acknowledging writes; replicate from `leader`
//!         Fence             => fail waiting writes as "outcome unknown"; status `fenced`
//!         LostWrites        => log ERROR with the range, bump the lost-writes counter
//!         AdminRefused      => answer the admin request with the reason
//!     }
//!     publish node.accepting_writes(), role(), term(), leader_id(), paused()
//! }
//! ```
//!
//! If `save` fails the driver must stop (never send what depends on an unsaved vote);
//! restarting from the store is always safe.
//!
//! # Rules implemented
//!
//! * One vote per term, persisted before it is sent; a vote only for a candidate whose
//!   `(last_term, last_lsn)` is at least the voter's (unless forced).
//! * A majority of *configured* members elects; a single member elects itself.
//! * Pre-vote (term + 1 asked, nobody's state changes) before a real election.
//! * Leader lease at voters (check-quorum on): no (pre-)vote while a leader was heard
//!   within the lease, unless the request is a transfer/manual failover.
//! * Check-quorum: a leader that cannot hear a majority for the CQ window emits `Fence`
//!   and steps down (when automatic failover is on and not paused).
//! * Any higher term is adopted (step down) except from a pre-vote request, a granted
//!   pre-vote answer, or a vote request refused under the lease.
//! * Priority 0 never stands (unless forced); the leader announces a succession order
//!   (most up-to-date log, then priority) and followers stand in that order, a
//!   heartbeat apart: no split-vote tail (see [`Timing`]).
//! * Automatic failover off or paused: nobody stands on a timeout; only `Campaign`
//!   and `TimeoutNow`. The pause flag is cluster-wide, persisted, sent in heartbeats.
//! * Modes: `sync` — only the last leader or a member of the last non-empty list of
//!   synchronous standbys may stand and get votes; `async` — a node more than
//!   `max_lag_bytes` behind the last leader flush LSN it heard does not stand nor get
//!   votes, and a leader elected behind that LSN emits `LostWrites`; `quorum` — Raft.
//! * Leadership transfer: the leader stops accepting writes, sends `TimeoutNow` once the
//!   target's acked log reaches its own; abandoned after the election timeout.
//!
//! # Message encoding (version 1)
//!
//! All integers big-endian. `str` = `u16 len` (<= 255) + UTF-8 bytes; `list` =
//! `u16 count` (<= 64) + `count` × `str`; `bool` = one byte, 0 or 1 only.
//! A message occupies its whole buffer (trailing bytes are an error).
//!
//! ```text
//! byte 0   version = 1
//! byte 1   tag
//! tag 1 VoteRequest   u64 term | str candidate | u64 last_term | u64 last_lsn
//!                     | u8 flags (bit0 pre_vote, bit1 transfer, bit2 force; others 0)
//! tag 2 VoteResponse  u64 term | bool granted | bool pre_vote | u8 reject_reason (0 = none,
//!                     else Refusal::code)
//! tag 3 Heartbeat     u64 term | str leader | u64 leader_flush_lsn | bool paused
//!                     | list sync_standbys | list succession
//! tag 4 HeartbeatAck  u64 term | u64 last_term | u64 last_lsn
//! tag 5 TimeoutNow    u64 term
//! tag 6 SetPaused     u64 term | bool paused
//! ```
//!
//! The vote store file layout is in [`store`].

pub mod config;
pub mod error;
pub mod message;
mod node;
mod rng;
pub mod store;
pub mod types;

pub use config::{Config, Member, ReplicationMode, Timing, MAX_ID_LEN, MAX_MEMBERS};
pub use error::FailoverError;
pub use message::{Message, MESSAGE_VERSION};
pub use node::{Action, AdminCommand, Event, Node};
pub use store::VoteStore;
pub use types::{LogPosition, PersistentState, Refusal, Role};
