//! Election timer, pre-vote, candidacy, vote requests and vote responses.

use super::{Action, Node, Peer};
use crate::config::ReplicationMode;
use crate::message::Message;
use crate::types::{LogPosition, Refusal, Role};

impl Node {
    /// Follower / pre-candidate / candidate timer.
    ///
    /// | role at deadline | auto on, not paused, may stand | otherwise |
    /// |---|---|---|
    /// | follower | pre-vote (or election if `pre_vote = false`) | new deadline, stay |
    /// | pre-candidate / candidate | start over (pre-vote first) | give up: follower, no leader |
    pub(super) fn poll_election_timer(&mut self, now_ms: u64) {
        if now_ms < self.election_deadline_ms {
            return;
        }
        let auto = self.cfg.auto_failover && !self.ps.paused;
        let may_stand = auto && self.can_stand(false).is_ok();
        if may_stand {
            tracing::info!(term = self.ps.term, leader = ?self.leader_id, role = self.role.as_str(),
                "election timeout: no leader heard, standing for election");
            self.leader_id = None;
            if self.cfg.pre_vote {
                self.start_pre_vote(now_ms);
            } else {
                self.start_candidate(now_ms, false, false);
            }
        } else {
            if self.role != Role::Follower {
                tracing::info!(term = self.ps.term, "election not won in time and automatic failover is off/paused; back to follower");
                self.become_follower(now_ms, None);
            }
            self.reset_election_deadline(now_ms);
        }
    }

    /// May this node stand? `force` skips every rule. Mirrors [`Node::candidate_check`].
    pub(super) fn can_stand(&self, force: bool) -> Result<(), Refusal> {
        // Not even forced: a node being rebuilt has no complete state to lead with.
        if self.rebuilding {
            return Err(Refusal::Rebuilding);
        }
        if force {
            return Ok(());
        }
        if self.my_priority() == 0 {
            return Err(Refusal::NoPriority);
        }
        self.mode_check(self.my_id(), self.log.last_lsn)
    }

    /// Mode rule for candidate `id` with log end `last_lsn`, from this node's knowledge.
    fn mode_check(&self, id: &str, last_lsn: u64) -> Result<(), Refusal> {
        match self.mode() {
            ReplicationMode::Quorum => Ok(()),
            ReplicationMode::Sync => {
                let known = self.ps.last_leader.is_some() || !self.ps.sync_standbys.is_empty();
                let eligible = self.ps.last_leader.as_deref() == Some(id)
                    || self.ps.sync_standbys.iter().any(|s| s == id);
                if !known || eligible {
                    Ok(())
                } else {
                    Err(Refusal::NotSyncStandby)
                }
            }
            ReplicationMode::Async { max_lag_bytes } => match self.leader_flush {
                Some((_, flush)) if last_lsn.saturating_add(max_lag_bytes) < flush => {
                    Err(Refusal::TooFarBehind)
                }
                _ => Ok(()),
            },
        }
    }

    /// Voter-side checks of a candidate (after the term/vote/lease checks).
    fn candidate_check(
        &self,
        candidate: &str,
        pos: LogPosition,
        force: bool,
    ) -> Result<(), Refusal> {
        let Some(priority) = self.cfg.priority_of(candidate) else {
            return Err(Refusal::NotMember);
        };
        if force {
            return Ok(());
        }
        if priority == 0 {
            return Err(Refusal::NoPriority);
        }
        if pos < self.log {
            return Err(Refusal::LogBehind);
        }
        self.mode_check(candidate, pos.last_lsn)
    }

    pub(super) fn start_pre_vote(&mut self, now_ms: u64) {
        self.role = Role::PreCandidate;
        self.votes.clear();
        self.votes.insert(self.cfg.id.clone());
        self.reset_election_deadline(now_ms);
        if self.votes.len() >= self.cfg.quorum() {
            return self.start_candidate(now_ms, false, false);
        }
        let msg = self.vote_request(self.ps.term + 1, true, false, false);
        for p in self.peer_ids() {
            self.send(&p, msg.clone());
        }
    }

    /// Bumps the term, votes for itself (persisted before the requests leave: the
    /// step's PersistState comes first) and asks every peer.
    pub(super) fn start_candidate(&mut self, now_ms: u64, transfer: bool, force: bool) {
        self.ps.term += 1;
        self.ps.voted_for = Some(self.cfg.id.clone());
        self.dirty = true;
        self.role = Role::Candidate;
        self.leader_id = None;
        self.votes.clear();
        self.votes.insert(self.cfg.id.clone());
        self.reset_election_deadline(now_ms);
        tracing::info!(
            term = self.ps.term,
            transfer,
            force,
            last_term = self.log.last_term,
            last_lsn = self.log.last_lsn,
            "campaigning"
        );
        if self.votes.len() >= self.cfg.quorum() {
            return self.become_leader(now_ms);
        }
        let msg = self.vote_request(self.ps.term, false, transfer, force);
        for p in self.peer_ids() {
            self.send(&p, msg.clone());
        }
    }

    fn vote_request(&self, term: u64, pre_vote: bool, transfer: bool, force: bool) -> Message {
        Message::VoteRequest {
            term,
            candidate: self.cfg.id.clone(),
            last_term: self.log.last_term,
            last_lsn: self.log.last_lsn,
            pre_vote,
            transfer,
            force,
        }
    }

    pub(super) fn become_leader(&mut self, now_ms: u64) {
        debug_assert_eq!(self.ps.voted_for.as_deref(), Some(self.cfg.id.as_str()));
        self.role = Role::Leader;
        self.leader_id = Some(self.cfg.id.clone());
        self.fenced = false;
        self.transfer = None;
        self.current_sync.clear();
        if self.ps.last_leader.as_deref() != Some(self.cfg.id.as_str()) {
            self.ps.last_leader = Some(self.cfg.id.clone());
            self.dirty = true;
        }
        self.leader_since_ms = now_ms;
        for (id, peer) in self.peers.iter_mut() {
            *peer = Peer {
                last_ack_ms: self.votes.contains(id).then_some(now_ms),
                pos: None,
            };
        }
        if let (ReplicationMode::Async { .. }, Some((_, flush))) = (self.mode(), self.leader_flush)
        {
            if flush > self.log.last_lsn {
                tracing::warn!(term = self.ps.term, from_lsn = self.log.last_lsn, to_lsn = flush,
                    lost_bytes = flush - self.log.last_lsn,
                    "new leader is behind the previous leader's flush LSN: writes in this range may have been acknowledged and are lost (async mode)");
                self.out.push(Action::LostWrites {
                    from_lsn: self.log.last_lsn,
                    to_lsn: flush,
                });
            }
        }
        self.leader_flush = None;
        tracing::info!(term = self.ps.term, votes = ?self.votes, last_lsn = self.log.last_lsn, "elected leader");
        self.votes.clear();
        self.out.push(Action::BecomeLeader { term: self.ps.term });
        self.broadcast_heartbeats(now_ms);
    }

    /// Vote request handler. Checks run top to bottom; the first that matches decides.
    ///
    /// Pre-vote (no state changes, ever):
    ///
    /// | # | condition | answer |
    /// |---|---|---|
    /// | 1 | req.term < term | refuse `stale_term` (our term) |
    /// | 2 | check-quorum and (we lead, or heard a leader within the lease) | refuse `leader_alive` |
    /// | 3 | cluster paused | refuse `paused` |
    /// | 3b | this node is being rebuilt (`set_rebuilding`) | refuse `rebuilding` |
    /// | 4 | req.term == term and (voted for another, or a leader is known) | refuse `already_voted` |
    /// | 5 | candidate not member / priority 0 / log behind / mode rule (unless force) | refuse with that reason |
    /// | 6 | otherwise | grant, answer carries req.term |
    ///
    /// Real vote:
    ///
    /// | # | condition | answer |
    /// |---|---|---|
    /// | 1 | req.term > term and lease active and not transfer | refuse `leader_alive`, term NOT adopted |
    /// | 2 | req.term > term | adopt term (vote cleared, step down), continue |
    /// | 3 | req.term < term | refuse `stale_term` |
    /// | 4 | already voted for this candidate | grant again (duplicate request) |
    /// | 5 | voted for another, or a leader is known in this term | refuse `already_voted` |
    /// | 6 | paused and not transfer | refuse `paused` |
    /// | 6b | this node is being rebuilt (`set_rebuilding`), even if forced | refuse `rebuilding` |
    /// | 7 | member / priority / log / mode checks fail (unless force) | refuse with that reason |
    /// | 8 | otherwise | vote: persist `voted_for` (PersistState first), reset timer, grant |
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_vote_request(
        &mut self,
        now_ms: u64,
        from: &str,
        term: u64,
        candidate: &str,
        pos: LogPosition,
        pre_vote: bool,
        transfer: bool,
        force: bool,
    ) {
        if candidate != from {
            tracing::warn!(
                peer = from,
                candidate,
                "vote request names another candidate than its sender; dropped"
            );
            return;
        }
        let in_lease = self.cfg.check_quorum
            && !transfer
            && (self.role == Role::Leader
                || self
                    .leader_contact_ms
                    .is_some_and(|t| now_ms < t + self.timing.lease_ms));
        let paused_block = self.ps.paused && !transfer;
        if pre_vote {
            let verdict = if term < self.ps.term {
                Err(Refusal::StaleTerm)
            } else if in_lease {
                Err(Refusal::LeaderAlive)
            } else if paused_block {
                Err(Refusal::Paused)
            } else if self.rebuilding {
                Err(Refusal::Rebuilding)
            } else if term == self.ps.term
                && (self.ps.voted_for.as_deref().is_some_and(|v| v != candidate)
                    || self.leader_id.is_some())
            {
                Err(Refusal::AlreadyVoted)
            } else {
                self.candidate_check(candidate, pos, force)
            };
            let reply_term = if verdict.is_ok() { term } else { self.ps.term };
            return self.answer_vote(from, reply_term, true, verdict);
        }
        if term > self.ps.term {
            if in_lease {
                tracing::debug!(candidate, term, "vote request refused: leader lease active");
                return self.answer_vote(from, self.ps.term, false, Err(Refusal::LeaderAlive));
            }
            self.adopt_term(now_ms, term);
        }
        let verdict = if term < self.ps.term {
            Err(Refusal::StaleTerm)
        } else if self.ps.voted_for.as_deref() == Some(candidate) {
            Ok(())
        } else if self.ps.voted_for.is_some() || self.leader_id.is_some() {
            Err(Refusal::AlreadyVoted)
        } else if paused_block {
            Err(Refusal::Paused)
        } else if self.rebuilding {
            Err(Refusal::Rebuilding)
        } else {
            self.candidate_check(candidate, pos, force)
        };
        if verdict.is_ok() {
            if self.ps.voted_for.is_none() {
                self.ps.voted_for = Some(candidate.to_owned());
                self.dirty = true;
                tracing::info!(
                    term,
                    candidate,
                    last_term = pos.last_term,
                    last_lsn = pos.last_lsn,
                    transfer,
                    force,
                    "vote granted"
                );
            }
            self.reset_election_deadline(now_ms);
        } else if let Err(r) = verdict {
            tracing::debug!(term, candidate, reason = r.as_str(), "vote refused");
        }
        self.answer_vote(from, self.ps.term, false, verdict);
    }

    fn answer_vote(&mut self, to: &str, term: u64, pre_vote: bool, verdict: Result<(), Refusal>) {
        let msg = Message::VoteResponse {
            term,
            granted: verdict.is_ok(),
            pre_vote,
            reject_reason: verdict.err(),
        };
        self.send(to, msg);
    }

    /// Vote response handler (higher terms were adopted by the caller, except a granted
    /// pre-vote, whose term is ours + 1).
    ///
    /// | role | response | action |
    /// |---|---|---|
    /// | pre-candidate | granted pre-vote, term == ours + 1 | count; majority → candidate |
    /// | candidate | granted vote, term == ours | count; majority → leader |
    /// | any | refused, or stale, or other role | ignore (the timer retries) |
    pub(super) fn on_vote_response(
        &mut self,
        now_ms: u64,
        from: &str,
        term: u64,
        granted: bool,
        pre_vote: bool,
        reason: Option<Refusal>,
    ) {
        if !granted {
            tracing::debug!(peer = from, term, pre_vote, reason = ?reason.map(|r| r.as_str()), "vote refused");
            return;
        }
        match self.role {
            Role::PreCandidate if pre_vote && term == self.ps.term + 1 => {
                self.votes.insert(from.to_owned());
                if self.votes.len() >= self.cfg.quorum() {
                    self.start_candidate(now_ms, false, false);
                }
            }
            Role::Candidate if !pre_vote && term == self.ps.term => {
                self.votes.insert(from.to_owned());
                if self.votes.len() >= self.cfg.quorum() {
                    self.become_leader(now_ms);
                }
            }
            _ => {}
        }
    }
}
