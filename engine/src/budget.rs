//! The memory engine's memory budget: what its data costs, the cap, and which keys to evict.
//!
//! ## The estimate
//!
//! Reading the allocator's figures (or RSS) on every write would cost a system call or a global lock, so
//! the engine keeps its own count, in bytes, of what each entry costs the allocator, and adds or subtracts
//! an entry's cost as it is stored, replaced or removed (one relaxed atomic add per write). An entry's cost
//! is the allocations flurry and we make for it, each rounded up as glibc's malloc rounds it (8 bytes of
//! header, 16-byte steps), measured by `examples/entry_bytes.rs`:
//!
//! | allocation | requested | glibc chunk |
//! |---|---:|---:|
//! | flurry node (seize link, `BinEntry` with the key inline up to 24 bytes) | 120 | 128 |
//! | seize `Linked<Box<[u8]>>` (the value's pointer) | 24 | 32 |
//! | the value: version, expiry, bytes | 16 + len | chunk(16 + len) |
//! | a key over 24 bytes | len | chunk(len) |
//!
//! plus flurry's bucket array (8 bytes a bin, a power of two grown past 3/4 full), 48 bytes per key in the
//! expiry index, and, with `allkeys-lru`, the clock table below. What the estimate leaves out: memory freed
//! but not yet reclaimed by flurry's epoch collector (a replaced value lives until no reader can see it),
//! the allocator's free lists, and the process's own baseline (threads, connection buffers). README gives
//! the measured ratio of RSS to the estimate.
//!
//! ## The cap
//!
//! A write whose entry would take the estimate past the cap first makes room as the policy says
//! ([`Eviction`]); if it cannot, it fails with [`crate::EngineError::OutOfMemory`] before anything is
//! logged or stored. Reads and deletes never check the cap. An overwrite is charged its full new entry:
//! the value it replaces is freed only once no reader can see it.
//!
//! ## Eviction
//!
//! With a policy other than `noeviction` an evictor thread keeps the estimate under a high-water mark (cap
//! − 1/32) by evicting down to a low-water mark (cap − 1/16), so writers rarely meet the cap; a writer
//! that does evicts for itself from the same candidates. An eviction is an ordinary logged delete, so a
//! restart does not bring the key back.
//!
//! - `volatile-ttl`: the candidates are the expiry index (`expiry.rs`), in order of expiry: exact.
//! - `allkeys-lru`: flurry has no random access, so Redis's "sample five random keys" is not available.
//!   Instead every key's last access (read or write) stamps a millisecond clock into a table of 32-bit
//!   slots indexed by the key's hash ([`LruClocks`]; keys that share a slot share a stamp: approximate, as
//!   Redis's is). When room is needed, the evictor makes one pass over the map and keeps the keys with the
//!   oldest stamps in a pool; evictions take the oldest first, skipping a key touched since the pass.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::commit::lock;
use crate::config::Eviction;
use crate::memory::Key;

/// A flurry node, key inline: 120 bytes requested (seize link 8 + `BinEntry` 112), a 128-byte chunk.
const NODE: u64 = 128;
/// seize's `Linked<Box<[u8]>>`: 24 bytes requested, a 32-byte chunk.
const VALUE_LINK: u64 = 32;
/// Longest key stored inline in the node (`memory::Key`).
const INLINE_KEY: usize = 24;
/// One `(u64, Key)` entry of the expiry index (40 bytes) with its B-tree node's slack.
pub(crate) const EXPIRY_ENTRY: i64 = 48;
/// Most keys one `allkeys-lru` pass keeps as candidates.
const POOL_MAX: usize = 100_000;

/// glibc malloc's chunk for a request of `n` bytes: 8 bytes of header in 16-byte steps, 32 at least;
/// from 128 KiB on a mapping of its own, in pages.
pub(crate) fn chunk(n: usize) -> u64 {
    let n = n as u64;
    if n >= 128 << 10 {
        (n + 16).next_multiple_of(4096)
    } else {
        (n + 8).next_multiple_of(16).max(32)
    }
}

/// What a stored value (`stored_len` bytes: metadata and value) costs, without its node.
fn value_bytes(stored_len: usize) -> i64 {
    (VALUE_LINK + chunk(stored_len)) as i64
}

/// What a whole entry costs: its node (and key, when too long to be inline) and its value.
pub(crate) fn entry_bytes(key_len: usize, stored_len: usize) -> i64 {
    let key = if key_len > INLINE_KEY { chunk(key_len) } else { 0 };
    (NODE + key) as i64 + value_bytes(stored_len)
}

/// flurry's bucket array for `len` keys: a power of two of 8-byte bins, grown once 3/4 full.
pub(crate) fn table_bytes(len: usize) -> u64 {
    (len as u64 * 4 / 3 + 1).next_power_of_two().max(16) * 8
}

/// A snapshot of the budget, for `/metrics` and `/v1/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    /// Estimated bytes the data uses (see `budget.rs` for what is counted).
    pub used_bytes: u64,
    /// The cap, if any.
    pub max_bytes: Option<u64>,
    /// Keys evicted since start.
    pub evicted_keys: u64,
    /// The policy at the cap.
    pub eviction: Eviction,
}

/// The memory engine's byte count, cap, policy and eviction candidates.
pub(crate) struct Budget {
    /// Estimated bytes of the entries and the expiry index. Signed: with concurrent writers a removal can
    /// be counted before the insert it undoes.
    entries: AtomicI64,
    pub(crate) max: Option<u64>,
    pub(crate) policy: Eviction,
    evicted: AtomicU64,
    /// `allkeys-lru` only.
    lru: Option<LruClocks>,
    /// `allkeys-lru`: the oldest keys the last pass found, oldest last, each with the stamp it had then.
    pool: Mutex<Vec<(u32, Key)>>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget").field("max", &self.max).field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Budget {
    pub(crate) fn new(max: Option<u64>, policy: Eviction) -> Budget {
        let lru = match (max, policy) {
            (Some(max), Eviction::AllKeysLru) => Some(LruClocks::new(max)),
            _ => None,
        };
        Budget {
            entries: AtomicI64::new(0),
            max,
            policy,
            evicted: AtomicU64::new(0),
            lru,
            pool: Mutex::new(Vec::new()),
        }
    }

    /// Counts `delta` bytes more (or fewer) of entries.
    pub(crate) fn add(&self, delta: i64) {
        self.entries.fetch_add(delta, Ordering::Relaxed);
    }

    /// Counts a stored value of `stored_len` bytes under a key of `key_len`: a whole new entry, or, when
    /// it replaced one of `replaced` bytes, the difference between the two values (the node stays).
    pub(crate) fn count_store(&self, key_len: usize, stored_len: usize, replaced: Option<usize>) {
        self.add(match replaced {
            Some(old_len) => value_bytes(stored_len) - value_bytes(old_len),
            None => entry_bytes(key_len, stored_len),
        });
    }

    /// Counts a removed entry.
    pub(crate) fn count_removal(&self, key_len: usize, stored_len: usize) {
        self.add(-entry_bytes(key_len, stored_len));
    }

    /// Estimated bytes in use with `len` keys stored.
    pub(crate) fn used(&self, len: usize) -> u64 {
        let fixed = self.lru.as_ref().map_or(0, LruClocks::bytes);
        self.entries.load(Ordering::Relaxed).max(0) as u64 + table_bytes(len) + fixed
    }

    /// How many bytes must go before an entry costing `cost` fits under the cap (`None`: it fits).
    pub(crate) fn shortfall(&self, len: usize, cost: i64) -> Option<u64> {
        let max = self.max?;
        let after = self.used(len).saturating_add_signed(cost);
        (after > max).then(|| after - max)
    }

    /// How far over the high-water mark the data is, as the bytes to evict to reach the low-water mark.
    pub(crate) fn excess(&self, len: usize) -> Option<u64> {
        let max = self.max?;
        let used = self.used(len);
        (used > max - max / 32).then(|| used.saturating_sub(max - max / 16))
    }

    pub(crate) fn stats(&self, len: usize) -> MemoryStats {
        MemoryStats {
            used_bytes: self.used(len),
            max_bytes: self.max,
            evicted_keys: self.evicted.load(Ordering::Relaxed),
            eviction: self.policy,
        }
    }

    pub(crate) fn count_eviction(&self) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
    }

    /// Stamps `key` as used now (`allkeys-lru` only).
    #[inline]
    pub(crate) fn touch(&self, key: &[u8]) {
        if let Some(lru) = &self.lru {
            lru.touch(key);
        }
    }

    /// `allkeys-lru`: the next candidate, oldest first, skipping keys used since the pass that found them.
    pub(crate) fn next_lru_candidate(&self) -> Option<Key> {
        let lru = self.lru.as_ref()?;
        let mut pool = lock(&self.pool);
        while let Some((stamp, key)) = pool.pop() {
            if lru.stamp(&key) == stamp {
                return Some(key);
            }
        }
        None
    }

    /// `allkeys-lru`: one pass over `keys`, keeping the `want` with the oldest stamps as the new pool.
    pub(crate) fn refill_pool<'a>(&self, keys: impl Iterator<Item = &'a Key>, want: usize) {
        let Some(lru) = &self.lru else { return };
        let want = want.clamp(1, POOL_MAX);
        let now = lru.now();
        // A min-heap by age of the oldest `want` keys seen so far.
        let mut oldest: BinaryHeap<Reverse<(u32, u32, &Key)>> = BinaryHeap::with_capacity(want + 1);
        for key in keys {
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
        *lock(&self.pool) = pool;
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
        assert_eq!(chunk(120), 128);
        assert_eq!(chunk(121), 144);
        assert_eq!(entry_bytes(16, 116), 128 + 32 + 128);
        assert_eq!(table_bytes(1_000_000), 8 << 21);
    }

    #[test]
    fn shortfall_and_excess_follow_the_cap() {
        let b = Budget::new(Some(10_000), Eviction::NoEviction);
        assert_eq!(b.shortfall(0, 1000), None);
        b.add(9_000);
        assert_eq!(b.excess(0), None, "under the high-water mark");
        b.add(600);
        let used = b.used(0);
        assert_eq!(b.shortfall(0, 1000), Some(used + 1000 - 10_000));
        assert_eq!(b.excess(0), Some(used - (10_000 - 10_000 / 16)));
        assert_eq!(Budget::new(None, Eviction::NoEviction).shortfall(0, i64::MAX), None);
    }

    #[test]
    fn the_pool_holds_the_oldest_keys_oldest_last() {
        let b = Budget::new(Some(1 << 20), Eviction::AllKeysLru);
        let keys: Vec<Key> = (0..50u32).map(|i| Key::from_slice(&i.to_be_bytes())).collect();
        // Keys 10.. are touched; 0..10 never were (unless one shares a slot with a touched key).
        for k in &keys[10..] {
            b.touch(k);
        }
        b.refill_pool(keys.iter(), 10);
        let lru = b.lru.as_ref().expect("allkeys-lru has clocks");
        let age = |k: &Key| LruClocks::age(lru.now(), lru.stamp(k));
        let got: Vec<Key> = std::iter::from_fn(|| b.next_lru_candidate()).collect();
        assert_eq!(got.len(), 10);
        // Oldest first, and none younger than a key left out.
        assert!(got.windows(2).all(|w| age(&w[0]) >= age(&w[1])));
        let youngest_taken = got.iter().map(age).min().unwrap_or(0);
        assert!(keys.iter().filter(|k| !got.contains(k)).all(|k| age(k) <= youngest_taken));
        // A key used after the pass (a millisecond later than the pass saw) is skipped.
        b.refill_pool(keys.iter(), 10);
        let first = lock(&b.pool).last().map(|(_, k)| k.clone()).expect("a candidate");
        lru.slot(&first).store(lru.stamp(&first).wrapping_add(1), Ordering::Relaxed);
        assert_ne!(b.next_lru_candidate(), Some(first));
    }

    #[test]
    fn ages_survive_a_pass_racing_a_use_and_the_clock_wrapping() {
        // A key used while a pass runs has a stamp later than the pass's clock: it is young, not old.
        assert_eq!(LruClocks::age(100, 101), 0);
        assert_eq!(LruClocks::age(100, 0), u32::MAX, "never used: the oldest");
        assert_eq!(LruClocks::age(5, u32::MAX - 5), 11, "the clock wrapped");
    }
}
