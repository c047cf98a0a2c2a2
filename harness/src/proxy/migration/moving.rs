//! A key's move during a change of node set, made by the proxy: the mover's own conditional copy and
//! delete ([`crate::reshard::move_key`]), over the proxy's pooled connections to the two nodes.
//!
//! - A **write** (or delete) of a key not moved yet moves it first, then goes to the new owner, so
//!   conditions are checked against the value that counts and nothing is left behind to come back.
//! - A **read** does not wait for a move (three node round trips, which would make every first read of a
//!   moving key four times slower), nor for a claim: it asks the previous owner, and the new one only if
//!   the previous has no value ([`read_moving`]). A key found on its previous owner is queued to move in
//!   the background ([`super::batch_move::move_later`]); one found on neither is settled.
//! - `POST /v1/reshard/move` (the mover's) moves a batch of keys now and says how each went
//!   ([`super::batch_move`]).

use std::sync::Arc;

use otkv_adapter_http::front::{percent, HttpError};

use crate::cost::HttpAnswer;
use crate::proxy::topology::Topology;
use crate::proxy::upstream::{Answer, Upstream, UpstreamError};
use crate::reshard::{move_key_settled, Outcome, Side};
use crate::response_head::AnswerRules;

/// The bytes of one request the proxy makes itself to `up`.
pub(super) fn request(up: &Upstream, method: &str, path: &str, headers: &[String], body: &[u8]) -> Vec<u8> {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", up.host()).into_bytes();
    request.extend_from_slice(up.authorization().unwrap_or_default());
    for h in headers {
        request.extend_from_slice(h.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    request
}

/// One request to `up` on a pooled connection: its answer, read by the strict reader.
pub(super) fn call(
    up: &Upstream,
    method: &str,
    path: &str,
    headers: &[String],
    body: &[u8],
    max_body: usize,
) -> Result<HttpAnswer, String> {
    let request = request(up, method, path, headers, body);
    let mut group = up.send(&request, 1, Vec::new());
    group.read_answers(&[AnswerRules::body_up_to(max_body)], &request);
    let answer = group.next_answer().map_err(|e| up.error(e).to_string())?;
    // Already read by the strict reader: one answer, its head and exactly its body.
    HttpAnswer::parse(answer.raw).map_err(|e| format!("{}: {e}", up.who()))
}

/// Moves `key` from `from` (its owner in the previous set) to `to` (its owner now), if `from` still holds
/// it; a failure is a 502 naming the nodes, and the request is not forwarded.
pub(super) fn move_one(
    from: &Upstream,
    to: &Upstream,
    key: &[u8],
    max_body: usize,
) -> Result<Outcome, HttpError> {
    let path = format!("/v1/kv/{}", percent::encode_segment(key));
    let mut send = |side: Side, method: &str, path: &str, headers: &[String], body: &[u8]| {
        let up = match side {
            Side::From => from,
            Side::To => to,
        };
        call(up, method, path, headers, body, max_body)
    };
    move_key_settled(&mut send, &path)
        .map(|(outcome, _)| outcome)
        .map_err(|e| HttpError::BadGateway(format!("moving {path} from {} to {}: {e}", from.who(), to.who())))
}

/// A read (`GET`, `HEAD`) of `key`, whose owner changed from `from` to `to` and which this proxy has not
/// settled. `request_for` makes the client's request as a node takes it (with that node's token); only
/// the nodes asked get one. `pass` gets the answer that counts and the node it came from. Returns what `pass`
/// returned, and whether the key was found on its previous owner (to be moved).
///
/// The previous owner is asked first, and its answer counts unless it has no value: then the new owner
/// is asked. An unsettled key's new owner holds no newer value (a write of a moving key moves it first,
/// which settles it), so a key still on its previous owner is answered in one request, like any other,
/// and queued to move. A read takes no claim, so it never waits for a move: a move copies before it
/// deletes, so a read that misses on the previous owner after the delete asks the new owner after the
/// copy. A key on neither is settled.
pub(super) fn read_moving<R>(
    topology: &Arc<Topology>,
    from: &Upstream,
    to: &Upstream,
    key: &[u8],
    request_for: impl Fn(&Upstream) -> Vec<u8>,
    rules: &[AnswerRules],
    pass: impl FnOnce(&Upstream, Result<Answer<'_>, UpstreamError>) -> R,
) -> (R, bool) {
    let missing = |a: &Result<Answer<'_>, UpstreamError>| matches!(a, Ok(a) if a.status == 404);
    let from_request = request_for(from);
    let mut old = from.send(&from_request, 1, Vec::new());
    old.read_answers(rules, &from_request);
    let old = old.next_answer();
    if !missing(&old) {
        // 304 and 412 answer a condition on a value the node holds.
        let holds = matches!(&old, Ok(a) if matches!(a.status, 200 | 304 | 412));
        return (pass(from, old), holds);
    }
    let to_request = request_for(to);
    let mut new = to.send(&to_request, 1, Vec::new());
    new.read_answers(rules, &to_request);
    let new = new.next_answer();
    if missing(&new) {
        topology.claims.settle(key);
    }
    (pass(to, new), false)
}
