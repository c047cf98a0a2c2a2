//! # otkv-harness: the benchmark harness of OTKV
//!
//! `harness run --nodes 1..3` starts 1, then 2, then 3 real nodes, routes every key to one of them on the
//! client side, drives a workload over HTTP, and reports latency (by operation type), throughput, and what
//! each operation cost in server and client CPU per node count, with `summary.json`, `.hgrm` files and PNG
//! plots. It reaches nodes only over the network (`--node URL` for nodes elsewhere), knows nothing of their
//! storage, and drives redis-servers the same way (`--target redis`, over RESP) as a peer.
//!
//! A tour (the public modules are what the tests and other tools use; the rest is the binary's):
//! 1. [`router`]: which node owns a key (rendezvous or a consistent-hash ring, over a frozen hash).
//! 2. [`workload`]: what to send (workload mixes, uniform or Zipfian keys, self-checking values).
//! 3. [`nodes`]: start local nodes (this executable, as `harness node`, or `redis-server`) or name remote
//!    ones.
//! 4. `load/`: connections per node, the closed or open request loop, warm-up, per-second intervals;
//!    `client.rs` (HTTP/1.1) and `resp.rs` (RESP) are the connections it uses, over `wire.rs`. What a run
//!    produces is [`run_outcome`].
//! 5. `cost.rs`: every server's CPU and memory, read from the server before and after the window.
//! 6. [`report`], `plot.rs`, `html.rs` and [`hlog`]: the text summary, `summary.json`, `.hgrm`, PNGs,
//!    `report.html` and the interval logs.
//! 7. `proxy/` (`harness proxy`) and `reshard.rs` (`harness reshard`): one address for a cluster, and
//!    moving keys when its node set changes.
//! 8. [`cli`]: the command line, and the commands that tie it together.

pub mod cli;
pub mod hlog;
pub mod nodes;
pub mod report;
pub mod router;
pub mod run_outcome;
pub mod workload;

pub(crate) mod client;
pub(crate) mod compare;
pub(crate) mod cost;
pub(crate) mod etcd;
pub(crate) mod html;
pub(crate) mod load;
pub(crate) mod merge;
pub(crate) mod plot;
pub(crate) mod proxy;
pub(crate) mod reshard;
pub(crate) mod resp;
pub(crate) mod response_head;
pub(crate) mod run;
pub(crate) mod secure;
pub(crate) mod shutdown;
pub(crate) mod target;
pub(crate) mod wire;

/// Sets up the may runtime for the load generator: `threads` unpinned workers, 64 KiB coroutine stacks.
/// Must run before any coroutine is spawned (and is not used by `harness node`, which sets its own).
pub fn configure_runtime(threads: usize) {
    may::config().set_workers(threads.max(1)).set_stack_size(0x2000);
    may::config().set_worker_pin(false);
}

/// `println!` that ends the run quietly when stdout is closed ([`shutdown::say`]).
macro_rules! say {
    () => {
        $crate::shutdown::say(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::shutdown::say(format_args!($($arg)*))
    };
}
pub(crate) use say;
