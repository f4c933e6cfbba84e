//! `wal`: walship's storage engine — a segmented, memory-mapped write-ahead log.
