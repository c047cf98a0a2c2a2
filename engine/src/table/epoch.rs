//! Epoch-based reclamation: when memory a reader may still be looking at can be freed.
//!
//! A reader [`pin`]s (once per batch of operations, not per read) and reads without locks; a writer that
//! unlinks an entry or a slot array [`Guard::defer`]s its release instead of freeing it. Freed it is only
//! once every thread that could have seen it has unpinned. The scheme is the classic one (Fraser's, as in
//! crossbeam-epoch), kept small and written against [`super::sync`] so the loom models check the same
//! code that runs:
//!
//! - A global epoch counter. Each thread announces `epoch << 1 | PINNED` while pinned (a store and a
//!   `SeqCst` fence, no read-modify-write), and `UNPINNED` after.
//! - Deferred releases collect in the thread's bag. A full bag is *sealed* with the global epoch read after
//!   a `SeqCst` fence (so after the unlinks it holds), and queued. A bag that does not fill is not left
//!   behind with an idle thread: the bag sits behind a lock of its own (uncontended: only its thread and
//!   [`reclaim`] take it), and [`reclaim`], run by the engine's memory thread a few times a second, seals
//!   every thread's waiting releases and advances the epoch for threads that do not pin any more.
//! - The epoch advances from `e` to `e + 1` only when every pinned thread announced `e`. A bag sealed at
//!   `s` is released once the epoch reaches `s + 2`: every thread pinned when its items were unlinked has
//!   unpinned since (a thread pinned at `e` blocks the advance to `e + 2`), and a thread that pinned later
//!   cannot reach them.
//!
//! A long walk (a scan, a log replay) [`Guard::repin`]s every so many entries, so it does not hold the
//! epoch back for its whole length; the borrow checker makes sure nothing read before is used after.
//!
//! Invariants: a [`Guard`] never leaves its thread (it is `!Send`), and no reference read under it
//! outlives it (the table's borrows are tied to it). The engine holds one guard per batch and never across
//! a coroutine yield, so a may coroutine that moves to another worker thread never carries a guard along.
//!
//! Costs: pinning is a thread-local lookup, a store and a fence per batch; a read under the guard costs
//! nothing; a release costs a push into the thread's bag under its uncontended lock, and every [`BAG`] of
//! them one fence, one lock and one attempt to advance; the collector gives a bag's blocks back to the slab
//! together.

use std::cell::Cell;
use std::marker::PhantomData;

use super::sync::{fence, lock, AtomicUsize, Mutex, Ordering};
use std::sync::atomic::AtomicU64;

/// Releases sealed together; also how many pins between attempts to advance the epoch.
const BAG: usize = 64;
const PINNED: usize = 1;

/// Bytes in sealed bags not yet released, process-wide (counted once a bag, not once a release: a shared
/// counter touched by every write would be one more contended atomic on the write path).
static SEALED_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes unlinked and waiting for the collector, in every table of the process: sealed bags, and every
/// thread's bag not sealed yet.
pub(crate) fn pending_bytes() -> u64 {
    let c = collector();
    let unsealed: usize = lock(&c.locals).iter().map(|l| bag_bytes(&lock(&l.bag))).sum();
    SEALED_BYTES.load(std::sync::atomic::Ordering::Relaxed) + unsealed as u64
}

fn bag_bytes(bag: &[Deferred]) -> usize {
    bag.iter().map(|d| d.bytes).sum()
}

/// A release to run once no reader can see `ptr`: a table block (given back to the slab with the rest of
/// its bag, a class lock taken once per class), or `call(ptr, arg)`; it frees `bytes`.
pub(crate) struct Deferred {
    /// `None`: a slab block of `arg` bytes.
    call: Option<unsafe fn(*mut u8, usize)>,
    ptr: *mut u8,
    arg: usize,
    bytes: usize,
}

// SAFETY: a `Deferred` owns what it releases (it was unlinked, so nothing else will release it), and the
// release functions the table defers (`slab::release`, dropping a slot array) may run on any thread.
#[allow(unsafe_code)]
unsafe impl Send for Deferred {}

impl Deferred {
    /// A release of `ptr` by `call(ptr, arg)`, which frees `bytes` (counted in [`pending_bytes`] until it
    /// runs).
    ///
    /// # Safety
    /// `call(ptr, arg)` must be sound to run once, on any thread, once no reader can reach `ptr`.
    #[allow(unsafe_code)]
    pub(crate) unsafe fn new(
        call: unsafe fn(*mut u8, usize),
        ptr: *mut u8,
        arg: usize,
        bytes: usize,
    ) -> Self {
        Deferred { call: Some(call), ptr, arg, bytes }
    }

    /// The release of a slab block of `size` bytes, costing `bytes`.
    ///
    /// # Safety
    /// `ptr` came from `slab::allocate(size)`, and is released once no reader can reach it.
    #[allow(unsafe_code)]
    pub(crate) unsafe fn block(ptr: *mut u8, size: usize, bytes: usize) -> Self {
        Deferred { call: None, ptr, arg: size, bytes }
    }
}

/// Runs the releases of bags no reader can see any more: calls one by one, blocks to the slab in one
/// batch a bag.
#[allow(unsafe_code)]
fn run(bags: Vec<Vec<Deferred>>) {
    let mut blocks = [(std::ptr::null_mut(), 0); BAG];
    for bag in bags {
        let mut n = 0;
        for d in bag {
            if let Some(call) = d.call {
                // SAFETY: the contract of `Deferred::new`; this runs once (`d` is consumed), after two
                // epochs.
                unsafe { call(d.ptr, d.arg) };
                continue;
            }
            if n == BAG {
                // SAFETY: the contract of `Deferred::block`, as above.
                unsafe { super::slab::release_blocks(&blocks[..n]) };
                n = 0;
            }
            blocks[n] = (d.ptr, d.arg);
            n += 1;
        }
        // SAFETY: as above.
        unsafe { super::slab::release_blocks(&blocks[..n]) };
    }
}

/// The process's reclamation state, shared by every table.
struct Collector {
    epoch: AtomicUsize,
    /// Every thread's announcement, registered at its first pin.
    locals: Mutex<Vec<std::sync::Arc<Local>>>,
    /// Sealed bags, oldest first: `(epoch sealed at, releases)`.
    sealed: Mutex<Vec<(usize, Vec<Deferred>)>>,
}

struct Local {
    state: AtomicUsize,
    /// Releases deferred by this thread and not yet sealed.
    bag: Mutex<Vec<Deferred>>,
}

// Each thread's handle keeps the collector alive by its own reference (a thread-local destroyed after the
// static, as loom's are, still reaches it).
#[cfg(not(loom))]
fn collector() -> std::sync::Arc<Collector> {
    static COLLECTOR: std::sync::OnceLock<std::sync::Arc<Collector>> = std::sync::OnceLock::new();
    std::sync::Arc::clone(COLLECTOR.get_or_init(|| std::sync::Arc::new(Collector::new())))
}

#[cfg(loom)]
loom::lazy_static! {
    static ref COLLECTOR: std::sync::Arc<Collector> = std::sync::Arc::new(Collector::new());
}

#[cfg(loom)]
fn collector() -> std::sync::Arc<Collector> {
    std::sync::Arc::clone(&COLLECTOR)
}

impl Collector {
    fn new() -> Self {
        Collector {
            epoch: AtomicUsize::new(0),
            locals: Mutex::new(Vec::new()),
            sealed: Mutex::new(Vec::new()),
        }
    }

    /// Advances the epoch if every pinned thread has announced the current one, then runs the releases
    /// sealed two epochs ago or earlier.
    fn collect(&self) {
        let ready: Vec<Vec<Deferred>> = {
            let locals = lock(&self.locals);
            fence(Ordering::SeqCst);
            let epoch = self.epoch.load(Ordering::Relaxed);
            let all_current = locals.iter().all(|l| {
                let s = l.state.load(Ordering::Relaxed);
                s & PINNED == 0 || s >> 1 == epoch
            });
            // What the threads did before their announcements (an unpin: their last reads) happens
            // before whatever this pass releases (crossbeam-epoch's `try_advance` has the same fence).
            fence(Ordering::Acquire);
            let epoch = if all_current {
                // Only this function advances, under `locals`: a plain store cannot lose an update.
                self.epoch.store(epoch + 1, Ordering::Release);
                epoch + 1
            } else {
                epoch
            };
            drop(locals);
            let mut sealed = lock(&self.sealed);
            let n = sealed.iter().take_while(|(at, _)| at + 2 <= epoch).count();
            if n == 0 {
                return;
            }
            sealed.drain(..n).map(|(_, bag)| bag).collect()
        };
        let bytes: usize = ready.iter().map(|bag| bag_bytes(bag)).sum();
        run(ready);
        SEALED_BYTES.fetch_sub(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Queues `bag`, sealed with the epoch now (read after every unlink it holds).
    fn seal(&self, bag: Vec<Deferred>) {
        SEALED_BYTES.fetch_add(bag_bytes(&bag) as u64, std::sync::atomic::Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let epoch = self.epoch.load(Ordering::Relaxed);
        lock(&self.sealed).push((epoch, bag));
    }
}

/// A thread's registration: its announcement and unsealed releases (shared with the collector), and its
/// pin depth.
struct Handle {
    collector: std::sync::Arc<Collector>,
    local: std::sync::Arc<Local>,
    pins: Cell<usize>,
    /// Pins since the last attempt to advance.
    since_collect: Cell<usize>,
}

impl Handle {
    fn register() -> Handle {
        let collector = collector();
        let local = std::sync::Arc::new(Local {
            state: AtomicUsize::new(0),
            bag: Mutex::new(Vec::with_capacity(BAG)),
        });
        lock(&collector.locals).push(std::sync::Arc::clone(&local));
        Handle { collector, local, pins: Cell::new(0), since_collect: Cell::new(0) }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let c = &self.collector;
        let bag = std::mem::take(&mut *lock(&self.local.bag));
        if !bag.is_empty() {
            c.seal(bag);
        }
        lock(&c.locals).retain(|l| !std::sync::Arc::ptr_eq(l, &self.local));
    }
}

#[cfg(not(loom))]
thread_local! {
    static HANDLE: Handle = Handle::register();
}

#[cfg(loom)]
loom::thread_local! {
    static HANDLE: Handle = Handle::register();
}

/// Proof that this thread is pinned: what is read under it stays readable until it is dropped.
pub(crate) struct Guard {
    /// `!Send` and `!Sync`: it belongs to the thread that pinned.
    _thread: PhantomData<*mut ()>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}

/// Pins this thread (nested pins are counted, only the outermost announces).
pub(crate) fn pin() -> Guard {
    HANDLE.with(|h| {
        let pins = h.pins.get();
        if pins == 0 {
            let c = &h.collector;
            let epoch = c.epoch.load(Ordering::Relaxed);
            h.local.state.store(epoch << 1 | PINNED, Ordering::Relaxed);
            // Announced before any shared pointer is read: pairs with the fence in `collect`.
            fence(Ordering::SeqCst);
            let since = h.since_collect.get() + 1;
            if since >= BAG {
                h.since_collect.set(0);
                c.collect();
            } else {
                h.since_collect.set(since);
            }
        }
        h.pins.set(pins + 1);
    });
    Guard { _thread: PhantomData }
}

impl Guard {
    /// Runs `d` once no thread can still see what it releases. Call it after unlinking that memory.
    #[allow(clippy::unused_self, reason = "deferring needs a pinned thread: the guard proves it is")]
    pub(crate) fn defer(&self, d: Deferred) {
        HANDLE.with(|h| {
            let mut bag = lock(&h.local.bag);
            bag.push(d);
            if bag.len() >= BAG {
                let full = std::mem::replace(&mut *bag, Vec::with_capacity(BAG));
                drop(bag);
                h.collector.seal(full);
                h.collector.collect();
            }
        });
    }

    /// Announces the current epoch again, as if unpinned and pinned afresh, when this is the thread's
    /// outermost guard (a nested one cannot: the outer guard's reads must stay protected). `&mut self`:
    /// nothing read under the guard before is used after.
    #[allow(clippy::unused_self, reason = "the guard's borrow is the point: nothing read before survives")]
    pub(crate) fn repin(&mut self) {
        HANDLE.with(|h| {
            if h.pins.get() == 1 {
                let epoch = h.collector.epoch.load(Ordering::Relaxed);
                h.local.state.store(epoch << 1 | PINNED, Ordering::Release);
                fence(Ordering::SeqCst);
            }
        });
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // `try_with`: a guard dropped while the thread is exiting finds its handle already gone, which
        // unregistered it.
        let _ = HANDLE.try_with(|h| {
            let pins = h.pins.get() - 1;
            h.pins.set(pins);
            if pins == 0 {
                h.local.state.store(0, Ordering::Release);
            }
        });
    }
}

/// Seals every thread's waiting releases and advances the epoch as far as it can (two steps release
/// everything sealed now, when no thread stays pinned): what the engine's memory thread runs a few times
/// a second, so that a thread that went idle with releases in its bag does not keep them.
pub(crate) fn reclaim() {
    let c = collector();
    let locals: Vec<std::sync::Arc<Local>> = lock(&c.locals).clone();
    for local in locals {
        let bag = std::mem::take(&mut *lock(&local.bag));
        if !bag.is_empty() {
            c.seal(bag);
        }
    }
    for _ in 0..3 {
        c.collect();
    }
}
