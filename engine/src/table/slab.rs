//! Where entry blocks live: size classes in 256 KiB chunks of the slab's own, the system allocator only
//! for blocks over [`MAX_CLASSED`]; memory that empties goes back to the operating system.
//!
//! Why not glibc: its chunks carry an 8-byte header and come in 16-byte steps, so a 130-byte entry (16-byte
//! key, 100-byte value) costs 144 bytes; here it costs 130. For a million such keys that is 12 MB, a tenth
//! of what a key costs Redis (benches/results, `memory`). And glibc cannot give back a page that one small
//! allocation still holds: with the table's slot arrays spread among freed values, a node that shrank
//! kept most of its peak. (The slot arrays stay with glibc: among values they pinned pages, among
//! themselves they pack well, and in the slab each of their many sizes kept a partly used chunk.) Classes: 2-byte steps up to 512 bytes, 16-byte steps up to 4,608, 256-byte steps
//! up to [`MAX_CLASSED`] (at most 2%, 3% and 6% rounding); larger blocks come from the system allocator,
//! which the engine's memory thread trims (`malloc_trim`) after large frees.
//!
//! ## Chunks
//!
//! A chunk is mapped on its own (`mmap`), aligned to its size, so the chunk of any block is the block's
//! address with the low bits cleared. Its first 64 bytes are its header: its class, how many of its blocks
//! are live, its own free list and its never-used tail. A class keeps one *current* chunk that new blocks
//! come from, and a list of the other chunks that have free blocks. Everything in a header but the
//! evacuation mark is read and written under its class's lock (held for a pop or a push).
//!
//! - **A chunk whose last block is released is unmapped at once** (`munmap`; the class's current chunk
//!   stays until the engine's memory thread finds it empty: [`unmap_idle_current`]), so deletes give
//!   memory back to the system within the time it takes the epoch collector to release what they
//!   unlinked. There is no per-thread cache in front of the lock: a cached block would
//!   keep its chunk mapped.
//! - **Half-empty chunks are evacuated** when the waste is worth it ([`plan_evacuation`]: at least
//!   [`EVACUATE_IGNORE_BYTES`] and [`EVACUATE_THRESHOLD_PERCENT`] of the chunks' bytes): their chunks are
//!   marked, taken off their class's list (no new block lands there), and the table moves the live blocks it
//!   finds in them (`Table::compact`: copy, swap the slot word under the shard lock, retire the old block).
//!   The last release unmaps them. Chunks still holding blocks after a pass go back on their list.
//!
//! Under loom a released block is marked, not freed: the models check that nothing reads a block after
//! its release ([`is_released`]).

use super::sync::{lock, Mutex};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Small blocks are rounded up to a multiple of this (also their alignment; a table whose blocks carry an
/// atomic clock asks for multiples of 4, so its blocks are 4-aligned).
pub(crate) const GRAIN: usize = 2;
/// The largest block of the finest classes (2-byte steps).
const MAX_SMALL: usize = 512;
/// The largest block of the 16-byte steps.
const MAX_MEDIUM: usize = 4608;
/// The largest block a size class holds (then 256-byte steps).
pub(crate) const MAX_CLASSED: usize = 32 << 10;
/// A chunk's size and alignment: 64 pages.
const CHUNK: usize = 256 << 10;
/// The chunk header's room at the start of each chunk; blocks follow it.
const HEADER: usize = 64;
const CLASSES: usize = MAX_SMALL / GRAIN + (MAX_MEDIUM - MAX_SMALL) / 16 + (MAX_CLASSED - MAX_MEDIUM) / 256;
/// Alignment of large blocks.
const LARGE_ALIGN: usize = 8;
/// Waste (bytes of chunks not holding live blocks) under which no chunk is evacuated, like Redis's
/// `active-defrag-ignore-bytes`.
pub(crate) const EVACUATE_IGNORE_BYTES: u64 = 8 << 20;
/// Waste, as a share of the chunks' bytes, under which no chunk is evacuated (Redis's
/// `active-defrag-threshold-lower`).
pub(crate) const EVACUATE_THRESHOLD_PERCENT: u64 = 10;

/// Free blocks a chunk that was full needs before it is listed for allocation again (fewer if it holds
/// few blocks). Under overwrites, releases land in random chunks: listing a chunk at its first free block
/// made the next allocations hop from chunk to chunk, one block each (list surgery on 40% of them);
/// eight idle blocks of a chunk of thousands cost nothing.
const LIST_AT: usize = 8;

/// A chunk's header, at its start.
#[repr(C)]
struct Chunk {
    class: usize,
    /// Blocks handed out and not yet released.
    live: usize,
    /// Listed for allocation again once this many of its blocks are free (see [`LIST_AT`]).
    list_at: usize,
    /// Released blocks, each holding the next one's address in its first bytes.
    free: *mut u8,
    /// The never-used tail: `bump..end`.
    bump: *mut u8,
    /// The class's list this chunk is on (its free list, or its evacuating list when marked).
    prev: *mut Chunk,
    next: *mut Chunk,
    listed: bool,
    /// Marked for evacuation: the compactor moves its blocks (read without the lock).
    evacuating: AtomicBool,
}

const _: () = assert!(std::mem::size_of::<Chunk>() <= HEADER);

impl Chunk {
    /// Blocks it holds.
    fn capacity(&self) -> usize {
        capacity(size_of_class(self.class))
    }
}

struct Class {
    /// Where new blocks come from (null before the first).
    current: *mut Chunk,
    /// Chunks with free blocks, besides `current`; most recently freed into first.
    list: *mut Chunk,
    /// Chunks marked for evacuation that still hold live blocks.
    evacuating: *mut Chunk,
    /// Chunks mapped for this class, and live blocks in them.
    chunks: usize,
    live: usize,
}

// SAFETY: the pointers are into chunks this module owns; they are only used under the class's lock.
#[allow(unsafe_code)]
unsafe impl Send for Class {}

const fn empty_class() -> Class {
    Class {
        current: std::ptr::null_mut(),
        list: std::ptr::null_mut(),
        evacuating: std::ptr::null_mut(),
        chunks: 0,
        live: 0,
    }
}

#[cfg(not(loom))]
fn classes() -> &'static [Mutex<Class>; CLASSES] {
    static CLASSES_: [Mutex<Class>; CLASSES] = [const { Mutex::new(empty_class()) }; CLASSES];
    &CLASSES_
}

#[cfg(loom)]
loom::lazy_static! {
    static ref CLASSES_: [Mutex<Class>; CLASSES] = std::array::from_fn(|_| Mutex::new(empty_class()));
    static ref RELEASED: Mutex<std::collections::HashSet<usize>> = Mutex::new(std::collections::HashSet::new());
}

#[cfg(loom)]
fn classes() -> &'static [Mutex<Class>; CLASSES] {
    &CLASSES_
}

/// Bytes of chunks mapped, process-wide ([`mapped_bytes`]).
static MAPPED: AtomicU64 = AtomicU64::new(0);
/// Bytes of large blocks released since the last `malloc_trim`.
static LARGE_FREED: AtomicU64 = AtomicU64::new(0);

/// Bytes of chunks the slab has mapped, process-wide (`/metrics`).
pub(crate) fn mapped_bytes() -> u64 {
    MAPPED.load(Ordering::Relaxed)
}

/// What a block of `size` bytes costs: its class, or the system allocator's chunk (glibc: 8 bytes of
/// header, 16-byte steps, pages from 128 KiB on).
pub(crate) fn cost(size: usize) -> usize {
    if size <= MAX_CLASSED {
        class_of(size).1
    } else if size >= 128 << 10 {
        (size + 16).next_multiple_of(4096)
    } else {
        (size + 8).next_multiple_of(16)
    }
}

/// The class of a block of `size` bytes (at most [`MAX_CLASSED`]): its index and its blocks' size.
fn class_of(size: usize) -> (usize, usize) {
    if size <= MAX_SMALL {
        let s = size.next_multiple_of(GRAIN).max(8);
        (s / GRAIN - 1, s)
    } else if size <= MAX_MEDIUM {
        let s = size.next_multiple_of(16);
        (MAX_SMALL / GRAIN + (s - MAX_SMALL) / 16 - 1, s)
    } else {
        let s = size.next_multiple_of(256);
        (MAX_SMALL / GRAIN + (MAX_MEDIUM - MAX_SMALL) / 16 + (s - MAX_MEDIUM) / 256 - 1, s)
    }
}

/// The block size of class `index` (the inverse of [`class_of`]).
fn size_of_class(index: usize) -> usize {
    let small = MAX_SMALL / GRAIN;
    let medium = (MAX_MEDIUM - MAX_SMALL) / 16;
    if index < small {
        (index + 1) * GRAIN
    } else if index < small + medium {
        MAX_SMALL + (index - small + 1) * 16
    } else {
        MAX_MEDIUM + (index - small - medium + 1) * 256
    }
}

/// Blocks a chunk of class size `size` holds.
fn capacity(size: usize) -> usize {
    (CHUNK - HEADER) / size
}

/// A block of at least `size` bytes, aligned to [`GRAIN`] (to 8 when large). Aborts, as the global
/// allocator does, when the system has no memory.
#[allow(unsafe_code)]
pub(crate) fn allocate(size: usize) -> *mut u8 {
    // Under loom every block is its own allocation, never freed (a model runs thousands of times; chunks
    // would pile up); under `--cfg otkv_memcheck` (benches/memcheck.sh) every block is its own allocation,
    // freed on release, so valgrind sees each block's life.
    if cfg!(loom) || cfg!(otkv_memcheck) || size > MAX_CLASSED {
        let layout = large_layout(size);
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        return p;
    }
    let (index, size) = class_of(size);
    let mut c = lock(&classes()[index]);
    // SAFETY: every chunk pointer in a class is a mapped chunk of that class (only `release` unmaps, after
    // unlinking it under this lock); its header is ours under the lock.
    unsafe {
        let mut chunk = c.current;
        if chunk.is_null()
            || ((*chunk).free.is_null() && (*chunk).bump as usize + size > chunk as usize + CHUNK)
        {
            chunk = c.list;
            if chunk.is_null() {
                chunk = map_chunk(index);
                c.chunks += 1;
            } else {
                unlink(&mut c, chunk);
            }
            c.current = chunk;
        }
        let h = &mut *chunk;
        let p = if h.free.is_null() {
            let p = h.bump;
            h.bump = p.add(size);
            p
        } else {
            let p = h.free;
            // The first bytes of a free block hold the next free block's address (unaligned: blocks are
            // only GRAIN-aligned).
            h.free = p.cast::<*mut u8>().read_unaligned();
            p
        };
        h.live += 1;
        c.live += 1;
        p
    }
}

/// Gives back a block from [`allocate`] of `size` bytes (the same `size`).
///
/// # Safety
/// `ptr` came from `allocate(size)` and nothing uses it any more.
#[allow(unsafe_code)]
pub(crate) unsafe fn release(ptr: *mut u8, size: usize) {
    #[cfg(loom)]
    {
        mark_released(ptr);
        let _ = size;
    }
    #[cfg(not(loom))]
    {
        if cfg!(otkv_memcheck) || size > MAX_CLASSED {
            // SAFETY: allocated with this layout (the caller's contract).
            unsafe { std::alloc::dealloc(ptr, large_layout(size)) };
            LARGE_FREED.fetch_add(cost(size) as u64, Ordering::Relaxed);
            return;
        }
        let (index, _) = class_of(size);
        let mut c = lock(&classes()[index]);
        // SAFETY: the caller's contract; under the class's lock.
        let empty = unsafe { release_locked(&mut c, index, ptr) };
        drop(c);
        if let Some(chunk) = empty {
            // SAFETY: unlinked from its class, no live block: nothing can reach it any more.
            unsafe { unmap_chunk(chunk) };
        }
    }
}

/// [`release`] for many blocks at once, as the epoch collector releases a bag: a class's lock is held
/// across a run of blocks of that class (in a workload of one value size, one lock for the whole bag).
/// Not sorted: sorting a bag cost more than the locks it saved.
///
/// # Safety
/// Each `ptr` came from `allocate(size)`, appears once, and nothing uses it any more.
#[allow(unsafe_code)]
pub(crate) unsafe fn release_blocks(blocks: &[(*mut u8, usize)]) {
    if cfg!(loom) || cfg!(otkv_memcheck) {
        for &(ptr, size) in blocks {
            // SAFETY: the caller's contract.
            unsafe { release(ptr, size) };
        }
        return;
    }
    let mut i = 0;
    while i < blocks.len() {
        let (ptr, size) = blocks[i];
        if size > MAX_CLASSED {
            // SAFETY: the caller's contract.
            unsafe { release(ptr, size) };
            i += 1;
            continue;
        }
        let (index, _) = class_of(size);
        let mut empty = [std::ptr::null_mut(); 8];
        let mut emptied = 0;
        let mut c = lock(&classes()[index]);
        while i < blocks.len()
            && blocks[i].1 <= MAX_CLASSED
            && class_of(blocks[i].1).0 == index
            && emptied < 8
        {
            // SAFETY: the caller's contract; under the class's lock.
            if let Some(chunk) = unsafe { release_locked(&mut c, index, blocks[i].0) } {
                empty[emptied] = chunk;
                emptied += 1;
            }
            i += 1;
        }
        drop(c);
        for &chunk in &empty[..emptied] {
            // SAFETY: unlinked from its class, no live block: nothing can reach it any more.
            unsafe { unmap_chunk(chunk) };
        }
    }
}

/// Puts a released block back in its chunk, under its class's lock; returns the chunk when it emptied
/// (unlinked, to be unmapped once the lock is released).
///
/// # Safety
/// `ptr` is a live block of class `index` that nothing uses any more; `c` is that class, locked.
#[allow(unsafe_code)]
unsafe fn release_locked(c: &mut Class, index: usize, ptr: *mut u8) -> Option<*mut Chunk> {
    let chunk = (ptr as usize & !(CHUNK - 1)) as *mut Chunk;
    // SAFETY: the block is live, so its chunk is mapped; its header is ours under the class's lock.
    unsafe {
        let h = &mut *chunk;
        debug_assert_eq!(h.class, index, "a block released to the wrong class");
        ptr.cast::<*mut u8>().write_unaligned(h.free);
        h.free = ptr;
        h.live -= 1;
        c.live -= 1;
        if h.live == 0 && chunk != c.current {
            if h.listed {
                unlink(c, chunk);
            }
            c.chunks -= 1;
            Some(chunk)
        } else {
            if !h.listed && chunk != c.current && h.live + h.list_at <= h.capacity() {
                push_front(c, chunk);
            }
            None
        }
    }
}

/// Maps a new chunk of class `index`, its header written.
#[allow(unsafe_code)]
fn map_chunk(index: usize) -> *mut Chunk {
    let chunk = map_aligned();
    // SAFETY: a fresh mapping of CHUNK bytes, ours alone.
    unsafe {
        chunk.write(Chunk {
            class: index,
            live: 0,
            list_at: (capacity(size_of_class(index)) / 4).clamp(1, LIST_AT),
            free: std::ptr::null_mut(),
            bump: chunk.cast::<u8>().add(HEADER),
            prev: std::ptr::null_mut(),
            next: std::ptr::null_mut(),
            listed: false,
            evacuating: AtomicBool::new(false),
        });
    }
    MAPPED.fetch_add(CHUNK as u64, Ordering::Relaxed);
    chunk
}

/// `CHUNK` bytes aligned to `CHUNK`: twice as much mapped, the rest unmapped again.
#[cfg(not(loom))]
#[allow(unsafe_code)]
fn map_aligned() -> *mut Chunk {
    let span = 2 * CHUNK;
    // SAFETY: an anonymous private mapping; no memory of ours is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::alloc::handle_alloc_error(chunk_layout());
    }
    let start = p as usize;
    let aligned = start.next_multiple_of(CHUNK);
    // SAFETY: both ranges lie inside the mapping just made and are not used.
    unsafe {
        if aligned > start {
            libc::munmap(p, aligned - start);
        }
        let tail = start + span - (aligned + CHUNK);
        if tail > 0 {
            libc::munmap((aligned + CHUNK) as *mut libc::c_void, tail);
        }
    }
    aligned as *mut Chunk
}

#[cfg(loom)]
fn map_aligned() -> *mut Chunk {
    unreachable!("under loom blocks are allocated one by one")
}

/// Unmaps an empty chunk.
///
/// # Safety
/// `chunk` is mapped, in no list, and no block of it is live.
#[allow(unsafe_code)]
#[cfg_attr(loom, allow(dead_code, reason = "under loom no chunk is mapped"))]
unsafe fn unmap_chunk(chunk: *mut Chunk) {
    #[cfg(not(loom))]
    // SAFETY: the caller's contract; `map_aligned` mapped exactly these CHUNK bytes.
    unsafe {
        libc::munmap(chunk.cast(), CHUNK);
    }
    #[cfg(loom)]
    let _ = chunk;
    MAPPED.fetch_sub(CHUNK as u64, Ordering::Relaxed);
}

/// The head of the list `chunk` belongs on: the evacuating list when it is marked, else the free list.
///
/// # Safety
/// `chunk` is a mapped chunk of the class.
#[allow(unsafe_code)]
unsafe fn list_of(c: &mut Class, chunk: *mut Chunk) -> &mut *mut Chunk {
    // SAFETY: the caller's contract.
    if unsafe { (*chunk).evacuating.load(Ordering::Relaxed) } {
        &mut c.evacuating
    } else {
        &mut c.list
    }
}

/// Puts `chunk` first on its class's list (see [`list_of`]).
///
/// # Safety
/// Under the class's lock; `chunk` is a mapped chunk of the class, not listed.
#[allow(unsafe_code)]
unsafe fn push_front(c: &mut Class, chunk: *mut Chunk) {
    // SAFETY: the caller's contract.
    unsafe {
        let head = list_of(c, chunk);
        (*chunk).prev = std::ptr::null_mut();
        (*chunk).next = *head;
        if !head.is_null() {
            (**head).prev = chunk;
        }
        (*chunk).listed = true;
        *head = chunk;
    }
}

/// Takes `chunk` off its class's list (see [`list_of`]).
///
/// # Safety
/// Under the class's lock; `chunk` is listed there.
#[allow(unsafe_code)]
unsafe fn unlink(c: &mut Class, chunk: *mut Chunk) {
    // SAFETY: the caller's contract: the neighbours are listed chunks of the class.
    unsafe {
        let (prev, next) = ((*chunk).prev, (*chunk).next);
        if prev.is_null() {
            *list_of(c, chunk) = next;
        } else {
            (*prev).next = next;
        }
        if !next.is_null() {
            (*next).prev = prev;
        }
        (*chunk).listed = false;
        (*chunk).prev = std::ptr::null_mut();
        (*chunk).next = std::ptr::null_mut();
    }
}

/// Marks for evacuation the chunks that are at most half full, when the free room in chunks that could
/// be emptied (every listed chunk: never a class's current one, whose untouched tail costs no memory) is
/// over both thresholds, and only in classes where at least two chunks qualify (so moving their blocks
/// frees at least one). Returns how many it marked. The table then moves their blocks
/// (`Table::compact`) and [`end_evacuation`] puts back what is left.
#[allow(unsafe_code)]
pub(crate) fn plan_evacuation() -> usize {
    let mut reclaimable = 0;
    for (index, class) in classes().iter().enumerate() {
        let size = size_of_class(index);
        let c = lock(class);
        let mut chunk = c.list;
        // SAFETY: listed chunks are mapped chunks of this class; under its lock.
        unsafe {
            while !chunk.is_null() {
                reclaimable += ((capacity(size) - (*chunk).live) * size) as u64;
                chunk = (*chunk).next;
            }
        }
    }
    let mapped = mapped_bytes();
    if reclaimable < EVACUATE_IGNORE_BYTES || reclaimable * 100 < mapped * EVACUATE_THRESHOLD_PERCENT {
        return 0;
    }
    let mut marked = 0;
    for (index, class) in classes().iter().enumerate() {
        let half = capacity(size_of_class(index)) / 2;
        let mut c = lock(class);
        // SAFETY: listed chunks are mapped chunks of this class; under its lock.
        unsafe {
            let mut sparse = 0;
            let mut chunk = c.list;
            while !chunk.is_null() {
                sparse += usize::from((*chunk).live <= half);
                chunk = (*chunk).next;
            }
            if sparse < 2 {
                continue;
            }
            let mut chunk = c.list;
            while !chunk.is_null() {
                let next = (*chunk).next;
                if (*chunk).live <= half {
                    unlink(&mut c, chunk);
                    (*chunk).evacuating.store(true, Ordering::Relaxed);
                    push_front(&mut c, chunk);
                    marked += 1;
                }
                chunk = next;
            }
        }
    }
    marked
}

/// Whether the block at `ptr` of `size` bytes lies in a chunk marked for evacuation.
///
/// # Safety
/// `ptr` is a live block of `size` bytes (so its chunk stays mapped while the caller holds it).
#[allow(unsafe_code)]
pub(crate) unsafe fn is_evacuating(ptr: *const u8, size: usize) -> bool {
    if cfg!(loom) || cfg!(otkv_memcheck) || size > MAX_CLASSED {
        return false;
    }
    let chunk = (ptr as usize & !(CHUNK - 1)) as *const Chunk;
    // SAFETY: the caller's contract; the flag is atomic.
    unsafe { (*chunk).evacuating.load(Ordering::Relaxed) }
}

/// Ends an evacuation: the marked chunks that still hold blocks (retired ones the collector has not
/// released yet, or another table's) are unmarked and listed for allocation again.
#[allow(unsafe_code)]
pub(crate) fn end_evacuation() {
    for class in classes() {
        let mut c = lock(class);
        // SAFETY: chunks on the evacuating list are mapped chunks of this class; under its lock.
        unsafe {
            while !c.evacuating.is_null() {
                let chunk = c.evacuating;
                unlink(&mut c, chunk);
                (*chunk).evacuating.store(false, Ordering::Relaxed);
                push_front(&mut c, chunk);
            }
        }
    }
}

/// Unmaps every class's current chunk that holds no live block (the memory thread's tick: a class
/// whose blocks are all gone keeps nothing mapped, at the cost of mapping a chunk again on its next
/// allocation).
#[allow(unsafe_code)]
pub(crate) fn unmap_idle_current() {
    for class in classes() {
        let mut c = lock(class);
        let chunk = c.current;
        // SAFETY: the current chunk is mapped; its header is ours under the lock.
        if !chunk.is_null() && unsafe { (*chunk).live } == 0 {
            c.current = std::ptr::null_mut();
            c.chunks -= 1;
            drop(c);
            // SAFETY: no live block, in no list, and no longer the current chunk: unreachable.
            unsafe { unmap_chunk(chunk) };
        }
    }
}

/// Whether the system allocator has had enough large blocks released since the last trim that trimming
/// is worth a pass over its heaps; resets the count when it says yes.
pub(crate) fn take_trim_due(threshold: u64) -> bool {
    if LARGE_FREED.load(Ordering::Relaxed) < threshold {
        return false;
    }
    LARGE_FREED.store(0, Ordering::Relaxed);
    true
}

/// Whether the block (or slot array) at `ptr` was released (loom models only: memory is never freed
/// there, only marked).
#[cfg(loom)]
pub(crate) fn is_released(ptr: *const u8) -> bool {
    lock(&RELEASED).contains(&(ptr as usize))
}

/// Marks `ptr` released (loom models only).
#[cfg(loom)]
pub(crate) fn mark_released(ptr: *const u8) {
    lock(&RELEASED).insert(ptr as usize);
}

fn large_layout(size: usize) -> std::alloc::Layout {
    // A size under isize::MAX (the engine caps values at 256 MiB) with a power-of-two alignment.
    std::alloc::Layout::from_size_align(size, LARGE_ALIGN).unwrap_or(std::alloc::Layout::new::<u64>())
}

#[cfg_attr(loom, allow(dead_code, reason = "under loom no chunk is mapped"))]
fn chunk_layout() -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(CHUNK, CHUNK).unwrap_or(std::alloc::Layout::new::<u64>())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_distinct_recycled_and_costed() {
        let a = allocate(130);
        let b = allocate(130);
        assert_ne!(a, b);
        assert_eq!(a as usize % GRAIN, 0);
        // SAFETY: fresh blocks of 130 bytes.
        unsafe {
            std::ptr::write_bytes(a, 0xAA, 130);
            std::ptr::write_bytes(b, 0xBB, 130);
            release(a, 130);
        }
        // Another thread may take it first; when it comes back, it is a whole block again.
        let c = allocate(129);
        // SAFETY: a fresh block of 129 bytes (class 130).
        unsafe {
            std::ptr::write_bytes(c, 0xCC, 130);
            release(b, 130);
            release(c, 129);
        }
        assert_eq!(cost(130), 130);
        assert_eq!(cost(131), 132);
        assert_eq!(cost(5), 8);
        assert_eq!(cost(600), 608);
        assert_eq!(cost(4609), 4864);
        assert_eq!(cost(40_000), 40_016);
        for size in [8, 512, 514, 4608, 4610, MAX_CLASSED] {
            let (index, s) = class_of(size);
            assert_eq!(size_of_class(index), s, "{size}");
        }
        assert_eq!(class_of(MAX_CLASSED).0, CLASSES - 1);
        let big = allocate(100_000);
        // SAFETY: a fresh large block.
        unsafe {
            std::ptr::write_bytes(big, 1, 100_000);
            release(big, 100_000);
        }
    }

    /// A class of its own (no other test allocates 262-byte blocks): filling chunks maps them, releasing
    /// every block unmaps all but the current one.
    #[test]
    #[allow(unsafe_code)]
    fn emptied_chunks_are_unmapped() {
        let size = 262;
        let class = &classes()[class_of(size).0];
        let blocks: Vec<*mut u8> = (0..capacity(size) * 5).map(|_| allocate(size)).collect();
        assert!(lock(class).chunks >= 5);
        for &p in &blocks {
            // SAFETY: blocks of `size` allocated above, released once.
            unsafe { release(p, size) };
        }
        let c = lock(class);
        assert_eq!(c.live, 0);
        assert_eq!(c.chunks, 1, "only the current chunk stays mapped");
    }
}
