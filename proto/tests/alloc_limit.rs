//! Measures the largest single allocation the decoder makes for hostile
//! headers, with a counting global allocator. The peak is kept per thread, so
//! tests running side by side (and the harness's own threads) never see each
//! other's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{BufMut, BytesMut};
use proto::{FrameCodec, ProtoError};
use tokio_util::codec::Decoder;

struct Peak;

thread_local! {
    /// Largest single allocation made by this thread since the last reset.
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown are simply not counted.
    let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
}

unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Peak = Peak;

fn peak_during(f: impl FnOnce()) -> usize {
    PEAK.with(|p| p.set(0));
    f();
    PEAK.with(|p| p.get())
}

#[test]
fn decoder_allocations_are_bounded_by_the_limit() {
    const LIMIT: usize = 1 << 20;
    // Hostile lengths: refused from the header, nothing big allocated.
    for len in [u32::MAX, (LIMIT + 1) as u32, 0x4745_5420 /* "GET " */] {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u32(len);
        buf.put_u8(0x12);
        let peak = peak_during(|| {
            let r = FrameCodec::established(LIMIT).decode(&mut buf);
            assert!(matches!(r, Err(ProtoError::FrameTooLarge { .. })), "{r:?}");
        });
        assert!(
            peak < 4096,
            "allocated {peak} bytes for a refused {len}-byte frame"
        );
    }
    // Before the handshake the limit is 64 KiB even if the codec allows 1 MiB later.
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32(LIMIT as u32);
    buf.put_u8(0x01);
    let peak = peak_during(|| {
        let r = FrameCodec::new(LIMIT).decode(&mut buf);
        assert!(matches!(r, Err(ProtoError::FrameTooLarge { max, .. }) if max == 64 << 10));
    });
    assert!(peak < 4096, "allocated {peak} bytes before the handshake");
    // A length at the limit: one reservation of about the frame, no more.
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32(LIMIT as u32);
    buf.put_u8(0x12);
    let peak = peak_during(|| {
        assert_eq!(
            FrameCodec::established(LIMIT).decode(&mut buf).unwrap(),
            None
        );
    });
    assert!(
        peak <= 2 * (LIMIT + 4),
        "allocated {peak} bytes for a {LIMIT}-byte frame"
    );
}

/// A batch whose count claims billions of entries in a tiny body is refused
/// as malformed before any Vec is sized from the count.
#[test]
fn hostile_batch_counts_allocate_nothing() {
    // (type byte, op or result byte) of PutBatch, AppendBatch, WrittenBatch.
    for (ty, sub, term_first) in [(0x30u8, 6u8, false), (0x30, 7, false), (0x31, 5, true)] {
        let mut body = BytesMut::new();
        body.put_u8(ty);
        body.put_u64(1); // id
        body.put_u8(sub);
        if term_first {
            body.put_u64(3); // term
        }
        body.put_u32(u32::MAX); // count
        body.put_u8(0);
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.extend_from_slice(&body);
        let peak = peak_during(|| {
            let r = FrameCodec::established(1 << 20).decode(&mut buf);
            assert!(
                matches!(r, Err(ProtoError::Malformed { .. })),
                "type {ty:#x} sub {sub}: {r:?}"
            );
        });
        assert!(
            peak < 4096,
            "allocated {peak} bytes for a batch count of u32::MAX"
        );
    }
}
