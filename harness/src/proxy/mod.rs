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
//! node; it is never sent to another node, since a key's data lives only on its owner (or its group's
//! members, below). Keys of other
//! nodes are unaffected. The proxy passes on only what the node answered: a write is acknowledged to
//! the client only by the node's own answer, and a node is trusted for nothing: its answers are read by
//! the strict reader of [`crate::response_head`], a group's whole before any is passed on ([`upstream::Group`]).
//!
//! **Replica groups.** An entry of the node set may be a replica group (its members' URLs, comma-
//! separated): any member answers any request, so the proxy sends to one member, the one that says it
//! leads ([`Proxy::follow_leaders`]), and moves on to the next when one cannot be reached.
//! A request is sent to a group again, alone, only when that cannot do twice what the client asked once
//! ([`safe_to_resend`]): the group answered `503` with `Retry-After` (no leader: it did nothing), no
//! member took a connection (nothing was sent), or it is a read.
//!
//! **Exactly one answer per request, in order.** `Proxy::flush` walks the queued requests in client
//! order and gives each the next answer of its node's group, or the failure that stands for it; nothing
//! in that loop can skip a request. It stops only when the client connection closes.

pub mod admin;
mod listing;
mod migration;
mod sets;
pub mod topology;
pub mod upstream;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use otkv_adapter_http::front::{
    self, Framing, Front, FrontArgs, Limits, Method, Op, Requests, Route, Service, TEXT,
};

use smallvec::SmallVec;

use crate::client::ResponseMeta;
use crate::nodes::{self, LocalNodeArgs};
use crate::response_head::AnswerRules;
use crate::router::RoutingArgs;
use crate::secure::UpstreamSecurityArgs;
use crate::target::Target;
use migration::Placement;
use otkv_adapter_http::front::{HttpError, JSON};
use sets::NodeSets;
use topology::{Builder, NodesFile, Topology};
use upstream::{Answer, Group, Upstream, UpstreamError};

pub use upstream::MAX_GROUP_BYTES;

/// `harness proxy`: serve a cluster's API on one address.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Port to listen on; 0 picks a free one (the `listening on` line says which).
    #[arg(long, default_value_t = 7000)]
    pub port: u16,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub front: FrontArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: otkv_adapter_http::LogArgs,
    /// A node already running, here or elsewhere (repeatable; named node-0, node-1, ... in this order,
    /// as `harness run --node` names them).
    #[arg(long = "node", value_name = "URL", conflicts_with = "nodes")]
    pub node_urls: Vec<String>,
    /// Read the nodes from this file instead, re-read on SIGHUP: one URL per line (the current set, in
    /// order), and, while keys move to a new set, `previous URL` lines for the set they move from (docs/operations.md,
    /// Adding and removing nodes). A new set re-read without `previous` lines keeps the set before as the
    /// previous one (written back into the file); `harness reshard --proxy` then moves the keys.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["node_urls", "nodes"])]
    pub nodes_file: Option<PathBuf>,
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

/// The routing server: the front door's state and the node sets (with a router and an [`Upstream`]
/// per node).
#[derive(Debug)]
pub struct Proxy {
    front: Front,
    router_name: String,
    /// The node sets, and how they change (`sets.rs`).
    sets: NodeSets,
}

/// One client connection's forwarding state: the node sets it routes with, and the group being gathered.
#[derive(Debug)]
pub struct Session {
    topology: Arc<Topology>,
    generation: u64,
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
    /// Where its bytes are in its node's queued bytes (to send it again, alone, to a replica group).
    at: std::ops::Range<usize>,
    /// What its answer may be.
    rules: AnswerRules,
    /// A read (`GET`, `HEAD`): sending it again is always safe.
    read: bool,
}

impl Service for Proxy {
    type Session = Session;

    fn front(&self) -> &Front {
        &self.front
    }

    fn session(&self) -> Session {
        let (topology, generation) = self.sets.now();
        let pending = topology.current.upstreams.iter().map(|_| Queued::default()).collect();
        Session { topology, generation, pending, slots: Vec::new() }
    }

    fn reload(&self) {
        if let Err(e) = self.sets.reload() {
            tracing::error!(error = %e, "SIGHUP: node sets not changed");
        }
    }

    fn answer(&self, s: &mut Session, requests: &mut Requests<'_>) {
        // A new node set since the last batch (nothing is queued between batches).
        if self.sets.generation() != s.generation {
            *s = self.session();
        }
        while let Some(exchange) = requests.next_request() {
            let forwarded = match &exchange.route {
                Ok(Route::Kv(key, _)) => Some((key, false)),
                Ok(Route::Compat(key)) => Some((key, true)),
                _ => None,
            };
            if let Some((key, json_api)) = forwarded {
                let topology = Arc::clone(&s.topology);
                let node = match migration::place(&topology, key) {
                    Placement::Owner(node) => node,
                    Placement::Moving { node, from } => {
                        // Answered after what is queued before it, with the nodes of a move.
                        self.flush(s, requests);
                        if matches!(exchange.method, Method::Get | Method::Head) {
                            if self.read_moving(requests, &exchange, &topology, key, node, from, json_api) {
                                requests.close_now();
                                break;
                            }
                            continue;
                        }
                        let max_body = answer_cap(false, &self.front.limits);
                        match migration::move_first(&topology, key, node, from, max_body) {
                            Ok(node) => node,
                            Err(err) => {
                                requests.respond(exchange, |_, _, _| Err(err));
                                continue;
                            }
                        }
                    }
                };
                let queued = s.pending[node].bytes.len();
                if queued > 0 && queued + exchange.raw.len() > MAX_GROUP_BYTES {
                    self.flush(s, requests);
                }
                let framing = exchange.framing();
                let max_body = answer_cap(json_api, &self.front.limits);
                let q = &mut s.pending[node];
                let own = s.topology.current.upstreams[node].authorization();
                let start = q.bytes.len();
                if exchange.authorization.is_none() && own.is_none() {
                    q.bytes.extend_from_slice(exchange.raw);
                } else {
                    with_authorization(&mut q.bytes, exchange.raw, exchange.authorization, own);
                }
                let rules = AnswerRules {
                    head_only: framing.head_only,
                    continue_ok: exchange.expects_continue,
                    max_body,
                };
                q.rules.push(rules);
                s.slots.push(Slot {
                    node,
                    op: exchange.op,
                    json_errors: exchange.json_errors,
                    framing,
                    at: start..q.bytes.len(),
                    rules,
                    read: matches!(exchange.method, Method::Get | Method::Head),
                });
                requests.pass(&exchange);
                continue;
            }
            // Answered here: what is queued before it goes first.
            self.flush(s, requests);
            if matches!(exchange.route, Ok(Route::ReshardDone)) {
                requests.respond(exchange, |_, _, resp| {
                    let nodes = self.sets.settle().map_err(|message| HttpError::Storage {
                        failure: otkv_adapter_http::front::StorageFailure::Failed,
                        message,
                    })?;
                    Ok(resp.send(
                        200,
                        Some(JSON),
                        serde_json::json!({ "nodes": nodes }).to_string().as_bytes(),
                    ))
                });
                continue;
            }
            if matches!(exchange.route, Ok(Route::ReshardMove)) {
                let topology = Arc::clone(&s.topology);
                let max_body = answer_cap(false, &self.front.limits);
                requests.respond(exchange, |_, body, resp| {
                    let said = migration::move_keys(&topology, body, &self.front.limits, max_body)?;
                    Ok(resp.send(200, Some(TEXT), said.as_bytes()))
                });
                continue;
            }
            let topology = Arc::clone(&s.topology);
            if let Ok(Route::List { prefix, from, limit }) = &exchange.route {
                let (prefix, from, limit) = (prefix.to_vec(), from.clone(), *limit);
                requests.respond(exchange, |_, _, resp| {
                    listing::list(&self.front, &topology, &prefix, &from, limit, resp)
                });
                continue;
            }
            let cluster =
                admin::Cluster { front: &self.front, topology: &topology, router: &self.router_name };
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
        let topology = Arc::clone(&s.topology);
        let mut groups: SmallVec<[Option<Group<'_>>; 8]> = topology
            .current
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
            let up = &topology.current.upstreams[slot.node];
            let closes = if up.is_group() && safe_to_resend(&answer, slot.read) {
                let bytes = &s.pending[slot.node].bytes[slot.at.clone()];
                self.resend(requests, &slot, up, bytes, started)
            } else {
                self.pass_answer(requests, &slot, up, answer, elapsed_nanos(started))
            };
            if closes {
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

    /// Runs for the life of the proxy, on a thread of its own: every [`LEADER_CHECK`], asks every member
    /// of each replica group of the current set whether it leads (its `/v1/stats`), and sends the group's
    /// requests to the one that says so (the highest term, should two) from then on.
    ///
    /// Each member speaks for itself: the proxy does not take one member's word for another's address
    /// (a member's advertised URL may not be the one the proxy reaches it at: another name, a relay, a
    /// NAT). The asks are blocking HTTP calls, all of a round at once on scoped threads, each bounded by
    /// [`LEADER_CHECK`]: a member that does not answer delays the next round by that much, and no request.
    fn follow_leaders(&self) {
        loop {
            std::thread::sleep(LEADER_CHECK);
            if self.front.shutting_down.load(Relaxed) {
                return;
            }
            let (topology, _) = self.sets.now();
            let groups: Vec<Arc<Upstream>> =
                topology.current.upstreams.iter().filter(|u| u.is_group()).cloned().collect();
            let terms: Vec<Vec<Option<u64>>> = std::thread::scope(|scope| {
                let asks: Vec<Vec<_>> = groups
                    .iter()
                    .map(|up| {
                        up.members().into_iter().map(|m| scope.spawn(move || leader_term(&m))).collect()
                    })
                    .collect();
                asks.into_iter().map(|g| g.into_iter().map(|h| h.join().ok().flatten()).collect()).collect()
            });
            for (up, terms) in groups.iter().zip(terms) {
                let leader = terms.iter().enumerate().filter_map(|(at, t)| t.map(|t| (t, at))).max();
                if let Some((_, at)) = leader {
                    up.prefer_member(at);
                }
            }
        }
    }

    /// Sends `slot`'s request (`bytes`) to its replica group again, alone, until an answer that is not
    /// safe to send again ([`safe_to_resend`]) or `--upstream-timeout`, and passes that answer on.
    /// Returns whether the client connection closes after it.
    fn resend(
        &self,
        requests: &mut Requests<'_>,
        slot: &Slot,
        up: &Upstream,
        bytes: &[u8],
        started: Instant,
    ) -> bool {
        let deadline = Instant::now() + up.timeout();
        loop {
            // An election takes a few hundred milliseconds: ask again soon, not in a tight loop.
            may::coroutine::sleep(RESEND_PAUSE);
            let mut group = up.send(bytes, 1, Vec::new());
            group.read_answers(std::slice::from_ref(&slot.rules), bytes);
            let answer = group.next_answer();
            if Instant::now() >= deadline || !safe_to_resend(&answer, slot.read) {
                return self.pass_answer(requests, slot, up, answer, elapsed_nanos(started));
            }
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
        up: &Upstream,
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
                let err = up.error(e);
                requests.send_error(slot.op, &err, slot.json_errors, framing, nanos);
                framing.close
            }
        }
    }

    /// Answers a read of a key not settled in a move from its owners ([`migration::read`]). Returns
    /// whether the connection closes after it.
    #[allow(clippy::too_many_arguments, reason = "one request's parts")]
    fn read_moving<'c>(
        &self,
        requests: &mut Requests<'c>,
        exchange: &front::Exchange<'c>,
        topology: &Arc<Topology>,
        key: &[u8],
        node: usize,
        from: &Upstream,
        json_api: bool,
    ) -> bool {
        let started = Instant::now();
        let framing = exchange.framing();
        let max_body = answer_cap(json_api, &self.front.limits);
        let rules =
            [AnswerRules { head_only: framing.head_only, continue_ok: exchange.expects_continue, max_body }];
        let for_node = |up: &Upstream| {
            let mut bytes = Vec::with_capacity(exchange.raw.len() + 64);
            with_authorization(&mut bytes, exchange.raw, exchange.authorization, up.authorization());
            bytes
        };
        // (Answered by `migration::read`, which asks the owners itself: never sent again from here.)
        let (at, read) = (0..0, true);
        let slot = Slot {
            node,
            op: exchange.op,
            json_errors: exchange.json_errors,
            framing,
            at,
            rules: rules[0],
            read,
        };
        requests.pass(exchange);
        let move_max_body = answer_cap(false, &self.front.limits);
        migration::read(topology, key, node, from, for_node, &rules, move_max_body, |up, answer| {
            self.pass_answer(requests, &slot, up, answer, elapsed_nanos(started))
        })
    }
}

/// The term of `member` if it says it leads its group (its `/v1/stats`), `None` if it does not or does not
/// answer within [`LEADER_CHECK`] (a member that slow is no leader to prefer, and a round waits for no
/// longer than that).
fn leader_term(member: &crate::target::Target) -> Option<u64> {
    let answer = crate::cost::http_call_within(member, "GET", "/v1/stats", &[], b"", LEADER_CHECK).ok()?;
    let doc: serde_json::Value =
        serde_json::from_slice(&answer.body).ok().filter(|_| answer.status == 200)?;
    let replica = &doc["replica"];
    (replica["role"] == "leader").then(|| replica["term"].as_u64()).flatten()
}

/// How often the proxy asks its replica groups which member leads.
const LEADER_CHECK: Duration = Duration::from_millis(500);

/// How long the proxy waits before sending a request to a replica group again.
const RESEND_PAUSE: Duration = Duration::from_millis(25);

/// Whether a replica group's `answer` says its request may be sent again without risk of doing twice
/// what a client asked once: a `503` with `Retry-After` (no leader: the group did nothing), no
/// connection to any member (nothing was sent), or, for a read, any failure to answer.
fn safe_to_resend(answer: &Result<Answer<'_>, UpstreamError>, read: bool) -> bool {
    match answer {
        Ok(a) => a.status == 503 && has_retry_after(&a.raw[..a.head_len]),
        Err(UpstreamError::Connect) => true,
        Err(UpstreamError::Io | UpstreamError::Timeout) => read,
        Err(_) => false,
    }
}

/// Whether an answer's head has a `Retry-After` field.
fn has_retry_after(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n')
        .any(|line| line.len() > 12 && line[..12].eq_ignore_ascii_case(b"retry-after:"))
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
    otkv_adapter_http::init_logging_with(&args.log);
    let workers = front::configure_runtime(args.front.workers);
    let front = Front::new(&args.front).map_err(|e| e.to_string())?;
    let secure = args.upstream_security.load()?;
    let data = tempfile::Builder::new().prefix("otkv-proxy-").tempdir().map_err(|e| e.to_string())?;
    if args.nodes.is_some() {
        crate::shutdown::track_dir(data.path().to_owned());
    }
    let nodes_file = args.nodes_file.as_deref().map(NodesFile::new);
    let (local, urls, previous) = match (args.nodes, args.node_urls.is_empty(), &nodes_file) {
        (Some(n), true, None) if n > 0 => {
            let local = nodes::start_local(n, &args.local.options(), data.path())?;
            let urls = local.targets.iter().map(Target::url).collect();
            (Some(local), urls, Vec::new())
        }
        (None, false, None) => (None, args.node_urls.clone(), Vec::new()),
        (None, true, Some(file)) => {
            let (current, previous) = file.read()?;
            (None, current, previous)
        }
        _ => return Err("give --node URL (repeatable), --nodes N (N ≥ 1) or --nodes-file FILE".into()),
    };
    let builder = Builder {
        routing: args.routing.clone(),
        secure,
        timeout: args.upstream_timeout,
        max_connections: args.upstream_connections,
    };
    let current = builder.set(&urls, &[])?;
    let previous = if previous.is_empty() { None } else { Some(builder.set(&previous, &current.upstreams)?) };
    let nodes: Vec<String> = current.upstreams.iter().map(|u| format!("{}={}", u.name, u.addr)).collect();
    let proxy = Arc::new(Proxy {
        front,
        router_name: args.routing.describe(),
        sets: NodeSets::new(builder, nodes_file, Topology::new(current, previous)),
    });
    let (listener, addr) = front::bind(args.front.bind, args.port).map_err(|e| e.to_string())?;
    tracing::info!(%addr, router = %proxy.router_name, nodes = %nodes.join(" "), workers, "proxy listening");
    let watched = Arc::clone(&proxy);
    front::serve(proxy, listener, addr, move || {
        let _ =
            std::thread::Builder::new().name("otkv-leaders".into()).spawn(move || watched.follow_leaders());
    })
    .map_err(|e| e.to_string())?;
    if let Some(mut local) = local {
        local.stop();
    }
    crate::shutdown::end_dir(data, args.local.keep_data);
    tracing::info!("proxy stopped");
    Ok(())
}
