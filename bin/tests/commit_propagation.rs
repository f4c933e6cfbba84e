//! How followers learn the commit LSN (shipper::sender, "Commit LSN"): a commit
//! advance rides with the next WAL data, or goes out on its own after a short
//! linger when no WAL follows — never only with the next heartbeat. Heartbeats
//! here are 30 s apart, so a follower that learns a commit within the 10 s
//! bound below learnt it from the linger, not from a heartbeat. (The sender's
//! own rules — riding with data, at once for remote_apply, after a stall — are
//! tested in `shipper/tests/sender_commit.rs`.)

mod common;

use std::time::Duration;

use common::{wait_for, Cluster, Opts};

/// Far below the 30 s heartbeat: a commit that only a heartbeat carries misses it.
const SOON: Duration = Duration::from_secs(10);

fn opts() -> Opts {
    Opts {
        auto: false,
        heartbeat: "30s",
        election_timeout: "90s",
        ack_timeout: "1s",
        standbys: Some("ANY 1 (n2, n3)".into()),
        ..Opts::new(3, "quorum")
    }
}

/// Wait until follower `f` knows the commit LSN `lsn` and has applied it.
async fn wait_commit_known(c: &Cluster, f: usize, lsn: u64, what: &str) {
    let s = c.shared(f).clone();
    wait_for(
        &format!(
            "{} learns commit {} ({what}) without a heartbeat",
            c.ids[f],
            wal::Lsn(lsn)
        ),
        SOON,
        || s.commit_lsn() >= lsn && s.applied_lsn() >= lsn,
    )
    .await;
}

/// One write, then silence: every follower still learns its commit and applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_follower_learns_the_last_commit_without_a_heartbeat() {
    let c = Cluster::start(opts()).await;
    let l = c.promote(0).await;
    c.wait_streaming(l).await;
    for round in 0..5 {
        let lsn = c
            .put_ok(l, &format!("k{round}"), "v", Some("remote_flush"))
            .await;
        for f in [1, 2] {
            wait_commit_known(&c, f, lsn, "the last write, nothing after it").await;
        }
        // The value is readable on the followers without waiting.
        for f in [1, 2] {
            let (st, body, _) = c.get(f, &format!("k{round}"), "").await;
            assert_eq!((st, body.as_str()), (200, "v"), "round {round}");
        }
    }
    c.shutdown().await;
}
