//! Who may read and write: HTTPS (with and without client certificates), bearer tokens per route class,
//! SIGHUP re-reading the tokens, and protected mode, against the real binary. Certificates are made by
//! the test (`common::TestCerts`).

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{eventually, read_response, status_of, Node, Stream, TestCerts, PATIENCE};

const READER: &str = "read-token-0123456789abcdef";
const WRITER: &str = "write-token-0123456789abcdef";

fn tls_args(certs: &TestCerts) -> Vec<String> {
    vec!["--tls-cert".into(), certs.path("server.pem"), "--tls-key".into(), certs.path("server.key")]
}

fn start(args: &[String]) -> Node {
    Node::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn https_agent(certs: &TestCerts, client: Option<&str>) -> ureq::Agent {
    ureq::AgentBuilder::new().tls_config(certs.client_config("ca.pem", client)).build()
}

/// `https://localhost:PORT` for a node listening on 127.0.0.1 (the certificate names both).
fn localhost(node: &Node) -> String {
    format!("https://localhost:{}", node.addr.rsplit_once(':').expect("port").1)
}

fn token_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("tokens");
    std::fs::write(&path, text).expect("write tokens");
    path.to_string_lossy().into_owned()
}

#[test]
fn curl_and_ureq_round_trip_over_https() {
    let certs = TestCerts::new();
    let node = start(&tls_args(&certs));
    assert!(node.url.starts_with("https://"), "{}", node.url);
    let url = format!("{}/v1/kv/greeting", localhost(&node));
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--cacert", &certs.path("ca.pem")])
            .args(args)
            .output()
            .expect("curl (apt-get install curl)");
        assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    curl(&["-X", "PUT", "--data-binary", "hello over tls", &url]);
    assert_eq!(curl(&[&url]), "hello over tls");
    let agent = https_agent(&certs, None);
    let got = agent.get(&url).call().expect("get").into_string().expect("text");
    assert_eq!(got, "hello over tls");
    // Pipelined over one TLS connection: answered in order.
    let mut s =
        Stream::tls(TcpStream::connect(&node.addr).expect("connect"), certs.client_config("ca.pem", None));
    s.write_all(&b"GET /v1/kv/greeting HTTP/1.1\r\nHost: x\r\n\r\n".repeat(20)).expect("write");
    let mut r = BufReader::new(s);
    for _ in 0..20 {
        assert_eq!(read_response(&mut r, false).expect("answer").text(), "hello over tls");
    }
}

#[test]
fn a_certificate_the_client_does_not_trust_is_refused() {
    let certs = TestCerts::new();
    for (cert, why) in [("rogue", "signed by another CA"), ("expired", "expired")] {
        let args = [
            "--tls-cert".to_string(),
            certs.path(&format!("{cert}.pem")),
            "--tls-key".into(),
            certs.path(&format!("{cert}.key")),
        ];
        let node = start(&args);
        let err =
            https_agent(&certs, None).get(&format!("{}/healthz", localhost(&node))).call().expect_err(why);
        assert!(matches!(err, ureq::Error::Transport(_)), "{why}: {err}");
    }
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let certs = TestCerts::new();
    let mut args = tls_args(&certs);
    args.extend(["--tls-client-ca".into(), certs.path("ca.pem")]);
    let node = start(&args);
    let url = format!("{}/v1/kv/k", localhost(&node));
    let with = https_agent(&certs, Some("client"));
    assert_eq!(status_of(with.put(&url).send_bytes(b"v")).0, 201);
    assert_eq!(with.get(&url).call().expect("get").into_string().expect("text"), "v");
    for client in [None, Some("rogue-client")] {
        let err = https_agent(&certs, client).get(&url).call().expect_err("refused");
        assert!(matches!(err, ureq::Error::Transport(_)), "{client:?}: {err}");
    }
}

#[test]
fn plain_http_on_a_tls_port_gets_a_clear_400_then_the_close() {
    let certs = TestCerts::new();
    let node = start(&tls_args(&certs));
    let mut s = TcpStream::connect(&node.addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r, false).expect("an answer");
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("https://"), "{}", resp.text());
    common::assert_closed(&mut r);
    // The node serves TLS clients on.
    assert_eq!(
        https_agent(&certs, None).get(&format!("{}/healthz", localhost(&node))).call().expect("ok").status(),
        200
    );
}

#[test]
fn a_stalled_handshake_is_cut_after_the_header_timeout() {
    let certs = TestCerts::new();
    let mut args = tls_args(&certs);
    args.extend(["--header-timeout".into(), "1s".into(), "--idle-timeout".into(), "60s".into()]);
    let node = start(&args);
    // Nothing at all, and half a ClientHello: each is cut after about the header timeout, not the idle one.
    for sent in [&b""[..], &[0x16, 0x03, 0x01, 0x01, 0x00, 0x01][..]] {
        let mut s = TcpStream::connect(&node.addr).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let started = Instant::now();
        s.write_all(sent).expect("write");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900) && took < PATIENCE, "cut after {took:?}");
    }
    // A completed handshake then waits for a request under the idle timeout, not the header timeout.
    let mut s =
        Stream::tls(TcpStream::connect(&node.addr).expect("connect"), certs.client_config("ca.pem", None));
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    assert_eq!(read_response(&mut r, false).expect("answer").status, 200);
    let idle = Instant::now();
    while idle.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(100));
    }
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("write after 1.5 s idle");
    assert_eq!(read_response(&mut r, false).expect("still open").status, 200);
}

/// Status of `method path` with `token` (or none) on a keep-alive connection to a clear node.
fn status(
    r: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, common::Response) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = match method {
        "PUT" => "v",
        "POST" => r#"{"value": "v"}"#,
        _ => "",
    };
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{body}", body.len());
    r.get_mut().write_all(req.as_bytes()).expect("write");
    let resp = read_response(r, method == "HEAD").expect("answer");
    (resp.status, resp)
}

#[test]
fn tokens_decide_each_route_class() {
    let dir = tempfile::tempdir().expect("dir");
    let file = token_file(&dir, &format!("# who may\nread {READER}\nwrite {WRITER}\n"));
    let node = Node::start(&["--auth-token-file", &file]);
    let mut r = BufReader::new(node.connect_tcp());
    assert_eq!(status(&mut r, "PUT", "/v1/kv/k", Some(WRITER)).0, 201);
    let reads = [
        ("GET", "/v1/kv/k"),
        ("HEAD", "/v1/kv/k"),
        ("GET", "/v1/kv?prefix=k"),
        ("GET", "/v1/stats"),
        ("GET", "/metrics"),
        ("GET", "/k"),
        ("GET", "/no/such/path"),
    ];
    let writes = [("PUT", "/v1/kv/k2"), ("POST", "/k3"), ("DELETE", "/v1/kv/k2"), ("DELETE", "/k3")];
    for (method, path) in reads.iter().chain(&writes) {
        let (code, resp) = status(&mut r, method, path, None);
        assert_eq!(code, 401, "{method} {path} without a token");
        assert_eq!(resp.header("www-authenticate"), Some("Bearer realm=\"otkv\""));
        let (code, resp) = status(&mut r, method, path, Some("not-a-token-we-know-of"));
        assert_eq!(code, 401, "{method} {path} with an unknown token");
        assert!(!resp.text().contains("not-a-token"), "the token is never echoed: {}", resp.text());
    }
    for (method, path) in reads {
        let want = if path == "/no/such/path" { 404 } else { 200 };
        assert_eq!(status(&mut r, method, path, Some(READER)).0, want, "{method} {path} with read");
        assert_eq!(status(&mut r, method, path, Some(WRITER)).0, want, "{method} {path} with write");
    }
    for (method, path) in writes {
        assert_eq!(status(&mut r, method, path, Some(READER)).0, 403, "{method} {path} with read");
        assert!(status(&mut r, method, path, Some(WRITER)).0 < 300, "{method} {path} with write");
    }
    // Probes need nothing.
    assert_eq!(status(&mut r, "GET", "/healthz", None).0, 200);
    // Two Authorization headers: refused, whichever would have counted.
    let twice = format!(
        "GET /v1/kv/k HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER}\r\nAuthorization: Bearer {WRITER}\r\n\r\n"
    );
    let answers = common::raw_exchange(&node, twice.as_bytes());
    assert_eq!(answers[0].status, 400);
}

#[test]
fn an_unauthenticated_body_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().expect("dir");
    let file = token_file(&dir, &format!("write {WRITER}\n"));
    let node = Node::start(&["--auth-token-file", &file]);
    let mut s = node.connect_tcp();
    // The head of a 1 MB write, and no body yet: 401 at once, and the connection closes.
    s.write_all(b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n").expect("write");
    let mut r = BufReader::new(s);
    assert_eq!(read_response(&mut r, false).expect("answer").status, 401);
    common::assert_closed(&mut r);
}

#[test]
fn sighup_adds_and_removes_tokens_without_dropping_connections() {
    let dir = tempfile::tempdir().expect("dir");
    let file = token_file(&dir, &format!("write {WRITER}\n"));
    let node = Node::start(&["--auth-token-file", &file]);
    let mut r = BufReader::new(node.connect_tcp());
    assert_eq!(status(&mut r, "PUT", "/v1/kv/k", Some(WRITER)).0, 201);
    assert_eq!(status(&mut r, "GET", "/v1/kv/k", Some(READER)).0, 401);
    token_file(&dir, &format!("read {READER}\n"));
    node.signal("HUP");
    eventually("the re-read file is in force", || status(&mut r, "GET", "/v1/kv/k", Some(READER)).0 == 200);
    // On the very connection that used it: the removed token is refused now.
    assert_eq!(status(&mut r, "PUT", "/v1/kv/k", Some(WRITER)).0, 401);
    // A broken file keeps the tokens in force.
    token_file(&dir, "this is not a token file\n");
    node.signal("HUP");
    assert_eq!(status(&mut r, "GET", "/v1/kv/k", Some(READER)).0, 200);
    let mut fresh = BufReader::new(node.connect_tcp());
    assert_eq!(status(&mut fresh, "GET", "/v1/kv/k", Some(READER)).0, 200);
}

#[test]
fn protected_mode_refuses_an_open_network_address() {
    let exe = env!("CARGO_BIN_EXE_otkv-server");
    let out = Command::new(exe).args(["--bind", "0.0.0.0", "--port", "0"]).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for way_out in ["--auth-token-file", "--tls-client-ca", "--allow-unauthenticated"] {
        assert!(err.contains(way_out), "names {way_out}: {err}");
    }
    let dir = tempfile::tempdir().expect("dir");
    let file = token_file(&dir, &format!("write {WRITER}\n"));
    let certs = TestCerts::new();
    let mut mtls = tls_args(&certs);
    mtls.extend(["--tls-client-ca".into(), certs.path("ca.pem")]);
    for extra in [vec!["--allow-unauthenticated".to_string()], vec!["--auth-token-file".into(), file], mtls] {
        let mut args = vec!["--bind".to_string(), "0.0.0.0".into()];
        args.extend(extra.iter().cloned());
        let node = start(&args);
        assert!(node.url.contains("0.0.0.0"), "{extra:?}: {}", node.url);
    }
    // Bad files are clear errors too, without quoting a token.
    std::fs::write(dir.path().join("bad"), format!("admin {WRITER}\n")).expect("write");
    let out = Command::new(exe)
        .args(["--port", "0", "--auth-token-file"])
        .arg(dir.path().join("bad"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && !err.contains(WRITER), "{err}");
    let out = Command::new(exe)
        .args(["--port", "0", "--tls-cert", &certs.path("server.pem"), "--tls-key", &certs.path("ca.pem")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ca.pem"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
