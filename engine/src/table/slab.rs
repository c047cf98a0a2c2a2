//! Where entry blocks live: size classes in 2-byte steps for small blocks, the system allocator for the
//! rest.
//!
//! Why not glibc for everything: its chunks carry an 8-byte header and come in 16-byte steps, so a
//! 130-byte entry (16-byte key, 100-byte value) costs 144 bytes; here it costs 130. For a million such
//! keys that is 12 MB, a tenth of what a key costs Redis (measured side by side, README's Benchmarks,
//! with glibc, mimalloc and this slab). Blocks of up to [`MAX_SMALL`] bytes come from 256 KiB chunks, one
//! size class per chunk, handed out front to back and recycled through a free list per class; larger
//! blocks (where 8 bytes of header are under 2%) come from the system allocator.
//!
//! Each class has its own lock, held for a pop or a push: writers of different sizes never meet, and the
//! epoch collector's releases (any thread) take the same short lock. In front of it each thread keeps up
//! to 64 released blocks per class that its next allocations take without a lock (an overwrite releases
//! a block of the size it allocates). Chunks are never returned: memory freed by deletes is reused by
//! later writes of the same class, as in memcached's slabs.
//!
//! Under loom a released block is marked, not freed: the models check that nothing reads a block after
//! its release ([`is_released`]).

use super::sync::{lock, Mutex};

/// Small blocks are rounded up to a multiple of this (also their alignment; a table whose blocks carry an
/// atomic clock asks for multiples of 4, so its blocks are 4-aligned).
pub(crate) const GRAIN: usize = 2;
/// The largest block a size class holds.
pub(crate) const MAX_SMALL: usize = 512;
/// Small blocks come from chunks of this size: 256 KiB less room for the system allocator's header, so a
/// chunk (mapped on its own, being over glibc's mmap threshold) takes exactly 64 pages, not 65.
const CHUNK: usize = (256 << 10) - 64;
const CLASSES: usize = MAX_SMALL / GRAIN;
/// Alignment of large blocks and of chunks.
const LARGE_ALIGN: usize = 8;

struct Class {
    free: *mut u8,
    bump: *mut u8,
    end: *mut u8,
}

// SAFETY: the pointers are into chunks this module owns; they are only used under the class's lock.
#[allow(unsafe_code)]
unsafe impl Send for Class {}

#[cfg(not(loom))]
fn classes() -> &'static [Mutex<Class>; CLASSES] {
    static CLASSES_: [Mutex<Class>; CLASSES] = [const {
        Mutex::new(Class {
            free: std::ptr::null_mut(),
            bump: std::ptr::null_mut(),
            end: std::ptr::null_mut(),
        })
    }; CLASSES];
    &CLASSES_
}

#[cfg(loom)]
loom::lazy_static! {
    static ref CLASSES_: [Mutex<Class>; CLASSES] = new_classes();
    static ref RELEASED: Mutex<std::collections::HashSet<usize>> = Mutex::new(std::collections::HashSet::new());
}

#[cfg(loom)]
fn classes() -> &'static [Mutex<Class>; CLASSES] {
    &CLASSES_
}

#[cfg(loom)]
fn new_classes() -> [Mutex<Class>; CLASSES] {
    std::array::from_fn(|_| {
        Mutex::new(Class {
            free: std::ptr::null_mut(),
            bump: std::ptr::null_mut(),
            end: std::ptr::null_mut(),
        })
    })
}

/// What a block of `size` bytes costs: its class, or the system allocator's chunk (glibc: 8 bytes of
/// header, 16-byte steps, pages from 128 KiB on).
pub(crate) fn cost(size: usize) -> usize {
    if size <= MAX_SMALL {
        size.next_multiple_of(GRAIN).max(8)
    } else if size >= 128 << 10 {
        (size + 16).next_multiple_of(4096)
    } else {
        (size + 8).next_multiple_of(16)
    }
}

/// A block of at least `size` bytes, aligned to [`GRAIN`] (to 8 when large). Aborts, as the global
/// allocator does, when the system has no memory.
#[allow(unsafe_code)]
pub(crate) fn allocate(size: usize) -> *mut u8 {
    // Under loom every block is its own allocation, never freed (a model runs thousands of times; chunks
    // would pile up); under `--cfg otkv_memcheck` (benches/memcheck.sh) every block is its own allocation,
    // freed on release, so valgrind sees each block's life.
    if cfg!(loom) || cfg!(otkv_memcheck) || size > MAX_SMALL {
        let layout = large_layout(size);
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        return p;
    }
    let size = size.next_multiple_of(GRAIN).max(8);
    #[cfg(not(loom))]
    if let Some(p) = CACHE.with(|cache| cache.pop(size / GRAIN - 1)) {
        return p;
    }
    let mut c = lock(&classes()[size / GRAIN - 1]);
    if !c.free.is_null() {
        let p = c.free;
        // SAFETY: a free block holds the next free block's address in its first bytes (written by
        // `release`, unaligned: blocks are only GRAIN-aligned).
        c.free = unsafe { p.cast::<*mut u8>().read_unaligned() };
        return p;
    }
    if (c.end as usize) - (c.bump as usize) < size {
        let layout = chunk_layout();
        // SAFETY: `layout` has a non-zero size. The chunk is never freed; its unused tail is abandoned.
        let chunk = unsafe { std::alloc::alloc(layout) };
        if chunk.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        c.bump = chunk;
        // SAFETY: one past the end of the chunk just allocated.
        c.end = unsafe { chunk.add(CHUNK) };
    }
    let p = c.bump;
    // SAFETY: `size` bytes fit before `end` (checked above).
    c.bump = unsafe { p.add(size) };
    p
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
        if cfg!(otkv_memcheck) || size > MAX_SMALL {
            // SAFETY: allocated with this layout (the caller's contract).
            unsafe { std::alloc::dealloc(ptr, large_layout(size)) };
            return;
        }
        let size = size.next_multiple_of(GRAIN).max(8);
        // SAFETY: the block is ours again (the caller's contract) and at least 8 bytes long.
        if CACHE.try_with(|cache| unsafe { cache.push(size / GRAIN - 1, ptr) }).unwrap_or(false) {
            return;
        }
        // SAFETY: as above.
        unsafe { push_global(size / GRAIN - 1, ptr) };
    }
}

/// Puts a free block on its class's shared list.
///
/// # Safety
/// `ptr` is a free block of `class`, at least 8 bytes long, used by nothing.
#[cfg(not(loom))]
#[allow(unsafe_code)]
unsafe fn push_global(class: usize, ptr: *mut u8) {
    let mut c = lock(&classes()[class]);
    // SAFETY: the caller's contract; the first bytes of a free block hold the next free one's address.
    unsafe { ptr.cast::<*mut u8>().write_unaligned(c.free) };
    c.free = ptr;
}

/// Blocks a thread keeps of each class before giving them back to the shared list.
#[cfg(not(loom))]
const CACHED: u16 = 64;

/// A thread's released blocks, reused by its own next allocations without taking a class's lock: a
/// write of a key usually releases (through the epoch collector, on the writer's thread) a block of the
/// size it allocates. Per class, an intrusive list of at most [`CACHED`] blocks; given back when the
/// thread ends.
#[cfg(not(loom))]
struct Cache {
    heads: [std::cell::Cell<*mut u8>; CLASSES],
    counts: [std::cell::Cell<u16>; CLASSES],
}

#[cfg(not(loom))]
#[allow(unsafe_code)]
impl Cache {
    fn pop(&self, class: usize) -> Option<*mut u8> {
        let p = self.heads[class].get();
        if p.is_null() {
            return None;
        }
        // SAFETY: a cached block holds the next cached block's address (written by `push`).
        self.heads[class].set(unsafe { p.cast::<*mut u8>().read_unaligned() });
        self.counts[class].set(self.counts[class].get() - 1);
        Some(p)
    }

    /// Keeps `ptr` if there is room; false when the caller must give it back to the shared list.
    ///
    /// # Safety
    /// `ptr` is a free block of `class`, at least 8 bytes long, used by nothing.
    unsafe fn push(&self, class: usize, ptr: *mut u8) -> bool {
        let count = self.counts[class].get();
        if count >= CACHED {
            return false;
        }
        self.counts[class].set(count + 1);
        // SAFETY: the caller's contract.
        unsafe { ptr.cast::<*mut u8>().write_unaligned(self.heads[class].get()) };
        self.heads[class].set(ptr);
        true
    }
}

#[cfg(not(loom))]
#[allow(unsafe_code)]
impl Drop for Cache {
    fn drop(&mut self) {
        for class in 0..CLASSES {
            while let Some(p) = self.pop(class) {
                // SAFETY: a free block of this class.
                unsafe { push_global(class, p) };
            }
        }
    }
}

#[cfg(not(loom))]
thread_local! {
    static CACHE: Cache = const {
        Cache {
            heads: [const { std::cell::Cell::new(std::ptr::null_mut()) }; CLASSES],
            counts: [const { std::cell::Cell::new(0) }; CLASSES],
        }
    };
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

fn chunk_layout() -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(CHUNK, LARGE_ALIGN).unwrap_or(std::alloc::Layout::new::<u64>())
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
        let big = allocate(100_000);
        // SAFETY: a fresh large block.
        unsafe {
            std::ptr::write_bytes(big, 1, 100_000);
            release(big, 100_000);
        }
    }
}
