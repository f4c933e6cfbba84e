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
