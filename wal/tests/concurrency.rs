mod common;
use std::sync::Arc;

use common::*;
use wal::*;

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn wal_is_send_sync() {
    assert_send_sync::<Wal>();
    fn send<T: Send>() {}
    send::<WalReader>();
}

#[test]
fn many_appenders_with_group_commit_lose_nothing() {
    const THREADS: u64 = 16;
    const PER: u64 = 2000;
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let w = Arc::new(w);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::with_capacity(PER as usize);
                for i in 0..PER {
                    let mut p = t.to_le_bytes().to_vec();
                    p.extend_from_slice(&i.to_le_bytes());
                    p.extend_from_slice(&payload(t * PER + i, (i % 200) as usize));
                    let a = w.append(1, 16, &p).unwrap();
                    if i % 4 == 0 {
                        let f = w.flush(a.end).unwrap();
                        assert!(f >= a.end);
                        assert!(w.flush_lsn() >= a.end);
                    }
                    mine.push(a);
                }
                let last = mine.last().unwrap().end;
                w.flush(last).unwrap();
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        let mine = h.join().unwrap();
        for p in mine.windows(2) {
            assert!(p[1].lsn >= p[0].end, "LSNs increase per thread");
        }
        all.extend(mine);
    }
    all.sort_by_key(|a| a.lsn);
    for p in all.windows(2) {
        assert!(p[1].lsn >= p[0].end, "unique, non-overlapping");
    }
    assert_eq!(all.len() as u64, THREADS * PER);
    assert_eq!(w.flush_lsn(), w.write_lsn());
    // 8000 flush calls; group commit never needs more fdatasyncs than that (each
    // fdatasync covers at least one segment, rollovers may add one per segment)
    let segs = w.write_lsn().0 / SEG + 1;
    assert!(
        w.fdatasync_count() <= THREADS * (PER / 4 + 1) + segs,
        "{}",
        w.fdatasync_count()
    );
    let end = w.write_lsn();
    drop(w);
    let (w, rep) = open(d.path());
    assert_eq!(rep.write_lsn, end);
    assert_eq!(rep.records, THREADS * PER);
    let mut next = vec![0u64; THREADS as usize];
    let mut r = w.reader(Lsn(0)).unwrap();
    let mut k = 0;
    while let Some(rec) = r.next() {
        let rec = rec.unwrap();
        assert_eq!(rec.lsn, all[k].lsn);
        k += 1;
        let t = u64::from_le_bytes(rec.payload[..8].try_into().unwrap());
        let i = u64::from_le_bytes(rec.payload[8..16].try_into().unwrap());
        assert_eq!(next[t as usize], i, "thread {t} records in order");
        next[t as usize] += 1;
        assert_eq!(
            &rec.payload[16..],
            &payload(t * PER + i, (i % 200) as usize)[..]
        );
    }
    assert!(next.iter().all(|&n| n == PER));
}

#[test]
fn readers_run_concurrently_with_appends_and_removal() {
    let d = tempfile::tempdir().unwrap();
    let (w, _) = open(d.path());
    let w = Arc::new(w);
    let writer = {
        let w = w.clone();
        std::thread::spawn(move || {
            for i in 0..20_000u64 {
                w.append(1, 16, &payload(i, 100 + (i % 7) as usize * 50))
                    .unwrap();
                if i % 1000 == 0 {
                    w.flush(w.write_lsn()).unwrap();
                }
            }
        })
    };
    let mut r = w.reader(Lsn(0)).unwrap();
    let mut n = 0u64;
    while n < 20_000 {
        match r.next() {
            Some(rec) => {
                let rec = rec.unwrap();
                assert_eq!(rec.payload, &payload(n, 100 + (n % 7) as usize * 50)[..]);
                n += 1;
            }
            None => std::thread::yield_now(),
        }
    }
    writer.join().unwrap();
    // a reader holding an old segment keeps working after remove_before
    let mut old = w.reader(Lsn(0)).unwrap();
    let first = old.next().unwrap().unwrap().payload.to_vec();
    w.flush(w.write_lsn()).unwrap();
    let removed = w.remove_before(w.write_lsn()).unwrap();
    assert!(removed >= 1);
    let mut seen = 1;
    loop {
        match old.next() {
            Some(Ok(_)) => seen += 1,
            Some(Err(WalError::NotRetained { .. })) => break,
            Some(Err(e)) => panic!("{e}"),
            None => break,
        }
    }
    assert!(seen > 1);
    assert_eq!(first, payload(0, 100));
}
