//! `quorum` mode (PostgreSQL's `ANY k (…)`, majority by default): writes keep
//! being acknowledged with one of three nodes down; the commit LSN advances and
//! the returning node converges.

mod common;

use common::{Cluster, Opts};

/// One follower down: remote_flush writes still succeed (the leader plus the
/// other follower form a majority); the commit LSN covers every write; the
/// stopped node catches up when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_acks_with_one_node_down() {
    let mut c = Cluster::start(Opts {
        ack_timeout: "3s",
        ..Opts::new(3, "quorum")
    })
    .await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    c.put_ok(l, "before", "1", None).await;
    let down = (l + 1) % 3;
    let up = (l + 2) % 3;
    c.stop_node(down).await;
    let mut last = 0;
    for i in 0..50 {
        let lsn = c.put_ok(l, &format!("k{i}"), "v", None).await;
        assert!(
            *c.shared(up).flush_tx.borrow() >= lsn,
            "the live follower flushed it"
        );
        assert!(
            c.shared(l).commit_lsn() >= lsn,
            "commit LSN covers the write"
        );
        last = lsn;
    }
    // The live follower learns the commit LSN and applies (min_lsn read).
    let (st, body, _) = c
        .get(up, "k49", &format!("?min_lsn={}&wait=5s", wal::Lsn(last)))
        .await;
    assert_eq!((st, body.as_str()), (200, "v"));

    c.start_node(down).await;
    c.wait_leader().await;
    c.wait_streaming(l).await;
    c.put_ok(l, "after", "1", None).await;
    c.wait_converged().await;
    c.assert_wal_identical();
    c.shutdown().await;
}

/// Five nodes, `ANY 2`: two nodes down, writes still succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_five_nodes_two_down() {
    let mut c = Cluster::start(Opts {
        ack_timeout: "3s",
        ..Opts::new(5, "quorum")
    })
    .await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    let down: Vec<usize> = (1..=2).map(|d| (l + d) % 5).collect();
    for &d in &down {
        c.stop_node(d).await;
    }
    for i in 0..20 {
        c.put_ok(l, &format!("k{i}"), "v", None).await;
    }
    for &d in &down {
        c.start_node(d).await;
    }
    c.wait_leader().await;
    c.put_ok(l, "after", "1", None).await;
    c.wait_converged().await;
    c.assert_wal_identical();
    c.shutdown().await;
}
