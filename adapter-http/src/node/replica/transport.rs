//! Raft messages between members: `POST /v1/replica/raft` on the other member's own front door (the
//! same port, limits and tokens as its clients), one sender thread per peer.
//!
//! A sender takes every message queued for its peer, encodes them into one body (`u32 length | message`,
//! protobuf, repeated) and posts it on a kept-alive connection. A message that cannot be delivered is
//! dropped: Raft resends what matters (a lost append is probed again, a lost vote times out), so a
//! sender never retries and never blocks the Raft thread. It tells the Raft thread when a peer is
//! unreachable and how a snapshot went, as Raft asks.
//!
//! Plain threads with blocking sockets, not coroutines: a member has a handful of peers, and a snapshot
//! being sent must not hold a worker of the front door.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{Message, MessageType};

use super::command::context_of;
use crate::front::tls::{ClientConnection, ServerName};
use rustls::ClientConfig;

/// What a sender tells the Raft thread, as raft-rs asks to be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A peer could not be reached.
    Unreachable(u64),
    /// These writes this member proposed were never delivered to the leader (no connection could be
    /// made): they did not happen.
    Undelivered(Vec<u64>),
    /// A snapshot was posted to a peer, and taken or not.
    SnapshotSent {
        /// The peer.
        to: u64,
        /// Whether it took it.
        delivered: bool,
    },
}

/// Where senders report.
pub type Reporter = Arc<dyn Fn(Report) + Send + Sync>;

/// The most bytes of messages a sender puts in one request (a snapshot goes alone, whatever its size).
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Encodes messages into one request body: the sender's URL (so a member that does not know it yet,
/// one just added, can answer), then the messages.
pub fn encode(from_url: &str, messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(from_url.len() as u32).to_le_bytes());
    out.extend_from_slice(from_url.as_bytes());
    for m in messages {
        let bytes = m.write_to_bytes().unwrap_or_default();
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// Reads a request body back into the sender's URL and the messages; `None` if it is not one.
pub fn decode(body: &[u8]) -> Option<(String, Vec<Message>)> {
    let len = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
    let url = String::from_utf8(body.get(4..4 + len)?.to_vec()).ok()?;
    let mut body = &body[4 + len..];
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
        let bytes = body.get(4..4 + len)?;
        out.push(Message::parse_from_bytes(bytes).ok()?);
        body = &body[4 + len..];
    }
    Some((url, out))
}

/// The senders, one per peer, by member id.
pub struct Transport {
    own: u64,
    own_url: String,
    token: Option<String>,
    /// For `https://` members.
    tls: Option<Arc<ClientConfig>>,
    report: Reporter,
    peers: BTreeMap<u64, (String, Sender<Message>)>,
}

impl Transport {
    /// No peers yet; `token`, when given, goes with every request (the peers' front doors check it).
    pub fn new(
        own: u64,
        own_url: String,
        token: Option<String>,
        tls: Option<Arc<ClientConfig>>,
        report: Reporter,
    ) -> Transport {
        Transport { own, own_url, token, tls, report, peers: BTreeMap::new() }
    }

    /// A member not among the known ones wrote from `url`: answer it there (a member just added learns
    /// its leader's address this way, before the log or a snapshot tells it the members).
    pub fn learn(&mut self, id: u64, url: &str) {
        if id != self.own && !self.peers.contains_key(&id) && super::args::is_member_url(url) {
            self.start(id, url);
        }
    }

    /// Makes the senders match `members` (id → URL): new ones start, gone or moved ones stop.
    pub fn set_members(&mut self, members: &BTreeMap<u64, String>) {
        self.peers.retain(|id, (url, _)| members.get(id) == Some(url));
        for (&id, url) in members {
            if id != self.own && !self.peers.contains_key(&id) {
                self.start(id, url);
            }
        }
    }

    fn start(&mut self, id: u64, url: &str) {
        {
            let (tx, rx) = mpsc::channel();
            let sender = PeerSender {
                id,
                url: url.to_string(),
                own_url: self.own_url.clone(),
                token: self.token.clone(),
                tls: self.tls.clone(),
                report: Arc::clone(&self.report),
                conn: None,
            };
            let spawned =
                std::thread::Builder::new().name(format!("otkv-raft-to-{id}")).spawn(move || sender.run(&rx));
            match spawned {
                Ok(_) => {
                    self.peers.insert(id, (url.to_string(), tx));
                }
                Err(e) => tracing::error!(peer = id, error = %e, "cannot start the sender thread"),
            }
        }
    }

    /// Queues messages for their peers (a message to an unknown member is dropped: Raft retries it).
    pub fn send(&self, messages: Vec<Message>) {
        for m in messages {
            if let Some((_, tx)) = self.peers.get(&m.to) {
                let _ = tx.send(m);
            } else {
                tracing::debug!(to = m.to, "no address for a Raft message's member");
            }
        }
    }
}

struct PeerSender {
    id: u64,
    url: String,
    own_url: String,
    token: Option<String>,
    tls: Option<Arc<ClientConfig>>,
    report: Reporter,
    conn: Option<BufReader<PeerStream>>,
}

/// A connection to a member, in clear or over TLS.
enum PeerStream {
    Clear(TcpStream),
    Tls(Box<rustls::StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for PeerStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            PeerStream::Clear(s) => s.read(buf),
            PeerStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for PeerStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            PeerStream::Clear(s) => s.write(buf),
            PeerStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            PeerStream::Clear(s) => s.flush(),
            PeerStream::Tls(s) => s.flush(),
        }
    }
}

impl PeerSender {
    /// Until the transport drops this peer: takes what is queued, posts it, reports.
    fn run(mut self, rx: &Receiver<Message>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let mut bytes = batch[0].compute_size() as usize;
            while bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(m) => {
                        bytes += m.compute_size() as usize;
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
            let snapshots: Vec<u64> =
                batch.iter().filter(|m| m.get_msg_type() == MessageType::MsgSnapshot).map(|m| m.to).collect();
            let body = encode(&self.own_url, &batch);
            // A batch for which no connection could be made left nothing behind: the writes it carried
            // for the leader are known not to have happened. One that failed later may have been taken in.
            let sent = match self.connect() {
                Ok(()) => self.post(&body),
                Err(e) => {
                    let own = batch.iter().filter(|m| m.get_msg_type() == MessageType::MsgPropose);
                    let ids: Vec<u64> = own
                        .flat_map(Message::get_entries)
                        .filter_map(|e| context_of(&e.context))
                        .map(|(_, request)| request)
                        .collect();
                    if !ids.is_empty() {
                        (self.report)(Report::Undelivered(ids));
                    }
                    Err(e)
                }
            };
            if let Err(e) = &sent {
                tracing::debug!(peer = self.id, url = %self.url, error = %e, "Raft messages not delivered");
                (self.report)(Report::Unreachable(self.id));
            }
            for to in snapshots {
                (self.report)(Report::SnapshotSent { to, delivered: sent.is_ok() });
            }
        }
    }

    fn post(&mut self, body: &[u8]) -> std::io::Result<()> {
        let result = self.post_once(body);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// A connection to the peer: the kept-alive one, or a new one.
    fn connect(&mut self) -> std::io::Result<()> {
        if self.conn.is_none() {
            let addr = resolve(&self.url)?;
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
            stream.set_nodelay(true)?;
            // A snapshot may take a while to send and to be taken in; a dead peer is found out by the
            // next message.
            stream.set_write_timeout(Some(Duration::from_secs(30)))?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            let stream = if self.url.starts_with("https://") {
                let config = self.tls.clone().ok_or_else(|| std::io::Error::other("no TLS configuration"))?;
                let host = host_of(&self.url);
                let name = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_matches(['[', ']']);
                let name = ServerName::try_from(name.to_string()).map_err(std::io::Error::other)?;
                let tls = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
                PeerStream::Tls(Box::new(rustls::StreamOwned::new(tls, stream)))
            } else {
                PeerStream::Clear(stream)
            };
            self.conn = Some(BufReader::new(stream));
        }
        Ok(())
    }

    fn post_once(&mut self, body: &[u8]) -> std::io::Result<()> {
        let Some(conn) = self.conn.as_mut() else { return Err(std::io::ErrorKind::NotConnected.into()) };
        let auth = self.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let head = format!(
            "POST /v1/replica/raft HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            host_of(&self.url),
            body.len()
        );
        // One write for the request, head and body: written apart, the body's segment could wait on the
        // ACK of the head's behind any hop that batches small writes (Nagle's algorithm at a relay, a
        // TLS terminator), and the peer delays that ACK while it waits for the body: 40 ms a message.
        // A snapshot, too large to copy, goes in two writes; its time is not the copy's.
        let stream = conn.get_mut();
        if body.len() <= MAX_BATCH_BYTES {
            let mut request = Vec::with_capacity(head.len() + body.len());
            request.extend_from_slice(head.as_bytes());
            request.extend_from_slice(body);
            stream.write_all(&request)?;
        } else {
            stream.write_all(head.as_bytes())?;
            stream.write_all(body)?;
        }
        // The answer: a status line, headers, and a body of Content-Length bytes.
        let mut line = String::new();
        conn.read_line(&mut line)?;
        let status = line.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
        let mut length = 0usize;
        loop {
            line.clear();
            if conn.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((name, value)) = trimmed.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut answer = vec![0; length.min(64 * 1024)];
        conn.read_exact(&mut answer)?;
        if status / 100 != 2 {
            let why = String::from_utf8_lossy(&answer).trim().to_string();
            return Err(std::io::Error::other(format!("{status}: {why}")));
        }
        Ok(())
    }
}

/// The `host:port` of an `http://` or `https://` URL.
fn host_of(url: &str) -> &str {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

fn resolve(url: &str) -> std::io::Result<SocketAddr> {
    host_of(url).to_socket_addrs()?.next().ok_or_else(|| std::io::Error::other(format!("{url}: no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_batches_read_back_and_garbage_does_not() {
        let mut a = Message::default();
        a.set_msg_type(MessageType::MsgHeartbeat);
        a.to = 2;
        a.term = 7;
        let mut b = Message::default();
        b.set_msg_type(MessageType::MsgAppend);
        b.index = 40;
        let body = encode("http://me:1", &[a.clone(), b.clone()]);
        assert_eq!(decode(&body), Some(("http://me:1".to_string(), vec![a, b])));
        assert_eq!(decode(&body[..body.len() - 1]), None);
        assert_eq!(decode(b"\xff\xff\xff\xff"), None);
        assert_eq!(decode(b""), None);
        assert_eq!(decode(&encode("", &[])), Some((String::new(), vec![])));
    }
}
