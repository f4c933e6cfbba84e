//! Record encoding and validation (the byte layout is drawn in the crate docs).

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::{Lsn, Term};

/// Record kinds. 0 is never valid, so zeroed bytes are never mistaken for a record.
pub mod kind {
    /// Fills the tail of a segment so records never span segments. Payload is zeros.
    pub const PADDING: u8 = 1;
    /// First record a new leader writes in its term (payload: leader id, UTF-8).
    pub const TERM_START: u8 = 2;
    /// Kinds >= 16 belong to the state machine (walship: 16 put, 17 delete, 18 log).
    pub const FIRST_APP: u8 = 16;

    /// Whether `k` may appear in a log: PADDING, TERM_START or an application kind.
    /// 0 and the reserved kinds 3..=15 are rejected on encode and decode.
    pub fn is_valid(k: u8) -> bool {
        k == PADDING || k == TERM_START || k >= FIRST_APP
    }
}

/// Size of the fixed record header in bytes.
pub const HEADER_LEN: usize = 32;
/// Every record starts and ends on a multiple of this.
pub const ALIGN: u64 = 8;

/// Total on-disk size of a record with a `payload_len`-byte payload (header, payload
/// and zero alignment bytes).
pub fn aligned_len(payload_len: usize) -> u64 {
    (HEADER_LEN as u64 + payload_len as u64 + ALIGN - 1) & !(ALIGN - 1)
}

/// Largest total record size (header + payload + alignment) accepted for a WAL with
/// `segment_size`-byte segments: half a segment. PADDING records are exempt (they
/// always end exactly at their segment's end instead).
pub fn max_record_len(segment_size: u64) -> u64 {
    segment_size / 2
}

const ZEROS: [u8; 8] = [0; 8];

/// Decoded header fields of one valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub crc: u32,
    pub len: u32,
    pub lsn: u64,
    pub term: Term,
    pub kind: u8,
}

impl Header {
    /// Total aligned size of this record.
    pub fn total(&self) -> u64 {
        aligned_len(self.len as usize)
    }
}

/// Fills `hdr` for a record and returns its CRC (also stored in `hdr[0..4]`).
/// The CRC covers header bytes 4..32, the payload and the zero alignment bytes.
pub(crate) fn fill_header(
    hdr: &mut [u8; HEADER_LEN],
    lsn: u64,
    term: Term,
    kind: u8,
    payload: &[u8],
) -> u32 {
    fill_header_zero_payload(hdr, lsn, term, kind, payload.len(), Some(payload))
}

/// Like [`fill_header`], for a payload given either as bytes or (when `payload` is
/// None) as `len` zero bytes (PADDING).
pub(crate) fn fill_header_zero_payload(
    hdr: &mut [u8; HEADER_LEN],
    lsn: u64,
    term: Term,
    kind: u8,
    len: usize,
    payload: Option<&[u8]>,
) -> u32 {
    LE::write_u32(&mut hdr[4..8], len as u32);
    LE::write_u64(&mut hdr[8..16], lsn);
    LE::write_u64(&mut hdr[16..24], term);
    hdr[24] = kind;
    hdr[25..32].fill(0);
    let mut h = crc32fast::Hasher::new();
    h.update(&hdr[4..]);
    match payload {
        Some(p) => h.update(p),
        None => update_zeros(&mut h, len),
    }
    let pad = (aligned_len(len) as usize) - HEADER_LEN - len;
    h.update(&ZEROS[..pad]);
    let crc = h.finalize();
    LE::write_u32(&mut hdr[0..4], crc);
    crc
}

fn update_zeros(h: &mut crc32fast::Hasher, mut n: usize) {
    static Z: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(Z.len());
        h.update(&Z[..k]);
        n -= k;
    }
}

/// Encodes one record at `lsn` into `out` (appending header, payload and alignment
/// bytes). Panics never; the caller is responsible for kind validity and the segment
/// rule (use [`crate::Wal::append_raw`] to have them checked).
pub fn encode(lsn: Lsn, term: Term, kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    let mut hdr = [0u8; HEADER_LEN];
    fill_header(&mut hdr, lsn.0, term, kind, payload);
    out.extend_from_slice(&hdr);
    out.extend_from_slice(payload);
    let pad = aligned_len(payload.len()) as usize - HEADER_LEN - payload.len();
    out.extend_from_slice(&ZEROS[..pad]);
}

/// Why bytes at a position are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// The 32 header bytes are all zero: never-written space (the end of the log, if
    /// nothing valid follows).
    Zero,
    /// Anything else; the string says which check failed.
    Bad(String),
}

/// Validates the record starting at `buf[0]`, which sits at `lsn` with `seg_rem`
/// bytes left in its segment (`buf.len() <= seg_rem`). Checks, in order: header
/// present, not all-zero, reserved bytes zero, valid kind, length limits, the segment
/// rule (a non-PADDING record leaves 0 or >= HEADER_LEN bytes in its segment; a PADDING
/// record ends exactly at the segment end), header LSN == `lsn`, record inside `buf`,
/// alignment bytes after the payload zero, and finally the CRC.
pub(crate) fn check(
    buf: &[u8],
    lsn: u64,
    seg_rem: u64,
    max_record: u64,
) -> Result<Header, Invalid> {
    if buf.len() < HEADER_LEN {
        if buf.iter().all(|&b| b == 0) {
            return Err(Invalid::Zero);
        }
        return Err(Invalid::Bad(format!(
            "only {} bytes left, less than a record header",
            buf.len()
        )));
    }
    let h = &buf[..HEADER_LEN];
    if h.iter().all(|&b| b == 0) {
        return Err(Invalid::Zero);
    }
    let hdr = Header {
        crc: LE::read_u32(&h[0..4]),
        len: LE::read_u32(&h[4..8]),
        lsn: LE::read_u64(&h[8..16]),
        term: LE::read_u64(&h[16..24]),
        kind: h[24],
    };
    if hdr.lsn != lsn {
        return Err(Invalid::Bad(format!(
            "header LSN {} does not match the record's position {}",
            Lsn(hdr.lsn),
            Lsn(lsn)
        )));
    }
    if !kind::is_valid(hdr.kind) {
        return Err(Invalid::Bad(format!("invalid record kind {}", hdr.kind)));
    }
    if h[25..32].iter().any(|&b| b != 0) {
        return Err(Invalid::Bad("reserved header bytes are not zero".into()));
    }
    let total = hdr.total();
    if hdr.kind == kind::PADDING {
        if total != seg_rem {
            return Err(Invalid::Bad(format!(
                "PADDING record of {total} bytes does not end at the segment end ({seg_rem} bytes left)"
            )));
        }
    } else {
        if total > max_record {
            return Err(Invalid::Bad(format!(
                "record of {total} bytes exceeds the limit of {max_record} bytes"
            )));
        }
        if total > seg_rem {
            return Err(Invalid::Bad(format!(
                "record of {total} bytes crosses the segment end ({seg_rem} bytes left)"
            )));
        }
        let tail = seg_rem - total;
        if tail != 0 && tail < HEADER_LEN as u64 {
            return Err(Invalid::Bad(format!(
                "record leaves {tail} bytes in its segment, less than a header (should have been padded)"
            )));
        }
    }
    if total > buf.len() as u64 {
        return Err(Invalid::Bad(format!(
            "record of {total} bytes extends past the {} available bytes",
            buf.len()
        )));
    }
    // Invariant: the alignment bytes after the payload are zero (every writer zeroes
    // them), so an accepted record re-encodes to exactly the bytes stored. The CRC
    // covers them too, but a CRC can be forged; this check cannot.
    let payload_end = HEADER_LEN + hdr.len as usize;
    if buf[payload_end..total as usize].iter().any(|&b| b != 0) {
        return Err(Invalid::Bad(
            "alignment bytes after the payload are not zero".into(),
        ));
    }
    let crc = crc32fast::hash(&buf[4..total as usize]);
    if crc != hdr.crc {
        return Err(Invalid::Bad(format!(
            "CRC mismatch: stored {:08X}, computed {crc:08X}",
            hdr.crc
        )));
    }
    Ok(hdr)
}

/// A record that passed every check of [`validate`]: its decoded header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidRecord {
    /// The record's LSN (equal to the position it was validated at).
    pub lsn: Lsn,
    /// Term of the writer.
    pub term: Term,
    /// Record kind ([`kind::is_valid`] holds).
    pub kind: u8,
    /// Payload length in bytes; the payload is `buf[HEADER_LEN..HEADER_LEN + len]`.
    pub len: u32,
    /// Total aligned size (header, payload, alignment zeros); `<= buf.len()` and
    /// `<= seg_rem`.
    pub total: u64,
}

/// Public entry to the record decoder that recovery, `walship wal inspect` and
/// [`crate::Wal::append_raw`] run on untrusted bytes (for tools and fuzzing): checks the
/// record starting at `buf[0]`, positioned at `lsn` with `seg_rem` bytes left in its
/// segment, against a size limit of `max_record` bytes (see [`max_record_len`]). Never
/// panics and never allocates from a length field, for any input. Returns the header
/// fields, or why the bytes are not a valid record (`"zero"` for an all-zero header,
/// i.e. never-written space).
pub fn validate(
    buf: &[u8],
    lsn: Lsn,
    seg_rem: u64,
    max_record: u64,
) -> Result<ValidRecord, String> {
    let buf = &buf[..buf
        .len()
        .min(usize::try_from(seg_rem).unwrap_or(usize::MAX))];
    match check(buf, lsn.0, seg_rem, max_record) {
        Ok(h) => Ok(ValidRecord {
            lsn: Lsn(h.lsn),
            term: h.term,
            kind: h.kind,
            len: h.len,
            total: h.total(),
        }),
        Err(Invalid::Zero) => Err("zero".into()),
        Err(Invalid::Bad(why)) => Err(why),
    }
}

/// Reads the length fields of a header without validating the CRC (used where the
/// bytes were validated before, e.g. walking record boundaries for `read_raw`).
/// Returns (lsn, total, kind) or None if the header is not plausible.
pub(crate) fn peek(buf: &[u8]) -> Option<(u64, u64, u8, Term)> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let len = LE::read_u32(&buf[4..8]);
    let lsn = LE::read_u64(&buf[8..16]);
    let term = LE::read_u64(&buf[16..24]);
    let k = buf[24];
    if !kind::is_valid(k) {
        return None;
    }
    Some((lsn, aligned_len(len as usize), k, term))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1 << 20;

    #[test]
    fn layout_is_as_documented() {
        let mut v = Vec::new();
        encode(Lsn(0x1000), 7, 16, b"hello", &mut v);
        assert_eq!(v.len(), 40);
        assert_eq!(LE::read_u32(&v[4..8]), 5);
        assert_eq!(LE::read_u64(&v[8..16]), 0x1000);
        assert_eq!(LE::read_u64(&v[16..24]), 7);
        assert_eq!(v[24], 16);
        assert!(v[25..32].iter().all(|&b| b == 0));
        assert_eq!(&v[32..37], b"hello");
        assert!(v[37..40].iter().all(|&b| b == 0));
        assert_eq!(LE::read_u32(&v[0..4]), crc32fast::hash(&v[4..]));
        let h = check(&v, 0x1000, SEG, SEG / 2).unwrap();
        assert_eq!((h.len, h.lsn, h.term, h.kind), (5, 0x1000, 7, 16));
    }

    #[test]
    fn nonzero_alignment_bytes_are_refused_even_with_a_matching_crc() {
        // Found by the wal_record fuzz target: a record whose alignment bytes were
        // not zero, with a CRC computed over them, was accepted but did not
        // re-encode to the stored bytes.
        let mut v = Vec::new();
        encode(Lsn(0x10), 1, 16, &[0u8; 6], &mut v);
        assert_eq!(v.len(), 40);
        v[39] = 1;
        let crc = crc32fast::hash(&v[4..]);
        LE::write_u32(&mut v[0..4], crc);
        match check(&v, 0x10, SEG, SEG / 2) {
            Err(Invalid::Bad(why)) => assert!(why.contains("alignment"), "{why}"),
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn aligned_lengths() {
        assert_eq!(aligned_len(0), 32);
        assert_eq!(aligned_len(1), 40);
        assert_eq!(aligned_len(8), 40);
        assert_eq!(aligned_len(9), 48);
    }

    #[test]
    fn zero_is_never_a_record() {
        assert_eq!(check(&[0u8; 64], 0, SEG, SEG / 2), Err(Invalid::Zero));
        assert_eq!(check(&[0u8; 8], 0, 8, SEG / 2), Err(Invalid::Zero));
        let mut v = Vec::new();
        encode(Lsn(0), 1, 0, b"x", &mut v);
        assert!(matches!(check(&v, 0, SEG, SEG / 2), Err(Invalid::Bad(m)) if m.contains("kind")));
        let mut v = Vec::new();
        encode(Lsn(0), 1, 5, b"x", &mut v);
        assert!(matches!(check(&v, 0, SEG, SEG / 2), Err(Invalid::Bad(m)) if m.contains("kind")));
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let mut v = Vec::new();
        encode(Lsn(64), 3, 17, b"some payload bytes", &mut v);
        for i in 0..v.len() * 8 {
            let mut w = v.clone();
            w[i / 8] ^= 1 << (i % 8);
            assert!(check(&w, 64, SEG - 64, SEG / 2).is_err(), "bit {i}");
        }
    }

    #[test]
    fn segment_rules() {
        let mut v = Vec::new();
        encode(Lsn(0), 1, 16, &[1u8; 100], &mut v);
        let total = v.len() as u64;
        // ok when it exactly fills or leaves >= 32 bytes
        assert!(check(&v, 0, total, SEG).is_ok());
        assert!(check(&v, 0, total + 32, SEG).is_ok());
        // leaves a tail smaller than a header
        assert!(check(&v, 0, total + 8, SEG).is_err());
        // crosses the segment end
        assert!(check(&v, 0, total - 8, SEG).is_err());
        // exceeds the max record size
        assert!(check(&v, 0, SEG, total - 8).is_err());
        // wrong LSN
        assert!(check(&v, 8, SEG, SEG).is_err());
        // truncated buffer
        assert!(check(&v[..v.len() - 8], 0, SEG, SEG).is_err());
        // padding must end at the segment end
        let mut p = Vec::new();
        encode(Lsn(0), 1, kind::PADDING, &[0u8; 64], &mut p);
        assert!(check(&p, 0, p.len() as u64, SEG).is_ok());
        assert!(check(&p, 0, p.len() as u64 + 32, SEG).is_err());
    }

    #[test]
    fn public_validate_matches_check() {
        let mut v = Vec::new();
        encode(Lsn(64), 3, 17, b"payload", &mut v);
        let r = validate(&v, Lsn(64), SEG - 64, SEG / 2).unwrap();
        assert_eq!(
            r,
            ValidRecord {
                lsn: Lsn(64),
                term: 3,
                kind: 17,
                len: 7,
                total: v.len() as u64
            }
        );
        assert_eq!(
            validate(&[0u8; 40], Lsn(0), SEG, SEG / 2),
            Err("zero".into())
        );
        assert!(validate(&v, Lsn(72), SEG, SEG / 2)
            .unwrap_err()
            .contains("LSN"));
        // Bytes beyond seg_rem are not part of the segment: a record that needs them
        // is refused, whatever the buffer holds.
        v.extend_from_slice(&[0u8; 64]);
        let total = aligned_len(7);
        assert!(validate(&v, Lsn(64), total - 8, SEG).is_err());
        assert!(validate(&v, Lsn(64), total, SEG).is_ok());
    }

    #[test]
    fn zero_payload_header_matches_explicit() {
        let mut a = [0u8; HEADER_LEN];
        let mut b = [0u8; HEADER_LEN];
        let c1 = fill_header_zero_payload(&mut a, 8, 2, kind::PADDING, 10_000, None);
        let c2 = fill_header(&mut b, 8, 2, kind::PADDING, &[0u8; 10_000]);
        assert_eq!(c1, c2);
        assert_eq!(a, b);
    }
}
