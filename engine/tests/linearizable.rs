//! Every engine is linearizable per key: threads race gets, puts, deletes and conditional writes on a few
//! keys, every operation's call and return are timed, and a Wing–Gong checker searches for an order of the
//! operations that respects real time (an operation that returned before another was called comes first)
//! and in which each result is what a sequential map would have answered. Linearizability is local, so
//! each key's history is checked on its own.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

#[path = "support/wing_gong.rs"]
mod wing_gong;

use std::sync::{Arc, Barrier};
use std::time::Instant;

use otkv_engine::{Condition, Durability, Engine, EngineConfig, EngineKind, PutOutcome};

/// An operation with its real-time interval.
type Timed = wing_gong::Timed<Call>;

const THREADS: usize = 4;
const OPS_PER_THREAD: usize = 200;
const KEYS: [&[u8]; 2] = [b"a", b"b"];
const ROUNDS: usize = 20;

/// One operation and what it returned.
#[derive(Debug, Clone)]
enum Call {
    Get(Option<(Vec<u8>, u64)>),
    Put(Vec<u8>, PutOutcome, u64),
    Delete(bool),
    PutIf(Vec<u8>, Condition, Option<(PutOutcome, u64)>),
    DeleteIf(Condition, Option<bool>),
}

/// The sequential model of one key: its value and version, if present.
type State = Option<(Vec<u8>, u64)>;

/// Applies `call` to `state` if its result is the one the model gives; the state after, or `None`.
fn step(state: &State, call: &Call) -> Option<State> {
    let current = state.as_ref().map(|(_, v)| otkv_engine::Meta { version: *v, expires_ms: 0 });
    match call {
        Call::Get(got) => (got == state).then(|| state.clone()),
        Call::Put(value, outcome, version) => {
            let want = if state.is_some() { PutOutcome::Replaced } else { PutOutcome::Created };
            let fresh = state.as_ref().is_none_or(|(_, v)| v != version);
            (*outcome == want && fresh).then(|| Some((value.clone(), *version)))
        }
        Call::Delete(existed) => (*existed == state.is_some()).then_some(None),
        Call::PutIf(value, cond, result) => match (cond.holds(current), result) {
            (false, None) => Some(state.clone()),
            (true, Some((outcome, version))) => {
                let want = if state.is_some() { PutOutcome::Replaced } else { PutOutcome::Created };
                let fresh = state.as_ref().is_none_or(|(_, v)| v != version);
                (*outcome == want && fresh).then(|| Some((value.clone(), *version)))
            }
            _ => None,
        },
        Call::DeleteIf(cond, result) => match (cond.holds(current), result) {
            (false, None) => Some(state.clone()),
            (true, Some(existed)) if *existed == state.is_some() => Some(None),
            _ => None,
        },
    }
}

/// Whether `history` has a linearization from an absent key (the shared search, with [`step`] as the
/// model).
fn linearizable(history: &[Timed]) -> bool {
    wing_gong::linearizable(history, None, |state, call| step(state, call).into_iter().collect())
}

/// Runs one round of racing threads on `engine`; returns each key's history.
fn race(engine: &Arc<Engine>, round: usize) -> Vec<Vec<Timed>> {
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (engine, barrier) = (Arc::clone(engine), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut rng = fastrand_seed(round * 31 + t);
                let mut last_version = [0u64; KEYS.len()];
                let mut out: Vec<(usize, Timed)> = Vec::new();
                barrier.wait();
                for n in 0..OPS_PER_THREAD {
                    let k = rng() as usize % KEYS.len();
                    let key = KEYS[k];
                    let value = format!("t{t}n{n}").into_bytes();
                    let cond = match rng() % 4 {
                        0 => Condition::Absent,
                        1 => Condition::Present,
                        2 => Condition::Version(last_version[k]),
                        _ => Condition::Version(last_version[k] + 1),
                    };
                    let start = Instant::now();
                    let call = match rng() % 5 {
                        0 => {
                            let got = engine.get_entry(key).expect("get");
                            let got = got.map(|(m, v)| (v.to_vec(), m.version));
                            if let Some((_, v)) = &got {
                                last_version[k] = *v;
                            }
                            Call::Get(got)
                        }
                        1 => {
                            let (outcome, version) = engine
                                .put_if(key, &value, Condition::Always, 0)
                                .expect("put")
                                .expect("applies");
                            last_version[k] = version;
                            Call::Put(value, outcome, version)
                        }
                        2 => Call::Delete(engine.delete(key).expect("delete")),
                        3 => {
                            let result = engine.put_if(key, &value, cond, 0).expect("put_if");
                            if let Some((_, v)) = result {
                                last_version[k] = v;
                            }
                            Call::PutIf(value, cond, result)
                        }
                        _ => Call::DeleteIf(cond, engine.delete_if(key, cond).expect("delete_if")),
                    };
                    out.push((k, Timed { call, start, end: Some(Instant::now()) }));
                }
                out
            })
        })
        .collect();
    let mut per_key: Vec<Vec<Timed>> = vec![Vec::new(); KEYS.len()];
    for t in threads {
        for (k, timed) in t.join().expect("thread") {
            per_key[k].push(timed);
        }
    }
    per_key
}

/// A small xorshift generator (the test needs repeatable draws, not quality).
fn fastrand_seed(seed: usize) -> impl FnMut() -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (seed as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

fn check(open: impl Fn() -> (Engine, Option<tempfile::TempDir>)) {
    for round in 0..ROUNDS {
        let (engine, _dir) = open();
        let engine = Arc::new(engine);
        for (k, history) in race(&engine, round).into_iter().enumerate() {
            assert!(
                linearizable(&history),
                "round {round}, key {:?}: no linearization of {history:#?}",
                String::from_utf8_lossy(KEYS[k])
            );
        }
    }
}

fn memory_kind(kind: EngineKind, durability: Durability) -> impl Fn() -> (Engine, Option<tempfile::TempDir>) {
    move || {
        if durability == Durability::None {
            let config = EngineConfig::memory().with_kind(kind);
            return (Engine::open(config).expect("open"), None);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = EngineConfig::memory_durable(dir.path(), durability).with_kind(kind);
        config.snapshot_interval = None;
        (Engine::open(config).expect("open"), Some(dir))
    }
}

#[test]
fn the_table_is_linearizable() {
    check(memory_kind(EngineKind::Memory, Durability::None));
}

#[test]
fn the_table_with_its_log_is_linearizable() {
    check(memory_kind(EngineKind::Memory, Durability::Periodic));
}

#[test]
fn flurry_is_linearizable() {
    check(memory_kind(EngineKind::Flurry, Durability::None));
}

#[test]
fn sled_is_linearizable() {
    check(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = EngineConfig::sled(dir.path()).with_durability(Durability::None);
        (Engine::open(config).expect("open"), Some(dir))
    });
}

/// The checker itself: it accepts a history that has a linearization and refuses one that has none.
#[test]
fn the_checker_tells_linearizable_from_not() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
    let timed = |call, start, end| Timed { call, start: at(start), end: Some(at(end)) };
    // A put overlapping a get: the get may see it or not.
    let ok = vec![
        timed(Call::Put(b"x".to_vec(), PutOutcome::Created, 1), 0, 10),
        timed(Call::Get(Some((b"x".to_vec(), 1))), 5, 6),
        timed(Call::Get(None), 2, 3),
    ];
    assert!(linearizable(&ok));
    // A get that starts after the put returned must see it.
    let stale =
        vec![timed(Call::Put(b"x".to_vec(), PutOutcome::Created, 1), 0, 1), timed(Call::Get(None), 2, 3)];
    assert!(!linearizable(&stale));
    // Two creations of one key cannot both have found it absent, unless a delete came between.
    let double = vec![
        timed(Call::Put(b"x".to_vec(), PutOutcome::Created, 1), 0, 5),
        timed(Call::Put(b"y".to_vec(), PutOutcome::Created, 2), 0, 5),
    ];
    assert!(!linearizable(&double));
}
