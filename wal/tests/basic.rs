mod common;
use common::*;
use wal::*;

#[test]
fn append_read_reopen() {
    let d = tempfile::tempdir().unwrap();
    let (w, rep) = open(d.path());
    assert_eq!(rep.write_lsn, Lsn(0));
    assert_eq!(rep.records, 0);
    assert_eq!(w.last_term(), 0);
    let mut expect = Vec::new();
    for i in 0..1000u64 {
        let p = payload(i, (i % 300) as usize);
        let a = w
            .append(1 + i / 400, kind::FIRST_APP + (i % 3) as u8, &p)
            .unwrap();
        assert_eq!(a.lsn.0 % 8, 0);
        assert!(a.end > a.lsn);
        expect.push((
            a.lsn,
            a.end,
            1 + i / 400,
            kind::FIRST_APP + (i % 3) as u8,
            p,
        ));
    }
    assert_eq!(w.write_lsn(), expect.last().unwrap().1);
    assert_eq!(read_all(&w, Lsn(0)), expect);
    // a reader from the middle
    assert_eq!(read_all(&w, expect[500].0), expect[500..].to_vec());
    w.flush(w.write_lsn()).unwrap();
    assert_eq!(w.flush_lsn(), w.write_lsn());
    assert_eq!(w.last_term(), 3);
    let end = w.write_lsn();
    drop(w);
    let (w, rep) = open(d.path());
    assert_eq!(rep.write_lsn, end);
    assert_eq!(rep.records, 1000);
    assert_eq!(rep.last_term, 3);
    assert_eq!(rep.cut_tail, None);
    assert_eq!(read_all(&w, Lsn(0)), expect);
    assert_eq!(
        w.term_history(),
        vec![
            TermSpan {
                term: 1,
                start: Lsn(0)
            },
            TermSpan {
                term: 2,
                start: expect[400].0
            },
            TermSpan {
                term: 3,
                start: expect[800].0
            }
        ]
    );
}

#[test]
fn reader_tails_new_appends() {
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let mut r = w.reader(Lsn(0)).unwrap();
    assert!(r.next().is_none());
    w.append(1, 16, b"a").unwrap();
    assert_eq!(r.next().unwrap().unwrap().payload, b"a");
    assert!(r.next().is_none());
    w.append(1, 16, b"b").unwrap();
    assert_eq!(r.next().unwrap().unwrap().payload, b"b");
}

#[test]
fn records_never_span_segments_and_sealed_segments_are_covered() {
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let max = w.max_payload();
    assert_eq!(max, (SEG / 2) as usize - 32);
    let sizes = [100usize, max, 7, max - 5, 3000, 1, max, 0, 200_000, 17];
    let mut appended = Vec::new();
    for (i, s) in sizes.iter().cycle().take(40).enumerate() {
        appended.push(w.append(1, 16, &payload(i as u64, *s)).unwrap());
    }
    for a in &appended {
        assert_eq!(a.lsn.0 / SEG, (a.end.0 - 1) / SEG, "{a:?} spans segments");
    }
    // with padding: contiguous coverage from 0 to write_lsn
    let mut r = w.reader(Lsn(0)).unwrap().with_padding(true);
    let mut pos = Lsn(0);
    let mut pads = 0;
    while let Some(rec) = r.next() {
        let rec = rec.unwrap();
        assert_eq!(rec.lsn, pos);
        if rec.kind == kind::PADDING {
            pads += 1;
            assert_eq!(rec.end.0 % SEG, 0, "padding ends at a segment end");
            assert!(rec.payload.iter().all(|&b| b == 0));
        }
        pos = rec.end;
    }
    assert_eq!(pos, w.write_lsn());
    assert!(pads > 5);
    assert!(segment_files(d.path()).len() >= 10);
}

#[test]
fn small_tail_is_padded() {
    // a record that would leave 8..24 bytes in the segment goes to the next one
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let half = (SEG / 2) as usize - 32;
    w.append(1, 16, &payload(1, half)).unwrap(); // 512 KiB
                                                 // leaves exactly 8 bytes if written here: SEG/2 - 8 total
    let a = w.append(1, 16, &payload(2, half - 8)).unwrap();
    assert_eq!(a.lsn, Lsn(SEG));
    let b = w.append(1, 16, &payload(3, half - 24)).unwrap();
    // leaves exactly 32 bytes: allowed
    assert_eq!(b.lsn, a.end);
    let c = w.append(1, 16, &[]).unwrap();
    assert_eq!(
        c.end,
        Lsn(2 * SEG),
        "a 32-byte record fills the last 32 bytes"
    );
}

#[test]
fn argument_checks() {
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    for k in [0u8, kind::PADDING, 3, 15] {
        assert!(
            matches!(w.append(1, k, b"x"), Err(WalError::InvalidArgument(_))),
            "kind {k}"
        );
    }
    assert!(w.append(1, kind::TERM_START, b"node-a").is_ok());
    let too_big = vec![1u8; w.max_payload() + 1];
    assert!(matches!(
        w.append(1, 16, &too_big),
        Err(WalError::InvalidArgument(_))
    ));
    assert!(w.append(1, 16, &too_big[1..]).is_ok());
    w.append(5, 16, b"x").unwrap();
    let e = w.append(4, 16, b"x").unwrap_err();
    assert!(e.to_string().contains("lower"), "{e}");
    // batch is all or nothing
    let before = w.write_lsn();
    assert!(w.append_batch(5, &[(16, b"ok"), (0, b"bad")]).is_err());
    assert_eq!(w.write_lsn(), before);
    // readers
    assert!(matches!(
        w.reader(Lsn(before.0 + 8)),
        Err(WalError::InvalidArgument(_))
    ));
    assert!(matches!(
        w.reader(Lsn(8)),
        Err(WalError::InvalidArgument(_))
    ));
    for size in [0u64, 1000, (1 << 20) + 1, 1 << 19, 3 << 20] {
        let e = Wal::open(
            d.path().join("x").as_path(),
            WalOptions {
                segment_size: size,
                repair: false,
                zero_fill: false,
                ..WalOptions::default()
            },
        );
        assert!(matches!(e, Err(WalError::InvalidArgument(_))), "{size}");
    }
}

#[test]
fn directory_is_locked_while_open() {
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    assert!(matches!(
        Wal::open(d.path(), opts()),
        Err(WalError::InvalidArgument(_))
    ));
    drop(w);
    open(d.path());
}

#[test]
fn segment_size_mismatch_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    w.append(1, 16, b"x").unwrap();
    drop(w);
    let e = Wal::open(
        d.path(),
        WalOptions {
            segment_size: 2 << 20,
            repair: false,
            zero_fill: false,
            ..WalOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, WalError::Corruption { .. }), "{e}");
}

#[test]
fn append_batch_positions() {
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let big = payload(9, 300_000);
    let recs: Vec<(u8, &[u8])> = vec![(16, b"a"), (17, &big), (16, &big), (18, &big), (16, b"z")];
    let out = w.append_batch(2, &recs).unwrap();
    assert_eq!(out.len(), 5);
    for (a, b) in out.iter().zip(out.iter().skip(1)) {
        assert!(b.lsn >= a.end);
    }
    let got = read_all(&w, Lsn(0));
    assert_eq!(got.len(), 5);
    for (g, (k, p)) in got.iter().zip(recs.iter()) {
        assert_eq!((g.3, g.4.as_slice()), (*k, *p));
    }
    assert_eq!(
        w.term_history(),
        vec![TermSpan {
            term: 2,
            start: Lsn(0)
        }]
    );
}

/// A bulk batch (encoded and written with `pwrite`) leaves exactly the bytes that
/// appending its records one by one leaves, across segment boundaries (padding
/// included), and reads back the same.
#[test]
fn bulk_batch_bytes_equal_record_by_record_appends() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one, _) = open(da.path());
    let (bulk, _) = open(db.path());
    let payloads: Vec<Vec<u8>> = (0..700u64)
        .map(|i| payload(i, [1, 100, 4_096, 20_000, 333][i as usize % 5]))
        .collect();
    for chunk in payloads.chunks(64) {
        let recs: Vec<(u8, &[u8])> = chunk.iter().map(|p| (16u8, p.as_slice())).collect();
        let mut want = Vec::new();
        for (k, p) in &recs {
            want.push(one.append(3, *k, p).unwrap());
        }
        assert_eq!(bulk.append_batch(3, &recs).unwrap(), want);
    }
    let end = one.write_lsn();
    assert_eq!(bulk.write_lsn(), end);
    assert!(end.0 > 2 * SEG, "the batches crossed segment boundaries");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut at = Lsn(0);
    while at < end {
        a.clear();
        b.clear();
        let next = one.read_raw(at, 1 << 20, &mut a).unwrap();
        assert_eq!(bulk.read_raw(at, 1 << 20, &mut b).unwrap(), next);
        assert!(a == b, "bytes differ in [{at}, {next})");
        at = next;
    }
    assert_eq!(read_all(&bulk, Lsn(0)), read_all(&one, Lsn(0)));
    drop(bulk);
    let (bulk, _) = open(db.path());
    assert_eq!(bulk.write_lsn(), end, "recovery keeps every bulk record");
}

#[test]
fn read_raw_contract() {
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let mut ends = Vec::new();
    for i in 0..3000u64 {
        ends.push(w.append(1, 16, &payload(i, 500)).unwrap());
    }
    let mut out = Vec::new();
    // nothing beyond write_lsn
    assert_eq!(
        w.read_raw(w.write_lsn(), 1000, &mut out).unwrap(),
        w.write_lsn()
    );
    assert!(out.is_empty());
    // at least one record even if max_bytes is tiny
    let e = w.read_raw(Lsn(0), 1, &mut out).unwrap();
    assert_eq!(e, ends[0].end);
    assert_eq!(out.len() as u64, ends[0].end.0);
    // whole records up to max_bytes
    out.clear();
    let e = w.read_raw(ends[0].end, 10_000, &mut out).unwrap();
    assert!(
        out.len() <= 10_000 && out.len() > 10_000 - 540,
        "{}",
        out.len()
    );
    assert!(ends.iter().any(|a| a.end == e));
    // never across a segment end, and the whole log streams byte-identically
    let mut pos = Lsn(0);
    let mut all = Vec::new();
    while pos < w.write_lsn() {
        let mut buf = Vec::new();
        let e = w.read_raw(pos, 64 << 10, &mut buf).unwrap();
        assert!(e > pos);
        assert_eq!(pos.0 / SEG, (e.0 - 1) / SEG, "across a segment end");
        assert_eq!(buf.len() as u64, e.0 - pos.0);
        all.extend_from_slice(&buf);
        pos = e;
    }
    assert_eq!(all.len() as u64, w.write_lsn().0);
    let seg0 = std::fs::read(seg_path(d.path(), 0)).unwrap();
    assert_eq!(&all[..SEG as usize], &seg0[..]);
    // not a record boundary
    assert!(w.read_raw(Lsn(8), 100, &mut out).is_err());
}

#[test]
fn zero_filled_segments_work_the_same() {
    let d = tempfile::tempdir().unwrap();
    let o = WalOptions {
        segment_size: SEG,
        repair: false,
        zero_fill: true,
        ..WalOptions::default()
    };
    let (w, _) = Wal::open(d.path(), o.clone()).unwrap();
    let mut n = 0;
    while w.write_lsn().0 < 3 * SEG {
        let a = w.append(1, 16, &payload(n, 5000)).unwrap();
        w.flush(a.end).unwrap();
        n += 1;
    }
    let all = read_all(&w, Lsn(0));
    drop(w);
    let (w, rep) = Wal::open(d.path(), o).unwrap();
    assert_eq!(rep.records, n);
    assert_eq!(read_all(&w, Lsn(0)), all);
}

/// Needs a small, nearly full file system: `WAL_NOSPACE_DIR=/mnt/small cargo test
/// -p wal --release --test basic -- --ignored no_space` (e.g. a 3 MiB tmpfs).
#[test]
#[ignore]
fn full_disk_is_a_clean_no_space_error() {
    let Some(base) = std::env::var_os("WAL_NOSPACE_DIR") else {
        return;
    };
    let d = tempfile::tempdir_in(base).unwrap();
    let (w, _) = open(d.path());
    let mut err = None;
    for i in 0..100u64 {
        match w.append(1, 16, &payload(i, 200_000)) {
            Ok(a) => {
                w.flush(a.end).unwrap();
            }
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let e = err.expect("the file system never filled up");
    assert!(matches!(e, WalError::NoSpace { .. }), "{e}");
    // still usable: what fits in the current segment can be read back, and the log
    // reopens
    let end = w.write_lsn();
    let n = read_all(&w, Lsn(0)).len();
    drop(w);
    let (w, rep) = open(d.path());
    assert_eq!(rep.write_lsn, end);
    assert_eq!(read_all(&w, Lsn(0)).len(), n);
    assert!(!std::fs::read_dir(d.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}
