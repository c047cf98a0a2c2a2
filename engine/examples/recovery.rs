//! Recovery time and disk use of the memory engine's log and snapshots, for N keys of 100 bytes.
//!
//! `cargo run --release -p otkv-engine --example recovery -- [KEYS]` (default 1,000,000):
//! 1. writes KEYS keys with `periodic` durability, then abandons the engine as a crash would (no snapshot);
//! 2. reopens it: recovery replays the whole log;
//! 3. closes it cleanly (a snapshot, after which the log is dropped) and reopens: recovery loads the
//!    snapshot (in parallel) and replays an empty log.
//!
//! Prints wall time and the bytes on disk at each step.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use common::disk_use;

use std::time::Instant;

use otkv_engine::{Durability, Engine, EngineConfig};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys: u64 = std::env::args().nth(1).and_then(|k| k.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let mut config = EngineConfig::memory_durable(dir.path(), Durability::Periodic);
    config.snapshot_interval = Some(std::time::Duration::from_hours(1));
    let data_bytes = keys * (16 + 100);

    let started = Instant::now();
    let engine = Engine::open(config.clone())?;
    let mut value = [b'v'; 100];
    for i in 0..keys {
        value[..8].copy_from_slice(&i.to_le_bytes());
        engine.put(format!("key{i:013}").as_bytes(), &value)?;
    }
    engine.flush()?;
    println!(
        "wrote {keys} keys of 100 B in {:.2} s ({:.1} MiB of keys and values)",
        started.elapsed().as_secs_f64(),
        mib(data_bytes)
    );
    println!(
        "  on disk (log only): {:.1} MiB ({:.2}x the data)",
        mib(disk_use(dir.path())),
        disk_use(dir.path()) as f64 / data_bytes as f64
    );
    std::mem::forget(engine); // a crash: no shutdown snapshot

    let started = Instant::now();
    let engine = Engine::open(config.clone())?;
    println!("recovery from the log alone: {:.2} s, {} keys", started.elapsed().as_secs_f64(), engine.len());
    let started = Instant::now();
    engine.close()?;
    println!("clean shutdown (snapshot, log dropped): {:.2} s", started.elapsed().as_secs_f64());
    println!(
        "  on disk (snapshot + empty log): {:.1} MiB ({:.2}x the data)",
        mib(disk_use(dir.path())),
        disk_use(dir.path()) as f64 / data_bytes as f64
    );

    let started = Instant::now();
    let engine = Engine::open(config)?;
    println!("recovery from the snapshot: {:.2} s, {} keys", started.elapsed().as_secs_f64(), engine.len());
    drop(engine);
    Ok(())
}
