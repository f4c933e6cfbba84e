//! The ceiling of replicated MB/s on *this* machine, with no walship at all: the
//! least work any WAL-shipping design on one box must do for 3 nodes.
//!
//! A leader thread writes 4 KiB records into its own log file and streams the same
//! bytes over two loopback TCP connections; two follower threads each read their
//! stream and write it into their own log file. Every log is a fallocated file
//! (like walship's segments) written sequentially, either through a shared memory
//! map (`REPL_FLOOR_IO=mmap`; `mmap-touch` adds walship's touch-ahead, a thread
//! faulting pages in with `MADV_POPULATE_WRITE` 4 MiB ahead of the writer) or with
//! `write()` (`REPL_FLOOR_IO=write`, PostgreSQL's way), and each node calls `fdatasync` every 1 MiB it has written
//! (group commit of ~256 records). No CRC, no framing, no state machine, no
//! acknowledgements: a strict upper bound for walship's
//! `--mode async --value-size 4KiB` replicated MB/s (both followers together, as
//! `walship bench` counts it).
//!
//! `cargo bench -p walship-benches --bench replication_floor` (env: `REPL_FLOOR_MIB`
//! per node, default 1024; `REPL_FLOOR_IO` = `mmap` (default), `mmap-touch` or `write`;
//! `REPL_FLOOR_DIR` for the files, default the temp dir).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

const RECORD: usize = 4096;
const SYNC_EVERY: usize = 1 << 20;
const TOUCH_AHEAD: usize = 4 << 20;

/// Touch-ahead state shared with a toucher thread (walship's `toucher.rs`, reduced).
struct Touch {
    want: std::sync::atomic::AtomicUsize,
    stop: std::sync::atomic::AtomicBool,
}

/// One node's log: a fallocated file written sequentially.
enum Log {
    Mapped {
        file: File,
        map: memmap2::MmapMut,
        pos: usize,
        synced: usize,
        /// With touch-ahead: how far the toucher thread has populated, and the
        /// position it may populate up to (4 MiB ahead of `pos`).
        touch: Option<std::sync::Arc<Touch>>,
    },
    Written {
        file: File,
        pos: usize,
        synced: usize,
    },
}

impl Log {
    fn create(path: &Path, size: usize, mmap: bool, touch: bool) -> Log {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(path)
            .expect("open log");
        // SAFETY: plain syscall on our own fd.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, size as i64) };
        assert_eq!(r, 0, "fallocate {}", path.display());
        if mmap {
            // SAFETY: the file is ours alone and outlives the map (kept beside it).
            let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("mmap");
            let touch = touch.then(|| {
                let t = std::sync::Arc::new(Touch {
                    want: TOUCH_AHEAD.into(),
                    stop: false.into(),
                });
                let (t2, base, len) = (t.clone(), map.as_mut_ptr() as usize, map.len());
                std::thread::spawn(move || {
                    use std::sync::atomic::Ordering::*;
                    let mut done = 0usize;
                    while !t2.stop.load(Relaxed) && done < len {
                        let want = t2.want.load(Acquire).min(len);
                        if want <= done {
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            continue;
                        }
                        // SAFETY: a range inside our live mapping (the log outlives
                        // the thread: `stop` is set before the map is dropped).
                        unsafe {
                            libc::madvise(
                                (base + done) as *mut libc::c_void,
                                want - done,
                                libc::MADV_POPULATE_WRITE,
                            );
                        }
                        done = want;
                    }
                });
                t
            });
            Log::Mapped {
                file,
                map,
                pos: 0,
                synced: 0,
                touch,
            }
        } else {
            Log::Written {
                file,
                pos: 0,
                synced: 0,
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let (file, pos, synced) = match self {
            Log::Mapped {
                file,
                map,
                pos,
                synced,
                touch,
            } => {
                map[*pos..*pos + bytes.len()].copy_from_slice(bytes);
                if let Some(t) = touch {
                    t.want.store(
                        *pos + bytes.len() + TOUCH_AHEAD,
                        std::sync::atomic::Ordering::Release,
                    );
                }
                (&*file, pos, synced)
            }
            Log::Written { file, pos, synced } => {
                file.write_all(bytes).expect("write");
                (&*file, pos, synced)
            }
        };
        *pos += bytes.len();
        if *pos - *synced >= SYNC_EVERY {
            file.sync_data().expect("fdatasync");
            *synced = *pos;
        }
    }

    fn finish(&mut self) {
        if let Log::Mapped { touch: Some(t), .. } = self {
            t.stop.store(true, std::sync::atomic::Ordering::Release);
        }
        match self {
            Log::Mapped { file, .. } | Log::Written { file, .. } => {
                file.sync_data().expect("fdatasync")
            }
        }
    }
}

fn main() {
    let env = |k: &str| std::env::var(k).ok();
    let mib: usize = env("REPL_FLOOR_MIB")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let io = env("REPL_FLOOR_IO").unwrap_or_else(|| "mmap".into());
    let (mmap, touch) = match io.as_str() {
        "mmap" => (true, false),
        "mmap-touch" => (true, true),
        "write" => (false, false),
        other => panic!("REPL_FLOOR_IO must be mmap, mmap-touch or write, not {other:?}"),
    };
    let dir = match env("REPL_FLOOR_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let size = mib << 20;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let followers: Vec<_> = (0..2)
        .map(|i| {
            let path = dir.path().join(format!("follower{i}"));
            let mut log = Log::create(&path, size, mmap, touch);
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                let mut buf = vec![0u8; 256 << 10];
                let mut got = 0usize;
                while got < size {
                    let n = s.read(&mut buf).expect("read");
                    assert!(n > 0, "leader closed early");
                    log.append(&buf[..n]);
                    got += n;
                }
                log.finish();
            })
        })
        .collect();
    let mut streams: Vec<TcpStream> = (0..2)
        .map(|_| listener.accept().expect("accept").0)
        .collect();
    for s in &streams {
        s.set_nodelay(true).expect("nodelay");
    }
    let mut log = Log::create(&dir.path().join("leader"), size, mmap, touch);
    let record = vec![0x5au8; RECORD];
    let mut batch = Vec::with_capacity(64 * RECORD);
    let start = Instant::now();
    let mut sent = 0usize;
    while sent < size {
        batch.clear();
        while batch.len() < 64 * RECORD && sent + batch.len() < size {
            batch.extend_from_slice(&record);
        }
        log.append(&batch);
        for s in &mut streams {
            s.write_all(&batch).expect("send");
        }
        sent += batch.len();
    }
    log.finish();
    for f in followers {
        f.join().expect("follower");
    }
    let secs = start.elapsed().as_secs_f64();
    let per = size as f64 / secs / 1e6;
    println!(
        "replication floor ({io}, 3 logs of {mib} MiB, fdatasync every 1 MiB): {:.0} MB/s to each follower, {:.0} MB/s replicated (both followers), {:.0} MB/s written on the box, {:.2} s",
        per,
        2.0 * per,
        3.0 * per,
        secs
    );
}
