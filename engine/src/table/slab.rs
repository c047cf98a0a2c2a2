//! Where entry blocks live: size classes in 4-byte steps for small blocks, the system allocator for the
//! rest.
//!
//! Why not glibc for everything: its chunks carry an 8-byte header and come in 16-byte steps, so a
//! 130-byte entry (16-byte key, 100-byte value) costs 144 bytes; here it costs 132. For a million such
//! keys that is 12 MB, a tenth of what a key costs Redis (measured side by side, README's Benchmarks,
//! with glibc, mimalloc and this slab). Blocks of up to [`MAX_SMALL`] bytes come from 256 KiB chunks, one
//! size class per chunk, handed out front to back and recycled through a free list per class; larger
//! blocks (where 8 bytes of header are under 2%) come from the system allocator.
//!
//! Each class has its own lock, held for a pop or a push: writers of different sizes never meet, and the
//! epoch collector's releases (any thread) take the same short lock. Chunks are never returned: memory
//! freed by deletes is reused by later writes of the same class, as in memcached's slabs.
//!
//! Under loom a released block is marked, not freed: the models check that nothing reads a block after
//! its release ([`is_released`]).

use super::sync::{lock, Mutex};

/// Small blocks are rounded up to a multiple of this (also their alignment).
pub(crate) const GRAIN: usize = 4;
/// The largest block a size class holds.
pub(crate) const MAX_SMALL: usize = 512;
/// Small blocks come from chunks of this size.
const CHUNK: usize = 256 << 10;
const CLASSES: usize = MAX_SMALL / GRAIN;
/// Alignment of large blocks (and of chunks, to the page).
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
    // would pile up).
    if cfg!(loom) || size > MAX_SMALL {
        let layout = large_layout(size);
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        return p;
    }
    let size = size.next_multiple_of(GRAIN).max(8);
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
        if size > MAX_SMALL {
            // SAFETY: allocated with this layout (the caller's contract).
            unsafe { std::alloc::dealloc(ptr, large_layout(size)) };
            return;
        }
        let size = size.next_multiple_of(GRAIN).max(8);
        let mut c = lock(&classes()[size / GRAIN - 1]);
        // SAFETY: the block is ours again and at least 8 bytes long.
        unsafe { ptr.cast::<*mut u8>().write_unaligned(c.free) };
        c.free = ptr;
    }
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
    std::alloc::Layout::from_size_align(CHUNK, 4096).unwrap_or(std::alloc::Layout::new::<u64>())
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
        // SAFETY: a fresh block of 129 bytes (class 132).
        unsafe {
            std::ptr::write_bytes(c, 0xCC, 132);
            release(b, 130);
            release(c, 129);
        }
        assert_eq!(cost(130), 132);
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
