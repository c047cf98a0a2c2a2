//! The `sled` backend: one sled 0.34 tree in a data directory.
//!
//! sled is pinned to 0.34.7, its last stable release (../shared/field-notes.md): its `Db` is `Sync`, and
//! 1.0 alphas change the API and showed no group commit. Two facts shape this file:
//! - `Db::flush()` makes earlier writes survive a process crash (`pwrite` + `sync_file_range`), which is
//!   weaker than `fsync` against power loss; README states this.
//! - sled 0.34 skips a write whose value equals the stored one, which matters only to benchmarks.

use std::path::Path;

use crate::{Durability, EngineConfig, EngineError, PutOutcome, Result};

/// The sled backend.
#[derive(Debug)]
pub(crate) struct SledStore {
    db: sled::Db,
    /// `Durability::Sync`: flush after every mutation before it returns.
    flush_each_write: bool,
}

impl SledStore {
    pub(crate) fn open(dir: &Path, config: &EngineConfig) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| EngineError::Io { path: dir.to_path_buf(), source })?;
        let flush_every_ms = match config.durability {
            // `none` and `sync` do not need sled's timer: `none` promises nothing, `sync` flushes itself.
            Durability::None | Durability::Sync => None,
            Durability::Periodic => Some(config.flush_interval.as_millis().clamp(1, u64::MAX as u128) as u64),
        };
        let db = sled::Config::new().path(dir).flush_every_ms(flush_every_ms).open()?;
        Ok(SledStore { db, flush_each_write: config.durability == Durability::Sync })
    }

    fn after_write(&self) -> Result<()> {
        if self.flush_each_write {
            self.db.flush()?;
        }
        Ok(())
    }

    pub(crate) fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        Ok(self.db.get(key)?.map(|v| f(&v)))
    }

    pub(crate) fn put(&self, key: &[u8], value: &[u8]) -> Result<PutOutcome> {
        let old = self.db.insert(key, value)?;
        self.after_write()?;
        Ok(if old.is_some() { PutOutcome::Replaced } else { PutOutcome::Created })
    }

    pub(crate) fn delete(&self, key: &[u8]) -> Result<bool> {
        let old = self.db.remove(key)?;
        self.after_write()?;
        Ok(old.is_some())
    }

    pub(crate) fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<Vec<u8>>> {
        self.db
            .scan_prefix(prefix)
            .keys()
            .take(limit)
            .map(|k| k.map(|k| k.to_vec()).map_err(EngineError::from))
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.db.len()
    }

    pub(crate) fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}
