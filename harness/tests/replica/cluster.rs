//! Real replica groups for the tests: members are `harness node --member` processes, each reached by the
//! others through a [`Relay`] the test can cut (a partition), and a way to drive load and record it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::history::Cond;

pub const HARNESS: &str = env!("CARGO_BIN_EXE_harness");

/// A TCP relay in front of one member: the other members reach it only through here. Cut, it closes
/// every connection and takes no new one, so the member hears nothing from the others (and they nothing
/// of its answers).
pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    to: Arc<Mutex<Option<SocketAddr>>>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    pub fn new() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay bind");
        let addr = listener.local_addr().expect("relay addr");
        let relay = Relay { addr, cut: Arc::default(), to: Arc::default(), open: Arc::default() };
        let (cut, to, open) = (Arc::clone(&relay.cut), Arc::clone(&relay.to), Arc::clone(&relay.open));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let target = *to.lock().expect("lock");
                let Some(target) = target.filter(|_| !cut.load(SeqCst)) else { continue };
                let Ok(server) = TcpStream::connect(target) else { continue };
                let mut open = open.lock().expect("lock");
                for (from, into) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut into) =
                        (from.try_clone().expect("clone"), into.try_clone().expect("clone"));
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
                open.extend([client, server]);
            }
        });
        relay
    }

    pub fn point_at(&self, addr: SocketAddr) {
        *self.to.lock().expect("lock") = Some(addr);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts the member off (or, with `false`, heals).
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, SeqCst);
        if cut {
            for s in self.open.lock().expect("lock").drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// One member: its process, its own address, and how to start it again.
pub struct Member {
    pub id: u64,
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub relay: Relay,
    pub dir: PathBuf,
    extra: Vec<String>,
}

impl Member {
    /// Starts member `id` with data in `dir`, reached by the others through a new relay.
    pub fn start(id: u64, dir: PathBuf, extra: &[&str]) -> Member {
        let relay = Relay::new();
        let mut m = Member {
            id,
            child: None,
            addr: "127.0.0.1:1".parse().expect("addr"),
            relay,
            dir,
            extra: extra.iter().map(|s| (*s).to_string()).collect(),
        };
        m.restart();
        m
    }

    /// (Re)starts the process on its data directory, on a new port, and points its relay at it.
    pub fn restart(&mut self) {
        let mut command = Command::new(HARNESS);
        command
            .args(["node", "--port", "0", "--member", &self.id.to_string(), "--durability", "sync"])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--advertise-url", &self.relay.url()])
            .args(&self.extra)
            .env("RUST_LOG", "warn");
        let (child, url) = crate::common::spawn_listening(command);
        self.addr = url.strip_prefix("http://").expect("http").parse().expect("address");
        self.relay.point_at(self.addr);
        self.child = Some(child);
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// This member's `/v1/stats`, if it answers.
    pub fn stats(&self) -> Option<serde_json::Value> {
        let (status, out) = call("GET", &format!("{}/v1/stats", self.url()), None, &[]);
        (status == 200).then(|| serde_json::from_slice(&split(&out).1).ok()).flatten()
    }

    /// This member's `replica` object of `/v1/stats`, if it answers.
    pub fn replica(&self) -> Option<serde_json::Value> {
        self.stats().map(|d| d["replica"].clone())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a group of `n` members the way an operator grows one: member 1 alone, the others with
/// `--join`, added one by one through member 1.
pub fn group(n: u64, root: &std::path::Path) -> Vec<Member> {
    let mut members = vec![Member::start(1, root.join("m1"), &[])];
    for id in 2..=n {
        let m = Member::start(id, root.join(format!("m{id}")), &["--join"]);
        let path = format!("{}/v1/replica/members?add={id}&url={}", members[0].url(), m.relay.url());
        crate::common::eventually(&format!("member {id} added"), || call("POST", &path, None, &[]).0 == 200);
        members.push(m);
    }
    members
}

/// One HTTP exchange on a new connection (status 0: no answer), with a 5 s timeout.
pub fn call(method: &str, url: &str, body: Option<&[u8]>, headers: &[String]) -> (u16, Vec<u8>) {
    let Some(rest) = url.strip_prefix("http://") else { return (0, Vec::new()) };
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let Ok(mut s) = TcpStream::connect(host) else { return (0, Vec::new()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let body = body.unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    if s.write_all(&bytes).is_err() {
        return (0, Vec::new());
    }
    let mut answer = Vec::new();
    if s.read_to_end(&mut answer).is_err() && answer.is_empty() {
        return (0, Vec::new());
    }
    let Some(head_end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else { return (0, Vec::new()) };
    let head = String::from_utf8_lossy(&answer[..head_end]).to_string();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let etag = head.lines().find_map(|l| l.strip_prefix("ETag: ")).map(|t| t.trim_matches('"').to_string());
    // The version, when there is one, goes first: `VERSION\n` then the body.
    let mut out = etag.map_or_else(|| b"\n".to_vec(), |t| format!("{t}\n").into_bytes());
    out.extend_from_slice(&answer[head_end + 4..]);
    (status, out)
}

/// The version and body of what [`call`] returned.
pub fn split(out: &[u8]) -> (Option<u64>, Vec<u8>) {
    let nl = out.iter().position(|&b| b == b'\n').unwrap_or(0);
    (
        std::str::from_utf8(&out[..nl]).ok().and_then(|v| v.parse().ok()),
        out.get(nl + 1..).unwrap_or_default().to_vec(),
    )
}

/// The condition's header.
pub fn cond_header(cond: Cond) -> Vec<String> {
    match cond {
        Cond::Always => vec![],
        Cond::Absent => vec!["If-None-Match: *".into()],
        Cond::Version(v) => vec![format!("If-Match: \"{v}\"")],
    }
}
