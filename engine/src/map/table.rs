//! `--engine memory`: the engine's own table (`table/`) behind the [`Map`] seam.
//!
//! `allkeys-lru` as Redis does it: each block carries an access clock (milliseconds since the map was made,
//! stamped on reads and writes, stored only when it changed), and a victim is found by sampling
//! [`SAMPLES`] entries from a random place in the table into a pool of the [`POOL`] oldest seen, evicting
//! the oldest that has not been used since it was sampled. No index, no pass over the keys: the clock
//! costs 4 bytes an entry, only under this policy. (Redis samples 5 by default and documents 10 as close
//! to true LRU; 10 it is.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::commit::lock;
use crate::entry::Meta;
use crate::key::Key;
use crate::map::{Change, Changed, Map, Seeds};
use crate::table::epoch::Guard;
use crate::table::{Table, SHARDS};

/// Entries sampled per victim (Redis's `maxmemory-samples`).
const SAMPLES: usize = 10;
/// Candidates kept between victims (Redis's eviction pool).
const POOL: usize = 16;

/// The table, and what `allkeys-lru` needs.
#[derive(Debug)]
pub(crate) struct TableMap {
    table: Table,
    lru: Option<Lru>,
}

#[derive(Debug)]
struct Lru {
    start: Instant,
    /// Picks where the next sample starts.
    next: AtomicU64,
    hasher: ahash::RandomState,
    /// The oldest candidates seen, oldest last: `(age when sampled, stamp then, key)`.
    pool: Mutex<Vec<(u32, u32, Key)>>,
}

impl Lru {
    /// Milliseconds since the map was made (wrapping after 49 days), never 0 (0 is "never used").
    fn now(&self) -> u32 {
        (self.start.elapsed().as_millis() as u32).max(1)
    }
}

impl TableMap {
    fn clock(&self) -> u32 {
        self.lru.as_ref().map_or(0, Lru::now)
    }
}

impl Map for TableMap {
    type Guard<'m> = Guard;

    fn with_seeds(seeds: Seeds, lru_cap: Option<u64>) -> Self {
        let lru = lru_cap.map(|_| Lru {
            start: Instant::now(),
            next: AtomicU64::new(0),
            hasher: ahash::RandomState::new(),
            pool: Mutex::new(Vec::with_capacity(POOL + SAMPLES)),
        });
        TableMap { table: Table::new(seeds, SHARDS, lru.is_some()), lru }
    }

    fn pin(&self) -> Guard {
        self.table.pin()
    }

    fn repin(&self, guard: &mut Guard) {
        guard.repin();
    }

    #[inline]
    fn get<'g>(&'g self, key: &[u8], guard: &'g Guard) -> Option<(Meta, &'g [u8])> {
        let block = self.table.get(key, guard)?;
        if let Some(lru) = &self.lru {
            block.touch(lru.now());
        }
        Some((block.meta(), block.value()))
    }

    #[inline]
    fn change<'v, R>(
        &self,
        key: &[u8],
        guard: &Guard,
        mut decide: impl FnMut(Option<(Meta, &[u8])>) -> (Change<'v>, R),
    ) -> (R, Changed) {
        // The table decides once, under the shard's lock.
        self.table.change(key, guard, self.clock(), |current| decide(current.map(|b| (b.meta(), b.value()))))
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn entry_cost(&self, key_len: usize, value_len: usize, expires: bool) -> usize {
        self.table.block_cost(key_len, value_len, expires)
    }

    fn structure_bytes(&self) -> u64 {
        self.table.slot_bytes() as u64
    }

    fn reserve(&self, keys: usize) {
        self.table.reserve(keys);
    }

    fn for_each(&self, mut f: impl FnMut(&[u8], Meta, &[u8])) {
        self.table.for_each(|b| f(b.key(), b.meta(), b.value()));
    }

    fn order_hash(&self, key: &[u8]) -> u64 {
        self.table.hash_of(key)
    }

    /// The table's shards: a group is one shard, about `1 / 4096` of the keys.
    fn group_bits(&self) -> u32 {
        self.table.shard_bits()
    }

    fn for_each_in_group(&self, group: usize, mut f: impl FnMut(&[u8], Meta, &[u8])) {
        self.table.for_each_in_shard(group, |b| f(b.key(), b.meta(), b.value()));
    }

    fn release_retired(&self) {
        crate::table::epoch::reclaim();
        crate::table::slab::unmap_idle_current();
    }

    fn compact(&self, pace: impl FnMut()) -> Option<u64> {
        if crate::table::slab::plan_evacuation() == 0 {
            return None;
        }
        // SAFETY (of the predicate): the table calls it on a block it read from a slot while pinned, so
        // the block is not released, and its chunk stays mapped, until the pass unpins.
        #[allow(unsafe_code)]
        let (_, bytes) =
            self.table.compact(|ptr, size| unsafe { crate::table::slab::is_evacuating(ptr, size) }, pace);
        crate::table::epoch::reclaim();
        crate::table::slab::end_evacuation();
        Some(bytes)
    }

    fn lru_victim(&self, guard: &Guard, _hint: usize) -> Option<Key> {
        let lru = self.lru.as_ref()?;
        for _ in 0..16 {
            let now = lru.now();
            let seed = lru.hasher.hash_one(lru.next.fetch_add(1, Ordering::Relaxed));
            let mut sampled = Vec::with_capacity(SAMPLES);
            self.table.sample(seed, SAMPLES, guard, |b| {
                let stamp = b.last_used();
                let age = match now.wrapping_sub(stamp) {
                    _ if stamp == 0 => u32::MAX,
                    age if age > u32::MAX / 2 => 0,
                    age => age,
                };
                sampled.push((age, stamp, Key::from_slice(b.key())));
            });
            let mut pool = lock(&lru.pool);
            for candidate in sampled {
                if !pool.iter().any(|(_, _, k)| *k == candidate.2) {
                    pool.push(candidate);
                }
            }
            // Youngest first, so the oldest is popped; only the POOL oldest are kept.
            pool.sort_unstable_by_key(|(age, _, _)| *age);
            let excess = pool.len().saturating_sub(POOL);
            pool.drain(..excess);
            // The oldest candidate still as it was sampled (not used, replaced or deleted since).
            while let Some((_, stamp, key)) = pool.pop() {
                if self.table.get(&key, guard).is_some_and(|b| b.last_used() == stamp) {
                    return Some(key);
                }
            }
            if self.table.len() == 0 {
                return None;
            }
        }
        None
    }
}
