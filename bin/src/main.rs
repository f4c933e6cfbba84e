//! The `walship` binary. See `walship --help` and docs/INTERFACE.md.

use clap::Parser;
use walship::cli::{Cli, Command, WalCommand};
use walship::commands;

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WALSHIP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                commands::EXIT_USAGE
            } else {
                0
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    // `serve` reads its config before the runtime starts: `[runtime]` sizes it.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let node_config = match &cli.command {
        Command::Serve { config, log_format } => {
            init_logs(log_format == "json");
            let cfg = match walship::node::serve::load(config) {
                Ok(cfg) => cfg,
                Err(code) => std::process::exit(code),
            };
            if let Some(n) = cfg.runtime.worker_threads {
                builder.worker_threads(n);
            }
            Some(cfg)
        }
        _ => None,
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("walship: cannot start the async runtime: {e}");
            std::process::exit(commands::EXIT_FAILED);
        }
    };
    let code = match node_config {
        Some(cfg) => rt.block_on(walship::node::serve::serve_config(cfg)),
        None => rt.block_on(run(cli)),
    };
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    match cli.command {
        // Run by `main` itself (its config sizes the runtime).
        Command::Serve { config, .. } => walship::node::serve::serve(&config).await,
        Command::Demo { nodes, dir, keep } => walship::demo::run(nodes, dir, keep).await,
        Command::Status {
            json,
            watch,
            client,
        } => commands::status(&client, json, watch).await,
        Command::Switchover { to, client } => commands::switchover(&client, to).await,
        Command::Failover { to, force, client } => commands::failover(&client, &to, force).await,
        Command::Pause { client } => {
            commands::admin(&client, "/v1/admin/pause", serde_json::json!({})).await
        }
        Command::Resume { client } => {
            commands::admin(&client, "/v1/admin/resume", serde_json::json!({})).await
        }
        Command::Rebuild { client } => commands::rebuild(&client).await,
        Command::Checkpoint { json, client } => commands::checkpoint(&client, json).await,
        Command::Put {
            key,
            value,
            ack,
            client,
        } => commands::write(&client, &key, Some(&value), ack.as_deref()).await,
        Command::Delete { key, ack, client } => {
            commands::write(&client, &key, None, ack.as_deref()).await
        }
        Command::Get {
            key,
            min_lsn,
            wait,
            client,
        } => commands::get(&client, &key, min_lsn.as_deref(), wait.as_deref()).await,
        Command::Tail {
            from,
            follow,
            client,
        } => commands::tail(&client, from.as_deref(), follow).await,
        Command::Wal {
            command: WalCommand::Inspect { dir, from, verify },
        } => {
            init_logs(false);
            walship::inspect::run(&dir, from.as_deref(), verify)
        }
        Command::Bench(args) => walship::bench::run(args).await,
    }
}
