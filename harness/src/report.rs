//! What a run reports: the progress line, the per-run summary, the comparison table, `summary.json` and
//! `.hgrm` percentile distributions.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;

use crate::cost::{Metered, Role, Snapshot};
use crate::run_outcome::{group, wire_name, Interval, OpKind, RunOutcome};

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Latency {
    /// From a histogram in microseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        Latency {
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// One node's part in a run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeShare {
    /// Routing name.
    pub name: String,
    /// Address.
    pub addr: String,
    /// Connections it was given.
    pub connections: usize,
    /// Operations it answered.
    pub ops: u64,
    /// Its fraction of all answered operations.
    pub share: f64,
    /// Whether it was still running at the end (nodes the harness started), with its exit status if not.
    pub exited: Option<String>,
    /// Its CPU time per request it answered in the measured window, µs (from its own counters).
    pub cpu_us_per_op: Option<f64>,
    /// Its resident memory at the end, bytes.
    pub rss_bytes: Option<u64>,
}

/// One kind of operation's part in a run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OpSummary {
    /// Operations of this kind answered correctly.
    pub ops: u64,
    /// Their latency, ms.
    pub latency_ms: Latency,
    /// Their `.hgrm` file, relative to the output directory.
    pub hgrm: String,
    /// Their interval log (`.hlog`), relative to the output directory.
    pub hlog: String,
}

/// The untimed warm-up before the measured window.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Warmup {
    /// Seconds it ran.
    pub seconds: f64,
    /// Operations answered correctly.
    pub ops: u64,
    /// Errors.
    pub errors: u64,
}

/// What one server cost in the measured window, from its own counters.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServerCost {
    /// Routing name (`node-0`, ..., or `proxy`).
    pub name: String,
    /// `node` or `proxy`.
    pub role: Role,
    /// Where it was read.
    pub url: String,
    /// CPU seconds (user + system) it used in the window.
    pub cpu_seconds: Option<f64>,
    /// Requests it says it answered in the window.
    pub requests: Option<u64>,
    /// `cpu_seconds` per request, µs.
    pub cpu_us_per_op: Option<f64>,
    /// Resident memory at the end of the window, bytes.
    pub rss_bytes: Option<u64>,
    /// Why it could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a run cost: CPU per operation of the servers and of the harness, and what it projects.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Cost {
    /// Cores of the machine the harness runs on.
    pub cores: usize,
    /// CPU seconds of all nodes together in the window (none if one could not be read).
    pub server_cpu_seconds: Option<f64>,
    /// The harness's CPU seconds in the window.
    pub client_cpu_seconds: f64,
    /// Each server read.
    pub servers: Vec<ServerCost>,
}

/// Everything measured at one node count.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// How many nodes.
    pub nodes: usize,
    /// Members of each node's replica group (1: plain nodes).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub replicas: usize,
    /// `proxy` when every request went through `harness proxy` (then `per_node` is the proxy); absent
    /// when the harness routed each key itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// What served it: `otkv` or `redis`.
    pub target: String,
    /// Operations answered correctly.
    pub ops: u64,
    /// Seconds of the measured part.
    pub duration_s: f64,
    /// Operations per second.
    pub throughput: f64,
    /// Latency, ms.
    pub latency_ms: Latency,
    /// Operations and latency by kind (`read`, `write`), for the kinds the workload issued.
    pub by_op: BTreeMap<String, OpSummary>,
    /// The nodes' CPU per operation, µs: all nodes' CPU time in the window ÷ `ops`.
    pub server_cpu_us_per_op: Option<f64>,
    /// The harness's CPU per operation, µs.
    pub client_cpu_us_per_op: Option<f64>,
    /// The proxy's CPU per operation, µs (runs through a proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_cpu_us_per_op: Option<f64>,
    /// Projected operations per second if every node had a core to itself and the client were not the
    /// limit: nodes ÷ `server_cpu_us_per_op` (a proxy in the path is not counted).
    pub projected_throughput: Option<f64>,
    /// The figures behind the CPU columns.
    pub cost: Cost,
    /// Errors by kind (`connect`, `timeout`, `io`, `protocol`, `http_NNN`, `wrong_value`).
    pub errors: BTreeMap<String, u64>,
    /// Total errors.
    pub errors_total: u64,
    /// Read-modify-writes (`--cas-share`) that found the key changed by another writer (412) and wrote
    /// nothing: contention, not errors, and not counted in `ops`.
    pub conflicts: u64,
    /// Per node.
    pub per_node: Vec<NodeShare>,
    /// Untimed preload: keys written and seconds taken.
    pub preload: Option<Preload>,
    /// Untimed warm-up just before the window.
    pub warmup: Option<Warmup>,
    /// Second by second.
    pub timeline: Vec<Interval>,
    /// The `.hgrm` file of this run, relative to the output directory.
    pub hgrm: String,
    /// Its interval log (`.hlog`, one histogram per second), relative to the output directory.
    pub hlog: String,
    /// This client's run, named once: `harness merge` refuses to count it twice.
    pub run_id: String,
    /// When the measured window opened and closed, seconds since the Unix epoch (this client's clock).
    pub window_start: f64,
    /// See `window_start`.
    pub window_end: f64,
    /// `--start-at`, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<f64>,
    /// How much later than planned (`--start-at` + warm-up) the window opened, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_offset_ms: Option<f64>,
    /// A merged run (`harness merge`): the client runs it combines, by `run_id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    /// A merged run: each client's part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<ClientShare>,
    /// Interrupted in its window: `duration_s` and the figures cover the part actually measured.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// One client's part in a merged run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClientShare {
    /// Its result directory.
    pub dir: String,
    /// Its run (or, for an earlier merge, the runs it combined).
    pub run_ids: Vec<String>,
    /// Operations it measured.
    pub ops: u64,
    /// Its rate in the common window, ops/s.
    pub throughput: f64,
    /// Its window, seconds since the Unix epoch.
    pub window_start: f64,
    /// See `window_start`.
    pub window_end: f64,
    /// How much later than planned its window opened (`--start-at`), ms.
    pub start_offset_ms: Option<f64>,
}

/// The untimed preload of a read workload.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Preload {
    /// Keys written.
    pub keys: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// Errors while preloading.
    pub errors: u64,
}

/// The whole `summary.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// The settings of the run.
    pub config: serde_json::Value,
    /// The run was interrupted (SIGINT, SIGTERM, a closed stdout): it holds what was measured until then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// One entry per node count.
    pub runs: Vec<RunSummary>,
}

fn one() -> usize {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_one(n: &usize) -> bool {
    *n == 1
}

/// Where a run went, for [`RunSummary::new`].
#[derive(Debug, Clone)]
pub struct RunContext<'a> {
    /// How many nodes.
    pub nodes: usize,
    /// Members of each node's replica group (1: plain nodes).
    pub replicas: usize,
    /// `Some("proxy")` when every request went through a proxy.
    pub via: Option<&'a str>,
    /// `otkv` or `redis`.
    pub target: &'a str,
    /// What the load went to (the nodes, or the proxy), as (name, address, exit status if it exited).
    pub targets: &'a [(String, String, Option<String>)],
    /// The servers whose cost was read, and the readings before and after the window.
    pub metered: &'a [Metered],
    /// Readings when the window opened.
    pub before: &'a Snapshot,
    /// Readings when it closed.
    pub after: &'a Snapshot,
}

impl RunSummary {
    /// Builds the summary of one run.
    pub fn new(cx: &RunContext<'_>, outcome: &RunOutcome, preload: Option<Preload>) -> Self {
        let secs = outcome.elapsed.as_secs_f64().max(1e-9);
        let cost = cost(cx, outcome.ops);
        let server = |name: &str| cost.servers.iter().find(|s| s.name == name);
        let per_node = cx
            .targets
            .iter()
            .enumerate()
            .map(|(i, (name, addr, exited))| NodeShare {
                name: name.clone(),
                addr: addr.clone(),
                connections: outcome.per_node_connections[i],
                ops: outcome.per_node_ops[i],
                share: outcome.per_node_ops[i] as f64 / outcome.ops.max(1) as f64,
                exited: exited.clone(),
                cpu_us_per_op: server(name).and_then(|s| s.cpu_us_per_op),
                rss_bytes: server(name).and_then(|s| s.rss_bytes),
            })
            .collect();
        let label_stem = format!(
            "{}nodes{}{}",
            cx.nodes,
            if cx.target == "otkv" { String::new() } else { format!("-{}", cx.target) },
            cx.via.map(|v| format!("-{v}")).unwrap_or_default()
        );
        let by_op = OpKind::ALL
            .iter()
            .zip(&outcome.by_op)
            .filter(|(_, h)| !h.is_empty())
            .map(|(kind, h)| {
                let name = wire_name(kind);
                let (hgrm, hlog) = (format!("{label_stem}-{name}.hgrm"), format!("{label_stem}-{name}.hlog"));
                (name, OpSummary { ops: h.len(), latency_ms: Latency::from_histogram(h), hgrm, hlog })
            })
            .collect();
        let per_op = |cpu: Option<f64>| cpu.filter(|_| outcome.ops > 0).map(|c| c * 1e6 / outcome.ops as f64);
        let server_cpu_us_per_op = per_op(cost.server_cpu_seconds);
        let proxy_cpu: Option<f64> = cost
            .servers
            .iter()
            .filter(|s| s.role == Role::Proxy)
            .map(|s| s.cpu_seconds)
            .sum::<Option<f64>>()
            .filter(|_| cx.via.is_some());
        RunSummary {
            nodes: cx.nodes,
            replicas: cx.replicas,
            via: cx.via.map(str::to_owned),
            target: cx.target.to_owned(),
            ops: outcome.ops,
            duration_s: secs,
            throughput: outcome.ops as f64 / secs,
            latency_ms: Latency::from_histogram(&outcome.histogram),
            by_op,
            server_cpu_us_per_op,
            client_cpu_us_per_op: per_op(Some(cost.client_cpu_seconds)),
            proxy_cpu_us_per_op: per_op(proxy_cpu),
            projected_throughput: server_cpu_us_per_op
                .filter(|&c| c > 0.0)
                .map(|c| cx.nodes as f64 * 1e6 / c),
            cost,
            errors: outcome.tally.by_kind(),
            errors_total: outcome.tally.total(),
            conflicts: outcome.tally.conflicts(),
            per_node,
            preload,
            warmup: outcome.warmup.as_ref().map(|w| Warmup {
                seconds: w.elapsed.as_secs_f64(),
                ops: w.ops,
                errors: w.errors,
            }),
            timeline: outcome.timeline.clone(),
            hgrm: format!("{label_stem}.hgrm"),
            hlog: format!("{label_stem}.hlog"),
            run_id: format!("{:016x}", fastrand::u64(..)),
            window_start: crate::hlog::unix_secs(outcome.window_start),
            window_end: crate::hlog::unix_secs(outcome.window_start) + secs,
            start_at: None,
            start_offset_ms: None,
            merged_from: Vec::new(),
            clients: Vec::new(),
            interrupted: false,
        }
    }

    /// `2 nodes`, `2 nodes via proxy`, `2 redis nodes`, or `2 groups of 3`.
    pub fn label(&self) -> String {
        let via = self.via.as_deref().map(|v| format!(" via {v}")).unwrap_or_default();
        let target = if self.target == "otkv" { String::new() } else { format!("{} ", self.target) };
        let plural = if self.nodes == 1 { "" } else { "s" };
        if self.replicas > 1 {
            return format!("{} {target}group{plural} of {}{via}", self.nodes, self.replicas);
        }
        format!("{} {target}node{plural}{via}", self.nodes)
    }

    /// `2nodes`, or `2nodes-proxy`: how this run's files are named.
    pub fn file_stem(&self) -> String {
        self.hgrm.trim_end_matches(".hgrm").to_string()
    }
}

/// The cost of the window between `cx.before` and `cx.after`, in which the harness counted `ops`.
fn cost(cx: &RunContext<'_>, ops: u64) -> Cost {
    let servers: Vec<ServerCost> = cx
        .metered
        .iter()
        .zip(cx.before.servers.iter().zip(&cx.after.servers))
        .map(|(m, pair)| {
            let mut row = ServerCost {
                name: m.target.name.clone(),
                role: m.role,
                url: m.target.url(),
                cpu_seconds: None,
                requests: None,
                cpu_us_per_op: None,
                rss_bytes: None,
                error: None,
            };
            match pair {
                (Ok(b), Ok(a)) => {
                    let cpu = (a.cpu_seconds - b.cpu_seconds).max(0.0);
                    // A server that does not count its requests is charged for all of the run's.
                    let requests = a.requests.zip(b.requests).map(|(a, b)| a.saturating_sub(b));
                    let per = requests.unwrap_or(ops);
                    row.cpu_seconds = Some(cpu);
                    row.requests = requests;
                    row.cpu_us_per_op = (per > 0).then(|| cpu * 1e6 / per as f64);
                    row.rss_bytes = Some(a.rss_bytes);
                }
                (Err(e), _) | (_, Err(e)) => row.error = Some(e.clone()),
            }
            row
        })
        .collect();
    let nodes: Vec<&ServerCost> = servers.iter().filter(|s| s.role == Role::Node).collect();
    let server_cpu_seconds = if nodes.is_empty() { None } else { nodes.iter().map(|s| s.cpu_seconds).sum() };
    Cost {
        cores: crate::cost::cores(),
        server_cpu_seconds,
        client_cpu_seconds: (cx.after.client_cpu_seconds - cx.before.client_cpu_seconds).max(0.0),
        servers,
    }
}

/// `12.3`, or `-` when there is no figure.
fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

/// Bytes as MiB, or `-`.
fn mib(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
}

/// The summary of one node count, as text.
pub fn print_run(r: &RunSummary) {
    let l = &r.latency_ms;
    crate::say!("\n== {}", r.label());
    if let Some(p) = &r.preload {
        crate::say!("   preload (untimed): {} keys in {:.2} s, {} errors", p.keys, p.seconds, p.errors);
    }
    if let Some(w) = &r.warmup {
        let rate = group(w.ops as f64 / w.seconds.max(1e-9));
        crate::say!(
            "   warm-up (untimed): {} ops in {:.2} s = {rate} ops/s, {} errors",
            w.ops,
            w.seconds,
            w.errors
        );
    }
    if let Some(off) = r.start_offset_ms {
        crate::say!("   start      the window opened {off:.1} ms after --start-at + warm-up");
    }
    crate::say!("   ops        {} in {:.2} s = {} ops/s", r.ops, r.duration_s, group(r.throughput));
    crate::say!(
        "   latency ms mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        l.mean,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max
    );
    if r.by_op.len() > 1 {
        for (kind, op) in &r.by_op {
            let l = &op.latency_ms;
            crate::say!(
                "     {kind:<6} {:>9} ops  p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                op.ops,
                l.p50,
                l.p99,
                l.p999,
                l.max
            );
        }
    }
    let errors = if r.errors.is_empty() {
        "none".to_string()
    } else {
        r.errors.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    };
    crate::say!("   errors     {} ({errors})", r.errors_total);
    if r.conflicts > 0 || r.by_op.contains_key("cas") {
        crate::say!(
            "   conflicts  {} read-modify-writes lost to another writer (412; not errors, not in ops)",
            r.conflicts
        );
    }
    for n in &r.per_node {
        let status = n.exited.as_deref().map(|e| format!("  EXITED DURING RUN: {e}")).unwrap_or_default();
        crate::say!(
            "   {:<8} {:<21} {:>3} conns  {:>10} ops  {:>5.1}%  cpu {:>6} us/op  rss {:>10}{status}",
            n.name,
            n.addr,
            n.connections,
            n.ops,
            n.share * 100.0,
            opt(n.cpu_us_per_op, 2),
            mib(n.rss_bytes),
        );
    }
    for s in r.cost.servers.iter().filter(|s| !r.per_node.iter().any(|n| n.name == s.name)) {
        crate::say!(
            "   {:<8} {:<21} (behind the proxy)  cpu {:>6} us/op  rss {:>10}",
            s.name,
            s.url.trim_start_matches("http://"),
            opt(s.cpu_us_per_op, 2),
            mib(s.rss_bytes)
        );
    }
    for s in r.cost.servers.iter().filter(|s| s.error.is_some()) {
        crate::say!("   cost: {}", s.error.as_deref().unwrap_or_default());
    }
    let proxy = r.proxy_cpu_us_per_op.map(|p| format!(", proxy {p:.2}")).unwrap_or_default();
    crate::say!(
        "   cpu us/op  nodes {}{proxy}, client {} ({} cores here)",
        opt(r.server_cpu_us_per_op, 2),
        opt(r.client_cpu_us_per_op, 2),
        r.cost.cores
    );
    if let Some(p) = r.projected_throughput {
        crate::say!(
            "   projected  {} ops/s with a core per node and the client not the limit \
             ({} nodes ÷ {:.2} us/op); measured {}",
            group(p),
            r.nodes,
            r.server_cpu_us_per_op.unwrap_or_default(),
            group(r.throughput)
        );
    }
}

/// The comparison of all runs, as a table.
pub fn print_comparison(runs: &[RunSummary]) {
    crate::say!(
        "\n== comparison (cpu: µs per operation, from the servers' own counters; projected: a core per node)"
    );
    crate::say!(
        "   {:<16} {:>10} {:>8} {:>8} {:>8} {:>8} {:>6} {:>8} {:>8} {:>11}",
        "nodes",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        "srv cpu",
        "cli cpu",
        "projected"
    );
    for r in runs {
        let l = &r.latency_ms;
        let via = r.via.as_deref().map(|v| format!(" via {v}")).unwrap_or_default();
        let target = if r.target == "otkv" { String::new() } else { format!(" {}", r.target) };
        crate::say!(
            "   {:<16} {:>10} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>6} {:>8} {:>8} {:>11}",
            format!("{}{target}{via}", r.nodes),
            group(r.throughput),
            l.p50,
            l.p99,
            l.p999,
            l.max,
            r.errors_total,
            opt(r.server_cpu_us_per_op, 2),
            opt(r.client_cpu_us_per_op, 2),
            r.projected_throughput.map_or_else(|| "-".into(), group),
        );
    }
    let by_op: Vec<&RunSummary> = runs.iter().filter(|r| r.by_op.len() > 1).collect();
    if !by_op.is_empty() {
        crate::say!("\n   latency by operation (ms)   p50      p99    p99.9");
        for r in by_op {
            for (kind, op) in &r.by_op {
                let l = &op.latency_ms;
                crate::say!("   {:<20} {kind:<6} {:>8.3} {:>8.3} {:>8.3}", r.label(), l.p50, l.p99, l.p999);
            }
        }
    }
}

/// Writes a percentile distribution in `HdrHistogram`'s text format (what wrk2 prints with `--latency` and
/// what `HdrHistogram`'s plotter reads): values in milliseconds.
pub fn write_hgrm(path: &Path, h: &Histogram<u64>) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)")?;
    if h.is_empty() {
        writeln!(f, "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]", 0.0, 0.0)?;
        writeln!(f, "#[Max     = {:>12.3}, Total count    = {:>12}]", 0.0, 0)?;
        return f.flush();
    }
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 { format!("{:>14.2}", 1.0 / (1.0 - q)) } else { String::new() };
        writeln!(
            f,
            "{:>12.3} {:>14.12} {:>10} {inverse}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            v.count_since_last_iteration()
        )?;
    }
    writeln!(f, "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]", h.mean() / 1000.0, h.stdev() / 1000.0)?;
    writeln!(f, "#[Max     = {:>12.3}, Total count    = {:>12}]", h.max() as f64 / 1000.0, h.len())?;
    writeln!(f, "#[Buckets = {:>12}, SubBuckets     = {:>12}]", h.buckets(), h.distinct_values())?;
    f.flush()
}

/// Reads back the `(value ms, percentile)` rows of an `.hgrm` file.
pub fn read_hgrm(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let value = cols.next()?.parse().ok()?;
            let pct = cols.next()?.parse().ok()?;
            Some((value, pct))
        })
        .collect()
}
