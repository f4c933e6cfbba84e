//! Role changes decided by the failover core, carried out on the node.

use std::sync::Arc;

use parking_lot::Mutex;
use shipper::gate::{CommitGate, SharedGate};
use shipper::progress::Progress;
use tokio::sync::watch;

use super::{replica, LeaderTerm, NodeState, Role, RoleInfo, Shared};
use crate::config::WalSync;

/// Start leading `term`: stop replicating, write the term's first record,
/// open a commit gate, accept writes.
///
/// If the term-start record cannot be written because the disk is full, this
/// node does not lead without it: writes are refused with `no_space` and the
/// record is retried (backoff up to 1 s) until it is written, the term ends
/// (another leader or term), or the node stops. A failed WAL leads nothing.
pub async fn become_leader(shared: &Arc<Shared>, term: u64) {
    replica::stop(shared).await;
    if shared.wal_failure().is_some() {
        return;
    }
    let mut pending = shared.term_start_pending.lock();
    *pending = None;
    match try_lead(shared, term) {
        Ok(()) => {}
        Err(e @ wal::WalError::NoSpace { .. }) => {
            shared.metrics.wal_no_space_errors_total.inc();
            tracing::error!(
                term,
                error = %e,
                "elected leader, but the term-start record cannot be written: the WAL disk is full. \
                 This node does not lead without it: writes are refused with no_space, and the record \
                 is retried until space is freed (no restart needed) or another leader takes over"
            );
            *pending = Some((term, e.to_string()));
            drop(pending);
            tokio::spawn(retry_term_start(shared.clone(), term));
        }
        Err(wal::WalError::Poisoned { .. }) => {
            drop(pending);
            shared.wal_failed("the term-start record");
        }
        Err(e) => {
            tracing::error!(term, error = %e, "cannot write the term-start record; this node will not lead (it takes no writes)");
        }
    }
}

/// Retry the term-start record of `term` (see [`become_leader`]) while this
/// node is still meant to lead it.
///
/// Invariant: the record is appended only while `term_start_pending` names
/// `term`, checked under that lock; stepping down clears it under the same
/// lock, so a retry never appends after the node began following another leader.
async fn retry_term_start(shared: Arc<Shared>, term: u64) {
    let mut shutdown = shared.shutdown.clone();
    let mut delay = std::time::Duration::from_millis(50);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(1));
        if shared.wal_failure().is_some() {
            return;
        }
        let mut pending = shared.term_start_pending.lock();
        if pending.as_ref().map(|p| p.0) != Some(term) {
            return;
        }
        match try_lead(&shared, term) {
            Ok(()) => {
                *pending = None;
                tracing::info!(
                    term,
                    "WAL disk has space again: term-start record written; this node leads now"
                );
                return;
            }
            Err(wal::WalError::NoSpace { .. }) => {
                shared.metrics.wal_no_space_errors_total.inc();
                continue;
            }
            Err(wal::WalError::Poisoned { .. }) => {
                *pending = None;
                drop(pending);
                shared.wal_failed("the term-start record");
                return;
            }
            Err(e) => {
                *pending = None;
                tracing::error!(term, error = %e, "cannot write the term-start record; this node will not lead (it takes no writes)");
                return;
            }
        }
    }
}

/// Write the term-start record of `term` and install the leader state (commit
/// gate, senders). Nothing is installed if the append fails.
fn try_lead(shared: &Arc<Shared>, term: u64) -> Result<(), wal::WalError> {
    let me = shared.cfg.node_id.clone();
    let members: Vec<String> = shared.cfg.members.iter().map(|m| m.id.clone()).collect();
    let mode = match shared.cfg.replication.mode {
        crate::config::Mode::Async => shipper::standbys::ReplicationMode::Async,
        crate::config::Mode::Sync => shipper::standbys::ReplicationMode::Sync,
        crate::config::Mode::Quorum => shipper::standbys::ReplicationMode::Quorum,
    };
    let policy = match shipper::standbys::resolve_policy(
        mode,
        shared.cfg.replication.standbys.as_deref(),
        &me,
        &members,
    ) {
        Ok(p) => p,
        Err(e) => {
            // Validated at start-up; cannot happen unless the config changed under us.
            tracing::error!(error = %e, "replication.standbys cannot be resolved; this leader acknowledges nothing until it is fixed");
            return Ok(());
        }
    };
    let gate = SharedGate::new(CommitGate::new(
        policy,
        shared.cfg.wal.sync == WalSync::Never,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Cleared before the term's senders can exist (a follower may connect the
    // moment the LeaderTerm is installed): clearing after would erase the
    // state of a session that already reported, which never reports again.
    shared.follower_states.lock().clear();
    let term_start_end = {
        let mut guard = shared.leader.lock();
        let appended = shared
            .wal
            .append(term, wal::kind::TERM_START, me.as_bytes())?;
        let end = appended.end.0;
        let mut progress = Progress::new();
        progress.record_local_write(end, super::now_us());
        let progress = Arc::new(Mutex::new(progress));
        let senders = Arc::new(shipper::sender::SenderContext {
            wal: shared.wal.clone(),
            term,
            leader_id: me.clone(),
            gate: gate.clone(),
            progress: progress.clone(),
            written: shared.written_tx.subscribe(),
            flushed: shared.flush_tx.subscribe(),
            commit: shared.commit_tx.subscribe(),
            stop: stop_rx,
            heartbeat: shared.cfg.failover.heartbeat_interval,
            max_chunk_bytes: 1 << 20,
            window_bytes: 64 << 20,
            commit_linger: COMMIT_LINGER,
            events: Arc::new(SenderEvents {
                shared: Arc::downgrade(shared),
                term,
                term_start_end: end,
            }),
        });
        *guard = Some(LeaderTerm {
            term,
            term_start_end: end,
            gate: gate.clone(),
            progress,
            accepting_writes: true,
            stop: stop_tx,
            senders,
        });
        end
    };
    shared.written_tx.send_if_modified(|w| {
        if term_start_end > *w {
            *w = term_start_end;
            true
        } else {
            false
        }
    });
    tracing::info!(
        term,
        start = %wal::Lsn(term_start_end),
        mode = shared.cfg.replication.mode.as_str(),
        "this node is now the leader; it accepts writes and ships WAL to followers"
    );
    // The flusher thread feeds the gate with every flush (Shared::leader_flushed,
    // called only while a leader term is installed). A flush that ended before
    // the term was installed covers less than `term_start_end` (the term-start
    // record was appended under the same lock as the install), so it commits
    // nothing of this term; feed it once anyway so the gate starts from it.
    shared.leader_flushed(*shared.flush_tx.borrow());
    Ok(())
}

/// How long a commit advance may wait to ride with the next WAL data before a
/// sender sends it on its own (see `shipper::sender`, "Commit LSN").
const COMMIT_LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// How a term's senders report to the node.
struct SenderEvents {
    shared: std::sync::Weak<Shared>,
    term: u64,
    term_start_end: u64,
}

impl shipper::sender::SenderEvents for SenderEvents {
    fn commits(&self, commits: shipper::Commits) {
        if let Some(s) = self.shared.upgrade() {
            s.publish_commits(commits, self.term_start_end);
        }
    }
    fn shipped(&self, bytes: u64) {
        if let Some(s) = self.shared.upgrade() {
            s.metrics.shipped_bytes_total.inc_by(bytes);
        }
    }
    fn state(&self, follower: &str, state: shipper::FollowerState) {
        if let Some(s) = self.shared.upgrade() {
            // Only while this term is led here: a session of an older term
            // that ends late must not overwrite the current term's state.
            let current = s.leader.lock().as_ref().map(|l| l.term) == Some(self.term);
            if current {
                s.follower_states.lock().insert(follower.to_string(), state);
            }
        }
    }
}

/// Stop leading (if leading): no more appends, waiting writes end with
/// "outcome unknown", the term's senders stop.
fn step_down(shared: &Shared, why: &str) {
    // A term-start record still being retried (full disk) is abandoned: this
    // node no longer leads that term.
    let mut pending = shared.term_start_pending.lock();
    *pending = None;
    let old = shared.leader.lock().take();
    drop(pending);
    if let Some(l) = old {
        let n = l.gate.fail_all(why);
        let _ = l.stop.send(true);
        tracing::info!(
            term = l.term,
            waiting_writes = n,
            "this node stopped leading: {why}; {n} waiting writes end with outcome unknown (they may still commit)"
        );
    }
}

/// Follow `leader` in `term` (None: leader unknown yet).
pub async fn become_follower(shared: &Arc<Shared>, term: u64, leader: Option<String>) {
    step_down(shared, "a newer leader or term exists");
    let me = &shared.cfg.node_id;
    match leader {
        Some(id) if &id != me => {
            shared.metrics.leader_changes_total.inc();
            tracing::info!(term, leader = %id, "following leader");
            replica::start(shared, id).await;
        }
        _ => {
            replica::stop(shared).await;
        }
    }
}

/// The leader of `term` lost its quorum: stop acknowledging at once.
pub fn fence(shared: &Shared, _term: u64) {
    step_down(shared, "fenced: it could not hear a majority");
}

/// Publish the core's role/term/leader (and the derived node state).
pub fn publish_core_state(shared: &Shared, core: &failover::Node) {
    if shared.wal_failure().is_some() {
        // The node shows `wal_failed` for good (see Shared::wal_failed).
        return;
    }
    let role = match core.role() {
        failover::Role::Leader => Role::Leader,
        failover::Role::Follower => Role::Follower,
        _ => Role::Candidate,
    };
    let mut accepting = core.accepting_writes();
    match shared.leader.lock().as_mut() {
        Some(l) => l.accepting_writes = accepting,
        // Elected but without leader state (the term-start record is still
        // being retried on a full disk): it takes no write.
        None => accepting = false,
    }
    let fv = shared.follower.lock().clone();
    let state = match role {
        Role::Leader if accepting => NodeState::Streaming,
        Role::Leader => NodeState::Stopping,
        _ if core.is_fenced() => NodeState::Fenced,
        _ if shared.rebuild.is_active() => NodeState::Rebuilding,
        _ if fv.needs_rebuild => NodeState::NeedsRebuild,
        _ if fv.connected => {
            if fv.caught_up {
                NodeState::Streaming
            } else {
                NodeState::Catchup
            }
        }
        _ => NodeState::Disconnected,
    };
    let info = RoleInfo {
        role,
        state,
        term: core.term(),
        leader_id: core.leader_id().map(str::to_string),
        accepting_writes: accepting,
        paused: core.paused(),
    };
    shared.metrics.term.set(info.term as i64);
    for r in [Role::Follower, Role::Candidate, Role::Leader] {
        shared
            .metrics
            .role
            .with_label_values(&[r.as_str()])
            .set((r == role) as i64);
    }
    if info.role == Role::Candidate && shared.role_tx.borrow().role != Role::Candidate {
        shared.metrics.elections_started_total.inc();
    }
    shared.role_tx.send_if_modified(|cur| {
        if *cur != info {
            *cur = info;
            true
        } else {
            false
        }
    });
}
