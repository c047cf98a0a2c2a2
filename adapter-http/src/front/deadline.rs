//! Socket deadlines without may's I/O timeouts.
//!
//! Why this exists: may 0.3.51's per-socket timeouts (`set_read_timeout`, `set_write_timeout`) register a
//! timer in the event loop's timeout list for every blocking read or write, and that list has a race: under
//! load with two worker threads the event loop found a timer entry already consumed (a panic inside
//! `may_queue::mpsc_list_v1::Entry::with_mut_data` from `Selector::select`) or corrupted the heap
//! (`malloc(): unaligned tcache chunk detected`). `may_minihttp` sets no timeouts, which is why may's own
//! benchmarks never meet it. So no socket in this workspace uses may's I/O timeouts.
//!
//! Instead, each connection owns a [`Deadline`]: one atomic holding when it expires, on a coarse clock.
//! One reaper thread wakes every [`TICK`], and shuts down the socket of every expired deadline: the read
//! side for a read deadline (the blocked read returns end-of-file, and the connection, seeing
//! [`Deadline::fired`], can still send `408`), both sides for a write deadline (a client that stops
//! reading). A deadline is removed from the reaper's table, under its lock, before its socket is closed,
//! so the reaper can never shut down a recycled file descriptor.
//!
//! Cost on the hot path: one relaxed atomic store per read or write, instead of a timer insertion and
//! removal in may's list.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::mutex::lock;

/// How often the reaper looks; deadlines are honoured to within this.
pub const TICK: Duration = Duration::from_millis(25);

const NONE: u8 = 0;
const READ: u8 = 1;
const WRITE: u8 = 2;

struct Slot {
    fd: RawFd,
    at_ms: AtomicU64,
    kind: AtomicU8,
    fired: AtomicBool,
}

struct Reaper {
    started: Instant,
    /// Milliseconds since `started`, advanced by the reaper each tick: a clock with no syscall.
    now_ms: AtomicU64,
    slots: Mutex<HashMap<usize, Arc<Slot>>>,
    next_id: AtomicUsize,
}

fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<&'static Reaper> = OnceLock::new();
    REAPER.get_or_init(|| {
        let r: &'static Reaper = Box::leak(Box::new(Reaper {
            started: Instant::now(),
            now_ms: AtomicU64::new(0),
            slots: Mutex::new(HashMap::new()),
            next_id: AtomicUsize::new(0),
        }));
        let spawned = std::thread::Builder::new().name("otkv-deadlines".into()).spawn(move || loop {
            std::thread::sleep(TICK);
            let now = u64::try_from(r.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            r.now_ms.store(now, Relaxed);
            let slots = lock(&r.slots);
            for slot in slots.values() {
                let kind = slot.kind.load(Relaxed);
                if kind != NONE && slot.at_ms.load(Relaxed) <= now {
                    slot.kind.store(NONE, Relaxed);
                    slot.fired.store(true, Relaxed);
                    let how = if kind == READ {
                        nix::sys::socket::Shutdown::Read
                    } else {
                        nix::sys::socket::Shutdown::Both
                    };
                    // The fd is open: its slot is removed (under this lock) before it is closed.
                    let _ = nix::sys::socket::shutdown(slot.fd, how);
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the deadline thread; timeouts are not enforced");
        }
        r
    })
}

/// One socket's deadline. Drop it before closing the socket.
pub struct Deadline {
    id: usize,
    slot: Arc<Slot>,
    /// The reaper, looked up once: setting a deadline is on every read and write.
    reaper: &'static Reaper,
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline").field("fd", &self.slot.fd).finish_non_exhaustive()
    }
}

impl Deadline {
    /// Watches the socket `fd`, with no deadline set yet.
    pub fn watch(fd: RawFd) -> Deadline {
        let r = reaper();
        let id = r.next_id.fetch_add(1, Relaxed);
        let slot = Arc::new(Slot {
            fd,
            at_ms: AtomicU64::new(u64::MAX),
            kind: AtomicU8::new(NONE),
            fired: AtomicBool::new(false),
        });
        lock(&r.slots).insert(id, Arc::clone(&slot));
        Deadline { id, slot, reaper: r }
    }

    fn set(&self, kind: u8, within: Duration) {
        // In u64 milliseconds (`as_millis` is a u128): seconds beyond 584 million years saturate.
        let within_ms =
            within.as_secs().saturating_mul(1000).saturating_add(u64::from(within.subsec_millis()));
        self.slot.at_ms.store(self.reaper.now_ms.load(Relaxed).saturating_add(within_ms), Relaxed);
        self.slot.kind.store(kind, Relaxed);
    }

    /// The next read must complete `within` from now, or the read side is shut down.
    pub fn read_within(&self, within: Duration) {
        self.set(READ, within);
    }

    /// The reaper's clock: milliseconds since it started, advanced once a tick (no syscall).
    pub fn now_ms(&self) -> u64 {
        self.reaper.now_ms.load(Relaxed)
    }

    /// The next read must complete by `at_ms` on the reaper's clock ([`Deadline::now_ms`]), or the read
    /// side is shut down: a deadline for a whole answer, over however many reads it takes.
    pub fn read_until(&self, at_ms: u64) {
        self.slot.at_ms.store(at_ms, Relaxed);
        self.slot.kind.store(READ, Relaxed);
    }

    /// The next write must complete `within` from now, or the socket is shut down.
    pub fn write_within(&self, within: Duration) {
        self.set(WRITE, within);
    }

    /// No deadline until the next `*_within`.
    pub fn clear(&self) {
        self.slot.kind.store(NONE, Relaxed);
    }

    /// Whether a deadline expired (the socket was shut down because of it).
    pub fn fired(&self) -> bool {
        self.slot.fired.load(Relaxed)
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        lock(&self.reaper.slots).remove(&self.id);
    }
}
