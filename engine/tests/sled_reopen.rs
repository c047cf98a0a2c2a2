//! The sled backend keeps its data across close and reopen, in every durability mode.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use otkv_engine::{Durability, Engine, EngineConfig, EngineError, EngineKind};

fn reopen_keeps_data(durability: Durability) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig::sled(dir.path()).with_durability(durability);
    {
        let engine = Engine::open(config.clone()).expect("open");
        for i in 0..1000u32 {
            engine.put(format!("key-{i:04}").as_bytes(), &i.to_le_bytes()).expect("put");
        }
        engine.delete(b"key-0007").expect("delete");
        engine.flush().expect("flush");
    }
    let engine = Engine::open(config).expect("reopen");
    assert_eq!(engine.len(), 999);
    assert_eq!(engine.get(b"key-0007").expect("get"), None);
    for i in (0..1000u32).filter(|&i| i != 7) {
        let got = engine.get(format!("key-{i:04}").as_bytes()).expect("get");
        assert_eq!(got.as_deref(), Some(&i.to_le_bytes()[..]), "key-{i:04}");
    }
    // sled lists in byte order.
    let page = engine.list(b"key-000", None, 3).expect("list");
    assert_eq!(page.keys, [b"key-0000", b"key-0001", b"key-0002"]);
    let next = engine.list(b"key-000", page.next.as_ref(), 3).expect("list");
    assert_eq!(next.keys, [b"key-0003", b"key-0004", b"key-0005"]);
}

#[test]
fn sled_reopen_keeps_data_with_durability_none() {
    reopen_keeps_data(Durability::None);
}

#[test]
fn sled_reopen_keeps_data_with_durability_periodic() {
    reopen_keeps_data(Durability::Periodic);
}

#[test]
fn sled_reopen_keeps_data_with_durability_sync() {
    reopen_keeps_data(Durability::Sync);
}

#[test]
fn sled_without_data_dir_is_a_config_error() {
    let mut config = EngineConfig::sled("unused");
    config.data_dir = None;
    assert!(matches!(Engine::open(config), Err(EngineError::InvalidConfig(_))));
}

#[test]
fn sled_on_a_file_instead_of_a_directory_is_an_error_not_a_panic() {
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    let config = EngineConfig { kind: EngineKind::Sled, ..EngineConfig::sled(file.path()) };
    assert!(Engine::open(config).is_err());
}
