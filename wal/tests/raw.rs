mod common;
use common::*;
use wal::*;

/// Leader with some records across segments and two terms.
fn leader(dir: &std::path::Path) -> Wal {
    let (w, _) = open(dir);
    for i in 0..400u64 {
        let term = if i < 250 { 1 } else { 3 };
        w.append(term, 16, &payload(i, (i as usize * 131) % 9000))
            .unwrap();
    }
    w
}

#[test]
fn follower_mirror_is_byte_identical() {
    let dl = tempfile::tempdir().unwrap();
    let df = tempfile::tempdir().unwrap();
    let l = leader(dl.path());
    let (f, _) = open(df.path());
    let mut pos = Lsn(0);
    while pos < l.write_lsn() {
        let mut buf = Vec::new();
        let e = l.read_raw(pos, 50_000, &mut buf).unwrap();
        assert_eq!(f.append_raw(pos, &buf).unwrap(), e);
        pos = e;
    }
    assert_eq!(f.write_lsn(), l.write_lsn());
    assert_eq!(f.term_history(), l.term_history());
    assert_eq!(f.last_term(), 3);
    f.flush(f.write_lsn()).unwrap();
    for s in 0..=(l.write_lsn().0 / SEG) {
        let a = std::fs::read(seg_path(dl.path(), s * SEG)).unwrap();
        let b = std::fs::read(seg_path(df.path(), s * SEG)).unwrap();
        assert!(a == b, "segment {s} differs");
    }
    assert_eq!(read_all(&f, Lsn(0)), read_all(&l, Lsn(0)));
    // one append_raw spanning several segments
    let dg = tempfile::tempdir().unwrap();
    let (g, _) = open(dg.path());
    let mut all = Vec::new();
    let mut pos = Lsn(0);
    while pos < l.write_lsn() {
        pos = l.read_raw(pos, 1 << 30, &mut all).unwrap();
    }
    assert_eq!(g.append_raw(Lsn(0), &all).unwrap(), l.write_lsn());
    drop(g);
    let (g, rep) = open(dg.path());
    assert_eq!(rep.records, 400);
    assert_eq!(g.term_history(), l.term_history());
}

#[test]
fn append_raw_rejects_bad_input_and_writes_nothing() {
    let dl = tempfile::tempdir().unwrap();
    let l = leader(dl.path());
    let mut good = Vec::new();
    let end = l.read_raw(Lsn(0), 30_000, &mut good).unwrap();
    assert!(good.len() > 3 * 9000 / 2);
    let df = tempfile::tempdir().unwrap();
    let (f, _) = open(df.path());
    let check_nothing = |f: &Wal| {
        assert_eq!(f.write_lsn(), Lsn(0));
        assert!(f.reader(Lsn(0)).unwrap().next().is_none());
        assert!(f.term_history().is_empty());
    };
    // bad CRC in the last record
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 9] ^= 0x10;
    let e = f.append_raw(Lsn(0), &bad).unwrap_err();
    assert!(
        matches!(e, WalError::InvalidArgument(ref m) if m.contains("CRC")),
        "{e}"
    );
    check_nothing(&f);
    // wrong LSN: the same bytes presented at another position
    let e = f.append_raw(Lsn(8), &good).unwrap_err();
    assert!(e.to_string().contains("not contiguous"), "{e}");
    check_nothing(&f);
    // header LSN mismatch: records from the middle of the leader's log at 0
    let mut mid = Vec::new();
    let first_end = l.reader(Lsn(0)).unwrap().next().unwrap().unwrap().end;
    l.read_raw(first_end, 10_000, &mut mid).unwrap();
    let e = f.append_raw(Lsn(0), &mid).unwrap_err();
    assert!(e.to_string().contains("header LSN"), "{e}");
    check_nothing(&f);
    // truncated (partial record)
    let e = f.append_raw(Lsn(0), &good[..good.len() - 8]).unwrap_err();
    assert!(matches!(e, WalError::InvalidArgument(_)), "{e}");
    check_nothing(&f);
    // zero bytes
    assert!(f.append_raw(Lsn(0), &[0u8; 64]).is_err());
    check_nothing(&f);
    // bad kind (with a valid CRC)
    let mut k = Vec::new();
    record::encode(Lsn(0), 1, 7, b"x", &mut k);
    assert!(f
        .append_raw(Lsn(0), &k)
        .unwrap_err()
        .to_string()
        .contains("kind"));
    check_nothing(&f);
    // a record spanning the segment end, well-formed otherwise
    let mut over = Vec::new();
    record::encode(Lsn(SEG - 64), 1, 16, &[1u8; 100], &mut over);
    let df2 = tempfile::tempdir().unwrap();
    let (f2, _) = open(df2.path());
    let mut fill = Vec::new();
    let mut pos = 0u64;
    while pos < SEG - 64 {
        let len = ((SEG - 64 - pos) as usize - 32).min(100_000);
        let before = fill.len();
        record::encode(Lsn(pos), 1, 16, &vec![2u8; len], &mut fill);
        pos += (fill.len() - before) as u64;
    }
    assert_eq!(f2.append_raw(Lsn(0), &fill).unwrap(), Lsn(SEG - 64));
    let e = f2.append_raw(Lsn(SEG - 64), &over).unwrap_err();
    assert!(e.to_string().contains("segment"), "{e}");
    assert_eq!(f2.write_lsn(), Lsn(SEG - 64));
    // lower term than the log's last term
    let mut low = Vec::new();
    record::encode(Lsn(SEG - 64), 0, 16, &[1u8; 32], &mut low);
    assert!(f2
        .append_raw(Lsn(SEG - 64), &low)
        .unwrap_err()
        .to_string()
        .contains("term"));
    // finally the good bytes are accepted
    assert_eq!(f.append_raw(Lsn(0), &good).unwrap(), end);
}

/// `read_shared` gives exactly the bytes and end LSN `read_raw` gives, without a
/// copy, and they outlive a cut and rewrite of the same LSNs and the segment's
/// removal.
#[test]
fn read_shared_matches_read_raw_and_outlives_cuts() {
    let d = tempfile::tempdir().unwrap();
    let l = leader(d.path());
    let mut pos = Lsn(0);
    let mut held = Vec::new();
    while pos < l.write_lsn() {
        let mut buf = Vec::new();
        let e = l.read_raw(pos, 50_000, &mut buf).unwrap();
        let (e2, shared) = l.read_shared(pos, 50_000).unwrap();
        assert_eq!(e2, e);
        assert!(shared[..] == buf[..], "bytes at {pos} differ");
        held.push((pos, buf, shared));
        pos = e;
    }
    let (end, none) = l.read_shared(l.write_lsn(), 50_000).unwrap();
    assert_eq!((end, none.len()), (l.write_lsn(), 0));
    assert!(l.read_shared(Lsn(l.write_lsn().0 + 8), 1).is_err());
    // Cut in the middle of the first segment, write other records over it, drop
    // every segment: the shares keep the bytes they had.
    let cut = held[1].0;
    l.truncate_after(cut).unwrap();
    for i in 0..300u64 {
        l.append(4, 16, &payload(10_000 + i, 5000)).unwrap();
    }
    l.flush(l.write_lsn()).unwrap();
    l.remove_before(l.write_lsn()).unwrap();
    for (at, copy, shared) in &held {
        assert!(shared[..] == copy[..], "share at {at} changed");
    }
}
