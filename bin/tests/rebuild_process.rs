//! A rebuild killed halfway (issue 5, part 4), with real `walship serve`
//! processes: the rebuilding node is SIGKILLed in the middle of the checkpoint
//! transfer (slowed by the leader's `replication.rebuild_max_rate`, so "halfway"
//! is reached on any machine), restarted, resumes the transfer from its partial
//! copy, and ends with the leader's state (same digest at the same applied LSN
//! on every node) and byte-identical WAL from its checkpoint LSN on.

use std::time::{Duration, Instant};

use serde_json::Value;
use walship::demo::{ClusterSpec, LocalCluster};

const EXE: &str = env!("CARGO_BIN_EXE_walship");
/// Upper bound for each wait (never a timed assertion).
const LIMIT: Duration = Duration::from_secs(60);

async fn status(http: &reqwest::Client, c: &LocalCluster, i: usize) -> Option<Value> {
    let r = http
        .get(format!("http://{}/status", c.node(i).http))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

async fn wait_status(
    http: &reqwest::Client,
    c: &LocalCluster,
    i: usize,
    what: &str,
    mut cond: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(v) = status(http, c, i).await {
            if cond(&v) {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{}: {what} not reached within {LIMIT:?}; log tail:\n{}",
            c.node(i).id,
            c.log_tail(i, 30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// PUT `n` keys of `len` bytes on the leader `l`, 16 at a time.
async fn fill(
    http: &reqwest::Client,
    c: &LocalCluster,
    l: usize,
    prefix: &str,
    n: usize,
    len: usize,
) {
    let value = vec![b'r'; len];
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let futs = chunk.iter().map(|i| {
            http.put(format!("http://{}/v1/kv/{prefix}{i}", c.node(l).http))
                .body(value.clone())
                .send()
        });
        for r in futures::future::join_all(futs).await {
            let r = r.expect("PUT");
            assert_eq!(r.status().as_u16(), 200, "PUT on the leader");
        }
    }
}

fn lsn(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse::<wal::Lsn>().ok())
        .map(|l| l.0)
        .unwrap_or(0)
}

#[test]
fn rebuild_killed_halfway_resumes_and_ends_identical() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let spec = ClusterSpec {
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            ..ClusterSpec::fast(3)
        };
        let mut c = LocalCluster::create(EXE.as_ref(), tmp.path(), spec).expect("configs");
        // Every node (any may lead) sends checkpoints at 4 MiB/s at most.
        for i in 0..3 {
            let path = c.node(i).config.clone();
            let text = std::fs::read_to_string(&path).expect("read config");
            let text = text.replacen(
                "[replication]\n",
                "[replication]\nrebuild_max_rate = \"4MiB\"\n",
                1,
            );
            std::fs::write(&path, text).expect("write config");
        }
        c.start_all().expect("start");
        c.wait_healthy(LIMIT).await.expect("healthy");
        let all = [0usize, 1, 2];
        let (l, _) = c.wait_leader(&all, 1, LIMIT).await.expect("a leader");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        // ~12 MiB of state: a transfer of ~3 s at 4 MiB/s.
        fill(&http, &c, l, "k", 192, 64 << 10).await;
        let f = (l + 1) % 3;
        let data = tmp.path().join(&c.node(f).id);

        let (code, v) = c
            .admin(f, "/v1/admin/rebuild", serde_json::json!({}))
            .await
            .expect("rebuild request");
        assert_eq!(code, 202, "{v}");
        // Kill -9 once a quarter to three quarters of the checkpoint arrived.
        let st = wait_status(&http, &c, f, "a partial transfer", |v| {
            let r = &v["rebuild"];
            let done = r["bytes_done"].as_u64().unwrap_or(0);
            let total = r["bytes_total"].as_u64().unwrap_or(0);
            r["phase"] == "transferring" && total > 0 && done * 4 >= total && done * 4 < total * 3
        })
        .await;
        c.kill9(f).expect("kill -9 the rebuilding node");
        let done_at_kill = st["rebuild"]["bytes_done"].as_u64().unwrap_or(0);
        let total = st["rebuild"]["bytes_total"].as_u64().unwrap_or(0);
        let ckpt_lsn = lsn(&st["rebuild"]["checkpoint_lsn"]);
        eprintln!(
            "killed {} at {done_at_kill} of {total} checkpoint bytes (checkpoint {})",
            c.node(f).id,
            wal::Lsn(ckpt_lsn)
        );
        assert!(
            data.join(walship::node::rebuild::MARKER_FILE).exists(),
            "the marker says a rebuild was interrupted"
        );
        let partial = std::fs::read_dir(data.join("checkpoints"))
            .expect("checkpoint dir")
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .expect("a partial copy is left");
        let kept = partial.metadata().expect("meta").len();
        assert!(kept > 0 && kept < total, "partial copy of {kept} bytes");

        // Restart: the rebuild runs again, resumes at the partial copy, completes.
        c.start(f).expect("restart the rebuilding node");
        let st = wait_status(&http, &c, f, "rebuild done and streaming", |v| {
            v["rebuild"]["completed"].as_u64().unwrap_or(0) >= 1 && v["state"] == "streaming"
        })
        .await;
        let resumed = st["rebuild"]["resumed_from"].as_u64().unwrap_or(0);
        eprintln!(
            "restarted: resumed from byte {resumed}, attempts {}, {} MB/s",
            st["rebuild"]["attempts"], st["rebuild"]["mb_per_s"]
        );
        assert!(
            resumed > 0 && resumed <= kept,
            "the transfer resumed from the partial copy ({kept} bytes kept): {st}"
        );
        assert_eq!(lsn(&st["rebuild"]["checkpoint_lsn"]), ckpt_lsn);
        assert!(!data.join(walship::node::rebuild::MARKER_FILE).exists());

        // More writes; then every node holds the same state at the same LSN.
        let (l, _) = c.wait_leader(&all, 1, LIMIT).await.expect("a leader");
        fill(&http, &c, l, "after", 50, 100).await;
        let end = c.wait_converged(&all, LIMIT).await.expect("converged");
        let mut digests = Vec::new();
        for i in all {
            let v: Value = http
                .get(format!("http://{}/v1/admin/digest", c.node(i).http))
                .send()
                .await
                .expect("digest")
                .json()
                .await
                .expect("digest json");
            digests.push((
                lsn(&v["applied_lsn"]),
                v["digest"].as_str().unwrap_or("").to_string(),
                v["keys"].clone(),
            ));
        }
        assert!(
            digests.iter().all(|d| d == &digests[0]) && digests[0].0 == end,
            "state differs: {digests:?} (converged at {})",
            wal::Lsn(end)
        );
        assert_eq!(digests[0].2, 242);
        c.shutdown(Duration::from_secs(5)).await;

        // Byte-identical WAL from the rebuilt node's first LSN (its checkpoint) on.
        let opts = wal::WalOptions {
            segment_size: 16 << 20,
            ..wal::WalOptions::default()
        };
        let mut images = Vec::new();
        let mut from = 0;
        let mut wals = Vec::new();
        for i in all {
            let (w, _) = wal::Wal::open(&tmp.path().join(&c.node(i).id).join("wal"), opts.clone())
                .expect("open WAL");
            from = from.max(w.first_lsn().0);
            wals.push(w);
        }
        assert_eq!(from, ckpt_lsn, "the rebuilt WAL starts at the checkpoint");
        for w in &wals {
            let mut buf = Vec::new();
            let mut pos = from;
            while pos < end {
                let e = w
                    .read_raw(wal::Lsn(pos), 1 << 20, &mut buf)
                    .expect("read")
                    .0;
                if e <= pos {
                    break;
                }
                pos = e;
            }
            buf.truncate((end - from) as usize);
            images.push(buf);
        }
        assert_eq!(images[0].len() as u64, end - from);
        assert!(images.iter().all(|b| b == &images[0]), "WAL bytes differ");
    });
}
