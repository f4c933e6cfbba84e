//! Election configuration and the timings derived from it.

use crate::error::FailoverError;

/// Longest member id accepted (bytes of UTF-8); also the wire limit.
pub const MAX_ID_LEN: usize = 255;
/// Most members a cluster may have; also the wire limit for id lists.
pub const MAX_MEMBERS: usize = 64;

/// One configured member of the cluster (this node included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Unique node id.
    pub id: String,
    /// 0: never stands for election (unless forced); higher wins ties between equal logs.
    pub priority: u32,
}

/// Replication mode, as far as elections care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationMode {
    /// Writes acknowledged by the leader alone. A node more than `max_lag_bytes` behind
    /// the last leader flush LSN it heard does not stand (unless forced); a new leader that
    /// is behind that LSN reports the lost range (`Action::LostWrites`).
    Async {
        /// `failover.max_lag_on_failover` in bytes.
        max_lag_bytes: u64,
    },
    /// `FIRST k (...)`: only the last leader or one of its last announced synchronous
    /// standbys may stand; voters refuse others unless forced.
    Sync,
    /// `ANY k (...)` / majority: the Raft log rule alone.
    Quorum,
}

/// Configuration of one election core. Identical `members` on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's id; must be in `members`.
    pub id: String,
    /// Every member of the cluster, this node included.
    pub members: Vec<Member>,
    /// Leader heartbeat period (ms). `election_timeout_ms >= 3 * heartbeat_interval_ms`.
    pub heartbeat_interval_ms: u64,
    /// Failure-detection bound (ms): the first-ranked follower stands within
    /// `[T - H/2, T)` of the last heartbeat it heard. See [`Timing`].
    pub election_timeout_ms: u64,
    /// false: followers never start an election on their own (only `Campaign`/`TimeoutNow`).
    pub auto_failover: bool,
    /// Ask for pre-votes (term not bumped) before a real election. Default true.
    pub pre_vote: bool,
    /// Leaders step down when they cannot hear a majority; voters honour a leader lease.
    /// Default true.
    pub check_quorum: bool,
    /// Replication mode rules for who may stand.
    pub mode: ReplicationMode,
    /// Seed of the election-timeout randomisation (make it differ per node).
    pub seed: u64,
}

impl Config {
    /// A config with the defaults of docs/INTERFACE.md: heartbeat 100 ms, election
    /// timeout 1 s, auto failover on, pre-vote and check-quorum on, quorum mode, seed
    /// derived from `id`.
    pub fn new(id: impl Into<String>, members: Vec<Member>) -> Config {
        let id = id.into();
        let seed = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Config {
            id,
            members,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            auto_failover: true,
            pre_vote: true,
            check_quorum: true,
            mode: ReplicationMode::Quorum,
            seed,
        }
    }

    /// Checks every rule a core relies on; the error names the rule and the value.
    pub fn validate(&self) -> Result<(), FailoverError> {
        let bad = |reason: String| Err(FailoverError::InvalidConfig { reason });
        if self.members.is_empty() || self.members.len() > MAX_MEMBERS {
            return bad(format!(
                "members: {} given, need 1..={MAX_MEMBERS}",
                self.members.len()
            ));
        }
        for (i, m) in self.members.iter().enumerate() {
            if m.id.is_empty() || m.id.len() > MAX_ID_LEN {
                return bad(format!(
                    "member id {:?}: length must be 1..={MAX_ID_LEN} bytes",
                    m.id
                ));
            }
            if self.members[..i].iter().any(|o| o.id == m.id) {
                return bad(format!("member id {:?} listed twice", m.id));
            }
        }
        if !self.members.iter().any(|m| m.id == self.id) {
            return bad(format!("node id {:?} is not in members", self.id));
        }
        if self.heartbeat_interval_ms == 0 {
            return bad("heartbeat_interval_ms must be > 0".into());
        }
        if self.election_timeout_ms < 3 * self.heartbeat_interval_ms {
            return bad(format!(
                "election_timeout_ms ({}) must be >= 3 x heartbeat_interval_ms ({})",
                self.election_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        Ok(())
    }

    /// Priority of member `id`, `None` if not a member.
    pub fn priority_of(&self, id: &str) -> Option<u32> {
        self.members.iter().find(|m| m.id == id).map(|m| m.priority)
    }

    /// Votes needed to win: a majority of *configured* members.
    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// The timings derived from this config.
    pub fn timing(&self) -> Timing {
        Timing::new(self.heartbeat_interval_ms, self.election_timeout_ms)
    }
}

/// Timings derived from `H = heartbeat_interval_ms` and `T = election_timeout_ms`.
///
/// Why not Raft's uniform `[T, 2T)`: detection alone would then take 1.3 T on median
/// in a 3-node cluster, above the product bar (failover median <= T, worst <= 1.5 T
/// including detection). Instead followers are *ranked* (the leader announces a
/// succession order in its heartbeats: most up-to-date log first, then priority) and
/// rank `r` stands at `T - J + r * S + uniform[0, J)` after the last heartbeat it heard:
/// the first choice goes within `[T - H/2, T)`, the next one a full heartbeat later, so
/// candidates do not collide (no split-vote tail) and the one most likely to win goes
/// first. The leases are shorter so that the first candidate is not refused:
///
/// | quantity | value | rule it serves |
/// |---|---|---|
/// | `jitter_ms` J | `max(H/2, 1)` | breaks ties between equal ranks |
/// | `rank_spacing_ms` S | `H` | a lower rank starts after a higher one finished |
/// | `lease_ms` L | `T - H` | voters refuse (pre-)votes while a leader was heard within L |
/// | `check_quorum_ms` CQ | `T - 3H/2` | a leader without majority acks for CQ fences; CQ < L so it fences before a majority can elect another |
/// | `transfer_timeout_ms` | `T` | a leadership transfer not done by then is abandoned; writes resume |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// H.
    pub heartbeat_ms: u64,
    /// T.
    pub election_timeout_ms: u64,
    /// J.
    pub jitter_ms: u64,
    /// S.
    pub rank_spacing_ms: u64,
    /// L.
    pub lease_ms: u64,
    /// CQ.
    pub check_quorum_ms: u64,
    /// Transfer deadline.
    pub transfer_timeout_ms: u64,
}

impl Timing {
    /// Derives the table above (saturating; `Config::validate` ensures T >= 3H).
    pub fn new(heartbeat_ms: u64, election_timeout_ms: u64) -> Timing {
        let h = heartbeat_ms.max(1);
        let t = election_timeout_ms.max(3 * h);
        Timing {
            heartbeat_ms: h,
            election_timeout_ms: t,
            jitter_ms: (h / 2).max(1),
            rank_spacing_ms: h,
            lease_ms: t - h,
            check_quorum_ms: t - h - h / 2,
            transfer_timeout_ms: t,
        }
    }

    /// Base (jitter-less) timeout of rank `rank`: `T - J + rank * S`.
    pub fn base_timeout_ms(&self, rank: usize) -> u64 {
        self.election_timeout_ms - self.jitter_ms + rank as u64 * self.rank_spacing_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<Member> {
        (1..=n)
            .map(|i| Member {
                id: format!("n{i}"),
                priority: 1,
            })
            .collect()
    }

    #[test]
    fn validate_rules() {
        assert!(Config::new("n1", members(3)).validate().is_ok());
        assert!(Config::new("n9", members(3)).validate().is_err());
        let mut c = Config::new("n1", members(3));
        c.election_timeout_ms = 250;
        assert!(c.validate().is_err());
        let mut c = Config::new("n1", members(3));
        c.members.push(Member {
            id: "n1".into(),
            priority: 0,
        });
        assert!(c.validate().is_err());
        assert!(Config::new("n1", vec![]).validate().is_err());
    }

    #[test]
    fn timing_ordering() {
        for (h, t) in [(50, 300), (100, 1000), (10, 30)] {
            let tm = Timing::new(h, t);
            assert!(tm.check_quorum_ms < tm.lease_ms);
            assert!(tm.lease_ms < tm.base_timeout_ms(0));
            assert!(tm.base_timeout_ms(0) + tm.jitter_ms <= t);
            assert!(tm.check_quorum_ms > h);
        }
    }

    #[test]
    fn quorum_is_majority_of_configured() {
        assert_eq!(Config::new("n1", members(1)).quorum(), 1);
        assert_eq!(Config::new("n1", members(3)).quorum(), 2);
        assert_eq!(Config::new("n1", members(4)).quorum(), 3);
        assert_eq!(Config::new("n1", members(5)).quorum(), 3);
    }
}
