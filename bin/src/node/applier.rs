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
        // A flush advance can raise the limit only while the flush LSN is
        // below the commit LSN (a follower behind the commit it heard of);
        // otherwise only a commit advance can, so a flush (one per write on
        // a follower, always the case on a leader) does not wake the applier.
        let flush_limits = *flush_rx.borrow() < *commit_rx.borrow();
        tokio::select! {
            r = commit_rx.changed() => if r.is_err() { return },
            r = flush_rx.changed(), if flush_limits => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
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
        let Some(rec) = reader.next() else { break };
        let rec = rec?;
        if rec.end.0 > limit {
            break;
        }
        kv.apply(&Applied {
            lsn: rec.lsn.0,
            end: rec.end.0,
            term: rec.term,
            kind: rec.kind,
            payload: rec.payload,
        });
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
    // checkpoint.max_wal applied since the last checkpoint: tell the
    // checkpointer (it is not woken by every apply).
    let base = shared.ckpt.last_lsn().unwrap_or(0);
    if applied.saturating_sub(base) >= shared.cfg.checkpoint.max_wal.max(1) {
        shared.ckpt.max_wal_reached.notify_one();
    }
    Ok(n)
}
