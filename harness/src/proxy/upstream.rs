//! A node as the proxy sees it: a bounded pool of keep-alive connections, back-off after failed
//! connects, error counters, and the [`Group`] that carries one batch's requests to it and brings back
//! exactly one answer for each.
//!
//! - **Bounded.** At most `--upstream-connections` connections to a node are in use at once (a may
//!   semaphore; a batch that finds none free waits, up to the upstream timeout, then answers 503: the
//!   node is not at fault, the proxy's own cap is). A connection is taken from the idle pool for one
//!   forwarded group and given back after it, so an idle client holds none, and a new connection is
//!   opened only when none is idle: the pool never holds more than the cap. Groups take their nodes'
//!   permits in node order, so two groups can never each hold a permit the other waits for.
//! - **Trusted for nothing.** Answers are read by the strict reader ([`crate::response_head`]): anything an
//!   OTKV node could not have sent is a 502 naming the node, for every request of the group (once one
//!   answer is wrong, which bytes answer which request is in doubt), and the connection is closed, never
//!   pooled again. A connection goes back to the pool only with every answer read and nothing else
//!   received; one taken from the pool that has bytes waiting (an answer before any request) is refused
//!   the same way.
//! - **Stale connections.** A pooled connection the node has since closed (its idle timeout, a restart)
//!   is found closed before use, or fails on first use with nothing received; the group is then sent once
//!   more on a fresh connection. GET, HEAD, PUT and DELETE are idempotent (RFC 9110 §9.2.2), and the
//!   compatible API's POST is a plain set of the same value, so the retry cannot do twice what a client
//!   asked once.
//! - **Back-off.** A failed connect marks the node down for a while (50 ms, doubling to 1 s); meanwhile
//!   its keys are answered 502 at once, without a connect per request. The first connect after that
//!   time either brings it back or doubles the wait.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use otkv_adapter_http::front::{lock, HttpError};

use crate::client::{Failure, HttpConn, ReadError, ResponseMeta, Waiting};
use crate::response_head::{AnswerRules, Invalid};
use crate::target::Target;

/// The most bytes of requests one group sends one node in one write, unless one request alone is larger.
pub const MAX_GROUP_BYTES: usize = 64 * 1024;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Why a forwarded request got no answer from its node; [`Upstream::error`] says what the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// The node refused the connection, or did not accept it in time.
    Connect,
    /// No complete answer within `--upstream-timeout`.
    Timeout,
    /// The connection broke (closed, reset) before the answer was complete.
    Io,
    /// The node sent what no OTKV node sends.
    Invalid(Invalid),
    /// Every connection the proxy may open to the node stayed in use for the whole timeout.
    Busy,
    /// The TLS handshake with the node failed (its certificate is not trusted, say).
    Tls,
}

impl From<Failure> for UpstreamError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Connect => UpstreamError::Connect,
            Failure::Timeout => UpstreamError::Timeout,
            Failure::Io => UpstreamError::Io,
            Failure::Protocol => UpstreamError::Invalid(Invalid::Malformed),
            Failure::Tls => UpstreamError::Tls,
        }
    }
}

impl From<ReadError> for UpstreamError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Failed(f) => f.into(),
            ReadError::Invalid(why) => UpstreamError::Invalid(why),
        }
    }
}

impl UpstreamError {
    /// Its name in `/metrics` (`kind` label), and its place in the counters.
    fn kind(self) -> usize {
        match self {
            UpstreamError::Connect => 0,
            UpstreamError::Timeout => 1,
            UpstreamError::Io => 2,
            UpstreamError::Invalid(_) => 3,
            UpstreamError::Busy => 4,
            UpstreamError::Tls => 5,
        }
    }
}

/// The `kind` labels of the failure counters, in counter order.
const KINDS: [&str; 6] = ["connect", "timeout", "io", "protocol", "busy", "tls"];

/// One node behind the proxy.
pub struct Upstream {
    /// Its routing name (`node-0`, ...).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// How to reach it (its TLS and token too).
    target: Target,
    /// `node-1 (127.0.0.1:7002)` ([`Target::who`]).
    who: String,
    /// `Authorization: Bearer TOKEN\r\n`, with a token.
    authorization: Option<Box<[u8]>>,
    timeout: Duration,
    max_connections: usize,
    /// Boxed, so a lease (moved about in a group) stays small: each move would otherwise copy the
    /// connection's few hundred bytes (measured: ~900 instructions of `memcpy` per forwarded GET).
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<HttpConn>>>,
    permits: may::sync::Semphore,
    /// Open connections (idle and in use).
    open: AtomicU64,
    down: Mutex<Down>,
    /// Failures by kind, in the order of [`KINDS`].
    errors: [AtomicU64; 6],
    /// Requests sent to this node.
    pub forwarded: AtomicU64,
    /// For a replica group: the member new connections go to (an index of `target.group`); it moves
    /// on to the next member when one cannot be reached, and to the leader when one is known
    /// ([`Upstream::prefer_member`]). Any member answers any request; the leader does so cheapest.
    member: std::sync::atomic::AtomicUsize,
    /// Changes when `member` is moved to the leader: connections to the member before are then closed
    /// as they come back to the pool, so requests follow the leader.
    generation: AtomicU64,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("name", &self.name).field("addr", &self.addr).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Down {
    /// No connect is tried before this.
    until: Option<Instant>,
    backoff: Duration,
    last: Option<UpstreamError>,
}

/// A connection to a node, held for one forwarded group; back in the pool when dropped, if still sound.
#[derive(Debug)]
struct Lease<'u> {
    upstream: &'u Upstream,
    /// The upstream's `generation` when the lease began.
    generation: u64,
    conn: Option<Box<HttpConn>>,
    /// Taken from the pool (so possibly stale) rather than freshly connected.
    reused: bool,
    /// Every answer was read and nothing else arrived: it may carry the next group.
    sound: bool,
}

/// One group of requests sent to a node, and then its answers: exactly one per request, in order.
///
/// [`Group::read_answers`] reads them all before any is passed on, so a wrong one found late (or bytes
/// after the last) turns the whole group into errors instead of letting earlier answers through that may
/// belong to other requests. [`Group::next_answer`] then hands them out in order: the answer, or the
/// failure that stands for it.
#[derive(Debug)]
pub struct Group<'u> {
    upstream: &'u Upstream,
    lease: Option<Lease<'u>>,
    answers: Vec<ResponseMeta>,
    next: usize,
    /// What every request without an answer in `answers` gets.
    rest: UpstreamError,
}

/// A node's answer to one request, as received.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'g> {
    /// Its status.
    pub status: u16,
    /// The whole answer, head and body.
    pub raw: &'g [u8],
    /// Bytes of `raw` that are the head.
    pub head_len: usize,
    /// The node closes the connection after it.
    pub close: bool,
}

impl Upstream {
    /// The node `target`, with `timeout` for connects and answers and at most `max_connections` in use.
    pub fn new(target: &Target, timeout: Duration, max_connections: usize) -> Upstream {
        let max_connections = max_connections.max(1);
        Upstream {
            name: target.name.clone(),
            addr: target.addr,
            target: target.clone(),
            who: target.who(),
            authorization: target
                .secure
                .token
                .is_some()
                .then(|| target.secure.authorization_line().into_bytes().into()),
            timeout,
            max_connections,
            idle: Mutex::new(Vec::new()),
            permits: may::sync::Semphore::new(max_connections),
            open: AtomicU64::new(0),
            down: Mutex::default(),
            errors: Default::default(),
            forwarded: AtomicU64::new(0),
            member: std::sync::atomic::AtomicUsize::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// For a replica group: each member, as a target of its own (nothing for a single node).
    pub fn members(&self) -> Vec<Target> {
        self.target.group.iter().map(|&a| self.target.at_member(a)).collect()
    }

    /// For a replica group: new requests go to the member at `at` of [`Upstream::members`] (the one that
    /// says it leads), and connections to the one before are closed as they come back. Nothing if `at`
    /// is already the one in use.
    pub fn prefer_member(&self, at: usize) {
        let members = self.target.group.len();
        if at >= members || at == self.member.load(Relaxed) % members {
            return;
        }
        self.member.store(at, Relaxed);
        self.generation.fetch_add(1, Relaxed);
        let idle = std::mem::take(&mut *lock(&self.idle));
        for conn in idle {
            self.close(conn);
        }
        tracing::info!(node = %self.name, leader = %self.target.group[at], "sending to the group's leader");
    }

    /// Whether this is a replica group (any of whose members answers any request).
    pub fn is_group(&self) -> bool {
        self.target.group.len() > 1
    }

    /// `--upstream-timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The `Host` header value for requests the proxy makes itself.
    pub fn host(&self) -> &str {
        &self.target.host
    }

    /// `http://HOST:PORT` (`https://` over TLS).
    pub fn url(&self) -> String {
        self.target.url()
    }

    /// The `Authorization` header line (with its CRLF) the proxy sends this node, if it has a token.
    pub fn authorization(&self) -> Option<&[u8]> {
        self.authorization.as_deref()
    }

    /// `node-1 (127.0.0.1:7002)`: how messages name it.
    pub fn who(&self) -> &str {
        &self.who
    }

    /// Sends `requests` (`count` of them) on a connection (idle, or new), once more on a fresh
    /// connection if a pooled one turns out to be closed. Read the answers with [`Group::read_answers`].
    /// `answers` is room for them (emptied; [`Group::into_room`] gives it back for the next group).
    pub fn send(&self, requests: &[u8], count: usize, mut answers: Vec<ResponseMeta>) -> Group<'_> {
        answers.clear();
        let (lease, rest) = match self.lease(requests, count) {
            Ok(lease) => (Some(lease), UpstreamError::Io),
            Err(e) => (None, self.count(e)),
        };
        Group { upstream: self, lease, answers, next: 0, rest }
    }

    fn lease(&self, requests: &[u8], count: usize) -> Result<Lease<'_>, UpstreamError> {
        if !self.permits.try_wait() && !self.permits.wait_timeout(self.timeout) {
            return Err(UpstreamError::Busy);
        }
        self.forwarded.fetch_add(count as u64, Relaxed);
        // From here on the lease holds the permit; dropping it gives the permit back.
        let generation = self.generation.load(Relaxed);
        let mut lease = Lease { upstream: self, generation, conn: None, reused: false, sound: false };
        if let Some(conn) = self.pooled()? {
            lease.reused = true;
            if lease.conn.insert(conn).send_bytes(requests).is_ok() {
                return Ok(lease);
            }
            lease.discard();
            lease.reused = false;
        }
        let conn = lease.conn.insert(self.connect()?);
        conn.send_bytes(requests)?;
        Ok(lease)
    }

    /// An idle connection that is still quiet: closed ones are dropped on the way; one with bytes
    /// waiting (an answer before any request) is an invalid node.
    fn pooled(&self) -> Result<Option<Box<HttpConn>>, UpstreamError> {
        loop {
            let Some(mut conn) = lock(&self.idle).pop() else { return Ok(None) };
            match conn.waiting() {
                Waiting::Nothing => return Ok(Some(conn)),
                Waiting::Closed => self.close(conn),
                Waiting::Data => {
                    self.close(conn);
                    return Err(UpstreamError::Invalid(Invalid::Unsolicited));
                }
            }
        }
    }

    /// Connects, unless the node is in back-off.
    fn connect(&self) -> Result<Box<HttpConn>, UpstreamError> {
        {
            let down = lock(&self.down);
            if let (Some(until), Some(last)) = (down.until, down.last) {
                if Instant::now() < until {
                    return Err(last);
                }
            }
        }
        match self.connect_member() {
            Ok(conn) => {
                let mut down = lock(&self.down);
                if down.until.take().is_some() {
                    tracing::info!(node = %self.name, addr = %self.addr, "node is reachable again");
                }
                *down = Down::default();
                drop(down);
                self.open.fetch_add(1, Relaxed);
                let mut conn = conn;
                if conn.waiting() == Waiting::Data {
                    // It spoke before it was asked (a banner, or an answer to nothing).
                    self.close(conn);
                    return Err(UpstreamError::Invalid(Invalid::Unsolicited));
                }
                Ok(Box::new(conn))
            }
            Err(failure) => {
                let failure = UpstreamError::from(failure);
                let mut down = lock(&self.down);
                down.backoff = (down.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                down.until = Some(Instant::now() + down.backoff);
                if down.last.is_none() {
                    tracing::warn!(node = %self.name, addr = %self.addr, ?failure, "cannot reach node");
                }
                down.last = Some(failure);
                Err(failure)
            }
        }
    }

    /// A connection to the node, or for a group to the first member that takes one, starting with the
    /// one that took the last. A member that refuses a connection was sent nothing, so trying the next
    /// is always safe; a request on a connection that breaks later is not resent (its outcome is unknown).
    fn connect_member(&self) -> Result<HttpConn, crate::wire::Failure> {
        let members = &self.target.group;
        if members.len() < 2 {
            return HttpConn::connect_within(&self.target, self.timeout);
        }
        let first = self.member.load(Relaxed) % members.len();
        let mut last = None;
        for i in 0..members.len() {
            let at = (first + i) % members.len();
            match HttpConn::connect_within(&self.target.at_member(members[at]), self.timeout) {
                Ok(conn) => {
                    if at != first {
                        self.member.store(at, Relaxed);
                        tracing::info!(node = %self.name, member = %members[at], "now sending to another member of the group");
                    }
                    return Ok(conn);
                }
                Err(failure) => last = Some(failure),
            }
        }
        Err(last.unwrap_or(crate::wire::Failure::Connect))
    }

    /// Closes a connection that is not in use.
    fn close<C>(&self, conn: C) {
        drop(conn);
        self.open.fetch_sub(1, Relaxed);
    }

    fn count(&self, e: UpstreamError) -> UpstreamError {
        self.errors[e.kind()].fetch_add(1, Relaxed);
        if let UpstreamError::Invalid(why) = e {
            tracing::warn!(node = %self.name, addr = %self.addr, %why, "invalid answer; connection closed");
        }
        e
    }

    /// Failures so far, by kind (`connect`, `timeout`, `io`, `protocol`, `busy`).
    pub fn errors(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        KINDS.iter().zip(&self.errors).map(|(&name, n)| (name, n.load(Relaxed)))
    }

    /// Open connections to this node.
    pub fn open_connections(&self) -> u64 {
        self.open.load(Relaxed)
    }

    /// The error a client gets for a request this node did not answer, naming the node: 504 when it
    /// did not answer in time, 503 when the proxy's own connection cap was the limit, 502 otherwise.
    pub fn error(&self, e: UpstreamError) -> HttpError {
        let who = self.who();
        match e {
            UpstreamError::Timeout => HttpError::GatewayTimeout(format!(
                "{who} did not answer within {}",
                humantime::format_duration(self.timeout)
            )),
            UpstreamError::Busy => HttpError::UpstreamBusy(format!(
                "{who}: all {} upstream connections busy for {}",
                self.max_connections,
                humantime::format_duration(self.timeout)
            )),
            UpstreamError::Connect => {
                HttpError::BadGateway(format!("{who} refused the connection (node down?)"))
            }
            UpstreamError::Io => {
                HttpError::BadGateway(format!("{who} closed the connection without an answer"))
            }
            UpstreamError::Invalid(why) => {
                HttpError::BadGateway(format!("{who} sent an invalid answer: {why}"))
            }
            UpstreamError::Tls => HttpError::BadGateway(format!(
                "{who}: TLS handshake failed (is its certificate signed by --upstream-tls-ca?)"
            )),
        }
    }
}

impl Group<'_> {
    /// Ends the group (its connection goes back to the pool, if sound) and gives back the room its
    /// answers took, for the next group.
    pub fn into_room(mut self) -> Vec<ResponseMeta> {
        std::mem::take(&mut self.answers)
    }

    /// Reads the answer to every request sent, under `rules` (one per request, in order); `requests` is
    /// what was sent, resent on a fresh connection if a pooled one proves closed before any answer.
    pub fn read_answers(&mut self, rules: &[AnswerRules], requests: &[u8]) {
        let Some(lease) = self.lease.as_mut() else { return };
        match lease.read_all(rules, &mut self.answers, requests) {
            Ok(()) => lease.sound = !self.answers.last().is_some_and(|a| a.close),
            Err(e) => {
                lease.discard();
                if matches!(e, UpstreamError::Invalid(_)) {
                    // One wrong answer puts every answer of the group in doubt.
                    self.answers.clear();
                }
                self.rest = self.upstream.count(e);
            }
        }
    }

    /// The answer to the next request of the group, in order, or the failure that stands for it.
    pub fn next_answer(&mut self) -> Result<Answer<'_>, UpstreamError> {
        let at = self.next;
        self.next += 1;
        let meta = *self.answers.get(at).ok_or(self.rest)?;
        let conn = self.lease.as_ref().and_then(|l| l.conn.as_ref()).ok_or(self.rest)?;
        let r = conn.response(&meta);
        Ok(Answer { status: r.status, raw: r.raw, head_len: r.raw.len() - r.body.len(), close: r.close })
    }
}

impl Lease<'_> {
    /// Reads one answer per rule into `answers`; then nothing may be left over.
    fn read_all(
        &mut self,
        rules: &[AnswerRules],
        answers: &mut Vec<ResponseMeta>,
        requests: &[u8],
    ) -> Result<(), UpstreamError> {
        let upstream = self.upstream;
        let conn = self.conn.as_mut().ok_or(UpstreamError::Io)?;
        conn.begin_group();
        for rule in rules {
            let meta = match conn.read_meta(rule) {
                Err(ReadError::Failed(Failure::Io)) if self.reused && answers.is_empty() => {
                    // A pooled connection the node had closed: once more, on a fresh one.
                    self.discard();
                    self.reused = false;
                    let conn = self.conn.insert(upstream.connect()?);
                    conn.send_bytes(requests)?;
                    return self.read_all(rules, answers, requests);
                }
                other => other?,
            };
            answers.push(meta);
            if meta.close {
                // The node closes after this one; the rest of the group gets no answer from it.
                return if answers.len() == rules.len() { Ok(()) } else { Err(UpstreamError::Io) };
            }
        }
        // Bytes already read past the last answer. (Any that arrive later are found when the connection
        // is next taken from the pool: [`Upstream::pooled`].)
        if conn.has_unread() {
            return Err(UpstreamError::Invalid(Invalid::Unsolicited));
        }
        Ok(())
    }

    /// Closes the connection now (broken, or in doubt).
    fn discard(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.upstream.close(conn);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if !self.sound || self.generation != self.upstream.generation.load(Relaxed) {
            self.discard();
        }
        if let Some(conn) = self.conn.take() {
            lock(&self.upstream.idle).push(conn);
        }
        self.upstream.permits.post();
    }
}

/// A fan-out sends one request to every node at once (each on a connection from its pool, taken in node
/// order like any group) and then reads the answers, so it takes as long as the slowest node, not the sum.
///
/// `GET {target}` to every node at once: each node's `(status, body)` (a body of at most `max_body`
/// bytes), or the error naming it.
pub fn fan_out(
    ups: &[std::sync::Arc<Upstream>],
    target: &str,
    max_body: usize,
) -> Vec<Result<(u16, Vec<u8>), HttpError>> {
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
