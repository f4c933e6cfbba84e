//! `proto`: the wire format shared by replication, votes and clients.
