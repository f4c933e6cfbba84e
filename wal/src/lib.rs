//! `wal`: walship's storage engine — a segmented, memory-mapped write-ahead log.
//!
//! Synchronous (no async runtime): one [`Wal`] per directory, shared as `Arc<Wal>`.
//! Appends copy records into a memory-mapped segment (one memcpy); [`Wal::flush`]
//! makes them durable with `fdatasync`, shared by concurrent callers (group commit).
//! Followers store the leader's bytes verbatim with [`Wal::append_raw`], so for any
//! LSN range two nodes both hold in the same term, their WAL bytes are identical.
//!
//! # LSN
//!
//! An [`Lsn`] is a byte position in the logical stream (u64). A record's LSN is the
//! position of its first header byte. Shown as PostgreSQL does: `X/X`, the high and
//! low 32 bits in uppercase hex (`0/16B3748`).
//!
//! # Record format
//!
//! Every record starts on an 8-byte boundary and occupies
//! `align8(32 + payload_len)` bytes. All integers are little-endian.
//!
//! ```text
//!  byte  0        4        8                16               24   25           32
//!        +--------+--------+----------------+----------------+----+------------+
//!        | crc32  | len    | lsn            | term           |kind| reserved=0 |
//!        +--------+--------+----------------+----------------+----+------------+
//!        | payload: len bytes ...                                               |
//!        |                                   ... | zero bytes up to the next 8x |
//!        +------------------------------------------------------------------------+
//!
//!  crc32     CRC-32 (IEEE, crc32fast) of every byte of the record after this field:
//!            header bytes 4..32, the payload and the alignment zeros.
//!  len       payload length in bytes (u32).
//!  lsn       the record's own LSN. A record copied or read at the wrong place, or
//!            stale bytes of an older record, fail this check.
//!  term      term of the leader that wrote the record (u64).
//!  kind      0 is never valid, so zeroed bytes are never a record;
//!            1 PADDING (payload all zero; fills a segment's tail),
//!            2 TERM_START (payload: leader id, UTF-8), 3..=15 reserved (invalid),
//!            >= 16 application (walship: 16 put, 17 delete, 18 log).
//!  reserved  7 bytes, must be zero.
//! ```
//!
//! Size limit: a record (header + payload + alignment) is at most half a segment,
//! checked on append and on decode; PADDING records are exempt but must end exactly
//! at their segment's end.
//!
//! # Segments
//!
//! The stream is cut into segments of a fixed power-of-two size (default 64 MiB, at
//! least 1 MiB). The segment holding LSN `l` starts at `l & !(size - 1)` and lives in
//! the file named by that start LSN as 16 uppercase hex digits: the segment starting
//! at `0/4000000` is `0000000004000000.wal`.
//!
//! Records never span segments. When the next record would not fit in the current
//! segment, or would leave a tail smaller than one header (32 bytes), a PADDING
//! record fills the rest of the segment and the record goes to the next one. So
//! every byte of a sealed segment is covered by valid records, and damage anywhere
//! in it is detectable.
//!
//! ```text
//!  0000000004000000.wal                                 0000000008000000.wal
//!  +-------+--------+-----+-------+---------------+     +-------+-----+-------....
//!  | rec   | rec    | ... | rec   | PADDING       |     | rec   | rec | 0 0 0 0
//!  +-------+--------+-----+-------+---------------+     +-------+-----+-------....
//!  ^0/4000000                                     ^0/8000000      ^write_lsn
//! ```
//!
//! Segment files are fully allocated (`fallocate`) *before* they are mapped, so a
//! full disk is a clean [`WalError::NoSpace`] at segment creation, never SIGBUS. A
//! background thread prepares the next segment while the current one fills
//! (tmp file, fallocate, optional zero fill, fsync, map, rename, fsync of the
//! directory), so rollover does not stall appends. Pages are faulted in ahead of the
//! writer by the touch-ahead thread (writable, with `MADV_POPULATE_WRITE`), or, when
//! it is off or the kernel lacks that advice, read-only with MAP_POPULATE by the
//! preparing thread. The directory is
//! fsynced whenever segments are created or removed.
//!
//! Other files in the directory: `term_history` (text, one `<term> <X/X>` line per
//! term, replaced atomically), `wal_start` (the log start written by
//! [`Wal::reset`]) and `LOCK` (an flock held while the WAL is open).
//!
//! # End of log
//!
//! Bytes beyond the write LSN are always zero (new segments are zero; truncation and
//! recovery zero what they cut). On open, recovery CRC-checks every record of every
//! retained segment. The log ends at the first position in the newest segment that
//! does not hold a valid record:
//!
//! * all zero from there to the segment end: the normal end of the log;
//! * non-zero bytes but no valid record after them: a torn write (never flushed);
//!   it is cut off (zeroed durably) and logged with its LSN range;
//! * a valid record after the damage: acknowledged data is damaged, which is
//!   [`WalError::Corruption`] naming the file and byte offset (or, with
//!   [`WalOptions::repair`], the log is truncated at the damage and that is logged).
//!
//! Any invalid record in a sealed segment, or a missing segment between two present
//! ones, is corruption likewise. Trailing segments without records (prepared ahead)
//! are removed.
//!
//! Caveat: appends reach the file through the page cache; after an OS crash or power
//! loss (not a process crash), pages written after the last flush may have reached
//! the disk out of order, which recovery reports as corruption in the newest segment
//! because a valid (but never flushed) record follows a hole. `repair = true`
//! truncates at the hole, losing nothing that was flushed.
//!
//! # Concurrency
//!
//! Appends are serialized by a mutex held only for the copy. A touch-ahead
//! thread makes the pages just ahead of the write position writable
//! (`MADV_POPULATE_WRITE`, never changing a byte) so the memcpy does not take a page
//! write fault per page ([`WalOptions::touch_ahead`]; see `toucher.rs`). Bulk
//! appends — an `append_raw` chunk or an `append_batch` of at least 16 KiB — are
//! instead written with `pwrite` on the segment's descriptor (the same page cache
//! the map shows, so readers see exactly the same bytes): a page that `pwrite`
//! fills whole is never zero-filled and takes no fault, which on a VM costs more
//! than the copy itself; the toucher rests while appends are bulk. The write LSN is
//! published with Release after the bytes are in place; readers load it with Acquire
//! and read only below it, so they never see a partial record (see `segment.rs` for
//! the full safety argument). Readers hold an `Arc` to the segment mapping, so a
//! segment removed while being read stays mapped until they move on.
//!
//! # Durability and failures
//!
//! `flush` returns only after `fdatasync` of every segment holding unflushed bytes.
//! Group commit: one caller at a time becomes the flush leader and fdatasyncs up to
//! the *current* write LSN; the others wait on a futex, all wake when the leader is
//! done and return at once if their LSN is covered (no lock hand-off chain).
//! If an `fdatasync` fails, the kernel may already have dropped the dirty pages, so
//! the WAL is *poisoned*: every later append and flush returns
//! [`WalError::Poisoned`] (PostgreSQL's fsync lesson: never retry and pretend).
#![deny(missing_docs)]

mod error;
pub mod failpoints;
mod flushgate;
mod history;
pub mod inspect;
mod lsn;
mod reader;
pub mod record;
mod recovery;
mod segment;
mod toucher;
mod wal;

pub use error::WalError;
pub use history::{fork_point, term_at, TermSpan, TERM_HISTORY_FILE};
pub use lsn::Lsn;
pub use reader::{RecordRef, SharedPayload, WalReader};
pub use record::kind;
pub use wal::{Appended, RecoveryReport, TruncateReport, Wal, WalLockWatch, WalOptions};

/// A leader's term (election epoch). Every record carries the term of its writer.
pub type Term = u64;

#[cfg(test)]
mod tests;
