//! One client connection: read, parse, answer, write. The hot path.
//!
//! The loop, once per batch of bytes from the socket:
//! 1. read what the socket has into `buf` (a read timeout bounds how long a client may stall);
//! 2. inside one engine batch (one epoch guard, no I/O, no yield), parse every complete request in `buf`,
//!    run it, and encode its response into `out`;
//! 3. write all of `out` with one `write_all`, as may_minihttp does: pipelined requests cost one syscall
//!    per batch, not per request.
//!
//! The rules that keep the byte stream trustworthy: a request is consumed exactly as its `Content-Length`
//! says, used or not, so a body is never parsed as the next request; an error whose framing is in doubt
//! answers and closes; responses already encoded for earlier requests of the batch are still sent. A panic
//! in a handler is caught here and ends this connection only.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use may::net::TcpStream;
use otkv_engine::Batch;

use crate::deadline::Deadline;
use crate::error::HttpError;
use crate::metrics::Op;
use crate::request::{self, Method};
use crate::response::{Encoder, Framing, Reply, CONTINUE};
use crate::routes::{self, Context, Responder};
use crate::server::Shared;

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
enum Next {
    /// Read more; `need` is how many bytes (from the start of the current request) it waits for.
    Read { need: usize, in_body: bool },
    /// Send what is encoded, then close.
    Close,
}

struct Connection<'s> {
    /// Declared before `stream`, so it is dropped (removed from the reaper) before the socket closes.
    deadline: Deadline,
    stream: TcpStream,
    shared: &'s Shared,
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
    /// This connection counts in `Shared::busy` (it holds a request not yet answered).
    busy: bool,
}

/// Serves one connection until it closes. Never panics: a panic in a handler is caught and answered.
pub fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let mut conn = Connection {
        deadline: Deadline::watch(stream.as_raw_fd()),
        stream,
        shared,
        buf: vec![0; INITIAL_BUF],
        start: 0,
        filled: 0,
        out: Vec::with_capacity(INITIAL_BUF),
        encoder: Encoder::default(),
        continue_sent: false,
        request_started: None,
        busy: false,
    };
    conn.run();
    conn.set_busy(false);
}

impl Connection<'_> {
    fn run(&mut self) {
        let mut next = Next::Read { need: 1, in_body: false };
        loop {
            let (need, in_body) = match next {
                Next::Read { need, in_body } => (need, in_body),
                Next::Close => return self.linger_close(),
            };
            if self.shared.shutting_down.load(Relaxed) && self.start == self.filled {
                return;
            }
            match self.read_more(need, in_body) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {
                    if self.start < self.filled {
                        // Stalled mid-request: say so, then close.
                        self.encoder.refresh_date();
                        let err = HttpError::RequestTimeout;
                        respond_error(&mut self.out, &self.encoder, self.shared, Op::Other, &err, false);
                        let _ = self.write_out();
                    }
                    return;
                }
                Err(_) => return,
            }
            self.set_busy(true);
            let ticket;
            (next, ticket) = self.process_batch();
            if let Some(ticket) = ticket {
                // `sync` durability: the batch's writes are acknowledged only once durable. The coroutine
                // parks (its worker thread serves other connections) until the flusher's sync covers it.
                if let Err(reason) = self.shared.durable_waits.wait(&self.shared.engine, ticket) {
                    self.out.clear();
                    let err = HttpError::NotDurable(reason);
                    respond_error(&mut self.out, &self.encoder, self.shared, Op::Other, &err, false);
                    next = Next::Close;
                }
            }
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

    /// Parses and answers every complete request in the buffer, inside one engine batch.
    ///
    /// `inline(never)` is load-bearing. The engine batch touches thread-locals (flurry's epoch guard), and
    /// this coroutine may resume on another worker thread after each read. If this function were inlined
    /// into the loop in `run`, the compiler may compute a thread-local's address once and reuse it after
    /// the coroutine moved, so two threads would share one epoch slot (seen as a segfault under load with
    /// LTO). A separate frame computes every thread-local address afresh, on the thread it runs on.
    ///
    /// Returns what to do next and, in `sync` mode, the durability ticket the batch's writes wait for.
    #[inline(never)]
    fn process_batch(&mut self) -> (Next, Option<u64>) {
        self.encoder.refresh_date();
        let shared = self.shared;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            shared.engine.batch(|batch| (self.answer_all(batch, &mut Instant::now()), batch.sync_ticket()))
        }));
        outcome.unwrap_or_else(|_| {
            tracing::error!("a request handler panicked; closing its connection");
            respond_error(&mut self.out, &self.encoder, shared, Op::Other, &HttpError::Internal, false);
            (Next::Close, None)
        })
    }

    fn answer_all(&mut self, batch: &Batch<'_>, last_answered: &mut Instant) -> Next {
        let shared = self.shared;
        let limits = &shared.limits;
        loop {
            let data = &self.buf[self.start..self.filled];
            if data.is_empty() {
                return Next::Read { need: 1, in_body: false };
            }
            let head = match request::parse(data, MAX_HEAD_BYTES) {
                Ok(Some(head)) => head,
                Ok(None) => return Next::Read { need: data.len() + 1, in_body: false },
                Err(err) => {
                    respond_error(&mut self.out, &self.encoder, shared, Op::Other, &err, false);
                    return Next::Close;
                }
            };
            let routed = routes::resolve(head.method, head.target, limits);
            let max_body = routed.max_body(head.method, limits);
            if head.body_len > max_body as u64 {
                let err = HttpError::PayloadTooLarge { len: head.body_len, max: max_body };
                respond_error(&mut self.out, &self.encoder, shared, routed.op, &err, routed.json_errors);
                return Next::Close;
            }
            // Fits in usize: bounded by the head cap plus `max_body`.
            let total = head.head_len + head.body_len as usize;
            if data.len() < total {
                if head.expect_continue && data.len() == head.head_len && !self.continue_sent {
                    if let Err(err) = &routed.route {
                        // The client holds the body back for our answer: refuse it now, and close since
                        // it may send the body anyway.
                        respond_error(
                            &mut self.out,
                            &self.encoder,
                            shared,
                            routed.op,
                            err,
                            routed.json_errors,
                        );
                        return Next::Close;
                    }
                    self.out.extend_from_slice(CONTINUE);
                    self.continue_sent = true;
                }
                return Next::Read { need: total, in_body: true };
            }

            let body = &data[head.head_len..total];
            let ctx =
                Context { engine: &shared.engine, metrics: &shared.metrics, limits, in_flight: &shared.busy };
            let head_only = head.method == Method::Head;
            let keep_alive = head.keep_alive && !shared.shutting_down.load(Relaxed);
            let framing =
                Framing { close: !keep_alive, http10_keep_alive: head.http10 && keep_alive, head_only };
            let mut responder = Responder { out: &mut self.out, encoder: &self.encoder, framing };
            let result = routed
                .route
                .and_then(|route| routes::handle(&route, head.method, body, batch, &ctx, &mut responder));
            let (status, close) = match result {
                Ok(status) => (status, !keep_alive),
                Err(err) => {
                    let close = !keep_alive || err.closes_connection();
                    let framing = Framing { close, http10_keep_alive: head.http10 && !close, head_only };
                    encode_error(&mut self.out, &self.encoder, &err, routed.json_errors, framing);
                    (err.status(), close)
                }
            };
            // One clock read per request: the time since the previous request of the batch was answered
            // (or the batch started) covers this request's parsing, handling and encoding.
            let now = Instant::now();
            shared.metrics.record(routed.op, status, elapsed_nanos(*last_answered, now));
            *last_answered = now;
            self.start += total;
            self.continue_sent = false;
            self.request_started = None;
            if close {
                return Next::Close;
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
        let timeouts = &self.shared.timeouts;
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
        let read = self.stream.read(&mut self.buf[self.filled..]);
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
        self.deadline.write_within(self.shared.timeouts.idle);
        let result = self.stream.write_all(&self.out);
        self.deadline.clear();
        result
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
                self.shared.busy.fetch_add(1, Relaxed);
            } else {
                self.shared.busy.fetch_sub(1, Relaxed);
            }
        }
    }
}

/// Encodes an error response that ends the connection, and counts it.
fn respond_error(
    out: &mut Vec<u8>,
    encoder: &Encoder,
    shared: &Shared,
    op: Op,
    err: &HttpError,
    json_errors: bool,
) {
    encode_error(
        out,
        encoder,
        err,
        json_errors,
        Framing { close: true, http10_keep_alive: false, head_only: false },
    );
    shared.metrics.record(op, err.status(), 0);
}

fn encode_error(out: &mut Vec<u8>, encoder: &Encoder, err: &HttpError, json_errors: bool, framing: Framing) {
    let (content_type, text) = routes::error_body(err, json_errors);
    let reply =
        Reply { status: err.status(), content_type: Some(content_type), body: &text, allow: err.allow() };
    encoder.encode(out, &reply, framing);
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}

fn elapsed_nanos(since: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(since).as_nanos()).unwrap_or(u64::MAX)
}
