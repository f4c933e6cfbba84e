//! Limits under load (`[limits]` in the config): connection slots per
//! listener with slots reserved for members, quick refusals, the HTTP accept
//! loop (connection limit, header/idle timeout), and the key/value size checks
//! every write path uses.
//!
//! Invariants enforced here:
//! - at most `limits.max_connections` binary connections are open at once
//!   (handshaking ones included), and clients (or connections that have not
//!   said who they are yet) hold at most `max_connections -
//!   member_reserved_connections` of them; the rest only a configured member
//!   may keep (a client that landed in a reserved slot is refused at its
//!   handshake with `too_many_connections`);
//! - at most `limits.max_http_connections` HTTP connections are open at once;
//! - a refused connection costs one small write and at most
//!   [`MAX_LINGERING`] short-lived tasks at once (beyond that it is just closed).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use proto::ErrorCode;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::Shared;
use crate::config::LimitsConfig;

/// Refused connections that may be lingering at once (answer written, the
/// peer's request drained so that the close is a FIN, not a reset that could
/// destroy the answer before the peer reads it).
pub const MAX_LINGERING: usize = 256;

/// How long a refused connection's request is drained before the close.
const LINGER: Duration = Duration::from_secs(1);

/// Bytes drained from a refused connection at most.
const LINGER_BYTES: usize = 64 << 10;

/// Label values of `walship_connections_refused_total{listener}` and
/// `walship_open_connections{listener}`.
pub const BINARY: &str = "binary";
/// See [`BINARY`].
pub const HTTP: &str = "http";

/// Connection slots of one listener: `general` for anyone, `reserved` only
/// kept by members (see the module invariants).
pub struct ConnGate {
    general_max: usize,
    reserved_max: usize,
    general: AtomicUsize,
    reserved: AtomicUsize,
    lingering: AtomicUsize,
}

/// One taken slot; frees it when dropped.
pub struct ConnSlot {
    gate: Arc<ConnGate>,
    reserved: bool,
}

impl ConnSlot {
    /// Whether this is a member-only slot (a client holding it must be refused).
    pub fn is_reserved(&self) -> bool {
        self.reserved
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let c = if self.reserved {
            &self.gate.reserved
        } else {
            &self.gate.general
        };
        c.fetch_sub(1, Ordering::AcqRel);
    }
}

fn take(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

impl ConnGate {
    /// `max` slots in all, `reserved` of them (fewer than `max`) member-only.
    pub fn new(max: usize, reserved: usize) -> Arc<ConnGate> {
        let reserved = reserved.min(max.saturating_sub(1));
        Arc::new(ConnGate {
            general_max: max - reserved,
            reserved_max: reserved,
            general: AtomicUsize::new(0),
            reserved: AtomicUsize::new(0),
            lingering: AtomicUsize::new(0),
        })
    }

    /// A general slot if one is free, else a reserved one, else `None`.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnSlot> {
        if take(&self.general, self.general_max) {
            return Some(ConnSlot {
                gate: self.clone(),
                reserved: false,
            });
        }
        if take(&self.reserved, self.reserved_max) {
            return Some(ConnSlot {
                gate: self.clone(),
                reserved: true,
            });
        }
        None
    }

    /// Slots in use.
    pub fn open(&self) -> usize {
        self.general.load(Ordering::Acquire) + self.reserved.load(Ordering::Acquire)
    }

    /// Write `answer` to a connection refused for want of a slot and close it,
    /// draining the peer's request for up to a second first (in a task, at
    /// most [`MAX_LINGERING`] at once; beyond that the connection is closed
    /// at once). Never blocks the accept loop.
    pub fn refuse(self: &Arc<Self>, stream: TcpStream, answer: Vec<u8>) {
        // A fresh socket's send buffer is empty: this small write completes now.
        let _ = stream.try_write(&answer);
        if !take(&self.lingering, MAX_LINGERING) {
            return;
        }
        let gate = self.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let mut drained = 0;
            let _ = tokio::time::timeout(LINGER, async {
                while drained < LINGER_BYTES {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => drained += n,
                    }
                }
            })
            .await;
            drop(stream);
            gate.lingering.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// The `Error` frame (`too_many_connections`) a refused binary connection gets.
pub fn binary_refusal(limits: &LimitsConfig) -> Vec<u8> {
    use tokio_util::codec::Encoder;
    let msg = proto::Message::Error {
        code: ErrorCode::TooManyConnections,
        message: format!(
            "too many connections: this node serves at most {} binary connections \
             (limits.max_connections, {} of them reserved for members); try again later",
            limits.max_connections, limits.member_reserved_connections
        ),
    };
    let mut buf = bytes::BytesMut::new();
    // An Error frame is far below the handshake limit; on failure the peer
    // just sees the close.
    let _ = proto::FrameCodec::new(proto::HANDSHAKE_MAX_FRAME_BYTES).encode(msg, &mut buf);
    buf.to_vec()
}

/// The `503` a refused HTTP connection gets.
pub fn http_refusal(limits: &LimitsConfig) -> Vec<u8> {
    let body = serde_json::json!({
        "error": format!(
            "too many connections: this node serves at most {} HTTP connections \
             (limits.max_http_connections); try again later",
            limits.max_http_connections
        ),
        "code": ErrorCode::TooManyConnections.as_str(),
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The refusal a client that landed in a member-only slot gets at its handshake.
pub fn client_in_reserved_slot(limits: &LimitsConfig) -> proto::Refusal {
    proto::Refusal::new(
        ErrorCode::TooManyConnections,
        format!(
            "too many client connections: {} of this node's {} binary connections \
             (limits.max_connections) are reserved for members \
             (limits.member_reserved_connections) and the rest are in use; try again later",
            limits.member_reserved_connections, limits.max_connections
        ),
    )
}

/// Count a refused connection (`walship_connections_refused_total`).
pub fn count_refused(shared: &Shared, listener: &str, reason: &str) {
    shared
        .metrics
        .connections_refused_total
        .with_label_values(&[listener, reason])
        .inc();
}

/// A key is 1 to `limits.max_key_bytes` bytes: `Err((code, message))` otherwise
/// (`bad_request` for an empty key, `too_large` for a long one).
pub fn check_key(limits: &LimitsConfig, key: &[u8]) -> Result<(), (ErrorCode, String)> {
    if key.is_empty() {
        return Err((ErrorCode::BadRequest, "the key must not be empty".into()));
    }
    if key.len() > limits.max_key_bytes {
        return Err((
            ErrorCode::TooLarge,
            format!(
                "key of {} bytes exceeds limits.max_key_bytes ({})",
                key.len(),
                limits.max_key_bytes
            ),
        ));
    }
    Ok(())
}

/// A value (or log record payload) is at most `limits.max_value_bytes` bytes:
/// `Err((too_large, message))` otherwise.
pub fn check_value(limits: &LimitsConfig, value: &[u8]) -> Result<(), (ErrorCode, String)> {
    if value.len() > limits.max_value_bytes {
        return Err((
            ErrorCode::TooLarge,
            format!(
                "value of {} bytes exceeds limits.max_value_bytes ({})",
                value.len(),
                limits.max_value_bytes
            ),
        ));
    }
    Ok(())
}

/// HTTP middleware: a request whose `Content-Length` exceeds
/// `limits.max_http_body_bytes` is answered `413 too_large` before its body is
/// read. (A chunked body is cut at the same limit by axum's `DefaultBodyLimit`.)
pub async fn body_limit(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let max = shared.cfg.limits.max_http_body_bytes;
    let len = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = len {
        if len > max as u64 {
            count_refused(&shared, HTTP, ErrorCode::TooLarge.as_str());
            return crate::http::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge.as_str(),
                format!("request body of {len} bytes exceeds limits.max_http_body_bytes ({max})"),
            );
        }
    }
    next.run(req).await
}

/// The HTTP accept loop: at most `limits.max_http_connections` connections
/// (beyond it `503 too_many_connections` and close), each served as HTTP/1.1
/// with `limits.handshake_timeout` to send a request's headers (which also
/// closes a keep-alive connection idle that long). Returns on shutdown, once
/// every connection has ended (each finishes its request in flight, bounded).
pub async fn serve_http(shared: Arc<Shared>, listener: TcpListener, app: Router) {
    let limits = shared.cfg.limits.clone();
    let gate = ConnGate::new(limits.max_http_connections, 0);
    let refusal = http_refusal(&limits);
    let mut shutdown = shared.shutdown.clone();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the HTTP port; retrying in 50ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = gate.try_acquire() else {
            count_refused(&shared, HTTP, ErrorCode::TooManyConnections.as_str());
            tracing::debug!(%peer, "HTTP connection refused: limits.max_http_connections reached");
            gate.refuse(stream, refusal.clone());
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let app = app.clone();
        conns.spawn(serve_http_connection(shared, stream, peer, app, slot));
    }
    // Connections finish their request in flight (graceful), bounded.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.shutdown().await;
}

async fn serve_http_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    slot: ConnSlot,
) {
    let gauge = shared.metrics.open_connections.with_label_values(&[HTTP]);
    gauge.inc();
    // TLS handshake when configured (a refusal is counted and logged there).
    let Some(stream) = crate::tls::accept_http(&shared, stream, peer).await else {
        gauge.dec();
        drop(slot);
        return;
    };
    // Writes in their common form are answered by http.rs's fast path, the
    // rest by the router (with the peer address set on each request).
    let svc = {
        let shared = shared.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            crate::http::serve_request(shared.clone(), app.clone(), peer, req)
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.cfg.limits.handshake_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut shutdown = shared.shutdown.clone();
    let r = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = r {
        if e.is_timeout() {
            count_refused(&shared, HTTP, "handshake_timeout");
            tracing::debug!(%peer, "HTTP connection closed: no request headers within limits.handshake_timeout");
        } else {
            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
        }
    }
    gauge.dec();
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_reserves_slots() {
        let g = ConnGate::new(4, 1);
        let a = g.try_acquire().unwrap();
        let b = g.try_acquire().unwrap();
        let c = g.try_acquire().unwrap();
        assert!(!a.is_reserved() && !b.is_reserved() && !c.is_reserved());
        let d = g.try_acquire().unwrap();
        assert!(d.is_reserved());
        assert!(g.try_acquire().is_none());
        assert_eq!(g.open(), 4);
        drop(d);
        let d = g.try_acquire().unwrap();
        assert!(d.is_reserved());
        drop(a);
        let a = g.try_acquire().unwrap();
        assert!(!a.is_reserved());
        drop((a, b, c, d));
        assert_eq!(g.open(), 0);
    }

    #[test]
    fn gate_without_reserve_and_clamped_reserve() {
        let g = ConnGate::new(2, 0);
        let _a = g.try_acquire().unwrap();
        let _b = g.try_acquire().unwrap();
        assert!(g.try_acquire().is_none());
        // A reserve as large as the limit leaves one general slot.
        let g = ConnGate::new(2, 5);
        assert!(!g.try_acquire().unwrap().is_reserved());
    }

    #[test]
    fn refusals_are_well_formed() {
        let l = crate::config::Config::parse(
            "cluster_id = \"c\"\nnode_id = \"n1\"\ndata_dir = \"/tmp/x\"\nlisten = \"127.0.0.1:1\"\n\
             http_listen = \"127.0.0.1:2\"\n[[members]]\nid = \"n1\"\naddr = \"127.0.0.1:1\"\nhttp = \"127.0.0.1:2\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap()
        .limits;
        use tokio_util::codec::Decoder;
        let mut buf = bytes::BytesMut::from(&binary_refusal(&l)[..]);
        match proto::FrameCodec::new(1 << 20).decode(&mut buf).unwrap() {
            Some(proto::Message::Error { code, message }) => {
                assert_eq!(code, ErrorCode::TooManyConnections);
                assert!(message.contains("limits.max_connections"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let h = String::from_utf8(http_refusal(&l)).unwrap();
        assert!(h.starts_with("HTTP/1.1 503 "), "{h}");
        let (head, body) = h.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{h}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "too_many_connections");
    }

    #[test]
    fn key_and_value_checks() {
        let mut l = crate::config::LimitsConfig {
            max_connections: 1,
            member_reserved_connections: 0,
            max_http_connections: 1,
            max_frame_bytes: 1 << 20,
            max_http_body_bytes: 100,
            max_key_bytes: 4,
            max_value_bytes: 10,
            max_in_flight_per_client: 1,
            handshake_timeout: Duration::from_secs(1),
        };
        assert!(check_key(&l, b"abcd").is_ok());
        assert_eq!(check_key(&l, b"").unwrap_err().0, ErrorCode::BadRequest);
        let (code, msg) = check_key(&l, b"abcde").unwrap_err();
        assert_eq!(code, ErrorCode::TooLarge);
        assert!(msg.contains("limits.max_key_bytes"), "{msg}");
        assert!(check_value(&l, &[0; 10]).is_ok());
        let (code, msg) = check_value(&l, &[0; 11]).unwrap_err();
        assert_eq!(code, ErrorCode::TooLarge);
        assert!(msg.contains("limits.max_value_bytes"), "{msg}");
        l.max_value_bytes = 0;
        assert!(check_value(&l, b"").is_ok());
    }
}
