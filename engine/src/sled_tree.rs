//! The `sled` backend: one sled 0.34 tree in a data directory.
//!
//! sled is pinned to 0.34.7, its last stable release (../shared/field-notes.md): its `Db` is `Sync`, and
//! 1.0 alphas change the API and showed no group commit. Facts that shape this file:
//! - `Db::flush()` makes earlier writes survive a process crash (`pwrite` + `sync_file_range`), which is
//!   weaker than `fsync` against power loss; README states this.
//! - Durability is driven by our own flusher ([`GroupCommit`]), not sled's `flush_every_ms` timer: `sync`
//!   writers share flushes (group commit), and closing the engine joins the flusher. (sled's timer thread
//!   held the database for up to one interval after close.) sled's own background segment writers may still
//!   hold the directory lock for a moment, so `open` waits for it, bounded.
//! - sled 0.34 skips a write whose value equals the stored one, which matters only to benchmarks.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::commit::{Flush, GroupCommit, Schedule};
use crate::error::io_err;
use crate::{Durability, EngineConfig, EngineError, PutOutcome, Result};

/// The sled backend.
#[derive(Debug)]
pub(crate) struct SledStore {
    db: sled::Db,
    /// Tickets handed to writes, counted after each write is applied.
    issued: Arc<AtomicU64>,
    /// The flusher, for `periodic` and `sync`.
    commit: Option<GroupCommit>,
    sync: bool,
    closed: std::sync::atomic::AtomicBool,
}

struct SledFlush {
    db: sled::Db,
    issued: Arc<AtomicU64>,
}

impl Flush for SledFlush {
    fn flush(&mut self) -> std::io::Result<u64> {
        // Every write counted before the flush starts is complete, so the flush covers it.
        let ticket = self.issued.load(Ordering::Acquire);
        self.db.flush().map_err(std::io::Error::other)?;
        Ok(ticket)
    }
}

/// How long `open` waits for a previous `Db` of the same directory, in this process, to let go of it.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Opens the tree, waiting (bounded) while the directory lock is held. sled 0.34 finishes buffered segment
/// writes on background threads that keep the directory locked for a moment after its `Db` is dropped, so
/// an immediate reopen in the same process can find the lock taken. Another *process* holding it is still
/// an error, after the wait.
fn open_waiting_for_lock(dir: &Path) -> Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(dir).flush_every_ms(None).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

impl SledStore {
    pub(crate) fn open(dir: &Path, config: &EngineConfig) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let db = open_waiting_for_lock(dir)?;
        let issued = Arc::new(AtomicU64::new(0));
        let schedule = match config.durability {
            Durability::None => None,
            Durability::Periodic => Some(Schedule::Every(config.flush_interval)),
            Durability::Sync => Some(Schedule::OnRequest(config.commit_delay)),
        };
        let commit = schedule
            .map(|s| {
                let flusher = SledFlush { db: db.clone(), issued: Arc::clone(&issued) };
                GroupCommit::start("otkv-sled-flush", s, 0, flusher)
            })
            .transpose()
            .map_err(io_err(dir))?;
        Ok(SledStore {
            db,
            issued,
            commit,
            sync: config.durability == Durability::Sync,
            closed: false.into(),
        })
    }

    fn check_writable(&self) -> Result<()> {
        if let Some(f) = self.commit.as_ref().and_then(GroupCommit::failure) {
            return Err(EngineError::Unavailable(f.to_string()));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(EngineError::Unavailable("the engine is shutting down".into()));
        }
        Ok(())
    }

    /// After a write is applied: its ticket, and in `sync` mode a request to the flusher.
    fn after_write(&self) -> u64 {
        let ticket = self.issued.fetch_add(1, Ordering::AcqRel) + 1;
        if self.sync {
            if let Some(c) = &self.commit {
                c.request();
            }
        }
        ticket
    }

    pub(crate) fn commit(&self) -> Option<&GroupCommit> {
        self.commit.as_ref()
    }

    pub(crate) fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        Ok(self.db.get(key)?.map(|v| f(&v)))
    }

    pub(crate) fn put(&self, key: &[u8], value: &[u8]) -> Result<(PutOutcome, u64)> {
        self.check_writable()?;
        let old = self.db.insert(key, value)?;
        let outcome = if old.is_some() { PutOutcome::Replaced } else { PutOutcome::Created };
        Ok((outcome, self.after_write()))
    }

    pub(crate) fn delete(&self, key: &[u8]) -> Result<(bool, u64)> {
        self.check_writable()?;
        let old = self.db.remove(key)?;
        Ok((old.is_some(), self.after_write()))
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

    /// Stops the flusher (after its last flush) and flushes once more.
    pub(crate) fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        if let Some(c) = &self.commit {
            c.close();
        }
        self.flush()
    }
}
