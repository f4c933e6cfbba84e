//! Follower side: heartbeats from the leader, TimeoutNow, the leader's flush LSN.

use super::Node;
use crate::config::ReplicationMode;
use crate::message::Message;
use crate::types::Role;

impl Node {
    /// Heartbeat handler (a higher term was already adopted by the caller).
    ///
    /// | case | action |
    /// |---|---|
    /// | hb.term < term | answer HeartbeatAck with our term (the stale leader steps down) |
    /// | hb.term == term, we lead | impossible (one leader per term): log ERROR, ignore |
    /// | hb.term == term, leader field != sender | log WARN, ignore |
    /// | hb.term == term | follow sender; refresh lease and timer; unfence; adopt pause flag, last leader, sync standbys (sync mode, non-empty list), leader flush, succession; ack with our log |
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_heartbeat(
        &mut self,
        now_ms: u64,
        from: &str,
        term: u64,
        leader: String,
        leader_flush_lsn: u64,
        paused: bool,
        sync_standbys: Vec<String>,
        succession: Vec<String>,
    ) {
        if term < self.ps.term {
            let ack = self.ack();
            return self.send(from, ack);
        }
        if self.role == Role::Leader {
            tracing::error!(term, peer = from, "heartbeat from another leader of our own term; ignoring (election safety violated?)");
            return;
        }
        if leader != from {
            tracing::warn!(peer = from, leader = %leader, "heartbeat whose leader is not its sender; dropped");
            return;
        }
        if self.leader_id.as_deref() != Some(from) {
            tracing::info!(term, leader = from, "following new leader");
            self.become_follower(now_ms, Some(leader));
        }
        self.fenced = false;
        self.leader_contact_ms = Some(now_ms);
        if self.ps.paused != paused {
            tracing::info!(
                paused,
                leader = from,
                "cluster pause flag changed by the leader"
            );
            self.ps.paused = paused;
            self.dirty = true;
        }
        if self.ps.last_leader.as_deref() != Some(from) {
            self.ps.last_leader = Some(from.to_owned());
            self.dirty = true;
        }
        if self.mode() == ReplicationMode::Sync
            && !sync_standbys.is_empty()
            && self.ps.sync_standbys != sync_standbys
        {
            self.ps.sync_standbys = sync_standbys;
            self.dirty = true;
        }
        self.note_leader_flush(term, leader_flush_lsn);
        self.succession = succession;
        self.reset_election_deadline(now_ms);
        let ack = self.ack();
        self.send(from, ack);
    }

    fn ack(&self) -> Message {
        Message::HeartbeatAck {
            term: self.ps.term,
            last_term: self.log.last_term,
            last_lsn: self.log.last_lsn,
        }
    }

    fn note_leader_flush(&mut self, term: u64, lsn: u64) {
        self.leader_flush = match self.leader_flush {
            Some((t, l)) if t == term => Some((t, l.max(lsn))),
            Some((t, l)) if t > term => Some((t, l)),
            _ => Some((term, lsn)),
        };
    }

    /// `LeaderFlush` event: the flush LSN of the current leader, from the replication
    /// stream. Ignored on a leader.
    pub(super) fn on_leader_flush(&mut self, flush_lsn: u64) {
        if self.role != Role::Leader {
            self.note_leader_flush(self.ps.term, flush_lsn);
        }
    }

    /// TimeoutNow: campaign at once (no pre-vote, voters skip the lease) if it comes
    /// from our leader in our term and we may stand; otherwise ignored with a log line.
    pub(super) fn on_timeout_now(&mut self, now_ms: u64, from: &str, term: u64) {
        if term != self.ps.term
            || self.leader_id.as_deref() != Some(from)
            || self.role != Role::Follower
        {
            tracing::debug!(peer = from, term, "stale TimeoutNow ignored");
            return;
        }
        if let Err(reason) = self.can_stand(false) {
            tracing::warn!(
                peer = from,
                term,
                reason = reason.as_str(),
                "leader asked us to take over, but we may not stand; ignoring"
            );
            return;
        }
        tracing::info!(peer = from, term, "leadership transfer: campaigning now");
        self.start_candidate(now_ms, true, false);
    }
}
