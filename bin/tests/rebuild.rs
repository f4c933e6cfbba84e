//! Follower rebuild from the leader's checkpoint (issue 5, part 3), with real
//! nodes on loopback:
//!
//! * a follower stopped while the leader's WAL moved past it is cut loose
//!   (`wal_not_available`), rebuilds itself (`auto_rebuild`) and ends with the
//!   leader's state and byte-identical WAL from the checkpoint LSN on;
//! * an empty new node joins by rebuild, on `POST /v1/admin/rebuild`, after
//!   waiting in `needs_rebuild`;
//! * a rebuild interrupted halfway through the transfer (the node stops) is
//!   resumed at start-up from the partial copy, serves no reads meanwhile, and
//!   still ends identical.
//!
//! The leader's WAL is cut below the follower with `Wal::remove_before` up to
//! the leader's applied LSN, as retention past `wal.max_retained` does.

mod common;

use std::time::Duration;

use common::{wait_for, Cluster, Opts, WAIT};
use walship::config::Config;
use walship::node::Shared;

/// Write `n` keys of `value_len` bytes through node `l`, 128 in flight.
async fn fill(c: &Cluster, l: usize, prefix: &str, n: usize, value_len: usize) {
    let client = c.client(l).await;
    let value = bytes::Bytes::from(vec![b'v'; value_len]);
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(128);
        let futs = (0..batch).map(|i| {
            let client = client.clone();
            let value = value.clone();
            let key = format!("{prefix}{}", done + i);
            async move { client.put(key, value, proto::AckLevel::Default).await }
        });
        for r in futures::future::join_all(futs).await {
            r.expect("write");
        }
        done += batch;
    }
}

/// Remove the leader's WAL below its applied LSN (whole segments), as
/// retention does past `wal.max_retained`. Returns the new first LSN.
fn cut_leader_wal(s: &Shared, must_pass: u64) -> u64 {
    let upto = s.applied_lsn().min(s.wal.flush_lsn().0);
    s.wal.remove_before(wal::Lsn(upto)).expect("remove_before");
    let first = s.wal.first_lsn().0;
    assert!(
        first > must_pass,
        "the leader's WAL must start after {} (starts at {})",
        wal::Lsn(must_pass),
        wal::Lsn(first)
    );
    first
}

fn auto_rebuild(_: usize, cfg: &mut Config) {
    cfg.replication.auto_rebuild = true;
}

/// The rebuilt node `f` holds the leader's state and WAL: same digest and
/// applied LSN everywhere, byte-identical WAL over the range all hold (which
/// starts at `f`'s checkpoint LSN).
async fn assert_identical(c: &Cluster, f: usize, tag: &str) {
    let l = c.wait_leader().await;
    c.put_ok(l, &format!("after-{tag}"), "1", None).await;
    let (applied, digest) = c.wait_converged().await;
    assert_eq!(c.shared(f).kv.read().digest(), digest);
    assert_eq!(c.shared(f).applied_lsn(), applied);
    let (from, to) = c.assert_wal_identical();
    assert_eq!(
        from,
        c.shared(f).wal.first_lsn().0,
        "the compared WAL starts at the rebuilt node's checkpoint LSN"
    );
    assert!(to > from);
}

async fn wait_rebuilt(c: &Cluster, f: usize, completed: u64) {
    wait_for("the rebuild completed and the node streams", WAIT, || {
        let s = c.shared(f);
        s.rebuild.progress().completed >= completed
            && !s.rebuild.is_active()
            && s.follower.lock().connected
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_loose_follower_is_rebuilt_and_identical() {
    let mut c = Cluster::start(Opts {
        tweak: Some(auto_rebuild),
        ..Opts::new(3, "quorum")
    })
    .await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    fill(&c, l, "a", 200, 100).await;
    let f = (l + 1) % 3;
    c.wait_converged().await;
    let f_end = c.shared(f).wal.write_lsn().0;
    c.stop_node(f).await;
    // ~3 MiB of WAL (three 1 MiB segments) while f is down, with overwrites
    // and deletes so the checkpoint is not just the WAL replayed.
    fill(&c, l, "b", 1500, 2000).await;
    fill(&c, l, "a", 100, 10).await;
    for i in 0..20 {
        let r = c
            .http
            .delete(format!("{}/v1/kv/b{i}", c.url(l)))
            .send()
            .await
            .expect("delete");
        assert_eq!(r.status().as_u16(), 200);
    }
    c.wait_streaming(l).await;
    cut_leader_wal(c.shared(l), f_end);

    c.start_node(f).await;
    wait_rebuilt(&c, f, 1).await;
    let s = c.shared(f);
    let ckpt = s.wal.first_lsn().0;
    assert!(
        ckpt > f_end,
        "the WAL of the rebuilt node starts at the checkpoint"
    );
    assert_eq!(s.metrics.rebuilds_completed_total.get(), 1);
    assert!(s.metrics.rebuild_received_bytes_total.get() > 1 << 20);
    assert!(!walship::node::rebuild::marker_path(&s.cfg.data_dir).exists());
    let leader_metrics = &c.shared(l).metrics;
    assert_eq!(leader_metrics.basebackups_served_total.get(), 1);
    // The leader's pin is released once the node streams.
    wait_for("the leader released its WAL pin", WAIT, || {
        c.shared(l).retention_pins.is_empty()
    })
    .await;
    let (_, status) = c.get_json(f, "/status").await;
    assert_eq!(status["rebuild"]["phase"], "done");
    assert_eq!(
        status["rebuild"]["checkpoint_lsn"],
        wal::Lsn(ckpt).to_string()
    );
    fill(&c, l, "c", 100, 100).await;
    assert_identical(&c, f, "rebuild").await;
    // A restart of the rebuilt node loads its checkpoint and the WAL after it.
    c.restart_node(f).await;
    assert_identical(&c, f, "restart").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_new_node_joins_by_rebuild_on_request() {
    let mut c = Cluster::start(Opts::new(3, "quorum")).await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    // n = the node joining later: its data directory is wiped (a new machine).
    let n = (l + 2) % 3;
    c.stop_node(n).await;
    std::fs::remove_dir_all(&c.cfgs[n].data_dir).expect("wipe the new node's data dir");
    fill(&c, l, "k", 1200, 2500).await;
    c.wait_streaming(l).await;
    cut_leader_wal(c.shared(l), 0);

    c.start_node(n).await;
    // auto_rebuild is off: the node waits in needs_rebuild, serving nothing stale.
    common::wait_for_async("the new node reports needs_rebuild", WAIT, || async {
        c.get_json(n, "/status").await.1["state"] == "needs_rebuild"
    })
    .await;
    assert_eq!(c.shared(n).rebuild.progress().attempts, 0);
    let r = c
        .http
        .post(format!("{}/v1/admin/rebuild", c.url(n)))
        .send()
        .await
        .expect("POST rebuild");
    assert_eq!(r.status().as_u16(), 202);
    // The leader refuses to rebuild itself.
    let r = c
        .http
        .post(format!("{}/v1/admin/rebuild", c.url(l)))
        .send()
        .await
        .expect("POST rebuild on the leader");
    assert_eq!(r.status().as_u16(), 409);
    wait_rebuilt(&c, n, 1).await;
    let (st, body, _) = c.get(n, "k7", "").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body.len(), 2500);
    assert_identical(&c, n, "join").await;
    c.shutdown().await;
}

fn slow_transfer(_: usize, cfg: &mut Config) {
    cfg.replication.auto_rebuild = true;
    // Paced so the test can stop the node halfway through the transfer.
    cfg.replication.rebuild_max_rate = 2 << 20;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebuild_interrupted_halfway_resumes_and_ends_identical() {
    let mut c = Cluster::start(Opts {
        tweak: Some(slow_transfer),
        ..Opts::new(3, "quorum")
    })
    .await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    let f = (l + 1) % 3;
    c.stop_node(f).await;
    // ~4 MB of state: about 2 s of transfer at 2 MiB/s.
    fill(&c, l, "k", 1000, 4000).await;
    c.wait_streaming(l).await;
    cut_leader_wal(c.shared(l), 0);

    c.start_node(f).await;
    wait_for("the transfer is under way (over 25%)", WAIT, || {
        let p = c.shared(f).rebuild.progress();
        p.phase == "transferring" && p.bytes_total > 0 && p.bytes_done * 4 > p.bytes_total
    })
    .await;
    // No reads from a half-built state.
    let (st, body, _) = c.get(f, "k1", "").await;
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("rebuilding"), "{body}");
    assert_eq!(c.get_json(f, "/status").await.1["state"], "rebuilding");
    let p = c.shared(f).rebuild.progress();
    assert!(p.bytes_done < p.bytes_total, "stopped halfway: {p:?}");
    c.stop_node(f).await;
    let data_dir = c.cfgs[f].data_dir.clone();
    assert!(walship::node::rebuild::marker_path(&data_dir).exists());
    let partial = std::fs::read_dir(receiver::checkpoint::dir_in(&data_dir))
        .expect("checkpoint dir")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".partial"));
    assert!(partial, "a partial copy is kept for the resume");

    // Restart: the interrupted rebuild is found, reads stay refused, and the
    // transfer resumes where the copy ends.
    c.start_node(f).await;
    let s = c.shared(f).clone();
    assert!(s.rebuild.is_active());
    let (st, _, _) = c.get(f, "k1", "").await;
    assert_eq!(st, 503);
    wait_rebuilt(&c, f, 1).await;
    let p = s.rebuild.progress();
    assert!(p.resumed_from > 0, "the transfer resumed: {p:?}");
    assert!(!walship::node::rebuild::marker_path(&data_dir).exists());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_identical(&c, f, "resume").await;
    let (st, body, _) = c.get(f, "k999", "").await;
    assert_eq!(st, 200);
    assert_eq!(body.len(), 4000);
    c.shutdown().await;
}

fn bench_opts(_: usize, cfg: &mut Config) {
    cfg.replication.auto_rebuild = true;
    cfg.replication.ack_timeout = Duration::from_secs(30);
    // WALSHIP_REBUILD_BENCH_MAX_RATE=N (MB/s, 10^6 bytes): the leader's
    // `replication.rebuild_max_rate`, to measure the writer's share against it.
    if let Some(mb) = std::env::var("WALSHIP_REBUILD_BENCH_MAX_RATE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        cfg.replication.rebuild_max_rate = mb * 1_000_000;
    }
}

/// Writes of 1 KiB (32 in flight) through `client` until `stop`; returns the count.
async fn writer(
    client: walship::Client,
    stop: tokio::sync::watch::Receiver<bool>,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let value = bytes::Bytes::from(vec![b'w'; 1024]);
    let futs = (0..32u64).map(|w| {
        let client = client.clone();
        let value = value.clone();
        let stop = stop.clone();
        let counter = counter.clone();
        async move {
            let mut i = 0u64;
            while !*stop.borrow() {
                client
                    .put(
                        format!("w{w}-{}", i % 1000),
                        value.clone(),
                        proto::AckLevel::Default,
                    )
                    .await
                    .expect("writer put");
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += 1;
            }
        }
    });
    futures::future::join_all(futs).await;
}

/// Benchmark: rebuild a follower from a ~1 GiB state (64 KiB values) while a
/// writer runs on the leader; prints the transfer rate and the writer's rate
/// before and during the rebuild. Size with `WALSHIP_REBUILD_BENCH_MIB`
/// (default 1024). Run:
/// `cargo test -p walship --release --test rebuild rebuild_benchmark -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn rebuild_benchmark() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;
    let mib: usize = std::env::var("WALSHIP_REBUILD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let mut c = Cluster::start(Opts {
        tweak: Some(bench_opts),
        segment_size: "64MiB",
        // Loaded 2-core machines: timings that do not fence a busy leader.
        heartbeat: "200ms",
        election_timeout: "3s",
        ..Opts::new(3, "quorum")
    })
    .await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    let f = (l + 1) % 3;
    c.stop_node(f).await;
    let t = Instant::now();
    fill(&c, l, "big", mib * 16, 64 << 10).await;
    c.wait_streaming(l).await;
    println!(
        "filled {mib} MiB of state in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // The checkpoint the leader's checkpointer would have taken (through the
    // node's checkpointer, which serialises it with its own periodic ones).
    let s = c.shared(l).clone();
    let t = Instant::now();
    walship::node::checkpointer::checkpoint_now(&s, "bench")
        .await
        .expect("checkpoint");
    let meta = s.ckpt.last.lock().clone().expect("a checkpoint");
    println!(
        "checkpoint of {} bytes ({} keys) written in {:.1}s",
        meta.len,
        meta.entries,
        t.elapsed().as_secs_f64()
    );
    cut_leader_wal(c.shared(l), 0);

    let count = std::sync::Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let w = tokio::spawn(writer(c.client(l).await, stop_rx, count.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (n0, t0) = (count.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = (count.load(Ordering::Relaxed) - n0) as f64 / t0.elapsed().as_secs_f64();

    c.start_node(f).await;
    wait_for("the transfer started", WAIT, || {
        c.shared(f).rebuild.progress().phase == "transferring"
    })
    .await;
    let (n1, t1) = (count.load(Ordering::Relaxed), Instant::now());
    wait_for("the transfer ended", Duration::from_secs(600), || {
        c.shared(f).rebuild.progress().phase != "transferring"
    })
    .await;
    let during = (count.load(Ordering::Relaxed) - n1) as f64 / t1.elapsed().as_secs_f64();
    wait_rebuilt(&c, f, 1).await;
    let p = c.shared(f).rebuild.progress();
    let _ = stop_tx.send(true);
    w.await.expect("writer");
    println!(
        "rebuild: {} bytes at {:.1} MB/s (transfer), {:.1}s in all (transfer, install, load, WAL reset, catch-up start)",
        p.bytes_total,
        p.mb_per_s,
        p.elapsed_ms as f64 / 1000.0
    );
    println!(
        "writer on the leader (1 KiB puts, 32 in flight, quorum): {before:.0}/s before, {during:.0}/s during the transfer ({:.0}%)",
        during / before * 100.0
    );
    assert_identical(&c, f, "bench").await;
    c.shutdown().await;
}

/// A node in the middle of a rebuild neither stands for election (not even a
/// forced `failover --to` it) nor votes: with the leader gone and the rebuilding
/// node the only other member, the third node asks for votes again and again
/// and is refused with `rebuilding` (so nobody leads). Once a leader is back, the
/// node is rebuilt, catches up, and takes part in elections again: the next
/// failover needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebuilding_node_neither_votes_nor_stands() {
    let mut c = Cluster::start(Opts::new(3, "quorum")).await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    fill(&c, l, "a", 200, 100).await;
    c.wait_converged().await;
    let r = (l + 1) % 3;
    let v = (l + 2) % 3;
    // r stops in the middle of a rebuild (the marker a crash leaves behind), and
    // the leader goes away.
    c.stop_node(r).await;
    c.stop_node(l).await;
    std::fs::write(
        walship::node::rebuild::marker_path(&c.data_dir(r)),
        "leader = gone\nstarted_unix_ms = 0\n",
    )
    .expect("plant the rebuild marker");
    c.start_node(r).await;
    assert!(c.shared(r).rebuild.is_active());

    // A forced promotion of r is refused.
    let resp = c
        .http
        .post(format!("{}/v1/admin/failover", c.url(r)))
        .json(&serde_json::json!({"to": c.ids[r], "force": true}))
        .send()
        .await
        .expect("failover request");
    let code = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    assert!(
        code >= 400,
        "forced failover to a rebuilding node: {code} {body}"
    );
    assert!(body.contains("rebuilding"), "{body}");

    // v stands (its pre-votes go to r) and is refused each time.
    let refused = |c: &Cluster| {
        c.shared(r)
            .metrics
            .votes_refused_total
            .with_label_values(&["rebuilding"])
            .get()
    };
    wait_for(
        "the rebuilding node refused three vote requests",
        WAIT,
        || refused(&c) >= 3,
    )
    .await;
    for i in [r, v] {
        assert_ne!(
            c.shared(i).role().role,
            walship::node::Role::Leader,
            "{} leads although the rebuilding node refuses every vote",
            c.ids[i]
        );
    }
    assert_eq!(c.shared(r).metrics.elections_won_total.get(), 0);

    // The leader returns: r is rebuilt from it and catches up.
    c.start_node(l).await;
    wait_rebuilt(&c, r, 1).await;
    assert_identical(&c, r, "hold").await;
    wait_for("the rebuilt node is back in elections", WAIT, || {
        let s = c.shared(r);
        !s.rebuild.holds_out_of_elections(*s.flush_tx.borrow())
    })
    .await;
    // The leader stops: the two others elect one of them, which needs r's vote
    // (or r standing).
    let l2 = c.wait_leader().await;
    let before = refused(&c);
    c.stop_node(l2).await;
    let l3 = c.wait_leader().await;
    assert_ne!(l3, l2);
    assert_eq!(
        refused(&c),
        before,
        "no refusal for rebuilding after it caught up"
    );
    c.shutdown().await;
}
