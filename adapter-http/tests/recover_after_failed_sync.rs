//! A failed log write or sync is final: the node stops acknowledging writes (503, saying why), keeps
//! serving reads, and after a restart serves every write it acknowledged before the failure.
//!
//! The failure is real, not mocked: the server runs under `prlimit --fsize`, so the log's growth past the
//! limit fails with EFBIG (the server handles SIGXFSZ), which the engine treats exactly like a failed
//! `fdatasync` (`PostgreSQL`'s rule since "fsyncgate": never retry, the kernel may have dropped the pages).

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use std::process::Command;

use common::{status_of, Node};

#[test]
fn a_failed_sync_refuses_writes_keeps_reads_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_arg = dir.path().to_str().expect("utf8");
    let args = ["--durability", "sync", "--data-dir", dir_arg, "--snapshot-interval", "0s"];
    // Room for the log's first 1 MiB step of preallocation, not for the second.
    let mut limited = Command::new("prlimit");
    limited.args(["--fsize=1500000", "--"]).args(common::server_argv());
    let node = Node::start_with(limited, &args);

    let value = "v".repeat(1000);
    let mut acknowledged = Vec::new();
    let refusal = loop {
        let key = format!("{}/v1/kv/k{}", node.url, acknowledged.len());
        match status_of(ureq::put(&key).send_string(&value)) {
            (201, _) => acknowledged.push(key),
            (status, body) => break (status, body),
        }
        assert!(acknowledged.len() < 5000, "the file-size limit never stopped the log");
    };
    assert_eq!(refusal.0, 503, "{refusal:?}");
    assert!(refusal.1.contains("sync failed"), "the 503 says why: {refusal:?}");
    assert!(acknowledged.len() > 100, "the limit left room for the first megabyte");

    // Every later write is refused too, even a small one that would fit: the failure is final.
    let (status, body) = status_of(ureq::put(&format!("{}/v1/kv/small", node.url)).send_string("x"));
    assert_eq!(status, 503, "{body}");
    // Reads go on.
    let first = ureq::get(&acknowledged[0]).call().expect("read after the failure");
    assert_eq!(first.into_string().expect("utf8"), value);

    // After a restart (without the limit) every acknowledged write is there.
    drop(node);
    let node = Node::start(&args);
    for key in &acknowledged {
        let key = key.rsplit('/').next().expect("key");
        let got = ureq::get(&format!("{}/v1/kv/{key}", node.url)).call().expect("acknowledged write");
        assert_eq!(got.into_string().expect("utf8"), value, "{key}");
    }
}
