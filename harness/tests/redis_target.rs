//! `harness run --target redis`: the same client, routing, workloads and checks against real
//! redis-servers, with the same report. Needs `redis-server` on PATH (Debian's redis-server package;
//! `.ci/run` installs it).

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use otkv_harness::nodes::{start_local_redis, LocalNodes, NodeOptions};
use otkv_harness::workload::{key_bytes, write_value};

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");

fn redis(dir: &std::path::Path) -> LocalNodes {
    let opts = NodeOptions { engine: "memory".into(), durability: "none".into(), workers: 1, replicas: 1 };
    start_local_redis(1, &opts, dir).unwrap_or_else(|e| panic!("{e} (these tests need redis-server)"))
}

fn run_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(HARNESS).args(args).arg("--json").output().expect("run harness");
    assert!(out.status.success(), "harness failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("summary JSON on stdout")
}

#[test]
fn local_redis_servers_report_like_otkv_nodes() {
    let out = tempfile::tempdir().expect("tempdir");
    let summary = run_json(&[
        "run",
        "--target",
        "redis",
        "--nodes",
        "1..2",
        "--workload",
        "ycsb-a",
        "--keys",
        "2000",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--connections",
        "8",
        "--pipeline",
        "4",
        "--out",
        out.path().to_str().expect("utf8"),
    ]);
    let runs = summary["runs"].as_array().expect("runs");
    assert_eq!(runs.iter().map(|r| r["nodes"].as_u64()).collect::<Vec<_>>(), [Some(1), Some(2)]);
    for run in runs {
        assert_eq!(run["target"], "redis");
        assert_eq!(run["errors_total"], 0, "{run}");
        let ops = run["ops"].as_u64().expect("ops");
        assert!(ops > 100, "{run}");
        assert_eq!(run["preload"]["keys"], 2000);
        let by_op: u64 = ["read", "write"].iter().map(|k| run["by_op"][k]["ops"].as_u64().expect(k)).sum();
        assert_eq!(by_op, ops);
        // Cost from Redis's own INFO: CPU per command, RSS.
        assert!(run["server_cpu_us_per_op"].as_f64().expect("server cpu") > 0.0, "{run}");
        for node in run["per_node"].as_array().expect("per_node") {
            assert!(node["rss_bytes"].as_u64().expect("rss") > 1 << 20, "{node}");
            assert!(node["cpu_us_per_op"].as_f64().expect("cpu") > 0.0, "{node}");
        }
        let hgrm = run["hgrm"].as_str().expect("hgrm");
        assert!(hgrm.contains("redis"), "{hgrm}");
        assert!(out.path().join(hgrm).exists());
    }
}

/// Overwrites keys `0..keys` of the Redis at `addr` with values that belong to other keys.
fn corrupt(addr: std::net::SocketAddr, keys: u64) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let mut batch = Vec::new();
    for i in 0..keys {
        let mut value = Vec::new();
        write_value(&mut value, i + 1, 0, 0, 100);
        let key = key_bytes(i);
        batch.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n${}\r\n", key.len()).as_bytes());
        batch.extend_from_slice(&key);
        batch.extend_from_slice(format!("\r\n${}\r\n", value.len()).as_bytes());
        batch.extend_from_slice(&value);
        batch.extend_from_slice(b"\r\n");
    }
    s.write_all(&batch).expect("write");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while got.len() < 5 * keys as usize {
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "redis closed");
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(got, b"+OK\r\n".repeat(keys as usize));
}

#[test]
fn a_wrong_value_from_redis_is_counted_not_measured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = redis(dir.path());
    let url = format!("redis://{}", server.targets[0].addr);
    let out = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(HARNESS)
        .args(["run", "--target", "redis", "--node", &url, "--workload", "get", "--keys", "50"])
        .args(["--duration", "3s", "--warmup", "0s", "--connections", "4", "--json", "--out"])
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start harness");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).expect("read stdout");
        s
    });
    // Once the measured window has run a second (reads verified fine so far), swap every value.
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    for line in stderr.by_ref() {
        let line = line.expect("stderr line");
        if line.contains("[   1s/3s]") {
            assert!(line.ends_with("errors 0"), "{line}");
            break;
        }
    }
    corrupt(server.targets[0].addr, 50);
    for _ in stderr {}
    // Wrong values are errors: the run ends with its report, and a status that says it was not good.
    assert_eq!(child.wait().expect("wait").code(), Some(1));
    let summary: serde_json::Value = serde_json::from_str(&reader.join().expect("reader")).expect("json");
    let run = &summary["runs"][0];
    let wrong = run["errors"]["wrong_value"].as_u64().unwrap_or(0);
    assert!(wrong > 0, "reads after the swap got other keys' values: {run}");
    assert_eq!(run["errors_total"].as_u64(), Some(wrong), "no other kind of error");
    assert!(run["ops"].as_u64().expect("ops") > 0, "the reads before the swap were measured");
}

#[test]
fn unreachable_or_mismatched_redis_nodes_are_clear_errors() {
    // Nothing listens on port 1.
    let out = Command::new(HARNESS)
        .args(["run", "--target", "redis", "--node", "redis://127.0.0.1:1", "--duration", "1s"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node-0") && err.contains("redis://127.0.0.1:1"), "{err}");
    assert!(err.contains("refused"), "{err}");

    let out = Command::new(HARNESS).args(["run", "--node", "redis://127.0.0.1:1"]).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("add --target redis"), "{err}");

    let out = Command::new(HARNESS).args(["run", "--target", "memcached"]).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("memcached") && err.contains("otkv") && err.contains("redis"), "{err}");

    let out = Command::new(HARNESS).args(["run", "--target", "redis", "--via-proxy"]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RESP"));
}
