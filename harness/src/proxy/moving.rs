//! A key's move during a change of node set, made by the proxy before it forwards a request for that
//! key: the mover's own conditional copy and delete ([`crate::reshard::move_key`]), over the proxy's
//! pooled connections to the two nodes.

use otkv_adapter_http::front::{pct, HttpError};

use super::upstream::Upstream;
use crate::answer::AnswerRules;
use crate::cost::HttpAnswer;
use crate::reshard::{move_key_settled, Side};

/// One request to `up` on a pooled connection: its answer, read by the strict reader.
fn call(
    up: &Upstream,
    method: &str,
    path: &str,
    headers: &[String],
    body: &[u8],
    max_body: usize,
) -> Result<HttpAnswer, String> {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", up.host()).into_bytes();
    request.extend_from_slice(up.authorization().unwrap_or_default());
    for h in headers {
        request.extend_from_slice(h.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    let mut group = up.send(&request, 1, Vec::new());
    group.read_answers(&[AnswerRules::body_up_to(max_body)], &request);
    let answer = group.next_answer().map_err(|e| up.error(e).to_string())?;
    // Already read by the strict reader: one answer, its head and exactly its body.
    HttpAnswer::parse(answer.raw).map_err(|e| format!("{}: {e}", up.who()))
}

/// Moves `key` from `from` (its owner in the previous set) to `to` (its owner now), if `from` still holds
/// it; a failure is a 502 naming the nodes, and the request is not forwarded.
pub(super) fn move_one(from: &Upstream, to: &Upstream, key: &[u8], max_body: usize) -> Result<(), HttpError> {
    let path = format!("/v1/kv/{}", pct::encode_segment(key));
    let mut send = |side: Side, method: &str, path: &str, headers: &[String], body: &[u8]| {
        let up = match side {
            Side::From => from,
            Side::To => to,
        };
        call(up, method, path, headers, body, max_body)
    };
    move_key_settled(&mut send, &path)
        .map(|_| ())
        .map_err(|e| HttpError::BadGateway(format!("moving {path} from {} to {}: {e}", from.who(), to.who())))
}
