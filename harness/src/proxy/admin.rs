//! What the proxy answers itself: the listing merged from every node, `/healthz`, `/v1/stats`, and its own
//! `/metrics`.
//!
//! A fan-out sends one request to every node at once (each on a connection from its pool, taken in node
//! order like any group) and then reads the answers, so it takes as long as the slowest node, not the sum.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use otkv_adapter_http::front::{
    pct, Front, HttpError, Kind, ProcessStats, Responder, Route, JSON, PROMETHEUS, TEXT,
};
use serde_json::{json, Map, Value};

use super::upstream::{Group, Upstream};
use crate::answer::AnswerRules;

/// What the proxy's own answers read: its front door, its nodes, its router's name.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'p> {
    /// The proxy's front door (its own counters, its limits).
    pub front: &'p Front,
    /// The nodes, in node order.
    pub upstreams: &'p [Arc<Upstream>],
    /// While keys move to them: the nodes they move from.
    pub previous: Option<&'p [Arc<Upstream>]>,
    /// `rendezvous` or `ring`.
    pub router: &'p str,
}

/// Answers a request the proxy does not forward; `route` is never a key route.
pub fn answer(cluster: &Cluster<'_>, route: Route<'_>, resp: &mut Responder<'_>) -> Result<u16, HttpError> {
    match route {
        Route::List { prefix, after, limit } => list(cluster, &prefix, after.as_deref(), limit, resp),
        // Taken by the proxy itself, which owns the node sets.
        Route::ReshardDone | Route::ReshardMove => Err(HttpError::NoRoute),
        Route::Health => Ok(health(cluster, resp)),
        Route::Stats => Ok(stats(cluster, resp)),
        Route::Metrics => Ok(resp.send(200, Some(PROMETHEUS), metrics(cluster).as_bytes())),
        Route::Panic => panic!("panic requested through /debug/panic"),
        Route::Kv(..) | Route::Compat(_) => Err(HttpError::Internal),
    }
}

/// The largest answer to `/healthz`, `/v1/stats` or `/metrics` the proxy reads from a node.
const ADMIN_ANSWER_CAP: usize = 16 << 20;

/// `GET {target}` to every node at once: each node's `(status, body)` (a body of at most `max_body`
/// bytes), or the error naming it.
fn fan_out(ups: &[Arc<Upstream>], target: &str, max_body: usize) -> Vec<Result<(u16, Vec<u8>), HttpError>> {
    let requests: Vec<Vec<u8>> = ups
        .iter()
        .map(|u| {
            let mut request = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n", u.host()).into_bytes();
            request.extend_from_slice(u.authorization().unwrap_or_default());
            request.extend_from_slice(b"\r\n");
            request
        })
        .collect();
    let mut groups: Vec<Group<'_>> =
        ups.iter().zip(&requests).map(|(u, r)| u.send(r, 1, Vec::new())).collect();
    let rules = [AnswerRules::body_up_to(max_body)];
    groups
        .iter_mut()
        .zip(ups)
        .zip(&requests)
        .map(|((group, up), request)| {
            group.read_answers(&rules, request);
            let answer = group.next_answer().map_err(|e| up.error(e))?;
            Ok((answer.status, answer.raw[answer.head_len..].to_vec()))
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct Listing {
    keys: Vec<String>,
}

/// `GET /v1/kv?prefix=&limit=`: every node's first `limit` keys under `prefix`, merged in byte order,
/// de-duplicated, cut to `limit`. Any node that cannot answer fails the whole listing (a partial one would
/// silently miss keys).
fn list(
    cluster: &Cluster<'_>,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
    resp: &mut Responder<'_>,
) -> Result<u16, HttpError> {
    let after = after.map(|a| format!("&after={}", pct::encode_segment(a))).unwrap_or_default();
    let target = format!("/v1/kv?prefix={}{after}&limit={limit}", pct::encode_segment(prefix));
    // Each key percent-encoded (at most three bytes a byte), quoted, and a comma.
    let per_key = cluster.front.limits.max_key_bytes.saturating_mul(3).saturating_add(3);
    let max_body = limit.saturating_mul(per_key).saturating_add(1024);
    let mut keys: Vec<Vec<u8>> = Vec::new();
    // While keys move, those not moved yet are on the previous nodes: ask those too.
    let mut ups: Vec<Arc<Upstream>> = cluster.upstreams.to_vec();
    for p in cluster.previous.unwrap_or_default() {
        if !ups.iter().any(|u| u.url() == p.url()) {
            ups.push(Arc::clone(p));
        }
    }
    for (answer, up) in fan_out(&ups, &target, max_body).into_iter().zip(&ups) {
        let (status, body) = answer?;
        let bad = |why: String| HttpError::BadGateway(format!("{} {why}", up.who()));
        if status != 200 {
            return Err(bad(format!(
                "answered {status} to the listing: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        let listing: Listing =
            serde_json::from_slice(&body).map_err(|e| bad(format!("sent an invalid listing: {e}")))?;
        for key in listing.keys {
            let decoded =
                pct::decode(&key, false).ok_or_else(|| bad(format!("listed a malformed key {key:?}")))?;
            keys.push(decoded.into_owned());
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys.truncate(limit);
    Ok(resp.send(200, Some(JSON), &otkv_adapter_http::front::listing_body(&keys, limit)))
}

/// `/healthz`: 200 when every node answers its own `/healthz` with 200, else 503 naming those that do not.
fn health(cluster: &Cluster<'_>, resp: &mut Responder<'_>) -> u16 {
    let failing: Vec<String> = fan_out(cluster.upstreams, "/healthz", ADMIN_ANSWER_CAP)
        .into_iter()
        .zip(cluster.upstreams)
        .filter_map(|(answer, up)| match answer {
            Ok((200, _)) => None,
            Ok((status, body)) => {
                Some(format!("{} answered {status}: {}", up.who(), String::from_utf8_lossy(&body).trim()))
            }
            Err(e) => Some(e.to_string()),
        })
        .collect();
    if failing.is_empty() {
        resp.send(200, Some(TEXT), b"ok\n")
    } else {
        resp.send(503, Some(TEXT), format!("unhealthy: {}\n", failing.join("; ")).as_bytes())
    }
}

/// `/v1/stats`: the proxy's own counters, each node's `/v1/stats` (or why it has none), and totals over
/// the nodes that answered.
fn stats(cluster: &Cluster<'_>, resp: &mut Responder<'_>) -> u16 {
    let front = cluster.front;
    let mut nodes = Vec::new();
    let (mut keys, mut connections, mut answering) = (0u64, 0i64, 0usize);
    let mut requests: Map<String, Value> = Map::new();
    for (answer, up) in
        fan_out(cluster.upstreams, "/v1/stats", ADMIN_ANSWER_CAP).into_iter().zip(cluster.upstreams)
    {
        let mut entry = json!({ "name": up.name, "addr": up.addr.to_string(), "url": up.url() });
        let doc = answer.and_then(|(status, body)| match (status, serde_json::from_slice::<Value>(&body)) {
            (200, Ok(doc)) => Ok(doc),
            _ => Err(HttpError::BadGateway(format!("{} answered {status} without stats", up.who()))),
        });
        match doc {
            Ok(doc) => {
                answering += 1;
                keys += doc["keys"].as_u64().unwrap_or(0);
                connections += doc["connections"].as_i64().unwrap_or(0);
                if let Some(by_op) = doc["requests"].as_object() {
                    for (op, n) in by_op {
                        let sum =
                            requests.get(op).and_then(Value::as_u64).unwrap_or(0) + n.as_u64().unwrap_or(0);
                        requests.insert(op.clone(), sum.into());
                    }
                }
                entry["stats"] = doc;
            }
            Err(e) => entry["error"] = e.to_string().into(),
        }
        nodes.push(entry);
    }
    let own: Map<String, Value> =
        front.metrics.requests_by_op().map(|(op, n)| (op.to_string(), n.into())).collect();
    let process = ProcessStats::read();
    let urls = |ups: &[Arc<Upstream>]| ups.iter().map(|u| u.url()).collect::<Vec<_>>();
    let doc = json!({
        "topology": { "nodes": urls(cluster.upstreams), "previous": cluster.previous.map(urls) },
        "proxy": {
            "router": cluster.router,
            "connections": front.metrics.connections(),
            "requests": own,
            "cpu_seconds": process.map(|p| p.cpu_seconds),
            "rss_bytes": process.map(|p| p.rss_bytes),
        },
        "limits": { "max_key_bytes": front.limits.max_key_bytes, "max_value_bytes": front.limits.max_value_bytes },
        "nodes": nodes,
        "totals": {
            "nodes": cluster.upstreams.len(),
            "nodes_answering": answering,
            "keys": keys,
            "connections": connections,
            "requests": requests,
        },
    });
    resp.send(200, Some(JSON), doc.to_string().as_bytes())
}

/// `/metrics`: the front door's counters (requests by op and code, latency), then per node the requests
/// forwarded, the failures by kind, and the open connections.
fn metrics(cluster: &Cluster<'_>) -> String {
    let front = cluster.front;
    let mut e = front.metrics.prometheus(front.busy.load(Relaxed));
    let name = "otkv_proxy_upstream_requests_total";
    e.family(name, Kind::Counter, "Requests forwarded to each node.");
    for up in cluster.upstreams {
        e.sample(name, &[("node", &up.name), ("addr", &up.addr)], up.forwarded.load(Relaxed));
    }
    let name = "otkv_proxy_upstream_errors_total";
    e.family(name, Kind::Counter, "Failures reaching each node, by kind.");
    for up in cluster.upstreams {
        for (kind, n) in up.errors() {
            e.sample(name, &[("node", &up.name), ("kind", &kind)], n);
        }
    }
    let name = "otkv_proxy_upstream_connections";
    e.family(name, Kind::Gauge, "Open connections to each node.");
    for up in cluster.upstreams {
        e.sample(name, &[("node", &up.name)], up.open_connections());
    }
    e.into_text()
}
