//! A restart replays the log in memory bounded by the live data, not by the log's length: a few keys
//! overwritten many times (a log hundreds of times longer than the data), the engine abandoned as a
//! crash would leave it, then reopened while the process's peak RSS is watched (`VmHWM`, reset just
//! before through `/proc/self/clear_refs`).

#![allow(clippy::expect_used, reason = "a test's expect is its assertion")]

use otkv_engine::{Durability, Engine, EngineConfig, EngineKind};

const MIB: u64 = 1 << 20;

/// A field of `/proc/self/status`, in bytes.
fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = text.lines().find(|l| l.starts_with(field)).expect("field");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).expect("a number") * 1024
}

/// The peak is the process's: the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn restart_holds_only_live_data(kind: EngineKind) {
    let _turn = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || {
        let mut c = EngineConfig::memory_durable(dir.path(), Durability::Periodic).with_kind(kind);
        c.snapshot_interval = None;
        c
    };
    let (keys, rounds, size) = (200usize, 150usize, 4096usize);
    let engine = Engine::open(config()).expect("open");
    for round in 0..rounds {
        let value = vec![round as u8; size];
        engine.batch(|b| {
            for k in 0..keys {
                b.put(format!("k{k}").as_bytes(), &value).expect("put");
            }
        });
    }
    engine.flush().expect("flush");
    // A crash: no shutdown snapshot, the whole history stays in the log.
    std::mem::forget(engine);
    let log: u64 = walk(dir.path());
    assert!(log > (keys * rounds * size) as u64, "the log holds every overwrite: {log} bytes");

    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let before = status("VmRSS:");
    let engine = Engine::open(config()).expect("reopen");
    let peak = status("VmHWM:");
    let live = (keys * size) as u64;
    assert!(
        peak - before < live + 16 * MIB,
        "replaying a {} MiB log of {} KiB of live data took the peak RSS from {} to {} MiB",
        log / MIB,
        live >> 10,
        before / MIB,
        peak / MIB
    );
    assert_eq!(engine.len(), keys);
    let last = vec![(rounds - 1) as u8; size];
    assert_eq!(engine.get(b"k7").expect("get").as_deref(), Some(&last[..]));
}

fn walk(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            let e = e.expect("entry");
            let meta = e.metadata().expect("metadata");
            if meta.is_dir() {
                walk(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[test]
fn restart_after_overwrites_holds_only_live_data() {
    restart_holds_only_live_data(EngineKind::Memory);
}

#[test]
fn restart_after_overwrites_holds_only_live_data_on_flurry() {
    restart_holds_only_live_data(EngineKind::Flurry);
}
