//! Deterministic simulation of a walship cluster's elections.
//!
//! A seeded scheduler drives N election cores over a simulated network (delay,
//! loss, duplication, reordering, partitions) with crash-restarts (a restarted node
//! keeps only its persisted state and its log). The sim also models the log: leaders
//! append entries `(term)` at consecutive LSNs and replicate them with Raft-style
//! append messages (log matching, truncation of divergent tails); an entry is
//! committed when a majority flushed it and it belongs to the leader's term. Every
//! commit goes to an oracle; the checkers in `checkers.rs` test one invariant each.
#![allow(dead_code)]

pub mod checkers;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use bytes::Bytes;
use failover::{
    Action, AdminCommand, Config, Event, LogPosition, Member, Message, Node, PersistentState,
    ReplicationMode, Role,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Knobs of one simulation run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub mode: ReplicationMode,
    /// Normal one-way delay range (µs).
    pub delay_us: (u64, u64),
    /// Fault phase length (ms); 0 = no faults.
    pub fault_ms: u64,
    pub loss: f64,
    pub dup: f64,
    /// Probability that a message is delayed by up to `slow_us` more (reordering).
    pub slow: f64,
    pub slow_us: u64,
    /// Mean time between fault changes (partition/crash/transfer) in the fault phase (ms).
    pub fault_every_ms: u64,
    /// Client write period on the leader (ms).
    pub write_every_ms: u64,
    /// Replication (append) period (ms).
    pub replicate_every_ms: u64,
}

impl SimConfig {
    pub fn faulty(nodes: usize) -> SimConfig {
        SimConfig {
            nodes,
            heartbeat_ms: 50,
            election_timeout_ms: 300,
            mode: ReplicationMode::Quorum,
            delay_us: (100, 1000),
            fault_ms: 5000,
            loss: 0.05,
            dup: 0.02,
            slow: 0.05,
            slow_us: 60_000,
            fault_every_ms: 250,
            write_every_ms: 10,
            replicate_every_ms: 10,
        }
    }
}

/// What travels on the simulated network.
#[derive(Debug, Clone)]
pub enum NetMsg {
    /// An encoded `failover::Message` (the sim decodes it: the encoding is exercised too).
    Failover(Bytes),
    Append {
        term: u64,
        prev_index: usize,
        prev_term: u64,
        entries: Vec<u64>,
        commit: usize,
    },
    AppendResp {
        term: u64,
        ok: bool,
        index: usize,
    },
}

#[derive(Debug, Clone)]
enum Ev {
    Deliver { from: usize, to: usize, msg: NetMsg },
    Timer { node: usize, gen: u64 },
    Replicate,
    Fault,
    Restart { node: usize },
}

/// One simulated node: the core (None while crashed) and what survives a crash.
pub struct SimNode {
    pub id: String,
    pub core: Option<Node>,
    /// Durable: the last PersistState executed.
    pub persisted: PersistentState,
    /// Durable: entry terms, index i (1-based) at `log[i - 1]`; LSN = index.
    pub log: Vec<u64>,
    /// Volatile: highest index known committed.
    pub commit: usize,
    pub timer_gen: u64,
    next_index: BTreeMap<usize, usize>,
    match_index: BTreeMap<usize, usize>,
    pub partition: u8,
}

impl SimNode {
    pub fn log_position(&self) -> LogPosition {
        LogPosition {
            last_term: self.log.last().copied().unwrap_or(0),
            last_lsn: self.log.len() as u64,
        }
    }
}

/// Facts the checkers look at.
#[derive(Debug, Default)]
pub struct History {
    /// term → leader elected in it.
    pub leaders: BTreeMap<u64, usize>,
    /// (term, node, log at election, time µs).
    pub elections: Vec<(u64, usize, Vec<u64>, u64)>,
    /// Oracle: committed entries, index i at [i - 1]: (entry term, term of the committing leader).
    pub committed: Vec<(u64, u64)>,
    /// Per node: every persisted state, in order.
    pub persists: Vec<Vec<PersistentState>>,
    pub fences: usize,
    pub lost_writes: Vec<(u64, u64)>,
}

pub struct Sim {
    pub cfg: SimConfig,
    pub seed: u64,
    pub now_us: u64,
    pub nodes: Vec<SimNode>,
    pub hist: History,
    rng: StdRng,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    free: Vec<usize>,
    seq: u64,
    faults_on: bool,
}

impl Sim {
    pub fn new(cfg: SimConfig, seed: u64) -> Sim {
        let mut sim = Sim {
            nodes: Vec::new(),
            hist: History::default(),
            rng: StdRng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            seq: 0,
            now_us: 0,
            faults_on: cfg.fault_ms > 0,
            seed,
            cfg,
        };
        for i in 0..sim.cfg.nodes {
            sim.nodes.push(SimNode {
                id: format!("n{}", i + 1),
                core: None,
                persisted: PersistentState::default(),
                log: Vec::new(),
                commit: 0,
                timer_gen: 0,
                next_index: BTreeMap::new(),
                match_index: BTreeMap::new(),
                partition: 0,
            });
            sim.hist.persists.push(Vec::new());
        }
        for i in 0..sim.cfg.nodes {
            sim.start_node(i);
        }
        sim.push(sim.cfg.replicate_every_ms * 1000, Ev::Replicate);
        if sim.faults_on {
            let at = sim.rng.gen_range(0..sim.cfg.fault_every_ms * 2000);
            sim.push(at, Ev::Fault);
        }
        sim
    }

    pub fn node_config(&self, i: usize) -> Config {
        let members = (0..self.cfg.nodes)
            .map(|j| Member {
                id: format!("n{}", j + 1),
                priority: 1,
            })
            .collect();
        let mut c = Config::new(format!("n{}", i + 1), members);
        c.heartbeat_interval_ms = self.cfg.heartbeat_ms;
        c.election_timeout_ms = self.cfg.election_timeout_ms;
        c.mode = self.cfg.mode;
        c.seed = self
            .seed
            .wrapping_mul(0x9E37_79B9)
            .wrapping_add(i as u64 * 7919 + self.nodes[i].timer_gen);
        c
    }

    fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }

    fn push(&mut self, delay_us: u64, ev: Ev) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.events[s] = Some(ev);
                s
            }
            None => {
                self.events.push(Some(ev));
                self.events.len() - 1
            }
        };
        self.seq += 1;
        self.queue
            .push(Reverse((self.now_us + delay_us, self.seq, slot)));
    }

    /// (Re)starts node `i` from its durable state only.
    pub fn start_node(&mut self, i: usize) {
        let cfg = self.node_config(i);
        let n = &mut self.nodes[i];
        n.commit = 0;
        n.next_index.clear();
        n.match_index.clear();
        let core = Node::new(
            cfg,
            n.persisted.clone(),
            n.log_position(),
            self.now_us / 1000,
        )
        .expect("valid sim config");
        n.core = Some(core);
        self.schedule_timer(i);
    }

    pub fn crash(&mut self, i: usize) {
        self.nodes[i].core = None;
        self.nodes[i].timer_gen += 1;
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].core.is_some()
    }

    fn schedule_timer(&mut self, i: usize) {
        let Some(core) = &self.nodes[i].core else {
            return;
        };
        let deadline_us = core.next_deadline_ms() * 1000;
        self.nodes[i].timer_gen += 1;
        let gen = self.nodes[i].timer_gen;
        let delay = deadline_us.saturating_sub(self.now_us);
        self.push(delay, Ev::Timer { node: i, gen });
    }

    /// Runs until `until_us` or until `stop` returns true (checked after each event).
    pub fn run_until(&mut self, until_us: u64, mut stop: impl FnMut(&Sim) -> bool) -> bool {
        while let Some(Reverse((at, _, slot))) = self.queue.peek().copied() {
            if at > until_us {
                break;
            }
            self.queue.pop();
            let ev = self.events[slot].take().expect("event slot filled");
            self.free.push(slot);
            self.now_us = at;
            self.handle(ev);
            if stop(self) {
                return true;
            }
        }
        self.now_us = self.now_us.max(until_us);
        false
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Timer { node, gen } => {
                if self.nodes[node].timer_gen == gen && self.is_up(node) {
                    self.step(node, Event::Tick);
                }
            }
            Ev::Deliver { from, to, msg } => {
                if !self.is_up(to)
                    || (self.faults_on && self.nodes[from].partition != self.nodes[to].partition)
                {
                    return;
                }
                match msg {
                    NetMsg::Failover(bytes) => {
                        let msg = Message::decode(&bytes).expect("sim messages decode");
                        let from_id = self.nodes[from].id.clone();
                        self.step(to, Event::Message { from: from_id, msg });
                    }
                    NetMsg::Append {
                        term,
                        prev_index,
                        prev_term,
                        entries,
                        commit,
                    } => self.on_append(to, from, term, prev_index, prev_term, entries, commit),
                    NetMsg::AppendResp { term, ok, index } => {
                        self.on_append_resp(to, from, term, ok, index)
                    }
                }
            }
            Ev::Replicate => {
                self.replicate();
                self.push(self.cfg.replicate_every_ms * 1000, Ev::Replicate);
            }
            Ev::Restart { node } => {
                if !self.is_up(node) {
                    self.start_node(node);
                }
            }
            Ev::Fault => {
                self.fault();
                if self.faults_on {
                    let d = self.rng.gen_range(1..self.cfg.fault_every_ms * 2000);
                    self.push(d, Ev::Fault);
                }
            }
        }
    }

    /// Sends with the current network behaviour.
    fn send(&mut self, from: usize, to: usize, msg: NetMsg) {
        if self.faults_on {
            if self.nodes[from].partition != self.nodes[to].partition
                || self.rng.gen_bool(self.cfg.loss)
            {
                return;
            }
            if self.rng.gen_bool(self.cfg.dup) {
                let d = self.delay();
                self.push(
                    d,
                    Ev::Deliver {
                        from,
                        to,
                        msg: msg.clone(),
                    },
                );
            }
        }
        let d = self.delay();
        self.push(d, Ev::Deliver { from, to, msg });
    }

    fn delay(&mut self) -> u64 {
        let (lo, hi) = self.cfg.delay_us;
        let mut d = self.rng.gen_range(lo..=hi);
        if self.faults_on && self.rng.gen_bool(self.cfg.slow) {
            d += self.rng.gen_range(0..=self.cfg.slow_us);
        }
        d
    }

    fn index_of(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .expect("known member")
    }

    /// Steps node `i`, executes its actions in order (checking the ordering rules), then
    /// feeds back local consequences and re-arms its timer.
    pub fn step(&mut self, i: usize, event: Event) {
        let now_ms = self.now_ms();
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        let actions = core.step(now_ms, event);
        let mut follow_up = Vec::new();
        for (k, a) in actions.into_iter().enumerate() {
            match a {
                Action::PersistState(s) => {
                    assert_eq!(
                        k, 0,
                        "seed {}: PersistState must be the first action",
                        self.seed
                    );
                    checkers::check_persist_transition(self, i, &s);
                    self.nodes[i].persisted = s.clone();
                    self.hist.persists[i].push(s);
                }
                Action::Send { to, msg } => {
                    checkers::check_send_is_persisted(self, i, &to, &msg);
                    let to = self.index_of(&to);
                    self.send(i, to, NetMsg::Failover(msg.encode()));
                }
                Action::BecomeLeader { term } => {
                    checkers::check_one_leader_per_term(self, i, term);
                    checkers::check_leader_has_committed(self, i);
                    let snapshot = self.nodes[i].log.clone();
                    self.hist.elections.push((term, i, snapshot, self.now_us));
                    // Term-start record, then replicate from the end.
                    let n = &mut self.nodes[i];
                    n.log.push(term);
                    n.next_index.clear();
                    n.match_index.clear();
                    let len = n.log.len();
                    for j in 0..self.cfg.nodes {
                        if j != i {
                            n.next_index.insert(j, len);
                            n.match_index.insert(j, 0);
                        }
                    }
                    follow_up.push(Event::LogPosition(n.log_position()));
                }
                Action::BecomeFollower { .. } => {}
                Action::Fence { .. } => self.hist.fences += 1,
                Action::LostWrites { from_lsn, to_lsn } => {
                    self.hist.lost_writes.push((from_lsn, to_lsn))
                }
                Action::AdminRefused { .. } => {}
            }
        }
        for ev in follow_up {
            self.step(i, ev);
        }
        self.schedule_timer(i);
    }

    fn leader_term(&self, i: usize) -> Option<u64> {
        let core = self.nodes[i].core.as_ref()?;
        (core.role() == Role::Leader).then(|| core.term())
    }

    /// Client writes on writable leaders, then appends to every follower.
    fn replicate(&mut self) {
        for i in 0..self.cfg.nodes {
            let Some(term) = self.leader_term(i) else {
                continue;
            };
            let writable = self.nodes[i]
                .core
                .as_ref()
                .is_some_and(|c| c.accepting_writes());
            if writable
                && self.rng.gen_range(0..self.cfg.write_every_ms.max(1))
                    < self.cfg.replicate_every_ms
            {
                self.nodes[i].log.push(term);
                let p = self.nodes[i].log_position();
                self.step(i, Event::LogPosition(p));
            }
            if self.leader_term(i) != Some(term) {
                continue;
            }
            if self.cfg.mode == ReplicationMode::Sync {
                // FIRST 1 (n1, n2, ...): the first follower that has everything committed.
                let n = &self.nodes[i];
                let first = (0..self.cfg.nodes).find(|j| {
                    *j != i
                        && n.match_index
                            .get(j)
                            .is_some_and(|m| *m >= n.commit && *m > 0)
                });
                let list = first
                    .map(|j| vec![self.nodes[j].id.clone()])
                    .unwrap_or_default();
                self.step(i, Event::SyncStandbys(list));
            }
            for j in 0..self.cfg.nodes {
                if j == i {
                    continue;
                }
                let n = &self.nodes[i];
                let next = n
                    .next_index
                    .get(&j)
                    .copied()
                    .unwrap_or(n.log.len())
                    .clamp(1, n.log.len() + 1);
                let prev_index = next - 1;
                let prev_term = if prev_index == 0 {
                    0
                } else {
                    n.log[prev_index - 1]
                };
                let end = n.log.len().min(prev_index + 64);
                let entries = n.log[prev_index..end].to_vec();
                let msg = NetMsg::Append {
                    term,
                    prev_index,
                    prev_term,
                    entries,
                    commit: n.commit,
                };
                self.send(i, j, msg);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append(
        &mut self,
        to: usize,
        from: usize,
        term: u64,
        prev_index: usize,
        prev_term: u64,
        entries: Vec<u64>,
        commit: usize,
    ) {
        // The receiver takes WAL only from the leader its election core follows, in its term.
        let from_id = self.nodes[from].id.clone();
        let core = self.nodes[to].core.as_ref().expect("up");
        if core.term() != term
            || core.role() != Role::Follower
            || core.leader_id() != Some(from_id.as_str())
        {
            return;
        }
        let n = &mut self.nodes[to];
        let reply = if prev_index > n.log.len() {
            NetMsg::AppendResp {
                term,
                ok: false,
                index: n.log.len(),
            }
        } else if prev_index > 0 && n.log[prev_index - 1] != prev_term {
            NetMsg::AppendResp {
                term,
                ok: false,
                index: prev_index - 1,
            }
        } else {
            for (k, t) in entries.iter().enumerate() {
                let idx = prev_index + 1 + k;
                if idx <= n.log.len() {
                    if n.log[idx - 1] != *t {
                        assert!(
                            idx > n.commit,
                            "seed {}: {} truncates committed index {idx}",
                            self.seed,
                            n.id
                        );
                        n.log.truncate(idx - 1);
                        n.log.push(*t);
                    }
                } else {
                    n.log.push(*t);
                }
            }
            let matched = prev_index + entries.len();
            n.commit = n.commit.max(commit.min(matched));
            NetMsg::AppendResp {
                term,
                ok: true,
                index: matched,
            }
        };
        let p = self.nodes[to].log_position();
        if self.nodes[to].core.as_ref().map(|c| c.log_position()) != Some(p) {
            self.step(to, Event::LogPosition(p));
        }
        self.send(to, from, reply);
    }

    fn on_append_resp(&mut self, leader: usize, from: usize, term: u64, ok: bool, index: usize) {
        if self.leader_term(leader) != Some(term) {
            return;
        }
        let n = &mut self.nodes[leader];
        if ok {
            let m = n.match_index.entry(from).or_insert(0);
            *m = (*m).max(index);
            n.next_index.insert(from, index + 1);
        } else {
            n.next_index.insert(from, index + 1);
        }
        // Commit: the quorum-th highest match, only for an entry of our term.
        let mut matches: Vec<usize> = n.match_index.values().copied().collect();
        matches.push(n.log.len());
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let quorum = self.cfg.nodes / 2 + 1;
        let candidate = matches[quorum - 1];
        if candidate > n.commit && n.log[candidate - 1] == term {
            let old = n.commit;
            n.commit = candidate;
            for idx in old + 1..=candidate {
                let t = self.nodes[leader].log[idx - 1];
                checkers::record_commit(self, idx, t, term);
            }
        }
    }

    /// One random fault change (fault phase only).
    fn fault(&mut self) {
        match self.rng.gen_range(0..10) {
            0..=2 => {
                for n in &mut self.nodes {
                    n.partition = 0;
                }
            }
            3..=4 => {
                let k = self.rng.gen_range(0..self.cfg.nodes);
                for (i, n) in self.nodes.iter_mut().enumerate() {
                    n.partition = (i == k) as u8;
                }
            }
            5 => {
                for i in 0..self.cfg.nodes {
                    self.nodes[i].partition = self.rng.gen_range(0..2);
                }
            }
            6..=7 => {
                // Crash a node (the leader half of the time) for a while.
                let leader = (0..self.cfg.nodes).find(|&i| self.leader_term(i).is_some());
                let k = match leader {
                    Some(l) if self.rng.gen_bool(0.5) => l,
                    _ => self.rng.gen_range(0..self.cfg.nodes),
                };
                if self.is_up(k) {
                    self.crash(k);
                    let back = self.rng.gen_range(50_000..800_000);
                    self.push(back, Ev::Restart { node: k });
                }
            }
            8 => {
                if let Some(l) = (0..self.cfg.nodes).find(|&i| self.leader_term(i).is_some()) {
                    let to = format!("n{}", self.rng.gen_range(0..self.cfg.nodes) + 1);
                    self.step(l, Event::Admin(AdminCommand::TransferLeadership { to }));
                }
            }
            _ => {}
        }
    }

    /// Ends the fault phase: one network, no loss, every node up.
    pub fn heal(&mut self) {
        self.faults_on = false;
        for i in 0..self.cfg.nodes {
            self.nodes[i].partition = 0;
            if !self.is_up(i) {
                self.start_node(i);
            }
        }
    }

    /// A leader every live node follows in its term, accepting writes.
    pub fn stable_leader(&self) -> Option<usize> {
        let l = (0..self.cfg.nodes).find(|&i| self.leader_term(i).is_some())?;
        let core = self.nodes[l].core.as_ref()?;
        if !core.accepting_writes() {
            return None;
        }
        let term = core.term();
        let lid = self.nodes[l].id.as_str();
        self.nodes
            .iter()
            .all(|n| {
                n.core
                    .as_ref()
                    .is_none_or(|c| c.term() == term && c.leader_id() == Some(lid))
            })
            .then_some(l)
    }

    pub fn leader_count(&self) -> usize {
        (0..self.cfg.nodes)
            .filter(|&i| self.leader_term(i).is_some())
            .count()
    }
}

/// Seeds to run: `WALSHIP_SIM_SEED=<n>` replays one; otherwise `0..count`
/// (`WALSHIP_SIM_SEEDS=<count>` overrides the default count).
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("WALSHIP_SIM_SEED") {
        return vec![s.trim().parse().expect("WALSHIP_SIM_SEED is an integer")];
    }
    let n = std::env::var("WALSHIP_SIM_SEEDS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default_count);
    (0..n).collect()
}

/// Prints the seed if the test panics while it is alive.
pub struct SeedGuard(pub &'static str, pub u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("\n*** simulation `{}` failed with seed {}; replay: WALSHIP_SIM_SEED={} cargo test -p failover --release --test simulation {}\n", self.0, self.1, self.1, self.0);
        }
    }
}
