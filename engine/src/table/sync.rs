//! The synchronisation primitives the table uses: std's, or loom's when the crate is built with
//! `--cfg loom`, so the model tests (`loom_tests.rs`) explore every interleaving of the very code that runs
//! in production. Only the table's protocols go through here; the rest of the engine uses std directly.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, AtomicUsize};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, AtomicUsize};
// parking_lot's: no poisoning to check on every lock and unlock (a writer's shard lock and the slab's
// class locks are on the hot path of every write), and it parks rather than spins.
#[cfg(not(loom))]
pub(crate) use parking_lot::{Mutex, MutexGuard};

pub(crate) use std::sync::atomic::Ordering;

/// Locks `m`. A panicked holder leaves nothing half-done here (every critical section either completes its
/// stores or makes none), so loom's poisoning is ignored (`parking_lot` has none).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(loom)]
    return m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    #[cfg(not(loom))]
    m.lock()
}
