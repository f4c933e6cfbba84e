mod common;
use common::*;
use proptest::prelude::*;
use wal::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        len: usize,
        kind: u8,
        term_bump: bool,
    },
    Batch(Vec<usize>),
    Reopen,
    Flush,
}

fn size() -> impl Strategy<Value = usize> {
    let max = (SEG / 2) as usize - 32;
    prop_oneof![
        4 => 0usize..200,
        2 => 200usize..20_000,
        1 => (max - 64)..=max,
        1 => 100_000usize..300_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (size(), 16u8..20, proptest::bool::weighted(0.05))
            .prop_map(|(len, kind, term_bump)| Op::Append { len, kind, term_bump }),
        2 => proptest::collection::vec(size(), 1..6).prop_map(Op::Batch),
        1 => Just(Op::Reopen),
        1 => Just(Op::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_records_roundtrip_across_segments_and_reopen(ops in proptest::collection::vec(op(), 1..40)) {
        let d = tempfile::tempdir().unwrap();
        let (mut w, _) = open(d.path());
        let mut model: Vec<(Lsn, Lsn, Term, u8, Vec<u8>)> = Vec::new();
        let mut term = 1;
        let mut seed = 0u64;
        for op in ops {
            match op {
                Op::Append { len, kind, term_bump } => {
                    if term_bump { term += 1; }
                    seed += 1;
                    let p = payload(seed, len);
                    let a = w.append(term, kind, &p).unwrap();
                    prop_assert_eq!(a.lsn.0 / SEG, (a.end.0 - 1) / SEG);
                    model.push((a.lsn, a.end, term, kind, p));
                }
                Op::Batch(lens) => {
                    let ps: Vec<Vec<u8>> = lens.iter().map(|&l| { seed += 1; payload(seed, l) }).collect();
                    let recs: Vec<(u8, &[u8])> = ps.iter().map(|p| (17u8, p.as_slice())).collect();
                    let out = w.append_batch(term, &recs).unwrap();
                    for (a, p) in out.iter().zip(ps) {
                        prop_assert_eq!(a.lsn.0 / SEG, (a.end.0 - 1) / SEG);
                        model.push((a.lsn, a.end, term, 17, p));
                    }
                }
                Op::Flush => { w.flush(w.write_lsn()).unwrap(); }
                Op::Reopen => {
                    let end = w.write_lsn();
                    drop(w);
                    let (w2, rep) = open(d.path());
                    prop_assert_eq!(rep.write_lsn, end);
                    prop_assert_eq!(rep.records as usize, model.len());
                    prop_assert!(rep.cut_tail.is_none());
                    w = w2;
                }
            }
        }
        prop_assert_eq!(read_all(&w, Lsn(0)), model.clone());
        let end = w.write_lsn();
        drop(w);
        let (w, rep) = open(d.path());
        prop_assert_eq!(rep.write_lsn, end);
        prop_assert_eq!(read_all(&w, Lsn(0)), model.clone());
        if let Some(last) = model.last() {
            prop_assert_eq!(w.last_term(), last.2);
        }
        // raw stream of the whole log reproduces it on a follower
        let df = tempfile::tempdir().unwrap();
        let (f, _) = open(df.path());
        let mut pos = Lsn(0);
        while pos < end {
            let mut b = Vec::new();
            let e = w.read_raw(pos, 100_000, &mut b).unwrap();
            prop_assert_eq!(f.append_raw(pos, &b).unwrap(), e);
            pos = e;
        }
        prop_assert_eq!(read_all(&f, Lsn(0)), model);
        prop_assert_eq!(f.term_history(), w.term_history());
    }
}
