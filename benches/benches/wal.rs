//! WAL micro-benchmarks: `cargo bench -p walship-benches --bench wal`.
//!
//! Prints an explicit summary first (records/s, MB/s, latency percentiles, the
//! plain-file write()+fdatasync baseline measured in the same run), then runs the
//! criterion groups. Set WAL_BENCH_DIR to put the WAL on another file system,
//! WAL_BENCH_SUMMARY_ONLY=1 to skip the criterion groups.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use wal::{Lsn, Wal, WalOptions};

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("WAL_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(PathBuf::from(d)),
        None => tempfile::tempdir(),
    }
    .expect("temp dir")
}

fn open_wal(dir: &std::path::Path) -> Wal {
    Wal::open(dir, WalOptions::default()).expect("open wal").0
}

fn open_wal_zero_filled(dir: &std::path::Path) -> Wal {
    let o = WalOptions {
        zero_fill: true,
        ..WalOptions::default()
    };
    Wal::open(dir, o).expect("open wal").0
}

/// Flushes and drops old segments so long runs do not fill the disk or the page
/// cache (done outside the timed sections).
fn recycle(w: &Wal) {
    w.flush(w.write_lsn()).expect("flush");
    w.remove_before(w.write_lsn()).expect("remove_before");
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Appends without flushing for ~`secs`, in timed chunks of 256 MiB, with the given
/// touch-ahead window (`WalOptions::touch_ahead`; 0 = off, the pre-2026-11-22 path).
fn append_no_flush(size: usize, secs: f64, touch_ahead: u64) -> (f64, f64) {
    let d = bench_dir();
    let o = WalOptions {
        touch_ahead,
        ..WalOptions::default()
    };
    let w = Wal::open(d.path(), o).expect("open wal").0;
    let payload = vec![0x5Au8; size];
    let chunk_records = ((256usize << 20) / (size + 32)).max(1);
    // warm up one chunk
    for _ in 0..chunk_records / 4 {
        w.append(1, 16, &payload).expect("append");
    }
    recycle(&w);
    std::thread::sleep(Duration::from_millis(200));
    let mut n = 0u64;
    let mut t = Duration::ZERO;
    while t.as_secs_f64() < secs {
        let s = Instant::now();
        for _ in 0..chunk_records {
            w.append(1, 16, &payload).expect("append");
        }
        t += s.elapsed();
        n += chunk_records as u64;
        recycle(&w);
    }
    let rps = n as f64 / t.as_secs_f64();
    let mbps = rps * size as f64 / 1e6;
    (rps, mbps)
}

struct FlushStats {
    rps: f64,
    p50: Duration,
    p99: Duration,
    fsyncs_per_flush: f64,
}

/// `threads` appenders, each appending a `size`-byte record and flushing it, in a
/// closed loop for `secs`.
fn append_flush(threads: usize, size: usize, secs: f64, zero_fill: bool) -> FlushStats {
    let d = bench_dir();
    let w = Arc::new(if zero_fill {
        open_wal_zero_filled(d.path())
    } else {
        open_wal(d.path())
    });
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    // warm-up
    for _ in 0..200 {
        let a = w.append(1, 16, &vec![1u8; size]).expect("append");
        w.flush(a.end).expect("flush");
    }
    let f0 = w.fdatasync_count();
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (w, stop, total) = (w.clone(), stop.clone(), total.clone());
            std::thread::spawn(move || {
                let p = vec![7u8; size];
                let mut lat = Vec::with_capacity(100_000);
                while !stop.load(Ordering::Relaxed) {
                    let s = Instant::now();
                    let a = w.append(1, 16, &p).expect("append");
                    w.flush(a.end).expect("flush");
                    lat.push(s.elapsed());
                }
                total.fetch_add(lat.len() as u64, Ordering::Relaxed);
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<Duration> = hs
        .into_iter()
        .flat_map(|h| h.join().expect("join"))
        .collect();
    let el = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let n = total.load(Ordering::Relaxed);
    FlushStats {
        rps: n as f64 / el,
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
        fsyncs_per_flush: (w.fdatasync_count() - f0) as f64 / n.max(1) as f64,
    }
}

/// The floor: write() of 4 KiB + fdatasync on a plain file, as PostgreSQL does.
fn baseline(n: usize, fallocated: bool) -> (f64, Duration, Duration) {
    let d = bench_dir();
    let path = d.path().join("plain");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("open plain");
    if fallocated {
        // SAFETY: plain syscall on our fd.
        let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, (n as i64 + 100) * 4096) };
        assert_eq!(r, 0, "fallocate");
    }
    let buf = vec![3u8; 4096];
    for _ in 0..50 {
        f.write_all(&buf).expect("write");
        f.sync_data().expect("fdatasync");
    }
    let mut lat = Vec::with_capacity(n);
    let s = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&buf).expect("write");
        f.sync_data().expect("fdatasync");
        lat.push(t.elapsed());
    }
    let el = s.elapsed().as_secs_f64();
    lat.sort_unstable();
    (n as f64 / el, pct(&lat, 0.5), pct(&lat, 0.99))
}

/// Sequential read of ~128 MiB of `size`-byte records with a WalReader.
fn seq_read(size: usize) -> (f64, f64) {
    let d = bench_dir();
    let w = open_wal(d.path());
    let payload = vec![9u8; size];
    let n = (128usize << 20) / (size + 32);
    for _ in 0..n {
        w.append(1, 16, &payload).expect("append");
    }
    let mut best = (0.0, 0.0);
    for _ in 0..3 {
        let s = Instant::now();
        let mut r = w.reader(Lsn(0)).expect("reader");
        let mut bytes = 0usize;
        let mut count = 0u64;
        while let Some(rec) = r.next() {
            let rec = rec.expect("record");
            bytes += rec.payload.len();
            count += 1;
        }
        let el = s.elapsed().as_secs_f64();
        assert_eq!(count as usize, n);
        let v = (count as f64 / el, bytes as f64 / el / 1e6);
        if v.0 > best.0 {
            best = v;
        }
    }
    best
}

/// One appender flushing every append, interleaved with the plain-file baseline in
/// short rounds so that all variants see the same machine conditions (fsync latency
/// here swings with the host's load). Returns (label, ops/s, p50, p99) per variant.
fn one_appender_interleaved(
    rounds: usize,
    per_round: usize,
) -> Vec<(String, f64, Duration, Duration)> {
    let d = bench_dir();
    let plain_path = d.path().join("plain");
    let mut plain = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&plain_path)
        .expect("open plain");
    let dw = bench_dir();
    let dz = bench_dir();
    let w = open_wal(dw.path());
    let z = open_wal_zero_filled(dz.path());
    let p4k = vec![5u8; 4096];
    let p100 = vec![5u8; 100];
    let labels = [
        "plain file write()+fdatasync 4 KiB (baseline)",
        "wal append+flush 4 KiB",
        "wal append+flush 4 KiB, zero_fill",
        "wal append+flush 100 B",
    ];
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); labels.len()];
    let mut busy = vec![Duration::ZERO; labels.len()];
    for round in 0..rounds + 1 {
        for (v, l) in lat.iter_mut().enumerate() {
            let s = Instant::now();
            for _ in 0..per_round {
                let t = Instant::now();
                match v {
                    0 => {
                        plain.write_all(&p4k).expect("write");
                        plain.sync_data().expect("fdatasync");
                    }
                    1 => {
                        let a = w.append(1, 16, &p4k).expect("append");
                        w.flush(a.end).expect("flush");
                    }
                    2 => {
                        let a = z.append(1, 16, &p4k).expect("append");
                        z.flush(a.end).expect("flush");
                    }
                    _ => {
                        let a = w.append(1, 16, &p100).expect("append");
                        w.flush(a.end).expect("flush");
                    }
                }
                if round > 0 {
                    l.push(t.elapsed());
                }
            }
            if round > 0 {
                busy[v] += s.elapsed();
            }
        }
    }
    labels
        .iter()
        .zip(lat.iter_mut())
        .zip(busy)
        .map(|((label, l), b)| {
            l.sort_unstable();
            (
                label.to_string(),
                l.len() as f64 / b.as_secs_f64(),
                pct(l, 0.5),
                pct(l, 0.99),
            )
        })
        .collect()
}

/// Lets writeback from an earlier phase settle so it does not throttle the next.
fn settle() {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(300));
}

fn summary() {
    println!("== walship wal benchmark summary (explicit measurements) ==");
    let rows = one_appender_interleaved(4, 200);
    let base = rows[0].2;
    for (label, ops, p50, p99) in &rows {
        println!(
            "1 appender, flush every append, interleaved: {label}: {ops:.0} ops/s, p50 {:.1} us, p99 {:.1} us, p50 = {:.2}x baseline",
            us(*p50),
            us(*p99),
            us(*p50) / us(base)
        );
    }
    let (b_ops, b_p50, b_p99) = baseline(2000, true);
    println!(
        "baseline write()+fdatasync 4 KiB, fallocated file: {:.0} ops/s, p50 {:.1} us, p99 {:.1} us",
        b_ops,
        us(b_p50),
        us(b_p99)
    );
    settle();
    let one = append_flush(1, 100, 1.5, false);
    println!(
        "append+flush 1 appender 100 B: {:.0} records/s, p50 {:.1} us, p99 {:.1} us",
        one.rps,
        us(one.p50),
        us(one.p99)
    );
    for t in [8usize, 64] {
        let s = append_flush(t, 100, 1.5, false);
        println!(
            "append+flush {t} appenders 100 B: {:.0} records/s ({:.1}x one appender), p50 {:.1} us, p99 {:.1} us, {:.3} fdatasync per flush",
            s.rps,
            s.rps / one.rps,
            us(s.p50),
            us(s.p99),
            s.fsyncs_per_flush
        );
    }
    let on = WalOptions::default().touch_ahead;
    for size in [100usize, 4096] {
        for (label, touch) in [("", on), (", touch_ahead off", 0)] {
            settle();
            let (rps, mbps) = append_no_flush(size, 1.5, touch);
            println!("append without flush {size} B{label}: {rps:.0} records/s, {mbps:.0} MB/s");
        }
    }
    for size in [100usize, 4096] {
        settle();
        let (rps, mbps) = seq_read(size);
        println!("sequential read {size} B records: {rps:.0} records/s, {mbps:.0} MB/s");
    }
    println!("== end of summary; criterion groups follow ==");
}

fn crit_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_append_no_flush");
    for size in [100usize, 4096] {
        let d = bench_dir();
        let w = open_wal(d.path());
        let payload = vec![0x5Au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("bytes", size), &size, |b, _| {
            b.iter_custom(|iters| {
                let s = Instant::now();
                for _ in 0..iters {
                    w.append(1, 16, &payload).expect("append");
                }
                let el = s.elapsed();
                recycle(&w);
                el
            })
        });
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("records", size), &size, |b, _| {
            b.iter_custom(|iters| {
                let s = Instant::now();
                for _ in 0..iters {
                    w.append(1, 16, &payload).expect("append");
                }
                let el = s.elapsed();
                recycle(&w);
                el
            })
        });
    }
    g.finish();
}

fn crit_flush(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_append_flush");
    g.throughput(Throughput::Elements(1));
    for threads in [1usize, 8, 64] {
        let d = bench_dir();
        let w = Arc::new(open_wal(d.path()));
        g.bench_with_input(
            BenchmarkId::new("appenders_100B", threads),
            &threads,
            |b, &t| {
                b.iter_custom(|iters| {
                    let per = (iters as usize).div_ceil(t);
                    let s = Instant::now();
                    let hs: Vec<_> = (0..t)
                        .map(|_| {
                            let w = w.clone();
                            std::thread::spawn(move || {
                                let p = [7u8; 100];
                                for _ in 0..per {
                                    let a = w.append(1, 16, &p).expect("append");
                                    w.flush(a.end).expect("flush");
                                }
                            })
                        })
                        .collect();
                    for h in hs {
                        h.join().expect("join");
                    }
                    // report time per record (iters records were requested)
                    s.elapsed().mul_f64(iters as f64 / (per * t) as f64)
                })
            },
        );
    }
    g.finish();
    let mut g = c.benchmark_group("baseline_plain_file");
    g.throughput(Throughput::Elements(1));
    let d = bench_dir();
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(d.path().join("plain"))
        .expect("open");
    let buf = vec![3u8; 4096];
    g.bench_function("write_fdatasync_4KiB", |b| {
        b.iter(|| {
            f.write_all(&buf).expect("write");
            f.sync_data().expect("fdatasync");
        })
    });
    g.finish();
}

fn crit_read(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_sequential_read");
    let d = bench_dir();
    let w = open_wal(d.path());
    let n = 16_384usize;
    for _ in 0..n {
        w.append(1, 16, &[1u8; 4096]).expect("append");
    }
    g.throughput(Throughput::Bytes((n * 4096) as u64));
    g.bench_function("4KiB_records_64MiB", |b| {
        b.iter(|| {
            let mut r = w.reader(Lsn(0)).expect("reader");
            let mut k = 0usize;
            while let Some(rec) = r.next() {
                k += rec.expect("record").payload.len();
            }
            k
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = crit_append, crit_flush, crit_read
}

fn main() {
    // `WAL_BENCH_FLUSH_THREADS=N`: only the N-appender append+flush loop, beside one
    // appender (for profiling the group commit with perf).
    if let Some(n) = std::env::var("WAL_BENCH_FLUSH_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let one = append_flush(1, 100, 1.5, false);
        let s = append_flush(n, 100, 3.0, false);
        println!(
            "append+flush {n} appenders 100 B: {:.0} records/s ({:.1}x one appender at {:.0}), p50 {:.1} us, p99 {:.1} us, {:.3} fdatasync per flush",
            s.rps,
            s.rps / one.rps,
            one.rps,
            us(s.p50),
            us(s.p99),
            s.fsyncs_per_flush
        );
        return;
    }
    summary();
    if std::env::var_os("WAL_BENCH_SUMMARY_ONLY").is_some() {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
