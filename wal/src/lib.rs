//! `wal`: walship's storage engine — a segmented, memory-mapped write-ahead log.
//! PLACEHOLDER DOC
#![deny(missing_docs)]

mod error;
mod flushgate;
mod history;
mod lsn;
mod reader;
pub mod record;
mod recovery;
mod segment;
mod wal;

pub use error::WalError;
pub use history::{fork_point, term_at, TermSpan, TERM_HISTORY_FILE};
pub use lsn::Lsn;
pub use reader::{RecordRef, WalReader};
pub use record::kind;
pub use wal::{Appended, RecoveryReport, TruncateReport, Wal, WalOptions};

/// A leader's term (election epoch). Every record carries the term of its writer.
pub type Term = u64;

#[cfg(test)]
mod tests;
