//! The `memory` backend: a lock-free `flurry::HashMap` hashed with `ahash`.
//!
//! Why flurry: reads never take a lock (they are a few atomic loads under an epoch guard), and writers lock
//! only the one bin they touch. Why `ahash`: keys come from clients, so the hasher is randomly seeded per
//! process (no precomputed collision floods), and it is the fastest such hasher for short byte strings.
//!
//! Values are stored as [`Bytes`], so a `get` hands out the value by bumping a reference count instead of
//! copying it: the value may be up to the engine limit, and the caller (the HTTP adapter) only needs to read it
//! until the response is written.
//!
//! Guards: every flurry access needs an epoch guard, and pinning one costs about as much as the lookup itself
//! (../shared/field-notes.md: 2.6 vs 3.6 Mops/s). [`MemoryView`] holds one guard for a whole batch of
//! operations. It must never live across a point where a `may` coroutine can yield: the coroutine may resume
//! on another thread, and a guard pinned on one thread must not be released on another. The only way to get a
//! view is [`crate::Engine::batch`], whose closure is synchronous, which makes that easy to keep.

use std::collections::BinaryHeap;

use bytes::Bytes;

use crate::PutOutcome;

type Map = flurry::HashMap<Box<[u8]>, Bytes, ahash::RandomState>;

/// The in-memory backend.
pub(crate) struct MemoryStore {
    map: Map,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("len", &self.map.len()).finish()
    }
}

impl MemoryStore {
    pub(crate) fn new() -> Self {
        MemoryStore { map: Map::with_hasher(ahash::RandomState::new()) }
    }

    /// Pins the current thread once for a batch of operations.
    pub(crate) fn view(&self) -> MemoryView<'_> {
        MemoryView { map: self.map.pin() }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// The memory map with one epoch guard held for a batch of operations.
pub(crate) struct MemoryView<'a> {
    map: flurry::HashMapRef<'a, Box<[u8]>, Bytes, ahash::RandomState>,
}

impl MemoryView<'_> {
    pub(crate) fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.map.get(key).cloned()
    }

    pub(crate) fn put(&self, key: &[u8], value: &[u8]) -> PutOutcome {
        match self.map.insert(key.into(), Bytes::copy_from_slice(value)) {
            None => PutOutcome::Created,
            Some(_) => PutOutcome::Replaced,
        }
    }

    pub(crate) fn delete(&self, key: &[u8]) -> bool {
        self.map.remove(key).is_some()
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
                    Some(largest) if key.as_ref() < largest.as_slice() => {
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
