//! One batch's requests as a service sees them: [`Requests`] hands out each complete request as an
//! [`Exchange`], and a handler encodes its success through a [`Responder`].
//!
//! Everything a service cannot get wrong lives here: every framing rule is applied before the service sees
//! a request, each request gets exactly one response in request order, and each is counted in the
//! metrics once.

use std::sync::atomic::Ordering::Relaxed;

use super::access::{Grant, Need};
use super::error::HttpError;
use super::metrics::Op;
use super::request::{self, Method, Preconditions, MAX_HEAD_BYTES};
use super::response::{wall_clock_ns, ContentType, Encoder, EntryMeta, Framing, Reply};
use super::routes::{self, Route};
use super::state::Front;

/// What the connection does after a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Next {
    /// Read more; `need` is how many bytes (from the start of the current request) it waits for.
    Read { need: usize, in_body: bool },
    /// Send what is encoded, then close.
    Close,
}

/// The complete requests of one batch, handed to a [`Service`](super::Service) one at a time, in order.
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
    /// The connection's cached token check.
    grant: &'c mut Grant,
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
    /// The request target, as sent (its path is a created resource's `Location`).
    pub target: &'c str,
    /// Its `If-Match` and `If-None-Match` headers.
    pub preconditions: Preconditions<'c>,
    /// Its `Authorization` value (already checked, when the server checks tokens); a proxy replaces it.
    pub authorization: Option<&'c [u8]>,
    /// It carries `Expect: 100-continue` (a proxy's node may answer `100 Continue` first).
    pub expects_continue: bool,
    /// The connection closes after this response (`Connection: close`, HTTP/1.0, shutdown, or an error
    /// that leaves the byte stream in doubt).
    pub closes: bool,
    framing: Framing,
}

/// Where a batch left the connection: what [`Requests`] consumed and what comes next.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchEnd {
    /// Bytes of the window that belonged to answered requests.
    pub(crate) consumed: usize,
    /// `100 Continue` was sent for the (incomplete) request after them.
    pub(crate) continue_sent: bool,
    /// `100 Continue` is to be sent now, after every earlier response.
    pub(crate) continue_due: bool,
    /// Read more, or close.
    pub(crate) next: Next,
}

impl<'c> Requests<'c> {
    /// The requests in `window` (the connection's unconsumed bytes); responses go to `out`. `started` is
    /// when the batch began ([`Encoder::refresh_date`]'s clock read).
    pub(crate) fn new(
        window: &'c [u8],
        out: &'c mut Vec<u8>,
        encoder: &'c mut Encoder,
        front: &'c Front,
        continue_sent: bool,
        started: u64,
        grant: &'c mut Grant,
    ) -> Self {
        Requests {
            window,
            consumed: 0,
            out,
            encoder,
            front,
            continue_sent,
            continue_due: false,
            next: Next::Read { need: 1, in_body: false },
            started,
            untimed: 0,
            grant,
        }
    }

    /// Ends the batch: times what is not timed yet and says where the connection stands.
    pub(crate) fn end(mut self) -> BatchEnd {
        self.record_times();
        BatchEnd {
            consumed: self.consumed,
            continue_sent: self.continue_sent,
            continue_due: self.continue_due,
            next: self.next,
        }
    }

    /// The next request of the batch, or `None` when the buffer holds no further complete request (or the
    /// connection closes after the last one answered).
    ///
    /// `inline(always)`: it is the node's hot path, and with more than one service calling it the
    /// compiler would otherwise keep one shared copy (measured: about 120 instructions more per GET).
    #[inline(always)]
    pub fn next_request(&mut self) -> Option<Exchange<'c>> {
        let next = self.take_request();
        if next.is_none() {
            // The service has every request it will get from this batch: time the ones it answered
            // before it waits (a `sync` write) or returns.
            self.record_times();
        }
        next
    }

    // Inlined into `next_request` for the reason it is inlined into its callers.
    #[inline(always)]
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
        let mut routed = routes::resolve(head.method, head.target, limits);
        if let Some(tokens) = &front.tokens {
            let need = Need::of(head.method, &routed.route);
            if let Err(err) = self.grant.check(tokens, need, head.authorization) {
                if data.len()
                    < head.head_len.saturating_add(usize::try_from(head.body_len).unwrap_or(usize::MAX))
                {
                    // Its body is not here: refuse without reading it, and close.
                    return Some(Exchange::fatal(head.method, routed.op, routed.json_errors, err));
                }
                routed.route = Err(err);
            }
        }
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
            target: head.target,
            preconditions: head.preconditions,
            authorization: head.authorization,
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
        let Exchange { op, json_errors, route, body, raw, target, closes, framing, .. } = exchange;
        let mut responder = Responder { out: self.out, encoder: &mut *self.encoder, framing, target };
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
            target: "",
            preconditions: Preconditions::default(),
            authorization: None,
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
    /// The request target: its path is the `Location` of a `201 Created`.
    target: &'a str,
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
        entry: Option<EntryMeta>,
    ) -> u16 {
        // Only a 201 looks for the query: no other answer pays for the scan.
        let location =
            (status == 201).then(|| self.target.split_once('?').map_or(self.target, |(path, _)| path));
        let reply = Reply { status, content_type, body, header: None, entry, location };
        self.encoder.encode(self.out, &reply, self.framing);
        status
    }
}

/// Encodes an error response that ends the connection, and counts it.
pub(crate) fn respond_error(
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
    let (content_type, text) = err.body(json_errors);
    let reply = Reply {
        status: err.status(),
        content_type: Some(content_type),
        body: &text,
        header: err.header(),
        entry: None,
        location: None,
    };
    encoder.encode(out, &reply, framing);
}
