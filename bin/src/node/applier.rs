//! The applier: replays committed WAL records into the state machine.
//!
//! Invariant (DESIGN.md "Commit"): a record is applied only once it is below
//! both the commit LSN this node knows and its own flush LSN, so no node ever
//! shows a write that a failover could take back. Records are applied exactly
//! once, in LSN order; the applied LSN only grows (except when the state is
//! rebuilt from scratch after a truncation below it, which is logged).

use std::sync::Arc;

use receiver::state::{Applied, StateMachine};

use super::Shared;

/// Records applied per lock hold, so readers are never starved by a long replay.
const APPLY_BATCH_RECORDS: usize = 4096;

/// Run until the node shuts down.
pub async fn run(shared: Arc<Shared>) {
    let mut commit_rx = shared.commit_tx.subscribe();
    let mut flush_rx = shared.flush_tx.subscribe();
    let mut shutdown = shared.shutdown.clone();
    loop {
        let limit = (*commit_rx.borrow_and_update()).min(*flush_rx.borrow_and_update());
        let applied = shared.applied_lsn();
        if limit > applied {
            let s = shared.clone();
            let result = tokio::task::spawn_blocking(move || apply_batch(&s, limit)).await;
            match result {
                Ok(Ok(n)) if n > 0 => continue,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
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
        tokio::select! {
            r = commit_rx.changed() => if r.is_err() { return },
            r = flush_rx.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// Apply committed records from the applied LSN up to `limit` (at most one batch).
fn apply_batch(shared: &Shared, limit: u64) -> Result<usize, wal::WalError> {
    let mut kv = shared.kv.write();
    let from = kv.applied_lsn().max(shared.wal.first_lsn().0);
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
        n += 1;
    }
    let applied = kv.applied_lsn().max(from);
    drop(kv);
    shared.metrics.records_applied.inc_by(n as u64);
    shared.applied_tx.send_if_modified(|a| {
        if applied > *a {
            *a = applied;
            true
        } else {
            false
        }
    });
    Ok(n)
}
