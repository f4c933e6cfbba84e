//! Admin commands and the pause flag.

use super::*;
use crate::{AdminCommand, Refusal, ReplicationMode, Role};

fn refusal(a: &[Action]) -> Option<Refusal> {
    a.iter().find_map(|x| match x {
        Action::AdminRefused { reason, .. } => Some(*reason),
        _ => None,
    })
}

#[test]
fn campaign_refused_on_priority_zero_unless_forced() {
    let mut c = cfg("n1", 3);
    c.members[0].priority = 0;
    let mut n = Node::new(c, PersistentState::default(), pos(0, 0), 0).unwrap();
    let a = n.step(1, Event::Admin(AdminCommand::Campaign { force: false }));
    assert_eq!(refusal(&a), Some(Refusal::NoPriority));
    assert_eq!(n.role(), Role::Follower);
    let a = n.step(2, Event::Admin(AdminCommand::Campaign { force: true }));
    assert_eq!(n.role(), Role::Candidate);
    assert!(sends(&a).iter().all(|(_, m)| matches!(
        m,
        Message::VoteRequest {
            force: true,
            transfer: true,
            ..
        }
    )));
}

#[test]
fn campaign_refused_for_non_sync_standby() {
    let mut c = cfg("n3", 3);
    c.mode = ReplicationMode::Sync;
    let state = PersistentState {
        last_leader: Some("n1".into()),
        sync_standbys: vec!["n2".into()],
        ..Default::default()
    };
    let mut n = Node::new(c, state, pos(0, 0), 0).unwrap();
    let a = n.step(1, Event::Admin(AdminCommand::Campaign { force: false }));
    assert_eq!(refusal(&a), Some(Refusal::NotSyncStandby));
    // ... and it never stands on its own either.
    for now in (0..20 * T).step_by(5) {
        assert!(n.step(now, Event::Tick).is_empty());
    }
}

#[test]
fn pause_on_a_follower_is_persisted_and_broadcast() {
    let mut n = node("n2", 3);
    let a = n.step(1, Event::Admin(AdminCommand::Pause));
    assert!(persisted(&a).unwrap().paused);
    let s = sends(&a);
    assert_eq!(s.len(), 2);
    assert!(s.iter().all(|(_, m)| *m
        == Message::SetPaused {
            term: 0,
            paused: true
        }));
}

#[test]
fn set_paused_on_leader_is_propagated_in_heartbeats() {
    let (mut l, now) = elected_leader(3);
    let a = l.step(
        now + 1,
        msg(
            "n3",
            Message::SetPaused {
                term: 1,
                paused: true,
            },
        ),
    );
    assert!(persisted(&a).unwrap().paused);
    assert!(sends(&a)
        .iter()
        .all(|(_, m)| matches!(m, Message::Heartbeat { paused: true, .. })));
    let a = l.step(now + 2, Event::Admin(AdminCommand::Resume));
    assert!(!persisted(&a).unwrap().paused);
}

#[test]
fn campaign_on_leader_is_a_no_op() {
    let (mut l, now) = elected_leader(3);
    let a = l.step(
        now + 1,
        Event::Admin(AdminCommand::Campaign { force: true }),
    );
    assert!(a.is_empty());
    assert_eq!((l.role(), l.term()), (Role::Leader, 1));
}
