//! Acknowledged writes survive `kill -9`.
//!
//! For each engine with `--durability sync`: concurrent writers on separate connections write unique keys
//! and overwrite a few hot keys with rising versions; at a random moment the server is killed with SIGKILL;
//! it restarts on the same data directory, and every write acknowledged before the kill must read back with
//! its value, or (for a hot key) a later version. Cycles accumulate on one directory, so recovery also
//! recovers earlier recoveries. `OTKV_CRASH_CYCLES=200 cargo test --release --test recover_after_kill` is
//! the stress run; `cargo test` does a few cycles. With `periodic`, every write acknowledged longer than the
//! flush interval (plus a margin) before the kill must survive.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{try_read_response, Node, PATIENCE};

/// What a writer had acknowledged: key -> (version, when).
type Acked = HashMap<String, (u64, Instant)>;
/// Every acknowledged write so far: key -> (version, when acknowledged, when its server was killed).
type Survivors = HashMap<String, (u64, Instant, Instant)>;

const WRITERS: usize = 4;
const HOT_KEYS: u64 = 5;

fn cycles() -> usize {
    std::env::var("OTKV_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

/// A random number in `lo..hi`, from the clock (no extra dependency; quality is irrelevant here).
fn random_between(lo: u64, hi: u64) -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.subsec_nanos());
    lo + u64::from(nanos) % (hi - lo)
}

/// One writer: PUTs until its connection breaks or `stop`; records each acknowledged write.
fn writer(node_addr: String, cycle: usize, w: usize, acks: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> Acked {
    let mut acked = Acked::new();
    let Ok(stream) = std::net::TcpStream::connect(&node_addr) else { return acked };
    let _ = stream.set_read_timeout(Some(PATIENCE));
    let mut out = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    for i in 0u64.. {
        if stop.load(Relaxed) {
            break;
        }
        let (key, value) = if i % 3 == 0 {
            (format!("hot-c{cycle}-w{w}-{}", i % HOT_KEYS), i.to_string())
        } else {
            (format!("c{cycle}-w{w}-u{i}"), format!("v{i}-{}", "x".repeat((i % 50) as usize)))
        };
        let req =
            format!("PUT /v1/kv/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{value}", value.len());
        if out.write_all(req.as_bytes()).is_err() {
            break;
        }
        match try_read_response(&mut reader, false) {
            Ok(Some(resp)) if resp.status == 201 || resp.status == 204 => {
                acked.insert(key, (i, Instant::now()));
                acks.fetch_add(1, Relaxed);
            }
            _ => break, // killed mid-request: this write was not acknowledged
        }
    }
    acked
}

/// The value a key must hold now, given its acknowledged version.
fn check(node: &Node, acked: &Survivors, must_survive: impl Fn(Instant, Instant) -> bool) -> usize {
    let mut checked = 0;
    for (key, &(version, when, killed_at)) in acked {
        if !must_survive(when, killed_at) {
            continue;
        }
        let got = match ureq::get(&format!("{}/v1/kv/{key}", node.url)).call() {
            Ok(r) => r.into_string().expect("utf8"),
            Err(e) => panic!("acknowledged write {key} (version {version}) lost: {e}"),
        };
        if key.starts_with("hot-") {
            let got_version: u64 = got.parse().expect("hot value is a version");
            assert!(got_version >= version, "{key}: read version {got_version}, acknowledged {version}");
        } else {
            assert!(
                got.starts_with(&format!("v{version}-")),
                "{key}: read {got:?}, acknowledged version {version}"
            );
        }
        checked += 1;
    }
    checked
}

/// Runs the cycles; each kill comes after a random number of acknowledgements and at least `min_run`.
fn crash_cycles(
    engine: &str,
    durability: &[&str],
    min_run: Duration,
    must_survive: impl Fn(Instant, Instant) -> bool + Copy,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_arg = dir.path().to_str().expect("utf8").to_string();
    let mut args = vec!["--engine", engine, "--data-dir", &dir_arg];
    args.extend_from_slice(durability);
    let mut all: Survivors = HashMap::new();
    for cycle in 0..cycles() {
        let mut node = Node::start(&args);
        // Everything acknowledged in earlier cycles is still there after this restart.
        let checked = check(&node, &all, must_survive);
        assert!(cycle == 0 || checked > 0, "nothing to check after cycle {cycle}");

        let acks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (addr, acks, stop) = (node.addr.clone(), Arc::clone(&acks), Arc::clone(&stop));
                std::thread::spawn(move || writer(addr, cycle, w, acks, stop))
            })
            .collect();
        let target = random_between(50, 400);
        let started = Instant::now();
        let deadline = started + PATIENCE + min_run;
        while acks.load(Relaxed) < target || started.elapsed() < min_run {
            assert!(Instant::now() < deadline, "writers stalled at {} acks", acks.load(Relaxed));
            std::thread::sleep(Duration::from_millis(1));
        }
        node.child.kill().expect("kill -9");
        let killed_at = Instant::now();
        let _ = node.child.wait();
        stop.store(true, Relaxed);
        for h in handles {
            for (key, (version, when)) in h.join().expect("writer") {
                // Keep the highest acknowledged version of each key.
                let entry = all.entry(key).or_insert((version, when, killed_at));
                if version >= entry.0 {
                    *entry = (version, when, killed_at);
                }
            }
        }
    }
    let node = Node::start(&args);
    let checked = check(&node, &all, must_survive);
    assert!(checked > 0);
}

fn always(_: Instant, _: Instant) -> bool {
    true
}

#[test]
fn memory_sync_keeps_every_acknowledged_write_across_kill_9() {
    crash_cycles("memory", &["--durability", "sync", "--snapshot-interval", "200ms"], Duration::ZERO, always);
}

#[test]
fn flurry_sync_keeps_every_acknowledged_write_across_kill_9() {
    crash_cycles("flurry", &["--durability", "sync", "--snapshot-interval", "200ms"], Duration::ZERO, always);
}

#[test]
fn sled_sync_keeps_every_acknowledged_write_across_kill_9() {
    crash_cycles("sled", &["--durability", "sync"], Duration::ZERO, always);
}

#[test]
fn memory_periodic_loses_nothing_older_than_the_flush_interval() {
    // Interval 100 ms; a write acknowledged 600 ms before the kill has had several flushes.
    let old_enough =
        |acked: Instant, killed: Instant| killed.duration_since(acked) > Duration::from_millis(600);
    let args = ["--durability", "periodic", "--flush-interval", "100ms"];
    crash_cycles("memory", &args, Duration::from_millis(1200), old_enough);
}
