//! A minimal HTTP/1.1 client connection for the load generator.
//!
//! Hand-written over may's `TcpStream` rather than a general client (ureq, reqwest) because it is the
//! measuring instrument: it must cost less than the server it measures (the harness has to keep up with
//! `wrk -t1`), pipeline K requests with one write, and it only ever talks to OTKV nodes, whose responses
//! always carry `Content-Length`. Requests are encoded into one reusable buffer; responses are parsed in
//! place with `httparse`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use std::os::fd::AsRawFd;

use may::net::TcpStream;
use otkv_adapter_http::deadline::Deadline;

/// Why a request got no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The node refused or did not accept the connection.
    Connect,
    /// No response within the timeout.
    Timeout,
    /// The connection broke (reset, closed mid-response).
    Io,
    /// The response was not valid HTTP.
    Protocol,
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Failure::Timeout,
            _ => Failure::Io,
        }
    }
}

/// One keep-alive connection to a node.
#[derive(Debug)]
pub struct HttpConn {
    /// Request timeouts, enforced without may's racy socket timeouts (see
    /// `otkv_adapter_http::deadline`). Declared before `stream` so it is dropped first.
    deadline: Deadline,
    timeout: Duration,
    stream: TcpStream,
    host: String,
    out: Vec<u8>,
    buf: Vec<u8>,
    start: usize,
    filled: usize,
}

/// A parsed response; `body` borrows the connection's buffer until the next read.
#[derive(Debug)]
pub struct Response<'a> {
    /// Status code.
    pub status: u16,
    /// The body.
    pub body: &'a [u8],
}

impl HttpConn {
    /// Connects, with `timeout` for every read and write after.
    pub fn connect(addr: SocketAddr, host: &str, timeout: Duration) -> Result<HttpConn, Failure> {
        let stream = TcpStream::connect(addr).map_err(|_| Failure::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(HttpConn {
            deadline: Deadline::watch(stream.as_raw_fd()),
            timeout,
            stream,
            host: host.to_string(),
            out: Vec::with_capacity(4096),
            buf: vec![0; 16 * 1024],
            start: 0,
            filled: 0,
        })
    }

    /// Queues `GET /v1/kv/{key}`.
    pub fn push_get(&mut self, key: &[u8]) {
        self.push_head(b"GET ", key);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Queues `PUT /v1/kv/{key}` with the body `write_body` appends.
    pub fn push_put(&mut self, key: &[u8], len: usize, write_body: impl FnOnce(&mut Vec<u8>)) {
        self.push_head(b"PUT ", key);
        self.out.extend_from_slice(b"Content-Length: ");
        self.out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        self.out.extend_from_slice(b"\r\n\r\n");
        write_body(&mut self.out);
    }

    fn push_head(&mut self, method: &[u8], key: &[u8]) {
        self.out.extend_from_slice(method);
        self.out.extend_from_slice(b"/v1/kv/");
        self.out.extend_from_slice(key);
        self.out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.out.extend_from_slice(self.host.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Sends everything queued, with one write.
    pub fn send(&mut self) -> Result<(), Failure> {
        self.deadline.write_within(self.timeout);
        let result = self.stream.write_all(&self.out);
        self.deadline.clear();
        self.out.clear();
        if self.deadline.fired() {
            return Err(Failure::Timeout);
        }
        result.map_err(Failure::from)
    }

    /// Reads the next response.
    pub fn read_response(&mut self) -> Result<Response<'_>, Failure> {
        // Drop the previous response's bytes.
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
        }
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf[self.start..self.filled]) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut len = 0usize;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            len = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .ok_or(Failure::Protocol)?;
                        }
                    }
                    let total = head_len + len;
                    while self.filled - self.start < total {
                        self.fill(total)?;
                    }
                    let body_start = self.start + head_len;
                    self.start += total;
                    return Ok(Response { status, body: &self.buf[body_start..body_start + len] });
                }
                Ok(httparse::Status::Partial) => self.fill(0)?,
                Err(_) => return Err(Failure::Protocol),
            }
        }
    }

    /// Reads more bytes, making room for `need` bytes from `start`.
    fn fill(&mut self, need: usize) -> Result<(), Failure> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        if need > self.buf.len() || self.filled == self.buf.len() {
            let len = need.max(self.buf.len() * 2);
            self.buf.resize(len, 0);
        }
        self.deadline.read_within(self.timeout);
        let read = self.stream.read(&mut self.buf[self.filled..]);
        self.deadline.clear();
        if self.deadline.fired() {
            return Err(Failure::Timeout);
        }
        match read {
            Ok(0) => Err(Failure::Io),
            Ok(n) => {
                self.filled += n;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}
