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
//!
//! Memory: every write counts what its entry costs in the [`Budget`] and, under a cap, first makes room
//! or fails (`budget.rs`); evictions are logged deletes, like expiries.

use std::cell::Cell;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smallvec::SmallVec;

use crate::budget::{self, Budget, MemoryStats, EXPIRY_ENTRY};
use crate::entry::{self, Condition, Meta};
use crate::expiry::{self, Expirer, ExpiryIndex};
use crate::logfile::LogOp;
use crate::persist::Persistence;
use crate::{EngineConfig, EngineError, Eviction, PutOutcome, Result};

/// A key, inline up to 24 bytes. Hashes, compares and borrows as `[u8]`, so lookups take `&[u8]`.
pub(crate) type Key = SmallVec<[u8; 24]>;
pub(crate) type Map = flurry::HashMap<Key, Box<[u8]>, ahash::RandomState>;
type MapRef<'a> = flurry::HashMapRef<'a, Key, Box<[u8]>, ahash::RandomState>;

/// New random hash seeds, for a map whose seeds are recorded (a durable store's: `snapshot.rs` says why).
pub(crate) fn fresh_seeds() -> crate::snapshot::Seeds {
    let random = ahash::RandomState::new();
    [1u64, 2, 3, 4].map(|i| random.hash_one(i))
}

/// An empty map hashed with `seeds`.
pub(crate) fn map_with_seeds(seeds: crate::snapshot::Seeds) -> Map {
    let [a, b, c, d] = seeds;
    new_map(ahash::RandomState::with_seeds(a, b, c, d))
}

/// An empty map, with its own reclamation collector set up for how this engine holds guards.
///
/// seize's epoch tracking exists to protect reclamation from a thread that holds a guard and stalls:
/// with it, every protected load (three or four per lookup) first finds the thread's reservation in a
/// thread-local table and records an epoch, about 30 instructions each, a sixth of a GET's server time
/// on the hot path. Here no thread holds a guard idle: a connection holds one only for one batch of
/// operations without I/O, and the background threads that hold one longer (snapshot, eviction pass)
/// load every node as they go, which advances their epoch anyway, so tracking would not let the
/// collector free anything sooner. Without it, a protected load is a plain load.
fn new_map(hasher: ahash::RandomState) -> Map {
    Map::with_hasher(hasher).with_collector(seize::Collector::new().epoch_frequency(None))
}

/// How often the evictor checks the budget. Nothing else wakes it: a writer that meets the cap evicts for
/// itself.
const EVICT_TICK: Duration = Duration::from_millis(10);

/// What the store's views and background threads share.
struct Shared {
    map: Arc<Map>,
    persist: Option<Arc<Persistence>>,
    /// Versions for a store without a log (with one, a write's version is its sequence number).
    next_version: AtomicU64,
    /// Keys with an expiry, by expiry (`expiry.rs`).
    expiring: ExpiryIndex,
    /// Whether any value has ever had an expiry here. Until one has, a write need not read the value it
    /// replaces (to tell an expired one from a live one): that read is a cache miss per write.
    any_expiry: AtomicBool,
    budget: Budget,
}

/// The in-memory backend, optionally made durable by an operation log and snapshots.
pub(crate) struct MemoryStore {
    shared: Arc<Shared>,
    expirer: Mutex<Expirer>,
    /// Only under a cap with an eviction policy.
    evictor: Mutex<Option<Expirer>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("len", &self.shared.map.len()).finish()
    }
}

impl MemoryStore {
    /// A volatile store.
    pub(crate) fn new(config: &EngineConfig) -> Self {
        let map = Arc::new(new_map(ahash::RandomState::new()));
        Self::with(map, None, Budget::new(config.max_memory, config.eviction), false, config)
    }

    /// A store recovered from, and logging to, `dir`.
    pub(crate) fn durable(dir: &std::path::Path, config: &EngineConfig) -> Result<Self> {
        let budget = Budget::new(config.max_memory, config.eviction);
        let (persist, map, any_expiry) = Persistence::open(dir, config, &budget)?;
        Ok(Self::with(map, Some(Arc::new(persist)), budget, any_expiry, config))
    }

    /// The store over `map` (recovered, or empty; `budget` has counted it), with its expiry index built
    /// (a pass over the map, only when some value has an expiry) and its background threads started.
    fn with(
        map: Arc<Map>,
        persist: Option<Arc<Persistence>>,
        budget: Budget,
        any_expiry: bool,
        config: &EngineConfig,
    ) -> Self {
        let mut index = std::collections::BTreeSet::new();
        if any_expiry {
            for (key, stored) in map.pin().iter() {
                if let Some((meta, _)) = entry::split(stored).filter(|(m, _)| m.expires_ms != 0) {
                    index.insert((meta.expires_ms, key.clone()));
                }
            }
        }
        budget.add(EXPIRY_ENTRY * index.len() as i64);
        let shared = Arc::new(Shared {
            map,
            persist,
            next_version: AtomicU64::new(1),
            any_expiry: AtomicBool::new(!index.is_empty()),
            expiring: Mutex::new(index),
            budget,
        });
        let s = Arc::clone(&shared);
        let expirer = Expirer::start("otkv-expire", move |now| expire_due(&s, now));
        let evictor = (config.max_memory.is_some() && config.eviction != Eviction::NoEviction).then(|| {
            let s = Arc::clone(&shared);
            Expirer::start_every("otkv-evict", EVICT_TICK, move |_| evict_excess(&s))
        });
        MemoryStore { shared, expirer: Mutex::new(expirer), evictor: Mutex::new(evictor) }
    }

    /// Pins the current thread once for a batch of operations.
    pub(crate) fn view(&self) -> MemoryView<'_> {
        MemoryView { map: self.shared.map.pin(), s: &self.shared }
    }

    pub(crate) fn len(&self) -> usize {
        self.shared.map.len()
    }

    pub(crate) fn memory_stats(&self) -> MemoryStats {
        self.shared.budget.stats(self.len())
    }

    pub(crate) fn persistence(&self) -> Option<&Persistence> {
        self.shared.persist.as_deref()
    }

    pub(crate) fn snapshot(&self) -> Result<()> {
        self.shared.persist.as_ref().map_or(Ok(()), |p| p.snapshot_now(&self.shared.map))
    }

    /// Clean shutdown: the background threads stopped, then a last snapshot and flush, when durable.
    pub(crate) fn close(&self) -> Result<()> {
        crate::commit::lock(&self.expirer).stop();
        if let Some(evictor) = crate::commit::lock(&self.evictor).as_mut() {
            evictor.stop();
        }
        match self.shared.persist.as_ref() {
            Some(p) => p.close(&self.shared.map),
            None => Ok(()),
        }
    }
}

/// The memory map with one epoch guard held for a batch of operations.
pub(crate) struct MemoryView<'a> {
    map: MapRef<'a>,
    s: &'a Shared,
}

/// A key chosen for eviction.
enum Victim {
    /// `allkeys-lru`: whatever its value.
    Any(Key),
    /// `volatile-ttl`: only if its value still expires at this time (its index entry is already taken).
    Expiring(u64, Key),
}

impl MemoryView<'_> {
    /// Runs `f` on the live value and its metadata, in place (`None`: absent or expired).
    pub(crate) fn get_with<R>(&self, key: &[u8], f: impl FnOnce(Meta, &[u8]) -> R) -> Option<R> {
        let (meta, value) = entry::live_now(self.map.get(key)?)?;
        self.s.budget.touch(key);
        Some(f(meta, value))
    }

    /// Stores the value if `cond` holds; with a log, also logs it. Returns the outcome (`None`: the
    /// condition failed, nothing was written), the new version, and the log ticket (0: none). Under a
    /// memory cap, first makes room for the entry or fails with [`EngineError::OutOfMemory`].
    pub(crate) fn put(
        &self,
        key: &[u8],
        value: &[u8],
        cond: Condition,
        expires_ms: u64,
    ) -> Result<(Option<PutOutcome>, u64, u64)> {
        if self.s.budget.max.is_some() {
            let index = if expires_ms != 0 { EXPIRY_ENTRY } else { 0 };
            self.make_room(budget::entry_bytes(key.len(), entry::META_LEN + value.len()) + index)?;
        }
        if expires_ms != 0 && !self.s.any_expiry.load(Ordering::Relaxed) {
            self.s.any_expiry.store(true, Ordering::Relaxed);
        }
        let apply = |version: u64| {
            let stored = entry::encode(Meta { version, expires_ms }, value);
            self.store_if(key, stored, cond, expires_ms)
        };
        match self.s.persist.as_deref() {
            None => {
                let version = self.s.next_version.fetch_add(1, Ordering::Relaxed);
                Ok((apply(version), version, 0))
            }
            Some(p) => {
                let op = LogOp::Put { key, value, expires_ms };
                let (outcome, seq) = p.append(op, apply, Option::is_some)?;
                Ok((outcome, seq, seq))
            }
        }
    }

    /// Writes `stored` under `key` if `cond` holds of the live value, atomically with respect to every
    /// other write of the key (flurry locks the key's bin for `compute_if_present` and inserts).
    fn store_if(
        &self,
        key: &[u8],
        stored: Box<[u8]>,
        cond: Condition,
        expires_ms: u64,
    ) -> Option<PutOutcome> {
        let (budget, new_len) = (&self.s.budget, stored.len());
        budget.touch(key);
        if cond == Condition::Always {
            let old = self.map.insert(Key::from_slice(key), stored);
            // The old value's length is in its seize link, which retiring it has just touched anyway.
            budget.count_store(key.len(), new_len, old.map(|o| o.len()));
            if !self.s.any_expiry.load(Ordering::Relaxed) {
                // Nothing here has ever expired: whatever was there was live (and is not indexed).
                return Some(if old.is_some() { PutOutcome::Replaced } else { PutOutcome::Created });
            }
            let old = old.and_then(|o| entry::split(o));
            let old_expiry = old.map_or(0, |(m, _)| m.expires_ms);
            self.note_expiry(key, old_expiry, expires_ms);
            let live = old.is_some() && (old_expiry == 0 || old_expiry > entry::now_ms());
            return Some(if live { PutOutcome::Replaced } else { PutOutcome::Created });
        }
        let mut stored = Some(stored);
        loop {
            let (present, outcome) = (Cell::new(false), Cell::new(None));
            let (replaced_expiry, replaced_len) = (Cell::new(0), Cell::new(0));
            self.map.compute_if_present(key, |_, old| {
                present.set(true);
                let current = entry::live_now(old).map(|(m, _)| m);
                if cond.holds(current) {
                    replaced_expiry.set(expires_of(old));
                    replaced_len.set(old.len());
                    outcome.set(Some(if current.is_some() {
                        PutOutcome::Replaced
                    } else {
                        PutOutcome::Created
                    }));
                    stored.take()
                } else {
                    // Unchanged: flurry has no "leave as is", so the same bytes go back in.
                    Some(old.clone())
                }
            });
            if present.get() {
                if outcome.get().is_some() {
                    budget.count_store(key.len(), new_len, Some(replaced_len.get()));
                    self.note_expiry(key, replaced_expiry.get(), expires_ms);
                }
                return outcome.get();
            }
            if !cond.holds(None) {
                return None;
            }
            match self.map.try_insert(Key::from_slice(key), stored.take()?) {
                Ok(_) => {
                    budget.count_store(key.len(), new_len, None);
                    self.note_expiry(key, 0, expires_ms);
                    return Some(PutOutcome::Created);
                }
                // Another writer created the key in between: decide again against its value.
                Err(e) => stored = Some(e.not_inserted),
            }
        }
    }

    fn note_expiry(&self, key: &[u8], old: u64, new: u64) {
        expiry::note(&self.s.expiring, &self.s.budget, key, old, new);
    }

    /// Removes the key if `cond` holds; with a log, logs the removal if there was one. Returns whether a
    /// live value was removed (`None`: the condition failed) and the log ticket.
    pub(crate) fn delete(&self, key: &[u8], cond: Condition) -> Result<(Option<bool>, u64)> {
        match self.s.persist.as_deref() {
            None => Ok((self.remove_if(key, cond).0, 0)),
            Some(p) => {
                // Logged when anything left the map, live or expired: a restart must not bring it back.
                let remove = |_seq| self.remove_if(key, cond);
                let ((outcome, _), seq) = p.append(LogOp::Delete(key), remove, |(_, removed)| *removed)?;
                Ok((outcome, seq))
            }
        }
    }

    /// `(outcome, anything removed)`.
    fn remove_if(&self, key: &[u8], cond: Condition) -> (Option<bool>, bool) {
        let budget = &self.s.budget;
        if cond == Condition::Always {
            let Some(old) = self.map.remove(key) else { return (Some(false), false) };
            budget.count_removal(key.len(), old.len());
            if !self.s.any_expiry.load(Ordering::Relaxed) {
                // Nothing here has ever expired: it was live, and is not indexed.
                return (Some(true), true);
            }
            self.note_expiry(key, expires_of(old), 0);
            return (Some(entry::live_now(old).is_some()), true);
        }
        let (present, removed, old_expiry, old_len) =
            (Cell::new(false), Cell::new(None), Cell::new(0), Cell::new(0));
        self.map.compute_if_present(key, |_, old| {
            present.set(true);
            let current = entry::live_now(old).map(|(m, _)| m);
            if cond.holds(current) {
                removed.set(Some(current.is_some()));
                old_expiry.set(expires_of(old));
                old_len.set(old.len());
                None
            } else {
                Some(old.clone())
            }
        });
        match (present.get(), removed.get()) {
            (true, Some(live)) => {
                budget.count_removal(key.len(), old_len.get());
                self.note_expiry(key, old_expiry.get(), 0);
                (Some(live), true)
            }
            (true, None) => (None, false),
            (false, _) if cond.holds(None) => (Some(false), false),
            (false, _) => (None, false),
        }
    }

    /// Removes `key` if `still` holds of its stored value, logging the removal like a delete; returns
    /// the removed value's expiry (0: none), or `None` when nothing was removed. The caller keeps the
    /// expiry index right.
    fn remove_logged(&self, key: &[u8], still: impl Fn(&[u8]) -> bool) -> Result<Option<u64>> {
        // Most candidates are still current; check before locking the bin (and cloning a value back).
        if !self.map.get(key).is_some_and(|v| still(v)) {
            return Ok(None);
        }
        let removed = Cell::new(None);
        let remove = |_seq| {
            self.map.compute_if_present(key, |_, old| {
                if still(old) {
                    removed.set(Some((old.len(), expires_of(old))));
                    None
                } else {
                    Some(old.clone())
                }
            });
            removed.get().is_some()
        };
        match self.s.persist.as_deref() {
            None => {
                remove(0);
            }
            Some(p) => {
                p.append(LogOp::Delete(key), remove, |removed| *removed)?;
            }
        }
        Ok(removed.get().map(|(len, expires)| {
            self.s.budget.count_removal(key.len(), len);
            expires
        }))
    }

    /// Under a cap: evicts (as the policy says) until an entry costing `cost` fits, or fails with
    /// [`EngineError::OutOfMemory`] saying why it could not.
    fn make_room(&self, cost: i64) -> Result<()> {
        let budget = &self.s.budget;
        while let Some(short) = budget.shortfall(self.map.len(), cost) {
            if budget.policy == Eviction::NoEviction || !self.evict_one(short)? {
                let why = match budget.policy {
                    Eviction::NoEviction => "the eviction policy is noeviction",
                    Eviction::AllKeysLru => "no key could be evicted (allkeys-lru)",
                    Eviction::VolatileTtl => "no key with an expiry is left to evict (volatile-ttl)",
                };
                let (used, max) = (budget.used(self.map.len()), budget.max.unwrap_or(0));
                return Err(EngineError::OutOfMemory { used, max, why });
            }
        }
        Ok(())
    }

    /// Evicts one key as the policy says; `false` when there is none to evict. `excess` (bytes) sizes an
    /// `allkeys-lru` pass when the candidate pool has run dry.
    fn evict_one(&self, excess: u64) -> Result<bool> {
        let budget = &self.s.budget;
        loop {
            let victim = match budget.policy {
                Eviction::NoEviction => return Ok(false),
                Eviction::VolatileTtl => match expiry::take_nearest(&self.s.expiring, budget) {
                    Some((at, key)) => Victim::Expiring(at, key),
                    None => return Ok(false),
                },
                Eviction::AllKeysLru => match budget.next_lru_candidate() {
                    Some(key) => Victim::Any(key),
                    None => {
                        if self.map.is_empty() {
                            return Ok(false);
                        }
                        let len = self.map.len();
                        let per_key = (budget.used(len) / len as u64).max(1);
                        let reserve = budget.max.unwrap_or(0) / 16;
                        budget.refill_pool(self.map.keys(), ((excess + reserve) / per_key) as usize + 16);
                        match budget.next_lru_candidate() {
                            Some(key) => Victim::Any(key),
                            None => return Ok(false),
                        }
                    }
                },
            };
            let removed = match &victim {
                Victim::Any(key) => self.remove_logged(key, |_| true)?.inspect(|&expires| {
                    self.note_expiry(key, expires, 0);
                }),
                Victim::Expiring(at, key) => self.remove_logged(key, |v| expires_of(v) == *at)?,
            };
            if removed.is_some() {
                budget.count_eviction();
                return Ok(true);
            }
            // Gone or changed since it was chosen: take the next.
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
        let now = entry::now_ms();
        for (key, stored) in self.map.iter() {
            if !key.starts_with(prefix) || entry::live(stored, now).is_none() {
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

/// The expiry of a stored entry (0: none).
fn expires_of(stored: &[u8]) -> u64 {
    entry::split(stored).map_or(0, |(m, _)| m.expires_ms)
}

/// One batch of the expirer: removes the keys the index says are due at `now` whose stored expiry is
/// still the indexed one, logging each removal. Returns how many index entries it took.
fn expire_due(s: &Shared, now: u64) -> usize {
    let due = expiry::take_due(&s.expiring, &s.budget, now);
    let view = MemoryView { map: s.map.pin(), s };
    for (at, key) in &due {
        if let Err(e) = view.remove_logged(key, |v| expires_of(v) == *at) {
            tracing::warn!(error = %e, "expiring a key failed; it stays unreadable and is retried on restart");
            return due.len().min(expiry::BATCH - 1);
        }
    }
    due.len()
}

/// One batch of the evictor: while the data is over the high-water mark, evicts down toward the
/// low-water mark, up to [`expiry::BATCH`] keys under one guard (a long-held guard would keep what it
/// evicts from being freed). Returns how many keys it evicted.
fn evict_excess(s: &Shared) -> usize {
    let view = MemoryView { map: s.map.pin(), s };
    let mut evicted = 0;
    while evicted < expiry::BATCH {
        let Some(excess) = s.budget.excess(view.map.len()) else { break };
        match view.evict_one(excess) {
            Ok(true) => evicted += 1,
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(error = %e, "evicting a key failed");
                break;
            }
        }
    }
    evicted
}
