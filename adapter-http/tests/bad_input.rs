//! Bad input gets a clear status, closes the connection where the stream can no longer be trusted, and
//! loses nothing: each rule of the adapter, sent as raw bytes.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use std::fmt::Write as _;
use std::io::{BufReader, Write};

use common::{assert_closed, raw_exchange, raw_exchange_then_eof, read_response, status_of, Node};

fn get_value(node: &Node, key: &str) -> Option<String> {
    match common::agent().get(&format!("{}/v1/kv/{key}", node.url)).call() {
        Ok(r) => Some(r.into_string().expect("utf8")),
        Err(ureq::Error::Status(404, _)) => None,
        Err(e) => panic!("{e}"),
    }
}

/// Sends `request` on a fresh connection, expects exactly one response with `status` and then a close.
fn expect_status_and_close(node: &Node, request: &[u8], status: u16) -> String {
    let responses = raw_exchange(node, request);
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].status, status, "{}", responses[0].text());
    assert_eq!(responses[0].header("connection"), Some("close"));
    responses[0].text()
}

#[test]
fn malformed_request_line_is_400() {
    let node = Node::start(&[]);
    expect_status_and_close(&node, b"GARBAGE\r\n\r\n", 400);
    expect_status_and_close(&node, b"GET /v1/kv/a HTTP/9.9\r\nHost: x\r\n\r\n", 400);
    expect_status_and_close(&node, b"GET /v1/kv/a HTTP/1.1\r\nBad Header\r\n\r\n", 400);
    expect_status_and_close(&node, b"GET http://elsewhere/ HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    let msg = expect_status_and_close(&node, b"GET /v1/kv/a HTTP/1.1\r\n\r\n", 400);
    assert!(msg.contains("Host"), "{msg}");
}

#[test]
fn oversized_head_and_too_many_headers_are_431() {
    let node = Node::start(&[]);
    let long = format!("GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(17 * 1024));
    expect_status_and_close(&node, long.as_bytes(), 431);
    let mut many = String::from("GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n");
    for i in 0..70 {
        let _ = write!(many, "X-H{i}: v\r\n");
    }
    many.push_str("\r\n");
    expect_status_and_close(&node, many.as_bytes(), 431);
    // A head that never ends is cut at the cap, not buffered forever.
    let mut s = node.connect();
    let mut sent = 0;
    let chunk = [b'a'; 4096];
    s.write_all(b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nX-Endless: ").expect("write");
    while sent < 1 << 20 {
        if s.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut r = BufReader::new(s);
    if let Some(resp) = read_response(&mut r, false) {
        assert_eq!(resp.status, 431);
    }
}

#[test]
fn invalid_or_conflicting_content_length_is_400_and_close() {
    let node = Node::start(&[]);
    for cl in ["abc", "-1", "1.5", "", "99999999999999999999999"] {
        let req = format!("PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: {cl}\r\n\r\nv");
        expect_status_and_close(&node, req.as_bytes(), 400);
    }
    let req = b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nvv";
    expect_status_and_close(&node, req, 400);
    let req =
        b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nvv";
    expect_status_and_close(&node, req, 400);
    assert_eq!(get_value(&node, "k"), None, "nothing may be stored");
    assert!(node_is_up(&node));
}

#[test]
fn chunked_body_is_refused_and_never_stores_a_wrong_value() {
    let node = Node::start(&[]);
    let req = b"PUT /v1/kv/chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\nhello\r\n0\r\n\r\nGET /v1/kv/chunky HTTP/1.1\r\nHost: x\r\n\r\n";
    let msg = expect_status_and_close(&node, req, 411);
    assert!(msg.contains("Content-Length"), "{msg}");
    let req = b"PUT /v1/kv/zipped HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxx";
    expect_status_and_close(&node, req, 501);
    assert_eq!(get_value(&node, "chunky"), None);
    assert_eq!(get_value(&node, "zipped"), None);
}

#[test]
fn unused_body_is_consumed_not_parsed_as_a_request() {
    let node = Node::start(&[]);
    assert_eq!(
        status_of(common::agent().put(&format!("{}/v1/kv/victim", node.url)).send_bytes(b"safe")).0,
        201
    );
    let smuggled = "DELETE /v1/kv/victim HTTP/1.1\r\nHost: x\r\n\r\n";
    let req = format!(
        "GET /v1/kv/victim HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}\
         GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        smuggled.len()
    );
    let responses = raw_exchange(&node, req.as_bytes());
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200], "the body must not become a request");
    assert_eq!(responses[0].text(), "safe");
    assert_eq!(get_value(&node, "victim").as_deref(), Some("safe"));
}

#[test]
fn key_rules_empty_long_and_badly_encoded() {
    let node = Node::start(&["--max-key-bytes", "8"]);
    let code = |method: &str, path: &str| {
        status_of(common::agent().request(method, &format!("{}{path}", node.url)).call()).0
    };
    assert_eq!(code("GET", "/v1/kv/"), 400);
    assert_eq!(code("PUT", "/v1/kv/"), 400);
    assert_eq!(code("GET", "/v1/kv/123456789"), 414);
    assert_eq!(code("GET", "/v1/kv/%31%32%33%34%35%36%37%38"), 404, "8 decoded bytes are within the limit");
    assert_eq!(code("GET", "/v1/kv/%zz"), 400);
    assert_eq!(code("GET", "/v1/kv/a/b"), 404);
    assert_eq!(code("GET", "/"), 400);
}

#[test]
fn value_over_limit_is_413_before_the_body_is_read() {
    let node = Node::start(&["--max-value-bytes", "1000"]);
    // Only the head is sent: the answer must not wait for the 10 MB body.
    let mut s = node.connect();
    s.write_all(b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n").expect("write");
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r, false).expect("response");
    assert_eq!(resp.status, 413);
    assert_closed(&mut r);
    assert_eq!(
        status_of(common::agent().put(&format!("{}/v1/kv/ok", node.url)).send_bytes(&[7u8; 1000])).0,
        201
    );
    assert_eq!(get_value(&node, "big"), None);
}

#[test]
fn expect_100_continue_is_answered() {
    let node = Node::start(&["--max-value-bytes", "1000"]);
    let mut s = node.connect();
    s.write_all(b"PUT /v1/kv/cont HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .expect("write");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let interim = read_response(&mut r, false).expect("interim");
    assert_eq!(interim.status, 100);
    s.write_all(b"hello").expect("body");
    assert_eq!(read_response(&mut r, false).expect("final").status, 201);
    assert_eq!(get_value(&node, "cont").as_deref(), Some("hello"));

    // Refused up front: the error instead of 100, and the body is never awaited.
    let mut s = node.connect();
    s.write_all(
        b"PUT /v1/kv/huge HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
    )
    .expect("write");
    let mut r = BufReader::new(s);
    assert_eq!(read_response(&mut r, false).expect("final").status, 413);
    let mut s = node.connect();
    s.write_all(b"PUT /v1/kv/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .expect("write");
    let mut r = BufReader::new(s);
    assert_eq!(read_response(&mut r, false).expect("final").status, 400);
    expect_status_and_close(
        &node,
        b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 0\r\n\r\n",
        417,
    );
}

#[test]
fn wrong_method_is_405_with_allow_and_unknown_path_is_404() {
    let node = Node::start(&[]);
    let r = common::agent().request("PATCH", &format!("{}/v1/kv/a", node.url)).call();
    match r {
        Err(ureq::Error::Status(405, resp)) => {
            assert_eq!(resp.header("allow"), Some("GET, HEAD, PUT, DELETE"));
        }
        other => panic!("expected 405, got {other:?}"),
    }
    match common::agent().post(&format!("{}/healthz", node.url)).call() {
        Err(ureq::Error::Status(405, resp)) => assert_eq!(resp.header("allow"), Some("GET, HEAD")),
        other => panic!("expected 405, got {other:?}"),
    }
    match common::agent().put(&format!("{}/compat-key", node.url)).call() {
        Err(ureq::Error::Status(405, resp)) => {
            assert_eq!(resp.header("allow"), Some("GET, HEAD, POST, DELETE"));
        }
        other => panic!("expected 405, got {other:?}"),
    }
    for path in ["/v2/kv/a", "/v1/other", "/a/b/c"] {
        assert_eq!(status_of(common::agent().get(&format!("{}{path}", node.url)).call()).0, 404, "{path}");
    }
}

#[test]
fn no_input_takes_the_server_down() {
    let node = Node::start(&[]);
    // A spread of hostile or broken inputs; after each the server must still answer.
    let inputs: Vec<Vec<u8>> = vec![
        b"\0\0\0\0\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(),
        b"PUT /v1/kv/%ff%fe HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n\xff\xfe\xfd".to_vec(),
        b"POST /k HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{\"value\":".to_vec(),
        b"GET /v1/kv?prefix=%&limit=-1 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        (0..=255u8).cycle().take(20_000).collect(),
    ];
    for input in inputs {
        let _ = raw_exchange_then_eof(&node, &input);
        assert!(node_is_up(&node));
    }
}

fn node_is_up(node: &Node) -> bool {
    common::agent().get(&format!("{}/healthz", node.url)).call().is_ok_and(|r| r.status() == 200)
}
