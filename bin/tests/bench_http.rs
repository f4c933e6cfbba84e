//! `walship bench --protocol http` against a running cluster with a token: its
//! keep-alive HTTP clients write (every write counted by the leader), and an
//! answer other than 2xx (here 401 for a wrong token) is an error, never a
//! write. `--op append` writes log records (HTTP `POST /v1/log`, binary
//! Append/AppendBatch), never key-value pairs.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Cluster, Opts};
use walship::config::Config;

const TOKEN: &str = "bench-http-test-token";

fn tweak(_i: usize, cfg: &mut Config) {
    cfg.security.token = Some(TOKEN.to_string());
}

/// Run `walship bench` against `endpoint`; returns (exit code, the run's JSON).
async fn bench(endpoint: String, token_file: &Path, json: &Path) -> (i32, serde_json::Value) {
    bench_with(endpoint, token_file, json, &["--protocol", "http"]).await
}

/// [`bench`] with `extra` arguments instead of `--protocol http`.
async fn bench_with(
    endpoint: String,
    token_file: &Path,
    json: &Path,
    extra: &[&str],
) -> (i32, serde_json::Value) {
    let exe = env!("CARGO_BIN_EXE_walship");
    let mut cmd = Command::new(exe);
    cmd.args(["bench", "--endpoint", &endpoint])
        .args(extra)
        .args(["--clients", "4", "--duration", "1s", "--warmup", "200ms"])
        .args(["--ack", "remote_flush", "--quiet", "--json"])
        .arg(json)
        .arg("--token-file")
        .arg(token_file);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run walship bench");
    let code = out.status.code().unwrap_or(-1);
    let text = std::fs::read_to_string(json).unwrap_or_else(|e| {
        panic!(
            "bench wrote no JSON ({e}); exit {code}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let v: serde_json::Value = serde_json::from_str(&text).expect("bench JSON");
    (code, v["runs"][0].clone())
}

/// A 3-node quorum cluster with [`TOKEN`], streaming: (cluster, leader index,
/// a temp dir holding the token file `good`).
async fn token_cluster() -> (Cluster, usize, tempfile::TempDir) {
    let mut opts = Opts::new(3, "quorum");
    opts.tweak = Some(tweak);
    let c = Cluster::start(opts).await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("good"), TOKEN).expect("token file");
    (c, l, dir)
}

/// Requests of kind `op` the node `i` answered `ok`.
fn ok_count(c: &Cluster, i: usize, op: &str) -> u64 {
    c.shared(i)
        .metrics
        .client_requests_total
        .with_label_values(&[op, "ok"])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_bench_writes_with_the_token_and_counts_refusals_as_errors() {
    let (c, l, dir) = token_cluster().await;
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "not-the-token").expect("token file");
    let put_ok = || ok_count(&c, l, "put");

    // Through a follower's endpoint: the bench finds the leader and writes there.
    let f = (l + 1) % 3;
    let before = put_ok();
    let (code, run) = bench(c.url(f), &good, &dir.path().join("a.json")).await;
    assert_eq!(code, 0, "{run}");
    assert_eq!(run["protocol"], "http", "{run}");
    assert_eq!(run["errors"], 0, "{run}");
    let writes = run["writes"].as_u64().expect("writes");
    assert!(writes > 0, "{run}");
    assert!(
        put_ok() - before >= writes,
        "every write the bench counted was acknowledged by the leader: {} < {writes}",
        put_ok() - before
    );

    // A wrong token: every PUT is answered 401, an error, and nothing is written.
    let before = put_ok();
    let (code, run) = bench(c.url(l), &bad, &dir.path().join("b.json")).await;
    assert_eq!(code, 1, "a run that wrote nothing fails: {run}");
    assert_eq!(run["writes"], 0, "{run}");
    assert!(run["errors"].as_u64().unwrap_or(0) > 0, "{run}");
    let first = run["first_error"].as_str().unwrap_or_default();
    assert!(
        first.contains("401") && first.contains("unauthorized"),
        "{first}"
    );
    assert_eq!(put_ok(), before, "no write went through");
    c.shutdown().await;
}

/// `--op append`: every write is a log record (HTTP `POST /v1/log`, binary
/// `AppendBatch`), acknowledged by the leader as such; the key-value map gets
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_op_append_writes_log_records_not_keys() {
    let (c, l, dir) = token_cluster().await;
    let good = dir.path().join("good");
    let ok = |op: &str| ok_count(&c, l, op);
    let keys = c.shared(l).kv.read().len();
    let puts = ok("put") + ok("put_batch");

    let before = ok("append");
    let (code, run) = bench_with(
        c.url(l),
        &good,
        &dir.path().join("http.json"),
        &["--protocol", "http", "--op", "append"],
    )
    .await;
    assert_eq!(code, 0, "{run}");
    assert_eq!(run["op"], "append", "{run}");
    assert_eq!(run["errors"], 0, "{run}");
    let writes = run["writes"].as_u64().expect("writes");
    assert!(writes > 0, "{run}");
    assert!(ok("append") - before >= writes, "{run}");

    let before = ok("append_batch");
    let (code, run) = bench_with(
        c.url(l),
        &good,
        &dir.path().join("binary.json"),
        &["--protocol", "binary", "--op", "append", "--batch", "8"],
    )
    .await;
    assert_eq!(code, 0, "{run}");
    assert_eq!(run["op"], "append", "{run}");
    assert_eq!(run["errors"], 0, "{run}");
    let writes = run["writes"].as_u64().expect("writes");
    assert!(writes > 0 && writes % 8 == 0, "{run}");
    assert!((ok("append_batch") - before) * 8 >= writes, "{run}");

    assert_eq!(ok("put") + ok("put_batch"), puts, "no put was sent");
    assert_eq!(c.shared(l).kv.read().len(), keys, "no key was written");
    c.shutdown().await;
}

/// `--keys N` cycles each client over its share of N keys: the map grows by
/// exactly the keys reported, however many writes the run made; `--keys` below
/// clients × batch, or with `--op append`, is a usage error (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_keys_bounds_the_key_space() {
    let (c, l, dir) = token_cluster().await;
    let good = dir.path().join("good");
    let keys = c.shared(l).kv.read().len();
    // 4 clients × batch 8: 2 requests per client before the keys repeat.
    let (code, run) = bench_with(
        c.url(l),
        &good,
        &dir.path().join("keys.json"),
        &["--protocol", "binary", "--batch", "8", "--keys", "70"],
    )
    .await;
    assert_eq!(code, 0, "{run}");
    assert_eq!(run["errors"], 0, "{run}");
    assert_eq!(run["keys"], 64, "{run}");
    let writes = run["writes"].as_u64().expect("writes");
    assert!(writes > 64, "the keys were overwritten: {run}");
    let grown = c.shared(l).kv.read().len() - keys;
    assert_eq!(grown, 64, "{run}");
    let exe = env!("CARGO_BIN_EXE_walship");
    for bad in [
        &["--batch", "8", "--clients", "4", "--keys", "31"][..],
        &["--op", "append", "--keys", "1000"][..],
    ] {
        let out = Command::new(exe)
            .args(["bench", "--nodes", "1", "--quiet"])
            .args(bad)
            .output()
            .expect("run walship bench");
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--keys"),
            "{bad:?}"
        );
    }
    c.shutdown().await;
}

/// Run a `walship bench` command off the async threads; it must exit 0.
async fn succeeds(mut cmd: Command) {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run walship bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--keep` leaves the local cluster's directory (data dirs and node logs) in
/// place after the run; without it the directory is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_keep_leaves_the_local_cluster_directory() {
    let parent = tempfile::tempdir().expect("tempdir");
    let run = |keep: bool| {
        let exe = env!("CARGO_BIN_EXE_walship");
        let mut cmd = Command::new(exe);
        cmd.args(["bench", "--nodes", "1", "--mode", "async", "--clients", "1"])
            .args(["--duration", "300ms", "--warmup", "0s", "--quiet", "--dir"])
            .arg(parent.path());
        if keep {
            cmd.arg("--keep");
        }
        cmd
    };
    let dirs = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(parent.path())
            .expect("read parent")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect()
    };
    succeeds(run(false)).await;
    assert!(dirs().is_empty(), "removed without --keep: {:?}", dirs());

    succeeds(run(true)).await;
    let kept = dirs();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].join("n1").is_dir(), "data dir kept: {kept:?}");
    assert!(kept[0].join("n1.log").is_file(), "node log kept: {kept:?}");
}

/// `--node-threads N` becomes each local node's `runtime.worker_threads`: the
/// node runs with it (its start log) and the JSON report records it; 0 is a
/// usage error (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_node_threads_reach_the_local_nodes() {
    let parent = tempfile::tempdir().expect("tempdir");
    let json = parent.path().join("r.json");
    let exe = env!("CARGO_BIN_EXE_walship");
    let mut cmd = Command::new(exe);
    cmd.args(["bench", "--nodes", "1", "--mode", "async", "--clients", "1"])
        .args(["--duration", "300ms", "--warmup", "0s", "--quiet", "--keep"])
        .args(["--node-threads", "1", "--json"])
        .arg(&json)
        .arg("--dir")
        .arg(parent.path());
    succeeds(cmd).await;
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written"))
            .expect("bench JSON");
    assert_eq!(v["runs"][0]["node_worker_threads"], 1, "{v}");
    let cluster = std::fs::read_dir(parent.path())
        .expect("read parent")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir())
        .expect("kept cluster directory");
    let raw = std::fs::read_to_string(cluster.join("n1.log")).expect("node log");
    // Without the terminal colours (ESC [ ... m) the node may write.
    let mut log = String::new();
    let mut in_escape = false;
    for c in raw.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (false, c) => log.push(c),
            (true, 'm') => in_escape = false,
            (true, _) => {}
        }
    }
    assert!(
        log.lines()
            .any(|l| l.contains("async runtime started") && l.contains("worker_threads=1")),
        "{log}"
    );

    let out = Command::new(exe)
        .args(["bench", "--nodes", "1", "--node-threads", "0", "--quiet"])
        .output()
        .expect("run walship bench");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node-threads"));
}
