//! What the engine stores with every value: its version and its expiry.
//!
//! Both backends store an entry as one byte string, `version u64 | expires_ms u64 | value` (little-endian),
//! so the metadata costs 16 bytes and no extra allocation (the memory map's value is one `Box<[u8]>`; sled's
//! is one `IVec`). `expires_ms` is milliseconds since the Unix epoch, absolute, so an expiry survives a
//! restart; 0 means never.

use std::time::{SystemTime, UNIX_EPOCH};

/// The largest value the engine accepts, whatever the caller's own limit: 256 MiB.
///
/// The HTTP adapter enforces a much smaller, configurable limit; this one only keeps a bug or a misconfigured
/// caller from asking a backend to store something absurd.
pub const MAX_VALUE_BYTES: usize = 256 << 20;

/// The longest key the engine accepts, whatever the caller's own limit: 64 KiB less one byte (the table
/// records a key's length in 16 bits). The HTTP adapter's default limit is 1 KiB.
pub const MAX_KEY_BYTES: usize = u16::MAX as usize;

/// What a [`Engine::put`](crate::Engine::put) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The key was absent and now holds the value.
    Created,
    /// The key held a value, which the new one replaced.
    Replaced,
}

/// What a backend's conditional put did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    /// What happened to the key; `None`: the condition failed and nothing was written.
    pub outcome: Option<PutOutcome>,
    /// The version the value got (also when nothing was written: it is then unused).
    pub version: u64,
    /// The log ticket to wait for before acknowledging the write in `sync` mode; 0: none.
    pub ticket: u64,
}

/// Bytes of metadata before the value.
pub(crate) const META_LEN: usize = 16;

/// A stored value's version and expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Changes on every write of the key and never repeats for that key, across restarts too.
    pub version: u64,
    /// When the value expires, in milliseconds since the Unix epoch; 0 for never.
    pub expires_ms: u64,
}

impl Meta {
    /// Whether the value has expired at `now_ms`.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expires_ms != 0 && self.expires_ms <= now_ms
    }
}

/// What a conditional write requires of the key's current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Nothing: an unconditional write.
    Always,
    /// The key is absent (or expired): create only (`If-None-Match: *`).
    Absent,
    /// The key is present (`If-Match: *`).
    Present,
    /// The key is present with exactly this version (`If-Match: "V"`).
    Version(u64),
}

impl Condition {
    /// Whether a key whose live value has `current` metadata (`None`: absent or expired) satisfies it.
    pub fn holds(self, current: Option<Meta>) -> bool {
        match (self, current) {
            (Condition::Always, _) => true,
            (Condition::Absent, c) => c.is_none(),
            (Condition::Present, c) => c.is_some(),
            (Condition::Version(v), Some(m)) => m.version == v,
            (Condition::Version(_), None) => false,
        }
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The stored form of `value` with `meta`.
pub(crate) fn encode(meta: Meta, value: &[u8]) -> Box<[u8]> {
    let mut head = [0u8; META_LEN];
    head[..8].copy_from_slice(&meta.version.to_le_bytes());
    head[8..].copy_from_slice(&meta.expires_ms.to_le_bytes());
    // One exact allocation and two copies (`concat` sizes it first).
    [&head[..], value].concat().into_boxed_slice()
}

/// The metadata and value of a stored entry (`None` if it is too short to be one).
pub(crate) fn split(stored: &[u8]) -> Option<(Meta, &[u8])> {
    let version = u64::from_le_bytes(stored.get(..8)?.try_into().ok()?);
    let expires_ms = u64::from_le_bytes(stored.get(8..16)?.try_into().ok()?);
    Some((Meta { version, expires_ms }, &stored[META_LEN..]))
}

/// The live metadata and value of a stored entry at `now_ms`: `None` when expired.
pub(crate) fn live(stored: &[u8], now_ms: u64) -> Option<(Meta, &[u8])> {
    split(stored).filter(|(m, _)| !m.expired_at(now_ms))
}

/// [`live`] now; the clock is read only for a value that can expire.
pub(crate) fn live_now(stored: &[u8]) -> Option<(Meta, &[u8])> {
    split(stored).filter(|(m, _)| m.expires_ms == 0 || !m.expired_at(now_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_expire() {
        let m = Meta { version: 7, expires_ms: 1000 };
        let stored = encode(m, b"value");
        assert_eq!(split(&stored), Some((m, &b"value"[..])));
        assert!(live(&stored, 999).is_some());
        assert!(live(&stored, 1000).is_none());
        assert!(live(&encode(Meta { version: 1, expires_ms: 0 }, b""), u64::MAX).is_some());
        assert_eq!(split(b"short"), None);
    }

    #[test]
    fn conditions() {
        let m = Some(Meta { version: 3, expires_ms: 0 });
        assert!(Condition::Always.holds(None) && Condition::Always.holds(m));
        assert!(Condition::Absent.holds(None) && !Condition::Absent.holds(m));
        assert!(!Condition::Present.holds(None) && Condition::Present.holds(m));
        assert!(Condition::Version(3).holds(m) && !Condition::Version(4).holds(m));
        assert!(!Condition::Version(3).holds(None));
    }
}
