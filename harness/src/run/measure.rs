//! One measured run: drive the load a [`Plan`] describes, read the servers' cost around it, write its
//! `.hgrm` files and print its summary.

use std::time::SystemTime;

use crate::cost::{Metered, Snapshot};
use crate::hlog;
use crate::load;
use crate::nodes::LocalNodes;
use crate::report::{self, Preload, RunContext, RunSummary};
use crate::run_outcome::{self, OpKind};
use crate::target::Target;

use super::args::{RunArgs, TargetKind};

/// One measured run: what it drives and which servers' cost it reads.
pub(super) struct Plan<'a> {
    pub(super) kind: TargetKind,
    /// Nodes in the cluster.
    pub(super) nodes: usize,
    /// Where the load goes: the nodes, or one proxy in front of them.
    pub(super) targets: &'a [Target],
    /// `Some("proxy")` when `targets` is a proxy.
    pub(super) via: Option<&'a str>,
    /// Every server whose CPU and memory the run reads: the nodes, and the proxy if there is one.
    pub(super) metered: &'a [Metered],
    /// Start the load (warm-up, then window) at this time (`--start-at`).
    pub(super) start_at: Option<SystemTime>,
}

/// Runs the workload once as `plan` says, writes its `.hgrm` files, prints its summary. `started`: the
/// processes behind the targets that the harness started, to report any that exited during the run.
pub(super) fn measure(
    args: &RunArgs,
    plan: &Plan<'_>,
    started: Option<&mut LocalNodes>,
) -> Result<(RunSummary, Vec<(f64, f64)>), String> {
    let (n, targets) = (plan.nodes, plan.targets);
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let router = args.routing.build(&names);
    let spec = args.load_spec();
    let through = plan.via.map(|v| format!(" via {v}")).unwrap_or_default();
    let target_name = run_outcome::wire_name(&plan.kind);
    eprintln!("-- {n} {target_name} node{}{through}: {}", if n == 1 { "" } else { "s" }, addrs(targets));
    // Every server must answer before any load: an unreachable node is a clear error, not a run of errors.
    if let Some(e) = Snapshot::take(plan.metered).servers.into_iter().find_map(Result::err) {
        return Err(e);
    }
    check_limits(args, targets)?;
    let preload = args.workload.needs_preload().then(|| {
        eprintln!("   preloading {} keys (untimed)...", args.keys);
        let (took, tally) = load::preload(&spec, router.as_ref(), targets);
        Preload { keys: args.keys, seconds: took.as_secs_f64(), errors: tally.total() }
    });
    if let Some(at) = plan.start_at {
        match at.duration_since(SystemTime::now()) {
            Ok(wait) => {
                eprintln!("   waiting {:.1} s for --start-at", wait.as_secs_f64());
                crate::shutdown::sleep(wait);
            }
            Err(late) => eprintln!(
                "   warning: --start-at passed {:.3} s ago (preload took longer?): starting now",
                late.duration().as_secs_f64()
            ),
        }
    }
    let mut before = None;
    let outcome =
        load::run(&spec, router.as_ref(), targets, &mut || before = Some(Snapshot::take(plan.metered)));
    let after = Snapshot::take(plan.metered);
    let before = before.unwrap_or_else(|| after.clone());
    let exits =
        started.map_or_else(|| vec![None; targets.len()], super::super::nodes::LocalNodes::exit_statuses);
    let node_info: Vec<(String, String, Option<String>)> =
        targets.iter().zip(exits).map(|(t, e)| (t.name.clone(), t.addr.to_string(), e)).collect();
    let cx = RunContext {
        nodes: n,
        replicas: targets.first().map_or(1, |t| t.group.len().max(1)),
        via: plan.via,
        target: &target_name,
        targets: &node_info,
        metered: plan.metered,
        before: &before,
        after: &after,
    };
    let mut summary = RunSummary::new(&cx, &outcome, preload);
    summary.interrupted = crate::shutdown::interrupted().is_some();
    if let Some(at) = plan.start_at {
        // Where the window should have opened: the start, plus the warm-up.
        let planned = hlog::unix_secs(at + args.warmup);
        summary.start_at = Some(hlog::unix_secs(at));
        summary.start_offset_ms = Some((summary.window_start - planned) * 1000.0);
    }
    write_interval_logs(args, &summary, &outcome)?;
    report::write_hgrm(&args.out.join(&summary.hgrm), &outcome.histogram)
        .map_err(|e| format!("cannot write {}: {e}", summary.hgrm))?;
    for (kind, h) in OpKind::ALL.iter().zip(&outcome.by_op) {
        if let Some(op) = summary.by_op.get(&run_outcome::wire_name(kind)) {
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

/// The interval logs of a run: all operations, and each kind the workload issued.
fn write_interval_logs(
    args: &RunArgs,
    summary: &RunSummary,
    outcome: &run_outcome::RunOutcome,
) -> Result<(), String> {
    let all: Vec<_> = outcome
        .intervals
        .iter()
        .map(|i| {
            let mut sum = run_outcome::new_histogram();
            for h in &i.by_op {
                let _ = sum.add(h);
            }
            (i.start, i.length, sum)
        })
        .collect();
    let all: Vec<_> = all.iter().map(|(s, l, h)| (*s, *l, h)).collect();
    hlog::write(&args.out.join(&summary.hlog), outcome.window_start, &all)?;
    for (k, kind) in OpKind::ALL.iter().enumerate() {
        if let Some(op) = summary.by_op.get(&run_outcome::wire_name(kind)) {
            let one: Vec<_> = outcome.intervals.iter().map(|i| (i.start, i.length, &i.by_op[k])).collect();
            hlog::write(&args.out.join(&op.hlog), outcome.window_start, &one)?;
        }
    }
    Ok(())
}

/// The key and value sizes against what each target accepts, from its own `/v1/stats` (`limits`), so a
/// run never sends what every node would refuse.
fn check_limits(args: &RunArgs, targets: &[Target]) -> Result<(), String> {
    for t in targets.iter().filter(|t| t.protocol == crate::target::Protocol::Http) {
        let Ok((200, body)) = crate::cost::http_get(t, "/v1/stats") else { continue };
        let Ok(stats) = serde_json::from_slice::<serde_json::Value>(&body) else { continue };
        let limit = |name: &str| stats["limits"][name].as_u64();
        if let Some(max) = limit("max_value_bytes").filter(|&m| args.value_size as u64 > m) {
            return Err(format!(
                "--value-size {}: {} accepts values of at most {max} bytes (its --max-value-bytes)",
                args.value_size,
                t.who()
            ));
        }
        if let Some(max) = limit("max_key_bytes").filter(|&m| crate::workload::KEY_LEN as u64 > m) {
            return Err(format!(
                "{} accepts keys of at most {max} bytes; the harness's keys are {} bytes",
                t.who(),
                crate::workload::KEY_LEN
            ));
        }
    }
    Ok(())
}

fn addrs(targets: &[Target]) -> String {
    targets.iter().map(|t| format!("{}={}", t.name, t.addr)).collect::<Vec<_>>().join(" ")
}

fn print_to_stderr(r: &RunSummary) {
    eprintln!(
        "   {}: {} ops/s, p50 {:.3} ms, p99 {:.3} ms, {} errors",
        r.label(),
        run_outcome::group(r.throughput),
        r.latency_ms.p50,
        r.latency_ms.p99,
        r.errors_total
    );
}
