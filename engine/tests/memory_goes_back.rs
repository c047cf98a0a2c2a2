//! The memory engines' footprint follows their live data: deletes, shrinking overwrites and sparse
//! deletes give memory back, a worker that goes idle does not keep what it retired, and the expiry index
//! keeps every expiry the map holds however writers race.
//!
//! The figures read are the engine's own (`MemoryStats`: the slab's chunks plus what malloc has handed
//! out, and retired bytes), which are process-wide: the tests of this file take turns (`SERIAL`).

#![allow(clippy::expect_used, reason = "a test's expect is its assertion")]

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use otkv_engine::{Condition, Engine, EngineConfig, EngineKind, MemoryStats};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn engine(kind: EngineKind) -> Engine {
    Engine::open(EngineConfig::memory().with_kind(kind)).expect("open")
}

/// A table engine with nothing retired anywhere, and what the process's allocators hold then.
fn fresh() -> (Engine, u64) {
    let e = engine(EngineKind::Memory);
    e.purge_memory();
    let empty = stats(&e).allocated_bytes;
    (e, empty)
}

fn stats(e: &Engine) -> MemoryStats {
    e.memory_stats().expect("a memory engine has memory stats")
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:013}").into_bytes()
}

fn load(e: &Engine, n: usize, size: usize) {
    let value = vec![b'v'; size];
    e.batch(|b| {
        for i in 0..n {
            b.put(&key(i), &value).expect("put");
        }
    });
}

/// Deletes every `step`-th of the first `n` keys, each of which must be there.
fn delete_every(e: &Engine, n: usize, step: usize) {
    e.batch(|b| {
        for i in (0..n).step_by(step) {
            assert!(b.delete(&key(i)).expect("delete"), "key {i}");
        }
    });
}

/// Waits (at most 20 s) until `done` holds of the engine's stats: the memory thread's work is
/// asynchronous, and this is the condition it must reach, not a guess at how long it takes.
fn eventually(e: &Engine, what: &str, done: impl Fn(&MemoryStats) -> bool) -> MemoryStats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = stats(e);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const MIB: u64 = 1 << 20;

#[test]
fn deleting_every_key_returns_memory() {
    let _turn = serial();
    let (e, empty) = fresh();
    load(&e, 100_000, 100);
    let full = stats(&e).allocated_bytes;
    assert!(full > empty + 12 * MIB, "100k x 100 B allocated: {empty} -> {full}");
    delete_every(&e, 100_000, 1);
    // The memory thread alone gives it back; purging only says when.
    let after = eventually(&e, "the deletes' memory is given back", |s| {
        s.retired_bytes == 0 && s.allocated_bytes < empty + 2 * MIB
    });
    assert_eq!(e.len(), 0);
    assert!(after.used_bytes < MIB, "{after:?}");
}

#[test]
fn shrinking_overwrites_return_memory() {
    let _turn = serial();
    let (e, empty) = fresh();
    load(&e, 20_000, 1000);
    let big = stats(&e).allocated_bytes - empty;
    load(&e, 20_000, 100);
    let small = eventually(&e, "the 1,000-byte values' memory is given back", |s| {
        s.retired_bytes == 0 && s.allocated_bytes - empty < big / 4
    });
    assert!(small.allocated_bytes - empty < 2 * small.used_bytes, "{small:?}");
}

/// Every other key deleted leaves every chunk half full: compaction moves the live half into fewer
/// chunks and the emptied ones are unmapped.
#[test]
fn sparse_deletes_are_compacted() {
    let _turn = serial();
    let (e, empty) = fresh();
    load(&e, 200_000, 100);
    let full = stats(&e).allocated_bytes - empty;
    delete_every(&e, 200_000, 2);
    e.purge_memory();
    let after = eventually(&e, "half the keys' memory is given back", |s| {
        s.retired_bytes == 0 && s.allocated_bytes - empty < full * 6 / 10
    });
    assert!(after.compacted_bytes > 0, "compaction moved entries: {after:?}");
    // Every key that stayed reads back whole.
    e.batch(|b| {
        for i in (1..200_000).step_by(2) {
            assert_eq!(b.get(&key(i)).expect("get").as_deref(), Some(&[b'v'; 100][..]), "key {i}");
        }
    });
}

/// A worker thread overwrites a few large values (fewer than fill its bag of releases) and goes idle
/// without ending: the memory thread seals its bag and releases them.
#[test]
fn idle_worker_releases_what_it_retired() {
    let _turn = serial();
    let e = Arc::new(engine(EngineKind::Memory));
    let (wrote, idle) = (Arc::new(std::sync::Barrier::new(2)), Arc::new(std::sync::Barrier::new(2)));
    let worker = {
        let (e, wrote, idle) = (Arc::clone(&e), Arc::clone(&wrote), Arc::clone(&idle));
        std::thread::spawn(move || {
            let value = vec![1u8; 1 << 20];
            for round in 0..3 {
                for k in 0..10 {
                    e.put(format!("big{k}").as_bytes(), &value[..value.len() - round]).expect("put");
                }
            }
            wrote.wait();
            // Idle, alive, never pinning again until the test is done.
            idle.wait();
        })
    };
    wrote.wait();
    assert!(stats(&e).retired_bytes > 0 || stats(&e).allocated_bytes > 0);
    eventually(&e, "the idle worker's releases ran", |s| s.retired_bytes == 0);
    idle.wait();
    worker.join().expect("worker");
}

/// Two writers set the same keys with different expiries over and over: whatever order their writes
/// land in, the expiry index keeps the one each key ends with, so active expiry removes every key (a
/// key the index lost would stay in memory, unreadable, forever).
fn racing_expiries_are_all_reclaimed(kind: EngineKind) {
    let e = Arc::new(engine(kind));
    let keys = 300;
    let base = otkv_engine::now_ms();
    let writers: Vec<_> = [300u64, 600]
        .into_iter()
        .map(|ttl| {
            let e = Arc::clone(&e);
            std::thread::spawn(move || {
                // Each writer always sets the same expiry: the race that loses an index entry is a write
                // of X over Y and one of Y over X, noted in the other order.
                let at = base + ttl;
                for _ in 0..20 {
                    for k in 0..keys {
                        e.put_if(format!("t{k}").as_bytes(), b"v", Condition::Always, at).expect("put");
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    assert_eq!(e.len(), keys);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !e.is_empty() {
        assert!(Instant::now() < deadline, "{} keys never expired", e.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ttl_index_agrees_with_the_map_under_racing_writers() {
    racing_expiries_are_all_reclaimed(EngineKind::Memory);
}

#[test]
fn ttl_index_agrees_with_the_map_under_racing_writers_on_flurry() {
    racing_expiries_are_all_reclaimed(EngineKind::Flurry);
}
