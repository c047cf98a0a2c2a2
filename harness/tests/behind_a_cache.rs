//! A real HTTP cache in front: nginx with `proxy_cache` (default settings) in front of a node, and in
//! front of `harness proxy`. After an overwrite, a delete and an expiry, a GET through the cache returns
//! what the node holds, for keys with and without a TTL; a client's revalidation through the cache
//! reaches the node and gets its 304. And httplint (`REDbot`'s checker) over the raw answer of every route
//! and status finds nothing to warn about.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

#[path = "../../adapter-http/tests/common/mod.rs"]
mod common;

use common::eventually;

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");
/// The one line that lets clients' revalidations through nginx's `proxy_cache` to the node (docs/operations.md).
const PASS_CONDITIONALS: &str = "proxy_set_header If-None-Match $http_if_none_match;";

struct Server {
    child: Child,
    /// `127.0.0.1:PORT`
    addr: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut command = Command::new(HARNESS);
        command.args(args).env("RUST_LOG", "warn");
        let (child, url) = common::spawn_listening(command);
        let addr = url.strip_prefix("http://").expect("an http URL").to_string();
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx with `proxy_cache` in front of `upstream`, in a directory of its own.
struct Nginx {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// `extra`: more lines for the `location` block.
    fn start(upstream: &str, extra: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("dir");
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             proxy_cache_path {d}/cache keys_zone=otkv:1m;\n  server {{\n    listen 127.0.0.1:{port};\n    \
             location / {{\n      proxy_pass http://{upstream};\n      proxy_cache otkv;\n      \
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      \
             add_header X-Cache-Status $upstream_cache_status always;\n      {extra}\n    }}\n  }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("conf");
        let child = Command::new(nginx())
            .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (apt-get install nginx-light)");
        let addr = format!("127.0.0.1:{port}");
        eventually("nginx listens", || TcpStream::connect(&addr).is_ok());
        Nginx { child, addr, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx() -> String {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "nginx"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map_or_else(|| "nginx".to_string(), ToString::to_string)
}

/// One request on a fresh connection: the whole raw answer.
fn exchange(addr: &str, request: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(common::PATIENCE)).expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("read");
    answer
}

/// Status, the named header, and the body of `method path` (with `extra` header lines).
fn call(addr: &str, method: &str, path: &str, extra: &str, body: &str) -> (u16, String, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let raw = String::from_utf8_lossy(&exchange(addr, &req)).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

/// 304 answers the node itself has given, from its `/metrics`.
fn node_304s(node: &str) -> u64 {
    let (_, _, body) = call(node, "GET", "/metrics", "", "");
    body.lines()
        .filter(|l| l.starts_with("otkv_requests_total{") && l.contains("code=\"304\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The sequence the cache must never get wrong, through `cache` in front of `node`'s data; then a
/// client's revalidation through `passing` (the same cache, passing `If-None-Match` on).
fn never_stale(cache: &str, passing: &str, node: &str) {
    for ttl in ["?ttl=300", ""] {
        let key = format!("/v1/kv/t{}", ttl.len());
        let put = |v: &str| call(node, "PUT", &format!("{key}{ttl}"), "", v).0;
        let via_cache = || call(cache, "GET", &key, "", "");
        assert_eq!(put("A-first"), 201);
        assert_eq!(via_cache().2, "A-first");
        assert_eq!(via_cache().2, "A-first");
        assert_eq!(put("B-new"), 204);
        let (status, head, body) = via_cache();
        assert_eq!((status, body.as_str()), (200, "B-new"), "after an overwrite ({ttl}): {head}");
        assert_ne!(header(&head, "X-Cache-Status"), Some("HIT"), "{head}");
        assert_eq!(call(node, "DELETE", &key, "", "").0, 204);
        assert_eq!(via_cache().0, 404, "after a delete ({ttl})");
    }
    // An expiry.
    assert_eq!(call(node, "PUT", "/v1/kv/short?ttl=1", "", "soon gone").0, 201);
    assert_eq!(call(cache, "GET", "/v1/kv/short", "", "").2, "soon gone");
    eventually("the expired key is gone through the cache", || {
        call(cache, "GET", "/v1/kv/short", "", "").0 == 404
    });
    // A repeated, unchanged GET: with default settings nginx neither stores a `no-cache` answer nor
    // passes a client's `If-None-Match` on (it asks for full answers to store), so the client gets a
    // full 200, which is right, only not cheaper; passing the header on, the node answers 304 itself.
    assert_eq!(call(node, "PUT", "/v1/kv/same", "", "unchanged").0, 201);
    let (_, head, _) = call(cache, "GET", "/v1/kv/same", "", "");
    let etag = header(&head, "ETag").expect("an ETag").to_string();
    assert_eq!(header(&head, "Cache-Control"), Some("no-cache"), "{head}");
    let conditional = format!("If-None-Match: {etag}\r\n");
    let (status, _, body) = call(cache, "GET", "/v1/kv/same", &conditional, "");
    assert_eq!((status, body.as_str()), (200, "unchanged"));
    let before = node_304s(node);
    let (status, head, body) = call(passing, "GET", "/v1/kv/same", &conditional, "");
    assert_eq!((status, body.as_str()), (304, ""), "{head}");
    assert_eq!(node_304s(node), before + 1, "the node answered the revalidation itself");
    // And after a change, the same revalidation gets the new value.
    assert_eq!(call(node, "PUT", "/v1/kv/same", "", "changed").0, 204);
    assert_eq!(call(passing, "GET", "/v1/kv/same", &conditional, "").2, "changed");
}

#[test]
fn nginx_in_front_of_a_node_never_serves_an_overwritten_deleted_or_expired_value() {
    let node = Server::start(&["node", "--port", "0"]);
    let cache = Nginx::start(&node.addr, "");
    let passing = Nginx::start(&node.addr, PASS_CONDITIONALS);
    never_stale(&cache.addr, &passing.addr, &node.addr);
}

#[test]
fn nginx_in_front_of_the_proxy_never_serves_an_overwritten_deleted_or_expired_value() {
    let node = Server::start(&["node", "--port", "0"]);
    let proxy = Server::start(&["proxy", "--port", "0", "--node", &format!("http://{}", node.addr)]);
    let cache = Nginx::start(&proxy.addr, "");
    let passing = Nginx::start(&proxy.addr, PASS_CONDITIONALS);
    never_stale(&cache.addr, &passing.addr, &node.addr);
    // The proxy's own answers say the same.
    let (_, head, _) = call(&proxy.addr, "GET", "/v1/kv?prefix=", "", "");
    assert_eq!(header(&head, "Cache-Control"), Some("no-store"), "{head}");
}

/// httplint's BAD and WARN notes on a raw answer.
fn lint(raw: &[u8]) -> Vec<String> {
    // Its command-line entry point, through python3 (wherever pip put the `httplint` script).
    let cli = "import sys\nfrom httplint.cli import main\nsys.argv = ['httplint', '-n']\nsys.exit(main())";
    let mut child = Command::new("python3")
        .args(["-c", cli])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("httplint (pip install httplint)");
    child.stdin.take().expect("stdin").write_all(raw).expect("feed httplint");
    let out = child.wait_with_output().expect("httplint");
    assert!(out.status.success(), "httplint failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("[BAD]") || l.contains("[WARN]"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn httplint_finds_nothing_to_warn_about_in_any_answer() {
    let node = Server::start(&["node", "--port", "0"]);
    // The proxy's node is another, so both see the same sequence from an empty store.
    let behind = Server::start(&["node", "--port", "0"]);
    let proxy = Server::start(&["proxy", "--port", "0", "--node", &format!("http://{}", behind.addr)]);
    // `/v1/kv/big` declares 2 MiB (over the 1 MiB limit) and sends none of it: 413 from the head alone.
    let requests: [(&str, &str, &str, &str); 19] = [
        ("PUT", "/v1/kv/a?ttl=300", "", "with a ttl"),
        ("PUT", "/v1/kv/a?ttl=300", "", "201 then 204"),
        ("PUT", "/v1/kv/b", "", "no ttl"),
        ("GET", "/v1/kv/a", "", ""),
        ("GET", "/v1/kv/b", "", ""),
        ("GET", "/v1/kv/b", "If-None-Match: \"3\"\r\n", ""),
        ("GET", "/v1/kv/missing", "", ""),
        ("PUT", "/v1/kv/b", "If-Match: \"99\"\r\n", "x"),
        ("GET", "/v1/kv?prefix=", "", ""),
        ("GET", "/v1/stats", "", ""),
        ("GET", "/metrics", "", ""),
        ("GET", "/healthz", "", ""),
        ("POST", "/c", "", "{\"value\": \"v\"}"),
        ("GET", "/c", "", ""),
        ("DELETE", "/c", "", ""),
        ("PATCH", "/v1/kv/a", "", ""),
        ("GET", "/no/such/path", "", ""),
        ("PUT", "/v1/kv/big", "", ""),
        ("DELETE", "/v1/kv/a", "", ""),
    ];
    for server in [&node.addr, &proxy.addr] {
        let mut statuses = Vec::new();
        for (method, path, extra, body) in requests {
            let declared = if path == "/v1/kv/big" { 2 << 20 } else { body.len() };
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Length: {declared}\r\n\r\n{body}"
            );
            let raw = exchange(server, &req);
            let status = String::from_utf8_lossy(&raw).split(' ').nth(1).unwrap_or_default().to_string();
            assert!(lint(&raw).is_empty(), "{method} {path} -> {status}: {:?}", lint(&raw));
            statuses.push(status);
        }
        let want = [
            "201", "204", "201", "200", "200", "304", "404", "412", "200", "200", "200", "200", "200", "200",
            "200", "405", "404", "413", "204",
        ];
        assert_eq!(statuses, want, "{server}");
        // A 400's one note is httplint's gloss on the status itself ("the server didn't understand the
        // request"): that is what 400 says, and it is the right answer to a malformed request.
        let raw = exchange(server, "GET /v1/kv/a?ttl=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let notes = lint(&raw);
        assert!(notes.iter().all(|n| n.contains("didn't understand the request")), "400: {notes:?}");
    }
}

#[test]
fn a_key_written_and_read_through_the_cache_repeatedly_stays_consistent() {
    let node = Server::start(&["node", "--port", "0"]);
    let cache = Nginx::start(&node.addr, "");
    for i in 0..50 {
        let value = format!("v{i}");
        let (status, head, _) = call(&cache.addr, "PUT", "/v1/kv/k", "", &value);
        assert!(status == 201 || status == 204, "{head}");
        if status == 201 {
            assert_eq!(header(&head, "Location"), Some("/v1/kv/k"));
        }
        assert_eq!(call(&cache.addr, "GET", "/v1/kv/k", "", "").2, value);
    }
}
