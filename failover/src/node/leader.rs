//! Leader side: heartbeats, acks, check-quorum, succession order, leadership transfer,
//! synchronous standbys.

use super::{Action, Node, Transfer};
use crate::config::ReplicationMode;
use crate::message::Message;
use crate::types::{LogPosition, Refusal, Role};

impl Node {
    /// Leader timers, in this order:
    ///
    /// | timer | condition | action |
    /// |---|---|---|
    /// | transfer | deadline passed | abandon, writes resume (WARN) |
    /// | check-quorum | on, auto failover on, not paused, and fewer than a majority (self included) acked within CQ | `Fence`, `BecomeFollower`, stop |
    /// | heartbeat | due | heartbeat to every peer |
    pub(super) fn poll_leader_timers(&mut self, now_ms: u64) {
        if let Some(t) = &self.transfer {
            if now_ms >= t.deadline_ms {
                tracing::warn!(to = %t.to, term = self.ps.term,
                    "leadership transfer not completed within the election timeout; abandoned, accepting writes again");
                self.transfer = None;
            }
        }
        if let Some(deadline) = self.quorum_loss_deadline_ms() {
            if now_ms >= deadline {
                tracing::warn!(term = self.ps.term, window_ms = self.timing.check_quorum_ms,
                    "leader has not heard a majority within the check-quorum window; fencing: no more writes are acknowledged, stepping down to follower");
                self.fenced = true;
                self.out.push(Action::Fence { term: self.ps.term });
                self.become_follower(now_ms, None);
                return;
            }
        }
        if now_ms >= self.next_heartbeat_ms {
            self.broadcast_heartbeats(now_ms);
        }
    }

    /// When the leader will have lost its majority if no further ack arrives; None when
    /// check-quorum does not apply (off, auto failover off, paused, single member).
    pub(super) fn quorum_loss_deadline_ms(&self) -> Option<u64> {
        if self.role != Role::Leader
            || !self.cfg.check_quorum
            || !self.cfg.auto_failover
            || self.ps.paused
        {
            return None;
        }
        let needed = self.cfg.quorum() - 1; // peers needed besides ourselves
        if needed == 0 {
            return None;
        }
        let mut acks: Vec<u64> = self
            .peers
            .values()
            .map(|p| p.last_ack_ms.unwrap_or(0))
            .collect();
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let kth = acks.get(needed - 1).copied().unwrap_or(0);
        Some(kth.max(self.leader_since_ms) + self.timing.check_quorum_ms)
    }

    pub(super) fn broadcast_heartbeats(&mut self, now_ms: u64) {
        self.next_heartbeat_ms = now_ms + self.timing.heartbeat_ms;
        let msg = self.heartbeat(now_ms);
        for p in self.peer_ids() {
            self.send(&p, msg.clone());
        }
    }

    fn heartbeat(&self, now_ms: u64) -> Message {
        Message::Heartbeat {
            term: self.ps.term,
            leader: self.cfg.id.clone(),
            leader_flush_lsn: self.log.last_lsn,
            paused: self.ps.paused,
            sync_standbys: self.current_sync.clone(),
            succession: self.succession_order(now_ms),
        }
    }

    /// Followers that may stand and were heard within the check-quorum window, most
    /// up-to-date log first, then higher priority, then id. Followers derive their
    /// election-timeout rank from this order, so the best successor goes first.
    fn succession_order(&self, now_ms: u64) -> Vec<String> {
        let window = self.timing.check_quorum_ms;
        let mut c: Vec<(LogPosition, u32, &String)> = self
            .peers
            .iter()
            .filter_map(|(id, p)| {
                let prio = self.cfg.priority_of(id).unwrap_or(0);
                let alive = p.last_ack_ms.is_some_and(|t| now_ms < t + window);
                let pos = p.pos?;
                let eligible = match self.mode() {
                    ReplicationMode::Quorum => true,
                    ReplicationMode::Sync => {
                        self.current_sync.is_empty() || self.current_sync.contains(id)
                    }
                    ReplicationMode::Async { max_lag_bytes } => {
                        pos.last_lsn.saturating_add(max_lag_bytes) >= self.log.last_lsn
                    }
                };
                (prio > 0 && alive && eligible).then_some((pos, prio, id))
            })
            .collect();
        c.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
        c.into_iter().map(|(_, _, id)| id.clone()).collect()
    }

    /// HeartbeatAck of our term while leading: record liveness and position; push a
    /// running transfer forward.
    pub(super) fn on_heartbeat_ack(
        &mut self,
        now_ms: u64,
        from: &str,
        term: u64,
        pos: LogPosition,
    ) {
        if self.role != Role::Leader || term != self.ps.term {
            return;
        }
        if let Some(p) = self.peers.get_mut(from) {
            p.last_ack_ms = Some(now_ms);
            p.pos = Some(pos);
        }
        if self.transfer.as_ref().is_some_and(|t| t.to == from) {
            self.try_timeout_now(now_ms);
        }
    }

    /// Sends TimeoutNow to the transfer target once its acked log reaches ours;
    /// otherwise solicits a fresh ack with a heartbeat.
    fn try_timeout_now(&mut self, now_ms: u64) {
        let Some(t) = &self.transfer else { return };
        let to = t.to.clone();
        let caught_up = self
            .peers
            .get(&to)
            .and_then(|p| p.pos)
            .is_some_and(|p| p >= self.log);
        if caught_up {
            tracing::info!(to = %to, term = self.ps.term, "transfer target caught up; sending TimeoutNow");
            self.send(&to, Message::TimeoutNow { term: self.ps.term });
        } else {
            let hb = self.heartbeat(now_ms);
            self.send(&to, hb);
        }
    }

    /// TransferLeadership admin command (leader only).
    ///
    /// | case | result |
    /// |---|---|
    /// | not leader | refused `not_leader` |
    /// | target is us | nothing to do |
    /// | target not a member / priority 0 | refused `not_member` / `no_priority` |
    /// | a transfer is running | refused `transfer_in_progress` |
    /// | sync mode, target not a current synchronous standby | refused `not_sync_standby` |
    /// | otherwise | stop accepting writes; TimeoutNow once the target caught up; abandoned after T |
    pub(super) fn on_transfer(&mut self, now_ms: u64, cmd: &super::AdminCommand, to: &str) {
        if self.role != Role::Leader {
            return self.refuse(cmd, Refusal::NotLeader);
        }
        if to == self.cfg.id {
            return;
        }
        match self.cfg.priority_of(to) {
            None => return self.refuse(cmd, Refusal::NotMember),
            Some(0) => return self.refuse(cmd, Refusal::NoPriority),
            Some(_) => {}
        }
        if self.transfer.is_some() {
            return self.refuse(cmd, Refusal::TransferInProgress);
        }
        if self.mode() == ReplicationMode::Sync && !self.current_sync.iter().any(|s| s == to) {
            return self.refuse(cmd, Refusal::NotSyncStandby);
        }
        tracing::info!(
            to,
            term = self.ps.term,
            "leadership transfer started: no longer accepting writes"
        );
        self.transfer = Some(Transfer {
            to: to.to_owned(),
            deadline_ms: now_ms + self.timing.transfer_timeout_ms,
        });
        self.try_timeout_now(now_ms);
    }

    /// SyncStandbys event (leader only): announce the list; in sync mode a non-empty
    /// list is also persisted as the set of nodes that may stand after us.
    pub(super) fn on_sync_standbys(&mut self, now_ms: u64, list: Vec<String>) {
        if self.role != Role::Leader || list == self.current_sync {
            return;
        }
        if self.mode() == ReplicationMode::Sync && !list.is_empty() && self.ps.sync_standbys != list
        {
            self.ps.sync_standbys = list.clone();
            self.dirty = true;
        }
        self.current_sync = list;
        // Tell followers at once: shrinks the window in which they still consider a
        // former synchronous standby eligible.
        self.broadcast_heartbeats(now_ms);
    }
}
