//! WAL retention pins: LSNs below which WAL must not be removed for now.
//!
//! A leader serving a rebuild (base backup) pins its WAL at the checkpoint's LSN
//! for as long as the transfer connection is open, so the WAL the rebuilt node
//! streams next (from that LSN) is still there when it asks. Retention
//! (`wal.min_retained` / `max_retained`, checkpoints) must never remove WAL at or
//! above [`RetentionPins::min`]: a pin outranks `max_retained`, as PostgreSQL's
//! replication slot used by `pg_basebackup` does.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// The set of active pins of a node.
#[derive(Debug, Default)]
pub struct RetentionPins {
    inner: Mutex<PinSet>,
}

#[derive(Debug, Default)]
struct PinSet {
    next: u64,
    pins: BTreeMap<u64, u64>,
}

impl RetentionPins {
    /// An empty set.
    pub fn new() -> Arc<RetentionPins> {
        Arc::new(RetentionPins::default())
    }

    /// Pin WAL from `lsn` on until the returned guard is dropped.
    pub fn pin(self: &Arc<Self>, lsn: u64) -> PinGuard {
        let mut s = self.inner.lock();
        let id = s.next;
        s.next += 1;
        s.pins.insert(id, lsn);
        PinGuard {
            pins: self.clone(),
            id,
        }
    }

    /// The lowest pinned LSN (None when nothing is pinned). Retention removes no
    /// WAL at or above it.
    pub fn min(&self) -> Option<u64> {
        self.inner.lock().pins.values().copied().min()
    }

    /// Number of active pins.
    pub fn len(&self) -> usize {
        self.inner.lock().pins.len()
    }

    /// True when nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An active pin; dropping it releases the pin.
#[derive(Debug)]
pub struct PinGuard {
    pins: Arc<RetentionPins>,
    id: u64,
}

impl PinGuard {
    /// Move this pin to `lsn`.
    pub fn set(&self, lsn: u64) {
        if let Some(v) = self.pins.inner.lock().pins.get_mut(&self.id) {
            *v = lsn;
        }
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        self.pins.inner.lock().pins.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_follows_the_live_pins() {
        let p = RetentionPins::new();
        assert_eq!(p.min(), None);
        let a = p.pin(100);
        let b = p.pin(50);
        assert_eq!(p.min(), Some(50));
        b.set(200);
        assert_eq!(p.min(), Some(100));
        drop(a);
        assert_eq!(p.min(), Some(200));
        drop(b);
        assert_eq!(p.min(), None);
        assert!(p.is_empty());
    }
}
