//! `walship wal inspect`.

use std::path::Path;

/// Dump/verify a WAL directory; returns the exit status.
pub fn run(_dir: &Path, _from: Option<&str>, _verify: bool) -> i32 {
    eprintln!("walship wal inspect: not built yet");
    1
}
