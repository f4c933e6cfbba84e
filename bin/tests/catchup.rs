//! A follower far behind catches up: it is stopped while the leader takes
//! many MiB of 4 KiB writes, then restarted; it streams the backlog (flow
//! controlled by the sender's window) and converges byte for byte.

mod common;

use common::{Cluster, Opts};

async fn far_behind(total_bytes: u64, segment_size: &'static str) {
    let mut c = Cluster::start(Opts {
        segment_size,
        ..Opts::new(3, "quorum")
    })
    .await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    let f = (l + 1) % 3;
    c.stop_node(f).await;
    let client = c.client(l).await;
    let value = bytes::Bytes::from(vec![b'w'; 4096]);
    let n = total_bytes / 4096;
    let mut done = 0u64;
    // Pipelined: 256 writes in flight share group-committed flushes.
    while done < n {
        let batch = (n - done).min(256);
        let futs = (0..batch).map(|i| {
            let client = client.clone();
            let value = value.clone();
            let key = format!("k{}", (done + i) % 5000);
            async move { client.put(key, value, proto::AckLevel::Default).await }
        });
        for r in futures::future::join_all(futs).await {
            r.expect("write while the follower is down");
        }
        done += batch;
    }
    let behind = c.shared(l).wal.write_lsn().0;
    assert!(behind >= total_bytes);
    c.start_node(f).await;
    c.wait_leader().await;
    c.put_ok(l, "last", "1", None).await;
    c.wait_converged().await;
    assert!(c.shared(f).metrics.received_bytes_total.get() >= total_bytes);
    c.assert_wal_identical();
    c.shutdown().await;
}

/// 64 MiB of 4 KiB writes while a follower is down (CI size).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_far_behind_catches_up_64mib() {
    far_behind(64 << 20, "16MiB").await;
}

/// The 1 GiB variant (needs ~4 GiB of disk for three nodes). Run with:
/// `CARGO_TARGET_DIR=/work/targets/it cargo test -p walship --release --test catchup -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn follower_far_behind_catches_up_1gib() {
    far_behind(1 << 30, "64MiB").await;
}
