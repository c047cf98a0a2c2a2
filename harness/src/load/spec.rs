//! [`LoadSpec`]: what a load run sends, how fast, and for how long.

use std::time::Duration;

use crate::workload::{KeyChooser, WorkloadKind};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The workload.
    pub workload: WorkloadKind,
    /// Key space size.
    pub keys: u64,
    /// Value size in bytes.
    pub value_size: usize,
    /// Key choice.
    pub chooser: KeyChooser,
    /// Total connections.
    pub connections: usize,
    /// Stop after this long (or after `ops`).
    pub duration: Option<Duration>,
    /// Stop after this many operations.
    pub ops: Option<u64>,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Open loop: total ops/s.
    pub rate: Option<f64>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Load to run before the measured window, not measured (its connections carry on into it).
    pub warmup: Option<Duration>,
    /// The share of updates done as a read-modify-write with `If-Match` (OTKV only).
    pub cas_share: f64,
    /// Writes expire after this many seconds (`?ttl=`, Redis `EX`).
    pub ttl_secs: Option<u64>,
    /// A new connection for every batch.
    pub reconnect: bool,
    /// Print a progress line every second.
    pub progress: bool,
}
