//! Touch-ahead: a background thread that makes the pages just ahead of the write
//! position writable before the appender reaches them.
//!
//! # Why
//!
//! Segments are mapped `MAP_SHARED`. A page of a shared file mapping is mapped
//! read-only while it is clean (the kernel tracks dirtying), so even a page
//! prefaulted with MAP_POPULATE takes a write-protect fault on its first store,
//! which runs the file system's `page_mkwrite` (ext4: `__block_write_begin_int`,
//! `block_dirty_folio`, ...). Measured: 53 % of the appending thread's time with
//! 4 KiB records. This thread takes those faults on another core, ahead of the
//! appender, with `madvise(MADV_POPULATE_WRITE)`: one fault per page that reads
//! (zero-fills) and dirties it, so the preallocator then skips MAP_POPULATE (a
//! second, read-only fault per page; measured: the process spends ~half the CPU per
//! GB appended without it). If the toucher falls behind, the appender faults the
//! page itself, as before (no I/O: the blocks are unwritten extents, or zero pages
//! still in the page cache after `zero_fill`).
//!
//! # What is touched, and how much
//!
//! The toucher works only in the segment holding the write LSN `w` (loaded with
//! Acquire) and only on whole pages *strictly beyond the page holding `w`*:
//!
//! ```text
//!   start = max(touched_upto, first page boundary > w)
//!   lead  = min(window, (w - flush_lsn) / 2), nothing if lead < MIN_LEAD (64 KiB)
//!   end   = min(w + lead rounded up to a page, end of w's segment)
//! ```
//!
//! The lead is bounded by half the unflushed backlog `w - flush_lsn`: pages dirtied ahead
//! of the write position are written back (as zeros) by the next `fdatasync` and are
//! clean (write-protected) again afterwards, so touching far ahead only pays when no
//! flush comes before the appender gets there. With this bound a flush writes at most
//! `min(window, half the bytes it flushes anyway)` extra bytes of zeros, and a
//! workload that flushes at least every 128 KiB (one appender flushing each record,
//! group commit) never has a page touched: its flush latency is unchanged. Each page is touched at most once per
//! pass (`touched_upto` only grows, except after a truncation or reset moved `w`
//! back), so the extra write-back I/O over a segment's life is bounded by its size.
//!
//! # Safety argument (content never changes; nobody is raced)
//!
//! * `MADV_POPULATE_WRITE` faults pages in writable "as if written" but performs no
//!   memory access: no byte changes, so no appender store, reader load, truncation
//!   memset or `FALLOC_FL_ZERO_RANGE` can be affected by it. The kernel serializes it
//!   with truncation/zero-range through its own page and invalidate locks.
//! * Fallback for kernels without it (< 5.14, `EINVAL`): one atomic
//!   `fetch_or(0)` on the first 8-byte word of each page. It is a single atomic
//!   read-modify-write that stores back exactly the value it read, so a concurrent
//!   plain store to that word (the appender copying a record there, a truncation
//!   zeroing it) is ordered entirely before it (then its value is kept) or entirely
//!   after it (then it overwrites); it is never lost and no stale byte is ever
//!   resurrected. The word is inside the mapping (page-aligned, so 8-aligned).
//! * Bytes beyond the write LSN therefore stay exactly what they were: zeros (the
//!   end-of-log invariant recovery relies on; a crash leaves zeros beyond the end,
//!   at worst as "written" zero blocks instead of unwritten extents).
//! * The toucher holds an `Arc<Segment>` while it touches, so the mapping stays
//!   valid even if `truncate_after`, `reset` or `remove_before` removes the segment
//!   meanwhile (touching a deleted file's pages is wasted work, never visible). A
//!   truncation or reset lowers `w`; the toucher notices and restarts its pass from
//!   the new `w`.
//! * The only shared state it writes is its own `touched_upto`/`sleeping` atomics.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing::{debug, warn};

use crate::wal::Inner;

/// Default touch-ahead window (see `WalOptions::touch_ahead`).
pub(crate) const DEFAULT_WINDOW: u64 = 4 << 20;

/// Pages made writable per `madvise` call: small, so the toucher re-reads the write
/// LSN often and skips pages the appender has already passed.
const CHUNK: u64 = 256 << 10;

/// No touching while the lead (half the unflushed backlog) is smaller than this: a
/// workload that flushes every < 2 * MIN_LEAD bytes never has pages dirtied ahead.
const MIN_LEAD: u64 = 64 << 10;

/// The appender wakes a sleeping toucher only when at least this much work waits
/// (avoids a futex wake per append).
const WAKE_STEP: u64 = 128 << 10;

/// Longest sleep without a wake-up (a safety net; wake-ups are explicit).
const IDLE_SLEEP: Duration = Duration::from_millis(200);

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 && (p as u64).is_power_of_two() {
        p as u64
    } else {
        4096
    }
}

/// Whether the kernel knows MADV_POPULATE_WRITE (Linux 5.14+): a zero-length call
/// validates the advice (EINVAL if unknown) and touches nothing.
fn populate_write_supported() -> bool {
    // SAFETY: a zero-length range at a page-aligned address: no memory is affected.
    unsafe { libc::madvise(std::ptr::null_mut(), 0, libc::MADV_POPULATE_WRITE) == 0 }
}

/// Shared state between the appender (which wakes) and the toucher thread.
pub(crate) struct TouchAhead {
    /// Window in bytes, rounded to pages; 0 = off (no thread).
    pub window: u64,
    pub page: u64,
    /// Pages below this LSN have been made writable in the current pass.
    touched_upto: AtomicU64,
    sleeping: AtomicBool,
    stop: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

impl TouchAhead {
    pub fn new(window: u64) -> TouchAhead {
        let page = page_size();
        TouchAhead {
            window: window.div_ceil(page) * page,
            page,
            touched_upto: AtomicU64::new(0),
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
        }
    }

    /// Whether the toucher will fault pages in itself with MADV_POPULATE_WRITE (on,
    /// and the kernel knows the advice), so segments need no MAP_POPULATE.
    pub fn populates(&self) -> bool {
        self.window > 0 && populate_write_supported()
    }

    /// First page boundary strictly above the page holding `w`.
    fn first_page_after(&self, w: u64) -> u64 {
        (w / self.page + 1) * self.page
    }

    /// The range `[start, end)` the toucher should make writable now (empty if
    /// `end <= start`): pages strictly beyond `w`'s page, at most
    /// `min(window, (w - f) / 2)` ahead of `w`, nothing while that lead is under
    /// [`MIN_LEAD`], never past the segment end.
    fn work(&self, w: u64, f: u64, touched: u64, seg_end: u64) -> (u64, u64) {
        let start = touched.max(self.first_page_after(w));
        let lead = self.window.min(w.saturating_sub(f) / 2);
        if lead < MIN_LEAD {
            return (start, start);
        }
        let end = (w + lead).div_ceil(self.page) * self.page;
        (start, end.min(seg_end))
    }

    /// Restarts the pass at the write LSN (after `truncate_after`/`reset` lowered it).
    pub fn rewind(&self) {
        self.touched_upto.store(0, Ordering::Relaxed);
    }

    /// Called by the appender after publishing `w`: wakes the toucher if it sleeps
    /// and enough pages ahead of `w` are waiting. Cheap when there is nothing to do.
    pub fn poke(&self, w: u64, f: u64, seg_end: u64) {
        if self.window == 0 {
            return;
        }
        let (start, end) = self.work(w, f, self.touched_upto.load(Ordering::Relaxed), seg_end);
        if end <= start || (end < start + WAKE_STEP && end < seg_end) {
            return;
        }
        // Pairs with the fence in `run` (store `sleeping`, fence, load `write_lsn`):
        // either the toucher sees our write LSN or we see it sleeping.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    /// Asks the thread to exit (it is joined by `Wal::drop`).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// Starts the toucher thread for `inner` (if its window is not 0).
pub(crate) fn spawn(inner: &Arc<Inner>) -> Option<std::thread::JoinHandle<()>> {
    if inner.touch.window == 0 {
        return None;
    }
    let i = inner.clone();
    match std::thread::Builder::new()
        .name("wal-touch".into())
        .spawn(move || run(&i))
    {
        Ok(h) => {
            let _ = inner.touch.thread.set(h.thread().clone());
            Some(h)
        }
        Err(e) => {
            warn!(
                error = %e,
                "cannot start the WAL touch-ahead thread; appends will take the page \
                 write faults themselves (slower, otherwise correct)"
            );
            None
        }
    }
}

fn run(inner: &Inner) {
    let t = &inner.touch;
    let size = inner.seg_size;
    let mut last_w = inner.write_lsn.load(Ordering::Acquire);
    let mut populate_write = true;
    while !t.stop.load(Ordering::Acquire) {
        let w = inner.write_lsn.load(Ordering::Acquire);
        let f = inner.flush_lsn.load(Ordering::Acquire);
        if w < last_w {
            // truncate_after or reset moved the log back: start a new pass.
            t.touched_upto.store(0, Ordering::Relaxed);
        }
        last_w = w;
        let seg_start = w & !(size - 1);
        let seg_end = seg_start + size;
        let (start, end) = t.work(w, f, t.touched_upto.load(Ordering::Relaxed), seg_end);
        if end > start {
            let end = end.min(start + CHUNK);
            let seg = inner.segments.read().get(&seg_start).cloned();
            if let Some(seg) = seg {
                // `start` is beyond w's page and `end` within the segment (see `work`).
                let (off, len) = (start - seg.start, end - start);
                if populate_write {
                    match seg.populate_write(off, len) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                            debug!(
                                "MADV_POPULATE_WRITE is not supported by this kernel; the WAL \
                                 touch-ahead thread falls back to atomic page touches"
                            );
                            populate_write = false;
                            seg.touch_pages(off, len, t.page);
                        }
                        Err(e) => {
                            // Not fatal: the appender takes those faults itself.
                            debug!(error = %e, segment = %seg.path.display(), "WAL touch-ahead: madvise failed; skipping these pages");
                        }
                    }
                } else {
                    seg.touch_pages(off, len, t.page);
                }
            }
            t.touched_upto.store(end, Ordering::Relaxed);
            continue;
        }
        // Nothing to do: announce sleep, then re-check (see `poke`).
        t.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let w2 = inner.write_lsn.load(Ordering::Acquire);
        let f2 = inner.flush_lsn.load(Ordering::Acquire);
        let (s2, e2) = t.work(
            w2,
            f2,
            t.touched_upto.load(Ordering::Relaxed),
            (w2 & !(size - 1)) + size,
        );
        if e2 <= s2 && !t.stop.load(Ordering::Acquire) {
            std::thread::park_timeout(IDLE_SLEEP);
        }
        t.sleeping.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_range() {
        let t = TouchAhead::new(1 << 20);
        let p = t.page;
        let seg_end = 64 << 20;
        // Never the page holding w, never more than the unflushed backlog ahead.
        assert_eq!(t.work(100, 0, 0, seg_end), (p, p)); // lead 50 B: nothing
        let w = 100 * p + 5;
        let (s, e) = t.work(w, w - (MIN_LEAD * 2 - 2), 0, seg_end);
        assert!(e <= s, "lead under MIN_LEAD: nothing");
        let (s, e) = t.work(w, 0, 0, seg_end);
        assert_eq!(s, 101 * p);
        assert_eq!(e, (w + w / 2).div_ceil(p) * p);
        // Full window with a large backlog; continues where it stopped.
        let w = 32 << 20;
        assert_eq!(t.work(w, 0, w + 8 * p, seg_end), (w + 8 * p, w + (1 << 20)));
        // Clamped to the segment end.
        let w = seg_end - 3 * p;
        assert_eq!(t.work(w, 0, 0, seg_end), (seg_end - 2 * p, seg_end));
        // Flushed up to w: nothing ahead is touched.
        let (s, e) = t.work(w, w, 0, seg_end);
        assert!(e <= s);
    }
}
