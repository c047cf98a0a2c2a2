//! The command line: `harness run`, `harness ring`, `harness node`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::cost::{Metered, Role, Snapshot};
use crate::load::{self, LoadSpec, OpKind, Protocol, Target};
use crate::nodes::{self, LocalNodeArgs, LocalNodes};
use crate::plot;
use crate::proxy::ProxyArgs;
use crate::report::{self, Preload, RunContext, RunSummary, Summary};
use crate::router::{self, RouterKind, RoutingArgs};
use crate::workload::{KeyChooser, KeyDist, WorkloadKind};

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

/// Node counts: `1..3`, `1..=3`, `2`, or `1,3`.
#[derive(Debug, Clone)]
pub struct NodeCounts(pub Vec<usize>);

impl std::str::FromStr for NodeCounts {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}`: expected a count (2), a range (1..3) or a list (1,3)");
        let counts: Vec<usize> = if let Some((a, b)) = s.split_once("..") {
            let a: usize = a.parse().map_err(|_| bad())?;
            let b: usize = b.trim_start_matches('=').parse().map_err(|_| bad())?;
            (a..=b).collect()
        } else {
            s.split(',').map(|p| p.trim().parse().map_err(|_| bad())).collect::<Result<_, _>>()?
        };
        if counts.is_empty() || counts.contains(&0) {
            return Err(bad());
        }
        Ok(NodeCounts(counts))
    }
}

/// What `harness run` benchmarks (`--target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// OTKV nodes, over HTTP.
    Otkv,
    /// redis-server, over RESP, with the same client, routing, workload and checks.
    Redis,
}

#[derive(Debug, Args, serde::Serialize)]
struct RunArgs {
    /// What to benchmark: otkv, or redis (redis-server over RESP: the same client, routing, workload and
    /// value checks, so the reports read as one table); `otkv,redis` runs both into one comparison.
    /// Local redis-servers need `redis-server` on PATH; remote ones are `--node redis://HOST:PORT`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "otkv")]
    target: Vec<TargetKind>,
    /// Node counts to run, in order: `1..3` runs 1, 2 and 3 nodes. [default: 1..3; with --node: all given]
    #[arg(long, value_name = "RANGE")]
    #[serde(skip)]
    nodes: Option<NodeCounts>,
    /// Target an already-running node (repeatable), e.g. http://10.0.0.5:7070, instead of starting nodes.
    #[arg(long = "node", value_name = "URL")]
    node_urls: Vec<String>,
    #[command(flatten)]
    #[serde(flatten)]
    local: LocalNodeArgs,
    #[command(flatten)]
    #[serde(flatten)]
    routing: RoutingArgs,
    /// Send every request through this `harness proxy` (http://HOST:PORT) instead of routing on the
    /// client; one run, at the proxy's own node count.
    #[arg(long, value_name = "URL", conflicts_with_all = ["node_urls", "via_proxy"])]
    proxy: Option<String>,
    /// For each node count, run twice: routed by the client, then through a `harness proxy` started in
    /// front of the same nodes (one comparison table: what the hop costs).
    #[arg(long)]
    via_proxy: bool,
    /// What to send: seed (set each key, then read it back), ycsb-a (50/50 read/update), ycsb-b (95/5),
    /// ycsb-c (read only), put, get.
    #[arg(long, value_enum, default_value = "ycsb-b")]
    workload: WorkloadKind,
    /// Size of the key space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Key popularity: uniform, or zipf (YCSB's, θ = 0.99).
    #[arg(long, value_enum, default_value = "uniform")]
    key_dist: KeyDist,
    /// Connections in all, spread over the nodes in proportion to the work routing sends them.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long to measure each node count (e.g. 10s, 1m). Ignored with --ops.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_secs")]
    duration: Duration,
    /// Stop each node count after this many operations instead of after --duration.
    #[arg(long)]
    ops: Option<u64>,
    /// Share of updates done as a read-modify-write: GET (its ETag), then PUT with If-Match; a 412
    /// (another writer got there first) counts as a conflict, not an error. 0..=1; OTKV only.
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    cas_share: f64,
    /// Writes expire after this many seconds (PUT ?ttl=, Redis SET EX).
    #[arg(long, value_name = "SECONDS")]
    ttl: Option<u64>,
    /// Load to run before each measured window, reported apart and not measured: cold caches and
    /// connection set-up stay out of the figures (its connections carry on into the window). 0s: none.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_secs")]
    warmup: Duration,
    /// Requests in flight per connection (closed loop).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Open loop: send this many ops/s in total on a fixed schedule; latency counts from each request's
    /// intended send time (coordinated omission corrected, as wrk2).
    #[arg(long, value_name = "OPS_PER_SEC")]
    rate: Option<f64>,
    /// A request with no answer after this long counts as a timeout error.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_secs")]
    timeout: Duration,
    /// Client worker threads (like wrk -t).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Where summary.json, the .hgrm files and the plots go.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Print summary.json on stdout (the text report then goes to stderr).
    #[arg(long)]
    json: bool,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
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

/// Runs a parsed command line.
pub fn execute(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Node(args) => {
            otkv_adapter_http::init_logging();
            otkv_adapter_http::run(args.server).map_err(|e| e.to_string())
        }
        Command::Ring(args) => {
            ring(&args);
            Ok(())
        }
        Command::Run(args) => run(&args),
        Command::Proxy(args) => crate::proxy::run(&args),
    }
}

fn ring(args: &RingArgs) {
    let n = args.nodes.max(1);
    println!("{} keys, {n} nodes, then {} nodes", args.keys, n + 1);
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
        println!("\n{label}");
        let list: Vec<String> =
            shares.iter().enumerate().map(|(i, s)| format!("node-{i} {:.2}%", s * 100.0)).collect();
        println!("  shares       {}", list.join("  "));
        println!("  spread       largest deviation from 1/{n}: {:.2}% of the ideal share", worst * 100.0);
        let (moved, only_new) = router::movement(before.as_ref(), after.as_ref(), args.keys);
        println!(
            "  {n} -> {} nodes  {:.2}% of keys moved (ideal {:.2}%), {}",
            n + 1,
            moved * 100.0,
            100.0 / (n + 1) as f64,
            if only_new { "all onto the new node" } else { "SOME BETWEEN OLD NODES" }
        );
    }
}

fn run(args: &RunArgs) -> Result<(), String> {
    if args.rate.is_some() && args.pipeline > 1 {
        return Err("--rate (open loop) sends one request at a time per connection: drop --pipeline".into());
    }
    if !(0.0..=1.0).contains(&args.cas_share) {
        return Err("--cas-share is a fraction of the updates, 0 to 1".into());
    }
    if args.cas_share > 0.0 {
        if args.target.contains(&TargetKind::Redis) {
            return Err("--cas-share uses OTKV's ETag/If-Match: drop it with --target redis".into());
        }
        if args.workload.read_fraction() >= 1.0 || args.workload == WorkloadKind::Seed {
            return Err(format!(
                "--cas-share turns updates into read-modify-writes; the {} workload has none",
                report::wire_name(&args.workload)
            ));
        }
    }
    if args.ttl.is_some_and(|t| t == 0 || t > 10 * 365 * 24 * 3600) {
        return Err("--ttl is whole seconds, 1 to ten years".into());
    }
    if args.value_size == 0 || args.keys == 0 || args.connections == 0 {
        return Err("--keys, --value-size and --connections must be positive".into());
    }
    let mut kinds = args.target.clone();
    kinds.dedup();
    let remote = if args.node_urls.is_empty() { None } else { Some(nodes::remote_targets(&args.node_urls)?) };
    if let Some(r) = &remote {
        let want = |k: TargetKind| if k == TargetKind::Redis { Protocol::Resp } else { Protocol::Http };
        if kinds.len() > 1 {
            return Err("--node: give one --target (the nodes are one kind)".into());
        }
        if let Some(t) = r.iter().find(|t| t.protocol != want(kinds[0])) {
            let hint = if t.protocol == Protocol::Resp { ": add --target redis" } else { "" };
            return Err(format!(
                "--node {} does not match --target {}{hint}",
                t.url(),
                report::wire_name(&kinds[0])
            ));
        }
    }
    if kinds.contains(&TargetKind::Redis) && (args.proxy.is_some() || args.via_proxy) {
        return Err(
            "--target redis: harness proxy speaks OTKV's HTTP API, not RESP; drop --proxy/--via-proxy".into(),
        );
    }
    let proxy = match &args.proxy {
        Some(url) => {
            let mut target = nodes::remote_targets(std::slice::from_ref(url))?.remove(0);
            target.name = "proxy".into();
            let behind = nodes::proxy_nodes(&target)?;
            Some((target, behind))
        }
        None => None,
    };
    let counts = match (&args.nodes, &remote, &proxy) {
        (_, _, Some((_, behind))) => vec![behind.len()],
        (Some(c), Some(r), None) => {
            if let Some(&too_many) = c.0.iter().find(|&&n| n > r.len()) {
                return Err(format!(
                    "--nodes asks for {too_many} nodes but only {} --node URLs were given",
                    r.len()
                ));
            }
            c.0.clone()
        }
        (Some(c), None, None) => c.0.clone(),
        (None, Some(r), None) => vec![r.len()],
        (None, None, None) => vec![1, 2, 3],
    };
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    crate::configure_runtime(args.threads);
    let data = tempfile::Builder::new().prefix("otkv-harness-").tempdir().map_err(|e| e.to_string())?;
    let say = |line: String| if args.json { eprintln!("{line}") } else { println!("{line}") };
    say(format!(
        "harness: {} workload, {} keys of {} B ({}), {} connections, {}, warm-up {:?}, router {}, node counts {:?}",
        report::wire_name(&args.workload),
        args.keys,
        args.value_size,
        report::wire_name(&args.key_dist),
        args.connections,
        match (args.ops, args.rate) {
            (Some(n), _) => format!("{n} ops per node count"),
            (None, Some(r)) => format!("open loop at {r} ops/s for {:?}", args.duration),
            (None, None) => format!("closed loop for {:?}, pipeline {}", args.duration, args.pipeline),
        },
        args.warmup,
        if proxy.is_some() { "of the proxy".to_string() } else { args.routing.describe() },
        counts
    ));
    if remote.is_none() && proxy.is_none() {
        let names: Vec<String> = kinds.iter().map(report::wire_name).collect();
        say(format!(
            "nodes: local {}, engine {} durability {}, {} cores here (nodes and client share them)",
            names.join(" then "),
            args.local.engine,
            args.local.durability,
            crate::cost::cores()
        ));
    }
    if args.via_proxy {
        say("each node count runs twice: routed by the client, then through harness proxy".into());
    }

    let mut runs = Vec::new();
    let mut spectra = Vec::new();
    for &kind in &kinds {
        for &n in &counts {
            let (mut local, targets): (Option<LocalNodes>, Vec<Target>) = match (&proxy, &remote) {
                (Some((p, _)), _) => (None, vec![p.clone()]),
                (None, Some(r)) => (None, r[..n].to_vec()),
                (None, None) => {
                    let root = data.path().join(format!("{}-{n}nodes", report::wire_name(&kind)));
                    let local = match kind {
                        TargetKind::Otkv => nodes::start_local(n, &args.local.options(), &root)?,
                        TargetKind::Redis => nodes::start_local_redis(n, &args.local.options(), &root)?,
                    };
                    let targets = local.targets.clone();
                    (Some(local), targets)
                }
            };
            let as_nodes =
                |ts: &[Target]| ts.iter().map(|t| Metered { target: t.clone(), role: Role::Node }).collect();
            let mut measured = Vec::new();
            if let Some((p, behind)) = &proxy {
                let mut metered: Vec<Metered> = as_nodes(behind);
                metered.push(Metered { target: p.clone(), role: Role::Proxy });
                let plan = Plan { kind, nodes: n, targets: &targets, via: Some("proxy"), metered: &metered };
                measured.push(measure(args, &plan, local.as_mut())?);
            } else {
                let metered: Vec<Metered> = as_nodes(&targets);
                let plan = Plan { kind, nodes: n, targets: &targets, via: None, metered: &metered };
                measured.push(measure(args, &plan, local.as_mut())?);
                if args.via_proxy {
                    let mut front = nodes::start_proxy(&targets, &args.routing)?;
                    let proxied = front.targets.clone();
                    let mut metered = metered.clone();
                    metered.push(Metered { target: proxied[0].clone(), role: Role::Proxy });
                    let plan =
                        Plan { kind, nodes: n, targets: &proxied, via: Some("proxy"), metered: &metered };
                    measured.push(measure(args, &plan, Some(&mut front))?);
                }
            }
            if let Some(mut l) = local {
                l.stop();
            }
            for (summary, spectrum) in measured {
                spectra.push((summary.label(), spectrum));
                runs.push(summary);
            }
        }
    }
    if !args.json {
        report::print_comparison(&runs);
    }

    let title = |what: &str| {
        let engine = if remote.is_some() || proxy.is_some() { "remote" } else { &args.local.engine };
        let who = if kinds == [TargetKind::Redis] {
            "Redis".to_string()
        } else {
            format!("OTKV ({engine} engine)")
        };
        let vs = if kinds.len() > 1 { " and Redis" } else { "" };
        format!("{who}{vs}: {what}")
    };
    for r in &runs {
        let path = args.out.join(format!("latency_{}.png", r.file_stem()));
        plot::latency_over_time(&path, r, &title(&format!("latency over time, {}", r.label())))
            .map_err(|e| format!("plot {}: {e}", path.display()))?;
    }
    plot::percentile_spectrum(&args.out.join("percentiles.png"), &spectra, &title("latency by percentile"))
        .map_err(|e| format!("plot percentiles: {e}"))?;
    plot::throughput(&args.out.join("throughput.png"), &runs, &title("throughput by node count"))
        .map_err(|e| format!("plot throughput: {e}"))?;
    plot::projection(&args.out.join("projected.png"), &runs, &title("measured vs projected throughput"))
        .map_err(|e| format!("plot projection: {e}"))?;

    let mut config = serde_json::to_value(args).map_err(|e| e.to_string())?;
    config["node_counts"] = serde_json::json!(counts);
    let summary = Summary { config, runs };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("summary.json"), &json)
        .map_err(|e| format!("cannot write summary.json: {e}"))?;
    if args.json {
        println!("{json}");
    }
    if args.local.keep_data {
        let kept = data.keep();
        eprintln!("data kept in {}", kept.display());
    }
    let errors: u64 = summary.runs.iter().map(|r| r.errors_total).sum();
    eprintln!(
        "results in {}/ (summary.json, *.hgrm, *.png){}",
        args.out.display(),
        if errors > 0 { "; there were errors" } else { "" }
    );
    Ok(())
}

/// One measured run: what it drives and which servers' cost it reads.
struct Plan<'a> {
    kind: TargetKind,
    /// Nodes in the cluster.
    nodes: usize,
    /// Where the load goes: the nodes, or one proxy in front of them.
    targets: &'a [Target],
    /// `Some("proxy")` when `targets` is a proxy.
    via: Option<&'a str>,
    /// Every server whose CPU and memory the run reads: the nodes, and the proxy if there is one.
    metered: &'a [Metered],
}

/// Runs the workload once as `plan` says, writes its `.hgrm` files, prints its summary. `started`: the
/// processes behind the targets that the harness started, to report any that exited during the run.
fn measure(
    args: &RunArgs,
    plan: &Plan<'_>,
    started: Option<&mut LocalNodes>,
) -> Result<(RunSummary, Vec<(f64, f64)>), String> {
    let (n, targets) = (plan.nodes, plan.targets);
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let router = args.routing.build(&names);
    let spec = LoadSpec {
        workload: args.workload,
        keys: args.keys,
        value_size: args.value_size,
        chooser: KeyChooser::new(args.key_dist, args.keys),
        connections: args.connections,
        duration: if args.ops.is_some() { None } else { Some(args.duration) },
        ops: args.ops,
        pipeline: args.pipeline,
        rate: args.rate,
        timeout: args.timeout,
        warmup: Some(args.warmup),
        cas_share: args.cas_share,
        ttl_secs: args.ttl,
        progress: true,
    };
    let through = plan.via.map(|v| format!(" via {v}")).unwrap_or_default();
    let target_name = report::wire_name(&plan.kind);
    eprintln!("-- {n} {target_name} node{}{through}: {}", if n == 1 { "" } else { "s" }, addrs(targets));
    // Every server must answer before any load: an unreachable node is a clear error, not a run of errors.
    if let Some(e) = Snapshot::take(plan.metered).servers.into_iter().find_map(Result::err) {
        return Err(e);
    }
    let preload = args.workload.needs_preload().then(|| {
        eprintln!("   preloading {} keys (untimed)...", args.keys);
        let (took, tally) = load::preload(&spec, router.as_ref(), targets);
        Preload { keys: args.keys, seconds: took.as_secs_f64(), errors: tally.total() }
    });
    let mut before = None;
    let outcome =
        load::run(&spec, router.as_ref(), targets, &mut || before = Some(Snapshot::take(plan.metered)));
    let after = Snapshot::take(plan.metered);
    let before = before.unwrap_or_else(|| after.clone());
    let exits = started.map(|l| l.exit_statuses()).unwrap_or_else(|| vec![None; targets.len()]);
    let node_info: Vec<(String, String, Option<String>)> =
        targets.iter().zip(exits).map(|(t, e)| (t.name.clone(), t.addr.to_string(), e)).collect();
    let cx = RunContext {
        nodes: n,
        via: plan.via,
        target: &target_name,
        targets: &node_info,
        metered: plan.metered,
        before: &before,
        after: &after,
    };
    let summary = RunSummary::new(&cx, &outcome, preload);
    report::write_hgrm(&args.out.join(&summary.hgrm), &outcome.histogram)
        .map_err(|e| format!("cannot write {}: {e}", summary.hgrm))?;
    for (kind, h) in OpKind::ALL.iter().zip(&outcome.by_op) {
        if let Some(op) = summary.by_op.get(&report::wire_name(kind)) {
            report::write_hgrm(&args.out.join(&op.hgrm), h)
                .map_err(|e| format!("cannot write {}: {e}", op.hgrm))?;
        }
    }
    let spectrum: Vec<(f64, f64)> = outcome
        .histogram
        .iter_quantiles(5)
        .map(|v| (v.value_iterated_to() as f64 / 1000.0, v.quantile_iterated_to()))
        .collect();
    if args.json {
        print_to_stderr(&summary);
    } else {
        report::print_run(&summary);
    }
    Ok((summary, spectrum))
}

fn addrs(targets: &[Target]) -> String {
    targets.iter().map(|t| format!("{}={}", t.name, t.addr)).collect::<Vec<_>>().join(" ")
}

fn print_to_stderr(r: &RunSummary) {
    eprintln!(
        "   {}: {} ops/s, p50 {:.3} ms, p99 {:.3} ms, {} errors",
        r.label(),
        report::group(r.throughput),
        r.latency_ms.p50,
        r.latency_ms.p99,
        r.errors_total
    );
}
