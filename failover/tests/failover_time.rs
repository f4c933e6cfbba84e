//! Failover time in the simulation: kill the leader of a healthy cluster, measure the
//! time until another node is elected (detection included). Message delays are
//! uniform in 0.1-1 ms. Product bar: (H 50 ms, T 300 ms): median <= 300 ms, worst
//! <= 500 ms; (H 100 ms, T 1 s): median <= 1.1 s, worst <= 1.5 s.
//!
//! `cargo test -p failover --release --test failover_time -- --nocapture` prints the
//! distribution.

mod sim;

use sim::{SeedGuard, Sim, SimConfig};

fn measure(nodes: usize, heartbeat_ms: u64, election_timeout_ms: u64, trials: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for trial in 0..trials {
        let seed = trial + 1_000_000 * heartbeat_ms + 10_000 * nodes as u64;
        let _guard = SeedGuard("failover_time", seed);
        let mut cfg = SimConfig::faulty(nodes);
        cfg.fault_ms = 0;
        cfg.heartbeat_ms = heartbeat_ms;
        cfg.election_timeout_ms = election_timeout_ms;
        cfg.delay_us = (100, 1000);
        let mut sim = Sim::new(cfg, seed);
        let bound_us = 10 * election_timeout_ms * 1000;
        assert!(
            sim.run_until(bound_us, |s| s.stable_leader().is_some()),
            "seed {seed}: no initial leader"
        );
        // Let it run a random while (heartbeat phase differs per trial).
        let extra =
            (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) % (2 * election_timeout_ms * 1000);
        let t = sim.now_us + election_timeout_ms * 1000 + extra;
        sim.run_until(t, |_| false);
        let leader = sim.stable_leader().expect("leader still stable");
        let old_term = sim.nodes[leader]
            .core
            .as_ref()
            .map(|c| c.term())
            .unwrap_or(0);
        let killed_at = sim.now_us;
        sim.crash(leader);
        let elected = sim.run_until(killed_at + bound_us, |s| {
            s.hist
                .elections
                .last()
                .is_some_and(|e| e.0 > old_term && e.1 != leader)
        });
        assert!(
            elected,
            "seed {seed}: no new leader within 10 election timeouts"
        );
        out.push((sim.now_us - killed_at) / 1000);
    }
    out.sort_unstable();
    out
}

fn report(label: &str, v: &[u64]) -> (u64, u64) {
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    let (median, worst) = (pct(0.5), *v.last().unwrap());
    println!(
        "failover time {label}: n={} min {} ms, median {median} ms, p90 {} ms, p99 {} ms, worst {worst} ms",
        v.len(),
        v[0],
        pct(0.9),
        pct(0.99)
    );
    (median, worst)
}

#[test]
fn failover_time_h50_t300() {
    for nodes in [3, 5] {
        let v = measure(nodes, 50, 300, 200);
        let (median, worst) = report(
            &format!("{nodes} nodes, heartbeat 50 ms, election timeout 300 ms"),
            &v,
        );
        assert!(
            median <= 300 && worst <= 500,
            "bar: median <= 300 ms, worst <= 500 ms"
        );
    }
}

#[test]
fn failover_time_h100_t1000() {
    for nodes in [3, 5] {
        let v = measure(nodes, 100, 1000, 200);
        let (median, worst) = report(
            &format!("{nodes} nodes, heartbeat 100 ms, election timeout 1 s"),
            &v,
        );
        assert!(
            median <= 1100 && worst <= 1500,
            "bar: median <= 1.1 s, worst <= 1.5 s"
        );
    }
}
