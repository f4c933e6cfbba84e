//! `proto`: the wire format shared by replication, votes and clients.
//!
//! This documentation is the specification of walship's binary protocol
//! (the `listen` port). Everything is big-endian. LSNs and terms are plain
//! `u64` byte positions / numbers; the daemon converts to and from `wal::Lsn`.
//!
//! # Version and limits
//!
//! | constant | value | meaning |
//! |---|---|---|
//! | [`PROTOCOL_VERSION`] | `1` | sent in `Hello`; a different version is refused with `version_mismatch` |
//! | [`MAGIC`] | `"WSHP"` (`57 53 48 50`) | first 4 bytes of every `Hello` body |
//! | [`DEFAULT_MAX_FRAME_BYTES`] | 64 MiB | default limit on N after the handshake ([`FrameCodec::new`] sets it); a node applies its `limits.max_frame_bytes` to clients ([`FrameCodec::set_max_frame_bytes`]) |
//! | [`HANDSHAKE_MAX_FRAME_BYTES`] | 64 KiB | limit on N until the handshake has succeeded |
//! | [`MAX_FRAME_BYTES_CEILING`] | `u32::MAX` | largest configurable limit |
//!
//! The limit applies to N (type byte + body) and is checked from the 4-byte
//! header alone, before any buffer is grown for the frame: a peer can make a
//! node buffer at most `4 + limit` bytes. The encoder refuses to produce a frame
//! the same limit would reject. Fixed-size messages (`Truncate`,
//! `FollowerStatus`, `BaseBackupRequest`, `BaseBackupEnd`) with any other N are rejected as soon as the type byte arrives,
//! as are unknown type bytes.
//!
//! # Frame
//!
//! ```text
//! +----------------+-----------+------------------------+
//! | N: u32 (BE)    | type: u8  | body: N - 1 bytes      |
//! +----------------+-----------+------------------------+
//!  0              4           5                     4 + N
//! ```
//!
//! `N >= 1`. Field notation in the tables below:
//!
//! * `u8`, `u16`, `u32`, `u64`: unsigned big-endian integers.
//! * `bool`: `u8`, 0 = false, 1 = true; any other value is malformed.
//! * `bytes`: `u32` length L, then L bytes. `string`: `bytes` holding UTF-8.
//!   Every L is checked against what is left of the body before use.
//! * `opt<T>`: `u8` 0 (absent) or 1 followed by a `T`.
//! * `rest`: all remaining bytes of the body (no length prefix).
//!
//! Every layout is exact: bytes left over after the last field make the frame
//! malformed (exception: a `Hello` with another version may carry more fields).
//! Any malformed frame ends the connection; the receiver sends an `Error`
//! (`bad_request`, `frame_too_large`, ...) when it can, then closes.
//!
//! # Messages
//!
//! | type byte | message | direction |
//! |---|---|---|
//! | `0x01` | [`Hello`](#0x01-hello) | connecting side → accepting side, first frame |
//! | `0x02` | [`HelloOk`](#0x02-hellook) | accepting side → connecting side |
//! | `0x03` | [`Error`](#0x03-error) | any; the sender closes the connection after it |
//! | `0x10` | [`StartReplication`](#0x10-startreplication) | follower → leader |
//! | `0x11` | [`Truncate`](#0x11-truncate) | leader → follower |
//! | `0x12` | [`WalData`](#0x12-waldata) | leader → follower |
//! | `0x13` | [`Keepalive`](#0x13-keepalive) | leader → follower |
//! | `0x14` | [`FollowerStatus`](#0x14-followerstatus) | follower → leader |
//! | `0x15` | [`BaseBackupRequest`](#0x15-basebackuprequest) | rebuilding node → leader |
//! | `0x16` | [`BaseBackupStart`](#0x16-basebackupstart) | leader → rebuilding node |
//! | `0x17` | [`BaseBackupData`](#0x17-basebackupdata) | leader → rebuilding node |
//! | `0x18` | [`BaseBackupEnd`](#0x18-basebackupend) | leader → rebuilding node |
//! | `0x20` | [`Failover`](#0x20-failover) | any → any |
//! | `0x30` | [`ClientRequest`](#0x30-clientrequest) | client → node |
//! | `0x31` | [`ClientResponse`](#0x31-clientresponse) | node → client |
//!
//! ## Handshake
//!
//! The connecting side sends `Hello`; the accepting side checks, in order: magic
//! (`BadMagic`, connection closed), version (`version_mismatch`), cluster id
//! (`wrong_cluster`), token (`unauthorized`, compared in constant time), and
//! for a node its membership (`unknown_member`); it answers `HelloOk` or
//! `Error` and closes on `Error`. Only after `HelloOk` does the full frame
//! limit apply (see [`client_handshake`], [`server_handshake`], [`validate_hello`]).
//!
//! ## 0x01 Hello
//!
//! | field | type | notes |
//! |---|---|---|
//! | magic | 4 bytes | `"WSHP"` |
//! | version | `u16` | [`PROTOCOL_VERSION`] |
//! | cluster_id | `string` | |
//! | peer kind | `u8` | 0 = client, 1 = node |
//! | node_id | `string` | only when peer kind = 1 |
//! | token | `string` | empty when no token is configured |
//!
//! ## 0x02 HelloOk
//!
//! | field | type | notes |
//! |---|---|---|
//! | node_id | `string` | the accepting node |
//! | term | `u64` | its current term |
//! | leader_id | `opt<string>` | the leader it knows of |
//!
//! ## 0x03 Error
//!
//! | field | type | notes |
//! |---|---|---|
//! | code | `u16` | [`ErrorCode`] |
//! | message | `string` | human-readable reason |
//!
//! ## 0x10 StartReplication
//!
//! | field | type | notes |
//! |---|---|---|
//! | count | `u32` | number of history entries; `16 * count + 24` must fit in the rest of the body |
//! | entries | count × (`u64` term, `u64` start_lsn) | the follower's term history, ascending |
//! | write_lsn | `u64` | |
//! | flush_lsn | `u64` | |
//! | apply_lsn | `u64` | |
//!
//! ## 0x11 Truncate
//!
//! | field | type | notes |
//! |---|---|---|
//! | to_lsn | `u64` | fork point: keep `[.., to_lsn)`, drop the rest, send `StartReplication` again |
//!
//! N is always 9.
//!
//! ## 0x12 WalData
//!
//! | field | type | notes |
//! |---|---|---|
//! | start_lsn | `u64` | LSN of the first byte |
//! | bytes | `rest` | raw WAL, whole records (decoded without copying) |
//!
//! ## 0x13 Keepalive
//!
//! | field | type | notes |
//! |---|---|---|
//! | term | `u64` | leader's term |
//! | leader_id | `string` | |
//! | flush_lsn | `u64` | leader's flush LSN |
//! | commit_lsn | `u64` | followers apply up to here |
//! | send_time_us | `u64` | µs since the UNIX epoch |
//! | reply_requested | `bool` | answer with `FollowerStatus` now |
//!
//! ## 0x14 FollowerStatus
//!
//! | field | type | notes |
//! |---|---|---|
//! | write_lsn | `u64` | |
//! | flush_lsn | `u64` | |
//! | apply_lsn | `u64` | |
//! | send_time_us | `u64` | µs since the UNIX epoch |
//! | reply_to_time_us | `u64` | `send_time_us` of the keepalive answered, 0 if none |
//!
//! N is always 41.
//!
//! ## Rebuild (base backup) session
//!
//! A node that must be rebuilt (its leader no longer holds the WAL it needs,
//! or it is new and empty) opens a connection as a node, sends
//! `BaseBackupRequest`, and the leader answers `BaseBackupStart`, then the
//! checkpoint file in `BaseBackupData` frames (in order, each at most 4 MiB,
//! contiguous from `offset`), then `BaseBackupEnd`. The leader keeps WAL from
//! the checkpoint's LSN while the connection stays open; the node keeps it
//! open until its ordinary `StartReplication` stream (from the checkpoint LSN)
//! is up, then closes it. Any `Error` (e.g. `not_leader`) ends the session.
//!
//! ## 0x15 BaseBackupRequest
//!
//! | field | type | notes |
//! |---|---|---|
//! | checkpoint_lsn | `u64` | LSN of a checkpoint this node partly received before (0: none) |
//! | offset | `u64` | bytes of it held; the leader resumes there if it serves the same checkpoint |
//!
//! N is always 17.
//!
//! ## 0x16 BaseBackupStart
//!
//! | field | type | notes |
//! |---|---|---|
//! | checkpoint_lsn | `u64` | the checkpoint covers every record below this LSN |
//! | term | `u64` | term of the last record below it |
//! | entries | `u64` | keys in the checkpoint |
//! | total_len | `u64` | file length in bytes |
//! | offset | `u64` | first byte the data frames carry (resume point, or 0) |
//! | count | `u32` | term history entries; exactly `16 * count` bytes must follow |
//! | entries | count × (`u64` term, `u64` start_lsn) | the leader's term history, ascending |
//!
//! ## 0x17 BaseBackupData
//!
//! | field | type | notes |
//! |---|---|---|
//! | offset | `u64` | position in the file of the first byte |
//! | bytes | `rest` | file bytes (decoded without copying) |
//!
//! ## 0x18 BaseBackupEnd
//!
//! | field | type | notes |
//! |---|---|---|
//! | total_len | `u64` | file length |
//! | crc32 | `u32` | CRC-32 (IEEE) of the whole file, from byte 0 |
//!
//! N is always 13.
//!
//! ## 0x20 Failover
//!
//! | field | type | notes |
//! |---|---|---|
//! | payload | `rest` | opaque, encoded by the `failover` crate |
//!
//! ## 0x30 ClientRequest
//!
//! | field | type | notes |
//! |---|---|---|
//! | id | `u64` | chosen by the client, echoed in the response |
//! | op | `u8` | 1 Append, 2 Put, 3 Delete, 4 Get, 5 Status, 6 PutBatch, 7 AppendBatch |
//! | op fields | see below | |
//!
//! | op | fields after `op` |
//! |---|---|
//! | 1 Append | payload `bytes`, ack `u8` |
//! | 2 Put | key `bytes`, value `bytes`, ack `u8` |
//! | 3 Delete | key `bytes`, ack `u8` |
//! | 4 Get | key `bytes`, min_lsn `u64`, wait_ms `u32` |
//! | 5 Status | (none) |
//! | 6 PutBatch | count `u32`, then count × (key `bytes`, value `bytes`), ack `u8` |
//! | 7 AppendBatch | count `u32`, then count × payload `bytes`, ack `u8` |
//!
//! A batch is written as contiguous records by one WAL append, all or nothing,
//! and acknowledged once (a bulk producer's path, like PostgreSQL's `COPY`).
//! The count is checked against the body (at least 8 resp. 4 bytes per entry)
//! before anything is allocated. Nodes refuse (`bad_request`) an empty batch or
//! one of more than [`MAX_BATCH_RECORDS`] records.
//!
//! ack ([`AckLevel`]): 0 default (the node's `replication.ack`), 1 local,
//! 2 remote_write, 3 remote_flush, 4 remote_apply; other values are malformed.
//!
//! ## 0x31 ClientResponse
//!
//! | field | type | notes |
//! |---|---|---|
//! | id | `u64` | the request's id |
//! | result | `u8` | 1 Written, 2 Value, 3 Status, 4 Error, 5 WrittenBatch |
//! | result fields | see below | |
//!
//! | result | fields after `result` |
//! |---|---|
//! | 1 Written | lsn `u64` (END of the record), term `u64` |
//! | 2 Value | value `opt<bytes>` (absent: no such key), applied_lsn `u64` |
//! | 3 Status | json `string` (as `GET /status`) |
//! | 4 Error | code `u16`, message `string`, leader `opt<string>` (leader's binary address) |
//! | 5 WrittenBatch | term `u64`, count `u32`, then count × lsn `u64` (END of each record, request order) |
//!
//! ## Error codes
//!
//! [`ErrorCode`], `u16`; [`ErrorCode::as_str`] is the JSON `code` of the HTTP API.
//! Unknown numbers decode as [`ErrorCode::Unknown`].
//!
//! | code | string | | code | string |
//! |---|---|---|---|---|
//! | 1 | `not_leader` | | 9 | `wrong_cluster` |
//! | 2 | `ack_timeout` | | 10 | `unknown_member` |
//! | 3 | `wait_timeout` | | 11 | `version_mismatch` |
//! | 4 | `not_found` | | 12 | `frame_too_large` |
//! | 5 | `wal_not_available` | | 13 | `fenced` |
//! | 6 | `diverged` | | 14 | `shutting_down` |
//! | 7 | `bad_request` | | 15 | `internal` |
//! | 8 | `unauthorized` | | 16 | `rebuilding` |
//! | 17 | `too_many_connections` | | 18 | `too_large` |
//! | 19 | `wal_failed` | | 20 | `no_space` |
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use proto::{FrameCodec, Message};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut codec = FrameCodec::established(1 << 20);
//! let mut buf = BytesMut::new();
//! codec.encode(Message::Truncate { to_lsn: 0x16B3748 }, &mut buf).unwrap();
//! assert_eq!(&buf[..], &[0, 0, 0, 9, 0x11, 0, 0, 0, 0, 0x01, 0x6B, 0x37, 0x48]);
//! assert_eq!(codec.decode(&mut buf).unwrap(), Some(Message::Truncate { to_lsn: 0x16B3748 }));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
mod codes;
mod error;
mod handshake;
mod message;
mod wire;

pub use codec::{
    FrameCodec, DEFAULT_MAX_FRAME_BYTES, HANDSHAKE_MAX_FRAME_BYTES, LENGTH_PREFIX_BYTES,
    MAX_FRAME_BYTES_CEILING,
};
pub use codes::{AckLevel, ErrorCode, ParseCodeError};
pub use error::{ProtoError, Result};
pub use handshake::{client_handshake, server_handshake, token_eq, validate_hello, Refusal};
pub use message::{base_backup_data_header, BASE_BACKUP_DATA_HEADER_BYTES};
pub use message::{type_name, types, ClientOp, ClientResult, Hello, HelloOk, Message, Peer, MAGIC};

/// Most records one `PutBatch` / `AppendBatch` may carry (nodes answer
/// `bad_request` beyond it; the frame limit bounds the bytes).
pub const MAX_BATCH_RECORDS: usize = 65_536;

/// The protocol version this build speaks (sent in `Hello`).
pub const PROTOCOL_VERSION: u16 = 1;
