//! `on_heartbeat` / `on_heartbeat_ack` and the higher-term rule.

use super::*;
use crate::Role;

#[test]
fn heartbeat_makes_follower_and_is_acked_with_our_log() {
    let mut n = node("n2", 3);
    n.step(0, Event::LogPosition(pos(1, 77)));
    let a = n.step(5, msg("n1", heartbeat(2, "n1")));
    assert_eq!(persisted(&a).unwrap().term, 2);
    assert!(a.contains(&Action::BecomeFollower {
        term: 2,
        leader: Some("n1".into())
    }));
    assert_eq!(
        sends(&a),
        vec![(
            "n1".into(),
            Message::HeartbeatAck {
                term: 2,
                last_term: 1,
                last_lsn: 77
            }
        )]
    );
    assert_eq!(n.leader_id(), Some("n1"));
    // A second heartbeat: no role change, no persist.
    let a = n.step(55, msg("n1", heartbeat(2, "n1")));
    assert!(persisted(&a).is_none());
    assert_eq!(a.len(), 1);
}

#[test]
fn heartbeats_keep_the_election_timer_quiet() {
    let mut n = node("n2", 3);
    for now in 0..20 * T {
        let a = if now % H == 0 {
            n.step(now, msg("n1", heartbeat(1, "n1")))
        } else {
            n.step(now, Event::Tick)
        };
        assert!(a.iter().all(|x| !matches!(
            x,
            Action::Send {
                msg: Message::VoteRequest { .. },
                ..
            }
        )));
    }
    assert_eq!(n.role(), Role::Follower);
}

#[test]
fn stale_heartbeat_answered_with_our_term_and_stale_leader_steps_down() {
    let mut f = node("n2", 3);
    f.step(0, msg("n3", heartbeat(5, "n3")));
    let a = f.step(1, msg("n1", heartbeat(1, "n1")));
    let ack = match sends(&a).as_slice() {
        [(to, m @ Message::HeartbeatAck { term: 5, .. })] if to == "n1" => m.clone(),
        other => panic!("{other:?}"),
    };
    let (mut l, now) = elected_leader(3);
    let a = l.step(now + 1, msg("n2", ack));
    assert_eq!((l.role(), l.term()), (Role::Follower, 5));
    assert!(!l.accepting_writes());
    assert_eq!(persisted(&a).unwrap().term, 5);
    assert!(a.contains(&Action::BecomeFollower {
        term: 5,
        leader: None
    }));
}

#[test]
fn heartbeat_adopts_pause_flag_and_persists_it() {
    let mut n = node("n2", 3);
    let mut hb = heartbeat(1, "n1");
    if let Message::Heartbeat { paused, .. } = &mut hb {
        *paused = true;
    }
    let a = n.step(0, msg("n1", hb));
    assert!(persisted(&a).unwrap().paused);
    assert!(n.paused());
}

#[test]
fn candidate_returns_to_follower_on_leader_heartbeat_of_its_term() {
    let mut n = node("n1", 3);
    let (at, _) = run_until_actions(&mut n, 0, 10 * T);
    assert_eq!(n.role(), Role::PreCandidate);
    n.step(at + 1, msg("n2", heartbeat(0, "n2")));
    assert_eq!((n.role(), n.leader_id()), (Role::Follower, Some("n2")));
}

#[test]
fn heartbeat_whose_leader_is_not_the_sender_is_dropped() {
    let mut n = node("n2", 3);
    let a = n.step(0, msg("n3", heartbeat(0, "n1")));
    assert!(sends(&a).is_empty());
    assert_eq!(n.leader_id(), None);
}
