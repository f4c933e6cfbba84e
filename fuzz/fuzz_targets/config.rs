//! `config`: `walship::config::Config::parse_with_resolver` on arbitrary UTF-8
//! (what `walship serve --config` reads), with a resolver that never sends a DNS
//! query: `host:port` names of letters, digits, `-` and `.` map to a fixed address
//! derived from the name, `*.invalid` names resolve to nothing, anything else is an
//! error. The config path lies in a scratch directory holding a `token` file, so a
//! relative `security.token_file = "token"` reads a real token.
//!
//! Checks: parsing never panics; an accepted config holds the invariants the node
//! relies on (its id is a member, ids unique, election timeout >= 3 heartbeats,
//! segment size a power of two in 1 MiB..=16 GiB, max >= min retained, a token is
//! non-empty), and the values the daemon derives from it at start (the failover
//! core's config, `election_timeout * 2 + 2s` of the admin waits) do not overflow.
#![no_main]

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use walship::config::Config;

fn config_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = walship_fuzz::scratch_dir().join("config");
        std::fs::create_dir_all(&dir).expect("create the config scratch dir");
        std::fs::write(dir.join("token"), "s3cret-token\n").expect("write the token file");
        std::fs::write(dir.join("empty-token"), "\n").expect("write the token file");
        dir.join("walship.toml")
    })
}

fn resolve(s: &str) -> io::Result<Option<SocketAddr>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "invalid socket address");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(io::Error::new(io::ErrorKind::NotFound, "unknown host"));
    }
    if host.ends_with(".invalid") {
        return Ok(None);
    }
    let h = host
        .bytes()
        .fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    Ok(Some(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 9, 0, h)),
        port,
    )))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = Config::parse_with_resolver(text, config_path(), &resolve) else {
        return;
    };
    let me = c.me();
    assert_eq!(me.id, c.node_id, "node_id is not a member");
    assert!(c.member(&c.node_id).is_some());
    let ids: HashSet<&str> = c.members.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), c.members.len(), "duplicate member ids accepted");
    assert!(!c.cluster_id.is_empty());
    assert!(!c.failover.heartbeat_interval.is_zero());
    assert!(!c.replication.ack_timeout.is_zero());
    let three = c
        .failover
        .heartbeat_interval
        .checked_mul(3)
        .expect("heartbeat_interval * 3 overflows");
    assert!(c.failover.election_timeout >= three);
    let ws = c.wal.segment_size;
    assert!(ws.is_power_of_two() && (1 << 20..=1 << 34).contains(&ws));
    assert!(c.wal.max_retained >= c.wal.min_retained);
    if let Some(t) = &c.security.token {
        assert!(!t.is_empty() && t.trim() == t);
    }
    // What the node derives at start must not overflow.
    c.failover
        .election_timeout
        .checked_mul(2)
        .and_then(|d| d.checked_add(Duration::from_secs(2)))
        .expect("election_timeout * 2 + 2s overflows (admin waits)");
    let ms = |d: Duration| u64::try_from(d.as_millis()).expect("duration in ms overflows u64");
    let members = c
        .members
        .iter()
        .map(|m| failover::Member {
            id: m.id.clone(),
            priority: m.priority,
        })
        .collect();
    let mut fc = failover::Config::new(c.node_id.clone(), members);
    fc.heartbeat_interval_ms = ms(c.failover.heartbeat_interval);
    fc.election_timeout_ms = ms(c.failover.election_timeout);
    if fc.validate().is_ok() {
        let _ = fc.timing();
    }
    let _ = ms(c.replication.ack_timeout);
    let _ = ms(c.checkpoint.interval);
});
