//! The HTTP API on `http_listen` (INTERFACE.md): data (`/v1/kv`, `/v1/log`),
//! health for load balancers, `/status`, `/metrics`, and admin commands.
//!
//! Every error is JSON `{"error": "...", "code": "..."}`. Every data answer
//! carries `Walship-Lsn` (the node's applied LSN). A write sent to a follower
//! is answered `307` to the same URL on the leader (`503 not_leader` when no
//! leader is known).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::node::election::DriverInput;
use crate::node::{Role, Shared, WriteError};

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

fn with_lsn(shared: &Shared, mut r: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&wal::Lsn(shared.applied_lsn()).to_string()) {
        r.headers_mut().insert("walship-lsn", v);
    }
    r
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = &shared.cfg.security.token else {
        return true;
    };
    let presented = headers
        .get("authorization")
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
fn parse_ack(q: &AckQuery) -> Result<Option<shipper::AckLevel>, Response> {
    match q.ack.as_deref() {
        None | Some("") | Some("default") => Ok(None),
        Some(s) => s
            .parse::<shipper::AckLevel>()
            .map(Some)
            .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", format!("ack: {e}"))),
    }
}

async fn do_write(
    shared: &Arc<Shared>,
    uri: &Uri,
    op: &'static str,
    kind: u8,
    payload: Vec<u8>,
    ack: Option<shipper::AckLevel>,
) -> Response {
    if let Some(cause) = shared.wal_failure() {
        shared
            .metrics
            .client_requests_total
            .with_label_values(&[op, "wal_failed"])
            .inc();
        let e = WriteError::WalFailed { cause };
        return with_lsn(
            shared,
            error(StatusCode::SERVICE_UNAVAILABLE, "wal_failed", e.to_string()),
        );
    }
    if shared.role().role != Role::Leader {
        shared
            .metrics
            .client_requests_total
            .with_label_values(&[op, "not_leader"])
            .inc();
        return with_lsn(shared, redirect_to_leader(shared, uri));
    }
    let r = shared.write(kind, &payload, ack).await;
    let outcome = match &r {
        Ok(_) => "ok",
        Err(e) => e.code().as_str(),
    };
    shared
        .metrics
        .client_requests_total
        .with_label_values(&[op, outcome])
        .inc();
    let resp = match r {
        Ok(w) => (
            StatusCode::OK,
            Json(json!({"lsn": w.lsn.to_string(), "term": w.term})),
        )
            .into_response(),
        Err(WriteError::NotLeader { .. }) => redirect_to_leader(shared, uri),
        Err(e @ WriteError::NotAccepting) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            e.code().as_str(),
            e.to_string(),
        ),
        Err(e @ (WriteError::AckTimeout { .. } | WriteError::OutcomeUnknown { .. })) => {
            error(StatusCode::GATEWAY_TIMEOUT, "ack_timeout", e.to_string())
        }
        Err(e @ WriteError::BadRequest(_)) => {
            error(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
        }
        Err(e @ WriteError::WalFailed { .. }) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "wal_failed", e.to_string())
        }
        Err(e @ WriteError::NoSpace(_)) => {
            error(StatusCode::INSUFFICIENT_STORAGE, "no_space", e.to_string())
        }
        Err(e @ WriteError::Wal(_)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    };
    with_lsn(shared, resp)
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
        shared
            .metrics
            .client_requests_total
            .with_label_values(&[op, code.as_str()])
            .inc();
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
    let ack = match parse_ack(&q) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let payload = receiver::state::encode_put(key.as_bytes(), &body);
    do_write(
        &shared,
        &uri,
        "put",
        receiver::state::KIND_PUT,
        payload,
        ack,
    )
    .await
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
    let ack = match parse_ack(&q) {
        Ok(a) => a,
        Err(r) => return r,
    };
    do_write(
        &shared,
        &uri,
        "delete",
        receiver::state::KIND_DELETE,
        key.into_bytes(),
        ack,
    )
    .await
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
    let ack = match parse_ack(&q) {
        Ok(a) => a,
        Err(r) => return r,
    };
    do_write(
        &shared,
        &uri,
        "append",
        receiver::state::KIND_LOG,
        body.to_vec(),
        ack,
    )
    .await
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
        shared
            .metrics
            .client_requests_total
            .with_label_values(&["get", "rebuilding"])
            .inc();
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
            shared
                .metrics
                .client_requests_total
                .with_label_values(&["get", "wait_timeout"])
                .inc();
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
    let value = shared.kv.read().get(key.as_bytes());
    let resp = match value {
        Some(v) => {
            shared
                .metrics
                .client_requests_total
                .with_label_values(&["get", "ok"])
                .inc();
            (StatusCode::OK, v).into_response()
        }
        None => {
            shared
                .metrics
                .client_requests_total
                .with_label_values(&["get", "not_found"])
                .inc();
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("key {key:?} is absent"),
            )
        }
    };
    with_lsn(&shared, resp)
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
