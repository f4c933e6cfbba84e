use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Waker;

use proptest::prelude::*;

use super::*;
use crate::standbys::parse_standbys;

fn pol(s: &str) -> Option<StandbyPolicy> {
    Some(parse_standbys(s).unwrap())
}

fn pos(connected: bool, w: u64, f: u64, a: u64) -> FollowerPosition {
    FollowerPosition {
        connected,
        write_lsn: w,
        flush_lsn: f,
        apply_lsn: a,
    }
}

fn up(lsn: u64) -> FollowerPosition {
    pos(true, lsn, lsn, lsn)
}

fn down(lsn: u64) -> FollowerPosition {
    pos(false, lsn, lsn, lsn)
}

fn wakes(g: &CommitGate) -> Vec<(AckLevel, u64)> {
    g.wake_log.iter().map(|&(l, lsn, _)| (l, lsn)).collect()
}

fn pending(h: &mut WaitHandle) -> bool {
    h.try_result().is_none()
}

fn done(h: &mut WaitHandle) -> u64 {
    match h.try_result() {
        Some(Ok(c)) => c,
        other => panic!("waiter {h:?} not released: {other:?}"),
    }
}

#[test]
fn ack_level_strings() {
    for l in AckLevel::ALL {
        assert_eq!(l.as_str().parse::<AckLevel>(), Ok(l));
    }
    assert_eq!(AckLevel::default(), AckLevel::RemoteFlush);
    assert!("on".parse::<AckLevel>().is_err());
}

#[test]
fn async_never_waits_for_standbys() {
    let mut g = CommitGate::new(None, false);
    g.update_leader(100, 80);
    for l in AckLevel::ALL {
        assert_eq!(g.commit_at(l), 80);
        assert_eq!(done(&mut g.register(80, l)), 80);
    }
    let mut h = g.register(100, AckLevel::RemoteApply);
    assert!(pending(&mut h)); // not flushed on the leader yet
    g.update_follower("n2", down(0));
    assert_eq!(g.sync_state("n2"), SyncState::Async);
    g.update_leader(100, 100);
    assert_eq!(done(&mut h), 100);

    // wal.sync = never: local = write LSN.
    let mut g = CommitGate::new(None, true);
    g.update_leader(100, 0);
    assert_eq!(g.commits().commit_lsn(), 100);
    assert_eq!(g.commits().local, 100);
}

#[test]
fn first1_waits_while_its_standby_is_down_and_resumes() {
    let mut g = CommitGate::new(pol("FIRST 1 (a)"), false);
    g.update_leader(100, 100);
    g.update_follower("a", down(0));
    let mut h = g.register(100, AckLevel::RemoteFlush);
    let mut local = g.register(100, AckLevel::Local);
    assert_eq!(done(&mut local), 100); // ack=local never waits
    assert!(pending(&mut h));
    g.update_follower("a", down(100)); // LSNs without connection do not count
    assert!(pending(&mut h));
    assert_eq!(g.commit_lsn(), 0);
    g.update_follower("a", up(100));
    assert_eq!(done(&mut h), 100);
    g.set_connected("a", false);
    g.update_leader(200, 200);
    let mut h = g.register(200, AckLevel::RemoteWrite);
    assert!(pending(&mut h));
    assert_eq!(g.commit_lsn(), 100); // held, not reset
    g.set_connected("a", true); // back, but still at 100
    assert!(pending(&mut h));
    g.update_follower("a", up(200));
    assert_eq!(done(&mut h), 200);
}

#[test]
fn first_priority_fallback_and_sync_state() {
    let mut g = CommitGate::new(pol("FIRST 1 (a, b, c)"), false);
    g.update_leader(1000, 1000);
    g.update_follower("a", up(100));
    g.update_follower("b", up(500));
    g.update_follower("c", up(900));
    g.update_follower("x", up(1000)); // unlisted: async, never counted
    assert_eq!(g.commit_lsn(), 100); // a is the sync standby
    assert_eq!(g.sync_state("a"), SyncState::Sync);
    assert_eq!(g.sync_state("b"), SyncState::Potential);
    assert_eq!(g.sync_state("c"), SyncState::Potential);
    assert_eq!(g.sync_state("x"), SyncState::Async);
    assert_eq!(g.sync_state("unknown"), SyncState::Async);
    let mut h = g.register(500, AckLevel::RemoteFlush);
    assert!(pending(&mut h));
    g.set_connected("a", false); // fallback to b
    assert_eq!(g.sync_state("b"), SyncState::Sync);
    assert_eq!(g.sync_state("a"), SyncState::Potential);
    assert_eq!(done(&mut h), 500);
    g.set_connected("b", false); // fallback to c
    assert_eq!(g.commit_lsn(), 900);
    g.set_connected("a", true); // a is back and first again: commit held at 900
    assert_eq!(g.sync_state("a"), SyncState::Sync);
    assert_eq!(g.commit_lsn(), 900);
    let mut h = g.register(901, AckLevel::RemoteFlush);
    g.update_follower("c", up(1000));
    assert!(pending(&mut h), "c is only potential now");
    g.update_follower("a", up(1000));
    assert_eq!(done(&mut h), 1000);
    let states: Vec<_> = g
        .followers()
        .into_iter()
        .map(|(id, _, s)| (id, s.as_str()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("a".into(), "sync"),
            ("b".into(), "potential"),
            ("c".into(), "potential"),
            ("x".into(), "async")
        ]
    );
}

#[test]
fn first2_needs_two_and_uses_the_slower() {
    let mut g = CommitGate::new(pol("FIRST 2 (a, b, c)"), false);
    g.update_leader(1000, 1000);
    g.update_follower("a", up(300));
    assert_eq!(g.commit_lsn(), 0); // only one connected
    assert_eq!(g.sync_state("a"), SyncState::Sync);
    g.update_follower("c", up(200));
    assert_eq!(g.commit_lsn(), 200);
    g.update_follower("b", up(250)); // b outranks c
    assert_eq!(g.commit_lsn(), 250);
    assert_eq!(g.sync_state("c"), SyncState::Potential);
}

#[test]
fn wildcard_ties_break_by_id() {
    let mut g = CommitGate::new(pol("FIRST 1 (z, *)"), false);
    g.update_leader(1000, 1000);
    g.update_follower("m", up(10));
    g.update_follower("b", up(20));
    assert_eq!(g.sync_state("b"), SyncState::Sync);
    assert_eq!(g.commit_lsn(), 20);
    g.update_follower("z", up(30));
    assert_eq!(g.sync_state("z"), SyncState::Sync);
    assert_eq!(g.sync_state("b"), SyncState::Potential);
    assert_eq!(g.commit_lsn(), 30);
}

#[test]
fn any1_of_2_keeps_acking_with_one_down() {
    let mut g = CommitGate::new(pol("ANY 1 (a, b)"), false);
    g.update_leader(1000, 1000);
    g.update_follower("a", up(100));
    g.update_follower("b", down(0));
    assert_eq!(g.commit_lsn(), 100);
    assert_eq!(g.sync_state("a"), SyncState::Quorum);
    assert_eq!(g.sync_state("b"), SyncState::Quorum);
    let mut h = g.register(400, AckLevel::RemoteFlush);
    g.update_follower("a", up(400));
    assert_eq!(done(&mut h), 400);
    // a goes down, b comes back: b alone acks.
    g.set_connected("a", false);
    g.update_follower("b", up(500));
    assert_eq!(g.commit_lsn(), 500);
    // both up: the faster one decides.
    g.set_connected("a", true);
    g.update_follower("b", up(700));
    assert_eq!(g.commit_lsn(), 700);
}

#[test]
fn any2_requires_both() {
    let mut g = CommitGate::new(pol("ANY 2 (a, b)"), false);
    g.update_leader(1000, 1000);
    g.update_follower("a", up(500));
    let mut h = g.register(300, AckLevel::RemoteFlush);
    assert!(pending(&mut h));
    g.update_follower("b", up(300));
    assert_eq!(done(&mut h), 300);
    g.update_follower("b", up(900));
    assert_eq!(g.commit_lsn(), 500);
    g.set_connected("a", false);
    let mut h = g.register(600, AckLevel::RemoteWrite);
    g.update_follower("b", up(1000));
    assert!(pending(&mut h));
    g.update_follower("a", up(600));
    assert_eq!(done(&mut h), 600);
}

#[test]
fn remote_levels_differ_and_are_capped_by_local() {
    let mut g = CommitGate::new(pol("ANY 1 (a)"), false);
    g.update_leader(1000, 600);
    let mut w = g.register(800, AckLevel::RemoteWrite);
    let mut f = g.register(500, AckLevel::RemoteFlush);
    let mut a = g.register(500, AckLevel::RemoteApply);
    g.update_follower("a", pos(true, 900, 500, 100));
    let c = g.commits();
    assert_eq!(
        (c.local, c.remote_write, c.remote_flush, c.remote_apply),
        (600, 600, 500, 100)
    );
    assert!(pending(&mut w)); // leader has only flushed 600
    assert_eq!(done(&mut f), 500);
    assert!(pending(&mut a));
    // apply beyond flush counts only up to flush (remote_apply implies flushed).
    g.update_follower("a", pos(true, 900, 450, 900));
    assert_eq!(g.commits().remote_apply, 450);
    assert!(pending(&mut a));
    g.update_follower("a", pos(true, 900, 900, 900));
    assert_eq!(done(&mut a), 600);
    g.update_leader(1000, 1000);
    assert_eq!(done(&mut w), 900);
    // flushed implies written
    g.update_follower("a", pos(true, 0, 950, 0));
    assert_eq!(g.commits().remote_write, 950);
}

#[test]
fn commit_never_goes_backwards() {
    let mut g = CommitGate::new(pol("ANY 1 (a, b)"), false);
    g.update_leader(1000, 1000);
    g.update_follower("a", up(800));
    assert_eq!(g.commits().remote_apply, 800);
    // a reconnects with lower LSNs (e.g. after a restart that lost unflushed data).
    g.update_follower("a", up(100));
    assert_eq!(g.commit_lsn(), 800);
    // A different standby with less: still 800.
    g.set_connected("a", false);
    g.update_follower("b", up(50));
    assert_eq!(g.commits().remote_write, 800);
    // A stricter policy holds it, never lowers it.
    g.set_policy(pol("ANY 2 (a, b)"));
    assert_eq!(g.commit_lsn(), 800);
    // A lower leader report is ignored.
    g.update_leader(10, 10);
    assert_eq!(g.commits().local, 1000);
    g.update_follower("b", up(900));
    g.update_follower("a", up(850));
    assert_eq!(g.commit_lsn(), 850);
}

#[test]
fn waiters_woken_once_in_lsn_order_only_when_covered() {
    let mut g = CommitGate::new(pol("ANY 1 (a)"), false);
    g.update_leader(1000, 1000);
    let mut hs: Vec<WaitHandle> = [30, 10, 20, 40, 20]
        .iter()
        .map(|&l| g.register(l, AckLevel::RemoteFlush))
        .collect();
    let mut other = g.register(5, AckLevel::RemoteApply);
    assert_eq!(g.pending_waiters(), 6);
    g.update_follower("a", pos(true, 25, 25, 0));
    assert_eq!(
        wakes(&g),
        vec![
            (AckLevel::RemoteFlush, 10),
            (AckLevel::RemoteFlush, 20),
            (AckLevel::RemoteFlush, 20)
        ]
    );
    assert!(pending(&mut hs[0]) && pending(&mut hs[3]));
    assert!(pending(&mut other));
    assert_eq!(done(&mut hs[1]), 25);
    assert_eq!(done(&mut hs[2]), 25);
    assert_eq!(done(&mut hs[4]), 25);
    // Same position again: nothing more is woken.
    g.update_follower("a", pos(true, 25, 25, 0));
    assert_eq!(g.wake_log.len(), 3);
    g.update_follower("a", up(100));
    assert_eq!(g.wake_log.len(), 6);
    assert_eq!(
        wakes(&g)[3..],
        [
            (AckLevel::RemoteFlush, 30),
            (AckLevel::RemoteFlush, 40),
            (AckLevel::RemoteApply, 5)
        ]
    );
    assert_eq!(done(&mut hs[0]), 100);
    assert_eq!(done(&mut hs[3]), 100);
    assert_eq!(done(&mut other), 100);
    assert_eq!(g.pending_waiters(), 0);
}

#[test]
fn dropped_and_timed_out_waiters_are_removed() {
    let gate = SharedGate::new(CommitGate::new(pol("FIRST 1 (a)"), false));
    gate.update_leader(100, 100);
    let h = gate.register(50, AckLevel::RemoteFlush);
    assert_eq!(gate.pending_waiters(), 1);
    drop(h);
    assert_eq!(gate.pending_waiters(), 0);

    // What tokio::time::timeout does: poll (Pending, registers a waker), later drop.
    let mut h = gate.register(60, AckLevel::RemoteApply);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(Pin::new(&mut h).poll(&mut cx).is_pending());
    assert_eq!(gate.pending_waiters(), 1);
    drop(h);
    assert_eq!(gate.pending_waiters(), 0);

    // A released handle's drop does not touch the gate; awaiting returns the commit.
    let mut h = gate.register(70, AckLevel::RemoteFlush);
    gate.update_follower("a", up(80));
    match Pin::new(&mut h).poll(&mut cx) {
        Poll::Ready(Ok(80)) => {}
        other => panic!("{other:?}"),
    }
    drop(h);
    assert_eq!(gate.pending_waiters(), 0);

    // Dropped after the gate itself is gone: nothing to do, no panic.
    let h = gate.register(1000, AckLevel::RemoteFlush);
    drop(gate);
    drop(h);
}

#[test]
fn bare_gate_purges_abandoned_waiters_lazily() {
    let mut g = CommitGate::new(pol("FIRST 1 (a)"), false);
    let mut keep = Vec::new();
    for i in 0..20_000u64 {
        let h = g.register(1_000_000 + i, AckLevel::RemoteFlush);
        if i % 100 == 0 {
            keep.push(h);
        } // others dropped at once (abandoned)
        assert!(g.pending_waiters() <= 2 * MIN_PURGE_AT + keep.len() * 2);
    }
    g.update_leader(u64::MAX, u64::MAX);
    g.update_follower("a", up(u64::MAX));
    for h in keep.iter_mut() {
        assert_eq!(done(h), u64::MAX);
    }
    assert_eq!(g.pending_waiters(), 0);
}

#[test]
fn fail_all_releases_everyone_with_outcome_unknown() {
    let gate = SharedGate::new(CommitGate::new(pol("ANY 1 (a)"), false));
    gate.update_leader(100, 100);
    let mut hs: Vec<WaitHandle> = AckLevel::ALL
        .iter()
        .skip(1)
        .map(|&l| gate.register(200, l))
        .collect();
    let mut covered = gate.register(0, AckLevel::RemoteFlush);
    assert_eq!(gate.fail_all("leader n1 stepped down in term 4"), 3);
    for h in hs.iter_mut() {
        match h.try_result() {
            Some(Err(ShipperError::OutcomeUnknown {
                lsn: 200, reason, ..
            })) => {
                assert!(reason.contains("stepped down"))
            }
            other => panic!("{other:?}"),
        }
        assert!(h.try_result().is_some()); // never pending again
    }
    assert_eq!(done(&mut covered), 0); // released before fail_all: keeps its answer
                                       // Closed: new writes fail at once.
    let mut late = gate.register(300, AckLevel::RemoteFlush);
    let err = late.try_result().unwrap().unwrap_err();
    assert!(err.to_string().contains("outcome unknown"), "{err}");
    assert_eq!(gate.pending_waiters(), 0);
    assert!(gate.closed_reason().unwrap().contains("term 4"));
    gate.reopen();
    assert_eq!(gate.closed_reason(), None);
    assert_eq!(gate.policy().unwrap().to_string(), "ANY 1 (a)");
    let mut h = gate.register(150, AckLevel::RemoteFlush);
    gate.update_leader(150, 150);
    gate.update_follower("a", up(150));
    assert_eq!(done(&mut h), 150);
}

#[test]
fn dropping_the_gate_answers_outcome_unknown() {
    let mut g = CommitGate::new(None, false);
    let mut h = g.register(10, AckLevel::Local);
    drop(g);
    match h.try_result() {
        Some(Err(ShipperError::OutcomeUnknown { lsn: 10, .. })) => {}
        other => panic!("{other:?}"),
    }
    let gate = SharedGate::new(CommitGate::new(None, false));
    let h = gate.register(10, AckLevel::Local);
    drop(gate);
    assert!(h.blocking_wait().is_err());
}

#[test]
fn many_threads_register_while_progress_is_reported() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 2_000;
    const END: u64 = 100_000;
    let gate = SharedGate::new(CommitGate::new(pol("ANY 1 (a, b)"), false));
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let reporter = {
            let gate = gate.clone();
            let stop = stop.clone();
            s.spawn(move || {
                let mut lsn = 0;
                while lsn < END {
                    lsn += 7;
                    gate.update_leader(lsn, lsn);
                    let who = if (lsn / 7) % 2 == 0 { "a" } else { "b" };
                    gate.update_follower(who, up(lsn));
                    if lsn % 700 == 0 {
                        std::thread::yield_now();
                    }
                }
                while !stop.load(Ordering::Acquire) {
                    gate.update_follower("a", up(END));
                    std::thread::yield_now();
                }
            })
        };
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let gate = gate.clone();
                s.spawn(move || {
                    let mut handles = Vec::new();
                    for i in 0..PER_THREAD {
                        let lsn = (i * 7919 + t * 104_729) % END + 1;
                        let level = AckLevel::ALL[(i % 4) as usize];
                        handles.push(gate.register(lsn, level));
                        if i % 3 == 0 {
                            // some writers give up (timeout) right away
                            let _ = handles.pop();
                        }
                    }
                    let mut released = 0;
                    for h in handles {
                        let lsn = h.lsn();
                        let c = h.blocking_wait().expect("released with a commit");
                        assert!(c >= lsn);
                        released += 1;
                    }
                    released
                })
            })
            .collect();
        let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        stop.store(true, Ordering::Release);
        reporter.join().unwrap();
        assert_eq!(total, THREADS * (PER_THREAD - PER_THREAD.div_ceil(3)));
    });
    assert_eq!(gate.pending_waiters(), 0);
    assert_eq!(gate.commit_lsn(), END.next_multiple_of(7));
}

/// Minimal executor: polls a future on this thread, parking until its waker fires.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl std::task::Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn awaiting_a_handle_is_woken_by_another_thread() {
    let gate = SharedGate::new(CommitGate::new(pol("FIRST 1 (a)"), false));
    gate.update_leader(500, 500);
    let waits: Vec<WaitHandle> = (1..=5)
        .map(|i| gate.register(i * 100, AckLevel::RemoteFlush))
        .collect();
    std::thread::scope(|s| {
        let g2 = gate.clone();
        s.spawn(move || {
            for lsn in (0..=500).step_by(50) {
                g2.update_follower("a", up(lsn));
                std::thread::yield_now();
            }
        });
        for (i, w) in waits.into_iter().enumerate() {
            let c = block_on(w).expect("committed");
            assert!(c >= (i as u64 + 1) * 100);
        }
    });
    assert_eq!(gate.pending_waiters(), 0);
}

#[test]
fn deferred_release_answers_only_when_dropped_and_in_lsn_order() {
    let gate = SharedGate::new(CommitGate::new(pol("ANY 1 (a, b)"), false));
    gate.update_leader(300, 300);
    let mut w1 = gate.register(100, AckLevel::RemoteFlush);
    let mut w2 = gate.register(200, AckLevel::RemoteFlush);
    let mut w3 = gate.register(300, AckLevel::RemoteFlush);
    let mut wa = gate.register(100, AckLevel::RemoteApply);
    // Flushed to 250, applied to 50: w1 and w2 are released, but not answered yet.
    let (commits, released) = gate.update_follower_deferred("a", pos(true, 250, 250, 50));
    assert_eq!(commits.remote_flush, 250, "the commit is computed at once");
    assert_eq!(gate.commit_lsn(), 250);
    assert_eq!(released.len(), 2);
    assert!(pending(&mut w1) && pending(&mut w2) && pending(&mut w3) && pending(&mut wa));
    assert_eq!(gate.pending_waiters(), 2, "released waiters left the gate");
    drop(released);
    assert_eq!(done(&mut w1), 250);
    assert_eq!(done(&mut w2), 250);
    assert!(pending(&mut w3) && pending(&mut wa));
    // The leader side: a deferred leader update releases nothing more here (the
    // follower is the limit), then the follower covers everything.
    let (_, released) = gate.update_leader_deferred(400, 400);
    assert!(released.is_empty());
    let (_, released) = gate.update_follower_deferred("b", up(400));
    assert_eq!(released.len(), 2);
    // A waiter that gave up meanwhile is simply skipped.
    drop(w3);
    drop(released);
    assert_eq!(done(&mut wa), 400);
    assert_eq!(gate.pending_waiters(), 0);
    // Non-deferred updates still answer at once.
    let mut w4 = gate.register(500, AckLevel::RemoteFlush);
    gate.update_leader(500, 500);
    gate.update_follower("a", up(500));
    assert_eq!(done(&mut w4), 500);
}

/// Throughput of register + release with many waiters pending (not a pass/fail test):
/// `cargo test -p shipper --release -- --ignored --nocapture waiter_throughput`
#[test]
#[ignore]
fn waiter_throughput() {
    const N: u64 = 1_000_000;
    const PENDING: u64 = 100_000;
    let mut g = CommitGate::new(pol("ANY 1 (a, b)"), false);
    g.update_leader(u64::MAX, u64::MAX);
    let mut handles = std::collections::VecDeque::new();
    let start = std::time::Instant::now();
    for i in 1..=N {
        handles.push_back(g.register(i, AckLevel::RemoteFlush));
        if i > PENDING {
            // one ack per write, covering the oldest pending one
            let who = if i % 2 == 0 { "a" } else { "b" };
            g.update_follower(who, up(i - PENDING));
            let mut h = handles.pop_front().unwrap();
            assert!(h.try_result().is_some());
        }
    }
    let el = start.elapsed();
    println!(
        "{N} waiters registered and released one per follower report with {PENDING} pending: \
         {:.2?} total, {:.0} ns per register+report+release",
        el,
        el.as_nanos() as f64 / N as f64
    );
}

// ---------------------------------------------------------------------------------------
// Property test against a brute-force oracle.

const IDS: [&str; 4] = ["a", "b", "c", "d"];
const POLICIES: [&str; 8] = [
    "",
    "FIRST 1 (a, b, c)",
    "FIRST 2 (a, b, c)",
    "ANY 1 (a, b)",
    "ANY 2 (a, b, c)",
    "FIRST 1 (*)",
    "ANY 2 (c, *)",
    "2 (c, a)",
];

#[derive(Clone, Debug)]
enum Op {
    Leader {
        w: u64,
        f: u64,
    },
    Follower {
        i: usize,
        connected: bool,
        w: u64,
        f: u64,
        a: u64,
    },
    Connect {
        i: usize,
        connected: bool,
    },
    Register {
        lsn: u64,
        level: usize,
    },
    Drop {
        idx: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..40, 0u64..40).prop_map(|(w, f)| Op::Leader { w, f }),
        (0usize..4, any::<bool>(), 0u64..300, 0u64..300, 0u64..300).prop_map(
            |(i, connected, w, f, a)| Op::Follower {
                i,
                connected,
                w,
                f,
                a
            }
        ),
        (0usize..4, any::<bool>()).prop_map(|(i, connected)| Op::Connect { i, connected }),
        (0u64..320, 0usize..4).prop_map(|(lsn, level)| Op::Register { lsn, level }),
        (0usize..64).prop_map(|idx| Op::Drop { idx }),
    ]
}

/// Independent re-statement of the rules, by brute force.
struct Oracle {
    policy: Option<StandbyPolicy>,
    sync_never: bool,
    leader: (u64, u64),
    f: BTreeMap<&'static str, (bool, u64, u64, u64)>,
    published: [u64; 4],
}

impl Oracle {
    fn level_lsn(p: &(bool, u64, u64, u64), level: usize) -> u64 {
        let (_, w, f, a) = *p;
        match level {
            1 => {
                if w > f {
                    w
                } else {
                    f
                }
            }
            2 => f,
            _ => {
                if a < f {
                    a
                } else {
                    f
                }
            }
        }
    }

    fn step(&mut self) {
        let local = if self.sync_never {
            self.leader.0
        } else {
            self.leader.1
        };
        for level in 0..4 {
            let computed = match (&self.policy, level) {
                (None, _) | (_, 0) => Some(local),
                (Some(p), _) => {
                    // (priority, id, lsn) of connected listed followers
                    let mut cands = Vec::new();
                    for (id, st) in &self.f {
                        if !st.0 {
                            continue;
                        }
                        let mut prio = None;
                        for (i, n) in p.names.iter().enumerate() {
                            if n == "*" || n == id {
                                prio = Some(i);
                                break;
                            }
                        }
                        if let Some(pr) = prio {
                            cands.push((pr, *id, Self::level_lsn(st, level)));
                        }
                    }
                    let k = p.num_sync;
                    if cands.len() < k {
                        None
                    } else if p.method == SyncMethod::First {
                        cands.sort();
                        Some(cands[..k].iter().map(|c| c.2).min().unwrap().min(local))
                    } else {
                        // largest v such that at least k candidates have >= v
                        let best = cands
                            .iter()
                            .map(|c| c.2)
                            .filter(|&v| cands.iter().filter(|c| c.2 >= v).count() >= k)
                            .max()
                            .unwrap();
                        Some(best.min(local))
                    }
                }
            };
            if let Some(c) = computed {
                self.published[level] = self.published[level].max(c);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn gate_matches_oracle(
        pidx in 0usize..POLICIES.len(),
        sync_never in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let policy = if POLICIES[pidx].is_empty() { None } else { pol(POLICIES[pidx]) };
        let mut g = CommitGate::new(policy.clone(), sync_never);
        let mut o = Oracle { policy, sync_never, leader: (0, 0), f: BTreeMap::new(), published: [0; 4] };
        let mut handles: Vec<WaitHandle> = Vec::new();
        for op in ops {
            let log_start = g.wake_log.len();
            match op {
                Op::Leader { w, f } => {
                    let (nw, nf) = (o.leader.0 + w, (o.leader.1 + f).min(o.leader.0 + w));
                    o.leader = (nw, nf);
                    g.update_leader(nw, nf);
                }
                Op::Follower { i, connected, w, f, a } => {
                    o.f.insert(IDS[i], (connected, w, f, a));
                    g.update_follower(IDS[i], pos(connected, w, f, a));
                }
                Op::Connect { i, connected } => {
                    if let Some(st) = o.f.get_mut(IDS[i]) { st.0 = connected; }
                    g.set_connected(IDS[i], connected);
                }
                Op::Register { lsn, level } => handles.push(g.register(lsn, AckLevel::ALL[level])),
                Op::Drop { idx } => {
                    if idx < handles.len() {
                        drop(handles.swap_remove(idx));
                    }
                }
            }
            o.step();
            let c = g.commits();
            for l in AckLevel::ALL {
                prop_assert_eq!(c.get(l), o.published[l.idx()], "level {}", l);
            }
            prop_assert!(c.local >= c.remote_write && c.remote_write >= c.remote_flush
                && c.remote_flush >= c.remote_apply);
            // Wake order within this step: ascending LSN per level.
            for l in AckLevel::ALL {
                let lsns: Vec<u64> = g.wake_log[log_start..].iter()
                    .filter(|(wl, _, _)| *wl == l).map(|(_, x, _)| *x).collect();
                prop_assert!(lsns.windows(2).all(|w| w[0] <= w[1]), "{:?}", lsns);
            }
            let mut still = Vec::new();
            for mut h in handles.drain(..) {
                let oracle_commit = o.published[h.level().idx()];
                match h.try_result() {
                    Some(Ok(commit)) => {
                        prop_assert!(h.lsn() <= commit && commit <= oracle_commit);
                    }
                    Some(Err(e)) => prop_assert!(false, "unexpected error {}", e),
                    None => {
                        prop_assert!(h.lsn() > oracle_commit,
                            "covered waiter {:?} left waiting (commit {})", h, oracle_commit);
                        still.push(h);
                    }
                }
            }
            handles = still;
        }
        // Exactly once: no waiter appears twice in the wake log.
        let mut seen = g.wake_log.clone();
        seen.sort();
        let n = seen.len();
        seen.dedup();
        prop_assert_eq!(seen.len(), n);
        // Everything still waiting is released once every standby has everything.
        g.update_leader(u64::MAX, u64::MAX);
        for id in IDS {
            g.update_follower(id, up(u64::MAX));
        }
        for mut h in handles {
            let lsn = h.lsn();
            prop_assert!(matches!(h.try_result(), Some(Ok(c)) if c >= lsn));
        }
        prop_assert_eq!(g.pending_waiters(), 0);
    }
}
