//! What the load loop's parts share: each connection's counters ([`ConnStats`]), where its keys come
//! from ([`Source`]), and the run's state ([`Shared`]).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use otkv_adapter_http::front::lock;

use super::spec::LoadSpec;
use crate::router::Router;
use crate::run_outcome::{OpKind, Tally, KINDS};
use crate::target::Target;

/// Where a connection keeps the latencies of warm-up batches.
pub(super) const WARM: usize = KINDS;

/// One connection's counters, read by the reporter.
pub(super) struct ConnStats {
    /// The node it sends to.
    pub(super) node: usize,
    /// Latencies since the reporter last took them: the measured window's by [`OpKind`], then the
    /// warm-up's (all kinds, shown in its progress lines only) at [`WARM`].
    pub(super) hists: Mutex<[Histogram<u64>; KINDS + 1]>,
    /// Operations answered correctly, of batches sent in the measured window.
    pub(super) ops: AtomicU64,
    /// Operations answered correctly, of batches sent in the warm-up.
    pub(super) warm_ops: AtomicU64,
}

/// Where a connection's keys come from.
#[derive(Clone)]
pub(super) enum Source {
    /// Keys from a node's list in order, shared by that node's connections (`seed`, preload).
    Cursor { keys: Arc<Vec<u64>>, next: Arc<AtomicUsize>, wrap: bool },
    /// Keys drawn from the distribution, kept if they route to this node.
    Random,
}

/// The run's state, shared by every connection and the reporter.
pub(super) struct Shared<'a> {
    /// What to run.
    pub(super) spec: &'a LoadSpec,
    /// Key to node.
    pub(super) router: &'a dyn Router,
    /// The nodes (or the proxy), in router order.
    pub(super) targets: &'a [Target],
    /// Set when the run ends: connections finish their batch and stop.
    pub(super) stop: AtomicBool,
    /// Still in the warm-up. A batch sent in it is the warm-up's, whenever its answers come: they are
    /// counted in `warm_ops` and `tallies[0]`, not timed, and `--ops` is not counted down.
    pub(super) warming: AtomicBool,
    /// Connections that have finished.
    pub(super) done: AtomicUsize,
    /// Operations left to start when `--ops` is set.
    pub(super) budget: Option<AtomicI64>,
    /// Failures in the warm-up, and in the measured window.
    pub(super) tallies: [Arc<Tally>; 2],
}

impl Shared<'_> {
    /// The tally of the current phase.
    pub(super) fn tally(&self) -> &Tally {
        &self.tallies[usize::from(!self.warming.load(Relaxed))]
    }
}

/// All operations answered so far, warm-up and measured (for the warm-up's progress lines).
pub(super) fn answered(stats: &[ConnStats]) -> u64 {
    stats.iter().map(|c| c.ops.load(Relaxed) + c.warm_ops.load(Relaxed)).sum()
}

/// Every connection has finished.
pub(super) fn all_done(stats: &[ConnStats], shared: &Shared<'_>) -> bool {
    shared.done.load(Relaxed) >= stats.len()
}

/// Counts an operation answered correctly, and its latency since `sent_at` (a warm-up one apart).
pub(super) fn record(stats: &ConnStats, warm: bool, kind: OpKind, sent_at: Instant) {
    let micros = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
    lock(&stats.hists)[if warm { WARM } else { kind as usize }].saturating_record(micros);
    if warm { &stats.warm_ops } else { &stats.ops }.fetch_add(1, Relaxed);
}
