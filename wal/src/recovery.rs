//! Recovery: scan every retained segment on open, decide where the log ends.
//!
//! Rules (docs/DESIGN.md "Recovery"):
//! * every record of every retained segment is CRC-checked;
//! * a sealed segment (any but the newest) must be covered by valid records from its
//!   first to its last byte;
//! * in the newest segment, the log ends at the first position that is not a valid
//!   record; if bytes there are not all zero (a torn write) they are cut off (zeroed
//!   durably) and logged; if a *valid* record exists after that position, the damage
//!   is not a torn tail but corruption of acknowledged data: an error, unless
//!   `repair` is set, in which case the log is truncated at the damage;
//! * trailing segments holding no record (preallocated ahead of the writer) are
//!   removed;
//! * a gap in segment names is corruption (or, with `repair`, the log ends before it).
//!
//! Recovery reads everything first and only then changes files, so an error leaves
//! the directory as it was for the operator to inspect.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use byteorder::{ByteOrder, LittleEndian as LE};
use tracing::{info, warn};

use crate::record::{self, kind, Invalid, HEADER_LEN};
use crate::segment::{self, Segment};
use crate::{Lsn, Term, WalError};

/// Result of scanning one segment from `from` (offset).
#[derive(Debug)]
pub(crate) struct Scan {
    /// Offset just past the last valid record.
    pub end: u64,
    /// Valid non-PADDING records.
    pub records: u64,
    /// Valid records of any kind.
    pub all_records: u64,
    /// (term, lsn) of the first record and of every record whose term differs from
    /// the previous one.
    pub terms: Vec<(Term, u64)>,
    /// Term of the last valid record (or the incoming `prev_term`).
    pub last_term: Term,
    /// First invalid position (offset) and why; None if valid up to the segment end.
    pub damage: Option<(u64, Invalid)>,
}

pub(crate) fn scan(seg: &Segment, from: u64, max_record: u64, prev_term: Term) -> Scan {
    // SAFETY: recovery runs before the WAL is shared; nobody writes concurrently.
    let bytes = unsafe { seg.bytes() };
    let mut off = from;
    let mut out = Scan {
        end: from,
        records: 0,
        all_records: 0,
        terms: Vec::new(),
        last_term: prev_term,
        damage: None,
    };
    let mut first = true;
    while off < seg.size {
        match record::check(
            &bytes[off as usize..],
            seg.start + off,
            seg.size - off,
            max_record,
        ) {
            Ok(h) => {
                if h.term < out.last_term {
                    out.damage = Some((
                        off,
                        Invalid::Bad(format!(
                            "record term {} is lower than the previous record's term {}",
                            h.term, out.last_term
                        )),
                    ));
                    break;
                }
                if first || h.term != out.last_term {
                    out.terms.push((h.term, seg.start + off));
                }
                first = false;
                out.last_term = h.term;
                out.all_records += 1;
                if h.kind != kind::PADDING {
                    out.records += 1;
                }
                off += h.total();
                out.end = off;
            }
            Err(e) => {
                out.damage = Some((off, e));
                break;
            }
        }
    }
    out
}

/// Scans `segs` (the first one from offset `first_from`) as one sequence of
/// [`scan`]s chained by the previous segment's last term, with the same results,
/// but segments are scanned in parallel (every record's CRC is checked at open:
/// on a node with gigabytes of WAL that is most of its start-up time).
///
/// Each segment is first scanned on its own as if no record preceded it; then a
/// sequential pass chains them: a segment whose first record's term is lower than
/// the previous segment's last term is scanned again with that term (which finds
/// the damage at its first record, as the sequential scan would), and a segment
/// without records inherits the previous last term.
pub(crate) fn scan_all(segs: &[Segment], first_from: u64, max_record: u64) -> Vec<Scan> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
        .min(segs.len().max(1));
    let from = |i: usize| if i == 0 { first_from } else { 0 };
    let mut scans: Vec<Option<Scan>> = (0..segs.len()).map(|_| None).collect();
    if threads <= 1 {
        for (i, seg) in segs.iter().enumerate() {
            scans[i] = Some(scan(seg, from(i), max_record, 0));
        }
    } else {
        // Workers take segments in order from a shared counter.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = parking_lot::Mutex::new(&mut scans);
        std::thread::scope(|sc| {
            for _ in 0..threads {
                sc.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= segs.len() {
                        break;
                    }
                    let s = scan(&segs[i], from(i), max_record, 0);
                    results.lock()[i] = Some(s);
                });
            }
        });
    }
    let mut out = Vec::with_capacity(segs.len());
    let mut prev_term = 0;
    for (i, s) in scans.into_iter().enumerate() {
        let mut s = s.unwrap_or_else(|| scan(&segs[i], from(i), max_record, prev_term));
        if s.terms.first().is_some_and(|&(t, _)| t < prev_term) {
            s = scan(&segs[i], from(i), max_record, prev_term);
        } else if s.all_records == 0 {
            s.last_term = prev_term;
        }
        prev_term = s.last_term;
        out.push(s);
    }
    out
}

/// Offset of the first non-zero byte in `[from, size)`, if any.
pub(crate) fn first_nonzero(seg: &Segment, from: u64) -> Option<u64> {
    // SAFETY: see `scan`.
    let bytes = unsafe { seg.bytes() };
    first_nonzero_in(&bytes[from as usize..]).map(|p| from + p as u64)
}

/// Index of the first non-zero byte of `tail`, if any (word-at-a-time: segments
/// are mostly zeros past the end of the log).
pub(crate) fn first_nonzero_in(tail: &[u8]) -> Option<usize> {
    let mut i = 0usize;
    // word-at-a-time over 64-byte blocks
    while i + 64 <= tail.len() {
        let blk = &tail[i..i + 64];
        let mut acc = 0u64;
        for c in blk.chunks_exact(8) {
            acc |= LE::read_u64(c);
        }
        if acc != 0 {
            break;
        }
        i += 64;
    }
    tail[i..].iter().position(|&b| b != 0).map(|p| i + p)
}

/// Index of the last non-zero byte of `bytes`, if any (word-at-a-time, as
/// [`first_nonzero_in`]).
fn last_nonzero_in(bytes: &[u8]) -> Option<usize> {
    let mut end = bytes.len();
    while end >= 64 {
        let blk = &bytes[end - 64..end];
        let mut acc = 0u64;
        for c in blk.chunks_exact(8) {
            acc |= LE::read_u64(c);
        }
        if acc != 0 {
            break;
        }
        end -= 64;
    }
    bytes[..end].iter().rposition(|&b| b != 0)
}

/// Offset of a valid record somewhere in `(after, size)`, if any.
pub(crate) fn valid_after(seg: &Segment, after: u64, max_record: u64) -> Option<u64> {
    let nz = first_nonzero(seg, after)?;
    // SAFETY: see `scan`.
    let bytes = unsafe { seg.bytes() };
    // A record's header starts at most HEADER_LEN bytes before its first non-zero byte.
    let mut c = (nz.saturating_sub(HEADER_LEN as u64) / 8 * 8).max(after + 8);
    while c + HEADER_LEN as u64 <= seg.size {
        let l = LE::read_u64(&bytes[c as usize + 8..c as usize + 16]);
        if l == seg.start + c
            && record::check(
                &bytes[c as usize..],
                seg.start + c,
                seg.size - c,
                max_record,
            )
            .is_ok()
        {
            return Some(c);
        }
        c += 8;
    }
    None
}

pub(crate) struct Recovered {
    /// Retained segments, ascending and contiguous; the last one is the writer's.
    pub segments: Vec<Arc<Segment>>,
    pub log_start: u64,
    pub write_lsn: u64,
    pub records: u64,
    /// (term, lsn) transitions among retained records.
    pub terms: Vec<(Term, u64)>,
    pub cut: Option<(Lsn, Lsn)>,
    pub repaired_at: Option<Lsn>,
}

fn reason(i: &Invalid) -> String {
    match i {
        Invalid::Zero => "zeroed (never written) bytes where a record must be".into(),
        Invalid::Bad(s) => s.clone(),
    }
}

/// The error for a `wal_start` file holding an LSN no log can start at (damage: a
/// reset only ever records a record boundary).
pub(crate) fn bad_start_file(dir: &Path, lsn: u64) -> WalError {
    WalError::Corruption {
        file: dir.join(crate::wal::START_FILE),
        offset: 0,
        reason: format!(
            "log start {} recorded by reset is not a possible record boundary (8-byte \
             aligned, not in the last {HEADER_LEN} bytes of a segment)",
            Lsn(lsn)
        ),
    }
}

/// Recovers the segments found in `dir`. `found` is (start, path) ascending and
/// non-empty; `start_file` is the LSN recorded by `reset`, if any.
pub(crate) fn recover(
    dir: &Path,
    seg_size: u64,
    max_record: u64,
    repair: bool,
    found: Vec<(u64, PathBuf)>,
    start_file: Option<u64>,
) -> Result<Recovered, WalError> {
    let mut segs = Vec::with_capacity(found.len());
    for (start, path) in &found {
        segs.push(Segment::open(path, *start, seg_size)?);
    }
    let first_start = segs[0].start;
    let log_start = match start_file {
        Some(x) if x & !(seg_size - 1) == first_start => {
            if !crate::wal::possible_log_start(x, seg_size) {
                return Err(bad_start_file(dir, x));
            }
            x
        }
        Some(x) if x < first_start => first_start,
        Some(x) => {
            return Err(WalError::Corruption {
                file: dir.join(crate::wal::START_FILE),
                offset: 0,
                reason: format!(
                    "log start {} recorded by reset lies beyond the first segment {}",
                    Lsn(x),
                    segs[0].path.display()
                ),
            })
        }
        None => first_start,
    };

    // Gaps in the sequence of segments.
    let mut n = segs.len();
    let mut gap_repaired = false;
    for i in 1..segs.len() {
        if segs[i].start != segs[i - 1].start + seg_size {
            let why = format!(
                "segment {} is missing before this one",
                segment::file_name(segs[i - 1].start + seg_size)
            );
            if !repair {
                return Err(WalError::Corruption {
                    file: segs[i].path.clone(),
                    offset: 0,
                    reason: why,
                });
            }
            warn!(
                file = %segs[i].path.display(),
                reason = %why,
                "repair=true: the WAL ends before the missing segment; {} later segment file(s) are removed",
                segs.len() - i
            );
            n = i;
            gap_repaired = true;
            break;
        }
    }
    let mut damage_at: Option<(usize, u64, String)> = None;

    // Scan everything (read-only), segments in parallel.
    let scans = scan_all(&segs[..n], log_start - first_start, max_record);

    // Trailing segments with no record and nothing valid in them were preallocated
    // ahead of the writer: not part of the log.
    let mut newest = n - 1;
    while newest > 0 && scans[newest].all_records == 0 {
        let off = scans[newest].damage.as_ref().map(|d| d.0).unwrap_or(0);
        if valid_after(&segs[newest], off, max_record).is_some() {
            break;
        }
        newest -= 1;
    }

    // Sealed segments must be valid end to end.
    for (i, s) in scans.iter().enumerate().take(newest) {
        if let Some((off, why)) = &s.damage {
            damage_at = Some((i, *off, format!("in a sealed segment: {}", reason(why))));
            break;
        }
    }
    let mut cut: Option<(Lsn, Lsn)> = None;
    let mut end_off;
    if damage_at.is_none() {
        let seg = &segs[newest];
        end_off = scans[newest].end;
        if let Some((off, why)) = &scans[newest].damage {
            if first_nonzero(seg, *off).is_some() {
                if let Some(v) = valid_after(seg, *off, max_record) {
                    damage_at = Some((
                        newest,
                        *off,
                        format!(
                            "{} (a valid record follows at offset {v}, so this is not a torn tail)",
                            reason(why)
                        ),
                    ));
                } else {
                    cut = Some((
                        Lsn(seg.start + *off),
                        Lsn(seg.start + last_nonzero_end(seg)),
                    ));
                }
            }
        }
    } else {
        end_off = 0;
    }

    let mut repaired_at = None;
    if gap_repaired {
        repaired_at = Some(Lsn(segs[newest].start + end_off));
    }
    if let Some((i, off, why)) = damage_at {
        let seg = &segs[i];
        if !repair {
            return Err(WalError::Corruption {
                file: seg.path.clone(),
                offset: off,
                reason: why,
            });
        }
        warn!(
            file = %seg.path.display(),
            offset = off,
            lsn = %Lsn(seg.start + off),
            reason = %why,
            "WAL damage found and repair=true: truncating the log at {} ({} at byte {off}); \
             every record from there on is discarded",
            Lsn(seg.start + off),
            seg.path.display()
        );
        newest = i;
        end_off = off.min(scans.get(i).map(|s| s.end).unwrap_or(off));
        repaired_at = Some(Lsn(seg.start + end_off));
        if first_nonzero(seg, end_off).is_some() {
            cut = Some((
                Lsn(seg.start + end_off),
                Lsn(seg.start + last_nonzero_end(seg)),
            ));
        }
    }

    // Apply: remove segments after the newest, cut the newest's tail.
    let mut removed_any = false;
    for seg in segs.iter().take(n).skip(newest + 1) {
        let has_data = first_nonzero(seg, 0).is_some();
        if has_data {
            warn!(file = %seg.path.display(), "removing WAL segment beyond the recovered end of the log");
        } else {
            info!(file = %seg.path.display(), "removing empty preallocated WAL segment");
        }
        std::fs::remove_file(&seg.path).map_err(|e| WalError::io(&seg.path, e))?;
        removed_any = true;
    }
    // Files after a gap (not scanned) are also dropped when repairing.
    for (_, path) in found.iter().skip(n) {
        warn!(file = %path.display(), "repair=true: removing WAL segment after a missing segment");
        std::fs::remove_file(path).map_err(|e| WalError::io(path, e))?;
        removed_any = true;
    }
    if removed_any {
        segment::sync_dir(dir)?;
    }
    segs.truncate(newest + 1);
    let seg = &segs[newest];
    if let Some((from, to)) = cut {
        if repaired_at.is_none() {
            warn!(
                file = %seg.path.display(),
                from = %from,
                to = %to,
                "torn write at the end of the newest WAL segment: cutting [{from}, {to}) ({} bytes \
                 of a record that was never completely written, so never flushed); the log \
                 continues at {from}",
                to.0 - from.0
            );
        }
        // SAFETY: recovery runs before the WAL is shared.
        unsafe { seg.zero_tail_durably(end_off)? };
    }
    seg.advise_append(end_off);
    seg.prefault_read(end_off);

    let mut records = 0;
    let mut terms = Vec::new();
    for (i, s) in scans.iter().enumerate().take(newest + 1) {
        if i < newest {
            records += s.records;
            terms.extend_from_slice(&s.terms);
        } else {
            // only what lies before end_off
            records += if repaired_at.is_some() && end_off < s.end {
                count_records(
                    &segs[i],
                    if i == 0 { log_start - first_start } else { 0 },
                    end_off,
                )
            } else {
                s.records
            };
            terms.extend(s.terms.iter().filter(|t| t.1 < seg.start + end_off));
        }
    }
    let write_lsn = seg.start + end_off;
    Ok(Recovered {
        segments: segs.into_iter().map(Arc::new).collect(),
        log_start,
        write_lsn,
        records,
        terms,
        cut,
        repaired_at,
    })
}

/// End (offset, 8-aligned) of the last non-zero byte of the segment.
fn last_nonzero_end(seg: &Segment) -> u64 {
    // SAFETY: see `scan`.
    let bytes = unsafe { seg.bytes() };
    match last_nonzero_in(bytes) {
        Some(p) => (p as u64 + 1).div_ceil(8) * 8,
        None => 0,
    }
}

fn count_records(seg: &Segment, from: u64, to: u64) -> u64 {
    // SAFETY: see `scan`.
    let bytes = unsafe { seg.bytes() };
    let mut off = from;
    let mut n = 0;
    while off < to {
        match record::peek(&bytes[off as usize..]) {
            Some((_, total, k, _)) => {
                if k != kind::PADDING {
                    n += 1;
                }
                off += total;
            }
            None => break,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Wal, WalOptions};

    /// Found by the `wal_recovery` fuzz target (docs/robustness.md): a `wal_start`
    /// of 0/FFFF8 (8 bytes before a segment end) was accepted, and the first append
    /// then padded the segment with a negative length (overflow panic; in a release
    /// build a hang hashing 2^64 zero bytes); 0/7 left every record unaligned.
    #[test]
    fn wal_start_no_log_can_start_at_is_corruption() {
        let opts = WalOptions {
            segment_size: 1 << 20,
            touch_ahead: 0,
            ..Default::default()
        };
        for bad in ["0/FFFF8", "0/FFFE8", "0/7"] {
            for with_segments in [true, false] {
                let dir = tempfile::tempdir().unwrap();
                if with_segments {
                    let (w, _) = Wal::open(dir.path(), opts.clone()).unwrap();
                    drop(w);
                }
                std::fs::write(dir.path().join(crate::wal::START_FILE), format!("{bad}\n"))
                    .unwrap();
                match Wal::open(dir.path(), opts.clone()) {
                    Err(WalError::Corruption { file, reason, .. }) => {
                        assert!(file.ends_with(crate::wal::START_FILE), "{bad}");
                        assert!(reason.contains("record boundary"), "{bad}: {reason}");
                    }
                    other => panic!("wal_start {bad}: {:?}", other.map(|r| r.1)),
                }
            }
        }
        // 32 bytes before the end is a boundary: the next append pads and rolls over.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(crate::wal::START_FILE), "0/FFFE0\n").unwrap();
        let (w, r) = Wal::open(dir.path(), opts.clone()).unwrap();
        assert_eq!(r.write_lsn, Lsn(0xFFFE0));
        let a = w.append(1, 16, b"next segment").unwrap();
        assert_eq!(a.lsn, Lsn(1 << 20));
        w.flush(a.end).unwrap();
        drop(w);
        let (_, r) = Wal::open(dir.path(), opts).unwrap();
        assert_eq!((r.write_lsn, r.records), (a.end, 1));
    }

    /// The parallel scan chains segments as the sequential one did: a sealed-off
    /// segment whose records carry a lower term than the previous segment's last
    /// record is damage at its first record (each segment alone is consistent, so
    /// only the chaining pass can see it).
    #[test]
    fn term_going_down_across_a_segment_boundary_is_found() {
        let opts = WalOptions {
            segment_size: 1 << 20,
            touch_ahead: 0,
            ..Default::default()
        };
        let high = tempfile::tempdir().unwrap();
        let low = tempfile::tempdir().unwrap();
        for (dir, term) in [(high.path(), 5u64), (low.path(), 1u64)] {
            let (w, _) = Wal::open(dir, opts.clone()).unwrap();
            let mut end = Lsn(0);
            while end.0 < (3 << 20) + (1 << 19) {
                end = w.append(term, 16, &[7u8; 3000]).unwrap().end;
            }
            w.flush(end).unwrap();
        }
        // Both logs open on their own, every segment checked in parallel.
        let (w, r) = Wal::open(high.path(), opts.clone()).unwrap();
        assert_eq!(r.segments, 4);
        drop(w);
        // Segment 2 of the term-1 log replaces segment 2 of the term-5 log.
        let name = crate::segment::file_name(2 << 20);
        std::fs::copy(low.path().join(&name), high.path().join(&name)).unwrap();
        match Wal::open(high.path(), opts) {
            Err(WalError::Corruption {
                file,
                offset,
                reason,
            }) => {
                assert!(file.ends_with(&name), "{}", file.display());
                assert_eq!(offset, 0);
                assert!(reason.contains("lower than the previous"), "{reason}");
            }
            other => panic!("expected corruption at {name}: {:?}", other.map(|x| x.1)),
        }
    }

    #[test]
    fn nonzero_scans_match_bytewise() {
        for len in [0usize, 1, 63, 64, 65, 200, 4096] {
            let zeros = vec![0u8; len];
            assert_eq!(first_nonzero_in(&zeros), None);
            assert_eq!(last_nonzero_in(&zeros), None);
            for at in [0, len / 3, len / 2, len.saturating_sub(1)] {
                if at >= len {
                    continue;
                }
                let mut b = zeros.clone();
                b[at] = 1;
                if at + 70 < len {
                    b[at + 70] = 2;
                }
                let first = b.iter().position(|&x| x != 0);
                let last = b.iter().rposition(|&x| x != 0);
                assert_eq!(first_nonzero_in(&b), first, "len {len} at {at}");
                assert_eq!(last_nonzero_in(&b), last, "len {len} at {at}");
            }
        }
    }
}
