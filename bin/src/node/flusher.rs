//! The WAL flusher: one thread that turns appended bytes into durable bytes.
//!
//! Group commit across the whole node: appenders (the leader's write path, or
//! the follower's receiver) only publish their new `write_lsn`; this thread
//! flushes everything appended so far with one `fdatasync` and publishes the
//! new flush LSN. While one flush runs, further appends accumulate and share the
//! next one.
//!
//! Invariant: the published flush LSN is never ahead of what is on stable
//! storage (with `wal.sync = always`). A failed flush poisons the WAL (the WAL
//! crate refuses all later appends and flushes); the flusher then stops
//! publishing, so nothing after the failure is ever acknowledged.
//!
//! The thread runs under `SCHED_BATCH` (see [`no_wakeup_preemption`]): woken by
//! an append, it does not take the CPU from the appender's thread, which goes
//! on to ship the same bytes to the followers before it sleeps.

use std::sync::Arc;

use futures::future::{select, Either};
use tokio::sync::watch;

use crate::config::WalSync;

/// What the flusher tells the node (called on the flusher thread).
pub trait FlusherEvents: Send + 'static {
    /// The WAL is durable up to `lsn` (about to be published).
    fn flushed(&self, lsn: u64);
    /// A flush failed and the WAL is poisoned; the flusher stops after this.
    fn failed(&self);
}

/// Spawn the flusher thread. It runs until `shutdown` becomes true or the WAL fails;
/// on a failed flush it calls `on_failed` (on this thread) and ends without
/// publishing anything more.
///
/// `events.flushed` is called on this thread with every new flush LSN, after it
/// is durable and before it is published on `flushed` (the node feeds its
/// leader's commit gate there, so a write waiting for the leader's flush is
/// released by this thread directly, without a hop through another task).
/// `events.failed` is called once if a flush fails with the WAL poisoned.
pub fn spawn(
    wal: Arc<wal::Wal>,
    sync: WalSync,
    mut written: watch::Receiver<u64>,
    flushed: watch::Sender<u64>,
    fsync_seconds: prometheus::Histogram,
    mut shutdown: watch::Receiver<bool>,
    events: impl FlusherEvents,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("wal-flusher".into())
        .spawn(move || {
            no_wakeup_preemption();
            loop {
                if *shutdown.borrow() {
                    return;
                }
                let target = *written.borrow_and_update();
                if target <= *flushed.borrow() {
                    if !wait_written(&mut written, &mut shutdown) {
                        return;
                    }
                    continue;
                }
                let started = std::time::Instant::now();
                let result = match sync {
                    WalSync::Always => wal.flush(wal::Lsn(target)).map(|l| l.0.max(target)),
                    WalSync::Never => Ok(target),
                };
                match result {
                    Ok(done) => {
                        if sync == WalSync::Always {
                            fsync_seconds.observe(started.elapsed().as_secs_f64());
                        }
                        events.flushed(done);
                        flushed.send_if_modified(|f| {
                            if done > *f {
                                *f = done;
                                true
                            } else {
                                false
                            }
                        });
                    }
                    Err(e) if wal.poison_cause().is_some() => {
                        tracing::error!(
                            up_to = %wal::Lsn(target),
                            error = %e,
                            "WAL flush failed; walship stops acknowledging writes (a failed fsync \
                             is never retried). Restart the node once the disk is healthy: \
                             recovery keeps what is durable"
                        );
                        events.failed();
                        return;
                    }
                    Err(e) => {
                        // Not a failed fsync (e.g. the log was truncated below the
                        // target meanwhile): nothing is published; flush again at
                        // the next append.
                        tracing::warn!(
                            up_to = %wal::Lsn(target),
                            error = %e,
                            "WAL flush not done; the flusher flushes again at the next append"
                        );
                        if !wait_written(&mut written, &mut shutdown) {
                            return;
                        }
                    }
                }
            }
        })
}

/// Wait until the write LSN changes (true) or shutdown / the sender is gone (false).
fn wait_written(written: &mut watch::Receiver<u64>, shutdown: &mut watch::Receiver<bool>) -> bool {
    futures::executor::block_on(async {
        match select(Box::pin(written.changed()), Box::pin(shutdown.changed())).await {
            Either::Left((r, _)) => r.is_ok(),
            Either::Right(_) => false,
        }
    })
}

/// Put the calling thread under `SCHED_BATCH`: it gets the same CPU share as
/// before (same nice level), but its wake-ups never preempt the running thread;
/// it runs when that thread sleeps, on an idle CPU, or at the next tick.
///
/// Why: on a small VM the kernel wakes the flusher on the appender's own CPU
/// (the other vCPU is halted, and waking it costs more), and without this the
/// flusher took that CPU at once: the leader's worker thread, about to ship
/// the record to the followers, waited ~30 µs while the fdatasync was being
/// submitted (traced with `perf sched`, 3 nodes on 2 vCPUs). Measured with
/// `walship bench` (benches/CLUSTER.md, session 7): one-client quorum p50
/// 343 → 324 µs, 32 clients 31.9k → 33.7k writes/s (binary), 27.6k → 30.5k (HTTP).
///
/// Failure only costs speed, never correctness, so it is logged at debug.
fn no_wakeup_preemption() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain syscall on the calling thread (pid 0) with a valid
        // parameter block; SCHED_BATCH needs no privilege.
        let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if r != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot put the WAL flusher under SCHED_BATCH; it keeps the default policy"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;
    impl FlusherEvents for Quiet {
        fn flushed(&self, _lsn: u64) {}
        fn failed(&self) {}
    }

    /// Scheduling policy of this process's thread named `name` (field 41 of
    /// /proc/self/task/TID/stat).
    #[cfg(target_os = "linux")]
    fn policy_of(name: &str) -> Option<u32> {
        for t in std::fs::read_dir("/proc/self/task").ok()? {
            let dir = t.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            if comm.trim() != name {
                continue;
            }
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            // Fields after the parenthesised command name start at field 3.
            let rest = &stat[stat.rfind(')')? + 2..];
            return rest.split_whitespace().nth(41 - 3)?.parse().ok();
        }
        None
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_flusher_thread_runs_without_wakeup_preemption() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = wal::Wal::open(
            &dir.path().join("wal"),
            wal::WalOptions {
                segment_size: 1 << 20,
                ..Default::default()
            },
        )
        .unwrap();
        let wal = Arc::new(wal);
        let (written_tx, written_rx) = watch::channel(wal.write_lsn().0);
        let (flushed_tx, mut flushed_rx) = watch::channel(wal.flush_lsn().0);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let hist =
            prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("t", "t")).unwrap();
        let handle = spawn(
            wal.clone(),
            WalSync::Always,
            written_rx,
            flushed_tx,
            hist,
            shutdown_rx,
            Quiet,
        )
        .unwrap();
        // One append flushed by the thread: it is up and running its loop.
        let end = wal.append(1, wal::kind::TERM_START, b"n1").unwrap().end.0;
        written_tx.send_replace(end);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while *flushed_rx.borrow_and_update() < end {
            assert!(std::time::Instant::now() < deadline, "not flushed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            policy_of("wal-flusher"),
            Some(libc::SCHED_BATCH as u32),
            "the flusher thread is not under SCHED_BATCH"
        );
        shutdown_tx.send_replace(true);
        written_tx.send_replace(end);
        handle.join().unwrap();
    }
}
