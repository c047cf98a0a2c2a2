//! Instructions and cache misses per engine operation, counted exactly by callgrind rather than timed
//! (criterion's wall-clock figures swing ±20% on these machines; callgrind's counts do not move):
//!
//! ```sh
//! cargo build --release -p otkv-engine --example engine_ops
//! valgrind --tool=callgrind --cache-sim=yes --collect-atstart=no \
//!     --toggle-collect='engine_ops::measured_puts' target/release/examples/engine_ops
//! ```
//!
//! (`measured_gets` for reads, `measured_misses` for reads of keys never written.) The memory engine (`ENGINE=flurry` for the flurry one) holds 1M keys of 16
//! bytes with 100-byte values; each measured function does 1M overwrites or 1M reads of random keys, so
//! "Collected" ÷ 1M is per operation. A read runs as the server runs it: the value is looked at in place
//! (`Batch::get_entry_with`), not copied out. Each operation draws its key (an xorshift step and the
//! 16-byte decimal key, about 70 instructions, the same for every engine).

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use common::key;

use otkv_engine::{Engine, EngineConfig};
use std::hint::black_box;

const KEYS: u64 = 1_000_000;
const OPS: u64 = 1_000_000;

#[inline(never)]
fn measured_puts(engine: &Engine, mut x: u64) {
    let mut value = [b'v'; 100];
    for i in 0..OPS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        value[..8].copy_from_slice(&i.to_le_bytes());
        engine.put(&key(x % KEYS), &value).expect("put");
    }
}

#[inline(never)]
fn measured_gets(engine: &Engine, mut x: u64) {
    for _ in 0..OPS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let read = engine.batch(|b| b.get_entry_with(&key(x % KEYS), |meta, v| (meta.version, v.len())));
        black_box(read.expect("get"));
    }
}

#[inline(never)]
fn measured_misses(engine: &Engine, mut x: u64) {
    for _ in 0..OPS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Keys from KEYS on were never written.
        let read =
            engine.batch(|b| b.get_entry_with(&key(KEYS + x % KEYS), |meta, v| (meta.version, v.len())));
        black_box(read.expect("get"));
    }
}

fn main() {
    let kind = std::env::var("ENGINE").unwrap_or_else(|_| "memory".into());
    let kind: otkv_engine::EngineKind = kind.parse().expect("ENGINE: memory or flurry");
    let engine = Engine::open(EngineConfig::memory().with_kind(kind)).expect("open");
    let value = [b'v'; 100];
    for i in 0..KEYS {
        engine.put(&key(i), &value).expect("put");
    }
    measured_puts(&engine, 7);
    measured_gets(&engine, 11);
    measured_misses(&engine, 13);
}
