//! Prometheus metrics of a node (`GET /metrics`), named by Prometheus
//! conventions: base units, `_total` counters, `_seconds`, `_bytes`.
//! The full list with meanings is in docs/metrics.md.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric of a node, registered in its own registry.
pub struct Metrics {
    registry: Registry,
    /// 1 for the role this node has, 0 for the others (label `role`).
    pub role: IntGaugeVec,
    /// Current term.
    pub term: IntGauge,
    /// Times this node saw the leader change.
    pub leader_changes_total: IntCounter,
    /// Elections this node started.
    pub elections_started_total: IntCounter,
    /// Elections this node won.
    pub elections_won_total: IntCounter,
    /// Votes and pre-votes this node refused (label `reason`: the refusal name).
    pub votes_refused_total: IntCounterVec,
    /// LSNs of this node (label `kind`: write, flush, commit, apply).
    pub lsn: IntGaugeVec,
    /// Per follower lag in bytes (leader only; label `follower`).
    pub follower_lag_bytes: IntGaugeVec,
    /// Per follower lag in seconds (labels `follower`, `kind`: write, flush, replay).
    pub follower_lag_seconds: prometheus::GaugeVec,
    /// Per follower sync state, 1 for the current one (labels `follower`, `sync_state`).
    pub follower_sync_state: IntGaugeVec,
    /// WAL bytes appended by this node (leader writes and received WAL).
    pub wal_appended_bytes_total: IntCounter,
    /// WAL segments on disk.
    pub wal_segments: IntGauge,
    /// Bytes of WAL retained.
    pub wal_retained_bytes: IntGauge,
    /// Time of one WAL flush (fdatasync).
    pub wal_fsync_duration_seconds: Histogram,
    /// Time a write waited for its acknowledgement (label `ack`).
    pub ack_wait_seconds: HistogramVec,
    /// Records applied to the state machine.
    pub records_applied: IntCounter,
    /// Client requests by operation and outcome.
    pub client_requests_total: IntCounterVec,
    /// Replication connections started (label `side`: sender, receiver).
    pub replication_connections_total: IntCounterVec,
    /// WAL bytes shipped to followers.
    pub shipped_bytes_total: IntCounter,
    /// WAL bytes received from the leader.
    pub received_bytes_total: IntCounter,
    /// Bytes of acknowledged-at-leader WAL lost by an async failover.
    pub failover_lost_bytes_total: IntCounter,
    /// Async failovers that lost writes.
    pub failover_lost_writes_total: IntCounter,
    /// Followers that need a rebuild (leader only).
    pub followers_needing_rebuild: IntGauge,
    /// 1 while a follower streams from this leader (label `follower`).
    pub follower_connected: IntGaugeVec,
    /// `wal.max_retained` in bytes (for retention alerts).
    pub wal_max_retained_bytes: IntGauge,
    /// Rebuilds of this node from the leader's checkpoint started (attempts).
    pub rebuilds_started_total: IntCounter,
    /// Rebuilds of this node that completed (state installed, streaming again).
    pub rebuilds_completed_total: IntCounter,
    /// Rebuild attempts of this node that failed (retried).
    pub rebuilds_failed_total: IntCounter,
    /// Checkpoint bytes received by rebuilds of this node.
    pub rebuild_received_bytes_total: IntCounter,
    /// Base backups (checkpoint transfers) this node served as leader.
    pub basebackups_served_total: IntCounter,
    /// Checkpoint bytes this node sent to rebuilding followers.
    pub basebackup_sent_bytes_total: IntCounter,
    /// Checkpoints written.
    pub checkpoints_total: IntCounter,
    /// Checkpoints that failed.
    pub checkpoint_failures_total: IntCounter,
    /// LSN of the newest checkpoint.
    pub checkpoint_lsn: IntGauge,
    /// Size of the newest checkpoint file.
    pub checkpoint_bytes: IntGauge,
    /// Duration of the last checkpoint (snapshot + write + fsync).
    pub checkpoint_duration_seconds: prometheus::Gauge,
    /// Records replayed from the local WAL at start-up (after the checkpoint).
    pub startup_replayed_records: IntGauge,
    /// WAL segments removed by retention.
    pub wal_removed_segments_total: IntCounter,
    /// WAL segments removed by retention whose disk blocks are still held
    /// because key-value values share them (at least half live).
    pub kv_pinned_wal_segments: IntGauge,
    /// Key-value value bytes copied out of sparse removed WAL segments.
    pub kv_released_value_bytes_total: IntCounter,
    /// Per follower, WAL bytes it may still fall behind before it is cut loose
    /// (leader only; label `follower`).
    pub follower_safe_wal_size_bytes: IntGaugeVec,
    /// Connections and requests refused, or closed by a limit (labels
    /// `listener`: binary, http; `reason`: unauthorized, wrong_cluster,
    /// unknown_member, tls_handshake, certificate_mismatch,
    /// too_many_connections, handshake_timeout, frame_too_large, too_large, ...).
    pub connections_refused_total: IntCounterVec,
    /// Open connections (label `listener`: binary, http).
    pub open_connections: IntGaugeVec,
    /// Binary client requests in flight, all connections together.
    pub client_requests_in_flight: IntGauge,
    /// 1 once this node's WAL failed (a failed fsync/fdatasync or a crashed
    /// append poisoned it): the node acknowledges nothing until it is restarted.
    pub wal_failed: IntGauge,
    /// Writes (and term-start records) refused because the disk was full when the
    /// WAL needed a new segment (`no_space`); they succeed again once space returns.
    pub wal_no_space_errors_total: IntCounter,
    /// Resolved handles of the per-request series (see [`Metrics::client_request`]).
    hot: HotHandles,
}

/// Operations whose `walship_client_requests_total{op, outcome="ok"}` handle is
/// cached (every client operation of the binary protocol and the HTTP API).
const HOT_OPS: [&str; 7] = [
    "put",
    "delete",
    "append",
    "get",
    "put_batch",
    "append_batch",
    "status",
];

/// Handles of the series every write touches, resolved on first use and kept:
/// `with_label_values` hashes the labels (SipHash) and takes the vector's lock
/// on every call, which the write paths paid twice per write. A handle shares
/// its counter with the vector, so `/metrics` shows the same series as before
/// (one appears when first used, as with `with_label_values`).
#[derive(Default)]
struct HotHandles {
    /// `client_requests_total{op = HOT_OPS[i], outcome = "ok"}`.
    requests_ok: [OnceLock<IntCounter>; HOT_OPS.len()],
    /// `ack_wait_seconds{ack}` per `AckLevel::ALL` index.
    ack_wait: [OnceLock<Histogram>; 4],
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

impl Metrics {
    /// Create and register every metric. Panics only on a programming error
    /// (a duplicate or malformed metric name), never on input.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let lat_buckets = vec![
            0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            0.5, 1.0, 2.5, 5.0,
        ];
        let m = Metrics {
            role: gauge_vec("walship_role", "1 for this node's current role", &["role"]),
            term: IntGauge::new("walship_term", "Current term").unwrap_or_else(|e| panic!("{e}")),
            leader_changes_total: counter(
                "walship_leader_changes_total",
                "Leader changes seen by this node",
            ),
            elections_started_total: counter(
                "walship_elections_started_total",
                "Elections this node started",
            ),
            elections_won_total: counter("walship_elections_won_total", "Elections this node won"),
            votes_refused_total: IntCounterVec::new(
                Opts::new(
                    "walship_votes_refused_total",
                    "Vote and pre-vote requests this node refused, by reason",
                ),
                &["reason"],
            )
            .unwrap_or_else(|e| panic!("{e}")),
            lsn: gauge_vec(
                "walship_lsn_bytes",
                "LSN (byte position in the WAL) of this node, by kind: write, flush, commit, apply",
                &["kind"],
            ),
            follower_lag_bytes: gauge_vec(
                "walship_follower_lag_bytes",
                "Leader write LSN minus the follower's replayed LSN",
                &["follower"],
            ),
            follower_lag_seconds: prometheus::GaugeVec::new(
                Opts::new(
                    "walship_follower_lag_seconds",
                    "Follower lag in seconds (PostgreSQL's write_lag, flush_lag, replay_lag)",
                ),
                &["follower", "kind"],
            )
            .unwrap_or_else(|e| panic!("{e}")),
            follower_sync_state: gauge_vec(
                "walship_follower_sync_state",
                "1 for the follower's current sync state (async, potential, sync, quorum)",
                &["follower", "sync_state"],
            ),
            wal_appended_bytes_total: counter(
                "walship_wal_appended_bytes_total",
                "WAL bytes appended on this node",
            ),
            wal_segments: IntGauge::new("walship_wal_segments", "WAL segments on disk")
                .unwrap_or_else(|e| panic!("{e}")),
            wal_retained_bytes: IntGauge::new("walship_wal_retained_bytes", "WAL bytes retained")
                .unwrap_or_else(|e| panic!("{e}")),
            wal_fsync_duration_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "walship_wal_fsync_duration_seconds",
                    "Duration of one WAL flush (fdatasync)",
                )
                .buckets(lat_buckets.clone()),
            )
            .unwrap_or_else(|e| panic!("{e}")),
            ack_wait_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "walship_ack_wait_seconds",
                    "Time a write waited for its acknowledgement, by ack level",
                )
                .buckets(lat_buckets),
                &["ack"],
            )
            .unwrap_or_else(|e| panic!("{e}")),
            records_applied: counter(
                "walship_records_applied_total",
                "Records applied to the state machine",
            ),
            client_requests_total: IntCounterVec::new(
                Opts::new(
                    "walship_client_requests_total",
                    "Client requests by operation and outcome",
                ),
                &["op", "outcome"],
            )
            .unwrap_or_else(|e| panic!("{e}")),
            replication_connections_total: IntCounterVec::new(
                Opts::new(
                    "walship_replication_connections_total",
                    "Replication connections (re)started, by side",
                ),
                &["side"],
            )
            .unwrap_or_else(|e| panic!("{e}")),
            shipped_bytes_total: counter(
                "walship_shipped_bytes_total",
                "WAL bytes shipped to followers",
            ),
            received_bytes_total: counter(
                "walship_received_bytes_total",
                "WAL bytes received from the leader",
            ),
            failover_lost_bytes_total: counter(
                "walship_failover_lost_bytes_total",
                "WAL bytes flushed by an old leader and lost by an async failover",
            ),
            failover_lost_writes_total: counter(
                "walship_failover_lost_writes_total",
                "Async failovers that lost writes acknowledged by the old leader",
            ),
            followers_needing_rebuild: IntGauge::new(
                "walship_followers_needing_rebuild",
                "Followers whose WAL the leader no longer holds",
            )
            .unwrap_or_else(|e| panic!("{e}")),
            follower_connected: gauge_vec(
                "walship_follower_connected",
                "1 while the follower has a replication connection to this leader",
                &["follower"],
            ),
            wal_max_retained_bytes: IntGauge::new(
                "walship_wal_max_retained_bytes",
                "Configured wal.max_retained in bytes",
            )
            .unwrap_or_else(|e| panic!("{e}")),
            rebuilds_started_total: counter(
                "walship_rebuilds_started_total",
                "Rebuilds of this node from the leader's checkpoint started (each attempt)",
            ),
            rebuilds_completed_total: counter(
                "walship_rebuilds_completed_total",
                "Rebuilds of this node that completed (checkpoint installed, WAL reset, streaming)",
            ),
            rebuilds_failed_total: counter(
                "walship_rebuilds_failed_total",
                "Rebuild attempts of this node that failed (retried)",
            ),
            rebuild_received_bytes_total: counter(
                "walship_rebuild_received_bytes_total",
                "Checkpoint bytes received by rebuilds of this node",
            ),
            basebackups_served_total: counter(
                "walship_basebackups_served_total",
                "Checkpoint transfers (base backups) this leader served to rebuilding nodes",
            ),
            basebackup_sent_bytes_total: counter(
                "walship_basebackup_sent_bytes_total",
                "Checkpoint bytes this leader sent to rebuilding nodes",
            ),
            checkpoints_total: counter("walship_checkpoints_total", "Checkpoints written"),
            checkpoint_failures_total: counter(
                "walship_checkpoint_failures_total",
                "Checkpoints that failed (the previous one stays in use)",
            ),
            checkpoint_lsn: IntGauge::new(
                "walship_checkpoint_lsn_bytes",
                "LSN covered by the newest checkpoint",
            )
            .unwrap_or_else(|e| panic!("{e}")),
            checkpoint_bytes: IntGauge::new(
                "walship_checkpoint_bytes",
                "Size of the newest checkpoint file",
            )
            .unwrap_or_else(|e| panic!("{e}")),
            checkpoint_duration_seconds: prometheus::Gauge::new(
                "walship_checkpoint_duration_seconds",
                "Duration of the last checkpoint (snapshot, write, fsync)",
            )
            .unwrap_or_else(|e| panic!("{e}")),
            startup_replayed_records: IntGauge::new(
                "walship_startup_replayed_records",
                "Records replayed from the local WAL at start-up, after the loaded checkpoint",
            )
            .unwrap_or_else(|e| panic!("{e}")),
            wal_removed_segments_total: counter(
                "walship_wal_removed_segments_total",
                "WAL segments removed by retention",
            ),
            kv_pinned_wal_segments: gauge(
                "walship_kv_pinned_wal_segments",
                "WAL segments removed by retention whose disk blocks key-value values still hold (each at least half live)",
            ),
            kv_released_value_bytes_total: counter(
                "walship_kv_released_value_bytes_total",
                "key-value value bytes copied out of removed WAL segments less than half live, to let them go",
            ),
            follower_safe_wal_size_bytes: gauge_vec(
                "walship_follower_safe_wal_size_bytes",
                "WAL bytes the follower may still fall behind before it is cut loose (wal.max_retained)",
                &["follower"],
            ),
            connections_refused_total: IntCounterVec::new(
                Opts::new(
                    "walship_connections_refused_total",
                    "Connections and requests refused (security) or closed by a [limits] bound, by listener and reason",
                ),
                &["listener", "reason"],
            )
            .unwrap_or_else(|e| panic!("{e}")),
            open_connections: gauge_vec(
                "walship_open_connections",
                "Open connections, by listener (binary, http)",
                &["listener"],
            ),
            client_requests_in_flight: IntGauge::new(
                "walship_client_requests_in_flight",
                "Binary client requests being executed, all connections together",
            )
            .unwrap_or_else(|e| panic!("{e}")),
            wal_failed: IntGauge::new(
                "walship_wal_failed",
                "1 once the WAL failed (fsync error): the node acknowledges nothing until restarted",
            )
            .unwrap_or_else(|e| panic!("{e}")),
            wal_no_space_errors_total: counter(
                "walship_wal_no_space_errors_total",
                "Writes refused because the disk was full when the WAL needed a new segment",
            ),
            hot: HotHandles::default(),
            registry,
        };
        // Pre-create the outcomes alerts watch, so that the first one counts
        // as an increase from 0.
        for op in ["put", "delete", "append"] {
            for outcome in ["ok", "ack_timeout"] {
                m.client_requests_total.with_label_values(&[op, outcome]);
            }
        }
        for listener in ["binary", "http"] {
            m.open_connections.with_label_values(&[listener]);
            m.connections_refused_total
                .with_label_values(&[listener, "too_many_connections"]);
        }
        let r = &m.registry;
        let all: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.role.clone()),
            Box::new(m.term.clone()),
            Box::new(m.leader_changes_total.clone()),
            Box::new(m.elections_started_total.clone()),
            Box::new(m.elections_won_total.clone()),
            Box::new(m.votes_refused_total.clone()),
            Box::new(m.lsn.clone()),
            Box::new(m.follower_lag_bytes.clone()),
            Box::new(m.follower_lag_seconds.clone()),
            Box::new(m.follower_sync_state.clone()),
            Box::new(m.wal_appended_bytes_total.clone()),
            Box::new(m.wal_segments.clone()),
            Box::new(m.wal_retained_bytes.clone()),
            Box::new(m.wal_fsync_duration_seconds.clone()),
            Box::new(m.ack_wait_seconds.clone()),
            Box::new(m.records_applied.clone()),
            Box::new(m.client_requests_total.clone()),
            Box::new(m.replication_connections_total.clone()),
            Box::new(m.shipped_bytes_total.clone()),
            Box::new(m.received_bytes_total.clone()),
            Box::new(m.failover_lost_bytes_total.clone()),
            Box::new(m.failover_lost_writes_total.clone()),
            Box::new(m.followers_needing_rebuild.clone()),
            Box::new(m.follower_connected.clone()),
            Box::new(m.wal_max_retained_bytes.clone()),
            Box::new(m.rebuilds_started_total.clone()),
            Box::new(m.rebuilds_completed_total.clone()),
            Box::new(m.rebuilds_failed_total.clone()),
            Box::new(m.rebuild_received_bytes_total.clone()),
            Box::new(m.basebackups_served_total.clone()),
            Box::new(m.basebackup_sent_bytes_total.clone()),
            Box::new(m.checkpoints_total.clone()),
            Box::new(m.checkpoint_failures_total.clone()),
            Box::new(m.checkpoint_lsn.clone()),
            Box::new(m.checkpoint_bytes.clone()),
            Box::new(m.checkpoint_duration_seconds.clone()),
            Box::new(m.startup_replayed_records.clone()),
            Box::new(m.wal_removed_segments_total.clone()),
            Box::new(m.kv_pinned_wal_segments.clone()),
            Box::new(m.kv_released_value_bytes_total.clone()),
            Box::new(m.follower_safe_wal_size_bytes.clone()),
            Box::new(m.connections_refused_total.clone()),
            Box::new(m.open_connections.clone()),
            Box::new(m.client_requests_in_flight.clone()),
            Box::new(m.wal_failed.clone()),
            Box::new(m.wal_no_space_errors_total.clone()),
        ];
        for c in all {
            r.register(c)
                .unwrap_or_else(|e| panic!("registering a metric: {e}"));
        }
        m
    }

    /// Count one client request of operation `op` with `outcome` ("ok" or an
    /// error code) in `walship_client_requests_total`. The "ok" series of the
    /// client operations are resolved once and cached (no label hashing on the
    /// write path); other outcomes are rare and resolved per call.
    pub fn client_request(&self, op: &str, outcome: &str) {
        if outcome == "ok" {
            if let Some(i) = HOT_OPS.iter().position(|o| *o == op) {
                self.hot.requests_ok[i]
                    .get_or_init(|| self.client_requests_total.with_label_values(&[op, "ok"]))
                    .inc();
                return;
            }
        }
        self.client_requests_total
            .with_label_values(&[op, outcome])
            .inc();
    }

    /// The `walship_ack_wait_seconds{ack = level}` histogram, resolved once.
    pub fn ack_wait(&self, level: shipper::AckLevel) -> &Histogram {
        let i = shipper::AckLevel::ALL
            .iter()
            .position(|l| *l == level)
            .unwrap_or(0);
        self.hot.ack_wait[i].get_or_init(|| {
            self.ack_wait_seconds
                .with_label_values(&[shipper::AckLevel::ALL[i].as_str()])
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics; /metrics answers with what was encoded");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_handles_count_in_the_labelled_series() {
        let m = Metrics::new();
        m.client_request("put", "ok");
        m.client_request("put", "ok");
        m.client_request("put_batch", "ok");
        m.client_request("put", "ack_timeout");
        m.client_request("other_op", "ok");
        let c = |op: &str, outcome: &str| {
            m.client_requests_total
                .with_label_values(&[op, outcome])
                .get()
        };
        assert_eq!(c("put", "ok"), 2);
        assert_eq!(c("put_batch", "ok"), 1);
        assert_eq!(c("put", "ack_timeout"), 1);
        assert_eq!(c("other_op", "ok"), 1);
        for level in shipper::AckLevel::ALL {
            m.ack_wait(level).observe(0.001);
            m.ack_wait(level).observe(0.002);
            let h = m.ack_wait_seconds.with_label_values(&[level.as_str()]);
            assert_eq!(h.get_sample_count(), 2, "{level}");
        }
        let text = m.render();
        assert!(
            text.contains("walship_client_requests_total{op=\"put\",outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("walship_ack_wait_seconds_count{ack=\"remote_flush\"} 2"),
            "{text}"
        );
    }
}
