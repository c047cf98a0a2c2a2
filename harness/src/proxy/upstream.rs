//! A node as the proxy sees it: a bounded pool of keep-alive connections, back-off after failed
//! connects, and error counters.
//!
//! - **Bounded.** At most `--upstream-connections` connections to a node are in use at once (a may
//!   semaphore; a batch that finds none free waits, up to the upstream timeout, then answers 504). A
//!   connection is taken from the idle pool for one forwarded group and given back after it, so an idle
//!   client holds none, and a new connection is opened only when none is idle: the pool never holds more
//!   than the cap. Groups take their nodes' permits in node order, so two groups can never each hold a
//!   permit the other waits for.
//! - **Stale connections.** A pooled connection the node has since closed (its idle timeout, a restart)
//!   fails on first use with nothing received; the group is then sent once more on a fresh connection.
//!   GET, HEAD, PUT and DELETE are idempotent (RFC 9110 §9.2.2), and the compatible API's POST is a
//!   plain set of the same value, so the retry cannot do twice what a client asked once.
//! - **Back-off.** A failed connect marks the node down for a while (50 ms, doubling to 1 s); meanwhile
//!   its keys are answered 502 at once, without a connect per request. The first connect after that
//!   time either brings it back or doubles the wait.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use otkv_adapter_http::error::HttpError;
use otkv_adapter_http::lock;

use crate::client::{Failure, HttpConn, ResponseMeta};
use crate::load::Target;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Kinds of upstream failure, as counted in `/metrics`.
pub const FAILURES: [(Failure, &str); 4] = [
    (Failure::Connect, "connect"),
    (Failure::Timeout, "timeout"),
    (Failure::Io, "io"),
    (Failure::Protocol, "protocol"),
];

/// One node behind the proxy.
pub struct Upstream {
    /// Its routing name (`node-0`, ...).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    host: String,
    timeout: Duration,
    idle: Mutex<Vec<HttpConn>>,
    permits: may::sync::Semphore,
    /// Open connections (idle and in use).
    open: AtomicU64,
    down: Mutex<Down>,
    /// Failures by kind, in the order of [`FAILURES`].
    errors: [AtomicU64; 4],
    /// Requests sent to this node.
    pub forwarded: AtomicU64,
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
    last: Option<Failure>,
}

/// A connection to a node, held for one forwarded group; back in the pool when dropped, if still sound.
#[derive(Debug)]
pub struct Lease<'u> {
    upstream: &'u Upstream,
    conn: Option<HttpConn>,
    /// Taken from the pool (so possibly stale) rather than freshly connected.
    reused: bool,
    /// Requests sent on it in this group, and answers read so far: it goes back to the pool only when
    /// every answer was read, so no stray answer is left for the next group.
    sent: usize,
    answered: usize,
    /// The node said `Connection: close`.
    closing: bool,
}

impl Upstream {
    /// The node `target`, with `timeout` for connects and answers and at most `max_connections` in use.
    pub fn new(target: &Target, timeout: Duration, max_connections: usize) -> Upstream {
        Upstream {
            name: target.name.clone(),
            addr: target.addr,
            host: target.host.clone(),
            timeout,
            idle: Mutex::new(Vec::new()),
            permits: may::sync::Semphore::new(max_connections.max(1)),
            open: AtomicU64::new(0),
            down: Mutex::default(),
            errors: Default::default(),
            forwarded: AtomicU64::new(0),
        }
    }

    /// The `Host` header value for requests the proxy makes itself.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Takes a connection (idle, or new) and sends `requests` (`count` of them) on it, once more on a
    /// fresh connection if a pooled one turns out to be closed.
    pub fn send(&self, requests: &[u8], count: usize) -> Result<Lease<'_>, Failure> {
        if !self.permits.try_wait() && !self.permits.wait_timeout(self.timeout) {
            return Err(self.count(Failure::Timeout));
        }
        self.forwarded.fetch_add(count as u64, Relaxed);
        let pooled = lock(&self.idle).pop();
        let mut lease = Lease {
            upstream: self,
            conn: None,
            reused: pooled.is_some(),
            sent: count,
            answered: 0,
            closing: false,
        };
        let first = match pooled {
            Some(conn) => lease.conn.insert(conn).send_bytes(requests),
            None => Err(Failure::Io),
        };
        if first.is_err() {
            lease.discard();
            lease.reused = false;
            let conn = self.connect()?;
            lease.conn.insert(conn).send_bytes(requests).map_err(|f| self.count(f))?;
        }
        Ok(lease)
    }

    /// Connects, unless the node is in back-off.
    fn connect(&self) -> Result<HttpConn, Failure> {
        {
            let down = lock(&self.down);
            if let (Some(until), Some(last)) = (down.until, down.last) {
                if Instant::now() < until {
                    return Err(last);
                }
            }
        }
        match HttpConn::connect_within(self.addr, &self.host, self.timeout) {
            Ok(conn) => {
                let mut down = lock(&self.down);
                if down.until.take().is_some() {
                    tracing::info!(node = %self.name, addr = %self.addr, "node is reachable again");
                }
                *down = Down::default();
                self.open.fetch_add(1, Relaxed);
                Ok(conn)
            }
            Err(failure) => {
                let mut down = lock(&self.down);
                down.backoff = (down.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                down.until = Some(Instant::now() + down.backoff);
                if down.last.is_none() {
                    tracing::warn!(node = %self.name, addr = %self.addr, ?failure, "cannot reach node");
                }
                down.last = Some(failure);
                Err(self.count(failure))
            }
        }
    }

    fn count(&self, failure: Failure) -> Failure {
        if let Some(i) = FAILURES.iter().position(|&(f, _)| f == failure) {
            self.errors[i].fetch_add(1, Relaxed);
        }
        failure
    }

    /// Failures so far, by kind, in the order of [`FAILURES`].
    pub fn errors(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        FAILURES.iter().zip(&self.errors).map(|(&(_, name), n)| (name, n.load(Relaxed)))
    }

    /// Open connections to this node.
    pub fn open_connections(&self) -> u64 {
        self.open.load(Relaxed)
    }

    /// The error a client gets for a request this node could not answer: 504 when it did not answer in
    /// time, 502 otherwise. Names the node.
    pub fn error(&self, failure: Failure) -> HttpError {
        let who = format!("{} ({})", self.name, self.addr);
        match failure {
            Failure::Timeout => HttpError::GatewayTimeout(format!(
                "{who} did not answer within {}",
                humantime::format_duration(self.timeout)
            )),
            Failure::Connect => HttpError::BadGateway(format!("{who} refused the connection (node down?)")),
            Failure::Io => HttpError::BadGateway(format!("{who} closed the connection without an answer")),
            Failure::Protocol => HttpError::BadGateway(format!("{who} sent an invalid response")),
        }
    }
}

impl Lease<'_> {
    /// Reads the answer to the next request sent on this lease; `requests` is everything sent on it,
    /// resent on a fresh connection if a pooled one proves closed before its first answer.
    pub fn read(&mut self, no_body: bool, requests: &[u8]) -> Result<ResponseMeta, Failure> {
        let upstream = self.upstream;
        let conn = self.conn.as_mut().ok_or(Failure::Io)?;
        let meta = match conn.read_meta(no_body) {
            Err(Failure::Io) if self.reused && self.answered == 0 => {
                self.discard();
                self.reused = false;
                let conn = self.conn.insert(upstream.connect()?);
                conn.send_bytes(requests).map_err(|f| upstream.count(f))?;
                conn.read_meta(no_body)
            }
            other => other,
        };
        match meta {
            Ok(meta) => {
                self.answered += 1;
                // Passed on as it is; the node closes the connection after it.
                self.closing |= meta.close;
                Ok(meta)
            }
            Err(failure) => {
                self.discard();
                Err(upstream.count(failure))
            }
        }
    }

    /// The connection, to look at the response [`Lease::read`] described.
    pub fn conn(&self) -> Option<&HttpConn> {
        self.conn.as_ref()
    }

    /// Closes the connection now (broken, or in doubt).
    fn discard(&mut self) {
        if self.conn.take().is_some() {
            self.upstream.open.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.closing || self.answered != self.sent {
            self.discard();
        }
        if let Some(conn) = self.conn.take() {
            lock(&self.upstream.idle).push(conn);
        }
        self.upstream.permits.post();
    }
}
