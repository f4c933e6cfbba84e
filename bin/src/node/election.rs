//! The tokio driver of the failover core: timers, peer messages, the vote
//! store, and the role changes the core decides.
//!
//! Ordering rule (from `failover::Action`): a `PersistState` action is made
//! durable (fsync) before any later action of the same step runs, so a vote or
//! a term never leaves this node before it is on disk. If the vote store cannot
//! be written the driver stops the node: restarting from the store is safe,
//! sending an unsaved vote is not.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use failover::{Action, AdminCommand, Event, LogPosition, Message as FMsg, VoteStore};
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

use super::{transitions, Shared};

/// Something for the driver to act on.
pub enum DriverInput {
    /// A failover message from member `from` (arrived on the binary listener).
    Peer {
        /// Member id (authenticated by the handshake).
        from: String,
        /// The message.
        msg: FMsg,
    },
    /// An operator command; the reply says whether the core refused it.
    Admin {
        /// The command.
        cmd: AdminCommand,
        /// Refusal reason, if the core refused.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Leader: the current synchronous standbys.
    SyncStandbys(Vec<String>),
}

/// Capacity of each peer's outbound queue; messages beyond it are dropped
/// (elections tolerate loss; a stuck peer must not block the driver).
const PEER_QUEUE: usize = 256;

/// Build the core's config from the node config.
pub fn core_config(shared: &Shared) -> failover::Config {
    let cfg = &shared.cfg;
    let members = cfg
        .members
        .iter()
        .map(|m| failover::Member {
            id: m.id.clone(),
            priority: m.priority,
        })
        .collect();
    let mut c = failover::Config::new(cfg.node_id.clone(), members);
    c.heartbeat_interval_ms = cfg.failover.heartbeat_interval.as_millis() as u64;
    c.election_timeout_ms = cfg.failover.election_timeout.as_millis() as u64;
    c.auto_failover = cfg.failover.auto;
    c.mode = match cfg.replication.mode {
        crate::config::Mode::Async => failover::ReplicationMode::Async {
            max_lag_bytes: cfg.failover.max_lag_on_failover,
        },
        crate::config::Mode::Sync => failover::ReplicationMode::Sync,
        crate::config::Mode::Quorum => failover::ReplicationMode::Quorum,
    };
    // Different per node and per start, so two nodes never share a timeout sequence.
    c.seed ^= super::now_us();
    c
}

/// The local log position as the core wants it: the flushed end on a
/// follower (a vote must only count durable records); on a leader the end of
/// everything it appended, so that a leadership transfer waits until the
/// target holds even the writes still being flushed (otherwise the target
/// could lack a record the rest of the cluster commits, and lose the vote).
pub fn log_position(shared: &Shared) -> LogPosition {
    let flushed = *shared.flush_tx.borrow();
    let wal = &shared.wal;
    let leading = shared.leader.lock().is_some();
    let last_lsn = if leading {
        wal.write_lsn().0
    } else {
        flushed.min(wal.write_lsn().0)
    };
    let last_term = if last_lsn == 0 {
        0
    } else {
        wal.term_history()
            .iter()
            .rev()
            .find(|t| t.start.0 < last_lsn)
            .map(|t| t.term)
            .unwrap_or(0)
    };
    LogPosition {
        last_term,
        last_lsn,
    }
}

/// Run the driver until shutdown. Returns an error only if the vote store fails.
pub async fn run(
    shared: Arc<Shared>,
    store: VoteStore,
    mut core: failover::Node,
    mut inputs: mpsc::Receiver<DriverInput>,
) -> Result<(), failover::FailoverError> {
    let epoch = Instant::now();
    let now_ms = move || epoch.elapsed().as_millis() as u64;
    let mut peers: HashMap<String, mpsc::Sender<FMsg>> = HashMap::new();
    let mut flush_rx = shared.flush_tx.subscribe();
    let mut written_rx = shared.written_tx.subscribe();
    let mut shutdown = shared.shutdown.clone();
    let mut pending_admin: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
    let mut last_pos = log_position(&shared);
    // The leader's flush LSN last given to the core (see below: read before
    // every step, never sent to the driver).
    let mut fed_leader_flush = 0u64;
    let mut wal_failure = shared.wal_failure.subscribe();

    loop {
        if shared.wal_failure().is_some() {
            for reply in pending_admin.drain(..) {
                let _ = reply.send(Err("this node's WAL failed".into()));
            }
            shared.publish_wal_failed_role();
            silent(&shared, &mut inputs).await;
            return Ok(());
        }
        let deadline = core.next_deadline_ms();
        let sleep_ms = deadline.saturating_sub(now_ms()).min(1000);
        let event = tokio::select! {
            biased;
            _ = shutdown.changed() => return Ok(()),
            _ = wal_failure.changed() => continue,
            input = inputs.recv() => match input {
                None => return Ok(()),
                Some(DriverInput::Peer { from, msg }) => Event::Message { from, msg },
                Some(DriverInput::Admin { cmd, reply }) => {
                    pending_admin.push(reply);
                    Event::Admin(cmd)
                }
                Some(DriverInput::SyncStandbys(list)) => Event::SyncStandbys(list),
            },
            // Woken by every flush although the core reads the log position
            // only inside a step (it is refreshed before every step, below):
            // without this wake-up the 32-client quorum throughput fell by
            // ~15 % on the 2-vCPU bench box (benches/CLUSTER.md, session 6).
            r = flush_rx.changed() => {
                if r.is_err() { return Ok(()); }
                let pos = log_position(&shared);
                if pos == last_pos { continue; }
                last_pos = pos;
                Event::LogPosition(pos)
            }
            r = written_rx.changed(), if core.transfer_target().is_some() => {
                if r.is_err() { return Ok(()); }
                let pos = log_position(&shared);
                if pos == last_pos { continue; }
                last_pos = pos;
                Event::LogPosition(pos)
            }
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => Event::Tick,
        };
        let is_admin = matches!(event, Event::Admin(_));
        if matches!(event, Event::Admin(AdminCommand::TransferLeadership { .. })) {
            // Stop appends before the core looks at the log: every write appended
            // so far must reach the target before it is told to campaign. The
            // core's answer (after the step) decides whether writes resume.
            if let Some(l) = shared.leader.lock().as_mut() {
                l.accepting_writes = false;
            }
        }
        // A node being rebuilt (or not yet caught up after it) neither votes nor
        // stands: set before every step, so no vote request is answered with a
        // stale flag.
        let flushed = *shared.flush_tx.borrow();
        core.set_rebuilding(shared.rebuild.holds_out_of_elections(flushed));
        // The log may have moved (truncated, or flushed since the wake-up):
        // refresh it before every step.
        let pos = log_position(&shared);
        if pos != last_pos {
            last_pos = pos;
            let acts = core.step(now_ms(), Event::LogPosition(pos));
            execute(&shared, &store, &mut peers, &mut pending_admin, acts).await?;
        }
        // Likewise the leader's flush LSN heard on the replication stream (a
        // follower's receiver records it with every keepalive, i.e. every write).
        let leader_flush = shared.follower.lock().leader_flush_lsn;
        if leader_flush != fed_leader_flush {
            fed_leader_flush = leader_flush;
            let acts = core.step(
                now_ms(),
                Event::LeaderFlush {
                    flush_lsn: leader_flush,
                },
            );
            execute(&shared, &store, &mut peers, &mut pending_admin, acts).await?;
        }
        let actions = core.step(now_ms(), event);
        let refused = actions
            .iter()
            .any(|a| matches!(a, Action::AdminRefused { .. }));
        execute(&shared, &store, &mut peers, &mut pending_admin, actions).await?;
        if is_admin && !refused {
            for reply in pending_admin.drain(..) {
                let _ = reply.send(Ok(()));
            }
        }
        transitions::publish_core_state(&shared, &core);
    }
}

/// After the WAL failed ([`Shared::wal_failed`]): take no part in the
/// elections until shutdown. No heartbeat (a leader steps down by going quiet,
/// and the others elect a leader after their election timeout), no vote (a vote
/// would rest on a log whose unflushed tail cannot be trusted), no candidacy;
/// peer messages are dropped and admin commands refused.
async fn silent(shared: &Shared, inputs: &mut mpsc::Receiver<DriverInput>) {
    tracing::warn!(
        node = %shared.cfg.node_id,
        "WAL failed: this node leaves the elections (no heartbeat, vote or candidacy) until it is restarted"
    );
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            input = inputs.recv() => match input {
                None => return,
                Some(DriverInput::Admin { cmd, reply }) => {
                    let _ = reply.send(Err(format!(
                        "{} refused: this node's WAL failed (fsync error); restart it once the disk is healthy",
                        cmd.as_str()
                    )));
                }
                Some(_) => {}
            },
        }
    }
}

async fn execute(
    shared: &Arc<Shared>,
    store: &VoteStore,
    peers: &mut HashMap<String, mpsc::Sender<FMsg>>,
    pending_admin: &mut Vec<oneshot::Sender<Result<(), String>>>,
    mut actions: Vec<Action>,
) -> Result<(), failover::FailoverError> {
    // A step that makes this node leader also carries its first heartbeats:
    // send them before the (slower) role change so that followers learn the
    // new leader at once. PersistState stays first: nothing is sent before it.
    if let Some(lead) = actions
        .iter()
        .position(|a| matches!(a, Action::BecomeLeader { .. }))
    {
        let persist_end = actions
            .iter()
            .position(|a| !matches!(a, Action::PersistState(_)))
            .unwrap_or(0);
        let mut sends = Vec::new();
        let mut rest = Vec::new();
        for (i, a) in actions.drain(..).enumerate() {
            if i >= persist_end && i > lead && matches!(a, Action::Send { .. }) {
                sends.push(a);
            } else {
                rest.push(a);
            }
        }
        let insert_at = rest
            .iter()
            .position(|a| matches!(a, Action::BecomeLeader { .. }))
            .unwrap_or(rest.len());
        rest.splice(insert_at..insert_at, sends);
        actions = rest;
    }
    for action in actions {
        match action {
            Action::PersistState(state) => {
                // Durable before anything after it (votes, terms) leaves this node.
                if let Err(e) = tokio::task::block_in_place(|| store.save(&state)) {
                    tracing::error!(
                        file = %store.path().display(),
                        error = %e,
                        "cannot save the vote state; stopping the node so that no unsaved vote is ever sent. Fix the disk and restart"
                    );
                    return Err(e);
                }
            }
            Action::Send { to, msg } => {
                if let FMsg::VoteResponse {
                    granted: false,
                    reject_reason: Some(r),
                    ..
                } = &msg
                {
                    shared
                        .metrics
                        .votes_refused_total
                        .with_label_values(&[r.as_str()])
                        .inc();
                }
                let tx = peers
                    .entry(to.clone())
                    .or_insert_with(|| spawn_peer(shared.clone(), to.clone()));
                if tx.try_send(msg).is_err() {
                    tracing::debug!(peer = %to, "failover message dropped: peer queue full or link down");
                }
            }
            Action::BecomeLeader { term } => {
                shared.metrics.elections_won_total.inc();
                transitions::become_leader(shared, term).await;
            }
            Action::BecomeFollower { term, leader } => {
                transitions::become_follower(shared, term, leader).await;
            }
            Action::Fence { term } => {
                tracing::warn!(
                    term,
                    "this leader cannot hear a majority of the cluster within the election timeout; it stops acknowledging writes (fenced) because the others may elect a new leader. Waiting writes end with outcome unknown"
                );
                transitions::fence(shared, term);
            }
            Action::LostWrites { from_lsn, to_lsn } => {
                tracing::error!(
                    from = %wal::Lsn(from_lsn),
                    to = %wal::Lsn(to_lsn),
                    bytes = to_lsn.saturating_sub(from_lsn),
                    "async failover lost writes: the old leader had flushed WAL up to {} that this new leader never received; writes in that range acknowledged by the old leader are lost",
                    wal::Lsn(to_lsn)
                );
                shared.metrics.failover_lost_writes_total.inc();
                shared
                    .metrics
                    .failover_lost_bytes_total
                    .inc_by(to_lsn.saturating_sub(from_lsn));
            }
            Action::AdminRefused { command, reason } => {
                let text = format!("{command} refused: {}", reason.as_str());
                tracing::warn!("{text}");
                for reply in pending_admin.drain(..) {
                    let _ = reply.send(Err(text.clone()));
                }
            }
        }
    }
    Ok(())
}

/// Start the outbound link to a peer: connect (with backoff), handshake, and
/// send queued failover messages as `proto::Message::Failover` frames.
fn spawn_peer(shared: Arc<Shared>, peer: String) -> mpsc::Sender<FMsg> {
    let (tx, mut rx) = mpsc::channel::<FMsg>(PEER_QUEUE);
    tokio::spawn(async move {
        let Some(addr) = shared.cfg.member(&peer).map(|m| m.addr) else {
            tracing::error!(peer = %peer, "failover message for an unknown member dropped");
            return;
        };
        let mut shutdown = shared.shutdown.clone();
        let mut backoff = Duration::from_millis(20);
        let mut logged_down = false;
        loop {
            let conn = tokio::select! {
                _ = shutdown.changed() => return,
                c = connect(&shared, addr, &peer) => c,
            };
            let mut framed = match conn {
                Ok(f) => {
                    if logged_down {
                        tracing::info!(peer = %peer, %addr, "failover link to peer is up again");
                    }
                    logged_down = false;
                    backoff = Duration::from_millis(20);
                    f
                }
                Err(e) => {
                    if !logged_down {
                        tracing::warn!(peer = %peer, %addr, error = %e, "cannot reach peer for election messages; retrying with backoff");
                        logged_down = true;
                    }
                    // Drop what queued up meanwhile: stale election messages are useless.
                    while rx.try_recv().is_ok() {}
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    continue;
                }
            };
            loop {
                let msg = tokio::select! {
                    _ = shutdown.changed() => return,
                    m = rx.recv() => match m { Some(m) => m, None => return },
                    // The peer never sends on this link; a read returning means it closed.
                    r = framed.next() => {
                        match r {
                            Some(Ok(proto::Message::Error { code, message })) => {
                                tracing::warn!(peer = %peer, code = code.as_str(), %message, "peer refused our election link; reconnecting");
                            }
                            _ => tracing::debug!(peer = %peer, "election link closed by peer; reconnecting"),
                        }
                        break;
                    }
                };
                if let Err(e) = framed.send(proto::Message::Failover(msg.encode())).await {
                    tracing::debug!(peer = %peer, error = %e, "election link broke; reconnecting");
                    break;
                }
            }
        }
    });
    tx
}

/// Connect to member `peer`'s binary port (TLS when configured) and complete
/// the handshake as this node.
pub async fn connect(
    shared: &Shared,
    addr: std::net::SocketAddr,
    peer: &str,
) -> Result<Framed<crate::tls::Stream, proto::FrameCodec>, String> {
    let stream =
        crate::tls::connect_member(shared.tls.as_deref(), addr, peer, Duration::from_secs(2))
            .await?;
    let mut framed = Framed::new(
        stream,
        proto::FrameCodec::new(proto::DEFAULT_MAX_FRAME_BYTES),
    );
    let hello = proto::Hello {
        version: proto::PROTOCOL_VERSION,
        cluster_id: shared.cfg.cluster_id.clone(),
        peer: proto::Peer::Node(shared.cfg.node_id.clone()),
        token: shared.cfg.security.token.clone().unwrap_or_default(),
    };
    tokio::time::timeout(
        Duration::from_secs(2),
        proto::client_handshake(&mut framed, hello),
    )
    .await
    .map_err(|_| "handshake timed out after 2s".to_string())?
    .map_err(|e| e.to_string())?;
    Ok(framed)
}
