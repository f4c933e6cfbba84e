//! `failover`: terms, votes, elections, fencing and switchover as a sans-IO state machine.
