//! The follower side of a node: runs the receiver toward the current leader.

use std::sync::Arc;

use receiver::stream::{follow, FlushPolicy, FollowContext, ReceiverEvents};
use tokio::sync::watch;

use super::Shared;

/// A running receiver.
pub struct ReceiverTask {
    /// The leader it follows.
    pub leader_id: String,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

struct Events {
    shared: Arc<Shared>,
}

impl ReceiverEvents for Events {
    fn connected(&self, leader_id: &str) {
        self.shared
            .metrics
            .replication_connections_total
            .with_label_values(&["receiver"])
            .inc();
        let mut f = self.shared.follower.lock();
        if !f.connected {
            tracing::info!(leader = %leader_id, "streaming WAL from the leader");
        }
        f.connected = true;
        f.last_error = None;
        f.needs_rebuild = false;
    }
    fn disconnected(&self, _leader_id: &str, reason: &str) {
        let mut f = self.shared.follower.lock();
        f.connected = false;
        f.caught_up = false;
        f.last_error = Some(reason.to_string());
    }
    fn caught_up(&self, caught_up: bool) {
        self.shared.follower.lock().caught_up = caught_up;
    }
    fn leader_flush(&self, flush_lsn: u64) {
        // Recorded only: the failover driver reads it before each of its steps
        // (not woken per keepalive, i.e. per write).
        self.shared.follower.lock().leader_flush_lsn = flush_lsn;
    }
    fn received(&self, bytes: u64) {
        self.shared.metrics.received_bytes_total.inc_by(bytes);
        self.shared.metrics.wal_appended_bytes_total.inc_by(bytes);
    }
    fn truncated(&self, to: u64, _report: &wal::TruncateReport) {
        use receiver::state::StateMachine;
        // A checkpoint never covers more than the applied state, so only a cut
        // below the applied LSN concerns the state and the checkpoints.
        if self.shared.kv.read().applied_lsn() > to {
            // Loading a checkpoint blocks; this runs on the receiver's task.
            tokio::task::block_in_place(|| {
                super::checkpointer::rewind_state(&self.shared, to);
            });
        }
    }
    fn before_inline_flush(&self) {
        super::applier::apply_small_advance(&self.shared);
    }
    fn flushed(&self, seconds: f64) {
        self.shared
            .metrics
            .wal_fsync_duration_seconds
            .observe(seconds);
    }
    fn wal_failed(&self, _cause: &str) {
        // Runs on the receiver's task: the reaction stops the receiver task
        // asynchronously (on another task), never waiting for itself.
        self.shared.wal_failed("the replication receiver");
    }
    fn needs_rebuild(&self, message: &str) {
        let mut f = self.shared.follower.lock();
        f.needs_rebuild = true;
        f.last_error = Some(message.to_string());
    }
}

impl ReceiverTask {
    /// Ask the receiver to stop (without waiting; see [`stop`] to wait).
    pub fn signal_stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Follow `leader_id` (restarting the receiver if it followed another leader).
pub async fn start(shared: &Arc<Shared>, leader_id: String) {
    if shared.wal_failure().is_some() {
        // A failed WAL takes nothing more (see Shared::wal_failed).
        return;
    }
    if shared.rebuild.is_active() {
        // A rebuild owns the WAL; it starts the receiver itself when done.
        return;
    }
    {
        let guard = shared.receiver_task.lock().await;
        if let Some(t) = guard.as_ref() {
            if t.leader_id == leader_id && !t.handle.is_finished() {
                return;
            }
        }
    }
    stop(shared).await;
    let Some(member) = shared.cfg.member(&leader_id) else {
        tracing::error!(leader = %leader_id, "the elected leader is not in [[members]]; cannot follow it");
        return;
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = FollowContext {
        wal: shared.wal.clone(),
        node_id: shared.cfg.node_id.clone(),
        cluster_id: shared.cfg.cluster_id.clone(),
        token: shared.cfg.security.token.clone().unwrap_or_default(),
        leader_id: leader_id.clone(),
        leader_addr: member.addr,
        connector: Arc::new(crate::tls::MemberConnector {
            tls: shared.tls.clone(),
        }),
        written_tx: shared.written_tx.clone(),
        flush_tx: shared.flush_tx.clone(),
        // The receiver flushes each batch itself and reports it at once (no
        // hop through the flusher thread on the remote_flush path).
        flush: FlushPolicy::Inline {
            fsync: shared.cfg.wal.sync == crate::config::WalSync::Always,
        },
        applied_rx: shared.applied_tx.subscribe(),
        commit_tx: shared.commit_tx.clone(),
        events: Arc::new(Events {
            shared: shared.clone(),
        }),
        stop: stop_rx,
    };
    let handle = tokio::spawn(follow(ctx));
    *shared.receiver_task.lock().await = Some(ReceiverTask {
        leader_id,
        stop: stop_tx,
        handle,
    });
}

/// Stop the receiver, if one runs, and wait until it has stopped appending.
pub async fn stop(shared: &Arc<Shared>) {
    let task = shared.receiver_task.lock().await.take();
    if let Some(t) = task {
        let _ = t.stop.send(true);
        let _ = t.handle.await;
        let mut f = shared.follower.lock();
        f.connected = false;
        f.caught_up = false;
    }
}
