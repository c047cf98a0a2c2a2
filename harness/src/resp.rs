//! A minimal RESP2 client connection, so `harness run --target redis` drives redis-server with the same
//! load loop, routing, values and checks as OTKV.
//!
//! Like [`crate::client`] it is hand-written because it is the measuring instrument: a batch of commands
//! is encoded into one buffer and sent with one write (pipelining), and replies are parsed in place with
//! no allocation per reply. It speaks only what the harness sends (GET, SET, DEL, PING) and so parses
//! only the replies those get: simple strings, errors, integers and bulk strings.

use std::time::Duration;

use crate::target::Target;
use crate::wire::{Failure, Wire};

/// The longest bulk reply accepted (Redis's own `proto-max-bulk-len` default, 512 MB).
const MAX_BULK: usize = 512 * 1024 * 1024;

/// One connection to a redis-server.
#[derive(Debug)]
pub struct RespConn {
    wire: Wire,
}

/// A reply; a bulk string borrows the connection's buffer until the next read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+OK`.
    Simple(&'a [u8]),
    /// `-ERR ...`.
    Error(&'a [u8]),
    /// `:1`.
    Integer(i64),
    /// `$5 hello`, or `$-1` (nil: no such key).
    Bulk(Option<&'a [u8]>),
}

impl RespConn {
    /// Connects, with `timeout` for every read and write after.
    /// Over TLS for a `rediss://` target; with a token, `AUTH` first.
    pub fn connect(target: &Target, timeout: Duration) -> Result<RespConn, Failure> {
        let mut conn = RespConn { wire: Wire::connect(target, timeout)? };
        if let Some(token) = &target.secure.token {
            conn.push_command(&[b"AUTH", token.as_bytes()]);
            conn.wire.send()?;
            if !matches!(conn.read_reply()?, Reply::Simple(_)) {
                return Err(Failure::Protocol);
            }
        }
        Ok(conn)
    }

    /// Queues `GET key`.
    pub fn push_get(&mut self, key: &[u8]) {
        self.push_command(&[b"GET", key]);
    }

    /// Queues `SET key value` (with `EX ttl_secs` when given), the `len`-byte value being what
    /// `write_body` appends.
    pub fn push_set(
        &mut self,
        key: &[u8],
        len: usize,
        ttl_secs: Option<u64>,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) {
        self.push_header(if ttl_secs.is_some() { 5 } else { 3 });
        self.push_bulk(b"SET");
        self.push_bulk(key);
        self.push_len(b'$', len);
        write_body(&mut self.wire.out);
        self.wire.out.extend_from_slice(b"\r\n");
        if let Some(ttl) = ttl_secs {
            self.push_bulk(b"EX");
            self.push_bulk(itoa::Buffer::new().format(ttl).as_bytes());
        }
    }

    /// Queues a command given as its arguments.
    pub fn push_command(&mut self, args: &[&[u8]]) {
        self.push_header(args.len());
        for arg in args {
            self.push_bulk(arg);
        }
    }

    fn push_header(&mut self, args: usize) {
        self.push_len(b'*', args);
    }

    fn push_bulk(&mut self, bytes: &[u8]) {
        self.push_len(b'$', bytes.len());
        self.wire.out.extend_from_slice(bytes);
        self.wire.out.extend_from_slice(b"\r\n");
    }

    fn push_len(&mut self, kind: u8, n: usize) {
        self.wire.out.push(kind);
        self.wire.out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.wire.out.extend_from_slice(b"\r\n");
    }

    /// Sends everything queued, with one write.
    pub fn send(&mut self) -> Result<(), Failure> {
        self.wire.send()
    }

    /// Reads the next reply.
    pub fn read_reply(&mut self) -> Result<Reply<'_>, Failure> {
        self.wire.begin_answer();
        // The first line: type byte, content, CRLF.
        let line_end = loop {
            if let Some(i) = memchr_crlf(self.wire.unread()) {
                break i;
            }
            self.wire.fill(0)?;
        };
        let unread = self.wire.unread();
        let (kind, line) = (unread.first().copied().ok_or(Failure::Protocol)?, &unread[1..line_end]);
        let at = self.wire.position();
        match kind {
            b'+' | b'-' => {
                self.wire.consume(line_end + 2);
                let text = self.wire.slice(at + 1, line_end - 1);
                Ok(if kind == b'+' { Reply::Simple(text) } else { Reply::Error(text) })
            }
            b':' => {
                let n = parse_int(line)?;
                self.wire.consume(line_end + 2);
                Ok(Reply::Integer(n))
            }
            b'$' => {
                let len = parse_int(line)?;
                if len < 0 {
                    self.wire.consume(line_end + 2);
                    return Ok(Reply::Bulk(None));
                }
                let len = usize::try_from(len).ok().filter(|&l| l <= MAX_BULK).ok_or(Failure::Protocol)?;
                let total = line_end + 2 + len + 2;
                while self.wire.unread().len() < total {
                    self.wire.fill(total)?;
                }
                let at = self.wire.position();
                if self.wire.slice(at + total - 2, 2) != b"\r\n" {
                    return Err(Failure::Protocol);
                }
                self.wire.consume(total);
                Ok(Reply::Bulk(Some(self.wire.slice(at + line_end + 2, len))))
            }
            _ => Err(Failure::Protocol),
        }
    }
}

/// Where the first CRLF starts.
fn memchr_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

fn parse_int(text: &[u8]) -> Result<i64, Failure> {
    std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).ok_or(Failure::Protocol)
}
