//! Leader: heartbeats, check-quorum, transfer, synchronous standbys, lost writes.

use super::*;
use crate::{AdminCommand, Refusal, ReplicationMode, Role};

fn ack(term: u64, p: LogPosition) -> Message {
    Message::HeartbeatAck {
        term,
        last_term: p.last_term,
        last_lsn: p.last_lsn,
    }
}

#[test]
fn heartbeats_every_interval() {
    let (mut l, now) = elected_leader(3);
    let mut count = 0;
    for t in now + 1..now + 10 * H + 1 {
        count += sends(&l.step(t, Event::Tick)).len();
        l.step(t, msg("n2", ack(1, pos(0, 0))));
    }
    assert_eq!(count, 2 * 10);
}

#[test]
fn check_quorum_fences_a_leader_that_hears_nobody() {
    let (mut l, now) = elected_leader(3);
    let tm = l.config().timing();
    let mut fenced_at = None;
    for t in now + 1..now + 2 * T {
        let a = l.step(t, Event::Tick);
        if a.contains(&Action::Fence { term: 1 }) {
            assert!(a.contains(&Action::BecomeFollower {
                term: 1,
                leader: None
            }));
            fenced_at = Some(t);
            break;
        }
    }
    // The vote from n2 counted as contact at `now`; fencing at exactly now + CQ.
    assert_eq!(fenced_at, Some(now + tm.check_quorum_ms));
    assert!(l.is_fenced() && !l.accepting_writes());
    assert_eq!(l.role(), Role::Follower);
    assert_eq!(l.term(), 1);
}

#[test]
fn check_quorum_satisfied_by_a_majority_of_acks() {
    let (mut l, now) = elected_leader(5);
    for t in now + 1..now + 10 * T {
        if t % H == 0 {
            l.step(t, msg("n2", ack(1, pos(0, 0))));
            l.step(t, msg("n3", ack(1, pos(0, 0))));
        }
        l.step(t, Event::Tick);
    }
    assert!(l.accepting_writes());
}

#[test]
fn no_fencing_while_paused() {
    let (mut l, now) = elected_leader(3);
    l.step(now, Event::Admin(AdminCommand::Pause));
    for t in now + 1..now + 10 * T {
        assert!(!l
            .step(t, Event::Tick)
            .iter()
            .any(|a| matches!(a, Action::Fence { .. })));
    }
    assert!(l.accepting_writes());
}

#[test]
fn transfer_waits_for_target_then_sends_timeout_now() {
    let (mut l, now) = elected_leader(3);
    l.step(now, Event::LogPosition(pos(1, 500)));
    let a = l.step(
        now + 1,
        Event::Admin(AdminCommand::TransferLeadership { to: "n2".into() }),
    );
    assert!(!l.accepting_writes());
    assert!(matches!(sends(&a).as_slice(), [(to, Message::Heartbeat { .. })] if to == "n2"));
    let a = l.step(now + 2, msg("n2", ack(1, pos(1, 499))));
    assert!(!sends(&a)
        .iter()
        .any(|(_, m)| matches!(m, Message::TimeoutNow { .. })));
    let a = l.step(now + 3, msg("n2", ack(1, pos(1, 500))));
    assert!(sends(&a).contains(&("n2".into(), Message::TimeoutNow { term: 1 })));
    // The target campaigns with transfer = true, and the old leader votes for it.
    let mut t = node("n2", 3);
    t.step(0, Event::LogPosition(pos(1, 500)));
    t.step(now, msg("n1", heartbeat(1, "n1")));
    let a = t.step(now + 4, msg("n1", Message::TimeoutNow { term: 1 }));
    assert_eq!(t.role(), Role::Candidate);
    let req = sends(&a).into_iter().find(|(to, _)| to == "n1").unwrap().1;
    assert!(matches!(
        req,
        Message::VoteRequest {
            term: 2,
            transfer: true,
            pre_vote: false,
            ..
        }
    ));
    let a = l.step(now + 5, msg("n2", req));
    assert_eq!(l.role(), Role::Follower);
    assert!(matches!(
        sends(&a)[0].1,
        Message::VoteResponse {
            term: 2,
            granted: true,
            ..
        }
    ));
}

#[test]
fn transfer_abandoned_after_election_timeout() {
    let (mut l, now) = elected_leader(3);
    l.step(
        now + 1,
        Event::Admin(AdminCommand::TransferLeadership { to: "n3".into() }),
    );
    for t in now + 2..now + 1 + T {
        l.step(t, msg("n2", ack(1, pos(0, 0))));
        assert!(!l.accepting_writes(), "at {t}");
    }
    l.step(now + 1 + T, msg("n2", ack(1, pos(0, 0))));
    assert!(l.accepting_writes());
    assert_eq!(l.transfer_target(), None);
}

#[test]
fn transfer_refusals() {
    let (mut l, now) = elected_leader(3);
    let r = |a: Vec<Action>| {
        a.iter().find_map(|x| match x {
            Action::AdminRefused { reason, .. } => Some(*reason),
            _ => None,
        })
    };
    assert_eq!(
        r(l.step(
            now,
            Event::Admin(AdminCommand::TransferLeadership { to: "n9".into() })
        )),
        Some(Refusal::NotMember)
    );
    l.step(
        now,
        Event::Admin(AdminCommand::TransferLeadership { to: "n2".into() }),
    );
    assert_eq!(
        r(l.step(
            now,
            Event::Admin(AdminCommand::TransferLeadership { to: "n3".into() })
        )),
        Some(Refusal::TransferInProgress)
    );
    let mut f = node("n2", 3);
    assert_eq!(
        r(f.step(
            0,
            Event::Admin(AdminCommand::TransferLeadership { to: "n3".into() })
        )),
        Some(Refusal::NotLeader)
    );
}

#[test]
fn sync_standbys_announced_and_persisted() {
    let mut c = cfg("n1", 3);
    c.mode = ReplicationMode::Sync;
    let mut l = Node::new(c, PersistentState::default(), pos(0, 0), 0).unwrap();
    l.step(0, Event::Admin(AdminCommand::Campaign { force: false }));
    l.step(
        0,
        msg(
            "n2",
            Message::VoteResponse {
                term: 1,
                granted: true,
                pre_vote: false,
                reject_reason: None,
            },
        ),
    );
    assert_eq!(l.role(), Role::Leader);
    let a = l.step(1, Event::SyncStandbys(vec!["n3".into()]));
    assert_eq!(persisted(&a).unwrap().sync_standbys, vec!["n3".to_string()]);
    assert!(sends(&a).iter().all(|(_, m)| matches!(m, Message::Heartbeat { sync_standbys, .. } if sync_standbys == &vec!["n3".to_string()])));
    // An empty list is announced but does not replace the persisted one.
    let a = l.step(2, Event::SyncStandbys(vec![]));
    assert!(persisted(&a).is_none());
}

#[test]
fn async_leader_elected_behind_reports_lost_writes() {
    let mut c = cfg("n2", 3);
    c.mode = ReplicationMode::Async {
        max_lag_bytes: 1000,
    };
    let mut n = Node::new(c, PersistentState::default(), pos(1, 900), 0).unwrap();
    n.step(0, msg("n1", heartbeat(1, "n1")));
    n.step(1, Event::LeaderFlush { flush_lsn: 1200 });
    n.step(2 * T, Event::Admin(AdminCommand::Campaign { force: false }));
    let a = n.step(
        2 * T,
        msg(
            "n3",
            Message::VoteResponse {
                term: 2,
                granted: true,
                pre_vote: false,
                reject_reason: None,
            },
        ),
    );
    let i = a
        .iter()
        .position(|x| {
            *x == Action::LostWrites {
                from_lsn: 900,
                to_lsn: 1200,
            }
        })
        .unwrap();
    let j = a
        .iter()
        .position(|x| *x == Action::BecomeLeader { term: 2 })
        .unwrap();
    assert!(i < j);
}

#[test]
fn succession_lists_most_up_to_date_first() {
    let (mut l, now) = elected_leader(5);
    l.step(now + 1, msg("n2", ack(1, pos(1, 10))));
    l.step(now + 1, msg("n3", ack(1, pos(1, 30))));
    l.step(now + 1, msg("n4", ack(1, pos(1, 20))));
    let a = l.step(now + H, Event::Tick);
    let succ = sends(&a).into_iter().find_map(|(_, m)| match m {
        Message::Heartbeat { succession, .. } => Some(succession),
        _ => None,
    });
    assert_eq!(succ.unwrap(), vec!["n3", "n4", "n2"]);
}
