//! The API: which path and method do what, and the handlers that call the engine.
//!
//! Routing happens twice per request, both times without touching the engine: once when the head arrives
//! ([`resolve`] decides the body limit, so `413` and `100 Continue` are sent before the body), and once when
//! the whole request is in ([`handle`] runs the operation inside the connection's engine batch).

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use otkv_engine::{Batch, Condition, Engine, Meta, PutOutcome};

use crate::conn::Responder;
use crate::error::HttpError;
use crate::metrics::{Metrics, Op};
use crate::pct;
use crate::request::{Method, Preconditions};
use crate::response::{ContentType, JSON, OCTET_STREAM, PROMETHEUS, TEXT};
use crate::swar;

/// Body limit for routes that do not use the body (it is still read and discarded).
const MAX_UNUSED_BODY: usize = 64 * 1024;
/// `GET /v1/kv` returns at most this many keys when `limit` is not given.
const DEFAULT_LIST_LIMIT: usize = 1000;
/// ... and at most this many when it is.
const MAX_LIST_LIMIT: usize = 100_000;
/// The longest `?ttl=`: ten years, in seconds.
const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

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

/// Where a request goes.
#[derive(Debug)]
pub enum Route<'b> {
    /// `/v1/kv/{key}`, with `?ttl=SECONDS` (PUT only).
    Kv(Cow<'b, [u8]>, Option<u64>),
    /// `/v1/kv?prefix=&limit=`
    List {
        /// Keys must start with this.
        prefix: Cow<'b, [u8]>,
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
        if swar::first_of(rest.as_bytes(), b'/', b'%', b'?').is_none() {
            return plain(
                op,
                checked_key(Cow::Borrowed(rest.as_bytes()), limits).map(|k| Route::Kv(k, None)),
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
fn key<'b>(segment: &'b str, limits: &Limits) -> Result<Cow<'b, [u8]>, HttpError> {
    // One pass, without early exits (so the compiler vectorises it), finds both what makes it no key (a
    // `/`) and whether there is anything to decode.
    let (slash, escaped) =
        segment.bytes().fold((false, false), |(slash, pct), b| (slash | (b == b'/'), pct | (b == b'%')));
    if slash {
        return Err(HttpError::NoRoute);
    }
    let key = if escaped {
        pct::decode(segment, false)
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

/// The query of `/v1/kv/{key}`: only `ttl`, only on PUT, an integer number of seconds from 1 to ten years.
fn kv_query(method: Method, query: &str) -> Result<Option<u64>, HttpError> {
    let mut ttl = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
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
    Ok(ttl)
}

/// An entity-tag list as `If-Match` / `If-None-Match` carry it (RFC 9110 §8.8.3, §13.1.1): `*`, or
/// versions. A weak tag (`W/"5"`) is kept, marked weak: `If-Match` never matches it.
#[derive(Debug, PartialEq, Eq)]
enum Tags {
    Any,
    List(Vec<(u64, bool)>),
}

impl Tags {
    fn parse(value: &[u8]) -> Result<Tags, HttpError> {
        let bad = || HttpError::BadRequest("malformed entity-tag: expected * or \"VERSION\"".into());
        let text = std::str::from_utf8(value).map_err(|_| bad())?.trim();
        if text == "*" {
            return Ok(Tags::Any);
        }
        let mut tags = Vec::new();
        for item in text.split(',').map(str::trim) {
            let (weak, quoted) = match item.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            let inner = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')).ok_or_else(bad)?;
            if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            tags.push((inner.parse().map_err(|_| bad())?, weak));
        }
        Ok(Tags::List(tags))
    }

    /// The engine condition for `If-Match`: one strong tag at most (a list cannot be one atomic check).
    fn if_match(&self) -> Result<Condition, HttpError> {
        match self {
            Tags::Any => Ok(Condition::Present),
            Tags::List(tags) => match tags.as_slice() {
                [(v, false)] => Ok(Condition::Version(*v)),
                // A weak tag never matches under If-Match's strong comparison.
                [(_, true)] => Err(HttpError::PreconditionFailed("If-Match names a weak entity-tag")),
                _ => Err(HttpError::BadRequest("If-Match takes * or one entity-tag".into())),
            },
        }
    }

    /// Whether `If-None-Match` matches `version` (weak comparison).
    fn matches(&self, version: u64) -> bool {
        match self {
            Tags::Any => true,
            Tags::List(tags) => tags.iter().any(|&(v, _)| v == version),
        }
    }
}

/// The write condition of a PUT or DELETE from its preconditions.
fn write_condition(method: Method, pre: &Preconditions<'_>) -> Result<Condition, HttpError> {
    match (pre.if_match, pre.if_none_match) {
        (Some(_), Some(_)) => Err(HttpError::BadRequest("send If-Match or If-None-Match, not both".into())),
        (Some(m), None) => Tags::parse(m)?.if_match(),
        (None, Some(n)) if method == Method::Put => match Tags::parse(n)? {
            Tags::Any => Ok(Condition::Absent),
            Tags::List(_) => Err(HttpError::BadRequest("If-None-Match on PUT takes * (create only)".into())),
        },
        (None, Some(_)) => Err(HttpError::BadRequest("If-None-Match applies to GET, HEAD and PUT".into())),
        (None, None) => Ok(Condition::Always),
    }
}

fn list_query(query: &str) -> Result<Route<'_>, HttpError> {
    let mut prefix: Cow<'_, [u8]> = Cow::Borrowed(b"");
    let mut limit = DEFAULT_LIST_LIMIT;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "prefix" => {
                prefix = pct::decode(value, true)
                    .ok_or_else(|| HttpError::BadRequest("invalid percent-encoding in prefix".into()))?;
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
    Ok(Route::List { prefix, limit })
}

/// Encodes a JSON document as the response body.
fn send_json(resp: &mut Responder<'_>, status: u16, value: serde_json::Value) -> u16 {
    resp.send(status, Some(JSON), value.to_string().as_bytes())
}

/// What handlers can reach besides the request.
#[derive(Debug)]
pub struct Context<'a> {
    /// The engine (for `len` and the configuration; operations go through the batch).
    pub engine: &'a Engine,
    /// The server's metrics.
    pub metrics: &'a Metrics,
    /// The limits.
    pub limits: &'a Limits,
    /// Connections holding a request not yet answered (read only by `/metrics`).
    pub in_flight: &'a AtomicUsize,
}

#[derive(serde::Deserialize)]
struct CompatValue {
    value: String,
}

/// Runs the request and encodes its successful response through `resp`, returning the status; a failure is
/// returned for the caller to encode. Must not block or yield: it runs inside the connection's engine batch.
pub fn handle(
    route: &Route<'_>,
    method: Method,
    pre: &Preconditions<'_>,
    body: &[u8],
    batch: &Batch<'_>,
    ctx: &Context<'_>,
    resp: &mut Responder<'_>,
) -> Result<u16, HttpError> {
    Ok(match route {
        Route::Kv(key, ttl) => match method {
            Method::Put => {
                let cond = write_condition(method, pre)?;
                let expires_ms = ttl.map_or(0, |secs| otkv_engine::now_ms().saturating_add(secs * 1000));
                let Some((outcome, version)) = batch.put_if(key, body, cond, expires_ms)? else {
                    return Err(HttpError::PreconditionFailed(if cond == Condition::Absent {
                        "the key exists"
                    } else {
                        "the key's version differs (or it is absent)"
                    }));
                };
                let meta = Some(Meta { version, expires_ms });
                match outcome {
                    PutOutcome::Created => resp.send_entry(201, Some(TEXT), b"", meta),
                    PutOutcome::Replaced => resp.send_entry(204, None, b"", meta),
                }
            }
            Method::Delete => match batch.delete_if(key, write_condition(method, pre)?)? {
                Some(true) => resp.send(204, None, b""),
                Some(false) => return Err(HttpError::KeyNotFound),
                None => {
                    return Err(HttpError::PreconditionFailed("the key's version differs (or it is absent)"))
                }
            },
            _ => {
                let not_modified = match pre.if_none_match {
                    Some(v) => Some(Tags::parse(v)?),
                    None => None,
                };
                batch
                    .get_entry_with(key, |meta, value| match &not_modified {
                        Some(tags) if tags.matches(meta.version) => {
                            resp.send_entry(304, None, b"", Some(meta))
                        }
                        _ => resp.send_entry(200, Some(OCTET_STREAM), value, Some(meta)),
                    })?
                    .ok_or_else(|| HttpError::KeyNotFound)?
            }
        },
        Route::List { prefix, limit } => {
            let keys: Vec<String> =
                batch.scan_prefix(prefix, *limit)?.iter().map(|k| pct::encode_segment(k)).collect();
            send_json(resp, 200, serde_json::json!({ "keys": keys }))
        }
        Route::Compat(key) => match method {
            Method::Post => {
                let CompatValue { value } = serde_json::from_slice(body).map_err(|e| {
                    HttpError::BadRequest(format!("body must be JSON {{\"value\": \"...\"}}: {e}"))
                })?;
                if value.len() > ctx.limits.max_value_bytes {
                    return Err(HttpError::PayloadTooLarge {
                        len: value.len() as u64,
                        max: ctx.limits.max_value_bytes,
                    });
                }
                let written = batch.put_if(key, value.as_bytes(), Condition::Always, 0)?;
                let meta = written.map(|(_, version)| Meta { version, expires_ms: 0 });
                let message = format!("stored key '{}'", String::from_utf8_lossy(key));
                let doc = serde_json::json!({ "message": message }).to_string();
                resp.send_entry(200, Some(JSON), doc.as_bytes(), meta)
            }
            Method::Delete => {
                if !batch.delete(key)? {
                    return Err(HttpError::KeyNotFound);
                }
                let message = format!("deleted key '{}'", String::from_utf8_lossy(key));
                send_json(resp, 200, serde_json::json!({ "message": message }))
            }
            _ => {
                let read =
                    batch.get_entry_with(key, |m, v| (m, std::str::from_utf8(v).map(str::to_owned)))?;
                let (meta, text) = read.ok_or_else(|| HttpError::KeyNotFound)?;
                let text = text.map_err(|_| HttpError::ValueNotText)?;
                let doc = serde_json::json!({ "value": text }).to_string();
                resp.send_entry(200, Some(JSON), doc.as_bytes(), Some(meta))
            }
        },
        // A node that refuses writes is not healthy: a load balancer must stop sending it writes.
        Route::Health => match ctx.engine.write_refusal() {
            None => resp.send(200, Some(TEXT), b"ok\n"),
            Some(refusal) => return Err(HttpError::Unhealthy(refusal.to_string())),
        },
        Route::Metrics => {
            let mut text = ctx.metrics.prometheus(Some(ctx.engine.len()), ctx.in_flight.load(Relaxed));
            if let Some(memory) = ctx.engine.memory_stats() {
                crate::metrics::write_memory_prometheus(&mut text, &memory);
            }
            crate::metrics::write_refusal_prometheus(&mut text, ctx.engine.write_refusal().as_ref());
            resp.send(200, Some(PROMETHEUS), text.as_bytes())
        }
        Route::Stats => {
            let config = ctx.engine.config();
            let (kind, durability) = (config.kind.as_str(), config.durability.as_str());
            let doc = ctx.metrics.stats_json(
                kind,
                durability,
                ctx.engine.len(),
                ctx.engine.memory_stats(),
                ctx.engine.write_refusal(),
            );
            resp.send(200, Some(JSON), doc.as_bytes())
        }
        Route::Panic => panic!("panic requested through /debug/panic"),
    })
}

/// The body of an error response: JSON `{"error": ...}` on the compatible API, plain text elsewhere.
pub fn error_body(err: &HttpError, json_errors: bool) -> (ContentType, Vec<u8>) {
    if json_errors {
        (JSON, serde_json::json!({ "error": err.to_string() }).to_string().into_bytes())
    } else {
        (TEXT, format!("{err}\n").into_bytes())
    }
}
