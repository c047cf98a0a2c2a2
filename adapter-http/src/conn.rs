//! One client connection: read, parse, answer, write. The hot path, shared by every [`Service`].
//!
//! The loop, once per batch of bytes from the socket:
//! 1. read what the socket has into `buf` (a read timeout bounds how long a client may stall);
//! 2. hand the complete requests in `buf` to the service through [`Requests`], which parses each head,
//!    applies the framing rules and the body cap, and encodes or accepts each response into `out`;
//! 3. write all of `out` with one `write_all`, as may_minihttp does: pipelined requests cost one syscall
//!    per batch, not per request.
//!
//! The rules that keep the byte stream trustworthy: a request is consumed exactly as its `Content-Length`
//! says, used or not, so a body is never parsed as the next request; an error whose framing is in doubt
//! answers and closes; responses already encoded for earlier requests of the batch are still sent. A panic
//! in a service is caught here and ends this connection only.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use may::io::WaitIo;
use may::net::TcpStream;

use crate::deadline::Deadline;
use crate::error::HttpError;
use crate::metrics::Op;
use crate::request::{self, Method, Preconditions};
use crate::response::{wall_clock_ns, ContentType, Encoder, Framing, Reply, CONTINUE};
use crate::routes::{self, Route};
use crate::server::Front;
use crate::service::Service;

/// The request head cap (431 beyond it).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
const INITIAL_BUF: usize = 4 * 1024;
/// Buffers that grew past this for a large body are given back once it is answered.
const KEEP_BUF: usize = 64 * 1024;
/// How long, and how much, we read and discard after an error before closing, so the client sees the
/// response rather than a reset caused by its own unread bytes.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

/// What the connection does after a batch.
#[derive(Debug, Clone, Copy)]
enum Next {
    /// Read more; `need` is how many bytes (from the start of the current request) it waits for.
    Read { need: usize, in_body: bool },
    /// Send what is encoded, then close.
    Close,
}

struct Connection<'s, S: Service> {
    /// Declared before `stream`, so it is dropped (removed from the reaper) before the socket closes.
    deadline: Deadline,
    stream: TcpStream,
    service: &'s S,
    front: &'s Front,
    session: S::Session,
    /// `buf[start..filled]` holds bytes received but not yet consumed.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    out: Vec<u8>,
    encoder: Encoder,
    /// `100 Continue` was sent for the request at `start`.
    continue_sent: bool,
    /// When the first byte of the current, incomplete request was seen.
    request_started: Option<Instant>,
    /// This connection counts in `Front::busy` (it holds a request not yet answered).
    busy: bool,
    /// The last read took less than it was offered: the socket had nothing more then, so the next read
    /// waits for may's readiness event first instead of trying (and getting `EAGAIN`) ([`read_or_wait`]).
    drained: bool,
}

/// Serves one connection until it closes. Never panics: a panic in the service is caught and answered.
pub fn serve<S: Service>(stream: TcpStream, service: &S) {
    let _ = stream.set_nodelay(true);
    let mut conn = Connection {
        deadline: Deadline::watch(stream.as_raw_fd()),
        stream,
        service,
        front: service.front(),
        session: service.session(),
        buf: vec![0; INITIAL_BUF],
        start: 0,
        filled: 0,
        out: Vec::with_capacity(INITIAL_BUF),
        encoder: Encoder::default(),
        continue_sent: false,
        request_started: None,
        busy: false,
        drained: false,
    };
    conn.run();
    conn.set_busy(false);
}

impl<S: Service> Connection<'_, S> {
    fn run(&mut self) {
        let mut next = Next::Read { need: 1, in_body: false };
        loop {
            let (need, in_body) = match next {
                Next::Read { need, in_body } => (need, in_body),
                Next::Close => return self.linger_close(),
            };
            if self.front.shutting_down.load(Relaxed) && self.start == self.filled {
                return;
            }
            match self.read_more(need, in_body) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {
                    if self.start < self.filled {
                        // Stalled mid-request: say so, then close.
                        let _ = self.encoder.refresh_date();
                        let err = HttpError::RequestTimeout;
                        respond_error(&mut self.out, &mut self.encoder, self.front, Op::Other, &err, false);
                        let _ = self.write_out();
                    }
                    return;
                }
                Err(_) => return,
            }
            self.set_busy(true);
            next = self.process_batch();
            if !self.out.is_empty() {
                if self.write_out().is_err() {
                    return;
                }
                self.out.clear();
                if self.out.capacity() > KEEP_BUF {
                    self.out.shrink_to(INITIAL_BUF);
                }
            }
            let pending = self.start < self.filled;
            self.set_busy(pending);
        }
    }

    /// Lets the service answer every complete request in the buffer.
    ///
    /// `inline(never)` is load-bearing. The node's service touches thread-locals (flurry's epoch guard),
    /// and this coroutine may resume on another worker thread after each read. If this function were
    /// inlined into the loop in `run`, the compiler may compute a thread-local's address once and reuse it
    /// after the coroutine moved, so two threads would share one epoch slot (seen as a segfault under load
    /// with LTO). A separate frame computes every thread-local address afresh, on the thread it runs on.
    #[inline(never)]
    fn process_batch(&mut self) -> Next {
        let started = self.encoder.refresh_date();
        let mut requests = Requests {
            window: &self.buf[self.start..self.filled],
            consumed: 0,
            out: &mut self.out,
            encoder: &mut self.encoder,
            front: self.front,
            continue_sent: self.continue_sent,
            continue_due: false,
            next: Next::Read { need: 1, in_body: false },
            started,
            untimed: 0,
        };
        let service = self.service;
        let session = &mut self.session;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            service.answer(session, &mut requests);
            requests.record_times();
            // A service stops pulling early only when it closes; make sure the state says so.
            (requests.consumed, requests.continue_sent, requests.continue_due, requests.next)
        }));
        match outcome {
            Ok((consumed, continue_sent, continue_due, next)) => {
                if consumed > 0 {
                    self.start += consumed;
                    self.request_started = None;
                }
                self.continue_sent = continue_sent;
                if continue_due {
                    // After every earlier response: the service may have appended some late (the proxy).
                    self.out.extend_from_slice(CONTINUE);
                    self.continue_sent = true;
                }
                next
            }
            Err(_) => {
                tracing::error!("a request handler panicked; closing its connection");
                let err = HttpError::Internal;
                respond_error(&mut self.out, &mut self.encoder, self.front, Op::Other, &err, false);
                Next::Close
            }
        }
    }

    /// Reads at least one byte into the buffer, making room for `need` bytes of the current request.
    fn read_more(&mut self, need: usize, in_body: bool) -> io::Result<usize> {
        // Move the unconsumed tail to the front; after this `start == 0`.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        if self.filled == 0 && self.buf.len() > KEEP_BUF {
            self.buf = vec![0; INITIAL_BUF];
        }
        if need > self.buf.len() || self.filled == self.buf.len() {
            let len = need.max(self.buf.len() * 2);
            self.buf.resize(len, 0);
        }
        let timeouts = &self.front.timeouts;
        let timeout = if self.filled == 0 {
            timeouts.idle
        } else if in_body {
            // The body must keep arriving: each read may wait one header timeout.
            timeouts.header
        } else {
            // The head must be complete within one header timeout of its first byte.
            let started = *self.request_started.get_or_insert_with(Instant::now);
            let left = timeouts.header.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            left
        };
        self.deadline.read_within(timeout);
        let read = read_or_wait(&mut self.stream, &mut self.buf[self.filled..], &mut self.drained);
        self.deadline.clear();
        if self.deadline.fired() {
            // The reaper shut the read side: the read saw end-of-file (or an error) because time ran out.
            return Err(io::ErrorKind::TimedOut.into());
        }
        let n = read?;
        self.filled += n;
        Ok(n)
    }

    /// Writes all of `out`; a client that does not read it within the idle timeout is disconnected.
    fn write_out(&mut self) -> io::Result<()> {
        self.deadline.write_within(self.front.timeouts.idle);
        let result = write_all_or_wait(&mut self.stream, &self.out);
        self.deadline.clear();
        // A wait for room to write clears the readiness flag a read event may have raised meanwhile: the
        // next read must try the socket rather than wait for that event again.
        if result.as_ref().is_ok_and(|&waited| waited) {
            self.drained = false;
        }
        result.map(|_| ())
    }

    /// Closes after an error or `Connection: close`: stop sending, then read and discard what the client
    /// already sent (bounded), so our last response is not lost to a reset.
    fn linger_close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        self.deadline.read_within(LINGER_TIME);
        let mut discarded = 0;
        while discarded < LINGER_BYTES && !self.deadline.fired() {
            match self.stream.read(&mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
        self.deadline.clear();
    }

    fn set_busy(&mut self, busy: bool) {
        if busy != self.busy {
            self.busy = busy;
            if busy {
                self.front.busy.fetch_add(1, Relaxed);
            } else {
                self.front.busy.fetch_sub(1, Relaxed);
            }
        }
    }
}

/// The complete requests of one batch, handed to a [`Service`] one at a time, in order.
///
/// [`Requests::next_request`] parses the next head and applies every framing rule before the service sees the
/// request: a request it returns is complete (head and body in memory) or carries the error to answer
/// with. The service must give each one exactly one response, through [`Requests::respond`] or, when it
/// produced the bytes elsewhere, [`Requests::pass`] followed by appending them to [`Requests::out`].
#[derive(Debug)]
pub struct Requests<'c> {
    /// The unconsumed bytes of the connection's buffer.
    window: &'c [u8],
    /// How many bytes of `window` belong to requests already answered.
    consumed: usize,
    out: &'c mut Vec<u8>,
    encoder: &'c mut Encoder,
    front: &'c Front,
    continue_sent: bool,
    continue_due: bool,
    next: Next,
    /// When the batch started, in [`wall_clock_ns`] (the clock read that also dates its responses).
    started: u64,
    /// Requests answered through [`Requests::respond`] whose time is not recorded yet.
    untimed: u64,
}

/// One request, complete, or the error it must be answered with.
#[derive(Debug)]
pub struct Exchange<'c> {
    /// The method.
    pub method: Method,
    /// The metrics label.
    pub op: Op,
    /// Errors on this path are JSON (the compatible API).
    pub json_errors: bool,
    /// Where it goes, or the error to answer with.
    pub route: Result<Route<'c>, HttpError>,
    /// The body (empty when there is none).
    pub body: &'c [u8],
    /// The whole request as received, head and body: what a proxy forwards.
    pub raw: &'c [u8],
    /// Its `If-Match` and `If-None-Match` headers.
    pub preconditions: Preconditions<'c>,
    /// It carries `Expect: 100-continue` (a proxy's node may answer `100 Continue` first).
    pub expects_continue: bool,
    /// The connection closes after this response (`Connection: close`, HTTP/1.0, shutdown, or an error
    /// that leaves the byte stream in doubt).
    pub closes: bool,
    framing: Framing,
}

impl<'c> Requests<'c> {
    /// The next request of the batch, or `None` when the buffer holds no further complete request (or the
    /// connection closes after the last one answered).
    #[inline]
    pub fn next_request(&mut self) -> Option<Exchange<'c>> {
        let next = self.take_request();
        if next.is_none() {
            // The service has every request it will get from this batch: time the ones it answered
            // before it waits (a `sync` write) or returns.
            self.record_times();
        }
        next
    }

    #[inline]
    fn take_request(&mut self) -> Option<Exchange<'c>> {
        if matches!(self.next, Next::Close) {
            return None;
        }
        let front = self.front;
        let limits = &front.limits;
        let data: &'c [u8] = &self.window[self.consumed..];
        if data.is_empty() {
            self.next = Next::Read { need: 1, in_body: false };
            return None;
        }
        let head = match request::parse(data, MAX_HEAD_BYTES) {
            Ok(Some(head)) => head,
            Ok(None) => {
                self.next = Next::Read { need: data.len() + 1, in_body: false };
                return None;
            }
            Err(err) => return Some(Exchange::fatal(Method::Other, Op::Other, false, err)),
        };
        let routed = routes::resolve(head.method, head.target, limits);
        let max_body = routed.max_body(head.method, limits);
        if head.body_len > max_body as u64 {
            let err = HttpError::PayloadTooLarge { len: head.body_len, max: max_body };
            return Some(Exchange::fatal(head.method, routed.op, routed.json_errors, err));
        }
        // Fits in usize: bounded by the head cap plus `max_body`.
        let total = head.head_len + head.body_len as usize;
        if data.len() < total {
            if head.expect_continue && data.len() == head.head_len && !self.continue_sent {
                if let Err(err) = routed.route {
                    // The client holds the body back for our answer: refuse it now, and close since it
                    // may send the body anyway.
                    return Some(Exchange::fatal(head.method, routed.op, routed.json_errors, err));
                }
                self.continue_due = true;
            }
            self.next = Next::Read { need: total, in_body: true };
            return None;
        }
        let keep_alive = head.keep_alive && !front.shutting_down.load(Relaxed);
        let head_only = head.method == Method::Head;
        Some(Exchange {
            method: head.method,
            op: routed.op,
            json_errors: routed.json_errors,
            route: routed.route,
            body: &data[head.head_len..total],
            raw: &data[..total],
            preconditions: head.preconditions,
            expects_continue: head.expect_continue,
            closes: !keep_alive,
            framing: Framing { close: !keep_alive, http10_keep_alive: head.http10 && keep_alive, head_only },
        })
    }

    /// Answers `exchange`: an `Err` route is answered with its error; otherwise `handler` gets the route,
    /// the body and a [`Responder`] to encode a success into, and its error, if any, is encoded here.
    /// Counts the request in the metrics. Returns the status sent.
    #[inline]
    pub fn respond(
        &mut self,
        exchange: Exchange<'c>,
        handler: impl FnOnce(Route<'c>, &'c [u8], &mut Responder<'_>) -> Result<u16, HttpError>,
    ) -> u16 {
        let Exchange { op, json_errors, route, body, raw, closes, framing, .. } = exchange;
        let mut responder = Responder { out: self.out, encoder: &mut *self.encoder, framing };
        let result = route.and_then(|route| handler(route, body, &mut responder));
        let status = match result {
            Ok(status) => {
                self.finish(raw.len(), closes);
                status
            }
            Err(err) => {
                let close = closes || err.closes_connection();
                let framing = Framing {
                    close,
                    http10_keep_alive: framing.http10_keep_alive && !close,
                    head_only: framing.head_only,
                };
                encode_error(self.out, &mut *self.encoder, &err, json_errors, framing);
                self.finish(raw.len(), close);
                err.status()
            }
        };
        // Counted now, timed with the rest of the batch once the service has taken every request it
        // can (`record_times`): one clock read per batch, not per request.
        self.front.metrics.count(op, status);
        self.untimed += 1;
        status
    }

    /// Records the time of the requests answered so far: the batch's time since it started (parsing,
    /// handling, encoding; not a `sync` write's wait for the disk, which comes after), each at the
    /// average. Called when the service has taken the last complete request, and after it returns.
    fn record_times(&mut self) {
        if self.untimed > 0 {
            // Wall-clock time, read once per batch; a clock stepped backwards counts as zero.
            let nanos = wall_clock_ns().saturating_sub(self.started);
            self.front.metrics.record_durations(self.untimed, nanos);
            self.untimed = 0;
        }
    }

    /// Consumes `exchange` without encoding a response: the caller appends one to [`Requests::out`]
    /// (a proxy, with the node's answer) and counts it. Only for an `Ok` route. Returns whether the
    /// connection closes after this response.
    pub fn pass(&mut self, exchange: &Exchange<'c>) -> bool {
        self.finish(exchange.raw.len(), exchange.closes);
        exchange.closes
    }

    /// Appends a response produced elsewhere (a node's answer, passed on as received) for a request
    /// consumed with [`Requests::pass`], and counts it: `nanos` is how long it took.
    pub fn send_raw(&mut self, op: Op, status: u16, response: &[u8], nanos: u64) {
        self.out.extend_from_slice(response);
        self.record(op, status, nanos);
    }

    /// Counts a response the caller appended to [`Requests::out`] itself, for a request consumed with
    /// [`Requests::pass`]: `nanos` is how long it took.
    pub fn record(&mut self, op: Op, status: u16, nanos: u64) {
        self.front.metrics.record(op, status, nanos);
    }

    /// Encodes `err` as the response to a request consumed with [`Requests::pass`] (with that request's
    /// `framing`), and counts it.
    pub fn send_error(&mut self, op: Op, err: &HttpError, json_errors: bool, framing: Framing, nanos: u64) {
        encode_error(self.out, &mut *self.encoder, err, json_errors, framing);
        self.front.metrics.record(op, err.status(), nanos);
    }

    /// Closes the connection after what is already in the output: the requests passed but not yet
    /// answered get no response (a node closed the connection it answered on with `Connection: close`,
    /// and that answer was passed on as it is).
    pub fn close_now(&mut self) {
        self.next = Next::Close;
    }

    /// Replaces everything encoded in this batch with one error, and closes: for a batch whose answers
    /// cannot stand (the node's `sync` writes that did not become durable).
    pub fn fail_batch(&mut self, err: &HttpError) {
        self.out.clear();
        respond_error(self.out, &mut *self.encoder, self.front, Op::Other, err, false);
        self.next = Next::Close;
    }

    /// The connection's output buffer: responses in request order.
    pub fn out(&mut self) -> &mut Vec<u8> {
        self.out
    }

    #[inline]
    fn finish(&mut self, len: usize, close: bool) {
        self.consumed += len;
        self.continue_sent = false;
        if close {
            self.next = Next::Close;
        }
    }
}

impl Exchange<'_> {
    /// How its response is framed (`Connection` header, HEAD).
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// A request refused before its body was read: answered, then the connection closes.
    fn fatal(method: Method, op: Op, json_errors: bool, err: HttpError) -> Self {
        Exchange {
            method,
            op,
            json_errors,
            route: Err(err),
            body: &[],
            raw: &[],
            preconditions: Preconditions::default(),
            expects_continue: false,
            closes: true,
            framing: Framing { close: true, http10_keep_alive: false, head_only: false },
        }
    }
}

/// Where a handler writes its successful response: straight into the connection's output buffer, so a
/// value read in place from the engine is copied exactly once.
#[derive(Debug)]
pub struct Responder<'a> {
    out: &'a mut Vec<u8>,
    encoder: &'a mut Encoder,
    framing: Framing,
}

impl Responder<'_> {
    /// Encodes a response and returns its status.
    pub fn send(&mut self, status: u16, content_type: Option<ContentType>, body: &[u8]) -> u16 {
        self.send_entry(status, content_type, body, None)
    }

    /// [`Responder::send`] for a stored value: with its `ETag` (and `Expires`) when `entry` is given.
    pub fn send_entry(
        &mut self,
        status: u16,
        content_type: Option<ContentType>,
        body: &[u8],
        entry: Option<otkv_engine::Meta>,
    ) -> u16 {
        let reply = Reply { status, content_type, body, allow: None, entry };
        self.encoder.encode(self.out, &reply, self.framing);
        status
    }
}

/// Encodes an error response that ends the connection, and counts it.
fn respond_error(
    out: &mut Vec<u8>,
    encoder: &mut Encoder,
    front: &Front,
    op: Op,
    err: &HttpError,
    json: bool,
) {
    encode_error(
        out,
        encoder,
        err,
        json,
        Framing { close: true, http10_keep_alive: false, head_only: false },
    );
    front.metrics.record(op, err.status(), 0);
}

fn encode_error(
    out: &mut Vec<u8>,
    encoder: &mut Encoder,
    err: &HttpError,
    json_errors: bool,
    framing: Framing,
) {
    let (content_type, text) = routes::error_body(err, json_errors);
    let reply = Reply {
        status: err.status(),
        content_type: Some(content_type),
        body: &text,
        allow: err.allow(),
        entry: None,
    };
    encoder.encode(out, &reply, framing);
}

/// Reads what the socket has, parking the coroutine until it is readable when it has nothing, and
/// updates `drained` (the connection's: the socket was found empty).
///
/// The socket is non-blocking (may made it so). may's own `TcpStream::read` tries a read, and on
/// `EAGAIN` parks through a per-call event source and reads again after waking; this is the shape of
/// may_minihttp's loop instead, about 200 instructions cheaper per read
/// (`benches/server/instructions.sh`):
/// - `drained` (the previous read came back short, so the socket was empty then): wait for may's
///   readiness flag before reading. `wait_io` returns at once if an event arrived since it last
///   returned (it clears the flag as it returns), and every byte that arrives after that sets it, so
///   nothing is missed; it saves the read that would only say `EAGAIN` on an idle keep-alive socket.
/// - Otherwise read at once, and wait only on `EAGAIN`.
///
/// Events are edge-triggered: a hang-up (`EPOLLRDHUP`) that arrived with the last data is reported once,
/// by the wait before the read that took the data, and the end of file stays to be read. So a short read
/// does not count as "empty" when a wait saw a hang-up (a connection once parked forever that way:
/// `a_request_sent_with_the_end_of_its_stream_is_answered_then_closed`). For the same reason a write
/// that waited (`write_all_or_wait`) makes the next read try first.
///
/// A deadline ends a wait by shutting the socket down, which raises the flag and makes the read
/// return 0.
///
/// `inline(never)`, like `process_batch`: `wait_io` parks the coroutine, which may resume on another
/// worker thread; in a frame of its own, nothing computed from a thread-local before the wait is reused
/// after it.
#[inline(never)]
fn read_or_wait(stream: &mut TcpStream, buf: &mut [u8], drained: &mut bool) -> io::Result<usize> {
    const HANG_UP: usize = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as usize;
    let mut hung_up = false;
    if *drained {
        hung_up = stream.wait_io() & HANG_UP != 0;
    }
    loop {
        match stream.inner_mut().read(buf) {
            Err(e) if would_block(&e) => {
                hung_up = stream.wait_io() & HANG_UP != 0;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => {
                *drained = result.as_ref().is_ok_and(|&n| n < buf.len()) && !hung_up;
                return result;
            }
        }
    }
}

/// Writes all of `data`, parking the coroutine while the socket's send buffer is full (as
/// [`read_or_wait`]). Returns whether it had to wait.
#[inline(never)]
fn write_all_or_wait(stream: &mut TcpStream, mut data: &[u8]) -> io::Result<bool> {
    let mut waited = false;
    while !data.is_empty() {
        match stream.inner_mut().write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if would_block(&e) => {
                stream.wait_io();
                waited = true;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(waited)
}

/// `EAGAIN`, tested by number (`io::Error::kind` maps every errno through a table first).
fn would_block(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EAGAIN)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}
