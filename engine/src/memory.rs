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

use smallvec::SmallVec;

use crate::PutOutcome;

/// A key, inline up to 24 bytes. Hashes, compares and borrows as `[u8]`, so lookups take `&[u8]`.
type Key = SmallVec<[u8; 24]>;
type Map = flurry::HashMap<Key, Box<[u8]>, ahash::RandomState>;

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
    map: flurry::HashMapRef<'a, Key, Box<[u8]>, ahash::RandomState>,
}

impl MemoryView<'_> {
    /// Runs `f` on the stored value, in place.
    pub(crate) fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.map.get(key).map(|v| f(v))
    }

    pub(crate) fn put(&self, key: &[u8], value: &[u8]) -> PutOutcome {
        match self.map.insert(Key::from_slice(key), value.into()) {
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
