//! The binary protocol listener (`listen`): replication, election messages and
//! binary clients, each after a handshake that checks cluster id, protocol
//! version, token and (for nodes) membership. A refused or malformed
//! connection is logged with its reason and closed; the node keeps serving.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use proto::{ClientOp, ClientResult, ErrorCode, FrameCodec, HelloOk, Message, Peer, Refusal};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

use crate::refusal::{self, Listener};
use crate::tls::Stream;

use super::election::DriverInput;
use super::limits::{self, ConnGate, ConnSlot};
use super::Shared;

/// Accept connections until shutdown.
pub async fn run(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.clone();
    let l = &shared.cfg.limits;
    let gate = ConnGate::new(l.max_connections, l.member_reserved_connections);
    let refusal = limits::binary_refusal(l);
    loop {
        let (stream, peer_addr) = tokio::select! {
            _ = shutdown.changed() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the binary port; retrying in 50ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // limits.max_connections (node/limits.rs): refused at once, no task.
        let Some(slot) = gate.try_acquire() else {
            limits::count_refused(
                &shared,
                limits::BINARY,
                ErrorCode::TooManyConnections.as_str(),
            );
            tracing::debug!(peer = %peer_addr, "binary connection refused: limits.max_connections reached");
            gate.refuse(stream, refusal.clone());
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            // A connection task ends with the node: it holds the node's state
            // (and so its WAL) for as long as it runs.
            let mut shutdown = shared.shutdown.clone();
            let gauge = shared
                .metrics
                .open_connections
                .with_label_values(&[limits::BINARY]);
            gauge.inc();
            let _gauge = scopeguard(move || gauge.dec());
            tokio::select! {
                r = serve_connection(shared, stream, peer_addr, slot) => {
                    if let Err(reason) = r {
                        tracing::warn!(peer = %peer_addr, %reason, "binary connection refused or ended with an error; the node keeps serving");
                    }
                }
                _ = shutdown.wait_for(|s| *s) => {}
            }
        });
    }
}

/// Runs `f` when dropped.
struct Guard<F: FnMut()>(F);

impl<F: FnMut()> Drop for Guard<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

fn scopeguard<F: FnMut()>(f: F) -> Guard<F> {
    Guard(f)
}

/// A connection refused before its session: metric label and explanation.
struct Refused {
    reason: &'static str,
    detail: String,
}

async fn serve_connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer_addr: std::net::SocketAddr,
    slot: ConnSlot,
) -> Result<(), String> {
    let handshake_timeout = shared.cfg.limits.handshake_timeout;
    let accepted = tokio::time::timeout(handshake_timeout, handshake(&shared, tcp, &slot)).await;
    let (mut framed, hello) = match accepted {
        Ok(Ok(Some(x))) => x,
        // Closed before saying anything (a TCP health check): not a refusal.
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(r)) => {
            refusal::record(
                &shared,
                Listener::Binary,
                r.reason,
                Some(peer_addr),
                &r.detail,
            );
            return Ok(());
        }
        Err(_) => {
            refusal::record(
                &shared,
                Listener::Binary,
                "handshake_timeout",
                Some(peer_addr),
                &format!(
                    "no complete handshake within {handshake_timeout:?} (limits.handshake_timeout)"
                ),
            );
            return Ok(());
        }
    };
    // Member links keep the protocol's 64 MiB (WAL records and checkpoint
    // chunks); a client gets limits.max_frame_bytes after its handshake.
    let r = match hello.peer {
        Peer::Node(id) => serve_node(shared, framed, id).await,
        Peer::Client => {
            framed
                .codec_mut()
                .set_max_frame_bytes(shared.cfg.limits.max_frame_bytes);
            serve_client(shared, framed).await
        }
    };
    drop(slot);
    r
}

/// TLS (when configured), then the protocol handshake: cluster id, version,
/// token, membership, and with `tls_client_auth = "require"` a client
/// certificate naming the member the peer claims to be.
async fn handshake(
    shared: &Shared,
    tcp: TcpStream,
    slot: &ConnSlot,
) -> Result<Option<(Framed<Stream, FrameCodec>, proto::Hello)>, Refused> {
    let stream = match &shared.tls {
        None => Stream::Plain(tcp),
        Some(tls) => tls.accept_binary(tcp).await.map_err(|e| Refused {
            reason: "tls_handshake",
            detail: format!("TLS handshake failed (plain text to the TLS port, or no valid client certificate?): {e}"),
        })?,
    };
    let peer_cert = stream.peer_certificate();
    let client_auth = shared.tls.as_ref().is_some_and(|t| t.client_auth);
    let mut framed = Framed::new(stream, FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES));
    let token = shared.cfg.security.token.clone();
    let role = shared.role();
    let node_id = shared.cfg.node_id.clone();
    let cert_mismatch = std::sync::atomic::AtomicBool::new(false);
    let r = proto::server_handshake(
        &mut framed,
        &shared.cfg.cluster_id,
        |_peer, presented| match &token {
            None => true,
            Some(t) => proto::token_eq(t.as_bytes(), presented.as_bytes()),
        },
        |hello| {
            if matches!(hello.peer, Peer::Client) && slot.is_reserved() {
                // A slot kept for members (limits.member_reserved_connections).
                return Err(limits::client_in_reserved_slot(&shared.cfg.limits));
            }
            if let Peer::Node(id) = &hello.peer {
                // Only configured members may replicate or vote.
                if shared.cfg.member(id).is_none() {
                    return Err(Refusal::new(
                        ErrorCode::UnknownMember,
                        format!("node {id:?} is not a configured member of this cluster"),
                    ));
                }
                if client_auth
                    && !peer_cert
                        .as_ref()
                        .is_some_and(|c| crate::tls::cert_names(c, id))
                {
                    cert_mismatch.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Err(Refusal::new(
                        ErrorCode::Unauthorized,
                        format!("the client certificate does not name member {id:?}"),
                    ));
                }
            }
            Ok(HelloOk {
                node_id,
                term: role.term,
                leader_id: role.leader_id.clone(),
            })
        },
    )
    .await;
    match r {
        Ok(hello) => Ok(Some((framed, hello))),
        Err(proto::ProtoError::Closed { .. }) => Ok(None),
        Err(e) => {
            let reason = if cert_mismatch.load(std::sync::atomic::Ordering::Relaxed) {
                "certificate_mismatch"
            } else {
                match e.code() {
                    ErrorCode::Unauthorized => "unauthorized",
                    ErrorCode::WrongCluster => "wrong_cluster",
                    ErrorCode::UnknownMember => "unknown_member",
                    ErrorCode::VersionMismatch => "version_mismatch",
                    ErrorCode::FrameTooLarge => "frame_too_large",
                    ErrorCode::TooManyConnections => "too_many_connections",
                    _ if matches!(e, proto::ProtoError::Io(_)) => "io_error",
                    _ => "bad_handshake",
                }
            };
            Err(Refused {
                reason,
                detail: format!("handshake refused: {e}"),
            })
        }
    }
}

async fn serve_node(
    shared: Arc<Shared>,
    mut framed: Framed<Stream, FrameCodec>,
    from: String,
) -> Result<(), String> {
    loop {
        let msg = match framed.next().await {
            None => return Ok(()),
            Some(Err(e)) => return Err(format!("from node {from}: {e}")),
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Failover(bytes) => match failover::Message::decode(&bytes) {
                Ok(msg) => {
                    if shared
                        .failover_tx
                        .send(DriverInput::Peer {
                            from: from.clone(),
                            msg,
                        })
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                Err(e) => {
                    return Err(format!("malformed election message from node {from}: {e}"));
                }
            },
            Message::StartReplication {
                term_history,
                write_lsn,
                flush_lsn,
                apply_lsn,
            } => {
                let mut ctx = shared.leader.lock().as_ref().map(|l| l.senders.clone());
                if ctx.is_none() {
                    // A follower hears a new leader's first heartbeat just before
                    // that leader finishes taking the role: give it a moment.
                    let mut rx = shared.role_tx.subscribe();
                    let _ = tokio::time::timeout(
                        Duration::from_millis(500),
                        rx.wait_for(|r| r.role == super::Role::Leader),
                    )
                    .await;
                    ctx = shared.leader.lock().as_ref().map(|l| l.senders.clone());
                }
                let Some(ctx) = ctx else {
                    let _ = framed
                        .send(Message::Error {
                            code: ErrorCode::NotLeader,
                            message: format!(
                                "node {} is not the leader (leader: {})",
                                shared.cfg.node_id,
                                shared.role().leader_id.unwrap_or_else(|| "unknown".into())
                            ),
                        })
                        .await;
                    return Ok(());
                };
                shared
                    .metrics
                    .replication_connections_total
                    .with_label_values(&["sender"])
                    .inc();
                tracing::info!(follower = %from, from = %wal::Lsn(write_lsn), "follower connected for WAL streaming");
                let reason = shipper::sender::serve_follower(
                    ctx,
                    from.clone(),
                    framed,
                    shipper::sender::StartRequest {
                        term_history,
                        write_lsn,
                        flush_lsn,
                        apply_lsn,
                    },
                )
                .await;
                tracing::info!(follower = %from, %reason, "replication session ended");
                return Ok(());
            }
            Message::BaseBackupRequest {
                checkpoint_lsn,
                offset,
            } => {
                tracing::info!(node = %from, "node asks for a checkpoint to rebuild from");
                let r = super::basebackup::serve(
                    shared.clone(),
                    framed,
                    from.clone(),
                    checkpoint_lsn,
                    offset,
                )
                .await;
                if let Err(reason) = &r {
                    tracing::warn!(node = %from, %reason, "checkpoint transfer for a rebuild ended early; the node retries");
                }
                return Ok(());
            }
            other => {
                let _ = framed
                    .send(Message::Error {
                        code: ErrorCode::BadRequest,
                        message: format!("unexpected {} from a node", other.name()),
                    })
                    .await;
                return Err(format!("unexpected {} from node {from}", other.name()));
            }
        }
    }
}

/// Serve one binary client. Its requests run concurrently (pipelined, at most
/// `limits.max_in_flight_per_client` at once: beyond it nothing more is read
/// from the socket, so the client's sends block, until answers go out) inside
/// this connection task, in a
/// `FuturesUnordered`: no task, permit or channel per request. Every pass
/// takes the requests already readable, then collects every finished answer,
/// feeds them into the socket and flushes once.
async fn serve_client(
    shared: Arc<Shared>,
    mut framed: Framed<Stream, FrameCodec>,
) -> Result<(), String> {
    let mut inflight = FuturesUnordered::new();
    let mut reading = true;
    let max_in_flight = shared.cfg.limits.max_in_flight_per_client;
    loop {
        // Requests already readable (bounded by the in-flight limit).
        while reading && inflight.len() < max_in_flight {
            let Some(m) = framed.next().now_or_never() else {
                break;
            };
            match incoming(&shared, &mut framed, m).await? {
                Some((id, op)) => inflight.push(run_op(&shared, id, op)),
                None => reading = false,
            }
        }
        // Answers ready now: fed together, one flush.
        let mut fed = false;
        while let Some(Some((id, result))) = inflight.next().now_or_never() {
            framed
                .feed(Message::ClientResponse { id, result })
                .await
                .map_err(|e| format!("cannot answer the client: {e}"))?;
            fed = true;
        }
        if fed {
            SinkExt::<Message>::flush(&mut framed)
                .await
                .map_err(|e| format!("cannot answer the client: {e}"))?;
        }
        if !reading && inflight.is_empty() {
            return Ok(());
        }
        tokio::select! {
            r = inflight.next(), if !inflight.is_empty() => {
                if let Some((id, result)) = r {
                    framed
                        .feed(Message::ClientResponse { id, result })
                        .await
                        .map_err(|e| format!("cannot answer the client: {e}"))?;
                    // Flushed in the next pass, with the answers ready by then.
                    if inflight.is_empty() {
                        SinkExt::<Message>::flush(&mut framed).await.map_err(|e| format!("cannot answer the client: {e}"))?;
                    }
                }
            }
            m = framed.next(), if reading && inflight.len() < max_in_flight => {
                match incoming(&shared, &mut framed, m).await? {
                    Some((id, op)) => inflight.push(run_op(&shared, id, op)),
                    None => reading = false,
                }
            }
            else => return Ok(()),
        }
    }
}

/// A frame from a client: `Some((id, op))` for a request, `None` when the
/// client closed its side, `Err` (after answering with an `Error`) otherwise.
async fn incoming(
    shared: &Shared,
    framed: &mut Framed<Stream, FrameCodec>,
    m: Option<Result<Message, proto::ProtoError>>,
) -> Result<Option<(u64, ClientOp)>, String> {
    match m {
        None => Ok(None),
        Some(Err(e @ proto::ProtoError::FrameTooLarge { .. })) => {
            // Refused from the 4-byte header, before anything was allocated.
            limits::count_refused(shared, limits::BINARY, ErrorCode::FrameTooLarge.as_str());
            let message = format!(
                "{e} (limits.max_frame_bytes = {}); connection closed",
                shared.cfg.limits.max_frame_bytes
            );
            let _ = framed
                .send(Message::Error {
                    code: ErrorCode::FrameTooLarge,
                    message: message.clone(),
                })
                .await;
            Err(format!("client: {message}"))
        }
        Some(Err(e)) => Err(format!("client: {e}")),
        Some(Ok(Message::ClientRequest { id, op })) => Ok(Some((id, op))),
        Some(Ok(msg)) => {
            let _ = framed
                .send(Message::Error {
                    code: ErrorCode::BadRequest,
                    message: format!("expected ClientRequest, got {}", msg.name()),
                })
                .await;
            Err(format!("client sent {}", msg.name()))
        }
    }
}

async fn run_op(shared: &Shared, id: u64, op: ClientOp) -> (u64, ClientResult) {
    let gauge = &shared.metrics.client_requests_in_flight;
    gauge.inc();
    // Decremented also when the connection ends with the request pending.
    let _g = scopeguard(|| gauge.dec());
    (id, handle_client_op(shared, op).await)
}

fn ack_level(a: proto::AckLevel) -> Option<shipper::AckLevel> {
    match a {
        proto::AckLevel::Default => None,
        proto::AckLevel::Local => Some(shipper::AckLevel::Local),
        proto::AckLevel::RemoteWrite => Some(shipper::AckLevel::RemoteWrite),
        proto::AckLevel::RemoteFlush => Some(shipper::AckLevel::RemoteFlush),
        proto::AckLevel::RemoteApply => Some(shipper::AckLevel::RemoteApply),
    }
}

/// Execute one client operation (shared by the binary protocol and tests).
pub async fn handle_client_op(shared: &Shared, op: ClientOp) -> ClientResult {
    let lim = &shared.cfg.limits;
    let (opname, result) = match op {
        ClientOp::Put { key, value, ack } => {
            if let Err(e) =
                limits::check_key(lim, &key).and_then(|()| limits::check_value(lim, &value))
            {
                return refused(shared, "put", e);
            }
            let payload = receiver::state::encode_put(&key, &value);
            (
                "put",
                write_result(
                    shared,
                    shared
                        .write(receiver::state::KIND_PUT, &payload, ack_level(ack))
                        .await,
                ),
            )
        }
        ClientOp::Delete { key, ack } => {
            if let Err(e) = limits::check_key(lim, &key) {
                return refused(shared, "delete", e);
            }
            (
                "delete",
                write_result(
                    shared,
                    shared
                        .write(receiver::state::KIND_DELETE, &key, ack_level(ack))
                        .await,
                ),
            )
        }
        ClientOp::Append { payload, ack } => {
            if let Err(e) = limits::check_value(lim, &payload) {
                return refused(shared, "append", e);
            }
            (
                "append",
                write_result(
                    shared,
                    shared
                        .write(receiver::state::KIND_LOG, &payload, ack_level(ack))
                        .await,
                ),
            )
        }
        ClientOp::Get {
            key,
            min_lsn,
            wait_ms,
        } => {
            if let Err(message) = shared.rebuild.check_readable() {
                shared
                    .metrics
                    .client_requests_total
                    .with_label_values(&["get", "rebuilding"])
                    .inc();
                return ClientResult::Error {
                    code: ErrorCode::Rebuilding,
                    message,
                    leader: None,
                };
            }
            let r = if min_lsn > shared.applied_lsn() {
                shared
                    .wait_applied(min_lsn, Duration::from_millis(wait_ms as u64))
                    .await
            } else {
                Ok(shared.applied_lsn())
            };
            let res = match r {
                Ok(_) => {
                    let (value, applied) = shared.read_value(&key);
                    if applied < min_lsn {
                        ClientResult::Error {
                            code: ErrorCode::WaitTimeout,
                            message: Shared::rewound_below(applied, min_lsn),
                            leader: None,
                        }
                    } else {
                        ClientResult::Value {
                            value,
                            applied_lsn: applied,
                        }
                    }
                }
                Err(applied) => ClientResult::Error {
                    code: ErrorCode::WaitTimeout,
                    message: format!(
                        "this node has applied {} and did not reach min_lsn {} within {wait_ms}ms",
                        wal::Lsn(applied),
                        wal::Lsn(min_lsn)
                    ),
                    leader: None,
                },
            };
            ("get", res)
        }
        ClientOp::PutBatch { entries, ack } => {
            if let Err(m) = check_batch(entries.len()) {
                return bad(m);
            }
            for (i, (k, v)) in entries.iter().enumerate() {
                if let Err((code, m)) =
                    limits::check_key(lim, k).and_then(|()| limits::check_value(lim, v))
                {
                    return refused(shared, "put_batch", (code, format!("entry {i}: {m}")));
                }
            }
            // Every record's payload in one buffer, then one WAL append.
            let total: usize = entries.iter().map(|(k, v)| 4 + k.len() + v.len()).sum();
            let mut buf = Vec::with_capacity(total);
            let mut bounds = Vec::with_capacity(entries.len());
            for (k, v) in &entries {
                let at = buf.len();
                buf.extend_from_slice(&(k.len() as u32).to_be_bytes());
                buf.extend_from_slice(k);
                buf.extend_from_slice(v);
                bounds.push((at, buf.len()));
            }
            let records: Vec<(u8, &[u8])> = bounds
                .iter()
                .map(|&(a, b)| (receiver::state::KIND_PUT, &buf[a..b]))
                .collect();
            (
                "put_batch",
                batch_result(shared, shared.write_batch(&records, ack_level(ack)).await),
            )
        }
        ClientOp::AppendBatch { payloads, ack } => {
            if let Err(m) = check_batch(payloads.len()) {
                return bad(m);
            }
            for (i, p) in payloads.iter().enumerate() {
                if let Err((code, m)) = limits::check_value(lim, p) {
                    return refused(shared, "append_batch", (code, format!("entry {i}: {m}")));
                }
            }
            let records: Vec<(u8, &[u8])> = payloads
                .iter()
                .map(|p| (receiver::state::KIND_LOG, &p[..]))
                .collect();
            (
                "append_batch",
                batch_result(shared, shared.write_batch(&records, ack_level(ack)).await),
            )
        }
        ClientOp::Status => (
            "status",
            ClientResult::Status {
                json: crate::status::status_json(shared).to_string(),
            },
        ),
    };
    let outcome = match &result {
        ClientResult::Error { code, .. } => code.as_str(),
        _ => "ok",
    };
    shared.metrics.client_request(opname, outcome);
    result
}

/// A write refused by a `[limits]` check (counted under its op and code).
fn refused(shared: &Shared, op: &str, (code, message): (ErrorCode, String)) -> ClientResult {
    shared
        .metrics
        .client_requests_total
        .with_label_values(&[op, code.as_str()])
        .inc();
    ClientResult::Error {
        code,
        message,
        leader: None,
    }
}

fn bad(message: String) -> ClientResult {
    ClientResult::Error {
        code: ErrorCode::BadRequest,
        message,
        leader: None,
    }
}

/// A batch must hold 1 to [`proto::MAX_BATCH_RECORDS`] records.
fn check_batch(n: usize) -> Result<(), String> {
    if n == 0 || n > proto::MAX_BATCH_RECORDS {
        return Err(format!(
            "a batch must hold 1 to {} records (got {n})",
            proto::MAX_BATCH_RECORDS
        ));
    }
    Ok(())
}

fn batch_result(shared: &Shared, r: Result<(Vec<u64>, u64), super::WriteError>) -> ClientResult {
    match r {
        Ok((lsns, term)) => ClientResult::WrittenBatch { lsns, term },
        Err(e) => error_result(shared, e),
    }
}

fn write_result(shared: &Shared, r: Result<super::Written, super::WriteError>) -> ClientResult {
    match r {
        Ok(w) => ClientResult::Written {
            lsn: w.lsn.0,
            term: w.term,
        },
        Err(e) => error_result(shared, e),
    }
}

fn error_result(shared: &Shared, e: super::WriteError) -> ClientResult {
    let leader = match &e {
        super::WriteError::NotLeader { leader: Some(id) } => {
            shared.cfg.member(id).map(|m| m.addr.to_string())
        }
        _ => None,
    };
    ClientResult::Error {
        code: e.code(),
        message: e.to_string(),
        leader,
    }
}
