//! `walship::Client`: the Rust client of the binary protocol, pipelined.
//!
//! Many requests may be in flight on one connection at once: each carries an
//! id and its answer is matched by id, so concurrent callers share one socket.
//! A `not_leader` answer carries the leader's address; [`Client::connect_any`]
//! follows it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use proto::{AckLevel, ClientOp, ClientResult, ErrorCode, Hello, Message, Peer};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

/// A client error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
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

/// A pipelined connection to one node. Cheap to clone; clones share the socket.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Message>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    addr: SocketAddr,
}

impl Client {
    /// Connect to a node's binary port.
    pub async fn connect(
        addr: SocketAddr,
        cluster_id: &str,
        token: &str,
    ) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connection(format!("connect {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
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
        let (mut sink, mut stream) = framed.split();
        let (tx, mut rx) = mpsc::channel::<Message>(4096);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let r = if rx.is_empty() {
                    sink.send(m).await
                } else {
                    sink.feed(m).await
                };
                if r.is_err() {
                    return;
                }
            }
        });
        let p2 = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::ClientResponse { id, result } = msg {
                    if let Some(tx) = p2.lock().remove(&id) {
                        let _ = tx.send(result);
                    }
                }
            }
            p2.lock().clear();
        });
        Ok(Client {
            tx,
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
        let mut c = Client::connect(addr, cluster_id, token).await?;
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
            c = Client::connect(a, cluster_id, token).await?;
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
        if self
            .tx
            .send(Message::ClientRequest { id, op })
            .await
            .is_err()
        {
            self.pending.lock().remove(&id);
            return Err(ClientError::Connection("connection closed".into()));
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
