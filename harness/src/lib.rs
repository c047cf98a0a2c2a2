//! # otkv-harness: the benchmark harness of OTKV
//!
//! `harness run --nodes 1..3` starts 1, then 2, then 3 real nodes, routes every key to one of them on the
//! client side, drives a workload over HTTP, and reports latency and throughput per node count, with
//! `summary.json`, `.hgrm` files and PNG plots. It reaches nodes only over HTTP (`--node URL` for nodes
//! elsewhere), and knows nothing of their storage.
//!
//! A tour:
//! 1. [`router`]: which node owns a key (rendezvous or a consistent-hash ring, over a frozen hash).
//! 2. [`workload`]: what to send (workload mixes, uniform or Zipfian keys, self-checking values).
//! 3. [`nodes`]: start local nodes (this executable, as `harness node`) or name remote ones.
//! 4. [`load`]: connections per node, the closed or open request loop, per-second intervals;
//!    [`client`] is the HTTP/1.1 connection it uses.
//! 5. [`report`] and [`plot`]: the text summary, `summary.json`, `.hgrm` and PNGs.
//! 6. [`cli`]: the command line, and the `run` / `ring` commands that tie it together.

pub mod cli;
pub mod client;
pub mod cost;
pub mod load;
pub mod nodes;
pub mod plot;
pub mod proxy;
pub mod report;
pub mod resp;
pub mod router;
pub mod wire;
pub mod workload;

/// Sets up the may runtime for the load generator: `threads` unpinned workers, 64 KiB coroutine stacks.
/// Must run before any coroutine is spawned (and is not used by `harness node`, which sets its own).
pub fn configure_runtime(threads: usize) {
    may::config().set_workers(threads.max(1)).set_stack_size(0x2000);
    may::config().set_worker_pin(false);
}
