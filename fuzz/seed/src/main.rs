//! Writes the seed corpus of every fuzz target into `<out>/<target>/<name>` from
//! the real encoders: records and segments written by the `wal` crate, frames of
//! every message type encoded by `proto::FrameCodec`, failover messages encoded by
//! the `failover` crate, the example configs of `ops/config/`, LSN strings.
//! Deterministic: running it twice gives the same files. Files in a target's
//! directory that it does not write are removed (the corpus is exactly what this
//! program generates).
//!
//! Usage: `cargo run --release --manifest-path fuzz/Cargo.toml -p walship-fuzz-seed -- fuzz/corpus`

#[path = "../../src/format.rs"]
#[allow(dead_code)]
mod format;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use format::{
    HandshakeMode, RecordInput, RecoveryFile, RecoveryInput, APPEND_BASE, APPEND_BASE_TERM,
    HANDSHAKE_CLUSTER, HANDSHAKE_TOKEN, SEGMENT_SIZE,
};
use proto::{
    AckLevel, ClientOp, ClientResult, ErrorCode, FrameCodec, Hello, HelloOk, Message, Peer,
};
use tokio_util::codec::Encoder;
use wal::{kind, Lsn, Wal, WalOptions};

type Seeds = BTreeMap<String, Vec<u8>>;

fn opts() -> WalOptions {
    WalOptions {
        segment_size: SEGMENT_SIZE,
        touch_ahead: 0,
        ..Default::default()
    }
}

fn put(k: &str, v: &str) -> Vec<u8> {
    receiver::state::encode_put(k.as_bytes(), v.as_bytes())
}

/// A WAL (1 MiB segments) ending at APPEND_BASE exactly as the `wal_record` target's.
fn base_wal(dir: &Path) -> Wal {
    let (w, _) = Wal::open(dir, opts()).expect("open");
    let each = APPEND_BASE / 3;
    let payload = vec![0xA5u8; each as usize - wal::record::HEADER_LEN];
    for _ in 0..3 {
        w.append(APPEND_BASE_TERM, 16, &payload).expect("append");
    }
    assert_eq!(w.write_lsn(), Lsn(APPEND_BASE));
    w
}

fn raw(w: &Wal, from: Lsn) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = from;
    while at < w.write_lsn() {
        at = w.read_raw(at, usize::MAX, &mut out).expect("read_raw");
    }
    out
}

fn wal_record() -> Seeds {
    let mut s = Seeds::new();
    let at_base = |records: &[u8]| {
        RecordInput {
            lsn: APPEND_BASE,
            seg_rem: (SEGMENT_SIZE - APPEND_BASE) as u32,
            max_record: 0,
        }
        .encode(records)
    };
    type Appends<'a> = &'a [(u64, u8, &'a [u8])];
    let cases: [(&str, Appends); 6] = [
        ("put", &[(APPEND_BASE_TERM, 16, &put("key", "value"))]),
        (
            "put-delete-log",
            &[
                (APPEND_BASE_TERM, 16, &put("k", "v")),
                (APPEND_BASE_TERM, 17, b"k"),
                (APPEND_BASE_TERM, 18, b"log line"),
            ],
        ),
        ("fills-segment", &[(APPEND_BASE_TERM, 17, &[7u8; 256 - 32])]),
        (
            "padding-then-next-segment",
            &[
                (APPEND_BASE_TERM, 16, &[1u8; 300]),
                (APPEND_BASE_TERM, 16, &put("a", "b")),
            ],
        ),
        (
            "term-start",
            &[
                (APPEND_BASE_TERM + 2, kind::TERM_START, b"n2"),
                (APPEND_BASE_TERM + 2, 16, &put("x", "y")),
            ],
        ),
        ("empty-payload", &[(APPEND_BASE_TERM, 18, b"")]),
    ];
    for (name, appends) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = base_wal(dir.path());
        for (term, k, p) in appends {
            w.append(*term, *k, p).expect("append");
        }
        s.insert(name.into(), at_base(&raw(&w, Lsn(APPEND_BASE))));
    }
    // Valid records that append_raw must refuse: a lower term, the wrong position.
    let mut v = Vec::new();
    wal::record::encode(
        Lsn(APPEND_BASE),
        APPEND_BASE_TERM - 1,
        16,
        &put("old", "term"),
        &mut v,
    );
    s.insert("lower-term".into(), at_base(&v));
    let mut v = Vec::new();
    wal::record::encode(Lsn(0), 1, 16, &put("k", "v"), &mut v);
    wal::record::encode(Lsn(v.len() as u64), 1, 17, b"k", &mut v);
    s.insert(
        "at-zero".into(),
        RecordInput {
            lsn: 0,
            seg_rem: 0,
            max_record: 0,
        }
        .encode(&v),
    );
    s
}

/// A segment file as sparse sections: the first bytes, then patches for every
/// later run of non-zero bytes (record payloads of zeros cost nothing).
fn sparse(index: u8, seg: &[u8], files: &mut Vec<RecoveryFile>) {
    let words: Vec<bool> = seg.chunks(8).map(|c| c.iter().any(|&b| b != 0)).collect();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if !words[i] {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i + 1;
        // merge runs separated by fewer than 8 zero words
        let mut j = end;
        while j < words.len() && j - end < 8 {
            if words[j] {
                end = j + 1;
            }
            j += 1;
        }
        runs.push((start * 8, end * 8));
        i = end;
    }
    let first_end = runs.first().filter(|r| r.0 == 0).map(|r| r.1).unwrap_or(0);
    files.push(RecoveryFile::Segment {
        index,
        exact_size: false,
        data: seg[..first_end].to_vec(),
    });
    for &(a, b) in runs.iter().filter(|r| r.0 != 0) {
        files.push(RecoveryFile::Patch {
            offset: a as u32,
            data: seg[a..b].to_vec(),
        });
    }
}

/// The directory's segments, term history and wal_start as a recovery input.
fn capture(dir: &Path, repair: bool) -> RecoveryInput {
    let mut input = RecoveryInput {
        repair,
        files: Vec::new(),
    };
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    for p in names {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let bytes = std::fs::read(&p).expect("read");
        if let Some(hex) = name.strip_suffix(".wal") {
            let start = u64::from_str_radix(hex, 16).expect("segment name");
            if bytes.iter().all(|&b| b == 0) {
                continue; // preallocated ahead of the writer
            }
            sparse((start / SEGMENT_SIZE) as u8, &bytes, &mut input.files);
        } else if name == wal::TERM_HISTORY_FILE {
            input.files.push(RecoveryFile::TermHistory(bytes));
        } else if name == "wal_start" {
            input.files.push(RecoveryFile::WalStart(bytes));
        }
    }
    input
}

fn wal_recovery() -> Seeds {
    let mut s = Seeds::new();
    s.insert("empty-dir".into(), RecoveryInput::default().encode());

    let build = |f: &dyn Fn(&Wal)| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (w, _) = Wal::open(dir.path(), opts()).expect("open");
        f(&w);
        w.flush(w.write_lsn()).expect("flush");
        drop(w);
        dir
    };
    let few = build(&|w| {
        w.append(1, kind::TERM_START, b"n1").unwrap();
        for i in 0..5 {
            w.append(1, 16, &put(&format!("k{i}"), "v")).unwrap();
        }
    });
    s.insert("one-segment".into(), capture(few.path(), false).encode());

    // Two segments (the first sealed by a PADDING record), terms 1 then 2. Big
    // payloads of zeros keep the seed small (sparse sections).
    let two = build(&|w| {
        w.append(1, kind::TERM_START, b"n1").unwrap();
        w.append(1, 18, &vec![0u8; 400 << 10]).unwrap();
        w.append(1, 18, &vec![0u8; 400 << 10]).unwrap();
        w.append(2, kind::TERM_START, b"n2").unwrap();
        w.append(2, 18, &vec![0u8; 300 << 10]).unwrap();
        w.append(2, 16, &put("after", "rollover")).unwrap();
    });
    let two_in = capture(two.path(), false);
    s.insert("two-segments-terms".into(), two_in.encode());
    // The same with a torn tail: half a record after the end.
    let mut torn = two_in.clone();
    let end = {
        let (w, r) = Wal::open(two.path(), opts()).unwrap();
        drop(w);
        r.write_lsn.0
    };
    let mut rec = Vec::new();
    wal::record::encode(Lsn(end), 2, 16, &put("torn", "write"), &mut rec);
    rec.truncate(rec.len() / 2);
    torn.files.push(RecoveryFile::Patch {
        offset: (end % SEGMENT_SIZE) as u32,
        data: rec,
    });
    s.insert("torn-tail".into(), torn.encode());
    // Damage inside the sealed segment: a flipped bit in a record header, with and
    // without repair.
    let mut flip = two_in.clone();
    if let Some(RecoveryFile::Segment { data, .. }) = flip.files.first_mut() {
        if data.len() > 40 {
            data[40] ^= 0x10;
        }
    }
    s.insert("sealed-damage".into(), flip.encode());
    flip.repair = true;
    s.insert("sealed-damage-repair".into(), flip.encode());
    // A missing segment between two present ones.
    let three = build(&|w| {
        for _ in 0..5 {
            w.append(1, 18, &vec![0u8; 400 << 10]).unwrap();
        }
    });
    let mut gap = capture(three.path(), false);
    gap.files
        .retain(|f| !matches!(f, RecoveryFile::Segment { index: 1, .. }));
    // drop the patches that belonged to segment 1 as well
    let mut keep = Vec::new();
    let mut skipping = false;
    for f in gap.files {
        match &f {
            RecoveryFile::Segment { index, .. } => skipping = *index == 1,
            RecoveryFile::Patch { .. } if skipping => continue,
            _ => {}
        }
        keep.push(f);
    }
    gap.files = keep;
    s.insert("missing-segment".into(), gap.encode());
    // After a reset (rebuild from a checkpoint): wal_start inside segment 1.
    let reset = build(&|w| {
        w.reset(Lsn(SEGMENT_SIZE + 4096)).unwrap();
        w.append(4, kind::TERM_START, b"n3").unwrap();
        w.append(4, 16, &put("k", "v")).unwrap();
    });
    s.insert("after-reset".into(), capture(reset.path(), false).encode());
    // A term history disagreeing with the records.
    let mut hist = capture(few.path(), false);
    hist.files
        .retain(|f| !matches!(f, RecoveryFile::TermHistory(_)));
    hist.files.push(RecoveryFile::TermHistory(
        b"# walship term history: <term> <first LSN of that term>\n1 0/0\n5 0/40\n".to_vec(),
    ));
    s.insert("history-mismatch".into(), hist.encode());
    // Regression (docs/robustness.md #12): a wal_start no log can start at.
    let bad_start = RecoveryInput {
        repair: false,
        files: vec![
            RecoveryFile::Segment {
                index: 0,
                exact_size: false,
                data: Vec::new(),
            },
            RecoveryFile::WalStart(b"0/FFFF8\n".to_vec()),
        ],
    };
    s.insert("wal-start-no-boundary".into(), bad_start.encode());
    s
}

fn frame(codec: &mut FrameCodec, msgs: &[Message]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for m in msgs {
        codec.encode(m, &mut b).expect("encode");
    }
    b.to_vec()
}

fn hello(peer: Peer, token: &str) -> Message {
    Message::Hello(Hello {
        version: proto::PROTOCOL_VERSION,
        cluster_id: HANDSHAKE_CLUSTER.into(),
        peer,
        token: token.into(),
    })
}

fn failover_messages() -> Vec<failover::Message> {
    vec![
        failover::Message::VoteRequest {
            term: 7,
            candidate: "n2".into(),
            last_term: 6,
            last_lsn: 0x16B_3748,
            pre_vote: true,
            transfer: false,
            force: false,
        },
        failover::Message::VoteResponse {
            term: 7,
            granted: false,
            pre_vote: true,
            reject_reason: Some(failover::Refusal::LogBehind),
        },
        failover::Message::Heartbeat {
            term: 3,
            leader: "n1".into(),
            leader_flush_lsn: 99,
            paused: false,
            sync_standbys: vec!["n2".into()],
            succession: vec!["n2".into(), "n3".into()],
        },
        failover::Message::HeartbeatAck {
            term: 3,
            last_term: 3,
            last_lsn: 90,
        },
        failover::Message::TimeoutNow { term: 4 },
        failover::Message::SetPaused {
            term: 4,
            paused: true,
        },
    ]
}

fn all_messages() -> Vec<(&'static str, Message)> {
    let mut wal_bytes = Vec::new();
    wal::record::encode(Lsn(0x1000), 3, 16, &put("k", "v"), &mut wal_bytes);
    let mut v = vec![
        (
            "hello-node",
            hello(Peer::Node("n2".into()), HANDSHAKE_TOKEN),
        ),
        ("hello-client", hello(Peer::Client, "")),
        (
            "hello-ok",
            Message::HelloOk(HelloOk {
                node_id: "n1".into(),
                term: 7,
                leader_id: Some("n1".into()),
            }),
        ),
        (
            "error",
            Message::Error {
                code: ErrorCode::WrongCluster,
                message: "cluster id \"x\" does not match".into(),
            },
        ),
        (
            "start-replication",
            Message::StartReplication {
                term_history: vec![(1, 0), (3, 0x4000)],
                write_lsn: 0x8000,
                flush_lsn: 0x7000,
                apply_lsn: 0x6000,
            },
        ),
        ("truncate", Message::Truncate { to_lsn: 0x16B3748 }),
        (
            "wal-data",
            Message::WalData {
                start_lsn: 0x1000,
                bytes: Bytes::from(wal_bytes),
            },
        ),
        (
            "keepalive",
            Message::Keepalive {
                term: 3,
                leader_id: "n1".into(),
                flush_lsn: 0x9000,
                commit_lsn: 0x8800,
                send_time_us: 1_700_000_000_000_000,
                reply_requested: true,
            },
        ),
        (
            "follower-status",
            Message::FollowerStatus {
                write_lsn: 0x9000,
                flush_lsn: 0x9000,
                apply_lsn: 0x8800,
                send_time_us: 1_700_000_000_000_001,
                reply_to_time_us: 1_700_000_000_000_000,
            },
        ),
        (
            "base-backup-request",
            Message::BaseBackupRequest {
                checkpoint_lsn: 0x8000,
                offset: 0,
            },
        ),
        (
            "base-backup-start",
            Message::BaseBackupStart {
                checkpoint_lsn: 0x8000,
                term: 3,
                entries: 2,
                total_len: 64,
                offset: 0,
                term_history: vec![(1, 0), (3, 0x4000)],
            },
        ),
        (
            "base-backup-data",
            Message::BaseBackupData {
                offset: 0,
                bytes: Bytes::from_static(b"checkpoint bytes"),
            },
        ),
        (
            "base-backup-end",
            Message::BaseBackupEnd {
                total_len: 64,
                crc32: 0xDEAD_BEEF,
            },
        ),
    ];
    let reqs = [
        ClientOp::Append {
            payload: Bytes::from_static(b"log record"),
            ack: AckLevel::RemoteFlush,
        },
        ClientOp::Put {
            key: Bytes::from_static(b"key"),
            value: Bytes::from_static(b"value"),
            ack: AckLevel::Default,
        },
        ClientOp::Delete {
            key: Bytes::from_static(b"key"),
            ack: AckLevel::RemoteApply,
        },
        ClientOp::Get {
            key: Bytes::from_static(b"key"),
            min_lsn: 0x1A2B,
            wait_ms: 500,
        },
        ClientOp::Status,
    ];
    let names = [
        "req-append",
        "req-put",
        "req-delete",
        "req-get",
        "req-status",
    ];
    for (i, (op, name)) in reqs.into_iter().zip(names).enumerate() {
        v.push((
            name,
            Message::ClientRequest {
                id: i as u64 + 1,
                op,
            },
        ));
    }
    let results = [
        ClientResult::Written {
            lsn: 0x1A2B,
            term: 3,
        },
        ClientResult::Value {
            value: Some(Bytes::from_static(b"value")),
            applied_lsn: 0x1A2B,
        },
        ClientResult::Value {
            value: None,
            applied_lsn: 0,
        },
        ClientResult::Status {
            json: "{\"role\":\"leader\"}".into(),
        },
        ClientResult::Error {
            code: ErrorCode::NotLeader,
            message: "not the leader".into(),
            leader: Some("10.0.0.1:7400".into()),
        },
    ];
    let names = [
        "res-written",
        "res-value",
        "res-absent",
        "res-status",
        "res-error",
    ];
    for (i, (result, name)) in results.into_iter().zip(names).enumerate() {
        v.push((
            name,
            Message::ClientResponse {
                id: i as u64 + 1,
                result,
            },
        ));
    }
    let fnames = [
        "failover-vote-req",
        "failover-vote-resp",
        "failover-heartbeat",
        "failover-hb-ack",
        "failover-timeout-now",
        "failover-set-paused",
    ];
    for (m, name) in failover_messages().into_iter().zip(fnames) {
        v.push((name, Message::Failover(m.encode())));
    }
    v
}

fn frame_decoder() -> Seeds {
    let mut s = Seeds::new();
    let msgs = all_messages();
    for (i, (name, m)) in msgs.iter().enumerate() {
        // established 1 MiB codec, a different split per seed
        let mut c = FrameCodec::established(1 << 20);
        let mut v = vec![2u8, i as u8];
        v.extend(frame(&mut c, std::slice::from_ref(m)));
        s.insert((*name).to_string(), v);
    }
    // A whole replication session in one stream, and a handshake-phase stream.
    let mut c = FrameCodec::established(1 << 20);
    let all: Vec<Message> = msgs.iter().map(|(_, m)| m.clone()).collect();
    let mut v = vec![3u8, 7];
    v.extend(frame(&mut c, &all));
    s.insert("all-in-one-stream".into(), v);
    let mut c = FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES);
    let mut v = vec![0u8, 1];
    v.extend(frame(
        &mut c,
        &[hello(Peer::Node("n2".into()), HANDSHAKE_TOKEN)],
    ));
    s.insert("handshake-phase-hello".into(), v);
    s.insert(
        "http-on-binary-port".into(),
        b"\x00\x00GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    );
    s
}

fn handshake() -> Seeds {
    let mut s = Seeds::new();
    let mode = |client: bool, token: bool, read_chunk: usize| {
        HandshakeMode {
            client,
            token,
            read_chunk,
        }
        .encode()
    };
    let hs = || FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES);
    let mut server = |name: &str, token: bool, chunk: usize, m: Message| {
        let mut v = vec![mode(false, token, chunk)];
        v.extend(frame(&mut hs(), &[m]));
        s.insert(format!("server-{name}"), v);
    };
    server(
        "node-ok",
        true,
        0,
        hello(Peer::Node("n2".into()), HANDSHAKE_TOKEN),
    );
    server(
        "node-ok-chunked",
        true,
        3,
        hello(Peer::Node("n3".into()), HANDSHAKE_TOKEN),
    );
    server("client-no-token", false, 0, hello(Peer::Client, ""));
    server("bad-token", true, 0, hello(Peer::Client, "guess"));
    server(
        "unknown-member",
        false,
        1,
        hello(Peer::Node("n9".into()), ""),
    );
    server(
        "wrong-cluster",
        false,
        0,
        Message::Hello(Hello {
            version: proto::PROTOCOL_VERSION,
            cluster_id: "staging".into(),
            peer: Peer::Client,
            token: String::new(),
        }),
    );
    server(
        "other-version",
        false,
        0,
        Message::Hello(Hello {
            version: proto::PROTOCOL_VERSION + 1,
            cluster_id: HANDSHAKE_CLUSTER.into(),
            peer: Peer::Client,
            token: String::new(),
        }),
    );
    server("not-hello", false, 0, Message::Truncate { to_lsn: 1 });
    s.insert(
        "server-http-request".into(),
        [
            &[mode(false, false, 0)][..],
            b"GET /health HTTP/1.1\r\n\r\n",
        ]
        .concat(),
    );
    let mut client = |name: &str, m: Message| {
        let mut v = vec![mode(true, false, 2)];
        v.extend(frame(&mut hs(), &[m]));
        s.insert(format!("client-{name}"), v);
    };
    client(
        "hello-ok",
        Message::HelloOk(HelloOk {
            node_id: "n1".into(),
            term: 7,
            leader_id: None,
        }),
    );
    client(
        "refused",
        Message::Error {
            code: ErrorCode::Unauthorized,
            message: "invalid token".into(),
        },
    );
    client("unexpected", Message::Truncate { to_lsn: 5 });
    s
}

fn config(repo: &Path) -> Seeds {
    let mut s = Seeds::new();
    let ops = repo.join("ops/config");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&ops)
        .expect("ops/config")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    for p in names {
        let n = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
            .to_string();
        s.insert(format!("ops-{n}"), std::fs::read(&p).expect("read config"));
    }
    let min = "cluster_id = \"c\"\nnode_id = \"n1\"\ndata_dir = \"/tmp/x\"\nlisten = \"127.0.0.1:7400\"\nhttp_listen = \"127.0.0.1:7480\"\n[[members]]\nid = \"n1\"\naddr = \"127.0.0.1:7400\"\nhttp = \"127.0.0.1:7480\"\n";
    s.insert("minimal.toml".into(), min.as_bytes().to_vec());
    let full = r#"cluster_id  = "prod-eu"
node_id     = "n2"
data_dir    = "data/n2"
listen      = "node2.example:7400"
http_listen = "[::1]:7480"

[[members]]
id = "n1"
addr = "node1.example:7400"
http = "node1.example:7480"
priority = 2

[[members]]
id = "n2"
addr = "node2.example:7400"
http = "[::1]:7480"
priority = 0

[replication]
mode = "sync"
standbys = "FIRST 1 (n1, n2)"
ack = "remote_apply"
ack_timeout = "2s 500ms"

[failover]
auto = false
heartbeat_interval = "50ms"
election_timeout = "1500ms"
max_lag_on_failover = "1.5MiB"

[wal]
segment_size = "16MiB"
sync = "never"
min_retained = "64MiB"
max_retained = "1GiB"

[checkpoint]
interval = "10min"
max_wal = "512MiB"

[security]
token_file = "token"
"#;
    s.insert("every-key.toml".into(), full.as_bytes().to_vec());
    // Regression (docs/robustness.md #13): durations whose arithmetic overflowed.
    let huge = format!(
        "{min}[failover]\nheartbeat_interval = \"6148914691236517206s\"\nelection_timeout = \"18446744073709551615s\"\n"
    );
    s.insert("huge-durations.toml".into(), huge.into_bytes());
    s
}

fn lsn() -> Seeds {
    let mut s = Seeds::new();
    for (name, t) in [
        ("pg-form", "0/16B3748"),
        ("padded", "00000000/016b3748"),
        ("max", "FFFFFFFF/FFFFFFFF"),
        ("decimal", "23803720"),
        ("decimal-max", "18446744073709551615"),
        ("spaces", " 5 "),
        ("zero", "0/0"),
        ("high", "A/1"),
    ] {
        s.insert(name.into(), t.as_bytes().to_vec());
    }
    s
}

fn write(out: &Path, target: &str, seeds: Seeds) -> usize {
    let dir = out.join(target);
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    for e in std::fs::read_dir(&dir).expect("read corpus dir") {
        let p = e.expect("entry").path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if !seeds.contains_key(&name) {
            std::fs::remove_file(&p).expect("remove stale seed");
        }
    }
    let mut bytes = 0;
    for (name, data) in &seeds {
        bytes += data.len();
        std::fs::write(dir.join(name), data).expect("write seed");
    }
    println!("{target}: {} seeds, {bytes} bytes", seeds.len());
    bytes
}

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut total = 0;
    total += write(&out, "wal_record", wal_record());
    total += write(&out, "wal_recovery", wal_recovery());
    total += write(&out, "frame_decoder", frame_decoder());
    total += write(&out, "handshake", handshake());
    total += write(&out, "config", config(&repo));
    total += write(&out, "lsn", lsn());
    println!("total: {total} bytes");
    assert!(total < 2 << 20, "the seed corpus must stay under 2 MB");
}
