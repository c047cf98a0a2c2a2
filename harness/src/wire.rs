//! The byte stream under both of the harness's client protocols ([`crate::client`]'s HTTP/1.1 and
//! [`crate::resp`]'s RESP): one may `TcpStream`, a reusable output buffer that a batch of requests is
//! encoded into and sent with one write, and a read buffer that answers are parsed from in place.
//!
//! Timeouts are enforced with `otkv_adapter_http::deadline` rather than may's socket timeouts, which race
//! (see that module).
//!
//! Over TLS (a target with [`crate::secure::Secure::tls`]) the same buffers carry plaintext: the handshake
//! is done when the connection is made, requests are encrypted into one buffer and sent with one write,
//! and answers are decrypted into `buf` as they arrive.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use may::net::TcpStream;
use otkv_adapter_http::front::tls::{ClientConnection, ServerName};
use otkv_adapter_http::front::Deadline;

use crate::target::Target;

/// A connection's read buffer, and the most it keeps between answers.
const INITIAL_BUF: usize = 16 * 1024;
const KEEP_BUF: usize = 64 * 1024;

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
    /// The response was not valid HTTP (or RESP).
    Protocol,
    /// The TLS handshake failed (an untrusted or expired certificate, say) or a record was invalid.
    Tls,
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Failure::Timeout,
            _ => Failure::Io,
        }
    }
}

/// A connected stream with its buffers.
#[derive(Debug)]
pub struct Wire {
    /// Declared before `stream` so it is dropped first.
    deadline: Deadline,
    timeout: Duration,
    stream: TcpStream,
    /// Requests queued for the next [`Wire::send`].
    pub out: Vec<u8>,
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start and end.
    start: usize,
    filled: usize,
    /// Where the answers being read began ([`Wire::begin_answer`]): [`Wire::fill`] keeps every byte
    /// from here on, so answers read earlier in a group stay readable at their [`Wire::position`].
    mark: usize,
    /// When the answer being read must be complete, on the deadline reaper's clock: set by the first
    /// [`Wire::fill`] it needs, so an answer that drips in slowly times out as surely as one that never
    /// comes.
    answer_by_ms: Option<u64>,
    /// The TLS layer, to an `https://` or `rediss://` target.
    tls: Option<Box<ClientConnection>>,
    /// Records to send, gathered so requests go out in one write.
    sealed: Vec<u8>,
}

/// What a connection that should be quiet has waiting ([`Wire::waiting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Nothing: it can carry a request.
    Nothing,
    /// The peer closed it.
    Closed,
    /// Bytes nobody asked for.
    Data,
}

impl Wire {
    /// Connects to `target` (and, over TLS, completes the handshake), with `timeout` for the handshake and
    /// every read and write after.
    pub fn connect(target: &Target, timeout: Duration) -> Result<Wire, Failure> {
        let stream = TcpStream::connect(target.addr).map_err(|_| Failure::Connect)?;
        Wire::over(stream, target, timeout)
    }

    /// Wraps a stream connected to `target`: over TLS, does the handshake.
    pub fn over(stream: TcpStream, target: &Target, timeout: Duration) -> Result<Wire, Failure> {
        let mut wire = Wire::clear(stream, timeout);
        if let Some(config) = &target.secure.tls {
            let name = server_name(&target.host).ok_or(Failure::Tls)?;
            let mut tls =
                ClientConnection::new(std::sync::Arc::clone(config), name).map_err(|_| Failure::Tls)?;
            // Requests are written whole, however many; the socket write is what waits.
            tls.set_buffer_limit(None);
            wire.tls = Some(Box::new(tls));
            wire.handshake()?;
        }
        Ok(wire)
    }

    fn clear(stream: TcpStream, timeout: Duration) -> Wire {
        let _ = stream.set_nodelay(true);
        Wire {
            deadline: Deadline::watch(stream.as_raw_fd()),
            timeout,
            stream,
            out: Vec::with_capacity(4096),
            buf: vec![0; INITIAL_BUF],
            start: 0,
            filled: 0,
            mark: 0,
            answer_by_ms: None,
            tls: None,
            sealed: Vec::new(),
        }
    }

    fn handshake(&mut self) -> Result<(), Failure> {
        let Some(tls) = &mut self.tls else { return Ok(()) };
        self.deadline.read_within(self.timeout);
        let result = tls.complete_io(&mut self.stream);
        self.deadline.clear();
        if self.deadline.fired() {
            return Err(Failure::Timeout);
        }
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                tracing::debug!(error = %e, "TLS handshake failed");
                Err(Failure::Tls)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends everything queued in `out`, with one write.
    pub fn send(&mut self) -> Result<(), Failure> {
        let out = std::mem::take(&mut self.out);
        let result = self.send_bytes(&out);
        self.out = out;
        self.out.clear();
        result
    }

    /// Sends `bytes` with one write.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.deadline.write_within(self.timeout);
        let result = match &mut self.tls {
            None => self.stream.write_all(bytes),
            Some(tls) => {
                self.sealed.clear();
                tls.writer().write_all(bytes).map_err(|_| Failure::Tls)?;
                while tls.wants_write() {
                    tls.write_tls(&mut self.sealed).map_err(|_| Failure::Tls)?;
                }
                self.stream.write_all(&self.sealed)
            }
        };
        self.deadline.clear();
        if self.deadline.fired() {
            return Err(Failure::Timeout);
        }
        result.map_err(Failure::from)
    }

    /// Call before parsing the next answer, or the first of a group of answers that must all stay
    /// readable: when everything read has been consumed, starts the buffer over, and gives back memory a
    /// large answer made it grow (the proxy keeps many idle connections). Answers read after this are
    /// kept until the next call.
    pub fn begin_answer(&mut self) {
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
            if self.buf.len() > KEEP_BUF {
                self.buf = vec![0; INITIAL_BUF];
            }
        }
        self.mark = self.start;
        self.answer_by_ms = None;
    }

    /// Starts the clock of the next answer afresh (one answer of a group, after the first).
    pub fn next_answer(&mut self) {
        self.answer_by_ms = None;
    }

    /// The bytes read and not yet consumed.
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.filled]
    }

    /// Where the unread bytes start, counted from the last [`Wire::begin_answer`] (for [`Wire::slice`]).
    pub fn position(&self) -> usize {
        self.start - self.mark
    }

    /// Marks `n` unread bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.filled);
    }

    /// `len` bytes from `at` (a [`Wire::position`] since the last [`Wire::begin_answer`]); valid until
    /// the next `begin_answer`.
    pub fn slice(&self, at: usize, len: usize) -> &[u8] {
        &self.buf[self.mark + at..self.mark + at + len]
    }

    /// Reads until at least `need` bytes are unread (at least one more byte when `need` is 0 or
    /// already met): moves the kept bytes (from the mark) to the front, grows the buffer when they would
    /// not fit.
    pub fn fill(&mut self, need: usize) -> Result<(), Failure> {
        if self.mark > 0 {
            self.buf.copy_within(self.mark..self.filled, 0);
            self.filled -= self.mark;
            self.start -= self.mark;
            self.mark = 0;
        }
        let need = self.start + need;
        if need > self.buf.len() || self.filled == self.buf.len() {
            let len = need.max(self.buf.len() * 2);
            self.buf.resize(len, 0);
        }
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let by = *self.answer_by_ms.get_or_insert_with(|| self.deadline.now_ms().saturating_add(timeout_ms));
        loop {
            self.deadline.read_until(by);
            let read = read_some(&mut self.stream, self.tls.as_deref_mut(), &mut self.buf[self.filled..]);
            self.deadline.clear();
            if self.deadline.fired() {
                return Err(Failure::Timeout);
            }
            match read {
                Ok(0) => return Err(Failure::Io),
                Ok(n) => self.filled += n,
                Err(e) => return Err(e.into()),
            }
            if self.filled >= need {
                return Ok(());
            }
        }
    }

    /// What the socket has for us now, without waiting: on a connection that carries no request, any
    /// byte is one nobody asked for (a peek, so a closed connection is told apart from data).
    ///
    /// Over TLS, records that carry no data (a session ticket, a key update) are taken in and are not
    /// data; only plaintext is.
    pub fn waiting(&mut self) -> Waiting {
        use nix::sys::socket::{recv, MsgFlags};
        if !self.unread().is_empty() {
            return Waiting::Data;
        }
        loop {
            if let Some(tls) = &mut self.tls {
                match tls.process_new_packets() {
                    Ok(state) if state.plaintext_bytes_to_read() > 0 => return Waiting::Data,
                    Ok(state) if state.peer_has_closed() => return Waiting::Closed,
                    Ok(_) => {}
                    Err(_) => return Waiting::Closed,
                }
            }
            let mut byte = [0u8; 1];
            let peeked =
                recv(self.stream.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT);
            match (peeked, &mut self.tls) {
                (Ok(0), _) => return Waiting::Closed,
                (Ok(_), None) => return Waiting::Data,
                // Bytes are there, so this read does not wait.
                (Ok(_), Some(tls)) => {
                    if !matches!(tls.read_tls(&mut self.stream), Ok(n) if n > 0) {
                        return Waiting::Closed;
                    }
                }
                (Err(nix::errno::Errno::EAGAIN), _) => return Waiting::Nothing,
                (Err(_), _) => return Waiting::Closed,
            }
        }
    }
}

/// One read into `buf`: from the socket, or, over TLS, decrypted (reading records until one has data).
fn read_some(
    stream: &mut TcpStream,
    tls: Option<&mut ClientConnection>,
    buf: &mut [u8],
) -> io::Result<usize> {
    let Some(tls) = tls else { return stream.read(buf) };
    loop {
        match tls.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if tls.read_tls(stream)? == 0 {
            return Ok(0);
        }
        tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if tls.wants_write() {
            // A key update or an alert.
            let mut sealed = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut sealed)?;
            }
            stream.write_all(&sealed)?;
        }
    }
}

/// The TLS server name of `HOST:PORT` (a DNS name or an IP address).
pub(crate) fn server_name(host: &str) -> Option<ServerName<'static>> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_string()).ok()
}
