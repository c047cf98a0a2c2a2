//! A `sync` node whose disk fills: it refuses writes with 503 and says why, keeps serving reads, tells
//! load balancers through `/healthz` (503, since when and why), `/v1/stats` and `/metrics`; the proxy's
//! own `/healthz` names it; and after `kill -9`, every write it acknowledged is there when it restarts
//! on a larger disk.
//!
//! The disk is real: a 3 MiB tmpfs, mounted by the test (CI runs as root; elsewhere the test says it is
//! skipped).

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(ok.success(), "mount a tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A `harness` process, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(HARNESS)
            .args(args)
            .args(["--port", "0"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("line");
        let url = line.trim().strip_prefix("listening on ").expect("listening line").to_string();
        Server { child, url }
    }

    fn node(data_dir: &Path) -> Server {
        let dir = data_dir.to_str().expect("utf8");
        Server::start(&["node", "--durability", "sync", "--data-dir", dir, "--snapshot-interval", "0s"])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn call(method: &str, url: &str, body: &[u8]) -> (u16, String) {
    let req = ureq::request(method, url).timeout(std::time::Duration::from_secs(10));
    let result = if method == "PUT" { req.send_bytes(body) } else { req.call() };
    let resp = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let mut text = String::new();
    resp.into_reader().read_to_string(&mut text).expect("body");
    (status, text)
}

#[test]
fn a_full_disk_refuses_writes_says_so_in_healthz_and_loses_nothing_acknowledged() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting the small tmpfs this test fills needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let small = dir.path().join("small");
    std::fs::create_dir(&small).expect("mkdir");
    let disk = Tmpfs::mount(&small, "3m");
    let node = Server::node(&small.join("data"));
    let proxy = Server::start(&["proxy", "--node", &node.url]);

    let value = vec![b'v'; 4000];
    let mut acknowledged = Vec::new();
    let refusal = loop {
        let key = format!("k{}", acknowledged.len());
        match call("PUT", &format!("{}/v1/kv/{key}", proxy.url), &value) {
            (201, _) => acknowledged.push(key),
            other => break other,
        }
        assert!(acknowledged.len() < 10_000, "the 3 MiB disk never filled");
    };
    assert_eq!(refusal.0, 503, "{refusal:?}");
    assert!(refusal.1.contains("No space left on device"), "the 503 says why: {refusal:?}");
    assert!(acknowledged.len() > 100, "the disk took the first writes");

    // The node says so wherever an operator or a load balancer looks.
    let (status, health) = call("GET", &format!("{}/healthz", node.url), b"");
    assert_eq!(status, 503, "{health}");
    assert!(
        health.starts_with("writes refused since 20") && health.contains("sync failed: No space left"),
        "{health}"
    );
    let (_, stats) = call("GET", &format!("{}/v1/stats", node.url), b"");
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("json");
    assert!(stats["writes_refused"]["reason"].as_str().is_some_and(|r| r.contains("No space")), "{stats}");
    let (_, metrics) = call("GET", &format!("{}/metrics", node.url), b"");
    assert!(metrics.lines().any(|l| l == "otkv_writes_refused 1"), "{metrics}");
    let (status, health) = call("GET", &format!("{}/healthz", proxy.url), b"");
    assert_eq!(status, 503);
    assert!(health.contains("node-0 (") && health.contains("writes refused since"), "{health}");
    // Reads go on; every later write is refused, even one that would fit.
    assert_eq!(call("GET", &format!("{}/v1/kv/{}", proxy.url, acknowledged[0]), b"").0, 200);
    assert_eq!(call("PUT", &format!("{}/v1/kv/small", proxy.url), b"x").0, 503);

    // kill -9, then the same files on a larger disk: every acknowledged write is there.
    drop(proxy);
    drop(node);
    let large = dir.path().join("large");
    let copied = Command::new("cp").arg("-a").arg(small.join("data")).arg(&large).status().expect("cp");
    assert!(copied.success());
    drop(disk);
    let node = Server::node(&large);
    for key in &acknowledged {
        let (status, got) = call("GET", &format!("{}/v1/kv/{key}", node.url), b"");
        assert_eq!((status, got.len()), (200, value.len()), "{key}");
    }
    assert_eq!(call("GET", &format!("{}/healthz", node.url), b""), (200, "ok\n".into()));
    let (_, metrics) = call("GET", &format!("{}/metrics", node.url), b"");
    assert!(metrics.lines().any(|l| l == "otkv_writes_refused 0"), "{metrics}");
}
