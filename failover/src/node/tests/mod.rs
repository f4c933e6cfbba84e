//! Unit tests of the election core, one file per handler.

mod admin;
mod election;
mod heartbeat;
mod leader;
mod vote_request;

use crate::{Action, Config, Event, LogPosition, Member, Message, Node, PersistentState};

pub(super) const H: u64 = 50;
pub(super) const T: u64 = 300;

pub(super) fn cfg(id: &str, n: usize) -> Config {
    let members = (1..=n)
        .map(|i| Member {
            id: format!("n{i}"),
            priority: 1,
        })
        .collect();
    let mut c = Config::new(id, members);
    c.heartbeat_interval_ms = H;
    c.election_timeout_ms = T;
    c
}

pub(super) fn node(id: &str, n: usize) -> Node {
    Node::new(
        cfg(id, n),
        PersistentState::default(),
        LogPosition::default(),
        0,
    )
    .unwrap()
}

pub(super) fn pos(last_term: u64, last_lsn: u64) -> LogPosition {
    LogPosition {
        last_term,
        last_lsn,
    }
}

pub(super) fn msg(from: &str, msg: Message) -> Event {
    Event::Message {
        from: from.into(),
        msg,
    }
}

pub(super) fn sends(actions: &[Action]) -> Vec<(String, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, msg } => Some((to.clone(), msg.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn persisted(actions: &[Action]) -> Option<PersistentState> {
    // The ordering invariant: at most one PersistState, and it is first.
    let n = actions
        .iter()
        .filter(|a| matches!(a, Action::PersistState(_)))
        .count();
    assert!(n <= 1, "more than one PersistState: {actions:?}");
    match actions.first() {
        Some(Action::PersistState(s)) => Some(s.clone()),
        _ => {
            assert_eq!(n, 0, "PersistState not first: {actions:?}");
            None
        }
    }
}

pub(super) fn vote_req(term: u64, cand: &str, p: LogPosition, pre_vote: bool) -> Message {
    Message::VoteRequest {
        term,
        candidate: cand.into(),
        last_term: p.last_term,
        last_lsn: p.last_lsn,
        pre_vote,
        transfer: false,
        force: false,
    }
}

pub(super) fn heartbeat(term: u64, leader: &str) -> Message {
    Message::Heartbeat {
        term,
        leader: leader.into(),
        leader_flush_lsn: 0,
        paused: false,
        sync_standbys: vec![],
        succession: vec![],
    }
}

/// Drives `n` (a follower) until its election timer fires; returns the time and actions.
pub(super) fn run_until_actions(n: &mut Node, from_ms: u64, until_ms: u64) -> (u64, Vec<Action>) {
    for now in from_ms..until_ms {
        let a = n.step(now, Event::Tick);
        if !a.is_empty() {
            return (now, a);
        }
    }
    panic!("no action before {until_ms}");
}

/// Makes `n1` leader of an `n`-node cluster at term 1 and returns it and the time.
pub(super) fn elected_leader(n: usize) -> (Node, u64) {
    let mut a = node("n1", n);
    let now = 1;
    a.step(
        now,
        Event::Admin(crate::AdminCommand::Campaign { force: false }),
    );
    for i in 2..=n / 2 + 1 {
        a.step(
            now,
            msg(
                &format!("n{i}"),
                Message::VoteResponse {
                    term: 1,
                    granted: true,
                    pre_vote: false,
                    reject_reason: None,
                },
            ),
        );
    }
    assert!(a.accepting_writes());
    (a, now)
}
