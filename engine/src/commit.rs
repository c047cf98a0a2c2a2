//! Group commit: one flusher thread makes writes durable in batches and wakes the writers it covered.
//!
//! Writers get a *ticket* (a sequence number) for each write. In `sync` mode a writer asks for its ticket
//! to be made durable ([`GroupCommit::request`]) and then waits for it, either blocking its thread
//! ([`GroupCommit::wait`]) or registering a callback ([`GroupCommit::on_durable`]) so that a coroutine
//! can park instead of blocking its worker thread. The flusher takes whatever is pending, makes all of it
//! durable with one sync, and wakes every waiter whose ticket it covered: concurrent writers share syncs.
//! Before a sync it waits briefly for the writers it expects (the commit delay, see the flusher loop).
//! In `periodic` mode nobody waits; the flusher syncs once per interval.
//!
//! A failed sync is not retried (after fsyncgate: the kernel may have dropped the dirty pages and cleared
//! the error). The failure is kept, every waiter gets it, and every later write is refused.
//!
//! The flusher is our own thread (not, for sled, sled's timer), so closing the engine stops and joins it
//! deterministically: nothing holds the data directory after `Engine` is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Why the engine refuses writes, and since when: a sync (or the log write before it) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRefusal {
    /// When the failure happened.
    pub since: SystemTime,
    /// What failed, e.g. `sync failed: No space left on device (os error 28)`.
    pub reason: String,
}

impl std::fmt::Display for WriteRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = humantime::format_rfc3339_seconds(self.since);
        write!(f, "writes refused since {since}: {}", self.reason)
    }
}

/// What the flusher calls: make everything written so far durable, and return the highest ticket that
/// is now durable.
pub(crate) trait Flush: Send + 'static {
    fn flush(&mut self) -> std::io::Result<u64>;
}

/// Called once a ticket is durable (`Ok`) or can never be (`Err`, the sync failure).
pub type DurableCallback = Box<dyn FnOnce(Result<(), String>) + Send>;

/// When the flusher runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Schedule {
    /// When a writer asks, after a commit delay of at most the given duration (see the flusher loop).
    OnRequest(Duration),
    /// Every interval.
    Every(Duration),
}

struct State {
    pending: bool,
    stop: bool,
    waiters: Vec<(u64, DurableCallback)>,
    /// How many waiters the last sync released: about how many writers cycle through the flusher, so
    /// how many to gather before the next sync (the commit delay).
    expected: usize,
}

struct Shared {
    durable: AtomicU64,
    state: Mutex<State>,
    wake: Condvar,
    failure: OnceLock<WriteRefusal>,
}

/// The flusher thread and what writers share with it.
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("durable", &self.shared.durable.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Starts the flusher. `durable` is the highest ticket already durable (from recovery).
    pub(crate) fn start(
        name: &str,
        schedule: Schedule,
        durable: u64,
        mut flusher: impl Flush,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            durable: AtomicU64::new(durable),
            state: Mutex::new(State { pending: false, stop: false, waiters: Vec::new(), expected: 0 }),
            wake: Condvar::new(),
            failure: OnceLock::new(),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || loop {
            let stop = {
                let mut st = lock(&s.state);
                match schedule {
                    Schedule::OnRequest(max_delay) => {
                        while !st.pending && !st.stop {
                            st = s.wake.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
                        }
                        // The commit delay. The writers the last sync released are on their way back with
                        // their next writes. A sync costs the same for one write as for sixty (here about
                        // 150 µs, 70 of them CPU), so syncing for the first to arrive would spend most of
                        // the CPU on syncs and keep batches small. Wait until as many are waiting as last
                        // time, for at most `max_delay`: a writer that left costs one delay, after which
                        // `expected` is smaller. (Measured: fixed smaller targets, or none, were slower.)
                        let deadline = Instant::now() + max_delay;
                        while st.waiters.len() < st.expected && !st.stop {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break;
                            }
                            st = s
                                .wake
                                .wait_timeout(st, left)
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .0;
                        }
                    }
                    Schedule::Every(interval) => {
                        if !st.stop && !st.pending {
                            st = s
                                .wake
                                .wait_timeout(st, interval)
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .0;
                        }
                    }
                }
                st.pending = false;
                st.stop
            };
            match flusher.flush() {
                Ok(ticket) => s.complete(ticket),
                Err(e) => {
                    s.fail(WriteRefusal { since: SystemTime::now(), reason: format!("sync failed: {e}") });
                    return;
                }
            }
            if stop {
                return;
            }
        })?;
        Ok(GroupCommit { shared, thread: Mutex::new(Some(thread)) })
    }

    /// Asks the flusher to run now (a `sync` writer, a snapshot).
    pub(crate) fn request(&self) {
        let mut st = lock(&self.shared.state);
        // Already pending: the flusher will run without another wake-up.
        if !st.pending {
            st.pending = true;
            self.shared.wake.notify_one();
        }
    }

    /// Calls `callback` once `ticket` is durable (at once if it already is).
    pub(crate) fn on_durable(&self, ticket: u64, callback: DurableCallback) {
        let ready = {
            let mut st = lock(&self.shared.state);
            if let Some(f) = self.shared.failure.get() {
                Some(Err(f.to_string()))
            } else if self.shared.durable.load(Ordering::Acquire) >= ticket {
                Some(Ok(()))
            } else {
                st.waiters.push((ticket, callback));
                // The flusher is holding a sync for the writers it expects, and this is the last of them.
                if st.pending && st.waiters.len() == st.expected {
                    self.shared.wake.notify_one();
                }
                return;
            }
        };
        if let Some(result) = ready {
            callback(result);
        }
    }

    /// Blocks the calling thread until `ticket` is durable. Not for coroutines: use `on_durable`.
    pub(crate) fn wait(&self, ticket: u64) -> Result<(), String> {
        if self.shared.durable.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.on_durable(ticket, Box::new(move |r| drop(tx.send(r))));
        rx.recv().unwrap_or_else(|_| Err("the flusher stopped".into()))
    }

    /// The sync failure, if one happened.
    pub(crate) fn failure(&self) -> Option<&WriteRefusal> {
        self.shared.failure.get()
    }

    /// Stops the flusher after a last flush, and waits for it.
    pub(crate) fn close(&self) {
        {
            let mut st = lock(&self.shared.state);
            st.stop = true;
            self.shared.wake.notify_one();
        }
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn complete(&self, ticket: u64) {
        let ready: Vec<DurableCallback> = {
            let mut st = lock(&self.state);
            let durable = self.durable.fetch_max(ticket, Ordering::AcqRel).max(ticket);
            let (done, rest): (Vec<_>, Vec<_>) = st.waiters.drain(..).partition(|(t, _)| *t <= durable);
            st.waiters = rest;
            st.expected = done.len();
            done.into_iter().map(|(_, cb)| cb).collect()
        };
        for cb in ready {
            cb(Ok(()));
        }
    }

    fn fail(&self, refusal: WriteRefusal) {
        let message = refusal.to_string();
        tracing::error!("{message}; a failed sync is never retried: free the disk, then restart the node");
        let _ = self.failure.set(refusal);
        let waiters: Vec<(u64, DurableCallback)> = std::mem::take(&mut lock(&self.state).waiters);
        for (_, cb) in waiters {
            cb(Err(message.clone()));
        }
    }
}

/// Locks `m`, recovering from poisoning (a panicked holder leaves data that is still consistent here).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
