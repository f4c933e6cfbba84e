//! How a WAL sender ships the commit LSN (module docs of `shipper::sender`,
//! "Commit LSN"), driven over an in-memory stream with the test playing the
//! follower. Heartbeats are an hour apart, so every keepalive seen here was sent
//! for the commit LSN, never for a heartbeat (after the first one at start).

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use proto::{FrameCodec, Message};
use shipper::sender::{serve_follower, SenderContext, SenderEvents, StartRequest};
use shipper::{AckLevel, CommitGate, Commits, FollowerState, Progress, SharedGate};
use tokio::io::DuplexStream;
use tokio::sync::watch;
use tokio_util::codec::Framed;

/// Upper bound for "the frame comes" (never reached when the sender works).
const BOUND: Duration = Duration::from_secs(20);

struct NoEvents;

impl SenderEvents for NoEvents {
    fn commits(&self, _: Commits) {}
    fn shipped(&self, _: u64) {}
    fn state(&self, _: &str, _: FollowerState) {}
}

struct Leader {
    _dir: tempfile::TempDir,
    wal: Arc<wal::Wal>,
    gate: SharedGate,
    written: watch::Sender<u64>,
    commit: watch::Sender<u64>,
    _flushed: watch::Sender<u64>,
    _stop: watch::Sender<bool>,
    follower: Framed<DuplexStream, FrameCodec>,
}

impl Leader {
    /// A leader whose sender serves the test's follower end (`linger`: the commit linger).
    fn start(linger: Duration) -> Leader {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = wal::WalOptions {
            segment_size: 1 << 20,
            ..Default::default()
        };
        let (wal, _) = wal::Wal::open(dir.path(), opts).expect("open WAL");
        let wal = Arc::new(wal);
        let policy = shipper::resolve_policy(
            shipper::ReplicationMode::Quorum,
            Some("ANY 1 (f)"),
            "l",
            &["l".to_string(), "f".to_string()],
        )
        .expect("policy");
        let gate = SharedGate::new(CommitGate::new(policy, false));
        let (written, written_rx) = watch::channel(0u64);
        let (commit, commit_rx) = watch::channel(0u64);
        let (flushed, flushed_rx) = watch::channel(0u64);
        let (stop, stop_rx) = watch::channel(false);
        let ctx = Arc::new(SenderContext {
            wal: wal.clone(),
            term: 1,
            leader_id: "l".into(),
            gate: gate.clone(),
            progress: Arc::new(Mutex::new(Progress::new())),
            written: written_rx,
            flushed: flushed_rx,
            commit: commit_rx,
            stop: stop_rx,
            heartbeat: Duration::from_secs(3600),
            max_chunk_bytes: 1 << 20,
            window_bytes: 64 << 20,
            commit_linger: linger,
            events: Arc::new(NoEvents),
        });
        let (a, b) = tokio::io::duplex(1 << 20);
        let leader_side = Framed::new(a, FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES));
        tokio::spawn(serve_follower(
            ctx,
            "f".into(),
            leader_side,
            StartRequest {
                term_history: Vec::new(),
                write_lsn: 0,
                flush_lsn: 0,
                apply_lsn: 0,
            },
        ));
        Leader {
            _dir: dir,
            wal,
            gate,
            written,
            commit,
            _flushed: flushed,
            _stop: stop,
            follower: Framed::new(b, FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES)),
        }
    }

    /// Append one record and publish it to the sender; its end LSN.
    fn append(&self, payload: &[u8]) -> u64 {
        let end = self.append_unpublished(payload);
        self.written.send_replace(end);
        end
    }

    /// Append one record without telling the sender yet; its end LSN.
    fn append_unpublished(&self, payload: &[u8]) -> u64 {
        self.wal
            .append(1, wal::kind::FIRST_APP, payload)
            .expect("append")
            .end
            .0
    }

    /// The next frame from the sender.
    async fn next(&mut self) -> Message {
        match tokio::time::timeout(BOUND, self.follower.next()).await {
            Ok(Some(Ok(m))) => m,
            other => panic!("no frame from the sender: {other:?}"),
        }
    }

    /// Expect `WalData` ending at `end`.
    async fn expect_data(&mut self, end: u64) {
        match self.next().await {
            Message::WalData { start_lsn, bytes } => {
                assert_eq!(start_lsn + bytes.len() as u64, end, "WalData up to {end}")
            }
            other => panic!("expected WalData up to {end}, got {other:?}"),
        }
    }

    /// Expect a `Keepalive` carrying `commit`, not asking for a reply.
    async fn expect_commit(&mut self, commit: u64) {
        match self.next().await {
            Message::Keepalive {
                commit_lsn,
                reply_requested,
                ..
            } => {
                assert_eq!(commit_lsn, commit, "keepalive's commit LSN");
                assert!(!reply_requested, "only heartbeats ask for a reply");
            }
            other => panic!("expected a keepalive with commit {commit}, got {other:?}"),
        }
    }

    /// Report the follower's position (all three LSNs at `lsn`).
    async fn report(&mut self, lsn: u64) {
        let status = Message::FollowerStatus {
            write_lsn: lsn,
            flush_lsn: lsn,
            apply_lsn: lsn,
            send_time_us: 0,
            reply_to_time_us: 0,
        };
        self.follower.send(status).await.expect("send status");
    }

    /// Start: the first heartbeat (a keepalive asking for a reply), answered.
    async fn handshake(&mut self) {
        match self.next().await {
            Message::Keepalive {
                reply_requested, ..
            } => assert!(reply_requested, "the first keepalive is a heartbeat"),
            other => panic!("expected the first heartbeat, got {other:?}"),
        }
        self.report(0).await;
    }
}

/// With a 1 ms linger: a commit with no WAL after it still reaches the follower
/// (idle), also after commits stalled for many lingers.
#[tokio::test]
async fn a_commit_with_no_wal_after_it_goes_out_after_the_linger() {
    let mut l = Leader::start(Duration::from_millis(1));
    l.handshake().await;
    let e1 = l.append(b"one");
    l.expect_data(e1).await;
    l.commit.send_replace(e1);
    l.expect_commit(e1).await;
    // Stall: shipped, but the commit does not move for many lingers.
    let e2 = l.append(b"two");
    l.expect_data(e2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    l.commit.send_replace(e2);
    l.expect_commit(e2).await;
    // Nothing is left to tell: the next frame is the data of the next write.
    let e3 = l.append(b"three");
    l.expect_data(e3).await;
}

/// With an hour-long linger: a commit advance rides behind the next WAL data
/// (the same burst), and goes out at once only while a remote_apply write waits.
#[tokio::test]
async fn a_commit_rides_with_the_next_wal_or_goes_at_once_for_remote_apply() {
    let mut l = Leader::start(Duration::from_secs(3600));
    l.handshake().await;
    let e1 = l.append(b"one");
    l.expect_data(e1).await;
    l.commit.send_replace(e1);
    // Give the sender ample time to (wrongly) send the commit on its own.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e2 = l.append(b"two");
    l.expect_data(e2).await;
    l.expect_commit(e1).await;
    // A remote_apply waiter: its commit must reach the follower at once. As
    // the node's write path does: append and register, then publish.
    l.gate.update_leader(e2 + 1_000_000, e2 + 1_000_000);
    let e3 = l.append_unpublished(b"three");
    let mut wait = l.gate.register(e3, AckLevel::RemoteApply);
    l.written.send_replace(e3);
    l.expect_data(e3).await;
    // Flushed, not applied yet: remote_flush reaches e3, remote_apply does not.
    let status = Message::FollowerStatus {
        write_lsn: e3,
        flush_lsn: e3,
        apply_lsn: e2,
        send_time_us: 0,
        reply_to_time_us: 0,
    };
    l.follower.send(status).await.expect("send");
    l.commit.send_replace(e3);
    l.expect_commit(e3).await;
    assert!(wait.try_result().is_none(), "not applied yet");
    let status = Message::FollowerStatus {
        write_lsn: e3,
        flush_lsn: e3,
        apply_lsn: e3,
        send_time_us: 0,
        reply_to_time_us: 0,
    };
    l.follower.send(status).await.expect("send");
    let r = tokio::time::timeout(BOUND, wait).await.expect("released");
    assert_eq!(r.expect("committed"), e3);
}
