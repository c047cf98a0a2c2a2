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
mod reporter;
mod shared;
mod spec;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use spec::LoadSpec;

use crate::router::Router;
use crate::run_outcome::{new_histogram, RunOutcome, Tally};
use crate::target::Target;
use crate::workload::{key_bytes, KeyChooser, WorkloadKind};
use reporter::Reporter;
use shared::{ConnStats, Shared, Source};
use worker::Worker;

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
        reconnect: false,
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

/// Runs `spec` against `targets`: one coroutine per connection ([`Worker`]), the reporter on this
/// thread. `cursor`: each node's key list, for runs that walk the keys in order (preload, seed).
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
    let stats: Vec<ConnStats> = per_node_connections
        .iter()
        .enumerate()
        .flat_map(|(node, &n)| std::iter::repeat_n(node, n))
        .map(|node| ConnStats {
            node,
            hists: Mutex::new(std::array::from_fn(|_| new_histogram())),
            ops: AtomicU64::new(0),
            warm_ops: AtomicU64::new(0),
        })
        .collect();
    if warmup.is_none() {
        at_start();
    }
    let mut reporter = Reporter::new();
    let now = Instant::now();
    let warm_until = warmup.map(|d| now + d);
    let total = stats.len();
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
            // Open loop: connections take turns evenly over each interval.
            let schedule = spec.rate.map(|rate| {
                let interval = Duration::from_secs_f64(total as f64 / rate.max(1e-9));
                (interval, now + interval.mul_f64(id as f64 / total as f64))
            });
            let worker = Worker::new(&shared, conn, id as u32, source, schedule);
            // SAFETY: may marks spawning unsafe because a coroutine may move between threads at a yield. The
            // connection coroutine holds no thread-local reference across a yield (its state is its stack
            // and `Arc`s; its histogram mutex is taken and released between yields), and its stack size is
            // set by `crate::configure_runtime`. The scope joins every coroutine before `drive` returns.
            unsafe {
                scope.spawn(move || worker.run());
            }
        }
        reporter.watch(&stats, &shared, warm_until, at_start);
    });
    reporter.finish(&stats, &shared, per_node_connections)
}
