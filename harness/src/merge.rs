//! `harness merge`: one report from the runs of several clients against the same nodes.
//!
//! Percentiles cannot be averaged, but histograms can be added: every run leaves its latencies as
//! interval logs ([`crate::hlog`]), and the merged latencies are the sum of all of them, exactly. The
//! rest adds up as it should: operations, errors and each node's operations are sums; throughput is the
//! sum of each client's rate inside the window all clients were measuring (the common window); a node's
//! CPU time is what it counted in that window (the clients' readings of the same counters, averaged)
//! divided by every client's operations on it.
//!
//! Runs that do not fit together are refused, saying what differs: another workload, key count or value
//! size, other node counts or nodes, windows that do not overlap, or one client's run given twice
//! (directly, or inside an earlier merge: a merged run lists the runs it combines).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use clap::Args;
use hdrhistogram::Histogram;

use crate::hlog::{self, LoggedInterval};
use crate::plot;
use crate::report::{self, ClientShare, Latency, OpSummary, RunSummary, ServerCost, Summary};
use crate::run_outcome::{group, new_histogram, Interval};

/// `harness merge`: combine the results of several clients.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Result directories of `harness run` (its --out), or of an earlier merge.
    #[arg(required = true, num_args = 2.., value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where the merged summary.json, .hgrm and .hlog files and plots go.
    #[arg(long, default_value = "merged")]
    pub out: PathBuf,
    /// Print the merged summary.json on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The settings that must agree for runs to be merged.
const SAME_CONFIG: [&str; 5] = ["workload", "keys", "value_size", "key_dist", "target"];

/// One input: its directory and summary.
struct Input {
    dir: PathBuf,
    summary: Summary,
}

/// Runs `harness merge`.
pub fn run(args: &MergeArgs) -> Result<(), String> {
    let inputs = args.dirs.iter().map(|d| load(d)).collect::<Result<Vec<_>, _>>()?;
    check_config(&inputs)?;
    let first = &inputs[0];
    let labels = |i: &Input| i.summary.runs.iter().map(RunSummary::label).collect::<Vec<_>>();
    for other in &inputs[1..] {
        if labels(other) != labels(first) {
            return Err(format!(
                "{} measured {:?} but {} measured {:?}: merge runs of the same node counts",
                first.dir.display(),
                labels(first),
                other.dir.display(),
                labels(other)
            ));
        }
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let mut runs = Vec::new();
    let mut spectra = Vec::new();
    for r in 0..first.summary.runs.len() {
        let parts: Vec<(&Input, &RunSummary)> = inputs.iter().map(|i| (i, &i.summary.runs[r])).collect();
        let (merged, histogram) = merge_run(&parts, &args.out)?;
        spectra.push((merged.label(), spectrum(&histogram)));
        if !args.json {
            print_merged(&merged);
        }
        runs.push(merged);
    }
    for r in &runs {
        let path = args.out.join(format!("latency_{}.png", r.file_stem()));
        plot::latency_over_time(&path, r, &format!("merged: latency over time, {}", r.label()))
            .map_err(|e| format!("plot {}: {e}", path.display()))?;
    }
    plot::percentile_spectrum(&args.out.join("percentiles.png"), &spectra, "merged: latency by percentile")
        .map_err(|e| format!("plot percentiles: {e}"))?;
    let mut config = first.summary.config.clone();
    config["merged_dirs"] =
        serde_json::json!(args.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>());
    let summary = Summary { config, interrupted: false, runs };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("summary.json"), &json)
        .map_err(|e| format!("cannot write summary.json: {e}"))?;
    if args.json {
        crate::say!("{json}");
    }
    eprintln!("merged results in {}/ (report.html, summary.json, *.hgrm, *.hlog, *.png)", args.out.display());
    Ok(())
}

fn load(dir: &Path) -> Result<Input, String> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let summary: Summary =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a harness summary: {e}", path.display()))?;
    if summary.runs.is_empty() {
        return Err(format!("{}: no runs", path.display()));
    }
    Ok(Input { dir: dir.to_owned(), summary })
}

fn check_config(inputs: &[Input]) -> Result<(), String> {
    let first = &inputs[0];
    for other in &inputs[1..] {
        for key in SAME_CONFIG {
            let (a, b) = (&first.summary.config[key], &other.summary.config[key]);
            if a != b {
                return Err(format!(
                    "{} ran {key} {a} but {} ran {key} {b}: merge runs of the same workload",
                    first.dir.display(),
                    other.dir.display()
                ));
            }
        }
    }
    Ok(())
}

/// The runs a summary run stands for: itself, or those an earlier merge combined.
fn run_ids(run: &RunSummary) -> Vec<String> {
    if run.merged_from.is_empty() {
        vec![run.run_id.clone()]
    } else {
        run.merged_from.clone()
    }
}

/// `node-0=127.0.0.1:7001 node-1=…`: a run's nodes, for comparison and messages.
fn node_set(run: &RunSummary) -> String {
    run.per_node.iter().map(|n| format!("{}={}", n.name, n.addr)).collect::<Vec<_>>().join(" ")
}

fn clock(t: f64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t.max(0.0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// Checks that the parts of one run fit together, and returns their common window.
fn check_parts(parts: &[(&Input, &RunSummary)]) -> Result<(f64, f64), String> {
    let (first_input, first) = parts[0];
    let label = first.label();
    let mut seen: HashMap<String, &Path> = HashMap::new();
    for (input, run) in parts {
        if node_set(run) != node_set(first) {
            return Err(format!(
                "{label}: {} measured nodes {} but {} measured {}: merge runs against the same nodes",
                first_input.dir.display(),
                node_set(first),
                input.dir.display(),
                node_set(run)
            ));
        }
        for id in run_ids(run) {
            if let Some(earlier) = seen.insert(id.clone(), &input.dir) {
                return Err(format!(
                    "{label}: client run {id} is in both {} and {}: each client's run may be merged once",
                    earlier.display(),
                    input.dir.display()
                ));
            }
        }
    }
    let start = parts.iter().map(|(_, r)| r.window_start).fold(f64::MIN, f64::max);
    let end = parts.iter().map(|(_, r)| r.window_end).fold(f64::MAX, f64::min);
    if end <= start {
        let windows: Vec<String> = parts
            .iter()
            .map(|(i, r)| format!("{} {} to {}", i.dir.display(), clock(r.window_start), clock(r.window_end)))
            .collect();
        return Err(format!(
            "{label}: the measured windows do not overlap ({}); start the clients together with --start-at",
            windows.join(", ")
        ));
    }
    Ok((start, end))
}

/// A client's rate inside the common window: the intervals that lie in it (whole), or, when none
/// does, its whole run.
fn rate_in(intervals: &[LoggedInterval], run: &RunSummary, (start, end): (f64, f64)) -> f64 {
    const SLACK: f64 = 0.05;
    let inside: Vec<&LoggedInterval> =
        intervals.iter().filter(|i| i.start >= start - SLACK && i.start + i.length <= end + SLACK).collect();
    let secs: f64 = inside.iter().map(|i| i.length).sum();
    if inside.is_empty() || secs <= 0.0 {
        return run.throughput;
    }
    inside.iter().map(|i| i.histogram.len()).sum::<u64>() as f64 / secs
}

/// Second-wide bins from `base`, each the sum of the intervals that start in it.
fn bins(all: &[LoggedInterval], base: f64) -> Vec<(f64, Histogram<u64>)> {
    let mut by_second: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    for i in all {
        let second = (i.start - base).max(0.0) as u64;
        let _ = by_second.entry(second).or_insert_with(new_histogram).add(&i.histogram);
    }
    by_second.into_iter().map(|(s, h)| (s as f64, h)).collect()
}

/// Merges one run across clients: writes its `.hgrm` and `.hlog` files into `out`.
fn merge_run(parts: &[(&Input, &RunSummary)], out: &Path) -> Result<(RunSummary, Histogram<u64>), String> {
    let window = check_parts(parts)?;
    let first = parts[0].1;
    let logs: Vec<Vec<LoggedInterval>> =
        parts.iter().map(|(i, r)| hlog::read(&i.dir.join(&r.hlog))).collect::<Result<_, _>>()?;
    let all: Vec<LoggedInterval> = logs.iter().flatten().cloned().collect();
    let histogram = hlog::total(&all);
    let base = parts.iter().map(|(_, r)| r.window_start).fold(f64::MAX, f64::min);
    let end = parts.iter().map(|(_, r)| r.window_end).fold(f64::MIN, f64::max);
    let stem = first.file_stem();
    // The merged interval log: every client's intervals, by second.
    let binned = bins(&all, base);
    write_log(out, &format!("{stem}.hlog"), base, &binned)?;
    report::write_hgrm(&out.join(format!("{stem}.hgrm")), &histogram)
        .map_err(|e| format!("{stem}.hgrm: {e}"))?;
    let mut by_op = BTreeMap::new();
    for kind in first.by_op.keys() {
        let mut intervals = Vec::new();
        for (i, r) in parts {
            let Some(theirs) = r.by_op.get(kind) else { continue };
            intervals.extend(hlog::read(&i.dir.join(&theirs.hlog))?);
        }
        let h = hlog::total(&intervals);
        let (hgrm, hlog_name) = (format!("{stem}-{kind}.hgrm"), format!("{stem}-{kind}.hlog"));
        report::write_hgrm(&out.join(&hgrm), &h).map_err(|e| format!("{hgrm}: {e}"))?;
        write_log(out, &hlog_name, base, &bins(&intervals, base))?;
        by_op.insert(
            kind.clone(),
            OpSummary { ops: h.len(), latency_ms: Latency::from_histogram(&h), hgrm, hlog: hlog_name },
        );
    }
    let ops: u64 = parts.iter().map(|(_, r)| r.ops).sum();
    let clients: Vec<ClientShare> = parts
        .iter()
        .zip(&logs)
        .map(|((i, r), log)| ClientShare {
            dir: i.dir.display().to_string(),
            run_ids: run_ids(r),
            ops: r.ops,
            throughput: rate_in(log, r, window),
            window_start: r.window_start,
            window_end: r.window_end,
            start_offset_ms: r.start_offset_ms,
        })
        .collect();
    let throughput = clients.iter().map(|c| c.throughput).sum();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for (_, r) in parts {
        for (k, n) in &r.errors {
            *errors.entry(k.clone()).or_default() += n;
        }
    }
    let (per_node, servers) = nodes(parts);
    let node_cpu: Option<f64> = servers.iter().map(|s| s.cpu_seconds).sum();
    let per_op = |cpu: Option<f64>| cpu.filter(|_| ops > 0).map(|c| c * 1e6 / ops as f64);
    let client_cpu: f64 = parts.iter().map(|(_, r)| r.cost.client_cpu_seconds).sum();
    let server_cpu_us_per_op = per_op(node_cpu);
    let mut cost = first.cost.clone();
    cost.server_cpu_seconds = node_cpu;
    cost.client_cpu_seconds = client_cpu;
    cost.servers = servers;
    let timeline = binned
        .iter()
        .map(|(t, h)| {
            let l = Latency::from_histogram(h);
            Interval {
                t: t + 1.0,
                ops: h.len(),
                ops_per_s: h.len() as f64,
                p50_ms: l.p50,
                p99_ms: l.p99,
                max_ms: l.max,
                errors: 0,
            }
        })
        .collect();
    let merged = RunSummary {
        replicas: first.replicas,
        ops,
        duration_s: window.1 - window.0,
        throughput,
        latency_ms: Latency::from_histogram(&histogram),
        by_op,
        server_cpu_us_per_op,
        client_cpu_us_per_op: per_op(Some(client_cpu)),
        proxy_cpu_us_per_op: None,
        projected_throughput: server_cpu_us_per_op.filter(|&c| c > 0.0).map(|c| first.nodes as f64 * 1e6 / c),
        cost,
        errors_total: errors.values().sum(),
        errors,
        conflicts: parts.iter().map(|(_, r)| r.conflicts).sum(),
        per_node,
        preload: None,
        warmup: None,
        timeline,
        hgrm: format!("{stem}.hgrm"),
        hlog: format!("{stem}.hlog"),
        run_id: format!("{:016x}", fastrand::u64(..)),
        window_start: base,
        window_end: end,
        start_at: first.start_at,
        start_offset_ms: None,
        merged_from: clients.iter().flat_map(|c| c.run_ids.clone()).collect(),
        clients,
        interrupted: parts.iter().any(|(_, r)| r.interrupted),
        ..first.clone()
    };
    Ok((merged, histogram))
}

/// Each node's operations (summed over the clients) and CPU time (the clients' readings averaged: they
/// read the same counters over nearly the same window), and its CPU per operation over all of them.
fn nodes(parts: &[(&Input, &RunSummary)]) -> (Vec<report::NodeShare>, Vec<ServerCost>) {
    let first = parts[0].1;
    let total: u64 = parts.iter().map(|(_, r)| r.ops).sum();
    let mut per_node = first.per_node.clone();
    let mut servers = Vec::new();
    for (k, node) in per_node.iter_mut().enumerate() {
        node.ops = parts.iter().map(|(_, r)| r.per_node.get(k).map_or(0, |n| n.ops)).sum();
        node.connections = parts.iter().map(|(_, r)| r.per_node.get(k).map_or(0, |n| n.connections)).sum();
        node.share = node.ops as f64 / total.max(1) as f64;
        let readings: Vec<&ServerCost> =
            parts.iter().filter_map(|(_, r)| r.cost.servers.iter().find(|s| s.name == node.name)).collect();
        let Some(model) = readings.first() else { continue };
        let cpu =
            readings.iter().map(|s| s.cpu_seconds).sum::<Option<f64>>().map(|c| c / readings.len() as f64);
        node.cpu_us_per_op = cpu.filter(|_| node.ops > 0).map(|c| c * 1e6 / node.ops as f64);
        servers.push(ServerCost {
            cpu_seconds: cpu,
            requests: Some(node.ops),
            cpu_us_per_op: node.cpu_us_per_op,
            rss_bytes: readings.iter().filter_map(|s| s.rss_bytes).max(),
            error: readings.iter().find_map(|s| s.error.clone()),
            ..(*model).clone()
        });
    }
    // Servers that are not load targets (the nodes behind a proxy) keep the first client's reading.
    for s in &first.cost.servers {
        if !servers.iter().any(|m| m.name == s.name) {
            servers.push(s.clone());
        }
    }
    (per_node, servers)
}

fn write_log(out: &Path, name: &str, base: f64, binned: &[(f64, Histogram<u64>)]) -> Result<(), String> {
    let second = std::time::Duration::from_secs(1);
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(base.max(0.0));
    let rows: Vec<_> =
        binned.iter().map(|(t, h)| (std::time::Duration::from_secs_f64(*t), second, h)).collect();
    hlog::write(&out.join(name), start, &rows)
}

/// `(ms, percentile)` points of a histogram, for the percentile plot.
pub fn spectrum(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    h.iter_quantiles(5).map(|v| (v.value_iterated_to() as f64 / 1000.0, v.quantile_iterated_to())).collect()
}

fn print_merged(r: &RunSummary) {
    crate::say!("\n== {} (merged from {} clients)", r.label(), r.clients.len());
    for c in &r.clients {
        let offset = c
            .start_offset_ms
            .map(|o| format!(", window opened {o:.1} ms after the planned start"))
            .unwrap_or_default();
        crate::say!(
            "   client {:<28} {:>10} ops  {:>10} ops/s in the common window{offset}",
            c.dir,
            c.ops,
            group(c.throughput)
        );
    }
    report::print_run(r);
}
