//! The memory thread: what makes a memory engine's footprint follow its live data.
//!
//! Writers already give memory back as they go: a replaced or deleted entry is released once no reader
//! can see it (the table's epoch collector), and the table's slab unmaps a chunk as soon as its last block
//! is released (`table/slab.rs`). Three things would still strand memory, and this thread, one per memory
//! engine, running every [`TICK`] at the lowest CPU priority, takes care of them:
//!
//! 1. **Releases left with idle threads**: a worker that retired fewer entries than fill a bag and then
//!    went idle would keep them; [`Map::release_retired`] seals every thread's waiting releases and runs
//!    those no reader can see.
//! 2. **Half-empty chunks** (unless `EngineConfig::compaction` is off): deletes spread over many chunks leave each partly used, and a partly used
//!    chunk cannot be unmapped. When the waste passes its thresholds, [`Map::compact`] moves the live
//!    entries of the emptiest chunks into fuller ones (paced: a pause every [`SHARDS_PER_PAUSE`] shards),
//!    and the emptied chunks are unmapped.
//! 3. **The system allocator's free memory**: values over 512 bytes, slot arrays and the process's
//!    other allocations come from glibc's malloc, which keeps freed memory in its heaps. After enough
//!    frees (the data shrank by [`TRIM_AFTER_BYTES`] since the last trim, at most once every
//!    [`TRIM_INTERVAL`]) `malloc_trim(0)` returns its free pages, as jemalloc's decay purging does for
//!    Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::map::Map;

/// How often the memory thread runs.
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// How far the data must shrink (by the budget's estimate, or in large blocks released) before the
/// system allocator is trimmed.
pub(crate) const TRIM_AFTER_BYTES: u64 = 1 << 20;
/// The least time between two trims (a trim walks the allocator's heaps under their locks).
pub(crate) const TRIM_INTERVAL: Duration = Duration::from_secs(1);
/// Shards the compactor moves between pauses of [`PAUSE`].
pub(crate) const SHARDS_PER_PAUSE: usize = 4;
const PAUSE: Duration = Duration::from_millis(1);
/// The least time between two compaction passes, and after a pass that moved nothing (the waste is in
/// memory no entry of this engine holds: another engine's in the same process, or retired blocks).
const COMPACT_INTERVAL: Duration = Duration::from_secs(1);
const COMPACT_BACKOFF: Duration = Duration::from_secs(30);

/// The memory thread's state between ticks.
#[derive(Debug)]
pub(crate) struct Reclaimer {
    last_trim: Instant,
    /// No compaction pass before this.
    compact_after: Instant,
    /// `EngineConfig::compaction`.
    compaction: bool,
    /// The highest estimate of the data seen since the last trim.
    peak_used: u64,
    /// Bytes moved by compaction since start (shared with the stats).
    compacted: std::sync::Arc<AtomicU64>,
}

impl Reclaimer {
    pub(crate) fn new(compacted: std::sync::Arc<AtomicU64>, compaction: bool) -> Reclaimer {
        Reclaimer {
            last_trim: Instant::now(),
            compact_after: Instant::now(),
            compaction,
            peak_used: 0,
            compacted,
        }
    }

    /// One tick: releases what idle threads retired, compacts when it is worth it, trims the system
    /// allocator when the data shrank. `used` is the budget's estimate of the data now.
    pub(crate) fn tick<M: Map>(&mut self, map: &M, used: u64) {
        map.release_retired();
        if self.compaction && Instant::now() >= self.compact_after {
            let mut shards = 0;
            let moved = map.compact(|| {
                shards += 1;
                if shards % SHARDS_PER_PAUSE == 0 {
                    std::thread::sleep(PAUSE);
                }
            });
            if let Some(moved) = moved {
                self.compacted.fetch_add(moved, Ordering::Relaxed);
                tracing::debug!(bytes = moved, "compacted");
                let wait = if moved == 0 { COMPACT_BACKOFF } else { COMPACT_INTERVAL };
                self.compact_after = Instant::now() + wait;
            }
        }
        self.peak_used = self.peak_used.max(used);
        let shrank = self.peak_used.saturating_sub(used) >= TRIM_AFTER_BYTES;
        if self.last_trim.elapsed() >= TRIM_INTERVAL
            && (crate::table::slab::take_trim_due(TRIM_AFTER_BYTES) || shrank)
        {
            trim_system_allocator();
            self.last_trim = Instant::now();
            self.peak_used = used;
        }
    }
}

/// Returns the system allocator's free pages to the system (glibc's `malloc_trim`; elsewhere nothing).
pub(crate) fn trim_system_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks and touches only its free memory.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bytes the system allocator has handed out and not had back (glibc's `mallinfo2`: in use in its heaps
/// plus its own mappings); 0 where it cannot say.
pub(crate) fn system_allocated_bytes() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        #[allow(unsafe_code)]
        let info = unsafe { libc::mallinfo2() };
        (info.uordblks + info.hblkhd) as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    0
}

/// Lowers the calling thread to nice 19: compaction and trimming wait for the cores that requests need.
pub(crate) fn lowest_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority reads no memory of ours; an error is only a return value.
    #[allow(unsafe_code)]
    unsafe {
        let _ = libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}
