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
//! The toucher works in the segment holding the write LSN `w` (loaded with Acquire)
//! and, once the window reaches past its end, in the next segment (prepared and
//! offered by the preallocator, not yet visible to readers), only on whole pages
//! *strictly beyond the page holding `w`*:
//!
//! ```text
//!   start = max(touched_upto, first page boundary > w)
//!   lead  = min(window, (w - flush_lsn) / 2), nothing if lead < MIN_LEAD (64 KiB)
//!   end   = w + lead, rounded up to a page (split at the segment boundary)
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
//! * In the next segment (offered by the preallocator after it is allocated,
//!   fsynced and renamed), every byte is beyond `w`; readers cannot reach it before
//!   the rollover, and the appender writes it only after the rollover, at or after
//!   `w` — the same cases as above. A crash leaves it all zero (recovery removes it
//!   as a trailing segment without records, or treats its zeros as the end of log).
//! * The toucher holds an `Arc<Segment>` while it touches, so the mapping stays
//!   valid even if `truncate_after`, `reset` or `remove_before` removes the segment
//!   meanwhile (touching a deleted file's pages is wasted work, never visible). A
//!   truncation or reset lowers `w`; the toucher notices and restarts its pass from
//!   the new `w`.
//! * The only shared state it writes is its own `touched_upto`/`sleeping` atomics.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tracing::{debug, warn};

use crate::segment::Segment;
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
    /// The last append was bulk (written with `pwrite`, see `Segment::pwrite`):
    /// pages it will write need no touching, so the toucher rests.
    bulk: AtomicBool,
    sleeping: AtomicBool,
    stop: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
    /// The prepared segment that follows the writer's (published by the
    /// preallocator), so the window can reach into it before the rollover.
    next: Arc<Mutex<Option<Arc<Segment>>>>,
}

/// Lets the preallocation thread hand its new segment to the toucher.
pub(crate) struct NextSlot {
    slot: Option<Arc<Mutex<Option<Arc<Segment>>>>>,
    thread: Option<std::thread::Thread>,
}

impl NextSlot {
    /// Offers `seg` (the segment after the writer's) and wakes the toucher.
    pub fn publish(&self, seg: &Arc<Segment>) {
        if let Some(s) = &self.slot {
            *s.lock() = Some(seg.clone());
            if let Some(t) = &self.thread {
                t.unpark();
            }
        }
    }
}

impl TouchAhead {
    pub fn new(window: u64) -> TouchAhead {
        let page = page_size();
        TouchAhead {
            window: window.div_ceil(page) * page,
            page,
            touched_upto: AtomicU64::new(0),
            bulk: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
            next: Arc::new(Mutex::new(None)),
        }
    }

    /// A handle for the preallocation thread (inert when touch-ahead is off).
    pub fn next_slot(&self) -> NextSlot {
        NextSlot {
            slot: (self.window > 0).then(|| self.next.clone()),
            thread: self.thread.get().cloned(),
        }
    }

    /// Forgets the offered next segment (truncate/reset delete it).
    pub fn withdraw_next(&self) {
        *self.next.lock() = None;
    }

    /// The offered segment if it starts at `start`.
    fn next_at(&self, start: u64) -> Option<Arc<Segment>> {
        self.next
            .lock()
            .as_ref()
            .filter(|s| s.start == start)
            .cloned()
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
    /// [`MIN_LEAD`]. May reach into the next segment (`run` splits it).
    fn work(&self, w: u64, f: u64, touched: u64) -> (u64, u64) {
        let start = touched.max(self.first_page_after(w));
        let lead = self.window.min(w.saturating_sub(f) / 2);
        if lead < MIN_LEAD || self.bulk.load(Ordering::Relaxed) {
            return (start, start);
        }
        (start, (w + lead).div_ceil(self.page) * self.page)
    }

    /// Records whether the last append was bulk (`pwrite`): while it is, nothing
    /// is touched ahead (a page `pwrite` fills whole needs no fault and no
    /// zero-fill; touching it first would only add both).
    pub fn note_bulk(&self, bulk: bool) {
        if self.bulk.load(Ordering::Relaxed) != bulk {
            self.bulk.store(bulk, Ordering::Relaxed);
        }
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
        // Only work in the writer's segment wakes the toucher; the preallocator wakes
        // it for the next one.
        let (start, end) = self.work(w, f, self.touched_upto.load(Ordering::Relaxed));
        let end = end.min(seg_end);
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

/// Where the toucher should work next: the segment and `[start, end)` in LSNs
/// (at most one CHUNK, inside that segment), or None if nothing is to be done.
fn next_job(inner: &Inner, w: u64, f: u64) -> Option<(Arc<Segment>, u64, u64)> {
    let t = &inner.touch;
    let size = inner.seg_size;
    let seg_start = w & !(size - 1);
    let seg_end = seg_start + size;
    let (start, end) = t.work(w, f, t.touched_upto.load(Ordering::Relaxed));
    if end <= start {
        return None;
    }
    let (seg, end) = if start < seg_end {
        (
            inner.segments.read().get(&seg_start).cloned()?,
            end.min(seg_end),
        )
    } else {
        // The window reaches past the writer's segment: the prepared next one, if
        // the preallocator has offered it (never further).
        let next = t.next_at(seg_end)?;
        (next, end.min(seg_end + size))
    };
    (end > start).then(|| (seg, start, end.min(start + CHUNK)))
}

fn run(inner: &Inner) {
    let t = &inner.touch;
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
        if let Some((seg, start, end)) = next_job(inner, w, f) {
            // `start` lies beyond w's page, `[start, end)` inside `seg` (next_job).
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
            t.touched_upto.store(end, Ordering::Relaxed);
            continue;
        }
        // Nothing to do: announce sleep, then re-check (pairs with `poke`; the
        // preallocator's unpark leaves a token, so it is never lost either).
        t.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let w2 = inner.write_lsn.load(Ordering::Acquire);
        let f2 = inner.flush_lsn.load(Ordering::Acquire);
        if w2 >= last_w && next_job(inner, w2, f2).is_none() && !t.stop.load(Ordering::Acquire) {
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
        // Never the page holding w, never more than half the unflushed backlog ahead.
        assert_eq!(t.work(100, 0, 0), (p, p)); // lead 50 B: nothing
        let w = 100 * p + 5;
        let (s, e) = t.work(w, w - (MIN_LEAD * 2 - 2), 0);
        assert!(e <= s, "lead under MIN_LEAD: nothing");
        let (s, e) = t.work(w, 0, 0);
        assert_eq!(s, 101 * p);
        assert_eq!(e, (w + w / 2).div_ceil(p) * p);
        // Full window with a large backlog; continues where it stopped.
        let w = 32 << 20;
        assert_eq!(t.work(w, 0, w + 8 * p), (w + 8 * p, w + (1 << 20)));
        // Reaches into the next segment by at most the window.
        let w = seg_end - 3 * p;
        assert_eq!(t.work(w, 0, 0), (seg_end - 2 * p, w + (1 << 20)));
        // Flushed up to w: nothing ahead is touched.
        let (s, e) = t.work(w, w, 0);
        assert!(e <= s);
        // After a bulk append nothing is touched; after a small one again.
        t.note_bulk(true);
        let (s, e) = t.work(32 << 20, 0, 0);
        assert!(e <= s);
        t.note_bulk(false);
        let (s, e) = t.work(32 << 20, 0, 0);
        assert!(e > s);
    }
}
