//! Cluster harness for the replication integration tests.
//!
//! Starts REAL nodes in-process (`walship::node::start::start`) on loopback,
//! each in its own temporary data directory, with real sockets and files.
//! Ports are chosen below the kernel's ephemeral range (so an outgoing
//! connection can never take one before its node binds it) by binding them
//! first (tokio sets SO_REUSEADDR, so a restarted node gets the same ports back).
//!
//! Every wait is a condition polled against a generous upper bound (never a
//! guessed sleep). Clusters of one test binary run one at a time (a global
//! lock), so that the 2 shared cores are not overloaded by parallel clusters.
//!
//! Set `WALSHIP_TEST_LOG=info` (or any tracing filter) to see the nodes' logs.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use walship::config::Config;
use walship::node::start::NodeHandle;
use walship::node::{Role, Shared};

/// Upper bound for "this must happen soon" (elections, convergence).
pub const WAIT: Duration = Duration::from_secs(20);

/// Options of a test cluster (short timeouts and small segments by default).
#[derive(Clone, Debug)]
pub struct Opts {
    /// Number of nodes (`n1`..`nN`).
    pub nodes: usize,
    /// `replication.mode`.
    pub mode: &'static str,
    /// `replication.standbys` (None: the mode's default).
    pub standbys: Option<String>,
    /// `replication.ack` (default level).
    pub ack: &'static str,
    /// `replication.ack_timeout`.
    pub ack_timeout: &'static str,
    /// `failover.auto`.
    pub auto: bool,
    /// `failover.heartbeat_interval`.
    pub heartbeat: &'static str,
    /// `failover.election_timeout`.
    pub election_timeout: &'static str,
    /// `wal.segment_size`.
    pub segment_size: &'static str,
    /// Per-node priorities (index 0 = n1); missing entries are 1.
    pub priorities: Vec<u32>,
    /// Applied to every node's parsed config (index, config) before start.
    pub tweak: Option<fn(usize, &mut Config)>,
    /// `wal.min_retained`.
    pub min_retained: &'static str,
    /// `wal.max_retained`.
    pub max_retained: &'static str,
    /// `checkpoint.interval`.
    pub checkpoint_interval: &'static str,
    /// `checkpoint.max_wal`.
    pub checkpoint_max_wal: &'static str,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            nodes: 3,
            mode: "quorum",
            standbys: None,
            ack: "remote_flush",
            ack_timeout: "5s",
            auto: true,
            heartbeat: "50ms",
            election_timeout: "300ms",
            segment_size: "1MiB",
            priorities: Vec::new(),
            tweak: None,
            min_retained: "1GiB",
            max_retained: "10GiB",
            checkpoint_interval: "5min",
            checkpoint_max_wal: "256MiB",
        }
    }
}

impl Opts {
    /// `nodes` nodes in `mode`.
    pub fn new(nodes: usize, mode: &'static str) -> Opts {
        Opts {
            nodes,
            mode,
            ..Opts::default()
        }
    }
}

/// Init logging once (only when `WALSHIP_TEST_LOG` is set).
fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if let Ok(f) = std::env::var("WALSHIP_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(f))
                .with_test_writer()
                .try_init();
        }
    });
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A free port on 127.0.0.1 (bound then released).
pub fn free_addr() -> SocketAddr {
    // Outside the ephemeral range, so no outgoing connection can take it
    // between this pick and the node's bind.
    let l = walship::demo::bind_listen_port().expect("bind a loopback port");
    l.local_addr().expect("local addr")
}

/// A cluster of real nodes on loopback.
pub struct Cluster {
    /// Node ids, `n1`..`nN`.
    pub ids: Vec<String>,
    /// Each node's config.
    pub cfgs: Vec<Config>,
    /// Running nodes (`None` while stopped).
    pub nodes: Vec<Option<NodeHandle>>,
    /// HTTP client that does NOT follow redirects.
    pub http: reqwest::Client,
    /// The options the cluster was built with.
    pub opts: Opts,
    dir: tempfile::TempDir,
    _serial: MutexGuard<'static, ()>,
}

/// Build the config TOML of every node.
fn configs(opts: &Opts, dir: &std::path::Path) -> Vec<Config> {
    let ids: Vec<String> = (1..=opts.nodes).map(|i| format!("n{i}")).collect();
    let addrs: Vec<(SocketAddr, SocketAddr)> =
        ids.iter().map(|_| (free_addr(), free_addr())).collect();
    let mut members = String::new();
    for (i, id) in ids.iter().enumerate() {
        let prio = opts.priorities.get(i).copied().unwrap_or(1);
        members.push_str(&format!(
            "[[members]]\nid = \"{id}\"\naddr = \"{}\"\nhttp = \"{}\"\npriority = {prio}\n\n",
            addrs[i].0, addrs[i].1
        ));
    }
    let standbys = match &opts.standbys {
        Some(s) => format!("standbys = \"{s}\"\n"),
        None => String::new(),
    };
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let data = dir.join(id);
            let text = format!(
                r#"cluster_id = "it"
node_id = "{id}"
data_dir = "{data}"
listen = "{listen}"
http_listen = "{http}"

{members}
[replication]
mode = "{mode}"
{standbys}ack = "{ack}"
ack_timeout = "{ack_timeout}"

[failover]
auto = {auto}
heartbeat_interval = "{hb}"
election_timeout = "{et}"

[wal]
segment_size = "{seg}"
min_retained = "{min_ret}"
max_retained = "{max_ret}"

[checkpoint]
interval = "{ck_int}"
max_wal = "{ck_wal}"
"#,
                data = data.display(),
                listen = addrs[i].0,
                http = addrs[i].1,
                mode = opts.mode,
                ack = opts.ack,
                ack_timeout = opts.ack_timeout,
                auto = opts.auto,
                hb = opts.heartbeat,
                et = opts.election_timeout,
                seg = opts.segment_size,
                min_ret = opts.min_retained,
                max_ret = opts.max_retained,
                ck_int = opts.checkpoint_interval,
                ck_wal = opts.checkpoint_max_wal,
            );
            let mut cfg = Config::parse(&text, std::path::Path::new("test.toml"))
                .unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
            if let Some(t) = opts.tweak {
                t(i, &mut cfg);
            }
            cfg
        })
        .collect()
}

impl Cluster {
    /// Start every node.
    pub async fn start(opts: Opts) -> Cluster {
        let serial = serial();
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let cfgs = configs(&opts, dir.path());
        let ids = cfgs.iter().map(|c| c.node_id.clone()).collect();
        let mut c = Cluster {
            ids,
            nodes: cfgs.iter().map(|_| None).collect(),
            cfgs,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("reqwest client"),
            opts,
            dir,
            _serial: serial,
        };
        for i in 0..c.cfgs.len() {
            c.start_node(i).await;
        }
        c
    }

    /// Index of a node id.
    pub fn idx(&self, id: &str) -> usize {
        self.ids
            .iter()
            .position(|i| i == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Start (or restart) node `i` from its data directory.
    pub async fn start_node(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {} already runs", self.ids[i]);
        let cfg = self.cfgs[i].clone();
        let deadline = Instant::now() + WAIT;
        // The port may linger briefly after a stop: retry the bind for a while.
        loop {
            match walship::node::start::start(cfg.clone()).await {
                Ok(h) => {
                    self.nodes[i] = Some(h);
                    return;
                }
                Err(e @ walship::node::start::StartError::Bind { .. })
                    if Instant::now() < deadline =>
                {
                    eprintln!("retrying start of {}: {e}", self.ids[i]);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("node {} failed to start: {e}", self.ids[i]),
            }
        }
    }

    /// Stop node `i` without the shutdown checkpoint (its data directory is left
    /// as a crash after the last WAL flush would leave it).
    pub async fn stop_node_without_checkpoint(&mut self, i: usize) {
        let h = self.nodes[i].take().expect("node runs");
        h.stop_without_checkpoint().await;
    }

    /// Data directory of node `i`.
    pub fn data_dir(&self, i: usize) -> std::path::PathBuf {
        self.cfgs[i].data_dir.clone()
    }

    /// Clean shutdown of node `i`.
    pub async fn stop_node(&mut self, i: usize) {
        let h = self.nodes[i]
            .take()
            .unwrap_or_else(|| panic!("node {} is not running", self.ids[i]));
        h.shutdown().await;
    }

    /// Stop then start node `i`.
    pub async fn restart_node(&mut self, i: usize) {
        self.stop_node(i).await;
        self.start_node(i).await;
    }

    /// Shared state of running node `i`.
    pub fn shared(&self, i: usize) -> &Arc<Shared> {
        &self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", self.ids[i]))
            .shared
    }

    /// Indices of running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    /// HTTP base URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.cfgs[i].http_listen)
    }

    /// The writable leader among the running nodes, if exactly one.
    pub fn leader_now(&self) -> Option<usize> {
        let leaders: Vec<usize> = self
            .running()
            .into_iter()
            .filter(|&i| self.shared(i).role().is_writable_leader())
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// Wait until exactly one running node is a writable leader and every other
    /// running node follows it (knows it as leader in the same term).
    pub async fn wait_leader(&self) -> usize {
        let mut found = None;
        wait_for(
            "a single leader followed by every running node",
            WAIT,
            || {
                let Some(l) = self.leader_now() else {
                    return false;
                };
                let lr = self.shared(l).role();
                let lid = &self.ids[l];
                let ok = self.running().into_iter().all(|i| {
                    let r = self.shared(i).role();
                    i == l
                        || (r.role == Role::Follower
                            && r.term == lr.term
                            && r.leader_id.as_deref() == Some(lid))
                });
                if ok {
                    found = Some(l);
                }
                ok
            },
        )
        .await;
        found.expect("leader")
    }

    /// Wait until leader `l` sees every other running node as `streaming`.
    pub async fn wait_streaming(&self, l: usize) {
        let others: Vec<String> = self
            .running()
            .into_iter()
            .filter(|&i| i != l)
            .map(|i| self.ids[i].clone())
            .collect();
        let s = self.shared(l).clone();
        wait_for("every running follower streaming", WAIT, || {
            let st = s.follower_states.lock();
            others
                .iter()
                .all(|id| st.get(id).map(|s| s.as_str()) == Some("streaming"))
        })
        .await;
    }

    /// Wait until every running node has applied the leader's whole WAL and all
    /// have the same KV digest and applied LSN. Returns (applied LSN, digest).
    pub async fn wait_converged(&self) -> (u64, u64) {
        let mut out = (0, 0);
        wait_for(
            "all running nodes converged (applied LSN and KV digest)",
            WAIT,
            || {
                let Some(l) = self.leader_now() else {
                    return false;
                };
                let end = self.shared(l).wal.write_lsn().0;
                let mut seen = None;
                for i in self.running() {
                    let s = self.shared(i);
                    let applied = s.applied_lsn();
                    if applied != end {
                        return false;
                    }
                    let d = s.kv.read().digest();
                    match seen {
                        None => seen = Some((applied, d)),
                        Some(x) if x != (applied, d) => return false,
                        _ => {}
                    }
                }
                out = seen.unwrap_or((0, 0));
                true
            },
        )
        .await;
        out
    }

    /// PUT over HTTP to node `i`; returns (status, JSON or text body, headers).
    pub async fn put(
        &self,
        i: usize,
        key: &str,
        value: &str,
        ack: Option<&str>,
    ) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
        let mut url = format!("{}/v1/kv/{key}", self.url(i));
        if let Some(a) = ack {
            url.push_str(&format!("?ack={a}"));
        }
        let r = self
            .http
            .put(&url)
            .body(value.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, v, headers)
    }

    /// PUT that must succeed; returns the write's LSN.
    pub async fn put_ok(&self, i: usize, key: &str, value: &str, ack: Option<&str>) -> u64 {
        let (st, v, _) = self.put(i, key, value, ack).await;
        assert_eq!(st, 200, "PUT {key} on {}: {v}", self.ids[i]);
        parse_lsn(v["lsn"].as_str().expect("lsn in answer"))
    }

    /// GET over HTTP from node `i` with optional query; returns (status, body, Walship-Lsn).
    pub async fn get(&self, i: usize, key: &str, query: &str) -> (u16, String, u64) {
        let url = format!("{}/v1/kv/{key}{query}", self.url(i));
        let r = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = r.status().as_u16();
        let lsn = r
            .headers()
            .get("walship-lsn")
            .and_then(|v| v.to_str().ok())
            .map(parse_lsn)
            .unwrap_or_else(|| panic!("GET {url}: no Walship-Lsn header"));
        (status, r.text().await.unwrap_or_default(), lsn)
    }

    /// GET a JSON document (e.g. /status) from node `i`; returns (status, JSON).
    pub async fn get_json(&self, i: usize, path: &str) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.url(i));
        let r = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// `POST /v1/admin/failover {"to": id_i}` on node `i` (manual promotion,
    /// used with `failover.auto = false`); waits until it leads and is followed.
    pub async fn promote(&self, i: usize) -> usize {
        let r = self
            .http
            .post(format!("{}/v1/admin/failover", self.url(i)))
            .json(&serde_json::json!({"to": self.ids[i], "force": false}))
            .send()
            .await
            .expect("admin failover");
        let st = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(st, 200, "manual failover to {}: {body}", self.ids[i]);
        let l = self.wait_leader().await;
        assert_eq!(l, i);
        l
    }

    /// A binary client connected to node `i`.
    pub async fn client(&self, i: usize) -> walship::Client {
        walship::Client::connect(self.cfgs[i].listen, "it", "")
            .await
            .expect("client connect")
    }

    /// Assert that the running nodes hold byte-identical WAL over the range they
    /// all hold: [max first, min end). Returns the compared range. Retention may
    /// remove the start of that range while it is read (a checkpoint lands): then
    /// the range is taken again, a bounded number of times.
    pub fn assert_wal_identical(&self) -> (u64, u64) {
        for _ in 0..50 {
            if let Some(r) = self.compare_wal_once() {
                return r;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("retention kept removing the compared WAL range");
    }

    /// One attempt of [`Cluster::assert_wal_identical`]; None if a node no longer
    /// retained part of the range when it was read.
    fn compare_wal_once(&self) -> Option<(u64, u64)> {
        let nodes = self.running();
        let from = nodes
            .iter()
            .map(|&i| self.shared(i).wal.first_lsn().0)
            .max()
            .unwrap_or(0);
        let to = nodes
            .iter()
            .map(|&i| self.shared(i).wal.write_lsn().0)
            .min()
            .unwrap_or(0);
        let mut reference: Option<Vec<u8>> = None;
        for &i in &nodes {
            let bytes = match try_read_wal(&self.shared(i).wal, from, to) {
                Ok(b) => b,
                Err(wal::WalError::NotRetained { .. }) => return None,
                Err(e) => panic!("node {} read_raw: {e}", self.ids[i]),
            };
            assert_eq!(
                bytes.len() as u64,
                to - from,
                "node {} WAL range length",
                self.ids[i]
            );
            match &reference {
                None => reference = Some(bytes),
                Some(r) => {
                    if *r != bytes {
                        let at = r.iter().zip(&bytes).position(|(a, b)| a != b).unwrap_or(0);
                        panic!(
                            "node {} WAL differs from node {} at LSN {}",
                            self.ids[i],
                            self.ids[nodes[0]],
                            wal::Lsn(from + at as u64)
                        );
                    }
                }
            }
        }
        Some((from, to))
    }

    /// Stop every running node cleanly.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_some() {
                self.stop_node(i).await;
            }
        }
    }
}

/// Raw WAL bytes [from, to) of a WAL (whole records, segment by segment).
/// Padding at segment ends is included (it is part of the byte-identical log).
pub fn read_wal(w: &wal::Wal, from: u64, to: u64) -> Vec<u8> {
    try_read_wal(w, from, to).unwrap_or_else(|e| panic!("read_raw in [{from}, {to}): {e}"))
}

/// Like [`read_wal`], returning the first read error.
pub fn try_read_wal(w: &wal::Wal, from: u64, to: u64) -> Result<Vec<u8>, wal::WalError> {
    let mut out = Vec::new();
    let mut pos = from;
    while pos < to {
        let mut buf = Vec::new();
        let end = w.read_raw(wal::Lsn(pos), 1 << 20, &mut buf)?.0;
        assert!(end > pos, "read_raw made no progress at {}", wal::Lsn(pos));
        let take = (end.min(to) - pos) as usize;
        out.extend_from_slice(&buf[..take]);
        pos = end;
    }
    Ok(out)
}

/// Parse an `X/X` (or decimal) LSN.
pub fn parse_lsn(s: &str) -> u64 {
    s.parse::<wal::Lsn>()
        .unwrap_or_else(|e| panic!("bad LSN {s:?}: {e}"))
        .0
}

/// Poll `cond` every 10 ms until it holds; panic with `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Poll an async condition every 20 ms until it holds; panic after `timeout`.
pub async fn wait_for_async<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
