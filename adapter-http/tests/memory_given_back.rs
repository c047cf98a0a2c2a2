//! A real node gives memory back to the system: its RSS falls after its keys are deleted, and its
//! memory figures (`/v1/stats`, `/metrics`) say where the memory is.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use std::time::{Duration, Instant};

use common::{status_of, Node};

const MIB: u64 = 1 << 20;

fn stats(node: &Node) -> serde_json::Value {
    let body =
        ureq::get(&format!("{}/v1/stats", node.url)).call().expect("stats").into_string().expect("body");
    serde_json::from_str(&body).expect("stats JSON")
}

fn number(doc: &serde_json::Value, path: &[&str]) -> u64 {
    let mut v = doc;
    for p in path {
        v = &v[*p];
    }
    v.as_u64().unwrap_or_else(|| panic!("no number at {path:?} in {doc}"))
}

/// Writes and deletes keys over a few keep-alive connections (ureq pools them).
fn each_key(node: &Node, keys: usize, f: impl Fn(String) -> u16 + Sync) {
    std::thread::scope(|s| {
        for t in 0..4 {
            let f = &f;
            s.spawn(move || {
                for k in (t..keys).step_by(4) {
                    let status = f(format!("{}/v1/kv/key{k:08}", node.url));
                    assert!(status == 204 || status == 201, "key {k}: {status}");
                }
            });
        }
    });
}

#[test]
fn deleting_every_key_returns_memory_to_the_system() {
    let node = Node::start(&["--engine", "memory", "--workers", "2"]);
    let empty = number(&stats(&node), &["rss_bytes"]);
    let value = vec![b'v'; 1000];
    let keys = 40_000;
    each_key(&node, keys, |url| status_of(ureq::put(&url).send_bytes(&value)).0);
    let full = stats(&node);
    let full_rss = number(&full, &["rss_bytes"]);
    assert!(full_rss > empty + 35 * MIB, "40k x 1,000 B resident: {empty} -> {full_rss}");
    assert!(number(&full, &["memory", "allocated_bytes"]) > 35 * MIB, "{full}");
    each_key(&node, keys, |url| status_of(ureq::delete(&url).call()).0);

    // The memory thread gives it back within a tick or two; this waits for that, not for a set time.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let s = stats(&node);
        let rss = number(&s, &["rss_bytes"]);
        if rss < empty + 8 * MIB && number(&s, &["memory", "retired_bytes"]) == 0 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "RSS stayed at {} MiB (empty: {} MiB): {s}",
            rss / MIB,
            empty / MIB
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(number(&after, &["keys"]), 0);
    assert!(number(&after, &["memory", "allocated_bytes"]) < 8 * MIB, "{after}");

    let metrics =
        ureq::get(&format!("{}/metrics", node.url)).call().expect("metrics").into_string().expect("text");
    for name in [
        "otkv_memory_allocated_bytes ",
        "otkv_memory_retired_bytes 0",
        "otkv_memory_compacted_bytes_total ",
        "otkv_memory_fragmentation_ratio ",
        "# TYPE otkv_memory_compacted_bytes_total counter",
    ] {
        assert!(metrics.contains(name), "{name} in {metrics}");
    }
}

/// `--compaction` takes on or off, and nothing else.
#[test]
fn compaction_switch_is_checked() {
    let node = Node::start(&["--engine", "memory", "--compaction", "off"]);
    assert_eq!(number(&stats(&node), &["memory", "compacted_bytes"]), 0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_otkv-server"))
        .args(["--port", "0", "--compaction", "sometimes"])
        .output()
        .expect("run otkv-server");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("say on or off"));
}
