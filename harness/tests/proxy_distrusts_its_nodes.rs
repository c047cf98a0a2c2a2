//! `harness proxy` trusts no node: a fake upstream in this test answers every way a misconfigured
//! `--node` (a wrong port, another service, an old version) could, next to one real node. For each: the
//! bad node's keys get 502/504 naming it within the upstream timeout, the good node's keys keep working on
//! the same client connections, a pipelined batch spanning both is answered in order, the proxy's memory
//! stays bounded, and once a healthy node takes the address its keys are served again.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use otkv_harness::router::{node_names, RouterKind};

// The adapter's test helpers: `eventually`, `PATIENCE`, and a strict reader of one response.
#[path = "../../adapter-http/tests/common/mod.rs"]
mod common;

use common::{eventually, read_response, Response, PATIENCE};

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

/// How the fake node answers each request it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// A valid answer (`hello`).
    Valid,
    HugeLength,
    MaxLength,
    Chunked,
    UntilClose,
    /// A valid answer and a second, unsolicited one, in one write.
    TwoAnswers,
    /// An 8 MiB header line.
    HugeHeader,
    Garbage,
    Reset,
    NeverCompletes,
    SlowDrip,
    NegativeLength,
    DuplicateLengths,
    InterimFlood,
    /// A valid answer whose status line arrives in pieces.
    SplitStatusLine,
    /// A valid answer; then, when the test opens the gate and before the next request, an answer to
    /// nothing (reported as an event).
    ThenSpeaksFirst,
    /// A valid answer after this long.
    Slow(Duration),
    /// A valid answer once the test opens the gate.
    Gated,
}

/// What the fake tells the test.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// It read a request.
    Request,
    /// It sent bytes nobody asked for.
    SpokeFirst,
}

/// An address that accepts connections and answers as its [`Behaviour`] says.
struct FakeNode {
    addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    events: Receiver<Event>,
    gate: Sender<()>,
    stop: Arc<AtomicBool>,
    /// Its connections, each held by its own thread (so it closes when that thread ends).
    accepted: Arc<Mutex<Vec<Weak<TcpStream>>>>,
    accept: Option<JoinHandle<()>>,
}

impl FakeNode {
    fn start(behaviour: Behaviour) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let behaviour = Arc::new(Mutex::new(behaviour));
        let (events_tx, events) = channel();
        let (gate, gate_rx) = channel();
        let gate_rx = Arc::new(Mutex::new(gate_rx));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (b, s, a) = (Arc::clone(&behaviour), Arc::clone(&stop), Arc::clone(&accepted));
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let stream = Arc::new(stream);
                a.lock().expect("lock").push(Arc::downgrade(&stream));
                let (b, events, gate) = (Arc::clone(&b), events_tx.clone(), Arc::clone(&gate_rx));
                std::thread::spawn(move || serve_fake(stream, &b, &events, &gate));
            }
        });
        FakeNode { addr, behaviour, events, gate, stop, accepted, accept: Some(accept) }
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().expect("lock") = behaviour;
    }

    fn next_event(&self) -> Event {
        self.events.recv_timeout(PATIENCE).expect("an event from the fake node")
    }

    /// Stops listening and cuts every connection it accepted: the address is free.
    fn stop(&mut self) {
        self.stop.store(true, SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            t.join().expect("accept thread");
        }
        for s in self.accepted.lock().expect("lock").drain(..).filter_map(|s| s.upgrade()) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One connection of the fake: read a request, answer it as told, until the peer goes.
fn serve_fake(
    stream: Arc<TcpStream>,
    behaviour: &Mutex<Behaviour>,
    events: &Sender<Event>,
    gate: &Mutex<Receiver<()>>,
) {
    let _ = stream.set_nodelay(true);
    let mut w: &TcpStream = &stream;
    let mut r = BufReader::new(&*stream);
    while read_request(&mut r) {
        let _ = events.send(Event::Request);
        let b = *behaviour.lock().expect("lock");
        let answered = match b {
            Behaviour::Valid => w.write_all(OK),
            Behaviour::HugeLength => {
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\nabc")
            }
            Behaviour::MaxLength => {
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nabc")
            }
            Behaviour::Chunked => {
                w.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            }
            Behaviour::UntilClose => {
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\n\r\nhello until close");
                return;
            }
            Behaviour::TwoAnswers => w.write_all(&[OK, OK].concat()),
            Behaviour::HugeHeader => {
                let mut a = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
                a.resize(a.len() + (8 << 20), b'a');
                a.extend_from_slice(b"\r\nContent-Length: 5\r\n\r\nhello");
                w.write_all(&a)
            }
            Behaviour::Garbage => w.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n\r\n"),
            Behaviour::Reset => {
                // SO_LINGER 0: close sends a reset.
                let linger = nix::libc::linger { l_onoff: 1, l_linger: 0 };
                let _ = nix::sys::socket::setsockopt(w, nix::sys::socket::sockopt::Linger, &linger);
                return;
            }
            Behaviour::NeverCompletes => w.write_all(b"HTTP/1.1 200 OK\r\nContent-Len"),
            Behaviour::SlowDrip => OK.iter().try_for_each(|byte| {
                std::thread::sleep(Duration::from_millis(100));
                w.write_all(&[*byte])
            }),
            Behaviour::NegativeLength => w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello"),
            Behaviour::DuplicateLengths => {
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")
            }
            Behaviour::InterimFlood => {
                w.write_all(&b"HTTP/1.1 100 Continue\r\n\r\n".repeat(10_000)).and_then(|()| w.write_all(OK))
            }
            Behaviour::SplitStatusLine => {
                // Pieces apart in time, so the proxy reads them apart (shaping the stream, not waiting
                // for anything).
                [&OK[..3], &OK[3..10], &OK[10..]].iter().try_for_each(|piece| {
                    std::thread::sleep(Duration::from_millis(20));
                    w.write_all(piece)
                })
            }
            Behaviour::ThenSpeaksFirst => {
                let result = w.write_all(OK);
                // Once the test has its answer (and the proxy has pooled the connection), unasked.
                let _ = gate.lock().expect("lock").recv();
                let result = result.and_then(|()| w.write_all(OK));
                let _ = events.send(Event::SpokeFirst);
                result
            }
            Behaviour::Slow(after) => {
                std::thread::sleep(after);
                w.write_all(OK)
            }
            Behaviour::Gated => {
                let _ = gate.lock().expect("lock").recv();
                w.write_all(OK)
            }
        };
        if answered.is_err() {
            return;
        }
    }
}

/// Reads one request head and its `Content-Length` body; false at the end of the stream.
fn read_request(r: &mut BufReader<&TcpStream>) -> bool {
    let mut len = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let line = line.trim_end();
        if line.is_empty() && !first {
            break;
        }
        first = false;
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).is_ok()
}

/// A `harness node` or `harness proxy`, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(args: &[String]) -> Server {
        let mut child = Command::new(HARNESS)
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("line");
        let addr = line.trim().strip_prefix("listening on http://").expect("listening line").to_string();
        Server { child, addr }
    }

    fn node_on(port: u16) -> Server {
        Server::start(&["node".into(), "--port".into(), port.to_string()])
    }

    fn proxy(nodes: &[String], extra: &[&str]) -> Server {
        let mut args: Vec<String> = vec!["proxy".into(), "--port".into(), "0".into()];
        for n in nodes {
            args.extend(["--node".to_string(), format!("http://{n}")]);
        }
        args.extend(["--upstream-timeout".into(), "2s".into()]);
        args.extend(extra.iter().map(std::string::ToString::to_string));
        Server::start(&args)
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("kib")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client connection to the proxy.
struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn to(proxy: &Server) -> Client {
        let s = TcpStream::connect(&proxy.addr).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        Client { w: s.try_clone().expect("clone"), r: BufReader::new(s) }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("write");
    }

    fn read(&mut self) -> Response {
        read_response(&mut self.r, false).expect("an answer, not a close")
    }

    fn get(&mut self, key: &str) -> Response {
        self.send(get(key).as_bytes());
        self.read()
    }
}

fn get(key: &str) -> String {
    format!("GET /v1/kv/{key} HTTP/1.1\r\nHost: x\r\n\r\n")
}

fn put(key: &str, value: &str) -> String {
    format!("PUT /v1/kv/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{value}", value.len())
}

/// A key each of the two nodes owns (node-0 is the real one, node-1 the fake).
fn keys() -> (String, String) {
    let router = RouterKind::Rendezvous.build(&node_names(2), 160);
    let of =
        |n: usize| (0..1000).map(|i| format!("k{i}")).find(|k| router.route(k.as_bytes()) == n).expect("key");
    (of(0), of(1))
}

/// The answer a request for the fake node's key must get when the fake misbehaves.
fn assert_refused(r: &Response, status: u16, fake: SocketAddr, case: &str) {
    let text = r.text();
    assert_eq!(r.status, status, "{case}: {text}");
    assert!(text.contains(&format!("node-1 ({fake})")), "{case}: the answer names the node: {text}");
}

#[test]
fn every_bad_answer_of_a_node_is_refused_naming_it_and_nothing_else_suffers() {
    let mut fake = FakeNode::start(Behaviour::Valid);
    let node = Server::start(&["node".into(), "--port".into(), "0".into()]);
    let proxy = Server::proxy(&[node.addr.clone(), fake.addr.to_string()], &[]);
    let (good, bad) = keys();
    let mut client = Client::to(&proxy);
    client.send(put(&good, "good value").as_bytes());
    assert_eq!(client.read().status, 201);
    let rss_before = proxy.rss_kib();

    let cases: [(Behaviour, u16, &str); 14] = [
        (Behaviour::HugeLength, 502, "over the limit"),
        (Behaviour::MaxLength, 502, "invalid Content-Length"),
        (Behaviour::Chunked, 502, "Transfer-Encoding"),
        (Behaviour::UntilClose, 502, "without Content-Length"),
        (Behaviour::TwoAnswers, 502, "nobody asked for"),
        (Behaviour::HugeHeader, 502, "head over"),
        (Behaviour::Garbage, 502, "not an HTTP/1.1 response"),
        (Behaviour::Reset, 502, "closed the connection"),
        (Behaviour::NeverCompletes, 504, "did not answer within 2s"),
        (Behaviour::SlowDrip, 504, "did not answer within 2s"),
        (Behaviour::NegativeLength, 502, "invalid Content-Length"),
        (Behaviour::DuplicateLengths, 502, "more than one Content-Length"),
        (Behaviour::InterimFlood, 502, "unrequested interim answer 100"),
        (Behaviour::SplitStatusLine, 200, "hello"),
    ];
    for (behaviour, status, says) in cases {
        let case = format!("{behaviour:?}");
        fake.set(behaviour);
        // Alone, on a connection that then carries on.
        let started = Instant::now();
        let r = client.get(&bad);
        assert!(
            started.elapsed() < UPSTREAM_TIMEOUT + Duration::from_secs(1),
            "{case}: {:?}",
            started.elapsed()
        );
        if status == 200 {
            assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{case}");
        } else {
            assert_refused(&r, status, fake.addr, &case);
        }
        assert!(r.text().contains(says), "{case}: {}", r.text());
        let r = client.get(&good);
        assert_eq!((r.status, r.text().as_str()), (200, "good value"), "{case}: the good node's key");

        // In a pipelined batch spanning both nodes: answered in order.
        client.send(format!("{}{}{}", get(&good), get(&bad), put(&good, &case)).as_bytes());
        let r = client.read();
        assert_eq!((r.status, r.text().as_str()), (200, "good value"), "{case}: first of the batch");
        let r = client.read();
        if status == 200 {
            assert_eq!(r.status, 200, "{case}: second of the batch");
        } else {
            assert_refused(&r, status, fake.addr, &case);
        }
        assert_eq!(client.read().status, 204, "{case}: third of the batch");
        client.send(put(&good, "good value").as_bytes());
        assert_eq!(client.read().status, 204);
    }
    let grown = proxy.rss_kib().saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "the proxy's RSS grew by {grown} KiB");

    // A healthy node on the same address: its keys are served again, without restarting the proxy.
    let port = fake.addr.port();
    fake.stop();
    let _healthy = Server::node_on(port);
    eventually("the healthy node's keys are served", || {
        let mut c = Client::to(&proxy);
        c.send(put(&bad, "back").as_bytes());
        c.read().status == 201
    });
    assert_eq!(client.get(&bad).text(), "back");
}

#[test]
fn an_answer_sent_before_the_request_is_refused_and_its_connection_dropped() {
    let fake = FakeNode::start(Behaviour::ThenSpeaksFirst);
    let node = Server::start(&["node".into(), "--port".into(), "0".into()]);
    let proxy = Server::proxy(&[node.addr.clone(), fake.addr.to_string()], &[]);
    let (_, bad) = keys();
    let mut client = Client::to(&proxy);
    let r = client.get(&bad);
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    // The proxy has pooled the connection; now the fake sends an answer that no request asked for.
    assert_eq!(fake.next_event(), Event::Request);
    fake.gate.send(()).expect("open the gate");
    assert_eq!(fake.next_event(), Event::SpokeFirst);
    let r = client.get(&bad);
    assert_refused(&r, 502, fake.addr, "answer before the request");
    assert!(r.text().contains("nobody asked for"), "{}", r.text());
    // That connection is gone; the next request goes on a fresh one.
    let r = client.get(&bad);
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
}

#[test]
fn a_full_pool_is_503_not_a_timeout_blamed_on_the_node() {
    let fake = FakeNode::start(Behaviour::Slow(Duration::from_millis(1500)));
    let node = Server::start(&["node".into(), "--port".into(), "0".into()]);
    let proxy = Server::proxy(&[node.addr.clone(), fake.addr.to_string()], &["--upstream-connections", "1"]);
    let (good, bad) = keys();
    // Three pipelined requests hold the one connection for 4.5 s, each answer within the timeout.
    let mut first = Client::to(&proxy);
    first.send(get(&bad).repeat(3).as_bytes());
    assert_eq!(fake.next_event(), Event::Request);
    let mut second = Client::to(&proxy);
    let r = second.get(&bad);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains(&format!("node-1 ({}): all 1 upstream connections busy", fake.addr)),
        "{}",
        r.text()
    );
    assert_eq!(second.get(&good).status, 404, "the other node is not held up");
    for _ in 0..3 {
        assert_eq!(first.read().status, 200);
    }
}

#[test]
fn a_draining_proxy_says_connection_close_on_the_answer_it_closes_after() {
    let fake = FakeNode::start(Behaviour::Gated);
    let node = Server::start(&["node".into(), "--port".into(), "0".into()]);
    let proxy = Server::proxy(&[node.addr.clone(), fake.addr.to_string()], &[]);
    let (_, bad) = keys();
    let mut client = Client::to(&proxy);
    client.send(get(&bad).as_bytes());
    assert_eq!(fake.next_event(), Event::Request);
    let ok = Command::new("kill").args(["-TERM", &proxy.child.id().to_string()]).status().expect("kill");
    assert!(ok.success());
    eventually("the proxy stops accepting", || TcpStream::connect(&proxy.addr).is_err());
    fake.gate.send(()).expect("open the gate");
    let r = client.read();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"), "{:?}", r.headers);
    common::assert_closed(&mut client.r);
}
