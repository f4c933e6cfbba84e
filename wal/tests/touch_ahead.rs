//! The touch-ahead thread never changes a byte: appends (without flushes, so it is
//! busy ahead of the writer), concurrent reads, truncation and reset, then every
//! segment file is compared byte for byte with an independently encoded image.

mod common;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use wal::*;

const HDR: u64 = 32;

/// Independent model of the log: the expected bytes of every segment.
struct Model {
    segs: std::collections::BTreeMap<u64, Vec<u8>>,
    pos: u64,
}

impl Model {
    fn new(start: u64) -> Model {
        Model {
            segs: Default::default(),
            pos: start,
        }
    }

    fn seg(&mut self, start: u64) -> &mut Vec<u8> {
        self.segs
            .entry(start)
            .or_insert_with(|| vec![0u8; SEG as usize])
    }

    fn put(&mut self, lsn: u64, term: Term, kind: u8, payload: &[u8]) {
        let mut b = Vec::new();
        record::encode(Lsn(lsn), term, kind, payload, &mut b);
        let start = lsn / SEG * SEG;
        let off = (lsn - start) as usize;
        self.seg(start)[off..off + b.len()].copy_from_slice(&b);
    }

    /// Mirrors the WAL's placement rule: pad the segment if the record does not fit
    /// or would leave less than a header.
    fn append(&mut self, term: Term, payload: &[u8]) -> u64 {
        let total = record::aligned_len(payload.len());
        let end = self.pos / SEG * SEG + SEG;
        let rem = end - self.pos;
        if !(total <= rem && (total == rem || rem - total >= HDR)) {
            let zeros = vec![0u8; (rem - HDR) as usize];
            self.put(self.pos, term, kind::PADDING, &zeros);
            self.pos = end;
        }
        let lsn = self.pos;
        self.put(lsn, term, 16, payload);
        self.pos += total;
        lsn
    }

    fn truncate(&mut self, lsn: u64) {
        let start = lsn / SEG * SEG;
        self.segs.retain(|&s, _| s <= start);
        let off = (lsn - start) as usize;
        self.seg(start)[off..].fill(0);
        self.pos = lsn;
    }

    fn check(&self, dir: &std::path::Path) {
        // Segments prepared ahead (not in the model) must be all zero.
        for f in segment_files(dir) {
            let start = self.segs.keys().copied().find(|s| f == seg_path(dir, *s));
            if start.is_none() {
                let got = std::fs::read(&f).unwrap();
                assert!(
                    got.iter().all(|&b| b == 0),
                    "{} is not all zero",
                    f.display()
                );
            }
        }
        for (start, want) in &self.segs {
            let got = std::fs::read(seg_path(dir, *start)).unwrap();
            if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
                panic!(
                    "segment {start:#x} differs at byte {i}: {} != expected {}",
                    got[i], want[i]
                );
            }
        }
    }
}

fn run(window: u64) {
    let d = tempfile::tempdir().unwrap();
    let o = WalOptions {
        touch_ahead: window,
        ..opts()
    };
    let (w, _) = Wal::open(d.path(), o.clone()).unwrap();
    let w = Arc::new(w);
    let mut m = Model::new(0);
    // A reader follows the writer and checks every record's payload.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (w, stop) = (w.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut r = w.reader(Lsn(0)).unwrap();
            let mut n = 0u64;
            loop {
                match r.next() {
                    Some(rec) => {
                        let rec = rec.unwrap();
                        assert_eq!(rec.payload, payload(n, rec.payload.len()));
                        n += 1;
                    }
                    None if stop.load(Ordering::Acquire) => return n,
                    None => std::thread::yield_now(),
                }
            }
        })
    };
    // Phase 1: ~3.5 segments without flushes (the toucher runs ahead), mixed sizes.
    let mut n = 0u64;
    while w.write_lsn().0 < 3 * SEG + SEG / 2 {
        let p = payload(n, [100usize, 4096, 37, 9000, 4000][n as usize % 5]);
        let a = w.append(2, 16, &p).unwrap();
        assert_eq!(a.lsn.0, m.append(2, &p));
        n += 1;
    }
    stop.store(true, Ordering::Release);
    assert_eq!(reader.join().unwrap(), n);
    w.flush(w.write_lsn()).unwrap();
    m.check(d.path());

    // Phase 2: truncate in the middle of the newest segment while pages beyond the
    // write position have been touched, append again, compare.
    let mut r = w.reader(Lsn(3 * SEG)).unwrap();
    let cut = (0..20)
        .map(|_| r.next().unwrap().unwrap().lsn)
        .last()
        .unwrap();
    drop(r);
    w.truncate_after(cut).unwrap();
    m.truncate(cut.0);
    m.check(d.path());
    while w.write_lsn().0 < 4 * SEG + SEG / 4 {
        let p = payload(n, 3000 + (n as usize % 7) * 500);
        let a = w.append(2, 16, &p).unwrap();
        assert_eq!(a.lsn.0, m.append(2, &p));
        n += 1;
    }
    w.flush(w.write_lsn()).unwrap();
    m.check(d.path());

    // Phase 3: reset to a later start, append, compare; then reopen (recovery sees
    // zeros beyond the end).
    let start = 6 * SEG + 4096;
    w.reset(Lsn(start)).unwrap();
    let mut m = Model::new(start);
    m.seg(6 * SEG);
    for i in 0..600u64 {
        let p = payload(i, 2000 + (i as usize % 3) * 1000);
        let a = w.append(3, 16, &p).unwrap();
        assert_eq!(a.lsn.0, m.append(3, &p));
    }
    let end = w.write_lsn();
    w.flush(end).unwrap();
    drop(w);
    m.check(d.path());
    let (w, rep) = Wal::open(d.path(), o).unwrap();
    assert_eq!(rep.write_lsn, end);
    assert_eq!(rep.records, 600);
    assert_eq!(rep.cut_tail, None);
    drop(w);
}

#[test]
fn touch_ahead_never_changes_bytes() {
    run(256 << 10);
}

#[test]
fn touch_ahead_default_window_never_changes_bytes() {
    run(WalOptions::default().touch_ahead);
}

#[test]
fn touch_ahead_off_writes_the_same_bytes() {
    run(0);
}
