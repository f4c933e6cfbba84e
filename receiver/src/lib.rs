//! `receiver`: the follower side of replication — connect to the leader, stream,
//! append the WAL bytes verbatim, flush, report progress ([`stream`]), and
//! replay committed records into a [`state::StateMachine`] (the built-in
//! [`state::KvStore`]), which [`checkpoint`] writes to and loads from disk.

pub mod checkpoint;
pub mod state;
pub mod stream;
