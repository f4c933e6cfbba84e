//! The `walship` command line (INTERFACE.md "One binary").
//!
//! Exit status everywhere: 0 success, 1 the operation failed (stderr says why),
//! 2 bad usage or bad config.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// walship: WAL-shipping replication with built-in failover.
#[derive(Debug, Parser)]
#[command(name = "walship", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where a client command sends its request.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// HTTP endpoint of any node; requests follow redirects to the leader.
    #[arg(
        long,
        env = "WALSHIP_ENDPOINT",
        default_value = "http://127.0.0.1:7480",
        global = true
    )]
    pub endpoint: String,
    /// File holding the shared token (or set WALSHIP_TOKEN).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the nodes' certificates; needed for
    /// https:// endpoints.
    #[arg(long, env = "WALSHIP_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node in the foreground (logs to stderr; SIGTERM/SIGINT shut it down cleanly).
    Serve {
        /// The node's TOML config file.
        #[arg(long)]
        config: PathBuf,
        /// Log format on stderr.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// Start a local cluster, write, kill the leader, show the failover; leaves nothing running.
    Demo {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Directory for the nodes' data (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the data directory afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Cluster table: node, address, role, state, term, LSNs, lag.
    Status {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
        /// Refresh in place every second.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Graceful leader change; waits until the new leader leads.
    Switchover {
        /// Target node (default: the most up-to-date follower).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Promote NODE when the leader is gone.
    Failover {
        /// The node to promote.
        #[arg(long)]
        to: String,
        /// Promote even if NODE may miss acknowledged writes.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Switch automatic failover off, cluster-wide.
    Pause {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Switch automatic failover back on, cluster-wide.
    Resume {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Rebuild the node at --endpoint from the leader's checkpoint and WAL.
    Rebuild {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Write a checkpoint of the applied state of the node at --endpoint now
    /// (POST /v1/admin/checkpoint, as PostgreSQL's CHECKPOINT).
    Checkpoint {
        /// Print the node's JSON answer instead of one line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Write KEY = VALUE; prints the returned LSN.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// Acknowledgement level (local, remote_write, remote_flush, remote_apply).
        #[arg(long)]
        ack: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Read KEY; prints exactly the value; exit 1 if absent.
    Get {
        /// Key.
        key: String,
        /// Wait until the node has applied this LSN.
        #[arg(long)]
        min_lsn: Option<String>,
        /// How long to wait for --min-lsn.
        #[arg(long)]
        wait: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete KEY; prints the returned LSN.
    Delete {
        /// Key.
        key: String,
        /// Acknowledgement level.
        #[arg(long)]
        ack: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Print committed records, one a line.
    Tail {
        /// Start at this LSN.
        #[arg(long)]
        from: Option<String>,
        /// Keep printing new records.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Offline WAL tools.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Load generator (see benches/README.md).
    Bench(crate::bench::BenchArgs),
}

/// `walship wal …`.
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Dump (and verify) the WAL of a data directory, like pg_waldump.
    Inspect {
        /// Data directory (or its `wal` subdirectory).
        dir: PathBuf,
        /// Start at this LSN.
        #[arg(long)]
        from: Option<String>,
        /// Exit non-zero on any damage, naming file and offset.
        #[arg(long)]
        verify: bool,
    },
}
