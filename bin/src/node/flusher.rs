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

/// Spawn the flusher thread. It runs until `shutdown` becomes true or the WAL fails.
///
/// `on_flushed` is called on this thread with every new flush LSN, after it is
/// durable and before it is published on `flushed` (the node feeds its
/// leader's commit gate there, so a write waiting for the leader's flush is
/// released by this thread directly, without a hop through another task).
pub fn spawn(
    wal: Arc<wal::Wal>,
    sync: WalSync,
    mut written: watch::Receiver<u64>,
    flushed: watch::Sender<u64>,
    fsync_seconds: prometheus::Histogram,
    mut shutdown: watch::Receiver<bool>,
    on_flushed: impl Fn(u64) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("wal-flusher".into())
        .spawn(move || loop {
            if *shutdown.borrow() {
                return;
            }
            let target = *written.borrow_and_update();
            if target > *flushed.borrow() {
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
                        on_flushed(done);
                        flushed.send_if_modified(|f| {
                            if done > *f {
                                *f = done;
                                true
                            } else {
                                false
                            }
                        });
                    }
                    Err(e) => {
                        tracing::error!(
                            up_to = %wal::Lsn(target),
                            error = %e,
                            "WAL flush failed; walship stops acknowledging writes (a failed fsync is never retried). Restart the node once the disk is healthy: recovery keeps what is durable"
                        );
                        return;
                    }
                }
                continue;
            }
            let changed = futures::executor::block_on(async {
                match select(Box::pin(written.changed()), Box::pin(shutdown.changed())).await {
                    Either::Left((r, _)) => r.is_ok(),
                    Either::Right(_) => false,
                }
            });
            if !changed {
                return;
            }
        })
}
