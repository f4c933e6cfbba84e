mod common;
use common::*;
use wal::*;

fn fill(w: &Wal, n: u64, term: Term) -> Vec<Appended> {
    (0..n)
        .map(|i| {
            w.append(
                term,
                16,
                &payload(i * 7 + term, 3000 + (i as usize % 5) * 1000),
            )
            .unwrap()
        })
        .collect()
}

#[test]
fn truncate_after_is_durable_and_reported() {
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let a = fill(&w, 300, 1);
    let b = fill(&w, 300, 2);
    let c = fill(&w, 100, 4);
    assert_eq!(w.term_history().len(), 3);
    let end = w.write_lsn();
    w.flush(end).unwrap();
    let cut = b[150].lsn;
    let nsegs = segment_files(d.path()).len();
    // not a boundary
    assert!(matches!(
        w.truncate_after(Lsn(cut.0 + 8)),
        Err(WalError::InvalidArgument(_))
    ));
    assert!(matches!(
        w.truncate_after(Lsn(end.0 + 8)),
        Err(WalError::InvalidArgument(_))
    ));
    let rep = w.truncate_after(cut).unwrap();
    assert_eq!(rep.from, cut);
    assert_eq!(rep.to, end);
    assert_eq!(rep.records, 150 + 100);
    assert!(rep.segments_removed >= 1);
    assert!(segment_files(d.path()).len() < nsegs);
    assert_eq!(w.write_lsn(), cut);
    assert_eq!(w.flush_lsn(), cut);
    assert_eq!(w.last_term(), 2);
    assert_eq!(
        w.term_history(),
        vec![
            TermSpan {
                term: 1,
                start: Lsn(0)
            },
            TermSpan {
                term: 2,
                start: b[0].lsn
            }
        ]
    );
    assert_eq!(w.term_at(Lsn(cut.0 - 8)), Some(2));
    assert_eq!(w.term_at(cut), None);
    assert_eq!(read_all(&w, Lsn(0)).len(), 450);
    // append continues at the cut, in a new term
    let x = w.append(5, 16, b"new leader").unwrap();
    assert_eq!(x.lsn, cut);
    drop(w);
    // recovery does not resurrect anything
    let (w, rep) = open(d.path());
    assert_eq!(rep.records, 451);
    assert_eq!(rep.write_lsn, x.end);
    assert!(rep.cut_tail.is_none());
    assert_eq!(w.last_term(), 5);
    assert_eq!(
        w.term_history().last(),
        Some(&TermSpan {
            term: 5,
            start: cut
        })
    );
    // truncate to the very beginning
    let rep = w.truncate_after(Lsn(0)).unwrap();
    assert_eq!(rep.records, 451);
    assert_eq!(w.last_term(), 0);
    assert!(w.term_history().is_empty());
    drop(w);
    let (w, rep) = open(d.path());
    assert_eq!(rep.records, 0);
    assert_eq!(w.write_lsn(), Lsn(0));
    let _ = (a, c);
}

#[test]
fn truncate_at_segment_boundary_and_padding() {
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let recs = fill(&w, 400, 1);
    let at = recs
        .iter()
        .find(|a| a.lsn.0 == SEG || a.lsn.0 % SEG == 0)
        .map(|a| a.lsn);
    let at = at.unwrap_or(Lsn(SEG));
    w.truncate_after(at).unwrap();
    assert_eq!(w.write_lsn(), at);
    w.append(2, 16, b"y").unwrap();
    drop(w);
    let (w, rep) = open(d.path());
    assert!(rep.cut_tail.is_none());
    assert_eq!(read_all(&w, Lsn(0)).last().unwrap().4, b"y".to_vec());
}

#[test]
fn remove_before_whole_segments_only() {
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let recs = fill(&w, 1000, 1);
    // nothing flushed: nothing removable
    assert_eq!(w.remove_before(w.write_lsn()).unwrap(), 0);
    w.flush(w.write_lsn()).unwrap();
    let before = segment_files(d.path());
    let target = recs[700].lsn;
    let n = w.remove_before(target).unwrap();
    assert_eq!(n as u64, target.0 / SEG);
    assert_eq!(w.first_lsn(), Lsn(target.0 / SEG * SEG));
    assert_eq!(segment_files(d.path()).len(), before.len() - n);
    assert!(matches!(
        w.reader(Lsn(0)),
        Err(WalError::NotRetained { .. })
    ));
    let mut out = Vec::new();
    assert!(matches!(
        w.read_raw(Lsn(0), 10, &mut out),
        Err(WalError::NotRetained { .. })
    ));
    assert!(matches!(
        w.truncate_after(Lsn(0)),
        Err(WalError::NotRetained { .. })
    ));
    // never the writer's segment
    w.remove_before(Lsn(u64::MAX)).unwrap();
    assert_eq!(w.first_lsn(), Lsn(w.write_lsn().0 / SEG * SEG));
    let first = w.first_lsn();
    let n_left = read_all(&w, first).len();
    // history still describes the removed part
    assert_eq!(w.term_at(Lsn(0)), Some(1));
    drop(w);
    let (w, rep) = open(d.path());
    assert_eq!(rep.first_lsn, first);
    assert_eq!(rep.records as usize, n_left);
    assert_eq!(
        w.term_history(),
        vec![TermSpan {
            term: 1,
            start: Lsn(0)
        }]
    );
}

#[test]
fn term_history_persists_trims_and_reconciles() {
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    w.append(1, 16, b"a").unwrap();
    let t3 = w.append(3, kind::TERM_START, b"node-2").unwrap();
    w.append(3, 16, b"b").unwrap();
    let t7 = w.append(7, kind::TERM_START, b"node-1").unwrap();
    let want = vec![
        TermSpan {
            term: 1,
            start: Lsn(0),
        },
        TermSpan {
            term: 3,
            start: t3.lsn,
        },
        TermSpan {
            term: 7,
            start: t7.lsn,
        },
    ];
    assert_eq!(w.term_history(), want);
    assert_eq!(w.term_at(t3.lsn), Some(3));
    assert_eq!(w.term_at(Lsn(t3.lsn.0 - 8)), Some(1));
    drop(w);
    let file = d.path().join(TERM_HISTORY_FILE);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("3 0/"), "{text}");
    let (w, _) = open(d.path());
    assert_eq!(w.term_history(), want);
    drop(w);
    // history file lost an entry (crash between record and history write)
    std::fs::write(&file, "1 0/0\n").unwrap();
    let (w, _) = open(d.path());
    assert_eq!(w.term_history(), want);
    drop(w);
    // history claims a term whose records never made it
    std::fs::write(
        &file,
        format!("1 0/0\n3 {}\n7 {}\n9 {}\n", t3.lsn, t7.lsn, t7.end),
    )
    .unwrap();
    let (w, _) = open(d.path());
    assert_eq!(w.term_history(), want);
    assert_eq!(w.last_term(), 7);
    drop(w);
    // missing file entirely
    std::fs::remove_file(&file).unwrap();
    let (w, _) = open(d.path());
    assert_eq!(w.term_history(), want);
    assert!(file.exists());
}

#[test]
fn reset_starts_an_empty_log_anywhere() {
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    fill(&w, 500, 1);
    let start = Lsn(5 * SEG + 4096 + 8);
    assert!(w.reset(Lsn(start.0 + 1)).is_err());
    assert!(w.reset(Lsn(6 * SEG - 8)).is_err());
    let hist = [
        TermSpan {
            term: 2,
            start: Lsn(0),
        },
        TermSpan {
            term: 4,
            start: Lsn(100),
        },
    ];
    w.reset_with_history(start, &hist).unwrap();
    assert_eq!(w.write_lsn(), start);
    assert_eq!(w.first_lsn(), start);
    assert_eq!(w.flush_lsn(), start);
    assert_eq!(w.last_term(), 4);
    assert_eq!(w.term_history(), hist.to_vec());
    assert_eq!(
        segment_files(d.path()).first().unwrap(),
        &seg_path(d.path(), 5 * SEG)
    );
    assert!(w.reader(Lsn(0)).is_err());
    drop(w);
    let (w, rep) = open(d.path());
    assert_eq!(rep.write_lsn, start);
    assert_eq!(rep.first_lsn, start);
    assert_eq!(w.term_history(), hist.to_vec());
    let a = w.append(4, 16, b"after reset").unwrap();
    assert_eq!(a.lsn, start);
    let b = w.append(6, 16, b"new term").unwrap();
    drop(w);
    let (w, rep) = open(d.path());
    assert_eq!(rep.first_lsn, start);
    assert_eq!(rep.records, 2);
    assert_eq!(read_all(&w, start).len(), 2);
    assert_eq!(
        w.term_history().last(),
        Some(&TermSpan {
            term: 6,
            start: b.lsn
        })
    );
    // plain reset forgets the history
    w.reset(Lsn(0)).unwrap();
    assert!(w.term_history().is_empty());
    assert_eq!(w.last_term(), 0);
}

#[test]
fn fork_point_against_a_real_log() {
    // old leader: terms 1, 2; new leader took over in term 3 at a shared point
    let dl = tempfile::tempdir().unwrap();
    let dn = tempfile::tempdir().unwrap();
    let (old, _) = open(dl.path());
    let (new, _) = open(dn.path());
    let shared = fill(&old, 50, 1);
    let mut pos = Lsn(0);
    while pos < old.write_lsn() {
        let mut b = Vec::new();
        let e = old.read_raw(pos, 1 << 20, &mut b).unwrap();
        new.append_raw(pos, &b).unwrap();
        pos = e;
    }
    fill(&old, 20, 2); // never replicated
    fill(&new, 30, 3);
    let fp = fork_point(
        &old.term_history(),
        old.write_lsn(),
        &new.term_history(),
        new.write_lsn(),
    );
    assert_eq!(fp, shared.last().unwrap().end);
    let rep = old.truncate_after(fp).unwrap();
    assert_eq!(rep.records, 20);
    let mut pos = fp;
    while pos < new.write_lsn() {
        let mut b = Vec::new();
        let e = new.read_raw(pos, 1 << 20, &mut b).unwrap();
        old.append_raw(pos, &b).unwrap();
        pos = e;
    }
    assert_eq!(old.term_history(), new.term_history());
    assert_eq!(read_all(&old, Lsn(0)), read_all(&new, Lsn(0)));
}

/// Published bytes are never rewritten: a shared payload taken before a cut keeps
/// its bytes after the cut, after new records are written over the same LSNs, and
/// after its segment is removed; a reader that cached the cut segment reads the
/// records appended after the cut, not the old ones.
#[test]
fn shared_payloads_and_cached_readers_survive_a_cut_and_rewrite() {
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let a = fill(&w, 20, 1);
    w.flush(w.write_lsn()).unwrap();
    // Shared payloads of every record, and a reader that has cached the segment.
    let mut r = w.reader(Lsn(0)).unwrap();
    let mut held = Vec::new();
    for _ in 0..20 {
        let (rec, shared) = r.next_shared().unwrap().unwrap();
        assert_eq!(rec.payload, &shared.bytes[..]);
        assert_eq!(shared.segment, Lsn(0));
        held.push((rec.lsn, shared.bytes.to_vec(), shared));
    }
    let mut behind = w.reader(a[5].lsn).unwrap();
    assert_eq!(behind.next().unwrap().unwrap().lsn, a[5].lsn);
    // Cut after record 10 and write different records over the same LSNs.
    w.truncate_after(a[10].lsn).unwrap();
    let b: Vec<Appended> = (0..10)
        .map(|i| w.append(2, 16, &payload(1000 + i, 777)).unwrap())
        .collect();
    assert_eq!(b[0].lsn, a[10].lsn);
    w.flush(w.write_lsn()).unwrap();
    for (lsn, copy, shared) in &held {
        assert_eq!(&shared.bytes[..], &copy[..], "payload at {lsn} changed");
    }
    // The reader positioned before the cut reads records 6..10, then the new ones.
    for want in &a[6..10] {
        assert_eq!(behind.next().unwrap().unwrap().lsn, want.lsn);
    }
    for (i, want) in b.iter().enumerate() {
        let rec = behind.next().unwrap().unwrap();
        assert_eq!((rec.lsn, rec.term), (want.lsn, 2));
        assert_eq!(rec.payload, &payload(1000 + i as u64, 777)[..]);
    }
    assert!(behind.next().is_none());
    // Reopened, the WAL holds the kept prefix and the new records only.
    drop((r, behind));
    drop(w);
    let (w, _) = open(d.path());
    let mut r = w.reader(Lsn(0)).unwrap();
    let mut n = 0;
    while let Some(rec) = r.next() {
        let rec = rec.unwrap();
        assert_eq!(rec.term, if n < 10 { 1 } else { 2 });
        n += 1;
    }
    assert_eq!(n, 20);
    for (lsn, copy, shared) in &held {
        assert_eq!(&shared.bytes[..], &copy[..], "payload at {lsn} changed");
    }
}
