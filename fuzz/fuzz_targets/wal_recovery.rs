//! `wal_recovery`: recovery (`Wal::open`) of a WAL directory built from arbitrary
//! bytes: up to four 1 MiB segment files (arbitrary content, or a mutation of
//! real segments from the seed corpus), `term_history` and `wal_start` files.
//!
//! Input: [`RecoveryInput`]. Checks:
//! * `wal::inspect::inspect` and `Wal::open` never panic;
//! * when `open` fails, the directory is exactly as it was (recovery reads
//!   everything before it changes anything), apart from the `LOCK` file;
//! * when it succeeds, every record from the first LSN to the write LSN reads
//!   back, their count is the report's, the term history ends with the report's
//!   last term, one more record can be appended and flushed, and a second open
//!   (without repair) finds a clean log ending just after that record.
#![no_main]

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use wal::{Wal, WalOptions};
use walship_fuzz::format::{RecoveryFile, RecoveryInput, MAX_SEGMENTS, SEGMENT_SIZE};

/// The files the target wrote: name -> (size, leading bytes; the rest is zero).
type Written = BTreeMap<String, (u64, Vec<u8>)>;

static ZEROS: [u8; 4096] = [0; 4096];

/// Whether the directory holds exactly `files` (the `LOCK` file aside).
fn unchanged(dir: &Path, files: &Written) -> bool {
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("dir entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "LOCK" {
            continue;
        }
        n += 1;
        let Some((size, head)) = files.get(&name) else {
            return false;
        };
        let now = std::fs::read(e.path()).expect("read file");
        if now.len() as u64 != *size
            || now[..head.len()] != head[..]
            || !now[head.len()..]
                .chunks(ZEROS.len())
                .all(|c| c == &ZEROS[..c.len()])
        {
            return false;
        }
    }
    n == files.len()
}

/// Writes the input's files; segments are sparse (tmpfs holes read as zeros).
fn build(dir: &Path, input: &RecoveryInput) -> Written {
    let mut segs: BTreeMap<u8, (bool, Vec<u8>)> = BTreeMap::new();
    let mut last: Option<u8> = None;
    let mut out = Written::new();
    for f in &input.files {
        match f {
            RecoveryFile::Segment {
                index,
                exact_size,
                data,
            } => {
                let index = index % MAX_SEGMENTS;
                let mut d = data.clone();
                if !exact_size {
                    d.truncate(SEGMENT_SIZE as usize);
                }
                segs.insert(index, (*exact_size, d));
                last = Some(index);
            }
            RecoveryFile::Patch { offset, data } => {
                if let Some((exact, seg)) = last.and_then(|i| segs.get_mut(&i)) {
                    let size = if *exact {
                        seg.len()
                    } else {
                        SEGMENT_SIZE as usize
                    };
                    if size > 0 {
                        let at = *offset as usize % size;
                        let n = data.len().min(size - at);
                        if seg.len() < at + n {
                            seg.resize(at + n, 0);
                        }
                        seg[at..at + n].copy_from_slice(&data[..n]);
                    }
                }
            }
            RecoveryFile::TermHistory(t) => {
                out.insert(wal::TERM_HISTORY_FILE.into(), (t.len() as u64, t.clone()));
            }
            RecoveryFile::WalStart(t) => {
                out.insert("wal_start".into(), (t.len() as u64, t.clone()));
            }
        }
    }
    for (i, (exact, d)) in segs {
        let name = format!("{:016X}.wal", u64::from(i) * SEGMENT_SIZE);
        let size = if exact { d.len() as u64 } else { SEGMENT_SIZE };
        out.insert(name, (size, d));
    }
    for (name, (size, head)) in &out {
        let f = std::fs::File::create(dir.join(name)).expect("create file");
        f.set_len(*size).expect("size file");
        f.write_all_at(head, 0).expect("write file");
    }
    out
}

fn opts(repair: bool) -> WalOptions {
    WalOptions {
        segment_size: SEGMENT_SIZE,
        repair,
        touch_ahead: 0,
        zero_fill: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let input = RecoveryInput::decode(data);
    let dir = walship_fuzz::scratch_dir().join("wal_recovery");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the WAL directory");
    let written = build(&dir, &input);

    let _ = wal::inspect::inspect(&dir, None, |_| {});

    let (w, rep) = match Wal::open(&dir, opts(input.repair)) {
        Ok(x) => x,
        Err(_) => {
            assert!(
                unchanged(&dir, &written),
                "a failed Wal::open changed the directory"
            );
            return;
        }
    };
    assert!(rep.first_lsn <= rep.write_lsn);
    assert_eq!(w.write_lsn(), rep.write_lsn);
    assert_eq!(w.first_lsn(), rep.first_lsn);
    assert_eq!(w.last_term(), rep.last_term);
    assert_eq!(
        w.term_history().last().map(|t| t.term).unwrap_or(0),
        rep.last_term
    );
    // Every retained record reads back, up to the write LSN.
    let mut records = 0u64;
    {
        let mut r = w
            .reader(rep.first_lsn)
            .expect("reader at the first LSN")
            .with_padding(true);
        let mut end = rep.first_lsn;
        while let Some(rec) = r.next() {
            let rec = rec.expect("a recovered record must read back");
            assert!(rec.end <= rep.write_lsn);
            end = rec.end;
            if rec.kind != wal::kind::PADDING {
                records += 1;
            }
        }
        assert_eq!(
            end, rep.write_lsn,
            "the reader stopped before the end of the log"
        );
    }
    assert_eq!(records, rep.records, "records read back != recovery report");
    // The recovered log accepts an append, and reopens clean.
    let term = w.last_term().max(1);
    let a = w
        .append(term, 16, b"after recovery")
        .expect("append after recovery");
    assert_eq!(a.lsn.0.max(rep.write_lsn.0), a.lsn.0);
    w.flush(a.end).expect("flush after recovery");
    drop(w);
    let (w2, rep2) = Wal::open(&dir, opts(false)).expect("reopen a recovered WAL");
    assert_eq!(rep2.write_lsn, a.end, "reopen found another end");
    assert_eq!(rep2.cut_tail, None, "reopen cut a tail");
    assert_eq!(rep2.repaired_at, None);
    assert_eq!(rep2.records, rep.records + 1);
    assert_eq!(rep2.last_term, term);
    drop(w2);
});
