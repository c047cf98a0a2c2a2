//! The `sled` backend: one sled 0.34 tree in a data directory.
//!
//! sled is pinned to 0.34.7, its last stable release (../shared/field-notes.md): its `Db` is `Sync`, and
//! 1.0 alphas change the API and showed no group commit. Facts that shape this file:
//! - `Db::flush()` makes earlier writes survive a process crash (`pwrite` + `sync_file_range`), which is
//!   weaker than `fsync` against power loss; docs/operations.md states this.
//! - Durability is driven by our own flusher ([`GroupCommit`]), not sled's `flush_every_ms` timer: `sync`
//!   writers share flushes (group commit), and closing the engine joins the flusher. (sled's timer thread
//!   held the database for up to one interval after close.) sled's own background segment writers may still
//!   hold the directory lock for a moment, so `open` waits for it, bounded.
//! - sled 0.34 skips a write whose value equals the stored one, which matters only to benchmarks.
//! - Every value is stored with its version and expiry in front (`entry.rs`). Versions come from
//!   `Db::generate_id`, which sled keeps monotonic across restarts. A tree written before versions existed
//!   (no `format` in the `otkv` tree) is upgraded on open: each value gets a fresh version, no expiry.
//! - Conditional writes are a read and a `compare_and_swap` of the exact bytes read, retried if another
//!   writer got in between: atomic against every writer.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::commit::{Flush, GroupCommit, Schedule};
use crate::config::{Durability, EngineConfig};
use crate::entry::{self, Condition, Meta, PutOutcome, Written};
use crate::error::io_err;
use crate::error::{EngineError, Result};
use crate::listing::{Cursor, Page, VISITS_PER_KEY};

/// The tree that records the data format, and the format this build writes.
const META_TREE: &[u8] = b"otkv";
/// The index of keys with an expiry: `expires_ms (big-endian) | key`, empty values (`expiry.rs`).
const EXPIRY_TREE: &[u8] = b"otkv-expiry";
const FORMAT_KEY: &[u8] = b"format";
const FORMAT: u64 = 2;

/// Brings a tree written before values carried metadata up to [`FORMAT`].
fn upgrade(db: &sled::Db) -> Result<()> {
    let meta = db.open_tree(META_TREE)?;
    match meta.get(FORMAT_KEY)? {
        Some(v) if v.as_ref() == FORMAT.to_le_bytes() => return Ok(()),
        Some(v) => {
            return Err(EngineError::InvalidConfig(format!(
                "the sled tree has data format {:?}; this build reads {FORMAT}",
                v.as_ref()
            )))
        }
        None => {}
    }
    let mut upgraded = 0u64;
    for item in db.iter() {
        let (key, value) = item?;
        let stored = entry::encode(Meta { version: db.generate_id()? + 1, expires_ms: 0 }, &value);
        db.insert(key, &*stored)?;
        upgraded += 1;
    }
    meta.insert(FORMAT_KEY, &FORMAT.to_le_bytes())?;
    db.flush()?;
    if upgraded > 0 {
        tracing::info!(keys = upgraded, "upgraded a sled tree to values with versions and expiry");
    }
    Ok(())
}

/// The sled backend.
#[derive(Debug)]
pub(crate) struct SledStore {
    db: sled::Db,
    expiring: sled::Tree,
    expirer: std::sync::Mutex<crate::expiry::Expirer>,
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
        upgrade(&db)?;
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
        let expiring = db.open_tree(EXPIRY_TREE)?;
        let (d, e) = (db.clone(), expiring.clone());
        let expirer = crate::expiry::Expirer::start("otkv-sled-expire", move |now| {
            expire_due(&d, &e, now).unwrap_or_else(|err| {
                tracing::warn!(error = %err, "expiring keys failed; they stay unreadable and are retried");
                0
            })
        });
        Ok(SledStore {
            db,
            expiring,
            expirer: std::sync::Mutex::new(expirer),
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

    pub(crate) fn get_with<R>(&self, key: &[u8], f: impl FnOnce(Meta, &[u8]) -> R) -> Result<Option<R>> {
        Ok(self.db.get(key)?.and_then(|v| entry::live_now(&v).map(|(m, value)| f(m, value))))
    }

    /// See `MemoryView::put`.
    pub(crate) fn put(&self, key: &[u8], value: &[u8], cond: Condition, expires_ms: u64) -> Result<Written> {
        self.check_writable()?;
        let version = self.db.generate_id()? + 1;
        let stored = entry::encode(Meta { version, expires_ms }, value);
        // The index entry goes in first: a crash in between leaves a stale one (dropped when due), never
        // a value with an expiry that nothing will reclaim.
        if expires_ms != 0 {
            self.expiring.insert(index_key(expires_ms, key), &[])?;
        }
        let outcome = if cond == Condition::Always {
            let old = self.db.insert(key, &*stored)?;
            self.unindex(key, old.as_deref(), expires_ms)?;
            Some(if old.is_some_and(|o| entry::live_now(&o).is_some()) {
                PutOutcome::Replaced
            } else {
                PutOutcome::Created
            })
        } else {
            self.swap_if(key, Some(&stored), cond, expires_ms)?
        };
        let ticket = if outcome.is_some() { self.after_write() } else { 0 };
        Ok(Written { outcome, version, ticket })
    }

    /// Replaces (or with `None`, removes) the key's value if `cond` holds of the live one: what was there
    /// (`Created` if nothing live), or `None` when the condition failed.
    fn swap_if(
        &self,
        key: &[u8],
        new: Option<&[u8]>,
        cond: Condition,
        new_expiry: u64,
    ) -> Result<Option<PutOutcome>> {
        loop {
            let old = self.db.get(key)?;
            let current = old.as_ref().and_then(|o| entry::live_now(o)).map(|(m, _)| m);
            if !cond.holds(current) {
                return Ok(None);
            }
            if old.is_none() && new.is_none() {
                return Ok(Some(PutOutcome::Created));
            }
            if self.db.compare_and_swap(key, old.as_ref(), new)?.is_ok() {
                self.unindex(key, old.as_deref(), new_expiry)?;
                return Ok(Some(if current.is_some() { PutOutcome::Replaced } else { PutOutcome::Created }));
            }
        }
    }

    /// See `MemoryView::delete`: whether a live value was removed (`None`: the condition failed).
    pub(crate) fn delete(&self, key: &[u8], cond: Condition) -> Result<(Option<bool>, u64)> {
        self.check_writable()?;
        if cond == Condition::Always {
            let old = self.db.remove(key)?;
            self.unindex(key, old.as_deref(), 0)?;
            let existed = old.is_some_and(|o| entry::live_now(&o).is_some());
            return Ok((Some(existed), self.after_write()));
        }
        Ok(match self.swap_if(key, None, cond, 0)? {
            Some(outcome) => (Some(outcome == PutOutcome::Replaced), self.after_write()),
            None => (None, 0),
        })
    }

    /// A page of the live keys starting with `prefix` after the cursor's key, in byte order (sled's own):
    /// `limit` keys, or fewer once about [`VISITS_PER_KEY`] entries per key asked for were visited
    /// (expired entries not yet removed), with the cursor to go on from.
    pub(crate) fn list(&self, prefix: &[u8], cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        use std::ops::Bound;
        let after = cursor.map(Cursor::key).transpose()?;
        let now = entry::now_ms();
        let mut page = Page::default();
        if limit == 0 {
            page.next = Some(cursor.cloned().unwrap_or_else(|| Cursor::after_key(b"")));
            return Ok(page);
        }
        let budget = limit.saturating_mul(VISITS_PER_KEY);
        // From the cursor when it is inside (or past) the prefix's range, else from the prefix.
        let items = match after.filter(|a| *a >= prefix) {
            Some(a) => self.db.range::<&[u8], _>((Bound::Excluded(a), Bound::Unbounded)),
            None => self.db.scan_prefix(prefix),
        };
        let mut last = None;
        for item in items {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                // Sorted: past the prefix's keys.
                return Ok(page);
            }
            if page.keys.len() == limit || page.visited == budget {
                // More to come: the next page goes on after the last key visited.
                page.next = last.map(|k: sled::IVec| Cursor::after_key(&k));
                return Ok(page);
            }
            page.visited += 1;
            if entry::live(&value, now).is_some() {
                page.keys.push(key.to_vec());
            }
            last = Some(key);
        }
        Ok(page)
    }

    pub(crate) fn len(&self) -> usize {
        self.db.len()
    }

    pub(crate) fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Drops the index entry of the value a write replaced, unless the new value has the same expiry.
    fn unindex(&self, key: &[u8], old: Option<&[u8]>, new_expiry: u64) -> Result<()> {
        let old_expiry = old.and_then(entry::split).map_or(0, |(m, _)| m.expires_ms);
        if old_expiry != 0 && old_expiry != new_expiry {
            self.expiring.remove(index_key(old_expiry, key))?;
        }
        Ok(())
    }

    /// Stops the expirer and the flusher (after its last flush) and flushes once more.
    pub(crate) fn close(&self) -> Result<()> {
        crate::commit::lock(&self.expirer).stop();
        self.closed.store(true, Ordering::Release);
        if let Some(c) = &self.commit {
            c.close();
        }
        self.flush()
    }
}

/// `expires_ms` big-endian, then the key: the index orders by expiry.
fn index_key(expires_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&expires_ms.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// One batch of the expirer: removes the keys due at `now` whose stored expiry is still the indexed one.
fn expire_due(db: &sled::Db, index: &sled::Tree, now: u64) -> Result<usize> {
    let end = (now.saturating_add(1)).to_be_bytes();
    let mut taken = 0;
    for item in index.range(..end.as_slice()).take(crate::expiry::BATCH) {
        let (ikey, _) = item?;
        taken += 1;
        let (at, key) = ikey.split_at(8);
        let at = u64::from_be_bytes(at.try_into().unwrap_or([0; 8]));
        // Remove the value only if it is still the one indexed, atomically against writers.
        loop {
            let Some(old) = db.get(key)? else { break };
            if entry::split(&old).map(|(m, _)| m.expires_ms) != Some(at) {
                break;
            }
            if db.compare_and_swap(key, Some(&old), None::<&[u8]>)?.is_ok() {
                break;
            }
        }
        index.remove(&ikey)?;
    }
    Ok(taken)
}
