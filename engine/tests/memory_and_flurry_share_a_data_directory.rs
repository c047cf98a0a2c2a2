//! The two memory engines write the same log and snapshot formats: a data directory written by `--engine
//! memory` (the table) opens with `--engine flurry`, and back, after a crash (log replay) and after a clean
//! shutdown (snapshot), with every value, version and expiry as it was.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::path::Path;

use otkv_engine::{Condition, Durability, Engine, EngineConfig, EngineKind, Meta};

fn open(dir: &Path, kind: EngineKind) -> Engine {
    let config = EngineConfig::memory_durable(dir, Durability::Sync).with_kind(kind);
    Engine::open(config).expect("open")
}

/// Writes keys `from..to` (every third with an expiry far ahead, every fifth deleted again).
fn write(engine: &Engine, from: u32, to: u32) {
    let far = otkv_engine::now_ms() + 3_600_000;
    for i in from..to {
        let key = format!("k{i:05}");
        let expires = if i % 3 == 0 { far + u64::from(i) } else { 0 };
        engine.put_if(key.as_bytes(), format!("v{i}").as_bytes(), Condition::Always, expires).expect("put");
        if i % 5 == 4 {
            engine.delete(format!("k{:05}", i - 1).as_bytes()).expect("delete");
        }
    }
}

fn contents(engine: &Engine) -> Vec<(String, Meta, Vec<u8>)> {
    let mut keys = engine.keys(b"k").expect("list");
    keys.sort();
    keys.iter()
        .map(|k| {
            let (meta, value) = engine.get_entry(k).expect("get").expect("listed key present");
            (String::from_utf8_lossy(k).into_owned(), meta, value.to_vec())
        })
        .collect()
}

#[test]
fn a_directory_moves_between_the_table_and_flurry_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (round, (from, to)) in
        [(EngineKind::Memory, EngineKind::Flurry), (EngineKind::Flurry, EngineKind::Memory)]
            .into_iter()
            .enumerate()
    {
        let base = round as u32 * 2000;
        // A crash: the log alone carries the writes.
        let engine = open(dir.path(), from);
        write(&engine, base, base + 1000);
        let before = contents(&engine);
        std::mem::forget(engine);
        let engine = open(dir.path(), to);
        assert_eq!(contents(&engine), before, "{from} → {to}, replayed from the log");
        // A clean shutdown: a snapshot carries them.
        write(&engine, base + 1000, base + 2000);
        let before = contents(&engine);
        engine.close().expect("close");
        let engine = open(dir.path(), from);
        assert_eq!(contents(&engine), before, "{to} → {from}, loaded from the snapshot");
        engine.close().expect("close");
    }
}
