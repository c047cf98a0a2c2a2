//! How an engine is chosen and opened: kind, data directory and durability.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Which backend stores the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// The engine's own lock-free hash table (`table/`): one allocation per entry, one word per slot.
    /// Volatile unless made durable by its operation log and snapshots.
    Memory,
    /// The same memory engine on a `flurry` hash map instead of the table: the alternative the table is
    /// compared with. Same durability, same files.
    Flurry,
    /// A `sled` 0.34 B-tree in a data directory.
    Sled,
}

impl EngineKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [EngineKind; 3] = [EngineKind::Memory, EngineKind::Flurry, EngineKind::Sled];

    /// The name used on command lines and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Memory => "memory",
            EngineKind::Flurry => "flurry",
            EngineKind::Sled => "sled",
        }
    }

    /// Whether the data lives in memory (with an optional log), as opposed to sled's tree on disk.
    pub fn in_memory(self) -> bool {
        self != EngineKind::Sled
    }
}

impl FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(EngineKind::Memory),
            "flurry" => Ok(EngineKind::Flurry),
            "sled" => Ok(EngineKind::Sled),
            other => Err(format!("unknown engine `{other}` (expected `memory`, `flurry` or `sled`)")),
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an acknowledged write promises about surviving a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Nothing is promised. The memory engine writes nothing; sled writes when it decides to and on shutdown.
    None,
    /// Everything is made durable every `flush_interval`; a crash loses at most that window.
    Periodic,
    /// A write returns only after it is durable.
    Sync,
}

impl Durability {
    /// The name used on command lines and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Periodic => "periodic",
            Durability::Sync => "sync",
        }
    }
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Durability::None),
            "periodic" => Ok(Durability::Periodic),
            "sync" => Ok(Durability::Sync),
            other => Err(format!("unknown durability `{other}` (expected `none`, `periodic` or `sync`)")),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the memory engine does when a write would take its data past [`EngineConfig::max_memory`]. The
/// names and meanings are Redis's `maxmemory-policy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Eviction {
    /// Refuse the write ([`crate::EngineError::OutOfMemory`]); reads and deletes go on.
    #[default]
    NoEviction,
    /// Evict approximately least-recently-used keys, any key.
    AllKeysLru,
    /// Evict the keys with the nearest expiry; keys without one are never evicted.
    VolatileTtl,
}

impl Eviction {
    /// The name used on command lines and in reports (Redis's).
    pub fn as_str(self) -> &'static str {
        match self {
            Eviction::NoEviction => "noeviction",
            Eviction::AllKeysLru => "allkeys-lru",
            Eviction::VolatileTtl => "volatile-ttl",
        }
    }
}

impl FromStr for Eviction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "noeviction" => Ok(Eviction::NoEviction),
            "allkeys-lru" => Ok(Eviction::AllKeysLru),
            "volatile-ttl" => Ok(Eviction::VolatileTtl),
            other => Err(format!(
                "unknown eviction policy `{other}` (expected `noeviction`, `allkeys-lru` or `volatile-ttl`)"
            )),
        }
    }
}

impl std::fmt::Display for Eviction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The default [`EngineConfig::commit_delay`]: about the time a worker needs to serve 64 writers' next
/// requests, so a full round of a busy node's writers shares one sync.
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_millis(1);

/// Everything needed to open an [`crate::Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The backend.
    pub kind: EngineKind,
    /// Where durable data lives. Required by `sled` and by any durability other than `none`.
    pub data_dir: Option<PathBuf>,
    /// What an acknowledged write promises.
    pub durability: Durability,
    /// For [`Durability::Periodic`]: how often everything is made durable.
    pub flush_interval: Duration,
    /// For [`Durability::Sync`]: the longest the flusher holds a sync to gather the writers it expects
    /// (as many as its last sync released) so that they share it. Zero syncs as soon as anyone asks.
    pub commit_delay: Duration,
    /// Memory engine with a log: how often a snapshot is written in the background (and one is written on
    /// clean shutdown). `None`: never (the log alone is replayed at start).
    pub snapshot_interval: Option<Duration>,
    /// Memory engine: the most memory its data may use, in bytes (as the engine estimates it: see
    /// `budget.rs`); `None`: no cap.
    pub max_memory: Option<u64>,
    /// Memory engine: what happens when a write would pass `max_memory`.
    pub eviction: Eviction,
    /// Memory engine: whether the memory thread moves live entries out of mostly empty chunks so they can
    /// be given back (as Redis's `activedefrag`). Chunks that empty are given back either way.
    pub compaction: bool,
    /// Memory engine: whether a thread removes expired values in the background (reads hide them
    /// either way). Off for a member of a replica group, whose leader decides each removal once and
    /// replicates it ([`crate::Engine::take_expired`]), so no member's clock decides alone.
    pub active_expiry: bool,
}

impl EngineConfig {
    /// A volatile in-memory engine.
    pub fn memory() -> Self {
        EngineConfig {
            kind: EngineKind::Memory,
            data_dir: None,
            durability: Durability::None,
            flush_interval: Duration::from_secs(1),
            commit_delay: DEFAULT_COMMIT_DELAY,
            snapshot_interval: Some(Duration::from_mins(1)),
            max_memory: None,
            eviction: Eviction::NoEviction,
            compaction: true,
            active_expiry: true,
        }
    }

    /// A memory engine made durable by an operation log and snapshots in `dir`.
    pub fn memory_durable(dir: impl Into<PathBuf>, durability: Durability) -> Self {
        EngineConfig { data_dir: Some(dir.into()), durability, ..EngineConfig::memory() }
    }

    /// A sled engine in `dir` with periodic durability (sled's own flusher).
    pub fn sled(dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            kind: EngineKind::Sled,
            data_dir: Some(dir.into()),
            durability: Durability::Periodic,
            flush_interval: Duration::from_secs(1),
            commit_delay: DEFAULT_COMMIT_DELAY,
            snapshot_interval: None,
            max_memory: None,
            eviction: Eviction::NoEviction,
            compaction: false,
            active_expiry: true,
        }
    }

    /// The same configuration with a memory cap and an eviction policy.
    pub fn with_max_memory(mut self, max_bytes: u64, eviction: Eviction) -> Self {
        self.max_memory = Some(max_bytes);
        self.eviction = eviction;
        self
    }

    /// The same configuration with another durability.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The same configuration on another memory engine (`memory` or `flurry`).
    pub fn with_kind(mut self, kind: EngineKind) -> Self {
        self.kind = kind;
        self
    }

    /// The cap `allkeys-lru` is sized for, if that is the policy.
    pub(crate) fn lru_cap(&self) -> Option<u64> {
        self.max_memory.filter(|_| self.eviction == Eviction::AllKeysLru)
    }
}
