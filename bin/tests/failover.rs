//! Elections between real nodes: one leader at start-up; a stopped leader is
//! replaced and no acknowledged write is lost; the old leader rejoins as a
//! follower and a divergent tail is cut (no manual pg_rewind).

mod common;

use common::{wait_for, Cluster, Opts, WAIT};
use walship::node::Role;

/// Three nodes start as followers and elect exactly one leader, which every
/// node follows in the same term.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_elect_exactly_one_leader() {
    let c = Cluster::start(Opts::new(3, "quorum")).await;
    let l = c.wait_leader().await;
    let term = c.shared(l).role().term;
    assert!(term >= 1);
    for i in 0..3 {
        let r = c.shared(i).role();
        assert_eq!(r.term, term);
        assert_eq!(r.role == Role::Leader, i == l, "node {}", c.ids[i]);
    }
    c.wait_streaming(l).await;
    c.put_ok(l, "k", "v", None).await;
    c.shutdown().await;
}

/// Stop the leader: another node is elected, every write acknowledged before
/// is there, writes succeed on the new leader; the old leader restarted
/// rejoins as a follower and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_stop_elects_new_leader_and_old_rejoins() {
    let mut c = Cluster::start(Opts::new(3, "quorum")).await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    let term = c.shared(l).role().term;
    let mut acked = Vec::new();
    for i in 0..100 {
        let k = format!("k{i}");
        c.put_ok(l, &k, &format!("v{i}"), None).await;
        acked.push(k);
    }
    c.stop_node(l).await;
    let l2 = c.wait_leader().await;
    assert_ne!(l2, l);
    assert!(c.shared(l2).role().term > term);
    c.put_ok(l2, "after", "1", None).await;
    c.wait_converged().await;
    for i in c.running() {
        let kv = c.shared(i).kv.read();
        for (n, k) in acked.iter().enumerate() {
            assert_eq!(
                kv.get(k.as_bytes()).as_deref(),
                Some(format!("v{n}").as_bytes()),
                "acknowledged {k} on {}",
                c.ids[i]
            );
        }
    }
    c.start_node(l).await;
    let l3 = c.wait_leader().await;
    assert_ne!(
        l3, l,
        "the returning node does not disrupt the leader (pre-vote)"
    );
    c.put_ok(l3, "after2", "1", None).await;
    let (_, digest) = c.wait_converged().await;
    assert_eq!(c.shared(l).kv.read().digest(), digest);
    assert_eq!(c.shared(l).role().role, Role::Follower);
    c.assert_wal_identical();
    c.shutdown().await;
}

/// An old leader with a divergent, never-committed tail (ack=local writes while
/// its followers were down) rejoins under a new leader: the tail is cut at the
/// fork point, it never showed those writes, and it converges byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_leader_divergent_tail_is_cut() {
    let mut c = Cluster::start(Opts {
        auto: false,
        ack_timeout: "500ms",
        ..Opts::new(3, "quorum")
    })
    .await;
    let n1 = c.promote(0).await;
    c.wait_streaming(n1).await;
    c.put_ok(n1, "common", "1", None).await;
    c.wait_converged().await;
    let fork = c.shared(n1).wal.write_lsn().0;
    c.stop_node(1).await;
    c.stop_node(2).await;
    for i in 0..20 {
        c.put_ok(n1, &format!("lost{i}"), "x", Some("local")).await;
    }
    let n1_end = c.shared(n1).wal.write_lsn().0;
    assert!(n1_end > fork);
    // Never committed: never applied.
    assert!(c.shared(n1).applied_lsn() <= fork);
    assert!(c.shared(n1).kv.read().get(b"lost0").is_none());
    c.stop_node(n1).await;

    c.start_node(1).await;
    c.start_node(2).await;
    let n2 = c.promote(1).await;
    for i in 0..10 {
        c.put_ok(n2, &format!("new{i}"), "y", None).await;
    }
    c.start_node(0).await;
    wait_for("old leader follows n2", WAIT, || {
        let r = c.shared(0).role();
        r.role == Role::Follower && r.leader_id.as_deref() == Some("n2")
    })
    .await;
    c.put_ok(n2, "final", "z", None).await;
    let (_, digest) = c.wait_converged().await;
    let s = c.shared(0);
    assert_eq!(s.kv.read().digest(), digest);
    assert!(s.kv.read().get(b"lost0").is_none());
    assert!(s.kv.read().get(b"new9").is_some());
    assert_eq!(s.wal.write_lsn().0, c.shared(n2).wal.write_lsn().0);
    c.assert_wal_identical();
    c.shutdown().await;
}

/// Async mode: an old leader's tail that it had committed and APPLIED on its
/// own (async acknowledges on the leader's flush) is lost by a failover; when
/// it rejoins, the tail is cut, its key-value state is rebuilt from the WAL
/// that remains, and it converges with the new leader (DESIGN.md: the async
/// loss window).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_old_leader_applied_tail_is_cut_and_state_rebuilt() {
    let mut c = Cluster::start(Opts {
        auto: false,
        ..Opts::new(3, "async")
    })
    .await;
    let n1 = c.promote(0).await;
    c.wait_streaming(n1).await;
    c.put_ok(n1, "common", "1", None).await;
    c.wait_converged().await;
    c.stop_node(1).await;
    c.stop_node(2).await;
    let mut last = 0;
    for i in 0..20 {
        last = c.put_ok(n1, &format!("lost{i}"), "x", None).await;
    }
    let s1 = c.shared(n1).clone();
    wait_for("n1 applied its async writes", WAIT, || {
        s1.applied_lsn() >= last
    })
    .await;
    assert!(s1.kv.read().get(b"lost0").is_some());
    drop(s1);
    c.stop_node(n1).await;

    c.start_node(1).await;
    c.start_node(2).await;
    let n2 = c.promote(1).await;
    for i in 0..30 {
        c.put_ok(n2, &format!("new{i}"), "y", None).await;
    }
    c.start_node(0).await;
    wait_for("old leader follows n2", WAIT, || {
        let r = c.shared(0).role();
        r.role == Role::Follower && r.leader_id.as_deref() == Some("n2")
    })
    .await;
    c.put_ok(n2, "final", "z", None).await;
    let (_, digest) = c.wait_converged().await;
    let s = c.shared(0);
    assert_eq!(s.kv.read().digest(), digest);
    assert!(s.kv.read().get(b"lost0").is_none(), "the lost tail is gone");
    assert!(s.kv.read().get(b"new29").is_some());
    c.assert_wal_identical();
    c.shutdown().await;
}
