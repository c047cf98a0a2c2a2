//! The seam between what the memory engine means and how it stores it: [`Map`], implemented by the
//! engine's own table (`table.rs`, `--engine memory`) and by flurry (`flurry.rs`, `--engine flurry`,
//! the compared alternative).
//!
//! A map stores, per key, a value with its [`Meta`] (version and expiry), reads in place under a guard
//! held for a batch, and changes a key atomically against every other write of it ([`Map::change`]). What
//! the store above does with that — versions, conditions, expiry, the memory cap and eviction, the log and
//! snapshots (`memory.rs`, `persist.rs`) — is written once, for both maps. A map knows its own memory
//! costs (each entry's, and its fixed structures') and its own way of finding `allkeys-lru` victims.

pub(crate) mod flurry;
pub(crate) mod table;

pub(crate) use crate::table::{Change, Changed, Seeds};

use crate::entry::Meta;
use crate::key::Key;

/// New random hash seeds.
pub(crate) fn fresh_seeds() -> Seeds {
    let random = ahash::RandomState::new();
    [1u64, 2, 3, 4].map(|i| random.hash_one(i))
}

/// A concurrent map of keys to values with metadata.
pub(crate) trait Map: Send + Sync + Sized + 'static {
    /// What a reader holds for a batch of operations (an epoch guard); it never crosses a coroutine
    /// yield (see `lib.rs`).
    type Guard<'m>
    where
        Self: 'm;

    /// An empty map hashed with `seeds`; `lru_cap` is the memory cap when the policy is `allkeys-lru`
    /// (the map then keeps what finding victims needs, sized for the cap).
    fn with_seeds(seeds: Seeds, lru_cap: Option<u64>) -> Self;

    /// Pins this thread for a batch of operations.
    fn pin(&self) -> Self::Guard<'_>;

    /// Lets go of what `guard` protected and protects afresh (a long walk calls it every so many
    /// entries, so it does not hold back the release of what is unlinked meanwhile).
    fn repin<'m>(&'m self, guard: &mut Self::Guard<'m>);

    /// The entry of `key` (expired or not: the caller decides), read in place, and marked used for
    /// `allkeys-lru`.
    fn get<'g>(&'g self, key: &[u8], guard: &'g Self::Guard<'_>) -> Option<(Meta, &'g [u8])>;

    /// Changes `key` as `decide` says given its current entry, atomically against every other write of
    /// the key. `decide` may be called more than once (a map may retry after a race); the last call's
    /// change is the one applied and its output the one returned.
    fn change<'v, R>(
        &self,
        key: &[u8],
        guard: &Self::Guard<'_>,
        decide: impl FnMut(Option<(Meta, &[u8])>) -> (Change<'v>, R),
    ) -> (R, Changed);

    /// Live entries (expired ones not yet removed included).
    fn len(&self) -> usize;

    /// What an entry of this size costs in memory.
    fn entry_cost(&self, key_len: usize, value_len: usize, expires: bool) -> usize;

    /// Bytes of the map's own structures besides its entries (slot or bucket arrays, clock tables).
    fn structure_bytes(&self) -> u64;

    /// Sizes the map for `keys` entries (before a bulk load).
    fn reserve(&self, keys: usize);

    /// Calls `f` on every entry (pinning as it goes; a long walk does not hold back reclamation).
    fn for_each(&self, f: impl FnMut(&[u8], Meta, &[u8]));

    /// Where `key` falls in a listing: its 64-bit hash (a listing's order is by this hash, then by key;
    /// `listing.rs`). Fixed for as long as the map lives, and the same for both maps hashed with the same
    /// seeds.
    fn order_hash(&self, key: &[u8]) -> u64;

    /// How many top bits of the order hash name a group ([`Map::for_each_in_group`]); 0: the map is one
    /// group.
    fn group_bits(&self) -> u32;

    /// Calls `f` on every entry of `group` (those whose order hash starts with its bits), pinning as it
    /// goes. Every entry that lives throughout the walk is seen; one written or removed meanwhile may or
    /// may not be.
    fn for_each_in_group(&self, group: usize, f: impl FnMut(&[u8], Meta, &[u8]));

    /// An approximately least recently used key, to evict (`allkeys-lru`), or `None` when empty. `hint`
    /// is about how many more the caller may need (a map that finds candidates in passes sizes a pass
    /// by it).
    fn lru_victim(&self, guard: &Self::Guard<'_>, hint: usize) -> Option<Key>;

    /// Runs the releases of what was unlinked that no reader can see any more, including those a thread
    /// left in its bag before going idle (the table's epoch collector; flurry's collector runs on its
    /// own, as writes fill its batches).
    fn release_retired(&self) {}

    /// Moves live entries out of mostly empty memory when the waste is worth it, calling `pace()` between
    /// small steps; returns the bytes moved, or `None` when the waste was not worth a pass (`reclaim.rs`).
    fn compact(&self, pace: impl FnMut()) -> Option<u64> {
        let _ = pace;
        None
    }
}
