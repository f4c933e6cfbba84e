//! Periodic bookkeeping: LSN and lag gauges, and the leader's list of
//! synchronous standbys for the failover core (sync mode).

use std::sync::Arc;
use std::time::Duration;

use super::{election::DriverInput, Shared};

/// Sampling period.
const PERIOD: Duration = Duration::from_millis(100);

/// Run until shutdown.
pub async fn run(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut last_sync: Vec<String> = Vec::new();
    let mut was_leader = false;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
        let m = &shared.metrics;
        m.lsn
            .with_label_values(&["write"])
            .set(shared.wal.write_lsn().0 as i64);
        m.lsn
            .with_label_values(&["flush"])
            .set(*shared.flush_tx.borrow() as i64);
        m.lsn
            .with_label_values(&["commit"])
            .set(shared.commit_lsn() as i64);
        m.lsn
            .with_label_values(&["apply"])
            .set(shared.applied_lsn() as i64);
        let first = shared.wal.first_lsn().0;
        let end = shared.wal.write_lsn().0;
        m.wal_retained_bytes.set(end.saturating_sub(first) as i64);
        m.wal_max_retained_bytes
            .set(shared.cfg.wal.max_retained as i64);
        let seg = shared.wal.segment_size().max(1);
        m.wal_segments.set((end / seg - first / seg + 1) as i64);

        let leader = shared
            .leader
            .lock()
            .as_ref()
            .map(|l| (l.gate.clone(), l.progress.clone()));
        if let Some((gate, progress)) = leader {
            let followers = gate.followers();
            let reports = progress.lock().report();
            let retention = super::retention::members(&shared);
            for r in &retention {
                m.follower_safe_wal_size_bytes
                    .with_label_values(&[&r.id])
                    .set(r.safe_wal_size as i64);
            }
            let mut needing_rebuild = retention
                .iter()
                .filter(|r| {
                    r.cut_loose
                        && !reports
                            .iter()
                            .any(|p| p.id == r.id && p.state == "needs_rebuild")
                })
                .count() as i64;
            let mut sync = Vec::new();
            for r in &reports {
                m.follower_lag_bytes
                    .with_label_values(&[&r.id])
                    .set(r.replay_lag_bytes as i64);
                for (kind, v) in [
                    ("write", r.write_lag_us),
                    ("flush", r.flush_lag_us),
                    ("replay", r.replay_lag_us),
                ] {
                    m.follower_lag_seconds
                        .with_label_values(&[&r.id, kind])
                        .set(v.unwrap_or(0) as f64 / 1e6);
                }
                if r.state == "needs_rebuild" {
                    needing_rebuild += 1;
                }
            }
            for (id, pos, state) in &followers {
                m.follower_connected
                    .with_label_values(&[id])
                    .set(pos.connected as i64);
                for s in ["async", "potential", "sync", "quorum"] {
                    m.follower_sync_state
                        .with_label_values(&[id, s])
                        .set((state.as_str() == s) as i64);
                }
                if state.as_str() == "sync" {
                    sync.push(id.clone());
                }
            }
            m.followers_needing_rebuild.set(needing_rebuild);
            if shared.cfg.replication.mode == crate::config::Mode::Sync && sync != last_sync {
                last_sync = sync.clone();
                let _ = shared.failover_tx.try_send(DriverInput::SyncStandbys(sync));
            }
        } else if !last_sync.is_empty() || was_leader {
            // No longer leading: the per-follower figures describe nothing now.
            last_sync.clear();
            m.follower_lag_bytes.reset();
            m.follower_lag_seconds.reset();
            m.follower_sync_state.reset();
            m.follower_connected.reset();
            m.follower_safe_wal_size_bytes.reset();
            m.followers_needing_rebuild.set(0);
        }
        was_leader = shared.leader.lock().is_some();
    }
}
