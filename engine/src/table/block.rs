//! One entry, one block: key, value, version, expiry (only when set) and, in tables that keep them, the
//! access clock, in a single allocation from [`super::slab`].
//!
//! ```text
//! offset  size  field
//! 0       4     access clock (u32, atomic)     only in tables that keep clocks (allkeys-lru)
//! c+0     8     version (u64)
//! c+8     4     value length (u32); bit 31: the value expires
//! c+12    2     key length (u16)
//! c+14    8     expires_ms (u64)               only when bit 31 is set
//! ...           key bytes, then value bytes
//! ```
//!
//! `c` is 4 with a clock and 0 without. Multi-byte fields are little-endian and read unaligned (blocks are
//! 2-aligned, or 4-aligned with a clock: a clocked block's size is rounded up to a multiple of 4); a
//! 16-byte key with a 100-byte value and no expiry is a 130-byte block. A block is written once, before the table publishes it, and never changes after,
//! except its clock (relaxed stores, only under `allkeys-lru`); a write of the key makes a new block.

use super::slab;
// The clock is std's atomic even under loom: it lives in raw block memory (a loom atomic is an object, not
// four bytes), and it is a relaxed hint that no protocol depends on.
use crate::entry::Meta;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes before the key (without clock and expiry).
const HEADER: usize = 14;
const EXPIRES: u32 = 1 << 31;
/// The longest key a block holds.
pub(crate) const MAX_KEY: usize = u16::MAX as usize;
// The engine's own key limit must fit the 16-bit length field.
const _: () = assert!(crate::entry::MAX_KEY_BYTES <= MAX_KEY);
/// The longest value a block holds.
pub(crate) const MAX_VALUE: usize = (EXPIRES - 1) as usize;

/// Whether a table's blocks start with an access clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// 4 with a clock, 0 without.
    clock: usize,
}

impl Layout {
    pub(crate) fn new(with_clock: bool) -> Layout {
        Layout { clock: if with_clock { 4 } else { 0 } }
    }

    pub(crate) fn has_clock(self) -> bool {
        self.clock != 0
    }

    /// The size of a block for this key and value: with a clock, a multiple of 4, so that blocks of
    /// its size class lie 4-aligned and the clock can be atomic.
    pub(crate) fn size(self, key_len: usize, value_len: usize, expires: bool) -> usize {
        let size = HEADER + if expires { 8 } else { 0 } + key_len + value_len;
        if self.clock == 0 {
            size
        } else {
            (self.clock + size).next_multiple_of(4)
        }
    }

    /// Allocates and fills a block; returns it and its size. `key` and `value` must be within
    /// [`MAX_KEY`] and [`MAX_VALUE`] (the table checks).
    #[allow(unsafe_code)]
    pub(crate) fn write(self, meta: Meta, key: &[u8], value: &[u8], clock: u32) -> (*mut u8, usize) {
        let expires = meta.expires_ms != 0;
        let size = self.size(key.len(), value.len(), expires);
        let p = slab::allocate(size);
        let c = self.clock;
        let value_word = value.len() as u32 | if expires { EXPIRES } else { 0 };
        let key_at = c + HEADER + if expires { 8 } else { 0 };
        // SAFETY: `p` has `size` bytes: the fields below end at `key_at`, then key and value, exactly
        // `size` in all. Stores are unaligned (blocks are GRAIN-aligned); the clock is 4-aligned at 0.
        #[allow(clippy::cast_ptr_alignment, reason = "the clock is at offset 0 of a GRAIN-aligned block")]
        unsafe {
            if c != 0 {
                p.cast::<u32>().write(clock.to_le());
            }
            p.add(c).cast::<u64>().write_unaligned(meta.version.to_le());
            p.add(c + 8).cast::<u32>().write_unaligned(value_word.to_le());
            p.add(c + 12).cast::<u16>().write_unaligned((key.len() as u16).to_le());
            if expires {
                p.add(c + HEADER).cast::<u64>().write_unaligned(meta.expires_ms.to_le());
            }
            std::ptr::copy_nonoverlapping(key.as_ptr(), p.add(key_at), key.len());
            std::ptr::copy_nonoverlapping(value.as_ptr(), p.add(key_at + key.len()), value.len());
        }
        (p, size)
    }
}

/// A published block, readable while the guard it was read under lives (`'g`).
#[derive(Clone, Copy)]
pub(crate) struct BlockRef<'g> {
    ptr: *const u8,
    layout: Layout,
    _guard: std::marker::PhantomData<&'g ()>,
}

impl std::fmt::Debug for BlockRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockRef").field("key", &self.key()).field("meta", &self.meta()).finish()
    }
}

#[allow(unsafe_code)]
impl<'g> BlockRef<'g> {
    /// # Safety
    /// `ptr` is a block written by `layout.write`, published by the table and read under a guard that
    /// lives for `'g`, so it is not released before `'g` ends (`epoch.rs`).
    pub(crate) unsafe fn new(ptr: *const u8, layout: Layout) -> Self {
        BlockRef { ptr, layout, _guard: std::marker::PhantomData }
    }

    pub(crate) fn ptr(self) -> *const u8 {
        self.ptr
    }

    fn read<const N: usize>(self, at: usize) -> [u8; N] {
        #[cfg(loom)]
        assert!(!slab::is_released(self.ptr), "a block was read after its release");
        // SAFETY: `at + N` is within the header this block was written with (callers read fixed fields),
        // and the block is live for `'g` (`new`'s contract).
        unsafe { self.ptr.add(at).cast::<[u8; N]>().read_unaligned() }
    }

    fn value_word(self) -> u32 {
        u32::from_le_bytes(self.read(self.layout.clock + 8))
    }

    fn expires(self) -> bool {
        self.value_word() & EXPIRES != 0
    }

    fn key_len(self) -> usize {
        u16::from_le_bytes(self.read(self.layout.clock + 12)) as usize
    }

    fn value_len(self) -> usize {
        (self.value_word() & !EXPIRES) as usize
    }

    fn key_at(self) -> usize {
        self.layout.clock + HEADER + if self.expires() { 8 } else { 0 }
    }

    /// The version.
    pub(crate) fn version(self) -> u64 {
        u64::from_le_bytes(self.read(self.layout.clock))
    }

    /// When it expires (ms since the Unix epoch), 0 for never.
    pub(crate) fn expires_ms(self) -> u64 {
        if self.expires() {
            u64::from_le_bytes(self.read(self.layout.clock + HEADER))
        } else {
            0
        }
    }

    pub(crate) fn meta(self) -> Meta {
        Meta { version: self.version(), expires_ms: self.expires_ms() }
    }

    pub(crate) fn key(self) -> &'g [u8] {
        #[cfg(loom)]
        assert!(!slab::is_released(self.ptr), "a block was read after its release");
        // SAFETY: the key's bytes follow the header (`write`); live for `'g`.
        unsafe { std::slice::from_raw_parts(self.ptr.add(self.key_at()), self.key_len()) }
    }

    pub(crate) fn value(self) -> &'g [u8] {
        #[cfg(loom)]
        assert!(!slab::is_released(self.ptr), "a block was read after its release");
        // SAFETY: the value's bytes follow the key (`write`); live for `'g`.
        unsafe { std::slice::from_raw_parts(self.ptr.add(self.key_at() + self.key_len()), self.value_len()) }
    }

    /// Its size as allocated.
    pub(crate) fn size(self) -> usize {
        let word = self.value_word();
        self.layout.size(self.key_len(), (word & !EXPIRES) as usize, word & EXPIRES != 0)
    }

    /// Whether its key is `key`: short keys (most) compared a word at a time without a call to `memcmp`.
    #[inline]
    pub(crate) fn has_key(self, key: &[u8]) -> bool {
        let mine = self.key();
        if mine.len() != key.len() {
            return false;
        }
        let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
        match key.len() {
            // Two overlapping words cover 8..=16 bytes.
            8..=16 => word(mine, 0) == word(key, 0) && word(mine, key.len() - 8) == word(key, key.len() - 8),
            _ => mine == key,
        }
    }

    /// The access clock (tables with clocks only).
    fn clock(self) -> Option<&'g AtomicU32> {
        // SAFETY: a table with clocks writes one at offset 0 of every block, 4-aligned (slab's grain);
        // it is only ever accessed atomically.
        #[allow(clippy::cast_ptr_alignment, reason = "offset 0 of a GRAIN-aligned block")]
        self.layout.has_clock().then(|| unsafe { &*self.ptr.cast::<AtomicU32>() })
    }

    /// When it was last used (0: never, or no clock).
    pub(crate) fn last_used(self) -> u32 {
        self.clock().map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Marks it used at `now`: a store only when the stamp changes, so a hot key's line is not dirtied
    /// on every read.
    pub(crate) fn touch(self, now: u32) {
        if let Some(c) = self.clock() {
            if c.load(Ordering::Relaxed) != now {
                c.store(now, Ordering::Relaxed);
            }
        }
    }
}

/// Releases the block at `ptr` of `size` bytes (for [`super::epoch::Deferred`], which carries the size so
/// that releasing a block never reads it again: by then it is usually out of the cache).
///
/// # Safety
/// `ptr` is a block of `size` bytes ([`BlockRef::size`]), unlinked, and no reader can reach it.
#[allow(unsafe_code)]
pub(crate) unsafe fn release(ptr: *mut u8, size: usize) {
    // SAFETY: allocated by `slab::allocate(size)` in `Layout::write` (the caller's contract).
    unsafe { slab::release(ptr, size) };
}
