//! Small value types shared by the core, the messages and the vote store.

/// Position of the end of a node's *flushed* log: the term of its last record and the
/// LSN just past it. Ordered lexicographically `(last_term, last_lsn)` — the Raft
/// "at least as up to date" order (field order matters for the derived `Ord`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    /// Term of the last record (0 for an empty log).
    pub last_term: u64,
    /// End LSN of the last flushed record (0 for an empty log).
    pub last_lsn: u64,
}

/// What a node must have on stable storage before it sends anything that depends on
/// it. `term` and `voted_for` are written together in one fsynced write
/// (see [`crate::VoteStore`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistentState {
    /// Highest term this node has seen. Never decreases.
    pub term: u64,
    /// Candidate this node voted for in `term` (at most one per term).
    pub voted_for: Option<String>,
    /// Cluster-wide "automatic failover paused" flag, as last learnt.
    pub paused: bool,
    /// Leader of the latest term this node has heard of (itself if it led). Used by the
    /// `sync` mode rule "only the old leader or a synchronous standby may stand".
    pub last_leader: Option<String>,
    /// Last *non-empty* list of synchronous standbys announced by a leader (sync mode
    /// only; empty when never heard). With `last_leader` it is the set of nodes that
    /// hold every acknowledged write in sync mode.
    pub sync_standbys: Vec<String>,
}

/// Role of the node in the election protocol. `as_str()` names are stable: they are
/// status strings and metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows `leader_id()` (or waits for one).
    Follower,
    /// Asking for pre-votes (term not bumped yet).
    PreCandidate,
    /// Asking for votes in its own new term.
    Candidate,
    /// Elected for `term()`.
    Leader,
}

impl Role {
    /// Stable lower-case name: `follower`, `pre_candidate`, `candidate`, `leader`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre_candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a vote was refused or an admin command was not carried out. The numeric code
/// (`code()`) is what travels in a [`crate::Message::VoteResponse`]; `as_str()` is a
/// stable name for logs, metrics and admin API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The request's term is older than the voter's.
    StaleTerm,
    /// The voter already voted for another candidate in that term (or follows a leader in it).
    AlreadyVoted,
    /// The candidate's `(last_term, last_lsn)` is behind the voter's.
    LogBehind,
    /// The voter heard from a live leader within its lease (and the request is not a transfer).
    LeaderAlive,
    /// Sync mode: the candidate is neither the last leader nor a synchronous standby.
    NotSyncStandby,
    /// Async mode: the candidate is more than `max_lag_bytes` behind the leader's flush LSN.
    TooFarBehind,
    /// The candidate has priority 0 (never promoted).
    NoPriority,
    /// The candidate or target is not a configured member.
    NotMember,
    /// Automatic failover is paused (or off) and the request is not a manual one.
    Paused,
    /// Admin command needs the leader, and this node is not it.
    NotLeader,
    /// A leadership transfer is already running.
    TransferInProgress,
    /// The voter (or the would-be candidate) is being rebuilt from the leader's
    /// checkpoint, or has not yet caught up after a rebuild: its log position does
    /// not say which writes it held, so it neither votes nor stands (not even forced).
    Rebuilding,
}

impl Refusal {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::StaleTerm => "stale_term",
            Refusal::AlreadyVoted => "already_voted",
            Refusal::LogBehind => "log_behind",
            Refusal::LeaderAlive => "leader_alive",
            Refusal::NotSyncStandby => "not_sync_standby",
            Refusal::TooFarBehind => "too_far_behind",
            Refusal::NoPriority => "no_priority",
            Refusal::NotMember => "not_member",
            Refusal::Paused => "paused",
            Refusal::NotLeader => "not_leader",
            Refusal::TransferInProgress => "transfer_in_progress",
            Refusal::Rebuilding => "rebuilding",
        }
    }

    /// Wire code (never 0; 0 means "no reason" on the wire).
    pub fn code(self) -> u8 {
        match self {
            Refusal::StaleTerm => 1,
            Refusal::AlreadyVoted => 2,
            Refusal::LogBehind => 3,
            Refusal::LeaderAlive => 4,
            Refusal::NotSyncStandby => 5,
            Refusal::TooFarBehind => 6,
            Refusal::NoPriority => 7,
            Refusal::NotMember => 8,
            Refusal::Paused => 9,
            Refusal::NotLeader => 10,
            Refusal::TransferInProgress => 11,
            Refusal::Rebuilding => 12,
        }
    }

    /// Inverse of [`Refusal::code`]; `None` for 0 or an unknown code.
    pub fn from_code(code: u8) -> Option<Refusal> {
        Some(match code {
            1 => Refusal::StaleTerm,
            2 => Refusal::AlreadyVoted,
            3 => Refusal::LogBehind,
            4 => Refusal::LeaderAlive,
            5 => Refusal::NotSyncStandby,
            6 => Refusal::TooFarBehind,
            7 => Refusal::NoPriority,
            8 => Refusal::NotMember,
            9 => Refusal::Paused,
            10 => Refusal::NotLeader,
            11 => Refusal::TransferInProgress,
            12 => Refusal::Rebuilding,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
