//! `handshake`: `proto::server_handshake` / `client_handshake` over an in-memory
//! byte stream the fuzzer writes (the peer's side), with `validate_hello` deciding.
//!
//! Input: [`HandshakeMode`] byte (which side we play, whether the server requires a
//! token, read chunk size), then the bytes the peer sends. Checks:
//! * neither side panics, whatever the peer sends or however it is split;
//! * server: it succeeds only for a `Hello` of this protocol version, of cluster
//!   [`HANDSHAKE_CLUSTER`], from a member or a client, with the right token when one
//!   is required; then it answered exactly one `HelloOk` and left the handshake
//!   phase. On refusal it answered at most one frame, an `Error`, stayed in the
//!   handshake phase, and the reason never echoes the peer's token;
//! * client: it sent exactly its `Hello`; it succeeds only if the peer's first frame
//!   is a `HelloOk`, which it returns, and then it left the handshake phase.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proto::{
    client_handshake, server_handshake, token_eq, ErrorCode, FrameCodec, Hello, HelloOk, Message,
    Peer, ProtoError, Refusal,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::codec::{Decoder, Framed};
use walship_fuzz::format::{HandshakeMode, HANDSHAKE_CLUSTER, HANDSHAKE_MEMBERS, HANDSHAKE_TOKEN};

/// The peer: reads come from the fuzz input (in chunks), writes are collected.
struct Pipe<'a> {
    input: &'a [u8],
    chunk: usize,
    written: Vec<u8>,
}

impl AsyncRead for Pipe<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut n = buf.remaining().min(self.input.len());
        if self.chunk > 0 {
            n = n.min(self.chunk);
        }
        let (now, later) = self.input.split_at(n);
        buf.put_slice(now);
        self.input = later;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Pipe<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Every frame in `bytes`, decoded with a fresh codec past the handshake.
fn frames(bytes: &[u8]) -> Vec<Message> {
    let mut c = FrameCodec::established(proto::DEFAULT_MAX_FRAME_BYTES);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(m) = c.decode(&mut buf).expect("our own frames must decode") {
        out.push(m);
    }
    assert!(buf.is_empty(), "a partial frame was written");
    out
}

fn server(mode: HandshakeMode, peer: &[u8]) {
    let mut framed = Framed::new(
        Pipe {
            input: peer,
            chunk: mode.read_chunk,
            written: Vec::new(),
        },
        FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES),
    );
    let token_ok =
        |_: &Peer, t: &str| !mode.token || token_eq(t.as_bytes(), HANDSHAKE_TOKEN.as_bytes());
    let accept = |h: &Hello| match &h.peer {
        Peer::Node(id) if !HANDSHAKE_MEMBERS.contains(&id.as_str()) => Err(Refusal::new(
            ErrorCode::UnknownMember,
            format!("{id:?} is not a member of this cluster"),
        )),
        _ => Ok(HelloOk {
            node_id: "n1".into(),
            term: 7,
            leader_id: Some("n1".into()),
        }),
    };
    let r = futures::executor::block_on(server_handshake(
        &mut framed,
        HANDSHAKE_CLUSTER,
        token_ok,
        accept,
    ));
    let handshaking = framed.codec().is_handshaking();
    let sent = frames(&framed.get_ref().written);
    match r {
        Ok(hello) => {
            assert_eq!(hello.version, proto::PROTOCOL_VERSION);
            assert_eq!(hello.cluster_id, HANDSHAKE_CLUSTER);
            assert!(!mode.token || hello.token == HANDSHAKE_TOKEN);
            if let Peer::Node(id) = &hello.peer {
                assert!(HANDSHAKE_MEMBERS.contains(&id.as_str()));
            }
            assert!(
                !handshaking,
                "handshake succeeded but the codec kept the small limit"
            );
            assert!(
                matches!(&sent[..], [Message::HelloOk(_)]),
                "server answered {sent:?}"
            );
        }
        Err(e) => {
            assert!(handshaking, "refused peer got the full frame limit");
            assert!(sent.len() <= 1, "server answered {sent:?}");
            if let Some(m) = sent.first() {
                let Message::Error { message, .. } = m else {
                    panic!("a refusal was answered with {m:?}");
                };
                if let ProtoError::Refused {
                    code: ErrorCode::Unauthorized,
                    ..
                } = e
                {
                    assert!(
                        !message.contains(HANDSHAKE_TOKEN),
                        "refusal echoes a token: {message}"
                    );
                }
            }
        }
    }
}

fn client(mode: HandshakeMode, peer: &[u8]) {
    let hello = Hello {
        version: proto::PROTOCOL_VERSION,
        cluster_id: HANDSHAKE_CLUSTER.into(),
        peer: Peer::Node("n2".into()),
        token: HANDSHAKE_TOKEN.into(),
    };
    let mut framed = Framed::new(
        Pipe {
            input: peer,
            chunk: mode.read_chunk,
            written: Vec::new(),
        },
        FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES),
    );
    let r = futures::executor::block_on(client_handshake(&mut framed, hello.clone()));
    let handshaking = framed.codec().is_handshaking();
    let sent = frames(&framed.get_ref().written);
    assert_eq!(
        sent,
        vec![Message::Hello(hello)],
        "client sent something else"
    );
    // What the peer's first frame is, decoded as the client's codec would.
    let mut c = FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES);
    let first = c.decode(&mut BytesMut::from(peer));
    match r {
        Ok(ok) => {
            assert!(!handshaking);
            assert!(
                matches!(&first, Ok(Some(Message::HelloOk(f))) if *f == ok),
                "client accepted {ok:?}, the first frame was {first:?}"
            );
        }
        Err(_) => {
            assert!(handshaking);
            assert!(
                !matches!(first, Ok(Some(Message::HelloOk(_)))),
                "client refused a HelloOk"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, peer)) = data.split_first() else {
        return;
    };
    let mode = HandshakeMode::decode(flags);
    if mode.client {
        client(mode, peer);
    } else {
        server(mode, peer);
    }
});
