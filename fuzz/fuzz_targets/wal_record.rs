//! `wal_record`: the WAL record decoder on arbitrary bytes, and `Wal::append_raw`
//! (how a follower checks the leader's bytes) on the same bytes.
//!
//! Input: [`RecordInput`] header (LSN, bytes left in the segment, size limit), then
//! bytes. Checks:
//! * `wal::record::validate` never panics; a record it accepts lies inside the input
//!   and its segment, and re-encodes to exactly the same bytes (so the decoder
//!   accepts nothing the encoder cannot produce). Records are walked like recovery
//!   walks a segment. A put payload decodes without panic and re-encodes exactly.
//! * `append_raw` of the bytes at [`APPEND_BASE`] of a real WAL (1 MiB segments, on
//!   tmpfs) never panics; on success the WAL holds exactly those bytes (read back
//!   with `read_raw`), on failure nothing was written. The WAL is truncated back to
//!   [`APPEND_BASE`] after every accepted input, so every run starts the same.
#![no_main]

use std::sync::Mutex;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wal::record::{self, HEADER_LEN};
use wal::{Lsn, Wal, WalOptions};
use walship_fuzz::format::{RecordInput, APPEND_BASE, APPEND_BASE_TERM, SEGMENT_SIZE};

fn wal() -> &'static Mutex<Wal> {
    static WAL: OnceLock<Mutex<Wal>> = OnceLock::new();
    WAL.get_or_init(|| {
        let dir = walship_fuzz::scratch_dir().join("wal_record");
        let opts = WalOptions {
            segment_size: SEGMENT_SIZE,
            touch_ahead: 0,
            ..Default::default()
        };
        let (w, _) = Wal::open(&dir, opts).expect("open the fuzz WAL");
        // Three records of a third of the base each: the WAL ends at APPEND_BASE.
        let each = APPEND_BASE / 3;
        let payload = vec![0xA5u8; each as usize - HEADER_LEN];
        for _ in 0..3 {
            w.append(APPEND_BASE_TERM, 16, &payload)
                .expect("fill the fuzz WAL");
        }
        assert_eq!(w.write_lsn(), Lsn(APPEND_BASE));
        Mutex::new(w)
    })
}

fn walk_records(input: &RecordInput, bytes: &[u8]) {
    let seg_rem = if input.seg_rem == 0 {
        bytes.len() as u64
    } else {
        u64::from(input.seg_rem)
    };
    let max_record = if input.max_record == 0 {
        record::max_record_len(SEGMENT_SIZE)
    } else {
        u64::from(input.max_record)
    };
    let mut off = 0usize;
    while (off as u64) < seg_rem && off < bytes.len() {
        let lsn = Lsn(input.lsn.wrapping_add(off as u64));
        let rem = seg_rem - off as u64;
        let Ok(r) = record::validate(&bytes[off..], lsn, rem, max_record) else {
            return;
        };
        assert_eq!(r.lsn, lsn);
        assert!(wal::kind::is_valid(r.kind));
        assert!(r.total >= HEADER_LEN as u64 && r.total % record::ALIGN == 0);
        assert!(r.total <= rem, "record crosses its segment");
        assert!(
            off as u64 + r.total <= bytes.len() as u64,
            "record past the input"
        );
        assert!(r.kind == wal::kind::PADDING || r.total <= max_record);
        let end = off + r.total as usize;
        let payload = &bytes[off + HEADER_LEN..off + HEADER_LEN + r.len as usize];
        let mut again = Vec::new();
        record::encode(lsn, r.term, r.kind, payload, &mut again);
        assert_eq!(
            &again[..],
            &bytes[off..end],
            "accepted record does not re-encode"
        );
        if r.kind == 16 {
            if let Ok((k, v)) = receiver::state::decode_put(payload) {
                assert_eq!(receiver::state::encode_put(k, v), payload);
            }
        }
        off = end;
    }
}

fn append_raw(bytes: &[u8]) {
    let w = wal().lock().unwrap_or_else(|e| e.into_inner());
    let before_hist = w.term_history();
    match w.append_raw(Lsn(APPEND_BASE), bytes) {
        Ok(end) => {
            assert_eq!(end, Lsn(APPEND_BASE + bytes.len() as u64));
            assert_eq!(w.write_lsn(), end);
            // Read back: the WAL holds exactly the bytes given.
            let mut back = Vec::new();
            let mut at = Lsn(APPEND_BASE);
            while at < end {
                let next = w.read_raw(at, usize::MAX, &mut back).expect("read_raw");
                assert!(next > at, "read_raw made no progress at {at}");
                at = next;
            }
            assert_eq!(at, end);
            assert_eq!(back, bytes, "append_raw stored different bytes");
            // And the reader sees whole records up to the end.
            {
                let mut r = w
                    .reader(Lsn(APPEND_BASE))
                    .expect("reader")
                    .with_padding(true);
                let mut last = Lsn(APPEND_BASE);
                while let Some(rec) = r.next() {
                    last = rec.expect("record just appended must read back").end;
                }
                assert_eq!(last, end);
            }
            w.truncate_after(Lsn(APPEND_BASE))
                .expect("truncate back to the base");
            assert_eq!(w.term_history(), before_hist);
        }
        Err(_) => {
            assert_eq!(w.write_lsn(), Lsn(APPEND_BASE), "failed append_raw wrote");
            assert_eq!(w.term_history(), before_hist);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (input, bytes) = RecordInput::decode(data);
    walk_records(&input, bytes);
    append_raw(bytes);
});
