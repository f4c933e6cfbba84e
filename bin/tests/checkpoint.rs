//! Checkpoints and WAL retention with real nodes (issue 5, parts 1, 2 and 4):
//! a restart loads the newest checkpoint and replays only the WAL after it; a
//! damaged newest checkpoint falls back to the previous one; retention keeps the
//! segment count bounded under a long write load; a follower stopped past
//! `wal.max_retained` is cut loose and shows `needs_rebuild`.

mod common;

use common::{wait_for, Cluster, Opts, WAIT};
use serde_json::Value;

/// Write `n` keys `{prefix}{i}` with `size`-byte values on node `l`; returns the
/// largest LSN returned.
async fn write_keys(c: &Cluster, l: usize, prefix: &str, n: usize, size: usize) -> u64 {
    let client = c.client(l).await;
    let mut last = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let futs = chunk.iter().map(|i| {
            let client = client.clone();
            let key = format!("{prefix}{i}");
            let value = vec![b'a' + (i % 26) as u8; size];
            async move { client.put(key, value, proto::AckLevel::Default).await }
        });
        for r in futures::future::join_all(futs).await {
            last = last.max(r.expect("write").0);
        }
    }
    last
}

async fn wait_applied(c: &Cluster, i: usize, lsn: u64) {
    let s = c.shared(i).clone();
    wait_for("the write applied", WAIT, || s.applied_lsn() >= lsn).await;
}

async fn admin_checkpoint(c: &Cluster, i: usize) -> Value {
    let r = c
        .http
        .post(format!("{}/v1/admin/checkpoint", c.url(i)))
        .send()
        .await
        .expect("admin checkpoint");
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.expect("json")
}

async fn status(c: &Cluster, i: usize) -> Value {
    let (st, v) = c.get_json(i, "/status").await;
    assert_eq!(st, 200);
    v
}

/// Wait until node `i` finished its start-up replay; returns its `/status`.
async fn wait_startup_done(c: &Cluster, i: usize) -> Value {
    let s = c.shared(i).clone();
    wait_for("start-up replay done", WAIT, || {
        s.ckpt
            .startup
            .done
            .load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    status(c, i).await
}

fn lsn_of(v: &Value) -> u64 {
    v.as_str()
        .expect("lsn string")
        .parse::<wal::Lsn>()
        .expect("lsn")
        .0
}

fn metric(c: &Cluster, i: usize, name: &str) -> Option<f64> {
    c.shared(i)
        .metrics
        .render()
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn assert_keys(c: &Cluster, i: usize, prefix: &str, n: usize, size: usize) {
    let kv = c.shared(i).kv.read();
    for k in 0..n {
        let v = kv
            .get(format!("{prefix}{k}").as_bytes())
            .unwrap_or_else(|| panic!("key {prefix}{k} missing on {}", c.ids[i]));
        assert_eq!(v.len(), size);
        assert_eq!(v[0], b'a' + (k % 26) as u8);
    }
}

fn one_node() -> Opts {
    Opts::new(1, "async")
}

/// Failover timing relaxed for tests that are not about failover: on a loaded
/// 2-core machine the default 300 ms election timeout sometimes expires while a
/// node is starved of CPU, and the leader the test writes to changes under it.
fn calm(o: Opts) -> Opts {
    Opts {
        heartbeat: "100ms",
        election_timeout: "2s",
        ..o
    }
}

/// After a checkpoint, a restart (without the shutdown checkpoint, as after a
/// crash) loads it and replays exactly the records written after it; after a
/// clean shutdown (shutdown checkpoint) it replays nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_after_checkpoint_replays_only_the_tail() {
    let mut c = Cluster::start(one_node()).await;
    let l = c.wait_leader().await;
    let a = write_keys(&c, l, "a", 600, 100).await;
    wait_applied(&c, l, a).await;
    let ck = admin_checkpoint(&c, l).await;
    assert_eq!(ck["written"], true, "{ck}");
    let ck_lsn = lsn_of(&ck["lsn"]);
    assert_eq!(ck_lsn, c.shared(l).applied_lsn());
    assert_eq!(ck["entries"], 600);
    // Nothing new applied: a second request writes nothing.
    assert_eq!(admin_checkpoint(&c, l).await["written"], false);
    let b = write_keys(&c, l, "b", 400, 100).await;
    wait_applied(&c, l, b).await;
    let end = c.shared(l).wal.write_lsn().0;
    let files =
        receiver::checkpoint::list(&receiver::checkpoint::dir_in(&c.data_dir(0))).expect("list");
    assert_eq!(files.len(), 1, "{files:?}");

    c.stop_node_without_checkpoint(0).await;
    c.start_node(0).await;
    c.wait_leader().await;
    let st = wait_startup_done(&c, 0).await;
    assert_eq!(lsn_of(&st["startup"]["checkpoint_lsn"]), ck_lsn, "{st}");
    assert_eq!(lsn_of(&st["startup"]["replay_to_lsn"]), end, "{st}");
    assert_eq!(
        st["replayed_at_startup"], 400,
        "only the 400 records after the checkpoint are replayed: {st}"
    );
    assert_eq!(
        metric(&c, 0, "walship_startup_replayed_records"),
        Some(400.0)
    );
    assert_keys(&c, 0, "a", 600, 100).await;
    assert_keys(&c, 0, "b", 400, 100).await;
    let digest = c.shared(0).kv.read().digest();

    // Clean shutdown: the shutdown checkpoint covers everything applied.
    let applied = c.shared(0).applied_lsn();
    c.stop_node(0).await;
    c.start_node(0).await;
    c.wait_leader().await;
    let st = wait_startup_done(&c, 0).await;
    assert_eq!(lsn_of(&st["startup"]["checkpoint_lsn"]), applied, "{st}");
    assert_eq!(st["replayed_at_startup"], 0, "{st}");
    assert_eq!(c.shared(0).kv.read().digest(), digest);
    assert_eq!(c.shared(0).kv.read().len(), 1000);
    c.shutdown().await;
}

/// A damaged newest checkpoint is skipped (the previous one is used and the WAL
/// after it replayed); with every checkpoint damaged the state is replayed from
/// the whole WAL. The state is complete either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_newest_checkpoint_falls_back() {
    let mut c = Cluster::start(one_node()).await;
    let l = c.wait_leader().await;
    let a = write_keys(&c, l, "a", 300, 50).await;
    wait_applied(&c, l, a).await;
    let first = lsn_of(&admin_checkpoint(&c, l).await["lsn"]);
    let b = write_keys(&c, l, "b", 200, 50).await;
    wait_applied(&c, l, b).await;
    let second = lsn_of(&admin_checkpoint(&c, l).await["lsn"]);
    assert!(second > first);
    let d = write_keys(&c, l, "d", 100, 50).await;
    wait_applied(&c, l, d).await;
    let digest = c.shared(l).kv.read().digest();
    c.stop_node_without_checkpoint(0).await;

    let dir = receiver::checkpoint::dir_in(&c.data_dir(0));
    let newest = dir.join(receiver::checkpoint::file_name(wal::Lsn(second)));
    let mut bytes = std::fs::read(&newest).expect("read checkpoint");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&newest, &bytes).expect("damage checkpoint");

    c.start_node(0).await;
    c.wait_leader().await;
    let st = wait_startup_done(&c, 0).await;
    assert_eq!(
        lsn_of(&st["startup"]["checkpoint_lsn"]),
        first,
        "the previous checkpoint is used: {st}"
    );
    assert_eq!(st["replayed_at_startup"], 300, "200 + 100 records: {st}");
    assert_eq!(c.shared(0).kv.read().digest(), digest);

    // Damage the older one too (truncated): the whole WAL is replayed.
    c.stop_node_without_checkpoint(0).await;
    let older = dir.join(receiver::checkpoint::file_name(wal::Lsn(first)));
    let len = std::fs::metadata(&older).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&older)
        .and_then(|f| f.set_len(len - 10))
        .expect("truncate checkpoint");
    c.start_node(0).await;
    c.wait_leader().await;
    let st = wait_startup_done(&c, 0).await;
    assert!(st["startup"]["checkpoint_lsn"].is_null(), "{st}");
    let replayed = st["replayed_at_startup"].as_u64().expect("count");
    // 600 puts plus the TERM_START records of the terms so far.
    assert!((601..=606).contains(&replayed), "{st}");
    assert_eq!(c.shared(0).kv.read().digest(), digest);
    c.shutdown().await;
}

fn segments_on_disk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .filter(|e| {
            e.as_ref()
                .map(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                .unwrap_or(false)
        })
        .count()
}

/// Under a long write load (about 24 MiB of WAL through 1 MiB segments), every
/// node removes WAL below its checkpoint and below the followers' flush LSNs:
/// the segment count stays bounded, the oldest retained LSN never passes a
/// node's checkpoint, and a restarted follower still converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_keeps_segment_count_bounded() {
    let mut c = Cluster::start(Opts {
        min_retained: "2MiB",
        max_retained: "8MiB",
        checkpoint_max_wal: "1MiB",
        ..calm(Opts::new(3, "quorum"))
    })
    .await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    // The same 500 keys rewritten each round: a steady ~2 MB state, so the
    // checkpoint spacing is max(max_wal, state size) = ~2 MB. Without retention
    // this load leaves ~25 segments on every node. Retained: min_retained (2) +
    // checkpoint spacing (2) + rounding and the writer's and the prepared next
    // segment: at most 8.
    const BOUND: usize = 8;
    for _round in 0..12 {
        let end = write_keys(&c, l, "r-", 500, 4000).await;
        for i in 0..3 {
            wait_applied(&c, i, end).await;
        }
        for i in 0..3 {
            let dir = c.data_dir(i);
            let s = c.shared(i).clone();
            wait_for("retention catches up", WAIT, || {
                segments_on_disk(&dir) <= BOUND
            })
            .await;
            // Never below the checkpoint (the restart point) ...
            let first = s.wal.first_lsn().0;
            let ck = s.ckpt.last_lsn().unwrap_or(0);
            assert!(first <= ck, "node {}: first {first} > checkpoint {ck}", i);
        }
    }
    for i in 0..3 {
        assert!(
            c.shared(i).wal.first_lsn().0 >= 10 << 20,
            "node {} removed old WAL",
            c.ids[i]
        );
        assert!(metric(&c, i, "walship_wal_removed_segments_total").unwrap_or(0.0) >= 10.0);
    }
    let st = status(&c, l).await;
    for f in st["followers"].as_array().expect("followers") {
        assert_eq!(f["state"], "streaming", "{st}");
        let safe = f["safe_wal_size"].as_u64().expect("safe_wal_size");
        assert!(safe > 6 << 20 && safe <= 8 << 20, "{st}");
    }
    c.wait_converged().await;
    c.assert_wal_identical();
    // A follower restarted from its checkpoint and retained WAL converges.
    let f = (l + 1) % 3;
    c.restart_node(f).await;
    c.wait_leader().await;
    c.put_ok(l, "after-restart", "1", None).await;
    c.wait_converged().await;
    assert_keys(&c, f, "r-", 500, 4000).await;
    c.shutdown().await;
}

/// A follower stopped while the leader writes more than `wal.max_retained` is cut
/// loose: the leader logs it, shows it `needs_rebuild` (status, metric), stops
/// holding WAL for it and removes it; when the follower returns the leader refuses
/// it with `wal_not_available` and it shows node state `needs_rebuild`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_stopped_past_max_retained_is_cut_loose() {
    let mut c = Cluster::start(Opts {
        min_retained: "1MiB",
        max_retained: "4MiB",
        checkpoint_max_wal: "1MiB",
        ..calm(Opts::new(3, "quorum"))
    })
    .await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    let f = (l + 1) % 3;
    let other = (l + 2) % 3;
    let end = write_keys(&c, l, "a", 200, 1000).await;
    wait_applied(&c, f, end).await;
    let f_id = c.ids[f].clone();
    c.stop_node(f).await;
    let f_end = {
        let st = status(&c, l).await;
        let fo = st["followers"]
            .as_array()
            .expect("followers")
            .iter()
            .find(|x| x["id"] == f_id.as_str())
            .cloned()
            .expect("f in followers");
        let safe = fo["safe_wal_size"].as_u64().expect("safe");
        assert!(safe > 3 << 20, "{fo}");
        lsn_of(&fo["flush_lsn"])
    };
    // ~2 MiB: still within the cap, safe_wal_size shrinks.
    write_keys(&c, l, "b", 500, 4000).await;
    let st = status(&c, l).await;
    let fo = st["followers"]
        .as_array()
        .expect("followers")
        .iter()
        .find(|x| x["id"] == f_id.as_str())
        .cloned()
        .expect("f");
    assert_ne!(fo["state"], "needs_rebuild", "{fo}");
    assert!(
        fo["safe_wal_size"].as_u64().expect("safe") < 3 << 20,
        "{fo}"
    );
    // ~6 MiB more: past the cap.
    write_keys(&c, l, "c", 1500, 4000).await;
    let s = c.shared(l).clone();
    wait_for("the stopped follower is cut loose", WAIT, || {
        s.ckpt.cut_loose.lock().contains_key(&f_id) && s.wal.first_lsn().0 > f_end
    })
    .await;
    let st = status(&c, l).await;
    for fo in st["followers"].as_array().expect("followers") {
        if fo["id"] == f_id.as_str() {
            assert_eq!(fo["state"], "needs_rebuild", "{st}");
            assert_eq!(fo["safe_wal_size"], 0, "{st}");
        } else {
            assert_eq!(fo["state"], "streaming", "{st}");
            assert!(fo["safe_wal_size"].as_u64().expect("safe") > 0, "{st}");
        }
    }
    let s2 = c.shared(l).clone();
    wait_for("metric counts the cut-loose follower", WAIT, || {
        s2.metrics.followers_needing_rebuild.get() == 1
    })
    .await;
    let safe_metric = format!("walship_follower_safe_wal_size_bytes{{follower=\"{f_id}\"}}");
    let other_metric = format!(
        "walship_follower_safe_wal_size_bytes{{follower=\"{}\"}}",
        c.ids[other]
    );
    wait_for(
        "safe_wal_size metric is 0 for the cut-loose follower",
        WAIT,
        || metric(&c, l, &safe_metric) == Some(0.0),
    )
    .await;
    assert!(metric(&c, l, &other_metric).unwrap_or(0.0) > 0.0);
    // The WAL the follower needs is gone on the leader; the other follower's
    // progress held nothing back beyond the cap.
    assert!(c.shared(l).wal.first_lsn().0 > f_end);
    assert!(c.shared(other).wal.first_lsn().0 > 0);

    // The follower returns: refused with wal_not_available, it shows needs_rebuild.
    c.start_node(f).await;
    let sf = c.shared(f).clone();
    wait_for("the returning follower shows needs_rebuild", WAIT, || {
        sf.role().state == walship::node::NodeState::NeedsRebuild
    })
    .await;
    let st = status(&c, f).await;
    assert_eq!(st["state"], "needs_rebuild", "{st}");
    assert_eq!(st["replication"]["needs_rebuild"], true, "{st}");
    // Still cut loose on the leader; writes go on with the other follower.
    c.put_ok(l, "still-writable", "1", None).await;
    let st = status(&c, l).await;
    let fo = st["followers"]
        .as_array()
        .expect("followers")
        .iter()
        .find(|x| x["id"] == f_id.as_str())
        .cloned()
        .expect("f");
    assert_eq!(fo["state"], "needs_rebuild", "{st}");
    c.shutdown().await;
}

/// Runs the `walship` binary with `args` (blocking, off the async threads);
/// returns (exit code, stdout, stderr).
async fn walship_cli(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_walship"))
            .args(&args)
            .env_remove("WALSHIP_ENDPOINT")
            .env_remove("WALSHIP_TOKEN")
            .output()
            .expect("run walship");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("cli task")
}

/// `walship checkpoint` (INTERFACE.md) calls `POST /v1/admin/checkpoint` on the
/// node at `--endpoint`: the checkpoint file appears at the applied LSN, a second
/// call reports that nothing new was written, `--json` prints the node's answer,
/// and an unreachable node is exit status 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoint_cli_command() {
    let c = Cluster::start(one_node()).await;
    let l = c.wait_leader().await;
    let a = write_keys(&c, l, "a", 100, 20).await;
    wait_applied(&c, l, a).await;
    let applied = c.shared(l).applied_lsn();
    let endpoint = c.url(l);
    let (code, out, err) = walship_cli(vec![
        "checkpoint".into(),
        "--endpoint".into(),
        endpoint.clone(),
    ])
    .await;
    assert_eq!(code, 0, "stdout {out} stderr {err}");
    let lsn = wal::Lsn(applied).to_string();
    assert!(
        out.starts_with(&format!("checkpoint at {lsn} written")) && out.contains("100 entries"),
        "{out}"
    );
    let dir = receiver::checkpoint::dir_in(&c.data_dir(l));
    let m = receiver::checkpoint::newest_valid(&dir)
        .expect("list")
        .expect("a checkpoint file");
    assert_eq!((m.lsn.0, m.entries), (applied, 100));

    let (code, out, _) = walship_cli(vec![
        "checkpoint".into(),
        "--endpoint".into(),
        endpoint.clone(),
    ])
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("already covers"), "{out}");

    let b = write_keys(&c, l, "b", 10, 20).await;
    wait_applied(&c, l, b).await;
    let (code, out, _) = walship_cli(vec![
        "checkpoint".into(),
        "--json".into(),
        "--endpoint".into(),
        endpoint,
    ])
    .await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(out.trim()).expect("json answer");
    assert_eq!(v["written"], true, "{v}");
    assert_eq!(v["entries"], 110, "{v}");
    assert_eq!(lsn_of(&v["lsn"]), c.shared(l).applied_lsn());

    let dead = format!("http://{}", common::free_addr());
    let (code, _, err) = walship_cli(vec!["checkpoint".into(), "--endpoint".into(), dead]).await;
    assert_eq!(code, 1, "{err}");
    c.shutdown().await;
}

/// A state larger than `checkpoint.max_wal` is not rewritten every `max_wal`:
/// the next size-triggered checkpoint waits for as much WAL as the last one held,
/// so the checkpoints of a growing state are spaced geometrically. 1 MiB of new
/// keys with `max_wal` = 64 KiB: 16 checkpoints with a fixed spacing, about 5 here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_of_a_growing_state_are_spaced_by_its_size() {
    let c = Cluster::start(Opts {
        checkpoint_interval: "5min",
        checkpoint_max_wal: "64KiB",
        ..Opts::new(1, "async")
    })
    .await;
    let l = c.wait_leader().await;
    let s = c.shared(l).clone();
    let before = s.metrics.checkpoints_total.get();
    let mut sizes = Vec::new();
    let mut end = 0;
    for round in 0..16 {
        end = write_keys(&c, l, &format!("g{round}-"), 64, 1000).await;
        wait_applied(&c, l, end).await;
        if let Some(m) = s.ckpt.last.lock().as_ref() {
            if sizes.last() != Some(&(m.lsn.0, m.len)) {
                sizes.push((m.lsn.0, m.len));
            }
        }
    }
    // The last size trigger has fired (or is due only past `end`).
    let due = s.ckpt.max_wal_due(64 << 10);
    let taken = s.metrics.checkpoints_total.get() - before;
    assert!(end > 1 << 20, "wrote {end} bytes of WAL");
    assert!(
        (3..=8).contains(&taken),
        "{taken} checkpoints for ~1 MiB of WAL with max_wal 64 KiB; seen (lsn, bytes): {sizes:?}, next due at {due}"
    );
    // Each checkpoint came at least the previous one's size after it.
    for w in sizes.windows(2) {
        let ((l0, len0), (l1, _)) = (w[0], w[1]);
        assert!(
            l1 - l0 >= len0.max(64 << 10),
            "checkpoints too close: {sizes:?}"
        );
    }
    c.shutdown().await;
}

/// `checkpoint.max_wal` of applied WAL makes every node checkpoint (the applier
/// signals the checkpointer; the 5 min interval and retention play no part: the
/// 1 GiB `min_retained` asks for none).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_wal_applied_makes_every_node_checkpoint() {
    let c = Cluster::start(Opts {
        checkpoint_interval: "5min",
        checkpoint_max_wal: "256KiB",
        ..Opts::new(3, "quorum")
    })
    .await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    let before: Vec<u64> = (0..3)
        .map(|i| c.shared(i).ckpt.last_lsn().unwrap_or(0))
        .collect();
    // About 400 KiB: past max_wal on every node.
    let end = write_keys(&c, l, "m", 100, 4000).await;
    for (i, b) in before.into_iter().enumerate() {
        wait_applied(&c, i, end).await;
        let s = c.shared(i).clone();
        wait_for(
            &format!("{} checkpoints after max_wal applied", c.ids[i]),
            WAIT,
            || s.ckpt.last_lsn().unwrap_or(0) > b.max(256 << 10),
        )
        .await;
    }
    c.shutdown().await;
}

/// Values are shares of the WAL mapping (no copy), and removed WAL segments they
/// share are let go once less than half live: a state of new 4000-byte keys holds
/// the segments retention removed (counted by `walship_kv_pinned_wal_segments`);
/// overwriting nine keys in ten makes those segments sparse, the remaining values
/// are copied out (`walship_kv_released_value_bytes_total`) and the count falls to
/// 0. Every value stays right throughout, and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_values_hold_removed_segments_until_sparse() {
    let mut c = Cluster::start(Opts {
        min_retained: "1MiB",
        max_retained: "64MiB",
        checkpoint_max_wal: "1MiB",
        ..calm(one_node())
    })
    .await;
    let l = c.wait_leader().await;
    // ~8 MB of live values through 1 MiB segments.
    let end = write_keys(&c, l, "s-", 2000, 4000).await;
    wait_applied(&c, l, end).await;
    let s = c.shared(l).clone();
    assert!(
        !s.kv.read().shared_segments().is_empty(),
        "applied values share the WAL mapping"
    );
    // Retention removes WAL below the checkpoints; the values keep those segments.
    let m = |name: &'static str| {
        let s = s.clone();
        move || {
            s.metrics
                .render()
                .lines()
                .find(|x| x.starts_with(name) && x[name.len()..].starts_with(' '))
                .and_then(|x| x.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    let pinned = m("walship_kv_pinned_wal_segments");
    let released = m("walship_kv_released_value_bytes_total");
    wait_for("removed segments held by live values", WAIT, || {
        pinned() >= 3.0
    })
    .await;
    assert_eq!(released(), 0.0, "full segments are not copied out");
    assert_keys(&c, l, "s-", 2000, 4000).await;
    // Overwrite nine keys in ten with small values: the old segments drop under
    // half live, the tenth keys' values are copied out, and nothing stays held.
    let client = c.client(l).await;
    let mut last = 0;
    for i in (0..2000).filter(|i| i % 10 != 0) {
        let (lsn, _) = client
            .put(
                format!("s-{i}"),
                b"small".to_vec(),
                proto::AckLevel::Default,
            )
            .await
            .expect("overwrite");
        last = lsn;
    }
    wait_applied(&c, l, last).await;
    wait_for("sparse segments let go", WAIT, || pinned() == 0.0).await;
    assert!(
        released() >= 100.0 * 4000.0,
        "the tenth keys' values were copied out: {}",
        released()
    );
    let check = |c: &Cluster| {
        let kv = c.shared(l).kv.read();
        for i in 0..2000usize {
            let v = kv.get(format!("s-{i}").as_bytes()).expect("key");
            if i % 10 == 0 {
                assert_eq!(&v[..], &vec![b'a' + (i % 26) as u8; 4000][..], "s-{i}");
            } else {
                assert_eq!(&v[..], b"small", "s-{i}");
            }
        }
    };
    check(&c);
    // The node's shared state must go with the node (it holds the WAL's lock).
    drop((s, pinned, released));
    c.restart_node(l).await;
    c.wait_leader().await;
    wait_startup_done(&c, l).await;
    check(&c);
    c.shutdown().await;
}
