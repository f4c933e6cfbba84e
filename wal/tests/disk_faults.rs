//! Disk faults injected through the WAL's failpoints (feature `failpoints`):
//! failed fsyncs poison the WAL for good, a full disk (or any failure) while a
//! segment is prepared is a clean, retryable error that loses nothing, and a
//! crash at every step of an append (torn writes) recovers the longest valid
//! prefix with every flushed record.
//!
//! Run: `cargo test --release -p wal --features failpoints --test disk_faults`.
#![cfg(feature = "failpoints")]

mod common;

use std::path::Path;

use common::*;
use fail::FailScenario;
use wal::failpoints as fp;
use wal::*;

type Rec = (Lsn, Lsn, Term, u8, Vec<u8>);

fn cfg(name: &str, actions: &str) {
    fail::cfg(name, actions).unwrap_or_else(|e| panic!("failpoint {name}={actions}: {e}"));
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

fn is_poisoned(e: &WalError) -> bool {
    matches!(e, WalError::Poisoned { .. })
}

/// Appends `n` records of term 1 and flushes them; returns what was written.
fn fill(w: &Wal, seed: u64, n: usize, len: usize) -> Vec<Rec> {
    let mut out = Vec::new();
    for i in 0..n as u64 {
        let p = payload(seed + i, len);
        let a = w.append(1, 16, &p).unwrap();
        out.push((a.lsn, a.end, 1, 16, p));
    }
    w.flush(w.write_lsn()).unwrap();
    out
}

/// A failed fdatasync poisons the WAL: the flush reports the I/O error, and every
/// later call fails, even after the disk "heals" (the failpoint is removed) — never
/// a retry that reports success. Reopening recovers every flushed record.
#[test]
fn failed_fdatasync_poisons_for_good_and_reopen_recovers() {
    let s = FailScenario::setup();
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let flushed = fill(&w, 1, 20, 300);
    let f = w.flush_lsn();
    let a = w.append(1, 16, b"never durable?").unwrap();
    cfg(fp::SEGMENT_FDATASYNC, "return(EIO)");
    let e = w.flush(a.end).unwrap_err();
    assert!(
        matches!(&e, WalError::Io { source, .. } if source.raw_os_error() == Some(libc::EIO)),
        "{e}"
    );
    fail::remove(fp::SEGMENT_FDATASYNC);
    assert_eq!(
        w.flush_lsn(),
        f,
        "the flush LSN never moves past a failed fsync"
    );
    let cause = w.poison_cause().expect("poisoned");
    assert!(cause.contains("Input/output error"), "{cause}");
    assert!(
        is_poisoned(&w.flush(a.end).unwrap_err()),
        "retrying never succeeds"
    );
    assert!(is_poisoned(&w.append(1, 16, b"x").unwrap_err()));
    assert!(is_poisoned(
        &w.append_batch(1, &[(16, b"x".as_slice())]).unwrap_err()
    ));
    assert!(is_poisoned(&w.append_raw(w.write_lsn(), b"x").unwrap_err()));
    assert!(is_poisoned(&w.truncate_after(f).unwrap_err()));
    assert!(is_poisoned(&w.remove_before(f).unwrap_err()));
    assert!(is_poisoned(&w.prepare_next_segment().unwrap_err()));
    assert_eq!(w.flush_lsn(), f);
    drop(w);
    let (w, rep) = open(d.path());
    let got = read_all(&w, Lsn(0));
    assert!(rep.write_lsn >= f);
    assert_eq!(
        &got[..flushed.len()],
        &flushed[..],
        "every flushed record recovered"
    );
    assert!(w.poison_cause().is_none(), "a reopened WAL is healthy");
    let b = w.append(1, 16, b"after restart").unwrap();
    w.flush(b.end).unwrap();
    s.teardown();
}

/// Concurrent flushers sharing a failed group-commit fdatasync all fail.
#[test]
fn failed_fdatasync_fails_every_group_commit_waiter() {
    let s = FailScenario::setup();
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let w = std::sync::Arc::new(w);
    fill(&w, 1, 5, 100);
    let f = w.flush_lsn();
    cfg(fp::SEGMENT_FDATASYNC, "return(EIO)");
    let hs: Vec<_> = (0..8u64)
        .map(|i| {
            let w = w.clone();
            std::thread::spawn(move || {
                let mut oks = 0;
                for j in 0..20 {
                    if let Ok(a) = w.append(1, 16, &payload(i * 100 + j, 50)) {
                        if w.flush(a.end).is_ok() {
                            oks += 1;
                        }
                    }
                }
                oks
            })
        })
        .collect();
    let oks: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(
        oks, 0,
        "no flush after (or sharing) the failed fsync succeeded"
    );
    assert_eq!(w.flush_lsn(), f);
    assert!(w.poison_cause().is_some());
    s.teardown();
}

/// A failed directory fsync after a change of the log's files poisons too:
/// truncation, removal of old segments, and the term history file once it was
/// renamed into place.
#[test]
fn failed_directory_or_history_fsync_poisons() {
    let s = FailScenario::setup();
    // truncate_after: the directory fsync after the replacement of the cut segment
    // was renamed into place (the second directory fsync of a cut inside the last
    // segment): poisoned, and the kept prefix is never removed.
    {
        let d = tempfile::tempdir().unwrap();
        let (w, _) = open(d.path());
        let recs = fill(&w, 1, 10, 100);
        cfg(fp::DIR_FSYNC, "1*off->return(EIO)");
        assert!(w.truncate_after(recs[5].0).is_err());
        fail::remove(fp::DIR_FSYNC);
        assert!(w.poison_cause().is_some());
        drop(w);
        let (w, _) = open(d.path());
        let got = read_all(&w, Lsn(0));
        assert!(
            got.len() >= 5 && got[..5] == recs[..5],
            "the kept prefix survives"
        );
    }
    // truncate_after across segments: the directory fsync after the unlinks
    {
        let d = tempfile::tempdir().unwrap();
        let (w, _) = open(d.path());
        let recs = fill(&w, 1, 300, 10_000);
        w.prepare_next_segment().unwrap();
        cfg(fp::DIR_FSYNC, "return(EIO)");
        assert!(w.truncate_after(recs[10].0).is_err());
        fail::remove(fp::DIR_FSYNC);
        assert!(w.poison_cause().is_some());
    }
    // remove_before: the directory fsync after the unlinks
    {
        let d = tempfile::tempdir().unwrap();
        let (w, _) = open(d.path());
        fill(&w, 1, 300, 10_000);
        w.prepare_next_segment().unwrap();
        cfg(fp::DIR_FSYNC, "return(EIO)");
        assert!(w.remove_before(Lsn(SEG)).is_err());
        fail::remove(fp::DIR_FSYNC);
        assert!(w.poison_cause().is_some());
        drop(w);
        let (w, rep) = open(d.path());
        assert!(rep.records > 0);
        drop(w);
    }
    // term history: directory fsync after the rename
    {
        let d = tempfile::tempdir().unwrap();
        let (w, _) = open(d.path());
        fill(&w, 1, 3, 100);
        w.prepare_next_segment().unwrap();
        cfg(fp::DIR_FSYNC, "return(EIO)");
        assert!(w.append(2, 16, b"new term").is_err());
        fail::remove(fp::DIR_FSYNC);
        assert!(w.poison_cause().is_some());
        assert!(is_poisoned(&w.append(2, 16, b"again").unwrap_err()));
    }
    s.teardown();
}

/// A cut whose replacement segment cannot be made (a full disk when it is
/// allocated, a failed fsync of it) changes nothing: the error is returned, the
/// WAL is not poisoned, no temporary file is left, every record is still there,
/// and the same cut succeeds once the fault is gone.
#[test]
fn a_cut_that_cannot_prepare_its_replacement_changes_nothing() {
    let s = FailScenario::setup();
    for (name, action) in [
        (fp::SEGMENT_FALLOCATE, "return(ENOSPC)"),
        (fp::SEGMENT_FSYNC, "return(EIO)"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let (w, _) = open(d.path());
        let recs = fill(&w, 1, 10, 100);
        w.flush(w.write_lsn()).unwrap();
        cfg(name, action);
        let e = w.truncate_after(recs[5].0).unwrap_err();
        fail::remove(name);
        if name == fp::SEGMENT_FALLOCATE {
            assert!(matches!(e, WalError::NoSpace { .. }), "{name}: {e}");
        }
        assert!(w.poison_cause().is_none(), "{name}: poisoned");
        assert!(
            leftovers(d.path()).is_empty(),
            "{name}: {:?}",
            leftovers(d.path())
        );
        assert_eq!(read_all(&w, Lsn(0)), recs, "{name}: records changed");
        w.truncate_after(recs[5].0).unwrap();
        assert_eq!(read_all(&w, Lsn(0)), recs[..5].to_vec(), "{name}");
    }
    s.teardown();
}

/// The term history file cannot be written (full disk, or its fsync/rename fails
/// before it is in place): the append of the new term fails with nothing changed,
/// the WAL stays healthy, and the same append succeeds once the fault is gone.
#[test]
fn term_history_failure_before_rename_is_retryable() {
    let s = FailScenario::setup();
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let recs = fill(&w, 1, 3, 100);
    w.prepare_next_segment().unwrap();
    for (name, errno) in [
        (fp::HISTORY_WRITE, "ENOSPC"),
        (fp::HISTORY_WRITE, "EIO"),
        (fp::HISTORY_FSYNC, "EIO"),
        (fp::HISTORY_RENAME, "EIO"),
    ] {
        cfg(name, &format!("return({errno})"));
        let e = w.append(2, 16, b"term two").unwrap_err();
        if errno == "ENOSPC" {
            assert!(matches!(e, WalError::NoSpace { .. }), "{name}: {e}");
        }
        fail::remove(name);
        assert!(w.poison_cause().is_none(), "{name}: {e}");
        assert_eq!(
            w.write_lsn(),
            recs.last().unwrap().1,
            "{name}: nothing written"
        );
        assert_eq!(w.last_term(), 1);
        assert!(leftovers(d.path()).is_empty(), "{name}: tmp file left");
    }
    let a = w.append(2, 16, b"term two").unwrap();
    w.flush(a.end).unwrap();
    assert_eq!(w.term_history().last().unwrap().term, 2);
    drop(w);
    let (w, rep) = open(d.path());
    assert_eq!(rep.last_term, 2);
    assert_eq!(read_all(&w, Lsn(0)).len(), 4);
    s.teardown();
}

/// ENOSPC when the next segment is created (by the background preparer or on the
/// append path): appends that need it fail with `NoSpace`, nothing acknowledged
/// is lost, no file is left behind, the WAL is not poisoned, and appends succeed
/// again (the preparation is retried) once space returns.
#[test]
fn no_space_at_segment_creation_fails_cleanly_and_recovers() {
    let s = FailScenario::setup();
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    // The segment after the first one is prepared before the disk "fills up".
    w.prepare_next_segment().unwrap();
    cfg(fp::SEGMENT_FALLOCATE, "return(ENOSPC)");
    let mut acked: Vec<Rec> = Vec::new();
    let mut err = None;
    for i in 0..1000u64 {
        let p = payload(i, 20_000);
        match w.append(1, 16, &p) {
            Ok(a) => {
                w.flush(a.end).unwrap();
                acked.push((a.lsn, a.end, 1, 16, p));
            }
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let e = err.expect("appends kept succeeding with no space for segments");
    assert!(matches!(e, WalError::NoSpace { .. }), "{e}");
    assert!(e.to_string().contains("no space left"), "{e}");
    // Segment 0 and the one prepared before the failpoint (at open) were used.
    assert!(
        acked.last().unwrap().1 .0 > SEG,
        "the prepared segment was used"
    );
    let end = w.write_lsn();
    assert_eq!(end, acked.last().unwrap().1);
    for _ in 0..3 {
        assert!(matches!(
            w.append(1, 16, &payload(1, 20_000)),
            Err(WalError::NoSpace { .. })
        ));
        assert!(matches!(
            w.append_batch(1, &[(16, payload(2, 20_000).as_slice())]),
            Err(WalError::NoSpace { .. })
        ));
    }
    // A small record that still fits in the current segment is fine.
    let small = w.append(1, 16, b"fits").unwrap();
    w.flush(small.end).unwrap();
    acked.push((small.lsn, small.end, 1, 16, b"fits".to_vec()));
    assert!(
        w.poison_cause().is_none(),
        "a full disk does not poison the WAL"
    );
    assert!(leftovers(d.path()).is_empty(), "no tmp file left");
    assert_eq!(read_all(&w, Lsn(0)), acked, "nothing acknowledged lost");
    // Space returns: the next append prepares the segment itself and succeeds.
    fail::remove(fp::SEGMENT_FALLOCATE);
    for i in 0..100u64 {
        let p = payload(10_000 + i, 20_000);
        let a = w.append(1, 16, &p).unwrap();
        w.flush(a.end).unwrap();
        acked.push((a.lsn, a.end, 1, 16, p));
    }
    assert_eq!(read_all(&w, Lsn(0)), acked);
    drop(w);
    let (w, _) = open(d.path());
    assert_eq!(read_all(&w, Lsn(0)), acked, "all of it after reopening");
    s.teardown();
}

/// Every step of preparing a segment can fail: the append that needs it fails,
/// the WAL is not poisoned, no file is left behind, and the next append after the
/// fault is gone succeeds.
#[test]
fn any_segment_preparation_failure_is_retryable() {
    let s = FailScenario::setup();
    for name in [
        fp::SEGMENT_CREATE,
        fp::SEGMENT_FALLOCATE,
        fp::SEGMENT_ZERO_FILL,
        fp::SEGMENT_FSYNC,
        fp::SEGMENT_MMAP,
        fp::SEGMENT_RENAME,
        fp::DIR_FSYNC,
    ] {
        let d = tempfile::tempdir().unwrap();
        let o = WalOptions {
            zero_fill: name == fp::SEGMENT_ZERO_FILL,
            ..opts()
        };
        let (w, _) = Wal::open(d.path(), o.clone()).unwrap();
        // The first term's history entry is written before the fault (its
        // directory fsync failing would poison: see the test above).
        let first = w.append(1, 16, b"first").unwrap();
        w.flush(first.end).unwrap();
        let mut acked = vec![(first.lsn, first.end, 1, 16, b"first".to_vec())];
        w.prepare_next_segment().unwrap();
        cfg(name, "return(EIO)");
        let mut failed = false;
        for i in 0..400u64 {
            let p = payload(i, 10_000);
            match w.append(1, 16, &p) {
                Ok(a) => {
                    w.flush(a.end).unwrap();
                    acked.push((a.lsn, a.end, 1, 16, p));
                }
                Err(e) => {
                    assert!(
                        matches!(e, WalError::Io { .. }),
                        "{name}: unexpected error {e}"
                    );
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "{name}: no append failed");
        assert!(w.poison_cause().is_none(), "{name}: poisoned");
        assert!(leftovers(d.path()).is_empty(), "{name}: tmp file left");
        let files = segment_files(d.path());
        assert_eq!(
            files.len(),
            2,
            "{name}: only the used segments exist: {files:?}"
        );
        fail::remove(name);
        let p = payload(9999, 10_000);
        let a = w.append(1, 16, &p).unwrap();
        w.flush(a.end).unwrap();
        acked.push((a.lsn, a.end, 1, 16, p));
        assert_eq!(read_all(&w, Lsn(0)), acked, "{name}");
        drop(w);
        let (w, _) = Wal::open(d.path(), o).unwrap();
        assert_eq!(read_all(&w, Lsn(0)), acked, "{name}: after reopen");
    }
    s.teardown();
}

/// A segment that cannot be mapped at open is an error naming the file; the next
/// open works.
#[test]
fn mmap_failure_at_open_is_a_clear_error() {
    let s = FailScenario::setup();
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let recs = fill(&w, 1, 10, 100);
    drop(w);
    cfg(fp::SEGMENT_MMAP, "return(ENOMEM)");
    let e = Wal::open(d.path(), opts()).unwrap_err();
    assert!(e.to_string().contains("0000000000000000.wal"), "{e}");
    fail::remove(fp::SEGMENT_MMAP);
    let (w, _) = open(d.path());
    assert_eq!(read_all(&w, Lsn(0)), recs);
    s.teardown();
}

/// An old segment that cannot be unlinked: the ones before it are removed, the
/// rest stay retained and readable, nothing is poisoned; a reopen finds the file
/// again, and a later removal succeeds.
#[test]
fn remove_before_unlink_failure_keeps_the_log_consistent() {
    let s = FailScenario::setup();
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let recs = fill(&w, 1, 400, 10_000); // ~4 segments
    assert!(w.write_lsn().0 > 3 * SEG);
    cfg(fp::REMOVE_UNLINK, "1*off->return(EIO)");
    assert!(w.remove_before(Lsn(3 * SEG)).is_err());
    fail::remove(fp::REMOVE_UNLINK);
    assert!(w.poison_cause().is_none());
    assert_eq!(
        w.first_lsn(),
        Lsn(2 * SEG),
        "the first segment went, the second failed"
    );
    let tail: Vec<Rec> = recs.iter().filter(|r| r.0 .0 >= 2 * SEG).cloned().collect();
    assert_eq!(read_all(&w, w.first_lsn()), tail);
    drop(w);
    let (w, rep) = open(d.path());
    assert_eq!(
        rep.first_lsn,
        Lsn(SEG),
        "the segment that could not be removed is back"
    );
    assert_eq!(w.remove_before(Lsn(3 * SEG)).unwrap(), 2);
    assert_eq!(w.first_lsn(), Lsn(3 * SEG));
    s.teardown();
}

/// The touch-ahead thread's madvise failing (EINVAL: fallback to atomic touches;
/// other errors: pages skipped) changes no byte.
#[test]
fn touch_ahead_madvise_failure_is_harmless() {
    let s = FailScenario::setup();
    for errno in ["EINVAL", "ENOMEM"] {
        let d = tempfile::tempdir().unwrap();
        cfg(fp::TOUCH_MADVISE, &format!("return({errno})"));
        let (w, _) = open(d.path());
        let mut recs = Vec::new();
        for i in 0..300u64 {
            let p = payload(i, 8000);
            let a = w.append(1, 16, &p).unwrap();
            recs.push((a.lsn, a.end, 1, 16, p));
        }
        w.flush(w.write_lsn()).unwrap();
        fail::remove(fp::TOUCH_MADVISE);
        assert_eq!(read_all(&w, Lsn(0)), recs);
        drop(w);
        let (w, _) = open(d.path());
        assert_eq!(read_all(&w, Lsn(0)), recs);
    }
    s.teardown();
}

/// After a crash (a torn-write failpoint), reopen and check: the log is a prefix
/// of `attempted`, holds at least `flushed` records, and holds the torn record
/// only if `torn_complete`. Then the reopened log takes appends again.
fn check_recovered(dir: &Path, attempted: &[Rec], flushed: usize, torn: usize, complete: bool) {
    let (w, rep) = open(dir);
    let got = read_all(&w, Lsn(0));
    assert!(
        got.len() >= flushed,
        "lost flushed records: {} < {flushed}",
        got.len()
    );
    assert_eq!(got[..], attempted[..got.len()], "recovered log is a prefix");
    if complete {
        assert!(got.len() > torn, "the completely copied record was kept");
    } else {
        assert_eq!(got.len(), torn, "nothing from the tear on is kept");
    }
    let end = got.last().map(|r| r.1).unwrap_or(Lsn(0));
    assert!(rep.write_lsn >= end);
    let a = w.append(3, 16, b"after the crash").unwrap();
    w.flush(a.end).unwrap();
    let again = read_all(&w, Lsn(0));
    assert_eq!(again.len(), got.len() + 1);
    assert_eq!(again.last().unwrap().4, b"after the crash");
}

/// Torn writes at every byte of a record's header and payload, and a crash
/// after the bytes are in place but before the write LSN is published.
#[test]
fn torn_append_at_every_byte_recovers_the_valid_prefix() {
    let s = FailScenario::setup();
    let plen = 45; // not a multiple of 8: alignment zeros too
    let header = 32;
    let mut cases: Vec<(&str, usize, bool)> = Vec::new();
    for n in 0..=header {
        cases.push((fp::APPEND_HEADER, n, false));
    }
    for n in 0..=plen {
        cases.push((fp::APPEND_PAYLOAD, n, n == plen));
    }
    cases.push((fp::APPEND_PUBLISH, 0, true));
    for (name, n, complete) in cases {
        let d = tempfile::tempdir().unwrap();
        let (w, _) = open(d.path());
        let mut attempted = fill(&w, 1, 5, 100);
        let flushed = attempted.len();
        // two more, appended but not flushed
        for i in 0..2u64 {
            let p = payload(50 + i, 70);
            let a = w.append(2, 16, &p).unwrap();
            attempted.push((a.lsn, a.end, 2, 16, p));
        }
        let torn = attempted.len();
        let p = payload(99, plen);
        cfg(name, &format!("return({n})"));
        let pos = w.write_lsn();
        let e = w.append(2, 17, &p).unwrap_err();
        fail::remove(name);
        assert!(e.to_string().contains("simulated crash"), "{e}");
        assert!(
            w.poison_cause().is_some(),
            "a torn append poisons (the process is dead)"
        );
        assert_eq!(w.write_lsn(), pos, "nothing published");
        attempted.push((
            pos,
            Lsn(pos.0 + ((header + plen).div_ceil(8) * 8) as u64),
            2,
            17,
            p,
        ));
        drop(w);
        check_recovered(d.path(), &attempted, flushed, torn, complete);
    }
    s.teardown();
}

/// A crash in the middle of a batch: the records before the torn one may survive
/// (they were never acknowledged), the torn one and everything after do not.
#[test]
fn torn_batch_keeps_a_prefix() {
    let s = FailScenario::setup();
    for k in 0..4usize {
        let d = tempfile::tempdir().unwrap();
        let (w, _) = open(d.path());
        let mut attempted = fill(&w, 1, 3, 100);
        let flushed = attempted.len();
        let payloads: Vec<Vec<u8>> = (0..4u64).map(|i| payload(200 + i, 60)).collect();
        let batch: Vec<(u8, &[u8])> = payloads.iter().map(|p| (16u8, p.as_slice())).collect();
        let actions = if k == 0 {
            "return(10)".to_string()
        } else {
            format!("{k}*off->return(10)")
        };
        cfg(fp::APPEND_PAYLOAD, &actions);
        assert!(w.append_batch(1, &batch).is_err());
        fail::remove(fp::APPEND_PAYLOAD);
        let mut pos = attempted.last().unwrap().1;
        for p in &payloads {
            let end = Lsn(pos.0 + ((32 + p.len()).div_ceil(8) * 8) as u64);
            attempted.push((pos, end, 1, 16, p.clone()));
            pos = end;
        }
        drop(w);
        let (w, _) = open(d.path());
        let got = read_all(&w, Lsn(0));
        assert_eq!(
            got.len(),
            flushed + k,
            "batch records before the tear kept, k={k}"
        );
        assert_eq!(got[..], attempted[..got.len()]);
    }
    s.teardown();
}

/// A crash while sealing a segment with PADDING (at every byte of its header):
/// the log ends before the padding, or at the segment end if the padding is
/// whole; the prepared next segment holds nothing and goes.
#[test]
fn torn_padding_at_segment_end_recovers() {
    let s = FailScenario::setup();
    for n in 0..=32usize {
        let d = tempfile::tempdir().unwrap();
        let (w, _) = open(d.path());
        let mut attempted = Vec::new();
        // Fill segment 0 until less than 20 KB are left.
        let mut i = 0u64;
        while SEG - w.write_lsn().0 > 20_000 {
            let p = payload(i, 8000);
            let a = w.append(1, 16, &p).unwrap();
            attempted.push((a.lsn, a.end, 1, 16, p));
            i += 1;
        }
        w.flush(w.write_lsn()).unwrap();
        let flushed = attempted.len();
        let before = w.write_lsn();
        cfg(fp::APPEND_PADDING, &format!("return({n})"));
        let p = payload(777, 30_000);
        assert!(w.append(1, 16, &p).is_err());
        fail::remove(fp::APPEND_PADDING);
        drop(w);
        let (w, rep) = open(d.path());
        let got = read_all(&w, Lsn(0));
        assert_eq!(got, attempted, "n={n}");
        // The header's last 7 bytes are reserved zeros (and the padding payload is
        // zeros): with the first 25 bytes copied, the PADDING record is whole.
        if n >= 25 {
            assert_eq!(
                rep.write_lsn,
                Lsn(SEG),
                "whole padding: the log ends at the segment end"
            );
        } else {
            assert_eq!(rep.write_lsn, before, "n={n}");
        }
        let a = w.append(1, 16, &p).unwrap();
        w.flush(a.end).unwrap();
        assert_eq!(a.lsn, Lsn(SEG), "the next record starts the next segment");
        let again = read_all(&w, Lsn(0));
        assert_eq!(again.len(), flushed + 1);
        drop(w);
        let (w, _) = open(d.path());
        assert_eq!(read_all(&w, Lsn(0)).len(), flushed + 1);
    }
    s.teardown();
}

/// Follower side: a crash while `append_raw` copies received bytes, at many
/// points across several records: the follower keeps exactly the records whose
/// bytes were all copied.
#[test]
fn torn_append_raw_keeps_whole_records_only() {
    // Small chunks are copied into the map.
    torn_append_raw_case(|i| 37 + 20 * i as usize, 5);
}

/// The same for a bulk chunk (over 16 KiB), written with `pwrite`.
#[test]
fn torn_bulk_append_raw_keeps_whole_records_only() {
    torn_append_raw_case(|i| 9_000 + 1_111 * i as usize, 997);
}

fn torn_append_raw_case(len: impl Fn(u64) -> usize, step: usize) {
    let s = FailScenario::setup();
    let ld = tempfile::tempdir().unwrap();
    let (leader, _) = open(ld.path());
    let base = fill(&leader, 1, 3, 100);
    let base_end = base.last().unwrap().1;
    let mut more = Vec::new();
    for i in 0..4u64 {
        let p = payload(300 + i, len(i));
        let a = leader.append(2, 16, &p).unwrap();
        more.push((a.lsn, a.end, 2, 16, p));
    }
    let mut head = Vec::new();
    leader.read_raw(Lsn(0), 1 << 20, &mut head).unwrap();
    let head = &head[..base_end.0 as usize];
    let mut tail = Vec::new();
    let tail_end = leader.read_raw(base_end, 1 << 20, &mut tail).unwrap();
    assert_eq!(tail_end, more.last().unwrap().1);
    let mut attempted = base.clone();
    attempted.extend(more.iter().cloned());
    let mut cuts: Vec<usize> = (0..tail.len()).step_by(step).collect();
    cuts.push(tail.len());
    for n in cuts {
        let d = tempfile::tempdir().unwrap();
        let (w, _) = open(d.path());
        w.append_raw(Lsn(0), head).unwrap();
        w.flush(base_end).unwrap();
        cfg(fp::APPEND_RAW_COPY, &format!("return({n})"));
        assert!(w.append_raw(base_end, &tail).is_err());
        fail::remove(fp::APPEND_RAW_COPY);
        assert!(w.poison_cause().is_some());
        drop(w);
        let cut = base_end.0 + n as u64;
        let whole = more
            .iter()
            .filter(|r| r.0 .0 + 32 + r.4.len() as u64 <= cut)
            .count();
        let (w, _) = open(d.path());
        let got = read_all(&w, Lsn(0));
        assert_eq!(got.len(), base.len() + whole, "cut after {n} bytes");
        assert_eq!(got[..], attempted[..got.len()]);
    }
    s.teardown();
}

/// A crash in the middle of a bulk batch (over 16 KiB, encoded and written with
/// one `pwrite`), at many points: the records wholly written before the tear may
/// survive, nothing after it does, and every flushed record does.
#[test]
fn torn_bulk_batch_keeps_a_prefix() {
    let s = FailScenario::setup();
    let payloads: Vec<Vec<u8>> = (0..4u64)
        .map(|i| payload(400 + i, 6_000 + 7 * i as usize))
        .collect();
    let batch: Vec<(u8, &[u8])> = payloads.iter().map(|p| (16u8, p.as_slice())).collect();
    let total: usize = payloads
        .iter()
        .map(|p| (32 + p.len()).div_ceil(8) * 8)
        .sum();
    let mut cuts: Vec<usize> = (0..total).step_by(1_013).collect();
    cuts.push(total);
    for n in cuts {
        let d = tempfile::tempdir().unwrap();
        let (w, _) = open(d.path());
        let mut attempted = fill(&w, 1, 3, 100);
        let flushed = attempted.len();
        w.flush(attempted.last().unwrap().1).unwrap();
        let start = attempted.last().unwrap().1;
        cfg(fp::APPEND_PAYLOAD, &format!("return({n})"));
        assert!(w.append_batch(1, &batch).is_err());
        fail::remove(fp::APPEND_PAYLOAD);
        assert!(w.poison_cause().is_some());
        let mut pos = start;
        for p in &payloads {
            let end = Lsn(pos.0 + ((32 + p.len()).div_ceil(8) * 8) as u64);
            attempted.push((pos, end, 1, 16, p.clone()));
            pos = end;
        }
        drop(w);
        let cut = start.0 + n as u64;
        let whole = attempted[flushed..]
            .iter()
            .filter(|r| r.0 .0 + 32 + r.4.len() as u64 <= cut)
            .count();
        let (w, _) = open(d.path());
        let got = read_all(&w, Lsn(0));
        assert_eq!(got.len(), flushed + whole, "cut after {n} bytes");
        assert_eq!(got[..], attempted[..got.len()]);
    }
    s.teardown();
}
