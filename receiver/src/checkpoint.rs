//! Checkpoints of the key-value state machine: a file that is complete or absent.
//!
//! A checkpoint holds the whole [`KvStore`] as of an applied LSN, so that a restart
//! (or a rebuild) loads it and replays only the WAL after that LSN, as PostgreSQL
//! replays from its last checkpoint's redo point.
//!
//! # Files
//!
//! Checkpoints live in `<data_dir>/checkpoints/`, one file per checkpoint, named
//! `checkpoint-<LSN as 16 uppercase hex digits>.ckpt` ([`file_name`]). A file is
//! written under a temporary name ending in `.tmp`, fsynced, renamed into place and
//! the directory fsynced ([`write`], [`install`]), so after a crash a checkpoint file
//! is either complete or absent; leftover temporaries are removed at start-up
//! ([`remove_temporaries`]). The newest 2 valid checkpoints are kept ([`prune`]).
//!
//! # Format (version 1; all integers big-endian)
//!
//! ```text
//! offset  size  field
//! ------  ----  -----------------------------------------------------------
//!      0     8  magic  b"WALSCKPT"
//!      8     4  version (u32) = 1
//!     12     4  reserved (u32) = 0
//!     16     8  lsn (u64): applied LSN the state covers (end of the last record in it)
//!     24     8  term (u64): term of the record that ends at `lsn` (0 if lsn = 0)
//!     32     8  entries (u64): number of key/value pairs that follow
//!     40     8  records_applied (u64): records applied to build this state
//!     48     …  `entries` times:
//!                 4  key length K (u32)
//!                 K  key bytes
//!                 4  value length V (u32)
//!                 V  value bytes
//!  len-4     4  CRC-32 (crc32fast, IEEE) of every byte before it
//! ```
//!
//! A reader checks the magic, the version and the reserved field, then every
//! length against the bytes that remain in the file before it allocates anything
//! (and `entries` against the smallest size `entries` pairs could take), requires
//! the entries to end exactly at the trailer, and compares the CRC. Any mismatch is a
//! [`CheckpointError::Damaged`] naming the file and what is wrong; [`load`] returns a
//! state only after the whole file has been read and checked, never half a state.
//!
//! # Taking a snapshot
//!
//! [`write`] takes a `&KvStore` and streams it through one aligned 1 MiB buffer,
//! written with `O_DIRECT` where the file system takes it (the checkpoint's bytes
//! skip the page cache: see `DirectWriter`); it never builds the file in memory. A node snapshots its live store by cloning it under the read
//! lock: the map holds `Bytes`, so a clone copies only the table and bumps reference
//! counts (no key or value bytes are copied), which keeps the lock short; the clone
//! is then written without any lock, off the async threads.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use wal::{Lsn, Term};

use crate::state::{KvStore, StateMachine, Value, ValueMap};

/// First 8 bytes of every checkpoint file.
pub const MAGIC: &[u8; 8] = b"WALSCKPT";
/// Format version written by this code (and the only one it reads).
pub const VERSION: u32 = 1;
/// Bytes before the first entry.
pub const HEADER_LEN: u64 = 48;
/// Bytes of the CRC trailer.
pub const TRAILER_LEN: u64 = 4;
/// Name of the checkpoint directory inside a node's data directory.
pub const DIR_NAME: &str = "checkpoints";
/// How many valid checkpoints [`prune`] keeps.
pub const KEEP: usize = 2;

const IO_BUF: usize = 1 << 20;

/// What a checkpoint file holds, from its header (and its size on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointMeta {
    /// Applied LSN the state covers: every record ending at or below it is in it,
    /// none after it.
    pub lsn: Lsn,
    /// Term of the record that ends at `lsn` (0 for an empty state at LSN 0).
    pub term: Term,
    /// Number of key/value pairs.
    pub entries: u64,
    /// File size in bytes.
    pub len: u64,
    /// Where the file is.
    pub path: PathBuf,
}

/// Why a checkpoint could not be written, read or installed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// An I/O error on a checkpoint file or directory.
    #[error("checkpoint I/O error on {path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not a complete, intact checkpoint.
    #[error("checkpoint {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong (which field, which offset).
        reason: String,
    },
    /// [`write`] was asked for an LSN the store does not cover exactly.
    #[error("cannot checkpoint the state at LSN {lsn}: the store has applied up to {applied}")]
    LsnMismatch {
        /// LSN asked for.
        lsn: Lsn,
        /// The store's applied LSN.
        applied: Lsn,
    },
    /// A key or value longer than the format's `u32` length field.
    #[error("cannot checkpoint a key or value of {len} bytes (limit {max})")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: u64,
    },
}

impl CheckpointError {
    fn io(path: &Path, source: io::Error) -> CheckpointError {
        CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn damaged(path: &Path, reason: impl Into<String>) -> CheckpointError {
        CheckpointError::Damaged {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// The checkpoint directory of a data directory (`<data_dir>/checkpoints`).
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join(DIR_NAME)
}

/// File name of the checkpoint at `lsn`: `checkpoint-<16 uppercase hex>.ckpt`.
/// Names sort in LSN order.
pub fn file_name(lsn: Lsn) -> String {
    format!("checkpoint-{:016X}.ckpt", lsn.0)
}

/// The LSN in a checkpoint file name, if `name` is one ([`file_name`]'s inverse).
pub fn parse_file_name(name: &str) -> Option<Lsn> {
    let hex = name.strip_prefix("checkpoint-")?.strip_suffix(".ckpt")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(Lsn)
}

/// Checkpoint files in `dir` (by name, not checked), newest (highest LSN) first.
/// A missing directory is an empty list.
pub fn list(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, CheckpointError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CheckpointError::io(dir, e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| CheckpointError::io(dir, e))?;
        if let Some(lsn) = ent.file_name().to_str().and_then(parse_file_name) {
            out.push((lsn, ent.path()));
        }
    }
    out.sort_by_key(|b| std::cmp::Reverse(b.0));
    Ok(out)
}

/// Remove leftover temporaries (`*.tmp`) of interrupted writes or transfers from
/// `dir`; returns how many. Call at start-up, before anything writes checkpoints.
pub fn remove_temporaries(dir: &Path) -> Result<usize, CheckpointError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(CheckpointError::io(dir, e)),
    };
    let mut n = 0;
    for ent in rd {
        let ent = ent.map_err(|e| CheckpointError::io(dir, e))?;
        let p = ent.path();
        if p.extension().is_some_and(|x| x == "tmp") {
            fs::remove_file(&p).map_err(|e| CheckpointError::io(&p, e))?;
            tracing::info!(file = %p.display(), "removed the temporary file of an interrupted checkpoint write or transfer");
            n += 1;
        }
    }
    if n > 0 {
        sync_dir(dir)?;
    }
    Ok(n)
}

/// Write `store` as the checkpoint of `lsn` (which must equal the store's applied
/// LSN) and `term` (the term of the record ending at `lsn`) into `dir` (created if
/// missing). Complete-or-absent: the bytes go to `<name>.tmp`, which is fsynced,
/// renamed to [`file_name`]`(lsn)` and the directory fsynced. Then checkpoints older
/// than the newest [`KEEP`] valid ones are deleted ([`prune`]). The file is streamed
/// through a buffer (with `O_DIRECT` where possible), never built in memory.
pub fn write(
    dir: &Path,
    store: &KvStore,
    lsn: Lsn,
    term: Term,
) -> Result<CheckpointMeta, CheckpointError> {
    if store.applied_lsn() != lsn.0 {
        return Err(CheckpointError::LsnMismatch {
            lsn,
            applied: Lsn(store.applied_lsn()),
        });
    }
    fs::create_dir_all(dir).map_err(|e| CheckpointError::io(dir, e))?;
    let final_path = dir.join(file_name(lsn));
    let tmp = dir.join(format!("{}.tmp", file_name(lsn)));
    let res = write_file(&tmp, store, lsn, term);
    let (entries, len) = match res {
        Ok(x) => x,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, &final_path).map_err(|e| CheckpointError::io(&final_path, e))?;
    sync_dir(dir)?;
    remember_checked(&final_path);
    let meta = CheckpointMeta {
        lsn,
        term,
        entries,
        len,
        path: final_path,
    };
    prune(dir, &meta)?;
    Ok(meta)
}

/// A `Write` that feeds a CRC-32 with every byte it passes on.
struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Alignment of [`DirectWriter`]'s buffer, file offsets and lengths: the page
/// size, which covers every logical block size O_DIRECT may require here.
const DIRECT_ALIGN: usize = 4096;

/// Writes a new file in [`IO_BUF`] blocks, through `O_DIRECT` when the file system
/// takes it, so the checkpoint's bytes go from this buffer to the disk without
/// being copied into the page cache (a checkpoint is written once and read only at
/// a restart or a rebuild; copying it into the page cache cost as much CPU as
/// appending the same bytes to the WAL). Where `O_DIRECT` is refused (tmpfs, some
/// network file systems: `EINVAL` at open or at a write) it writes through the page
/// cache instead; the file's bytes are the same either way. Durability is the
/// caller's `sync_all` on the file [`DirectWriter::finish`] returns.
struct DirectWriter {
    file: File,
    /// `IO_BUF + DIRECT_ALIGN` bytes; the block is `buf[start..start + IO_BUF]`,
    /// `start` chosen so that it is `DIRECT_ALIGN`-aligned in memory.
    buf: Vec<u8>,
    start: usize,
    /// Bytes of the block filled so far.
    len: usize,
    /// File offset of the block (a multiple of `IO_BUF`).
    off: u64,
    direct: bool,
}

impl DirectWriter {
    /// Create (or truncate) `path`; `direct: false` never tries `O_DIRECT`.
    fn create(path: &Path, direct: bool) -> io::Result<DirectWriter> {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |flags: i32| {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(flags)
                .open(path)
        };
        let (file, direct) = if direct {
            match open(libc::O_DIRECT) {
                Ok(f) => (f, true),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(0)?, false),
                Err(e) => return Err(e),
            }
        } else {
            (open(0)?, false)
        };
        let buf = vec![0u8; IO_BUF + DIRECT_ALIGN];
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        Ok(DirectWriter {
            file,
            buf,
            start,
            len: 0,
            off: 0,
            direct,
        })
    }

    /// Write the first `n` bytes of the block at `self.off`.
    fn write_block(&mut self, n: usize) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        loop {
            let block = &self.buf[self.start..self.start + n];
            match self.file.write_all_at(block, self.off) {
                Ok(()) => return Ok(()),
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    // The file system takes O_DIRECT at open but not these writes:
                    // go on through the page cache (same bytes, same offsets).
                    use std::os::fd::AsRawFd;
                    let fd = self.file.as_raw_fd();
                    // SAFETY: plain fcntl calls on a descriptor we own.
                    let r = unsafe {
                        let fl = libc::fcntl(fd, libc::F_GETFL);
                        if fl < 0 {
                            fl
                        } else {
                            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_DIRECT)
                        }
                    };
                    if r < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Write what is buffered and return the file (not yet synced), exactly as
    /// long as the bytes written. With `O_DIRECT` the last block is padded with
    /// zeros to the alignment and the file cut back to its length.
    fn finish(mut self) -> io::Result<File> {
        let real = self.off + self.len as u64;
        if self.len > 0 {
            let n = if self.direct {
                let padded = self.len.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
                self.buf[self.start + self.len..self.start + padded].fill(0);
                padded
            } else {
                self.len
            };
            self.write_block(n)?;
            if n != self.len {
                self.file.set_len(real)?;
            }
        }
        Ok(self.file)
    }
}

impl Write for DirectWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(IO_BUF - self.len);
        let at = self.start + self.len;
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        if self.len == IO_BUF {
            self.write_block(IO_BUF)?;
            self.off += IO_BUF as u64;
            self.len = 0;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_file(
    tmp: &Path,
    store: &KvStore,
    lsn: Lsn,
    term: Term,
) -> Result<(u64, u64), CheckpointError> {
    write_file_with(tmp, store, lsn, term, true)
}

fn write_file_with(
    tmp: &Path,
    store: &KvStore,
    lsn: Lsn,
    term: Term,
    direct: bool,
) -> Result<(u64, u64), CheckpointError> {
    let io = |e| CheckpointError::io(tmp, e);
    let mut w = CrcWriter {
        inner: DirectWriter::create(tmp, direct).map_err(io)?,
        crc: crc32fast::Hasher::new(),
        written: 0,
    };
    let entries = store.len() as u64;
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_be_bytes());
    header.extend_from_slice(&0u32.to_be_bytes());
    header.extend_from_slice(&lsn.0.to_be_bytes());
    header.extend_from_slice(&term.to_be_bytes());
    header.extend_from_slice(&entries.to_be_bytes());
    header.extend_from_slice(&store.records_applied().to_be_bytes());
    w.write_all(&header).map_err(io)?;
    let mut n = 0u64;
    for (k, v) in store.iter() {
        for part in [k, v] {
            let len = u32::try_from(part.len()).map_err(|_| CheckpointError::TooLarge {
                len: part.len(),
                max: u32::MAX as u64,
            })?;
            w.write_all(&len.to_be_bytes()).map_err(io)?;
            w.write_all(part).map_err(io)?;
        }
        n += 1;
    }
    debug_assert_eq!(n, entries);
    let crc = w.crc.clone().finalize();
    let len = w.written + TRAILER_LEN;
    let mut bw = w.inner;
    bw.write_all(&crc.to_be_bytes()).map_err(io)?;
    let file = bw.finish().map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok((n, len))
}

/// A reader over a checkpoint file of known length that feeds a CRC-32 with every
/// byte before the trailer and knows how many bytes remain before it.
///
/// Performance (start-up loads the newest checkpoint): the file is read in
/// [`IO_BUF`] blocks and each block is hashed in one call as it arrives (the
/// SIMD CRC runs at memory speed; per-field updates of 4 bytes did not), fields are
/// decoded from the block, and values are copied once, straight from the block into
/// their own allocation (no zeroed buffer first). Labels for errors are built only
/// when an error is reported.
struct Parser<'p> {
    path: &'p Path,
    file: File,
    crc: crc32fast::Hasher,
    buf: Vec<u8>,
    /// Next unread byte in `buf`.
    pos: usize,
    /// Bytes of `buf` read from the file so far.
    filled: usize,
    /// File offset of `buf[0]`.
    buf_off: u64,
    /// Bytes before the trailer (what the CRC covers).
    crc_limit: u64,
    /// Bytes not yet consumed before the trailer.
    remaining: u64,
    /// File offset of the next byte.
    offset: u64,
}

impl<'p> Parser<'p> {
    fn open(path: &'p Path) -> Result<Parser<'p>, CheckpointError> {
        let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| CheckpointError::io(path, e))?
            .len();
        if len < HEADER_LEN + TRAILER_LEN {
            return Err(CheckpointError::damaged(
                path,
                format!(
                    "file of {len} bytes is shorter than a header and trailer ({} bytes)",
                    HEADER_LEN + TRAILER_LEN
                ),
            ));
        }
        Ok(Parser {
            path,
            file,
            crc: crc32fast::Hasher::new(),
            buf: vec![0u8; IO_BUF],
            pos: 0,
            filled: 0,
            buf_off: 0,
            crc_limit: len - TRAILER_LEN,
            remaining: len - TRAILER_LEN,
            offset: 0,
        })
    }

    fn take(&mut self, what: &dyn Fn() -> String, n: u64) -> Result<(), CheckpointError> {
        if n > self.remaining {
            return Err(CheckpointError::damaged(
                self.path,
                format!(
                    "{} of {n} bytes at offset {} runs past the end of the entries ({} bytes left)",
                    what(),
                    self.offset,
                    self.remaining
                ),
            ));
        }
        Ok(())
    }

    /// Refills the block (keeping unread bytes); hashes what arrives. Returns false
    /// at the end of the file.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.buf_off += self.pos as u64;
            self.filled -= self.pos;
            self.pos = 0;
        }
        loop {
            match self.file.read(&mut self.buf[self.filled..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    let start = self.buf_off + self.filled as u64;
                    let hashed_end = (start + n as u64).min(self.crc_limit);
                    if hashed_end > start {
                        let k = (hashed_end - start) as usize;
                        self.crc.update(&self.buf[self.filled..self.filled + k]);
                    }
                    self.filled += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Calls `sink` with the next `n` bytes (in one or more pieces). Does not check
    /// `remaining` (the trailer is read with it too).
    fn consume(
        &mut self,
        what: &dyn Fn() -> String,
        n: usize,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), CheckpointError> {
        let mut left = n;
        while left > 0 {
            if self.pos == self.filled {
                let more = self.fill().map_err(|e| CheckpointError::io(self.path, e))?;
                if !more {
                    return Err(CheckpointError::damaged(
                        self.path,
                        format!(
                            "file ended early reading {} at offset {}",
                            what(),
                            self.offset
                        ),
                    ));
                }
            }
            let c = left.min(self.filled - self.pos);
            sink(&self.buf[self.pos..self.pos + c]);
            self.pos += c;
            self.offset += c as u64;
            left -= c;
        }
        Ok(())
    }

    fn read_exact_with(
        &mut self,
        what: &dyn Fn() -> String,
        out: &mut [u8],
    ) -> Result<(), CheckpointError> {
        self.take(what, out.len() as u64)?;
        let mut at = 0;
        self.consume(what, out.len(), |piece| {
            out[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        })?;
        self.remaining -= out.len() as u64;
        Ok(())
    }

    fn read_exact(&mut self, what: &str, out: &mut [u8]) -> Result<(), CheckpointError> {
        self.read_exact_with(&|| what.to_string(), out)
    }

    fn u32_with(&mut self, what: &dyn Fn() -> String) -> Result<u32, CheckpointError> {
        let mut b = [0u8; 4];
        self.read_exact_with(what, &mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self, what: &str) -> Result<u64, CheckpointError> {
        let mut b = [0u8; 8];
        self.read_exact(what, &mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn u32(&mut self, what: &str) -> Result<u32, CheckpointError> {
        self.u32_with(&|| what.to_string())
    }

    /// Reads `n` bytes (already checked against `remaining` by the caller's length
    /// field) into a new buffer when `keep`, else only through the CRC.
    fn bytes(
        &mut self,
        what: &dyn Fn() -> String,
        n: u64,
        keep: bool,
    ) -> Result<Option<Vec<u8>>, CheckpointError> {
        self.take(what, n)?;
        let out = if keep {
            let mut v = Vec::with_capacity(n as usize);
            self.consume(what, n as usize, |piece| v.extend_from_slice(piece))?;
            Some(v)
        } else {
            self.consume(what, n as usize, |_| {})?;
            None
        };
        self.remaining -= n;
        Ok(out)
    }

    /// The trailer (after every entry): not part of the CRC.
    fn trailer(&mut self) -> Result<u32, CheckpointError> {
        let mut t = [0u8; 4];
        let mut at = 0;
        self.consume(&|| "the CRC trailer".to_string(), 4, |piece| {
            t[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        })
        .map_err(|e| match e {
            CheckpointError::Damaged { path, .. } => CheckpointError::Damaged {
                path,
                reason: "file ended before the CRC trailer".into(),
            },
            e => e,
        })?;
        Ok(u32::from_be_bytes(t))
    }
}

/// Metadata, records_applied and (when kept) the map of a parsed file.
type Parsed = (CheckpointMeta, u64, Option<ValueMap>);

/// Reads and checks a whole checkpoint file; builds the map only when `keep`.
fn parse(path: &Path, keep: bool) -> Result<Parsed, CheckpointError> {
    let mut p = Parser::open(path)?;
    let len = p.remaining + TRAILER_LEN;
    let mut magic = [0u8; 8];
    p.read_exact("magic", &mut magic)?;
    if &magic != MAGIC {
        return Err(CheckpointError::damaged(
            path,
            format!("bad magic {magic:02x?} (expected \"WALSCKPT\")"),
        ));
    }
    let version = p.u32("version")?;
    if version != VERSION {
        return Err(CheckpointError::damaged(
            path,
            format!("unsupported format version {version} (this walship reads {VERSION})"),
        ));
    }
    let reserved = p.u32("reserved field")?;
    if reserved != 0 {
        return Err(CheckpointError::damaged(
            path,
            format!("reserved header field is {reserved:#x}, expected 0"),
        ));
    }
    let lsn = Lsn(p.u64("lsn")?);
    let term = p.u64("term")?;
    let entries = p.u64("entry count")?;
    let records_applied = p.u64("records_applied")?;
    // Every pair takes at least 8 bytes (two empty lengths).
    if entries > p.remaining / 8 {
        return Err(CheckpointError::damaged(
            path,
            format!(
                "header claims {entries} entries but only {} bytes follow",
                p.remaining
            ),
        ));
    }
    let mut map = if keep {
        Some(HashMap::with_capacity(entries as usize))
    } else {
        None
    };
    for i in 0..entries {
        let kl = p.u32("key length")? as u64;
        let k = p.bytes(&|| format!("key of entry {i}"), kl, keep)?;
        let vl = p.u32("value length")? as u64;
        let v = p.bytes(&|| format!("value of entry {i}"), vl, keep)?;
        if let (Some(m), Some(k), Some(v)) = (map.as_mut(), k, v) {
            m.insert(Bytes::from(k), Value::owned(Bytes::from(v)));
        }
    }
    if p.remaining != 0 {
        return Err(CheckpointError::damaged(
            path,
            format!(
                "{} unexpected bytes after the last of {entries} entries (offset {})",
                p.remaining, p.offset
            ),
        ));
    }
    let stored = p.trailer()?;
    let computed = p.crc.clone().finalize();
    if stored != computed {
        return Err(CheckpointError::damaged(
            path,
            format!("CRC mismatch: trailer says {stored:#010x}, contents give {computed:#010x}"),
        ));
    }
    if let Some(m) = map.as_ref() {
        if m.len() as u64 != entries {
            return Err(CheckpointError::damaged(
                path,
                format!(
                    "{entries} entries hold only {} distinct keys (duplicate keys)",
                    m.len()
                ),
            ));
        }
    }
    Ok((
        CheckpointMeta {
            lsn,
            term,
            entries,
            len,
            path: path.to_path_buf(),
        },
        records_applied,
        map,
    ))
}

/// Check a checkpoint file completely (header, every length, that the entries end at
/// the trailer, the CRC) without building the state. The error names the file and
/// what is wrong. Note: the LSN in the header is returned as is; it need not match the
/// file name (a transfer temporary has another name).
pub fn verify(path: &Path) -> Result<CheckpointMeta, CheckpointError> {
    parse(path, false).map(|(m, _, _)| m)
}

/// Read a checkpoint file into a [`KvStore`] whose applied LSN is the checkpoint's.
/// The state is returned only after the whole file has been checked (CRC included):
/// a damaged file gives an error, never a partial state.
pub fn load(path: &Path) -> Result<(CheckpointMeta, KvStore), CheckpointError> {
    let (meta, records_applied, map) = parse(path, true)?;
    let map = map.unwrap_or_default();
    Ok((
        meta.clone(),
        KvStore::restore(map, meta.lsn.0, meta.term, records_applied),
    ))
}

/// Load the newest valid checkpoint in `dir` (None if there is none; a missing
/// directory has none). A damaged newer one is logged (WARN naming the file and why)
/// and skipped, so the previous one is used; I/O errors other than damage are
/// returned.
pub fn load_newest(dir: &Path) -> Result<Option<(CheckpointMeta, KvStore)>, CheckpointError> {
    for (_, path) in list(dir)? {
        match load(&path) {
            Ok(x) => return Ok(Some(x)),
            Err(e @ CheckpointError::Damaged { .. }) => warn_damaged(&e),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Like [`load_newest`] but only verifies: the newest valid checkpoint's metadata.
pub fn newest_valid(dir: &Path) -> Result<Option<CheckpointMeta>, CheckpointError> {
    for (_, path) in list(dir)? {
        match verify(&path) {
            Ok(m) => return Ok(Some(m)),
            Err(e @ CheckpointError::Damaged { .. }) => warn_damaged(&e),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn warn_damaged(e: &CheckpointError) {
    tracing::warn!(error = %e, "skipping a damaged checkpoint; falling back to the previous checkpoint (or the full WAL if there is none)");
}

/// Install a fully received temporary checkpoint file (e.g. from a rebuild transfer)
/// into `dir`: verify it completely, fsync it, rename it to [`file_name`] of its LSN,
/// fsync the directory, prune older checkpoints. `tmp_file` should be in `dir` (a
/// rename does not cross file systems). A damaged file is left where it is and
/// reported.
pub fn install(dir: &Path, tmp_file: &Path) -> Result<CheckpointMeta, CheckpointError> {
    let meta = verify(tmp_file)?;
    install_verified(dir, tmp_file, &meta)
}

/// [`install`] for a file the caller has just checked completely itself (with
/// [`load`] or [`verify`], whose metadata `meta` is): fsync it, rename it to
/// [`file_name`] of its LSN, fsync the directory, prune. Saves a second read of a
/// large file (a rebuild loads the received copy anyway). Never call it with a
/// file that was not checked.
pub fn install_verified(
    dir: &Path,
    tmp_file: &Path,
    meta: &CheckpointMeta,
) -> Result<CheckpointMeta, CheckpointError> {
    let meta = meta.clone();
    File::open(tmp_file)
        .and_then(|f| f.sync_all())
        .map_err(|e| CheckpointError::io(tmp_file, e))?;
    fs::create_dir_all(dir).map_err(|e| CheckpointError::io(dir, e))?;
    let final_path = dir.join(file_name(meta.lsn));
    fs::rename(tmp_file, &final_path).map_err(|e| CheckpointError::io(&final_path, e))?;
    sync_dir(dir)?;
    remember_checked(&final_path);
    let meta = CheckpointMeta {
        path: final_path,
        ..meta
    };
    prune(dir, &meta)?;
    Ok(meta)
}

/// Checkpoint files this process wrote or checked completely, with the size and
/// modification time they had then. [`prune`] counts such a file as valid without
/// reading it again (each checkpoint's prune used to re-read the previous one whole:
/// as many bytes read as written). Any rewrite changes the modification time, so a
/// file changed since is read and checked again; a file damaged in place by the
/// disk is still caught when it is loaded ([`load`] checks everything).
fn checked_files() -> &'static std::sync::Mutex<HashMap<PathBuf, (u64, std::time::SystemTime)>> {
    static CHECKED: std::sync::OnceLock<
        std::sync::Mutex<HashMap<PathBuf, (u64, std::time::SystemTime)>>,
    > = std::sync::OnceLock::new();
    CHECKED.get_or_init(Default::default)
}

fn size_and_mtime(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Remember that `path` is a complete, intact checkpoint as it is now.
fn remember_checked(path: &Path) {
    if let (Some(sm), Ok(mut c)) = (size_and_mtime(path), checked_files().lock()) {
        c.insert(path.to_path_buf(), sm);
    }
}

/// Whether `path` was checked by this process and has not changed since.
fn known_intact(path: &Path) -> bool {
    let Ok(c) = checked_files().lock() else {
        return false;
    };
    match (c.get(path), size_and_mtime(path)) {
        (Some(a), Some(b)) => *a == b,
        _ => false,
    }
}

fn forget_checked(path: &Path) {
    if let Ok(mut c) = checked_files().lock() {
        c.remove(path);
    }
}

/// Keep `newest` (known valid) and the valid checkpoints below it until [`KEEP`] valid
/// ones are counted; delete every checkpoint older than that. Files above `newest`'s
/// LSN are left alone (see [`remove_after`]). Damaged files newer than the last kept
/// one stay until a later prune passes them. Returns the number of files removed.
/// A file this process wrote or checked and that has not changed since is counted
/// valid without being read again (see `checked_files`).
pub fn prune(dir: &Path, newest: &CheckpointMeta) -> Result<usize, CheckpointError> {
    let mut valid = 0usize;
    let mut removed = 0usize;
    for (lsn, path) in list(dir)? {
        if lsn > newest.lsn {
            continue;
        }
        if valid >= KEEP {
            fs::remove_file(&path).map_err(|e| CheckpointError::io(&path, e))?;
            forget_checked(&path);
            tracing::info!(file = %path.display(), lsn = %lsn, "removed an old checkpoint (the newest {KEEP} are kept)");
            removed += 1;
            continue;
        }
        if path == newest.path || known_intact(&path) || verify(&path).is_ok() {
            valid += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Delete every checkpoint whose LSN is above `lsn` (call when the WAL is truncated
/// there: such a checkpoint covers records that are no longer in the log). Returns
/// how many were removed.
pub fn remove_after(dir: &Path, lsn: Lsn) -> Result<usize, CheckpointError> {
    let mut removed = 0;
    for (l, path) in list(dir)? {
        if l > lsn {
            fs::remove_file(&path).map_err(|e| CheckpointError::io(&path, e))?;
            forget_checked(&path);
            tracing::warn!(file = %path.display(), checkpoint_lsn = %l, cut_lsn = %lsn, "removed a checkpoint beyond the WAL's new end: it covered records that were truncated");
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CheckpointError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{encode_put, Applied, KIND_PUT};
    use proptest::prelude::*;

    fn store_of(pairs: &[(Vec<u8>, Vec<u8>)]) -> KvStore {
        let mut kv = KvStore::new();
        let mut lsn = 0u64;
        for (k, v) in pairs {
            let p = encode_put(k, v);
            kv.apply(&Applied {
                lsn,
                end: lsn + 100,
                term: 2,
                kind: KIND_PUT,
                payload: &p,
            });
            lsn += 100;
        }
        kv
    }

    fn sample() -> KvStore {
        store_of(&[
            (b"alpha".to_vec(), b"1".to_vec()),
            (b"beta".to_vec(), vec![7u8; 1000]),
            (b"".to_vec(), b"empty key".to_vec()),
            (b"gamma".to_vec(), Vec::new()),
        ])
    }

    #[test]
    fn direct_and_buffered_writes_give_the_same_file() {
        // Several 1 MiB blocks and a partial last one.
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..2500u32)
            .map(|i| {
                (
                    i.to_be_bytes().to_vec(),
                    vec![(i % 251) as u8; 1000 + i as usize % 7],
                )
            })
            .collect();
        let kv = store_of(&pairs);
        let lsn = Lsn(kv.applied_lsn());
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("direct");
        let b = d.path().join("buffered");
        let ra = write_file_with(&a, &kv, lsn, 2, true).unwrap();
        let rb = write_file_with(&b, &kv, lsn, 2, false).unwrap();
        assert_eq!(ra, rb);
        let (fa, fb) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
        assert!(fa.len() > 2 * IO_BUF && fa.len() % DIRECT_ALIGN != 0);
        assert_eq!(fa.len() as u64, ra.1);
        assert!(fa == fb, "the two files differ");
        let (_, back) = load(&a).unwrap();
        assert_eq!(back.digest(), kv.digest());
        // tmpfs refuses O_DIRECT before Linux 6.6 (the writer then falls back to
        // the page cache) and takes it since: the same bytes either way.
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            if let Ok(d) = tempfile::tempdir_in(shm) {
                let c = d.path().join("tmpfs");
                write_file_with(&c, &kv, lsn, 2, true).unwrap();
                assert!(fs::read(&c).unwrap() == fb);
            }
        }
    }

    #[test]
    fn write_load_round_trip_and_name() {
        let d = tempfile::tempdir().unwrap();
        let kv = sample();
        let lsn = Lsn(kv.applied_lsn());
        let m = write(d.path(), &kv, lsn, 2).unwrap();
        assert_eq!(m.path, d.path().join("checkpoint-0000000000000190.ckpt"));
        assert_eq!(m.entries, 4);
        assert_eq!(m.len, fs::metadata(&m.path).unwrap().len());
        assert_eq!(verify(&m.path).unwrap(), m);
        let (m2, kv2) = load(&m.path).unwrap();
        assert_eq!(m2, m);
        assert_eq!(kv2.digest(), kv.digest());
        assert_eq!(kv2.applied_lsn(), kv.applied_lsn());
        assert_eq!(kv2.records_applied(), kv.records_applied());
        assert_eq!(kv2.applied_term(), 2);
        assert_eq!(
            parse_file_name(&file_name(Lsn(0xAB_CDEF))),
            Some(Lsn(0xAB_CDEF))
        );
        assert_eq!(parse_file_name("checkpoint-abc.ckpt"), None);
        // No temporary is left behind.
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    /// Entries and values larger than the read block, and fields straddling block
    /// boundaries, load intact; a flip in the last byte before the trailer (hashed
    /// from a block's end) and in the trailer itself are both found.
    #[test]
    fn entries_across_read_blocks_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let mut pairs = Vec::new();
        for i in 0..3000u32 {
            pairs.push((format!("k{i}").into_bytes(), vec![(i % 251) as u8; 333]));
        }
        pairs.push((
            b"big".to_vec(),
            (0..IO_BUF * 3 / 2).map(|x| x as u8).collect(),
        ));
        pairs.push((vec![b'K'; IO_BUF + 7], b"big key".to_vec()));
        let kv = store_of(&pairs);
        let m = write(d.path(), &kv, Lsn(kv.applied_lsn()), 1).unwrap();
        assert!(m.len > 3 * IO_BUF as u64);
        let (m2, kv2) = load(&m.path).unwrap();
        assert_eq!(m2, m);
        assert_eq!(kv2.digest(), kv.digest());
        assert_eq!(kv2.len(), pairs.len());
        let bytes = fs::read(&m.path).unwrap();
        for at in [bytes.len() - 5, bytes.len() - 1, IO_BUF, IO_BUF - 1] {
            let mut b = bytes.clone();
            b[at] ^= 1;
            fs::write(&m.path, &b).unwrap();
            assert!(
                matches!(load(&m.path), Err(CheckpointError::Damaged { .. })),
                "flip at {at}"
            );
            assert!(verify(&m.path).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn lsn_must_match_the_store() {
        let d = tempfile::tempdir().unwrap();
        let kv = sample();
        let e = write(d.path(), &kv, Lsn(5), 2).unwrap_err();
        assert!(matches!(e, CheckpointError::LsnMismatch { .. }), "{e}");
        assert!(list(d.path()).unwrap().is_empty());
    }

    #[test]
    fn keeps_newest_two_and_removes_older() {
        let d = tempfile::tempdir().unwrap();
        let mut kv = KvStore::new();
        let mut metas = Vec::new();
        for i in 0..5u64 {
            let p = encode_put(format!("k{i}").as_bytes(), b"v");
            kv.apply(&Applied {
                lsn: i * 50,
                end: i * 50 + 50,
                term: 1,
                kind: KIND_PUT,
                payload: &p,
            });
            metas.push(write(d.path(), &kv, Lsn(kv.applied_lsn()), 1).unwrap());
        }
        let l: Vec<Lsn> = list(d.path()).unwrap().into_iter().map(|x| x.0).collect();
        assert_eq!(l, vec![Lsn(250), Lsn(200)]);
        let (m, kv2) = load_newest(d.path()).unwrap().unwrap();
        assert_eq!(m.lsn, Lsn(250));
        assert_eq!(kv2.len(), 5);
    }

    #[test]
    fn damaged_newest_falls_back_to_previous() {
        let d = tempfile::tempdir().unwrap();
        let mut kv = sample();
        let old = write(d.path(), &kv, Lsn(kv.applied_lsn()), 2).unwrap();
        let p = encode_put(b"late", b"x");
        kv.apply(&Applied {
            lsn: 400,
            end: 500,
            term: 3,
            kind: KIND_PUT,
            payload: &p,
        });
        let new = write(d.path(), &kv, Lsn(500), 3).unwrap();
        // Flip one bit in the middle of the newest.
        let mut b = fs::read(&new.path).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x10;
        fs::write(&new.path, &b).unwrap();
        assert!(matches!(
            verify(&new.path),
            Err(CheckpointError::Damaged { .. })
        ));
        let (m, kv2) = load_newest(d.path()).unwrap().unwrap();
        assert_eq!(m, old);
        assert_eq!(kv2.get(b"late"), None);
        assert_eq!(newest_valid(d.path()).unwrap().unwrap(), old);
        // Both damaged: none.
        let mut b = fs::read(&old.path).unwrap();
        b.truncate(b.len() - 1);
        fs::write(&old.path, &b).unwrap();
        assert!(load_newest(d.path()).unwrap().is_none());
    }

    #[test]
    fn temporaries_removed_and_install_renames() {
        let d = tempfile::tempdir().unwrap();
        let kv = sample();
        let other = tempfile::tempdir().unwrap();
        let m = write(other.path(), &kv, Lsn(kv.applied_lsn()), 2).unwrap();
        let tmp = d.path().join("incoming.ckpt.tmp");
        fs::copy(&m.path, &tmp).unwrap();
        fs::write(d.path().join("junk.tmp"), b"partial").unwrap();
        let got = install(d.path(), &tmp).unwrap();
        assert_eq!(got.path, d.path().join(file_name(m.lsn)));
        assert!(!tmp.exists());
        assert_eq!(remove_temporaries(d.path()).unwrap(), 1);
        // A damaged transfer is refused and left in place.
        let bad = d.path().join("bad.tmp");
        fs::write(&bad, b"WALSCKPT").unwrap();
        assert!(install(d.path(), &bad).is_err());
        assert!(bad.exists());
    }

    #[test]
    fn remove_after_drops_checkpoints_beyond_a_cut() {
        let d = tempfile::tempdir().unwrap();
        let kv = sample();
        write(d.path(), &kv, Lsn(kv.applied_lsn()), 2).unwrap();
        assert_eq!(remove_after(d.path(), Lsn(400)).unwrap(), 0);
        assert_eq!(remove_after(d.path(), Lsn(399)).unwrap(), 1);
        assert!(load_newest(d.path()).unwrap().is_none());
    }

    #[test]
    fn bad_lengths_and_header_fields_are_damage() {
        let d = tempfile::tempdir().unwrap();
        let kv = store_of(&[(b"k".to_vec(), b"v".to_vec())]);
        let m = write(d.path(), &kv, Lsn(100), 2).unwrap();
        let good = fs::read(&m.path).unwrap();
        let check = |bytes: &[u8], needle: &str| {
            let p = d.path().join("probe");
            fs::write(&p, bytes).unwrap();
            let e = verify(&p).unwrap_err();
            let s = e.to_string();
            assert!(s.contains("probe") && s.contains(needle), "{s}");
            assert!(load(&p).is_err());
        };
        // Key length far beyond the file (must not allocate it).
        let mut b = good.clone();
        b[48..52].copy_from_slice(&u32::MAX.to_be_bytes());
        check(&b, "runs past the end");
        // Huge entry count.
        let mut b = good.clone();
        b[32..40].copy_from_slice(&u64::MAX.to_be_bytes());
        check(&b, "entries");
        // Fewer entries than present: bytes left over.
        let mut b = good.clone();
        b[32..40].copy_from_slice(&0u64.to_be_bytes());
        check(&b, "unexpected bytes");
        // Magic / version.
        let mut b = good.clone();
        b[0] = b'X';
        check(&b, "magic");
        let mut b = good.clone();
        b[11] = 9;
        check(&b, "version");
        // Trailer.
        let mut b = good.clone();
        let n = b.len();
        b[n - 1] ^= 1;
        check(&b, "CRC");
        // Too short.
        check(&good[..20], "shorter");
        // Duplicate keys with a fixed-up CRC are refused by load.
        let mut b = good[..good.len() - 4].to_vec();
        b[32..40].copy_from_slice(&2u64.to_be_bytes());
        let entry = b[48..].to_vec();
        b.extend_from_slice(&entry);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        let p = d.path().join("dup");
        fs::write(&p, &b).unwrap();
        assert!(verify(&p).is_ok());
        assert!(load(&p).unwrap_err().to_string().contains("duplicate"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn round_trip(pairs in proptest::collection::hash_map(
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..300),
            0..40,
        ), term in 0u64..10) {
            let d = tempfile::tempdir().unwrap();
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = pairs.into_iter().collect();
            let kv = store_of(&pairs);
            let m = write(d.path(), &kv, Lsn(kv.applied_lsn()), term).unwrap();
            let (m2, kv2) = load(&m.path).unwrap();
            prop_assert_eq!(&m2, &m);
            prop_assert_eq!(m2.term, term);
            prop_assert_eq!(kv2.len(), pairs.len());
            prop_assert_eq!(kv2.digest(), kv.digest());
            for (k, v) in &pairs {
                let got = kv2.get(k);
                prop_assert_eq!(got.as_deref(), Some(&v[..]));
            }
        }

        #[test]
        fn any_truncation_or_bit_flip_is_detected(
            pairs in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..20), proptest::collection::vec(any::<u8>(), 0..100)),
                1..10,
            ),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let d = tempfile::tempdir().unwrap();
            let kv = store_of(&pairs);
            let m = write(d.path(), &kv, Lsn(kv.applied_lsn()), 1).unwrap();
            let good = fs::read(&m.path).unwrap();
            let p = d.path().join("probe");
            let n = cut.index(good.len());
            fs::write(&p, &good[..n]).unwrap();
            let damaged = matches!(verify(&p), Err(CheckpointError::Damaged { .. }));
            prop_assert!(damaged);
            prop_assert!(load(&p).is_err());
            let mut b = good.clone();
            let i = flip.index(b.len());
            b[i] ^= 1 << bit;
            fs::write(&p, &b).unwrap();
            let damaged = matches!(verify(&p), Err(CheckpointError::Damaged { .. }));
            prop_assert!(damaged);
            prop_assert!(load(&p).is_err());
        }
    }
}
