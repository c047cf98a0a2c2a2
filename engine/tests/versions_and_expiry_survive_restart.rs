//! Versions and expiry through restarts, and data directories written before they existed.
//!
//! After a restart (a crash, which replays the log, or a clean shutdown, which loads a snapshot) a value
//! keeps its version, so an `ETag` a client holds stays valid; new writes get higher versions; a value keeps
//! its absolute expiry; a value that had expired does not come back. Data written by the previous release
//! (log version 2, snapshot version 1, sled values without metadata) opens with this one.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::path::Path;

use otkv_engine::{now_ms, Condition, Durability, Engine, EngineConfig};

fn memory(dir: &Path) -> Engine {
    Engine::open(EngineConfig::memory_durable(dir, Durability::Sync)).expect("open memory")
}

fn sled(dir: &Path) -> Engine {
    Engine::open(EngineConfig::sled(dir).with_durability(Durability::Sync)).expect("open sled")
}

/// What the test writes before the restart: (version of `kept`, expiry of `ttl`).
fn write_before(engine: &Engine) -> (u64, u64) {
    let (_, kept) = engine.put_if(b"kept", b"1", Condition::Always, 0).expect("put").expect("applies");
    let later = now_ms() + 3_600_000;
    engine.put_if(b"ttl", b"t", Condition::Always, later).expect("put").expect("applies");
    // Expired before the restart: one that never had another value, one that replaced a live value.
    engine.put_if(b"gone", b"g", Condition::Always, now_ms() - 1).expect("put").expect("applies");
    engine.put(b"replaced", b"live").expect("put");
    engine.put_if(b"replaced", b"r", Condition::Always, now_ms() - 1).expect("put").expect("applies");
    (kept, later)
}

fn check_after(engine: &Engine, (kept, later): (u64, u64)) {
    let (meta, value) = engine.get_entry(b"kept").expect("get").expect("kept survives");
    assert_eq!((meta.version, value.as_ref()), (kept, &b"1"[..]), "the version a client holds stays valid");
    let (ttl, _) = engine.get_entry(b"ttl").expect("get").expect("ttl key survives");
    assert_eq!(ttl.expires_ms, later, "the expiry is absolute and kept");
    assert_eq!(engine.get(b"gone").expect("get"), None, "an expired key stays gone");
    assert_eq!(engine.get(b"replaced").expect("get"), None, "and does not bring back what it replaced");
    // A conditional write with the old version applies; its new version is higher than any before.
    let (_, newer) = engine
        .put_if(b"kept", b"2", Condition::Version(kept), 0)
        .expect("put_if")
        .expect("the held version still matches");
    assert!(newer > kept && newer > ttl.version, "{newer} after {kept}");
    assert_eq!(engine.put_if(b"kept", b"3", Condition::Version(kept), 0).expect("put_if"), None);
}

#[test]
fn memory_engine_after_a_crash_replays_versions_and_expiry_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = memory(dir.path());
    let before = write_before(&engine);
    std::mem::forget(engine); // a crash: nothing flushed beyond what `sync` acknowledged
    check_after(&memory(dir.path()), before);
}

#[test]
fn memory_engine_after_a_clean_shutdown_loads_them_from_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = memory(dir.path());
    let before = write_before(&engine);
    engine.close().expect("close (writes a snapshot)");
    let engine = memory(dir.path());
    assert_eq!(engine.len(), 2, "expired entries are not written to the snapshot");
    check_after(&engine, before);
}

#[test]
fn sled_engine_keeps_versions_and_expiry_across_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = sled(dir.path());
    let before = write_before(&engine);
    engine.close().expect("close");
    check_after(&sled(dir.path()), before);
}

// ---- the previous release's formats, written byte for byte as it wrote them ----

fn log_v2_record(out: &mut Vec<u8>, seq: u64, op: u8, key: &[u8], value: Option<&[u8]>) {
    let mut payload = Vec::new();
    payload.extend_from_slice(&seq.to_le_bytes());
    payload.extend_from_slice(&1_700_000_000_000_000u64.to_le_bytes());
    payload.push(op);
    payload.extend_from_slice(&(key.len() as u32).to_le_bytes());
    payload.extend_from_slice(key);
    if let Some(v) = value {
        payload.extend_from_slice(&(v.len() as u32).to_le_bytes());
        payload.extend_from_slice(v);
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// A snapshot file of `version` around `body` (its `count` entries, already encoded).
fn snapshot_file(version: u32, replay_from: u64, count: usize, body: &[u8]) -> Vec<u8> {
    let mut out = b"OTKVSNP1".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&replay_from.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&(count as u64).to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(b"OTKVEND1");
    out
}

fn snapshot_v1(replay_from: u64, entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in entries {
        body.extend_from_slice(&(k.len() as u32).to_le_bytes());
        body.extend_from_slice(k);
        body.extend_from_slice(&(v.len() as u32).to_le_bytes());
        body.extend_from_slice(v);
    }
    snapshot_file(1, replay_from, entries.len(), &body)
}

#[test]
fn a_memory_data_directory_of_log_v2_and_snapshot_v1_opens_and_upgrades() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("snapshots")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("log")).expect("mkdir");
    // The snapshot holds a, b and d as of sequence 3; the log goes on from 3: put c, put a, delete b.
    let snap = snapshot_v1(3, &[(b"a", b"1"), (b"b", b"2"), (b"d", b"4")]);
    std::fs::write(dir.path().join("snapshots/snapshot-00000000000000000003.otkv"), snap).expect("write");
    let mut log = b"OTKVLOG1".to_vec();
    log.extend_from_slice(&2u32.to_le_bytes());
    log.extend_from_slice(&0u32.to_le_bytes());
    log_v2_record(&mut log, 3, 1, b"c", Some(b"3"));
    log_v2_record(&mut log, 4, 1, b"a", Some(b"11"));
    log_v2_record(&mut log, 5, 2, b"b", None);
    log.extend_from_slice(&[0u8; 64]);
    std::fs::write(dir.path().join("log/log-00000000000000000003.otkv"), log).expect("write");

    let engine = memory(dir.path());
    let entry =
        |k: &[u8]| engine.get_entry(k).expect("get").map(|(m, v)| (m.version, m.expires_ms, v.to_vec()));
    assert_eq!(entry(b"a"), Some((4, 0, b"11".to_vec())), "a logged put's version is its sequence number");
    assert_eq!(entry(b"c"), Some((3, 0, b"3".to_vec())));
    assert_eq!(entry(b"d"), Some((2, 0, b"4".to_vec())), "a v1 snapshot's values get replay_from - 1");
    assert_eq!(entry(b"b"), None);
    // New writes continue the sequence, in a new segment of the current format.
    let (_, v) = engine.put_if(b"e", b"5", Condition::Absent, 0).expect("put").expect("applies");
    assert_eq!(v, 6);
    drop(engine);
    let engine = memory(dir.path());
    assert_eq!(engine.get_entry(b"e").expect("get").map(|(m, _)| m.version), Some(6));
    assert_eq!(engine.get(b"a").expect("get").as_deref(), Some(&b"11"[..]));
}

/// A version 2 snapshot (the previous release's): fixed-width lengths, metadata in the stored part.
fn snapshot_v2(replay_from: u64, entries: &[(&[u8], u64, u64, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, version, expires_ms, v) in entries {
        body.extend_from_slice(&(k.len() as u32).to_le_bytes());
        body.extend_from_slice(k);
        body.extend_from_slice(&(16 + v.len() as u32).to_le_bytes());
        body.extend_from_slice(&version.to_le_bytes());
        body.extend_from_slice(&expires_ms.to_le_bytes());
        body.extend_from_slice(v);
    }
    snapshot_file(2, replay_from, entries.len(), &body)
}

#[test]
fn a_version_2_snapshot_opens_and_the_next_snapshot_is_version_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("snapshots")).expect("mkdir");
    let later = otkv_engine::now_ms() + 3_600_000;
    let snap = snapshot_v2(7, &[(b"a", 5, 0, b"1"), (b"b", 6, later, b"22"), (b"gone", 4, 1, b"x")]);
    std::fs::write(dir.path().join("snapshots/snapshot-00000000000000000007.otkv"), snap).expect("write");
    // The log goes on from the snapshot's boundary, empty.
    std::fs::create_dir_all(dir.path().join("log")).expect("mkdir");
    let log = [&b"OTKVLOG1"[..], &3u32.to_le_bytes(), &0u32.to_le_bytes()].concat();
    std::fs::write(dir.path().join("log/log-00000000000000000007.otkv"), log).expect("write");
    let entry = |e: &Engine, k: &[u8]| {
        e.get_entry(k).expect("get").map(|(m, v)| (m.version, m.expires_ms, v.to_vec()))
    };
    let engine = memory(dir.path());
    assert_eq!(entry(&engine, b"a"), Some((5, 0, b"1".to_vec())));
    assert_eq!(entry(&engine, b"b"), Some((6, later, b"22".to_vec())));
    assert_eq!(entry(&engine, b"gone"), None, "expired long ago");
    engine.close().expect("close (writes a version 3 snapshot)");
    let engine = memory(dir.path());
    assert_eq!(entry(&engine, b"a"), Some((5, 0, b"1".to_vec())));
    assert_eq!(entry(&engine, b"b"), Some((6, later, b"22".to_vec())));
    assert_eq!(engine.len(), 2);
}

#[test]
fn a_sled_tree_of_plain_values_is_upgraded_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = sled::open(dir.path()).expect("sled");
        db.insert(b"a", b"1".as_ref()).expect("insert");
        db.insert(b"b", b"".as_ref()).expect("insert");
        db.flush().expect("flush");
    }
    let engine = sled(dir.path());
    let a = engine.get_entry(b"a").expect("get").expect("a");
    let b = engine.get_entry(b"b").expect("get").expect("b");
    assert_eq!((a.1.as_ref(), b.1.as_ref()), (&b"1"[..], &b""[..]));
    assert_ne!(a.0.version, b.0.version);
    assert_eq!((a.0.expires_ms, b.0.expires_ms), (0, 0));
    engine.close().expect("close");
    // Opening again does not upgrade twice: versions are unchanged.
    let engine = sled(dir.path());
    assert_eq!(engine.get_entry(b"a").expect("get").map(|(m, _)| m.version), Some(a.0.version));
}
