//! `on_vote_request`: one test per row of its decision table.

use super::*;
use crate::{Refusal, ReplicationMode, Role};

fn answer(actions: &[Action]) -> (u64, bool, Option<Refusal>) {
    match sends(actions).as_slice() {
        [(
            _,
            Message::VoteResponse {
                term,
                granted,
                reject_reason,
                ..
            },
        )] => (*term, *granted, *reject_reason),
        other => panic!("expected one VoteResponse, got {other:?}"),
    }
}

#[test]
fn grant_is_persisted_before_it_is_sent() {
    let mut n = node("n1", 3);
    let a = n.step(10, msg("n2", vote_req(1, "n2", pos(0, 0), false)));
    let p = persisted(&a).expect("vote persisted");
    assert_eq!((p.term, p.voted_for.as_deref()), (1, Some("n2")));
    assert_eq!(answer(&a), (1, true, None));
    assert_eq!(n.voted_for(), Some("n2"));
}

#[test]
fn one_vote_per_term() {
    let mut n = node("n1", 3);
    n.step(10, msg("n2", vote_req(1, "n2", pos(0, 0), false)));
    let a = n.step(11, msg("n3", vote_req(1, "n3", pos(0, 0), false)));
    assert_eq!(answer(&a), (1, false, Some(Refusal::AlreadyVoted)));
    // The same candidate asking again (duplicate) gets the same answer, no new persist.
    let a = n.step(12, msg("n2", vote_req(1, "n2", pos(0, 0), false)));
    assert!(persisted(&a).is_none());
    assert_eq!(answer(&a), (1, true, None));
}

#[test]
fn log_behind_refused_unless_forced() {
    let mut n = node("n1", 3);
    n.step(0, Event::LogPosition(pos(2, 100)));
    let a = n.step(10, msg("n2", vote_req(3, "n2", pos(2, 99), false)));
    assert_eq!(answer(&a), (3, false, Some(Refusal::LogBehind)));
    // Term adopted even though refused, and persisted.
    assert_eq!(persisted(&a).unwrap().term, 3);
    let a = n.step(10, msg("n2", vote_req(3, "n3", pos(1, 500), false)));
    assert!(sends(&a).is_empty(), "candidate != sender dropped");
    let mut forced = vote_req(4, "n3", pos(1, 5), false);
    if let Message::VoteRequest { force, .. } = &mut forced {
        *force = true;
    }
    let a = n.step(11, msg("n3", forced));
    assert_eq!(answer(&a), (4, true, None));
    // Higher last_term wins even with a lower LSN.
    let mut m = node("n1", 3);
    m.step(0, Event::LogPosition(pos(2, 100)));
    let a = m.step(10, msg("n2", vote_req(3, "n2", pos(3, 1), false)));
    assert_eq!(answer(&a), (3, true, None));
}

#[test]
fn stale_term_refused_with_our_term() {
    let mut n = node("n1", 3);
    n.step(10, msg("n2", vote_req(5, "n2", pos(0, 0), false)));
    let a = n.step(11, msg("n3", vote_req(4, "n3", pos(9, 9), false)));
    assert_eq!(answer(&a), (5, false, Some(Refusal::StaleTerm)));
}

#[test]
fn lease_refuses_and_does_not_adopt_term_but_transfer_skips_it() {
    let mut n = node("n1", 3);
    n.step(10, msg("n2", heartbeat(1, "n2")));
    let a = n.step(20, msg("n3", vote_req(2, "n3", pos(0, 0), false)));
    assert_eq!(answer(&a), (1, false, Some(Refusal::LeaderAlive)));
    assert_eq!(n.term(), 1);
    assert_eq!(n.leader_id(), Some("n2"));
    let mut t = vote_req(2, "n3", pos(0, 0), false);
    if let Message::VoteRequest { transfer, .. } = &mut t {
        *transfer = true;
    }
    let a = n.step(21, msg("n3", t));
    assert_eq!(answer(&a), (2, true, None));
    assert_eq!(n.leader_id(), None);
    // After the lease (T - H) the vote is possible without transfer.
    let mut m = node("n1", 3);
    m.step(10, msg("n2", heartbeat(1, "n2")));
    let a = m.step(10 + T - H, msg("n3", vote_req(2, "n3", pos(0, 0), false)));
    assert_eq!(answer(&a), (2, true, None));
}

#[test]
fn pre_vote_changes_nothing() {
    let mut n = node("n1", 3);
    let a = n.step(10, msg("n2", vote_req(1, "n2", pos(0, 0), true)));
    assert!(persisted(&a).is_none());
    assert_eq!(answer(&a), (1, true, None));
    assert_eq!((n.term(), n.voted_for()), (0, None));
    // A higher-term pre-vote does not bump the term, even when refused.
    n.step(10, Event::LogPosition(pos(1, 10)));
    let a = n.step(11, msg("n2", vote_req(7, "n2", pos(0, 0), true)));
    assert_eq!(answer(&a), (0, false, Some(Refusal::LogBehind)));
    assert_eq!(n.term(), 0);
}

#[test]
fn pre_vote_refused_under_lease_and_when_paused() {
    let mut n = node("n1", 3);
    n.step(10, msg("n2", heartbeat(1, "n2")));
    let a = n.step(20, msg("n3", vote_req(2, "n3", pos(0, 0), true)));
    assert_eq!(answer(&a).2, Some(Refusal::LeaderAlive));
    let mut p = node("n1", 3);
    p.step(0, Event::Admin(crate::AdminCommand::Pause));
    let a = p.step(20, msg("n3", vote_req(1, "n3", pos(0, 0), true)));
    assert_eq!(answer(&a).2, Some(Refusal::Paused));
}

#[test]
fn priority_zero_and_non_members_refused() {
    let mut c = cfg("n1", 3);
    c.members[2].priority = 0;
    let mut n = Node::new(c, PersistentState::default(), pos(0, 0), 0).unwrap();
    let a = n.step(10, msg("n3", vote_req(1, "n3", pos(0, 0), false)));
    assert_eq!(answer(&a), (1, false, Some(Refusal::NoPriority)));
    let a = n.step(10, msg("n9", vote_req(2, "n9", pos(0, 0), false)));
    assert!(a.is_empty(), "non-member dropped");
}

#[test]
fn sync_mode_refuses_non_standbys() {
    let mut c = cfg("n1", 4);
    c.mode = ReplicationMode::Sync;
    let mut n = Node::new(c, PersistentState::default(), pos(0, 0), 0).unwrap();
    let hb = Message::Heartbeat {
        term: 1,
        leader: "n2".into(),
        leader_flush_lsn: 0,
        paused: false,
        sync_standbys: vec!["n3".into()],
        succession: vec![],
    };
    let a = n.step(10, msg("n2", hb));
    let p = persisted(&a).unwrap();
    assert_eq!(
        (p.last_leader.as_deref(), p.sync_standbys.clone()),
        (Some("n2"), vec!["n3".to_string()])
    );
    let later = 10 + T - H;
    let a = n.step(later, msg("n4", vote_req(2, "n4", pos(1, 0), false)));
    assert_eq!(answer(&a), (2, false, Some(Refusal::NotSyncStandby)));
    let a = n.step(later, msg("n3", vote_req(3, "n3", pos(1, 0), false)));
    assert_eq!(answer(&a), (3, true, None));
    // The old leader itself may stand too.
    let a = n.step(later, msg("n2", vote_req(4, "n2", pos(1, 0), false)));
    assert_eq!(answer(&a), (4, true, None));
}

#[test]
fn async_mode_refuses_far_behind_candidates() {
    let mut c = cfg("n1", 3);
    c.mode = ReplicationMode::Async { max_lag_bytes: 100 };
    let mut n = Node::new(c, PersistentState::default(), pos(0, 0), 0).unwrap();
    n.step(10, msg("n2", heartbeat(1, "n2")));
    n.step(11, Event::LeaderFlush { flush_lsn: 1000 });
    let later = 10 + T - H;
    let a = n.step(later, msg("n3", vote_req(2, "n3", pos(1, 899), false)));
    assert_eq!(answer(&a), (2, false, Some(Refusal::TooFarBehind)));
    let a = n.step(later, msg("n3", vote_req(3, "n3", pos(1, 900), false)));
    assert_eq!(answer(&a), (3, true, None));
}

#[test]
fn leader_refuses_non_transfer_votes_and_keeps_leading() {
    let (mut l, now) = elected_leader(3);
    let a = l.step(now + 1, msg("n2", vote_req(9, "n2", pos(5, 5), false)));
    assert_eq!(answer(&a), (1, false, Some(Refusal::LeaderAlive)));
    assert_eq!(l.role(), Role::Leader);
}

/// A node being rebuilt refuses votes and pre-votes (even forced ones), never
/// stands (timer, forced campaign, TimeoutNow), still adopts higher terms, and
/// votes again once the driver clears the flag.
#[test]
fn rebuilding_node_neither_votes_nor_stands() {
    let mut n = node("n1", 3);
    n.set_rebuilding(true);
    assert!(n.is_rebuilding());
    let a = n.step(10, msg("n2", vote_req(1, "n2", pos(5, 500), true)));
    assert_eq!(answer(&a), (0, false, Some(Refusal::Rebuilding)));
    let a = n.step(11, msg("n2", vote_req(1, "n2", pos(5, 500), false)));
    assert_eq!(answer(&a), (1, false, Some(Refusal::Rebuilding)));
    assert_eq!(n.term(), 1, "a higher term is still adopted");
    assert_eq!(n.voted_for(), None);
    let mut forced = vote_req(2, "n3", pos(5, 500), false);
    if let Message::VoteRequest { force, .. } = &mut forced {
        *force = true;
    }
    let a = n.step(12, msg("n3", forced));
    assert_eq!(answer(&a), (2, false, Some(Refusal::Rebuilding)));
    // Long past every election timeout: still a follower, no request sent.
    for t in (100..20_000).step_by(50) {
        let a = n.step(t, Event::Tick);
        assert!(
            !sends(&a)
                .iter()
                .any(|(_, m)| matches!(m, Message::VoteRequest { .. })),
            "a rebuilding node asked for votes at {t} ms"
        );
        assert_eq!(n.role(), Role::Follower);
    }
    let a = n.step(
        20_000,
        Event::Admin(crate::AdminCommand::Campaign { force: true }),
    );
    assert!(
        a.iter().any(|x| matches!(
            x,
            Action::AdminRefused {
                reason: Refusal::Rebuilding,
                ..
            }
        )),
        "{a:?}"
    );
    let a = n.step(20_001, msg("n2", Message::TimeoutNow { term: 2 }));
    assert!(!a.iter().any(|x| matches!(x, Action::BecomeLeader { .. })));
    assert_eq!(n.role(), Role::Follower);
    // Whole again: the next request (new term) is granted.
    n.set_rebuilding(false);
    let a = n.step(20_010, msg("n2", vote_req(3, "n2", pos(5, 500), false)));
    assert_eq!(answer(&a), (3, true, None));
}
