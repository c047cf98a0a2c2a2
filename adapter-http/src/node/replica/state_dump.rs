//! The data of a Raft snapshot: the group's members and every live entry of the engine, so a member that
//! was down, or new, starts from it and then applies the log after it.
//!
//! `u32 length | members as JSON | records`, each record `u32 key length | key | u64 version | u64 expiry |
//! u32 value length | value`, little-endian. Written and read only by the member's Raft thread, the only
//! writer of a member's engine, so a dump is the engine exactly at the snapshot's index.

use std::collections::BTreeMap;

use otkv_engine::{Condition, Engine, EngineError, Meta};

/// The members' client URLs, by member id.
pub type Members = BTreeMap<u64, String>;

/// Why a snapshot's data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// Cut short or not a dump.
    #[error("snapshot data is truncated or malformed")]
    Malformed,
    /// The engine refused an entry.
    #[error("the engine refused the snapshot's data: {0}")]
    Engine(#[from] EngineError),
}

/// The snapshot data of `engine` with `members`.
pub fn dump(engine: &Engine, members: &Members) -> Vec<u8> {
    let head = serde_json::to_vec(members).unwrap_or_default();
    let mut out = Vec::with_capacity(head.len() + 4 + engine.len() * 64);
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    // Every stored entry, expired ones not yet removed too: a member loading it holds exactly what the
    // others hold, and the leader's replicated removal finds it there.
    engine.for_each_entry(|key, meta, value| {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&meta.version.to_le_bytes());
        out.extend_from_slice(&meta.expires_ms.to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    });
    out
}

/// The snapshot data of an empty engine with `members`: a new group's first snapshot.
pub fn members_only(members: &Members) -> Vec<u8> {
    let head = serde_json::to_vec(members).unwrap_or_default();
    [&(head.len() as u32).to_le_bytes()[..], &head].concat()
}

fn split(data: &[u8]) -> Result<(Members, &[u8]), DumpError> {
    if data.is_empty() {
        return Ok((Members::new(), data));
    }
    let len = u32::from_le_bytes(
        data.get(..4).ok_or(DumpError::Malformed)?.try_into().map_err(|_| DumpError::Malformed)?,
    ) as usize;
    let head = data.get(4..4 + len).ok_or(DumpError::Malformed)?;
    let members = serde_json::from_slice(head).map_err(|_| DumpError::Malformed)?;
    Ok((members, &data[4 + len..]))
}

/// Replaces everything in `engine` with the snapshot's entries; returns its members.
pub fn load(engine: &Engine, data: &[u8]) -> Result<Members, DumpError> {
    let (members, mut rest) = split(data)?;
    let mut old = Vec::new();
    engine.for_each_entry(|key, _, _| old.push(key.to_vec()));
    for key in old {
        engine.batch(|b| b.delete_at(&key, Condition::Always, 0))?;
    }
    let mut take = |n: usize| -> Result<&[u8], DumpError> {
        let (head, tail) = rest.split_at_checked(n).ok_or(DumpError::Malformed)?;
        rest = tail;
        Ok(head)
    };
    let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize;
    let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
    loop {
        let Ok(len) = take(4) else { break };
        let key = take(u32_of(len))?.to_vec();
        let version = u64_of(take(8)?);
        let expires_ms = u64_of(take(8)?);
        let value_len = u32_of(take(4)?);
        let value = take(value_len)?;
        engine.batch(|b| b.put_at(&key, value, Condition::Always, Meta { version, expires_ms }, 0))?;
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use otkv_engine::EngineConfig;

    #[test]
    fn a_dump_loads_back_into_another_engine_as_it_was() {
        let (a, b) =
            (Engine::open(EngineConfig::memory()).unwrap(), Engine::open(EngineConfig::memory()).unwrap());
        for i in 0..100u64 {
            let meta = Meta { version: i + 7, expires_ms: if i % 3 == 0 { 0 } else { u64::MAX / 2 } };
            a.batch(|x| x.put_at(format!("k{i}").as_bytes(), &i.to_le_bytes(), Condition::Always, meta, 0))
                .unwrap();
        }
        b.put_at_for_test(b"stale", b"gone");
        let members = Members::from([(1, "http://a".to_string()), (2, "http://b".to_string())]);
        let data = dump(&a, &members);
        assert_eq!(load(&b, &data).unwrap(), members);
        assert_eq!(b.len(), 100);
        for i in 0..100u64 {
            assert_eq!(
                a.get_entry(format!("k{i}").as_bytes()).unwrap(),
                b.get_entry(format!("k{i}").as_bytes()).unwrap()
            );
        }
        assert!(matches!(load(&b, &data[..data.len() - 3]), Err(DumpError::Malformed)));
    }

    trait PutForTest {
        fn put_at_for_test(&self, key: &[u8], value: &[u8]);
    }
    impl PutForTest for Engine {
        fn put_at_for_test(&self, key: &[u8], value: &[u8]) {
            let meta = Meta { version: 1, expires_ms: 0 };
            self.batch(|b| b.put_at(key, value, Condition::Always, meta, 0)).unwrap();
        }
    }
}
