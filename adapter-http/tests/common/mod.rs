//! Shared by the integration tests: start a real `otkv-server` on port 0 and talk to it over real sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod tls;
#[allow(unused_imports, reason = "each suite uses some")]
pub use tls::{agent, over_tls, Stream, TestCerts};

/// Every key the server at `url` lists, as listed (percent-encoded), page by page with the cursor.
pub fn keys_on(url: &str) -> Vec<String> {
    let (mut keys, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let query = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let body = agent()
            .get(&format!("{url}/v1/kv?limit=1000{query}"))
            .call()
            .expect("list")
            .into_string()
            .expect("text");
        let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
        keys.extend(
            doc["keys"].as_array().expect("keys").iter().map(|k| k.as_str().expect("str").to_string()),
        );
        match doc["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return keys,
        }
    }
}

/// Lists every server at `urls` whole; asserts no key is on two of them, and returns how many keys they
/// hold together.
pub fn one_copy_each(urls: &[&str]) -> usize {
    let mut all = std::collections::BTreeSet::new();
    let mut total = 0;
    for url in urls {
        for k in keys_on(url) {
            all.insert(k);
            total += 1;
        }
    }
    assert_eq!(all.len(), total, "{} keys live on two nodes", total - all.len());
    total
}

/// `GET /v1/stats` of the server at `url`, as JSON.
pub fn stats(url: &str) -> serde_json::Value {
    let body = agent().get(&format!("{url}/v1/stats")).call().expect("stats").into_string().expect("text");
    serde_json::from_str(&body).expect("json")
}

/// A `harness` process that serves (`harness node`, `harness proxy`), started with `args`, logging
/// warnings only; killed when dropped. Only in the harness's suites.
pub fn harness(args: &[&str]) -> Listening {
    let mut command = Command::new(harness_exe());
    command.args(args).env("RUST_LOG", "warn");
    Listening::start(command)
}

/// How long a test waits for the server before calling it a hang.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `f` until it is true, failing after `PATIENCE`. For conditions the server reaches on its own time
/// (a connection it has not yet noticed is closed), not as a stand-in for synchronisation we could have.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server under test, as a command line: `otkv-server` in this crate's tests.
///
/// The harness includes `bad_input.rs` and `connections.rs` (see `harness/tests/proxy_front_door.rs`) to
/// run them against `harness proxy` in front of [`BACKING_NODES`] nodes: there this is `harness proxy`,
/// so every rule these suites check holds at the proxy too, with the same code and the same assertions.
pub fn server_argv() -> Vec<String> {
    match option_env!("CARGO_BIN_EXE_otkv-server") {
        Some(exe) => vec![exe.to_string()],
        None => vec![harness_exe().to_string(), "proxy".to_string()],
    }
}

/// Whether the server under test is the harness's proxy.
pub fn behind_proxy() -> bool {
    option_env!("CARGO_BIN_EXE_otkv-server").is_none()
}

fn harness_exe() -> &'static str {
    match option_env!("CARGO_BIN_EXE_harness") {
        Some(exe) => exe,
        None => panic!("these suites are built in otkv-adapter-http or in otkv-harness"),
    }
}

/// How many nodes stand behind the proxy when the suites run against it.
pub const BACKING_NODES: usize = 2;

/// Options of the front door, which the proxy takes too; the others are the nodes' alone.
const FRONT_OPTIONS: [&str; 12] = [
    "--tls-cert",
    "--tls-key",
    "--tls-client-ca",
    "--auth-token-file",
    "--bind",
    "--workers",
    "--max-key-bytes",
    "--max-value-bytes",
    "--max-connections",
    "--header-timeout",
    "--idle-timeout",
    "--test-panic-route",
];

/// A running server (with, behind a proxy, its nodes), killed when dropped.
pub struct Node {
    pub child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The nodes behind the proxy (none when the server under test is a node).
    backing: Vec<Child>,
}

impl Node {
    /// Starts the server with `args` (plus `--port 0`), waiting for its `listening on` line.
    pub fn start(args: &[&str]) -> Node {
        let argv = server_argv();
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        Node::start_with(command, args)
    }

    /// As [`Node::start`], through a wrapper command (e.g. `prlimit`) that ends with [`server_argv`].
    pub fn start_with(mut command: Command, args: &[&str]) -> Node {
        let mut backing = Vec::new();
        let mut own_args: Vec<String> = args.iter().map(std::string::ToString::to_string).collect();
        if over_tls() {
            let certs = TestCerts::shared();
            own_args.extend([
                "--tls-cert".into(),
                certs.path("server.pem"),
                "--tls-key".into(),
                certs.path("server.key"),
            ]);
        }
        if behind_proxy() {
            own_args = front_args(&own_args.iter().map(String::as_str).collect::<Vec<_>>());
            for i in 0..BACKING_NODES {
                let mut node = Command::new(harness_exe());
                node.args(["node", "--port", "0"]).args(node_args(args, i));
                let (child, url) = spawn_listening(node);
                backing.push(child);
                own_args.extend(["--node".to_string(), url]);
            }
        }
        command.args(["--port", "0"]).args(&own_args);
        let (child, url) = spawn_listening(command);
        let addr = url.split_once("://").expect("a URL").1.to_string();
        Node { child, addr, url, backing }
    }

    /// A connection, over TLS when the suite runs over TLS.
    pub fn connect(&self) -> Stream {
        let s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        Stream::over(s)
    }

    /// A plain TCP connection, whatever the suite speaks.
    pub fn connect_tcp(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok =
            Command::new("kill").args([format!("-{name}"), self.pid().to_string()]).status().expect("kill");
        assert!(ok.success());
    }

    /// Waits for the process to exit, at most `PATIENCE`. Behind a proxy, then stops its nodes the same
    /// way (SIGTERM: they flush), so the cluster as a whole has stopped.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_exit(&mut self.child);
        for node in &mut self.backing {
            let ok = Command::new("kill").args(["-TERM", &node.id().to_string()]).status().expect("kill");
            assert!(ok.success());
            assert!(wait_exit(node).success(), "a node behind the proxy failed to stop");
        }
        status
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(&mut self.backing) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for `child` to exit, at most `PATIENCE`.
fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `command`, waiting for its `listening on http://...` line; returns the child and the URL. Its
/// stderr goes where `command` says (the test's own, unless set).
pub fn spawn_listening(mut command: Command) -> (Child, String) {
    let mut child = command.stdout(Stdio::piped()).spawn().expect("spawn server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read listening line");
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("bad first line {line:?}"));
    (child, url.to_string())
}

/// A server started with [`spawn_listening`], killed when dropped.
pub struct Listening {
    pub child: Child,
    /// Its URL, from its `listening on` line.
    pub url: String,
}

impl Listening {
    pub fn start(command: Command) -> Listening {
        let (child, url) = spawn_listening(command);
        Listening { child, url }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The arguments among `args` that the proxy takes (the front door's).
fn front_args(args: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let takes_value = args[i] != "--test-panic-route";
        let n = if takes_value { 2 } else { 1 };
        if FRONT_OPTIONS.contains(&args[i]) {
            out.extend(args[i..(i + n).min(args.len())].iter().map(std::string::ToString::to_string));
        }
        i += n;
    }
    out
}

/// The arguments of node `i` behind a proxy: all of `args`, with its own subdirectory of `--data-dir`.
fn node_args(args: &[&str], i: usize) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(std::string::ToString::to_string).collect();
    if let Some(p) = out.iter().position(|a| a == "--data-dir") {
        if let Some(dir) = out.get_mut(p + 1) {
            *dir = format!("{dir}/node-{i}");
        }
    }
    out
}

/// One parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response from `r`; `head_request` for a response to HEAD (no body follows).
/// Returns `None` on a clean EOF before any byte; panics on anything else that is not a response.
pub fn read_response<R: Read>(r: &mut BufReader<R>, head_request: bool) -> Option<Response> {
    try_read_response(r, head_request).expect("read a response")
}

/// As [`read_response`], but an I/O failure (a reset, a kill) is an error instead of a panic.
pub fn try_read_response<R: Read>(
    r: &mut BufReader<R>,
    head_request: bool,
) -> std::io::Result<Option<Response>> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut status_line = String::new();
    if r.read_line(&mut status_line)? == 0 {
        return Ok(None);
    }
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside the head".into()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| bad(format!("bad header {line:?}")))?;
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let mut resp = Response { status, headers, body: Vec::new() };
    if !head_request && status != 204 && status / 100 != 1 {
        let len: usize = resp
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| bad("missing Content-Length".into()))?;
        resp.body = vec![0; len];
        r.read_exact(&mut resp.body)?;
    }
    Ok(Some(resp))
}

/// Sends raw bytes on a new connection and reads every response until the server closes it.
pub fn raw_exchange(node: &Node, bytes: &[u8]) -> Vec<Response> {
    let mut s = node.connect();
    s.write_all(bytes).expect("write");
    read_all(s)
}

/// As [`raw_exchange`], then half-closes our side, so a keep-alive connection ends after its answers.
pub fn raw_exchange_then_eof(node: &Node, bytes: &[u8]) -> Vec<Response> {
    let mut s = node.connect();
    s.write_all(bytes).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    read_all(s)
}

fn read_all(s: Stream) -> Vec<Response> {
    let mut r = BufReader::new(s);
    let mut out = Vec::new();
    while let Some(resp) = read_response(&mut r, false) {
        out.push(resp);
    }
    out
}

/// Asserts the server closed the connection: the next read is EOF (or a reset).
pub fn assert_closed<R: Read>(r: &mut BufReader<R>) {
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "expected close, got {:?}", String::from_utf8_lossy(&rest)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "expected close, got {e}"),
    }
}

/// A ureq agent that returns 4xx/5xx as responses, for status checks.
pub fn status_of(result: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match result {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("transport error: {e}"),
    }
}
