//! The sans-IO election core: [`Node::step`] takes an [`Event`] and the current time
//! and returns the [`Action`]s the driver must execute, in order.
//!
//! Handlers live one per file: `election.rs` (timers, pre-vote, votes), `follower.rs`
//! (heartbeats, TimeoutNow, leader flush), `leader.rs` (heartbeats out, acks,
//! check-quorum, succession, transfer), `admin.rs` (operator commands, pause).

mod admin;
mod election;
mod follower;
mod leader;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Config, ReplicationMode, Timing};
use crate::error::FailoverError;
use crate::message::Message;
use crate::rng::SplitMix64;
use crate::types::{LogPosition, PersistentState, Refusal, Role};

/// Something that happened to the node. Time is passed separately (`now_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Time passed: run timers (election, heartbeat, check-quorum, transfer). Any
    /// other event runs timers too, after handling the event.
    Tick,
    /// A message from peer `from` (transport-authenticated member id).
    Message {
        /// Sender member id.
        from: String,
        /// The decoded message.
        msg: Message,
    },
    /// The local *flushed* log end moved (append, flush, or truncation at rejoin).
    LogPosition(LogPosition),
    /// Follower: the leader's flush LSN as heard on the replication stream
    /// (async max-lag rule and lost-write reporting).
    LeaderFlush {
        /// Leader's flushed end of log.
        flush_lsn: u64,
    },
    /// Leader: the current synchronous standbys (sync mode), announced in heartbeats.
    SyncStandbys(Vec<String>),
    /// An operator command.
    Admin(AdminCommand),
}

/// Operator commands (docs/INTERFACE.md: switchover, failover, pause, resume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// To the leader, after the daemon checked the target caught up: stop accepting
    /// writes, wait until the target's acked log reaches ours, send it `TimeoutNow`.
    /// Abandoned (writes resume) if not done within the election timeout.
    TransferLeadership {
        /// Target member id.
        to: String,
    },
    /// Manual `failover --to me`: stand now (no pre-vote, voters skip the leader
    /// lease). `force` also makes voters skip the log and mode checks and lets a
    /// priority-0 node stand.
    Campaign {
        /// `--force`.
        force: bool,
    },
    /// Pause automatic failover cluster-wide.
    Pause,
    /// Resume automatic failover cluster-wide.
    Resume,
}

impl AdminCommand {
    /// Stable name of the command (logs, refusals).
    pub fn as_str(&self) -> &'static str {
        match self {
            AdminCommand::TransferLeadership { .. } => "transfer_leadership",
            AdminCommand::Campaign { .. } => "campaign",
            AdminCommand::Pause => "pause",
            AdminCommand::Resume => "resume",
        }
    }
}

/// What the driver must do, **in the order given**.
///
/// Ordering guarantee: if a step changed the persistent state, its first action is the
/// one `PersistState` of that step (with the state as it is at the end of the step);
/// the driver must make it durable (fsync) before executing any later action, in
/// particular before any `Send`: a vote or a term is never visible outside before it
/// is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this state durably (e.g. [`crate::VoteStore::save`]) before anything else.
    PersistState(PersistentState),
    /// Send `msg` to member `to` (best effort; loss is tolerated).
    Send {
        /// Member id.
        to: String,
        /// Message to encode and send.
        msg: Message,
    },
    /// This node won the election for `term`: start leading (write the term-start
    /// record, start shippers). Writes are accepted while `accepting_writes()`.
    BecomeLeader {
        /// The new term.
        term: u64,
    },
    /// This node follows `leader` (None: leader unknown yet) in `term`. Emitted when
    /// the role becomes follower or the known leader changes. A former leader must stop
    /// acknowledging writes at once.
    BecomeFollower {
        /// Current term.
        term: u64,
        /// Leader to replicate from, if known.
        leader: Option<String>,
    },
    /// The leader of `term` could not hear a majority within the check-quorum window:
    /// stop acknowledging writes now (fail waiting writes as "outcome unknown").
    /// Followed by `BecomeFollower`.
    Fence {
        /// Term of the fenced leadership.
        term: u64,
    },
    /// Async mode: this new leader only has the log up to `from_lsn` while the old
    /// leader had flushed (and possibly acknowledged) up to `to_lsn`. Log it, count it.
    LostWrites {
        /// This node's flushed end of log at election.
        from_lsn: u64,
        /// Last flush LSN heard from the previous leader.
        to_lsn: u64,
    },
    /// An admin command was not carried out; tell the operator why.
    AdminRefused {
        /// `AdminCommand::as_str()`.
        command: &'static str,
        /// Why.
        reason: Refusal,
    },
}

/// Leader-side view of one follower.
#[derive(Debug, Clone, Default)]
struct Peer {
    /// Last time a HeartbeatAck (or a granted vote) of the current term arrived.
    last_ack_ms: Option<u64>,
    /// Log position the follower reported last.
    pos: Option<LogPosition>,
}

/// A leadership transfer in progress (leader only).
#[derive(Debug, Clone)]
struct Transfer {
    to: String,
    deadline_ms: u64,
}

/// The election core of one node. Deterministic: same config (seed), same events and
/// times → same actions.
#[derive(Debug)]
pub struct Node {
    cfg: Config,
    timing: Timing,
    rng: SplitMix64,
    /// Persistent state; `dirty` says it changed during the current step.
    ps: PersistentState,
    dirty: bool,
    role: Role,
    leader_id: Option<String>,
    log: LogPosition,
    /// Last time a heartbeat of the current leader arrived (voters' lease).
    leader_contact_ms: Option<u64>,
    /// Follower/candidate: when to (re)stand.
    election_deadline_ms: u64,
    /// Grants collected in the current pre-vote or election (self included).
    votes: BTreeSet<String>,
    /// Last succession order announced by a leader.
    succession: Vec<String>,
    /// Last leader flush heard: (term, lsn).
    leader_flush: Option<(u64, u64)>,
    fenced: bool,
    /// Set by the driver while this node is rebuilt (see [`Node::set_rebuilding`]).
    rebuilding: bool,
    // ---- leader only ----
    peers: BTreeMap<String, Peer>,
    leader_since_ms: u64,
    next_heartbeat_ms: u64,
    transfer: Option<Transfer>,
    current_sync: Vec<String>,
    /// Actions of the current step.
    out: Vec<Action>,
}

impl Node {
    /// Builds a follower from its persisted state and flushed log position.
    /// Fails if `config.validate()` fails. A single-member cluster (with priority > 0
    /// and automatic failover on) elects itself at the first step.
    pub fn new(
        config: Config,
        persisted: PersistentState,
        log: LogPosition,
        now_ms: u64,
    ) -> Result<Node, FailoverError> {
        config.validate()?;
        let peers = config
            .members
            .iter()
            .filter(|m| m.id != config.id)
            .map(|m| (m.id.clone(), Peer::default()))
            .collect();
        let mut node = Node {
            timing: config.timing(),
            rng: SplitMix64::new(config.seed),
            cfg: config,
            ps: persisted,
            dirty: false,
            role: Role::Follower,
            leader_id: None,
            log,
            leader_contact_ms: None,
            election_deadline_ms: now_ms,
            votes: BTreeSet::new(),
            succession: Vec::new(),
            leader_flush: None,
            fenced: false,
            rebuilding: false,
            peers,
            leader_since_ms: now_ms,
            next_heartbeat_ms: now_ms,
            transfer: None,
            current_sync: Vec::new(),
            out: Vec::new(),
        };
        if node.cfg.members.len() > 1 {
            node.election_deadline_ms = now_ms + node.election_timeout_ms();
        }
        Ok(node)
    }

    /// Feeds one event at time `now_ms` (monotonic milliseconds; must not go back)
    /// and returns the actions to execute in order (see [`Action`] for the rule on
    /// `PersistState`).
    pub fn step(&mut self, now_ms: u64, event: Event) -> Vec<Action> {
        debug_assert!(self.out.is_empty());
        self.dirty = false;
        match event {
            Event::Tick => {}
            Event::Message { from, msg } => self.on_message(now_ms, from, msg),
            Event::LogPosition(pos) => self.log = pos,
            Event::LeaderFlush { flush_lsn } => self.on_leader_flush(flush_lsn),
            Event::SyncStandbys(list) => self.on_sync_standbys(now_ms, list),
            Event::Admin(cmd) => self.on_admin(now_ms, cmd),
        }
        self.poll_timers(now_ms);
        let mut out = std::mem::take(&mut self.out);
        if self.dirty {
            // Invariant: the one PersistState of a step comes first and carries the
            // end-of-step state, so every Send of the step is covered by it.
            out.insert(0, Action::PersistState(self.ps.clone()));
            self.dirty = false;
        }
        out
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Current term (persisted before any message carrying it is sent).
    pub fn term(&self) -> u64 {
        self.ps.term
    }

    /// Leader of the current term, if known (itself when leader).
    pub fn leader_id(&self) -> Option<&str> {
        self.leader_id.as_deref()
    }

    /// Vote cast in the current term.
    pub fn voted_for(&self) -> Option<&str> {
        self.ps.voted_for.as_deref()
    }

    /// Cluster-wide pause flag as this node knows it.
    pub fn paused(&self) -> bool {
        self.ps.paused
    }

    /// True from a check-quorum step-down until this node hears a leader or leads again
    /// (status `fenced`).
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// True only on a leader that may acknowledge writes: not fenced and no leadership
    /// transfer running. The driver reads it after every step.
    pub fn accepting_writes(&self) -> bool {
        self.role == Role::Leader && !self.fenced && self.transfer.is_none()
    }

    /// Target of the running leadership transfer (leader only).
    pub fn transfer_target(&self) -> Option<&str> {
        self.transfer.as_ref().map(|t| t.to.as_str())
    }

    /// The state as it must be on disk.
    pub fn persistent_state(&self) -> &PersistentState {
        &self.ps
    }

    /// Marks this node as being rebuilt (`true`) or whole again (`false`).
    ///
    /// While set, the node neither stands for election (timer, `Campaign` even
    /// with `force`, `TimeoutNow`) nor grants a vote or pre-vote (refusal
    /// [`Refusal::Rebuilding`](crate::Refusal::Rebuilding)): a node whose state and
    /// WAL are being replaced cannot tell which writes it held, so its
    /// `(last_term, last_lsn)` must not count, neither to win nor to let a candidate
    /// that misses acknowledged writes win (Raft's rule that a voter must not forget
    /// its log). It still follows heartbeats and adopts higher terms. The driver
    /// keeps it set until the node caught up again (bin: `node::rebuild`).
    pub fn set_rebuilding(&mut self, on: bool) {
        if self.rebuilding != on {
            tracing::info!(
                term = self.ps.term,
                rebuilding = on,
                "{}",
                if on {
                    "node is being rebuilt: it neither votes nor stands for election until it caught up"
                } else {
                    "rebuild done and caught up: the node votes and may stand for election again"
                }
            );
            self.rebuilding = on;
        }
    }

    /// True while [`Node::set_rebuilding`] holds this node out of elections.
    pub fn is_rebuilding(&self) -> bool {
        self.rebuilding
    }

    /// Local flushed log position as last reported.
    pub fn log_position(&self) -> LogPosition {
        self.log
    }

    /// The config the node runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The earliest time at which a `Tick` may produce actions. A driver may sleep
    /// until then (or until a message arrives); ticking more often is harmless.
    pub fn next_deadline_ms(&self) -> u64 {
        match self.role {
            Role::Leader => {
                let mut d = self.next_heartbeat_ms;
                if let Some(t) = &self.transfer {
                    d = d.min(t.deadline_ms);
                }
                if let Some(q) = self.quorum_loss_deadline_ms() {
                    d = d.min(q);
                }
                d
            }
            _ => self.election_deadline_ms,
        }
    }

    // ---------------------------------------------------------------- helpers

    fn my_id(&self) -> &str {
        &self.cfg.id
    }

    fn my_priority(&self) -> u32 {
        self.cfg.priority_of(&self.cfg.id).unwrap_or(0)
    }

    fn send(&mut self, to: &str, msg: Message) {
        self.out.push(Action::Send {
            to: to.to_owned(),
            msg,
        });
    }

    fn refuse(&mut self, cmd: &AdminCommand, reason: Refusal) {
        tracing::warn!(
            command = cmd.as_str(),
            reason = reason.as_str(),
            term = self.ps.term,
            role = self.role.as_str(),
            "admin command refused; nothing changed"
        );
        self.out.push(Action::AdminRefused {
            command: cmd.as_str(),
            reason,
        });
    }

    fn peer_ids(&self) -> Vec<String> {
        self.peers.keys().cloned().collect()
    }

    /// Rank of this node in the succession order: the leader's announced order first,
    /// then the other members with priority > 0 by (priority desc, id asc).
    fn my_rank(&self) -> usize {
        let mut rest: Vec<_> = self
            .cfg
            .members
            .iter()
            .filter(|m| m.priority > 0 && !self.succession.contains(&m.id))
            .collect();
        rest.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
        self.succession
            .iter()
            .map(String::as_str)
            .chain(rest.iter().map(|m| m.id.as_str()))
            .position(|id| id == self.cfg.id)
            .unwrap_or(self.cfg.members.len())
    }

    /// Randomised election timeout for this node's rank (see [`Timing`]).
    fn election_timeout_ms(&mut self) -> u64 {
        let rank = self.my_rank();
        self.timing.base_timeout_ms(rank) + self.rng.below(self.timing.jitter_ms)
    }

    fn reset_election_deadline(&mut self, now_ms: u64) {
        self.election_deadline_ms = now_ms + self.election_timeout_ms();
    }

    /// Adopts a higher term: forgets the vote, becomes a follower with unknown leader
    /// (the caller sets the leader if the message names one).
    fn adopt_term(&mut self, now_ms: u64, term: u64) {
        debug_assert!(term > self.ps.term);
        tracing::debug!(old = self.ps.term, new = term, "adopting higher term");
        self.ps.term = term;
        self.ps.voted_for = None;
        self.dirty = true;
        self.become_follower(now_ms, None);
    }

    /// Role → follower of `leader`. Emits `BecomeFollower` when the role or the known
    /// leader changes. A former leader gets a fresh election deadline; a follower or
    /// candidate keeps its own (so an up-to-date node that refused a lagging candidate
    /// still stands on time).
    fn become_follower(&mut self, now_ms: u64, leader: Option<String>) {
        let was = self.role;
        let changed = was != Role::Follower || self.leader_id != leader;
        self.role = Role::Follower;
        self.leader_id = leader;
        self.votes.clear();
        if was == Role::Leader {
            self.transfer = None;
            self.leader_contact_ms = None;
            self.reset_election_deadline(now_ms);
            tracing::info!(term = self.ps.term, "leader stepping down to follower");
        }
        if changed {
            self.out.push(Action::BecomeFollower {
                term: self.ps.term,
                leader: self.leader_id.clone(),
            });
        }
    }

    fn on_message(&mut self, now_ms: u64, from: String, msg: Message) {
        if from == self.cfg.id || self.cfg.priority_of(&from).is_none() {
            tracing::warn!(peer = %from, kind = msg.kind(), "dropping failover message from a non-member");
            return;
        }
        if let Message::VoteRequest {
            term,
            candidate,
            last_term,
            last_lsn,
            pre_vote,
            transfer,
            force,
        } = msg
        {
            let pos = LogPosition {
                last_term,
                last_lsn,
            };
            return self.on_vote_request(
                now_ms, &from, term, &candidate, pos, pre_vote, transfer, force,
            );
        }
        // Higher term: adopt and step down — except a granted pre-vote, which carries the
        // term the pre-candidate asked for, not one anybody is in.
        let granted_pre_vote = matches!(
            msg,
            Message::VoteResponse {
                granted: true,
                pre_vote: true,
                ..
            }
        );
        if msg.term() > self.ps.term && !granted_pre_vote {
            self.adopt_term(now_ms, msg.term());
        }
        match msg {
            Message::VoteRequest { .. } => unreachable!("handled above"),
            Message::VoteResponse {
                term,
                granted,
                pre_vote,
                reject_reason,
            } => self.on_vote_response(now_ms, &from, term, granted, pre_vote, reject_reason),
            Message::Heartbeat {
                term,
                leader,
                leader_flush_lsn,
                paused,
                sync_standbys,
                succession,
            } => self.on_heartbeat(
                now_ms,
                &from,
                term,
                leader,
                leader_flush_lsn,
                paused,
                sync_standbys,
                succession,
            ),
            Message::HeartbeatAck {
                term,
                last_term,
                last_lsn,
            } => self.on_heartbeat_ack(
                now_ms,
                &from,
                term,
                LogPosition {
                    last_term,
                    last_lsn,
                },
            ),
            Message::TimeoutNow { term } => self.on_timeout_now(now_ms, &from, term),
            Message::SetPaused { paused, .. } => self.on_set_paused(now_ms, &from, paused),
        }
    }

    fn poll_timers(&mut self, now_ms: u64) {
        match self.role {
            Role::Leader => self.poll_leader_timers(now_ms),
            _ => self.poll_election_timer(now_ms),
        }
    }

    fn mode(&self) -> ReplicationMode {
        self.cfg.mode
    }
}
