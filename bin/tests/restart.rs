//! Restarts: a restarted follower resumes streaming from the end of its own WAL
//! (nothing re-sent), and a restarted node rebuilds its key-value state from
//! its WAL (PostgreSQL's crash recovery, without checkpoints yet).

mod common;

use common::{wait_for, Cluster, Opts, WAIT};

async fn write_keys(c: &Cluster, l: usize, prefix: &str, n: usize) -> u64 {
    let client = c.client(l).await;
    let futs = (0..n).map(|i| {
        let client = client.clone();
        let key = format!("{prefix}{i}");
        async move {
            client
                .put(key, vec![b'x'; 200], proto::AckLevel::Default)
                .await
        }
    });
    let mut last = 0;
    for r in futures::future::join_all(futs).await {
        last = last.max(r.expect("write").0);
    }
    last
}

/// A stopped follower, restarted, asks for WAL from its own end: the bytes it
/// receives are exactly those it missed, its WAL keeps its old start, and it
/// converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_follower_resumes_from_its_end() {
    let mut c = Cluster::start(Opts::new(3, "quorum")).await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    write_keys(&c, l, "a", 2000).await;
    c.wait_converged().await;
    let f = (l + 1) % 3;
    let f_end = c.shared(f).wal.write_lsn().0;
    let f_first = c.shared(f).wal.first_lsn().0;
    c.stop_node(f).await;
    write_keys(&c, l, "b", 2000).await;
    let leader_end = c.shared(l).wal.write_lsn().0;
    c.start_node(f).await;
    assert_eq!(
        c.shared(f).wal.write_lsn().0,
        f_end,
        "recovered its whole WAL"
    );
    c.wait_leader().await;
    c.put_ok(l, "last", "1", None).await;
    c.wait_converged().await;
    let end = c.shared(l).wal.write_lsn().0;
    // Metrics start at zero with the restarted node: it received exactly what
    // it missed, nothing from before its own end.
    let received = c.shared(f).metrics.received_bytes_total.get();
    assert_eq!(
        received,
        end - f_end,
        "received bytes = WAL written while it was down ({} .. {}), leader end before restart {}",
        wal::Lsn(f_end),
        wal::Lsn(end),
        wal::Lsn(leader_end)
    );
    assert_eq!(
        c.shared(f).wal.first_lsn().0,
        f_first,
        "WAL not truncated/rebuilt"
    );
    c.assert_wal_identical();
    c.shutdown().await;
}

/// A restarted follower rebuilds its key-value state from its WAL (same digest
/// as before, every key present), once it learns the commit LSN.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_follower_rebuilds_state_from_wal() {
    let mut c = Cluster::start(Opts::new(3, "quorum")).await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    write_keys(&c, l, "k", 1500).await;
    let client = c.client(l).await;
    for i in 0..100 {
        client
            .delete(format!("k{i}"), proto::AckLevel::Default)
            .await
            .expect("delete");
    }
    let (applied, digest) = c.wait_converged().await;
    let f = (l + 2) % 3;
    c.restart_node(f).await;
    // No new write is needed: the leader's keepalives carry the commit LSN.
    let s = c.shared(f).clone();
    wait_for("restarted follower re-applied its WAL", WAIT, || {
        s.applied_lsn() >= applied
    })
    .await;
    assert_eq!(s.kv.read().digest(), digest);
    assert_eq!(s.kv.read().len(), 1400);
    assert!(s.kv.read().get(b"k0").is_none());
    drop(s); // a node's WAL closes only when nothing holds its state
    c.shutdown().await;
}

/// The whole cluster restarts: a new leader is elected in a new term, the
/// earlier records become committed through it (figure-8 rule: via its own
/// TERM_START), and every node rebuilds the same state from its WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_restart_rebuilds_state() {
    let mut c = Cluster::start(Opts::new(3, "quorum")).await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    write_keys(&c, l, "k", 1000).await;
    let (_, digest) = c.wait_converged().await;
    let term = c.shared(l).role().term;
    for i in 0..3 {
        c.stop_node(i).await;
    }
    for i in 0..3 {
        c.start_node(i).await;
    }
    let l2 = c.wait_leader().await;
    assert!(c.shared(l2).role().term > term);
    c.wait_converged().await;
    for i in 0..3 {
        let kv = c.shared(i).kv.read();
        assert_eq!(kv.len(), 1000, "node {}", c.ids[i]);
        assert_eq!(kv.digest(), digest, "node {}", c.ids[i]);
    }
    c.put_ok(l2, "new", "1", None).await;
    c.wait_converged().await;
    c.assert_wal_identical();
    c.shutdown().await;
}
