//! `harness compare A B`: two runs (or merged runs) side by side, before and after a change, without a
//! spreadsheet: throughput, latency percentiles per kind of operation, CPU per operation, each with its
//! change in percent, and one plot with both runs' percentile curves.

use std::path::{Path, PathBuf};

use clap::Args;

use std::fmt::Write as _;

use crate::html::esc;
use crate::plot;
use crate::report::{read_hgrm, Latency, RunSummary, Summary};

/// `harness compare`: two result directories side by side.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline: a result directory of `harness run` or `harness merge`.
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// The run to compare with it.
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Where the plot (compare.png) goes.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

/// One row: a figure in A and in B.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What it is (`throughput ops/s`, `read p99 ms`, ...).
    pub what: String,
    /// In A.
    pub a: Option<f64>,
    /// In B.
    pub b: Option<f64>,
}

impl Row {
    /// B's change from A, in percent.
    pub fn change(&self) -> Option<f64> {
        match (self.a, self.b) {
            (Some(a), Some(b)) if a != 0.0 => Some((b - a) / a * 100.0),
            _ => None,
        }
    }
}

fn load(dir: &Path) -> Result<Summary, String> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not a harness summary: {e}", path.display()))
}

fn latency_rows(rows: &mut Vec<Row>, kind: &str, a: Option<&Latency>, b: Option<&Latency>) {
    let figures = |l: &Latency| [("p50", l.p50), ("p99", l.p99), ("p99.9", l.p999), ("max", l.max)];
    for i in 0..4 {
        let (name, _) = figures(&Latency::default())[i];
        rows.push(Row {
            what: format!("{kind} {name} ms"),
            a: a.map(|l| figures(l)[i].1),
            b: b.map(|l| figures(l)[i].1),
        });
    }
}

/// The rows comparing run `a` with run `b`.
pub fn rows(a: &RunSummary, b: &RunSummary) -> Vec<Row> {
    let mut rows = vec![
        Row { what: "throughput ops/s".into(), a: Some(a.throughput), b: Some(b.throughput) },
        Row { what: "ops".into(), a: Some(a.ops as f64), b: Some(b.ops as f64) },
        Row { what: "errors".into(), a: Some(a.errors_total as f64), b: Some(b.errors_total as f64) },
    ];
    latency_rows(&mut rows, "all", Some(&a.latency_ms), Some(&b.latency_ms));
    let mut kinds: Vec<&String> = a.by_op.keys().chain(b.by_op.keys()).collect();
    kinds.sort();
    kinds.dedup();
    if kinds.len() > 1 {
        for kind in kinds {
            let (x, y) = (a.by_op.get(kind), b.by_op.get(kind));
            latency_rows(&mut rows, kind, x.map(|o| &o.latency_ms), y.map(|o| &o.latency_ms));
        }
    }
    rows.push(Row { what: "server CPU µs/op".into(), a: a.server_cpu_us_per_op, b: b.server_cpu_us_per_op });
    rows.push(Row { what: "client CPU µs/op".into(), a: a.client_cpu_us_per_op, b: b.client_cpu_us_per_op });
    rows
}

/// Runs `harness compare`.
pub fn run(args: &CompareArgs) -> Result<(), String> {
    let (a, b) = (load(&args.a)?, load(&args.b)?);
    let (name_a, name_b) = (args.a.display().to_string(), args.b.display().to_string());
    let mut spectra = Vec::new();
    let mut matched = 0;
    // For report.html: the runs of both, A's then B's of each node count, and the rows of changes.
    let (mut both, mut labels, mut extra) = (Vec::new(), Vec::new(), String::new());
    for ra in &a.runs {
        let Some(rb) = b.runs.iter().find(|r| r.label() == ra.label()) else {
            crate::say!("\n== {}: only in A ({name_a})", ra.label());
            continue;
        };
        matched += 1;
        crate::say!("\n== {}   A = {name_a}   B = {name_b}", ra.label());
        crate::say!("   {:<22} {:>14} {:>14} {:>9}", "", "A", "B", "change");
        let _ = write!(
            extra,
            "<h2>Changes, {}</h2><div class=\"scroll\"><table class=\"changes\"><thead><tr><th></th><th>A</th><th>B</th><th>change</th></tr></thead><tbody>",
            esc(&ra.label())
        );
        for row in rows(ra, rb) {
            let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
            let change = row.change().map_or_else(|| "-".to_string(), |c| format!("{c:+.1}%"));
            crate::say!("   {:<22} {:>14} {:>14} {:>9}", row.what, fmt(row.a), fmt(row.b), change);
            let _ = write!(
                extra,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&row.what),
                fmt(row.a),
                fmt(row.b),
                change
            );
        }
        extra.push_str("</tbody></table></div>");
        both.extend([ra.clone(), rb.clone()]);
        labels.extend([format!("A: {}", ra.label()), format!("B: {}", rb.label())]);
        for (dir, r, who) in [(&args.a, ra, "A"), (&args.b, rb, "B")] {
            if let Ok(text) = std::fs::read_to_string(dir.join(&r.hgrm)) {
                spectra.push((format!("{who}: {}", r.label()), read_hgrm(&text)));
            }
        }
    }
    for rb in b.runs.iter().filter(|r| !a.runs.iter().any(|ra| ra.label() == r.label())) {
        crate::say!("\n== {}: only in B ({name_b})", rb.label());
    }
    if matched == 0 {
        return Err(format!("{name_a} and {name_b} have no run in common (node counts and targets differ)"));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let path = args.out.join("compare.png");
    plot::percentile_spectrum(&path, &spectra, &format!("latency by percentile: A {name_a}, B {name_b}"))
        .map_err(|e| format!("plot {}: {e}", path.display()))?;
    let mut config = serde_json::json!({ "a": name_a, "b": name_b });
    crate::run::merge_json(&mut config, crate::html::provenance());
    let page = crate::html::Page {
        title: format!("harness compare: A {name_a}, B {name_b}"),
        config: &config,
        runs: &both,
        plots: vec![("Latency by percentile, A and B".into(), path.clone())],
        extra,
        labels: Some(labels),
    };
    let report = args.out.join("report.html");
    crate::html::write(&report, &page)?;
    eprintln!("plot: {}; page: {}", path.display(), report.display());
    Ok(())
}
