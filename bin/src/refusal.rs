//! Refused connections and requests: counted in
//! `walship_connections_refused_total{listener, reason}` and logged at WARN
//! with the peer address and the reason, never with a presented token.
//!
//! A flood of refused connections must not flood the log: at most
//! [`LOG_BURST`] refusals are logged per [`LOG_WINDOW`]; the next line logged
//! after a quiet window says how many were not (the counter counts them all).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Refusals logged per window at most.
pub const LOG_BURST: u32 = 20;
/// The rate-limit window.
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

/// The listener a refusal happened on (metric label `listener`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The binary protocol port (`listen`).
    Binary,
    /// The HTTP port (`http_listen`).
    Http,
}

impl Listener {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Binary => "binary",
            Listener::Http => "http",
        }
    }
}

/// Rate limiter of refusal log lines (one per node).
pub struct RefusalLog {
    state: Mutex<Window>,
}

struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            state: Mutex::new(Window {
                start: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }
}

impl RefusalLog {
    /// Whether to log this refusal now: `Some(n)` yes, `n` refusals were not
    /// logged before it; `None`: suppressed (counted for the next line).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock();
        if now.duration_since(w.start) >= LOG_WINDOW {
            w.start = now;
            w.logged = 0;
        }
        if w.logged < LOG_BURST {
            w.logged += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

/// Count and (rate-limited) log one refusal. `reason` is the metric label
/// (`unauthorized`, `wrong_cluster`, `unknown_member`, `tls_handshake`,
/// `certificate_mismatch`, ...); `detail` the operator's explanation, which
/// must not contain a secret.
pub fn record(
    shared: &crate::node::Shared,
    listener: Listener,
    reason: &str,
    peer: Option<SocketAddr>,
    detail: &str,
) {
    shared
        .metrics
        .connections_refused_total
        .with_label_values(&[listener.as_str(), reason])
        .inc();
    if let Some(not_logged) = shared.refusal_log.admit(Instant::now()) {
        let peer = peer
            .map(|p| p.to_string())
            .unwrap_or_else(|| "unknown".into());
        tracing::warn!(
            listener = listener.as_str(),
            %peer,
            reason,
            not_logged,
            "refused {peer} on the {} port ({reason}): {detail}; the connection is closed, the node keeps serving",
            listener.as_str()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_at_most_burst_times_per_window() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        for _ in 0..LOG_BURST {
            assert_eq!(log.admit(t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(log.admit(t0 + Duration::from_secs(1)), None);
        }
        // After the window the first line reports what was not logged.
        assert_eq!(
            log.admit(t0 + LOG_WINDOW + Duration::from_secs(1)),
            Some(1000)
        );
        assert_eq!(log.admit(t0 + LOG_WINDOW + Duration::from_secs(1)), Some(0));
    }
}
