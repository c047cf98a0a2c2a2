//! The memory engine at scale: 10M keys of 100 bytes with `periodic` durability.
//!
//! `cargo run --release -p otkv-engine --example ten_million -- [KEYS] [DIR]` (default 10,000,000 keys, a
//! temporary directory; `ENGINE=flurry` for the flurry engine, default the table). Reports, in order:
//! 1. load rate: KEYS puts of 16-byte keys and 100-byte values from two threads, each put timed: the
//!    slowest single put while the table grows from empty, and the 99.99th percentile;
//! 2. RSS and the engine's own memory estimate;
//! 3. GET latency (p50/p99/p99.9/max) from one reader thread on random keys, first for a while with no
//!    snapshot running, then while a snapshot of the whole store is written;
//! 4. snapshot time and file size, and the disk used after it next to the data's own size (keys and
//!    values);
//! 5. restart time: the engine closed cleanly, then opened by a new process, as a restarted server would
//!    (the snapshot loaded in parallel, then the log's tail replayed). The new process is this example
//!    run again as `ten_million --recover DIR`;
//! 6. growth: a second, volatile engine filled from empty to KEYS by one writer, every put timed: the
//!    slowest single put while the table grows (one thread on an otherwise idle core, so the figure is the
//!    table's, not the scheduler's: the timed loads above share two cores between three threads).
//!
//! The reader and the snapshot each have a core of their own on a 2-core machine; the load uses both.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use common::{disk_use, key, rss_bytes};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use otkv_engine::{Durability, Engine, EngineConfig, EngineKind};

const VALUE_BYTES: usize = 100;

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// GETs of random keys until `stop`, each timed, in nanoseconds.
fn read_until(engine: &Engine, keys: u64, stop: &AtomicBool, seed: u64) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds");
    let mut x = seed | 1;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = key(x % keys);
        let start = Instant::now();
        let found = engine.get(&k).map(|v| v.is_some());
        hist.saturating_record(start.elapsed().as_nanos() as u64);
        assert!(matches!(found, Ok(true)), "key {} missing", String::from_utf8_lossy(&k));
    }
    hist
}

fn print_latency(label: &str, h: &Histogram<u64>) {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "GET {label:<18} {:>10} reads  p50 {:>7.2} µs  p99 {:>7.2} µs  p99.9 {:>8.2} µs  max {:>9.1} µs",
        h.len(),
        us(0.5),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1000.0
    );
}

/// `--recover DIR`: opens the engine in DIR, prints `recovered KEYS SECONDS`, and exits without closing it
/// (a clean close would write one more snapshot).
fn recover(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let config = EngineConfig {
        snapshot_interval: None,
        ..EngineConfig::memory_durable(dir, Durability::Periodic).with_kind(engine_kind())
    };
    let started = Instant::now();
    let engine = Engine::open(config)?;
    println!("recovered {} {}", engine.len(), started.elapsed().as_secs_f64());
    std::process::exit(0);
}

/// The engine `ENGINE` names (default: the table).
fn engine_kind() -> EngineKind {
    std::env::var("ENGINE").ok().and_then(|e| e.parse().ok()).unwrap_or(EngineKind::Memory)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let [flag, dir] = &std::env::args().skip(1).collect::<Vec<_>>()[..] {
        if flag == "--recover" {
            return recover(dir);
        }
    }
    let mut args = std::env::args().skip(1);
    let keys: u64 = args.next().and_then(|k| k.parse().ok()).unwrap_or(10_000_000);
    let temp = tempfile::tempdir()?;
    let dir = args.next().map_or_else(|| temp.path().to_path_buf(), Into::into);
    let config = EngineConfig {
        snapshot_interval: None, // snapshots are taken below, when measured
        ..EngineConfig::memory_durable(&dir, Durability::Periodic).with_kind(engine_kind())
    };
    let data_bytes = keys * (16 + VALUE_BYTES as u64);
    println!(
        "engine {}: {keys} keys × ({} B key + {VALUE_BYTES} B value) = {:.2} GiB of data in {}",
        engine_kind(),
        16,
        gib(data_bytes),
        dir.display()
    );

    let engine = Engine::open(config.clone())?;
    let rss_empty = rss_bytes();
    let started = Instant::now();
    let puts = std::thread::scope(|s| {
        let loaders: Vec<_> = (0..2u64)
            .map(|t| {
                let engine = &engine;
                s.spawn(move || {
                    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
                    let mut value = [b'v'; VALUE_BYTES];
                    for i in (t..keys).step_by(2) {
                        value[..8].copy_from_slice(&i.to_le_bytes());
                        let one = Instant::now();
                        engine.put(&key(i), &value).expect("put");
                        hist.saturating_record(one.elapsed().as_nanos() as u64);
                    }
                    hist
                })
            })
            .collect();
        let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
        for l in loaders {
            all.add(l.join().expect("loader")).expect("same bounds");
        }
        all
    });
    engine.flush()?;
    let load = started.elapsed();
    println!(
        "load: {:.1} s, {:.0} keys/s (2 threads, log flushed); a put: p50 {:.2} µs, p99.99 {:.1} µs, slowest {:.1} µs",
        load.as_secs_f64(),
        keys as f64 / load.as_secs_f64(),
        puts.value_at_quantile(0.5) as f64 / 1000.0,
        puts.value_at_quantile(0.9999) as f64 / 1000.0,
        puts.max() as f64 / 1000.0
    );
    let used = engine.memory_stats().map_or(0, |m| m.used_bytes);
    let rss = rss_bytes();
    println!(
        "memory: RSS {:.2} GiB ({:.0} B/key above the empty engine), engine estimate {:.2} GiB ({:.0} B/key)",
        gib(rss),
        rss.saturating_sub(rss_empty) as f64 / keys as f64,
        gib(used),
        used as f64 / keys as f64
    );

    // Reads with no snapshot, for as long as a snapshot will take (at least 5 s), then during one.
    let stop = AtomicBool::new(false);
    let quiet = std::thread::scope(|s| {
        let reader = s.spawn(|| read_until(&engine, keys, &stop, 7));
        std::thread::sleep(Duration::from_secs(5).max(Duration::from_secs(keys / 1_000_000)));
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("reader")
    });
    stop.store(false, Ordering::Relaxed);
    let (busy, snapshot_time) = std::thread::scope(|s| {
        let reader = s.spawn(|| read_until(&engine, keys, &stop, 11));
        let started = Instant::now();
        let result = engine.snapshot();
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        result.expect("snapshot");
        (reader.join().expect("reader"), took)
    });
    print_latency("without snapshot", &quiet);
    print_latency("during snapshot", &busy);
    println!(
        "p99 during / without: {:.2}",
        busy.value_at_quantile(0.99) as f64 / quiet.value_at_quantile(0.99).max(1) as f64
    );
    let snap_bytes = disk_use(&dir.join("snapshots"));
    let disk = disk_use(&dir);
    println!(
        "snapshot: {:.1} s, file {:.2} GiB; disk after it {:.2} GiB = {:.3} × the data",
        snapshot_time.as_secs_f64(),
        gib(snap_bytes),
        gib(disk),
        disk as f64 / data_bytes as f64
    );

    let started = Instant::now();
    engine.close()?; // a clean stop writes one more snapshot (of an unchanged store)
    let close = started.elapsed();
    let out = std::process::Command::new(std::env::current_exe()?).arg("--recover").arg(&dir).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (recovered, seconds) = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .get(1..3)
        .and_then(|f| Some((f[0].parse::<u64>().ok()?, f[1].parse::<f64>().ok()?)))
        .ok_or_else(|| {
            format!("the recovering process said: {text}{}", String::from_utf8_lossy(&out.stderr))
        })?;
    assert_eq!(recovered, keys);
    println!("restart: close {:.1} s (a last snapshot); recovery in a new process {seconds:.2} s ({recovered} keys)", close.as_secs_f64());

    let fresh = Engine::open(EngineConfig::memory().with_kind(engine_kind()))?;
    let mut puts = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let value = [b'v'; VALUE_BYTES];
    for i in 0..keys {
        let one = Instant::now();
        fresh.put(&key(i), &value)?;
        puts.saturating_record(one.elapsed().as_nanos() as u64);
    }
    println!(
        "growth, one writer, no log: a put p50 {:.2} µs, p99.99 {:.1} µs, slowest {:.1} µs",
        puts.value_at_quantile(0.5) as f64 / 1000.0,
        puts.value_at_quantile(0.9999) as f64 / 1000.0,
        puts.max() as f64 / 1000.0
    );
    Ok(())
}
