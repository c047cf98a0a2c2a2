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
//! **Failures.** A request whose node cannot be reached gets 502 (refused, reset, invalid answer), 504
//! (no complete answer within `--upstream-timeout`) or 503 (every connection to it busy), naming the
//! node; it is never sent to another node, since a key's data lives only on its owner. Keys of other
//! nodes are unaffected. The proxy passes on only what the node answered: a write is acknowledged to
//! the client only by the node's own answer, and a node is trusted for nothing: its answers are read by
//! the strict reader of [`crate::answer`], a group's whole before any is passed on ([`upstream::Group`]).
//!
//! **Exactly one answer per request, in order.** `Proxy::flush` walks the queued requests in client
//! order and gives each the next answer of its node's group, or the failure that stands for it; nothing
//! in that loop can skip a request. It stops only when the client connection closes.

pub mod admin;
pub mod upstream;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use otkv_adapter_http::front::{self, Framing, Front, FrontArgs, Limits, Op, Requests, Route, Service};

use smallvec::SmallVec;

use crate::answer::AnswerRules;
use crate::client::ResponseMeta;
use crate::nodes::{self, LocalNodeArgs};
use crate::router::{Router, RoutingArgs};
use crate::secure::UpstreamSecurityArgs;
use upstream::{Answer, Group, Upstream, UpstreamError};

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
    /// A node that has not connected or answered within this gets its requests answered 504 (an answer
    /// must be complete within it, however slowly it arrives).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub upstream_security: UpstreamSecurityArgs,
    /// Most connections in use to each node at once (kept alive and reused; a request waits for one to
    /// free, up to --upstream-timeout, then gets 503).
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
    /// Per node: the requests queued for it, as received, and what each one's answer may be.
    pending: Vec<Queued>,
    /// The queued requests in client order.
    slots: Vec<Slot>,
}

/// The requests queued for one node.
#[derive(Debug, Default)]
struct Queued {
    bytes: Vec<u8>,
    rules: Vec<AnswerRules>,
    /// Room for their answers, kept from group to group.
    answers: Vec<ResponseMeta>,
}

/// A forwarded request awaiting its answer.
#[derive(Debug)]
struct Slot {
    node: usize,
    op: Op,
    json_errors: bool,
    /// How the answer is framed to the client.
    framing: Framing,
}

impl Service for Proxy {
    type Session = Session;

    fn front(&self) -> &Front {
        &self.front
    }

    fn session(&self) -> Session {
        Session { pending: self.upstreams.iter().map(|_| Queued::default()).collect(), slots: Vec::new() }
    }

    fn answer(&self, s: &mut Session, requests: &mut Requests<'_>) {
        while let Some(exchange) = requests.next_request() {
            let forwarded = match &exchange.route {
                Ok(Route::Kv(key, _)) => Some((key, false)),
                Ok(Route::Compat(key)) => Some((key, true)),
                _ => None,
            };
            if let Some((key, json_api)) = forwarded {
                let node = self.router.route(key);
                let queued = s.pending[node].bytes.len();
                if queued > 0 && queued + exchange.raw.len() > MAX_GROUP_BYTES {
                    self.flush(s, requests);
                }
                let framing = exchange.framing();
                let max_body = answer_cap(json_api, &self.front.limits);
                let q = &mut s.pending[node];
                let own = self.upstreams[node].authorization();
                if exchange.authorization.is_none() && own.is_none() {
                    q.bytes.extend_from_slice(exchange.raw);
                } else {
                    with_authorization(&mut q.bytes, exchange.raw, exchange.authorization, own);
                }
                q.rules.push(AnswerRules {
                    head_only: framing.head_only,
                    continue_ok: exchange.expects_continue,
                    max_body,
                });
                s.slots.push(Slot { node, op: exchange.op, json_errors: exchange.json_errors, framing });
                requests.pass(&exchange);
                continue;
            }
            // Answered here: what is queued before it goes first.
            self.flush(s, requests);
            let cluster =
                admin::Cluster { front: &self.front, upstreams: self.upstreams(), router: &self.router_name };
            requests.respond(exchange, |route, _body, resp| admin::answer(&cluster, route, resp));
        }
        self.flush(s, requests);
    }
}

/// The largest answer body a node may send to a key request: its value (the JSON API's may escape
/// every byte of it as `\u00XX`), and never less than room for an error's text.
fn answer_cap(json_api: bool, limits: &Limits) -> usize {
    const ERROR_ROOM: usize = 64 * 1024;
    let value = limits.max_value_bytes;
    let cap = if json_api { value.saturating_mul(6).saturating_add(1024) } else { value };
    cap.max(ERROR_ROOM)
}

impl Proxy {
    /// Sends the queued group to its nodes and passes their answers on, in client order: every queued
    /// request gets exactly one answer (the node's, or the error that stands for it), unless the
    /// connection closes first.
    fn flush(&self, s: &mut Session, requests: &mut Requests<'_>) {
        if s.slots.is_empty() {
            return;
        }
        let started = Instant::now();
        // Every node gets its part before any answer is read, so the nodes work at the same time.
        let mut groups: SmallVec<[Option<Group<'_>>; 8]> = self
            .upstreams
            .iter()
            .zip(&mut s.pending)
            .map(|(up, q)| {
                (!q.rules.is_empty())
                    .then(|| up.send(&q.bytes, q.rules.len(), std::mem::take(&mut q.answers)))
            })
            .collect();
        for (group, q) in groups.iter_mut().zip(&s.pending) {
            if let Some(group) = group {
                group.read_answers(&q.rules, &q.bytes);
            }
        }
        for slot in s.slots.drain(..) {
            let group = groups[slot.node].as_mut();
            let answer = group.map_or(Err(UpstreamError::Io), Group::next_answer);
            let nanos = elapsed_nanos(started);
            if self.pass_answer(requests, &slot, answer, nanos) {
                requests.close_now();
                break;
            }
        }
        // (Anything left after a close is dropped with the connection.)
        for (group, q) in groups.into_iter().zip(&mut s.pending) {
            if let Some(group) = group {
                q.answers = group.into_room();
            }
            q.bytes.clear();
            q.rules.clear();
        }
    }

    /// Gives `slot`'s request its one answer: the node's, byte for byte, or the error naming the node.
    /// Returns whether the client connection closes after it.
    ///
    /// The connection closes after an answer the node closed its own connection after, after one whose
    /// request asked to close, and, once the proxy drains, after the answer in hand (the front door
    /// decided on keep-alive when the request arrived, before the drain began). An answer after which
    /// the connection closes says `Connection: close`.
    fn pass_answer(
        &self,
        requests: &mut Requests<'_>,
        slot: &Slot,
        answer: Result<Answer<'_>, UpstreamError>,
        nanos: u64,
    ) -> bool {
        let draining = self.front.shutting_down.load(Relaxed);
        let close = slot.framing.close || draining;
        let framing =
            Framing { close, http10_keep_alive: slot.framing.http10_keep_alive && !close, ..slot.framing };
        match answer {
            Ok(a) if framing.close && !a.close => {
                with_connection_close(requests.out(), a.raw, a.head_len);
                requests.record(slot.op, a.status, nanos);
                true
            }
            Ok(a) => {
                requests.send_raw(slot.op, a.status, a.raw, nanos);
                a.close || framing.close
            }
            Err(e) => {
                let err = self.upstreams[slot.node].error(e);
                requests.send_error(slot.op, &err, slot.json_errors, framing, nanos);
                framing.close
            }
        }
    }

    /// The nodes, in routing order.
    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }
}

/// Appends the request `raw` with the client's `Authorization` header (whose value is `theirs`, a slice
/// of `raw`) taken out and the proxy's own line (`own`, with its CRLF) put in after the request line:
/// a client's token is checked here and never passed on, and a node sees only the proxy's.
fn with_authorization(out: &mut Vec<u8>, raw: &[u8], theirs: Option<&[u8]>, own: Option<&[u8]>) {
    let line_end = raw.iter().position(|&b| b == b'\n').map_or(raw.len(), |i| i + 1);
    out.extend_from_slice(&raw[..line_end]);
    if let Some(own) = own {
        out.extend_from_slice(own);
    }
    let rest = &raw[line_end..];
    let at = theirs
        .map(|v| (v.as_ptr() as usize).wrapping_sub(rest.as_ptr() as usize))
        .filter(|&at| at < rest.len());
    match at {
        Some(at) => {
            // The header's line: from after the previous line's LF to its own LF.
            let start = rest[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let end = rest[at..].iter().position(|&b| b == b'\n').map_or(rest.len(), |i| at + i + 1);
            out.extend_from_slice(&rest[..start]);
            out.extend_from_slice(&rest[end..]);
        }
        None => out.extend_from_slice(rest),
    }
}

/// Appends `raw` (an answer whose head is `head_len` bytes) with its `Connection` field replaced by
/// `Connection: close`.
fn with_connection_close(out: &mut Vec<u8>, raw: &[u8], head_len: usize) {
    let (head, body) = raw.split_at(head_len);
    // The head without its final blank line; each line ends in CRLF (the strict reader parsed it).
    let lines = head.strip_suffix(b"\r\n").unwrap_or(head);
    let mut rest = lines;
    while !rest.is_empty() {
        let end = rest.windows(2).position(|w| w == b"\r\n").map_or(rest.len(), |i| i + 2);
        let (line, next) = rest.split_at(end);
        let is_connection = line.len() > 11 && line[..11].eq_ignore_ascii_case(b"connection:");
        if !is_connection {
            out.extend_from_slice(line);
        }
        rest = next;
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body);
}

fn elapsed_nanos(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Runs `harness proxy` until SIGINT or SIGTERM.
pub fn run(args: &ProxyArgs) -> Result<(), String> {
    otkv_adapter_http::init_logging();
    let workers = front::configure_runtime(args.front.workers);
    let front = Front::new(&args.front).map_err(|e| e.to_string())?;
    let secure = args.upstream_security.load()?;
    let data = tempfile::Builder::new().prefix("otkv-proxy-").tempdir().map_err(|e| e.to_string())?;
    if args.nodes.is_some() {
        crate::stop::track_dir(data.path().to_owned());
    }
    let (local, targets) = match (args.nodes, args.node_urls.is_empty()) {
        (Some(0), _) | (None, true) => return Err("give --node URL (repeatable) or --nodes N (N ≥ 1)".into()),
        (Some(n), _) => {
            let local = nodes::start_local(n, &args.local.options(), data.path())?;
            let targets = local.targets.clone();
            (Some(local), targets)
        }
        (None, false) => (None, nodes::remote_targets(&args.node_urls, &secure)?),
    };
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let proxy = Arc::new(Proxy {
        front,
        router: args.routing.build(&names),
        router_name: args.routing.describe(),
        upstreams: targets
            .iter()
            .map(|t| Upstream::new(t, args.upstream_timeout, args.upstream_connections))
            .collect(),
    });
    let (listener, addr) = front::bind(args.front.bind, args.port).map_err(|e| e.to_string())?;
    let nodes: Vec<String> = targets.iter().map(|t| format!("{}={}", t.name, t.addr)).collect();
    tracing::info!(%addr, router = %proxy.router_name, nodes = %nodes.join(" "), workers, "proxy listening");
    front::serve(proxy, listener, addr, || {}).map_err(|e| e.to_string())?;
    if let Some(mut local) = local {
        local.stop();
    }
    crate::stop::end_dir(data, args.local.keep_data);
    tracing::info!("proxy stopped");
    Ok(())
}
