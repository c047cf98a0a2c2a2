//! What a load connection talks to, and how: a [`Target`] (an OTKV node or proxy over HTTP, or a
//! redis-server over RESP) and the [`Conn`] that speaks its protocol, so the request loop is written once
//! and OTKV and Redis are measured by the same code.

use std::time::Duration;

use crate::client::{HttpConn, Precondition, PutOptions};
use crate::etcd::EtcdConn;
use crate::resp::{Reply, RespConn};
use crate::run_outcome::Refusal;
use crate::target::{Protocol, Target};
use crate::wire::Failure;

/// How a read-modify-write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    /// The conditional write applied.
    Applied,
    /// Another writer changed the key in between (`412`): a conflict, not an error.
    Conflict,
    /// The read returned a value that is not this key's.
    WrongValue,
}

/// One keep-alive connection of the load generator.
#[derive(Debug)]
pub enum Conn {
    /// To an OTKV node or proxy.
    Http(HttpConn),
    /// To a redis-server.
    Resp(RespConn),
    /// To an etcd member.
    Etcd(EtcdConn),
}

impl Conn {
    /// Connects to `target`, with `timeout` for every read and write after; an HTTP answer's body may be
    /// at most `max_body` bytes.
    pub fn connect(target: &Target, timeout: Duration, max_body: usize) -> Result<Conn, Failure> {
        Ok(match target.protocol {
            Protocol::Http => {
                let mut conn = HttpConn::connect(target, timeout)?;
                conn.set_max_body(max_body);
                Conn::Http(conn)
            }
            Protocol::Resp => Conn::Resp(RespConn::connect(target, timeout)?),
            Protocol::Etcd => {
                let mut conn = HttpConn::connect(target, timeout)?;
                conn.set_max_body(max_body.saturating_mul(2).saturating_add(4096));
                Conn::Etcd(EtcdConn::over(conn))
            }
        })
    }

    /// Queues a read of `key`.
    pub fn push_get(&mut self, key: &[u8]) {
        match self {
            Conn::Http(c) => c.push_get(key),
            Conn::Resp(c) => c.push_get(key),
            Conn::Etcd(c) => c.push_get(key),
        }
    }

    /// Queues a write of the `len`-byte value `write_body` appends to `key`, expiring after `ttl_secs`.
    pub fn push_put(
        &mut self,
        key: &[u8],
        len: usize,
        ttl_secs: Option<u64>,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) {
        match self {
            Conn::Http(c) => c.push_put_with(key, len, PutOptions { ttl_secs, condition: None }, write_body),
            Conn::Resp(c) => c.push_set(key, len, ttl_secs, write_body),
            Conn::Etcd(c) => c.push_put(key, write_body),
        }
    }

    /// A read-modify-write of `key`: read its value and version (`check` says whether the value is
    /// right), then write the new value only if the version is unchanged (`If-Match`), or only if the key
    /// is still absent (`If-None-Match: *`). OTKV only: its caller refuses `--cas-share` for Redis.
    pub fn cas(
        &mut self,
        key: &[u8],
        check: impl FnOnce(&[u8]) -> bool,
        len: usize,
        ttl_secs: Option<u64>,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Result<Cas, Refusal>, Failure> {
        let Conn::Http(c) = self else { return Ok(Err(Refusal::RespUnexpected)) };
        c.push_get(key);
        c.send()?;
        let r = c.read_response(false)?;
        let condition = match r.status {
            200 if !check(r.body) => return Ok(Ok(Cas::WrongValue)),
            200 => Precondition::Matches(r.etag.ok_or(Failure::Protocol)?),
            404 => Precondition::Absent,
            other => return Ok(Err(Refusal::Http(other))),
        };
        c.push_put_with(key, len, PutOptions { ttl_secs, condition: Some(condition) }, write_body);
        c.send()?;
        Ok(match c.read_response(false)?.status {
            201 | 204 => Ok(Cas::Applied),
            412 => Ok(Cas::Conflict),
            other => Err(Refusal::Http(other)),
        })
    }

    /// Sends everything queued, with one write.
    pub fn send(&mut self) -> Result<(), Failure> {
        match self {
            Conn::Http(c) => c.send(),
            Conn::Resp(c) => c.send(),
            Conn::Etcd(c) => c.send(),
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
            Conn::Etcd(c) => c.read_answer(put),
        }
    }
}
