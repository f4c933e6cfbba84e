//! Checkpoints of the key-value state (PostgreSQL's checkpointer, for walship).
//!
//! | when | what |
//! |---|---|
//! | start-up | [`load_at_start`]: the newest valid checkpoint that fits this WAL is loaded; the applier replays only the WAL after it |
//! | `checkpoint.max_wal` applied since the last one (or the last checkpoint's size, when larger: [`CheckpointState::max_wal_due`]), every `checkpoint.interval`, when retention asks ([`CheckpointState::wanted`]), `POST /v1/admin/checkpoint` | [`run`] / [`checkpoint_now`] |
//! | clean shutdown | [`checkpoint_now`] from `NodeHandle::shutdown`, after the WAL is flushed |
//! | WAL truncated below the applied LSN | [`rewind_state`]: checkpoints above the cut are deleted, the state reloaded from an older one (never half a state) |
//!
//! A checkpoint is a snapshot of the *applied* state, so it only ever holds committed
//! records. The snapshot is a clone of the map under the read lock (the map holds
//! `Bytes`: no key or value is copied), written off the async threads; writes are
//! never stalled (the leader acknowledges on flush, not on apply), and the applier
//! waits at most for the clone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use receiver::checkpoint::{self, CheckpointError, CheckpointMeta};
use receiver::state::{KvStore, StateMachine};
use tokio::sync::Notify;
use wal::Lsn;

use super::Shared;

/// A member the leader's retention cut loose (its WAL is no longer kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutLoose {
    /// Its flush LSN when it was cut loose.
    pub flush_lsn: u64,
    /// The leader's write LSN then.
    pub leader_end: u64,
}

/// What the start-up replay did (`/status` `startup`).
#[derive(Debug, Default)]
pub struct StartupReplay {
    /// LSN of the checkpoint loaded at start (None: the state was built from the WAL start).
    pub checkpoint_lsn: Option<u64>,
    /// End of the local WAL at start: records up to here are the start-up replay.
    pub target_lsn: u64,
    /// Records replayed from the local WAL at start-up so far.
    pub replayed: AtomicU64,
    /// True once the applied LSN reached `target_lsn`.
    pub done: AtomicBool,
    /// Milliseconds from node start to the end of the replay.
    pub duration_ms: AtomicU64,
    /// When the node started.
    pub started: Option<Instant>,
}

/// Checkpoint and retention state of a node (in [`Shared::ckpt`]).
pub struct CheckpointState {
    /// `<data_dir>/checkpoints`.
    pub dir: PathBuf,
    /// The newest valid checkpoint on disk (loaded or written by this node).
    pub last: Mutex<Option<CheckpointMeta>>,
    /// Held while a checkpoint is written or the state rewound: one at a time,
    /// and never a checkpoint of a state a truncation is taking back.
    /// Lock order: this, then `Shared::kv`.
    pub write_lock: Mutex<()>,
    /// Ask the checkpointer task for a checkpoint now (retention needs one).
    pub wanted: Notify,
    /// Wake the retention task (a checkpoint was written).
    pub retention_wake: Notify,
    /// Set by the applier when `checkpoint.max_wal` of WAL is applied since the
    /// last checkpoint (the checkpointer re-checks; a stale permit does nothing).
    pub max_wal_reached: Notify,
    /// Start-up replay figures.
    pub startup: StartupReplay,
    /// Members cut loose by retention (leader side), by id.
    pub cut_loose: Mutex<BTreeMap<String, CutLoose>>,
    /// Set when the applier found its next record below the oldest retained WAL
    /// (a gap it cannot replay); it then applies nothing until rebuilt.
    pub gap_logged: AtomicU64,
}

impl CheckpointState {
    /// State for a node whose checkpoints live in `dir`.
    pub fn new(dir: PathBuf, last: Option<CheckpointMeta>, startup: StartupReplay) -> Self {
        CheckpointState {
            dir,
            last: Mutex::new(last),
            write_lock: Mutex::new(()),
            wanted: Notify::new(),
            retention_wake: Notify::new(),
            max_wal_reached: Notify::new(),
            startup,
            cut_loose: Mutex::new(BTreeMap::new()),
            gap_logged: AtomicU64::new(u64::MAX),
        }
    }

    /// LSN of the newest checkpoint (None before the first).
    pub fn last_lsn(&self) -> Option<u64> {
        self.last.lock().as_ref().map(|m| m.lsn.0)
    }

    /// The applied LSN at which the next size-triggered checkpoint is due:
    /// `checkpoint.max_wal` after the last checkpoint, or, when the last
    /// checkpoint file is larger than that, as many bytes after it as the file
    /// holds.
    ///
    /// Invariant (enforced here, for every size trigger): a checkpoint rewrites the
    /// whole state, so spacing them by at least the state's size keeps the bytes
    /// written by checkpoints at most about the bytes of WAL they cover. With a
    /// fixed spacing a state larger than `max_wal` would be rewritten in full
    /// every `max_wal` of WAL: quadratic in the state's growth.
    pub fn max_wal_due(&self, max_wal: u64) -> u64 {
        let last = self.last.lock();
        let (base, len) = last.as_ref().map_or((0, 0), |m| (m.lsn.0, m.len));
        base.saturating_add(max_wal.max(len).max(1))
    }
}

/// What start-up found.
pub struct Loaded {
    /// The state to start from.
    pub kv: KvStore,
    /// The checkpoint it came from.
    pub meta: Option<CheckpointMeta>,
    /// True when no checkpoint covers the oldest retained WAL and the WAL does not
    /// start at 0: the state cannot be rebuilt locally (the node needs a rebuild).
    pub needs_rebuild: bool,
}

/// Load the newest checkpoint in `dir` that fits `wal`: its LSN within
/// `[first_lsn, write_lsn]`, a record boundary of this WAL, and the record ending
/// there of the checkpoint's term (same history). Damaged or unfitting checkpoints
/// are logged (WARN: file, why) and the next older one tried. Leftover temporaries
/// are removed first. Blocking.
pub fn load_at_start(dir: &Path, wal: &wal::Wal) -> Result<Loaded, CheckpointError> {
    checkpoint::remove_temporaries(dir)?;
    let first = wal.first_lsn().0;
    let end = wal.write_lsn().0;
    for (lsn, path) in checkpoint::list(dir)? {
        if lsn.0 > end {
            tracing::warn!(file = %path.display(), checkpoint_lsn = %lsn, wal_end = %Lsn(end),
                "checkpoint covers records beyond the end of this node's WAL (the WAL lost its tail); not used, trying an older one");
            continue;
        }
        if lsn.0 < first {
            tracing::warn!(file = %path.display(), checkpoint_lsn = %lsn, wal_first = %Lsn(first),
                "checkpoint is older than the oldest retained WAL, so the WAL after it is gone; not used");
            continue;
        }
        let (meta, kv) = match checkpoint::load(&path) {
            Ok(x) => x,
            Err(e @ CheckpointError::Damaged { .. }) => {
                tracing::warn!(error = %e, "damaged checkpoint; falling back to the previous checkpoint (or the full WAL if there is none)");
                continue;
            }
            Err(e) => return Err(e),
        };
        if meta.lsn != lsn {
            tracing::warn!(file = %path.display(), header_lsn = %meta.lsn,
                "checkpoint file name and header disagree on the LSN; not used");
            continue;
        }
        if lsn.0 > 0 {
            if let Some(t) = wal.term_at(Lsn(lsn.0 - 1)) {
                if t != meta.term {
                    tracing::warn!(file = %path.display(), checkpoint_lsn = %lsn, checkpoint_term = meta.term, wal_term = t,
                        "checkpoint was taken on another history (its last record's term differs from this WAL's); not used");
                    continue;
                }
            }
        }
        if lsn.0 < end {
            let ok = match wal.reader(lsn) {
                Ok(mut r) => matches!(r.next(), Some(Ok(_)) | None),
                Err(_) => false,
            };
            if !ok {
                tracing::warn!(file = %path.display(), checkpoint_lsn = %lsn,
                    "checkpoint LSN is not a record boundary of this WAL; not used");
                continue;
            }
        }
        return Ok(Loaded {
            kv,
            meta: Some(meta),
            needs_rebuild: false,
        });
    }
    if first > 0 {
        tracing::error!(wal_first = %Lsn(first), dir = %dir.display(),
            "no usable checkpoint covers the oldest retained WAL, so the key-value state cannot be rebuilt from this node's own files; it applies nothing and needs a rebuild from the leader (walship rebuild)");
        return Ok(Loaded {
            kv: KvStore::new(),
            meta: None,
            needs_rebuild: true,
        });
    }
    Ok(Loaded {
        kv: KvStore::new(),
        meta: None,
        needs_rebuild: false,
    })
}

/// Take a checkpoint of the applied state now (no-op, `Ok(None)`, when nothing
/// was applied since the last one or the state has a gap). Runs off the async
/// threads; `reason` goes to the log.
pub async fn checkpoint_now(
    shared: &Arc<Shared>,
    reason: &'static str,
) -> Result<Option<CheckpointMeta>, String> {
    let s = shared.clone();
    tokio::task::spawn_blocking(move || take_blocking(&s, reason))
        .await
        .map_err(|e| format!("checkpoint task failed: {e}"))?
}

fn take_blocking(shared: &Shared, reason: &'static str) -> Result<Option<CheckpointMeta>, String> {
    let ck = &shared.ckpt;
    let _w = ck.write_lock.lock();
    let started = Instant::now();
    let snap = shared.kv.read().clone();
    let lsn = snap.applied_lsn();
    let last = ck.last_lsn();
    if last == Some(lsn) {
        return Ok(None);
    }
    if lsn < shared.wal.first_lsn().0 {
        // The applier is stuck at a gap; a checkpoint of this state is of no use.
        return Ok(None);
    }
    let cloned = started.elapsed();
    let res = checkpoint::write(&ck.dir, &snap, Lsn(lsn), snap.applied_term());
    drop(snap);
    let m = &shared.metrics;
    match res {
        Ok(meta) => {
            let took = started.elapsed();
            m.checkpoints_total.inc();
            m.checkpoint_lsn.set(meta.lsn.0 as i64);
            m.checkpoint_bytes.set(meta.len as i64);
            m.checkpoint_duration_seconds.set(took.as_secs_f64());
            tracing::info!(
                reason,
                lsn = %meta.lsn,
                term = meta.term,
                entries = meta.entries,
                bytes = meta.len,
                snapshot_ms = cloned.as_millis() as u64,
                duration_ms = took.as_millis() as u64,
                file = %meta.path.display(),
                "checkpoint written"
            );
            *ck.last.lock() = Some(meta.clone());
            ck.retention_wake.notify_one();
            Ok(Some(meta))
        }
        Err(e) => {
            m.checkpoint_failures_total.inc();
            tracing::error!(reason, lsn = %Lsn(lsn), error = %e,
                "checkpoint failed; the previous checkpoint stays in use and WAL after it is kept; retried at the next trigger");
            Err(e.to_string())
        }
    }
}

/// The checkpointer task: a checkpoint after `checkpoint.max_wal` of WAL applied
/// since the last one (or as much as the last checkpoint holds, when that is
/// more: [`CheckpointState::max_wal_due`]), every `checkpoint.interval`, and when asked
/// ([`CheckpointState::wanted`]). Runs until shutdown (the shutdown checkpoint is
/// taken by `NodeHandle::shutdown`).
pub async fn run(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let interval = shared
        .cfg
        .checkpoint
        .interval
        .max(Duration::from_millis(10));
    let max_wal = shared.cfg.checkpoint.max_wal;
    let over_max_wal = || shared.applied_lsn() >= shared.ckpt.max_wal_due(max_wal);
    // Applied before this task started (start-up replay): the applier only
    // signals what it applies from now on.
    if over_max_wal() {
        shared.ckpt.max_wal_reached.notify_one();
    }
    // One timer for the whole run, re-armed after each checkpoint (not a new
    // timer entry per wake-up).
    let timer = tokio::time::sleep(interval);
    tokio::pin!(timer);
    loop {
        let reason = tokio::select! {
            _ = shutdown.changed() => return,
            _ = &mut timer => "interval",
            _ = shared.ckpt.wanted.notified() => "retention",
            _ = shared.ckpt.max_wal_reached.notified() => {
                if !over_max_wal() {
                    continue;
                }
                "max_wal"
            }
        };
        let _ = checkpoint_now(&shared, reason).await;
        timer.as_mut().reset(tokio::time::Instant::now() + interval);
        if *shutdown.borrow() {
            return;
        }
    }
}

/// The WAL was truncated at `to` below the applied LSN (an async failover took
/// back records this node had applied): delete the checkpoints above `to` and
/// reload the state from the newest checkpoint at or below it that the WAL still
/// covers, or from an empty state if the WAL starts at 0. Otherwise the node needs
/// a rebuild and its state is left empty (never half a state). Blocking; call it
/// where blocking is allowed.
pub fn rewind_state(shared: &Shared, to: u64) {
    let ck = &shared.ckpt;
    let _w = ck.write_lock.lock();
    let mut kv = shared.kv.write();
    if kv.applied_lsn() <= to {
        return;
    }
    if let Err(e) = checkpoint::remove_after(&ck.dir, Lsn(to)) {
        tracing::error!(error = %e, "cannot delete checkpoints above the truncation point; they are skipped at start-up (their history differs)");
    }
    let first = shared.wal.first_lsn().0;
    let mut restored: Option<(CheckpointMeta, KvStore)> = None;
    if let Ok(list) = checkpoint::list(&ck.dir) {
        for (lsn, path) in list {
            if lsn.0 > to || lsn.0 < first {
                continue;
            }
            match checkpoint::load(&path) {
                Ok(x) => {
                    restored = Some(x);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "checkpoint not usable to rewind the state; trying an older one")
                }
            }
        }
    }
    let (new, meta, msg) = match restored {
        Some((m, s)) => (
            s,
            Some(m),
            "reloaded the key-value state from an older checkpoint",
        ),
        None if first == 0 => (
            KvStore::new(),
            None,
            "rebuilding the key-value state from the start of the WAL",
        ),
        None => {
            shared.follower.lock().needs_rebuild = true;
            (KvStore::new(), None, "no checkpoint at or below the cut is usable and the WAL does not start at 0: the node needs a rebuild")
        }
    };
    tracing::error!(
        applied = %Lsn(kv.applied_lsn()),
        cut_at = %Lsn(to),
        from = %Lsn(new.applied_lsn()),
        "the cut WAL tail had been applied (an async failover took it back); {msg}"
    );
    let a = new.applied_lsn();
    *kv = new;
    *ck.last.lock() = meta;
    drop(kv);
    shared.applied_tx.send_replace(a);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(last: Option<(u64, u64)>) -> CheckpointState {
        let meta = last.map(|(lsn, len)| CheckpointMeta {
            lsn: Lsn(lsn),
            term: 1,
            entries: 1,
            len,
            path: PathBuf::from("unused"),
        });
        CheckpointState::new(PathBuf::from("unused"), meta, StartupReplay::default())
    }

    #[test]
    fn a_small_state_is_checkpointed_every_max_wal() {
        assert_eq!(state(None).max_wal_due(256), 256);
        assert_eq!(state(Some((1000, 10))).max_wal_due(256), 1256);
        // A zero max_wal still needs one byte applied past the last checkpoint.
        assert_eq!(state(Some((1000, 0))).max_wal_due(0), 1001);
    }

    #[test]
    fn a_state_larger_than_max_wal_waits_for_as_much_wal_as_it_holds() {
        // A 1 MiB checkpoint with max_wal 64 KiB: the next is due 1 MiB later,
        // not every 64 KiB (which would rewrite the whole state 16 times over).
        assert_eq!(
            state(Some((5 << 20, 1 << 20))).max_wal_due(64 << 10),
            (5 << 20) + (1 << 20)
        );
        assert_eq!(
            state(Some((u64::MAX - 1, 1 << 20))).max_wal_due(1),
            u64::MAX
        );
    }
}
