//! `walship bench`: the load generator (issue 3 item 6).
//!
//! Closed-loop clients, as pgbench: each client keeps exactly one write in
//! flight and sends the next as soon as the previous one is acknowledged. Keys
//! are unique (`<run tag>-<client>-<seq>`), so every write is a new record.
//!
//! The benchmark either starts its own cluster on loopback (child processes of
//! this executable running `serve --config`, in a temporary directory, on free
//! ports) or targets an existing one (`--endpoint` / `--addr`).
//!
//! Guarantees:
//! - every node this command starts is killed on every exit path: normal end,
//!   error, Ctrl-C (the guard's `Drop`), panic (unwinding runs `Drop`), and even
//!   `kill -9` of the bench itself (the children get `PR_SET_PDEATHSIG`);
//! - a latency is recorded only for a write that both started and ended inside
//!   the measured window (after the warm-up), and throughput counts exactly those
//!   writes, divided by the window's length;
//! - failed writes are counted, never recorded as latencies.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use proto::AckLevel;
use serde::Serialize;
use serde_json::Value;

use crate::client::{Client, ClientError};

mod http_load;

/// PostgreSQL 15 anchor (shared/anchors/README.md): `ANY 1 (s1, s2)`,
/// `synchronous_commit = on`, 32 clients, 100-byte INSERTs.
const PG_ANY1_TPS: f64 = 6_190.0;
/// p99 (ms) of the same PostgreSQL run.
const PG_ANY1_P99_MS: f64 = 11.0;
/// The throughput bar: this many times PostgreSQL's TPS.
const TPS_FACTOR: f64 = 3.0;
/// The one-client bar: p50 within this factor of the physical floor.
const FLOOR_FACTOR: f64 = 1.3;
/// The async 4 KiB bar: replicated MB/s to both followers together.
const REPL_MBPS_BAR: f64 = 500.0;
/// One-client runs with --floor are cut into this many slices, with a floor
/// measurement before each slice and after the last.
const FLOOR_SLICES: u32 = 5;

/// Options of `walship bench` (boxed, so the CLI's command enum stays small).
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The options.
    #[command(flatten)]
    pub opts: Box<BenchOpts>,
}

/// The options of `walship bench`, each documented in `--help`.
#[derive(Debug, Args)]
pub struct BenchOpts {
    /// Nodes of the local cluster: 1 or 3, or a list (`1,3`). Ignored with --endpoint/--addr.
    #[arg(long, value_delimiter = ',')]
    pub nodes: Option<Vec<usize>>,
    /// Replication mode of the local cluster: async, sync, quorum, or a list.
    /// An existing cluster runs with its own configured mode.
    #[arg(long, value_delimiter = ',')]
    pub mode: Option<Vec<String>>,
    /// Acknowledgement level per write: local, remote_write, remote_flush,
    /// remote_apply, default, or a list (default: remote_flush; local in async mode).
    #[arg(long, value_delimiter = ',')]
    pub ack: Option<Vec<String>>,
    /// Concurrent closed-loop clients, or a list (`1,8,32,128`). Default 32.
    #[arg(long, value_delimiter = ',')]
    pub clients: Option<Vec<usize>>,
    /// Value size in bytes (`100`, `4KiB`), or a list (`100,4096`). Default 100.
    #[arg(long, value_delimiter = ',')]
    pub value_size: Option<Vec<String>>,
    /// Measured time per run (humantime: `10s`). Default 10s (2s with --matrix).
    #[arg(long)]
    pub duration: Option<String>,
    /// Warm-up before measuring, per run. Default 1s (500ms with --matrix).
    #[arg(long)]
    pub warmup: Option<String>,
    /// binary (walship::Client), http (keep-alive PUTs), or a list.
    #[arg(long, value_delimiter = ',', default_value = "binary")]
    pub protocol: Vec<String>,
    /// Binary protocol: share this many connections among the clients
    /// (pipelining: clients/connections requests in flight per connection).
    /// Default: one connection per client.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Binary protocol: records per request (`walship::Client::put_batch`: one
    /// WAL append and one acknowledgement per batch, a bulk producer's path like
    /// PostgreSQL's COPY). writes/s then counts records; latencies are per
    /// request. Default 1 (`put`, one record per request).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// What each write is: `put` (a key-value pair into the replicated map:
    /// binary Put/PutBatch, HTTP `PUT /v1/kv/KEY`, every key new) or `append`
    /// (an opaque log record: binary Append/AppendBatch, HTTP `POST /v1/log`;
    /// replicated and stored like a put, but no key-value state to grow or
    /// checkpoint). Default put.
    #[arg(long, default_value = "put")]
    pub op: String,
    /// `--op put`: the number of distinct keys a run writes, cycled (once every
    /// key was written, writes overwrite them): a replicated map of a bounded size
    /// (keys × value size) instead of one that grows by every write. Shared
    /// evenly among the clients; rounded down to whole requests per client. At
    /// least clients × batch. Default: every key new.
    #[arg(long)]
    pub keys: Option<u64>,
    /// Also write the results as one JSON document to FILE.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run the full matrix: modes and ack levels × clients × value sizes × 1 and 3 nodes
    /// (short runs; any list given explicitly replaces the matrix's own).
    #[arg(long)]
    pub matrix: bool,
    /// Measure the physical floor (leader fdatasync + follower fdatasync + loopback
    /// round trip) in the same run and print it beside the one-client p50.
    #[arg(long)]
    pub floor: bool,
    /// Target an existing cluster through this HTTP endpoint of any node.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Target an existing cluster through this binary address of any node (needs --cluster-id).
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    /// Cluster id for the binary handshake with --addr (read from /status with --endpoint).
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// File holding the shared token of an existing cluster (or set WALSHIP_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Parent directory of the local cluster's data directories (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the local cluster's data directories (and node logs) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// `wal.sync` of the local cluster: always (flush before ack) or never.
    #[arg(long, default_value = "always", value_parser = ["always", "never"])]
    pub wal_sync: String,
    /// `runtime.worker_threads` of each local node. Default: the CPUs this process
    /// may run on divided among the nodes (at least 1), since the local nodes and
    /// this load generator share one machine.
    #[arg(long)]
    pub node_threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `runtime.worker_threads` for each of `nodes` local nodes sharing `cpus` CPUs:
/// an even share, at least one.
pub fn node_worker_threads(cpus: usize, nodes: usize) -> usize {
    (cpus / nodes.max(1)).max(1)
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// The local cluster could not be started or did not elect a leader.
    #[error("local cluster: {0}")]
    Cluster(String),
    /// The target cluster could not be reached or answered unexpectedly.
    #[error("target: {0}")]
    Target(String),
    /// An I/O error (floor measurement, JSON output, data directories).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl BenchError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}

/// Run the benchmark; returns the exit status (0 ok, 1 failed, 2 bad usage, 130 interrupted).
pub async fn run(args: BenchArgs) -> i32 {
    let args = &*args.opts;
    let plan = match Plan::from_args(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("walship bench: {e}");
            return crate::commands::EXIT_USAGE;
        }
    };
    tokio::select! {
        r = run_plan(args, &plan) => match r {
            Ok(code) => code,
            Err(e @ BenchError::Usage(_)) => {
                eprintln!("walship bench: {e}");
                crate::commands::EXIT_USAGE
            }
            Err(e) => {
                eprintln!("walship bench: {e}");
                crate::commands::EXIT_FAILED
            }
        },
        _ = tokio::signal::ctrl_c() => {
            // Dropping `run_plan`'s future drops the cluster guard: nodes are killed.
            eprintln!("walship bench: interrupted; stopping the local cluster");
            130
        }
    }
}

// ---------------------------------------------------------------- the plan

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Binary,
    Http,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Binary => "binary",
            Protocol::Http => "http",
        }
    }
}

/// One measured run.
#[derive(Debug, Clone)]
struct RunSpec {
    ack: AckLevel,
    protocol: Protocol,
    clients: usize,
    value_size: usize,
    op: WriteOp,
}

/// One cluster setting (a local cluster is started once per group).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Group {
    nodes: usize,
    mode: String,
}

#[derive(Debug)]
struct Plan {
    groups: Vec<(Group, Vec<RunSpec>)>,
    duration: Duration,
    warmup: Duration,
    existing: bool,
}

/// What one write of the bench is (`--op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum WriteOp {
    /// A key-value pair, every key new.
    Put,
    /// An opaque log record.
    Append,
}

impl WriteOp {
    fn as_str(self) -> &'static str {
        match self {
            WriteOp::Put => "put",
            WriteOp::Append => "append",
        }
    }
}

fn parse_ack(s: &str) -> Result<AckLevel, BenchError> {
    s.trim()
        .parse::<AckLevel>()
        .map_err(|e| BenchError::Usage(format!("--ack: {e}")))
}

fn parse_dur(key: &str, s: &str) -> Result<Duration, BenchError> {
    humantime::parse_duration(s.trim())
        .map_err(|e| BenchError::Usage(format!("{key} {s:?}: {e} (write e.g. 10s or 500ms)")))
}

impl Plan {
    fn from_args(a: &BenchOpts) -> Result<Plan, BenchError> {
        let existing = a.endpoint.is_some() || a.addr.is_some();
        let duration = match &a.duration {
            Some(d) => parse_dur("--duration", d)?,
            None if a.matrix => Duration::from_secs(2),
            None => Duration::from_secs(10),
        };
        let warmup = match &a.warmup {
            Some(d) => parse_dur("--warmup", d)?,
            None if a.matrix => Duration::from_millis(500),
            None => Duration::from_secs(1),
        };
        if duration.is_zero() {
            return Err(BenchError::Usage("--duration must be more than 0".into()));
        }
        if let Some(n) = a.node_threads {
            if n == 0 || n as u64 > crate::config::MAX_WORKER_THREADS {
                return Err(BenchError::Usage(format!(
                    "--node-threads {n}: must be from 1 to {}",
                    crate::config::MAX_WORKER_THREADS
                )));
            }
        }
        let mut protocols = Vec::new();
        for p in &a.protocol {
            let p = match p.trim() {
                "binary" => Protocol::Binary,
                "http" => Protocol::Http,
                other => {
                    return Err(BenchError::Usage(format!(
                        "--protocol {other:?}: expected binary or http"
                    )))
                }
            };
            if !protocols.contains(&p) {
                protocols.push(p);
            }
        }
        let clients = match &a.clients {
            Some(c) => c.clone(),
            None if a.matrix => vec![1, 8, 32, 128],
            None => vec![32],
        };
        if clients.iter().any(|&c| c == 0 || c > 4096) {
            return Err(BenchError::Usage(
                "--clients: each must be 1 to 4096".into(),
            ));
        }
        if a.batch == 0 || a.batch > proto::MAX_BATCH_RECORDS {
            return Err(BenchError::Usage(format!(
                "--batch: must be 1 to {}",
                proto::MAX_BATCH_RECORDS
            )));
        }
        let op = match a.op.trim() {
            "put" => WriteOp::Put,
            "append" => WriteOp::Append,
            other => {
                return Err(BenchError::Usage(format!(
                    "--op {other:?}: expected put or append"
                )))
            }
        };
        if let Some(k) = a.keys {
            if op != WriteOp::Put {
                return Err(BenchError::Usage(
                    "--keys: only with --op put (log records have no keys)".into(),
                ));
            }
            let most = clients.iter().copied().max().unwrap_or(1) as u64 * a.batch as u64;
            if k < most {
                return Err(BenchError::Usage(format!(
                    "--keys {k}: must be at least clients × batch ({most}), one request's keys per client"
                )));
            }
        }
        if a.batch > 1 && protocols.contains(&Protocol::Http) {
            return Err(BenchError::Usage(
                "--batch: batches are a binary-protocol request (walship::Client::put_batch); use --protocol binary".into(),
            ));
        }
        let sizes = match &a.value_size {
            Some(v) => v
                .iter()
                .map(|s| {
                    crate::config::parse_size_str(s)
                        .map(|n| n as usize)
                        .map_err(|e| BenchError::Usage(format!("--value-size {s:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None if a.matrix => vec![100, 4096],
            None => vec![100],
        };
        if sizes.iter().any(|&s| s > 16 << 20) {
            return Err(BenchError::Usage("--value-size: at most 16MiB".into()));
        }
        let nodes = match &a.nodes {
            Some(n) => n.clone(),
            None if a.matrix => vec![1, 3],
            None => vec![3],
        };
        if nodes.iter().any(|&n| n != 1 && n != 3) {
            return Err(BenchError::Usage("--nodes: 1 or 3".into()));
        }
        let modes = match &a.mode {
            Some(m) => m.iter().map(|s| s.trim().to_string()).collect(),
            None if a.matrix => vec!["async".into(), "quorum".into(), "sync".into()],
            None => vec!["quorum".to_string()],
        };
        for m in &modes {
            if !["async", "sync", "quorum"].contains(&m.as_str()) {
                return Err(BenchError::Usage(format!(
                    "--mode {m:?}: expected async, sync or quorum"
                )));
            }
        }
        let explicit_acks = match &a.ack {
            Some(v) => Some(
                v.iter()
                    .map(|s| parse_ack(s))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        // The acks each mode is measured with when none are given.
        let acks_for = |mode: &str, nodes: usize| -> Vec<AckLevel> {
            if let Some(v) = &explicit_acks {
                return v.clone();
            }
            if mode == "async" || nodes == 1 {
                return vec![AckLevel::Local];
            }
            if a.matrix && mode == "quorum" {
                vec![
                    AckLevel::RemoteWrite,
                    AckLevel::RemoteFlush,
                    AckLevel::RemoteApply,
                ]
            } else {
                vec![AckLevel::RemoteFlush]
            }
        };
        let mut groups = Vec::new();
        let settings: Vec<Group> = if existing {
            vec![Group {
                nodes: 0,
                mode: "existing".into(),
            }]
        } else {
            let mut g = Vec::new();
            for &n in &nodes {
                for m in &modes {
                    // A single node has no standbys: only one (async) setting is meaningful.
                    let mode = if n == 1 {
                        "async".to_string()
                    } else {
                        m.clone()
                    };
                    let grp = Group { nodes: n, mode };
                    if !g.contains(&grp) {
                        g.push(grp);
                    }
                }
            }
            g
        };
        for g in settings {
            let mut runs = Vec::new();
            for ack in acks_for(&g.mode, g.nodes) {
                for &p in &protocols {
                    for &vs in &sizes {
                        for &c in &clients {
                            runs.push(RunSpec {
                                ack,
                                protocol: p,
                                clients: c,
                                value_size: vs,
                                op,
                            });
                        }
                    }
                }
            }
            groups.push((g, runs));
        }
        Ok(Plan {
            groups,
            duration,
            warmup,
            existing,
        })
    }
}

// ---------------------------------------------------------------- results

/// The measured physical floor of one remote_flush write.
#[derive(Debug, Clone, Serialize)]
struct Floor {
    fsync_leader_p50_us: f64,
    fsync_leader_p99_us: f64,
    fsync_follower_p50_us: f64,
    fsync_follower_p99_us: f64,
    rtt_p50_us: f64,
    rtt_p99_us: f64,
    /// leader fdatasync p50 + follower fdatasync p50 + one loopback round trip p50.
    floor_us: f64,
    where_leader: String,
    where_follower: String,
}

#[derive(Debug, Clone, Serialize)]
struct RunResult {
    nodes: usize,
    mode: String,
    ack: String,
    protocol: Protocol,
    /// `put` (key-value pairs) or `append` (log records).
    op: WriteOp,
    clients: usize,
    connections: usize,
    value_size: usize,
    /// Records per request (`--batch`); `writes` counts records.
    batch: usize,
    /// Distinct keys the run cycled through (`--keys`, rounded to whole requests
    /// per client); None: every key new.
    keys: Option<u64>,
    duration_s: f64,
    writes: u64,
    errors: u64,
    first_error: Option<String>,
    writes_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    followers: usize,
    /// WAL bytes shipped to all followers together, per second (MB = 10^6 bytes).
    replicated_mb_s: Option<f64>,
    /// The same per follower.
    replicated_mb_s_per_follower: Option<f64>,
    /// Where the replicated figure comes from: `metrics` or `follower_lsn`.
    replicated_source: Option<String>,
    /// WAL bytes the leader appended per second.
    leader_wal_mb_s: Option<f64>,
    /// One-client runs with --floor: p50 / floor.
    p50_over_floor: Option<f64>,
    /// One-client runs with --floor: the floor measured around this run.
    floor: Option<Floor>,
    /// `runtime.worker_threads` of each node of the local cluster (None: an
    /// existing cluster's own setting, unknown here).
    node_worker_threads: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Report {
    date_utc: String,
    machine: Value,
    duration_s: f64,
    warmup_s: f64,
    floor: Option<Floor>,
    runs: Vec<RunResult>,
    anchors: Value,
}

// ---------------------------------------------------------------- main flow

async fn run_plan(args: &BenchOpts, plan: &Plan) -> Result<i32, BenchError> {
    let token = read_token(args)?;
    let mut results: Vec<RunResult> = Vec::new();
    let mut floor: Option<Floor> = None;
    let started_at = SystemTime::now();
    eprintln!(
        "walship bench: {} runs, {:?} each after {:?} warm-up",
        plan.groups.iter().map(|(_, r)| r.len()).sum::<usize>(),
        plan.duration,
        plan.warmup
    );
    for (group, runs) in &plan.groups {
        // The guard lives until this group's runs are done; Drop kills the nodes.
        let mut cluster: Option<LocalCluster> = None;
        let mut node_threads: Option<usize> = None;
        let target = if plan.existing {
            discover(args, &token).await?
        } else {
            let threads = args.node_threads.unwrap_or_else(|| {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                node_worker_threads(cpus, group.nodes)
            });
            node_threads = Some(threads);
            eprintln!(
                "starting a local {}-node cluster, mode {}, wal.sync {}, {threads} worker thread(s) per node",
                group.nodes, group.mode, args.wal_sync
            );
            let c = LocalCluster::start(
                group.nodes,
                &group.mode,
                &args.wal_sync,
                threads,
                args.dir.as_deref(),
                args.keep,
            )?;
            let endpoint = format!("http://{}", c.nodes[0].http);
            c.wait_ready(Duration::from_secs(30)).await?;
            let t = discover_http(&endpoint, &token).await?;
            cluster = Some(c);
            t
        };
        eprintln!(
            "target: leader {} (binary {}, http {}), mode {}, {} follower(s) streaming",
            target.leader_id, target.bin_addr, target.http, target.mode, target.followers
        );
        let has_one_client = runs.iter().any(|r| r.clients == 1);
        if args.floor && !has_one_client {
            let f = measure_floor(cluster.as_ref(), &target.leader_id, args.dir.as_deref()).await?;
            print_floor(&f);
            floor.get_or_insert(f);
        }
        for spec in runs {
            let r = if args.floor && spec.clients == 1 {
                // The disk's speed drifts (shared machine): the run is cut into
                // slices with a floor measurement before each and after the last,
                // and the floors are averaged.
                let slice = plan.duration / FLOOR_SLICES;
                let mut parts = Vec::new();
                let mut floors: Vec<Floor> = Vec::new();
                for i in 0..FLOOR_SLICES {
                    floors.push(
                        measure_floor(cluster.as_ref(), &target.leader_id, args.dir.as_deref())
                            .await?,
                    );
                    let warm = if i == 0 {
                        plan.warmup
                    } else {
                        Duration::from_millis(100)
                    };
                    parts.push(run_one(args, warm, slice, &target, &token, group, spec).await?);
                }
                floors.push(
                    measure_floor(cluster.as_ref(), &target.leader_id, args.dir.as_deref()).await?,
                );
                let mut r = RunResult::merged(parts)
                    .ok_or_else(|| BenchError::Target("no slices measured".into()))?;
                let f = Floor::mean(&floors)
                    .ok_or_else(|| BenchError::Target("no floor measured".into()))?;
                print_floor(&f);
                r.p50_over_floor = Some(r.p50_ms * 1000.0 / f.floor_us);
                floor.get_or_insert(f.clone());
                r.floor = Some(f);
                r
            } else {
                run_one(
                    args,
                    plan.warmup,
                    plan.duration,
                    &target,
                    &token,
                    group,
                    spec,
                )
                .await?
                .0
            };
            let mut r = r;
            r.node_worker_threads = node_threads;
            print_result_line(&r, results.is_empty());
            results.push(r);
        }
        drop(cluster);
    }
    println!();
    print_table(&results, floor.as_ref());
    print_bars(&results, floor.as_ref());
    if let Some(path) = &args.json {
        let report = Report {
            date_utc: utc_string(started_at),
            machine: machine_note(),
            duration_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            floor: floor.clone(),
            runs: results.clone(),
            anchors: serde_json::json!({
                "postgresql_15_any1_on_32_clients": {"tps": PG_ANY1_TPS, "p99_ms": PG_ANY1_P99_MS},
                "postgresql_15_any1_on_1_client": {"tps": 1793.0, "p50_ms": 0.52},
                "postgresql_15_async_1_client": {"tps": 2364.0, "p50_ms": 0.40},
                "postgresql_15_async_32_clients": {"tps": 6678.0, "p99_ms": 11.5},
                "etcd_3_4_32_clients": {"ops": 6100.0, "p99_ms": 13.0},
                "bars": {"tps": PG_ANY1_TPS * TPS_FACTOR, "p99_ms": PG_ANY1_P99_MS,
                         "one_client_p50_over_floor": FLOOR_FACTOR, "async_4k_replicated_mb_s": REPL_MBPS_BAR},
            }),
        };
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| BenchError::Target(format!("encoding the JSON report: {e}")))?;
        std::fs::write(path, text + "\n")
            .map_err(BenchError::io(format!("writing {}", path.display())))?;
        eprintln!("results written to {}", path.display());
    }
    let failed = results.iter().any(|r| r.writes == 0);
    Ok(if failed {
        crate::commands::EXIT_FAILED
    } else {
        0
    })
}

fn read_token(args: &BenchOpts) -> Result<String, BenchError> {
    if let Some(p) = &args.token_file {
        let t = std::fs::read_to_string(p).map_err(BenchError::io(format!(
            "reading --token-file {}",
            p.display()
        )))?;
        return Ok(t.trim().to_string());
    }
    Ok(std::env::var("WALSHIP_TOKEN").unwrap_or_default())
}

// ---------------------------------------------------------------- target discovery

/// The leader the runs write to.
#[derive(Debug, Clone)]
struct Target {
    leader_id: String,
    cluster_id: String,
    bin_addr: SocketAddr,
    /// `http://host:port` of the leader.
    http: String,
    mode: String,
    /// Followers the leader reports as streaming.
    followers: usize,
}

fn http_client(token: &str, timeout: Duration) -> Result<reqwest::Client, BenchError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if !token.is_empty() {
        let v =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| {
                BenchError::Usage(format!("the token is not a valid header value: {e}"))
            })?;
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(timeout)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4)
        .build()
        .map_err(|e| BenchError::Target(format!("cannot build an HTTP client: {e}")))
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let r = http.get(url).send().await.map_err(|e| e.to_string())?;
    r.json::<Value>().await.map_err(|e| e.to_string())
}

fn leader_from_doc(doc: &Value) -> Result<Target, BenchError> {
    let str_of = |k: &str| doc[k].as_str().unwrap_or_default().to_string();
    let me = str_of("node_id");
    let member = doc["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"] == me.as_str()))
        .ok_or_else(|| BenchError::Target(format!("node {me:?} is not in its own member list")))?;
    let bin_addr = member["addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| BenchError::Target(format!("member {me}: no binary address")))?;
    let http = member["http"].as_str().unwrap_or_default();
    let followers = doc["followers"]
        .as_array()
        .map(|f| f.iter().filter(|f| f["state"] == "streaming").count())
        .unwrap_or(0);
    Ok(Target {
        leader_id: me,
        cluster_id: str_of("cluster_id"),
        bin_addr,
        http: format!("http://{http}"),
        mode: str_of("mode"),
        followers,
    })
}

/// Find the leader through any node's HTTP endpoint.
async fn discover_http(endpoint: &str, token: &str) -> Result<Target, BenchError> {
    let http = http_client(token, Duration::from_secs(5))?;
    let base = endpoint.trim_end_matches('/');
    let mut url = format!("{base}/status");
    for _ in 0..3 {
        let doc = get_json(&http, &url)
            .await
            .map_err(|e| BenchError::Target(format!("GET {url}: {e}")))?;
        if doc["role"] == "leader" {
            return leader_from_doc(&doc);
        }
        let leader = doc["leader_id"].as_str().ok_or_else(|| {
            BenchError::Target(format!(
                "{base} is a {} and knows no leader; retry once the cluster has elected one",
                doc["role"]
            ))
        })?;
        let h = doc["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["id"] == leader))
            .and_then(|m| m["http"].as_str())
            .ok_or_else(|| BenchError::Target(format!("leader {leader} is not a member")))?;
        url = format!("http://{h}/status");
    }
    Err(BenchError::Target(format!(
        "no leader found from {base} after 3 hops"
    )))
}

async fn discover(args: &BenchOpts, token: &str) -> Result<Target, BenchError> {
    if let Some(ep) = &args.endpoint {
        return discover_http(ep, token).await;
    }
    let Some(addr) = args.addr else {
        return Err(BenchError::Usage("give --endpoint or --addr".into()));
    };
    let Some(cid) = &args.cluster_id else {
        return Err(BenchError::Usage(
            "--addr needs --cluster-id (or give --endpoint, whose /status names it)".into(),
        ));
    };
    let c = Client::connect_leader(addr, cid, token)
        .await
        .map_err(|e| BenchError::Target(format!("{addr}: {e}")))?;
    let s = c
        .status()
        .await
        .map_err(|e| BenchError::Target(format!("status from {}: {e}", c.addr())))?;
    let doc: Value =
        serde_json::from_str(&s).map_err(|e| BenchError::Target(format!("status JSON: {e}")))?;
    if doc["role"] != "leader" {
        return Err(BenchError::Target(format!(
            "{} is not the leader and none could be found",
            c.addr()
        )));
    }
    leader_from_doc(&doc)
}

// ---------------------------------------------------------------- local cluster

struct LocalNode {
    id: String,
    addr: SocketAddr,
    http: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
}

/// A cluster of child processes. Invariant: every child started is in
/// `children`, and `Drop` kills and reaps every one of them.
struct LocalCluster {
    nodes: Vec<LocalNode>,
    children: Vec<Child>,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
}

fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(BenchError::io("finding a free port"))?;
    let port = l
        .local_addr()
        .map_err(BenchError::io("finding a free port"))?
        .port();
    Ok(port)
}

impl LocalCluster {
    fn start(
        n: usize,
        mode: &str,
        wal_sync: &str,
        worker_threads: usize,
        parent: Option<&Path>,
        keep: bool,
    ) -> Result<LocalCluster, BenchError> {
        let exe = std::env::current_exe()
            .map_err(BenchError::io("finding this executable to start nodes"))?;
        let mut b = tempfile::Builder::new();
        b.prefix("walship-bench-");
        let dir = match parent {
            Some(p) => b.tempdir_in(p),
            None => b.tempdir(),
        }
        .map_err(BenchError::io("creating the cluster directory"))?;
        let root = dir.path().to_path_buf();
        let mut nodes = Vec::new();
        let mut seen = Vec::new();
        for i in 1..=n {
            let mut pick = || -> Result<u16, BenchError> {
                loop {
                    let p = free_port()?;
                    if !seen.contains(&p) {
                        seen.push(p);
                        return Ok(p);
                    }
                }
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], pick()?));
            let http = SocketAddr::from(([127, 0, 0, 1], pick()?));
            nodes.push(LocalNode {
                id: format!("n{i}"),
                addr,
                http,
                data_dir: root.join(format!("n{i}")),
                log: root.join(format!("n{i}.log")),
            });
        }
        let mut members = String::new();
        for (i, m) in nodes.iter().enumerate() {
            // n1 is preferred as leader, so a run usually writes to the same node.
            members.push_str(&format!(
                "\n[[members]]\nid = \"{}\"\naddr = \"{}\"\nhttp = \"{}\"\npriority = {}\n",
                m.id,
                m.addr,
                m.http,
                if i == 0 { 2 } else { 1 }
            ));
        }
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            children: Vec::new(),
            // Kept: the TempDir is released without deleting (it would be
            // deleted at the end of this function otherwise).
            dir: if keep {
                let _ = dir.keep();
                None
            } else {
                Some(dir)
            },
            root: root.clone(),
        };
        if keep {
            eprintln!("cluster directory (kept): {}", root.display());
        }
        for m in &nodes {
            let cfg = format!(
                "cluster_id = \"bench\"\nnode_id = \"{id}\"\ndata_dir = \"{dd}\"\nlisten = \"{addr}\"\nhttp_listen = \"{http}\"\n{members}\n[replication]\nmode = \"{mode}\"\nack_timeout = \"10s\"\n\n[wal]\nsync = \"{wal_sync}\"\nmax_retained = \"2GiB\"\n\n[runtime]\nworker_threads = {worker_threads}\n",
                id = m.id,
                dd = m.data_dir.display(),
                addr = m.addr,
                http = m.http,
            );
            let cfg_path = root.join(format!("{}.toml", m.id));
            std::fs::write(&cfg_path, cfg)
                .map_err(BenchError::io(format!("writing {}", cfg_path.display())))?;
            let log = std::fs::File::create(&m.log)
                .map_err(BenchError::io(format!("creating {}", m.log.display())))?;
            let mut cmd = Command::new(&exe);
            cmd.arg("serve")
                .arg("--config")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log));
            if std::env::var_os("WALSHIP_LOG").is_none() {
                cmd.env("WALSHIP_LOG", "info");
            }
            set_parent_death_signal(&mut cmd);
            let child = cmd
                .spawn()
                .map_err(BenchError::io(format!("starting node {}", m.id)))?;
            cluster.children.push(child);
        }
        cluster.nodes = nodes;
        Ok(cluster)
    }

    fn log_tail(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(8);
            out.push_str(&format!("\n--- {} ({}):\n", n.id, n.log.display()));
            out.push_str(&lines[from..].join("\n"));
        }
        out
    }

    /// Wait until a leader accepts writes and (3 nodes) every follower streams.
    async fn wait_ready(&self, limit: Duration) -> Result<(), BenchError> {
        let http = http_client("", Duration::from_secs(2))?;
        let deadline = Instant::now() + limit;
        let want_followers = self.nodes.len() - 1;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            for n in &self.nodes {
                let url = format!("http://{}/status", n.http);
                match get_json(&http, &url).await {
                    Ok(doc) if doc["role"] == "leader" && doc["accepting_writes"] == true => {
                        let streaming = doc["followers"]
                            .as_array()
                            .map(|f| f.iter().filter(|f| f["state"] == "streaming").count())
                            .unwrap_or(0);
                        if streaming >= want_followers {
                            return Ok(());
                        }
                        last = format!(
                            "leader {}: {streaming}/{want_followers} followers streaming",
                            n.id
                        );
                    }
                    Ok(_) => {}
                    Err(e) => last = format!("{}: {e}", n.id),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(BenchError::Cluster(format!(
            "not ready within {limit:?} ({last}); node logs:{}",
            self.log_tail()
        )))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        if self.dir.is_none() {
            eprintln!("kept: {}", self.root.display());
        }
    }
}

#[cfg(target_os = "linux")]
fn set_parent_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // prctl(2), which is async-signal-safe. It asks the kernel to SIGKILL the node
    // when the thread that spawned it exits (the main thread: `run` is awaited by
    // `block_on` on it), so nodes never outlive a killed bench.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_cmd: &mut Command) {}

// ---------------------------------------------------------------- one run

/// A sample of the leader's counters at a moment.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at: Option<Instant>,
    shipped: Option<f64>,
    leader_write_lsn: Option<u64>,
    followers_write_lsn: Option<u64>,
}

fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l[name.len()..].trim().parse().ok())
}

async fn sample(http: &reqwest::Client, t: &Target) -> Sample {
    let mut s = Sample {
        at: Some(Instant::now()),
        ..Sample::default()
    };
    if let Ok(r) = http.get(format!("{}/metrics", t.http)).send().await {
        if let Ok(text) = r.text().await {
            s.shipped = metric(&text, "walship_shipped_bytes_total");
        }
    }
    if let Ok(doc) = get_json(http, &format!("{}/status", t.http)).await {
        s.leader_write_lsn = doc["write_lsn"].as_str().and_then(parse_lsn);
        s.followers_write_lsn = doc["followers"].as_array().map(|f| {
            f.iter()
                .filter_map(|f| f["write_lsn"].as_str().and_then(parse_lsn))
                .sum()
        });
    }
    s
}

/// What one client task measured.
struct ClientOutcome {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

fn new_hist() -> Histogram<u64> {
    // Nanoseconds, 100 ns to 120 s, 3 significant digits. Cannot fail with these bounds.
    Histogram::new_with_bounds(100, 120_000_000_000, 3)
        .unwrap_or_else(|e| panic!("histogram bounds are constants: {e}"))
}

/// The window in which writes are measured, and the run's end.
#[derive(Clone, Copy)]
struct Window {
    t0: Instant,
    t1: Instant,
}

impl Window {
    fn inside(&self, start: Instant, end: Instant) -> bool {
        start >= self.t0 && end <= self.t1
    }
}

enum Writer {
    Binary(Client),
    /// One keep-alive connection, owned by one client.
    Http(Box<http_load::HttpWriter>),
}

/// Records per request of a run over `protocol` (HTTP writes one per request).
fn batch_of(args: &BenchOpts, protocol: Protocol) -> usize {
    match protocol {
        Protocol::Binary => args.batch,
        Protocol::Http => 1,
    }
}

/// With `--keys`, how many requests a client makes before it starts over on
/// its first keys: its share of the keys in whole requests (at least one).
fn key_cycle(keys: Option<u64>, clients: usize, batch: usize) -> Option<u64> {
    keys.map(|k| (k / (clients.max(1) * batch.max(1)) as u64).max(1))
}

#[allow(clippy::too_many_arguments)]
async fn client_loop(
    mut writer: Writer,
    op: WriteOp,
    ack: AckLevel,
    batch: usize,
    key_cycle: Option<u64>,
    value: Bytes,
    prefix: String,
    w: Window,
    live: Arc<AtomicU64>,
) -> ClientOutcome {
    let mut out = ClientOutcome {
        hist: new_hist(),
        ok: 0,
        errors: 0,
        first_error: None,
    };
    let mut consecutive_errors = 0u32;
    let ack_q = match ack {
        AckLevel::Default => String::new(),
        a => format!("?ack={}", a.as_str()),
    };
    let mut seq = 0u64;
    loop {
        let start = Instant::now();
        if start >= w.t1 {
            break;
        }
        // Request `seq` writes keys `{prefix}-{n}` (`.{j}` in a batch), with `n`
        // cycling over the client's share of `--keys`.
        let key = format!("{prefix}-{}", key_cycle.map_or(seq, |c| seq % c));
        seq += 1;
        let binary = |r: Result<(), ClientError>| match r {
            Ok(()) => Ok(()),
            Err(e @ ClientError::Connection(_)) => Err((e.to_string(), true)),
            Err(e) => Err((e.to_string(), false)),
        };
        let r: Result<(), (String, bool)> = match (&mut writer, op) {
            (Writer::Binary(c), WriteOp::Put) if batch > 1 => {
                let entries: Vec<(Bytes, Bytes)> = (0..batch)
                    .map(|j| (Bytes::from(format!("{key}.{j}")), value.clone()))
                    .collect();
                binary(c.put_batch(entries, ack).await.map(drop))
            }
            (Writer::Binary(c), WriteOp::Append) if batch > 1 => {
                let payloads: Vec<Bytes> = (0..batch).map(|_| value.clone()).collect();
                binary(c.append_batch(payloads, ack).await.map(drop))
            }
            (Writer::Binary(c), WriteOp::Put) => {
                binary(c.put(key.into_bytes(), value.clone(), ack).await.map(drop))
            }
            (Writer::Binary(c), WriteOp::Append) => {
                binary(c.append(value.clone(), ack).await.map(drop))
            }
            (Writer::Http(h), WriteOp::Put) => h
                .send(
                    hyper::Method::PUT,
                    &format!("/v1/kv/{key}{ack_q}"),
                    value.clone(),
                )
                .await
                .map_err(|f| (f.message, false)),
            (Writer::Http(h), WriteOp::Append) => h
                .send(
                    hyper::Method::POST,
                    &format!("/v1/log{ack_q}"),
                    value.clone(),
                )
                .await
                .map_err(|f| (f.message, false)),
        };
        let end = Instant::now();
        live.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(()) => {
                consecutive_errors = 0;
                if w.inside(start, end) {
                    out.hist
                        .saturating_record(end.duration_since(start).as_nanos() as u64);
                    out.ok += batch as u64;
                }
            }
            Err((msg, fatal)) => {
                out.errors += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(msg);
                }
                consecutive_errors += 1;
                if fatal || consecutive_errors >= 100 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    args: &BenchOpts,
    warmup: Duration,
    duration: Duration,
    target: &Target,
    token: &str,
    group: &Group,
    spec: &RunSpec,
) -> Result<(RunResult, Histogram<u64>), BenchError> {
    let connections = match spec.protocol {
        Protocol::Binary => args
            .connections
            .unwrap_or(spec.clients)
            .clamp(1, spec.clients),
        Protocol::Http => spec.clients,
    };
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        match spec.protocol {
            Protocol::Binary => {
                let c = Client::connect(target.bin_addr, &target.cluster_id, token)
                    .await
                    .map_err(|e| BenchError::Target(format!("{}: {e}", target.bin_addr)))?;
                conns.push(Some(Writer::Binary(c)));
            }
            Protocol::Http => {
                // One keep-alive connection per closed-loop client.
                let h = http_load::HttpWriter::connect(&target.http, token)
                    .await
                    .map_err(|e| BenchError::Target(format!("{}: {e}", target.http)))?;
                conns.push(Some(Writer::Http(Box::new(h))));
            }
        }
    }
    let value = Bytes::from(vec![b'x'; spec.value_size]);
    let tag: u32 = rand::random();
    let begin = Instant::now() + Duration::from_millis(20);
    let w = Window {
        t0: begin + warmup,
        t1: begin + warmup + duration,
    };
    let live = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(spec.clients);
    for i in 0..spec.clients {
        // Binary connections are shared (pipelining); an HTTP one is owned by
        // its client (there are as many as clients).
        let writer = match &mut conns[i % connections] {
            Some(Writer::Binary(c)) => Writer::Binary(c.clone()),
            slot => match slot.take() {
                Some(w) => w,
                None => continue,
            },
        };
        tasks.push(tokio::spawn(client_loop(
            writer,
            spec.op,
            spec.ack,
            batch_of(args, spec.protocol),
            key_cycle(args.keys, spec.clients, batch_of(args, spec.protocol)),
            value.clone(),
            format!("b{tag:08x}-{i}"),
            w,
            live.clone(),
        )));
    }
    drop(conns);
    // Counters at the window's edges.
    let probe_http = http_client(token, Duration::from_secs(5))?;
    let probe = {
        let t = target.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(w.t0.into()).await;
            let a = sample(&probe_http, &t).await;
            tokio::time::sleep_until(w.t1.into()).await;
            let b = sample(&probe_http, &t).await;
            (a, b)
        })
    };
    let label = format!(
        "{}n {} {} {} {} c={} v={}",
        group.nodes.max(target.followers + 1),
        target.mode,
        spec.ack.as_str(),
        spec.protocol.as_str(),
        spec.op.as_str(),
        spec.clients,
        spec.value_size
    );
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let total = (warmup + duration).as_millis() as u64;
        let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {elapsed:>3} {msg}")
        {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_prefix(label.clone());
        b
    };
    let mut last = (Instant::now(), 0u64);
    loop {
        let now = Instant::now();
        if now >= w.t1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = live.load(Ordering::Relaxed);
        let dt = last.0.elapsed().as_secs_f64();
        if dt > 0.0 {
            let phase = if Instant::now() < w.t0 {
                "warm-up"
            } else {
                "measuring"
            };
            bar.set_message(format!(
                "{phase} {:>9.0} writes/s",
                (n - last.1) as f64 / dt
            ));
        }
        last = (Instant::now(), n);
        bar.set_position(begin.elapsed().as_millis() as u64);
    }
    bar.finish_and_clear();
    let mut hist = new_hist();
    let mut ok = 0;
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(60), t).await {
            Ok(Ok(o)) => {
                let _ = hist.add(&o.hist);
                ok += o.ok;
                errors += o.errors;
                if first_error.is_none() {
                    first_error = o.first_error;
                }
            }
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert(format!("client task failed: {e}"));
            }
            Err(_) => {
                errors += 1;
                first_error.get_or_insert("a write did not finish within 60s".to_string());
            }
        }
    }
    let (a, b) = probe.await.unwrap_or_default();
    let secs = duration.as_secs_f64();
    let span = match (a.at, b.at) {
        (Some(x), Some(y)) if y > x => y.duration_since(x).as_secs_f64(),
        _ => secs,
    };
    let followers = target.followers;
    let (repl, source) = match (a.shipped, b.shipped) {
        (Some(x), Some(y)) if followers > 0 => (Some((y - x) / span / 1e6), Some("metrics")),
        _ => match (a.followers_write_lsn, b.followers_write_lsn) {
            (Some(x), Some(y)) if followers > 0 => (
                Some(y.saturating_sub(x) as f64 / span / 1e6),
                Some("follower_lsn"),
            ),
            _ => (None, None),
        },
    };
    let leader_wal = match (a.leader_write_lsn, b.leader_write_lsn) {
        (Some(x), Some(y)) => Some(y.saturating_sub(x) as f64 / span / 1e6),
        _ => None,
    };
    let mut r = RunResult {
        nodes: if group.nodes > 0 {
            group.nodes
        } else {
            followers + 1
        },
        mode: target.mode.clone(),
        ack: spec.ack.as_str().to_string(),
        protocol: spec.protocol,
        op: spec.op,
        clients: spec.clients,
        connections,
        value_size: spec.value_size,
        batch: args.batch,
        keys: key_cycle(args.keys, spec.clients, batch_of(args, spec.protocol))
            .map(|c| c * (spec.clients * batch_of(args, spec.protocol)) as u64),
        duration_s: secs,
        writes: ok,
        errors,
        first_error,
        writes_per_s: ok as f64 / secs,
        p50_ms: 0.0,
        p99_ms: 0.0,
        p999_ms: 0.0,
        max_ms: 0.0,
        mean_ms: 0.0,
        followers,
        replicated_mb_s: repl,
        replicated_mb_s_per_follower: repl.map(|r| r / followers.max(1) as f64),
        replicated_source: source.map(str::to_string),
        leader_wal_mb_s: leader_wal,
        p50_over_floor: None,
        floor: None,
        node_worker_threads: None,
    };
    r.set_latencies(&hist);
    Ok((r, hist))
}

impl RunResult {
    /// Fill the latency figures from `hist` (nanoseconds).
    fn set_latencies(&mut self, hist: &Histogram<u64>) {
        let ms = |ns: u64| ns as f64 / 1e6;
        if hist.is_empty() {
            return;
        }
        self.p50_ms = ms(hist.value_at_quantile(0.5));
        self.p99_ms = ms(hist.value_at_quantile(0.99));
        self.p999_ms = ms(hist.value_at_quantile(0.999));
        self.max_ms = ms(hist.max());
        self.mean_ms = hist.mean() / 1e6;
    }

    /// Merge slices of one setting (measured with floor probes between them).
    fn merged(parts: Vec<(RunResult, Histogram<u64>)>) -> Option<RunResult> {
        let mut it = parts.into_iter();
        let (mut r, mut hist) = it.next()?;
        let mut n = 1.0;
        let avg = |a: Option<f64>, b: Option<f64>, n: f64| match (a, b) {
            (Some(x), Some(y)) => Some((x * n + y) / (n + 1.0)),
            _ => None,
        };
        for (p, h) in it {
            let _ = hist.add(&h);
            r.duration_s += p.duration_s;
            r.writes += p.writes;
            r.errors += p.errors;
            if r.first_error.is_none() {
                r.first_error = p.first_error;
            }
            r.replicated_mb_s = avg(r.replicated_mb_s, p.replicated_mb_s, n);
            r.replicated_mb_s_per_follower = avg(
                r.replicated_mb_s_per_follower,
                p.replicated_mb_s_per_follower,
                n,
            );
            r.leader_wal_mb_s = avg(r.leader_wal_mb_s, p.leader_wal_mb_s, n);
            n += 1.0;
        }
        r.writes_per_s = r.writes as f64 / r.duration_s.max(1e-9);
        r.set_latencies(&hist);
        Some(r)
    }
}

// ---------------------------------------------------------------- the floor

impl Floor {
    /// The mean of several measurements (the p50s and p99s averaged).
    fn mean(fs: &[Floor]) -> Option<Floor> {
        let first = fs.first()?;
        let n = fs.len() as f64;
        let m = |g: fn(&Floor) -> f64| fs.iter().map(g).sum::<f64>() / n;
        Some(Floor {
            fsync_leader_p50_us: m(|f| f.fsync_leader_p50_us),
            fsync_leader_p99_us: m(|f| f.fsync_leader_p99_us),
            fsync_follower_p50_us: m(|f| f.fsync_follower_p50_us),
            fsync_follower_p99_us: m(|f| f.fsync_follower_p99_us),
            rtt_p50_us: m(|f| f.rtt_p50_us),
            rtt_p99_us: m(|f| f.rtt_p99_us),
            floor_us: m(|f| f.floor_us),
            where_leader: first.where_leader.clone(),
            where_follower: first.where_follower.clone(),
        })
    }
}

fn percentile_us(v: &mut [u64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)] as f64 / 1000.0
}

/// p50 and p99 (µs) of a 100-byte pwrite + fdatasync, appending to a fallocated file in `dir`.
fn fsync_probe(dir: &Path, rounds: usize) -> Result<(f64, f64), BenchError> {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    let path = dir.join("bench-floor.probe");
    let what = format!("floor probe {}", path.display());
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(BenchError::io(what.clone()))?;
    let len: i64 = 16 << 20;
    // SAFETY: plain syscall on a descriptor we own.
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len) };
    if rc != 0 {
        return Err(BenchError::Io {
            what: format!("{what}: posix_fallocate"),
            source: std::io::Error::from_raw_os_error(rc),
        });
    }
    f.sync_all().map_err(BenchError::io(what.clone()))?;
    let buf = [b'x'; 100];
    let mut times = Vec::with_capacity(rounds);
    for i in 0..(rounds + 50) {
        let t = Instant::now();
        f.write_all_at(&buf, (i * 100) as u64)
            .map_err(BenchError::io(what.clone()))?;
        f.sync_data().map_err(BenchError::io(what.clone()))?;
        if i >= 50 {
            times.push(t.elapsed().as_nanos() as u64);
        }
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok((
        percentile_us(&mut times, 0.5),
        percentile_us(&mut times, 0.99),
    ))
}

/// p50 and p99 (µs) of a 64-byte TCP ping-pong on loopback (blocking sockets, NODELAY).
fn rtt_probe(rounds: usize) -> Result<(f64, f64), BenchError> {
    use std::io::Read;
    let l = TcpListener::bind("127.0.0.1:0").map_err(BenchError::io("rtt probe: bind"))?;
    let addr = l
        .local_addr()
        .map_err(BenchError::io("rtt probe: local addr"))?;
    let total = rounds + 200;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 64];
        for _ in 0..total {
            s.read_exact(&mut b)?;
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut s = TcpStream::connect(addr).map_err(BenchError::io("rtt probe: connect"))?;
    s.set_nodelay(true)
        .map_err(BenchError::io("rtt probe: nodelay"))?;
    let mut b = [7u8; 64];
    let mut times = Vec::with_capacity(rounds);
    for i in 0..total {
        let t = Instant::now();
        s.write_all(&b)
            .map_err(BenchError::io("rtt probe: write"))?;
        s.read_exact(&mut b)
            .map_err(BenchError::io("rtt probe: read"))?;
        if i >= 200 {
            times.push(t.elapsed().as_nanos() as u64);
        }
    }
    let _ = server.join();
    Ok((
        percentile_us(&mut times, 0.5),
        percentile_us(&mut times, 0.99),
    ))
}

async fn measure_floor(
    cluster: Option<&LocalCluster>,
    leader_id: &str,
    parent: Option<&Path>,
) -> Result<Floor, BenchError> {
    // In the nodes' own data directories when we run them; otherwise a temp dir
    // on the same filesystem as --dir.
    let tmp;
    let (leader_dir, follower_dir) = match cluster {
        Some(c) => {
            // The leader's directory, and a follower's (the leader's again with one node).
            let l = c
                .nodes
                .iter()
                .find(|n| n.id == leader_id)
                .unwrap_or(&c.nodes[0])
                .data_dir
                .clone();
            let f = c
                .nodes
                .iter()
                .find(|n| n.id != leader_id)
                .map(|n| n.data_dir.clone())
                .unwrap_or_else(|| l.clone());
            (l, f)
        }
        None => {
            let mut b = tempfile::Builder::new();
            b.prefix("walship-floor-");
            tmp = match parent {
                Some(p) => b.tempdir_in(p),
                None => b.tempdir(),
            }
            .map_err(BenchError::io("creating a floor probe directory"))?;
            (tmp.path().to_path_buf(), tmp.path().to_path_buf())
        }
    };
    eprintln!(
        "measuring the floor (300× 100 B pwrite+fdatasync in {} and {}, 2000 loopback ping-pongs)",
        leader_dir.display(),
        follower_dir.display()
    );
    let (ld, fd) = (leader_dir.clone(), follower_dir.clone());
    let r = tokio::task::spawn_blocking(move || -> Result<Floor, BenchError> {
        let (l50, l99) = fsync_probe(&ld, 300)?;
        let (f50, f99) = fsync_probe(&fd, 300)?;
        let (r50, r99) = rtt_probe(2000)?;
        Ok(Floor {
            fsync_leader_p50_us: l50,
            fsync_leader_p99_us: l99,
            fsync_follower_p50_us: f50,
            fsync_follower_p99_us: f99,
            rtt_p50_us: r50,
            rtt_p99_us: r99,
            floor_us: l50 + f50 + r50,
            where_leader: ld.display().to_string(),
            where_follower: fd.display().to_string(),
        })
    })
    .await
    .map_err(|e| BenchError::Target(format!("floor probe task: {e}")))?;
    r
}

// ---------------------------------------------------------------- printing

fn print_floor(f: &Floor) {
    println!(
        "floor: fdatasync leader p50 {:.0} µs (p99 {:.0}), follower p50 {:.0} µs (p99 {:.0}), loopback RTT p50 {:.0} µs (p99 {:.0}) => floor {:.0} µs",
        f.fsync_leader_p50_us,
        f.fsync_leader_p99_us,
        f.fsync_follower_p50_us,
        f.fsync_follower_p99_us,
        f.rtt_p50_us,
        f.rtt_p99_us,
        f.floor_us
    );
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) => format!("{x:.prec$}"),
        None => "-".into(),
    }
}

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const HEADER: &str = "nodes mode   ack          proto  op     clients  value batch   writes/s   p50 ms   p99 ms p99.9 ms  repl MB/s  errors  p50/floor";

fn row(r: &RunResult) -> String {
    format!(
        "{:>5} {:<6} {:<12} {:<6} {:<6} {:>7} {:>6} {:>5} {:>10} {:>8.3} {:>8.3} {:>8.3} {:>10} {:>7} {:>10}",
        r.nodes,
        r.mode,
        r.ack,
        r.protocol.as_str(),
        r.op.as_str(),
        r.clients,
        r.value_size,
        r.batch,
        thousands(r.writes_per_s),
        r.p50_ms,
        r.p99_ms,
        r.p999_ms,
        fmt_opt(r.replicated_mb_s, 1),
        r.errors,
        fmt_opt(r.p50_over_floor, 2),
    )
}

fn print_result_line(r: &RunResult, first: bool) {
    if first {
        eprintln!("{HEADER}");
    }
    eprintln!("{}", row(r));
    if let Some(e) = &r.first_error {
        eprintln!("      first error: {e}");
    }
}

fn print_table(results: &[RunResult], floor: Option<&Floor>) {
    println!("{HEADER}");
    for r in results {
        println!("{}", row(r));
    }
    if let Some(f) = floor {
        println!(
            "(first floor measured: {:.0} µs = leader fdatasync {:.0} + follower fdatasync {:.0} + loopback RTT {:.0}; repl MB/s = WAL bytes shipped to all followers, 10^6 B)",
            f.floor_us, f.fsync_leader_p50_us, f.fsync_follower_p50_us, f.rtt_p50_us
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MEETS"
    } else {
        "MISSES"
    }
}

fn print_bars(results: &[RunResult], floor: Option<&Floor>) {
    let mut lines = Vec::new();
    for r in results.iter().filter(|r| {
        r.nodes == 3
            && r.mode == "quorum"
            && r.ack == "remote_flush"
            && r.clients == 32
            && r.value_size == 100
            && r.batch == 1
            && r.op == WriteOp::Put
    }) {
        let bar = PG_ANY1_TPS * TPS_FACTOR;
        lines.push(format!(
            "{} 3n quorum remote_flush 32c 100B: {} writes/s = {:.1}x PostgreSQL ANY 1 ({} TPS; bar {}), p99 {:.2} ms (PostgreSQL {:.1}): {}",
            r.protocol.as_str(),
            thousands(r.writes_per_s),
            r.writes_per_s / PG_ANY1_TPS,
            thousands(PG_ANY1_TPS),
            thousands(bar),
            r.p99_ms,
            PG_ANY1_P99_MS,
            verdict(r.writes_per_s >= bar && r.p99_ms <= PG_ANY1_P99_MS)
        ));
    }
    for r in results.iter().filter(|r| {
        r.nodes == 3
            && r.clients == 1
            && r.op == WriteOp::Put
            && r.ack == "remote_flush"
            && r.value_size == 100
            && r.batch == 1
    }) {
        if let Some(f) = r.floor.as_ref().or(floor) {
            let ratio = r.p50_ms * 1000.0 / f.floor_us;
            lines.push(format!(
                "{} 3n {} remote_flush 1c 100B: p50 {:.0} µs vs floor {:.0} µs = {:.2}x (bar {FLOOR_FACTOR}x): {}",
                r.protocol.as_str(),
                r.mode,
                r.p50_ms * 1000.0,
                f.floor_us,
                ratio,
                verdict(ratio <= FLOOR_FACTOR)
            ));
        }
    }
    for r in results
        .iter()
        .filter(|r| r.nodes == 3 && r.mode == "async" && r.value_size == 4096)
    {
        if let Some(m) = r.replicated_mb_s {
            let batch = if r.batch > 1 {
                format!(" batch {}", r.batch)
            } else {
                String::new()
            };
            let keys = match (r.op, r.keys) {
                (WriteOp::Put, Some(k)) => format!(" ({k} keys, overwritten)"),
                (WriteOp::Put, None) => " (every key new)".to_string(),
                (WriteOp::Append, _) => String::new(),
            };
            lines.push(format!(
                "{} 3n async {}c{batch} 4KiB {}{keys}: replicated {:.0} MB/s to both followers ({:.0} each; bar {REPL_MBPS_BAR}): {}",
                r.protocol.as_str(),
                r.clients,
                r.op.as_str(),
                m,
                m / r.followers.max(1) as f64,
                verdict(m >= REPL_MBPS_BAR)
            ));
        }
    }
    if !lines.is_empty() {
        println!("\nbars (shared/anchors/README.md):");
        for l in lines {
            println!("  {l}");
        }
    }
}

// ---------------------------------------------------------------- machine note, date

fn machine_note() -> Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    serde_json::json!({
        "cores": cores,
        "loadavg_at_end": load,
        "note": "shared cores; figures drift ±20% from run to run",
    })
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (civil-from-days, H. Hinnant's algorithm).
fn utc_string(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_and_metric_parsing() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        let text =
            "# HELP x\nwalship_shipped_bytes_total 12345\nwalship_shipped_bytes_total_other 1\n";
        assert_eq!(metric(text, "walship_shipped_bytes_total"), Some(12345.0));
        assert_eq!(metric(text, "walship_nope"), None);
    }

    #[test]
    fn date_formatting() {
        assert_eq!(utc_string(UNIX_EPOCH), "1970-01-01 00:00:00");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199); // 2024-02-29 23:59:59
        assert_eq!(utc_string(t), "2024-02-29 23:59:59");
    }

    #[test]
    fn plan_defaults_and_matrix() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            b: BenchArgs,
        }
        let p = Plan::from_args(&T::parse_from(["x"]).b.opts).unwrap();
        assert_eq!(p.groups.len(), 1);
        assert_eq!(p.groups[0].0.nodes, 3);
        assert_eq!(p.groups[0].1.len(), 1);
        assert_eq!(p.groups[0].1[0].ack, AckLevel::RemoteFlush);
        let p = Plan::from_args(&T::parse_from(["x", "--matrix"]).b.opts).unwrap();
        // 1 node (async) + 3 nodes × (async, quorum, sync).
        assert_eq!(p.groups.len(), 4);
        let runs: usize = p.groups.iter().map(|g| g.1.len()).sum();
        // (1 + 1 + 3 + 1) ack settings × 4 client counts × 2 sizes.
        assert_eq!(runs, 6 * 4 * 2);
        assert!(Plan::from_args(&T::parse_from(["x", "--nodes", "2"]).b.opts).is_err());
        assert!(Plan::from_args(&T::parse_from(["x", "--ack", "nope"]).b.opts).is_err());
        let p = Plan::from_args(
            &T::parse_from(["x", "--value-size", "100,4KiB", "--clients", "1,32"])
                .b
                .opts,
        )
        .unwrap();
        assert_eq!(p.groups[0].1.len(), 4);
        assert_eq!(p.groups[0].1[3].value_size, 4096);
    }

    #[test]
    fn local_nodes_share_the_cpus_with_at_least_one_thread_each() {
        assert_eq!(node_worker_threads(2, 3), 1);
        assert_eq!(node_worker_threads(2, 1), 2);
        assert_eq!(node_worker_threads(8, 3), 2);
        assert_eq!(node_worker_threads(1, 3), 1);
        assert_eq!(node_worker_threads(4, 0), 4);
    }

    #[test]
    fn floor_probes_run() {
        let d = tempfile::tempdir().unwrap();
        let (p50, p99) = fsync_probe(d.path(), 20).unwrap();
        assert!(p50 > 0.0 && p99 >= p50);
        let (r50, _) = rtt_probe(50).unwrap();
        assert!(r50 > 0.0);
    }
}
