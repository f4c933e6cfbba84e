//! Starting and stopping a node: open the data directory, recover the WAL,
//! load the vote state, bind the listeners, spawn the tasks.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use receiver::state::StateMachine;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::{applier, checkpointer, election, flusher, listener, RoleInfo, Shared};
use crate::config::Config;
use crate::metrics::Metrics;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be created or secured.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The WAL could not be opened (damage is named with file and offset).
    #[error("WAL: {0}")]
    Wal(#[from] wal::WalError),
    /// The vote state could not be read.
    #[error("vote state: {0}")]
    Vote(#[from] failover::FailoverError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// Config key.
        key: &'static str,
        /// Address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The checkpoints could not be read or loaded (a damaged checkpoint is skipped,
    /// not an error).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The replication settings cannot be resolved.
    #[error("config key `replication.standbys`: {0}")]
    Standbys(String),
    /// An existing data directory is open to other users (or owned by
    /// another user); the node refuses to start, as PostgreSQL does.
    #[error("data directory {path}: {reason}")]
    DataDirUnsafe {
        /// The directory.
        path: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The TLS files of `[security]` cannot be used.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A running node.
pub struct NodeHandle {
    /// Shared state (for the HTTP layer and tests).
    pub shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    flusher: Option<std::thread::JoinHandle<()>>,
    /// The bound binary address.
    pub listen_addr: std::net::SocketAddr,
    /// The bound HTTP address.
    pub http_addr: std::net::SocketAddr,
    failed_rx: watch::Receiver<Option<String>>,
}

/// Create the data directory 0700 if missing. An existing one must be owned
/// by this user and closed to group and others (mode 0700): it holds the WAL,
/// the state and the vote, which no other user may read or change. Anything
/// else is refused at start with the fix (`chmod 700 DIR`), as PostgreSQL does;
/// walship never changes the mode of a directory it did not create.
pub fn prepare_data_dir(dir: &Path) -> Result<(), StartError> {
    let err = |source| StartError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        match std::fs::metadata(dir) {
            Ok(meta) => {
                if !meta.is_dir() {
                    return Err(StartError::DataDirUnsafe {
                        path: dir.display().to_string(),
                        reason: "exists and is not a directory".into(),
                    });
                }
                // SAFETY: geteuid has no preconditions and cannot fail.
                let me = unsafe { libc::geteuid() };
                if meta.uid() != me {
                    return Err(StartError::DataDirUnsafe {
                        path: dir.display().to_string(),
                        reason: format!(
                            "owned by uid {}, but walship runs as uid {me}; it must own its data directory",
                            meta.uid()
                        ),
                    });
                }
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(StartError::DataDirUnsafe {
                        path: dir.display().to_string(),
                        reason: format!(
                            "has mode {mode:04o}: group or others may access it; it must be 0700 \
                             (run `chmod 700 {}`)",
                            dir.display()
                        ),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Parents as usual; the directory itself 0700 from the start
                // (no window in which it is open), then chmod against the umask.
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(err)?;
                }
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(dir)
                    .map_err(err)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(err)?;
            }
            Err(e) => return Err(err(e)),
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(err)?;
    Ok(())
}

/// Open everything and start serving. Must run inside a multi-threaded tokio runtime.
pub async fn start(cfg: Config) -> Result<NodeHandle, StartError> {
    prepare_data_dir(&cfg.data_dir)?;
    let tls = match &cfg.security.tls {
        Some(files) => Some(Arc::new(crate::tls::NodeTls::new(files, &cfg.node_id)?)),
        None => None,
    };
    // Validate the standby list now so that a typo is a start-up error naming the key.
    {
        let members: Vec<String> = cfg.members.iter().map(|m| m.id.clone()).collect();
        let mode = match cfg.replication.mode {
            crate::config::Mode::Async => shipper::ReplicationMode::Async,
            crate::config::Mode::Sync => shipper::ReplicationMode::Sync,
            crate::config::Mode::Quorum => shipper::ReplicationMode::Quorum,
        };
        // A node with priority 0 never leads, so its own leader policy does not
        // matter (e.g. `FIRST 1 (n2)` shared by every node, n2 never promoted):
        // check the list as a member that may lead would resolve it.
        let as_leader = if cfg.me().priority > 0 {
            cfg.node_id.as_str()
        } else {
            cfg.members
                .iter()
                .find(|m| m.priority > 0)
                .map(|m| m.id.as_str())
                .unwrap_or(cfg.node_id.as_str())
        };
        shipper::resolve_policy(
            mode,
            cfg.replication.standbys.as_deref(),
            as_leader,
            &members,
        )
        .map_err(|e| StartError::Standbys(e.to_string()))?;
    }
    let wal_dir = cfg.data_dir.join("wal");
    let opts = wal::WalOptions {
        segment_size: cfg.wal.segment_size,
        ..wal::WalOptions::default()
    };
    let dir = wal_dir.clone();
    let (wal, report) = tokio::task::spawn_blocking(move || wal::Wal::open(&dir, opts))
        .await
        .map_err(|e| StartError::Standbys(format!("WAL open task failed: {e}")))??;
    tracing::info!(
        dir = %wal_dir.display(),
        first = %report.first_lsn,
        end = %report.write_lsn,
        records = report.records,
        segments = report.segments,
        "WAL opened and every retained record checked"
    );
    let wal = Arc::new(wal);
    let started = std::time::Instant::now();
    let ckpt_dir = receiver::checkpoint::dir_in(&cfg.data_dir);
    let loaded = {
        let wal = wal.clone();
        let dir = ckpt_dir.clone();
        tokio::task::spawn_blocking(move || checkpointer::load_at_start(&dir, &wal))
            .await
            .map_err(|e| StartError::Checkpoint(format!("checkpoint load task failed: {e}")))?
            .map_err(|e| StartError::Checkpoint(e.to_string()))?
    };
    let startup = checkpointer::StartupReplay {
        checkpoint_lsn: loaded.meta.as_ref().map(|m| m.lsn.0),
        target_lsn: report.write_lsn.0,
        started: Some(started),
        ..Default::default()
    };
    match &loaded.meta {
        Some(m) => tracing::info!(
            checkpoint = %m.lsn,
            term = m.term,
            entries = m.entries,
            bytes = m.len,
            load_ms = started.elapsed().as_millis() as u64,
            replay_from = %m.lsn,
            replay_to = %report.write_lsn,
            "checkpoint loaded; only the WAL after it is replayed"
        ),
        None if !loaded.needs_rebuild => tracing::info!(
            replay_to = %report.write_lsn,
            "no checkpoint; the key-value state is replayed from the start of the WAL"
        ),
        None => {}
    }
    let initial_applied = loaded.kv.applied_lsn();
    let store = failover::VoteStore::open(cfg.data_dir.join("vote"))?;
    let persisted = store.load()?;

    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| StartError::Bind {
            key: "listen",
            addr: cfg.listen,
            source,
        })?;
    let http_listener =
        TcpListener::bind(cfg.http_listen)
            .await
            .map_err(|source| StartError::Bind {
                key: "http_listen",
                addr: cfg.http_listen,
                source,
            })?;
    let listen_addr = listener.local_addr().unwrap_or(cfg.listen);
    let http_addr = http_listener.local_addr().unwrap_or(cfg.http_listen);

    let end = wal.write_lsn().0;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (failover_tx, failover_rx) = mpsc::channel(1024);
    let (written_tx, written_rx) = watch::channel(end);
    let (flush_tx, _) = watch::channel(wal.flush_lsn().0.min(end));
    let (commit_tx, _) = watch::channel(0u64);
    let (applied_tx, _) = watch::channel(initial_applied);
    let (role_tx, _) = watch::channel(RoleInfo::starting(persisted.term, persisted.paused));
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        wal: wal.clone(),
        kv: parking_lot::RwLock::new(loaded.kv),
        written_tx,
        flush_tx,
        commit_tx,
        applied_tx,
        role_tx,
        leader: Mutex::new(None),
        follower: Mutex::new(super::FollowerView {
            needs_rebuild: loaded.needs_rebuild,
            ..Default::default()
        }),
        metrics: Metrics::new(),
        shutdown: shutdown_rx,
        failover_tx,
        follower_states: Mutex::new(HashMap::new()),
        receiver_task: tokio::sync::Mutex::new(None),
        rebuild: super::rebuild::RebuildState::new(),
        retention_pins: super::pins::RetentionPins::new(),
        ckpt: checkpointer::CheckpointState::new(ckpt_dir, loaded.meta.clone(), startup),
        wal_failure: watch::channel(None).0,
        term_start_pending: Mutex::new(None),
        tls,
        refusal_log: crate::refusal::RefusalLog::default(),
    });
    // An interrupted rebuild runs again (its state replaces the one loaded above).
    super::rebuild::detect_interrupted(&shared);
    if let Some(m) = &loaded.meta {
        shared.metrics.checkpoint_lsn.set(m.lsn.0 as i64);
        shared.metrics.checkpoint_bytes.set(m.len as i64);
    }

    let flusher = flusher::spawn(
        wal.clone(),
        cfg.wal.sync,
        written_rx,
        shared.flush_tx.clone(),
        shared.metrics.wal_fsync_duration_seconds.clone(),
        shared.shutdown.clone(),
        NodeFlusherEvents(Arc::downgrade(&shared)),
    )
    .map_err(|source| StartError::DataDir {
        path: "wal flusher thread".into(),
        source,
    })?;

    let core = failover::Node::new(
        election::core_config(&shared),
        persisted,
        election::log_position(&shared),
        0,
    )?;
    let (failed_tx, failed_rx) = watch::channel(None);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(applier::run(shared.clone())));
    tasks.push(tokio::spawn(listener::run(shared.clone(), listener)));
    tasks.push(tokio::spawn(crate::http::serve(
        shared.clone(),
        http_listener,
    )));
    {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = election::run(shared, store, core, failover_rx).await {
                let _ = failed_tx.send(Some(format!("vote store failed: {e}")));
            }
        }));
    }
    tasks.push(tokio::spawn(super::sampler::run(shared.clone())));
    tasks.push(tokio::spawn(super::rebuild::supervise(shared.clone())));
    tasks.push(tokio::spawn(checkpointer::run(shared.clone())));
    tasks.push(tokio::spawn(super::retention::run(shared.clone())));
    tracing::info!(
        node = %cfg.node_id,
        cluster = %cfg.cluster_id,
        listen = %listen_addr,
        http = %http_addr,
        members = cfg.members.len(),
        "walship node started"
    );
    Ok(NodeHandle {
        shared,
        shutdown_tx,
        tasks,
        flusher: Some(flusher),
        listen_addr,
        http_addr,
        failed_rx,
    })
}

impl NodeHandle {
    /// Resolves when the node failed and must stop (a vote store error).
    pub async fn failed(&mut self) -> String {
        loop {
            if let Some(e) = self.failed_rx.borrow().clone() {
                return e;
            }
            if self.failed_rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Clean shutdown: stop accepting, step down, flush the WAL, stop all tasks.
    ///
    /// Returns once every task of the node let go of the WAL (so the data
    /// directory can be opened again, e.g. by a restart in the same process),
    /// or after 10 s with a warning naming the directory.
    pub async fn shutdown(self) {
        self.stop(true).await
    }

    /// Like [`NodeHandle::shutdown`] but without the shutdown checkpoint: the data
    /// directory is left as a crash after the last flush would leave it (the next
    /// start replays the WAL after the previous checkpoint). For tests and tools.
    pub async fn stop_without_checkpoint(self) {
        self.stop(false).await
    }

    async fn stop(mut self, checkpoint: bool) {
        tracing::info!(node = %self.shared.cfg.node_id, "shutting down: stopping tasks and flushing the WAL");
        if let Some(l) = self.shared.leader.lock().take() {
            l.gate.fail_all("the leader is shutting down");
            let _ = l.stop.send(true);
        }
        let _ = self.shutdown_tx.send(true);
        super::replica::stop(&self.shared).await;
        // Every task watches the shutdown signal; give each a moment to finish
        // on its own (the HTTP server closes its connections gracefully), then
        // abort what is left.
        for mut t in self.tasks.drain(..) {
            if tokio::time::timeout(std::time::Duration::from_secs(2), &mut t)
                .await
                .is_err()
            {
                t.abort();
                let _ = t.await;
            }
        }
        let wal = self.shared.wal.clone();
        let end = wal.write_lsn();
        let r = tokio::task::spawn_blocking(move || wal.flush(end)).await;
        match r {
            Ok(Ok(_)) => tracing::info!(flushed = %end, "WAL flushed; node stopped"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "final WAL flush failed; recovery at next start keeps what is durable")
            }
            Err(_) => {}
        }
        // The shutdown checkpoint (as PostgreSQL's): the next start replays nothing
        // that was applied now.
        if checkpoint && self.shared.wal_failure().is_some() {
            tracing::warn!("the WAL failed: no shutdown checkpoint (the next start recovers from what is durable)");
        } else if checkpoint {
            match checkpointer::checkpoint_now(&self.shared, "shutdown").await {
                Ok(Some(m)) => tracing::info!(lsn = %m.lsn, "shutdown checkpoint written"),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "shutdown checkpoint failed; the next start replays the WAL from the previous checkpoint")
                }
            }
        }
        // The shutdown signal ends the flusher thread.
        let flusher = self.flusher.take();
        let wal_dir = self.shared.wal.dir().to_path_buf();
        // Every `Wal` clone and WAL reader keeps the directory lock: the watch
        // covers them all.
        let lock = self.shared.wal.lock_watch();
        drop(self);
        if let Some(f) = flusher {
            let _ = tokio::task::spawn_blocking(move || f.join()).await;
        }
        // Short-lived tasks (replication sessions, connection handlers, blocking
        // applies holding a WAL reader) end on the shutdown signal; wait until the
        // last one dropped the WAL and the directory lock is released.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while lock.is_held() {
            if std::time::Instant::now() > deadline {
                tracing::warn!(dir = %wal_dir.display(), "some tasks still hold the WAL 10s after shutdown; it closes when they end");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// The node's side of the flusher: feed the leader's commit gate; react to a
/// failed WAL.
struct NodeFlusherEvents(std::sync::Weak<Shared>);

impl flusher::FlusherEvents for NodeFlusherEvents {
    fn flushed(&self, lsn: u64) {
        if let Some(s) = self.0.upgrade() {
            s.leader_flushed(lsn);
        }
    }
    fn failed(&self) {
        if let Some(s) = self.0.upgrade() {
            s.wal_failed("the WAL flusher");
        }
    }
}
