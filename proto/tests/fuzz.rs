//! Arbitrary bytes into the decoder: never a panic, never a buffer beyond the limit.

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use proto::{FrameCodec, ProtoError};
use tokio_util::codec::Decoder;

const LIMIT: usize = 1 << 20;

/// Feeds `data` in chunks; returns after the first error (as a connection would).
fn feed(codec: &mut FrameCodec, data: &[u8], chunk: usize) -> (usize, Option<ProtoError>) {
    let mut buf = BytesMut::new();
    let mut frames = 0;
    for piece in data.chunks(chunk.max(1)) {
        buf.put_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => frames += 1,
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
            // The decoder never grows the buffer for a frame beyond the limit.
            assert!(buf.capacity() <= 2 * (LIMIT + 4) + data.len());
        }
    }
    (frames, None)
}

#[test]
fn u32_max_length_is_frame_too_large_without_allocation() {
    for ty in [0x12u8, 0x20, 0x01, 0xFF] {
        let mut buf = BytesMut::with_capacity(16);
        buf.put_u32(u32::MAX);
        buf.put_u8(ty);
        let cap = buf.capacity();
        let err = FrameCodec::established(LIMIT).decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, ProtoError::FrameTooLarge { len, max } if len == u32::MAX as u64 && max == LIMIT),
            "{err:?}"
        );
        assert_eq!(buf.capacity(), cap, "buffer grown for a refused frame");
    }
    // The header alone is enough.
    let mut buf = BytesMut::from(&[0xFFu8, 0xFF, 0xFF, 0xFF][..]);
    assert!(matches!(
        FrameCodec::established(LIMIT).decode(&mut buf),
        Err(ProtoError::FrameTooLarge { .. })
    ));
}

#[test]
fn limit_plus_one_is_refused_limit_is_buffered() {
    let mut buf = BytesMut::new();
    buf.put_u32(LIMIT as u32 + 1);
    buf.put_u8(0x12);
    assert!(matches!(
        FrameCodec::established(LIMIT).decode(&mut buf),
        Err(ProtoError::FrameTooLarge { .. })
    ));
    let mut buf = BytesMut::new();
    buf.put_u32(LIMIT as u32);
    buf.put_u8(0x12);
    assert_eq!(
        FrameCodec::established(LIMIT).decode(&mut buf).unwrap(),
        None
    );
    assert!(
        buf.capacity() >= LIMIT + 4,
        "one reservation for the whole frame"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512), chunk in 1usize..64) {
        feed(&mut FrameCodec::established(LIMIT), &data, chunk);
        feed(&mut FrameCodec::new(LIMIT), &data, chunk);
    }

    /// Plausible frames (small valid length, known type, random body) reach the
    /// body decoders, not just the length check.
    #[test]
    fn random_bodies_of_known_types_never_panic(
        frames in prop::collection::vec(
            (prop::sample::select(vec![0x01u8, 0x02, 0x03, 0x10, 0x11, 0x12, 0x13, 0x14, 0x20, 0x30, 0x31]),
             prop::collection::vec(any::<u8>(), 0..96)),
            1..8),
        chunk in 1usize..64,
    ) {
        let mut data = Vec::new();
        for (ty, body) in &frames {
            data.put_u32(1 + body.len() as u32);
            data.put_u8(*ty);
            data.put_slice(body);
        }
        feed(&mut FrameCodec::established(LIMIT), &data, chunk);
    }

    /// Random bodies that start like a valid field layout: small length
    /// prefixes so string/bytes fields often fit.
    #[test]
    fn structured_noise_never_panics(
        ty in prop::sample::select(vec![0x01u8, 0x02, 0x03, 0x10, 0x13, 0x30, 0x31]),
        words in prop::collection::vec(0u32..8, 0..24),
    ) {
        let mut body = Vec::new();
        if ty == 0x01 { body.put_slice(b"WSHP"); body.put_u16(1); }
        for w in words { body.put_u32(w); body.put_u8(w as u8); }
        let mut data = Vec::new();
        data.put_u32(1 + body.len() as u32);
        data.put_u8(ty);
        data.put_slice(&body);
        feed(&mut FrameCodec::established(LIMIT), &data, 7);
    }

    #[test]
    fn any_length_above_limit_is_refused_from_header(len in (LIMIT as u32 + 1)..=u32::MAX) {
        let mut buf = BytesMut::new();
        buf.put_u32(len);
        let cap = buf.capacity();
        let r = FrameCodec::established(LIMIT).decode(&mut buf);
        prop_assert!(matches!(r, Err(ProtoError::FrameTooLarge { .. })), "{:?}", r);
        prop_assert_eq!(buf.capacity(), cap);
    }
}
