//! Encode/decode throughput of WalData frames. Prints figures, asserts nothing
//! about time. Run: `cargo test -p proto --release --test throughput -- --ignored --nocapture`

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use proto::{FrameCodec, Message};
use tokio_util::codec::{Decoder, Encoder};

#[test]
#[ignore = "measurement, run by hand"]
fn wal_data_throughput() {
    for chunk in [4 << 10, 128 << 10, 1 << 20] {
        let msg = Message::WalData {
            start_lsn: 0,
            bytes: Bytes::from(vec![0x42u8; chunk]),
        };
        let total: usize = 1 << 30;
        let frames = total / chunk;
        let mut enc = FrameCodec::established(64 << 20);
        let mut dec = FrameCodec::established(64 << 20);
        let mut buf = BytesMut::with_capacity(4 * (chunk + 16));
        let t = Instant::now();
        let mut got = 0usize;
        for _ in 0..frames {
            enc.encode(&msg, &mut buf).unwrap();
            if let Some(Message::WalData { bytes, .. }) = dec.decode(&mut buf).unwrap() {
                got += bytes.len();
            }
        }
        let s = t.elapsed().as_secs_f64();
        assert_eq!(got, frames * chunk);
        println!(
            "WalData {:>7} B frames: {:>8.0} frames/s, {:>6.2} GB/s encode+decode",
            chunk,
            frames as f64 / s,
            got as f64 / s / 1e9
        );
    }
    // Small control frames.
    let msg = Message::FollowerStatus {
        write_lsn: 1,
        flush_lsn: 2,
        apply_lsn: 3,
        send_time_us: 4,
        reply_to_time_us: 5,
    };
    let mut enc = FrameCodec::established(64 << 20);
    let mut dec = FrameCodec::established(64 << 20);
    let mut buf = BytesMut::with_capacity(1 << 16);
    let n = 2_000_000;
    let t = Instant::now();
    for _ in 0..n {
        enc.encode(&msg, &mut buf).unwrap();
        assert!(dec.decode(&mut buf).unwrap().is_some());
    }
    println!(
        "FollowerStatus frames: {:.0} frames/s encode+decode",
        n as f64 / t.elapsed().as_secs_f64()
    );
}
