//! The `Wal` handle: append, group-commit flush, truncation, retention, reset.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};
use tracing::{error, info, warn};

use crate::failpoints as fp;
use crate::flushgate::FlushGate;
use crate::history::{self, TermSpan};
use crate::reader::WalReader;
use crate::record::{self, aligned_len, kind, HEADER_LEN};
use crate::recovery;
use crate::segment::{self, Segment};
use crate::toucher::{self, TouchAhead};
use crate::{Lsn, Term, WalError};

/// File holding the log start LSN written by [`Wal::reset`].
pub(crate) const START_FILE: &str = "wal_start";
const LOCK_FILE: &str = "LOCK";

/// Options for [`Wal::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Size of every segment file in bytes: a power of two, at least 1 MiB
    /// (default 64 MiB). Must match the size of existing segments.
    pub segment_size: u64,
    /// On damage that recovery cannot attribute to a torn tail, truncate the log at
    /// the damage (logged) instead of refusing to open.
    pub repair: bool,
    /// How new segments are prepared (by the background preallocator). Both ways the
    /// file is fully allocated with `fallocate` and its pages are faulted in ahead of
    /// the writer (see `touch_ahead`).
    ///
    /// * `false` (default): blocks stay "unwritten" extents. Fastest appends and no
    ///   extra I/O, but the first fdatasync that reaches each new 4 KiB block also
    ///   commits an ext4 journal transaction (extent conversion): flushing after every
    ///   small record costs the same as a plain file, flushing after every >= 4 KiB
    ///   record costs ~3x (see benches/README.md).
    /// * `true`: zeros are written over the whole segment and fdatasynced before it is
    ///   used (PostgreSQL's `wal_init_zero`): per-record flushes stay at plain-file
    ///   cost for any record size, but every segment is written twice, so sustained
    ///   append throughput is bounded by half the disk bandwidth.
    pub zero_fill: bool,
    /// Touch-ahead window in bytes (default 4 MiB; 0 turns it off). A background
    /// thread makes the pages up to this far ahead of the write position writable
    /// (`madvise(MADV_POPULATE_WRITE)`) before appends reach them, so the appending
    /// thread does not take a page write fault per 4 KiB of log (measured: ~half
    /// its time). It never changes a byte (bytes beyond the write LSN stay zero).
    /// The lead is also bounded by half the unflushed backlog and is 0 below 64 KiB:
    /// a flush writes at most that many extra bytes of zero pages, and workloads that
    /// flush at least every 128 KiB never dirty a page ahead (their flush cost is
    /// unchanged). See `toucher.rs` for the safety argument.
    pub touch_ahead: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 << 20,
            repair: false,
            zero_fill: false,
            touch_ahead: crate::toucher::DEFAULT_WINDOW,
        }
    }
}

/// Where an appended record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// LSN of the record (its first byte).
    pub lsn: Lsn,
    /// LSN just past the record (= the LSN of the next one); flush up to this.
    pub end: Lsn,
}

/// What [`Wal::open`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Oldest retained LSN.
    pub first_lsn: Lsn,
    /// End of the recovered log (LSN of the next record).
    pub write_lsn: Lsn,
    /// Retained records (PADDING not counted), every one CRC-checked.
    pub records: u64,
    /// Retained segment files.
    pub segments: usize,
    /// A torn tail that was cut off: `[from, to)`.
    pub cut_tail: Option<(Lsn, Lsn)>,
    /// Where the log was truncated because of damage (only with `repair = true`).
    pub repaired_at: Option<Lsn>,
    /// Term of the last record (or of the term history's last entry; 0 if none).
    pub last_term: Term,
}

/// What [`Wal::truncate_after`] removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncateReport {
    /// Start of the removed range (the new write LSN).
    pub from: Lsn,
    /// End of the removed range (the old write LSN).
    pub to: Lsn,
    /// Records removed (PADDING not counted).
    pub records: u64,
    /// Segment files deleted.
    pub segments_removed: usize,
}

/// A background segment preparation (see `Writer::kick`).
type Preparing = JoinHandle<Result<Arc<Segment>, WalError>>;

pub(crate) struct Writer {
    /// Segment holding `pos` (or ending exactly at `pos`).
    pub cur: Arc<Segment>,
    /// Write position (= write_lsn, which is published from it).
    pub pos: u64,
    /// First LSN of the log in its first segment (set by `reset`).
    pub log_start: u64,
    /// Allocated segments following `cur`, contiguous, not yet in the map.
    ready: VecDeque<Arc<Segment>>,
    /// Background allocation of the segment starting at .0.
    pending: Option<(u64, Preparing)>,
    /// Segment preparations failed in a row (logged; reset by a success).
    alloc_failures: u64,
    /// When such a failure was last logged.
    alloc_warned: Option<std::time::Instant>,
    /// Reused buffer in which a bulk batch is encoded before one `pwrite`.
    scratch: Vec<u8>,
}

/// At most one ERROR line per this interval while segment preparation keeps failing.
const ALLOC_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub seg_size: u64,
    pub max_record: u64,
    pub zero_fill: bool,
    /// Whether new segments are mapped with MAP_POPULATE: false while the
    /// touch-ahead thread runs with MADV_POPULATE_WRITE (it faults pages in writable
    /// itself); set to true if that thread cannot start.
    populate: AtomicBool,
    /// End of the last appended record. Stored with Release after the bytes are in
    /// the map; readers load it with Acquire and read only below it.
    pub write_lsn: AtomicU64,
    pub flush_lsn: AtomicU64,
    pub first_lsn: AtomicU64,
    pub last_term: AtomicU64,
    /// fdatasync calls made by `flush` (group commit shows as fewer than flushes).
    fsyncs: AtomicU64,
    /// Callers parked in `flush` waiting for the current leader (group commit).
    flush_parked: AtomicU32,
    /// How many callers were parked when the last flush leader finished: the size
    /// of the group that is about to come back with new appends.
    last_group: AtomicU32,
    /// Duration of the last fdatasync round, in nanoseconds (bounds the gather wait).
    last_sync_ns: AtomicU64,
    poisoned: AtomicBool,
    poison_cause: Mutex<String>,
    /// Every retained segment by start LSN (readers, flush, retention).
    pub segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// Bumped (Release) each time `truncate_after` or `reset` puts a new file in
    /// place of a segment a reader may have cached; readers that load it (Acquire)
    /// after the write LSN and see a change look the segment up again, so they
    /// never read records appended after a cut through the replaced mapping.
    pub generation: AtomicU64,
    pub writer: Mutex<Writer>,
    /// Group-commit leadership, also taken by truncate/reset (order: flush gate,
    /// then writer mutex, then history mutex).
    flush_gate: FlushGate,
    /// Held by `remove_before` for its whole run (file deletion and directory
    /// fsync happen outside the writer mutex, so removal never blocks appends), and
    /// by `truncate_after` / `reset_with_history` before anything else, so they never
    /// create a segment file that a removal still in progress would delete.
    /// Order: retention, then flush gate, then writer, then history.
    retention: Mutex<()>,
    history: Mutex<Vec<TermSpan>>,
    /// Touch-ahead thread state (see `toucher.rs`).
    pub touch: TouchAhead,
    _lock_file: File,
    #[cfg(test)]
    pub fail_next_fsync: AtomicBool,
    /// Test hook: followers currently waiting in `flush`.
    #[cfg(test)]
    pub test_waiting: AtomicU64,
    /// Test hook: the next flush leader waits until this many followers wait.
    #[cfg(test)]
    pub test_hold_for: AtomicU64,
}

/// Records, when a flush leader finishes, how many callers it releases (see
/// [`Wal::gather_group`]).
struct ReleaseGroup<'a>(&'a Inner);

impl Drop for ReleaseGroup<'_> {
    fn drop(&mut self) {
        // Parked callers plus this leader come back as the next group.
        let parked = self.0.flush_parked.load(Ordering::Acquire);
        self.0.last_group.store(parked + 1, Ordering::Release);
    }
}

/// A segmented, memory-mapped write-ahead log. `Send + Sync`: share it as `Arc<Wal>`.
/// All methods take `&self`; appends are serialized internally, flushes are group
/// commits, readers never block writers.
pub struct Wal {
    inner: Arc<Inner>,
    /// The touch-ahead thread (None if off or it could not start); joined on drop.
    toucher: Option<JoinHandle<()>>,
}

/// Bulk copies of at least this many bytes go through `pwrite` rather than the
/// map (see [`Segment::pwrite`]): on a VM, faulting in and zero-filling fresh
/// pages of the map costs more than the copy itself.
const PWRITE_MIN: usize = 16 << 10;

fn seg_start(lsn: u64, size: u64) -> u64 {
    lsn & !(size - 1)
}

/// Whether a record of `total` bytes may be written with `rem` bytes left in the
/// segment: it fits, and leaves either nothing or room for at least a header.
fn fits(total: u64, rem: u64) -> bool {
    total <= rem && (total == rem || rem - total >= HEADER_LEN as u64)
}

fn write_atomically(dir: &Path, name: &str, content: &[u8]) -> Result<(), WalError> {
    segment::replace_file(dir, name, content, [fp::START_FILE_WRITE; 3]).map_err(|e| e.error)
}

/// Removes a segment file (failpoint `name`).
fn unlink(path: &Path, name: &str) -> Result<(), WalError> {
    fp::io(name, path).map_err(|e| WalError::io(path, e))?;
    std::fs::remove_file(path).map_err(|e| WalError::io(path, e))
}

/// The error a torn-write failpoint returns after copying `done` of `len` bytes
/// (a simulated crash; the caller poisons the WAL).
fn torn_error(name: &str, path: &Path, done: usize, len: usize) -> WalError {
    WalError::io(
        path,
        std::io::Error::other(format!(
            "failpoint {name}: simulated crash after {done} of {len} bytes were copied"
        )),
    )
}

/// Copies `data` to `off` of `seg` unless torn-write failpoint `name` fires; then
/// copies only the configured prefix and returns the simulated crash.
///
/// # Safety
/// As [`Segment::write`].
unsafe fn copy_or_tear(seg: &Segment, name: &str, off: u64, data: &[u8]) -> Result<(), WalError> {
    if let Some(n) = fp::torn(name, &seg.path, data.len()) {
        seg.write(off, &data[..n]);
        return Err(torn_error(name, &seg.path, n, data.len()));
    }
    seg.write(off, data);
    Ok(())
}

fn read_start_file(dir: &Path) -> Result<Option<u64>, WalError> {
    let path = dir.join(START_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => t
            .trim()
            .parse::<Lsn>()
            .map(|l| Some(l.0))
            .map_err(|e| WalError::Corruption {
                file: path.clone(),
                offset: 0,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WalError::io(&path, e)),
    }
}

/// Whether `lsn` can start a log: 8-aligned and not inside the last < HEADER_LEN
/// bytes of a segment (where not even a PADDING record fits). Every write position
/// must be one, or the next append would pad with a negative length.
pub(crate) fn possible_log_start(lsn: u64, size: u64) -> bool {
    let rem = seg_start(lsn, size) + size - lsn;
    lsn.is_multiple_of(record::ALIGN) && (rem == size || rem >= HEADER_LEN as u64)
}

/// Checks that a record-aligned `lsn` can start a log ([`possible_log_start`]).
fn check_log_start(lsn: u64, size: u64) -> Result<(), WalError> {
    if !possible_log_start(lsn, size) {
        return Err(WalError::InvalidArgument(format!(
            "{} cannot start a log: not a possible record boundary",
            Lsn(lsn)
        )));
    }
    Ok(())
}

impl Inner {
    fn populate(&self) -> bool {
        self.populate.load(Ordering::Relaxed)
    }

    /// Marks the WAL failed for good (see [`WalError::Poisoned`]); the first cause
    /// is kept and logged at ERROR.
    pub(crate) fn poison(&self, cause: &WalError) {
        {
            let mut c = self.poison_cause.lock();
            if self.poisoned.load(Ordering::Acquire) {
                return;
            }
            *c = cause.to_string();
            self.poisoned.store(true, Ordering::Release);
        }
        error!(
            error = %cause,
            dir = %self.dir.display(),
            write_lsn = %Lsn(self.write_lsn.load(Ordering::Acquire)),
            flush_lsn = %Lsn(self.flush_lsn.load(Ordering::Acquire)),
            "WAL failed and is now poisoned: a write to stable storage (fsync/fdatasync of a \
             segment, the directory or the term history, or a durable truncation) failed, so \
             what was written since the last successful flush may be lost. Nothing is retried \
             or reported as durable: every further append and flush fails. An operator must \
             restart the node (after fixing the disk); recovery keeps what is on disk"
        );
    }
}

impl Writer {
    fn next_start(&self) -> u64 {
        self.ready
            .back()
            .map(|s| s.end())
            .unwrap_or_else(|| self.cur.end())
    }

    /// Makes sure `n` allocated segments follow `cur`. Waits for the background
    /// allocation if one is running; allocates synchronously otherwise. A failure
    /// (e.g. `NoSpace`) leaves nothing behind and is retried by the next call (the
    /// next append that needs a segment); failures are logged, at most one line
    /// per [`ALLOC_WARN_EVERY`], and the first success after them is logged too.
    fn obtain(&mut self, inner: &Inner, n: usize) -> Result<(), WalError> {
        match self.obtain_inner(inner, n) {
            Ok(()) => {
                if self.alloc_failures > 0 {
                    info!(
                        dir = %inner.dir.display(),
                        failed_attempts = self.alloc_failures,
                        "WAL segment preparation succeeds again; appends proceed"
                    );
                    self.alloc_failures = 0;
                    self.alloc_warned = None;
                }
                Ok(())
            }
            Err(e) => {
                self.alloc_failures += 1;
                let due = self
                    .alloc_warned
                    .is_none_or(|t| t.elapsed() >= ALLOC_WARN_EVERY);
                if due {
                    error!(
                        segment = %segment::file_name(self.next_start()),
                        dir = %inner.dir.display(),
                        error = %e,
                        failed_attempts = self.alloc_failures,
                        "cannot prepare the next WAL segment: appends that need it fail (nothing \
                         already written is affected); retried on every such append, so writes \
                         resume by themselves once the cause (e.g. a full disk) is fixed"
                    );
                    self.alloc_warned = Some(std::time::Instant::now());
                }
                Err(e)
            }
        }
    }

    fn obtain_inner(&mut self, inner: &Inner, n: usize) -> Result<(), WalError> {
        while self.ready.len() < n {
            let want = self.next_start();
            let seg = match self.pending.take() {
                Some((start, h)) if start == want => match h.join() {
                    Ok(r) => r?,
                    Err(_) => {
                        error!(
                            "WAL segment preallocation thread panicked; allocating segment {} synchronously",
                            segment::file_name(want)
                        );
                        Arc::new(Segment::create(
                            &inner.dir,
                            want,
                            inner.seg_size,
                            inner.zero_fill,
                            inner.populate(),
                        )?)
                    }
                },
                Some((_, h)) => {
                    if let Ok(Ok(s)) = h.join() {
                        let _ = std::fs::remove_file(&s.path);
                    }
                    Arc::new(Segment::create(
                        &inner.dir,
                        want,
                        inner.seg_size,
                        inner.zero_fill,
                        inner.populate(),
                    )?)
                }
                None => Arc::new(Segment::create(
                    &inner.dir,
                    want,
                    inner.seg_size,
                    inner.zero_fill,
                    inner.populate(),
                )?),
            };
            self.ready.push_back(seg);
        }
        Ok(())
    }

    /// Starts allocating the segment after the last allocated one in the
    /// background (create, fallocate, map + prefault, fsync, rename, fsync dir), and
    /// offers it to the touch-ahead thread when it is ready.
    fn kick(&mut self, inner: &Inner) {
        if self.pending.is_some() || !self.ready.is_empty() {
            return;
        }
        let start = self.next_start();
        let dir = inner.dir.clone();
        let size = inner.seg_size;
        let zero_fill = inner.zero_fill;
        let populate = inner.populate();
        let offer = inner.touch.next_slot();
        match std::thread::Builder::new()
            .name("wal-prealloc".into())
            .spawn(move || {
                let seg = Arc::new(Segment::create(&dir, start, size, zero_fill, populate)?);
                offer.publish(&seg);
                Ok(seg)
            }) {
            Ok(h) => self.pending = Some((start, h)),
            Err(e) => warn!(
                error = %e,
                "cannot start the WAL segment preallocation thread; the next segment will be \
                 allocated on the append path"
            ),
        }
    }

    /// Moves the writer to the next allocated segment (which `obtain` provided).
    fn rollover(&mut self, inner: &Inner) -> Result<(), WalError> {
        let Some(next) = self.ready.pop_front() else {
            return Err(WalError::InvalidArgument(
                "internal error: rollover without an allocated segment".into(),
            ));
        };
        debug_assert_eq!(next.start, self.cur.end());
        inner.segments.write().insert(next.start, next.clone());
        self.cur.advise_sealed();
        self.pos = next.start;
        self.cur = next;
        Ok(())
    }

    /// Stops background allocation and deletes allocated-but-unused segments.
    fn drain(&mut self, inner: &Inner) {
        if let Some((_, h)) = self.pending.take() {
            if let Ok(Ok(s)) = h.join() {
                let _ = std::fs::remove_file(&s.path);
            }
        }
        inner.touch.withdraw_next();
        for s in self.ready.drain(..) {
            let _ = std::fs::remove_file(&s.path);
        }
    }

    /// Failpoint [`fp::APPEND_PUBLISH`]: the append's bytes are in the map but the
    /// write LSN is not published yet; Some(simulated crash) when it fires.
    fn crash_before_publish(&self) -> Option<WalError> {
        fp::torn(fp::APPEND_PUBLISH, &self.cur.path, 0)
            .map(|_| torn_error(fp::APPEND_PUBLISH, &self.cur.path, 0, 0))
    }

    /// Writes a PADDING record over the rest of `cur`.
    fn pad(&mut self, term: Term) -> Result<(), WalError> {
        let rem = self.cur.end() - self.pos;
        if rem == 0 {
            return Ok(());
        }
        let mut hdr = [0u8; HEADER_LEN];
        let len = rem as usize - HEADER_LEN;
        record::fill_header_zero_payload(&mut hdr, self.pos, term, kind::PADDING, len, None);
        let off = self.pos - self.cur.start;
        // SAFETY: writer mutex held; writing at/after write_lsn (unpublished bytes).
        unsafe {
            copy_or_tear(&self.cur, fp::APPEND_PADDING, off, &hdr)?;
            self.cur.zero(off + HEADER_LEN as u64, self.cur.size);
        }
        self.pos = self.cur.end();
        Ok(())
    }

    /// Writes one record at `pos`, padding and rolling over first if it does not fit
    /// (the segment must have been obtained).
    fn put(
        &mut self,
        inner: &Inner,
        term: Term,
        k: u8,
        payload: &[u8],
    ) -> Result<Appended, WalError> {
        let total = aligned_len(payload.len());
        if !fits(total, self.cur.end() - self.pos) {
            self.pad(term)?;
            self.rollover(inner)?;
        }
        let mut hdr = [0u8; HEADER_LEN];
        record::fill_header(&mut hdr, self.pos, term, k, payload);
        let off = self.pos - self.cur.start;
        // SAFETY: writer mutex held; writing at/after write_lsn (unpublished bytes),
        // inside the segment (checked by `fits`).
        unsafe {
            copy_or_tear(&self.cur, fp::APPEND_HEADER, off, &hdr)?;
            copy_or_tear(
                &self.cur,
                fp::APPEND_PAYLOAD,
                off + HEADER_LEN as u64,
                payload,
            )?;
            let end = off + HEADER_LEN as u64 + payload.len() as u64;
            if end < off + total {
                self.cur.zero(end, off + total);
            }
        }
        let lsn = self.pos;
        self.pos += total;
        Ok(Appended {
            lsn: Lsn(lsn),
            end: Lsn(self.pos),
        })
    }
}

impl Writer {
    /// Writes `records` (with their aligned sizes `totals`) from `pos` like repeated
    /// [`Writer::put`] calls would, byte for byte, but encodes each run of records
    /// that fits in the current segment into `scratch` and writes the run with one
    /// `pwrite` (see [`Segment::pwrite`]). Runs are capped at 1 MiB.
    fn put_bulk(
        &mut self,
        inner: &Inner,
        term: Term,
        records: &[(u8, &[u8])],
        totals: &[u64],
        out: &mut Vec<Appended>,
    ) -> Result<(), WalError> {
        const RUN_MAX: u64 = 1 << 20;
        let mut i = 0;
        while i < records.len() {
            if !fits(totals[i], self.cur.end() - self.pos) {
                self.pad(term)?;
                self.rollover(inner)?;
            }
            let start = self.pos;
            let mut end = start;
            let mut j = i;
            while j < records.len()
                && fits(totals[j], self.cur.end() - end)
                && (j == i || end - start + totals[j] <= RUN_MAX)
            {
                end += totals[j];
                j += 1;
            }
            let mut buf = std::mem::take(&mut self.scratch);
            buf.clear();
            let mut lsn = start;
            for (k, p) in &records[i..j] {
                let mut hdr = [0u8; HEADER_LEN];
                record::fill_header(&mut hdr, lsn, term, *k, p);
                buf.extend_from_slice(&hdr);
                buf.extend_from_slice(p);
                let next = lsn + aligned_len(p.len());
                buf.resize((next - start) as usize, 0);
                out.push(Appended {
                    lsn: Lsn(lsn),
                    end: Lsn(next),
                });
                lsn = next;
            }
            debug_assert_eq!(lsn, end);
            let off = start - self.cur.start;
            let res = match fp::torn(fp::APPEND_PAYLOAD, &self.cur.path, buf.len()) {
                Some(n) => {
                    // SAFETY: writer mutex held; writing at/after write_lsn
                    // (unpublished bytes), inside the segment (checked by `fits`).
                    unsafe { self.cur.pwrite(off, &buf[..n]) }.and(Err(torn_error(
                        fp::APPEND_PAYLOAD,
                        &self.cur.path,
                        n,
                        buf.len(),
                    )))
                }
                // SAFETY: as above.
                None => unsafe { self.cur.pwrite(off, &buf) },
            };
            if buf.capacity() <= 4 * RUN_MAX as usize {
                self.scratch = buf;
            }
            res?;
            self.pos = end;
            i = j;
        }
        Ok(())
    }
}

/// How many new segments writing records of these total sizes from `pos` needs.
fn segments_needed(pos: u64, cur_end: u64, size: u64, totals: impl Iterator<Item = u64>) -> usize {
    let (mut pos, mut end, mut n) = (pos, cur_end, 0);
    for t in totals {
        if !fits(t, end - pos) {
            pos = end;
            end += size;
            n += 1;
        }
        pos += t;
    }
    n
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir` and recovers it: every retained
    /// record is CRC-checked, a torn tail of the newest segment is cut (and logged),
    /// damage elsewhere is [`WalError::Corruption`] unless `opts.repair`. The term
    /// history is reconciled with the records. Holds an exclusive lock on the
    /// directory (file `LOCK`) while open.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, RecoveryReport), WalError> {
        let size = opts.segment_size;
        if !size.is_power_of_two() || !((1 << 20)..=(1 << 40)).contains(&size) {
            return Err(WalError::InvalidArgument(format!(
                "segment_size {size} must be a power of two between 1 MiB and 1 TiB"
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| WalError::io(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| WalError::io(&lock_path, e))?;
        // SAFETY: plain syscall on an fd we own.
        if unsafe { libc::flock(lock_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(WalError::InvalidArgument(format!(
                "WAL directory {} is in use by another Wal (lock file {} is held)",
                dir.display(),
                lock_path.display()
            )));
        }
        let max_record = record::max_record_len(size);
        let touch = TouchAhead::new(opts.touch_ahead);

        // List segment files; drop leftovers of interrupted creations.
        let mut found = Vec::new();
        let rd = std::fs::read_dir(dir).map_err(|e| WalError::io(dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| WalError::io(dir, e))?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                let p = ent.path();
                info!(file = %p.display(), "removing leftover temporary file of an interrupted WAL operation");
                std::fs::remove_file(&p).map_err(|e| WalError::io(&p, e))?;
            } else if let Some(start) = segment::parse_file_name(&name) {
                if start % size != 0 {
                    return Err(WalError::Corruption {
                        file: ent.path(),
                        offset: 0,
                        reason: format!(
                            "segment name is not a multiple of the segment size {size} \
                             (wrong segment_size option?)"
                        ),
                    });
                }
                found.push((start, ent.path()));
            }
        }
        found.sort();
        let start_file = read_start_file(dir)?;
        let persisted = history::load(dir)?;

        let rec = if found.is_empty() {
            let start = start_file.unwrap_or(0);
            if !possible_log_start(start, size) {
                return Err(recovery::bad_start_file(dir, start));
            }
            let seg = Segment::create(
                dir,
                seg_start(start, size),
                size,
                opts.zero_fill,
                !touch.populates(),
            )?;
            recovery::Recovered {
                segments: vec![Arc::new(seg)],
                log_start: start,
                write_lsn: start,
                records: 0,
                terms: Vec::new(),
                cut: None,
                repaired_at: None,
            }
        } else {
            recovery::recover(dir, size, max_record, opts.repair, found, start_file)?
        };

        let first_lsn = rec.log_start.max(rec.segments[0].start);
        // Reconcile the term history with the scanned records.
        let mut hist: Vec<TermSpan> = persisted
            .iter()
            .filter(|e| e.start.0 < first_lsn)
            .copied()
            .collect();
        for &(t, l) in &rec.terms {
            while hist.last().is_some_and(|e| e.term > t) {
                let dropped = hist.pop();
                warn!(
                    dropped = ?dropped,
                    record_term = t,
                    lsn = %Lsn(l),
                    "term history entry before the retained WAL has a higher term than the \
                     retained records; dropping it (the records are CRC-checked and win)"
                );
            }
            if hist.last().is_some_and(|e| e.term == t) {
                continue;
            }
            hist.push(TermSpan {
                term: t,
                start: Lsn(l),
            });
        }
        if hist != persisted {
            if !persisted.is_empty() || !hist.is_empty() {
                warn!(
                    was = ?persisted,
                    now = ?hist,
                    "term history file disagreed with the recovered WAL records (an interrupted \
                     append or truncation); rewriting it from the records"
                );
            }
            history::store(dir, &hist).map_err(|e| e.error)?;
        }
        let last_term = hist.last().map(|e| e.term).unwrap_or(0);

        let cur = rec.segments[rec.segments.len() - 1].clone();
        let segs: BTreeMap<u64, Arc<Segment>> =
            rec.segments.iter().map(|s| (s.start, s.clone())).collect();
        let report = RecoveryReport {
            first_lsn: Lsn(first_lsn),
            write_lsn: Lsn(rec.write_lsn),
            records: rec.records,
            segments: rec.segments.len(),
            cut_tail: rec.cut,
            repaired_at: rec.repaired_at,
            last_term,
        };
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            seg_size: size,
            max_record,
            zero_fill: opts.zero_fill,
            write_lsn: AtomicU64::new(rec.write_lsn),
            flush_lsn: AtomicU64::new(rec.write_lsn),
            first_lsn: AtomicU64::new(first_lsn),
            last_term: AtomicU64::new(last_term),
            fsyncs: AtomicU64::new(0),
            flush_parked: AtomicU32::new(0),
            last_group: AtomicU32::new(0),
            last_sync_ns: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            poison_cause: Mutex::new(String::new()),
            segments: RwLock::new(segs),
            generation: AtomicU64::new(0),
            writer: Mutex::new(Writer {
                cur,
                pos: rec.write_lsn,
                log_start: rec.log_start,
                ready: VecDeque::new(),
                pending: None,
                alloc_failures: 0,
                alloc_warned: None,
                scratch: Vec::new(),
            }),
            flush_gate: FlushGate::new(),
            retention: Mutex::new(()),
            history: Mutex::new(hist),
            populate: AtomicBool::new(!touch.populates()),
            touch,
            _lock_file: lock_file,
            #[cfg(test)]
            fail_next_fsync: AtomicBool::new(false),
            #[cfg(test)]
            test_waiting: AtomicU64::new(0),
            #[cfg(test)]
            test_hold_for: AtomicU64::new(0),
        });
        let toucher = toucher::spawn(&inner);
        if toucher.is_none() {
            inner.populate.store(true, Ordering::Relaxed);
        }
        inner.writer.lock().kick(&inner);
        info!(
            dir = %dir.display(),
            first_lsn = %report.first_lsn,
            write_lsn = %report.write_lsn,
            records = report.records,
            segments = report.segments,
            last_term,
            "WAL opened"
        );
        Ok((Wal { inner, toucher }, report))
    }

    /// Wakes the touch-ahead thread if pages ahead of the new write position wait.
    fn poke_toucher(&self, w: &Writer) {
        let inner = &*self.inner;
        inner
            .touch
            .poke(w.pos, inner.flush_lsn.load(Ordering::Relaxed), w.cur.end());
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(WalError::Poisoned {
                cause: self.inner.poison_cause.lock().clone(),
            });
        }
        Ok(())
    }

    fn poison(&self, cause: &WalError) {
        self.inner.poison(cause);
    }

    /// An append failed after it started writing bytes (only a torn-write failpoint,
    /// i.e. a simulated crash, or an internal error): the writer's state cannot be
    /// trusted any more, so the WAL is poisoned. Returns the error.
    fn crashed(&self, e: WalError) -> WalError {
        self.poison(&e);
        e
    }

    /// Why the WAL is poisoned (the first failure), or None while it is healthy.
    /// Once poisoned it stays so until the process reopens the directory: callers
    /// (the node) stop acknowledging and ask the operator for a restart.
    pub fn poison_cause(&self) -> Option<String> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            Some(self.inner.poison_cause.lock().clone())
        } else {
            None
        }
    }

    fn check_append(&self, k: u8, len: usize) -> Result<u64, WalError> {
        if !kind::is_valid(k) || k == kind::PADDING {
            return Err(WalError::InvalidArgument(format!(
                "record kind {k} cannot be appended (valid: {} TERM_START, >= {} application)",
                kind::TERM_START,
                kind::FIRST_APP
            )));
        }
        let total = aligned_len(len);
        if total > self.inner.max_record || len > u32::MAX as usize {
            return Err(WalError::InvalidArgument(format!(
                "record of {len} payload bytes exceeds the limit of {} bytes per record",
                self.inner.max_record - HEADER_LEN as u64
            )));
        }
        Ok(total)
    }

    /// Writes the term history file. A failure before the new file is in place
    /// changes nothing (e.g. `NoSpace` on a full disk: the append fails and can be
    /// retried); a failure after it (the directory fsync) poisons the WAL.
    fn store_history(&self, next: &[TermSpan]) -> Result<(), WalError> {
        history::store(&self.inner.dir, next).map_err(|e| {
            if e.renamed {
                self.poison(&e.error);
            }
            e.error
        })
    }

    /// Adds a term history entry (durably) if `term` is higher than the last term.
    /// Called with the writer mutex held, before any byte of that term is written.
    fn note_term(&self, term: Term, at: u64) -> Result<(), WalError> {
        let last = self.inner.last_term.load(Ordering::Relaxed);
        if term < last {
            return Err(WalError::InvalidArgument(format!(
                "term {term} is lower than the log's last term {last}: terms never decrease"
            )));
        }
        if term > last {
            let mut h = self.inner.history.lock();
            let mut next = h.clone();
            next.push(TermSpan {
                term,
                start: Lsn(at),
            });
            self.store_history(&next)?;
            *h = next;
        }
        Ok(())
    }

    /// Appends one record of `kind` (TERM_START or >= FIRST_APP) in `term` and returns
    /// its position. The record is visible to readers when this returns but durable
    /// only after [`Wal::flush`] covers `end`. Fails with `InvalidArgument` for a bad
    /// kind, a payload over the size limit or a term lower than the last one;
    /// `NoSpace` if a new segment cannot be allocated (nothing written then).
    pub fn append(&self, term: Term, kind: u8, payload: &[u8]) -> Result<Appended, WalError> {
        self.check_poisoned()?;
        let total = self.check_append(kind, payload.len())?;
        let inner = &*self.inner;
        let mut w = inner.writer.lock();
        let rolls = !fits(total, w.cur.end() - w.pos);
        if rolls {
            w.obtain(inner, 1)?;
        }
        if term != inner.last_term.load(Ordering::Relaxed) {
            self.note_term(term, w.pos)?;
        }
        let a = match w.put(inner, term, kind, payload) {
            Ok(a) => a,
            Err(e) => return Err(self.crashed(e)),
        };
        if let Some(e) = w.crash_before_publish() {
            return Err(self.crashed(e));
        }
        inner.last_term.store(term, Ordering::Relaxed);
        inner.write_lsn.store(w.pos, Ordering::Release);
        if rolls {
            w.kick(inner);
        }
        inner.touch.note_bulk(false);
        self.poke_toucher(&w);
        Ok(a)
    }

    /// Appends several records in `term` contiguously, all or nothing (every record
    /// is checked and every needed segment allocated before the first byte is
    /// written). Returns their positions in order.
    pub fn append_batch(
        &self,
        term: Term,
        records: &[(u8, &[u8])],
    ) -> Result<Vec<Appended>, WalError> {
        self.check_poisoned()?;
        let mut totals = Vec::with_capacity(records.len());
        for (k, p) in records {
            totals.push(self.check_append(*k, p.len())?);
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        let mut w = inner.writer.lock();
        let n = segments_needed(w.pos, w.cur.end(), inner.seg_size, totals.iter().copied());
        w.obtain(inner, n)?;
        if term != inner.last_term.load(Ordering::Relaxed) {
            self.note_term(term, w.pos)?;
        }
        let mut out = Vec::with_capacity(records.len());
        let bulk = totals.iter().sum::<u64>() >= PWRITE_MIN as u64;
        inner.touch.note_bulk(bulk);
        if bulk {
            if let Err(e) = w.put_bulk(inner, term, records, &totals, &mut out) {
                return Err(self.crashed(e));
            }
        } else {
            for (k, p) in records {
                match w.put(inner, term, *k, p) {
                    Ok(a) => out.push(a),
                    Err(e) => return Err(self.crashed(e)),
                }
            }
        }
        if let Some(e) = w.crash_before_publish() {
            return Err(self.crashed(e));
        }
        inner.last_term.store(term, Ordering::Relaxed);
        inner.write_lsn.store(w.pos, Ordering::Release);
        if n > 0 {
            w.kick(inner);
        }
        self.poke_toucher(&w);
        Ok(out)
    }

    /// Follower side: appends raw record bytes received from the leader at `lsn`,
    /// which must equal `write_lsn`. `bytes` must be whole records (PADDING included);
    /// every record is checked (CRC, header LSN equal to its position, kind, size
    /// limit, segment rule, non-decreasing term) before any byte is written; on any
    /// failure nothing is written. Returns the new write LSN. Term history entries are
    /// added for term increases.
    pub fn append_raw(&self, lsn: Lsn, bytes: &[u8]) -> Result<Lsn, WalError> {
        self.check_poisoned()?;
        let inner = &*self.inner;
        let size = inner.seg_size;
        let mut w = inner.writer.lock();
        if lsn.0 != w.pos {
            return Err(WalError::InvalidArgument(format!(
                "append_raw at {lsn} is not contiguous: the WAL ends at {}",
                Lsn(w.pos)
            )));
        }
        if bytes.is_empty() {
            return Ok(lsn);
        }
        // Validate everything first.
        let mut off = 0usize;
        let mut last_term = inner.last_term.load(Ordering::Relaxed);
        let mut new_terms = Vec::new();
        while off < bytes.len() {
            let p = lsn.0 + off as u64;
            let rem = seg_start(p, size) + size - p;
            let lim = bytes.len().min(off + rem as usize);
            let h = record::check(&bytes[off..lim], p, rem, inner.max_record).map_err(|e| {
                let why = match e {
                    record::Invalid::Zero => "all-zero header (not a record)".to_string(),
                    record::Invalid::Bad(s) => s,
                };
                WalError::InvalidArgument(format!(
                    "append_raw rejected record at {} (byte {off} of {}): {why}; nothing written",
                    Lsn(p),
                    bytes.len()
                ))
            })?;
            if h.term < last_term {
                return Err(WalError::InvalidArgument(format!(
                    "append_raw rejected record at {}: term {} is lower than the previous term {last_term}; nothing written",
                    Lsn(p),
                    h.term
                )));
            }
            if h.term > last_term {
                new_terms.push(TermSpan {
                    term: h.term,
                    start: Lsn(p),
                });
                last_term = h.term;
            }
            off += h.total() as usize;
        }
        let end = lsn.0 + bytes.len() as u64;
        let n = ((seg_start(end - 1, size) - w.cur.start) / size) as usize;
        w.obtain(inner, n)?;
        if !new_terms.is_empty() {
            let mut h = inner.history.lock();
            let mut next = h.clone();
            next.extend_from_slice(&new_terms);
            self.store_history(&next)?;
            *h = next;
        }
        inner.touch.note_bulk(bytes.len() >= PWRITE_MIN);
        let tear = fp::torn(fp::APPEND_RAW_COPY, &w.cur.path, bytes.len());
        let limit = tear.unwrap_or(bytes.len());
        let mut off = 0usize;
        while off < limit {
            if w.pos == w.cur.end() {
                if let Err(e) = w.rollover(inner) {
                    return Err(self.crashed(e));
                }
            }
            let chunk = (limit - off).min((w.cur.end() - w.pos) as usize);
            let at = w.pos - w.cur.start;
            if chunk >= PWRITE_MIN {
                // SAFETY: writer mutex held; writing above the published write_lsn,
                // inside the segment.
                if let Err(e) = unsafe { w.cur.pwrite(at, &bytes[off..off + chunk]) } {
                    return Err(self.crashed(e));
                }
            } else {
                // SAFETY: as above.
                unsafe { w.cur.write(at, &bytes[off..off + chunk]) };
            }
            w.pos += chunk as u64;
            off += chunk;
        }
        if let Some(n) = tear {
            let e = torn_error(fp::APPEND_RAW_COPY, &w.cur.path, n, bytes.len());
            return Err(self.crashed(e));
        }
        if let Some(e) = w.crash_before_publish() {
            return Err(self.crashed(e));
        }
        inner.last_term.store(last_term, Ordering::Relaxed);
        inner.write_lsn.store(w.pos, Ordering::Release);
        if n > 0 {
            w.kick(inner);
        }
        self.poke_toucher(&w);
        Ok(Lsn(w.pos))
    }

    /// Makes everything below at least `upto` durable (fdatasync of the segment
    /// files covering unflushed bytes) and returns the new flush LSN (>= `upto`).
    /// Group commit: concurrent callers share one fdatasync; the leader flushes up to
    /// the current write LSN, followers return as soon as their `upto` is covered.
    /// A failed fdatasync poisons the WAL (see [`WalError::Poisoned`]).
    /// `upto` beyond the write LSN is `InvalidArgument`.
    pub fn flush(&self, upto: Lsn) -> Result<Lsn, WalError> {
        self.check_poisoned()?;
        let inner = &*self.inner;
        let f = inner.flush_lsn.load(Ordering::Acquire);
        if f >= upto.0 {
            return Ok(Lsn(f));
        }
        if upto.0 > inner.write_lsn.load(Ordering::Acquire) {
            return Err(WalError::InvalidArgument(format!(
                "cannot flush up to {upto}: the WAL ends at {}",
                self.write_lsn()
            )));
        }
        let _leader = loop {
            let seen = inner.flush_gate.epoch();
            self.check_poisoned()?;
            let f = inner.flush_lsn.load(Ordering::Acquire);
            if f >= upto.0 {
                return Ok(Lsn(f));
            }
            if let Some(l) = inner.flush_gate.try_lead() {
                break l;
            }
            #[cfg(test)]
            inner.test_waiting.fetch_add(1, Ordering::SeqCst);
            inner.flush_parked.fetch_add(1, Ordering::AcqRel);
            inner.flush_gate.wait(seen);
            inner.flush_parked.fetch_sub(1, Ordering::AcqRel);
            #[cfg(test)]
            inner.test_waiting.fetch_sub(1, Ordering::SeqCst);
        };
        // Whatever happens below, the next leader learns how many callers this
        // round releases (set before `_leader` drops and wakes them).
        let _group = ReleaseGroup(inner);
        self.gather_group();
        #[cfg(test)]
        {
            let want = inner.test_hold_for.swap(0, Ordering::SeqCst);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while inner.test_waiting.load(Ordering::SeqCst) < want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "followers never arrived"
                );
                std::thread::yield_now();
            }
        }
        // Leader: re-check, then flush everything written so far.
        self.check_poisoned()?;
        let f = inner.flush_lsn.load(Ordering::Acquire);
        if f >= upto.0 {
            return Ok(Lsn(f));
        }
        let target = inner.write_lsn.load(Ordering::Acquire);
        if target < upto.0 {
            // The log was truncated below `upto` while this caller waited.
            return Err(WalError::InvalidArgument(format!(
                "cannot flush up to {upto}: the WAL was truncated to {}",
                Lsn(target)
            )));
        }
        let segs: Vec<Arc<Segment>> = {
            let m = inner.segments.read();
            m.range(seg_start(f, inner.seg_size)..target)
                .map(|(_, s)| s.clone())
                .collect()
        };
        let sync_started = std::time::Instant::now();
        for s in &segs {
            #[cfg(test)]
            if inner.fail_next_fsync.swap(false, Ordering::SeqCst) {
                let e = WalError::io(&s.path, std::io::Error::from_raw_os_error(libc::EIO));
                self.poison(&e);
                return Err(e);
            }
            inner.fsyncs.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = s.sync_data() {
                self.poison(&e);
                return Err(e);
            }
        }
        inner.last_sync_ns.store(
            u64::try_from(sync_started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        inner.flush_lsn.store(target, Ordering::Release);
        Ok(Lsn(target))
    }

    /// Group commit's gather step (PostgreSQL's `commit_delay`, made adaptive).
    ///
    /// When the previous fdatasync released a group of `g >= 2` parked callers, they
    /// are about to append again; the new leader, woken first, would otherwise flush
    /// only its own record and leave the rest of the group to a second fdatasync.
    /// So it yields the CPU until `g - 1` callers are parked behind it again, for at
    /// most the duration of the last fdatasync (capped at 500 µs). A lone flusher
    /// (`g <= 1`, e.g. the node's flusher thread) never waits. Only latency moves:
    /// what is flushed and when a caller returns stay as `flush` documents.
    fn gather_group(&self) {
        let inner = &*self.inner;
        let group = inner.last_group.load(Ordering::Acquire);
        if group < 2 {
            return;
        }
        let budget_ns = inner.last_sync_ns.load(Ordering::Relaxed).min(500_000);
        let deadline = std::time::Instant::now() + std::time::Duration::from_nanos(budget_ns);
        while inner.flush_parked.load(Ordering::Acquire) + 1 < group
            && std::time::Instant::now() < deadline
        {
            std::thread::yield_now();
        }
    }

    /// Makes sure the segment after the writer's is allocated: waits for the
    /// background preparation, or prepares it now. Appends never need this (they
    /// do it when they reach the segment end); it moves the allocation off the
    /// append path, surfaces a full disk early (`NoSpace`, nothing changed), and
    /// leaves no preparation running in the background until the next rollover.
    pub fn prepare_next_segment(&self) -> Result<(), WalError> {
        self.check_poisoned()?;
        self.inner.writer.lock().obtain(&self.inner, 1)
    }

    /// End of the last appended record (= LSN of the next one).
    pub fn write_lsn(&self) -> Lsn {
        Lsn(self.inner.write_lsn.load(Ordering::Acquire))
    }

    /// Everything below this LSN is on stable storage.
    pub fn flush_lsn(&self) -> Lsn {
        Lsn(self.inner.flush_lsn.load(Ordering::Acquire))
    }

    /// LSN of the oldest retained record (equal to `write_lsn` for an empty log).
    pub fn first_lsn(&self) -> Lsn {
        Lsn(self.inner.first_lsn.load(Ordering::Acquire))
    }

    /// Term of the last record, or of the last term history entry (0 if none).
    pub fn last_term(&self) -> Term {
        self.inner.last_term.load(Ordering::Relaxed)
    }

    /// Number of segment fdatasync calls made by [`Wal::flush`] since open. With
    /// group commit this grows slower than the number of flush calls (a metric).
    pub fn fdatasync_count(&self) -> u64 {
        self.inner.fsyncs.load(Ordering::Relaxed)
    }

    /// Segment size in bytes.
    pub fn segment_size(&self) -> u64 {
        self.inner.seg_size
    }

    /// Largest payload one record may carry.
    pub fn max_payload(&self) -> usize {
        (self.inner.max_record - HEADER_LEN as u64) as usize
    }

    /// A handle that tells when this WAL's directory lock is released: when the
    /// last [`Wal`] clone *and* the last [`WalReader`](crate::WalReader) are gone and
    /// the background threads have ended. Only then can the directory be opened
    /// again in the same process (a restart of an embedded node).
    pub fn lock_watch(&self) -> WalLockWatch {
        WalLockWatch(Arc::downgrade(&self.inner))
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// A reader positioned at `from`, which must be a record boundary in
    /// `[first_lsn, write_lsn]`. It yields records up to the write LSN current at each
    /// call, skipping PADDING unless `with_padding(true)`, and stays valid when
    /// segments are removed (it then reports `NotRetained` when it needs one).
    pub fn reader(&self, from: Lsn) -> Result<WalReader, WalError> {
        WalReader::new(self.inner.clone(), from.0)
    }

    /// Appends to `out` the raw bytes of whole records starting at `from` (a record
    /// boundary): at least one record if any exists beyond `from` (even if larger than
    /// `max_bytes`), then more while the total stays <= `max_bytes`; never past the
    /// write LSN and never across a segment end. Returns the end LSN of what was
    /// copied (`from` if nothing).
    pub fn read_raw(
        &self,
        from: Lsn,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<Lsn, WalError> {
        crate::reader::read_raw(&self.inner, from.0, max_bytes, out).map(Lsn)
    }

    /// [`Wal::read_raw`] without a copy: the same bytes as a zero-copy share of the
    /// segment mapping (valid and unchanged for as long as it is held; see
    /// [`crate::SharedPayload`]), with their end LSN (`from` and no bytes if
    /// nothing is there).
    pub fn read_shared(
        &self,
        from: Lsn,
        max_bytes: usize,
    ) -> Result<(Lsn, bytes::Bytes), WalError> {
        crate::reader::read_shared(&self.inner, from.0, max_bytes).map(|(e, b)| (Lsn(e), b))
    }

    /// Drops the records in `[lsn, write_lsn)`: `lsn` must be a record boundary in
    /// `[first_lsn, write_lsn]`. Later segments are deleted, and the segment holding
    /// `lsn` is replaced by a fresh file holding only its bytes before `lsn` (written
    /// and fsynced before it is renamed over the old one; then the directory is
    /// fsynced), so recovery cannot resurrect the removed records; term history
    /// entries at or after `lsn` are dropped. Nothing already published is modified
    /// in place: a [`crate::SharedPayload`] or `RecordRef` from before the cut keeps
    /// its bytes, and readers notice the replacement (see `Inner::generation`).
    /// Costs a copy of the kept part of the cut segment (at most one segment), and
    /// needs one segment of free disk space: the replacement is prepared before
    /// anything changes, so a failure there (`NoSpace`, an I/O error) is returned
    /// with the log unchanged and the WAL usable (retry later); a failure after it
    /// poisons the WAL, as for every change of the log's files.
    pub fn truncate_after(&self, lsn: Lsn) -> Result<TruncateReport, WalError> {
        self.check_poisoned()?;
        let inner = &*self.inner;
        let size = inner.seg_size;
        let _r = inner.retention.lock();
        let _f = inner.flush_gate.lead();
        let mut w = inner.writer.lock();
        let old = w.pos;
        let first = inner.first_lsn.load(Ordering::Acquire);
        if lsn.0 > old {
            return Err(WalError::InvalidArgument(format!(
                "cannot truncate at {lsn}: the WAL ends at {}",
                Lsn(old)
            )));
        }
        if lsn.0 < first {
            return Err(WalError::NotRetained {
                requested: lsn,
                first: Lsn(first),
            });
        }
        if lsn.0 == old {
            return Ok(TruncateReport {
                from: lsn,
                to: lsn,
                records: 0,
                segments_removed: 0,
            });
        }
        // Check that lsn is a record boundary and count what goes.
        let segs: Vec<Arc<Segment>> = inner
            .segments
            .read()
            .range(seg_start(lsn.0, size)..)
            .map(|(_, s)| s.clone())
            .collect();
        let target = match segs.first() {
            Some(s) if s.start == seg_start(lsn.0, size) => s.clone(),
            _ => return Err(WalError::InvalidArgument(format!("no segment holds {lsn}"))),
        };
        let walk_from = if target.start < w.log_start {
            w.log_start
        } else {
            target.start
        };
        let mut p = walk_from;
        let mut records = 0u64;
        let mut at_boundary = p == lsn.0;
        for s in &segs {
            if p < s.start {
                p = s.start;
            }
            // SAFETY: bytes below write_lsn, writer mutex held (no concurrent writes).
            let bytes = unsafe { s.bytes() };
            while p < s.end() && p < old {
                if p == lsn.0 {
                    at_boundary = true;
                }
                let Some((l, total, k, _)) = record::peek(&bytes[(p - s.start) as usize..]) else {
                    break;
                };
                if l != p || total == 0 {
                    break;
                }
                if p >= lsn.0 && k != kind::PADDING {
                    records += 1;
                }
                p += total;
            }
            if p >= old {
                break;
            }
        }
        if !at_boundary {
            return Err(WalError::InvalidArgument(format!(
                "cannot truncate at {lsn}: not a record boundary"
            )));
        }
        // The cut segment is replaced, not rewritten: its kept prefix goes into a
        // fresh file, prepared here before anything changes (a failure, e.g. a full
        // disk, leaves the log as it was and is returned as is: the caller may retry)
        // and renamed over the old one below. So every byte ever published in the
        // old mapping stays as it was for whoever still maps it (shared payloads,
        // readers), and the cut tail is gone from the file system once the rename is
        // durable.
        let keep = (lsn.0 - target.start) as usize;
        // SAFETY: bytes below the cut are below the published write_lsn and never
        // modified; the writer mutex is held.
        let prefix = unsafe { &target.bytes()[..keep] };
        let replacement =
            segment::Prepared::new(&inner.dir, target.start, size, inner.zero_fill, prefix)?;
        // From here on the files change; a failure poisons the WAL.
        let res = (|| -> Result<(usize, Arc<Segment>), WalError> {
            w.drain(inner);
            inner.write_lsn.store(lsn.0, Ordering::Release);
            let mut removed = 0;
            {
                let mut m = inner.segments.write();
                let later: Vec<u64> = m.range(target.start + 1..).map(|(k, _)| *k).collect();
                for k in later.into_iter().rev() {
                    if let Some(s) = m.remove(&k) {
                        unlink(&s.path, fp::TRUNCATE_UNLINK)?;
                        removed += 1;
                    }
                }
            }
            segment::sync_dir(&inner.dir)?;
            let fresh = Arc::new(replacement.install()?);
            // A failed directory fsync after the rename poisons (the kept prefix
            // is in the new file either way; never removed).
            segment::sync_dir(&inner.dir)?;
            inner.segments.write().insert(fresh.start, fresh.clone());
            inner.generation.fetch_add(1, Ordering::Release);
            fresh.advise_append(lsn.0 - fresh.start);
            fresh.prefault_read(lsn.0 - fresh.start);
            Ok((removed, fresh))
        })();
        let (removed, target) = match res {
            Ok(r) => r,
            Err(e) => {
                self.poison(&e);
                return Err(e);
            }
        };
        w.cur = target;
        w.pos = lsn.0;
        inner.touch.rewind();
        if inner.flush_lsn.load(Ordering::Acquire) > lsn.0 {
            inner.flush_lsn.store(lsn.0, Ordering::Release);
        }
        {
            let mut h = inner.history.lock();
            let next: Vec<TermSpan> = h.iter().filter(|e| e.start < lsn).copied().collect();
            if next != *h {
                // The log is already cut: a failure here poisons the WAL (the next
                // open reconciles the history file with the records).
                if let Err(e) = history::store(&inner.dir, &next) {
                    self.poison(&e.error);
                    return Err(e.error);
                }
                *h = next;
            }
            inner
                .last_term
                .store(h.last().map(|e| e.term).unwrap_or(0), Ordering::Relaxed);
        }
        w.kick(inner);
        warn!(
            from = %lsn,
            to = %Lsn(old),
            records,
            segments_removed = removed,
            "WAL truncated: records in [{lsn}, {}) removed durably; the log continues at {lsn}",
            Lsn(old)
        );
        Ok(TruncateReport {
            from: lsn,
            to: Lsn(old),
            records,
            segments_removed: removed,
        })
    }

    /// Deletes whole segments that lie entirely below `lsn` *and* below the flush
    /// LSN; never the segment the writer is in. Fsyncs the directory (a failed
    /// directory fsync poisons the WAL). Returns how
    /// many segment files were removed. Readers holding a removed segment keep their
    /// mapping; new reads below the new `first_lsn` get `NotRetained`.
    ///
    /// Appends are not blocked by the file deletions: the writer mutex is held only
    /// to pick the victims; the files are deleted and the directory fsynced after it
    /// is released, under the retention mutex (which `truncate_after` and `reset`
    /// take first).
    pub fn remove_before(&self, lsn: Lsn) -> Result<usize, WalError> {
        self.check_poisoned()?;
        let inner = &*self.inner;
        let _r = inner.retention.lock();
        // The writer mutex only to pick the victims: they lie wholly below the
        // writer's segment, and nothing else that moves the log start or the
        // writer backwards (truncate_after, reset) runs while `retention` is held.
        let (victims, log_start) = {
            let w = inner.writer.lock();
            let limit = lsn.0.min(inner.flush_lsn.load(Ordering::Acquire));
            let victims: Vec<Arc<Segment>> = inner
                .segments
                .read()
                .values()
                .filter(|s| s.end() <= limit && s.start < w.cur.start)
                .cloned()
                .collect();
            (victims, w.log_start)
        };
        if victims.is_empty() {
            return Ok(0);
        }
        // Oldest first, each one out of the map (and first_lsn past it) before its
        // file goes, so no new reader starts in it. If an unlink fails, the ones
        // before it stay removed and the rest stay retained; a file whose unlink
        // failed is no longer in the map (it is only older WAL, found again by
        // recovery at the next open and removed later).
        let mut n = 0;
        let mut failed = None;
        for s in &victims {
            let new_first = s.end().max(log_start);
            inner.first_lsn.store(new_first, Ordering::Release);
            inner.segments.write().remove(&s.start);
            if let Err(e) = unlink(&s.path, fp::REMOVE_UNLINK) {
                warn!(
                    file = %s.path.display(),
                    error = %e,
                    "cannot remove an old WAL segment; keeping the remaining old segments, \
                     retention tries again later (recovery finds this file again at the next start)"
                );
                failed = Some(e);
                break;
            }
            n += 1;
        }
        if let Err(e) = segment::sync_dir(&inner.dir) {
            self.poison(&e);
            return Err(e);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let new_first = inner.first_lsn.load(Ordering::Acquire);
        info!(
            segments = n,
            first_lsn = %Lsn(new_first),
            "removed old WAL segments; oldest retained LSN is now {}",
            Lsn(new_first)
        );
        Ok(n)
    }

    /// The term history: ascending `(term, start)` entries, durable in the file
    /// `term_history`, maintained on append/append_raw/truncate and reconciled with
    /// the records on open.
    pub fn term_history(&self) -> Vec<TermSpan> {
        self.inner.history.lock().clone()
    }

    /// Term of the record at `lsn` (any LSN inside the log, including removed
    /// segments still described by the history); None at or beyond `write_lsn` or
    /// before the first history entry.
    pub fn term_at(&self, lsn: Lsn) -> Option<Term> {
        if lsn >= self.write_lsn() {
            return None;
        }
        history::term_at(&self.inner.history.lock(), lsn)
    }

    /// Replaces the whole log with an empty one starting at `start` (a record
    /// boundary of the leader's log, e.g. a checkpoint LSN) and an empty term history.
    /// See [`Wal::reset_with_history`].
    pub fn reset(&self, start: Lsn) -> Result<(), WalError> {
        self.reset_with_history(start, &[])
    }

    /// Replaces the whole log with an empty one starting at `start`, whose term
    /// history is the entries of `history` that start before `start` (so
    /// `last_term()` is the term of the record before `start`). Every segment is
    /// deleted, the start LSN recorded durably (file `wal_start`), a fresh segment
    /// created. Used to rebuild a follower from a checkpoint. Callers must not hold
    /// `RecordRef`s.
    pub fn reset_with_history(&self, start: Lsn, history: &[TermSpan]) -> Result<(), WalError> {
        self.check_poisoned()?;
        let inner = &*self.inner;
        let size = inner.seg_size;
        check_log_start(start.0, size)?;
        let hist: Vec<TermSpan> = history
            .iter()
            .filter(|e| e.start < start)
            .copied()
            .collect();
        history::validate(&hist).map_err(WalError::InvalidArgument)?;
        let _r = inner.retention.lock();
        let _f = inner.flush_gate.lead();
        let mut w = inner.writer.lock();
        let res = (|| -> Result<Arc<Segment>, WalError> {
            w.drain(inner);
            inner.write_lsn.store(start.0, Ordering::Release);
            inner.first_lsn.store(start.0, Ordering::Release);
            {
                let mut m = inner.segments.write();
                let all: Vec<u64> = m.keys().copied().collect();
                for k in all {
                    if let Some(s) = m.remove(&k) {
                        unlink(&s.path, fp::TRUNCATE_UNLINK)?;
                    }
                }
            }
            segment::sync_dir(&inner.dir)?;
            write_atomically(&inner.dir, START_FILE, format!("{start}\n").as_bytes())?;
            history::store(&inner.dir, &hist).map_err(|e| e.error)?;
            let seg = Arc::new(Segment::create(
                &inner.dir,
                seg_start(start.0, size),
                size,
                inner.zero_fill,
                inner.populate(),
            )?);
            inner.segments.write().insert(seg.start, seg.clone());
            inner.generation.fetch_add(1, Ordering::Release);
            Ok(seg)
        })();
        let seg = match res {
            Ok(s) => s,
            Err(e) => {
                self.poison(&e);
                return Err(e);
            }
        };
        w.cur = seg;
        w.pos = start.0;
        w.log_start = start.0;
        inner.touch.rewind();
        inner.flush_lsn.store(start.0, Ordering::Release);
        inner
            .last_term
            .store(hist.last().map(|e| e.term).unwrap_or(0), Ordering::Relaxed);
        *inner.history.lock() = hist;
        w.kick(inner);
        warn!(start = %start, dir = %inner.dir.display(), "WAL reset: all records removed; the log now starts empty at {start}");
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn hold_next_leader_for(&self, followers: u64) {
        self.inner.test_hold_for.store(followers, Ordering::SeqCst);
    }

    #[cfg(test)]
    pub(crate) fn inject_fsync_failure(&self) {
        self.inner.fail_next_fsync.store(true, Ordering::SeqCst);
    }
}

/// See [`Wal::lock_watch`].
#[derive(Clone, Debug)]
pub struct WalLockWatch(std::sync::Weak<Inner>);

impl WalLockWatch {
    /// Whether the directory lock (file `LOCK`) is still held by this process.
    pub fn is_held(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Stop the toucher first: it holds an Arc<Inner> (and with it the LOCK file).
        self.inner.touch.stop();
        if let Some(h) = self.toucher.take() {
            let _ = h.join();
        }
        // Wait for a background allocation so a reopen never races with it.
        let pending = self.inner.writer.lock().pending.take();
        if let Some((_, h)) = pending {
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.inner.dir)
            .field("first_lsn", &self.first_lsn())
            .field("write_lsn", &self.write_lsn())
            .field("flush_lsn", &self.flush_lsn())
            .finish()
    }
}
