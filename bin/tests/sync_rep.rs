//! `sync` mode (PostgreSQL's `FIRST k (…)`): a write waits for the first k
//! connected standbys of the priority list; without them it times out (outcome
//! unknown), and it succeeds again when a standby returns or the list falls back
//! to the next standby.

mod common;

use common::{wait_for, Cluster, Opts, WAIT};

/// n1 is the only node that may lead (n2, n3 have priority 0), so the standby
/// list is about n2 and n3 only.
fn opts(standbys: &str) -> Opts {
    Opts {
        standbys: Some(standbys.to_string()),
        ack_timeout: "500ms",
        priorities: vec![1, 0, 0],
        ..Opts::new(3, "sync")
    }
}

/// `FIRST 1 (n2)`: with n2 stopped a write times out (504 ack_timeout, outcome
/// unknown); once n2 is back, writes succeed again and the timed-out write
/// commits too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_1_times_out_without_its_standby_and_resumes() {
    let mut c = Cluster::start(opts("FIRST 1 (n2)")).await;
    let l = c.wait_leader().await;
    assert_eq!(l, 0, "only n1 may lead");
    c.wait_streaming(l).await;
    c.put_ok(l, "a", "1", None).await;
    let n2 = c.idx("n2");
    c.stop_node(n2).await;

    let (st, v, _) = c.put(l, "b", "2", None).await;
    assert_eq!(st, 504, "write without the sync standby: {v}");
    assert_eq!(v["code"], "ack_timeout");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("outcome unknown"),
        "{v}"
    );
    // ack=local still completes (only the leader's flush).
    c.put_ok(l, "c", "3", Some("local")).await;
    // n3 is not in the list: it never stands in.
    let (st, _, _) = c.put(l, "d", "4", Some("remote_write")).await;
    assert_eq!(st, 504);

    c.start_node(n2).await;
    c.wait_leader().await;
    let lsn = c.put_ok(l, "e", "5", None).await;
    // remote_flush promise: n2 has it on disk.
    assert!(*c.shared(n2).flush_tx.borrow() >= lsn);
    c.wait_converged().await;
    for i in c.running() {
        let kv = c.shared(i).kv.read();
        for k in ["a", "b", "c", "d", "e"] {
            assert!(kv.get(k.as_bytes()).is_some(), "{k} on {}", c.ids[i]);
        }
    }
    c.assert_wal_identical();
    c.shutdown().await;
}

/// `FIRST 1 (n2, n3)`: when n2 stops, n3 becomes the synchronous standby and
/// writes keep succeeding; /status shows the sync states.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_1_falls_back_to_the_next_standby() {
    let mut c = Cluster::start(opts("FIRST 1 (n2, n3)")).await;
    let l = c.wait_leader().await;
    assert_eq!(l, 0);
    c.wait_streaming(l).await;
    let (n2, n3) = (c.idx("n2"), c.idx("n3"));
    let state_of = |c: &Cluster, id: &str| {
        c.shared(l)
            .leader
            .lock()
            .as_ref()
            .map(|t| t.gate.sync_state(id).as_str())
    };
    wait_for("n2 sync, n3 potential", WAIT, || {
        state_of(&c, "n2") == Some("sync") && state_of(&c, "n3") == Some("potential")
    })
    .await;
    c.put_ok(l, "a", "1", None).await;

    c.stop_node(n2).await;
    wait_for("n3 becomes the sync standby", WAIT, || {
        state_of(&c, "n3") == Some("sync")
    })
    .await;
    for i in 0..20 {
        let lsn = c.put_ok(l, &format!("k{i}"), "v", None).await;
        assert!(
            *c.shared(n3).flush_tx.borrow() >= lsn,
            "n3 flushed the write"
        );
    }
    let (_, st) = c.get_json(l, "/status").await;
    let f3 = st["followers"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["id"] == "n3").cloned())
        .expect("n3 in followers");
    assert_eq!(f3["sync_state"], "sync");

    c.start_node(n2).await;
    c.wait_streaming(l).await;
    wait_for("n2 is the sync standby again", WAIT, || {
        state_of(&c, "n2") == Some("sync")
    })
    .await;
    c.put_ok(l, "z", "1", None).await;
    c.wait_converged().await;
    c.assert_wal_identical();
    c.shutdown().await;
}
