//! The engine's one error type.
//!
//! Every fallible engine call returns [`EngineError`]. Callers (the HTTP adapter) map these to their own
//! statuses in one place; the engine itself never decides how an error is shown to a client.

use std::path::{Path, PathBuf};

/// Everything that can go wrong inside the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration asks for something this engine cannot do (e.g. `sled` without a data directory).
    #[error("invalid engine configuration: {0}")]
    InvalidConfig(String),

    /// An I/O error on a file the engine owns.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the operation touched.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The sled tree reported an error (I/O, corruption, or an unsupported on-disk version).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),

    /// A sync failed earlier: the engine no longer acknowledges writes (a failed fsync is never retried).
    #[error("not accepting writes: {0}")]
    Unavailable(String),

    /// A durable file is damaged in a way that could hide acknowledged writes; the engine will not start.
    #[error("corrupt data in {path}: {detail}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong, and where.
        detail: String,
    },

    /// The write would take the memory engine's data past its cap, and the eviction policy could not make
    /// room: nothing was written. Reads and deletes still work.
    #[error("out of memory: {used} of {max} bytes used (--max-memory); {why}; nothing was written")]
    OutOfMemory {
        /// Estimated bytes the data uses now.
        used: u64,
        /// The cap.
        max: u64,
        /// Why no room could be made (the policy, or what it found to evict).
        why: &'static str,
    },

    /// A value exceeds the engine's hard limit ([`crate::MAX_VALUE_BYTES`]).
    #[error("value of {len} bytes exceeds the engine limit of {max} bytes")]
    ValueTooLarge {
        /// Length of the rejected value.
        len: usize,
        /// The limit it exceeded.
        max: usize,
    },
    /// A listing's cursor this store cannot go on from (another engine's, or from before a restart that
    /// changed the order).
    #[error("bad cursor: {0}")]
    BadCursor(String),
    /// A key longer than [`crate::MAX_KEY_BYTES`].
    #[error("key of {len} bytes exceeds the engine's limit of {max} bytes")]
    KeyTooLarge {
        /// Length of the rejected key.
        len: usize,
        /// The limit it exceeded.
        max: usize,
    },
}

/// Maps an I/O error on `path` to [`EngineError::Io`]: `.map_err(io_err(path))`.
pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> EngineError + Copy + '_ {
    move |source| EngineError::Io { path: path.to_path_buf(), source }
}

/// Shorthand for results of engine calls.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
