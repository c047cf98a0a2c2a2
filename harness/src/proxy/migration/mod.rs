//! Keys on the move: everything the proxy does for a key whose owner changed with the node set.
//!
//! The request path asks one question, [`place`]: where does this key live, and must anything happen
//! first? [`Placement::Owner`] is the answer for every key outside a move (and for the keys a move has
//! settled): forward it. [`Placement::Moving`] names the key's previous owner; then
//! - a **write** (or delete) moves the key first ([`move_first`]) and goes to the new owner, so
//!   conditions are checked against the value that counts and nothing is left behind to come back;
//! - a **read** is answered from the previous owner, or the new one on a miss ([`read`]), without
//!   waiting for a move, and the key is queued to move in the background;
//! - `POST /v1/reshard/move`, the mover's, moves a batch of keys now ([`move_keys`]).
//!
//! How a key moves (`moving.rs`, the mover's own conditional copy and delete; `batch_move.rs`, the same
//! pipelined for many keys) and who holds it meanwhile (`claims.rs`) stays in here.

mod batch_move;
pub(super) mod claims;
mod moving;

use std::sync::Arc;

use otkv_adapter_http::front::{HttpError, Limits};

use super::topology::Topology;
use super::upstream::{Answer, Upstream, UpstreamError};
use crate::response_head::AnswerRules;

/// Where a key's request goes, and what must happen first.
#[derive(Debug, Clone, Copy)]
pub(super) enum Placement<'t> {
    /// To this node of the current set, as it is.
    Owner(usize),
    /// Its owner is this node of the current set, but the key may still be on `from`, its owner in the
    /// previous set: a write moves it first, a read asks `from` first.
    Moving {
        /// Its owner now.
        node: usize,
        /// Its owner before.
        from: &'t Arc<Upstream>,
    },
}

/// Where `key` lives in `topology`, and whether it must move first.
pub(super) fn place<'t>(topology: &'t Topology, key: &[u8]) -> Placement<'t> {
    let node = topology.current.router.route(key);
    match topology.moved_from(key, node) {
        Some(from) => Placement::Moving { node, from },
        None => Placement::Owner(node),
    }
}

/// Before a write of a moving key: moves it from `from` to its owner now, `node` (unless another request
/// settled it meanwhile); returns `node`, where the write goes. A failed move is the write's answer
/// (502, naming the nodes).
pub(super) fn move_first(
    topology: &Topology,
    key: &[u8],
    node: usize,
    from: &Upstream,
    max_body: usize,
) -> Result<usize, HttpError> {
    let to = &topology.current.upstreams[node];
    topology.move_once(key, || moving::move_one(from, to, key, max_body))?;
    Ok(node)
}

/// A read (`GET`, `HEAD`) of a moving key: asks `from`, and the owner now (`node`) only on a miss
/// ([`moving::read_moving`]); a key found on `from` is queued to move in the background. `request_for`
/// makes the client's request as a node takes it; `pass` gets the answer that counts and its node, and
/// what it returns is returned.
#[allow(clippy::too_many_arguments, reason = "one read's parts")]
pub(super) fn read<R>(
    topology: &Arc<Topology>,
    key: &[u8],
    node: usize,
    from: &Upstream,
    request_for: impl Fn(&Upstream) -> Vec<u8>,
    rules: &[AnswerRules],
    move_max_body: usize,
    pass: impl FnOnce(&Upstream, Result<Answer<'_>, UpstreamError>) -> R,
) -> R {
    let to = &topology.current.upstreams[node];
    let (said, found) = moving::read_moving(topology, from, to, key, request_for, rules, pass);
    if found {
        batch_move::move_later(topology, key, move_max_body);
    }
    said
}

/// `POST /v1/reshard/move`: moves the keys of `body` (one percent-encoded key a line) and says how each
/// went, a word a line in the keys' order ([`crate::reshard::Outcome::word`]).
pub(super) fn move_keys(
    topology: &Topology,
    body: &[u8],
    limits: &Limits,
    max_body: usize,
) -> Result<String, HttpError> {
    topology.mover_working();
    let keys = batch_move::keys_of(body, limits)?;
    Ok(batch_move::move_batch(topology, &keys, max_body)?.join("\n"))
}
