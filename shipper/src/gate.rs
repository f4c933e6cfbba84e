//! The commit gate: follower progress in, commit LSN per ack level out, waiters released in
//! LSN order when their LSN is covered.
//!
//! [`CommitGate`] is sans-IO and single-threaded; [`SharedGate`] wraps it in a mutex for use
//! by many tasks (writers registering waits, senders reporting progress).
//!
//! # Invariants (enforced in [`CommitGate::recompute`])
//!
//! * **Monotonic**: per level, the published commit LSN never decreases, even when a follower
//!   reconnects with lower LSNs or a policy changes (the computed value is max-ed with the
//!   published one).
//! * **Ordered levels**: at every instant
//!   `local >= remote_write >= remote_flush >= remote_apply`, because a follower's effective
//!   positions are normalised (`write' = max(write, flush)`, `apply' = min(apply, flush)`, so
//!   `remote_apply` also implies the standby flushed) and every remote level is capped by the
//!   leader's local LSN.
//! * **Exactly once, in order, only when covered**: a waiter for `(lsn, level)` is released
//!   once, with `Ok(commit)` where `commit >= lsn` is the published commit at that level, or
//!   with an "outcome unknown" error by [`CommitGate::fail_all`]. Waiters are kept per level in
//!   a `BTreeMap<(lsn, seq), Sender>`, so an advance pops only the covered prefix in LSN order
//!   (registration order within one LSN): `O(woken · log n)`, never a scan of all waiters.
//! * **No leaks**: a [`WaitHandle`] from a [`SharedGate`] removes its entry when dropped
//!   unanswered (e.g. by `tokio::time::timeout`); a handle from a bare [`CommitGate`] is purged
//!   lazily (amortised O(1) per registration) once its receiver is gone.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::error::{LsnDisplay, Result, ShipperError};
use crate::standbys::{StandbyPolicy, SyncMethod};

/// How far a write must have gone before it is acknowledged (PostgreSQL `synchronous_commit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum AckLevel {
    /// The leader has it: flushed, or written when `wal.sync = never`.
    Local,
    /// The required standbys have written it (not necessarily flushed).
    RemoteWrite,
    /// The required standbys have flushed it to stable storage (the default).
    #[default]
    RemoteFlush,
    /// The required standbys have flushed and applied it (visible to reads there).
    RemoteApply,
}

impl AckLevel {
    /// All levels, weakest first.
    pub const ALL: [AckLevel; 4] = [
        AckLevel::Local,
        AckLevel::RemoteWrite,
        AckLevel::RemoteFlush,
        AckLevel::RemoteApply,
    ];

    /// The config / query-string spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AckLevel::Local => "local",
            AckLevel::RemoteWrite => "remote_write",
            AckLevel::RemoteFlush => "remote_flush",
            AckLevel::RemoteApply => "remote_apply",
        }
    }

    fn idx(self) -> usize {
        self as usize
    }
}

impl fmt::Display for AckLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AckLevel {
    type Err = ShipperError;

    /// Parses `local`, `remote_write`, `remote_flush` or `remote_apply` (ASCII
    /// case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(AckLevel::Local),
            "remote_write" => Ok(AckLevel::RemoteWrite),
            "remote_flush" => Ok(AckLevel::RemoteFlush),
            "remote_apply" => Ok(AckLevel::RemoteApply),
            _ => Err(ShipperError::UnknownAckLevel(s.to_string())),
        }
    }
}

/// A follower's position as its sender last saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FollowerPosition {
    /// Whether the follower counts for the policy now. PostgreSQL counts only walsenders that
    /// are `streaming` (or `stopping`); set it from [`crate::FollowerState::is_sync_eligible`]
    /// so a follower in catch-up does not become the synchronous standby.
    pub connected: bool,
    /// End of the WAL the follower has written.
    pub write_lsn: u64,
    /// End of the WAL the follower has flushed to stable storage.
    pub flush_lsn: u64,
    /// End of the WAL the follower has applied.
    pub apply_lsn: u64,
}

impl FollowerPosition {
    /// The LSN this follower has reached at a remote `level`, normalised so that
    /// `write >= flush >= apply` (flushed implies written; applied counts only once flushed).
    /// For [`AckLevel::Local`] (not a follower level) it returns the flush LSN.
    pub fn at_level(&self, level: AckLevel) -> u64 {
        match level {
            AckLevel::RemoteWrite => self.write_lsn.max(self.flush_lsn),
            AckLevel::Local | AckLevel::RemoteFlush => self.flush_lsn,
            AckLevel::RemoteApply => self.apply_lsn.min(self.flush_lsn),
        }
    }
}

/// A follower's role in the policy, as PostgreSQL's `pg_stat_replication.sync_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncState {
    /// Not listed by the policy (or async mode): never waited for.
    Async,
    /// Listed in a `FIRST` policy but not among the first `k` connected: a stand-in.
    Potential,
    /// One of the first `k` connected standbys of a `FIRST` policy: commits wait for it.
    Sync,
    /// Listed in an `ANY` policy: any `k` of these standbys commit a write.
    Quorum,
}

impl SyncState {
    /// `async`, `potential`, `sync` or `quorum`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Async => "async",
            SyncState::Potential => "potential",
            SyncState::Sync => "sync",
            SyncState::Quorum => "quorum",
        }
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The published commit LSN of every ack level (a snapshot).
///
/// Guarantee: `local >= remote_write >= remote_flush >= remote_apply`, and each field never
/// decreases over the life of one gate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Commits {
    /// Leader's local LSN (flush, or write with `wal.sync = never`).
    pub local: u64,
    /// Commit at `remote_write`.
    pub remote_write: u64,
    /// Commit at `remote_flush`: the cluster's commit LSN (shown in /status, shipped to
    /// followers, the limit up to which every node applies).
    pub remote_flush: u64,
    /// Commit at `remote_apply`.
    pub remote_apply: u64,
}

impl Commits {
    /// The commit LSN at `level`.
    pub fn get(&self, level: AckLevel) -> u64 {
        match level {
            AckLevel::Local => self.local,
            AckLevel::RemoteWrite => self.remote_write,
            AckLevel::RemoteFlush => self.remote_flush,
            AckLevel::RemoteApply => self.remote_apply,
        }
    }

    /// The general commit LSN (= `remote_flush`; equals `local` in async mode).
    pub fn commit_lsn(&self) -> u64 {
        self.remote_flush
    }

    fn from_array(a: [u64; 4]) -> Self {
        Commits {
            local: a[0],
            remote_write: a[1],
            remote_flush: a[2],
            remote_apply: a[3],
        }
    }
}

/// What a waiter receives: `Ok(commit LSN at its level when released, >= its LSN)` or
/// [`ShipperError::OutcomeUnknown`].
pub type WaitResult = Result<u64>;

type WaiterKey = (u64, u64); // (lsn, registration sequence)

/// Below this many pending waiters a bare gate never purges abandoned ones.
const MIN_PURGE_AT: usize = 1024;

struct Follower {
    pos: FollowerPosition,
    /// Index in the policy's name list, cached when the follower or policy changes.
    priority: Option<usize>,
}

/// The sans-IO commit gate. See the module docs for its invariants and the crate docs for
/// the rules per mode.
pub struct CommitGate {
    policy: Option<StandbyPolicy>,
    wal_sync_never: bool,
    leader_write: u64,
    leader_flush: u64,
    followers: BTreeMap<String, Follower>,
    published: [u64; 4],
    waiters: [BTreeMap<WaiterKey, oneshot::Sender<WaitResult>>; 4],
    next_seq: u64,
    purge_at: usize,
    closed: Option<String>,
    /// For logging transitions only: the current FIRST sync set / whether remote levels
    /// are blocked for lack of standbys.
    sync_set: Vec<String>,
    blocked: bool,
    /// While `Some`, released waiters are collected here instead of answered at once
    /// (see [`SharedGate::update_follower_deferred`]).
    deferred: Option<Vec<(oneshot::Sender<WaitResult>, u64)>>,
    #[cfg(test)]
    pub(crate) wake_log: Vec<(AckLevel, u64, u64)>,
}

impl CommitGate {
    /// A gate for `policy` (`None` = async). `wal_sync_never`: the leader's `local` LSN is its
    /// write LSN (`wal.sync = never`) instead of its flush LSN. All commits start at 0.
    pub fn new(policy: Option<StandbyPolicy>, wal_sync_never: bool) -> Self {
        CommitGate {
            policy,
            wal_sync_never,
            leader_write: 0,
            leader_flush: 0,
            followers: BTreeMap::new(),
            published: [0; 4],
            waiters: Default::default(),
            next_seq: 0,
            purge_at: MIN_PURGE_AT,
            closed: None,
            sync_set: Vec::new(),
            blocked: false,
            deferred: None,
            #[cfg(test)]
            wake_log: Vec::new(),
        }
    }

    /// The policy in force (`None` = async).
    pub fn policy(&self) -> Option<&StandbyPolicy> {
        self.policy.as_ref()
    }

    /// Replaces the policy (config reload, membership change). Published commits never go
    /// back; a stricter policy only holds them until it is satisfied again.
    pub fn set_policy(&mut self, policy: Option<StandbyPolicy>) -> Commits {
        info!(
            old = %PolicyDisplay(self.policy.as_ref()),
            new = %PolicyDisplay(policy.as_ref()),
            "commit gate: replication policy changed"
        );
        self.policy = policy;
        for (id, f) in self.followers.iter_mut() {
            f.priority = self.policy.as_ref().and_then(|p| p.priority_of(id));
        }
        self.recompute()
    }

    /// The leader appended/flushed: `write_lsn` is the end of its WAL, `flush_lsn` the end of
    /// what is on stable storage. Values lower than before are ignored (a leader's WAL only
    /// grows while it leads).
    pub fn update_leader(&mut self, write_lsn: u64, flush_lsn: u64) -> Commits {
        self.leader_write = self.leader_write.max(write_lsn);
        self.leader_flush = self.leader_flush.max(flush_lsn);
        self.recompute()
    }

    /// A follower's sender reports its position (inserting the follower if new). Positions
    /// are taken as reported, even if lower than before (a reconnect after truncation);
    /// published commits still never go back.
    pub fn update_follower(&mut self, id: &str, pos: FollowerPosition) -> Commits {
        if let Some(f) = self.followers.get_mut(id) {
            f.pos = pos;
        } else {
            let priority = self.policy.as_ref().and_then(|p| p.priority_of(id));
            self.followers
                .insert(id.to_string(), Follower { pos, priority });
        }
        self.recompute()
    }

    /// Marks a known follower connected or not, keeping its last LSNs (no-op for an unknown
    /// id).
    pub fn set_connected(&mut self, id: &str, connected: bool) -> Commits {
        if let Some(f) = self.followers.get_mut(id) {
            f.pos.connected = connected;
        }
        self.recompute()
    }

    /// Forgets a follower (e.g. removed from the cluster).
    pub fn remove_follower(&mut self, id: &str) -> Commits {
        self.followers.remove(id);
        self.recompute()
    }

    /// A follower's last reported position, if known.
    pub fn follower(&self, id: &str) -> Option<FollowerPosition> {
        self.followers.get(id).map(|f| f.pos)
    }

    /// The leader's `local` LSN: write LSN with `wal.sync = never`, else flush LSN.
    pub fn local_lsn(&self) -> u64 {
        if self.wal_sync_never {
            self.leader_write
        } else {
            self.leader_flush
        }
    }

    /// The published commit LSNs.
    pub fn commits(&self) -> Commits {
        Commits::from_array(self.published)
    }

    /// The published commit LSN at `level`.
    pub fn commit_at(&self, level: AckLevel) -> u64 {
        self.published[level.idx()]
    }

    /// The cluster's commit LSN (`remote_flush`; `local` in async mode): shown in /status,
    /// shipped to followers in keepalives.
    pub fn commit_lsn(&self) -> u64 {
        self.published[AckLevel::RemoteFlush.idx()]
    }

    /// Connected followers listed by the policy, best priority first (ties, from `*`, by id).
    fn ranked_candidates(&self) -> Vec<(&str, &FollowerPosition)> {
        let mut c: Vec<(usize, &str, &FollowerPosition)> = self
            .followers
            .iter()
            .filter(|(_, f)| f.pos.connected)
            .filter_map(|(id, f)| f.priority.map(|p| (p, id.as_str(), &f.pos)))
            .collect();
        c.sort_by_key(|&(p, id, _)| (p, id));
        c.into_iter().map(|(_, id, pos)| (id, pos)).collect()
    }

    /// The commit LSN each level would have from the current positions alone (`None`: the
    /// policy cannot be met now, so it must not advance).
    fn compute(&self) -> [Option<u64>; 4] {
        let local = self.local_lsn();
        let Some(policy) = &self.policy else {
            return [Some(local); 4];
        };
        let k = policy.num_sync;
        let ranked = self.ranked_candidates();
        let mut out = [Some(local), None, None, None];
        if ranked.len() < k {
            return out;
        }
        for level in [
            AckLevel::RemoteWrite,
            AckLevel::RemoteFlush,
            AckLevel::RemoteApply,
        ] {
            let v = match policy.method {
                SyncMethod::First => ranked[..k]
                    .iter()
                    .map(|(_, p)| p.at_level(level))
                    .min()
                    .unwrap_or(0),
                SyncMethod::Any => {
                    let mut lsns: Vec<u64> =
                        ranked.iter().map(|(_, p)| p.at_level(level)).collect();
                    // k-th highest: k >= 1 and lsns.len() >= k are checked above.
                    let (_, kth, _) = lsns.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
                    *kth
                }
            };
            out[level.idx()] = Some(v.min(local));
        }
        out
    }

    /// Recomputes every level, publishes advances (never retreats — the monotonic invariant
    /// is enforced here) and releases the newly covered waiters.
    fn recompute(&mut self) -> Commits {
        self.log_policy_transitions();
        let computed = self.compute();
        for level in AckLevel::ALL {
            let i = level.idx();
            if let Some(c) = computed[i] {
                if c > self.published[i] {
                    self.published[i] = c;
                    self.release(level);
                } else if c < self.published[i] && level == AckLevel::RemoteFlush {
                    debug!(
                        computed = %LsnDisplay(c),
                        published = %LsnDisplay(self.published[i]),
                        "commit gate: standbys report less than the published commit LSN \
                         (reconnect or policy change); commit LSN held"
                    );
                }
            }
        }
        self.commits()
    }

    /// Releases the waiters of `level` covered by its published commit, lowest LSN first.
    fn release(&mut self, level: AckLevel) {
        let i = level.idx();
        let commit = self.published[i];
        let map = &mut self.waiters[i];
        while let Some(entry) = map.first_entry() {
            if entry.key().0 > commit {
                break;
            }
            #[cfg(test)]
            self.wake_log.push((level, entry.key().0, entry.key().1));
            let tx = entry.remove();
            match self.deferred.as_mut() {
                Some(d) => d.push((tx, commit)),
                // A send error means the waiter gave up (timed out): nothing to do.
                None => {
                    let _ = tx.send(Ok(commit));
                }
            }
        }
    }

    fn log_policy_transitions(&mut self) {
        let Some(policy) = &self.policy else {
            return;
        };
        let (k, method) = (policy.num_sync, policy.method);
        let ranked: Vec<String> = self
            .ranked_candidates()
            .into_iter()
            .map(|(id, _)| id.to_string())
            .collect();
        let blocked = ranked.len() < k;
        if method == SyncMethod::First && ranked.iter().take(k).ne(self.sync_set.iter()) {
            self.sync_set = ranked.iter().take(k).cloned().collect();
            info!(
                policy = %PolicyDisplay(self.policy.as_ref()),
                sync_standbys = ?self.sync_set,
                "commit gate: synchronous standby set changed"
            );
        }
        if blocked != self.blocked {
            self.blocked = blocked;
            if blocked {
                warn!(
                    policy = %PolicyDisplay(self.policy.as_ref()),
                    connected_standbys = ?ranked,
                    commit_lsn = %LsnDisplay(self.commit_lsn()),
                    "commit gate: {k} synchronous standby(s) required but only {} connected; \
                     writes waiting for remote_write/remote_flush/remote_apply stay pending \
                     (commit LSN held) until enough standbys reconnect; writes with ack=local \
                     still complete",
                    ranked.len()
                );
            } else {
                info!(
                    policy = %PolicyDisplay(self.policy.as_ref()),
                    "commit gate: enough synchronous standbys connected again; remote acks resume"
                );
            }
        }
    }

    /// Registers a wait for `lsn` (the END of the write's record) at `level`.
    ///
    /// The handle resolves to `Ok(commit)` with `commit >= lsn` once the published commit at
    /// `level` covers `lsn` (immediately if it already does), or to
    /// [`ShipperError::OutcomeUnknown`] after [`CommitGate::fail_all`] (immediately while the
    /// gate is closed). Abandoned handles of a bare gate are purged lazily; prefer
    /// [`SharedGate::register`], whose handles clean up on drop.
    pub fn register(&mut self, lsn: u64, level: AckLevel) -> WaitHandle {
        let (tx, rx) = oneshot::channel();
        let mut handle = WaitHandle {
            lsn,
            level,
            seq: None,
            rx,
            owner: None,
            finished: false,
        };
        if let Some(reason) = &self.closed {
            let _ = tx.send(Err(ShipperError::OutcomeUnknown {
                lsn,
                level,
                reason: reason.clone(),
            }));
            return handle;
        }
        let i = level.idx();
        if lsn <= self.published[i] {
            let _ = tx.send(Ok(self.published[i]));
            return handle;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.waiters[i].insert((lsn, seq), tx);
        handle.seq = Some(seq);
        self.maybe_purge();
        handle
    }

    /// Removes a pending waiter (its handle was dropped). Returns whether it was pending.
    fn cancel(&mut self, level: AckLevel, lsn: u64, seq: u64) -> bool {
        self.waiters[level.idx()].remove(&(lsn, seq)).is_some()
    }

    /// Drops waiters whose handle is gone, once the pending count doubles since the last
    /// purge (amortised O(1) per registration; bounds memory for bare-gate users).
    fn maybe_purge(&mut self) {
        let pending = self.pending_waiters();
        if pending < self.purge_at {
            return;
        }
        for map in self.waiters.iter_mut() {
            map.retain(|_, tx| !tx.is_closed());
        }
        let left = self.pending_waiters();
        if left < pending {
            debug!(
                purged = pending - left,
                left, "commit gate: purged abandoned waiters"
            );
        }
        self.purge_at = MIN_PURGE_AT.max(2 * left);
    }

    /// Whether any waiter at `level` is not yet released (an abandoned-but-not-purged one
    /// of a bare gate counts too). O(1).
    pub fn has_waiters(&self, level: AckLevel) -> bool {
        !self.waiters[level.idx()].is_empty()
    }

    /// Number of waiters not yet released (abandoned-but-not-purged ones included).
    pub fn pending_waiters(&self) -> usize {
        self.waiters.iter().map(BTreeMap::len).sum()
    }

    /// Releases every pending waiter with [`ShipperError::OutcomeUnknown`] carrying `reason`,
    /// and closes the gate: later registrations fail the same way until [`CommitGate::reopen`].
    /// Use when the leader steps down or fences itself: those writes may or may not commit.
    /// Returns how many waiters were released.
    pub fn fail_all(&mut self, reason: &str) -> usize {
        let mut n = 0;
        for level in AckLevel::ALL {
            let map = std::mem::take(&mut self.waiters[level.idx()]);
            for ((lsn, _), tx) in map {
                n += 1;
                let _ = tx.send(Err(ShipperError::OutcomeUnknown {
                    lsn,
                    level,
                    reason: reason.to_string(),
                }));
            }
        }
        if n > 0 || self.closed.is_none() {
            warn!(
                released = n,
                commit_lsn = %LsnDisplay(self.commit_lsn()),
                "commit gate closed: {reason}; {n} waiting write(s) answered \"outcome unknown\" \
                 (they may still be committed by the next leader); new writes are refused until \
                 the gate is reopened"
            );
        }
        self.closed = Some(reason.to_string());
        self.purge_at = MIN_PURGE_AT;
        n
    }

    /// Accepts registrations again after [`CommitGate::fail_all`].
    pub fn reopen(&mut self) {
        if self.closed.take().is_some() {
            info!("commit gate reopened; writes are accepted again");
        }
    }

    /// Whether the gate is closed by [`CommitGate::fail_all`] (and why).
    pub fn closed_reason(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// Follower `id`'s `sync_state` as PostgreSQL's `pg_stat_replication` shows it. With
    /// `FIRST k`, the (up to) `k` best-priority connected listed standbys are `sync`, the other
    /// listed ones `potential`; with `ANY k`, every listed standby is `quorum`; unlisted
    /// followers and every follower in async mode are `async`.
    pub fn sync_state(&self, id: &str) -> SyncState {
        let Some(policy) = &self.policy else {
            return SyncState::Async;
        };
        let listed = match self.followers.get(id) {
            Some(f) => f.priority.is_some(),
            None => policy.priority_of(id).is_some(),
        };
        if !listed {
            return SyncState::Async;
        }
        match policy.method {
            SyncMethod::Any => SyncState::Quorum,
            SyncMethod::First => {
                let ranked = self.ranked_candidates();
                if ranked
                    .iter()
                    .take(policy.num_sync)
                    .any(|(rid, _)| *rid == id)
                {
                    SyncState::Sync
                } else {
                    SyncState::Potential
                }
            }
        }
    }

    /// Every known follower with its position and sync state, by id.
    pub fn followers(&self) -> Vec<(String, FollowerPosition, SyncState)> {
        self.followers
            .iter()
            .map(|(id, f)| (id.clone(), f.pos, self.sync_state(id)))
            .collect()
    }
}

struct PolicyDisplay<'a>(Option<&'a StandbyPolicy>);

impl fmt::Display for PolicyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, "{p}"),
            None => f.write_str("async"),
        }
    }
}

/// A pending commit wait. Await it (it is a `Future`), poll it with
/// [`WaitHandle::try_result`], or block a plain thread with [`WaitHandle::blocking_wait`].
///
/// Dropping it unanswered (e.g. when `tokio::time::timeout` expires) withdraws the wait: a
/// handle from [`SharedGate::register`] removes its entry at once, one from a bare
/// [`CommitGate::register`] is purged lazily. **A timed-out wait means "outcome unknown"**:
/// the write is in the leader's WAL and may still commit; report it as such (`ack_timeout`),
/// never as "not written".
#[must_use = "a commit wait does nothing unless awaited or polled"]
pub struct WaitHandle {
    lsn: u64,
    level: AckLevel,
    /// `Some` while the waiter may be in the gate's map.
    seq: Option<u64>,
    rx: oneshot::Receiver<WaitResult>,
    owner: Option<Weak<Mutex<CommitGate>>>,
    finished: bool,
}

impl fmt::Debug for WaitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitHandle")
            .field("lsn", &LsnDisplay(self.lsn))
            .field("level", &self.level)
            .field("finished", &self.finished)
            .finish()
    }
}

impl WaitHandle {
    /// The LSN waited for.
    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// The ack level waited for.
    pub fn level(&self) -> AckLevel {
        self.level
    }

    fn gate_dropped(&self) -> ShipperError {
        ShipperError::OutcomeUnknown {
            lsn: self.lsn,
            level: self.level,
            reason: "the commit gate was dropped (leader shut down or stepped down)".into(),
        }
    }

    /// Non-blocking check: `None` while pending, else the result (returned once; later calls
    /// after a result report the gate as dropped).
    pub fn try_result(&mut self) -> Option<WaitResult> {
        match self.rx.try_recv() {
            Ok(r) => {
                self.finished = true;
                Some(r)
            }
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => {
                self.finished = true;
                Some(Err(self.gate_dropped()))
            }
        }
    }

    /// Blocks the current thread until released. Must not be called from async code (tokio
    /// panics if it is called inside a runtime); await the handle there.
    pub fn blocking_wait(mut self) -> WaitResult {
        let (_, dummy) = oneshot::channel();
        let rx = std::mem::replace(&mut self.rx, dummy);
        let r = rx.blocking_recv();
        self.finished = true;
        r.unwrap_or_else(|_| Err(self.gate_dropped()))
    }
}

impl Future for WaitHandle {
    type Output = WaitResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WaitResult> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(r) => {
                self.finished = true;
                Poll::Ready(r.unwrap_or_else(|_| Err(self.gate_dropped())))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for WaitHandle {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let (Some(seq), Some(owner)) = (self.seq, self.owner.as_ref()) {
            if let Some(gate) = owner.upgrade() {
                // Never called with the gate locked: the gate holds only senders, and
                // SharedGate never drops a WaitHandle while holding its lock.
                gate.lock().cancel(self.level, self.lsn, seq);
            }
        }
    }
}

/// Waiters released by a deferred gate update ([`SharedGate::update_follower_deferred`]),
/// answered (in LSN order, `Ok(commit)`) when this is dropped. Never lost: dropping it is
/// the only way to get rid of it.
#[must_use = "dropping it answers the released writers; drop it after publishing the commits"]
pub struct Released(Vec<(oneshot::Sender<WaitResult>, u64)>);

impl Released {
    /// How many waiters this releases.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it releases no waiter.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Released {
    fn drop(&mut self) {
        for (tx, commit) in self.0.drain(..) {
            // A send error means the waiter gave up (timed out): nothing to do.
            let _ = tx.send(Ok(commit));
        }
    }
}

/// A [`CommitGate`] shared by many tasks: writers register waits, senders report progress.
/// Cheap to clone (an `Arc`). Every method takes the lock briefly; waiters are released
/// (oneshot sends) under the lock, in LSN order.
#[derive(Clone)]
pub struct SharedGate {
    inner: Arc<Mutex<CommitGate>>,
}

impl SharedGate {
    /// Wraps a gate.
    pub fn new(gate: CommitGate) -> Self {
        SharedGate {
            inner: Arc::new(Mutex::new(gate)),
        }
    }

    /// [`CommitGate::register`]; the returned handle withdraws its wait when dropped.
    pub fn register(&self, lsn: u64, level: AckLevel) -> WaitHandle {
        let mut h = self.inner.lock().register(lsn, level);
        if h.seq.is_some() {
            h.owner = Some(Arc::downgrade(&self.inner));
        }
        h
    }

    /// [`CommitGate::update_leader`].
    pub fn update_leader(&self, write_lsn: u64, flush_lsn: u64) -> Commits {
        self.inner.lock().update_leader(write_lsn, flush_lsn)
    }

    /// [`CommitGate::update_follower`].
    pub fn update_follower(&self, id: &str, pos: FollowerPosition) -> Commits {
        self.inner.lock().update_follower(id, pos)
    }

    /// [`CommitGate::update_follower`], but the waiters it releases are answered only when
    /// the returned [`Released`] is dropped (after the gate's lock is released). A caller
    /// publishes the new commits first and then drops it, so the writers are woken last:
    /// on a tokio worker the last task woken runs next (its LIFO slot), so the writer's
    /// answer goes out before the other tasks the commit advance woke.
    pub fn update_follower_deferred(&self, id: &str, pos: FollowerPosition) -> (Commits, Released) {
        self.deferred(|g| g.update_follower(id, pos))
    }

    /// [`CommitGate::update_leader`], with the release deferred as in
    /// [`SharedGate::update_follower_deferred`].
    pub fn update_leader_deferred(&self, write_lsn: u64, flush_lsn: u64) -> (Commits, Released) {
        self.deferred(|g| g.update_leader(write_lsn, flush_lsn))
    }

    fn deferred(&self, f: impl FnOnce(&mut CommitGate) -> Commits) -> (Commits, Released) {
        let mut g = self.inner.lock();
        g.deferred = Some(Vec::new());
        let commits = f(&mut g);
        let released = g.deferred.take().unwrap_or_default();
        (commits, Released(released))
    }

    /// [`CommitGate::set_connected`].
    pub fn set_connected(&self, id: &str, connected: bool) -> Commits {
        self.inner.lock().set_connected(id, connected)
    }

    /// [`CommitGate::remove_follower`].
    pub fn remove_follower(&self, id: &str) -> Commits {
        self.inner.lock().remove_follower(id)
    }

    /// [`CommitGate::set_policy`].
    pub fn set_policy(&self, policy: Option<StandbyPolicy>) -> Commits {
        self.inner.lock().set_policy(policy)
    }

    /// [`CommitGate::fail_all`].
    pub fn fail_all(&self, reason: &str) -> usize {
        self.inner.lock().fail_all(reason)
    }

    /// [`CommitGate::reopen`].
    pub fn reopen(&self) {
        self.inner.lock().reopen()
    }

    /// [`CommitGate::commits`].
    pub fn commits(&self) -> Commits {
        self.inner.lock().commits()
    }

    /// [`CommitGate::commit_lsn`].
    pub fn commit_lsn(&self) -> u64 {
        self.inner.lock().commit_lsn()
    }

    /// [`CommitGate::sync_state`].
    pub fn sync_state(&self, id: &str) -> SyncState {
        self.inner.lock().sync_state(id)
    }

    /// [`CommitGate::followers`].
    pub fn followers(&self) -> Vec<(String, FollowerPosition, SyncState)> {
        self.inner.lock().followers()
    }

    /// [`CommitGate::has_waiters`].
    pub fn has_waiters(&self, level: AckLevel) -> bool {
        self.inner.lock().has_waiters(level)
    }

    /// [`CommitGate::pending_waiters`].
    pub fn pending_waiters(&self) -> usize {
        self.inner.lock().pending_waiters()
    }

    /// [`CommitGate::closed_reason`] (owned).
    pub fn closed_reason(&self) -> Option<String> {
        self.inner.lock().closed_reason().map(str::to_string)
    }

    /// [`CommitGate::policy`] (cloned).
    pub fn policy(&self) -> Option<StandbyPolicy> {
        self.inner.lock().policy().cloned()
    }
}

#[cfg(test)]
mod tests;
