//! Deterministic simulation of elections under faults (see `sim/mod.rs`).
//!
//! `WALSHIP_SIM_SEED=<n>` replays one seed, `WALSHIP_SIM_SEEDS=<count>` changes how
//! many run. A failure prints its seed.

mod sim;

use sim::{checkers, seeds, SeedGuard, Sim, SimConfig};

/// Fault phase, heal, then every invariant.
fn run_faulty(name: &'static str, nodes: usize, seed: u64) -> (u64, usize) {
    let _guard = SeedGuard(name, seed);
    let mut cfg = SimConfig::faulty(nodes);
    // Vary the fault mix per seed (derived from the seed: still reproducible).
    let mix = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    cfg.loss = [0.0, 0.02, 0.1, 0.25][(mix % 4) as usize];
    cfg.dup = [0.0, 0.05][((mix >> 2) % 2) as usize];
    cfg.slow = [0.0, 0.05, 0.2][((mix >> 3) % 3) as usize];
    cfg.fault_every_ms = [100, 250, 500][((mix >> 5) % 3) as usize];
    let bound_ms = 10 * cfg.election_timeout_ms;
    let fault_ms = cfg.fault_ms;
    let mut sim = Sim::new(cfg, seed);
    sim.run_until(fault_ms * 1000, |_| false);
    sim.heal();
    let heal_ms = checkers::check_leader_after_heal(&mut sim, bound_ms);
    // Let replication catch up, then check the log invariants.
    let end = sim.now_us + 500_000;
    sim.run_until(end, |_| false);
    checkers::check_no_committed_entry_lost(&sim);
    checkers::check_committed_prefixes(&sim);
    assert!(
        !sim.hist.committed.is_empty(),
        "seed {seed}: nothing was ever committed"
    );
    (heal_ms, sim.hist.elections.len())
}

fn run_many(name: &'static str, nodes: usize) {
    let seeds = seeds(300);
    let mut worst = 0;
    let mut elections = 0;
    for &seed in &seeds {
        let (heal_ms, e) = run_faulty(name, nodes, seed);
        worst = worst.max(heal_ms);
        elections += e;
    }
    println!(
        "{name}: {} seeds, {elections} elections, worst time to a stable leader after heal {worst} ms",
        seeds.len()
    );
}

#[test]
fn sim_3_nodes_partitions_loss_crashes() {
    run_many("sim_3_nodes_partitions_loss_crashes", 3);
}

#[test]
fn sim_5_nodes_partitions_loss_crashes() {
    run_many("sim_5_nodes_partitions_loss_crashes", 5);
}

#[test]
fn sim_is_deterministic() {
    let run = |seed| {
        let mut sim = Sim::new(SimConfig::faulty(3), seed);
        sim.run_until(2_000_000, |_| false);
        (
            sim.hist
                .elections
                .iter()
                .map(|e| (e.0, e.1, e.3))
                .collect::<Vec<_>>(),
            sim.hist.committed.len(),
        )
    };
    assert_eq!(run(42), run(42));
}

#[test]
fn sim_no_faults_single_stable_leader() {
    for seed in seeds(20) {
        let _guard = SeedGuard("sim_no_faults_single_stable_leader", seed);
        let mut cfg = SimConfig::faulty(5);
        cfg.fault_ms = 0;
        let mut sim = Sim::new(cfg, seed);
        sim.run_until(5_000_000, |_| false);
        assert_eq!(
            sim.hist.elections.len(),
            1,
            "seed {seed}: one election, then quiet"
        );
        assert!(sim.stable_leader().is_some());
        assert_eq!(sim.hist.fences, 0);
        checkers::check_committed_prefixes(&sim);
    }
}

#[test]
#[ignore]
fn sim_debug_stats() {
    let mut sim = Sim::new(SimConfig::faulty(5), 1);
    sim.run_until(3_000_000, |_| false);
    let committed = sim.hist.committed.len();
    sim.heal();
    let t = checkers::check_leader_after_heal(&mut sim, 3000);
    println!(
        "elections {:?}\ncommitted during faults {committed}, fences {}, heal {t} ms, logs {:?}",
        sim.hist
            .elections
            .iter()
            .map(|e| (e.0, e.1, e.3 / 1000))
            .collect::<Vec<_>>(),
        sim.hist.fences,
        sim.nodes
            .iter()
            .map(|n| (n.log.len(), n.commit))
            .collect::<Vec<_>>()
    );
}
