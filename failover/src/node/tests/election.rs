//! Election timer, pre-vote, candidacy and vote counting.

use super::*;
use crate::{AdminCommand, Role};

fn granted(term: u64, pre_vote: bool) -> Message {
    Message::VoteResponse {
        term,
        granted: true,
        pre_vote,
        reject_reason: None,
    }
}

#[test]
fn timeout_starts_pre_vote_without_bumping_term() {
    let mut n = node("n1", 3);
    let (at, a) = run_until_actions(&mut n, 0, 10 * T);
    assert!(
        (T - H / 2..T).contains(&at),
        "rank-0 node stands within [T - H/2, T): {at}"
    );
    assert_eq!(n.role(), Role::PreCandidate);
    assert_eq!(n.term(), 0);
    assert!(persisted(&a).is_none());
    let s = sends(&a);
    assert_eq!(s.len(), 2);
    assert!(s.iter().all(|(_, m)| matches!(
        m,
        Message::VoteRequest {
            term: 1,
            pre_vote: true,
            ..
        }
    )));
}

#[test]
fn pre_vote_majority_then_vote_majority_elects() {
    let mut n = node("n1", 3);
    let (at, _) = run_until_actions(&mut n, 0, 10 * T);
    let a = n.step(at + 1, msg("n2", granted(1, true)));
    assert_eq!(n.role(), Role::Candidate);
    let p = persisted(&a).unwrap();
    assert_eq!((p.term, p.voted_for.as_deref()), (1, Some("n1")));
    assert!(sends(&a).iter().all(|(_, m)| matches!(
        m,
        Message::VoteRequest {
            term: 1,
            pre_vote: false,
            ..
        }
    )));
    let a = n.step(at + 2, msg("n3", granted(1, false)));
    assert_eq!(n.role(), Role::Leader);
    assert!(a.contains(&Action::BecomeLeader { term: 1 }));
    assert_eq!(sends(&a).len(), 2, "heartbeats at once");
    // The self-elected leader persisted itself as last leader before its heartbeats.
    assert_eq!(persisted(&a).unwrap().last_leader.as_deref(), Some("n1"));
}

#[test]
fn stale_and_wrong_kind_responses_ignored() {
    let mut n = node("n1", 5);
    let (at, _) = run_until_actions(&mut n, 0, 10 * T);
    n.step(at, msg("n2", granted(0, false))); // real vote while pre-candidate: ignored
    n.step(at, msg("n3", granted(5, true))); // pre-vote for another term
    n.step(at, msg("n2", granted(1, true)));
    n.step(at, msg("n2", granted(1, true))); // duplicate
    assert_eq!(n.role(), Role::PreCandidate);
    n.step(at, msg("n4", granted(1, true)));
    assert_eq!(n.role(), Role::Candidate);
}

#[test]
fn refusal_with_higher_term_steps_down() {
    let mut n = node("n1", 3);
    let (at, _) = run_until_actions(&mut n, 0, 10 * T);
    let refuse = Message::VoteResponse {
        term: 4,
        granted: false,
        pre_vote: true,
        reject_reason: None,
    };
    let a = n.step(at + 1, msg("n2", refuse));
    assert_eq!((n.role(), n.term()), (Role::Follower, 4));
    assert_eq!(persisted(&a).unwrap().term, 4);
}

#[test]
fn single_member_elects_itself_at_once() {
    let mut n = node("n1", 1);
    let a = n.step(0, Event::Tick);
    assert_eq!(n.role(), Role::Leader);
    assert_eq!(persisted(&a).unwrap().voted_for.as_deref(), Some("n1"));
    assert!(a.contains(&Action::BecomeLeader { term: 1 }));
    // and never fences itself
    n.step(100 * T, Event::Tick);
    assert!(n.accepting_writes());
}

#[test]
fn priority_zero_never_stands() {
    let mut c = cfg("n1", 3);
    c.members[0].priority = 0;
    let mut n = Node::new(c, PersistentState::default(), pos(0, 0), 0).unwrap();
    for now in (0..20 * T).step_by(7) {
        assert!(n.step(now, Event::Tick).is_empty());
    }
    assert_eq!(n.role(), Role::Follower);
}

#[test]
fn auto_failover_off_or_paused_never_stands_on_timeout() {
    let mut c = cfg("n1", 3);
    c.auto_failover = false;
    let mut n = Node::new(c, PersistentState::default(), pos(0, 0), 0).unwrap();
    let paused = PersistentState {
        paused: true,
        ..Default::default()
    };
    let mut p = Node::new(cfg("n1", 3), paused, pos(0, 0), 0).unwrap();
    for now in (0..20 * T).step_by(7) {
        assert!(n.step(now, Event::Tick).is_empty());
        assert!(p.step(now, Event::Tick).is_empty());
    }
    // ... but a manual campaign works.
    let a = n.step(
        20 * T,
        Event::Admin(AdminCommand::Campaign { force: false }),
    );
    assert_eq!(n.role(), Role::Candidate);
    assert!(sends(&a).iter().all(|(_, m)| matches!(
        m,
        Message::VoteRequest {
            transfer: true,
            force: false,
            ..
        }
    )));
}

#[test]
fn succession_rank_orders_candidates() {
    // n3 is first in the announced succession, n2 second: n3 stands a heartbeat earlier.
    let hb = Message::Heartbeat {
        term: 1,
        leader: "n1".into(),
        leader_flush_lsn: 0,
        paused: false,
        sync_standbys: vec![],
        succession: vec!["n3".into(), "n2".into()],
    };
    let mut n2 = node("n2", 3);
    let mut n3 = node("n3", 3);
    n2.step(0, msg("n1", hb.clone()));
    n3.step(0, msg("n1", hb));
    let (t2, _) = run_until_actions(&mut n2, 1, 10 * T);
    let (t3, _) = run_until_actions(&mut n3, 1, 10 * T);
    assert!(t3 < T && t2 >= T - H / 2 + H, "n3 at {t3}, n2 at {t2}");
}

#[test]
fn without_pre_vote_timeout_goes_straight_to_candidate() {
    let mut c = cfg("n1", 3);
    c.pre_vote = false;
    let mut n = Node::new(c, PersistentState::default(), pos(0, 0), 0).unwrap();
    let (_, a) = run_until_actions(&mut n, 0, 10 * T);
    assert_eq!((n.role(), n.term()), (Role::Candidate, 1));
    assert!(persisted(&a).is_some());
}

#[test]
fn restart_keeps_vote_of_the_term() {
    let mut n = node("n1", 3);
    let a = n.step(10, msg("n2", vote_req(3, "n2", pos(0, 0), false)));
    let state = persisted(&a).unwrap();
    let mut r = Node::new(cfg("n1", 3), state, pos(0, 0), 20).unwrap();
    let a = r.step(21, msg("n3", vote_req(3, "n3", pos(0, 0), false)));
    assert!(matches!(
        sends(&a)[0].1,
        Message::VoteResponse { granted: false, .. }
    ));
}
