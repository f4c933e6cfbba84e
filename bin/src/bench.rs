//! `walship bench`: the load generator.

use clap::Args;

/// Load generator options.
#[derive(Debug, Args)]
pub struct BenchArgs {}

/// Run the benchmark; returns the exit status.
pub async fn run(_args: BenchArgs) -> i32 {
    eprintln!("walship bench: not built yet");
    1
}
