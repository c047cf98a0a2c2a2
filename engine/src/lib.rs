//! # otkv-engine: the storage engine of OTKV
//!
//! One API, [`Engine`], over keys and values that are byte strings, with three backends:
//!
//! - **memory** ([`EngineKind::Memory`], the default): the engine's own hash table (`table/`): one
//!   allocation per entry, one word per slot, reads without locks under an epoch guard, writers locking
//!   one shard. Volatile, or durable by an operation log and snapshots.
//! - **flurry** ([`EngineKind::Flurry`]): the same memory engine (`memory.rs`) on a lock-free `flurry` map,
//!   the alternative the table is measured against. Same files: a data directory opens with either.
//! - **sled** ([`EngineKind::Sled`]): a `sled` 0.34 tree in a data directory. Reopening the directory gives
//!   the data back.
//!
//! A tour, in the order a request meets the code:
//!
//! 1. [`EngineConfig`] names the backend, the data directory and the [`Durability`]; [`Engine::open`] checks
//!    that they fit together and opens the backend (`config.rs`).
//! 2. Each call ([`Engine::get`], [`Engine::put`], [`Engine::delete`], [`Engine::list`]) goes through a
//!    [`Batch`]: a short-lived view of the backend. For the memory backends the batch holds one epoch guard,
//!    so a caller with several operations at hand (a pipelined batch of HTTP requests) pays for pinning once,
//!    via [`Engine::batch`]. The memory engines' meaning (versions, conditions, expiry, the cap and
//!    eviction) is `memory.rs`, written once over the `Map` seam (`map/mod.rs`) that the table
//!    (`map/table.rs`) and flurry (`map/flurry.rs`) implement; sled's is `sled_tree.rs`. Listings go a page
//!    at a time from a [`Cursor`] ([`listing`]).
//! 3. Durability (`commit.rs`, `persist.rs`, `logfile.rs`, `snapshot.rs`): every write gets a *ticket*.
//!    In `sync` mode a write is acknowledged once its ticket is durable; a flusher thread makes pending
//!    writes durable together (group commit). [`Engine::put`] waits by blocking its thread; a coroutine
//!    runtime uses [`Batch::sync_ticket`] and [`Engine::on_durable`] to park instead. The memory backend is
//!    made durable by an operation log plus snapshots; sled by flushing its tree.
//! 4. Memory: the estimate the cap is checked against (`budget.rs`), the expiry index and its thread
//!    (`expiry.rs`), and the memory thread that gives freed memory back (`reclaim.rs`).
//! 5. Errors are one enum, [`EngineError`]; an I/O error is returned, never a panic (`error.rs`).
//!
//! The engine knows nothing about HTTP, nodes or routing: it is a library that stores bytes.

mod budget;
mod commit;
mod config;
mod entry;
mod error;
mod expiry;
mod key;
pub mod listing;
mod logfile;
mod map;
mod mapped;
mod memory;
mod persist;
mod reclaim;
mod sled_tree;
mod snapshot;
mod table;

use std::cell::Cell;

pub use budget::MemoryStats;
pub use bytes::Bytes;
pub use commit::{DurableCallback, WriteRefusal};
pub use config::{Durability, EngineConfig, EngineKind, Eviction, DEFAULT_COMMIT_DELAY};
pub use entry::{now_ms, Condition, Meta, PutOutcome, MAX_KEY_BYTES, MAX_VALUE_BYTES};
pub use error::{EngineError, Result};
pub use listing::{Cursor, Page};

use entry::Written;
use map::flurry::FlurryMap;
use map::table::TableMap;
use memory::{MemoryStore, MemoryView};
use sled_tree::SledStore;

/// A key-value store over one backend. `Engine` is `Send + Sync`: share it behind an `Arc`.
#[derive(Debug)]
pub struct Engine {
    store: Store,
    config: EngineConfig,
    /// `config.durability == Durability::Sync`, decided once (every batch asks).
    sync: bool,
    /// Entries visited by listings ([`Engine::listing_visits`]).
    listing_visits: std::sync::atomic::AtomicU64,
}

// One `Engine` exists per process, so its size is irrelevant; boxing the map would add a pointer chase to
// every memory-backend operation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Store {
    Memory(MemoryStore<TableMap>),
    Flurry(MemoryStore<FlurryMap>),
    Sled(SledStore),
}

/// Opens a memory engine on map `M`: volatile, or recovered from and logging to its data directory.
fn open_memory<M: map::Map>(config: &EngineConfig) -> Result<MemoryStore<M>> {
    match (config.durability, config.data_dir.as_deref()) {
        (Durability::None, _) => Ok(MemoryStore::new(config)),
        (_, Some(dir)) => MemoryStore::durable(dir, config),
        (d, None) => Err(EngineError::InvalidConfig(format!(
            "durability `{d}` needs a data directory for the operation log"
        ))),
    }
}

impl Engine {
    /// Opens the engine `config` describes.
    ///
    /// Fails with [`EngineError::InvalidConfig`] when the parts do not fit together (sled without a data
    /// directory; durability the memory backend cannot give yet), or with the backend's error.
    pub fn open(config: EngineConfig) -> Result<Engine> {
        if config.kind == EngineKind::Sled && config.max_memory.is_some() {
            return Err(EngineError::InvalidConfig(
                "a memory cap applies to the memory engine; sled keeps its data on disk and bounds its own \
                 cache"
                    .into(),
            ));
        }
        let store = match config.kind {
            EngineKind::Memory => Store::Memory(open_memory(&config)?),
            EngineKind::Flurry => Store::Flurry(open_memory(&config)?),
            EngineKind::Sled => {
                let dir = config.data_dir.as_deref().ok_or_else(|| {
                    EngineError::InvalidConfig("the sled engine needs a data directory".into())
                })?;
                Store::Sled(SledStore::open(dir, &config)?)
            }
        };
        let sync = config.durability == Durability::Sync;
        Ok(Engine { store, config, sync, listing_visits: std::sync::atomic::AtomicU64::new(0) })
    }

    /// The configuration this engine was opened with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Runs `f` with a [`Batch`] that several operations can share.
    ///
    /// For the memory backend the batch pins one epoch guard for all of them. `f` must not block or yield
    /// (no I/O, no coroutine switch): a guard must be released on the thread that took it.
    pub fn batch<R>(&self, f: impl FnOnce(&Batch<'_>) -> R) -> R {
        let sync = self.sync;
        let view = match &self.store {
            Store::Memory(m) => View::Memory(m.view()),
            Store::Flurry(m) => View::Flurry(m.view()),
            Store::Sled(s) => View::Sled(s),
        };
        let batch = Batch { view, ticket: Cell::new(0), sync };
        f(&batch)
    }

    /// Calls `callback` once the write with `ticket` (from [`Batch::sync_ticket`]) is durable, or with the
    /// reason it never will be. At once if it already is, or if this engine does not wait for durability.
    pub fn on_durable(&self, ticket: u64, callback: DurableCallback) {
        match self.commit() {
            Some(c) => c.on_durable(ticket, callback),
            None => callback(Ok(())),
        }
    }

    /// Blocks the calling thread until `ticket` is durable. Coroutines should use [`Engine::on_durable`].
    pub fn wait_durable(&self, ticket: u64) -> Result<()> {
        match self.commit() {
            Some(c) => c.wait(ticket).map_err(EngineError::Unavailable),
            None => Ok(()),
        }
    }

    /// Why this engine refuses every write, if it does: a sync or log write failed (a full disk, an I/O
    /// error). Final until the process restarts; reads go on.
    pub fn write_refusal(&self) -> Option<WriteRefusal> {
        self.commit().and_then(|c| c.failure().cloned())
    }

    fn commit(&self) -> Option<&commit::GroupCommit> {
        match &self.store {
            Store::Memory(m) => m.persistence().map(persist::Persistence::commit),
            Store::Flurry(m) => m.persistence().map(persist::Persistence::commit),
            Store::Sled(s) => s.commit(),
        }
    }

    /// Runs a write through a batch, then, in `sync` mode, waits until it is durable.
    #[inline]
    fn write<R>(&self, f: impl FnOnce(&Batch<'_>) -> Result<R>) -> Result<R> {
        let (result, ticket) = self.batch(|b| (f(b), b.sync_ticket()));
        let result = result?;
        if let Some(t) = ticket {
            self.wait_durable(t)?;
        }
        Ok(result)
    }

    /// Writes a snapshot now (memory engine with a log); otherwise the same as [`Engine::flush`].
    pub fn snapshot(&self) -> Result<()> {
        match &self.store {
            Store::Memory(m) => m.snapshot(),
            Store::Flurry(m) => m.snapshot(),
            Store::Sled(s) => s.flush(),
        }
    }

    /// Clean shutdown: a last snapshot (memory engine with a log), a last flush, and the flusher stopped.
    /// Dropping the engine does the same, logging instead of returning an error.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    /// [`Engine::close`] through a shared reference (an engine behind an `Arc`). Writes after it fail with
    /// [`EngineError::Unavailable`]; reads still work. Calling it again does nothing.
    pub fn shutdown(&self) -> Result<()> {
        match &self.store {
            Store::Memory(m) => m.close(),
            Store::Flurry(m) => m.close(),
            Store::Sled(s) => s.close(),
        }
    }

    /// The value stored under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.batch(|b| b.get(key))
    }

    /// Stores `value` under `key`, saying whether the key was new. In `sync` mode, returns once durable.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<PutOutcome> {
        self.write(|b| b.put(key, value))
    }

    /// Removes `key`, saying whether it existed. In `sync` mode, returns once durable.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.write(|b| b.delete(key))
    }

    /// The live value under `key` with its version and expiry.
    pub fn get_entry(&self, key: &[u8]) -> Result<Option<(Meta, Bytes)>> {
        self.batch(|b| b.get_entry_with(key, |m, v| (m, Bytes::copy_from_slice(v))))
    }

    /// See [`Batch::put_if`]. In `sync` mode, returns once durable.
    pub fn put_if(
        &self,
        key: &[u8],
        value: &[u8],
        cond: Condition,
        expires_ms: u64,
    ) -> Result<Option<(PutOutcome, u64)>> {
        self.write(|b| b.put_if(key, value, cond, expires_ms))
    }

    /// See [`Batch::delete_if`]. In `sync` mode, returns once durable.
    pub fn delete_if(&self, key: &[u8], cond: Condition) -> Result<Option<bool>> {
        self.write(|b| b.delete_if(key, cond))
    }

    /// A page of up to `limit` live keys that start with `prefix`, from `cursor` (the start when
    /// `None`), and the cursor of the next page ([`Page::next`]; `None` once the listing is over).
    ///
    /// A key that lives throughout a listing appears in exactly one of its pages; no key appears twice.
    /// The memory engines list in their own order (by the key's hash, then the key), sled in byte
    /// order. A page costs about what it returns, never the whole store: on the memory engine, `limit`
    /// keys plus one shard's; with a `prefix`, a page stops after visiting about
    /// [`listing::VISITS_PER_KEY`] entries per key asked for, so it may come back short, or empty, with a
    /// cursor (flurry walks its whole map per page). See `listing.rs`.
    pub fn list(&self, prefix: &[u8], cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        let page = match &self.store {
            Store::Memory(m) => m.list(prefix, cursor, limit),
            Store::Flurry(m) => m.list(prefix, cursor, limit),
            Store::Sled(s) => s.list(prefix, cursor, limit),
        }?;
        self.listing_visits.fetch_add(page.visited as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(page)
    }

    /// Every live key that starts with `prefix`, page by page ([`Engine::list`]): for tests and tools
    /// on small stores.
    pub fn keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let (mut keys, mut cursor) = (Vec::new(), None);
        loop {
            let page = self.list(prefix, cursor.as_ref(), 10_000)?;
            keys.extend(page.keys);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// Entries the listings since start visited (what they cost the store, in entries).
    pub fn listing_visits(&self) -> u64 {
        self.listing_visits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The number of keys stored.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Memory(m) => m.len(),
            Store::Flurry(m) => m.len(),
            Store::Sled(s) => s.len(),
        }
    }

    /// The memory engine's estimated memory use, cap and evictions (`None` for sled, whose data is on
    /// disk).
    pub fn memory_stats(&self) -> Option<MemoryStats> {
        match &self.store {
            Store::Memory(m) => Some(m.memory_stats()),
            Store::Flurry(m) => Some(m.memory_stats()),
            Store::Sled(_) => None,
        }
    }

    /// Gives memory back now rather than within the memory thread's next tick or two (as Redis's
    /// `MEMORY PURGE`): runs every release no reader can still see, compacts mostly empty memory when the
    /// waste is over its thresholds, and returns the system allocator's free pages. Nothing for sled.
    pub fn purge_memory(&self) {
        match &self.store {
            Store::Memory(m) => m.purge_memory(),
            Store::Flurry(m) => m.purge_memory(),
            Store::Sled(_) => {}
        }
    }

    /// Up to `limit` keys whose values expired by `now_ms`, with their metadata, for a caller that removes
    /// them itself: a replica group's leader, which replicates each removal (with
    /// [`EngineConfig::active_expiry`] off, nothing else removes them). Each is returned once. Empty for
    /// sled.
    pub fn take_expired(&self, now_ms: u64, limit: usize) -> Vec<(Vec<u8>, Meta)> {
        match &self.store {
            Store::Memory(m) => m.take_expired(now_ms, limit),
            Store::Flurry(m) => m.take_expired(now_ms, limit),
            Store::Sled(_) => Vec::new(),
        }
    }

    /// Calls `f` on every stored entry, expired ones not yet removed too, with its metadata: a replica's
    /// snapshot holds exactly what its members hold. Memory engines only (nothing for sled).
    pub fn for_each_entry(&self, f: impl FnMut(&[u8], Meta, &[u8])) {
        match &self.store {
            Store::Memory(m) => m.for_each_entry(f),
            Store::Flurry(m) => m.for_each_entry(f),
            Store::Sled(_) => {}
        }
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes every earlier write durable. A no-op for the volatile memory backend.
    pub fn flush(&self) -> Result<()> {
        match &self.store {
            Store::Memory(m) => m.persistence().map_or(Ok(()), persist::Persistence::flush),
            Store::Flurry(m) => m.persistence().map_or(Ok(()), persist::Persistence::flush),
            Store::Sled(s) => s.flush(),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // A clean shutdown leaves everything on disk whatever the durability mode; an error here has nobody
        // to return to, so it is logged.
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "closing the engine failed");
        }
    }
}

/// A view of the engine shared by several operations; see [`Engine::batch`].
pub struct Batch<'e> {
    view: View<'e>,
    /// The highest ticket of this batch's writes.
    ticket: Cell<u64>,
    sync: bool,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").finish_non_exhaustive()
    }
}

enum View<'e> {
    Memory(MemoryView<'e, TableMap>),
    Flurry(MemoryView<'e, FlurryMap>),
    Sled(&'e SledStore),
}

impl Batch<'_> {
    /// See [`Engine::get`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.get_with(key, Bytes::copy_from_slice)
    }

    /// Runs `f` on the value stored under `key`, in place, without copying it out first: the way to send a
    /// value somewhere (a response buffer) with a single copy.
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        self.get_entry_with(key, |_, v| f(v))
    }

    /// [`Batch::get_with`], with the value's version and expiry. An expired value is absent.
    pub fn get_entry_with<R>(&self, key: &[u8], f: impl FnOnce(Meta, &[u8]) -> R) -> Result<Option<R>> {
        match &self.view {
            View::Memory(m) => Ok(m.get_with(key, f)),
            View::Flurry(m) => Ok(m.get_with(key, f)),
            View::Sled(s) => s.get_with(key, f),
        }
    }

    /// See [`Engine::put`]: an unconditional write of a value that never expires.
    #[inline]
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<PutOutcome> {
        let written = self.put_if(key, value, Condition::Always, 0)?;
        // An unconditional write always applies.
        Ok(written.map_or(PutOutcome::Replaced, |(outcome, _)| outcome))
    }

    /// Stores `value` under `key` if `cond` holds of its live value, atomically against every other write
    /// of the key on any thread, expiring at `expires_ms` (ms since the Unix epoch; 0: never; a write
    /// without an expiry clears an old one). Returns what it did and the new version, or `None` when the
    /// condition failed and nothing was written.
    #[inline]
    pub fn put_if(
        &self,
        key: &[u8],
        value: &[u8],
        cond: Condition,
        expires_ms: u64,
    ) -> Result<Option<(PutOutcome, u64)>> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(EngineError::ValueTooLarge { len: value.len(), max: MAX_VALUE_BYTES });
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(EngineError::KeyTooLarge { len: key.len(), max: MAX_KEY_BYTES });
        }
        let Written { outcome, version, ticket } = match &self.view {
            View::Memory(m) => m.put(key, value, cond, expires_ms)?,
            View::Flurry(m) => m.put(key, value, cond, expires_ms)?,
            View::Sled(s) => s.put(key, value, cond, expires_ms)?,
        };
        self.ticket.set(self.ticket.get().max(ticket));
        Ok(outcome.map(|o| (o, version)))
    }

    /// In `sync` mode, the ticket to wait for before acknowledging this batch's writes (see
    /// [`Engine::on_durable`]); `None` when there is nothing to wait for.
    pub fn sync_ticket(&self) -> Option<u64> {
        let t = self.ticket.get();
        (self.sync && t > 0).then_some(t)
    }

    /// See [`Engine::delete`].
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        Ok(self.delete_if(key, Condition::Always)?.unwrap_or(false))
    }

    /// A write whose version and clock were decided elsewhere: an entry of a replicated log, applied on
    /// every member of a group. `meta` is stored as given; `cond` is judged as of `now_ms` (the clock the
    /// entry carries), so every member decides it the same way whenever it applies it. Returns what it
    /// did, or `None` when the condition failed.
    ///
    /// Only for the memory engines opened without a log (durability `none`): the replicated log is the
    /// log. Otherwise [`EngineError::InvalidConfig`].
    pub fn put_at(
        &self,
        key: &[u8],
        value: &[u8],
        cond: Condition,
        meta: Meta,
        now_ms: u64,
    ) -> Result<Option<PutOutcome>> {
        match &self.view {
            View::Memory(m) => m.put_at(key, value, cond, meta, now_ms),
            View::Flurry(m) => m.put_at(key, value, cond, meta, now_ms),
            View::Sled(_) => Err(EngineError::InvalidConfig("replicated writes need a memory engine".into())),
        }
    }

    /// The delete of [`Batch::put_at`]: whether a live value was removed, or `None` when `cond` failed.
    pub fn delete_at(&self, key: &[u8], cond: Condition, now_ms: u64) -> Result<Option<bool>> {
        match &self.view {
            View::Memory(m) => m.delete_at(key, cond, now_ms),
            View::Flurry(m) => m.delete_at(key, cond, now_ms),
            View::Sled(_) => Err(EngineError::InvalidConfig("replicated writes need a memory engine".into())),
        }
    }

    /// Removes `key` if `cond` holds of its live value, atomically against every other write of the key.
    /// Returns whether a live value was removed, or `None` when the condition failed.
    pub fn delete_if(&self, key: &[u8], cond: Condition) -> Result<Option<bool>> {
        let (existed, ticket) = match &self.view {
            View::Memory(m) => m.delete(key, cond)?,
            View::Flurry(m) => m.delete(key, cond)?,
            View::Sled(s) => s.delete(key, cond)?,
        };
        self.ticket.set(self.ticket.get().max(ticket));
        Ok(existed)
    }
}
