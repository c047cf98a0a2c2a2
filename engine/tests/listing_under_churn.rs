//! A listing pages through a store that changes under it: keys that live throughout appear exactly once,
//! no key appears twice, on every engine; and a page costs the store about a page, not the whole store.

#![allow(clippy::expect_used, reason = "a test's expect is its assertion")]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use otkv_engine::{Cursor, Engine, EngineConfig, EngineKind};

fn open(kind: EngineKind, dir: &tempfile::TempDir) -> Engine {
    let mut config = EngineConfig::memory();
    config.kind = kind;
    if kind == EngineKind::Sled {
        config.data_dir = Some(dir.path().to_owned());
    }
    Engine::open(config).expect("open")
}

const KINDS: [EngineKind; 3] = [EngineKind::Memory, EngineKind::Flurry, EngineKind::Sled];

fn stable(i: u32) -> Vec<u8> {
    format!("stable/{i:06}").into_bytes()
}

/// Pages through every key of `prefix`, calling `between` after each page; returns the keys listed.
fn list_all(engine: &Engine, prefix: &[u8], limit: usize, mut between: impl FnMut(usize)) -> Vec<Vec<u8>> {
    let (mut keys, mut cursor, mut pages) = (Vec::new(), None::<Cursor>, 0);
    loop {
        let page = engine.list(prefix, cursor.as_ref(), limit).expect("list");
        assert!(page.keys.len() <= limit);
        assert!(page.keys.iter().all(|k| k.starts_with(prefix)));
        keys.extend(page.keys);
        pages += 1;
        between(pages);
        match page.next {
            Some(next) => cursor = Some(Cursor::parse(&next.to_string()).expect("a cursor reads back")),
            None => return keys,
        }
    }
}

/// Every key of `expected` appears exactly once in `listed`, and nothing appears twice.
fn check_once(listed: &[Vec<u8>], expected: impl Iterator<Item = Vec<u8>>) {
    let mut seen = HashSet::new();
    for key in listed {
        assert!(seen.insert(key.clone()), "{} listed twice", String::from_utf8_lossy(key));
    }
    for key in expected {
        assert!(seen.contains(&key), "{} lived throughout but was not listed", String::from_utf8_lossy(&key));
    }
}

#[test]
fn keys_living_throughout_appear_once_while_pages_interleave_with_writes() {
    for kind in KINDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open(kind, &dir);
        for i in 0..5_000 {
            engine.put(&stable(i), b"v").expect("put");
            engine.put(format!("doomed/{i:06}").as_bytes(), b"v").expect("put");
        }
        let mut next_new = 0u32;
        // Between pages: 60 new keys (the table's shards grow), 50 deletions, 50 overwrites.
        let listed = list_all(&engine, b"", 97, |page| {
            for _ in 0..60 {
                engine.put(format!("new/{next_new:07}").as_bytes(), b"v").expect("put");
                next_new += 1;
            }
            for i in 0..50 {
                let n = (page as u32 * 50 + i) % 5_000;
                engine.delete(format!("doomed/{n:06}").as_bytes()).expect("delete");
                engine.put(&stable((n * 7) % 5_000), b"overwritten").expect("put");
            }
        });
        check_once(&listed, (0..5_000).map(stable));
    }
}

#[test]
fn keys_living_throughout_appear_once_under_a_concurrent_writer() {
    for kind in KINDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(open(kind, &dir));
        for i in 0..3_000 {
            engine.put(&stable(i), b"v").expect("put");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (engine, stop) = (Arc::clone(&engine), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0u32;
                // Creates, overwrites and deletes until the listings are done (at least one round).
                while n < 2_000 || !stop.load(Ordering::Relaxed) {
                    let key = format!("churn/{:06}", n % 20_000);
                    engine.put(key.as_bytes(), b"v").expect("put");
                    engine.put(&stable(n % 3_000), format!("{n}").as_bytes()).expect("put");
                    if n.is_multiple_of(3) {
                        engine.delete(format!("churn/{:06}", (n / 2) % 20_000).as_bytes()).expect("delete");
                    }
                    n += 1;
                }
            })
        };
        for limit in [50, 1_000] {
            let listed = list_all(&engine, b"", limit, |_| {});
            check_once(&listed, (0..3_000).map(stable));
            let prefixed = list_all(&engine, b"stable/", limit, |_| {});
            check_once(&prefixed, (0..3_000).map(stable));
            assert_eq!(prefixed.len(), 3_000);
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer");
    }
}

#[test]
fn a_page_visits_about_a_page_not_the_store() {
    const KEYS: u32 = 200_000;
    for kind in [EngineKind::Memory, EngineKind::Sled] {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open(kind, &dir);
        for i in 0..KEYS {
            let key = if i % 100 == 0 { format!("rare/{i:07}") } else { format!("k/{i:07}") };
            engine.put(key.as_bytes(), b"v").expect("put");
        }
        // Whole listing, pages of 100: each page visits about its keys plus one shard (~50 entries here),
        // never the whole store; all pages together visit about every entry once.
        let (mut cursor, mut total, mut listed) = (None::<Cursor>, 0, 0);
        loop {
            let before = engine.listing_visits();
            let page = engine.list(b"", cursor.as_ref(), 100).expect("list");
            let visited = engine.listing_visits() - before;
            assert_eq!(visited, page.visited as u64);
            assert!(visited <= 1_000, "{kind:?}: a page of 100 visited {visited} of {KEYS} entries");
            total += visited;
            listed += page.keys.len();
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(listed, KEYS as usize);
        assert!(total <= 2 * u64::from(KEYS), "{kind:?}: a whole listing visited {total} entries");
        // A rare prefix: each page stops after about ten entries per key asked for, short if need be.
        let mut cursor = None::<Cursor>;
        let mut rare = 0;
        loop {
            let page = engine.list(b"rare/", cursor.as_ref(), 10).expect("list");
            assert!(page.visited <= 10 * 10 + 1_000, "{kind:?}: a prefixed page visited {}", page.visited);
            rare += page.keys.len();
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(rare, (KEYS / 100) as usize);
    }
}

#[test]
fn a_cursor_of_another_engine_or_order_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let memory = open(EngineKind::Memory, &dir);
    let other = open(EngineKind::Memory, &tempfile::tempdir().expect("tempdir"));
    for i in 0..100 {
        memory.put(&stable(i), b"v").expect("put");
        other.put(&stable(i), b"v").expect("put");
    }
    let next = memory.list(b"", None, 10).expect("list").next.expect("more");
    // Another store (other seeds, as after a restart without a snapshot): another order.
    let err = other.list(b"", Some(&next), 10).expect_err("another order");
    assert!(err.to_string().contains("start the listing again"), "{err}");
    let sled = open(EngineKind::Sled, &dir);
    assert!(sled.list(b"", Some(&next), 10).is_err());
}
