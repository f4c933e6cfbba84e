//! WAL retention (every node): which segments may go, and which lagging member
//! is cut loose.
//!
//! WAL below `horizon = min(last checkpoint LSN, flush LSN, every member's flush
//! LSN that is not cut loose)` may be removed, but at least `wal.min_retained` bytes
//! behind the write end are always kept (PostgreSQL's `wal_keep_size`). On the
//! leader a member whose flush LSN falls more than `wal.max_retained` behind the
//! write end is **cut loose** (PostgreSQL's `max_slot_wal_keep_size`): logged once
//! with its id and LSNs, shown as `needs_rebuild` in `/status`, `walship status` and
//! `walship_followers_needing_rebuild`, and no longer holds WAL. It stays cut loose
//! until it streams again within the cap. A member the leader has not heard from
//! in its term holds the WAL the leader has (its position is unknown) until that
//! exceeds `max_retained`; it is not marked, since it may need nothing: when it
//! connects, the sender refuses it with `wal_not_available` if its WAL is gone.
//!
//! A follower knows no other member's position: it keeps WAL back to its last
//! checkpoint, and at least `min_retained`.
//!
//! A retention pin (`Shared::retention_pins`, held by a leader serving a rebuild)
//! keeps the WAL at and above it, whatever `max_retained` says.
//!
//! When the last checkpoint is more than `max_retained` behind the write end,
//! retention asks the checkpointer for one. Segments are removed with
//! `Wal::remove_before` on a blocking thread; the WAL's writer lock is held only to
//! pick the victims, never while files are deleted, so appends go on.
//!
//! Per member, `safe_wal_size = max_retained − (write end − its flush LSN)` (0 once
//! cut loose) is the WAL it may still fall behind before it is cut loose
//! (PostgreSQL's `pg_replication_slots.safe_wal_size`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shipper::progress::FollowerState;
use wal::Lsn;

use super::checkpointer::CutLoose;
use super::Shared;

/// How often retention runs (also woken by every checkpoint).
const PERIOD: Duration = Duration::from_millis(500);

/// Let the key-value map go of WAL segments retention removed that are less than
/// half live (their values are copied out), and publish how many removed segments
/// it still holds (`KvStore::release_segments_below`). Runs every retention round,
/// so a held segment is let go soon after overwrites bring it under half.
async fn release_shared_segments(shared: &Arc<Shared>) {
    let first = shared.wal.first_lsn().0;
    let seg_size = shared.wal.segment_size();
    let has_removed = shared
        .kv
        .read()
        .shared_segments()
        .range(..first)
        .next()
        .is_some();
    if !has_removed {
        shared.metrics.kv_pinned_wal_segments.set(0);
        return;
    }
    let s = shared.clone();
    // A pass over the map under its write lock when anything is copied: off the
    // async threads.
    let Ok(r) =
        tokio::task::spawn_blocking(move || s.kv.write().release_segments_below(first, seg_size))
            .await
    else {
        return;
    };
    shared
        .metrics
        .kv_pinned_wal_segments
        .set(r.pinned_segments as i64);
    if r.copied_values > 0 {
        shared
            .metrics
            .kv_released_value_bytes_total
            .inc_by(r.copied_bytes);
        tracing::debug!(
            values = r.copied_values,
            bytes = r.copied_bytes,
            pinned_segments = r.pinned_segments,
            "copied key-value values out of removed WAL segments less than half live, letting their disk blocks go"
        );
    }
}

/// One member's retention figures (leader side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRetention {
    /// Member id.
    pub id: String,
    /// Its flush LSN as this leader knows it (None: not heard from in this term).
    pub flush_lsn: Option<u64>,
    /// Bytes it may still fall behind before it is cut loose (0 when cut loose).
    pub safe_wal_size: u64,
    /// True once cut loose.
    pub cut_loose: bool,
}

/// Every other member's flush LSN as this leader knows it (None when not leading).
fn member_positions(shared: &Shared) -> Option<HashMap<String, u64>> {
    let gate = shared.leader.lock().as_ref().map(|l| l.gate.clone())?;
    Some(
        gate.followers()
            .into_iter()
            .map(|(id, pos, _)| (id, pos.flush_lsn))
            .collect(),
    )
}

/// Per-member retention figures for `/status` and metrics (empty when not leading).
pub fn members(shared: &Shared) -> Vec<MemberRetention> {
    let Some(pos) = member_positions(shared) else {
        return Vec::new();
    };
    let end = shared.wal.write_lsn().0;
    let max = shared.cfg.wal.max_retained;
    let cut = shared.ckpt.cut_loose.lock().clone();
    shared
        .cfg
        .members
        .iter()
        .filter(|m| m.id != shared.cfg.node_id)
        .map(|m| {
            let flush = pos.get(&m.id).copied();
            let is_cut = cut.contains_key(&m.id);
            let behind = end.saturating_sub(flush.unwrap_or(shared.wal.first_lsn().0));
            MemberRetention {
                id: m.id.clone(),
                flush_lsn: flush,
                safe_wal_size: if is_cut {
                    0
                } else {
                    max.saturating_sub(behind)
                },
                cut_loose: is_cut,
            }
        })
        .collect()
}

/// Decide what to remove now; updates the cut-loose set. Returns the LSN below
/// which whole segments may be removed (None: nothing to do).
fn plan(shared: &Shared) -> Option<u64> {
    let wal = &shared.wal;
    let end = wal.write_lsn().0;
    let first = wal.first_lsn().0;
    let flush = wal.flush_lsn().0;
    let max = shared.cfg.wal.max_retained;
    let min = shared.cfg.wal.min_retained;
    let ckpt = shared.ckpt.last_lsn();
    if ckpt.is_none_or(|c| end.saturating_sub(c) > max) && end.saturating_sub(first) > max {
        // Retention is held back by the checkpoint: ask for a fresh one.
        shared.ckpt.wanted.notify_one();
    }
    let mut horizon = ckpt.unwrap_or(0).min(flush);
    if let Some(pos) = member_positions(shared) {
        let mut cut = shared.ckpt.cut_loose.lock();
        // A cut-loose member that streams again within the cap is back.
        cut.retain(|id, _| match pos.get(id) {
            Some(&p) if p >= first && end.saturating_sub(p) <= max => {
                tracing::info!(member = %id, flush_lsn = %Lsn(p), "member streams again within wal.max_retained; it holds WAL again");
                false
            }
            _ => true,
        });
        for m in &shared.cfg.members {
            if m.id == shared.cfg.node_id || cut.contains_key(&m.id) {
                continue;
            }
            match pos.get(&m.id) {
                Some(&p) if end.saturating_sub(p) > max => {
                    tracing::warn!(
                        member = %m.id,
                        flush_lsn = %Lsn(p),
                        leader_end = %Lsn(end),
                        max_retained = max,
                        "member is more than wal.max_retained behind: it is cut loose, the WAL it needs will be removed, and it must be rebuilt (walship rebuild)"
                    );
                    cut.insert(
                        m.id.clone(),
                        CutLoose {
                            flush_lsn: p,
                            leader_end: end,
                        },
                    );
                    if let Some(l) = shared.leader.lock().as_ref() {
                        l.progress
                            .lock()
                            .set_state(&m.id, FollowerState::NeedsRebuild);
                    }
                    shared
                        .follower_states
                        .lock()
                        .insert(m.id.clone(), FollowerState::NeedsRebuild);
                }
                Some(&p) => horizon = horizon.min(p),
                // Unknown position: keep what we have, up to the cap.
                None if end.saturating_sub(first) <= max => horizon = horizon.min(first),
                None => {}
            }
        }
    }
    // A pin (a leader serving a rebuild) outranks everything, max_retained included.
    if let Some(p) = shared.retention_pins.min() {
        horizon = horizon.min(p);
    }
    let target = horizon.min(end.saturating_sub(min));
    let seg = wal.segment_size().max(1);
    // Only whole segments go: nothing to do unless a segment boundary is passed.
    if target / seg > first / seg {
        Some(target)
    } else {
        None
    }
}

/// Run until shutdown.
pub async fn run(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(PERIOD) => {}
            _ = shared.ckpt.retention_wake.notified() => {}
        }
        if shared.wal_failure().is_some() {
            // A failed WAL refuses every change (remove_before included): nothing
            // to do until the node is restarted (and no ERROR every period).
            return;
        }
        release_shared_segments(&shared).await;
        let Some(target) = plan(&shared) else {
            continue;
        };
        let wal = shared.wal.clone();
        let before = wal.first_lsn();
        let r = tokio::task::spawn_blocking(move || wal.remove_before(Lsn(target))).await;
        match r {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                let after = shared.wal.first_lsn();
                shared.metrics.wal_removed_segments_total.inc_by(n as u64);
                tracing::info!(
                    segments = n,
                    from = %before,
                    to = %after,
                    horizon = %Lsn(target),
                    checkpoint = %Lsn(shared.ckpt.last_lsn().unwrap_or(0)),
                    "retention removed WAL segments [{before}, {after})"
                );
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, below = %Lsn(target), "cannot remove old WAL segments; WAL is kept and removal retried in {PERIOD:?}");
            }
            Err(_) => return,
        }
    }
}
