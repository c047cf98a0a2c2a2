//! `harness proxy` with real nodes: it routes every key exactly as `harness run` does, answers a
//! pipelined batch spanning all nodes in order, merges listings, isolates a node that is down or hung to
//! its own keys (502/504 naming it), recovers when it is back, and drains on SIGTERM.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use otkv_adapter_http::front::percent::encode_segment;
use otkv_harness::router::{node_names, RouterKind};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

// The adapter's test helpers (`eventually`, `PATIENCE`); their `Node` is not used here.
#[path = "../../adapter-http/tests/common/mod.rs"]
mod common;

use common::{eventually, PATIENCE};

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");

/// A `harness node` or `harness proxy` process, killed on drop.
struct Server {
    child: Child,
    url: String,
    port: u16,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(HARNESS)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("line");
        let url = line.trim().strip_prefix("listening on ").expect("listening line").to_string();
        let port = url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        Server { child, url, port }
    }

    fn node() -> Server {
        Server::start(&["node", "--port", "0"])
    }

    fn node_on(port: u16) -> Server {
        Server::start(&["node", "--port", &port.to_string()])
    }

    fn proxy(nodes: &[Server], extra: &[&str]) -> Server {
        let mut args = vec!["proxy".to_string(), "--port".into(), "0".into()];
        for n in nodes {
            args.extend(["--node".to_string(), n.url.clone()]);
        }
        args.extend(extra.iter().map(std::string::ToString::to_string));
        Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// SIGSTOP, and wait until every thread of the process is stopped (delivery is asynchronous).
    fn freeze(&self) {
        self.signal("STOP");
        let tasks = format!("/proc/{}/task", self.child.id());
        eventually("every thread of the node is stopped", || {
            std::fs::read_dir(&tasks).expect("tasks").all(|t| {
                let stat = std::fs::read_to_string(t.expect("task").path().join("stat")).unwrap_or_default();
                stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('T'))
            })
        });
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ =
            Command::new("kill").args(["-CONT", &self.child.id().to_string()]).stderr(Stdio::null()).status();
        self.kill();
    }
}

/// `(status, body)` of a request; 4xx and 5xx are answers, not errors.
fn call(method: &str, url: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
    let req = ureq::request(method, url).timeout(PATIENCE);
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let mut bytes = Vec::new();
    resp.into_reader().read_to_end(&mut bytes).expect("body");
    (status, bytes)
}

fn kv(server: &Server, key: &[u8]) -> String {
    format!("{}/v1/kv/{}", server.url, encode_segment(key))
}

/// Any key, sent percent-encoded: the proxy stores it on the node the harness's own router names, and
/// finds a key the harness wrote there (for both routers). So keys are routed on the decoded key, as the
/// node decodes it, with the very function `harness run` uses.
#[test]
fn the_proxy_routes_every_key_as_the_harness_does() {
    let nodes = [Server::node(), Server::node(), Server::node()];
    let rendezvous = Server::proxy(&nodes, &[]);
    let ring = Server::proxy(&nodes, &["--router", "ring", "--vnodes", "64"]);
    let routers = [
        (&rendezvous, RouterKind::Rendezvous.build(&node_names(3), 160)),
        (&ring, RouterKind::Ring.build(&node_names(3), 64)),
    ];
    let mut runner = TestRunner::new(ProptestConfig::with_cases(48));
    let keys = (proptest::collection::vec(any::<u8>(), 1..40), 0..2usize);
    let result = runner.run(&keys, |(key, which)| {
        let (proxy, router) = &routers[which];
        let owner = router.route(&key);
        let value = format!("through the proxy {}", fastrand::u64(..));
        let (status, _) = call("PUT", &kv(proxy, &key), Some(value.as_bytes()));
        prop_assert!(status == 201 || status == 204, "PUT answered {}", status);
        for (i, node) in nodes.iter().enumerate() {
            let (status, body) = call("GET", &kv(node, &key), None);
            if i == owner {
                prop_assert_eq!((status, body), (200, value.clone().into_bytes()));
            } else {
                prop_assert_eq!(status, 404, "node-{} holds a key owned by node-{}", i, owner);
            }
        }
        // The other way: written by a harness-routed client, found through the proxy.
        let direct = format!("written to its owner {}", fastrand::u64(..));
        call("PUT", &kv(&nodes[owner], &key), Some(direct.as_bytes()));
        prop_assert_eq!(call("GET", &kv(proxy, &key), None), (200, direct.into_bytes()));
        call("DELETE", &kv(proxy, &key), None);
        prop_assert_eq!(call("GET", &kv(&nodes[owner], &key), None).0, 404);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Reads one response (`head`: it answers HEAD), returning status, the Connection header and the body.
fn read_response(r: &mut BufReader<TcpStream>, head: bool) -> (u16, Vec<u8>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("header");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse().expect("length");
            }
        }
    }
    let mut body = vec![0; if head || status == 204 { 0 } else { len }];
    r.read_exact(&mut body).expect("body");
    (status, body)
}

#[test]
fn a_pipelined_batch_spanning_every_node_is_answered_in_order() {
    let nodes = [Server::node(), Server::node(), Server::node()];
    let proxy = Server::proxy(&nodes, &[]);
    let router = RouterKind::Rendezvous.build(&node_names(3), 160);
    let keys: Vec<String> = (0..30).map(|i| format!("batch-{i}")).collect();
    assert_eq!(
        (0..3).map(|n| keys.iter().filter(|k| router.route(k.as_bytes()) == n).count().min(1)).sum::<usize>(),
        3,
        "the batch must span all three nodes"
    );
    // One write: a PUT and a GET per key, with requests the proxy answers itself in between.
    let mut batch = Vec::new();
    let mut expect: Vec<(u16, Option<String>, bool)> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let v = format!("value of {k}");
        batch.extend(
            format!("PUT /v1/kv/{k} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{v}", v.len()).bytes(),
        );
        expect.push((201, None, false));
        batch.extend(format!("GET /v1/kv/{k} HTTP/1.1\r\nHost: x\r\n\r\n").bytes());
        expect.push((200, Some(v), false));
        match i % 10 {
            3 => {
                batch.extend(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
                expect.push((200, Some("ok\n".into()), false));
            }
            6 => {
                batch.extend(b"GET /v1/nope HTTP/1.1\r\nHost: x\r\n\r\n");
                expect.push((404, None, false));
            }
            9 => {
                batch.extend(format!("HEAD /v1/kv/{k} HTTP/1.1\r\nHost: x\r\n\r\n").bytes());
                expect.push((200, None, true));
            }
            _ => {}
        }
    }
    let mut s = TcpStream::connect(proxy.url.trim_start_matches("http://")).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.write_all(&batch).expect("write");
    let mut r = BufReader::new(s);
    for (i, (status, body, head)) in expect.iter().enumerate() {
        let (got, got_body) = read_response(&mut r, *head);
        assert_eq!(got, *status, "response {i}: {}", String::from_utf8_lossy(&got_body));
        if let Some(b) = body {
            assert_eq!(String::from_utf8_lossy(&got_body), *b, "response {i}");
        }
    }
    // Each node holds exactly its own keys.
    for (n, node) in nodes.iter().enumerate() {
        for k in &keys {
            let want = if router.route(k.as_bytes()) == n { 200 } else { 404 };
            assert_eq!(call("GET", &kv(node, k.as_bytes()), None).0, want, "{k} on node-{n}");
        }
    }
}

#[test]
fn a_listing_pages_through_every_node_once_and_skips_strays() {
    let nodes = [Server::node(), Server::node(), Server::node()];
    let proxy = Server::proxy(&nodes, &[]);
    let mut keys: Vec<String> = (0..40).map(|i| format!("list:{:02}", (i * 7) % 40)).collect();
    for k in &keys {
        assert_eq!(call("PUT", &kv(&proxy, k.as_bytes()), Some(b"v")).0, 201);
        call("PUT", &kv(&proxy, format!("other:{k}").as_bytes()), Some(b"v"));
    }
    // A copy of one key on every node (as a client that bypassed routing would leave): listed once, from
    // its owner, as a read through the proxy finds it.
    for node in &nodes {
        call("PUT", &kv(node, b"list:07"), Some(b"stray"));
    }
    keys.sort();
    // Every page of `limit`, the cursor of each passed to the next; sorted together.
    let listing = |query: &str, limit: usize| -> Vec<String> {
        let (mut all, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let more = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
            let (status, body) =
                call("GET", &format!("{}/v1/kv?{query}&limit={limit}{more}", proxy.url), None);
            assert_eq!(status, 200);
            let doc: serde_json::Value = serde_json::from_slice(&body).expect("json");
            let page = doc["keys"].as_array().expect("keys");
            assert!(page.len() <= limit);
            all.extend(page.iter().map(|k| k.as_str().expect("str").to_string()));
            match doc["next"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
        all.sort();
        all
    };
    for limit in [1, 7, 1000] {
        assert_eq!(listing("prefix=list:", limit), keys);
        assert_eq!(
            listing("prefix=list:3", limit),
            vec![
                "list:30", "list:31", "list:32", "list:33", "list:34", "list:35", "list:36", "list:37",
                "list:38", "list:39"
            ]
        );
        assert_eq!(listing("prefix=", limit).len(), 80);
        assert_eq!(listing("prefix=nothing", limit).len(), 0);
    }
    // The listing's own rules are the node's: a bad limit or cursor is 400 at the proxy.
    assert_eq!(call("GET", &format!("{}/v1/kv?limit=x", proxy.url), None).0, 400);
    for bad in ["p9.00000000.", "p0.00000000.", "p0", "nonsense", "p0.12345678.a%22b"] {
        assert_eq!(call("GET", &format!("{}/v1/kv?cursor={bad}", proxy.url), None).0, 400, "{bad}");
    }
}

#[test]
fn a_dead_node_fails_only_its_own_keys_and_comes_back_without_restarting_the_proxy() {
    let mut nodes = vec![Server::node(), Server::node(), Server::node()];
    let proxy = Server::proxy(&nodes, &[]);
    let router = RouterKind::Rendezvous.build(&node_names(3), 160);
    let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    for k in &keys {
        assert_eq!(call("PUT", &kv(&proxy, k.as_bytes()), Some(k.as_bytes())).0, 201);
    }
    let port = nodes[1].port;
    nodes[1].kill();
    for k in &keys {
        let (status, body) = call("GET", &kv(&proxy, k.as_bytes()), None);
        let body = String::from_utf8_lossy(&body);
        if router.route(k.as_bytes()) == 1 {
            assert_eq!(status, 502, "{k}: {body}");
            assert!(body.contains("node-1") && body.contains(&port.to_string()), "{body}");
        } else {
            assert_eq!((status, body.as_ref()), (200, k.as_str()), "other nodes' keys keep working");
        }
    }
    // A write for the dead node is refused, never acknowledged, never stored elsewhere.
    let orphan = keys.iter().find(|k| router.route(k.as_bytes()) == 1).expect("a key of node-1");
    assert_eq!(call("PUT", &kv(&proxy, orphan.as_bytes()), Some(b"lost?")).0, 502);
    for n in [0, 2] {
        assert_eq!(call("GET", &kv(&nodes[n], orphan.as_bytes()), None).0, 404);
    }
    let (status, body) = call("GET", &format!("{}/healthz", proxy.url), None);
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("node-1"), "{}", String::from_utf8_lossy(&body));

    // Back on the same port (empty: memory engine): its keys are served again, through the same proxy.
    nodes[1] = Server::node_on(port);
    eventually("the proxy reaches node-1 again", || {
        call("GET", &format!("{}/healthz", proxy.url), None).0 == 200
    });
    assert_eq!(call("PUT", &kv(&proxy, orphan.as_bytes()), Some(b"back")).0, 201);
    assert_eq!(call("GET", &kv(&nodes[1], orphan.as_bytes()), None), (200, b"back".to_vec()));
}

#[test]
fn a_hung_node_gets_504_after_the_upstream_timeout_and_recovers() {
    let nodes = [Server::node(), Server::node()];
    let proxy = Server::proxy(&nodes, &["--upstream-timeout", "300ms"]);
    let router = RouterKind::Rendezvous.build(&node_names(2), 160);
    let key_of =
        |n: usize| (0..1000).map(|i| format!("h{i}")).find(|k| router.route(k.as_bytes()) == n).expect("key");
    let (hung, fine) = (key_of(0), key_of(1));
    for k in [&hung, &fine] {
        assert_eq!(call("PUT", &kv(&proxy, k.as_bytes()), Some(b"v")).0, 201);
    }
    nodes[0].freeze();
    let started = Instant::now();
    let (status, body) = call("GET", &kv(&proxy, hung.as_bytes()), None);
    let waited = started.elapsed();
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("node-0"));
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(3), "waited {waited:?}");
    assert_eq!(call("GET", &kv(&proxy, fine.as_bytes()), None), (200, b"v".to_vec()));
    nodes[0].signal("CONT");
    eventually("node-0 answers again", || call("GET", &kv(&proxy, hung.as_bytes()), None).0 == 200);
}

#[test]
fn sigterm_lets_a_forwarded_request_finish_then_exits_zero() {
    let nodes = [Server::node()];
    let mut proxy = Server::proxy(&nodes, &[]);
    let mut s = TcpStream::connect(proxy.url.trim_start_matches("http://")).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    // The node is stopped, so the forwarded PUT is in flight when the proxy is told to stop.
    nodes[0].freeze();
    s.write_all(b"PUT /v1/kv/late HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nlate").expect("write");
    eventually("the PUT is in flight at the proxy", || {
        let (_, m) = call("GET", &format!("{}/metrics", proxy.url), None);
        String::from_utf8_lossy(&m).lines().any(|l| l == "otkv_requests_in_flight 2")
    });
    proxy.signal("TERM");
    nodes[0].signal("CONT");
    let (status, _) = read_response(&mut BufReader::new(s), false);
    assert_eq!(status, 201);
    let deadline = Instant::now() + PATIENCE;
    let exit = loop {
        if let Some(status) = proxy.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "proxy did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(exit.success(), "{exit}");
    assert_eq!(call("GET", &kv(&nodes[0], b"late"), None), (200, b"late".to_vec()));
}

#[test]
fn run_through_the_proxy_next_to_the_client_routed_run() {
    let out = tempfile::tempdir().expect("tempdir");
    let run = Command::new(HARNESS)
        .args(["run", "--nodes", "1..2", "--via-proxy", "--workload", "ycsb-a", "--keys", "500"])
        .args(["--ops", "2000", "--connections", "4", "--pipeline", "4", "--json", "--out"])
        .arg(out.path())
        .output()
        .expect("run");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    let runs = summary["runs"].as_array().expect("runs");
    let shape: Vec<(u64, Option<&str>)> =
        runs.iter().map(|r| (r["nodes"].as_u64().unwrap_or(0), r["via"].as_str())).collect();
    assert_eq!(shape, [(1, None), (1, Some("proxy")), (2, None), (2, Some("proxy"))]);
    for r in runs {
        assert_eq!(r["errors_total"], 0, "{r}");
        assert_eq!(r["ops"], 2000);
    }
    for file in ["2nodes.hgrm", "2nodes-proxy.hgrm", "latency_2nodes-proxy.png", "throughput.png"] {
        assert!(out.path().join(file).exists(), "{file}");
    }

    // `--proxy URL`: a proxy already running, at its own node count.
    let nodes = [Server::node(), Server::node(), Server::node()];
    let proxy = Server::proxy(&nodes, &[]);
    let run = Command::new(HARNESS)
        .args(["run", "--proxy", &proxy.url, "--workload", "seed", "--keys", "300", "--ops", "600"])
        .args(["--connections", "3", "--json", "--out"])
        .arg(out.path())
        .output()
        .expect("run");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    let r = &summary["runs"][0];
    assert_eq!(
        (r["nodes"].as_u64(), r["via"].as_str(), r["errors_total"].as_u64()),
        (Some(3), Some("proxy"), Some(0))
    );
}

#[test]
fn bad_proxy_arguments_are_clear_errors() {
    let none = Command::new(HARNESS).args(["proxy", "--port", "0"]).output().expect("run");
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("--node"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    let bad =
        Command::new(HARNESS).args(["proxy", "--port", "0", "--node", "ftp://x:1"]).output().expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("http://"));
    let not_proxy = Server::node();
    let run = Command::new(HARNESS).args(["run", "--proxy", &not_proxy.url]).output().expect("run");
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("harness proxy"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn a_pipelined_mix_of_large_reads_and_writes_does_not_deadlock() {
    // Large answers and large requests in one batch to one node: the proxy must not block writing the
    // later PUTs while the node blocks writing the earlier GETs' answers that nobody reads yet.
    let nodes = [Server::node()];
    let proxy = Server::proxy(&nodes, &[]);
    let big = |i: usize| vec![b'a' + i as u8; 900 * 1024];
    let mut batch = Vec::new();
    for round in 0..2 {
        for i in 0..4 {
            let v = big(i + round);
            batch.extend(
                format!("PUT /v1/kv/big{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", v.len())
                    .bytes(),
            );
            batch.extend(&v);
        }
        for i in 0..4 {
            batch.extend(format!("GET /v1/kv/big{i} HTTP/1.1\r\nHost: x\r\n\r\n").bytes());
        }
    }
    let s = TcpStream::connect(proxy.url.trim_start_matches("http://")).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut writer = s.try_clone().expect("clone");
    // Written from another thread: the answers (7 MiB) must be read while the requests (7 MiB) go out.
    let sender = std::thread::spawn(move || writer.write_all(&batch).expect("write"));
    let mut r = BufReader::new(s);
    for round in 0..2 {
        for _ in 0..4 {
            let (status, _) = read_response(&mut r, false);
            assert!(status == 201 || status == 204, "PUT answered {status}");
        }
        for i in 0..4 {
            let (status, body) = read_response(&mut r, false);
            assert_eq!(status, 200);
            assert!(body == big(i + round), "GET big{i} in round {round}: wrong value");
        }
    }
    sender.join().expect("sender");
}
