//! What a load connection talks to, and how: a [`Target`] (an OTKV node or proxy over HTTP, or a
//! redis-server over RESP) and the [`Conn`] that speaks its protocol, so the request loop is written once
//! and OTKV and Redis are measured by the same code.

use std::net::SocketAddr;
use std::time::Duration;

use crate::client::HttpConn;
use crate::resp::{Reply, RespConn};
use crate::wire::Failure;

/// A server to send requests to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its routing name (`node-0`, ...).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `HOST:PORT` as given (the HTTP `Host` header).
    pub host: String,
    /// What it speaks.
    pub protocol: Protocol,
}

/// What a target speaks: an OTKV node's (or proxy's) HTTP API, or Redis's RESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1, `GET`/`PUT /v1/kv/{key}`.
    Http,
    /// RESP2, `GET`/`SET`.
    Resp,
}

impl Target {
    /// `http://HOST:PORT` or `redis://HOST:PORT`.
    pub fn url(&self) -> String {
        let scheme = match self.protocol {
            Protocol::Http => "http",
            Protocol::Resp => "redis",
        };
        format!("{scheme}://{}", self.host)
    }
}

/// Why a server answered but not with what was asked for. Counted by kind, as `http_NNN`, `resp_nil`
/// (GET of a key Redis does not have) or `resp_error` (an error reply, e.g. `-OOM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// An HTTP status other than the success the request expects.
    Http(u16),
    /// A nil reply.
    RespNil,
    /// An error reply.
    RespError,
    /// A reply of a type the command does not give.
    RespUnexpected,
}

impl Refusal {
    /// Its name in reports and `summary.json`.
    pub fn name(self) -> String {
        match self {
            Refusal::Http(code) => format!("http_{code}"),
            Refusal::RespNil => "resp_nil".into(),
            Refusal::RespError => "resp_error".into(),
            Refusal::RespUnexpected => "resp_unexpected".into(),
        }
    }
}

/// One keep-alive connection of the load generator.
#[derive(Debug)]
pub enum Conn {
    /// To an OTKV node or proxy.
    Http(HttpConn),
    /// To a redis-server.
    Resp(RespConn),
}

impl Conn {
    /// Connects to `target`, with `timeout` for every read and write after.
    pub fn connect(target: &Target, timeout: Duration) -> Result<Conn, Failure> {
        Ok(match target.protocol {
            Protocol::Http => Conn::Http(HttpConn::connect(target.addr, &target.host, timeout)?),
            Protocol::Resp => Conn::Resp(RespConn::connect(target.addr, timeout)?),
        })
    }

    /// Queues a read of `key`.
    pub fn push_get(&mut self, key: &[u8]) {
        match self {
            Conn::Http(c) => c.push_get(key),
            Conn::Resp(c) => c.push_get(key),
        }
    }

    /// Queues a write of the `len`-byte value `write_body` appends to `key`.
    pub fn push_put(&mut self, key: &[u8], len: usize, write_body: impl FnOnce(&mut Vec<u8>)) {
        match self {
            Conn::Http(c) => c.push_put(key, len, write_body),
            Conn::Resp(c) => c.push_set(key, len, write_body),
        }
    }

    /// Sends everything queued, with one write.
    pub fn send(&mut self) -> Result<(), Failure> {
        match self {
            Conn::Http(c) => c.send(),
            Conn::Resp(c) => c.send(),
        }
    }

    /// Reads the answer to the next queued request (a write if `put`): `Ok(Ok(value))` on success (the
    /// value read; empty for a write), `Ok(Err(refusal))` when the server said no.
    pub fn read_answer(&mut self, put: bool) -> Result<Result<&[u8], Refusal>, Failure> {
        match self {
            Conn::Http(c) => {
                let r = c.read_response(false)?;
                let ok = if put { matches!(r.status, 201 | 204) } else { r.status == 200 };
                Ok(if ok { Ok(r.body) } else { Err(Refusal::Http(r.status)) })
            }
            Conn::Resp(c) => Ok(match (put, c.read_reply()?) {
                (true, Reply::Simple(b"OK")) => Ok(&[]),
                (false, Reply::Bulk(Some(value))) => Ok(value),
                (false, Reply::Bulk(None)) => Err(Refusal::RespNil),
                (_, Reply::Error(_)) => Err(Refusal::RespError),
                _ => Err(Refusal::RespUnexpected),
            }),
        }
    }
}
