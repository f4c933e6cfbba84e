//! `walship demo`.

use std::path::PathBuf;

/// Run the demo; returns the exit status.
pub async fn run(_nodes: usize, _dir: Option<PathBuf>, _keep: bool) -> i32 {
    eprintln!("walship demo: not built yet");
    1
}
