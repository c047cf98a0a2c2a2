//! `harness proxy`: one address for a cluster. The routing server of the original benchmark.py, rebuilt.
//!
//! It speaks exactly a node's API on the front and forwards each request to the node that owns its key,
//! with the very key → node function `harness run` routes with (same node names, same hash), so a key
//! written through the proxy is where a harness-routed client looks for it, and the other way round.
//!
//! **The front door is the node's own.** The proxy is a [`Service`] behind `otkv_adapter_http`'s
//! connection layer: the same head and body caps, timeouts, framing rules, connection cap, fd back-off
//! and panic isolation, and the same route table ([`otkv_adapter_http::routes::resolve`]), so a key is
//! percent-decoded here exactly as the node decodes it, a bad request gets the node's own answer without a
//! hop, and a value over `--max-value-bytes` gets 413 before any byte of it is read or forwarded.
//!
//! **A batch, in order.** The requests of one read batch are taken in order. A key request's bytes are
//! appended, exactly as received, to its node's outgoing buffer; anything the proxy answers itself (a
//! listing, `/healthz`, a bad request) first flushes what is queued, so answers stay in request order.
//! A flush sends each node its part of the group with one write (on a pooled keep-alive connection, see
//! [`upstream`]), then reads the answers in request order and copies each, byte for byte, after the ones
//! before it. A group holds at most [`MAX_GROUP_BYTES`] per node (a single larger request goes alone):
//! below a socket buffer, so the write always completes even while the node is busy writing answers,
//! which is what keeps a pipelined mix of large reads and writes from deadlocking.
//!
//! **Failures.** A request whose node cannot be reached gets 502 (refused, reset, invalid answer) or 504
//! (no answer within `--upstream-timeout`), naming the node; it is never sent to another node, since a
//! key's data lives only on its owner. Keys of other nodes are unaffected. The proxy passes on only
//! what the node answered: a write is acknowledged to the client only by the node's own answer.

pub mod admin;
pub mod upstream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use otkv_adapter_http::conn::Requests;
use otkv_adapter_http::metrics::Op;
use otkv_adapter_http::response::Framing;
use otkv_adapter_http::routes::Route;
use otkv_adapter_http::server::{self, Front};
use otkv_adapter_http::service::Service;
use otkv_adapter_http::FrontArgs;

use crate::client::Failure;
use crate::nodes::{self, LocalNodeArgs};
use crate::router::{Router, RoutingArgs};
use upstream::{Lease, Upstream};

/// The most bytes of requests one group sends one node in one write, unless one request alone is larger.
pub const MAX_GROUP_BYTES: usize = 64 * 1024;

/// `harness proxy`: serve a cluster's API on one address.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Port to listen on; 0 picks a free one (the `listening on` line says which).
    #[arg(long, default_value_t = 7000)]
    pub port: u16,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub front: FrontArgs,
    /// A node already running, here or elsewhere (repeatable; named node-0, node-1, ... in this order,
    /// as `harness run --node` names them).
    #[arg(long = "node", value_name = "URL", conflicts_with = "nodes")]
    pub node_urls: Vec<String>,
    /// Start this many local nodes instead, as `harness run` does (stopped when the proxy stops).
    #[arg(long, value_name = "N")]
    pub nodes: Option<usize>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub local: LocalNodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub routing: RoutingArgs,
    /// A node that has not connected or answered within this gets its requests answered 504.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,
    /// Most connections in use to each node at once (kept alive and reused; a request waits for one to
    /// free, up to --upstream-timeout).
    #[arg(long, default_value_t = 256)]
    pub upstream_connections: usize,
}

/// The routing server: the front door's state, the router, and one [`Upstream`] per node.
#[derive(Debug)]
pub struct Proxy {
    front: Front,
    router: Box<dyn Router>,
    router_name: String,
    upstreams: Vec<Upstream>,
}

/// One client connection's forwarding state: the group being gathered.
#[derive(Debug)]
pub struct Session {
    /// Per node: the requests queued for it, as received.
    pending: Vec<Vec<u8>>,
    /// Per node: how many requests are queued.
    counts: Vec<usize>,
    /// The queued requests in client order.
    slots: Vec<Slot>,
}

/// A forwarded request awaiting its answer.
#[derive(Debug)]
struct Slot {
    node: usize,
    op: Op,
    json_errors: bool,
    /// How the answer is framed; `head_only`: a HEAD request, whose answer has no body.
    framing: Framing,
}

impl Service for Proxy {
    type Session = Session;

    fn front(&self) -> &Front {
        &self.front
    }

    fn session(&self) -> Session {
        let n = self.upstreams.len();
        Session { pending: vec![Vec::new(); n], counts: vec![0; n], slots: Vec::new() }
    }

    fn answer(&self, s: &mut Session, requests: &mut Requests<'_>) {
        while let Some(exchange) = requests.next_request() {
            if let Ok(Route::Kv(key, _) | Route::Compat(key)) = &exchange.route {
                let node = self.router.route(key);
                let queued = s.pending[node].len();
                if queued > 0 && queued + exchange.raw.len() > MAX_GROUP_BYTES {
                    self.flush(s, requests);
                }
                s.pending[node].extend_from_slice(exchange.raw);
                s.counts[node] += 1;
                s.slots.push(Slot {
                    node,
                    op: exchange.op,
                    json_errors: exchange.json_errors,
                    framing: exchange.framing(),
                });
                requests.pass(&exchange);
                continue;
            }
            // Answered here: what is queued before it goes first.
            self.flush(s, requests);
            requests.respond(exchange, |route, _body, resp| admin::answer(self, route, resp));
        }
        self.flush(s, requests);
    }
}

impl Proxy {
    /// Sends the queued group to its nodes and passes their answers on, in client order.
    fn flush(&self, s: &mut Session, requests: &mut Requests<'_>) {
        if s.slots.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut leases: Vec<Option<Result<Lease<'_>, Failure>>> = self
            .upstreams
            .iter()
            .zip(&s.pending)
            .zip(&s.counts)
            .map(|((up, pending), &count)| (count > 0).then(|| up.send(pending, count)))
            .collect();
        let mut closing = false;
        for slot in s.slots.drain(..) {
            if closing {
                break;
            }
            let lease = &mut leases[slot.node];
            let read = match lease {
                Some(Ok(l)) => l.read(slot.framing.head_only, &s.pending[slot.node]),
                Some(Err(failure)) => Err(*failure),
                None => Err(Failure::Protocol),
            };
            let nanos = elapsed_nanos(started);
            match read {
                Ok(meta) => {
                    if let Some(Ok(l)) = lease {
                        if let Some(conn) = l.conn() {
                            requests.send_raw(slot.op, meta.status, conn.response(&meta).raw, nanos);
                        }
                    }
                    if meta.close && !slot.framing.close {
                        // The node's answer says the connection closes; so must ours.
                        requests.close_now();
                        closing = true;
                    }
                }
                Err(failure) => {
                    // The rest of this node's group fails the same way (its connection is gone).
                    *lease = Some(Err(failure));
                    let err = self.upstreams[slot.node].error(failure);
                    requests.send_error(slot.op, &err, slot.json_errors, slot.framing, nanos);
                }
            }
        }
        // (Draining dropped any slot left after a close.)
        drop(leases);
        for (pending, count) in s.pending.iter_mut().zip(&mut s.counts) {
            pending.clear();
            *count = 0;
        }
    }

    /// The nodes, in routing order.
    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }
}

fn elapsed_nanos(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Runs `harness proxy` until SIGINT or SIGTERM.
pub fn run(args: &ProxyArgs) -> Result<(), String> {
    otkv_adapter_http::init_logging();
    let workers = server::configure_runtime(args.front.workers);
    let data = tempfile::Builder::new().prefix("otkv-proxy-").tempdir().map_err(|e| e.to_string())?;
    let (local, targets) = match (args.nodes, args.node_urls.is_empty()) {
        (Some(0), _) | (None, true) => return Err("give --node URL (repeatable) or --nodes N (N ≥ 1)".into()),
        (Some(n), _) => {
            let local = nodes::start_local(n, &args.local.options(), data.path())?;
            let targets = local.targets.clone();
            (Some(local), targets)
        }
        (None, false) => (None, nodes::remote_targets(&args.node_urls)?),
    };
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let proxy = Arc::new(Proxy {
        front: Front::new(&args.front),
        router: args.routing.build(&names),
        router_name: args.routing.describe(),
        upstreams: targets
            .iter()
            .map(|t| Upstream::new(t, args.upstream_timeout, args.upstream_connections))
            .collect(),
    });
    let (listener, addr) = server::bind(args.front.bind, args.port).map_err(|e| e.to_string())?;
    let nodes: Vec<String> = targets.iter().map(|t| format!("{}={}", t.name, t.addr)).collect();
    tracing::info!(%addr, router = %proxy.router_name, nodes = %nodes.join(" "), workers, "proxy listening");
    server::serve(proxy, listener, addr, || {}).map_err(|e| e.to_string())?;
    if let Some(mut local) = local {
        local.stop();
    }
    if args.local.keep_data {
        let kept: PathBuf = data.keep();
        eprintln!("data kept in {}", kept.display());
    }
    tracing::info!("proxy stopped");
    Ok(())
}
