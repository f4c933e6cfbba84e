//! The follower's replication stream: connect to the leader, ask for WAL from
//! the end of the local log, append the bytes verbatim, report progress.
//!
//! # One session
//!
//! 1. Connect and handshake as this node.
//! 2. Send `StartReplication` with the local term history and write/flush/apply LSNs.
//! 3. The leader answers with one of:
//!
//! | leader sends | meaning | receiver does |
//! |---|---|---|
//! | `WalData{start, bytes}` | the next records | `append_raw` at `start` (checked: CRC, LSN continuity, before any byte is written); publish the new write LSN for the flusher |
//! | `Keepalive{commit, flush, reply_requested}` | heartbeat | raise the commit LSN (never lower); answer at once if asked |
//! | `Truncate{to}` | our tail after `to` diverged from the leader's log | cut it (logged with range and record count), lower the known commit LSN to `to`, reconnect at once |
//! | `Error{wal_not_available}` | the leader no longer holds our next LSN | report `needs_rebuild`, retry slowly |
//! | `Error{other}` | refused | log the reason, retry with backoff |
//!
//! 4. Whenever the flush or apply LSN moves, or the leader asks, send
//!    `FollowerStatus`. Every frame already readable is handled before a status
//!    goes out, so a burst of frames costs one status covering write, flush and
//!    apply LSNs together. A follower reports as flushed only what is on stable
//!    storage.
//!
//! # Who flushes ([`FlushPolicy`])
//!
//! With [`FlushPolicy::Inline`] (what walship uses) the receiver makes each batch
//! durable itself: after the frames already readable are appended, it calls
//! `Wal::flush` on this task (inside `block_in_place`, so the runtime's other
//! tasks move to another thread meanwhile), stores the flush LSN, sends its
//! status right away and only then wakes the node's tasks watching the flush
//! LSN (they must not run ahead of the status). No thread hand-off lies between the WAL bytes
//! arriving and the status that reports them durable (the node's flusher
//! thread would add two wake-ups: futex to the flusher, then back to this
//! task). Group commit is kept: frames arriving during an fdatasync wait in
//! the socket and are all appended before the next one, which covers them all.
//! Under a light load (at most `NO_HANDOFF_MAX_BYTES` to flush, the previous
//! fdatasync fast) even the `block_in_place` hand-off is skipped: the fdatasync
//! runs on the worker thread as it is, right after the node's
//! [`ReceiverEvents::before_inline_flush`] hook (the node applies the records
//! already committed there, so the apply LSN rides in the flush status).
//! With [`FlushPolicy::Node`] the receiver only publishes its write LSN and the
//! node's flusher flushes.
//!
//! Reconnects back off from 20 ms to 1 s so that a new leader is followed fast.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{FutureExt, SinkExt, StreamExt};
use proto::{ErrorCode, FrameCodec, Hello, Message, Peer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::codec::Framed;

/// What the receiver tells its node about (status, metrics, failover inputs).
pub trait ReceiverEvents: Send + Sync + 'static {
    /// A stream to the leader is up (handshake done, streaming requested).
    fn connected(&self, leader_id: &str);
    /// The stream ended; `reason` says why (already logged).
    fn disconnected(&self, leader_id: &str, reason: &str);
    /// The local log reached (or fell behind) the leader's flush LSN.
    fn caught_up(&self, caught_up: bool);
    /// The leader's flush LSN as heard in a keepalive.
    fn leader_flush(&self, flush_lsn: u64);
    /// WAL bytes received and appended.
    fn received(&self, bytes: u64);
    /// The local tail was cut at `to` because it diverged from the leader.
    fn truncated(&self, to: u64, report: &wal::TruncateReport);
    /// The leader no longer holds the WAL this node needs (rebuild required).
    fn needs_rebuild(&self, message: &str);
    /// An inline fdatasync ([`FlushPolicy::Inline`]) took `seconds`.
    fn flushed(&self, _seconds: f64) {}
    /// Called on the receiving task right before an fdatasync that runs on the
    /// worker thread itself (a light load, see `NO_HANDOFF_MAX_BYTES`). The node
    /// may apply here what is already committed and flushed (a few records), so
    /// that the apply LSN rides in the flush status: its applier task, woken on
    /// this thread, would only run after the fdatasync and cost a status of its
    /// own.
    fn before_inline_flush(&self) {}
    /// The local WAL failed (poisoned by a failed fsync/fdatasync or a crashed
    /// append; `cause` from the WAL). The receiver has stopped for good: it
    /// appends nothing more and never raises the flush LSN again.
    fn wal_failed(&self, _cause: &str) {}
}

/// How received WAL becomes durable (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Publish the write LSN on `written_tx` (notifying); the node's flusher
    /// flushes and publishes `flush_tx`.
    Node,
    /// Flush after every batch of frames on the receiving task, publish
    /// `flush_tx`, then report at once. `fsync: false` (`wal.sync = never`)
    /// publishes the write LSN as flushed without an fdatasync. The write LSN
    /// is stored in `written_tx` without waking its receivers (nobody needs to
    /// act on it: the flush LSN already covers it), except when more than 256 KiB
    /// wait to be flushed (bulk streaming): then `written_tx` is published and
    /// the node's flusher flushes while the receiver goes on receiving.
    Inline {
        /// Whether to fdatasync (`wal.sync = always`).
        fsync: bool,
    },
}

/// A byte stream to the leader (plain TCP, TLS, ...).
pub trait IoStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> IoStream for T {}

/// A boxed [`IoStream`].
pub type BoxedIo = Box<dyn IoStream>;

/// The future [`Connector::connect`] returns.
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = Result<BoxedIo, String>> + Send + 'a>>;

/// Opens the byte stream to the leader (the node supplies TLS through it).
pub trait Connector: Send + Sync + 'static {
    /// Connect to member `leader_id` at `addr`; errors are operator-readable.
    fn connect<'a>(&'a self, addr: SocketAddr, leader_id: &'a str) -> ConnectFuture<'a>;
}

/// Plain TCP (nodelay), 2 s connect timeout.
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, addr: SocketAddr, _leader_id: &'a str) -> ConnectFuture<'a> {
        Box::pin(async move {
            let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
                .await
                .map_err(|_| "connect timed out after 2s".to_string())?
                .map_err(|e| format!("cannot connect: {e}"))?;
            let _ = stream.set_nodelay(true);
            Ok(Box::new(stream) as BoxedIo)
        })
    }
}

/// Everything a receiver needs from its node.
pub struct FollowContext {
    /// The local WAL (appended only by this receiver while the node follows).
    pub wal: Arc<wal::Wal>,
    /// This node's id.
    pub node_id: String,
    /// Cluster id presented in the handshake.
    pub cluster_id: String,
    /// Shared token presented in the handshake (empty if none).
    pub token: String,
    /// Leader's id.
    pub leader_id: String,
    /// Leader's binary protocol address.
    pub leader_addr: SocketAddr,
    /// Opens the connection to the leader ([`TcpConnector`], or the node's TLS).
    pub connector: Arc<dyn Connector>,
    /// Publish the local write LSN here (the node's flusher flushes it with
    /// [`FlushPolicy::Node`]).
    pub written_tx: watch::Sender<u64>,
    /// The node's flush LSN (raised here with [`FlushPolicy::Inline`]; set
    /// lower here only after a truncation).
    pub flush_tx: watch::Sender<u64>,
    /// Who flushes received WAL.
    pub flush: FlushPolicy,
    /// The node's applied LSN.
    pub applied_rx: watch::Receiver<u64>,
    /// The commit LSN learnt from the leader (only raised, except lowered to
    /// the cut when a divergent tail is truncated).
    pub commit_tx: watch::Sender<u64>,
    /// Callbacks.
    pub events: Arc<dyn ReceiverEvents>,
    /// Becomes true when the receiver must stop.
    pub stop: watch::Receiver<bool>,
}

/// Why a session ended.
enum SessionEnd {
    Stop,
    /// Reconnect now (after a truncation).
    Again,
    /// Reconnect after a backoff; the text is the reason.
    Failed(String),
    /// The leader cannot serve us: retry slowly.
    NeedsRebuild(String),
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Raise the value without waking the receivers (they read it when they look).
fn raise_silently(tx: &watch::Sender<u64>, v: u64) {
    tx.send_if_modified(|c| {
        if v > *c {
            *c = v;
        }
        false
    });
}

/// `Wal::flush(upto)` from async code without stalling the runtime: in
/// `block_in_place` on a multi-threaded runtime (no task hand-off: this task
/// continues on this thread, the worker's other tasks move to another one),
/// else on the blocking pool.
///
/// With `hand_off == false` (a small flush while the disk answers fast, see
/// [`NO_HANDOFF_MAX_BYTES`]) the fdatasync runs on the worker thread itself:
/// `block_in_place` wakes a blocking-pool thread to take over the worker before
/// the fdatasync starts, and that thread can take the core from this one and
/// delay the fdatasync it was meant to overlap.
async fn flush_blocking(wal: &Arc<wal::Wal>, upto: u64, hand_off: bool) -> Result<u64, String> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi = matches!(
        Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(RuntimeFlavor::MultiThread)
    );
    if multi && !hand_off {
        wal.flush(wal::Lsn(upto))
            .map(|l| l.0)
            .map_err(|e| e.to_string())
    } else if multi {
        tokio::task::block_in_place(|| wal.flush(wal::Lsn(upto)))
            .map(|l| l.0)
            .map_err(|e| e.to_string())
    } else {
        let w = wal.clone();
        match tokio::task::spawn_blocking(move || w.flush(wal::Lsn(upto))).await {
            Ok(r) => r.map(|l| l.0).map_err(|e| e.to_string()),
            Err(e) => Err(format!("flush task failed: {e}")),
        }
    }
}

fn raise(tx: &watch::Sender<u64>, v: u64) {
    tx.send_if_modified(|c| {
        if v > *c {
            *c = v;
            true
        } else {
            false
        }
    });
}

/// Follow the leader until `ctx.stop` becomes true, reconnecting with backoff.
pub async fn follow(ctx: FollowContext) {
    let mut backoff = Duration::from_millis(20);
    let mut stop = ctx.stop.clone();
    let mut last_reason = String::new();
    loop {
        if *stop.borrow() {
            return;
        }
        if let Some(cause) = ctx.wal.poison_cause() {
            // A failed fsync is never retried and nothing after it is reported
            // durable: stop following for good (the node reacts to the event).
            ctx.events
                .disconnected(&ctx.leader_id, &format!("the local WAL failed: {cause}"));
            ctx.events.wal_failed(&cause);
            return;
        }
        let end = session(&ctx).await;
        if ctx.wal.poison_cause().is_some() {
            continue;
        }
        let wait = match end {
            SessionEnd::Stop => return,
            SessionEnd::Again => Duration::ZERO,
            SessionEnd::Failed(reason) => {
                if reason != last_reason {
                    tracing::warn!(
                        leader = %ctx.leader_id,
                        addr = %ctx.leader_addr,
                        %reason,
                        "replication from the leader stopped; reconnecting with backoff (up to 1s)"
                    );
                    last_reason = reason.clone();
                }
                ctx.events.disconnected(&ctx.leader_id, &reason);
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                w
            }
            SessionEnd::NeedsRebuild(msg) => {
                ctx.events.disconnected(&ctx.leader_id, &msg);
                ctx.events.needs_rebuild(&msg);
                Duration::from_secs(5)
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

async fn connect(ctx: &FollowContext) -> Result<Framed<BoxedIo, FrameCodec>, String> {
    let stream = ctx
        .connector
        .connect(ctx.leader_addr, &ctx.leader_id)
        .await?;
    let mut framed = Framed::new(stream, FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES));
    let hello = Hello {
        version: proto::PROTOCOL_VERSION,
        cluster_id: ctx.cluster_id.clone(),
        peer: Peer::Node(ctx.node_id.clone()),
        token: ctx.token.clone(),
    };
    tokio::time::timeout(
        Duration::from_secs(2),
        proto::client_handshake(&mut framed, hello),
    )
    .await
    .map_err(|_| "handshake timed out after 2s".to_string())?
    .map_err(|e| format!("handshake refused: {e}"))?;
    Ok(framed)
}

async fn session(ctx: &FollowContext) -> SessionEnd {
    let mut stop = ctx.stop.clone();
    let mut framed = tokio::select! {
        _ = stop.changed() => return SessionEnd::Stop,
        c = connect(ctx) => match c {
            Ok(f) => f,
            Err(e) => return SessionEnd::Failed(e),
        },
    };
    let wal = &ctx.wal;
    let start = Message::StartReplication {
        term_history: wal
            .term_history()
            .iter()
            .map(|t| (t.term, t.start.0))
            .collect(),
        write_lsn: wal.write_lsn().0,
        flush_lsn: *ctx.flush_tx.borrow(),
        apply_lsn: *ctx.applied_rx.borrow(),
    };
    if let Err(e) = framed.send(start).await {
        return SessionEnd::Failed(format!("cannot request streaming: {e}"));
    }
    ctx.events.connected(&ctx.leader_id);
    let mut flush_rx = ctx.flush_tx.subscribe();
    let mut applied_rx = ctx.applied_rx.clone();
    let mut st = StreamState {
        leader_flush: 0,
        caught_up: false,
        status_due: true,
        reply_to_time_us: 0,
        last_sync: Duration::ZERO,
    };
    loop {
        // One status per batch, covering write/flush/apply at once.
        if st.status_due
            || flush_rx.has_changed().unwrap_or(false)
            || applied_rx.has_changed().unwrap_or(false)
        {
            let flushed = *flush_rx.borrow_and_update();
            let status = status_message(wal, flushed, &mut applied_rx, &mut st);
            if let Err(e) = framed.send(status).await {
                return SessionEnd::Failed(format!("cannot send status: {e}"));
            }
        }
        let msg = tokio::select! {
            _ = stop.changed() => return SessionEnd::Stop,
            r = flush_rx.changed() => {
                if r.is_err() { return SessionEnd::Stop; }
                st.status_due = true;
                None
            }
            r = applied_rx.changed() => {
                if r.is_err() { return SessionEnd::Stop; }
                st.status_due = true;
                None
            }
            m = framed.next() => Some(m),
        };
        if let Some(first) = msg {
            if let Some(end) = handle_frame(ctx, &mut st, first) {
                return end;
            }
            // Drain every frame already buffered or readable without waiting,
            // so a burst from the leader costs one status, not one per frame.
            for _ in 0..MAX_FRAMES_PER_BATCH {
                let Some(next) = framed.next().now_or_never() else {
                    break;
                };
                if let Some(end) = handle_frame(ctx, &mut st, next) {
                    return end;
                }
            }
            if let FlushPolicy::Inline { fsync } = ctx.flush {
                // Make the batch durable here and report it at the top of the
                // loop: no hand-off to another thread on the way to the status.
                // A large backlog (bulk streaming) goes to the node's flusher
                // instead, so receiving overlaps the fdatasync.
                let end = wal.write_lsn().0;
                let flushed = *ctx.flush_tx.borrow();
                if fsync && end > flushed && end - flushed > INLINE_FLUSH_MAX_BYTES {
                    // Always notifies (the value may already hold `end`,
                    // stored silently by `handle_frame`).
                    ctx.written_tx.send_modify(|w| *w = (*w).max(end));
                } else if end > flushed {
                    let started = std::time::Instant::now();
                    let done = if fsync {
                        let hand_off = needs_hand_off(end - flushed, st.last_sync);
                        if !hand_off {
                            ctx.events.before_inline_flush();
                        }
                        match flush_blocking(wal, end, hand_off).await {
                            Ok(done) => {
                                st.last_sync = started.elapsed();
                                ctx.events.flushed(st.last_sync.as_secs_f64());
                                done
                            }
                            Err(e) => {
                                tracing::error!(
                                    up_to = %wal::Lsn(end),
                                    flushed = %wal::Lsn(flushed),
                                    error = %e,
                                    "WAL flush failed on this follower; it stops replicating and never reports WAL past {} as flushed (a failed fsync is never retried). Restart the node once the disk is healthy: recovery keeps what is durable",
                                    wal::Lsn(flushed)
                                );
                                return SessionEnd::Failed(format!("WAL flush failed: {e}"));
                            }
                        }
                    } else {
                        end
                    };
                    // Store the flush LSN, report it, and only then wake the
                    // node's tasks watching it: the status is what the leader's
                    // writers wait for, and the woken tasks could run before it.
                    // (Stored first, so the node's own view — /status, votes —
                    // never trails what it told the leader.)
                    raise_silently(&ctx.flush_tx, done);
                    let flushed = *flush_rx.borrow_and_update();
                    let status = status_message(wal, flushed, &mut applied_rx, &mut st);
                    if let Err(e) = framed.send(status).await {
                        return SessionEnd::Failed(format!("cannot send status: {e}"));
                    }
                    ctx.flush_tx.send_modify(|_| {});
                    // Our own wake-up needs no second status; a higher flush LSN
                    // published meanwhile by the node's flusher does.
                    if *flush_rx.borrow_and_update() > flushed {
                        st.status_due = true;
                    }
                }
            }
        } else {
            // A flush or apply advance: let a concurrent advance of the other
            // (and any frame already arriving) land first, so one status covers both.
            tokio::task::yield_now().await;
        }
    }
}

/// The `FollowerStatus` reporting `flushed` (clears `status_due` and the reply owed).
fn status_message(
    wal: &wal::Wal,
    flushed: u64,
    applied_rx: &mut watch::Receiver<u64>,
    st: &mut StreamState,
) -> Message {
    st.status_due = false;
    Message::FollowerStatus {
        write_lsn: wal.write_lsn().0,
        flush_lsn: flushed,
        apply_lsn: *applied_rx.borrow_and_update(),
        send_time_us: now_us(),
        reply_to_time_us: std::mem::take(&mut st.reply_to_time_us),
    }
}

/// With [`FlushPolicy::Inline`], a backlog of unflushed WAL larger than this
/// is flushed by the node's flusher thread (notified through `written_tx`)
/// while the receiver goes on receiving; smaller ones are flushed inline.
const INLINE_FLUSH_MAX_BYTES: u64 = 256 << 10;

/// A flush of at most this many bytes runs its fdatasync on the worker thread
/// (no `block_in_place` hand-off, see `flush_blocking`) while the previous one
/// took at most [`NO_HANDOFF_MAX_SYNC`]: a light load (a few small records per
/// flush) has little for the worker's other tasks to do meanwhile, and the
/// hand-off's thread wake-up (2-3 context switches) would delay the fdatasync
/// and the status behind it. Larger flushes, or any flush after a slow one
/// (a stalling disk), hand the worker over so the node's other tasks (applier,
/// failover driver) never wait behind the disk.
const NO_HANDOFF_MAX_BYTES: u64 = 512;

/// See [`NO_HANDOFF_MAX_BYTES`].
const NO_HANDOFF_MAX_SYNC: Duration = Duration::from_millis(2);

/// Whether an inline flush of `unflushed` bytes hands the worker over
/// (`block_in_place`) given the duration of the previous one (see
/// [`NO_HANDOFF_MAX_BYTES`]).
fn needs_hand_off(unflushed: u64, last_sync: Duration) -> bool {
    unflushed > NO_HANDOFF_MAX_BYTES || last_sync > NO_HANDOFF_MAX_SYNC
}

/// Frames handled back to back before a status goes out (keeps the stop
/// signal and status reports responsive under a flood of WAL).
const MAX_FRAMES_PER_BATCH: usize = 256;

/// What a session tracks between frames.
struct StreamState {
    leader_flush: u64,
    caught_up: bool,
    status_due: bool,
    /// `send_time_us` of the last keepalive that asked for a reply (0: none).
    reply_to_time_us: u64,
    /// Duration of the last inline flush (chooses the hand-off, see
    /// [`NO_HANDOFF_MAX_BYTES`]).
    last_sync: Duration,
}

/// Handle one frame from the leader; `Some` ends the session.
fn handle_frame(
    ctx: &FollowContext,
    st: &mut StreamState,
    msg: Option<Result<Message, proto::ProtoError>>,
) -> Option<SessionEnd> {
    let wal = &ctx.wal;
    let msg = match msg {
        None => {
            return Some(SessionEnd::Failed(
                "the leader closed the connection".into(),
            ))
        }
        Some(Err(e)) => {
            return Some(SessionEnd::Failed(format!(
                "bad frame from the leader: {e}"
            )))
        }
        Some(Ok(m)) => m,
    };
    {
        match msg {
            Message::WalData { start_lsn, bytes } => {
                let n = bytes.len() as u64;
                match wal.append_raw(wal::Lsn(start_lsn), &bytes) {
                    Ok(end) => {
                        match ctx.flush {
                            FlushPolicy::Node => raise(&ctx.written_tx, end.0),
                            FlushPolicy::Inline { .. } => raise_silently(&ctx.written_tx, end.0),
                        }
                        ctx.events.received(n);
                        let now_caught = end.0 >= st.leader_flush;
                        if now_caught != st.caught_up {
                            st.caught_up = now_caught;
                            ctx.events.caught_up(st.caught_up);
                        }
                    }
                    Err(e) => {
                        tracing::error!(
                            leader = %ctx.leader_id,
                            start = %wal::Lsn(start_lsn),
                            bytes = n,
                            error = %e,
                            "refusing WAL bytes from the leader (nothing was written); reconnecting to stream again from the end of the local log"
                        );
                        return Some(SessionEnd::Failed(format!("WAL data refused: {e}")));
                    }
                }
            }
            Message::Keepalive {
                term: _,
                leader_id: _,
                flush_lsn,
                commit_lsn,
                send_time_us,
                reply_requested,
            } => {
                st.leader_flush = flush_lsn;
                ctx.events.leader_flush(flush_lsn);
                raise(&ctx.commit_tx, commit_lsn);
                let now_caught = wal.write_lsn().0 >= flush_lsn;
                if now_caught != st.caught_up {
                    st.caught_up = now_caught;
                    ctx.events.caught_up(st.caught_up);
                }
                if reply_requested {
                    // Answered right after this batch of frames (at once if
                    // none follows): one status, sent before waiting again.
                    st.status_due = true;
                    st.reply_to_time_us = send_time_us;
                }
            }
            Message::Truncate { to_lsn } => {
                let from = wal.write_lsn();
                match wal.truncate_after(wal::Lsn(to_lsn)) {
                    Ok(report) => {
                        tracing::warn!(
                            leader = %ctx.leader_id,
                            from = %wal::Lsn(to_lsn),
                            to = %from,
                            records = report.records,
                            "cut this node's divergent WAL tail (written under an older leader, never committed) to follow the new leader's history"
                        );
                        ctx.written_tx.send_replace(to_lsn);
                        ctx.flush_tx.send_if_modified(|f| {
                            if *f > to_lsn {
                                *f = to_lsn;
                                true
                            } else {
                                false
                            }
                        });
                        // A commit LSN above the cut was learnt for the history we
                        // just dropped (async mode: an old leader's own flush). Keep
                        // it and the applier would apply the new leader's records
                        // in [to, old commit) before the new leader commits them.
                        // The only place the commit LSN goes down; the new leader's
                        // keepalives raise it again.
                        ctx.commit_tx.send_if_modified(|c| {
                            if *c > to_lsn {
                                *c = to_lsn;
                                true
                            } else {
                                false
                            }
                        });
                        ctx.events.truncated(to_lsn, &report);
                        return Some(SessionEnd::Again);
                    }
                    Err(e) => {
                        tracing::error!(
                            at = %wal::Lsn(to_lsn),
                            error = %e,
                            "cannot cut the divergent WAL tail; this node cannot follow until it is fixed (retrying)"
                        );
                        return Some(SessionEnd::Failed(format!("truncation failed: {e}")));
                    }
                }
            }
            Message::Error { code, message } => {
                if code == ErrorCode::WalNotAvailable {
                    tracing::error!(
                        leader = %ctx.leader_id,
                        %message,
                        "the leader no longer holds the WAL this node needs; this node needs a rebuild (walship rebuild)"
                    );
                    return Some(SessionEnd::NeedsRebuild(message));
                }
                return Some(SessionEnd::Failed(format!(
                    "leader refused: {} ({message})",
                    code.as_str()
                )));
            }
            other => {
                return Some(SessionEnd::Failed(format!(
                    "unexpected {} message on the replication stream",
                    other.name()
                )));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_flushes_on_a_fast_disk_stay_on_the_worker_thread() {
        // One small record per flush (a one-client load): no hand-off.
        assert!(!needs_hand_off(165, Duration::ZERO));
        assert!(!needs_hand_off(
            NO_HANDOFF_MAX_BYTES,
            Duration::from_micros(300)
        ));
        // A batch of several records: the worker is handed over.
        assert!(needs_hand_off(NO_HANDOFF_MAX_BYTES + 1, Duration::ZERO));
        // After a slow fdatasync (a stalling disk), even a small flush is.
        assert!(needs_hand_off(
            100,
            NO_HANDOFF_MAX_SYNC + Duration::from_micros(1)
        ));
    }
}
