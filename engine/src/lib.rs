//! # otkv-engine: the storage engine of OTKV
//!
//! One API, [`Engine`], over keys and values that are byte strings, with two backends:
//!
//! - **memory** ([`EngineKind::Memory`]): a lock-free `flurry` hash map hashed with `ahash`. Reads never
//!   block; writers lock one bin. Volatile for now.
//! - **sled** ([`EngineKind::Sled`]): a `sled` 0.34 tree in a data directory. Reopening the directory gives
//!   the data back.
//!
//! A tour, in the order a request meets the code:
//!
//! 1. [`EngineConfig`] names the backend, the data directory and the [`Durability`]; [`Engine::open`] checks
//!    that they fit together and opens the backend (`config.rs`).
//! 2. Each call ([`Engine::get`], [`Engine::put`], [`Engine::delete`], [`Engine::scan_prefix`]) goes through a
//!    [`Batch`]: a short-lived view of the backend. For the memory backend the batch holds one epoch guard, so
//!    a caller with several operations at hand (a pipelined batch of HTTP requests) pays for pinning once, via
//!    [`Engine::batch`] (`memory.rs`, `sled_tree.rs`).
//! 3. Errors are one enum, [`EngineError`]; an I/O error is returned, never a panic (`error.rs`).
//!
//! The engine knows nothing about HTTP, nodes or routing: it is a library that stores bytes.

mod config;
mod error;
mod memory;
mod sled_tree;

pub use bytes::Bytes;
pub use config::{Durability, EngineConfig, EngineKind};
pub use error::{EngineError, Result};

use memory::{MemoryStore, MemoryView};
use sled_tree::SledStore;

/// The largest value the engine accepts, whatever the caller's own limit: 256 MiB.
///
/// The HTTP adapter enforces a much smaller, configurable limit; this one only keeps a bug or a misconfigured
/// caller from asking a backend to store something absurd.
pub const MAX_VALUE_BYTES: usize = 256 << 20;

/// What a [`Engine::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The key was absent and now holds the value.
    Created,
    /// The key held a value, which the new one replaced.
    Replaced,
}

/// A key-value store over one backend. `Engine` is `Send + Sync`: share it behind an `Arc`.
#[derive(Debug)]
pub struct Engine {
    store: Store,
    config: EngineConfig,
}

// One `Engine` exists per process, so its size is irrelevant; boxing the map would add a pointer chase to
// every memory-backend operation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Store {
    Memory(MemoryStore),
    Sled(SledStore),
}

impl Engine {
    /// Opens the engine `config` describes.
    ///
    /// Fails with [`EngineError::InvalidConfig`] when the parts do not fit together (sled without a data
    /// directory; durability the memory backend cannot give yet), or with the backend's error.
    pub fn open(config: EngineConfig) -> Result<Engine> {
        let store = match config.kind {
            EngineKind::Memory => {
                if config.durability != Durability::None {
                    return Err(EngineError::InvalidConfig(format!(
                        "the memory engine supports only durability `none` (got `{}`); use the sled engine \
                         for durability",
                        config.durability
                    )));
                }
                Store::Memory(MemoryStore::new())
            }
            EngineKind::Sled => {
                let dir = config.data_dir.as_deref().ok_or_else(|| {
                    EngineError::InvalidConfig("the sled engine needs a data directory".into())
                })?;
                Store::Sled(SledStore::open(dir, &config)?)
            }
        };
        Ok(Engine { store, config })
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
        let batch = match &self.store {
            Store::Memory(m) => Batch { view: View::Memory(m.view()) },
            Store::Sled(s) => Batch { view: View::Sled(s) },
        };
        f(&batch)
    }

    /// The value stored under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.batch(|b| b.get(key))
    }

    /// Stores `value` under `key`, saying whether the key was new.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<PutOutcome> {
        self.batch(|b| b.put(key, value))
    }

    /// Removes `key`, saying whether it existed.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.batch(|b| b.delete(key))
    }

    /// Up to `limit` keys that start with `prefix`, in lexicographic byte order.
    ///
    /// On the memory backend this visits every key (a hash map has no order): O(n log limit).
    pub fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<Vec<u8>>> {
        self.batch(|b| b.scan_prefix(prefix, limit))
    }

    /// The number of keys stored.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Memory(m) => m.len(),
            Store::Sled(s) => s.len(),
        }
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes every earlier write durable. A no-op where durability is off for the memory backend.
    pub fn flush(&self) -> Result<()> {
        match &self.store {
            Store::Memory(_) => Ok(()),
            Store::Sled(s) => s.flush(),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // A clean shutdown should leave everything on disk whatever the durability mode; an error here has
        // nobody to return to, so it is logged.
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "flush on close failed");
        }
    }
}

/// A view of the engine shared by several operations; see [`Engine::batch`].
pub struct Batch<'e> {
    view: View<'e>,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").finish_non_exhaustive()
    }
}

enum View<'e> {
    Memory(MemoryView<'e>),
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
        match &self.view {
            View::Memory(m) => Ok(m.get_with(key, f)),
            View::Sled(s) => s.get_with(key, f),
        }
    }

    /// See [`Engine::put`].
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<PutOutcome> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(EngineError::ValueTooLarge { len: value.len(), max: MAX_VALUE_BYTES });
        }
        match &self.view {
            View::Memory(m) => Ok(m.put(key, value)),
            View::Sled(s) => s.put(key, value),
        }
    }

    /// See [`Engine::delete`].
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        match &self.view {
            View::Memory(m) => Ok(m.delete(key)),
            View::Sled(s) => s.delete(key),
        }
    }

    /// See [`Engine::scan_prefix`].
    pub fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<Vec<u8>>> {
        match &self.view {
            View::Memory(m) => Ok(m.scan_prefix(prefix, limit)),
            View::Sled(s) => s.scan_prefix(prefix, limit),
        }
    }
}
