//! `walship serve --config FILE`: run one node in the foreground until
//! SIGTERM/SIGINT, then shut down cleanly (flush the WAL, close links).

use std::path::Path;

use crate::commands::{EXIT_FAILED, EXIT_USAGE};
use crate::config::Config;

/// Read and validate the config file; on error, log it (naming the key) and
/// return the exit status (2).
pub fn load(path: &Path) -> Result<Config, i32> {
    Config::load(path).map_err(|e| {
        tracing::error!("{e}");
        eprintln!("walship: {e}");
        EXIT_USAGE
    })
}

/// Run a node from its config file; returns the exit status.
pub async fn serve(path: &Path) -> i32 {
    match load(path) {
        Ok(cfg) => serve_config(cfg).await,
        Err(code) => code,
    }
}

/// Run a node with a validated config until SIGTERM/SIGINT or a fatal error;
/// returns the exit status.
pub async fn serve_config(cfg: Config) -> i32 {
    tracing::info!(
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "async runtime started (runtime.worker_threads; default one per CPU)"
    );
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
