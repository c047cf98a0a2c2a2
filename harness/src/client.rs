//! A minimal HTTP/1.1 client connection: the load generator's, and the routing proxy's to its nodes.
//!
//! Hand-written over may's `TcpStream` rather than a general client (ureq, reqwest) because it is the
//! measuring instrument: it must cost less than the server it measures (the harness has to keep up with
//! `wrk -t1`), pipeline K requests with one write, and it only ever talks to OTKV nodes, whose responses
//! carry `Content-Length` whenever they have a body. Requests are encoded into one reusable buffer
//! (or, for the proxy, copied in as received); answers are parsed in place by the strict reader of
//! [`crate::response_head`] (anything a node could not have sent is refused, never guessed at), and handed out
//! whole as well as split, so the proxy can pass a node's answer on byte for byte.

use std::io;
use std::time::Duration;

use may::net::TcpStream;

use crate::target::Target;

use crate::response_head::{self, AnswerRules, Invalid, Parsed};
use crate::wire::Wire;
pub use crate::wire::{Failure, Waiting};

/// The largest body the load generator accepts by default (an answer's cap is set per connection).
pub const DEFAULT_MAX_BODY: usize = 64 << 20;

/// One keep-alive connection to a node.
pub struct HttpConn {
    wire: Wire,
    /// What follows every request target: ` HTTP/1.1`, `Host` and (with a token) `Authorization`.
    host: Vec<u8>,
    /// The largest body [`HttpConn::read_response`] accepts.
    max_body: usize,
}

impl std::fmt::Debug for HttpConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not `host`, nor the buffers: they hold the token.
        f.debug_struct("HttpConn").field("max_body", &self.max_body).finish_non_exhaustive()
    }
}

/// Why [`HttpConn::read_meta`] has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The connection failed (closed, reset, timed out).
    Failed(Failure),
    /// Bytes came, but not an answer a node could send.
    Invalid(Invalid),
}

impl From<Failure> for ReadError {
    fn from(f: Failure) -> Self {
        ReadError::Failed(f)
    }
}

impl ReadError {
    /// As the load generator counts it: an invalid answer is a protocol failure.
    pub fn failure(self) -> Failure {
        match self {
            ReadError::Failed(f) => f,
            ReadError::Invalid(_) => Failure::Protocol,
        }
    }
}

/// A parsed response; it borrows the connection's buffer until the next read.
#[derive(Debug)]
pub struct Response<'a> {
    /// Status code.
    pub status: u16,
    /// The body.
    pub body: &'a [u8],
    /// The whole response as received: status line, headers and body.
    pub raw: &'a [u8],
    /// The server closes the connection after this response (`Connection: close`).
    pub close: bool,
    /// The version in its `ETag`, if it has one.
    pub etag: Option<u64>,
}

/// Where a response read by [`HttpConn::read_meta`] lies in the connection's buffer.
#[derive(Debug, Clone, Copy)]
pub struct ResponseMeta {
    /// Status code.
    pub status: u16,
    start: usize,
    head_len: usize,
    total: usize,
    /// The server closes the connection after this response.
    pub close: bool,
    /// The version in its `ETag`, if it has one.
    pub etag: Option<u64>,
}

/// What a PUT may carry besides its value.
#[derive(Debug, Clone, Copy, Default)]
pub struct PutOptions {
    /// `?ttl=SECONDS`.
    pub ttl_secs: Option<u64>,
    /// A precondition, if any.
    pub condition: Option<Precondition>,
}

/// The precondition of a conditional PUT.
#[derive(Debug, Clone, Copy)]
pub enum Precondition {
    /// `If-Match: "v"`: only over this version.
    Matches(u64),
    /// `If-None-Match: *`: only if the key is absent.
    Absent,
}

impl HttpConn {
    /// Connects, with `timeout` for every read and write after.
    pub fn connect(target: &Target, timeout: Duration) -> Result<HttpConn, Failure> {
        Ok(HttpConn::over(Wire::connect(target, timeout)?, target))
    }

    /// Connects within `timeout` (a refused connection fails at once; an unanswered one after
    /// `timeout`, as [`Failure::Timeout`]), with `timeout` for every read and write after.
    ///
    /// may's own `connect_timeout` uses its racy socket timers (see `otkv_adapter_http::deadline`), so
    /// the connect runs on a short-lived helper thread with std's, and this coroutine waits on a channel.
    /// Only for rare connects (the proxy's, with back-off), not per request.
    pub fn connect_within(target: &Target, timeout: Duration) -> Result<HttpConn, Failure> {
        let addr = target.addr;
        let (tx, rx) = may::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("otkv-connect".into())
            .spawn(move || {
                let _ = tx.send(std::net::TcpStream::connect_timeout(&addr, timeout));
            })
            .map_err(|_| Failure::Connect)?;
        let std_stream = match rx.recv() {
            Ok(Ok(s)) => s,
            Ok(Err(e)) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
                return Err(Failure::Timeout)
            }
            _ => return Err(Failure::Connect),
        };
        let fd = std::os::fd::IntoRawFd::into_raw_fd(std_stream);
        // SAFETY: `fd` is a connected TCP socket we own (just taken out of a std `TcpStream`), handed over
        // exactly once; may's stream makes it non-blocking and registers it with its event loop.
        #[allow(unsafe_code)]
        let stream = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(HttpConn::over(Wire::over(stream, target, timeout)?, target))
    }

    fn over(wire: Wire, target: &Target) -> HttpConn {
        // The fixed part of every request head after the target: the `Host` and, with a token,
        // `Authorization`.
        let host = format!(" HTTP/1.1\r\nHost: {}\r\n{}", target.host, target.secure.authorization_line());
        HttpConn { wire, host: host.into_bytes(), max_body: DEFAULT_MAX_BODY }
    }

    /// Sets the largest body [`HttpConn::read_response`] accepts.
    pub fn set_max_body(&mut self, max_body: usize) {
        self.max_body = max_body;
    }

    /// Queues `GET /v1/kv/{key}`.
    pub fn push_get(&mut self, key: &[u8]) {
        self.push_head(b"GET ", key);
        self.wire.out.extend_from_slice(b"\r\n");
    }

    /// Queues `PUT /v1/kv/{key}` with the body `write_body` appends, a TTL (`?ttl=`) and a precondition.
    pub fn push_put_with(
        &mut self,
        key: &[u8],
        len: usize,
        opts: PutOptions,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) {
        self.wire.out.extend_from_slice(b"PUT /v1/kv/");
        self.wire.out.extend_from_slice(key);
        if let Some(ttl) = opts.ttl_secs {
            self.wire.out.extend_from_slice(b"?ttl=");
            self.wire.out.extend_from_slice(itoa::Buffer::new().format(ttl).as_bytes());
        }
        self.push_host();
        match opts.condition {
            None => {}
            Some(Precondition::Matches(version)) => {
                self.wire.out.extend_from_slice(b"If-Match: \"");
                self.wire.out.extend_from_slice(itoa::Buffer::new().format(version).as_bytes());
                self.wire.out.extend_from_slice(b"\"\r\n");
            }
            Some(Precondition::Absent) => self.wire.out.extend_from_slice(b"If-None-Match: *\r\n"),
        }
        self.wire.out.extend_from_slice(b"Content-Length: ");
        self.wire.out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        self.wire.out.extend_from_slice(b"\r\n\r\n");
        write_body(&mut self.wire.out);
    }

    /// Queues `POST path` with a JSON `body`.
    pub fn push_post_json(&mut self, path: &str, body: &[u8]) {
        self.wire.out.extend_from_slice(b"POST ");
        self.wire.out.extend_from_slice(path.as_bytes());
        self.push_host();
        self.wire.out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
        self.wire.out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        self.wire.out.extend_from_slice(b"\r\n\r\n");
        self.wire.out.extend_from_slice(body);
    }

    fn push_head(&mut self, method: &[u8], key: &[u8]) {
        self.wire.out.extend_from_slice(method);
        self.wire.out.extend_from_slice(b"/v1/kv/");
        self.wire.out.extend_from_slice(key);
        self.push_host();
    }

    /// Ends the request line and sends `Host` (and `Authorization`).
    fn push_host(&mut self) {
        self.wire.out.extend_from_slice(&self.host);
    }

    /// Sends everything queued, with one write.
    pub fn send(&mut self) -> Result<(), Failure> {
        self.wire.send()
    }

    /// Sends `requests`, already encoded (the proxy forwards what its clients sent), with one write.
    pub fn send_bytes(&mut self, requests: &[u8]) -> Result<(), Failure> {
        self.wire.send_bytes(requests)
    }

    /// Reads the next response (`no_body`: it answers a HEAD request, so it has none whatever its
    /// headers say), under the rules of [`crate::response_head`] with this connection's body cap. An invalid
    /// answer is [`Failure::Protocol`].
    pub fn read_response(&mut self, no_body: bool) -> Result<Response<'_>, Failure> {
        let rules = AnswerRules { head_only: no_body, continue_ok: false, max_body: self.max_body };
        self.wire.begin_answer();
        let meta = self.read_meta(&rules).map_err(ReadError::failure)?;
        Ok(self.response(&meta))
    }

    /// Reads the next answer under `rules`, returning where it lies in the connection's buffer rather
    /// than borrowing it. Every answer read since the last [`HttpConn::begin_group`] stays where its
    /// [`ResponseMeta`] says, so a whole group of answers can be read before any is passed on.
    pub fn read_meta(&mut self, rules: &AnswerRules) -> Result<ResponseMeta, ReadError> {
        let mut rules = *rules;
        self.wire.next_answer();
        loop {
            let head =
                match response_head::parse_head(self.wire.unread(), &rules).map_err(ReadError::Invalid)? {
                    Parsed::Partial => {
                        self.wire.fill(0)?;
                        continue;
                    }
                    Parsed::Continue(len) => {
                        // At most one `100 Continue` per request.
                        self.wire.consume(len);
                        rules.continue_ok = false;
                        continue;
                    }
                    Parsed::Final(head) => head,
                };
            let total = head.head_len + head.body_len;
            while self.wire.unread().len() < total {
                self.wire.fill(total)?;
            }
            let start = self.wire.position();
            self.wire.consume(total);
            return Ok(ResponseMeta {
                status: head.status,
                start,
                head_len: head.head_len,
                total,
                close: head.close,
                etag: head.etag,
            });
        }
    }

    /// Starts a group of answers that [`HttpConn::read_meta`] keeps readable together.
    pub fn begin_group(&mut self) {
        self.wire.begin_answer();
    }

    /// Whether bytes were read past the last answer.
    pub fn has_unread(&self) -> bool {
        !self.wire.unread().is_empty()
    }

    /// Whether the connection has bytes, or its end, waiting while it carries no request.
    pub fn waiting(&mut self) -> Waiting {
        self.wire.waiting()
    }

    /// The response `meta` describes (valid until the next read).
    pub fn response(&self, meta: &ResponseMeta) -> Response<'_> {
        let raw = self.wire.slice(meta.start, meta.total);
        Response { status: meta.status, body: &raw[meta.head_len..], raw, close: meta.close, etag: meta.etag }
    }
}
