//! `walship::Client`: the Rust client of the binary protocol, pipelined.
//!
//! Many requests may be in flight on one connection at once: each carries an
//! id and its answer is matched by id, so concurrent callers share one socket.
//! A `not_leader` answer carries the leader's address; [`Client::connect_any`]
//! follows it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use proto::{AckLevel, ClientOp, ClientResult, ErrorCode, Hello, Message, Peer};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

use crate::tls::{ClientTls, Stream};

/// Refuse a batch the node would refuse (empty, too many records) or the
/// frame limit would (`bytes`: its encoded size, computed only if needed).
fn check_batch(n: usize, bytes: impl FnOnce() -> usize) -> Result<(), ClientError> {
    if n == 0 || n > proto::MAX_BATCH_RECORDS {
        return Err(ClientError::BadBatch(format!(
            "a batch must hold 1 to {} records (got {n})",
            proto::MAX_BATCH_RECORDS
        )));
    }
    let size = bytes();
    // id, op, count, ack and the frame's type byte.
    if size + 32 > proto::DEFAULT_MAX_FRAME_BYTES {
        return Err(ClientError::BadBatch(format!(
            "a batch of {size} bytes does not fit in one frame ({} bytes); split it",
            proto::DEFAULT_MAX_FRAME_BYTES
        )));
    }
    Ok(())
}

/// A client error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A batch the protocol cannot carry (empty, too many records, too large);
    /// nothing was sent.
    #[error("batch refused before sending: {0}")]
    BadBatch(String),
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Connection(String),
    /// The node answered with an error.
    #[error("{code}: {message}")]
    Server {
        /// Code.
        code: ErrorCode,
        /// Message.
        message: String,
        /// Leader hint (binary address) with `not_leader`.
        leader: Option<String>,
    },
    /// The node answered with an unexpected result kind.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<ClientResult>>>>;

type Sink = SplitSink<Framed<Stream, proto::FrameCodec>, Message>;

/// The sending side of a connection, shared by every caller.
///
/// A caller writes its request to the socket itself (no writer task): it takes
/// the sink if free, else queues the request for whoever holds it. Whoever
/// holds the sink feeds its own request plus everything queued, flushes once,
/// releases, and checks the queue again, so a queued request is never stranded
/// (the queuer queues before trying the sink; the holder re-checks after
/// releasing it). The queue is bounded; a full queue waits.
struct Outgoing {
    sink: tokio::sync::Mutex<Sink>,
    queue_tx: mpsc::Sender<Message>,
    queue_rx: Mutex<mpsc::Receiver<Message>>,
}

impl Outgoing {
    async fn send(&self, msg: Message) -> Result<(), ClientError> {
        let closed = || ClientError::Connection("connection closed".into());
        let mut own = Some(msg);
        loop {
            let Ok(mut sink) = self.sink.try_lock() else {
                if let Some(m) = own.take() {
                    self.queue_tx.send(m).await.map_err(|_| closed())?;
                    // Pairs with the fence after releasing the sink (Dekker).
                    fence(Ordering::SeqCst);
                    // Re-try the sink: its holder may have released it
                    // before our request was queued.
                    continue;
                }
                // Queued, and the sink is held: its holder re-checks the queue.
                return Ok(());
            };
            let mut fed = false;
            if let Some(m) = own.take() {
                sink.feed(m).await.map_err(|_| closed())?;
                fed = true;
            }
            loop {
                let next = self.queue_rx.lock().try_recv();
                let Ok(m) = next else { break };
                sink.feed(m).await.map_err(|_| closed())?;
                fed = true;
            }
            if fed {
                sink.flush().await.map_err(|_| closed())?;
            }
            drop(sink);
            fence(Ordering::SeqCst);
            if self.queue_rx.lock().is_empty() {
                return Ok(());
            }
        }
    }
}

/// A pipelined connection to one node. Cheap to clone; clones share the socket.
#[derive(Clone)]
pub struct Client {
    out: Arc<Outgoing>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    addr: SocketAddr,
}

impl Client {
    /// Connect to a node's binary port (plain TCP).
    pub async fn connect(
        addr: SocketAddr,
        cluster_id: &str,
        token: &str,
    ) -> Result<Client, ClientError> {
        Client::connect_tls(addr, cluster_id, token, None).await
    }

    /// Connect to a node's binary port, over TLS when `tls` is given (the
    /// node's certificate is verified against its CA and server name).
    pub async fn connect_tls(
        addr: SocketAddr,
        cluster_id: &str,
        token: &str,
        tls: Option<&ClientTls>,
    ) -> Result<Client, ClientError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connection(format!("connect {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(t) => t
                .connect(tcp)
                .await
                .map_err(|e| ClientError::Connection(format!("TLS with {addr}: {e}")))?,
        };
        let mut framed = Framed::new(
            stream,
            proto::FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES),
        );
        proto::client_handshake(
            &mut framed,
            Hello {
                version: proto::PROTOCOL_VERSION,
                cluster_id: cluster_id.to_string(),
                peer: Peer::Client,
                token: token.to_string(),
            },
        )
        .await
        .map_err(|e| ClientError::Connection(format!("handshake with {addr}: {e}")))?;
        let (sink, mut stream) = framed.split();
        let (queue_tx, queue_rx) = mpsc::channel::<Message>(4096);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let p2 = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                match msg {
                    Message::ClientResponse { id, result } => {
                        if let Some(tx) = p2.lock().remove(&id) {
                            let _ = tx.send(result);
                        }
                    }
                    // The node refuses the connection (e.g. `frame_too_large`
                    // for a request over its limits.max_frame_bytes) and
                    // closes it: every pending request gets that reason.
                    Message::Error { code, message } => {
                        for (_, tx) in p2.lock().drain() {
                            let _ = tx.send(ClientResult::Error {
                                code,
                                message: message.clone(),
                                leader: None,
                            });
                        }
                        break;
                    }
                    _ => {}
                }
            }
            p2.lock().clear();
        });
        Ok(Client {
            out: Arc::new(Outgoing {
                sink: tokio::sync::Mutex::new(sink),
                queue_tx,
                queue_rx: Mutex::new(queue_rx),
            }),
            pending,
            next_id: Arc::new(AtomicU64::new(1)),
            addr,
        })
    }

    /// Connect to `addr`, and if that node is not the leader, to the leader it names.
    pub async fn connect_leader(
        addr: SocketAddr,
        cluster_id: &str,
        token: &str,
    ) -> Result<Client, ClientError> {
        Client::connect_leader_tls(addr, cluster_id, token, None).await
    }

    /// As [`Client::connect_leader`], over TLS when `tls` is given; the
    /// leader's certificate is verified for its member id.
    pub async fn connect_leader_tls(
        addr: SocketAddr,
        cluster_id: &str,
        token: &str,
        tls: Option<&ClientTls>,
    ) -> Result<Client, ClientError> {
        let mut c = Client::connect_tls(addr, cluster_id, token, tls).await?;
        for _ in 0..3 {
            let s = c.status().await?;
            let v: serde_json::Value =
                serde_json::from_str(&s).map_err(|e| ClientError::Unexpected(e.to_string()))?;
            if v["role"] == "leader" {
                return Ok(c);
            }
            let Some(leader) = v["leader_id"].as_str() else {
                return Ok(c);
            };
            let Some(a) = v["members"]
                .as_array()
                .and_then(|ms| ms.iter().find(|m| m["id"] == leader))
                .and_then(|m| m["addr"].as_str())
                .and_then(|a| a.parse().ok())
            else {
                return Ok(c);
            };
            let leader_tls = match tls {
                Some(t) => Some(
                    t.with_server_name(leader)
                        .map_err(|e| ClientError::Connection(e.to_string()))?,
                ),
                None => None,
            };
            c = Client::connect_tls(a, cluster_id, token, leader_tls.as_ref()).await?;
        }
        Ok(c)
    }

    /// The node this client talks to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn call(&self, op: ClientOp) -> Result<ClientResult, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        if let Err(e) = self.out.send(Message::ClientRequest { id, op }).await {
            // The node may have refused the request and closed the connection
            // while it was being sent (e.g. `frame_too_large`): its `Error`
            // frame, if one comes, says why better than the failed write.
            let r = tokio::time::timeout(Duration::from_secs(1), rx).await;
            self.pending.lock().remove(&id);
            return match r {
                Ok(Ok(ClientResult::Error {
                    code,
                    message,
                    leader,
                })) => Err(ClientError::Server {
                    code,
                    message,
                    leader,
                }),
                _ => Err(e),
            };
        }
        let r = rx
            .await
            .map_err(|_| ClientError::Connection("connection closed before the answer".into()))?;
        if let ClientResult::Error {
            code,
            message,
            leader,
        } = r
        {
            return Err(ClientError::Server {
                code,
                message,
                leader,
            });
        }
        Ok(r)
    }

    fn written(r: ClientResult) -> Result<(u64, u64), ClientError> {
        match r {
            ClientResult::Written { lsn, term } => Ok((lsn, term)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Write `key = value`; returns (end LSN, term) once acknowledged at `ack`.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ack: AckLevel,
    ) -> Result<(u64, u64), ClientError> {
        Self::written(
            self.call(ClientOp::Put {
                key: key.into(),
                value: value.into(),
                ack,
            })
            .await?,
        )
    }

    /// Delete `key`; returns (end LSN, term).
    pub async fn delete(
        &self,
        key: impl Into<Bytes>,
        ack: AckLevel,
    ) -> Result<(u64, u64), ClientError> {
        Self::written(
            self.call(ClientOp::Delete {
                key: key.into(),
                ack,
            })
            .await?,
        )
    }

    /// Append an opaque record; returns (end LSN, term).
    pub async fn append(
        &self,
        payload: impl Into<Bytes>,
        ack: AckLevel,
    ) -> Result<(u64, u64), ClientError> {
        Self::written(
            self.call(ClientOp::Append {
                payload: payload.into(),
                ack,
            })
            .await?,
        )
    }

    /// Write many `key = value` pairs with one request (a bulk load): the
    /// leader appends them as contiguous records with one WAL append, all or
    /// nothing, and answers once the whole batch is acknowledged at `ack`.
    /// Returns the end LSN of every record (in order) and the term. At most
    /// [`proto::MAX_BATCH_RECORDS`] entries, and the request must fit in one
    /// frame (64 MiB); an empty or oversized batch is refused before sending.
    pub async fn put_batch(
        &self,
        entries: Vec<(Bytes, Bytes)>,
        ack: AckLevel,
    ) -> Result<(Vec<u64>, u64), ClientError> {
        check_batch(entries.len(), || {
            entries.iter().map(|(k, v)| 8 + k.len() + v.len()).sum()
        })?;
        Self::written_batch(self.call(ClientOp::PutBatch { entries, ack }).await?)
    }

    /// Append many opaque records with one request (as [`Client::put_batch`]).
    pub async fn append_batch(
        &self,
        payloads: Vec<Bytes>,
        ack: AckLevel,
    ) -> Result<(Vec<u64>, u64), ClientError> {
        check_batch(payloads.len(), || {
            payloads.iter().map(|p| 4 + p.len()).sum()
        })?;
        Self::written_batch(self.call(ClientOp::AppendBatch { payloads, ack }).await?)
    }

    fn written_batch(r: ClientResult) -> Result<(Vec<u64>, u64), ClientError> {
        match r {
            ClientResult::WrittenBatch { lsns, term } => Ok((lsns, term)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Read `key` once the node applied `min_lsn` (waiting up to `wait_ms`);
    /// returns (value, applied LSN).
    pub async fn get(
        &self,
        key: impl Into<Bytes>,
        min_lsn: u64,
        wait_ms: u32,
    ) -> Result<(Option<Bytes>, u64), ClientError> {
        match self
            .call(ClientOp::Get {
                key: key.into(),
                min_lsn,
                wait_ms,
            })
            .await?
        {
            ClientResult::Value { value, applied_lsn } => Ok((value, applied_lsn)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The node's status document (JSON text).
    pub async fn status(&self) -> Result<String, ClientError> {
        match self.call(ClientOp::Status).await? {
            ClientResult::Status { json } => Ok(json),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}
