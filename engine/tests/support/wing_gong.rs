//! Wing and Gong's linearizability search, with memoisation of (operations placed, state): whether a
//! history of timed operations has an order that respects real time (an operation that returned before
//! another was called comes first) and in which each result is what a sequential model gives.
//!
//! Shared by the engine's checker (`engine/tests/linearizable.rs`) and the replica groups' checker
//! (`harness/tests/replica/history.rs`), which models operations whose outcome the client never learned:
//! such an operation has no end, may be placed anywhere after its call, or left out.

use std::collections::HashSet;
use std::hash::Hash;
use std::time::Instant;

/// One operation of a history: what it was, when it was called, and when it returned (`None`: its
/// outcome is unknown).
#[derive(Debug, Clone)]
pub struct Timed<C> {
    /// What was asked and answered.
    pub call: C,
    /// When it was called.
    pub start: Instant,
    /// When its answer arrived.
    pub end: Option<Instant>,
}

/// Whether `history` has a linearization from `init`, where `steps(state, call)` gives every state
/// `call` can lead to from `state` given what it returned (none: it cannot go next).
pub fn linearizable<C, S: Clone + Eq + Hash>(
    history: &[Timed<C>],
    init: S,
    steps: impl Fn(&S, &C) -> Vec<S>,
) -> bool {
    let mut done = vec![false; history.len()];
    search(history, &mut done, &init, &steps, &mut HashSet::new())
}

fn search<C, S: Clone + Eq + Hash>(
    history: &[Timed<C>],
    done: &mut Vec<bool>,
    state: &S,
    steps: &impl Fn(&S, &C) -> Vec<S>,
    seen: &mut HashSet<(Vec<bool>, S)>,
) -> bool {
    // Done when every operation with a known outcome is placed; the unknown ones may never happen.
    let pending = history.iter().zip(done.iter()).filter(|(t, d)| !**d && t.end.is_some());
    let Some(earliest_end) = pending.filter_map(|(t, _)| t.end).min() else { return true };
    if !seen.insert((done.clone(), state.clone())) {
        return false;
    }
    // An operation can go next only if no pending operation returned before it was called.
    for i in 0..history.len() {
        if done[i] || history[i].start > earliest_end {
            continue;
        }
        for next in steps(state, &history[i].call) {
            done[i] = true;
            if search(history, done, &next, steps, seen) {
                return true;
            }
            done[i] = false;
        }
    }
    false
}
