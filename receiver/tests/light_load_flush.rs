//! The follower's light-load flush path (module docs of `receiver::stream`, "Who
//! flushes"), with the test playing the leader over an in-memory stream: one
//! small record per batch is flushed on the receiving worker thread, the node's
//! `before_inline_flush` hook runs before that fdatasync, and the batch costs
//! exactly one `FollowerStatus`, which carries the new flush LSN and what the
//! hook applied (the previous record, committed by the keepalive riding with
//! the new one) — no apply-only status of its own. (After a slow fdatasync the
//! worker is handed over and the hook is skipped: those rounds check only the
//! one status, so the test does not depend on the disk's speed.)

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use proto::{FrameCodec, HelloOk, Message};
use receiver::stream::{
    follow, BoxedIo, ConnectFuture, Connector, FlushPolicy, FollowContext, ReceiverEvents,
};
use tokio::io::DuplexStream;
use tokio::sync::watch;
use tokio_util::codec::Framed;

/// Upper bound for "the frame comes" (never reached when the receiver works).
const BOUND: Duration = Duration::from_secs(20);

/// Hands out the follower's end of the in-memory stream once.
struct OneStream(std::sync::Mutex<Option<DuplexStream>>);

impl Connector for OneStream {
    fn connect<'a>(&'a self, _addr: SocketAddr, _leader_id: &'a str) -> ConnectFuture<'a> {
        let s = self.0.lock().expect("connector lock").take();
        Box::pin(async move {
            s.map(|s| Box::new(s) as BoxedIo)
                .ok_or_else(|| "the test leader accepts one connection".to_string())
        })
    }
}

/// The node's side: the hook applies up to the commit LSN (as the node's
/// `apply_small_advance` does) and counts its calls.
struct Node {
    commit: watch::Receiver<u64>,
    applied: watch::Sender<u64>,
    hooks: AtomicUsize,
}

impl ReceiverEvents for Node {
    fn connected(&self, _: &str) {}
    fn disconnected(&self, _: &str, _: &str) {}
    fn caught_up(&self, _: bool) {}
    fn leader_flush(&self, _: u64) {}
    fn received(&self, _: u64) {}
    fn truncated(&self, _: u64, _: &wal::TruncateReport) {}
    fn needs_rebuild(&self, _: &str) {}
    fn before_inline_flush(&self) {
        self.hooks.fetch_add(1, Ordering::SeqCst);
        let c = *self.commit.borrow();
        self.applied.send_if_modified(|a| {
            if c > *a {
                *a = c;
                true
            } else {
                false
            }
        });
    }
}

fn open_wal(dir: &std::path::Path) -> Arc<wal::Wal> {
    let opts = wal::WalOptions {
        segment_size: 1 << 20,
        ..Default::default()
    };
    Arc::new(wal::Wal::open(dir, opts).expect("open WAL").0)
}

async fn next_status(leader: &mut Framed<DuplexStream, FrameCodec>) -> (u64, u64) {
    match tokio::time::timeout(BOUND, leader.next()).await {
        Ok(Some(Ok(Message::FollowerStatus {
            flush_lsn,
            apply_lsn,
            ..
        }))) => (flush_lsn, apply_lsn),
        other => panic!("expected a FollowerStatus, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_small_record_per_batch_costs_one_status_carrying_the_apply() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let leader_wal = open_wal(leader_dir.path());
    let follower_wal = open_wal(follower_dir.path());

    let (leader_end, follower_end) = tokio::io::duplex(1 << 20);
    let (written_tx, _) = watch::channel(0u64);
    let (flush_tx, _) = watch::channel(0u64);
    let (applied_tx, applied_rx) = watch::channel(0u64);
    let (commit_tx, commit_rx) = watch::channel(0u64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let node = Arc::new(Node {
        commit: commit_rx,
        applied: applied_tx,
        hooks: AtomicUsize::new(0),
    });
    let ctx = FollowContext {
        wal: follower_wal.clone(),
        node_id: "f".into(),
        cluster_id: "c".into(),
        token: String::new(),
        leader_id: "l".into(),
        leader_addr: "127.0.0.1:1".parse().expect("addr"),
        connector: Arc::new(OneStream(std::sync::Mutex::new(Some(follower_end)))),
        written_tx,
        flush_tx,
        flush: FlushPolicy::Inline { fsync: true },
        applied_rx,
        commit_tx,
        events: node.clone(),
        stop: stop_rx,
    };
    let receiver = tokio::spawn(follow(ctx));

    let mut leader = Framed::new(leader_end, FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES));
    proto::server_handshake(
        &mut leader,
        "c",
        |_, _| true,
        |_| {
            Ok(HelloOk {
                node_id: "l".into(),
                term: 1,
                leader_id: Some("l".into()),
            })
        },
    )
    .await
    .expect("handshake");
    match tokio::time::timeout(BOUND, leader.next()).await {
        Ok(Some(Ok(Message::StartReplication { write_lsn: 0, .. }))) => {}
        other => panic!("expected StartReplication from 0, got {other:?}"),
    }
    // The status every session starts with.
    assert_eq!(next_status(&mut leader).await, (0, 0));

    let rounds = 20;
    let mut prev_end = 0u64;
    for i in 0..rounds {
        let a = leader_wal
            .append(1, 16, &[b'v'; 100])
            .expect("leader append");
        let mut bytes = Vec::new();
        leader_wal
            .read_raw(a.lsn, 1 << 20, &mut bytes)
            .expect("leader read");
        let hooks_before = node.hooks.load(Ordering::SeqCst);
        // The record, and behind it (same flush) the commit of the previous
        // one: what a leader sends per write at one client.
        leader
            .feed(Message::WalData {
                start_lsn: a.lsn.0,
                bytes: bytes.into(),
            })
            .await
            .expect("send WAL");
        leader
            .feed(Message::Keepalive {
                term: 1,
                leader_id: "l".into(),
                flush_lsn: a.end.0,
                commit_lsn: prev_end,
                send_time_us: 0,
                reply_requested: false,
            })
            .await
            .expect("send keepalive");
        SinkExt::<Message>::flush(&mut leader).await.expect("flush");
        // The next status reports this record durable (an apply-only status,
        // the apply done after the flush, would come first, still reporting
        // the previous flush LSN) and, when the hook ran before this flush
        // (always, unless the previous fdatasync was slow: then the worker is
        // handed over and the node's applier task applies), the previous
        // record applied.
        let (flush, apply) = next_status(&mut leader).await;
        assert_eq!(flush, a.end.0, "round {i}: one status per batch");
        if node.hooks.load(Ordering::SeqCst) > hooks_before {
            assert_eq!(
                apply, prev_end,
                "round {i}: the apply rides in the flush status"
            );
        }
        assert!(
            follower_wal.flush_lsn().0 >= a.end.0,
            "reported durable only once durable"
        );
        prev_end = a.end.0;
    }
    assert!(
        node.hooks.load(Ordering::SeqCst) <= rounds,
        "at most one hook per flush"
    );

    stop_tx.send_replace(true);
    tokio::time::timeout(BOUND, receiver)
        .await
        .expect("the receiver stops")
        .expect("receiver task");
}
