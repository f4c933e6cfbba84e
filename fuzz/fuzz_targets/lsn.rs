//! `lsn`: `wal::Lsn` parsing (`FromStr`: `X/X` hex halves or a decimal integer, as
//! typed by operators in `--lsn`, the `wal_start` file, the term history and HTTP
//! queries) and display.
//!
//! Checks: parsing any UTF-8 never panics; a value that parses displays as
//! `HI/LO` in uppercase hex without leading zeros and parses back to itself; the
//! first 8 bytes read as a u64 display and parse back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wal::Lsn;

fn round_trip(l: Lsn) {
    let s = l.to_string();
    let (hi, lo) = s.split_once('/').expect("display has a slash");
    for h in [hi, lo] {
        assert!(!h.is_empty() && h.len() <= 8, "{s}");
        assert!(h == "0" || !h.starts_with('0'), "{s}");
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
            "{s}"
        );
    }
    assert_eq!(
        s.parse::<Lsn>().expect("displayed LSN must parse"),
        l,
        "{s}"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut raw = [0u8; 8];
    let n = data.len().min(8);
    raw[..n].copy_from_slice(&data[..n]);
    round_trip(Lsn(u64::from_le_bytes(raw)));
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(l) = s.parse::<Lsn>() {
            round_trip(l);
            // The textual forms agree with each other.
            assert_eq!(l.0.to_string().parse::<Lsn>().expect("decimal form"), l);
        }
    }
});
