//! Encode → decode round trips, split delivery, zero-copy, and malformed frames.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use proptest::prelude::*;
use proto::{types, FrameCodec, Message, ProtoError, DEFAULT_MAX_FRAME_BYTES};
use tokio_util::codec::{Decoder, Encoder};

const LIMIT: usize = 1 << 20;

#[test]
fn every_variant_round_trips() {
    let samples = samples();
    let mut seen = [false; VARIANTS];
    for m in &samples {
        seen[variant_index(m)] = true;
        let mut buf = encode(m, LIMIT);
        assert_eq!(buf.len() as u64, 5 + m.body_len(), "body_len of {m:?}");
        assert_eq!(
            u32::from_be_bytes(buf[..4].try_into().unwrap()) as u64,
            1 + m.body_len()
        );
        assert_eq!(buf[4], m.type_byte());
        let mut codec = FrameCodec::established(LIMIT);
        let got = codec.decode(&mut buf).expect("decode").expect("one frame");
        assert_eq!(&got, m);
        assert!(buf.is_empty());
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        // Encoding by value gives the same bytes.
        let mut by_value = BytesMut::new();
        FrameCodec::established(LIMIT)
            .encode(m.clone(), &mut by_value)
            .unwrap();
        assert_eq!(by_value, encode(m, LIMIT));
    }
    assert!(seen.iter().all(|s| *s), "a variant has no sample: {seen:?}");
}

#[test]
fn type_bytes_are_stable() {
    // The wire spec: changing one of these breaks every deployed peer.
    let expect = [
        (types::HELLO, 0x01, "Hello"),
        (types::HELLO_OK, 0x02, "HelloOk"),
        (types::ERROR, 0x03, "Error"),
        (types::START_REPLICATION, 0x10, "StartReplication"),
        (types::TRUNCATE, 0x11, "Truncate"),
        (types::WAL_DATA, 0x12, "WalData"),
        (types::KEEPALIVE, 0x13, "Keepalive"),
        (types::FOLLOWER_STATUS, 0x14, "FollowerStatus"),
        (types::BASE_BACKUP_REQUEST, 0x15, "BaseBackupRequest"),
        (types::BASE_BACKUP_START, 0x16, "BaseBackupStart"),
        (types::BASE_BACKUP_DATA, 0x17, "BaseBackupData"),
        (types::BASE_BACKUP_END, 0x18, "BaseBackupEnd"),
        (types::FAILOVER, 0x20, "Failover"),
        (types::CLIENT_REQUEST, 0x30, "ClientRequest"),
        (types::CLIENT_RESPONSE, 0x31, "ClientResponse"),
    ];
    for (t, v, name) in expect {
        assert_eq!(t, v);
        assert_eq!(proto::type_name(t), Some(name));
    }
    for m in samples() {
        assert_eq!(proto::type_name(m.type_byte()), Some(m.name()));
    }
}

#[test]
fn exact_bytes_of_a_keepalive() {
    let m = Message::Keepalive {
        term: 2,
        leader_id: "n1".into(),
        flush_lsn: 0x10,
        commit_lsn: 0x0F,
        send_time_us: 5,
        reply_requested: true,
    };
    let mut want = BytesMut::new();
    want.put_u32(1 + 8 + 4 + 2 + 8 * 3 + 1);
    want.put_u8(0x13);
    want.put_u64(2);
    want.put_u32(2);
    want.put_slice(b"n1");
    want.put_u64(0x10);
    want.put_u64(0x0F);
    want.put_u64(5);
    want.put_u8(1);
    assert_eq!(encode(&m, LIMIT), want);
}

#[test]
fn exact_bytes_of_a_base_backup_session() {
    let start = Message::BaseBackupStart {
        checkpoint_lsn: 0x100,
        term: 2,
        entries: 7,
        total_len: 4096,
        offset: 512,
        term_history: vec![(1, 0), (2, 0x80)],
    };
    let mut want = BytesMut::new();
    want.put_u32(1 + 8 * 5 + 4 + 16 * 2);
    want.put_u8(0x16);
    for v in [0x100u64, 2, 7, 4096, 512] {
        want.put_u64(v);
    }
    want.put_u32(2);
    for v in [1u64, 0, 2, 0x80] {
        want.put_u64(v);
    }
    assert_eq!(encode(&start, LIMIT), want);

    let req = Message::BaseBackupRequest {
        checkpoint_lsn: 0x100,
        offset: 512,
    };
    let mut want = BytesMut::new();
    want.put_u32(17);
    want.put_u8(0x15);
    want.put_u64(0x100);
    want.put_u64(512);
    assert_eq!(encode(&req, LIMIT), want);

    let end = Message::BaseBackupEnd {
        total_len: 4096,
        crc32: 0xAABB_CCDD,
    };
    let mut want = BytesMut::new();
    want.put_u32(13);
    want.put_u8(0x18);
    want.put_u64(4096);
    want.put_u32(0xAABB_CCDD);
    assert_eq!(encode(&end, LIMIT), want);

    let data = Message::BaseBackupData {
        offset: 9,
        bytes: Bytes::from_static(b"abc"),
    };
    let mut want = BytesMut::new();
    want.put_u32(1 + 8 + 3);
    want.put_u8(0x17);
    want.put_u64(9);
    want.put_slice(b"abc");
    assert_eq!(encode(&data, LIMIT), want);
}

#[test]
fn base_backup_start_history_count_is_checked_before_allocation() {
    // A count that claims 2^32-1 entries in a frame holding one: refused, no allocation.
    for (count, entries) in [(u32::MAX, 1usize), (2, 1), (0, 1), (1, 2)] {
        let mut frame = BytesMut::new();
        frame.put_u32((1 + 8 * 5 + 4 + 16 * entries) as u32);
        frame.put_u8(0x16);
        for _ in 0..5 {
            frame.put_u64(1);
        }
        frame.put_u32(count);
        for _ in 0..entries {
            frame.put_u64(1);
            frame.put_u64(2);
        }
        let r = FrameCodec::established(LIMIT).decode(&mut frame);
        assert!(
            matches!(r, Err(ProtoError::Malformed { .. })),
            "count {count} with {entries} entries: {r:?}"
        );
    }
    // Fixed-size messages with a wrong N are refused from the header alone.
    for t in [0x15u8, 0x18] {
        let mut frame = BytesMut::new();
        frame.put_u32(1 << 20);
        frame.put_u8(t);
        assert!(FrameCodec::established(LIMIT).decode(&mut frame).is_err());
    }
}

fn all_frames() -> (BytesMut, Vec<Message>) {
    let samples = samples();
    let mut buf = BytesMut::new();
    let mut codec = FrameCodec::established(LIMIT);
    for m in &samples {
        codec.encode(m, &mut buf).unwrap();
    }
    (buf, samples)
}

#[test]
fn many_frames_in_one_buffer() {
    let (mut buf, samples) = all_frames();
    let got = decode_all(&mut FrameCodec::established(LIMIT), &mut buf);
    assert_eq!(got, samples);
    assert!(buf.is_empty());
}

#[test]
fn byte_by_byte_delivery_decodes_identically() {
    let (all, samples) = all_frames();
    let mut codec = FrameCodec::established(LIMIT);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &b in all.iter() {
        buf.put_u8(b);
        while let Some(m) = codec.decode(&mut buf).expect("decode") {
            got.push(m);
        }
    }
    assert_eq!(got, samples);
    assert!(buf.is_empty());
}

#[test]
fn wal_data_decode_is_zero_copy() {
    let m = Message::WalData {
        start_lsn: 8192,
        bytes: Bytes::from(vec![7u8; 4096]),
    };
    let mut buf = encode(&m, LIMIT);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Some(Message::WalData { bytes, .. }) =
        FrameCodec::established(LIMIT).decode(&mut buf).unwrap()
    else {
        panic!("not WalData");
    };
    assert!(
        range.contains(&(bytes.as_ptr() as usize)),
        "WalData bytes were copied out of the read buffer"
    );
}

#[test]
fn default_codec_limits() {
    let mut c = FrameCodec::default();
    assert!(c.is_handshaking());
    assert_eq!(c.limit(), proto::HANDSHAKE_MAX_FRAME_BYTES);
    assert_eq!(c.max_frame_bytes(), DEFAULT_MAX_FRAME_BYTES);
    c.finish_handshake();
    assert_eq!(c.limit(), DEFAULT_MAX_FRAME_BYTES);
    assert_eq!(FrameCodec::new(1024).limit(), 1024);
    assert_eq!(FrameCodec::established(0).limit(), 1);
    assert_eq!(
        FrameCodec::established(usize::MAX).limit(),
        proto::MAX_FRAME_BYTES_CEILING
    );
}

#[test]
fn handshake_phase_limit_applies_until_finished() {
    let big = Message::WalData {
        start_lsn: 0,
        bytes: Bytes::from(vec![1u8; 100 << 10]),
    };
    let frame = encode(&big, LIMIT);
    let mut codec = FrameCodec::new(LIMIT);
    let mut buf = frame.clone();
    match codec.decode(&mut buf) {
        Err(ProtoError::FrameTooLarge { len, max }) => {
            assert_eq!(len, 1 + big.body_len());
            assert_eq!(max, proto::HANDSHAKE_MAX_FRAME_BYTES);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    // The encoder applies the same limit.
    assert!(matches!(
        codec.encode(&big, &mut BytesMut::new()),
        Err(ProtoError::FrameTooLarge { .. })
    ));
    codec.finish_handshake();
    let mut buf = frame;
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(big));
}

#[test]
fn encoder_refuses_oversized_and_writes_nothing() {
    let m = Message::Failover(Bytes::from(vec![0u8; 1000]));
    let mut dst = BytesMut::from(&b"prefix"[..]);
    let err = FrameCodec::established(1000)
        .encode(&m, &mut dst)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProtoError::FrameTooLarge {
                len: 1001,
                max: 1000
            }
        ),
        "{err}"
    );
    assert_eq!(&dst[..], b"prefix");
    // Exactly at the limit is fine.
    let m = Message::Failover(Bytes::from(vec![0u8; 999]));
    FrameCodec::established(1000).encode(&m, &mut dst).unwrap();
}

/// Builds a frame from a type byte and a raw body.
fn raw_frame(ty: u8, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32(1 + body.len() as u32);
    b.put_u8(ty);
    b.put_slice(body);
    b
}

fn decode_one(mut buf: BytesMut) -> Result<Option<Message>, ProtoError> {
    FrameCodec::established(LIMIT).decode(&mut buf)
}

/// Types whose last field runs to the end of the frame, so a shorter or longer
/// body can still be valid.
fn open_ended(m: &Message) -> bool {
    matches!(
        m,
        Message::WalData { .. } | Message::Failover(_) | Message::BaseBackupData { .. }
    ) || matches!(m, Message::Hello(h) if h.version != proto::PROTOCOL_VERSION)
}

#[test]
fn truncated_bodies_are_malformed_never_panic() {
    for m in samples() {
        let frame = encode(&m, LIMIT);
        let body = &frame[5..];
        for cut in 0..body.len() {
            let r = decode_one(raw_frame(m.type_byte(), &body[..cut]));
            match (&m, r) {
                (_, Err(ProtoError::Malformed { .. })) => {}
                (Message::Hello(h), Err(ProtoError::VersionMismatch { got, .. }))
                    if h.version == got => {}
                (Message::WalData { .. }, Ok(Some(_))) if cut >= 8 => {}
                (Message::BaseBackupData { .. }, Ok(Some(_))) if cut >= 8 => {}
                (Message::Failover(_), Ok(Some(_))) => {}
                (_, r) => panic!("{} cut at {cut}: {r:?}", m.name()),
            }
        }
    }
}

#[test]
fn trailing_bytes_are_malformed_for_exact_layouts() {
    for m in samples() {
        let frame = encode(&m, LIMIT);
        let mut body = frame[5..].to_vec();
        body.push(0);
        let r = decode_one(raw_frame(m.type_byte(), &body));
        if open_ended(&m) {
            assert!(matches!(r, Ok(Some(_))), "{}: {r:?}", m.name());
        } else {
            assert!(
                matches!(r, Err(ProtoError::Malformed { .. })),
                "{}: {r:?}",
                m.name()
            );
        }
    }
}

fn expect_malformed(ty: u8, body: &[u8], field_part: &str) {
    match decode_one(raw_frame(ty, body)) {
        Err(ProtoError::Malformed { field, .. }) if field.contains(field_part) => {}
        other => panic!("type {ty:#x}: expected Malformed({field_part}), got {other:?}"),
    }
}

#[test]
fn specific_malformed_bodies() {
    // Keepalive with reply_requested = 2.
    let mut b = BytesMut::new();
    b.put_u64(1);
    b.put_u32(0);
    b.put_u64(0);
    b.put_u64(0);
    b.put_u64(0);
    b.put_u8(2);
    expect_malformed(types::KEEPALIVE, &b, "reply_requested");
    // Error with invalid UTF-8 message.
    expect_malformed(types::ERROR, &[0, 1, 0, 0, 0, 2, 0xC3, 0x28], "message");
    // Error whose string length exceeds the frame.
    expect_malformed(
        types::ERROR,
        &[0, 1, 0xFF, 0xFF, 0xFF, 0xFF, b'x'],
        "message",
    );
    // ClientRequest with unknown op.
    let mut b = BytesMut::new();
    b.put_u64(1);
    b.put_u8(99);
    expect_malformed(types::CLIENT_REQUEST, &b, "op");
    // ClientRequest Delete with unknown ack level.
    let mut b = BytesMut::new();
    b.put_u64(1);
    b.put_u8(3);
    b.put_u32(1);
    b.put_u8(b'k');
    b.put_u8(5);
    expect_malformed(types::CLIENT_REQUEST, &b, "ack");
    // ClientResponse with unknown result kind.
    let mut b = BytesMut::new();
    b.put_u64(1);
    b.put_u8(0);
    expect_malformed(types::CLIENT_RESPONSE, &b, "result");
    // StartReplication announcing 2^32-1 entries in a tiny body: refused before allocating.
    let mut b = BytesMut::new();
    b.put_u32(u32::MAX);
    b.put_u64(0);
    b.put_u64(0);
    b.put_u64(0);
    expect_malformed(types::START_REPLICATION, &b, "count");
    // HelloOk with a presence flag of 7.
    let mut b = BytesMut::new();
    b.put_u32(0);
    b.put_u64(0);
    b.put_u8(7);
    expect_malformed(types::HELLO_OK, &b, "leader_id");
    // Hello with an unknown peer kind.
    let mut b = BytesMut::new();
    b.put_slice(b"WSHP");
    b.put_u16(proto::PROTOCOL_VERSION);
    b.put_u32(0);
    b.put_u8(9);
    b.put_u32(0);
    expect_malformed(types::HELLO, &b, "peer");
}

#[test]
fn frame_level_errors() {
    // Zero length.
    assert!(matches!(
        decode_one(BytesMut::from(&[0u8, 0, 0, 0][..])),
        Err(ProtoError::Malformed {
            message: "frame",
            ..
        })
    ));
    // Unknown type: reported as soon as the type byte arrives.
    assert!(matches!(
        decode_one(BytesMut::from(&[0u8, 0, 1, 0, 0x7F][..])),
        Err(ProtoError::UnknownType(0x7F))
    ));
    // Fixed-size type with the wrong N: reported before the body arrives.
    assert!(matches!(
        decode_one(BytesMut::from(&[0u8, 0, 1, 0, types::TRUNCATE][..])),
        Err(ProtoError::Malformed {
            message: "Truncate",
            ..
        })
    ));
    // Bad magic in a Hello.
    let mut b = BytesMut::new();
    b.put_slice(b"XSHP");
    b.put_u16(1);
    assert!(matches!(
        decode_one(raw_frame(types::HELLO, &b)),
        Err(ProtoError::BadMagic { found }) if &found == b"XSHP"
    ));
    // An HTTP request on the binary port, before the handshake.
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
    let err = FrameCodec::default().decode(&mut buf).unwrap_err();
    assert!(matches!(err, ProtoError::BadMagic { .. }), "{err:?}");
    assert!(err.to_string().contains("\"GET \""), "{err}");
    // After the handshake the same bytes are just a too-large frame.
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
    assert!(matches!(
        FrameCodec::established(LIMIT).decode(&mut buf),
        Err(ProtoError::FrameTooLarge { .. })
    ));
}

#[test]
fn hello_of_another_version_reports_version_mismatch() {
    // A future Hello whose fields after the version this build cannot parse.
    let mut b = BytesMut::new();
    b.put_slice(b"WSHP");
    b.put_u16(proto::PROTOCOL_VERSION + 1);
    b.put_u8(0xEE);
    match decode_one(raw_frame(types::HELLO, &b)) {
        Err(ProtoError::VersionMismatch { got, supported }) => {
            assert_eq!(got, proto::PROTOCOL_VERSION + 1);
            assert_eq!(supported, proto::PROTOCOL_VERSION);
        }
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_messages_round_trip(msgs in prop::collection::vec(arb_message(), 1..8)) {
        let mut codec = FrameCodec::established(LIMIT);
        let mut buf = BytesMut::new();
        for m in &msgs {
            let before = buf.len();
            codec.encode(m, &mut buf).unwrap();
            prop_assert_eq!((buf.len() - before) as u64, 5 + m.body_len());
        }
        let got = decode_all(&mut codec, &mut buf);
        prop_assert_eq!(got, msgs);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_split_delivery_decodes_identically(
        msgs in prop::collection::vec(arb_message(), 1..6),
        cuts in prop::collection::vec(1usize..64, 1..64),
    ) {
        let mut all = BytesMut::new();
        let mut enc = FrameCodec::established(LIMIT);
        for m in &msgs {
            enc.encode(m, &mut all).unwrap();
        }
        let mut codec = FrameCodec::established(LIMIT);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < all.len() {
            let n = cuts[i % cuts.len()].min(all.len() - pos);
            i += 1;
            buf.put_slice(&all[pos..pos + n]);
            pos += n;
            while let Some(m) = codec.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        prop_assert_eq!(got, msgs);
    }
}

/// The header a sender writes before a `BaseBackupData` payload (zero-copy send)
/// is exactly what the codec encodes before it, and the frame decodes.
#[test]
fn base_backup_data_header_matches_the_codec() {
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};
    for len in [0usize, 1, 4096, 1 << 20] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let msg = Message::BaseBackupData {
            offset: 0x0102_0304_0506_0708 + len as u64,
            bytes: bytes::Bytes::from(payload.clone()),
        };
        let mut codec = proto::FrameCodec::established(proto::DEFAULT_MAX_FRAME_BYTES);
        let mut enc = BytesMut::new();
        codec.encode(&msg, &mut enc).unwrap();
        let h = proto::base_backup_data_header(0x0102_0304_0506_0708 + len as u64, len).unwrap();
        let mut raw = h.to_vec();
        raw.extend_from_slice(&payload);
        assert_eq!(&enc[..], &raw[..], "len {len}");
        let mut buf = BytesMut::from(&raw[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(msg));
    }
    assert!(proto::base_backup_data_header(0, u32::MAX as usize).is_none());
}
