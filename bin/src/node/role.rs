//! The node's role as the rest of the node sees it, and its stable names.

/// What this node is doing in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for (pre-)votes.
    Candidate,
    /// Accepts writes and ships WAL.
    Leader,
}

impl Role {
    /// Stable name used in `/status`, `walship status` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// Node state strings of INTERFACE.md (also metric label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Opening the WAL, replaying.
    Starting,
    /// Follower behind its leader, receiving WAL.
    Catchup,
    /// Follower caught up, or a leader serving writes.
    Streaming,
    /// Follower without a leader connection.
    Disconnected,
    /// Follower whose leader no longer holds the WAL it needs.
    NeedsRebuild,
    /// Being rebuilt from the leader.
    Rebuilding,
    /// Shutting down.
    Stopping,
    /// A leader that lost its quorum and stopped taking writes.
    Fenced,
    /// The WAL failed (fsync error): the node takes no part in replication or
    /// elections and acknowledges nothing until it is restarted.
    WalFailed,
}

impl NodeState {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Starting => "starting",
            NodeState::Catchup => "catchup",
            NodeState::Streaming => "streaming",
            NodeState::Disconnected => "disconnected",
            NodeState::NeedsRebuild => "needs_rebuild",
            NodeState::Rebuilding => "rebuilding",
            NodeState::Stopping => "stopping",
            NodeState::Fenced => "fenced",
            NodeState::WalFailed => "wal_failed",
        }
    }
}

/// A snapshot of the role, published on a watch channel whenever it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleInfo {
    /// Current role.
    pub role: Role,
    /// Current state.
    pub state: NodeState,
    /// Current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader_id: Option<String>,
    /// Leader only: writes are accepted (not fenced, not handing over).
    pub accepting_writes: bool,
    /// Automatic failover paused cluster-wide.
    pub paused: bool,
}

impl RoleInfo {
    /// The state at start-up.
    pub fn starting(term: u64, paused: bool) -> RoleInfo {
        RoleInfo {
            role: Role::Follower,
            state: NodeState::Starting,
            term,
            leader_id: None,
            accepting_writes: false,
            paused,
        }
    }

    /// True for a leader that can take writes.
    pub fn is_writable_leader(&self) -> bool {
        self.role == Role::Leader && self.accepting_writes
    }
}
