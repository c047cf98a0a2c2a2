//! # otkv-harness: the benchmark harness of OTKV
//!
//! `harness run --nodes 1..3` starts 1, then 2, then 3 real nodes, routes every key to one of them on the
//! client side, drives a workload over HTTP, and reports latency (by operation type), throughput, and what
//! each operation cost in server and client CPU per node count, with `summary.json`, `.hgrm` files and PNG
//! plots. It reaches nodes only over the network (`--node URL` for nodes elsewhere), knows nothing of their
//! storage, and drives redis-servers the same way (`--target redis`, over RESP) as a peer.
//!
//! A tour:
//! 1. [`router`]: which node owns a key (rendezvous or a consistent-hash ring, over a frozen hash).
//! 2. [`workload`]: what to send (workload mixes, uniform or Zipfian keys, self-checking values).
//! 3. [`nodes`]: start local nodes (this executable, as `harness node`, or `redis-server`) or name remote
//!    ones.
//! 4. [`load`]: connections per node, the closed or open request loop, warm-up, per-second intervals;
//!    [`client`] (HTTP/1.1) and [`resp`] (RESP) are the connections it uses, over [`wire`].
//! 5. [`cost`]: every server's CPU and memory, read from the server before and after the window.
//! 6. [`report`] and [`plot`]: the text summary, `summary.json`, `.hgrm` and PNGs.
//! 7. [`cli`]: the command line, and the `run` / `ring` commands that tie it together.

pub mod answer;
pub mod cli;
pub mod client;
pub mod compare;
pub mod cost;
pub mod hlog;
pub mod html;
pub mod load;
pub mod merge;
pub mod nodes;
pub mod outcome;
pub mod plot;
pub mod proxy;
pub mod report;
pub mod reshard;
pub mod resp;
pub mod router;
pub mod run;
pub mod secure;
pub mod stop;
pub mod target;
pub mod wire;
pub mod workload;

/// Sets up the may runtime for the load generator: `threads` unpinned workers, 64 KiB coroutine stacks.
/// Must run before any coroutine is spawned (and is not used by `harness node`, which sets its own).
pub fn configure_runtime(threads: usize) {
    may::config().set_workers(threads.max(1)).set_stack_size(0x2000);
    may::config().set_worker_pin(false);
}

/// `println!` that ends the run quietly when stdout is closed ([`stop::say`]).
#[macro_export]
macro_rules! say {
    () => {
        $crate::stop::say(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::stop::say(format_args!($($arg)*))
    };
}
