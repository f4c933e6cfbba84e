//! The node configuration file (TOML), as INTERFACE.md specifies it.
//!
//! Guarantees: an unknown key, a missing required key, a bad value or an
//! unreadable file is refused with an error that names the key (dotted path,
//! e.g. `failover.election_timeout`), the value and the reason. Every value
//! that is not required has the default INTERFACE.md documents.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem, always naming the key (or the file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path that was given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, a key is unknown, a required key is missing or a
    /// value has the wrong type. `toml` names the key and the line.
    #[error("config file {path}: {message}")]
    Syntax {
        /// The path that was given.
        path: PathBuf,
        /// toml's message (names the key and line).
        message: String,
    },
    /// A key is present and well-typed, but its value is not acceptable.
    #[error("config key `{key}` = {value:?}: {reason}")]
    Value {
        /// Dotted key path.
        key: String,
        /// The value as written.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

fn bad(key: &str, value: impl std::fmt::Display, reason: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Replication mode (DESIGN.md "Replication modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Acknowledged when the leader has it.
    Async,
    /// `FIRST k (…)`: the first k connected standbys in priority order.
    Sync,
    /// `ANY k (…)`: any k standbys (default: a majority with the leader).
    Quorum,
}

impl Mode {
    /// The config/status spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Async => "async",
            Mode::Sync => "sync",
            Mode::Quorum => "quorum",
        }
    }
}

/// Per-write acknowledgement level, as PostgreSQL's `synchronous_commit`.
pub use shipper::AckLevel;

/// When the WAL is flushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalSync {
    /// Flushed (group commit) before a write is acknowledged.
    Always,
    /// Never flushed on the write path (the OS writes back when it likes).
    Never,
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node id, unique in the cluster.
    pub id: String,
    /// Binary protocol address (replication, votes, binary clients).
    pub addr: SocketAddr,
    /// HTTP address (data API, health, admin, metrics).
    pub http: SocketAddr,
    /// 0: never promoted; higher wins ties.
    pub priority: u32,
}

/// `[replication]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// async | sync | quorum.
    pub mode: Mode,
    /// `synchronous_standby_names` syntax, if given.
    pub standbys: Option<String>,
    /// Default ack level of a write that names none.
    pub ack: AckLevel,
    /// A write not acknowledged in time gets an error (outcome unknown).
    pub ack_timeout: Duration,
    /// A follower that needs a rebuild (its leader no longer holds the WAL it
    /// needs, or it is new and empty) rebuilds itself from the leader's
    /// checkpoint; when false it waits in `needs_rebuild` for `walship rebuild`.
    pub auto_rebuild: bool,
    /// Bytes per second at which this node, as leader, sends a checkpoint to a
    /// rebuilding node (0: unlimited), as `pg_basebackup --max-rate`.
    pub rebuild_max_rate: u64,
}

/// `[failover]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// Elect a leader automatically.
    pub auto: bool,
    /// Leader heartbeat period.
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for this long stands (randomized up to 2x).
    pub election_timeout: Duration,
    /// async mode: a candidate further behind than this is not promoted.
    pub max_lag_on_failover: u64,
}

/// `[wal]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Segment size, a power of two >= 1 MiB.
    pub segment_size: u64,
    /// Flush before acknowledging, or never.
    pub sync: WalSync,
    /// WAL always kept.
    pub min_retained: u64,
    /// WAL kept for lagging followers at most.
    pub max_retained: u64,
}

/// `[checkpoint]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// Time between checkpoints.
    pub interval: Duration,
    /// WAL between checkpoints.
    pub max_wal: u64,
}

/// `[security]`. `Debug` never prints the token.
#[derive(Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// The shared secret, read from `token_file` (None when not configured).
    pub token: Option<String>,
    /// TLS files (None: plain TCP on both listeners and every link).
    pub tls: Option<crate::tls::TlsFiles>,
}

/// `[limits]`: bounds on what one peer can make this node hold (connections,
/// frames, request bodies, keys, values, pipelined requests, handshake time).
/// Invariants enforced by validation: `member_reserved_connections <
/// max_connections`; a `Put` of the largest key and value fits in one client
/// frame (`max_frame_bytes >= max_key_bytes + max_value_bytes + FRAME_OVERHEAD_BYTES`)
/// and in one HTTP body (`max_http_body_bytes >= max_value_bytes`); a record of
/// the largest key and value fits in one WAL record (half a segment) and in one
/// replication frame ([`MAX_VALUE_BYTES_CEILING`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Binary connections at once (handshaking ones included); beyond it a new
    /// connection is answered `too_many_connections` and closed.
    pub max_connections: usize,
    /// Of `max_connections`, slots only configured members may take (clients
    /// are refused once `max_connections - member_reserved_connections` are in use).
    pub member_reserved_connections: usize,
    /// HTTP connections at once; beyond it a new connection gets 503 and is closed.
    pub max_http_connections: usize,
    /// Largest binary frame (type byte + body) a client may send after the handshake.
    pub max_frame_bytes: usize,
    /// Largest HTTP request body.
    pub max_http_body_bytes: usize,
    /// Largest key (HTTP and binary, single and batch writes).
    pub max_key_bytes: usize,
    /// Largest value of a put, or payload of a log record.
    pub max_value_bytes: usize,
    /// Requests one binary client connection may have in flight; beyond it the
    /// node stops reading from that connection until answers go out.
    pub max_in_flight_per_client: usize,
    /// A binary connection must complete its handshake, and an HTTP connection
    /// send a request's headers (also the idle wait between keep-alive
    /// requests), within this time.
    pub handshake_timeout: Duration,
}

/// Bytes of a client `Put` frame besides its key and value (type, id, op,
/// lengths, ack; 19 today), rounded up: `limits.max_frame_bytes` must be at
/// least `max_key_bytes + max_value_bytes` plus this.
pub const FRAME_OVERHEAD_BYTES: usize = 64;

/// Largest `limits.max_value_bytes`: a record of the largest key and value
/// must fit in one replication frame (`proto::DEFAULT_MAX_FRAME_BYTES`, 64 MiB,
/// the limit on member links), with room for the record header and key.
pub const MAX_VALUE_BYTES_CEILING: usize = 60 << 20;

/// Largest size `security.token_file` may have (a token is a short secret;
/// a larger file is refused at start instead of being read into memory).
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 << 10;

impl std::fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// A validated node configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Nodes of another cluster are refused.
    pub cluster_id: String,
    /// This node's id; one of `members`.
    pub node_id: String,
    /// Where the WAL, votes and checkpoints live (created 0700).
    pub data_dir: PathBuf,
    /// Binary protocol listen address.
    pub listen: SocketAddr,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Every node of the cluster, this one included.
    pub members: Vec<Member>,
    /// `[replication]`.
    pub replication: ReplicationConfig,
    /// `[failover]`.
    pub failover: FailoverConfig,
    /// `[wal]`.
    pub wal: WalConfig,
    /// `[checkpoint]`.
    pub checkpoint: CheckpointConfig,
    /// `[security]`.
    pub security: SecurityConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
}

/// `[runtime]`: how many threads the node's async runtime runs its tasks on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Worker threads of the async runtime (connections, replication streams,
    /// HTTP, elections). `None` (the default): one per CPU this process may run
    /// on. Blocking work (the WAL flusher, fdatasyncs handed off, checkpoints)
    /// runs on threads of its own, whatever this is.
    pub worker_threads: Option<usize>,
}

/// Largest `runtime.worker_threads`.
pub const MAX_WORKER_THREADS: u64 = 1024;

impl Config {
    /// This node's member entry.
    pub fn me(&self) -> &Member {
        // Invariant enforced by `validate`: node_id is one of members.
        self.members
            .iter()
            .find(|m| m.id == self.node_id)
            .unwrap_or(&self.members[0])
    }

    /// The member with this id.
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parse and validate config text; `path` is used in messages and to resolve
    /// relative `token_file` paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with_resolver(text, path, &system_resolver)
    }

    /// As [`Config::parse`], with host names in addresses (`listen`, `http_listen`,
    /// `members[].addr`, `members[].http`) resolved by `resolve` instead of the
    /// system resolver; a literal `ip:port` never reaches it. `resolve` returns the
    /// first address a name resolves to, `Ok(None)` if none. Used by the fuzz
    /// targets, which must not send DNS queries.
    pub fn parse_with_resolver(
        text: &str,
        path: &Path,
        resolve: &dyn Fn(&str) -> std::io::Result<Option<SocketAddr>>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        raw.validate(path, resolve)
    }
}

/// The resolver [`Config::parse`] uses: the system's (`getaddrinfo`), first address.
pub fn system_resolver(host_port: &str) -> std::io::Result<Option<SocketAddr>> {
    use std::net::ToSocketAddrs;
    Ok(host_port.to_socket_addrs()?.next())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster_id: String,
    node_id: String,
    data_dir: PathBuf,
    listen: String,
    http_listen: String,
    members: Vec<RawMember>,
    #[serde(default)]
    replication: RawReplication,
    #[serde(default)]
    failover: RawFailover,
    #[serde(default)]
    wal: RawWal,
    #[serde(default)]
    checkpoint: RawCheckpoint,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    runtime: RawRuntime,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawRuntime {
    worker_threads: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    id: String,
    addr: String,
    http: String,
    #[serde(default = "one")]
    priority: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawReplication {
    mode: String,
    standbys: Option<String>,
    ack: String,
    ack_timeout: String,
    auto_rebuild: bool,
    rebuild_max_rate: String,
}

impl Default for RawReplication {
    fn default() -> Self {
        RawReplication {
            mode: "quorum".into(),
            standbys: None,
            ack: "remote_flush".into(),
            ack_timeout: "5s".into(),
            auto_rebuild: false,
            rebuild_max_rate: "0".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawFailover {
    auto: bool,
    heartbeat_interval: String,
    election_timeout: String,
    max_lag_on_failover: String,
}

impl Default for RawFailover {
    fn default() -> Self {
        RawFailover {
            auto: true,
            heartbeat_interval: "100ms".into(),
            election_timeout: "1s".into(),
            max_lag_on_failover: "16MiB".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWal {
    segment_size: String,
    sync: String,
    min_retained: String,
    max_retained: String,
}

impl Default for RawWal {
    fn default() -> Self {
        RawWal {
            segment_size: "64MiB".into(),
            sync: "always".into(),
            min_retained: "64MiB".into(),
            max_retained: "10GiB".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCheckpoint {
    interval: String,
    max_wal: String,
}

impl Default for RawCheckpoint {
    fn default() -> Self {
        RawCheckpoint {
            interval: "5min".into(),
            max_wal: "256MiB".into(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSecurity {
    token_file: String,
    tls_cert_file: String,
    tls_key_file: String,
    tls_ca_file: String,
    tls_client_auth: String,
}

/// `[security]` TLS keys: all of `tls_cert_file`, `tls_key_file` and
/// `tls_ca_file`, or none; `tls_client_auth` is `none` (default) or `require`
/// (only with TLS). Relative paths are resolved against the config file's
/// directory. The files are checked at start (`tls::NodeTls::new`), where a
/// bad one is refused naming its key.
fn validate_tls(
    s: &RawSecurity,
    config_path: &Path,
) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
    let resolve = |v: &str| {
        let p = PathBuf::from(v);
        if p.is_relative() {
            config_path.parent().unwrap_or(Path::new(".")).join(p)
        } else {
            p
        }
    };
    let client_auth = match s.tls_client_auth.as_str() {
        "" | "none" => false,
        "require" => true,
        other => {
            return Err(bad(
                "security.tls_client_auth",
                other,
                "expected none or require",
            ))
        }
    };
    let keys = [
        ("security.tls_cert_file", &s.tls_cert_file),
        ("security.tls_key_file", &s.tls_key_file),
        ("security.tls_ca_file", &s.tls_ca_file),
    ];
    if keys.iter().all(|(_, v)| v.is_empty()) {
        if client_auth {
            return Err(bad(
                "security.tls_client_auth",
                "require",
                "needs TLS: set tls_cert_file, tls_key_file and tls_ca_file",
            ));
        }
        return Ok(None);
    }
    if let Some((key, _)) = keys.iter().find(|(_, v)| v.is_empty()) {
        return Err(bad(
            key,
            "",
            "TLS needs tls_cert_file, tls_key_file and tls_ca_file together \
             (tls_ca_file verifies the other members)",
        ));
    }
    for (key, v) in keys {
        let p = resolve(v);
        if let Err(e) = std::fs::metadata(&p) {
            return Err(bad(key, v, format!("cannot read {}: {e}", p.display())));
        }
    }
    Ok(Some(crate::tls::TlsFiles {
        cert_file: resolve(&s.tls_cert_file),
        key_file: resolve(&s.tls_key_file),
        ca_file: resolve(&s.tls_ca_file),
        client_auth,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_connections: u64,
    member_reserved_connections: u64,
    max_http_connections: u64,
    max_frame_bytes: String,
    max_http_body_bytes: Option<String>,
    max_key_bytes: String,
    max_value_bytes: Option<String>,
    max_in_flight_per_client: u64,
    handshake_timeout: String,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_connections: 1024,
            member_reserved_connections: 16,
            max_http_connections: 1024,
            max_frame_bytes: "64MiB".into(),
            max_http_body_bytes: None,
            max_key_bytes: "4KiB".into(),
            max_value_bytes: None,
            max_in_flight_per_client: 1024,
            handshake_timeout: "10s".into(),
        }
    }
}

/// Longest duration any config key accepts: 365 days. Bounds the arithmetic the
/// node does on durations (`3 * heartbeat_interval`, `2 * election_timeout + 2s`,
/// milliseconds as u64), which overflowed (a panic at start) for durations near
/// `u64::MAX` seconds.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parse a humantime duration (`100ms`, `5s`, `5min`) of at most [`MAX_DURATION`],
/// naming `key` on error.
pub fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        bad(
            key,
            value,
            format!("not a duration ({e}); write e.g. \"100ms\" or \"5s\""),
        )
    })?;
    if d > MAX_DURATION {
        return Err(bad(key, value, "longer than the maximum of 365 days"));
    }
    Ok(d)
}

/// Parse a size: a plain byte count or a number with B, KiB, MiB, GiB, TiB
/// (also KB/MB/GB, k/M/G, read as powers of 1024), naming `key` on error.
pub fn parse_size(key: &str, value: &str) -> Result<u64, ConfigError> {
    parse_size_str(value).map_err(|reason| bad(key, value, reason))
}

/// Parse a size string (see [`parse_size`]); the error says why.
pub fn parse_size_str(value: &str) -> Result<u64, String> {
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit {
        "" | "B" | "b" => 1,
        "KiB" | "KB" | "K" | "k" | "kB" => 1 << 10,
        "MiB" | "MB" | "M" => 1 << 20,
        "GiB" | "GB" | "G" => 1 << 30,
        "TiB" | "TB" | "T" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?}; write e.g. \"64MiB\" or \"10GiB\""
            ))
        }
    };
    if num.is_empty() {
        return Err("a size needs a number, e.g. \"64MiB\"".into());
    }
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{num:?} is not a number"))?;
    let bytes = n * mult as f64;
    if !(0.0..=(u64::MAX as f64)).contains(&bytes) {
        return Err("size out of range".into());
    }
    Ok(bytes as u64)
}

/// How [`Config::parse_with_resolver`] resolves a host name.
type Resolver<'a> = &'a dyn Fn(&str) -> std::io::Result<Option<SocketAddr>>;

fn parse_addr(key: &str, value: &str, resolve: Resolver) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = value.parse::<SocketAddr>() {
        return Ok(a);
    }
    match resolve(value) {
        Ok(it) => it.ok_or_else(|| bad(key, value, "resolves to no address")),
        Err(e) => Err(bad(key, value, format!("not a host:port address ({e})"))),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl RawConfig {
    fn validate(self, path: &Path, resolve: Resolver) -> Result<Config, ConfigError> {
        if self.cluster_id.is_empty() || self.cluster_id.len() > 128 {
            return Err(bad(
                "cluster_id",
                &self.cluster_id,
                "must be 1 to 128 characters",
            ));
        }
        if !valid_id(&self.node_id) {
            return Err(bad(
                "node_id",
                &self.node_id,
                "must be 1 to 64 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        let listen = parse_addr("listen", &self.listen, resolve)?;
        let http_listen = parse_addr("http_listen", &self.http_listen, resolve)?;
        if self.members.is_empty() {
            return Err(bad(
                "members",
                "[]",
                "list every node of the cluster, this one included",
            ));
        }
        let mut members = Vec::with_capacity(self.members.len());
        let mut seen = HashSet::new();
        for (i, m) in self.members.into_iter().enumerate() {
            let key = |f: &str| format!("members[{i}].{f}");
            if !valid_id(&m.id) {
                return Err(bad(
                    &key("id"),
                    &m.id,
                    "must be 1 to 64 characters of letters, digits, '-', '_' or '.'",
                ));
            }
            if !seen.insert(m.id.clone()) {
                return Err(bad(&key("id"), &m.id, "duplicate member id"));
            }
            members.push(Member {
                addr: parse_addr(&key("addr"), &m.addr, resolve)?,
                http: parse_addr(&key("http"), &m.http, resolve)?,
                id: m.id,
                priority: m.priority,
            });
        }
        if !members.iter().any(|m| m.id == self.node_id) {
            return Err(bad(
                "node_id",
                &self.node_id,
                "is not one of the [[members]] ids",
            ));
        }

        let r = self.replication;
        let mode = match r.mode.as_str() {
            "async" => Mode::Async,
            "sync" => Mode::Sync,
            "quorum" => Mode::Quorum,
            _ => {
                return Err(bad(
                    "replication.mode",
                    &r.mode,
                    "expected async, sync or quorum",
                ))
            }
        };
        let ack: AckLevel = r.ack.parse().map_err(|_| {
            bad(
                "replication.ack",
                &r.ack,
                "expected local, remote_write, remote_flush or remote_apply",
            )
        })?;
        let ack_timeout = parse_duration("replication.ack_timeout", &r.ack_timeout)?;
        // "0" (unlimited) parses as a plain byte count.
        let rebuild_max_rate = parse_size("replication.rebuild_max_rate", &r.rebuild_max_rate)?;
        if ack_timeout.is_zero() {
            return Err(bad(
                "replication.ack_timeout",
                &r.ack_timeout,
                "must be > 0",
            ));
        }
        if let Some(s) = &r.standbys {
            if s.trim().is_empty() {
                return Err(bad(
                    "replication.standbys",
                    s,
                    "empty; leave the key out to use the mode's default",
                ));
            }
        }

        let f = self.failover;
        let heartbeat_interval =
            parse_duration("failover.heartbeat_interval", &f.heartbeat_interval)?;
        let election_timeout = parse_duration("failover.election_timeout", &f.election_timeout)?;
        if heartbeat_interval.is_zero() {
            return Err(bad(
                "failover.heartbeat_interval",
                &f.heartbeat_interval,
                "must be > 0",
            ));
        }
        if election_timeout < heartbeat_interval * 3 {
            return Err(bad(
                "failover.election_timeout",
                &f.election_timeout,
                format!(
                    "must be at least three times failover.heartbeat_interval ({})",
                    f.heartbeat_interval
                ),
            ));
        }
        let max_lag_on_failover =
            parse_size("failover.max_lag_on_failover", &f.max_lag_on_failover)?;

        let w = self.wal;
        let segment_size = parse_size("wal.segment_size", &w.segment_size)?;
        if segment_size < (1 << 20) || !segment_size.is_power_of_two() || segment_size > (1 << 34) {
            return Err(bad(
                "wal.segment_size",
                &w.segment_size,
                "must be a power of two from 1MiB to 16GiB",
            ));
        }
        let sync = match w.sync.as_str() {
            "always" => WalSync::Always,
            "never" => WalSync::Never,
            _ => return Err(bad("wal.sync", &w.sync, "expected always or never")),
        };
        let min_retained = parse_size("wal.min_retained", &w.min_retained)?;
        let max_retained = parse_size("wal.max_retained", &w.max_retained)?;
        if max_retained < min_retained {
            return Err(bad(
                "wal.max_retained",
                &w.max_retained,
                format!("must be >= wal.min_retained ({})", w.min_retained),
            ));
        }

        let c = self.checkpoint;
        let checkpoint = CheckpointConfig {
            interval: parse_duration("checkpoint.interval", &c.interval)?,
            max_wal: parse_size("checkpoint.max_wal", &c.max_wal)?,
        };

        let token = if self.security.token_file.is_empty() {
            None
        } else {
            let p = PathBuf::from(&self.security.token_file);
            let p = if p.is_relative() {
                path.parent().unwrap_or(Path::new(".")).join(p)
            } else {
                p
            };
            let t = read_capped(&p, MAX_TOKEN_FILE_BYTES).map_err(|e| {
                bad(
                    "security.token_file",
                    &self.security.token_file,
                    format!("cannot read {}: {e}", p.display()),
                )
            })?;
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(bad(
                    "security.token_file",
                    &self.security.token_file,
                    "the file is empty",
                ));
            }
            Some(t)
        };

        let tls = validate_tls(&self.security, path)?;

        if self.data_dir.as_os_str().is_empty() {
            return Err(bad("data_dir", "", "must not be empty"));
        }
        let limits = self.limits.validate(segment_size)?;
        let runtime = RuntimeConfig {
            worker_threads: match self.runtime.worker_threads {
                None => None,
                Some(n) => Some(count("runtime.worker_threads", n, 1, MAX_WORKER_THREADS)?),
            },
        };

        Ok(Config {
            cluster_id: self.cluster_id,
            node_id: self.node_id,
            data_dir: self.data_dir,
            listen,
            http_listen,
            members,
            replication: ReplicationConfig {
                mode,
                standbys: r.standbys,
                ack,
                ack_timeout,
                auto_rebuild: r.auto_rebuild,
                rebuild_max_rate,
            },
            failover: FailoverConfig {
                auto: f.auto,
                heartbeat_interval,
                election_timeout,
                max_lag_on_failover,
            },
            wal: WalConfig {
                segment_size,
                sync,
                min_retained,
                max_retained,
            },
            checkpoint,
            security: SecurityConfig { token, tls },
            limits,
            runtime,
        })
    }
}

/// Read a text file of at most `cap` bytes; a larger file is refused without
/// being read into memory.
fn read_capped(p: &Path, cap: u64) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(p)?;
    let mut buf = String::new();
    // One byte more than the cap tells "too large" from "exactly the cap".
    f.take(cap + 1).read_to_string(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file is larger than the maximum of {cap} bytes for a token"),
        ));
    }
    Ok(buf)
}

fn count(key: &str, v: u64, min: u64, max: u64) -> Result<usize, ConfigError> {
    if v < min || v > max {
        return Err(bad(key, v, format!("must be from {min} to {max}")));
    }
    Ok(v as usize)
}

impl RawLimits {
    fn validate(self, segment_size: u64) -> Result<LimitsConfig, ConfigError> {
        let max_connections = count("limits.max_connections", self.max_connections, 1, 1 << 20)?;
        let member_reserved_connections = count(
            "limits.member_reserved_connections",
            self.member_reserved_connections,
            0,
            1 << 20,
        )?;
        if member_reserved_connections >= max_connections {
            return Err(bad(
                "limits.member_reserved_connections",
                self.member_reserved_connections,
                format!(
                    "must be less than limits.max_connections ({max_connections}), or no client could connect"
                ),
            ));
        }
        let max_http_connections = count(
            "limits.max_http_connections",
            self.max_http_connections,
            1,
            1 << 20,
        )?;
        let max_in_flight_per_client = count(
            "limits.max_in_flight_per_client",
            self.max_in_flight_per_client,
            1,
            1 << 20,
        )?;
        let handshake_timeout =
            parse_duration("limits.handshake_timeout", &self.handshake_timeout)?;
        if handshake_timeout.is_zero() {
            return Err(bad(
                "limits.handshake_timeout",
                &self.handshake_timeout,
                "must be > 0",
            ));
        }
        let size = |key: &str, v: &str, min: u64, max: u64| -> Result<usize, ConfigError> {
            let n = parse_size(key, v)?;
            if n < min || n > max {
                return Err(bad(key, v, format!("must be from {min} to {max} bytes")));
            }
            Ok(n as usize)
        };
        let max_key_bytes = size(
            "limits.max_key_bytes",
            &self.max_key_bytes,
            1,
            receiver::state::MAX_KEY_BYTES as u64,
        )?;
        let max_frame_bytes = size(
            "limits.max_frame_bytes",
            &self.max_frame_bytes,
            proto::HANDSHAKE_MAX_FRAME_BYTES as u64,
            proto::MAX_FRAME_BYTES_CEILING as u64,
        )?;
        // A record (4-byte key length, key, value, WAL header and alignment)
        // must fit in half a segment (wal::record::max_record_len).
        let wal_room = (segment_size / 2).saturating_sub(max_key_bytes as u64 + 64) as usize;
        let max_value_bytes = match &self.max_value_bytes {
            Some(v) => {
                let n = size(
                    "limits.max_value_bytes",
                    v,
                    1,
                    MAX_VALUE_BYTES_CEILING as u64,
                )?;
                if n > wal_room {
                    return Err(bad(
                        "limits.max_value_bytes",
                        v,
                        format!(
                            "a record of this value and a key of limits.max_key_bytes must fit in half a WAL segment: at most {wal_room} bytes with wal.segment_size = {segment_size}"
                        ),
                    ));
                }
                n
            }
            // 16 MiB, or less when a segment or a frame could not hold it.
            None => (16usize << 20)
                .min((segment_size / 4) as usize)
                .min(max_frame_bytes.saturating_sub(max_key_bytes + FRAME_OVERHEAD_BYTES))
                .max(1),
        };
        if max_frame_bytes < max_key_bytes + max_value_bytes + FRAME_OVERHEAD_BYTES {
            return Err(bad(
                "limits.max_frame_bytes",
                &self.max_frame_bytes,
                format!(
                    "a put of the largest key and value must fit in one frame: at least limits.max_key_bytes + limits.max_value_bytes + {FRAME_OVERHEAD_BYTES} = {} bytes",
                    max_key_bytes + max_value_bytes + FRAME_OVERHEAD_BYTES
                ),
            ));
        }
        let max_http_body_bytes = match &self.max_http_body_bytes {
            Some(v) => {
                let n = size("limits.max_http_body_bytes", v, 1, 1 << 32)?;
                if n < max_value_bytes {
                    return Err(bad(
                        "limits.max_http_body_bytes",
                        v,
                        format!(
                            "must be at least limits.max_value_bytes ({max_value_bytes}), the largest value a PUT body carries"
                        ),
                    ));
                }
                n
            }
            None => max_value_bytes,
        };
        Ok(LimitsConfig {
            max_connections,
            member_reserved_connections,
            max_http_connections,
            max_frame_bytes,
            max_http_body_bytes,
            max_key_bytes,
            max_value_bytes,
            max_in_flight_per_client,
            handshake_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
cluster_id = "c"
node_id = "n1"
data_dir = "/tmp/x"
listen = "127.0.0.1:7400"
http_listen = "127.0.0.1:7480"
[[members]]
id = "n1"
addr = "127.0.0.1:7400"
http = "127.0.0.1:7480"
"#;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn defaults_match_interface() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.replication.mode, Mode::Quorum);
        assert_eq!(c.replication.ack, AckLevel::RemoteFlush);
        assert_eq!(c.replication.ack_timeout, Duration::from_secs(5));
        assert!(c.failover.auto);
        assert_eq!(c.failover.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(c.failover.election_timeout, Duration::from_secs(1));
        assert_eq!(c.failover.max_lag_on_failover, 16 << 20);
        assert_eq!(c.wal.segment_size, 64 << 20);
        assert_eq!(c.wal.sync, WalSync::Always);
        assert_eq!(c.wal.min_retained, 64 << 20);
        assert_eq!(c.wal.max_retained, 10 << 30);
        assert_eq!(c.checkpoint.interval, Duration::from_secs(300));
        assert_eq!(c.checkpoint.max_wal, 256 << 20);
        assert_eq!(c.security.token, None);
        assert_eq!(c.me().priority, 1);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse(&format!("{MIN}\n[wal]\nsegmnet_size = \"1MiB\"\n")).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("segmnet_size"), "{s}");
    }

    #[test]
    fn bad_value_names_key_and_value() {
        let e = parse(&format!("{MIN}\n[failover]\nelection_timeout = \"soon\"\n")).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("failover.election_timeout") && s.contains("soon"),
            "{s}"
        );
        let e = parse(&format!("{MIN}\n[wal]\nsegment_size = \"3MiB\"\n")).unwrap_err();
        assert!(e.to_string().contains("wal.segment_size"), "{e}");
        let e = parse(&format!("{MIN}\n[replication]\nmode = \"eventual\"\n")).unwrap_err();
        assert!(e.to_string().contains("replication.mode"), "{e}");
        let e = parse(&MIN.replace("node_id = \"n1\"", "node_id = \"n9\"")).unwrap_err();
        assert!(e.to_string().contains("node_id"), "{e}");
        let e = parse(&MIN.replace("addr = \"127.0.0.1:7400\"", "addr = \"nowhere\"")).unwrap_err();
        assert!(e.to_string().contains("members[0].addr"), "{e}");
    }

    #[test]
    fn runtime_worker_threads_default_to_the_cpus_and_are_bounded() {
        assert_eq!(parse(MIN).unwrap().runtime.worker_threads, None);
        let c = parse(&format!("{MIN}\n[runtime]\nworker_threads = 1\n")).unwrap();
        assert_eq!(c.runtime.worker_threads, Some(1));
        for bad_count in ["0", "1025"] {
            let e = parse(&format!("{MIN}\n[runtime]\nworker_threads = {bad_count}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("runtime.worker_threads") && e.contains(bad_count),
                "{e}"
            );
        }
        let e = parse(&format!("{MIN}\n[runtime]\nthreads = 2\n")).unwrap_err();
        assert!(e.to_string().contains("threads"), "{e}");
    }

    #[test]
    fn missing_required_key_is_named() {
        let e = parse(&MIN.replace("cluster_id = \"c\"", "")).unwrap_err();
        assert!(e.to_string().contains("cluster_id"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size_str("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size_str("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size_str("4096").unwrap(), 4096);
        assert_eq!(parse_size_str("1.5KiB").unwrap(), 1536);
        assert!(parse_size_str("MiB").is_err());
        assert!(parse_size_str("3 parsecs").is_err());
    }

    /// Found by the `config` fuzz target (docs/robustness.md): durations near
    /// u64::MAX seconds parsed, then `heartbeat_interval * 3` panicked (overflow)
    /// instead of refusing the config, and `election_timeout * 2 + 2s` (admin
    /// switchover wait) would have panicked later.
    #[test]
    fn huge_durations_are_refused_not_a_panic() {
        for (section, key) in [
            ("failover", "heartbeat_interval"),
            ("failover", "election_timeout"),
            ("replication", "ack_timeout"),
            ("checkpoint", "interval"),
        ] {
            for v in ["6148914691236517206s", "366days"] {
                let text = format!("{MIN}\n[{section}]\n{key} = \"{v}\"\n");
                let e = parse(&text).unwrap_err().to_string();
                assert!(e.contains(&format!("{section}.{key}")), "{e}");
                assert!(e.contains("365 days"), "{e}");
            }
        }
        let text = format!(
            "{MIN}\n[failover]\nheartbeat_interval = \"100days\"\nelection_timeout = \"365days\"\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.failover.election_timeout, MAX_DURATION);
    }

    #[test]
    fn host_names_go_to_the_given_resolver() {
        let text = MIN.replace("addr = \"127.0.0.1:7400\"", "addr = \"node1.example:7400\"");
        let asked = std::cell::RefCell::new(Vec::new());
        let resolve = |s: &str| {
            asked.borrow_mut().push(s.to_string());
            Ok(Some("10.1.2.3:7400".parse().unwrap()))
        };
        let c = Config::parse_with_resolver(&text, Path::new("t.toml"), &resolve).unwrap();
        assert_eq!(c.members[0].addr, "10.1.2.3:7400".parse().unwrap());
        // literal addresses never reach the resolver
        assert_eq!(*asked.borrow(), vec!["node1.example:7400".to_string()]);
        let none = |_: &str| Ok(None);
        let e = Config::parse_with_resolver(&text, Path::new("t.toml"), &none).unwrap_err();
        assert!(e.to_string().contains("members[0].addr"), "{e}");
        assert!(e.to_string().contains("resolves to no address"), "{e}");
    }

    #[test]
    fn token_file_is_read_relative_to_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "s3cret\n").unwrap();
        let text = format!("{MIN}\n[security]\ntoken_file = \"tok\"\n");
        let c = Config::parse(&text, &dir.path().join("node.toml")).unwrap();
        assert_eq!(c.security.token.as_deref(), Some("s3cret"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
        let e = Config::parse(&text, Path::new("/nonexistent/node.toml")).unwrap_err();
        assert!(e.to_string().contains("security.token_file"), "{e}");
    }

    #[test]
    fn limits_defaults() {
        let c = parse(MIN).unwrap();
        let l = &c.limits;
        assert_eq!(l.max_connections, 1024);
        assert_eq!(l.member_reserved_connections, 16);
        assert_eq!(l.max_http_connections, 1024);
        assert_eq!(l.max_frame_bytes, 64 << 20);
        assert_eq!(l.max_key_bytes, 4096);
        assert_eq!(l.max_value_bytes, 16 << 20);
        assert_eq!(l.max_http_body_bytes, 16 << 20);
        assert_eq!(l.max_in_flight_per_client, 1024);
        assert_eq!(l.handshake_timeout, Duration::from_secs(10));
        // Small segments lower the default value limit so a record fits.
        let c = parse(&format!("{MIN}\n[wal]\nsegment_size = \"1MiB\"\n")).unwrap();
        assert_eq!(c.limits.max_value_bytes, 256 << 10);
        assert_eq!(c.limits.max_http_body_bytes, 256 << 10);
        // So does a small frame limit.
        let c = parse(&format!("{MIN}\n[limits]\nmax_frame_bytes = \"1MiB\"\n")).unwrap();
        assert_eq!(
            c.limits.max_value_bytes,
            (1 << 20) - 4096 - FRAME_OVERHEAD_BYTES
        );
    }

    #[test]
    fn limits_every_key_parses() {
        let text = format!(
            "{MIN}\n[limits]\nmax_connections = 50\nmember_reserved_connections = 5\n\
             max_http_connections = 60\nmax_frame_bytes = \"2MiB\"\nmax_http_body_bytes = \"3MiB\"\n\
             max_key_bytes = \"100\"\nmax_value_bytes = \"1MiB\"\nmax_in_flight_per_client = 7\n\
             handshake_timeout = \"2s\"\n"
        );
        let l = parse(&text).unwrap().limits;
        assert_eq!(
            l,
            LimitsConfig {
                max_connections: 50,
                member_reserved_connections: 5,
                max_http_connections: 60,
                max_frame_bytes: 2 << 20,
                max_http_body_bytes: 3 << 20,
                max_key_bytes: 100,
                max_value_bytes: 1 << 20,
                max_in_flight_per_client: 7,
                handshake_timeout: Duration::from_secs(2),
            }
        );
    }

    #[test]
    fn limits_bad_values_name_the_key() {
        for (kv, key) in [
            ("max_connections = 0", "limits.max_connections"),
            ("max_connections = -1", "max_connections"),
            (
                "member_reserved_connections = 1024",
                "limits.member_reserved_connections",
            ),
            ("max_http_connections = 0", "limits.max_http_connections"),
            ("max_frame_bytes = \"1KiB\"", "limits.max_frame_bytes"),
            ("max_frame_bytes = \"8GiB\"", "limits.max_frame_bytes"),
            ("max_frame_bytes = \"lots\"", "limits.max_frame_bytes"),
            (
                "max_frame_bytes = \"1MiB\"\nmax_value_bytes = \"1MiB\"",
                "limits.max_frame_bytes",
            ),
            (
                "max_http_body_bytes = \"1KiB\"",
                "limits.max_http_body_bytes",
            ),
            ("max_http_body_bytes = \"0\"", "limits.max_http_body_bytes"),
            ("max_key_bytes = \"0\"", "limits.max_key_bytes"),
            ("max_key_bytes = \"5KiB\"", "limits.max_key_bytes"),
            ("max_value_bytes = \"0\"", "limits.max_value_bytes"),
            ("max_value_bytes = \"61MiB\"", "limits.max_value_bytes"),
            ("max_value_bytes = \"40MiB\"", "limits.max_value_bytes"), // > half a 64MiB segment
            (
                "max_in_flight_per_client = 0",
                "limits.max_in_flight_per_client",
            ),
            ("handshake_timeout = \"0s\"", "limits.handshake_timeout"),
            ("handshake_timeout = \"later\"", "limits.handshake_timeout"),
            ("max_conections = 5", "max_conections"),
        ] {
            let e = parse(&format!("{MIN}\n[limits]\n{kv}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{kv}: {e}");
        }
    }

    #[test]
    fn huge_token_file_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tok"),
            vec![b'a'; MAX_TOKEN_FILE_BYTES as usize + 1],
        )
        .unwrap();
        let text = format!("{MIN}\n[security]\ntoken_file = \"tok\"\n");
        let e = Config::parse(&text, &dir.path().join("node.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("security.token_file"), "{e}");
        assert!(e.contains("larger than the maximum"), "{e}");
        // Exactly at the cap is accepted.
        std::fs::write(
            dir.path().join("tok"),
            vec![b'a'; MAX_TOKEN_FILE_BYTES as usize],
        )
        .unwrap();
        let c = Config::parse(&text, &dir.path().join("node.toml")).unwrap();
        assert_eq!(
            c.security.token.map(|t| t.len()),
            Some(MAX_TOKEN_FILE_BYTES as usize)
        );
        // An endless file (it used to be read whole: start-up never finished).
        let text = format!("{MIN}\n[security]\ntoken_file = \"/dev/zero\"\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("security.token_file") && e.contains("larger than"),
            "{e}"
        );
    }

    #[test]
    fn tls_keys_go_together_and_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["n1.pem", "n1.key", "ca.pem"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let cfg = dir.path().join("node.toml");
        let all =
            "tls_cert_file = \"n1.pem\"\ntls_key_file = \"n1.key\"\ntls_ca_file = \"ca.pem\"\n";
        let c = Config::parse(&format!("{MIN}\n[security]\n{all}"), &cfg).unwrap();
        let tls = c.security.tls.unwrap();
        assert_eq!(tls.cert_file, dir.path().join("n1.pem"));
        assert_eq!(tls.ca_file, dir.path().join("ca.pem"));
        assert!(!tls.client_auth);
        let c = Config::parse(
            &format!("{MIN}\n[security]\n{all}tls_client_auth = \"require\"\n"),
            &cfg,
        )
        .unwrap();
        assert!(c.security.tls.unwrap().client_auth);

        let err = |extra: &str| {
            Config::parse(&format!("{MIN}\n[security]\n{extra}"), &cfg)
                .unwrap_err()
                .to_string()
        };
        let e = err("tls_cert_file = \"n1.pem\"\ntls_key_file = \"n1.key\"\n");
        assert!(e.contains("security.tls_ca_file"), "{e}");
        let e = err("tls_cert_file = \"n1.pem\"\ntls_ca_file = \"ca.pem\"\n");
        assert!(e.contains("security.tls_key_file"), "{e}");
        let e = err("tls_client_auth = \"require\"\n");
        assert!(e.contains("security.tls_client_auth"), "{e}");
        let e = err(&format!("{all}tls_client_auth = \"maybe\"\n"));
        assert!(e.contains("security.tls_client_auth"), "{e}");
        let e = err("tls_cert_file = \"missing.pem\"\ntls_key_file = \"n1.key\"\ntls_ca_file = \"ca.pem\"\n");
        assert!(
            e.contains("security.tls_cert_file") && e.contains("missing.pem"),
            "{e}"
        );
        assert_eq!(Config::parse(MIN, &cfg).unwrap().security.tls, None);
    }
}
