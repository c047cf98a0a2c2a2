//! Per-key linearizability of histories taken over HTTP while faults happen: the model of one key over
//! the API, for Wing and Gong's search that the engine's own checker uses too
//! (`engine/tests/support/wing_gong.rs`), with operations whose outcome the client never learned.
//!
//! A write that got no answer, or `504` (outcome unknown), may have taken effect at any time after it
//! was sent, or never: it is linearized anywhere after its call, or left out. Its version is then not
//! known either, until a read reveals it. A request refused with `503` (no leader) did nothing and is
//! not in the history.

use std::time::Instant;

use crate::wing_gong;

/// What a client asked and learned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Call {
    /// A read: the value and version, or absent.
    Get(Option<(Vec<u8>, u64)>),
    /// A write of this value if the condition held: the new version, or `None` (412).
    Put(Vec<u8>, Cond, Option<u64>),
    /// A delete if the condition held: whether it removed a value (`None`: 412).
    Delete(Cond, Option<bool>),
    /// A write whose outcome is unknown.
    MaybePut(Vec<u8>, Cond),
    /// A delete whose outcome is unknown.
    MaybeDelete(Cond),
}

/// A write's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cond {
    /// None.
    Always,
    /// `If-None-Match: *`.
    Absent,
    /// `If-Match: "V"`.
    Version(u64),
}

/// An operation with its real-time interval (`end` is `None` for an unknown outcome).
pub type Timed = wing_gong::Timed<Call>;

/// A key's state: its value and version (`None`: a version no read has revealed yet).
type State = Option<(Vec<u8>, Option<u64>)>;

/// Whether `cond` can hold of `state`, and whether it can fail (both, with a version not yet known).
fn can(cond: Cond, state: &State) -> (bool, bool) {
    match (cond, state) {
        (Cond::Always, _) => (true, false),
        (Cond::Absent, s) => (s.is_none(), s.is_some()),
        (Cond::Version(_), None) => (false, true),
        (Cond::Version(v), Some((_, Some(have)))) => (v == *have, v != *have),
        (Cond::Version(_), Some((_, None))) => (true, true),
    }
}

/// The states `call` can lead to from `state` given what it returned.
fn steps(state: &State, call: &Call) -> Vec<State> {
    match call {
        Call::Get(got) => match (got, state) {
            (None, None) => vec![None],
            (Some((v, ver)), Some((have, known))) if v == have && known.is_none_or(|k| k == *ver) => {
                vec![Some((v.clone(), Some(*ver)))]
            }
            _ => vec![],
        },
        Call::Put(value, cond, result) => {
            let (holds, fails) = can(*cond, state);
            match result {
                Some(version) if holds => vec![Some((value.clone(), Some(*version)))],
                None if fails => vec![state.clone()],
                _ => vec![],
            }
        }
        Call::Delete(cond, result) => {
            let (holds, fails) = can(*cond, state);
            match result {
                Some(existed) if holds && *existed == state.is_some() => vec![None],
                None if fails => vec![state.clone()],
                _ => vec![],
            }
        }
        Call::MaybePut(value, cond) => {
            let (holds, fails) = can(*cond, state);
            let mut out = Vec::new();
            if holds {
                out.push(Some((value.clone(), None)));
            }
            if fails {
                out.push(state.clone());
            }
            out
        }
        Call::MaybeDelete(cond) => {
            let (holds, fails) = can(*cond, state);
            let mut out = Vec::new();
            if holds {
                out.push(None);
            }
            if fails {
                out.push(state.clone());
            }
            out
        }
    }
}

/// Whether one key's history has a linearization from an absent key.
pub fn linearizable(history: &[Timed]) -> bool {
    wing_gong::linearizable(history, None, steps)
}

#[test]
fn the_checker_tells_a_lost_write_from_an_unknown_one() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
    let put = |v: &str, ver, s, e| Timed {
        call: Call::Put(v.into(), Cond::Always, Some(ver)),
        start: at(s),
        end: Some(at(e)),
    };
    let get = |v: Option<(&str, u64)>, s, e| Timed {
        call: Call::Get(v.map(|(v, n)| (v.as_bytes().to_vec(), n))),
        start: at(s),
        end: Some(at(e)),
    };
    // An acknowledged write, then a read of the value before it: lost.
    assert!(!linearizable(&[put("a", 1, 0, 1), put("b", 2, 2, 3), get(Some(("a", 1)), 4, 5)]));
    assert!(linearizable(&[put("a", 1, 0, 1), put("b", 2, 2, 3), get(Some(("b", 2)), 4, 5)]));
    // A write with an unknown outcome may show up later, or never.
    let maybe = Timed { call: Call::MaybePut(b"c".to_vec(), Cond::Always), start: at(2), end: None };
    assert!(linearizable(&[put("a", 1, 0, 1), maybe.clone(), get(Some(("c", 9)), 10, 11)]));
    assert!(linearizable(&[put("a", 1, 0, 1), maybe.clone(), get(Some(("a", 1)), 10, 11)]));
    // ... but not before it was sent.
    let late = Timed { start: at(3), ..maybe };
    assert!(!linearizable(&[put("a", 1, 0, 1), get(Some(("c", 9)), 1, 2), late]));
}
