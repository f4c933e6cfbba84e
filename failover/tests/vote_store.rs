//! Vote store: durability round trip and detection of damaged files.

use failover::{FailoverError, PersistentState, VoteStore};

fn state() -> PersistentState {
    PersistentState {
        term: 9,
        voted_for: Some("n2".into()),
        paused: true,
        last_leader: Some("n1".into()),
        sync_standbys: vec!["n2".into()],
    }
}

#[test]
fn missing_file_is_a_fresh_node() {
    let dir = tempfile::tempdir().unwrap();
    let s = VoteStore::open(dir.path().join("failover.state")).unwrap();
    assert_eq!(s.load().unwrap(), PersistentState::default());
}

#[test]
fn save_then_load_and_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failover.state");
    let s = VoteStore::open(&path).unwrap();
    s.save(&state()).unwrap();
    assert_eq!(s.load().unwrap(), state());
    let next = PersistentState {
        term: 10,
        voted_for: None,
        ..state()
    };
    s.save(&next).unwrap();
    // A new process sees the last saved state.
    assert_eq!(VoteStore::open(&path).unwrap().load().unwrap(), next);
    assert!(!dir.path().join("failover.state.tmp").exists());
}

#[test]
fn torn_file_is_an_error_not_term_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failover.state");
    let s = VoteStore::open(&path).unwrap();
    s.save(&state()).unwrap();
    let full = std::fs::read(&path).unwrap();
    for cut in [0, 5, 12, full.len() - 1] {
        std::fs::write(&path, &full[..cut]).unwrap();
        match s.load() {
            Err(FailoverError::Corrupt { reason, .. }) => assert!(!reason.is_empty()),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    let mut flipped = full.clone();
    flipped[14] ^= 0x40;
    std::fs::write(&path, &flipped).unwrap();
    assert!(matches!(s.load(), Err(FailoverError::Corrupt { .. })));
}

#[test]
fn leftover_tmp_from_a_crashed_save_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failover.state");
    VoteStore::open(&path).unwrap().save(&state()).unwrap();
    std::fs::write(dir.path().join("failover.state.tmp"), b"half a wri").unwrap();
    let s = VoteStore::open(&path).unwrap();
    assert_eq!(s.load().unwrap(), state());
    assert!(!dir.path().join("failover.state.tmp").exists());
}

#[test]
fn missing_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = VoteStore::open(dir.path().join("nope/failover.state")).unwrap_err();
    assert!(matches!(err, FailoverError::Io { .. }), "{err}");
}
