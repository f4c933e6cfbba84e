//! The `/status` document (INTERFACE.md), shared by HTTP, the binary protocol
//! and `walship status`.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::node::{Role, Shared};

fn lsn(v: u64) -> String {
    wal::Lsn(v).to_string()
}

/// The status of this node as JSON. LSNs are `X/X` strings.
pub fn status_json(shared: &Shared) -> Value {
    let role = shared.role();
    let startup = &shared.ckpt.startup;
    let fv = shared.follower.lock().clone();
    let write = shared.wal.write_lsn().0;
    let flush = *shared.flush_tx.borrow();
    let mut doc = json!({
        "node_id": shared.cfg.node_id,
        "cluster_id": shared.cfg.cluster_id,
        "role": role.role.as_str(),
        "state": if role.state == crate::node::NodeState::WalFailed {
            "wal_failed"
        } else if role.role != Role::Leader && shared.rebuild.is_active() {
            "rebuilding"
        } else if role.role == Role::Follower && fv.needs_rebuild && role.state != crate::node::NodeState::Fenced {
            "needs_rebuild"
        } else {
            role.state.as_str()
        },
        "term": role.term,
        "leader_id": role.leader_id,
        "paused": role.paused,
        "accepting_writes": role.accepting_writes,
        "mode": shared.cfg.replication.mode.as_str(),
        "write_lsn": lsn(write),
        "flush_lsn": lsn(flush),
        "commit_lsn": lsn(shared.commit_lsn()),
        "apply_lsn": lsn(shared.applied_lsn()),
        "first_lsn": lsn(shared.wal.first_lsn().0),
        "wal_failure": shared.wal_failure(),
        "checkpoint": shared.ckpt.last.lock().as_ref().map(|m| json!({
            "lsn": lsn(m.lsn.0), "term": m.term, "entries": m.entries, "bytes": m.len,
        })),
        "replayed_at_startup": startup.replayed.load(Ordering::Relaxed),
        "startup": {
            "checkpoint_lsn": startup.checkpoint_lsn.map(lsn),
            "replay_to_lsn": lsn(startup.target_lsn),
            "replayed_records": startup.replayed.load(Ordering::Relaxed),
            "done": startup.done.load(Ordering::Relaxed),
            "duration_ms": startup.done.load(Ordering::Relaxed).then(|| startup.duration_ms.load(Ordering::Relaxed)),
        },
        "members": shared.cfg.members.iter().map(|m| json!({
            "id": m.id, "addr": m.addr.to_string(), "http": m.http.to_string(), "priority": m.priority,
        })).collect::<Vec<_>>(),
    });
    if role.role != Role::Leader {
        doc["replication"] = json!({
            "connected": fv.connected,
            "caught_up": fv.caught_up,
            "leader_flush_lsn": lsn(fv.leader_flush_lsn),
            "lag_bytes": fv.leader_flush_lsn.saturating_sub(shared.applied_lsn()),
            "needs_rebuild": fv.needs_rebuild,
            "last_error": fv.last_error,
        });
        doc["rebuild"] = serde_json::to_value(shared.rebuild.progress()).unwrap_or(Value::Null);
    }
    let leader = shared
        .leader
        .lock()
        .as_ref()
        .map(|l| (l.gate.clone(), l.progress.clone()));
    if let Some((gate, progress)) = leader {
        let reports = progress.lock().report();
        let states = shared.follower_states.lock().clone();
        let retention = crate::node::retention::members(shared);
        let mut followers = Vec::new();
        for m in &shared.cfg.members {
            if m.id == shared.cfg.node_id {
                continue;
            }
            let r = reports.iter().find(|r| r.id == m.id);
            let ret = retention.iter().find(|x| x.id == m.id);
            let state = if ret.is_some_and(|x| x.cut_loose) {
                "needs_rebuild"
            } else {
                states
                    .get(&m.id)
                    .map(|s| s.as_str())
                    .unwrap_or("disconnected")
            };
            let safe_wal_size = ret.map(|x| x.safe_wal_size).unwrap_or(0);
            let sync_state = gate.sync_state(&m.id).as_str();
            followers.push(match r {
                Some(r) => json!({
                    "id": m.id,
                    "state": state,
                    "write_lsn": lsn(r.write_lsn),
                    "flush_lsn": lsn(r.flush_lsn),
                    "apply_lsn": lsn(r.apply_lsn),
                    "lag_bytes": write.saturating_sub(r.apply_lsn),
                    "lag_seconds": r.replay_lag_us.unwrap_or(0) as f64 / 1e6,
                    "write_lag_seconds": r.write_lag_us.map(|v| v as f64 / 1e6),
                    "flush_lag_seconds": r.flush_lag_us.map(|v| v as f64 / 1e6),
                    "replay_lag_seconds": r.replay_lag_us.map(|v| v as f64 / 1e6),
                    "sync_state": sync_state,
                    "safe_wal_size": safe_wal_size,
                }),
                None => json!({
                    "id": m.id,
                    "state": state,
                    "write_lsn": lsn(0),
                    "flush_lsn": lsn(0),
                    "apply_lsn": lsn(0),
                    "lag_bytes": write,
                    "lag_seconds": 0.0,
                    "sync_state": sync_state,
                    "safe_wal_size": safe_wal_size,
                }),
            });
        }
        doc["followers"] = Value::Array(followers);
    }
    doc
}
