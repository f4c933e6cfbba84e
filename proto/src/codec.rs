//! Framing: the length prefix, the limits, and the tokio-util codec.
//!
//! Invariant (enforced in [`FrameCodec::decode`]): the announced length is
//! compared with the limit in force using only the 4-byte header, before the
//! read buffer is grown for the frame; so a peer can make this side buffer at
//! most `4 + limit` bytes.

use byteorder::{BigEndian, ByteOrder};
use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{ProtoError, Result};
use crate::message::{decode_body, type_name, types, Message};

/// Default limit on a frame's length N (type byte + body): 64 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 20;

/// Limit on N while the handshake is in progress: 64 KiB. A `Hello`, `HelloOk`
/// or `Error` is far smaller; an unauthenticated peer cannot make a node buffer more.
pub const HANDSHAKE_MAX_FRAME_BYTES: usize = 64 << 10;

/// The largest limit a codec accepts (the length prefix is a `u32`).
pub const MAX_FRAME_BYTES_CEILING: usize = u32::MAX as usize;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Encodes [`Message`]s into frames and decodes frames into messages.
///
/// A codec starts in the *handshake phase*, where the limit is
/// `min(max_frame_bytes, HANDSHAKE_MAX_FRAME_BYTES)`; [`FrameCodec::finish_handshake`]
/// (called by the handshake helpers on success) raises it to `max_frame_bytes`.
/// The limit applies to both directions: the encoder refuses a message the
/// peer's decoder (configured alike) would refuse.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_bytes: usize,
    handshaking: bool,
}

impl Default for FrameCodec {
    /// `FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)`: handshake phase, then 64 MiB.
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameCodec {
    /// A codec in the handshake phase whose limit after the handshake is
    /// `max_frame_bytes` (clamped to `1..=MAX_FRAME_BYTES_CEILING`).
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameCodec {
            max_frame_bytes: max_frame_bytes.clamp(1, MAX_FRAME_BYTES_CEILING),
            handshaking: true,
        }
    }

    /// A codec already past the handshake (limit `max_frame_bytes`, clamped as
    /// in [`FrameCodec::new`]): for links that do not run a handshake, e.g. tests.
    pub fn established(max_frame_bytes: usize) -> Self {
        let mut c = FrameCodec::new(max_frame_bytes);
        c.finish_handshake();
        c
    }

    /// Leaves the handshake phase: from now on the limit is `max_frame_bytes`.
    pub fn finish_handshake(&mut self) {
        self.handshaking = false;
    }

    /// Changes the limit after the handshake (clamped as in [`FrameCodec::new`]),
    /// e.g. to a node's client limit once the peer turned out to be a client.
    /// Takes effect at the next frame; a frame already partly buffered is
    /// checked against the new limit as well.
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.max_frame_bytes = max_frame_bytes.clamp(1, MAX_FRAME_BYTES_CEILING);
    }

    /// Whether the small handshake limit is still in force.
    pub fn is_handshaking(&self) -> bool {
        self.handshaking
    }

    /// The limit after the handshake.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// The limit on N (type byte + body) in force now, for both directions.
    pub fn limit(&self) -> usize {
        if self.handshaking {
            self.max_frame_bytes.min(HANDSHAKE_MAX_FRAME_BYTES)
        } else {
            self.max_frame_bytes
        }
    }
}

/// Types whose body has one fixed size: checked as soon as the header is seen,
/// so such a frame cannot make the decoder buffer more than that.
fn fixed_body_len(type_byte: u8) -> Option<usize> {
    match type_byte {
        types::TRUNCATE => Some(8),
        types::FOLLOWER_STATUS => Some(40),
        types::BASE_BACKUP_REQUEST => Some(16),
        types::BASE_BACKUP_END => Some(12),
        _ => None,
    }
}

impl Decoder for FrameCodec {
    type Item = Message;
    type Error = ProtoError;

    /// Returns `Ok(None)` until a whole frame is buffered, then the message.
    /// Never panics on any input. Errors: `FrameTooLarge` (from the header
    /// alone), `BadMagic` (text where the first header should be), `Malformed`
    /// (zero length, body not matching its type), `UnknownType`,
    /// `VersionMismatch` (a `Hello` this version cannot parse).
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>> {
        if src.len() < LENGTH_PREFIX_BYTES {
            return Ok(None);
        }
        let header = [src[0], src[1], src[2], src[3]];
        let n = BigEndian::read_u32(&header) as usize;
        let limit = self.limit();
        if n > limit {
            if self.handshaking && header.iter().all(|&c| c.is_ascii_graphic() || c == b' ') {
                // e.g. "GET " from an HTTP client on the binary port; as a
                // length this is always > 512 MiB, far above the handshake limit.
                return Err(ProtoError::BadMagic { found: header });
            }
            return Err(ProtoError::FrameTooLarge {
                len: n as u64,
                max: limit,
            });
        }
        if n == 0 {
            return Err(ProtoError::malformed(
                "frame",
                "length",
                "zero (no type byte)",
            ));
        }
        if src.len() > LENGTH_PREFIX_BYTES {
            let ty = src[LENGTH_PREFIX_BYTES];
            let name = type_name(ty).ok_or(ProtoError::UnknownType(ty))?;
            if let Some(body) = fixed_body_len(ty) {
                if n != body + 1 {
                    return Err(ProtoError::malformed(name, "length", "wrong size for type"));
                }
            }
        }
        let total = LENGTH_PREFIX_BYTES + n;
        if src.len() < total {
            // Bounded: n <= limit was checked above.
            src.reserve(total - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(total).freeze();
        frame.advance(LENGTH_PREFIX_BYTES);
        let ty = frame.get_u8();
        decode_body(ty, frame).map(Some)
    }
}

impl Encoder<&Message> for FrameCodec {
    type Error = ProtoError;

    /// Appends one frame to `dst`: reserves once, writes the header, then the
    /// body directly (for `WalData`, one copy of the WAL bytes). Refuses with
    /// `FrameTooLarge`, writing nothing, a message whose N exceeds the limit.
    fn encode(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<()> {
        let n = msg.body_len().saturating_add(1);
        let limit = self.limit();
        if n > limit as u64 {
            return Err(ProtoError::FrameTooLarge { len: n, max: limit });
        }
        // n <= limit <= u32::MAX, so these casts are exact.
        let n = n as usize;
        dst.reserve(LENGTH_PREFIX_BYTES + n);
        let start = dst.len();
        dst.put_u32(n as u32);
        dst.put_u8(msg.type_byte());
        msg.encode_body(dst);
        debug_assert_eq!(
            dst.len() - start,
            LENGTH_PREFIX_BYTES + n,
            "body_len mismatch for {}",
            msg.name()
        );
        Ok(())
    }
}

impl Encoder<Message> for FrameCodec {
    type Error = ProtoError;

    /// As `Encoder<&Message>`.
    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<()> {
        self.encode(&msg, dst)
    }
}
