//! Read-only inspection of a WAL directory (`walship wal inspect`, like
//! `pg_waldump`): every record of every segment is decoded and CRC-checked,
//! nothing is written, no lock is taken, nothing is repaired.
//!
//! | where | what is found | reported as |
//! |---|---|---|
//! | sealed segment | any invalid byte range | [`Problem`] naming file and offset |
//! | newest segment | zeros after the last valid record | the clean end of the log |
//! | newest segment | non-zero bytes after the last valid record | [`Problem`] (a torn tail: `Wal::open` cuts it; damage if a valid record follows) |
//! | between segments | a missing segment | [`Problem`] |

use std::path::{Path, PathBuf};

use crate::record::{self, kind, Invalid};
use crate::{recovery, segment, Lsn, Term, WalError};

/// One record as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectedRecord {
    /// Start LSN.
    pub lsn: Lsn,
    /// End LSN (first byte after the record).
    pub end: Lsn,
    /// Term of the writer.
    pub term: Term,
    /// Record kind.
    pub kind: u8,
    /// Payload length in bytes.
    pub len: u32,
    /// Stored CRC-32.
    pub crc: u32,
}

/// Damage found by [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The segment file.
    pub file: PathBuf,
    /// Byte offset in that file.
    pub offset: u64,
    /// The LSN at that offset.
    pub lsn: Lsn,
    /// What is wrong.
    pub reason: String,
}

/// Summary of an inspection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    /// Segment files found.
    pub segments: usize,
    /// Valid records (padding excluded).
    pub records: u64,
    /// Valid padding records.
    pub padding: u64,
    /// First retained LSN.
    pub first_lsn: Lsn,
    /// End of the valid log.
    pub end_lsn: Lsn,
    /// Term of the last valid record.
    pub last_term: Term,
    /// Every problem found, in LSN order.
    pub problems: Vec<Problem>,
}

/// Inspect the WAL in `dir` without changing it. `on_record` sees every valid
/// record (padding included) at or after `from`, in LSN order. Errors only when
/// the directory or a file cannot be read; damage is reported in
/// [`Inspection::problems`].
pub fn inspect(
    dir: &Path,
    from: Option<Lsn>,
    mut on_record: impl FnMut(&InspectedRecord),
) -> Result<Inspection, WalError> {
    let mut segs: Vec<(u64, PathBuf)> = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| WalError::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| WalError::io(dir, e))?;
        let name = entry.file_name();
        if let Some(start) = name.to_str().and_then(segment::parse_file_name) {
            segs.push((start, entry.path()));
        }
    }
    segs.sort();
    let mut out = Inspection {
        segments: segs.len(),
        ..Default::default()
    };
    if segs.is_empty() {
        return Ok(out);
    }
    let log_start = match std::fs::read_to_string(dir.join(crate::wal::START_FILE)) {
        Ok(t) => t.trim().parse::<Lsn>().ok().map(|l| l.0),
        Err(_) => None,
    };
    let from = from.map(|l| l.0).unwrap_or(0);
    // Segments prepared ahead of the writer are all zeros: the newest segment is
    // the last one holding any non-zero byte.
    let mut newest_idx = 0;
    for (i, (_, path)) in segs.iter().enumerate().rev() {
        let bytes = std::fs::read(path).map_err(|e| WalError::io(path, e))?;
        if recovery::first_nonzero_in(&bytes).is_some() {
            newest_idx = i;
            break;
        }
    }
    let mut expected_next: Option<u64> = None;
    for (i, (start, path)) in segs.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|e| WalError::io(path, e))?;
        let size = bytes.len() as u64;
        if size < (1 << 20) || !size.is_power_of_two() || start % size != 0 {
            out.problems.push(Problem {
                file: path.clone(),
                offset: 0,
                lsn: Lsn(*start),
                reason: format!("segment file of {size} bytes is not a valid segment (a power of two >= 1 MiB, aligned to its start LSN)"),
            });
            continue;
        }
        if let Some(next) = expected_next {
            if *start != next {
                out.problems.push(Problem {
                    file: path.clone(),
                    offset: 0,
                    lsn: Lsn(next),
                    reason: format!(
                        "segment(s) missing between {} and {}",
                        Lsn(next),
                        Lsn(*start)
                    ),
                });
            }
        }
        expected_next = Some(start + size);
        let newest = i >= newest_idx;
        let mut off = match log_start {
            Some(ls) if i == 0 && ls >= *start && ls < start + size => ls - start,
            _ => 0,
        };
        if i == 0 {
            out.first_lsn = Lsn(start + off);
        }
        let max_record = record::max_record_len(size);
        while off < size {
            match record::check(&bytes[off as usize..], start + off, size - off, max_record) {
                Ok(h) => {
                    let rec = InspectedRecord {
                        lsn: Lsn(start + off),
                        end: Lsn(start + off + h.total()),
                        term: h.term,
                        kind: h.kind,
                        len: h.len,
                        crc: h.crc,
                    };
                    if rec.lsn.0 >= from {
                        on_record(&rec);
                    }
                    if h.kind == kind::PADDING {
                        out.padding += 1;
                    } else {
                        out.records += 1;
                    }
                    out.last_term = h.term;
                    off += h.total();
                    out.end_lsn = Lsn(start + off);
                }
                Err(Invalid::Zero) if newest => {
                    if let Some(p) = recovery::first_nonzero_in(&bytes[off as usize..]) {
                        let at = off + p as u64;
                        out.problems.push(Problem {
                            file: path.clone(),
                            offset: at,
                            lsn: Lsn(start + at),
                            reason: "non-zero bytes after the end of the log (a torn write, or damage if valid records follow)".into(),
                        });
                    }
                    break;
                }
                Err(e) => {
                    let reason = match e {
                        Invalid::Zero => "zeroed bytes inside a sealed segment".to_string(),
                        Invalid::Bad(r) => r,
                    };
                    out.problems.push(Problem {
                        file: path.clone(),
                        offset: off,
                        lsn: Lsn(start + off),
                        reason: if newest {
                            format!("{reason} (a torn tail if nothing valid follows: walship cuts it at start)")
                        } else {
                            reason
                        },
                    });
                    break;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Wal, WalOptions};

    fn opts() -> WalOptions {
        WalOptions {
            segment_size: 1 << 20,
            ..Default::default()
        }
    }

    #[test]
    fn clean_log_has_no_problems_and_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), opts()).unwrap();
        let mut ends = Vec::new();
        for i in 0..3000u32 {
            ends.push(wal.append(1, 16, &vec![i as u8; 700]).unwrap().end);
        }
        wal.flush(wal.write_lsn()).unwrap();
        let end = wal.write_lsn();
        drop(wal);
        let mut seen = Vec::new();
        let r = inspect(dir.path(), None, |rec| {
            if rec.kind != kind::PADDING {
                seen.push(rec.end)
            }
        })
        .unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(seen, ends);
        assert_eq!(r.records, 3000);
        assert_eq!(r.end_lsn, end);
        assert!(r.segments >= 3);
        // --from skips earlier records
        let mut n = 0;
        inspect(dir.path(), Some(ends[1000]), |rec| {
            if rec.kind != kind::PADDING {
                n += 1
            }
        })
        .unwrap();
        assert_eq!(n, 1999);
    }

    #[test]
    fn damage_in_a_sealed_segment_names_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), opts()).unwrap();
        for i in 0..3000u32 {
            wal.append(1, 16, &vec![i as u8; 700]).unwrap();
        }
        wal.flush(wal.write_lsn()).unwrap();
        drop(wal);
        let first = dir.path().join(segment::file_name(0));
        let mut b = std::fs::read(&first).unwrap();
        b[5000] ^= 0x10;
        std::fs::write(&first, &b).unwrap();
        let r = inspect(dir.path(), None, |_| {}).unwrap();
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].file, first);
        assert!(r.problems[0].offset <= 5000 && r.problems[0].offset + 800 > 5000);
    }

    #[test]
    fn garbage_after_the_end_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), opts()).unwrap();
        let end = wal.append(1, 16, b"hello").unwrap().end;
        wal.flush(end).unwrap();
        drop(wal);
        let seg = dir.path().join(segment::file_name(0));
        let mut b = std::fs::read(&seg).unwrap();
        b[end.0 as usize + 10] = 7;
        std::fs::write(&seg, &b).unwrap();
        let r = inspect(dir.path(), None, |_| {}).unwrap();
        assert_eq!(r.records, 1);
        assert_eq!(r.problems.len(), 1);
        // The header at the end of the log is no longer all zero: a torn tail there.
        assert_eq!(r.problems[0].offset, end.0);
    }
}
