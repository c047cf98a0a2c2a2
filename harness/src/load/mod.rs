//! Driving load: connections per node, the request loop, latency recording, progress.
//!
//! Each connection is a may coroutine bound to one node. Connections are spread over the nodes in
//! proportion to the share of operations routing sends each node (measured on the key distribution), and
//! a connection only issues keys that route to its node (rejection sampling), so the whole run follows the
//! key distribution and every request goes where the router says.
//!
//! Closed loop (default): send K requests (`--pipeline`), wait for their K responses, repeat; latency is
//! measured per request from its send. Open loop (`--rate`): each connection sends on a fixed schedule and
//! latency is measured from the *intended* send time, so a stalled server shows up as latency instead of
//! silently lowering the request rate (coordinated omission, as wrk2 corrects it).
//!
//! Each connection records into its own histogram behind an uncontended mutex; once a second the reporter
//! swaps those out, merges them into the interval and the total, and prints a progress line.

mod conn;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub use conn::{Cas, Conn, Protocol, Refusal, Target};

use crate::client::DEFAULT_MAX_BODY;
use crate::router::Router;
use crate::wire::Failure;
use crate::workload::{check_value, key_bytes, write_value, Expect, KeyChooser, WorkloadKind};

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
    /// Print a progress line every second.
    pub progress: bool,
}

/// Latencies are recorded in microseconds, from 1 µs to 60 s, to 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
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
    fn failure(&self, kind: Failure, n: u64) {
        *self.failures.lock().expect("tally").entry(kind).or_default() += n;
        self.total.fetch_add(n, Relaxed);
    }
    fn refusal(&self, kind: Refusal) {
        *self.refusals.lock().expect("tally").entry(kind).or_default() += 1;
        self.total.fetch_add(1, Relaxed);
    }
    fn wrong_value(&self) {
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
        for (k, n) in self.failures.lock().expect("tally").iter() {
            out.insert(crate::report::wire_name(k), *n);
        }
        for (kind, n) in self.refusals.lock().expect("tally").iter() {
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
#[derive(Debug, Clone, serde::Serialize)]
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

/// Where a connection keeps the latencies of warm-up batches.
const WARM: usize = KINDS;

struct ConnStats {
    node: usize,
    /// Latencies since the reporter last took them: the measured window's by [`OpKind`], then the
    /// warm-up's (all kinds, shown in its progress lines only) at [`WARM`].
    hists: Mutex<[Histogram<u64>; KINDS + 1]>,
    /// Operations answered correctly, of batches sent in the measured window.
    ops: AtomicU64,
    /// Operations answered correctly, of batches sent in the warm-up.
    warm_ops: AtomicU64,
}

/// Where a connection's keys come from.
#[derive(Clone)]
enum Source {
    /// Keys from a node's list in order, shared by that node's connections (`seed`, preload).
    Cursor { keys: Arc<Vec<u64>>, next: Arc<AtomicUsize>, wrap: bool },
    /// Keys drawn from the distribution, kept if they route to this node.
    Random,
}

struct Shared<'a> {
    spec: &'a LoadSpec,
    router: &'a dyn Router,
    targets: &'a [Target],
    stop: AtomicBool,
    /// Still in the warm-up. A batch sent in it is the warm-up's, whenever its answers come: they are
    /// counted in `warm_ops` and `tallies[0]`, not timed, and `--ops` is not counted down.
    warming: AtomicBool,
    /// Connections that have finished.
    done: AtomicUsize,
    /// Operations left to start when `--ops` is set.
    budget: Option<AtomicI64>,
    /// Failures in the warm-up, and in the measured window.
    tallies: [Arc<Tally>; 2],
}

impl Shared<'_> {
    /// The tally of the current phase.
    fn tally(&self) -> &Tally {
        &self.tallies[usize::from(!self.warming.load(Relaxed))]
    }
}

/// All operations answered so far, warm-up and measured (for the warm-up's progress lines).
fn answered(stats: &[ConnStats]) -> u64 {
    stats.iter().map(|c| c.ops.load(Relaxed) + c.warm_ops.load(Relaxed)).sum()
}

/// Every key index that routes to each node.
pub fn keys_by_node(router: &dyn Router, keys: u64) -> Vec<Vec<u64>> {
    let mut lists = vec![Vec::new(); router.nodes()];
    for i in 0..keys {
        lists[router.route(&key_bytes(i))].push(i);
    }
    lists
}

/// Connections per node, in proportion to each node's share of operations (every node gets at least one).
pub fn spread_connections(router: &dyn Router, chooser: &KeyChooser, connections: usize) -> Vec<usize> {
    let nodes = router.nodes();
    let mut rng = fastrand::Rng::with_seed(0x5EED);
    let samples = 20_000;
    let mut hits = vec![0usize; nodes];
    for _ in 0..samples {
        hits[router.route(&key_bytes(chooser.next(&mut rng)))] += 1;
    }
    let connections = connections.max(nodes);
    let mut counts: Vec<usize> = hits.iter().map(|&h| (h * connections / samples).max(1)).collect();
    // Hand out what rounding left over (or take back what the minimum of one added), largest share first.
    let mut order: Vec<usize> = (0..nodes).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(hits[i]));
    let mut i = 0;
    while counts.iter().sum::<usize>() != connections {
        let node = order[i % nodes];
        if counts.iter().sum::<usize>() < connections {
            counts[node] += 1;
        } else if counts[node] > 1 {
            counts[node] -= 1;
        }
        i += 1;
    }
    counts
}

/// Writes every key once (untimed), returning how long it took.
pub fn preload(spec: &LoadSpec, router: &dyn Router, targets: &[Target]) -> (Duration, Arc<Tally>) {
    let lists: Vec<Arc<Vec<u64>>> = keys_by_node(router, spec.keys).into_iter().map(Arc::new).collect();
    let loader = LoadSpec {
        pipeline: 16,
        rate: None,
        duration: None,
        ops: None,
        warmup: None,
        progress: false,
        ..spec.clone()
    };
    let outcome = drive(&loader, router, targets, Some((lists, false)), &mut || ());
    (outcome.elapsed, outcome.tally)
}

/// Runs a workload: the warm-up if the spec has one, then the measured window. `at_start` is called
/// just before the measured window opens (the harness reads the servers' CPU counters there).
pub fn run(
    spec: &LoadSpec,
    router: &dyn Router,
    targets: &[Target],
    at_start: &mut dyn FnMut(),
) -> RunOutcome {
    let cursor = (spec.workload == WorkloadKind::Seed).then(|| {
        let lists = keys_by_node(router, spec.keys).into_iter().map(Arc::new).collect();
        (lists, true)
    });
    drive(spec, router, targets, cursor, at_start)
}

/// The reporter's state: what it has taken from the connections so far.
struct Reporter {
    /// When the measured window opened (the warm-up's start until then).
    started: Instant,
    last: Instant,
    last_ops: u64,
    last_errors: u64,
    interval: Histogram<u64>,
    /// The measured window's latencies by kind.
    totals: [Histogram<u64>; KINDS],
    timeline: Vec<Interval>,
    /// How long the warm-up ran, once it has.
    warmed: Option<Duration>,
}

impl Reporter {
    /// Moves every connection's latencies into the interval, and the measured ones into the totals.
    fn collect(&mut self, stats: &[ConnStats]) {
        for conn in stats {
            let mut hists = conn.hists.lock().expect("hist");
            for (i, h) in hists.iter_mut().enumerate() {
                let _ = self.interval.add(&*h);
                if let Some(total) = self.totals.get_mut(i) {
                    let _ = total.add(&*h);
                }
                h.reset();
            }
        }
    }

    /// Closes the warm-up and opens the measured window.
    fn open_window(&mut self, stats: &[ConnStats], shared: &Shared<'_>, at_start: &mut dyn FnMut()) {
        self.collect(stats);
        self.interval.reset();
        at_start();
        shared.warming.store(false, Relaxed);
        let now = Instant::now();
        self.warmed = Some(now - self.started);
        (self.started, self.last, self.last_ops, self.last_errors) = (now, now, 0, 0);
    }

    /// Closes the interval since the last tick: a progress line, and (when `measured`) a timeline entry.
    fn tick(&mut self, stats: &[ConnStats], shared: &Shared<'_>, measured: bool) {
        self.collect(stats);
        let ops_now =
            if measured { stats.iter().map(|c| c.ops.load(Relaxed)).sum() } else { answered(stats) };
        let errors_now = shared.tally().total();
        let secs = self.last.elapsed().as_secs_f64().max(1e-9);
        let iv = interval(
            self.started,
            &self.interval,
            ops_now - self.last_ops,
            errors_now - self.last_errors,
            secs,
        );
        if shared.spec.progress {
            crate::report::progress_line(&iv, if measured { shared.spec.duration } else { None }, !measured);
        }
        self.interval.reset();
        if measured {
            self.timeline.push(iv);
        }
        (self.last, self.last_ops, self.last_errors) = (Instant::now(), ops_now, errors_now);
    }
}

#[allow(unsafe_code)]
fn drive(
    spec: &LoadSpec,
    router: &dyn Router,
    targets: &[Target],
    cursor: Option<(Vec<Arc<Vec<u64>>>, bool)>,
    at_start: &mut dyn FnMut(),
) -> RunOutcome {
    let per_node_connections = spread_connections(router, &spec.chooser, spec.connections);
    let warmup = spec.warmup.filter(|d| !d.is_zero());
    let shared = Shared {
        spec,
        router,
        targets,
        stop: AtomicBool::new(false),
        warming: AtomicBool::new(warmup.is_some()),
        done: AtomicUsize::new(0),
        budget: spec.ops.map(|n| AtomicI64::new(i64::try_from(n).unwrap_or(i64::MAX))),
        tallies: [Arc::new(Tally::default()), Arc::new(Tally::default())],
    };
    let nexts: Vec<Arc<AtomicUsize>> = (0..targets.len()).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut stats = Vec::new();
    for (node, &n) in per_node_connections.iter().enumerate() {
        for _ in 0..n {
            let hists = Mutex::new(std::array::from_fn(|_| new_histogram()));
            stats.push(ConnStats { node, hists, ops: AtomicU64::new(0), warm_ops: AtomicU64::new(0) });
        }
    }
    let total_conns = stats.len();
    if warmup.is_none() {
        at_start();
    }
    let now = Instant::now();
    let mut rep = Reporter {
        started: now,
        last: now,
        last_ops: 0,
        last_errors: 0,
        interval: new_histogram(),
        totals: std::array::from_fn(|_| new_histogram()),
        timeline: Vec::new(),
        warmed: None,
    };
    let warm_until = warmup.map(|d| now + d);

    may::coroutine::scope(|scope| {
        for (id, conn) in stats.iter().enumerate() {
            let source = match &cursor {
                Some((lists, wrap)) => Source::Cursor {
                    keys: Arc::clone(&lists[conn.node]),
                    next: Arc::clone(&nexts[conn.node]),
                    wrap: *wrap,
                },
                None => Source::Random,
            };
            let shared = &shared;
            let schedule = spec.rate.map(|rate| {
                let interval = Duration::from_secs_f64(total_conns as f64 / rate.max(1e-9));
                (interval, now + interval.mul_f64(id as f64 / total_conns as f64))
            });
            // SAFETY: may marks spawning unsafe because a coroutine may move between threads at a yield. The
            // connection coroutine holds no thread-local reference across a yield (its state is its stack
            // and `Arc`s; its histogram mutex is taken and released between yields), and its stack size is
            // set by `crate::configure_runtime`. The scope joins every coroutine before `drive` returns.
            unsafe {
                scope.spawn(move || connection(shared, conn, id as u32, source, schedule));
            }
        }
        // The reporter runs on this (non-coroutine) thread.
        loop {
            let warming = shared.warming.load(Relaxed);
            let phase_end = if warming { warm_until } else { spec.duration.map(|d| rep.started + d) };
            let tick = rep.last + Duration::from_secs(1);
            let wake = phase_end.map_or(tick, |d| d.min(tick));
            while Instant::now() < wake && !all_done(&stats, &shared) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let ended = phase_end.is_some_and(|d| Instant::now() >= d);
            if warming && ended && !all_done(&stats, &shared) {
                rep.tick(&stats, &shared, false);
                rep.open_window(&stats, &shared, at_start);
                continue;
            }
            if ended {
                shared.stop.store(true, Relaxed);
            }
            let finished = shared.stop.load(Relaxed) || all_done(&stats, &shared);
            if Instant::now() >= tick || finished {
                rep.tick(&stats, &shared, !warming);
            }
            if finished {
                shared.stop.store(true, Relaxed);
                break;
            }
        }
    });
    let elapsed = rep.started.elapsed();
    // Late completions after the last interval (coroutines finishing their batch) join the totals.
    rep.collect(&stats);
    let mut per_node_ops = vec![0; targets.len()];
    for conn in &stats {
        per_node_ops[conn.node] += conn.ops.load(Relaxed);
    }
    let mut histogram = new_histogram();
    for h in &rep.totals {
        let _ = histogram.add(h);
    }
    RunOutcome {
        ops: per_node_ops.iter().sum(),
        elapsed,
        histogram,
        by_op: rep.totals,
        timeline: rep.timeline,
        per_node_ops,
        per_node_connections,
        tally: Arc::clone(&shared.tallies[1]),
        warmup: rep.warmed.map(|elapsed| WarmupOutcome {
            elapsed,
            ops: stats.iter().map(|c| c.warm_ops.load(Relaxed)).sum(),
            errors: shared.tallies[0].total(),
        }),
    }
}

fn all_done(stats: &[ConnStats], shared: &Shared<'_>) -> bool {
    shared.done.load(Relaxed) >= stats.len()
}

fn interval(started: Instant, h: &Histogram<u64>, ops: u64, errors: u64, secs: f64) -> Interval {
    let ms = |v: u64| v as f64 / 1000.0;
    Interval {
        t: started.elapsed().as_secs_f64(),
        ops,
        ops_per_s: ops as f64 / secs,
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
        errors,
    }
}

/// One request in flight.
struct Pending {
    key: u64,
    kind: OpKind,
    expect: Expect,
}

/// The largest answer body a load connection accepts: its values, or an error's text.
fn answer_cap(value_size: usize) -> usize {
    value_size.max(DEFAULT_MAX_BODY)
}

/// A connection's life: connect, loop over batches, reconnect after failures, until told to stop.
fn connection(
    shared: &Shared<'_>,
    stats: &ConnStats,
    id: u32,
    source: Source,
    schedule: Option<(Duration, Instant)>,
) {
    let spec = shared.spec;
    let target = &shared.targets[stats.node];
    let mut rng = fastrand::Rng::with_seed(0xC0FFEE ^ u64::from(id) << 20);
    let mut seq: u64 = 0;
    let mut pending: Vec<Pending> = Vec::with_capacity(spec.pipeline.max(2));
    let mut next_send = schedule.map(|(_, first)| first);
    let mut conn: Option<Conn> = None;
    // A read-modify-write drawn while a batch was being filled: it goes first in the next one.
    let mut carry: Option<u64> = None;
    'run: while !shared.stop.load(Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(target, spec.timeout, answer_cap(spec.value_size)) {
                Ok(c) => conn.insert(c),
                Err(kind) => {
                    shared.tally().failure(kind, 1);
                    may::coroutine::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        // Open loop: wait for this request's slot; its latency counts from the slot, not from the send.
        let mut intended = None;
        if let (Some((interval, _)), Some(at)) = (schedule, next_send) {
            let now = Instant::now();
            if at > now {
                may::coroutine::sleep(at - now);
            }
            intended = Some(at);
            next_send = Some(at + interval);
        }
        // Fill the batch; it belongs to the phase it is sent in.
        let warm = shared.warming.load(Relaxed);
        let tally = &shared.tallies[usize::from(!warm)];
        pending.clear();
        let want = if schedule.is_some() { 1 } else { spec.pipeline.max(1) };
        let seed = spec.workload == WorkloadKind::Seed && matches!(source, Source::Cursor { wrap: true, .. });
        while pending.len() < want {
            let (key, put, cas) = match carry.take() {
                Some(key) => (key, true, true),
                None => {
                    if let (Some(budget), false) = (&shared.budget, warm) {
                        // `seed` issues a put and its read-back: two operations.
                        let n = if seed { 2 } else { 1 };
                        if budget.fetch_sub(n, Relaxed) <= 0 {
                            // Put it back, so that a conflict's refund (below) is not lost below zero.
                            budget.fetch_add(n, Relaxed);
                            break;
                        }
                    }
                    let Some((key, put)) = next_op(shared, stats.node, &source, &mut rng) else { break };
                    (key, put, put && !seed && spec.cas_share > 0.0 && rng.f64() < spec.cas_share)
                }
            };
            let value_conn = id;
            if cas && !pending.is_empty() {
                carry = Some(key);
                break;
            }
            if cas {
                // The write needs the read's answer (its version): a batch of its own.
                let sent_at = intended.unwrap_or_else(Instant::now);
                seq += 1;
                let s = seq;
                let outcome = c.cas(
                    &key_bytes(key),
                    |v| check_value(v, key, Expect::AnyVersion, spec.value_size),
                    spec.value_size,
                    spec.ttl_secs,
                    |out| write_value(out, key, value_conn, s, spec.value_size),
                );
                match outcome {
                    Ok(Ok(Cas::Applied)) => record(stats, warm, OpKind::Cas, sent_at),
                    Ok(Ok(Cas::Conflict)) => {
                        tally.conflicts.fetch_add(1, Relaxed);
                        // A lost race is retried, as a client would: it does not use up `--ops`.
                        if let (Some(budget), false) = (&shared.budget, warm) {
                            budget.fetch_add(1, Relaxed);
                        }
                    }
                    Ok(Ok(Cas::WrongValue)) => tally.wrong_value(),
                    Ok(Err(refusal)) => tally.refusal(refusal),
                    Err(kind) => {
                        tally.failure(kind, 1);
                        conn = None;
                    }
                }
                continue 'run;
            }
            if put {
                seq += 1;
                let s = seq;
                c.push_put(&key_bytes(key), spec.value_size, spec.ttl_secs, |out| {
                    write_value(out, key, value_conn, s, spec.value_size)
                });
                pending.push(Pending { key, kind: OpKind::Write, expect: Expect::AnyVersion });
                if seed {
                    // The original benchmark: read the key straight back, expecting exactly this value.
                    c.push_get(&key_bytes(key));
                    let expect = Expect::Exact { conn: value_conn, seq: s };
                    pending.push(Pending { key, kind: OpKind::Read, expect });
                }
            } else {
                c.push_get(&key_bytes(key));
                pending.push(Pending { key, kind: OpKind::Read, expect: Expect::AnyVersion });
            }
        }
        if pending.is_empty() {
            break;
        }
        let sent_at = intended.unwrap_or_else(Instant::now);
        if let Err(kind) = c.send() {
            tally.failure(kind, pending.len() as u64);
            conn = None;
            continue;
        }
        for p in &pending {
            let value = match c.read_answer(p.kind == OpKind::Write) {
                Ok(Ok(value)) => value,
                Ok(Err(refusal)) => {
                    tally.refusal(refusal);
                    continue;
                }
                Err(kind) => {
                    tally.failure(kind, 1);
                    conn = None;
                    continue 'run;
                }
            };
            if p.kind == OpKind::Read && !check_value(value, p.key, p.expect, spec.value_size) {
                tally.wrong_value();
                continue;
            }
            record(stats, warm, p.kind, sent_at);
        }
    }
    shared.done.fetch_add(1, Relaxed);
}

/// Counts an operation answered correctly, and its latency since `sent_at` (a warm-up one apart).
fn record(stats: &ConnStats, warm: bool, kind: OpKind, sent_at: Instant) {
    let micros = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
    stats.hists.lock().expect("hist")[if warm { WARM } else { kind as usize }].saturating_record(micros);
    if warm { &stats.warm_ops } else { &stats.ops }.fetch_add(1, Relaxed);
}

/// The next operation for a connection of `node`: `(key index, is_put)`, or `None` when a non-wrapping
/// cursor is exhausted.
fn next_op(
    shared: &Shared<'_>,
    node: usize,
    source: &Source,
    rng: &mut fastrand::Rng,
) -> Option<(u64, bool)> {
    let spec = shared.spec;
    match source {
        Source::Cursor { keys, next, wrap } => {
            if keys.is_empty() {
                return None;
            }
            let i = next.fetch_add(1, Relaxed);
            if i >= keys.len() && !wrap {
                return None;
            }
            Some((keys[i % keys.len()], true))
        }
        Source::Random => {
            let put = rng.f64() >= spec.workload.read_fraction();
            // Rejection sampling keeps the distribution, conditioned on this node; bounded in case a node
            // owns (almost) no keys.
            for _ in 0..10_000 {
                let key = spec.chooser.next(rng);
                if shared.router.route(&key_bytes(key)) == node {
                    return Some((key, put));
                }
            }
            None
        }
    }
}
