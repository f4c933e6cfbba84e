//! Group-commit leadership without lock convoys.
//!
//! One thread at a time is the flush *leader* (a CAS on `leader`). Everyone else
//! waits on a futex on `epoch`, which the leader bumps (and wakes all waiters) when it
//! is done. Woken followers re-check the flush LSN on their own, in parallel, without
//! taking any lock: a mutex hand-off chain (each waiter acquiring a mutex in turn
//! after an fdatasync) costs a context switch per waiter, which on a small machine
//! is longer than the fdatasync itself.
//!
//! `truncate_after` and `reset` take leadership too, so they never run while an
//! fdatasync is in flight (lock order: leadership, then the writer mutex).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

pub(crate) struct FlushGate {
    leader: AtomicBool,
    epoch: AtomicU32,
    /// Threads in (or about to enter) `futex_wait`: the leader skips the wake-up
    /// syscall when there are none (a lone flusher, e.g. a node's flusher thread
    /// or a follower's receiver, pays no futex call per fdatasync).
    waiters: AtomicU32,
}

/// Leadership; released (and waiters woken) on drop.
pub(crate) struct Leader<'a>(&'a FlushGate);

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.0.leader.store(false, Ordering::Release);
        // SeqCst pairs with `wait`: either this load sees the waiter's
        // increment (and wakes it), or the waiter's futex_wait, which comes
        // after its increment, sees the new epoch and returns at once.
        self.0.epoch.fetch_add(1, Ordering::SeqCst);
        if self.0.waiters.load(Ordering::SeqCst) > 0 {
            futex_wake_all(&self.0.epoch);
        }
    }
}

impl FlushGate {
    pub fn new() -> Self {
        FlushGate {
            leader: AtomicBool::new(false),
            epoch: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// The current epoch; load it *before* checking the condition you wait for.
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Becomes leader if nobody is.
    pub fn try_lead(&self) -> Option<Leader<'_>> {
        self.leader
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Leader(self))
    }

    /// Waits until the epoch differs from `seen` (returns at once if it already does;
    /// spurious returns are allowed, callers loop).
    pub fn wait(&self, seen: u32) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        futex_wait(&self.epoch, seen);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Becomes leader, waiting for the current one to finish.
    pub fn lead(&self) -> Leader<'_> {
        loop {
            let e = self.epoch();
            if let Some(l) = self.try_lead() {
                return l;
            }
            self.wait(e);
        }
    }
}

fn futex_wait(a: &AtomicU32, seen: u32) {
    // SAFETY: FUTEX_WAIT on a valid, aligned u32 that outlives the call; the kernel
    // returns at once (EAGAIN) if the value is no longer `seen`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            a.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            seen,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake_all(a: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            a.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    #[test]
    fn one_leader_at_a_time() {
        let g = Arc::new(FlushGate::new());
        let inside = Arc::new(AtomicU64::new(0));
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let (g, inside) = (g.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        let _l = g.lead();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert!(g.try_lead().is_some());
    }
}
