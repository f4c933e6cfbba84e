#![allow(dead_code)]
use std::path::{Path, PathBuf};

use wal::*;

pub const SEG: u64 = 1 << 20;

pub fn opts() -> WalOptions {
    WalOptions {
        segment_size: SEG,
        repair: false,
        zero_fill: false,
        ..WalOptions::default()
    }
}

pub fn repair() -> WalOptions {
    WalOptions {
        segment_size: SEG,
        repair: true,
        zero_fill: false,
        ..WalOptions::default()
    }
}

pub fn open(dir: &Path) -> (Wal, RecoveryReport) {
    Wal::open(dir, opts()).unwrap()
}

/// Payload that never ends in (or contains) a zero byte.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 255) as u8 + 1
        })
        .collect()
}

/// All non-padding records as (lsn, end, term, kind, payload).
pub fn read_all(w: &Wal, from: Lsn) -> Vec<(Lsn, Lsn, Term, u8, Vec<u8>)> {
    let mut r = w.reader(from).unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next() {
        let rec = rec.unwrap();
        out.push((rec.lsn, rec.end, rec.term, rec.kind, rec.payload.to_vec()));
    }
    out
}

pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

pub fn seg_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:016X}.wal"))
}

/// Copies a WAL directory (segments, history, start file).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
