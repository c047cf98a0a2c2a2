//! The memory engine's memory budget: what its data costs, and the cap.
//!
//! ## The estimate
//!
//! Reading the allocator's figures (or RSS) on every write would cost a system call or a global lock, so
//! the engine keeps its own count, in bytes, of what each entry costs, and adds or subtracts an entry's
//! cost as it is stored, replaced or removed (one relaxed atomic add per write). What an entry costs is the
//! map's to say ([`crate::map::Map::entry_cost`]): on the engine's table, exactly its one block's size
//! class (`table/slab.rs`); on flurry, its three allocations as glibc rounds them (`map/flurry.rs`). To the
//! entries the budget adds the map's own structures (slot or bucket arrays, clock tables:
//! [`crate::map::Map::structure_bytes`]) and 48 bytes per key in the expiry index. What the estimate leaves
//! out: memory freed but not yet reclaimed (a replaced value lives until no reader can see it), allocator
//! free lists, and the process's own baseline (threads, connection buffers). benches/results gives the measured
//! ratio of RSS to the estimate.
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
//! that does evicts for itself. An eviction is an ordinary logged delete, so a restart does not bring the
//! key back. `volatile-ttl` takes the expiry index's nearest entries (exact); `allkeys-lru` asks the map
//! for victims ([`crate::map::Map::lru_victim`]: the table samples, as Redis does; flurry walks).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::config::Eviction;

/// One `(u64, Key)` entry of the expiry index (40 bytes) with its B-tree node's slack.
pub(crate) const EXPIRY_ENTRY: i64 = 48;

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
    /// Bytes the process's allocators hold for it: the table's chunks mapped, plus what the system
    /// allocator has handed out (every allocation of the process, not only the data's).
    pub allocated_bytes: u64,
    /// Bytes of replaced and deleted entries (and slot arrays) not yet released: readers may still see
    /// them (process-wide).
    pub retired_bytes: u64,
    /// Bytes of live entries moved since start to empty mostly unused memory.
    pub compacted_bytes: u64,
}

/// The memory engine's byte count, cap and policy.
#[derive(Debug)]
pub(crate) struct Budget {
    /// Estimated bytes of the entries and the expiry index. Signed: with concurrent writers a removal can
    /// be counted before the insert it undoes.
    entries: AtomicI64,
    pub(crate) max: Option<u64>,
    pub(crate) policy: Eviction,
    evicted: AtomicU64,
}

impl Budget {
    pub(crate) fn new(max: Option<u64>, policy: Eviction) -> Budget {
        Budget { entries: AtomicI64::new(0), max, policy, evicted: AtomicU64::new(0) }
    }

    /// Counts `delta` bytes more (or fewer) of entries.
    pub(crate) fn add(&self, delta: i64) {
        if delta != 0 {
            self.entries.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Estimated bytes in use, with `structures` bytes of the map's own.
    pub(crate) fn used(&self, structures: u64) -> u64 {
        self.entries.load(Ordering::Relaxed).max(0) as u64 + structures
    }

    /// How many bytes must go before an entry costing `cost` fits under the cap (`None`: it fits).
    pub(crate) fn shortfall(&self, structures: u64, cost: i64) -> Option<u64> {
        let max = self.max?;
        let after = self.used(structures).saturating_add_signed(cost);
        (after > max).then(|| after - max)
    }

    /// How far over the high-water mark the data is, as the bytes to evict to reach the low-water mark.
    pub(crate) fn excess(&self, structures: u64) -> Option<u64> {
        let max = self.max?;
        let used = self.used(structures);
        (used > max - max / 32).then(|| used.saturating_sub(max - max / 16))
    }

    pub(crate) fn stats(&self, structures: u64) -> MemoryStats {
        MemoryStats {
            used_bytes: self.used(structures),
            max_bytes: self.max,
            evicted_keys: self.evicted.load(Ordering::Relaxed),
            eviction: self.policy,
            allocated_bytes: 0,
            retired_bytes: 0,
            compacted_bytes: 0,
        }
    }

    pub(crate) fn count_eviction(&self) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortfall_and_excess_follow_the_cap() {
        let b = Budget::new(Some(10_000), Eviction::NoEviction);
        assert_eq!(b.shortfall(0, 1000), None);
        b.add(9_000);
        assert_eq!(b.excess(0), None, "under the high-water mark");
        b.add(700);
        let used = b.used(0);
        assert_eq!(b.shortfall(0, 1000), Some(used + 1000 - 10_000));
        assert_eq!(b.excess(0), Some(used - (10_000 - 10_000 / 16)));
        assert_eq!(Budget::new(None, Eviction::NoEviction).shortfall(0, i64::MAX), None);
        assert_eq!(b.used(400), used + 400, "the map's structures count");
    }
}
