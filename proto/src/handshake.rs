//! The handshake: `Hello` → `HelloOk` | `Error`, on both sides, and the
//! checks a server applies to a `Hello`.
//!
//! Neither helper has a time limit of its own: wrap it in
//! `tokio::time::timeout` so a silent peer cannot hold a connection open.

use std::fmt;

use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio_util::codec::Framed;

use crate::codec::FrameCodec;
use crate::codes::ErrorCode;
use crate::error::{ProtoError, Result};
use crate::message::{Hello, HelloOk, Message, Peer};
use crate::PROTOCOL_VERSION;

/// Why a server refuses a peer: the code and reason sent back in an `Error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable reason (`version_mismatch`, `wrong_cluster`, `unauthorized`, ...).
    pub code: ErrorCode,
    /// Human-readable reason; safe to send to the peer (never contains a token).
    pub reason: String,
}

impl Refusal {
    /// A refusal with this code and reason.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: reason.into(),
        }
    }

    /// The `Error` frame that tells the peer.
    pub fn to_message(&self) -> Message {
        Message::Error {
            code: self.code,
            message: self.reason.clone(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}

impl From<Refusal> for ProtoError {
    fn from(r: Refusal) -> Self {
        ProtoError::Refused {
            code: r.code,
            message: r.reason,
        }
    }
}

/// Compares two secrets in time that depends only on their lengths, never on
/// where they differ. (The length of the longer one can leak; token contents cannot.)
pub fn token_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    // Non-zero when the lengths differ; folded in without an early return.
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Server-side checks of a peer's first message, in this order: it is a
/// `Hello` (else `bad_request`), its version equals `version`
/// (`version_mismatch`), its cluster id equals `cluster_id` (`wrong_cluster`),
/// `token_ok(peer, token)` holds (`unauthorized`). Membership of a
/// `Peer::Node` id is the caller's check (`unknown_member`), e.g. in the
/// `accept` callback of [`server_handshake`].
///
/// `token_ok` should compare with [`token_eq`] (constant time).
pub fn validate_hello<'a>(
    msg: &'a Message,
    cluster_id: &str,
    version: u16,
    token_ok: impl FnOnce(&Peer, &str) -> bool,
) -> std::result::Result<&'a Hello, Refusal> {
    let Message::Hello(hello) = msg else {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("expected Hello as the first message, got {}", msg.name()),
        ));
    };
    if hello.version != version {
        return Err(Refusal::new(
            ErrorCode::VersionMismatch,
            format!(
                "protocol version {} is not supported (this node speaks {version})",
                hello.version
            ),
        ));
    }
    if hello.cluster_id != cluster_id {
        return Err(Refusal::new(
            ErrorCode::WrongCluster,
            format!(
                "cluster id {:?} does not match this node's cluster {cluster_id:?}",
                hello.cluster_id
            ),
        ));
    }
    if !token_ok(&hello.peer, &hello.token) {
        return Err(Refusal::new(
            ErrorCode::Unauthorized,
            if hello.token.is_empty() {
                "a token is required (security.token_file)"
            } else {
                "invalid token"
            },
        ));
    }
    Ok(hello)
}

/// Connecting side: sends `hello`, waits for the answer. On `HelloOk`, leaves
/// the codec's handshake phase (full frame limit) and returns it. On `Error`,
/// returns [`ProtoError::Refused`] with the peer's code and reason; the
/// connection should then be dropped.
pub async fn client_handshake<T>(
    framed: &mut Framed<T, FrameCodec>,
    hello: Hello,
) -> Result<HelloOk>
where
    Framed<T, FrameCodec>:
        Stream<Item = Result<Message>> + Sink<Message, Error = ProtoError> + Unpin,
{
    framed.send(Message::Hello(hello)).await?;
    match framed.next().await {
        Some(Ok(Message::HelloOk(ok))) => {
            framed.codec_mut().finish_handshake();
            Ok(ok)
        }
        Some(Ok(Message::Error { code, message })) => Err(ProtoError::Refused { code, message }),
        Some(Ok(other)) => Err(ProtoError::UnexpectedMessage {
            expected: "HelloOk or Error",
            got: other.name(),
        }),
        Some(Err(e)) => Err(e),
        None => Err(ProtoError::Closed {
            during: "handshake",
        }),
    }
}

/// Accepting side: reads the peer's first frame and checks it with
/// [`validate_hello`] (`PROTOCOL_VERSION`, `cluster_id`, `token_ok`), then asks
/// `accept` (membership, current term, leader) for the `HelloOk` to send.
///
/// On success sends `HelloOk`, leaves the codec's handshake phase and returns
/// the peer's `Hello`. On any refusal or undecodable first frame it sends an
/// `Error` frame with the reason (best effort) and returns the error
/// ([`ProtoError::Refused`] for refusals, whose `code`/`message` say why); the
/// caller logs it and drops the connection.
pub async fn server_handshake<T>(
    framed: &mut Framed<T, FrameCodec>,
    cluster_id: &str,
    token_ok: impl FnOnce(&Peer, &str) -> bool,
    accept: impl FnOnce(&Hello) -> std::result::Result<HelloOk, Refusal>,
) -> Result<Hello>
where
    Framed<T, FrameCodec>:
        Stream<Item = Result<Message>> + Sink<Message, Error = ProtoError> + Unpin,
{
    let first = match framed.next().await {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            if !matches!(e, ProtoError::Io(_)) {
                // Best effort: the peer may already be gone; our error is the one to report.
                let _ = framed
                    .send(Message::Error {
                        code: e.code(),
                        message: e.to_string(),
                    })
                    .await;
            }
            return Err(e);
        }
        None => {
            return Err(ProtoError::Closed {
                during: "handshake",
            })
        }
    };
    let verdict = validate_hello(&first, cluster_id, PROTOCOL_VERSION, token_ok).and_then(accept);
    match verdict {
        Ok(ok) => {
            framed.send(Message::HelloOk(ok)).await?;
            framed.codec_mut().finish_handshake();
            match first {
                Message::Hello(hello) => Ok(hello),
                // validate_hello accepted only a Hello.
                other => Err(ProtoError::UnexpectedMessage {
                    expected: "Hello",
                    got: other.name(),
                }),
            }
        }
        Err(refusal) => {
            let _ = framed.send(refusal.to_message()).await;
            Err(refusal.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(version: u16, cluster: &str, token: &str) -> Message {
        Message::Hello(Hello {
            version,
            cluster_id: cluster.into(),
            peer: Peer::Node("n2".into()),
            token: token.into(),
        })
    }

    #[test]
    fn token_eq_is_equality() {
        assert!(token_eq(b"", b""));
        assert!(token_eq(b"secret", b"secret"));
        assert!(!token_eq(b"secret", b"secreT"));
        assert!(!token_eq(b"secret", b"secret2"));
        assert!(!token_eq(b"", b"x"));
        assert!(!token_eq(b"x\0", b"x"));
    }

    #[test]
    fn validate_hello_refusals_in_order() {
        let ok = |_: &Peer, t: &str| token_eq(t.as_bytes(), b"s3cret");
        let v = PROTOCOL_VERSION;
        assert!(validate_hello(&hello(v, "prod", "s3cret"), "prod", v, ok).is_ok());
        let code = |m: &Message| validate_hello(m, "prod", v, ok).unwrap_err().code;
        assert_eq!(code(&hello(v + 1, "x", "bad")), ErrorCode::VersionMismatch);
        assert_eq!(code(&hello(v, "staging", "bad")), ErrorCode::WrongCluster);
        assert_eq!(code(&hello(v, "prod", "bad")), ErrorCode::Unauthorized);
        assert_eq!(
            code(&Message::Truncate { to_lsn: 1 }),
            ErrorCode::BadRequest
        );
        let r = validate_hello(&hello(v, "prod", "bad"), "prod", v, ok).unwrap_err();
        assert!(
            !r.reason.contains("bad"),
            "reason must not echo the token: {r}"
        );
        let r = validate_hello(&hello(v, "staging", ""), "prod", v, ok).unwrap_err();
        assert!(
            r.reason.contains("staging") && r.reason.contains("prod"),
            "{r}"
        );
    }

    #[test]
    fn hello_debug_redacts_token() {
        let s = format!("{:?}", hello(1, "prod", "hunter2"));
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("<redacted>"), "{s}");
    }
}
