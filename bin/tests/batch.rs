//! Batched writes (`PutBatch` / `AppendBatch`, `walship::Client::put_batch` /
//! `append_batch`): one request, one WAL append of contiguous records, all or
//! nothing, one acknowledgement; the LSNs returned are the records' ends; the
//! followers hold the same bytes and apply every record.

mod common;

use bytes::Bytes;
use common::{Cluster, Opts};
use proto::{AckLevel, ClientOp, ClientResult, ErrorCode};
use walship::client::ClientError;
use walship::node::listener::handle_client_op;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_round_trip_with_their_lsns_and_followers_match() {
    let c = Cluster::start(Opts::new(3, "quorum")).await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    let client = c.client(l).await;
    let term = c.shared(l).role().term;

    // 300 puts of mixed sizes (up to 4 KiB): with 1 MiB segments the batch
    // fits in one segment or crosses into the next one; either way contiguous.
    let entries: Vec<(Bytes, Bytes)> = (0..300)
        .map(|i| {
            let v = vec![b'a' + (i % 26) as u8; [10, 100, 4096][i % 3]];
            (Bytes::from(format!("bk{i}")), Bytes::from(v))
        })
        .collect();
    let before = c.shared(l).wal.write_lsn().0;
    let (lsns, t) = client
        .put_batch(entries.clone(), AckLevel::RemoteFlush)
        .await
        .expect("put_batch");
    assert_eq!(t, term);
    assert_eq!(lsns.len(), entries.len());
    assert!(lsns[0] > before);
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "LSNs ascend");
    let last = *lsns.last().expect("lsns");
    assert!(c.shared(l).wal.flush_lsn().0 >= last);

    // The leader's WAL holds exactly these records, in order, ending at the
    // returned LSNs (PADDING at a segment end is skipped by the reader).
    let wal = &c.shared(l).wal;
    let mut reader = wal.reader(wal::Lsn(before)).expect("reader");
    for (i, (k, v)) in entries.iter().enumerate() {
        let rec = reader.next().expect("record").expect("valid record");
        assert_eq!(rec.end.0, lsns[i], "record {i} end");
        assert_eq!(rec.term, term);
        assert_eq!(rec.kind, receiver::state::KIND_PUT);
        let (rk, rv) = receiver::state::decode_put(rec.payload).expect("put payload");
        assert_eq!((rk, rv), (&k[..], &v[..]), "record {i}");
    }

    // Opaque records the same way.
    let payloads: Vec<Bytes> = (0..50)
        .map(|i| Bytes::from(format!("log record {i}")))
        .collect();
    let (alsns, _) = client
        .append_batch(payloads.clone(), AckLevel::RemoteApply)
        .await
        .expect("append_batch");
    assert_eq!(alsns.len(), 50);
    assert!(alsns[0] > last);
    let mut reader = wal.reader(wal::Lsn(last)).expect("reader");
    for (i, p) in payloads.iter().enumerate() {
        let rec = reader.next().expect("record").expect("valid record");
        assert_eq!(rec.end.0, alsns[i]);
        assert_eq!(rec.kind, receiver::state::KIND_LOG);
        assert_eq!(rec.payload, &p[..]);
    }

    // Every node applies every record; reads on a follower see the batch.
    for f in (0..3).filter(|&i| i != l) {
        for i in [0usize, 1, 2, 150, 299] {
            let (st, body, applied) = c
                .get(f, &format!("bk{i}"), &format!("?min_lsn={last}&wait=10s"))
                .await;
            assert_eq!(st, 200, "bk{i} on {}", c.ids[f]);
            assert_eq!(body.as_bytes(), &entries[i].1[..]);
            assert!(applied >= last);
        }
    }
    c.wait_converged().await;
    c.assert_wal_identical();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_limits_are_enforced_all_or_nothing() {
    let c = Cluster::start(Opts::new(3, "quorum")).await;
    let l = c.wait_leader().await;
    c.wait_streaming(l).await;
    let client = c.client(l).await;
    let shared = c.shared(l).clone();

    // The client refuses what the node would refuse, before sending.
    let r = client.put_batch(Vec::new(), AckLevel::Default).await;
    assert!(matches!(r, Err(ClientError::BadBatch(_))), "{r:?}");
    let too_many: Vec<Bytes> = (0..proto::MAX_BATCH_RECORDS + 1)
        .map(|_| Bytes::from_static(b"x"))
        .collect();
    let r = client
        .append_batch(too_many.clone(), AckLevel::Default)
        .await;
    assert!(matches!(r, Err(ClientError::BadBatch(_))), "{r:?}");

    // The node refuses them too (a client of another implementation).
    let end = shared.wal.write_lsn().0;
    let bad_request = |r: ClientResult| match r {
        ClientResult::Error { code, .. } => assert_eq!(code, ErrorCode::BadRequest),
        other => panic!("expected bad_request, got {other:?}"),
    };
    bad_request(
        handle_client_op(
            &shared,
            ClientOp::PutBatch {
                entries: Vec::new(),
                ack: AckLevel::Default,
            },
        )
        .await,
    );
    bad_request(
        handle_client_op(
            &shared,
            ClientOp::AppendBatch {
                payloads: too_many,
                ack: AckLevel::Default,
            },
        )
        .await,
    );
    // One bad key refuses the whole batch: nothing is written.
    bad_request(
        handle_client_op(
            &shared,
            ClientOp::PutBatch {
                entries: vec![
                    (Bytes::from_static(b"ok"), Bytes::from_static(b"v")),
                    (Bytes::new(), Bytes::from_static(b"v")),
                ],
                ack: AckLevel::Default,
            },
        )
        .await,
    );
    // One record over the WAL's record limit refuses the whole batch.
    let huge = Bytes::from(vec![0u8; shared.wal.max_payload() + 1]);
    let r = handle_client_op(
        &shared,
        ClientOp::AppendBatch {
            payloads: vec![Bytes::from_static(b"small"), huge],
            ack: AckLevel::Default,
        },
    )
    .await;
    assert!(matches!(r, ClientResult::Error { .. }), "{r:?}");
    assert_eq!(
        shared.wal.write_lsn().0,
        end,
        "a refused batch wrote nothing"
    );

    // A follower redirects a batch to the leader.
    let f = (0..3).find(|&i| i != l).expect("a follower");
    let fc = c.client(f).await;
    let r = fc
        .put_batch(
            vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v"))],
            AckLevel::Default,
        )
        .await;
    match r {
        Err(ClientError::Server { code, leader, .. }) => {
            assert_eq!(code, ErrorCode::NotLeader);
            assert_eq!(leader, Some(c.cfgs[l].listen.to_string()));
        }
        other => panic!("expected not_leader from a follower, got {other:?}"),
    }
    c.shutdown().await;
}
