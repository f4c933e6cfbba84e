//! WAL removal never blocks appends (issue 5, part 2): `remove_before` of many
//! segments is held in the middle of its work (the `fail` crate's `pause` action
//! on the unlink failpoint: the removing thread stops right before deleting a
//! file, with the retention lock held and the victims already picked), and
//! meanwhile another thread appends, rolls over into new segments, flushes and
//! reads. Every one of those calls must return while the removal is still held;
//! if an append needed a lock the removal holds (or removal ran on the append
//! path) the appender would wait for the removal, the removal for the test's
//! release, and the test would fail at its upper-bound timeout instead of hang.
//!
//! Run: `cargo test --release -p wal --features failpoints --test removal`.
#![cfg(feature = "failpoints")]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::*;
use fail::FailScenario;
use wal::failpoints as fp;
use wal::*;

/// Generous upper bound for work that takes milliseconds (no timed assertion:
/// only a hang fails it).
const HANG: Duration = Duration::from_secs(60);

#[test]
fn appends_proceed_while_removal_of_many_segments_is_held() {
    let s = FailScenario::setup();
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let w = std::sync::Arc::new(w);
    // ~24 segments of 1 MiB.
    let mut last = Lsn(0);
    for i in 0..2400u64 {
        last = w.append(1, 16, &payload(i, 10_000)).unwrap().end;
    }
    w.flush(last).unwrap();
    assert!(w.write_lsn().0 > 20 * SEG, "{}", w.write_lsn());
    let cut = Lsn(20 * SEG);

    // Hold the removal at its second unlink (the first segment is gone, 19 to go).
    fail::cfg(fp::REMOVE_UNLINK, "1*off->pause").unwrap();
    let remover = {
        let w = w.clone();
        std::thread::spawn(move || w.remove_before(cut))
    };
    // The removal is in progress once the first segment left the map and the
    // second one is being removed (first_lsn moves before each unlink).
    let t0 = std::time::Instant::now();
    while w.first_lsn() < Lsn(2 * SEG) {
        assert!(t0.elapsed() < HANG, "the removal never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        !remover.is_finished(),
        "the removal must be held at its unlink"
    );

    // Meanwhile: appends (~4 MiB: 3 or more segment roll-overs), flushes and reads, on another
    // thread, with an upper bound.
    let (tx, rx) = mpsc::channel();
    let appender = {
        let w = w.clone();
        std::thread::spawn(move || {
            let start = w.write_lsn();
            let mut ends = Vec::new();
            for i in 0..400u64 {
                let a = w.append(1, 16, &payload(10_000 + i, 10_000)).unwrap();
                if i % 50 == 0 {
                    w.flush(a.end).unwrap();
                }
                ends.push(a.end);
            }
            let end = *ends.last().unwrap();
            w.flush(end).unwrap();
            let mut n = 0;
            let mut r = w.reader(start).unwrap();
            while let Some(rec) = r.next() {
                rec.unwrap();
                n += 1;
            }
            let _ = tx.send((start, end, n));
        })
    };
    let (start, end, n) = rx
        .recv_timeout(HANG)
        .expect("appends, flushes and reads must go on while a removal is in progress");
    appender.join().unwrap();
    assert_eq!(n, 400);
    assert!(
        end.0 - start.0 > 3 * SEG,
        "the appends rolled over segments"
    );
    assert!(
        !remover.is_finished(),
        "the removal was still held while every append returned"
    );

    // Release the removal: it finishes, and everything appended is intact.
    fail::remove(fp::REMOVE_UNLINK);
    assert_eq!(remover.join().unwrap().unwrap(), 20);
    assert_eq!(w.first_lsn(), cut);
    let mut r = w.reader(cut).unwrap();
    let mut count = 0;
    while let Some(rec) = r.next() {
        rec.unwrap();
        count += 1;
    }
    assert!(count >= 400);
    drop(r);
    drop(w);
    let (_, rep) = open(d.path());
    assert_eq!((rep.first_lsn, rep.write_lsn), (cut, end));
    s.teardown();
}
