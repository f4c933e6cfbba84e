//! One segment file: fixed size, fully allocated, memory-mapped.
//!
//! Safety argument for the raw mapping (used by `wal.rs` and `reader.rs`):
//! * The file is fully allocated with `fallocate` before it is mapped, and it is
//!   never shrunk while mapped (segments are only deleted, which keeps the inode
//!   and the mapping alive), so every access inside `[0, size)` is backed by disk
//!   blocks: no SIGBUS on a full disk.
//! * Only the writer (holding the WAL's writer mutex) writes, and only at or above
//!   `write_lsn`; it publishes new bytes by storing `write_lsn` with Release
//!   ordering after the copy. Readers load `write_lsn` with Acquire and only form
//!   `&[u8]` slices below it, so they never observe bytes being written.
//! * Bytes below `write_lsn` are never modified, by anyone, for as long as the
//!   mapping lives. `truncate_after` does not rewrite the tail of the segment it
//!   cuts: it writes the kept prefix into a fresh file and renames it over the old
//!   one ([`Prepared::new`]), so the old mapping keeps the old bytes;
//!   `reset` only unlinks. This is what lets a [`crate::SharedPayload`] keep a
//!   slice of the mapping as a value for as long as it likes. (Recovery zeroes a
//!   torn tail in place, but it runs inside `Wal::open`, before anyone can read.)
//! * The mapping is owned by an `Arc<Segment>`: readers holding the Arc keep it
//!   mapped even after the segment is removed from the WAL.
//! * The touch-ahead thread (`toucher.rs`) also accesses the mapping, only beyond
//!   the page holding `write_lsn`, and never changes a byte: `MADV_POPULATE_WRITE`
//!   accesses no memory; its fallback is a value-preserving atomic RMW.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

use crate::failpoints as fp;
use crate::WalError;

/// File name of the segment starting at `start`: 16 uppercase hex digits + `.wal`.
pub(crate) fn file_name(start: u64) -> String {
    format!("{start:016X}.wal")
}

/// Parses a segment file name back into its start LSN.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub(crate) struct Segment {
    pub start: u64,
    pub size: u64,
    pub path: PathBuf,
    file: File,
    map: MmapRaw,
    /// True while the writer appends to this segment (its mapping is then
    /// `MADV_RANDOM` outside the toucher's populate calls, see
    /// [`Segment::advise_append`]). Held while the advice changes, so a sealed
    /// segment never gets the appending advice back.
    appending: parking_lot::Mutex<bool>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("start", &self.start)
            .field("path", &self.path)
            .finish()
    }
}

fn map(file: &File, path: &Path, size: u64) -> Result<MmapRaw, WalError> {
    fp::io(fp::SEGMENT_MMAP, path).map_err(|e| WalError::io(path, e))?;
    let mut o = MmapOptions::new();
    o.len(size as usize);
    o.map_raw(file).map_err(|e| WalError::io(path, e))
}

/// `madvise(advice)` over a whole mapping; best effort (the advice changes
/// speed, never contents), so a refusal is only logged at debug level.
fn advise(map: &MmapRaw, path: &Path, advice: libc::c_int, what: &str) {
    // SAFETY: the range is exactly the mapping; MADV_RANDOM / MADV_NORMAL only
    // change the kernel's readahead policy for it.
    let r = unsafe { libc::madvise(map.as_mut_ptr().cast(), map.len(), advice) };
    if r != 0 {
        tracing::debug!(file = %path.display(), error = %std::io::Error::last_os_error(),
            "madvise({what}) refused; the segment works the same, only page-cache sizing differs");
    }
}

/// fsyncs a directory so that creations/removals/renames in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    let d = File::open(dir).map_err(|e| WalError::io(dir, e))?;
    fp::io(fp::DIR_FSYNC, dir).map_err(|e| WalError::io(dir, e))?;
    d.sync_all().map_err(|e| WalError::io(dir, e))
}

/// How [`replace_file`] failed.
#[derive(Debug)]
pub(crate) struct ReplaceError {
    /// The error.
    pub error: WalError,
    /// The rename was done: the new content is in place but may not be durable
    /// (the directory fsync failed). Before the rename nothing changed.
    pub renamed: bool,
}

/// Replaces `dir/name` with `content` atomically and durably: write a tmp file,
/// fsync it, rename it into place, fsync the directory. Failpoints: `fps` names the
/// write, fsync and rename steps (the directory fsync is [`fp::DIR_FSYNC`]). A full
/// disk while writing is `NoSpace`; a failure before the rename removes the tmp file
/// and leaves the old content in place.
pub(crate) fn replace_file(
    dir: &Path,
    name: &str,
    content: &[u8],
    fps: [&str; 3],
) -> Result<(), ReplaceError> {
    use std::io::Write;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let before = |error: WalError| ReplaceError {
        error,
        renamed: false,
    };
    let nospace_or_io = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => WalError::NoSpace { path: path.clone() },
        _ => WalError::io(&tmp, e),
    };
    let written = (|| -> Result<(), WalError> {
        fp::io(fps[0], &tmp).map_err(nospace_or_io)?;
        let mut f = File::create(&tmp).map_err(nospace_or_io)?;
        f.write_all(content).map_err(nospace_or_io)?;
        fp::io(fps[1], &tmp).map_err(|e| WalError::io(&tmp, e))?;
        f.sync_all().map_err(|e| WalError::io(&tmp, e))?;
        drop(f);
        fp::io(fps[2], &path).map_err(|e| WalError::io(&path, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| WalError::io(&path, e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(before(e));
    }
    sync_dir(dir).map_err(|error| ReplaceError {
        error,
        renamed: true,
    })
}

fn fallocate(file: &File, path: &Path, len: u64) -> Result<(), WalError> {
    let fd = file.as_raw_fd();
    let err = match fp::io(fp::SEGMENT_FALLOCATE, path) {
        Err(e) => e,
        Ok(()) => {
            // SAFETY: plain syscall on an fd we own.
            let r = unsafe { libc::fallocate(fd, 0, 0, len as libc::off_t) };
            if r == 0 {
                return Ok(());
            }
            std::io::Error::last_os_error()
        }
    };
    match err.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Err(WalError::NoSpace { path: path.into() }),
        Some(libc::EOPNOTSUPP) => {
            // SAFETY: plain syscall on an fd we own.
            let r = unsafe { libc::posix_fallocate(fd, 0, len as libc::off_t) };
            match r {
                0 => Ok(()),
                libc::ENOSPC | libc::EDQUOT => Err(WalError::NoSpace { path: path.into() }),
                e => Err(WalError::io(path, std::io::Error::from_raw_os_error(e))),
            }
        }
        _ => Err(WalError::io(path, err)),
    }
}

/// A segment file made under a temporary name, not yet renamed into place (see
/// [`Segment::create`], [`Prepared::new`]). Dropped without
/// [`Prepared::install`], it removes its temporary file.
pub(crate) struct Prepared {
    start: u64,
    size: u64,
    path: PathBuf,
    tmp: PathBuf,
    /// Taken by `install`.
    made: Option<(File, MmapRaw)>,
}

impl Prepared {
    /// Tmp file, fallocate the full size, optional zero fill, `prefix` at offset
    /// 0, fsync, map. On any failure the tmp file is removed. Also the first step of
    /// replacing the segment starting at `start` (`Wal::truncate_after`): nothing of
    /// the log changes until [`Prepared::install`]; a failure (`NoSpace` on a full
    /// disk) or dropping it removes the temporary file.
    pub fn new(
        dir: &Path,
        start: u64,
        size: u64,
        zero_fill: bool,
        prefix: &[u8],
    ) -> Result<Prepared, WalError> {
        debug_assert!(prefix.len() as u64 <= size);
        let path = dir.join(file_name(start));
        let tmp = dir.join(format!("{}.tmp", file_name(start)));
        let _ = std::fs::remove_file(&tmp);
        fp::io(fp::SEGMENT_CREATE, &tmp).map_err(|e| WalError::io(&tmp, e))?;
        let nospace_or_io = |e: std::io::Error| match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => WalError::NoSpace { path: path.clone() },
            _ => WalError::io(&tmp, e),
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(nospace_or_io)?;
        // Until the rename, a failure removes the tmp file (it may hold a whole
        // segment's worth of allocated blocks) and leaves nothing else behind.
        let made = (|file: File| -> Result<(File, MmapRaw), WalError> {
            use std::os::unix::fs::FileExt;
            fallocate(&file, &path, size)?;
            if zero_fill {
                fp::io(fp::SEGMENT_ZERO_FILL, &tmp).map_err(|e| WalError::io(&tmp, e))?;
                let zeros = vec![0u8; 1 << 20];
                let mut off = 0u64;
                while off < size {
                    let n = (size - off).min(zeros.len() as u64) as usize;
                    file.write_all_at(&zeros[..n], off)
                        .map_err(|e| WalError::io(&tmp, e))?;
                    off += n as u64;
                }
            }
            if !prefix.is_empty() {
                file.write_all_at(prefix, 0).map_err(nospace_or_io)?;
            }
            fp::io(fp::SEGMENT_FSYNC, &tmp).map_err(|e| WalError::io(&tmp, e))?;
            file.sync_all().map_err(|e| WalError::io(&tmp, e))?;
            let map = map(&file, &tmp, size)?;
            // Appended to from its start: no readahead (see `advise_append`).
            advise(&map, &tmp, libc::MADV_RANDOM, "MADV_RANDOM");
            Ok((file, map))
        })(file);
        match made {
            Ok(m) => Ok(Prepared {
                start,
                size,
                path,
                tmp,
                made: Some(m),
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Rename the file into place (replacing any file of that name: its inode, and
    /// any mapping of it, live on). The directory is not fsynced here: the caller
    /// does it, and decides what a failure of that means.
    pub fn install(mut self) -> Result<Segment, WalError> {
        let renamed = fp::io(fp::SEGMENT_RENAME, &self.path)
            .and_then(|()| std::fs::rename(&self.tmp, &self.path));
        if let Err(e) = renamed {
            // Drop removes the tmp file.
            return Err(WalError::io(&self.path, e));
        }
        let Some((file, map)) = self.made.take() else {
            return Err(WalError::InvalidArgument(
                "segment already installed".into(),
            ));
        };
        Ok(Segment {
            start: self.start,
            size: self.size,
            path: self.path.clone(),
            file,
            map,
            appending: parking_lot::Mutex::new(true),
        })
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if self.made.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Segment {
    /// Creates a new segment durably: tmp file, fallocate the full size, fsync,
    /// map (prefaulted), rename into place, fsync the directory. On a full disk
    /// `NoSpace` is returned; nothing is mapped before the allocation succeeded. On
    /// any failure the files it made are removed again (best effort: a leftover
    /// `.tmp` is removed by the next open, an empty trailing segment by recovery),
    /// so a failed creation changes nothing of the log and can simply be retried.
    ///
    /// With `zero_fill`, zeros are also written over the whole file and fdatasynced
    /// before mapping, so the extents are "written" (see `WalOptions::zero_fill`).
    /// With `populate`, every page is then read-faulted here, on the preparing
    /// thread. Without it (the WAL's touch-ahead thread is on and will fault them in
    /// writable, one fault instead of a read fault plus a write-protect fault per
    /// page) nothing is faulted here. The mapping is advised for appending first
    /// ([`Segment::advise_append`]).
    pub fn create(
        dir: &Path,
        start: u64,
        size: u64,
        zero_fill: bool,
        populate: bool,
    ) -> Result<Segment, WalError> {
        let p = Prepared::new(dir, start, size, zero_fill, &[])?;
        let seg = p.install()?;
        if populate {
            seg.prefault_read(0);
        }
        // The segment is in place but holds nothing yet: if its directory entry
        // cannot be made durable, it is not used (removed again) and nothing of the
        // log is affected; the next append that needs it tries again.
        if let Err(e) = sync_dir(dir) {
            let path = seg.path.clone();
            drop(seg);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(seg)
    }

    /// Opens and maps an existing segment file, checking its size.
    pub fn open(path: &Path, start: u64, size: u64) -> Result<Segment, WalError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| WalError::io(path, e))?;
        let len = file.metadata().map_err(|e| WalError::io(path, e))?.len();
        if len != size {
            return Err(WalError::Corruption {
                file: path.into(),
                offset: 0,
                reason: format!(
                    "segment file is {len} bytes, expected the configured segment size {size} \
                     (wrong segment_size option, or a damaged file)"
                ),
            });
        }
        let map = map(&file, path, size)?;
        Ok(Segment {
            start,
            size,
            path: path.into(),
            file,
            map,
            appending: parking_lot::Mutex::new(false),
        })
    }

    pub fn end(&self) -> u64 {
        self.start + self.size
    }

    /// The whole mapping as a slice.
    ///
    /// # Safety
    /// The caller must only read bytes that no one writes concurrently (below the
    /// published `write_lsn`, or while holding the writer mutex).
    pub unsafe fn bytes(&self) -> &[u8] {
        std::slice::from_raw_parts(self.map.as_ptr(), self.size as usize)
    }

    /// Copies `data` into the mapping at `off`.
    ///
    /// # Safety
    /// The caller holds the writer mutex and writes only above the published
    /// `write_lsn` (or has lowered it first), so no reader observes these bytes.
    pub unsafe fn write(&self, off: u64, data: &[u8]) {
        debug_assert!(off + data.len() as u64 <= self.size);
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            self.map.as_mut_ptr().add(off as usize),
            data.len(),
        );
    }

    /// Writes `data` at `off` through the file descriptor (`pwrite`) instead of
    /// the mapping. The page cache is shared, so readers of the mapping see the
    /// bytes exactly as after [`Segment::write`]. For bulk data it is cheaper: a
    /// page written whole by `pwrite` is never zero-filled and takes no page fault,
    /// while a store into an untouched page of the map first faults it in (the
    /// kernel zero-fills it, then `page_mkwrite` dirties it).
    ///
    /// # Safety
    /// Same as [`Segment::write`].
    pub unsafe fn pwrite(&self, off: u64, data: &[u8]) -> Result<(), WalError> {
        use std::os::unix::fs::FileExt;
        debug_assert!(off + data.len() as u64 <= self.size);
        self.file
            .write_all_at(data, off)
            .map_err(|e| WalError::io(&self.path, e))
    }

    /// Zeroes `[from, to)` of the mapping.
    ///
    /// # Safety
    /// Same as [`Segment::write`].
    pub unsafe fn zero(&self, from: u64, to: u64) {
        debug_assert!(from <= to && to <= self.size);
        std::ptr::write_bytes(
            self.map.as_mut_ptr().add(from as usize),
            0,
            (to - from) as usize,
        );
    }

    /// Zeroes `[from, size)`, using FALLOC_FL_ZERO_RANGE for whole pages so the
    /// blocks go back to "unwritten" (cheap, and no 64 MiB of dirty zero pages), and
    /// memset for the partial first page. Then fdatasync.
    ///
    /// # Safety
    /// Same as [`Segment::write`].
    pub unsafe fn zero_tail_durably(&self, from: u64) -> Result<(), WalError> {
        let page = 4096u64;
        let aligned = (from.div_ceil(page) * page).min(self.size);
        self.zero(from, aligned);
        if aligned < self.size {
            let r = libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                aligned as libc::off_t,
                (self.size - aligned) as libc::off_t,
            );
            if r != 0 {
                // Not supported here: fall back to writing zeros through the map.
                self.zero(aligned, self.size);
            }
        }
        self.sync_data()
    }

    /// fdatasync of the segment file.
    pub fn sync_data(&self) -> Result<(), WalError> {
        fp::io(fp::SEGMENT_FDATASYNC, &self.path).map_err(|e| WalError::io(&self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| WalError::io(&self.path, e))
    }

    /// `madvise(MADV_POPULATE_WRITE)` on `[off, off + len)`: faults the pages in
    /// writable (runs the file system's `page_mkwrite`, dirtying them) without
    /// accessing memory, so no byte changes. Used by the touch-ahead thread (see
    /// `toucher.rs` for why this is safe concurrently with appends, reads and
    /// truncation). `EINVAL` means the kernel lacks it (< 5.14).
    ///
    /// Readahead is allowed for the call (`MADV_NORMAL`, then `MADV_RANDOM` again
    /// while the segment is appended to): the toucher only runs when appends come
    /// in bulk between flushes (it never touches when flushes come every < 128 KiB),
    /// where large page-cache folios cost nothing and populate ~2.5x faster
    /// (measured: 256 MiB in 0.05 s vs 0.14 s); the small folios matter to the
    /// flush-per-append pattern, whose pages the appender faults itself.
    pub fn populate_write(&self, off: u64, len: u64) -> std::io::Result<()> {
        debug_assert!(off + len <= self.size);
        fp::io(fp::TOUCH_MADVISE, &self.path)?;
        let appending = *self.appending.lock();
        if appending {
            advise(&self.map, &self.path, libc::MADV_NORMAL, "MADV_NORMAL");
        }
        // SAFETY: the range lies inside our mapping (kept alive by &self); this
        // advice performs no memory access and changes no content.
        let r = unsafe {
            libc::madvise(
                self.map.as_mut_ptr().add(off as usize).cast(),
                len as usize,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if appending {
            let a = self.appending.lock();
            if *a {
                advise(&self.map, &self.path, libc::MADV_RANDOM, "MADV_RANDOM");
            }
        }
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Fallback of [`Segment::populate_write`]: an atomic `fetch_or(0)` on the first
    /// 8-byte word of every page in `[off, off + len)` (`off` page-aligned). The
    /// read-modify-write stores back what it read, atomically, so it never changes a
    /// byte and never loses a concurrent store to that word (see `toucher.rs`).
    pub fn touch_pages(&self, off: u64, len: u64, page: u64) {
        debug_assert!(off.is_multiple_of(page) && off + len <= self.size);
        let base = self.map.as_mut_ptr();
        let mut o = off;
        while o < off + len {
            // SAFETY: in bounds and page-aligned, hence 8-aligned, inside a mapping that
            // lives as long as &self. The appender (or a truncation) may store to the
            // same word with plain stores at the same time: the RMW is one indivisible
            // access on every target (x86 `lock or`, ARM LSE/LL-SC), so such a store
            // lands wholly before it (and is preserved) or after it (and wins), and
            // the value the RMW writes is the one it read. Only used on kernels
            // without MADV_POPULATE_WRITE.
            unsafe {
                let word = std::sync::atomic::AtomicU64::from_ptr(base.add(o as usize).cast());
                word.fetch_or(0, std::sync::atomic::Ordering::Relaxed);
            }
            o += page;
        }
    }

    /// Advises the kernel that this segment is being appended to: no readahead on
    /// its faults (`MADV_RANDOM`), so its page cache is built of single pages.
    ///
    /// Why (measured, benches/CLUSTER.md "The WAL's fsync slowed down ~35 MB into
    /// each segment"): faults on a shared file mapping go through readahead, whose
    /// folio order grows with each round; after ~35-40 MB of sequential faults the
    /// segment's page cache is made of large folios. The kernel tracks dirtiness per
    /// folio, so every later small append dirtied a whole large folio and every
    /// `fdatasync` wrote it back whole: ~700 KB per write request instead of one
    /// 4 KiB page, and flushes 3-8x slower. Records already appended stay in the page
    /// cache, so readers of this segment lose nothing; [`Segment::advise_sealed`]
    /// restores readahead once the writer has left it.
    ///
    /// Pages from `from` (rounded up to a page) to the end, which hold no record,
    /// are also dropped from this mapping and from the page cache if clean (recovery
    /// read them with readahead, so as large folios): the appends re-create them as
    /// single pages. Nothing is lost: they hold zeros on disk, and a dirty page is
    /// never dropped.
    pub fn advise_append(&self, from: u64) {
        {
            let mut a = self.appending.lock();
            *a = true;
            advise(&self.map, &self.path, libc::MADV_RANDOM, "MADV_RANDOM");
        }
        let start = from.div_ceil(4096) * 4096;
        if start >= self.size {
            return;
        }
        let len = (self.size - start) as usize;
        // SAFETY: `[start, size)` is inside the mapping and above every record
        // (the caller's contract: no record ends after `from`); MADV_DONTNEED on a
        // shared file mapping only unmaps the pages (their contents stay in the
        // page cache or on disk), and POSIX_FADV_DONTNEED drops clean, unmapped
        // page-cache pages only.
        let (m, f) = unsafe {
            (
                libc::madvise(
                    self.map.as_mut_ptr().add(start as usize).cast(),
                    len,
                    libc::MADV_DONTNEED,
                ),
                libc::posix_fadvise(
                    self.file.as_raw_fd(),
                    start as libc::off_t,
                    len as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                ),
            )
        };
        if m != 0 || f != 0 {
            tracing::debug!(file = %self.path.display(), madvise = m, fadvise = f,
                "could not drop the cached tail of the segment; appends there may dirty larger page-cache folios");
        }
    }

    /// Restores normal readahead on a segment the writer has left (for readers of
    /// it after its pages were evicted: catch-up, rebuild).
    pub fn advise_sealed(&self) {
        let mut a = self.appending.lock();
        *a = false;
        advise(&self.map, &self.path, libc::MADV_NORMAL, "MADV_NORMAL");
    }

    /// Touches every page in `[from, size)` with a read so later appends only take
    /// the write-notify fault (used for the segment that recovery hands to the writer).
    pub fn prefault_read(&self, from: u64) {
        let p = self.map.as_ptr();
        let mut off = from / 4096 * 4096;
        while off < self.size {
            // SAFETY: in bounds; a read of a byte (racing writes only change the
            // value we discard).
            unsafe { std::ptr::read_volatile(p.add(off as usize)) };
            off += 4096;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(file_name(0x4000000), "0000000004000000.wal");
        assert_eq!(parse_file_name("0000000004000000.wal"), Some(0x4000000));
        assert_eq!(parse_file_name("00000000040000AB.wal"), Some(0x40000AB));
        assert_eq!(parse_file_name("0000000004000000.wal.tmp"), None);
        assert_eq!(parse_file_name("term_history"), None);
        assert_eq!(parse_file_name("4000000.wal"), None);
    }

    #[test]
    fn touching_pages_changes_no_byte() {
        let d = tempfile::tempdir().unwrap();
        let s = Segment::create(d.path(), 0, 1 << 20, false, false).unwrap();
        let pattern: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 + 3) as u8).collect();
        unsafe {
            s.write(0, &pattern[..1 << 19]);
            s.touch_pages(0, 1 << 20, 4096);
            s.populate_write(0, 1 << 20).unwrap();
            assert_eq!(&s.bytes()[..1 << 19], &pattern[..1 << 19]);
            assert!(s.bytes()[1 << 19..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn create_allocates_and_maps() {
        let d = tempfile::tempdir().unwrap();
        let s = Segment::create(d.path(), 1 << 20, 1 << 20, false, true).unwrap();
        assert_eq!(s.path, d.path().join("0000000000100000.wal"));
        let md = std::fs::metadata(&s.path).unwrap();
        assert_eq!(md.len(), 1 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(md.blocks() * 512 >= 1 << 20, "fully allocated");
        unsafe {
            s.write(100, b"abc");
            assert_eq!(&s.bytes()[100..103], b"abc");
            s.zero_tail_durably(101).unwrap();
            assert_eq!(&s.bytes()[100..103], b"a\0\0");
        }
        assert!(!d.path().join("0000000000100000.wal.tmp").exists());
    }

    /// The `VmFlags` line of this process's mapping of `path` (from /proc/self/smaps).
    fn vm_flags(path: &Path) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let name = path.to_str().unwrap();
        let mut lines = smaps.lines();
        while let Some(l) = lines.next() {
            if l.ends_with(name) {
                for l in lines.by_ref() {
                    if let Some(f) = l.strip_prefix("VmFlags:") {
                        return f.to_string();
                    }
                }
            }
        }
        panic!("no mapping of {name} in /proc/self/smaps");
    }

    #[test]
    fn a_segment_being_appended_to_has_no_readahead_and_gets_it_back_when_sealed() {
        let d = tempfile::tempdir().unwrap();
        let s = Segment::create(d.path(), 0, 1 << 20, false, false).unwrap();
        // "rr": MADV_RANDOM (VM_RAND_READ), so faults build single-page folios.
        assert!(vm_flags(&s.path).split_whitespace().any(|f| f == "rr"));
        unsafe { s.write(0, b"record") };
        // The toucher's populate runs with readahead and restores the advice.
        s.populate_write(1 << 16, 1 << 16).unwrap();
        assert!(vm_flags(&s.path).split_whitespace().any(|f| f == "rr"));
        s.advise_sealed();
        s.populate_write(1 << 17, 1 << 16).unwrap();
        assert!(!vm_flags(&s.path).split_whitespace().any(|f| f == "rr"));
        // An existing segment handed back to the writer (recovery, truncation):
        // random again, and the bytes below `from` are untouched.
        s.advise_append(6);
        assert!(vm_flags(&s.path).split_whitespace().any(|f| f == "rr"));
        unsafe { assert_eq!(&s.bytes()[..6], b"record") };
        // With populate the pages are faulted in, under the same advice.
        let p = Segment::create(d.path(), 1 << 20, 1 << 20, false, true).unwrap();
        assert!(vm_flags(&p.path).split_whitespace().any(|f| f == "rr"));
    }
}
