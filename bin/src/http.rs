//! The HTTP API on `http_listen` (INTERFACE.md): data (`/v1/kv`, `/v1/log`),
//! health for load balancers, `/status`, `/metrics`, and admin commands.
//!
//! Every error is JSON `{"error": "...", "code": "..."}`. Every data answer
//! carries `Walship-Lsn` (the node's applied LSN). A write sent to a follower
//! is answered `307` to the same URL on the leader (`503 not_leader` when no
//! leader is known).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use http_body_util::{BodyExt, Either, Full};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::node::election::DriverInput;
use crate::node::{Role, Shared, WriteError, Written};

/// The body of an HTTP answer: a buffer built by the write fast path
/// ([`serve_request`]), or axum's body for everything the router answers.
pub type HttpBody = Either<Full<Bytes>, axum::body::Body>;

/// `Walship-Lsn`, the applied LSN of the answering node (every data answer).
const WALSHIP_LSN: HeaderName = HeaderName::from_static("walship-lsn");
/// `Content-Type` of every JSON answer.
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Longest `wait` a read may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);

type S = State<Arc<Shared>>;

/// Serve HTTP until the node shuts down (HTTPS when TLS is configured).
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    // Connection limit, header timeout and TLS: node/limits.rs, tls.rs.
    let app = router(shared.clone());
    crate::node::limits::serve_http(shared, listener, app).await;
}

/// Count and log every 401 with the peer's address (no token in the line).
async fn count_refusals(
    State(shared): S,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let what = format!("{} {}", req.method(), req.uri().path());
    let r = next.run(req).await;
    if r.status() == StatusCode::UNAUTHORIZED {
        crate::refusal::record(
            &shared,
            crate::refusal::Listener::Http,
            "unauthorized",
            peer,
            &format!("{what} without a valid token"),
        );
    }
    r
}

/// Serve one request of an HTTP connection from `peer`.
///
/// A write in its common form (`PUT`/`DELETE /v1/kv/{key}` with a key that
/// needs no percent-decoding, `POST /v1/log`; no query or just `ack=LEVEL`; a
/// body announced by `Content-Length` within `limits.max_http_body_bytes`, none
/// for DELETE) is answered here without the router: the checks, their order and
/// the answers are those of the routed handlers and middleware (401, 413, 400,
/// 307/503 from a follower, the write's errors; counted and logged alike), only
/// without their per-request allocations (header map and URI clones, boxed
/// middleware futures, the JSON `Value`). Every other request goes through
/// [`router`]. `bin/tests/http_api.rs` sends each case both ways and compares
/// the answers byte for byte.
pub async fn serve_request(
    shared: Arc<Shared>,
    app: Router,
    peer: SocketAddr,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> Result<axum::http::Response<HttpBody>, Infallible> {
    if let Some(op) = fast_write_op(&req, shared.cfg.limits.max_http_body_bytes) {
        return Ok(fast_write(&shared, peer, op, req).await);
    }
    // The peer address for handlers and the 401 refusal log.
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    let svc = hyper_util::service::TowerToHyperService::new(app);
    let r = hyper::service::Service::call(&svc, req).await?;
    Ok(r.map(Either::Right))
}

/// A write the fast path answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FastOp {
    Put,
    Delete,
    Append,
}

/// The key of `/v1/kv/{key}` when it is taken as is by the router: one
/// non-empty path segment of printable ASCII without `%` (no decoding).
fn plain_key(path: &str) -> Option<&str> {
    let k = path.strip_prefix("/v1/kv/")?;
    let plain = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'%' && b != b'/');
    plain.then_some(k)
}

/// The `ack` of a query the fast path takes: none, empty, or exactly
/// `ack=VALUE` with VALUE of letters, digits and `_` (nothing to decode).
/// `Err(())`: another form, for the router.
#[allow(clippy::result_unit_err)]
fn plain_ack(query: Option<&str>) -> Result<Option<&str>, ()> {
    match query {
        None | Some("") => Ok(None),
        Some(q) => {
            let v = q.strip_prefix("ack=").ok_or(())?;
            if v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                Ok(Some(v))
            } else {
                Err(())
            }
        }
    }
}

/// Which write the fast path answers for `req`, or None (the router does).
fn fast_write_op<B>(req: &hyper::Request<B>, max_body: usize) -> Option<FastOp> {
    let path = req.uri().path();
    let op = match *req.method() {
        Method::PUT => plain_key(path).map(|_| FastOp::Put)?,
        Method::DELETE => plain_key(path).map(|_| FastOp::Delete)?,
        Method::POST if path == "/v1/log" => FastOp::Append,
        _ => return None,
    };
    plain_ack(req.uri().query()).ok()?;
    let h = req.headers();
    if h.contains_key(TRANSFER_ENCODING) {
        return None;
    }
    let len = match h.get(CONTENT_LENGTH) {
        None => 0,
        Some(v) => v.to_str().ok()?.trim().parse::<u64>().ok()?,
    };
    // Over the limit: the router's body_limit answers 413. A DELETE's body is
    // never read by its handler: leave such a request to the router too.
    if len > max_body as u64 || (op == FastOp::Delete && len > 0) {
        return None;
    }
    Some(op)
}

/// The fast path of [`serve_request`]: what `body_limit`, `count_refusals` and
/// `kv_put` / `kv_delete` / `log_append` do, in that order.
async fn fast_write(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    op: FastOp,
    req: hyper::Request<hyper::body::Incoming>,
) -> axum::http::Response<HttpBody> {
    let (parts, body) = req.into_parts();
    // The routed handlers read the body (Bytes extractor) before they run;
    // its length is announced and within the limit (checked above).
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("cannot read the request body: {e}"),
            )
            .map(Either::Right)
        }
    };
    if !authorized(shared, &parts.headers) {
        crate::refusal::record(
            shared,
            crate::refusal::Listener::Http,
            "unauthorized",
            Some(peer),
            &format!(
                "{} {} without a valid token",
                parts.method,
                parts.uri.path()
            ),
        );
        return unauthorized().map(Either::Right);
    }
    let key = plain_key(parts.uri.path()).unwrap_or_default();
    let (name, kind) = match op {
        FastOp::Put => ("put", receiver::state::KIND_PUT),
        FastOp::Delete => ("delete", receiver::state::KIND_DELETE),
        FastOp::Append => ("append", receiver::state::KIND_LOG),
    };
    let checked = match op {
        FastOp::Put => check_limits(shared, name, Some(key), Some(&body)),
        FastOp::Delete => check_limits(shared, name, Some(key), None),
        FastOp::Append => check_limits(shared, name, None, Some(&body)),
    };
    if let Err(r) = checked {
        return r.map(Either::Right);
    }
    let ack = match parse_ack(plain_ack(parts.uri.query()).unwrap_or_default()) {
        Ok(a) => a,
        Err(r) => return r.map(Either::Right),
    };
    let put;
    let payload: &[u8] = match op {
        FastOp::Put => {
            put = receiver::state::encode_put(key.as_bytes(), &body);
            &put
        }
        FastOp::Delete => key.as_bytes(),
        FastOp::Append => &body,
    };
    match do_write(shared, &parts.uri, name, kind, payload, ack).await {
        Ok(w) => written(shared, &w).map(Either::Left),
        Err(r) => r.map(Either::Right),
    }
}

/// `http` or `https`: the scheme of this cluster's HTTP ports.
pub fn scheme(shared: &Shared) -> &'static str {
    if shared.tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// The routes.
pub fn router(shared: Arc<Shared>) -> Router {
    let body_max = shared.cfg.limits.max_http_body_bytes;
    Router::new()
        .route("/v1/kv/:key", put(kv_put).get(kv_get).delete(kv_delete))
        .route("/v1/log", post(log_append).get(log_read))
        .route("/health", get(health))
        .route("/leader", get(leader_check))
        .route("/primary", get(leader_check))
        .route("/replica", get(replica_check))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/v1/admin/switchover", post(admin_switchover))
        .route("/v1/admin/failover", post(admin_failover))
        .route("/v1/admin/pause", post(admin_pause))
        .route("/v1/admin/resume", post(admin_resume))
        .route("/v1/admin/rebuild", post(admin_rebuild))
        .route("/v1/admin/digest", get(state_digest))
        .route("/v1/admin/checkpoint", post(admin_checkpoint))
        .layer(axum::extract::DefaultBodyLimit::max(body_max))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            crate::node::limits::body_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            count_refusals,
        ))
        .with_state(shared)
}

/// A JSON error answer.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into(), "code": code}))).into_response()
}

/// `lsn` printed as INTERFACE.md says (`X/X`, upper-case hex), as a header
/// value, formatted on the stack.
fn lsn_header(lsn: u64) -> HeaderValue {
    use std::io::Write;
    let mut buf = [0u8; 17]; // "FFFFFFFF/FFFFFFFF"
    let mut w = &mut buf[..];
    let _ = write!(w, "{}", wal::Lsn(lsn));
    let n = 17 - w.len();
    // Hex digits and '/' are valid header bytes.
    HeaderValue::from_bytes(&buf[..n]).unwrap_or(HeaderValue::from_static("0/0"))
}

fn with_lsn<B>(shared: &Shared, r: axum::http::Response<B>) -> axum::http::Response<B> {
    with_state_lsn(r, shared.applied_lsn())
}

/// The `Walship-Lsn` header set to `lsn`: for a read, the applied LSN of the
/// state the answer was taken from (read under the same lock).
fn with_state_lsn<B>(mut r: axum::http::Response<B>, lsn: u64) -> axum::http::Response<B> {
    r.headers_mut().insert(WALSHIP_LSN, lsn_header(lsn));
    r
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = &shared.cfg.security.token else {
        return true;
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    proto::token_eq(token.as_bytes(), presented.as_bytes())
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid token is required (Authorization: Bearer <token>)",
    )
}

/// 307 to the same URL on the leader, or 503 when no leader is known.
fn redirect_to_leader(shared: &Shared, uri: &Uri) -> Response {
    let role = shared.role();
    let leader = role
        .leader_id
        .as_deref()
        .filter(|id| *id != shared.cfg.node_id)
        .and_then(|id| shared.cfg.member(id));
    match leader {
        Some(m) => {
            let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let loc = format!("{}://{}{}", scheme(shared), m.http, pq);
            let mut r = error(
                StatusCode::TEMPORARY_REDIRECT,
                "not_leader",
                format!(
                    "node {} is not the leader; the leader is {}",
                    shared.cfg.node_id, m.id
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert("location", v);
            }
            r
        }
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            format!(
                "node {} is not the leader and no leader is known (election in progress?)",
                shared.cfg.node_id
            ),
        ),
    }
}

#[derive(Deserialize)]
struct AckQuery {
    ack: Option<String>,
}

#[allow(clippy::result_large_err)] // an early-return HTTP answer
fn parse_ack(ack: Option<&str>) -> Result<Option<shipper::AckLevel>, Response> {
    match ack {
        None | Some("") | Some("default") => Ok(None),
        Some(s) => s
            .parse::<shipper::AckLevel>()
            .map(Some)
            .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", format!("ack: {e}"))),
    }
}

/// True while this node holds the leader role (no clone of the role).
fn is_leader(shared: &Shared) -> bool {
    shared.role_tx.borrow().role == Role::Leader
}

/// Append a write and wait for its acknowledgement. `Err` is the error answer
/// (with `Walship-Lsn`); the caller builds the 200 with [`written`].
async fn do_write(
    shared: &Arc<Shared>,
    uri: &Uri,
    op: &'static str,
    kind: u8,
    payload: &[u8],
    ack: Option<shipper::AckLevel>,
) -> Result<Written, Response> {
    if let Some(cause) = shared.wal_failure() {
        shared.metrics.client_request(op, "wal_failed");
        let e = WriteError::WalFailed { cause };
        return Err(with_lsn(
            shared,
            error(StatusCode::SERVICE_UNAVAILABLE, "wal_failed", e.to_string()),
        ));
    }
    if !is_leader(shared) {
        shared.metrics.client_request(op, "not_leader");
        return Err(with_lsn(shared, redirect_to_leader(shared, uri)));
    }
    let r = shared.write(kind, payload, ack).await;
    let outcome = match &r {
        Ok(_) => "ok",
        Err(e) => e.code().as_str(),
    };
    shared.metrics.client_request(op, outcome);
    let e = match r {
        Ok(w) => return Ok(w),
        Err(e) => e,
    };
    let resp = match e {
        WriteError::NotLeader { .. } => redirect_to_leader(shared, uri),
        e @ WriteError::NotAccepting => error(
            StatusCode::SERVICE_UNAVAILABLE,
            e.code().as_str(),
            e.to_string(),
        ),
        e @ (WriteError::AckTimeout { .. } | WriteError::OutcomeUnknown { .. }) => {
            error(StatusCode::GATEWAY_TIMEOUT, "ack_timeout", e.to_string())
        }
        e @ WriteError::BadRequest(_) => {
            error(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
        }
        e @ WriteError::WalFailed { .. } => {
            error(StatusCode::SERVICE_UNAVAILABLE, "wal_failed", e.to_string())
        }
        e @ WriteError::NoSpace(_) => {
            error(StatusCode::INSUFFICIENT_STORAGE, "no_space", e.to_string())
        }
        e @ WriteError::Wal(_) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    };
    Err(with_lsn(shared, resp))
}

/// The 200 of an acknowledged write: `{"lsn":"X/X","term":N}` (the bytes
/// `Json(json!({"lsn", "term"}))` gave: sorted keys, no spaces), content type
/// JSON, `Walship-Lsn`.
fn written(shared: &Shared, w: &Written) -> axum::http::Response<Full<Bytes>> {
    let mut r = axum::http::Response::new(Full::new(Bytes::from(written_body(w))));
    let h = r.headers_mut();
    h.reserve(2);
    h.insert(CONTENT_TYPE, APPLICATION_JSON);
    h.insert(WALSHIP_LSN, lsn_header(shared.applied_lsn()));
    r
}

/// `{"lsn":"X/X","term":N}`.
fn written_body(w: &Written) -> String {
    format!("{{\"lsn\":\"{}\",\"term\":{}}}", w.lsn, w.term)
}

/// A write's answer through the router.
fn write_answer(shared: &Shared, r: Result<Written, Response>) -> Response {
    match r {
        Ok(w) => written(shared, &w).map(axum::body::Body::new),
        Err(r) => r,
    }
}

/// `limits.max_key_bytes` / `max_value_bytes` (node/limits.rs): 413 `too_large`
/// (400 `bad_request` for an empty key).
#[allow(clippy::result_large_err)] // an early-return HTTP answer
fn check_limits(
    shared: &Shared,
    op: &str,
    key: Option<&str>,
    value: Option<&[u8]>,
) -> Result<(), Response> {
    use crate::node::limits;
    let l = &shared.cfg.limits;
    let r = key
        .map_or(Ok(()), |k| limits::check_key(l, k.as_bytes()))
        .and_then(|()| value.map_or(Ok(()), |v| limits::check_value(l, v)));
    r.map_err(|(code, message)| {
        shared.metrics.client_request(op, code.as_str());
        let status = if code == proto::ErrorCode::TooLarge {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        error(status, code.as_str(), message)
    })
}

async fn kv_put(
    State(shared): S,
    Path(key): Path<String>,
    Query(q): Query<AckQuery>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    if let Err(r) = check_limits(&shared, "put", Some(&key), Some(&body)) {
        return r;
    }
    let ack = match parse_ack(q.ack.as_deref()) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let payload = receiver::state::encode_put(key.as_bytes(), &body);
    let r = do_write(
        &shared,
        &uri,
        "put",
        receiver::state::KIND_PUT,
        &payload,
        ack,
    )
    .await;
    write_answer(&shared, r)
}

async fn kv_delete(
    State(shared): S,
    Path(key): Path<String>,
    Query(q): Query<AckQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    if let Err(r) = check_limits(&shared, "delete", Some(&key), None) {
        return r;
    }
    let ack = match parse_ack(q.ack.as_deref()) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let r = do_write(
        &shared,
        &uri,
        "delete",
        receiver::state::KIND_DELETE,
        key.as_bytes(),
        ack,
    )
    .await;
    write_answer(&shared, r)
}

async fn log_append(
    State(shared): S,
    Query(q): Query<AckQuery>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    if let Err(r) = check_limits(&shared, "append", None, Some(&body)) {
        return r;
    }
    let ack = match parse_ack(q.ack.as_deref()) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let r = do_write(
        &shared,
        &uri,
        "append",
        receiver::state::KIND_LOG,
        &body,
        ack,
    )
    .await;
    write_answer(&shared, r)
}

#[derive(Deserialize)]
struct GetQuery {
    min_lsn: Option<String>,
    wait: Option<String>,
}

async fn kv_get(
    State(shared): S,
    Path(key): Path<String>,
    Query(q): Query<GetQuery>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    if let Err(msg) = shared.rebuild.check_readable() {
        shared.metrics.client_request("get", "rebuilding");
        return with_lsn(
            &shared,
            error(StatusCode::SERVICE_UNAVAILABLE, "rebuilding", msg),
        );
    }
    let min_lsn = match q.min_lsn.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse::<wal::Lsn>() {
            Ok(l) => l.0,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("min_lsn: {e}"),
                )
            }
        },
    };
    let wait = match q.wait.as_deref() {
        None | Some("") => Duration::from_secs(1),
        Some(s) => match humantime::parse_duration(s) {
            Ok(d) => d.min(MAX_WAIT),
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("wait: {e}")),
        },
    };
    if min_lsn > shared.applied_lsn() {
        if let Err(applied) = shared.wait_applied(min_lsn, wait).await {
            shared.metrics.client_request("get", "wait_timeout");
            return with_lsn(
                &shared,
                error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "wait_timeout",
                    format!(
                        "this node has applied {} and did not reach min_lsn {} within {wait:?}",
                        wal::Lsn(applied),
                        wal::Lsn(min_lsn)
                    ),
                ),
            );
        }
    }
    // A token older than the value would not be a consistent prefix.
    let (value, applied) = shared.read_value(key.as_bytes());
    if applied < min_lsn {
        shared.metrics.client_request("get", "wait_timeout");
        return with_state_lsn(
            error(
                StatusCode::GATEWAY_TIMEOUT,
                "wait_timeout",
                Shared::rewound_below(applied, min_lsn),
            ),
            applied,
        );
    }
    let resp = match value {
        Some(v) => {
            shared.metrics.client_request("get", "ok");
            (StatusCode::OK, v).into_response()
        }
        None => {
            shared.metrics.client_request("get", "not_found");
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("key {key:?} is absent"),
            )
        }
    };
    with_state_lsn(resp, applied)
}

#[derive(Deserialize)]
struct LogQuery {
    from: Option<String>,
    limit: Option<usize>,
}

async fn log_read(State(shared): S, Query(q): Query<LogQuery>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let from = match q.from.as_deref() {
        None | Some("") => shared.wal.first_lsn().0,
        Some(s) => match s.parse::<wal::Lsn>() {
            Ok(l) => l.0,
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("from: {e}")),
        },
    };
    let limit = q.limit.unwrap_or(1000).min(100_000);
    let committed = shared.commit_lsn().min(*shared.flush_tx.borrow());
    let s = shared.clone();
    let lines =
        tokio::task::spawn_blocking(move || read_log_lines(&s, from, limit, committed)).await;
    let resp = match lines {
        Ok(Ok(text)) => (
            StatusCode::OK,
            [("content-type", "application/x-ndjson")],
            text,
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, "bad_request", e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    with_lsn(&shared, resp)
}

fn read_log_lines(
    shared: &Shared,
    from: u64,
    limit: usize,
    committed: u64,
) -> Result<String, String> {
    let mut out = String::new();
    if from >= committed {
        return Ok(out);
    }
    let mut reader = shared
        .wal
        .reader(wal::Lsn(from))
        .map_err(|e| format!("cannot read the log at {}: {e}", wal::Lsn(from)))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut n = 0;
    while n < limit {
        let Some(rec) = reader.next() else { break };
        let rec = rec.map_err(|e| e.to_string())?;
        if rec.end.0 > committed {
            break;
        }
        let (kind, key, value) = match rec.kind {
            receiver::state::KIND_PUT => match receiver::state::decode_put(rec.payload) {
                Ok((k, v)) => (
                    "put",
                    Some(String::from_utf8_lossy(k).into_owned()),
                    Some(b64.encode(v)),
                ),
                Err(_) => ("put", None, None),
            },
            receiver::state::KIND_DELETE => (
                "delete",
                Some(String::from_utf8_lossy(rec.payload).into_owned()),
                None,
            ),
            receiver::state::KIND_LOG => ("log", None, Some(b64.encode(rec.payload))),
            wal::kind::TERM_START => ("term_start", None, None),
            _ => ("other", None, None),
        };
        let line = json!({
            "lsn": rec.lsn.to_string(),
            "end": rec.end.to_string(),
            "term": rec.term,
            "kind": kind,
            "key": key,
            "value_b64": value,
        });
        out.push_str(&line.to_string());
        out.push('\n');
        n += 1;
    }
    Ok(out)
}

/// `GET /v1/admin/digest`: a checksum of this node's key-value state and the
/// applied LSN it belongs to, read under one lock so the two always match.
/// Two nodes that applied the same committed log up to the same LSN report the
/// same digest. Costs a sort of the keys (O(n log n)): for checks and fault
/// runs, not for frequent polling.
async fn state_digest(State(shared): S, headers: HeaderMap) -> Response {
    use receiver::state::StateMachine;
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let s = shared.clone();
    let r = tokio::task::spawn_blocking(move || {
        let kv = s.kv.read();
        (kv.applied_lsn(), kv.digest(), kv.len())
    })
    .await;
    let resp = match r {
        Ok((applied, digest, keys)) => Json(json!({
            "node_id": shared.cfg.node_id,
            "applied_lsn": wal::Lsn(applied).to_string(),
            "digest": format!("{digest:016x}"),
            "keys": keys,
        }))
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    with_lsn(&shared, resp)
}

async fn health(State(shared): S) -> Response {
    let role = shared.role();
    if let Some(cause) = shared.wal_failure() {
        // Load balancers drop the node: it acknowledges nothing until restarted.
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "wal_failed",
            format!(
                "node {}: the WAL failed ({cause}); restart the node once the disk is healthy",
                shared.cfg.node_id
            ),
        );
    }
    (
        StatusCode::OK,
        Json(json!({"status": "ok", "node_id": shared.cfg.node_id, "role": role.role.as_str()})),
    )
        .into_response()
}

async fn leader_check(State(shared): S) -> Response {
    let role = shared.role();
    if role.is_writable_leader() {
        (
            StatusCode::OK,
            Json(json!({"leader": shared.cfg.node_id, "term": role.term})),
        )
            .into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            format!(
                "node {} is {} ({})",
                shared.cfg.node_id,
                role.role.as_str(),
                role.state.as_str()
            ),
        )
    }
}

#[derive(Deserialize)]
struct ReplicaQuery {
    max_lag_bytes: Option<u64>,
}

async fn replica_check(State(shared): S, Query(q): Query<ReplicaQuery>) -> Response {
    let role = shared.role();
    let fv = shared.follower.lock().clone();
    let lag = fv.leader_flush_lsn.saturating_sub(shared.applied_lsn());
    let ok =
        role.role == Role::Follower && fv.connected && q.max_lag_bytes.is_none_or(|m| lag <= m);
    if ok {
        (
            StatusCode::OK,
            Json(json!({"replica": shared.cfg.node_id, "lag_bytes": lag})),
        )
            .into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_replica",
            format!(
                "node {} is {} ({}), streaming: {}, lag {} bytes",
                shared.cfg.node_id,
                role.role.as_str(),
                role.state.as_str(),
                fv.connected,
                lag
            ),
        )
    }
}

async fn status(State(shared): S) -> Response {
    Json(crate::status::status_json(&shared)).into_response()
}

async fn metrics(State(shared): S) -> Response {
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
        .into_response()
}

async fn admin_command(shared: &Shared, cmd: failover::AdminCommand) -> Result<(), String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    shared
        .failover_tx
        .send(DriverInput::Admin { cmd, reply: tx })
        .await
        .map_err(|_| "the node is shutting down".to_string())?;
    rx.await
        .map_err(|_| "the node is shutting down".to_string())?
}

#[derive(Deserialize, Default)]
struct SwitchoverBody {
    to: Option<String>,
}

async fn admin_switchover(
    State(shared): S,
    headers: HeaderMap,
    uri: Uri,
    body: Option<Json<SwitchoverBody>>,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    if shared.role().role != Role::Leader {
        return redirect_to_leader(&shared, &uri);
    }
    let body = body.map(|b| b.0).unwrap_or_default();
    match crate::admin::switchover(&shared, body.to).await {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err((code, msg)) => error(StatusCode::CONFLICT, code, msg),
    }
}

#[derive(Deserialize)]
struct FailoverBody {
    to: String,
    #[serde(default)]
    force: bool,
}

async fn admin_failover(
    State(shared): S,
    headers: HeaderMap,
    method: Method,
    Json(body): Json<FailoverBody>,
) -> Response {
    let _ = method;
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    if body.to != shared.cfg.node_id {
        return match shared.cfg.member(&body.to) {
            Some(m) => {
                let mut r = error(
                    StatusCode::TEMPORARY_REDIRECT,
                    "wrong_node",
                    format!("send this to node {} itself", m.id),
                );
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "{}://{}/v1/admin/failover",
                    scheme(&shared),
                    m.http
                )) {
                    r.headers_mut().insert("location", v);
                }
                r
            }
            None => error(
                StatusCode::BAD_REQUEST,
                "unknown_member",
                format!("{:?} is not a member of this cluster", body.to),
            ),
        };
    }
    match crate::admin::failover_to_me(&shared, body.force).await {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err((code, msg)) => error(StatusCode::CONFLICT, code, msg),
    }
}

async fn admin_pause(State(shared): S, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    match admin_command(&shared, failover::AdminCommand::Pause).await {
        Ok(()) => (StatusCode::OK, Json(json!({"paused": true}))).into_response(),
        Err(e) => error(StatusCode::CONFLICT, "refused", e),
    }
}

async fn admin_resume(State(shared): S, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    match admin_command(&shared, failover::AdminCommand::Resume).await {
        Ok(()) => (StatusCode::OK, Json(json!({"paused": false}))).into_response(),
        Err(e) => error(StatusCode::CONFLICT, "refused", e),
    }
}

async fn admin_rebuild(State(shared): S, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    match crate::node::rebuild::request(&shared) {
        Ok(p) => (
            StatusCode::ACCEPTED,
            Json(json!({"node_id": shared.cfg.node_id, "rebuild": p})),
        )
            .into_response(),
        Err(e) => error(StatusCode::CONFLICT, "refused", e),
    }
}

/// `POST /v1/admin/checkpoint`: write a checkpoint of this node's applied state now
/// (PostgreSQL's `CHECKPOINT`). 200 `{"lsn", "term", "entries", "bytes", "written"}`
/// (`written: false` when the newest checkpoint already covers the applied state).
async fn admin_checkpoint(State(shared): S, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    match crate::node::checkpointer::checkpoint_now(&shared, "admin").await {
        Ok(written) => {
            let last = shared.ckpt.last.lock().clone();
            match last {
                Some(m) => Json(json!({
                    "lsn": m.lsn.to_string(),
                    "term": m.term,
                    "entries": m.entries,
                    "bytes": m.len,
                    "written": written.is_some(),
                }))
                .into_response(),
                None => Json(json!({"lsn": null, "written": false})).into_response(),
            }
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "checkpoint_failed", e),
    }
}

/// Send an admin command to the failover driver (used by [`crate::admin`]).
pub async fn send_admin(shared: &Shared, cmd: failover::AdminCommand) -> Result<(), String> {
    admin_command(shared, cmd).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> hyper::Request<()> {
        let mut b = hyper::Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn fast_path_takes_only_the_plain_write_forms() {
        let cl = [("content-length", "2")];
        let op = |m: &str, u: &str, h: &[(&str, &str)]| fast_write_op(&req(m, u, h), 100);
        assert_eq!(op("PUT", "/v1/kv/a-b.c_D~1", &cl), Some(FastOp::Put));
        assert_eq!(
            op("PUT", "/v1/kv/k?ack=remote_flush", &cl),
            Some(FastOp::Put)
        );
        assert_eq!(op("PUT", "/v1/kv/k?ack=bogus", &cl), Some(FastOp::Put));
        assert_eq!(op("PUT", "/v1/kv/k?", &cl), Some(FastOp::Put));
        assert_eq!(op("PUT", "/v1/kv/k", &[]), Some(FastOp::Put));
        assert_eq!(
            op("DELETE", "/v1/kv/k?ack=local", &[]),
            Some(FastOp::Delete)
        );
        assert_eq!(
            op("DELETE", "/v1/kv/k", &[("content-length", "0")]),
            Some(FastOp::Delete)
        );
        assert_eq!(op("POST", "/v1/log", &cl), Some(FastOp::Append));
        assert_eq!(op("POST", "/v1/log?ack=local", &cl), Some(FastOp::Append));
        // Everything else is the router's.
        for (m, u, h) in [
            ("PUT", "/v1/kv/a%62", &cl[..]),             // percent-decoding
            ("PUT", "/v1/kv/", &cl),                     // no key: 404
            ("PUT", "/v1/kv/a/b", &cl),                  // two segments: 404
            ("PUT", "/v1/kv/k?ack=local&x=1", &cl),      // other query forms
            ("PUT", "/v1/kv/k?ack=remote%5Fflush", &cl), // encoded value
            ("PUT", "/v1/kv/k?x=1", &cl),
            ("PUT", "/v1/kv/k", &[("content-length", "101")]), // over the body limit: 413
            ("PUT", "/v1/kv/k", &[("content-length", "x")]),
            ("PUT", "/v1/kv/k", &[("transfer-encoding", "chunked")]),
            ("DELETE", "/v1/kv/k", &cl), // a DELETE body is never read
            ("GET", "/v1/kv/k", &[]),
            ("POST", "/v1/kv/k", &cl),
            ("POST", "/v1/log/x", &cl),
            ("PUT", "/v1/log", &cl),
            ("GET", "/status", &[]),
        ] {
            assert_eq!(op(m, u, h), None, "{m} {u} {h:?}");
        }
    }

    #[test]
    fn lsn_header_and_written_body_are_interface_md_bytes() {
        assert_eq!(lsn_header(0), "0/0");
        assert_eq!(lsn_header(0x16B3748), "0/16B3748");
        assert_eq!(lsn_header(u64::MAX), "FFFFFFFF/FFFFFFFF");
        let w = Written {
            lsn: wal::Lsn((3 << 32) | 0x1A2B),
            term: 7,
        };
        let body = written_body(&w);
        let reference = serde_json::to_string(&json!({"lsn": w.lsn.to_string(), "term": w.term}))
            .expect("json");
        assert_eq!(body, reference);
        assert_eq!(body, r#"{"lsn":"3/1A2B","term":7}"#);
    }
}
