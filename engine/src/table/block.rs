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
//! 4-aligned, which is all the clock needs); a 16-byte key with a 100-byte value and no expiry is a
//! 130-byte block. A block is written once, before the table publishes it, and never changes after,
//! except its clock (relaxed stores, only under `allkeys-lru`); a write of the key makes a new block.

use super::slab;
use super::sync::{AtomicU32, Ordering};
use crate::entry::Meta;

/// Bytes before the key (without clock and expiry).
const HEADER: usize = 14;
const EXPIRES: u32 = 1 << 31;
/// The longest key a block holds.
pub(crate) const MAX_KEY: usize = u16::MAX as usize;
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

    /// The size of a block for this key and value.
    pub(crate) fn size(self, key_len: usize, value_len: usize, expires: bool) -> usize {
        self.clock + HEADER + if expires { 8 } else { 0 } + key_len + value_len
    }

    /// Allocates and fills a block; returns it and its size. `key` and `value` must be within
    /// [`MAX_KEY`] and [`MAX_VALUE`] (the table checks).
    #[allow(unsafe_code)]
    pub(crate) fn write(self, meta: Meta, key: &[u8], value: &[u8], clock: u32) -> (*mut u8, usize) {
        let expires = meta.expires_ms != 0;
        let size = self.size(key.len(), value.len(), expires);
        let p = slab::allocate(size);
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            // SAFETY: `p` has `size` bytes, which is exactly the sum of what is written here.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(at), bytes.len()) };
            at += bytes.len();
        };
        if self.has_clock() {
            put(&clock.to_le_bytes());
        }
        put(&meta.version.to_le_bytes());
        let value_len = value.len() as u32 | if expires { EXPIRES } else { 0 };
        put(&value_len.to_le_bytes());
        put(&(key.len() as u16).to_le_bytes());
        if expires {
            put(&meta.expires_ms.to_le_bytes());
        }
        put(key);
        put(value);
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
        self.layout.size(self.key_len(), self.value_len(), self.expires())
    }

    /// The access clock (tables with clocks only).
    fn clock(self) -> Option<&'g AtomicU32> {
        // SAFETY: a table with clocks writes one at offset 0 of every block, 4-aligned (slab's grain);
        // it is only ever accessed atomically.
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

/// Releases the block at `ptr` (for [`super::epoch::Deferred`]): `arg` is the table's clock offset.
///
/// # Safety
/// `ptr` is a block of a table whose layout has clock offset `arg`, unlinked, and no reader can reach it.
#[allow(unsafe_code)]
pub(crate) unsafe fn release(ptr: *mut u8, arg: usize) {
    let layout = Layout { clock: arg };
    // SAFETY: the block is still allocated (not yet released); nobody else reads it now.
    let size = unsafe { BlockRef::new(ptr, layout) }.size();
    // SAFETY: allocated by `slab::allocate(size)` in `Layout::write`.
    unsafe { slab::release(ptr, size) };
}

/// The clock offset of `layout`, as [`release`] takes it.
pub(crate) fn release_arg(layout: Layout) -> usize {
    layout.clock
}
