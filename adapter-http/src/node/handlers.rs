//! The node's operations, one function each, run inside the connection's engine batch.
//!
//! [`handle`] picks the function for a [`Route`] and method; each one calls the engine and encodes its
//! success through the [`Responder`], or returns the error for the front door to encode. None may block
//! or yield: they run inside [`otkv_engine::Engine::batch`], which holds the thread's epoch guard.

use std::sync::atomic::Ordering::Relaxed;

use otkv_engine::{Batch, Condition, Cursor, Engine, Meta, PutOutcome};

use super::preconditions::{write_condition, Tags};
use super::stats;
use crate::front::{
    EntryMeta, Front, HttpError, ListFrom, Method, Preconditions, Responder, Route, JSON, OCTET_STREAM,
    PROMETHEUS, TEXT,
};

/// What the handlers reach besides the request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Context<'a> {
    /// The engine (for `len`, health and the configuration; operations go through the batch).
    pub engine: &'a Engine,
    /// The front door: limits, metrics, connections in flight.
    pub front: &'a Front,
}

/// Runs the operation `route` and `method` name, with the request's preconditions and body.
#[inline]
pub(super) fn handle(
    route: &Route<'_>,
    method: Method,
    pre: &Preconditions<'_>,
    body: &[u8],
    batch: &Batch<'_>,
    ctx: Context<'_>,
    resp: &mut Responder<'_>,
) -> Result<u16, HttpError> {
    match route {
        Route::Kv(key, query) => match method {
            Method::Put => put(key, query.ttl, body, pre, batch, resp),
            Method::Delete => delete(key, pre, batch, resp),
            // GET and HEAD (the route admits no other method here).
            _ => get(key, pre, batch, resp),
        },
        Route::List { prefix, from, limit } => list(ctx.engine, prefix, from, *limit, resp),
        Route::Compat(key) => match method {
            Method::Post => compat_post(key, body, ctx, batch, resp),
            Method::Delete => compat_delete(key, batch, resp),
            _ => compat_get(key, batch, resp),
        },
        Route::Health => health(ctx.engine, resp),
        Route::Metrics => Ok(metrics(ctx, resp)),
        Route::Stats => Ok(stats(ctx, resp)),
        Route::ReshardDone
        | Route::ReshardMove
        | Route::ReplicaMessages
        | Route::ReplicaMembers(_)
        | Route::ReplicaLeader(_) => Err(HttpError::NoRoute),
        Route::Panic => panic!("panic requested through /debug/panic"),
    }
}

/// The engine's metadata in the front door's terms (`ETag`, `Expires`).
fn entry(meta: Meta) -> EntryMeta {
    EntryMeta { version: meta.version, expires_ms: meta.expires_ms }
}

/// `PUT /v1/kv/{key}[?ttl=]`: 201 when created, 204 when replaced, with the new `ETag`.
#[inline]
fn put(
    key: &[u8],
    ttl: Option<u64>,
    value: &[u8],
    pre: &Preconditions<'_>,
    batch: &Batch<'_>,
    resp: &mut Responder<'_>,
) -> Result<u16, HttpError> {
    let cond = write_condition(Method::Put, pre)?;
    let expires_ms = ttl.map_or(0, |secs| otkv_engine::now_ms().saturating_add(secs * 1000));
    let Some((outcome, version)) = batch.put_if(key, value, cond, expires_ms)? else {
        return Err(HttpError::PreconditionFailed(if cond == Condition::Absent {
            "the key exists"
        } else {
            "the key's version differs (or it is absent)"
        }));
    };
    let meta = Some(EntryMeta { version, expires_ms });
    Ok(match outcome {
        PutOutcome::Created => resp.send_entry(201, Some(TEXT), b"", meta),
        PutOutcome::Replaced => resp.send_entry(204, None, b"", meta),
    })
}

/// `DELETE /v1/kv/{key}`: 204, or 404 when absent.
fn delete(
    key: &[u8],
    pre: &Preconditions<'_>,
    batch: &Batch<'_>,
    resp: &mut Responder<'_>,
) -> Result<u16, HttpError> {
    match batch.delete_if(key, write_condition(Method::Delete, pre)?)? {
        Some(true) => Ok(resp.send(204, None, b"")),
        Some(false) => Err(HttpError::KeyNotFound),
        None => Err(HttpError::PreconditionFailed("the key's version differs (or it is absent)")),
    }
}

/// `GET`/`HEAD /v1/kv/{key}`: the value, read in place into the response; 304 when `If-None-Match`
/// names its version.
#[inline]
fn get(
    key: &[u8],
    pre: &Preconditions<'_>,
    batch: &Batch<'_>,
    resp: &mut Responder<'_>,
) -> Result<u16, HttpError> {
    let not_modified = match pre.if_none_match {
        Some(v) => Some(Tags::parse(v)?),
        None => None,
    };
    let sent = batch.get_entry_with(key, |meta, value| match &not_modified {
        Some(tags) if tags.matches(meta.version) => resp.send_entry(304, None, b"", Some(entry(meta))),
        _ => resp.send_entry(200, Some(OCTET_STREAM), value, Some(entry(meta))),
    })?;
    // A `match`, not `ok_or`: that would build the error, and drop it, on every hit (13 instructions).
    match sent {
        Some(status) => Ok(status),
        None => Err(HttpError::KeyNotFound),
    }
}

/// `GET /v1/kv?prefix=&cursor=&limit=`: a page of keys, and unless the listing is over, the cursor of the
/// next one (`next`).
fn list(
    engine: &Engine,
    prefix: &[u8],
    from: &ListFrom<'_>,
    limit: usize,
    resp: &mut Responder<'_>,
) -> Result<u16, HttpError> {
    Ok(send_listing_body(&listing_page(engine, prefix, from, limit)?, resp))
}

/// A listing's page, as the body of its answer ([`crate::front::listing_body`]).
pub(super) fn listing_page(
    engine: &Engine,
    prefix: &[u8],
    from: &ListFrom<'_>,
    limit: usize,
) -> Result<Vec<u8>, HttpError> {
    let cursor = match from {
        ListFrom::Start => None,
        ListFrom::AfterKey(key) => Some(Cursor::after_key(key)),
        ListFrom::Cursor(text) => Some(Cursor::parse(text).ok_or_else(|| {
            HttpError::BadRequest("invalid cursor: give the `next` of the page before".into())
        })?),
    };
    let page = engine.list(prefix, cursor.as_ref(), limit)?;
    let next = page.next.map(|c| c.to_string());
    Ok(crate::front::listing_body(&page.keys, next.as_deref()))
}

/// A listing's answer, its body written already ([`crate::front::listing_body`]).
pub(super) fn send_listing_body(body: &[u8], resp: &mut Responder<'_>) -> u16 {
    resp.send(200, Some(JSON), body)
}

#[derive(serde::Deserialize)]
struct CompatValue {
    value: String,
}

/// `POST /{key}` with `{"value": "..."}`: the original OTKV's write.
fn compat_post(
    key: &[u8],
    body: &[u8],
    ctx: Context<'_>,
    batch: &Batch<'_>,
    resp: &mut Responder<'_>,
) -> Result<u16, HttpError> {
    let value = compat_value(body, ctx.front)?;
    let written = batch.put_if(key, &value, Condition::Always, 0)?;
    let meta = written.map(|(_, version)| EntryMeta { version, expires_ms: 0 });
    Ok(compat_stored(key, meta, resp))
}

/// The value of a compatible-API write's body, `{"value": "..."}`, within the value limit.
pub(super) fn compat_value(body: &[u8], front: &Front) -> Result<Vec<u8>, HttpError> {
    let CompatValue { value } = serde_json::from_slice(body)
        .map_err(|e| HttpError::BadRequest(format!("body must be JSON {{\"value\": \"...\"}}: {e}")))?;
    let max = front.limits.max_value_bytes;
    if value.len() > max {
        return Err(HttpError::PayloadTooLarge { len: value.len() as u64, max });
    }
    Ok(value.into_bytes())
}

/// The answer to a compatible-API write that stored its value.
pub(super) fn compat_stored(key: &[u8], meta: Option<EntryMeta>, resp: &mut Responder<'_>) -> u16 {
    let message = format!("stored key '{}'", String::from_utf8_lossy(key));
    let doc = serde_json::json!({ "message": message }).to_string();
    resp.send_entry(200, Some(JSON), doc.as_bytes(), meta)
}

/// `DELETE /{key}`: the original OTKV's delete.
fn compat_delete(key: &[u8], batch: &Batch<'_>, resp: &mut Responder<'_>) -> Result<u16, HttpError> {
    if !batch.delete(key)? {
        return Err(HttpError::KeyNotFound);
    }
    Ok(compat_deleted(key, resp))
}

/// The answer to a compatible-API delete that removed its key.
pub(super) fn compat_deleted(key: &[u8], resp: &mut Responder<'_>) -> u16 {
    let message = format!("deleted key '{}'", String::from_utf8_lossy(key));
    send_json(resp, 200, &serde_json::json!({ "message": message }))
}

/// `GET /{key}`: `{"value": "..."}`; 406 when the value is not text.
fn compat_get(key: &[u8], batch: &Batch<'_>, resp: &mut Responder<'_>) -> Result<u16, HttpError> {
    let read = batch.get_entry_with(key, |m, v| (m, std::str::from_utf8(v).map(str::to_owned)))?;
    let Some((meta, text)) = read else { return Err(HttpError::KeyNotFound) };
    let text = text.map_err(|_| HttpError::ValueNotText)?;
    let doc = serde_json::json!({ "value": text }).to_string();
    Ok(resp.send_entry(200, Some(JSON), doc.as_bytes(), Some(entry(meta))))
}

/// `/healthz`: 200, or 503 saying since when and why writes are refused. A node that refuses writes is
/// not healthy: a load balancer must stop sending it writes.
fn health(engine: &Engine, resp: &mut Responder<'_>) -> Result<u16, HttpError> {
    match engine.write_refusal() {
        None => Ok(resp.send(200, Some(TEXT), b"ok\n")),
        Some(refusal) => Err(HttpError::Unhealthy(refusal.to_string())),
    }
}

/// `/metrics`: the front door's counters, then the engine's.
fn metrics(ctx: Context<'_>, resp: &mut Responder<'_>) -> u16 {
    let mut e = ctx.front.metrics.prometheus(ctx.front.busy.load(Relaxed));
    stats::write_engine_prometheus(&mut e, ctx.engine);
    resp.send(200, Some(PROMETHEUS), e.into_text().as_bytes())
}

/// `/v1/stats`: the node's counters and the engine's state as JSON.
fn stats(ctx: Context<'_>, resp: &mut Responder<'_>) -> u16 {
    send_json(resp, 200, &stats::stats_json(&ctx.front.metrics, &ctx.front.limits, ctx.engine))
}

/// Encodes a JSON document as the response body.
fn send_json(resp: &mut Responder<'_>, status: u16, value: &serde_json::Value) -> u16 {
    resp.send(status, Some(JSON), value.to_string().as_bytes())
}
