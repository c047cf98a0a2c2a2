//! The memory engine's own hash table: one allocation per entry, one word per slot, lock-free reads.
//!
//! ## Layout
//!
//! The table is [`SHARDS`] shards, chosen by the top bits of the key's 64-bit hash (ahash, seeded: keys come
//! from clients). A shard is an open-addressing array of 64-bit slot words, a multiple of 8 long, probed
//! linearly from the key's home slot, `tag * len / 2^16`. The shards' arrays are found in one dense array
//! of head words, `len / 8 << 48 | address` (0 before a shard's first write), so a lookup touches the head
//! (4,096 of them fill 32 KiB, which stays in cache), one slot line and the block. A word is one of:
//!
//! ```text
//! 0                          empty: ends every probe
//! 1                          tombstone: a deleted entry, skipped by probes, reused by inserts
//! tag << 48 | block address  an entry: tag = bits 32..48 of the key's hash (1 if those are 0); the
//!                            block is block.rs's
//! ```
//!
//! so a probe rejects a slot whose tag differs without touching its block, and a hit costs the slot's cache
//! line and the block's. The home slot comes from the tag alone, so a rebuild moves words without reading
//! a single block, and arrays can grow by an eighth at a time (keeping them about 0.7 full) instead of
//! doubling. (Keys whose tags are close share a neighbourhood, so a foreign entry in a probe matches the
//! tag more often than one in 65,536: about one in `65,536 / len`, still rare for the few hundred to few
//! thousand slots a shard holds at 1M–10M keys. Past 65,536 slots a shard's homes spread more coarsely;
//! with 4,096 shards that is beyond 200M keys.)
//!
//! ## Concurrency contract
//!
//! - **Reads take no lock, make no read-modify-write and allocate nothing**: under an epoch guard
//!   ([`epoch`], pinned once per batch by the caller), they load the shard's array pointer and the slot
//!   words with `Acquire` and read blocks in place.
//! - **Writers lock one shard** (its `writer` mutex), never a global lock; a writer never blocks a reader.
//! - **A block never changes once published** (but for its access clock, a relaxed hint): a write of a
//!   key publishes a new block with one `Release` store into the key's slot and defers the old block's
//!   release to the epoch collector. A delete stores a tombstone and defers the same way.
//! - **Growth is per shard and never stops the world**: the shard's writer copies the live words into an
//!   array an eighth larger (or the same size, when tombstones are most of what fills it), publishes it with
//!   one `Release` store of the array pointer, and defers the old array's release. Readers on the old array
//!   still find every entry it held (its words no longer change: writers of the shard wait for the lock,
//!   and after the store they use the new array). A shard holds about `1 / SHARDS` of the keys, and the
//!   copy reads only slot words, so it is short: a few microseconds at 10M keys.
//!
//! ## Invariants
//!
//! 1. A key has at most one entry word in a shard's current array, found by probing from its home slot
//!    before the first empty slot.
//! 2. Empty slots are never written except by inserts: a tombstone never becomes empty in place (that
//!    would cut probe chains); tombstones go only when an array is rebuilt.
//! 3. Every array keeps at least one empty slot (its used slots, live and tombstones, stay within 3/4
//!    of it, 1/2 for short ones), so every probe ends.
//! 4. A block or array is released only through the epoch collector, after it was unlinked: never while
//!    a reader pinned before the unlink can still reach it.
//! 5. Only a shard's writer, holding its lock, stores into its current array or replaces the array.
//!
//! Each read or write is linearizable per key: a read's point is its load of the decisive slot word (or, on
//! an array replaced meanwhile, the moment it was replaced: the old array's words are the state then); a
//! write's is its store. The loom models (`loom_tests.rs`) check these protocols interleaving by
//! interleaving; `tests/linearizable.rs` checks histories of the whole engine.

pub(crate) mod block;
pub(crate) mod epoch;
#[cfg(all(test, loom))]
mod loom_tests;
pub(crate) mod slab;
mod sync;
#[cfg(all(test, not(loom)))]
mod tests;

use block::{BlockRef, Layout};
use epoch::{Deferred, Guard};
use sync::{lock, AtomicU64, AtomicUsize, Mutex, Ordering};

use crate::entry::Meta;

/// Shards in a table of the default size (a power of two). Memory engines use [`SHARDS`]; tests use fewer.
pub(crate) const SHARDS: usize = 4096;
const EMPTY: u64 = 0;
const TOMBSTONE: u64 = 1;
const ADDRESS: u64 = (1 << 48) - 1;
/// Blocks compaction moves under one hold of a shard's lock.
const MOVES_PER_LOCK: usize = 16;
/// The first array a shard gets.
const MIN_SLOTS: usize = 8;
/// Arrays are a multiple of this long (a head word records the length in these units).
const GROWTH_STEP: usize = 8;
/// The longest array: its length in [`GROWTH_STEP`]s fills the 16 bits a head word has for it. (At
/// 4,096 shards, 1.6 billion keys.)
const MAX_SLOTS: usize = 0xFFFF * GROWTH_STEP;
/// Arrays shorter than this are filled to half at most, longer ones to 3/4 (used slots: live entries and
/// tombstones). A probe for an absent key runs to the next empty slot: about 6 slots at 3/4, 2.5 at 1/2.
/// Short arrays are those of small tables (100k keys spread over 4,096 shards: ~24 a shard), whose slots
/// are a small part of their memory and whose lookups, all in cache, are bound by the probe's work; at
/// 1M keys and more arrays are long, and their slots are what 3/4 saves.
const SHORT_ARRAY: usize = 128;

/// Whether an array of `len` slots may have `used` of them in use.
fn fits(used: usize, len: usize) -> bool {
    if len < SHORT_ARRAY {
        used * 2 <= len
    } else {
        used * 4 <= len * 3
    }
}

/// An array length (whole steps) that holds `used` slots.
fn length_for(used: usize) -> usize {
    let short = (used * 2).next_multiple_of(GROWTH_STEP);
    let len = if short < SHORT_ARRAY { short } else { (used * 4).div_ceil(3).next_multiple_of(GROWTH_STEP) };
    len.clamp(MIN_SLOTS, MAX_SLOTS)
}

/// The next length of a full array: an eighth longer. Small steps keep arrays full (about 0.7 of each is
/// used, under 12 bytes of slots a key, where doubling averaged 0.55 and 15); a rebuild reads only slot
/// words, so growing often is cheap.
fn grown(len: usize) -> usize {
    (len + len / 8).next_multiple_of(GROWTH_STEP).clamp(MIN_SLOTS, MAX_SLOTS)
}

/// The hash seeds of a table (recorded in snapshots, so a reloaded table hashes the same way).
pub(crate) type Seeds = [u64; 4];

/// A shard's slot array, seen through its head word.
#[derive(Clone, Copy)]
struct Slots<'a> {
    words: &'a [AtomicU64],
}

impl<'a> Slots<'a> {
    /// A new array of `len` empty slots, as a head word. Owned by the caller until published.
    fn allocate(len: usize) -> u64 {
        debug_assert!(len.is_multiple_of(GROWTH_STEP) && len <= MAX_SLOTS);
        let words: Box<[AtomicU64]> = (0..len).map(|_| AtomicU64::new(EMPTY)).collect();
        let address = Box::into_raw(words).cast::<AtomicU64>() as u64;
        assert!(address <= ADDRESS, "an array address above 2^48");
        ((len / GROWTH_STEP) as u64) << 48 | address
    }

    /// The array a head word names (`None` for a shard without one).
    ///
    /// # Safety
    /// `head` was loaded from a shard while pinned (or under the shard's lock): its array is released
    /// only through the collector, after `'a`.
    #[allow(unsafe_code)]
    unsafe fn of(head: u64) -> Option<Slots<'a>> {
        if head == 0 {
            return None;
        }
        // SAFETY: the caller's contract, and `head` is not 0.
        Some(unsafe { Slots::of_allocated(head) })
    }

    /// [`Slots::of`] for a head that is not 0 (one [`Slots::allocate`] returned).
    ///
    /// # Safety
    /// As [`Slots::of`], and `head != 0`.
    #[allow(unsafe_code)]
    unsafe fn of_allocated(head: u64) -> Slots<'a> {
        let ptr = (head & ADDRESS) as *const AtomicU64;
        #[cfg(loom)]
        assert!(!slab::is_released(ptr.cast()), "a slot array was read after its release");
        // SAFETY: `allocate` made `len` words at this address (the caller's contract keeps them).
        Slots { words: unsafe { std::slice::from_raw_parts(ptr, len_of(head)) } }
    }

    /// Where a key with `tag` starts probing: the tag scaled to the array (`tag * len / 2^16`), so an
    /// array of any length is addressed by the tag alone, and a rebuild places every word by its tag
    /// without reading its block.
    #[inline]
    fn home(self, tag: u64) -> usize {
        (tag as usize * self.words.len()) >> 16
    }

    /// The slot after `i`, wrapping at the end.
    #[inline]
    fn next(self, i: usize) -> usize {
        if i + 1 == self.words.len() {
            0
        } else {
            i + 1
        }
    }
}

/// The length of the array a (non-zero) head word names.
fn len_of(head: u64) -> usize {
    (head >> 48) as usize * GROWTH_STEP
}

/// Releases a slot array (for [`Deferred`]): `len` words at `ptr`.
///
/// # Safety
/// `ptr` and `len` are an array from `Slots::allocate`, unlinked, that no reader can reach.
#[allow(unsafe_code)]
unsafe fn release_slots(ptr: *mut u8, len: usize) {
    #[cfg(loom)]
    {
        slab::mark_released(ptr);
        let _ = len;
    }
    // SAFETY: the caller's contract; the box `allocate` leaked, rebuilt from its parts.
    #[cfg(not(loom))]
    #[allow(clippy::cast_ptr_alignment, reason = "`ptr` came from a Box<[AtomicU64]>: 8-aligned")]
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr.cast::<AtomicU64>(), len)) });
}

/// What a shard's writer keeps.
struct WriterState {
    /// Live entries.
    live: usize,
    /// Slots that are not empty: live entries and tombstones.
    used: usize,
}

/// A shard's writer side, a cache line of its own (writers of neighbouring shards do not share one).
#[repr(align(64))]
struct Writer {
    state: Mutex<WriterState>,
    /// `WriterState::live`, readable without the lock.
    live: AtomicUsize,
}

/// What a write does to a key, decided from its current entry under the shard's lock.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'v> {
    /// Nothing.
    Keep,
    /// Store this value with this metadata.
    Put(Meta, &'v [u8]),
    /// Remove the entry.
    Remove,
}

/// What a write did: the entry it replaced or removed, and the block it stored, by cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Changed {
    /// The entry that was there (`Put` over it, or `Remove`), with its block's cost.
    pub old: Option<(Meta, usize)>,
    /// The new block's cost (`Put`).
    pub new: Option<usize>,
}

/// The table. `Send + Sync`; see the module docs for what may run concurrently.
pub(crate) struct Table {
    /// Per shard, its array's head word (see the module docs).
    heads: Box<[AtomicU64]>,
    writers: Box<[Writer]>,
    shift: u32,
    hasher: ahash::RandomState,
    layout: Layout,
    /// Bytes of slot arrays in use (exactly: each array's words).
    slot_bytes: AtomicUsize,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("len", &self.len()).finish_non_exhaustive()
    }
}

// SAFETY: the raw pointers inside are to arrays and blocks the table owns, published and released
// under the protocol above; every access is through atomics or under a shard's lock.
#[allow(unsafe_code)]
unsafe impl Send for Table {}
#[allow(unsafe_code)]
unsafe impl Sync for Table {}

/// A key's tag: 16 bits of its hash, never 0 (the tag of the empty and tombstone words), so one compare
/// of a word's top bits tells an entry that may be the key's from everything else.
fn tag(hash: u64) -> u64 {
    ((hash >> 32) & 0xFFFF).max(1)
}

impl Table {
    /// An empty table of `shards` shards (a power of two) hashed with `seeds`, whose blocks keep access
    /// clocks if `clocks`.
    pub(crate) fn new(seeds: Seeds, shards: usize, clocks: bool) -> Table {
        let shards = shards.next_power_of_two().max(1);
        let [a, b, c, d] = seeds;
        Table {
            heads: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            writers: (0..shards)
                .map(|_| Writer {
                    state: Mutex::new(WriterState { live: 0, used: 0 }),
                    live: AtomicUsize::new(0),
                })
                .collect(),
            shift: 64 - shards.trailing_zeros(),
            hasher: ahash::RandomState::with_seeds(a, b, c, d),
            layout: Layout::new(clocks),
            slot_bytes: AtomicUsize::new(0),
        }
    }

    /// Pins this thread: what is read under the guard stays readable until it is dropped.
    #[allow(clippy::unused_self, reason = "pinning is per thread; the table's method says what it pins for")]
    pub(crate) fn pin(&self) -> Guard {
        epoch::pin()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of a hash.
    fn shard(&self, hash: u64) -> usize {
        // `shift` is 64 for a single shard: `checked_shr` gives 0 then.
        hash.checked_shr(self.shift).unwrap_or(0) as usize
    }

    /// Live entries.
    pub(crate) fn len(&self) -> usize {
        self.writers.iter().map(|w| w.live.load(Ordering::Relaxed)).sum()
    }

    /// Bytes of slot arrays.
    pub(crate) fn slot_bytes(&self) -> usize {
        self.slot_bytes.load(Ordering::Relaxed)
    }

    /// What a block for this entry costs (see [`slab::cost`]).
    pub(crate) fn block_cost(&self, key_len: usize, value_len: usize, expires: bool) -> usize {
        slab::cost(self.layout.size(key_len, value_len, expires))
    }

    /// The entry for `key`, read in place under `guard`: readable while both the table and the guard
    /// live (the table's drop releases what is linked at once).
    #[inline]
    pub(crate) fn get<'g>(&'g self, key: &[u8], _guard: &'g Guard) -> Option<BlockRef<'g>> {
        let hash = self.hash(key);
        let head = self.heads[self.shard(hash)].load(Ordering::Acquire);
        // SAFETY: a head loaded while pinned by `_guard`.
        #[allow(unsafe_code)]
        let slots = unsafe { Slots::of(head) }?;
        let tag = tag(hash);
        let mut i = slots.home(tag);
        loop {
            let word = slots.words[i].load(Ordering::Acquire);
            if word >> 48 == tag {
                // SAFETY: an entry word holds a published block's address; we are pinned.
                #[allow(unsafe_code)]
                let block = unsafe { BlockRef::new((word & ADDRESS) as *const u8, self.layout) };
                if block.has_key(key) {
                    return Some(block);
                }
            } else if word == EMPTY {
                return None;
            }
            i = slots.next(i);
        }
    }

    /// Probes `slots` for `key`: its slot and entry if present; else `None` and the slot an insert would
    /// take (the first tombstone on the way, or the empty slot that ended the probe). The block it finds
    /// lives as long as the array it was found in (`'s`: the guard's borrow).
    #[inline(always)]
    fn probe<'s>(&self, slots: Slots<'s>, hash: u64, key: &[u8]) -> (usize, Option<BlockRef<'s>>) {
        let tag = tag(hash);
        let mut i = slots.home(tag);
        let mut reuse = None;
        loop {
            let word = slots.words[i].load(Ordering::Acquire);
            if word >> 48 == tag {
                // SAFETY: an entry word holds a published block's address; the caller is pinned.
                #[allow(unsafe_code)]
                let block = unsafe { BlockRef::new((word & ADDRESS) as *const u8, self.layout) };
                if block.has_key(key) {
                    return (i, Some(block));
                }
            } else if word == EMPTY {
                return (reuse.unwrap_or(i), None);
            } else if word == TOMBSTONE {
                reuse.get_or_insert(i);
            }
            i = slots.next(i);
        }
    }

    /// Changes `key` as `decide` says, given its current entry (which may have expired: the caller
    /// decides), atomically against every other write of the key. `decide` runs under the shard's lock:
    /// keep it short. `clock` stamps a new block's access clock.
    pub(crate) fn change<'v, R>(
        &self,
        key: &[u8],
        guard: &Guard,
        clock: u32,
        decide: impl FnOnce(Option<BlockRef<'_>>) -> (Change<'v>, R),
    ) -> (R, Changed) {
        let hash = self.hash(key);
        let shard = self.shard(hash);
        let writer = &self.writers[shard];
        let mut w = lock(&writer.state);
        let slots = self.room_for_one(shard, &mut w, guard);
        let (at, current) = self.probe(slots, hash, key);
        let (change, out) = decide(current);
        // The entry there, with its size (read once: it is needed for the budget and the release).
        let old = current.map(|b| (b, b.size()));
        let mut changed = Changed::default();
        match (change, old) {
            (Change::Keep, _) | (Change::Remove, None) => {}
            (Change::Put(meta, value), _) => {
                // The engine refuses longer keys and values before any write (`Batch::put_if`).
                debug_assert!(key.len() <= block::MAX_KEY && value.len() <= block::MAX_VALUE);
                let (block, size) = self.layout.write(meta, key, value, clock);
                assert!((block as u64) <= ADDRESS, "a block address above 2^48");
                let word = tag(hash) << 48 | block as u64;
                // Only this writer stores into the array: what it finds is what it replaces.
                let previous = slots.words[at].load(Ordering::Relaxed);
                slots.words[at].store(word, Ordering::Release);
                changed.new = Some(slab::cost(size));
                if let Some((block, size)) = old {
                    changed.old = Some((block.meta(), slab::cost(size)));
                    self.retire(block, size, guard);
                } else {
                    if previous == EMPTY {
                        w.used += 1;
                    }
                    w.live += 1;
                    writer.live.store(w.live, Ordering::Relaxed);
                }
            }
            (Change::Remove, Some((block, size))) => {
                slots.words[at].store(TOMBSTONE, Ordering::Release);
                changed.old = Some((block.meta(), slab::cost(size)));
                self.retire(block, size, guard);
                w.live -= 1;
                writer.live.store(w.live, Ordering::Relaxed);
                // An array four times longer than its entries need shrinks to twice: deletes give slot
                // memory back too, and a shard that refills grows again in eighths.
                let len = slots.words.len();
                let needed = length_for(w.live);
                if len > MIN_SLOTS && len >= 4 * needed {
                    self.rebuild(shard, &mut w, (2 * needed).min(len), guard);
                }
            }
        }
        (out, changed)
    }

    /// Moves every block that `should_move(block address, size)` picks (the slab's evacuating chunks) to
    /// a fresh block, shard by shard: the blocks are found as a reader finds them (pinned, no lock; the
    /// predicate runs there), then, under the shard's lock, each one whose slot word has not changed is
    /// copied, its word swapped and the old block retired like an overwritten one, so readers that hold it
    /// keep reading it. Calls `pace()` after each shard (the caller sleeps there to bound the work per
    /// second). Returns the blocks and bytes moved.
    pub(crate) fn compact(
        &self,
        should_move: impl Fn(*const u8, usize) -> bool,
        mut pace: impl FnMut(),
    ) -> (u64, u64) {
        let (mut blocks, mut bytes) = (0, 0);
        let mut found: Vec<(usize, u64, usize)> = Vec::new();
        for shard in 0..self.heads.len() {
            // First, without the lock (as a reader), the blocks to move; then, a few at a time under the
            // lock, the moves of those whose word has not changed since. The lock is held for
            // MOVES_PER_LOCK copies at most, so a writer of the shard never waits long behind a
            // background pass that the scheduler may have set aside.
            let guard = self.pin();
            let head = self.heads[shard].load(Ordering::Acquire);
            // SAFETY: a head loaded while pinned by `guard`.
            #[allow(unsafe_code)]
            let Some(slots) = (unsafe { Slots::of(head) }) else {
                drop(guard);
                pace();
                continue;
            };
            found.clear();
            for (i, slot) in slots.words.iter().enumerate() {
                let word = slot.load(Ordering::Acquire);
                if word == EMPTY || word == TOMBSTONE {
                    continue;
                }
                // SAFETY: an entry word; pinned.
                #[allow(unsafe_code)]
                let block = unsafe { BlockRef::new((word & ADDRESS) as *const u8, self.layout) };
                let size = block.size();
                if should_move(block.ptr(), size) {
                    found.push((i, word, size));
                }
            }
            for batch in found.chunks(MOVES_PER_LOCK) {
                let _w = lock(&self.writers[shard].state);
                if self.heads[shard].load(Ordering::Acquire) != head {
                    // Rebuilt meanwhile: what is left waits for the next pass.
                    break;
                }
                for &(i, word, size) in batch {
                    let slot = &slots.words[i];
                    // Only this shard's writers store into its array, under the lock we hold.
                    if slot.load(Ordering::Relaxed) != word {
                        continue;
                    }
                    // SAFETY: the word still links this block (checked under the lock), so it is live.
                    #[allow(unsafe_code)]
                    let old = unsafe { BlockRef::new((word & ADDRESS) as *const u8, self.layout) };
                    let fresh = slab::allocate(size);
                    assert!((fresh as u64) <= ADDRESS, "a block address above 2^48");
                    // SAFETY: `old` is a live block of `size` bytes (it cannot be released: its word is
                    // linked and we hold the lock); `fresh` is a new block of `size` bytes.
                    #[allow(unsafe_code)]
                    unsafe {
                        std::ptr::copy_nonoverlapping(old.ptr(), fresh, size);
                    }
                    slot.store(word & !ADDRESS | fresh as u64, Ordering::Release);
                    self.retire(old, size, &guard);
                    blocks += 1;
                    bytes += slab::cost(size) as u64;
                }
            }
            drop(guard);
            pace();
        }
        (blocks, bytes)
    }

    /// Defers the release of an unlinked block of `size` bytes.
    #[allow(clippy::unused_self, reason = "a block retires from the table it was unlinked from")]
    fn retire(&self, block: BlockRef<'_>, size: usize, guard: &Guard) {
        // SAFETY: the block was unlinked from its slot just now, under the shard's lock, so no later reader
        // finds it; `block::release` frees its `size` bytes once no earlier reader can.
        #[allow(unsafe_code)]
        let d = unsafe { Deferred::block(block.ptr().cast_mut(), size, slab::cost(size)) };
        guard.defer(d);
    }

    /// The shard's current array, with room for one more used slot: rebuilt first when full (an eighth
    /// larger, or as large when tombstones fill most of it).
    #[inline(always)]
    fn room_for_one<'w>(&self, shard: usize, w: &mut WriterState, guard: &'w Guard) -> Slots<'w> {
        let head = self.heads[shard].load(Ordering::Acquire);
        let len = if head == 0 { 0 } else { len_of(head) };
        if fits(w.used + 1, len) {
            // SAFETY: published by this shard's writer (we hold its lock); pinned by `guard`.
            #[allow(unsafe_code)]
            if let Some(slots) = unsafe { Slots::of(head) } {
                return slots;
            }
        }
        self.grow(shard, w, len, guard)
    }

    /// [`Table::room_for_one`] when the array is full.
    #[cold]
    #[inline(never)]
    fn grow<'w>(&self, shard: usize, w: &mut WriterState, len: usize, guard: &'w Guard) -> Slots<'w> {
        let want = if w.live * 2 < w.used { len } else { grown(len) };
        // Growing by an eighth may not make room under a lower bound; never less than the live entries need.
        let want = want.max(length_for(w.live + 1));
        // Only a shard of MAX_SLOTS live entries cannot grow: 1.6 billion keys at 4,096 shards.
        assert!(fits(w.live + 1, want), "a shard of the table is full");
        self.rebuild(shard, w, want, guard)
    }

    /// Replaces the shard's array by one of `len` slots holding its live entries (no tombstones).
    fn rebuild<'w>(&self, shard: usize, w: &mut WriterState, len: usize, guard: &'w Guard) -> Slots<'w> {
        let old = self.heads[shard].load(Ordering::Acquire);
        let new = Slots::allocate(len);
        // SAFETY: `new` is ours until published below, and then lives as long as the guard.
        #[allow(unsafe_code)]
        let fresh = unsafe { Slots::of_allocated(new) };
        // SAFETY: the current array, published by this writer (we hold its lock); pinned by `guard`.
        #[allow(unsafe_code)]
        if let Some(old_slots) = unsafe { Slots::of(old) } {
            for word in old_slots.words.iter().map(|s| s.load(Ordering::Relaxed)) {
                if word == EMPTY || word == TOMBSTONE {
                    continue;
                }
                let mut i = fresh.home(word >> 48);
                while fresh.words[i].load(Ordering::Relaxed) != EMPTY {
                    i = fresh.next(i);
                }
                fresh.words[i].store(word, Ordering::Relaxed);
            }
        }
        // Publishes the new array and every word stored in it above.
        self.heads[shard].store(new, Ordering::Release);
        w.used = w.live;
        self.slot_bytes.fetch_add(len * 8, Ordering::Relaxed);
        if old != 0 {
            let old_len = len_of(old);
            self.slot_bytes.fetch_sub(old_len * 8, Ordering::Relaxed);
            // SAFETY: unlinked just now (the shard's head names `new`); released once no reader can see it.
            #[allow(unsafe_code)]
            guard.defer(unsafe {
                Deferred::new(release_slots, (old & ADDRESS) as *mut u8, old_len, old_len * 8)
            });
        }
        fresh
    }

    /// Sizes every shard for `keys` entries spread evenly (recovery, before a bulk load), with room for
    /// three standard deviations of the spread, so few shards grow while loading.
    pub(crate) fn reserve(&self, keys: usize) {
        let mean = keys / self.heads.len() + 1;
        let per_shard = mean + 3 * (mean as f64).sqrt() as usize;
        let len = length_for(per_shard + 1);
        let guard = self.pin();
        for shard in 0..self.heads.len() {
            let mut w = lock(&self.writers[shard].state);
            let head = self.heads[shard].load(Ordering::Acquire);
            if head == 0 || len_of(head) < len {
                self.rebuild(shard, &mut w, len, &guard);
            }
        }
    }

    /// Calls `f` on every entry, shard by shard (pinned afresh for each, so a long walk does not hold
    /// back reclamation). Entries written during the walk may or may not be seen.
    pub(crate) fn for_each(&self, mut f: impl FnMut(BlockRef<'_>)) {
        for shard in 0..self.heads.len() {
            self.for_each_in_shard(shard, &mut f);
        }
    }

    /// Calls `f` on every entry of one shard, pinned for the walk. Every entry that lives throughout the
    /// walk is seen once (an array replaced meanwhile keeps every word it held); an entry written or
    /// removed during it may or may not be.
    pub(crate) fn for_each_in_shard(&self, shard: usize, mut f: impl FnMut(BlockRef<'_>)) {
        let Some(head) = self.heads.get(shard) else { return };
        let guard = self.pin();
        // SAFETY: a head loaded while pinned by `guard`, until the end of this call.
        #[allow(unsafe_code)]
        let Some(slots) = (unsafe { Slots::of(head.load(Ordering::Acquire)) }) else {
            return;
        };
        for word in slots.words.iter().map(|s| s.load(Ordering::Acquire)) {
            if word != EMPTY && word != TOMBSTONE {
                // SAFETY: an entry word; pinned.
                #[allow(unsafe_code)]
                f(unsafe { BlockRef::new((word & ADDRESS) as *const u8, self.layout) });
            }
        }
        drop(guard);
    }

    /// The key's 64-bit hash: its shard is the top [`Table::shard_bits`] bits.
    pub(crate) fn hash_of(&self, key: &[u8]) -> u64 {
        self.hash(key)
    }

    /// How many top bits of a hash name its shard (0 for a single shard).
    pub(crate) fn shard_bits(&self) -> u32 {
        self.heads.len().trailing_zeros()
    }

    /// Calls `f` on up to `n` entries from a random place (`seed` picks it): consecutive live slots from a
    /// random slot of a random shard, moving on to the next shards if that one has fewer. Redis's way of
    /// finding eviction candidates without an ordered index.
    pub(crate) fn sample(&self, seed: u64, n: usize, _guard: &Guard, mut f: impl FnMut(BlockRef<'_>)) {
        let shards = self.heads.len();
        let mut seen = 0;
        for step in 0..shards {
            let head = self.heads[(seed as usize).wrapping_add(step) & (shards - 1)].load(Ordering::Acquire);
            // SAFETY: a head loaded while pinned by `_guard`.
            #[allow(unsafe_code)]
            let Some(slots) = (unsafe { Slots::of(head) }) else {
                continue;
            };
            let len = slots.words.len();
            let start = (seed >> 32) as usize % len;
            for k in 0..len {
                let word = slots.words[(start + k) % len].load(Ordering::Acquire);
                if word != EMPTY && word != TOMBSTONE {
                    // SAFETY: an entry word; pinned.
                    #[allow(unsafe_code)]
                    f(unsafe { BlockRef::new((word & ADDRESS) as *const u8, self.layout) });
                    seen += 1;
                    if seen == n {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
impl Table {
    /// The length of the array of `key`'s shard (0 before its first write): for tests that must see an
    /// array grow.
    pub(crate) fn array_len(&self, key: &[u8]) -> usize {
        let head = self.heads[self.shard(self.hash(key))].load(Ordering::Acquire);
        if head == 0 {
            0
        } else {
            len_of(head)
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // `&mut self`: no reader or writer is left, so what is linked is released at once (what was
        // unlinked earlier is the collector's).
        for head in &self.heads {
            let head = head.swap(0, Ordering::AcqRel);
            // SAFETY: the last reference to this array.
            #[allow(unsafe_code)]
            let Some(slots) = (unsafe { Slots::of(head) }) else {
                continue;
            };
            for word in slots.words.iter().map(|s| s.load(Ordering::Relaxed)) {
                if word != EMPTY && word != TOMBSTONE {
                    // SAFETY: a linked block nobody else can reach any more.
                    #[allow(unsafe_code)]
                    unsafe {
                        let ptr = (word & ADDRESS) as *mut u8;
                        block::release(ptr, BlockRef::new(ptr, self.layout).size());
                    };
                }
            }
            // SAFETY: an array from `Slots::allocate`, unreachable now.
            #[allow(unsafe_code)]
            unsafe {
                release_slots((head & ADDRESS) as *mut u8, len_of(head));
            };
        }
    }
}
