//! The crate's one error type.

use crate::codes::ErrorCode;

/// Everything that can go wrong while framing, decoding, encoding or handshaking.
///
/// Guarantee: the decoder reports bad input only through this type, it never
/// panics. After any error other than [`ProtoError::Refused`] returned by a
/// handshake helper, the byte stream is no longer in sync and the connection
/// must be closed (send an [`crate::Message::Error`] first if you can).
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A frame header announced (or an encoder would have produced) a frame of
    /// `len` bytes (type byte + body) while the limit is `max`. Detected from
    /// the 4-byte header alone, before any buffer is reserved.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length N (type byte + body), in bytes.
        len: u64,
        /// The limit in force when the frame was seen.
        max: usize,
    },
    /// The frame's body does not match the layout of its type.
    #[error("malformed {message} frame: {field}: {problem}")]
    Malformed {
        /// Name of the message type being decoded (e.g. `"Keepalive"`), or `"frame"`.
        message: &'static str,
        /// The field being decoded (e.g. `"leader_id"`).
        field: &'static str,
        /// What was wrong (e.g. `"length exceeds frame"`).
        problem: &'static str,
    },
    /// The type byte is not one this version knows.
    #[error("unknown message type byte 0x{0:02x}")]
    UnknownType(u8),
    /// The first bytes seen before the handshake are not a walship frame: the
    /// `Hello` magic was wrong, or the length prefix was printable ASCII (an
    /// HTTP client or telnet on the binary port).
    #[error("not a walship peer: first bytes {}", show_bytes(found))]
    BadMagic {
        /// The four bytes found where the magic (or the length prefix) was expected.
        found: [u8; 4],
    },
    /// The peer speaks a protocol version whose `Hello` this build cannot parse,
    /// or validation found a version other than the expected one.
    #[error("protocol version mismatch: peer speaks {got}, this node speaks {supported}")]
    VersionMismatch {
        /// Version announced by the peer.
        got: u16,
        /// Version this node speaks.
        supported: u16,
    },
    /// The peer refused the handshake (it answered our `Hello` with an `Error`),
    /// or we refused the peer's `Hello` (server side).
    #[error("handshake refused ({code}): {message}")]
    Refused {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable reason.
        message: String,
    },
    /// A message arrived where the protocol expects another one.
    #[error("unexpected {got} message, expected {expected}")]
    UnexpectedMessage {
        /// What the protocol expected at this point.
        expected: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// The peer closed the connection before the exchange finished.
    #[error("connection closed by peer during {during}")]
    Closed {
        /// What was in progress (e.g. `"handshake"`).
        during: &'static str,
    },
    /// An I/O error on the underlying transport.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl ProtoError {
    /// The [`ErrorCode`] to send to the peer (in an `Error` frame) before
    /// closing a connection because of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            ProtoError::Malformed { .. }
            | ProtoError::UnknownType(_)
            | ProtoError::BadMagic { .. }
            | ProtoError::UnexpectedMessage { .. } => ErrorCode::BadRequest,
            ProtoError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
            ProtoError::Refused { code, .. } => *code,
            ProtoError::Closed { .. } | ProtoError::Io(_) => ErrorCode::Internal,
        }
    }

    pub(crate) fn malformed(
        message: &'static str,
        field: &'static str,
        problem: &'static str,
    ) -> Self {
        ProtoError::Malformed {
            message,
            field,
            problem,
        }
    }
}

/// Shows up to four bytes as ASCII where printable, `\xNN` otherwise.
fn show_bytes(b: &[u8; 4]) -> String {
    let mut s = String::from("\"");
    for &c in b {
        if c.is_ascii_graphic() || c == b' ' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s.push('"');
    s
}

/// Result alias for this crate.
pub type Result<T, E = ProtoError> = std::result::Result<T, E>;
