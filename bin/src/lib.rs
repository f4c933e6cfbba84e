//! `walship`: the daemon, its configuration, HTTP and binary client APIs, and the CLI.
//!
//! The crates below this one (`wal`, `proto`, `shipper`, `receiver`, `failover`)
//! never read config files or print to a terminal; this crate wires them into a
//! node (`walship serve`), exposes the HTTP data/admin/health API and the binary
//! client protocol, and provides the operator's command-line tool.

pub mod admin;
pub mod bench;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod demo;
pub mod faults;
pub mod http;
pub mod inspect;
pub mod metrics;
pub mod node;
pub mod refusal;
pub mod status;
pub mod tls;

pub use client::Client;
