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

use super::election::DriverInput;
use super::Shared;

/// Requests one binary client may have in flight at once.
const MAX_IN_FLIGHT_PER_CLIENT: usize = 1024;

/// Accept connections until shutdown.
pub async fn run(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.clone();
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
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            // A connection task ends with the node: it holds the node's state
            // (and so its WAL) for as long as it runs.
            let mut shutdown = shared.shutdown.clone();
            tokio::select! {
                r = serve_connection(shared, stream) => {
                    if let Err(reason) = r {
                        tracing::warn!(peer = %peer_addr, %reason, "binary connection refused or ended with an error; the node keeps serving");
                    }
                }
                _ = shutdown.wait_for(|s| *s) => {}
            }
        });
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) -> Result<(), String> {
    let mut framed = Framed::new(stream, FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES));
    let token = shared.cfg.security.token.clone();
    let role = shared.role();
    let node_id = shared.cfg.node_id.clone();
    let hello = tokio::time::timeout(
        Duration::from_secs(5),
        proto::server_handshake(
            &mut framed,
            &shared.cfg.cluster_id,
            |_peer, presented| match &token {
                None => true,
                Some(t) => proto::token_eq(t.as_bytes(), presented.as_bytes()),
            },
            |hello| {
                if let Peer::Node(id) = &hello.peer {
                    if shared.cfg.member(id).is_none() {
                        return Err(Refusal::new(
                            ErrorCode::UnknownMember,
                            format!("node {id:?} is not a configured member of this cluster"),
                        ));
                    }
                }
                Ok(HelloOk {
                    node_id,
                    term: role.term,
                    leader_id: role.leader_id.clone(),
                })
            },
        ),
    )
    .await
    .map_err(|_| "no handshake within 5s".to_string())?
    .map_err(|e| format!("handshake: {e}"))?;

    match hello.peer {
        Peer::Node(id) => serve_node(shared, framed, id).await,
        Peer::Client => serve_client(shared, framed).await,
    }
}

async fn serve_node(
    shared: Arc<Shared>,
    mut framed: Framed<TcpStream, FrameCodec>,
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
/// [`MAX_IN_FLIGHT_PER_CLIENT`] at once) inside this connection task, in a
/// `FuturesUnordered`: no task, permit or channel per request. Every pass
/// takes the requests already readable, then collects every finished answer,
/// feeds them into the socket and flushes once.
async fn serve_client(
    shared: Arc<Shared>,
    mut framed: Framed<TcpStream, FrameCodec>,
) -> Result<(), String> {
    let mut inflight = FuturesUnordered::new();
    let mut reading = true;
    loop {
        // Requests already readable (bounded by the in-flight limit).
        while reading && inflight.len() < MAX_IN_FLIGHT_PER_CLIENT {
            let Some(m) = framed.next().now_or_never() else {
                break;
            };
            match incoming(&mut framed, m).await? {
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
            m = framed.next(), if reading && inflight.len() < MAX_IN_FLIGHT_PER_CLIENT => {
                match incoming(&mut framed, m).await? {
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
    framed: &mut Framed<TcpStream, FrameCodec>,
    m: Option<Result<Message, proto::ProtoError>>,
) -> Result<Option<(u64, ClientOp)>, String> {
    match m {
        None => Ok(None),
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
    let (opname, result) = match op {
        ClientOp::Put { key, value, ack } => {
            if key.is_empty() || key.len() > receiver::state::MAX_KEY_BYTES {
                return bad(format!(
                    "key must be 1 to {} bytes",
                    receiver::state::MAX_KEY_BYTES
                ));
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
            if key.is_empty() || key.len() > receiver::state::MAX_KEY_BYTES {
                return bad(format!(
                    "key must be 1 to {} bytes",
                    receiver::state::MAX_KEY_BYTES
                ));
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
        ClientOp::Append { payload, ack } => (
            "append",
            write_result(
                shared,
                shared
                    .write(receiver::state::KIND_LOG, &payload, ack_level(ack))
                    .await,
            ),
        ),
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
                    let kv = shared.kv.read();
                    let applied = shared.applied_lsn();
                    ClientResult::Value {
                        value: kv.get(&key),
                        applied_lsn: applied,
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
            if let Some(i) = entries
                .iter()
                .position(|(k, _)| k.is_empty() || k.len() > receiver::state::MAX_KEY_BYTES)
            {
                return bad(format!(
                    "entry {i}: key must be 1 to {} bytes",
                    receiver::state::MAX_KEY_BYTES
                ));
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
    shared
        .metrics
        .client_requests_total
        .with_label_values(&[opname, outcome])
        .inc();
    result
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
