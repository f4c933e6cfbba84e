//! One WAL sender per connected follower (leader side).
//!
//! # A session
//!
//! | step | condition | sender does |
//! |---|---|---|
//! | 1 | follower's log diverges from ours (fork point < its end) | send `Truncate{fork}`, end (the follower cuts and reconnects) |
//! | 2 | follower's end is below our oldest retained WAL | send `Error{wal_not_available}`, mark it `needs_rebuild`, end |
//! | 3 | otherwise | stream from the follower's end: `WalData` chunks of whole records, as fast as it takes them |
//!
//! While streaming: the sender works in passes. Woken by new WAL, a commit advance,
//! the heartbeat timer, the commit linger or (when window-limited) a follower
//! status, it yields once so that concurrent appends join the pass, then feeds
//! every readable `WalData` chunk, then a `Keepalive` if the commit LSN moved (see
//! "Commit LSN") or a heartbeat is due (only the heartbeat one asks for a reply),
//! and flushes the socket once: the commit LSN travels with the data in the same
//! syscall. The follower's
//! `FollowerStatus` replies feed [`Progress`] (lag) and the [`SharedGate`] (commit).
//!
//! # Commit LSN
//!
//! Followers apply only up to the commit LSN, which they learn from the `Keepalive`s.
//! A commit advance does not wake the sender by itself: it rides behind the next
//! `WalData` (same flush), or, if no WAL follows within `commit_linger` (1 ms in
//! walship), goes out in a `Keepalive` of its own. Two exceptions send it at once:
//! while a `remote_apply` write waits ([`SharedGate::has_waiters`]; that write needs
//! the follower to apply now), and with every heartbeat. A one-client
//! `remote_flush` workload thus costs one frame burst per write in each direction
//! instead of two (no commit-only `Keepalive`, no apply-only `FollowerStatus`
//! answering it). When the linger expires with nothing new to say (commits
//! stalled), the sender waits for the commit LSN to move instead of re-arming it.
//!
//! Bounds: at most `window_bytes` sent beyond the follower's reported write LSN,
//! each `WalData` at most `max_chunk_bytes` (unless one record is larger), and the
//! socket's own buffer — no unbounded queue anywhere. A follower becomes
//! `streaming` (and counts for the commit policy) once it has been sent everything
//! there was; it stays so for the rest of the connection, as PostgreSQL's walsender.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use proto::{ErrorCode, FrameCodec, Message};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};
use tokio_util::codec::Framed;

use crate::gate::{AckLevel, Commits, FollowerPosition, SharedGate};
use crate::progress::{FollowerState, Progress};

/// What a sender reports to its node.
pub trait SenderEvents: Send + Sync + 'static {
    /// The gate's commits moved after a follower report.
    fn commits(&self, commits: Commits);
    /// WAL bytes shipped.
    fn shipped(&self, bytes: u64);
    /// A follower's state changed.
    fn state(&self, follower: &str, state: FollowerState);
}

/// Everything the senders of one leader term share.
pub struct SenderContext {
    /// The leader's WAL.
    pub wal: Arc<wal::Wal>,
    /// The term being led.
    pub term: u64,
    /// This leader's id.
    pub leader_id: String,
    /// The term's commit gate.
    pub gate: SharedGate,
    /// The term's follower progress.
    pub progress: Arc<Mutex<Progress>>,
    /// The leader's write LSN (new WAL to ship).
    pub written: watch::Receiver<u64>,
    /// The leader's flush LSN (sent in keepalives).
    pub flushed: watch::Receiver<u64>,
    /// The cluster commit LSN (sent in keepalives).
    pub commit: watch::Receiver<u64>,
    /// Becomes true when the term ends or the node stops.
    pub stop: watch::Receiver<bool>,
    /// Keepalive period (asks the follower for a reply).
    pub heartbeat: Duration,
    /// Largest `WalData` payload (one record may exceed it).
    pub max_chunk_bytes: usize,
    /// Most bytes in flight beyond the follower's reported write LSN.
    pub window_bytes: u64,
    /// How long a commit advance may wait to ride with the next `WalData` before it is
    /// sent in a `Keepalive` of its own (see "Commit LSN" in the module docs). A commit
    /// is sent at once while a `remote_apply` write waits.
    pub commit_linger: Duration,
    /// Callbacks.
    pub events: Arc<dyn SenderEvents>,
}

/// Where the follower asked to start (its `StartReplication`).
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// The follower's `(term, start)` history.
    pub term_history: Vec<(u64, u64)>,
    /// End of the follower's WAL.
    pub write_lsn: u64,
    /// Follower's flush LSN.
    pub flush_lsn: u64,
    /// Follower's apply LSN.
    pub apply_lsn: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Serve one follower until it disconnects or the term ends. The returned text
/// says why the session ended (for the log).
pub async fn serve_follower<T>(
    ctx: Arc<SenderContext>,
    follower: String,
    mut framed: Framed<T, FrameCodec>,
    start: StartRequest,
) -> String
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let wal = &ctx.wal;
    let ours = wal.term_history();
    let theirs: Vec<wal::TermSpan> = start
        .term_history
        .iter()
        .map(|&(term, s)| wal::TermSpan {
            term,
            start: wal::Lsn(s),
        })
        .collect();
    let our_end = wal.write_lsn();
    let fork = wal::fork_point(&theirs, wal::Lsn(start.write_lsn), &ours, our_end);
    if start.write_lsn > fork.0 {
        tracing::info!(
            follower = %follower,
            fork = %fork,
            follower_end = %wal::Lsn(start.write_lsn),
            "follower's WAL diverges from the leader's after the fork point; telling it to cut its tail there"
        );
        let _ = framed.send(Message::Truncate { to_lsn: fork.0 }).await;
        return format!("told to truncate at {fork}");
    }
    let first = wal.first_lsn();
    if start.write_lsn < first.0 {
        let msg = format!(
            "this leader no longer holds WAL at {} (oldest retained: {first}); the follower must be rebuilt",
            wal::Lsn(start.write_lsn)
        );
        tracing::error!(follower = %follower, "{msg}");
        ctx.progress
            .lock()
            .set_state(&follower, FollowerState::NeedsRebuild);
        ctx.events.state(&follower, FollowerState::NeedsRebuild);
        let _ = framed
            .send(Message::Error {
                code: ErrorCode::WalNotAvailable,
                message: msg.clone(),
            })
            .await;
        return msg;
    }

    ctx.progress
        .lock()
        .set_state(&follower, FollowerState::Catchup);
    ctx.events.state(&follower, FollowerState::Catchup);
    let commits = ctx.gate.update_follower(
        &follower,
        FollowerPosition {
            connected: false,
            write_lsn: start.write_lsn,
            flush_lsn: start.flush_lsn.min(start.write_lsn),
            apply_lsn: start.apply_lsn.min(start.write_lsn),
        },
    );
    ctx.events.commits(commits);

    let (mut sink, mut stream) = framed.split();
    let acked_write = Arc::new(AtomicU64::new(start.write_lsn));
    let streaming = Arc::new(AtomicBool::new(false));
    let status_seen = Arc::new(Notify::new());

    // Reader: follower statuses (runs apart from the writer so statuses are
    // always read even while a large send is blocked).
    let reader = {
        let ctx = ctx.clone();
        let follower = follower.clone();
        let acked_write = acked_write.clone();
        let streaming = streaming.clone();
        let status_seen = status_seen.clone();
        tokio::spawn(async move {
            loop {
                match stream.next().await {
                    Some(Ok(Message::FollowerStatus {
                        write_lsn,
                        flush_lsn,
                        apply_lsn,
                        ..
                    })) => {
                        let pos = {
                            let mut p = ctx.progress.lock();
                            p.on_status(&follower, write_lsn, flush_lsn, apply_lsn, now_us());
                            FollowerPosition {
                                connected: streaming.load(Ordering::Acquire),
                                write_lsn,
                                flush_lsn,
                                apply_lsn,
                            }
                        };
                        // Publish the commits first, answer the writers last
                        // (see SharedGate::update_follower_deferred).
                        let (commits, released) = ctx.gate.update_follower_deferred(&follower, pos);
                        acked_write.store(write_lsn, Ordering::Release);
                        status_seen.notify_one();
                        ctx.events.commits(commits);
                        drop(released);
                    }
                    Some(Ok(other)) => {
                        return format!("unexpected {} from the follower", other.name());
                    }
                    Some(Err(e)) => return format!("bad frame from the follower: {e}"),
                    None => return "the follower closed the connection".to_string(),
                }
            }
        })
    };
    // Aborts the status reader however this session ends, also when this
    // future is dropped mid-await (the node shutting down): the reader owns
    // the socket's read half and the context (the WAL), and would otherwise
    // keep both alive until the follower hangs up.
    let mut reader = AbortOnDrop(reader);

    let mut written = ctx.written.clone();
    let mut commit = ctx.commit.clone();
    let mut stop = ctx.stop.clone();
    // Heartbeat: one pinned timer, re-armed only when a heartbeat goes out (no
    // timer-wheel churn per batch). It is also checked at the top of every
    // pass, so a steady stream of WAL never starves the heartbeats.
    let mut next_heartbeat = tokio::time::Instant::now();
    let heartbeat_timer = tokio::time::sleep_until(next_heartbeat);
    tokio::pin!(heartbeat_timer);
    // Commit linger: armed while the follower holds shipped WAL it does not know
    // to be committed; when it fires, the commit LSN goes out on its own.
    let mut linger_armed = false;
    // Set when the linger expired with no commit advance to tell: then the
    // sender waits for the commit LSN to move instead of re-arming the timer
    // (no periodic wake-ups while commits stall, e.g. a sync standby is down).
    let mut commit_stalled = false;
    let linger_timer = tokio::time::sleep_until(next_heartbeat);
    tokio::pin!(linger_timer);
    let mut pos = start.write_lsn;
    let mut sent_commit = 0u64;

    // One pass = ship every readable chunk within the window, then the commit
    // LSN (and a heartbeat if due) right behind the data, then ONE flush: a
    // batch of appends and the commit advance it carries share one syscall.
    let reason = 'session: loop {
        if *stop.borrow() {
            break "the leader's term ended".to_string();
        }
        let mut window_limited = false;
        let mut shipped = false;
        loop {
            let end = *written.borrow_and_update();
            if pos >= end {
                break;
            }
            let in_flight = pos.saturating_sub(acked_write.load(Ordering::Acquire));
            if in_flight >= ctx.window_bytes {
                window_limited = true;
                break;
            }
            // A share of the WAL mapping handed to the frame encoder: no copy and
            // no fresh buffer here (published WAL bytes never change).
            let (chunk_end, buf) = match wal.read_shared(wal::Lsn(pos), ctx.max_chunk_bytes) {
                Ok((e, b)) => (e.0, b),
                Err(e) => {
                    tracing::error!(follower = %follower, at = %wal::Lsn(pos), error = %e, "cannot read WAL to ship; ending this replication session");
                    break 'session format!("cannot read WAL at {}: {e}", wal::Lsn(pos));
                }
            };
            if chunk_end <= pos {
                // Nothing readable yet (bytes not published); try again shortly.
                break;
            }
            let n = buf.len() as u64;
            let msg = Message::WalData {
                start_lsn: pos,
                bytes: buf,
            };
            if let Err(e) = sink.feed(msg).await {
                break 'session format!("cannot send WAL: {e}");
            }
            ctx.events.shipped(n);
            pos = chunk_end;
            shipped = true;
        }
        if !streaming.load(Ordering::Acquire) && pos >= *written.borrow() {
            streaming.store(true, Ordering::Release);
            ctx.progress
                .lock()
                .set_state(&follower, FollowerState::Streaming);
            ctx.events.state(&follower, FollowerState::Streaming);
            tracing::info!(follower = %follower, at = %wal::Lsn(pos), "follower caught up; streaming");
        }
        // The commit LSN rides behind the data (same flush): followers learn
        // commits without a frame and syscall of their own. Alone, it goes out
        // only when a remote_apply write waits for it, when the linger expired,
        // or with a heartbeat (see "Commit LSN" in the module docs).
        let now = tokio::time::Instant::now();
        let heartbeat_due = now >= next_heartbeat;
        let linger_due = linger_armed && now >= linger_timer.deadline();
        if linger_due {
            linger_armed = false;
        }
        let apply_waiting = ctx.gate.has_waiters(AckLevel::RemoteApply);
        let c = *commit.borrow_and_update();
        let news = c != sent_commit;
        if news {
            commit_stalled = false;
        } else if linger_due {
            commit_stalled = true;
        }
        if heartbeat_due || (news && (shipped || apply_waiting || linger_due)) {
            sent_commit = c;
            if let Err(e) = sink.feed(keepalive(&ctx, c, heartbeat_due)).await {
                break format!("cannot send keepalive: {e}");
            }
            if heartbeat_due {
                next_heartbeat = now + ctx.heartbeat;
                heartbeat_timer.as_mut().reset(next_heartbeat);
            }
        }
        if sent_commit >= pos {
            commit_stalled = false;
        } else if !linger_armed && !commit_stalled {
            linger_armed = true;
            linger_timer.as_mut().reset(now + ctx.commit_linger);
        }
        if let Err(e) = sink.flush().await {
            break format!("cannot send: {e}");
        }
        if !window_limited && pos < *written.borrow() {
            // More WAL arrived while flushing (or bytes were not readable yet).
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            r = written.changed() => if r.is_err() { break "the leader stopped".to_string() },
            // A commit advance wakes the sender only while a remote_apply write
            // waits (the follower must apply at once) or commits stalled;
            // otherwise it rides with the next WAL or goes out when the linger
            // expires.
            r = commit.changed(), if apply_waiting || commit_stalled => if r.is_err() { break "the leader stopped".to_string() },
            _ = &mut heartbeat_timer => {}
            _ = &mut linger_timer, if linger_armed => {}
            // Only a window-limited sender waits for the follower's acks.
            _ = status_seen.notified(), if window_limited => {}
            r = &mut reader.0 => {
                break r.unwrap_or_else(|e| format!("status reader failed: {e}"));
            }
            _ = stop.changed() => {}
        }
        // Let the appends and commit advances of this scheduler tick land
        // first, so they share this pass's frame and flush.
        tokio::task::yield_now().await;
    };
    drop(reader);
    let commits = ctx.gate.set_connected(&follower, false);
    ctx.events.commits(commits);
    ctx.progress
        .lock()
        .set_state(&follower, FollowerState::Disconnected);
    ctx.events.state(&follower, FollowerState::Disconnected);
    reason
}

/// A task handle that aborts its task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn keepalive(ctx: &SenderContext, commit_lsn: u64, reply_requested: bool) -> Message {
    Message::Keepalive {
        term: ctx.term,
        leader_id: ctx.leader_id.clone(),
        flush_lsn: *ctx.flushed.borrow(),
        commit_lsn,
        send_time_us: now_us(),
        reply_requested,
    }
}
