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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::{Failure, HttpConn};
use crate::router::Router;
use crate::workload::{check_value, key_bytes, write_value, Expect, KeyChooser, WorkloadKind};

/// A node to send requests to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its routing name (`node-0`, ...).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
}

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
    statuses: Mutex<BTreeMap<u16, u64>>,
    wrong_values: AtomicU64,
    total: AtomicU64,
}

impl Tally {
    fn failure(&self, kind: Failure, n: u64) {
        *self.failures.lock().expect("tally").entry(kind).or_default() += n;
        self.total.fetch_add(n, Relaxed);
    }
    fn status(&self, code: u16) {
        *self.statuses.lock().expect("tally").entry(code).or_default() += 1;
        self.total.fetch_add(1, Relaxed);
    }
    fn wrong_value(&self) {
        self.wrong_values.fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
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
        for (code, n) in self.statuses.lock().expect("tally").iter() {
            out.insert(format!("http_{code}"), *n);
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

/// What a run measured.
#[derive(Debug)]
pub struct RunOutcome {
    /// Operations answered correctly.
    pub ops: u64,
    /// Wall time of the measured part.
    pub elapsed: Duration,
    /// Latency of every correct operation (µs).
    pub histogram: Histogram<u64>,
    /// Second by second.
    pub timeline: Vec<Interval>,
    /// Correct operations per node (same order as the targets).
    pub per_node_ops: Vec<u64>,
    /// Connections per node.
    pub per_node_connections: Vec<usize>,
    /// Failures.
    pub tally: Arc<Tally>,
}

struct ConnStats {
    node: usize,
    hist: Mutex<Histogram<u64>>,
    ops: AtomicU64,
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
    /// Connections that have finished.
    done: AtomicUsize,
    /// Operations left to start when `--ops` is set.
    budget: Option<AtomicI64>,
    tally: Arc<Tally>,
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
    let loader =
        LoadSpec { pipeline: 16, rate: None, duration: None, ops: None, progress: false, ..spec.clone() };
    let outcome = drive(&loader, router, targets, Some((lists, false)));
    (outcome.elapsed, outcome.tally)
}

/// Runs the measured part of a workload.
pub fn run(spec: &LoadSpec, router: &dyn Router, targets: &[Target]) -> RunOutcome {
    let cursor = (spec.workload == WorkloadKind::Seed).then(|| {
        let lists = keys_by_node(router, spec.keys).into_iter().map(Arc::new).collect();
        (lists, true)
    });
    drive(spec, router, targets, cursor)
}

#[allow(unsafe_code)]
fn drive(
    spec: &LoadSpec,
    router: &dyn Router,
    targets: &[Target],
    cursor: Option<(Vec<Arc<Vec<u64>>>, bool)>,
) -> RunOutcome {
    let per_node_connections = spread_connections(router, &spec.chooser, spec.connections);
    let shared = Shared {
        spec,
        router,
        targets,
        stop: AtomicBool::new(false),
        done: AtomicUsize::new(0),
        budget: spec.ops.map(|n| AtomicI64::new(i64::try_from(n).unwrap_or(i64::MAX))),
        tally: Arc::new(Tally::default()),
    };
    let nexts: Vec<Arc<AtomicUsize>> = (0..targets.len()).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut stats = Vec::new();
    for (node, &n) in per_node_connections.iter().enumerate() {
        for _ in 0..n {
            stats.push(ConnStats { node, hist: Mutex::new(new_histogram()), ops: AtomicU64::new(0) });
        }
    }
    let total_conns = stats.len();
    let started = Instant::now();
    let mut total = new_histogram();
    let mut timeline = Vec::new();

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
                (interval, started + interval.mul_f64(id as f64 / total_conns as f64))
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
        let mut last = Instant::now();
        let mut interval_hist = new_histogram();
        let mut last_errors = 0;
        let mut last_ops: u64 = 0;
        loop {
            let deadline = spec.duration.map(|d| started + d);
            let tick = last + Duration::from_secs(1);
            let wake = deadline.map_or(tick, |d| d.min(tick));
            while Instant::now() < wake && !all_done(&stats, &shared) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                shared.stop.store(true, Relaxed);
            }
            let finished = shared.stop.load(Relaxed) || all_done(&stats, &shared);
            if Instant::now() >= tick || finished {
                for conn in &stats {
                    let mut h = conn.hist.lock().expect("hist");
                    let _ = interval_hist.add(&*h);
                    h.reset();
                }
                let ops_now: u64 = stats.iter().map(|c| c.ops.load(Relaxed)).sum();
                let errors_now = shared.tally.total();
                let secs = last.elapsed().as_secs_f64().max(1e-9);
                let iv =
                    interval(started, &interval_hist, ops_now - last_ops, errors_now - last_errors, secs);
                if spec.progress {
                    crate::report::progress_line(&iv, spec.duration);
                }
                let _ = total.add(&interval_hist);
                interval_hist.reset();
                timeline.push(iv);
                last = Instant::now();
                last_ops = ops_now;
                last_errors = errors_now;
            }
            if finished {
                shared.stop.store(true, Relaxed);
                break;
            }
        }
    });
    let elapsed = started.elapsed();
    // Late completions after the last interval (coroutines finishing their batch) join the total.
    for conn in &stats {
        let _ = total.add(&*conn.hist.lock().expect("hist"));
    }
    let mut per_node_ops = vec![0; targets.len()];
    for conn in &stats {
        per_node_ops[conn.node] += conn.ops.load(Relaxed);
    }
    RunOutcome {
        ops: per_node_ops.iter().sum(),
        elapsed,
        histogram: total,
        timeline,
        per_node_ops,
        per_node_connections,
        tally: Arc::clone(&shared.tally),
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
    put: bool,
    expect: Expect,
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
    let mut conn: Option<HttpConn> = None;
    'run: while !shared.stop.load(Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match HttpConn::connect(target.addr, &target.host, spec.timeout) {
                Ok(c) => conn.insert(c),
                Err(kind) => {
                    shared.tally.failure(kind, 1);
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
        // Fill the batch.
        pending.clear();
        let want = if schedule.is_some() { 1 } else { spec.pipeline.max(1) };
        let seed = spec.workload == WorkloadKind::Seed && matches!(source, Source::Cursor { wrap: true, .. });
        while pending.len() < want {
            if let Some(budget) = &shared.budget {
                // `seed` issues a put and its read-back: two operations.
                if budget.fetch_sub(if seed { 2 } else { 1 }, Relaxed) <= 0 {
                    break;
                }
            }
            let Some((key, put)) = next_op(shared, stats.node, &source, &mut rng) else { break };
            let value_conn = id;
            if put {
                seq += 1;
                let s = seq;
                c.push_put(&key_bytes(key), spec.value_size, |out| {
                    write_value(out, key, value_conn, s, spec.value_size)
                });
                pending.push(Pending { key, put: true, expect: Expect::AnyVersion });
                if seed {
                    // The original benchmark: read the key straight back, expecting exactly this value.
                    c.push_get(&key_bytes(key));
                    let expect = Expect::Exact { conn: value_conn, seq: s };
                    pending.push(Pending { key, put: false, expect });
                }
            } else {
                c.push_get(&key_bytes(key));
                pending.push(Pending { key, put: false, expect: Expect::AnyVersion });
            }
        }
        if pending.is_empty() {
            break;
        }
        let sent_at = intended.unwrap_or_else(Instant::now);
        if let Err(kind) = c.send() {
            shared.tally.failure(kind, pending.len() as u64);
            conn = None;
            continue;
        }
        for p in &pending {
            let response = match c.read_response(false) {
                Ok(r) => r,
                Err(kind) => {
                    shared.tally.failure(kind, 1);
                    conn = None;
                    continue 'run;
                }
            };
            let ok_status = if p.put { matches!(response.status, 201 | 204) } else { response.status == 200 };
            if !ok_status {
                shared.tally.status(response.status);
                continue;
            }
            if !p.put && !check_value(response.body, p.key, p.expect, spec.value_size) {
                shared.tally.wrong_value();
                continue;
            }
            let micros = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
            stats.hist.lock().expect("hist").saturating_record(micros);
            stats.ops.fetch_add(1, Relaxed);
        }
    }
    shared.done.fetch_add(1, Relaxed);
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
