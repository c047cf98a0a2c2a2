//! The harness against real nodes: its numbers add up, its files are well-formed, a dying node is
//! reported, and the open loop keeps its schedule.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use otkv_harness::report::read_hgrm;

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");

/// A node started as `harness node --port 0`, killed on drop.
struct Node {
    child: Child,
    url: String,
}

impl Node {
    fn start() -> Node {
        let mut child = Command::new(HARNESS)
            .args(["node", "--port", "0", "--workers", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("line");
        let url = line.trim().strip_prefix("listening on ").expect("listening line").to_string();
        Node { child, url }
    }

    /// Its CPU time (user + system) so far, from the kernel's own account of the process.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("/proc");
        let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..].split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().expect("CLK_TCK");
        ticks as f64 / hz as f64
    }

    fn requests_answered(&self) -> u64 {
        let stats =
            ureq::get(&format!("{}/v1/stats", self.url)).call().expect("stats").into_string().expect("s");
        let stats: serde_json::Value = serde_json::from_str(&stats).expect("json");
        ["get", "put"].iter().map(|op| stats["requests"][op].as_u64().unwrap_or(0)).sum()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn harness(args: &[&str]) -> (Output, serde_json::Value) {
    let out = Command::new(HARNESS).args(args).arg("--json").output().expect("run harness");
    assert!(out.status.success(), "harness failed: {}", String::from_utf8_lossy(&out.stderr));
    let summary = serde_json::from_slice(&out.stdout).expect("summary JSON on stdout");
    (out, summary)
}

fn check_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() > 5_000, "{} is too small to hold a plot", path.display());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
}

#[test]
fn summary_adds_up_against_the_nodes_own_counters() {
    let nodes = [Node::start(), Node::start()];
    let out = tempfile::tempdir().expect("tempdir");
    let out_arg = out.path().to_str().expect("utf8");
    let (_, summary) = harness(&[
        "run",
        "--node",
        &nodes[0].url,
        "--node",
        &nodes[1].url,
        "--workload",
        "ycsb-a",
        "--keys",
        "2000",
        "--ops",
        "6000",
        "--connections",
        "8",
        "--pipeline",
        "4",
        "--out",
        out_arg,
    ]);
    let runs = summary["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["nodes"], 2);
    assert_eq!(run["errors_total"], 0, "{run}");
    let ops = run["ops"].as_u64().expect("ops");
    assert_eq!(ops, 6000, "--ops 6000 with no errors answers exactly 6000");
    let per_node = run["per_node"].as_array().expect("per_node");
    assert_eq!(per_node.iter().map(|n| n["ops"].as_u64().unwrap_or(0)).sum::<u64>(), ops);
    let shares: f64 = per_node.iter().map(|n| n["share"].as_f64().unwrap_or(0.0)).sum();
    assert!((shares - 1.0).abs() < 1e-9, "shares sum to {shares}");
    let preloaded = run["preload"]["keys"].as_u64().expect("preload");
    assert_eq!(preloaded, 2000);
    let warmed = run["warmup"]["ops"].as_u64().expect("a warm-up ran (1s by default)");
    assert!(warmed > 0 && run["warmup"]["errors"] == 0, "{}", run["warmup"]);
    // Ops counted = ops answered: the nodes saw exactly the preload, the warm-up and the measured
    // operations, and the measured ones are exactly --ops (the warm-up does not count them down).
    let answered: u64 = nodes.iter().map(Node::requests_answered).sum();
    assert_eq!(answered, ops + preloaded + warmed);
    let timeline_ops: u64 =
        run["timeline"].as_array().expect("timeline").iter().map(|i| i["ops"].as_u64().unwrap_or(0)).sum();
    assert!(timeline_ops <= ops);

    // The .hgrm parses, ends at the 100th percentile, and never decreases.
    let hgrm =
        std::fs::read_to_string(out.path().join(run["hgrm"].as_str().expect("hgrm"))).expect("read hgrm");
    let rows = read_hgrm(&hgrm);
    assert!(rows.len() > 10);
    assert!(rows.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    assert_eq!(rows.last().map(|r| r.1), Some(1.0));
    assert!(hgrm.contains(&format!("Total count    = {ops:>12}")));

    // Reads and updates have their own histograms, and they add up to the total.
    let by_op = run["by_op"].as_object().expect("by_op");
    assert_eq!(by_op.keys().collect::<Vec<_>>(), ["read", "write"]);
    let mut counted = 0;
    for (kind, op) in by_op {
        let n = op["ops"].as_u64().expect("ops");
        assert!(n > 1000, "ycsb-a issues about half {kind}s: {n}");
        let file = op["hgrm"].as_str().expect("hgrm");
        assert_eq!(file, format!("2nodes-{kind}.hgrm"));
        let text = std::fs::read_to_string(out.path().join(file)).expect("per-op hgrm");
        assert!(text.contains(&format!("Total count    = {n:>12}")), "{file}");
        assert!(op["latency_ms"]["p99"].as_f64().expect("p99") > 0.0);
        counted += n;
    }
    assert_eq!(counted, ops, "read and write histograms add up to the total");

    // Cost: both nodes were read, every figure is there and plausible.
    assert_eq!(run["cost"]["servers"].as_array().map(Vec::len), Some(2));
    for node in per_node {
        assert!(node["cpu_us_per_op"].as_f64().expect("cpu") > 0.0, "{node}");
        assert!(node["rss_bytes"].as_u64().expect("rss") > 1 << 20, "{node}");
    }
    assert!(run["server_cpu_us_per_op"].as_f64().expect("server cpu") > 0.0);
    assert!(run["client_cpu_us_per_op"].as_f64().expect("client cpu") > 0.0);
    let projected = run["projected_throughput"].as_f64().expect("projection");
    let server = run["server_cpu_us_per_op"].as_f64().unwrap_or(0.0);
    assert!((projected - 2.0 * 1e6 / server).abs() < 1e-6 * projected, "2 nodes ÷ server CPU per op");
    for png in ["latency_2nodes.png", "percentiles.png", "throughput.png", "projected.png"] {
        check_png(&out.path().join(png));
    }
    assert!(out.path().join("summary.json").exists());
}

#[test]
fn seed_workload_on_local_nodes_verifies_every_read() {
    let out = tempfile::tempdir().expect("tempdir");
    let out_arg = out.path().to_str().expect("utf8");
    let (_, summary) = harness(&[
        "run",
        "--nodes",
        "1..2",
        "--workload",
        "seed",
        "--keys",
        "1000",
        "--ops",
        "3000",
        "--connections",
        "4",
        "--out",
        out_arg,
    ]);
    let runs = summary["runs"].as_array().expect("runs");
    assert_eq!(runs.iter().map(|r| r["nodes"].as_u64().unwrap_or(0)).collect::<Vec<_>>(), [1, 2]);
    for run in runs {
        assert_eq!(run["errors_total"], 0, "{run}");
        assert_eq!(run["ops"], 3000);
        assert!(run["preload"].is_null(), "seed writes its own keys");
        assert!(run["per_node"].as_array().expect("nodes").iter().all(|n| n["exited"].is_null()));
    }
    for png in ["latency_1nodes.png", "latency_2nodes.png", "percentiles.png", "throughput.png"] {
        check_png(&out.path().join(png));
    }
}

#[test]
fn a_node_that_dies_mid_run_is_reported_not_a_hang() {
    let survivor = Node::start();
    let mut victim = Node::start();
    let out = tempfile::tempdir().expect("tempdir");
    let mut run = Command::new(HARNESS)
        .args([
            "run",
            "--node",
            &survivor.url,
            "--node",
            &victim.url,
            "--workload",
            "put",
            "--duration",
            "3s",
        ])
        .args(["--connections", "8", "--timeout", "1s", "--json", "--out"])
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run harness");
    // Kill the victim once the harness reports its first second of load.
    let mut stderr = BufReader::new(run.stderr.take().expect("stderr"));
    let mut line = String::new();
    while stderr.read_line(&mut line).expect("read") > 0 && !line.contains("ops/s") {
        line.clear();
    }
    victim.child.kill().expect("kill -9 the victim");
    let _ = victim.child.wait();
    let drain = std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = run.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the harness hung after a node died");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = drain.join();
    // The run ends on time with its report, and its status says it was not a good run.
    assert_eq!(status.code(), Some(1));
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut run.stdout.take().expect("stdout"), &mut stdout).expect("stdout");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let r = &summary["runs"][0];
    assert!(r["errors_total"].as_u64().unwrap_or(0) > 0, "{r}");
    let kinds = r["errors"].as_object().expect("errors");
    assert!(kinds.keys().any(|k| k == "connect" || k == "io" || k == "timeout"), "{kinds:?}");
    assert!(r["per_node"][0]["ops"].as_u64().unwrap_or(0) > 0, "the survivor kept serving");
}

#[test]
fn open_loop_keeps_its_schedule() {
    let node = Node::start();
    let out = tempfile::tempdir().expect("tempdir");
    let out_arg = out.path().to_str().expect("utf8");
    let (_, summary) = harness(&[
        "run",
        "--node",
        &node.url,
        "--workload",
        "ycsb-b",
        "--keys",
        "1000",
        "--rate",
        "400",
        "--duration",
        "2s",
        "--connections",
        "4",
        "--out",
        out_arg,
    ]);
    let run = &summary["runs"][0];
    let throughput = run["throughput"].as_f64().expect("throughput");
    assert!((300.0..=440.0).contains(&throughput), "asked for 400 ops/s, got {throughput}");
    assert_eq!(run["errors_total"], 0);
}

#[test]
fn ring_command_prints_both_routers() {
    let out =
        Command::new(HARNESS).args(["ring", "--nodes", "3", "--keys", "100000"]).output().expect("ring");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rendezvous") && text.contains("ring (160 vnodes)"), "{text}");
    assert_eq!(text.matches("all onto the new node").count(), 2, "{text}");
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let out = Command::new(HARNESS).args(["run", "--rate", "100", "--pipeline", "4"]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pipeline"));
    let out = Command::new(HARNESS).args(["run", "--nodes", "0..2"]).output().expect("run");
    assert!(!out.status.success());
}

#[test]
fn server_cpu_per_op_agrees_with_the_nodes_own_proc_figures() {
    let nodes = [Node::start(), Node::start()];
    let before: f64 = nodes.iter().map(Node::cpu_seconds).sum();
    let out = tempfile::tempdir().expect("tempdir");
    // Writes only: no preload, and no warm-up, so the harness's window is its whole run.
    let (_, summary) = harness(&[
        "run",
        "--node",
        &nodes[0].url,
        "--node",
        &nodes[1].url,
        "--workload",
        "put",
        "--keys",
        "10000",
        "--duration",
        "3s",
        "--warmup",
        "0s",
        "--connections",
        "16",
        "--out",
        out.path().to_str().expect("utf8"),
    ]);
    let after: f64 = nodes.iter().map(Node::cpu_seconds).sum();
    let run = &summary["runs"][0];
    assert_eq!(run["errors_total"], 0, "{run}");
    let ops = run["ops"].as_f64().expect("ops");
    let reported = run["server_cpu_us_per_op"].as_f64().expect("server cpu") * ops / 1e6;
    let measured = after - before;
    assert!(measured > 0.3, "the nodes worked: {measured} s");
    let off = (reported - measured).abs() / measured;
    assert!(
        off < 0.10,
        "harness says {reported:.3} s of node CPU, /proc says {measured:.3} s ({:.1}% off)",
        off * 100.0
    );
}

#[test]
fn cas_share_turns_updates_into_conditional_writes_and_ttl_reaches_the_node() {
    let node = Node::start();
    let out = tempfile::tempdir().expect("tempdir");
    let out_arg = out.path().to_str().expect("utf8");
    // Eight connections fight over one key: every update is a read-modify-write.
    let (_, summary) = harness(&[
        "run",
        "--node",
        &node.url,
        "--workload",
        "put",
        "--cas-share",
        "1",
        "--keys",
        "1",
        "--connections",
        "8",
        "--ops",
        "300",
        "--warmup",
        "0s",
        "--ttl",
        "3600",
        "--out",
        out_arg,
    ]);
    let run = &summary["runs"][0];
    assert_eq!(run["errors_total"], 0, "{run}");
    assert_eq!(run["ops"], 300, "--ops counts applied read-modify-writes");
    assert_eq!(run["by_op"]["cas"]["ops"], 300);
    assert!(run["by_op"]["write"].is_null(), "no plain writes at --cas-share 1");
    assert!(run["conflicts"].as_u64().is_some(), "conflicts are reported apart: {run}");
    assert!(out.path().join("1nodes-cas.hgrm").exists());
    // The node holds the key with the TTL the harness asked for.
    let r = ureq::get(&format!("{}/v1/kv/key0000000000000", node.url)).call().expect("get");
    assert!(r.header("OTKV-Expires").is_some(), "--ttl reached the node");
    // Every applied write changed the version: the node saw at least 300 conditional PUTs applied.
    let stats: serde_json::Value = serde_json::from_str(
        &ureq::get(&format!("{}/v1/stats", node.url)).call().expect("stats").into_string().expect("s"),
    )
    .expect("json");
    assert!(stats["requests"]["put"].as_u64().unwrap_or(0) >= 300, "{stats}");

    for (args, says) in [
        (&["--cas-share", "1.5"][..], "fraction"),
        (&["--cas-share", "0.5", "--workload", "ycsb-c"][..], "has none"),
        (&["--cas-share", "0.5", "--workload", "ycsb-a", "--target", "redis"][..], "If-Match"),
        (&["--ttl", "0"][..], "--ttl"),
    ] {
        let out = Command::new(HARNESS).arg("run").args(args).output().expect("run");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
