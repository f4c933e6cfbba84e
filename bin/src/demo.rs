//! `walship demo`, and the local-cluster harness it is built on.
//!
//! The demo starts a cluster of real `walship serve` child processes on loopback,
//! writes unique keys through the HTTP API, kills the leader with SIGKILL, shows
//! the election and the failover time, restarts the old leader (which cuts its
//! divergent tail, if any, and follows), then checks every acknowledged key on
//! every node.
//!
//! The harness ([`LocalCluster`], [`Writer`]) is public so that the process-level
//! failover tests and the failover benchmark drive the very same code.
//!
//! Guarantee: no child process outlives a [`LocalCluster`]. Dropping it (normal
//! exit, error, panic unwinding, Ctrl-C in the demo) kills and reaps every child;
//! children also get `PR_SET_PDEATHSIG = SIGKILL`, so a demo killed with SIGKILL
//! does not leave nodes behind either.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::Value;

/// What can go wrong while running a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (names the file or node).
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Something did not happen within its (generous) time limit.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A node did not behave as expected (the message says how).
    #[error("{0}")]
    Failed(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

/// The shape of a local cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Number of nodes (n1, n2, …).
    pub nodes: usize,
    /// `failover.heartbeat_interval`.
    pub heartbeat: Duration,
    /// `failover.election_timeout`.
    pub election_timeout: Duration,
    /// `replication.ack_timeout`.
    pub ack_timeout: Duration,
    /// `wal.segment_size` (a size string).
    pub segment_size: String,
}

impl ClusterSpec {
    /// The demo's settings: quorum mode, heartbeat 50 ms, election timeout 300 ms.
    pub fn fast(nodes: usize) -> ClusterSpec {
        ClusterSpec {
            nodes,
            heartbeat: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            ack_timeout: Duration::from_secs(5),
            segment_size: "16MiB".into(),
        }
    }
}

/// One node of a [`LocalCluster`].
#[derive(Debug)]
pub struct NodeProc {
    /// Node id (`n1`, …).
    pub id: String,
    /// Binary protocol address.
    pub addr: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
    /// Its log file (stdout and stderr, appended across restarts).
    pub log: PathBuf,
    child: Option<Child>,
    /// Killed but not reaped yet.
    zombie: bool,
}

/// A node's `/status`, the fields the harness uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// `node_id`.
    pub node_id: String,
    /// `role`: follower | candidate | leader.
    pub role: String,
    /// `state`: streaming, catchup, fenced, …
    pub state: String,
    /// `term`.
    pub term: u64,
    /// `leader_id`.
    pub leader_id: Option<String>,
    /// `paused`.
    pub paused: bool,
    /// `accepting_writes`.
    pub accepting_writes: bool,
    /// `write_lsn`.
    pub write_lsn: u64,
    /// `flush_lsn`.
    pub flush_lsn: u64,
    /// `commit_lsn`.
    pub commit_lsn: u64,
    /// `apply_lsn`.
    pub apply_lsn: u64,
    /// Follower: `replication.connected`.
    pub connected: bool,
}

impl NodeStatus {
    /// A leader that takes writes.
    pub fn is_writable_leader(&self) -> bool {
        self.role == "leader" && self.accepting_writes
    }

    fn from_json(v: &Value) -> Option<NodeStatus> {
        let lsn = |k: &str| -> Option<u64> { v[k].as_str()?.parse::<wal::Lsn>().ok().map(|l| l.0) };
        Some(NodeStatus {
            node_id: v["node_id"].as_str()?.to_string(),
            role: v["role"].as_str()?.to_string(),
            state: v["state"].as_str().unwrap_or("").to_string(),
            term: v["term"].as_u64()?,
            leader_id: v["leader_id"].as_str().map(str::to_string),
            paused: v["paused"].as_bool().unwrap_or(false),
            accepting_writes: v["accepting_writes"].as_bool().unwrap_or(false),
            write_lsn: lsn("write_lsn")?,
            flush_lsn: lsn("flush_lsn")?,
            commit_lsn: lsn("commit_lsn")?,
            apply_lsn: lsn("apply_lsn")?,
            connected: v["replication"]["connected"].as_bool().unwrap_or(false),
        })
    }
}

/// A cluster of `walship serve` child processes on loopback ports.
///
/// Invariant: every started child is in `nodes[i].child` until it is reaped;
/// `Drop` kills (SIGKILL) and reaps all of them.
pub struct LocalCluster {
    exe: PathBuf,
    dir: PathBuf,
    spec: ClusterSpec,
    nodes: Vec<NodeProc>,
    http: reqwest::Client,
}

/// Bind a loopback port for a node to listen on, chosen OUTSIDE the kernel's
/// ephemeral range (`net.ipv4.ip_local_port_range`): a port picked with
/// `bind(0)` comes from that range and, once released, can be taken as the
/// local port of any outgoing connection (e.g. another node's replication
/// link) before the node binds it. Falls back to `bind(0)` if no port below
/// the range is free.
pub fn bind_listen_port() -> std::io::Result<TcpListener> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u32>().ok())
        })
        .unwrap_or(32768);
    let (start, end) = (10_000u32, low.max(10_001));
    let span = end - start;
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    for _ in 0..256 {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = start + (seed.wrapping_add(k.wrapping_mul(7919)) % span);
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return Ok(l);
        }
    }
    TcpListener::bind("127.0.0.1:0")
}

fn free_ports(n: usize) -> Result<Vec<u16>, DemoError> {
    // Hold every listener until all ports are picked, so that they differ.
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(bind_listen_port().map_err(io_err("pick a free loopback port"))?);
    }
    held.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(io_err("read a picked port"))
        })
        .collect()
}

fn dur(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl LocalCluster {
    /// Write the configs of `spec.nodes` nodes under `dir` (free loopback ports,
    /// data in `dir/nK`, logs in `dir/nK.log`) and start them all. Retries with
    /// fresh ports (up to 3 times) when a node cannot start, e.g. because another
    /// program took a picked port in the meantime.
    pub async fn launch(
        exe: &Path,
        dir: &Path,
        spec: ClusterSpec,
    ) -> Result<LocalCluster, DemoError> {
        let mut last = None;
        for _attempt in 0..3 {
            let mut c = LocalCluster::create(exe, dir, spec.clone())?;
            c.start_all()?;
            match c.wait_healthy(Duration::from_secs(15)).await {
                Ok(()) => return Ok(c),
                Err(e) => {
                    c.kill_all();
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| DemoError::Failed("the cluster did not start".into())))
    }

    /// Write the configs (does not start anything). Wipes `dir/nK` data dirs.
    pub fn create(exe: &Path, dir: &Path, spec: ClusterSpec) -> Result<LocalCluster, DemoError> {
        if spec.nodes == 0 {
            return Err(DemoError::Failed(
                "a cluster needs at least one node".into(),
            ));
        }
        std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        let ports = free_ports(spec.nodes * 2)?;
        let mut nodes = Vec::new();
        for i in 0..spec.nodes {
            let id = format!("n{}", i + 1);
            let addr: SocketAddr = ([127, 0, 0, 1], ports[2 * i]).into();
            let http: SocketAddr = ([127, 0, 0, 1], ports[2 * i + 1]).into();
            nodes.push(NodeProc {
                config: dir.join(format!("{id}.toml")),
                log: dir.join(format!("{id}.log")),
                id,
                addr,
                http,
                child: None,
                zombie: false,
            });
        }
        let mut members = String::new();
        for n in &nodes {
            members.push_str(&format!(
                "[[members]]\nid = \"{}\"\naddr = \"{}\"\nhttp = \"{}\"\npriority = 1\n\n",
                n.id, n.addr, n.http
            ));
        }
        for n in &nodes {
            let data = dir.join(&n.id);
            if data.exists() {
                std::fs::remove_dir_all(&data)
                    .map_err(io_err(format!("wipe {}", data.display())))?;
            }
            let text = format!(
                "cluster_id = \"walship-demo\"\nnode_id = \"{id}\"\ndata_dir = \"{data}\"\n\
                 listen = \"{addr}\"\nhttp_listen = \"{http}\"\n\n{members}\
                 [replication]\nmode = \"quorum\"\nack = \"remote_flush\"\nack_timeout = \"{ack}\"\n\n\
                 [failover]\nauto = true\nheartbeat_interval = \"{hb}\"\nelection_timeout = \"{et}\"\n\n\
                 [wal]\nsegment_size = \"{seg}\"\nsync = \"always\"\nmin_retained = \"{seg}\"\n",
                id = n.id,
                data = data.display(),
                addr = n.addr,
                http = n.http,
                ack = dur(spec.ack_timeout),
                hb = dur(spec.heartbeat),
                et = dur(spec.election_timeout),
                seg = spec.segment_size,
            );
            std::fs::write(&n.config, text)
                .map_err(io_err(format!("write {}", n.config.display())))?;
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(800))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| DemoError::Failed(format!("cannot build an HTTP client: {e}")))?;
        Ok(LocalCluster {
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            spec,
            nodes,
            http,
        })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true (a cluster has at least one node); for clippy.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node at index `i`.
    pub fn node(&self, i: usize) -> &NodeProc {
        &self.nodes[i]
    }

    /// The settings the cluster runs with.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The directory holding configs, data dirs and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Index of the node with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Every node's HTTP address, by index.
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.http).collect()
    }

    /// Start every node that is not running.
    pub fn start_all(&mut self) -> Result<(), DemoError> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// Start node `i` (reaping a previous, killed instance first); returns its pid.
    pub fn start(&mut self, i: usize) -> Result<u32, DemoError> {
        self.reap(i);
        let n = &mut self.nodes[i];
        if n.child.is_some() {
            return Err(DemoError::Failed(format!("{} is already running", n.id)));
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .map_err(io_err(format!("open {}", n.log.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io_err(format!("open {}", n.log.display())))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("serve")
            .arg("--config")
            .arg(&n.config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let child =
            cmd.spawn()
                .map_err(io_err(format!("start {} ({})", n.id, self.exe.display())))?;
        let pid = child.id();
        n.child = Some(child);
        n.zombie = false;
        Ok(pid)
    }

    /// The pid of node `i` if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        let n = &self.nodes[i];
        if n.zombie {
            return None;
        }
        n.child.as_ref().map(|c| c.id())
    }

    /// Send `sig` (libc signal number) to node `i`.
    pub fn signal(&self, i: usize, sig: libc::c_int) -> Result<(), DemoError> {
        let Some(pid) = self.pid(i) else {
            return Err(DemoError::Failed(format!(
                "{} is not running",
                self.nodes[i].id
            )));
        };
        // SAFETY: plain syscall on a pid we own and have not reaped.
        let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
        if r != 0 {
            return Err(DemoError::Io {
                what: format!("signal {sig} to {} (pid {pid})", self.nodes[i].id),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// SIGKILL node `i`; returns the instant just before the signal. The process
    /// is reaped later (by [`LocalCluster::start`] or `Drop`), so this returns at once.
    pub fn kill9(&mut self, i: usize) -> Result<Instant, DemoError> {
        let at = Instant::now();
        self.signal(i, libc::SIGKILL)?;
        self.nodes[i].zombie = true;
        Ok(at)
    }

    fn reap(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if let Some(mut c) = n.child.take() {
            if n.zombie {
                let _ = c.wait();
            } else {
                match c.try_wait() {
                    Ok(Some(_)) => {}
                    _ => n.child = Some(c),
                }
            }
        }
        n.zombie = false;
    }

    /// Has node `i` exited on its own? (Reaps it if so.)
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let n = &mut self.nodes[i];
        let c = n.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => {
                n.child = None;
                n.zombie = false;
                Some(st)
            }
            _ => None,
        }
    }

    /// Stop node `i` cleanly (SIGTERM, then SIGKILL after `grace`) and reap it.
    pub async fn stop(&mut self, i: usize, grace: Duration) {
        if self.pid(i).is_some() {
            let _ = self.signal(i, libc::SIGCONT);
            let _ = self.signal(i, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while self.nodes[i].child.is_some() && !self.nodes[i].zombie {
            if self.exited(i).is_some() {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.nodes[i].child.is_some() && !self.nodes[i].zombie {
            let _ = self.kill9(i);
        }
        self.reap(i);
    }

    /// Stop every node (SIGTERM to all at once, SIGKILL after `grace`), reap all.
    pub async fn shutdown(&mut self, grace: Duration) {
        for i in 0..self.nodes.len() {
            if self.pid(i).is_some() {
                let _ = self.signal(i, libc::SIGCONT);
                let _ = self.signal(i, libc::SIGTERM);
            }
        }
        for i in 0..self.nodes.len() {
            self.stop(i, grace).await;
        }
    }

    /// SIGKILL and reap every child (what `Drop` does).
    pub fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.pid(i).is_some() {
                let _ = self.signal(i, libc::SIGKILL);
                self.nodes[i].zombie = true;
            }
            self.reap(i);
        }
    }

    /// Wait until every running node answers `/health`; fails early, with the
    /// tail of its log, when a node exits.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<(), DemoError> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for i in 0..self.nodes.len() {
                if let Some(st) = self.exited(i) {
                    return Err(DemoError::Failed(format!(
                        "{} exited at start ({st}); its log ends with:\n{}",
                        self.nodes[i].id,
                        self.log_tail(i, 8)
                    )));
                }
                let url = format!("http://{}/health", self.nodes[i].http);
                let ok =
                    matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success());
                all &= ok;
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DemoError::Timeout(format!(
                    "nodes did not answer /health within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `n` lines of node `i`'s log, ANSI colours removed.
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| format!("    {}", strip_ansi(l)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Lines of node `i`'s log containing `needle`, ANSI colours removed.
    pub fn log_lines(&self, i: usize, needle: &str) -> Vec<String> {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        text.lines()
            .map(strip_ansi)
            .filter(|l| l.contains(needle))
            .collect()
    }

    /// Node `i`'s `/status`, or None if it does not answer within 800 ms.
    pub async fn status(&self, i: usize) -> Option<NodeStatus> {
        let url = format!("http://{}/status", self.nodes[i].http);
        let r = self.http.get(&url).send().await.ok()?;
        let v: Value = r.json().await.ok()?;
        NodeStatus::from_json(&v)
    }

    /// Poll the nodes `among` until one is a writable leader with a term >=
    /// `min_term`; returns (index, term).
    pub async fn wait_leader(
        &self,
        among: &[usize],
        min_term: u64,
        timeout: Duration,
    ) -> Result<(usize, u64), DemoError> {
        let deadline = Instant::now() + timeout;
        loop {
            for &i in among {
                if let Some(s) = self.status(i).await {
                    if s.is_writable_leader() && s.term >= min_term {
                        return Ok((i, s.term));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(DemoError::Timeout(format!(
                    "no leader (term >= {min_term}) among {:?} within {timeout:?}",
                    among.iter().map(|&i| &self.nodes[i].id).collect::<Vec<_>>()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wait until node `i` is a follower of `leader` (by id), connected and
    /// streaming, with its log caught up to the leader's write LSN as seen at the
    /// time of the check.
    pub async fn wait_follower_of(
        &self,
        i: usize,
        leader: usize,
        timeout: Duration,
    ) -> Result<NodeStatus, DemoError> {
        let deadline = Instant::now() + timeout;
        let lid = self.nodes[leader].id.clone();
        let mut last = None;
        loop {
            if let Some(s) = self.status(i).await {
                if s.role == "follower"
                    && s.leader_id.as_deref() == Some(lid.as_str())
                    && s.connected
                    && s.state == "streaming"
                {
                    return Ok(s);
                }
                last = Some(s);
            }
            if Instant::now() >= deadline {
                return Err(DemoError::Timeout(format!(
                    "{} did not become a streaming follower of {lid} within {timeout:?} (last status: {last:?})",
                    self.nodes[i].id
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until every node in `among` reports the same write LSN and apply LSN
    /// (nothing being written meanwhile); returns that LSN.
    pub async fn wait_converged(
        &self,
        among: &[usize],
        timeout: Duration,
    ) -> Result<u64, DemoError> {
        let deadline = Instant::now() + timeout;
        let mut last = Vec::new();
        loop {
            let mut st = Vec::new();
            for &i in among {
                st.push(self.status(i).await);
            }
            if st.iter().all(Option::is_some) {
                let st: Vec<NodeStatus> = st.into_iter().flatten().collect();
                let w = st[0].write_lsn;
                if st.iter().all(|s| s.write_lsn == w && s.apply_lsn == w) {
                    return Ok(w);
                }
                last = st
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {} write {} apply {}",
                            s.node_id,
                            s.role,
                            wal::Lsn(s.write_lsn),
                            wal::Lsn(s.apply_lsn)
                        )
                    })
                    .collect();
            }
            if Instant::now() >= deadline {
                return Err(DemoError::Timeout(format!(
                    "nodes did not converge within {timeout:?}: {}",
                    last.join("; ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Node `i`'s committed log as `GET /v1/log` returns it, one canonical line
    /// per record (`lsn term kind key value`), read page by page.
    pub async fn committed_log(&self, i: usize) -> Result<Vec<String>, DemoError> {
        let mut out = Vec::new();
        let mut from = String::from("0");
        loop {
            let url = format!(
                "http://{}/v1/log?from={from}&limit=10000",
                self.nodes[i].http
            );
            let r = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(15))
                .send()
                .await
                .map_err(|e| DemoError::Failed(format!("GET {url}: {e}")))?;
            if !r.status().is_success() {
                return Err(DemoError::Failed(format!("GET {url}: HTTP {}", r.status())));
            }
            let text = r
                .text()
                .await
                .map_err(|e| DemoError::Failed(format!("GET {url}: {e}")))?;
            let mut next = None;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: Value = serde_json::from_str(line)
                    .map_err(|e| DemoError::Failed(format!("GET {url}: bad line {line:?}: {e}")))?;
                out.push(format!(
                    "{} {} {} {} {}",
                    v["lsn"].as_str().unwrap_or("?"),
                    v["term"],
                    v["kind"].as_str().unwrap_or("?"),
                    v["key"].as_str().unwrap_or("-"),
                    v["value_b64"].as_str().unwrap_or("-")
                ));
                next = v["end"].as_str().map(str::to_string);
            }
            match next {
                Some(n) => from = n,
                None => return Ok(out),
            }
        }
    }

    /// Check that every node in `among` holds the same committed log (record by
    /// record: LSN, term, kind, key, value); returns the number of records.
    pub async fn same_committed_log(&self, among: &[usize]) -> Result<usize, DemoError> {
        let mut first: Option<(usize, Vec<String>)> = None;
        for &i in among {
            let log = self.committed_log(i).await?;
            match &first {
                None => first = Some((i, log)),
                Some((j, reference)) => {
                    if *reference != log {
                        let at = reference
                            .iter()
                            .zip(log.iter())
                            .position(|(a, b)| a != b)
                            .unwrap_or(reference.len().min(log.len()));
                        return Err(DemoError::Failed(format!(
                            "{} and {} hold different committed logs ({} and {} records); first difference at record {at}: {:?} vs {:?}",
                            self.nodes[*j].id,
                            self.nodes[i].id,
                            reference.len(),
                            log.len(),
                            reference.get(at),
                            log.get(at)
                        )));
                    }
                }
            }
        }
        Ok(first.map(|(_, l)| l.len()).unwrap_or(0))
    }

    /// POST an admin command (`path` like `/v1/admin/pause`) to node `i`, with a
    /// generous timeout; returns (HTTP status, JSON body).
    pub async fn admin(
        &self,
        i: usize,
        path: &str,
        body: Value,
    ) -> Result<(u16, Value), DemoError> {
        let url = format!("http://{}{}", self.nodes[i].http, path);
        let r = self
            .http
            .post(&url)
            .timeout(Duration::from_secs(15))
            .json(&body)
            .send()
            .await
            .map_err(|e| DemoError::Failed(format!("POST {url}: {e}")))?;
        let code = r.status().as_u16();
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok((code, v))
    }

    /// Check every acknowledged write on node `i`: `GET /v1/kv/{key}?min_lsn=…&wait=10s`
    /// with `min_lsn` = the largest acknowledged LSN, 32 requests at a time.
    pub async fn verify(&self, i: usize, acks: &[Ack]) -> VerifyReport {
        let min_lsn = acks.iter().map(|a| a.lsn).max().unwrap_or(0);
        let client = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .tcp_nodelay(true)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                return VerifyReport {
                    checked: acks.len(),
                    missing: acks.len(),
                    examples: vec![format!("cannot build an HTTP client: {e}")],
                    ..VerifyReport::default()
                }
            }
        };
        let http = self.nodes[i].http;
        let lsn = wal::Lsn(min_lsn).to_string();
        let results: Vec<(bool, bool, String)> = futures::stream::iter(acks.iter())
            .map(|a| {
                let url = format!("http://{http}/v1/kv/{}?min_lsn={lsn}&wait=10s", a.key);
                let client = &client;
                async move {
                    match client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => match r.bytes().await {
                            Ok(b) if b.as_ref() == a.value.as_bytes() => {
                                (true, true, String::new())
                            }
                            Ok(b) => (
                                true,
                                false,
                                format!(
                                    "{}: expected {:?}, got {:?}",
                                    a.key,
                                    a.value,
                                    String::from_utf8_lossy(&b)
                                ),
                            ),
                            Err(e) => (false, false, format!("{}: {e}", a.key)),
                        },
                        Ok(r) => (
                            false,
                            false,
                            format!(
                                "{} (acknowledged at {} in term {}): HTTP {}",
                                a.key,
                                wal::Lsn(a.lsn),
                                a.term,
                                r.status()
                            ),
                        ),
                        Err(e) => (false, false, format!("{}: {e}", a.key)),
                    }
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let mut rep = VerifyReport {
            checked: acks.len(),
            ..VerifyReport::default()
        };
        for (present, right, msg) in results {
            if !present {
                rep.missing += 1;
            } else if !right {
                rep.wrong += 1;
            }
            if !msg.is_empty() && rep.examples.len() < 5 {
                rep.examples.push(msg);
            }
        }
        rep
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The result of [`LocalCluster::verify`] on one node.
#[derive(Debug, Default, Clone)]
pub struct VerifyReport {
    /// Keys checked.
    pub checked: usize,
    /// Keys absent (or not readable).
    pub missing: usize,
    /// Keys present with another value.
    pub wrong: usize,
    /// Up to 5 problems, for the operator.
    pub examples: Vec<String>,
}

impl VerifyReport {
    /// Nothing missing, nothing wrong.
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.wrong == 0
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// One acknowledged write.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The key.
    pub key: String,
    /// The value written.
    pub value: String,
    /// The LSN returned (end of the record).
    pub lsn: u64,
    /// The term returned.
    pub term: u64,
    /// Index of the node that answered.
    pub node: usize,
    /// When the answer arrived.
    pub at: Instant,
}

/// Options of a [`Writer`].
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Concurrent HTTP clients (each a closed loop on a keep-alive connection).
    pub clients: usize,
    /// Per-request time limit (a stopped node never answers).
    pub request_timeout: Duration,
    /// Key prefix (keys are `{prefix}-{client}-{seq}`).
    pub prefix: String,
    /// Pause between retries after a failed attempt.
    pub retry_pause: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            clients: 4,
            request_timeout: Duration::from_secs(2),
            prefix: "key".into(),
            retry_pause: Duration::from_millis(3),
        }
    }
}

/// Writes unique keys through the HTTP API (`PUT /v1/kv/{key}`) from several
/// closed-loop clients, and records every acknowledged write.
///
/// A write that fails in any way (refused connection, 307, 503, 504, timeout) is
/// retried, same key and value, on the node a redirect names or on the next node,
/// until it is acknowledged; so only 200 answers count as acknowledged.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    failures: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn parse_location(loc: &str, targets: &[SocketAddr]) -> Option<usize> {
    let rest = loc.strip_prefix("http://")?;
    let hostport = rest.split('/').next()?;
    let addr: SocketAddr = hostport.parse().ok()?;
    targets.iter().position(|t| *t == addr)
}

impl Writer {
    /// Start writing to the cluster whose nodes' HTTP addresses are `targets`,
    /// starting with `leader_hint`.
    pub fn start(targets: Vec<SocketAddr>, leader_hint: usize, opts: WriterOptions) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicU64::new(0));
        let hint = Arc::new(AtomicUsize::new(leader_hint));
        let targets = Arc::new(targets);
        let mut tasks = Vec::new();
        for w in 0..opts.clients.max(1) {
            let (stop, acks, failures, hint, targets, opts) = (
                stop.clone(),
                acks.clone(),
                failures.clone(),
                hint.clone(),
                targets.clone(),
                opts.clone(),
            );
            tasks.push(tokio::spawn(async move {
                writer_loop(w, stop, acks, failures, hint, targets, opts).await;
            }));
        }
        Writer {
            stop,
            acks,
            failures,
            tasks,
        }
    }

    /// Number of acknowledged writes so far.
    pub fn acked(&self) -> usize {
        self.acks.lock().len()
    }

    /// Failed attempts so far (each was retried).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// A copy of the acknowledged writes so far.
    pub fn snapshot(&self) -> Vec<Ack> {
        self.acks.lock().clone()
    }

    /// Wait (polling every 2 ms) for an acknowledged write matching `pred`;
    /// returns the earliest matching one.
    pub async fn wait_ack(&self, pred: impl Fn(&Ack) -> bool, timeout: Duration) -> Option<Ack> {
        let deadline = Instant::now() + timeout;
        let mut from = 0;
        loop {
            {
                let acks = self.acks.lock();
                let found = acks[from..].iter().filter(|a| pred(a)).min_by_key(|a| a.at);
                if let Some(a) = found {
                    return Some(a.clone());
                }
                from = acks.len();
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stop writing: in-flight requests finish (or hit their time limit); returns
    /// every acknowledged write.
    pub async fn stop(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        std::mem::take(&mut *self.acks.lock())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn writer_loop(
    w: usize,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    failures: Arc<AtomicU64>,
    hint: Arc<AtomicUsize>,
    targets: Arc<Vec<SocketAddr>>,
    opts: WriterOptions,
) {
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(opts.request_timeout)
        .tcp_nodelay(true)
        .build()
    {
        Ok(c) => c,
        Err(_) => return,
    };
    let n = targets.len();
    let mut target = hint.load(Ordering::Relaxed) % n;
    let mut seq: u64 = 0;
    'outer: while !stop.load(Ordering::Relaxed) {
        let key = format!("{}-{w}-{seq}", opts.prefix);
        let value = format!("value-{w}-{seq}");
        loop {
            if stop.load(Ordering::Relaxed) {
                break 'outer;
            }
            let url = format!("http://{}/v1/kv/{key}", targets[target]);
            let r = client.put(&url).body(value.clone()).send().await;
            let mut redirected = None;
            match r {
                Ok(resp) if resp.status().as_u16() == 200 => {
                    let at = Instant::now();
                    if let Ok(v) = resp.json::<Value>().await {
                        let lsn = v["lsn"].as_str().and_then(|s| s.parse::<wal::Lsn>().ok());
                        if let (Some(lsn), Some(term)) = (lsn, v["term"].as_u64()) {
                            acks.lock().push(Ack {
                                key: key.clone(),
                                value: value.clone(),
                                lsn: lsn.0,
                                term,
                                node: target,
                                at,
                            });
                            hint.store(target, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                Ok(resp) if resp.status().as_u16() == 307 => {
                    redirected = resp
                        .headers()
                        .get("location")
                        .and_then(|l| l.to_str().ok())
                        .and_then(|l| parse_location(l, &targets));
                }
                _ => {}
            }
            failures.fetch_add(1, Ordering::Relaxed);
            let h = hint.load(Ordering::Relaxed) % n;
            target = match redirected {
                Some(t) if t != target => t,
                _ if h != target => h,
                _ => (target + 1) % n,
            };
            tokio::time::sleep(opts.retry_pause).await;
        }
        seq += 1;
    }
}

/// Median and worst of a list of durations in milliseconds.
pub fn median_worst(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let mid = s.len() / 2;
    let med = if s.len().is_multiple_of(2) {
        (s[mid - 1] + s[mid]) / 2.0
    } else {
        s[mid]
    };
    (med, s[s.len() - 1])
}

/// The longest stretch without an acknowledged write inside `[from, to]`
/// (measured between ack arrival times, and from `from` to the first ack).
pub fn longest_gap(acks: &[Ack], from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = acks
        .iter()
        .map(|a| a.at)
        .filter(|t| *t >= from && *t <= to)
        .collect();
    times.sort();
    let mut prev = from;
    let mut gap = Duration::ZERO;
    for t in times {
        gap = gap.max(t - prev);
        prev = t;
    }
    gap.max(to.saturating_duration_since(prev))
}

// ---------------------------------------------------------------------------
// The demo itself.

struct Clock(Instant);

impl Clock {
    fn say(&self, msg: impl AsRef<str>) {
        println!(
            "[{:>6.2}s] {}",
            self.0.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }
}

fn thousands(n: usize) -> String {
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

/// Run the demo; returns the exit status (0: no acknowledged write lost, every
/// node converged; 1: otherwise or on any failure, the directory is then kept
/// for the logs; 2: bad arguments; 130/143: interrupted by SIGINT/SIGTERM).
/// Every child node is stopped and reaped before it returns, on every path.
pub async fn run(nodes: usize, dir: Option<PathBuf>, keep: bool) -> i32 {
    if !(3..=9).contains(&nodes) {
        eprintln!("walship demo: --nodes must be between 3 and 9 (a failover needs a majority of survivors); got {nodes}");
        return 2;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("walship demo: cannot find the walship executable: {e}");
            return 1;
        }
    };
    let tmp = {
        let mut b = tempfile::Builder::new();
        b.prefix("walship-demo-");
        match &dir {
            Some(d) => {
                if let Err(e) = std::fs::create_dir_all(d) {
                    eprintln!("walship demo: cannot create {}: {e}", d.display());
                    return 1;
                }
                b.tempdir_in(d)
            }
            None => b.tempdir(),
        }
    };
    let tmp = match tmp {
        Ok(t) => t,
        Err(e) => {
            eprintln!("walship demo: cannot create a temporary directory: {e}");
            return 1;
        }
    };
    let path = tmp.path().to_path_buf();
    let clock = Clock(Instant::now());
    let mut cluster: Option<LocalCluster> = None;
    let code = tokio::select! {
        r = demo(&exe, &path, nodes, &clock, &mut cluster) => match r {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                clock.say(format!("demo failed: {e}"));
                1
            }
        },
        _ = tokio::signal::ctrl_c() => {
            clock.say("interrupted (Ctrl-C): stopping every node");
            130
        }
        _ = terminated() => {
            clock.say("terminated (SIGTERM): stopping every node");
            143
        }
    };
    if let Some(mut c) = cluster.take() {
        if code < 128 {
            c.shutdown(Duration::from_secs(3)).await;
            clock.say(format!(
                "all {nodes} nodes stopped; nothing is left running"
            ));
        }
        drop(c); // kills and reaps anything left
    }
    if keep || code == 1 {
        let p = tmp.keep();
        println!(
            "data, configs and node logs kept in {}{}",
            p.display(),
            if keep {
                ""
            } else {
                " (kept because the demo failed)"
            }
        );
    } else if let Err(e) = tmp.close() {
        eprintln!("walship demo: cannot remove {}: {e}", path.display());
    }
    code
}

/// Resolves on SIGTERM (never, if the handler cannot be installed).
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

async fn demo(
    exe: &Path,
    dir: &Path,
    nodes: usize,
    clock: &Clock,
    slot: &mut Option<LocalCluster>,
) -> Result<bool, DemoError> {
    let spec = ClusterSpec::fast(nodes);
    println!("walship demo: a {nodes}-node cluster on loopback, one process per node");
    println!(
        "  failover timing: heartbeat {}, election timeout {} (fast settings for the demo; the defaults are 100ms / 1s)",
        dur(spec.heartbeat),
        dur(spec.election_timeout)
    );
    println!("  replication: quorum mode, ack = remote_flush (a write is acknowledged once a majority has flushed it)");
    println!("  configs, data and logs: {}", dir.display());
    println!();

    clock.say(format!("starting {nodes} nodes ..."));
    let cluster = LocalCluster::launch(exe, dir, spec.clone()).await?;
    let cluster = slot.insert(cluster);
    for i in 0..cluster.len() {
        let n = cluster.node(i);
        clock.say(format!(
            "  {} (pid {}): binary {}, http {}, log {}",
            n.id,
            cluster.pid(i).unwrap_or(0),
            n.addr,
            n.http,
            n.log.display()
        ));
    }
    let all: Vec<usize> = (0..nodes).collect();
    clock.say("waiting for the nodes to elect a leader ...");
    let (leader, term) = cluster
        .wait_leader(&all, 1, Duration::from_secs(20))
        .await?;
    let lid = cluster.node(leader).id.clone();
    clock.say(format!(
        "{lid} is the leader (term {term}); the others follow it"
    ));

    let write_for = Duration::from_secs(2);
    let wopts = WriterOptions {
        clients: 4,
        request_timeout: Duration::from_secs(2),
        prefix: "demo".into(),
        retry_pause: Duration::from_millis(3),
    };
    let writer = Writer::start(cluster.http_addrs(), leader, wopts.clone());
    clock.say(format!(
        "writing unique keys through {} HTTP clients (keep-alive), every acknowledged key recorded ...",
        wopts.clients
    ));
    tokio::time::sleep(write_for).await;
    let before = writer.snapshot();
    let last_lsn = before.iter().map(|a| a.lsn).max().unwrap_or(0);
    clock.say(format!(
        "{} writes acknowledged so far (largest LSN {})",
        thousands(before.len()),
        wal::Lsn(last_lsn)
    ));
    if before.is_empty() {
        return Err(DemoError::Failed(format!(
            "no write was acknowledged in {write_for:?}; see the logs in {}",
            dir.display()
        )));
    }

    let pid = cluster.pid(leader).unwrap_or(0);
    let t_kill = cluster.kill9(leader)?;
    clock.say(format!(
        "kill -9 {lid} (pid {pid}), the leader, with writes in flight"
    ));
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let first = writer
        .wait_ack(|a| a.term > term, Duration::from_secs(20))
        .await
        .ok_or_else(|| {
            DemoError::Timeout("no write was acknowledged by a new leader within 20 s".into())
        })?;
    let failover = first.at.saturating_duration_since(t_kill);
    let new_leader = first.node;
    let nid = cluster.node(new_leader).id.clone();
    clock.say(format!(
        "{nid} won the election (term {}); first write acknowledged by {nid} {} ms after the kill",
        first.term,
        failover.as_millis()
    ));
    let _ = survivors;

    tokio::time::sleep(Duration::from_secs(1)).await;
    clock.say(format!(
        "{} writes acknowledged so far; restarting {lid}, the old leader ...",
        thousands(writer.acked())
    ));
    let pid = cluster.start(leader)?;
    clock.say(format!("  {lid} started again (pid {pid})"));
    let st = cluster
        .wait_follower_of(leader, new_leader, Duration::from_secs(20))
        .await;
    // Another election may have happened meanwhile (a slow machine): follow whoever leads.
    let st = match st {
        Ok(s) => s,
        Err(e) => {
            let (l, _) = cluster
                .wait_leader(&all, 1, Duration::from_secs(10))
                .await?;
            if l == leader {
                return Err(e);
            }
            cluster
                .wait_follower_of(leader, l, Duration::from_secs(20))
                .await?
        }
    };
    clock.say(format!(
        "{lid} rejoined as a follower of {} (term {}, streaming)",
        st.leader_id.as_deref().unwrap_or("?"),
        st.term
    ));
    let cut = cluster.log_lines(leader, "divergent WAL tail");
    if cut.is_empty() {
        clock.say(format!(
            "  {lid} had no divergent tail: its log was a prefix of the new leader's, nothing to cut"
        ));
    } else {
        for l in &cut {
            clock.say(format!("  {lid} log: {}", l.trim()));
        }
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let acks = writer.stop().await;
    let max_lsn = acks.iter().map(|a| a.lsn).max().unwrap_or(0);
    clock.say(format!(
        "writes stopped: {} acknowledged in all (largest LSN {})",
        thousands(acks.len()),
        wal::Lsn(max_lsn)
    ));

    clock.say(format!(
        "checking every acknowledged key on every node (GET /v1/kv/KEY?min_lsn={}&wait=10s) ...",
        wal::Lsn(max_lsn)
    ));
    let mut lost = 0usize;
    let mut wrong = 0usize;
    for i in 0..nodes {
        let rep = cluster.verify(i, &acks).await;
        clock.say(format!(
            "  {}: {}/{} present with the right value{}",
            cluster.node(i).id,
            thousands(rep.checked - rep.missing - rep.wrong),
            thousands(rep.checked),
            if rep.ok() {
                String::new()
            } else {
                format!(
                    " — {} missing, {} wrong, e.g. {}",
                    rep.missing,
                    rep.wrong,
                    rep.examples.join("; ")
                )
            }
        ));
        lost = lost.max(rep.missing);
        wrong = wrong.max(rep.wrong);
    }
    let converged = cluster.wait_converged(&all, Duration::from_secs(10)).await;
    let converged = match converged {
        Ok(lsn) => cluster.same_committed_log(&all).await.map(|n| (lsn, n)),
        Err(e) => Err(e),
    };
    match &converged {
        Ok((lsn, n)) => clock.say(format!(
            "all {nodes} nodes hold the same committed log ({} records up to {}, compared record by record) and have applied it",
            thousands(*n),
            wal::Lsn(*lsn)
        )),
        Err(e) => clock.say(format!("the nodes did not converge: {e}")),
    }

    println!();
    println!("summary");
    println!(
        "  failover time (kill -9 of the leader -> first write acknowledged by the new leader): {} ms",
        failover.as_millis()
    );
    println!("  new leader: {nid} (term {})", first.term);
    println!("  keys acknowledged: {}", thousands(acks.len()));
    println!(
        "  keys lost: {lost}{}",
        if wrong > 0 {
            format!(" (and {wrong} with a wrong value)")
        } else {
            String::new()
        }
    );
    println!(
        "  nodes converged: {}",
        match &converged {
            Ok(_) => format!("{nodes}/{nodes}"),
            Err(_) => "no".to_string(),
        }
    );
    println!();
    Ok(lost == 0 && wrong == 0 && converged.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ansi() {
        assert_eq!(strip_ansi("\u{1b}[2mx\u{1b}[0m y"), "x y");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn median_and_worst() {
        assert_eq!(median_worst(&[3.0, 1.0, 2.0]), (2.0, 3.0));
        assert_eq!(median_worst(&[4.0, 1.0, 2.0, 3.0]), (2.5, 4.0));
    }

    #[test]
    fn location_parsing() {
        let t: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        assert_eq!(parse_location("http://127.0.0.1:2/v1/kv/a", &t), Some(1));
        assert_eq!(parse_location("http://127.0.0.1:3/v1/kv/a", &t), None);
    }

    #[test]
    fn gaps() {
        let t0 = Instant::now();
        let mk = |ms: u64| Ack {
            key: String::new(),
            value: String::new(),
            lsn: 0,
            term: 0,
            node: 0,
            at: t0 + Duration::from_millis(ms),
        };
        let acks = vec![mk(10), mk(20), mk(70), mk(80)];
        let g = longest_gap(&acks, t0, t0 + Duration::from_millis(90));
        assert_eq!(g, Duration::from_millis(50));
    }
}
