//! A listing page costs the node about a page: the entries it visits (the node's own count, in `/metrics`)
//! stay near the keys it returns, however many keys the node holds, for the first page and every later one.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

mod common;

use std::io::{BufReader, Write};

use common::{read_response, Node};

const LIMIT: usize = 100;

/// The node's count of entries its listings visited.
fn visited(node: &Node) -> u64 {
    let text = common::agent()
        .get(&format!("{}/metrics", node.url))
        .call()
        .expect("metrics")
        .into_string()
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("otkv_listing_entries_visited_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("otkv_listing_entries_visited_total in /metrics")
}

fn load(node: &Node, keys: usize) {
    let mut s = node.connect();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(2_000) {
        let mut batch = Vec::new();
        for i in chunk {
            batch.extend_from_slice(
                format!("PUT /v1/kv/key{i:06} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv").as_bytes(),
            );
        }
        s.write_all(&batch).expect("write");
        let mut r = BufReader::new(&mut s);
        for _ in chunk {
            assert_eq!(read_response(&mut r, false).expect("answer").status, 201);
        }
    }
}

fn pages_cost_about_a_page(node: &Node, keys: usize) {
    load(node, keys);
    let (mut cursor, mut listed, mut pages) = (None::<String>, 0, 0);
    loop {
        let query = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let before = visited(node);
        let body = common::agent()
            .get(&format!("{}/v1/kv?limit={LIMIT}{query}", node.url))
            .call()
            .expect("page")
            .into_string()
            .expect("text");
        let cost = visited(node) - before;
        // The table's shards hold about 15 keys each here; a page that scanned the node would visit all.
        assert!(cost <= 10 * LIMIT as u64, "page {pages} visited {cost} entries of {keys}");
        let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
        listed += doc["keys"].as_array().expect("keys").len();
        pages += 1;
        match doc["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(listed, keys);
    assert!(pages >= keys / LIMIT);
}

#[test]
fn a_page_costs_a_page_on_the_table() {
    pages_cost_about_a_page(&Node::start(&[]), 60_000);
}

#[test]
fn a_page_costs_a_page_on_sled() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_string_lossy().into_owned();
    pages_cost_about_a_page(&Node::start(&["--engine", "sled", "--data-dir", &data]), 6_000);
}
