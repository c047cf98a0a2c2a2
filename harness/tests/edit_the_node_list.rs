//! What an operator does with `HAProxy` or nginx: edit the proxy's nodes file to the new set (no `previous`
//! lines) and send SIGHUP. The proxy keeps the set before as the previous one (logged, in `/v1/stats`, and
//! written back into the file), so every key stays readable and `harness reshard --proxy` moves them:
//! afterwards no key is lost and none lives on two nodes. The mover's finished state does not block the
//! next change, made the same way from the same directory; and a change while a move is still on is
//! refused, the file written back to the sets in force.

#![allow(clippy::expect_used, reason = "a test's or an instrument's expect is its assertion")]

use std::path::Path;
use std::process::Command;

#[path = "../../adapter-http/tests/common/mod.rs"]
mod common;

use common::{eventually, harness as start, stats};

const HARNESS: &str = env!("CARGO_BIN_EXE_harness");
const KEYS: usize = 2_000;

type Server = common::Listening;

fn keys_on(node: &Server) -> Vec<String> {
    common::keys_on(&node.url)
}

/// Writes the nodes file as an operator would (the new set, nothing else) and sends SIGHUP.
fn edit(file: &Path, proxy: &Server, nodes: &[&Server]) {
    let text = nodes.iter().map(|n| n.url.as_str()).collect::<Vec<_>>().join("\n") + "\n";
    std::fs::write(file, text).expect("nodes file");
    let ok = Command::new("kill").args(["-HUP", &proxy.child.id().to_string()]).status().expect("kill");
    assert!(ok.success());
}

fn missing(proxy: &Server) -> usize {
    let agent = common::agent();
    (0..KEYS)
        .filter(|i| match agent.get(&format!("{}/v1/kv/key{i:05}", proxy.url)).call() {
            Ok(r) => r.into_string().expect("text") != format!("v{i}"),
            Err(_) => true,
        })
        .count()
}

fn reshard(proxy: &Server, state: &Path) {
    let out = Command::new(HARNESS)
        .args(["reshard", "--proxy", &proxy.url, "--state"])
        .arg(state)
        .output()
        .expect("reshard");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!state.exists(), "a finished change leaves no state behind");
}

/// No key on two nodes; returns how many keys the nodes hold.
fn one_copy_each(nodes: &[&Server]) -> usize {
    common::one_copy_each(&nodes.iter().map(|n| n.url.as_str()).collect::<Vec<_>>())
}

#[test]
fn an_edited_node_list_strands_no_key() {
    let nodes =
        [start(&["node", "--port", "0"]), start(&["node", "--port", "0"]), start(&["node", "--port", "0"])];
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("nodes.txt");
    std::fs::write(&file, format!("{}\n{}\n", nodes[0].url, nodes[1].url)).expect("nodes file");
    let proxy = start(&["proxy", "--port", "0", "--nodes-file", &file.to_string_lossy()]);
    let agent = common::agent();
    for i in 0..KEYS {
        agent.put(&format!("{}/v1/kv/key{i:05}", proxy.url)).send_string(&format!("v{i}")).expect("put");
    }
    let state = dir.path().join("reshard-state.json");

    // 2 -> 3 by editing the list.
    edit(&file, &proxy, &[&nodes[0], &nodes[1], &nodes[2]]);
    eventually("the proxy keeps the set before as previous", || {
        stats(&proxy.url)["topology"]["previous"].as_array().is_some_and(|p| p.len() == 2)
    });
    let s = stats(&proxy.url);
    assert!(s["topology"]["note"].as_str().is_some_and(|n| n.contains("previous")), "{s}");
    let written = std::fs::read_to_string(&file).expect("file");
    assert_eq!(written.matches("\nprevious ").count(), 2, "written back, so a restart keeps it: {written}");
    assert_eq!(missing(&proxy), 0, "every key is readable before it moves");
    reshard(&proxy, &state);
    assert_eq!(missing(&proxy), 0, "no key lost after the move");
    assert_eq!(one_copy_each(&[&nodes[0], &nodes[1], &nodes[2]]), KEYS);
    assert!(!keys_on(&nodes[2]).is_empty(), "the new node took its keys");
    assert!(!std::fs::read_to_string(&file).expect("file").contains("previous"));

    // 3 -> 2 the same way, from the same directory.
    edit(&file, &proxy, &[&nodes[0], &nodes[1]]);
    eventually("the proxy keeps the set before as previous", || {
        stats(&proxy.url)["topology"]["previous"].as_array().is_some_and(|p| p.len() == 3)
    });
    // Another change before this one's move is done is refused: the sets in force are written back.
    edit(&file, &proxy, &[&nodes[0]]);
    eventually("the refused set is written back", || {
        std::fs::read_to_string(&file).expect("file").matches("previous ").count() == 3
    });
    assert_eq!(stats(&proxy.url)["topology"]["nodes"].as_array().map(Vec::len), Some(2));
    reshard(&proxy, &state);
    assert_eq!(missing(&proxy), 0, "no key lost after the second move");
    assert!(keys_on(&nodes[2]).is_empty(), "the removed node holds nothing");
    assert_eq!(one_copy_each(&[&nodes[0], &nodes[1]]), KEYS);
}
