//! `walship serve --config FILE`: run one node in the foreground until
//! SIGTERM/SIGINT, then shut down cleanly (flush the WAL, close links).

use std::path::Path;

use crate::commands::{EXIT_FAILED, EXIT_USAGE};
use crate::config::Config;

/// Run a node; returns the exit status.
pub async fn serve(path: &Path) -> i32 {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("walship: {e}");
            return EXIT_USAGE;
        }
    };
    let mut node = match super::start::start(cfg).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return EXIT_FAILED;
        }
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGTERM handler");
            return EXIT_FAILED;
        }
    };
    let code = tokio::select! {
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT received"); 0 }
        _ = term.recv() => { tracing::info!("SIGTERM received"); 0 }
        e = node.failed() => { tracing::error!("{e}"); EXIT_FAILED }
    };
    node.shutdown().await;
    code
}
