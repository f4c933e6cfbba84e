//! Process-level fault runs with the history checker of `walship::faults`
//! (docs/FAULTS.md): real `walship serve` processes on loopback, writers and
//! readers running while nodes are SIGKILLed, SIGSTOPped and restarted.
//!
//! | test | what it runs |
//! |---|---|
//! | `fault_run_bounded` | 10 rounds with a seed from `WALSHIP_FAULT_SEED` (random when unset, printed); part of CI |
//! | `fault_soak` (ignored) | the longer soak: `WALSHIP_FAULT_DURATION` (default 5m) or `WALSHIP_FAULT_ROUNDS` |
//!
//! On failure the test prints the seed and keeps the directory with configs,
//! data and node logs. Times are never asserted; the time limits inside the
//! run are generous upper bounds only.

use std::sync::Mutex;

use walship::faults::{FaultOptions, FaultReport};

static SERIAL: Mutex<()> = Mutex::new(());

const EXE: &str = env!("CARGO_BIN_EXE_walship");

fn run_with(opts: FaultOptions) -> FaultReport {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::Builder::new()
        .prefix("walship-faults-")
        .tempdir()
        .expect("tempdir");
    let seed = opts.seed;
    let result = rt.block_on(walship::faults::run(EXE.as_ref(), dir.path(), &opts));
    match result {
        Ok(report) if report.ok() => {
            println!("{report}");
            report
        }
        Ok(report) => {
            let kept = dir.keep();
            panic!(
                "{report}\nthe history checker found violations; replay with WALSHIP_FAULT_SEED={seed}; configs, data and node logs kept in {}",
                kept.display()
            );
        }
        Err(e) => {
            let kept = dir.keep();
            panic!(
                "the fault run (seed {seed}) failed before its verdict: {e}\nreplay with WALSHIP_FAULT_SEED={seed}; configs, data and node logs kept in {}",
                kept.display()
            );
        }
    }
}

#[test]
fn fault_run_bounded() {
    let opts = FaultOptions::from_env(10).expect("WALSHIP_FAULT_* settings");
    let report = run_with(opts);
    assert!(report.rounds > 0 && report.writes_acked > 0 && report.reads > 0);
    assert_eq!(report.writes_lost, 0);
}

#[test]
#[ignore = "the long soak: WALSHIP_FAULT_DURATION=5m (default) or WALSHIP_FAULT_ROUNDS=n"]
fn fault_soak() {
    if std::env::var_os("WALSHIP_FAULT_DURATION").is_none()
        && std::env::var_os("WALSHIP_FAULT_ROUNDS").is_none()
    {
        std::env::set_var("WALSHIP_FAULT_DURATION", "5m");
    }
    let opts = FaultOptions::from_env(usize::MAX).expect("WALSHIP_FAULT_* settings");
    let report = run_with(opts);
    assert_eq!(report.writes_lost, 0);
}
