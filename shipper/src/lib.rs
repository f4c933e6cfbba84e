//! `shipper`: the leader side of replication — WAL senders, follower progress and the commit gate.
