//! Handshake and message exchange over in-memory tokio streams.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use proto::{
    client_handshake, server_handshake, token_eq, ErrorCode, FrameCodec, Hello, HelloOk, Message,
    Peer, ProtoError, Refusal, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::codec::Framed;

const LIMIT: usize = 4 << 20;
/// Upper bound only: these exchanges finish in milliseconds.
const GUARD: Duration = Duration::from_secs(20);

fn pair() -> (
    Framed<DuplexStream, FrameCodec>,
    Framed<DuplexStream, FrameCodec>,
) {
    let (a, b) = tokio::io::duplex(64 << 10);
    (
        Framed::new(a, FrameCodec::new(LIMIT)),
        Framed::new(b, FrameCodec::new(LIMIT)),
    )
}

fn hello(cluster: &str, token: &str) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        cluster_id: cluster.into(),
        peer: Peer::Node("n2".into()),
        token: token.into(),
    }
}

/// Server as a node would run it: cluster "prod", token "s3cret", members n1..n3.
async fn serve(
    mut framed: Framed<DuplexStream, FrameCodec>,
) -> (Framed<DuplexStream, FrameCodec>, Result<Hello, ProtoError>) {
    let r = server_handshake(
        &mut framed,
        "prod",
        |_peer, token| token_eq(token.as_bytes(), b"s3cret"),
        |h| match &h.peer {
            Peer::Node(id) if !["n1", "n2", "n3"].contains(&id.as_str()) => Err(Refusal::new(
                ErrorCode::UnknownMember,
                format!("node {id:?} is not a member"),
            )),
            _ => Ok(HelloOk {
                node_id: "n1".into(),
                term: 4,
                leader_id: Some("n1".into()),
            }),
        },
    )
    .await;
    (framed, r)
}

#[tokio::test]
async fn handshake_then_replication_messages() {
    tokio::time::timeout(GUARD, async {
        let (mut client, server) = pair();
        let server = tokio::spawn(async move {
            let (mut framed, r) = serve(server).await;
            let h = r.expect("server handshake");
            assert_eq!(h.peer, Peer::Node("n2".into()));
            assert!(!framed.codec().is_handshaking());
            // Leader side: receive StartReplication, stream WAL, keepalive, read status.
            let start = framed.next().await.unwrap().unwrap();
            assert!(matches!(
                start,
                Message::StartReplication {
                    write_lsn: 4096,
                    ..
                }
            ));
            framed
                .send(Message::WalData {
                    start_lsn: 4096,
                    // Larger than the handshake limit: proves the limit was lifted.
                    bytes: Bytes::from(vec![0x5A; 1 << 20]),
                })
                .await
                .unwrap();
            framed
                .send(Message::Keepalive {
                    term: 4,
                    leader_id: "n1".into(),
                    flush_lsn: 4096 + (1 << 20),
                    commit_lsn: 4096,
                    send_time_us: 123,
                    reply_requested: true,
                })
                .await
                .unwrap();
            let status = framed.next().await.unwrap().unwrap();
            assert!(matches!(
                status,
                Message::FollowerStatus {
                    reply_to_time_us: 123,
                    ..
                }
            ));
            SinkExt::<Message>::close(&mut framed).await.unwrap();
        });

        let ok = client_handshake(&mut client, hello("prod", "s3cret"))
            .await
            .unwrap();
        assert_eq!(
            ok,
            HelloOk {
                node_id: "n1".into(),
                term: 4,
                leader_id: Some("n1".into())
            }
        );
        assert!(!client.codec().is_handshaking());
        client
            .send(Message::StartReplication {
                term_history: vec![(1, 0), (4, 2048)],
                write_lsn: 4096,
                flush_lsn: 4096,
                apply_lsn: 1024,
            })
            .await
            .unwrap();
        match client.next().await.unwrap().unwrap() {
            Message::WalData { start_lsn, bytes } => {
                assert_eq!(start_lsn, 4096);
                assert_eq!(bytes.len(), 1 << 20);
                assert!(bytes.iter().all(|&b| b == 0x5A));
            }
            other => panic!("{other:?}"),
        }
        let Message::Keepalive {
            send_time_us,
            reply_requested: true,
            ..
        } = client.next().await.unwrap().unwrap()
        else {
            panic!("expected keepalive");
        };
        client
            .send(Message::FollowerStatus {
                write_lsn: 4096 + (1 << 20),
                flush_lsn: 4096 + (1 << 20),
                apply_lsn: 4096,
                send_time_us: 200,
                reply_to_time_us: send_time_us,
            })
            .await
            .unwrap();
        assert!(client.next().await.is_none(), "server closes");
        server.await.unwrap();
    })
    .await
    .expect("test exceeded its upper bound");
}

/// Runs a handshake with the given hello; returns (client result, server result).
async fn attempt(h: Hello) -> (Result<HelloOk, ProtoError>, Result<Hello, ProtoError>) {
    tokio::time::timeout(GUARD, async {
        let (mut client, server) = pair();
        let server = tokio::spawn(async move { serve(server).await.1 });
        let c = client_handshake(&mut client, h).await;
        (c, server.await.unwrap())
    })
    .await
    .expect("test exceeded its upper bound")
}

fn refused_code<T: std::fmt::Debug>(r: &Result<T, ProtoError>) -> ErrorCode {
    match r {
        Err(ProtoError::Refused { code, .. }) => *code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn refusals_reach_both_sides_with_reason() {
    let (c, s) = attempt(hello("prod", "wrong")).await;
    assert_eq!(refused_code(&c), ErrorCode::Unauthorized);
    assert_eq!(refused_code(&s), ErrorCode::Unauthorized);

    let (c, s) = attempt(hello("staging", "s3cret")).await;
    assert_eq!(refused_code(&c), ErrorCode::WrongCluster);
    assert_eq!(refused_code(&s), ErrorCode::WrongCluster);
    assert!(c.unwrap_err().to_string().contains("staging"));

    let (c, s) = attempt(Hello {
        version: PROTOCOL_VERSION + 1,
        ..hello("prod", "s3cret")
    })
    .await;
    assert_eq!(refused_code(&c), ErrorCode::VersionMismatch);
    assert_eq!(refused_code(&s), ErrorCode::VersionMismatch);

    let (c, s) = attempt(Hello {
        peer: Peer::Node("n9".into()),
        ..hello("prod", "s3cret")
    })
    .await;
    assert_eq!(refused_code(&c), ErrorCode::UnknownMember);
    assert_eq!(refused_code(&s), ErrorCode::UnknownMember);

    let (c, s) = attempt(Hello {
        peer: Peer::Client,
        ..hello("prod", "s3cret")
    })
    .await;
    assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
}

#[tokio::test]
async fn http_request_on_binary_port_is_refused() {
    tokio::time::timeout(GUARD, async {
        let (mut raw, b) = tokio::io::duplex(64 << 10);
        let server = tokio::spawn(serve(Framed::new(b, FrameCodec::new(LIMIT))));
        raw.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (_, r) = server.await.unwrap();
        assert!(matches!(r, Err(ProtoError::BadMagic { .. })), "{r:?}");
        // The server answered with an Error frame (bad_request) before giving up.
        let mut resp = Vec::new();
        raw.read_to_end(&mut resp).await.unwrap();
        assert_eq!(resp[4], proto::types::ERROR);
        assert_eq!(
            u16::from_be_bytes([resp[5], resp[6]]),
            ErrorCode::BadRequest.to_u16()
        );
    })
    .await
    .expect("test exceeded its upper bound");
}

#[tokio::test]
async fn oversized_first_frame_is_refused_before_buffering() {
    tokio::time::timeout(GUARD, async {
        let (mut client, server) = pair();
        // The server drops its end when done, as a node would: the blocked
        // client write then fails instead of waiting forever.
        let server = tokio::spawn(async move { ((), serve(server).await.1) });
        // The client's own codec refuses to encode it before the handshake...
        let big = Message::Failover(Bytes::from(vec![0u8; 100 << 10]));
        assert!(matches!(
            client.send(big.clone()).await,
            Err(ProtoError::FrameTooLarge { .. })
        ));
        // ...so send it with an established codec, as a hostile peer could.
        client.codec_mut().finish_handshake();
        let _ = client.send(big).await; // the server may close before reading it all
        let (_, r) = server.await.unwrap();
        assert!(
            matches!(r, Err(ProtoError::FrameTooLarge { max, .. }) if max == 64 << 10),
            "{r:?}"
        );
    })
    .await
    .expect("test exceeded its upper bound");
}

#[tokio::test]
async fn non_hello_first_message_and_early_close() {
    tokio::time::timeout(GUARD, async {
        let (mut client, server) = pair();
        let server = tokio::spawn(serve(server));
        client.send(Message::Truncate { to_lsn: 0 }).await.unwrap();
        let (_, r) = server.await.unwrap();
        assert_eq!(refused_code(&r), ErrorCode::BadRequest);
        match client.next().await {
            Some(Ok(Message::Error {
                code: ErrorCode::BadRequest,
                message,
            })) => {
                assert!(message.contains("Truncate"), "{message}")
            }
            other => panic!("{other:?}"),
        }

        let (client, server) = pair();
        let server = tokio::spawn(serve(server));
        drop(client);
        let (_, r) = server.await.unwrap();
        assert!(matches!(r, Err(ProtoError::Closed { .. })), "{r:?}");
    })
    .await
    .expect("test exceeded its upper bound");
}
