//! `harness run --target etcd`: the same client, workloads and checks against real etcd clusters (one of
//! N members for each node count), with the same report, and refused where it would not be comparable.
//! Needs `etcd` on PATH (Debian's etcd-server package; `.ci/run` installs it).

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::process::Command;

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");

fn run(args: &[&str]) -> std::process::Output {
    Command::new(HARNESS).args(args).output().expect("run harness")
}

#[test]
fn etcd_clusters_of_one_to_three_members_report_like_otkv_nodes() {
    let out = tempfile::tempdir().expect("tempdir");
    let done = run(&[
        "run",
        "--target",
        "etcd",
        "--durability",
        "sync",
        "--nodes",
        "1..3",
        "--workload",
        "ycsb-a",
        "--keys",
        "300",
        "--ops",
        "1200",
        "--warmup",
        "0s",
        "--connections",
        "8",
        "--pipeline",
        "2",
        "--json",
        "--out",
        out.path().to_str().expect("utf8"),
    ]);
    assert!(done.status.success(), "harness failed: {}", String::from_utf8_lossy(&done.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&done.stdout).expect("summary JSON on stdout");
    let runs = summary["runs"].as_array().expect("runs");
    assert_eq!(runs.iter().map(|r| r["nodes"].as_u64()).collect::<Vec<_>>(), [Some(1), Some(2), Some(3)]);
    for run in runs {
        assert_eq!(run["target"], "etcd");
        assert_eq!(run["errors_total"], 0, "{run}");
        assert_eq!(run["ops"], 1200, "{run}");
        assert_eq!(run["preload"]["keys"], 300);
        // Every member was measured from its own /metrics: CPU and RSS, and the key calls it answered.
        assert!(run["server_cpu_us_per_op"].as_f64().expect("server cpu") > 0.0, "{run}");
        let members = run["per_node"].as_array().expect("per_node");
        assert_eq!(members.len() as u64, run["nodes"].as_u64().expect("nodes"));
        for member in members {
            assert!(member["rss_bytes"].as_u64().expect("rss") > 1 << 20, "{member}");
        }
        let hgrm = run["hgrm"].as_str().expect("hgrm");
        assert!(hgrm.contains("etcd") && out.path().join(hgrm).exists(), "{hgrm}");
    }
}

#[test]
fn etcd_is_refused_where_it_cannot_be_measured_honestly() {
    for (args, said) in [
        (&["--durability", "none"][..], "etcd syncs every write"),
        (&["--durability", "sync", "--ttl", "60"][..], "--ttl"),
        (&["--durability", "sync", "--cas-share", "0.5", "--workload", "ycsb-a"][..], "--cas-share"),
        (&["--durability", "sync", "--via-proxy"][..], "drop --proxy/--via-proxy"),
    ] {
        let mut all = vec!["run", "--target", "etcd", "--nodes", "1", "--ops", "100"];
        all.extend_from_slice(args);
        let out = run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(said), "{args:?}: {stderr}");
    }
}
