//! The ceiling of group commit for blocking appenders on *this* machine, with no
//! WAL at all: what `N` threads that each wait for "their" flush could reach if
//! appending and flushing cost nothing but the flush's own duration.
//!
//! `N` appender threads loop: count one record, park on a futex until the next
//! flush round ends. One flusher thread loops: wait until all `N` are parked (the
//! ideal group: every appender in every round), then "flush" — either sleep `F`
//! µs (`WAKEUP_FLOOR_FLUSH=sleep:80`, timer slack 1 ns: a disk with no noise) or
//! write one record (`WAKEUP_FLOOR_RECORD` bytes, default 100) and `fdatasync` a
//! fallocated file (`WAKEUP_FLOOR_FLUSH=fdatasync`)
//! — then wake all `N` with one `FUTEX_WAKE`. A round costs the flush plus the time
//! to wake `N` parked threads and have them park again: the part no group-commit
//! design in which each appender blocks until durable can avoid.
//!
//! It runs one appender, then `N`, and prints records/s of each and their ratio:
//! the *ceiling* of the WAL bench's "64 appenders ≥ 20× one" ratio on this
//! machine, since the WAL does strictly more work per record than this probe
//! (an append, a CRC, a mutex) with the same flush.
//!
//! `cargo bench -p walship-benches --bench wakeup_floor` (env: `WAKEUP_FLOOR_THREADS`
//! default 64, `WAKEUP_FLOOR_SECS` default 3, `WAKEUP_FLOOR_FLUSH` default
//! `fdatasync`, or `sleep:<µs>`).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn futex_wait(a: &AtomicU32, seen: u32) {
    // SAFETY: FUTEX_WAIT on a valid, aligned u32 that outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            a.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            seen,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake_all(a: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            a.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

/// Bytes written before each `fdatasync` (`WAKEUP_FLOOR_RECORD`, default 100: the
/// WAL bench's 100 B records, so the one-appender rates compare).
fn record_bytes() -> usize {
    std::env::var("WAKEUP_FLOOR_RECORD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

enum Flush {
    Sleep(Duration),
    Fdatasync,
}

struct Run {
    records_per_s: f64,
    mean_round: Duration,
    mean_flush: Duration,
}

fn run(threads: usize, secs: f64, flush: &Flush) -> Run {
    let epoch = Arc::new(AtomicU32::new(0));
    let parked = Arc::new(AtomicU64::new(0));
    let records = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (epoch, parked, records, stop) =
                (epoch.clone(), parked.clone(), records.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // "append"
                    records.fetch_add(1, Ordering::Relaxed);
                    let seen = epoch.load(Ordering::Acquire);
                    parked.fetch_add(1, Ordering::AcqRel);
                    while epoch.load(Ordering::Acquire) == seen {
                        futex_wait(&epoch, seen);
                    }
                }
            })
        })
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dir.path().join("plain"))
        .expect("open");
    // SAFETY: plain syscalls on our own fd / thread.
    unsafe {
        assert_eq!(
            libc::fallocate(file.as_raw_fd(), 0, 0, 1 << 30),
            0,
            "fallocate"
        );
        libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64);
    }
    let buf = vec![5u8; record_bytes()];
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let (mut rounds, mut flushing) = (0u64, Duration::ZERO);
    let r0 = records.load(Ordering::Relaxed);
    while Instant::now() < deadline {
        // Gather: every appender parked (bounded, in case one is descheduled long).
        let g = Instant::now();
        while parked.load(Ordering::Acquire) < threads as u64
            && g.elapsed() < Duration::from_millis(100)
        {
            std::thread::yield_now();
        }
        parked.store(0, Ordering::Release);
        let f = Instant::now();
        match flush {
            Flush::Sleep(d) => std::thread::sleep(*d),
            Flush::Fdatasync => {
                file.write_all(&buf).expect("write");
                file.sync_data().expect("fdatasync");
            }
        }
        flushing += f.elapsed();
        rounds += 1;
        epoch.fetch_add(1, Ordering::Release);
        futex_wake_all(&epoch);
    }
    let el = start.elapsed();
    let n = records.load(Ordering::Relaxed) - r0;
    stop.store(true, Ordering::Relaxed);
    epoch.fetch_add(1, Ordering::Release);
    futex_wake_all(&epoch);
    for h in hs {
        h.join().expect("join");
    }
    Run {
        records_per_s: n as f64 / el.as_secs_f64(),
        mean_round: el / rounds.max(1) as u32,
        mean_flush: flushing / rounds.max(1) as u32,
    }
}

fn main() {
    let env = |k: &str| std::env::var(k).ok();
    let threads: usize = env("WAKEUP_FLOOR_THREADS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let secs: f64 = env("WAKEUP_FLOOR_SECS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let spec = env("WAKEUP_FLOOR_FLUSH").unwrap_or_else(|| "fdatasync".into());
    let flush = match spec.split_once(':') {
        Some(("sleep", us)) => Flush::Sleep(Duration::from_micros(
            us.parse().expect("WAKEUP_FLOOR_FLUSH=sleep:<microseconds>"),
        )),
        _ if spec == "fdatasync" => Flush::Fdatasync,
        _ => panic!("WAKEUP_FLOOR_FLUSH must be sleep:<us> or fdatasync, not {spec:?}"),
    };
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let one = run(1, secs / 2.0, &flush);
    let r = run(threads, secs, &flush);
    for (n, x) in [(1, &one), (threads, &r)] {
        println!(
            "wakeup floor, {n} blocking appender(s), flush = {spec}: {:.0} records/s, round {:.1} us = flush {:.1} us + wake/park {:.1} us",
            x.records_per_s,
            us(x.mean_round),
            us(x.mean_flush),
            us(x.mean_round) - us(x.mean_flush),
        );
    }
    println!(
        "wakeup floor ceiling: {threads} appenders = {:.1}x one",
        r.records_per_s / one.records_per_s
    );
}
