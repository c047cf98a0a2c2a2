//! What a run produces, below both the load loop that fills it and the reports that print it: the
//! latency [`Interval`]s and [`RunOutcome`], the [`Tally`] of failures (with [`Refusal`]s by kind), the
//! kinds of operation, and how numbers and names are written (the progress line, [`group`],
//! [`wire_name`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use otkv_adapter_http::front::lock;

use crate::wire::Failure;

/// Why a server answered but not with what was asked for. Counted by kind, as `http_NNN`, `resp_nil`
/// (GET of a key Redis does not have) or `resp_error` (an error reply, e.g. `-OOM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// An HTTP status other than the success the request expects.
    Http(u16),
    /// A nil reply.
    RespNil,
    /// An error reply.
    RespError,
    /// A reply of a type the command does not give.
    RespUnexpected,
}

impl Refusal {
    /// Its name in reports and `summary.json`.
    pub fn name(self) -> String {
        match self {
            Refusal::Http(code) => format!("http_{code}"),
            Refusal::RespNil => "resp_nil".into(),
            Refusal::RespError => "resp_error".into(),
            Refusal::RespUnexpected => "resp_unexpected".into(),
        }
    }
}

/// Latencies are recorded in microseconds, from 1 µs to 60 s, to 3 significant digits.
#[allow(clippy::expect_used, reason = "constant bounds that hdrhistogram documents as valid")]
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("1 µs to 60 s at 3 digits is a valid histogram")
}

/// Failures counted during a run.
#[derive(Debug, Default)]
pub struct Tally {
    failures: Mutex<BTreeMap<Failure, u64>>,
    refusals: Mutex<BTreeMap<Refusal, u64>>,
    wrong_values: AtomicU64,
    total: AtomicU64,
    /// Read-modify-writes that lost to another writer (`412`): counted, not errors.
    conflicts: AtomicU64,
}

impl Tally {
    pub(crate) fn failure(&self, kind: Failure, n: u64) {
        *lock(&self.failures).entry(kind).or_default() += n;
        self.total.fetch_add(n, Relaxed);
    }
    pub(crate) fn refusal(&self, kind: Refusal) {
        *lock(&self.refusals).entry(kind).or_default() += 1;
        self.total.fetch_add(1, Relaxed);
    }
    pub(crate) fn conflict(&self) {
        self.conflicts.fetch_add(1, Relaxed);
    }
    pub(crate) fn wrong_value(&self) {
        self.wrong_values.fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
    }
    /// Read-modify-writes that found the key changed and wrote nothing.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Relaxed)
    }

    /// All errors so far.
    pub fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }
    /// Errors by kind, for reports.
    pub fn by_kind(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (k, n) in lock(&self.failures).iter() {
            out.insert(wire_name(k), *n);
        }
        for (kind, n) in lock(&self.refusals).iter() {
            out.insert(kind.name(), *n);
        }
        let wrong = self.wrong_values.load(Relaxed);
        if wrong > 0 {
            out.insert("wrong_value".into(), wrong);
        }
        out
    }
}

/// One second of a run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    /// Seconds since the start, at the end of the interval.
    pub t: f64,
    /// Operations completed in the interval.
    pub ops: u64,
    /// Operations per second.
    pub ops_per_s: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Errors in the interval.
    pub errors: u64,
}

/// The kinds of operation a workload issues, each with its own latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// A GET.
    Read,
    /// A PUT (SET).
    Write,
    /// A read-modify-write: GET, then PUT with `If-Match` (`--cas-share`); its latency spans both.
    Cas,
}

impl OpKind {
    /// Every kind, in the order of [`RunOutcome::by_op`].
    pub const ALL: [OpKind; KINDS] = [OpKind::Read, OpKind::Write, OpKind::Cas];
}

/// How many kinds of operation there are.
pub const KINDS: usize = 3;

/// One interval of the measured window (about a second), its latencies by kind.
#[derive(Debug, Clone)]
pub struct IntervalHistograms {
    /// When it started, since the window opened.
    pub start: Duration,
    /// How long it lasted.
    pub length: Duration,
    /// Latency by kind, indexed as [`OpKind::ALL`].
    pub by_op: [Histogram<u64>; KINDS],
}

/// What a run measured.
#[derive(Debug)]
pub struct RunOutcome {
    /// Operations answered correctly in the measured window.
    pub ops: u64,
    /// Wall time of the measured window.
    pub elapsed: Duration,
    /// Latency of every correct operation (µs): the sum of `by_op`.
    pub histogram: Histogram<u64>,
    /// Latency by kind of operation, indexed as [`OpKind::ALL`].
    pub by_op: [Histogram<u64>; KINDS],
    /// Second by second.
    pub timeline: Vec<Interval>,
    /// When the measured window opened, by the wall clock.
    pub window_start: SystemTime,
    /// Second by second, the latencies by kind: together exactly `by_op` (the interval logs).
    pub intervals: Vec<IntervalHistograms>,
    /// Correct operations per node (same order as the targets).
    pub per_node_ops: Vec<u64>,
    /// Connections per node.
    pub per_node_connections: Vec<usize>,
    /// Failures in the measured window.
    pub tally: Arc<Tally>,
    /// The warm-up before it, if any.
    pub warmup: Option<WarmupOutcome>,
}

/// What the untimed warm-up did.
#[derive(Debug, Clone)]
pub struct WarmupOutcome {
    /// How long it ran.
    pub elapsed: Duration,
    /// Operations answered correctly.
    pub ops: u64,
    /// Errors.
    pub errors: u64,
}

/// How an enum is named in `summary.json` (its serde name), for text that must match it.
pub fn wire_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The once-a-second line on stderr (`warmup`: a line of the untimed warm-up).
pub fn progress_line(iv: &Interval, duration: Option<Duration>, warmup: bool) {
    let of = duration.map(|d| format!("/{}s", d.as_secs())).unwrap_or_default();
    let tag = if warmup { " warm-up" } else { "" };
    eprintln!(
        "  [{:>4.0}s{of}{tag}] {:>10} ops/s   p50 {:>7.3} ms   p99 {:>7.3} ms   errors {}",
        iv.t,
        group(iv.ops_per_s),
        iv.p50_ms,
        iv.p99_ms,
        iv.errors
    );
}

/// A number with thousands separators.
pub fn group(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
