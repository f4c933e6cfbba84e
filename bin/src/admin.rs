//! Manual control: switchover and failover as explicit sequences with
//! timeouts, each step logged, so an operator never sees "status unknown".

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::node::{Role, Shared};

type AdminResult = Result<Value, (&'static str, String)>;

/// Graceful leader change, run on the leader:
///
/// | step | what | fails with |
/// |---|---|---|
/// | 1 | pick the target (given, or the most up-to-date streaming follower with priority > 0) | `no_candidate` |
/// | 2 | the failover core stops taking writes and hands over once the target's log matches ours (`TimeoutNow`) | `refused` |
/// | 3 | wait until the target leads (at most 2 election timeouts + 2 s) | `timeout` (writes resume on this leader if it still leads) |
pub async fn switchover(shared: &Shared, to: Option<String>) -> AdminResult {
    let target = match to {
        Some(t) => {
            let Some(m) = shared.cfg.member(&t) else {
                return Err((
                    "unknown_member",
                    format!("{t:?} is not a member of this cluster"),
                ));
            };
            if m.id == shared.cfg.node_id {
                return Err(("refused", format!("{t} is already the leader")));
            }
            t
        }
        None => pick_target(shared).ok_or((
            "no_candidate",
            "no streaming follower with priority > 0 to hand over to".to_string(),
        ))?,
    };
    let started = Instant::now();
    let term_before = shared.role().term;
    tracing::info!(target = %target, term = term_before, "switchover requested: stopping writes and handing leadership over");
    crate::http::send_admin(
        shared,
        failover::AdminCommand::TransferLeadership { to: target.clone() },
    )
    .await
    .map_err(|e| ("refused", e))?;
    let limit = shared.cfg.failover.election_timeout * 2 + Duration::from_secs(2);
    let deadline = started + limit;
    let new_term = {
        let mut rx = shared.role_tx.subscribe();
        let target2 = target.clone();
        tokio::time::timeout(limit, async move {
            rx.wait_for(|r| {
                r.term > term_before && r.leader_id.as_deref() == Some(target2.as_str())
            })
            .await
            .map(|r| r.term)
            .ok()
        })
        .await
        .ok()
        .flatten()
    };
    let waited = match new_term {
        Some(term) => {
            // Return only once the target accepts writes (its /leader answers 200).
            let addr = shared.cfg.member(&target).map(|m| m.http);
            match addr {
                Some(addr) if target_accepts_writes(shared, &target, addr, deadline).await => {
                    Ok(term)
                }
                _ => Err(()),
            }
        }
        None => Err(()),
    };
    match waited {
        Ok(term) => {
            tracing::info!(target = %target, term, elapsed_ms = started.elapsed().as_millis() as u64, "switchover done: {target} leads");
            Ok(
                json!({"leader": target, "term": term, "elapsed_ms": started.elapsed().as_millis() as u64}),
            )
        }
        Err(()) => {
            let now = shared.role();
            Err((
                "timeout",
                format!(
                    "{target} did not become leader within {limit:?}; this node is now {} in term {} (leader: {})",
                    now.role.as_str(),
                    now.term,
                    now.leader_id.unwrap_or_else(|| "unknown".into())
                ),
            ))
        }
    }
}

/// Poll the target's `/leader` until it answers 200 or `deadline` passes.
/// With TLS the target's certificate is verified for its member id.
async fn target_accepts_writes(
    shared: &Shared,
    target: &str,
    addr: std::net::SocketAddr,
    deadline: Instant,
) -> bool {
    let timeout = Duration::from_millis(500);
    let (client, url) = match &shared.tls {
        Some(tls) => (
            tls.http_client(timeout, target, addr),
            format!("https://{target}:{}/leader", addr.port()),
        ),
        None => (
            reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .map_err(|e| e.to_string()),
            format!("http://{addr}/leader"),
        ),
    };
    let Ok(client) = client else {
        return false;
    };
    while Instant::now() < deadline {
        if let Ok(r) = client.get(&url).send().await {
            if r.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

fn pick_target(shared: &Shared) -> Option<String> {
    let leader = shared.leader.lock();
    let l = leader.as_ref()?;
    let progress = l.progress.lock();
    let states = shared.follower_states.lock();
    shared
        .cfg
        .members
        .iter()
        .filter(|m| m.id != shared.cfg.node_id && m.priority > 0)
        .filter(|m| states.get(&m.id).map(|s| s.as_str()) == Some("streaming"))
        .max_by_key(|m| {
            (
                progress.follower(&m.id).map(|f| f.flush_lsn()).unwrap_or(0),
                m.priority,
            )
        })
        .map(|m| m.id.clone())
}

/// `failover --to <this node>`: stand for election now. Without `force`, voters
/// refuse this node if it may miss acknowledged writes.
pub async fn failover_to_me(shared: &Shared, force: bool) -> AdminResult {
    let role = shared.role();
    if role.role == Role::Leader {
        return Ok(
            json!({"leader": shared.cfg.node_id, "term": role.term, "note": "already the leader"}),
        );
    }
    let started = Instant::now();
    tracing::warn!(force, "manual failover: this node stands for election now");
    crate::http::send_admin(shared, failover::AdminCommand::Campaign { force })
        .await
        .map_err(|e| ("refused", e))?;
    let limit = shared.cfg.failover.election_timeout * 2 + Duration::from_secs(2);
    let mut rx = shared.role_tx.subscribe();
    let waited = tokio::time::timeout(limit, rx.wait_for(|r| r.role == Role::Leader)).await;
    match waited {
        Ok(Ok(r)) => Ok(json!({"leader": shared.cfg.node_id, "term": r.term, "elapsed_ms": started.elapsed().as_millis() as u64})),
        _ => Err((
            "not_elected",
            format!(
                "{} was not elected within {limit:?}: the voters refused it (it may miss acknowledged writes, or another node leads); use --force to promote it anyway",
                shared.cfg.node_id
            ),
        )),
    }
}
