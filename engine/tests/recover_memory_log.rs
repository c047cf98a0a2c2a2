//! The memory engine's operation log and snapshots: restarts give the data back, and damaged files are
//! either cut (a torn tail) or refused with an error naming the file (anything that could hide a write).

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::path::{Path, PathBuf};

use otkv_engine::{Durability, Engine, EngineConfig, EngineError};

fn config(dir: &Path, snapshots: bool) -> EngineConfig {
    let mut c = EngineConfig::memory_durable(dir, Durability::Sync);
    c.snapshot_interval = snapshots.then(|| std::time::Duration::from_hours(1));
    c
}

fn open(dir: &Path, snapshots: bool) -> otkv_engine::Result<Engine> {
    Engine::open(config(dir, snapshots))
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat((i % 7) as usize)).into_bytes()
}

/// Writes keys `range` (and deletes every tenth), then simulates a crash: the engine is leaked, so no
/// shutdown snapshot or flush happens beyond what each `sync` write already made durable.
fn write_then_crash(dir: &Path, snapshots: bool, range: std::ops::Range<u32>) {
    let engine = open(dir, snapshots).expect("open");
    for i in range {
        engine.put(format!("k{i:05}").as_bytes(), &value(i)).expect("put");
        if i % 10 == 9 {
            engine.delete(format!("k{:05}", i - 1).as_bytes()).expect("delete");
        }
    }
    crash(engine);
}

/// Abandons the engine as a crash would: nothing more is written. (Its flusher thread is idle: every
/// write already returned only after its sync.)
fn crash(engine: Engine) {
    std::mem::forget(engine);
}

fn expected(upto: u32) -> Vec<(String, Option<Vec<u8>>)> {
    (0..upto)
        .map(|i| {
            let deleted = i % 10 == 8 && i + 1 < upto;
            (format!("k{i:05}"), (!deleted).then(|| value(i)))
        })
        .collect()
}

fn check(engine: &Engine, upto: u32) {
    for (key, want) in expected(upto) {
        assert_eq!(engine.get(key.as_bytes()).expect("get").map(|b| b.to_vec()), want, "{key}");
    }
}

/// Writes `k{i:05}` = `value(i)` for every `i` in `range`.
fn put_keys(engine: &Engine, range: std::ops::Range<u32>) {
    for i in range {
        engine.put(format!("k{i:05}").as_bytes(), &value(i)).expect("put");
    }
}

/// The one snapshot file in `dir`.
fn only_snapshot(dir: &Path) -> PathBuf {
    let mut snaps: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .expect("snapshot dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(snaps.len(), 1, "exactly one snapshot: {snaps:?}");
    snaps.pop().expect("a snapshot")
}

/// Where the records end in a segment: the log grows its files with zeros ahead of its writes. (Every
/// value these tests write ends in a non-zero byte.)
fn log_end(data: &[u8]) -> usize {
    data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

fn only_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> =
        std::fs::read_dir(dir.join("log")).expect("log dir").map(|e| e.expect("entry").path()).collect();
    segs.sort();
    segs.pop().expect("a segment")
}

#[test]
fn recover_from_the_log_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_then_crash(dir.path(), false, 0..500);
    let engine = open(dir.path(), false).expect("reopen");
    check(&engine, 500);
    // And again, after more writes on the recovered engine.
    for i in 500..600 {
        engine.put(format!("k{i:05}").as_bytes(), &value(i)).expect("put");
        if i % 10 == 9 {
            engine.delete(format!("k{:05}", i - 1).as_bytes()).expect("delete");
        }
    }
    crash(engine);
    check(&open(dir.path(), false).expect("reopen"), 600);
}

#[test]
fn recover_from_snapshot_plus_log_and_drop_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), true).expect("open");
    put_keys(&engine, 0..300);
    engine.snapshot().expect("snapshot");
    put_keys(&engine, 300..400);
    crash(engine);
    let snaps: Vec<_> = std::fs::read_dir(dir.path().join("snapshots")).expect("dir").collect();
    assert_eq!(snaps.len(), 1, "one snapshot");
    let segs: Vec<_> = std::fs::read_dir(dir.path().join("log")).expect("dir").collect();
    assert_eq!(segs.len(), 1, "the log before the snapshot was dropped");
    let engine = open(dir.path(), true).expect("reopen");
    assert_eq!(engine.len(), 400);
    for i in 0..400 {
        assert_eq!(engine.get(format!("k{i:05}").as_bytes()).expect("get").as_deref(), Some(&value(i)[..]));
    }
}

#[test]
fn clean_shutdown_snapshots_and_restarts_from_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), true).expect("open");
    put_keys(&engine, 0..200);
    engine.close().expect("close");
    let log = std::fs::read(only_segment(dir.path())).expect("segment");
    assert_eq!(log.len(), 16, "after the shutdown snapshot the log holds only its header");
    let engine = open(dir.path(), true).expect("reopen");
    assert_eq!(engine.len(), 200);
}

#[test]
fn a_torn_last_record_is_cut_at_every_byte_offset() {
    let base = tempfile::tempdir().expect("tempdir");
    write_then_crash(base.path(), false, 0..20);
    let seg = only_segment(base.path());
    let before = log_end(&std::fs::read(&seg).expect("read"));
    // One more write (a synced marker and one record): the one we will tear.
    let engine = open(base.path(), false).expect("open");
    engine.put(b"last", b"the torn one").expect("put");
    crash(engine);
    let full = std::fs::read(&seg).expect("read");
    let after = log_end(&full);
    assert!(after > before);
    for cut in before..after {
        // Torn inside the space allocated ahead (zeros after the cut), and torn at the end of the file.
        let zeroed = [&full[..cut], &vec![0; full.len() - cut][..]].concat();
        for (how, bytes) in [("zeroed", &zeroed[..]), ("truncated", &full[..cut])] {
            let dir = tempfile::tempdir().expect("tempdir");
            copy_dir(base.path(), dir.path());
            let torn = dir.path().join("log").join(seg.file_name().expect("name"));
            std::fs::write(&torn, bytes).expect("tear");
            let engine = open(dir.path(), false).unwrap_or_else(|e| panic!("{how} at {cut}: {e}"));
            check(&engine, 20);
            assert_eq!(
                engine.get(b"last").expect("get"),
                None,
                "{how} at {cut}: a torn record is never applied"
            );
            // The recovered engine writes after what it kept, and reads it back after another crash.
            engine.put(b"after", b"the tear").expect("put");
            crash(engine);
            let engine = open(dir.path(), false).unwrap_or_else(|e| panic!("{how} at {cut}, reopened: {e}"));
            check(&engine, 20);
            assert_eq!(
                engine.get(b"after").expect("get").as_deref(),
                Some(&b"the tear"[..]),
                "{how} at {cut}"
            );
        }
    }
    // Uncut, the record is there.
    let engine = open(base.path(), false).expect("open");
    assert_eq!(engine.get(b"last").expect("get").as_deref(), Some(&b"the torn one"[..]));
}

#[test]
fn a_flipped_bit_in_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_then_crash(dir.path(), false, 0..20);
    let seg = only_segment(dir.path());
    let mut data = std::fs::read(&seg).expect("read");
    let last = log_end(&data) - 3;
    data[last] ^= 0x10;
    std::fs::write(&seg, &data).expect("write");
    let engine = open(dir.path(), false).expect("open");
    check(&engine, 19);
}

#[test]
fn damage_inside_the_last_write_is_torn_even_with_valid_records_after_it() {
    // The disk may persist the pages of one write in any order, so a crash can leave a hole in the last
    // write with intact records after it. Nothing in that write was acknowledged (its sync never returned),
    // so it is cut, not refused. Periodic mode with a long interval: `flush` decides where writes end.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), false);
    config.durability = Durability::Periodic;
    config.flush_interval = std::time::Duration::from_hours(1);
    let engine = Engine::open(config.clone()).expect("open");
    for i in 0..20 {
        put_keys(&engine, i..i + 1);
        engine.flush().expect("flush");
    }
    let seg = only_segment(dir.path());
    let before = log_end(&std::fs::read(&seg).expect("read"));
    engine
        .batch(|b| (0..5).try_for_each(|i| b.put(format!("batch{i}").as_bytes(), b"in one write").map(drop)))
        .expect("batch");
    engine.flush().expect("flush");
    crash(engine);
    let mut data = std::fs::read(&seg).expect("read");
    data[before + 60] ^= 0x01; // inside the first record of the last write; four valid ones follow
    std::fs::write(&seg, &data).expect("write");
    let engine = Engine::open(config).expect("a hole in the last write is a torn write");
    for i in 0..20 {
        assert_eq!(engine.get(format!("k{i:05}").as_bytes()).expect("get"), Some(value(i).into()), "k{i:05}");
    }
    for i in 0..5 {
        assert_eq!(engine.get(format!("batch{i}").as_bytes()).expect("get"), None, "batch{i} was cut");
    }
}

#[test]
fn a_flipped_bit_followed_by_valid_records_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_then_crash(dir.path(), false, 0..50);
    let seg = only_segment(dir.path());
    let mut data = std::fs::read(&seg).expect("read");
    data[100] ^= 0x01; // inside an early record
    std::fs::write(&seg, &data).expect("write");
    let (path, detail) = corruption(open(dir.path(), false));
    assert_eq!(path, seg);
    assert!(detail.contains("followed by a valid record"), "{detail}");
}

#[test]
fn a_corrupt_newest_snapshot_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), true).expect("open");
    put_keys(&engine, 0..100);
    engine.close().expect("close");
    let snap = only_snapshot(dir.path());
    let mut data = std::fs::read(&snap).expect("read");
    data[40] ^= 0x04;
    std::fs::write(&snap, &data).expect("write");
    assert_eq!(corruption(open(dir.path(), true)).0, snap);
}

#[test]
fn a_missing_snapshot_refuses_to_start_and_a_half_written_one_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), true).expect("open");
    put_keys(&engine, 0..100);
    engine.snapshot().expect("snapshot");
    engine.put(b"after", b"snapshot").expect("put");
    crash(engine);

    // A half-written snapshot (what a crash during a snapshot leaves) is removed, and changes nothing.
    let tmp = dir.path().join("snapshots").join("snapshot-00000000000000009999.otkv.tmp");
    std::fs::write(&tmp, b"OTKVSNP1 half written").expect("write tmp");
    let engine = open(dir.path(), true).expect("open with a .tmp snapshot");
    assert_eq!(engine.len(), 101);
    crash(engine);
    assert!(!tmp.exists());

    // Without its snapshot, the log does not start at 1: the data before it is gone, so refuse.
    let snap = only_snapshot(dir.path());
    std::fs::remove_file(&snap).expect("remove snapshot");
    let (_, detail) = corruption(open(dir.path(), true));
    assert!(detail.contains("missing"), "{detail}");
}

/// The file and detail of the corruption error `opened` must be.
fn corruption(opened: otkv_engine::Result<Engine>) -> (PathBuf, String) {
    match opened {
        Err(EngineError::Corrupt { path, detail }) => (path, detail),
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
