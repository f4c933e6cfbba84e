//! Start-up benchmark (issue 5 performance bar): a node holding 1 GiB of WAL and a
//! recent checkpoint must start in under 2 s.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/targets/ckpt cargo test -p walship --release \
//!     --test startup_bench -- --ignored --nocapture
//! # WALSHIP_STARTUP_BENCH_DIR=/some/fs  (default: a temp dir)
//! # WALSHIP_STARTUP_BENCH_MIB=1024      (WAL size)
//! ```
//!
//! The data directory is built with the `wal` crate directly (no network): 1 GiB of
//! PUT records of ~1 KiB over 200,000 keys (a state of ~200 MiB), a checkpoint
//! written 16 MiB before the end, 16 MiB more WAL after it. Then a real node is
//! started on it (`failover.auto = false`, so no election time is counted; the test
//! publishes the commit LSN itself right after `start` returns) and the time is
//! measured from `start` until the start-up replay finished. The file cache is warm
//! (the data was just written), as on a node restart.

use std::time::Instant;

use receiver::state::{encode_put, Applied, KvStore, StateMachine, KIND_PUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: writes 1 GiB; run with --ignored --nocapture"]
async fn startup_with_1gib_wal_and_recent_checkpoint() {
    if let Ok(f) = std::env::var("WALSHIP_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_test_writer()
            .try_init();
    }
    let mib: u64 = std::env::var("WALSHIP_STARTUP_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let base = match std::env::var("WALSHIP_STARTUP_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).expect("tempdir"),
        Err(_) => tempfile::tempdir().expect("tempdir"),
    };
    // WALSHIP_STARTUP_BENCH_REUSE=DIR: build the data directory in DIR once and
    // reuse it in later runs (for profiling the start alone; DIR is kept).
    let reuse = std::env::var("WALSHIP_STARTUP_BENCH_REUSE")
        .ok()
        .map(std::path::PathBuf::from);
    let data = match &reuse {
        Some(d) => d.join("n1"),
        None => base.path().join("n1"),
    };
    let prebuilt = reuse.is_some() && data.join("wal").exists();
    // A node refuses a data directory that group or others may access.
    std::fs::create_dir_all(&data).expect("data dir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .expect("chmod 700 data dir");
    }
    let wal_dir = data.join("wal");
    let total = mib << 20;
    let tail = 16u64 << 20;
    let keys = 200_000u64;

    // Build the WAL and the checkpoint.
    let t = Instant::now();
    let mut ckpt_lsn = 0;
    let mut records = 0u64;
    if prebuilt {
        let dir = receiver::checkpoint::dir_in(&data);
        let m = receiver::checkpoint::newest_valid(&dir)
            .expect("checkpoints")
            .expect("a checkpoint in the reused directory");
        ckpt_lsn = m.lsn.0;
        records = keys;
        eprintln!("reusing {}", data.display());
    } else {
        let opts = wal::WalOptions {
            segment_size: 64 << 20,
            ..wal::WalOptions::default()
        };
        let (w, _) = wal::Wal::open(&wal_dir, opts).expect("open wal");
        w.append(1, wal::kind::TERM_START, b"n1")
            .expect("term start");
        let mut kv = KvStore::new();
        let value = vec![b'v'; 1000];
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(256);
        while w.write_lsn().0 < total {
            batch.clear();
            for _ in 0..256 {
                let k = format!("key-{:08}", records % keys);
                batch.push(encode_put(k.as_bytes(), &value));
                records += 1;
            }
            let recs: Vec<(u8, &[u8])> = batch.iter().map(|p| (KIND_PUT, &p[..])).collect();
            let done = w.append_batch(1, &recs).expect("append");
            if ckpt_lsn == 0 {
                for (a, p) in done.iter().zip(&batch) {
                    kv.apply(&Applied {
                        lsn: a.lsn.0,
                        end: a.end.0,
                        term: 1,
                        kind: KIND_PUT,
                        payload: p,
                    });
                }
                if w.write_lsn().0 >= total - tail {
                    w.flush(w.write_lsn()).expect("flush");
                    let dir = receiver::checkpoint::dir_in(&data);
                    let m = receiver::checkpoint::write(&dir, &kv, wal::Lsn(kv.applied_lsn()), 1)
                        .expect("checkpoint");
                    ckpt_lsn = m.lsn.0;
                    eprintln!(
                        "checkpoint at {} ({} entries, {} MiB)",
                        m.lsn,
                        m.entries,
                        m.len >> 20
                    );
                }
            }
        }
        w.flush(w.write_lsn()).expect("flush");
        eprintln!(
            "built {} MiB of WAL ({records} records) in {:.1} s",
            w.write_lsn().0 >> 20,
            t.elapsed().as_secs_f64()
        );
    }

    // The phases alone (same warm cache), to see where start-up time goes.
    let t = Instant::now();
    {
        let opts = wal::WalOptions {
            segment_size: 64 << 20,
            ..wal::WalOptions::default()
        };
        let (w, r) = wal::Wal::open(&wal_dir, opts).expect("open wal");
        let open = t.elapsed();
        drop(w);
        let t = Instant::now();
        let (m, kv) = receiver::checkpoint::load_newest(&receiver::checkpoint::dir_in(&data))
            .expect("load checkpoint")
            .expect("a checkpoint");
        let load = t.elapsed();
        println!(
            "phases: WAL open ({} records, {} segments) {:.0} ms; checkpoint load ({} entries, {} MiB) {:.0} ms",
            r.records,
            r.segments,
            open.as_secs_f64() * 1e3,
            m.entries,
            m.len >> 20,
            load.as_secs_f64() * 1e3
        );
        drop(kv);
    }

    let listen = walship::demo::bind_listen_port()
        .expect("port")
        .local_addr()
        .expect("addr");
    let http = walship::demo::bind_listen_port()
        .expect("port")
        .local_addr()
        .expect("addr");
    let text = format!(
        r#"cluster_id = "bench"
node_id = "n1"
data_dir = "{data}"
listen = "{listen}"
http_listen = "{http}"

[[members]]
id = "n1"
addr = "{listen}"
http = "{http}"

[replication]
mode = "async"

[failover]
auto = false

[wal]
segment_size = "64MiB"
min_retained = "2GiB"
max_retained = "4GiB"
"#,
        data = data.display()
    );
    let cfg =
        walship::config::Config::parse(&text, std::path::Path::new("bench.toml")).expect("config");

    let t = Instant::now();
    let node = walship::node::start::start(cfg).await.expect("start");
    let started = t.elapsed();
    let end = node.shared.wal.write_lsn().0;
    node.shared.raise_commit(end);
    let mut rx = node.shared.applied_tx.subscribe();
    let _ = rx.wait_for(|a| *a >= end).await;
    let total_t = t.elapsed();
    let st = &node.shared.ckpt.startup;
    let replayed = st.replayed.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(st.checkpoint_lsn, Some(ckpt_lsn));
    assert_eq!(node.shared.kv.read().len() as u64, keys.min(records));
    println!(
        "startup: WAL {} MiB, checkpoint at {} ({} MiB before the end); start() {:.0} ms (WAL open + CRC check of every retained record + checkpoint load); replay of {replayed} records {:.0} ms; total {:.0} ms (bar: < 2000 ms)",
        end >> 20,
        wal::Lsn(ckpt_lsn),
        (end - ckpt_lsn) >> 20,
        started.as_secs_f64() * 1e3,
        (total_t - started).as_secs_f64() * 1e3,
        total_t.as_secs_f64() * 1e3,
    );
    node.stop_without_checkpoint().await;
}
