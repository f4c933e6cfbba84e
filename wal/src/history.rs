//! Term history: which term wrote which part of the log, and `fork_point`.

use std::path::Path;

use crate::failpoints as fp;
use crate::segment::{replace_file, ReplaceError};
use crate::{Lsn, Term, WalError};

/// Name of the term history file inside the WAL directory.
pub const TERM_HISTORY_FILE: &str = "term_history";

/// One entry of a term history: records from `start` on (up to the next entry's
/// start) were written in `term`. Histories are ascending in both `term` and `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TermSpan {
    /// The term.
    pub term: Term,
    /// LSN of the first record of that term.
    pub start: Lsn,
}

/// The term in effect at `lsn` according to `hist` (the entry with the greatest
/// `start <= lsn`), or None if `lsn` precedes every entry. Does not know where the
/// log ends: callers bound `lsn` by their log's end.
pub fn term_at(hist: &[TermSpan], lsn: Lsn) -> Option<Term> {
    let i = hist.partition_point(|s| s.start <= lsn);
    if i == 0 {
        None
    } else {
        Some(hist[i - 1].term)
    }
}

/// The end of the longest prefix on which two logs agree, given each log's term
/// history and end (its write LSN). By log matching (a record at the same LSN with
/// the same term implies an identical prefix), this is the first history boundary
/// below both ends where the two logs' terms differ, or the smaller end if none
/// differs. The result is a record boundary in both logs.
pub fn fork_point(a: &[TermSpan], a_end: Lsn, b: &[TermSpan], b_end: Lsn) -> Lsn {
    let end = a_end.min(b_end);
    let mut points: Vec<Lsn> = a
        .iter()
        .chain(b.iter())
        .map(|s| s.start)
        .filter(|&p| p < end)
        .collect();
    points.push(Lsn(0).min(end));
    points.sort_unstable();
    points.dedup();
    for p in points {
        if p >= end {
            break;
        }
        if term_at(a, p) != term_at(b, p) {
            return p;
        }
    }
    end
}

/// Checks a history is strictly ascending in term and in start (two terms cannot
/// start at the same LSN: the earlier one would hold no record).
pub(crate) fn validate(hist: &[TermSpan]) -> Result<(), String> {
    for w in hist.windows(2) {
        if w[1].term <= w[0].term || w[1].start <= w[0].start {
            return Err(format!(
                "entries not ascending: ({}, {}) then ({}, {})",
                w[0].term, w[0].start, w[1].term, w[1].start
            ));
        }
    }
    Ok(())
}

/// Loads the history file; a missing file is an empty history.
pub(crate) fn load(dir: &Path) -> Result<Vec<TermSpan>, WalError> {
    let path = dir.join(TERM_HISTORY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(WalError::io(&path, e)),
    };
    let mut out = Vec::new();
    let mut offset = 0u64;
    for line in text.split_inclusive('\n') {
        let l = line.trim();
        let here = offset;
        offset += line.len() as u64;
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let bad = |why: &str| WalError::Corruption {
            file: path.clone(),
            offset: here,
            reason: format!("bad term history line {l:?}: {why}"),
        };
        let (t, s) = l
            .split_once(' ')
            .ok_or_else(|| bad("expected \"<term> <X/X>\""))?;
        let term: Term = t.parse().map_err(|_| bad("term is not an integer"))?;
        let start: Lsn = s.trim().parse().map_err(|_| bad("start is not an LSN"))?;
        out.push(TermSpan { term, start });
    }
    validate(&out).map_err(|why| WalError::Corruption {
        file: path.clone(),
        offset: 0,
        reason: why,
    })?;
    Ok(out)
}

/// Writes the history atomically: tmp file, fsync, rename, fsync the directory.
/// On failure, `renamed` tells whether the new file was already in place (then its
/// durability is unknown: callers poison the WAL); before the rename the old
/// history is untouched.
pub(crate) fn store(dir: &Path, hist: &[TermSpan]) -> Result<(), ReplaceError> {
    let mut s = String::from("# walship term history: <term> <first LSN of that term>\n");
    for e in hist {
        s.push_str(&format!("{} {}\n", e.term, e.start));
    }
    replace_file(
        dir,
        TERM_HISTORY_FILE,
        s.as_bytes(),
        [fp::HISTORY_WRITE, fp::HISTORY_FSYNC, fp::HISTORY_RENAME],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[(u64, u64)]) -> Vec<TermSpan> {
        v.iter()
            .map(|&(term, s)| TermSpan {
                term,
                start: Lsn(s),
            })
            .collect()
    }

    #[test]
    fn term_at_lookup() {
        let x = h(&[(1, 0), (3, 100), (4, 250)]);
        assert_eq!(term_at(&x, Lsn(0)), Some(1));
        assert_eq!(term_at(&x, Lsn(99)), Some(1));
        assert_eq!(term_at(&x, Lsn(100)), Some(3));
        assert_eq!(term_at(&x, Lsn(1000)), Some(4));
        assert_eq!(term_at(&h(&[(2, 50)]), Lsn(10)), None);
        assert_eq!(term_at(&[], Lsn(10)), None);
    }

    #[test]
    fn fork_point_table() {
        // (a, a_end, b, b_end, expected)
        #[allow(clippy::type_complexity)]
        let cases: Vec<(Vec<(u64, u64)>, u64, Vec<(u64, u64)>, u64, u64)> = vec![
            // identical histories: the shorter end
            (vec![(1, 0)], 500, vec![(1, 0)], 300, 300),
            (vec![(1, 0)], 300, vec![(1, 0)], 500, 300),
            // both empty logs
            (vec![], 0, vec![], 0, 0),
            // one empty
            (vec![(1, 0)], 500, vec![], 0, 0),
            // old leader kept writing in term 2 after new leader took term 3 at 200
            (
                vec![(1, 0), (2, 100)],
                400,
                vec![(1, 0), (2, 100), (3, 200)],
                600,
                200,
            ),
            // symmetric
            (
                vec![(1, 0), (2, 100), (3, 200)],
                600,
                vec![(1, 0), (2, 100)],
                400,
                200,
            ),
            // old leader in term 2 diverged right at 100 where b has term 3
            (
                vec![(1, 0), (2, 100)],
                400,
                vec![(1, 0), (3, 100)],
                600,
                100,
            ),
            // divergence at the first record
            (vec![(2, 0)], 400, vec![(3, 0)], 600, 0),
            // b's new term starts beyond a's end: a is a prefix
            (vec![(1, 0)], 150, vec![(1, 0), (2, 200)], 600, 150),
            // new term starts exactly at a's end
            (vec![(1, 0)], 200, vec![(1, 0), (2, 200)], 600, 200),
            // a lagging follower with the same terms
            (
                vec![(1, 0), (2, 100), (5, 300)],
                350,
                vec![(1, 0), (2, 100), (5, 300)],
                900,
                350,
            ),
            // histories starting later (after a reset): same terms
            (vec![(4, 1000)], 2000, vec![(4, 1000)], 1500, 1500),
            // one history knows an older term the other lost
            (vec![(3, 0), (4, 1000)], 2000, vec![(4, 1000)], 1500, 0),
            // divergence in the middle of several terms
            (
                vec![(1, 0), (2, 10), (4, 20), (6, 40)],
                50,
                vec![(1, 0), (2, 10), (4, 20), (5, 30)],
                60,
                30,
            ),
        ];
        for (i, (a, ae, b, be, want)) in cases.into_iter().enumerate() {
            let got = fork_point(&h(&a), Lsn(ae), &h(&b), Lsn(be));
            assert_eq!(got, Lsn(want), "case {i}");
            let back = fork_point(&h(&b), Lsn(be), &h(&a), Lsn(ae));
            assert_eq!(back, Lsn(want), "case {i} swapped");
        }
    }

    #[test]
    fn store_and_load() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path()).unwrap(), vec![]);
        let x = h(&[(1, 0), (3, 0x16B3748), (9, 1 << 40)]);
        store(d.path(), &x).unwrap();
        assert_eq!(load(d.path()).unwrap(), x);
        store(d.path(), &[]).unwrap();
        assert_eq!(load(d.path()).unwrap(), vec![]);
        std::fs::write(d.path().join(TERM_HISTORY_FILE), "1 0/0\nzz\n").unwrap();
        let e = load(d.path()).unwrap_err();
        assert!(matches!(e, WalError::Corruption { offset: 6, .. }), "{e}");
        std::fs::write(d.path().join(TERM_HISTORY_FILE), "2 0/0\n1 0/10\n").unwrap();
        assert!(load(d.path()).is_err());
    }
}
