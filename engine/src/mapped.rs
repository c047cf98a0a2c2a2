//! A file mapped read-only, for recovery: the log and the snapshot are read in place instead of being
//! copied into memory whole (a log of a million 4 KiB overwrites is 4 GiB; reading it into a `Vec` made a
//! restart need that much memory).
//!
//! The pages of a mapping count in the process's RSS while they are resident, so a long sequential read
//! drops what it has passed ([`MappedFile::done_before`]: `MADV_DONTNEED`, which for a read-only file
//! mapping only forgets pages the file still holds). Nothing else writes these files while the engine
//! recovers; a file truncated under the mapping would fault the process (`SIGBUS`), as it would any
//! program that maps files.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{EngineError, Result};

/// A whole file, mapped read-only.
#[derive(Debug)]
pub(crate) struct MappedFile {
    ptr: *mut libc::c_void,
    len: usize,
    /// Bytes before this offset were dropped already.
    dropped: std::cell::Cell<usize>,
}

const PAGE: usize = 4096;

impl MappedFile {
    pub(crate) fn open(path: &Path) -> Result<MappedFile> {
        let io = |e: std::io::Error| EngineError::Io { path: path.to_path_buf(), source: e };
        let file = File::open(path).map_err(io)?;
        let len = usize::try_from(file.metadata().map_err(io)?.len()).unwrap_or(usize::MAX);
        if len == 0 {
            return Ok(MappedFile { ptr: std::ptr::null_mut(), len, dropped: 0.into() });
        }
        // SAFETY: a fresh read-only private mapping of an open file; the kernel checks the arguments.
        #[allow(unsafe_code)]
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(io(std::io::Error::last_os_error()));
        }
        Ok(MappedFile { ptr, len, dropped: 0.into() })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `len` readable bytes at `ptr` until drop; nothing writes the file meanwhile (module doc).
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len)
        }
    }

    /// Tells the kernel the pages before `offset` (whole pages only) are no longer needed, so they leave
    /// this process's RSS. Reading them again would fault them back in from the file.
    pub(crate) fn done_before(&self, offset: usize) {
        let end = offset.min(self.len) / PAGE * PAGE;
        let start = self.dropped.get();
        if end <= start {
            return;
        }
        // SAFETY: a page-aligned range inside the mapping; MADV_DONTNEED on a read-only file mapping
        // loses nothing.
        #[allow(unsafe_code)]
        unsafe {
            libc::madvise(self.ptr.cast::<u8>().add(start).cast(), end - start, libc::MADV_DONTNEED);
        }
        self.dropped.set(end);
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping made in `open`, unused from here on.
            #[allow(unsafe_code)]
            unsafe {
                libc::munmap(self.ptr, self.len);
            }
        }
    }
}
