//! What a run reports: the progress line, the per-run summary, the comparison table, `summary.json` and
//! `.hgrm` percentile distributions.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::load::{Interval, RunOutcome};

/// Latency figures in milliseconds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, serde::Serialize)]
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
}

/// Everything measured at one node count.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// How many nodes.
    pub nodes: usize,
    /// `proxy` when every request went through `harness proxy` (then `per_node` is the proxy); absent
    /// when the harness routed each key itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Operations answered correctly.
    pub ops: u64,
    /// Seconds of the measured part.
    pub duration_s: f64,
    /// Operations per second.
    pub throughput: f64,
    /// Latency, ms.
    pub latency_ms: Latency,
    /// Errors by kind (`connect`, `timeout`, `io`, `protocol`, `http_NNN`, `wrong_value`).
    pub errors: BTreeMap<String, u64>,
    /// Total errors.
    pub errors_total: u64,
    /// Per node.
    pub per_node: Vec<NodeShare>,
    /// Untimed preload: keys written and seconds taken.
    pub preload: Option<Preload>,
    /// Second by second.
    pub timeline: Vec<Interval>,
    /// The `.hgrm` file of this run, relative to the output directory.
    pub hgrm: String,
}

/// The untimed preload of a read workload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Preload {
    /// Keys written.
    pub keys: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// Errors while preloading.
    pub errors: u64,
}

/// The whole `summary.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// The settings of the run.
    pub config: serde_json::Value,
    /// One entry per node count.
    pub runs: Vec<RunSummary>,
}

impl RunSummary {
    /// Builds the summary of one run at `nodes` nodes; `targets` are what the load went to (the nodes, or
    /// the proxy `via`), as (name, address, exit status if it exited).
    pub fn new(
        nodes: usize,
        via: Option<&str>,
        targets: &[(String, String, Option<String>)],
        outcome: &RunOutcome,
        preload: Option<Preload>,
    ) -> Self {
        let secs = outcome.elapsed.as_secs_f64().max(1e-9);
        let per_node = targets
            .iter()
            .enumerate()
            .map(|(i, (name, addr, exited))| NodeShare {
                name: name.clone(),
                addr: addr.clone(),
                connections: outcome.per_node_connections[i],
                ops: outcome.per_node_ops[i],
                share: outcome.per_node_ops[i] as f64 / outcome.ops.max(1) as f64,
                exited: exited.clone(),
            })
            .collect();
        let label_stem = format!("{nodes}nodes{}", via.map(|v| format!("-{v}")).unwrap_or_default());
        RunSummary {
            nodes,
            via: via.map(str::to_owned),
            ops: outcome.ops,
            duration_s: secs,
            throughput: outcome.ops as f64 / secs,
            latency_ms: Latency::from_histogram(&outcome.histogram),
            errors: outcome.tally.by_kind(),
            errors_total: outcome.tally.total(),
            per_node,
            preload,
            timeline: outcome.timeline.clone(),
            hgrm: format!("{label_stem}.hgrm"),
        }
    }

    /// `2 nodes`, or `2 nodes via proxy`.
    pub fn label(&self) -> String {
        let via = self.via.as_deref().map(|v| format!(" via {v}")).unwrap_or_default();
        format!("{} node{}{via}", self.nodes, if self.nodes == 1 { "" } else { "s" })
    }

    /// `2nodes`, or `2nodes-proxy`: how this run's files are named.
    pub fn file_stem(&self) -> String {
        self.hgrm.trim_end_matches(".hgrm").to_string()
    }
}

/// How an enum is named in `summary.json` (its serde name), for text that must match it.
pub fn wire_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The once-a-second line on stderr.
pub fn progress_line(iv: &Interval, duration: Option<Duration>) {
    let of = duration.map(|d| format!("/{}s", d.as_secs())).unwrap_or_default();
    eprintln!(
        "  [{:>4.0}s{of}] {:>10} ops/s   p50 {:>7.3} ms   p99 {:>7.3} ms   errors {}",
        iv.t,
        group(iv.ops_per_s),
        iv.p50_ms,
        iv.p99_ms,
        iv.errors
    );
}

/// A number with thousands separators.
pub fn group(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The summary of one node count, as text.
pub fn print_run(r: &RunSummary) {
    let l = &r.latency_ms;
    println!("\n== {}", r.label());
    if let Some(p) = &r.preload {
        println!("   preload (untimed): {} keys in {:.2} s, {} errors", p.keys, p.seconds, p.errors);
    }
    println!("   ops        {} in {:.2} s = {} ops/s", r.ops, r.duration_s, group(r.throughput));
    println!(
        "   latency ms mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        l.mean, l.p50, l.p90, l.p99, l.p999, l.max
    );
    let errors = if r.errors.is_empty() {
        "none".to_string()
    } else {
        r.errors.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    };
    println!("   errors     {} ({errors})", r.errors_total);
    for n in &r.per_node {
        let status = n.exited.as_deref().map(|e| format!("  EXITED DURING RUN: {e}")).unwrap_or_default();
        println!(
            "   {:<8} {:<21} {:>3} conns  {:>10} ops  {:>5.1}%{status}",
            n.name,
            n.addr,
            n.connections,
            n.ops,
            n.share * 100.0
        );
    }
}

/// The comparison of all node counts, as a table.
pub fn print_comparison(runs: &[RunSummary]) {
    println!("\n== comparison");
    println!("   nodes            ops/s    p50 ms    p99 ms  p99.9 ms    max ms   errors");
    for r in runs {
        let l = &r.latency_ms;
        let via = r.via.as_deref().map(|v| format!(" via {v}")).unwrap_or_default();
        println!(
            "   {:<10} {:>11} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>8}",
            format!("{}{via}", r.nodes),
            group(r.throughput),
            l.p50,
            l.p99,
            l.p999,
            l.max,
            r.errors_total
        );
    }
}

/// Writes a percentile distribution in HdrHistogram's text format (what wrk2 prints with `--latency` and
/// what HdrHistogram's plotter reads): values in milliseconds.
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
