//! Model tests of the table's protocols: loom runs each small scenario under every interleaving of its
//! threads' atomic operations and lock acquisitions (`RUSTFLAGS="--cfg loom" cargo test -p otkv-engine
//! --lib --release loom`). Under loom nothing is freed: a release only marks the block or array, and every
//! read asserts that what it reads was not released, so a reclamation that comes too early fails the model.

use loom::thread;
use std::sync::Arc;

use super::{epoch, Change, Table};
use crate::entry::Meta;

fn table() -> Arc<Table> {
    Arc::new(Table::new([1, 2, 3, 4], 1, false))
}

fn put(t: &Table, key: &[u8], value: &[u8], version: u64) {
    let guard = t.pin();
    let meta = Meta { version, expires_ms: 0 };
    t.change(key, &guard, 0, |_| (Change::Put(meta, value), ()));
}

fn remove(t: &Table, key: &[u8]) {
    let guard = t.pin();
    t.change(key, &guard, 0, |_| (Change::Remove, ()));
}

fn get(t: &Table, key: &[u8]) -> Option<Vec<u8>> {
    let guard = t.pin();
    t.get(key, &guard).map(|b| b.value().to_vec())
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// An insert racing a reader: the reader sees nothing or the whole value, never a partial entry.
#[test]
fn insert_races_a_reader() {
    model(|| {
        let t = table();
        let t2 = Arc::clone(&t);
        let reader = thread::spawn(move || get(&t2, b"k"));
        put(&t, b"k", b"v1", 1);
        let seen = reader.join().expect("reader");
        assert!(seen.is_none() || seen.as_deref() == Some(&b"v1"[..]));
        assert_eq!(get(&t, b"k").as_deref(), Some(&b"v1"[..]));
    });
}

/// A replace and a delete racing a reader that holds its guard while it reads: it sees one of the
/// values, and the replaced block is not released while it can still be read, even though the writer
/// pushes the epoch forward as far as it can.
#[test]
fn replace_and_delete_race_a_reader_and_reclamation() {
    model(|| {
        let t = table();
        put(&t, b"k", b"old", 1);
        let t2 = Arc::clone(&t);
        let reader = thread::spawn(move || {
            let guard = t2.pin();
            let seen = t2.get(b"k", &guard).map(super::block::BlockRef::value);
            thread::yield_now();
            // Still readable: the guard is held.
            seen.map(<[u8]>::to_vec)
        });
        put(&t, b"k", b"new", 2);
        remove(&t, b"k");
        epoch::reclaim();
        let seen = reader.join().expect("reader");
        assert!(matches!(seen.as_deref(), None | Some(b"old" | b"new")), "{seen:?}");
        assert_eq!(get(&t, b"k"), None);
    });
}

/// A write that grows the shard's array races a reader of a key already there, and a second writer:
/// the reader always finds the key (in the old array or the new one), both writes land, and the array
/// did grow (a short array holds 4 of its 8 slots: the fifth entry grows it).
#[test]
fn growth_races_a_reader_and_a_writer() {
    model(|| {
        let t = table();
        for i in 0..3u8 {
            put(&t, &[i], &[i], 1);
        }
        assert_eq!(t.array_len(b"x"), 8);
        let (t2, t3) = (Arc::clone(&t), Arc::clone(&t));
        let reader = thread::spawn(move || get(&t2, &[1]));
        let writer = thread::spawn(move || put(&t3, b"x", b"y", 2));
        put(&t, b"grow", b"g", 3);
        assert_eq!(reader.join().expect("reader").as_deref(), Some(&[1u8][..]));
        writer.join().expect("writer");
        epoch::reclaim();
        assert!(t.array_len(b"x") > 8, "the array grew");
        assert_eq!(get(&t, b"x").as_deref(), Some(&b"y"[..]));
        assert_eq!(get(&t, b"grow").as_deref(), Some(&b"g"[..]));
        assert_eq!(t.len(), 5);
    });
}

/// A reader holds a block while the writer grows the array (the old array retired), deletes the
/// block's key (the block retired) and runs the collector as the memory thread does: neither the block
/// nor the array it was found in is released while the reader can still read them.
#[test]
fn reader_holds_a_block_across_growth_delete_and_reclamation() {
    model(|| {
        let t = table();
        for i in 0..4u8 {
            put(&t, &[i], &[i; 3], 1);
        }
        let t2 = Arc::clone(&t);
        let reader = thread::spawn(move || {
            let guard = t2.pin();
            let block = t2.get(&[1], &guard);
            thread::yield_now();
            block.map(|b| b.value().to_vec())
        });
        put(&t, b"grow", b"g", 2);
        remove(&t, &[1]);
        epoch::reclaim();
        let seen = reader.join().expect("reader");
        assert!(matches!(seen.as_deref(), None | Some([1, 1, 1])), "{seen:?}");
        assert!(t.array_len(&[1]) > 8, "the array grew");
        assert_eq!(get(&t, &[1]), None);
    });
}

/// A conditional write (replace version 1) races an eviction of the same entry (remove it if still at
/// version 1, as the evictor does with a sampled victim) and a reader: exactly one of the two applies,
/// and the key ends as that one left it.
#[test]
fn conditional_write_races_an_eviction() {
    model(|| {
        let t = table();
        put(&t, b"k", b"v1", 1);
        let (t2, t3) = (Arc::clone(&t), Arc::clone(&t));
        let evictor = thread::spawn(move || {
            let guard = t2.pin();
            let (evicted, _) = t2.change(b"k", &guard, 0, |current| match current {
                Some(b) if b.version() == 1 => (Change::Remove, true),
                _ => (Change::Keep, false),
            });
            evicted
        });
        let reader = thread::spawn(move || get(&t3, b"k"));
        let guard = t.pin();
        let meta = Meta { version: 2, expires_ms: 0 };
        let (replaced, _) = t.change(b"k", &guard, 0, |current| match current {
            Some(b) if b.version() == 1 => (Change::Put(meta, b"v2"), true),
            _ => (Change::Keep, false),
        });
        drop(guard);
        let evicted = evictor.join().expect("evictor");
        let seen = reader.join().expect("reader");
        assert!(replaced != evicted, "exactly one applies");
        assert!(matches!(seen.as_deref(), None | Some(b"v1" | b"v2")), "{seen:?}");
        epoch::reclaim();
        let expected: Option<&[u8]> = if replaced { Some(b"v2") } else { None };
        assert_eq!(get(&t, b"k").as_deref(), expected);
    });
}

/// A plain write races a delete of the same key while a reader holds the old block: the reader's block
/// stays readable, and the key ends absent or with the new value, as the order was.
#[test]
fn write_races_a_delete_and_a_reader() {
    model(|| {
        let t = table();
        put(&t, b"k", b"v1", 1);
        let (t2, t3) = (Arc::clone(&t), Arc::clone(&t));
        let deleter = thread::spawn(move || remove(&t2, b"k"));
        let reader = thread::spawn(move || {
            let guard = t3.pin();
            let block = t3.get(b"k", &guard);
            thread::yield_now();
            block.map(|b| b.value().to_vec())
        });
        put(&t, b"k", b"v2", 2);
        deleter.join().expect("deleter");
        epoch::reclaim();
        let seen = reader.join().expect("reader");
        assert!(matches!(seen.as_deref(), None | Some(b"v1" | b"v2")), "{seen:?}");
        assert!(matches!(get(&t, b"k").as_deref(), None | Some(b"v2")));
        assert!(t.len() <= 1);
    });
}

/// Compaction moves a block (found without the lock; then, under it, copied, its word swapped if it
/// did not change, the old block retired) while a reader holds the block and a writer replaces the key:
/// the reader's block stays readable, and the writer's value is the one that stays (a move never brings
/// back what it copied before a write).
#[test]
fn compaction_races_a_reader_and_a_writer() {
    model(|| {
        let t = table();
        put(&t, b"k", b"v1", 1);
        let (t2, t3) = (Arc::clone(&t), Arc::clone(&t));
        let reader = thread::spawn(move || {
            let guard = t2.pin();
            let block = t2.get(b"k", &guard);
            thread::yield_now();
            block.map(|b| b.value().to_vec())
        });
        let writer = thread::spawn(move || put(&t3, b"k", b"v2", 2));
        // Moved, unless the writer replaced the block between the pass's scan and its move (then the
        // new block stays where it is).
        let (moved, _) = t.compact(|_, _| true, || {});
        assert!(moved <= 1);
        writer.join().expect("writer");
        epoch::reclaim();
        let seen = reader.join().expect("reader");
        assert!(matches!(seen.as_deref(), Some(b"v1" | b"v2")), "{seen:?}");
        assert_eq!(get(&t, b"k").as_deref(), Some(&b"v2"[..]));
    });
}

/// The sealing path as production runs it: a worker overwrites a key (its bag holds one release) and
/// goes idle without pinning again; the memory thread's [`epoch::reclaim`] seals the worker's bag and
/// releases the old block, while a reader that pinned before the overwrite keeps it readable.
#[test]
fn idle_worker_releases_what_it_retired() {
    model(|| {
        let t = table();
        put(&t, b"k", b"v1", 1);
        let old = {
            let guard = t.pin();
            t.get(b"k", &guard).map(|b| b.ptr() as usize).expect("present")
        };
        let done = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let stop = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let (t2, done2, stop2) = (Arc::clone(&t), Arc::clone(&done), Arc::clone(&stop));
        let worker = thread::spawn(move || {
            put(&t2, b"k", b"v2", 2);
            done2.store(true, std::sync::atomic::Ordering::Release);
            // Idle: alive, never pinning again, until told to end.
            while !stop2.load(std::sync::atomic::Ordering::Acquire) {
                thread::yield_now();
            }
        });
        while !done.load(std::sync::atomic::Ordering::Acquire) {
            thread::yield_now();
        }
        epoch::reclaim();
        assert!(super::slab::is_released(old as *const u8), "the idle worker's release ran");
        stop.store(true, std::sync::atomic::Ordering::Release);
        worker.join().expect("worker");
        assert_eq!(get(&t, b"k").as_deref(), Some(&b"v2"[..]));
    });
}

/// Two writers of one key serialise: the key ends with one of the two values, and the table counts
/// one entry.
#[test]
fn writers_of_one_key_serialise() {
    model(|| {
        let t = table();
        let t2 = Arc::clone(&t);
        let other = thread::spawn(move || put(&t2, b"k", b"a", 1));
        put(&t, b"k", b"b", 2);
        other.join().expect("writer");
        assert!(matches!(get(&t, b"k").as_deref(), Some(b"a" | b"b")));
        assert_eq!(t.len(), 1);
    });
}
