//! The route table: which path and method mean which operation, decided from the head alone.
//!
//! [`resolve`] runs when a head arrives, before its body: it decides the body limit (so `413` and
//! `100 Continue` are sent before the body), the metrics label, and the key (percent-decoded, within the
//! limit). A service then runs the operation the [`Route`] names: the node from its engine, the proxy by
//! forwarding it. Both see the same table, so they cannot disagree on what a request means.

use std::borrow::Cow;

use super::error::HttpError;
use super::metrics::Op;
use super::percent;
use super::request::Method;
use super::word_scan;

/// Body limit for routes that do not use the body (it is still read and discarded).
const MAX_UNUSED_BODY: usize = 64 * 1024;
/// `GET /v1/kv` returns at most this many keys when `limit` is not given.
const DEFAULT_LIST_LIMIT: usize = 1000;
/// ... and at most this many when it is.
const MAX_LIST_LIMIT: usize = 100_000;
/// The longest `?ttl=`: ten years, in seconds.
pub const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;
/// The largest batch of Raft messages a member accepts (a snapshot travels in one).
const MAX_REPLICA_BODY: usize = 1 << 30;

/// Size limits from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest key, after percent-decoding.
    pub max_key_bytes: usize,
    /// Largest value.
    pub max_value_bytes: usize,
    /// Whether `GET /debug/panic` exists (tests of panic isolation only; hidden flag).
    pub panic_route: bool,
}

/// Where a listing's page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFrom<'b> {
    /// At the start of the listing.
    Start,
    /// `?cursor=`: the `next` of the page before, as it was given (opaque).
    Cursor(Cow<'b, str>),
    /// `?after=KEY`: after this key, in the listing's order.
    AfterKey(Cow<'b, [u8]>),
}

/// The query of `/v1/kv/{key}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvQuery {
    /// `?ttl=SECONDS` (PUT only): the value expires this long after the write.
    pub ttl: Option<u64>,
    /// `?stale` (GET and HEAD only): a member of a replica group answers from its own copy, without
    /// asking the leader whether it is current (a single node ignores it: its copy is the only one).
    pub stale: bool,
}

/// A change of a replica group's members: `POST /v1/replica/members?add=ID&url=URL` or `?remove=ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// A new voting member with this id, reached at this URL.
    Add(u64, String),
    /// The member with this id leaves.
    Remove(u64),
}

/// Where a request goes.
#[derive(Debug)]
pub enum Route<'b> {
    /// `/v1/kv/{key}`, with `?ttl=SECONDS` (PUT only) or `?stale` (GET and HEAD only).
    Kv(Cow<'b, [u8]>, KvQuery),
    /// `/v1/kv?prefix=&cursor=&limit=` (or `&after=KEY` instead of the cursor)
    List {
        /// Keys must start with this.
        prefix: Cow<'b, [u8]>,
        /// Where the page starts.
        from: ListFrom<'b>,
        /// At most this many keys.
        limit: usize,
    },
    /// `/{key}`: the original OTKV's JSON API.
    Compat(Cow<'b, [u8]>),
    /// `/healthz`
    Health,
    /// `/metrics`
    Metrics,
    /// `/v1/stats`
    Stats,
    /// `POST /v1/reshard/done`: a proxy's move to a new node set is over (a node has none: 404).
    ReshardDone,
    /// `POST /v1/reshard/move`: a proxy moves the keys of the body (one percent-encoded key a line) to
    /// their owners in the new node set now, and says how each went (`harness reshard` sends them; a
    /// node has none: 404).
    ReshardMove,
    /// `POST /v1/replica/raft`: Raft messages from another member of this node's replica group.
    ReplicaMessages,
    /// `POST /v1/replica/members`: add or remove a member of this node's replica group.
    ReplicaMembers(MemberChange),
    /// `POST /v1/replica/leader?to=ID`: hand the group's leadership to member `ID`.
    ReplicaLeader(u64),
    /// `/debug/panic` (only with the hidden `--test-panic-route`)
    Panic,
}

/// The outcome of routing: the metrics label, whether errors are JSON, and the route or why there is none.
#[derive(Debug)]
pub struct Routed<'b> {
    /// The `op` label.
    pub op: Op,
    /// Errors on this path are JSON (the compatible API), not plain text.
    pub json_errors: bool,
    /// The route, or the error to answer with.
    pub route: Result<Route<'b>, HttpError>,
}

impl Routed<'_> {
    /// The largest body this route accepts (decided from `Content-Length`, before reading it).
    pub fn max_body(&self, method: Method, limits: &Limits) -> usize {
        match (&self.route, method) {
            (Ok(Route::Kv(..)), Method::Put) => limits.max_value_bytes,
            // A batch of Raft messages may carry a whole snapshot of the group's data.
            (Ok(Route::ReplicaMessages), _) => MAX_REPLICA_BODY,
            // A JSON string may escape each byte; the decoded value is checked against the value limit.
            (Ok(Route::Compat(_)), Method::Post) => {
                limits.max_value_bytes.saturating_mul(2).saturating_add(1024)
            }
            _ => MAX_UNUSED_BODY,
        }
    }
}

/// Decides the route for `method` and `target`.
pub fn resolve<'b>(method: Method, target: &'b str, limits: &Limits) -> Routed<'b> {
    let plain = |op, route| Routed { op, json_errors: false, route };
    let allow = |allowed: &[Method], allow: &'static str| {
        if allowed.contains(&method) {
            Ok(())
        } else {
            Err(HttpError::MethodNotAllowed { allow })
        }
    };
    // The hot path first: `/v1/kv/` cannot contain a `?`, so the target's prefix is the path's.
    if let Some(rest) = target.strip_prefix("/v1/kv/") {
        let op = match method {
            Method::Get => Op::Get,
            Method::Head => Op::Head,
            Method::Put => Op::Put,
            Method::Delete => Op::Delete,
            _ => {
                let allow = "GET, HEAD, PUT, DELETE";
                return plain(Op::Other, Err(HttpError::MethodNotAllowed { allow }));
            }
        };
        // Most keys have nothing to split or decode: one scan says so, and the key is the rest as it is.
        if word_scan::first_of(rest.as_bytes(), b'/', b'%', b'?').is_none() {
            return plain(
                op,
                checked_key(Cow::Borrowed(rest.as_bytes()), limits).map(|k| Route::Kv(k, KvQuery::default())),
            );
        }
        let (segment, query) = split_query(rest);
        let route = key(segment, limits).and_then(|key| Ok(Route::Kv(key, kv_query(method, query)?)));
        return plain(op, route);
    }
    let (path, query) = split_query(target);
    match path {
        "/healthz" => {
            plain(Op::Admin, allow(&[Method::Get, Method::Head], "GET, HEAD").map(|()| Route::Health))
        }
        "/metrics" => {
            plain(Op::Admin, allow(&[Method::Get, Method::Head], "GET, HEAD").map(|()| Route::Metrics))
        }
        "/v1/stats" => {
            plain(Op::Admin, allow(&[Method::Get, Method::Head], "GET, HEAD").map(|()| Route::Stats))
        }
        "/debug/panic" if limits.panic_route => plain(Op::Other, Ok(Route::Panic)),
        "/v1/replica/raft" => {
            plain(Op::Admin, allow(&[Method::Post], "POST").map(|()| Route::ReplicaMessages))
        }
        "/v1/replica/members" => plain(
            Op::Admin,
            allow(&[Method::Post], "POST").and_then(|()| member_query(query)).map(Route::ReplicaMembers),
        ),
        "/v1/replica/leader" => plain(
            Op::Admin,
            allow(&[Method::Post], "POST").and_then(|()| leader_query(query)).map(Route::ReplicaLeader),
        ),
        "/v1/reshard/done" => plain(Op::Admin, allow(&[Method::Post], "POST").map(|()| Route::ReshardDone)),
        "/v1/reshard/move" => plain(Op::Admin, allow(&[Method::Post], "POST").map(|()| Route::ReshardMove)),
        "/v1/kv" => {
            plain(Op::Scan, allow(&[Method::Get, Method::Head], "GET, HEAD").and_then(|()| list_query(query)))
        }
        _ => {
            if path == "/v1" || path.starts_with("/v1/") {
                return plain(Op::Other, Err(HttpError::NoRoute));
            }
            // The compatible API: any other single path segment is a key.
            let segment = &path[1..];
            let op = match method {
                Method::Get | Method::Head => Op::CompatGet,
                Method::Post => Op::CompatPost,
                Method::Delete => Op::CompatDelete,
                _ => Op::Other,
            };
            let route =
                allow(&[Method::Get, Method::Head, Method::Post, Method::Delete], "GET, HEAD, POST, DELETE")
                    .and_then(|()| key(segment, limits))
                    .map(Route::Compat);
            Routed { op, json_errors: true, route }
        }
    }
}

/// The path and the query of a target (`""` when there is none). A byte search: `str::split_once(char)`
/// sets up a general searcher, which costs more than scanning a short target; slicing at an ASCII byte is
/// always at a character boundary.
fn split_query(target: &str) -> (&str, &str) {
    match target.bytes().position(|b| b == b'?') {
        Some(at) => (&target[..at], &target[at + 1..]),
        None => (target, ""),
    }
}

/// A key is exactly one percent-encoded path segment, non-empty and within the limit.
#[allow(clippy::needless_bitwise_bool, reason = "`|` keeps the fold branch-free, so it vectorises")]
fn key<'b>(segment: &'b str, limits: &Limits) -> Result<Cow<'b, [u8]>, HttpError> {
    // One pass, without early exits (so the compiler vectorises it), finds both what makes it no key (a
    // `/`) and whether there is anything to decode.
    let (slash, escaped) =
        segment.bytes().fold((false, false), |(slash, pct), b| (slash | (b == b'/'), pct | (b == b'%')));
    if slash {
        return Err(HttpError::NoRoute);
    }
    let key = if escaped {
        percent::decode(segment, false)
            .ok_or_else(|| HttpError::BadRequest("invalid percent-encoding in key".into()))?
    } else {
        Cow::Borrowed(segment.as_bytes())
    };
    checked_key(key, limits)
}

/// A decoded key, if it is not empty and within the limit.
fn checked_key<'b>(key: Cow<'b, [u8]>, limits: &Limits) -> Result<Cow<'b, [u8]>, HttpError> {
    if key.is_empty() {
        return Err(HttpError::EmptyKey);
    }
    if key.len() > limits.max_key_bytes {
        return Err(HttpError::KeyTooLong { len: key.len(), max: limits.max_key_bytes });
    }
    Ok(key)
}

/// The query of `/v1/kv/{key}`: `ttl` only on PUT, an integer number of seconds from 1 to ten years;
/// `stale` (with no value, or `true`) only on GET and HEAD.
fn kv_query(method: Method, query: &str) -> Result<KvQuery, HttpError> {
    let mut ttl = None;
    let mut stale = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "stale" if matches!(method, Method::Get | Method::Head) => {
                stale = match value {
                    "" | "true" => true,
                    "false" => false,
                    _ => return Err(HttpError::BadRequest("stale takes no value (or true, false)".into())),
                };
            }
            "stale" => return Err(HttpError::BadRequest("stale applies to GET and HEAD only".into())),
            "ttl" if method == Method::Put => {
                let secs = value.parse::<u64>().ok().filter(|s| (1..=MAX_TTL_SECS).contains(s));
                ttl = Some(secs.ok_or_else(|| {
                    HttpError::BadRequest(format!(
                        "ttl must be a whole number of seconds, 1..={MAX_TTL_SECS}"
                    ))
                })?);
            }
            "ttl" => return Err(HttpError::BadRequest("ttl applies to PUT only".into())),
            other => return Err(HttpError::BadRequest(format!("unknown query parameter `{other}`"))),
        }
    }
    Ok(KvQuery { ttl, stale })
}

/// A member id: a whole number from 1 (Raft's 0 means "none").
fn member_id(name: &str, value: &str) -> Result<u64, HttpError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| HttpError::BadRequest(format!("{name} must be a member id, a whole number from 1")))
}

/// `?add=ID&url=URL` or `?remove=ID`.
fn member_query(query: &str) -> Result<MemberChange, HttpError> {
    let (mut add, mut remove, mut url) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "add" => add = Some(member_id(name, value)?),
            "remove" => remove = Some(member_id(name, value)?),
            "url" => {
                let text = percent::decode(value, true)
                    .and_then(|b| String::from_utf8(b.into_owned()).ok())
                    .ok_or_else(|| HttpError::BadRequest("invalid percent-encoding in url".into()))?;
                url = Some(text);
            }
            other => return Err(HttpError::BadRequest(format!("unknown query parameter `{other}`"))),
        }
    }
    match (add, remove, url) {
        (Some(id), None, Some(url)) => Ok(MemberChange::Add(id, url)),
        (None, Some(id), None) => Ok(MemberChange::Remove(id)),
        _ => Err(HttpError::BadRequest("give add=ID&url=URL, or remove=ID".into())),
    }
}

/// `?to=ID`.
fn leader_query(query: &str) -> Result<u64, HttpError> {
    match query.split_once('=') {
        Some(("to", value)) => member_id("to", value),
        _ => Err(HttpError::BadRequest("give to=ID, the member to hand leadership to".into())),
    }
}

/// The body of a listing, the node's and the proxy's: `{"keys": [...]}` with each key percent-encoded,
/// and, unless the listing is over, `"next"`: the cursor of the next page. Written straight into one
/// buffer (a page of a thousand keys costs no `String` or JSON value per key): a percent-encoded key
/// ([`super::percent::encode_segment`]) has no character JSON escapes, so it goes between quotes as is.
pub fn listing_body(keys: &[Vec<u8>], next: Option<&str>) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + keys.iter().map(|k| k.len() + 3).sum::<usize>());
    body.extend_from_slice(b"{\"keys\":[");
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.push(b'"');
        super::percent::encode_segment_into(key, &mut body);
        body.push(b'"');
    }
    body.push(b']');
    if let Some(next) = next {
        body.extend_from_slice(b",\"next\":");
        body.extend_from_slice(serde_json::Value::from(next).to_string().as_bytes());
    }
    body.push(b'}');
    body
}

fn list_query(query: &str) -> Result<Route<'_>, HttpError> {
    let mut prefix: Cow<'_, [u8]> = Cow::Borrowed(b"");
    let mut from = ListFrom::Start;
    let mut limit = DEFAULT_LIST_LIMIT;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let both = || HttpError::BadRequest("give either cursor or after, not both".into());
        match name {
            "prefix" => {
                prefix = percent::decode(value, true)
                    .ok_or_else(|| HttpError::BadRequest("invalid percent-encoding in prefix".into()))?;
            }
            "after" => {
                if from != ListFrom::Start {
                    return Err(both());
                }
                from = ListFrom::AfterKey(
                    percent::decode(value, true)
                        .ok_or_else(|| HttpError::BadRequest("invalid percent-encoding in after".into()))?,
                );
            }
            "cursor" => {
                if from != ListFrom::Start {
                    return Err(both());
                }
                let bad =
                    || HttpError::BadRequest("invalid cursor: give the `next` of the page before".into());
                let text = match percent::decode(value, true).ok_or_else(bad)? {
                    Cow::Borrowed(b) => Cow::Borrowed(std::str::from_utf8(b).map_err(|_| bad())?),
                    Cow::Owned(b) => Cow::Owned(String::from_utf8(b).map_err(|_| bad())?),
                };
                from = ListFrom::Cursor(text);
            }
            "limit" => {
                limit =
                    value.parse::<usize>().ok().filter(|&n| n <= MAX_LIST_LIMIT).ok_or_else(|| {
                        HttpError::BadRequest(format!("limit must be 0..={MAX_LIST_LIMIT}"))
                    })?;
            }
            other => return Err(HttpError::BadRequest(format!("unknown query parameter `{other}`"))),
        }
    }
    Ok(Route::List { prefix, from, limit })
}

#[cfg(test)]
mod tests {
    use super::listing_body;
    use crate::front::percent;
    use proptest::prelude::*;

    /// The listing as `serde_json` writes it: the reference the hand-written one is checked against.
    fn listing_json(keys: Vec<String>, next: Option<String>) -> serde_json::Value {
        match next {
            Some(next) => serde_json::json!({ "keys": keys, "next": next }),
            None => serde_json::json!({ "keys": keys }),
        }
    }

    proptest! {
        /// The hand-written listing is the very JSON `serde_json` writes, for any keys
        /// (quotes, backslashes, control bytes and non-UTF-8 included), with a next cursor or not.
        #[test]
        fn listing_body_is_listing_json(
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..12), 0..8),
            next in proptest::option::of(".{0,12}"),
        ) {
            let written: serde_json::Value = serde_json::from_slice(&listing_body(&keys, next.as_deref()))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let encoded = keys.iter().map(|k| percent::encode_segment(k)).collect();
            prop_assert_eq!(written, listing_json(encoded, next));
        }
    }
}
