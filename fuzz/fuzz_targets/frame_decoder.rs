//! `frame_decoder`: `proto::FrameCodec` decoding an arbitrary byte stream, whole
//! and split into arbitrary chunks, and the failover payloads it carries.
//!
//! Input: mode byte ([`frame_limit_mode`]: handshake-phase codec or an established
//! one with a 64 KiB / 1 MiB / 16 MiB limit), split seed byte, then the stream.
//! Checks:
//! * decode never panics (errors end the stream, as a connection would end);
//! * the same messages and the same error come out whether the stream arrives at
//!   once or in chunks of 1..4096 bytes (the split is chosen by the seed byte);
//! * every decoded message re-encodes to exactly the bytes of its frame (except a
//!   `Hello` of another protocol version, which may carry more fields);
//! * a `Failover` payload decodes (`failover::Message::decode`) without panic, and
//!   re-encodes to the same bytes when it decodes.
//!
//! Allocation is bounded by the codec's limit (checked from the 4-byte header), so
//! libFuzzer's `-malloc_limit_mb=64` catches any length-driven allocation beyond it.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proto::{FrameCodec, Message};
use tokio_util::codec::{Decoder, Encoder};
use walship_fuzz::format::{frame_limit_mode, Splitter};

/// What one decode step produced: a message and its frame bytes, or an error.
#[derive(Debug, PartialEq)]
enum Step {
    Msg(Message, Vec<u8>),
    Err(String),
}

fn codec(mode: u8) -> FrameCodec {
    match frame_limit_mode(mode) {
        (true, max) => FrameCodec::new(max),
        (false, max) => FrameCodec::established(max),
    }
}

/// Decodes everything buffered; returns false once an error ended the stream.
fn drain(c: &mut FrameCodec, buf: &mut BytesMut, out: &mut Vec<Step>) -> bool {
    loop {
        let before = buf.clone();
        match c.decode(buf) {
            Ok(Some(m)) => {
                let used = before.len() - buf.len();
                out.push(Step::Msg(m, before[..used].to_vec()));
            }
            Ok(None) => {
                assert_eq!(buf.len(), before.len(), "Ok(None) consumed bytes");
                return true;
            }
            Err(e) => {
                out.push(Step::Err(e.to_string()));
                return false;
            }
        }
    }
}

fn check_message(m: &Message, frame: &[u8], mode: u8) {
    let hello_other_version =
        matches!(m, Message::Hello(h) if h.version != proto::PROTOCOL_VERSION);
    if !hello_other_version {
        let mut again = BytesMut::new();
        codec(mode)
            .encode(m, &mut again)
            .expect("a decoded message must encode under the same limit");
        assert_eq!(
            &again[..],
            frame,
            "decoded message does not re-encode: {m:?}"
        );
    }
    if let Message::Failover(payload) = m {
        if let Ok(fm) = failover::Message::decode(payload) {
            assert_eq!(
                &fm.encode()[..],
                &payload[..],
                "failover message does not re-encode"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (mode, seed, stream) = match data {
        [m, s, rest @ ..] => (*m, *s, rest),
        _ => return,
    };

    // The whole stream at once.
    let mut whole = Vec::new();
    let mut c = codec(mode);
    let mut buf = BytesMut::from(stream);
    if drain(&mut c, &mut buf, &mut whole) {
        // At the end of the stream: a partial frame is an error, nothing is lost.
        if let Ok(Some(m)) = c.decode_eof(&mut buf) {
            panic!("decode_eof produced {m:?} after decode returned None");
        }
    }
    for s in &whole {
        if let Step::Msg(m, frame) = s {
            check_message(m, frame, mode);
        }
    }

    // The same stream in chunks.
    let mut split = Vec::new();
    let mut c = codec(mode);
    let mut buf = BytesMut::new();
    let mut sizes = Splitter::new(seed);
    let mut rest = stream;
    while !rest.is_empty() {
        let n = sizes.next_len().min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if !drain(&mut c, &mut buf, &mut split) {
            break;
        }
    }
    assert_eq!(
        whole, split,
        "chunked decoding differs from whole-stream decoding"
    );
});
