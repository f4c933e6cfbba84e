//! `[runtime] worker_threads` (docs/INTERFACE.md): a real `walship serve` runs
//! its async runtime on the configured number of worker threads, replicates and
//! answers with one, and refuses a bad count naming the key (exit 2).

use std::time::Duration;

use walship::client::Client;
use walship::demo::{ClusterSpec, LocalCluster};

const EXE: &str = env!("CARGO_BIN_EXE_walship");
/// Upper bound for "this must happen soon".
const LIMIT: Duration = Duration::from_secs(30);

fn with_runtime(c: &LocalCluster, worker_threads: &str) {
    for i in 0..c.len() {
        let p = c.node(i).config.clone();
        let mut text = std::fs::read_to_string(&p).expect("read config");
        text.push_str(&format!("\n[runtime]\nworker_threads = {worker_threads}\n"));
        std::fs::write(&p, text).expect("write config");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_one_worker_thread_nodes_replicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = LocalCluster::create(EXE.as_ref(), dir.path(), ClusterSpec::fast(3))
        .expect("configs written");
    with_runtime(&c, "1");
    c.start_all().expect("nodes start");
    c.wait_healthy(LIMIT).await.expect("healthy");
    for i in 0..c.len() {
        let lines = c.log_lines(i, "async runtime started");
        assert!(
            lines.iter().any(|l| l.contains("worker_threads=1")),
            "node {i} did not log its runtime with one worker thread: {lines:?}\n{}",
            c.log_tail(i, 8)
        );
    }
    let (l, _) = c.wait_leader(&[0, 1, 2], 1, LIMIT).await.expect("a leader");
    let followers: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    for &f in &followers {
        c.wait_follower_of(f, l, LIMIT)
            .await
            .expect("follower streams");
    }
    let client = Client::connect(c.node(l).addr, "walship-demo", "")
        .await
        .expect("client connects");
    let mut last = 0;
    for i in 0..200u32 {
        (last, _) = client
            .put(
                format!("k{i}").into_bytes(),
                &b"v"[..],
                proto::AckLevel::RemoteApply,
            )
            .await
            .expect("quorum write acknowledged");
    }
    assert!(last > 0);
    // remote_apply by a quorum: every follower converges to the leader's log.
    c.wait_converged(&[0, 1, 2], LIMIT)
        .await
        .expect("the followers converge");
    c.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_worker_threads_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = LocalCluster::create(EXE.as_ref(), dir.path(), ClusterSpec::fast(1))
        .expect("config written");
    with_runtime(&c, "0");
    c.start(0).expect("process starts");
    let deadline = std::time::Instant::now() + LIMIT;
    let status = loop {
        if let Some(st) = c.exited(0) {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a node with worker_threads = 0 did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(2), "{}", c.log_tail(0, 8));
    let named = c.log_lines(0, "runtime.worker_threads");
    assert!(!named.is_empty(), "{}", c.log_tail(0, 8));
}
