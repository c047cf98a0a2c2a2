//! Listing page by page with a cursor (the `next` each page gives, passed back as `cursor`): every key
//! that lives throughout appears exactly once, and no key twice, while other keys are written and deleted
//! between and among them. On each engine; the harness runs this suite against its proxy too.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use std::io::{BufReader, Write};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use common::{read_response, Node};

const KEYS: usize = 1200;

/// PUTs `keys` on one keep-alive connection, pipelined.
fn put_all(node: &Node, keys: impl Iterator<Item = String>) {
    let mut s = node.connect();
    let mut batch = Vec::new();
    let mut n = 0;
    for k in keys {
        batch.extend_from_slice(
            format!("PUT /v1/kv/{k} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv").as_bytes(),
        );
        n += 1;
    }
    s.write_all(&batch).expect("write");
    let mut r = BufReader::new(s);
    for _ in 0..n {
        let status = read_response(&mut r, false).expect("answer").status;
        assert!(status == 201 || status == 204, "{status}");
    }
}

fn page(node: &Node, query: &str) -> (Vec<String>, Option<String>) {
    let body = common::agent()
        .get(&format!("{}/v1/kv?{query}", node.url))
        .call()
        .expect("listing")
        .into_string()
        .expect("text");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
    let keys =
        doc["keys"].as_array().expect("keys").iter().map(|k| k.as_str().expect("str").to_string()).collect();
    (keys, doc["next"].as_str().map(str::to_owned))
}

fn pages_see_every_key_once(node: &Node) {
    let fixed = |i: usize| format!("k{i:05}");
    put_all(node, (0..KEYS).map(fixed));
    // Meanwhile: keys sorting between the fixed ones come and go.
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (url, stop) = (node.url.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let agent = common::agent();
            let mut i = 0usize;
            while !stop.load(Relaxed) {
                let key = format!("{url}/v1/kv/k{:05}-churn", (i * 7) % KEYS);
                agent.put(&key).send_string("c").expect("churn put");
                if i % 2 == 1 {
                    let _ = agent.delete(&format!("{url}/v1/kv/k{:05}-churn", (i * 7 - 7) % KEYS)).call();
                }
                i += 1;
            }
            i
        })
    };
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("prefix=k&limit=97&cursor={c}"),
            None => "prefix=k&limit=97".to_string(),
        };
        let (keys, next) = page(node, &query);
        assert!(keys.len() <= 97, "a page holds at most its limit");
        seen.extend(keys);
        pages += 1;
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
        assert!(pages < 1000, "paging does not end");
    }
    stop.store(true, Relaxed);
    let churned = churn.join().expect("churn");
    assert!(churned > 0);
    let mut fixed_seen: Vec<&String> = seen.iter().filter(|k| !k.ends_with("-churn")).collect();
    fixed_seen.sort();
    assert_eq!(fixed_seen.len(), KEYS, "every fixed key exactly once");
    assert!(fixed_seen.iter().enumerate().all(|(i, k)| **k == fixed(i)));
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no key twice across pages");
    // At rest, `after=KEY` goes on after that key, in the listing's order, as its cursor does.
    let (all, _) = page(node, "prefix=k&limit=100000");
    let (first, next) = page(node, "prefix=k&limit=10");
    assert_eq!(first, all[..10]);
    let (rest, _) = page(node, &format!("prefix=k&limit=100000&after={}", first[9]));
    assert_eq!(rest, all[10..]);
    let (again, _) = page(node, &format!("prefix=k&limit=100000&cursor={}", next.expect("more")));
    assert_eq!(again, all[10..]);
    // Not a cursor, or a cursor and a key: 400, saying why.
    for bad in ["cursor=nonsense", "cursor=k&after=k", "cursor=%ff"] {
        let answer = common::agent().get(&format!("{}/v1/kv?{bad}", node.url)).call();
        assert!(matches!(answer, Err(ureq::Error::Status(400, _))), "{bad}: {answer:?}");
    }
}

#[test]
fn pages_see_every_key_once_on_the_table() {
    pages_see_every_key_once(&Node::start(&[]));
}

#[test]
fn pages_see_every_key_once_on_flurry() {
    pages_see_every_key_once(&Node::start(&["--engine", "flurry"]));
}

#[test]
fn pages_see_every_key_once_on_sled() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_string_lossy().into_owned();
    pages_see_every_key_once(&Node::start(&["--engine", "sled", "--data-dir", &data]));
}
