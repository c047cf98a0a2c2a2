//! Versions as `ETags`, conditional writes (`If-Match`, `If-None-Match`), and expiring keys (`?ttl=`), over
//! real HTTP against real nodes of both engines.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use std::time::{Duration, SystemTime};

use common::{eventually, Node};

/// Status, `ETag` and `OTKV-Expires` of a request with `headers`.
fn call(
    req: ureq::Request,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, Option<String>, Option<String>) {
    let req = headers.iter().fold(req, |r, (k, v)| r.set(k, v));
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let r = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    (r.status(), r.header("ETag").map(str::to_owned), r.header("OTKV-Expires").map(str::to_owned))
}

fn url(node: &Node, key: &str) -> String {
    format!("{}/v1/kv/{key}", node.url)
}

fn put(node: &Node, key: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Option<String>) {
    let (s, tag, _) = call(ureq::put(&url(node, key)), headers, Some(body));
    (s, tag)
}

fn get(node: &Node, key: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
    let (s, tag, _) = call(ureq::get(&url(node, key)), headers, None);
    (s, tag)
}

fn delete(node: &Node, key: &str, headers: &[(&str, &str)]) -> u16 {
    call(ureq::delete(&url(node, key)), headers, None).0
}

fn conditional_writes_follow_the_rules(node: &Node) {
    let (status, v1) = put(node, "k", &[], b"one");
    assert_eq!(status, 201);
    let v1 = v1.expect("a PUT's answer carries the new ETag");
    assert!(v1.starts_with('"') && v1.ends_with('"'), "{v1}");
    assert_eq!(get(node, "k", &[]), (200, Some(v1.clone())));
    assert_eq!(call(ureq::head(&url(node, "k")), &[], None).1, Some(v1.clone()));

    // If-Match: the write applies only to the version named.
    let (status, v2) = put(node, "k", &[("If-Match", &v1)], b"two");
    assert_eq!(status, 204);
    let v2 = v2.expect("etag");
    assert_ne!(v1, v2);
    assert_eq!(put(node, "k", &[("If-Match", &v1)], b"three").0, 412, "a stale version is refused");
    assert_eq!(get(node, "k", &[]).1, Some(v2.clone()), "and wrote nothing");
    assert_eq!(put(node, "absent", &[("If-Match", "*")], b"x").0, 412, "If-Match: * needs the key");
    assert_eq!(put(node, "absent", &[("If-Match", &v2)], b"x").0, 412, "an absent key matches no version");
    assert_eq!(put(node, "k", &[("If-Match", "*")], b"four").0, 204);
    let v4 = get(node, "k", &[]).1.expect("etag");

    // If-None-Match: * creates only.
    assert_eq!(put(node, "k", &[("If-None-Match", "*")], b"x").0, 412);
    assert_eq!(put(node, "new", &[("If-None-Match", "*")], b"x").0, 201);

    // Conditional GET.
    let (status, tag) = get(node, "k", &[("If-None-Match", &v4)]);
    assert_eq!((status, tag.as_deref()), (304, Some(v4.as_str())), "unchanged: 304 with its ETag");
    assert_eq!(get(node, "k", &[("If-None-Match", &v1)]).0, 200);
    assert_eq!(get(node, "k", &[("If-None-Match", &format!("{v1}, W/{v4}"))]).0, 304, "a list, weakly");

    // Conditional DELETE.
    assert_eq!(delete(node, "k", &[("If-Match", &v1)]), 412);
    assert_eq!(get(node, "k", &[]).0, 200, "a refused delete deletes nothing");
    assert_eq!(delete(node, "k", &[("If-Match", &v4)]), 204);
    assert_eq!(delete(node, "k", &[("If-Match", &v4)]), 412, "absent: the version cannot match");
    assert_eq!(delete(node, "k", &[]), 404);

    // The original JSON API's POST and GET carry the same ETags (its bodies are unchanged).
    let (status, posted, _) =
        call(ureq::post(&format!("{}/compat", node.url)), &[], Some(br#"{"value": "x"}"#));
    assert_eq!(status, 200);
    let posted = posted.expect("POST carries the ETag");
    let (status, read, _) = call(ureq::get(&format!("{}/compat", node.url)), &[], None);
    assert_eq!((status, read), (200, Some(posted.clone())));
    assert_eq!(get(node, "compat", &[]).1, Some(posted));

    // Malformed or unusable preconditions are the client's error.
    for (name, value) in
        [("If-Match", "5"), ("If-Match", "\"x\""), ("If-Match", "\"1\", \"2\""), ("If-None-Match", "nope")]
    {
        assert_eq!(put(node, "new", &[(name, value)], b"x").0, 400, "{name}: {value}");
    }
    assert_eq!(put(node, "new", &[("If-Match", "*"), ("If-None-Match", "*")], b"x").0, 400);
    assert_eq!(
        put(node, "new", &[("If-Match", &format!("W/{v1}"))], b"x").0,
        412,
        "a weak tag never matches"
    );
    assert_eq!(get(node, "new", &[("If-None-Match", "\"a\"")]).0, 400);
}

fn expiry_follows_the_rules(node: &Node) {
    let (status, _, expires) = call(ureq::put(&format!("{}?ttl=3600", url(node, "t"))), &[], Some(b"v"));
    assert_eq!(status, 201);
    let expires = expires.expect("an expiring write says when");
    let at = httpdate::parse_http_date(&expires).expect("an HTTP-date");
    let want = SystemTime::now() + Duration::from_hours(1);
    let off = at.duration_since(want).unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(5), "OTKV-Expires {expires} is an hour from now");
    assert_eq!(call(ureq::get(&url(node, "t")), &[], None).2.as_deref(), Some(expires.as_str()));
    // A write without ttl makes the key permanent again, as Redis's SET does.
    assert_eq!(put(node, "t", &[], b"w").0, 204);
    assert_eq!(call(ureq::get(&url(node, "t")), &[], None).2, None);

    for bad in ["0", "-1", "1.5", "abc", "", "315360001"] {
        let (status, _, _) = call(ureq::put(&format!("{}?ttl={bad}", url(node, "t"))), &[], Some(b"v"));
        assert_eq!(status, 400, "ttl={bad}");
    }
    assert_eq!(call(ureq::get(&format!("{}?ttl=5", url(node, "t"))), &[], None).0, 400, "ttl on GET");
    assert_eq!(call(ureq::put(&format!("{}?tll=5", url(node, "t"))), &[], Some(b"v")).0, 400);

    // A key with a one-second TTL is gone for every operation once it expires.
    assert_eq!(call(ureq::put(&format!("{}?ttl=1", url(node, "short"))), &[], Some(b"v")).0, 201);
    assert_eq!(get(node, "short", &[]).0, 200);
    eventually("the key expires", || get(node, "short", &[]).0 == 404);
    assert_eq!(call(ureq::head(&url(node, "short")), &[], None).0, 404);
    let list =
        ureq::get(&format!("{}/v1/kv?prefix=sh", node.url)).call().expect("list").into_string().expect("s");
    assert_eq!(list, r#"{"keys":[]}"#);
    assert_eq!(put(node, "short", &[("If-Match", "*")], b"x").0, 412);
    assert_eq!(put(node, "short", &[("If-None-Match", "*")], b"x").0, 201, "an expired key can be created");
}

/// Several connections increment one counter with read, then write-if-unchanged, retrying on 412.
fn counter_over_http(node: &Node) {
    const THREADS: u64 = 4;
    const INCREMENTS: u64 = 40;
    assert_eq!(put(node, "counter", &[], b"0").0, 201);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                let agent = ureq::agent();
                for _ in 0..INCREMENTS {
                    loop {
                        let r = agent.get(&url(node, "counter")).call().expect("get");
                        let tag = r.header("ETag").expect("etag").to_owned();
                        let n: u64 = r.into_string().expect("body").parse().expect("number");
                        match agent
                            .put(&url(node, "counter"))
                            .set("If-Match", &tag)
                            .send_string(&(n + 1).to_string())
                        {
                            Ok(_) => break,
                            Err(ureq::Error::Status(412, _)) => continue,
                            Err(e) => panic!("put: {e}"),
                        }
                    }
                }
            });
        }
    });
    let body = ureq::get(&url(node, "counter")).call().expect("get").into_string().expect("body");
    assert_eq!(body, (THREADS * INCREMENTS).to_string());
}

#[test]
fn memory_node_etags_and_conditional_writes() {
    conditional_writes_follow_the_rules(&Node::start(&["--workers", "2"]));
}

#[test]
fn flurry_node_etags_and_conditional_writes() {
    conditional_writes_follow_the_rules(&Node::start(&["--engine", "flurry", "--workers", "2"]));
}

#[test]
fn sled_node_etags_and_conditional_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf8");
    conditional_writes_follow_the_rules(&Node::start(&["--engine", "sled", "--data-dir", data]));
}

#[test]
fn memory_node_expiry() {
    expiry_follows_the_rules(&Node::start(&[]));
}

#[test]
fn flurry_node_expiry() {
    expiry_follows_the_rules(&Node::start(&["--engine", "flurry"]));
}

#[test]
fn sled_node_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf8");
    expiry_follows_the_rules(&Node::start(&["--engine", "sled", "--data-dir", data]));
}

#[test]
fn compare_and_set_counter_over_several_connections() {
    counter_over_http(&Node::start(&["--workers", "2"]));
    counter_over_http(&Node::start(&["--engine", "flurry", "--workers", "2"]));
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf8");
    counter_over_http(&Node::start(&["--engine", "sled", "--data-dir", data, "--durability", "sync"]));
}
