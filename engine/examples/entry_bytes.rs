//! Where the bytes of a stored entry go: every heap allocation a memory engine makes per key.
//!
//! `cargo run --release -p otkv-engine --example entry_bytes -- [KEYS] [VALUE_BYTES]` (default 1,000,000
//! keys of 100 bytes, 16-byte keys; `ENGINE=flurry` for the flurry engine, default the table): counts,
//! with a counting global allocator, the allocations live after the load, by requested size, and prints
//! them per key next to what the engine's own estimate (`Engine::memory_stats`) says and what the
//! process's RSS grew by.
//!
//! Requested sizes are exact: on flurry `size_of` its node, seize's header and our value; on the table the
//! slot arrays. The table's blocks (130 bytes for these keys and values) come from the slab's 256 KiB
//! chunks, which it maps itself (`mmap`), so no allocator sees them: the engine's estimate and the RSS
//! growth show them. What the system allocator rounds its allocations up to is its business: RSS growth
//! divided by keys shows the total.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]
#![allow(unsafe_code)] // a GlobalAlloc wrapper is unsafe by definition; it only counts and forwards

mod common;

use common::rss_bytes;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use otkv_engine::{Engine, EngineConfig, EngineKind};

/// Live allocations by requested size, recorded only while `COUNTING` is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);
/// Requested size → live count. Small sizes only (a bucket array is one large allocation).
static BY_SIZE: [AtomicU64; 4097] = [const { AtomicU64::new(0) }; 4097];
static LARGE: Mutex<BTreeMap<usize, i64>> = Mutex::new(BTreeMap::new());

fn note(size: usize, delta: i64) {
    if !COUNTING.load(Ordering::Relaxed) {
        return;
    }
    LIVE_BYTES.fetch_add((size as i64 * delta) as u64, Ordering::Relaxed);
    if let Some(c) = BY_SIZE.get(size) {
        c.fetch_add(delta as u64, Ordering::Relaxed);
    } else {
        COUNTING.store(false, Ordering::Relaxed); // the map's own allocation must not recurse
        if let Ok(mut large) = LARGE.lock() {
            *large.entry(size).or_default() += delta;
        }
        COUNTING.store(true, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 1);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(layout.size(), -1);
        System.dealloc(ptr, layout);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let keys: u64 = args.next().and_then(|k| k.parse().ok()).unwrap_or(1_000_000);
    let value_bytes: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(100);
    let kind: EngineKind =
        std::env::var("ENGINE").ok().and_then(|e| e.parse().ok()).unwrap_or(EngineKind::Memory);
    let engine = Engine::open(EngineConfig::memory().with_kind(kind))?;
    let rss_before = rss_bytes();
    COUNTING.store(true, Ordering::Relaxed);
    let mut value = vec![b'v'; value_bytes];
    for i in 0..keys {
        let key = format!("key{i:013}");
        let n = value.len().min(8);
        value[..n].copy_from_slice(&i.to_le_bytes()[..n]);
        engine.put(key.as_bytes(), &value)?;
    }
    COUNTING.store(false, Ordering::Relaxed);
    let rss = rss_bytes().saturating_sub(rss_before);
    let per_key = |b: f64| b / keys as f64;
    println!("engine {kind}: {keys} keys of 16 B with values of {value_bytes} B");
    println!("{:>10} {:>12} {:>14}", "requested", "live allocs", "bytes per key");
    for (size, count) in BY_SIZE.iter().enumerate() {
        let count = count.load(Ordering::Relaxed);
        if count as i64 > (keys / 100) as i64 {
            println!("{size:>10} {count:>12} {:>14.1}", per_key((size as u64 * count) as f64));
        }
    }
    for (size, count) in LARGE.lock().map(|l| l.clone()).unwrap_or_default() {
        if count > 0 {
            println!("{size:>10} {count:>12} {:>14.1}", per_key(size as f64 * count as f64));
        }
    }
    let live = LIVE_BYTES.load(Ordering::Relaxed);
    println!("requested, all live allocations: {:.1} B/key", per_key(live as f64));
    let used = engine.memory_stats().map_or(0, |m| m.used_bytes);
    println!("engine estimate (memory_stats):  {:.1} B/key", per_key(used as f64));
    println!("RSS growth:                      {:.1} B/key", per_key(rss as f64));
    Ok(())
}
