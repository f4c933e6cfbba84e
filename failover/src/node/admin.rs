//! Operator commands and the cluster-wide pause flag.

use super::{AdminCommand, Node};
use crate::message::Message;
use crate::types::Role;

impl Node {
    /// Admin command handler.
    ///
    /// | command | role | action |
    /// |---|---|---|
    /// | TransferLeadership | leader | see `on_transfer` |
    /// | TransferLeadership | other | refused `not_leader` |
    /// | Campaign | leader | nothing to do |
    /// | Campaign | other, may stand (or force) | candidate now: term + 1, transfer = true, force as given |
    /// | Campaign | other, may not stand | refused with the reason (priority 0, mode rule) |
    /// | Pause / Resume | any | set + persist the flag, send SetPaused to all; a leader heartbeats at once |
    pub(super) fn on_admin(&mut self, now_ms: u64, cmd: AdminCommand) {
        match &cmd {
            AdminCommand::TransferLeadership { to } => {
                let to = to.clone();
                self.on_transfer(now_ms, &cmd, &to);
            }
            AdminCommand::Campaign { force } => {
                if self.role == Role::Leader {
                    return;
                }
                if let Err(reason) = self.can_stand(*force) {
                    return self.refuse(&cmd, reason);
                }
                tracing::info!(force, term = self.ps.term, "manual failover: campaigning");
                self.start_candidate(now_ms, true, *force);
            }
            AdminCommand::Pause => self.set_paused(now_ms, true, true),
            AdminCommand::Resume => self.set_paused(now_ms, false, true),
        }
    }

    /// SetPaused from a peer (an operator ran pause/resume there). Applied whatever its
    /// term: the flag is operator intent, not leadership.
    pub(super) fn on_set_paused(&mut self, now_ms: u64, from: &str, paused: bool) {
        tracing::info!(
            peer = from,
            paused,
            "pause flag set by the operator on a peer"
        );
        self.set_paused(now_ms, paused, false);
    }

    fn set_paused(&mut self, now_ms: u64, paused: bool, broadcast: bool) {
        if self.ps.paused != paused {
            tracing::info!(
                paused,
                term = self.ps.term,
                role = self.role.as_str(),
                "automatic failover {}",
                if paused { "paused" } else { "resumed" }
            );
            self.ps.paused = paused;
            self.dirty = true;
            if !paused && self.role != Role::Leader {
                // Resume: give the leader (if any) a full timeout to be heard first.
                self.reset_election_deadline(now_ms);
            }
        }
        if broadcast {
            let msg = Message::SetPaused {
                term: self.ps.term,
                paused,
            };
            for p in self.peer_ids() {
                self.send(&p, msg.clone());
            }
        }
        if self.role == Role::Leader {
            self.broadcast_heartbeats(now_ms);
        }
    }
}
