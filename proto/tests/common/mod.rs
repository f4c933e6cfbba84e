//! Shared test fixtures: one sample of every message shape and a proptest
//! strategy for arbitrary messages.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proto::{
    AckLevel, ClientOp, ClientResult, ErrorCode, FrameCodec, Hello, HelloOk, Message, Peer,
    PROTOCOL_VERSION,
};
use tokio_util::codec::{Decoder, Encoder};

/// Index of the variant; exhaustive so a new variant breaks the build here
/// until it gets samples.
pub fn variant_index(m: &Message) -> usize {
    match m {
        Message::Hello(_) => 0,
        Message::HelloOk(_) => 1,
        Message::StartReplication { .. } => 2,
        Message::Truncate { .. } => 3,
        Message::WalData { .. } => 4,
        Message::Keepalive { .. } => 5,
        Message::FollowerStatus { .. } => 6,
        Message::Failover(_) => 7,
        Message::ClientRequest { .. } => 8,
        Message::ClientResponse { .. } => 9,
        Message::Error { .. } => 10,
        Message::BaseBackupRequest { .. } => 11,
        Message::BaseBackupStart { .. } => 12,
        Message::BaseBackupData { .. } => 13,
        Message::BaseBackupEnd { .. } => 14,
    }
}
pub const VARIANTS: usize = 15;

/// At least one sample of every variant and sub-variant, with edge values.
pub fn samples() -> Vec<Message> {
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    let mut v = vec![
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            cluster_id: "prod-eu".into(),
            peer: Peer::Node("n1".into()),
            token: "s3cret".into(),
        }),
        Message::Hello(Hello {
            version: 0xFFFF,
            cluster_id: String::new(),
            peer: Peer::Client,
            token: String::new(),
        }),
        Message::HelloOk(HelloOk {
            node_id: "n2".into(),
            term: 7,
            leader_id: Some("n3".into()),
        }),
        Message::HelloOk(HelloOk {
            node_id: "nœud-ü".into(),
            term: u64::MAX,
            leader_id: None,
        }),
        Message::StartReplication {
            term_history: vec![(1, 0), (2, 0x1_0000_0000), (u64::MAX, u64::MAX)],
            write_lsn: 0x16B3748,
            flush_lsn: 0x16B3700,
            apply_lsn: 0,
        },
        Message::StartReplication {
            term_history: vec![],
            write_lsn: 0,
            flush_lsn: 0,
            apply_lsn: 0,
        },
        Message::Truncate {
            to_lsn: 0xDEAD_BEEF,
        },
        Message::WalData {
            start_lsn: 4096,
            bytes: Bytes::from(vec![0xAB; 10_000]),
        },
        Message::WalData {
            start_lsn: 0,
            bytes: Bytes::new(),
        },
        Message::Keepalive {
            term: 3,
            leader_id: "n1".into(),
            flush_lsn: 100,
            commit_lsn: 90,
            send_time_us: 1_700_000_000_000_000,
            reply_requested: true,
        },
        Message::Keepalive {
            term: 0,
            leader_id: String::new(),
            flush_lsn: 0,
            commit_lsn: 0,
            send_time_us: 0,
            reply_requested: false,
        },
        Message::FollowerStatus {
            write_lsn: 1,
            flush_lsn: 2,
            apply_lsn: 3,
            send_time_us: 4,
            reply_to_time_us: u64::MAX,
        },
        Message::Failover(b("vote-request")),
        Message::Failover(Bytes::new()),
        Message::BaseBackupRequest {
            checkpoint_lsn: 0,
            offset: 0,
        },
        Message::BaseBackupRequest {
            checkpoint_lsn: u64::MAX,
            offset: 0x1234_5678_9ABC,
        },
        Message::BaseBackupStart {
            checkpoint_lsn: 0x16B3748,
            term: 3,
            entries: 1_000_000,
            total_len: 1 << 30,
            offset: 0,
            term_history: vec![(1, 0), (3, 0x100)],
        },
        Message::BaseBackupStart {
            checkpoint_lsn: 0,
            term: 0,
            entries: 0,
            total_len: 0,
            offset: u64::MAX,
            term_history: vec![],
        },
        Message::BaseBackupData {
            offset: 4 << 20,
            bytes: Bytes::from(vec![0xCD; 5000]),
        },
        Message::BaseBackupData {
            offset: 0,
            bytes: Bytes::new(),
        },
        Message::BaseBackupEnd {
            total_len: 1 << 30,
            crc32: 0xDEAD_BEEF,
        },
        Message::Error {
            code: ErrorCode::WrongCluster,
            message: "cluster id \"a\" does not match".into(),
        },
        Message::Error {
            code: ErrorCode::Unknown(4242),
            message: String::new(),
        },
    ];
    for (i, ack) in AckLevel::ALL.into_iter().enumerate() {
        let id = i as u64;
        v.push(Message::ClientRequest {
            id,
            op: ClientOp::Append {
                payload: b("record"),
                ack,
            },
        });
        v.push(Message::ClientRequest {
            id,
            op: ClientOp::Put {
                key: b("k"),
                value: Bytes::new(),
                ack,
            },
        });
        v.push(Message::ClientRequest {
            id,
            op: ClientOp::Delete { key: b(""), ack },
        });
    }
    v.extend([
        Message::ClientRequest {
            id: u64::MAX,
            op: ClientOp::Get {
                key: b("key"),
                min_lsn: 0x16B3748,
                wait_ms: u32::MAX,
            },
        },
        Message::ClientRequest {
            id: 9,
            op: ClientOp::Status,
        },
        Message::ClientRequest {
            id: 10,
            op: ClientOp::PutBatch {
                entries: vec![(b("k1"), b("v1")), (b("k2"), Bytes::new())],
                ack: AckLevel::RemoteFlush,
            },
        },
        Message::ClientRequest {
            id: 11,
            op: ClientOp::PutBatch {
                entries: vec![],
                ack: AckLevel::Default,
            },
        },
        Message::ClientRequest {
            id: 12,
            op: ClientOp::AppendBatch {
                payloads: vec![b("a"), Bytes::new(), b("ccc")],
                ack: AckLevel::Local,
            },
        },
        Message::ClientResponse {
            id: 10,
            result: ClientResult::WrittenBatch {
                lsns: vec![64, 128, u64::MAX],
                term: 7,
            },
        },
        Message::ClientResponse {
            id: 11,
            result: ClientResult::WrittenBatch {
                lsns: vec![],
                term: 0,
            },
        },
        Message::ClientResponse {
            id: 1,
            result: ClientResult::Written { lsn: 77, term: 3 },
        },
        Message::ClientResponse {
            id: 2,
            result: ClientResult::Value {
                value: Some(b("v")),
                applied_lsn: 80,
            },
        },
        Message::ClientResponse {
            id: 3,
            result: ClientResult::Value {
                value: None,
                applied_lsn: 0,
            },
        },
        Message::ClientResponse {
            id: 4,
            result: ClientResult::Status {
                json: r#"{"role":"leader"}"#.into(),
            },
        },
        Message::ClientResponse {
            id: 5,
            result: ClientResult::Error {
                code: ErrorCode::NotLeader,
                message: "not the leader".into(),
                leader: Some("10.0.0.3:7400".into()),
            },
        },
        Message::ClientResponse {
            id: 6,
            result: ClientResult::Error {
                code: ErrorCode::Unknown(0),
                message: "x".into(),
                leader: None,
            },
        },
    ]);
    for code in ErrorCode::KNOWN {
        v.push(Message::Error {
            code,
            message: code.as_str().into(),
        });
    }
    v
}

/// Encodes one message with an established codec of the given limit.
pub fn encode(m: &Message, limit: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    FrameCodec::established(limit)
        .encode(m, &mut buf)
        .expect("encode");
    buf
}

/// Decodes every frame in `buf` (which must hold only whole frames).
pub fn decode_all(codec: &mut FrameCodec, buf: &mut BytesMut) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(m) = codec.decode(buf).expect("decode") {
        out.push(m);
    }
    out
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_string() -> impl Strategy<Value = String> {
    // Mix of ASCII and multi-byte characters.
    "\\PC{0,24}"
}

fn arb_ack() -> impl Strategy<Value = AckLevel> {
    prop::sample::select(AckLevel::ALL.to_vec())
}

fn arb_code() -> impl Strategy<Value = ErrorCode> {
    any::<u16>().prop_map(ErrorCode::from_u16)
}

fn arb_op() -> impl Strategy<Value = ClientOp> {
    prop_oneof![
        (arb_bytes(64), arb_ack()).prop_map(|(payload, ack)| ClientOp::Append { payload, ack }),
        (arb_bytes(32), arb_bytes(64), arb_ack()).prop_map(|(key, value, ack)| ClientOp::Put {
            key,
            value,
            ack
        }),
        (arb_bytes(32), arb_ack()).prop_map(|(key, ack)| ClientOp::Delete { key, ack }),
        (arb_bytes(32), any::<u64>(), any::<u32>()).prop_map(|(key, min_lsn, wait_ms)| {
            ClientOp::Get {
                key,
                min_lsn,
                wait_ms,
            }
        }),
        Just(ClientOp::Status),
        (
            prop::collection::vec((arb_bytes(16), arb_bytes(32)), 0..6),
            arb_ack()
        )
            .prop_map(|(entries, ack)| ClientOp::PutBatch { entries, ack }),
        (prop::collection::vec(arb_bytes(32), 0..6), arb_ack())
            .prop_map(|(payloads, ack)| ClientOp::AppendBatch { payloads, ack }),
    ]
}

fn arb_result() -> impl Strategy<Value = ClientResult> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(lsn, term)| ClientResult::Written { lsn, term }),
        (prop::collection::vec(any::<u64>(), 0..8), any::<u64>())
            .prop_map(|(lsns, term)| ClientResult::WrittenBatch { lsns, term }),
        (prop::option::of(arb_bytes(64)), any::<u64>())
            .prop_map(|(value, applied_lsn)| ClientResult::Value { value, applied_lsn }),
        arb_string().prop_map(|json| ClientResult::Status { json }),
        (arb_code(), arb_string(), prop::option::of(arb_string())).prop_map(
            |(code, message, leader)| ClientResult::Error {
                code,
                message,
                leader
            }
        ),
    ]
}

/// Any message, with small fields.
pub fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u16>(),
            arb_string(),
            prop::option::of(arb_string()),
            arb_string()
        )
            .prop_map(|(version, cluster_id, node, token)| Message::Hello(Hello {
                version,
                cluster_id,
                peer: node.map_or(Peer::Client, Peer::Node),
                token,
            })),
        (arb_string(), any::<u64>(), prop::option::of(arb_string())).prop_map(
            |(node_id, term, leader_id)| Message::HelloOk(HelloOk {
                node_id,
                term,
                leader_id
            })
        ),
        (
            prop::collection::vec((any::<u64>(), any::<u64>()), 0..8),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(term_history, write_lsn, flush_lsn, apply_lsn)| {
                Message::StartReplication {
                    term_history,
                    write_lsn,
                    flush_lsn,
                    apply_lsn,
                }
            }),
        any::<u64>().prop_map(|to_lsn| Message::Truncate { to_lsn }),
        (any::<u64>(), arb_bytes(512))
            .prop_map(|(start_lsn, bytes)| Message::WalData { start_lsn, bytes }),
        (
            any::<u64>(),
            arb_string(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(
                |(term, leader_id, flush_lsn, commit_lsn, send_time_us, reply_requested)| {
                    Message::Keepalive {
                        term,
                        leader_id,
                        flush_lsn,
                        commit_lsn,
                        send_time_us,
                        reply_requested,
                    }
                }
            ),
        any::<[u64; 5]>().prop_map(|[a, b, c, d, e]| Message::FollowerStatus {
            write_lsn: a,
            flush_lsn: b,
            apply_lsn: c,
            send_time_us: d,
            reply_to_time_us: e,
        }),
        arb_bytes(128).prop_map(Message::Failover),
        any::<[u64; 2]>().prop_map(|[checkpoint_lsn, offset]| Message::BaseBackupRequest {
            checkpoint_lsn,
            offset
        }),
        (
            any::<[u64; 5]>(),
            proptest::collection::vec(any::<(u64, u64)>(), 0..8)
        )
            .prop_map(
                |([checkpoint_lsn, term, entries, total_len, offset], term_history)| {
                    Message::BaseBackupStart {
                        checkpoint_lsn,
                        term,
                        entries,
                        total_len,
                        offset,
                        term_history,
                    }
                }
            ),
        (any::<u64>(), arb_bytes(512))
            .prop_map(|(offset, bytes)| Message::BaseBackupData { offset, bytes }),
        (any::<u64>(), any::<u32>())
            .prop_map(|(total_len, crc32)| Message::BaseBackupEnd { total_len, crc32 }),
        (any::<u64>(), arb_op()).prop_map(|(id, op)| Message::ClientRequest { id, op }),
        (any::<u64>(), arb_result())
            .prop_map(|(id, result)| Message::ClientResponse { id, result }),
        (arb_code(), arb_string()).prop_map(|(code, message)| Message::Error { code, message }),
    ]
}
