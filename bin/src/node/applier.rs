//! The applier: replays committed WAL records into the state machine.
//!
//! Invariant (DESIGN.md "Commit"): a record is applied only once it is below
//! both the commit LSN this node knows and its own flush LSN, so no node ever
//! shows a write that a failover could take back. Records are applied exactly
//! once, in LSN order; the applied LSN only grows (except when the state is
//! rebuilt from scratch after a truncation below it, which is logged).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use receiver::state::{Applied, StateMachine};

use super::Shared;

/// Records applied per lock hold, so readers are never starved by a long replay.
const APPLY_BATCH_RECORDS: usize = 4096;

/// Advances of at most this many WAL bytes are applied inline (see `run`).
const INLINE_APPLY_BYTES: u64 = 64 << 10;

/// Run until the node shuts down.
pub async fn run(shared: Arc<Shared>) {
    let mut commit_rx = shared.commit_tx.subscribe();
    let mut flush_rx = shared.flush_tx.subscribe();
    let mut shutdown = shared.shutdown.clone();
    loop {
        let limit = (*commit_rx.borrow_and_update()).min(*flush_rx.borrow_and_update());
        let applied = shared.applied_lsn();
        if limit > applied {
            // A small advance (the common case: a few records per commit) is
            // applied on this task: a hand-off to the blocking pool would cost
            // a thread wake-up per commit on every node. Larger ones (catch-up,
            // bulk loads) go to the blocking pool so the runtime keeps serving.
            let result = if limit - applied <= INLINE_APPLY_BYTES {
                Ok(apply_batch(&shared, limit))
            } else {
                let s = shared.clone();
                tokio::task::spawn_blocking(move || apply_batch(&s, limit)).await
            };
            match result {
                Ok(Ok(n)) if n > 0 => continue,
                Ok(Ok(_)) => {}
                Ok(Err(ApplyError::Gap { applied, first })) => {
                    if shared
                        .ckpt
                        .gap_logged
                        .swap(first, std::sync::atomic::Ordering::Relaxed)
                        != first
                    {
                        tracing::error!(
                            applied = %wal::Lsn(applied),
                            first = %wal::Lsn(first),
                            "the next record to apply is below the oldest retained WAL (no checkpoint covers the gap); the node applies nothing, keeps its state as of {} and needs a rebuild",
                            wal::Lsn(applied)
                        );
                    }
                    shared.follower.lock().needs_rebuild = true;
                }
                Ok(Err(ApplyError::Wal(e))) => {
                    tracing::error!(
                        applied = %wal::Lsn(applied),
                        commit = %wal::Lsn(limit),
                        error = %e,
                        "cannot read committed WAL to apply it; the node keeps serving its current state and retries in 1s"
                    );
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
                Err(_) => return,
            }
        }
        let flush_limits = listens_to_flush(shared.applied_lsn(), *commit_rx.borrow());
        tokio::select! {
            r = commit_rx.changed() => if r.is_err() { return },
            r = flush_rx.changed(), if flush_limits => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// Apply, on the calling task, what is committed and flushed now if that is a
/// small advance (at most `INLINE_APPLY_BYTES`); anything larger, and any error,
/// is left to the applier task (which logs errors and retries). Exactly-once and
/// in order as the applier's own batches: `apply_batch` starts from the applied
/// LSN it reads under the state's write lock.
///
/// The follower's receiver calls it right before an fdatasync it runs on its own
/// worker thread (light load), so the apply LSN of the previous write rides in
/// the flush status instead of a status of its own.
///
/// It never waits for the state's lock: while a checkpoint clones the map (or a
/// rewind replaces it) it returns at once, so the receiver's worker thread is not
/// held behind them (the applier task applies later).
pub fn apply_small_advance(shared: &Shared) {
    if shared.kv.is_locked() {
        return;
    }
    let limit = (*shared.commit_tx.borrow()).min(*shared.flush_tx.borrow());
    let applied = shared.applied_lsn();
    if limit > applied && limit - applied <= INLINE_APPLY_BYTES {
        let _ = apply_batch(shared, limit);
    }
}

/// Whether the applier, about to sleep with state applied up to `applied` and the
/// commit LSN at `commit`, must also wake on flush advances.
///
/// A flush advance can raise the apply limit `min(commit, flush)` above `applied`
/// only while `applied < commit`; otherwise only a commit advance can, so flushes
/// (one per write on a follower, every write on a leader) do not wake the applier.
/// The test is on `applied`, which only the applier changes, not on the flush LSN:
/// a flush that passed the commit LSN after the limit was read (not yet seen by
/// this task) must still wake it, or the last committed records of a burst would
/// wait for the next write.
fn listens_to_flush(applied: u64, commit: u64) -> bool {
    applied < commit
}

/// Why a batch could not be applied.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    /// The WAL could not be read.
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    /// The next record to apply is below the oldest retained WAL: applying what
    /// follows would build half a state.
    #[error("applied LSN {applied} is below the oldest retained WAL {first}")]
    Gap {
        /// The state's applied LSN.
        applied: u64,
        /// The WAL's first LSN.
        first: u64,
    },
}

/// Apply committed records from the applied LSN up to `limit` (at most one batch).
/// Records ending at or below the start-up replay target are counted as the
/// start-up replay.
fn apply_batch(shared: &Shared, limit: u64) -> Result<usize, ApplyError> {
    let mut kv = shared.kv.write();
    let applied = kv.applied_lsn();
    let first = shared.wal.first_lsn().0;
    if applied < first {
        return Err(ApplyError::Gap { applied, first });
    }
    let from = applied;
    let startup = &shared.ckpt.startup;
    let replay_target = startup.target_lsn;
    let mut replayed = 0u64;
    let mut reader = shared.wal.reader(wal::Lsn(from))?;
    let mut n = 0;
    while n < APPLY_BATCH_RECORDS {
        // Payloads as shares of the WAL mapping: the map keeps values without a
        // copy (receiver::state::KvStore, "Where values live").
        let Some(rec) = reader.next_shared() else {
            break;
        };
        let (rec, shared) = rec?;
        if rec.end.0 > limit {
            break;
        }
        kv.apply_shared(
            &Applied {
                lsn: rec.lsn.0,
                end: rec.end.0,
                term: rec.term,
                kind: rec.kind,
                payload: rec.payload,
            },
            &shared,
        );
        if rec.end.0 <= replay_target {
            replayed += 1;
        }
        n += 1;
    }
    let applied = kv.applied_lsn().max(from);
    drop(kv);
    if replayed > 0 {
        let total = startup.replayed.fetch_add(replayed, Ordering::Relaxed) + replayed;
        shared.metrics.startup_replayed_records.set(total as i64);
    }
    if applied >= replay_target && !startup.done.swap(true, Ordering::AcqRel) {
        let ms = startup
            .started
            .map(|s| s.elapsed().as_millis() as u64)
            .unwrap_or(0);
        startup.duration_ms.store(ms, Ordering::Relaxed);
        tracing::info!(
            records = startup.replayed.load(Ordering::Relaxed),
            from = %wal::Lsn(startup.checkpoint_lsn.unwrap_or(0)),
            to = %wal::Lsn(replay_target),
            since_start_ms = ms,
            "start-up replay finished: the local WAL after the checkpoint is applied"
        );
    }
    shared.metrics.records_applied.inc_by(n as u64);
    shared.applied_tx.send_if_modified(|a| {
        if applied > *a {
            *a = applied;
            true
        } else {
            false
        }
    });
    // checkpoint.max_wal (or the last checkpoint's size) applied since the
    // last checkpoint: tell the checkpointer (it is not woken by every apply).
    if applied >= shared.ckpt.max_wal_due(shared.cfg.checkpoint.max_wal) {
        shared.ckpt.max_wal_reached.notify_one();
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::listens_to_flush;

    #[test]
    fn a_flush_past_the_commit_lsn_still_wakes_an_applier_behind_it() {
        // Applied up to 100 (the flush LSN when the limit was read); commit 200;
        // the flush LSN moved to 250 meanwhile: the applier must listen to flushes.
        assert!(listens_to_flush(100, 200));
        // Applied up to the commit LSN: flushes cannot raise the limit.
        assert!(!listens_to_flush(200, 200));
        assert!(!listens_to_flush(300, 200));
    }
}
