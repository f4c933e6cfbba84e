//! Each ack level keeps its promise (PostgreSQL's `synchronous_commit`):
//! `remote_apply` — visible on the standbys at once; `remote_flush` — on the
//! standbys' stable storage; `remote_write` — in the standbys' WAL; `local` —
//! only the leader's flush, so it returns with every follower down.

mod common;

use common::{Cluster, Opts};

/// `ANY 2 (n1, n2, n3)`: the leader skips itself, so both followers must have
/// each write at the requested level.
fn opts() -> Opts {
    Opts {
        standbys: Some("ANY 2 (n1, n2, n3)".into()),
        ..Opts::new(3, "quorum")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_apply_is_visible_on_followers_at_once() {
    let c = Cluster::start(opts()).await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    for round in 0..30 {
        let key = format!("k{}", round % 7);
        let val = format!("v{round}");
        let lsn = c.put_ok(l, &key, &val, Some("remote_apply")).await;
        for &f in &followers {
            // No min_lsn: the value must already be there.
            let (st, body, applied) = c.get(f, &key, "").await;
            assert_eq!(
                (st, body.as_str()),
                (200, val.as_str()),
                "round {round} on {}",
                c.ids[f]
            );
            assert!(applied >= lsn);
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_flush_and_remote_write_reach_followers() {
    let c = Cluster::start(opts()).await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    for round in 0..30 {
        let lsn = c
            .put_ok(l, &format!("f{round}"), "v", Some("remote_flush"))
            .await;
        for &f in &followers {
            let s = c.shared(f);
            assert!(
                *s.flush_tx.borrow() >= lsn && s.wal.flush_lsn().0 >= lsn,
                "round {round}: {} flushed {} < {}",
                c.ids[f],
                s.wal.flush_lsn(),
                wal::Lsn(lsn)
            );
        }
        let lsn = c
            .put_ok(l, &format!("w{round}"), "v", Some("remote_write"))
            .await;
        for &f in &followers {
            assert!(c.shared(f).wal.write_lsn().0 >= lsn, "round {round}");
        }
    }
    c.shutdown().await;
}

/// `local` returns with both followers down (automatic failover off so that the
/// leader does not fence itself); the remote levels time out meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_returns_with_followers_down() {
    let mut c = Cluster::start(Opts {
        auto: false,
        ack_timeout: "500ms",
        ..Opts::new(3, "quorum")
    })
    .await;
    let l = c.promote(0).await;
    c.wait_streaming(l).await;
    c.stop_node(1).await;
    c.stop_node(2).await;
    for i in 0..10 {
        let lsn = c.put_ok(l, &format!("k{i}"), "v", Some("local")).await;
        assert!(
            c.shared(l).wal.flush_lsn().0 >= lsn,
            "local means flushed on the leader"
        );
    }
    let (st, v, _) = c.put(l, "r", "v", Some("remote_flush")).await;
    assert_eq!(st, 504, "{v}");
    c.start_node(1).await;
    c.start_node(2).await;
    c.wait_leader().await;
    c.put_ok(l, "after", "v", None).await;
    c.wait_converged().await;
    c.assert_wal_identical();
    c.shutdown().await;
}
