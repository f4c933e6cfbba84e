//! Zero-copy reading: `WalReader` and `read_raw`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::record::{self, kind, Invalid, HEADER_LEN};
use crate::segment::Segment;
use crate::wal::Inner;
use crate::{Lsn, Term, WalError};

/// One record, borrowed from the segment mapping (no copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Position of the record.
    pub lsn: Lsn,
    /// Position just past it (the next record's LSN).
    pub end: Lsn,
    /// Term of the leader that wrote it.
    pub term: Term,
    /// Record kind (see [`crate::kind`]).
    pub kind: u8,
    /// The stored CRC-32 (already verified).
    pub crc: u32,
    /// The payload.
    pub payload: &'a [u8],
}

/// Sequential reader over the WAL. Call [`WalReader::next`] until it returns None
/// (caught up with the write LSN); later calls return records appended since. Every
/// record's CRC is verified as it is read.
pub struct WalReader {
    inner: Arc<Inner>,
    pos: u64,
    seg: Option<Arc<Segment>>,
    /// `Inner::generation` when `seg` was looked up.
    generation: u64,
    with_padding: bool,
}

/// A record's payload that owns a share of the segment mapping holding it: no
/// copy is made, and the bytes stay valid and unchanged for as long as the
/// `Bytes` (or any clone or slice of it) lives, even after the segment is removed
/// from the WAL or the log is truncated (segment.rs: published bytes are never
/// modified; a removed segment's file lives on, unlinked, while it is mapped).
///
/// Holding one keeps its whole segment file's disk blocks allocated after the WAL
/// has removed it: `segment` says which segment, so a holder can account for that.
#[derive(Clone, Debug)]
pub struct SharedPayload {
    /// The payload bytes.
    pub bytes: bytes::Bytes,
    /// Start LSN of the segment file whose mapping holds them.
    pub segment: Lsn,
}

/// Owner of a payload slice inside a segment mapping (see [`SharedPayload`]).
struct MappedSlice {
    seg: Arc<Segment>,
    off: usize,
    len: usize,
}

impl AsRef<[u8]> for MappedSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the range was below the published write_lsn when this was made,
        // and published bytes of a mapping are never modified (segment.rs); the
        // Arc keeps the mapping alive.
        unsafe { &self.seg.bytes()[self.off..self.off + self.len] }
    }
}

fn segment_for(
    inner: &Inner,
    cached: &mut Option<Arc<Segment>>,
    generation: &mut u64,
    pos: u64,
) -> Result<(), WalError> {
    // Loaded after the caller's Acquire load of write_lsn: a write LSN published
    // after a truncation or reset comes with its generation bump.
    let g = inner.generation.load(Ordering::Acquire);
    if let Some(s) = cached {
        if s.start <= pos && pos < s.end() && g == *generation {
            return Ok(());
        }
    }
    let start = pos & !(inner.seg_size - 1);
    match inner.segments.read().get(&start) {
        Some(s) => {
            *cached = Some(s.clone());
            *generation = g;
            Ok(())
        }
        None => Err(WalError::NotRetained {
            requested: Lsn(pos),
            first: Lsn(inner.first_lsn.load(Ordering::Acquire)),
        }),
    }
}

fn check_range(inner: &Inner, from: u64) -> Result<u64, WalError> {
    let first = inner.first_lsn.load(Ordering::Acquire);
    let wl = inner.write_lsn.load(Ordering::Acquire);
    if from < first {
        return Err(WalError::NotRetained {
            requested: Lsn(from),
            first: Lsn(first),
        });
    }
    if from > wl {
        return Err(WalError::InvalidArgument(format!(
            "cannot read from {}: the WAL ends at {}",
            Lsn(from),
            Lsn(wl)
        )));
    }
    Ok(wl)
}

fn reason(e: Invalid) -> String {
    match e {
        Invalid::Zero => "zeroed bytes where a record must be".into(),
        Invalid::Bad(s) => s,
    }
}

impl WalReader {
    pub(crate) fn new(inner: Arc<Inner>, from: u64) -> Result<WalReader, WalError> {
        let wl = check_range(&inner, from)?;
        let mut seg = None;
        let mut generation = 0;
        if from < wl {
            segment_for(&inner, &mut seg, &mut generation, from)?;
            if let Some(s) = &seg {
                let off = from - s.start;
                let lim = wl.min(s.end()) - s.start;
                // SAFETY: bytes below the published write_lsn are immutable.
                let b = unsafe { &s.bytes()[off as usize..lim as usize] };
                if record::check(b, from, s.size - off, inner.max_record).is_err() {
                    return Err(WalError::InvalidArgument(format!(
                        "cannot read from {}: not a record boundary",
                        Lsn(from)
                    )));
                }
            }
        }
        Ok(WalReader {
            inner,
            pos: from,
            seg,
            generation,
            with_padding: false,
        })
    }

    /// Also yield PADDING records (raw mode, for inspection tools).
    pub fn with_padding(mut self, yes: bool) -> Self {
        self.with_padding = yes;
        self
    }

    /// LSN of the next record this reader returns.
    pub fn position(&self) -> Lsn {
        Lsn(self.pos)
    }

    /// The next record, None when caught up with the write LSN, or an error:
    /// `NotRetained` if its segment was removed, `Corruption` if a record fails its
    /// checks, `InvalidArgument` if the log was truncated below the reader.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<RecordRef<'_>, WalError>> {
        let inner = &*self.inner;
        let (start, h) = loop {
            let wl = inner.write_lsn.load(Ordering::Acquire);
            if self.pos == wl {
                return None;
            }
            if self.pos > wl {
                return Some(Err(WalError::InvalidArgument(format!(
                    "reader at {} is beyond the end of the WAL {} (the log was truncated)",
                    Lsn(self.pos),
                    Lsn(wl)
                ))));
            }
            if let Err(e) = segment_for(inner, &mut self.seg, &mut self.generation, self.pos) {
                return Some(Err(e));
            }
            let s = self.seg.as_ref()?;
            let off = self.pos - s.start;
            let lim = wl.min(s.end()) - s.start;
            // SAFETY: bytes below the published write_lsn are immutable.
            let b = unsafe { &s.bytes()[off as usize..lim as usize] };
            match record::check(b, self.pos, s.size - off, inner.max_record) {
                Ok(h) => {
                    let start = self.pos;
                    self.pos += h.total();
                    if h.kind == kind::PADDING && !self.with_padding {
                        continue;
                    }
                    break (start, h);
                }
                Err(e) => {
                    return Some(Err(WalError::Corruption {
                        file: s.path.clone(),
                        offset: off,
                        reason: reason(e),
                    }))
                }
            }
        };
        let s = self.seg.as_ref()?;
        let off = (start - s.start) as usize + HEADER_LEN;
        // SAFETY: bytes below the published write_lsn are immutable; the Arc held
        // by `self.seg` keeps the mapping alive for the borrow.
        let payload = unsafe { &s.bytes()[off..off + h.len as usize] };
        Some(Ok(RecordRef {
            lsn: Lsn(start),
            end: Lsn(start + h.total()),
            term: h.term,
            kind: h.kind,
            crc: h.crc,
            payload,
        }))
    }
}

impl WalReader {
    /// [`WalReader::next`], with the record's payload also as a [`SharedPayload`]
    /// (no copy: a share of the segment mapping; see there for what holding it
    /// keeps alive).
    #[allow(clippy::type_complexity)]
    pub fn next_shared(&mut self) -> Option<Result<(RecordRef<'_>, SharedPayload), WalError>> {
        let (lsn, end, term, kind, crc, len) = match self.next()? {
            Ok(r) => (r.lsn, r.end, r.term, r.kind, r.crc, r.payload.len()),
            Err(e) => return Some(Err(e)),
        };
        // `next` just read the record through `self.seg`.
        let s = self.seg.as_ref()?;
        let off = (lsn.0 - s.start) as usize + HEADER_LEN;
        let shared = SharedPayload {
            bytes: bytes::Bytes::from_owner(MappedSlice {
                seg: s.clone(),
                off,
                len,
            }),
            segment: Lsn(s.start),
        };
        // SAFETY: as in `next` (bytes below the published write_lsn, never modified).
        let payload = unsafe { &s.bytes()[off..off + len] };
        Some(Ok((
            RecordRef {
                lsn,
                end,
                term,
                kind,
                crc,
                payload,
            },
            shared,
        )))
    }
}

pub(crate) fn read_raw(
    inner: &Inner,
    from: u64,
    max_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<u64, WalError> {
    match raw_range(inner, from, max_bytes)? {
        None => Ok(from),
        Some((s, a, b, end)) => {
            // SAFETY: [a, b) is below the published write_lsn (raw_range).
            out.extend_from_slice(unsafe { &s.bytes()[a..b] });
            Ok(end)
        }
    }
}

/// [`read_raw`] without the copy: the raw bytes as a share of the segment mapping
/// (see [`SharedPayload`] for what holding it keeps alive), and the end LSN.
pub(crate) fn read_shared(
    inner: &Inner,
    from: u64,
    max_bytes: usize,
) -> Result<(u64, bytes::Bytes), WalError> {
    match raw_range(inner, from, max_bytes)? {
        None => Ok((from, bytes::Bytes::new())),
        Some((seg, off, b, end)) => Ok((
            end,
            bytes::Bytes::from_owner(MappedSlice {
                seg,
                off,
                len: b - off,
            }),
        )),
    }
}

/// A segment, a byte range `[a, b)` in it, and the LSN that range ends at.
type RawRange = (Arc<Segment>, usize, usize, u64);

/// The segment and byte range in it of the whole records `read_raw` would copy
/// from `from`, and their end LSN; None when nothing is there.
fn raw_range(inner: &Inner, from: u64, max_bytes: usize) -> Result<Option<RawRange>, WalError> {
    let wl = check_range(inner, from)?;
    if from == wl {
        return Ok(None);
    }
    let mut seg = None;
    segment_for(inner, &mut seg, &mut 0, from)?;
    let Some(s) = seg else {
        return Ok(None);
    };
    let lim = wl.min(s.end());
    // SAFETY: bytes below the published write_lsn are immutable.
    let bytes = unsafe { s.bytes() };
    let mut p = from;
    while p < lim {
        let off = (p - s.start) as usize;
        let ok = match record::peek(&bytes[off..]) {
            Some((l, total, _, _)) if l == p && p + total <= lim => Some(total),
            _ => None,
        };
        let Some(total) = ok else {
            if p == from {
                return Err(WalError::InvalidArgument(format!(
                    "cannot read from {}: not a record boundary",
                    Lsn(from)
                )));
            }
            return Err(WalError::Corruption {
                file: s.path.clone(),
                offset: off as u64,
                reason: "record header does not describe a record here".into(),
            });
        };
        if p > from && (p + total - from) as usize > max_bytes {
            break;
        }
        p += total;
    }
    let a = (from - s.start) as usize;
    let b = (p - s.start) as usize;
    Ok(Some((s, a, b, p)))
}
