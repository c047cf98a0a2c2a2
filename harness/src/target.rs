//! [`Target`]: a server the harness sends requests to (an OTKV node or proxy, a redis-server or an etcd
//! member), and the
//! [`Protocol`] it speaks.

use std::net::SocketAddr;

use crate::secure::Secure;

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
    /// TLS (`https://`, `rediss://`) and the token to present.
    pub secure: Secure,
    /// For a replica group: every member's address, `addr` (the member to try first) among them; any
    /// member answers any request. Empty for a single server.
    pub group: Vec<SocketAddr>,
}

/// What a target speaks: an OTKV node's (or proxy's) HTTP API, or Redis's RESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1, `GET`/`PUT /v1/kv/{key}`.
    Http,
    /// RESP2, `GET`/`SET`.
    Resp,
    /// etcd's v3 JSON gateway over HTTP/1.1 (`POST /v3/kv/put`, `/v3/kv/range`).
    Etcd,
}

impl Target {
    /// `node-1 (127.0.0.1:7002)`: how every message names a server.
    pub fn who(&self) -> String {
        format!("{} ({})", self.name, self.host)
    }

    /// A server reached in clear, with no token.
    pub fn clear(name: String, addr: SocketAddr, protocol: Protocol) -> Target {
        Target { name, addr, host: addr.to_string(), protocol, secure: Secure::default(), group: Vec::new() }
    }

    /// The same server reached at another of its group's members.
    pub fn at_member(&self, addr: SocketAddr) -> Target {
        Target { addr, host: addr.to_string(), group: Vec::new(), ..self.clone() }
    }

    /// `http://HOST:PORT` or `redis://HOST:PORT` (`https`, `rediss` over TLS).
    pub fn url(&self) -> String {
        let scheme = match (self.protocol, self.secure.tls.is_some()) {
            (Protocol::Http, false) => "http",
            (Protocol::Http, true) => "https",
            (Protocol::Resp, false) => "redis",
            (Protocol::Resp, true) => "rediss",
            (Protocol::Etcd, false) => "etcd",
            (Protocol::Etcd, true) => "etcds",
        };
        if self.group.is_empty() {
            return format!("{scheme}://{}", self.host);
        }
        // A group: its members, comma-separated (how `--node` and a nodes file take one).
        self.group.iter().map(|a| format!("{scheme}://{a}")).collect::<Vec<_>>().join(",")
    }
}
