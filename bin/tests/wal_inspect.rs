//! `walship wal inspect`: dumps records, verifies, names file and offset of damage.

use std::process::Command;

fn walship() -> Command {
    Command::new(env!("CARGO_BIN_EXE_walship"))
}

fn make_wal(dir: &std::path::Path) -> wal::Lsn {
    let (w, _) = wal::Wal::open(
        &dir.join("wal"),
        wal::WalOptions {
            segment_size: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    w.append(1, wal::kind::TERM_START, b"n1").unwrap();
    for i in 0..2500u32 {
        let p = receiver::state::encode_put(format!("k{i}").as_bytes(), &[7u8; 900]);
        w.append(1, receiver::state::KIND_PUT, &p).unwrap();
    }
    let end = w.write_lsn();
    w.flush(end).unwrap();
    end
}

#[test]
fn inspect_dumps_every_record_and_verifies_clean() {
    let dir = tempfile::tempdir().unwrap();
    let end = make_wal(dir.path());
    let out = walship()
        .args(["wal", "inspect"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.contains("kind put")).count(),
        2500
    );
    assert!(text.contains("kind term_start"));
    assert!(text.contains(&format!("end {end}")), "{text}");
    let out = walship()
        .args(["wal", "inspect", "--verify"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn inspect_from_skips_earlier_records() {
    let dir = tempfile::tempdir().unwrap();
    make_wal(dir.path());
    let out = walship()
        .args(["wal", "inspect", "--from", "0/100000"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("lsn") && first.contains("0/100000"),
        "{first}"
    );
}

#[test]
fn verify_fails_on_damage_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    make_wal(dir.path());
    let seg = dir.path().join("wal").join("0000000000000000.wal");
    let mut b = std::fs::read(&seg).unwrap();
    b[300_000] ^= 0x01;
    std::fs::write(&seg, &b).unwrap();
    let out = walship()
        .args(["wal", "inspect", "--verify"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("0000000000000000.wal") && err.contains("offset"),
        "{err}"
    );
}

#[test]
fn bad_from_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    make_wal(dir.path());
    let out = walship()
        .args(["wal", "inspect", "--from", "nonsense"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
