//! Follower rebuild: replace this node's state and WAL with the leader's newest
//! checkpoint and the WAL after it (as `pg_basebackup` + streaming), then stream
//! as usual.
//!
//! # When
//!
//! * `POST /v1/admin/rebuild` on this node (`walship rebuild`);
//! * automatically, with `replication.auto_rebuild = true`, when the leader
//!   answers `wal_not_available` (this node fell past the leader's retained WAL,
//!   or it is new and empty while the leader's WAL no longer starts at 0);
//! * always at start-up when the marker file says a rebuild was interrupted.
//!
//! # Steps (each logged; progress in `/status` under `rebuild`)
//!
//! | # | step | crash after it |
//! |---|---|---|
//! | 1 | write `<data_dir>/rebuild.marker` (fsynced): from now on reads answer 503 `rebuilding` and no receiver runs | marker found at start: the rebuild runs again |
//! | 2 | connect to the leader, `BaseBackupRequest` naming a partial copy kept from an interrupted attempt | as 1 |
//! | 3 | receive the checkpoint into `checkpoints/rebuild-<LSN>.partial` (contiguous offsets checked, CRC-32 computed on the way) | as 1; the next attempt resumes at the partial copy's length if the leader still serves that checkpoint |
//! | 4 | fsync the copy, compare its whole-file CRC-32 with `BaseBackupEnd` | as 1 (a bad copy is deleted and fetched again) |
//! | 5 | load it into a new `KvStore` (every field and the file's CRC checked: a state only from a whole valid file), then `checkpoint::install_verified` (rename, fsync dir; no second read of the file) | as 1 |
//! | 6 | under the state's write lock: reset the WAL to start empty at the checkpoint LSN with the leader's term history, swap in the loaded state | as 1 |
//! | 7 | remove the marker (fsync dir): the node is whole again | a normal restart: checkpoint + WAL after it |
//! | 8 | start the receiver from the checkpoint LSN; once it streams, close the transfer connection (which releases the leader's WAL pin) | — |
//!
//! Invariant: while the marker exists the node never serves reads nor appends
//! WAL from a stream, so no half-built state is ever visible. A failed attempt
//! is retried (backoff 1 s → 10 s) as long as the marker exists.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use proto::{FrameCodec, Hello, Message, Peer};
use receiver::checkpoint;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::codec::Framed;

use super::{replica, Role, Shared};

/// Marker file in the data directory while a rebuild runs.
pub const MARKER_FILE: &str = "rebuild.marker";
/// Prefix of a partial checkpoint copy in the checkpoint directory.
const PARTIAL_PREFIX: &str = "rebuild-";
/// Suffix of a partial checkpoint copy.
const PARTIAL_SUFFIX: &str = ".partial";
/// How long to wait for the next frame of a transfer.
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// Progress of the current (or last) rebuild, as `/status` shows it under `rebuild`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildProgress {
    /// `idle`, `starting`, `transferring`, `installing`, `loading`,
    /// `catching_up`, `done` or `failed` (retried).
    pub phase: &'static str,
    /// The leader the checkpoint comes from.
    pub leader: Option<String>,
    /// LSN of the checkpoint being installed (`X/X`).
    pub checkpoint_lsn: Option<String>,
    /// Checkpoint bytes held so far (including a resumed prefix).
    pub bytes_done: u64,
    /// Checkpoint size in bytes.
    pub bytes_total: u64,
    /// Where this attempt resumed an interrupted transfer (0: from scratch).
    pub resumed_from: u64,
    /// Attempts since the node started.
    pub attempts: u64,
    /// Rebuilds completed since the node started.
    pub completed: u64,
    /// Time of the current (or last) attempt so far, milliseconds.
    pub elapsed_ms: u64,
    /// Transfer rate of the current (or last) attempt, MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
}

/// The node's rebuild state (in [`Shared`]).
#[derive(Debug, Default)]
pub struct RebuildState {
    active: AtomicBool,
    /// Flushed WAL end this node had when its current (or last) rebuild began
    /// (0: none pending): until its flushed LSN is back there, it stays out of
    /// elections (see [`RebuildState::holds_out_of_elections`]).
    catch_up_floor: AtomicU64,
    requested: AtomicBool,
    progress: Mutex<RebuildProgress>,
    wake: Notify,
}

impl RebuildState {
    /// A state with no rebuild running.
    pub fn new() -> RebuildState {
        let s = RebuildState::default();
        s.progress.lock().phase = "idle";
        s
    }

    /// True while a rebuild runs (or must run again after an interruption):
    /// reads are refused and no receiver runs.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// True while this node must neither vote nor stand for election
    /// (`failover::Node::set_rebuilding`): during a rebuild, and after it until the
    /// node's flushed WAL (`flushed`) is back at the end it had flushed when the
    /// rebuild began.
    ///
    /// Why the second part: before the rebuild this node may have acknowledged
    /// (flushed) writes up to that end, and a leader may have counted it in the
    /// majority that committed them. The rebuilt WAL restarts at the leader's
    /// checkpoint, which can lie below; voting with that shorter log could elect a
    /// candidate that misses those committed writes (Raft's rule: a voter never
    /// forgets its log). Once the stream brought it back to that end, its position
    /// covers everything it ever acknowledged. (If the leader writes nothing more,
    /// the node stays out until it does; the other members still form the majority
    /// they formed without it.)
    pub fn holds_out_of_elections(&self, flushed: u64) -> bool {
        if self.is_active() {
            return true;
        }
        let floor = self.catch_up_floor.load(Ordering::Acquire);
        if floor == 0 {
            return false;
        }
        if flushed >= floor {
            // Caught up: clear it (a new rebuild sets a new floor first).
            let _ =
                self.catch_up_floor
                    .compare_exchange(floor, 0, Ordering::AcqRel, Ordering::Acquire);
            return false;
        }
        true
    }

    /// Remember the flushed end this node had before a rebuild (the highest wins).
    fn raise_floor(&self, flushed: u64) {
        self.catch_up_floor.fetch_max(flushed, Ordering::AcqRel);
    }

    /// A snapshot of the progress.
    pub fn progress(&self) -> RebuildProgress {
        self.progress.lock().clone()
    }

    /// `Err(message)` while reads must be refused (503 `rebuilding`).
    pub fn check_readable(&self) -> Result<(), String> {
        if self.is_active() {
            let p = self.progress();
            Err(format!(
                "this node is being rebuilt from the leader's checkpoint ({}, {} of {} bytes); it serves no reads until it is done",
                p.phase, p.bytes_done, p.bytes_total
            ))
        } else {
            Ok(())
        }
    }

    fn set_phase(&self, phase: &'static str) {
        self.progress.lock().phase = phase;
    }
}

/// Path of the marker file of a data directory.
pub fn marker_path(data_dir: &Path) -> PathBuf {
    data_dir.join(MARKER_FILE)
}

/// At start-up: if the marker exists, a rebuild was interrupted; the node
/// starts with reads refused and the rebuild runs again. Returns true then.
pub fn detect_interrupted(shared: &Shared) -> bool {
    let marker = marker_path(&shared.cfg.data_dir);
    if !marker.exists() {
        return false;
    }
    // The flushed end before the interrupted rebuild (recorded in the marker; the
    // WAL may already have been reset below it), or the WAL's end now.
    let recorded = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("flush_lsn = ").map(str::to_string))
        })
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    shared
        .rebuild
        .raise_floor(recorded.max(shared.wal.write_lsn().0));
    shared.rebuild.active.store(true, Ordering::Release);
    shared.rebuild.set_phase("starting");
    tracing::warn!(
        marker = %marker.display(),
        "a rebuild of this node was interrupted; its state is incomplete, so it serves no reads and the rebuild runs again (resuming the transfer when the leader still serves the same checkpoint)"
    );
    true
}

/// Ask for a rebuild (`POST /v1/admin/rebuild`). Refused on the leader.
pub fn request(shared: &Shared) -> Result<RebuildProgress, String> {
    let role = shared.role();
    if role.role == Role::Leader {
        return Err(format!(
            "node {} is the leader; only a follower can be rebuilt from the leader",
            shared.cfg.node_id
        ));
    }
    if !shared.rebuild.is_active() {
        shared.rebuild.requested.store(true, Ordering::Release);
        shared.rebuild.set_phase("starting");
        tracing::info!("rebuild requested by an operator");
    }
    shared.rebuild.wake.notify_one();
    Ok(shared.rebuild.progress())
}

/// Run rebuilds when requested, needed (with `auto_rebuild`) or interrupted,
/// until the node shuts down.
pub async fn supervise(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut backoff = Duration::from_secs(1);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let needed = {
            let f = shared.follower.lock();
            f.needs_rebuild
        } && shared.cfg.replication.auto_rebuild
            && shared.role().role == Role::Follower;
        let want = shared.rebuild.is_active()
            || shared.rebuild.requested.swap(false, Ordering::AcqRel)
            || needed;
        if want {
            if needed && !shared.rebuild.is_active() {
                tracing::warn!("the leader no longer holds the WAL this node needs; rebuilding it from the leader's checkpoint (replication.auto_rebuild = true)");
            }
            let r = tokio::select! {
                r = run_once(&shared) => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match r {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    shared.metrics.rebuilds_failed_total.inc();
                    {
                        let mut p = shared.rebuild.progress.lock();
                        p.phase = "failed";
                        p.last_error = Some(e.clone());
                    }
                    tracing::error!(error = %e, retry_in = ?backoff, "rebuild attempt failed; this node serves no reads and retries the rebuild");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
            continue;
        }
        tokio::select! {
            _ = shared.rebuild.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn write_marker(data_dir: &Path, leader: &str, flush_lsn: u64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = data_dir.join(format!("{MARKER_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(
        f,
        "leader = {leader}\nstarted_unix_ms = {}\nflush_lsn = {flush_lsn}",
        now_ms()
    )?;
    f.sync_all()?;
    std::fs::rename(&tmp, marker_path(data_dir))?;
    sync_dir(data_dir)
}

fn remove_marker(data_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(marker_path(data_dir)) {
        Ok(()) => sync_dir(data_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn partial_name(lsn: u64) -> String {
    format!("{PARTIAL_PREFIX}{lsn:016X}{PARTIAL_SUFFIX}")
}

/// A partial copy kept from an interrupted transfer: (LSN, its length, path).
fn find_partial(dir: &Path) -> Option<(u64, u64, PathBuf)> {
    let rd = std::fs::read_dir(dir).ok()?;
    let mut best: Option<(u64, u64, PathBuf)> = None;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(hex) = name
            .strip_prefix(PARTIAL_PREFIX)
            .and_then(|r| r.strip_suffix(PARTIAL_SUFFIX))
        else {
            continue;
        };
        let Ok(lsn) = u64::from_str_radix(hex, 16) else {
            continue;
        };
        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
        if best.as_ref().is_none_or(|b| lsn > b.0) {
            best = Some((lsn, len, e.path()));
        }
    }
    best
}

/// Remove every partial copy except `keep`.
fn remove_partials(dir: &Path, keep: Option<&Path>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let is_partial = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(PARTIAL_PREFIX) && n.ends_with(PARTIAL_SUFFIX));
        if is_partial && keep != Some(p.as_path()) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

async fn wait_for_leader(shared: &Shared) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = shared.role();
        if r.role == Role::Leader {
            return Err("this node is the leader now; only a follower can be rebuilt".into());
        }
        if let Some(l) = r.leader_id.filter(|l| *l != shared.cfg.node_id) {
            return Ok(l);
        }
        if Instant::now() > deadline {
            return Err("no leader known to rebuild from (waited 10s)".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect(
    shared: &Shared,
    leader: &str,
) -> Result<Framed<crate::tls::Stream, FrameCodec>, String> {
    let member = shared
        .cfg
        .member(leader)
        .ok_or_else(|| format!("the leader {leader} is not in [[members]]"))?;
    let stream = crate::tls::connect_member(
        shared.tls.as_deref(),
        member.addr,
        leader,
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| format!("leader {leader} at {}: {e}", member.addr))?;
    let mut framed = Framed::new(stream, FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES));
    let hello = Hello {
        version: proto::PROTOCOL_VERSION,
        cluster_id: shared.cfg.cluster_id.clone(),
        peer: Peer::Node(shared.cfg.node_id.clone()),
        token: shared.cfg.security.token.clone().unwrap_or_default(),
    };
    tokio::time::timeout(
        Duration::from_secs(5),
        proto::client_handshake(&mut framed, hello),
    )
    .await
    .map_err(|_| "handshake with the leader timed out".to_string())?
    .map_err(|e| format!("handshake with the leader refused: {e}"))?;
    Ok(framed)
}

async fn next_frame(
    framed: &mut Framed<crate::tls::Stream, FrameCodec>,
) -> Result<Message, String> {
    match tokio::time::timeout(FRAME_TIMEOUT, framed.next()).await {
        Err(_) => Err(format!(
            "no frame from the leader for {}s",
            FRAME_TIMEOUT.as_secs()
        )),
        Ok(None) => Err("the leader closed the transfer connection".into()),
        Ok(Some(Err(e))) => Err(format!("bad frame from the leader: {e}")),
        Ok(Some(Ok(Message::Error { code, message }))) => {
            Err(format!("the leader refused: {} ({message})", code.as_str()))
        }
        Ok(Some(Ok(m))) => Ok(m),
    }
}

/// The partial copy being written, with the CRC of every byte in it.
struct Partial {
    file: std::fs::File,
    crc: crc32fast::Hasher,
}

/// Open the partial copy for `lsn` at `offset` (0: a fresh file), hashing
/// the kept prefix.
fn open_partial(path: &Path, offset: u64) -> std::io::Result<Partial> {
    use std::io::{Read, Seek, SeekFrom};
    let mut crc = crc32fast::Hasher::new();
    if offset == 0 {
        let file = std::fs::File::create(path)?;
        return Ok(Partial { file, crc });
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    file.set_len(offset)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = offset;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        file.read_exact(&mut buf[..n])?;
        crc.update(&buf[..n]);
        left -= n as u64;
    }
    file.seek(SeekFrom::Start(offset))?;
    Ok(Partial { file, crc })
}

async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("{what}: task failed: {e}"))?
}

/// One rebuild attempt (see the module docs for the steps).
async fn run_once(shared: &Arc<Shared>) -> Result<(), String> {
    let started = Instant::now();
    let data_dir = shared.cfg.data_dir.clone();
    shared.metrics.rebuilds_started_total.inc();
    {
        let mut p = shared.rebuild.progress.lock();
        let attempts = p.attempts + 1;
        let completed = p.completed;
        *p = RebuildProgress {
            phase: "starting",
            attempts,
            completed,
            ..Default::default()
        };
    }
    let leader = wait_for_leader(shared).await?;
    shared.rebuild.progress.lock().leader = Some(leader.clone());
    // Step 1: from here on the node's state is not to be trusted until done.
    if !shared.rebuild.is_active() {
        let d = data_dir.clone();
        let l = leader.clone();
        // Out of elections from here until caught up again (before the marker: a
        // crash right after it finds the floor in it).
        let flushed = shared.wal.flush_lsn().0;
        shared.rebuild.raise_floor(flushed);
        blocking("write the rebuild marker", move || {
            write_marker(&d, &l, flushed)
                .map_err(|e| format!("cannot write the rebuild marker in {}: {e}", d.display()))
        })
        .await?;
        shared.rebuild.active.store(true, Ordering::Release);
    }
    replica::stop(shared).await;
    {
        let mut f = shared.follower.lock();
        f.connected = false;
        f.caught_up = false;
    }
    tracing::info!(leader = %leader, "rebuild started: fetching the leader's checkpoint; this node serves no reads until it is done");

    // Step 2.
    let mut framed = connect(shared, &leader).await?;
    let ckpt_dir = checkpoint::dir_in(&data_dir);
    let d = ckpt_dir.clone();
    let partial = blocking("scan for a partial copy", move || {
        std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        Ok(find_partial(&d))
    })
    .await?;
    let (have_lsn, have_len) = partial.as_ref().map(|(l, n, _)| (*l, *n)).unwrap_or((0, 0));
    framed
        .send(Message::BaseBackupRequest {
            checkpoint_lsn: have_lsn,
            offset: have_len,
        })
        .await
        .map_err(|e| format!("cannot ask the leader for its checkpoint: {e}"))?;
    let (lsn, total, offset, history) = match next_frame(&mut framed).await? {
        Message::BaseBackupStart {
            checkpoint_lsn,
            total_len,
            offset,
            term_history,
            ..
        } => (checkpoint_lsn, total_len, offset, term_history),
        other => {
            return Err(format!(
                "expected BaseBackupStart from the leader, got {}",
                other.name()
            ))
        }
    };
    if offset > total || (offset > 0 && (offset != have_len || lsn != have_lsn)) {
        return Err(format!(
            "the leader offered to resume checkpoint {} at byte {offset} of {total}, but this node holds {have_len} bytes of {}",
            wal::Lsn(lsn),
            wal::Lsn(have_lsn)
        ));
    }
    let history: Vec<wal::TermSpan> = history
        .iter()
        .map(|&(term, start)| wal::TermSpan {
            term,
            start: wal::Lsn(start),
        })
        .collect();
    let path = ckpt_dir.join(partial_name(lsn));
    let (p2, d2) = (path.clone(), ckpt_dir.clone());
    let mut part = blocking("open the partial copy", move || {
        remove_partials(&d2, Some(&p2));
        open_partial(&p2, offset).map_err(|e| format!("cannot open {}: {e}", p2.display()))
    })
    .await?;
    {
        let mut p = shared.rebuild.progress.lock();
        p.phase = "transferring";
        p.checkpoint_lsn = Some(wal::Lsn(lsn).to_string());
        p.bytes_total = total;
        p.bytes_done = offset;
        p.resumed_from = offset;
    }
    tracing::info!(
        leader = %leader,
        checkpoint_lsn = %wal::Lsn(lsn),
        bytes = total,
        resumed_from = offset,
        "rebuild: receiving the leader's checkpoint"
    );

    // Step 3. The file is written by a blocking writer fed through a bounded
    // channel, so the next chunk is received while the previous one is written
    // (pipelined; one task per chunk used to serialise network and disk).
    let transfer_started = Instant::now();
    let (wtx, mut wrx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let wp = path.clone();
    let file_writer = tokio::task::spawn_blocking(move || -> Result<Partial, String> {
        use std::io::Write;
        while let Some(bytes) = wrx.blocking_recv() {
            part.file
                .write_all(&bytes)
                .map_err(|e| format!("cannot write {}: {e}", wp.display()))?;
            part.crc.update(&bytes);
        }
        Ok(part)
    });
    let mut pos = offset;
    let mut next_log = offset + total / 10;
    let want_crc = loop {
        match next_frame(&mut framed).await? {
            Message::BaseBackupData { offset: at, bytes } => {
                let n = bytes.len() as u64;
                if at != pos || pos + n > total {
                    return Err(format!(
                        "checkpoint data at byte {at} (+{n}) does not continue the copy at {pos} of {total}"
                    ));
                }
                if wtx.send(bytes).await.is_err() {
                    // The writer stopped: its error says why.
                    drop(wtx);
                    return Err(match file_writer.await {
                        Ok(Err(e)) => e,
                        Ok(Ok(_)) => "the partial copy's writer stopped early".into(),
                        Err(e) => format!("the partial copy's writer failed: {e}"),
                    });
                }
                pos += n;
                shared.metrics.rebuild_received_bytes_total.inc_by(n);
                let secs = transfer_started.elapsed().as_secs_f64().max(1e-6);
                let rate = (pos - offset) as f64 / secs / 1e6;
                {
                    let mut p = shared.rebuild.progress.lock();
                    p.bytes_done = pos;
                    p.mb_per_s = rate;
                    p.elapsed_ms = started.elapsed().as_millis() as u64;
                }
                if pos >= next_log && pos < total {
                    next_log = pos + total / 10;
                    tracing::info!(
                        bytes = pos,
                        of = total,
                        percent = pos * 100 / total.max(1),
                        mb_per_s = format!("{rate:.1}"),
                        "rebuild: checkpoint transfer progress"
                    );
                }
            }
            Message::BaseBackupEnd { total_len, crc32 } => {
                if total_len != total || pos != total {
                    return Err(format!(
                        "the checkpoint transfer ended at byte {pos}, but the leader announced {total} and ended at {total_len}"
                    ));
                }
                break crc32;
            }
            other => {
                return Err(format!(
                    "unexpected {} during the checkpoint transfer",
                    other.name()
                ))
            }
        }
    };
    drop(wtx);
    let part = file_writer
        .await
        .map_err(|e| format!("the partial copy's writer failed: {e}"))??;
    let secs = transfer_started.elapsed().as_secs_f64().max(1e-6);
    let rate = (pos - offset) as f64 / secs / 1e6;
    shared.rebuild.progress.lock().mb_per_s = rate;

    // Steps 4 and 5. The whole-file CRC-32 against the leader's, then the file is
    // loaded (which checks every field and the file's own CRC: a state only from a
    // whole, valid file), then installed (fsync, rename, fsync dir) without a
    // second verification pass over it.
    shared.rebuild.set_phase("installing");
    let (p2, d2) = (path.clone(), ckpt_dir.clone());
    let s2 = shared.clone();
    let (meta, kv) = blocking("install the checkpoint", move || {
        part.file
            .sync_all()
            .map_err(|e| format!("cannot fsync {}: {e}", p2.display()))?;
        let got = part.crc.finalize();
        if got != want_crc {
            let _ = std::fs::remove_file(&p2);
            return Err(format!(
                "the received checkpoint's CRC-32 {got:08x} does not match the leader's {want_crc:08x}; the copy was deleted and is fetched again"
            ));
        }
        s2.rebuild.set_phase("loading");
        let (m, kv) = match checkpoint::load(&p2) {
            Ok(x) => x,
            Err(e) => {
                let _ = std::fs::remove_file(&p2);
                return Err(format!("the received checkpoint is not valid ({e}); the copy was deleted and is fetched again"));
            }
        };
        let meta = checkpoint::install_verified(&d2, &p2, &m)
            .map_err(|e| format!("cannot install the received checkpoint: {e}"))?;
        Ok((meta, kv))
    })
    .await?;
    if meta.lsn.0 != lsn {
        return Err(format!(
            "the received checkpoint holds LSN {}, the leader announced {}",
            meta.lsn,
            wal::Lsn(lsn)
        ));
    }
    let keys = kv.len();

    // Step 6: no receiver runs (stopped above, and `active` keeps it stopped);
    // the applier and every reader of the state wait on its lock.
    let s = shared.clone();
    let installed = meta.clone();
    blocking("reset the WAL", move || {
        // Lock order: checkpoint writer, then the state (no checkpoint of the old
        // state can land after this).
        let _w = s.ckpt.write_lock.lock();
        let mut state = s.kv.write();
        s.wal
            .reset_with_history(wal::Lsn(lsn), &history)
            .map_err(|e| format!("cannot reset the WAL to start at {}: {e}", wal::Lsn(lsn)))?;
        *state = kv;
        *s.ckpt.last.lock() = Some(installed);
        s.written_tx.send_replace(lsn);
        s.flush_tx.send_replace(lsn);
        s.applied_tx.send_replace(lsn);
        s.raise_commit(lsn);
        Ok(())
    })
    .await?;

    // Step 7.
    let d = data_dir.clone();
    blocking("remove the rebuild marker", move || {
        remove_marker(&d).map_err(|e| format!("cannot remove the rebuild marker: {e}"))
    })
    .await?;
    {
        let mut f = shared.follower.lock();
        f.needs_rebuild = false;
        f.last_error = None;
    }
    shared.rebuild.active.store(false, Ordering::Release);
    tracing::info!(
        checkpoint_lsn = %wal::Lsn(lsn),
        keys,
        "rebuild: checkpoint installed and loaded, WAL reset to start at the checkpoint; streaming from the leader"
    );

    // Step 8.
    shared.rebuild.set_phase("catching_up");
    let follow = shared.role().leader_id.unwrap_or(leader.clone());
    if follow != shared.cfg.node_id {
        replica::start(shared, follow).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !shared.follower.lock().connected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(framed);
    let elapsed = started.elapsed();
    {
        let mut p = shared.rebuild.progress.lock();
        p.phase = "done";
        p.completed += 1;
        p.elapsed_ms = elapsed.as_millis() as u64;
        p.last_error = None;
    }
    shared.metrics.rebuilds_completed_total.inc();
    tracing::info!(
        leader = %leader,
        checkpoint_lsn = %wal::Lsn(lsn),
        bytes = total,
        received = pos - offset,
        resumed_from = offset,
        seconds = format!("{:.2}", elapsed.as_secs_f64()),
        mb_per_s = format!("{rate:.1}"),
        "rebuild done"
    );
    Ok(())
}
