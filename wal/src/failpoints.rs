//! Failpoints at every step of the WAL's file layer (cargo feature `failpoints`,
//! off by default).
//!
//! With the feature on, each step below evaluates a named failpoint of the
//! [`fail`](https://docs.rs/fail) crate right before its system call; a test
//! configures it with `fail::cfg(NAME, ACTIONS)` (inside a `fail::FailScenario`).
//! Without the feature the hooks are inlined no-ops: release binaries carry no
//! failpoint and pay nothing.
//!
//! Two kinds of failpoint:
//!
//! * **I/O** (`return(ERRNO)`): the step fails with that OS error instead of making
//!   its call, and the real error handling runs (an `ENOSPC` from `fallocate` is a
//!   [`WalError::NoSpace`](crate::WalError::NoSpace), a failed fdatasync poisons the
//!   WAL, ...). ERRNO is a name (`EIO`, `ENOSPC`, `EDQUOT`, `EROFS`, `ENOMEM`,
//!   `EINVAL`) or a number; `return` alone means `EIO`.
//! * **Torn write** (`return(N)`): the copy into the map stops after N bytes (0 if
//!   omitted) and the append "crashes": it returns an error and the WAL is poisoned
//!   (as dead as a crashed process; drop it and reopen to run recovery over the
//!   bytes that reached the page cache, which a process crash keeps).
//!
//! Other actions of the `fail` crate (`panic`, `sleep(ms)`, `pause`, `N*`, `P%`)
//! work too.
//!
//! Failpoints are process-wide. [`scope`] restricts them to files under one
//! directory (e.g. one node's data directory when a test runs several nodes in one
//! process); with no scope they apply to every WAL of the process.

use std::path::Path;

/// `fallocate` of a new segment (I/O; `ENOSPC`/`EDQUOT` give `NoSpace`).
pub const SEGMENT_FALLOCATE: &str = "wal::segment::fallocate";
/// Creating the temporary file of a new segment (I/O).
pub const SEGMENT_CREATE: &str = "wal::segment::create";
/// Writing zeros over a new segment with `zero_fill` (I/O).
pub const SEGMENT_ZERO_FILL: &str = "wal::segment::zero_fill";
/// `fsync` of a new segment's file before it is mapped (I/O).
pub const SEGMENT_FSYNC: &str = "wal::segment::fsync";
/// `mmap` of a segment (new or at open) (I/O).
pub const SEGMENT_MMAP: &str = "wal::segment::mmap";
/// Renaming a new segment into place (I/O).
pub const SEGMENT_RENAME: &str = "wal::segment::rename";
/// `fdatasync` of a segment: every flush, and durable truncation (I/O; poisons).
pub const SEGMENT_FDATASYNC: &str = "wal::segment::fdatasync";
/// `fsync` of the WAL directory after files were created, renamed or removed (I/O).
pub const DIR_FSYNC: &str = "wal::dir::fsync";
/// Copy of a record header into the map (torn write).
pub const APPEND_HEADER: &str = "wal::append::header";
/// Copy of a record payload into the map (torn write).
pub const APPEND_PAYLOAD: &str = "wal::append::payload";
/// Copy of the PADDING header that seals a segment (torn write).
pub const APPEND_PADDING: &str = "wal::append::padding";
/// After all bytes of an append are in the map, before the write LSN is published
/// (torn write: `return` crashes there; N is ignored).
pub const APPEND_PUBLISH: &str = "wal::append::publish";
/// Copy of received bytes by `append_raw` (follower side), N bytes of the whole
/// call (torn write).
pub const APPEND_RAW_COPY: &str = "wal::append_raw::copy";
/// Writing the temporary term history file (I/O).
pub const HISTORY_WRITE: &str = "wal::history::write";
/// `fsync` of the temporary term history file (I/O).
pub const HISTORY_FSYNC: &str = "wal::history::fsync";
/// Renaming the term history file into place (I/O).
pub const HISTORY_RENAME: &str = "wal::history::rename";
/// Writing the `wal_start` file (reset), at any of its steps (I/O).
pub const START_FILE_WRITE: &str = "wal::start_file::write";
/// Unlinking a segment file in `remove_before` (I/O).
pub const REMOVE_UNLINK: &str = "wal::remove_before::unlink";
/// Unlinking a segment file in `truncate_after`/`reset` (I/O).
pub const TRUNCATE_UNLINK: &str = "wal::truncate::unlink";
/// `madvise(MADV_POPULATE_WRITE)` of the touch-ahead thread (I/O; `EINVAL`
/// switches it to its fallback, other errors skip the pages).
pub const TOUCH_MADVISE: &str = "wal::touch::madvise";

/// Every failpoint name, for documentation and tests.
pub const ALL: [&str; 20] = [
    SEGMENT_FALLOCATE,
    SEGMENT_CREATE,
    SEGMENT_ZERO_FILL,
    SEGMENT_FSYNC,
    SEGMENT_MMAP,
    SEGMENT_RENAME,
    SEGMENT_FDATASYNC,
    DIR_FSYNC,
    APPEND_HEADER,
    APPEND_PAYLOAD,
    APPEND_PADDING,
    APPEND_PUBLISH,
    APPEND_RAW_COPY,
    HISTORY_WRITE,
    HISTORY_FSYNC,
    HISTORY_RENAME,
    START_FILE_WRITE,
    REMOVE_UNLINK,
    TRUNCATE_UNLINK,
    TOUCH_MADVISE,
];

#[cfg(feature = "failpoints")]
mod imp {
    use std::path::{Path, PathBuf};
    use std::sync::RwLock;

    static SCOPE: RwLock<Option<PathBuf>> = RwLock::new(None);

    pub fn in_scope(path: &Path) -> bool {
        match &*SCOPE.read().unwrap_or_else(|e| e.into_inner()) {
            Some(dir) => path.starts_with(dir),
            None => true,
        }
    }

    pub fn set(dir: Option<PathBuf>) {
        *SCOPE.write().unwrap_or_else(|e| e.into_inner()) = dir;
    }

    pub fn errno(arg: Option<String>) -> i32 {
        let Some(a) = arg else { return libc::EIO };
        match a.trim() {
            "EIO" => libc::EIO,
            "ENOSPC" => libc::ENOSPC,
            "EDQUOT" => libc::EDQUOT,
            "EROFS" => libc::EROFS,
            "ENOMEM" => libc::ENOMEM,
            "EINVAL" => libc::EINVAL,
            "EACCES" => libc::EACCES,
            n => n.parse().unwrap_or(libc::EIO),
        }
    }
}

/// Restricts every failpoint to files under `dir` until the guard is dropped
/// (feature `failpoints` only). One scope at a time per process.
#[cfg(feature = "failpoints")]
pub fn scope(dir: &Path) -> ScopeGuard {
    imp::set(Some(dir.to_path_buf()));
    ScopeGuard(())
}

/// Clears the failpoint scope when dropped (see [`scope`]).
#[cfg(feature = "failpoints")]
pub struct ScopeGuard(());

#[cfg(feature = "failpoints")]
impl Drop for ScopeGuard {
    fn drop(&mut self) {
        imp::set(None);
    }
}

/// I/O failpoint `name` for a call on `path`: `Err` with the configured errno when
/// it fires. Always `Ok` without the feature.
#[inline(always)]
pub(crate) fn io(name: &str, path: &Path) -> std::io::Result<()> {
    #[cfg(feature = "failpoints")]
    {
        if imp::in_scope(path) {
            if let Some(errno) = fail::eval(name, imp::errno) {
                tracing::debug!(failpoint = name, path = %path.display(), errno, "failpoint fired");
                return Err(std::io::Error::from_raw_os_error(errno));
            }
        }
    }
    let _ = (name, path);
    Ok(())
}

/// Torn-write failpoint `name` for a copy of `len` bytes into `path`'s map:
/// `Some(n)` (n <= len) when it fires: copy only n bytes, then crash. Always
/// `None` without the feature.
#[inline(always)]
pub(crate) fn torn(name: &str, path: &Path, len: usize) -> Option<usize> {
    #[cfg(feature = "failpoints")]
    {
        if imp::in_scope(path) {
            return fail::eval(name, |arg| {
                arg.and_then(|a| a.trim().parse::<usize>().ok())
                    .unwrap_or(0)
                    .min(len)
            });
        }
    }
    let _ = (name, path, len);
    None
}
