//! Limits under load (issue 7 part 5, `[limits]` in docs/INTERFACE.md): real
//! `walship serve` processes on loopback (the harness of `walship::demo`),
//! flooded with idle connections, oversized frames, bodies, keys and values
//! and pipelined requests while a real client keeps writing and reading.
//!
//! | test | what it checks |
//! |---|---|
//! | `flood_and_oversized_input_leave_real_clients_served` | every limit refuses with its clear error (binary `too_many_connections`, `frame_too_large` — also as the client library's error for a batch over the frame limit —, `too_large`; HTTP 503, 413), idle connections are closed after `limits.handshake_timeout`, at most `max_in_flight_per_client` requests of one client run at once, members still get in (handshake and a restarted follower's replication) while every client slot is taken, the leader's VmRSS stays below baseline + 200 MiB (the oversized frames alone would have made it buffer 512 MiB), the real client never fails, and the refusals are counted in `/metrics` |
//!
//! Bounds are generous upper limits only; nothing asserts a duration.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use proto::{AckLevel, ClientOp, ErrorCode, FrameCodec, Hello, Message, Peer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use walship::client::{Client, ClientError};
use walship::demo::{ClusterSpec, LocalCluster};

const EXE: &str = env!("CARGO_BIN_EXE_walship");
/// Upper bound for "this must happen soon".
const LIMIT: Duration = Duration::from_secs(30);
const CLUSTER: &str = "walship-demo";

const MAX_CONNECTIONS: usize = 64;
const RESERVED: usize = 8;
const MAX_HTTP_CONNECTIONS: usize = 64;
const MAX_VALUE: usize = 256 << 10;
const MAX_IN_FLIGHT: i64 = 16;

const LIMITS: &str = "\n[limits]\nmax_connections = 64\nmember_reserved_connections = 8\n\
    max_http_connections = 64\nhandshake_timeout = \"2s\"\nmax_frame_bytes = \"1MiB\"\n\
    max_value_bytes = \"256KiB\"\nmax_http_body_bytes = \"512KiB\"\nmax_in_flight_per_client = 16\n";

/// VmRSS of a process in bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

/// Largest VmRSS seen, sampled by [`Rss::sample`].
struct Rss {
    pid: u32,
    baseline: u64,
    max: AtomicU64,
}

impl Rss {
    fn sample(&self) -> u64 {
        let r = rss(self.pid);
        self.max.fetch_max(r, Ordering::Relaxed);
        r
    }
    fn bound(&self) -> u64 {
        self.baseline + (200 << 20)
    }
}

/// A raw binary connection after a successful handshake as `peer`.
async fn handshake(
    addr: std::net::SocketAddr,
    peer: Peer,
) -> Result<Framed<TcpStream, FrameCodec>, proto::ProtoError> {
    let s = TcpStream::connect(addr).await?;
    let mut f = Framed::new(s, FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES));
    proto::client_handshake(
        &mut f,
        Hello {
            version: proto::PROTOCOL_VERSION,
            cluster_id: CLUSTER.into(),
            peer,
            token: String::new(),
        },
    )
    .await?;
    Ok(f)
}

fn refused_with(
    r: Result<Framed<TcpStream, FrameCodec>, proto::ProtoError>,
    want: ErrorCode,
) -> String {
    match r {
        Err(proto::ProtoError::Refused { code, message }) if code == want => message,
        Err(e) => panic!("expected a {want} refusal, got {e}"),
        Ok(_) => panic!("expected a {want} refusal, got HelloOk"),
    }
}

/// Read what the node sends until it closes (bounded by [`LIMIT`]).
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let r = tokio::time::timeout(LIMIT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "the node did not close the connection within {LIMIT:?}"
    );
    out
}

/// Decode one frame from raw bytes (an `Error` the node sent before closing).
fn decode_error(bytes: &[u8]) -> Option<(ErrorCode, String)> {
    use tokio_util::codec::Decoder;
    let mut b = bytes::BytesMut::from(bytes);
    match FrameCodec::new(1 << 20).decode(&mut b) {
        Ok(Some(Message::Error { code, message })) => Some((code, message)),
        _ => None,
    }
}

/// One metric sample from `/metrics` text (the line starting with `prefix`).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn metrics(http: &reqwest::Client, addr: std::net::SocketAddr) -> String {
    http.get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The real client: binary put + get and HTTP put + get in a loop, every
/// answer checked, until stopped.
struct RealClient {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RealClient {
    fn start(client: Client, http_addr: std::net::SocketAddr) -> RealClient {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), ok.clone(), failures.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(LIMIT)
                .build()
                .expect("reqwest");
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("real-{i}");
                let val = format!("v{i}");
                let r: Result<(), String> = async {
                    let (lsn, _) = client
                        .put(key.clone(), val.clone(), AckLevel::Default)
                        .await
                        .map_err(|e| format!("binary put: {e}"))?;
                    let (v, _) = client
                        .get(key.clone(), lsn, 10_000)
                        .await
                        .map_err(|e| format!("binary get: {e}"))?;
                    if v.as_deref() != Some(val.as_bytes()) {
                        return Err(format!("binary get {key}: {v:?}"));
                    }
                    let url = format!("http://{http_addr}/v1/kv/h{key}");
                    // One retry on a transport error only (a keep-alive
                    // connection the node closed at the same instant).
                    let mut resp = http.put(&url).body(val.clone()).send().await;
                    if resp.is_err() {
                        resp = http.put(&url).body(val.clone()).send().await;
                    }
                    let resp = resp.map_err(|e| format!("http put: {e}"))?;
                    if !resp.status().is_success() {
                        return Err(format!(
                            "http put {}: {:?}",
                            resp.status(),
                            resp.text().await
                        ));
                    }
                    let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
                    let lsn = body["lsn"].as_str().unwrap_or("0/0").to_string();
                    let resp = http
                        .get(format!("{url}?min_lsn={lsn}&wait=10s"))
                        .send()
                        .await
                        .map_err(|e| format!("http get: {e}"))?;
                    if !resp.status().is_success() {
                        return Err(format!("http get {}", resp.status()));
                    }
                    let got = resp.bytes().await.map_err(|e| e.to_string())?;
                    if got != val.as_bytes() {
                        return Err(format!("http get {key}: {got:?}"));
                    }
                    Ok(())
                }
                .await;
                match r {
                    Ok(()) => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        f.lock().unwrap().push(e);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
        RealClient {
            stop,
            ok,
            failures,
            task,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Wait until the real client completed `n` more rounds (it is served).
    async fn wait_progress(&self, n: u64, phase: &str) {
        let start = self.ok();
        let r = tokio::time::timeout(LIMIT, async {
            while self.ok() < start + n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            r.is_ok(),
            "{phase}: the real client made no progress; failures: {:?}",
            self.failures.lock().unwrap()
        );
    }
}

#[test]
fn flood_and_oversized_input_leave_real_clients_served() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = LocalCluster::create(EXE.as_ref(), dir.path(), ClusterSpec::fast(3))
        .expect("configs written");
    for i in 0..c.len() {
        let p = c.node(i).config.clone();
        let mut text = std::fs::read_to_string(&p).expect("read config");
        text.push_str(LIMITS);
        std::fs::write(&p, text).expect("write config");
    }
    c.start_all().expect("nodes start");
    c.wait_healthy(LIMIT).await.expect("healthy");
    let (l, _term) = c.wait_leader(&[0, 1, 2], 1, LIMIT).await.expect("a leader");
    let followers: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    for &f in &followers {
        c.wait_follower_of(f, l, LIMIT)
            .await
            .expect("follower streams");
    }
    let addr = c.node(l).addr;
    let http_addr = c.node(l).http;
    let pid = c.pid(l).expect("leader pid");
    let http = reqwest::Client::builder()
        .timeout(LIMIT)
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest");

    let client = Client::connect(addr, CLUSTER, "")
        .await
        .expect("real client connects");
    let real = RealClient::start(client, http_addr);
    real.wait_progress(20, "warm-up").await;
    let mem = Rss {
        pid,
        baseline: rss(pid),
        max: AtomicU64::new(0),
    };
    println!(
        "leader {} baseline VmRSS {} MiB",
        c.node(l).id,
        mem.baseline >> 20
    );

    // 1. A flood of idle binary connections (no handshake): beyond the
    // limit refused at once with too_many_connections; the others closed
    // after limits.handshake_timeout.
    const FLOOD: usize = 300;
    // Slowloris: half a Hello, then nothing.
    let mut partial = TcpStream::connect(addr).await.expect("connect");
    partial
        .write_all(&[0, 0, 0, 100, 0x01, b'W', b'S'])
        .await
        .expect("half a Hello");
    let partial = tokio::spawn(async move { read_to_close(&mut partial).await });
    let mut socks = Vec::new();
    for _ in 0..FLOOD {
        socks.push(TcpStream::connect(addr).await.expect("connect"));
    }
    mem.sample();
    let reads: Vec<_> = socks
        .into_iter()
        .map(|mut s| tokio::spawn(async move { read_to_close(&mut s).await }))
        .collect();
    let (mut refused, mut closed) = (0, 0);
    for r in reads {
        let bytes = r.await.expect("reader");
        match decode_error(&bytes) {
            Some((code, msg)) => {
                assert_eq!(code, ErrorCode::TooManyConnections, "{msg}");
                assert!(msg.contains("limits.max_connections"), "{msg}");
                refused += 1;
            }
            None => {
                assert!(bytes.is_empty(), "an idle connection got {bytes:?}");
                closed += 1;
            }
        }
    }
    assert!(
        partial.await.expect("reader").is_empty(),
        "a half-sent Hello is closed by the handshake timeout, unanswered"
    );
    println!("binary flood: {refused} refused at once, {closed} closed by the handshake timeout");
    assert!(refused >= FLOOD - MAX_CONNECTIONS, "{refused} refused");
    assert!(
        (1..=MAX_CONNECTIONS).contains(&closed),
        "{closed} timed out"
    );
    real.wait_progress(5, "after the binary flood").await;
    mem.sample();

    // 2. The same on the HTTP port: 503 too_many_connections beyond the
    // limit; idle ones closed after the header timeout.
    // Slowloris: half a request head, then nothing.
    let mut partial = TcpStream::connect(http_addr).await.expect("connect");
    partial
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("half a request head");
    let partial = tokio::spawn(async move { read_to_close(&mut partial).await });
    let mut socks = Vec::new();
    for _ in 0..FLOOD {
        socks.push(TcpStream::connect(http_addr).await.expect("connect"));
    }
    let reads: Vec<_> = socks
        .into_iter()
        .map(|mut s| tokio::spawn(async move { read_to_close(&mut s).await }))
        .collect();
    let (mut refused, mut closed) = (0, 0);
    for r in reads {
        let bytes = r.await.expect("reader");
        if bytes.is_empty() {
            closed += 1;
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("too_many_connections"), "{text}");
        assert!(text.contains("limits.max_http_connections"), "{text}");
        refused += 1;
    }
    let head = partial.await.expect("reader");
    assert!(
        !String::from_utf8_lossy(&head).contains("200 OK"),
        "a half-sent request head is closed by the header timeout, not served"
    );
    println!("http flood: {refused} refused at once (503), {closed} closed by the header timeout");
    assert!(refused >= FLOOD - MAX_HTTP_CONNECTIONS, "{refused} refused");
    assert!(closed >= 1, "{closed} timed out");
    real.wait_progress(5, "after the HTTP flood").await;
    mem.sample();

    // 3. Oversized frames: before the handshake (64 KiB limit) and after it
    // (limits.max_frame_bytes = 1 MiB), from 16 connections at once each
    // trying to send 32 MiB (512 MiB the node would otherwise buffer).
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&(1u32 << 30).to_be_bytes())
        .await
        .expect("write header");
    let bytes = read_to_close(&mut s).await;
    let (code, msg) = decode_error(&bytes).expect("an Error frame");
    assert_eq!(code, ErrorCode::FrameTooLarge, "{msg}");
    // 4 connections send only the header: the Error frame always arrives.
    // 12 more stream 32 MiB each: refused from the header, their writes fail
    // (the Error frame may then be lost to the reset of the unread flood).
    let mut tasks = Vec::new();
    for i in 0..16 {
        tasks.push(tokio::spawn(async move {
            let f = handshake(addr, Peer::Client)
                .await
                .expect("client handshake");
            let mut s = f.into_inner();
            s.write_all(&(32u32 << 20).to_be_bytes())
                .await
                .expect("header");
            s.write_all(&[0x30]).await.expect("type byte");
            if i >= 4 {
                let zeros = vec![0u8; 1 << 20];
                for _ in 0..32 {
                    if s.write_all(&zeros).await.is_err() {
                        break;
                    }
                }
            }
            let bytes = read_to_close(&mut s).await;
            (i, decode_error(&bytes))
        }));
    }
    let mut answered = 0;
    for t in tasks {
        let (i, err) = t.await.expect("oversized sender");
        mem.sample();
        match err {
            Some((code, msg)) => {
                assert_eq!(code, ErrorCode::FrameTooLarge, "{msg}");
                assert!(msg.contains("limits.max_frame_bytes"), "{msg}");
                answered += 1;
            }
            None => assert!(i >= 4, "connection {i} got no frame_too_large answer"),
        }
    }
    println!("oversized frames: {answered} of 16 connections got frame_too_large");

    // HTTP: a body announced larger than limits.max_http_body_bytes is
    // refused before it is read; 16 at once.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(http_addr).await.expect("connect");
            s.write_all(
                b"PUT /v1/kv/huge HTTP/1.1\r\nhost: x\r\ncontent-length: 1073741824\r\n\r\n",
            )
            .await
            .expect("write");
            let mut buf = vec![0u8; 4096];
            let n = tokio::time::timeout(LIMIT, s.read(&mut buf))
                .await
                .expect("an answer in time")
                .unwrap_or(0);
            String::from_utf8_lossy(&buf[..n]).to_string()
        }));
    }
    for t in tasks {
        let text = t.await.expect("http sender");
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.contains("limits.max_http_body_bytes"), "{text}");
    }
    mem.sample();

    // 4. Keys and values over their limits: refused with too_large on every
    // write path; nothing written.
    let cl = Client::connect(addr, CLUSTER, "").await.expect("client");
    let too_large = |r: Result<(u64, u64), ClientError>, what: &str| match r {
        Err(ClientError::Server { code, message, .. }) => {
            assert_eq!(code, ErrorCode::TooLarge, "{what}: {message}");
            message
        }
        other => panic!("{what}: expected too_large, got {other:?}"),
    };
    let m = too_large(
        cl.put(vec![b'k'; 4097], "v", AckLevel::Default).await,
        "long key",
    );
    assert!(m.contains("limits.max_key_bytes"), "{m}");
    let m = too_large(
        cl.put("big", vec![0u8; MAX_VALUE + 1], AckLevel::Default)
            .await,
        "big value",
    );
    assert!(m.contains("limits.max_value_bytes"), "{m}");
    too_large(
        cl.append(vec![0u8; MAX_VALUE + 1], AckLevel::Default).await,
        "big log record",
    );
    too_large(
        cl.delete(vec![b'k'; 4097], AckLevel::Default).await,
        "long key delete",
    );
    let r = cl
        .put_batch(
            vec![
                (Bytes::from_static(b"batch-ok"), Bytes::from_static(b"v")),
                (
                    Bytes::from_static(b"batch-big"),
                    Bytes::from(vec![0u8; MAX_VALUE + 1]),
                ),
            ],
            AckLevel::Default,
        )
        .await
        .map(|(l, t)| (l.len() as u64, t));
    let m = too_large(r, "batch");
    assert!(m.contains("entry 1"), "{m}");
    let r = cl
        .append_batch(
            vec![
                Bytes::from_static(b"x"),
                Bytes::from(vec![0u8; MAX_VALUE + 1]),
            ],
            AckLevel::Default,
        )
        .await
        .map(|(l, t)| (l.len() as u64, t));
    too_large(r, "append batch");
    // At the limit is accepted; the refused batch wrote nothing.
    let (lsn, _) = cl
        .put("at-limit", vec![7u8; MAX_VALUE], AckLevel::Default)
        .await
        .expect("a value of exactly max_value_bytes");
    let (v, _) = cl.get("batch-ok", lsn, 10_000).await.expect("get");
    assert_eq!(v, None, "a refused batch wrote nothing");
    // HTTP: 413 too_large naming the limit.
    for (method, path, body, names) in [
        (
            "PUT",
            "/v1/kv/hbig".to_string(),
            MAX_VALUE + 1,
            "limits.max_value_bytes",
        ),
        (
            "POST",
            "/v1/log".to_string(),
            MAX_VALUE + 1,
            "limits.max_value_bytes",
        ),
        (
            "PUT",
            "/v1/kv/hbig".to_string(),
            (512 << 10) + 1,
            "limits.max_http_body_bytes",
        ),
        (
            "PUT",
            format!("/v1/kv/{}", "k".repeat(4097)),
            1,
            "limits.max_key_bytes",
        ),
    ] {
        let url = format!("http://{http_addr}{path}");
        // The node may answer 413 from the request head and close before the
        // client has sent the whole body; the client then sees a broken pipe or
        // a reset instead of the answer (HTTP/1.1 without `Expect: 100-continue`).
        // Retry a few times: the refusal must be readable in at least one.
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let req = match method {
                "PUT" => http.put(&url),
                _ => http.post(&url),
            };
            match req.body(vec![1u8; body]).send().await {
                Ok(r) => break r,
                Err(e) if attempt < 10 => {
                    println!("{method} {path:.20} {body} bytes: attempt {attempt}: {e}; retrying");
                }
                Err(e) => panic!("{method} {body} bytes: no answer in {attempt} attempts: {e}"),
            }
        };
        assert_eq!(resp.status(), 413, "{method} {body} bytes");
        let v: serde_json::Value = resp.json().await.expect("JSON error");
        assert_eq!(v["code"], "too_large", "{v}");
        assert!(v["error"].as_str().unwrap_or("").contains(names), "{v}");
    }
    // A batch over limits.max_frame_bytes: the client library reports the
    // node's frame_too_large (the node closes that connection).
    let entries: Vec<(Bytes, Bytes)> = (0..8)
        .map(|i| {
            (
                Bytes::from(format!("fb{i}")),
                Bytes::from(vec![1u8; MAX_VALUE]),
            )
        })
        .collect();
    match cl.put_batch(entries, AckLevel::Default).await {
        Err(ClientError::Server { code, message, .. }) => {
            assert_eq!(code, ErrorCode::FrameTooLarge, "{message}");
            assert!(message.contains("limits.max_frame_bytes"), "{message}");
        }
        other => panic!("expected frame_too_large, got {other:?}"),
    }
    drop(cl);
    real.wait_progress(5, "after oversized input").await;

    // 5. Pipelined requests: one client sends 100 reads that wait for an LSN
    // far ahead; at most max_in_flight_per_client run, the rest wait in the
    // socket (the node stops reading).
    let mut f = handshake(addr, Peer::Client).await.expect("client");
    for id in 0..100u64 {
        f.feed(Message::ClientRequest {
            id,
            op: ClientOp::Get {
                key: Bytes::from_static(b"nothing"),
                min_lsn: u64::MAX / 2,
                wait_ms: 60_000,
            },
        })
        .await
        .expect("feed");
    }
    SinkExt::<Message>::flush(&mut f).await.expect("flush");
    let prefix = "walship_client_requests_in_flight ";
    let mut seen = 0.0;
    let r = tokio::time::timeout(LIMIT, async {
        loop {
            let m = metrics(&http, http_addr).await;
            let v = metric(&m, prefix);
            // The real client has at most one request in flight besides.
            assert!(v <= (MAX_IN_FLIGHT + 1) as f64, "{v} requests in flight");
            if v >= MAX_IN_FLIGHT as f64 {
                seen = v;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "the pipelined reads never reached the in-flight limit"
    );
    for _ in 0..10 {
        let v = metric(&metrics(&http, http_addr).await, prefix);
        assert!(v <= (MAX_IN_FLIGHT + 1) as f64, "{v} requests in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("pipelined: {seen} in flight (limit {MAX_IN_FLIGHT})");
    drop(f);
    real.wait_progress(5, "after the pipelined reads").await;

    // 6. Every client slot taken by idle authenticated clients: one more
    // client is refused with too_many_connections, a member still gets in,
    // and a restarted follower replicates again.
    let mut held = Vec::new();
    let msg = loop {
        match handshake(addr, Peer::Client).await {
            Ok(f) => held.push(f),
            Err(e) => break refused_with(Err(e), ErrorCode::TooManyConnections),
        }
        assert!(held.len() <= MAX_CONNECTIONS, "no client was ever refused");
    };
    println!("{} idle clients hold every client slot", held.len());
    assert!(msg.contains("limits.member_reserved_connections"), "{msg}");
    assert!(held.len() + RESERVED <= MAX_CONNECTIONS);
    let m = refused_with(
        handshake(addr, Peer::Client).await,
        ErrorCode::TooManyConnections,
    );
    assert!(m.contains("too many"), "{m}");
    let member = handshake(addr, Peer::Node(c.node(followers[0]).id.clone()))
        .await
        .expect("a member still gets in");
    drop(member);
    let f = followers[1];
    c.kill9(f).expect("kill a follower");
    c.start(f).expect("restart it");
    c.wait_follower_of(f, l, LIMIT)
        .await
        .expect("the restarted follower replicates through a reserved slot");
    real.wait_progress(5, "with every client slot taken").await;
    mem.sample();
    drop(held);

    // Refusals are counted.
    let m = metrics(&http, http_addr).await;
    for (labels, what) in [
        (
            r#"listener="binary",reason="too_many_connections""#,
            "binary too_many_connections",
        ),
        (
            r#"listener="binary",reason="handshake_timeout""#,
            "binary handshake_timeout",
        ),
        (
            r#"listener="binary",reason="frame_too_large""#,
            "binary frame_too_large",
        ),
        (
            r#"listener="http",reason="too_many_connections""#,
            "http too_many_connections",
        ),
        (
            r#"listener="http",reason="handshake_timeout""#,
            "http handshake_timeout",
        ),
        (r#"listener="http",reason="too_large""#, "http too_large"),
    ] {
        let v = metric(
            &m,
            &format!("walship_connections_refused_total{{{labels}}}"),
        );
        assert!(v >= 1.0, "{what} not counted:\n{m}");
    }

    real.stop.store(true, Ordering::Relaxed);
    real.task.await.expect("real client");
    let failures = real.failures.lock().unwrap().clone();
    println!(
        "real client: {} rounds ok, {} failed; leader VmRSS baseline {} MiB, max {} MiB",
        real.ok.load(Ordering::Relaxed),
        failures.len(),
        mem.baseline >> 20,
        mem.max.load(Ordering::Relaxed) >> 20
    );
    assert!(failures.is_empty(), "the real client failed: {failures:?}");
    let max = mem.max.load(Ordering::Relaxed).max(mem.sample());
    assert!(
        max < mem.bound(),
        "leader VmRSS reached {} MiB (baseline {} MiB)",
        max >> 20,
        mem.baseline >> 20
    );
    c.shutdown(Duration::from_secs(10)).await;
}
