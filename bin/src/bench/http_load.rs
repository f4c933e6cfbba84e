//! The HTTP load generator of `walship bench --protocol http`: one keep-alive
//! HTTP/1.1 connection per closed-loop client, as `wrk -c` keeps them.
//!
//! Each client owns a hyper client connection and drives it inside its own
//! task (no connection task, no pool, no redirect or timeout machinery), so the
//! bench spends little CPU per write and measures the server rather than its
//! own HTTP stack: on a 2-core machine the client's CPU is taken from the
//! cluster. It follows no redirect; an answer other than 2xx is an error with
//! its status and body. A connection that fails is replaced at the next write.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Conn = Connection<TokioIo<TcpStream>, Full<Bytes>>;
/// A request sender and the connection that carries its requests.
type Link = (SendRequest<Full<Bytes>>, Pin<Box<Conn>>);

/// One client's keep-alive connection to a node's HTTP port.
pub(super) struct HttpWriter {
    /// `host:port`.
    addr: String,
    host: HeaderValue,
    auth: Option<HeaderValue>,
    conn: Option<Link>,
}

/// Why a request failed, and whether the connection is gone with it.
pub(super) struct HttpFailure {
    pub message: String,
    pub connection_lost: bool,
}

fn lost(message: String) -> HttpFailure {
    HttpFailure {
        message,
        connection_lost: true,
    }
}

impl HttpWriter {
    /// Connect to `base` (`http://host:port`), presenting `token` (if not
    /// empty) as `Authorization: Bearer` on every request.
    pub(super) async fn connect(base: &str, token: &str) -> Result<HttpWriter, String> {
        let addr = base
            .strip_prefix("http://")
            .unwrap_or(base)
            .trim_end_matches('/')
            .to_string();
        let host = HeaderValue::from_str(&addr).map_err(|e| format!("host {addr:?}: {e}"))?;
        let auth = if token.is_empty() {
            None
        } else {
            Some(
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|e| format!("the token is not a valid header value: {e}"))?,
            )
        };
        let mut w = HttpWriter {
            addr,
            host,
            auth,
            conn: None,
        };
        w.conn = Some(w.open().await?);
        Ok(w)
    }

    async fn open(&self) -> Result<Link, String> {
        let s = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("connect to {}: {e}", self.addr))?;
        let _ = s.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .map_err(|e| format!("HTTP connection to {}: {e}", self.addr))?;
        Ok((send, Box::pin(conn)))
    }

    /// `method path_and_query` with `value` as the body (`PUT /v1/kv/KEY`,
    /// `POST /v1/log`); Ok once a 2xx answer was read whole.
    pub(super) async fn send(
        &mut self,
        method: hyper::Method,
        path_and_query: &str,
        value: Bytes,
    ) -> Result<(), HttpFailure> {
        let (send, conn) = match self.conn.as_mut() {
            Some(c) => c,
            None => self.conn.insert(self.open().await.map_err(lost)?),
        };
        let req = hyper::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(HOST, self.host.clone())
            .header(CONTENT_LENGTH, value.len())
            .body(Full::new(value));
        let mut req = req.map_err(|e| HttpFailure {
            message: format!("request {path_and_query:?}: {e}"),
            connection_lost: false,
        })?;
        if let Some(a) = &self.auth {
            req.headers_mut().insert(AUTHORIZATION, a.clone());
        }
        let mut alive = true;
        let r = exchange(send, conn, &mut alive, req).await;
        if !alive || matches!(&r, Err(f) if f.connection_lost) {
            self.conn = None;
        }
        r
    }
}

/// Send `req` and read its answer, driving the connection meanwhile.
/// `alive` becomes false once the connection ended (it must not be polled
/// again).
async fn exchange(
    send: &mut SendRequest<Full<Bytes>>,
    conn: &mut Pin<Box<Conn>>,
    alive: &mut bool,
    req: hyper::Request<Full<Bytes>>,
) -> Result<(), HttpFailure> {
    drive(conn, alive, send.ready())
        .await?
        .map_err(|e| lost(format!("HTTP connection: {e}")))?;
    let resp = drive(conn, alive, send.send_request(req))
        .await?
        .map_err(|e| lost(format!("HTTP request: {e}")))?;
    let status = resp.status();
    let body = drive(conn, alive, resp.into_body().collect())
        .await?
        .map_err(|e| lost(format!("HTTP answer body: {e}")))?
        .to_bytes();
    if status.is_success() {
        Ok(())
    } else {
        Err(HttpFailure {
            message: format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()),
            connection_lost: false,
        })
    }
}

/// Run `f` while polling the connection (which does the I/O `f` waits for).
/// The connection is polled first, so an answer it completes is taken in the
/// same wake-up. Err if the connection ended and `f` cannot complete.
async fn drive<F: Future>(
    conn: &mut Pin<Box<Conn>>,
    alive: &mut bool,
    f: F,
) -> Result<F::Output, HttpFailure> {
    tokio::pin!(f);
    let ended = if *alive {
        let r = tokio::select! {
            biased;
            r = conn.as_mut() => r,
            out = f.as_mut() => return Ok(out),
        };
        *alive = false;
        match r {
            Ok(()) => "the node closed the HTTP connection".to_string(),
            Err(e) => format!("HTTP connection: {e}"),
        }
    } else {
        "the node closed the HTTP connection".to_string()
    };
    // What the connection delivered before it ended may still complete `f`.
    f.now_or_never().ok_or_else(|| lost(ended))
}
