//! Several clients against the same nodes, merged: three `harness run` processes started together with
//! `--start-at`, then `harness merge`. Merged operations are the sum; merged percentiles are those of one
//! histogram of every latency the clients recorded (exactly); each node's operations match its own
//! counters. Interval logs read back with `HdrHistogram`'s Python reader (`pip install hdrhistogram`).
//! Mismatched runs are refused; `harness compare` reports the right changes.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use otkv_harness::hlog;

// The adapter's test helpers (`spawn_listening`); their `Node` is not used here.
#[path = "../../adapter-http/tests/common/mod.rs"]
mod common;
use otkv_harness::report::{Latency, Summary};

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");

struct Node {
    child: Child,
    url: String,
}

impl Node {
    fn start() -> Node {
        let mut command = Command::new(HARNESS);
        command.args(["node", "--port", "0"]).env("RUST_LOG", "warn");
        let (child, url) = common::spawn_listening(command);
        Node { child, url }
    }

    /// GET requests the node has answered, from its own `/metrics`.
    fn gets(&self) -> u64 {
        let body =
            ureq::get(&format!("{}/metrics", self.url)).call().expect("metrics").into_string().expect("text");
        body.lines()
            .filter(|l| l.starts_with("otkv_requests_total{") && l.contains("op=\"get\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn summary(dir: &Path) -> Summary {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("summary")).expect("json")
}

fn harness(args: &[&str]) -> Output {
    Command::new(HARNESS).args(args).output().expect("run harness")
}

fn client(nodes: &[Node], start_at: &str, workload: &str, out: &Path) -> Child {
    let mut args = vec!["run".to_string()];
    for n in nodes {
        args.extend(["--node".into(), n.url.clone()]);
    }
    args.extend(
        [
            "--workload",
            workload,
            "--keys",
            "2000",
            "--duration",
            "2s",
            "--warmup",
            "0s",
            "--connections",
            "3",
            "--start-at",
            start_at,
            "--json",
            "--out",
        ]
        .map(String::from),
    );
    args.push(out.to_string_lossy().into_owned());
    Command::new(HARNESS).args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("client")
}

fn finish(c: Child) {
    let out = c.wait_with_output().expect("wait");
    assert!(out.status.success(), "client failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn same_latency(a: &Latency, b: &Latency) -> bool {
    (a.p50, a.p99, a.p999, a.max) == (b.p50, b.p99, b.p999, b.max)
}

#[test]
fn three_clients_started_together_merge_exactly_and_mismatches_are_refused() {
    let nodes = [Node::start(), Node::start()];
    let dir = tempfile::tempdir().expect("dir");
    let out = |name: &str| dir.path().join(name);
    // Reads only (after each client's untimed preload of writes), no warm-up: every GET a node answers
    // is one a client measured.
    let gets_before: Vec<u64> = nodes.iter().map(Node::gets).collect();
    let start_at = humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(4)).to_string();
    let clients: Vec<Child> =
        (0..3).map(|i| client(&nodes, &start_at, "ycsb-c", &out(&format!("c{i}")))).collect();
    clients.into_iter().for_each(finish);
    let gets_after: Vec<u64> = nodes.iter().map(Node::gets).collect();

    let merged = harness(&[
        "merge",
        &out("c0").to_string_lossy(),
        &out("c1").to_string_lossy(),
        &out("c2").to_string_lossy(),
        "--out",
        &out("merged").to_string_lossy(),
    ]);
    assert!(merged.status.success(), "{}", String::from_utf8_lossy(&merged.stderr));
    let m = &summary(&out("merged")).runs[0];
    let parts: Vec<Summary> = (0..3).map(|i| summary(&out(&format!("c{i}")))).collect();
    let runs: Vec<_> = parts.iter().map(|s| &s.runs[0]).collect();

    // Operations add up, and each client's window opened close to the common start.
    assert_eq!(m.ops, runs.iter().map(|r| r.ops).sum::<u64>());
    for r in &runs {
        let offset = r.start_offset_ms.expect("a start offset");
        assert!(offset.abs() < 1000.0, "window opened {offset} ms from --start-at");
        assert_eq!(r.errors_total, 0);
    }
    // Each client's interval log holds exactly what it recorded; the merged percentiles are those of one
    // histogram of all of them.
    let mut all = otkv_harness::run_outcome::new_histogram();
    for (i, r) in runs.iter().enumerate() {
        let h = hlog::total(&hlog::read(&out(&format!("c{i}")).join(&r.hlog)).expect("hlog"));
        assert_eq!(h.len(), r.ops);
        assert!(same_latency(&Latency::from_histogram(&h), &r.latency_ms), "client {i}");
        all.add(&h).expect("add");
    }
    assert_eq!(all.len(), m.ops);
    assert!(
        same_latency(&Latency::from_histogram(&all), &m.latency_ms),
        "{:?} vs {:?}",
        m.latency_ms,
        Latency::from_histogram(&all)
    );
    // Per node: the clients' operations, which are the GETs the node itself counted.
    for (k, node) in m.per_node.iter().enumerate() {
        assert_eq!(node.ops, runs.iter().map(|r| r.per_node[k].ops).sum::<u64>());
        assert_eq!(node.ops, gets_after[k] - gets_before[k], "{}", node.name);
        assert!(node.cpu_us_per_op.is_some_and(|c| c > 0.0), "{node:?}");
    }
    // Throughput: the clients' rates in the common window, summed.
    let rates: f64 = m.clients.iter().map(|c| c.throughput).sum();
    assert!((m.throughput - rates).abs() < 1e-6 && m.throughput > 0.0);

    // HdrHistogram's own (Python) reader reads the logs, with the same counts.
    let py = "import sys\nfrom hdrh.log import HistogramLogReader\nfrom hdrh.histogram import HdrHistogram\n\
              r = HistogramLogReader(sys.argv[1], HdrHistogram(1, 60000000, 3))\nn = 0\nwhile True:\n    \
              h = r.get_next_interval_histogram()\n    if h is None: break\n    n += h.get_total_count()\nprint(n)\n";
    for (path, ops) in [(out("c0").join(&runs[0].hlog), runs[0].ops), (out("merged").join(&m.hlog), m.ops)] {
        let read = Command::new("python3").args(["-c", py]).arg(&path).output().expect("python3");
        assert!(
            read.status.success(),
            "HdrHistogram's Python reader (pip install hdrhistogram): {}",
            String::from_utf8_lossy(&read.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), ops.to_string(), "{}", path.display());
    }

    // Refused: a run twice, directly or inside the merge; another workload; windows apart.
    let refuse = |dirs: &[&str], why: &str| {
        let mut args = vec!["merge"];
        args.extend(dirs);
        let o = out("refused");
        let o = o.to_string_lossy();
        args.extend(["--out", &o]);
        let r = harness(&args);
        assert!(!r.status.success(), "{dirs:?} merged");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains(why), "{dirs:?}: {err}");
    };
    let (c0, c1, merged_dir) = (out("c0"), out("c1"), out("merged"));
    let (c0, c1, merged_dir) = (c0.to_string_lossy(), c1.to_string_lossy(), merged_dir.to_string_lossy());
    refuse(&[&c0, &c0], "in both");
    refuse(&[&merged_dir, &c1], "in both");
    let later = out("later");
    finish(client(&nodes, "+0s", "ycsb-c", &later));
    refuse(&[&c0, &later.to_string_lossy()], "do not overlap");
    let other = out("other");
    finish(client(&nodes, "+0s", "ycsb-a", &other));
    refuse(&[&c0, &other.to_string_lossy()], "workload");

    // compare: A's and B's figures, and B's change.
    let cmp = harness(&["compare", &c0, &merged_dir, "--out", &dir.path().to_string_lossy()]);
    assert!(cmp.status.success(), "{}", String::from_utf8_lossy(&cmp.stderr));
    let text = String::from_utf8_lossy(&cmp.stdout);
    let row = text.lines().find(|l| l.trim_start().starts_with("throughput ops/s")).expect("throughput row");
    let cols: Vec<&str> = row.split_whitespace().collect();
    let (a, b) = (runs[0].throughput, m.throughput);
    assert_eq!(cols[2], format!("{a:.3}"));
    assert_eq!(cols[3], format!("{b:.3}"));
    assert_eq!(cols[4], format!("{:+.1}%", (b - a) / a * 100.0));
    assert!(dir.path().join("compare.png").exists());
}
