//! Active expiry: values whose time has passed are removed without a client reading them.
//!
//! Reads already treat an expired value as absent (`entry.rs`); this reclaims its memory (or disk). Each
//! backend keeps an index of the keys that have an expiry, ordered by it: the memory backend a
//! `BTreeSet<(expires_ms, key)>` behind a mutex, touched only by writes that set or replace an expiry; sled
//! a second tree keyed by `expires_ms (big-endian) | key`. An [`Expirer`] thread takes the due entries
//! from the front of the index every [`TICK`], in batches of [`BATCH`], and removes each key whose stored
//! expiry is still the one indexed (a stale index entry, left by a later write, is simply dropped). The
//! removal is an ordinary delete: with a log it is logged, so a restart cannot bring the key back.
//!
//! Unlike Redis's active expire cycle, which samples because its keyspace has no order by expiry, the
//! index finds every due key without visiting the others; a batch holds no lock that a read takes.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::budget::{Budget, EXPIRY_ENTRY};
use crate::commit::lock;
use crate::key::Key;

/// How often the expirer looks for due keys.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// Keys removed per batch; the expirer goes on batch after batch while they come full.
pub(crate) const BATCH: usize = 1000;

/// The memory backend's keys with an expiry, by expiry.
pub(crate) type ExpiryIndex = Mutex<BTreeSet<(u64, Key)>>;

/// Updates `index` for a write of `key` that replaced a value expiring at `old` with one expiring at
/// `new` (0: none), counting the index's entries in `budget`.
pub(crate) fn note(index: &ExpiryIndex, budget: &Budget, key: &[u8], old: u64, new: u64) {
    if old == new {
        return;
    }
    let mut idx = lock(index);
    let mut delta = 0;
    if old != 0 && idx.remove(&(old, Key::from_slice(key))) {
        delta -= EXPIRY_ENTRY;
    }
    if new != 0 && idx.insert((new, Key::from_slice(key))) {
        delta += EXPIRY_ENTRY;
    }
    drop(idx);
    budget.add(delta);
}

/// Takes up to [`BATCH`] index entries due at `now`.
pub(crate) fn take_due(index: &ExpiryIndex, budget: &Budget, now: u64) -> Vec<(u64, Key)> {
    let mut idx = lock(index);
    let mut out = Vec::new();
    while out.len() < BATCH {
        match idx.first() {
            Some((at, _)) if *at <= now => out.extend(idx.pop_first()),
            _ => break,
        }
    }
    drop(idx);
    budget.add(-EXPIRY_ENTRY * out.len() as i64);
    out
}

/// Takes the index entry with the nearest expiry, due or not: `volatile-ttl`'s next eviction candidate.
pub(crate) fn take_nearest(index: &ExpiryIndex, budget: &Budget) -> Option<(u64, Key)> {
    let nearest = lock(index).pop_first();
    if nearest.is_some() {
        budget.add(-EXPIRY_ENTRY);
    }
    nearest
}

/// The background thread; stopped (and joined) by [`Expirer::stop`] or on drop.
pub(crate) struct Expirer {
    thread: Option<JoinHandle<()>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl std::fmt::Debug for Expirer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expirer").finish_non_exhaustive()
    }
}

impl Expirer {
    /// Runs `sweep(now_ms)` every [`TICK`], and again at once while it returns a full [`BATCH`].
    pub(crate) fn start(name: &str, sweep: impl FnMut(u64) -> usize + Send + 'static) -> Expirer {
        Self::start_every(name, TICK, sweep)
    }

    /// [`Expirer::start`] with another period (the evictor's).
    pub(crate) fn start_every(
        name: &str,
        tick: Duration,
        mut sweep: impl FnMut(u64) -> usize + Send + 'static,
    ) -> Expirer {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || loop {
                {
                    let stopped = lock(&stop2.0);
                    let (stopped, _) = stop2
                        .1
                        .wait_timeout_while(stopped, tick, |s| !*s)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if *stopped {
                        return;
                    }
                }
                while sweep(crate::entry::now_ms()) == BATCH {}
            })
            .ok();
        if thread.is_none() {
            tracing::error!(thread = name, "could not start a background thread");
        }
        Expirer { thread, stop }
    }

    /// Stops the thread and waits for it. Calling it again does nothing.
    pub(crate) fn stop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Expirer {
    fn drop(&mut self) {
        self.stop();
    }
}
