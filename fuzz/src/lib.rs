//! Shared code of walship's fuzz targets: input layouts ([`format`]) and a scratch
//! directory on tmpfs for the targets that need files.

pub mod format;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_scratch() {
    if let Some(p) = SCRATCH.get() {
        let _ = std::fs::remove_dir_all(p);
    }
}

/// A directory private to this process, on tmpfs (`/dev/shm`) when there is one so
/// fsync costs nothing, else in the system temp dir. Removed when the process exits
/// normally (libFuzzer's `-max_total_time`/`-runs` end); a crashing run leaves it
/// for inspection (`/dev/shm/walship-fuzz-<pid>`).
pub fn scratch_dir() -> &'static Path {
    SCRATCH.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("walship-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cannot create the fuzz scratch directory");
        // SAFETY: registers a plain extern "C" function with no arguments.
        unsafe { libc::atexit(remove_scratch) };
        dir
    })
}
