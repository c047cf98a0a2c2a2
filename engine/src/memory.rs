//! The memory engines: what a key means — versions, conditional writes, expiry, the memory cap and
//! eviction, the log — written once over a [`Map`] (the engine's table for `--engine memory`, flurry for
//! `--engine flurry`).
//!
//! A [`MemoryView`] holds the map's guard for a whole batch of operations (pinning costs about as much as a
//! lookup). It must never live across a point where a `may` coroutine can yield: the coroutine may resume
//! on another thread, and a guard pinned on one thread must not be released on another. The only way to get
//! a view is [`crate::Engine::batch`], whose closure is synchronous, which makes that easy to keep.
//!
//! A write is decided and applied in one [`Map::change`], atomically against every other write of its key
//! (the table's shard lock, flurry's bin lock); with a log, under the log lock too, so the log's order of
//! writes to a key is the map's. Every write counts what its entry costs in the [`Budget`] and, under a cap,
//! first makes room or fails; evictions and expiries are logged deletes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::budget::{Budget, MemoryStats, EXPIRY_ENTRY};
use crate::config::{EngineConfig, Eviction};
use crate::entry::{self, Condition, Meta, PutOutcome, Written};
use crate::error::{EngineError, Result};
use crate::expiry::{self, Expirer, ExpiryIndex};
use crate::listing::{Cursor, Page};
use crate::logfile::LogOp;
use crate::map::{Change, Changed, Map};
use crate::persist::Persistence;
use crate::reclaim::{self, Reclaimer};

/// How often the evictor checks the budget. Nothing else wakes it: a writer that meets the cap evicts for
/// itself.
const EVICT_TICK: Duration = Duration::from_millis(10);

/// A store's versions without a log: unique, not ordered. Each thread takes them from a block of
/// [`VERSION_BLOCK`] it reserved from the store's counter, so writers on two cores do not take turns at
/// one counter's cache line on every write (at 100k keys that halved two threads' put rate).
struct Versions {
    /// Tells this store's blocks from another's in a thread's cache.
    id: u64,
    next: AtomicU64,
}

const VERSION_BLOCK: u64 = 1024;

impl Versions {
    fn new() -> Versions {
        static IDS: AtomicU64 = AtomicU64::new(1);
        Versions { id: IDS.fetch_add(1, Ordering::Relaxed), next: AtomicU64::new(1) }
    }

    fn next(&self) -> u64 {
        thread_local! {
            /// This thread's block: (store id, next version, end of the block).
            static BLOCK: std::cell::Cell<(u64, u64, u64)> = const { std::cell::Cell::new((0, 0, 0)) };
        }
        BLOCK.with(|block| {
            let (id, next, end) = block.get();
            let (next, end) = if id == self.id && next < end {
                (next, end)
            } else {
                let start = self.next.fetch_add(VERSION_BLOCK, Ordering::Relaxed);
                (start, start + VERSION_BLOCK)
            };
            block.set((self.id, next + 1, end));
            next
        })
    }
}

/// What the store's views and background threads share.
struct Shared<M> {
    map: Arc<M>,
    persist: Option<Arc<Persistence>>,
    /// Versions for a store without a log (with one, a write's version is its sequence number).
    versions: Versions,
    /// Keys with an expiry, by expiry (`expiry.rs`).
    expiring: ExpiryIndex,
    /// Whether any value has ever had an expiry here. Until one has, nothing is indexed and a write need
    /// not look at the expiry it replaces.
    any_expiry: AtomicBool,
    budget: Budget,
    /// Bytes the memory thread's compaction moved since start (`reclaim.rs`).
    compacted: Arc<AtomicU64>,
}

/// A memory engine, optionally made durable by an operation log and snapshots.
pub(crate) struct MemoryStore<M: Map> {
    shared: Arc<Shared<M>>,
    expirer: Mutex<Expirer>,
    /// Only under a cap with an eviction policy.
    evictor: Mutex<Option<Expirer>>,
    /// Gives memory back (`reclaim.rs`).
    reclaimer: Mutex<Expirer>,
}

impl<M: Map> std::fmt::Debug for MemoryStore<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("len", &self.shared.map.len()).finish_non_exhaustive()
    }
}

impl<M: Map> MemoryStore<M> {
    /// A volatile store.
    pub(crate) fn new(config: &EngineConfig) -> Self {
        let map = Arc::new(M::with_seeds(crate::map::fresh_seeds(), config.lru_cap()));
        Self::with(map, None, Budget::new(config.max_memory, config.eviction), false, config)
    }

    /// A store recovered from, and logging to, `dir`.
    pub(crate) fn durable(dir: &std::path::Path, config: &EngineConfig) -> Result<Self> {
        let budget = Budget::new(config.max_memory, config.eviction);
        let (persist, map, any_expiry) = Persistence::open::<M>(dir, config, &budget)?;
        Ok(Self::with(map, Some(Arc::new(persist)), budget, any_expiry, config))
    }

    /// The store over `map` (recovered, or empty; `budget` has counted it), with its expiry index built
    /// (a pass over the map, only when some value has an expiry) and its background threads started.
    fn with(
        map: Arc<M>,
        persist: Option<Arc<Persistence>>,
        budget: Budget,
        any_expiry: bool,
        config: &EngineConfig,
    ) -> Self {
        let mut index = std::collections::BTreeSet::new();
        if any_expiry {
            map.for_each(|key, meta, _| {
                if meta.expires_ms != 0 {
                    index.insert((meta.expires_ms, crate::key::Key::from_slice(key)));
                }
            });
        }
        budget.add(EXPIRY_ENTRY * index.len() as i64);
        let shared = Arc::new(Shared {
            map,
            persist,
            versions: Versions::new(),
            any_expiry: AtomicBool::new(!index.is_empty()),
            expiring: Mutex::new(index),
            budget,
            compacted: Arc::new(AtomicU64::new(0)),
        });
        let s = Arc::clone(&shared);
        let active = config.active_expiry;
        let expirer = Expirer::start("otkv-expire", move |now| if active { expire_due(&s, now) } else { 0 });
        let evictor = (config.max_memory.is_some() && config.eviction != Eviction::NoEviction).then(|| {
            let s = Arc::clone(&shared);
            Expirer::start_every("otkv-evict", EVICT_TICK, move |_| evict_excess(&s))
        });
        let s = Arc::clone(&shared);
        let mut reclaimer = Reclaimer::new(Arc::clone(&shared.compacted), config.compaction);
        let mut first = true;
        let reclaimer = Expirer::start_every("otkv-memory", reclaim::TICK, move |_| {
            if std::mem::take(&mut first) {
                reclaim::lowest_priority();
            }
            reclaimer.tick(&*s.map, s.budget.used(s.map.structure_bytes()));
            0
        });
        MemoryStore {
            shared,
            expirer: Mutex::new(expirer),
            evictor: Mutex::new(evictor),
            reclaimer: Mutex::new(reclaimer),
        }
    }

    /// Up to `limit` keys whose values expired by `now_ms`, each with its value's metadata, taken from
    /// the expiry index (a caller that removes them: the leader of a replica group, which replicates
    /// each removal). A key rewritten since its index entry is left out.
    pub(crate) fn take_expired(&self, now_ms: u64, limit: usize) -> Vec<(Vec<u8>, Meta)> {
        let s = &self.shared;
        let mut due = expiry::take_due(&s.expiring, &s.budget, now_ms);
        due.truncate(limit);
        let guard = s.map.pin();
        due.into_iter()
            .filter_map(|(at, key)| {
                let (meta, _) = s.map.get(&key, &guard)?;
                (meta.expires_ms == at).then(|| (key.as_slice().to_vec(), meta))
            })
            .collect()
    }

    /// Calls `f` on every stored entry, expired ones too.
    pub(crate) fn for_each_entry(&self, f: impl FnMut(&[u8], Meta, &[u8])) {
        self.shared.map.for_each(f);
    }

    /// Pins the current thread once for a batch of operations.
    pub(crate) fn view(&self) -> MemoryView<'_, M> {
        MemoryView { guard: self.shared.map.pin(), s: &self.shared }
    }

    pub(crate) fn len(&self) -> usize {
        self.shared.map.len()
    }

    pub(crate) fn memory_stats(&self) -> MemoryStats {
        let mut stats = self.shared.budget.stats(self.shared.map.structure_bytes());
        stats.allocated_bytes = crate::table::slab::mapped_bytes() + reclaim::system_allocated_bytes();
        stats.retired_bytes = crate::table::epoch::pending_bytes();
        stats.compacted_bytes = self.shared.compacted.load(Ordering::Relaxed);
        stats
    }

    /// Gives back at once what the memory thread gives back within a tick or two: seals and runs every
    /// thread's releases, compacts when the waste is worth it (unpaced), trims the system allocator
    /// (Redis's `MEMORY PURGE`).
    pub(crate) fn purge_memory(&self) {
        self.shared.map.release_retired();
        let moved = self.shared.map.compact(|| {}).unwrap_or(0);
        self.shared.compacted.fetch_add(moved, Ordering::Relaxed);
        reclaim::trim_system_allocator();
    }

    pub(crate) fn persistence(&self) -> Option<&Persistence> {
        self.shared.persist.as_deref()
    }

    /// A page of the keys starting with `prefix`, from `cursor` (`listing.rs`). It walks without a
    /// batch's guard around it (each shard pinned in turn), so it never holds back reclamation.
    pub(crate) fn list(&self, prefix: &[u8], cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        crate::listing::page(&*self.shared.map, prefix, cursor, limit)
    }

    pub(crate) fn snapshot(&self) -> Result<()> {
        self.shared.persist.as_ref().map_or(Ok(()), |p| p.snapshot_now(&*self.shared.map))
    }

    /// Clean shutdown: the background threads stopped, then a last snapshot and flush, when durable.
    pub(crate) fn close(&self) -> Result<()> {
        crate::commit::lock(&self.expirer).stop();
        if let Some(evictor) = crate::commit::lock(&self.evictor).as_mut() {
            evictor.stop();
        }
        crate::commit::lock(&self.reclaimer).stop();
        match self.shared.persist.as_ref() {
            Some(p) => p.close(&*self.shared.map),
            None => Ok(()),
        }
    }
}

/// The map with one guard held for a batch of operations.
pub(crate) struct MemoryView<'a, M: Map> {
    guard: M::Guard<'a>,
    s: &'a Shared<M>,
}

/// The live metadata of a current entry: `None` when absent or expired (the clock is read only for an
/// entry that can expire).
/// With `now`, the clock a replicated write carries (every member decides the same); without, the
/// clock read here.
#[inline]
fn live(current: Option<(Meta, &[u8])>, now: Option<u64>) -> Option<Meta> {
    current.map(|(m, _)| m).filter(|m| m.expires_ms == 0 || !m.expired_at(now.unwrap_or_else(entry::now_ms)))
}

impl<M: Map> MemoryView<'_, M> {
    /// Runs `f` on the live value and its metadata, in place (`None`: absent or expired).
    #[inline]
    pub(crate) fn get_with<R>(&self, key: &[u8], f: impl FnOnce(Meta, &[u8]) -> R) -> Option<R> {
        let (meta, value) = self.s.map.get(key, &self.guard)?;
        if meta.expires_ms != 0 && meta.expired_at(entry::now_ms()) {
            return None;
        }
        Some(f(meta, value))
    }

    /// Stores the value if `cond` holds; with a log, also logs it. Returns what it did ([`Written`]). Under a
    /// memory cap, first makes room for the entry or fails with [`EngineError::OutOfMemory`].
    #[inline]
    pub(crate) fn put(&self, key: &[u8], value: &[u8], cond: Condition, expires_ms: u64) -> Result<Written> {
        if self.s.budget.max.is_some() {
            let index = if expires_ms != 0 { EXPIRY_ENTRY } else { 0 };
            let cost = self.s.map.entry_cost(key.len(), value.len(), expires_ms != 0) as i64;
            self.make_room(cost + index)?;
        }
        if expires_ms != 0 && !self.s.any_expiry.load(Ordering::Relaxed) {
            self.s.any_expiry.store(true, Ordering::Relaxed);
        }
        let apply = |version: u64| self.store_if(key, Meta { version, expires_ms }, value, cond, None);
        match self.s.persist.as_deref() {
            None => {
                let version = self.s.versions.next();
                Ok(Written { outcome: apply(version), version, ticket: 0 })
            }
            Some(p) => {
                let op = LogOp::Put { key, value, expires_ms };
                let (outcome, seq) = p.append(op, apply, Option::is_some)?;
                Ok(Written { outcome, version: seq, ticket: seq })
            }
        }
    }

    /// A write decided elsewhere (a replicated log's entry): its version and the clock its condition is
    /// judged by come with it, so every member that applies the same entries holds the same data. Only
    /// for an engine without a log of its own (the replicated log is the log).
    pub(crate) fn put_at(
        &self,
        key: &[u8],
        value: &[u8],
        cond: Condition,
        meta: Meta,
        now: u64,
    ) -> Result<Option<PutOutcome>> {
        if self.s.persist.is_some() {
            return Err(EngineError::InvalidConfig(
                "a replicated write needs an engine without a log".into(),
            ));
        }
        if self.s.budget.max.is_some() {
            let index = if meta.expires_ms != 0 { EXPIRY_ENTRY } else { 0 };
            let cost = self.s.map.entry_cost(key.len(), value.len(), meta.expires_ms != 0) as i64;
            self.make_room(cost + index)?;
        }
        if meta.expires_ms != 0 && !self.s.any_expiry.load(Ordering::Relaxed) {
            self.s.any_expiry.store(true, Ordering::Relaxed);
        }
        Ok(self.store_if(key, meta, value, cond, Some(now)))
    }

    /// A delete decided elsewhere, its condition judged at `now` (see [`MemoryView::put_at`]).
    pub(crate) fn delete_at(&self, key: &[u8], cond: Condition, now: u64) -> Result<Option<bool>> {
        if self.s.persist.is_some() {
            return Err(EngineError::InvalidConfig(
                "a replicated write needs an engine without a log".into(),
            ));
        }
        Ok(self.remove_if(key, cond, Some(now)).0)
    }

    /// Writes the entry if `cond` holds of the live value (at `now`, or the clock), atomically with respect
    /// to every other write of the key.
    fn store_if(
        &self,
        key: &[u8],
        meta: Meta,
        value: &[u8],
        cond: Condition,
        now: Option<u64>,
    ) -> Option<PutOutcome> {
        let (outcome, changed) = self.s.map.change(key, &self.guard, |stored| {
            let current = live(stored, now);
            if !cond.holds(current) {
                return (Change::Keep, None);
            }
            let outcome = if current.is_some() { PutOutcome::Replaced } else { PutOutcome::Created };
            self.note_expiry(key, stored, meta.expires_ms);
            (Change::Put(meta, value), Some(outcome))
        });
        self.count(changed);
        outcome
    }

    /// Counts what a change did in the budget.
    fn count(&self, changed: Changed) {
        let old_cost = changed.old.map_or(0, |(_, cost)| cost as i64);
        let new_cost = changed.new.map_or(0, |cost| cost as i64);
        self.s.budget.add(new_cost - old_cost);
    }

    /// Updates the expiry index for a change of `key` from its `stored` entry to one expiring at
    /// `new_expiry` (0: none, or removed). Called from inside [`Map::change`]'s decision, so under the
    /// key's lock (the table's shard, flurry's bin): two writers of one key with different expiries
    /// update the index in the order they change the map, and the index never loses the entry of an
    /// expiry the map holds. (flurry decides an insert of an absent key outside its lock, and may decide
    /// again: such a decision only adds to the index, and an entry the map does not hold is dropped
    /// when due.)
    fn note_expiry(&self, key: &[u8], stored: Option<(Meta, &[u8])>, new_expiry: u64) {
        if self.s.any_expiry.load(Ordering::Relaxed) {
            let old = stored.map_or(0, |(m, _)| m.expires_ms);
            expiry::note(&self.s.expiring, &self.s.budget, key, old, new_expiry);
        }
    }

    /// Removes the key if `cond` holds; with a log, logs the removal if there was one. Returns whether a
    /// live value was removed (`None`: the condition failed) and the log ticket.
    pub(crate) fn delete(&self, key: &[u8], cond: Condition) -> Result<(Option<bool>, u64)> {
        // Logged when anything left the map, live or expired: a restart must not bring it back.
        let remove = |_seq| self.remove_if(key, cond, None);
        match self.s.persist.as_deref() {
            None => Ok((remove(0).0, 0)),
            Some(p) => {
                let ((outcome, _), seq) = p.append(LogOp::Delete(key), remove, |(_, removed)| *removed)?;
                Ok((outcome, seq))
            }
        }
    }

    /// `(outcome, anything removed)`.
    fn remove_if(&self, key: &[u8], cond: Condition, now: Option<u64>) -> (Option<bool>, bool) {
        let (outcome, changed) = self.s.map.change(key, &self.guard, |stored| {
            let present = stored.is_some();
            let current = live(stored, now);
            match (cond.holds(current), present) {
                (true, true) => {
                    self.note_expiry(key, stored, 0);
                    (Change::Remove, Some(current.is_some()))
                }
                (true, false) => (Change::Keep, Some(false)),
                (false, _) => (Change::Keep, None),
            }
        });
        self.count(changed);
        (outcome, changed.old.is_some())
    }

    /// Removes `key` if `still` holds of its stored entry, logging the removal like a delete; returns the
    /// removed entry's expiry (0: none), or `None` when nothing was removed. Counts it.
    fn remove_logged(&self, key: &[u8], still: impl Fn(Meta) -> bool) -> Result<Option<u64>> {
        // Most candidates are still current; check before taking the log and the map's locks.
        if !self.s.map.get(key, &self.guard).is_some_and(|(m, _)| still(m)) {
            return Ok(None);
        }
        let remove = |_seq| {
            let ((), changed) = self.s.map.change(key, &self.guard, |stored| match stored {
                Some((m, _)) if still(m) => {
                    self.note_expiry(key, stored, 0);
                    (Change::Remove, ())
                }
                _ => (Change::Keep, ()),
            });
            self.count(changed);
            changed.old.map(|(m, _)| m.expires_ms)
        };
        match self.s.persist.as_deref() {
            None => Ok(remove(0)),
            Some(p) => Ok(p.append(LogOp::Delete(key), remove, Option::is_some)?.0),
        }
    }

    /// Under a cap: evicts (as the policy says) until an entry costing `cost` fits, or fails with
    /// [`EngineError::OutOfMemory`] saying why it could not.
    fn make_room(&self, cost: i64) -> Result<()> {
        let budget = &self.s.budget;
        while let Some(short) = budget.shortfall(self.s.map.structure_bytes(), cost) {
            if budget.policy == Eviction::NoEviction || !self.evict_one(short)? {
                let why = match budget.policy {
                    Eviction::NoEviction => "the eviction policy is noeviction",
                    Eviction::AllKeysLru => "no key could be evicted (allkeys-lru)",
                    Eviction::VolatileTtl => "no key with an expiry is left to evict (volatile-ttl)",
                };
                let (used, max) = (budget.used(self.s.map.structure_bytes()), budget.max.unwrap_or(0));
                return Err(EngineError::OutOfMemory { used, max, why });
            }
        }
        Ok(())
    }

    /// Evicts one key as the policy says; `false` when there is none to evict. `excess` (bytes) tells the
    /// map how many victims may follow.
    fn evict_one(&self, excess: u64) -> Result<bool> {
        let budget = &self.s.budget;
        loop {
            let removed = match budget.policy {
                Eviction::NoEviction => return Ok(false),
                Eviction::VolatileTtl => {
                    let Some((at, key)) = expiry::take_nearest(&self.s.expiring, budget) else {
                        return Ok(false);
                    };
                    // Its index entry is taken already: remove it only if it still expires then.
                    self.remove_logged(&key, |m| m.expires_ms == at)?
                }
                Eviction::AllKeysLru => {
                    let len = self.s.map.len().max(1);
                    let per_key = (budget.used(0) / len as u64).max(1);
                    let reserve = budget.max.unwrap_or(0) / 16;
                    let hint = ((excess + reserve) / per_key) as usize + 16;
                    let Some(key) = self.s.map.lru_victim(&self.guard, hint) else { return Ok(false) };
                    self.remove_logged(&key, |_| true)?
                }
            };
            if removed.is_some() {
                budget.count_eviction();
                return Ok(true);
            }
            // Gone or changed since it was chosen: take the next.
        }
    }
}

/// Removals a background thread makes under one guard. Each guard holds back the release of everything
/// unlinked while it is held (and while its thread waits for a core), so a background pass pins afresh
/// every few removals: with 1,000 under one guard, 4 KB values kept 50 MB of released blocks waiting.
const PER_GUARD: usize = 32;

/// One batch of the expirer: removes the keys the index says are due at `now` whose stored expiry is
/// still the indexed one, logging each removal. Returns how many index entries it took.
fn expire_due<M: Map>(s: &Shared<M>, now: u64) -> usize {
    let due = expiry::take_due(&s.expiring, &s.budget, now);
    for run in due.chunks(PER_GUARD) {
        let view = MemoryView { guard: s.map.pin(), s };
        for (at, key) in run {
            if let Err(e) = view.remove_logged(key, |m| m.expires_ms == *at) {
                tracing::warn!(error = %e, "expiring a key failed; it stays unreadable and is retried on restart");
                return due.len().min(expiry::BATCH - 1);
            }
        }
    }
    due.len()
}

/// One batch of the evictor: while the data is over the high-water mark, evicts down toward the
/// low-water mark, up to [`expiry::BATCH`] keys, [`PER_GUARD`] under each guard. Returns how many keys it
/// evicted.
fn evict_excess<M: Map>(s: &Shared<M>) -> usize {
    let mut evicted = 0;
    while evicted < expiry::BATCH {
        let view = MemoryView { guard: s.map.pin(), s };
        for _ in 0..PER_GUARD {
            let Some(excess) = s.budget.excess(s.map.structure_bytes()) else { return evicted };
            match view.evict_one(excess) {
                Ok(true) => evicted += 1,
                Ok(false) => return evicted,
                Err(e) => {
                    tracing::warn!(error = %e, "evicting a key failed");
                    return evicted;
                }
            }
        }
    }
    evicted
}
