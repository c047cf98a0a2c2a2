//! A multi-threaded stress of the memory engine's table for `valgrind --tool=memcheck`
//! (`benches/memcheck.sh`): writers replace, delete and re-create keys (so blocks are released through the
//! epoch collector while readers hold them, and shards grow and are rebuilt), readers check every value they
//! see, a snapshot walks the table, and eviction samples it. Any read of freed memory, double free or leak
//! of a live block is memcheck's to report.
//!
//! `cargo run --release -p otkv-engine --example table_stress [OPS_PER_THREAD]` (default 20,000).

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use otkv_engine::{Durability, Engine, EngineConfig, Eviction};

fn value(key: u32, version: u64) -> Vec<u8> {
    format!("{key}:{version}:{}", "v".repeat((key % 200) as usize)).into_bytes()
}

fn main() {
    let ops: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig::memory_durable(dir.path(), Durability::Periodic)
        .with_max_memory(2 << 20, Eviction::AllKeysLru);
    let engine = Arc::new(Engine::open(config).expect("open"));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u32)
        .map(|w| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                for i in 0..ops {
                    let key = (i * 7 + w) % 5000;
                    if i % 5 == 0 {
                        engine.delete(&key.to_le_bytes()).expect("delete");
                    } else {
                        let version = u64::from(i);
                        engine.put(&key.to_le_bytes(), &value(key, version)).expect("put");
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2u32)
        .map(|r| {
            let (engine, stop) = (Arc::clone(&engine), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut seen = 0u64;
                let mut k = r;
                while !stop.load(Ordering::Relaxed) {
                    k = (k + 13) % 5000;
                    engine
                        .batch(|b| {
                            b.get_with(&k.to_le_bytes(), |v| {
                                // Let the writers run while this value is held: a block released too early
                                // is then read after its release, which memcheck reports.
                                std::thread::yield_now();
                                let text = std::str::from_utf8(v).expect("a value is text");
                                assert!(text.starts_with(&format!("{k}:")), "key {k} read {text:.20}");
                                seen += 1;
                            })
                        })
                        .expect("get");
                }
                seen
            })
        })
        .collect();
    engine.snapshot().expect("snapshot");
    for w in writers {
        w.join().expect("writer");
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    engine.snapshot().expect("snapshot");
    let keys = engine.len();
    Arc::try_unwrap(engine).expect("last reference").close().expect("close");
    println!("{ops} writes per writer, {reads} reads, {keys} keys at the end");
}
