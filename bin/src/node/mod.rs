//! A running walship node: the WAL, the state machine, the role (driven by the
//! failover core), the leader's commit gate and WAL senders, the follower's
//! receiver, the applier, and the listeners.
//!
//! # Who may append to the WAL
//!
//! | role | appender | guarded by |
//! |---|---|---|
//! | leader of term T | the write path ([`Shared::write`]), records of term T | `leader` mutex: an append happens only while `leader` holds the state of term T |
//! | follower | the receiver, bytes of the leader it streams from | the receiver task runs only while the node follows |
//!
//! A role change first stops the old appender (clears `leader` / stops the
//! receiver), then starts the new one, so records of two terms never interleave.

pub mod applier;
pub mod basebackup;
pub mod checkpointer;
pub mod election;
pub mod flusher;
pub mod limits;
pub mod listener;
pub mod pins;
pub mod rebuild;
pub mod replica;
pub mod retention;
pub mod role;
pub mod sampler;
pub mod serve;
pub mod start;
pub mod transitions;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use receiver::state::KvStore;
use shipper::gate::{AckLevel, Commits, SharedGate};
use shipper::progress::Progress;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::metrics::Metrics;
pub use role::{NodeState, Role, RoleInfo};

/// Microseconds since the UNIX epoch (the clock of lag samples and keepalives).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Why a write was not acknowledged. Each maps to an INTERFACE.md error code.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This node is not the leader (`leader`: the leader's id, if known).
    #[error("this node is not the leader")]
    NotLeader {
        /// The leader's id, if known.
        leader: Option<String>,
    },
    /// The leader is fenced or handing over: it takes no writes now.
    #[error(
        "the leader is not accepting writes now (fenced or handing over leadership); retry shortly"
    )]
    NotAccepting,
    /// The write is in the leader's WAL but not acknowledged in time: it may still commit.
    #[error("write at {lsn} not acknowledged at level {level} within {timeout:?}; outcome unknown, it may still commit")]
    AckTimeout {
        /// End LSN of the write.
        lsn: wal::Lsn,
        /// Requested level.
        level: &'static str,
        /// The configured ack timeout.
        timeout: Duration,
    },
    /// The leader stepped down while the write waited: outcome unknown.
    #[error("outcome unknown for the write at {lsn}: {reason}")]
    OutcomeUnknown {
        /// End LSN of the write.
        lsn: wal::Lsn,
        /// Why.
        reason: String,
    },
    /// This node's WAL failed (a failed fsync poisoned it): the write was not
    /// written, and this node acknowledges nothing until it is restarted.
    #[error("this node's WAL failed ({cause}); it acknowledges no write until it is restarted on a healthy disk (write not written)")]
    WalFailed {
        /// The failure (from the WAL).
        cause: String,
    },
    /// The disk is full: the WAL could not allocate its next segment. Nothing was
    /// written; the write succeeds again once space is freed.
    #[error("no space left on the leader's WAL disk (write not written; retry once space is freed): {0}")]
    NoSpace(String),
    /// The WAL refused the append (record too large, other I/O error).
    #[error("the WAL refused the write: {0}")]
    Wal(wal::WalError),
    /// The request itself is unacceptable.
    #[error("{0}")]
    BadRequest(String),
}

impl WriteError {
    /// The INTERFACE.md error code.
    pub fn code(&self) -> proto::ErrorCode {
        match self {
            WriteError::NotLeader { .. } => proto::ErrorCode::NotLeader,
            WriteError::NotAccepting => proto::ErrorCode::Fenced,
            WriteError::AckTimeout { .. } | WriteError::OutcomeUnknown { .. } => {
                proto::ErrorCode::AckTimeout
            }
            WriteError::WalFailed { .. } => proto::ErrorCode::WalFailed,
            WriteError::NoSpace(_) => proto::ErrorCode::NoSpace,
            WriteError::Wal(_) => proto::ErrorCode::Internal,
            WriteError::BadRequest(_) => proto::ErrorCode::BadRequest,
        }
    }
}

impl From<wal::WalError> for WriteError {
    fn from(e: wal::WalError) -> Self {
        match e {
            wal::WalError::Poisoned { cause } => WriteError::WalFailed { cause },
            e @ wal::WalError::NoSpace { .. } => WriteError::NoSpace(e.to_string()),
            e => WriteError::Wal(e),
        }
    }
}

/// An acknowledged write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// End LSN of the write's record (what INTERFACE.md returns).
    pub lsn: wal::Lsn,
    /// Term of the leader that wrote it.
    pub term: u64,
}

/// The leader's state for one term. Exists only while this node leads.
pub struct LeaderTerm {
    /// The term this node leads.
    pub term: u64,
    /// End LSN of this term's TERM_START record. Invariant: the commit LSN
    /// published in this term is never below it (Raft: a leader commits records
    /// of earlier terms only by committing one of its own — the figure-8 rule).
    pub term_start_end: u64,
    /// The commit gate of this term.
    pub gate: SharedGate,
    /// Follower progress and lag.
    pub progress: Arc<Mutex<Progress>>,
    /// False while fenced or handing over leadership.
    pub accepting_writes: bool,
    /// Set to true to stop the term's tasks (senders).
    pub stop: watch::Sender<bool>,
    /// What this term's WAL senders share.
    pub senders: Arc<shipper::sender::SenderContext>,
}

/// What the follower side knows (for `/status` and `/replica`).
#[derive(Debug, Clone, Default)]
pub struct FollowerView {
    /// True while a replication stream is up.
    pub connected: bool,
    /// True once the local log reached the leader's flush LSN.
    pub caught_up: bool,
    /// The leader's flush LSN heard last.
    pub leader_flush_lsn: u64,
    /// Set when the leader no longer holds the WAL this node needs.
    pub needs_rebuild: bool,
    /// Last refusal or error from the leader.
    pub last_error: Option<String>,
}

/// Everything a node's tasks share.
pub struct Shared {
    /// The validated configuration.
    pub cfg: Config,
    /// The WAL.
    pub wal: Arc<wal::Wal>,
    /// The key-value state machine.
    pub kv: RwLock<KvStore>,
    /// End of the WAL appended on this node (feeds the flusher and the senders).
    pub written_tx: watch::Sender<u64>,
    /// Flushed LSN (published by the flusher).
    pub flush_tx: watch::Sender<u64>,
    /// Commit LSN this node knows (leader: from its gate; follower: from the leader).
    pub commit_tx: watch::Sender<u64>,
    /// Applied LSN.
    pub applied_tx: watch::Sender<u64>,
    /// Role, term, leader (published by the failover driver).
    pub role_tx: watch::Sender<RoleInfo>,
    /// The leader's state while this node leads.
    pub leader: Mutex<Option<LeaderTerm>>,
    /// Follower-side view.
    pub follower: Mutex<FollowerView>,
    /// Metrics.
    pub metrics: Metrics,
    /// Becomes true when the node shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Admin commands and log positions for the failover driver.
    pub failover_tx: mpsc::Sender<election::DriverInput>,
    /// Last state each follower's sender reported, by follower id (leader side).
    pub follower_states: Mutex<HashMap<String, shipper::progress::FollowerState>>,
    /// The receiver task while this node follows.
    pub receiver_task: tokio::sync::Mutex<Option<replica::ReceiverTask>>,
    /// Follower rebuild state and progress (reads are refused while it runs).
    pub rebuild: rebuild::RebuildState,
    /// WAL retention pins (a leader serving a rebuild pins the checkpoint's
    /// LSN); retention never removes WAL at or above the lowest pin.
    pub retention_pins: Arc<pins::RetentionPins>,
    /// Checkpoints, start-up replay and retention state.
    pub ckpt: checkpointer::CheckpointState,
    /// Set once (never cleared) when the WAL failed: the cause. See
    /// [`Shared::wal_failed`].
    pub wal_failure: watch::Sender<Option<String>>,
    /// Set while this node was elected but could not write its term-start record
    /// (a full disk): the error. Writes are refused with `no_space` meanwhile; the
    /// record is retried until it is written or the term ends.
    /// `(term, error)`; lock order: this before `leader`.
    pub term_start_pending: Mutex<Option<(u64, String)>>,
    /// TLS of both listeners and of the links to other members (None: plain TCP).
    pub tls: Option<Arc<crate::tls::NodeTls>>,
    /// Rate limiter of the WARN lines about refused connections.
    pub refusal_log: crate::refusal::RefusalLog,
}

impl Shared {
    /// Applied LSN of this node (published after each applied batch, so for a
    /// moment it may trail the state: a read answers with [`Shared::read_value`]).
    pub fn applied_lsn(&self) -> u64 {
        *self.applied_tx.borrow()
    }

    /// The value of `key` and the applied LSN of the state it was read from,
    /// taken under one lock: the LSN token of a read names exactly that state.
    pub fn read_value(&self, key: &[u8]) -> (Option<bytes::Bytes>, u64) {
        let kv = self.kv.read();
        (
            kv.get(key),
            receiver::state::StateMachine::applied_lsn(&*kv),
        )
    }

    /// Why a read is refused when the state it would read from is below
    /// `min_lsn` after the wait (only after the state was rewound: a cut tail).
    pub fn rewound_below(applied: u64, min_lsn: u64) -> String {
        format!(
            "this node's state is at {} (rewound), below min_lsn {}",
            wal::Lsn(applied),
            wal::Lsn(min_lsn)
        )
    }

    /// Commit LSN this node knows.
    pub fn commit_lsn(&self) -> u64 {
        *self.commit_tx.borrow()
    }

    /// Current role snapshot.
    pub fn role(&self) -> RoleInfo {
        self.role_tx.borrow().clone()
    }

    /// Why this node's WAL failed, or None while it is healthy.
    pub fn wal_failure(&self) -> Option<String> {
        self.wal_failure.borrow().clone()
    }

    /// The WAL failed (a failed fsync/fdatasync, or a crashed append, poisoned
    /// it; `what` says where it was seen). Called by every flush path (the
    /// flusher thread, the receiver's inline flush) and by the write path; runs
    /// once, later calls do nothing.
    ///
    /// PostgreSQL's fsync lesson: after a failed fsync the kernel may have
    /// dropped the dirty pages, so nothing written since the last successful
    /// flush may be reported durable, and the fsync is never retried. This node
    /// therefore, at once and for good (until restarted):
    /// * stops leading: waiting writes end with "outcome unknown", later writes
    ///   are refused with `wal_failed` (the WAL refuses every append);
    /// * stops replicating as a follower: its flush LSN stays at what is durable,
    ///   so it never counts towards an acknowledgement again;
    /// * leaves the elections (its failover driver goes silent: no heartbeat, no
    ///   vote, no candidacy), so the others elect a leader among themselves;
    /// * answers `/health` with 503 and shows state `wal_failed`.
    ///
    /// Invariant: the published flush LSN never moves after this (the flusher
    /// stops and the receiver stops; neither publishes past a failed flush).
    pub fn wal_failed(&self, what: &str) {
        let cause = self
            .wal
            .poison_cause()
            .unwrap_or_else(|| format!("{what} failed"));
        let first = self.wal_failure.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(cause.clone());
                true
            } else {
                false
            }
        });
        if !first {
            return;
        }
        self.metrics.wal_failed.set(1);
        let old = self.leader.lock().take();
        let (term, waiting) = match &old {
            Some(l) => {
                let n = l.gate.fail_all(
                    "the leader's WAL failed (fsync error) before the write was durable and replicated",
                );
                let _ = l.stop.send(true);
                (Some(l.term), n)
            }
            None => (None, 0),
        };
        tracing::error!(
            node = %self.cfg.node_id,
            dir = %self.wal.dir().display(),
            cause = %cause,
            seen_by = what,
            flush_lsn = %wal::Lsn(*self.flush_tx.borrow()),
            write_lsn = %self.wal.write_lsn(),
            was_leader_of_term = ?term,
            waiting_writes = waiting,
            "WAL failed: a write to stable storage failed, so nothing written after the flush LSN can be trusted. \
             walship never retries the fsync: this node stops acknowledging at once ({waiting} waiting writes end with outcome unknown, \
             later writes get wal_failed), stops leading and replicating, and leaves the elections (the other members elect a leader); \
             /health answers 503. Fix the disk, then restart the node: recovery keeps what is durable and it rejoins as a follower"
        );
        self.publish_wal_failed_role();
        // The receiver also stops by itself at its next append or flush (the
        // WAL refuses them); signal it now so it does not wait for one.
        if let Ok(t) = self.receiver_task.try_lock() {
            if let Some(t) = t.as_ref() {
                t.signal_stop();
            }
        }
    }

    /// A WAL error seen on the write path, as the write's error: a poisoned WAL
    /// (a failed fsync earlier, or this append crashed part-way and poisoned it)
    /// is a failure of the node ([`Shared::wal_failed`]) and `WalFailed`; a full
    /// disk is counted and `NoSpace`.
    fn append_failed(&self, e: wal::WalError) -> WriteError {
        if let Some(cause) = self.wal.poison_cause() {
            self.wal_failed("an append");
            return WriteError::WalFailed { cause };
        }
        if matches!(e, wal::WalError::NoSpace { .. }) {
            self.metrics.wal_no_space_errors_total.inc();
        }
        e.into()
    }

    /// Show this node as failed (role follower, state `wal_failed`, no leader).
    /// Called by [`Shared::wal_failed`] and again by the failover driver when it
    /// goes silent (so a role it published meanwhile does not stay).
    pub fn publish_wal_failed_role(&self) {
        self.role_tx.send_modify(|r| {
            r.role = Role::Follower;
            r.state = NodeState::WalFailed;
            r.leader_id = None;
            r.accepting_writes = false;
        });
        for r in [Role::Follower, Role::Candidate, Role::Leader] {
            self.metrics
                .role
                .with_label_values(&[r.as_str()])
                .set((r == Role::Follower) as i64);
        }
    }

    /// Publish a new commit LSN if it is higher (commit never goes backwards).
    pub fn raise_commit(&self, lsn: u64) {
        self.commit_tx.send_if_modified(|c| {
            if lsn > *c {
                *c = lsn;
                true
            } else {
                false
            }
        });
    }

    /// Publish the gate's commits of the leader's term `term_start_end`
    /// (see [`LeaderTerm::term_start_end`]).
    pub fn publish_commits(&self, commits: Commits, term_start_end: u64) {
        let c = commits.commit_lsn();
        if c >= term_start_end {
            self.raise_commit(c);
        }
    }

    /// The leader's WAL is durable up to `flushed`: feed the current term's
    /// gate and publish what that commits (called by the flusher thread with
    /// every flush, so a write waiting for the leader's own flush is released
    /// at once, and once when a term starts). The only feed of the leader's own
    /// LSNs into the gate (with `wal.sync = never` the flusher calls it with
    /// the write LSN).
    pub fn leader_flushed(&self, flushed: u64) {
        let (commits, released, term_start_end) = {
            let guard = self.leader.lock();
            let Some(l) = guard.as_ref() else { return };
            let (commits, released) = l
                .gate
                .update_leader_deferred(self.wal.write_lsn().0, flushed);
            (commits, released, l.term_start_end)
        };
        // Commits published before the writers are answered (they see it in
        // /status by the time they are answered).
        self.publish_commits(commits, term_start_end);
        drop(released);
    }

    /// Append a record as the leader and wait until it is acknowledged at `ack`
    /// (the configured default when `None`).
    ///
    /// Returns the end LSN of the record. An `AckTimeout` or `OutcomeUnknown`
    /// error means the record is in the leader's WAL and may still commit.
    pub async fn write(
        &self,
        kind: u8,
        payload: &[u8],
        ack: Option<AckLevel>,
    ) -> Result<Written, WriteError> {
        let level = ack.unwrap_or(self.cfg.replication.ack);
        let started = std::time::Instant::now();
        let (end, term, handle) = {
            let guard = self.leader.lock();
            let l = match self.accepting_leader(&guard) {
                Ok(l) => l,
                Err(e) => {
                    drop(guard);
                    return Err(self.refine_refusal(e));
                }
            };
            let appended = match self.wal.append(l.term, kind, payload) {
                Ok(a) => a,
                Err(e) => {
                    drop(guard);
                    return Err(self.append_failed(e));
                }
            };
            let end = appended.end.0;
            l.progress.lock().record_local_write(end, now_us());
            (end, l.term, l.gate.register(end, level))
        };
        self.metrics
            .wal_appended_bytes_total
            .inc_by(payload.len() as u64);
        self.wait_ack(end, term, handle, level, started).await
    }

    /// Append several records as the leader with one WAL append (contiguous,
    /// all or nothing: a refused batch leaves no record in the WAL) and wait
    /// until the last one, hence all, is acknowledged at `ack`.
    ///
    /// Returns the end LSN of every record, in order, and the term. The errors
    /// are those of [`Shared::write`]; `BadRequest` for an empty batch.
    pub async fn write_batch(
        &self,
        records: &[(u8, &[u8])],
        ack: Option<AckLevel>,
    ) -> Result<(Vec<u64>, u64), WriteError> {
        if records.is_empty() {
            return Err(WriteError::BadRequest("empty batch".into()));
        }
        let level = ack.unwrap_or(self.cfg.replication.ack);
        let started = std::time::Instant::now();
        let (ends, term, handle) = {
            let guard = self.leader.lock();
            let l = match self.accepting_leader(&guard) {
                Ok(l) => l,
                Err(e) => {
                    drop(guard);
                    return Err(self.refine_refusal(e));
                }
            };
            let appended = match self.wal.append_batch(l.term, records) {
                Ok(a) => a,
                Err(e) => {
                    drop(guard);
                    return Err(self.append_failed(e));
                }
            };
            let ends: Vec<u64> = appended.iter().map(|a| a.end.0).collect();
            let last = ends.last().copied().unwrap_or(0);
            l.progress.lock().record_local_write(last, now_us());
            (ends, l.term, l.gate.register(last, level))
        };
        let bytes: usize = records.iter().map(|(_, p)| p.len()).sum();
        self.metrics.wal_appended_bytes_total.inc_by(bytes as u64);
        let last = ends.last().copied().unwrap_or(0);
        self.wait_ack(last, term, handle, level, started).await?;
        Ok((ends, term))
    }

    /// A refusal by [`Shared::accepting_leader`], made precise once the leader
    /// lock is released: an elected node still retrying its term-start record on
    /// a full disk refuses with `no_space` rather than pointing at itself.
    fn refine_refusal(&self, e: WriteError) -> WriteError {
        match e {
            WriteError::NotLeader { .. } => match self.term_start_pending.lock().as_ref() {
                Some((_, err)) => WriteError::NoSpace(err.clone()),
                None => e,
            },
            e => e,
        }
    }

    /// The leader state if this node leads and accepts writes.
    fn accepting_leader<'a>(
        &self,
        guard: &'a Option<LeaderTerm>,
    ) -> Result<&'a LeaderTerm, WriteError> {
        if let Some(cause) = self.wal_failure() {
            return Err(WriteError::WalFailed { cause });
        }
        let Some(l) = guard.as_ref() else {
            return Err(WriteError::NotLeader {
                leader: self.role().leader_id,
            });
        };
        if !l.accepting_writes {
            return Err(WriteError::NotAccepting);
        }
        Ok(l)
    }

    /// Publish the new end of WAL `end` and wait for the gate's answer for it.
    async fn wait_ack(
        &self,
        end: u64,
        term: u64,
        handle: shipper::gate::WaitHandle,
        level: AckLevel,
        started: std::time::Instant,
    ) -> Result<Written, WriteError> {
        self.written_tx.send_if_modified(|w| {
            if end > *w {
                *w = end;
                true
            } else {
                false
            }
        });
        let timeout = self.cfg.replication.ack_timeout;
        let result = match tokio::time::timeout(timeout, handle).await {
            Ok(Ok(commit)) => {
                // The gate wakes its waiters before the caller that fed it
                // publishes the new commit LSN; publish it here as well, so
                // that /status and followers see the commit LSN of a write
                // by the time its writer is answered. `commit` is the gate's
                // published remote_flush commit, at or past `end`, which lies
                // in this term (so past `term_start_end`).
                if level == AckLevel::RemoteFlush && commit >= end {
                    self.raise_commit(commit);
                }
                Ok(Written {
                    lsn: wal::Lsn(end),
                    term,
                })
            }
            Ok(Err(e)) => Err(WriteError::OutcomeUnknown {
                lsn: wal::Lsn(end),
                reason: e.to_string(),
            }),
            Err(_) => Err(WriteError::AckTimeout {
                lsn: wal::Lsn(end),
                level: level.as_str(),
                timeout,
            }),
        };
        if result.is_ok() {
            self.metrics
                .ack_wait(level)
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }

    /// Wait until this node has applied `min_lsn`, for at most `wait`.
    /// Returns the applied LSN, or `Err(applied)` on timeout.
    pub async fn wait_applied(&self, min_lsn: u64, wait: Duration) -> Result<u64, u64> {
        let mut rx = self.applied_tx.subscribe();
        let r = tokio::time::timeout(wait, async {
            rx.wait_for(|a| *a >= min_lsn).await.map(|a| *a)
        })
        .await;
        match r {
            Ok(Ok(a)) => Ok(a),
            _ => Err(self.applied_lsn()),
        }
    }
}
