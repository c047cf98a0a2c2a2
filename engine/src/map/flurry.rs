//! `--engine flurry`: the map the design started from, a lock-free `flurry::HashMap` hashed with `ahash`,
//! kept as the compared alternative to the engine's own table in every test and benchmark.
//!
//! Layout: keys up to 24 bytes inline in flurry's node ([`Key`]); a value is one `Box<[u8]>` of metadata
//! and bytes (`entry::encode`), read in place under the guard. flurry boxes every value once more (seize's
//! `Linked`), so an entry is three allocations; `examples/entry_bytes.rs` counts them.
//!
//! Costs, as glibc rounds each allocation (8 bytes of header, 16-byte steps):
//!
//! | allocation | requested | glibc chunk |
//! |---|---:|---:|
//! | flurry node (seize link, `BinEntry` with the key inline up to 24 bytes) | 120 | 128 |
//! | seize `Linked<Box<[u8]>>` (the value's pointer) | 24 | 32 |
//! | the value: version, expiry, bytes | 16 + len | chunk(16 + len) |
//! | a key over 24 bytes | len | chunk(len) |
//!
//! plus the bucket array (8 bytes a bin, a power of two grown past 3/4 full).
//!
//! `allkeys-lru`: flurry has no random access, so Redis's sampling is not available. Every key's last
//! access stamps a millisecond clock into a table of 32-bit slots indexed by the key's hash
//! ([`LruClocks`]; keys that share a slot share a stamp), and when room is needed one pass over the map
//! keeps the keys with the oldest stamps in a pool, evicted oldest first, skipping keys used since.
//!
//! Guards: seize's epoch tracking is off (`new_map`); no thread holds a guard idle (a batch holds one
//! without I/O; the snapshot and eviction passes load nodes continuously), so tracking would not let the
//! collector free anything sooner, and without it a protected load is a plain load.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::commit::lock;
use crate::entry::{self, Meta};
use crate::key::Key;
use crate::map::{Change, Changed, Map, Seeds};

type Flurry = flurry::HashMap<Key, Box<[u8]>, ahash::RandomState>;

/// A flurry node, key inline: 120 bytes requested (seize link 8 + `BinEntry` 112), a 128-byte chunk.
const NODE: usize = 128;
/// seize's `Linked<Box<[u8]>>`: 24 bytes requested, a 32-byte chunk.
const VALUE_LINK: usize = 32;
/// Longest key stored inline in the node.
const INLINE_KEY: usize = 24;
/// Most keys one `allkeys-lru` pass keeps as candidates.
const POOL_MAX: usize = 100_000;

/// glibc malloc's chunk for a request of `n` bytes: 8 bytes of header in 16-byte steps, 32 at least;
/// from 128 KiB on a mapping of its own, in pages.
pub(crate) fn chunk(n: usize) -> usize {
    if n >= 128 << 10 {
        (n + 16).next_multiple_of(4096)
    } else {
        (n + 8).next_multiple_of(16).max(32)
    }
}

/// flurry's bucket array for `len` keys: a power of two of 8-byte bins, grown once 3/4 full.
fn table_bytes(len: usize) -> u64 {
    (len as u64 * 4 / 3 + 1).next_power_of_two().max(16) * 8
}

/// The flurry map with its `allkeys-lru` clocks and candidate pool.
pub(crate) struct FlurryMap {
    map: Flurry,
    /// A listing's order: the table's hash of a key with the same seeds (`listing.rs`).
    order: ahash::RandomState,
    lru: Option<LruClocks>,
    /// `allkeys-lru`: the oldest keys the last pass found, oldest last, each with the stamp it had then.
    pool: Mutex<Vec<(u32, Key)>>,
}

impl std::fmt::Debug for FlurryMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlurryMap").field("len", &self.map.len()).finish_non_exhaustive()
    }
}

/// An empty map hashed with `seeds`, with its own reclamation collector set up for how this engine holds
/// guards: seize's epoch tracking costs ~30 instructions per protected load (three or four a lookup) and
/// would free nothing sooner here (module docs).
fn new_map(seeds: Seeds) -> Flurry {
    let [a, b, c, d] = seeds;
    Flurry::with_hasher(ahash::RandomState::with_seeds(a, b, c, d))
        .with_collector(seize::Collector::new().epoch_frequency(None))
}

impl Map for FlurryMap {
    type Guard<'m> = flurry::Guard<'m>;

    fn with_seeds(seeds: Seeds, lru_cap: Option<u64>) -> Self {
        let [a, b, c, d] = seeds;
        FlurryMap {
            map: new_map(seeds),
            order: ahash::RandomState::with_seeds(a, b, c, d),
            lru: lru_cap.map(LruClocks::new),
            pool: Mutex::new(Vec::new()),
        }
    }

    fn pin(&self) -> flurry::Guard<'_> {
        self.map.guard()
    }

    fn repin<'m>(&'m self, guard: &mut flurry::Guard<'m>) {
        guard.refresh();
    }

    #[inline]
    fn get<'g>(&'g self, key: &[u8], guard: &'g flurry::Guard<'_>) -> Option<(Meta, &'g [u8])> {
        let stored = self.map.get(key, guard)?;
        if let Some(lru) = &self.lru {
            lru.touch(key);
        }
        entry::split(stored)
    }

    fn change<'v, R>(
        &self,
        key: &[u8],
        guard: &flurry::Guard<'_>,
        mut decide: impl FnMut(Option<(Meta, &[u8])>) -> (Change<'v>, R),
    ) -> (R, Changed) {
        if let Some(lru) = &self.lru {
            lru.touch(key);
        }
        let cost = |m: Meta, stored: &[u8]| {
            self.entry_cost(key.len(), stored.len() - entry::META_LEN, m.expires_ms != 0)
        };
        loop {
            // Present: decided and applied under the key's bin lock.
            let (present, result) = (Cell::new(false), Cell::new(None));
            let changed = Cell::new(Changed::default());
            self.map.compute_if_present(
                key,
                |_, old| {
                    present.set(true);
                    let current = entry::split(old);
                    let (change, out) = decide(current);
                    result.set(Some(out));
                    let old_cost = current.map(|(m, _)| (m, cost(m, old)));
                    match change {
                        Change::Keep => Some(old.clone()),
                        Change::Remove => {
                            changed.set(Changed { old: old_cost, new: None });
                            None
                        }
                        Change::Put(meta, value) => {
                            let stored = entry::encode(meta, value);
                            changed.set(Changed { old: old_cost, new: Some(cost(meta, &stored)) });
                            Some(stored)
                        }
                    }
                },
                guard,
            );
            if present.get() {
                if let Some(out) = result.into_inner() {
                    return (out, changed.get());
                }
            }
            let (change, out) = decide(None);
            let Change::Put(meta, value) = change else { return (out, Changed::default()) };
            let stored = entry::encode(meta, value);
            let new = cost(meta, &stored);
            // Absent: created only if still absent; another writer's insert in between means deciding
            // again against its value.
            if self.map.try_insert(Key::from_slice(key), stored, guard).is_ok() {
                return (out, Changed { old: None, new: Some(new) });
            }
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn entry_cost(&self, key_len: usize, value_len: usize, _expires: bool) -> usize {
        let key = if key_len > INLINE_KEY { chunk(key_len) } else { 0 };
        NODE + key + VALUE_LINK + chunk(entry::META_LEN + value_len)
    }

    fn structure_bytes(&self) -> u64 {
        table_bytes(self.map.len()) + self.lru.as_ref().map_or(0, LruClocks::bytes)
    }

    fn reserve(&self, keys: usize) {
        self.map.pin().reserve(keys);
    }

    fn for_each(&self, mut f: impl FnMut(&[u8], Meta, &[u8])) {
        let guard = self.map.guard();
        for (key, stored) in self.map.iter(&guard) {
            if let Some((meta, value)) = entry::split(stored) {
                f(key, meta, value);
            }
        }
    }

    fn order_hash(&self, key: &[u8]) -> u64 {
        self.order.hash_one(key)
    }

    /// flurry cannot walk part of its map: the whole map is one group, and every page of a listing
    /// walks it.
    fn group_bits(&self) -> u32 {
        0
    }

    fn for_each_in_group(&self, _group: usize, f: impl FnMut(&[u8], Meta, &[u8])) {
        self.for_each(f);
    }

    fn lru_victim(&self, guard: &flurry::Guard<'_>, hint: usize) -> Option<Key> {
        let lru = self.lru.as_ref()?;
        loop {
            {
                let mut pool = lock(&self.pool);
                while let Some((stamp, key)) = pool.pop() {
                    if lru.stamp(&key) == stamp {
                        return Some(key);
                    }
                }
            }
            if self.map.is_empty() {
                return None;
            }
            if !self.refill_pool(lru, guard, hint) {
                return None;
            }
        }
    }
}

impl FlurryMap {
    /// One pass over the keys, keeping the `want` with the oldest stamps as the new pool; false when it
    /// found none.
    fn refill_pool(&self, lru: &LruClocks, guard: &flurry::Guard<'_>, want: usize) -> bool {
        let want = want.clamp(16, POOL_MAX);
        let now = lru.now();
        // A min-heap by age of the oldest `want` keys seen so far.
        let mut oldest: BinaryHeap<Reverse<(u32, u32, &Key)>> = BinaryHeap::with_capacity(want + 1);
        for key in self.map.keys(guard) {
            let stamp = lru.stamp(key);
            let age = LruClocks::age(now, stamp);
            if oldest.len() == want {
                match oldest.peek() {
                    Some(Reverse((youngest, _, _))) if age > *youngest => {
                        oldest.pop();
                    }
                    _ => continue,
                }
            }
            oldest.push(Reverse((age, stamp, key)));
        }
        // Ascending age after the sort of `Reverse`s: youngest first, so `pop` takes the oldest.
        let pool: Vec<(u32, Key)> = oldest
            .into_sorted_vec()
            .into_iter()
            .rev()
            .map(|Reverse((_, stamp, key))| (stamp, key.clone()))
            .collect();
        let found = !pool.is_empty();
        *lock(&self.pool) = pool;
        found
    }
}

/// Last-access stamps for `allkeys-lru`: milliseconds since start (wrapping after 49 days; ages are
/// differences), 0 for never, in a power-of-two table of slots indexed by the key's hash. Sized at one
/// slot per 256 bytes of cap (about one per key), 4 bytes each: under 2% of the cap.
struct LruClocks {
    slots: Box<[AtomicU32]>,
    hasher: ahash::RandomState,
    start: Instant,
}

impl LruClocks {
    fn new(max_bytes: u64) -> LruClocks {
        let n = (max_bytes / 256).next_power_of_two().clamp(1 << 12, 1 << 26) as usize;
        LruClocks {
            slots: (0..n).map(|_| AtomicU32::new(0)).collect(),
            hasher: ahash::RandomState::new(),
            start: Instant::now(),
        }
    }

    fn bytes(&self) -> u64 {
        self.slots.len() as u64 * 4
    }

    fn slot(&self, key: &[u8]) -> &AtomicU32 {
        let i = self.hasher.hash_one(key) as usize & (self.slots.len() - 1);
        &self.slots[i]
    }

    fn now(&self) -> u32 {
        (self.start.elapsed().as_millis() as u32).max(1)
    }

    fn touch(&self, key: &[u8]) {
        let now = self.now();
        let slot = self.slot(key);
        // Only a changed stamp is written: a hot key's cache line is not dirtied on every read.
        if slot.load(Ordering::Relaxed) != now {
            slot.store(now, Ordering::Relaxed);
        }
    }

    /// How long before `now` a key with `stamp` was last used. A stamp later than `now` (a use while
    /// the pass ran) is age 0, not a wrapped-around ancient one; a never-used key is the oldest of all.
    fn age(now: u32, stamp: u32) -> u32 {
        match now.wrapping_sub(stamp) {
            _ if stamp == 0 => u32::MAX,
            age if age > u32::MAX / 2 => 0,
            age => age,
        }
    }

    fn stamp(&self, key: &[u8]) -> u32 {
        self.slot(key).load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_as_glibc_does() {
        assert_eq!(chunk(0), 32);
        assert_eq!(chunk(24), 32);
        assert_eq!(chunk(116), 128);
        assert_eq!(chunk(121), 144);
        let m = FlurryMap::with_seeds([1, 2, 3, 4], None);
        assert_eq!(m.entry_cost(16, 100, false), 128 + 32 + 128);
        assert_eq!(table_bytes(1_000_000), 8 << 21);
    }

    #[test]
    fn the_pool_holds_the_oldest_keys_oldest_last() {
        let m = FlurryMap::with_seeds([1, 2, 3, 4], Some(64 << 20));
        let g = m.pin();
        for i in 0..50u32 {
            m.change(&i.to_be_bytes(), &g, |_| (Change::Put(Meta { version: 1, expires_ms: 0 }, b"v"), ()));
        }
        let lru = m.lru.as_ref().expect("clocks");
        // Keys 10.. are used later than 0..10: wait for the clock to move, then use them.
        let before = lru.now();
        while lru.now() == before {
            std::hint::spin_loop();
        }
        for i in 10..50u32 {
            m.get(&i.to_be_bytes(), &g);
        }
        let victims: Vec<Key> = (0..10).filter_map(|_| m.lru_victim(&g, 10)).collect();
        assert_eq!(victims.len(), 10);
        let mut got: Vec<u32> =
            victims.iter().map(|k| u32::from_be_bytes(k.as_slice().try_into().expect("4 bytes"))).collect();
        got.sort_unstable();
        // (Keys that share a clock slot with a used key may be taken for younger; 2^20 slots make it rare.)
        assert_eq!(got, (0..10).collect::<Vec<u32>>());
    }

    #[test]
    fn ages_survive_a_pass_racing_a_use_and_the_clock_wrapping() {
        assert_eq!(LruClocks::age(100, 101), 0);
        assert_eq!(LruClocks::age(100, 0), u32::MAX, "never used: the oldest");
        assert_eq!(LruClocks::age(5, u32::MAX - 5), 11, "the clock wrapped");
    }
}
