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

use std::cell::Cell;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use smallvec::SmallVec;

use crate::entry::{self, Condition, Meta};
use crate::expiry::{self, Expirer, ExpiryIndex};
use crate::logfile::LogOp;
use crate::persist::Persistence;
use crate::{EngineConfig, PutOutcome, Result};

/// A key, inline up to 24 bytes. Hashes, compares and borrows as `[u8]`, so lookups take `&[u8]`.
pub(crate) type Key = SmallVec<[u8; 24]>;
pub(crate) type Map = flurry::HashMap<Key, Box<[u8]>, ahash::RandomState>;

/// The in-memory backend, optionally made durable by an operation log and snapshots.
pub(crate) struct MemoryStore {
    map: Arc<Map>,
    persist: Option<Arc<Persistence>>,
    /// Versions for a store without a log (with one, a write's version is its sequence number).
    next_version: AtomicU64,
    /// Keys with an expiry, by expiry (`expiry.rs`).
    expiring: Arc<ExpiryIndex>,
    /// Whether any value has ever had an expiry here. Until one has, a write need not read the value it
    /// replaces (to tell an expired one from a live one): that read is a cache miss per write.
    any_expiry: AtomicBool,
    expirer: std::sync::Mutex<Expirer>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("len", &self.map.len()).finish()
    }
}

impl MemoryStore {
    /// A volatile store.
    pub(crate) fn new() -> Self {
        Self::with(Arc::new(Map::with_hasher(ahash::RandomState::new())), None)
    }

    /// A store recovered from, and logging to, `dir`.
    pub(crate) fn durable(dir: &std::path::Path, config: &EngineConfig) -> Result<Self> {
        let map = Arc::new(Map::with_hasher(ahash::RandomState::new()));
        let persist = Persistence::open(dir, config, &map)?;
        Ok(Self::with(map, Some(Arc::new(persist))))
    }

    /// The store over `map` (recovered, or empty), with its expiry index built and its expirer started.
    fn with(map: Arc<Map>, persist: Option<Arc<Persistence>>) -> Self {
        let expiring: Arc<ExpiryIndex> = Arc::default();
        let any_expiry = {
            let mut idx = crate::commit::lock(&expiring);
            for (key, stored) in map.pin().iter() {
                if let Some((meta, _)) = entry::split(stored).filter(|(m, _)| m.expires_ms != 0) {
                    idx.insert((meta.expires_ms, key.clone()));
                }
            }
            AtomicBool::new(!idx.is_empty())
        };
        let (m, p, e) = (Arc::clone(&map), persist.clone(), Arc::clone(&expiring));
        let expirer = Expirer::start("otkv-expire", move |now| expire_due(&m, p.as_deref(), &e, now));
        MemoryStore {
            map,
            persist,
            next_version: AtomicU64::new(1),
            expiring,
            any_expiry,
            expirer: std::sync::Mutex::new(expirer),
        }
    }

    /// Pins the current thread once for a batch of operations.
    pub(crate) fn view(&self) -> MemoryView<'_> {
        MemoryView {
            map: self.map.pin(),
            persist: self.persist.as_deref(),
            next_version: &self.next_version,
            expiring: &self.expiring,
            any_expiry: &self.any_expiry,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn persistence(&self) -> Option<&Persistence> {
        self.persist.as_deref()
    }

    pub(crate) fn snapshot(&self) -> Result<()> {
        self.persist.as_ref().map_or(Ok(()), |p| p.snapshot_now(&self.map))
    }

    /// Clean shutdown: the expirer stopped, then a last snapshot and flush, when durable.
    pub(crate) fn close(&self) -> Result<()> {
        crate::commit::lock(&self.expirer).stop();
        match self.persist.as_ref() {
            Some(p) => p.close(&self.map),
            None => Ok(()),
        }
    }
}

/// The memory map with one epoch guard held for a batch of operations.
pub(crate) struct MemoryView<'a> {
    map: flurry::HashMapRef<'a, Key, Box<[u8]>, ahash::RandomState>,
    persist: Option<&'a Persistence>,
    next_version: &'a AtomicU64,
    expiring: &'a ExpiryIndex,
    any_expiry: &'a AtomicBool,
}

impl MemoryView<'_> {
    /// Runs `f` on the live value and its metadata, in place (`None`: absent or expired).
    pub(crate) fn get_with<R>(&self, key: &[u8], f: impl FnOnce(Meta, &[u8]) -> R) -> Option<R> {
        let (meta, value) = entry::live_now(self.map.get(key)?)?;
        Some(f(meta, value))
    }

    /// Stores the value if `cond` holds; with a log, also logs it. Returns the outcome (`None`: the
    /// condition failed, nothing was written), the new version, and the log ticket (0: none).
    pub(crate) fn put(
        &self,
        key: &[u8],
        value: &[u8],
        cond: Condition,
        expires_ms: u64,
    ) -> Result<(Option<PutOutcome>, u64, u64)> {
        if expires_ms != 0 && !self.any_expiry.load(Ordering::Relaxed) {
            self.any_expiry.store(true, Ordering::Relaxed);
        }
        let apply = |version: u64| {
            let stored = entry::encode(Meta { version, expires_ms }, value);
            self.store_if(key, stored, cond, expires_ms)
        };
        match self.persist {
            None => {
                let version = self.next_version.fetch_add(1, Ordering::Relaxed);
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
        if cond == Condition::Always {
            let old = self.map.insert(Key::from_slice(key), stored);
            if !self.any_expiry.load(Ordering::Relaxed) {
                // Nothing here has ever expired: whatever was there was live (and is not indexed).
                return Some(if old.is_some() { PutOutcome::Replaced } else { PutOutcome::Created });
            }
            let old = old.and_then(|o| entry::split(o));
            let old_expiry = old.map_or(0, |(m, _)| m.expires_ms);
            expiry::note(self.expiring, key, old_expiry, expires_ms);
            let live = old.is_some() && (old_expiry == 0 || old_expiry > entry::now_ms());
            return Some(if live { PutOutcome::Replaced } else { PutOutcome::Created });
        }
        let mut stored = Some(stored);
        loop {
            let (present, outcome, replaced) = (Cell::new(false), Cell::new(None), Cell::new(0));
            self.map.compute_if_present(key, |_, old| {
                present.set(true);
                let current = entry::live_now(old).map(|(m, _)| m);
                if cond.holds(current) {
                    replaced.set(expires_of(old));
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
                    expiry::note(self.expiring, key, replaced.get(), expires_ms);
                }
                return outcome.get();
            }
            if !cond.holds(None) {
                return None;
            }
            match self.map.try_insert(Key::from_slice(key), stored.take()?) {
                Ok(_) => {
                    expiry::note(self.expiring, key, 0, expires_ms);
                    return Some(PutOutcome::Created);
                }
                // Another writer created the key in between: decide again against its value.
                Err(e) => stored = Some(e.not_inserted),
            }
        }
    }

    /// Removes the key if `cond` holds; with a log, logs the removal if there was one. Returns whether a
    /// live value was removed (`None`: the condition failed) and the log ticket.
    pub(crate) fn delete(&self, key: &[u8], cond: Condition) -> Result<(Option<bool>, u64)> {
        match self.persist {
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
        if cond == Condition::Always {
            return match self.map.remove(key) {
                // Nothing here has ever expired: it was live, and is not indexed.
                Some(_) if !self.any_expiry.load(Ordering::Relaxed) => (Some(true), true),
                Some(old) => {
                    expiry::note(self.expiring, key, expires_of(old), 0);
                    (Some(entry::live_now(old).is_some()), true)
                }
                None => (Some(false), false),
            };
        }
        let (present, removed, old_expiry) = (Cell::new(false), Cell::new(None), Cell::new(0));
        self.map.compute_if_present(key, |_, old| {
            present.set(true);
            let current = entry::live_now(old).map(|(m, _)| m);
            if cond.holds(current) {
                removed.set(Some(current.is_some()));
                old_expiry.set(expires_of(old));
                None
            } else {
                Some(old.clone())
            }
        });
        match (present.get(), removed.get()) {
            (true, Some(live)) => {
                expiry::note(self.expiring, key, old_expiry.get(), 0);
                (Some(live), true)
            }
            (true, None) => (None, false),
            (false, _) if cond.holds(None) => (Some(false), false),
            (false, _) => (None, false),
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
fn expire_due(map: &Map, persist: Option<&Persistence>, index: &ExpiryIndex, now: u64) -> usize {
    let due = expiry::take_due(index, now);
    let map = map.pin();
    for (at, key) in &due {
        // Most entries are still current; check before locking the bin (a stale one needs no removal).
        if map.get(key.as_slice()).map(|v| expires_of(v)) != Some(*at) {
            continue;
        }
        let remove = |_seq| {
            let removed = Cell::new(false);
            map.compute_if_present(key.as_slice(), |_, old| {
                if expires_of(old) == *at {
                    removed.set(true);
                    None
                } else {
                    Some(old.clone())
                }
            });
            removed.get()
        };
        let result = match persist {
            None => Ok((remove(0), 0)),
            Some(p) => p.append(LogOp::Delete(key), remove, |removed| *removed),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "expiring a key failed; it stays unreadable and is retried on restart");
            return due.len().min(expiry::BATCH - 1);
        }
    }
    due.len()
}
