//! `receiver`: the follower side of replication — stream, append verbatim, flush, report, replay.
