//! What a replicated log entry says: one write, with everything its outcome depends on decided before it
//! is proposed, so that every member applying it does the same thing.
//!
//! The leader's clock is read once, by the member that takes the request: an entry carries the absolute
//! expiry of its value and the time its condition is judged at. The version a write gives its value is
//! the entry's index in the log, the same on every member. What an entry does to the engine is decided
//! when it is applied ([`apply`]), in log order, so `If-Match` stays atomic across a change of leader.
//!
//! The encoding is ours (a few fixed fields and two byte strings), not protobuf: it is read on every
//! member for every write, and has nothing to negotiate.

use otkv_engine::{Batch, Condition, EngineError, Meta, PutOutcome};

/// A write, as it travels in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// What to do.
    pub op: Op,
    /// The key.
    pub key: Vec<u8>,
    /// What must hold of the key's live value.
    pub cond: Condition,
    /// When the request was taken (ms since the Unix epoch): the time the condition is judged at.
    pub now_ms: u64,
}

/// A command's operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Store this value, expiring at this time (0: never).
    Put {
        /// The value.
        value: Vec<u8>,
        /// Absolute expiry, ms since the Unix epoch; 0: never.
        expires_ms: u64,
    },
    /// Remove the key.
    Delete,
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A put: created or replaced, with the new version (the entry's index); `None`: the condition failed.
    Put(Option<(PutOutcome, u64)>),
    /// A delete: whether a live value was removed; `None`: the condition failed.
    Delete(Option<bool>),
    /// The engine refused the write on this member (out of memory): the same error on every member
    /// with the same data and cap.
    Refused(String),
}

/// The entry context that names the member and the request a write came from (a member answers the
/// writes it proposed when it applies them).
pub fn context(member: u64, request: u64) -> Vec<u8> {
    [member.to_le_bytes(), request.to_le_bytes()].concat()
}

/// The member and request an entry's context names.
pub fn context_of(bytes: &[u8]) -> Option<(u64, u64)> {
    let member = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let request = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((member, request))
}

const PUT: u8 = 1;
const DELETE: u8 = 2;

fn cond_parts(cond: Condition) -> (u8, u64) {
    match cond {
        Condition::Always => (0, 0),
        Condition::Absent => (1, 0),
        Condition::Present => (2, 0),
        Condition::Version(v) => (3, v),
    }
}

impl Command {
    /// The entry's bytes: `op u8 | cond u8 | cond version u64 | now u64 | expires u64 | key len u32 | key
    /// | value`, little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, expires, value): (u8, u64, &[u8]) = match &self.op {
            Op::Put { value, expires_ms } => (PUT, *expires_ms, value),
            Op::Delete => (DELETE, 0, b""),
        };
        let (cond, version) = cond_parts(self.cond);
        let mut out = Vec::with_capacity(30 + self.key.len() + value.len());
        out.push(tag);
        out.push(cond);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&self.now_ms.to_le_bytes());
        out.extend_from_slice(&expires.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(value);
        out
    }

    /// Reads an entry's bytes back; `None` if they are not a command (a corrupt or foreign entry).
    pub fn decode(bytes: &[u8]) -> Option<Command> {
        let u64_at =
            |at: usize| bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        let (tag, cond_tag) = (*bytes.first()?, *bytes.get(1)?);
        let (version, now_ms, expires_ms) = (u64_at(2)?, u64_at(10)?, u64_at(18)?);
        let key_len = u32::from_le_bytes(bytes.get(26..30)?.try_into().ok()?) as usize;
        let key = bytes.get(30..30usize.checked_add(key_len)?)?.to_vec();
        let rest = &bytes[30 + key_len..];
        let cond = match cond_tag {
            0 => Condition::Always,
            1 => Condition::Absent,
            2 => Condition::Present,
            3 => Condition::Version(version),
            _ => return None,
        };
        let op = match tag {
            PUT => Op::Put { value: rest.to_vec(), expires_ms },
            DELETE if rest.is_empty() => Op::Delete,
            _ => return None,
        };
        Some(Command { op, key, cond, now_ms })
    }
}

/// Applies the command of the entry at `index` to the engine. The engine's errors other than a refusal
/// (an engine that cannot take replicated writes at all) are returned: the member must stop applying.
pub fn apply(batch: &Batch<'_>, command: &Command, index: u64) -> Result<Applied, EngineError> {
    let result = match &command.op {
        Op::Put { value, expires_ms } => {
            let meta = Meta { version: index, expires_ms: *expires_ms };
            batch
                .put_at(&command.key, value, command.cond, meta, command.now_ms)
                .map(|outcome| Applied::Put(outcome.map(|o| (o, index))))
        }
        Op::Delete => batch.delete_at(&command.key, command.cond, command.now_ms).map(Applied::Delete),
    };
    match result {
        Err(e @ EngineError::OutOfMemory { .. }) => Ok(Applied::Refused(e.to_string())),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn condition() -> impl Strategy<Value = Condition> {
        prop_oneof![
            Just(Condition::Always),
            Just(Condition::Absent),
            Just(Condition::Present),
            any::<u64>().prop_map(Condition::Version),
        ]
    }

    proptest! {
        /// Every command reads back as itself, and no prefix of one reads as a different command.
        #[test]
        fn commands_read_back_as_written(
            key in proptest::collection::vec(any::<u8>(), 1..40),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            expires_ms in any::<u64>(),
            now_ms in any::<u64>(),
            cond in condition(),
        ) {
            let op = match value {
                Some(value) => Op::Put { value, expires_ms },
                None => Op::Delete,
            };
            let command = Command { op, key, cond, now_ms };
            let bytes = command.encode();
            prop_assert_eq!(Command::decode(&bytes), Some(command.clone()));
            for cut in 0..30 {
                prop_assert_eq!(Command::decode(&bytes[..cut]), None);
            }
        }
    }
}
