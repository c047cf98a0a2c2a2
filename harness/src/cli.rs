//! The command line: `harness run`, `merge`, `compare`, `ring`, `node`, `proxy`, and what each runs.

use clap::{Args, Parser, Subcommand};

use crate::compare::CompareArgs;
use crate::merge::MergeArgs;
use crate::proxy::ProxyArgs;
use crate::reshard::ReshardArgs;
use crate::router::{self, RouterKind};
use crate::run::RunArgs;

/// Benchmark OTKV: start nodes, route keys across them, drive load, report latency and throughput.
#[derive(Debug, Parser)]
#[command(name = "harness", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workload against 1, 2, ... N nodes (started locally, or given with --node) and compare.
    Run(RunArgs),
    /// Combine the results of several clients that ran against the same nodes (each its own `harness run
    /// --out DIR`, started together with --start-at) into one exact report: latencies from the merged
    /// histograms, throughput summed over the common window.
    Merge(MergeArgs),
    /// Two runs (or merged runs) side by side: throughput, percentiles per operation, CPU per operation,
    /// the change in percent, and one plot of both percentile curves.
    Compare(CompareArgs),
    /// Move the keys whose owner changes when a cluster's node set changes (--from the old set, --to the
    /// new one, each in order), with the nodes' conditional writes; resumable. Run it with the cluster at
    /// rest, before clients use the new set.
    Reshard(ReshardArgs),
    /// (Internal) remove DIR once the harness that started this dies: how a killed harness still leaves
    /// no temporary directory behind.
    #[command(hide = true)]
    Reap {
        /// The directory.
        dir: std::path::PathBuf,
    },
    /// Print how evenly each router spreads keys, and how many move when a node is added.
    Ring(RingArgs),
    /// Run one OTKV node (the same server as otkv-server; `harness run` starts its nodes this way).
    Node(NodeArgs),
    /// Serve a cluster on one address: forward each request to the node that owns its key (the same
    /// routing as `harness run`), merge listings, report health and stats for all nodes.
    Proxy(ProxyArgs),
}

#[derive(Debug, Args)]
struct NodeArgs {
    #[command(flatten)]
    server: otkv_adapter_http::ServerArgs,
}

#[derive(Debug, Args)]
struct RingArgs {
    /// Nodes before one is added.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Keys to route.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Virtual nodes per node for the ring.
    #[arg(long, default_value_t = 160)]
    vnodes: usize,
}

/// Runs a parsed command line; returns the exit status.
pub fn execute(cli: Cli) -> Result<u8, String> {
    let done = |r: Result<(), String>| r.map(|()| crate::shutdown::exit_status().unwrap_or(0));
    match cli.command {
        Command::Node(args) => {
            otkv_adapter_http::init_logging();
            otkv_adapter_http::run(args.server).map_err(|e| e.to_string()).map(|()| 0)
        }
        Command::Ring(args) => {
            ring(&args);
            done(Ok(()))
        }
        Command::Run(args) => crate::run::run(&args),
        Command::Merge(args) => done(crate::merge::run(&args)),
        Command::Compare(args) => done(crate::compare::run(&args)),
        Command::Proxy(args) => crate::proxy::run(&args).map(|()| 0),
        Command::Reshard(args) => crate::reshard::run(&args),
        Command::Reap { dir } => crate::shutdown::reap(&dir).map(|()| 0),
    }
}

fn ring(args: &RingArgs) {
    let n = args.nodes.max(1);
    crate::say!("{} keys, {n} nodes, then {} nodes", args.keys, n + 1);
    for kind in [RouterKind::Rendezvous, RouterKind::Ring] {
        let before = kind.build(&router::node_names(n), args.vnodes);
        let after = kind.build(&router::node_names(n + 1), args.vnodes);
        let shares = router::shares(before.as_ref(), args.keys);
        let ideal = 1.0 / n as f64;
        let worst = shares.iter().map(|s| (s - ideal).abs() / ideal).fold(0.0, f64::max);
        let label = match kind {
            RouterKind::Rendezvous => "rendezvous".to_string(),
            RouterKind::Ring => format!("ring ({} vnodes)", args.vnodes),
        };
        crate::say!("\n{label}");
        let list: Vec<String> =
            shares.iter().enumerate().map(|(i, s)| format!("node-{i} {:.2}%", s * 100.0)).collect();
        crate::say!("  shares       {}", list.join("  "));
        crate::say!("  spread       largest deviation from 1/{n}: {:.2}% of the ideal share", worst * 100.0);
        let (moved, only_new) = router::movement(before.as_ref(), after.as_ref(), args.keys);
        crate::say!(
            "  {n} -> {} nodes  {:.2}% of keys moved (ideal {:.2}%), {}",
            n + 1,
            moved * 100.0,
            100.0 / (n + 1) as f64,
            if only_new { "all onto the new node" } else { "SOME BETWEEN OLD NODES" }
        );
    }
}
