//! `harness run`: the project's main job, as orchestration. [`RunArgs::validate`] decides where the load
//! goes; then for each target kind and node count, start the nodes (or use the given ones), measure
//! ([`measure`]), stop them; then the comparison table, the plots and `summary.json`.

mod args;
mod measure;

use std::path::Path;
use std::time::SystemTime;

pub use args::{RunArgs, Setup, TargetKind};

use crate::cost::{Metered, Role};
use crate::nodes::{self, LocalNodes};
use crate::plot;
use crate::report::{self, RunSummary, Summary};
use crate::run_outcome::wire_name;
use crate::target::Target;
use measure::{measure, Plan};

/// A run's summary and its latency spectrum (milliseconds, percentile).
type Measured = (RunSummary, Vec<(f64, f64)>);

/// Runs `harness run`; returns the exit status: 0 when the run is good (errors within
/// `--max-error-rate`, every node up to the end), 1 otherwise (the reason is the last line on stderr),
/// 128 + the signal when interrupted (what was measured is still written).
pub fn run(args: &RunArgs) -> Result<u8, String> {
    let setup = args.validate()?;
    crate::shutdown::install()?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    crate::configure_runtime(args.threads);
    let data = tempfile::Builder::new().prefix("otkv-harness-").tempdir().map_err(|e| e.to_string())?;
    crate::shutdown::track_dir(data.path().to_owned());
    announce(args, &setup);

    let mut runs = Vec::new();
    let mut spectra = Vec::new();
    // `--start-at` times the first measured run.
    let mut start_at = setup.start_at;
    'counts: for &kind in &setup.kinds {
        for &n in &setup.counts {
            for (summary, spectrum) in run_node_count(args, &setup, kind, n, data.path(), start_at.take())? {
                spectra.push((summary.label(), spectrum));
                runs.push(summary);
            }
            if crate::shutdown::interrupted().is_some() {
                break 'counts;
            }
        }
    }
    if !args.json {
        report::print_comparison(&runs);
    }
    draw_plots(args, &setup, &runs, &spectra)?;
    let summary = write_summary(args, &setup, runs)?;
    crate::shutdown::end_dir(data, args.local.keep_data);
    eprintln!("results in {}/ (report.html, summary.json, *.hgrm, *.hlog, *.png)", args.out.display());
    if let Some(status) = crate::shutdown::exit_status() {
        if crate::shutdown::interrupted() != Some(13) {
            eprintln!("harness: interrupted; the report covers what was measured until then");
        }
        return Ok(status);
    }
    Ok(verdict(args, &summary))
}

/// 0 when the run is good; else 1, saying why on the last line.
fn verdict(args: &RunArgs, summary: &Summary) -> u8 {
    let exited: Vec<String> = summary
        .runs
        .iter()
        .flat_map(|r| {
            r.per_node.iter().filter_map(|n| n.exited.as_ref().map(|e| format!("{} ({e})", n.name)))
        })
        .collect();
    if !exited.is_empty() {
        eprintln!("harness: failed: nodes exited during the run: {}", exited.join(", "));
        return 1;
    }
    let errors: u64 = summary.runs.iter().map(|r| r.errors_total).sum();
    let requests: u64 = summary.runs.iter().map(|r| r.ops + r.errors_total).sum();
    let rate = errors as f64 / requests.max(1) as f64;
    if errors > 0 && rate > args.max_error_rate.0 {
        eprintln!(
            "harness: failed: {errors} errors in {requests} requests ({:.3}%), over --max-error-rate {}%",
            rate * 100.0,
            args.max_error_rate.0 * 100.0
        );
        return 1;
    }
    0
}

/// The lines that say what is about to run.
fn announce(args: &RunArgs, setup: &Setup) {
    let say = |line: String| if args.json { eprintln!("{line}") } else { crate::say!("{line}") };
    say(format!(
        "harness: {} workload, {} keys of {} B ({}), {} connections, {}, warm-up {:?}, router {}, node counts {:?}",
        wire_name(&args.workload),
        args.keys,
        args.value_size,
        wire_name(&args.key_dist),
        args.connections,
        match (args.ops, args.rate) {
            (Some(n), _) => format!("{n} ops per node count"),
            (None, Some(r)) => format!("open loop at {r} ops/s for {:?}", args.duration),
            (None, None) => format!("closed loop for {:?}, pipeline {}", args.duration, args.pipeline),
        },
        args.warmup,
        if setup.proxy.is_some() { "of the proxy".to_string() } else { args.routing.describe() },
        setup.counts
    ));
    if setup.remote.is_none() && setup.proxy.is_none() {
        let names: Vec<String> = setup.kinds.iter().map(wire_name).collect();
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
}

/// One node count of one target kind: start the nodes if they are local, measure (twice with
/// `--via-proxy`: routed by the client, then through a proxy), stop them.
fn run_node_count(
    args: &RunArgs,
    setup: &Setup,
    kind: TargetKind,
    n: usize,
    data: &Path,
    mut start_at: Option<SystemTime>,
) -> Result<Vec<Measured>, String> {
    if crate::shutdown::interrupted().is_some() {
        return Ok(Vec::new());
    }
    let (mut local, targets): (Option<LocalNodes>, Vec<Target>) = match (&setup.proxy, &setup.remote) {
        (Some((p, _)), _) => (None, vec![p.clone()]),
        (None, Some(r)) => (None, r[..n].to_vec()),
        (None, None) => {
            let root = data.join(format!("{}-{n}nodes", wire_name(&kind)));
            let local = match kind {
                TargetKind::Otkv => nodes::start_local(n, &args.local.options(), &root)?,
                TargetKind::Redis => nodes::start_local_redis(n, &args.local.options(), &root)?,
                TargetKind::Etcd => nodes::start_local_etcd(n, &args.local.options(), &root)?,
            };
            let targets = local.targets.clone();
            (Some(local), targets)
        }
    };
    // A test's hook: a panic with nodes running must still stop them.
    assert!(
        std::env::var_os("OTKV_HARNESS_TEST_PANIC").is_none(),
        "OTKV_HARNESS_TEST_PANIC: a panic after the nodes started"
    );
    // Every member of a replica group costs: each is metered.
    let as_nodes = |ts: &[Target]| -> Vec<Metered> {
        ts.iter()
            .flat_map(|t| {
                let members = if t.group.is_empty() { vec![t.addr] } else { t.group.clone() };
                members.into_iter().map(|a| Metered { target: t.at_member(a), role: Role::Node })
            })
            .collect()
    };
    let mut measured = Vec::new();
    if let Some((p, behind)) = &setup.proxy {
        let mut metered = as_nodes(behind);
        metered.push(Metered { target: p.clone(), role: Role::Proxy });
        let plan =
            Plan { kind, nodes: n, targets: &targets, via: Some("proxy"), metered: &metered, start_at };
        measured.push(measure(args, &plan, local.as_mut())?);
    } else {
        let metered = as_nodes(&targets);
        let plan = Plan {
            kind,
            nodes: n,
            targets: &targets,
            via: None,
            metered: &metered,
            start_at: start_at.take(),
        };
        measured.push(measure(args, &plan, local.as_mut())?);
        if args.via_proxy {
            let mut front = nodes::start_proxy(&targets, &args.routing)?;
            let proxied = front.targets.clone();
            let mut metered = metered.clone();
            metered.push(Metered { target: proxied[0].clone(), role: Role::Proxy });
            let plan = Plan {
                kind,
                nodes: n,
                targets: &proxied,
                via: Some("proxy"),
                metered: &metered,
                start_at: None,
            };
            measured.push(measure(args, &plan, Some(&mut front))?);
        }
    }
    if let Some(mut l) = local {
        l.stop();
    }
    Ok(measured)
}

/// The PNG plots: latency over time per run, latency by percentile, throughput, projection.
fn draw_plots(
    args: &RunArgs,
    setup: &Setup,
    runs: &[RunSummary],
    spectra: &[(String, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let title = |what: &str| {
        let remote = setup.remote.is_some() || setup.proxy.is_some();
        let engine = if remote { "remote" } else { &args.local.engine };
        let names: Vec<String> = setup
            .kinds
            .iter()
            .map(|k| match k {
                TargetKind::Otkv => format!("OTKV ({engine} engine)"),
                TargetKind::Redis => "Redis".to_string(),
                TargetKind::Etcd => "etcd".to_string(),
            })
            .collect();
        format!("{}: {what}", names.join(" and "))
    };
    for r in runs {
        let path = args.out.join(format!("latency_{}.png", r.file_stem()));
        plot::latency_over_time(&path, r, &title(&format!("latency over time, {}", r.label())))
            .map_err(|e| format!("plot {}: {e}", path.display()))?;
    }
    plot::percentile_spectrum(&args.out.join("percentiles.png"), spectra, &title("latency by percentile"))
        .map_err(|e| format!("plot percentiles: {e}"))?;
    plot::throughput(&args.out.join("throughput.png"), runs, &title("throughput by node count"))
        .map_err(|e| format!("plot throughput: {e}"))?;
    plot::projection(&args.out.join("projected.png"), runs, &title("measured vs projected throughput"))
        .map_err(|e| format!("plot projection: {e}"))?;
    Ok(())
}

/// Adds `extra`'s fields to `config`.
pub(crate) fn merge_json(config: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(c), serde_json::Value::Object(e)) = (config.as_object_mut(), extra) {
        c.extend(e);
    }
}

/// `report.html`: the run on one page.
fn write_report(args: &RunArgs, summary: &Summary) -> Result<(), String> {
    let plots = [
        ("Throughput by node count", "throughput.png"),
        ("Measured against projected throughput", "projected.png"),
        ("Latency by percentile", "percentiles.png"),
    ]
    .iter()
    .map(|(c, f)| ((*c).to_string(), args.out.join(f)))
    .collect();
    let page = crate::html::Page {
        title: format!("harness run: {} workload", wire_name(&args.workload)),
        config: &summary.config,
        runs: &summary.runs,
        plots,
        extra: String::new(),
        labels: None,
    };
    crate::html::write(&args.out.join("report.html"), &page)
}

/// Writes `summary.json` (and prints it with `--json`).
fn write_summary(args: &RunArgs, setup: &Setup, runs: Vec<RunSummary>) -> Result<Summary, String> {
    let mut config = serde_json::to_value(args).map_err(|e| e.to_string())?;
    config["node_counts"] = serde_json::json!(setup.counts);
    merge_json(&mut config, crate::html::provenance());
    let summary = Summary { config, interrupted: crate::shutdown::interrupted().is_some(), runs };
    write_report(args, &summary)?;
    let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("summary.json"), &json)
        .map_err(|e| format!("cannot write summary.json: {e}"))?;
    if args.json {
        crate::say!("{json}");
    }
    Ok(summary)
}
