//! The messages and their body layouts (see the crate docs for the byte tables).
//!
//! Invariant: for every message `m`, `m.body_len()` is exactly the number of
//! bytes `m.encode_body()` writes, and `decode_body(m.type_byte(), body)`
//! returns a value equal to `m`.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codes::{AckLevel, ErrorCode};
use crate::error::{ProtoError, Result};
use crate::wire::{bytes_len, opt_len, put_bytes, put_opt, Reader};

/// The four bytes every `Hello` body starts with.
pub const MAGIC: [u8; 4] = *b"WSHP";

/// Stable type bytes of the messages (the byte after the length prefix).
pub mod types {
    /// [`crate::Message::Hello`]
    pub const HELLO: u8 = 0x01;
    /// [`crate::Message::HelloOk`]
    pub const HELLO_OK: u8 = 0x02;
    /// [`crate::Message::Error`]
    pub const ERROR: u8 = 0x03;
    /// [`crate::Message::StartReplication`]
    pub const START_REPLICATION: u8 = 0x10;
    /// [`crate::Message::Truncate`]
    pub const TRUNCATE: u8 = 0x11;
    /// [`crate::Message::WalData`]
    pub const WAL_DATA: u8 = 0x12;
    /// [`crate::Message::Keepalive`]
    pub const KEEPALIVE: u8 = 0x13;
    /// [`crate::Message::FollowerStatus`]
    pub const FOLLOWER_STATUS: u8 = 0x14;
    /// [`crate::Message::BaseBackupRequest`]
    pub const BASE_BACKUP_REQUEST: u8 = 0x15;
    /// [`crate::Message::BaseBackupStart`]
    pub const BASE_BACKUP_START: u8 = 0x16;
    /// [`crate::Message::BaseBackupData`]
    pub const BASE_BACKUP_DATA: u8 = 0x17;
    /// [`crate::Message::BaseBackupEnd`]
    pub const BASE_BACKUP_END: u8 = 0x18;
    /// [`crate::Message::Failover`]
    pub const FAILOVER: u8 = 0x20;
    /// [`crate::Message::ClientRequest`]
    pub const CLIENT_REQUEST: u8 = 0x30;
    /// [`crate::Message::ClientResponse`]
    pub const CLIENT_RESPONSE: u8 = 0x31;
}

/// Who is connecting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A cluster member, by its configured node id (replication, votes).
    Node(String),
    /// A client (binary client library, load generator).
    Client,
}

/// First frame on every connection, sent by the connecting side.
///
/// `Debug` never prints the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the sender speaks ([`crate::PROTOCOL_VERSION`]).
    pub version: u16,
    /// The sender's `cluster_id`; a node of another cluster is refused.
    pub cluster_id: String,
    /// Member or client.
    pub peer: Peer,
    /// Shared secret (`security.token_file`), empty when none is configured.
    pub token: String,
}

impl fmt::Debug for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("version", &self.version)
            .field("cluster_id", &self.cluster_id)
            .field("peer", &self.peer)
            .field(
                "token",
                &if self.token.is_empty() {
                    "<none>"
                } else {
                    "<redacted>"
                },
            )
            .finish()
    }
}

/// Accepting side's answer to a valid [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloOk {
    /// The accepting node's id.
    pub node_id: String,
    /// The accepting node's current term.
    pub term: u64,
    /// The leader the accepting node knows of, if any.
    pub leader_id: Option<String>,
}

/// A client operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// Append an opaque record to the log (`POST /v1/log`).
    Append {
        /// Record payload.
        payload: Bytes,
        /// Acknowledgement level.
        ack: AckLevel,
    },
    /// Set a key (`PUT /v1/kv/{key}`).
    Put {
        /// Key.
        key: Bytes,
        /// Value.
        value: Bytes,
        /// Acknowledgement level.
        ack: AckLevel,
    },
    /// Remove a key (`DELETE /v1/kv/{key}`).
    Delete {
        /// Key.
        key: Bytes,
        /// Acknowledgement level.
        ack: AckLevel,
    },
    /// Read a key once the node has applied `min_lsn` (waiting up to `wait_ms`).
    Get {
        /// Key.
        key: Bytes,
        /// Answer only once the node's applied LSN is at least this (0: now).
        min_lsn: u64,
        /// How long to wait for `min_lsn`, in milliseconds.
        wait_ms: u32,
    },
    /// The node's status document (as `GET /status`).
    Status,
    /// Set many keys in one request (a bulk load, like PostgreSQL's `COPY`):
    /// one WAL append of contiguous records, one acknowledgement. All or
    /// nothing: either every record is in the leader's WAL or none is.
    PutBatch {
        /// `(key, value)` pairs, written in this order.
        entries: Vec<(Bytes, Bytes)>,
        /// Acknowledgement level (for the whole batch).
        ack: AckLevel,
    },
    /// Append many opaque records in one request (all or nothing, in order).
    AppendBatch {
        /// Record payloads.
        payloads: Vec<Bytes>,
        /// Acknowledgement level (for the whole batch).
        ack: AckLevel,
    },
}

/// The outcome of a client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientResult {
    /// The write is acknowledged: `lsn` is the END of its record, `term` the leader's term.
    Written {
        /// End LSN of the written record.
        lsn: u64,
        /// Term of the leader that wrote it.
        term: u64,
    },
    /// A batch is acknowledged: the END LSN of each record, in request order.
    WrittenBatch {
        /// End LSN of every written record, ascending.
        lsns: Vec<u64>,
        /// Term of the leader that wrote them.
        term: u64,
    },
    /// A read: the value (`None` if absent) and the node's applied LSN.
    Value {
        /// The value, or `None` when the key is absent.
        value: Option<Bytes>,
        /// The answering node's applied LSN.
        applied_lsn: u64,
    },
    /// The status document, JSON as `GET /status`.
    Status {
        /// JSON text.
        json: String,
    },
    /// The request failed.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable reason.
        message: String,
        /// With `not_leader`: the leader's binary-protocol address, if known.
        leader: Option<String>,
    },
}

/// Every message of the protocol. LSNs and terms are plain `u64` on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Handshake opening (connecting side).
    Hello(Hello),
    /// Handshake accepted (accepting side).
    HelloOk(HelloOk),
    /// Follower → leader: where my log stands; stream me WAL from `write_lsn`.
    StartReplication {
        /// The follower's `(term, start_lsn)` history, ascending.
        term_history: Vec<(u64, u64)>,
        /// End of the follower's WAL.
        write_lsn: u64,
        /// Follower's flushed LSN.
        flush_lsn: u64,
        /// Follower's applied LSN.
        apply_lsn: u64,
    },
    /// Leader → follower: your WAL diverges after `to_lsn`; cut it there and
    /// send `StartReplication` again.
    Truncate {
        /// The fork point: keep `[.., to_lsn)`.
        to_lsn: u64,
    },
    /// Leader → follower: raw WAL bytes (whole records) starting at `start_lsn`.
    WalData {
        /// LSN of the first byte.
        start_lsn: u64,
        /// Raw WAL bytes (decoded zero-copy from the frame buffer).
        bytes: Bytes,
    },
    /// Leader → follower: heartbeat, commit LSN, optional reply request.
    Keepalive {
        /// Leader's term.
        term: u64,
        /// Leader's node id.
        leader_id: String,
        /// Leader's flushed LSN.
        flush_lsn: u64,
        /// Commit LSN: followers apply up to here.
        commit_lsn: u64,
        /// Leader's clock at sending, microseconds since the UNIX epoch.
        send_time_us: u64,
        /// The follower should answer with a `FollowerStatus` now.
        reply_requested: bool,
    },
    /// Follower → leader: progress report.
    FollowerStatus {
        /// End of the follower's WAL.
        write_lsn: u64,
        /// Follower's flushed LSN.
        flush_lsn: u64,
        /// Follower's applied LSN.
        apply_lsn: u64,
        /// Follower's clock at sending, microseconds since the UNIX epoch.
        send_time_us: u64,
        /// `send_time_us` of the keepalive this answers (0 if none).
        reply_to_time_us: u64,
    },
    /// Follower → leader: send me your newest checkpoint (a base backup, as
    /// `pg_basebackup`). `checkpoint_lsn`/`offset` name a partial copy this
    /// node already holds (0/0: none); the leader resumes at `offset` if it
    /// serves that same checkpoint, else it sends its checkpoint from 0.
    BaseBackupRequest {
        /// LSN of the checkpoint partly received before (0: none).
        checkpoint_lsn: u64,
        /// Bytes of it already held.
        offset: u64,
    },
    /// Leader → follower: the checkpoint about to be sent and the leader's
    /// term history; `BaseBackupData` frames follow from `offset`.
    BaseBackupStart {
        /// The checkpoint's LSN: the state covers every record below it.
        checkpoint_lsn: u64,
        /// Term of the last record below `checkpoint_lsn`.
        term: u64,
        /// Keys in the checkpoint.
        entries: u64,
        /// Length of the checkpoint file in bytes.
        total_len: u64,
        /// Where the data frames start (the resumed offset, or 0).
        offset: u64,
        /// The leader's `(term, start_lsn)` history, ascending.
        term_history: Vec<(u64, u64)>,
    },
    /// Leader → follower: the checkpoint file's bytes at `offset`.
    BaseBackupData {
        /// Byte offset in the checkpoint file.
        offset: u64,
        /// The bytes (decoded zero-copy from the frame buffer).
        bytes: Bytes,
    },
    /// Leader → follower: the whole file was sent; `crc32` covers all of it
    /// (from byte 0, also when resumed).
    BaseBackupEnd {
        /// Length of the file.
        total_len: u64,
        /// CRC-32 (IEEE) of the whole file.
        crc32: u32,
    },
    /// Any → any: opaque payload of the failover crate (the whole body).
    Failover(Bytes),
    /// Client → node.
    ClientRequest {
        /// Client-chosen id, echoed in the response (pipelining).
        id: u64,
        /// The operation.
        op: ClientOp,
    },
    /// Node → client.
    ClientResponse {
        /// The request's id.
        id: u64,
        /// The outcome.
        result: ClientResult,
    },
    /// Any: a fatal error; the sender closes the connection after it.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable reason.
        message: String,
    },
}

// Sub-codes inside ClientRequest / ClientResponse bodies.
const OP_APPEND: u8 = 1;
const OP_PUT: u8 = 2;
const OP_DELETE: u8 = 3;
const OP_GET: u8 = 4;
const OP_STATUS: u8 = 5;
const OP_PUT_BATCH: u8 = 6;
const OP_APPEND_BATCH: u8 = 7;
const RES_WRITTEN: u8 = 1;
const RES_VALUE: u8 = 2;
const RES_STATUS: u8 = 3;
const RES_ERROR: u8 = 4;
const RES_WRITTEN_BATCH: u8 = 5;
const PEER_CLIENT: u8 = 0;
const PEER_NODE: u8 = 1;

/// Bytes of a `BaseBackupData` frame before its payload (length prefix, type
/// byte, offset).
pub const BASE_BACKUP_DATA_HEADER_BYTES: usize = 4 + 1 + 8;

/// The first [`BASE_BACKUP_DATA_HEADER_BYTES`] of the frame that
/// `FrameCodec` would encode for `Message::BaseBackupData { offset, bytes }` with
/// `payload_len` bytes: a sender may write this header and then the payload
/// straight from its own buffer (no copy into the codec's write buffer), with the
/// same bytes on the wire. `None` when the frame would not fit a `u32` length.
pub fn base_backup_data_header(
    offset: u64,
    payload_len: usize,
) -> Option<[u8; BASE_BACKUP_DATA_HEADER_BYTES]> {
    let n = u32::try_from(payload_len.checked_add(1 + 8)?).ok()?;
    let mut h = [0u8; BASE_BACKUP_DATA_HEADER_BYTES];
    h[..4].copy_from_slice(&n.to_be_bytes());
    h[4] = types::BASE_BACKUP_DATA;
    h[5..].copy_from_slice(&offset.to_be_bytes());
    Some(h)
}

impl Message {
    /// The stable type byte of this message ([`types`]).
    pub fn type_byte(&self) -> u8 {
        match self {
            Message::Hello(_) => types::HELLO,
            Message::HelloOk(_) => types::HELLO_OK,
            Message::StartReplication { .. } => types::START_REPLICATION,
            Message::Truncate { .. } => types::TRUNCATE,
            Message::WalData { .. } => types::WAL_DATA,
            Message::Keepalive { .. } => types::KEEPALIVE,
            Message::FollowerStatus { .. } => types::FOLLOWER_STATUS,
            Message::BaseBackupRequest { .. } => types::BASE_BACKUP_REQUEST,
            Message::BaseBackupStart { .. } => types::BASE_BACKUP_START,
            Message::BaseBackupData { .. } => types::BASE_BACKUP_DATA,
            Message::BaseBackupEnd { .. } => types::BASE_BACKUP_END,
            Message::Failover(_) => types::FAILOVER,
            Message::ClientRequest { .. } => types::CLIENT_REQUEST,
            Message::ClientResponse { .. } => types::CLIENT_RESPONSE,
            Message::Error { .. } => types::ERROR,
        }
    }

    /// The variant's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        type_name(self.type_byte()).unwrap_or("?")
    }

    /// Exact size of the encoded body in bytes (the frame's N is this + 1).
    /// Computed without encoding; may exceed `u32::MAX` for absurd messages,
    /// which the encoder then refuses.
    pub fn body_len(&self) -> u64 {
        let n = match self {
            Message::Hello(h) => {
                4 + 2
                    + bytes_len(h.cluster_id.as_bytes())
                    + match &h.peer {
                        Peer::Node(id) => 1 + bytes_len(id.as_bytes()),
                        Peer::Client => 1,
                    }
                    + bytes_len(h.token.as_bytes())
            }
            Message::HelloOk(ok) => bytes_len(ok.node_id.as_bytes()) + 8 + opt_len(&ok.leader_id),
            Message::StartReplication { term_history, .. } => {
                // Saturating: an absurd history must not overflow the size
                // computation; the frame limit then rejects it.
                return 4u64
                    .saturating_add((term_history.len() as u64).saturating_mul(16))
                    .saturating_add(24);
            }
            Message::Truncate { .. } => 8,
            Message::WalData { bytes, .. } => 8 + bytes.len(),
            Message::Keepalive { leader_id, .. } => 8 + bytes_len(leader_id.as_bytes()) + 8 * 3 + 1,
            Message::FollowerStatus { .. } => 8 * 5,
            Message::BaseBackupRequest { .. } => 16,
            Message::BaseBackupStart { term_history, .. } => {
                return 40u64
                    .saturating_add(4)
                    .saturating_add((term_history.len() as u64).saturating_mul(16));
            }
            Message::BaseBackupData { bytes, .. } => 8 + bytes.len(),
            Message::BaseBackupEnd { .. } => 12,
            Message::Failover(b) => b.len(),
            Message::ClientRequest { op, .. } => {
                8 + 1
                    + match op {
                        ClientOp::Append { payload, .. } => bytes_len(payload) + 1,
                        ClientOp::Put { key, value, .. } => bytes_len(key) + bytes_len(value) + 1,
                        ClientOp::Delete { key, .. } => bytes_len(key) + 1,
                        ClientOp::Get { key, .. } => bytes_len(key) + 8 + 4,
                        ClientOp::Status => 0,
                        ClientOp::PutBatch { entries, .. } => {
                            4 + entries
                                .iter()
                                .map(|(k, v)| bytes_len(k) + bytes_len(v))
                                .sum::<usize>()
                                + 1
                        }
                        ClientOp::AppendBatch { payloads, .. } => {
                            4 + payloads.iter().map(|p| bytes_len(p)).sum::<usize>() + 1
                        }
                    }
            }
            Message::ClientResponse { result, .. } => {
                8 + 1
                    + match result {
                        ClientResult::Written { .. } => 16,
                        ClientResult::WrittenBatch { lsns, .. } => 8 + 4 + 8 * lsns.len(),
                        ClientResult::Value { value, .. } => opt_len(value) + 8,
                        ClientResult::Status { json } => bytes_len(json.as_bytes()),
                        ClientResult::Error {
                            message, leader, ..
                        } => 2 + bytes_len(message.as_bytes()) + opt_len(leader),
                    }
            }
            Message::Error { message, .. } => 2 + bytes_len(message.as_bytes()),
        };
        n as u64
    }

    /// Writes the body (not the length or type byte) into `dst`. The caller
    /// (the codec) has checked `body_len()` against the frame limit, which is at
    /// most `u32::MAX`, so every length prefix fits in a `u32`.
    pub(crate) fn encode_body(&self, dst: &mut BytesMut) {
        match self {
            Message::Hello(h) => {
                dst.put_slice(&MAGIC);
                dst.put_u16(h.version);
                put_bytes(dst, h.cluster_id.as_bytes());
                match &h.peer {
                    Peer::Client => dst.put_u8(PEER_CLIENT),
                    Peer::Node(id) => {
                        dst.put_u8(PEER_NODE);
                        put_bytes(dst, id.as_bytes());
                    }
                }
                put_bytes(dst, h.token.as_bytes());
            }
            Message::HelloOk(ok) => {
                put_bytes(dst, ok.node_id.as_bytes());
                dst.put_u64(ok.term);
                put_opt(dst, &ok.leader_id);
            }
            Message::StartReplication {
                term_history,
                write_lsn,
                flush_lsn,
                apply_lsn,
            } => {
                dst.put_u32(term_history.len() as u32);
                for &(term, lsn) in term_history {
                    dst.put_u64(term);
                    dst.put_u64(lsn);
                }
                dst.put_u64(*write_lsn);
                dst.put_u64(*flush_lsn);
                dst.put_u64(*apply_lsn);
            }
            Message::Truncate { to_lsn } => dst.put_u64(*to_lsn),
            Message::WalData { start_lsn, bytes } => {
                dst.put_u64(*start_lsn);
                dst.put_slice(bytes); // the one memcpy of the WAL bytes
            }
            Message::Keepalive {
                term,
                leader_id,
                flush_lsn,
                commit_lsn,
                send_time_us,
                reply_requested,
            } => {
                dst.put_u64(*term);
                put_bytes(dst, leader_id.as_bytes());
                dst.put_u64(*flush_lsn);
                dst.put_u64(*commit_lsn);
                dst.put_u64(*send_time_us);
                dst.put_u8(u8::from(*reply_requested));
            }
            Message::FollowerStatus {
                write_lsn,
                flush_lsn,
                apply_lsn,
                send_time_us,
                reply_to_time_us,
            } => {
                dst.put_u64(*write_lsn);
                dst.put_u64(*flush_lsn);
                dst.put_u64(*apply_lsn);
                dst.put_u64(*send_time_us);
                dst.put_u64(*reply_to_time_us);
            }
            Message::BaseBackupRequest {
                checkpoint_lsn,
                offset,
            } => {
                dst.put_u64(*checkpoint_lsn);
                dst.put_u64(*offset);
            }
            Message::BaseBackupStart {
                checkpoint_lsn,
                term,
                entries,
                total_len,
                offset,
                term_history,
            } => {
                dst.put_u64(*checkpoint_lsn);
                dst.put_u64(*term);
                dst.put_u64(*entries);
                dst.put_u64(*total_len);
                dst.put_u64(*offset);
                dst.put_u32(term_history.len() as u32);
                for &(term, lsn) in term_history {
                    dst.put_u64(term);
                    dst.put_u64(lsn);
                }
            }
            Message::BaseBackupData { offset, bytes } => {
                dst.put_u64(*offset);
                dst.put_slice(bytes);
            }
            Message::BaseBackupEnd { total_len, crc32 } => {
                dst.put_u64(*total_len);
                dst.put_u32(*crc32);
            }
            Message::Failover(b) => dst.put_slice(b),
            Message::ClientRequest { id, op } => {
                dst.put_u64(*id);
                match op {
                    ClientOp::Append { payload, ack } => {
                        dst.put_u8(OP_APPEND);
                        put_bytes(dst, payload);
                        dst.put_u8(ack.to_u8());
                    }
                    ClientOp::Put { key, value, ack } => {
                        dst.put_u8(OP_PUT);
                        put_bytes(dst, key);
                        put_bytes(dst, value);
                        dst.put_u8(ack.to_u8());
                    }
                    ClientOp::Delete { key, ack } => {
                        dst.put_u8(OP_DELETE);
                        put_bytes(dst, key);
                        dst.put_u8(ack.to_u8());
                    }
                    ClientOp::Get {
                        key,
                        min_lsn,
                        wait_ms,
                    } => {
                        dst.put_u8(OP_GET);
                        put_bytes(dst, key);
                        dst.put_u64(*min_lsn);
                        dst.put_u32(*wait_ms);
                    }
                    ClientOp::Status => dst.put_u8(OP_STATUS),
                    ClientOp::PutBatch { entries, ack } => {
                        dst.put_u8(OP_PUT_BATCH);
                        dst.put_u32(entries.len() as u32);
                        for (k, v) in entries {
                            put_bytes(dst, k);
                            put_bytes(dst, v);
                        }
                        dst.put_u8(ack.to_u8());
                    }
                    ClientOp::AppendBatch { payloads, ack } => {
                        dst.put_u8(OP_APPEND_BATCH);
                        dst.put_u32(payloads.len() as u32);
                        for p in payloads {
                            put_bytes(dst, p);
                        }
                        dst.put_u8(ack.to_u8());
                    }
                }
            }
            Message::ClientResponse { id, result } => {
                dst.put_u64(*id);
                match result {
                    ClientResult::Written { lsn, term } => {
                        dst.put_u8(RES_WRITTEN);
                        dst.put_u64(*lsn);
                        dst.put_u64(*term);
                    }
                    ClientResult::WrittenBatch { lsns, term } => {
                        dst.put_u8(RES_WRITTEN_BATCH);
                        dst.put_u64(*term);
                        dst.put_u32(lsns.len() as u32);
                        for l in lsns {
                            dst.put_u64(*l);
                        }
                    }
                    ClientResult::Value { value, applied_lsn } => {
                        dst.put_u8(RES_VALUE);
                        put_opt(dst, value);
                        dst.put_u64(*applied_lsn);
                    }
                    ClientResult::Status { json } => {
                        dst.put_u8(RES_STATUS);
                        put_bytes(dst, json.as_bytes());
                    }
                    ClientResult::Error {
                        code,
                        message,
                        leader,
                    } => {
                        dst.put_u8(RES_ERROR);
                        dst.put_u16(code.to_u16());
                        put_bytes(dst, message.as_bytes());
                        put_opt(dst, leader);
                    }
                }
            }
            Message::Error { code, message } => {
                dst.put_u16(code.to_u16());
                put_bytes(dst, message.as_bytes());
            }
        }
    }
}

/// Name of the message with this type byte, `None` if unknown.
pub fn type_name(type_byte: u8) -> Option<&'static str> {
    Some(match type_byte {
        types::HELLO => "Hello",
        types::HELLO_OK => "HelloOk",
        types::ERROR => "Error",
        types::START_REPLICATION => "StartReplication",
        types::TRUNCATE => "Truncate",
        types::WAL_DATA => "WalData",
        types::KEEPALIVE => "Keepalive",
        types::FOLLOWER_STATUS => "FollowerStatus",
        types::BASE_BACKUP_REQUEST => "BaseBackupRequest",
        types::BASE_BACKUP_START => "BaseBackupStart",
        types::BASE_BACKUP_DATA => "BaseBackupData",
        types::BASE_BACKUP_END => "BaseBackupEnd",
        types::FAILOVER => "Failover",
        types::CLIENT_REQUEST => "ClientRequest",
        types::CLIENT_RESPONSE => "ClientResponse",
        _ => return None,
    })
}

fn ack(r: &mut Reader) -> Result<AckLevel> {
    let code = r.u8("ack")?;
    AckLevel::from_u8(code).ok_or(ProtoError::malformed(
        "ClientRequest",
        "ack",
        "unknown ack level",
    ))
}

/// Decodes one body of the given type. `body` is the frame minus length and
/// type byte; byte fields of the result share its buffer (zero-copy).
pub(crate) fn decode_body(type_byte: u8, body: Bytes) -> Result<Message> {
    let name = type_name(type_byte).ok_or(ProtoError::UnknownType(type_byte))?;
    let mut r = Reader::new(body, name);
    let msg = match type_byte {
        types::HELLO => {
            let magic = r.array4("magic")?;
            if magic != MAGIC {
                return Err(ProtoError::BadMagic { found: magic });
            }
            let version = r.u16("version")?;
            let rest = (|| {
                let cluster_id = r.string("cluster_id")?;
                let peer = match r.u8("peer")? {
                    PEER_CLIENT => Peer::Client,
                    PEER_NODE => Peer::Node(r.string("peer node_id")?),
                    _ => return Err(ProtoError::malformed(name, "peer", "unknown peer kind")),
                };
                let token = r.string("token")?;
                Ok((cluster_id, peer, token))
            })();
            match rest {
                Ok((cluster_id, peer, token)) => {
                    let hello = Message::Hello(Hello {
                        version,
                        cluster_id,
                        peer,
                        token,
                    });
                    if version != crate::PROTOCOL_VERSION {
                        // Another version may append fields: tolerate them so
                        // validation can answer `version_mismatch`.
                        return Ok(hello);
                    }
                    hello
                }
                // A peer of another version may lay out the rest differently:
                // say so rather than "malformed".
                Err(_) if version != crate::PROTOCOL_VERSION => {
                    return Err(ProtoError::VersionMismatch {
                        got: version,
                        supported: crate::PROTOCOL_VERSION,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        types::HELLO_OK => Message::HelloOk(HelloOk {
            node_id: r.string("node_id")?,
            term: r.u64("term")?,
            leader_id: r.opt_string("leader_id")?,
        }),
        types::START_REPLICATION => {
            let n = r.u32("term_history count")? as usize;
            // Each entry is 16 bytes and 24 bytes of LSNs follow: check the
            // count against the body before allocating the Vec.
            if n.saturating_mul(16).saturating_add(24) > r.remaining() {
                return Err(ProtoError::malformed(
                    name,
                    "term_history count",
                    "count exceeds frame",
                ));
            }
            let mut term_history = Vec::with_capacity(n);
            for _ in 0..n {
                let term = r.u64("term_history term")?;
                let lsn = r.u64("term_history lsn")?;
                term_history.push((term, lsn));
            }
            Message::StartReplication {
                term_history,
                write_lsn: r.u64("write_lsn")?,
                flush_lsn: r.u64("flush_lsn")?,
                apply_lsn: r.u64("apply_lsn")?,
            }
        }
        types::TRUNCATE => Message::Truncate {
            to_lsn: r.u64("to_lsn")?,
        },
        types::WAL_DATA => Message::WalData {
            start_lsn: r.u64("start_lsn")?,
            bytes: r.rest(),
        },
        types::KEEPALIVE => Message::Keepalive {
            term: r.u64("term")?,
            leader_id: r.string("leader_id")?,
            flush_lsn: r.u64("flush_lsn")?,
            commit_lsn: r.u64("commit_lsn")?,
            send_time_us: r.u64("send_time_us")?,
            reply_requested: r.bool("reply_requested")?,
        },
        types::FOLLOWER_STATUS => Message::FollowerStatus {
            write_lsn: r.u64("write_lsn")?,
            flush_lsn: r.u64("flush_lsn")?,
            apply_lsn: r.u64("apply_lsn")?,
            send_time_us: r.u64("send_time_us")?,
            reply_to_time_us: r.u64("reply_to_time_us")?,
        },
        types::BASE_BACKUP_REQUEST => Message::BaseBackupRequest {
            checkpoint_lsn: r.u64("checkpoint_lsn")?,
            offset: r.u64("offset")?,
        },
        types::BASE_BACKUP_START => {
            let checkpoint_lsn = r.u64("checkpoint_lsn")?;
            let term = r.u64("term")?;
            let entries = r.u64("entries")?;
            let total_len = r.u64("total_len")?;
            let offset = r.u64("offset")?;
            let n = r.u32("term_history count")? as usize;
            // Exactly 16 bytes per entry follow: check before allocating.
            if n.saturating_mul(16) != r.remaining() {
                return Err(ProtoError::malformed(
                    name,
                    "term_history count",
                    "count does not match the frame",
                ));
            }
            let mut term_history = Vec::with_capacity(n);
            for _ in 0..n {
                let term = r.u64("term_history term")?;
                let lsn = r.u64("term_history lsn")?;
                term_history.push((term, lsn));
            }
            Message::BaseBackupStart {
                checkpoint_lsn,
                term,
                entries,
                total_len,
                offset,
                term_history,
            }
        }
        types::BASE_BACKUP_DATA => Message::BaseBackupData {
            offset: r.u64("offset")?,
            bytes: r.rest(),
        },
        types::BASE_BACKUP_END => Message::BaseBackupEnd {
            total_len: r.u64("total_len")?,
            crc32: r.u32("crc32")?,
        },
        types::FAILOVER => Message::Failover(r.rest()),
        types::CLIENT_REQUEST => {
            let id = r.u64("id")?;
            let op = match r.u8("op")? {
                OP_APPEND => ClientOp::Append {
                    payload: r.bytes("payload")?,
                    ack: ack(&mut r)?,
                },
                OP_PUT => ClientOp::Put {
                    key: r.bytes("key")?,
                    value: r.bytes("value")?,
                    ack: ack(&mut r)?,
                },
                OP_DELETE => ClientOp::Delete {
                    key: r.bytes("key")?,
                    ack: ack(&mut r)?,
                },
                OP_GET => ClientOp::Get {
                    key: r.bytes("key")?,
                    min_lsn: r.u64("min_lsn")?,
                    wait_ms: r.u32("wait_ms")?,
                },
                OP_STATUS => ClientOp::Status,
                OP_PUT_BATCH => {
                    // Each entry takes at least 8 bytes (two length prefixes)
                    // and the ack byte follows: check before allocating.
                    let n = r.u32("entry count")? as usize;
                    if n.saturating_mul(8).saturating_add(1) > r.remaining() {
                        return Err(ProtoError::malformed(
                            name,
                            "entry count",
                            "count exceeds frame",
                        ));
                    }
                    let mut entries = Vec::with_capacity(n);
                    for _ in 0..n {
                        let k = r.bytes("key")?;
                        let v = r.bytes("value")?;
                        entries.push((k, v));
                    }
                    ClientOp::PutBatch {
                        entries,
                        ack: ack(&mut r)?,
                    }
                }
                OP_APPEND_BATCH => {
                    let n = r.u32("payload count")? as usize;
                    if n.saturating_mul(4).saturating_add(1) > r.remaining() {
                        return Err(ProtoError::malformed(
                            name,
                            "payload count",
                            "count exceeds frame",
                        ));
                    }
                    let mut payloads = Vec::with_capacity(n);
                    for _ in 0..n {
                        payloads.push(r.bytes("payload")?);
                    }
                    ClientOp::AppendBatch {
                        payloads,
                        ack: ack(&mut r)?,
                    }
                }
                _ => return Err(ProtoError::malformed(name, "op", "unknown operation")),
            };
            Message::ClientRequest { id, op }
        }
        types::CLIENT_RESPONSE => {
            let id = r.u64("id")?;
            let result = match r.u8("result")? {
                RES_WRITTEN => ClientResult::Written {
                    lsn: r.u64("lsn")?,
                    term: r.u64("term")?,
                },
                RES_WRITTEN_BATCH => {
                    let term = r.u64("term")?;
                    let n = r.u32("lsn count")? as usize;
                    if n.saturating_mul(8) > r.remaining() {
                        return Err(ProtoError::malformed(
                            name,
                            "lsn count",
                            "count exceeds frame",
                        ));
                    }
                    let mut lsns = Vec::with_capacity(n);
                    for _ in 0..n {
                        lsns.push(r.u64("lsn")?);
                    }
                    ClientResult::WrittenBatch { lsns, term }
                }
                RES_VALUE => ClientResult::Value {
                    value: r.opt_bytes("value")?,
                    applied_lsn: r.u64("applied_lsn")?,
                },
                RES_STATUS => ClientResult::Status {
                    json: r.string("json")?,
                },
                RES_ERROR => ClientResult::Error {
                    code: ErrorCode::from_u16(r.u16("code")?),
                    message: r.string("message")?,
                    leader: r.opt_string("leader")?,
                },
                _ => return Err(ProtoError::malformed(name, "result", "unknown result kind")),
            };
            Message::ClientResponse { id, result }
        }
        types::ERROR => Message::Error {
            code: ErrorCode::from_u16(r.u16("code")?),
            message: r.string("message")?,
        },
        _ => return Err(ProtoError::UnknownType(type_byte)),
    };
    r.finish()?;
    Ok(msg)
}
