//! `walship wal inspect DIR [--from LSN] [--verify]`: an offline dump of a data
//! directory's WAL, like `pg_waldump`. Read-only: it never repairs or locks.
//! With `--verify` the exit status is 1 when any damage is found (each named
//! with file and byte offset), 0 otherwise.

use std::io::Write;
use std::path::Path;

use crate::commands::{EXIT_FAILED, EXIT_USAGE};

/// A human name for a record kind.
pub fn kind_name(kind: u8) -> String {
    match kind {
        wal::kind::PADDING => "padding".into(),
        wal::kind::TERM_START => "term_start".into(),
        receiver::state::KIND_PUT => "put".into(),
        receiver::state::KIND_DELETE => "delete".into(),
        receiver::state::KIND_LOG => "log".into(),
        k => format!("kind{k}"),
    }
}

/// Run; returns the exit status.
pub fn run(dir: &Path, from: Option<&str>, verify: bool) -> i32 {
    let from = match from.map(|f| f.parse::<wal::Lsn>()) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(e)) => {
            eprintln!("walship: --from: {e}");
            return EXIT_USAGE;
        }
    };
    let wal_dir = if dir.join("wal").is_dir() {
        dir.join("wal")
    } else {
        dir.to_path_buf()
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = wal::inspect::inspect(&wal_dir, from, |r| {
        if verify {
            return;
        }
        let _ = writeln!(
            out,
            "lsn {:>12}  end {:>12}  term {:>4}  kind {:<10}  len {:>8}  crc {:08X}",
            r.lsn.to_string(),
            r.end.to_string(),
            r.term,
            kind_name(r.kind),
            r.len,
            r.crc
        );
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = out.flush();
            eprintln!("walship: cannot inspect {}: {e}", wal_dir.display());
            return EXIT_FAILED;
        }
    };
    let _ = writeln!(
        out,
        "summary: {} segment(s), {} record(s) (+{} padding), first {}, end {}, last term {}, {} problem(s)",
        report.segments,
        report.records,
        report.padding,
        report.first_lsn,
        report.end_lsn,
        report.last_term,
        report.problems.len()
    );
    let _ = out.flush();
    for p in &report.problems {
        eprintln!(
            "damage: {} offset {} (LSN {}): {}",
            p.file.display(),
            p.offset,
            p.lsn,
            p.reason
        );
    }
    if report.segments == 0 {
        eprintln!("walship: no WAL segment found in {}", wal_dir.display());
        return if verify { EXIT_FAILED } else { 0 };
    }
    if verify && !report.problems.is_empty() {
        return EXIT_FAILED;
    }
    0
}
