//! One function per invariant. Each panics with the seed and the facts that broke it.

use super::Sim;
use failover::{Message, PersistentState};

/// Election safety: at most one leader per term.
pub fn check_one_leader_per_term(sim: &mut Sim, node: usize, term: u64) {
    if let Some(&other) = sim.hist.leaders.get(&term) {
        assert_eq!(
            other, node,
            "seed {}: two leaders in term {term}: {} and {}",
            sim.seed, sim.nodes[other].id, sim.nodes[node].id
        );
    }
    sim.hist.leaders.insert(term, node);
}

/// Leader completeness at election time: the new leader's log holds every entry the
/// oracle saw committed so far.
pub fn check_leader_has_committed(sim: &Sim, node: usize) {
    let log = &sim.nodes[node].log;
    for (i, (t, _)) in sim.hist.committed.iter().enumerate() {
        assert!(
            log.get(i).is_some_and(|x| x == t),
            "seed {}: new leader {} lacks committed index {} (term {t}); its log has {} entries",
            sim.seed,
            sim.nodes[node].id,
            i + 1,
            log.len()
        );
    }
}

/// Oracle: records a commit; a committed index never changes its entry (committed
/// prefixes are identical whoever commits them).
pub fn record_commit(sim: &mut Sim, index: usize, entry_term: u64, leader_term: u64) {
    let c = &mut sim.hist.committed;
    if index <= c.len() {
        assert_eq!(
            c[index - 1].0,
            entry_term,
            "seed {}: index {index} committed twice with different terms",
            sim.seed
        );
    } else {
        assert_eq!(
            index,
            c.len() + 1,
            "seed {}: commit gap at {index}",
            sim.seed
        );
        c.push((entry_term, leader_term));
    }
}

/// No acknowledged (majority-committed) entry lost: every leader of a term later than
/// the commit's term had the entry in its log when elected (checked at the end, so it
/// also covers leaders elected before the commit was observed).
pub fn check_no_committed_entry_lost(sim: &Sim) {
    for (term, node, log, _) in &sim.hist.elections {
        for (i, (t, commit_term)) in sim.hist.committed.iter().enumerate() {
            if term > commit_term {
                assert!(
                    log.get(i) == Some(t),
                    "seed {}: leader {} of term {term} lacks index {} (term {t}) committed in term {commit_term}",
                    sim.seed,
                    sim.nodes[*node].id,
                    i + 1
                );
            }
        }
    }
}

/// Every node's committed prefix equals the oracle's.
pub fn check_committed_prefixes(sim: &Sim) {
    for n in &sim.nodes {
        let upto = n.commit.min(n.log.len());
        assert!(
            n.commit <= n.log.len(),
            "seed {}: {} commit {} beyond log {}",
            sim.seed,
            n.id,
            n.commit,
            n.log.len()
        );
        for i in 0..upto {
            assert_eq!(
                Some(&n.log[i]),
                sim.hist.committed.get(i).map(|(t, _)| t),
                "seed {}: {} committed index {} differs from the oracle",
                sim.seed,
                n.id,
                i + 1
            );
        }
    }
}

/// Votes are never granted twice in a term, terms never go back (persisted states).
pub fn check_persist_transition(sim: &Sim, node: usize, next: &PersistentState) {
    let prev = &sim.nodes[node].persisted;
    assert!(
        next.term >= prev.term,
        "seed {}: {} term went back {} -> {}",
        sim.seed,
        sim.nodes[node].id,
        prev.term,
        next.term
    );
    if next.term == prev.term {
        if let Some(v) = &prev.voted_for {
            assert_eq!(
                next.voted_for.as_ref(),
                Some(v),
                "seed {}: {} changed its vote in term {}",
                sim.seed,
                sim.nodes[node].id,
                next.term
            );
        }
    }
}

/// A granted vote leaves only once it is persisted; any message carries a persisted term.
pub fn check_send_is_persisted(sim: &Sim, node: usize, to: &str, msg: &Message) {
    let p = &sim.nodes[node].persisted;
    if let Message::VoteResponse {
        term,
        granted: true,
        pre_vote: false,
        ..
    } = msg
    {
        assert!(
            p.term == *term && p.voted_for.as_deref() == Some(to),
            "seed {}: {} sent a vote for {to} in term {term} not persisted (persisted: {p:?})",
            sim.seed,
            sim.nodes[node].id
        );
    }
    let is_pre_vote = matches!(
        msg,
        Message::VoteRequest { pre_vote: true, .. }
            | Message::VoteResponse {
                pre_vote: true,
                granted: true,
                ..
            }
    );
    if !is_pre_vote {
        assert!(
            msg.term() <= p.term,
            "seed {}: {} sent term {} above its persisted term {}",
            sim.seed,
            sim.nodes[node].id,
            msg.term(),
            p.term
        );
    }
}

/// Liveness: after the faults heal, a stable leader within `bound_ms`.
pub fn check_leader_after_heal(sim: &mut Sim, bound_ms: u64) -> u64 {
    let start = sim.now_us;
    let found = sim.run_until(start + bound_ms * 1000, |s| s.stable_leader().is_some());
    assert!(
        found,
        "seed {}: no stable leader {bound_ms} ms after heal; roles: {:?}",
        sim.seed,
        sim.nodes
            .iter()
            .map(|n| n.core.as_ref().map(|c| (
                c.role().as_str(),
                c.term(),
                c.leader_id().map(str::to_owned)
            )))
            .collect::<Vec<_>>()
    );
    (sim.now_us - start) / 1000
}
