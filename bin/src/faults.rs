//! Process-level fault runs with a history checker (docs/FAULTS.md).
//!
//! A fault run starts a [`LocalCluster`] of real `walship serve` processes, runs
//! W writers and R readers against it continuously, and for N rounds (or a time
//! budget) injects a fault chosen by a seeded [`Schedule`]: SIGKILL of the leader
//! or of a follower (restarted after a while), SIGSTOP of a node past the
//! election timeout (then SIGCONT), a short pause of the leader, a clean restart
//! (SIGTERM), SIGKILL of every node at once, or two faults overlapping on two
//! different nodes. After the last round it heals everything,
//! waits for the nodes to converge and checks the whole history
//! ([`FaultReport`] lists what is checked and what was found):
//!
//! * every acknowledged write is in the committed log of every node, at the LSN
//!   and in the term its acknowledgement named, with its key and value; so the
//!   acknowledged writes of a writer appear in acknowledgement order;
//! * no value appears twice and no value appears that no writer sent;
//! * the final value of every key is its last acknowledged write or a later one,
//!   on every node (read back with `min_lsn`);
//! * all nodes hold the same committed log, report the same state digest
//!   (`GET /v1/admin/digest`) at the same applied LSN, equal to the digest of the
//!   committed log replayed independently into a fresh `KvStore`;
//! * after a clean stop, the WAL bytes of all nodes (read with the `wal` crate)
//!   are identical up to the commit LSN;
//! * reader sessions never went back in time: every answer's `Walship-Lsn` is at
//!   least the session's token (`min_lsn`), a key's value never goes back within
//!   a session, and every value read is the value the committed log gives that
//!   key at some LSN between the token sent and the `Walship-Lsn` returned.
//!
//! Writers use distinct key spaces (`f{writer}-{k}`), each a closed loop writing
//! values `{writer}:{seq}` with a growing `seq` to its keys in turn. A write
//! refused for certain (redirect, `503`, connection refused) is retried with the
//! same value; a write whose outcome is unknown (timeout, `504`, reset) is
//! counted as failed and the writer moves on to the next `seq`, so every value is
//! sent to at most one leader at a time and appears at most once in the log.
//!
//! Replay: the seed is printed at the start; `WALSHIP_FAULT_SEED=<seed>` replays
//! the same fault schedule (kinds, targets by role, hold times). Which node is
//! the leader, and so which process a "kill the leader" hits, depends on the run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use receiver::state::StateMachine;
use serde_json::Value;

use crate::demo::{ClusterSpec, DemoError, LocalCluster};

/// What can stop a fault run before its checker has a verdict.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The cluster harness failed (a node could not start, a timeout, …).
    #[error(transparent)]
    Cluster(#[from] DemoError),
    /// An environment setting could not be parsed.
    #[error("{name}={value:?}: {reason}")]
    BadSetting {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// Anything else (the message says what).
    #[error("{0}")]
    Failed(String),
}

/// Settings of a fault run.
#[derive(Debug, Clone)]
pub struct FaultOptions {
    /// Seed of the fault schedule (and of the readers' choices).
    pub seed: u64,
    /// Rounds to run at most.
    pub rounds: usize,
    /// Stop starting rounds once this much time has passed (None: only `rounds`).
    pub budget: Option<Duration>,
    /// Concurrent writers (each its own key space).
    pub writers: usize,
    /// Keys per writer (each written over and over with growing values).
    pub keys_per_writer: usize,
    /// Concurrent reader sessions.
    pub readers: usize,
    /// The cluster.
    pub spec: ClusterSpec,
    /// Per-request time limit of writers and readers.
    pub request_timeout: Duration,
    /// Generous upper bound for a writable leader to appear after a round healed,
    /// and for the final convergence. Missing it is reported as a violation.
    pub recovery_limit: Duration,
}

impl FaultOptions {
    /// A 3-node quorum cluster (heartbeat 50 ms, election timeout 300 ms),
    /// 4 writers of 8 keys each, 3 readers.
    pub fn new(seed: u64, rounds: usize) -> FaultOptions {
        FaultOptions {
            seed,
            rounds,
            budget: None,
            writers: 4,
            keys_per_writer: 8,
            readers: 3,
            spec: ClusterSpec::fast(3),
            request_timeout: Duration::from_secs(2),
            recovery_limit: Duration::from_secs(30),
        }
    }

    /// [`FaultOptions::new`] with `default_rounds`, overridden by the environment:
    /// `WALSHIP_FAULT_SEED` (decimal or `0x` hex; random when unset),
    /// `WALSHIP_FAULT_ROUNDS`, `WALSHIP_FAULT_DURATION` (humantime, e.g. `5m`; with
    /// no `WALSHIP_FAULT_ROUNDS` the run is then bounded by time only),
    /// `WALSHIP_FAULT_NODES` (3–9), `WALSHIP_FAULT_WRITERS`, `WALSHIP_FAULT_READERS`,
    /// `WALSHIP_FAULT_ELECTION_TIMEOUT` (humantime; the heartbeat is a sixth of it).
    pub fn from_env(default_rounds: usize) -> Result<FaultOptions, FaultError> {
        let seed = match std::env::var("WALSHIP_FAULT_SEED") {
            Ok(v) if !v.trim().is_empty() => parse_seed(&v).ok_or(FaultError::BadSetting {
                name: "WALSHIP_FAULT_SEED",
                value: v.clone(),
                reason: "not a decimal or 0x-hex u64".into(),
            })?,
            _ => rand::random::<u64>() >> 16,
        };
        let rounds_env = match std::env::var("WALSHIP_FAULT_ROUNDS") {
            Ok(v) if !v.trim().is_empty() => {
                Some(
                    v.trim()
                        .parse::<usize>()
                        .map_err(|e| FaultError::BadSetting {
                            name: "WALSHIP_FAULT_ROUNDS",
                            value: v.clone(),
                            reason: e.to_string(),
                        })?,
                )
            }
            _ => None,
        };
        let budget = match std::env::var("WALSHIP_FAULT_DURATION") {
            Ok(v) if !v.trim().is_empty() => Some(humantime::parse_duration(v.trim()).map_err(
                |e| FaultError::BadSetting {
                    name: "WALSHIP_FAULT_DURATION",
                    value: v.clone(),
                    reason: e.to_string(),
                },
            )?),
            _ => None,
        };
        let rounds = match (rounds_env, budget) {
            (Some(r), _) => r,
            (None, Some(_)) => usize::MAX,
            (None, None) => default_rounds,
        };
        let mut o = FaultOptions::new(seed, rounds);
        o.budget = budget;
        if let Some(v) = env_usize("WALSHIP_FAULT_NODES")? {
            if !(3..=9).contains(&v) {
                return Err(FaultError::BadSetting {
                    name: "WALSHIP_FAULT_NODES",
                    value: v.to_string(),
                    reason: "between 3 and 9 nodes".into(),
                });
            }
            o.spec.nodes = v;
        }
        if let Some(v) = env_usize("WALSHIP_FAULT_WRITERS")? {
            o.writers = v.max(1);
        }
        if let Some(v) = env_usize("WALSHIP_FAULT_READERS")? {
            o.readers = v;
        }
        if let Ok(v) = std::env::var("WALSHIP_FAULT_ELECTION_TIMEOUT") {
            let et = humantime::parse_duration(v.trim()).map_err(|e| FaultError::BadSetting {
                name: "WALSHIP_FAULT_ELECTION_TIMEOUT",
                value: v.clone(),
                reason: e.to_string(),
            })?;
            if et < Duration::from_millis(60) {
                return Err(FaultError::BadSetting {
                    name: "WALSHIP_FAULT_ELECTION_TIMEOUT",
                    value: v,
                    reason: "at least 60ms".into(),
                });
            }
            o.spec.election_timeout = et;
            o.spec.heartbeat = et / 6;
        }
        Ok(o)
    }
}

fn env_usize(name: &'static str) -> Result<Option<usize>, FaultError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim()
                .parse::<usize>()
                .map(Some)
                .map_err(|e| FaultError::BadSetting {
                    name,
                    value: v.clone(),
                    reason: e.to_string(),
                })
        }
        _ => Ok(None),
    }
}

fn parse_seed(v: &str) -> Option<u64> {
    let v = v.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

// ---------------------------------------------------------------------------
// The schedule.

/// SplitMix64: a tiny PRNG whose output is fixed forever (unlike `rand`'s
/// `StdRng`, which may change between releases), so a seed replays the same
/// schedule with any build.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[lo, hi)` (`lo` if the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }
}

/// The kind of a round's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL the leader, restart it later.
    KillLeader,
    /// SIGKILL a follower, restart it later.
    KillFollower,
    /// SIGSTOP the leader past the election timeout, then SIGCONT.
    StopLeader,
    /// SIGSTOP a follower past the election timeout, then SIGCONT.
    StopFollower,
    /// SIGSTOP the leader for less than the election timeout, then SIGCONT.
    PauseLeader,
    /// Two of the above on two different nodes, overlapping in time.
    Overlap,
    /// A clean restart (SIGTERM, wait for the exit, start again) of the leader or
    /// a follower.
    RestartNode,
    /// SIGKILL every node at once (a power cut), restart each after a while.
    KillAll,
}

impl FaultKind {
    /// Short name, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill_leader",
            FaultKind::KillFollower => "kill_follower",
            FaultKind::StopLeader => "stop_leader",
            FaultKind::StopFollower => "stop_follower",
            FaultKind::PauseLeader => "pause_leader",
            FaultKind::Overlap => "overlap",
            FaultKind::RestartNode => "restart_node",
            FaultKind::KillAll => "kill_all",
        }
    }
}

/// Which node an injection hits, by role at the start of the round's faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The writable leader.
    Leader,
    /// The k-th follower (the non-leaders in node order).
    Follower(usize),
}

/// What an injection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL, restart after `hold`.
    Kill,
    /// SIGSTOP, SIGCONT after `hold`.
    Stop,
    /// SIGTERM (clean shutdown, SIGKILL after 5 s), restart after `hold`.
    Terminate,
}

/// One fault on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// Which node.
    pub target: Target,
    /// What is done to it.
    pub action: Action,
    /// When, from the start of the round's faults.
    pub at: Duration,
    /// How long until it is healed (restart or SIGCONT).
    pub hold: Duration,
}

impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match self.target {
            Target::Leader => "the leader".to_string(),
            Target::Follower(k) => format!("follower #{k}"),
        };
        let what = match self.action {
            Action::Kill => format!("kill -9 {who}, restart after {} ms", self.hold.as_millis()),
            Action::Stop => format!("SIGSTOP {who} for {} ms", self.hold.as_millis()),
            Action::Terminate => format!(
                "SIGTERM {who} (clean stop), restart after {} ms",
                self.hold.as_millis()
            ),
        };
        if self.at.is_zero() {
            write!(f, "{what}")
        } else {
            write!(f, "at +{} ms {what}", self.at.as_millis())
        }
    }
}

/// One round: load alone for `steady`, then the injections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundPlan {
    /// Round number, from 1.
    pub round: usize,
    /// Its kind.
    pub kind: FaultKind,
    /// Load without faults before the injections.
    pub steady: Duration,
    /// One injection, or two on different nodes for [`FaultKind::Overlap`].
    pub injections: Vec<Injection>,
}

impl fmt::Display for RoundPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inj: Vec<String> = self.injections.iter().map(|i| i.to_string()).collect();
        write!(
            f,
            "round {} {}: after {} ms of load, {}",
            self.round,
            self.kind.as_str(),
            self.steady.as_millis(),
            inj.join("; ")
        )
    }
}

/// The seeded fault schedule: the same seed, election timeout and node count
/// always yield the same sequence of [`RoundPlan`]s.
#[derive(Debug, Clone)]
pub struct Schedule {
    rng: SplitMix64,
    election_timeout: Duration,
    followers: usize,
    round: usize,
}

impl Schedule {
    /// The schedule of `seed` for a cluster of `nodes` nodes.
    pub fn new(seed: u64, election_timeout: Duration, nodes: usize) -> Schedule {
        Schedule {
            rng: SplitMix64::new(seed),
            election_timeout,
            followers: nodes.saturating_sub(1).max(1),
            round: 0,
        }
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.range(lo, hi))
    }

    /// A hold time for `action` on `target`: a kill keeps the node down 0.2–1.5 s;
    /// a stop lasts 1.5–4 election timeouts (past the election timeout).
    fn hold(&mut self, action: Action) -> Duration {
        let et = self.election_timeout.as_millis() as u64;
        match action {
            Action::Kill | Action::Terminate => self.ms(200, 1500),
            Action::Stop => self.ms(et * 3 / 2, et * 4),
        }
    }

    fn follower(&mut self) -> Target {
        Target::Follower(self.rng.range(0, self.followers as u64) as usize)
    }

    /// The next round.
    pub fn next_round(&mut self) -> RoundPlan {
        self.round += 1;
        let et = self.election_timeout.as_millis() as u64;
        let steady = self.ms(300, 900);
        let roll = self.rng.range(0, 100);
        let kind = match roll {
            0..=17 => FaultKind::KillLeader,
            18..=29 => FaultKind::KillFollower,
            30..=47 => FaultKind::StopLeader,
            48..=59 => FaultKind::StopFollower,
            60..=69 => FaultKind::PauseLeader,
            70..=87 => FaultKind::Overlap,
            88..=93 => FaultKind::RestartNode,
            _ => FaultKind::KillAll,
        };
        let one = |target, action, hold| Injection {
            target,
            action,
            at: Duration::ZERO,
            hold,
        };
        let injections = match kind {
            FaultKind::KillLeader => {
                let h = self.hold(Action::Kill);
                vec![one(Target::Leader, Action::Kill, h)]
            }
            FaultKind::KillFollower => {
                let t = self.follower();
                let h = self.hold(Action::Kill);
                vec![one(t, Action::Kill, h)]
            }
            FaultKind::StopLeader => {
                let h = self.hold(Action::Stop);
                vec![one(Target::Leader, Action::Stop, h)]
            }
            FaultKind::StopFollower => {
                let t = self.follower();
                let h = self.hold(Action::Stop);
                vec![one(t, Action::Stop, h)]
            }
            FaultKind::PauseLeader => {
                let h = self.ms(et / 5, et * 7 / 10);
                vec![one(Target::Leader, Action::Stop, h)]
            }
            FaultKind::RestartNode => {
                let t = if self.rng.range(0, 2) == 0 {
                    Target::Leader
                } else {
                    self.follower()
                };
                let h = self.hold(Action::Terminate);
                vec![one(t, Action::Terminate, h)]
            }
            FaultKind::KillAll => {
                let mut v = Vec::new();
                let targets = std::iter::once(Target::Leader)
                    .chain((0..self.followers).map(Target::Follower));
                for t in targets.collect::<Vec<_>>() {
                    let h = self.hold(Action::Kill);
                    v.push(one(t, Action::Kill, h));
                }
                v
            }
            FaultKind::Overlap => {
                let first = if self.rng.range(0, 2) == 0 {
                    Target::Leader
                } else {
                    self.follower()
                };
                let second = match first {
                    Target::Leader => self.follower(),
                    Target::Follower(k) => {
                        if self.followers < 2 || self.rng.range(0, 2) == 0 {
                            Target::Leader
                        } else {
                            let other = self.rng.range(1, self.followers as u64) as usize;
                            Target::Follower((k + other) % self.followers)
                        }
                    }
                };
                let mut v = Vec::new();
                for (i, t) in [first, second].into_iter().enumerate() {
                    let action = if self.rng.range(0, 2) == 0 {
                        Action::Kill
                    } else {
                        Action::Stop
                    };
                    let at = if i == 0 {
                        Duration::ZERO
                    } else {
                        self.ms(0, et)
                    };
                    let hold = self.hold(action);
                    v.push(Injection {
                        target: t,
                        action,
                        at,
                        hold,
                    });
                }
                v
            }
        };
        RoundPlan {
            round: self.round,
            kind,
            steady,
            injections,
        }
    }
}

// ---------------------------------------------------------------------------
// The history recorded by writers and readers.

/// One acknowledged write.
#[derive(Debug, Clone)]
pub struct AckedWrite {
    /// Writer index.
    pub writer: usize,
    /// The writer's sequence number (the value is `{writer}:{seq}`).
    pub seq: u64,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// The LSN returned (end of the record).
    pub lsn: u64,
    /// The term returned.
    pub term: u64,
    /// Index of the node that acknowledged it.
    pub node: usize,
}

/// One successful read (200 or 404) of a reader session.
#[derive(Debug, Clone)]
pub struct ReadObs {
    /// Session index.
    pub session: usize,
    /// Node read from.
    pub node: usize,
    /// Key read.
    pub key: String,
    /// The session's token sent as `min_lsn`.
    pub min_lsn: u64,
    /// The `Walship-Lsn` of the answer.
    pub lsn: u64,
    /// The value (None: 404).
    pub value: Option<String>,
}

#[derive(Default)]
struct History {
    acks: Mutex<Vec<AckedWrite>>,
    reads: Mutex<Vec<ReadObs>>,
    violations: Mutex<Vec<String>>,
    attempted: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    reads_failed: AtomicU64,
    /// Failed reads by cause.
    read_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Per writer: the highest seq sent.
    max_seq: Mutex<Vec<u64>>,
}

impl History {
    fn violation(&self, v: String) {
        println!("VIOLATION: {v}");
        self.violations.lock().push(v);
    }
}

fn key_of(writer: usize, seq: u64, keys: usize) -> String {
    format!("f{writer}-{}", seq % keys.max(1) as u64)
}

fn value_of(writer: usize, seq: u64) -> String {
    format!("{writer}:{seq}")
}

/// `(writer, seq)` of a value written by a fault run.
fn parse_value(v: &str) -> Option<(usize, u64)> {
    let (w, s) = v.split_once(':')?;
    Some((w.parse().ok()?, s.parse().ok()?))
}

fn parse_location(loc: &str, targets: &[SocketAddr]) -> Option<usize> {
    let rest = loc.strip_prefix("http://")?;
    let hostport = rest.split('/').next()?;
    let addr: SocketAddr = hostport.parse().ok()?;
    targets.iter().position(|t| *t == addr)
}

fn http_client(timeout: Duration) -> Result<reqwest::Client, FaultError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| FaultError::Failed(format!("cannot build an HTTP client: {e}")))
}

#[allow(clippy::too_many_arguments)]
async fn writer_loop(
    w: usize,
    keys: usize,
    client: reqwest::Client,
    targets: Arc<Vec<SocketAddr>>,
    hint: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    hist: Arc<History>,
) {
    let n = targets.len();
    let mut target = hint.load(Ordering::Relaxed) % n;
    let mut seq: u64 = 0;
    let rotate = |target: usize| {
        let h = hint.load(Ordering::Relaxed) % n;
        if h != target {
            h
        } else {
            (target + 1) % n
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let key = key_of(w, seq, keys);
        let value = value_of(w, seq);
        hist.attempted.fetch_add(1, Ordering::Relaxed);
        hist.max_seq.lock()[w] = seq;
        // Retry this value while refusals are certain (it was not written).
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let url = format!("http://{}/v1/kv/{key}", targets[target]);
            match client.put(&url).body(value.clone()).send().await {
                Ok(resp) => {
                    let code = resp.status().as_u16();
                    match code {
                        200 => {
                            let v = resp.json::<Value>().await.ok();
                            let lsn = v.as_ref().and_then(|v| {
                                v["lsn"].as_str().and_then(|s| s.parse::<wal::Lsn>().ok())
                            });
                            let term = v.as_ref().and_then(|v| v["term"].as_u64());
                            match (lsn, term) {
                                (Some(lsn), Some(term)) => {
                                    hist.acks.lock().push(AckedWrite {
                                        writer: w,
                                        seq,
                                        key: key.clone(),
                                        value: value.clone(),
                                        lsn: lsn.0,
                                        term,
                                        node: target,
                                    });
                                    hint.store(target, Ordering::Relaxed);
                                }
                                // The body was lost: the write may have happened.
                                _ => {
                                    hist.failed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            break;
                        }
                        307 => {
                            hist.refused.fetch_add(1, Ordering::Relaxed);
                            let loc = resp
                                .headers()
                                .get("location")
                                .and_then(|l| l.to_str().ok())
                                .and_then(|l| parse_location(l, &targets));
                            target = match loc {
                                Some(t) if t != target => t,
                                _ => rotate(target),
                            };
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        503 => {
                            hist.refused.fetch_add(1, Ordering::Relaxed);
                            target = rotate(target);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        400 | 401 | 404 | 405 => {
                            hist.violation(format!(
                                "writer {w}: PUT {url} answered {code}: the harness sends a bad request"
                            ));
                            hist.failed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        _ => {
                            // 504 ack_timeout, 500: outcome unknown.
                            hist.failed.fetch_add(1, Ordering::Relaxed);
                            target = rotate(target);
                            break;
                        }
                    }
                }
                Err(e) if e.is_connect() => {
                    hist.refused.fetch_add(1, Ordering::Relaxed);
                    target = rotate(target);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => {
                    // Timeout or reset after the request went out: outcome unknown.
                    hist.failed.fetch_add(1, Ordering::Relaxed);
                    target = rotate(target);
                    break;
                }
            }
        }
        seq += 1;
    }
}

#[allow(clippy::too_many_arguments)]
async fn reader_loop(
    session: usize,
    seed: u64,
    writers: usize,
    keys: usize,
    client: reqwest::Client,
    targets: Arc<Vec<SocketAddr>>,
    stop: Arc<AtomicBool>,
    hist: Arc<History>,
) {
    let mut rng = SplitMix64::new(seed ^ 0x5EED_0000_0000 ^ session as u64);
    let mut token: u64 = 0;
    let mut seen: HashMap<String, Option<u64>> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let node = rng.range(0, targets.len() as u64) as usize;
        let w = rng.range(0, writers as u64) as usize;
        let key = key_of(w, rng.range(0, keys as u64), keys);
        let url = format!(
            "http://{}/v1/kv/{key}?min_lsn={}&wait=1s",
            targets[node],
            wal::Lsn(token)
        );
        let r = client.get(&url).send().await;
        let mut ok = false;
        let cause = match &r {
            Err(e) if e.is_connect() => "node down",
            Err(e) if e.is_timeout() => "no answer (stopped node)",
            Err(_) => "connection lost",
            Ok(resp) => match resp.status().as_u16() {
                504 => "min_lsn not reached in 1s",
                500 => "HTTP 500",
                503 => "HTTP 503",
                200 | 404 => "answer cut off",
                _ => "other HTTP status",
            },
        };
        if let Ok(resp) = r {
            let code = resp.status().as_u16();
            if code == 200 || code == 404 {
                let header = resp
                    .headers()
                    .get("walship-lsn")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<wal::Lsn>().ok())
                    .map(|l| l.0);
                let body = resp.text().await;
                match (header, body) {
                    (None, _) => hist.violation(format!(
                        "session {session}: GET {url} answered {code} without a Walship-Lsn header"
                    )),
                    (Some(_), Err(_)) => {}
                    (Some(lsn), Ok(body)) => {
                        ok = true;
                        let value = (code == 200).then_some(body);
                        if lsn < token {
                            hist.violation(format!(
                                "session {session}: node #{node} answered {key} at applied LSN {} below the session's token {} (min_lsn): the session went back in time",
                                wal::Lsn(lsn),
                                wal::Lsn(token)
                            ));
                        }
                        let vseq = value.as_deref().and_then(parse_value).map(|(_, s)| s);
                        if value.is_some() && vseq.is_none() {
                            hist.violation(format!(
                                "session {session}: {key} on node #{node} holds {value:?}, which no writer sent"
                            ));
                        }
                        if let Some(prev) = seen.get(&key) {
                            let back = match (prev, vseq) {
                                (Some(p), Some(s)) => s < *p,
                                (Some(_), None) => true,
                                _ => false,
                            };
                            if back {
                                hist.violation(format!(
                                    "session {session}: {key} went back from seq {prev:?} to {vseq:?} (node #{node}, LSN {})",
                                    wal::Lsn(lsn)
                                ));
                            }
                        }
                        seen.insert(key.clone(), vseq);
                        hist.reads.lock().push(ReadObs {
                            session,
                            node,
                            key,
                            min_lsn: token,
                            lsn,
                            value,
                        });
                        token = token.max(lsn);
                    }
                }
            }
        }
        if !ok {
            hist.reads_failed.fetch_add(1, Ordering::Relaxed);
            *hist.read_failures.lock().entry(cause).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------
// The report.

/// What a fault run did and what its checker found.
#[derive(Debug, Clone, Default)]
pub struct FaultReport {
    /// The seed (replay with `WALSHIP_FAULT_SEED`).
    pub seed: u64,
    /// Rounds run.
    pub rounds: usize,
    /// Rounds by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// SIGKILLs sent (each node was restarted).
    pub kills: usize,
    /// SIGSTOPs sent (each followed by SIGCONT).
    pub stops: usize,
    /// Clean restarts (SIGTERM, then start).
    pub terminations: usize,
    /// Highest term seen at the end (elections happened up to it).
    pub final_term: u64,
    /// Distinct writes (values) sent.
    pub writes_attempted: u64,
    /// Writes acknowledged (200 with an LSN).
    pub writes_acked: u64,
    /// Writes whose outcome is unknown (timeout, 504, reset).
    pub writes_failed: u64,
    /// Of those, how many are in the committed log all the same.
    pub failed_but_committed: u64,
    /// Certain refusals (redirect, 503, connection refused), each retried.
    pub writes_refused: u64,
    /// Successful reads (200 or 404) checked.
    pub reads: u64,
    /// Reads that failed (timeouts, `min_lsn` not reached in time, node down).
    pub reads_failed: u64,
    /// Failed reads by cause.
    pub read_failures: BTreeMap<&'static str, u64>,
    /// Divergent WAL tails cut by rejoining nodes (counted in the node logs).
    pub tails_cut: usize,
    /// Acknowledged writes missing from the committed log of some node (the
    /// maximum over nodes). Must be 0.
    pub writes_lost: u64,
    /// Committed records at the end.
    pub records: usize,
    /// Commit LSN at the end.
    pub commit_lsn: u64,
    /// Where the committed logs were compared from: the highest first LSN over
    /// the nodes (0 unless retention removed old WAL).
    pub log_from: u64,
    /// WAL bytes compared between nodes after the clean stop.
    pub wal_bytes_compared: u64,
    /// Every violation found (empty when the history is consistent).
    pub violations: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl FaultReport {
    /// No violation and no acknowledged write lost.
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.writes_lost == 0
    }
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "fault run summary (seed {})", self.seed)?;
        writeln!(
            f,
            "  rounds: {} in {:.1} s; faults by kind: {}",
            self.rounds,
            self.elapsed.as_secs_f64(),
            self.faults
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
            f,
            "  injected: {} faults: {} SIGKILL (+ restart), {} SIGSTOP (+ SIGCONT), {} SIGTERM (+ restart); final term {}",
            self.kills + self.stops + self.terminations,
            self.kills,
            self.stops,
            self.terminations,
            self.final_term
        )?;
        writeln!(
            f,
            "  writes: {} attempted, {} acknowledged, {} failed with outcome unknown ({} of them committed anyway), {} refusals retried",
            self.writes_attempted,
            self.writes_acked,
            self.writes_failed,
            self.failed_but_committed,
            self.writes_refused
        )?;
        writeln!(
            f,
            "  reads: {} checked, {} failed ({})",
            self.reads,
            self.reads_failed,
            self.read_failures
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
            f,
            "  divergent WAL tails cut by rejoining nodes: {}",
            self.tails_cut
        )?;
        writeln!(
            f,
            "  end: {} committed records in [{}, {}); {} WAL bytes compared across nodes",
            self.records,
            wal::Lsn(self.log_from),
            wal::Lsn(self.commit_lsn),
            self.wal_bytes_compared
        )?;
        writeln!(f, "  writes lost: {}", self.writes_lost)?;
        write!(f, "  violations: {}", self.violations.len())?;
        for v in self.violations.iter().take(20) {
            write!(f, "\n    - {v}")?;
        }
        if self.violations.len() > 20 {
            write!(f, "\n    … and {} more", self.violations.len() - 20)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The run.

struct Clock(Instant);

impl Clock {
    fn say(&self, msg: impl AsRef<str>) {
        println!(
            "[{:>7.2}s] {}",
            self.0.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    Up,
    Stopped,
    Down,
}

/// Run a fault run: start a cluster in `dir` with the `walship` executable
/// `exe`, inject faults, check the history. Prints its seed first, then every
/// round and the summary. Every child process is stopped before it returns, on
/// every path. `Ok(report)` carries the verdict ([`FaultReport::ok`]); `Err` means
/// the run could not get as far as a verdict (e.g. the cluster did not start).
pub async fn run(exe: &Path, dir: &Path, opts: &FaultOptions) -> Result<FaultReport, FaultError> {
    let clock = Clock(Instant::now());
    clock.say(format!(
        "fault run: seed {} (replay: WALSHIP_FAULT_SEED={}), {} nodes, up to {} rounds{}, {} writers x {} keys, {} readers, heartbeat {} ms, election timeout {} ms",
        opts.seed,
        opts.seed,
        opts.spec.nodes,
        if opts.rounds == usize::MAX { "∞".to_string() } else { opts.rounds.to_string() },
        opts.budget.map(|b| format!(" or {b:?}")).unwrap_or_default(),
        opts.writers,
        opts.keys_per_writer,
        opts.readers,
        opts.spec.heartbeat.as_millis(),
        opts.spec.election_timeout.as_millis()
    ));
    clock.say(format!("data, configs and node logs in {}", dir.display()));
    let mut c = LocalCluster::launch(exe, dir, opts.spec.clone()).await?;
    let result = drive(&mut c, opts, &clock).await;
    c.shutdown(Duration::from_secs(3)).await;
    drop(c);
    let mut report = result?;
    report.elapsed = clock.0.elapsed();
    Ok(report)
}

async fn drive(
    c: &mut LocalCluster,
    opts: &FaultOptions,
    clock: &Clock,
) -> Result<FaultReport, FaultError> {
    let n = c.len();
    let all: Vec<usize> = (0..n).collect();
    let (leader, term) = c.wait_leader(&all, 1, opts.recovery_limit).await?;
    clock.say(format!("{} leads term {term}", c.node(leader).id));

    let hist = Arc::new(History {
        max_seq: Mutex::new(vec![0; opts.writers]),
        ..History::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let targets = Arc::new(c.http_addrs());
    let hint = Arc::new(AtomicUsize::new(leader));
    let mut tasks = Vec::new();
    for w in 0..opts.writers {
        let client = http_client(opts.request_timeout)?;
        tasks.push(tokio::spawn(writer_loop(
            w,
            opts.keys_per_writer,
            client,
            targets.clone(),
            hint.clone(),
            stop.clone(),
            hist.clone(),
        )));
    }
    for r in 0..opts.readers {
        let client = http_client(opts.request_timeout)?;
        tasks.push(tokio::spawn(reader_loop(
            r,
            opts.seed,
            opts.writers.max(1),
            opts.keys_per_writer.max(1),
            client,
            targets.clone(),
            stop.clone(),
            hist.clone(),
        )));
    }
    let guard = StopOnDrop(stop.clone());

    let mut report = FaultReport {
        seed: opts.seed,
        ..FaultReport::default()
    };
    let mut states = vec![NodeState::Up; n];
    let mut sched = Schedule::new(opts.seed, opts.spec.election_timeout, n);
    let started = Instant::now();
    let mut healthy = true;
    for _ in 0..opts.rounds {
        if let Some(b) = opts.budget {
            if started.elapsed() >= b {
                break;
            }
        }
        let plan = sched.next_round();
        clock.say(format!("{plan}"));
        tokio::time::sleep(plan.steady).await;
        let (leader, term) = match c.wait_leader(&all, 1, opts.recovery_limit).await {
            Ok(l) => l,
            Err(e) => {
                hist.violation(format!(
                    "round {}: no writable leader before the faults: {e}",
                    plan.round
                ));
                healthy = false;
                break;
            }
        };
        let followers: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
        let resolve = |t: Target| match t {
            Target::Leader => leader,
            Target::Follower(k) => followers[k % followers.len().max(1)],
        };
        // Timeline: (offset, injection index, apply?) sorted by offset.
        let mut steps: Vec<(Duration, usize, bool)> = Vec::new();
        for (i, inj) in plan.injections.iter().enumerate() {
            steps.push((inj.at, i, true));
            steps.push((inj.at + inj.hold, i, false));
        }
        steps.sort_by_key(|s| (s.0, !s.2));
        let t0 = Instant::now();
        for (at, i, apply) in steps {
            let inj = &plan.injections[i];
            let node = resolve(inj.target);
            let id = c.node(node).id.clone();
            tokio::time::sleep(at.saturating_sub(t0.elapsed())).await;
            let role = if node == leader {
                format!("leader of term {term}")
            } else {
                "follower".to_string()
            };
            match (inj.action, apply) {
                (Action::Kill, true) => {
                    c.kill9(node)?;
                    states[node] = NodeState::Down;
                    report.kills += 1;
                    clock.say(format!("  kill -9 {id} ({role})"));
                }
                (Action::Terminate, true) => {
                    c.stop(node, Duration::from_secs(5)).await;
                    states[node] = NodeState::Down;
                    report.terminations += 1;
                    clock.say(format!("  SIGTERM {id} ({role}): stopped cleanly"));
                }
                (Action::Kill | Action::Terminate, false) => {
                    let pid = c.start(node)?;
                    states[node] = NodeState::Up;
                    clock.say(format!("  restarted {id} (pid {pid})"));
                }
                (Action::Stop, true) => {
                    c.signal(node, libc::SIGSTOP)?;
                    states[node] = NodeState::Stopped;
                    report.stops += 1;
                    clock.say(format!("  SIGSTOP {id} ({role})"));
                }
                (Action::Stop, false) => {
                    c.signal(node, libc::SIGCONT)?;
                    states[node] = NodeState::Up;
                    clock.say(format!("  SIGCONT {id}"));
                }
            }
        }
        *report.faults.entry(plan.kind.as_str()).or_default() += 1;
        report.rounds += 1;
        // A node that exited on its own crashed: that is a finding.
        for (i, st) in states.iter().enumerate() {
            if *st == NodeState::Up {
                if let Some(st) = c.exited(i) {
                    hist.violation(format!(
                        "round {}: {} exited on its own ({st}); its log ends with:\n{}",
                        plan.round,
                        c.node(i).id,
                        c.log_tail(i, 12)
                    ));
                    c.start(i)?;
                }
            }
        }
        let healed = Instant::now();
        match c.wait_leader(&all, 1, opts.recovery_limit).await {
            Ok((l, t)) => clock.say(format!(
                "  healed; {} leads term {t} ({} ms after healing); {} writes acknowledged so far",
                c.node(l).id,
                healed.elapsed().as_millis(),
                hist.acks.lock().len()
            )),
            Err(e) => {
                hist.violation(format!(
                    "round {}: no writable leader after healing: {e}",
                    plan.round
                ));
                healthy = false;
                break;
            }
        }
    }
    // Heal whatever is left (a run that broke off early).
    for (i, st) in states.iter().enumerate() {
        match st {
            NodeState::Stopped => {
                c.signal(i, libc::SIGCONT)?;
            }
            NodeState::Down => {
                c.start(i)?;
            }
            NodeState::Up => {}
        }
    }
    // A little more load on the healed cluster, then stop the clients; their
    // in-flight requests finish (or time out) so every outcome is known.
    if healthy {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    drop(guard);
    clock.say("load stopped; checking the history ...");

    let outcome = check(c, opts, &hist, &mut report, clock).await;
    if let Err(e) = outcome {
        hist.violation(format!("the checker could not finish: {e}"));
    }
    report.writes_attempted = hist.attempted.load(Ordering::Relaxed);
    report.writes_acked = hist.acks.lock().len() as u64;
    report.writes_failed = hist.failed.load(Ordering::Relaxed);
    report.writes_refused = hist.refused.load(Ordering::Relaxed);
    report.reads = hist.reads.lock().len() as u64;
    report.reads_failed = hist.reads_failed.load(Ordering::Relaxed);
    report.read_failures = hist.read_failures.lock().clone();
    report.tails_cut = (0..n)
        .map(|i| c.log_lines(i, "cut this node's divergent WAL tail").len())
        .sum();
    report.violations = std::mem::take(&mut *hist.violations.lock());
    Ok(report)
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One committed record as `GET /v1/log` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogRec {
    lsn: u64,
    end: u64,
    term: u64,
    kind: String,
    key: Option<String>,
    value: Option<Vec<u8>>,
}

async fn committed_log(
    client: &reqwest::Client,
    http: SocketAddr,
    from: u64,
) -> Result<Vec<LogRec>, FaultError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let mut from = wal::Lsn(from).to_string();
    loop {
        let url = format!("http://{http}/v1/log?from={from}&limit=10000");
        let r = client
            .get(&url)
            .send()
            .await
            .map_err(|e| FaultError::Failed(format!("GET {url}: {e}")))?;
        if !r.status().is_success() {
            return Err(FaultError::Failed(format!(
                "GET {url}: HTTP {}",
                r.status()
            )));
        }
        let text = r
            .text()
            .await
            .map_err(|e| FaultError::Failed(format!("GET {url}: {e}")))?;
        let mut next = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line)
                .map_err(|e| FaultError::Failed(format!("GET {url}: bad line {line:?}: {e}")))?;
            let lsn = |k: &str| {
                v[k].as_str()
                    .and_then(|s| s.parse::<wal::Lsn>().ok())
                    .map(|l| l.0)
                    .ok_or_else(|| FaultError::Failed(format!("GET {url}: no {k} in {line}")))
            };
            let rec = LogRec {
                lsn: lsn("lsn")?,
                end: lsn("end")?,
                term: v["term"].as_u64().unwrap_or(0),
                kind: v["kind"].as_str().unwrap_or("?").to_string(),
                key: v["key"].as_str().map(str::to_string),
                value: v["value_b64"].as_str().and_then(|s| b64.decode(s).ok()),
            };
            next = Some(wal::Lsn(rec.end).to_string());
            out.push(rec);
        }
        match next {
            Some(n) => from = n,
            None => return Ok(out),
        }
    }
}

/// The highest `first_lsn` of the nodes' `/status` (retention removes WAL at
/// different points on different nodes; logs are compared from here).
async fn highest_first_lsn(client: &reqwest::Client, c: &LocalCluster) -> Result<u64, FaultError> {
    let mut from = 0;
    for i in 0..c.len() {
        let url = format!("http://{}/status", c.node(i).http);
        let v: Value = client
            .get(&url)
            .send()
            .await
            .map_err(|e| FaultError::Failed(format!("GET {url}: {e}")))?
            .json()
            .await
            .map_err(|e| FaultError::Failed(format!("GET {url}: {e}")))?;
        let first = v["first_lsn"]
            .as_str()
            .and_then(|s| s.parse::<wal::Lsn>().ok())
            .ok_or_else(|| FaultError::Failed(format!("GET {url}: no first_lsn")))?;
        from = from.max(first.0);
    }
    Ok(from)
}

/// The value of every writer key on the node at `http` (at least at `lsn`), as a
/// state to check final values against when the WAL before the compared log was
/// removed.
async fn node_values(
    client: &reqwest::Client,
    http: SocketAddr,
    opts: &FaultOptions,
    lsn: u64,
) -> Result<receiver::state::KvStore, FaultError> {
    let mut kv = receiver::state::KvStore::new();
    for w in 0..opts.writers {
        for k in 0..opts.keys_per_writer {
            let key = key_of(w, k as u64, opts.keys_per_writer);
            let url = format!(
                "http://{http}/v1/kv/{key}?min_lsn={}&wait=10s",
                wal::Lsn(lsn)
            );
            let (code, body) = get_status_and_body(client, &url).await?;
            match code {
                200 => kv.apply(&receiver::state::Applied {
                    lsn,
                    end: lsn,
                    term: 0,
                    kind: receiver::state::KIND_PUT,
                    payload: &receiver::state::encode_put(key.as_bytes(), &body),
                }),
                404 => {}
                other => return Err(FaultError::Failed(format!("GET {url}: HTTP {other}"))),
            }
        }
    }
    Ok(kv)
}

/// Wait until every node reports the same write, commit and apply LSN.
async fn wait_settled(c: &LocalCluster, limit: Duration) -> Result<u64, FaultError> {
    let all: Vec<usize> = (0..c.len()).collect();
    let deadline = Instant::now() + limit;
    let lsn = c.wait_converged(&all, limit).await?;
    loop {
        let mut st = Vec::new();
        for &i in &all {
            st.push(c.status(i).await);
        }
        if st
            .iter()
            .all(|s| matches!(s, Some(s) if s.commit_lsn == lsn && s.write_lsn == lsn && s.apply_lsn == lsn))
        {
            return Ok(lsn);
        }
        if Instant::now() >= deadline {
            return Err(FaultError::Failed(format!(
                "the nodes did not agree on commit LSN {} within {limit:?}: {st:?}",
                wal::Lsn(lsn)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn check(
    c: &mut LocalCluster,
    opts: &FaultOptions,
    hist: &History,
    report: &mut FaultReport,
    clock: &Clock,
) -> Result<(), FaultError> {
    let n = c.len();
    let all: Vec<usize> = (0..n).collect();
    let (leader, term) = c.wait_leader(&all, 1, opts.recovery_limit).await?;
    report.final_term = term;
    let lsn = wait_settled(c, opts.recovery_limit).await?;
    report.commit_lsn = lsn;
    clock.say(format!(
        "{} leads term {term}; all {n} nodes hold, commit and applied the log up to {}",
        c.node(leader).id,
        wal::Lsn(lsn)
    ));
    let client = http_client(Duration::from_secs(30))?;

    // 1. The committed logs: identical on every node, from the highest first LSN
    // (retention removes old WAL once checkpoints are taken, at different points on
    // different nodes; what lies before it is checked through the state digests).
    // Retention may move a first LSN while we read: then start again.
    let mut attempt = 0;
    let (from, logs) = loop {
        attempt += 1;
        let from = highest_first_lsn(&client, c).await?;
        let mut logs = Vec::new();
        let mut failed = None;
        for i in 0..n {
            match committed_log(&client, c.node(i).http, from).await {
                Ok(l) => logs.push(l),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            None => break (from, logs),
            Some(e) if attempt >= 3 => return Err(e),
            Some(_) => continue,
        }
    };
    report.log_from = from;
    for i in 1..n {
        if logs[i] != logs[0] {
            let at = logs[0]
                .iter()
                .zip(logs[i].iter())
                .position(|(a, b)| a != b)
                .unwrap_or(logs[0].len().min(logs[i].len()));
            hist.violation(format!(
                "{} and {} hold different committed logs ({} and {} records); first difference at record {at}: {:?} vs {:?}",
                c.node(0).id,
                c.node(i).id,
                logs[0].len(),
                logs[i].len(),
                logs[0].get(at),
                logs[i].get(at)
            ));
        }
    }
    for (i, log) in logs.iter().enumerate() {
        let end = log.last().map(|r| r.end).unwrap_or(0);
        if end != lsn {
            hist.violation(format!(
                "{}: its committed log ends at {}, not at the commit LSN {}",
                c.node(i).id,
                wal::Lsn(end),
                wal::Lsn(lsn)
            ));
        }
    }
    let log = &logs[0];
    report.records = log.len();

    // 2. Replay the committed log independently; compare digests. When the WAL
    // before `from` is gone (retention), the replay lacks the state before it: then
    // every node's digest must equal the first node's, and the reference state is
    // the first node's values of every key (read below).
    let mut kv = receiver::state::KvStore::new();
    for r in log.iter().filter(|_| from == 0) {
        let kind = match r.kind.as_str() {
            "put" => receiver::state::KIND_PUT,
            "delete" => receiver::state::KIND_DELETE,
            _ => wal::kind::TERM_START,
        };
        let payload = match (kind, &r.key, &r.value) {
            (receiver::state::KIND_PUT, Some(k), Some(v)) => {
                receiver::state::encode_put(k.as_bytes(), v)
            }
            (receiver::state::KIND_DELETE, Some(k), _) => k.as_bytes().to_vec(),
            _ => Vec::new(),
        };
        kv.apply(&receiver::state::Applied {
            lsn: r.lsn,
            end: r.end,
            term: r.term,
            kind,
            payload: &payload,
        });
    }
    let mut want = format!("{:016x}", kv.digest());
    for i in 0..n {
        let url = format!("http://{}/v1/admin/digest", c.node(i).http);
        let v: Value = client
            .get(&url)
            .send()
            .await
            .map_err(|e| FaultError::Failed(format!("GET {url}: {e}")))?
            .json()
            .await
            .map_err(|e| FaultError::Failed(format!("GET {url}: {e}")))?;
        let applied = v["applied_lsn"]
            .as_str()
            .and_then(|s| s.parse::<wal::Lsn>().ok());
        let digest = v["digest"].as_str().unwrap_or("");
        if from > 0 && i == 0 {
            want = digest.to_string();
        }
        if applied != Some(wal::Lsn(lsn)) || digest != want {
            hist.violation(format!(
                "{}: state digest {digest} at applied LSN {:?}; {} gives {want} at {}",
                c.node(i).id,
                applied,
                if from == 0 {
                    "the committed log replayed".to_string()
                } else {
                    format!("{} (WAL before {} removed)", c.node(0).id, wal::Lsn(from))
                },
                wal::Lsn(lsn)
            ));
        }
    }
    if from > 0 {
        kv = node_values(&client, c.node(0).http, opts, lsn).await?;
    }
    clock.say(format!(
        "  {} committed records, identical on all nodes; state digest {want} ({} keys) on every node at {}",
        log.len(),
        kv.len(),
        wal::Lsn(lsn)
    ));

    // 3. Acknowledged writes: present at their LSN, in order; nothing unknown or doubled.
    let acks = hist.acks.lock().clone();
    let max_seq = hist.max_seq.lock().clone();
    let mut lost_max = 0u64;
    for (i, l) in logs.iter().enumerate() {
        let (lost, v) = check_acks(l, from, &acks, &c.node(i).id);
        lost_max = lost_max.max(lost);
        for v in v {
            hist.violation(v);
        }
    }
    report.writes_lost = lost_max;
    let space = KeySpace {
        writers: opts.writers,
        keys: opts.keys_per_writer,
        max_seq: &max_seq,
    };
    let (failed_committed, v) = check_log_values(log, &acks, &space);
    report.failed_but_committed = failed_committed;
    for v in v {
        hist.violation(v);
    }

    // 4. Final values: the last acknowledged write of a key or a later one, on every node.
    for v in check_final_values(&kv, &acks, &space) {
        hist.violation(v);
    }
    let mut keys_checked = 0usize;
    for w in 0..opts.writers {
        for k in 0..opts.keys_per_writer {
            let key = key_of(w, k as u64, opts.keys_per_writer);
            let expect = kv.get(key.as_bytes());
            for i in 0..n {
                let url = format!(
                    "http://{}/v1/kv/{key}?min_lsn={}&wait=10s",
                    c.node(i).http,
                    wal::Lsn(lsn)
                );
                let (code, body) = get_status_and_body(&client, &url).await?;
                let got = match code {
                    200 => Some(body.to_vec()),
                    404 => None,
                    other => {
                        hist.violation(format!("GET {url}: HTTP {other}"));
                        continue;
                    }
                };
                if got.as_deref() != expect.as_deref() {
                    hist.violation(format!(
                        "{} holds {key} = {:?}; the committed log gives {:?}",
                        c.node(i).id,
                        got.as_deref().map(String::from_utf8_lossy),
                        expect.as_deref().map(String::from_utf8_lossy)
                    ));
                }
                keys_checked += 1;
            }
        }
    }

    // 5. Reads against the committed log.
    let reads = hist.reads.lock().clone();
    let names: Vec<String> = (0..n).map(|i| c.node(i).id.clone()).collect();
    let bad = check_reads(log, from, &reads, &names);
    let bad_reads = bad.len();
    for v in bad {
        hist.violation(v);
    }
    clock.say(format!(
        "  {} acknowledged writes checked on {n} nodes (lost: {lost_max}); {} final values checked; {} reads checked against the log ({bad_reads} bad)",
        acks.len(),
        keys_checked,
        reads.len()
    ));

    // 6. WAL bytes, after a clean stop.
    c.shutdown(Duration::from_secs(5)).await;
    report.wal_bytes_compared = compare_wal_bytes(c, opts, lsn, hist)?;
    clock.say(format!(
        "  clean stop; WAL bytes identical on all nodes up to {} ({} bytes compared)",
        wal::Lsn(lsn),
        report.wal_bytes_compared
    ));
    Ok(())
}

/// The key space of a run's writers.
struct KeySpace<'a> {
    writers: usize,
    keys: usize,
    /// Per writer, the highest seq it sent.
    max_seq: &'a [u64],
}

/// Every acknowledged write must be the record ending at its LSN, in its term,
/// with its key and value. Returns (writes lost, violations); a write is lost
/// when its value is nowhere in the log. `log` starts at `from` (the WAL before it
/// was removed by retention): writes acknowledged at or before `from` are not
/// looked for (the final values and digests cover them).
fn check_acks(log: &[LogRec], from: u64, acks: &[AckedWrite], node: &str) -> (u64, Vec<String>) {
    let mut out = Vec::new();
    let by_end: HashMap<u64, &LogRec> = log.iter().map(|r| (r.end, r)).collect();
    let values: HashSet<(&str, &[u8])> = log
        .iter()
        .filter(|r| r.kind == "put")
        .filter_map(|r| Some((r.key.as_deref()?, r.value.as_deref()?)))
        .collect();
    let mut lost = 0u64;
    for a in acks.iter().filter(|a| a.lsn > from) {
        let at = by_end.get(&a.lsn);
        let right = matches!(at, Some(r) if r.kind == "put"
            && r.term == a.term
            && r.key.as_deref() == Some(a.key.as_str())
            && r.value.as_deref() == Some(a.value.as_bytes()));
        if !right {
            let present = values.contains(&(a.key.as_str(), a.value.as_bytes()));
            if !present {
                lost += 1;
            }
            out.push(format!(
                "{node}: write {}={} acknowledged at {} in term {} by node #{} is {}; record there: {:?}",
                a.key,
                a.value,
                wal::Lsn(a.lsn),
                a.term,
                a.node,
                if present { "elsewhere in the log" } else { "LOST" },
                at
            ));
        }
    }
    let mut by_writer: BTreeMap<usize, Vec<&AckedWrite>> = BTreeMap::new();
    for a in acks {
        by_writer.entry(a.writer).or_default().push(a);
    }
    for (w, list) in &mut by_writer {
        list.sort_by_key(|a| a.seq);
        for pair in list.windows(2) {
            if pair[1].lsn <= pair[0].lsn {
                out.push(format!(
                    "writer {w}: seq {} acknowledged at {} after seq {} at {}: acknowledgements out of log order",
                    pair[1].seq,
                    wal::Lsn(pair[1].lsn),
                    pair[0].seq,
                    wal::Lsn(pair[0].lsn)
                ));
            }
        }
    }
    (lost, out)
}

/// Every committed record is a value some writer sent, committed once, and a
/// writer's values appear in the order it sent them. Returns (writes whose
/// outcome was unknown but which are committed, violations).
fn check_log_values(
    log: &[LogRec],
    acks: &[AckedWrite],
    space: &KeySpace<'_>,
) -> (u64, Vec<String>) {
    let mut out = Vec::new();
    let acked: HashSet<(usize, u64)> = acks.iter().map(|a| (a.writer, a.seq)).collect();
    let mut seen: HashSet<(usize, u64)> = HashSet::new();
    let mut last_pos: HashMap<usize, (u64, u64)> = HashMap::new();
    let mut failed_committed = 0u64;
    for r in log.iter().filter(|r| r.kind != "term_start") {
        let parsed =
            match (r.kind.as_str(), &r.key, &r.value) {
                ("put", Some(k), Some(v)) => std::str::from_utf8(v)
                    .ok()
                    .and_then(parse_value)
                    .filter(|(w, s)| {
                        *w < space.writers
                            && space.max_seq.get(*w).is_some_and(|m| *s <= *m)
                            && *k == key_of(*w, *s, space.keys)
                    }),
                _ => None,
            };
        let Some((w, s)) = parsed else {
            out.push(format!(
                "committed record at {} was never sent by a writer: {r:?}",
                wal::Lsn(r.lsn)
            ));
            continue;
        };
        if !seen.insert((w, s)) {
            out.push(format!(
                "value {w}:{s} is committed twice (again at {}): a write refused for certain was written",
                wal::Lsn(r.lsn)
            ));
        }
        if !acked.contains(&(w, s)) {
            failed_committed += 1;
        }
        if let Some((ps, plsn)) = last_pos.get(&w) {
            if s < *ps {
                out.push(format!(
                    "writer {w}: value seq {s} committed at {} after seq {ps} at {}",
                    wal::Lsn(r.lsn),
                    wal::Lsn(*plsn)
                ));
            }
        }
        last_pos.insert(w, (s, r.lsn));
    }
    (failed_committed, out)
}

/// The final value of every key (in `kv`, the committed log replayed) is its
/// last acknowledged write or a later one, never an earlier one.
fn check_final_values(
    kv: &receiver::state::KvStore,
    acks: &[AckedWrite],
    space: &KeySpace<'_>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut last_acked: HashMap<&str, u64> = HashMap::new();
    for a in acks {
        let e = last_acked.entry(a.key.as_str()).or_insert(a.seq);
        *e = (*e).max(a.seq);
    }
    for w in 0..space.writers {
        for k in 0..space.keys {
            let key = key_of(w, k as u64, space.keys);
            let seq = kv
                .get(key.as_bytes())
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(parse_value)
                .map(|(_, s)| s);
            if let Some(&la) = last_acked.get(key.as_str()) {
                if seq.is_none_or(|s| s < la) {
                    out.push(format!(
                        "{key}: final committed value seq {seq:?} is older than its last acknowledged write (seq {la})"
                    ));
                }
            }
        }
    }
    out
}

/// Each value read is the log's value of that key at some LSN `a` with
/// `min_lsn <= a <= Walship-Lsn` (consistent prefix: nothing from the future,
/// nothing older than the session's token). `log` starts at `from`: a value not in
/// it may have been written before `from` (WAL removed by retention); such a read
/// is only checked against the key's first write in the log.
fn check_reads(log: &[LogRec], from: u64, reads: &[ReadObs], names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
    let mut puts: HashMap<&str, Vec<(u64, &[u8])>> = HashMap::new();
    // (key, value) -> index in puts[key] (values are unique; the first wins).
    let mut index: HashMap<(&str, &[u8]), usize> = HashMap::new();
    for r in log.iter().filter(|r| r.kind == "put") {
        if let (Some(k), Some(v)) = (&r.key, &r.value) {
            let list = puts.entry(k.as_str()).or_default();
            index
                .entry((k.as_str(), v.as_slice()))
                .or_insert(list.len());
            list.push((r.end, v.as_slice()));
        }
    }
    for rd in reads {
        let list = puts.get(rd.key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let idx = match &rd.value {
            None => None,
            Some(v) => match index.get(&(rd.key.as_str(), v.as_bytes())).copied() {
                Some(p) => Some(p),
                None if from > 0 => None,
                None => {
                    out.push(format!(
                        "session {}: read {}={v} from {} at {}, a value the committed log never held",
                        rd.session,
                        rd.key,
                        name(rd.node),
                        wal::Lsn(rd.lsn)
                    ));
                    continue;
                }
            },
        };
        let written_at = idx.map(|p| list[p].0).unwrap_or(0);
        let next_at = list
            .get(idx.map(|p| p + 1).unwrap_or(0))
            .map(|(e, _)| *e)
            .unwrap_or(u64::MAX);
        if written_at > rd.lsn || next_at <= rd.min_lsn {
            out.push(format!(
                "session {}: read {} = {:?} from {} with min_lsn {} answered at {}, but the committed log has it written at {} and overwritten at {}",
                rd.session,
                rd.key,
                rd.value,
                name(rd.node),
                wal::Lsn(rd.min_lsn),
                wal::Lsn(rd.lsn),
                wal::Lsn(written_at),
                if next_at == u64::MAX { "never".to_string() } else { wal::Lsn(next_at).to_string() }
            ));
        }
    }
    out
}

/// Read every node's WAL directory with the `wal` crate and compare the bytes
/// from the highest first LSN up to `upto`; returns the bytes compared.
fn compare_wal_bytes(
    c: &LocalCluster,
    opts: &FaultOptions,
    upto: u64,
    hist: &History,
) -> Result<u64, FaultError> {
    let segment_size = crate::config::parse_size_str(&opts.spec.segment_size)
        .map_err(|e| FaultError::Failed(format!("segment size {}: {e}", opts.spec.segment_size)))?;
    let dirs: Vec<(String, PathBuf)> = (0..c.len())
        .map(|i| {
            (
                c.node(i).id.clone(),
                c.dir().join(&c.node(i).id).join("wal"),
            )
        })
        .collect();
    let (bytes, violations) = compare_wal_dirs(&dirs, segment_size, upto)?;
    for v in violations {
        hist.violation(v);
    }
    Ok(bytes)
}

/// Compare the WAL bytes of the directories `dirs` (node name, WAL directory)
/// in `[highest first LSN, upto)`: retention removes old segments at different
/// points on different nodes, so only the range every node still holds is
/// compared (from 0 would fail falsely). Returns the bytes compared and the
/// violations found.
fn compare_wal_dirs(
    dirs: &[(String, PathBuf)],
    segment_size: u64,
    upto: u64,
) -> Result<(u64, Vec<String>), FaultError> {
    let mut out = Vec::new();
    let mut wals = Vec::new();
    for (_, d) in dirs {
        let (w, _) = wal::Wal::open(
            d,
            wal::WalOptions {
                segment_size,
                ..wal::WalOptions::default()
            },
        )
        .map_err(|e| FaultError::Failed(format!("open the WAL in {}: {e}", d.display())))?;
        wals.push(w);
    }
    let from = wals.iter().map(|w| w.first_lsn().0).max().unwrap_or(0);
    if from >= upto || wals.is_empty() {
        return Ok((0, out));
    }
    let read_all = |w: &wal::Wal, d: &Path| -> Result<Vec<u8>, FaultError> {
        let mut buf = Vec::new();
        let mut pos = from;
        while pos < upto {
            let end = w
                .read_raw(wal::Lsn(pos), 1 << 20, &mut buf)
                .map_err(|e| {
                    FaultError::Failed(format!(
                        "read the WAL in {} at {}: {e}",
                        d.display(),
                        wal::Lsn(pos)
                    ))
                })?
                .0;
            if end <= pos {
                break;
            }
            pos = end;
        }
        buf.truncate((upto - from) as usize);
        Ok(buf)
    };
    let reference = read_all(&wals[0], &dirs[0].1)?;
    if reference.len() as u64 != upto - from {
        out.push(format!(
            "{}: WAL holds {} bytes in [{}, {}), expected {}",
            dirs[0].0,
            reference.len(),
            wal::Lsn(from),
            wal::Lsn(upto),
            upto - from
        ));
    }
    for i in 1..wals.len() {
        let other = read_all(&wals[i], &dirs[i].1)?;
        if other != reference {
            let at = reference
                .iter()
                .zip(other.iter())
                .position(|(a, b)| a != b)
                .unwrap_or(reference.len().min(other.len()));
            out.push(format!(
                "WAL bytes of {} and {} differ at LSN {} (compared from {} to {}; {} and {} bytes)",
                dirs[0].0,
                dirs[i].0,
                wal::Lsn(from + at as u64),
                wal::Lsn(from),
                wal::Lsn(upto),
                reference.len(),
                other.len()
            ));
        }
    }
    Ok((reference.len() as u64, out))
}

/// `GET url`: the status code and the whole body (a transport error names the URL).
async fn get_status_and_body(
    client: &reqwest::Client,
    url: &str,
) -> Result<(u16, bytes::Bytes), FaultError> {
    let r = client
        .get(url)
        .send()
        .await
        .map_err(|e| FaultError::Failed(format!("GET {url}: {e}")))?;
    let code = r.status().as_u16();
    let body = r
        .bytes()
        .await
        .map_err(|e| FaultError::Failed(format!("GET {url}: {e}")))?;
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule() {
        let et = Duration::from_millis(300);
        let mut a = Schedule::new(42, et, 3);
        let mut b = Schedule::new(42, et, 3);
        let mut c = Schedule::new(43, et, 3);
        let pa: Vec<RoundPlan> = (0..50).map(|_| a.next_round()).collect();
        let pb: Vec<RoundPlan> = (0..50).map(|_| b.next_round()).collect();
        let pc: Vec<RoundPlan> = (0..50).map(|_| c.next_round()).collect();
        assert_eq!(pa, pb);
        assert_ne!(pa, pc);
    }

    #[test]
    fn schedule_covers_every_kind_with_sane_holds() {
        let et = Duration::from_millis(300);
        let mut s = Schedule::new(7, et, 3);
        let mut kinds = HashSet::new();
        for _ in 0..400 {
            let p = s.next_round();
            kinds.insert(p.kind);
            match p.kind {
                FaultKind::Overlap => {
                    assert_eq!(p.injections.len(), 2);
                    assert_ne!(p.injections[0].target, p.injections[1].target);
                }
                FaultKind::KillAll => {
                    assert_eq!(p.injections.len(), 3);
                    let t: HashSet<String> = p
                        .injections
                        .iter()
                        .map(|i| format!("{:?}", i.target))
                        .collect();
                    assert_eq!(t.len(), 3);
                }
                _ => assert_eq!(p.injections.len(), 1),
            }
            for inj in &p.injections {
                match (p.kind, inj.action) {
                    (FaultKind::PauseLeader, _) => assert!(inj.hold < et),
                    (_, Action::Stop) => assert!(inj.hold > et),
                    (_, Action::Kill | Action::Terminate) => {
                        assert!(inj.hold >= Duration::from_millis(200))
                    }
                }
                if let Target::Follower(k) = inj.target {
                    assert!(k < 2);
                }
            }
        }
        assert_eq!(kinds.len(), 8);
    }

    #[test]
    fn splitmix_is_stable() {
        // Fixed outputs: a seed must replay the same schedule in every build.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    fn put(lsn: u64, end: u64, term: u64, w: usize, seq: u64) -> LogRec {
        LogRec {
            lsn,
            end,
            term,
            kind: "put".into(),
            key: Some(key_of(w, seq, 2)),
            value: Some(value_of(w, seq).into_bytes()),
        }
    }

    fn ack(w: usize, seq: u64, lsn: u64, term: u64) -> AckedWrite {
        AckedWrite {
            writer: w,
            seq,
            key: key_of(w, seq, 2),
            value: value_of(w, seq),
            lsn,
            term,
            node: 0,
        }
    }

    /// A history: term 1 starts at 0..10, then writer 0 writes seq 0..4 (keys
    /// f0-0, f0-1 alternating) at ends 20, 30, 40, 50.
    fn history() -> Vec<LogRec> {
        let mut log = vec![LogRec {
            lsn: 0,
            end: 10,
            term: 1,
            kind: "term_start".into(),
            key: None,
            value: None,
        }];
        for s in 0..4u64 {
            log.push(put(10 + 10 * s, 20 + 10 * s, 1, 0, s));
        }
        log
    }

    fn read(min_lsn: u64, lsn: u64, seq: Option<u64>, key_seq: u64) -> ReadObs {
        ReadObs {
            session: 0,
            node: 0,
            key: key_of(0, key_seq, 2),
            min_lsn,
            lsn,
            value: seq.map(|s| value_of(0, s)),
        }
    }

    #[test]
    fn checker_accepts_a_consistent_history() {
        let log = history();
        let acks = vec![ack(0, 0, 20, 1), ack(0, 1, 30, 1), ack(0, 3, 50, 1)];
        assert_eq!(check_acks(&log, 0, &acks, "n1"), (0, vec![]));
        let max = [4u64];
        let space = KeySpace {
            writers: 1,
            keys: 2,
            max_seq: &max,
        };
        // seq 2 was not acknowledged (outcome unknown) but committed.
        assert_eq!(check_log_values(&log, &acks, &space), (1, vec![]));
        let reads = vec![
            read(0, 10, None, 0),
            read(0, 25, Some(0), 0),
            read(20, 45, Some(2), 0),
            read(35, 50, Some(1), 1),
        ];
        assert!(check_reads(&log, 0, &reads, &[]).is_empty());
    }

    #[test]
    fn checker_finds_a_lost_write() {
        let mut log = history();
        log.remove(4); // seq 3 at 40..50
        let acks = vec![ack(0, 3, 50, 1)];
        let (lost, v) = check_acks(&log, 0, &acks, "n1");
        assert_eq!(lost, 1);
        assert!(v[0].contains("LOST"), "{v:?}");
    }

    #[test]
    fn checker_finds_a_write_at_another_lsn_or_term() {
        let log = history();
        // Acknowledged in term 2, but the record there is term 1.
        let (lost, v) = check_acks(&log, 0, &[ack(0, 3, 50, 2)], "n1");
        assert_eq!((lost, v.len()), (0, 1));
        // Acknowledged at another LSN.
        let (lost, v) = check_acks(&log, 0, &[ack(0, 3, 40, 1)], "n1");
        assert_eq!((lost, v.len()), (0, 1));
    }

    #[test]
    fn checker_finds_acks_out_of_order_and_bad_values() {
        let mut log = history();
        let acks = vec![ack(0, 1, 30, 1), ack(0, 2, 30, 1)];
        assert!(!check_acks(&log, 0, &acks, "n1").1.is_empty());
        let max = [4u64];
        let space = KeySpace {
            writers: 1,
            keys: 2,
            max_seq: &max,
        };
        // Doubled value, then an older seq after a newer one.
        log.remove(3); // seq 2
        log.push(put(50, 60, 1, 0, 3));
        log.push(put(60, 70, 1, 0, 2));
        // A value no writer sent (seq beyond what writer 0 sent).
        log.push(put(70, 80, 1, 0, 9));
        let (_, v) = check_log_values(&log, &[], &space);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(
            v[0].contains("twice") && v[1].contains("after seq") && v[2].contains("never sent")
        );
    }

    #[test]
    fn checker_finds_an_old_final_value() {
        let log = history();
        let mut kv = receiver::state::KvStore::new();
        // Replay only up to seq 1: f0-0 = 0:0 while 0:2 was acknowledged.
        for r in &log[1..3] {
            let p = receiver::state::encode_put(
                r.key.as_deref().unwrap_or("").as_bytes(),
                r.value.as_deref().unwrap_or(b""),
            );
            kv.apply(&receiver::state::Applied {
                lsn: r.lsn,
                end: r.end,
                term: r.term,
                kind: receiver::state::KIND_PUT,
                payload: &p,
            });
        }
        let max = [4u64];
        let space = KeySpace {
            writers: 1,
            keys: 2,
            max_seq: &max,
        };
        let v = check_final_values(&kv, &[ack(0, 2, 40, 1)], &space);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(check_final_values(&kv, &[ack(0, 1, 30, 1)], &space).is_empty());
    }

    #[test]
    fn checker_finds_stale_and_future_reads() {
        let log = history();
        // Stale: f0-0 was overwritten at 40 (seq 2); a read with min_lsn 45 sees seq 0.
        let v = check_reads(&log, 0, &[read(45, 50, Some(0), 0)], &[]);
        assert_eq!(v.len(), 1, "{v:?}");
        // From the future: seq 2 (written at 40) seen by an answer at applied 35.
        let v = check_reads(&log, 0, &[read(0, 35, Some(2), 0)], &[]);
        assert_eq!(v.len(), 1, "{v:?}");
        // Absent after it was written at 20, with min_lsn 25.
        let v = check_reads(&log, 0, &[read(25, 30, None, 0)], &[]);
        assert_eq!(v.len(), 1, "{v:?}");
        // A value the log never held.
        let v = check_reads(&log, 0, &[read(0, 50, Some(7), 1)], &[]);
        assert_eq!(v.len(), 1, "{v:?}");
    }

    #[test]
    fn checker_checks_only_the_retained_log() {
        // Retention removed the WAL before 30 (seq 0 and 1): the log starts there.
        let log = history()[3..].to_vec();
        let from = 30;
        // Acks at or before `from` are not looked for; the one at 50 is there.
        let acks = vec![ack(0, 0, 20, 1), ack(0, 1, 30, 1), ack(0, 3, 50, 1)];
        assert_eq!(check_acks(&log, from, &acks, "n1"), (0, vec![]));
        // ... and one after `from` missing is still lost.
        let (lost, v) = check_acks(&log[..1], from, &acks, "n1");
        assert_eq!(lost, 1, "{v:?}");
        // A value written before `from` (seq 0 at 20) read before its overwrite
        // (seq 2 at 40) is fine; read with min_lsn past the overwrite it is stale.
        assert!(check_reads(&log, from, &[read(25, 35, Some(0), 0)], &[]).is_empty());
        assert_eq!(
            check_reads(&log, from, &[read(45, 50, Some(0), 0)], &[]).len(),
            1
        );
        // Compared from 0 the same read would be "never held": the false failure.
        assert_eq!(
            check_reads(&log, 0, &[read(25, 35, Some(0), 0)], &[]).len(),
            1
        );
    }

    /// Write the same records into WAL directories; remove the first segments of
    /// `trimmed` (as retention does); returns the end LSN.
    fn same_wals(dirs: &[(String, PathBuf)], trimmed: usize, odd: Option<usize>) -> u64 {
        let opts = || wal::WalOptions {
            segment_size: 1 << 20,
            ..wal::WalOptions::default()
        };
        let mut end = 0;
        for (i, (_, d)) in dirs.iter().enumerate() {
            let (w, _) = wal::Wal::open(d, opts()).unwrap();
            for r in 0..3000u64 {
                let mut p = vec![(r % 251) as u8; 1000];
                if odd == Some(i) && r == 2900 {
                    p[10] ^= 1;
                }
                end = w.append(1, receiver::state::KIND_LOG, &p).unwrap().end.0;
            }
            w.flush(wal::Lsn(end)).unwrap();
            if i == trimmed {
                assert!(w.remove_before(wal::Lsn(2 << 20)).unwrap() > 0);
                assert!(w.first_lsn().0 >= 2 << 20);
            }
        }
        end
    }

    #[test]
    fn wal_bytes_are_compared_from_the_highest_first_lsn() {
        let t = tempfile::tempdir().unwrap();
        let dirs: Vec<(String, PathBuf)> = (0..3)
            .map(|i| (format!("n{i}"), t.path().join(format!("n{i}"))))
            .collect();
        let end = same_wals(&dirs, 1, None);
        let (bytes, v) = compare_wal_dirs(&dirs, 1 << 20, end).unwrap();
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(bytes, end - (2 << 20));

        // A differing byte in the compared range is still found.
        let t = tempfile::tempdir().unwrap();
        let dirs: Vec<(String, PathBuf)> = (0..3)
            .map(|i| (format!("n{i}"), t.path().join(format!("n{i}"))))
            .collect();
        let end = same_wals(&dirs, 0, Some(2));
        let (_, v) = compare_wal_dirs(&dirs, 1 << 20, end).unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("n0 and n2 differ"), "{v:?}");
    }

    #[test]
    fn values_round_trip() {
        assert_eq!(parse_value(&value_of(3, 17)), Some((3, 17)));
        assert_eq!(parse_value("x"), None);
        assert_eq!(key_of(2, 9, 8), "f2-1");
        assert_eq!(parse_seed("0x10"), Some(16));
        assert_eq!(parse_seed(" 12 "), Some(12));
    }
}
