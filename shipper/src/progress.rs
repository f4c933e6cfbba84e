//! Follower progress and replication lag, measured the PostgreSQL way.
//!
//! The leader records `(lsn, time)` samples as its WAL grows ([`Progress::record_local_write`],
//! kept in a bounded [`LagTracker`]). When a follower reports that it has written / flushed /
//! applied up to `L` at time `t`, its `write_lag` / `flush_lag` / `replay_lag` is
//! `t − time(latest sample with lsn <= L)`: how long ago the leader wrote the newest WAL the
//! follower now has. Like PostgreSQL, once a follower reports the leader's end of WAL twice
//! in a row with nothing new written in between (an idle cluster), its lag is 0 rather than a
//! stale or growing figure. Lag is only updated by reports; it never grows on its own.
//!
//! Time is passed in as `now_us` (microseconds on any monotonic clock) so tests are
//! deterministic.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;

use crate::error::{Result, ShipperError};
use crate::gate::FollowerPosition;

/// A follower's replication state, as shown in /status and as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum FollowerState {
    /// Connected, handshake / start position being negotiated.
    #[default]
    Starting,
    /// Streaming WAL but still behind the leader's end of WAL by more than it just sent.
    Catchup,
    /// Streaming and caught up (the normal state).
    Streaming,
    /// Not connected.
    Disconnected,
    /// Needs WAL the leader no longer retains: must be rebuilt from a checkpoint.
    NeedsRebuild,
    /// Being rebuilt from the leader's checkpoint.
    Rebuilding,
    /// Shutting down cleanly.
    Stopping,
}

impl FollowerState {
    /// All states.
    pub const ALL: [FollowerState; 7] = [
        FollowerState::Starting,
        FollowerState::Catchup,
        FollowerState::Streaming,
        FollowerState::Disconnected,
        FollowerState::NeedsRebuild,
        FollowerState::Rebuilding,
        FollowerState::Stopping,
    ];

    /// The stable string: `starting`, `catchup`, `streaming`, `disconnected`,
    /// `needs_rebuild`, `rebuilding`, `stopping`.
    pub fn as_str(self) -> &'static str {
        match self {
            FollowerState::Starting => "starting",
            FollowerState::Catchup => "catchup",
            FollowerState::Streaming => "streaming",
            FollowerState::Disconnected => "disconnected",
            FollowerState::NeedsRebuild => "needs_rebuild",
            FollowerState::Rebuilding => "rebuilding",
            FollowerState::Stopping => "stopping",
        }
    }

    /// Whether a follower in this state counts for the commit gate's policy
    /// ([`FollowerPosition::connected`]): `streaming` or `stopping`, as PostgreSQL counts only
    /// such walsenders as synchronous candidates (a follower in catch-up would stall commits).
    pub fn is_sync_eligible(self) -> bool {
        matches!(self, FollowerState::Streaming | FollowerState::Stopping)
    }
}

impl fmt::Display for FollowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FollowerState {
    type Err = ShipperError;

    /// Parses the strings of [`FollowerState::as_str`].
    fn from_str(s: &str) -> Result<Self> {
        FollowerState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ShipperError::UnknownFollowerState(s.to_string()))
    }
}

/// A bounded history of `(lsn, time)`: when the leader's WAL reached `lsn`.
///
/// Bounds: at most `capacity` samples. Samples closer than `min_interval_us` to the previous
/// one are coalesced (dropped; the lag error this adds is below `min_interval_us`). When full,
/// every second sample of the older half is dropped, so recent history stays fine-grained and
/// old history thins out geometrically instead of being forgotten (a far-behind follower still
/// gets a lag figure, with an error proportional to its age).
#[derive(Clone, Debug)]
pub struct LagTracker {
    samples: VecDeque<(u64, u64)>,
    capacity: usize,
    min_interval_us: u64,
    latest_lsn: u64,
}

impl Default for LagTracker {
    fn default() -> Self {
        LagTracker::new(Self::DEFAULT_CAPACITY, Self::DEFAULT_MIN_INTERVAL_US)
    }
}

impl LagTracker {
    /// Default number of samples kept.
    pub const DEFAULT_CAPACITY: usize = 8192;
    /// Default coalescing interval (1 ms).
    pub const DEFAULT_MIN_INTERVAL_US: u64 = 1_000;

    /// A tracker keeping at most `capacity` samples (at least 4) spaced at least
    /// `min_interval_us` apart.
    pub fn new(capacity: usize, min_interval_us: u64) -> Self {
        let capacity = capacity.max(4);
        LagTracker {
            samples: VecDeque::with_capacity(capacity),
            capacity,
            min_interval_us,
            latest_lsn: 0,
        }
    }

    /// The leader's WAL reached `lsn` at `now_us`. Ignored unless `lsn` is beyond the latest
    /// recorded LSN; a clock that steps back is treated as standing still.
    pub fn record(&mut self, lsn: u64, now_us: u64) {
        if lsn <= self.latest_lsn {
            return;
        }
        self.latest_lsn = lsn;
        let now = match self.samples.back() {
            Some(&(_, t)) if now_us < t.saturating_add(self.min_interval_us) => return,
            Some(&(_, t)) => now_us.max(t),
            None => now_us,
        };
        if self.samples.len() >= self.capacity {
            let half = self.samples.len() / 2;
            let mut i = 0;
            self.samples.retain(|_| {
                let keep = i == 0 || i >= half || i % 2 == 0;
                i += 1;
                keep
            });
        }
        self.samples.push_back((lsn, now));
    }

    /// The newest LSN recorded (the leader's end of WAL as far as lag is concerned).
    pub fn latest_lsn(&self) -> u64 {
        self.latest_lsn
    }

    /// Number of samples held (always `<= capacity`).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True if no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// When the leader's WAL reached the newest sample at or below `lsn`; for an `lsn` older
    /// than every sample, the oldest sample's time (so lags computed from it are lower
    /// bounds). `None` if there are no samples.
    pub fn written_at(&self, lsn: u64) -> Option<u64> {
        let idx = self.samples.partition_point(|&(l, _)| l <= lsn);
        if idx == 0 {
            self.samples.front().map(|&(_, t)| t)
        } else {
            Some(self.samples[idx - 1].1)
        }
    }

    /// Lag of a follower that reports `lsn` at `now_us`, not applying the idle rule (see
    /// [`Progress::on_status`]): `now_us − written_at(lsn)`, 0 when no sample exists.
    pub fn lag_us(&self, lsn: u64, now_us: u64) -> u64 {
        self.written_at(lsn).map_or(0, |t| now_us.saturating_sub(t))
    }
}

/// One follower's progress as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerProgress {
    id: String,
    state: FollowerState,
    write_lsn: u64,
    flush_lsn: u64,
    apply_lsn: u64,
    /// write / flush / replay lag in µs; `None` until the first report.
    lags_us: [Option<u64>; 3],
    last_status_us: Option<u64>,
}

impl FollowerProgress {
    fn new(id: &str) -> Self {
        FollowerProgress {
            id: id.to_string(),
            state: FollowerState::Starting,
            write_lsn: 0,
            flush_lsn: 0,
            apply_lsn: 0,
            lags_us: [None; 3],
            last_status_us: None,
        }
    }

    /// Follower id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Current state.
    pub fn state(&self) -> FollowerState {
        self.state
    }
    /// Last reported write LSN.
    pub fn write_lsn(&self) -> u64 {
        self.write_lsn
    }
    /// Last reported flush LSN.
    pub fn flush_lsn(&self) -> u64 {
        self.flush_lsn
    }
    /// Last reported apply (replay) LSN.
    pub fn apply_lsn(&self) -> u64 {
        self.apply_lsn
    }
    /// PostgreSQL `write_lag` in µs (`None` before the first report).
    pub fn write_lag_us(&self) -> Option<u64> {
        self.lags_us[0]
    }
    /// PostgreSQL `flush_lag` in µs (`None` before the first report).
    pub fn flush_lag_us(&self) -> Option<u64> {
        self.lags_us[1]
    }
    /// PostgreSQL `replay_lag` in µs (`None` before the first report).
    pub fn replay_lag_us(&self) -> Option<u64> {
        self.lags_us[2]
    }
    /// When the last status report arrived (`now_us` of [`Progress::on_status`]).
    pub fn last_status_us(&self) -> Option<u64> {
        self.last_status_us
    }

    /// Bytes of leader WAL the follower has not flushed: `leader_write_lsn − flush_lsn`
    /// (saturating). This is the `lag_bytes` of /status: what a failover to it would lose.
    pub fn lag_bytes(&self, leader_write_lsn: u64) -> u64 {
        leader_write_lsn.saturating_sub(self.flush_lsn)
    }

    /// Bytes of leader WAL the follower has not applied: `leader_write_lsn − apply_lsn`.
    pub fn replay_lag_bytes(&self, leader_write_lsn: u64) -> u64 {
        leader_write_lsn.saturating_sub(self.apply_lsn)
    }

    /// The `lag_seconds` of /status: the flush lag (pairs with [`Self::lag_bytes`]); 0 before
    /// the first report.
    pub fn lag_seconds(&self) -> f64 {
        self.flush_lag_us().unwrap_or(0) as f64 / 1e6
    }

    /// The position to give the commit gate: connected iff the state is sync-eligible.
    pub fn gate_position(&self) -> FollowerPosition {
        FollowerPosition {
            connected: self.state.is_sync_eligible(),
            write_lsn: self.write_lsn,
            flush_lsn: self.flush_lsn,
            apply_lsn: self.apply_lsn,
        }
    }
}

/// A follower's figures as /status shows them (`sync_state` comes from the commit gate).
#[derive(Clone, Debug, PartialEq)]
pub struct FollowerReport {
    /// Follower id.
    pub id: String,
    /// [`FollowerState::as_str`].
    pub state: &'static str,
    /// Last reported write LSN.
    pub write_lsn: u64,
    /// Last reported flush LSN.
    pub flush_lsn: u64,
    /// Last reported apply LSN.
    pub apply_lsn: u64,
    /// Leader end of WAL − flush LSN.
    pub lag_bytes: u64,
    /// Leader end of WAL − apply LSN.
    pub replay_lag_bytes: u64,
    /// PostgreSQL `write_lag`, µs.
    pub write_lag_us: Option<u64>,
    /// PostgreSQL `flush_lag`, µs.
    pub flush_lag_us: Option<u64>,
    /// PostgreSQL `replay_lag`, µs.
    pub replay_lag_us: Option<u64>,
    /// The flush lag in seconds (0 before the first report).
    pub lag_seconds: f64,
}

/// Progress of every follower plus the leader's `(lsn, time)` history (DESIGN "Crate
/// contracts": `Progress`). Not thread-safe by itself; share it behind a mutex.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    tracker: LagTracker,
    followers: BTreeMap<String, FollowerProgress>,
}

impl Progress {
    /// Empty progress with a default [`LagTracker`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Empty progress with the given tracker (capacity / coalescing interval).
    pub fn with_tracker(tracker: LagTracker) -> Self {
        Progress {
            tracker,
            followers: BTreeMap::new(),
        }
    }

    /// The leader's WAL grew to `write_lsn` at `now_us`. Call after each append or group of
    /// appends (cheap: O(1) amortised).
    pub fn record_local_write(&mut self, write_lsn: u64, now_us: u64) {
        self.tracker.record(write_lsn, now_us);
    }

    /// The leader's end of WAL as recorded.
    pub fn leader_write_lsn(&self) -> u64 {
        self.tracker.latest_lsn()
    }

    /// The sample history.
    pub fn tracker(&self) -> &LagTracker {
        &self.tracker
    }

    /// Sets a follower's state, adding the follower (`starting`, LSNs 0) if unknown.
    pub fn set_state(&mut self, id: &str, state: FollowerState) -> &FollowerProgress {
        let f = self
            .followers
            .entry(id.to_string())
            .or_insert_with(|| FollowerProgress::new(id));
        f.state = state;
        f
    }

    /// A status report from follower `id` (adding it if unknown): its write / flush / apply
    /// LSNs, received at `now_us`. Updates the LSNs as reported and each lag:
    /// * 0 if the follower was already at the leader's end of WAL at its previous report and
    ///   still is (idle: nothing new to measure, so no stale or growing lag);
    /// * else `now_us − time the leader wrote the newest sample <= reported LSN`.
    pub fn on_status(
        &mut self,
        id: &str,
        write_lsn: u64,
        flush_lsn: u64,
        apply_lsn: u64,
        now_us: u64,
    ) -> &FollowerProgress {
        let tracker = &self.tracker;
        let f = self
            .followers
            .entry(id.to_string())
            .or_insert_with(|| FollowerProgress::new(id));
        let end = tracker.latest_lsn();
        let old = [f.write_lsn, f.flush_lsn, f.apply_lsn];
        let new = [write_lsn, flush_lsn, apply_lsn];
        for i in 0..3 {
            let idle = new[i] >= end && old[i] >= end && f.lags_us[i].is_some();
            f.lags_us[i] = Some(if idle {
                0
            } else {
                tracker.lag_us(new[i], now_us)
            });
        }
        f.write_lsn = write_lsn;
        f.flush_lsn = flush_lsn;
        f.apply_lsn = apply_lsn;
        f.last_status_us = Some(now_us);
        f
    }

    /// Every follower's figures for /status and metrics, by id (`lag_bytes` against the
    /// recorded leader end of WAL).
    pub fn report(&self) -> Vec<FollowerReport> {
        let end = self.leader_write_lsn();
        self.followers
            .values()
            .map(|f| FollowerReport {
                id: f.id.clone(),
                state: f.state.as_str(),
                write_lsn: f.write_lsn,
                flush_lsn: f.flush_lsn,
                apply_lsn: f.apply_lsn,
                lag_bytes: f.lag_bytes(end),
                replay_lag_bytes: f.replay_lag_bytes(end),
                write_lag_us: f.write_lag_us(),
                flush_lag_us: f.flush_lag_us(),
                replay_lag_us: f.replay_lag_us(),
                lag_seconds: f.lag_seconds(),
            })
            .collect()
    }

    /// Forgets a follower.
    pub fn remove(&mut self, id: &str) -> Option<FollowerProgress> {
        self.followers.remove(id)
    }

    /// One follower's progress.
    pub fn follower(&self, id: &str) -> Option<&FollowerProgress> {
        self.followers.get(id)
    }

    /// All followers, by id.
    pub fn followers(&self) -> impl Iterator<Item = &FollowerProgress> {
        self.followers.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_strings_round_trip() {
        for s in FollowerState::ALL {
            assert_eq!(s.as_str().parse::<FollowerState>(), Ok(s));
        }
        assert_eq!(FollowerState::NeedsRebuild.as_str(), "needs_rebuild");
        assert!("fenced".parse::<FollowerState>().is_err());
        assert!(FollowerState::Streaming.is_sync_eligible());
        assert!(!FollowerState::Catchup.is_sync_eligible());
    }

    #[test]
    fn tracker_lookup_and_coalescing() {
        let mut t = LagTracker::new(16, 100);
        assert_eq!(t.written_at(5), None);
        t.record(100, 1_000);
        t.record(150, 1_050); // within 100 µs: coalesced
        t.record(200, 1_100);
        t.record(200, 5_000); // no progress: ignored
        t.record(300, 1_000); // clock stepped back: coalesced
        assert_eq!(t.len(), 2);
        assert_eq!(t.latest_lsn(), 300);
        assert_eq!(t.written_at(99), Some(1_000)); // older than every sample: lower bound
        assert_eq!(t.written_at(100), Some(1_000));
        assert_eq!(t.written_at(199), Some(1_000));
        assert_eq!(t.written_at(250), Some(1_100));
        assert_eq!(t.lag_us(250, 1_600), 500);
    }

    #[test]
    fn tracker_is_bounded_and_thins_old_history() {
        let mut t = LagTracker::new(64, 1);
        for i in 1..=100_000u64 {
            t.record(i * 10, i * 10);
            assert!(t.len() <= 64);
        }
        // Oldest sample is kept; recent history is exact.
        assert_eq!(t.written_at(10), Some(10));
        assert_eq!(t.written_at(1_000_000), Some(1_000_000));
        assert_eq!(t.written_at(999_995), Some(999_990));
        // Lookups stay ordered (monotone in LSN).
        let mut prev = 0;
        for lsn in (0..1_000_000).step_by(997) {
            let w = t.written_at(lsn).unwrap();
            assert!(w >= prev && w <= lsn.max(10));
            prev = w;
        }
    }

    #[test]
    fn lag_goes_to_zero_when_idle() {
        let mut p = Progress::new();
        p.record_local_write(1_000, 10_000);
        // Follower catches up 5 ms later: that is its real lag.
        let f = p.on_status("n2", 1_000, 1_000, 1_000, 15_000);
        assert_eq!(f.write_lag_us(), Some(5_000));
        assert_eq!(f.flush_lag_us(), Some(5_000));
        // Idle cluster: next report (still caught up, nothing new) shows 0, and stays 0.
        let f = p.on_status("n2", 1_000, 1_000, 1_000, 1_015_000);
        assert_eq!(f.flush_lag_us(), Some(0));
        assert_eq!(f.replay_lag_us(), Some(0));
        let f = p.on_status("n2", 1_000, 1_000, 1_000, 60_000_000);
        assert_eq!(f.flush_lag_us(), Some(0));
        let r = &p.report()[0];
        assert_eq!((r.lag_bytes, r.lag_seconds, r.state), (0, 0.0, "starting"));
        // New write: measured again.
        p.record_local_write(2_000, 70_000_000);
        let f = p.on_status("n2", 2_000, 2_000, 1_000, 70_000_300);
        assert_eq!(f.write_lag_us(), Some(300));
        assert_eq!(f.replay_lag_us(), Some(70_000_300 - 10_000));
        assert_eq!(f.replay_lag_bytes(2_000), 1_000);
    }

    #[test]
    fn lag_grows_under_load_when_follower_falls_behind() {
        let mut p = Progress::new();
        p.record_local_write(1, 0);
        let mut last_lag = 0;
        // Leader writes 1 MB/s (1 byte per µs); follower applies at half that rate.
        for step in 1..=50u64 {
            let now = step * 100_000;
            p.record_local_write(now, now);
            let follower_lsn = now / 2;
            let lag = p
                .on_status("n3", follower_lsn, follower_lsn, follower_lsn, now)
                .flush_lag_us()
                .unwrap();
            assert!(lag >= last_lag, "lag must grow: {lag} < {last_lag}");
            // The follower has what the leader wrote at now/2: lag ≈ now/2 (sample spacing).
            assert!(
                lag >= now / 2 && lag <= now / 2 + 100_000,
                "lag {lag} at {now}"
            );
            let r = p.report().remove(0);
            assert_eq!(r.lag_bytes, now - follower_lsn);
            assert_eq!(r.lag_seconds, lag as f64 / 1e6);
            last_lag = lag;
        }
        assert!(last_lag >= 2_000_000);
        // A follower keeping pace (1 ms behind) shows ~1 ms, not growing.
        let mut p = Progress::new();
        for step in 1..=1000u64 {
            let now = step * 1_000;
            p.record_local_write(step * 100, now);
            if step > 1 {
                let f = p.on_status("n2", (step - 1) * 100, (step - 1) * 100, 0, now);
                assert_eq!(f.write_lag_us(), Some(1_000));
            }
        }
    }

    #[test]
    fn follower_state_and_gate_position() {
        let mut p = Progress::new();
        assert_eq!(
            p.set_state("n2", FollowerState::Catchup).state(),
            FollowerState::Catchup
        );
        p.on_status("n2", 30, 20, 10, 5);
        let f = p.follower("n2").unwrap();
        assert_eq!(f.write_lag_us(), Some(0)); // no samples: nothing to measure
        let g = f.gate_position();
        assert!(!g.connected);
        assert_eq!((g.write_lsn, g.flush_lsn, g.apply_lsn), (30, 20, 10));
        p.set_state("n2", FollowerState::Streaming);
        assert!(p.follower("n2").unwrap().gate_position().connected);
        assert_eq!(p.followers().count(), 1);
        assert!(p.remove("n2").is_some());
        assert!(p.follower("n2").is_none());
    }
}
