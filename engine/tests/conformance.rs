//! One conformance suite, run against every backend: the engine's table (`memory`), flurry, and sled, each
//! volatile and with its durable log.
//!
//! `conformance_suite!` expands to a module of tests for one backend, given an expression that opens a fresh
//! engine (and the temporary directory that must outlive it). Whatever one backend must do, all must do.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use otkv_engine::{Condition, Cursor, Durability, Engine, EngineConfig, EngineKind, PutOutcome};
use proptest::prelude::*;

/// A fresh engine plus whatever keeps its storage alive.
struct Fixture {
    engine: Engine,
    _dir: Option<tempfile::TempDir>,
}

fn memory() -> Fixture {
    Fixture { engine: Engine::open(EngineConfig::memory()).expect("open memory engine"), _dir: None }
}

/// The memory engine on flurry instead of the engine's table: the compared alternative.
fn flurry() -> Fixture {
    let config = EngineConfig::memory().with_kind(EngineKind::Flurry);
    Fixture { engine: Engine::open(config).expect("open flurry engine"), _dir: None }
}

fn sled() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig::sled(dir.path()).with_durability(Durability::None);
    Fixture { engine: Engine::open(config).expect("open sled engine"), _dir: Some(dir) }
}

/// The memory engine with its operation log, in `sync` mode (every write waits for its fsync).
fn memory_logged() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = EngineConfig::memory_durable(dir.path(), Durability::Sync);
    config.snapshot_interval = None;
    Fixture { engine: Engine::open(config).expect("open logged memory engine"), _dir: Some(dir) }
}

/// flurry with the same operation log, in `sync` mode.
fn flurry_logged() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = EngineConfig::memory_durable(dir.path(), Durability::Sync).with_kind(EngineKind::Flurry);
    config.snapshot_interval = None;
    Fixture { engine: Engine::open(config).expect("open logged flurry engine"), _dir: Some(dir) }
}

/// sled with group-committed `sync`.
fn sled_sync() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig::sled(dir.path()).with_durability(Durability::Sync);
    Fixture { engine: Engine::open(config).expect("open sled engine"), _dir: Some(dir) }
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Get(Vec<u8>),
    /// A listing: prefix, cursor (`after`), limit.
    Scan(Vec<u8>, Option<Vec<u8>>, usize),
    /// A conditional put.
    PutIf(Vec<u8>, Vec<u8>, Cond),
    /// A conditional delete.
    DeleteIf(Vec<u8>, Cond),
    /// A put whose expiry has already passed: the key is gone at once.
    PutExpired(Vec<u8>, Vec<u8>),
}

/// A condition, as the model test chooses it: versions are only known at run time.
#[derive(Debug, Clone, Copy)]
enum Cond {
    Absent,
    Present,
    /// The key's current version (as the model knows it).
    Current,
    /// A version the key does not have.
    Stale,
}

/// Keys from a small alphabet so that puts, deletes and gets collide often, and prefixes share keys.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![b'a', b'b', 0u8, 0xff]), 0..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key(), prop::collection::vec(any::<u8>(), 0..16)).prop_map(|(k, v)| Op::Put(k, v)),
        2 => key().prop_map(Op::Delete),
        3 => key().prop_map(Op::Get),
        1 => (prop::collection::vec(prop::sample::select(vec![b'a', b'b', 0u8]), 0..3), prop::option::of(key()), 0usize..6)
            .prop_map(|(p, a, n)| Op::Scan(p, a, n)),
        3 => (key(), prop::collection::vec(any::<u8>(), 0..16), cond()).prop_map(|(k, v, c)| Op::PutIf(k, v, c)),
        2 => (key(), cond()).prop_map(|(k, c)| Op::DeleteIf(k, c)),
        1 => (key(), prop::collection::vec(any::<u8>(), 0..16)).prop_map(|(k, v)| Op::PutExpired(k, v)),
    ]
}

fn cond() -> impl Strategy<Value = Cond> {
    prop_oneof![Just(Cond::Absent), Just(Cond::Present), Just(Cond::Current), Just(Cond::Stale)]
}

/// The model: each live key's value and version, the versions each key has had, and the keys whose entry
/// has expired but may still be in the map (counted by `len` until the expirer reclaims it).
#[derive(Default)]
struct Model {
    live: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    seen: HashMap<Vec<u8>, HashSet<u64>>,
    expired: HashSet<Vec<u8>>,
}

impl Model {
    fn condition(&self, key: &[u8], cond: Cond) -> Condition {
        match cond {
            Cond::Absent => Condition::Absent,
            Cond::Present => Condition::Present,
            Cond::Current => Condition::Version(self.live.get(key).map_or(u64::MAX, |(_, v)| *v)),
            Cond::Stale => {
                Condition::Version(self.live.get(key).map_or(7, |(_, v)| v.wrapping_add(1_000_003)))
            }
        }
    }

    /// Records a write that applied with `version`; checks the version is new for the key.
    fn written(&mut self, key: &[u8], value: &[u8], version: u64) -> Result<(), TestCaseError> {
        prop_assert!(
            self.seen.entry(key.to_vec()).or_default().insert(version),
            "version {version} repeated"
        );
        self.expired.remove(key);
        self.live.insert(key.to_vec(), (value.to_vec(), version));
        Ok(())
    }
}

/// Whether `cond` holds of a key whose live version is `current`: the model's own statement of the rules.
fn model_holds(cond: Condition, current: Option<u64>) -> bool {
    match cond {
        Condition::Absent => current.is_none(),
        Condition::Present => current.is_some(),
        Condition::Version(want) => current == Some(want),
        Condition::Always => true,
    }
}

/// Applies `ops` to the engine and to a model, checking every answer against it.
fn check_against_model(engine: &Engine, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                let expected =
                    if model.live.contains_key(k) { PutOutcome::Replaced } else { PutOutcome::Created };
                let got = engine.put_if(k, v, Condition::Always, 0).expect("put").expect("unconditional");
                prop_assert_eq!(got.0, expected);
                model.written(k, v, got.1)?;
            }
            Op::Delete(k) => {
                prop_assert_eq!(engine.delete(k).expect("delete"), model.live.remove(k).is_some());
                model.expired.remove(k);
            }
            Op::Get(k) => {
                let got = engine.get_entry(k).expect("get").map(|(m, b)| (b.to_vec(), m.version));
                prop_assert_eq!(got, model.live.get(k).cloned());
            }
            Op::Scan(prefix, after, limit) => {
                // A whole listing in pages of `limit` (from `after` on sled, whose order is byte order):
                // every live key of the prefix once, no page over its limit.
                let limit = (*limit).max(1);
                let byte_order = engine.config().kind == otkv_engine::EngineKind::Sled;
                let from = after.as_deref().filter(|_| byte_order);
                let expected: Vec<Vec<u8>> = model
                    .live
                    .keys()
                    .filter(|k| k.starts_with(prefix) && from.is_none_or(|a| k.as_slice() > a))
                    .cloned()
                    .collect();
                let mut cursor = from.map(Cursor::after_key);
                let mut got = Vec::new();
                loop {
                    let page = engine.list(prefix, cursor.as_ref(), limit).expect("list");
                    prop_assert!(page.keys.len() <= limit);
                    got.extend(page.keys);
                    match page.next {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                if !byte_order {
                    got.sort();
                }
                prop_assert_eq!(got, expected);
            }
            Op::PutIf(k, v, c) => {
                let cond = model.condition(k, *c);
                let current = model.live.get(k).map(|(_, version)| *version);
                let holds = model_holds(cond, current);
                let got = engine.put_if(k, v, cond, 0).expect("put_if");
                prop_assert_eq!(got.is_some(), holds, "{:?} on {:?}", cond, current);
                if let Some((outcome, version)) = got {
                    let expected = if current.is_some() { PutOutcome::Replaced } else { PutOutcome::Created };
                    prop_assert_eq!(outcome, expected);
                    model.written(k, v, version)?;
                }
            }
            Op::DeleteIf(k, c) => {
                let cond = model.condition(k, *c);
                let current = model.live.get(k).map(|(_, version)| *version);
                let holds = model_holds(cond, current);
                let got = engine.delete_if(k, cond).expect("delete_if");
                prop_assert_eq!(got.is_some(), holds, "{:?} on {:?}", cond, current);
                if let Some(removed) = got {
                    prop_assert_eq!(removed, current.is_some());
                    // A delete that applied took whatever entry the key had, live or expired.
                    model.live.remove(k);
                    model.expired.remove(k);
                }
            }
            Op::PutExpired(k, v) => {
                let got = engine.put_if(k, v, Condition::Always, 1).expect("put").expect("unconditional");
                prop_assert!(model.seen.entry(k.clone()).or_default().insert(got.1));
                model.live.remove(k);
                model.expired.insert(k.clone());
                prop_assert_eq!(engine.get(k).expect("get"), None);
            }
        }
        // Expired entries count until the expirer (a background thread) reclaims them.
        let len = engine.len();
        prop_assert!((model.live.len()..=model.live.len() + model.expired.len()).contains(&len));
    }
    Ok(())
}

/// Threads write disjoint keys (each must end with its own last value) and shared keys (each must end with
/// the last value *some* thread wrote to it: the result of some interleaving).
fn concurrent_writers(engine: Arc<Engine>) {
    const THREADS: usize = 4;
    const ROUNDS: usize = 500;
    const SHARED: usize = 16;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let engine = Arc::clone(&engine);
            s.spawn(move || {
                for r in 0..ROUNDS {
                    let own = format!("own/{t}/{}", r % 50);
                    engine.put(own.as_bytes(), format!("{t}:{r}").as_bytes()).expect("put own");
                    let shared = format!("shared/{}", r % SHARED);
                    engine.put(shared.as_bytes(), format!("{t}:{r}").as_bytes()).expect("put shared");
                    if r % 7 == 0 {
                        engine.delete(format!("own/{t}/{}", (r + 25) % 50).as_bytes()).expect("delete");
                    }
                }
            });
        }
    });

    // Replay each thread alone to learn its own final state and its last write to each shared key.
    let mut expected_own: HashMap<String, Option<String>> = HashMap::new();
    let mut last_shared: HashMap<String, HashSet<String>> = HashMap::new();
    for t in 0..THREADS {
        let mut last_by_key: HashMap<String, String> = HashMap::new();
        for r in 0..ROUNDS {
            expected_own.insert(format!("own/{t}/{}", r % 50), Some(format!("{t}:{r}")));
            last_by_key.insert(format!("shared/{}", r % SHARED), format!("{t}:{r}"));
            if r % 7 == 0 {
                expected_own.insert(format!("own/{t}/{}", (r + 25) % 50), None);
            }
        }
        for (k, v) in last_by_key {
            last_shared.entry(k).or_default().insert(v);
        }
    }
    for (key, expected) in &expected_own {
        let got = engine.get(key.as_bytes()).expect("get").map(|b| String::from_utf8_lossy(&b).into_owned());
        assert_eq!(&got, expected, "disjoint key {key}");
    }
    for (key, candidates) in &last_shared {
        let got = engine.get(key.as_bytes()).expect("get").expect("shared key present");
        let got = String::from_utf8_lossy(&got).into_owned();
        assert!(candidates.contains(&got), "shared key {key} = {got}, not any thread's last write");
    }
    let live = expected_own.values().filter(|v| v.is_some()).count() + last_shared.len();
    assert_eq!(engine.len(), live);
}

/// N threads each add 1 to one counter M times, by read, then write-if-version-unchanged, retrying on
/// conflict: with atomic conditional writes no increment is lost.
fn compare_and_set_counter(engine: Arc<Engine>) {
    const THREADS: u64 = 4;
    const INCREMENTS: u64 = 200;
    assert!(engine.put_if(b"counter", b"0", Condition::Absent, 0).expect("create").is_some());
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..INCREMENTS {
                    loop {
                        let (meta, value) =
                            engine.get_entry(b"counter").expect("get").expect("counter exists");
                        let n: u64 = std::str::from_utf8(&value).expect("utf8").parse().expect("number");
                        let next = (n + 1).to_string();
                        match engine.put_if(b"counter", next.as_bytes(), Condition::Version(meta.version), 0)
                        {
                            Ok(Some(_)) => break,
                            Ok(None) => {} // another thread got in between: read again
                            Err(e) => panic!("put_if: {e}"),
                        }
                    }
                }
            });
        }
    });
    let (_, value) = engine.get_entry(b"counter").expect("get").expect("counter");
    assert_eq!(value.as_ref(), (THREADS * INCREMENTS).to_string().as_bytes());
}

macro_rules! conformance_suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            #[test]
            fn empty_engine_has_nothing() {
                let f = $backend();
                assert!(f.engine.is_empty());
                assert_eq!(f.engine.get(b"missing").expect("get"), None);
                assert!(!f.engine.delete(b"missing").expect("delete"));
                assert!(f.engine.keys(b"").expect("list").is_empty());
            }

            #[test]
            fn put_reports_created_then_replaced() {
                let f = $backend();
                assert_eq!(f.engine.put(b"k", b"one").expect("put"), PutOutcome::Created);
                assert_eq!(f.engine.put(b"k", b"two").expect("put"), PutOutcome::Replaced);
                assert_eq!(f.engine.get(b"k").expect("get").as_deref(), Some(&b"two"[..]));
                assert!(f.engine.delete(b"k").expect("delete"));
                assert!(!f.engine.delete(b"k").expect("delete again"));
                assert_eq!(f.engine.get(b"k").expect("get"), None);
            }

            #[test]
            fn binary_keys_and_empty_values_round_trip() {
                let f = $backend();
                let key = [0u8, 0xff, b'/', b'%', 0x80];
                f.engine.put(&key, b"").expect("put");
                assert_eq!(f.engine.get(&key).expect("get").as_deref(), Some(&b""[..]));
                let value: Vec<u8> = (0..=255u8).collect();
                f.engine.put(b"bin", &value).expect("put");
                assert_eq!(f.engine.get(b"bin").expect("get").as_deref(), Some(&value[..]));
            }

            #[test]
            fn sixteen_mib_value_round_trips() {
                let f = $backend();
                let value: Vec<u8> = (0..16usize << 20).map(|i| (i * 31 % 251) as u8).collect();
                f.engine.put(b"big", &value).expect("put");
                assert_eq!(f.engine.get(b"big").expect("get").as_deref(), Some(&value[..]));
            }

            #[test]
            fn listing_pages_hold_each_key_once() {
                let f = $backend();
                for k in ["b/2", "a/3", "a/1", "a/2", "ab", "c"] {
                    f.engine.put(k.as_bytes(), b"v").expect("put");
                }
                // Every page of `n`, sorted together.
                let keys = |p: &str, n| -> Vec<String> {
                    let (mut keys, mut cursor) = (Vec::new(), None);
                    loop {
                        let page = f.engine.list(p.as_bytes(), cursor.as_ref(), n).expect("list");
                        assert!(page.keys.len() <= n);
                        keys.extend(page.keys.into_iter().map(|k| String::from_utf8(k).expect("utf8")));
                        match page.next {
                            Some(next) => cursor = Some(next),
                            None => break,
                        }
                    }
                    keys.sort();
                    keys
                };
                for n in [1, 2, 10] {
                    assert_eq!(keys("a/", n), ["a/1", "a/2", "a/3"]);
                    assert_eq!(keys("a", n), ["a/1", "a/2", "a/3", "ab"]);
                    assert_eq!(keys("", n), ["a/1", "a/2", "a/3", "ab", "b/2", "c"]);
                    assert!(keys("zz", n).is_empty());
                }
                // A page of none goes nowhere, and says the listing is not over.
                let none = f.engine.list(b"", None, 0).expect("list");
                assert!(none.keys.is_empty() && none.next.is_some());
                // From a key: the keys after it in the store's order, each once.
                let first = f.engine.list(b"", None, 2).expect("list");
                let last = first.keys.last().expect("two keys");
                let rest = f.engine.list(b"", Some(&Cursor::after_key(last)), 10).expect("list");
                let mut all: Vec<_> = first.keys.iter().chain(&rest.keys).cloned().collect();
                all.sort();
                assert_eq!(all.len(), 6);
                all.dedup();
                assert_eq!(all.len(), 6);
                // A cursor read back from its text goes on as the cursor did.
                let text = first.next.expect("more").to_string();
                let again = f.engine.list(b"", Cursor::parse(&text).as_ref(), 10).expect("list");
                assert_eq!(again.keys, rest.keys);
            }

            #[test]
            fn batch_shares_one_view() {
                let f = $backend();
                let (created, got, removed) = f.engine.batch(|b| {
                    let created = b.put(b"x", b"1").expect("put");
                    let got = b.get(b"x").expect("get");
                    let removed = b.delete(b"x").expect("delete");
                    (created, got, removed)
                });
                assert_eq!(created, PutOutcome::Created);
                assert_eq!(got.as_deref(), Some(&b"1"[..]));
                assert!(removed);
                assert!(f.engine.is_empty());
            }

            #[test]
            fn concurrent_compare_and_set_loses_no_increment() {
                let f = $backend();
                compare_and_set_counter(Arc::new(f.engine));
            }

            #[test]
            fn a_value_carries_its_expiry_and_expires() {
                let f = $backend();
                let later = otkv_engine::now_ms() + 3_600_000;
                f.engine.put_if(b"k", b"v", Condition::Always, later).expect("put").expect("applies");
                let (meta, value) = f.engine.get_entry(b"k").expect("get").expect("live");
                assert_eq!((meta.expires_ms, value.as_ref()), (later, &b"v"[..]));
                // A write without an expiry clears it, as Redis's SET does.
                f.engine.put(b"k", b"w").expect("put");
                assert_eq!(f.engine.get_entry(b"k").expect("get").map(|(m, _)| m.expires_ms), Some(0));
                // An expired value is absent for every operation.
                f.engine.put_if(b"k", b"x", Condition::Always, otkv_engine::now_ms() - 1).expect("put");
                assert_eq!(f.engine.get(b"k").expect("get"), None);
                assert!(f.engine.keys(b"").expect("list").is_empty());
                assert_eq!(f.engine.put_if(b"k", b"y", Condition::Present, 0).expect("put_if"), None);
                assert!(
                    !f.engine.delete(b"k").expect("delete"),
                    "deleting an expired key finds nothing live"
                );
                assert!(f.engine.is_empty(), "but takes the entry away");
            }

            #[test]
            fn expired_values_are_reclaimed_without_a_read() {
                let f = $backend();
                let soon = otkv_engine::now_ms() + 150;
                for i in 0..100 {
                    let key = format!("ttl/{i}");
                    f.engine.put_if(key.as_bytes(), b"v", Condition::Always, soon).expect("put");
                }
                // Overwritten before it expires: no longer expiring, so it must survive the expirer.
                f.engine.put(b"ttl/0", b"kept").expect("put");
                // Re-armed with a later expiry: must survive the first one.
                f.engine.put_if(b"ttl/1", b"later", Condition::Always, soon + 3_600_000).expect("put");
                f.engine.put(b"permanent", b"p").expect("put");
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while f.engine.len() != 3 {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "not reclaimed: {} keys left",
                        f.engine.len()
                    );
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                assert_eq!(f.engine.get(b"ttl/0").expect("get").as_deref(), Some(&b"kept"[..]));
                assert_eq!(f.engine.get(b"ttl/1").expect("get").as_deref(), Some(&b"later"[..]));
            }

            #[test]
            fn concurrent_writers_end_in_an_interleaving() {
                let f = $backend();
                let engine = Arc::new(f.engine);
                concurrent_writers(engine);
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(64))]
                #[test]
                fn agrees_with_btreemap_model(ops in prop::collection::vec(op(), 1..200)) {
                    let f = $backend();
                    check_against_model(&f.engine, &ops)?;
                }
            }
        }
    };
}

conformance_suite!(memory);
conformance_suite!(flurry);
conformance_suite!(sled);
conformance_suite!(memory_logged);
conformance_suite!(flurry_logged);
conformance_suite!(sled_sync);
