//! What the proxy answers itself: the listing of every node's keys, `/healthz`, `/v1/stats`, and its own
//! `/metrics`.
//!

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use otkv_adapter_http::front::{
    Front, HttpError, Kind, ProcessStats, Responder, Route, JSON, PROMETHEUS, TEXT,
};
use serde_json::{json, Map, Value};

use super::topology::Topology;
use super::upstream::{fan_out, Upstream};

/// What the proxy's own answers read: its front door, its node sets, its router's name.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'p> {
    /// The proxy's front door (its own counters, its limits).
    pub front: &'p Front,
    /// The node sets: the current one, and the previous one while keys move.
    pub topology: &'p Topology,
    /// `rendezvous` or `ring`.
    pub router: &'p str,
}

/// Answers a request the proxy does not forward; `route` is never a key route.
pub fn answer(cluster: &Cluster<'_>, route: Route<'_>, resp: &mut Responder<'_>) -> Result<u16, HttpError> {
    match route {
        // Taken by the proxy itself, which owns the node sets.
        Route::ReshardDone | Route::ReshardMove => Err(HttpError::NoRoute),
        // A group's members are run at their own addresses, not through the proxy.
        Route::ReplicaMessages | Route::ReplicaMembers(_) | Route::ReplicaLeader(_) => {
            Err(HttpError::NoRoute)
        }
        Route::Health => Ok(health(cluster, resp)),
        Route::Stats => Ok(stats(cluster, resp)),
        Route::Metrics => Ok(resp.send(200, Some(PROMETHEUS), metrics(cluster).as_bytes())),
        Route::Panic => panic!("panic requested through /debug/panic"),
        // Forwarded, or listed (`listing.rs`).
        Route::Kv(..) | Route::Compat(_) | Route::List { .. } => Err(HttpError::Internal),
    }
}

/// The largest answer to `/healthz`, `/v1/stats` or `/metrics` the proxy reads from a node.
const ADMIN_ANSWER_CAP: usize = 16 << 20;

/// `/healthz`: 200 when every node answers its own `/healthz` with 200, else 503 naming those that do not.
fn health(cluster: &Cluster<'_>, resp: &mut Responder<'_>) -> u16 {
    let failing: Vec<String> = fan_out(&cluster.topology.current.upstreams, "/healthz", ADMIN_ANSWER_CAP)
        .into_iter()
        .zip(&cluster.topology.current.upstreams)
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
    let upstreams = &cluster.topology.current.upstreams;
    let mut nodes = Vec::new();
    let (mut keys, mut connections, mut answering) = (0u64, 0i64, 0usize);
    let mut requests: Map<String, Value> = Map::new();
    for (answer, up) in fan_out(upstreams, "/v1/stats", ADMIN_ANSWER_CAP).into_iter().zip(upstreams) {
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
        "topology": {
            "nodes": urls(upstreams),
            "previous": cluster.topology.previous.as_ref().map(|p| urls(&p.upstreams)),
            "note": cluster.topology.note,
        },
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
            "nodes": upstreams.len(),
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
    let upstreams = &cluster.topology.current.upstreams;
    let mut e = front.metrics.prometheus(front.busy.load(Relaxed));
    let name = "otkv_proxy_upstream_requests_total";
    e.family(name, Kind::Counter, "Requests forwarded to each node.");
    for up in upstreams {
        e.sample(name, &[("node", &up.name), ("addr", &up.addr)], up.forwarded.load(Relaxed));
    }
    let name = "otkv_proxy_upstream_errors_total";
    e.family(name, Kind::Counter, "Failures reaching each node, by kind.");
    for up in upstreams {
        for (kind, n) in up.errors() {
            e.sample(name, &[("node", &up.name), ("kind", &kind)], n);
        }
    }
    let name = "otkv_proxy_upstream_connections";
    e.family(name, Kind::Gauge, "Open connections to each node.");
    for up in upstreams {
        e.sample(name, &[("node", &up.name)], up.open_connections());
    }
    e.into_text()
}
