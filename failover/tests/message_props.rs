//! Property tests of the failover message encoding: arbitrary bytes never panic the
//! decoder, every message round-trips, and decoding is canonical.

use failover::{Message, Refusal};
use proptest::prelude::*;

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        "n[0-9]{1,3}",
        "[a-zA-Z0-9_é-]{0,40}",
        proptest::string::string_regex(".{0,85}").unwrap()
    ]
    .prop_filter("id within MAX_ID_LEN bytes", |s| {
        s.len() <= failover::MAX_ID_LEN
    })
}

fn refusal() -> impl Strategy<Value = Option<Refusal>> {
    (0u8..=12).prop_map(Refusal::from_code)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u64>(),
            id(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(
                |(term, candidate, last_term, last_lsn, pre_vote, transfer, force)| {
                    Message::VoteRequest {
                        term,
                        candidate,
                        last_term,
                        last_lsn,
                        pre_vote,
                        transfer,
                        force,
                    }
                }
            ),
        (any::<u64>(), any::<bool>(), any::<bool>(), refusal()).prop_map(
            |(term, granted, pre_vote, reject_reason)| {
                Message::VoteResponse {
                    term,
                    granted,
                    pre_vote,
                    reject_reason,
                }
            }
        ),
        (
            any::<u64>(),
            id(),
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec(id(), 0..6),
            proptest::collection::vec(id(), 0..6)
        )
            .prop_map(
                |(term, leader, leader_flush_lsn, paused, sync_standbys, succession)| {
                    Message::Heartbeat {
                        term,
                        leader,
                        leader_flush_lsn,
                        paused,
                        sync_standbys,
                        succession,
                    }
                }
            ),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(term, last_term, last_lsn)| {
            Message::HeartbeatAck {
                term,
                last_term,
                last_lsn,
            }
        }),
        any::<u64>().prop_map(|term| Message::TimeoutNow { term }),
        (any::<u64>(), any::<bool>())
            .prop_map(|(term, paused)| Message::SetPaused { term, paused }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn plausible_prefix_bytes_never_panic(tag in 0u8..8, rest in proptest::collection::vec(any::<u8>(), 0..120)) {
        let mut b = vec![1, tag];
        b.extend_from_slice(&rest);
        if let Ok(m) = Message::decode(&b) {
            // Canonical: whatever decodes re-encodes to the same bytes.
            prop_assert_eq!(&m.encode()[..], &b[..]);
        }
    }

    #[test]
    fn round_trip(m in message()) {
        let b = m.encode();
        prop_assert_eq!(Message::decode(&b).unwrap(), m);
    }

    #[test]
    fn corrupted_encoding_never_panics(m in message(), pos in any::<usize>(), byte in any::<u8>()) {
        let mut b = m.encode().to_vec();
        let i = pos % b.len();
        b[i] = byte;
        let _ = Message::decode(&b);
        let _ = Message::decode(&b[..i]);
    }
}
