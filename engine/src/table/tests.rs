//! The table against a model, and under threads: every protocol of `mod.rs` exercised with real
//! atomics (the loom models in `loom_tests.rs` explore the interleavings of small cases).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use proptest::prelude::*;

use super::{epoch, Change, Changed, Table};
use crate::entry::Meta;

fn put(t: &Table, key: &[u8], value: &[u8], version: u64) -> Changed {
    let guard = t.pin();
    let meta = Meta { version, expires_ms: 0 };
    t.change(key, &guard, 0, |_| (Change::Put(meta, value), ())).1
}

fn remove(t: &Table, key: &[u8]) -> Changed {
    let guard = t.pin();
    t.change(key, &guard, 0, |_| (Change::Remove, ())).1
}

fn get(t: &Table, key: &[u8]) -> Option<(u64, Vec<u8>)> {
    let guard = t.pin();
    t.get(key, &guard).map(|b| (b.version(), b.value().to_vec()))
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    Remove(u8),
    Get(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(k, v)| Op::Put(k, v)),
        any::<u8>().prop_map(Op::Remove),
        any::<u8>().prop_map(Op::Get),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Through growth, tombstones and rebuilds (two shards of up to 256 keys), the table is a map.
    #[test]
    fn agrees_with_a_hashmap(ops in proptest::collection::vec(op(), 1..600)) {
        let t = Table::new([1, 2, 3, 4], 2, false);
        let mut model: HashMap<Vec<u8>, (u64, Vec<u8>)> = HashMap::new();
        for (n, op) in ops.into_iter().enumerate() {
            let version = n as u64 + 1;
            match op {
                Op::Put(k, v) => {
                    let key = vec![k; 1 + k as usize % 30];
                    let c = put(&t, &key, &v, version);
                    let old = model.insert(key, (version, v));
                    prop_assert_eq!(c.old.map(|(m, _)| m.version), old.map(|(ver, _)| ver));
                    prop_assert!(c.new.is_some());
                }
                Op::Remove(k) => {
                    let key = vec![k; 1 + k as usize % 30];
                    let c = remove(&t, &key);
                    prop_assert_eq!(c.old.map(|(m, _)| m.version), model.remove(&key).map(|(ver, _)| ver));
                }
                Op::Get(k) => {
                    let key = vec![k; 1 + k as usize % 30];
                    prop_assert_eq!(get(&t, &key), model.get(&key).cloned());
                }
            }
            prop_assert_eq!(t.len(), model.len());
        }
        let mut seen = HashMap::new();
        t.for_each(|b| {
            seen.insert(b.key().to_vec(), (b.version(), b.value().to_vec()));
        });
        prop_assert_eq!(seen, model);
    }
}

#[test]
fn expiry_and_clocks_live_in_the_block() {
    let t = Table::new([9, 9, 9, 9], 1, true);
    let guard = t.pin();
    let meta = Meta { version: 7, expires_ms: 1_700_000_000_000 };
    t.change(b"k", &guard, 42, |cur| {
        assert!(cur.is_none());
        (Change::Put(meta, b"value"), ())
    });
    let b = t.get(b"k", &guard).expect("stored");
    assert_eq!((b.meta(), b.key(), b.value(), b.last_used()), (meta, &b"k"[..], &b"value"[..], 42));
    b.touch(43);
    assert_eq!(b.last_used(), 43);
    // 4 (clock) + 14 + 8 (expiry) + 1 + 5
    assert_eq!(b.size(), 32);
    assert_eq!(b.ptr() as usize % 4, 0, "a clocked block is 4-aligned");
    assert_eq!(t.block_cost(16, 100, false), 136, "a clocked 134-byte block, rounded to 4");
    let plain = Table::new([9, 9, 9, 9], 1, false);
    assert_eq!(plain.block_cost(16, 100, false), 130);
}

#[test]
fn a_reserved_table_hardly_grows_while_loading() {
    let t = Table::new([5, 6, 7, 8], 64, false);
    t.reserve(10_000);
    let reserved = t.slot_bytes();
    for i in 0..10_000u32 {
        put(&t, &i.to_le_bytes(), b"v", 1);
    }
    // Sized for three standard deviations of the spread: a shard or two may still grow, by an eighth.
    assert!(t.slot_bytes() <= reserved + reserved / 16, "{} after reserving {reserved}", t.slot_bytes());
    assert_eq!(t.len(), 10_000);
}

#[test]
fn sampling_finds_entries_from_anywhere() {
    let t = Table::new([1, 1, 2, 3], 16, false);
    for i in 0..1000u32 {
        put(&t, &i.to_le_bytes(), b"v", 1);
    }
    let guard = t.pin();
    let mut keys = std::collections::HashSet::new();
    for seed in 0..200u64 {
        let mut n = 0;
        t.sample(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 5, &guard, |b| {
            keys.insert(b.key().to_vec());
            n += 1;
        });
        assert_eq!(n, 5);
    }
    assert!(keys.len() > 500, "200 samples of 5 cover much of the table: {}", keys.len());
}

/// Readers never see a torn, freed or foreign entry while writers replace, delete and grow the table,
/// and every block ends released: each value names its key and version, checked on every read.
#[test]
fn readers_race_writers_and_growth() {
    let t = Arc::new(Table::new([3, 1, 4, 1], 4, false));
    let stop = Arc::new(AtomicBool::new(false));
    let value = |k: u32, v: u64| format!("{k}:{v}:{}", "x".repeat((k % 50) as usize)).into_bytes();
    let writers: Vec<_> = (0..2u32)
        .map(|w| {
            let t = Arc::clone(&t);
            std::thread::spawn(move || {
                for round in 0..40u64 {
                    for k in (w..4000).step_by(2) {
                        if (u64::from(k) + round) % 7 == 0 {
                            remove(&t, &k.to_le_bytes());
                        } else {
                            put(&t, &k.to_le_bytes(), &value(k, round), round);
                        }
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (t, stop) = (Arc::clone(&t), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut hits = 0u64;
                while !stop.load(Relaxed) {
                    let guard = t.pin();
                    for k in 0..4000u32 {
                        if let Some(b) = t.get(&k.to_le_bytes(), &guard) {
                            assert_eq!(b.key(), k.to_le_bytes());
                            assert_eq!(b.value(), value(k, b.version()).as_slice());
                            hits += 1;
                        }
                    }
                }
                hits
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    stop.store(true, Relaxed);
    for r in readers {
        assert!(r.join().expect("reader") > 0);
    }
    epoch::reclaim();
}

#[test]
fn deletes_shrink_the_array() {
    let t = Table::new([5, 6, 7, 8], 1, false);
    for k in 0..1000u32 {
        put(&t, &k.to_le_bytes(), b"v", 1);
    }
    let full = t.array_len(b"any");
    assert!(full >= 1000, "{full}");
    for k in 10..1000u32 {
        remove(&t, &k.to_le_bytes());
    }
    let after = t.array_len(b"any");
    // An array shrinks once it is four times longer than its entries need (24 slots for 10).
    assert!(after < 4 * 24, "an array for 10 entries shrank from {full} to {after}");
    for k in 0..10u32 {
        assert!(get(&t, &k.to_le_bytes()).is_some(), "key {k} survived the rebuilds");
    }
    assert_eq!(t.len(), 10);
    assert_eq!(t.slot_bytes(), after * 8);
}

/// A walk of the whole table pins shard by shard: what is retired while it runs is released before it
/// ends, not held back until then.
#[test]
fn scan_does_not_hold_back_reclamation() {
    static RELEASED: AtomicBool = AtomicBool::new(false);
    #[allow(unsafe_code)]
    unsafe fn mark(_: *mut u8, _: usize) {
        RELEASED.store(true, Relaxed);
    }
    let t = Table::new([1, 1, 2, 3], 64, false);
    for k in 0..6400u32 {
        put(&t, &k.to_le_bytes(), b"v", 1);
    }
    let (mut seen, mut released_at) = (0, None);
    t.for_each(|_| {
        seen += 1;
        if seen == 1 {
            let guard = t.pin();
            // SAFETY: `mark` touches nothing; it only records that it ran.
            #[allow(unsafe_code)]
            guard.defer(unsafe { epoch::Deferred::new(mark, std::ptr::null_mut(), 0, 0) });
        } else if released_at.is_none() {
            epoch::reclaim();
            if RELEASED.load(Relaxed) {
                released_at = Some(seen);
            }
        }
    });
    assert_eq!(seen, 6400);
    let at = released_at.expect("released during the walk");
    assert!(at < 6400 / 2, "released only after {at} of 6,400 entries");
}

/// Compaction moves every block it is asked to, and every key reads back the same afterwards.
#[test]
fn compaction_moves_blocks_and_keeps_every_value() {
    let t = Table::new([9, 9, 9, 9], 16, false);
    for k in 0..2000u32 {
        put(&t, &k.to_le_bytes(), &k.to_be_bytes().repeat(k as usize % 40 + 1), 1);
    }
    let before: Vec<usize> = (0..2000u32)
        .map(|k| {
            let guard = t.pin();
            t.get(&k.to_le_bytes(), &guard).map(|b| b.ptr() as usize).expect("present")
        })
        .collect();
    let mut paced = 0;
    let (moved, bytes) = t.compact(|_, _| true, || paced += 1);
    assert_eq!(moved, 2000);
    assert!(bytes >= 2000 * 8);
    assert_eq!(paced, 16, "paced once a shard");
    for k in 0..2000u32 {
        let guard = t.pin();
        let b = t.get(&k.to_le_bytes(), &guard).expect("present");
        assert_eq!(b.value(), k.to_be_bytes().repeat(k as usize % 40 + 1).as_slice());
        assert_ne!(b.ptr() as usize, before[k as usize], "key {k} moved");
    }
    epoch::reclaim();
}
