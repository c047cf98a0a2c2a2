//! The engine against the maps it could have been built on.
//!
//! Every store is driven with the same 16-byte keys, 100-byte values and random key order:
//! - `engine/memory` (the engine's own table), `engine/flurry` (the same engine on flurry), `engine/sled`:
//!   the engine as the server uses it (one batch per operation, with versions, expiry checks and the budget);
//! - `raw/flurry`: the bare map the flurry engine wraps (what the engine's meaning costs over it);
//! - `raw/papaya`, `raw/dashmap`, `raw/rwlock`: the alternatives, all hashed with ahash, all storing the same
//!   `Box<[u8]> -> Bytes` entries.
//!
//! A read looks at the value in place, under the store's guard or lock, and reads its first byte, as the
//! server copies a value straight into a response (no store copies it out or bumps a count).
//!
//! Workloads: `get_hit` (every key exists), `get_miss` (no key does), `put` (overwrite an existing key with a
//! unique value: sled skips a write whose value equals the stored one), `mix90` (90% get, 10% put). Each at
//! 100k and 1M keys, on 1 and 2 threads. Names read as a table: `engine/memory/get_hit/1M/2t`. Throughput is
//! operations per second summed over threads.
//!
//! `OTKV_BENCH_SIZES=100k` (or `1M`) limits the sizes, e.g. for a quick look.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use otkv_engine::{Durability, Engine, EngineConfig, EngineKind};

const VALUE_BYTES: usize = 100;

/// The operations every store under test offers. `get` reads the value in place and returns its first
/// byte.
trait Store: Sync {
    fn get(&self, key: &[u8]) -> Option<u8>;
    fn put(&self, key: &[u8], value: &[u8]);
}

fn first(value: &[u8]) -> u8 {
    value.first().copied().unwrap_or(0)
}

struct EngineStore {
    engine: Engine,
    _dir: Option<tempfile::TempDir>,
}

impl Store for EngineStore {
    fn get(&self, key: &[u8]) -> Option<u8> {
        self.engine.batch(|b| b.get_with(key, first)).expect("engine get")
    }
    fn put(&self, key: &[u8], value: &[u8]) {
        self.engine.put(key, value).expect("engine put");
    }
}

type Flurry = flurry::HashMap<Box<[u8]>, Bytes, ahash::RandomState>;
impl Store for Flurry {
    fn get(&self, key: &[u8]) -> Option<u8> {
        self.pin().get(key).map(|v| first(v))
    }
    fn put(&self, key: &[u8], value: &[u8]) {
        self.pin().insert(key.into(), Bytes::copy_from_slice(value));
    }
}

type Papaya = papaya::HashMap<Box<[u8]>, Bytes, ahash::RandomState>;
impl Store for Papaya {
    fn get(&self, key: &[u8]) -> Option<u8> {
        self.pin().get(key).map(|v| first(v))
    }
    fn put(&self, key: &[u8], value: &[u8]) {
        self.pin().insert(key.into(), Bytes::copy_from_slice(value));
    }
}

type Dash = dashmap::DashMap<Box<[u8]>, Bytes, ahash::RandomState>;
impl Store for Dash {
    fn get(&self, key: &[u8]) -> Option<u8> {
        dashmap::DashMap::get(self, key).map(|v| first(v.value()))
    }
    fn put(&self, key: &[u8], value: &[u8]) {
        self.insert(key.into(), Bytes::copy_from_slice(value));
    }
}

type Locked = RwLock<HashMap<Box<[u8]>, Bytes, ahash::RandomState>>;
impl Store for Locked {
    fn get(&self, key: &[u8]) -> Option<u8> {
        self.read().expect("lock").get(key).map(|v| first(v))
    }
    fn put(&self, key: &[u8], value: &[u8]) {
        self.write().expect("lock").insert(key.into(), Bytes::copy_from_slice(value));
    }
}

/// Builds an empty store.
type MakeStore = Box<dyn Fn() -> Box<dyn Store>>;

/// The stores, each named as it appears in the benchmark ids, built empty.
fn stores() -> Vec<(&'static str, MakeStore)> {
    vec![
        (
            "engine/memory",
            Box::new(|| {
                let engine = Engine::open(EngineConfig::memory()).expect("memory engine");
                Box::new(EngineStore { engine, _dir: None }) as Box<dyn Store>
            }),
        ),
        (
            "engine/flurry",
            Box::new(|| {
                let config = EngineConfig::memory().with_kind(EngineKind::Flurry);
                let engine = Engine::open(config).expect("flurry engine");
                Box::new(EngineStore { engine, _dir: None }) as Box<dyn Store>
            }),
        ),
        (
            "engine/sled",
            Box::new(|| {
                let dir = tempfile::tempdir().expect("tempdir");
                let config = EngineConfig::sled(dir.path()).with_durability(Durability::None);
                let engine = Engine::open(config).expect("sled engine");
                Box::new(EngineStore { engine, _dir: Some(dir) }) as Box<dyn Store>
            }),
        ),
        ("raw/flurry", Box::new(|| Box::new(Flurry::with_hasher(ahash::RandomState::new())))),
        ("raw/papaya", Box::new(|| Box::new(Papaya::with_hasher(ahash::RandomState::new())))),
        ("raw/dashmap", Box::new(|| Box::new(Dash::with_hasher(ahash::RandomState::new())))),
        ("raw/rwlock", Box::new(|| Box::new(Locked::new(HashMap::with_hasher(ahash::RandomState::new()))))),
    ]
}

/// 16-byte keys: `key` and 13 decimal digits.
fn keys(n: usize) -> Vec<[u8; 16]> {
    (0..n)
        .map(|i| {
            let mut k = [0u8; 16];
            k.copy_from_slice(format!("key{i:013}").as_bytes());
            k
        })
        .collect()
}

/// xorshift64*: a random key order that costs a few cycles, so the map is what gets measured.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    GetHit,
    GetMiss,
    Put,
    Mix90,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::GetHit => "get_hit",
            Workload::GetMiss => "get_miss",
            Workload::Put => "put",
            Workload::Mix90 => "mix90",
        }
    }
}

/// One thread's share: `ops` operations of `workload` on random keys. `seed` keeps threads apart, and the
/// value counter makes every written value unique.
fn drive(store: &dyn Store, keys: &[[u8; 16]], workload: Workload, ops: u64, seed: u64) {
    let mut rng = Rng(seed | 1);
    let mut value = [b'v'; VALUE_BYTES];
    // The second half of `keys` was never written: the misses.
    let n = keys.len() as u64 / 2;
    let offset = if workload == Workload::GetMiss { n } else { 0 };
    for i in 0..ops {
        let r = rng.next();
        let key = &keys[(offset + r % n) as usize];
        let write = match workload {
            Workload::GetHit | Workload::GetMiss => false,
            Workload::Put => true,
            Workload::Mix90 => (r >> 40).is_multiple_of(10),
        };
        if write {
            value[..8].copy_from_slice(&(seed.wrapping_mul(1 << 40) ^ i).to_le_bytes());
            store.put(key, &value);
        } else {
            black_box(store.get(key));
        }
    }
}

/// Wall time for `iters` operations spread over `threads` threads.
fn timed(
    store: &dyn Store,
    keys: &[[u8; 16]],
    workload: Workload,
    iters: u64,
    threads: u64,
    salt: u64,
) -> Duration {
    if threads == 1 {
        let start = Instant::now();
        drive(store, keys, workload, iters, salt);
        return start.elapsed();
    }
    let per_thread = iters.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || drive(store, keys, workload, per_thread, salt ^ ((t + 1) * 0x9E37_79B9)));
        }
    });
    start.elapsed()
}

fn sizes() -> Vec<(&'static str, usize)> {
    let all = [("100k", 100_000), ("1M", 1_000_000)];
    match std::env::var("OTKV_BENCH_SIZES") {
        Ok(only) => all.into_iter().filter(|(name, _)| only.split(',').any(|o| o == *name)).collect(),
        Err(_) => all.to_vec(),
    }
}

fn bench_maps(c: &mut Criterion) {
    for (size_name, size) in sizes() {
        let keys = keys(2 * size);
        for (store_name, make) in stores() {
            let store = make();
            let mut value = [b'v'; VALUE_BYTES];
            for (i, key) in keys[..size].iter().enumerate() {
                value[..8].copy_from_slice(&(i as u64).to_le_bytes());
                store.put(key, &value);
            }
            let mut group = c.benchmark_group(store_name);
            group.throughput(Throughput::Elements(1));
            let mut salt = 0u64;
            for workload in [Workload::GetHit, Workload::GetMiss, Workload::Put, Workload::Mix90] {
                for threads in [1u64, 2] {
                    let id = BenchmarkId::new(workload.name(), format!("{size_name}/{threads}t"));
                    group.bench_function(id, |b| {
                        b.iter_custom(|iters| {
                            salt += 1;
                            timed(store.as_ref(), &keys, workload, iters, threads, salt)
                        });
                    });
                }
            }
            group.finish();
        }
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_maps
}
criterion_main!(benches);
