//! One client connection: read, parse, answer, write. The hot path, shared by every [`Service`].
//!
//! The loop, once per batch of bytes from the socket:
//! 1. read what the socket has into `buf` (a read timeout bounds how long a client may stall);
//! 2. hand the complete requests in `buf` to the service through [`Requests`], which parses each head,
//!    applies the framing rules and the body cap, and encodes or accepts each response into `out`;
//! 3. write all of `out` with one `write_all`, as `may_minihttp` does: pipelined requests cost one syscall
//!    per batch, not per request.
//!
//! The rules that keep the byte stream trustworthy: a request is consumed exactly as its `Content-Length`
//! says, used or not, so a body is never parsed as the next request; an error whose framing is in doubt
//! answers and closes; responses already encoded for earlier requests of the batch are still sent. A panic
//! in a service is caught here and ends this connection only.

use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use may::net::TcpStream;

use super::access::Grant;
use super::deadline::Deadline;
use super::error::HttpError;
use super::exchange::{respond_error, BatchEnd, Next, Requests};
use super::metrics::Op;
use super::response::{Encoder, CONTINUE};
use super::service::Service;
use super::socket::{is_timeout, read_or_wait, write_all_or_wait};
use super::state::Front;
use super::tls::TlsSession;

const INITIAL_BUF: usize = 4 * 1024;
/// Buffers that grew past this for a large body are given back once it is answered.
const KEEP_BUF: usize = 64 * 1024;
/// How long, and how much, we read and discard after an error before closing, so the client sees the
/// response rather than a reset caused by its own unread bytes.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

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
    /// The TLS layer, on an HTTPS server.
    tls: Option<Box<TlsSession>>,
    /// The connection's cached token check.
    grant: Grant,
}

/// Serves one connection until it closes. Never panics: a panic in the service is caught and answered.
pub(crate) fn serve_connection<S: Service>(stream: TcpStream, service: &S) {
    let _ = stream.set_nodelay(true);
    let front = service.front();
    let tls = match front.tls.as_ref().map(TlsSession::new).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start TLS on a connection");
            return;
        }
    };
    let mut conn = Connection {
        deadline: Deadline::watch(stream.as_raw_fd()),
        stream,
        service,
        front,
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
        tls,
        grant: Grant::default(),
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
        let requests = Requests::new(
            &self.buf[self.start..self.filled],
            &mut self.out,
            &mut self.encoder,
            self.front,
            self.continue_sent,
            started,
            &mut self.grant,
        );
        let service = self.service;
        let session = &mut self.session;
        let outcome = catch_unwind(AssertUnwindSafe(move || {
            let mut requests = requests;
            service.answer(session, &mut requests);
            // A service stops pulling early only when it closes; the state says so.
            requests.end()
        }));
        if let Ok(BatchEnd { consumed, continue_sent, continue_due, next }) = outcome {
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
        } else {
            tracing::error!("a request handler panicked; closing its connection");
            let err = HttpError::Internal;
            respond_error(&mut self.out, &mut self.encoder, self.front, Op::Other, &err, false);
            Next::Close
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
        loop {
            match self.read_within_timeout(in_body) {
                // The TLS handshake just finished: the request's clock starts now.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.request_started = None,
                Ok(n) => {
                    self.filled += n;
                    return Ok(n);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One read into the free part of the buffer, within the timeout that applies: the idle timeout
    /// between requests, the header timeout for a head (from its first byte) or a TLS handshake (from
    /// the connection's start), or between reads of a body.
    fn read_within_timeout(&mut self, in_body: bool) -> io::Result<usize> {
        let timeouts = &self.front.timeouts;
        let handshaking = self.tls.as_ref().is_some_and(|tls| tls.is_handshaking());
        let timeout = if self.filled == 0 && !handshaking {
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
        let free = &mut self.buf[self.filled..];
        let read = match &mut self.tls {
            None => read_or_wait(&mut self.stream, free, &mut self.drained),
            Some(tls) => tls.read(&mut self.stream, free, &mut self.drained),
        };
        self.deadline.clear();
        if self.deadline.fired() {
            // The reaper shut the read side: the read saw end-of-file (or an error) because time ran out.
            return Err(io::ErrorKind::TimedOut.into());
        }
        read
    }

    /// Writes all of `out`; a client that does not read it within the idle timeout is disconnected.
    fn write_out(&mut self) -> io::Result<()> {
        self.deadline.write_within(self.front.timeouts.idle);
        let result = match &mut self.tls {
            None => write_all_or_wait(&mut self.stream, &self.out),
            Some(tls) => tls.write_all(&mut self.stream, &self.out),
        };
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
        if let Some(tls) = &mut self.tls {
            tls.close(&mut self.stream);
        }
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
