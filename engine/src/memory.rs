//! The `memory` backend: a lock-free `flurry::HashMap` hashed with `ahash`.
//!
//! Why flurry: reads never take a lock (they are a few atomic loads under an epoch guard), and writers lock
//! only the one bin they touch. Why `ahash`: keys come from clients, so the hasher is randomly seeded per
//! process (no precomputed collision floods), and it is the fastest such hasher for short byte strings.
//!
//! Layout, chosen by profiling the server (a GET on 100k keys is dominated by cache misses, not by HTTP):
//! keys up to 24 bytes live inline in the map's node (`SmallVec`), so comparing a key touches no second
//! allocation; a value is one `Box<[u8]>`, read in place under the guard by [`MemoryView::get_with`], so a GET
//! copies the value once, straight into the response, with no reference count to bump and drop. (An earlier
//! `Bytes` value cost a shared-counter promotion and two atomics per read: 8% of server time.)
//!
//! Guards: every flurry access needs an epoch guard, and pinning one costs about as much as the lookup itself
//! (../shared/field-notes.md: 2.6 vs 3.6 Mops/s). [`MemoryView`] holds one guard for a whole batch of
//! operations. It must never live across a point where a `may` coroutine can yield: the coroutine may resume
//! on another thread, and a guard pinned on one thread must not be released on another. The only way to get a
//! view is [`crate::Engine::batch`], whose closure is synchronous, which makes that easy to keep.

use std::collections::BinaryHeap;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::logfile::LogOp;
use crate::persist::Persistence;
use crate::{EngineConfig, PutOutcome, Result};

/// A key, inline up to 24 bytes. Hashes, compares and borrows as `[u8]`, so lookups take `&[u8]`.
pub(crate) type Key = SmallVec<[u8; 24]>;
pub(crate) type Map = flurry::HashMap<Key, Box<[u8]>, ahash::RandomState>;

/// The in-memory backend, optionally made durable by an operation log and snapshots.
pub(crate) struct MemoryStore {
    map: Arc<Map>,
    persist: Option<Persistence>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("len", &self.map.len()).finish()
    }
}

impl MemoryStore {
    /// A volatile store.
    pub(crate) fn new() -> Self {
        MemoryStore { map: Arc::new(Map::with_hasher(ahash::RandomState::new())), persist: None }
    }

    /// A store recovered from, and logging to, `dir`.
    pub(crate) fn durable(dir: &std::path::Path, config: &EngineConfig) -> Result<Self> {
        let map = Arc::new(Map::with_hasher(ahash::RandomState::new()));
        let persist = Persistence::open(dir, config, &map)?;
        Ok(MemoryStore { map, persist: Some(persist) })
    }

    /// Pins the current thread once for a batch of operations.
    pub(crate) fn view(&self) -> MemoryView<'_> {
        MemoryView { map: self.map.pin(), persist: self.persist.as_ref() }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn persistence(&self) -> Option<&Persistence> {
        self.persist.as_ref()
    }

    pub(crate) fn snapshot(&self) -> Result<()> {
        self.persist.as_ref().map_or(Ok(()), |p| p.snapshot_now(&self.map))
    }

    /// Clean shutdown: a last snapshot and flush, when durable.
    pub(crate) fn close(&self) -> Result<()> {
        match self.persist.as_ref() {
            Some(p) => p.close(&self.map),
            None => Ok(()),
        }
    }
}

/// The memory map with one epoch guard held for a batch of operations.
pub(crate) struct MemoryView<'a> {
    map: flurry::HashMapRef<'a, Key, Box<[u8]>, ahash::RandomState>,
    persist: Option<&'a Persistence>,
}

impl MemoryView<'_> {
    /// Runs `f` on the stored value, in place.
    pub(crate) fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.map.get(key).map(|v| f(v))
    }

    /// Stores the value; with a log, also logs it. Returns the outcome and the log ticket (0: none).
    pub(crate) fn put(&self, key: &[u8], value: &[u8]) -> Result<(PutOutcome, u64)> {
        let insert = || match self.map.insert(Key::from_slice(key), value.into()) {
            None => PutOutcome::Created,
            Some(_) => PutOutcome::Replaced,
        };
        match self.persist {
            None => Ok((insert(), 0)),
            Some(p) => p.append(LogOp::Put(key, value), insert, |_| true),
        }
    }

    /// Removes the key; with a log, logs the removal if there was one.
    pub(crate) fn delete(&self, key: &[u8]) -> Result<(bool, u64)> {
        let remove = || self.map.remove(key).is_some();
        match self.persist {
            None => Ok((remove(), 0)),
            Some(p) => p.append(LogOp::Delete(key), remove, |existed| *existed),
        }
    }

    /// The first `limit` keys starting with `prefix`, in lexicographic order.
    ///
    /// A hash map has no order, so this visits every key: O(n log limit) with a bounded max-heap, and a key
    /// is copied only when it belongs among the smallest `limit` seen so far.
    pub(crate) fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Vec<Vec<u8>> {
        if limit == 0 {
            return Vec::new();
        }
        let mut heap: BinaryHeap<Vec<u8>> = BinaryHeap::with_capacity(limit.min(1024) + 1);
        for key in self.map.keys() {
            if !key.starts_with(prefix) {
                continue;
            }
            if heap.len() == limit {
                match heap.peek() {
                    Some(largest) if key.as_slice() < largest.as_slice() => {
                        heap.pop();
                    }
                    _ => continue,
                }
            }
            heap.push(key.to_vec());
        }
        heap.into_sorted_vec()
    }
}
